/* test_augment_io.c - cnn_augment.h: gzip'd IDX, Fashion-MNIST, image folders,
   cnn_load_dataset, PNG writing and the training-history plot; hostile files;
   and the whole pipeline with each of its allocations failing in turn.

   Everything it writes lives in a mkdtemp folder under /tmp that is removed at the end. */
#ifndef _XOPEN_SOURCE
#define _XOPEN_SOURCE 700 /* mkdtemp, symlink, lstat under -std=c99 */
#endif
#include <stdlib.h>
/* every allocation of cnn.h and cnn_augment.h goes through here: fail_at > 0
   makes the fail_at-th request from then on fail (test_pipeline_allocation_failures);
   counted atomically, as flow workers allocate too */
static long requests, fail_at;
static int fails_now(void) { return fail_at > 0 && __atomic_add_fetch(&requests, 1, __ATOMIC_SEQ_CST) == fail_at; }
static void *counted_malloc(size_t n) { return fails_now() ? NULL : malloc(n); }
static void *counted_realloc(void *p, size_t n) { return fails_now() ? NULL : realloc(p, n); }
#define CNN_MALLOC(sz) counted_malloc(sz)
#define CNN_REALLOC(p, sz) counted_realloc((p), (sz))
#define CNN_FREE(p) free(p)
#define CNN_IMPLEMENTATION
#define CNN_AUGMENT_IMPLEMENTATION
#define CNN_AUGMENT_STB_IMPLEMENTATION
#include "cnn_augment.h"
#include "test_util.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmp_root[64];

/* ---------------------------------------------------------------- helpers */

static const char *P(char *buf, size_t size, const char *rel) {
    snprintf(buf, size, "%s/%s", tmp_root, rel);
    return buf;
}
#define PATH(rel) P(pathbuf, sizeof pathbuf, (rel))

static uint32_t test_crc32(const unsigned char *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    }
    return c ^ 0xFFFFFFFFu;
}

static void put_le32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8); p[2] = (unsigned char)(v >> 16); p[3] = (unsigned char)(v >> 24);
}

/* A gzip file made of stored (uncompressed) deflate blocks, with every optional
   header field (FEXTRA, FNAME, FCOMMENT, FHCRC) so that the header parser is exercised.
   Returns the malloc'd bytes. */
static unsigned char *make_stored_gzip(const unsigned char *data, size_t n, size_t *out_n) {
    size_t cap = 64 + n + 5 * (n / 65535 + 1) + 8, k = 0;
    unsigned char *g = (unsigned char *)malloc(cap);
    const unsigned char head[10] = {0x1f, 0x8b, 8, 2 | 4 | 8 | 16, 0, 0, 0, 0, 0, 255};
    memcpy(g, head, 10); k = 10;
    g[k++] = 3; g[k++] = 0; g[k++] = 'x'; g[k++] = 'y'; g[k++] = 'z';  /* FEXTRA: 3 bytes */
    memcpy(g + k, "data.idx", 9); k += 9;                               /* FNAME */
    memcpy(g + k, "a comment", 10); k += 10;                            /* FCOMMENT */
    uint32_t hcrc = test_crc32(g, k);                                   /* FHCRC */
    g[k++] = (unsigned char)hcrc; g[k++] = (unsigned char)(hcrc >> 8);
    size_t off = 0;
    do {
        size_t chunk = n - off > 65535 ? 65535 : n - off;
        g[k++] = (unsigned char)(off + chunk == n); /* BFINAL, BTYPE 00 */
        g[k++] = (unsigned char)chunk; g[k++] = (unsigned char)(chunk >> 8);
        g[k++] = (unsigned char)~chunk; g[k++] = (unsigned char)(~chunk >> 8);
        memcpy(g + k, data + off, chunk); k += chunk; off += chunk;
    } while (off < n);
    put_le32(g + k, test_crc32(data, n)); k += 4;
    put_le32(g + k, (uint32_t)n); k += 4;
    *out_n = k;
    return g;
}

static int has_error(void) { return cnn_last_error() && cnn_last_error()[0] != 0; }
static int error_mentions(const char *s) { return strstr(cnn_last_error(), s) != NULL; }

/* The synthetic IDX pair: n images of rows x cols, pixel (i*31 + p*7) & 255, label i % 3. */
enum { IDX_N = 7, IDX_ROWS = 5, IDX_COLS = 4 };
static void make_idx(unsigned char *img, size_t *img_n, unsigned char *lab, size_t *lab_n) {
    const unsigned char ih[16] = {0, 0, 8, 3, 0, 0, 0, IDX_N, 0, 0, 0, IDX_ROWS, 0, 0, 0, IDX_COLS};
    const unsigned char lh[8] = {0, 0, 8, 1, 0, 0, 0, IDX_N};
    memcpy(img, ih, 16);
    memcpy(lab, lh, 8);
    for (int i = 0; i < IDX_N; i++) {
        for (int p = 0; p < IDX_ROWS * IDX_COLS; p++) img[16 + i * IDX_ROWS * IDX_COLS + p] = (unsigned char)((i * 31 + p * 7) & 255);
        lab[8 + i] = (unsigned char)(i % 3);
    }
    *img_n = 16 + IDX_N * IDX_ROWS * IDX_COLS;
    *lab_n = 8 + IDX_N;
}

static int same_idx(const cnn_dataset *d, const unsigned char *img) {
    if (!d || d->n != IDX_N || d->h != IDX_ROWS || d->w != IDX_COLS || d->c != 1) return 0;
    if (memcmp(d->images, img + 16, IDX_N * IDX_ROWS * IDX_COLS) != 0) return 0;
    for (int i = 0; i < IDX_N; i++) if (d->labels[i] != i % 3) return 0;
    return 1;
}

/* ------------------------------------------------------------ gzip'd IDX */

static void test_idx_gz(void) {
    char pathbuf[256], p2[256], cmd[700];
    unsigned char img[16 + IDX_N * IDX_ROWS * IDX_COLS], lab[8 + IDX_N];
    size_t img_n, lab_n, gi_n, gl_n;
    make_idx(img, &img_n, lab, &lab_n);

    test_begin("crc32 reference value");
    CHECK(test_crc32((const unsigned char *)"123456789", 9) == 0xCBF43926u, "crc32 mismatch");

    test_begin("idx raw files load");
    write_bytes(PATH("img.idx"), img, img_n);
    write_bytes(PATH("lab.idx"), lab, lab_n);
    cnn_dataset *raw = cnn_load_idx_gz(PATH("img.idx"), P(p2, sizeof p2, "lab.idx"));
    CHECK(raw != NULL, "raw IDX: %s", cnn_last_error());
    CHECK(same_idx(raw, img), "raw IDX content differs");

    test_begin("idx gzip stored blocks with all header fields equals raw");
    unsigned char *gi = make_stored_gzip(img, img_n, &gi_n), *gl = make_stored_gzip(lab, lab_n, &gl_n);
    write_bytes(PATH("img_stored.gz"), gi, gi_n);
    write_bytes(PATH("lab_stored.gz"), gl, gl_n);
    cnn_dataset *st = cnn_load_idx_gz(PATH("img_stored.gz"), P(p2, sizeof p2, "lab_stored.gz"));
    CHECK(st != NULL, "stored gzip: %s", cnn_last_error());
    CHECK(same_idx(st, img), "stored gzip content differs from raw");
    cnn_dataset_free(st);

    test_begin("idx gzip stored, 200 KB over several blocks");
    {
        size_t big_n = 16 + 2000 * 100, bg_n, bl_n;
        unsigned char *big = (unsigned char *)malloc(big_n), bl[8 + 2000];
        const unsigned char ih[16] = {0, 0, 8, 3, 0, 0, 0x07, 0xD0, 0, 0, 0, 10, 0, 0, 0, 10};
        const unsigned char lh[8] = {0, 0, 8, 1, 0, 0, 0x07, 0xD0};
        memcpy(big, ih, 16);
        memcpy(bl, lh, 8);
        for (size_t i = 16; i < big_n; i++) big[i] = (unsigned char)(i * 13 + (i >> 9));
        for (int i = 0; i < 2000; i++) bl[8 + i] = (unsigned char)(i % 10);
        unsigned char *bg = make_stored_gzip(big, big_n, &bg_n);
        write_bytes(PATH("big.gz"), bg, bg_n);
        write_bytes(PATH("bl.idx"), bl, 8 + 2000);
        cnn_dataset *d = cnn_load_idx_gz(PATH("big.gz"), P(p2, sizeof p2, "bl.idx"));
        bl_n = 0;
        CHECK(d && d->n == 2000 && d->h == 10 && d->w == 10, "big stored gzip: %s", cnn_last_error());
        if (d) {
            CHECK(memcmp(d->images, big + 16, big_n - 16) == 0, "big stored gzip pixels differ");
            for (int i = 0; i < 2000; i++) bl_n += d->labels[i] != i % 10;
            CHECK(bl_n == 0, "big stored gzip: %zu labels differ", bl_n);
        }
        cnn_dataset_free(d);
        free(bg);
        free(big);
    }

    test_begin("idx gzip by the gzip program equals raw");
    snprintf(cmd, sizeof cmd, "gzip -9 -c '%s/img.idx' > '%s/img.idx.gz' && gzip -c '%s/lab.idx' > '%s/lab.idx.gz'",
             tmp_root, tmp_root, tmp_root, tmp_root);
    if (system(cmd) == 0) {
        cnn_dataset *gz = cnn_load_idx_gz(PATH("img.idx.gz"), P(p2, sizeof p2, "lab.idx.gz"));
        CHECK(gz != NULL, "gzip'd IDX: %s", cnn_last_error());
        CHECK(same_idx(gz, img), "gzip'd IDX content differs from raw");
        cnn_dataset_free(gz);
        /* mixed: gzip'd images, raw labels */
        gz = cnn_load_idx_gz(PATH("img.idx.gz"), P(p2, sizeof p2, "lab.idx"));
        CHECK(same_idx(gz, img), "gzip'd images + raw labels: %s", cnn_last_error());
        cnn_dataset_free(gz);
    } else {
        printf("# gzip program not available: the stored-block gzip covers the format\n");
    }
    cnn_dataset_free(raw);

    test_begin("idx gzip bad inputs give errors");
    cnn_set_error(0, "%s", "");
    CHECK(cnn_load_idx_gz(NULL, PATH("lab.idx")) == NULL && has_error(), "NULL images path");
    cnn_set_error(0, "%s", "");
    CHECK(cnn_load_idx_gz(PATH("img.idx"), NULL) == NULL && has_error(), "NULL labels path");
    CHECK(cnn_load_idx_gz(PATH("missing.gz"), P(p2, sizeof p2, "lab.idx")) == NULL && error_mentions("missing.gz"),
          "missing file: '%s'", cnn_last_error());
    /* truncated: half of the stored gzip, and one without its last 3 bytes */
    write_bytes(PATH("trunc.gz"), gi, gi_n / 2);
    CHECK(cnn_load_idx_gz(PATH("trunc.gz"), P(p2, sizeof p2, "lab.idx")) == NULL && error_mentions("trunc.gz"),
          "truncated gzip (half): '%s'", cnn_last_error());
    write_bytes(PATH("trunc2.gz"), gi, gi_n - 3);
    CHECK(cnn_load_idx_gz(PATH("trunc2.gz"), P(p2, sizeof p2, "lab.idx")) == NULL && error_mentions("trunc2.gz"),
          "truncated gzip (trailer): '%s'", cnn_last_error());
    write_bytes(PATH("trunc3.gz"), gi, 12);
    CHECK(cnn_load_idx_gz(PATH("trunc3.gz"), P(p2, sizeof p2, "lab.idx")) == NULL && has_error(),
          "truncated gzip (header)");
    if (access(PATH("img.idx.gz"), F_OK) == 0) {
        size_t n = 0;
        unsigned char *real = read_bytes(PATH("img.idx.gz"), &n);
        write_bytes(PATH("trunc4.gz"), real, n / 2);
        CHECK(cnn_load_idx_gz(PATH("trunc4.gz"), P(p2, sizeof p2, "lab.idx")) == NULL && error_mentions("trunc4.gz"),
              "truncated compressed gzip: '%s'", cnn_last_error());
        free(real);
    }
    /* damaged: one data byte flipped -> CRC-32 mismatch */
    gi[gi_n - 20] ^= 0x40;
    write_bytes(PATH("crc.gz"), gi, gi_n);
    CHECK(cnn_load_idx_gz(PATH("crc.gz"), P(p2, sizeof p2, "lab.idx")) == NULL && error_mentions("CRC"),
          "damaged gzip: '%s'", cnn_last_error());
    gi[gi_n - 20] ^= 0x40;
    /* damaged header CRC */
    gi[30] ^= 1;
    write_bytes(PATH("hcrc.gz"), gi, gi_n);
    CHECK(cnn_load_idx_gz(PATH("hcrc.gz"), P(p2, sizeof p2, "lab.idx")) == NULL && has_error(), "bad header CRC");
    gi[30] ^= 1;
    /* bad compression method, reserved flags */
    gi[2] = 7;
    write_bytes(PATH("method.gz"), gi, gi_n);
    CHECK(cnn_load_idx_gz(PATH("method.gz"), P(p2, sizeof p2, "lab.idx")) == NULL && error_mentions("method"),
          "bad gzip method: '%s'", cnn_last_error());
    gi[2] = 8;
    gi[3] |= 0x80;
    write_bytes(PATH("flags.gz"), gi, gi_n);
    CHECK(cnn_load_idx_gz(PATH("flags.gz"), P(p2, sizeof p2, "lab.idx")) == NULL && has_error(), "reserved flags");
    /* a bad magic is not gzip: read as raw bytes, which are not IDX */
    gi[3] &= 0x7f;
    gi[1] = 0x8c;
    write_bytes(PATH("magic.gz"), gi, gi_n);
    cnn_set_error(0, "%s", "");
    CHECK(cnn_load_idx_gz(PATH("magic.gz"), P(p2, sizeof p2, "lab.idx")) == NULL && error_mentions("magic.gz"),
          "bad gzip magic: '%s'", cnn_last_error());
    /* empty file, a folder */
    write_bytes(PATH("empty.idx"), img, 0);
    CHECK(cnn_load_idx_gz(PATH("empty.idx"), P(p2, sizeof p2, "lab.idx")) == NULL && has_error(), "empty file");
    CHECK(cnn_load_idx_gz(tmp_root, P(p2, sizeof p2, "lab.idx")) == NULL && has_error(), "a folder");
    free(gi);
    free(gl);
}

