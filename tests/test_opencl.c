/* test_opencl.c - cnn_opencl.h on real OpenCL devices (PoCL's CPU devices and
   Mesa rusticl's llvmpipe stand in for GPUs), against cnn.h's CPU path.

   One program; the mode on the command line says which environment it runs
   in and which groups run (tests/opencl_env.sh MODE PROGRAM MODE sets the
   environment up):

     pocl2    two identical PoCL devices         1 listing and choice, 2 every layer,
              (POCL_DEVICES="pthread pthread",     3 training exactness (1 device, 2 devices
              only pocl.icd in OCL_ICD_VENDORS)    equal / auto / 3:1), 4 batch sizes,
                                                   5 fit, 7 error injection, 8 detach and save
     vendors  one PoCL device + rusticl llvmpipe 1 listing across platforms, 3 exactness
              (pocl.icd and rusticl.icd,           across vendors, 4 batch sizes, 5 fit on
              RUSTICL_ENABLE=llvmpipe)             two vendors
     uneven   a fast and a slow PoCL device      3 exactness with auto and fixed splits,
              (POCL_DEVICES="pthread basic")       4 batch sizes
     none     no platform (OCL_ICD_VENDORS =     6 no platform: listing, attach errors,
              an empty folder)                     the CPU path still trains

   Without tests/opencl_env.sh: OCL_ICD_VENDORS=DIR, a folder holding links to
   /etc/OpenCL/vendors/pocl.icd (pocl2, uneven), pocl.icd and rusticl.icd
   (vendors), or nothing (none); plus POCL_DEVICES as above ("pthread" for
   vendors) and RUSTICL_ENABLE=llvmpipe for vendors.

   Every check compares with the CPU: relative error ||cl - cpu|| / ||cpu|| <=
   1e-4 per tensor (outputs, each layer's kernel and bias gradients, parameters,
   optimizer slots, BatchNorm moving statistics), except the bias of a linear
   Conv2D or Dense layer that feeds a BatchNormalization in batch mode: its
   gradient is zero in exact arithmetic (BatchNorm's input gradient sums to zero
   per channel), so both sides are float noise, checked for smallness against
   the layer's kernel gradient instead. (With a ReLU between them the bias
   gradient is real and compared as any other.) The error-injection group
   compares bitwise: a failed call leaves the model's bits alone, and the call
   done again gives the bits of a twin on the same devices that never failed.

   Build and run from the repository root:
     gcc -std=c99 -D_POSIX_C_SOURCE=200809L -O2 -Wall -Wextra -I. tests/test_opencl.c \
         -lOpenCL -lclblast -lm -o build/tests/test_opencl
     bash tests/opencl_env.sh pocl2 build/tests/test_opencl pocl2   (and vendors, uneven, none) */
#define CNN_IMPLEMENTATION
#define CNN_OPENCL_IMPLEMENTATION
#include "cnn.h"
#include "cnn_opencl.h"
#include "test_util.h"

#include <stdint.h>
#include <unistd.h> /* mkstemp, close */

#define TOL 1e-4
/* a bias feeding BatchNorm: ||gradient|| <= BIAS_NOISE * ||its layer's kernel gradient|| */
#define BIAS_NOISE 1e-4

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */
/* ------------------------------------------------------------------------ */

static uint64_t rng_state = 12345;
static uint32_t rnd(void) {
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(rng_state >> 33);
}
static float urand(void) { return (float)(rnd() / 2147483648.0); } /* [0, 1) */
static void fill(float *v, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; i++) v[i] = lo + (hi - lo) * urand();
}

static void clear_error(void) { cnn_set_error(CNN_OK, "%s", ""); }
static int error_has(const char *s) { return strstr(cnn_last_error(), s) != NULL; }

/* An attach that failed because a driver cannot run our kernels (its build
   fails, or its results fail the start-up check) skips that case with a
   visible line instead of failing it: the issue is the driver's. Not when the
   device that failed is PoCL's, the driver these tests trust: there a failed
   check is a wrong kernel (a broken layer kernel would otherwise pass as SKIP). */
static int driver_skip(int rc, const char *what) {
    if (rc != CNN_ERR_DEVICE || !(error_has("building the kernels failed") || error_has("fails its start-up check")))
        return 0;
    if (error_has("Portable Computing Language")) return 0;
    printf("SKIP %s: the driver cannot run it: %s\n", what, cnn_last_error());
    return 1;
}

/* test_begin keeps the pointer: names built at run time live here */
static const char *name_of(const char *fmt, const char *a) {
    static char pool[64][160];
    static int used;
    char *s = pool[used++ & 63];
    snprintf(s, sizeof pool[0], fmt, a);
    return s;
}

static const char *mode = "";
static double t_group;
static void group_done(void) {
    if (test_current_name) printf("#   (%s: %.2f s)\n", test_current_name, cnn_wall_time() - t_group);
    test_end();
}
static void group(const char *name) {
    group_done();
    test_begin(name_of("opencl %s", name));
    t_group = cnn_wall_time();
}

static double rel(const float *a, const float *b, size_t n) { return test_rel_err(a, b, n); }
static double norm(const float *a, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * a[i];
    return sqrt(s);
}
static int same_floats(const float *a, const float *b, size_t n) { return n == 0 || memcmp(a, b, n * sizeof *a) == 0; }

/* The devices of this machine, found once. */
static cnn_opencl_device_info devs[64];
static int n_devs;
static int find_device(const char *platform_piece, int skip) {
    for (int i = 0; i < n_devs; i++)
        if (strstr(devs[i].platform, platform_piece) && skip-- == 0) return i;
    return -1;
}

/* ------------------------------------------------------------------------ */
/* Models and their tensors                                                 */
/* ------------------------------------------------------------------------ */

typedef cnn_node *(*net_fn)(cnn_model *m, cnn_node *x, int variant);

typedef struct net_spec {
    const char *label;
    net_fn build;
    int variant;
    int h, w, c;
    cnn_loss loss;
    int y_width; /* 0 = the output width (dense targets in [0, 1]); 1 = a class index */
    void (*prepare)(cnn_model *m); /* after compiling (set weights, freeze), or NULL */
    int needs;   /* 1 + the index of a spec of the same group that must pass first (it would crash
                    the program otherwise), or 0 */
} net_spec;

static cnn_model *make(const net_spec *s, cnn_optimizer opt, uint64_t seed) {
    cnn_model *m = cnn_model_new();
    cnn_node *x;
    if (!m) return NULL;
    cnn_model_set_seed(m, seed);
    x = cnn_input(m, s->h, s->w, s->c, "input");
    if (cnn_model_set_output(m, s->build(m, x, s->variant)) != CNN_OK ||
        cnn_compile(m, .optimizer = opt, .loss = s->loss, .metrics = CNN_ACCURACY) != CNN_OK) {
        printf("# %s: building the model failed: %s\n", s->label, cnn_last_error());
        cnn_model_free(m);
        return NULL;
    }
    if (s->prepare) s->prepare(m);
    return m;
}

static int y_width_of(const net_spec *s, const cnn_model *m) { return s->y_width ? s->y_width : cnn_model_output_size(m); }

static void make_targets(float *y, int B, int yw, int U) {
    for (int b = 0; b < B; b++)
        for (int j = 0; j < yw; j++) y[(size_t)b * yw + j] = yw == 1 && U > 1 ? (float)(rnd() % (uint32_t)U) : urand();
}

/* Does a trainable BatchNormalization read node n, a linear layer (so n's
   bias gradient is zero in exact arithmetic during training: BatchNorm's input
   gradient sums to zero over the batch per channel)? */
static int feeds_bn(const cnn_model *m, const cnn_node *n) {
    if (n->activation != CNN_LINEAR) return 0;
    for (int i = 0; i < m->n_nodes; i++)
        if (m->nodes[i]->type == CNN__BATCH_NORM && m->nodes[i]->trainable && m->nodes[i]->inputs[0] == n->index)
            return 1;
    return 0;
}

/* One named tensor of the parameter (or state) layout. */
typedef struct tensor {
    const cnn_node *node;
    const char *which;
    size_t off, count;
    int bn_bias;      /* a bias feeding BatchNorm */
    size_t kernel_off, kernel_count; /* its layer's kernel, for the smallness check */
} tensor;

static int param_tensors(const cnn_model *m, tensor *t, int max) {
    int k = 0;
    for (int i = 0; i < m->n_nodes && k + 2 <= max; i++) {
        const cnn_node *n = m->nodes[i];
        if (!n->p_count) continue;
        if (n->type == CNN__BATCH_NORM) {
            t[k++] = (tensor){n, "gamma", n->p_off, (size_t)n->c, 0, 0, 0};
            t[k++] = (tensor){n, "beta", n->p_off + n->c, (size_t)n->c, 0, 0, 0};
        } else {
            t[k++] = (tensor){n, "kernel", n->p_off, n->kernel_count, 0, 0, 0};
            if (n->p_count > n->kernel_count)
                t[k++] = (tensor){n, "bias", n->p_off + n->kernel_count, n->p_count - n->kernel_count, feeds_bn(m, n),
                                  n->p_off, n->kernel_count};
        }
    }
    return k;
}
static int state_tensors(const cnn_model *m, tensor *t, int max) {
    int k = 0;
    for (int i = 0; i < m->n_nodes && k + 2 <= max; i++) {
        const cnn_node *n = m->nodes[i];
        if (n->type != CNN__BATCH_NORM) continue;
        t[k++] = (tensor){n, "moving_mean", n->s_off, (size_t)n->c, 0, 0, 0};
        t[k++] = (tensor){n, "moving_variance", n->s_off + n->c, (size_t)n->c, 0, 0, 0};
    }
    return k;
}

/* The worst per-tensor relative difference of two buffers of the layout, and
   where. Biases feeding BatchNorm are left out of the worst: with ka (the
   gradients) they are reported in bias_noise as max(||a||, ||b||) / ||their
   kernel's gradient in ka||; without, skipped. */
typedef struct worst { double rel; char where[96]; double bias_noise; char bias_where[96]; } worst;
static void worst_init(worst *w) { memset(w, 0, sizeof *w); strcpy(w->where, "-"); strcpy(w->bias_where, "-"); }
static void compare_tensors(const tensor *t, int nt, const float *a, const float *b, const float *ka, const char *buf,
                            worst *w) {
    for (int i = 0; i < nt; i++) {
        if (t[i].bn_bias && !ka) continue; /* checked by the caller */
        if (t[i].bn_bias) {
            double kn = norm(ka + t[i].kernel_off, t[i].kernel_count), na = norm(a + t[i].off, t[i].count),
                   nb = norm(b + t[i].off, t[i].count), q = (na > nb ? na : nb) / (kn > 0 ? kn : 1);
            if (q >= w->bias_noise) {
                w->bias_noise = q;
                snprintf(w->bias_where, sizeof w->bias_where, "%s %s/%s", buf, t[i].node->name, t[i].which);
            }
            continue;
        }
        double e = rel(a + t[i].off, b + t[i].off, t[i].count);
        if (!(e <= w->rel)) { /* NaN counts as the worst */
            w->rel = e;
            snprintf(w->where, sizeof w->where, "%s %s/%s", buf, t[i].node->name, t[i].which);
        }
    }
}

/* The OpenCL model cl against its CPU twin cpu: parameters (and, when
   with_grads, the gradient buffers: the last step's gradients), optimizer
   slots, BatchNorm moving statistics. */
static void compare_models(const cnn_model *cl, const cnn_model *cpu, int with_grads, int with_slots, worst *w) {
    tensor t[128], s[64];
    int nt, ns;
    memset(t, 0, sizeof t);
    memset(s, 0, sizeof s);
    nt = param_tensors(cpu, t, 128);
    ns = state_tensors(cpu, s, 64);
    worst_init(w);
    compare_tensors(t, nt, cl->params, cpu->params, NULL, "params", w);
    for (int i = 0; i < nt; i++) /* the BN-fed biases' values: both start at 0 and move by noise */
        if (t[i].bn_bias) {
            double kn = norm(cpu->params + t[i].kernel_off, t[i].kernel_count);
            float d[4096];
            size_t n = t[i].count < 4096 ? t[i].count : 4096;
            for (size_t j = 0; j < n; j++) d[j] = cl->params[t[i].off + j] - cpu->params[t[i].off + j];
            if (norm(d, n) / kn > w->bias_noise) {
                w->bias_noise = norm(d, n) / kn;
                snprintf(w->bias_where, sizeof w->bias_where, "params %s/bias (difference)", t[i].node->name);
            }
        }
    if (with_grads) compare_tensors(t, nt, cl->grads, cpu->grads, cpu->grads, "grads", w);
    if (with_slots && cpu->slot1) {
        compare_tensors(t, nt, cl->slot1, cpu->slot1, NULL, "slot1", w);
        if (cpu->opt.type == CNN_ADAM) compare_tensors(t, nt, cl->slot2, cpu->slot2, NULL, "slot2", w);
    }
    compare_tensors(s, ns, cl->state, cpu->state, NULL, "state", w);
}

/* ------------------------------------------------------------------------ */
/* 1. Device listing and choice                                             */
/* ------------------------------------------------------------------------ */

static int select_list(const char *choice, int *idx, int max) {
    clear_error();
    return cnn_opencl_select(choice, idx, max);
}

static int is_list(const int *idx, int n, int a, int b) { return n >= 1 && idx[0] == a && (b < 0 ? n == 1 : n == 2 && idx[1] == b); }

