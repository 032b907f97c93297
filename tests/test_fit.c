/* test_fit.c - behaviour of cnn_fit, the History and the callbacks on a tiny
   synthetic task: 8x8x1 images whose class is the bright quadrant.

   Covers: learning the task, History keys per epoch, validation_split taking the
   LAST fraction (Keras' count), determinism (seeds, thread counts), EarlyStopping
   (plateau, restore_best_weights, reuse across fits), ReduceLROnPlateau (factor,
   min_lr, cooldown), LearningRateScheduler, CSVLogger, ModelCheckpoint (templates,
   save_best_only), TerminateOnNaN, LambdaCallback stops, Ctrl-C, class_weight,
   frozen layers, kernel regularizers, custom batch sources with steps_per_epoch,
   one-hot vs class-index targets, and gradient checks of branching graphs
   (Inception-style Concatenate, ResNet-style Add with BatchNormalization).

   Build and run from the repository root:
     gcc -std=c99 -O1 -g -fopenmp -Wall -Wextra -I. tests/test_fit.c -lm -o /tmp/tf && /tmp/tf
   Files go to a mkdtemp folder under /tmp, removed at the end. The kernels run on
   one thread except in the thread-count comparison (tiny models gain nothing
   from threads, and busy machines make OpenMP barriers slow). */
#ifndef _XOPEN_SOURCE
#define _XOPEN_SOURCE 700 /* mkdtemp, sigaction, dirent under -std=c99 */
#endif
#define CNN_IMPLEMENTATION
#include "cnn.h"
#include "test_util.h"

#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */
/* ------------------------------------------------------------------------ */

static char tmp_root[64];
static FILE *devnull;

static uint64_t rng_state;
static uint32_t rnd(void) {
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(rng_state >> 33);
}

/* n images 8x8x1; class k in 0..classes-1 has quadrant k (TL, TR, BL, BR) bright */
static cnn_dataset *quadrant_data(int n, int classes, uint64_t seed) {
    rng_state = seed;
    cnn_dataset *d = cnn_dataset_new(n, 8, 8, 1, classes);
    for (int i = 0; i < n; i++) {
        int k = (int)(rnd() % (unsigned)classes), qy = k / 2, qx = k % 2;
        d->labels[i] = k;
        for (int y = 0; y < 8; y++)
            for (int x = 0; x < 8; x++) {
                int bright = y / 4 == qy && x / 4 == qx;
                d->images[(size_t)i * 64 + y * 8 + x] = (unsigned char)(bright ? 150 + rnd() % 106 : rnd() % 90);
            }
    }
    return d;
}

typedef struct model_cfg {
    uint64_t seed;
    int classes;
    int bn;                 /* BatchNormalization "bn" after the conv */
    float dropout;          /* Dropout "drop" before the output */
    cnn_optimizer opt;
    cnn_regularizer reg;    /* on both kernels */
} model_cfg;

/* in 8x8x1 -> conv 4@3x3 relu -> [bn] -> pool 2x2 -> flat -> [drop] -> dense "out" softmax */
static cnn_model *quad_model(model_cfg c) {
    cnn_model *m = cnn_model_new();
    cnn_model_set_seed(m, c.seed);
    cnn_node *x = cnn_input(m, 8, 8, 1, "in");
    x = cnn_conv2d(m, x, .filters = 4, .kernel_size = {3, 3}, .activation = CNN_RELU, .kernel_regularizer = c.reg, .name = "conv");
    if (c.bn) x = cnn_batch_norm(m, x, .name = "bn");
    x = cnn_max_pool2d(m, x, .name = "pool");
    x = cnn_flatten(m, x, .name = "flat");
    if (c.dropout > 0) x = cnn_dropout(m, x, .rate = c.dropout, .name = "drop");
    x = cnn_dense(m, x, .units = c.classes ? c.classes : 4, .activation = CNN_SOFTMAX, .kernel_regularizer = c.reg, .name = "out");
    if (cnn_model_set_output(m, x) ||
        cnn_compile(m, .optimizer = c.opt, .loss = CNN_CATEGORICAL_CROSSENTROPY, .metrics = CNN_ACCURACY)) {
        printf("# building the test model failed: %s\n", cnn_last_error());
        cnn_model_free(m);
        return NULL;
    }
    cnn_model_set_rescale(m, 1.0f / 255);
    return m;
}

/* a copy of all parameters and the BatchNorm statistics (when "bn" exists) */
typedef struct snapshot { float *p; size_t n; float bn[8]; int has_bn; } snapshot;

static snapshot snap(cnn_model *m) {
    snapshot s;
    memset(&s, 0, sizeof s);
    float *p = cnn_model_params(m, &s.n);
    s.p = (float *)malloc(s.n * sizeof(float));
    memcpy(s.p, p, s.n * sizeof(float));
    size_t c = 0;
    float *mm = cnn_layer_weights(m, "bn", "moving_mean", &c);
    if (mm && c == 4) {
        s.has_bn = 1;
        memcpy(s.bn, mm, 4 * sizeof(float));
        memcpy(s.bn + 4, cnn_layer_weights(m, "bn", "moving_variance", &c), 4 * sizeof(float));
    }
    cnn_set_error(CNN_OK, "%s", ""); /* no "bn" is not an error here */
    return s;
}

static int same_snap(const snapshot *a, const snapshot *b) {
    return a->n == b->n && !memcmp(a->p, b->p, a->n * sizeof(float)) && a->has_bn == b->has_bn &&
           (!a->has_bn || !memcmp(a->bn, b->bn, sizeof a->bn));
}

static int model_matches(cnn_model *m, const snapshot *s) {
    snapshot now = snap(m);
    int same = same_snap(&now, s);
    free(now.p);
    return same;
}

static int tensor_equal(cnn_model *m, const char *layer, const char *which, const float *ref, size_t n) {
    size_t c = 0;
    const float *p = cnn_layer_weights(m, layer, which, &c);
    return p && c == n && !memcmp(p, ref, n * sizeof(float));
}

static float *tensor_copy(cnn_model *m, const char *layer, const char *which, size_t *n) {
    const float *p = cnn_layer_weights(m, layer, which, n);
    float *c = (float *)malloc(*n * sizeof(float));
    memcpy(c, p, *n * sizeof(float));
    return c;
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

static void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[1024];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) remove_tree(p);
        else remove(p);
    }
    closedir(d);
    rmdir(dir);
}

static const char *tmp_path(char *buf, size_t cap, const char *rel) {
    snprintf(buf, cap, "%s/%s", tmp_root, rel);
    return buf;
}

/* Keras' validation count: n - floor(n * (1 - split)) */
static int keras_val_count(int n, float split) { return n - (int)floor((double)n * (1.0 - (double)split)); }

/* ------------------------------------------------------------------------ */
/* Learning, History, validation_split                                      */
/* ------------------------------------------------------------------------ */

static void test_learns(void) {
    test_begin("fit learns the quadrant task; History has every key for every epoch");
    cnn_dataset *d = quadrant_data(320, 4, 1);
    cnn_model *m = quad_model((model_cfg){.seed = 1, .opt = cnn_adam(.learning_rate = 0.01f)});
    const int E = 8;
    cnn_history *h = cnn_fit(m, d, .epochs = E, .batch_size = 32, .validation_split = 0.25f);
    CHECK(h != NULL, "fit: %s", cnn_last_error());
    if (h) {
        CHECK(h->epochs == E, "history->epochs %d, want %d", h->epochs, E);
        CHECK(!h->stopped_early && !h->interrupted, "nothing stopped this fit");
        const char *keys[4] = {"loss", "accuracy", "val_loss", "val_accuracy"};
        for (int k = 0; k < 4; k++) {
            const double *v = cnn_history_get(h, keys[k]);
            CHECK(v != NULL, "History has no '%s'", keys[k]);
            for (int e = 0; v && e < h->epochs; e++) CHECK(isfinite(v[e]), "%s[%d] = %g", keys[k], e, v[e]);
        }
        CHECK(cnn_history_get(h, "lr") == NULL, "'lr' appears only with an lr callback");
        const double *loss = cnn_history_get(h, "loss"), *acc = cnn_history_get(h, "accuracy");
        const double *vacc = cnn_history_get(h, "val_accuracy");
        if (loss && acc && vacc) {
            CHECK(loss[E - 1] < 0.5 * loss[0], "loss %g -> %g did not halve", loss[0], loss[E - 1]);
            CHECK(acc[E - 1] > 0.9, "final accuracy %g", acc[E - 1]);
            CHECK(vacc[E - 1] > 0.9, "final val_accuracy %g", vacc[E - 1]);
            printf("# quadrant task: loss %.4f -> %.4f, accuracy %.3f, val_accuracy %.3f\n", loss[0], loss[E - 1], acc[E - 1], vacc[E - 1]);
        }
        cnn_eval_result r;
        CHECK(cnn_evaluate(m, d, 0, &r) == 0 && r.accuracy > 0.9, "evaluate accuracy %g", r.accuracy);
    }
    cnn_history_free(h);
    cnn_model_free(m);
    cnn_dataset_free(d);
}

static void test_validation_split(void) {
    test_begin("validation_split validates on the LAST fraction");
    cnn_dataset *d = quadrant_data(320, 4, 2);
    cnn_model *m = quad_model((model_cfg){.seed = 3, .bn = 1});
    cnn_history *h = cnn_fit(m, d, .epochs = 3, .batch_size = 32, .validation_split = 0.25f);
    CHECK(h != NULL, "fit: %s", cnn_last_error());
    if (h) {
        cnn_dataset *last = cnn_dataset_subset(d, 240, 80), *first = cnn_dataset_subset(d, 0, 80);
        cnn_eval_result rl, rf;
        CHECK(cnn_evaluate(m, last, 32, &rl) == 0 && cnn_evaluate(m, first, 32, &rf) == 0, "evaluate: %s", cnn_last_error());
        const double *vl = cnn_history_get(h, "val_loss"), *va = cnn_history_get(h, "val_accuracy");
        CHECK(vl && fabs(vl[2] - rl.loss) <= 1e-5, "val_loss %.8f but the last 80 images give %.8f (first 80: %.8f)", vl ? vl[2] : NAN, rl.loss, rf.loss);
        CHECK(va && fabs(va[2] - rl.accuracy) <= 1e-9, "val_accuracy %.6f but the last 80 images give %.6f", va ? va[2] : NAN, rl.accuracy);
        cnn_dataset_free(last);
        cnn_dataset_free(first);
    }
    cnn_history_free(h);
    cnn_model_free(m);
    cnn_dataset_free(d);

    test_begin("validation_split count matches Keras and cnn_dataset_split");
    /* 245 images, split 0.1: Keras trains on floor(245 * 0.9) = 220 and validates on 25 */
    d = quadrant_data(245, 4, 4);
    const int nv = keras_val_count(245, 0.1f);
    cnn_dataset *tr = NULL, *va = NULL;
    CHECK(cnn_dataset_split(d, 0.1f, &tr, &va) == 0 && va && va->n == nv, "cnn_dataset_split gives %d validation images, Keras %d", va ? va->n : -1, nv);
    cnn_dataset_free(tr);
    cnn_dataset_free(va);
    m = quad_model((model_cfg){.seed = 3});
    h = cnn_fit(m, d, .epochs = 1, .batch_size = 32, .validation_split = 0.1f);
    CHECK(h != NULL, "fit: %s", cnn_last_error());
    if (h) {
        cnn_dataset *keras = cnn_dataset_subset(d, 245 - nv, nv), *other = cnn_dataset_subset(d, 245 - (nv - 1), nv - 1);
        cnn_eval_result rk, ro;
        cnn_evaluate(m, keras, 32, &rk);
        cnn_evaluate(m, other, 32, &ro);
        const double *vl = cnn_history_get(h, "val_loss");
        CHECK(vl && fabs(vl[0] - rk.loss) <= 1e-5, "val_loss %.8f matches the last %d images (%.8f), not Keras' last %d (%.8f)", vl ? vl[0] : NAN,
              vl && fabs(vl[0] - ro.loss) <= 1e-5 ? nv - 1 : -1, ro.loss, nv, rk.loss);
        cnn_dataset_free(keras);
        cnn_dataset_free(other);
    }
    cnn_history_free(h);
    cnn_model_free(m);
    cnn_dataset_free(d);
}

