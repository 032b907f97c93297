/* test_api.c - every public function of cnn.h called with bad inputs.

   Each failing call must return a negative cnn_status (or NULL), leave a
   non-empty cnn_last_error() that names the layer, argument or file at fault,
   and neither crash nor leak. The model-file checks save a small model and make
   cnn_load refuse damaged copies of it (truncated, a flipped byte, an empty
   file, bad magic, another version, a consistent checksum over inconsistent
   contents); a good copy must load back bit-identical, and cnn_save must
   replace its target atomically and leave no temporary file behind.

   Build and run from the repository root:
     gcc -std=c99 -O1 -g -fopenmp -Wall -Wextra -I. tests/test_api.c -lm -o /tmp/ta && /tmp/ta
     gcc -std=c99 -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -Wall -Wextra \
         -I. tests/test_api.c -lm -o /tmp/ta_asan && /tmp/ta_asan
   Everything it writes lives in a mkdtemp folder under /tmp, removed at the end. */
#ifndef _XOPEN_SOURCE
#define _XOPEN_SOURCE 700 /* mkdtemp, sigaction, setrlimit, dirent under -std=c99 */
#endif
#include <stdlib.h>
/* every allocation cnn.h makes goes through here: the largest request since the
   last reset tells whether a hostile file made the loader ask for much, and
   fail_at > 0 makes the fail_at-th request from then on fail */
static size_t largest_request;
static long requests, fail_at;
static void *counted_malloc(size_t n) {
    if (n > largest_request) largest_request = n;
    if (fail_at > 0 && ++requests == fail_at) return NULL;
    return malloc(n);
}
static void *counted_realloc(void *p, size_t n) {
    if (n > largest_request) largest_request = n;
    if (fail_at > 0 && ++requests == fail_at) return NULL;
    return realloc(p, n);
}
#define CNN_MALLOC(sz) counted_malloc(sz)
#define CNN_REALLOC(p, sz) counted_realloc((p), (sz))
#define CNN_FREE(p) free(p)
#define CNN_IMPLEMENTATION
#include "cnn.h"
#include "test_util.h"

#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */
/* ------------------------------------------------------------------------ */

static char tmp_root[64];

static const char *tmp_path(char *buf, size_t cap, const char *rel) {
    snprintf(buf, cap, "%s/%s", tmp_root, rel);
    return buf;
}

static void clear_error(void) { cnn_set_error(CNN_OK, "%s", ""); }

static const char *err(void) { return cnn_last_error(); }

/* Does the last error mention `needle`? (NULL needle: only non-empty) */
static int mentions(const char *needle) { return err()[0] && (!needle || strstr(err(), needle) != NULL); }

/* A call returning a status must fail (< 0) with a message mentioning needle. */
#define ERR_RC(expr, needle) do {                                                              \
        clear_error();                                                                         \
        int rc_ = (int)(expr);                                                                 \
        CHECK(rc_ < 0, "%s returned %d, want < 0", #expr, rc_);                                 \
        CHECK(mentions(needle), "%s: error '%s' does not mention '%s'", #expr, err(),          \
              (needle) ? (const char *)(needle) : "(anything)");                              \
    } while (0)

/* A call returning a pointer must give NULL with a message mentioning needle;
   a pointer that comes back anyway is released with freefn. */
#define ERR_PTR(type, expr, needle, freefn) do {                                               \
        clear_error();                                                                         \
        type p_ = (expr);                                                                      \
        CHECK(p_ == NULL, "%s returned non-NULL", #expr);                                       \
        CHECK(mentions(needle), "%s: error '%s' does not mention '%s'", #expr, err(),          \
              (needle) ? (const char *)(needle) : "(anything)");                              \
        if (p_) freefn(p_);                                                                    \
    } while (0)

static void no_free(void *p) { (void)p; }
#define ERR_NODE(expr, needle) ERR_PTR(cnn_node *, expr, needle, no_free)
#define ERR_MODEL(expr, needle) ERR_PTR(cnn_model *, expr, needle, cnn_model_free)
#define ERR_DATA(expr, needle) ERR_PTR(cnn_dataset *, expr, needle, cnn_dataset_free)
#define ERR_CB(expr, needle) ERR_PTR(cnn_callback *, expr, needle, cnn_callback_free)
#define ERR_HIST(expr, needle) ERR_PTR(cnn_history *, expr, needle, cnn_history_free)
#define ERR_FPTR(expr, needle) ERR_PTR(float *, expr, needle, no_free)

static uint32_t crc32_of(const unsigned char *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    }
    return c ^ 0xFFFFFFFFu;
}

static uint32_t get_le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static void put_le32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8); p[2] = (unsigned char)(v >> 16); p[3] = (unsigned char)(v >> 24);
}
static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16); p[2] = (unsigned char)(v >> 8); p[3] = (unsigned char)v;
}

/* Number of entries in dir whose name contains `part` (".tmp" leftovers). */
static int count_entries(const char *dir, const char *part) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strstr(e->d_name, part)) n++;
    closedir(d);
    return n;
}

/* Remove everything under dir (one level of subfolders is enough here). */
static void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[1024];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) { chmod(p, 0700); remove_tree(p); }
        else remove(p);
    }
    closedir(d);
    rmdir(dir);
}

/* input "in" 8x8x1 -> conv 4@3x3 relu -> bn -> pool -> flat -> dense "out" 3 softmax */
static cnn_model *small_model(int compile) {
    cnn_model *m = cnn_model_new();
    cnn_node *x = cnn_input(m, 8, 8, 1, "in");
    x = cnn_conv2d(m, x, .filters = 4, .kernel_size = {3, 3}, .activation = CNN_RELU, .name = "conv");
    x = cnn_batch_norm(m, x, .name = "bn");
    x = cnn_max_pool2d(m, x, .name = "pool");
    x = cnn_flatten(m, x, .name = "flat");
    x = cnn_dense(m, x, .units = 3, .activation = CNN_SOFTMAX, .name = "out");
    if (cnn_model_set_output(m, x)) { cnn_model_free(m); return NULL; }
    if (compile && cnn_compile(m, .loss = CNN_CATEGORICAL_CROSSENTROPY, .metrics = CNN_ACCURACY)) {
        cnn_model_free(m);
        return NULL;
    }
    return m;
}

static uint64_t rng_state = 12345;
static uint32_t rnd(void) {
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(rng_state >> 33);
}

static cnn_dataset *random_data(int n, int h, int w, int c, int classes) {
    cnn_dataset *d = cnn_dataset_new(n, h, w, c, classes);
    if (!d) return NULL;
    for (size_t i = 0; i < (size_t)n * h * w * c; i++) d->images[i] = (unsigned char)rnd();
    for (int i = 0; i < n; i++) d->labels[i] = classes ? (int)(rnd() % (unsigned)classes) : 0;
    return d;
}

/* ------------------------------------------------------------------------ */
/* A configurable batch source                                              */
/* ------------------------------------------------------------------------ */

typedef struct test_src {
    int n, pos;
    int extra;      /* added to the count next() returns (a lying source) */
    int fail;       /* next() returns an error */
    int empty;      /* next() returns 0 at once */
    int y_width;
} test_src;

static int src_reset(void *ctx, int epoch) {
    (void)epoch;
    ((test_src *)ctx)->pos = 0;
    return CNN_OK;
}

static int src_next(void *ctx, int max_count, float *x, float *y) {
    test_src *s = (test_src *)ctx;
    if (s->fail) return cnn_set_error(CNN_ERR_IO, "test source: disk on fire");
    if (s->empty || s->pos >= s->n) return 0;
    int k = s->n - s->pos < max_count ? s->n - s->pos : max_count;
    for (int i = 0; i < k; i++) {
        for (int j = 0; j < 64; j++) x[i * 64 + j] = (float)((s->pos + i + j) % 7) / 7.0f;
        for (int j = 0; j < s->y_width; j++) y[i * s->y_width + j] = s->y_width == 1 ? (float)((s->pos + i) % 3) : (float)(j == (s->pos + i) % 3);
    }
    s->pos += k;
    return k + s->extra;
}

static cnn_batch_source make_source(test_src *s) {
    cnn_batch_source b;
    memset(&b, 0, sizeof b);
    memset(s, 0, sizeof *s);
    s->n = 20;
    s->y_width = 1;
    b.ctx = s;
    b.samples = s->n;
    b.h = 8; b.w = 8; b.c = 1;
    b.y_width = 1;
    b.reset = src_reset;
    b.next = src_next;
    return b;
}

static float sched_bad(int epoch, float lr, void *user) { (void)epoch; (void)lr; (void)user; return -1.0f; }
static float sched_id(int epoch, float lr, void *user) { (void)epoch; (void)user; return lr; }
static int lambda_stop(cnn_model *m, int epoch, const cnn_history *h, void *user) { (void)m; (void)epoch; (void)h; (void)user; return 0; }

static volatile sig_atomic_t my_sigint_count;
static void my_sigint(int sig) { (void)sig; my_sigint_count++; }

/* ------------------------------------------------------------------------ */
/* Errors, threads                                                          */
/* ------------------------------------------------------------------------ */

