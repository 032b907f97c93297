/* test_resize.c - cnn_resize_uint8 against Pillow's Image.resize, bit for bit.

   Fixture: tests/fixtures/resize.bin, written by tests/fixtures/make_resize_fixtures.py
   (Pillow 13.0.0; its docstring has the source-image formula, the file format and how
   to recreate the Python environment). For every case the test rebuilds the source
   image from the formula, resizes it with cnn_resize_uint8 and compares the CRC-32 of
   the output with Pillow's (and, for the "full pixels" family, every value, so it can
   report the largest difference in levels).

   With RESIZE_DUMP_DIR=dir set, every output that differs from Pillow (up to 1000) is
   written to dir/SW_SH_C_FILTER_DW_DH_PATTERN.raw; then
       ~/.cache/cnn-h/keras-venv/bin/python tests/fixtures/make_resize_fixtures.py --check-dumps dir
   prints the level differences and the first differing pixel of each.

   Also: extreme sizes (1 x 1 <-> 300 x 300, 1 x 4000, ...) with every filter and
   channel count (no crash, under the sanitizers too), CNN_INTERP_DEFAULT resizing
   like CNN_INTERP_BILINEAR, and bad arguments. */
#define CNN_IMPLEMENTATION
#define CNN_AUGMENT_IMPLEMENTATION
#define CNN_AUGMENT_STB_IMPLEMENTATION
#include "cnn_augment.h"
#include "test_util.h"

#include <limits.h>
#include <stdint.h>

static const char *const filter_name[7] = {"DEFAULT", "NEAREST", "BILINEAR", "BICUBIC", "LANCZOS", "BOX", "HAMMING"};
static const char *const mode_name[5] = {"?", "L", "LA", "RGB", "RGBA"};

/* ---------------------------------------------------------------- CRC-32 (zlib's) */

static uint32_t crc_table[256];
static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}
static uint32_t crc32_of(const unsigned char *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) c = crc_table[(c ^ p[i]) & 255] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/* ---------------------------------------------------------------- source images */

static uint32_t mix32(uint32_t v) {
    v ^= v >> 16;
    v *= 0x7FEB352Du;
    v ^= v >> 15;
    v *= 0x846CA68Bu;
    v ^= v >> 16;
    return v;
}

/* The sw x sh x c image of make_resize_fixtures.py (its docstring has the formula). */
static void make_source(unsigned char *img, int sw, int sh, int c, int pattern) {
    const int has_alpha = c == 2 || c == 4;
    static const unsigned char alpha3[3] = {0, 128, 255};
    for (int y = 0; y < sh; y++)
        for (int x = 0; x < sw; x++) {
            unsigned char *p = img + ((size_t)y * (size_t)sw + (size_t)x) * (size_t)c;
            const uint32_t b = mix32(mix32((uint32_t)x | (uint32_t)y << 16) ^ ((uint32_t)sw | (uint32_t)sh << 16));
            for (int ch = 0; ch < c; ch++) {
                const int alpha = has_alpha && ch == c - 1;
                unsigned v;
                if (pattern == 0) {
                    const uint32_t h = mix32(b + (uint32_t)(ch + 1) * 0x9E3779B9u);
                    const unsigned s = (h >> 8) & 3;
                    v = h >> 24;
                    if (alpha && s == 0) v = 0;
                    if (alpha && s == 1) v = 255;
                } else if (pattern == 1) {
                    if (alpha) v = sh > 1 ? (unsigned)(y * 255 / (sh - 1)) : sw > 1 ? (unsigned)(x * 255 / (sw - 1)) : 128u;
                    else v = (unsigned)(16 + x * 150 / sw + y * 60 / sh + ch * 8);
                } else {
                    if (alpha) v = alpha3[(x * 3 / sw + y * 5 / sh) % 3];
                    else v = ((x * 8 / sw + y * 8 / sh + ch) & 1) ? 255u : 0u;
                }
                p[ch] = (unsigned char)v;
            }
        }
}

/* ---------------------------------------------------------------- fixture reading */

typedef struct reader {
    const unsigned char *p;
    size_t n, at;
    int bad;
} reader;

