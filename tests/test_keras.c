/* test_keras.c - cnn_augment.h's ImageDataGenerator against REAL Keras: tf-keras
   2.21's ImageDataGenerator (TensorFlow 2.21, scipy 1.17, Pillow 13), through the
   fixtures that tests/fixtures/make_keras_fixtures.py wrote into
   tests/fixtures/keras.bin (its docstring has the format, the mapping between
   Keras' transform dict and cnn_transform, and the reasons for each tolerance).

   Families: (a) apply_transform with explicit parameters, (b) fit and
   standardize (featurewise, samplewise, rescale, ZCA), (c) flow(x, y) with
   validation_split, (d) flow_from_directory on a tree of PNG files that this
   test writes again from the fixture's description (same pixel formula) into a
   mkdtemp folder under /tmp, removed at the end.

   Inputs are never stored: they are the integer hash pix(seed, i) of the script,
   computed here again. Build and run from the repository root:
       cc -std=c99 -O2 -Wall -Wextra -I. tests/test_keras.c -lm -lpthread -o build/tests/test_keras
       build/tests/test_keras */
#ifndef _XOPEN_SOURCE
#define _XOPEN_SOURCE 700 /* mkdtemp, symlink, lstat, nftw under -std=c99 */
#endif
#define CNN_IMPLEMENTATION
#define CNN_AUGMENT_IMPLEMENTATION
#define CNN_AUGMENT_STB_IMPLEMENTATION
#include "cnn_augment.h"
#include "test_util.h"

#include <errno.h>
#include <ftw.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- fixture */

enum { T_F32 = 0, T_U8 = 1, T_I32 = 2, T_TEXT = 3 };

typedef struct record {
    char name[49];
    unsigned type, count;
    const unsigned char *data; /* into fix_bytes */
} record;

static unsigned char *fix_bytes;
static record *recs;
static int n_recs;

static int load_fixture(void) {
    const char *paths[2] = {"tests/fixtures/keras.bin", "fixtures/keras.bin"};
    size_t n = 0;
    for (int i = 0; i < 2 && !fix_bytes; i++) fix_bytes = read_bytes(paths[i], &n);
    if (!fix_bytes || n < 12 || memcmp(fix_bytes, "CNNKRS01", 8)) return 0;
    uint32_t count;
    memcpy(&count, fix_bytes + 8, 4);
    recs = (record *)calloc(count ? count : 1, sizeof *recs);
    if (!recs) return 0;
    size_t off = 12;
    for (uint32_t i = 0; i < count; i++) {
        if (off + 56 > n) return 0;
        record *r = &recs[i];
        memcpy(r->name, fix_bytes + off, 48);
        r->name[48] = 0;
        memcpy(&r->type, fix_bytes + off + 48, 4);
        memcpy(&r->count, fix_bytes + off + 52, 4);
        off += 56;
        size_t bytes = (size_t)r->count * (r->type == T_U8 || r->type == T_TEXT ? 1 : 4);
        if (r->type > T_TEXT || off + bytes > n) return 0;
        r->data = fix_bytes + off;
        off += bytes;
        n_recs++;
    }
    return off == n;
}

static const record *rec(const char *fmt, int k) {
    char name[64];
    snprintf(name, sizeof name, fmt, k);
    for (int i = 0; i < n_recs; i++)
        if (!strcmp(recs[i].name, name)) return &recs[i];
    return NULL;
}

/* copies (the data in the file need not be aligned) */
static float *rec_f32(const record *r) {
    if (!r || r->type != T_F32) return NULL;
    float *v = (float *)malloc((r->count ? r->count : 1) * sizeof(float));
    if (v) memcpy(v, r->data, (size_t)r->count * 4);
    return v;
}
static int *rec_i32(const record *r) {
    if (!r || r->type != T_I32) return NULL;
    int *v = (int *)malloc((r->count ? r->count : 1) * sizeof(int));
    if (v) memcpy(v, r->data, (size_t)r->count * 4);
    return v;
}
static char *rec_text(const record *r) {
    if (!r || r->type != T_TEXT) return NULL;
    char *s = (char *)malloc(r->count + 1);
    if (s) { memcpy(s, r->data, r->count); s[r->count] = 0; }
    return s;
}
static int fix_int(const char *name) {
    const record *r = rec(name, 0);
    int v = 0;
    if (r && r->type == T_I32 && r->count == 1) memcpy(&v, r->data, 4);
    return v;
}
/* split text at '\n' in place: the number of lines, pointers in lines[] */
static int split_lines(char *s, char **lines, int max) {
    int n = 0;
    if (!s || !*s) return 0;
    while (n < max) {
        lines[n++] = s;
        char *nl = strchr(s, '\n');
        if (!nl) break;
        *nl = 0;
        s = nl + 1;
    }
    return n;
}

/* ------------------------------------------------------------------ inputs */

static uint32_t hash32(uint32_t v) {
    v ^= v >> 16;
    v *= 0x7feb352du;
    v ^= v >> 15;
    v *= 0x846ca68bu;
    v ^= v >> 16;
    return v;
}
static uint32_t pix(uint32_t seed, uint32_t i) { return hash32(seed * 0x9E3779B1u + i); }

/* ---------------------------------------------------- family a: transforms */

static const char *mode_name[4] = {"nearest", "constant", "reflect", "wrap"};

static void describe_transform(char *buf, size_t size, int k, const float *kp, const float *op, const int *s,
                               float cval) {
    snprintf(buf, size,
             "case %d %dx%dx%d %s%s order %d cval %g: Keras {theta %g tx %g ty %g shear %g zx %g zy %g flips %d%d "
             "channel_shift %g brightness %g} = ours {theta %g shift %.6g,%.6g shear %g zoom %g,%g}",
             k, s[0], s[1], s[2], mode_name[s[5] & 3], s[4] ? " (values -100..400)" : "", s[6], (double)cval,
             kp[0], kp[1], kp[2], kp[3], kp[4], kp[5], (int)kp[6], (int)kp[7], kp[8], kp[9], op[0], op[1], op[2],
             op[3], op[4], op[5]);
}