/* ------------------------------------------------------------------------ */
/* Determinism                                                              */
/* ------------------------------------------------------------------------ */

static snapshot fit_snapshot(uint64_t seed, const cnn_dataset *d, int epochs) {
    cnn_model *m = quad_model((model_cfg){.seed = seed, .bn = 1, .dropout = 0.3f});
    cnn_history *h = cnn_fit(m, d, .epochs = epochs, .batch_size = 32);
    if (!h) printf("# fit failed: %s\n", cnn_last_error());
    cnn_history_free(h);
    snapshot s = snap(m);
    cnn_model_free(m);
    return s;
}

static void test_determinism(void) {
    test_begin("determinism: same seed gives bit-identical weights, another seed differs");
    cnn_dataset *d = quadrant_data(160, 4, 5);
    snapshot a = fit_snapshot(11, d, 2), b = fit_snapshot(11, d, 2), c = fit_snapshot(12, d, 2);
    CHECK(same_snap(&a, &b), "two fits with seed 11 differ");
    CHECK(!same_snap(&a, &c), "seeds 11 and 12 gave identical weights");
#ifdef _OPENMP
    test_begin("determinism: 1 thread and 2 threads give bit-identical weights");
    cnn_set_num_threads(2);
    snapshot t2 = fit_snapshot(11, d, 1);
    cnn_set_num_threads(1);
    snapshot t1 = fit_snapshot(11, d, 1);
    CHECK(same_snap(&t1, &t2), "1 and 2 threads differ");
    if (!same_snap(&t1, &t2)) {
        size_t first = 0;
        while (first < t1.n && t1.p[first] == t2.p[first]) first++;
        printf("# first differing parameter: %zu of %zu\n", first, t1.n);
    }
    free(t1.p);
    free(t2.p);
#else
    printf("# built without OpenMP: thread-count comparison skipped\n");
#endif
    free(a.p);
    free(b.p);
    free(c.p);
    cnn_dataset_free(d);
}

/* ------------------------------------------------------------------------ */
/* Callbacks                                                                */
/* ------------------------------------------------------------------------ */

#define MAX_EPOCHS 16
typedef struct recorder {
    snapshot at_end[MAX_EPOCHS];  /* weights at the end of each epoch */
    int epochs_seen;
    float lr_at_begin[MAX_EPOCHS];
    int batches[MAX_EPOCHS];
    int last_epoch, last_batch;
    int stop_at_epoch_end, stop_at_epoch_begin; /* -1: never */
    int stop_at_batch_epoch, stop_at_batch;
    int nan_at_epoch, nan_at_batch;
    int sigint_at_epoch, sigint_at_batch;
    int lr_mismatch;
    const float *lr_table;        /* schedule values, or NULL */
} recorder;

static void recorder_init(recorder *r) {
    memset(r, 0, sizeof *r);
    r->stop_at_epoch_end = r->stop_at_epoch_begin = r->stop_at_batch_epoch = r->nan_at_epoch = r->sigint_at_epoch = -1;
}

static void recorder_free(recorder *r) {
    for (int e = 0; e < MAX_EPOCHS; e++) free(r->at_end[e].p);
}

static int rec_epoch_begin(cnn_model *m, int epoch, void *user) {
    recorder *r = (recorder *)user;
    if (epoch < MAX_EPOCHS) r->lr_at_begin[epoch] = cnn_get_learning_rate(m);
    if (r->lr_table && epoch < MAX_EPOCHS && cnn_get_learning_rate(m) != r->lr_table[epoch]) r->lr_mismatch++;
    return epoch == r->stop_at_epoch_begin;
}

static int rec_epoch_end(cnn_model *m, int epoch, const cnn_history *h, void *user) {
    recorder *r = (recorder *)user;
    (void)h;
    if (epoch < MAX_EPOCHS) {
        free(r->at_end[epoch].p);
        r->at_end[epoch] = snap(m);
    }
    r->epochs_seen++;
    return epoch == r->stop_at_epoch_end;
}

static int rec_batch_end(cnn_model *m, int epoch, int batch, float loss, void *user) {
    recorder *r = (recorder *)user;
    (void)loss;
    if (epoch < MAX_EPOCHS) r->batches[epoch]++;
    r->last_epoch = epoch;
    r->last_batch = batch;
    if (r->lr_table && epoch < MAX_EPOCHS && cnn_get_learning_rate(m) != r->lr_table[epoch]) r->lr_mismatch++;
    if (epoch == r->nan_at_epoch && batch == r->nan_at_batch) { /* cnn_set_weights refuses NaN: write through the pointer */
        size_t n = 0;
        float *bias = cnn_layer_weights(m, "out", "bias", &n);
        if (bias) bias[0] = NAN;
    }
    if (epoch == r->sigint_at_epoch && batch == r->sigint_at_batch) raise(SIGINT);
    return epoch == r->stop_at_batch_epoch && batch == r->stop_at_batch;
}

static cnn_callback *recorder_callback(recorder *r) {
    return cnn_lambda_callback(.on_epoch_begin = rec_epoch_begin, .on_epoch_end = rec_epoch_end, .on_batch_end = rec_batch_end, .user = r);
}

/* a schedule that reads its values from a table (user) and records the lr it was given */
typedef struct sched_table { const float *lr; float given[MAX_EPOCHS]; int calls; } sched_table;
static float sched_from_table(int epoch, float lr, void *user) {
    sched_table *t = (sched_table *)user;
    if (epoch < MAX_EPOCHS) t->given[epoch] = lr;
    t->calls++;
    return t->lr[epoch];
}

static void test_early_stopping(void) {
    cnn_dataset *d = quadrant_data(128, 4, 6);
    test_begin("EarlyStopping stops on a plateau and sets stopped_early");
    cnn_model *m = quad_model((model_cfg){.seed = 4});
    cnn_callback *es = cnn_early_stopping(.monitor = "loss", .patience = 2, .min_delta = 1e9f); /* nothing counts as better */
    cnn_callback *cbs[3] = {es, NULL, NULL};
    cnn_history *h = cnn_fit(m, d, .epochs = 10, .batch_size = 32, .callbacks = cbs);
    CHECK(h && h->epochs == 3, "patience 2 after the first epoch: %d epochs, want 3", h ? h->epochs : -1);
    CHECK(h && h->stopped_early == 1, "stopped_early not set");
    cnn_history_free(h);

    test_begin("EarlyStopping state is reset at the start of each fit (Keras on_train_begin)");
    h = cnn_fit(m, d, .epochs = 10, .batch_size = 32, .callbacks = cbs);
    CHECK(h && h->epochs == 3, "reusing the callback in a second fit: %d epochs, want 3 again", h ? h->epochs : -1);
    cnn_history_free(h);
    cnn_callback_free(es);
    cnn_model_free(m);

    test_begin("EarlyStopping restore_best_weights restores the best epoch");
    /* monitor lr (mode max) under a schedule: the best epoch is 1, then two worse ones */
    static const float table[MAX_EPOCHS] = {0.01f, 0.05f, 0.02f, 0.01f, 0.01f, 0.01f, 0.01f, 0.01f};
    sched_table st = {table, {0}, 0};
    recorder rec;
    recorder_init(&rec);
    m = quad_model((model_cfg){.seed = 5, .bn = 1});
    cnn_callback *sched = cnn_lr_scheduler(.schedule = sched_from_table, .user = &st);
    cnn_callback *lam = recorder_callback(&rec);
    es = cnn_early_stopping(.monitor = "lr", .mode = CNN_MODE_MAX, .patience = 2, .restore_best_weights = 1);
    cnn_callback *cbs2[4] = {sched, lam, es, NULL};
    h = cnn_fit(m, d, .epochs = 8, .batch_size = 32, .callbacks = cbs2);
    CHECK(h && h->epochs == 4 && h->stopped_early, "best epoch 1, patience 2: %d epochs (want 4), stopped_early %d", h ? h->epochs : -1, h ? h->stopped_early : -1);
    if (h && h->epochs == 4) {
        CHECK(model_matches(m, &rec.at_end[1]), "the weights are not those of the end of epoch 1");
        CHECK(!same_snap(&rec.at_end[1], &rec.at_end[3]), "training did not change the weights after epoch 1");
    }
    cnn_history_free(h);
    cnn_callback_free(sched);
    cnn_callback_free(lam);
    cnn_callback_free(es);
    recorder_free(&rec);
    cnn_model_free(m);
    cnn_dataset_free(d);
}