/* ---------------------------------------------------------- Fashion-MNIST */

static void test_fashion_mnist(void) {
    char pathbuf[256];
    struct stat st;
    test_begin("fashion-mnist real files");
    if (stat(CNN_FASHION_MNIST_DIR "/train-images-idx3-ubyte.gz", &st) != 0) {
        printf("# %s not installed: skipped\n", CNN_FASHION_MNIST_DIR);
    } else {
        cnn_dataset *tr = cnn_load_fashion_mnist(NULL, 1), *te = cnn_load_fashion_mnist(NULL, 0);
        CHECK(tr != NULL, "train: %s", cnn_last_error());
        CHECK(te != NULL, "test: %s", cnn_last_error());
        if (tr && te) {
            int count[10] = {0}, bad = 0;
            long sum = 0;
            CHECK(tr->n == 60000 && te->n == 10000, "n %d %d", tr->n, te->n);
            CHECK(tr->h == 28 && tr->w == 28 && tr->c == 1 && te->h == 28 && te->w == 28 && te->c == 1,
                  "shape %dx%dx%d", tr->h, tr->w, tr->c);
            CHECK(tr->num_classes == 10 && te->num_classes == 10, "classes %d", tr->num_classes);
            for (int i = 0; i < tr->n; i++) {
                if (tr->labels[i] < 0 || tr->labels[i] >= 10) bad++;
                else count[tr->labels[i]]++;
            }
            for (int i = 0; i < te->n; i++) bad += te->labels[i] < 0 || te->labels[i] >= 10;
            CHECK(bad == 0, "%d labels out of range", bad);
            for (int k = 0; k < 10; k++) CHECK(count[k] == 6000, "class %d has %d training images", k, count[k]);
            for (size_t i = 0; i < (size_t)28 * 28 * 100; i++) sum += tr->images[i];
            CHECK(sum > 100 * 28 * 28 * 20, "images look empty (sum %ld)", sum);
            CHECK(tr->class_names && !strcmp(tr->class_names[0], "T-shirt/top") &&
                      !strcmp(tr->class_names[9], "Ankle boot") && !strcmp(te->class_names[7], "Sneaker"),
                  "class names");
        }
        cnn_dataset_free(tr);
        cnn_dataset_free(te);
    }

    test_begin("fashion-mnist from a folder of raw files, and errors");
    {   /* the synthetic IDX pair named as Fashion-MNIST's test files, uncompressed */
        unsigned char img[16 + IDX_N * IDX_ROWS * IDX_COLS], lab[8 + IDX_N];
        size_t img_n, lab_n;
        make_idx(img, &img_n, lab, &lab_n);
        mkdir(PATH("fm"), 0700);
        write_bytes(PATH("fm/t10k-images-idx3-ubyte"), img, img_n);
        write_bytes(PATH("fm/t10k-labels-idx1-ubyte"), lab, lab_n);
        cnn_dataset *d = cnn_load_fashion_mnist(PATH("fm"), 0);
        CHECK(same_idx(d, img), "raw files: %s", cnn_last_error());
        CHECK(d && d->num_classes == 10 && d->class_names && !strcmp(d->class_names[1], "Trouser"),
              "10 class names even when the labels use 3");
        cnn_dataset_free(d);
        CHECK(cnn_load_fashion_mnist(PATH("fm"), 1) == NULL && error_mentions("train-images-idx3-ubyte"),
              "missing train files: '%s'", cnn_last_error());
        CHECK(cnn_load_fashion_mnist(PATH("no_such_dir"), 0) == NULL && error_mentions("no_such_dir"),
              "missing folder: '%s'", cnn_last_error());
    }
}

/* ----------------------------------------------------------- image folders */

enum { IW = 6, IH = 4 };
static void pattern(unsigned char *px, int c, int seed) {
    for (int y = 0; y < IH; y++)
        for (int x = 0; x < IW; x++)
            for (int ch = 0; ch < c; ch++) px[(y * IW + x) * c + ch] = (unsigned char)((seed * 37 + y * 53 + x * 17 + ch * 91) & 255);
}

/* Image i of d equals px (exactly, or within tol for JPEG)? */
static int image_is(const cnn_dataset *d, int i, const unsigned char *px, int tol) {
    size_t n = (size_t)d->h * d->w * d->c;
    for (size_t k = 0; k < n; k++) {
        int diff = (int)d->images[i * n + k] - (int)px[k];
        if (diff > tol || diff < -tol) return 0;
    }
    return 1;
}

/* bird/y.jpg: what stbi_write_jpg (quality 95) makes of a 6x4 image of colour
   (90, 160, 220). Embedded because stb_image_write's JPEG writer shifts a signed
   int past its range, which -fsanitize=undefined reports. */
static const unsigned char jpeg_6x4[] = {
    255,216,255,224,0,16,74,70,73,70,0,1,1,0,0,1,0,1,0,0,255,219,0,132,0,2,1,1,1,1,1,2,1,1,1,2,2,2,
    2,2,4,3,2,2,2,2,5,4,4,3,4,6,5,6,6,6,5,6,6,6,7,9,8,6,7,9,7,6,6,8,11,8,9,10,10,10,10,10,6,8,11,12,
    11,10,12,9,10,10,10,1,2,2,2,2,2,2,5,3,3,5,10,7,6,7,10,10,10,10,10,10,10,10,10,10,10,10,10,10,10,
    10,10,10,10,10,10,10,10,10,10,10,10,10,10,10,10,10,10,10,10,10,10,10,10,10,10,10,10,10,10,10,10,
    10,10,10,255,192,0,17,8,0,4,0,6,3,1,17,0,2,17,1,3,17,1,255,196,1,162,0,0,1,5,1,1,1,1,1,1,0,0,0,
    0,0,0,0,0,1,2,3,4,5,6,7,8,9,10,11,16,0,2,1,3,3,2,4,3,5,5,4,4,0,0,1,125,1,2,3,0,4,17,5,18,33,49,
    65,6,19,81,97,7,34,113,20,50,129,145,161,8,35,66,177,193,21,82,209,240,36,51,98,114,130,9,10,22,
    23,24,25,26,37,38,39,40,41,42,52,53,54,55,56,57,58,67,68,69,70,71,72,73,74,83,84,85,86,87,88,89,
    90,99,100,101,102,103,104,105,106,115,116,117,118,119,120,121,122,131,132,133,134,135,136,137,
    138,146,147,148,149,150,151,152,153,154,162,163,164,165,166,167,168,169,170,178,179,180,181,182,
    183,184,185,186,194,195,196,197,198,199,200,201,202,210,211,212,213,214,215,216,217,218,225,226,
    227,228,229,230,231,232,233,234,241,242,243,244,245,246,247,248,249,250,1,0,3,1,1,1,1,1,1,1,1,1,
    0,0,0,0,0,0,1,2,3,4,5,6,7,8,9,10,11,17,0,2,1,2,4,4,3,4,7,5,4,4,0,1,2,119,0,1,2,3,17,4,5,33,49,6,
    18,65,81,7,97,113,19,34,50,129,8,20,66,145,161,177,193,9,35,51,82,240,21,98,114,209,10,22,36,52,
    225,37,241,23,24,25,26,38,39,40,41,42,53,54,55,56,57,58,67,68,69,70,71,72,73,74,83,84,85,86,87,
    88,89,90,99,100,101,102,103,104,105,106,115,116,117,118,119,120,121,122,130,131,132,133,134,135,
    136,137,138,146,147,148,149,150,151,152,153,154,162,163,164,165,166,167,168,169,170,178,179,180,
    181,182,183,184,185,186,194,195,196,197,198,199,200,201,202,210,211,212,213,214,215,216,217,218,
    226,227,228,229,230,231,232,233,234,242,243,244,245,246,247,248,249,250,255,218,0,12,3,1,0,2,17,
    3,17,0,63,0,244,138,254,167,63,151,207,255,217
};

static void make_image_tree(void) {
    char pathbuf[256];
    unsigned char px[IW * IH * 4];
    const char *dirs[] = {"imgs", "imgs/cat", "imgs/cat/sub", "imgs/bird", "imgs/dog", "imgs/.hidden_class",
                          "outside", "outside/more"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) mkdir(PATH(dirs[i]), 0700);
    pattern(px, 3, 1); stbi_write_png(PATH("imgs/cat/a.png"), IW, IH, 3, px, IW * 3);
    pattern(px, 3, 2); stbi_write_bmp(PATH("imgs/cat/b.BMP"), IW, IH, 3, px);
    pattern(px, 3, 3); stbi_write_png(PATH("imgs/cat/sub/c.png"), IW, IH, 3, px, IW * 3);
    pattern(px, 3, 4); stbi_write_png(PATH("imgs/bird/x.png"), IW, IH, 3, px, IW * 3);
    write_bytes(PATH("imgs/bird/y.jpg"), jpeg_6x4, sizeof jpeg_6x4);
    for (int k = 0; k < IW * IH; k++) { px[3 * k] = 200; px[3 * k + 1] = 100; px[3 * k + 2] = 50; }
    stbi_write_png(PATH("imgs/dog/z.png"), IW, IH, 3, px, IW * 3);
    pattern(px, 3, 5); stbi_write_png(PATH("outside/more/linked.png"), IW, IH, 3, px, IW * 3);
    write_bytes(PATH("imgs/cat/notes.txt"), (const unsigned char *)"not an image", 12);
    write_bytes(PATH("imgs/readme.txt"), (const unsigned char *)"not a class", 11);
    write_bytes(PATH("imgs/bird/.hidden.png"), (const unsigned char *)"junk", 4);
    write_bytes(PATH("imgs/.hidden_class/h.png"), (const unsigned char *)"junk", 4);
    char target[256];
    snprintf(target, sizeof target, "%s/outside", tmp_root);
    CHECK(symlink(target, PATH("imgs/cat/link")) == 0, "symlink");
}