static void test_transforms(void) {
    static const char *group[4] = {"keras_apply_transform_geometry", "keras_apply_transform_fill_constant_wrap",
                                   "keras_apply_transform_order0", "keras_apply_transform_color"};
    int n = fix_int("n_tr");
    for (int fam = 0; fam < 4; fam++) {
        test_begin(group[fam]);
        CHECK(n > 0, "fixture n_tr missing");
        int cases = 0, fringe = 0, fringe_total = 0, fr_mode[4] = {0, 0, 0, 0}, frt_mode[4] = {0, 0, 0, 0};
        double worst = 0, worst_alpha = 0, dmin = 0, dmax = 0;
        for (int k = 0; k < n; k++) {
            int *s = rec_i32(rec("tr%d_setup", k));
            float *kp = rec_f32(rec("tr%d_keras", k)), *op = rec_f32(rec("tr%d_ours", k));
            float *cv = rec_f32(rec("tr%d_cval", k)), *want = rec_f32(rec("tr%d_out", k));
            const record *ins = rec("tr%d_inside", k);
            if (!s || !kp || !op || !cv || !want) {
                CHECK(0, "fixture case %d incomplete", k);
                free(s); free(kp); free(op); free(cv); free(want);
                continue;
            }
            if (s[7] != fam) { free(s); free(kp); free(op); free(cv); free(want); continue; }
            cases++;
            int h = s[0], w = s[1], c = s[2], N = h * w * c;
            float *x = (float *)malloc((size_t)N * sizeof(float)), *out = (float *)malloc((size_t)N * sizeof(float));
            float lo = 1e30f, hi = -1e30f;
            for (int i = 0; i < N; i++) {
                uint32_t v = pix((uint32_t)s[3], (uint32_t)i);
                x[i] = s[4] ? (float)(v % 501) - 100 : (float)(v % 256);
                if (x[i] < lo) lo = x[i];
                if (x[i] > hi) hi = x[i];
            }
            char what[512];
            describe_transform(what, sizeof what, k, kp, op, s, cv[0]);
            cnn_datagen *g = cnn_datagen_new(.fill_mode = (cnn_fill_mode)s[5], .cval = cv[0],
                                             .interpolation = s[6] ? CNN_INTERP_BILINEAR : CNN_INTERP_NEAREST);
            CHECK(g != NULL, "%s: cnn_datagen_new: %s", what, cnn_last_error());
            cnn_transform t = {0};
            t.theta = op[0]; t.shift_x = op[1]; t.shift_y = op[2]; t.shear = op[3];
            t.zoom_x = op[4]; t.zoom_y = op[5]; t.flip_horizontal = (int)op[6]; t.flip_vertical = (int)op[7];
            t.channel_shift = op[8]; t.brightness = op[9];
            int rc = g ? cnn_datagen_apply_transform_opt(g, x, h, w, c, &t, out) : -1;
            CHECK(rc == CNN_OK, "%s: apply_transform: %s", what, cnn_last_error());
            if (rc == CNN_OK) {
                int masked = ins && ins->count == (unsigned)(h * w);
                double err = 0, aerr = 0, lim = 1e-3, alim = 1e-3;
                int bad_at = -1, abad_at = -1;
                float b = op[9];
                double scale = s[4] ? (hi - lo) / 255.0 : 1.0;
                if (fam == 3 && b > 0) { lim = (1 + b) * scale + 1e-3; alim = 1 + 1e-3; }
                for (int i = 0; i < N; i++) {
                    double d = (double)out[i] - want[i];
                    int alpha = c == 4 && i % 4 == 3;
                    if (masked && !ins->data[i / c]) {
                        fringe_total++;
                        fringe += fabs(d) > 1e-3;
                        frt_mode[s[5] & 3]++;
                        fr_mode[s[5] & 3] += fabs(d) > 1e-3;
                        continue;
                    }
                    if (alpha && fam == 3) {
                        if (fabs(d) > aerr) aerr = fabs(d);
                        if (fabs(d) > alim && abad_at < 0) abad_at = i;
                        continue;
                    }
                    if (fam == 3 && b > 0) {
                        if (d / scale < dmin) dmin = d / scale;
                        if (d / scale > dmax) dmax = d / scale;
                    }
                    if (fabs(d) > err) err = fabs(d);
                    if (fabs(d) > lim && bad_at < 0) bad_at = i;
                }
                if (bad_at >= 0)
                    CHECK(0, "%s: max |ours - Keras| %.4g > %.4g; first at row %d col %d ch %d: Keras %.4f, ours %.4f",
                          what, err, lim, bad_at / c / w, bad_at / c % w, bad_at % c, want[bad_at], out[bad_at]);
                if (abad_at >= 0)
                    CHECK(0, "%s: alpha differs by %.4g (> %g: Keras' brightness leaves alpha alone); first at row %d "
                          "col %d: Keras %.4f, ours %.4f", what, aerr, alim, abad_at / c / w, abad_at / c % w,
                          want[abad_at], out[abad_at]);
                if (fam == 3 && b > 0) {
                    if (err / ((1 + b) * scale) > worst) worst = err / ((1 + b) * scale);
                } else if (err > worst) worst = err;
                if (aerr > worst_alpha) worst_alpha = aerr;
            }
            cnn_datagen_free(g);
            free(x); free(out);
            free(s); free(kp); free(op); free(cv); free(want);
        }
        if (fam == 0)
            printf("# a/geometry: %d cases (fill nearest/reflect, bilinear), max |ours - Keras| %.3g (tolerance 1e-3, "
                   "0..255 values)\n", cases, worst);
        else if (fam == 1)
            printf("# a/constant+wrap: %d cases, max |ours - Keras| %.3g where the sample point is inside the image "
                   "(tolerance 1e-3); outside it (scipy's legacy modes vs our grid-constant/grid-wrap) %d of %d "
                   "constant values and %d of %d wrap values differ\n", cases, worst, fr_mode[1], frt_mode[1],
                   fr_mode[3], frt_mode[3]);
        else if (fam == 2)
            printf("# a/order0: %d cases, max |ours - Keras| %.3g (tolerance 1e-3; constant/wrap inside only; "
                   "%d of %d fringe values differ)\n", cases, worst, fringe, fringe_total);
        else
            printf("# a/colour: %d cases, max error / tolerance %.3g (channel shift 1e-3; brightness 1 + b levels: "
                   "ours - Keras in [%.3f, %.3f] levels), alpha max |diff| %.3g (tolerance 1)\n", cases, worst, dmin,
                   dmax, worst_alpha);
    }
}

