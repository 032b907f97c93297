/* tensorboard_fit.c - the C half of tests/test_tensorboard.sh: trains a tiny
   model with the TensorBoard callback and prints what TensorBoard's own reader
   must then find in the event files (tests/tensorboard_check.py reads them).

     tensorboard_fit DIR      writes DIR/a (histogram_freq 1, epoch scalars),
                              DIR/b (update_freq = every batch), DIR/c (update_freq 3,
                              no validation), DIR/weights.txt (the weights after
                              training: run a's last histograms), and prints
       STEPS <steps per epoch>
       HIST <run> <key> <epoch> <value>      every History value
     and PASS/FAIL lines for the error cases (a log_dir that cannot be made, bad
     options, a file that cannot be written, each allocation failing in turn: run
     it under ASan/UBSan to see that nothing leaks). */
#ifndef _XOPEN_SOURCE
#define _XOPEN_SOURCE 700 /* setrlimit under -std=c99 */
#endif
#include <stdlib.h>
/* every allocation cnn.h makes goes through here; fail_at > 0 makes the
   fail_at-th request from then on fail */
static long requests, fail_at;
static void *counted_malloc(size_t n) { return fail_at > 0 && ++requests == fail_at ? NULL : malloc(n); }
static void *counted_realloc(void *p, size_t n) {
    return fail_at > 0 && ++requests == fail_at ? NULL : realloc(p, n);
}
#define CNN_MALLOC(sz) counted_malloc(sz)
#define CNN_REALLOC(p, sz) counted_realloc((p), (sz))
#define CNN_FREE(p) free(p)
#define CNN_IMPLEMENTATION
#include "cnn.h"

#include <signal.h>
#include <sys/resource.h>

static int failures;
static void check(int ok, const char *what) {
    printf("%s tensorboard: %s\n", ok ? "PASS" : "FAIL", what);
    if (!ok) failures++;
}

static uint64_t rng_state = 12345;
static unsigned rnd(void) {
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (unsigned)(rng_state >> 33);
}

/* n images 6x6x1 of 3 classes: class k has a bright column band k */
static cnn_dataset *bands(int n) {
    cnn_dataset *d = cnn_dataset_new(n, 6, 6, 1, 3);
    for (int i = 0; d && i < n; i++) {
        int k = (int)(rnd() % 3);
        d->labels[i] = k;
        for (int p = 0; p < 36; p++)
            d->images[i * 36 + p] = (unsigned char)((p % 6) / 2 == k ? 140 + rnd() % 100 : rnd() % 110);
    }
    return d;
}

static cnn_model *tiny(void) {
    cnn_model *m = cnn_model_new();
    cnn_model_set_seed(m, 7);
    cnn_node *x = cnn_input(m, 6, 6, 1, "input");
    x = cnn_conv2d(m, x, .filters = 4, .kernel_size = {3, 3}, .activation = CNN_RELU, .name = "conv_1");
    x = cnn_batch_norm(m, x, .name = "batch_norm_1");
    x = cnn_flatten(m, x, .name = "flatten");
    x = cnn_dense(m, x, .units = 3, .activation = CNN_SOFTMAX, .name = "softmax");
    cnn_model_set_output(m, x);
    cnn_model_set_rescale(m, 1.0f / 255);
    cnn_compile(m, .optimizer = cnn_adam(), .loss = CNN_CATEGORICAL_CROSSENTROPY, .metrics = CNN_ACCURACY);
    return m;
}

static void print_history(const char *run, const cnn_history *h) {
    for (int k = 0; k < h->n_keys; k++)
        for (int e = 0; e < h->epochs; e++) printf("HIST %s %s %d %.17g\n", run, h->keys[k], e, h->values[k][e]);
}