static const unsigned char *take(reader *r, size_t k) {
    if (r->bad || k > r->n - r->at) { r->bad = 1; return NULL; }
    r->at += k;
    return r->p + r->at - k;
}
static unsigned u8(reader *r) { const unsigned char *q = take(r, 1); return q ? q[0] : 0; }
static unsigned u16(reader *r) { const unsigned char *q = take(r, 2); return q ? (unsigned)q[0] | (unsigned)q[1] << 8 : 0; }
static uint32_t u32(reader *r) {
    const unsigned char *q = take(r, 4);
    return q ? (uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 | (uint32_t)q[3] << 24 : 0;
}

static unsigned char *load_fixture(size_t *n, const char **where) {
    static const char *const paths[2] = {"tests/fixtures/resize.bin", "fixtures/resize.bin"};
    for (int i = 0; i < 2; i++) {
        unsigned char *p = read_bytes(paths[i], n);
        if (p && *n) { *where = paths[i]; return p; }
        free(p);
    }
    return NULL;
}

/* ---------------------------------------------------------------- the Pillow families */

static const char *dump_dir;
static int n_dumped;

static void dump(const unsigned char *out, size_t n, int sw, int sh, int c, int f, int dw, int dh, int pattern) {
    char path[1024];
    if (!dump_dir || n_dumped >= 1000) return;
    snprintf(path, sizeof path, "%s/%d_%d_%d_%d_%d_%d_%d.raw", dump_dir, sw, sh, c, f, dw, dh, pattern);
    if (write_bytes(path, out, n)) n_dumped++;
}

enum { MAX_SHOWN = 12 };

/* Runs one family; returns 0 when the fixture is malformed. */
static int run_family(reader *r, long *total_cases) {
    static char groups[64][96]; /* test_begin keeps the pointer until the next group */
    static int n_groups;
    char name[41], *group = groups[n_groups < 63 ? n_groups++ : 63];
    int n_t, n_f, full, dims[256][2], filters[256];
    long cases[7] = {0}, same[7] = {0}, errors = 0, shown = 0, all = 0, all_same = 0;
    int maxdiff[7] = {0}, maxdiff_all = 0;
    const unsigned char *nm = take(r, 40);
    if (!nm) return 0;
    memcpy(name, nm, 40);
    name[40] = 0;
    n_t = (int)u8(r);
    n_f = (int)u8(r);
    full = (int)u8(r);
    (void)u8(r);
    for (int t = 0; t < n_t; t++) {
        dims[t][0] = (int)u16(r);
        dims[t][1] = (int)u16(r);
        if (dims[t][0] < 1 || dims[t][1] < 1) r->bad = 1;
    }
    for (int f = 0; f < n_f; f++) {
        filters[f] = (int)u8(r);
        if (filters[f] < 1 || filters[f] > 6) r->bad = 1;
    }
    const uint32_t n_src = u32(r);
    if (r->bad) return 0;
    snprintf(group, sizeof groups[0], "resize vs Pillow: %s", name);
    test_begin(group);
    for (uint32_t s = 0; s < n_src; s++) {
        const int sw = (int)u16(r), sh = (int)u16(r), c = (int)u8(r), pattern = (int)u8(r);
        if (r->bad || sw < 1 || sh < 1 || c < 1 || c > 4 || pattern > 2) return 0;
        const size_t n_in = (size_t)sw * (size_t)sh * (size_t)c;
        unsigned char *src = (unsigned char *)malloc(n_in);
        if (!src) return 0;
        make_source(src, sw, sh, c, pattern);
        const uint32_t src_crc = crc32_of(src, n_in);
        for (int t = 0; t < n_t; t++)
            for (int fi = 0; fi < n_f; fi++) {
                const int dw = dims[t][0], dh = dims[t][1], f = filters[fi];
                const size_t n_out = (size_t)dw * (size_t)dh * (size_t)c;
                const uint32_t want = u32(r);
                const unsigned char *want_px = full ? take(r, n_out) : NULL;
                unsigned char *dst = (unsigned char *)malloc(n_out);
                if (r->bad || !dst) { free(dst); free(src); return 0; }
                memset(dst, 0xA5, n_out);
                const int rc = cnn_resize_uint8(src, sw, sh, c, dst, dw, dh, (cnn_interpolation)f);
                const int same_crc = rc == CNN_OK && crc32_of(dst, n_out) == want;
                int md = 0, fx = -1, fy = 0, fc = 0, got_v = 0, want_v = 0;
                if (want_px && rc == CNN_OK)
                    for (size_t i = 0; i < n_out; i++) {
                        const int d = abs((int)dst[i] - (int)want_px[i]);
                        if (d && fx < 0) {
                            fx = (int)(i / (size_t)c % (size_t)dw);
                            fy = (int)(i / (size_t)c / (size_t)dw);
                            fc = (int)(i % (size_t)c);
                            got_v = dst[i];
                            want_v = want_px[i];
                        }
                        if (d > md) md = d;
                    }
                cases[f]++;
                all++;
                if (same_crc) { same[f]++; all_same++; }
                if (rc != CNN_OK) errors++;
                if (md > maxdiff[f]) maxdiff[f] = md;
                if (md > maxdiff_all) maxdiff_all = md;
                if (!same_crc) {
                    if (rc == CNN_OK) dump(dst, n_out, sw, sh, c, f, dw, dh, pattern);
                    if (shown++ < MAX_SHOWN) {
                        if (rc != CNN_OK)
                            printf("#   %dx%d %s pattern %d -> %dx%d %s: status %d (%s)\n", sw, sh, mode_name[c], pattern,
                                   dw, dh, filter_name[f], rc, cnn_last_error());
                        else if (want_px)
                            printf("#   %dx%d %s pattern %d -> %dx%d %s: max diff %d levels, first at x=%d y=%d ch=%d: "
                                   "got %d, Pillow %d\n", sw, sh, mode_name[c], pattern, dw, dh, filter_name[f], md,
                                   fx, fy, fc, got_v, want_v);
                        else
                            printf("#   %dx%d %s pattern %d -> %dx%d %s: output differs (crc %08x, Pillow %08x); "
                                   "see it with make_resize_fixtures.py --case %d %d %d %d %d %d %d\n", sw, sh,
                                   mode_name[c], pattern, dw, dh, filter_name[f], crc32_of(dst, n_out), want, sw, sh, c,
                                   f, dw, dh, pattern);
                    }
                }
                free(dst);
            }
        CHECK(crc32_of(src, n_in) == src_crc, "%dx%d %s: the source pixels were modified", sw, sh, mode_name[c]);
        free(src);
    }
    *total_cases += all;
    printf("# %-40s %6ld cases, %6ld identical to Pillow", name, all, all_same);
    if (full) printf(", max diff %d levels", maxdiff_all);
    printf("\n");
    for (int f = 1; f <= 6; f++)
        if (cases[f]) {
            printf("#     %-8s %6ld / %6ld identical", filter_name[f], same[f], cases[f]);
            if (full) printf(", max diff %d levels", maxdiff[f]);
            printf("\n");
        }
    if (shown > MAX_SHOWN) printf("#   ... and %ld more differing cases\n", shown - MAX_SHOWN);
    CHECK(errors == 0, "%ld of %ld cases returned an error status", errors, all);
    CHECK(all_same == all, "%ld of %ld outputs differ from Pillow (%s; details in the '#' lines above)", all - all_same,
          all, full ? "see the max level differences" : "crc mismatch");
    return 1;
}

static void test_pillow(void) {
    size_t n = 0;
    const char *where = NULL;
    unsigned char *data = load_fixture(&n, &where);
    long total = 0;
    test_begin("resize fixture");
    CHECK(data != NULL, "cannot read tests/fixtures/resize.bin (run from the repository root or tests/; regenerate "
                        "with ~/.cache/cnn-h/keras-venv/bin/python tests/fixtures/make_resize_fixtures.py)");
    if (!data) return;
    reader r = {data, n, 0, 0};
    const unsigned char *magic = take(&r, 8);
    CHECK(n > 16 && magic && !memcmp(magic, "CNNRSZ1\n", 8), "%s: bad magic", where);
    r.n = n > 4 ? n - 4 : 0; /* the trailing CRC is not part of the records */
    r.bad = r.bad || n <= 16;
    if (!r.bad) {
        const uint32_t want = (uint32_t)data[n - 4] | (uint32_t)data[n - 3] << 8 | (uint32_t)data[n - 2] << 16 |
                              (uint32_t)data[n - 1] << 24;
        CHECK(crc32_of(data, n - 4) == want, "%s: checksum mismatch (damaged file)", where);
        if (crc32_of(data, n - 4) != want) r.bad = 1;
    }
    const uint32_t n_fam = u32(&r);
    if (r.bad) { free(data); return; }
    for (uint32_t i = 0; i < n_fam; i++)
        if (!run_family(&r, &total)) {
            test_begin("resize fixture (records)");
            CHECK(0, "%s: malformed family %u", where, (unsigned)i);
            break;
        }
    test_begin("resize fixture (records)");
    CHECK(!r.bad && r.at == r.n, "%s: %zu bytes left over after %u families", where, r.n - r.at, (unsigned)n_fam);
    printf("# %ld resize cases compared with Pillow\n", total);
    free(data);
}

/* ---------------------------------------------------------------- extremes, default, bad input */

static void test_extremes(void) {
    static const int sz[][4] = {
        {1, 1, 1, 1}, {1, 1, 300, 300}, {300, 1, 1, 300}, {1, 300, 300, 1}, {300, 300, 1, 1}, {1, 1, 4000, 1},
        {4000, 1, 1, 1}, {1, 4000, 3, 1}, {2, 2, 1, 1}, {1, 2, 1, 1}, {2, 1, 3, 1}, {3, 1, 2, 2}, {1, 1, 2, 1},
        {257, 3, 2, 255}, {5, 7, 5, 7}, {5, 7, 7, 5},
    };
    test_begin("resize extreme sizes, every filter and channel count");
    for (size_t k = 0; k < sizeof sz / sizeof sz[0]; k++)
        for (int c = 1; c <= 4; c++)
            for (int f = CNN_INTERP_DEFAULT; f <= CNN_INTERP_HAMMING; f++) {
                const int sw = sz[k][0], sh = sz[k][1], dw = sz[k][2], dh = sz[k][3];
                unsigned char *src = (unsigned char *)malloc((size_t)sw * sh * c);
                unsigned char *dst = (unsigned char *)malloc((size_t)dw * dh * c);
                if (!src || !dst) { free(src); free(dst); CHECK(0, "out of memory"); return; }
                make_source(src, sw, sh, c, (int)(k % 3));
                const int rc = cnn_resize_uint8(src, sw, sh, c, dst, dw, dh, (cnn_interpolation)f);
                CHECK(rc == CNN_OK, "%dx%d %s -> %dx%d %s: status %d (%s)", sw, sh, mode_name[c], dw, dh, filter_name[f],
                      rc, cnn_last_error());
                if (rc == CNN_OK && sw == 1 && sh == 1 && c != 2 && c != 4) { /* one pixel: every output is that pixel */
                    int ok = 1;
                    for (size_t i = 0; i < (size_t)dw * dh * c; i++) ok &= dst[i] == src[i % (size_t)c];
                    CHECK(ok, "1x1 %s -> %dx%d %s: not a copy of the pixel", mode_name[c], dw, dh, filter_name[f]);
                }
                free(src);
                free(dst);
            }
}

static void test_default_is_bilinear(void) {
    static const int sz[][4] = {{64, 48, 32, 32}, {17, 5, 40, 9}, {3, 3, 28, 28}, {100, 100, 33, 71}, {32, 32, 32, 32}};
    test_begin("resize CNN_INTERP_DEFAULT = CNN_INTERP_BILINEAR");
    for (size_t k = 0; k < sizeof sz / sizeof sz[0]; k++)
        for (int c = 1; c <= 4; c++) {
            const int sw = sz[k][0], sh = sz[k][1], dw = sz[k][2], dh = sz[k][3];
            const size_t n_out = (size_t)dw * dh * c;
            unsigned char *src = (unsigned char *)malloc((size_t)sw * sh * c);
            unsigned char *a = (unsigned char *)malloc(n_out), *b = (unsigned char *)malloc(n_out);
            if (!src || !a || !b) { free(src); free(a); free(b); CHECK(0, "out of memory"); return; }
            make_source(src, sw, sh, c, (int)(k % 3));
            const int ra = cnn_resize_uint8(src, sw, sh, c, a, dw, dh, CNN_INTERP_DEFAULT);
            const int rb = cnn_resize_uint8(src, sw, sh, c, b, dw, dh, CNN_INTERP_BILINEAR);
            CHECK(ra == CNN_OK && rb == CNN_OK, "%dx%d %s -> %dx%d: status %d / %d (%s)", sw, sh, mode_name[c], dw, dh, ra,
                  rb, cnn_last_error());
            CHECK(ra != CNN_OK || rb != CNN_OK || !memcmp(a, b, n_out), "%dx%d %s -> %dx%d: DEFAULT differs from BILINEAR",
                  sw, sh, mode_name[c], dw, dh);
            free(src);
            free(a);
            free(b);
        }
}

static void test_bad_input(void) {
    unsigned char src[4 * 4 * 4], dst[4 * 4 * 4], keep[sizeof dst];
    static const struct { int null_src, null_dst, sw, sh, c, dw, dh, f; } bad[] = {
        {1, 0, 4, 4, 1, 4, 4, CNN_INTERP_BILINEAR},  {0, 1, 4, 4, 1, 4, 4, CNN_INTERP_BILINEAR},
        {1, 1, 4, 4, 1, 4, 4, CNN_INTERP_NEAREST},   {0, 0, 0, 4, 1, 4, 4, CNN_INTERP_BILINEAR},
        {0, 0, 4, 0, 1, 4, 4, CNN_INTERP_BILINEAR},  {0, 0, 4, 4, 1, 0, 4, CNN_INTERP_BILINEAR},
        {0, 0, 4, 4, 1, 4, 0, CNN_INTERP_BILINEAR},  {0, 0, -1, 4, 1, 4, 4, CNN_INTERP_NEAREST},
        {0, 0, 4, -4, 1, 4, 4, CNN_INTERP_LANCZOS},  {0, 0, 4, 4, 1, -2, 4, CNN_INTERP_BOX},
        {0, 0, 4, 4, 1, 4, INT_MIN, CNN_INTERP_HAMMING}, {0, 0, 4, 4, 0, 4, 4, CNN_INTERP_BILINEAR},
        {0, 0, 4, 4, 5, 4, 4, CNN_INTERP_BILINEAR},  {0, 0, 4, 4, -1, 4, 4, CNN_INTERP_NEAREST},
        {0, 0, 4, 4, 3, 4, 4, 99},                   {0, 0, 4, 4, 3, 4, 4, -1},
        {0, 0, 4, 4, 1, 2, 2, 7},                    {0, 0, 4, 4, 4, 4, 4, 99},
    };
    test_begin("resize bad arguments: negative status naming cnn_resize_uint8");
    make_source(src, 4, 4, 4, 0);
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        memset(dst, 0x5A, sizeof dst);
        memcpy(keep, dst, sizeof dst);
        cnn_set_error(CNN_OK, "%s", "");
        const int rc = cnn_resize_uint8(bad[k].null_src ? NULL : src, bad[k].sw, bad[k].sh, bad[k].c,
                                        bad[k].null_dst ? NULL : dst, bad[k].dw, bad[k].dh, (cnn_interpolation)bad[k].f);
        const char *e = cnn_last_error();
        CHECK(rc < 0, "case %zu (src %s, dst %s, %dx%d c=%d -> %dx%d, interpolation %d): status %d, not negative", k,
              bad[k].null_src ? "NULL" : "ok", bad[k].null_dst ? "NULL" : "ok", bad[k].sw, bad[k].sh, bad[k].c, bad[k].dw,
              bad[k].dh, bad[k].f, rc);
        CHECK(e && e[0] && strstr(e, "cnn_resize_uint8"), "case %zu: error message '%s' does not name cnn_resize_uint8",
              k, e ? e : "(null)");
        CHECK(!memcmp(dst, keep, sizeof dst), "case %zu: the output was written although the call failed", k);
    }
    /* and a good call still works afterwards */
    CHECK(cnn_resize_uint8(src, 4, 4, 4, dst, 2, 3, CNN_INTERP_BICUBIC) == CNN_OK, "good call after errors: %s",
          cnn_last_error());
}

int main(void) {
    crc_init();
    dump_dir = getenv("RESIZE_DUMP_DIR");
    if (dump_dir && !*dump_dir) dump_dir = NULL;
    test_pillow();
    test_extremes();
    test_default_is_bilinear();
    test_bad_input();
    test_end();
    if (n_dumped) printf("# %d differing outputs written to %s\n", n_dumped, dump_dir);
    return test_finish();
}