/* The mapping stated on the simple cases: on a square image the fixture's
   cnn_transform is Keras' dict with shift = -(tx, ty); theta = 90 is np.rot90 and
   tx = 2 moves the content two columns left, exactly, in Keras and in ours. */
static void test_transform_mapping(void) {
    test_begin("keras_apply_transform_mapping");
    int n = fix_int("n_tr"), squares = 0, rot90 = 0, shift = 0;
    double worst = 0;
    for (int k = 0; k < n; k++) {
        int *s = rec_i32(rec("tr%d_setup", k));
        float *kp = rec_f32(rec("tr%d_keras", k)), *op = rec_f32(rec("tr%d_ours", k)), *want = rec_f32(rec("tr%d_out", k));
        if (!s || !kp || !op || !want) { free(s); free(kp); free(op); free(want); continue; }
        int h = s[0], w = s[1], c = s[2], N = h * w * c;
        if (s[7] == 0 && h == w) {
            squares++;
            CHECK(op[0] == kp[0] && op[1] == -kp[1] && op[2] == -kp[2] && op[3] == kp[3] && op[4] == kp[4] &&
                      op[5] == kp[5] && op[6] == kp[6] && op[7] == kp[7],
                  "case %d: a square image's cnn_transform is not Keras' dict with shift = -(tx, ty)", k);
        }
        int is_rot90 = s[7] == 0 && h == w && kp[0] == 90 && kp[1] == 0 && kp[2] == 0 && kp[3] == 0 && kp[4] == 1 &&
                       kp[5] == 1 && kp[6] == 0 && kp[7] == 0;
        int is_shift = s[7] == 0 && s[5] == CNN_FILL_NEAREST && kp[0] == 0 && kp[1] == 2 && kp[2] == 0 &&
                       kp[3] == 0 && kp[4] == 1 && kp[5] == 1 && kp[6] == 0 && kp[7] == 0;
        if (is_rot90 || is_shift) {
            float *x = (float *)malloc((size_t)N * sizeof(float)), *out = (float *)malloc((size_t)N * sizeof(float));
            for (int i = 0; i < N; i++) x[i] = (float)(pix((uint32_t)s[3], (uint32_t)i) % 256);
            cnn_datagen *g = cnn_datagen_new(.fill_mode = (cnn_fill_mode)s[5]);
            cnn_transform t = {0};
            t.theta = op[0]; t.shift_x = op[1]; t.shift_y = op[2];
            int rc = g ? cnn_datagen_apply_transform_opt(g, x, h, w, c, &t, out) : -1;
            CHECK(rc == CNN_OK, "case %d: %s", k, cnn_last_error());
            int bad = 0;
            double kerr = 0;
            for (int r = 0; rc == CNN_OK && r < h; r++)
                for (int col = 0; col < w; col++)
                    for (int ch = 0; ch < c; ch++) {
                        /* rot90: out[r][col] = x[col][w-1-r]; tx = 2: out[r][col] = x[r][min(col+2, w-1)] */
                        int sr = is_rot90 ? col : r, sc = is_rot90 ? w - 1 - r : (col + 2 < w ? col + 2 : w - 1);
                        float v = x[((size_t)sr * w + sc) * c + ch];
                        size_t o = ((size_t)r * w + col) * c + ch;
                        bad += out[o] != v;
                        if (fabs((double)want[o] - v) > kerr) kerr = fabs((double)want[o] - v);
                    }
            CHECK(!bad, "case %d (%s): %d values are not the exact remap of the input", k,
                  is_rot90 ? "theta 90 = np.rot90" : "tx 2 = two columns left", bad);
            CHECK(kerr < 1e-4, "case %d: Keras is %g from the exact remap (the fixture is not what it says)", k, kerr);
            if (kerr > worst) worst = kerr;
            rot90 += is_rot90;
            shift += is_shift;
            cnn_datagen_free(g);
            free(x); free(out);
        }
        free(s); free(kp); free(op); free(want);
    }
    CHECK(squares > 0 && rot90 > 0 && shift > 0, "fixture lacks the square / rot90 / integer-shift cases");
    printf("# a/mapping: %d square-image cases with shift = -(tx, ty); theta 90 (%d cases) and tx = 2 (%d cases) "
           "exact in ours, Keras within %.2g of exact\n", squares, rot90, shift, worst);
}

/* ---------------------------------------------- family b: fit / standardize */

static double max_abs(const float *v, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fabs(v[i]) > m ? fabs(v[i]) : m;
    return m;
}