static void test_reduce_lr(void) {
    cnn_dataset *d = quadrant_data(64, 4, 7);
    const float L = 0.008f;
    test_begin("ReduceLROnPlateau halves the learning rate on a plateau");
    cnn_model *m = quad_model((model_cfg){.seed = 6, .opt = cnn_adam(.learning_rate = L)});
    cnn_callback *rl = cnn_reduce_lr_on_plateau(.monitor = "loss", .factor = 0.5f, .patience = 1, .min_delta = 1e9f);
    cnn_callback *cbs[2] = {rl, NULL};
    cnn_history *h = cnn_fit(m, d, .epochs = 5, .batch_size = 32, .callbacks = cbs, .out = devnull);
    const double *lr = cnn_history_get(h, "lr");
    /* Keras logs the rate used during the epoch; the first epoch sets the best value */
    float want[5] = {L, L, L / 2, L / 4, L / 8};
    CHECK(h && lr, "no 'lr' in the History: %s", cnn_last_error());
    for (int e = 0; lr && e < 5; e++) CHECK((float)lr[e] == want[e], "lr[%d] = %g, want %g", e, lr[e], want[e]);
    CHECK(cnn_get_learning_rate(m) == L / 16, "learning rate after fit %g, want %g", cnn_get_learning_rate(m), L / 16);
    cnn_history_free(h);
    cnn_callback_free(rl);
    cnn_model_free(m);

    test_begin("ReduceLROnPlateau honours min_lr");
    m = quad_model((model_cfg){.seed = 6, .opt = cnn_adam(.learning_rate = 0.01f)});
    cbs[0] = rl = cnn_reduce_lr_on_plateau(.monitor = "loss", .factor = 0.5f, .patience = 1, .min_delta = 1e9f, .min_lr = 0.003f);
    h = cnn_fit(m, d, .epochs = 5, .batch_size = 32, .callbacks = cbs, .out = devnull);
    lr = cnn_history_get(h, "lr");
    float want2[5] = {0.01f, 0.01f, 0.005f, 0.003f, 0.003f};
    CHECK(h && lr, "no 'lr' in the History");
    for (int e = 0; lr && e < 5; e++) CHECK((float)lr[e] == want2[e], "lr[%d] = %g, want %g", e, lr[e], want2[e]);
    CHECK(cnn_get_learning_rate(m) == 0.003f, "learning rate after fit %g, want 0.003", cnn_get_learning_rate(m));
    cnn_history_free(h);
    cnn_callback_free(rl);
    cnn_model_free(m);

    test_begin("ReduceLROnPlateau honours cooldown");
    m = quad_model((model_cfg){.seed = 6, .opt = cnn_adam(.learning_rate = L)});
    cbs[0] = rl = cnn_reduce_lr_on_plateau(.monitor = "loss", .factor = 0.5f, .patience = 1, .min_delta = 1e9f, .cooldown = 2);
    h = cnn_fit(m, d, .epochs = 6, .batch_size = 32, .callbacks = cbs, .out = devnull);
    lr = cnn_history_get(h, "lr");
    /* Keras: reduce after epochs 1, 3, 5 (two epochs of cooldown after each reduction) */
    float want3[6] = {L, L, L / 2, L / 2, L / 4, L / 4};
    CHECK(h && lr, "no 'lr' in the History");
    for (int e = 0; lr && e < 6; e++) CHECK((float)lr[e] == want3[e], "lr[%d] = %g, want %g", e, lr[e], want3[e]);
    CHECK(cnn_get_learning_rate(m) == L / 8, "learning rate after fit %g, want %g", cnn_get_learning_rate(m), L / 8);
    cnn_history_free(h);
    cnn_callback_free(rl);
    cnn_model_free(m);
    cnn_dataset_free(d);
}

static float sched_linear(int epoch, float lr, void *user) {
    float *given = (float *)user;
    if (epoch < MAX_EPOCHS) given[epoch] = lr;
    return 0.01f * (float)(epoch + 1);
}

static void test_lr_scheduler(void) {
    test_begin("LearningRateScheduler sets the rate at each epoch start");
    cnn_dataset *d = quadrant_data(64, 4, 8);
    cnn_model *m = quad_model((model_cfg){.seed = 7, .opt = cnn_sgd()});
    float given[MAX_EPOCHS] = {0}, table[MAX_EPOCHS];
    for (int e = 0; e < MAX_EPOCHS; e++) table[e] = 0.01f * (float)(e + 1);
    recorder rec;
    recorder_init(&rec);
    rec.lr_table = table;
    cnn_callback *sc = cnn_lr_scheduler(.schedule = sched_linear, .user = given);
    cnn_callback *lam = recorder_callback(&rec);
    cnn_callback *cbs[3] = {sc, lam, NULL};
    cnn_history *h = cnn_fit(m, d, .epochs = 4, .batch_size = 16, .callbacks = cbs);
    const double *lr = cnn_history_get(h, "lr");
    CHECK(h && lr && h->epochs == 4, "fit: %s", cnn_last_error());
    for (int e = 0; lr && e < 4; e++) CHECK((float)lr[e] == table[e], "history lr[%d] = %g, want %g", e, lr[e], table[e]);
    CHECK(rec.lr_mismatch == 0, "%d hooks saw a learning rate other than the schedule's", rec.lr_mismatch);
    CHECK(given[0] == 0.01f, "the schedule got lr %g at epoch 0, want the compiled 0.01", given[0]);
    for (int e = 1; e < 4; e++) CHECK(given[e] == table[e - 1], "the schedule got lr %g at epoch %d, want %g", given[e], e, table[e - 1]);
    CHECK(cnn_get_learning_rate(m) == table[3], "lr after fit %g", cnn_get_learning_rate(m));
    cnn_history_free(h);
    cnn_callback_free(sc);
    cnn_callback_free(lam);
    recorder_free(&rec);
    cnn_model_free(m);
    cnn_dataset_free(d);
}

/* read a whole text file (NULL if missing) */
static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = (char *)malloc((size_t)n + 1);
    size_t got = fread(s, 1, (size_t)n, f);
    s[got] = 0;
    fclose(f);
    return s;
}

static void test_csv_logger(void) {
    test_begin("CSVLogger writes epoch then sorted keys, one row per epoch");
    char path[512];
    tmp_path(path, sizeof path, "log.csv");
    cnn_dataset *d = quadrant_data(128, 4, 9);
    cnn_model *m = quad_model((model_cfg){.seed = 8});
    cnn_callback *csv = cnn_csv_logger(.filename = path);
    cnn_callback *rl = cnn_reduce_lr_on_plateau(.monitor = "val_loss", .patience = 1, .factor = 0.5f);
    cnn_callback *cbs[3] = {rl, csv, NULL};
    cnn_history *h = cnn_fit(m, d, .epochs = 3, .batch_size = 32, .validation_split = 0.25f, .callbacks = cbs, .out = devnull);
    CHECK(h != NULL, "fit: %s", cnn_last_error());
    char *text = slurp(path);
    CHECK(text != NULL, "no CSV file at %s", path);
    if (h && text) {
        const char *header = "epoch,accuracy,loss,lr,val_accuracy,val_loss";
        char *line = strtok(text, "\n");
        CHECK(line && !strcmp(line, header), "header '%s', want '%s'", line ? line : "(none)", header);
        const char *keys[5] = {"accuracy", "loss", "lr", "val_accuracy", "val_loss"};
        int rows = 0;
        while ((line = strtok(NULL, "\n"))) {
            char *p = line, *end;
            long ep = strtol(p, &end, 10);
            CHECK(ep == rows && *end == ',', "row %d starts with epoch '%.*s'", rows, (int)(end - p), p);
            for (int k = 0; k < 5 && rows < h->epochs; k++) {
                p = end + 1;
                double v = strtod(p, &end);
                const double *hv = cnn_history_get(h, keys[k]);
                CHECK(hv && v == hv[rows], "row %d %s = %.17g, History %.17g", rows, keys[k], v, hv ? hv[rows] : NAN);
                CHECK(*end == (k < 4 ? ',' : 0), "row %d: unexpected text after %s: '%s'", rows, keys[k], end);
            }
            rows++;
        }
        CHECK(rows == 3, "%d data rows, want 3", rows);
    }
    free(text);
    cnn_history_free(h);
    cnn_callback_free(csv);

    test_begin("CSVLogger append adds rows without a second header");
    csv = cnn_csv_logger(.filename = path, .append = 1);
    cbs[1] = csv;
    h = cnn_fit(m, d, .epochs = 2, .batch_size = 32, .validation_split = 0.25f, .callbacks = cbs, .out = devnull);
    text = slurp(path);
    int lines = 0, headers = 0;
    for (char *l = text ? strtok(text, "\n") : NULL; l; l = strtok(NULL, "\n")) { lines++; headers += !strncmp(l, "epoch", 5); }
    CHECK(h && lines == 6 && headers == 1, "after appending 2 epochs: %d lines, %d headers (want 6, 1)", lines, headers);
    free(text);
    cnn_history_free(h);
    cnn_callback_free(csv);
    cnn_callback_free(rl);
    cnn_model_free(m);
    cnn_dataset_free(d);
}

static void test_checkpoint(void) {
    char dir[512], tmpl[700], want[700];
    cnn_dataset *d = quadrant_data(128, 4, 10);
    test_begin("ModelCheckpoint names files from the template and the History");
    tmp_path(dir, sizeof dir, "ck_all");
    mkdir(dir, 0700);
    snprintf(tmpl, sizeof tmpl, "%s/ckpt.{epoch:02d}-{val_accuracy:.4f}.cnn", dir);
    cnn_model *m = quad_model((model_cfg){.seed = 9, .bn = 1});
    cnn_callback *ck = cnn_model_checkpoint(.filepath = tmpl);
    cnn_callback *cbs[4] = {ck, NULL, NULL, NULL};
    cnn_history *h = cnn_fit(m, d, .epochs = 3, .batch_size = 32, .validation_split = 0.25f, .callbacks = cbs);
    const double *va = cnn_history_get(h, "val_accuracy");
    CHECK(h && va, "fit: %s", cnn_last_error());
    for (int e = 0; va && e < 3; e++) {
        snprintf(want, sizeof want, "%s/ckpt.%02d-%.4f.cnn", dir, e + 1, va[e]);
        CHECK(file_exists(want), "missing checkpoint %s", want);
    }
    CHECK(count_entries(dir) == 3, "%d files in the checkpoint folder, want 3", count_entries(dir));
    if (va) {
        snprintf(want, sizeof want, "%s/ckpt.%02d-%.4f.cnn", dir, 3, va[2]);
        cnn_model *l = cnn_load(want);
        snapshot s = snap(m);
        CHECK(l && model_matches(l, &s), "the last checkpoint must hold the final weights: %s", l ? "weights differ" : cnn_last_error());
        free(s.p);
        cnn_model_free(l);
    }
    cnn_history_free(h);
    cnn_callback_free(ck);
    cnn_model_free(m);

    test_begin("ModelCheckpoint save_best_only saves only on improvement (val_loss)");
    tmp_path(dir, sizeof dir, "ck_best");
    mkdir(dir, 0700);
    snprintf(tmpl, sizeof tmpl, "%s/best.{epoch:02d}.cnn", dir);
    m = quad_model((model_cfg){.seed = 10, .opt = cnn_adam(.learning_rate = 0.05f)});
    cbs[0] = ck = cnn_model_checkpoint(.filepath = tmpl, .save_best_only = 1);
    h = cnn_fit(m, d, .epochs = 6, .batch_size = 32, .validation_split = 0.25f, .callbacks = cbs);
    const double *vl = cnn_history_get(h, "val_loss");
    CHECK(h && vl, "fit: %s", cnn_last_error());
    int expected = 0;
    double best = INFINITY;
    for (int e = 0; vl && e < 6; e++) {
        snprintf(want, sizeof want, "%s/best.%02d.cnn", dir, e + 1);
        int improved = vl[e] < best;
        if (improved) { best = vl[e]; expected++; }
        CHECK(file_exists(want) == improved, "epoch %d (val_loss %.6f, best before %.6f): file %s", e + 1, vl[e], improved ? INFINITY : best,
              improved ? "missing" : "written without improvement");
    }
    CHECK(count_entries(dir) == expected, "%d files, want %d", count_entries(dir), expected);
    cnn_history_free(h);
    cnn_callback_free(ck);
    cnn_model_free(m);

    test_begin("ModelCheckpoint save_best_only skips worse epochs and the file loads");
    /* monitor lr (mode min) under a schedule: improvements at epochs 1, 3, 5 only */
    static const float table[MAX_EPOCHS] = {0.01f, 0.02f, 0.005f, 0.03f, 0.001f};
    sched_table st = {table, {0}, 0};
    recorder rec;
    recorder_init(&rec);
    tmp_path(dir, sizeof dir, "ck_lr");
    mkdir(dir, 0700);
    snprintf(tmpl, sizeof tmpl, "%s/lr.{epoch:02d}-{lr:.4f}.cnn", dir);
    m = quad_model((model_cfg){.seed = 11, .bn = 1});
    cnn_callback *sc = cnn_lr_scheduler(.schedule = sched_from_table, .user = &st), *lam = recorder_callback(&rec);
    ck = cnn_model_checkpoint(.filepath = tmpl, .monitor = "lr", .mode = CNN_MODE_MIN, .save_best_only = 1);
    cbs[0] = sc; cbs[1] = lam; cbs[2] = ck;
    h = cnn_fit(m, d, .epochs = 5, .batch_size = 32, .callbacks = cbs);
    CHECK(h && h->epochs == 5, "fit: %s", cnn_last_error());
    const char *names[5] = {"lr.01-0.0100.cnn", NULL, "lr.03-0.0050.cnn", NULL, "lr.05-0.0010.cnn"};
    CHECK(count_entries(dir) == 3, "%d files, want 3", count_entries(dir));
    for (int e = 0; e < 5; e++) {
        if (!names[e]) continue;
        snprintf(want, sizeof want, "%s/%s", dir, names[e]);
        CHECK(file_exists(want), "missing %s", want);
    }
    snprintf(want, sizeof want, "%s/lr.03-0.0050.cnn", dir);
    cnn_model *l = cnn_load(want);
    CHECK(l && rec.at_end[2].p && model_matches(l, &rec.at_end[2]), "the epoch-3 checkpoint must hold the weights of that epoch: %s",
          l ? "weights differ" : cnn_last_error());
    cnn_model_free(l);
    cnn_history_free(h);
    cnn_callback_free(sc);
    cnn_callback_free(lam);
    cnn_callback_free(ck);
    recorder_free(&rec);
    cnn_model_free(m);
    cnn_dataset_free(d);
}

