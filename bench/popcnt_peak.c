/* Peak binary multiply-accumulates of the bit-serial kernels' inner step on AVX-512 VPOPCNTDQ:
 * vpandq (weights & broadcast activations), vpopcntq, vpaddq into 8 independent accumulators
 * per thread, 512 one-bit MACs per step.
 * Usage: popcnt_peak THREADS  -> prints binary GOP/s (2 ops per multiply-accumulate). */
#include "peak.h"

PEAK_MAIN(8 * 512,
            "vpandq %%zmm20, %%zmm21, %%zmm8\n vpopcntq %%zmm8, %%zmm8\n vpaddq %%zmm8, %%zmm0, %%zmm0\n"
            "vpandq %%zmm20, %%zmm22, %%zmm9\n vpopcntq %%zmm9, %%zmm9\n vpaddq %%zmm9, %%zmm1, %%zmm1\n"
            "vpandq %%zmm20, %%zmm23, %%zmm10\n vpopcntq %%zmm10, %%zmm10\n vpaddq %%zmm10, %%zmm2, %%zmm2\n"
            "vpandq %%zmm20, %%zmm24, %%zmm11\n vpopcntq %%zmm11, %%zmm11\n vpaddq %%zmm11, %%zmm3, %%zmm3\n"
            "vpandq %%zmm20, %%zmm21, %%zmm12\n vpopcntq %%zmm12, %%zmm12\n vpaddq %%zmm12, %%zmm4, %%zmm4\n"
            "vpandq %%zmm20, %%zmm22, %%zmm13\n vpopcntq %%zmm13, %%zmm13\n vpaddq %%zmm13, %%zmm5, %%zmm5\n"
            "vpandq %%zmm20, %%zmm23, %%zmm14\n vpopcntq %%zmm14, %%zmm14\n vpaddq %%zmm14, %%zmm6, %%zmm6\n"
            "vpandq %%zmm20, %%zmm24, %%zmm15\n vpopcntq %%zmm15, %%zmm15\n vpaddq %%zmm15, %%zmm7, %%zmm7\n"
            ::
            : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15")