static void test_standardize(void) {
    int n_st = fix_int("n_st");
    double w_stat = 0, w_out = 0, w_zca = 0, w_zout = 0;
    int cases = 0, zcases = 0;
    for (int pass = 0; pass < 2; pass++) {
        test_begin(pass == 0 ? "keras_fit_standardize" : "keras_fit_zca");
        CHECK(n_st > 0, "fixture n_st missing");
        for (int k = 0; k < n_st; k++) {
            int *s = rec_i32(rec("st%d_setup", k)), *fl = rec_i32(rec("st%d_flags", k));
            float *o = rec_f32(rec("st%d_opts", k)), *want = rec_f32(rec("st%d_out", k));
            float *kmean = rec_f32(rec("st%d_mean", k)), *kstd = rec_f32(rec("st%d_std", k));
            const record *zr = rec("st%d_zca", k);
            float *kzca = rec_f32(zr);
            if (!s || !fl || !o || !want || (s[9] != 0) != pass) {
                CHECK(s && fl && o && want, "fixture case %d incomplete", k);
                free(s); free(fl); free(o); free(want); free(kmean); free(kstd); free(kzca);
                continue;
            }
            int n = s[0], h = s[1], w = s[2], c = s[3], D = h * w * c, np_ = s[10], half = n ? np_ / 2 : 0;
            char what[320];
            snprintf(what, sizeof what,
                     "case %d (n %d, %dx%dx%d, featurewise center %d std %d, samplewise center %d std %d, zca %d, "
                     "rescale %g, zca_epsilon %g)", k, n, h, w, c, s[5], s[6], s[7], s[8], s[9], (double)o[0],
                     (double)o[1]);
            if (pass) zcases++; else cases++;
            float *x = (float *)malloc(((size_t)n * D + 1) * sizeof(float));
            cnn_dataset *ds = n ? cnn_dataset_new(n, h, w, c, 1) : NULL;
            for (int i = 0; i < n * D; i++) {
                x[i] = (float)(pix((uint32_t)s[4], (uint32_t)i) % 256);
                ds->images[i] = (unsigned char)x[i];
            }
            for (int route = 0; route < (n ? 2 : 1); route++) { /* fit on floats, then on a uint8 dataset */
                const char *via = route ? "fit_opt (uint8 dataset)" : "fit_float_opt";
                cnn_datagen_opts go;
                memset(&go, 0, sizeof go);
                go.featurewise_center = s[5];
                go.featurewise_std_normalization = s[6];
                go.samplewise_center = s[7];
                go.samplewise_std_normalization = s[8];
                go.zca_whitening = s[9];
                go.rescale = o[0];
                go.zca_epsilon = o[1];
                cnn_datagen *g = cnn_datagen_new_opt(&go);
                CHECK(g != NULL, "%s: cnn_datagen_new: %s", what, cnn_last_error());
                if (!g) continue;
                const cnn_datagen_opts *eff = cnn_datagen_options(g);
                if (route == 0)
                    CHECK(eff && eff->featurewise_center == fl[0] && eff->featurewise_std_normalization == fl[1] &&
                              eff->samplewise_center == fl[2] && eff->samplewise_std_normalization == fl[3],
                          "%s: flags in force %d %d %d %d, Keras %d %d %d %d", what, eff ? eff->featurewise_center : -1,
                          eff ? eff->featurewise_std_normalization : -1, eff ? eff->samplewise_center : -1,
                          eff ? eff->samplewise_std_normalization : -1, fl[0], fl[1], fl[2], fl[3]);
                if (n) {
                    cnn_datagen_fit_opts fo;
                    memset(&fo, 0, sizeof fo);
                    int rc = route ? cnn_datagen_fit_opt(g, ds, &fo) : cnn_datagen_fit_float_opt(g, x, n, h, w, c, &fo);
                    CHECK(rc == CNN_OK, "%s: %s: %s", what, via, cnn_last_error());
                }
                const float *mean = NULL, *sd = NULL;
                int sc = 0;
                cnn_datagen_stats(g, &mean, &sd, &sc);
                if (kmean) {
                    CHECK(mean && sc == c, "%s via %s: no fitted mean", what, via);
                    for (int j = 0; mean && sc == c && j < c; j++) {
                        double e = fabs((double)mean[j] - kmean[j]) / (fabs(kmean[j]) + 1e-30);
                        if (e > w_stat) w_stat = e;
                        CHECK(e <= 1e-5, "%s via %s: mean[%d] Keras %.8g, ours %.8g", what, via, j, kmean[j], mean[j]);
                    }
                }
                if (kstd) {
                    CHECK(sd && sc == c, "%s via %s: no fitted std", what, via);
                    for (int j = 0; sd && sc == c && j < c; j++) {
                        double e = fabs((double)sd[j] - kstd[j]) / (fabs(kstd[j]) + 1e-30);
                        if (e > w_stat) w_stat = e;
                        CHECK(e <= 1e-5, "%s via %s: std[%d] Keras %.8g, ours %.8g", what, via, j, kstd[j], sd[j]);
                    }
                }
                if (kzca) {
                    int d = 0;
                    const float *z = cnn_datagen_zca_matrix(g, &d);
                    CHECK(z && d == D, "%s via %s: no ZCA matrix (d %d, want %d)", what, via, d, D);
                    if (z && d == D) {
                        double e = test_rel_err(z, kzca, (size_t)D * D);
                        if (e > w_zca) w_zca = e;
                        int at = 0;
                        for (int i = 1; i < D * D; i++)
                            if (fabs((double)z[i] - kzca[i]) > fabs((double)z[at] - kzca[at])) at = i;
                        CHECK(e <= 1e-4, "%s via %s: ZCA matrix relative error %.3g (> 1e-4); largest at [%d][%d]: "
                              "Keras %.6g, ours %.6g", what, via, e, at / D, at % D, kzca[at], z[at]);
                    }
                }
                /* standardize the probes: fit images 0..half-1, then new ones */
                float *pr = (float *)malloc((size_t)np_ * D * sizeof(float));
                for (int i = 0; i < half * D; i++) pr[i] = x[i];
                for (int i = 0; i < (np_ - half) * D; i++)
                    pr[half * D + i] = (float)(pix((uint32_t)s[11], (uint32_t)i) % 256);
                int rc = cnn_datagen_standardize(g, pr, np_, h, w, c);
                CHECK(rc == CNN_OK, "%s via %s: standardize: %s", what, via, cnn_last_error());
                if (rc == CNN_OK) {
                    size_t m = (size_t)np_ * D;
                    if (pass) {
                        for (int p = 0; p < np_; p++) {
                            double e = test_rel_err(pr + (size_t)p * D, want + (size_t)p * D, (size_t)D);
                            if (e > w_zout) w_zout = e;
                            CHECK(e <= 1e-4, "%s via %s: standardized probe %d (%s) relative error %.3g (> 1e-4); "
                                  "first value Keras %.6g, ours %.6g", what, via, p, p < half ? "a fit image" : "new",
                                  e, want[(size_t)p * D], pr[(size_t)p * D]);
                        }
                    } else {
                        double sc_ = max_abs(want, m), e = 0;
                        size_t at = 0;
                        if (sc_ < 1) sc_ = 1;
                        for (size_t i = 0; i < m; i++)
                            if (fabs((double)pr[i] - want[i]) > e) { e = fabs((double)pr[i] - want[i]); at = i; }
                        if (e / sc_ > w_out) w_out = e / sc_;
                        CHECK(e <= 1e-4 * sc_, "%s via %s: standardize error %.3g (> 1e-4 x %.3g) at probe %d (%s) "
                              "value %d: Keras %.7g, ours %.7g", what, via, e, sc_, (int)(at / D),
                              (int)(at / D) < half ? "a fit image" : "new", (int)(at % D), want[at], pr[at]);
                    }
                }
                free(pr);
                cnn_datagen_free(g);
            }
            cnn_dataset_free(ds);
            free(x);
            free(s); free(fl); free(o); free(want); free(kmean); free(kstd); free(kzca);
        }
        if (!pass)
            printf("# b/standardize: %d cases, mean/std max relative error %.3g (tolerance 1e-5), outputs max error "
                   "%.3g of their scale (tolerance 1e-4)\n", cases, w_stat, w_out);
        else
            printf("# b/zca: %d cases, ZCA matrix max relative error %.3g, whitened probes %.3g (tolerance 1e-4; "
                   "Keras' float32 SVD is within 6e-8 of float64 here)\n", zcases, w_zca, w_zout);
    }
}