static void test_image_dir(void) {
    char pathbuf[256], p2[256];
    unsigned char px[IW * IH * 4];
    cnn_image_dir_opts o;
    cnn_dataset *d;

    test_begin("image folder: classes, order, labels, pixels");
    make_image_tree();
    memset(&o, 0, sizeof o);
    d = cnn_load_image_dir_opt(PATH("imgs"), &o);
    CHECK(d != NULL, "%s", cnn_last_error());
    if (d) {
        /* bird: x.png y.jpg | cat: a.png b.BMP sub/c.png | dog: z.png */
        static const int want_labels[6] = {0, 0, 1, 1, 1, 2};
        CHECK(d->n == 6 && d->h == IH && d->w == IW && d->c == 3, "got n %d, %dx%dx%d", d->n, d->h, d->w, d->c);
        CHECK(d->num_classes == 3 && d->class_names && !strcmp(d->class_names[0], "bird") &&
                  !strcmp(d->class_names[1], "cat") && !strcmp(d->class_names[2], "dog"),
              "classes (%d)", d->num_classes);
        for (int i = 0; i < d->n && i < 6; i++) CHECK(d->labels[i] == want_labels[i], "label %d = %d", i, d->labels[i]);
        if (d->n == 6) {
            pattern(px, 3, 4); CHECK(image_is(d, 0, px, 0), "bird/x.png pixels");
            for (int k = 0; k < IW * IH; k++) { px[3 * k] = 90; px[3 * k + 1] = 160; px[3 * k + 2] = 220; }
            CHECK(image_is(d, 1, px, 8), "bird/y.jpg pixels (JPEG, within 8)");
            pattern(px, 3, 1); CHECK(image_is(d, 2, px, 0), "cat/a.png pixels");
            pattern(px, 3, 2); CHECK(image_is(d, 3, px, 0), "cat/b.BMP pixels");
            pattern(px, 3, 3); CHECK(image_is(d, 4, px, 0), "cat/sub/c.png pixels");
            for (int k = 0; k < IW * IH; k++) { px[3 * k] = 200; px[3 * k + 1] = 100; px[3 * k + 2] = 50; }
            CHECK(image_is(d, 5, px, 0), "dog/z.png pixels");
        }
    }
    cnn_dataset_free(d);

    test_begin("image folder: follow_links");
    o.follow_links = 1;
    d = cnn_load_image_dir_opt(PATH("imgs"), &o);
    CHECK(d && d->n == 7 && d->labels[5] == 1, "with links: %s", d ? "wrong count" : cnn_last_error());
    if (d && d->n == 7) { pattern(px, 3, 5); CHECK(image_is(d, 4, px, 0), "cat/link/more/linked.png is 5th"); }
    cnn_dataset_free(d);
    o.follow_links = 0;

    test_begin("image folder: resize and channel conversion");
    o.height = 8; o.width = 12; o.channels = 1;
    d = cnn_load_image_dir_opt(PATH("imgs"), &o);
    CHECK(d && d->n == 6 && d->h == 8 && d->w == 12 && d->c == 1, "upsized grey: %s", cnn_last_error());
    if (d && d->n == 6) { /* dog/z.png is one colour: PIL's grey (19595 r + 38470 g + 7471 b + 2^15) >> 16 */
        int grey = (19595 * 200 + 38470 * 100 + 7471 * 50 + 32768) >> 16, off = 0;
        for (int k = 0; k < 8 * 12; k++) off += d->images[5 * 96 + k] != grey;
        CHECK(off == 0, "%d resized pixels differ from grey %d", off, grey);
    }
    cnn_dataset_free(d);
    o.height = 2; o.width = 3; o.channels = 4;
    d = cnn_load_image_dir_opt(PATH("imgs"), &o);
    CHECK(d && d->n == 6 && d->h == 2 && d->w == 3 && d->c == 4, "downsized RGBA: %s", cnn_last_error());
    if (d && d->n == 6) {
        int off = 0;
        for (int k = 0; k < 6; k++) {
            const unsigned char *q = d->images + 5 * 24 + 4 * k;
            off += abs(q[0] - 200) > 1 || abs(q[1] - 100) > 1 || abs(q[2] - 50) > 1 || q[3] != 255;
        }
        CHECK(off == 0, "%d downsized RGBA pixels wrong", off);
        /* the mean of a resized image stays close to the source mean */
        pattern(px, 4, 1);
        double ms = 0, md = 0;
        for (int k = 0; k < IW * IH; k++) ms += px[4 * k];
        for (int k = 0; k < 6; k++) md += d->images[2 * 24 + 4 * k];
        CHECK(fabs(ms / (IW * IH) - md / 6) < 40, "downsized mean %.1f vs %.1f", md / 6, ms / (IW * IH));
    }
    cnn_dataset_free(d);
    o.height = 0; o.width = 5; o.channels = 0; /* only the width given */
    d = cnn_load_image_dir_opt(PATH("imgs"), &o);
    CHECK(d && d->h == IH && d->w == 5 && d->c == 3, "width only: %s", cnn_last_error());
    cnn_dataset_free(d);
#ifndef __cplusplus
    d = cnn_load_image_dir(PATH("imgs"), .height = 4, .width = 4, .channels = 3);
    CHECK(d && d->n == 6 && d->h == 4 && d->w == 4, "keyword macro: %s", cnn_last_error());
    cnn_dataset_free(d);
#endif
    d = cnn_load_image_dir_opt(PATH("imgs"), NULL);
    CHECK(d && d->n == 6, "NULL options: %s", cnn_last_error());
    cnn_dataset_free(d);

    test_begin("image folder: corrupt image is an error naming it, or skipped");
    write_bytes(PATH("imgs/dog/bad.png"), (const unsigned char *)"\x89PNG\r\n\x1a\nthis is not a png", 26);
    memset(&o, 0, sizeof o);
    cnn_set_error(0, "%s", "");
    d = cnn_load_image_dir_opt(PATH("imgs"), &o);
    CHECK(d == NULL && error_mentions("bad.png"), "corrupt png: '%s'", cnn_last_error());
    cnn_dataset_free(d);
    o.skip_bad = 1;
    printf("# a warning about bad.png is expected next:\n");
    fflush(stdout);
    d = cnn_load_image_dir_opt(PATH("imgs"), &o);
    CHECK(d && d->n == 6 && d->labels[5] == 2 && d->num_classes == 3 && d->class_names &&
              !strcmp(d->class_names[2], "dog"),
          "skip_bad: %s", d ? "wrong content" : cnn_last_error());
    cnn_dataset_free(d);
    /* a bad file first in order, with the size taken from the first image */
    write_bytes(PATH("imgs/bird/a_bad.jpg"), (const unsigned char *)"\xff\xd8\xff junk", 9);
    o.skip_bad = 0;
    d = cnn_load_image_dir_opt(PATH("imgs"), &o);
    CHECK(d == NULL && error_mentions("a_bad.jpg"), "first image corrupt: '%s'", cnn_last_error());
    o.skip_bad = 1;
    printf("# warnings about a_bad.jpg and bad.png are expected next:\n");
    fflush(stdout);
    d = cnn_load_image_dir_opt(PATH("imgs"), &o);
    CHECK(d && d->n == 6 && d->h == IH && d->w == IW, "first image corrupt, skipped: %s", cnn_last_error());
    cnn_dataset_free(d);
    remove(PATH("imgs/bird/a_bad.jpg"));
    remove(PATH("imgs/dog/bad.png"));

    test_begin("image folder: bad inputs");
    memset(&o, 0, sizeof o);
    cnn_set_error(0, "%s", "");
    CHECK(cnn_load_image_dir_opt(NULL, &o) == NULL && has_error(), "NULL folder");
    CHECK(cnn_load_image_dir_opt(PATH("nope"), &o) == NULL && error_mentions("nope"), "missing: '%s'", cnn_last_error());
    CHECK(cnn_load_image_dir_opt(PATH("imgs/readme.txt"), &o) == NULL && error_mentions("readme.txt"),
          "a file: '%s'", cnn_last_error());
    mkdir(PATH("empty"), 0700);
    CHECK(cnn_load_image_dir_opt(PATH("empty"), &o) == NULL && error_mentions("no class"),
          "empty folder: '%s'", cnn_last_error());
    mkdir(PATH("noimg"), 0700);
    mkdir(PATH("noimg/a"), 0700);
    mkdir(PATH("noimg/b"), 0700);
    write_bytes(PATH("noimg/b/x.txt"), (const unsigned char *)"x", 1);
    CHECK(cnn_load_image_dir_opt(PATH("noimg"), &o) == NULL && error_mentions("no image"),
          "classes without images: '%s'", cnn_last_error());
    mkdir(PATH("allbad"), 0700);
    mkdir(PATH("allbad/a"), 0700);
    write_bytes(PATH("allbad/a/x.png"), (const unsigned char *)"x", 1);
    CHECK(cnn_load_image_dir_opt(PATH("allbad"), &o) == NULL && error_mentions("x.png"), "only a bad image: '%s'",
          cnn_last_error());
    o.skip_bad = 1;
    printf("# a warning about allbad/a/x.png is expected next:\n");
    fflush(stdout);
    CHECK(cnn_load_image_dir_opt(PATH("allbad"), &o) == NULL && has_error(), "only a bad image, skipped");
    o.skip_bad = 0;
    o.channels = 2;
    CHECK(cnn_load_image_dir_opt(PATH("imgs"), &o) == NULL && error_mentions("channels"), "channels 2: '%s'",
          cnn_last_error());
    o.channels = 5;
    CHECK(cnn_load_image_dir_opt(PATH("imgs"), &o) == NULL && has_error(), "channels 5");
    o.channels = 0;
    o.height = -1;
    CHECK(cnn_load_image_dir_opt(PATH("imgs"), &o) == NULL && has_error(), "negative height");
    (void)p2;
}

/* --------------------------------------- resizing files, Keras' file order */

/* A deterministic w x h x c image (any size) */
static void noise(unsigned char *px, int w, int h, int c, unsigned seed) {
    for (int i = 0; i < w * h * c; i++) {
        unsigned v = (unsigned)i * 2654435761u ^ seed * 40503u;
        px[i] = (unsigned char)((v >> 13) ^ (v >> 7));
    }
}

static void test_resize_files(void) {
    char pathbuf[256];
    static unsigned char px[300 * 300 * 4], want[64 * 64 * 4], got[64 * 64 * 4];

    /* stb_image_resize v1 failed an assertion (total < 1.1f) on 41 -> 32 and
       aborted the process: every size from 1 to 64 and a few up to 300, to
       32 x 32 bilinear, through the folder loader and a directory flow */
    test_begin("image folder: every size 1..64 (and to 300) resized to 32x32, no abort");
    mkdir(PATH("sizes"), 0700);
    mkdir(PATH("sizes/a"), 0700);
    int n_files = 0;
    for (int s = 1; s <= 64; s++) { /* s x s, and s x (s + 1) for even s */
        char name[64];
        const int hs = s + (s % 2 == 0);
        noise(px, s, hs, 3, (unsigned)s);
        snprintf(name, sizeof name, "sizes/a/%03d.png", s);
        stbi_write_png(PATH(name), s, hs, 3, px, s * 3);
        n_files++;
    }
    for (int s = 100; s <= 300; s += 50) {
        char name[64];
        noise(px, s, s, 3, (unsigned)s);
        snprintf(name, sizeof name, "sizes/a/%03d.png", s);
        stbi_write_png(PATH(name), s, s, 3, px, s * 3);
        n_files++;
    }
    cnn_dataset *d = cnn_load_image_dir(PATH("sizes"), .height = 32, .width = 32, .channels = 3);
    CHECK(d && d->n == n_files && d->h == 32 && d->w == 32, "folder to 32x32: %s", d ? "" : cnn_last_error());
    if (d && d->n == n_files) { /* 041.png is the 41st file: the same bytes as cnn_resize_uint8's */
        noise(px, 41, 41, 3, 41);
        CHECK(cnn_resize_uint8(px, 41, 41, 3, want, 32, 32, CNN_INTERP_BILINEAR) == CNN_OK, "resize");
        CHECK(!memcmp(d->images + 40 * 32 * 32 * 3, want, 32 * 32 * 3), "41x41 -> 32x32 differs from cnn_resize_uint8");
    }
    cnn_dataset_free(d);
    cnn_datagen *g = cnn_datagen_new(.rescale = 1);
    for (int interp = CNN_INTERP_NEAREST; interp <= CNN_INTERP_HAMMING; interp++) {
        cnn_flow *f = cnn_datagen_flow_from_directory(g, PATH("sizes"), .target_size = {32, 32}, .no_shuffle = 1,
                                                      .interpolation = (cnn_interpolation)interp, .workers = -1);
        const float *x, *y;
        int got_n = f ? cnn_flow_next(f, &x, &y) : -1;
        CHECK(f && got_n == 32, "flow_from_directory, interpolation %d: %s", interp, f ? "" : cnn_last_error());
        if (f && got_n == 32) { /* image 0 is 001.png, 1x1: every pixel is that pixel */
            noise(px, 1, 1, 3, 1);
            int off = 0;
            for (int k = 0; k < 32 * 32 * 3; k++) off += x[k] != (float)px[k % 3];
            CHECK(off == 0, "1x1 -> 32x32 with interpolation %d: %d values differ", interp, off);
        }
        cnn_flow_free(f);
    }
    cnn_datagen_free(g);

    test_begin("cnn_load_image: load_img's conversion, resize and keep_aspect_ratio");
    /* a 12 x 5 RGBA file: grey is PIL's luma of the colour, alpha dropped */
    noise(px, 12, 5, 4, 77);
    stbi_write_png(PATH("rgba.png"), 12, 5, 4, px, 12 * 4);
    CHECK(cnn_load_image(PATH("rgba.png"), 5, 12, 1, CNN_INTERP_DEFAULT, 0, got) == CNN_OK, "%s", cnn_last_error());
    int off = 0;
    for (int k = 0; k < 60; k++) {
        const unsigned char *q = px + 4 * k;
        off += got[k] != (unsigned char)((19595u * q[0] + 38470u * q[1] + 7471u * q[2] + 32768u) >> 16);
    }
    CHECK(off == 0, "grey of RGBA: %d pixels differ", off);
    CHECK(cnn_load_image(PATH("rgba.png"), 5, 12, 3, CNN_INTERP_DEFAULT, 0, got) == CNN_OK, "%s", cnn_last_error());
    off = 0;
    for (int k = 0; k < 60; k++) off += memcmp(got + 3 * k, px + 4 * k, 3) != 0;
    CHECK(off == 0, "RGB of RGBA: %d pixels differ", off);
    /* resized: the same bytes as cnn_resize_uint8 (nearest by default, as load_img) */
    CHECK(cnn_load_image(PATH("rgba.png"), 7, 9, 4, CNN_INTERP_DEFAULT, 0, got) == CNN_OK, "%s", cnn_last_error());
    cnn_resize_uint8(px, 12, 5, 4, want, 9, 7, CNN_INTERP_NEAREST);
    CHECK(!memcmp(got, want, 9 * 7 * 4), "12x5 -> 9x7 nearest differs from cnn_resize_uint8");
    /* keep_aspect_ratio to 5 x 5: Keras crops the centred 5 x 5 (columns 3..7);
       a crop of the target's size is PIL's plain crop (in RGB: RGBA would go
       through PIL's premultiplied alpha and back) */
    CHECK(cnn_load_image(PATH("rgba.png"), 5, 5, 3, CNN_INTERP_BICUBIC, 1, got) == CNN_OK, "%s", cnn_last_error());
    off = 0;
    for (int y = 0; y < 5; y++)
        for (int x = 0; x < 5; x++) off += memcmp(got + (y * 5 + x) * 3, px + (y * 12 + x + 3) * 4, 3) != 0;
    CHECK(off == 0, "keep_aspect_ratio 12x5 -> 5x5 is not the centre crop (%d pixels differ)", off);
    CHECK(cnn_load_image(PATH("rgba.png"), 5, 12, 3, CNN_INTERP_BILINEAR, 1, got) == CNN_OK, "same size");
    cnn_set_error(0, "%s", "");
    CHECK(cnn_load_image(NULL, 4, 4, 3, CNN_INTERP_DEFAULT, 0, got) < 0 && has_error(), "NULL path");
    CHECK(cnn_load_image(PATH("rgba.png"), 4, 4, 3, CNN_INTERP_DEFAULT, 0, NULL) < 0 && error_mentions("NULL"),
          "NULL pixels: '%s'", cnn_last_error());
    CHECK(cnn_load_image(PATH("rgba.png"), 0, 4, 3, CNN_INTERP_DEFAULT, 0, got) < 0 && error_mentions("cnn_load_image"),
          "size 0: '%s'", cnn_last_error());
    CHECK(cnn_load_image(PATH("rgba.png"), 4, 4, 2, CNN_INTERP_DEFAULT, 0, got) < 0 && error_mentions("channels"),
          "2 channels: '%s'", cnn_last_error());
    CHECK(cnn_load_image(PATH("rgba.png"), 4, 4, 3, (cnn_interpolation)42, 0, got) < 0 &&
              error_mentions("interpolation"), "interpolation 42: '%s'", cnn_last_error());
    CHECK(cnn_load_image(PATH("nope.png"), 4, 4, 3, CNN_INTERP_DEFAULT, 0, got) < 0 && error_mentions("nope.png"),
          "missing file: '%s'", cnn_last_error());
    CHECK(cnn_load_image(PATH("imgs/readme.txt"), 4, 4, 3, CNN_INTERP_DEFAULT, 0, got) < 0 &&
              error_mentions("readme.txt"), "not an image: '%s'", cnn_last_error());
    CHECK(cnn_load_image_dir(PATH("sizes"), .height = 8, .width = 8, .interpolation = (cnn_interpolation)9) == NULL &&
              error_mentions("interpolation"), "folder, interpolation 9: '%s'", cnn_last_error());

    /* sorted(os.walk(...)) by folder path, then each folder's files by name:
       m.png z.png sub/a.png sub-x/b.png sub/deep/e.png (a plain sort of the
       paths would put sub-x/b.png first and z.png last) */
    test_begin("image folder: Keras' file order (a folder's own files first)");
    const char *dirs[] = {"order", "order/c", "order/c/sub", "order/c/sub-x", "order/c/sub/deep"};
    const char *files[] = {"order/c/z.png", "order/c/sub/a.png", "order/c/sub/deep/e.png", "order/c/sub-x/b.png",
                           "order/c/m.png"};
    const int want_order[] = {4, 0, 1, 3, 2};
    for (int i = 0; i < 5; i++) mkdir(PATH(dirs[i]), 0700);
    for (int i = 0; i < 5; i++) {
        noise(px, 3, 2, 1, (unsigned)i);
        stbi_write_png(PATH(files[i]), 3, 2, 1, px, 3);
    }
    d = cnn_load_image_dir(PATH("order"));
    CHECK(d && d->n == 5, "order folder: %s", d ? "" : cnn_last_error());
    for (int i = 0; d && d->n == 5 && i < 5; i++) {
        noise(px, 3, 2, 1, (unsigned)want_order[i]);
        CHECK(!memcmp(d->images + i * 6, px, 6), "image %d is not %s", i, files[want_order[i]]);
    }
    cnn_dataset_free(d);
    g = cnn_datagen_new(.rescale = 1);
    cnn_flow *f = cnn_datagen_flow_from_directory(g, PATH("order"), .target_size = {2, 3}, .color_mode = CNN_COLOR_GRAYSCALE,
                                                  .no_shuffle = 1, .workers = -1);
    for (int i = 0; f && i < 5; i++) {
        const char *name = cnn_flow_filename(f, i);
        CHECK(name && strstr(name, files[want_order[i]] + 6), "flow file %d: %s, not %s", i, name ? name : "NULL",
              files[want_order[i]]);
    }
    CHECK(f != NULL, "flow: %s", cnn_last_error());
    cnn_flow_free(f);
    cnn_datagen_free(g);
}

