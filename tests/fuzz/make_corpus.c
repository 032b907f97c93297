/* make_corpus.c - writes the seed corpus of the fuzz targets (tests/fuzz/corpus/<target>/):
   small valid inputs of each format, made here so that no outside file is needed.
   Regenerate with tests/fuzz/make_corpus.sh. The fuzzers mutate these; `make test`
   replays them (and the inputs of fixed crashes kept beside them) under the sanitizers. */
#define _POSIX_C_SOURCE 200809L
#define CNN_IMPLEMENTATION
#define CNN_AUGMENT_IMPLEMENTATION
#define CNN_AUGMENT_STB_IMPLEMENTATION
#include "cnn_augment.h"

#include <sys/stat.h>

#define FUZZ_BACKUP_FIT_ONLY /* backup.c's fit, not its entry point */
#include "backup.c"

static const char *root;

static void put(const char *target, const char *name, const void *data, size_t n) {
    char path[1024];
    FILE *f;
    snprintf(path, sizeof path, "%s/%s", root, target);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/%s/%s", root, target, name);
    f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n || fclose(f)) { perror(path); exit(1); }
}

static unsigned char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    long len;
    unsigned char *b;
    if (!f) { perror(path); exit(1); }
    fseek(f, 0, SEEK_END);
    len = ftell(f);
    fseek(f, 0, SEEK_SET);
    b = (unsigned char *)malloc((size_t)len);
    if (!b || fread(b, 1, (size_t)len, f) != (size_t)len) { perror(path); exit(1); }
    fclose(f);
    *n = (size_t)len;
    return b;
}

/* a model file, whole for "model" and its payload for "model_payload" */
static void put_model(cnn_model *m, const char *name) {
    char path[1024];
    size_t n;
    unsigned char *b;
    snprintf(path, sizeof path, "%s/tmp-%s.cnn", root, name);
    if (!m || cnn_save(m, path) != CNN_OK) { fprintf(stderr, "make_corpus: %s: %s\n", name, cnn_last_error()); exit(1); }
    b = slurp(path, &n);
    remove(path);
    put("model", name, b, n);
    put("model_payload", name, b + 20, n - 24);
    free(b);
}

static void models(void) {
    static const char *const names[3] = {"cat", "dog", "bird"};
    cnn_model *m = cnn_model_new();
    cnn_node *x = cnn_input(m, 2, 2, 1, "in"), *in[2];
    x = cnn_dense(m, cnn_flatten(m, x), .units = 3, .activation = CNN_SOFTMAX);
    cnn_model_set_output(m, x);
    cnn_model_set_class_names(m, names, 3);
    cnn_compile(m, .optimizer = cnn_adam());
    put_model(m, "dense.cnn");
    cnn_model_free(m);

    m = cnn_model_new();
    x = cnn_input(m, 6, 6, 2, "image");
    x = cnn_conv2d(m, x, .filters = 4, .kernel_size = {3, 3}, .padding = CNN_SAME, .activation = CNN_RELU);
    x = cnn_max_pool2d(m, cnn_batch_norm(m, x), .pool_size = {2, 2});
    x = cnn_up_sampling2d(m, cnn_zero_padding2d(m, x), .size = {1, 2});
    in[0] = cnn_conv2d(m, x, .filters = 2, .kernel_size = {1, 1});
    in[1] = cnn_conv2d(m, x, .filters = 2, .kernel_size = {1, 1}, .no_bias = 1);
    x = cnn_add(m, in, 2);
    x = cnn_dense(m, cnn_global_avg_pool2d(m, x), .units = 3, .activation = CNN_SOFTMAX);
    cnn_model_set_output(m, x);
    cnn_compile(m, .optimizer = cnn_adam());
    put_model(m, "conv.cnn");
    cnn_model_free(m);

    m = cnn_model_new();
    x = cnn_input(m, 4, 4, 1, "image");
    in[0] = cnn_conv2d(m, x, .filters = 2, .kernel_size = {2, 2}, .strides = {2, 2}, .activation = CNN_TANH);
    in[1] = cnn_avg_pool2d(m, cnn_conv2d(m, x, .filters = 1, .kernel_size = {1, 1}), .pool_size = {2, 2});
    x = cnn_concatenate(m, in, 2);
    x = cnn_activation(m, x, .activation = CNN_LEAKY_RELU, .alpha = 0.2f);
    x = cnn_dropout(m, cnn_flatten(m, x), .rate = 0.5f);
    x = cnn_dense(m, x, .units = 2, .activation = CNN_SIGMOID);
    cnn_model_set_output(m, x);
    cnn_compile(m, .optimizer = cnn_sgd(.learning_rate = 0.1f, .momentum = 0.9f), .loss = CNN_BINARY_CROSSENTROPY);
    put_model(m, "concat.cnn");
    cnn_model_free(m);
}