static void test_stops(void) {
    cnn_dataset *d = quadrant_data(128, 4, 11);
    test_begin("TerminateOnNaN stops when the loss becomes NaN");
    recorder rec;
    recorder_init(&rec);
    rec.nan_at_epoch = 1;
    rec.nan_at_batch = 1;
    cnn_model *m = quad_model((model_cfg){.seed = 12});
    cnn_callback *nan_cb = cnn_terminate_on_nan(), *lam = recorder_callback(&rec);
    cnn_callback *cbs[3] = {nan_cb, lam, NULL};
    cnn_history *h = cnn_fit(m, d, .epochs = 5, .batch_size = 32, .callbacks = cbs, .out = devnull);
    CHECK(h != NULL, "fit: %s", cnn_last_error());
    if (h) {
        CHECK(h->epochs == 2 && h->stopped_early, "%d epochs, stopped_early %d (want 2, 1)", h->epochs, h->stopped_early);
        CHECK(rec.last_epoch == 1 && rec.last_batch == 2, "training went on to epoch %d batch %d, want to stop after epoch 1 batch 2", rec.last_epoch, rec.last_batch);
        const double *loss = cnn_history_get(h, "loss");
        CHECK(loss && isfinite(loss[0]) && h->epochs >= 2 && isnan(loss[1]), "loss %g, %g", loss ? loss[0] : 0, loss && h->epochs > 1 ? loss[1] : 0);
    }
    cnn_history_free(h);
    cnn_callback_free(nan_cb);
    cnn_callback_free(lam);
    recorder_free(&rec);
    cnn_model_free(m);

    test_begin("a LambdaCallback returning non-zero stops training");
    recorder_init(&rec);
    rec.stop_at_epoch_end = 2;
    m = quad_model((model_cfg){.seed = 13});
    cbs[0] = lam = recorder_callback(&rec);
    cbs[1] = NULL;
    h = cnn_fit(m, d, .epochs = 6, .batch_size = 32, .callbacks = cbs);
    CHECK(h && h->epochs == 3 && rec.epochs_seen == 3, "on_epoch_end stop at epoch 2: %d epochs", h ? h->epochs : -1);
    int stopped_by_end = h ? h->stopped_early : -1;
    cnn_history_free(h);
    cnn_callback_free(lam);
    recorder_free(&rec);
    recorder_init(&rec);
    rec.stop_at_batch_epoch = 1;
    rec.stop_at_batch = 1;
    cbs[0] = lam = recorder_callback(&rec);
    h = cnn_fit(m, d, .epochs = 6, .batch_size = 32, .callbacks = cbs);
    CHECK(h && h->epochs == 2 && rec.batches[1] == 2 && rec.epochs_seen == 2, "on_batch_end stop at epoch 1 batch 1: %d epochs, %d batches in epoch 1",
          h ? h->epochs : -1, rec.batches[1]);
    int stopped_by_batch = h ? h->stopped_early : -1;
    cnn_history_free(h);
    cnn_callback_free(lam);
    recorder_free(&rec);
    recorder_init(&rec);
    rec.stop_at_epoch_begin = 1;
    cbs[0] = lam = recorder_callback(&rec);
    h = cnn_fit(m, d, .epochs = 6, .batch_size = 32, .callbacks = cbs);
    CHECK(h && h->epochs == 1 && rec.batches[1] == 0, "on_epoch_begin stop at epoch 1: %d epochs, %d batches in epoch 1", h ? h->epochs : -1, rec.batches[1]);
    int stopped_by_begin = h ? h->stopped_early : -1;
    cnn_history_free(h);
    cnn_callback_free(lam);
    recorder_free(&rec);

    test_begin("stopped_early is set when a LambdaCallback stops training");
    CHECK(stopped_by_end == 1, "on_epoch_end stop: stopped_early %d", stopped_by_end);
    CHECK(stopped_by_batch == 1, "on_batch_end stop: stopped_early %d", stopped_by_batch);
    CHECK(stopped_by_begin == 1, "on_epoch_begin stop: stopped_early %d", stopped_by_begin);
    cnn_model_free(m);
    cnn_dataset_free(d);
}

static volatile sig_atomic_t my_sigint_count;
static void my_sigint(int sig) { (void)sig; my_sigint_count++; }

static void test_sigint(void) {
    test_begin("Ctrl-C stops fit after the batch, keeps the History, restores the handler");
    cnn_dataset *d = quadrant_data(256, 4, 12);
    cnn_model *m = quad_model((model_cfg){.seed = 14});
    struct sigaction mine, saved, now;
    memset(&mine, 0, sizeof mine);
    mine.sa_handler = my_sigint;
    sigemptyset(&mine.sa_mask);
    sigaction(SIGINT, &mine, &saved);
    my_sigint_count = 0;
    recorder rec;
    recorder_init(&rec);
    rec.sigint_at_epoch = 1;
    rec.sigint_at_batch = 3;
    cnn_callback *lam = recorder_callback(&rec);
    cnn_callback *cbs[2] = {lam, NULL};
    cnn_history *h = cnn_fit(m, d, .epochs = 5, .batch_size = 32, .validation_split = 0.25f, .callbacks = cbs, .out = devnull);
    CHECK(h != NULL, "fit: %s", cnn_last_error());
    if (h) {
        CHECK(h->interrupted == 1, "history->interrupted %d", h->interrupted);
        CHECK(h->epochs == 1, "%d epochs recorded, want 1 (the History keeps completed epochs)", h->epochs);
        CHECK(rec.batches[1] == 4 && rec.batches[2] == 0, "epoch 1 ran %d batches (want 4), epoch 2 ran %d", rec.batches[1], rec.batches[2]);
        const double *loss = cnn_history_get(h, "loss");
        CHECK(loss && isfinite(loss[0]), "loss of the recorded epoch");
    }
    CHECK(my_sigint_count == 0, "the user's handler ran during fit");
    sigaction(SIGINT, NULL, &now);
    CHECK(now.sa_handler == my_sigint, "the previous SIGINT handler was not restored");
    raise(SIGINT);
    CHECK(my_sigint_count == 1, "the restored handler was not called (%d)", (int)my_sigint_count);
    cnn_eval_result r;
    CHECK(cnn_evaluate(m, d, 0, &r) == 0 && isfinite(r.loss), "evaluate after an interrupted fit: %s", cnn_last_error());
    cnn_history *h2 = cnn_fit(m, d, .epochs = 1, .batch_size = 32);
    CHECK(h2 && !h2->interrupted && h2->epochs == 1, "a later fit must not see the old interrupt");
    cnn_history_free(h2);
    sigaction(SIGINT, &saved, NULL);
    cnn_history_free(h);
    cnn_callback_free(lam);
    recorder_free(&rec);
    cnn_model_free(m);
    cnn_dataset_free(d);
}

/* ------------------------------------------------------------------------ */
/* class_weight, frozen layers, regularizers                                */
/* ------------------------------------------------------------------------ */

static void test_class_weight(void) {
    test_begin("class_weight scales each sample's loss (sum(w*l)/B)");
    /* one batch, no shuffle: the loss fit reports is computed at the initial weights */
    cnn_dataset *d = quadrant_data(16, 2, 13);
    cnn_model *m = quad_model((model_cfg){.seed = 15, .classes = 2, .opt = cnn_sgd(.learning_rate = 1e-6f)});
    float x[16 * 64], p[16 * 2];
    cnn_preprocess(m, d->images, 16, x);
    cnn_predict(m, x, 16, 16, p);
    double want_10 = 0, plain = 0;
    for (int i = 0; i < 16; i++) {
        double pc = p[i * 2 + d->labels[i]];
        pc = pc < 1e-7 ? 1e-7 : pc > 1 - 1e-7 ? 1 - 1e-7 : pc;
        plain -= log(pc) / 16;
        if (d->labels[i] == 0) want_10 -= log(pc) / 16;
    }
    float w22[2] = {2, 2}, w10[2] = {1, 0};
    double l[3] = {NAN, NAN, NAN};
    const float *weights[3] = {NULL, w22, w10};
    for (int k = 0; k < 3; k++) {
        cnn_model_set_seed(m, 15); /* the same initial weights each time */
        cnn_history *h = cnn_fit(m, d, .epochs = 1, .batch_size = 16, .no_shuffle = 1, .class_weight = weights[k]);
        const double *loss = cnn_history_get(h, "loss");
        if (loss) l[k] = loss[0];
        cnn_history_free(h);
    }
    CHECK(fabs(l[0] - plain) <= 1e-5 * plain, "unweighted loss %.8f, from predictions %.8f", l[0], plain);
    CHECK(l[1] == 2 * l[0], "weights {2,2}: loss %.10f, want exactly twice %.10f", l[1], l[0]);
    CHECK(fabs(l[2] - want_10) <= 1e-5 * plain, "weights {1,0}: loss %.8f, want %.8f (class-0 losses / 16)", l[2], want_10);
    cnn_model_free(m);
    cnn_dataset_free(d);
}