static void test_listing(void) {
    cnn_opencl_device_info again[64], one[2];
    int idx[64], n;
    group(name_of("%s: device listing and choice", mode));
    n = cnn_opencl_devices(NULL, 0);
    CHECK(n == n_devs, "counting with NULL gives %d, listing gave %d", n, n_devs);
    CHECK(cnn_opencl_devices(again, 64) == n_devs && !memcmp(again, devs, (size_t)n_devs * sizeof *devs),
          "a second listing differs from the first");
    memset(one, 0x5a, sizeof one);
    CHECK(cnn_opencl_devices(one, 1) == n_devs, "with max 1 the count is not the total");
    CHECK(((unsigned char *)&one[1])[0] == 0x5a && !memcmp(&one[0], &devs[0], sizeof one[0]),
          "with max 1: wrote past out[0], or out[0] differs");
    clear_error();
    CHECK(cnn_opencl_devices(again, -1) == CNN_ERR_ARG && error_has("negative"), "max -1: %s", cnn_last_error());
    for (int i = 0; i < n_devs; i++) {
        const cnn_opencl_device_info *d = &devs[i];
        printf("#   device %d: %s | %s | %s | %s | driver %s | %s | %d units | %.1f GB, max alloc %.1f GB\n", d->index,
               d->name, d->vendor, d->platform, d->version, d->driver, d->is_gpu ? "gpu" : d->is_cpu ? "cpu" : "other",
               d->compute_units, d->global_memory / 1e9, d->max_alloc / 1e9);
        CHECK(d->index == i, "device %d has index %d", i, d->index);
        CHECK(d->name[0] && d->vendor[0] && d->platform[0] && d->driver[0], "device %d: an empty name, vendor, platform or driver", i);
        CHECK(!strncmp(d->version, "OpenCL ", 7), "device %d: version '%s' does not start with 'OpenCL '", i, d->version);
        CHECK(d->is_cpu && !d->is_gpu, "device %d (%s): PoCL and llvmpipe are CPU devices (is_cpu %d is_gpu %d)", i, d->name,
              d->is_cpu, d->is_gpu);
        CHECK(d->compute_units > 0 && d->global_memory > 0 && d->max_alloc > 0 && d->max_alloc <= d->global_memory,
              "device %d: units %d, memory %llu, max alloc %llu", i, d->compute_units, d->global_memory, d->max_alloc);
        CHECK(memchr(d->name, 0, sizeof d->name) && memchr(d->platform, 0, sizeof d->platform), "device %d: unterminated strings", i);
    }

    /* index lists, types, names */
    n = select_list("0,1", idx, 64);
    CHECK(is_list(idx, n, 0, 1), "'0,1': %d (%s)", n, cnn_last_error());
    n = select_list("1,0", idx, 64);
    CHECK(is_list(idx, n, 1, 0), "'1,0' keeps the order given: %d", n);
    n = select_list("1", idx, 64);
    CHECK(is_list(idx, n, 1, -1), "'1': %d", n);
    n = select_list("all", idx, 64);
    CHECK(n == n_devs, "'all': %d of %d (%s)", n, n_devs, cnn_last_error());
    for (int i = 0; i < n && i < n_devs; i++) CHECK(idx[i] == i, "'all': idx[%d] = %d", i, idx[i]);
    n = select_list("cpu", idx, 64);
    CHECK(n == n_devs, "'cpu': %d of %d CPU devices (%s)", n, n_devs, cnn_last_error());
    n = select_list("all", idx, 1);
    CHECK(n == 1 && idx[0] == 0, "'all' with room for 1: %d", n);
    n = select_list(NULL, idx, 64); /* the default: every GPU, else every device */
    CHECK(n == n_devs, "the default (no GPU here) chose %d of %d (%s)", n, n_devs, cnn_last_error());
    n = select_list("", idx, 64);
    CHECK(n == n_devs, "'' chose %d of %d", n, n_devs);
    n = select_list("PThReAd", idx, 64); /* a piece of the name, any case */
    CHECK(n == (find_device("Portable", 0) >= 0 ? (int)(find_device("Portable", 1) >= 0 ? 2 : 1) : 0) && n > 0,
          "'PThReAd' chose %d (%s)", n, cnn_last_error());
    n = select_list("portable computing", idx, 64); /* a piece of the platform name */
    CHECK(n > 0 && !strcmp(devs[idx[0]].platform, "Portable Computing Language"), "'portable computing': %d (%s)", n,
          cnn_last_error());

    /* the environment variable */
    setenv("CNN_OPENCL_DEVICES", "1", 1);
    n = select_list(NULL, idx, 64);
    CHECK(is_list(idx, n, 1, -1), "CNN_OPENCL_DEVICES=1 with choice NULL: %d (%s)", n, cnn_last_error());
    n = select_list("", idx, 64);
    CHECK(is_list(idx, n, 1, -1), "CNN_OPENCL_DEVICES=1 with choice '': %d", n);
    n = select_list("0", idx, 64);
    CHECK(is_list(idx, n, 0, -1), "an explicit choice '0' must win over CNN_OPENCL_DEVICES=1: %d", n);
    {
        cnn_model *m = cnn_model_new();
        cnn_node *x = cnn_input(m, 2, 2, 1, "input");
        cnn_model_set_output(m, cnn_dense(m, cnn_flatten(m, x), .units = 2, .activation = CNN_SOFTMAX));
        cnn_compile(m, .loss = CNN_SPARSE_CATEGORICAL_CROSSENTROPY);
        int rc = cnn_opencl_attach(m, .quiet = 1);
        cnn_opencl_device_info info;
        CHECK(rc == CNN_OK && cnn_opencl_num_devices(m) == 1 && cnn_opencl_device(m, 0, &info) == CNN_OK && info.index == 1,
              "attach with CNN_OPENCL_DEVICES=1: rc %d, %d devices (%s)", rc, cnn_opencl_num_devices(m), cnn_last_error());
        setenv("CNN_OPENCL_DEVICES", "nonesuch", 1);
        cnn_opencl_detach(m);
        clear_error();
        rc = cnn_opencl_attach(m, .quiet = 1);
        CHECK(rc == CNN_ERR_DEVICE && error_has("nonesuch") && cnn_model_get_backend(m) == NULL,
              "attach with CNN_OPENCL_DEVICES=nonesuch: rc %d, backend %p (%s)", rc, (const void *)cnn_model_get_backend(m),
              cnn_last_error());
        cnn_model_free(m);
    }
    unsetenv("CNN_OPENCL_DEVICES");

    /* errors name the problem */
    {
        char bad[32];
        snprintf(bad, sizeof bad, "0,%d", n_devs);
        n = select_list(bad, idx, 64);
        CHECK(n == CNN_ERR_ARG && error_has(bad), "'%s': %d (%s)", bad, n, cnn_last_error());
        snprintf(bad, sizeof bad, "device %d", n_devs);
        CHECK(error_has(bad), "index out of range: the message should name the index ('%s'): %s", bad, cnn_last_error());
    }
    n = select_list("99", idx, 64);
    CHECK(n == CNN_ERR_ARG && error_has("99") && error_has("0.."), "'99': %d (%s)", n, cnn_last_error());
    n = select_list("1,1", idx, 64);
    CHECK(n == CNN_ERR_ARG && error_has("twice"), "'1,1': %d (%s)", n, cnn_last_error());
    n = select_list("0,1,0", idx, 64);
    CHECK(n == CNN_ERR_ARG && error_has("device 0 twice"), "'0,1,0': %d (%s)", n, cnn_last_error());
    n = select_list("0;1", idx, 64); /* not an index list: a name piece that names nothing */
    CHECK(n == CNN_ERR_DEVICE && error_has("'0;1'"), "'0;1': %d (%s)", n, cnn_last_error());
    n = select_list("1x", idx, 64);
    CHECK(n == CNN_ERR_DEVICE && error_has("'1x'"), "'1x': %d (%s)", n, cnn_last_error());
    n = select_list("ALL", idx, 64); /* types in any case */
    CHECK(n == n_devs, "'ALL': %d (%s)", n, cnn_last_error());
    n = select_list("Cpu", idx, 64);
    CHECK(n == n_devs, "'Cpu': %d (%s)", n, cnn_last_error());
    if (strstr(devs[0].name, "512")) { /* digits that are no index here but part of a name ("4090", "avx512") */
        n = select_list("512", idx, 64);
        CHECK(n >= 1 && idx[0] == 0, "'512' as a piece of '%s': %d (%s)", devs[0].name, n, cnn_last_error());
    }
    n = select_list("0,,1", idx, 64);
    CHECK(n < 0 && error_has("0,,1"), "'0,,1': %d (%s)", n, cnn_last_error());
    n = select_list("no-such-device", idx, 64);
    CHECK(n == CNN_ERR_DEVICE && error_has("no OpenCL device matches 'no-such-device'"), "no match: %d (%s)", n,
          cnn_last_error());
    n = select_list("gpu", idx, 64);
    CHECK(n == CNN_ERR_DEVICE && error_has("'gpu'"), "'gpu' with no GPU: %d (%s)", n, cnn_last_error());
    n = select_list("0,1", idx, 1);
    CHECK(n == CNN_ERR_ARG && error_has("more than 1"), "'0,1' with room for 1: %d (%s)", n, cnn_last_error());
    n = select_list("0", NULL, 4);
    CHECK(n == CNN_ERR_ARG, "indices NULL: %d", n);
    n = select_list("0", idx, 0);
    CHECK(n == CNN_ERR_ARG, "max 0: %d", n);

    /* attach: the devices it took, and its own errors */
    {
        cnn_model *m = cnn_model_new();
        cnn_node *x = cnn_input(m, 4, 4, 2, "input");
        int rc;
        cnn_opencl_device_info info;
        clear_error();
        CHECK(cnn_opencl_attach(m, .devices = "0", .quiet = 1) == CNN_ERR_STATE, "attach before set_output: %s", cnn_last_error());
        (void)x;
        cnn_model_free(m);

        m = cnn_model_new();
        x = cnn_input(m, 4, 4, 2, "input");
        cnn_model_set_output(m, cnn_dense(m, cnn_flatten(m, x), .units = 2, .activation = CNN_SOFTMAX));
        cnn_compile(m, .loss = CNN_SPARSE_CATEGORICAL_CROSSENTROPY);
        clear_error();
        rc = cnn_opencl_attach(m, .devices = "0,1", .split = "3:1:1", .quiet = 1);
        CHECK(rc == CNN_ERR_ARG && cnn_model_get_backend(m) == NULL, "split 3:1:1 for 2 devices: rc %d (%s)", rc,
              cnn_last_error());
        clear_error();
        rc = cnn_opencl_attach(m, .devices = "0", .timeout_s = -1, .quiet = 1);
        CHECK(rc == CNN_ERR_ARG && error_has("timeout"), "timeout -1: rc %d (%s)", rc, cnn_last_error());
        { /* a layer kind with no row in cnn_opencl.h (one newer than it): refused, naming the layer */
            cnn_node *o = m->nodes[m->output];
            const int type = o->type;
            o->type = CNN__LAYER_TYPES;
            clear_error();
            rc = cnn_opencl_attach(m, .devices = "0", .quiet = 1);
            CHECK(rc == CNN_ERR_ARG && error_has(o->name) && error_has("does not run on OpenCL") &&
                      cnn_model_get_backend(m) == NULL,
                  "a layer kind OpenCL lacks: rc %d (%s)", rc, cnn_last_error());
            o->type = type;
        }
        clear_error();
        CHECK(cnn_opencl_attach(NULL, .devices = "0") == CNN_ERR_ARG, "model NULL: %s", cnn_last_error());
        CHECK(cnn_opencl_attach_opt(m, NULL) == CNN_OK && cnn_opencl_num_devices(m) == n_devs,
              "options NULL (the default devices): %d devices (%s)", cnn_opencl_num_devices(m), cnn_last_error());
        rc = cnn_opencl_attach(m, .devices = "1,0", .split = "equal", .quiet = 1);
        CHECK(rc == CNN_OK && cnn_opencl_num_devices(m) == 2, "attach '1,0': rc %d (%s)", rc, cnn_last_error());
        for (int k = 0; k < 2 && rc == CNN_OK; k++) {
            CHECK(cnn_opencl_device(m, k, &info) == CNN_OK && info.index == 1 - k && !strcmp(info.name, devs[1 - k].name),
                  "device %d of the model is not device %d", k, 1 - k);
        }
        clear_error();
        CHECK(cnn_opencl_device(m, 2, &info) == CNN_ERR_ARG && cnn_opencl_device(m, -1, &info) == CNN_ERR_ARG &&
                  cnn_opencl_device(m, 0, NULL) == CNN_ERR_ARG,
              "cnn_opencl_device with a bad index or NULL info");
        {
            const cnn_backend *be = cnn_model_get_backend(m);
            CHECK(be && be->name && strstr(be->name, "OpenCL"), "the backend's name: %s", be && be->name ? be->name : "(none)");
        }
        rc = cnn_opencl_attach(m, .devices = "99", .quiet = 1);
        CHECK(rc == CNN_ERR_ARG && cnn_model_get_backend(m) != NULL && cnn_opencl_num_devices(m) == 2,
              "a failed re-attach should leave the model as it was: rc %d, %d devices", rc, cnn_opencl_num_devices(m));
        CHECK(cnn_opencl_detach(m) == CNN_OK && cnn_opencl_num_devices(m) == 0 && !cnn_model_get_backend(m), "detach");
        CHECK(cnn_opencl_detach(m) == CNN_OK, "detach twice");
        clear_error();
        CHECK(cnn_opencl_detach(NULL) == CNN_ERR_ARG, "detach NULL");
        CHECK(cnn_opencl_get_split(m, idx, 64) == CNN_ERR_STATE && cnn_opencl_get_times(m, NULL) == CNN_ERR_STATE,
              "get_split / get_times on a CPU model");
        CHECK(cnn_opencl_num_devices(NULL) == 0, "num_devices(NULL)");
        cnn_model_free(m);
    }
}

/* ------------------------------------------------------------------------ */
/* 2. Every layer, forward and backward, against the CPU                    */
/* ------------------------------------------------------------------------ */

static const cnn_activation_type acts[] = {CNN_LINEAR, CNN_RELU, CNN_SIGMOID, CNN_TANH, CNN_LEAKY_RELU, CNN_ELU, CNN_SOFTMAX};
static const char *const act_names[] = {"linear", "relu", "sigmoid", "tanh", "softmax", "leaky_relu", "elu"};
#define N_ACTS 7

/* Conv2D: variant = geometry * 8 + activation index; a conv before it gives it an input gradient */
static cnn_node *net_conv(cnn_model *m, cnn_node *x, int v) {
    static const struct { int kh, kw, sh, sw; cnn_padding pad; } g[] = {
        {3, 3, 1, 1, CNN_VALID}, {3, 3, 2, 2, CNN_VALID}, {3, 3, 1, 1, CNN_SAME}, {3, 3, 2, 2, CNN_SAME},
        {1, 1, 1, 1, CNN_VALID}, {3, 2, 2, 1, CNN_SAME}, {2, 2, 2, 2, CNN_SAME}};
    const int geo = v / 8, a = v % 8;
    x = cnn_conv2d(m, x, .filters = 4, .kernel_size = {2, 2}, .activation = CNN_TANH, .name = "pre");
    return cnn_conv2d(m, x, .filters = 5, .kernel_size = {g[geo].kh, g[geo].kw}, .strides = {g[geo].sh, g[geo].sw},
                      .padding = g[geo].pad, .activation = acts[a], .no_bias = geo == 4, .name = "conv");
}
static void freeze_conv(cnn_model *m) { cnn_set_trainable(m, "conv", 0); }
static void freeze_pre(cnn_model *m) { cnn_set_trainable(m, "pre", 0); }
static const char *const conv_geo_names[] = {"3x3 valid stride 1", "3x3 valid stride 2", "3x3 same stride 1",
                                             "3x3 same stride 2", "1x1 no bias",       "3x2 same strides 2,1",
                                             "2x2 same stride 2"};

/* Dense: variant = activation index; 8: softmax + crossentropy (fused); 9: sigmoid + binary
   crossentropy (fused); 10: no bias, L1/L2 regularizer; 11: on the input directly (1x1xC) */
static cnn_node *net_dense(cnn_model *m, cnn_node *x, int v) {
    if (v == 11) return cnn_dense(m, x, .units = 4, .activation = CNN_TANH, .name = "dense");
    x = cnn_flatten(m, cnn_conv2d(m, x, .filters = 3, .kernel_size = {2, 2}, .activation = CNN_TANH, .name = "pre"));
    if (v == 8) return cnn_dense(m, x, .units = 5, .activation = CNN_SOFTMAX, .name = "dense");
    if (v == 9) return cnn_dense(m, x, .units = 1, .activation = CNN_SIGMOID, .name = "dense");
    if (v == 10)
        return cnn_dense(m, x, .units = 5, .no_bias = 1, .kernel_regularizer = {0.01f, 0.02f}, .activation = CNN_RELU,
                         .name = "dense");
    return cnn_dense(m, x, .units = 5, .activation = acts[v], .name = "dense");
}

/* BatchNormalization: 0 after a ReLU conv with a bias, 1 after a conv without bias then
   ReLU and a 1x1 conv, 2 right after the input, 3 after a Dense, 4 frozen (moving
   statistics in training too), 5 a 12x12 map (several partial-sum chunks per device),
   momentum 0.9 and epsilon 0.01, 6 the tutorial's conv-BN-pool, 7 after a linear conv
   with a bias (whose gradient is zero in exact arithmetic) */
static cnn_node *net_bn(cnn_model *m, cnn_node *x, int v) {
    switch (v) {
    case 0:
    case 4:
        x = cnn_conv2d(m, x, .filters = 4, .kernel_size = {3, 3}, .activation = CNN_RELU, .name = "conv");
        x = cnn_batch_norm(m, x, .name = "bn");
        return cnn_conv2d(m, x, .filters = 3, .kernel_size = {1, 1}, .activation = CNN_SIGMOID, .name = "head");
    case 1:
        x = cnn_conv2d(m, x, .filters = 4, .kernel_size = {3, 3}, .no_bias = 1, .name = "conv");
        x = cnn_batch_norm(m, x, .name = "bn");
        x = cnn_activation(m, x, .activation = CNN_RELU, .name = "relu");
        return cnn_conv2d(m, x, .filters = 3, .kernel_size = {1, 1}, .name = "head");
    case 2:
        x = cnn_batch_norm(m, x, .name = "bn");
        return cnn_conv2d(m, x, .filters = 3, .kernel_size = {3, 3}, .activation = CNN_TANH, .name = "head");
    case 3:
        x = cnn_conv2d(m, x, .filters = 2, .kernel_size = {2, 2}, .activation = CNN_TANH, .name = "pre");
        x = cnn_dense(m, cnn_flatten(m, x), .units = 6, .activation = CNN_TANH, .name = "fc");
        x = cnn_batch_norm(m, x, .name = "bn");
        return cnn_dense(m, x, .units = 4, .activation = CNN_SOFTMAX, .name = "head");
    case 5:
        x = cnn_conv2d(m, x, .filters = 4, .kernel_size = {3, 3}, .padding = CNN_SAME, .activation = CNN_RELU, .name = "conv");
        x = cnn_batch_norm(m, x, .momentum = 0.9f, .epsilon = 0.01f, .name = "bn");
        return cnn_conv2d(m, x, .filters = 2, .kernel_size = {1, 1}, .name = "head");
    case 8: /* as the output */
        x = cnn_conv2d(m, x, .filters = 3, .kernel_size = {3, 3}, .activation = CNN_TANH, .name = "conv");
        return cnn_batch_norm(m, x, .momentum = 0.8f, .name = "bn");
    case 7: /* a linear conv with a bias: the bias gradient is float noise */
        x = cnn_conv2d(m, x, .filters = 4, .kernel_size = {3, 3}, .padding = CNN_SAME, .name = "conv");
        x = cnn_batch_norm(m, x, .name = "bn");
        x = cnn_activation(m, x, .activation = CNN_RELU, .name = "relu");
        return cnn_conv2d(m, x, .filters = 3, .kernel_size = {1, 1}, .name = "head");
    default:
        x = cnn_conv2d(m, x, .filters = 4, .kernel_size = {3, 3}, .padding = CNN_SAME, .activation = CNN_RELU, .name = "conv");
        x = cnn_batch_norm(m, x, .momentum = 0.5f, .name = "bn");
        x = cnn_max_pool2d(m, x, .pool_size = {2, 2}, .name = "pool");
        return cnn_dense(m, cnn_flatten(m, x), .units = 3, .activation = CNN_SOFTMAX, .name = "head");
    }
}
/* BatchNorm with non-default weights and moving statistics, optionally frozen */
static void bn_weights(cnn_model *m, int freeze) {
    size_t C = 0;
    float *g = cnn_layer_weights(m, "bn", "gamma", &C), *b = cnn_layer_weights(m, "bn", "beta", NULL);
    float *mm = cnn_layer_weights(m, "bn", "moving_mean", NULL), *mv = cnn_layer_weights(m, "bn", "moving_variance", NULL);
    for (size_t i = 0; g && b && mm && mv && i < C; i++) {
        g[i] = 0.7f + 0.2f * (float)i;
        b[i] = 0.1f * (float)i - 0.15f;
        mm[i] = 0.3f - 0.05f * (float)i;
        mv[i] = 0.5f + 0.25f * (float)i;
    }
    if (freeze) cnn_set_trainable(m, "bn", 0);
}
static void bn_prepare(cnn_model *m) { bn_weights(m, 0); }
static void bn_prepare_frozen(cnn_model *m) { bn_weights(m, 1); }

/* MaxPooling2D after a conv: 0 2x2, 1 3x3 stride 2 (overlapping), 2 3x3 stride 2 same,
   3 2x2 same on an odd map, 4 3x3 stride 1 same, 5 right after the input, 6 after a ReLU conv then BN */
static cnn_node *net_pool(cnn_model *m, cnn_node *x, int v) {
    if (v == 5) {
        x = cnn_max_pool2d(m, x, .pool_size = {2, 2}, .name = "pool");
        return cnn_conv2d(m, x, .filters = 3, .kernel_size = {2, 2}, .name = "head");
    }
    x = cnn_conv2d(m, x, .filters = 4, .kernel_size = {2, 2}, .activation = v == 6 ? CNN_RELU : CNN_TANH, .name = "pre");
    if (v == 6) x = cnn_batch_norm(m, x, .name = "bn");
    switch (v) {
    case 1: return cnn_max_pool2d(m, x, .pool_size = {3, 3}, .strides = {2, 2}, .name = "pool");
    case 2: return cnn_max_pool2d(m, x, .pool_size = {3, 3}, .strides = {2, 2}, .padding = CNN_SAME, .name = "pool");
    case 3: return cnn_max_pool2d(m, x, .pool_size = {2, 2}, .padding = CNN_SAME, .name = "pool");
    case 4: return cnn_max_pool2d(m, x, .pool_size = {3, 3}, .strides = {1, 1}, .padding = CNN_SAME, .name = "pool");
    default: return cnn_max_pool2d(m, x, .pool_size = {2, 2}, .name = "pool");
    }
}