/* ------------------------------------------------------------ family c: flow */

static void test_flow(void) {
    int n_fl = fix_int("n_fl");
    int cases = 0;
    double worst = 0;
    for (int group = 0; group < 2; group++) {
        test_begin(group == 0 ? "keras_flow_validation_split" : "keras_flow_split_rounding");
        CHECK(n_fl > 0, "fixture n_fl missing");
        for (int k = 0; k < n_fl; k++) {
            int *s = rec_i32(rec("fl%d_setup", k)), *yl = rec_i32(rec("fl%d_y", k));
            const record *br = rec("fl%d_batches", k), *yr = rec("fl%d_yout", k);
            int *sizes = rec_i32(br);
            float *o = rec_f32(rec("fl%d_opts", k)), *wx = rec_f32(rec("fl%d_x", k)), *wy = rec_f32(yr);
            if (!s || !yl || !sizes || !o || !wx || !wy) {
                CHECK(0, "fixture flow case %d incomplete", k);
                free(s); free(yl); free(sizes); free(o); free(wx); free(wy);
                continue;
            }
            /* the rounding group: validation_split 0.7 of 10 images, where int(n * split) is 7 in Python's
               doubles (0.7 * 10 = 7.000000000000001) but 6 from the float 0.7f widened to double */
            int rounding = fabsf(o[0] - 0.7f) < 1e-6f;
            if (rounding != group) { free(s); free(yl); free(sizes); free(o); free(wx); free(wy); continue; }
            cases++;
            int n = s[0], h = s[1], w = s[2], c = s[3], bs = s[5], subset = s[6], fc = s[7], oh = s[8], ncls = s[9];
            int D = h * w * c, nb = (int)br->count, total = 0, yw = oh ? ncls : 1;
            for (int b = 0; b < nb; b++) total += sizes[b];
            char what[256];
            snprintf(what, sizeof what, "flow case %d (n %d, validation_split %g, subset %s, batch %d%s%s%s)", k, n,
                     (double)o[0], subset == 1 ? "training" : subset == 2 ? "validation" : "none", bs,
                     fc ? ", featurewise_center" : "", o[1] != 0 ? ", rescale" : "", oh ? ", one-hot" : "");
            cnn_dataset *ds = cnn_dataset_new(n, h, w, c, ncls);
            float *xf = (float *)malloc((size_t)n * D * sizeof(float)), *yf = (float *)calloc((size_t)n * yw, sizeof(float));
            for (int i = 0; i < n * D; i++) {
                ds->images[i] = (unsigned char)(pix((uint32_t)s[4], (uint32_t)i) % 256);
                xf[i] = ds->images[i];
            }
            for (int i = 0; i < n; i++) {
                ds->labels[i] = yl[i];
                if (oh) yf[(size_t)i * yw + yl[i]] = 1; else yf[i] = (float)yl[i];
            }
            for (int route = 0; route < 2; route++) { /* uint8 dataset with labels; float x with explicit y rows */
                cnn_datagen_opts go;
                memset(&go, 0, sizeof go);
                go.featurewise_center = fc;
                go.validation_split = o[0];
                go.rescale = o[1];
                cnn_datagen *g = cnn_datagen_new_opt(&go);
                CHECK(g != NULL, "%s: %s", what, cnn_last_error());
                if (!g) continue;
                if (fc) CHECK(cnn_datagen_fit(g, ds) == CNN_OK, "%s: fit: %s", what, cnn_last_error());
                cnn_flow_opts fo;
                memset(&fo, 0, sizeof fo);
                fo.batch_size = bs;
                fo.no_shuffle = 1;
                fo.subset = (cnn_subset)subset;
                fo.workers = route ? -1 : 0;
                cnn_flow *f;
                if (route == 0) {
                    fo.one_hot = oh;
                    f = cnn_datagen_flow_opt(g, ds, &fo);
                } else {
                    fo.y = yf;
                    fo.y_width = yw;
                    f = cnn_datagen_flow_float_opt(g, xf, n, h, w, c, &fo);
                }
                const char *via = route ? "flow_float_opt with .y" : "flow_opt";
                CHECK(f != NULL, "%s via %s: %s", what, via, cnn_last_error());
                if (f) {
                    CHECK(cnn_flow_samples(f) == total && cnn_flow_len(f) == nb,
                          "%s via %s: %d samples in %d batches, Keras %d in %d", what, via, cnn_flow_samples(f),
                          cnn_flow_len(f), total, nb);
                    size_t xo = 0, yo = 0;
                    for (int b = 0; b < nb && b < cnn_flow_len(f); b++) {
                        const float *bx = NULL, *by = NULL;
                        int got = cnn_flow_next(f, &bx, &by);
                        if (got != sizes[b]) {
                            CHECK(0, "%s via %s: batch %d has %d images, Keras %d (%s)", what, via, b, got, sizes[b],
                                  got < 0 ? cnn_last_error() : "");
                            break;
                        }
                        if ((xo + (size_t)got * D) > (size_t)total * D) break;
                        double e = 0;
                        int at = -1;
                        for (int i = 0; i < got * D; i++) {
                            double d = fabs((double)bx[i] - wx[xo + i]);
                            if (d > e) e = d;
                            if (d > 1e-5 * (1 + fabs(wx[xo + i])) && at < 0) at = i;
                        }
                        if (e > worst) worst = e;
                        CHECK(at < 0, "%s via %s: batch %d image %d value %d: Keras %.7g, ours %.7g", what, via, b,
                              at / D, at % D, at >= 0 ? wx[xo + at] : 0, at >= 0 ? bx[at] : 0);
                        int ybad = -1;
                        for (int i = 0; by && i < got * yw; i++)
                            if (by[i] != wy[yo + i]) { ybad = i; break; }
                        CHECK(by && ybad < 0, "%s via %s: batch %d targets differ at sample %d: Keras %g, ours %g",
                              what, via, b, ybad / yw, ybad >= 0 ? wy[yo + ybad] : 0,
                              ybad >= 0 && by ? by[ybad] : 0);
                        xo += (size_t)got * D;
                        yo += (size_t)got * yw;
                    }
                    const float *bx, *by;
                    CHECK(cnn_flow_next(f, &bx, &by) == 0, "%s via %s: no end of pass after %d batches", what, via,
                          nb);
                    cnn_flow_free(f);
                }
                cnn_datagen_free(g);
            }
            cnn_dataset_free(ds);
            free(xf); free(yf);
            free(s); free(yl); free(sizes); free(o); free(wx); free(wy);
        }
    }
    printf("# c/flow: %d cases (each as uint8 dataset and as float x with .y), max |ours - Keras| %.3g (tolerance "
           "1e-5 relative); the rounding group: validation_split 0.7 of 10 images is int(7.000000000000001) = 7 "
           "in Keras\n", cases, worst);
}