static void test_trainable(void) {
    cnn_dataset *d = quadrant_data(128, 4, 14);
    size_t nk, nb, ng, nbe, nm, nv, no;
    test_begin("cnn_set_trainable(0) freezes a layer; a frozen BatchNormalization keeps its statistics");
    cnn_model *m = quad_model((model_cfg){.seed = 16, .bn = 1});
    CHECK(cnn_set_trainable(m, "bn", 0) == 0, "freeze bn: %s", cnn_last_error());
    float *mm = tensor_copy(m, "bn", "moving_mean", &nm), *mv = tensor_copy(m, "bn", "moving_variance", &nv);
    float *g = tensor_copy(m, "bn", "gamma", &ng), *be = tensor_copy(m, "bn", "beta", &nbe);
    float *k = tensor_copy(m, "conv", "kernel", &nk), *o = tensor_copy(m, "out", "kernel", &no);
    cnn_history *h = cnn_fit(m, d, .epochs = 2, .batch_size = 32);
    CHECK(h != NULL, "fit: %s", cnn_last_error());
    CHECK(tensor_equal(m, "bn", "gamma", g, ng) && tensor_equal(m, "bn", "beta", be, nbe), "frozen gamma/beta changed");
    CHECK(tensor_equal(m, "bn", "moving_mean", mm, nm) && tensor_equal(m, "bn", "moving_variance", mv, nv), "frozen BatchNorm statistics changed");
    CHECK(!tensor_equal(m, "conv", "kernel", k, nk) && !tensor_equal(m, "out", "kernel", o, no), "the other layers must train");
    cnn_history_free(h);
    free(mm); free(mv); free(g); free(be); free(k); free(o);
    cnn_model_free(m);

    test_begin("cnn_set_trainable(0) on a Conv2D keeps its kernel and bias");
    m = quad_model((model_cfg){.seed = 16, .bn = 1, .reg = {.l2 = 0.01f}});
    CHECK(cnn_set_trainable(m, "conv", 0) == 0, "freeze conv: %s", cnn_last_error());
    k = tensor_copy(m, "conv", "kernel", &nk);
    float *b = tensor_copy(m, "conv", "bias", &nb);
    mm = tensor_copy(m, "bn", "moving_mean", &nm);
    o = tensor_copy(m, "out", "kernel", &no);
    h = cnn_fit(m, d, .epochs = 2, .batch_size = 32);
    CHECK(h != NULL, "fit: %s", cnn_last_error());
    CHECK(tensor_equal(m, "conv", "kernel", k, nk) && tensor_equal(m, "conv", "bias", b, nb), "frozen conv changed (its regularizer must not move it either)");
    CHECK(!tensor_equal(m, "bn", "moving_mean", mm, nm), "a trainable BatchNorm must update its statistics");
    CHECK(!tensor_equal(m, "out", "kernel", o, no), "the dense layer must train");
    cnn_history_free(h);
    free(k); free(b); free(mm); free(o);

    test_begin("cnn_set_trainable(1) unfreezes");
    CHECK(cnn_set_trainable(m, "conv", 1) == 0, "unfreeze");
    k = tensor_copy(m, "conv", "kernel", &nk);
    h = cnn_fit(m, d, .epochs = 1, .batch_size = 32);
    CHECK(h && !tensor_equal(m, "conv", "kernel", k, nk), "the unfrozen conv must train");
    cnn_history_free(h);
    free(k);
    cnn_model_free(m);
    cnn_dataset_free(d);
}

static double sum_sq(cnn_model *m, const char *layer) {
    size_t n = 0;
    const float *w = cnn_layer_weights(m, layer, "kernel", &n);
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)w[i] * w[i];
    return s;
}

static double sum_abs(cnn_model *m, const char *layer) {
    size_t n = 0;
    const float *w = cnn_layer_weights(m, layer, "kernel", &n);
    double s = 0;
    for (size_t i = 0; i < n; i++) s += fabs(w[i]);
    return s;
}

static void test_regularizer(void) {
    test_begin("kernel_regularizer adds l1*sum|w| + l2*sum(w^2) to the loss");
    cnn_dataset *d = quadrant_data(16, 4, 15);
    float x[16 * 64], y[16];
    const float l1 = 0.002f, l2 = 0.01f;
    cnn_model *plain = quad_model((model_cfg){.seed = 17});
    cnn_model *reg2 = quad_model((model_cfg){.seed = 17, .reg = {.l2 = l2}});
    cnn_model *reg12 = quad_model((model_cfg){.seed = 17, .reg = {.l1 = l1, .l2 = l2}});
    size_t n0, n1;
    float *p0 = cnn_model_params(plain, &n0), *p1 = cnn_model_params(reg2, &n1);
    CHECK(n0 == n1 && !memcmp(p0, p1, n0 * sizeof(float)), "the same seed must give the same initial weights");
    cnn_preprocess(plain, d->images, 16, x);
    for (int i = 0; i < 16; i++) y[i] = (float)d->labels[i];
    double sq = sum_sq(plain, "conv") + sum_sq(plain, "out"), ab = sum_abs(plain, "conv") + sum_abs(plain, "out");
    float lp = 0, lr2 = 0, lr12 = 0;
    CHECK(cnn_train_on_batch(plain, x, y, 16, 1, &lp, NULL) == 0, "train: %s", cnn_last_error());
    CHECK(cnn_train_on_batch(reg2, x, y, 16, 1, &lr2, NULL) == 0, "train: %s", cnn_last_error());
    CHECK(cnn_train_on_batch(reg12, x, y, 16, 1, &lr12, NULL) == 0, "train: %s", cnn_last_error());
    double want2 = l2 * sq, want12 = l1 * ab + l2 * sq;
    CHECK(fabs((lr2 - lp) - want2) <= 1e-5 + 1e-5 * want2, "l2: loss difference %.7f, want l2*sum(w^2) = %.7f", lr2 - lp, want2);
    CHECK(fabs((lr12 - lp) - want12) <= 1e-5 + 1e-5 * want12, "l1+l2: loss difference %.7f, want %.7f", lr12 - lp, want12);
    cnn_model_free(plain);
    cnn_model_free(reg2);
    cnn_model_free(reg12);
    cnn_dataset_free(d);
}

/* ------------------------------------------------------------------------ */
/* Batch sources, targets                                                   */
/* ------------------------------------------------------------------------ */

typedef struct count_src {
    const cnn_dataset *d;
    int pos, resets, served, epochs_seen[32];
} count_src;

static int csrc_reset(void *ctx, int epoch) {
    count_src *s = (count_src *)ctx;
    if (s->resets < 32) s->epochs_seen[s->resets] = epoch;
    s->resets++;
    s->pos = 0;
    return CNN_OK;
}

/* one-hot targets (y_width 4), pixels scaled by 1/255 */
static int csrc_next(void *ctx, int max_count, float *x, float *y) {
    count_src *s = (count_src *)ctx;
    int k = s->d->n - s->pos < max_count ? s->d->n - s->pos : max_count;
    for (int i = 0; i < k; i++) {
        const unsigned char *img = s->d->images + (size_t)(s->pos + i) * 64;
        for (int j = 0; j < 64; j++) x[i * 64 + j] = img[j] / 255.0f;
        for (int c = 0; c < 4; c++) y[i * 4 + c] = (float)(c == s->d->labels[s->pos + i]);
    }
    s->pos += k;
    s->served += k;
    return k;
}

static void test_batch_source(void) {
    test_begin("cnn_fit_source with steps_per_epoch larger than one pass");
    cnn_dataset *d = quadrant_data(50, 4, 16);
    count_src cs;
    memset(&cs, 0, sizeof cs);
    cs.d = d;
    cnn_batch_source src;
    memset(&src, 0, sizeof src);
    src.ctx = &cs;
    src.samples = 50;
    src.h = 8; src.w = 8; src.c = 1;
    src.y_width = 4;
    src.reset = csrc_reset;
    src.next = csrc_next;
    src.rescale = 1.0f / 255;
    cnn_model *m = quad_model((model_cfg){.seed = 18});
    cnn_model_set_rescale(m, 1.0f);
    cnn_history *h = cnn_fit_source(m, &src, .epochs = 3, .batch_size = 10, .steps_per_epoch = 8);
    CHECK(h && h->epochs == 3, "fit_source: %s", cnn_last_error());
    CHECK(cs.served == 240, "served %d samples, want 3 epochs x 8 steps x 10 = 240", cs.served);
    CHECK(cs.resets == 5, "%d resets, want 5 (240 samples = 4.8 passes of 50)", cs.resets);
    for (int i = 0; i < cs.resets && i < 5; i++) CHECK(cs.epochs_seen[i] == i, "reset %d got pass %d", i, cs.epochs_seen[i]);
    CHECK(cnn_model_rescale(m) == 1.0f / 255, "the source's rescale must be recorded in the model (%g)", cnn_model_rescale(m));
    cnn_history_free(h);

    test_begin("cnn_fit_source without steps_per_epoch makes one pass per epoch");
    memset(&cs, 0, sizeof cs);
    cs.d = d;
    h = cnn_fit_source(m, &src, .epochs = 2, .batch_size = 16);
    CHECK(h && h->epochs == 2, "fit_source: %s", cnn_last_error());
    CHECK(cs.served == 100 && cs.resets == 2, "served %d (want 100), resets %d (want 2)", cs.served, cs.resets);
    cnn_history_free(h);
    cnn_model_free(m);
    cnn_dataset_free(d);
}

static void test_targets(void) {
    test_begin("train_on_batch: one-hot and class-index targets give the same loss and step");
    cnn_dataset *d = quadrant_data(12, 4, 17);
    cnn_model *a = quad_model((model_cfg){.seed = 19, .bn = 1}), *b = quad_model((model_cfg){.seed = 19, .bn = 1});
    float x[12 * 64], yi[12], yh[12 * 4];
    cnn_preprocess(a, d->images, 12, x);
    for (int i = 0; i < 12; i++) {
        yi[i] = (float)d->labels[i];
        for (int c = 0; c < 4; c++) yh[i * 4 + c] = (float)(c == d->labels[i]);
    }
    float la = 0, lb = 0, aa = 0, ab = 0;
    CHECK(cnn_train_on_batch(a, x, yi, 12, 1, &la, &aa) == 0, "class indices: %s", cnn_last_error());
    CHECK(cnn_train_on_batch(b, x, yh, 12, 4, &lb, &ab) == 0, "one-hot: %s", cnn_last_error());
    CHECK(fabsf(la - lb) <= 1e-6f * fabsf(la) && aa == ab, "loss %.8f vs %.8f, accuracy %g vs %g", la, lb, aa, ab);
    snapshot sa = snap(a), sb = snap(b);
    CHECK(same_snap(&sa, &sb), "the optimizer steps differ");
    free(sa.p);
    free(sb.p);
    cnn_model_free(a);
    cnn_model_free(b);
    cnn_dataset_free(d);
}

/* ------------------------------------------------------------------------ */
/* Branching graphs                                                         */
/* ------------------------------------------------------------------------ */