/* a gzip member around stb_image_write's zlib stream (its 2-byte header and
   Adler-32 taken off) */
static unsigned char *gzip(const unsigned char *data, size_t n, size_t *out_n) {
    int zn;
    unsigned char *z = stbi_zlib_compress((unsigned char *)data, (int)n, &zn, 8);
    unsigned char *g = (unsigned char *)malloc((size_t)zn + 18);
    const uint32_t crc = cnn__aug_crc32(data, n);
    static const unsigned char head[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
    memcpy(g, head, 10);
    memcpy(g + 10, z + 2, (size_t)zn - 6);
    for (int i = 0; i < 4; i++) g[10 + zn - 6 + i] = (unsigned char)(crc >> (8 * i));
    for (int i = 0; i < 4; i++) g[14 + zn - 6 + i] = (unsigned char)((uint32_t)n >> (8 * i));
    *out_n = (size_t)zn + 12;
    free(z);
    return g;
}

/* idx target input: u16 image-file length, image file, label file */
static void put_idx(const char *name, const unsigned char *img, size_t ni, const unsigned char *lab, size_t nl) {
    unsigned char *b = (unsigned char *)malloc(2 + ni + nl);
    b[0] = (unsigned char)ni;
    b[1] = (unsigned char)(ni >> 8);
    memcpy(b + 2, img, ni);
    memcpy(b + 2 + ni, lab, nl);
    put("idx", name, b, 2 + ni + nl);
    free(b);
}

static void idx(void) {
    unsigned char img[16 + 3 * 4 * 5], lab[8 + 3];
    static const unsigned char ihead[16] = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5};
    static const unsigned char lhead[8] = {0, 0, 8, 1, 0, 0, 0, 3};
    size_t gi, gl;
    unsigned char *zi, *zl;
    memcpy(img, ihead, 16);
    for (int i = 0; i < 60; i++) img[16 + i] = (unsigned char)(i * 4);
    memcpy(lab, lhead, 8);
    lab[8] = 0, lab[9] = 1, lab[10] = 2;
    put_idx("raw", img, sizeof img, lab, sizeof lab);
    zi = gzip(img, sizeof img, &gi);
    zl = gzip(lab, sizeof lab, &gl);
    put_idx("gzip", zi, gi, zl, gl);
    put_idx("gzip_images_raw_labels", zi, gi, lab, sizeof lab);
    free(zi);
    free(zl);
}

static void cifar(void) {
    unsigned char rec[2 * 3073];
    for (int r = 0; r < 2; r++) {
        rec[r * 3073] = (unsigned char)(r * 7);
        for (int i = 0; i < 3072; i++) rec[r * 3073 + 1 + i] = (unsigned char)(i * 3 + r);
    }
    put("cifar", "two_records.bin", rec, sizeof rec);
    put("cifar", "one_record.bin", rec, 3073);
}

/* stb_image_write's callback: append to a growing buffer */
typedef struct { unsigned char *p; size_t n; } mem;
static void mem_put(void *ctx, void *data, int n) {
    mem *m = (mem *)ctx;
    m->p = (unsigned char *)realloc(m->p, m->n + (size_t)n);
    memcpy(m->p + m->n, data, (size_t)n);
    m->n += (size_t)n;
}

/* each image is put twice: for "image" after a 4-byte size/filter prefix, and
   for "image_dir" after a 2-byte extension/options prefix */