static void test_errors(void) {
    test_begin("cnn_set_error / cnn_last_error");
    CHECK(cnn_set_error(CNN_ERR_SHAPE, "layer '%s' is %d wide", "x", 3) == CNN_ERR_SHAPE, "set_error must return its code");
    CHECK(!strcmp(cnn_last_error(), "layer 'x' is 3 wide"), "message '%s'", cnn_last_error());
    char big[2000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    CHECK(cnn_set_error(CNN_ERR_ARG, "%s", big) == CNN_ERR_ARG, "long message");
    CHECK(strlen(cnn_last_error()) > 0 && strlen(cnn_last_error()) < sizeof big - 1, "a long message must be truncated safely");
    clear_error();
    CHECK(cnn_last_error()[0] == 0, "cleared message must be empty");

    test_begin("cnn_set_num_threads / cnn_get_num_threads");
    int before = cnn_get_num_threads();
    CHECK(before >= 1, "threads %d", before);
    cnn_set_num_threads(-3); /* <= 0 means all cores: must not break anything */
    CHECK(cnn_get_num_threads() >= 1, "threads after set(-3): %d", cnn_get_num_threads());
    cnn_set_num_threads(1);
    CHECK(cnn_get_num_threads() == 1, "threads after set(1): %d", cnn_get_num_threads());
    cnn_set_num_threads(before);

    test_begin("cnn_set_kernels / cnn_kernels");
    const char *path = cnn_kernels();
    CHECK(path && (!strcmp(path, "avx512") || !strcmp(path, "avx2") || !strcmp(path, "neon") ||
                   !strcmp(path, "portable")),
          "path in use: %s", path ? path : "NULL");
    CHECK(cnn_set_kernels("portable") == CNN_OK && !strcmp(cnn_kernels(), "portable"), "portable runs everywhere");
    clear_error();
    CHECK(cnn_set_kernels("sse9") == CNN_ERR_ARG, "an unknown path must be refused");
    CHECK(strstr(cnn_last_error(), "sse9") && strstr(cnn_last_error(), "portable"),
          "the message names the path and those that run: %s", cnn_last_error());
    CHECK(!strcmp(cnn_kernels(), "portable"), "a refused call changes nothing: %s", cnn_kernels());
    CHECK(cnn_set_kernels("") == CNN_OK && cnn_set_kernels(NULL) == CNN_OK && cnn_set_kernels("auto") == CNN_OK,
          "empty, NULL and auto pick the best path");
    const char *best = cnn_kernels();
    CHECK(cnn_set_kernels(best) == CNN_OK && !strcmp(cnn_kernels(), best), "the best path by name: %s", best);
    /* CNN_KERNELS naming no path this processor runs: a warning, and the best path */
    {
        const char *saved = getenv("CNN_KERNELS");
        char keep[64] = "";
        if (saved) snprintf(keep, sizeof keep, "%s", saved);
        setenv("CNN_KERNELS", "sse9", 1);
        cnn__kernel_path_now = NULL; /* as at start-up: the next use reads the environment */
        CHECK(!strcmp(cnn_kernels(), best), "CNN_KERNELS=sse9 runs %s, not the best path %s", cnn_kernels(), best);
        setenv("CNN_KERNELS", "portable", 1);
        cnn__kernel_path_now = NULL;
        CHECK(!strcmp(cnn_kernels(), "portable"), "CNN_KERNELS=portable runs %s", cnn_kernels());
        if (saved) setenv("CNN_KERNELS", keep, 1); else unsetenv("CNN_KERNELS");
    }
    CHECK(cnn_set_kernels(path) == CNN_OK, "back to %s", path);
}

/* ------------------------------------------------------------------------ */
/* Datasets and loaders                                                     */
/* ------------------------------------------------------------------------ */

static void test_datasets(void) {
    test_begin("cnn_dataset_new bad sizes");
    ERR_DATA(cnn_dataset_new(-1, 8, 8, 1, 2), "n=-1");
    ERR_DATA(cnn_dataset_new(4, 0, 8, 1, 2), "h=0");
    ERR_DATA(cnn_dataset_new(4, 8, -2, 1, 2), "w=-2");
    ERR_DATA(cnn_dataset_new(4, 8, 8, 0, 2), "c=0");
    ERR_DATA(cnn_dataset_new(4, 8, 8, 1, -1), "classes=-1");
    cnn_dataset *empty = cnn_dataset_new(0, 8, 8, 1, 2);
    CHECK(empty && empty->n == 0, "an empty dataset is allowed");

    test_begin("cnn_dataset_new size overflow");
    /* 2^20 images of 65536x65536x4096 bytes: n*h*w*c is 2^64, which wraps to 0 in size_t */
    ERR_DATA(cnn_dataset_new(1 << 20, 65536, 65536, 4096, 2), NULL);

    test_begin("cnn_dataset_set_class_names bad inputs");
    cnn_dataset *d = random_data(10, 8, 8, 1, 3);
    const char *names3[3] = {"a", "b", "c"}, *names_null[3] = {"a", NULL, "c"};
    ERR_RC(cnn_dataset_set_class_names(NULL, names3, 3), "dataset");
    ERR_RC(cnn_dataset_set_class_names(d, NULL, 3), "names");
    ERR_RC(cnn_dataset_set_class_names(d, names3, 2), "2 names for 3 classes");
    clear_error();
    int rc = cnn_dataset_set_class_names(d, names_null, 3);
    CHECK(rc == CNN_ERR_ARG, "a NULL class name is a bad argument: got %d, want CNN_ERR_ARG (%d)", rc, CNN_ERR_ARG);
    CHECK(mentions("class name 1"), "error '%s' should name class name 1", err());
    CHECK(d->class_names == NULL, "failed calls must leave the names unset");

    test_begin("cnn_dataset_shuffle bad inputs");
    ERR_RC(cnn_dataset_shuffle(NULL, 1), "NULL");
    ERR_RC(cnn_dataset_shuffle(empty, 1), "empty");

    test_begin("cnn_dataset_subset bad ranges");
    ERR_DATA(cnn_dataset_subset(NULL, 0, 1), "NULL");
    ERR_DATA(cnn_dataset_subset(d, -1, 2), "outside");
    ERR_DATA(cnn_dataset_subset(d, 0, -1), "outside");
    ERR_DATA(cnn_dataset_subset(d, 8, 3), "outside");
    ERR_DATA(cnn_dataset_subset(d, 11, 0), "outside");
    cnn_dataset *s0 = cnn_dataset_subset(d, 10, 0);
    CHECK(s0 && s0->n == 0, "an empty subset at the end is allowed");
    cnn_dataset_free(s0);

    test_begin("cnn_dataset_split bad inputs");
    cnn_dataset *a = (cnn_dataset *)1, *b = (cnn_dataset *)1;
    ERR_RC(cnn_dataset_split(d, 0.5f, NULL, &b), "NULL");
    ERR_RC(cnn_dataset_split(NULL, 0.5f, &a, &b), "NULL");
    CHECK(a == NULL && b == NULL, "outputs must be NULL after a failure");
    ERR_RC(cnn_dataset_split(d, 1.5f, &a, &b), "fraction");
    ERR_RC(cnn_dataset_split(d, -0.1f, &a, &b), "fraction");
    ERR_RC(cnn_dataset_split(d, NAN, &a, &b), "fraction");
    ERR_RC(cnn_dataset_split(d, 1.0f, &a, &b), "fraction");
    ERR_RC(cnn_dataset_split(empty, 0.5f, &a, &b), "empty");
    CHECK(a == NULL && b == NULL, "outputs must be NULL after a failure");
    cnn_dataset_free(d);
    cnn_dataset_free(empty);
}

static void test_loaders(void) {
    char p[512], p2[512];
    test_begin("cnn_load_cifar10 / cnn_load_cifar10_file bad inputs");
    ERR_DATA(cnn_load_cifar10(NULL, 1), "dir");
    tmp_path(p, sizeof p, "no_such_cifar_dir");
    ERR_DATA(cnn_load_cifar10(p, 1), "no_such_cifar_dir");
    ERR_DATA(cnn_load_cifar10(p, 0), "no_such_cifar_dir");
    CHECK(cnn_is_cifar10_dir(NULL) == 0, "NULL is not a CIFAR-10 folder");
    CHECK(cnn_is_cifar10_dir(p) == 0, "a missing folder is not a CIFAR-10 folder");
    ERR_DATA(cnn_load_cifar10_file(NULL), "path");
    ERR_DATA(cnn_load_cifar10_file(p), "no_such_cifar_dir");
    /* a batch file whose size is not a multiple of 3073 */
    tmp_path(p, sizeof p, "cifar");
    mkdir(p, 0700);
    tmp_path(p, sizeof p, "cifar/test_batch.bin");
    unsigned char rec[3073 * 2];
    memset(rec, 7, sizeof rec);
    rec[0] = 3;
    rec[3073] = 4;
    write_bytes(p, rec, 3073 + 100);
    ERR_DATA(cnn_load_cifar10_file(p), "test_batch.bin");
    tmp_path(p2, sizeof p2, "cifar");
    ERR_DATA(cnn_load_cifar10(p2, 0), "test_batch.bin");
    CHECK(cnn_is_cifar10_dir(p2) == 1, "a folder with test_batch.bin is a CIFAR-10 folder");
    /* a label out of 0..9 */
    rec[3073] = 10;
    write_bytes(p, rec, sizeof rec);
    ERR_DATA(cnn_load_cifar10_file(p), "label 10");
    /* an empty file */
    write_bytes(p, rec, 0);
    ERR_DATA(cnn_load_cifar10_file(p), "test_batch.bin");
    /* the train set needs data_batch_1..5 */
    ERR_DATA(cnn_load_cifar10(p2, 1), "data_batch_1.bin");
    rec[3073] = 4;
    write_bytes(p, rec, sizeof rec);
    cnn_dataset *ok = cnn_load_cifar10_file(p);
    CHECK(ok && ok->n == 2 && ok->labels[1] == 4, "a good 2-record batch must load");
    cnn_dataset_free(ok);

    test_begin("cnn_load_idx / cnn_load_idx_memory bad inputs");
    unsigned char img[4 + 12 + 2 * 9], lab[8 + 2];
    memset(img, 5, sizeof img);
    img[0] = img[1] = 0; img[2] = 8; img[3] = 3;
    put_be32(img + 4, 2); put_be32(img + 8, 3); put_be32(img + 12, 3);
    lab[0] = lab[1] = 0; lab[2] = 8; lab[3] = 1;
    put_be32(lab + 4, 2);
    lab[8] = 0; lab[9] = 1;
    cnn_dataset *good = cnn_load_idx_memory(img, sizeof img, lab, sizeof lab);
    CHECK(good && good->n == 2 && good->h == 3 && good->w == 3 && good->c == 1 && good->num_classes == 2, "a good IDX pair must load");
    cnn_dataset_free(good);
    ERR_DATA(cnn_load_idx_memory(NULL, sizeof img, lab, sizeof lab), "images");
    ERR_DATA(cnn_load_idx_memory(img, sizeof img, NULL, sizeof lab), "labels");
    ERR_DATA(cnn_load_idx_memory(img, 3, lab, sizeof lab), "magic");
    ERR_DATA(cnn_load_idx_memory(img, 10, lab, sizeof lab), "truncated");
    ERR_DATA(cnn_load_idx_memory(img, sizeof img - 1, lab, sizeof lab), "truncated");
    ERR_DATA(cnn_load_idx_memory(img, sizeof img, lab, sizeof lab - 1), "truncated");
    ERR_DATA(cnn_load_idx_memory(img, sizeof img, lab, 0), "magic");
    unsigned char bad[sizeof img];
    memcpy(bad, img, sizeof img);
    bad[2] = 0x0D; /* float data */
    ERR_DATA(cnn_load_idx_memory(bad, sizeof bad, lab, sizeof lab), "magic");
    memcpy(bad, img, sizeof img);
    put_be32(bad + 8, 0); /* zero height */
    ERR_DATA(cnn_load_idx_memory(bad, sizeof bad, lab, sizeof lab), "dimensions");
    unsigned char lab3[sizeof lab];
    memcpy(lab3, lab, sizeof lab);
    put_be32(lab3 + 4, 3);
    ERR_DATA(cnn_load_idx_memory(img, sizeof img, lab3, sizeof lab3), "3 labels for 2 images");
    ERR_DATA(cnn_load_idx(NULL, "x"), "path");
    ERR_DATA(cnn_load_idx("x", NULL), "path");
    tmp_path(p, sizeof p, "idx-images");
    tmp_path(p2, sizeof p2, "idx-labels");
    write_bytes(p2, lab, sizeof lab);
    ERR_DATA(cnn_load_idx(p, p2), "idx-images"); /* missing images file */
    write_bytes(p, img, sizeof img);
    char missing[512];
    tmp_path(missing, sizeof missing, "idx-labels-missing");
    ERR_DATA(cnn_load_idx(p, missing), "idx-labels-missing");
    good = cnn_load_idx(p, p2);
    CHECK(good && good->n == 2, "a good IDX file pair must load: %s", err());
    cnn_dataset_free(good);

    test_begin("cnn_load_idx keeps the cause of a format error");
    bad[2] = 0x0D;
    write_bytes(p, bad, sizeof bad);
    ERR_DATA(cnn_load_idx(p, p2), "idx-images");
    ERR_DATA(cnn_load_idx(p, p2), "bad magic");

    test_begin("cnn_load_idx_memory size overflow");
    {
        /* 2^20 images of 65536x65536x4096: the byte count wraps to 0 in size_t, so the
           header alone would pass the truncation check */
        unsigned char hdr[4 + 16];
        hdr[0] = hdr[1] = 0; hdr[2] = 8; hdr[3] = 4;
        put_be32(hdr + 4, 1u << 20); put_be32(hdr + 8, 65536); put_be32(hdr + 12, 65536); put_be32(hdr + 16, 4096);
        size_t ll = 8 + ((size_t)1 << 20);
        unsigned char *lb = (unsigned char *)calloc(ll, 1);
        lb[2] = 8; lb[3] = 1;
        put_be32(lb + 4, 1u << 20);
        ERR_DATA(cnn_load_idx_memory(hdr, sizeof hdr, lb, ll), NULL);
        free(lb);
    }
}

/* ------------------------------------------------------------------------ */
/* Graph construction                                                       */
/* ------------------------------------------------------------------------ */

static void test_layers(void) {
    test_begin("cnn_model_new / cnn_model_free");
    cnn_model_free(NULL); /* must be a no-op */
    cnn_model *m = cnn_model_new();
    CHECK(m != NULL, "cnn_model_new");

    test_begin("cnn_input bad inputs");
    ERR_NODE(cnn_input(NULL, 8, 8, 1, "in"), "in");
    ERR_NODE(cnn_input(m, 0, 8, 1, "in"), "in");
    ERR_NODE(cnn_input(m, 8, -1, 1, "in"), "in");
    ERR_NODE(cnn_input(m, 8, 8, 0, "in"), "in");
    ERR_NODE(cnn_input(m, 8, 8, 1, ""), "name");
    char longname[100];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    ERR_NODE(cnn_input(m, 8, 8, 1, longname), "name");
    cnn_node *in = cnn_input(m, 8, 8, 1, "in");
    CHECK(in != NULL, "a good input: %s", err());
    ERR_NODE(cnn_input(m, 8, 8, 1, "in2"), "in2");
    ERR_NODE(cnn_input(m, 8, 8, 1, "in2"), "'in'"); /* names the existing input */

    test_begin("layers: NULL model, NULL input, NULL options");
    ERR_NODE(cnn_conv2d(NULL, in, .filters = 2, .kernel_size = {3, 3}, .name = "c1"), "c1");
    ERR_NODE(cnn_conv2d(m, NULL, .filters = 2, .kernel_size = {3, 3}, .name = "c1"), "c1");
    ERR_NODE(cnn_conv2d_opt(m, in, NULL), "options");
    ERR_NODE(cnn_dense(NULL, in, .units = 2, .name = "d1"), "d1");
    ERR_NODE(cnn_dense(m, NULL, .units = 2, .name = "d1"), "d1");
    ERR_NODE(cnn_dense_opt(m, in, NULL), "options");
    ERR_NODE(cnn_batch_norm(NULL, in, .name = "b1"), "b1");
    ERR_NODE(cnn_batch_norm(m, NULL, .name = "b1"), "b1");
    ERR_NODE(cnn_max_pool2d(NULL, in, .name = "p1"), "p1");
    ERR_NODE(cnn_max_pool2d(m, NULL, .name = "p1"), "p1");
    ERR_NODE(cnn_avg_pool2d(NULL, in, .name = "a1"), "a1");
    ERR_NODE(cnn_avg_pool2d(m, NULL, .name = "a1"), "a1");
    ERR_NODE(cnn_global_avg_pool2d(NULL, in, .name = "g1"), "g1");
    ERR_NODE(cnn_global_avg_pool2d(m, NULL, .name = "g1"), "g1");
    ERR_NODE(cnn_flatten(NULL, in, .name = "f1"), "f1");
    ERR_NODE(cnn_flatten(m, NULL, .name = "f1"), "f1");
    ERR_NODE(cnn_dropout(NULL, in, .rate = 0.5f, .name = "dr1"), "dr1");
    ERR_NODE(cnn_dropout(m, NULL, .rate = 0.5f, .name = "dr1"), "dr1");
    ERR_NODE(cnn_activation(NULL, in, .activation = CNN_RELU, .name = "ac1"), "ac1");
    ERR_NODE(cnn_activation(m, NULL, .activation = CNN_RELU, .name = "ac1"), "ac1");
    cnn_node *pair[2] = {in, in};
    ERR_NODE(cnn_add(NULL, pair, 2, .name = "add1"), NULL);
    ERR_NODE(cnn_concatenate(NULL, pair, 2, .name = "cat1"), NULL);
    cnn_node *pair_null[2] = {in, NULL};
    ERR_NODE(cnn_add(m, pair_null, 2, .name = "add1"), "add1");
    ERR_NODE(cnn_concatenate(m, pair_null, 2, .name = "cat1"), "cat1");
    /* the options-less layers accept NULL options (Keras defaults, automatic name) */
    cnn_node *bn_default = cnn_batch_norm_opt(m, in, NULL);
    CHECK(bn_default && !strcmp(cnn_node_name(bn_default), "batch_normalization"), "batch_norm with NULL options: %s", err());

    test_begin("Conv2D bad options");
    ERR_NODE(cnn_conv2d(m, in, .filters = 0, .kernel_size = {3, 3}, .name = "cv"), "filters");
    ERR_NODE(cnn_conv2d(m, in, .filters = -4, .kernel_size = {3, 3}, .name = "cv"), "cv");
    ERR_NODE(cnn_conv2d(m, in, .filters = 2, .kernel_size = {0, 3}, .name = "cv"), "kernel_size");
    ERR_NODE(cnn_conv2d(m, in, .filters = 2, .name = "cv"), "kernel_size");
    ERR_NODE(cnn_conv2d(m, in, .filters = 2, .kernel_size = {3, 3}, .strides = {-1, 1}, .name = "cv"), "strides");
    ERR_NODE(cnn_conv2d(m, in, .filters = 2, .kernel_size = {3, 3}, .padding = (cnn_padding)5, .name = "cv"), "padding");
    ERR_NODE(cnn_conv2d(m, in, .filters = 2, .kernel_size = {3, 3}, .activation = (cnn_activation_type)99, .name = "cv"), "activation");
    ERR_NODE(cnn_conv2d(m, in, .filters = 2, .kernel_size = {3, 3}, .activation = CNN_LEAKY_RELU, .alpha = -1, .name = "cv"), "alpha");
    ERR_NODE(cnn_conv2d(m, in, .filters = 2, .kernel_size = {3, 3}, .kernel_regularizer = {.l2 = -0.1f}, .name = "cv"), "regularizer");
    ERR_NODE(cnn_conv2d(m, in, .filters = 2, .kernel_size = {3, 3}, .kernel_regularizer = {.l1 = NAN}, .name = "cv"), "regularizer");
    /* kernel larger than the input: names the layer and its input */
    ERR_NODE(cnn_conv2d(m, in, .filters = 2, .kernel_size = {9, 3}, .name = "cv_big"), "cv_big");
    ERR_NODE(cnn_conv2d(m, in, .filters = 2, .kernel_size = {3, 9}, .name = "cv_big"), "'in'");
    /* 'same' padding fits any kernel */
    cnn_node *same = cnn_conv2d(m, in, .filters = 2, .kernel_size = {9, 9}, .padding = CNN_SAME, .name = "cv_same");
    CHECK(same != NULL, "a 9x9 'same' conv on 8x8 must work: %s", err());
    cnn_node *flat = cnn_flatten(m, in, .name = "flat");
    CHECK(flat != NULL, "flatten: %s", err());
    ERR_NODE(cnn_conv2d(m, flat, .filters = 2, .kernel_size = {1, 1}, .name = "cv_flat"), "cv_flat");

    test_begin("Dense bad options");
    ERR_NODE(cnn_dense(m, flat, .units = 0, .name = "dn"), "units");
    ERR_NODE(cnn_dense(m, flat, .units = 3, .activation = (cnn_activation_type)-1, .name = "dn"), "activation");
    ERR_NODE(cnn_dense(m, flat, .units = 3, .kernel_regularizer = {.l1 = -1}, .name = "dn"), "regularizer");
    /* Dense on an unflattened image names both layers */
    ERR_NODE(cnn_dense(m, in, .units = 3, .name = "dn_img"), "dn_img");
    ERR_NODE(cnn_dense(m, in, .units = 3, .name = "dn_img"), "'in'");

    test_begin("BatchNormalization / pooling / Dropout / Activation bad options");
    ERR_NODE(cnn_batch_norm(m, in, .momentum = 2.0f, .name = "bnx"), "momentum");
    ERR_NODE(cnn_batch_norm(m, in, .momentum = NAN, .name = "bnx"), "bnx");
    ERR_NODE(cnn_batch_norm(m, in, .epsilon = -1e-3f, .name = "bnx"), "epsilon");
    ERR_NODE(cnn_max_pool2d(m, in, .pool_size = {-1, 2}, .name = "px"), "pool_size");
    ERR_NODE(cnn_max_pool2d(m, in, .strides = {2, -2}, .name = "px"), "px");
    ERR_NODE(cnn_max_pool2d(m, in, .padding = (cnn_padding)7, .name = "px"), "padding");
    ERR_NODE(cnn_max_pool2d(m, in, .pool_size = {9, 9}, .name = "px_big"), "px_big");
    ERR_NODE(cnn_max_pool2d(m, in, .pool_size = {300, 300}, .name = "px_huge"), "65536 cells"); /* argmax: 2 bytes a cell */
    ERR_NODE(cnn_avg_pool2d(m, in, .pool_size = {300, 300}, .name = "ax_huge"), "does not fit"); /* no such limit */
    ERR_NODE(cnn_avg_pool2d(m, in, .pool_size = {2, 9}, .name = "ax_big"), "'in'");
    ERR_NODE(cnn_avg_pool2d(m, in, .pool_size = {0, -3}, .name = "ax"), "ax");
    ERR_NODE(cnn_dropout(m, in, .rate = 1.0f, .name = "drx"), "rate");
    ERR_NODE(cnn_dropout(m, in, .rate = -0.5f, .name = "drx"), "drx");
    ERR_NODE(cnn_dropout(m, in, .rate = NAN, .name = "drx"), "drx");
    ERR_NODE(cnn_activation(m, in, .activation = (cnn_activation_type)42, .name = "acx"), "acx");
    ERR_NODE(cnn_activation(m, in, .activation = CNN_ELU, .alpha = -2, .name = "acx"), "alpha");

    test_begin("Add / Concatenate bad inputs");
    ERR_NODE(cnn_add(m, pair, 1, .name = "add1"), "2 inputs");
    ERR_NODE(cnn_add(m, NULL, 2, .name = "add1"), "add1");
    ERR_NODE(cnn_concatenate(m, pair, 0, .name = "cat1"), "2 inputs");
    cnn_node *many[17];
    for (int i = 0; i < 17; i++) many[i] = in;
    ERR_NODE(cnn_add(m, many, 17, .name = "add17"), "add17");
    cnn_node *c2 = cnn_conv2d(m, in, .filters = 2, .kernel_size = {3, 3}, .name = "c2");
    cnn_node *c3 = cnn_conv2d(m, in, .filters = 3, .kernel_size = {3, 3}, .name = "c3");
    cnn_node *c2s = cnn_conv2d(m, in, .filters = 2, .kernel_size = {1, 1}, .name = "c2s");
    CHECK(c2 && c3 && c2s, "branch convs: %s", err());
    cnn_node *mis[2] = {c2, c3};
    ERR_NODE(cnn_add(m, mis, 2, .name = "add_mis"), "add_mis");
    ERR_NODE(cnn_add(m, mis, 2, .name = "add_mis"), "'c2'");
    ERR_NODE(cnn_add(m, mis, 2, .name = "add_mis"), "'c3'");
    cnn_node *mis_hw[2] = {c2, c2s};
    ERR_NODE(cnn_concatenate(m, mis_hw, 2, .name = "cat_mis"), "'c2'");
    ERR_NODE(cnn_concatenate(m, mis_hw, 2, .name = "cat_mis"), "'c2s'");
    cnn_node *cat_ok = cnn_concatenate(m, mis, 2, .name = "cat_ok");
    int ch = 0;
    CHECK(cat_ok && cnn_node_shape(cat_ok, NULL, NULL, &ch) == 0 && ch == 5, "concatenate 2+3 channels: %s", err());
    /* an input that belongs to another model */
    cnn_model *other = cnn_model_new();
    cnn_node *oin = cnn_input(other, 8, 8, 1, "other_in");
    ERR_NODE(cnn_conv2d(m, oin, .filters = 2, .kernel_size = {3, 3}, .name = "cv_other"), "other_in");
    cnn_node *cross[2] = {in, oin};
    ERR_NODE(cnn_add(m, cross, 2, .name = "add_cross"), "other_in");
    ERR_RC(cnn_model_set_output(m, oin), "other_in");
    cnn_model_free(other);

    test_begin("duplicate and automatic layer names");
    ERR_NODE(cnn_conv2d(m, in, .filters = 2, .kernel_size = {3, 3}, .name = "c2"), "c2");
    ERR_NODE(cnn_dense(m, flat, .units = 2, .name = "flat"), "already exists");
    cnn_node *auto1 = cnn_conv2d(m, in, .filters = 1, .kernel_size = {1, 1});
    cnn_node *auto2 = cnn_conv2d(m, in, .filters = 1, .kernel_size = {1, 1});
    CHECK(auto1 && auto2 && !strcmp(cnn_node_name(auto1), "conv2d") && !strcmp(cnn_node_name(auto2), "conv2d_1"),
          "automatic names '%s', '%s'", auto1 ? cnn_node_name(auto1) : "-", auto2 ? cnn_node_name(auto2) : "-");

    test_begin("cnn_model_set_output bad inputs");
    ERR_RC(cnn_model_set_output(NULL, c2), "NULL");
    ERR_RC(cnn_model_set_output(m, in), "'in'"); /* the output is the input itself */
    /* a NULL output after a failed layer: the message must keep the earlier cause */
    cnn_node *bad = cnn_conv2d(m, in, .filters = 2, .kernel_size = {12, 12}, .name = "too_big");
    CHECK(bad == NULL, "a 12x12 kernel on 8x8 must fail");
    int rc = cnn_model_set_output(m, bad);
    CHECK(rc < 0, "set_output(NULL) returned %d", rc);
    CHECK(mentions("too_big") && mentions("does not fit"), "set_output(NULL) after a failed layer must keep its cause; got '%s'", err());
    cnn_node *gap = cnn_global_avg_pool2d(m, c2, .name = "gap");
    cnn_node *out = cnn_dense(m, gap, .units = 3, .activation = CNN_SOFTMAX, .name = "out");
    CHECK(cnn_model_set_output(m, out) == 0, "set_output: %s", err());
    ERR_RC(cnn_model_set_output(m, out), "already");
    /* layers added after set_output */
    ERR_NODE(cnn_dense(m, out, .units = 2, .name = "late"), "late");
    ERR_NODE(cnn_dense(m, out, .units = 2, .name = "late"), "output");
    cnn_node *late2[2] = {out, out};
    ERR_NODE(cnn_add(m, late2, 2, .name = "late_add"), "late_add");
    ERR_NODE(cnn_input(m, 4, 4, 1, "late_in"), "late_in");
    cnn_model_free(m);

    test_begin("cnn_model_set_seed / cnn_summary / shape queries bad inputs");
    ERR_RC(cnn_model_set_seed(NULL, 1), "NULL");
    cnn_model *e = cnn_model_new();
    ERR_RC(cnn_summary(NULL, stdout), "NULL");
    ERR_RC(cnn_summary(e, stdout), "output");
    ERR_RC(cnn_model_input_shape(NULL, NULL, NULL, NULL), "NULL");
    ERR_RC(cnn_model_input_shape(e, NULL, NULL, NULL), "input");
    ERR_RC(cnn_model_output_size(NULL), "NULL");
    ERR_RC(cnn_model_output_size(e), "output");
    CHECK(cnn_model_param_count(NULL) == 0, "param_count(NULL) must be 0");
    CHECK(cnn_model_param_count(e) == 0, "param_count of an empty model must be 0");
    ERR_RC(cnn_node_shape(NULL, NULL, NULL, NULL), "NULL");
    CHECK(cnn_node_name(NULL) == NULL, "node_name(NULL) must be NULL");
    cnn_model *s = small_model(0);
    ERR_RC(cnn_summary(s, NULL), "stream");
    int h = 0, w = 0, c = 0;
    CHECK(cnn_model_input_shape(s, &h, &w, &c) == 0 && h == 8 && w == 8 && c == 1, "input shape");
    CHECK(cnn_model_output_size(s) == 3, "output size");
    cnn_model_free(s);
    cnn_model_free(e);
}

/* h x w x c of a node, or -1s when it is NULL */
static int shape_is(const cnn_node *x, int h, int w, int c) {
    int a = -1, b = -1, d = -1;
    return x && cnn_node_shape(x, &a, &b, &d) == 0 && a == h && b == w && d == c;
}

static void test_padding_upsampling_layers(void) {
    cnn_model *m = cnn_model_new();
    cnn_node *in = cnn_input(m, 8, 8, 1, "in");
    CHECK(in != NULL, "input: %s", err());

    test_begin("ZeroPadding2D / UpSampling2D: NULL model, NULL input, NULL options");
    ERR_NODE(cnn_zero_padding2d(NULL, in, .padding = {1, 1, 1, 1}, .name = "zp1"), "zp1");
    ERR_NODE(cnn_zero_padding2d(NULL, in, .name = "zp1"), "ZeroPadding2D");
    ERR_NODE(cnn_zero_padding2d(m, NULL, .name = "zp1"), "zp1");
    ERR_NODE(cnn_zero_padding2d(m, NULL, .name = "zp1"), "ZeroPadding2D");
    ERR_NODE(cnn_zero_padding2d_opt(NULL, in, NULL), "zero_padding2d"); /* the automatic name */
    ERR_NODE(cnn_up_sampling2d(NULL, in, .size = {2, 2}, .name = "up1"), "up1");
    ERR_NODE(cnn_up_sampling2d(NULL, in, .name = "up1"), "UpSampling2D");
    ERR_NODE(cnn_up_sampling2d(m, NULL, .name = "up1"), "up1");
    ERR_NODE(cnn_up_sampling2d(m, NULL, .name = "up1"), "UpSampling2D");
    ERR_NODE(cnn_up_sampling2d_opt(NULL, in, NULL), "up_sampling2d");
    /* NULL options: Keras' defaults (padding 1 on each side, size 2x2) and the automatic name */
    cnn_node *zd = cnn_zero_padding2d_opt(m, in, NULL), *ud = cnn_up_sampling2d_opt(m, in, NULL);
    CHECK(shape_is(zd, 10, 10, 1) && !strcmp(cnn_node_name(zd), "zero_padding2d"), "zero_padding2d with NULL options: %s", err());
    CHECK(shape_is(ud, 16, 16, 1) && !strcmp(cnn_node_name(ud), "up_sampling2d"), "up_sampling2d with NULL options: %s", err());
    /* a layer after a failed one keeps the failure's message, the root cause */
    clear_error();
    cnn_node *bad = cnn_zero_padding2d(m, in, .padding = {-1, 0, 0, 0}, .name = "zp_root");
    CHECK(bad == NULL, "padding -1 must fail");
    CHECK(cnn_up_sampling2d(m, bad, .name = "up_after") == NULL && mentions("zp_root"), "after a failed layer: '%s'", err());
    bad = cnn_up_sampling2d(m, in, .size = {-2, 2}, .name = "up_root");
    CHECK(bad == NULL, "size -2 must fail");
    CHECK(cnn_zero_padding2d(m, bad, .name = "zp_after") == NULL && mentions("up_root"), "after a failed layer: '%s'", err());
    cnn_model_free(m);

    m = cnn_model_new();
    in = cnn_input(m, 8, 8, 1, "in");
    test_begin("ZeroPadding2D bad options");
    ERR_NODE(cnn_zero_padding2d(m, in, .padding = {-1, 0, 0, 0}, .name = "zpx"), "padding");
    ERR_NODE(cnn_zero_padding2d(m, in, .padding = {0, -1, 0, 0}, .name = "zpx"), "zpx");
    ERR_NODE(cnn_zero_padding2d(m, in, .padding = {0, 0, -3, 0}, .name = "zpx"), "-3");
    ERR_NODE(cnn_zero_padding2d(m, in, .padding = {1, 1, 1, INT_MIN}, .name = "zpx"), "zpx");
    ERR_NODE(cnn_zero_padding2d(m, in, .padding = {65536, 0, 0, 0}, .name = "zpx"), "65536");
    ERR_NODE(cnn_zero_padding2d(m, in, .padding = {0, 0, 0, INT_MAX}, .name = "zpx"), "zpx");
    /* sizes that pass each bound but not together: 131078 x 131078 values a sample */
    ERR_NODE(cnn_zero_padding2d(m, in, .padding = {65535, 65535, 65535, 65535}, .name = "zp_huge"), "zp_huge");
    ERR_NODE(cnn_zero_padding2d(m, in, .padding = {65535, 65535, 65535, 65535}, .name = "zp_huge"), "too many");
    {   /* the limit is INT_MAX values a sample: 46340^2 fits, 46341^2 does not (2^31 - 1 is prime) */
        cnn_model *b = cnn_model_new();
        cnn_node *one = cnn_input(b, 1, 1, 1, "one");
        cnn_node *fits = cnn_zero_padding2d(b, one, .padding = {0, 46339, 46339, 0}, .name = "zp_fits");
        CHECK(shape_is(fits, 46340, 46340, 1), "46340 x 46340 x 1 must fit: %s", err());
        ERR_NODE(cnn_zero_padding2d(b, one, .padding = {46340, 0, 0, 46340}, .name = "zp_over"), "zp_over");
        cnn_model_free(b);
    }
    CHECK(shape_is(in, 8, 8, 1), "the input");

    test_begin("UpSampling2D bad options");
    ERR_NODE(cnn_up_sampling2d(m, in, .size = {-1, 2}, .name = "upx"), "size");
    ERR_NODE(cnn_up_sampling2d(m, in, .size = {2, -3}, .name = "upx"), "upx");
    ERR_NODE(cnn_up_sampling2d(m, in, .size = {INT_MIN, INT_MIN}, .name = "upx"), "upx");
    ERR_NODE(cnn_up_sampling2d(m, in, .size = {65536, 1}, .name = "upx"), "size");
    ERR_NODE(cnn_up_sampling2d(m, in, .size = {1, INT_MAX}, .name = "upx"), "upx");
    ERR_NODE(cnn_up_sampling2d(m, in, .size = {65535, 65535}, .name = "up_huge"), "up_huge");
    ERR_NODE(cnn_up_sampling2d(m, in, .size = {65535, 65535}, .name = "up_huge"), "too many");
    {
        cnn_model *b = cnn_model_new();
        cnn_node *one = cnn_input(b, 1, 1, 1, "one");
        cnn_node *fits = cnn_up_sampling2d(b, one, .size = {46340, 46340}, .name = "up_fits");
        CHECK(shape_is(fits, 46340, 46340, 1), "46340 x 46340 x 1 must fit: %s", err());
        ERR_NODE(cnn_up_sampling2d(b, one, .size = {46341, 46341}, .name = "up_over"), "up_over");
        cnn_model_free(b);
        b = cnn_model_new();
        one = cnn_input(b, 1, 1, INT_MAX, "deep");
        fits = cnn_up_sampling2d(b, one, .size = {1, 1}, .name = "up_1x1");
        CHECK(shape_is(fits, 1, 1, INT_MAX), "1 x 1 x INT_MAX must fit: %s", err());
        ERR_NODE(cnn_up_sampling2d(b, one, .size = {2, 1}, .name = "up_deep"), "up_deep");
        ERR_NODE(cnn_zero_padding2d(b, one, .padding = {0, 0, 0, 1}, .name = "zp_deep"), "zp_deep");
        cnn_model_free(b);
        /* h * w * c itself past 2^63: the check must not overflow (1x1x2^30 input, 65535 a side;
           3x1x((2^31-1)/3) input, 65535x65535) */
        b = cnn_model_new();
        one = cnn_input(b, 1, 1, 1 << 30, "deep2");
        ERR_NODE(cnn_zero_padding2d(b, one, .padding = {65535, 65535, 65535, 65535}, .name = "zp_wrap"), "zp_wrap");
        cnn_model_free(b);
        b = cnn_model_new();
        one = cnn_input(b, 3, 1, INT_MAX / 3, "deep3");
        ERR_NODE(cnn_up_sampling2d(b, one, .size = {65535, 65535}, .name = "up_wrap"), "up_wrap");
        cnn_model_free(b);
    }

    test_begin("ZeroPadding2D / UpSampling2D refuse a flat input (Keras: rank 4 only)");
    {
        cnn_model *b = cnn_model_new();
        cnn_node *img = cnn_input(b, 4, 4, 2, "img");
        cnn_node *flat = cnn_flatten(b, img, .name = "flat");
        cnn_node *dense = cnn_dense(b, flat, .units = 3, .name = "dense");
        cnn_node *gap = cnn_global_avg_pool2d(b, img, .name = "gap");
        cnn_node *drop = cnn_dropout(b, dense, .rate = 0.5f, .name = "drop"); /* still flat */
        ERR_NODE(cnn_zero_padding2d(b, flat, .name = "zp_flat"), "is flat");
        ERR_NODE(cnn_zero_padding2d(b, gap, .name = "zp_gap"), "zp_gap");
        ERR_NODE(cnn_up_sampling2d(b, dense, .name = "up_dense"), "is flat");
        ERR_NODE(cnn_up_sampling2d(b, drop, .name = "up_drop"), "up_drop");
        cnn_model_free(b);
        b = cnn_model_new(); /* a 1x1 image (not flat) up-samples */
        cnn_node *pix = cnn_input(b, 1, 1, 3, "pix");
        CHECK(shape_is(cnn_up_sampling2d(b, pix, .size = {2, 3}), 2, 3, 3), "1x1 image: %s", err());
        cnn_model_free(b);
    }

    test_begin("ZeroPadding2D / UpSampling2D shapes");
    CHECK(shape_is(cnn_zero_padding2d(m, in, .padding = {1, 0, 2, 1}), 9, 11, 1), "{1,0,2,1} on 8x8: %s", err());
    /* one non-zero side: the others are 0, not the default 1 */
    CHECK(shape_is(cnn_zero_padding2d(m, in, .padding = {0, 0, 0, 2}), 8, 10, 1), "{0,0,0,2} on 8x8: %s", err());
    CHECK(shape_is(cnn_up_sampling2d(m, in, .size = {3, 5}), 24, 40, 1), "{3,5} on 8x8: %s", err());
    CHECK(shape_is(cnn_up_sampling2d(m, in, .size = {1, 1}), 8, 8, 1), "{1,1} on 8x8: %s", err());
    cnn_model_free(m);

    test_begin("ZeroPadding2D / UpSampling2D automatic names");
    m = cnn_model_new();
    in = cnn_input(m, 4, 4, 2, "in");
    ERR_NODE(cnn_zero_padding2d(m, in, .padding = {-1, 1, 1, 1}), "zero_padding2d");
    ERR_NODE(cnn_up_sampling2d(m, in, .size = {0, -1}), "up_sampling2d");
    cnn_node *z0 = cnn_zero_padding2d(m, in, .padding = {1, 1, 1, 1});
    cnn_node *u0 = cnn_up_sampling2d(m, in, .size = {2, 2});
    cnn_node *z1 = cnn_zero_padding2d_opt(m, z0, NULL);
    ERR_NODE(cnn_zero_padding2d(m, in, .padding = {70000, 0, 0, 0}), "zero_padding2d_2");
    cnn_node *u1 = cnn_up_sampling2d_opt(m, u0, NULL);
    cnn_node *z2 = cnn_zero_padding2d(m, in, .padding = {0, 1, 0, 1});
    const char *got[5] = {cnn_node_name(z0), cnn_node_name(z1), cnn_node_name(z2), cnn_node_name(u0), cnn_node_name(u1)};
    static const char *want[5] = {"zero_padding2d", "zero_padding2d_1", "zero_padding2d_2", "up_sampling2d", "up_sampling2d_1"};
    for (int i = 0; i < 5; i++)
        CHECK(got[i] && !strcmp(got[i], want[i]), "automatic name %d: '%s', want '%s' (%s)", i, got[i] ? got[i] : "(none)", want[i], err());
    ERR_NODE(cnn_zero_padding2d(m, in, .name = "up_sampling2d"), "already exists");
    ERR_NODE(cnn_up_sampling2d(m, in, .name = "zero_padding2d_1"), "already exists");
    cnn_model_free(m);
}

/* ------------------------------------------------------------------------ */
/* Model settings, weights                                                  */
/* ------------------------------------------------------------------------ */

/* A model file written by cnn.h 0.8 (tests/fixtures/make_model_v1.c): the format of
   version 1 has not moved since */
static void test_model_file_v1(void) {
    test_begin("a model file written by cnn.h 0.8 loads, predicts as then, and saves to the same bytes");
    const char *dir = getenv("CNN_FIXTURES");
    char path[600], preds[600], again[600];
    snprintf(path, sizeof path, "%s/model_v1.cnn", dir && *dir ? dir : "tests/fixtures");
    snprintf(preds, sizeof preds, "%s/model_v1_predictions.bin", dir && *dir ? dir : "tests/fixtures");
    snprintf(again, sizeof again, "%s/model_v1_again.cnn", tmp_root);
    cnn_model *m = cnn_load(path);
    CHECK(m != NULL, "cannot load %s: %s", path, cnn_last_error());
    if (!m) return;
    size_t n_want = 0, n_old = 0, n_new = 0;
    unsigned char *want = read_bytes(preds, &n_want), *old = read_bytes(path, &n_old), *now = NULL;
    float xs[8 * 12 * 12 * 3], out[8 * 5];
    unsigned seed = 5; /* make_model_v1.c's fill() */
    for (size_t i = 0; i < sizeof xs / sizeof xs[0]; i++) {
        seed = seed * 1664525u + 1013904223u;
        xs[i] = (float)(seed >> 8) / 16777216.0f;
    }
    CHECK(want && n_want == sizeof out, "%s: %zu bytes", preds, n_want);
    CHECK(cnn_predict(m, xs, 8, 8, out) == CNN_OK, "predict: %s", cnn_last_error());
    if (want && n_want == sizeof out) {
        double e = test_rel_err(out, (const float *)(const void *)want, 8 * 5);
        CHECK(e <= 1e-5, "predictions differ from cnn.h 0.8's by %.3g", e);
        printf("# model_v1.cnn: predictions within %.2g of cnn.h 0.8's\n", e);
    }
    const char *name = NULL;
    CHECK(cnn_model_num_class_names(m) == 5 && (name = cnn_model_class_name(m, 4)) && !strcmp(name, "eel"),
          "class names lost: %s", name ? name : "NULL");
    CHECK(cnn_save(m, again) == CNN_OK, "save: %s", cnn_last_error());
    now = read_bytes(again, &n_new);
    CHECK(old && now && n_old == n_new && !memcmp(old, now, n_old),
          "saved again, the file differs (%zu bytes, then %zu)", n_old, n_new);
    free(want);
    free(old);
    free(now);
    cnn_model_free(m);
}

static void test_model_settings(void) {
    cnn_model *m = small_model(0);
    cnn_model *e = cnn_model_new();
    test_begin("rescale / featurewise bad inputs");
    ERR_RC(cnn_model_set_rescale(NULL, 0.5f), "NULL");
    ERR_RC(cnn_model_set_rescale(m, 0.0f), "rescale");
    ERR_RC(cnn_model_set_rescale(m, NAN), "rescale");
    ERR_RC(cnn_model_set_rescale(m, INFINITY), "rescale");
    CHECK(cnn_model_rescale(m) == 1.0f, "failed calls must keep rescale 1, got %g", cnn_model_rescale(m));
    CHECK(cnn_model_rescale(NULL) == 0.0f, "rescale(NULL) must be 0");
    float mean[2] = {0.5f, 0.5f}, std[2] = {0.25f, 0.25f}, zero[2] = {0, 0}, nan2[2] = {NAN, 0};
    ERR_RC(cnn_model_set_featurewise(NULL, mean, std, 1), "NULL");
    ERR_RC(cnn_model_set_featurewise(m, mean, NULL, 1), "std");
    ERR_RC(cnn_model_set_featurewise(m, NULL, std, 1), "mean");
    ERR_RC(cnn_model_set_featurewise(m, mean, std, 2), "channels");
    ERR_RC(cnn_model_set_featurewise(m, mean, zero, 1), "std");
    ERR_RC(cnn_model_set_featurewise(m, nan2, std, 1), "mean");
    ERR_RC(cnn_model_set_featurewise(e, mean, std, 1), "input");
    CHECK(cnn_model_set_featurewise(m, NULL, NULL, 0) == 0, "clearing featurewise statistics must work");

    test_begin("class names bad inputs");
    const char *names[3] = {"x", "y", "z"}, *with_null[3] = {"x", NULL, "z"};
    ERR_RC(cnn_model_set_class_names(NULL, names, 3), "model");
    ERR_RC(cnn_model_set_class_names(m, NULL, 3), "names");
    ERR_RC(cnn_model_set_class_names(m, names, 0), "count");
    ERR_RC(cnn_model_set_class_names(m, names, -2), "count");
    clear_error();
    int rc = cnn_model_set_class_names(m, with_null, 3);
    CHECK(rc == CNN_ERR_ARG, "a NULL class name is a bad argument: got %d, want CNN_ERR_ARG (%d)", rc, CNN_ERR_ARG);
    CHECK(mentions("class name 1"), "error '%s' should name class name 1", err());
    CHECK(cnn_model_num_class_names(m) == 0, "failed calls must not set names");
    CHECK(cnn_model_class_name(NULL, 0) == NULL, "class_name(NULL)");
    CHECK(cnn_model_num_class_names(NULL) == 0, "num_class_names(NULL)");
    CHECK(cnn_model_set_class_names(m, names, 3) == 0, "set names");
    CHECK(cnn_model_class_name(m, -1) == NULL && cnn_model_class_name(m, 3) == NULL, "out-of-range class index must give NULL");
    CHECK(cnn_model_class_name(m, 2) && !strcmp(cnn_model_class_name(m, 2), "z"), "class 2");

    test_begin("weights by name bad inputs");
    size_t count = 99;
    ERR_FPTR(cnn_layer_weights(NULL, "conv", "kernel", &count), "model");
    CHECK(count == 0, "count must be 0 after a failure, got %zu", count);
    ERR_FPTR(cnn_layer_weights(m, NULL, "kernel", &count), "layer");
    ERR_FPTR(cnn_layer_weights(m, "conv", NULL, &count), "tensor");
    ERR_FPTR(cnn_layer_weights(m, "nope_layer", "kernel", &count), "nope_layer");
    ERR_FPTR(cnn_layer_weights(m, "conv", "nope_tensor", &count), "nope_tensor");
    ERR_FPTR(cnn_layer_weights(m, "conv", "nope_tensor", &count), "'conv'");
    ERR_FPTR(cnn_layer_weights(m, "conv", "gamma", &count), "gamma");
    ERR_FPTR(cnn_layer_weights(m, "bn", "kernel", &count), "kernel");
    ERR_FPTR(cnn_layer_weights(m, "pool", "kernel", &count), "pool");
    ERR_FPTR(cnn_layer_weights(e, "conv", "kernel", &count), "output");
    CHECK(cnn_layer_weights(m, "conv", "kernel", NULL) != NULL, "a NULL count pointer is allowed");
    cnn_model *nb = cnn_model_new();
    cnn_node *x = cnn_input(nb, 4, 4, 1, "in");
    x = cnn_flatten(nb, x, .name = "f");
    x = cnn_dense(nb, x, .units = 2, .no_bias = 1, .name = "nobias");
    cnn_model_set_output(nb, x);
    ERR_FPTR(cnn_layer_weights(nb, "nobias", "bias", &count), "bias");
    cnn_model_free(nb);
    size_t kc = 0;
    float *kernel = cnn_layer_weights(m, "conv", "kernel", &kc);
    CHECK(kernel && kc == 36, "conv kernel has 36 values, got %zu", kc);
    float buf[64], before[64];
    memcpy(before, kernel, 36 * sizeof(float));
    ERR_RC(cnn_get_weights(NULL, "conv", "kernel", buf, 36), "model");
    ERR_RC(cnn_get_weights(m, "nope_layer", "kernel", buf, 36), "nope_layer");
    ERR_RC(cnn_get_weights(m, "conv", "nope_tensor", buf, 36), "nope_tensor");
    ERR_RC(cnn_get_weights(m, "conv", "kernel", NULL, 36), "buffer");
    ERR_RC(cnn_get_weights(m, "conv", "kernel", buf, 35), "36");
    ERR_RC(cnn_get_weights(m, "conv", "kernel", buf, 35), "35");
    for (int i = 0; i < 36; i++) buf[i] = 0.5f;
    ERR_RC(cnn_set_weights(NULL, "conv", "kernel", buf, 36), "model");
    ERR_RC(cnn_set_weights(m, "nope_layer", "kernel", buf, 36), "nope_layer");
    ERR_RC(cnn_set_weights(m, "conv", "kernel", NULL, 36), "buffer");
    ERR_RC(cnn_set_weights(m, "conv", "kernel", buf, 37), "37");
    buf[5] = NAN;
    ERR_RC(cnn_set_weights(m, "conv", "kernel", buf, 36), "finite");
    buf[5] = INFINITY;
    ERR_RC(cnn_set_weights(m, "conv", "kernel", buf, 36), "finite");
    CHECK(!memcmp(before, kernel, 36 * sizeof(float)), "failed set_weights must not touch the kernel");
    float var[4] = {1, 1, -1, 1};
    ERR_RC(cnn_set_weights(m, "bn", "moving_variance", var, 4), "moving_variance");
    ERR_RC(cnn_set_weights(e, "bn", "gamma", var, 4), "output");

    test_begin("cnn_set_trainable / cnn_model_params / cnn_model_grads bad inputs");
    ERR_RC(cnn_set_trainable(NULL, "conv", 0), "model");
    ERR_RC(cnn_set_trainable(m, NULL, 0), "layer");
    ERR_RC(cnn_set_trainable(m, "nope_layer", 0), "nope_layer");
    count = 5;
    ERR_FPTR(cnn_model_params(NULL, &count), "NULL");
    CHECK(count == 0, "params(NULL) count %zu", count);
    count = 5;
    ERR_FPTR(cnn_model_params(e, &count), "output");
    CHECK(count == 0, "params(unbuilt) count %zu", count);
    ERR_FPTR(cnn_model_grads(NULL, &count), "NULL");
    ERR_FPTR(cnn_model_grads(e, NULL), "output");
    cnn_model_free(m);
    cnn_model_free(e);
}

/* ------------------------------------------------------------------------ */
/* Compile, train_on_batch, predict, evaluate                               */
/* ------------------------------------------------------------------------ */

static void test_compile_and_batches(void) {
    cnn_model *m = small_model(0);
    cnn_model *e = cnn_model_new();
    test_begin("cnn_compile bad inputs");
    ERR_RC(cnn_compile(NULL, .loss = CNN_MSE), "NULL");
    ERR_RC(cnn_compile(e, .loss = CNN_MSE), "output");
    ERR_RC(cnn_compile_opt(m, NULL), "options");
    ERR_RC(cnn_compile(m, .metrics = CNN_ACCURACY), "loss"); /* compile without loss */
    ERR_RC(cnn_compile(m, .loss = (cnn_loss)99), "loss");
    ERR_RC(cnn_compile(m, .loss = CNN_MSE, .metrics = 0x10), "metrics");
    ERR_RC(cnn_compile(m, .loss = CNN_MSE, .optimizer = {.type = (cnn_optimizer_type)7}), "optimizer");
    ERR_RC(cnn_compile(m, .loss = CNN_MSE, .optimizer = cnn_adam(.learning_rate = -0.1f)), "learning_rate");
    ERR_RC(cnn_compile(m, .loss = CNN_MSE, .optimizer = cnn_sgd(.learning_rate = NAN)), "learning_rate");
    ERR_RC(cnn_compile(m, .loss = CNN_MSE, .optimizer = cnn_adam(.beta_1 = 1.5f)), "beta");
    ERR_RC(cnn_compile(m, .loss = CNN_MSE, .optimizer = cnn_adam(.epsilon = -1e-7f)), "epsilon");
    ERR_RC(cnn_compile(m, .loss = CNN_MSE, .optimizer = cnn_sgd(.momentum = 1.0f)), "momentum");
    ERR_RC(cnn_compile(m, .loss = CNN_MSE, .optimizer = cnn_rmsprop(.rho = 2.0f)), "rho");

    test_begin("learning rate bad inputs");
    CHECK(cnn_get_learning_rate(NULL) <= 0.0f, "get_learning_rate(NULL) must not be a valid rate");
    CHECK(cnn_get_learning_rate(m) <= 0.0f, "get_learning_rate of an uncompiled model must not be a valid rate");
    ERR_RC(cnn_set_learning_rate(NULL, 0.1f), "NULL");
    ERR_RC(cnn_set_learning_rate(m, 0.1f), "compile");
    CHECK(cnn_compile(m, .loss = CNN_CATEGORICAL_CROSSENTROPY, .metrics = CNN_ACCURACY) == 0, "compile: %s", err());
    ERR_RC(cnn_set_learning_rate(m, 0.0f), "learning rate");
    ERR_RC(cnn_set_learning_rate(m, -1.0f), "learning rate");
    ERR_RC(cnn_set_learning_rate(m, NAN), "learning rate");
    ERR_RC(cnn_set_learning_rate(m, INFINITY), "learning rate");
    CHECK(fabsf(cnn_get_learning_rate(m) - 0.001f) < 1e-9f, "failed sets must keep lr 0.001, got %g", cnn_get_learning_rate(m));

    cnn_model *u = small_model(0); /* built, not compiled */
    float x[4 * 64], y1[4] = {0, 1, 2, 1}, yh[4 * 3] = {1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 1, 0}, out[4 * 3], dx[4 * 64];
    for (int i = 0; i < 4 * 64; i++) x[i] = (float)(i % 13) / 13.0f;
    test_begin("cnn_train_on_batch bad inputs");
    float loss = -1, acc = -1;
    ERR_RC(cnn_train_on_batch(NULL, x, y1, 4, 1, &loss, &acc), "NULL");
    ERR_RC(cnn_train_on_batch(u, x, y1, 4, 1, &loss, &acc), "compile");
    ERR_RC(cnn_train_on_batch(m, NULL, y1, 4, 1, &loss, &acc), "inputs");
    ERR_RC(cnn_train_on_batch(m, x, y1, 0, 1, &loss, &acc), "samples");
    ERR_RC(cnn_train_on_batch(m, x, y1, -1, 1, &loss, &acc), "samples");
    ERR_RC(cnn_train_on_batch(m, x, NULL, 4, 1, &loss, &acc), "targets");
    ERR_RC(cnn_train_on_batch(m, x, yh, 4, 2, &loss, &acc), "width 2");
    ERR_RC(cnn_train_on_batch(m, x, yh, 4, 0, &loss, &acc), "width 0");
    float ybad[4] = {0, 3, 1, 1};
    ERR_RC(cnn_train_on_batch(m, x, ybad, 4, 1, &loss, &acc), "label 3");
    ybad[1] = -1;
    ERR_RC(cnn_train_on_batch(m, x, ybad, 4, 1, &loss, &acc), "label -1");
    ybad[1] = 1.5f;
    ERR_RC(cnn_train_on_batch(m, x, ybad, 4, 1, &loss, &acc), "1.5");
    ybad[1] = NAN;
    ERR_RC(cnn_train_on_batch(m, x, ybad, 4, 1, &loss, &acc), "finite");
    CHECK(loss == -1 && acc == -1, "failed calls must not write loss/accuracy");
    cnn_model *sp = small_model(0);
    cnn_compile(sp, .loss = CNN_SPARSE_CATEGORICAL_CROSSENTROPY);
    ERR_RC(cnn_train_on_batch(sp, x, yh, 4, 3, &loss, &acc), "sparse");
    cnn_model_free(sp);
    CHECK(cnn_train_on_batch(m, x, y1, 4, 1, &loss, &acc) == 0 && isfinite(loss), "a good batch must train: %s", err());
    CHECK(cnn_train_on_batch(m, x, yh, 4, 3, NULL, NULL) == 0, "NULL loss/accuracy pointers are allowed: %s", err());

    test_begin("cnn_predict / cnn_predict_images / cnn_preprocess bad inputs");
    unsigned char img[4 * 64];
    memset(img, 100, sizeof img);
    ERR_RC(cnn_predict(NULL, x, 4, 0, out), "NULL");
    ERR_RC(cnn_predict(e, x, 4, 0, out), "output");
    ERR_RC(cnn_predict(m, NULL, 4, 0, out), "inputs");
    ERR_RC(cnn_predict(m, x, 0, 0, out), "samples");
    ERR_RC(cnn_predict(m, x, -3, 0, out), "samples");
    ERR_RC(cnn_predict(m, x, 4, 0, NULL), "output buffer");
    ERR_RC(cnn_predict(m, x, 4, -1, out), "batch_size");
    ERR_RC(cnn_predict_images(NULL, img, 4, 0, out), "NULL");
    ERR_RC(cnn_predict_images(e, img, 4, 0, out), "output");
    ERR_RC(cnn_predict_images(m, NULL, 4, 0, out), "inputs");
    ERR_RC(cnn_predict_images(m, img, 0, 0, out), "samples");
    ERR_RC(cnn_predict_images(m, img, 4, 0, NULL), "output buffer");
    ERR_RC(cnn_predict_images(m, img, 4, -2, out), "batch_size");
    ERR_RC(cnn_preprocess(NULL, img, 4, x), "NULL");
    ERR_RC(cnn_preprocess(e, img, 4, x), "output");
    ERR_RC(cnn_preprocess(m, NULL, 4, x), "inputs");
    ERR_RC(cnn_preprocess(m, img, -1, x), "samples");
    ERR_RC(cnn_preprocess(m, img, 4, NULL), "output buffer");
    CHECK(cnn_predict(m, x, 4, 3, out) == 0, "a good predict: %s", err());
    CHECK(cnn_predict(u, x, 4, 0, out) == 0, "predict needs no compile: %s", err());

    test_begin("cnn_input_gradient / cnn_gradient_check bad inputs");
    ERR_RC(cnn_input_gradient(NULL, x, y1, 4, 1, dx, NULL), "NULL");
    ERR_RC(cnn_input_gradient(u, x, y1, 4, 1, dx, NULL), "compile");
    ERR_RC(cnn_input_gradient(m, NULL, y1, 4, 1, dx, NULL), "inputs");
    ERR_RC(cnn_input_gradient(m, x, y1, 0, 1, dx, NULL), "samples");
    ERR_RC(cnn_input_gradient(m, x, NULL, 4, 1, dx, NULL), "targets");
    ERR_RC(cnn_input_gradient(m, x, y1, 4, 1, NULL, NULL), "dx");
    ERR_RC(cnn_input_gradient(m, x, ybad, 4, 1, dx, NULL), "finite");
    ERR_RC(cnn_gradient_check(NULL, x, y1, 4, 1, 5, 1e-3), "NULL");
    ERR_RC(cnn_gradient_check(u, x, y1, 4, 1, 5, 1e-3), "compile");
    ERR_RC(cnn_gradient_check(m, NULL, y1, 4, 1, 5, 1e-3), "inputs");
    ERR_RC(cnn_gradient_check(m, x, y1, -4, 1, 5, 1e-3), "samples");
    ERR_RC(cnn_gradient_check(m, x, NULL, 4, 1, 5, 1e-3), "targets");
    ERR_RC(cnn_gradient_check(m, x, y1, 4, 7, 5, 1e-3), "width 7");
    ERR_RC(cnn_gradient_check(m, x, y1, 4, 1, 0, 1e-3), "samples");
    ERR_RC(cnn_gradient_check(m, x, y1, 4, 1, 5, 0.0), "step");
    ERR_RC(cnn_gradient_check(m, x, y1, 4, 1, 5, NAN), "step");

    test_begin("cnn_evaluate bad inputs");
    cnn_eval_result r = {-1, -1};
    cnn_dataset *d = random_data(10, 8, 8, 1, 3);
    cnn_dataset *empty = cnn_dataset_new(0, 8, 8, 1, 3);
    cnn_dataset *wrong = random_data(10, 9, 8, 1, 3);
    cnn_dataset *wrong_c = random_data(10, 8, 8, 3, 3);
    cnn_dataset *badlab = random_data(10, 8, 8, 1, 3);
    badlab->labels[7] = 3;
    ERR_RC(cnn_evaluate(NULL, d, 0, &r), "NULL");
    ERR_RC(cnn_evaluate(u, d, 0, &r), "compile");
    ERR_RC(cnn_evaluate(m, NULL, 0, &r), "dataset");
    ERR_RC(cnn_evaluate(m, empty, 0, &r), "empty");
    ERR_RC(cnn_evaluate(m, wrong, 0, &r), "'in'");
    ERR_RC(cnn_evaluate(m, wrong, 0, &r), "9x8x1");
    ERR_RC(cnn_evaluate(m, wrong_c, 0, &r), "8x8x3");
    ERR_RC(cnn_evaluate(m, badlab, 0, &r), "label 3");
    ERR_RC(cnn_evaluate(m, d, 0, NULL), "result");
    ERR_RC(cnn_evaluate(m, d, -1, &r), "batch_size");
    CHECK(r.loss == -1 && r.accuracy == -1, "failed evaluations must not write the result");
    CHECK(cnn_evaluate(m, d, 4, &r) == 0 && isfinite(r.loss), "a good evaluate: %s", err());

    test_begin("cnn_evaluate_source bad inputs");
    test_src ts;
    cnn_batch_source src = make_source(&ts);
    ERR_RC(cnn_evaluate_source(NULL, &src, 4, 0, &r), "NULL");
    ERR_RC(cnn_evaluate_source(u, &src, 4, 0, &r), "compile");
    ERR_RC(cnn_evaluate_source(m, NULL, 4, 0, &r), "source");
    ERR_RC(cnn_evaluate_source(m, &src, 4, 0, NULL), "result");
    ERR_RC(cnn_evaluate_source(m, &src, -4, 0, &r), "batch_size");
    src.next = NULL;
    ERR_RC(cnn_evaluate_source(m, &src, 4, 0, &r), "next");
    src = make_source(&ts);
    src.reset = NULL;
    ERR_RC(cnn_evaluate_source(m, &src, 4, 0, &r), "reset");
    src = make_source(&ts);
    src.c = 2;
    ERR_RC(cnn_evaluate_source(m, &src, 4, 0, &r), "'in'");
    src = make_source(&ts);
    src.y_width = 2;
    ERR_RC(cnn_evaluate_source(m, &src, 4, 0, &r), "width 2");
    src = make_source(&ts);
    ts.extra = 1; /* claims one sample more than asked for */
    ERR_RC(cnn_evaluate_source(m, &src, 4, 0, &r), "5 samples");
    src = make_source(&ts);
    ts.fail = 1;
    ERR_RC(cnn_evaluate_source(m, &src, 4, 0, &r), "disk on fire");
    src = make_source(&ts);
    ts.empty = 1;
    ERR_RC(cnn_evaluate_source(m, &src, 4, 0, &r), "no samples");
    src = make_source(&ts);
    CHECK(cnn_evaluate_source(m, &src, 4, 0, &r) == 0 && isfinite(r.loss), "a good source: %s", err());

    cnn_dataset_free(d);
    cnn_dataset_free(empty);
    cnn_dataset_free(wrong);
    cnn_dataset_free(wrong_c);
    cnn_dataset_free(badlab);
    cnn_model_free(u);
    cnn_model_free(m);
    cnn_model_free(e);
}

/* ------------------------------------------------------------------------ */
/* fit, callbacks, history                                                  */
/* ------------------------------------------------------------------------ */

static void (*current_sigint(void))(int) {
    struct sigaction sa;
    sigaction(SIGINT, NULL, &sa);
    return sa.sa_handler;
}

static void test_fit_errors(void) {
    cnn_model *m = small_model(1);
    cnn_model *u = small_model(0);
    cnn_dataset *d = random_data(20, 8, 8, 1, 3);
    cnn_dataset *empty = cnn_dataset_new(0, 8, 8, 1, 3);
    cnn_dataset *wrong = random_data(20, 8, 7, 1, 3);
    cnn_dataset *badlab = random_data(20, 8, 8, 1, 3);
    badlab->labels[3] = 5;
    size_t np = 0;
    float *params = cnn_model_params(m, &np);
    float *before = (float *)malloc(np * sizeof(float));
    memcpy(before, params, np * sizeof(float));
    float cw_neg[3] = {1, -1, 1}, cw_nan[3] = {1, 1, NAN};

    struct sigaction mine;
    memset(&mine, 0, sizeof mine);
    mine.sa_handler = my_sigint;
    sigemptyset(&mine.sa_mask);
    struct sigaction saved;
    sigaction(SIGINT, &mine, &saved);

    test_begin("cnn_fit bad arguments");
    ERR_HIST(cnn_fit(NULL, d, .epochs = 1), "NULL");
    ERR_HIST(cnn_fit(u, d, .epochs = 1), "compile"); /* fit before compile */
    ERR_HIST(cnn_fit(m, NULL, .epochs = 1), "dataset");
    ERR_HIST(cnn_fit(m, empty, .epochs = 1), "empty");
    ERR_HIST(cnn_fit(m, wrong, .epochs = 1), "'in'"); /* images of the wrong size */
    ERR_HIST(cnn_fit(m, wrong, .epochs = 1), "8x7x1");
    ERR_HIST(cnn_fit(m, badlab, .epochs = 1), "label 5");
    ERR_HIST(cnn_fit_opt(m, d, NULL), "options");
    ERR_HIST(cnn_fit(m, d, .epochs = -1), "epochs");
    ERR_HIST(cnn_fit(m, d, .batch_size = -1), "batch_size");
    ERR_HIST(cnn_fit(m, d, .verbose = 3), "verbose");
    ERR_HIST(cnn_fit(m, d, .verbose = -1), "verbose");
    ERR_HIST(cnn_fit(m, d, .validation_split = 1.5f), "validation_split");
    ERR_HIST(cnn_fit(m, d, .validation_split = -0.1f), "validation_split");
    ERR_HIST(cnn_fit(m, d, .validation_split = NAN), "validation_split");
    ERR_HIST(cnn_fit(m, d, .validation_split = 1.0f), "validation_split");
    {   /* one image split in two leaves an empty training part */
        cnn_dataset *one = cnn_dataset_subset(d, 0, 1);
        ERR_HIST(cnn_fit(m, one, .validation_split = 0.5f), "validation_split");
        cnn_dataset_free(one);
    }
    ERR_HIST(cnn_fit(m, d, .validation_split = 0.2f, .validation_data = d), "validation_split");
    ERR_HIST(cnn_fit(m, d, .validation_data = wrong), "validation_data");
    ERR_HIST(cnn_fit(m, d, .validation_data = badlab), "label 5");
    ERR_HIST(cnn_fit(m, d, .class_weight = cw_neg), "class_weight");
    ERR_HIST(cnn_fit(m, d, .class_weight = cw_nan), "class_weight[2]");
    ERR_HIST(cnn_fit(m, d, .epochs = 2, .initial_epoch = 2), "initial_epoch");
    ERR_HIST(cnn_fit(m, d, .initial_epoch = -1), "initial_epoch");
    ERR_HIST(cnn_fit(m, d, .steps_per_epoch = -1), "steps_per_epoch");
    ERR_HIST(cnn_fit(m, d, .validation_steps = -1), "validation_steps");
    CHECK(!memcmp(before, params, np * sizeof(float)), "rejected fits must not touch the weights");
    CHECK(current_sigint() == my_sigint, "rejected fits must leave the SIGINT handler alone");

    test_begin("cnn_fit_source bad arguments");
    test_src ts;
    cnn_batch_source src = make_source(&ts);
    ERR_HIST(cnn_fit_source(NULL, &src, .epochs = 1), "NULL");
    ERR_HIST(cnn_fit_source(u, &src, .epochs = 1), "compile");
    ERR_HIST(cnn_fit_source(m, NULL, .epochs = 1), "source");
    ERR_HIST(cnn_fit_source_opt(m, &src, NULL), "options");
    ERR_HIST(cnn_fit_source(m, &src, .epochs = -1), "epochs");
    ERR_HIST(cnn_fit_source(m, &src, .validation_split = 0.5f), "validation_split");
    src.next = NULL;
    ERR_HIST(cnn_fit_source(m, &src, .epochs = 1), "next");
    src = make_source(&ts);
    src.h = 4;
    ERR_HIST(cnn_fit_source(m, &src, .epochs = 1), "'in'"); /* a source of the wrong shape */
    src = make_source(&ts);
    src.y_width = 4;
    ERR_HIST(cnn_fit_source(m, &src, .epochs = 1), "width 4");
    src = make_source(&ts);
    src.samples = 0;
    ERR_HIST(cnn_fit_source(m, &src, .epochs = 1), "steps_per_epoch");
    src = make_source(&ts);
    ERR_HIST(cnn_fit_source(m, &src, .epochs = 1, .validation_source = &src, .validation_data = d), "validation");
    test_src vts;
    cnn_batch_source vsrc = make_source(&vts);
    vsrc.w = 3;
    ERR_HIST(cnn_fit_source(m, &src, .epochs = 1, .validation_source = &vsrc), "validation_source");
    ERR_HIST(cnn_fit(m, d, .epochs = 1, .validation_source = &vsrc), "validation_source");
    src = make_source(&ts);
    ts.extra = 2;
    ERR_HIST(cnn_fit_source(m, &src, .epochs = 1, .batch_size = 4), "6 samples");
    src = make_source(&ts);
    ts.fail = 1;
    ERR_HIST(cnn_fit_source(m, &src, .epochs = 1, .batch_size = 4), "disk on fire");
    src = make_source(&ts);
    ts.empty = 1;
    ERR_HIST(cnn_fit_source(m, &src, .epochs = 1, .batch_size = 4), "no samples");
    src = make_source(&ts);
    ts.empty = 1;
    ERR_HIST(cnn_fit_source(m, &src, .epochs = 1, .batch_size = 4, .steps_per_epoch = 3), "no samples");
    CHECK(current_sigint() == my_sigint, "failed fits must restore the SIGINT handler");

    test_begin("callback constructors bad options");
    ERR_CB(cnn_model_checkpoint_opt(NULL), "filepath");
    ERR_CB(cnn_model_checkpoint(.monitor = "loss"), "filepath"); /* missing filepath */
    ERR_CB(cnn_model_checkpoint(.filepath = ""), "filepath");
    ERR_CB(cnn_model_checkpoint(.filepath = "x.cnn", .monitor = "a_monitor_name_that_is_far_too_long_to_fit"), "monitor");
    ERR_CB(cnn_model_checkpoint(.filepath = "x.cnn", .mode = (cnn_monitor_mode)9), "mode");
    ERR_CB(cnn_early_stopping(.patience = -1), "patience");
    ERR_CB(cnn_early_stopping(.min_delta = -0.5f), "min_delta");
    ERR_CB(cnn_early_stopping(.min_delta = NAN), "min_delta");
    ERR_CB(cnn_early_stopping(.mode = (cnn_monitor_mode)-1), "mode");
    ERR_CB(cnn_reduce_lr_on_plateau(.factor = 1.5f), "factor"); /* bad factor */
    ERR_CB(cnn_reduce_lr_on_plateau(.factor = 1.0f), "factor");
    ERR_CB(cnn_reduce_lr_on_plateau(.factor = -0.5f), "factor");
    ERR_CB(cnn_reduce_lr_on_plateau(.factor = NAN), "factor");
    ERR_CB(cnn_reduce_lr_on_plateau(.patience = -1), "patience");
    ERR_CB(cnn_reduce_lr_on_plateau(.cooldown = -1), "cooldown");
    ERR_CB(cnn_reduce_lr_on_plateau(.min_lr = -1e-3f), "min_lr");
    ERR_CB(cnn_reduce_lr_on_plateau(.min_delta = -1.0f), "min_delta");
    ERR_CB(cnn_reduce_lr_on_plateau(.mode = (cnn_monitor_mode)5), "mode");
    ERR_CB(cnn_csv_logger_opt(NULL), "filename");
    ERR_CB(cnn_csv_logger(.separator = ';'), "filename");
    ERR_CB(cnn_csv_logger(.filename = ""), "filename");
    ERR_CB(cnn_lr_scheduler_opt(NULL), "schedule");
    ERR_CB(cnn_lr_scheduler(.verbose = 1), "schedule");
    ERR_CB(cnn_lambda_callback_opt(NULL), "hook");
    ERR_CB(cnn_lambda_callback(.user = d), "hook");
    cnn_callback_free(NULL); /* must be a no-op */
    cnn_callback *defaults[4] = {cnn_early_stopping_opt(NULL), cnn_reduce_lr_on_plateau_opt(NULL), cnn_terminate_on_nan(),
                                 cnn_lambda_callback(.on_epoch_end = lambda_stop)};
    CHECK(defaults[0] && defaults[1] && defaults[2] && defaults[3], "default callbacks must build: %s", err());
    for (int i = 0; i < 4; i++) cnn_callback_free(defaults[i]);

    test_begin("callbacks that fail during fit");
    char path[512], tmpl[600];
    FILE *devnull = fopen("/dev/null", "w");
    tmp_path(path, sizeof path, "ck");
    mkdir(path, 0700);
    snprintf(tmpl, sizeof tmpl, "%s/w.{epoch:02d}-{nope}.cnn", path);
    cnn_callback *ck = cnn_model_checkpoint(.filepath = tmpl);
    cnn_callback *cbs[2] = {ck, NULL};
    ERR_HIST(cnn_fit(m, d, .epochs = 2, .callbacks = cbs, .out = devnull), "nope"); /* a bad template field */
    cnn_callback_free(ck);
    snprintf(tmpl, sizeof tmpl, "%s/w.{epoch:02d.cnn", path);
    cbs[0] = ck = cnn_model_checkpoint(.filepath = tmpl);
    ERR_HIST(cnn_fit(m, d, .epochs = 1, .callbacks = cbs, .out = devnull), "'{'");
    cnn_callback_free(ck);
    snprintf(tmpl, sizeof tmpl, "%s/w.{epoch:02x}.cnn", path);
    cbs[0] = ck = cnn_model_checkpoint(.filepath = tmpl);
    ERR_HIST(cnn_fit(m, d, .epochs = 1, .callbacks = cbs, .out = devnull), "epoch");
    cnn_callback_free(ck);
    snprintf(tmpl, sizeof tmpl, "%s/missing_dir/w.{epoch:02d}.cnn", path);
    cbs[0] = ck = cnn_model_checkpoint(.filepath = tmpl);
    ERR_HIST(cnn_fit(m, d, .epochs = 1, .callbacks = cbs, .out = devnull), "missing_dir");
    cnn_callback_free(ck);
    CHECK(count_entries(path, "") == 0, "failed checkpoints must leave nothing behind (%d entries)", count_entries(path, ""));
    snprintf(tmpl, sizeof tmpl, "%s/missing_dir/log.csv", path);
    cbs[0] = ck = cnn_csv_logger(.filename = tmpl);
    ERR_HIST(cnn_fit(m, d, .epochs = 1, .callbacks = cbs, .out = devnull), "log.csv");
    cnn_callback_free(ck);
    cbs[0] = ck = cnn_lr_scheduler(.schedule = sched_bad);
    ERR_HIST(cnn_fit(m, d, .epochs = 1, .callbacks = cbs, .out = devnull), "LearningRateScheduler");
    cnn_callback_free(ck);
    CHECK(current_sigint() == my_sigint, "failed fits must restore the SIGINT handler");
    cbs[0] = ck = cnn_lr_scheduler(.schedule = sched_id);
    cnn_history *h = cnn_fit(m, d, .epochs = 1, .callbacks = cbs, .out = devnull);
    CHECK(h != NULL, "a good fit after all those errors: %s", err());
    cnn_callback_free(ck);

    test_begin("cnn_history_get / cnn_history_free bad inputs");
    CHECK(cnn_history_get(NULL, "loss") == NULL, "history_get(NULL)");
    CHECK(cnn_history_get(h, NULL) == NULL, "history_get(h, NULL)");
    CHECK(cnn_history_get(h, "no_such_metric") == NULL, "unknown key");
    CHECK(h && cnn_history_get(h, "loss") != NULL, "loss key");
    cnn_history_free(h);
    cnn_history_free(NULL); /* must be a no-op */

    sigaction(SIGINT, &saved, NULL);
    fclose(devnull);
    free(before);
    cnn_dataset_free(d);
    cnn_dataset_free(empty);
    cnn_dataset_free(wrong);
    cnn_dataset_free(badlab);
    cnn_model_free(u);
    cnn_model_free(m);
}

/* ------------------------------------------------------------------------ */
/* Save / load                                                              */
/* ------------------------------------------------------------------------ */

/* the trained small model with class names, rescale and featurewise statistics */
static cnn_model *trained_model(void) {
    cnn_model *m = small_model(1);
    cnn_dataset *d = random_data(24, 8, 8, 1, 3);
    const char *names[3] = {"zero", "one", "two"};
    cnn_dataset_set_class_names(d, names, 3);
    cnn_model_set_rescale(m, 1.0f / 255);
    float mean = 0.4f, std = 0.3f;
    cnn_model_set_featurewise(m, &mean, &std, 1);
    cnn_history *h = cnn_fit(m, d, .epochs = 2, .batch_size = 8);
    cnn_history_free(h);
    cnn_dataset_free(d);
    return m;
}

static int same_model(cnn_model *a, cnn_model *b, const char **why) {
    size_t na = 0, nb = 0;
    float *pa = cnn_model_params(a, &na), *pb = cnn_model_params(b, &nb);
    if (!pa || !pb || na != nb || memcmp(pa, pb, na * sizeof(float))) { *why = "parameters"; return 0; }
    const char *state[2] = {"moving_mean", "moving_variance"};
    for (int i = 0; i < 2; i++) {
        size_t ca = 0, cb = 0;
        float *sa = cnn_layer_weights(a, "bn", state[i], &ca), *sb = cnn_layer_weights(b, "bn", state[i], &cb);
        if (!sa || !sb || ca != cb || memcmp(sa, sb, ca * sizeof(float))) { *why = state[i]; return 0; }
    }
    if (cnn_model_rescale(a) != cnn_model_rescale(b)) { *why = "rescale"; return 0; }
    if (cnn_model_num_class_names(a) != cnn_model_num_class_names(b)) { *why = "class name count"; return 0; }
    for (int k = 0; k < cnn_model_num_class_names(a); k++)
        if (strcmp(cnn_model_class_name(a, k), cnn_model_class_name(b, k))) { *why = "class names"; return 0; }
    if (cnn_get_learning_rate(a) != cnn_get_learning_rate(b)) { *why = "learning rate"; return 0; }
    float xa[6 * 64], xb[6 * 64], oa[6 * 3], ob[6 * 3];
    unsigned char img[6 * 64];
    for (int i = 0; i < 6 * 64; i++) img[i] = (unsigned char)(i * 37);
    if (cnn_preprocess(a, img, 6, xa) || cnn_preprocess(b, img, 6, xb) || memcmp(xa, xb, sizeof xa)) { *why = "preprocessing"; return 0; }
    if (cnn_predict(a, xa, 6, 0, oa) || cnn_predict(b, xb, 6, 0, ob) || memcmp(oa, ob, sizeof oa)) { *why = "predictions"; return 0; }
    return 1;
}

/* layer "conv" in a saved small model: offset of its kernel height in the payload */
static size_t conv_kh_offset(const unsigned char *file, size_t len) {
    const unsigned char *p = file + 20;
    size_t pos = 12; /* n_nodes, input, output */
    uint32_t n = get_le32(p);
    for (uint32_t i = 0; i < n && pos + 8 < len; i++) {
        uint32_t nl = get_le32(p + pos + 4);
        const unsigned char *name = p + pos + 8;
        size_t after_name = pos + 8 + nl;
        uint32_t n_in = get_le32(p + after_name);
        size_t ints = after_name + 4 + 4 * (size_t)n_in;
        if (nl == 4 && !memcmp(name, "conv", 4)) return 20 + ints + 4 * 4; /* ints: h w c units kh ... */
        pos = ints + 12 * 4 + 6 * 4;
    }
    return 0;
}

static void test_save_load(void) {
    char path[512], p2[512], dir[512];
    cnn_model *m = trained_model();
    cnn_model *e = cnn_model_new();
    tmp_path(dir, sizeof dir, "models");
    mkdir(dir, 0700);
    tmp_path(path, sizeof path, "models/m.cnn");

    test_begin("cnn_save bad inputs");
    ERR_RC(cnn_save(NULL, path), "NULL");
    ERR_RC(cnn_save(e, path), "output");
    ERR_RC(cnn_save(m, NULL), "path");
    ERR_RC(cnn_save(m, ""), "path");
    tmp_path(p2, sizeof p2, "models/missing_dir/m.cnn");
    ERR_RC(cnn_save(m, p2), "missing_dir"); /* a path in a missing directory */
    ERR_RC(cnn_save(m, dir), "models"); /* the target is a directory */
    CHECK(count_entries(dir, "") == 0, "failed saves must leave no file behind (%d entries)", count_entries(dir, ""));
    char parent[512];
    tmp_path(parent, sizeof parent, "");
    CHECK(count_entries(parent, ".tmp") == 0, "failed saves must leave no temporary file");

    test_begin("save then load gives the same model");
    CHECK(cnn_save(m, path) == 0, "save: %s", err());
    CHECK(count_entries(dir, ".tmp") == 0, "a successful save must leave no temporary file");
    cnn_model *l = cnn_load(path);
    CHECK(l != NULL, "load: %s", err());
    const char *why = "";
    if (l) {
        CHECK(same_model(m, l, &why), "loaded model differs in %s", why);
        CHECK(cnn_model_num_class_names(l) == 3 && !strcmp(cnn_model_class_name(l, 1), "one"), "class names");
        CHECK(cnn_model_rescale(l) == 1.0f / 255, "rescale %g", cnn_model_rescale(l));
        float x[64], y = 1, loss = 0;
        for (int i = 0; i < 64; i++) x[i] = (float)i / 64;
        CHECK(cnn_train_on_batch(l, x, &y, 1, 1, &loss, NULL) == 0, "a loaded model keeps training: %s", err());
        cnn_model_free(l);
    }
    cnn_model *u = small_model(0); /* an uncompiled model saves too */
    tmp_path(p2, sizeof p2, "models/u.cnn");
    CHECK(cnn_save(u, p2) == 0, "save uncompiled: %s", err());
    l = cnn_load(p2);
    CHECK(l != NULL && cnn_get_learning_rate(l) <= 0.0f, "uncompiled model round trip: %s", err());
    cnn_model_free(l);
    cnn_model_free(u);
    remove(p2);

    size_t len = 0;
    unsigned char *file = read_bytes(path, &len);
    unsigned char *copy = (unsigned char *)malloc(len + 16);
    test_begin("cnn_load refuses missing, empty and foreign files");
    ERR_MODEL(cnn_load(NULL), "path");
    tmp_path(p2, sizeof p2, "models/does_not_exist.cnn");
    ERR_MODEL(cnn_load(p2), "does_not_exist.cnn");
    ERR_MODEL(cnn_load(dir), "models");
    tmp_path(p2, sizeof p2, "models/bad.cnn");
    write_bytes(p2, file, 0);
    ERR_MODEL(cnn_load(p2), "bad.cnn"); /* an empty file */
    ERR_MODEL(cnn_load(p2), "empty");
    memcpy(copy, file, len);
    memcpy(copy, "KERASMOD", 8);
    write_bytes(p2, copy, len);
    ERR_MODEL(cnn_load(p2), "magic"); /* bad magic */
    write_bytes(p2, "hello, world\n", 13);
    ERR_MODEL(cnn_load(p2), "bad.cnn");
    ERR_MODEL(cnn_load_memory(NULL, 10), "NULL");
    ERR_MODEL(cnn_load_memory(file, 0), "empty");

    test_begin("cnn_load refuses truncated files");
    size_t cuts[] = {1, 7, 8, 11, 12, 19, 20, 23, 24, 40, len / 2, len - 5, len - 4, len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        write_bytes(p2, file, cuts[i]);
        clear_error();
        cnn_model *t = cnn_load(p2);
        CHECK(t == NULL, "a copy cut at %zu of %zu bytes loaded", cuts[i], len);
        CHECK(mentions("bad.cnn"), "cut at %zu: error '%s' does not name the file", cuts[i], err());
        cnn_model_free(t);
        clear_error();
        t = cnn_load_memory(file, cuts[i]);
        CHECK(t == NULL && mentions(NULL), "load_memory of %zu bytes", cuts[i]);
        cnn_model_free(t);
    }
    memcpy(copy, file, len);
    copy[len] = 0;
    write_bytes(p2, copy, len + 1);
    ERR_MODEL(cnn_load(p2), "trailing"); /* one byte too many */

    test_begin("cnn_load refuses a flipped byte (checksum)");
    size_t flips[] = {20, 21, len / 3, len / 2, len - 5};
    for (size_t i = 0; i < sizeof flips / sizeof flips[0]; i++) {
        memcpy(copy, file, len);
        copy[flips[i]] ^= 0x10;
        write_bytes(p2, copy, len);
        ERR_MODEL(cnn_load(p2), "checksum");
    }
    memcpy(copy, file, len);
    copy[len - 1] ^= 0x01; /* the stored checksum itself */
    write_bytes(p2, copy, len);
    ERR_MODEL(cnn_load(p2), "checksum");

    test_begin("cnn_load refuses another format version");
    memcpy(copy, file, len);
    put_le32(copy + 8, 99);
    write_bytes(p2, copy, len);
    ERR_MODEL(cnn_load(p2), "version");
    ERR_MODEL(cnn_load(p2), "99");
    put_le32(copy + 8, 0);
    write_bytes(p2, copy, len);
    ERR_MODEL(cnn_load(p2), "version");

    test_begin("cnn_load refuses inconsistent contents and keeps the cause");
    size_t off = conv_kh_offset(file, len);
    CHECK(off > 20 && off + 4 <= len - 4 && get_le32(file + off) == 3, "could not find conv's kernel height in the file");
    if (off > 20 && off + 4 <= len - 4) {
        memcpy(copy, file, len);
        put_le32(copy + off, 12); /* a 12x3 kernel on an 8x8 input, with a valid checksum */
        put_le32(copy + len - 4, crc32_of(copy + 20, len - 24));
        write_bytes(p2, copy, len);
        ERR_MODEL(cnn_load(p2), "bad.cnn");
        ERR_MODEL(cnn_load(p2), "conv");
        ERR_MODEL(cnn_load(p2), "does not fit");
        ERR_MODEL(cnn_load(p2), "12x3");
        const char *first = strstr(err(), "layer 'conv'");
        CHECK(!first || !strstr(first + 1, "layer 'conv'"), "the cause is garbled (an error message formatted into itself): '%s'", err());
    }
    {   /* the payload length says more than the file has */
        memcpy(copy, file, len);
        put_le32(copy + 12, get_le32(copy + 12) + 1);
        write_bytes(p2, copy, len);
        ERR_MODEL(cnn_load(p2), "truncated");
    }
    remove(p2);

    test_begin("cnn_save replaces an existing file atomically");
    cnn_model *m2 = small_model(1);
    cnn_model_set_seed(m2, 77);
    CHECK(cnn_save(m2, path) == 0, "save over an existing file: %s", err());
    l = cnn_load(path);
    CHECK(l && same_model(m2, l, &why), "the new model must replace the old file (%s)", l ? why : err());
    cnn_model_free(l);
    CHECK(count_entries(dir, ".tmp") == 0, "no temporary files after a successful save");
    CHECK(count_entries(dir, "") == 1, "only the model file must be in the folder (%d entries)", count_entries(dir, ""));

    test_begin("cnn_save removes what a writer killed mid-save left, and only that");
    {
        pid_t dead = fork(); /* a process that has ended: its pid names a leftover */
        if (dead == 0) _exit(0);
        CHECK(dead > 0 && waitpid(dead, NULL, 0) == dead, "fork/waitpid failed");
        char left[600], live[600], other[600];
        snprintf(left, sizeof left, "%s.tmp%ld", path, (long)dead);
        snprintf(live, sizeof live, "%s.tmp%ld", path, (long)getppid()); /* a writer still running */
        snprintf(other, sizeof other, "%s.tmpnotes", path);              /* not a pid: not ours */
        write_bytes(left, "partial", 7);
        write_bytes(live, "partial", 7);
        write_bytes(other, "notes", 5);
        CHECK(cnn_save(m2, path) == 0, "save beside leftovers: %s", err());
        CHECK(access(left, F_OK) != 0, "the dead writer's '%s' is still there", left);
        CHECK(access(live, F_OK) == 0, "a live writer's '%s' was removed", live);
        CHECK(access(other, F_OK) == 0, "'%s' (no pid) was removed", other);
        l = cnn_load(path);
        CHECK(l && same_model(m2, l, &why), "the model after the clean-up (%s)", l ? why : err());
        cnn_model_free(l);
        remove(live);
        remove(other);
        remove(left);
    }
    /* a save that fails while writing (file size limit, works even as root) must keep the old file */
    struct rlimit old_lim, lim;
    void (*old_xfsz)(int) = signal(SIGXFSZ, SIG_IGN);
    if (getrlimit(RLIMIT_FSIZE, &old_lim) == 0) {
        lim = old_lim;
        lim.rlim_cur = 100;
        if (setrlimit(RLIMIT_FSIZE, &lim) == 0) {
            clear_error();
            int rc = cnn_save(m, path);
            setrlimit(RLIMIT_FSIZE, &old_lim);
            CHECK(rc < 0 && mentions("m.cnn"), "a save that cannot be written must fail naming the file: rc %d, '%s'", rc, err());
            l = cnn_load(path);
            CHECK(l && same_model(m2, l, &why), "a failed save must leave the old file intact (%s)", l ? why : err());
            cnn_model_free(l);
            CHECK(count_entries(dir, ".tmp") == 0, "a failed save must remove its temporary file");
        } else {
            printf("# skipped the write-failure check: setrlimit refused\n");
        }
    }
    signal(SIGXFSZ, old_xfsz);
    if (geteuid() != 0) { /* a read-only folder stops the temporary file; root ignores the mode */
        chmod(dir, 0500);
        clear_error();
        int rc = cnn_save(m, path);
        chmod(dir, 0700);
        CHECK(rc < 0 && mentions("m.cnn"), "a save into a read-only folder must fail: rc %d, '%s'", rc, err());
        l = cnn_load(path);
        CHECK(l && same_model(m2, l, &why), "a failed save must leave the old file intact (%s)", l ? why : err());
        cnn_model_free(l);
    } else {
        printf("# running as root: skipped the read-only folder check\n");
    }
    CHECK(count_entries(dir, ".tmp") == 0, "no temporary files left");
    cnn_model_free(m2);

    free(copy);
    free(file);
    cnn_model_free(m);
    cnn_model_free(e);
}

/* The offset in a saved model file of the 12 integers of layer `name`'s record
   (h w c units kh kw ...), 0 when not found. Payload (after the 20-byte header):
   n_nodes, input, output, then per layer: type, name length, name, n_inputs,
   inputs, 12 integers, 6 floats. */
static size_t record_offset(const unsigned char *file, size_t len, const char *name) {
    const unsigned char *p = file + 20;
    size_t pos = 12;
    uint32_t n = len > 32 ? get_le32(p) : 0;
    for (uint32_t i = 0; i < n && 20 + pos + 8 < len; i++) {
        uint32_t nl = get_le32(p + pos + 4);
        size_t after_name = pos + 8 + nl;
        if (20 + after_name + 4 > len) return 0;
        uint32_t n_in = get_le32(p + after_name);
        size_t ints = after_name + 4 + 4 * (size_t)n_in;
        if (nl == strlen(name) && !memcmp(p + pos + 8, name, nl)) return 20 + ints;
        pos = ints + 12 * 4 + 6 * 4;
    }
    return 0;
}

static const cnn_node *node_named(const cnn_model *m, const char *name) {
    for (int i = 0; i < m->n_nodes; i++)
        if (!strcmp(m->nodes[i]->name, name)) return m->nodes[i];
    return NULL;
}

/* conv -> ZeroPadding2D {1,0,2,1} -> UpSampling2D {2,3} -> ZeroPadding2D (default)
   -> UpSampling2D (default) -> strided conv -> global average -> Dense softmax,
   trained two steps, saved and loaded back */
/* Sizes that would overflow an int inside a sample, through the API: refused
   with the layer named, before anything is allocated */
static void test_size_limits(void) {
    test_begin("layers refuse windows, channels and depths that would overflow");
    cnn_model *m = cnn_model_new();
    cnn_node *wide = cnn_input(m, 1, 1, 1100000000, "wide"); /* 1.1e9 values: allowed, never built */
    CHECK(wide != NULL, "a 1x1x1100000000 input: %s", err());
    cnn_node *both[2] = {wide, wide};
    ERR_NODE(cnn_concatenate(m, both, 2, .name = "cat"), "cat");
    ERR_NODE(cnn_concatenate(m, both, 2, .name = "cat"), "channels");
    cnn_model_free(m);
    m = cnn_model_new();
    cnn_node *deep = cnn_input(m, 3, 3, 300000000 / 9 * 9 / 9, "deep"); /* 33,333,333 channels */
    CHECK(deep != NULL, "a 3x3x33333333 input: %s", err());
    ERR_NODE(cnn_conv2d(m, deep, .filters = 1, .kernel_size = {9, 9}, .padding = CNN_SAME, .name = "c9"),
             "too deep");
    cnn_model_free(m);
    m = cnn_model_new();
    cnn_node *x = cnn_input(m, 40000, 50000, 1, "x");
    CHECK(x != NULL, "a 40000x50000x1 input: %s", err());
    ERR_NODE(cnn_conv2d(m, x, .filters = 4, .kernel_size = {3, 3}, .strides = {2147483647, 1},
                        .padding = CNN_SAME, .name = "far"), "at most 65536");
    ERR_NODE(cnn_conv2d(m, x, .filters = 4, .kernel_size = {100000, 3}, .padding = CNN_SAME, .name = "huge"),
             "huge");
    ERR_NODE(cnn_avg_pool2d(m, x, .pool_size = {1, 70000}, .padding = CNN_SAME, .name = "avg"), "at most 65536");
    /* 40000 x 50000 x 2 values: more than an int counts */
    ERR_NODE(cnn_conv2d(m, x, .filters = 2, .kernel_size = {1, 1}, .name = "many"), "too many");
    cnn_node *ok = cnn_conv2d(m, x, .filters = 1, .kernel_size = {65536, 3}, .strides = {65536, 1},
                              .padding = CNN_SAME, .name = "edge");
    CHECK(ok && ok->h == 1 && ok->w == 50000, "a 65536-row kernel, 'same': %s", ok ? "wrong shape" : err());
    cnn_model_free(m);
}

/* A model file that passes its checksum is still untrusted: layers that imply
   more weights than the file holds are refused before any of them is allocated */
/* A model file describes its layers' outputs too: a few hundred bytes can
   describe an UpSampling2D of gigabytes, which the first predict would allocate.
   cnn_load holds one sample's outputs to the memory limit. */
static void test_load_activation_limit(void) {
    test_begin("cnn_load refuses layers whose outputs for one sample exceed the memory limit, naming the layer");
    char path[512];
    tmp_path(path, sizeof path, "upsample_big.cnn");
    cnn_model *m = cnn_model_new();
    cnn_node *x = cnn_input(m, 1, 1, 1, "in");
    x = cnn_up_sampling2d(m, x, .size = {600, 600}, .name = "huge_up");
    x = cnn_dense(m, cnn_global_avg_pool2d(m, x), .units = 2, .activation = CNN_SOFTMAX);
    CHECK(cnn_model_set_output(m, x) == CNN_OK && cnn_save(m, path) == CNN_OK, "build and save: %s", err());
    cnn_model_free(m);
    const unsigned long long limit = cnn_memory_limit();
    cnn_set_memory_limit(1000000); /* 600x600 floats are 1.44 MB */
    clear_error();
    cnn_model *back = cnn_load(path);
    CHECK(back == NULL && mentions("huge_up") && mentions("memory limit"), "loaded under a 1 MB limit: %s",
          back ? "loaded" : err());
    cnn_model_free(back);
    cnn_set_memory_limit(limit);
    back = cnn_load(path);
    CHECK(back != NULL, "does not load under the default limit: %s", err());
    cnn_model_free(back);
    remove(path);
}

static void test_load_implied_size(void) {
    test_begin("cnn_load refuses layers that imply more weights than the file holds, allocating little");
    char path[512], p2[512];
    tmp_path(path, sizeof path, "wide.cnn");
    tmp_path(p2, sizeof p2, "wide_bad.cnn");
    cnn_model *m = cnn_model_new();
    cnn_node *x = cnn_input(m, 1, 1, 64, "in");
    x = cnn_dense(m, x, .units = 4, .activation = CNN_SOFTMAX, .name = "wide");
    CHECK(cnn_model_set_output(m, x) == CNN_OK && cnn_save(m, path) == CNN_OK, "save: %s", err());
    cnn_model_free(m);
    size_t len = 0;
    unsigned char *file = read_bytes(path, &len);
    const size_t at = file ? record_offset(file, len, "wide") : 0;
    CHECK(at && at + 16 < len && get_le32(file + at + 8) == 4 && get_le32(file + at + 12) == 4,
          "could not find the record of 'wide' in the file");
    if (at && at + 16 < len) {
        static const uint32_t units[] = {67108864, 2147483647, 5}; /* 17 GB, 550 GB of weights; 5: 20 bytes short */
        for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
            put_le32(file + at + 8, units[i]);  /* c */
            put_le32(file + at + 12, units[i]); /* units */
            put_le32(file + len - 4, crc32_of(file + 20, len - 24));
            write_bytes(p2, file, len);
            largest_request = 0;
            clear_error();
            cnn_model *t = cnn_load(p2);
            printf("#   %u units: %s (largest allocation %zu bytes)\n", units[i], err(), largest_request);
            CHECK(t == NULL, "%u units: loaded", units[i]);
            CHECK(mentions(i < 2 ? "more weights than the file" : "wide_bad.cnn"), "%u units: error '%s'", units[i],
                  err());
            CHECK(largest_request < ((size_t)64 << 20), "%u units: an allocation of %zu bytes", units[i],
                  largest_request);
            cnn_model_free(t);
        }
    }
    free(file);
    remove(path);
    remove(p2);
}