/* Flatten: 0 input -> flatten -> dense (no gradient to the input), 1 conv -> flatten -> dense,
   2 input -> flatten -> dropout -> dense, 3 pool -> flatten -> flatten -> dense, 4 as the output,
   5 input -> flatten -> BatchNorm -> dense */
static cnn_node *net_flatten(cnn_model *m, cnn_node *x, int v) {
    if (v == 4) {
        x = cnn_conv2d(m, x, .filters = 3, .kernel_size = {3, 3}, .activation = CNN_SIGMOID, .name = "pre");
        return cnn_flatten(m, x, .name = "flatten");
    }
    if (v == 5) {
        x = cnn_batch_norm(m, cnn_flatten(m, x, .name = "flatten"), .name = "bn");
        return cnn_dense(m, x, .units = 3, .activation = CNN_SOFTMAX, .name = "head");
    }
    if (v == 0) return cnn_dense(m, cnn_flatten(m, x, .name = "flatten"), .units = 3, .activation = CNN_SOFTMAX, .name = "head");
    if (v == 2) {
        x = cnn_dropout(m, cnn_flatten(m, x, .name = "flatten"), .rate = 0.25f, .name = "dropout");
        return cnn_dense(m, x, .units = 3, .activation = CNN_SOFTMAX, .name = "head");
    }
    x = cnn_conv2d(m, x, .filters = 3, .kernel_size = {2, 2}, .activation = CNN_RELU, .name = "pre");
    if (v == 3) x = cnn_flatten(m, cnn_max_pool2d(m, x, .name = "pool"), .name = "flatten0");
    return cnn_dense(m, cnn_flatten(m, x, .name = "flatten"), .units = 3, .activation = CNN_SOFTMAX, .name = "head");
}

/* Dropout: 0 as the output (its training output compared), 1 after a conv, 2 right after the
   input, 3 rate 0, 4 two in a row */
static cnn_node *net_dropout(cnn_model *m, cnn_node *x, int v) {
    switch (v) {
    case 0:
        x = cnn_conv2d(m, x, .filters = 2, .kernel_size = {2, 2}, .activation = CNN_TANH, .name = "pre");
        x = cnn_dense(m, cnn_flatten(m, x), .units = 8, .activation = CNN_RELU, .name = "fc");
        return cnn_dropout(m, x, .rate = 0.5f, .name = "dropout");
    case 1:
        x = cnn_conv2d(m, x, .filters = 4, .kernel_size = {3, 3}, .activation = CNN_RELU, .name = "pre");
        x = cnn_dropout(m, x, .rate = 0.3f, .name = "dropout");
        return cnn_dense(m, cnn_flatten(m, x), .units = 3, .activation = CNN_SOFTMAX, .name = "head");
    case 2:
        x = cnn_dropout(m, x, .rate = 0.4f, .name = "dropout");
        return cnn_conv2d(m, x, .filters = 3, .kernel_size = {3, 3}, .activation = CNN_SIGMOID, .name = "head");
    case 3:
        x = cnn_conv2d(m, x, .filters = 2, .kernel_size = {2, 2}, .activation = CNN_TANH, .name = "pre");
        x = cnn_dense(m, cnn_flatten(m, x), .units = 8, .activation = CNN_ELU, .name = "fc");
        x = cnn_dropout(m, x, .rate = 0.0f, .name = "dropout");
        return cnn_dense(m, x, .units = 3, .activation = CNN_SOFTMAX, .name = "head");
    default:
        x = cnn_conv2d(m, x, .filters = 2, .kernel_size = {2, 2}, .activation = CNN_TANH, .name = "pre");
        x = cnn_dense(m, cnn_flatten(m, x), .units = 8, .activation = CNN_RELU, .name = "fc");
        x = cnn_dropout(m, x, .rate = 0.3f, .name = "dropout");
        x = cnn_dropout(m, x, .rate = 0.6f, .name = "dropout2");
        return cnn_dense(m, x, .units = 3, .activation = CNN_SOFTMAX, .name = "head");
    }
}

/* Activation as a layer: v < 7: after a linear Dense (after a conv), as the output (MSE);
   7: softmax output with crossentropy (not fused); 8: relu after a conv (4-D); 9: tanh right
   after the input */
static cnn_node *net_act(cnn_model *m, cnn_node *x, int v) {
    if (v == 9) {
        x = cnn_activation(m, x, .activation = CNN_TANH, .name = "act");
        return cnn_conv2d(m, x, .filters = 3, .kernel_size = {2, 2}, .name = "head");
    }
    if (v == 8) {
        x = cnn_conv2d(m, x, .filters = 4, .kernel_size = {3, 3}, .name = "pre");
        x = cnn_activation(m, x, .activation = CNN_RELU, .name = "act");
        return cnn_conv2d(m, x, .filters = 3, .kernel_size = {1, 1}, .activation = CNN_SIGMOID, .name = "head");
    }
    x = cnn_conv2d(m, x, .filters = 2, .kernel_size = {2, 2}, .activation = CNN_TANH, .name = "pre");
    x = cnn_dense(m, cnn_flatten(m, x), .units = 5, .name = "fc");
    return cnn_activation(m, x, .activation = v == 7 ? CNN_SOFTMAX : acts[v], .name = "act");
}

/* AveragePooling2D (variants 0-3, and 6: a window of 301 cells a side over a
   6x6 input, 'same', which the kernels must not walk cell by cell) and
   GlobalAveragePooling2D (4, 5), after a conv that gives them an input
   gradient (5: on the input itself) */
static cnn_node *net_avg(cnn_model *m, cnn_node *x, int v) {
    static const struct { int k, s; cnn_padding pad; } g[] = {{2, 2, CNN_VALID}, {3, 2, CNN_VALID}, {3, 2, CNN_SAME}, {3, 1, CNN_SAME}, {0, 0, CNN_VALID}, {0, 0, CNN_VALID}, {301, 1, CNN_SAME}};
    if (v != 5) x = cnn_conv2d(m, x, .filters = 4, .kernel_size = {2, 2}, .activation = CNN_TANH, .name = "pre");
    if (v == 4 || v == 5) x = cnn_global_avg_pool2d(m, x, .name = "gap");
    else x = cnn_avg_pool2d(m, x, .pool_size = {g[v].k, g[v].k}, .strides = {g[v].s, g[v].s}, .padding = g[v].pad, .name = "avg");
    if (v == 4 || v == 5) return cnn_dense(m, x, .units = 3, .activation = CNN_SOFTMAX, .name = "head");
    return cnn_conv2d(m, x, .filters = 3, .kernel_size = {1, 1}, .activation = CNN_SIGMOID, .name = "head");
}

/* Add and Concatenate: 0 a residual block (conv + the input it came from);
   1 three branches added; 2 two branches concatenated; 3 the input
   concatenated with a conv of it, then BatchNorm; 4 Add of a layer with
   itself (one layer read twice) */
static cnn_node *net_merge(cnn_model *m, cnn_node *x, int v) {
    cnn_node *a, *b, *c, *in[3];
    a = cnn_conv2d(m, x, .filters = 4, .kernel_size = {3, 3}, .padding = CNN_SAME, .activation = CNN_RELU, .name = "a");
    if (v == 0) {
        b = cnn_conv2d(m, a, .filters = 4, .kernel_size = {3, 3}, .padding = CNN_SAME, .name = "b");
        in[0] = b, in[1] = a;
        x = cnn_add(m, in, 2, .name = "add");
    } else if (v == 1) {
        b = cnn_conv2d(m, a, .filters = 4, .kernel_size = {1, 1}, .activation = CNN_TANH, .name = "b");
        c = cnn_max_pool2d(m, a, .pool_size = {3, 3}, .strides = {1, 1}, .padding = CNN_SAME, .name = "c");
        in[0] = a, in[1] = b, in[2] = c;
        x = cnn_add(m, in, 3, .name = "add");
    } else if (v == 2) {
        b = cnn_conv2d(m, x, .filters = 2, .kernel_size = {1, 1}, .activation = CNN_TANH, .name = "b");
        in[0] = a, in[1] = b;
        x = cnn_concatenate(m, in, 2, .name = "concat");
    } else if (v == 3) {
        in[0] = x, in[1] = a;
        x = cnn_batch_norm(m, cnn_concatenate(m, in, 2, .name = "concat"), .name = "bn");
    } else {
        in[0] = a, in[1] = a;
        x = cnn_add(m, in, 2, .name = "add");
    }
    x = cnn_global_avg_pool2d(m, x, .name = "gap");
    return cnn_dense(m, x, .units = 3, .activation = CNN_SOFTMAX, .name = "head");
}

/* ZeroPadding2D, padding {top, bottom, left, right}: 0 {1,0,2,1} after a conv;
   1 {1,0,2,1} on the input (no input gradient); 2 the default (1 on each side)
   after a conv; 3 {0,2,0,3} as the output; 4 its input read twice: a residual
   block whose second conv reads the padded map (the padding's input gradient
   adds to the Add's); 5 its output read twice (a conv and a max pool of it,
   concatenated); 6 {3,1,0,2} then Flatten and Dense */
static cnn_node *net_zero_pad(cnn_model *m, cnn_node *x, int v) {
    cnn_node *a, *b, *in[2];
    if (v == 1) {
        x = cnn_zero_padding2d(m, x, .padding = {1, 0, 2, 1}, .name = "pad");
        return cnn_conv2d(m, x, .filters = 3, .kernel_size = {3, 3}, .activation = CNN_SIGMOID, .name = "head");
    }
    a = cnn_conv2d(m, x, .filters = 4, .kernel_size = {3, 3}, .padding = CNN_SAME,
                   .activation = v == 4 ? CNN_RELU : CNN_TANH, .name = "pre");
    switch (v) {
    case 2:
        x = cnn_zero_padding2d(m, a, .name = "pad");
        return cnn_conv2d(m, x, .filters = 3, .kernel_size = {3, 3}, .activation = CNN_SIGMOID, .name = "head");
    case 3: return cnn_zero_padding2d(m, a, .padding = {0, 2, 0, 3}, .name = "pad");
    case 4: /* pad: (H+1)x(W+3); a 2x4 valid conv brings it back to HxW */
        x = cnn_zero_padding2d(m, a, .padding = {1, 0, 2, 1}, .name = "pad");
        b = cnn_conv2d(m, x, .filters = 4, .kernel_size = {2, 4}, .name = "b");
        in[0] = b, in[1] = a;
        x = cnn_global_avg_pool2d(m, cnn_add(m, in, 2, .name = "add"), .name = "gap");
        return cnn_dense(m, x, .units = 3, .activation = CNN_SOFTMAX, .name = "head");
    case 5:
        x = cnn_zero_padding2d(m, a, .padding = {1, 0, 2, 1}, .name = "pad");
        in[0] = cnn_conv2d(m, x, .filters = 3, .kernel_size = {2, 2}, .activation = CNN_TANH, .name = "b");
        in[1] = cnn_max_pool2d(m, x, .pool_size = {2, 2}, .strides = {1, 1}, .name = "c");
        x = cnn_global_avg_pool2d(m, cnn_concatenate(m, in, 2, .name = "concat"), .name = "gap");
        return cnn_dense(m, x, .units = 3, .activation = CNN_SOFTMAX, .name = "head");
    case 6:
        x = cnn_zero_padding2d(m, a, .padding = {3, 1, 0, 2}, .name = "pad");
        return cnn_dense(m, cnn_flatten(m, x), .units = 3, .activation = CNN_SOFTMAX, .name = "head");
    default:
        x = cnn_zero_padding2d(m, a, .padding = {1, 0, 2, 1}, .name = "pad");
        return cnn_conv2d(m, x, .filters = 3, .kernel_size = {3, 3}, .activation = CNN_SIGMOID, .name = "head");
    }
}

/* UpSampling2D (nearest), size {rows, columns}: 0 {2,3} after a conv; 1 {2,3}
   on the input (no input gradient); 2 the default {2,2} after a conv; 3 {3,1}
   as the output; 4 its input read twice: {2,3}, a 2x3 AveragePooling2D back to
   the input's size, added to it; 5 its output read twice (Add of a conv of it
   and itself); 6 a decoder step: ZeroPadding2D {1,0,2,1}, then UpSampling2D
   {2,3}, after a conv */
static cnn_node *net_up(cnn_model *m, cnn_node *x, int v) {
    cnn_node *a, *u, *in[2];
    if (v == 1) {
        x = cnn_up_sampling2d(m, x, .size = {2, 3}, .name = "up");
        return cnn_conv2d(m, x, .filters = 3, .kernel_size = {3, 3}, .activation = CNN_SIGMOID, .name = "head");
    }
    a = cnn_conv2d(m, x, .filters = 4, .kernel_size = {3, 3}, .padding = CNN_SAME,
                   .activation = v == 4 ? CNN_RELU : CNN_TANH, .name = "pre");
    switch (v) {
    case 2:
        x = cnn_up_sampling2d(m, a, .name = "up");
        return cnn_conv2d(m, x, .filters = 3, .kernel_size = {3, 3}, .activation = CNN_SIGMOID, .name = "head");
    case 3: return cnn_up_sampling2d(m, a, .size = {3, 1}, .name = "up");
    case 4:
        u = cnn_up_sampling2d(m, a, .size = {2, 3}, .name = "up");
        in[0] = cnn_avg_pool2d(m, u, .pool_size = {2, 3}, .name = "avg"), in[1] = a;
        x = cnn_global_avg_pool2d(m, cnn_add(m, in, 2, .name = "add"), .name = "gap");
        return cnn_dense(m, x, .units = 3, .activation = CNN_SOFTMAX, .name = "head");
    case 5:
        u = cnn_up_sampling2d(m, a, .size = {2, 3}, .name = "up");
        in[0] = cnn_conv2d(m, u, .filters = 4, .kernel_size = {3, 3}, .padding = CNN_SAME, .name = "b"), in[1] = u;
        x = cnn_global_avg_pool2d(m, cnn_add(m, in, 2, .name = "add"), .name = "gap");
        return cnn_dense(m, x, .units = 3, .activation = CNN_SOFTMAX, .name = "head");
    case 6:
        x = cnn_zero_padding2d(m, a, .padding = {1, 0, 2, 1}, .name = "pad");
        x = cnn_up_sampling2d(m, x, .size = {2, 3}, .name = "up");
        return cnn_conv2d(m, x, .filters = 3, .kernel_size = {3, 3}, .strides = {2, 2}, .activation = CNN_SIGMOID,
                          .name = "head");
    default:
        x = cnn_up_sampling2d(m, a, .size = {2, 3}, .name = "up");
        return cnn_conv2d(m, x, .filters = 3, .kernel_size = {3, 3}, .activation = CNN_SIGMOID, .name = "head");
    }
}

/* CPU twin against the OpenCL model over `steps` training steps on one batch
   of B, with predictions before and after. Returns the worst relative error. */
static double twin_check(const net_spec *s, const char *devices, const char *split, int B, int steps, cnn_optimizer opt) {
    cnn_model *a = make(s, opt, 7), *b = make(s, opt, 7);
    double worst_all = 0;
    int rc;
    char cfg[48];
    snprintf(cfg, sizeof cfg, "devices %s, split %s", devices, split ? split : "auto");
    if (!a || !b) {
        CHECK(0, "%s: the model could not be built: %s", s->label, cnn_last_error());
        cnn_model_free(a);
        cnn_model_free(b);
        return 1;
    }
    rc = cnn_opencl_attach(b, .devices = devices, .split = split, .quiet = 1);
    if (driver_skip(rc, s->label)) { /* nothing to compare */
        cnn_model_free(a);
        cnn_model_free(b);
        return 0;
    }
    CHECK(rc == CNN_OK, "%s [%s]: attach: %s", s->label, cfg, cnn_last_error());
    if (rc == CNN_OK) {
        const int h = s->h, w = s->w, c = s->c, U = cnn_model_output_size(a), yw = y_width_of(s, a);
        const size_t per = (size_t)h * w * c;
        float *x = (float *)malloc((size_t)B * per * sizeof(float)), *y = (float *)malloc((size_t)B * yw * sizeof(float));
        float *pa = (float *)malloc((size_t)B * U * sizeof(float)), *pb = (float *)malloc((size_t)B * U * sizeof(float));
        double e;
        fill(x, (size_t)B * per, -1.0f, 1.0f);
        make_targets(y, B, yw, U);
        /* inference */
        rc = cnn_predict(a, x, B, 0, pa);
        if (!rc) rc = cnn_predict(b, x, B, 0, pb);
        CHECK(rc == CNN_OK, "%s [%s]: predict: %s", s->label, cfg, cnn_last_error());
        e = rel(pb, pa, (size_t)B * U);
        if (e > worst_all || e != e) worst_all = e;
        CHECK(e <= TOL, "%s [%s]: predict (inference) rel %.2e", s->label, cfg, e);
        for (int step = 0; step < steps && !rc; step++) {
            float la = 0, lb = 0, aa = 0, ab = 0;
            worst wr;
            rc = cnn_train_on_batch(a, x, y, B, yw, &la, &aa);
            CHECK(rc == CNN_OK, "%s: CPU train_on_batch: %s", s->label, cnn_last_error());
            if (rc) break;
            rc = cnn_train_on_batch(b, x, y, B, yw, &lb, &ab);
            CHECK(rc == CNN_OK, "%s [%s]: OpenCL train_on_batch: %s", s->label, cfg, cnn_last_error());
            if (rc) break;
            e = fabs((double)lb - la) / (fabs(la) > 1e-30 ? fabs(la) : 1);
            CHECK(e <= TOL && aa == ab, "%s [%s] step %d: loss %.7g vs CPU %.7g (rel %.2e), accuracy %g vs %g", s->label, cfg,
                  step, lb, la, e, ab, aa);
            if (e > worst_all || e != e) worst_all = e;
            /* the training-mode forward output (BatchNorm batch statistics, dropout masks) */
            e = rel(b->nodes[b->output]->out, a->nodes[a->output]->out, (size_t)B * U);
            CHECK(e <= TOL, "%s [%s] step %d: training-mode output rel %.2e", s->label, cfg, step, e);
            if (e > worst_all || e != e) worst_all = e;
            compare_models(b, a, 1, 1, &wr);
            CHECK(wr.rel <= TOL, "%s [%s] step %d: %s rel %.2e", s->label, cfg, step, wr.where, wr.rel);
            CHECK(wr.bias_noise <= BIAS_NOISE, "%s [%s] step %d: %s (a bias feeding BatchNorm) is %.2e of its kernel's",
                  s->label, cfg, step, wr.bias_where, wr.bias_noise);
            if (wr.rel > worst_all || wr.rel != wr.rel) worst_all = wr.rel;
            if (wr.bias_noise > 0) printf("#     %s [%s] step %d: BatchNorm-fed bias noise %.1e (%s)\n", s->label, cfg, step,
                                          wr.bias_noise, wr.bias_where);
        }
        if (!rc) { /* inference after training: the moving statistics moved */
            rc = cnn_predict(a, x, B, 3, pa);
            if (!rc) rc = cnn_predict(b, x, B, 3, pb);
            e = rel(pb, pa, (size_t)B * U);
            CHECK(rc == CNN_OK && e <= TOL, "%s [%s]: predict after training (batches of 3): rc %d rel %.2e (%s)", s->label, cfg,
                  rc, e, cnn_last_error());
            if (e > worst_all || e != e) worst_all = e;
        }
        free(x);
        free(y);
        free(pa);
        free(pb);
    }
    cnn_model_free(a);
    cnn_model_free(b);
    return worst_all;
}