/* Inception-style: two conv branches (1x1 and 3x3 'same') concatenated */
static cnn_model *inception_model(uint64_t seed) {
    cnn_model *m = cnn_model_new();
    cnn_model_set_seed(m, seed);
    cnn_node *in = cnn_input(m, 8, 8, 1, "in");
    cnn_node *a = cnn_conv2d(m, in, .filters = 3, .kernel_size = {1, 1}, .activation = CNN_TANH, .name = "branch_1x1");
    cnn_node *b = cnn_conv2d(m, in, .filters = 2, .kernel_size = {3, 3}, .padding = CNN_SAME, .activation = CNN_TANH, .name = "branch_3x3");
    cnn_node *pb = cnn_avg_pool2d(m, in, .pool_size = {3, 3}, .strides = {1, 1}, .padding = CNN_SAME, .name = "branch_pool");
    cnn_node *branches[3] = {a, b, pb};
    cnn_node *x = cnn_concatenate(m, branches, 3, .name = "mixed");
    x = cnn_conv2d(m, x, .filters = 4, .kernel_size = {3, 3}, .strides = {2, 2}, .activation = CNN_TANH, .name = "reduce");
    x = cnn_flatten(m, x, .name = "flat");
    x = cnn_dense(m, x, .units = 4, .activation = CNN_SOFTMAX, .name = "out");
    if (cnn_model_set_output(m, x) || cnn_compile(m, .optimizer = cnn_adam(.learning_rate = 0.01f), .loss = CNN_CATEGORICAL_CROSSENTROPY, .metrics = CNN_ACCURACY)) {
        printf("# inception model: %s\n", cnn_last_error());
        cnn_model_free(m);
        return NULL;
    }
    cnn_model_set_rescale(m, 1.0f / 255);
    return m;
}

/* ResNet-style: conv -> bn -> tanh -> conv, added to the block input (identity shortcut) */
static cnn_model *resnet_model(uint64_t seed) {
    cnn_model *m = cnn_model_new();
    cnn_model_set_seed(m, seed);
    cnn_node *in = cnn_input(m, 8, 8, 1, "in");
    cnn_node *stem = cnn_conv2d(m, in, .filters = 3, .kernel_size = {3, 3}, .padding = CNN_SAME, .activation = CNN_TANH, .name = "stem");
    cnn_node *x = cnn_conv2d(m, stem, .filters = 3, .kernel_size = {3, 3}, .padding = CNN_SAME, .name = "res_a");
    x = cnn_batch_norm(m, x, .name = "res_bn");
    x = cnn_activation(m, x, .activation = CNN_TANH, .name = "res_act");
    x = cnn_conv2d(m, x, .filters = 3, .kernel_size = {3, 3}, .padding = CNN_SAME, .name = "res_b");
    cnn_node *sum[2] = {x, stem};
    x = cnn_add(m, sum, 2, .name = "res_add");
    x = cnn_activation(m, x, .activation = CNN_TANH, .name = "res_out");
    x = cnn_flatten(m, x, .name = "flat"); /* not GlobalAveragePooling: the task is about position */
    x = cnn_dense(m, x, .units = 4, .activation = CNN_SOFTMAX, .name = "out");
    if (cnn_model_set_output(m, x) || cnn_compile(m, .optimizer = cnn_adam(.learning_rate = 0.01f), .loss = CNN_CATEGORICAL_CROSSENTROPY, .metrics = CNN_ACCURACY)) {
        printf("# resnet model: %s\n", cnn_last_error());
        cnn_model_free(m);
        return NULL;
    }
    cnn_model_set_rescale(m, 1.0f / 255);
    return m;
}

/* Gradient check on 32 samples with step 3e-3. The forward pass is float32, so the
   loss carries ~1e-7 of rounding noise; with step 1e-3 that is ~5e-5 on a numeric
   derivative, which reached 2.5e-2 relative error on the smallest sampled gradients
   for some seeds of these very models (analytic gradients were fine: the error
   shrinks as the step grows). 32 samples average the noise down and step 3e-3 keeps
   tanh's truncation error small: over 20 seeds the worst error was below 1.2e-2. */
#define GC_SAMPLES 32
#define GC_STEP 3e-3
static void check_branching(cnn_model *m, const char *what) {
    cnn_dataset *d = quadrant_data(192, 4, 18);
    float x[GC_SAMPLES * 64], y[GC_SAMPLES];
    cnn_preprocess(m, d->images, GC_SAMPLES, x);
    for (int i = 0; i < GC_SAMPLES; i++) y[i] = (float)d->labels[i];
    double worst = cnn_gradient_check(m, x, y, GC_SAMPLES, 1, 20, GC_STEP);
    CHECK(worst >= 0 && worst < 2e-2, "%s: gradient check worst relative error %g (%s)", what, worst, worst < 0 ? cnn_last_error() : "");
    printf("# %s: gradient check worst relative error %.2e\n", what, worst);
    cnn_history *h = cnn_fit(m, d, .epochs = 6, .batch_size = 16);
    const double *loss = cnn_history_get(h, "loss"), *acc = cnn_history_get(h, "accuracy");
    CHECK(h && loss && loss[5] < loss[0] && acc[5] > 0.8, "%s: training loss %g -> %g, accuracy %g", what, loss ? loss[0] : NAN, loss ? loss[5] : NAN, acc ? acc[5] : NAN);
    worst = cnn_gradient_check(m, x, y, GC_SAMPLES, 1, 20, GC_STEP);
    CHECK(worst >= 0 && worst < 2e-2, "%s: after training, gradient check worst relative error %g", what, worst);
    cnn_history_free(h);
    cnn_dataset_free(d);
}

static void test_branching(void) {
    test_begin("Inception-style block (Concatenate) trains and passes the gradient check");
    cnn_model *m = inception_model(20);
    CHECK(m != NULL, "build");
    if (m) check_branching(m, "inception");
    cnn_model_free(m);
    test_begin("ResNet-style block (Add) trains and passes the gradient check");
    m = resnet_model(21);
    CHECK(m != NULL, "build");
    if (m) check_branching(m, "resnet");
    cnn_model_free(m);
}

/* ------------------------------------------------------------------------ */

/* on_epoch_end: a copy of the weights after the first epoch, into user */
static int keep_first_weights(cnn_model *m, int epoch, const cnn_history *h, void *user) {
    (void)h;
    size_t n = 0;
    const float *p = cnn_model_params(m, &n);
    float **copy = (float **)user;
    if (epoch == 0 && !*copy && (*copy = (float *)malloc(n * sizeof(float)))) memcpy(*copy, p, n * sizeof(float));
    return 0;
}

/* epoch 0 at the given rate, then a rate that makes the weights blow up */
static float sched_diverge(int epoch, float lr, void *user) {
    (void)lr;
    return epoch == 0 ? *(const float *)user : 1e30f;
}

static void test_divergence(void) {
    test_begin("a diverging run: TerminateOnNaN stops it with a clear message, the last good checkpoint is intact");
    cnn_dataset *d = quadrant_data(128, 4, 21);
    cnn_model *m = quad_model((model_cfg){.seed = 22, .bn = 1});
    char path[128], log_path[128];
    snprintf(path, sizeof path, "%s/diverge.cnn", tmp_root);
    snprintf(log_path, sizeof log_path, "%s/diverge.log", tmp_root);
    float lr0 = 0.01f;
    char bk_dir[128];
    snprintf(bk_dir, sizeof bk_dir, "%s/diverge-backup", tmp_root);
    cnn_callback *ck = cnn_model_checkpoint(.filepath = path), *nan_cb = cnn_terminate_on_nan(),
                 *sc = cnn_lr_scheduler(.schedule = sched_diverge, .user = &lr0),
                 *bk = cnn_backup_and_restore(.backup_dir = bk_dir, .keep_backup = 1);
    float *first = NULL; /* the weights after epoch 1, which the checkpoint must hold */
    cnn_callback *keep = cnn_lambda_callback(.on_epoch_end = keep_first_weights, .user = &first);
    cnn_callback *cbs[6] = {sc, nan_cb, ck, keep, bk, NULL};
    FILE *log = fopen(log_path, "w+");
    cnn_history *h = cnn_fit(m, d, .epochs = 4, .batch_size = 16, .callbacks = cbs, .verbose = 2, .out = log);
    CHECK(h && h->epochs == 2 && h->stopped_early, "%d epochs, stopped_early %d: training went on",
          h ? h->epochs : -1, h ? h->stopped_early : -1);
    char text[4096] = "";
    if (log) {
        rewind(log);
        text[fread(text, 1, sizeof text - 1, log)] = 0;
        fclose(log);
    }
    CHECK(strstr(text, "Epoch 2, batch") && strstr(text, "invalid loss") && strstr(text, "TerminateOnNaN"),
          "the message does not say where and why training stopped:\n%s", text);
    CHECK(strstr(text, "not finite") && strstr(text, "is not written"),
          "ModelCheckpoint did not say it kept the last good file:\n%s", text);
    CHECK(strstr(text, "the backup of epoch 1 stays"), "BackupAndRestore did not say it kept epoch 1's backup:\n%s",
          text);
    const double *loss = h ? cnn_history_get(h, "loss") : NULL;
    CHECK(loss && isfinite(loss[0]) && !isfinite(loss[1]), "losses %g, %g", loss ? loss[0] : 0,
          loss ? loss[1] : 0);
    cnn_model *back = cnn_load(path);
    CHECK(back != NULL, "the checkpoint does not load: %s", cnn_last_error());
    int finite = back != NULL;
    size_t np = 0;
    const float *p = back ? cnn_model_params(back, &np) : NULL;
    for (size_t i = 0; p && i < np; i++) finite &= isfinite(p[i]) != 0;
    CHECK(finite, "the checkpoint holds non-finite weights");
    if (back) /* and it is epoch 1's model, bit for bit */
        CHECK(first && !memcmp(p, first, np * sizeof(float)), "the checkpoint does not hold epoch 1's weights");
    cnn_model_free(back);
    cnn_history_free(h);
    { /* the backup is epoch 1's: a fit of 1 epoch restores it and has nothing left to train */
        cnn_model *again = quad_model((model_cfg){.seed = 22, .bn = 1});
        h = cnn_fit(again, d, .epochs = 1, .batch_size = 16, .callbacks = cbs, .out = devnull);
        const float *q = again ? cnn_model_params(again, &np) : NULL;
        int good = h && h->epochs == 1 && q;
        for (size_t i = 0; good && i < np; i++) good = isfinite(q[i]);
        CHECK(good, "the backup does not restore epoch 1's finite weights (%s)", h ? "restored" : cnn_last_error());
        cnn_history_free(h);
        cnn_model_free(again);
    }
    cnn_callback_free(ck);
    cnn_callback_free(nan_cb);
    cnn_callback_free(sc);
    cnn_callback_free(bk);
    cnn_callback_free(keep);
    free(first);
    cnn_model_free(m);

    test_begin("SGD at learning rate 100 diverges, and trains with global_clipnorm 1");
    for (int clip = 0; clip < 2; clip++) {
        m = quad_model((model_cfg){.seed = 22, .bn = 1,
                                   .opt = {.type = CNN_SGD, .learning_rate = 100, .global_clipnorm = clip ? 1.0f : 0}});
        cbs[0] = nan_cb = cnn_terminate_on_nan();
        cbs[1] = NULL;
        h = cnn_fit(m, d, .epochs = 3, .batch_size = 16, .callbacks = cbs, .out = devnull);
        loss = h ? cnn_history_get(h, "loss") : NULL;
        if (clip)
            CHECK(h && h->epochs == 3 && !h->stopped_early && loss && isfinite(loss[2]) && loss[2] < loss[0],
                  "with clipping: %d epochs, stopped %d, loss %g -> %g", h ? h->epochs : -1,
                  h ? h->stopped_early : -1, loss ? loss[0] : 0, loss && h->epochs > 2 ? loss[2] : 0);
        else
            CHECK(h && h->stopped_early && h->epochs < 3, "without clipping it did not diverge: %d epochs",
                  h ? h->epochs : -1);
        cnn_history_free(h);
        cnn_callback_free(nan_cb);
        cnn_model_free(m);
    }
    cnn_dataset_free(d);
}