/* Each allocation of cnn_save and cnn_load failing in turn: a clean error
   (CNN_ERR_MEMORY, or NULL with a message), no crash, nothing leaked (the
   sanitizer build of make test checks leaks), the file untouched or whole */
static void test_save_load_allocation_failures(void) {
    test_begin("cnn_save and cnn_load with each allocation failing in turn");
    char path[512];
    tmp_path(path, sizeof path, "alloc.cnn");
    cnn_model *m = small_model(1);
    /* featurewise statistics and class names too: their copies are allocation points of their own */
    const float mean[1] = {0.5f}, stdv[1] = {0.25f};
    const char *const names[3] = {"cat", "dog", "ship"};
    CHECK(m && cnn_model_set_featurewise(m, mean, stdv, 1) == CNN_OK && cnn_model_set_class_names(m, names, 3) == CNN_OK,
          "featurewise statistics, class names: %s", err());
    CHECK(m && cnn_save(m, path) == CNN_OK, "first save: %s", err());
    long k, points = 0;
    for (k = 1; k < 10000; k++) {
        requests = 0, fail_at = k;
        clear_error();
        const int rc = cnn_save(m, path);
        const long made = requests;
        fail_at = 0;
        if (made < k) { CHECK(rc == CNN_OK, "save with no failure: %s", err()); break; }
        points++;
        CHECK(rc == CNN_ERR_MEMORY && mentions(NULL), "save, allocation %ld failing: rc %d, '%s'", k, rc, err());
        cnn_model *back = cnn_load(path); /* the old file, whole */
        CHECK(back != NULL, "after a failed save: %s", err());
        cnn_model_free(back);
    }
    printf("#   cnn_save: %ld allocation points\n", points);
    for (k = 1, points = 0; k < 10000; k++) {
        requests = 0, fail_at = k;
        clear_error();
        cnn_model *back = cnn_load(path);
        const long made = requests;
        fail_at = 0;
        if (made < k) { CHECK(back != NULL, "load with no failure: %s", err()); cnn_model_free(back); break; }
        points++;
        CHECK(back == NULL && mentions("out of memory") && !strstr(err(), "bad model file"),
              "load, allocation %ld failing: %s", k, back ? "loaded" : err());
        cnn_model_free(back);
    }
    printf("#   cnn_load: %ld allocation points\n", points);
    cnn_model_free(m);
    remove(path);
}