/* the configurations every layer runs on: one device, and two with an uneven cut of B = 5 */
static const char *layer_cfgs[][2] = {{"0", NULL}, {"0,1", "equal"}, {"0,1", "1:3"}};
static int n_layer_cfgs = (int)(sizeof layer_cfgs / sizeof layer_cfgs[0]); /* mode gpu: the first only */

static void layer_group(const char *title, const net_spec *specs, int n, int B, int steps) {
    double worst_all = 0, t0 = cnn_wall_time();
    int failed[64] = {0}, group_failed = 0;
    group(name_of("layers: %s", title));
    for (int i = 0; i < n; i++) {
        test_current_failed = 0;
        if (specs[i].needs && failed[specs[i].needs - 1]) {
            CHECK(0, "%s: not run (it would crash the program) since '%s' failed", specs[i].label,
                  specs[specs[i].needs - 1].label);
        } else {
            for (int k = 0; k < n_layer_cfgs; k++) {
                double e = twin_check(&specs[i], layer_cfgs[k][0], layer_cfgs[k][1], B, steps, cnn_sgd(.learning_rate = 0.05f));
                if (e > worst_all || e != e) worst_all = e;
            }
        }
        failed[i] = test_current_failed;
        group_failed |= test_current_failed;
    }
    test_current_failed = group_failed;
    printf("#   %s: %d models x %d device configurations, worst rel %.2e (%.2f s)\n", title, n, n_layer_cfgs, worst_all,
           cnn_wall_time() - t0);
}

static void test_layers(void) {
    static char labels[160][64];
    net_spec sp[64];
    int n = 0, li = 0;
#define SPEC(fn, v, H, W, C, loss, yw, prep, ...) do { if (li >= 160 || n >= 64) abort(); \
        snprintf(labels[li], sizeof labels[li], __VA_ARGS__); \
        sp[n++] = (net_spec){labels[li++], fn, v, H, W, C, loss, yw, prep, 0}; } while (0)

    n = 0;
    for (int geo = 0; geo < 7; geo++)
        for (int a = 0; a < N_ACTS; a++) {
            if (geo >= 4 && a != geo - 3) continue; /* the extra geometries with one activation each */
            SPEC(net_conv, geo * 8 + a, 8, 7, 3, CNN_MSE, 0, NULL, "Conv2D %s %s", conv_geo_names[geo], act_names[acts[a]]);
        }
    SPEC(net_conv, 2 * 8 + 1, 8, 7, 3, CNN_MSE, 0, freeze_conv, "Conv2D frozen (trainable 0)");
    SPEC(net_conv, 2 * 8 + 3, 8, 7, 3, CNN_MSE, 0, freeze_pre, "Conv2D after a frozen conv");
    layer_group("Conv2D (valid/same, strides 1/2, every activation)", sp, n, 5, 2);

    n = 0;
    for (int a = 0; a < N_ACTS; a++) SPEC(net_dense, a, 4, 4, 2, CNN_MSE, 0, NULL, "Dense %s", act_names[acts[a]]);
    SPEC(net_dense, 8, 4, 4, 2, CNN_CATEGORICAL_CROSSENTROPY, 1, NULL, "Dense softmax + crossentropy (fused)");
    SPEC(net_dense, 8, 4, 4, 2, CNN_SPARSE_CATEGORICAL_CROSSENTROPY, 1, NULL, "Dense softmax + sparse crossentropy");
    SPEC(net_dense, 9, 4, 4, 2, CNN_BINARY_CROSSENTROPY, 0, NULL, "Dense sigmoid + binary crossentropy (fused)");
    SPEC(net_dense, 10, 4, 4, 2, CNN_MSE, 0, NULL, "Dense no bias, L1/L2 regularizer");
    SPEC(net_dense, 11, 1, 1, 6, CNN_MSE, 0, NULL, "Dense on a 1x1x6 input");
    layer_group("Dense (every activation, fused losses, regularizer)", sp, n, 5, 2);

    n = 0;
    SPEC(net_bn, 0, 7, 7, 3, CNN_MSE, 0, bn_prepare, "BatchNorm after a conv with bias");
    SPEC(net_bn, 1, 7, 7, 3, CNN_MSE, 0, bn_prepare, "BatchNorm after a conv without bias, then Activation");
    SPEC(net_bn, 2, 6, 6, 3, CNN_MSE, 0, bn_prepare, "BatchNorm on the input");
    SPEC(net_bn, 3, 4, 4, 2, CNN_SPARSE_CATEGORICAL_CROSSENTROPY, 1, bn_prepare, "BatchNorm after a Dense");
    SPEC(net_bn, 4, 7, 7, 3, CNN_MSE, 0, bn_prepare_frozen, "BatchNorm frozen (moving statistics)");
    SPEC(net_bn, 5, 12, 12, 2, CNN_MSE, 0, bn_prepare, "BatchNorm on 12x12 (several sum chunks)");
    SPEC(net_bn, 6, 8, 8, 3, CNN_SPARSE_CATEGORICAL_CROSSENTROPY, 1, bn_prepare, "conv-BatchNorm-pool");
    SPEC(net_bn, 7, 9, 9, 3, CNN_MSE, 0, bn_prepare, "BatchNorm after a linear conv with bias");
    SPEC(net_bn, 8, 6, 6, 3, CNN_MSE, 0, bn_prepare, "BatchNorm as the output");
    layer_group("BatchNormalization (batch and moving statistics)", sp, n, 5, 3);

    n = 0;
    SPEC(net_pool, 0, 9, 9, 3, CNN_MSE, 0, NULL, "MaxPool 2x2");
    SPEC(net_pool, 1, 9, 9, 3, CNN_MSE, 0, NULL, "MaxPool 3x3 stride 2");
    SPEC(net_pool, 2, 9, 9, 3, CNN_MSE, 0, NULL, "MaxPool 3x3 stride 2 same");
    SPEC(net_pool, 3, 8, 8, 3, CNN_MSE, 0, NULL, "MaxPool 2x2 same on 7x7");
    SPEC(net_pool, 4, 7, 7, 3, CNN_MSE, 0, NULL, "MaxPool 3x3 stride 1 same");
    SPEC(net_pool, 5, 8, 8, 3, CNN_MSE, 0, NULL, "MaxPool on the input");
    SPEC(net_pool, 6, 9, 9, 3, CNN_MSE, 0, NULL, "MaxPool after ReLU conv + BatchNorm");
    layer_group("MaxPooling2D (2x2, 3x3 stride 2, same padding)", sp, n, 5, 2);

    n = 0;
    SPEC(net_flatten, 0, 4, 4, 2, CNN_SPARSE_CATEGORICAL_CROSSENTROPY, 1, NULL, "Flatten on the input");
    SPEC(net_flatten, 1, 5, 5, 2, CNN_SPARSE_CATEGORICAL_CROSSENTROPY, 1, NULL, "Flatten after a conv");
    SPEC(net_flatten, 2, 4, 4, 2, CNN_SPARSE_CATEGORICAL_CROSSENTROPY, 1, NULL, "Flatten on the input, then Dropout");
    sp[n - 1].needs = 1; /* with the bug of spec 0, this one writes through a NULL buffer */
    SPEC(net_flatten, 3, 7, 7, 2, CNN_SPARSE_CATEGORICAL_CROSSENTROPY, 1, NULL, "Flatten twice");
    SPEC(net_flatten, 4, 6, 6, 2, CNN_MSE, 0, NULL, "Flatten as the output");
    SPEC(net_flatten, 5, 3, 3, 2, CNN_SPARSE_CATEGORICAL_CROSSENTROPY, 1, bn_prepare, "Flatten on the input, then BatchNorm");
    sp[n - 1].needs = 1;
    layer_group("Flatten", sp, n, 5, 2);

    n = 0;
    SPEC(net_dropout, 0, 4, 4, 2, CNN_MSE, 0, NULL, "Dropout 0.5 as the output");
    SPEC(net_dropout, 1, 6, 6, 2, CNN_SPARSE_CATEGORICAL_CROSSENTROPY, 1, NULL, "Dropout after a conv");
    SPEC(net_dropout, 2, 6, 6, 2, CNN_MSE, 0, NULL, "Dropout on the input");
    SPEC(net_dropout, 3, 4, 4, 2, CNN_SPARSE_CATEGORICAL_CROSSENTROPY, 1, NULL, "Dropout rate 0");
    SPEC(net_dropout, 4, 4, 4, 2, CNN_SPARSE_CATEGORICAL_CROSSENTROPY, 1, NULL, "two Dropouts");
    layer_group("Dropout (the CPU's masks, in training mode)", sp, n, 7, 3);

    n = 0;
    for (int a = 0; a < N_ACTS; a++) SPEC(net_act, a, 4, 4, 2, CNN_MSE, 0, NULL, "Activation %s", act_names[acts[a]]);
    SPEC(net_act, 7, 4, 4, 2, CNN_CATEGORICAL_CROSSENTROPY, 1, NULL, "Activation softmax + crossentropy (not fused)");
    SPEC(net_act, 8, 6, 6, 2, CNN_MSE, 0, NULL, "Activation relu after a conv");
    SPEC(net_act, 9, 5, 5, 2, CNN_MSE, 0, NULL, "Activation on the input");
    layer_group("Activation", sp, n, 5, 2);

    n = 0;
    SPEC(net_avg, 0, 9, 9, 3, CNN_MSE, 0, NULL, "AveragePooling2D 2x2");
    SPEC(net_avg, 1, 9, 9, 3, CNN_MSE, 0, NULL, "AveragePooling2D 3x3 stride 2");
    SPEC(net_avg, 2, 9, 9, 3, CNN_MSE, 0, NULL, "AveragePooling2D 3x3 stride 2 same (padding left out)");
    SPEC(net_avg, 3, 7, 7, 3, CNN_MSE, 0, NULL, "AveragePooling2D 3x3 stride 1 same");
    SPEC(net_avg, 4, 7, 6, 3, CNN_SPARSE_CATEGORICAL_CROSSENTROPY, 1, NULL, "GlobalAveragePooling2D after a conv");
    SPEC(net_avg, 5, 5, 5, 3, CNN_SPARSE_CATEGORICAL_CROSSENTROPY, 1, NULL, "GlobalAveragePooling2D on the input");
    SPEC(net_avg, 6, 7, 7, 3, CNN_MSE, 0, NULL, "AveragePooling2D 301x301 same on 6x6");
    layer_group("AveragePooling2D and GlobalAveragePooling2D", sp, n, 5, 2);

    n = 0;
    SPEC(net_merge, 0, 6, 6, 3, CNN_SPARSE_CATEGORICAL_CROSSENTROPY, 1, NULL, "Add: a residual block");
    SPEC(net_merge, 1, 6, 6, 3, CNN_SPARSE_CATEGORICAL_CROSSENTROPY, 1, NULL, "Add of three branches");
    SPEC(net_merge, 2, 6, 6, 3, CNN_SPARSE_CATEGORICAL_CROSSENTROPY, 1, NULL, "Concatenate two branches");
    SPEC(net_merge, 3, 6, 6, 3, CNN_SPARSE_CATEGORICAL_CROSSENTROPY, 1, bn_prepare, "Concatenate the input and a conv, BatchNorm");
    SPEC(net_merge, 4, 6, 6, 3, CNN_SPARSE_CATEGORICAL_CROSSENTROPY, 1, NULL, "Add of one layer with itself");
    layer_group("Add and Concatenate (residual and branching graphs)", sp, n, 5, 2);

    n = 0;
    SPEC(net_zero_pad, 0, 5, 4, 3, CNN_MSE, 0, NULL, "ZeroPadding2D {1,0,2,1} after a conv");
    SPEC(net_zero_pad, 1, 5, 4, 3, CNN_MSE, 0, NULL, "ZeroPadding2D {1,0,2,1} on the input");
    SPEC(net_zero_pad, 2, 5, 4, 3, CNN_MSE, 0, NULL, "ZeroPadding2D default (1 each side)");
    SPEC(net_zero_pad, 3, 5, 4, 3, CNN_MSE, 0, NULL, "ZeroPadding2D {0,2,0,3} as the output");
    SPEC(net_zero_pad, 4, 5, 4, 3, CNN_SPARSE_CATEGORICAL_CROSSENTROPY, 1, NULL,
         "ZeroPadding2D in a residual block (its input read twice)");
    SPEC(net_zero_pad, 5, 5, 4, 3, CNN_SPARSE_CATEGORICAL_CROSSENTROPY, 1, NULL,
         "ZeroPadding2D read twice (conv and pool, concatenated)");
    SPEC(net_zero_pad, 6, 4, 5, 2, CNN_SPARSE_CATEGORICAL_CROSSENTROPY, 1, NULL, "ZeroPadding2D {3,1,0,2}, Flatten, Dense");
    layer_group("ZeroPadding2D (asymmetric, default, read twice)", sp, n, 5, 2);

    n = 0;
    SPEC(net_up, 0, 4, 3, 3, CNN_MSE, 0, NULL, "UpSampling2D {2,3} after a conv");
    SPEC(net_up, 1, 4, 3, 3, CNN_MSE, 0, NULL, "UpSampling2D {2,3} on the input");
    SPEC(net_up, 2, 4, 3, 3, CNN_MSE, 0, NULL, "UpSampling2D default {2,2}");
    SPEC(net_up, 3, 4, 3, 3, CNN_MSE, 0, NULL, "UpSampling2D {3,1} as the output");
    SPEC(net_up, 4, 4, 3, 3, CNN_SPARSE_CATEGORICAL_CROSSENTROPY, 1, NULL,
         "UpSampling2D, AvgPool back, added to its input (read twice)");
    SPEC(net_up, 5, 4, 3, 3, CNN_SPARSE_CATEGORICAL_CROSSENTROPY, 1, NULL, "UpSampling2D read twice (Add of a conv of it and itself)");
    SPEC(net_up, 6, 4, 3, 3, CNN_MSE, 0, NULL, "ZeroPadding2D {1,0,2,1} then UpSampling2D {2,3}");
    layer_group("UpSampling2D (nearest; sizes 2x3, 2x2, 3x1; read twice)", sp, n, 5, 2);
#undef SPEC
}

/* ------------------------------------------------------------------------ */
/* 3. Training the tutorial network: exactness across devices and splits    */
/* ------------------------------------------------------------------------ */

#define TH 12
#define TW 12
#define TC 3
#define TCLASSES 5

static cnn_node *net_tutorial(cnn_model *m, cnn_node *x, int v) {
    (void)v;
    x = cnn_conv2d(m, x, .filters = 8, .kernel_size = {3, 3}, .padding = CNN_SAME, .activation = CNN_RELU, .name = "conv_1");
    x = cnn_batch_norm(m, x, .name = "bn_1");
    x = cnn_max_pool2d(m, x, .pool_size = {2, 2}, .name = "pool_1");
    x = cnn_conv2d(m, x, .filters = 8, .kernel_size = {3, 3}, .padding = CNN_SAME, .activation = CNN_RELU, .name = "conv_2");
    x = cnn_batch_norm(m, x, .name = "bn_2");
    x = cnn_max_pool2d(m, x, .pool_size = {2, 2}, .name = "pool_2");
    x = cnn_flatten(m, x, .name = "flatten");
    x = cnn_dense(m, x, .units = 16, .activation = CNN_RELU, .name = "fc");
    x = cnn_dropout(m, x, .rate = 0.3f, .name = "dropout");
    return cnn_dense(m, x, .units = TCLASSES, .activation = CNN_SOFTMAX, .name = "softmax");
}
static const net_spec tutorial = {"tutorial", net_tutorial, 0, TH, TW, TC, CNN_SPARSE_CATEGORICAL_CROSSENTROPY, 1, NULL, 0};

/* images whose class shows as a brighter band, plus noise */
static void tutorial_data(float *x, float *y, int n) {
    for (int i = 0; i < n; i++) {
        int label = (int)(rnd() % TCLASSES);
        y[i] = (float)label;
        for (int p = 0; p < TH * TW * TC; p++) {
            int row = p / (TW * TC);
            x[(size_t)i * TH * TW * TC + p] = urand() - 0.5f + (row / 3 == label % 4 ? 0.8f : 0.0f) + 0.2f * (float)(label / 4);
        }
    }
}