/* ------------------------------------------------ family d: flow_from_directory */

static char tmp_root[64];

static int make_parents(const char *path) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + strlen(tmp_root) + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(buf, 0700) != 0 && errno != EEXIST) return 0;
            *p = '/';
        }
    return 1;
}

static int write_tree(void) {
    char *text = rec_text(rec("tree_files", 0));
    char *lines[64];
    int n = split_lines(text, lines, 64), ok = n > 0;
    for (int i = 0; i < n && ok; i++) {
        char kind, rel[256], a[256];
        int h = 0, c = 0;
        unsigned seed = 0;
        char path[512];
        if (sscanf(lines[i], "%c %255s %255s %d %d %u", &kind, rel, a, &h, &c, &seed) != 6) { ok = 0; break; }
        snprintf(path, sizeof path, "%s/%s", tmp_root, rel);
        ok = make_parents(path);
        if (!ok) break;
        if (kind == 'f') {
            int w = atoi(a);
            unsigned char *px = (unsigned char *)malloc((size_t)h * w * c);
            for (int j = 0; j < h * w * c; j++) px[j] = (unsigned char)(pix(seed, (uint32_t)j) % 256);
            ok = cnn_write_png(path, w, h, c, px) == CNN_OK;
            free(px);
        } else if (kind == 't') {
            ok = write_bytes(path, "not an image\n", 13);
        } else if (kind == 'l') {
            ok = symlink(a, path) == 0;
        } else ok = 0;
    }
    free(text);
    return ok;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb; (void)flag; (void)ftw;
    return remove(path);
}

static const char *interp_name[7] = {"default", "nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"};
static const char *color_name[3] = {"rgb", "grayscale", "rgba"};
static const char *class_mode_name[5] = {"categorical", "binary", "sparse", "input", "None"};

typedef struct dir_stats {
    int cases, values, differ, max_diff;
} dir_stats;