/* ------------------------------------------------------- cnn_load_dataset */

static void test_load_dataset(void) {
    char pathbuf[256];
    test_begin("cnn_load_dataset: image folder");
    cnn_dataset *d = cnn_load_dataset(PATH("imgs"));
    CHECK(d && d->n == 6 && d->h == IH && d->w == IW && d->c == 3 && d->num_classes == 3, "image folder: %s",
          cnn_last_error());
    cnn_dataset_free(d);

    test_begin("cnn_load_dataset: CIFAR-10 folder with only test_batch.bin, and a .bin file");
    {
        enum { N = 10000, REC = 3073 };
        unsigned char *b = (unsigned char *)malloc((size_t)N * REC);
        for (size_t i = 0; i < N; i++) {
            b[i * REC] = (unsigned char)(i % 10);
            for (int j = 1; j < REC; j++) b[i * REC + j] = (unsigned char)(i + j);
        }
        mkdir(PATH("cifar"), 0700);
        CHECK(write_bytes(PATH("cifar/test_batch.bin"), b, (size_t)N * REC), "write");
        free(b);
        for (int pass = 0; pass < 2; pass++) {
            d = cnn_load_dataset(pass ? PATH("cifar/test_batch.bin") : PATH("cifar"));
            CHECK(d != NULL, "%s: %s", pass ? "file" : "folder", cnn_last_error());
            if (!d) continue;
            CHECK(d->n == N && d->h == 32 && d->w == 32 && d->c == 3, "shape %d %dx%dx%d", d->n, d->h, d->w, d->c);
            CHECK(d->labels[0] == 0 && d->labels[13] == 3 && d->labels[N - 1] == 9, "labels");
            /* record 5, pixel (y 2, x 3), green: planar byte 1 + 1024 + 2*32 + 3 */
            CHECK(d->images[(size_t)5 * 3072 + (2 * 32 + 3) * 3 + 1] == (unsigned char)(5 + 1 + 1024 + 67),
                  "pixel layout");
            cnn_dataset_free(d);
        }
    }

    test_begin("cnn_load_dataset: bad inputs");
    cnn_set_error(0, "%s", "");
    CHECK(cnn_load_dataset(NULL) == NULL && has_error(), "NULL");
    CHECK(cnn_load_dataset(PATH("does_not_exist")) == NULL && error_mentions("does_not_exist"), "missing: '%s'",
          cnn_last_error());
    CHECK(cnn_load_dataset(PATH("imgs/readme.txt")) == NULL && error_mentions("readme.txt"), "not a dataset: '%s'",
          cnn_last_error());
    CHECK(cnn_load_dataset(PATH("empty")) == NULL && has_error(), "empty folder");
}

/* ------------------------------------------------------------------- PNG */

static void test_write_png(void) {
    char pathbuf[256];
    unsigned char px[3 * 2 * 4];
    test_begin("cnn_write_png round trip");
    for (int i = 0; i < 24; i++) px[i] = (unsigned char)(i * 11);
    for (int c = 1; c <= 4; c++) {
        int w, h, comp;
        CHECK(cnn_write_png(PATH("w.png"), 3, 2, c, px) == CNN_OK, "c=%d: %s", c, cnn_last_error());
        unsigned char *back = stbi_load(PATH("w.png"), &w, &h, &comp, 0);
        CHECK(back && w == 3 && h == 2 && comp == c && memcmp(back, px, (size_t)6 * c) == 0, "read back c=%d", c);
        stbi_image_free(back);
    }
    test_begin("cnn_write_png bad inputs");
    cnn_set_error(0, "%s", "");
    CHECK(cnn_write_png(NULL, 3, 2, 3, px) == CNN_ERR_ARG && has_error(), "NULL path");
    CHECK(cnn_write_png(PATH("w.png"), 3, 2, 3, NULL) == CNN_ERR_ARG, "NULL pixels");
    CHECK(cnn_write_png(PATH("w.png"), 0, 2, 3, px) == CNN_ERR_ARG, "zero width");
    CHECK(cnn_write_png(PATH("w.png"), 3, -2, 3, px) == CNN_ERR_ARG, "negative height");
    CHECK(cnn_write_png(PATH("w.png"), 3, 2, 5, px) == CNN_ERR_ARG, "5 channels");
    CHECK(cnn_write_png(PATH("no/such/dir/w.png"), 3, 2, 3, px) == CNN_ERR_IO && error_mentions("no/such/dir"),
          "unwritable: '%s'", cnn_last_error());
}

/* A history as cnn_fit makes it: values arrays from malloc, freed by cnn_history_free. */
static cnn_history *make_history(int epochs, const char *const *keys, int n_keys) {
    cnn_history *h = (cnn_history *)calloc(1, sizeof *h);
    h->epochs = epochs;
    h->capacity = epochs;
    h->n_keys = n_keys;
    for (int k = 0; k < n_keys; k++) {
        snprintf(h->keys[k], sizeof h->keys[k], "%s", keys[k]);
        h->values[k] = (double *)malloc(sizeof(double) * (epochs > 0 ? epochs : 1));
        for (int e = 0; e < epochs; e++) {
            double t = epochs > 1 ? (double)e / (epochs - 1) : 0;
            int acc = strstr(keys[k], "acc") != NULL, val = strncmp(keys[k], "val_", 4) == 0;
            h->values[k][e] = acc ? 0.35 + 0.5 * t - 0.08 * val * t : 1.9 - 1.2 * t + 0.3 * val * t * t;
        }
    }
    return h;
}

/* Counts of non-white, blue-ish (train) and orange-ish (validation) pixels. */
static void count_colours(const unsigned char *p, int n, int *ink, int *blue, int *orange) {
    *ink = *blue = *orange = 0;
    for (int i = 0; i < n; i++, p += 3) {
        *ink += p[0] < 250 || p[1] < 250 || p[2] < 250;
        *blue += p[2] > p[0] + 80 && p[2] > 120;
        *orange += p[0] > p[2] + 120 && p[1] > 80;
    }
}

static void test_plot(void) {
    char pathbuf[256];
    static const char *const all[4] = {"loss", "accuracy", "val_loss", "val_accuracy"};
    int w, h, comp, ink, blue, orange;
    unsigned char *img;

    test_begin("history plot: 30 epochs with a NaN");
    cnn_history *hist = make_history(30, all, 4);
    hist->values[2][7] = NAN;
    hist->values[3][0] = NAN;
    CHECK(cnn_history_plot_png(hist, PATH("plot.png")) == CNN_OK, "%s", cnn_last_error());
    img = stbi_load(PATH("plot.png"), &w, &h, &comp, 3);
    CHECK(img && w == 1000 && h == 400, "read back %dx%d", w, h);
    if (img) {
        count_colours(img, w * h, &ink, &blue, &orange);
        CHECK(ink > 5000 && blue > 400 && orange > 400, "ink %d blue %d orange %d", ink, blue, orange);
        /* the left half (loss) and right half (accuracy) both have curves */
        int lb = 0, rb = 0;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                const unsigned char *q = img + 3 * (y * w + x);
                if (q[2] > q[0] + 80 && q[2] > 120) *(x < w / 2 ? &lb : &rb) += 1;
            }
        CHECK(lb > 200 && rb > 200, "curves in both panels (%d, %d)", lb, rb);
        stbi_image_free(img);
    }
    if (getenv("CNN_TEST_PLOT")) cnn_history_plot_png(hist, getenv("CNN_TEST_PLOT"));
    cnn_history_free(hist);

    test_begin("history plot: 1 epoch, train only, all NaN, large values");
    hist = make_history(1, all, 4);
    CHECK(cnn_history_plot_png(hist, PATH("plot1.png")) == CNN_OK, "1 epoch: %s", cnn_last_error());
    img = stbi_load(PATH("plot1.png"), &w, &h, &comp, 3);
    CHECK(img != NULL, "1 epoch read back");
    if (img) {
        count_colours(img, w * h, &ink, &blue, &orange);
        CHECK(blue > 20 && orange > 20, "1 epoch: points drawn (blue %d, orange %d)", blue, orange);
        stbi_image_free(img);
    }
    cnn_history_free(hist);
    hist = make_history(12, all, 2); /* loss and accuracy only: no validation legend entry */
    CHECK(cnn_history_plot_png(hist, PATH("plot2.png")) == CNN_OK, "train only: %s", cnn_last_error());
    img = stbi_load(PATH("plot2.png"), &w, &h, &comp, 3);
    if (img) {
        count_colours(img, w * h, &ink, &blue, &orange);
        CHECK(blue > 200 && orange == 0, "train only: blue %d orange %d", blue, orange);
        stbi_image_free(img);
    }
    for (int e = 0; e < 12; e++) hist->values[0][e] = hist->values[1][e] = NAN;
    CHECK(cnn_history_plot_png(hist, PATH("plot3.png")) == CNN_OK, "all NaN: %s", cnn_last_error());
    for (int e = 0; e < 12; e++) { hist->values[0][e] = 1e9 * (e + 1); hist->values[1][e] = INFINITY; }
    hist->values[1][3] = 0.5;
    CHECK(cnn_history_plot_png(hist, PATH("plot4.png")) == CNN_OK, "large values: %s", cnn_last_error());
    cnn_history_free(hist);
    hist = make_history(400, all, 4); /* many epochs */
    CHECK(cnn_history_plot_png(hist, PATH("plot5.png")) == CNN_OK, "400 epochs: %s", cnn_last_error());
    cnn_history_free(hist);

    test_begin("history plot: bad inputs");
    hist = make_history(3, all, 4);
    cnn_set_error(0, "%s", "");
    CHECK(cnn_history_plot_png(NULL, PATH("p.png")) == CNN_ERR_ARG && has_error(), "NULL history");
    CHECK(cnn_history_plot_png(hist, NULL) == CNN_ERR_ARG, "NULL path");
    CHECK(cnn_history_plot_png(hist, PATH("no/such/dir/p.png")) == CNN_ERR_IO && error_mentions("no/such/dir"),
          "unwritable: '%s'", cnn_last_error());
    cnn_history_free(hist);
    hist = make_history(0, all, 4);
    CHECK(cnn_history_plot_png(hist, PATH("p.png")) == CNN_ERR_ARG && error_mentions("empty"), "no epochs: '%s'",
          cnn_last_error());
    cnn_history_free(hist);
    static const char *const other[1] = {"lr"};
    hist = make_history(3, other, 1);
    CHECK(cnn_history_plot_png(hist, PATH("p.png")) == CNN_ERR_ARG, "no loss/accuracy keys");
    cnn_history_free(hist);
    hist = make_history(3, other, 0);
    CHECK(cnn_history_plot_png(hist, PATH("p.png")) == CNN_ERR_ARG, "no keys");
    cnn_history_free(hist);
}