/* A short fit (validation split, early stopping, checkpoint) with each of its
   allocations failing in turn: NULL with a message, or a history and a model
   that holds the dataset's class names; nothing leaked (sanitizer build). Before,
   a failure to store the class names was ignored: the saved model lacked them. */
static void test_fit_allocation_failures(void) {
    static const char *const names[3] = {"circle", "square", "star"};
    test_begin("cnn_fit (EarlyStopping, ModelCheckpoint, BackupAndRestore) with each allocation failing in turn");
    char path[512], bk_dir[512], bk_path[600];
    tmp_path(path, sizeof path, "fit_alloc.cnn");
    tmp_path(bk_dir, sizeof bk_dir, "fit_alloc_backup");
    snprintf(bk_path, sizeof bk_path, "%s/backup.cnn", bk_dir);
    cnn_dataset *d = cnn_dataset_new(12, 8, 8, 1, 3);
    CHECK(d && cnn_dataset_set_class_names(d, names, 3) == CNN_OK, "dataset: %s", err());
    if (!d) return;
    for (int i = 0; i < 12 * 64; i++) d->images[i] = (unsigned char)(i * 7);
    for (int i = 0; i < 12; i++) d->labels[i] = i % 3;
    long k, points = 0, failed = 0;
    for (k = 1; k < 100000; k++) {
        cnn_model *m = small_model(1);
        cnn_callback *cb[4] = {cnn_early_stopping(.patience = 1), cnn_model_checkpoint(.filepath = path),
                               cnn_backup_and_restore(.backup_dir = bk_dir), NULL};
        CHECK(m && cb[0] && cb[1] && cb[2], "model and callbacks: %s", err());
        if (!m || !cb[0] || !cb[1] || !cb[2]) break;
        remove(bk_path); /* a failed fit keeps its backup: each round starts afresh */
        requests = 0, fail_at = k;
        clear_error();
        cnn_history *h = cnn_fit(m, d, .epochs = 2, .batch_size = 4, .validation_split = 0.25f, .callbacks = cb);
        const long made = requests;
        fail_at = 0;
        if (h) CHECK(cnn_model_num_class_names(m) == 3 && !strcmp(cnn_model_class_name(m, 2), "star"),
                     "allocation %ld failing: fit succeeded without the class names", k);
        else CHECK(mentions(NULL), "allocation %ld failing: NULL without a message", k);
        failed += h == NULL;
        cnn_history_free(h);
        cnn_callback_free(cb[0]);
        cnn_callback_free(cb[1]);
        cnn_callback_free(cb[2]);
        cnn_model_free(m);
        if (made < k) { CHECK(h != NULL, "fit with no failure: %s", err()); break; }
        points++;
    }
    printf("#   cnn_fit: %ld allocation points, %ld of them ended in an error\n", points, failed);

    test_begin("cnn_fit resuming from a backup with each allocation failing in turn: an error with a message, or "
               "the whole run");
    { /* a backup after epoch 1 of 2, kept, put back before each round */
        cnn_model *m = small_model(1);
        cnn_callback *cb[3] = {cnn_early_stopping(.patience = 1),
                               cnn_backup_and_restore(.backup_dir = bk_dir, .keep_backup = 1), NULL};
        remove(bk_path);
        cnn_history *h = m && cb[0] && cb[1] ? cnn_fit(m, d, .epochs = 1, .batch_size = 4, .callbacks = cb) : NULL;
        size_t len = 0;
        unsigned char *saved = h ? read_bytes(bk_path, &len) : NULL;
        CHECK(saved != NULL, "no backup to resume from: %s", err());
        cnn_history_free(h);
        cnn_model_free(m);
        long rpoints = 0, rfailed = 0;
        for (k = 1; saved && k < 100000; k++) {
            FILE *f = fopen(bk_path, "wb");
            if (f) { fwrite(saved, 1, len, f); fclose(f); }
            m = small_model(1);
            requests = 0, fail_at = k;
            clear_error();
            h = m ? cnn_fit(m, d, .epochs = 2, .batch_size = 4, .callbacks = cb) : NULL;
            const long made = requests;
            fail_at = 0;
            if (h) CHECK(h->epochs == 2, "allocation %ld failing: the resumed History has %d epochs", k, h->epochs);
            else CHECK(mentions(NULL), "allocation %ld failing: NULL without a message", k);
            rfailed += h == NULL;
            cnn_history_free(h);
            cnn_model_free(m);
            if (made < k) { CHECK(h != NULL, "resume with no failure: %s", err()); break; }
            rpoints++;
        }
        printf("#   cnn_fit resuming: %ld allocation points, %ld of them ended in an error\n", rpoints, rfailed);
        free(saved);
        cnn_callback_free(cb[0]);
        cnn_callback_free(cb[1]);
    }
    cnn_dataset_free(d);
    remove(path);
    remove(bk_path);
    rmdir(bk_dir);
}