/* one flow_from_directory case; listing != 0: names, labels, batches and targets; else the pixels */
static void dir_case(int k, int listing, dir_stats *st) {
    int *s = rec_i32(rec("dir%d_setup", k)), *labels = NULL, *sizes = NULL;
    float *o = rec_f32(rec("dir%d_opts", k)), *wy = NULL;
    const record *xr = rec("dir%d_x", k), *lr = rec("dir%d_labels", k), *br = rec("dir%d_batches", k);
    char *given = rec_text(rec("dir%d_classes_given", k)), *names = rec_text(rec("dir%d_class_names", k));
    char *files = rec_text(rec("dir%d_files", k));
    char *gl[16], *nl[16], *fl[64];
    const char *classes[17];
    int ng = split_lines(given, gl, 16), nn = split_lines(names, nl, 16), nf = split_lines(files, fl, 64);
    labels = rec_i32(lr);
    sizes = rec_i32(br);
    wy = rec_f32(rec("dir%d_y", k));
    if (!s || !o || !xr || !labels || !sizes || !names || !files) {
        CHECK(0, "fixture directory case %d incomplete", k);
        goto done;
    }
    {
        int th = s[0], tw = s[1], color = s[2], cm = s[3], interp = s[4], keep = s[5], subset = s[6], bs = s[7];
        int follow = s[8], rescaled = s[9], ch = color == 1 ? 1 : color == 2 ? 4 : 3, D = th * tw * ch;
        int nb = (int)br->count, yw = cm == 0 ? nn : cm == 3 ? D : cm == 4 ? 0 : 1;
        char what[320];
        snprintf(what, sizeof what,
                 "dir case %d (target %dx%d, %s, class_mode %s, %s, keep_aspect_ratio %d, subset %s, batch %d%s%s%s)",
                 k, th, tw, color_name[color], class_mode_name[cm], interp_name[interp], keep,
                 subset == 1 ? "training" : subset == 2 ? "validation" : "none", bs, follow ? ", follow_links" : "",
                 rescaled ? ", rescale" : "", ng ? ", classes given" : "");
        st->cases++;
        cnn_datagen_opts go;
        memset(&go, 0, sizeof go);
        go.rescale = o[1];
        go.validation_split = o[0];
        cnn_datagen *g = cnn_datagen_new_opt(&go);
        CHECK(g != NULL, "%s: %s", what, cnn_last_error());
        if (!g) goto done;
        for (int i = 0; i < ng; i++) classes[i] = gl[i];
        classes[ng] = NULL;
        cnn_directory_flow_opts fo;
        memset(&fo, 0, sizeof fo);
        fo.target_size[0] = th;
        fo.target_size[1] = tw;
        fo.color_mode = (cnn_color_mode)color;
        fo.class_mode = (cnn_class_mode)cm;
        fo.interpolation = (cnn_interpolation)interp;
        fo.keep_aspect_ratio = keep;
        fo.subset = (cnn_subset)subset;
        fo.batch_size = bs;
        fo.follow_links = follow;
        fo.no_shuffle = 1;
        fo.classes = ng ? classes : NULL;
        cnn_flow *f = cnn_datagen_flow_from_directory_opt(g, tmp_root, &fo);
        CHECK(f != NULL, "%s: %s", what, cnn_last_error());
        if (!f) { cnn_datagen_free(g); goto done; }
        if (listing) {
            int ok = cnn_flow_samples(f) == nf && cnn_flow_len(f) == nb;
            CHECK(ok, "%s: %d samples in %d batches, Keras %d in %d", what, cnn_flow_samples(f), cnn_flow_len(f), nf,
                  nb);
            CHECK(cnn_flow_num_classes(f) == nn, "%s: %d classes, Keras %d", what, cnn_flow_num_classes(f), nn);
            for (int j = 0; j < nn && j < cnn_flow_num_classes(f); j++) {
                const char *cn = cnn_flow_class_name(f, j);
                CHECK(cn && !strcmp(cn, nl[j]), "%s: class %d is '%s', Keras '%s'", what, j, cn ? cn : "(null)", nl[j]);
            }
            size_t rl = strlen(tmp_root);
            const int *fc = cnn_flow_classes(f);
            int order_bad = 0;
            for (int i = 0; i < nf && i < cnn_flow_samples(f); i++) {
                const char *fn = cnn_flow_filename(f, i);
                const char *rel = fn && !strncmp(fn, tmp_root, rl) && fn[rl] == '/' ? fn + rl + 1 : fn;
                if (!rel || strcmp(rel, fl[i])) {
                    if (!order_bad++)
                        CHECK(0, "%s: file %d is '%s', Keras '%s' (Keras' order: a folder's own files, then its "
                              "subfolders, os.walk roots sorted as strings)", what, i, rel ? rel : "(null)", fl[i]);
                }
                CHECK(fc && fc[i] == labels[i], "%s: label of file %d (%s) %d, Keras %d", what, i, fl[i],
                      fc ? fc[i] : -1, labels[i]);
            }
            if (order_bad > 1) CHECK(0, "%s: %d of %d file names differ in all", what, order_bad, nf);
        }
        if (cnn_flow_samples(f) == nf && cnn_flow_len(f) == nb) {
            size_t xo = 0, yo = 0;
            int first_bad = 1;
            for (int b = 0; b < nb; b++) {
                const float *bx = NULL, *by = NULL;
                int got = cnn_flow_next(f, &bx, &by);
                if (got != sizes[b]) {
                    CHECK(0, "%s: batch %d has %d images, Keras %d (%s)", what, b, got, sizes[b],
                          got < 0 ? cnn_last_error() : "");
                    break;
                }
                if (listing) {
                    if (cm == 4) {
                        CHECK(by == NULL, "%s: targets with class_mode None", what);
                    } else if (cm == 3) {
                        CHECK(by && !memcmp(by, bx, (size_t)got * D * sizeof(float)),
                              "%s: batch %d: class_mode input targets are not the images", what, b);
                    } else {
                        int bad = -1;
                        for (int i = 0; by && wy && i < got * yw; i++)
                            if (by[i] != wy[yo + i]) { bad = i; break; }
                        CHECK(by && wy && bad < 0, "%s: batch %d: target of sample %d (%s) differs: Keras %g, ours %g",
                              what, b, bad / (yw ? yw : 1), bad >= 0 ? fl[(yo + bad) / yw] : "",
                              bad >= 0 && wy ? wy[yo + bad] : 0, bad >= 0 && by ? by[bad] : 0);
                    }
                } else {
                    for (int i = 0; i < got * D; i++) {
                        double want = xr->type == T_U8 ? xr->data[xo + i] : 0;
                        if (xr->type == T_F32) {
                            float v;
                            memcpy(&v, xr->data + 4 * (xo + i), 4);
                            want = v;
                        }
                        double d = fabs((double)bx[i] - want), lev = rescaled ? d / o[1] : d;
                        st->values++;
                        if (lev > 1e-3) {
                            int img = (int)((xo + i) / D), px = (int)((xo + i) % D);
                            st->differ++;
                            if ((int)(lev + 0.5) > st->max_diff) st->max_diff = (int)(lev + 0.5);
                            if (first_bad) {
                                first_bad = 0;
                                CHECK(0, "%s: %s row %d col %d channel %d: Keras %g, ours %g", what, fl[img],
                                      px / ch / tw, px / ch % tw, px % ch, want, (double)bx[i]);
                            }
                        }
                    }
                }
                xo += (size_t)got * D;
                yo += (size_t)got * yw;
            }
            if (!listing && !first_bad) {
                /* per file: how many values differ, to see the pattern */
                char line[1024];
                int len = 0;
                cnn_flow_reset(f, 0);
                line[0] = 0;
                xo = 0;
                for (int b = 0; b < nb; b++) {
                    const float *bx = NULL, *by = NULL;
                    int got = cnn_flow_next(f, &bx, &by);
                    if (got != sizes[b]) break;
                    for (int im = 0; im < got; im++) {
                        int cnt = 0, mx = 0;
                        for (int i = 0; i < D; i++) {
                            size_t at = xo + (size_t)im * D + i;
                            double want = xr->type == T_U8 ? xr->data[at] : 0;
                            if (xr->type == T_F32) { float v; memcpy(&v, xr->data + 4 * at, 4); want = v; }
                            double d = fabs(bx[(size_t)im * D + i] - want);
                            if (rescaled) d /= o[1];
                            if (d > 1e-3) { cnt++; if ((int)(d + 0.5) > mx) mx = (int)(d + 0.5); }
                        }
                        if (cnt && len < (int)sizeof line - 80)
                            len += snprintf(line + len, sizeof line - len, " %s:%d/%d(max %d)",
                                            fl[(xo / D) + im], cnt, D, mx);
                    }
                    xo += (size_t)got * D;
                }
                CHECK(0, "%s: differing values per file:%s", what, line);
            }
        }
        cnn_flow_free(f);
        cnn_datagen_free(g);
    }
done:
    free(s); free(o); free(labels); free(sizes); free(wy); free(given); free(names); free(files);
}