/* stb_image reads the missing pixels of a cut BMP as zeros; the loader must not */
static void test_truncated_bmp(void) {
    test_begin("a truncated BMP is an error naming it, or skipped when asked");
    char pathbuf[256], full[256];
    unsigned char px[8 * 8 * 3];
    pattern(px, 3, 7);
    mkdir(PATH("cut"), 0755);
    mkdir(PATH("cut/a"), 0755);
    mkdir(PATH("cut/b"), 0755);
    stbi_write_bmp(PATH("cut/a/whole.bmp"), 8, 8, 3, px);
    stbi_write_bmp(PATH("cut/b/whole.bmp"), 8, 8, 3, px);
    snprintf(full, sizeof full, "%s", PATH("cut/b/whole.bmp"));
    size_t n = 0;
    unsigned char *bytes = read_bytes(full, &n);
    CHECK(bytes && n > 100, "could not write the BMP");
    if (!bytes) return;
    CHECK(write_bytes(PATH("cut/b/cut.bmp"), bytes, n - 60), "could not write the cut BMP");
    free(bytes);
    cnn_dataset *d = cnn_load_image_dir(PATH("cut"));
    CHECK(!d && error_mentions("cut.bmp") && error_mentions("truncated"), "want an error naming cut.bmp: %s", cnn_last_error());
    cnn_dataset_free(d);
    d = cnn_load_image_dir(PATH("cut"), .skip_bad = 1);
    CHECK(d && d->n == 2, "skip_bad should keep the 2 whole images: %s", d ? "" : cnn_last_error());
    cnn_dataset_free(d);
}

/* stb_image decodes a BMP or PPM header of zero rows as an image; resizing it
   would read outside its pixels. An error naming the file, or skipped when asked. */
static void test_zero_height(void) {
    test_begin("an image of zero rows is an error naming it, or skipped when asked");
    char pathbuf[256];
    unsigned char px[8 * 8 * 3];
    pattern(px, 3, 11);
    mkdir(PATH("flat"), 0755);
    mkdir(PATH("flat/a"), 0755);
    mkdir(PATH("flat/b"), 0755);
    stbi_write_bmp(PATH("flat/a/whole.bmp"), 8, 8, 3, px);
    stbi_write_bmp(PATH("flat/b/whole.bmp"), 8, 8, 3, px);
    const char *ppm = "P6\n4 0\n255\n"; /* 4 columns, 0 rows */
    CHECK(write_bytes(PATH("flat/a/a_zero.ppm"), ppm, strlen(ppm)), "could not write the PPM");
    unsigned char out[8 * 8 * 3];
    CHECK(cnn_load_image(PATH("flat/a/a_zero.ppm"), 8, 8, 3, CNN_INTERP_DEFAULT, 0, out) < 0 &&
              error_mentions("a_zero.ppm") && error_mentions("no pixels"),
          "cnn_load_image: want an error naming a_zero.ppm: %s", cnn_last_error());
    cnn_dataset *d = cnn_load_image_dir(PATH("flat"), .height = 8, .width = 8);
    CHECK(!d && error_mentions("a_zero.ppm"), "want an error naming a_zero.ppm: %s", cnn_last_error());
    cnn_dataset_free(d);
    d = cnn_load_image_dir(PATH("flat"), .height = 8, .width = 8, .skip_bad = 1);
    CHECK(d && d->n == 2, "skip_bad should keep the 2 whole images: %s", d ? "" : cnn_last_error());
    cnn_dataset_free(d);
    d = cnn_load_image_dir(PATH("flat"), .skip_bad = 1); /* the size from the first header with pixels */
    CHECK(d && d->n == 2 && d->h == 8 && d->w == 8, "the size must come from whole.bmp: %dx%d (%s)", d ? d->h : 0,
          d ? d->w : 0, d ? "" : cnn_last_error());
    cnn_dataset_free(d);
}


/* Files on which Debian's stb_image 2.27 reads or writes out of bounds, and
   headers that claim more pixels than the memory limit: refused before stb sees
   them, with the file and the reason named (under ASan in make test). */
static void test_hostile_images(void) {
    char pathbuf[256];
    unsigned char px[8 * 8 * 3], out[8 * 8 * 3];
    size_t n = 0;
    pattern(px, 3, 5);
    mkdir(PATH("hostile"), 0755);
    mkdir(PATH("hostile/a"), 0755);
    mkdir(PATH("hostile/b"), 0755);
    stbi_write_png(PATH("hostile/a/whole.png"), 8, 8, 3, px, 24);

    test_begin("a JPEG Huffman table of more than 256 codes is an error, also through the folder loader");
    CHECK(write_bytes(PATH("hostile/b/ok.jpg"), jpeg_6x4, sizeof jpeg_6x4), "could not write ok.jpg");
    unsigned char *jpg = read_bytes(PATH("hostile/b/ok.jpg"), &n);
    CHECK(jpg && n > 100, "could not write the JPEG");
    if (jpg) {
        size_t i = 2;
        int patched = 0;
        while (i + 4 < n && !patched) { /* the first DHT segment: its first table's 16 counts */
            if (jpg[i] == 0xFF && jpg[i + 1] == 0xC4) {
                for (int k = 0; k < 16; k++) jpg[i + 5 + k] = 0xFF; /* 16 x 255 = 4080 codes */
                patched = 1;
            } else if (jpg[i] == 0xFF && jpg[i + 1] != 0xD8) {
                i += 2 + ((size_t)jpg[i + 2] << 8 | jpg[i + 3]);
            } else {
                i++;
            }
        }
        CHECK(patched, "no DHT segment in stb's JPEG");
        CHECK(write_bytes(PATH("hostile/b/huff.jpg"), jpg, n), "could not write huff.jpg");
        free(jpg);
        CHECK(cnn_load_image(PATH("hostile/b/huff.jpg"), 8, 8, 3, CNN_INTERP_DEFAULT, 0, out) == CNN_ERR_FORMAT &&
                  error_mentions("huff.jpg") && error_mentions("4080 codes"),
              "cnn_load_image: %s", cnn_last_error());
        cnn_dataset *d = cnn_load_image_dir(PATH("hostile"));
        CHECK(!d && error_mentions("huff.jpg"), "the folder loader must name huff.jpg: %s", cnn_last_error());
        cnn_dataset_free(d);
        d = cnn_load_image_dir(PATH("hostile"), .skip_bad = 1);
        CHECK(d && d->n == 2, "skip_bad keeps whole.png and ok.jpg: %s", d ? "" : cnn_last_error());
        cnn_dataset_free(d);
        remove(PATH("hostile/b/huff.jpg"));
    }

    test_begin("a JPEG scan using a Huffman table the file does not define is an error (stb would abort)");
    {
        unsigned char sel[sizeof jpeg_6x4];
        size_t i = 2;
        memcpy(sel, jpeg_6x4, sizeof sel);
        while (i + 6 < sizeof sel && !(sel[i] == 0xFF && sel[i + 1] == 0xDA)) i++;
        CHECK(i + 6 < sizeof sel, "no SOS in the JPEG");
        sel[i + 6] = 0x33; /* the first component's DC and AC tables: 3, never defined */
        CHECK(write_bytes(PATH("hostile/b/nosuch.jpg"), sel, sizeof sel), "could not write nosuch.jpg");
        CHECK(cnn_load_image(PATH("hostile/b/nosuch.jpg"), 4, 6, 3, CNN_INTERP_DEFAULT, 0, out) == CNN_ERR_FORMAT &&
                  error_mentions("nosuch.jpg") && error_mentions("does not define"),
              "cnn_load_image: %s", cnn_last_error());
        CHECK(cnn_load_image(PATH("hostile/b/ok.jpg"), 4, 6, 3, CNN_INTERP_DEFAULT, 0, out) == CNN_OK,
              "the same JPEG unchanged: %s", cnn_last_error());
        remove(PATH("hostile/b/nosuch.jpg"));
    }

    test_begin("a 16-bit PNM is refused with its maxval named");
    {
        unsigned char ppm[32 + 2 * 2 * 3 * 2];
        int h = snprintf((char *)ppm, 32, "P6\n2 2\n65535\n");
        for (int i = 0; i < 24; i++) ppm[h + i] = (unsigned char)(i * 9);
        CHECK(write_bytes(PATH("hostile/b/deep.ppm"), ppm, (size_t)h + 24), "could not write deep.ppm");
        CHECK(cnn_load_image(PATH("hostile/b/deep.ppm"), 2, 2, 3, CNN_INTERP_DEFAULT, 0, out) == CNN_ERR_FORMAT &&
                  error_mentions("deep.ppm") && error_mentions("maxval 65535"),
              "cnn_load_image: %s", cnn_last_error());
        cnn_datagen *g = cnn_datagen_new();
        cnn_flow *f = cnn_datagen_flow_from_directory(g, PATH("hostile"), .target_size = {4, 4}, .lazy = 1, .workers = -1);
        CHECK(!f && error_mentions("deep.ppm"), "a lazy flow must name deep.ppm up front: %s", cnn_last_error());
        cnn_flow_free(f);
        cnn_datagen_free(g);
        remove(PATH("hostile/b/deep.ppm"));
    }

    test_begin("a 35-byte GIF claiming 65535 x 65535 pixels is refused by the memory limit, quickly");
    {
        static const unsigned char gif[] = {'G', 'I', 'F', '8', '9', 'a', 0xff, 0xff, 0xff, 0xff, 0x80, 0, 0,
                                            0, 0, 0, 0xff, 0xff, 0xff, 0x2c, 0, 0, 0, 0, 0xff, 0xff, 0xff,
                                            0xff, 0, 2, 2, 0x44, 0x01, 0, 0x3b};
        CHECK(write_bytes(PATH("hostile/b/huge.gif"), gif, sizeof gif), "could not write huge.gif");
        double t0 = cnn_wall_time();
        CHECK(cnn_load_image(PATH("hostile/b/huge.gif"), 8, 8, 3, CNN_INTERP_DEFAULT, 0, out) == CNN_ERR_FORMAT &&
                  error_mentions("huge.gif") && error_mentions("65535 x 65535") && error_mentions("memory limit"),
              "cnn_load_image: %s", cnn_last_error());
        cnn_dataset *d = cnn_load_image_dir(PATH("hostile"), .skip_bad = 1);
        CHECK(d && d->n == 2, "skip_bad keeps the 2 whole images: %s", d ? "" : cnn_last_error());
        cnn_dataset_free(d);
        printf("#   refusing it twice took %.3f s\n", cnn_wall_time() - t0);
        remove(PATH("hostile/b/huge.gif"));
    }

    test_begin("a PNG whose first IDAT chunk is empty decodes as without it; one claiming 2 GB is refused");
    {
        size_t pn = 0;
        unsigned char *png = read_bytes(PATH("hostile/a/whole.png"), &pn), ref[8 * 8 * 3];
        unsigned char *odd = (unsigned char *)malloc(pn + 12);
        size_t at = 8;
        while (png && at + 8 < pn && memcmp(png + at + 4, "IDAT", 4) != 0)
            at += 12 + ((size_t)png[at] << 24 | (size_t)png[at + 1] << 16 | (size_t)png[at + 2] << 8 | png[at + 3]);
        CHECK(png && odd && at + 8 < pn, "no IDAT in stb's PNG");
        if (png && odd && at + 8 < pn) {
            static const unsigned char empty_idat[12] = {0, 0, 0, 0, 'I', 'D', 'A', 'T', 0x35, 0xAF, 0x06, 0x1E};
            memcpy(odd, png, at);
            memcpy(odd + at, empty_idat, 12);
            memcpy(odd + at + 12, png + at, pn - at);
            CHECK(write_bytes(PATH("hostile/empty_idat.png"), odd, pn + 12), "could not write empty_idat.png");
            CHECK(cnn_load_image(PATH("hostile/a/whole.png"), 8, 8, 3, CNN_INTERP_DEFAULT, 0, ref) == CNN_OK &&
                      cnn_load_image(PATH("hostile/empty_idat.png"), 8, 8, 3, CNN_INTERP_DEFAULT, 0, out) == CNN_OK &&
                      memcmp(ref, out, sizeof ref) == 0,
                  "the PNG with an empty IDAT: %s", cnn_last_error());
            /* an IDAT claiming 2 GB in a file of a hundred bytes: stb would allocate it first */
            odd[at + 12] = 0x7f, odd[at + 13] = odd[at + 14] = odd[at + 15] = 0xff;
            CHECK(write_bytes(PATH("hostile/long_idat.png"), odd, pn + 12), "could not write long_idat.png");
            CHECK(cnn_load_image(PATH("hostile/long_idat.png"), 8, 8, 3, CNN_INTERP_DEFAULT, 0, out) == CNN_ERR_FORMAT &&
                      error_mentions("long_idat.png") && error_mentions("claims 2147483647 bytes"),
                  "the PNG whose IDAT claims 2 GB: %s", cnn_last_error());
        }
        free(png);
        free(odd);
    }

    test_begin("cnn_set_memory_limit, cnn_memory_limit, cnn_check_memory");
    {
        const unsigned long long dflt = cnn_memory_limit();
        CHECK(dflt == (4ull << 30), "default limit %llu, want 4 GiB", dflt);
        cnn_set_memory_limit(1000);
        CHECK(cnn_memory_limit() == 1000, "set to 1000: %llu", cnn_memory_limit());
        CHECK(cnn_check_memory("who", "the thing", 1000) == CNN_OK, "1000 bytes are within 1000");
        CHECK(cnn_check_memory("who", "the thing", 1001) == CNN_ERR_MEMORY && error_mentions("who: the thing needs 1001") &&
                  error_mentions("limit of 1000"),
              "1001 bytes: %s", cnn_last_error());
        CHECK(cnn_check_memory(NULL, NULL, 5000) == CNN_ERR_MEMORY, "NULL names still give an error");
        /* the whole 8x8 PNG needs 8 * 8 * 16 = 1024 bytes at most: over 1000 */
        CHECK(cnn_load_image(PATH("hostile/a/whole.png"), 8, 8, 3, CNN_INTERP_DEFAULT, 0, out) == CNN_ERR_FORMAT &&
                  error_mentions("8 x 8 pixels"),
              "a limit of 1000 bytes refuses an 8x8 image: %s", cnn_last_error());
        /* the folder's dataset: 2 images of 4 x 4 x 3 = 96 bytes, each image within the limit */
        cnn_set_memory_limit(8 * 8 * 16);
        cnn_dataset *d = cnn_load_image_dir(PATH("hostile"), .height = 4, .width = 4, .skip_bad = 1);
        CHECK(d && d->n == 2, "96 bytes within 1024: %s", d ? "" : cnn_last_error());
        cnn_dataset_free(d);
        cnn_set_memory_limit(8 * 8 * 16 + 1); /* each 8x8 image decodes, 2 x 20 x 20 x 3 = 2400 bytes do not fit */
        d = cnn_load_image_dir(PATH("hostile"), .height = 20, .width = 20);
        CHECK(!d && error_mentions("folder's images needs 2400 bytes"), "the dataset's 2400 bytes: %s", cnn_last_error());
        cnn_dataset_free(d);
        cnn_datagen *g = cnn_datagen_new();
        cnn_flow *f = cnn_datagen_flow_from_directory(g, PATH("hostile"), .target_size = {20, 20}, .workers = -1);
        CHECK(!f && error_mentions("folder's images needs 2400 bytes"), "flow_from_directory: %s", cnn_last_error());
        cnn_flow_free(f);
        cnn_datagen_free(g);
        cnn_set_memory_limit(0);
        CHECK(cnn_memory_limit() == dflt, "0 restores the default: %llu", cnn_memory_limit());
        CHECK(cnn_load_image(PATH("hostile/a/whole.png"), 8, 8, 3, CNN_INTERP_DEFAULT, 0, out) == CNN_OK,
              "the default limit loads it: %s", cnn_last_error());
    }

    test_begin("gzip: inflated data over the memory limit, or over what the trailer says, is refused");
    {
        enum { BIG = 300000 };
        unsigned char img[16 + 100 * 50 * 60], lab[8 + 100];
        const unsigned char ih[16] = {0, 0, 8, 3, 0, 0, 0, 100, 0, 0, 0, 50, 0, 0, 0, 60};
        const unsigned char lh[8] = {0, 0, 8, 1, 0, 0, 0, 100};
        size_t gn;
        memcpy(img, ih, 16);
        memset(img + 16, 7, sizeof img - 16);
        memcpy(lab, lh, 8);
        memset(lab + 8, 1, 100);
        unsigned char *gz = make_stored_gzip(img, sizeof img, &gn);
        char lab_path[256];
        snprintf(lab_path, sizeof lab_path, "%s", PATH("hostile/lab"));
        CHECK(write_bytes(PATH("hostile/img.gz"), gz, gn) && write_bytes(lab_path, lab, sizeof lab),
              "could not write the IDX files");
        cnn_dataset *d = cnn_load_idx_gz(PATH("hostile/img.gz"), lab_path);
        CHECK(d && d->n == 100, "under the default limit it loads: %s", d ? "" : cnn_last_error());
        cnn_dataset_free(d);
        cnn_set_memory_limit(BIG - 1);
        d = cnn_load_idx_gz(PATH("hostile/img.gz"), lab_path);
        CHECK(!d && error_mentions("img.gz") && error_mentions("300016 bytes") && error_mentions("memory limit"),
              "over the limit: %s", cnn_last_error());
        cnn_dataset_free(d);
        cnn_set_memory_limit(0);
        put_le32(gz + gn - 4, 1000); /* the trailer says 1000 bytes: the data has more */
        CHECK(write_bytes(PATH("hostile/img.gz"), gz, gn), "could not write img.gz");
        d = cnn_load_idx_gz(PATH("hostile/img.gz"), lab_path);
        CHECK(!d && error_mentions("img.gz") && error_mentions("1000 bytes"), "ISIZE 1000: %s", cnn_last_error());
        cnn_dataset_free(d);
        free(gz);
    }
}