/* one fit of a fresh model with one TensorBoard callback; the History, or NULL */
static cnn_history *fit_with(const cnn_tensorboard_opts *o, const cnn_dataset *train, const cnn_dataset *val,
                             cnn_model **model_out) {
    cnn_callback *tb = cnn_tensorboard_opt(o);
    if (!tb) return NULL;
    cnn_callback *cbs[] = {tb, NULL};
    cnn_model *m = tiny();
    cnn_history *h = cnn_fit(m, train, .batch_size = 16, .epochs = 3, .validation_data = val, .callbacks = cbs);
    cnn_callback_free(tb);
    if (model_out) *model_out = m;
    else cnn_model_free(m);
    return h;
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: tensorboard_fit DIR\n"); return 2; }
    const char *dir = argv[1];
    char path[1024], path2[1024];
    cnn_set_num_threads(1);
    cnn_dataset *train = bands(80), *val = bands(24);
    printf("STEPS %d\n", (80 + 15) / 16);

    /* a: epoch scalars and histograms every epoch */
    cnn_model *m = NULL;
    cnn_tensorboard_opts a = {0};
    snprintf(path, sizeof path, "%s/a", dir);
    a.log_dir = path, a.histogram_freq = 1;
    cnn_history *h = fit_with(&a, train, val, &m);
    check(h != NULL, "fit with TensorBoard(histogram_freq=1)");
    if (!h) printf("  error: %s\n", cnn_last_error());
    if (h) print_history("a", h);
    cnn_history_free(h);
    /* the weights after training, which run a's step-2 histograms show */
    snprintf(path2, sizeof path2, "%s/weights.txt", dir);
    FILE *f = fopen(path2, "w");
    const char *layers[] = {"conv_1", "conv_1", "batch_norm_1", "batch_norm_1", "batch_norm_1", "batch_norm_1",
                            "softmax", "softmax"};
    const char *which[] = {"kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance", "kernel", "bias"};
    for (int t = 0; f && m && t < 8; t++) {
        size_t count = 0;
        const float *w = cnn_layer_weights(m, layers[t], which[t], &count);
        fprintf(f, "%s/%s_0/histogram %zu", layers[t], which[t], count);
        for (size_t i = 0; w && i < count; i++) fprintf(f, " %.9g", w[i]);
        fprintf(f, "\n");
    }
    if (f) fclose(f);
    cnn_model_free(m);

    /* b: batch scalars every batch */
    cnn_tensorboard_opts b = {0};
    snprintf(path, sizeof path, "%s/b/", dir); /* a trailing slash, as users write it */
    b.log_dir = path, b.update_freq = CNN_UPDATE_BATCH;
    h = fit_with(&b, train, val, NULL);
    check(h != NULL, "fit with TensorBoard(update_freq=batch)");
    if (!h) printf("  error: %s\n", cnn_last_error());
    if (h) print_history("b", h);
    cnn_history_free(h);

    /* c: every 3 batches, no validation (so no validation folder) */
    cnn_tensorboard_opts c = {0};
    snprintf(path, sizeof path, "%s/c/nested/run", dir);
    c.log_dir = path, c.update_freq = 3;
    h = fit_with(&c, train, NULL, NULL);
    check(h != NULL, "fit with TensorBoard(update_freq=3), no validation, nested log_dir");
    if (!h) printf("  error: %s\n", cnn_last_error());
    if (h) print_history("c", h);
    cnn_history_free(h);

    /* errors: bad options, a folder that cannot be made, a file that cannot be written */
    cnn_tensorboard_opts bad = {0};
    bad.histogram_freq = -1;
    check(!cnn_tensorboard_opt(&bad) && strstr(cnn_last_error(), "histogram_freq"),
          "histogram_freq -1 is refused, naming it");
    bad.histogram_freq = 0, bad.update_freq = -2;
    check(!cnn_tensorboard_opt(&bad) && strstr(cnn_last_error(), "update_freq"), "update_freq -2 is refused");
    bad.update_freq = 0, bad.log_dir = "";
    check(!cnn_tensorboard_opt(&bad) && strstr(cnn_last_error(), "log_dir"), "an empty log_dir is refused");

    snprintf(path2, sizeof path2, "%s/a_file", dir);
    f = fopen(path2, "w");
    if (f) fclose(f);
    snprintf(path, sizeof path, "%s/a_file/logs", dir);
    cnn_tensorboard_opts nodir = {0};
    nodir.log_dir = path;
    h = fit_with(&nodir, train, val, NULL);
    snprintf(path2, sizeof path2, "%s/a_file/logs", dir);
    check(!h && strstr(cnn_last_error(), "cannot make the folder") && strstr(cnn_last_error(), path2),
          "a log_dir under a file: fit fails, naming the folder");
    printf("  (%s)\n", cnn_last_error());
    cnn_history_free(h);

    /* files limited to 3000 bytes (RLIMIT_FSIZE, SIGXFSZ ignored): the histograms do not fit */
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 3000;
    signal(SIGXFSZ, SIG_IGN);
    snprintf(path, sizeof path, "%s/full", dir);
    cnn_tensorboard_opts full = {0};
    full.log_dir = path, full.histogram_freq = 1;
    if (setrlimit(RLIMIT_FSIZE, &lim) == 0) {
        h = fit_with(&full, train, val, NULL);
        setrlimit(RLIMIT_FSIZE, &old);
        snprintf(path2, sizeof path2, "%s/full/train/events.out.tfevents.", dir);
        check(!h && strstr(cnn_last_error(), "cannot write") && strstr(cnn_last_error(), path2),
              "a file that cannot be written (RLIMIT_FSIZE): fit fails, naming the file");
        printf("  (%s)\n", cnn_last_error());
        cnn_history_free(h);
    } else check(0, "setrlimit(RLIMIT_FSIZE)");

    /* each allocation of TensorBoard's constructor and of a fit with it (histograms,
       every batch) failing in turn: NULL and a message, or a History; no crash */
    long k, points = 0, wrong = 0;
    for (k = 1; k < 100000; k++) {
        cnn_model *sm = tiny();
        cnn_tensorboard_opts s = {0};
        snprintf(path, sizeof path, "%s/sweep/%ld", dir, k);
        s.log_dir = path, s.histogram_freq = 1, s.update_freq = CNN_UPDATE_BATCH;
        requests = 0, fail_at = k;
        cnn_callback *cb = cnn_tensorboard_opt(&s);
        cnn_callback *cbs[] = {cb, NULL};
        h = cb ? cnn_fit(sm, train, .batch_size = 40, .epochs = 2, .validation_data = val, .callbacks = cbs) : NULL;
        const long made = requests;
        fail_at = 0;
        if (!h && !strstr(cnn_last_error(), "memory")) {
            if (wrong++ < 3) printf("  allocation %ld failing: NULL and '%s'\n", k, cnn_last_error());
        }
        cnn_history_free(h);
        cnn_callback_free(cb);
        cnn_model_free(sm);
        if (made < k) { /* no allocation failed: the whole run */
            if (!h) wrong++;
            break;
        }
        points++;
    }
    printf("  (%ld allocation points)\n", points);
    check(!wrong && points > 10, "each allocation of TensorBoard and its fit failing in turn: an out-of-memory error");

    cnn_dataset_free(train);
    cnn_dataset_free(val);
    return failures ? 1 : 0;
}
