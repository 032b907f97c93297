/* test_util.h - the tiny harness every tests/test_*.c uses.

   Each test program prints one line per check group:  "PASS name" or "FAIL name: why",
   and exits non-zero when anything failed. tests/run.sh compiles and runs every test
   program and sums the lines into "N passed, N failed". */
#ifndef TEST_UTIL_H
#define TEST_UTIL_H
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_passed, test_failed, test_current_failed;
static const char *test_current_name;

/* Start a named group of checks; the previous group's result is printed. */
static void test_end(void) {
    if (!test_current_name) return;
    if (test_current_failed) test_failed++; else { test_passed++; printf("PASS %s\n", test_current_name); }
    test_current_name = NULL;
}
static void test_begin(const char *name) { test_end(); test_current_name = name; test_current_failed = 0; }

#define CHECK(cond, ...) do { if (!(cond)) { \
    printf("FAIL %s: %s:%d: ", test_current_name ? test_current_name : "?", __FILE__, __LINE__); \
    printf(__VA_ARGS__); printf("\n"); test_current_failed = 1; } } while (0)

/* ||a - b|| / ||b|| (or ||a|| when b is all zero) */
#if defined(__GNUC__)
__attribute__((unused))
#endif
static double test_rel_err(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) { double d = (double)a[i] - b[i]; num += d * d; den += (double)b[i] * b[i]; }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* whole-file helpers for the tests that build or damage files */
#if defined(__GNUC__)
__attribute__((unused))
#endif
static int write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    size_t w = n ? fwrite(data, 1, n, f) : 0;
    return fclose(f) == 0 && w == n;
}

#if defined(__GNUC__)
__attribute__((unused))
#endif
static unsigned char *read_bytes(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    *n = 0;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = (unsigned char *)malloc(len > 0 ? (size_t)len : 1);
    *n = p && len > 0 ? fread(p, 1, (size_t)len, f) : 0;
    fclose(f);
    return p;
}

static int test_finish(void) {
    test_end();
    printf("# %d passed, %d failed\n", test_passed, test_failed);
    return test_failed ? 1 : 0;
}
#endif
