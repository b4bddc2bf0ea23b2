/* Peak u8 x s8 -> s32 throughput of vpdpbusd zmm: 12 independent accumulators per thread.
 * Usage: vnni_peak THREADS  -> prints GOP/s (2 ops per multiply-accumulate). */
#include "peak.h"

PEAK_MAIN(12 * 64,
            "vpdpbusd %%zmm20, %%zmm21, %%zmm0\n vpdpbusd %%zmm20, %%zmm21, %%zmm1\n"
            "vpdpbusd %%zmm20, %%zmm21, %%zmm2\n vpdpbusd %%zmm20, %%zmm21, %%zmm3\n"
            "vpdpbusd %%zmm20, %%zmm21, %%zmm4\n vpdpbusd %%zmm20, %%zmm21, %%zmm5\n"
            "vpdpbusd %%zmm20, %%zmm21, %%zmm6\n vpdpbusd %%zmm20, %%zmm21, %%zmm7\n"
            "vpdpbusd %%zmm20, %%zmm21, %%zmm8\n vpdpbusd %%zmm20, %%zmm21, %%zmm9\n"
            "vpdpbusd %%zmm20, %%zmm21, %%zmm10\n vpdpbusd %%zmm20, %%zmm21, %%zmm11\n" ::
                : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
                  "xmm11")
