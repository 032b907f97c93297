/* test_split.c - the host-side logic that the OpenCL backend (and a later MPI
   backend) share, with no device and no OpenCL:

   - cnn_split_batch: Keras' equal rule, weighted splits by largest remainders
     (against an exact integer reference), argument errors;
   - cnn_split_parse: "equal", "auto", "", fixed weights, errors;
   - cnn_split_balance: timings -> counts (against a brute-force optimum), zero
     counts for workers with a large fixed cost, the predicted step time;
   - cnn_moments_add: Chan's merge of per-worker moments about their own shifts,
     against moments computed directly in double, whatever the cut;
   - cnn_sum_in_order: double sums in the given order;
   - dropout masks that follow the global sample index (a worker's first_sample);
   - the backend hook: a test backend that counts its calls and runs the CPU
     passes; train_on_batch, predict, evaluate, fit (and input gradients) give
     results identical to a model without it; device errors leave the model
     untouched; release on free, replacement and removal; bad inputs.

   Build and run from the repository root:
     gcc -std=c99 -O2 -fopenmp -Wall -Wextra -I. tests/test_split.c -lm -lpthread -o /tmp/ts && /tmp/ts */
#define CNN_IMPLEMENTATION
#include "cnn.h"
#include "test_util.h"

#include <stdint.h>

static uint64_t rng_state = 12345;
static uint32_t rnd(void) {
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(rng_state >> 33);
}
static double rnd_unit(void) { return rnd() / 2147483648.0; } /* [0, 1) */

static void clear_error(void) { cnn_set_error(CNN_OK, "%s", ""); }
static int error_has(const char *s) { return strstr(cnn_last_error(), s) != NULL; }