typedef struct run_result {
    float loss[16];
    worst w;
    double loss_rel;
    int split[8], n_split;
    double pred_rel;
} run_result;

/* Train a CPU model and an OpenCL one side by side for `steps` batches of B
   (each step a new batch), comparing every step's loss; at the end the
   parameters, optimizer slots and moving statistics per tensor, and
   predictions on fresh data. */
static int train_side_by_side(const char *devices, const char *split, cnn_optimizer opt, int steps, int B, run_result *r) {
    cnn_model *a = make(&tutorial, opt, 5), *b = make(&tutorial, opt, 5);
    const size_t per = (size_t)TH * TW * TC;
    float *x = (float *)malloc((size_t)B * per * sizeof(float)), y[64], pa[64 * TCLASSES], pb[64 * TCLASSES];
    int rc = !a || !b || !x ? CNN_ERR_MEMORY : CNN_OK;
    uint64_t keep = rng_state;
    memset(r, 0, sizeof *r);
    worst_init(&r->w);
    rng_state = 777; /* the same data for every run */
    if (!rc) rc = cnn_opencl_attach(b, .devices = devices, .split = split, .quiet = 1);
    for (int s = 0; s < steps && !rc; s++) {
        float la, lb;
        tutorial_data(x, y, B);
        rc = cnn_train_on_batch(a, x, y, B, 1, &la, NULL);
        if (!rc) rc = cnn_train_on_batch(b, x, y, B, 1, &lb, NULL);
        if (rc) break;
        r->loss[s] = lb;
        double e = fabs((double)lb - la) / fabs(la);
        if (!(e <= r->loss_rel)) r->loss_rel = e;
    }
    if (!rc) {
        compare_models(b, a, 0, 1, &r->w);
        r->n_split = cnn_opencl_get_split(b, r->split, 8);
        tutorial_data(x, y, B);
        rc = cnn_predict(a, x, B, 0, pa);
        if (!rc) rc = cnn_predict(b, x, B, 0, pb);
        r->pred_rel = rel(pb, pa, (size_t)B * TCLASSES);
    }
    if (rc) printf("#   %s %s: %s\n", devices ? devices : "cpu", split ? split : "auto", cnn_last_error());
    rng_state = keep;
    free(x);
    cnn_model_free(a);
    cnn_model_free(b);
    return rc;
}

static void test_training(const char *const (*cfgs)[3], int n_cfgs) {
    static const char *const opt_names[2] = {"Adam", "SGD"};
    const cnn_optimizer opts[2] = {cnn_adam(.learning_rate = 0.003f), cnn_sgd(.learning_rate = 0.02f, .momentum = 0.9f)};
    group(name_of("%s: training exactness (tutorial network, 10 steps of 16)", mode));
    printf("# exactness after 10 steps, batch 16, %dx%dx%d (relative to the CPU; worst over parameters, slots, moving statistics)\n",
           TH, TW, TC);
    printf("# %-5s %-34s %-9s %-9s %-9s %-34s %-8s %s\n", "opt", "devices", "loss", "loss rel", "worst", "worst tensor",
           "predict", "split / BN-fed bias noise");
    for (int o = 0; o < 2; o++)
        for (int k = 0; k < n_cfgs; k++) {
            run_result r;
            char split_text[64] = "";
            size_t len = 0;
            int rc = train_side_by_side(cfgs[k][0], cfgs[k][1], opts[o], 10, 16, &r);
            if (driver_skip(rc, cfgs[k][2])) continue;
            CHECK(rc == CNN_OK, "%s %s: %s", opt_names[o], cfgs[k][2], cnn_last_error());
            if (rc) continue;
            for (int i = 0; i < r.n_split && i < 8; i++)
                len += (size_t)snprintf(split_text + len, sizeof split_text - len, "%s%d", i ? ":" : "", r.split[i]);
            printf("# %-5s %-34s %-9.6f %-9.2e %-9.2e %-34s %-8.2e %s / %.1e\n", opt_names[o], cfgs[k][2], r.loss[9], r.loss_rel,
                   r.w.rel, r.w.where, r.pred_rel, split_text, r.w.bias_noise);
            CHECK(r.loss_rel <= TOL, "%s %s: loss rel %.2e", opt_names[o], cfgs[k][2], r.loss_rel);
            CHECK(r.w.rel <= TOL, "%s %s: %s rel %.2e", opt_names[o], cfgs[k][2], r.w.where, r.w.rel);
            CHECK(r.w.bias_noise <= BIAS_NOISE, "%s %s: %s %.2e", opt_names[o], cfgs[k][2], r.w.bias_where, r.w.bias_noise);
            CHECK(r.pred_rel <= TOL, "%s %s: predictions rel %.2e", opt_names[o], cfgs[k][2], r.pred_rel);
            {
                int total = 0;
                for (int i = 0; i < r.n_split && i < 8; i++) total += r.split[i];
                CHECK(total == 16, "%s %s: the split %s does not add up to 16", opt_names[o], cfgs[k][2], split_text);
                if (cfgs[k][1] && strchr(cfgs[k][1], ':')) { /* fixed weights: exactly cnn_split_batch's */
                    double wts[8];
                    int fixed = 0, want[8];
                    cnn_split_parse(cfgs[k][1], r.n_split, &fixed, wts);
                    cnn_split_batch(16, r.n_split, wts, want);
                    for (int i = 0; i < r.n_split; i++)
                        CHECK(r.split[i] == want[i], "%s %s: split %s, want device %d = %d", opt_names[o], cfgs[k][2], split_text,
                              i, want[i]);
                }
            }
        }
}

/* the machine-wide index of the model's device k */
static int b_dev(const cnn_model *m, int k) {
    cnn_opencl_device_info info;
    return cnn_opencl_device(m, k, &info) == CNN_OK && info.index >= 0 && info.index < n_devs ? info.index : 0;
}

/* ------------------------------------------------------------------------ */
/* 4. Batches smaller than, equal to, and not divisible by the device count */
/* ------------------------------------------------------------------------ */

static void test_batch_sizes(const char *devices, const char *what) {
    static const int sizes[] = {1, 2, 7, 16, 3, 1, 5};
    const int n_sizes = (int)(sizeof sizes / sizeof sizes[0]);
    static const char *const splits[] = {"equal", "3:1", NULL};
    group(name_of("%s: batch sizes 1, 2, 7, 16, 3, 1, 5 on two devices", mode));
    for (int sp = 0; sp < 3; sp++) {
        const cnn_optimizer opt = cnn_adam(.learning_rate = 0.003f);
        cnn_model *a = make(&tutorial, opt, 9), *b = make(&tutorial, opt, 9);
        float x[16 * TH * TW * TC], y[16], pa[16 * TCLASSES], pb[16 * TCLASSES];
        const char *sname = splits[sp] ? splits[sp] : "auto";
        char line[256];
        size_t len = 0;
        int rc = cnn_opencl_attach(b, .devices = devices, .split = splits[sp], .quiet = 1), bad_timer[2] = {0, 0},
            bad_idle[2] = {0, 0};
        double worst_all = 0;
        char worst_where[128] = "-";
        CHECK(rc == CNN_OK, "%s %s: attach: %s", what, sname, cnn_last_error());
        line[0] = 0;
        for (int i = 0; i < n_sizes && !rc; i++) {
            const int B = sizes[i];
            float la, lb;
            int counts[8] = {-1, -1, -1, -1}, want[8], nc;
            worst w;
            tutorial_data(x, y, B);
            rc = cnn_train_on_batch(a, x, y, B, 1, &la, NULL);
            if (!rc) rc = cnn_train_on_batch(b, x, y, B, 1, &lb, NULL);
            CHECK(rc == CNN_OK, "%s %s B=%d: %s", what, sname, B, cnn_last_error());
            if (rc) break;
            nc = cnn_opencl_get_split(b, counts, 8);
            CHECK(nc == 2, "%s %s: get_split gives %d devices", what, sname, nc);
            {
                cnn_opencl_times t;
                int nt = cnn_opencl_get_times(b, &t);
                const double *times = t.compute_s, host = t.reduce_s;
                CHECK(nt == 2 && t.n == 2 && host >= 0 && t.step_s > 0 && (times[0] >= 0 || times[0] == -1) &&
                      (times[1] >= 0 || times[1] == -1),
                      "%s %s B=%d: get_times %d: %g %g host %g", what, sname, B, nt, times[0], times[1], host);
                for (int k = 0; k < 2; k++) /* copies: the batch slice, the weights and the gradients move */
                    CHECK(counts[k] == 0 ? t.transfer_s[k] == 0 : times[k] == -1 ? t.transfer_s[k] == -1 : t.transfer_s[k] > 0,
                          "%s %s B=%d: device %d: %d samples, transfer %g s", what, sname, B, k, counts[k], t.transfer_s[k]);
                /* the auto split balances on these: a device that ran a training step (over a
                   hundred commands) cannot have computed for less than 10 us (a driver whose
                   clock stamps 0, 1, 2, 3 ns, as Mesa 22's rusticl does, must report -1, "no
                   usable clock", and auto then times by the host's clock), and one that sat idle
                   computed nothing in this step */
                for (int k = 0; k < 2; k++) {
                    if (counts[k] > 0 && times[k] != -1 && !(times[k] >= 1e-5) && !bad_timer[k]++)
                        CHECK(0, "%s %s B=%d: device %d (%s) ran %d samples in %.3g s of device time by its own clock: "
                              "an implausible timer, which the auto split trusts", what, sname, B, k, devs[b_dev(b, k)].name,
                              counts[k], times[k]);
                    if (counts[k] == 0 && times[k] != 0 && !bad_idle[k]++)
                        CHECK(0, "%s %s B=%d: device %d was idle in this step but get_times says %.3g s", what, sname, B, k,
                              times[k]);
                }
            }
            len += (size_t)snprintf(line + len, sizeof line - len, " B=%d:%d+%d", B, counts[0], counts[1]);
            CHECK(counts[0] >= 0 && counts[1] >= 0 && counts[0] + counts[1] == B, "%s %s B=%d: split %d+%d", what, sname, B,
                  counts[0], counts[1]);
            if (B == 1) CHECK(counts[0] == 0 || counts[1] == 0, "%s %s: a batch of 1 should leave a device idle", what, sname);
            if (splits[sp]) {
                double wts[2];
                int fixed;
                cnn_split_parse(splits[sp], 2, &fixed, wts);
                cnn_split_batch(B, 2, fixed ? wts : NULL, want);
                CHECK(counts[0] == want[0] && counts[1] == want[1], "%s %s B=%d: split %d+%d, want %d+%d", what, sname, B,
                      counts[0], counts[1], want[0], want[1]);
            }
            CHECK(fabs((double)lb - la) <= TOL * fabs(la), "%s %s B=%d: loss %.7g vs CPU %.7g", what, sname, B, lb, la);
            compare_models(b, a, 0, 1, &w); /* parameters, slots, moving statistics */
            CHECK(w.rel <= TOL, "%s %s B=%d: %s rel %.2e", what, sname, B, w.where, w.rel);
            CHECK(w.bias_noise <= BIAS_NOISE, "%s %s B=%d: %s %.2e", what, sname, B, w.bias_where, w.bias_noise);
            if (!(w.rel <= worst_all)) {
                worst_all = w.rel;
                snprintf(worst_where, sizeof worst_where, "B=%d %s", B, w.where);
            }
        }
        if (!rc) { /* predict in chunks of 2 (the last one 1) and of 7 */
            tutorial_data(x, y, 7);
            for (int bs = 1; bs <= 7; bs += 6) {
                int counts[2];
                rc = cnn_predict(a, x, 7, bs == 1 ? 2 : 7, pa);
                if (!rc) rc = cnn_predict(b, x, 7, bs == 1 ? 2 : 7, pb);
                CHECK(rc == CNN_OK && rel(pb, pa, 7 * TCLASSES) <= TOL, "%s %s: predict 7 in batches of %d: rel %.2e (%s)", what,
                      sname, bs == 1 ? 2 : 7, rel(pb, pa, 7 * TCLASSES), cnn_last_error());
                cnn_opencl_get_split(b, counts, 2);
                len += (size_t)snprintf(line + len, sizeof line - len, " predict/%d:%d+%d", bs == 1 ? 2 : 7, counts[0], counts[1]);
            }
        }
        printf("#   %s split %s:%s; worst rel %.2e (%s)\n", what, sname, line, worst_all, worst_where);
        if (bad_timer[0] + bad_timer[1] + bad_idle[0] + bad_idle[1])
            printf("#   %s split %s: implausible device times in %d + %d steps, stale times of idle devices in %d + %d steps\n",
                   what, sname, bad_timer[0], bad_timer[1], bad_idle[0], bad_idle[1]);
        cnn_model_free(a);
        cnn_model_free(b);
    }
}

/* ------------------------------------------------------------------------ */
/* 5. cnn_fit on two devices, evaluate and predict                          */
/* ------------------------------------------------------------------------ */

static cnn_node *net_fit(cnn_model *m, cnn_node *x, int v) {
    (void)v;
    x = cnn_conv2d(m, x, .filters = 6, .kernel_size = {3, 3}, .activation = CNN_RELU, .name = "conv");
    x = cnn_batch_norm(m, x, .name = "bn");
    x = cnn_max_pool2d(m, x, .pool_size = {2, 2}, .name = "pool");
    x = cnn_flatten(m, x, .name = "flatten");
    x = cnn_dropout(m, x, .rate = 0.2f, .name = "dropout");
    return cnn_dense(m, x, .units = 4, .activation = CNN_SOFTMAX, .name = "softmax");
}

/* 4 classes: a bright quadrant each, on noise */
static cnn_dataset *quadrants(int n, uint64_t seed) {
    cnn_dataset *d = cnn_dataset_new(n, 10, 10, 3, 4);
    uint64_t keep = rng_state;
    rng_state = seed;
    for (int i = 0; d && i < n; i++) {
        int label = (int)(rnd() % 4);
        d->labels[i] = label;
        for (int y = 0; y < 10; y++)
            for (int x = 0; x < 10; x++)
                for (int c = 0; c < 3; c++) {
                    int q = (y >= 5) * 2 + (x >= 5), v = (int)(rnd() % 140) + (q == label ? 110 : 0);
                    d->images[(((size_t)i * 10 + y) * 10 + x) * 3 + c] = (unsigned char)(v > 255 ? 255 : v);
                }
    }
    rng_state = keep;
    return d;
}

static void test_fit(const char *devices, const char *what) {
    const net_spec spec = {"fit", net_fit, 0, 10, 10, 3, CNN_SPARSE_CATEGORICAL_CROSSENTROPY, 1, NULL, 0};
    cnn_dataset *d = quadrants(240, 99), *test = quadrants(64, 123);
    cnn_model *a = make(&spec, cnn_adam(.learning_rate = 0.01f), 3), *b = make(&spec, cnn_adam(.learning_rate = 0.01f), 3);
    cnn_history *ha = NULL, *hb = NULL;
    int rc;
    group(name_of("%s: cnn_fit on two devices (3 epochs, validation split)", mode));
    if (!d || !test || !a || !b) {
        CHECK(0, "setup: %s", cnn_last_error());
        goto done;
    }
    cnn_model_set_rescale(a, 1.0f / 255);
    cnn_model_set_rescale(b, 1.0f / 255);
    rc = cnn_opencl_attach(b, .devices = devices, .quiet = 1); /* the auto split */
    CHECK(rc == CNN_OK, "%s: attach: %s", what, cnn_last_error());
    if (rc) goto done;
    {
        double t0 = cnn_wall_time(), t1, t2;
        FILE *log = tmpfile();
        char text[8192] = "";
        size_t got = 0;
        ha = cnn_fit(a, d, .batch_size = 16, .epochs = 3, .validation_split = 0.25f);
        t1 = cnn_wall_time();
        hb = cnn_fit(b, d, .batch_size = 16, .epochs = 3, .validation_split = 0.25f, .verbose = 2, .out = log);
        t2 = cnn_wall_time();
        if (log) {
            rewind(log);
            got = fread(text, 1, sizeof text - 1, log);
            text[got] = 0;
            fclose(log);
        }
        { /* fit at verbose 2 names the devices and their shares before the first epoch */
            const char *line = strstr(text, "OpenCL, split auto:"), *first = strstr(text, "Epoch 1/3");
            int named = line != NULL && first != NULL && line < first;
            for (int k = 0; named && k < cnn_opencl_num_devices(b); k++) {
                cnn_opencl_device_info info;
                named = cnn_opencl_device(b, k, &info) == CNN_OK && strstr(line, info.name) && strstr(line, info.platform);
            }
            CHECK(named && strchr(line, '%'), "fit's verbose output should name each device and its share:\n%s", text);
            if (line) printf("#   fit shows: %.*s\n", (int)strcspn(line, "\n"), line);
        }
        CHECK(ha && hb, "fit: CPU %p, OpenCL %p (%s)", (void *)ha, (void *)hb, cnn_last_error());
        if (!ha || !hb) goto done;
        printf("#   fit on %s: CPU %.2f s, OpenCL %.2f s\n", what, t1 - t0, t2 - t1);
    }
    {
        const double *acc_a = cnn_history_get(ha, "accuracy"), *acc_b = cnn_history_get(hb, "accuracy");
        const double *va = cnn_history_get(ha, "val_accuracy"), *vb = cnn_history_get(hb, "val_accuracy");
        const double *la = cnn_history_get(ha, "loss"), *lb = cnn_history_get(hb, "loss");
        const double *vla = cnn_history_get(ha, "val_loss"), *vlb = cnn_history_get(hb, "val_loss");
        int counts[8], nc = cnn_opencl_get_split(b, counts, 8);
        CHECK(ha->epochs == 3 && hb->epochs == 3 && acc_a && acc_b && va && vb && vla && vlb, "history: %d and %d epochs", ha->epochs,
              hb->epochs);
        if (ha->epochs == 3 && hb->epochs == 3 && va && vb && vla && vlb) {
            for (int e = 0; e < 3; e++)
                printf("#   epoch %d: loss %.5f / %.5f  accuracy %.4f / %.4f  val_loss %.5f / %.5f  val_accuracy %.4f / %.4f"
                       " (CPU / OpenCL)\n",
                       e + 1, la[e], lb[e], acc_a[e], acc_b[e], vla[e], vlb[e], va[e], vb[e]);
            CHECK(fabs(vb[2] - va[2]) <= 0.01 && fabs(acc_b[2] - acc_a[2]) <= 0.01,
                  "accuracy %.4f / val_accuracy %.4f on OpenCL, %.4f / %.4f on the CPU", acc_b[2], vb[2], acc_a[2], va[2]);
            CHECK(va[2] >= 0.9, "the CPU run should learn the quadrants: val_accuracy %.4f", va[2]);
            CHECK(fabs(lb[2] - la[2]) <= 1e-3 * la[2] && fabs(vlb[2] - vla[2]) <= 1e-3 * vla[2],
                  "last epoch loss %.6f vs %.6f, val_loss %.6f vs %.6f", lb[2], la[2], vlb[2], vla[2]);
        }
        printf("#   split at the end:");
        for (int i = 0; i < nc && i < 8; i++) printf(" %d", counts[i]);
        printf("\n");
    }
    {
        cnn_eval_result ea, eb;
        float *x = (float *)malloc((size_t)test->n * 300 * sizeof(float)), *pa = (float *)malloc((size_t)test->n * 4 * sizeof(float)),
              *pb = (float *)malloc((size_t)test->n * 4 * sizeof(float));
        rc = cnn_evaluate(a, test, 16, &ea);
        if (!rc) rc = cnn_evaluate(b, test, 16, &eb);
        CHECK(rc == CNN_OK, "evaluate: %s", cnn_last_error());
        if (!rc) {
            printf("#   evaluate on 64 new images: loss %.6f / %.6f, accuracy %.4f / %.4f (CPU / OpenCL)\n", ea.loss, eb.loss,
                   ea.accuracy, eb.accuracy);
            CHECK(fabs(eb.loss - ea.loss) <= TOL * ea.loss && fabs(eb.accuracy - ea.accuracy) <= 0.01,
                  "evaluate: loss %.6f vs %.6f, accuracy %.4f vs %.4f", eb.loss, ea.loss, eb.accuracy, ea.accuracy);
        }
        rc = x && pa && pb ? cnn_preprocess(a, test->images, test->n, x) : CNN_ERR_MEMORY;
        if (!rc) rc = cnn_predict(a, x, test->n, 10, pa);
        if (!rc) rc = cnn_predict(b, x, test->n, 10, pb);
        CHECK(rc == CNN_OK && rel(pb, pa, (size_t)test->n * 4) <= TOL, "predict: rel %.2e (%s)", rel(pb, pa, (size_t)test->n * 4),
              cnn_last_error());
        if (!rc) printf("#   predict on 64 new images (batches of 10): rel %.2e\n", rel(pb, pa, (size_t)test->n * 4));
        rc = x && pa && pb ? cnn_predict_images(b, test->images, test->n, 64, pb) : CNN_ERR_MEMORY;
        CHECK(rc == CNN_OK && rel(pb, pa, (size_t)test->n * 4) <= TOL, "predict_images: rel %.2e (%s)",
              rel(pb, pa, (size_t)test->n * 4), cnn_last_error());
        free(x);
        free(pa);
        free(pb);
    }
done:
    cnn_history_free(ha);
    cnn_history_free(hb);
    cnn_model_free(a);
    cnn_model_free(b);
    cnn_dataset_free(d);
    cnn_dataset_free(test);
}

