/* peak.c - the machine's single-precision FMA peak, the ceiling against which
   the GFLOP/s of cnn.h's kernels are read.
     --threads T     OpenMP threads (default: all cores)
   Each thread runs 12 independent chains of vector FMAs (acc = acc*b + c):
   enough chains to cover the FMA latency times the FMA ports of one core, so
   the loop is bound by FMA throughput alone. Vectors are 512-bit with AVX-512,
   256-bit with AVX2+FMA, 128-bit otherwise (plain multiply-add there). The run
   is calibrated to last about 0.5 s. Prints "GFLOP/s: X" (2 flops per FMA lane)
   as its last line.
   Build: gcc -std=c99 -O3 -march=native -fopenmp -Wall -Wextra bench/peak.c -o bench/peak
   Check: objdump -d bench/peak | grep -c vfmadd */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#define VEC_BYTES 64
typedef float vf __attribute__((vector_size(64)));
static inline vf fmadd(vf a, vf b, vf c) { return (vf)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c); }
#define ISA "AVX-512 FMA"
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define VEC_BYTES 32
typedef float vf __attribute__((vector_size(32)));
static inline vf fmadd(vf a, vf b, vf c) { return (vf)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c); }
#define ISA "AVX2 FMA"
#else
#define VEC_BYTES 16
typedef float vf __attribute__((vector_size(16)));
static inline vf fmadd(vf a, vf b, vf c) { return a * b + c; } /* no FMA: 2 instructions */
#define ISA "128-bit multiply-add"
#endif

#define LANES (VEC_BYTES / 4)
#define CHAINS 12
#define INNER 100000L /* FMA groups per round */

/* Runs `rounds` rounds of INNER x CHAINS vector FMAs; returns a sum so the work stays live. */
static float run(long rounds, float bval, float cval) {
    vf b, c, a[CHAINS];
    for (int l = 0; l < LANES; l++) { b[l] = bval; c[l] = cval; }
    for (int k = 0; k < CHAINS; k++)
        for (int l = 0; l < LANES; l++) a[k][l] = 1.0f + 0.001f * (float)(k * LANES + l);
    for (long r = 0; r < rounds; r++) {
        for (long i = 0; i < INNER; i++) {
            a[0] = fmadd(a[0], b, c);   a[1] = fmadd(a[1], b, c);
            a[2] = fmadd(a[2], b, c);   a[3] = fmadd(a[3], b, c);
            a[4] = fmadd(a[4], b, c);   a[5] = fmadd(a[5], b, c);
            a[6] = fmadd(a[6], b, c);   a[7] = fmadd(a[7], b, c);
            a[8] = fmadd(a[8], b, c);   a[9] = fmadd(a[9], b, c);
            a[10] = fmadd(a[10], b, c); a[11] = fmadd(a[11], b, c);
        }
    }
    float s = 0;
    for (int k = 0; k < CHAINS; k++)
        for (int l = 0; l < LANES; l++) s += a[k][l];
    return s;
}

/* Wall seconds for every thread to run `rounds` rounds. */
static double timed(int threads, long rounds, float bval, float cval, float *sink) {
    float total = 0;
    double t0 = omp_get_wtime();
#pragma omp parallel num_threads(threads) reduction(+ : total)
    total += run(rounds, bval, cval);
    double dt = omp_get_wtime() - t0;
    *sink += total;
    return dt;
}

int main(int argc, char **argv) {
    int threads = omp_get_num_procs();
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            char *end;
            long t = strtol(argv[++i], &end, 10);
            if (*end || t <= 0 || t > 4096) { fprintf(stderr, "peak: --threads needs a positive integer\n"); return 2; }
            threads = (int)t;
        } else {
            fprintf(stderr, "usage: peak [--threads T]\n");
            return 2;
        }
    }
    /* Read the constants through volatile so the compiler cannot fold the chains;
       acc -> c/(1-b) = 1 keeps every value normal (no denormal slow path). */
    volatile float vb = 0.9999999f, vc = 1e-7f;
    float bval = vb, cval = vc, sink = 0;
    /* warm-up and calibration: grow the run until it lasts 0.05 s, then scale to 0.5 s */
    long rounds = 1;
    double dt = timed(threads, rounds, bval, cval, &sink);
    while (dt < 0.05) { rounds *= 2; dt = timed(threads, rounds, bval, cval, &sink); }
    rounds = (long)(rounds * 0.5 / dt) + 1;
    dt = timed(threads, rounds, bval, cval, &sink);
    double flops = 2.0 * LANES * CHAINS * (double)INNER * (double)rounds * threads;
    printf("isa: %s  lanes: %d  chains: %d  threads: %d  seconds: %.3f  (check %g)\n",
           ISA, LANES, CHAINS, threads, dt, (double)sink);
    printf("GFLOP/s: %.1f\n", flops / dt * 1e-9);
    return 0;
}