/* The whole pipeline with each of its allocations failing in turn: build and
   compile a model, fit it on an augmentation flow (validation data,
   EarlyStopping, ReduceLROnPlateau, ModelCheckpoint, CSVLogger), plot its
   History and write a PNG, evaluate, predict, save, load and predict again.
   Each run fails at the k-th request to CNN_MALLOC/CNN_REALLOC, for every k
   until a run makes fewer requests than k. Every failure must come back as an
   error with a message, at the call that met it; nothing may crash, and nothing
   may leak (make test runs this file under ASan, UBSan and LeakSanitizer).
   CNN_FAULT_STRIDE=s tries every s-th point (default 1, every point);
   CNN_FAULT_WORKERS=w makes the flow's batches on w worker threads (default
   none: made inside the fit), as make fault does. */
static char model_path[128], csv_path[128], plot_path[128], png_path[128];
static int workers = -1;

/* the pipeline once; returns the name of the call that failed (NULL: none) */
static const char *pipeline(void) {
    static const char *const names[3] = {"cat", "dog", "bird"};
    const char *failed = NULL;
    cnn_model *m = cnn_model_new(), *back = NULL;
    cnn_dataset *d = cnn_dataset_new(24, 8, 8, 3, 3);
    cnn_datagen *g = NULL;
    cnn_flow *f = NULL;
    cnn_history *h = NULL;
    cnn_callback *cb[5] = {NULL, NULL, NULL, NULL, NULL};
    cnn_eval_result r;
    float out[24 * 3], x[24 * 192];
    if (!m || !d) { failed = "cnn_model_new / cnn_dataset_new"; goto done; }
    for (int i = 0; i < 24 * 192; i++) d->images[i] = (unsigned char)(i * 11), x[i] = (float)(i % 17) / 17;
    for (int i = 0; i < 24; i++) d->labels[i] = i % 3;
    if (cnn_dataset_set_class_names(d, names, 3)) { failed = "cnn_dataset_set_class_names"; goto done; }
    {
        cnn_node *in = cnn_input(m, 8, 8, 3, "image");
        cnn_node *y = cnn_conv2d(m, in, .filters = 4, .kernel_size = {3, 3}, .activation = CNN_RELU);
        y = cnn_max_pool2d(m, cnn_batch_norm(m, y), .pool_size = {2, 2});
        y = cnn_dropout(m, cnn_flatten(m, y), .rate = 0.25f);
        y = cnn_dense(m, y, .units = 3, .activation = CNN_SOFTMAX);
        if (cnn_model_set_output(m, y)) { failed = "building (cnn_model_set_output)"; goto done; }
    }
    if (cnn_compile(m, .loss = CNN_SPARSE_CATEGORICAL_CROSSENTROPY, .optimizer = cnn_adam(), .metrics = CNN_ACCURACY)) {
        failed = "cnn_compile";
        goto done;
    }
    g = cnn_datagen_new(.rotation_range = 10, .width_shift_range = 0.1f, .horizontal_flip = 1);
    if (!g) { failed = "cnn_datagen_new"; goto done; }
    f = cnn_datagen_flow(g, d, .batch_size = 8, .seed = 3, .workers = workers);
    if (!f) { failed = "cnn_datagen_flow"; goto done; }
    cb[0] = cnn_early_stopping(.patience = 2);
    cb[1] = cnn_reduce_lr_on_plateau(.patience = 1);
    cb[2] = cnn_model_checkpoint(.filepath = model_path);
    cb[3] = cnn_csv_logger(.filename = csv_path);
    if (!cb[0] || !cb[1] || !cb[2] || !cb[3]) { failed = "the callbacks"; goto done; }
    h = cnn_fit_source(m, cnn_flow_source(f), .epochs = 2, .validation_data = d, .callbacks = cb);
    if (!h) { failed = "cnn_fit_source"; goto done; }
    if (cnn_history_plot_png(h, plot_path)) { failed = "cnn_history_plot_png"; goto done; }
    if (cnn_write_png(png_path, 8, 8, 3, d->images)) { failed = "cnn_write_png"; goto done; }
    if (cnn_evaluate(m, d, 8, &r)) { failed = "cnn_evaluate"; goto done; }
    if (cnn_predict(m, x, 24, 8, out)) { failed = "cnn_predict"; goto done; }
    if (cnn_save(m, model_path)) { failed = "cnn_save"; goto done; }
    if (!(back = cnn_load(model_path))) { failed = "cnn_load"; goto done; }
    if (cnn_predict(back, x, 24, 8, out)) { failed = "cnn_predict (loaded)"; goto done; }
done:
    for (int i = 0; i < 4; i++) cnn_callback_free(cb[i]);
    cnn_history_free(h);
    cnn_flow_free(f);
    cnn_datagen_free(g);
    cnn_model_free(back);
    cnn_model_free(m);
    cnn_dataset_free(d);
    return failed;
}

static void test_pipeline_allocation_failures(void) {
    const char *env = getenv("CNN_FAULT_STRIDE");
    const long stride = env && atol(env) > 0 ? atol(env) : 1;
    const char *wenv = getenv("CNN_FAULT_WORKERS");
    if (wenv && atoi(wenv) > 0) workers = atoi(wenv);
    long k, points = 0, failures = 0, silent = 0;
    snprintf(model_path, sizeof model_path, "%s/fault_model.cnn", tmp_root);
    snprintf(csv_path, sizeof csv_path, "%s/fault_log.csv", tmp_root);
    snprintf(plot_path, sizeof plot_path, "%s/fault_plot.png", tmp_root);
    snprintf(png_path, sizeof png_path, "%s/fault_image.png", tmp_root);
    test_begin("the pipeline (build, compile, fit on a flow with callbacks, plot, PNG, evaluate, predict, save, "
               "load) with each allocation failing in turn");
    cnn_set_error(CNN_OK, "%s", "");
    CHECK(pipeline() == NULL, "the pipeline with no failure: %s", cnn_last_error());
    for (k = 1;; k += stride) {
        requests = 0, fail_at = k;
        cnn_set_error(CNN_OK, "%s", "");
        const char *failed = pipeline();
        const long made = __atomic_load_n(&requests, __ATOMIC_SEQ_CST);
        fail_at = 0;
        if (made < k) { CHECK(failed == NULL, "no allocation failed, yet %s did: %s", failed, cnn_last_error()); break; }
        points++;
        failures += failed != NULL;
        if (!failed) continue; /* a failure the library absorbed (a buffer it can do without) */
        if (!cnn_last_error()[0]) {
            silent++;
            CHECK(0, "allocation %ld failing: %s failed with no message", k, failed);
        }
    }
    printf("#   %ld allocation points tried (every %ld, flow workers %d), %ld ended in an error, %ld without a "
           "message\n", points, stride, workers < 0 ? 0 : workers, failures, silent);
}


/* ---------------------------------------------------------------- NumPy .npy / .npz */
/* The files come from NumPy itself: tests/make_npy_files.py (run with Debian's
   /usr/bin/python3 and python3-numpy) writes them into tmp_root/npy, with values
   from formulas computed again here. */

enum { NP_N = 6, NP_H = 4, NP_W = 3, NP_C = 2 };
static int np_pixel(int i, int y, int x, int ch) { return (i * 7 + y * 5 + x * 3 + ch * 11) % 256; }
static int np_label(int i) { return (i * 3) % 5; }