/* ------------------------------------------------------------------------ */
/* Gradient clipping against real Keras                                     */
/* ------------------------------------------------------------------------ */

/* A record of tests/fixtures/keras_clip.bin (make_keras_clip_fixtures.py: the
   format is keras.bin's): count floats, copied, or NULL. */
static float *clip_record(const unsigned char *file, size_t len, const char *name, unsigned *count) {
    if (len < 12 || memcmp(file, "CNNKRS01", 8)) return NULL;
    uint32_t n_rec;
    memcpy(&n_rec, file + 8, 4);
    for (size_t off = 12, i = 0; i < n_rec && off + 56 <= len; i++) {
        unsigned type, cnt;
        memcpy(&type, file + off + 48, 4);
        memcpy(&cnt, file + off + 52, 4);
        size_t bytes = (size_t)cnt * (type == 3 ? 1 : 4);
        if (off + 56 + bytes > len) return NULL;
        if (!strncmp((const char *)file + off, name, 48) && type == 0) {
            float *v = (float *)malloc(bytes ? bytes : 1);
            if (v) memcpy(v, file + off + 56, bytes);
            *count = cnt;
            return v;
        }
        off += 56 + bytes;
    }
    return NULL;
}

static void test_clipping_keras(void) {
    test_begin("gradient clipping (clipnorm, clipvalue, global_clipnorm) as tf-keras 2.21 clips, with SGD and "
               "Adam: 3 steps");
    size_t len = 0;
    unsigned char *file = read_bytes("tests/fixtures/keras_clip.bin", &len);
    CHECK(file != NULL, "cannot read tests/fixtures/keras_clip.bin (run from the repository root)");
    if (!file) return;
    static const char *const tensors[4][3] = {{"conv_kernel", "conv", "kernel"}, {"conv_bias", "conv", "bias"},
                                              {"dense_kernel", "dense", "kernel"}, {"dense_bias", "dense", "bias"}};
    unsigned nx = 0, ny = 0, nw[4], cnt;
    float *x = clip_record(file, len, "x", &nx), *y = clip_record(file, len, "y", &ny), *w0[4];
    float x1[5 * 6 * 6 * 2];
    for (int t = 0; t < 4; t++) {
        char name[64];
        snprintf(name, sizeof name, "w0_%s", tensors[t][0]);
        w0[t] = clip_record(file, len, name, &nw[t]);
        CHECK(w0[t] != NULL, "%s missing", name);
    }
    CHECK(x && nx == 5 * 6 * 6 * 2 && y && ny == 5 * 4, "x or y missing");
    double unclipped_change[2] = {0, 0};
    for (int k = 0; x && y && w0[0] && w0[1] && w0[2] && w0[3] && nx == 360; k++) {
        char name[64];
        snprintf(name, sizeof name, "case%d_setup", k);
        float *setup = clip_record(file, len, name, &cnt);
        if (!setup) { CHECK(k == 8, "%d cases, 8 expected", k); break; }
        snprintf(name, sizeof name, "case%d_loss", k);
        float *want_loss = clip_record(file, len, name, &cnt);
        cnn_model *m = cnn_model_new();
        cnn_node *in = cnn_input(m, 6, 6, 2, "input");
        cnn_node *h = cnn_conv2d(m, in, .filters = 3, .kernel_size = {3, 3}, .activation = CNN_RELU, .name = "conv");
        h = cnn_flatten(m, h);
        cnn_model_set_output(m, cnn_dense(m, h, .units = 4, .activation = CNN_SOFTMAX, .name = "dense"));
        cnn_optimizer opt = {.type = setup[0] == 0 ? CNN_SGD : CNN_ADAM, .learning_rate = setup[1],
                             .clipnorm = setup[2], .clipvalue = setup[3], .global_clipnorm = setup[4]};
        CHECK(cnn_compile(m, .optimizer = opt, .loss = CNN_CATEGORICAL_CROSSENTROPY) == CNN_OK, "compile: %s",
              cnn_last_error());
        for (int t = 0; t < 4; t++)
            CHECK(cnn_set_weights(m, tensors[t][1], tensors[t][2], w0[t], nw[t]) == CNN_OK, "set %s: %s",
                  tensors[t][0], cnn_last_error());
        for (size_t i = 0; i < 360; i++) x1[i] = x[i] * -0.5f + 1;
        for (int step = 0; step < 3; step++) {
            float loss = 0;
            CHECK(cnn_train_on_batch(m, step == 1 ? x1 : x, y, 5, 4, &loss, NULL) == CNN_OK, "step: %s",
                  cnn_last_error());
            CHECK(want_loss && fabsf(loss - want_loss[step]) <= 2e-5f * fabsf(want_loss[step]),
                  "case %d (%s, lr %g, clipnorm %g clipvalue %g global_clipnorm %g) step %d: loss %.7f, Keras %.7f",
                  k, setup[0] == 0 ? "SGD" : "Adam", setup[1], setup[2], setup[3], setup[4], step, loss,
                  want_loss ? want_loss[step] : 0);
        }
        for (int t = 0; t < 4; t++) {
            snprintf(name, sizeof name, "case%d_%s", k, tensors[t][0]);
            float *want = clip_record(file, len, name, &cnt), got[256];
            CHECK(want && cnt == nw[t] && cnt <= 256, "%s missing", name);
            if (!want || cnt != nw[t] || cnt > 256) { free(want); continue; }
            cnn_get_weights(m, tensors[t][1], tensors[t][2], got, cnt);
            double e = test_rel_err(got, want, cnt);
            /* the change from the start, to show the clipped runs differ from the plain ones */
            double moved = 0;
            for (unsigned i = 0; i < cnt; i++) {
                moved += ((double)want[i] - w0[t][i]) * ((double)want[i] - w0[t][i]);
            }
            if (setup[2] == 0 && setup[3] == 0 && setup[4] == 0) unclipped_change[setup[0] != 0] += moved;
            CHECK(e <= 1e-5, "case %d (%s clipnorm %g clipvalue %g global_clipnorm %g): %s differs from Keras by "
                             "%.3g (relative)", k, setup[0] == 0 ? "SGD" : "Adam", setup[2], setup[3], setup[4],
                  tensors[t][0], e);
            free(want);
        }
        cnn_model_free(m);
        free(setup);
        free(want_loss);
    }
    CHECK(unclipped_change[0] > 0 && unclipped_change[1] > 0, "the unclipped cases did not move the weights");
    for (int t = 0; t < 4; t++) free(w0[t]);
    free(x);
    free(y);
    free(file);

    test_begin("gradient clipping: the plain runs differ from the clipped ones, and clipping is saved");
    {
        cnn_dataset *d = quadrant_data(64, 4, 3);
        float first[3][256];
        for (int c = 0; c < 3; c++) { /* no clipping, then a tight clipnorm, then a tight global_clipnorm */
            cnn_model *m = cnn_model_new();
            cnn_node *in = cnn_input(m, 8, 8, 1, "input");
            cnn_model_set_output(m, cnn_dense(m, cnn_flatten(m, in), .units = 4, .activation = CNN_SOFTMAX,
                                              .name = "out"));
            cnn_optimizer opt = {.type = CNN_SGD, .learning_rate = 0.5f, .clipnorm = c == 1 ? 1e-3f : 0,
                                 .global_clipnorm = c == 2 ? 1e-3f : 0};
            cnn_compile(m, .optimizer = opt, .loss = CNN_SPARSE_CATEGORICAL_CROSSENTROPY);
            cnn_history *hist = cnn_fit(m, d, .epochs = 1, .batch_size = 16, .out = devnull);
            CHECK(cnn_get_weights(m, "out", "kernel", first[c], 256) == CNN_OK, "%s", cnn_last_error());
            if (c == 2) { /* a clipped model's file keeps its clipping (format version 2) */
                char path[128];
                snprintf(path, sizeof path, "%s/clip.cnn", tmp_root);
                CHECK(cnn_save(m, path) == CNN_OK, "save: %s", cnn_last_error());
                size_t n = 0;
                unsigned char *bytes = read_bytes(path, &n);
                CHECK(bytes && n > 12 && bytes[8] == 2, "a clipping model is saved as version %d, 2 expected",
                      bytes && n > 12 ? bytes[8] : -1);
                free(bytes);
                cnn_model *back = cnn_load(path);
                CHECK(back != NULL, "load: %s", cnn_last_error());
                cnn_model *cont[2] = {m, back};
                float after[2][256];
                for (int j = 0; j < 2 && back; j++) { /* one more epoch each: the same clipped steps */
                    cnn_history *h2 = cnn_fit(cont[j], d, .epochs = 1, .batch_size = 16, .out = devnull);
                    cnn_get_weights(cont[j], "out", "kernel", after[j], 256);
                    cnn_history_free(h2);
                }
                CHECK(back && !memcmp(after[0], after[1], sizeof after[0]),
                      "the loaded model trains differently: clipping lost in the file?");
                cnn_model_free(back);
            }
            cnn_history_free(hist);
            cnn_model_free(m);
        }
        double d01 = 0, d02 = 0;
        for (int i = 0; i < 256; i++) {
            d01 += fabs((double)first[0][i] - first[1][i]);
            d02 += fabs((double)first[0][i] - first[2][i]);
        }
        CHECK(d01 > 1e-2 && d02 > 1e-2, "clipping changed nothing (%g, %g)", d01, d02);
        cnn_dataset_free(d);
    }

    test_begin("gradient clipping: bad settings are refused with the field named");
    {
        cnn_model *m = cnn_model_new();
        cnn_node *in = cnn_input(m, 8, 8, 1, "input");
        cnn_model_set_output(m, cnn_dense(m, cnn_flatten(m, in), .units = 4, .activation = CNN_SOFTMAX));
        const float bad[4][3] = {{-1, 0, 0}, {0, NAN, 0}, {0, 0, INFINITY}, {1, 0, 1}};
        const char *const says[4] = {"clipnorm", "clipvalue", "global_clipnorm", "only one"};
        for (int i = 0; i < 4; i++) {
            cnn_optimizer opt = {.clipnorm = bad[i][0], .clipvalue = bad[i][1], .global_clipnorm = bad[i][2]};
            int rc = cnn_compile(m, .optimizer = opt, .loss = CNN_SPARSE_CATEGORICAL_CROSSENTROPY);
            CHECK(rc == CNN_ERR_ARG && strstr(cnn_last_error(), says[i]), "case %d: rc %d, '%s'", i, rc,
                  cnn_last_error());
        }
        cnn_model_free(m);
    }
}

/* ------------------------------------------------------------------------ */
/* BackupAndRestore: killed and started again = never stopped               */
/* ------------------------------------------------------------------------ */

static int kill_in_epoch(cnn_model *m, int epoch, int batch, float loss, void *user) {
    (void)m, (void)loss;
    if (epoch == *(const int *)user && batch == 1) raise(SIGKILL); /* a crash in the middle of an epoch */
    return 0;
}