/* A model of about 1.6 MB on disk (Dense weights and Adam's two slots), so that
   a save takes long enough for kills to land in the middle of it. */
static cnn_model *big_model(void) {
    cnn_model *m = cnn_model_new();
    cnn_node *x = cnn_input(m, 8, 8, 3, "in");
    x = cnn_dense(m, cnn_flatten(m, x), .units = 700, .activation = CNN_RELU);
    x = cnn_dense(m, x, .units = 3, .activation = CNN_SOFTMAX);
    if (cnn_model_set_output(m, x) || cnn_compile(m, .loss = CNN_CATEGORICAL_CROSSENTROPY, .optimizer = cnn_adam())) {
        cnn_model_free(m);
        return NULL;
    }
    return m;
}

/* SIGKILL at random moments while a child process saves: cnn_save in a loop
   (a weight changed before each save), then ModelCheckpoint at every epoch of a
   fit. After each kill the target must load (the old model or the new), and
   the next save must remove what the dead writer left. 24 kills, more until 3
   have landed during a write, up to 32 times as many: a save leaves its
   temporary file for a few percent of its loop, fewer on a loaded machine
   (CNN_TEST_KILLS sets the 24). */
static void test_kill_during_save(void) {
    test_begin("SIGKILL while cnn_save, ModelCheckpoint and BackupAndRestore write: the target always loads (the "
               "backup always restores), leftovers go");
    const char *env = getenv("CNN_TEST_KILLS");
    const int kills = env && atoi(env) > 0 ? atoi(env) : 24;
    char dir[512], path[600], bk_dir[600];
    tmp_path(dir, sizeof dir, "kill");
    mkdir(dir, 0700);
    snprintf(path, sizeof path, "%s/model.cnn", dir);
    snprintf(bk_dir, sizeof bk_dir, "%s/backup", dir);
    cnn_model *m = big_model();
    CHECK(m && cnn_save(m, path) == CNN_OK, "first save: %s", err());
    if (!m) return;
    cnn_dataset *d = cnn_dataset_new(4, 8, 8, 3, 3);
    CHECK(d != NULL, "dataset: %s", err());
    if (!d) { cnn_model_free(m); return; }
    for (int i = 0; i < 4 * 192; i++) d->images[i] = (unsigned char)(i * 13);
    for (int i = 0; i < 4; i++) d->labels[i] = i % 3;
    int corrupt = 0, mid_write = 0, left_after = 0, bk_rounds = 0, bk_mid_write = 0, bk_bad = 0;
    uint64_t r = 99;
    int k;
    for (k = 0; k < kills || (mid_write < 3 && k < 32 * kills); k++) { /* until 3 kills landed mid-write */
        const int checkpoint = k % 3 == 1, backup = k % 3 == 2; /* ModelCheckpoint, BackupAndRestore in fit */
        int ready[2]; /* the child says it runs: on a loaded machine it may not start within the wait */
        CHECK(pipe(ready) == 0, "pipe failed");
        fflush(stdout);
        pid_t child = fork();
        if (child == 0) {
            cnn_set_num_threads(1); /* the child of a threaded parent stays on one thread */
            close(ready[0]);
            if (write(ready[1], "r", 1) != 1) _exit(1);
            if (checkpoint || backup) {
                cnn_callback *cb[2] = {checkpoint ? cnn_model_checkpoint(.filepath = path)
                                                  : cnn_backup_and_restore(.backup_dir = bk_dir), NULL};
                cnn_fit(m, d, .epochs = 1000000, .batch_size = 4, .callbacks = cb);
            } else {
                size_t np;
                float *p = cnn_model_params(m, &np);
                for (int i = 0;; i++) {
                    p[0] = (float)i;
                    cnn_save(m, path);
                }
            }
            _exit(0);
        }
        CHECK(child > 0, "fork failed");
        close(ready[1]);
        if (child <= 0) { close(ready[0]); break; }
        char byte;
        if (read(ready[0], &byte, 1) != 1) printf("#   kill %d: the child did not start\n", k);
        close(ready[0]);
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        struct timespec wait = {0, (long)(2000000 + (r >> 33) % 30000000)}; /* 2 to 32 ms: several saves */
        nanosleep(&wait, NULL);
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
        if (backup) { /* the backup restores (or is not there yet): a fit of 1 epoch takes it */
            cnn_model *m2 = big_model();
            cnn_callback *cb[2] = {cnn_backup_and_restore(.backup_dir = bk_dir, .keep_backup = 1), NULL};
            bk_rounds++;
            bk_mid_write += count_entries(bk_dir, ".tmp") > 0;
            cnn_history *h = m2 && cb[0] ? cnn_fit(m2, d, .epochs = 1, .batch_size = 4, .callbacks = cb) : NULL;
            if (!h) printf("#   after kill %d the backup does not restore: %s\n", k, err());
            bk_bad += h == NULL;
            cnn_history_free(h);
            cnn_callback_free(cb[0]);
            cnn_model_free(m2);
            remove_tree(bk_dir);
            rmdir(bk_dir);
            continue;
        }
        cnn_model *back = cnn_load(path);
        corrupt += back == NULL;
        if (!back) printf("#   after kill %d: %s\n", k, err());
        cnn_model_free(back);
        mid_write += count_entries(dir, ".tmp") > 0;
        CHECK(cnn_save(m, path) == CNN_OK, "the save after kill %d: %s", k, err());
        left_after += count_entries(dir, ".tmp");
    }
    printf("#   cnn_save and ModelCheckpoint: %d kills (%d during a write, a temporary file left), %d targets "
           "that did not load, %d temporary files after the next save\n",
           k - bk_rounds, mid_write, corrupt, left_after);
    printf("#   BackupAndRestore: %d kills (%d during a write), %d backups that did not restore\n", bk_rounds,
           bk_mid_write, bk_bad);
    CHECK(bk_bad == 0, "%d of %d kills left a backup that does not restore", bk_bad, bk_rounds);
    CHECK(corrupt == 0, "%d of %d kills left a target that does not load", corrupt, k);
    CHECK(left_after == 0, "%d temporary files stayed after the next save", left_after);
    CHECK(mid_write > 0, "no kill landed during a write: the test proves nothing (kills %d)", k);
    cnn_dataset_free(d);
    cnn_model_free(m);
    remove(path);
    rmdir(dir);
}