/* ------------------------------------------------------------------------ */
/* 6. No platform                                                           */
/* ------------------------------------------------------------------------ */

/* Auto's decisions, host side, on made-up timings (no device): the fit's
   proposal, the wall clock undoing it, the fastest device alone, and the end. */
static void auto_steps(cnn__cl *c, int steps, double wall_s) { /* as cnn__cl_backward_pass records a step */
    for (int i = 0; i < steps; i++) {
        c->wall[c->n_wall++ & 7] = wall_s;
        if (c->since_change >= 0 && ++c->since_change == 6) cnn__cl_judge(c);
    }
}
static void test_auto_logic(void) {
    enum { B = 32 };
    cnn__cl_dev dev[2];
    double weights[2] = {1, 1}, before[2], obs[2][16][2];
    int counts[2] = {16, 16}, n_obs[2] = {2, 2};
    cnn__cl c;
    group("auto split: the fit, the wall clock's judgement, one device alone (made-up timings)");
    memset(&c, 0, sizeof c);
    memset(dev, 0, sizeof dev);
    c.n = 2, c.dev = dev, c.weights = weights, c.before = before, c.counts = counts, c.n_obs = n_obs;
    c.obs = obs, c.quiet = 1, c.since_change = -1;
    for (int i = 0; i < 2; i++) { /* device 0 takes 10 ms for 16 samples, device 1 20 ms */
        obs[0][i][0] = obs[1][i][0] = 16;
        obs[0][i][1] = 0.010;
        obs[1][i][1] = 0.020;
    }
    auto_steps(&c, 4, 0.020);
    cnn__cl_rebalance(&c, B);
    CHECK(c.since_change == 0 && !c.alone && weights[0] > weights[1] && weights[1] > 0 && weights[0] + weights[1] == B,
          "the fit should give device 0 about twice device 1's share: %g:%g", weights[0], weights[1]);
    auto_steps(&c, 6, 0.025); /* ... but the steps got slower */
    CHECK(weights[0] == 1 && weights[1] == 1 && c.model_rejected && !c.frozen, "a slower split is undone: %g:%g",
          weights[0], weights[1]);
    cnn__cl_rebalance(&c, B);
    CHECK(c.alone && weights[0] == B && weights[1] == 0, "then device 0 alone is tried: %g:%g", weights[0], weights[1]);
    auto_steps(&c, 6, 0.015); /* faster: kept, and auto is done */
    CHECK(weights[0] == B && c.frozen, "one device alone that is faster is kept: %g:%g, frozen %d", weights[0], weights[1],
          c.frozen);
    /* the same, but alone is slower: back to equal, and done */
    weights[0] = weights[1] = 1, c.frozen = c.alone_tried = 0, c.model_rejected = 1;
    cnn__cl_rebalance(&c, B);
    auto_steps(&c, 6, 0.030);
    CHECK(weights[0] == 1 && weights[1] == 1 && c.frozen, "one device alone that is slower is undone: %g:%g, frozen %d",
          weights[0], weights[1], c.frozen);
    cnn__cl_rebalance(&c, B);
    CHECK(c.since_change < 0 && weights[0] == 1, "a frozen auto changes nothing more");
}

static void test_none(void) {
    cnn_opencl_device_info info[4];
    int idx[4], n, rc;
    group("none: no OpenCL platform");
    n = cnn_opencl_devices(NULL, 0);
    CHECK(n == 0, "cnn_opencl_devices counts %d (run with OCL_ICD_VENDORS pointing at an empty folder)", n);
    CHECK(cnn_opencl_devices(info, 4) == 0, "cnn_opencl_devices(info, 4) != 0");
    n = select_list(NULL, idx, 4);
    CHECK(n == CNN_ERR_DEVICE && error_has("no OpenCL platform"), "select: %d (%s)", n, cnn_last_error());
    n = select_list("0", idx, 4);
    CHECK(n == CNN_ERR_DEVICE && error_has("no OpenCL platform"), "select '0': %d (%s)", n, cnn_last_error());
    {
        const cnn_optimizer opt = cnn_adam(.learning_rate = 0.01f);
        cnn_model *m = make(&tutorial, opt, 1), *twin = make(&tutorial, opt, 1);
        float x[16 * TH * TW * TC], y[16], l0 = 0, l = 0, lt = 0;
        clear_error();
        rc = cnn_opencl_attach(m, .quiet = 1);
        CHECK(rc == CNN_ERR_DEVICE && error_has("no OpenCL platform") && error_has("OCL_ICD_VENDORS"),
              "attach: rc %d, message '%s'", rc, cnn_last_error());
        printf("#   attach says: %s\n", cnn_last_error());
        rc = cnn_opencl_attach(m, .devices = "0", .split = "equal");
        CHECK(rc == CNN_ERR_DEVICE, "attach '0': rc %d (%s)", rc, cnn_last_error());
        CHECK(cnn_model_get_backend(m) == NULL && cnn_opencl_num_devices(m) == 0, "the model should stay on the CPU");
        CHECK(cnn_opencl_detach(m) == CNN_OK, "detach of a CPU model: %s", cnn_last_error());
        tutorial_data(x, y, 16);
        for (int s = 0; s < 8; s++) {
            rc = cnn_train_on_batch(m, x, y, 16, 1, &l, NULL);
            if (!rc) rc = cnn_train_on_batch(twin, x, y, 16, 1, &lt, NULL);
            CHECK(rc == CNN_OK, "CPU training after the failed attach: %s", cnn_last_error());
            if (rc) break;
            if (s == 0) l0 = l;
        }
        CHECK(l < l0 && l == lt && same_floats(m->params, twin->params, m->n_params),
              "the CPU path after the failed attach: loss %g -> %g (twin %g), identical to a model never attached: %d", l0, l, lt,
              same_floats(m->params, twin->params, m->n_params));
        cnn_model_free(m);
        cnn_model_free(twin);
    }
}

/* ------------------------------------------------------------------------ */
/* 6b. .local_batchnorm: each device normalizes with its own samples        */
/* ------------------------------------------------------------------------ */

/* the tutorial's layers without Dropout (the CPU reference below runs each
   device's slice as a batch of its own, where dropout's sample index would
   differ), and with a BatchNorm after the dense layer */
static cnn_node *net_local_bn(cnn_model *m, cnn_node *x, int v) {
    (void)v;
    x = cnn_conv2d(m, x, .filters = 8, .kernel_size = {3, 3}, .padding = CNN_SAME, .activation = CNN_RELU, .name = "conv_1");
    x = cnn_batch_norm(m, x, .name = "bn_1");
    x = cnn_max_pool2d(m, x, .pool_size = {2, 2}, .name = "pool_1");
    x = cnn_flatten(m, x, .name = "flatten");
    x = cnn_dense(m, x, .units = 16, .activation = CNN_RELU, .name = "fc");
    x = cnn_batch_norm(m, x, .name = "bn_2");
    return cnn_dense(m, x, .units = TCLASSES, .activation = CNN_SOFTMAX, .name = "softmax");
}

/* One SGD step of B on `devices` split `split` with .local_batchnorm against
   the CPU: the loss is the count-weighted mean of each slice's loss, the
   update is -lr x the count-weighted mean of each slice's gradient (each
   slice a batch of its own), and the moving statistics are the whole batch's. */
static void test_local_bn(const char *devices, const char *split, const char *what) {
    const net_spec spec = {"local_bn", net_local_bn, 0, TH, TW, TC, CNN_SPARSE_CATEGORICAL_CROSSENTROPY, 1, NULL, 0};
    const float lr = 0.05f;
    enum { B = 16 };
    cnn_model *l = make(&spec, cnn_sgd(.learning_rate = lr), 9), *g = make(&spec, cnn_sgd(.learning_rate = lr), 9);
    cnn_model *ref = make(&spec, cnn_sgd(.learning_rate = lr), 9), *whole = make(&spec, cnn_sgd(.learning_rate = lr), 9);
    static float x[B * TH * TW * TC], y[B];
    float *p0 = NULL, *sum = NULL, loss_l = 0, loss_g = 0;
    int counts[8], nc, rc;
    double want_loss = 0, d_err = 0, d_norm = 0, sync_diff = 0;
    group(name_of("%s: .local_batchnorm (per-device statistics) against per-slice CPU passes", mode));
    if (!l || !g || !ref || !whole) { CHECK(0, "setup: %s", cnn_last_error()); goto done; }
    tutorial_data(x, y, B);
    p0 = (float *)malloc(ref->n_params * sizeof(float));
    sum = (float *)calloc(ref->n_params, sizeof(float));
    memcpy(p0, ref->params, ref->n_params * sizeof(float));
    rc = cnn_opencl_attach(l, .devices = devices, .split = split, .local_batchnorm = 1, .quiet = 1);
    if (!rc) rc = cnn_opencl_attach(g, .devices = devices, .split = split, .quiet = 1);
    if (!rc) rc = cnn_train_on_batch(l, x, y, B, 1, &loss_l, NULL);
    if (!rc) rc = cnn_train_on_batch(g, x, y, B, 1, &loss_g, NULL);
    if (!rc) rc = cnn_train_on_batch(whole, x, y, B, 1, NULL, NULL);
    CHECK(rc == CNN_OK, "%s: %s", what, cnn_last_error());
    if (rc) goto done;
    nc = cnn_opencl_get_split(l, counts, 8);
    for (int k = 0, first = 0; k < nc; first += counts[k], k++) { /* each slice alone on the CPU */
        double loss = 0, acc = 0;
        if (counts[k] == 0) continue;
        rc = cnn__compute_gradients(ref, x + (size_t)first * TH * TW * TC, y + first, counts[k], 1, NULL, &loss, &acc);
        CHECK(rc == CNN_OK, "slice %d on the CPU: %s", k, cnn_last_error());
        want_loss += loss * counts[k] / B;
        for (size_t i = 0; i < ref->n_params; i++) sum[i] += ref->grads[i] * (float)counts[k] / B;
    }
    for (size_t i = 0; i < ref->n_params; i++) {
        const double dl = (double)l->params[i] - p0[i], dr = -(double)lr * sum[i], dg = (double)g->params[i] - p0[i];
        d_err += (dl - dr) * (dl - dr);
        d_norm += dr * dr;
        sync_diff += (dl - dg) * (dl - dg);
    }
    {
        tensor t[32];
        int nt = state_tensors(l, t, 32);
        double worst_state = 0;
        for (int i = 0; i < nt; i++) { /* bn_1's input is the same in both; bn_2's follows bn_1's normalization */
            const double e = strcmp(t[i].node->name, "bn_1") ? 0 : rel(l->state + t[i].off, whole->state + t[i].off, t[i].count);
            if (e > worst_state) worst_state = e;
        }
        printf("#   %s (split", what);
        for (int k = 0; k < nc; k++) printf(" %d", counts[k]);
        printf("): loss %.6f vs %.6f per slice (rel %.1e); update rel %.1e; bn_1's moving statistics rel %.1e vs the "
               "whole batch's; the synchronised update differs by %.1e\n", loss_l, want_loss, fabs(loss_l - want_loss) / want_loss,
               sqrt(d_err / d_norm), worst_state, sqrt(sync_diff / d_norm));
        CHECK(fabs(loss_l - want_loss) <= 1e-5 * want_loss, "%s: loss %.7f, per-slice CPU %.7f", what, loss_l, want_loss);
        CHECK(sqrt(d_err / d_norm) <= TOL, "%s: update rel %.2e against the per-slice CPU gradients", what, sqrt(d_err / d_norm));
        CHECK(worst_state <= TOL, "%s: moving statistics rel %.2e against the whole batch's", what, worst_state);
        CHECK(nc < 2 || counts[1] == 0 || sqrt(sync_diff / d_norm) > 1e-3,
              "%s: local and synchronised BatchNorm should differ with two busy devices (%.2e)", what, sqrt(sync_diff / d_norm));
    }
done:
    free(p0);
    free(sum);
    cnn_model_free(l);
    cnn_model_free(g);
    cnn_model_free(ref);
    cnn_model_free(whole);
}

/* ------------------------------------------------------------------------ */
/* 7. Error injection: a device command fails                               */
/* ------------------------------------------------------------------------ */

typedef struct snapshot {
    float *params, *slot1, *slot2, *state;
    long long step;
} snapshot;
static void snap_take(snapshot *s, const cnn_model *m) {
    if (!s->params) {
        s->params = (float *)malloc(m->n_params * sizeof(float));
        s->slot1 = (float *)malloc(m->n_params * sizeof(float));
        s->slot2 = (float *)malloc(m->n_params * sizeof(float));
        s->state = (float *)malloc((m->n_state + 1) * sizeof(float));
    }
    memcpy(s->params, m->params, m->n_params * sizeof(float));
    memcpy(s->slot1, m->slot1, m->n_params * sizeof(float));
    memcpy(s->slot2, m->slot2, m->n_params * sizeof(float));
    memcpy(s->state, m->state, m->n_state * sizeof(float));
    s->step = m->step;
}
static int snap_equal(const snapshot *s, const cnn_model *m) {
    return same_floats(s->params, m->params, m->n_params) && same_floats(s->slot1, m->slot1, m->n_params) &&
           same_floats(s->slot2, m->slot2, m->n_params) && same_floats(s->state, m->state, m->n_state) && s->step == m->step;
}
static void snap_free(snapshot *s) {
    free(s->params);
    free(s->slot1);
    free(s->slot2);
    free(s->state);
    memset(s, 0, sizeof *s);
}

static int remaining_commands(const cnn_model *m) { return ((const cnn__cl *)m->backend.ctx)->fail_after; }

/* the message of a failed device command: the device, its name and the call */
static int device_message(void) {
    const char *e = cnn_last_error();
    int named = 0;
    for (int i = 0; i < n_devs; i++) named |= strstr(e, devs[i].name) != NULL;
    return strstr(e, "OpenCL device ") && named && (strstr(e, " failed") || strstr(e, "did not finish"));
}

static int on_batch_snapshot(cnn_model *m, int epoch, int batch, float loss, void *user) {
    (void)epoch; (void)batch; (void)loss;
    snap_take((snapshot *)user, m);
    return 0;
}

