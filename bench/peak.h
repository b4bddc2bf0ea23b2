/* The harness of the instruction-throughput probes (vnni_peak.c, popcnt_peak.c): THREADS OpenMP
 * threads each run ITERS / THREADS iterations of an inline-assembly block; best of 5 repetitions,
 * printed as GOP/s (2 ops per multiply-accumulate). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

/* main() timing ASM (a string literal plus its clobber list) doing MACS multiply-accumulates. */
#define PEAK_MAIN(MACS, ...)                                                      \
  int main(int argc, char **argv) {                                               \
    int threads = argc > 1 ? atoi(argv[1]) : 1;                                   \
    long iters = 100000000L / threads;                                            \
    double best = 0;                                                              \
    for (int rep = 0; rep < 5; rep++) {                                           \
      double t0 = now();                                                          \
      _Pragma("omp parallel num_threads(threads)")                                \
      for (long i = 0; i < iters; i++) __asm__ volatile(__VA_ARGS__);             \
      double gops = (double)iters * threads * (MACS) * 2 / (now() - t0) / 1e9;    \
      if (gops > best) best = gops;                                               \
    }                                                                             \
    printf("%.1f\n", best);                                                       \
    return 0;                                                                     \
  }