static void test_save_load_padding_upsampling(void) {
    enum { N = 4, H = 6, W = 5, C = 2 };
    static const struct { const char *name; int h, w, c; } shapes[] = {
        {"in", 6, 5, 2}, {"conv", 6, 5, 3}, {"pad", 7, 8, 3}, {"up", 14, 24, 3}, {"pad_default", 16, 26, 3},
        {"up_default", 32, 52, 3}, {"conv_2", 15, 25, 2}, {"gap", 1, 1, 2}, {"out", 1, 1, 3}};
    enum { NS = sizeof shapes / sizeof shapes[0] };
    char path[512], p2[512];
    float x[N * H * W * C], y[N], oa[N * 3], ob[N * 3], loss = 0;
    tmp_path(path, sizeof path, "pad_up.cnn");
    tmp_path(p2, sizeof p2, "pad_up_bad.cnn");
    for (int i = 0; i < N * H * W * C; i++) x[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
    for (int i = 0; i < N; i++) y[i] = (float)(i % 3);

    test_begin("save then load a model with ZeroPadding2D and UpSampling2D");
    cnn_model *m = cnn_model_new(), *l = NULL;
    cnn_node *t = cnn_input(m, H, W, C, "in");
    t = cnn_conv2d(m, t, .filters = 3, .kernel_size = {3, 3}, .padding = CNN_SAME, .activation = CNN_RELU, .name = "conv");
    t = cnn_zero_padding2d(m, t, .padding = {1, 0, 2, 1}, .name = "pad");
    t = cnn_up_sampling2d(m, t, .size = {2, 3}, .name = "up");
    t = cnn_zero_padding2d(m, t, .name = "pad_default");
    t = cnn_up_sampling2d(m, t, .name = "up_default");
    t = cnn_conv2d(m, t, .filters = 2, .kernel_size = {3, 3}, .strides = {2, 2}, .activation = CNN_TANH, .name = "conv_2");
    t = cnn_global_avg_pool2d(m, t, .name = "gap");
    t = cnn_dense(m, t, .units = 3, .activation = CNN_SOFTMAX, .name = "out");
    if (!t || cnn_model_set_output(m, t) != CNN_OK ||
        cnn_compile(m, .loss = CNN_SPARSE_CATEGORICAL_CROSSENTROPY) != CNN_OK) {
        CHECK(0, "building: %s", err());
        cnn_model_free(m);
        return;
    }
    for (int s = 0; s < 2; s++)
        CHECK(cnn_train_on_batch(m, x, y, N, 1, &loss, NULL) == CNN_OK, "training step %d: %s", s, err());
    CHECK(cnn_predict(m, x, N, 0, oa) == CNN_OK, "predict: %s", err());
    CHECK(cnn_save(m, path) == CNN_OK, "save: %s", err());
    l = cnn_load(path);
    CHECK(l != NULL, "load: %s", err());
    if (l) {
        CHECK(l->n_nodes == m->n_nodes, "%d layers loaded, %d saved", l->n_nodes, m->n_nodes);
        for (int i = 0; i < NS; i++) {
            const cnn_node *a = node_named(m, shapes[i].name), *b = node_named(l, shapes[i].name);
            CHECK(a && shape_is(a, shapes[i].h, shapes[i].w, shapes[i].c), "%s: saved model's shape", shapes[i].name);
            CHECK(b && shape_is(b, shapes[i].h, shapes[i].w, shapes[i].c), "%s: loaded model's shape", shapes[i].name);
            CHECK(a && b && a->type == b->type && a->index == b->index, "%s: type or position changed", shapes[i].name);
        }
        size_t na = 0, nb = 0;
        const float *pa = cnn_model_params(m, &na), *pb = cnn_model_params(l, &nb);
        CHECK(pa && pb && na == nb && !memcmp(pa, pb, na * sizeof(float)), "parameters differ after loading");
        memset(ob, 0, sizeof ob);
        CHECK(cnn_predict(l, x, N, 0, ob) == CNN_OK, "predict after loading: %s", err());
        CHECK(!memcmp(oa, ob, sizeof oa), "predictions differ after loading (%g vs %g)", oa[0], ob[0]);
        CHECK(cnn_train_on_batch(l, x, y, N, 1, &loss, NULL) == CNN_OK, "a loaded model keeps training: %s", err());
        cnn_model_free(l);
    }

    test_begin("cnn_load refuses ZeroPadding2D / UpSampling2D records that do not add up");
    size_t len = 0;
    unsigned char *file = read_bytes(path, &len), *copy = (unsigned char *)malloc(len ? len : 1);
    const size_t pad = file ? record_offset(file, len, "pad") : 0, up = file ? record_offset(file, len, "up") : 0;
    CHECK(pad && up && pad + 48 < len && up + 48 < len && get_le32(file + pad) == 7 && get_le32(file + pad + 16) == 1 &&
              get_le32(file + up + 16) == 2 && get_le32(file + up + 20) == 3,
          "could not find the records of 'pad' and 'up' in the file");
    if (copy && pad && up && pad + 48 < len && up + 48 < len) {
        static const struct { const char *layer; int field; uint32_t value; const char *why; } bad[] = {
            {"pad", 4, 70000, "padding"},  /* top padding out of range */
            {"pad", 0, 5, "pad"},          /* output rows fewer than input rows + top: bottom -2 */
            {"up", 5, 0, "up"},            /* size 0 columns reads as the default 2: 16 columns, not 24 */
            {"up", 5, 65536, "size"},      /* out of range */
            {"up", 0, 15, "up"},           /* output rows that no size gives */
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            const size_t at = (bad[i].layer[0] == 'p' ? pad : up) + 4 * (size_t)bad[i].field;
            memcpy(copy, file, len);
            put_le32(copy + at, bad[i].value);
            put_le32(copy + len - 4, crc32_of(copy + 20, len - 24));
            write_bytes(p2, copy, len);
            clear_error();
            cnn_model *t2 = cnn_load(p2);
            printf("#   %s field %d = %u: %s\n", bad[i].layer, bad[i].field, bad[i].value, err());
            CHECK(t2 == NULL, "%s: field %d = %u loaded", bad[i].layer, bad[i].field, bad[i].value);
            CHECK(mentions(bad[i].why) && mentions("pad_up_bad.cnn"), "%s: field %d = %u: error '%s' does not mention '%s'",
                  bad[i].layer, bad[i].field, bad[i].value, err(), bad[i].why);
            cnn_model_free(t2);
        }
    }
    free(copy);
    free(file);
    remove(path);
    remove(p2);
    cnn_model_free(m);
}

/* ------------------------------------------------------------------------ */

int main(void) {
    strcpy(tmp_root, "/tmp/cnn_test_api_XXXXXX");
    if (!mkdtemp(tmp_root)) { perror("mkdtemp"); return 1; }
    test_errors();
    /* tiny models gain nothing from threads, and on a busy machine OpenMP barriers
       make them many times slower: the checks below run on one thread */
    cnn_set_num_threads(1);
    test_datasets();
    test_loaders();
    test_layers();
    test_padding_upsampling_layers();
    test_model_settings();
    test_model_file_v1();
    test_compile_and_batches();
    test_fit_errors();
    test_save_load();
    test_save_load_padding_upsampling();
    test_size_limits();
    test_load_implied_size();
    test_save_load_allocation_failures();
    test_fit_allocation_failures();
    test_load_activation_limit();
    test_kill_during_save();
    remove_tree(tmp_root);
    return test_finish();
}