/* d holds the script's first n images with c channels and labels (classes given) */
static int np_same(const cnn_dataset *d, int n, int c, int classes) {
    if (!d || d->n != n || d->h != NP_H || d->w != NP_W || d->c != c || d->num_classes != classes) return 0;
    for (int i = 0; i < n; i++) {
        if (d->labels[i] != np_label(i)) return 0;
        for (int y = 0; y < NP_H; y++)
            for (int x = 0; x < NP_W; x++)
                for (int ch = 0; ch < c; ch++)
                    if (d->images[((i * NP_H + y) * NP_W + x) * c + ch] != np_pixel(i, y, x, ch)) return 0;
    }
    return 1;
}

/* a holds the float images (x / 255, exact: float32 division in NumPy and here) */
static int np_same_float(const cnn_float_arrays *a, int h, int w, int c) {
    if (!a || a->n != NP_N || a->h != h || a->w != w || a->c != c) return 0;
    for (int i = 0; i < NP_N; i++)
        for (int y = 0; y < NP_H; y++)
            for (int x = 0; x < NP_W; x++)
                for (int ch = 0; ch < NP_C; ch++)
                    if (a->x[((i * NP_H + y) * NP_W + x) * NP_C + ch] != (float)np_pixel(i, y, x, ch) / 255.0f)
                        return 0;
    return 1;
}

static char np_dir[128];
static double np_t0;
static const char *NP(char *buf, size_t size, const char *name) {
    snprintf(buf, size, "%s/%s", np_dir, name);
    return buf;
}

/* a loader call that must fail with CNN_ERR_FORMAT-style NULL and name each of the words */
#define NP_ERR(call, w1, w2)                                                                        \
    do {                                                                                            \
        cnn_set_error(0, "%s", "");                                                                 \
        cnn_dataset *bad_ = (call);                                                                 \
        CHECK(!bad_ && error_mentions(w1) && error_mentions(w2), "%s: want an error naming '%s' and '%s', got '%s'", \
              #call, w1, w2, cnn_last_error());                                                     \
        cnn_dataset_free(bad_);                                                                     \
    } while (0)

static void test_numpy(void) {
    char a[256], b[256], cmd[512];
    np_t0 = cnn_wall_time();
    snprintf(np_dir, sizeof np_dir, "%s/npy", tmp_root);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/make_npy_files.py '%s'", np_dir);
    test_begin("numpy: tests/make_npy_files.py writes the files");
    if (system(cmd) != 0) {
        CHECK(0, "'%s' failed (needs /usr/bin/python3 with numpy: scripts/ensure-deps.sh test)", cmd);
        return;
    }

    test_begin("cnn_load_npy: uint8 images with int64, int32, uint8, big-endian uint16, (n, 1) and one-hot labels");
    static const char *const ys[] = {"y_i64.npy", "y_i32.npy", "y_u8.npy", "y_u16_be.npy", "y_n1.npy",
                                     "y_onehot_f32.npy", "y_onehot_u8.npy"};
    for (size_t k = 0; k < sizeof ys / sizeof *ys; k++) {
        cnn_dataset *d = cnn_load_npy(NP(a, sizeof a, "x.npy"), NP(b, sizeof b, ys[k]));
        CHECK(np_same(d, NP_N, NP_C, 5), "x.npy + %s: %s", ys[k], d ? "values differ" : cnn_last_error());
        cnn_dataset_free(d);
    }
    test_begin("cnn_load_npy: (n, h, w) grey images, format versions 2.0 and 3.0, from memory");
    cnn_dataset *d = cnn_load_npy(NP(a, sizeof a, "x_grey.npy"), NP(b, sizeof b, "y_u8.npy"));
    CHECK(np_same(d, NP_N, 1, 5), "x_grey.npy: %s", d ? "values differ" : cnn_last_error());
    cnn_dataset_free(d);
    for (int v = 2; v <= 3; v++) {
        char name[32];
        snprintf(name, sizeof name, "x_v%d.npy", v);
        d = cnn_load_npy(NP(a, sizeof a, name), NP(b, sizeof b, "y_i64.npy"));
        CHECK(np_same(d, NP_N, NP_C, 5), "%s: %s", name, d ? "values differ" : cnn_last_error());
        cnn_dataset_free(d);
    }
    size_t xl, yl;
    unsigned char *xb = read_bytes(NP(a, sizeof a, "x.npy"), &xl), *yb = read_bytes(NP(b, sizeof b, "y_i64.npy"), &yl);
    d = cnn_load_npy_memory(xb, xl, yb, yl);
    CHECK(np_same(d, NP_N, NP_C, 5), "memory: %s", d ? "values differ" : cnn_last_error());
    cnn_dataset_free(d);

    test_begin("cnn_load_npy: bad files are errors naming the file and the field");
    NP_ERR(cnn_load_npy(NP(a, sizeof a, "x_fortran.npy"), NP(b, sizeof b, "y_i64.npy")), "x_fortran.npy",
           "fortran_order: True is not supported: save with np.ascontiguousarray");
    NP_ERR(cnn_load_npy(NP(a, sizeof a, "x.npy"), NP(b, sizeof b, "y_bool.npy")), "y_bool.npy", "'|b1' (bool)");
    NP_ERR(cnn_load_npy(NP(a, sizeof a, "x.npy"), NP(b, sizeof b, "y_complex.npy")), "y_complex.npy", "complex64");
    NP_ERR(cnn_load_npy(NP(a, sizeof a, "x.npy"), NP(b, sizeof b, "y_short.npy")), "y_short.npy",
           "5 labels for 6 images");
    NP_ERR(cnn_load_npy(NP(a, sizeof a, "x.npy"), NP(b, sizeof b, "y_neg.npy")), "y_neg.npy",
           "label -1 of sample 0 is out of range");
    NP_ERR(cnn_load_npy(NP(a, sizeof a, "x.npy"), NP(b, sizeof b, "y_3d.npy")), "y_3d.npy", "shape (6, 1, 1)");
    NP_ERR(cnn_load_npy(NP(a, sizeof a, "x.npy"), NP(b, sizeof b, "y_soft.npy")), "y_soft.npy",
           "row 0 is not one-hot");
    NP_ERR(cnn_load_npy(NP(a, sizeof a, "x_2d.npy"), NP(b, sizeof b, "y_i64.npy")), "x_2d.npy", "shape (6, 24)");
    NP_ERR(cnn_load_npy(NP(a, sizeof a, "x_f32_as_images.npy"), NP(b, sizeof b, "y_i64.npy")), "'<f4' (float32)",
           "cnn_load_npy_float");
    NP_ERR(cnn_load_npy(NP(a, sizeof a, "x_truncated.npy"), NP(b, sizeof b, "y_i64.npy")), "x_truncated.npy",
           "data truncated: shape (6, 4, 3, 2)");
    NP_ERR(cnn_load_npy(NP(a, sizeof a, "data.npz"), NP(b, sizeof b, "y_i64.npy")), "data.npz", "bad magic");
    NP_ERR(cnn_load_npy(NP(a, sizeof a, "missing.npy"), NP(b, sizeof b, "y_i64.npy")), "missing.npy", "cannot open");
    NP_ERR(cnn_load_npy(NULL, NP(b, sizeof b, "y_i64.npy")), "cnn_load_npy", "NULL");
    NP_ERR(cnn_load_npy(NP(a, sizeof a, "x.npy"), NULL), "cnn_load_npy", "labels_path is NULL");
    NP_ERR(cnn_load_npy_memory(xb, 9, yb, yl), "images", "bad magic");
    NP_ERR(cnn_load_npy_memory(xb, xl, NULL, 0), "labels", "NULL");
    /* hand-made headers: every field checked */
    static const struct { const char *header, *want; } heads[] = {
        {"{'descr': '|u1', 'fortran_order': False, 'shape': (2, 2, 2), }", NULL},
        {"{'descr': '|u1', 'fortran_order': False}", "no 'shape' key"},
        {"{'descr': '|u1', 'fortran_order': Maybe, 'shape': (2, 2, 2)}", "fortran_order is not True or False"},
        {"{'descr': '|u1', 'fortran_order': False, 'shape': (2, 2, x)}", "bad header dict"},
        {"{'descr': '|u1', 'fortran_order': False, 'shape': (2, 2, 2), 'extra': 1}", "unknown key 'extra'"},
        {"['descr', '|u1']", "bad header dict"},
        {"{'descr': [('a', '<i4')], 'fortran_order': False, 'shape': (2, 2, 2)}", "structured dtypes"},
        {"{'descr': '<U5', 'fortran_order': False, 'shape': (2, 2, 2)}", "unicode string"},
        {"{'descr': '|u1', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296)}", "overflows"},
        {"{'descr': '|u1', 'fortran_order': False, 'shape': (99999999999999999999, 1, 1)}", "overflows"},
        {"{'descr': '|u1', 'fortran_order': False, 'shape': (1, 1, 1, 1, 1, 1, 1, 1, 1)}", "more than 8 dimensions"},
        {"{'descr': '|u1', 'fortran_order': False, 'shape': (2, 2, 2)} junk", "text after the closing"},
    };
    for (size_t k = 0; k < sizeof heads / sizeof *heads; k++) {
        unsigned char f[256] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
        size_t hl = strlen(heads[k].header);
        f[8] = (unsigned char)hl;
        memcpy(f + 10, heads[k].header, hl);
        size_t fl = 10 + hl + 8; /* 8 data bytes: (2, 2, 2) of uint8 */
        static const char yh[] = "{'descr': '|u1', 'fortran_order': False, 'shape': (2,), }\n";
        unsigned char y2[128] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, sizeof yh - 1, 0};
        memcpy(y2 + 10, yh, sizeof yh - 1);
        y2[10 + sizeof yh - 1] = 1; /* labels 1, 0 */
        d = cnn_load_npy_memory(f, fl, y2, 10 + sizeof yh - 1 + 2);
        if (heads[k].want) CHECK(!d && error_mentions(heads[k].want) && error_mentions("images"),
                                 "header %s: got '%s'", heads[k].header, d ? "a dataset" : cnn_last_error());
        else CHECK(d && d->n == 2 && d->h == 2 && d->w == 2 && d->c == 1 && d->labels[0] == 1 && d->num_classes == 2,
                   "header %s: %s", heads[k].header, d ? "wrong dataset" : cnn_last_error());
        cnn_dataset_free(d);
    }
    {
        unsigned char f[32] = {0x93, 'N', 'U', 'M', 'P', 'Y', 4, 0, 0, 0, 0, 0};
        NP_ERR(cnn_load_npy_memory(f, sizeof f, yb, yl), "version 4.0", "not supported");
        f[6] = 2; f[11] = 0x10; /* a 2.0 header of 256 MB in a 32-byte file */
        NP_ERR(cnn_load_npy_memory(f, sizeof f, yb, yl), "header length", "runs past the end");
    }
    test_begin("cnn_load_npy: the memory limit");
    cnn_set_memory_limit(100);
    NP_ERR(cnn_load_npy(NP(a, sizeof a, "x.npy"), NP(b, sizeof b, "y_i64.npy")), "cnn_load_npy", "memory limit");
    cnn_set_memory_limit(0);
    free(xb);
    free(yb);

    test_begin("cnn_load_npy_float: float32, big-endian float64, (n, features); y one-hot, indices or none");
    cnn_float_arrays *f = cnn_load_npy_float(NP(a, sizeof a, "xf32.npy"), NP(b, sizeof b, "y_onehot_f32.npy"));
    CHECK(np_same_float(f, NP_H, NP_W, NP_C) && f->y_width == 5 && f->num_classes == 5, "xf32.npy: %s",
          f ? "values differ" : cnn_last_error());
    for (int i = 0; f && i < NP_N; i++)
        for (int j = 0; j < 5; j++) CHECK(f->y[i * 5 + j] == (j == np_label(i)), "one-hot y[%d][%d]", i, j);
    cnn_float_arrays_free(f);
    f = cnn_load_npy_float(NP(a, sizeof a, "xf64_be.npy"), NP(b, sizeof b, "y_i64.npy"));
    CHECK(np_same_float(f, NP_H, NP_W, NP_C) && f->y_width == 1 && f->num_classes == 5, "xf64_be.npy: %s",
          f ? "values differ" : cnn_last_error());
    for (int i = 0; f && i < NP_N; i++) CHECK(f->y[i] == np_label(i), "y[%d] = %g", i, f->y[i]);
    cnn_float_arrays_free(f);
    f = cnn_load_npy_float(NP(a, sizeof a, "xf_flat.npy"), NULL);
    CHECK(f && f->n == NP_N && f->h == 1 && f->w == 1 && f->c == NP_H * NP_W * NP_C && !f->y && !f->y_width &&
          f->x[NP_H * NP_W * NP_C + 1] == (float)np_pixel(1, 0, 0, 1) / 255.0f,
          "xf_flat.npy: %s", f ? "wrong arrays" : cnn_last_error());
    cnn_float_arrays_free(f);
    f = cnn_load_npy_float(NP(a, sizeof a, "xf32.npy"), NP(b, sizeof b, "y_soft.npy"));
    CHECK(f && f->y_width == 5 && f->num_classes == 0 && f->y[7] == 0.2f, "soft targets: %s",
          f ? "wrong arrays" : cnn_last_error());
    cnn_float_arrays_free(f);
    f = cnn_load_npy_float(NP(a, sizeof a, "x.npy"), NULL);
    CHECK(!f && error_mentions("x.npy") && error_mentions("'|u1' (uint8)") && error_mentions("cnn_load_npy"),
          "uint8 x: '%s'", cnn_last_error());
    f = cnn_load_npy_float(NP(a, sizeof a, "xf32.npy"), NP(b, sizeof b, "y_short.npy"));
    CHECK(!f && error_mentions("y_short.npy") && error_mentions("for 6 samples"), "short y: '%s'", cnn_last_error());
    f = cnn_load_npy_float(NP(a, sizeof a, "xf32.npy"), NP(b, sizeof b, "y_neg.npy"));
    CHECK(!f && error_mentions("y_neg.npy") && error_mentions("label -1"), "negative y: '%s'", cnn_last_error());
    f = cnn_load_npy_float_memory(NULL, 0, NULL, 0);
    CHECK(!f && error_mentions("x: the data is NULL"), "NULL: '%s'", cnn_last_error());

    test_begin("cnn_float_source: passes in order and shuffled; trains with cnn_fit_source");
    f = cnn_load_npy_float(NP(a, sizeof a, "xf32.npy"), NP(b, sizeof b, "y_i64.npy"));
    cnn_batch_source *src = f ? cnn_float_source(f, 0, 0) : NULL;
    cnn_batch_source *shuf = f ? cnn_float_source(f, 1, 7) : NULL;
    CHECK(src && shuf && src->samples == NP_N && src->h == NP_H && src->w == NP_W && src->c == NP_C &&
          src->y_width == 1, "cnn_float_source: %s", cnn_last_error());
    if (src && shuf) {
        float x[NP_N * NP_H * NP_W * NP_C], y[NP_N];
        int seen[NP_N] = {0}, got;
        src->reset(src->ctx, 0);
        got = src->next(src->ctx, 4, x, y);
        CHECK(got == 4 && y[3] == np_label(3) && x[NP_H * NP_W * NP_C] == f->x[NP_H * NP_W * NP_C], "first batch");
        got = src->next(src->ctx, 4, x, y);
        CHECK(got == 2 && y[1] == np_label(5) && src->next(src->ctx, 4, x, y) == 0, "second batch, end of pass");
        shuf->reset(shuf->ctx, 1);
        got = shuf->next(shuf->ctx, NP_N, x, y);
        for (int i = 0; i < got; i++) /* each row is some sample's, each sample once */
            for (int k = 0; k < NP_N; k++)
                if (!memcmp(x + i * NP_H * NP_W * NP_C, f->x + k * NP_H * NP_W * NP_C,
                            sizeof(float) * NP_H * NP_W * NP_C) && y[i] == f->y[k]) seen[k]++;
        for (int k = 0; k < NP_N; k++) CHECK(got == NP_N && seen[k] == 1, "shuffled pass: sample %d seen %d times", k, seen[k]);
        /* a softmax regression on the float arrays: fit_source with the same arrays as validation */
        cnn_model *m = cnn_model_new();
        cnn_node *in = cnn_input(m, NP_H, NP_W, NP_C, "input");
        cnn_node *out = cnn_dense(m, cnn_flatten(m, in), .units = 5, .activation = CNN_SOFTMAX);
        cnn_history *h = NULL;
        cnn_eval_result r0 = {0, 0}, r1 = {0, 0};
        if (!cnn_model_set_output(m, out) &&
            !cnn_compile(m, .loss = CNN_SPARSE_CATEGORICAL_CROSSENTROPY, .optimizer = cnn_adam(.learning_rate = 0.05f),
                         .metrics = CNN_ACCURACY) &&
            !cnn_evaluate_source(m, src, 0, 0, &r0))
            h = cnn_fit_source(m, shuf, .epochs = 30, .batch_size = 3, .validation_source = src);
        CHECK(h && h->epochs == 30 && !cnn_evaluate_source(m, src, 0, 0, &r1) && r1.loss < r0.loss,
              "fit on float arrays: %s (loss %g -> %g)", h ? "no progress" : cnn_last_error(), r0.loss, r1.loss);
        cnn_history_free(h);
        cnn_model_free(m);
    }
    cnn_float_source_free(src);
    cnn_float_source_free(shuf);
    CHECK(!cnn_float_source(NULL, 0, 0) && error_mentions("cnn_float_source"), "NULL arrays: '%s'", cnn_last_error());
    if (f) {
        float *y = f->y;
        f->y = NULL;
        CHECK(!cnn_float_source(f, 0, 0) && error_mentions("no targets"), "no y: '%s'", cnn_last_error());
        f->y = y;
    }
    cnn_float_arrays_free(f);
}