static void test_directory(void) {
    int n_dir = fix_int("n_dir");
    test_begin("keras_flow_from_directory_tree");
    snprintf(tmp_root, sizeof tmp_root, "/tmp/cnn_kerastest_XXXXXX");
    if (!mkdtemp(tmp_root)) { CHECK(0, "mkdtemp"); return; }
    CHECK(write_tree(), "cannot write the image tree under %s", tmp_root);

    dir_stats st;
    memset(&st, 0, sizeof st);
    test_begin("keras_flow_from_directory_listing");
    CHECK(n_dir > 0, "fixture n_dir missing");
    for (int k = 0; k < n_dir; k++) dir_case(k, 1, &st);
    printf("# d/listing: %d cases: file order, labels, class names, batch sizes and targets (exact)\n", st.cases);

    static const char *groups[7] = {NULL, "keras_flow_from_directory_nearest", "keras_flow_from_directory_bilinear",
                                    "keras_flow_from_directory_bicubic", "keras_flow_from_directory_lanczos",
                                    "keras_flow_from_directory_box", "keras_flow_from_directory_hamming"};
    for (int interp = 1; interp <= 6; interp++) {
        test_begin(groups[interp]);
        memset(&st, 0, sizeof st);
        for (int k = 0; k < n_dir; k++) {
            int *s = rec_i32(rec("dir%d_setup", k));
            if (s && s[4] == interp) dir_case(k, 0, &st);
            free(s);
        }
        printf("# d/%s: %d cases, %d of %d values differ from Keras, max |diff| %d levels (tolerance: exact)\n",
               interp_name[interp], st.cases, st.differ, st.values, st.max_diff);
    }
    if (nftw(tmp_root, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0) printf("# could not remove %s\n", tmp_root);
}

int main(void) {
    test_begin("keras_fixture_load");
    int ok = load_fixture();
    CHECK(ok, "cannot read tests/fixtures/keras.bin (run from the repository root; written by "
              "tests/fixtures/make_keras_fixtures.py)");
    if (ok) {
        char *v = rec_text(rec("versions", 0));
        printf("# fixtures of %s\n", v ? v : "?");
        free(v);
        test_transform_mapping();
        test_transforms();
        test_standardize();
        test_flow();
        test_directory();
    }
    free(recs);
    free(fix_bytes);
    return test_finish();
}