static void test_errors(void) {
    const cnn_optimizer opt = cnn_adam(.learning_rate = 0.003f);
    enum { B = 12, BIG = 1000000 };
    static float xs[4][B * TH * TW * TC], ys[4][B];
    int attach_cmds = 0, step_cmds = 0, infer_cmds = 0;
    group(name_of("%s: error injection (fail_after): CNN_ERR_DEVICE, the model as after the last step", mode));
    for (int s = 0; s < 4; s++) tutorial_data(xs[s], ys[s], B);
    { /* how many commands the attach and one step take */
        cnn_model *m = make(&tutorial, opt, 4);
        float out[B * TCLASSES];
        int rc = cnn_opencl_attach(m, .devices = "0,1", .split = "equal", .fail_after = BIG, .quiet = 1), r0, r1, r2, r3;
        CHECK(rc == CNN_OK, "attach: %s", cnn_last_error());
        if (rc) { cnn_model_free(m); return; }
        r0 = remaining_commands(m);
        rc = cnn_train_on_batch(m, xs[0], ys[0], B, 1, NULL, NULL);
        r1 = remaining_commands(m);
        if (!rc) rc = cnn_train_on_batch(m, xs[1], ys[1], B, 1, NULL, NULL);
        r2 = remaining_commands(m);
        if (!rc) rc = cnn_predict(m, xs[2], B, 0, out);
        r3 = remaining_commands(m);
        CHECK(rc == CNN_OK && r0 - r1 == r1 - r2, "commands per step: %d then %d (%s)", r0 - r1, r1 - r2, cnn_last_error());
        attach_cmds = BIG - r0;
        step_cmds = r1 - r2;
        infer_cmds = r2 - r3;
        printf("#   commands: attach %d, training step %d, inference %d (2 devices)\n", attach_cmds, step_cmds, infer_cmds);
        cnn_model_free(m);
    }
    if (step_cmds <= 0) return;

    /* train_on_batch: two good steps, the third fails at command j of the step */
    {
        int positions[12], np = 0, reported = 0;
        const int cand[] = {1, step_cmds / 2, step_cmds - 1, step_cmds};
        /* the same three steps without a failure, on the same devices: the OpenCL path is
           deterministic, so a failed and retried step must give the same bits; and on the CPU */
        cnn_model *twin = make(&tutorial, opt, 4), *cpu = make(&tutorial, opt, 4);
        snapshot clean = {0};
        worst wc;
        int rc0 = cnn_opencl_attach(twin, .devices = "0,1", .split = "equal", .quiet = 1);
        for (int s = 0; s < 3 && !rc0; s++) rc0 = cnn_train_on_batch(twin, xs[s], ys[s], B, 1, NULL, NULL);
        for (int s = 0; s < 3 && !rc0; s++) rc0 = cnn_train_on_batch(cpu, xs[s], ys[s], B, 1, NULL, NULL);
        CHECK(rc0 == CNN_OK, "three clean steps: %s", cnn_last_error());
        snap_take(&clean, twin);
        compare_models(twin, cpu, 0, 1, &wc);
        CHECK(wc.rel <= TOL, "three clean steps on OpenCL vs the CPU: %s rel %.2e", wc.where, wc.rel);
        for (size_t i = 0; i < sizeof cand / sizeof cand[0]; i++) {
            int dup = cand[i] < 1;
            for (int k = 0; k < np; k++) dup |= positions[k] == cand[i];
            if (!dup) positions[np++] = cand[i];
        }
        for (int p = 0; p < np; p++) {
            cnn_model *m = make(&tutorial, opt, 4);
            snapshot snap = {0};
            int rc = cnn_opencl_attach(m, .devices = "0,1", .split = "equal", .fail_after = attach_cmds + 2 * step_cmds + positions[p],
                                       .quiet = 1);
            for (int s = 0; s < 2 && !rc; s++) rc = cnn_train_on_batch(m, xs[s], ys[s], B, 1, NULL, NULL);
            CHECK(rc == CNN_OK, "fail at command %d of step 3: the first two steps failed: %s", positions[p], cnn_last_error());
            if (!rc) {
                snap_take(&snap, m);
                clear_error();
                rc = cnn_train_on_batch(m, xs[2], ys[2], B, 1, NULL, NULL);
                CHECK(rc == CNN_ERR_DEVICE && device_message(), "fail at command %d of %d: rc %d, message '%s'", positions[p],
                      step_cmds, rc, cnn_last_error());
                if (reported++ < 3 || p == np - 1) printf("#   command %d/%d: %s\n", positions[p], step_cmds, cnn_last_error());
                CHECK(snap_equal(&snap, m), "fail at command %d of %d: the model changed (params %d slots %d/%d state %d step %lld/%lld)",
                      positions[p], step_cmds, same_floats(snap.params, m->params, m->n_params),
                      same_floats(snap.slot1, m->slot1, m->n_params), same_floats(snap.slot2, m->slot2, m->n_params),
                      same_floats(snap.state, m->state, m->n_state), m->step, snap.step);
                /* the device works again (the hook fired once): the step again gives the clean run's bits */
                rc = cnn_train_on_batch(m, xs[2], ys[2], B, 1, NULL, NULL);
                CHECK(rc == CNN_OK, "after the failure at command %d, the step again: %s", positions[p], cnn_last_error());
                CHECK(rc || snap_equal(&clean, m), "after the failure at command %d and a retry the model differs from a run without "
                      "the failure (step %lld vs %lld)", positions[p], m->step, clean.step);
            }
            snap_free(&snap);
            cnn_model_free(m);
        }
        snap_free(&clean);
        cnn_model_free(twin);
        cnn_model_free(cpu);
    }

    /* every command of a training step and of an inference pass, one after the
       other, on one attached model (the hook's counter set directly): the failed
       call leaves the model as it was, and the call done again gives the same bits as a
       twin on the same devices that never failed, started from the same state */
    {
        cnn_model *m = make(&tutorial, opt, 6), *twin = make(&tutorial, opt, 6);
        snapshot snap = {0};
        float pa[B * TCLASSES], pb[B * TCLASSES];
        int rc = cnn_opencl_attach(m, .devices = "0,1", .split = "equal", .quiet = 1), bad_rc = 0, bad_msg = 0, bad_model = 0,
            bad_retry = 0, first_bad = 0;
        cnn__cl *c = rc ? NULL : (cnn__cl *)m->backend.ctx;
        if (!rc) rc = cnn_opencl_attach(twin, .devices = "0,1", .split = "equal", .quiet = 1);
        CHECK(rc == CNN_OK, "attach: %s", cnn_last_error());
        for (int j = 1; c && !rc && j <= step_cmds + infer_cmds; j++) {
            const int infer = j > step_cmds, at = infer ? j - step_cmds : j;
            const float *x = xs[j % 4], *y = ys[j % 4];
            worst w;
            snap_take(&snap, m);
            clear_error();
            c->fail_after = at;
            rc = infer ? cnn_predict(m, x, B, 0, pb) : cnn_train_on_batch(m, x, y, B, 1, NULL, NULL);
            c->fail_after = 0;
            if (rc != CNN_ERR_DEVICE) bad_rc++;
            else if (!device_message()) bad_msg++;
            if (!snap_equal(&snap, m)) bad_model++;
            if ((rc != CNN_ERR_DEVICE || !device_message() || !snap_equal(&snap, m)) && !first_bad) {
                first_bad = j;
                CHECK(0, "%s, command %d of %d: rc %d, model unchanged %d, message '%s'", infer ? "predict" : "train_on_batch", at,
                      infer ? infer_cmds : step_cmds, rc, snap_equal(&snap, m), cnn_last_error());
            }
            /* again, without a failure: the same as the CPU from the same state */
            if (infer) {
                rc = cnn_predict(m, x, B, 0, pb);
                if (!rc) rc = cnn_predict(twin, x, B, 0, pa);
                w.rel = same_floats(pb, pa, (size_t)B * TCLASSES) ? 0 : 1;
                strcpy(w.where, "predictions");
            } else {
                memcpy(twin->params, m->params, m->n_params * sizeof(float));
                memcpy(twin->slot1, m->slot1, m->n_params * sizeof(float));
                memcpy(twin->slot2, m->slot2, m->n_params * sizeof(float));
                memcpy(twin->state, m->state, m->n_state * sizeof(float));
                twin->step = m->step;
                rc = cnn_train_on_batch(m, x, y, B, 1, NULL, NULL);
                if (!rc) rc = cnn_train_on_batch(twin, x, y, B, 1, NULL, NULL);
                snap_take(&snap, twin);
                w.rel = snap_equal(&snap, m) && same_floats(m->grads, twin->grads, m->n_params) ? 0 : 1;
                strcpy(w.where, "the model (bitwise)");
            }
            if (rc || w.rel != 0) {
                if (!bad_retry++)
                    CHECK(0, "%s again after the failure at command %d: rc %d, %s differs from the twin's (%s)",
                          infer ? "predict" : "the step", at, rc, w.where, cnn_last_error());
            }
        }
        printf("#   every command failed in turn (%d of a step, %d of a prediction): %d wrong status, %d wrong messages, "
               "%d changed models, %d retries that differ from a twin that never failed\n",
               step_cmds, infer_cmds, bad_rc, bad_msg, bad_model, bad_retry);
        snap_free(&snap);
        cnn_model_free(m);
        cnn_model_free(twin);
    }

    /* inference: predict fails, the model is untouched */
    {
        cnn_model *m = make(&tutorial, opt, 4);
        snapshot snap = {0};
        float out[B * TCLASSES];
        int rc = cnn_opencl_attach(m, .devices = "0,1", .split = "equal", .fail_after = attach_cmds + step_cmds + infer_cmds / 2,
                                   .quiet = 1);
        if (!rc) rc = cnn_train_on_batch(m, xs[0], ys[0], B, 1, NULL, NULL);
        snap_take(&snap, m);
        clear_error();
        if (!rc) {
            rc = cnn_predict(m, xs[1], B, 0, out);
            CHECK(rc == CNN_ERR_DEVICE && device_message() && snap_equal(&snap, m), "predict: rc %d (%s)", rc, cnn_last_error());
        }
        snap_free(&snap);
        cnn_model_free(m);
    }

    /* cnn_fit: fails in step 3 of epoch 1; the model is as after step 2 */
    {
        const net_spec spec = {"fit", net_fit, 0, 10, 10, 3, CNN_SPARSE_CATEGORICAL_CROSSENTROPY, 1, NULL, 0};
        cnn_dataset *d = quadrants(64, 5);
        cnn_model *m = make(&spec, opt, 4), *probe = make(&spec, opt, 4);
        snapshot snap = {0};
        int rc, fit_step = 0, fit_attach = 0;
        cnn_history *h;
        /* commands of the attach (its start-up check runs the network) and per fit step */
        rc = cnn_opencl_attach(probe, .devices = "0,1", .split = "equal", .fail_after = BIG, .quiet = 1);
        if (!rc) {
            int r0 = remaining_commands(probe);
            fit_attach = BIG - r0;
            h = cnn_fit(probe, d, .batch_size = 16, .epochs = 1, .steps_per_epoch = 1);
            fit_step = r0 - remaining_commands(probe);
            cnn_history_free(h);
        }
        CHECK(rc == CNN_OK && fit_step > 0, "probe: %s", cnn_last_error());
        if (fit_step > 0) {
            cnn_callback *cb = cnn_lambda_callback(.on_batch_end = on_batch_snapshot, .user = &snap), *cbs[2] = {cb, NULL};
            rc = cnn_opencl_attach(m, .devices = "0,1", .split = "equal", .fail_after = fit_attach + 2 * fit_step + fit_step / 2,
                                   .quiet = 1);
            CHECK(rc == CNN_OK, "attach: %s", cnn_last_error());
            snap_take(&snap, m);
            clear_error();
            h = rc ? NULL : cnn_fit(m, d, .batch_size = 16, .epochs = 2, .callbacks = cbs);
            CHECK(h == NULL && device_message(), "fit should fail with the device's message: %p '%s'", (void *)h, cnn_last_error());
            printf("#   fit: %s\n", cnn_last_error());
            CHECK(snap.step == 2 && snap_equal(&snap, m), "fit: the model is not as after its last completed step (%lld steps, now %lld)",
                  snap.step, m->step);
            cnn_history_free(h);
            cnn_callback_free(cb);
        }
        snap_free(&snap);
        cnn_model_free(m);
        cnn_model_free(probe);
        cnn_dataset_free(d);
    }

    /* the start-up check fails: with one device the attach fails, with two the other stays */
    {
        cnn_model *m = make(&tutorial, opt, 4);
        cnn_opencl_device_info info;
        float l;
        int rc;
        clear_error();
        rc = cnn_opencl_attach(m, .devices = "0", .fail_after = 3, .quiet = 1);
        CHECK(rc == CNN_ERR_DEVICE && device_message() && error_has("none of the 1 chosen") && !cnn_model_get_backend(m),
              "the only device fails its check: rc %d (%s)", rc, cnn_last_error());
        printf("#   attach: %s\n", cnn_last_error());
        rc = cnn_train_on_batch(m, xs[0], ys[0], B, 1, &l, NULL);
        CHECK(rc == CNN_OK, "the CPU trains after the failed attach: %s", cnn_last_error());
        /* a device whose pass of the model differs from the CPU's (a wrong kernel, a bad tuning entry) */
        cnn__cl_skew_check = 1;
        clear_error();
        rc = cnn_opencl_attach(m, .devices = "0", .quiet = 1);
        cnn__cl_skew_check = 0;
        CHECK(rc == CNN_ERR_DEVICE && error_has("differs from the CPU") && !cnn_model_get_backend(m),
              "a device whose layers are off fails the start-up check: rc %d (%s)", rc, cnn_last_error());
        printf("#   attach: %s\n", cnn_last_error());
        rc = cnn_opencl_attach(m, .devices = "0,1", .split = "3:1", .fail_after = 2, .quiet = 1);
        CHECK(rc == CNN_OK && cnn_opencl_num_devices(m) == 1 && cnn_opencl_device(m, 0, &info) == CNN_OK && info.index == 1,
              "device 0 fails its check: rc %d, %d devices (%s)", rc, cnn_opencl_num_devices(m), cnn_last_error());
        if (!rc) {
            int counts[2] = {-1, -1};
            rc = cnn_train_on_batch(m, xs[1], ys[1], B, 1, &l, NULL);
            CHECK(rc == CNN_OK && cnn_opencl_get_split(m, counts, 2) == 1 && counts[0] == B,
                  "training on the device left: rc %d, split %d (%s)", rc, counts[0], cnn_last_error());
        }
        cnn_model_free(m);
    }
}

/* ------------------------------------------------------------------------ */
/* 7b. .drop_failed: a failed device is left out and the step redone         */
/* ------------------------------------------------------------------------ */

/* commands of the attach and of one training step of B on `devices` */
static void count_commands(const char *devices, int B, const float *x, const float *y, int *attach, int *step) {
    enum { BIG = 1000000 };
    cnn_model *m = make(&tutorial, cnn_adam(.learning_rate = 0.003f), 4);
    int rc = cnn_opencl_attach(m, .devices = devices, .split = "equal", .fail_after = BIG, .quiet = 1), r0 = 0;
    *attach = *step = 0;
    if (!rc) {
        r0 = remaining_commands(m);
        rc = cnn_train_on_batch(m, x, y, B, 1, NULL, NULL);
        *attach = BIG - r0;
        *step = r0 - remaining_commands(m);
    }
    CHECK(rc == CNN_OK, "counting %s's commands: %s", devices, cnn_last_error());
    cnn_model_free(m);
}

static void test_drop_failed(void) {
    const cnn_optimizer opt = cnn_adam(.learning_rate = 0.003f);
    enum { B = 12, STEPS = 4 };
    static float xs[STEPS][B * TH * TW * TC], ys[STEPS][B];
    cnn_model *cpu = make(&tutorial, opt, 4);
    int attach2, step2, attach1, step1, rc = cpu ? CNN_OK : CNN_ERR_MEMORY;
    group(name_of("%s: .drop_failed: the failed device left out, the step redone, then the CPU", mode));
    for (int s = 0; s < STEPS; s++) tutorial_data(xs[s], ys[s], B);
    for (int s = 0; s < STEPS && !rc; s++) rc = cnn_train_on_batch(cpu, xs[s], ys[s], B, 1, NULL, NULL);
    CHECK(rc == CNN_OK, "the CPU twin: %s", cnn_last_error());
    count_commands("0,1", B, xs[0], ys[0], &attach2, &step2);
    count_commands("0", B, xs[0], ys[0], &attach1, &step1);
    if (rc || step2 <= 0 || step1 <= 0) { cnn_model_free(cpu); return; }
    /* two devices, a command of step 2 fails (early: forward, middle, late: backward):
       every call succeeds, one device is left, and the model is the CPU's */
    {
        const int at[3] = {1, step2 / 2, step2 - 1};
        for (int p = 0; p < 3; p++) {
            cnn_model *m = make(&tutorial, opt, 4);
            worst w;
            float l[STEPS];
            int r = cnn_opencl_attach(m, .devices = "0,1", .split = "equal", .drop_failed = 1, .quiet = 1,
                                      .fail_after = attach2 + step2 + at[p]);
            for (int s = 0; s < STEPS && !r; s++) r = cnn_train_on_batch(m, xs[s], ys[s], B, 1, &l[s], NULL);
            CHECK(r == CNN_OK && cnn_opencl_num_devices(m) == 1 && remaining_commands(m) == 0,
                  "2 devices, command %d of step 2 fails: rc %d, %d devices left (%s)", at[p], r, cnn_opencl_num_devices(m),
                  cnn_last_error());
            if (!r) {
                int counts[2] = {0, 0};
                compare_models(m, cpu, 0, 1, &w);
                CHECK(w.rel <= TOL, "after the redone step, vs the CPU: %s rel %.2e", w.where, w.rel);
                CHECK(cnn_opencl_get_split(m, counts, 2) == 1 && counts[0] == B, "the device left takes the batch: %d", counts[0]);
                if (p == 1) printf("#   2 devices, command %d of step 2 failed: 1 device left, worst %s rel %.2e vs the CPU\n", at[p],
                                   w.where, w.rel);
            }
            cnn_model_free(m);
        }
    }
    /* one device fails in step 2: the step is redone on the CPU, and the rest of
       training, evaluate and predict run there (the model still says OpenCL, with 0 devices) */
    {
        const int at[2] = {2, step1 - 1};
        for (int p = 0; p < 2; p++) {
            cnn_model *m = make(&tutorial, opt, 4);
            worst w;
            float out[B * TCLASSES], want[B * TCLASSES];
            int r = cnn_opencl_attach(m, .devices = "0", .drop_failed = 1, .quiet = 1, .fail_after = attach1 + step1 + at[p]);
            for (int s = 0; s < STEPS && !r; s++) r = cnn_train_on_batch(m, xs[s], ys[s], B, 1, NULL, NULL);
            CHECK(r == CNN_OK && cnn_opencl_num_devices(m) == 0 && cnn_model_get_backend(m) != NULL,
                  "1 device, command %d of step 2 fails: rc %d, %d devices (%s)", at[p], r, cnn_opencl_num_devices(m),
                  cnn_last_error());
            if (!r) {
                compare_models(m, cpu, 0, 1, &w);
                CHECK(w.rel <= TOL, "on the CPU after the device failed, vs the CPU: %s rel %.2e", w.where, w.rel);
                r = cnn_predict(m, xs[0], B, 0, out);
                if (!r) r = cnn_predict(cpu, xs[0], B, 0, want);
                CHECK(r == CNN_OK && rel(out, want, (size_t)B * TCLASSES) <= TOL, "predict on the CPU fallback: rc %d", r);
                CHECK(cnn_opencl_detach(m) == CNN_OK && !cnn_model_get_backend(m), "detach after the fallback");
            }
            cnn_model_free(m);
        }
    }
    /* without .drop_failed the same failure stops the call (test_errors covers the model's bits) */
    {
        cnn_model *m = make(&tutorial, opt, 4);
        int r = cnn_opencl_attach(m, .devices = "0,1", .split = "equal", .quiet = 1, .fail_after = attach2 + step2 + 1);
        if (!r) r = cnn_train_on_batch(m, xs[0], ys[0], B, 1, NULL, NULL);
        if (!r) r = cnn_train_on_batch(m, xs[1], ys[1], B, 1, NULL, NULL);
        CHECK(r == CNN_ERR_DEVICE && cnn_opencl_num_devices(m) == 2, "no .drop_failed: rc %d, %d devices", r,
              cnn_opencl_num_devices(m));
        cnn_model_free(m);
    }
    cnn_model_free(cpu);
}