static void test_npz(void) {
    char a[256], cmd[64];
    (void)cmd;
    test_begin("cnn_load_npz: np.savez, np.savez_compressed, ZIP64 extras in the central directory, x_test");
    static const char *const zips[] = {"data.npz", "data_z.npz", "zip64_cd.npz"};
    for (size_t k = 0; k < sizeof zips / sizeof *zips; k++) {
        cnn_dataset *d = cnn_load_npz(NP(a, sizeof a, zips[k]), "x_train", "y_train");
        CHECK(np_same(d, NP_N, NP_C, 5), "%s: %s", zips[k], d ? "values differ" : cnn_last_error());
        cnn_dataset_free(d);
    }
    cnn_dataset *d = cnn_load_npz(NP(a, sizeof a, "data_z.npz"), "x_test.npy", "y_test");
    CHECK(np_same(d, 2, NP_C, 4), "x_test: %s", d ? "values differ" : cnn_last_error());
    cnn_dataset_free(d);
    d = cnn_load_npz(NP(a, sizeof a, "train_only.npz"), "images", "labels");
    CHECK(np_same(d, NP_N, NP_C, 5), "other keys: %s", d ? "values differ" : cnn_last_error());
    cnn_dataset_free(d);
    CHECK(cnn_npz_has(NP(a, sizeof a, "data.npz"), "x_test") == 1, "has x_test");
    CHECK(cnn_npz_has(NP(a, sizeof a, "data_z.npz"), "y_test.npy") == 1, "has y_test.npy");
    CHECK(cnn_npz_has(NP(a, sizeof a, "train_only.npz"), "x_test") == 0, "has no x_test");
    CHECK(cnn_npz_has(NP(a, sizeof a, "x.npy"), "x") < 0 && error_mentions("not a ZIP archive"), "x.npy: '%s'",
          cnn_last_error());
    CHECK(cnn_npz_has(NP(a, sizeof a, "missing.npz"), "x") == CNN_ERR_IO && error_mentions("missing.npz"),
          "missing file: '%s'", cnn_last_error());
    cnn_float_arrays *f = cnn_load_npz_float(NP(a, sizeof a, "float.npz"), "x", "y");
    CHECK(np_same_float(f, NP_H, NP_W, NP_C) && f->y_width == 5 && f->num_classes == 5, "float.npz: %s",
          f ? "values differ" : cnn_last_error());
    cnn_float_arrays_free(f);
    size_t zl;
    unsigned char *zb = read_bytes(NP(a, sizeof a, "data_z.npz"), &zl);
    d = cnn_load_npz_memory(zb, zl, "x_train", "y_train");
    CHECK(np_same(d, NP_N, NP_C, 5), "memory: %s", d ? "values differ" : cnn_last_error());
    cnn_dataset_free(d);

    test_begin("cnn_load_npz: bad archives and members are errors naming the file and the member");
    NP_ERR(cnn_load_npz(NP(a, sizeof a, "data.npz"), "x_val", "y_val"), "data.npz",
           "no member 'x_val.npy' (the archive holds: x_train.npy, y_train.npy, x_test.npy, y_test.npy)");
    NP_ERR(cnn_load_npz(NP(a, sizeof a, "bad_member.npz"), "x_train", "y_train"), "bad_member.npz': member "
           "'x_train.npy'", "fortran_order: True is not supported");
    NP_ERR(cnn_load_npz(NP(a, sizeof a, "data.npz"), "x_test", "x_test"), "member 'x_test.npy'",
           "labels must be (n,), (n, 1) or one-hot");
    NP_ERR(cnn_load_npz(NP(a, sizeof a, "data.npz"), "x_test", "y_train"), "member 'y_train.npy'",
           "6 labels for 2 images");
    NP_ERR(cnn_load_npz(NP(a, sizeof a, "truncated.npz"), "x_train", "y_train"), "truncated.npz",
           "no end of central directory");
    NP_ERR(cnn_load_npz(NP(a, sizeof a, "corrupt.npz"), "x_train", "y_train"), "corrupt.npz': member 'x_train.npy'",
           "inflate");
    NP_ERR(cnn_load_npz(NP(a, sizeof a, "crc.npz"), "x_train", "y_train"), "crc.npz': member 'x_train.npy'",
           "CRC-32 mismatch");
    NP_ERR(cnn_load_npz(NP(a, sizeof a, "float.npz"), "x", "y"), "member 'x.npy'", "cnn_load_npy_float");
    NP_ERR(cnn_load_npz(NP(a, sizeof a, "data.npz"), NULL, "y"), "cnn_load_npz", "x_key is NULL");
    NP_ERR(cnn_load_npz(NULL, "x", "y"), "cnn_load_npz", "path is NULL");
    NP_ERR(cnn_load_npz_memory(NULL, 0, "x", "y"), "cnn_load_npz_memory", "NULL");
    f = cnn_load_npz_float(NP(a, sizeof a, "data.npz"), "x_train", "y_train");
    CHECK(!f && error_mentions("data.npz': member 'x_train.npy'") && error_mentions("'|u1' (uint8)"),
          "cnn_load_npz_float on uint8 images: '%s'", cnn_last_error());
    f = cnn_load_npz_float(NP(a, sizeof a, "float.npz"), NULL, "y");
    CHECK(!f && error_mentions("cnn_load_npz_float: x_key is NULL"), "NULL x_key: '%s'", cnn_last_error());
    f = cnn_load_npz_float(NP(a, sizeof a, "float.npz"), "x", NULL); /* no targets: fine */
    CHECK(f && !f->y && f->y_width == 0 && f->n == NP_N, "x alone: %s", f ? "wrong arrays" : cnn_last_error());
    cnn_float_arrays_free(f);
    CHECK(cnn_npz_has(NULL, "x") == CNN_ERR_ARG && cnn_npz_has(NP(a, sizeof a, "data.npz"), NULL) == CNN_ERR_ARG,
          "cnn_npz_has NULL arguments");
    cnn_set_memory_limit(100);
    NP_ERR(cnn_load_npz(NP(a, sizeof a, "data_z.npz"), "x_train", "y_train"), "inflating x_train.npy",
           "memory limit");
    cnn_set_memory_limit(0);

    test_begin("cnn_load_npz_memory: every truncation and every flipped byte of an archive fails cleanly");
    unsigned char *bad = (unsigned char *)malloc(zl ? zl : 1);
    int loaded = 0;
    for (size_t n = 0; zb && n < zl; n++) {
        d = cnn_load_npz_memory(zb, n, "x_train", "y_train");
        CHECK(!d && cnn_last_error()[0], "truncated to %zu bytes: loaded", n);
        cnn_dataset_free(d);
    }
    for (size_t k = 0; zb && bad && k < zl; k++) {
        memcpy(bad, zb, zl);
        bad[k] ^= 0xFF;
        d = cnn_load_npz_memory(bad, zl, "x_train", "y_train");
        /* what loads is exactly the data (a byte flipped in a field the reader does not use) */
        if (d) { loaded++; CHECK(np_same(d, NP_N, NP_C, 5), "byte %zu flipped: wrong data loaded", k); }
        cnn_dataset_free(d);
    }
    printf("#   %d of %zu flipped bytes still load (fields the reader does not use, members it does not read)\n",
           loaded, zl);
    free(bad);

    test_begin("cnn_load_npz and cnn_load_npz_float: every allocation failing in turn");
    for (int which = 0; which < 2; which++) {
        long k;
        for (k = 1; k < 200; k++) {
            requests = 0, fail_at = k;
            void *r = which ? (void *)cnn_load_npz_float(NP(a, sizeof a, "float.npz"), "x", "y")
                            : (void *)cnn_load_npz(NP(a, sizeof a, "data_z.npz"), "x_train", "y_train");
            const long made = requests;
            fail_at = 0;
            if (r) {
                if (which) cnn_float_arrays_free((cnn_float_arrays *)r);
                else cnn_dataset_free((cnn_dataset *)r);
                CHECK(made < k, "allocation %ld failed and the load still succeeded", k);
                break;
            }
            CHECK(error_mentions("memory"), "allocation %ld failing: '%s'", k, cnn_last_error());
        }
        CHECK(k > 2 && k < 200, "%ld allocations", k);
    }
    free(zb);
    printf("#   the NumPy tests took %.2f s\n", cnn_wall_time() - np_t0);
}

int main(void) {
    (void)test_rel_err;
    snprintf(tmp_root, sizeof tmp_root, "/tmp/cnn_augment_XXXXXX");
    if (!mkdtemp(tmp_root)) { printf("FAIL mkdtemp\n"); return 1; }
    test_idx_gz();
    test_fashion_mnist();
    test_image_dir();
    test_resize_files();
    test_load_dataset();
    test_truncated_bmp();
    test_zero_height();
    test_hostile_images();
    test_pipeline_allocation_failures();
    test_write_png();
    test_plot();
    test_numpy();
    test_npz();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_root);
    if (system(cmd) != 0) printf("# could not remove %s\n", tmp_root);
    return test_finish();
}