/* The run both halves make: 5 epochs of a model with BatchNorm and Dropout on
   shuffled arrays with validation and callbacks whose state spans the kill:
   ReduceLROnPlateau (min_delta 1: only epoch 1 improves; patience 1, cooldown 2:
   it lowers the rate after epochs 2 and 4 and is cooling down after epoch 4),
   EarlyStopping with restore_best_weights (patience 4: it waits from epoch 2
   and stops after epoch 5, putting back epoch 1's weights), ModelCheckpoint
   (best only), BackupAndRestore into dir, and a LambdaCallback that kills the
   process in epoch kill_epoch + 1 (-1: never). steps 0 = a pass per epoch; 5 and
   2 = epochs end inside passes of 6 batches. Returns the History; *m_out the model. */
static cnn_history *backup_run(const char *dir, int steps, int kill_epoch, cnn_model **m_out) {
    cnn_dataset *d = quadrant_data(96, 4, 31), *v = quadrant_data(40, 4, 32);
    cnn_model *m = quad_model((model_cfg){.seed = 33, .bn = 1, .dropout = 0.25f});
    char ck_path[512];
    snprintf(ck_path, sizeof ck_path, "%s-best.cnn", dir);
    cnn_callback *cbs[6] = {
        cnn_reduce_lr_on_plateau(.monitor = "val_loss", .patience = 1, .cooldown = 2, .factor = 0.5f,
                                 .min_delta = 1.0f),
        cnn_early_stopping(.monitor = "val_loss", .patience = 4, .min_delta = 1.0f, .restore_best_weights = 1),
        cnn_model_checkpoint(.filepath = ck_path, .save_best_only = 1),
        cnn_backup_and_restore(.backup_dir = dir),
        cnn_lambda_callback(.on_batch_end = kill_in_epoch, .user = &kill_epoch), NULL};
    cnn_history *h = cnn_fit(m, d, .epochs = 5, .batch_size = 16, .steps_per_epoch = steps, .validation_data = v,
                             .callbacks = cbs, .out = devnull);
    if (!h) printf("# backup run: %s\n", cnn_last_error());
    for (int i = 0; i < 5; i++) cnn_callback_free(cbs[i]);
    cnn_dataset_free(d);
    cnn_dataset_free(v);
    *m_out = m;
    return h;
}

static int histories_equal(const cnn_history *a, const cnn_history *b, char *why, size_t cap) {
    if (a->epochs != b->epochs || a->n_keys != b->n_keys) {
        snprintf(why, cap, "%d epochs and %d keys, then %d and %d", a->epochs, a->n_keys, b->epochs, b->n_keys);
        return 0;
    }
    for (int k = 0; k < a->n_keys; k++) {
        const double *vb = cnn_history_get(b, a->keys[k]);
        if (!vb || memcmp(a->values[k], vb, (size_t)a->epochs * sizeof(double))) {
            snprintf(why, cap, "'%s' differs (epoch 1: %.17g, %.17g)", a->keys[k], a->values[k][0], vb ? vb[0] : 0);
            return 0;
        }
    }
    return 1;
}

static void test_backup_and_restore(const char *self) {
    static const int steps_of[3] = {0, 5, 2};
    for (int run = 0; run < 3; run++) {
        const int steps = steps_of[run];
        char dir[256], dir2[256], path[300], why[200];
        static const char *const names[3] = {
            "BackupAndRestore: 4 epochs, SIGKILL in the 5th, started again = 5 epochs straight (weights, History, "
            "callbacks; a pass per epoch)",
            "BackupAndRestore: 4 epochs, SIGKILL in the 5th, started again = 5 epochs straight (weights, History, "
            "callbacks; epochs of 5 batches in passes of 6)",
            "BackupAndRestore: 4 epochs, SIGKILL in the 5th, started again = 5 epochs straight (weights, History, "
            "callbacks; epochs of 2 batches in passes of 6)"};
        test_begin(names[run]);
        snprintf(dir, sizeof dir, "%s/backup-straight-%d", tmp_root, steps);
        snprintf(dir2, sizeof dir2, "%s/backup-killed-%d", tmp_root, steps);
        cnn_model *straight = NULL, *resumed = NULL;
        cnn_history *h1 = backup_run(dir, steps, -1, &straight);
        snprintf(path, sizeof path, "%s/backup.cnn", dir);
        CHECK(access(path, F_OK) != 0 && access(dir, F_OK) != 0, "the backup is left after training ended");
        /* the killed half runs in a process of its own: this program again */
        char steps_arg[16];
        snprintf(steps_arg, sizeof steps_arg, "%d", steps);
        pid_t pid = fork();
        if (pid == 0) {
            execl(self, self, "--backup-child", dir2, steps_arg, (char *)NULL);
            /* no exec (under qemu-user an AArch64 program cannot exec itself): the fork goes on
               as the child, on one thread */
            cnn_model *m = NULL;
            cnn_set_num_threads(1);
            backup_run(dir2, steps, 4, &m);
            _exit(3); /* not reached: killed in epoch 5 */
        }
        int status = 0;
        waitpid(pid, &status, 0);
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "the child was not killed (status %d)", status);
        snprintf(path, sizeof path, "%s/backup.cnn", dir2);
        CHECK(access(path, F_OK) == 0, "no backup after the kill");
        cnn_history *h2 = backup_run(dir2, steps, -1, &resumed);
        CHECK(h1 && h2, "fit failed");
        if (h1 && h2) {
            CHECK(histories_equal(h1, h2, why, sizeof why), "History: %s", why);
            CHECK(h1->stopped_early == h2->stopped_early, "stopped_early %d, then %d", h1->stopped_early,
                  h2->stopped_early);
            size_t n1 = 0, n2 = 0;
            const float *p1 = cnn_model_params(straight, &n1), *p2 = cnn_model_params(resumed, &n2);
            CHECK(n1 == n2 && !memcmp(p1, p2, n1 * sizeof(float)), "the weights differ");
            CHECK(cnn_get_learning_rate(straight) == cnn_get_learning_rate(resumed), "lr %g, then %g",
                  cnn_get_learning_rate(straight), cnn_get_learning_rate(resumed));
            const double *lr = cnn_history_get(h1, "lr");
            CHECK(lr && lr[2] < lr[1] && lr[3] == lr[2] && lr[4] < lr[3] && cnn_get_learning_rate(straight) == lr[4],
                  "ReduceLROnPlateau did not lower the rate after epochs 2 and 4 only, so its state was not tested");
            CHECK(h1->stopped_early, "EarlyStopping did not stop after epoch 5, so its state was not tested");
        }
        CHECK(access(path, F_OK) != 0, "the backup is left after the resumed training ended");
        cnn_history_free(h1);
        cnn_history_free(h2);
        cnn_model_free(straight);
        cnn_model_free(resumed);
    }

    test_begin("BackupAndRestore: bad inputs, a damaged backup, another model's backup");
    {
        CHECK(cnn_backup_and_restore(.backup_dir = NULL) == NULL && strstr(cnn_last_error(), "backup_dir"),
              "NULL backup_dir: %s", cnn_last_error());
        CHECK(cnn_backup_and_restore_opt(NULL) == NULL, "NULL options accepted");
        char dir[256], path[300];
        snprintf(dir, sizeof dir, "%s/backup-bad", tmp_root);
        snprintf(path, sizeof path, "%s/backup.cnn", dir);
        cnn_dataset *d = quadrant_data(64, 4, 41);
        cnn_model *m = quad_model((model_cfg){.seed = 42});
        cnn_callback *bk = cnn_backup_and_restore(.backup_dir = dir, .keep_backup = 1), *cbs[2] = {bk, NULL};
        cnn_history *h = cnn_fit(m, d, .epochs = 1, .batch_size = 16, .callbacks = cbs, .out = devnull);
        CHECK(h && access(path, F_OK) == 0, "keep_backup: no backup kept (%s)", h ? "" : cnn_last_error());
        cnn_history_free(h);
        /* the kept backup says training is over: fit again resumes at epoch 1 of 1 and runs nothing */
        size_t n = 0;
        const float *p = cnn_model_params(m, &n);
        float *before = (float *)malloc(n * sizeof(float));
        memcpy(before, p, n * sizeof(float));
        h = cnn_fit(m, d, .epochs = 1, .batch_size = 16, .callbacks = cbs, .out = devnull);
        CHECK(h && h->epochs == 1 && !memcmp(before, cnn_model_params(m, &n), n * sizeof(float)),
              "a finished run's backup trained again");
        cnn_history_free(h);
        /* another batch size */
        h = cnn_fit(m, d, .epochs = 2, .batch_size = 8, .callbacks = cbs, .out = devnull);
        CHECK(!h && strstr(cnn_last_error(), "batch size"), "another batch size: %s", cnn_last_error());
        /* another model */
        cnn_model *other = quad_model((model_cfg){.seed = 42, .bn = 1});
        h = cnn_fit(other, d, .epochs = 2, .batch_size = 16, .callbacks = cbs, .out = devnull);
        CHECK(!h && strstr(cnn_last_error(), "another model"), "another model: %s", cnn_last_error());
        cnn_model_free(other);
        /* a damaged file: one byte changed */
        size_t len = 0;
        unsigned char *bytes = read_bytes(path, &len);
        if (bytes && len > 100) {
            bytes[len / 2] ^= 0x40;
            FILE *f = fopen(path, "wb");
            fwrite(bytes, 1, len, f);
            fclose(f);
        }
        free(bytes);
        memcpy(before, cnn_model_params(m, &n), n * sizeof(float));
        h = cnn_fit(m, d, .epochs = 2, .batch_size = 16, .callbacks = cbs, .out = devnull);
        CHECK(!h && strstr(cnn_last_error(), "damaged"), "damaged backup: %s", cnn_last_error());
        CHECK(!memcmp(before, cnn_model_params(m, &n), n * sizeof(float)), "a refused backup changed the model");
        free(before);
        cnn_callback_free(bk);
        cnn_model_free(m);
        cnn_dataset_free(d);
        remove(path);
        rmdir(dir);
    }
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "--backup-child")) { /* the half of test_backup_and_restore that is killed */
        cnn_model *m = NULL;
        devnull = fopen("/dev/null", "w");
        cnn_set_num_threads(1);
        backup_run(argv[2], atoi(argv[3]), 4, &m);
        return 3; /* not reached: killed in epoch 5 */
    }
    strcpy(tmp_root, "/tmp/cnn_test_fit_XXXXXX");
    if (!mkdtemp(tmp_root)) { perror("mkdtemp"); return 1; }
    devnull = fopen("/dev/null", "w");
    cnn_set_num_threads(1);
    test_learns();
    test_validation_split();
    test_determinism();
    test_early_stopping();
    test_reduce_lr();
    test_lr_scheduler();
    test_csv_logger();
    test_checkpoint();
    test_stops();
    test_sigint();
    test_class_weight();
    test_trainable();
    test_regularizer();
    test_batch_source();
    test_targets();
    test_branching();
    test_clipping_keras();
    test_divergence();
    test_backup_and_restore(argv[0]);
    fclose(devnull);
    remove_tree(tmp_root);
    return test_finish();
}