static void put_image(const char *name, const unsigned char *prefix4, int ext, const void *file, size_t n) {
    unsigned char *b = (unsigned char *)malloc(n + 4);
    memcpy(b, prefix4, 4);
    memcpy(b + 4, file, n);
    put("image", name, b, n + 4);
    b[2] = (unsigned char)ext;
    b[3] = (unsigned char)(name[0] & 7); /* options vary with the name */
    put("image_dir", name, b + 2, n + 2);
    free(b);
}

static void images(void) {
    unsigned char px[5 * 7 * 4];
    mem m = {NULL, 0};
    static const unsigned char gif[] = { /* a 2x2 GIF89a, 4-colour palette */
        'G', 'I', 'F', '8', '9', 'a', 2, 0, 2, 0, 0x81, 0, 0, 0, 0, 0, 0xff, 0, 0, 0, 0xff, 0, 0, 0, 0xff,
        0x2c, 0, 0, 0, 0, 2, 0, 2, 0, 0, 2, 3, 0x44, 0x34, 0x05, 0, 0x3b};
    static const unsigned char p5[] = "P5\n3 2\n255\n\x01\x02\x03\x04\x05\x06";
    static const unsigned char p6_16[] = "P6\n1 2\n65535\n\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c";
    static const unsigned char pre_a[4] = {4, 6, 1, 2}, pre_b[4] = {31, 2, 0, 1}, pre_c[4] = {7, 7, 2, 11};
    for (int i = 0; i < (int)sizeof px; i++) px[i] = (unsigned char)(i * 37);
    stbi_write_png_to_func(mem_put, &m, 7, 5, 3, px, 7 * 3);
    put_image("rgb.png", pre_a, 0, m.p, m.n);
    m.n = 0;
    stbi_write_png_to_func(mem_put, &m, 5, 7, 4, px, 5 * 4);
    put_image("rgba.png", pre_b, 0, m.p, m.n);
    m.n = 0;
    stbi_write_jpg_to_func(mem_put, &m, 7, 5, 3, px, 90);
    put_image("rgb.jpg", pre_c, 1, m.p, m.n);
    m.n = 0;
    stbi_write_jpg_to_func(mem_put, &m, 7, 5, 1, px, 50);
    put_image("grey.jpg", pre_a, 7, m.p, m.n);
    m.n = 0;
    stbi_write_bmp_to_func(mem_put, &m, 3, 2, 3, px);
    put_image("rgb.bmp", pre_b, 2, m.p, m.n);
    m.n = 0;
    stbi_write_tga_to_func(mem_put, &m, 3, 2, 4, px);
    put_image("rle.tga", pre_c, 4, m.p, m.n); /* stb writes RLE TGA by default */
    free(m.p);
    put_image("tiny.gif", pre_a, 3, gif, sizeof gif);
    put_image("grey.pgm", pre_b, 6, p5, sizeof p5 - 1);
    put_image("rgb16.ppm", pre_c, 5, p6_16, sizeof p6_16 - 1);
}

/* a backup's payload, as the fit of backup.c writes it after its first epoch */
static void backups(void) {
    char dir[1024], path[1100];
    size_t n;
    unsigned char *b;
    snprintf(dir, sizeof dir, "%s/tmp-backup", root);
    cnn_history_free(fuzz_backup_fit(dir, 1));
    snprintf(path, sizeof path, "%s/backup.cnn", dir);
    b = slurp(path, &n);
    remove(path);
    rmdir(dir);
    put("backup", "after-epoch-1", b + 20, n - 24);
    free(b);
}

static void specs(void) {
    static const char *const s[] = {"\x03" "0,2", "\x02" "gpu", "\x05" "cpu", "\x07" "all", "\x04" "4090",
                                    "\x08" "rusticl", "\x03" "3:1", "\x04" "auto", "\x02" "equal", "\x06" "1,1",
                                    "\x04" "0.5:2:1:0"};
    for (int i = 0; i < (int)(sizeof s / sizeof *s); i++) {
        char name[32];
        snprintf(name, sizeof name, "spec%02d", i);
        put("opencl_spec", name, s[i], strlen(s[i]));
    }
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: make_corpus CORPUS_DIR\n"); return 2; }
    root = argv[1];
    mkdir(root, 0755);
    models();
    idx();
    cifar();
    images();
    specs();
    backups();
    return 0;
}