/* A device that hangs: a barrier on a user event nobody sets holds device
   0's queue. The call returns CNN_ERR_DEVICE after the timeout with the model
   as it was, later calls refuse the hung device at once, detach returns; with
   .drop_failed the step is redone on the other device. */
static cl_event hang_device0(cnn_model *m, double timeout_s) {
    cnn__cl *c = (cnn__cl *)m->backend.ctx;
    cl_int e = CL_SUCCESS;
    cl_event ue = clCreateUserEvent(c->dev[0].ctx, &e);
    if (e == CL_SUCCESS) e = clEnqueueBarrierWithWaitList(c->dev[0].q, 1, &ue, NULL);
    CHECK(e == CL_SUCCESS, "making device 0 hang: %d", (int)e);
    c->timeout_s = timeout_s; /* after the first steps, which compile */
    return ue;
}

static void test_hang(void) {
    const cnn_optimizer opt = cnn_adam(.learning_rate = 0.003f);
    enum { B = 12 };
    static float xs[3][B * TH * TW * TC], ys[3][B];
    group(name_of("%s: a hung device: bounded waits, the model kept, detach returns; .drop_failed goes on", mode));
    for (int s = 0; s < 3; s++) tutorial_data(xs[s], ys[s], B);
    {
        cnn_model *m = make(&tutorial, opt, 4);
        snapshot snap = {0};
        cl_event ue = NULL;
        double t0, t1, t2;
        int rc = cnn_opencl_attach(m, .devices = "0,1", .split = "equal", .quiet = 1);
        if (!rc) rc = cnn_train_on_batch(m, xs[0], ys[0], B, 1, NULL, NULL);
        CHECK(rc == CNN_OK, "the step before: %s", cnn_last_error());
        if (!rc) {
            snap_take(&snap, m);
            ue = hang_device0(m, 1.0);
            t0 = cnn_wall_time();
            rc = cnn_train_on_batch(m, xs[1], ys[1], B, 1, NULL, NULL);
            t1 = cnn_wall_time();
            CHECK(rc == CNN_ERR_DEVICE && error_has("did not finish within") && t1 - t0 < 10,
                  "the hung step: rc %d after %.1f s (%s)", rc, t1 - t0, cnn_last_error());
            CHECK(snap_equal(&snap, m), "the model changed in the hung step");
            rc = cnn_train_on_batch(m, xs[1], ys[1], B, 1, NULL, NULL);
            t2 = cnn_wall_time();
            CHECK(rc == CNN_ERR_DEVICE && error_has("did not finish an earlier wait") && t2 - t1 < 5,
                  "the next call refuses the hung device at once: rc %d after %.1f s (%s)", rc, t2 - t1, cnn_last_error());
            printf("#   hung device: the step failed after %.1f s (timeout 1 s), the next call after %.2f s\n", t1 - t0, t2 - t1);
            t0 = cnn_wall_time();
            CHECK(cnn_opencl_detach(m) == CNN_OK && cnn_wall_time() - t0 < 10, "detach with a hung device: %.1f s",
                  cnn_wall_time() - t0);
            rc = cnn_train_on_batch(m, xs[1], ys[1], B, 1, NULL, NULL);
            CHECK(rc == CNN_OK, "the CPU after detaching: %s", cnn_last_error());
        }
        if (ue) { clSetUserEventStatus(ue, CL_COMPLETE); clReleaseEvent(ue); } /* let the driver finish */
        snap_free(&snap);
        cnn_model_free(m);
    }
    {
        cnn_model *m = make(&tutorial, opt, 4), *cpu = make(&tutorial, opt, 4);
        cl_event ue = NULL;
        worst w;
        int rc = cnn_opencl_attach(m, .devices = "0,1", .split = "equal", .drop_failed = 1, .quiet = 1);
        if (!rc) rc = cnn_train_on_batch(m, xs[0], ys[0], B, 1, NULL, NULL);
        if (!rc) {
            ue = hang_device0(m, 1.0);
            rc = cnn_train_on_batch(m, xs[1], ys[1], B, 1, NULL, NULL);
            if (!rc) rc = cnn_train_on_batch(m, xs[2], ys[2], B, 1, NULL, NULL);
        }
        for (int s = 0; s < 3 && !rc; s++) rc = cnn_train_on_batch(cpu, xs[s], ys[s], B, 1, NULL, NULL);
        CHECK(rc == CNN_OK && cnn_opencl_num_devices(m) == 1, ".drop_failed with a hung device: rc %d, %d devices (%s)", rc,
              cnn_opencl_num_devices(m), cnn_last_error());
        if (!rc) {
            compare_models(m, cpu, 0, 1, &w);
            CHECK(w.rel <= TOL, "the steps redone without the hung device, vs the CPU: %s rel %.2e", w.where, w.rel);
        }
        if (ue) { clSetUserEventStatus(ue, CL_COMPLETE); clReleaseEvent(ue); }
        cnn_model_free(m);
        cnn_model_free(cpu);
    }
}

/* ------------------------------------------------------------------------ */
/* 8. Detach, and save while attached                                       */
/* ------------------------------------------------------------------------ */

static void test_detach_save(void) {
    const cnn_optimizer opt = cnn_adam(.learning_rate = 0.003f);
    cnn_model *m = make(&tutorial, opt, 8), *twin = make(&tutorial, opt, 8), *loaded = NULL;
    float x[16 * TH * TW * TC], y[16], l1, l2;
    char path[] = "/tmp/test_opencl_XXXXXX";
    int fd = mkstemp(path), rc;
    group(name_of("%s: detach, and cnn_save while attached", mode));
    if (fd >= 0) close(fd);
    rc = cnn_opencl_attach(m, .devices = "0,1", .quiet = 1);
    CHECK(rc == CNN_OK, "attach: %s", cnn_last_error());
    for (int s = 0; s < 3 && !rc; s++) {
        tutorial_data(x, y, 16);
        rc = cnn_train_on_batch(m, x, y, 16, 1, &l1, NULL);
        if (!rc) rc = cnn_train_on_batch(twin, x, y, 16, 1, &l2, NULL);
    }
    CHECK(rc == CNN_OK, "training: %s", cnn_last_error());
    if (rc) goto done;
    rc = cnn_save(m, path);
    CHECK(rc == CNN_OK, "cnn_save while attached: %s", cnn_last_error());
    loaded = rc ? NULL : cnn_load(path);
    CHECK(loaded != NULL, "cnn_load: %s", cnn_last_error());
    if (!loaded) goto done;
    CHECK(loaded->n_params == m->n_params && same_floats(loaded->params, m->params, m->n_params) &&
              same_floats(loaded->state, m->state, m->n_state) && same_floats(loaded->slot1, m->slot1, m->n_params) &&
              same_floats(loaded->slot2, m->slot2, m->n_params) && loaded->step == m->step,
          "the saved model differs from the attached one");
    CHECK(cnn_model_get_backend(loaded) == NULL, "a loaded model starts on the CPU");
    {
        worst w;
        compare_models(m, twin, 0, 1, &w);
        CHECK(w.rel <= TOL, "after 3 steps on two devices: %s rel %.2e", w.where, w.rel);
    }
    /* detach: the CPU from here on, from the host copy */
    rc = cnn_opencl_detach(m);
    CHECK(rc == CNN_OK && cnn_opencl_num_devices(m) == 0 && cnn_model_get_backend(m) == NULL, "detach: %s", cnn_last_error());
    for (int s = 0; s < 2 && !rc; s++) {
        tutorial_data(x, y, 16);
        rc = cnn_train_on_batch(m, x, y, 16, 1, &l1, NULL);
        if (!rc) rc = cnn_train_on_batch(loaded, x, y, 16, 1, &l2, NULL);
        CHECK(rc == CNN_OK && l1 == l2, "after detach, step %d: loss %.8g vs the loaded copy %.8g (%s)", s, l1, l2, cnn_last_error());
    }
    CHECK(same_floats(loaded->params, m->params, m->n_params) && same_floats(loaded->state, m->state, m->n_state),
          "after detach the model trains on the CPU exactly as its saved copy");
    {
        float pa[16 * TCLASSES], pb[16 * TCLASSES];
        rc = cnn_predict(m, x, 16, 0, pa);
        /* and attaching again picks the host copy up */
        if (!rc) rc = cnn_opencl_attach(m, .devices = "1,0", .split = "1:1", .quiet = 1);
        if (!rc) rc = cnn_opencl_attach(m, .devices = "0,1", .split = "equal", .quiet = 1); /* replaced */
        if (!rc) rc = cnn_predict(m, x, 16, 0, pb);
        CHECK(rc == CNN_OK && cnn_opencl_num_devices(m) == 2 && rel(pb, pa, 16 * TCLASSES) <= TOL,
              "attached again: predict rel %.2e (%s)", rel(pb, pa, 16 * TCLASSES), cnn_last_error());
        tutorial_data(x, y, 16);
        if (!rc) rc = cnn_train_on_batch(m, x, y, 16, 1, &l1, NULL);
        if (!rc) rc = cnn_train_on_batch(loaded, x, y, 16, 1, &l2, NULL);
        CHECK(rc == CNN_OK && fabs((double)l1 - l2) <= TOL * l2, "attached again, a step: loss %.7g vs %.7g (%s)", l1, l2,
              cnn_last_error());
    }
done:
    remove(path);
    cnn_model_free(m); /* freed while attached: the backend is released with it */
    cnn_model_free(twin);
    cnn_model_free(loaded);
}

/* ------------------------------------------------------------------------ */

static int usage(void) {
    printf("usage: test_opencl pocl2|vendors|uneven|none|gpu   (tests/opencl_env.sh MODE PROGRAM MODE sets the environment)\n");
    return 2;
}

int main(int argc, char **argv) {
    const double t0 = cnn_wall_time();
    if (argc != 2) return usage();
    mode = argv[1];
    t_group = t0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    unsetenv("CNN_OPENCL_DEVICES");
    n_devs = cnn_opencl_devices(devs, 64);
    if (n_devs < 0) n_devs = 0;
    printf("# mode %s: %d OpenCL device%s (OCL_ICD_VENDORS=%s POCL_DEVICES=%s RUSTICL_ENABLE=%s)\n", mode, n_devs,
           n_devs == 1 ? "" : "s", getenv("OCL_ICD_VENDORS") ? getenv("OCL_ICD_VENDORS") : "(unset)",
           getenv("POCL_DEVICES") ? getenv("POCL_DEVICES") : "(unset)", getenv("RUSTICL_ENABLE") ? getenv("RUSTICL_ENABLE") : "(unset)");
    if (!strcmp(mode, "pocl2")) {
        test_begin("opencl pocl2: environment (two PoCL devices)");
        CHECK(n_devs >= 2 && find_device("Portable", 0) == 0 && find_device("Portable", 1) == 1,
              "devices 0 and 1 must be PoCL's: run under tests/opencl_env.sh pocl2 (found %d devices)", n_devs);
        if (test_current_failed) return test_finish();
        test_listing();
        test_layers();
        {
            static const char *const cfgs[][3] = {{"0", NULL, "1 PoCL device"},
                                                  {"0,1", "equal", "2 PoCL devices, equal"},
                                                  {"0,1", NULL, "2 PoCL devices, auto"},
                                                  {"0,1", "3:1", "2 PoCL devices, 3:1"}};
            test_training(cfgs, 4);
        }
        test_batch_sizes("0,1", "2 PoCL devices");
        test_fit("0,1", "2 PoCL devices");
        test_local_bn("0,1", "equal", "2 PoCL devices, equal");
        test_local_bn("0,1", "3:1", "2 PoCL devices, 3:1");
        test_errors();
        test_drop_failed();
        test_hang();
        test_detach_save();
    } else if (!strcmp(mode, "vendors")) {
        static char both[16], both_rev[16], only_r[16];
        int p = find_device("Portable", 0), r = find_device("rusticl", 0);
        test_begin("opencl vendors: environment (PoCL and rusticl)");
        CHECK(p >= 0 && r >= 0, "need a PoCL and a rusticl device (pocl %d, rusticl %d): run under tests/opencl_env.sh vendors", p, r);
        if (test_current_failed) return test_finish();
        snprintf(both, sizeof both, "%d,%d", p, r);
        snprintf(both_rev, sizeof both_rev, "%d,%d", r, p);
        snprintf(only_r, sizeof only_r, "%d", r);
        {
            int idx[8], n;
            group("vendors: device choice across platforms");
            n = select_list("llvmpipe", idx, 8);
            CHECK(n == 1 && idx[0] == r, "'llvmpipe': %d (%s)", n, cnn_last_error());
            n = select_list("RUSTICL", idx, 8);
            CHECK(n == 1 && idx[0] == r, "'RUSTICL' (a platform piece, any case): %d (%s)", n, cnn_last_error());
            n = select_list("pthread", idx, 8);
            CHECK(n == 1 && idx[0] == p, "'pthread': %d (%s)", n, cnn_last_error());
            n = select_list("cpu", idx, 8);
            CHECK(n == 2, "'cpu': %d (%s)", n, cnn_last_error());
            CHECK(strcmp(devs[p].platform, devs[r].platform) != 0, "two platforms: '%s' and '%s'", devs[p].platform, devs[r].platform);
            for (int i = 0; i < n_devs; i++)
                printf("#   device %d: %s (%s), %s\n", i, devs[i].name, devs[i].platform, devs[i].version);
        }
        {
            const char *const cfgs[][3] = {{only_r, NULL, "rusticl llvmpipe"},
                                           {both, "equal", "PoCL + rusticl, equal"},
                                           {both, NULL, "PoCL + rusticl, auto"},
                                           {both_rev, "1:3", "rusticl + PoCL, 1:3"}};
            test_training(cfgs, 4);
        }
        test_local_bn(both, "1:3", "PoCL + rusticl, 1:3");
        test_batch_sizes(both, "PoCL + rusticl");
        test_fit(both, "PoCL + rusticl");
    } else if (!strcmp(mode, "uneven")) {
        test_begin("opencl uneven: environment (two PoCL devices)");
        static char fast_slow[16], slow_fast[16];
        int fast = -1, slow = -1; /* PoCL lists its devices in its own order: find them by name */
        for (int i = 0; i < n_devs; i++) {
            if (strstr(devs[i].name, "pthread")) fast = i;
            if (strstr(devs[i].name, "basic")) slow = i;
        }
        CHECK(n_devs >= 2 && fast >= 0 && slow >= 0, "need PoCL's pthread and basic devices: run under tests/opencl_env.sh uneven");
        if (test_current_failed) return test_finish();
        snprintf(fast_slow, sizeof fast_slow, "%d,%d", fast, slow);
        snprintf(slow_fast, sizeof slow_fast, "%d,%d", slow, fast);
        {
            const char *const cfgs[][3] = {{fast_slow, NULL, "pthread + basic, auto"},
                                           {fast_slow, "equal", "pthread + basic, equal"},
                                           {slow_fast, "3:1", "basic + pthread, 3:1"}};
            test_training(cfgs, 3);
        }
        test_batch_sizes(fast_slow, "pthread + basic");
    } else if (!strcmp(mode, "gpu")) { /* device 0 alone, of any vendor (bench/gpu_check.sh) */
        test_begin("opencl gpu: environment (device 0)");
        CHECK(n_devs >= 1, "no OpenCL device");
        if (test_current_failed) return test_finish();
        printf("#   device 0: %s (%s), %s\n", devs[0].name, devs[0].platform, devs[0].version);
        n_layer_cfgs = 1;
        test_layers();
        {
            static const char *const cfgs[][3] = {{"0", NULL, "device 0"}};
            test_training(cfgs, 1);
        }
        test_fit("0", "device 0");
    } else if (!strcmp(mode, "none")) {
        test_none();
        test_auto_logic();
    } else {
        return usage();
    }
    group_done();
    printf("# mode %s: %.1f s\n", mode, cnn_wall_time() - t0);
    return test_finish();
}