static int same_ints(const int *a, const int *b, int n) {
    for (int i = 0; i < n; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}

static const char *ints_text(const int *v, int n) {
    static char buf[4][256];
    static int which;
    char *s = buf[which++ & 3];
    size_t len = 0;
    s[0] = 0;
    for (int i = 0; i < n && len < 200; i++) len += (size_t)snprintf(s + len, 256 - len, "%s%d", i ? "," : "", v[i]);
    return s;
}

/* ------------------------------------------------------------------------ */
/* cnn_split_batch                                                          */
/* ------------------------------------------------------------------------ */

static void test_split_equal(void) {
    test_begin("cnn_split_batch: Keras' equal rule");
    static const struct { int B, n, want[6]; } cases[] = {
        {10, 3, {3, 3, 4}},       {7, 4, {1, 1, 1, 4}},  {2, 4, {0, 0, 0, 2}}, {0, 3, {0, 0, 0}},
        {32, 1, {32}},            {33, 2, {16, 17}},     {1, 2, {0, 1}},       {11, 6, {1, 1, 1, 1, 1, 6}},
        {64, 4, {16, 16, 16, 16}}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int got[6] = {-9, -9, -9, -9, -9, -9};
        int rc = cnn_split_batch(cases[i].B, cases[i].n, NULL, got);
        CHECK(rc == CNN_OK, "B=%d n=%d: rc %d (%s)", cases[i].B, cases[i].n, rc, cnn_last_error());
        CHECK(same_ints(got, cases[i].want, cases[i].n), "B=%d n=%d: got %s, want %s", cases[i].B, cases[i].n,
              ints_text(got, cases[i].n), ints_text(cases[i].want, cases[i].n));
        CHECK(cases[i].n == 6 || got[cases[i].n] == -9, "B=%d n=%d: wrote past counts[n-1]", cases[i].B, cases[i].n);
    }
    for (int B = 0; B <= 50; B++) /* the rule itself, for every (B, n) here */
        for (int n = 1; n <= 9; n++) {
            int got[9];
            if (cnn_split_batch(B, n, NULL, got) != CNN_OK) { CHECK(0, "B=%d n=%d refused", B, n); continue; }
            for (int k = 0; k < n; k++)
                if (got[k] != B / n + (k == n - 1 ? B % n : 0)) { CHECK(0, "B=%d n=%d: got %s", B, n, ints_text(got, n)); break; }
        }
}

/* the exact largest-remainder split for integer weights: floor(B w / T), then
   one more to the largest remainders (B w mod T), ties to the lower index */
static void reference_split(int B, int n, const int *w, int *out) {
    long long T = 0, given = 0, rem[16];
    int taken[16] = {0};
    for (int k = 0; k < n; k++) T += w[k];
    for (int k = 0; k < n; k++) {
        out[k] = (int)((long long)B * w[k] / T);
        rem[k] = (long long)B * w[k] % T;
        given += out[k];
    }
    for (; given < B; given++) {
        int best = -1;
        for (int k = 0; k < n; k++)
            if (!taken[k] && w[k] > 0 && (best < 0 || rem[k] > rem[best])) best = k;
        taken[best] = 1;
        out[best]++;
    }
}

static void test_split_weighted(void) {
    test_begin("cnn_split_batch: weighted, largest remainders");
    static const struct { int B, n; double w[5]; int want[5]; } cases[] = {
        {4, 3, {1, 1, 1}, {2, 1, 1}},          /* ties to the lower index */
        {5, 3, {1, 1, 1}, {2, 2, 1}},
        {2, 4, {1, 1, 1, 1}, {1, 1, 0, 0}},    /* B < n */
        {3, 5, {1, 1, 1, 1, 1}, {1, 1, 1, 0, 0}},
        {10, 2, {3, 1}, {8, 2}},               /* 7.5 : 2.5, a tie */
        {10, 2, {1, 3}, {3, 7}},
        {4, 2, {2, 1}, {3, 1}},                /* 2.67 : 1.33 (the equal rule would give 2, 2) */
        {7, 3, {0.5, 0.25, 0.25}, {3, 2, 2}},  /* 3.5, 1.75, 1.75: the larger remainders win */
        {1, 3, {5, 3, 2}, {1, 0, 0}},
        {3, 4, {0, 1, 0, 1}, {0, 2, 0, 1}},    /* zero weights get nothing */
        {9, 3, {0, 0, 7}, {0, 0, 9}},
        {0, 2, {1, 2}, {0, 0}},                /* B = 0 */
        {100, 2, {1e-3, 3e-3}, {25, 75}},
        {10, 3, {1e-300, 1e-300, 2e-300}, {3, 2, 5}}, /* tiny weights: 2.5, 2.5, 5 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int got[5] = {-9, -9, -9, -9, -9};
        int rc = cnn_split_batch(cases[i].B, cases[i].n, cases[i].w, got);
        CHECK(rc == CNN_OK, "case %zu: rc %d (%s)", i, rc, cnn_last_error());
        CHECK(same_ints(got, cases[i].want, cases[i].n), "case %zu (B=%d): got %s, want %s", i, cases[i].B,
              ints_text(got, cases[i].n), ints_text(cases[i].want, cases[i].n));
    }
    /* random real weights spanning magnitudes: whole, sum to B, within 1 of
       B w / sum, 0 for weight 0 */
    int bad_prop = 0;
    for (int t = 0; t < 4000; t++) {
        int n = 1 + (int)(rnd() % 8), B = (int)(rnd() % 300), got[16];
        double w[16], total = 0;
        for (int k = 0; k < n; k++) {
            w[k] = rnd() % 5 == 0 ? 0 : rnd_unit() * pow(10.0, (double)(rnd() % 7) - 3);
            total += w[k];
        }
        if (total == 0) { w[0] = 1; total = 1; }
        if (cnn_split_batch(B, n, w, got) != CNN_OK) { bad_prop++; continue; }
        long long sum = 0;
        int ok = 1;
        for (int k = 0; k < n; k++) {
            sum += got[k];
            if (got[k] < 0 || (w[k] == 0 && got[k] != 0) || fabs(got[k] - B * (w[k] / total)) >= 1) ok = 0;
        }
        if (!ok || sum != B) {
            if (bad_prop++ < 3) CHECK(0, "B=%d n=%d real weights: got %s", B, n, ints_text(got, n));
        }
    }
    CHECK(!bad_prop, "%d of 4000 real-weight splits are not whole, do not sum to B or are not within 1 of B w / sum",
          bad_prop);
}

/* Integer weights (as "7:1:0:2" gives them) against the exact rule: floor(B w / T),
   then one more each to the largest remainders B w mod T, ties to the lower index. */
static void test_split_ties(void) {
    test_begin("cnn_split_batch: exact ties go to the lower index");
    const double w[4] = {7, 1, 0, 2};
    const int want[4] = {32, 4, 0, 9};
    int got[4];
    /* 45 * 7/10 = 31.5 and 45 * 1/10 = 4.5 tie; in double 45 * (7 / 10.0) is just
       below 31.5 and 45 * (1 / 10.0) just above 4.5 */
    CHECK(cnn_split_batch(45, 4, w, got) == CNN_OK && same_ints(got, want, 4),
          "B=45 weights 7:1:0:2 (shares 31.5, 4.5, 0, 9): got %s, want %s", ints_text(got, 4), ints_text(want, 4));
    int bad_ref = 0;
    for (int t = 0; t < 4000; t++) {
        int n = 1 + (int)(rnd() % 8), B = (int)(rnd() % 300), wi[16], ref[16], out[16];
        double wd[16];
        int any = 0;
        for (int k = 0; k < n; k++) {
            wi[k] = (int)(rnd() % 10) * (rnd() % 4 != 0); /* about a quarter are 0 */
            any |= wi[k] > 0;
        }
        if (!any) wi[rnd() % n] = 1 + (int)(rnd() % 5);
        for (int k = 0; k < n; k++) wd[k] = wi[k];
        reference_split(B, n, wi, ref);
        if (cnn_split_batch(B, n, wd, out) != CNN_OK || !same_ints(out, ref, n)) {
            if (bad_ref++ < 2)
                CHECK(0, "B=%d weights %s: got %s, want %s", B, ints_text(wi, n), ints_text(out, n), ints_text(ref, n));
        }
    }
    CHECK(!bad_ref, "%d of 4000 integer-weight splits differ from the exact largest-remainder split", bad_ref);
}

/* Weights are accepted when finite; their sum may overflow to inf. */
static void test_split_huge_weights(void) {
    test_begin("cnn_split_batch: finite weights whose sum overflows");
    const double w[3] = {1.5e308, 1.5e308, 1.0};
    int got[3] = {-9, -9, -9};
    int rc = cnn_split_batch(3, 3, w, got);
    /* exact shares 1.5, 1.5, ~0: whole counts within 1 of them, nothing to the last */
    CHECK(rc == CNN_OK, "rc %d (%s)", rc, cnn_last_error());
    CHECK(got[2] == 0 && got[0] + got[1] == 3 && got[0] >= 1 && got[1] >= 1,
          "weights 1.5e308, 1.5e308, 1 over B=3 gave %s (want 2,1,0: the sum of the weights overflows to inf, "
          "so every share B * w / sum is 0 and the remainders go round-robin)", ints_text(got, 3));
}

static void test_split_errors(void) {
    test_begin("cnn_split_batch: argument errors");
    int counts[4];
    const double ok_w[2] = {1, 1};
    const double neg[2] = {1, -1}, nan_w[2] = {NAN, 1}, inf_w[2] = {1, INFINITY}, zero[3] = {0, 0, 0};
    struct { int B, n; const double *w; int *c; const char *what; } cases[] = {
        {4, 0, NULL, counts, "n = 0"},          {4, -2, NULL, counts, "n < 0"},
        {4, 0, ok_w, counts, "n = 0, weighted"}, {-1, 2, NULL, counts, "B < 0"},
        {4, 2, NULL, NULL, "counts NULL"},      {4, 2, ok_w, NULL, "counts NULL, weighted"},
        {4, 2, neg, counts, "a negative weight"}, {4, 2, nan_w, counts, "a NaN weight"},
        {4, 2, inf_w, counts, "an infinite weight"}, {4, 3, zero, counts, "all weights 0"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        clear_error();
        int rc = cnn_split_batch(cases[i].B, cases[i].n, cases[i].w, cases[i].c);
        CHECK(rc < 0, "%s: rc %d", cases[i].what, rc);
        CHECK(error_has("cnn_split_batch"), "%s: message '%s'", cases[i].what, cnn_last_error());
    }
    clear_error();
    cnn_split_batch(4, 2, neg, counts);
    CHECK(error_has("weight 1"), "negative weight message '%s' does not name weight 1", cnn_last_error());
    clear_error();
    cnn_split_batch(4, 3, zero, counts);
    CHECK(error_has("all 0"), "all-zero message '%s'", cnn_last_error());
    clear_error();
    cnn_split_batch(4, 2, NULL, NULL);
    CHECK(error_has("NULL"), "NULL counts message '%s'", cnn_last_error());
}

/* ------------------------------------------------------------------------ */
/* cnn_split_parse                                                          */
/* ------------------------------------------------------------------------ */

static void test_split_parse(void) {
    test_begin("cnn_split_parse");
    double w[4];
    int fixed, rc;
    const char *not_fixed[] = {"equal", "auto", ""};
    for (int i = 0; i < 3; i++) {
        fixed = 7;
        w[0] = -5;
        rc = cnn_split_parse(not_fixed[i], 2, &fixed, w);
        CHECK(rc == CNN_OK && fixed == 0, "'%s': rc %d fixed %d (%s)", not_fixed[i], rc, fixed, cnn_last_error());
        CHECK(w[0] == -5, "'%s' wrote weights", not_fixed[i]);
    }
    fixed = 0;
    rc = cnn_split_parse("3:1", 2, &fixed, w);
    CHECK(rc == CNN_OK && fixed == 1 && w[0] == 3 && w[1] == 1, "'3:1': rc %d fixed %d weights %g %g (%s)", rc,
          fixed, w[0], w[1], cnn_last_error());
    fixed = 0;
    rc = cnn_split_parse("0.5:0.25:0.25", 3, &fixed, w);
    CHECK(rc == CNN_OK && fixed == 1 && w[0] == 0.5 && w[1] == 0.25 && w[2] == 0.25,
          "'0.5:0.25:0.25': rc %d fixed %d weights %g %g %g", rc, fixed, w[0], w[1], w[2]);
    fixed = 0;
    rc = cnn_split_parse("0:2:1e-3", 3, &fixed, w);
    CHECK(rc == CNN_OK && fixed == 1 && w[0] == 0 && w[1] == 2 && w[2] == 1e-3, "'0:2:1e-3': rc %d fixed %d", rc, fixed);
    fixed = 0;
    rc = cnn_split_parse("5", 1, &fixed, w);
    CHECK(rc == CNN_OK && fixed == 1 && w[0] == 5, "'5' with n=1: rc %d fixed %d", rc, fixed);
    /* the parsed weights drive cnn_split_batch */
    int counts[2];
    rc = cnn_split_parse("3:1", 2, &fixed, w);
    CHECK(rc == CNN_OK && cnn_split_batch(32, 2, w, counts) == CNN_OK && counts[0] == 24 && counts[1] == 8,
          "'3:1' over 32: %d, %d", counts[0], counts[1]);

    static const struct { const char *spec; int n; const char *says; } bad[] = {
        {"3", 2, "fewer"},          {"3:1", 3, "fewer"},     {"3:1:2", 2, "more"},     {"1:1", 1, "more"},
        {"abc", 2, "not a number"}, {"3:x", 2, "not a number"}, {"3:", 2, "not a number"}, {":1", 2, "not a number"},
        {"-1:2", 2, ">= 0"},        {"2:-0.5", 2, ">= 0"},   {"nan:1", 2, "not a number"}, {"inf:1", 2, "not a number"},
        {"0:0", 2, "all 0"},        {"0:0:0", 3, "all 0"},   {"equals", 2, "not a number"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        clear_error();
        fixed = 7;
        rc = cnn_split_parse(bad[i].spec, bad[i].n, &fixed, w);
        CHECK(rc < 0, "'%s' (n=%d) accepted", bad[i].spec, bad[i].n);
        CHECK(fixed == 0, "'%s' (n=%d): fixed %d after an error", bad[i].spec, bad[i].n, fixed);
        CHECK(error_has(bad[i].says) && error_has(bad[i].spec), "'%s' (n=%d): message '%s' should name the split and say '%s'",
              bad[i].spec, bad[i].n, cnn_last_error(), bad[i].says);
    }
    clear_error();
    cnn_split_parse("3:1:2", 2, &fixed, w);
    CHECK(error_has("2 devices"), "too-many message '%s' does not give the device count", cnn_last_error());
    clear_error();
    cnn_split_parse("3:x", 2, &fixed, w);
    CHECK(error_has("weight 2"), "'3:x' message '%s' does not name weight 2", cnn_last_error());
    CHECK(cnn_split_parse(NULL, 2, &fixed, w) < 0, "NULL spec accepted");
    CHECK(cnn_split_parse("1:1", 0, &fixed, w) < 0, "n = 0 accepted");
    CHECK(cnn_split_parse("1:1", 2, NULL, w) < 0, "NULL fixed accepted");
    CHECK(cnn_split_parse("1:1", 2, &fixed, NULL) < 0, "NULL weights accepted");
    CHECK(error_has("cnn_split_parse"), "NULL-argument message '%s'", cnn_last_error());
}

/* ------------------------------------------------------------------------ */
/* cnn_split_balance                                                        */
/* ------------------------------------------------------------------------ */

static double step_time(int n, const double *a, const double *b, const int *c) {
    double t = 0;
    for (int k = 0; k < n; k++)
        if (c[k] > 0 && a[k] + b[k] * c[k] > t) t = a[k] + b[k] * c[k];
    return t;
}

/* the least step time over all whole splits of B among n <= 3 workers */
static double brute_best(int B, int n, const double *a, const double *b) {
    double best = INFINITY;
    int c[3] = {0, 0, 0};
    for (c[0] = 0; c[0] <= B; c[0]++) {
        if (n == 1) { if (c[0] == B) best = step_time(1, a, b, c); continue; }
        for (c[1] = 0; c[0] + c[1] <= B; c[1]++) {
            if (n == 2 && c[0] + c[1] != B) continue;
            if (n == 3) c[2] = B - c[0] - c[1];
            double t = step_time(n, a, b, c);
            if (t < best) best = t;
            if (n == 2) break;
        }
    }
    return best;
}

static int sum_of(const int *c, int n) {
    int s = 0;
    for (int k = 0; k < n; k++) s += c[k];
    return s;
}

static void test_split_balance(void) {
    test_begin("cnn_split_balance");
    int c[4];
    {   /* 1 ms and 3 ms per sample: 3:1 */
        const double a[2] = {0, 0}, b[2] = {1e-3, 3e-3};
        double t = cnn_split_balance(64, 2, a, b, c);
        CHECK(t > 0 && sum_of(c, 2) == 64 && abs(c[0] - 48) <= 1 && abs(c[1] - 16) <= 1,
              "1 and 3 ms per sample over 64: t %g counts %s (want about 48,16)", t, ints_text(c, 2));
        CHECK(fabs(t - step_time(2, a, b, c)) <= 1e-12 * t, "predicted %.17g, counts give %.17g", t, step_time(2, a, b, c));
        CHECK(fabs(t - 0.048) < 1.5e-3, "predicted %g, want about 0.048", t);
        t = cnn_split_balance(100, 2, a, b, c);
        CHECK(c[0] == 75 && c[1] == 25 && fabs(t - 0.075) < 1e-12, "over 100: t %.17g counts %s (want 75,25)", t, ints_text(c, 2));
    }
    {   /* a fixed cost larger than the others' whole step: nothing */
        const double a[3] = {0, 0, 5}, b[3] = {1e-3, 1e-3, 1e-6};
        double t = cnn_split_balance(64, 3, a, b, c);
        CHECK(c[2] == 0 && c[0] == 32 && c[1] == 32, "a[2] = 5 s: counts %s (want 32,32,0)", ints_text(c, 3));
        CHECK(fabs(t - 0.032) < 1e-12, "predicted %.17g, want 0.032 (the idle worker's fixed cost does not count)", t);
    }
    {   /* one worker, and B = 0 */
        const double a[2] = {0.01, 0.02}, b[2] = {1e-3, 1e-3};
        double t = cnn_split_balance(10, 1, a, b, c);
        CHECK(c[0] == 10 && fabs(t - 0.02) < 1e-12, "one worker: t %g count %d", t, c[0]);
        c[0] = c[1] = -9;
        t = cnn_split_balance(0, 2, a, b, c);
        CHECK(c[0] == 0 && c[1] == 0 && t == 0, "B = 0: t %g counts %s", t, ints_text(c, 2));
    }
    /* random timings against the brute-force optimum */
    int bad = 0;
    for (int trial = 0; trial < 300; trial++) {
        int n = 1 + (int)(rnd() % 3), B = (int)(rnd() % 61);
        double a[3], b[3];
        for (int k = 0; k < n; k++) {
            a[k] = rnd() % 3 ? rnd_unit() * 0.02 : 0;
            b[k] = 1e-4 + rnd_unit() * 5e-3;
        }
        c[0] = c[1] = c[2] = -9;
        double t = cnn_split_balance(B, n, a, b, c), best = brute_best(B, n, a, b);
        int ok = sum_of(c, n) == B && fabs(t - step_time(n, a, b, c)) <= 1e-12 * (t > 1 ? t : 1) &&
                 fabs(t - best) <= 1e-9 * (best > 1 ? best : 1);
        for (int k = 0; k < n; k++) ok &= c[k] >= 0 && c[k] <= B;
        if (!ok && bad++ < 3)
            CHECK(0, "B=%d n=%d a=%g,%g,%g b=%g,%g,%g: counts %s t %.17g, optimum %.17g", B, n, a[0], n > 1 ? a[1] : 0,
                  n > 2 ? a[2] : 0, b[0], n > 1 ? b[1] : 0, n > 2 ? b[2] : 0, ints_text(c, n), t, best);
    }
    CHECK(!bad, "%d of 300 balanced splits are not whole, do not sum to B or miss the optimum", bad);

    /* bad arguments */
    const double a[2] = {0, 0}, b[2] = {1e-3, 1e-3}, zero_b[2] = {1e-3, 0}, neg_b[2] = {-1e-3, 1e-3},
                 neg_a[2] = {-1, 0}, nan_a[2] = {NAN, 0}, inf_b[2] = {1e-3, INFINITY}, inf_a[2] = {0, INFINITY};
    struct { int B, n; const double *a, *b; int *c; const char *what; } cases[] = {
        {-1, 2, a, b, c, "B < 0"},       {8, 0, a, b, c, "n = 0"},       {8, -1, a, b, c, "n < 0"},
        {8, 2, NULL, b, c, "a NULL"},    {8, 2, a, NULL, c, "b NULL"},   {8, 2, a, b, NULL, "counts NULL"},
        {8, 2, a, zero_b, c, "b = 0"},   {8, 2, a, neg_b, c, "b < 0"},   {8, 2, neg_a, b, c, "a < 0"},
        {8, 2, nan_a, b, c, "a NaN"},    {8, 2, a, inf_b, c, "b inf"},   {8, 2, inf_a, b, c, "a inf"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        clear_error();
        double t = cnn_split_balance(cases[i].B, cases[i].n, cases[i].a, cases[i].b, cases[i].c);
        CHECK(t < 0, "%s: returned %g", cases[i].what, t);
        CHECK(error_has("cnn_split_balance"), "%s: message '%s'", cases[i].what, cnn_last_error());
    }
}

/* ------------------------------------------------------------------------ */
/* cnn_moments_add                                                          */
/* ------------------------------------------------------------------------ */

#define ROWS 1000

/* merge rows x[0..ROWS) cut into parts of the given sizes (0 allowed), each
   summed about its own shift, in double (or float when as_float) */
static cnn_moments merge_parts(const double *x, const int *sizes, int n_parts, int as_float) {
    cnn_moments acc = {0, 0, 0};
    int start = 0;
    for (int p = 0; p < n_parts; p++) {
        const int cnt = sizes[p];
        if (cnt == 0) { /* an empty part: whatever its sums say, it must not count */
            cnn_moments_add(&acc, 0, 1e4, 1e30, 1e30);
            continue;
        }
        double shift;
        switch (p % 4) { /* shifts of different kinds, all near the data */
        case 0: shift = x[start]; break;
        case 1: shift = 1e4; break;
        case 2: shift = x[start + cnt - 1]; break;
        default: shift = 1e4 + 0.5; break;
        }
        if (as_float) {
            float s = 0, ss = 0, fs = (float)shift;
            for (int i = start; i < start + cnt; i++) { float d = (float)x[i] - fs; s += d; ss += d * d; }
            cnn_moments_add(&acc, cnt, fs, s, ss);
        } else {
            double s = 0, ss = 0;
            for (int i = start; i < start + cnt; i++) { double d = x[i] - shift; s += d; ss += d * d; }
            cnn_moments_add(&acc, cnt, shift, s, ss);
        }
        start += cnt;
    }
    return acc;
}

static void test_moments(void) {
    test_begin("cnn_moments_add");
    static double x[ROWS];
    for (int i = 0; i < ROWS; i++) x[i] = (double)(float)(1e4 + (2 * rnd_unit() - 1)); /* exact as floats too */
    /* direct: two passes in double */
    double mean = 0, m2 = 0;
    for (int i = 0; i < ROWS; i++) mean += x[i];
    mean /= ROWS;
    for (int i = 0; i < ROWS; i++) m2 += (x[i] - mean) * (x[i] - mean);

    static int cuts[8][ROWS + 1];
    int n_parts[8];
    n_parts[0] = 1; cuts[0][0] = ROWS;
    n_parts[1] = 2; cuts[1][0] = 500; cuts[1][1] = 500;
    n_parts[2] = 2; cuts[2][0] = 1; cuts[2][1] = ROWS - 1;
    n_parts[3] = 4; cuts[3][0] = 333; cuts[3][1] = 0; cuts[3][2] = 667; cuts[3][3] = 0;
    n_parts[4] = 10; for (int p = 0; p < 10; p++) cuts[4][p] = 100;
    n_parts[5] = ROWS; for (int p = 0; p < ROWS; p++) cuts[5][p] = 1; /* row by row */
    n_parts[6] = 51; for (int p = 0; p < 50; p++) cuts[6][p] = 1; cuts[6][50] = ROWS - 50;
    { /* random cuts with some empty parts */
        int left = ROWS, p = 0;
        while (left > 0) { int s = rnd() % 5 == 0 ? 0 : 1 + (int)(rnd() % 120); if (s > left) s = left; cuts[7][p++] = s; left -= s; }
        n_parts[7] = p;
    }
    for (int c = 0; c < 8; c++) {
        cnn_moments r = merge_parts(x, cuts[c], n_parts[c], 0);
        CHECK(r.count == ROWS, "cut %d: count %g", c, r.count);
        CHECK(fabs(r.mean - mean) <= 1e-13 * fabs(mean), "cut %d: mean %.17g, direct %.17g", c, r.mean, mean);
        CHECK(fabs(r.m2 - m2) <= 1e-10 * m2, "cut %d: m2 %.17g, direct %.17g (rel %.3g)", c, r.m2, m2, fabs(r.m2 - m2) / m2);
        /* float sums about each part's shift (as a device makes them) stay accurate */
        cnn_moments f = merge_parts(x, cuts[c], n_parts[c], 1);
        CHECK(f.count == ROWS && fabs(f.mean - mean) <= 1e-6 && fabs(f.m2 - m2) <= 1e-4 * m2,
              "cut %d, float sums: mean %.17g m2 %.17g, direct %.17g %.17g", c, f.mean, f.m2, mean, m2);
    }
    /* the same parts merged in reverse order */
    {
        cnn_moments acc = {0, 0, 0};
        for (int p = 9; p >= 0; p--) {
            double s = 0, ss = 0, sh = x[p * 100];
            for (int i = p * 100; i < p * 100 + 100; i++) { s += x[i] - sh; ss += (x[i] - sh) * (x[i] - sh); }
            cnn_moments_add(&acc, 100, sh, s, ss);
        }
        CHECK(acc.count == ROWS && fabs(acc.mean - mean) <= 1e-13 * fabs(mean) && fabs(acc.m2 - m2) <= 1e-10 * m2,
              "reverse order: mean %.17g m2 %.17g", acc.mean, acc.m2);
    }
    /* count 0 (or negative, NaN) parts leave the accumulator as it was */
    {
        cnn_moments acc = {0, 0, 0};
        cnn_moments_add(&acc, 0, 5, 3, 9);
        CHECK(acc.count == 0 && acc.mean == 0 && acc.m2 == 0, "a count-0 part changed an empty accumulator");
        cnn_moments_add(&acc, 3, 2, 3, 5); /* rows 2+{0,1,2}: mean 3, m2 2 */
        CHECK(acc.count == 3 && acc.mean == 3 && acc.m2 == 2, "rows 2,3,4: %g %g %g", acc.count, acc.mean, acc.m2);
        cnn_moments keep = acc;
        cnn_moments_add(&acc, 0, 100, 1e9, 1e18);
        cnn_moments_add(&acc, -1, 100, 1e9, 1e18);
        cnn_moments_add(&acc, NAN, 100, 1e9, 1e18);
        CHECK(!memcmp(&acc, &keep, sizeof acc), "count 0 / -1 / NaN parts changed the accumulator");
        cnn_moments_add(&acc, 2, 10, 0, 0); /* rows 10, 10 */
        /* 2,3,4,10,10: mean 5.8, m2 = 14.44+7.84+3.24+17.64+17.64 = 60.8 */
        CHECK(acc.count == 5 && fabs(acc.mean - 5.8) < 1e-14 && fabs(acc.m2 - 60.8) < 1e-12,
              "2,3,4 + 10,10: %g %.17g %.17g", acc.count, acc.mean, acc.m2);
    }
}

/* ------------------------------------------------------------------------ */
/* cnn_sum_in_order                                                         */
/* ------------------------------------------------------------------------ */

static void test_sum_in_order(void) {
    test_begin("cnn_sum_in_order");
    float out[4];
    {   /* 1e8 + 1 - 1e8: 0 in float, 1 in double */
        const float p0[2] = {1e8f, 16777216.0f}, p1[2] = {1, 1}, p2[2] = {-1e8f, 1};
        const float *parts[3] = {p0, p1, p2};
        cnn_sum_in_order(out, parts, 3, 2);
        CHECK(out[0] == 1.0f, "1e8 + 1 - 1e8 = %.9g, want 1", out[0]);
        CHECK(out[1] == 16777218.0f, "2^24 + 1 + 1 = %.9g, want 16777218", out[1]);
    }
    {   /* the order is kept: 1e17 + 1 - 1e17 is 0 even in double, 1e17 - 1e17 + 1 is 1 */
        const float big = 1e17f, nbig = -1e17f, one = 1;
        const float *order_a[3] = {&big, &one, &nbig}, *order_b[3] = {&big, &nbig, &one};
        cnn_sum_in_order(out, order_a, 3, 1);
        CHECK(out[0] == 0.0f, "1e17 + 1 - 1e17 in that order = %.9g, want 0", out[0]);
        cnn_sum_in_order(out, order_b, 3, 1);
        CHECK(out[0] == 1.0f, "1e17 - 1e17 + 1 in that order = %.9g, want 1", out[0]);
    }
    {   /* random parts: exactly the double sum in order, rounded once */
        enum { N = 5, COUNT = 777 };
        static float p[N][COUNT], o[COUNT + 1];
        const float *parts[N];
        for (int k = 0; k < N; k++) {
            parts[k] = p[k];
            for (int i = 0; i < COUNT; i++) p[k][i] = (float)((2 * rnd_unit() - 1) * pow(10.0, (double)(rnd() % 9) - 4));
        }
        o[COUNT] = 42;
        cnn_sum_in_order(o, parts, N, COUNT);
        int bad = 0;
        for (int i = 0; i < COUNT; i++) {
            double s = 0;
            for (int k = 0; k < N; k++) s += p[k][i];
            bad += o[i] != (float)s;
        }
        CHECK(!bad, "%d of %d sums differ from the double sum in order", bad, COUNT);
        CHECK(o[COUNT] == 42, "wrote past count");
        cnn_sum_in_order(o, parts, 1, COUNT);
        CHECK(!memcmp(o, p[0], sizeof p[0]), "one part is not copied exactly");
        cnn_sum_in_order(o, parts, 0, 3);
        CHECK(o[0] == 0 && o[1] == 0 && o[2] == 0 && o[3] == p[0][3], "no parts: %g %g %g (want zeros), o[3] touched", o[0], o[1], o[2]);
        o[0] = 7;
        cnn_sum_in_order(o, parts, N, 0);
        CHECK(o[0] == 7, "count 0 wrote");
    }
}

/* ------------------------------------------------------------------------ */
/* The backend hook                                                         */
/* ------------------------------------------------------------------------ */

typedef struct test_backend {
    int forward, backward, release;
    int fail_forward, fail_backward;
    int released_own;   /* release saw this backend still installed */
    int last_B, fused_seen;
} test_backend;

static test_backend *ctx_of(cnn_model *m) { return (test_backend *)m->backend.ctx; }

static int tb_forward(cnn_model *m, const float *x, int B) {
    test_backend *c = ctx_of(m);
    c->forward++;
    c->last_B = B;
    if (c->fail_forward) return cnn_set_error(CNN_ERR_DEVICE, "test backend: the device was lost in the forward pass");
    cnn__forward(m, x, B);
    return CNN_OK;
}

static int tb_backward(cnn_model *m, int B, int fused) {
    test_backend *c = ctx_of(m);
    c->backward++;
    c->fused_seen |= fused ? 1 : 2;
    cnn__backward(m, B, fused); /* even a failing device may have written gradients */
    if (c->fail_backward) return cnn_set_error(CNN_ERR_DEVICE, "test backend: the device was lost in the backward pass");
    return CNN_OK;
}

static void tb_release(cnn_model *m) {
    test_backend *c = ctx_of(m);
    c->release++;
    c->released_own = m->backend.release == tb_release;
}

static cnn_backend make_backend(test_backend *c, const char *name) {
    cnn_backend b;
    memset(&b, 0, sizeof b);
    b.name = name;
    b.ctx = c;
    b.forward = tb_forward;
    b.backward = tb_backward;
    b.release = tb_release;
    return b;
}

/* in 4x4x1 -> flat -> dense 12 relu -> bn -> dense 8 tanh -> dropout -> dense 3 softmax */
static cnn_model *small_model(void) {
    cnn_model *m = cnn_model_new();
    cnn_model_set_seed(m, 2024);
    cnn_node *x = cnn_input(m, 4, 4, 1, "in");
    x = cnn_flatten(m, x, .name = "flat");
    x = cnn_dense(m, x, .units = 12, .activation = CNN_RELU, .name = "d1");
    x = cnn_batch_norm(m, x, .name = "bn");
    x = cnn_dense(m, x, .units = 8, .activation = CNN_TANH, .name = "d2");
    x = cnn_dropout(m, x, .rate = 0.25f, .name = "drop");
    x = cnn_dense(m, x, .units = 3, .activation = CNN_SOFTMAX, .name = "out");
    if (cnn_model_set_output(m, x) ||
        cnn_compile(m, .optimizer = cnn_adam(), .loss = CNN_SPARSE_CATEGORICAL_CROSSENTROPY, .metrics = CNN_ACCURACY)) {
        printf("# building the test model failed: %s\n", cnn_last_error());
        cnn_model_free(m);
        return NULL;
    }
    cnn_model_set_rescale(m, 1.0f / 255);
    return m;
}

/* everything training changes: parameters, optimizer slots, moving statistics, the step */
static int same_buf(const float *a, const float *b, size_t n) {
    if (!a || !b) return a == b;
    return !memcmp(a, b, n * sizeof(float));
}
static int same_model_state(const cnn_model *a, const cnn_model *b) {
    return a->n_params == b->n_params && a->n_state == b->n_state && a->step == b->step &&
           same_buf(a->params, b->params, a->n_params) && same_buf(a->slot1, b->slot1, a->n_params) &&
           same_buf(a->slot2, b->slot2, a->n_params) && same_buf(a->state, b->state, a->n_state) &&
           a->opt.learning_rate == b->opt.learning_rate;
}

typedef struct model_copy { float *params, *slot1, *slot2, *state; size_t n_params, n_state; long long step; } model_copy;
static float *dup_buf(const float *p, size_t n) {
    if (!p) return NULL;
    float *c = (float *)malloc(n * sizeof(float));
    memcpy(c, p, n * sizeof(float));
    return c;
}
static model_copy copy_model(const cnn_model *m) {
    model_copy c;
    c.n_params = m->n_params;
    c.n_state = m->n_state;
    c.step = m->step;
    c.params = dup_buf(m->params, m->n_params);
    c.slot1 = dup_buf(m->slot1, m->n_params);
    c.slot2 = dup_buf(m->slot2, m->n_params);
    c.state = dup_buf(m->state, m->n_state);
    return c;
}
static int model_unchanged(const cnn_model *m, const model_copy *c) {
    return m->n_params == c->n_params && m->n_state == c->n_state && m->step == c->step &&
           same_buf(m->params, c->params, c->n_params) && same_buf(m->slot1, c->slot1, c->n_params) &&
           same_buf(m->slot2, c->slot2, c->n_params) && same_buf(m->state, c->state, c->n_state);
}
static void free_copy(model_copy *c) { free(c->params); free(c->slot1); free(c->slot2); free(c->state); }

enum { NX = 16, PER = 16 };
static float batch_x[NX * PER], batch_y[NX];

static void make_batch(void) {
    for (int i = 0; i < NX * PER; i++) batch_x[i] = (float)rnd_unit();
    for (int i = 0; i < NX; i++) batch_y[i] = (float)(rnd() % 3);
}

static cnn_dataset *make_dataset(int n) {
    cnn_dataset *d = cnn_dataset_new(n, 4, 4, 1, 3);
    if (!d) return NULL;
    for (int i = 0; i < n; i++) {
        d->labels[i] = (int)(rnd() % 3);
        for (int j = 0; j < PER; j++) /* a learnable hint: the label's pixel is bright */
            d->images[(size_t)i * PER + j] = (unsigned char)(j == d->labels[i] ? 200 + rnd() % 56 : rnd() % 160);
    }
    return d;
}

static void test_backend_runs(void) {
    test_begin("backend: train_on_batch, predict, evaluate and fit call it, results identical to the CPU");
    cnn_model *a = small_model(), *ref = small_model();
    cnn_dataset *d = make_dataset(40);
    if (!a || !ref || !d) { CHECK(0, "setup failed: %s", cnn_last_error()); goto done; }
    CHECK(cnn_model_get_backend(a) == NULL, "a CPU model has a backend");
    CHECK(cnn_model_get_backend(NULL) == NULL, "cnn_model_get_backend(NULL) is not NULL");
    test_backend tc;
    memset(&tc, 0, sizeof tc);
    cnn_backend be = make_backend(&tc, "test device");
    CHECK(cnn_model_set_backend(a, &be) == CNN_OK, "set_backend: %s", cnn_last_error());
    const cnn_backend *got = cnn_model_get_backend(a);
    CHECK(got && got != &be && got->ctx == &tc && got->forward == tb_forward && got->backward == tb_backward &&
          got->release == tb_release && got->name && !strcmp(got->name, "test device"),
          "get_backend does not give a copy of the installed backend");
    be.forward = NULL; /* installed by copy: the caller's struct may change or go */
    be.ctx = NULL;

    /* train_on_batch */
    for (int s = 0; s < 3; s++) {
        float la = -1, aa = -1, lr = -2, ar = -2;
        int rc1 = cnn_train_on_batch(a, batch_x, batch_y, NX, 1, &la, &aa);
        int rc2 = cnn_train_on_batch(ref, batch_x, batch_y, NX, 1, &lr, &ar);
        CHECK(rc1 == CNN_OK && rc2 == CNN_OK, "train_on_batch: %d %d (%s)", rc1, rc2, cnn_last_error());
        CHECK(la == lr && aa == ar, "step %d: loss %.9g acc %g on the backend, %.9g %g on the CPU", s, la, aa, lr, ar);
    }
    CHECK(tc.forward == 3 && tc.backward == 3, "3 steps: %d forward, %d backward calls", tc.forward, tc.backward);
    CHECK(tc.last_B == NX, "the backend saw a batch of %d, not %d", tc.last_B, NX);
    CHECK(tc.fused_seen == 1, "softmax + cross-entropy: backward's fused flag was %s", tc.fused_seen == 2 ? "0" : "mixed");
    CHECK(same_model_state(a, ref), "parameters, optimizer slots or moving statistics differ after train_on_batch");
    /* refused input never reaches the backend */
    CHECK(cnn_train_on_batch(a, NULL, batch_y, NX, 1, NULL, NULL) == CNN_ERR_ARG && tc.forward == 3,
          "NULL inputs: forward calls %d", tc.forward);

    /* predict: 16 samples in batches of 5 -> 4 passes */
    {
        float pa[NX * 3], pr[NX * 3];
        int f0 = tc.forward, b0 = tc.backward;
        int rc1 = cnn_predict(a, batch_x, NX, 5, pa), rc2 = cnn_predict(ref, batch_x, NX, 5, pr);
        CHECK(rc1 == CNN_OK && rc2 == CNN_OK, "predict: %d %d (%s)", rc1, rc2, cnn_last_error());
        CHECK(tc.forward - f0 == 4 && tc.backward == b0, "predict 16 in 5s: %d forward, %d backward calls", tc.forward - f0, tc.backward - b0);
        CHECK(tc.last_B == 1, "the last predict batch was %d samples, not 1", tc.last_B);
        CHECK(!memcmp(pa, pr, sizeof pa), "predictions differ (rel err %g)", test_rel_err(pa, pr, NX * 3));
    }
    /* evaluate: 40 images in batches of 16 -> 3 passes */
    {
        cnn_eval_result ra, rr;
        int f0 = tc.forward, b0 = tc.backward;
        int rc1 = cnn_evaluate(a, d, 16, &ra), rc2 = cnn_evaluate(ref, d, 16, &rr);
        CHECK(rc1 == CNN_OK && rc2 == CNN_OK, "evaluate: %d %d (%s)", rc1, rc2, cnn_last_error());
        CHECK(tc.forward - f0 == 3 && tc.backward == b0, "evaluate 40 in 16s: %d forward, %d backward calls", tc.forward - f0, tc.backward - b0);
        CHECK(ra.loss == rr.loss && ra.accuracy == rr.accuracy, "evaluate: %.17g %g on the backend, %.17g %g on the CPU",
              ra.loss, ra.accuracy, rr.loss, rr.accuracy);
    }
    /* fit: 30 training images in batches of 8 (4 steps) and 10 validation images (2 passes), 2 epochs */
    {
        int f0 = tc.forward, b0 = tc.backward;
        cnn_history *ha = cnn_fit(a, d, .batch_size = 8, .epochs = 2, .validation_split = 0.25f, .verbose = 0);
        cnn_history *hr = cnn_fit(ref, d, .batch_size = 8, .epochs = 2, .validation_split = 0.25f, .verbose = 0);
        CHECK(ha && hr, "fit failed: %s", cnn_last_error());
        CHECK(tc.backward - b0 == 8 && tc.forward - f0 == 8 + 4, "fit: %d forward (want 12), %d backward (want 8) calls",
              tc.forward - f0, tc.backward - b0);
        if (ha && hr) {
            const char *keys[4] = {"loss", "accuracy", "val_loss", "val_accuracy"};
            CHECK(ha->epochs == 2 && hr->epochs == 2, "epochs %d %d", ha->epochs, hr->epochs);
            for (int k = 0; k < 4; k++) {
                const double *va = cnn_history_get(ha, keys[k]), *vr = cnn_history_get(hr, keys[k]);
                CHECK(va && vr && va[0] == vr[0] && va[1] == vr[1], "history '%s' differs", keys[k]);
            }
        }
        cnn_history_free(ha);
        cnn_history_free(hr);
        CHECK(same_model_state(a, ref), "parameters, optimizer slots or moving statistics differ after fit");
    }
    /* the input gradient runs on the CPU (backends give none), and still matches */
    {
        static float dxa[NX * PER], dxr[NX * PER];
        float la = 0, lr = 1;
        int f0 = tc.forward;
        int rc1 = cnn_input_gradient(a, batch_x, batch_y, NX, 1, dxa, &la);
        int rc2 = cnn_input_gradient(ref, batch_x, batch_y, NX, 1, dxr, &lr);
        CHECK(rc1 == CNN_OK && rc2 == CNN_OK && la == lr && !memcmp(dxa, dxr, sizeof dxa),
              "input gradient: rc %d %d, loss %g %g, rel err %g", rc1, rc2, la, lr, test_rel_err(dxa, dxr, NX * PER));
        CHECK(tc.forward == f0, "cnn_input_gradient called the backend's forward pass (%d times)", tc.forward - f0);
    }
    CHECK(tc.release == 0, "release called %d times while the backend is in use", tc.release);
    cnn_model_free(a);
    a = NULL;
    CHECK(tc.release == 1 && tc.released_own, "cnn_model_free: release called %d times (own backend %d)", tc.release, tc.released_own);
done:
    cnn_model_free(a);
    cnn_model_free(ref);
    cnn_dataset_free(d);
}

static void test_backend_errors(void) {
    test_begin("backend: a device error is returned and leaves the model unchanged");
    cnn_model *a = small_model(), *ref = small_model();
    cnn_dataset *d = make_dataset(24);
    if (!a || !ref || !d) { CHECK(0, "setup failed: %s", cnn_last_error()); goto done; }
    test_backend tc;
    memset(&tc, 0, sizeof tc);
    cnn_backend be = make_backend(&tc, "flaky device");
    CHECK(cnn_model_set_backend(a, &be) == CNN_OK, "set_backend: %s", cnn_last_error());
    /* one good step on both, so the optimizer slots exist */
    CHECK(cnn_train_on_batch(a, batch_x, batch_y, NX, 1, NULL, NULL) == CNN_OK &&
          cnn_train_on_batch(ref, batch_x, batch_y, NX, 1, NULL, NULL) == CNN_OK, "first step: %s", cnn_last_error());
    model_copy before = copy_model(a);
    CHECK(before.slot1 && before.slot2, "no optimizer slots after a step");

    /* the forward pass fails: nothing at all changes */
    tc.fail_forward = 1;
    {
        float loss = -123, acc = -456, out[NX * 3];
        cnn_eval_result r;
        clear_error();
        int rc = cnn_train_on_batch(a, batch_x, batch_y, NX, 1, &loss, &acc);
        CHECK(rc == CNN_ERR_DEVICE, "failing forward pass: train_on_batch returned %d", rc);
        CHECK(error_has("the device was lost in the forward pass"), "failing forward pass: message '%s'", cnn_last_error());
        CHECK(loss == -123 && acc == -456, "failing forward pass: loss/accuracy written (%g %g)", loss, acc);
        CHECK(model_unchanged(a, &before), "failing forward pass: parameters, slots, moving statistics or step changed");
        clear_error();
        cnn_history *h = cnn_fit(a, d, .batch_size = 8, .epochs = 1, .verbose = 0);
        CHECK(!h && error_has("the device was lost"), "failing forward pass: fit gave %p, message '%s'", (void *)h, cnn_last_error());
        cnn_history_free(h);
        CHECK(model_unchanged(a, &before), "failing forward pass: fit changed the model");
        clear_error();
        CHECK(cnn_predict(a, batch_x, NX, 8, out) == CNN_ERR_DEVICE && error_has("the device was lost"),
              "predict on a failing device: '%s'", cnn_last_error());
        clear_error();
        CHECK(cnn_evaluate(a, d, 8, &r) == CNN_ERR_DEVICE && error_has("the device was lost"),
              "evaluate on a failing device: '%s'", cnn_last_error());
        CHECK(model_unchanged(a, &before), "predict/evaluate on a failing device changed the model");
    }
    /* the failed calls left no trace: the next good step equals the reference's second step */
    tc.fail_forward = 0;
    {
        float la = 0, lr = 1;
        CHECK(cnn_train_on_batch(a, batch_x, batch_y, NX, 1, &la, NULL) == CNN_OK &&
              cnn_train_on_batch(ref, batch_x, batch_y, NX, 1, &lr, NULL) == CNN_OK, "second step: %s", cnn_last_error());
        CHECK(la == lr && same_model_state(a, ref), "after the failures the next step differs from the CPU's (loss %.9g vs %.9g)", la, lr);
    }
    /* the backward pass fails (after writing gradients): no optimizer step. (The
       forward pass before it did run in training mode, so BatchNorm's moving
       statistics have taken this batch; only parameters, slots and the step
       count are compared here.) */
    free_copy(&before);
    before = copy_model(a);
    tc.fail_backward = 1;
    {
        float loss = -123, acc = -456;
        clear_error();
        int rc = cnn_train_on_batch(a, batch_x, batch_y, NX, 1, &loss, &acc);
        CHECK(rc == CNN_ERR_DEVICE, "failing backward pass: train_on_batch returned %d", rc);
        CHECK(error_has("the device was lost in the backward pass"), "failing backward pass: message '%s'", cnn_last_error());
        CHECK(loss == -123 && acc == -456, "failing backward pass: loss/accuracy written (%g %g)", loss, acc);
        CHECK(a->step == before.step && same_buf(a->params, before.params, before.n_params) &&
              same_buf(a->slot1, before.slot1, before.n_params) && same_buf(a->slot2, before.slot2, before.n_params),
              "failing backward pass: parameters, optimizer slots or the step changed");
        clear_error();
        cnn_history *h = cnn_fit(a, d, .batch_size = 8, .epochs = 1, .verbose = 0);
        CHECK(!h && error_has("the device was lost"), "failing backward pass: fit gave %p, message '%s'", (void *)h, cnn_last_error());
        cnn_history_free(h);
        CHECK(a->step == before.step && same_buf(a->params, before.params, before.n_params) &&
              same_buf(a->slot1, before.slot1, before.n_params) && same_buf(a->slot2, before.slot2, before.n_params),
              "failing backward pass: fit changed parameters, optimizer slots or the step");
    }
    free_copy(&before);
done:
    cnn_model_free(a);
    cnn_model_free(ref);
    cnn_dataset_free(d);
}

static void test_backend_release(void) {
    test_begin("backend: release on free, replacement and removal");
    cnn_model *m = small_model();
    if (!m) { CHECK(0, "setup failed: %s", cnn_last_error()); return; }
    test_backend c1, c2;
    memset(&c1, 0, sizeof c1);
    memset(&c2, 0, sizeof c2);
    cnn_backend b1 = make_backend(&c1, "one"), b2 = make_backend(&c2, "two");
    CHECK(cnn_model_set_backend(m, &b1) == CNN_OK && c1.release == 0, "install: release %d", c1.release);
    CHECK(cnn_model_set_backend(m, &b2) == CNN_OK, "replace: %s", cnn_last_error());
    CHECK(c1.release == 1 && c1.released_own && c2.release == 0, "replace: releases %d (own %d), %d", c1.release,
          c1.released_own, c2.release);
    CHECK(cnn_model_get_backend(m) && cnn_model_get_backend(m)->ctx == &c2, "the replacement is not in use");
    CHECK(cnn_model_set_backend(m, NULL) == CNN_OK, "remove: %s", cnn_last_error());
    CHECK(c2.release == 1 && c2.released_own && c1.release == 1, "remove: releases %d %d", c1.release, c2.release);
    CHECK(cnn_model_get_backend(m) == NULL, "after removal the model still has a backend");
    CHECK(cnn_model_set_backend(m, NULL) == CNN_OK && c1.release == 1 && c2.release == 1, "removing twice released again");
    /* back on the CPU: no calls */
    int f1 = c1.forward, f2 = c2.forward;
    CHECK(cnn_train_on_batch(m, batch_x, batch_y, NX, 1, NULL, NULL) == CNN_OK && c1.forward == f1 && c2.forward == f2,
          "a model without a backend called one");
    /* a backend with no release function can be replaced and freed */
    cnn_backend quiet = make_backend(&c2, "no release");
    quiet.release = NULL;
    CHECK(cnn_model_set_backend(m, &quiet) == CNN_OK && cnn_model_set_backend(m, &b1) == CNN_OK && c2.release == 1,
          "a backend without release: %s", cnn_last_error());
    CHECK(cnn_train_on_batch(m, batch_x, batch_y, NX, 1, NULL, NULL) == CNN_OK && c1.forward == f1 + 1 && c1.backward == 1,
          "the reinstalled backend: %d forward, %d backward calls", c1.forward - f1, c1.backward);
    cnn_model_free(m);
    CHECK(c1.release == 2 && c2.release == 1, "free: releases %d %d (want 2, 1)", c1.release, c2.release);
    /* a backend installed before compiling, then freed */
    test_backend c3;
    memset(&c3, 0, sizeof c3);
    cnn_backend b3 = make_backend(&c3, "early");
    cnn_model *e = cnn_model_new();
    CHECK(e && cnn_model_set_backend(e, &b3) == CNN_OK, "install on an empty model: %s", cnn_last_error());
    cnn_model_free(e);
    CHECK(c3.release == 1, "free of an empty model: release %d", c3.release);
}

static void test_backend_bad_input(void) {
    test_begin("backend: bad inputs are refused");
    test_backend c;
    memset(&c, 0, sizeof c);
    cnn_backend good = make_backend(&c, "good");
    clear_error();
    CHECK(cnn_model_set_backend(NULL, &good) == CNN_ERR_ARG && error_has("cnn_model_set_backend") && error_has("NULL"),
          "NULL model: '%s'", cnn_last_error());
    CHECK(c.release == 0, "a refused install released the backend");
    cnn_model *m = cnn_model_new();
    if (!m) { CHECK(0, "cnn_model_new failed"); return; }
    CHECK(cnn_model_set_backend(m, &good) == CNN_OK, "install: %s", cnn_last_error());
    cnn_backend no_fwd = make_backend(&c, "half device"), no_bwd = make_backend(&c, "other half");
    no_fwd.forward = NULL;
    no_bwd.backward = NULL;
    clear_error();
    CHECK(cnn_model_set_backend(m, &no_fwd) == CNN_ERR_ARG, "a backend without forward accepted");
    CHECK(error_has("cnn_model_set_backend") && error_has("half device") && error_has("forward"),
          "no forward: message '%s'", cnn_last_error());
    clear_error();
    CHECK(cnn_model_set_backend(m, &no_bwd) == CNN_ERR_ARG, "a backend without backward accepted");
    CHECK(error_has("other half") && error_has("backward"), "no backward: message '%s'", cnn_last_error());
    no_fwd.name = NULL;
    clear_error();
    CHECK(cnn_model_set_backend(m, &no_fwd) == CNN_ERR_ARG && error_has("cnn_model_set_backend"),
          "unnamed backend without forward: '%s'", cnn_last_error());
    CHECK(c.release == 0, "a refused replacement released the installed backend (%d)", c.release);
    CHECK(cnn_model_get_backend(m) && !strcmp(cnn_model_get_backend(m)->name, "good"),
          "a refused replacement removed the installed backend");
    cnn_model_free(m);
    CHECK(c.release == 1, "free: release %d", c.release);
}

/* ------------------------------------------------------------------------ */
/* BatchNorm's statistics and gradient coefficients from per-worker sums      */
/* ------------------------------------------------------------------------ */

/* Against the formulas computed directly over all values in double: a channel
   of M values cut between three workers, each sending sums about its own
   first value. */
static void test_bn_helpers(void) {
    enum { M = 300 };
    const int cut[4] = {0, 37, 200, M};
    double x[M], dy[M], mean = 0, var = 0, sdy = 0, sdyx = 0;
    float bmean, binv, mm = 0.25f, mv = 2.0f, k[3];
    cnn_moments acc = {0, 0, 0};
    test_begin("BatchNorm helpers: batch statistics, moving update and gradient coefficients from worker sums");
    for (int i = 0; i < M; i++) x[i] = 3.0 + 2.0 * rnd_unit() + (i % 7), dy[i] = rnd_unit() - 0.5;
    for (int i = 0; i < M; i++) mean += x[i] / M;
    for (int i = 0; i < M; i++) var += (x[i] - mean) * (x[i] - mean) / M;
    for (int w = 0; w < 3; w++) { /* each worker's sums about its first value */
        double shift = x[cut[w]], s1 = 0, s2 = 0;
        for (int i = cut[w]; i < cut[w + 1]; i++) s1 += x[i] - shift, s2 += (x[i] - shift) * (x[i] - shift);
        cnn_moments_add(&acc, cut[w + 1] - cut[w], shift, s1, s2);
    }
    cnn_bn_batch_stats(&acc, 1e-3f, 0.99f, &bmean, &binv, &mm, &mv);
    CHECK(fabs(bmean - mean) <= 1e-6 * fabs(mean) && fabs(binv - 1.0 / sqrt(var + 1e-3f)) <= 1e-6 / sqrt(var),
          "mean %.8g vs %.8g, inv %.8g vs %.8g", bmean, mean, binv, 1.0 / sqrt(var + 1e-3f));
    CHECK(fabs(mm - (0.99f * 0.25f + 0.01 * mean)) <= 1e-6 && fabs(mv - (0.99f * 2.0f + 0.01 * var * M / (M - 1))) <= 1e-6,
          "moving statistics %.8g %.8g", mm, mv);
    for (int i = 0; i < M; i++) sdy += dy[i], sdyx += dy[i] * (x[i] - mean);
    {
        const double gamma = 1.3, inv = 1.0 / sqrt(var + 1e-3), dgamma = cnn_bn_grad_coefficients(gamma, mean, inv, sdy, sdyx, M, k);
        double worst = 0, sdyxhat = 0;
        for (int i = 0; i < M; i++) { /* dx = gamma inv / M (M dy - sum dy - xhat sum dy xhat) */
            const double xhat = (x[i] - mean) * inv, want = gamma * inv / M * (M * dy[i] - sdy - xhat * sdyx * inv);
            const double got = k[0] * dy[i] + k[1] * x[i] + k[2];
            if (fabs(got - want) > worst) worst = fabs(got - want);
            sdyxhat += dy[i] * xhat;
        }
        CHECK(worst <= 1e-5, "dx off by %.3g", worst);
        CHECK(fabs(dgamma - sdyxhat) <= 1e-9 * (1 + fabs(sdyxhat)), "dgamma %.10g vs %.10g", dgamma, sdyxhat);
    }
    mm = 0.25f;
    cnn_bn_batch_stats(&acc, 1e-3f, 0.99f, &bmean, &binv, NULL, NULL); /* no moving update asked */
    CHECK(mm == 0.25f, "the moving statistics moved without being asked");
}

/* ------------------------------------------------------------------------ */
/* Dropout by global sample index: a worker's slice draws the batch's masks  */
/* ------------------------------------------------------------------------ */

static void test_dropout_slices(void) {
    enum { B = 10, P = 4 * 4 * 3, FIRST = 6 };
    cnn_model *m = cnn_model_new();
    cnn_node *x = cnn_input(m, 4, 4, 3, "input");
    float in[B * P], whole[B * P];
    int rc;
    test_begin("dropout masks follow the global sample index (first_sample), not the slice's own");
    rc = cnn_model_set_output(m, cnn_dropout(m, x, .rate = 0.5f, .name = "drop"));
    if (!rc) rc = cnn_compile(m, .loss = CNN_MSE);
    if (!rc) rc = cnn__ensure_batch(m, B);
    CHECK(rc == CNN_OK, "model: %s", cnn_last_error());
    if (rc) { cnn_model_free(m); return; }
    for (int i = 0; i < B * P; i++) in[i] = 1.0f + (float)i;
    m->training = 1;
    cnn__forward(m, in, B); /* the whole batch */
    memcpy(whole, m->nodes[m->output]->out, sizeof whole);
    m->first_sample = FIRST; /* samples FIRST.. alone, as a worker would run them */
    cnn__forward(m, in + FIRST * P, B - FIRST);
    CHECK(memcmp(m->nodes[m->output]->out, whole + FIRST * P, (size_t)(B - FIRST) * P * sizeof(float)) == 0,
          "the slice from sample %d draws other masks than the whole batch", FIRST);
    m->first_sample = 0; /* and without the offset, the masks of samples 0.. (so the test can fail) */
    cnn__forward(m, in + FIRST * P, B - FIRST);
    CHECK(memcmp(m->nodes[m->output]->out, whole + FIRST * P, (size_t)(B - FIRST) * P * sizeof(float)) != 0,
          "without first_sample the slice should draw the first samples' masks");
    m->training = 0;
    cnn_model_free(m);
}

int main(void) {
    cnn_set_num_threads(1);
    make_batch();
    test_split_equal();
    test_split_weighted();
    test_split_ties();
    test_split_huge_weights();
    test_split_errors();
    test_split_parse();
    test_split_balance();
    test_moments();
    test_sum_in_order();
    test_bn_helpers();
    test_dropout_slices();
    test_backend_runs();
    test_backend_errors();
    test_backend_release();
    test_backend_bad_input();
    return test_finish();
}
