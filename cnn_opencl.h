/* cnn_opencl.h - v0.3 - train cnn.h models on OpenCL devices of any vendor, each batch split between them

   Keras' multi_gpu_model(model, n) done on every OpenCL device at once: one call
   puts a cnn.h model (built; compiled to train) on the chosen devices, and from then on the same
   cnn_fit (arrays or batch sources, every callback), cnn_train_on_batch,
   cnn_evaluate and cnn_predict run there, each batch split between the devices.
   The model stays your own cnn_model: its parameters, optimizer slots and
   BatchNorm moving statistics live on the host, so cnn_save works at any time.

   USAGE
     In the one C file that has cnn.h's implementation:

         #define CNN_IMPLEMENTATION
         #define CNN_OPENCL_IMPLEMENTATION
         #include "cnn.h"
         #include "cnn_opencl.h"

     (this file's implementation reads the model's internals, so it must be
     compiled in the same file as cnn.h's). Everywhere else just include it.
     Link with -lOpenCL -lclblast. On Debian: ocl-icd-opencl-dev opencl-headers
     libclblast-dev, and a driver: pocl-opencl-icd (CPUs), mesa-opencl-icd
     (rusticl), your GPU vendor's. Programs that do not include this file are
     untouched: cnn.h itself has no OpenCL in it.

   EXAMPLE

         cnn_opencl_device_info dev[16];
         int n = cnn_opencl_devices(dev, 16);        // every platform's devices
         for (int i = 0; i < n; i++) printf("%d: %s (%s)\n", dev[i].index, dev[i].name, dev[i].platform);

         cnn_model *m = build_network();             // compiled, as for the CPU
         if (cnn_opencl_attach(m, .devices = "0,1", .split = "3:1") != CNN_OK)
             fprintf(stderr, "%s\n", cnn_last_error());   // the CPU path stays usable
         cnn_history *h = cnn_fit(m, train, .batch_size = 32, .epochs = 10);
         cnn_opencl_detach(m);                       // back to the CPU

   CHOOSING DEVICES (.devices, or the environment variable CNN_OPENCL_DEVICES)
     Devices are numbered across all platforms the ICD loader finds, in platform
     order (examples/devices lists them). A choice is an index list "0,2", a
     type "gpu", "cpu" or "all", or a piece of a device or platform name
     ("llvmpipe", "RTX 4090"; any case; three digits or more name a device
     when they are no index here, as "4090"). With no choice: every GPU, or every
     device when there is no GPU.

   THE SPLIT (.split)
     "equal": Keras' rule, batch / n samples each and the remainder to the last
     device; "W1:W2:...": fixed weights, one per device, in whole samples;
     "auto" (the default): in proportion to each device's measured speed. Auto
     times every device over each step (kernel times from the device's own
     clock; when a driver's clock is no use, as Mesa 22's rusticl stamps 0-3 ns,
     every device by when the host saw it finish each phase), fits time = a + b
     x samples, and re-balances so that the devices finish together, ignoring
     the first two steps (compiling), changing the split only when it gains more
     than 5% and in steps of batch / 16 samples (each new size costs PoCL a
     compilation). A device whose fixed cost outweighs its share gets nothing.
     The wall clock then judges each change after six steps: one that did not
     make steps 2% faster is undone (a driver's clock can mislead, devices on
     shared cores slow each other). When the fit has nothing better, auto tries
     once the fastest device alone, and keeps it, saying so, if that beats the
     split. Batches smaller than the device count leave devices idle.
     cnn_opencl_get_split reads the split in use; fit at verbose 1 or 2 prints
     it when attached and when it changes.

   EXACTNESS
     N devices train the same model as one, up to float rounding: every device
     scales its loss gradient by the global batch (the host computes the loss
     of the whole batch with cnn.h's own code), device gradients are summed on
     the host in device order in double, the optimizer step is cnn.h's own loop,
     and the new weights go to every device before the next step. BatchNorm uses
     the statistics of the whole batch: each device sends per-channel sums about
     a shift of its own, merged exactly in double on the host, in the forward
     (mean, variance) and backward (sum of dy, of dy * (x - mean)) passes; the
     moving statistics are updated once, on the host, after the step succeeded.
     With .local_batchnorm = 1, BatchNorm instead normalizes each device's
     samples with their own statistics, as Keras' multi_gpu_model and tinygrad
     do (each device's slice is then a batch of its own; the moving statistics
     still follow the whole batch); the model then depends on the split.
     Dropout masks come from the global sample index with cnn.h's stateless hash,
     so a sample gets the same mask whichever device it lands on.

   LAYERS
     Every layer of cnn.h: Input, Conv2D (any kernel, strides, padding,
     activation), Dense, BatchNormalization, MaxPooling2D, AveragePooling2D,
     GlobalAveragePooling2D, Flatten, Dropout, Activation, Add, Concatenate,
     ZeroPadding2D and UpSampling2D, in any graph with one input (residual and
     branching networks too: every layer adds its input gradients, so a layer
     read by several takes the sum).

   HOW IT RUNS
     One context and one in-order queue per device (OpenCL 1.2 host API), the
     kernels below in OpenCL C 1.2 built for each device (never with
     -cl-fast-relaxed-math; a failed build reports its log), GEMMs through
     CLBlast (convolutions as im2col + GEMM). Parameters and activations stay
     on the devices; per step each device receives its slice of the batch, the
     weights and a few per-channel coefficients, and sends back its output
     slice, its BatchNorm sums and its gradients. All devices are driven from
     the calling thread with non-blocking calls, so they compute at the same
     time and CLBlast's first call per device (its kernel compilation, run and
     timed at attach, one device at a time) never races. Every wait on a device
     is bounded (.timeout_s, default 120 s, per wait; compiled without POSIX's
     nanosleep it polls without sleeping). A device past the timeout is hung:
     later calls refuse it at once, and what it may still write to is never
     freed. Transfers go through the backend's own host copies, never the
     caller's batch or the model's buffers.

   THE KERNEL CACHE
     Built programs are kept on disk, keyed by a hash of the kernel source, the
     build options and the device's name, OpenCL and driver versions and
     platform, in $CNN_OPENCL_CACHE ("off" disables it), else
     $XDG_CACHE_HOME/cnn_opencl, else ~/.cache/cnn_opencl: written to a
     temporary file and renamed, so processes starting together are safe, and
     a file that does not load means building from source. PoCL is left to its
     own cache (POCL_CACHE_DIR). CLBlast keeps no disk cache: its kernels are
     compiled at attach, one device at a time, and the time is reported.

   ERRORS
     A device that fails its start-up check (CLBlast's three products on a small
     case, then one forward and backward pass of the model itself on 4 samples,
     each against the CPU path within 1e-3) is left out with a message. No
     platform, no device, no device left after the checks, a layer it cannot
     run: cnn_opencl_attach returns an error saying so and the model stays on
     the CPU. An OpenCL error during a step makes the call (fit, train_on_batch,
     ...) return CNN_ERR_DEVICE with cnn_last_error() naming the device and the
     call; the model is then exactly as after the last completed step (the host
     copy is the truth). With .drop_failed = 1 a device whose command fails (an
     error, a wait past .timeout_s, a buffer it cannot allocate) is left out
     instead, with a message, and the step is redone whole on the devices left;
     when none is left the step is redone, and training goes on, on the CPU (the
     model stays attached with cnn_opencl_num_devices 0 until
     cnn_opencl_detach). The result is the step as if the device had never been
     there.

   CONFIGURATION MACROS
     CNN_OPENCL_STATIC        every function static (as CNN_STATIC)
     CL_TARGET_OPENCL_VERSION defaults to 120 here (the 1.2 host API)

   REVISION HISTORY
     0.3  (2026-12-05) ZeroPadding2D and UpSampling2D; the layer kinds in one
          table (a layer is one row); a failed start-up check names the layer.
     0.2  (2026-12-05) every layer of cnn.h (the poolings, Add, Concatenate);
          .drop_failed; .local_batchnorm; a start-up check that runs the
          model itself; fit shows the split; cnn_opencl_get_times as a
          struct (compute, transfers, reductions); auto times by the host's
          clock when a driver's is no use, keeps only changes the wall clock
          confirms and tries the fastest device alone; hung devices are
          left as they are, never waited on forever nor freed under them.
     0.1  (2026-12-05) devices across platforms, choice by index, type or name,
          one or several devices with equal, fixed and auto splits, BatchNorm
          synchronised across devices, exact gradient sums, bounded waits.

   LICENSE: see the end of this file (MIT or public domain, your choice).
*/
#ifndef CNN_OPENCL_H_INCLUDED
#define CNN_OPENCL_H_INCLUDED
#include "cnn.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(CNN_OPENCL_STATIC) && !defined(CNN_OPENCL_DEF)
#define CNN_OPENCL_DEF static
#elif !defined(CNN_OPENCL_DEF)
#define CNN_OPENCL_DEF extern
#endif

/* One OpenCL device as found on this machine. */
typedef struct cnn_opencl_device_info {
    int index;                  /* across all platforms, in platform order */
    char name[128];             /* "pthread-skylake-avx512-AMD EPYC", "NVIDIA H200" */
    char vendor[64];
    char platform[64];          /* "Portable Computing Language", "rusticl" */
    char version[64];           /* the device's OpenCL version string */
    char driver[64];            /* the driver's version */
    int is_gpu, is_cpu;
    int compute_units;
    unsigned long long global_memory, max_alloc; /* bytes */
} cnn_opencl_device_info;

/* Every device of every platform, into out[max] (out may be NULL to count).
   Returns how many there are (0 when there is no platform or device), or a
   negative cnn_status. */
CNN_OPENCL_DEF int cnn_opencl_devices(cnn_opencl_device_info *out, int max);
/* The devices a choice names (see CHOOSING DEVICES; NULL or "" = the
   environment variable CNN_OPENCL_DEVICES, else the default), into
   indices[max]. Returns how many, or a negative cnn_status naming the problem
   (no device matches, an index out of range). */
CNN_OPENCL_DEF int cnn_opencl_select(const char *choice, int *indices, int max);

typedef struct cnn_opencl_opts {
    const char *devices;  /* see CHOOSING DEVICES (NULL = CNN_OPENCL_DEVICES or the default) */
    const char *split;    /* "auto" (NULL), "equal" or "W1:W2:..." */
    double timeout_s;     /* the longest wait on a device (0 = 120 s) */
    int quiet;            /* 1 = no messages on stderr (a device left out, the split) */
    int drop_failed;      /* 1 = a device that fails during a step is left out and the step
                             redone on the others; with none left, on the CPU */
    int local_batchnorm;  /* 1 = BatchNormalization normalizes each device's samples with their
                             own statistics (Keras' multi_gpu_model, tinygrad), not the whole
                             batch's; the moving statistics still follow the whole batch */
    int fail_after;       /* test hook: the fail_after-th device command from now fails
                             as if the device had (0 = never) */
} cnn_opencl_opts;

/* Put a compiled model on OpenCL devices: fit, train_on_batch, evaluate and
   predict run there from now on. Returns CNN_OK, or an error (the model stays
   on the CPU). Attaching again replaces the devices. */
CNN_OPENCL_DEF int cnn_opencl_attach_opt(cnn_model *m, const cnn_opencl_opts *o);
/* Back to the CPU (the model loses nothing: the host copy is the truth). */
CNN_OPENCL_DEF int cnn_opencl_detach(cnn_model *m);
/* The devices in use (0 when the model is on the CPU), and device k's description. */
CNN_OPENCL_DEF int cnn_opencl_num_devices(const cnn_model *m);
CNN_OPENCL_DEF int cnn_opencl_device(const cnn_model *m, int k, cnn_opencl_device_info *info);
/* The split of the last step: samples per device into counts[max]; returns the
   device count, or a negative cnn_status. */
CNN_OPENCL_DEF int cnn_opencl_get_split(const cnn_model *m, int *counts, int max);
/* Where the time of the last step (or inference batch) went. */
#define CNN_OPENCL_MAX_DEVICES 64
/* the last step's times in seconds; a device whose driver stamps no real
   times reports -1 (auto then times it by the host's clock) */
typedef struct cnn_opencl_times {
    int n;                                     /* devices */
    double step_s;                             /* the whole step, by the wall clock */
    double reduce_s;                           /* on the host: merging BatchNorm sums, summing gradients */
    double compute_s[CNN_OPENCL_MAX_DEVICES];  /* each device's kernels, by its own clock */
    double transfer_s[CNN_OPENCL_MAX_DEVICES]; /* each device's copies to and from the host */
} cnn_opencl_times;
/* Fills *t; returns the device count, or a negative cnn_status. */
CNN_OPENCL_DEF int cnn_opencl_get_times(const cnn_model *m, cnn_opencl_times *t);

#ifndef __cplusplus
#define cnn_opencl_attach(m, ...) cnn_opencl_attach_opt((m), &(cnn_opencl_opts){__VA_ARGS__})
#endif

#ifdef __cplusplus
}
#endif
#endif /* CNN_OPENCL_H_INCLUDED */

/* ######################################################################## */
/* #                          IMPLEMENTATION                              # */
/* ######################################################################## */
#ifdef CNN_OPENCL_IMPLEMENTATION
#ifndef CNN_OPENCL_IMPLEMENTATION_INCLUDED
#define CNN_OPENCL_IMPLEMENTATION_INCLUDED

#ifndef CNN_IMPLEMENTATION_INCLUDED
/* define CNN_OPENCL_IMPLEMENTATION in the file that has cnn.h's implementation, after including cnn.h */
#error "cnn_opencl.h: CNN_OPENCL_IMPLEMENTATION needs cnn.h's implementation (CNN_IMPLEMENTATION) first"
#endif

#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif
#ifdef __APPLE__
#include <OpenCL/opencl.h>
#else
#include <CL/cl.h>
#endif
#include <clblast_c.h>
#include <ctype.h>
#include <stdarg.h>
#include <time.h>
#if defined(__unix__) || defined(__APPLE__)
#include <sys/stat.h>
#include <sys/types.h>
#define CNN__CL_HAVE_MKDIR 1 /* the program cache makes its folder */
#endif
#if defined(_POSIX_C_SOURCE) && _POSIX_C_SOURCE >= 199309L
#define CNN__CL_HAVE_NANOSLEEP 1 /* bounded waits sleep between polls */
#endif

#if defined(CNN_OPENCL_STATIC) && (defined(__GNUC__) || defined(__clang__))
#define CNN__CL_IMPL static __attribute__((unused))
#elif defined(CNN_OPENCL_STATIC)
#define CNN__CL_IMPL static
#else
#define CNN__CL_IMPL
#endif

/* ======================================================================== */
/* Kernels (OpenCL C 1.2)                                                   */
/* ======================================================================== */
/* Shapes as in cnn.h: NHWC, one sample [h][w][c]; a device holds `count`
   samples of the batch, the first being the batch's sample `first`. Every
   kernel is one work-item per output value and plain loops: what it computes
   is what cnn.h's reference passes compute. */
#define CNN__CL_STR(...) #__VA_ARGS__
static const char cnn__cl_source[] = CNN__CL_STR(

    /* cnn.h's stateless hash: dropout masks from (layer key, step, global sample, element) */
    ulong mix64(ulong z) {
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9UL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebUL;
        return z ^ (z >> 31);
    } float hash_uniform(ulong a, ulong b, ulong c, ulong d) {
        ulong h = mix64(a + 0x9e3779b97f4a7c15UL);
        h = mix64(h ^ (b + 0x632be59bd9b4e019UL));
        h = mix64(h ^ (c + 0x85ebca77c2b2ae63UL));
        h = mix64(h ^ d);
        return (float)(h >> 40) * (1.0f / 16777216.0f);
    }

    /* activations, numbered as cnn_activation_type: 0 linear 1 relu 2 sigmoid 3 tanh
   (4 softmax has kernels of its own) 5 leaky_relu 6 elu */
    float activate(float v, int act, float alpha) {
        switch (act) {
        case 1: return v < 0.0f ? 0.0f : v;
        case 2: return 1.0f / (1.0f + exp(-v));
        case 3: return tanh(v);
        case 5: return v < 0.0f ? alpha * v : v;
        case 6: return v > 0.0f ? v : alpha * expm1(v);
        default:
            return v;
        }
    }
    /* dy * act'(x), from the activation's output y */
    float activate_grad(float dy, float y, int act, float alpha) {
        switch (act) {
        case 1: return y > 0.0f ? dy : 0.0f;
        case 2: return dy * (y * (1.0f - y));
        case 3: return dy * (1.0f - y * y);
        case 5: return y > 0.0f ? dy : alpha * dy;
        case 6: return y > 0.0f ? dy : dy * (y + alpha);
        default:
            return dy;
        }
    }

    /* y [rows][cols] = act(y + bias) (bias from the parameters at bias_off, or none) */
    __kernel void bias_act(__global float *y, __global const float *p, int bias_off, int use_bias, int cols,
                           int act, float alpha) {
        size_t i = get_global_id(0);
        float v = y[i];
        if (use_bias) v += p[bias_off + (int)(i % (size_t)cols)];
        y[i] = activate(v, act, alpha);
    }

    /* softmax of each row of y [rows][cols] (after adding the bias) */
    __kernel void softmax_rows(__global float *y, __global const float *p, int bias_off, int use_bias,
                               int cols) {
        __global float *v = y + get_global_id(0) * (size_t)cols;
        float mx, sum = 0.0f, inv;
        if (use_bias)
            for (int i = 0; i < cols; i++) v[i] += p[bias_off + i];
        mx = v[0];
        for (int i = 1; i < cols; i++) mx = v[i] > mx ? v[i] : mx;
        for (int i = 0; i < cols; i++) {
            v[i] = exp(v[i] - mx);
            sum += v[i];
        }
        inv = 1.0f / sum;
        for (int i = 0; i < cols; i++) v[i] *= inv;
    }

    /* dy := dy * act'(.) in place, from the output y; softmax: per row */
    __kernel void act_grad(__global float *dy, __global const float *y, int act, float alpha) {
        size_t i = get_global_id(0);
        dy[i] = activate_grad(dy[i], y[i], act, alpha);
    } __kernel void softmax_grad(__global float *dy, __global const float *y, int cols) {
        size_t r = get_global_id(0) * (size_t)cols;
        float dot = 0.0f;
        for (int i = 0; i < cols; i++) dot += dy[r + i] * y[r + i];
        for (int i = 0; i < cols; i++) dy[r + i] = y[r + i] * (dy[r + i] - dot);
    }

    /* The output row (or column) whose window has input row i at its cell k, for
   a window stepping by `stride` over an input padded by `pad` before it, or
   -1 when none does: what every backward pass that scatters through windows
   (col2im, the poolings) asks, gathered per input value instead. */
    int window_of(int i, int pad, int k, int stride, int n_out) {
        int t = i + pad - k;
        return t < 0 || t % stride != 0 || t / stride >= n_out ? -1 : t / stride;
    }

    /* im2col: col [count*Ho*Wo][K], K = kh*kw*C in the kernel's [ky][kx][c] order */
    __kernel void im2col(__global const float *x, __global float *col, int H, int W, int C, int Ho, int Wo,
                         int kh, int kw, int sh, int sw, int pt, int pl) {
        size_t i = get_global_id(0);
        int K = kh * kw * C, k = (int)(i % (size_t)K), c = k % C, cell = k / C;
        size_t r = i / (size_t)K;
        int ox = (int)(r % (size_t)Wo), oy = (int)(r / (size_t)Wo % (size_t)Ho),
            b = (int)(r / ((size_t)Wo * Ho));
        int iy = oy * sh - pt + cell / kw, ix = ox * sw - pl + cell % kw;
        col[i] = iy >= 0 && iy < H && ix >= 0 && ix < W ? x[(((size_t)b * H + iy) * W + ix) * C + c] : 0.0f;
    }

    /* dx [count][H][W][C] += the im2col rows' gradients dcol that read each input value */
    __kernel void col2im_add(__global const float *dcol, __global float *dx, int H, int W, int C, int Ho,
                             int Wo, int kh, int kw, int sh, int sw, int pt, int pl) {
        size_t i = get_global_id(0);
        int K = kh * kw * C, c = (int)(i % (size_t)C), ix = (int)(i / (size_t)C % (size_t)W);
        int iy = (int)(i / ((size_t)C * W) % (size_t)H), b = (int)(i / ((size_t)C * W * H));
        float s = 0.0f;
        for (int ky = 0; ky < kh; ky++) {
            int oy = window_of(iy, pt, ky, sh, Ho);
            for (int kx = 0; kx < kw && oy >= 0; kx++) {
                int ox = window_of(ix, pl, kx, sw, Wo);
                if (ox >= 0)
                    s += dcol[(((size_t)b * Ho + oy) * Wo + ox) * K + (size_t)((ky * kw + kx) * C + c)];
            }
        }
        dx[i] += s;
    }

    /* column sums of a [rows][cols] in chunks of `chunk` rows: part [chunks][cols] */
    __kernel void col_partials(__global const float *a, int rows, int cols, int chunk, __global float *part) {
        size_t i = get_global_id(0);
        int j = (int)(i % (size_t)cols), g = (int)(i / (size_t)cols), end = min(rows, (g + 1) * chunk);
        float s = 0.0f;
        for (int r = g * chunk; r < end; r++) s += a[(size_t)r * cols + j];
        part[i] = s;
    }
    /* out[off + j] = the sum of the chunks' partial sums of column j */
    __kernel void col_reduce(__global const float *part, int chunks, int cols, __global float *out, int off) {
        int j = (int)get_global_id(0);
        float s = 0.0f;
        for (int g = 0; g < chunks; g++) s += part[(size_t)g * cols + j];
        out[off + j] = s;
    }

    /* BatchNorm forward sums of x [rows][C] per chunk of rows, about the chunk's
   first row: part [chunks][C][3] = {shift, sum(x - shift), sum((x - shift)^2)} */
    __kernel void bn_partials(__global const float *x, int rows, int C, int chunk, __global float *part) {
        size_t i = get_global_id(0);
        int c = (int)(i % (size_t)C), g = (int)(i / (size_t)C), end = min(rows, (g + 1) * chunk);
        float shift = x[(size_t)g * chunk * C + c], s1 = 0.0f, s2 = 0.0f;
        for (int r = g * chunk; r < end; r++) {
            float d = x[(size_t)r * C + c] - shift;
            s1 += d;
            s2 += d * d;
        }
        part[3 * i] = shift;
        part[3 * i + 1] = s1;
        part[3 * i + 2] = s2;
    }
    /* y = x * coef[c] + coef[C + c] */
    __kernel void bn_apply(__global const float *x, __global float *y, __global const float *coef, int C) {
        size_t i = get_global_id(0);
        int c = (int)(i % (size_t)C);
        y[i] = x[i] * coef[c] + coef[C + c];
    }
    /* BatchNorm backward sums per chunk: part [chunks][C][2] = {sum dy, sum dy * (x - mean)},
   mean = coef[0..C) */
    __kernel void bn_grad_partials(__global const float *dy, __global const float *x,
                                   __global const float *mean, int rows, int C, int chunk,
                                   __global float *part) {
        size_t i = get_global_id(0);
        int c = (int)(i % (size_t)C), g = (int)(i / (size_t)C), end = min(rows, (g + 1) * chunk);
        float s1 = 0.0f, s2 = 0.0f;
        for (int r = g * chunk; r < end; r++) {
            float d = dy[(size_t)r * C + c];
            s1 += d;
            s2 += d * (x[(size_t)r * C + c] - mean[c]);
        }
        part[2 * i] = s1;
        part[2 * i + 1] = s2;
    }
    /* dx += coef[c] * dy + coef[C + c] * x + coef[2C + c] */
    __kernel void bn_grad_apply(__global const float *dy, __global const float *x, __global float *dx,
                                __global const float *coef, int C) {
        size_t i = get_global_id(0);
        int c = (int)(i % (size_t)C);
        dx[i] += coef[c] * dy[i] + coef[C + c] * x[i] + coef[2 * C + c];
    }

    /* max pooling: y and the window cell (ky * kw + kx) of each maximum */
    __kernel void maxpool(__global const float *x, __global float *y, __global int *cell, int H, int W, int C,
                          int Ho, int Wo, int kh, int kw, int sh, int sw, int pt, int pl) {
        size_t i = get_global_id(0);
        int c = (int)(i % (size_t)C), ox = (int)(i / (size_t)C % (size_t)Wo);
        int oy = (int)(i / ((size_t)C * Wo) % (size_t)Ho), b = (int)(i / ((size_t)C * Wo * Ho)),
            best_cell = -1;
        float best = 0.0f;
        for (int ky = 0; ky < kh; ky++)
            for (int kx = 0; kx < kw; kx++) {
                int iy = oy * sh - pt + ky, ix = ox * sw - pl + kx;
                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                float v = x[(((size_t)b * H + iy) * W + ix) * C + c];
                if (best_cell < 0 || v > best) {
                    best = v;
                    best_cell = ky * kw + kx;
                }
            }
        y[i] = best;
        cell[i] = best_cell;
    }
    /* dx += dy of every output whose maximum this input value was */
    __kernel void maxpool_grad(__global const float *dy, __global const int *cell, __global float *dx, int H,
                               int W, int C, int Ho, int Wo, int kh, int kw, int sh, int sw, int pt, int pl) {
        size_t i = get_global_id(0);
        int c = (int)(i % (size_t)C), ix = (int)(i / (size_t)C % (size_t)W);
        int iy = (int)(i / ((size_t)C * W) % (size_t)H), b = (int)(i / ((size_t)C * W * H));
        float s = 0.0f;
        for (int ky = 0; ky < kh; ky++) {
            int oy = window_of(iy, pt, ky, sh, Ho);
            for (int kx = 0; kx < kw && oy >= 0; kx++) {
                int ox = window_of(ix, pl, kx, sw, Wo);
                size_t o = (((size_t)b * Ho + oy) * Wo + ox) * C + c;
                if (ox >= 0 && cell[o] == ky * kw + kx) s += dy[o];
            }
        }
        dx[i] += s;
    }

    /* inverted dropout, the mask of (key, step, first + sample, element) as on the CPU */
    __kernel void dropout(__global const float *x, __global float *y, int per, float rate, float keep,
                          ulong key, ulong step, int first) {
        size_t i = get_global_id(0);
        float u = hash_uniform(key, step, (ulong)(first + (int)(i / (size_t)per)), (ulong)(i % (size_t)per));
        y[i] = x[i] * (u < rate ? 0.0f : keep);
    } __kernel void dropout_grad(__global const float *dy, __global float *dx, int per, float rate,
                                 float keep, ulong key, ulong step, int first) {
        size_t i = get_global_id(0);
        float u = hash_uniform(key, step, (ulong)(first + (int)(i / (size_t)per)), (ulong)(i % (size_t)per));
        dx[i] += dy[i] * (u < rate ? 0.0f : keep);
    }

    /* dst += src */
    __kernel void add_to(__global float *dst, __global const float *src) {
        size_t i = get_global_id(0);
        dst[i] += src[i];
    }

    /* average pooling (GlobalAveragePooling2D: one window over the whole input):
   the mean of the window's cells inside the input (Keras leaves padding out) */
    int window_count(int H, int W, int oy, int ox, int kh, int kw, int sh, int sw, int pt, int pl) {
        int y0 = max(oy * sh - pt, 0), y1 = min(oy * sh - pt + kh, H), x0 = max(ox * sw - pl, 0),
            x1 = min(ox * sw - pl + kw, W);
        return max(y1 - y0, 0) * max(x1 - x0, 0);
    } __kernel void avgpool(__global const float *x, __global float *y, int H, int W, int C, int Ho, int Wo,
                            int kh, int kw, int sh, int sw, int pt, int pl) {
        size_t i = get_global_id(0);
        int c = (int)(i % (size_t)C), ox = (int)(i / (size_t)C % (size_t)Wo);
        int oy = (int)(i / ((size_t)C * Wo) % (size_t)Ho), b = (int)(i / ((size_t)C * Wo * Ho));
        /* only the window's cells inside the input: a window far larger than the
           input costs what the input holds */
        int y0 = max(oy * sh - pt, 0), y1 = min(oy * sh - pt + kh, H), x0 = max(ox * sw - pl, 0),
            x1 = min(ox * sw - pl + kw, W);
        float s = 0.0f;
        for (int iy = y0; iy < y1; iy++)
            for (int ix = x0; ix < x1; ix++) s += x[(((size_t)b * H + iy) * W + ix) * C + c];
        y[i] = s * (1.0f / (float)window_count(H, W, oy, ox, kh, kw, sh, sw, pt, pl));
    }
    /* dx += dy / count of every output whose window holds this input value */
    __kernel void avgpool_grad(__global const float *dy, __global float *dx, int H, int W, int C, int Ho,
                               int Wo, int kh, int kw, int sh, int sw, int pt, int pl) {
        size_t i = get_global_id(0);
        int c = (int)(i % (size_t)C), ix = (int)(i / (size_t)C % (size_t)W);
        int iy = (int)(i / ((size_t)C * W) % (size_t)H), b = (int)(i / ((size_t)C * W * H));
        /* the window offsets that some output's window puts on this input: ky in
           [iy + pt - (Ho - 1) * sh, iy + pt], so the loops are as long as the output
           is wide, however large the window */
        int ky0 = max(iy + pt - (Ho - 1) * sh, 0), ky1 = min(iy + pt + 1, kh);
        int kx0 = max(ix + pl - (Wo - 1) * sw, 0), kx1 = min(ix + pl + 1, kw);
        float s = 0.0f;
        for (int ky = ky0; ky < ky1; ky++) {
            int oy = window_of(iy, pt, ky, sh, Ho);
            for (int kx = kx0; kx < kx1 && oy >= 0; kx++) {
                int ox = window_of(ix, pl, kx, sw, Wo);
                if (ox >= 0)
                    s += dy[(((size_t)b * Ho + oy) * Wo + ox) * C + c] *
                         (1.0f / (float)window_count(H, W, oy, ox, kh, kw, sh, sw, pt, pl));
            }
        }
        dx[i] += s;
    }

    /* Concatenate: input x [rows][ci] into columns [c0, c0 + ci) of y [rows][C], and back */
    __kernel void concat_copy(__global const float *x, __global float *y, int ci, int C, int c0) {
        size_t i = get_global_id(0);
        y[i / (size_t)ci * C + c0 + (int)(i % (size_t)ci)] = x[i];
    } __kernel void concat_grad(__global const float *dy, __global float *dx, int ci, int C, int c0) {
        size_t i = get_global_id(0);
        dx[i] += dy[i / (size_t)ci * C + c0 + (int)(i % (size_t)ci)];
    }

    /* ZeroPadding2D: x [count][H][W][C] at row top, column left of y [count][Ho][Wo][C],
   zeros around it; back: each input value takes the gradient of its place (the border's goes nowhere) */
    __kernel void zero_pad(__global const float *x, __global float *y, int H, int W, int C, int Ho, int Wo,
                           int top, int left) {
        size_t i = get_global_id(0);
        int c = (int)(i % (size_t)C), ox = (int)(i / (size_t)C % (size_t)Wo);
        int oy = (int)(i / ((size_t)C * Wo) % (size_t)Ho), b = (int)(i / ((size_t)C * Wo * Ho));
        int iy = oy - top, ix = ox - left;
        y[i] = iy >= 0 && iy < H && ix >= 0 && ix < W ? x[(((size_t)b * H + iy) * W + ix) * C + c] : 0.0f;
    } __kernel void zero_pad_grad(__global const float *dy, __global float *dx, int H, int W, int C, int Ho,
                                  int Wo, int top, int left) {
        size_t i = get_global_id(0);
        int c = (int)(i % (size_t)C), ix = (int)(i / (size_t)C % (size_t)W);
        int iy = (int)(i / ((size_t)C * W) % (size_t)H), b = (int)(i / ((size_t)C * W * H));
        dx[i] += dy[(((size_t)b * Ho + iy + top) * Wo + ix + left) * C + c];
    }

    /* UpSampling2D (nearest): y [count][H*kh][W*kw][C] repeats each value of x [count][H][W][C]
   over a kh x kw block; back: each input value takes the sum of its block's gradients, row by
   row (cnn.h's order) */
    __kernel void up_sample(__global const float *x, __global float *y, int H, int W, int C, int kh, int kw) {
        size_t i = get_global_id(0);
        int Wo = W * kw, Ho = H * kh, c = (int)(i % (size_t)C), ox = (int)(i / (size_t)C % (size_t)Wo);
        int oy = (int)(i / ((size_t)C * Wo) % (size_t)Ho), b = (int)(i / ((size_t)C * Wo * Ho));
        y[i] = x[(((size_t)b * H + oy / kh) * W + ox / kw) * C + c];
    } __kernel void up_sample_grad(__global const float *dy, __global float *dx, int H, int W, int C, int kh,
                                   int kw) {
        size_t i = get_global_id(0);
        int Wo = W * kw, Ho = H * kh, c = (int)(i % (size_t)C), ix = (int)(i / (size_t)C % (size_t)W);
        int iy = (int)(i / ((size_t)C * W) % (size_t)H), b = (int)(i / ((size_t)C * W * H));
        float s = 0.0f;
        for (int p = 0; p < kh; p++)
            for (int q = 0; q < kw; q++) s += dy[(((size_t)b * Ho + iy * kh + p) * Wo + ix * kw + q) * C + c];
        dx[i] += s;
    });
#undef CNN__CL_STR

/* The kernels above, an X() each: the id the passes run it by (CNN__K_...) and
   its name in the source; the enum and the names both come from this list. */
#define CNN__CL_KERNEL_LIST(X)                                                                               \
    X(BIAS_ACT, bias_act)                                                                                    \
    X(SOFTMAX, softmax_rows) X(ACT_GRAD, act_grad) X(SOFTMAX_GRAD, softmax_grad) X(IM2COL, im2col)           \
        X(COL2IM, col2im_add) X(COL_PARTIALS, col_partials) X(COL_REDUCE, col_reduce)                        \
            X(BN_PARTIALS, bn_partials) X(BN_APPLY, bn_apply) X(BN_GRAD_PARTIALS, bn_grad_partials)          \
                X(BN_GRAD_APPLY, bn_grad_apply) X(MAXPOOL, maxpool) X(MAXPOOL_GRAD, maxpool_grad)            \
                    X(DROPOUT, dropout) X(DROPOUT_GRAD, dropout_grad) X(ADD, add_to) X(AVGPOOL, avgpool)     \
                        X(AVGPOOL_GRAD, avgpool_grad) X(CONCAT, concat_copy) X(CONCAT_GRAD, concat_grad)     \
                            X(ZERO_PAD, zero_pad) X(ZERO_PAD_GRAD, zero_pad_grad) X(UP_SAMPLE, up_sample)    \
                                X(UP_SAMPLE_GRAD, up_sample_grad)
#define CNN__CL_KERNEL_ID(id, name) CNN__K_##id,
#define CNN__CL_KERNEL_NAME(id, name) #name,
enum { CNN__CL_KERNEL_LIST(CNN__CL_KERNEL_ID) CNN__KERNELS };
static const char *const cnn__cl_kernel_names[CNN__KERNELS] = {CNN__CL_KERNEL_LIST(CNN__CL_KERNEL_NAME)};
#undef CNN__CL_KERNEL_ID
#undef CNN__CL_KERNEL_NAME

#define CNN__CL_CHUNK 256 /* rows per partial sum: float sums of 256 rows, merged in double */

/* ======================================================================== */
/* Devices: discovery and choice                                            */
/* ======================================================================== */

/* A string property into dst[size], cut to fit (drivers refuse a short buffer). */
static void cnn__cl_string(cl_device_id d, cl_platform_id p, cl_uint what, char *dst, size_t size) {
    char buf[1024] = "";
    if (d) clGetDeviceInfo(d, what, sizeof buf - 1, buf, NULL);
    else clGetPlatformInfo(p, what, sizeof buf - 1, buf, NULL);
    buf[sizeof buf - 1] = 0;
    snprintf(dst, size, "%s", buf);
}

/* Every device of every platform, in platform order: ids[] and, when info is
   not NULL, their descriptions. Returns the count (at most max), 0 when none. */
static int cnn__cl_enumerate(cl_device_id *ids, cl_platform_id *plats, cnn_opencl_device_info *info,
                             int max) {
    cl_platform_id platforms[16];
    cl_uint np = 0;
    int n = 0;
    if (clGetPlatformIDs(16, platforms, &np) != CL_SUCCESS) return 0; /* no ICD, or none installed */
    for (cl_uint p = 0; p < np && p < 16; p++) {
        cl_device_id devs[32];
        cl_uint nd = 0;
        char pname[64] = "";
        if (clGetDeviceIDs(platforms[p], CL_DEVICE_TYPE_ALL, 32, devs, &nd) != CL_SUCCESS) continue;
        cnn__cl_string(NULL, platforms[p], CL_PLATFORM_NAME, pname, sizeof pname);
        for (cl_uint d = 0; d < nd && d < 32 && n < max; d++, n++) {
            if (ids) ids[n] = devs[d];
            if (plats) plats[n] = platforms[p];
            if (info) {
                cnn_opencl_device_info *e = &info[n];
                cl_device_type type = 0;
                cl_uint cu = 0;
                cl_ulong mem = 0, alloc = 0;
                memset(e, 0, sizeof *e);
                e->index = n;
                cnn__cl_string(devs[d], NULL, CL_DEVICE_NAME, e->name, sizeof e->name);
                cnn__cl_string(devs[d], NULL, CL_DEVICE_VENDOR, e->vendor, sizeof e->vendor);
                cnn__cl_string(devs[d], NULL, CL_DEVICE_VERSION, e->version, sizeof e->version);
                cnn__cl_string(devs[d], NULL, CL_DRIVER_VERSION, e->driver, sizeof e->driver);
                clGetDeviceInfo(devs[d], CL_DEVICE_TYPE, sizeof type, &type, NULL);
                clGetDeviceInfo(devs[d], CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cu, &cu, NULL);
                clGetDeviceInfo(devs[d], CL_DEVICE_GLOBAL_MEM_SIZE, sizeof mem, &mem, NULL);
                clGetDeviceInfo(devs[d], CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof alloc, &alloc, NULL);
                memcpy(e->platform, pname, sizeof e->platform);
                e->is_gpu = (type & CL_DEVICE_TYPE_GPU) != 0;
                e->is_cpu = (type & CL_DEVICE_TYPE_CPU) != 0;
                e->compute_units = (int)cu;
                e->global_memory = mem;
                e->max_alloc = alloc;
            }
        }
    }
    return n;
}

#define CNN__CL_MAX_DEVICES CNN_OPENCL_MAX_DEVICES

CNN__CL_IMPL int cnn_opencl_devices(cnn_opencl_device_info *out, int max) {
    cnn_opencl_device_info all[CNN__CL_MAX_DEVICES];
    int n = cnn__cl_enumerate(NULL, NULL, all, CNN__CL_MAX_DEVICES);
    if (max < 0) return cnn_set_error(CNN_ERR_ARG, "cnn_opencl_devices: max %d is negative", max);
    if (out) memcpy(out, all, (size_t)(n < max ? n : max) * sizeof *out);
    return n;
}

/* Does `hay` contain `needle`, ignoring case? */
/* a equals b, in any case */
static int cnn__cl_same(const char *a, const char *b) {
    for (; *a && *b; a++, b++)
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b)) return 0;
    return *a == *b;
}

static int cnn__cl_contains(const char *hay, const char *needle) {
    size_t n = strlen(needle);
    for (; *hay; hay++) {
        size_t i = 0;
        while (i < n && hay[i] && tolower((unsigned char)hay[i]) == tolower((unsigned char)needle[i])) i++;
        if (i == n) return 1;
    }
    return n == 0;
}

/* "4090" is a piece of a device name, not an index, when it has three digits
   or more, is no index here and some device's name has it ("5" with two
   devices stays a wrong index) */
static int cnn__cl_digits_name(const char *choice, const cnn_opencl_device_info *all, int n) {
    if (strchr(choice, ',') || strlen(choice) < 3 || strtol(choice, NULL, 10) < n) return 0;
    for (int i = 0; i < n; i++)
        if (cnn__cl_contains(all[i].name, choice)) return 1;
    return 0;
}

/* cnn_opencl_select's choice among the n devices all[] (apart, so that the
   parsing is tested and fuzzed without a driver): choice NULL or "" = the default */
static int cnn__cl_choose(const char *choice, const cnn_opencl_device_info *all, int n, int *indices, int max) {
    static const char who[] = "cnn_opencl_select";
    int k = 0;
    if (n == 0)
        return cnn_set_error(CNN_ERR_DEVICE,
                             "%s: no OpenCL platform or device found (install a driver such as "
                             "pocl-opencl-icd, or check OCL_ICD_VENDORS)",
                             who);
    if (!choice || !*choice) { /* every GPU, else every device */
        for (int i = 0; i < n && k < max; i++)
            if (all[i].is_gpu) indices[k++] = i;
        if (k == 0)
            for (int i = 0; i < n && i < max; i++) indices[k++] = i;
        return k;
    }
    if (strspn(choice, "0123456789,") == strlen(choice) && !cnn__cl_digits_name(choice, all, n)) { /* "0,2" */
        const char *p = choice;
        while (*p) {
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p || v < 0 || v >= n)
                return cnn_set_error(CNN_ERR_ARG,
                                     "%s: '%s': device %.*s is not one of the %d devices (0..%d)", who,
                                     choice, end == p ? (int)strlen(p) : (int)(end - p), p, n, n - 1);
            for (int i = 0; i < k; i++)
                if (indices[i] == (int)v)
                    return cnn_set_error(CNN_ERR_ARG, "%s: '%s' names device %ld twice", who, choice, v);
            if (k == max)
                return cnn_set_error(CNN_ERR_ARG, "%s: '%s' names more than %d devices", who, choice, max);
            indices[k++] = (int)v;
            p = end;
            if (*p == ',') p++;
            else if (*p)
                return cnn_set_error(CNN_ERR_ARG, "%s: '%s' is not an index list such as \"0,2\"", who,
                                     choice);
        }
        return k;
    }
    for (int i = 0; i < n && k < max; i++) { /* a type (any case), else a piece of a name (any case) */
        const int all_of = cnn__cl_same(choice, "all"), gpu = cnn__cl_same(choice, "gpu"),
                  cpu = cnn__cl_same(choice, "cpu");
        const int pick = all_of || (gpu && all[i].is_gpu) || (cpu && all[i].is_cpu) ||
                         (!gpu && !cpu &&
                          (cnn__cl_contains(all[i].name, choice) ||
                           cnn__cl_contains(all[i].platform, choice)));
        if (pick) indices[k++] = i;
    }
    if (k == 0)
        return cnn_set_error(CNN_ERR_DEVICE,
                             "%s: no OpenCL device matches '%s' (%d device%s found; give indices, "
                             "gpu, cpu, all or a piece of a name)",
                             who, choice, n, n == 1 ? "" : "s");
    return k;
}

CNN__CL_IMPL int cnn_opencl_select(const char *choice, int *indices, int max) {
    cnn_opencl_device_info all[CNN__CL_MAX_DEVICES];
    int n;
    if (!indices || max <= 0) return cnn_set_error(CNN_ERR_ARG, "cnn_opencl_select: no room for the indices");
    if (!choice || !*choice) choice = getenv("CNN_OPENCL_DEVICES");
    n = cnn__cl_enumerate(NULL, NULL, all, CNN__CL_MAX_DEVICES);
    return cnn__cl_choose(choice, all, n, indices, max);
}

/* ======================================================================== */
/* One device: its context, queue, program and buffers                      */
/* ======================================================================== */

typedef struct cnn__cl_node { /* one layer's buffers on one device */
    cl_mem out, dout; /* [cap][size]; Flatten shares its input's */
    cl_mem aux;       /* Conv2D: im2col rows [cap*Ho*Wo][K]; MaxPooling2D: window cells [cap][size] (int) */
    cl_mem part;      /* per-chunk sums (BatchNorm statistics, bias gradients) */
    int shared;       /* out and dout belong to the input (Flatten) */
} cnn__cl_node;

typedef struct cnn__cl_dev {
    cnn_opencl_device_info info;
    cl_device_id id;
    cl_context ctx;
    cl_command_queue q;
    cl_program prog;
    cl_kernel k[CNN__KERNELS];
    cl_mem params, grads, coef; /* params and grads as the model's buffers; coef [3 * widest C] */
    cnn__cl_node *nodes;        /* [model nodes] */
    int cap;                    /* samples the buffers hold */
    int count, first;           /* this step: samples [first, first + count) of the batch */
    float *part;                /* host copy of a layer's sums [chunks][C][3] */
    float *grads_host;          /* host copy of the device's gradients [n_params] */
    cl_event *events;           /* this step's commands, for the device's own timing */
    int n_events, cap_events;
    unsigned char *transfer;    /* [cap_events] 1: that command is a transfer */
    double busy_s;              /* device seconds of the last step (compute, transfers; -1: no real clock) */
    double transfer_s;          /* of which transfers between host and device */
    double wall_s;              /* the step's seconds until this device finished each phase (host clock) */
    int steps_at_count;         /* steps run at this count (the first ones compile) */
    int failed;                 /* a command of this device failed (see .drop_failed) */
    int hung;                   /* a wait on it ran past the timeout: it may still run what was
                                   queued, reading and writing the host buffers named there, so
                                   those are never freed (cnn__cl_dev_free leaves them) */
    float *stage;               /* host copies the device's transfers use, owned here so that a late
                                   transfer of a hung device touches nothing of the caller's:
                                   the batch slice [cap][input size], its output or output
                                   gradient [cap][output size] */
    int quiet;                  /* as the backend's */
} cnn__cl_dev;

typedef struct cnn__cl {
    int n;
    cnn__cl_dev *dev;
    int fixed, equal;            /* the split mode (neither: auto) */
    double *weights;             /* [n] fixed weights */
    int *counts;                 /* [n] the split in use */
    double timeout_s;
    int quiet, fail_after;
    int drop_failed;             /* leave failed devices out and redo the step (see the opts) */
    int checking;                /* the start-up check runs: no split bookkeeping */
    float *params_stage;         /* this step's parameters [n_params], which every device reads */
    int any_hung;                /* a device hung: the shared host buffers above are never freed */
    int local_bn;                /* BatchNorm per device (.local_batchnorm) */
    const float *x;              /* this step's batch, for a step redone */
    long long steps;
    double host_s;               /* the last step's host seconds in reductions */
    double step_s;               /* the last step's wall seconds */
    float **coef_host;           /* per BatchNorm node [devices][9C]: see cnn__cl_bn_block */
    float *moving;               /* staged moving statistics [n_state] */
    int moving_staged;
    /* auto split: the last observations per device (samples, seconds) */
    double (*obs)[16][2];
    int *n_obs;
    int cap_chunks_c;            /* floats in dev->part */
    /* auto's check on itself: the wall time of steps before and after a change */
    double step_t0, wall[8];     /* this step's start; the last steps' wall seconds */
    double phase_t0;             /* the end of the last wait on the devices */
    int host_clock;              /* auto times devices by the host's clock (a driver's clock is no use) */
    int n_wall, frozen;          /* frozen: auto stopped changing the split */
    double *before;              /* [n] the weights before the last change */
    double *shown;               /* [n] the shares in the last line describe wrote */
    double wall_before;          /* their mean step time */
    int since_change;            /* steps since the last change (-1: none to judge) */
    int alone;                   /* the change being judged gives every sample to one device */
    int alone_tried;             /* that has been tried (auto tries it once) */
    int model_rejected;          /* the wall clock undid a change the fit predicted faster */
} cnn__cl;

static const char *cnn__cl_errname(cl_int e) {
    switch (e) {
    case CL_OUT_OF_RESOURCES: return "CL_OUT_OF_RESOURCES";
    case CL_OUT_OF_HOST_MEMORY: return "CL_OUT_OF_HOST_MEMORY";
    case CL_MEM_OBJECT_ALLOCATION_FAILURE: return "CL_MEM_OBJECT_ALLOCATION_FAILURE";
    case CL_INVALID_BUFFER_SIZE: return "CL_INVALID_BUFFER_SIZE";
    case CL_INVALID_KERNEL_ARGS: return "CL_INVALID_KERNEL_ARGS";
    case CL_INVALID_WORK_GROUP_SIZE: return "CL_INVALID_WORK_GROUP_SIZE";
    case CL_INVALID_VALUE: return "CL_INVALID_VALUE";
    case CL_BUILD_PROGRAM_FAILURE: return "CL_BUILD_PROGRAM_FAILURE";
    case CL_DEVICE_NOT_AVAILABLE: return "CL_DEVICE_NOT_AVAILABLE";
    case CL_INVALID_COMMAND_QUEUE: return "CL_INVALID_COMMAND_QUEUE";
    case CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST: return "CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST";
    default: return "an OpenCL error";
    }
}

static int cnn__cl_fail(cnn__cl_dev *d, const char *call, cl_int e) {
    d->failed = 1;
    return cnn_set_error(CNN_ERR_DEVICE, "OpenCL device %d (%s, %s): %s failed: %s (%d)", d->info.index,
                         d->info.name, d->info.platform, call, cnn__cl_errname(e), (int)e);
}

/* The test hook: the fail_after-th device command from the attach fails. */
static cl_int cnn__cl_hook(cnn__cl *c) {
    return c->fail_after > 0 && --c->fail_after == 0 ? CL_OUT_OF_RESOURCES : CL_SUCCESS;
}

/* Keep a command's event for the device's timing (or release it at once);
   transfers (host <-> device copies) are told apart from compute. */
static void cnn__cl_keep_kind(cnn__cl_dev *d, cl_event ev, int transfer) {
    if (!ev) return;
    if (d->n_events == d->cap_events) {
        int cap = d->cap_events ? 2 * d->cap_events : 256;
        cl_event *e = (cl_event *)CNN_REALLOC(d->events, (size_t)cap * sizeof *e);
        unsigned char *t = e ? (unsigned char *)CNN_REALLOC(d->transfer, (size_t)cap) : NULL;
        if (e) d->events = e;
        if (!t) { clReleaseEvent(ev); return; }
        d->transfer = t;
        d->cap_events = cap;
    }
    d->transfer[d->n_events] = (unsigned char)transfer;
    d->events[d->n_events++] = ev;
}
static void cnn__cl_keep(cnn__cl_dev *d, cl_event ev) { cnn__cl_keep_kind(d, ev, 0); }

/* Sum the device's kept commands' run times into busy_s and release them. */
static void cnn__cl_collect_times(cnn__cl_dev *d) {
    double s = 0, moved = 0;
    for (int i = 0; i < d->n_events; i++) {
        cl_ulong t0 = 0, t1 = 0;
        if (clGetEventProfilingInfo(d->events[i], CL_PROFILING_COMMAND_START, sizeof t0, &t0, NULL) ==
                CL_SUCCESS &&
            clGetEventProfilingInfo(d->events[i], CL_PROFILING_COMMAND_END, sizeof t1, &t1, NULL) ==
                CL_SUCCESS &&
            t1 > t0) {
            s += (double)(t1 - t0) * 1e-9;
            if (d->transfer[i]) moved += (double)(t1 - t0) * 1e-9;
        }
        clReleaseEvent(d->events[i]);
    }
    /* some drivers (Mesa 22's rusticl) stamp commands 0, 1, 2, 3 ns: not times */
    d->busy_s = d->n_events > 0 && s < d->n_events * 1e-7 ? -1 : s;
    d->transfer_s = d->busy_s < 0 ? -1 : moved;
    d->n_events = 0;
}

/* Wait until the devices have done everything queued, for at most the
   timeout, polling them together; each device's finishing time by the host's
   clock, from the last such wait (or the step's start), adds to its wall_s:
   what the auto split measures when a driver's own clock is no use. */
static int cnn__cl_wait_devices(cnn__cl *c, cnn__cl_dev *first, int n, const char *what) {
    cl_event ev[CNN__CL_MAX_DEVICES];
    int done[CNN__CL_MAX_DEVICES], left = 0, rc = CNN_OK;
    const double t0 = cnn_wall_time();
    for (int k = 0; k < n; k++) ev[k] = NULL, done[k] = 1;
    for (int k = 0; k < n; k++)
        if (first[k].hung) {
            first[k].failed = 1;
            return cnn_set_error(CNN_ERR_DEVICE,
                                 "OpenCL device %d (%s, %s) did not finish an earlier wait: leave it out "
                                 "(cnn_opencl_detach, then attach without it, or .drop_failed)",
                                 first[k].info.index, first[k].info.name, first[k].info.platform);
        }
    for (int k = 0; k < n; k++) {
        cnn__cl_dev *d = first + k;
        cl_int e = cnn__cl_hook(c);
        if (!e) e = clEnqueueMarkerWithWaitList(d->q, 0, NULL, &ev[k]);
        if (!e) e = clFlush(d->q);
        if (e) {
            rc = cnn__cl_fail(d, what, e);
            break;
        }
        done[k] = 0;
        left++;
    }
    for (int spins = 0; left > 0 && !rc; spins++) {
        for (int k = 0; k < n && !rc; k++) {
            cl_int st = CL_QUEUED, e;
            if (done[k]) continue;
            e = clGetEventInfo(ev[k], CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof st, &st, NULL);
            if (e || st < 0) rc = cnn__cl_fail(first + k, what, e ? e : st);
            else if (st == CL_COMPLETE) {
                done[k] = 1;
                left--;
                first[k].wall_s += cnn_wall_time() - c->phase_t0;
            }
        }
        if (rc || left == 0) break;
        if (cnn_wall_time() - t0 > c->timeout_s) { /* every device still busy is hung; the first is named */
            for (int k = n - 1; k >= 0; k--)
                if (!done[k]) {
                    first[k].failed = first[k].hung = 1;
                    rc = cnn_set_error(
                        CNN_ERR_DEVICE, "OpenCL device %d (%s, %s): %s did not finish within %g s",
                        first[k].info.index, first[k].info.name, first[k].info.platform, what, c->timeout_s);
                }
            break;
        }
#ifdef CNN__CL_HAVE_NANOSLEEP
        if (spins > 64) { /* poll busily for a moment, then leave the cores to the devices */
            struct timespec ts = {0, 200000};
            nanosleep(&ts, NULL);
        }
#endif /* (without POSIX's nanosleep it polls busily: still bounded) */
    }
    for (int k = 0; k < n; k++)
        if (ev[k]) clReleaseEvent(ev[k]);
    c->phase_t0 = cnn_wall_time();
    return rc;
}

static int cnn__cl_wait(cnn__cl *c, cnn__cl_dev *d, const char *what) {
    return cnn__cl_wait_devices(c, d, 1, what);
}
static int cnn__cl_wait_all(cnn__cl *c, const char *what) {
    return cnn__cl_wait_devices(c, c->dev, c->n, what);
}

/* After an error: let every device finish what was queued (it may still read
   the caller's batch), keeping the error's message; returns rc. */
static int cnn__cl_drain(cnn__cl *c, int rc) {
    char why[1024];
    const int hook = c->fail_after;
    snprintf(why, sizeof why, "%s", cnn_last_error());
    c->fail_after = 0;
    for (int k = 0; k < c->n; k++) (void)cnn__cl_wait(c, &c->dev[k], "draining after an error");
    for (int k = 0; k < c->n; k++) {
        cnn__cl_dev *d = &c->dev[k];
        for (int i = 0; i < d->n_events; i++) clReleaseEvent(d->events[i]);
        d->n_events = 0;
    }
    c->fail_after = hook;
    cnn_set_error(rc, "%s", why);
    return rc;
}

/* Set kernel arguments from a format ("m" buffer, "i" int, "f" float, "u" 64-bit
   unsigned) and run it over `global` work-items. */
static int cnn__cl_run(cnn__cl *c, cnn__cl_dev *d, int kernel, size_t global, const char *fmt, ...) {
    cl_kernel k = d->k[kernel];
    cl_event ev = NULL;
    cl_int e = CL_SUCCESS;
    va_list ap;
    va_start(ap, fmt);
    for (cl_uint i = 0; fmt[i] && !e; i++) {
        if (fmt[i] == 'm') { cl_mem v = va_arg(ap, cl_mem); e = clSetKernelArg(k, i, sizeof v, &v); }
        else if (fmt[i] == 'i') { cl_int v = va_arg(ap, int); e = clSetKernelArg(k, i, sizeof v, &v);
        } else if (fmt[i] == 'f') {
            cl_float v = (cl_float)va_arg(ap, double);
            e = clSetKernelArg(k, i, sizeof v, &v);
        } else {
            cl_ulong v = va_arg(ap, unsigned long long);
            e = clSetKernelArg(k, i, sizeof v, &v);
        }
    }
    va_end(ap);
    if (global == 0) return CNN_OK;
    if (!e) e = cnn__cl_hook(c);
    if (!e) e = clEnqueueNDRangeKernel(d->q, k, 1, NULL, &global, NULL, 0, NULL, &ev);
    if (e) return cnn__cl_fail(d, cnn__cl_kernel_names[kernel], e);
    cnn__cl_keep(d, ev);
    return CNN_OK;
}

/* C [m][n] = alpha * op(A) op(B) + beta * C, row-major, offsets in floats. */
static int cnn__cl_gemm(cnn__cl *c, cnn__cl_dev *d, int ta, int tb, size_t M, size_t N, size_t K, cl_mem A,
                        size_t a_off, size_t lda, cl_mem B, size_t b_off, size_t ldb, float beta, cl_mem C,
                        size_t c_off, size_t ldc) {
    cl_event ev = NULL;
    CLBlastStatusCode s;
    if (M == 0 || N == 0) return CNN_OK;
    if (cnn__cl_hook(c)) return cnn__cl_fail(d, "CLBlastSgemm", CL_OUT_OF_RESOURCES);
    s = CLBlastSgemm(CLBlastLayoutRowMajor, ta ? CLBlastTransposeYes : CLBlastTransposeNo,
                     tb ? CLBlastTransposeYes : CLBlastTransposeNo, M, N, K, 1.0f, A, a_off, lda, B, b_off,
                     ldb, beta, C, c_off, ldc, &d->q, &ev);
    if (s != CLBlastSuccess) {
        d->failed = 1;
        return cnn_set_error(CNN_ERR_DEVICE,
                             "OpenCL device %d (%s, %s): CLBlastSgemm (%zu x %zu x %zu) failed with "
                             "CLBlast status %d",
                             d->info.index, d->info.name, d->info.platform, M, N, K, (int)s);
    }
    cnn__cl_keep(d, ev);
    return CNN_OK;
}

/* A non-blocking copy of n_floats between host memory and buf (to_device or back). */
static int cnn__cl_transfer(cnn__cl *c, cnn__cl_dev *d, cl_mem buf, size_t off_floats, size_t n_floats,
                            void *host, int to_device, const char *what) {
    cl_event ev = NULL;
    cl_int e = n_floats ? cnn__cl_hook(c) : CL_SUCCESS;
    if (!n_floats) return CNN_OK;
    if (!e)
        e = to_device
                ? clEnqueueWriteBuffer(d->q, buf, CL_FALSE, off_floats * 4, n_floats * 4, host, 0, NULL, &ev)
                : clEnqueueReadBuffer(d->q, buf, CL_FALSE, off_floats * 4, n_floats * 4, host, 0, NULL, &ev);
    if (e) return cnn__cl_fail(d, what, e);
    cnn__cl_keep_kind(d, ev, 1);
    return CNN_OK;
}

static int cnn__cl_write(cnn__cl *c, cnn__cl_dev *d, cl_mem buf, size_t off_floats, size_t n_floats,
                         const void *src, const char *what) {
    return cnn__cl_transfer(c, d, buf, off_floats, n_floats, (void *)(size_t)src, 1, what);
}

static int cnn__cl_read(cnn__cl *c, cnn__cl_dev *d, cl_mem buf, size_t off_floats, size_t n_floats, void *dst,
                        const char *what) {
    return cnn__cl_transfer(c, d, buf, off_floats, n_floats, dst, 0, what);
}

static int cnn__cl_zero(cnn__cl *c, cnn__cl_dev *d, cl_mem buf, size_t n_floats, const char *what) {
    const cl_float zero = 0;
    cl_event ev = NULL;
    cl_int e = n_floats ? cnn__cl_hook(c) : CL_SUCCESS;
    if (!n_floats || !buf) return CNN_OK;
    if (!e) e = clEnqueueFillBuffer(d->q, buf, &zero, sizeof zero, 0, n_floats * 4, 0, NULL, &ev);
    if (e) return cnn__cl_fail(d, what, e);
    cnn__cl_keep(d, ev);
    return CNN_OK;
}

/* A buffer of `bytes`, or an error naming it, its size and the device. */
static int cnn__cl_buffer(cnn__cl_dev *d, size_t bytes, cl_mem *out, const char *what) {
    cl_int e = CL_SUCCESS;
    if (bytes == 0) bytes = 4;
    if (d->info.max_alloc && bytes > d->info.max_alloc) {
        d->failed = 1;
        return cnn_set_error(CNN_ERR_MEMORY,
                             "OpenCL device %d (%s): %s needs %zu bytes, more than the %llu one buffer "
                             "may have (CL_DEVICE_MAX_MEM_ALLOC_SIZE): use a smaller batch",
                             d->info.index, d->info.name, what, bytes, d->info.max_alloc);
    }
    *out = clCreateBuffer(d->ctx, CL_MEM_READ_WRITE, bytes, NULL, &e);
    if (e || !*out) {
        d->failed = 1;
        return cnn_set_error(CNN_ERR_MEMORY, "OpenCL device %d (%s): cannot allocate %s (%zu bytes): %s",
                             d->info.index, d->info.name, what, bytes, cnn__cl_errname(e));
    }
    return CNN_OK;
}

static void cnn__cl_release(cl_mem *b) {
    if (*b) clReleaseMemObject(*b);
    *b = NULL;
}

static void cnn__cl_free_nodes(cnn__cl_dev *d, int n_nodes) {
    for (int i = 0; d->nodes && i < n_nodes; i++) {
        cnn__cl_node *b = &d->nodes[i];
        if (!b->shared) {
            cnn__cl_release(&b->out);
            cnn__cl_release(&b->dout);
        }
        cnn__cl_release(&b->aux);
        cnn__cl_release(&b->part);
        b->out = b->dout = NULL;
    }
    d->cap = 0;
}

/* rows of a node's per-sample output that a chunked sum runs over, per sample */
static size_t cnn__cl_rows_per_sample(const cnn_node *n) { return (size_t)n->h * n->w; }

/* The device's buffers for `cap` samples per step. */
static int cnn__cl_size_buffers(cnn__cl *c, cnn__cl_dev *d, cnn_model *m, int cap) {
    char what[CNN__NAME_MAX + 64];
    int rc = CNN_OK, widest = 1;
    if (cap <= d->cap) return CNN_OK;
    cnn__cl_free_nodes(d, m->n_nodes);
    CNN_FREE(d->part);
    d->part = NULL;
    for (int i = 0; i < m->n_nodes && !rc; i++) {
        const cnn_node *n = m->nodes[i];
        cnn__cl_node *b = &d->nodes[i];
        const size_t size = (size_t)cap * cnn__node_size(n);
        const size_t chunks = ((size_t)cap * cnn__cl_rows_per_sample(n) + CNN__CL_CHUNK - 1) / CNN__CL_CHUNK;
        b->shared = n->type == CNN__FLATTEN;
        if (n->c > widest) widest = n->c;
        if (b->shared) { /* Flatten is a view: the same values in the same order */
            b->out = d->nodes[n->inputs[0]].out;
            b->dout = d->nodes[n->inputs[0]].dout;
            continue;
        }
        snprintf(what, sizeof what, "the output of '%s' (%d samples)", n->name, cap);
        rc = cnn__cl_buffer(d, size * 4, &b->out, what);
        if (!rc && n->type != CNN__INPUT) {
            snprintf(what, sizeof what, "the gradient of '%s' (%d samples)", n->name, cap);
            rc = cnn__cl_buffer(d, size * 4, &b->dout, what);
        }
        if (!rc && n->type == CNN__CONV2D) {
            const cnn_node *in = cnn__in(n, 0);
            snprintf(what, sizeof what, "the im2col rows of '%s' (%d samples)", n->name, cap);
            rc = cnn__cl_buffer(d, (size_t)cap * n->h * n->w * (size_t)n->kh * n->kw * in->c * 4, &b->aux,
                                what);
        }
        if (!rc && n->type == CNN__MAX_POOL) {
            snprintf(what, sizeof what, "the maxima of '%s' (%d samples)", n->name, cap);
            rc = cnn__cl_buffer(d, size * sizeof(cl_int), &b->aux, what);
        }
        if (!rc && (n->type == CNN__CONV2D || n->type == CNN__DENSE || n->type == CNN__BATCH_NORM)) {
            snprintf(what, sizeof what, "the partial sums of '%s'", n->name);
            rc = cnn__cl_buffer(d, chunks * (size_t)n->c * 3 * 4, &b->part, what);
            if (chunks * (size_t)n->c * 3 > (size_t)c->cap_chunks_c)
                c->cap_chunks_c = (int)(chunks * (size_t)n->c * 3);
        }
    }
    if (!rc && !d->coef)
        rc = cnn__cl_buffer(d, (size_t)widest * 3 * 4, &d->coef, "the per-channel coefficients");
    if (!rc) {
        const size_t want = (size_t)cap *
                            (cnn__node_size(m->nodes[m->input]) + cnn__node_size(m->nodes[m->output]));
        float *stage = (float *)CNN_REALLOC(d->stage, want * sizeof(float));
        if (stage) d->stage = stage;
        else rc = cnn_set_error(CNN_ERR_MEMORY, "cnn_opencl: out of host memory for a batch of %d", cap);
    }
    if (!rc && !(d->part = (float *)CNN_MALLOC((size_t)c->cap_chunks_c * sizeof(float) + 4)))
        rc = cnn_set_error(CNN_ERR_MEMORY, "cnn_opencl: out of host memory for partial sums");
    if (rc) {
        cnn__cl_free_nodes(d, m->n_nodes);
        return rc;
    }
    d->cap = cap;
    return CNN_OK;
}

static void cnn__cl_dev_free(cnn__cl_dev *d, int n_nodes) {
    if (d->hung) { /* it may still write into its host buffers: leave it all as it is */
        if (!d->quiet)
            fprintf(stderr, "cnn_opencl: device %d (%s) did not finish; its buffers stay allocated\n",
                    d->info.index, d->info.name);
        memset(d, 0, sizeof *d);
        return;
    }
    for (int i = 0; i < d->n_events; i++) clReleaseEvent(d->events[i]);
    CNN_FREE(d->events);
    CNN_FREE(d->transfer);
    cnn__cl_free_nodes(d, n_nodes);
    CNN_FREE(d->nodes);
    CNN_FREE(d->part);
    CNN_FREE(d->grads_host);
    CNN_FREE(d->stage);
    cnn__cl_release(&d->params);
    cnn__cl_release(&d->grads);
    cnn__cl_release(&d->coef);
    for (int k = 0; k < CNN__KERNELS; k++)
        if (d->k[k]) clReleaseKernel(d->k[k]);
    if (d->prog) clReleaseProgram(d->prog);
    if (d->q) clReleaseCommandQueue(d->q);
    if (d->ctx) clReleaseContext(d->ctx);
    memset(d, 0, sizeof *d);
}

/* ---- the program cache (see THE KERNEL CACHE at the top) ------------------ */

static uint64_t cnn__cl_fnv(uint64_t h, const char *s) {
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
    return (h ^ 0xff) * 0x100000001b3ULL; /* a separator between the fields */
}

/* The cache file of this program on device d into path[size]; 0 when there is none. */
static int cnn__cl_cache_path(const cnn__cl_dev *d, const char *options, char *path, size_t size) {
    const char *dir = getenv("CNN_OPENCL_CACHE"), *base;
    char folder[1024];
    uint64_t h = 0xcbf29ce484222325ULL;
    if (dir && !strcmp(dir, "off")) return 0;
    if (!strcmp(d->info.platform, "Portable Computing Language")) return 0; /* PoCL caches itself */
    if (dir && *dir) snprintf(folder, sizeof folder, "%s", dir);
    else if ((base = getenv("XDG_CACHE_HOME")) && *base)
        snprintf(folder, sizeof folder, "%s/cnn_opencl", base);
    else if ((base = getenv("HOME")) && *base) snprintf(folder, sizeof folder, "%s/.cache/cnn_opencl", base);
    else return 0;
    h = cnn__cl_fnv(h, cnn__cl_source);
    h = cnn__cl_fnv(h, options);
    h = cnn__cl_fnv(h, d->info.name);
    h = cnn__cl_fnv(h, d->info.version);
    h = cnn__cl_fnv(h, d->info.driver);
    h = cnn__cl_fnv(h, d->info.platform);
    return snprintf(path, size, "%s/%016llx.bin", folder, (unsigned long long)h) < (int)size;
}

/* The cached program of device d, built, or NULL. */
static cl_program cnn__cl_cache_load(cnn__cl_dev *d, const char *path, const char *options) {
    FILE *f = fopen(path, "rb");
    unsigned char *bin = NULL;
    long len;
    cl_program p = NULL;
    cl_int e = CL_SUCCESS, status = CL_SUCCESS;
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (bin = (unsigned char *)CNN_MALLOC((size_t)len)) && fread(bin, 1, (size_t)len, f) == (size_t)len) {
        const unsigned char *b = bin;
        size_t n = (size_t)len;
        p = clCreateProgramWithBinary(d->ctx, 1, &d->id, &n, &b, &status, &e);
        if (p && (e || status || clBuildProgram(p, 1, &d->id, options, NULL, NULL) != CL_SUCCESS)) {
            clReleaseProgram(p);
            p = NULL;
        }
    }
    fclose(f);
    CNN_FREE(bin);
    return p;
}

/* Keep device d's built program under path (best effort: the cache is an aid). */
static void cnn__cl_cache_store(cnn__cl_dev *d, const char *path) {
    size_t n = 0;
    unsigned char *bin = NULL;
    char tmp[1100], folder[1024];
    FILE *f;
    if (clGetProgramInfo(d->prog, CL_PROGRAM_BINARY_SIZES, sizeof n, &n, NULL) != CL_SUCCESS || n == 0)
        return;
    if (!(bin = (unsigned char *)CNN_MALLOC(n))) return;
    if (clGetProgramInfo(d->prog, CL_PROGRAM_BINARIES, sizeof bin, &bin, NULL) != CL_SUCCESS) {
        CNN_FREE(bin);
        return;
    }
    snprintf(folder, sizeof folder, "%s", path);
    if (strrchr(folder, '/')) *strrchr(folder, '/') = 0;
#ifdef CNN__CL_HAVE_MKDIR
    { /* the folder and its parents */
        char *p = folder + 1;
        for (;; p++) {
            const char c = *p;
            if (c == '/' || c == 0) {
                *p = 0;
                mkdir(folder, 0755);
                *p = c;
            }
            if (!c) break;
        }
    }
#endif
    snprintf(tmp, sizeof tmp, "%s.%lx.%lx.tmp", path, (unsigned long)clock(), (unsigned long)(size_t)d);
    if ((f = fopen(tmp, "wb"))) {
        const int ok = fwrite(bin, 1, n, f) == n;
        if (fclose(f) == 0 && ok && rename(tmp, path) == 0) tmp[0] = 0;
        if (tmp[0]) remove(tmp);
    }
    CNN_FREE(bin);
}

/* Context, queue, program and kernels of device `index`. */
static int cnn__cl_dev_open(cnn__cl_dev *d, int index, const cnn_model *m) {
    cl_device_id ids[CNN__CL_MAX_DEVICES];
    cl_platform_id plats[CNN__CL_MAX_DEVICES];
    cnn_opencl_device_info all[CNN__CL_MAX_DEVICES];
    const char *src = cnn__cl_source, *options = "-cl-std=CL1.2"; /* never -cl-fast-relaxed-math */
    char cache[1024];
    cl_int e = CL_SUCCESS;
    int n = cnn__cl_enumerate(ids, plats, all, CNN__CL_MAX_DEVICES), has_cache;
    if (index < 0 || index >= n)
        return cnn_set_error(CNN_ERR_ARG, "cnn_opencl: device %d does not exist", index);
    d->info = all[index];
    d->id = ids[index];
    {
        cl_context_properties props[3] = {CL_CONTEXT_PLATFORM, (cl_context_properties)plats[index], 0};
        d->ctx = clCreateContext(props, 1, &d->id, NULL, NULL, &e);
    }
    if (e || !d->ctx) return cnn__cl_fail(d, "clCreateContext", e);
    d->q = clCreateCommandQueue(d->ctx, d->id, CL_QUEUE_PROFILING_ENABLE,
                                &e); /* the 1.2 call: older drivers lack
                                                                                 the 2.0 one */
    if (e || !d->q) return cnn__cl_fail(d, "clCreateCommandQueue", e);
    if (!(has_cache = cnn__cl_cache_path(d, options, cache, sizeof cache)) ||
        !(d->prog = cnn__cl_cache_load(d, cache, options))) {
        d->prog = clCreateProgramWithSource(d->ctx, 1, &src, NULL, &e);
        if (e || !d->prog) return cnn__cl_fail(d, "clCreateProgramWithSource", e);
        e = clBuildProgram(d->prog, 1, &d->id, options, NULL, NULL);
        if (e) {
            char log[2048] = "";
            clGetProgramBuildInfo(d->prog, d->id, CL_PROGRAM_BUILD_LOG, sizeof log - 1, log, NULL);
            return cnn_set_error(CNN_ERR_DEVICE,
                                 "OpenCL device %d (%s, %s): building the kernels failed (%s): %s",
                                 d->info.index, d->info.name, d->info.platform, cnn__cl_errname(e), log);
        }
        if (has_cache) cnn__cl_cache_store(d, cache);
    }
    for (int k = 0; k < CNN__KERNELS; k++) {
        d->k[k] = clCreateKernel(d->prog, cnn__cl_kernel_names[k], &e);
        if (e || !d->k[k]) return cnn__cl_fail(d, cnn__cl_kernel_names[k], e);
    }
    d->nodes = (cnn__cl_node *)CNN_MALLOC((size_t)m->n_nodes * sizeof *d->nodes);
    d->grads_host = (float *)CNN_MALLOC((m->n_params ? m->n_params : 1) * sizeof(float));
    if (!d->nodes || !d->grads_host) return cnn_set_error(CNN_ERR_MEMORY, "cnn_opencl: out of host memory");
    memset(d->nodes, 0, (size_t)m->n_nodes * sizeof *d->nodes);
    if (cnn__cl_buffer(d, m->n_params * 4, &d->params, "the parameters") ||
        cnn__cl_buffer(d, m->n_params * 4, &d->grads, "the gradients"))
        return CNN_ERR_MEMORY;
    return CNN_OK;
}

/* The start-up check: CLBlast's three products (its first call per routine
   compiles its kernels, timed here one device at a time) against the CPU. */
static int cnn__cl_dev_check(cnn__cl *c, cnn__cl_dev *d, double *seconds) {
    enum { S = 24 };
    float a[S * S], b[S * S], r[S * S], want[S * S];
    cl_mem A = NULL, Bm = NULL, C = NULL;
    const double t0 = cnn_wall_time();
    int rc = CNN_OK;
    double worst = 0;
    for (int i = 0; i < S * S; i++) {
        a[i] = (float)((i * 37 % 101) - 50) / 50.0f;
        b[i] = (float)((i * 53 % 97) - 48) / 48.0f;
    }
    rc = cnn__cl_buffer(d, sizeof a, &A, "a check matrix");
    if (!rc) rc = cnn__cl_buffer(d, sizeof b, &Bm, "a check matrix");
    if (!rc) rc = cnn__cl_buffer(d, sizeof r, &C, "a check matrix");
    if (!rc) rc = cnn__cl_write(c, d, A, 0, S * S, a, "writing a check matrix");
    if (!rc) rc = cnn__cl_write(c, d, Bm, 0, S * S, b, "writing a check matrix");
    for (int v = 0; v < 3 && !rc; v++) { /* A B, A^T B, A B^T: what the passes use */
        const int ta = v == 1, tb = v == 2;
        rc = cnn__cl_gemm(c, d, ta, tb, S, S, S, A, 0, S, Bm, 0, S, 0.0f, C, 0, S);
        if (!rc) rc = cnn__cl_read(c, d, C, 0, S * S, r, "reading a check product");
        if (!rc) rc = cnn__cl_wait(c, d, "the start-up check");
        for (int i = 0; i < S && !rc; i++)
            for (int j = 0; j < S; j++) {
                double s = 0;
                for (int k = 0; k < S; k++)
                    s += (double)(ta ? a[k * S + i] : a[i * S + k]) * (tb ? b[j * S + k] : b[k * S + j]);
                want[i * S + j] = (float)s;
                if (fabs(r[i * S + j] - s) > worst) worst = fabs(r[i * S + j] - s);
            }
    }
    cnn__cl_release(&A);
    cnn__cl_release(&Bm);
    cnn__cl_release(&C);
    for (int i = 0; i < d->n_events; i++) clReleaseEvent(d->events[i]);
    d->n_events = 0;
    if (!rc && worst > 1e-4)
        rc = cnn_set_error(CNN_ERR_DEVICE,
                           "OpenCL device %d (%s, %s) fails its start-up check: CLBlast's product is "
                           "off by %g (a bad tuning entry or driver?)",
                           d->info.index, d->info.name, d->info.platform, worst);
    *seconds = cnn_wall_time() - t0;
    (void)want;
    return rc;
}

/* ======================================================================== */
/* The split of each batch                                                  */
/* ======================================================================== */

/* Auto: fit time = a + b * samples to each device's recent steps (least
   squares when it has run at two sizes or more, else a = 0), balance, and
   try the new split when it is predicted to be 5% faster, in steps of
   batch / 16 samples. When the fit proposes nothing better (or the wall clock
   undid what it proposed), try once the fastest device alone: devices that
   share cores or memory can make any split slower than one of them. The wall
   clock judges every change (cnn__cl_judge). */
static void cnn__cl_rebalance(cnn__cl *c, int B) {
    double a[CNN__CL_MAX_DEVICES] = {0}, b[CNN__CL_MAX_DEVICES] = {0}, now = 0, then;
    int counts[CNN__CL_MAX_DEVICES] = {0}, q = B / 16 > 1 ? B / 16 : 1, given = 0, largest = 0, busy = 0,
        best = 0;
    for (int k = 0; k < c->n; k++) {
        double sn = 0, st = 0, snn = 0, snt = 0, m = c->n_obs[k] < 16 ? c->n_obs[k] : 16;
        if (m < 1 && c->counts[k] > 0) return; /* not measured yet */
        if (m < 1) { a[k] = 1e30; b[k] = 1; continue; } /* left out before it was ever measured */
        for (int i = 0; i < (int)m; i++) {
            const double n = c->obs[k][i][0], t = c->obs[k][i][1];
            sn += n; st += t; snn += n * n; snt += n * t;
        }
        b[k] = m * snn - sn * sn > 1e-9 * snn ? (m * snt - sn * st) / (m * snn - sn * sn) : st / sn;
        a[k] = (st - b[k] * sn) / m;
        if (!(b[k] > 0)) { b[k] = st / sn; a[k] = 0; }
        if (a[k] < 0) a[k] = 0;
        if (c->counts[k] > 0 && a[k] + b[k] * c->counts[k] > now) now = a[k] + b[k] * c->counts[k];
        busy += c->counts[k] > 0;
        if (a[k] + b[k] * B < a[best] + b[best] * B) best = k;
    }
    then = now;
    if (!c->model_rejected && cnn_split_balance(B, c->n, a, b, counts) >= 0) {
        for (int k = 0; k < c->n; k++) { /* whole steps of q samples */
            counts[k] = (counts[k] + q / 2) / q * q;
            given += counts[k];
            if (counts[k] > counts[largest]) largest = k;
        }
        counts[largest] += B - given;
        then = 0;
        for (int k = 0; k < c->n && counts[largest] >= 0; k++)
            if (counts[k] > 0 && a[k] + b[k] * counts[k] > then) then = a[k] + b[k] * counts[k];
    }
    c->alone = 0;
    /* nothing better from the fit: the fastest device alone? */
    if (!(then < 0.95 * now) || counts[largest] < 0) {
        if (c->alone_tried || busy < 2) {
            if (c->model_rejected) c->frozen = 1; /* nothing left to try */
            return;
        }
        for (int k = 0; k < c->n; k++) counts[k] = k == best ? B : 0;
        largest = best;
        then = a[best] + b[best] * B;
    }
    if (counts[largest] == B) c->alone = c->alone_tried = 1;
    for (int k = 0; k < c->n; k++) {
        c->before[k] = c->weights[k];
        c->weights[k] = counts[k];
    }
    c->wall_before = 0;
    for (int i = 0; i < 4; i++) c->wall_before += c->wall[(c->n_wall - 1 - i) & 7] / 4;
    c->since_change = 0;
}

/* Auto's judge: six steps after a change (its new sizes compiled), the mean
   wall time of the last four steps against the four before the change. A
   change that did not gain 2% is undone (a driver's clock can mislead the
   fit; devices can slow each other down). */
static void cnn__cl_judge(cnn__cl *c) {
    double now = 0;
    const cnn__cl_dev *lone = NULL;
    for (int i = 0; i < 4; i++) now += c->wall[(c->n_wall - 1 - i) & 7] / 4;
    for (int k = 0; k < c->n && c->alone; k++)
        if (c->weights[k] > 0) lone = &c->dev[k];
    c->since_change = -1;
    if (now < 0.98 * c->wall_before) {
        if (lone) {
            c->frozen = 1; /* one device: nothing left to balance */
            if (!c->quiet)
                fprintf(stderr,
                        "cnn_opencl: device %d (%s) alone is faster than the split (%.1f ms per step instead "
                        "of %.1f): it takes every sample\n",
                        lone->info.index, lone->info.name, now * 1e3, c->wall_before * 1e3);
        }
        return;
    }
    for (int k = 0; k < c->n; k++) c->weights[k] = c->before[k];
    if (!lone) c->model_rejected = 1;
    else if (c->model_rejected) c->frozen = 1;
    if (!c->quiet)
        fprintf(
            stderr,
            "cnn_opencl: %s gained nothing (%.1f ms per step instead of %.1f): back to the split before\n",
            lone ? "one device alone" : "the new split", now * 1e3, c->wall_before * 1e3);
}

/* This step's split of B samples, and buffers large enough for it. */
static int cnn__cl_plan(cnn__cl *c, cnn_model *m, int B) {
    int counts[CNN__CL_MAX_DEVICES], first = 0, rc;
    rc = cnn_split_batch(B, c->n, c->equal ? NULL : c->weights, counts);
    for (int k = 0; k < c->n && !rc; k++) {
        cnn__cl_dev *d = &c->dev[k];
        if (counts[k] != d->count) d->steps_at_count = 0;
        if (counts[k] == 0) d->busy_s = d->transfer_s = 0; /* idle this step */
        d->wall_s = 0;
        d->count = counts[k];
        d->first = first;
        first += counts[k];
        c->counts[k] = counts[k];
        if (d->count > 0) rc = cnn__cl_size_buffers(c, d, m, d->count);
    }
    return rc;
}

/* ======================================================================== */
/* The passes                                                               */
/* ======================================================================== */

#define CNN__CL_EACH(c, d) for (cnn__cl_dev *d = (c)->dev; d < (c)->dev + (c)->n; d++) if (d->count > 0)

/* Does layer n's output take a gradient (is there a layer before it, through Flatten's view)? */
static int cnn__cl_has_grad(const cnn_node *n) {
    while (n->type == CNN__FLATTEN) n = cnn__in(n, 0);
    return n->type != CNN__INPUT;
}

static cl_mem cnn__cl_out(cnn__cl_dev *d, const cnn_node *n) { return d->nodes[n->index].out; }
static cl_mem cnn__cl_dout(cnn__cl_dev *d, const cnn_node *n) { return d->nodes[n->index].dout; }

static int cnn__cl_copy(cnn__cl *c, cnn__cl_dev *d, cl_mem src, cl_mem dst, size_t n_floats) {
    cl_event ev = NULL;
    cl_int e = cnn__cl_hook(c);
    if (!e) e = clEnqueueCopyBuffer(d->q, src, dst, 0, 0, n_floats * 4, 0, NULL, &ev);
    if (e) return cnn__cl_fail(d, "clEnqueueCopyBuffer", e);
    cnn__cl_keep(d, ev);
    return CNN_OK;
}

/* y = act(y + bias), y [rows][cols] on device d */
static int cnn__cl_activate(cnn__cl *c, cnn__cl_dev *d, const cnn_node *n, cl_mem y, size_t rows,
                            int use_bias, size_t bias_off) {
    if (n->activation == CNN_SOFTMAX)
        return cnn__cl_run(c, d, CNN__K_SOFTMAX, rows, "mmiii", y, d->params, (int)bias_off, use_bias, n->c);
    if (n->activation == CNN_LINEAR && !use_bias) return CNN_OK;
    return cnn__cl_run(c, d, CNN__K_BIAS_ACT, rows * n->c, "mmiiiif", y, d->params, (int)bias_off, use_bias,
                       n->c, n->activation, (double)n->alpha);
}

/* dy := dy * act'(.) from the output y [rows][cols] */
static int cnn__cl_activate_grad(cnn__cl *c, cnn__cl_dev *d, const cnn_node *n, cl_mem dy, cl_mem y,
                                 size_t rows) {
    if (n->activation == CNN_SOFTMAX) return cnn__cl_run(c, d, CNN__K_SOFTMAX_GRAD, rows, "mmi", dy, y, n->c);
    if (n->activation == CNN_LINEAR) return CNN_OK;
    return cnn__cl_run(c, d, CNN__K_ACT_GRAD, rows * n->c, "mmif", dy, y, n->activation, (double)n->alpha);
}

/* Conv2D and Dense: out [rows][units] = A [rows][K] W [K][units], then bias and activation
   (A: the conv's im2col rows, or the Dense layer's input) */
static int cnn__cl_linear_forward(cnn__cl *c, cnn_node *n) {
    const cnn_node *in = cnn__in(n, 0);
    const int conv = n->type == CNN__CONV2D;
    const size_t K = conv ? (size_t)n->kh * n->kw * in->c : cnn__node_size(in), U = (size_t)n->c;
    int rc = CNN_OK;
    CNN__CL_EACH(c, d) {
        const size_t rows = (size_t)d->count * (conv ? (size_t)n->h * n->w : 1);
        cl_mem A = conv ? d->nodes[n->index].aux : cnn__cl_out(d, in);
        if (conv)
            rc = cnn__cl_run(c, d, CNN__K_IM2COL, rows * K, "mmiiiiiiiiiii", cnn__cl_out(d, in), A, in->h,
                             in->w, in->c, n->h, n->w, n->kh, n->kw, n->sh, n->sw, n->pad_top, n->pad_left);
        if (!rc)
            rc = cnn__cl_gemm(c, d, 0, 0, rows, U, K, A, 0, K, d->params, n->p_off, U, 0.0f,
                              cnn__cl_out(d, n), 0, U);
        if (!rc)
            rc = cnn__cl_activate(c, d, n, cnn__cl_out(d, n), rows, n->use_bias, n->p_off + n->kernel_count);
        if (rc) return rc;
    }
    return CNN_OK;
}

static int cnn__cl_linear_backward(cnn__cl *c, cnn_model *m, cnn_node *n, int skip_act) {
    const cnn_node *in = cnn__in(n, 0);
    const int conv = n->type == CNN__CONV2D, input_grad = cnn__cl_has_grad(in);
    const size_t K = conv ? (size_t)n->kh * n->kw * in->c : cnn__node_size(in), U = (size_t)n->c;
    int rc = CNN_OK;
    (void)m;
    CNN__CL_EACH(c, d) {
        const size_t rows = (size_t)d->count * (conv ? (size_t)n->h * n->w : 1);
        const size_t chunks = (rows + CNN__CL_CHUNK - 1) / CNN__CL_CHUNK;
        cl_mem A = conv ? d->nodes[n->index].aux : cnn__cl_out(d, in), dz = cnn__cl_dout(d, n);
        if (!skip_act) rc = cnn__cl_activate_grad(c, d, n, dz, cnn__cl_out(d, n), rows);
        if (!rc && n->trainable) { /* dW [K][U] = A^T dz, db = the column sums of dz */
            rc = cnn__cl_gemm(c, d, 1, 0, K, U, rows, A, 0, K, dz, 0, U, 0.0f, d->grads, n->p_off, U);
            if (!rc && n->use_bias)
                rc = cnn__cl_run(c, d, CNN__K_COL_PARTIALS, chunks * U, "miiim", dz, (int)rows, (int)U,
                                 CNN__CL_CHUNK, d->nodes[n->index].part);
            if (!rc && n->use_bias)
                rc = cnn__cl_run(c, d, CNN__K_COL_REDUCE, U, "miimi", d->nodes[n->index].part, (int)chunks,
                                 (int)U, d->grads, (int)(n->p_off + n->kernel_count));
        }
        if (!rc && input_grad && conv) { /* dcol = dz W^T into the im2col rows, then back onto the input */
            rc = cnn__cl_gemm(c, d, 0, 1, rows, K, U, dz, 0, U, d->params, n->p_off, U, 0.0f, A, 0, K);
            if (!rc)
                rc = cnn__cl_run(c, d, CNN__K_COL2IM, (size_t)d->count * cnn__node_size(in), "mmiiiiiiiiiii",
                                 A, cnn__cl_dout(d, in), in->h, in->w, in->c, n->h, n->w, n->kh, n->kw, n->sh,
                                 n->sw, n->pad_top, n->pad_left);
        } else if (!rc && input_grad) { /* dx += dz W^T */
            rc = cnn__cl_gemm(c, d, 0, 1, rows, K, U, dz, 0, U, d->params, n->p_off, U, 1.0f,
                              cnn__cl_dout(d, in), 0, K);
        }
        if (rc) return rc;
    }
    return CNN_OK;
}

/* BatchNormalization keeps per-channel numbers on the host in blocks of 9C
   floats: scale k and shift [2C], mean and inverse deviation [C each], the
   gradient's coefficients k1, k2, k3 [3C], gamma's and beta's gradients [C
   each]. Synchronised (the default), one block serves every device; with
   .local_batchnorm, device j has block j, from its own samples' statistics. */
static float *cnn__cl_bn_block(cnn__cl *c, const cnn_node *n, const cnn__cl_dev *d) {
    const int own = c->local_bn && cnn__bn_uses_batch(n);
    return c->coef_host[n->index] + (own ? (size_t)(d - c->dev) * 9 * n->c : 0);
}

/* Channel ch's gradient coefficients in block blk from a group's sum dy and
   sum dy (x - mean) over M values; returns gamma's gradient. */
static double cnn__cl_bn_grad_coef(float *blk, int C, int ch, double gamma, double sdy, double sdyx,
                                   double M) {
    float k[3];
    const double dgamma = cnn_bn_grad_coefficients(gamma, blk[2 * C + ch], blk[3 * C + ch], sdy, sdyx, M, k);
    blk[4 * C + ch] = k[0], blk[5 * C + ch] = k[1], blk[6 * C + ch] = k[2];
    return dgamma;
}

/* BatchNormalization forward: the whole batch's statistics from every
   device's sums (merged in device order, in double), then y = x * k + shift.
   The moving statistics always follow the whole batch's. */
static int cnn__cl_bn_forward(cnn__cl *c, cnn_model *m, cnn_node *n) {
    const cnn_node *in = cnn__in(n, 0);
    const int C = n->c, batch = cnn__bn_uses_batch(n);
    const float *gamma = m->params + n->p_off, *beta = gamma + C, *mmean = m->state + n->s_off,
                *mvar = mmean + C;
    int rc = CNN_OK;
    if (batch) {
        double t0;
        CNN__CL_EACH(c, d) {
            const size_t rows = (size_t)d->count * n->h * n->w,
                         chunks = (rows + CNN__CL_CHUNK - 1) / CNN__CL_CHUNK;
            rc = cnn__cl_run(c, d, CNN__K_BN_PARTIALS, chunks * C, "miiim", cnn__cl_out(d, in), (int)rows, C,
                             CNN__CL_CHUNK, d->nodes[n->index].part);
            if (!rc)
                rc = cnn__cl_read(c, d, d->nodes[n->index].part, 0, chunks * C * 3, d->part,
                                  "reading BatchNorm sums");
            if (rc) return rc;
        }
        if ((rc = cnn__cl_wait_all(c, "BatchNorm's batch sums"))) return rc;
        t0 = cnn_wall_time();
        for (int ch = 0; ch < C; ch++) {
            cnn_moments all = {0, 0, 0};
            float *blk = c->coef_host[n->index];
            CNN__CL_EACH(c, d) {
                const size_t rows = (size_t)d->count * n->h * n->w,
                             chunks = (rows + CNN__CL_CHUNK - 1) / CNN__CL_CHUNK;
                cnn_moments own = {0, 0, 0};
                for (size_t g = 0; g < chunks; g++) {
                    const float *p = d->part + (g * C + ch) * 3;
                    const size_t r = rows - g * CNN__CL_CHUNK < CNN__CL_CHUNK ? rows - g * CNN__CL_CHUNK
                                                                              : CNN__CL_CHUNK;
                    cnn_moments_add(&all, (double)r, p[0], p[1], p[2]);
                    if (c->local_bn) cnn_moments_add(&own, (double)r, p[0], p[1], p[2]);
                }
                if (c->local_bn) { /* this device's own statistics */
                    blk = cnn__cl_bn_block(c, n, d);
                    cnn_bn_batch_stats(&own, n->epsilon, n->momentum, blk + 2 * C + ch, blk + 3 * C + ch,
                                       NULL, NULL);
                }
            }
            {   /* the whole batch's; its moving statistics staged, applied once the step has succeeded */
                float mean_all, inv_all, *sm = c->moving + n->s_off, *sv = sm + C;
                sm[ch] = mmean[ch], sv[ch] = mvar[ch];
                cnn_bn_batch_stats(&all, n->epsilon, n->momentum, &mean_all, &inv_all,
                                   m->update_moving ? sm + ch : NULL, sv + ch);
                c->moving_staged |= m->update_moving;
                if (!c->local_bn) blk[2 * C + ch] = mean_all, blk[3 * C + ch] = inv_all;
            }
        }
        c->host_s += cnn_wall_time() - t0;
    }
    int shared_done = 0;
    CNN__CL_EACH(c, d) {
        float *k = cnn__cl_bn_block(c, n, d), *shift = k + C, *mean = k + 2 * C, *inv = k + 3 * C;
        if (k != c->coef_host[n->index] || !shared_done) /* each block once */
            for (int ch = 0; ch < C; ch++) { /* y = gamma * (x - mean) * inv + beta = x * k + shift */
                if (!batch) {
                    mean[ch] = mmean[ch];
                    inv[ch] = 1.0f / sqrtf(mvar[ch] + n->epsilon);
                }
                k[ch] = gamma[ch] * inv[ch];
                shift[ch] = beta[ch] - mean[ch] * k[ch];
            }
        shared_done = 1;
        rc = cnn__cl_write(c, d, d->coef, 0, 2 * (size_t)C, k, "writing BatchNorm coefficients");
        if (!rc)
            rc = cnn__cl_run(c, d, CNN__K_BN_APPLY, (size_t)d->count * cnn__node_size(n), "mmmi",
                             cnn__cl_out(d, in), cnn__cl_out(d, n), d->coef, C);
        if (rc) return rc;
    }
    return CNN_OK;
}

/* BatchNormalization backward: sum dy and sum dy (x - mean) over the whole
   batch (or, with .local_batchnorm, each device's own samples), gamma's and
   beta's gradients on the host, and
   dx = gamma inv / M (M dy - sum dy - xhat sum dy xhat) = k1 dy + k2 x + k3. */
static int cnn__cl_bn_backward(cnn__cl *c, cnn_model *m, cnn_node *n) {
    const cnn_node *in = cnn__in(n, 0);
    const int C = n->c;
    const float *gamma = m->params + n->p_off;
    /* grads: gamma's and beta's, added when the step succeeds */
    float *first = c->coef_host[n->index], *grads = first + 7 * C;
    int rc = CNN_OK;
    if (cnn__bn_uses_batch(n)) {
        double t0, M = 0;
        CNN__CL_EACH(c, d) {
            const size_t rows = (size_t)d->count * n->h * n->w,
                         chunks = (rows + CNN__CL_CHUNK - 1) / CNN__CL_CHUNK;
            rc = cnn__cl_write(c, d, d->coef, 0, (size_t)C, cnn__cl_bn_block(c, n, d) + 2 * C,
                               "writing BatchNorm means");
            if (!rc)
                rc = cnn__cl_run(c, d, CNN__K_BN_GRAD_PARTIALS, chunks * C, "mmmiiim", cnn__cl_dout(d, n),
                                 cnn__cl_out(d, in), d->coef, (int)rows, C, CNN__CL_CHUNK,
                                 d->nodes[n->index].part);
            if (!rc)
                rc = cnn__cl_read(c, d, d->nodes[n->index].part, 0, chunks * C * 2, d->part,
                                  "reading BatchNorm sums");
            if (rc) return rc;
            M += (double)rows;
        }
        if ((rc = cnn__cl_wait_all(c, "BatchNorm's gradient sums"))) return rc;
        t0 = cnn_wall_time();
        for (int ch = 0; ch < C; ch++) {
            double all_dy = 0, all_dyx = 0, dgamma = 0;
            CNN__CL_EACH(c, d) {
                const size_t rows = (size_t)d->count * n->h * n->w,
                             chunks = (rows + CNN__CL_CHUNK - 1) / CNN__CL_CHUNK;
                double sdy = 0, sdyx = 0;
                for (size_t q = 0; q < chunks; q++) {
                    sdy += d->part[(q * C + ch) * 2];
                    sdyx += d->part[(q * C + ch) * 2 + 1];
                }
                if (c->local_bn)
                    dgamma += cnn__cl_bn_grad_coef(cnn__cl_bn_block(c, n, d), C, ch, gamma[ch], sdy, sdyx,
                                                   (double)rows);
                all_dy += sdy;
                all_dyx += sdyx;
            }
            if (!c->local_bn) dgamma = cnn__cl_bn_grad_coef(first, C, ch, gamma[ch], all_dy, all_dyx, M);
            grads[ch] = (float)dgamma;
            grads[C + ch] = (float)all_dy;
        }
        c->host_s += cnn_wall_time() - t0;
    } else { /* moving statistics: dx = dy * k */
        for (int ch = 0; ch < C; ch++) {
            first[4 * C + ch] = first[ch];
            first[5 * C + ch] = first[6 * C + ch] = 0;
        }
    }
    if (!cnn__cl_has_grad(in)) return CNN_OK;
    CNN__CL_EACH(c, d) {
        const float *g = (cnn__bn_uses_batch(n) ? cnn__cl_bn_block(c, n, d) : first) + 4 * C;
        rc = cnn__cl_write(c, d, d->coef, 0, 3 * (size_t)C, g, "writing BatchNorm gradient coefficients");
        if (!rc)
            rc = cnn__cl_run(c, d, CNN__K_BN_GRAD_APPLY, (size_t)d->count * cnn__node_size(n), "mmmmi",
                             cnn__cl_dout(d, n), cnn__cl_out(d, in), cnn__cl_dout(d, in), d->coef, C);
        if (rc) return rc;
    }
    return CNN_OK;
}

static int cnn__cl_pool(cnn__cl *c, cnn_model *m, cnn_node *n, int backward, int skip_act) {
    const cnn_node *in = cnn__in(n, 0);
    int rc = CNN_OK;
    (void)m, (void)skip_act;
    if (backward && !cnn__cl_has_grad(in)) return CNN_OK;
    if (n->type != CNN__MAX_POOL) { /* average pooling; global: one window over the whole input */
        const int g = n->type == CNN__GLOBAL_AVG_POOL, Ho = g ? 1 : n->h, Wo = g ? 1 : n->w;
        const int kh = g ? in->h : n->kh, kw = g ? in->w : n->kw, sh = g ? 1 : n->sh, sw = g ? 1 : n->sw;
        const int pt = g ? 0 : n->pad_top, pl = g ? 0 : n->pad_left;
        CNN__CL_EACH(c, d) {
            if (backward)
                rc = cnn__cl_run(c, d, CNN__K_AVGPOOL_GRAD, (size_t)d->count * cnn__node_size(in),
                                 "mmiiiiiiiiiii", cnn__cl_dout(d, n), cnn__cl_dout(d, in), in->h, in->w,
                                 in->c, Ho, Wo, kh, kw, sh, sw, pt, pl);
            else
                rc = cnn__cl_run(c, d, CNN__K_AVGPOOL, (size_t)d->count * cnn__node_size(n), "mmiiiiiiiiiii",
                                 cnn__cl_out(d, in), cnn__cl_out(d, n), in->h, in->w, in->c, Ho, Wo, kh, kw,
                                 sh, sw, pt, pl);
            if (rc) return rc;
        }
        return CNN_OK;
    }
    CNN__CL_EACH(c, d) {
        cl_mem cell = d->nodes[n->index].aux;
        if (backward)
            rc = cnn__cl_run(c, d, CNN__K_MAXPOOL_GRAD, (size_t)d->count * cnn__node_size(in),
                             "mmmiiiiiiiiiii", cnn__cl_dout(d, n), cell, cnn__cl_dout(d, in), in->h, in->w,
                             in->c, n->h, n->w, n->kh, n->kw, n->sh, n->sw, n->pad_top, n->pad_left);
        else
            rc = cnn__cl_run(c, d, CNN__K_MAXPOOL, (size_t)d->count * cnn__node_size(n), "mmmiiiiiiiiiii",
                             cnn__cl_out(d, in), cnn__cl_out(d, n), cell, in->h, in->w, in->c, n->h, n->w,
                             n->kh, n->kw, n->sh, n->sw, n->pad_top, n->pad_left);
        if (rc) return rc;
    }
    return CNN_OK;
}

/* Dropout with cnn.h's masks (global sample index), or a copy when it is off;
   Activation as its own layer. */
static int cnn__cl_elementwise(cnn__cl *c, cnn_model *m, cnn_node *n, int backward, int skip_act) {
    const cnn_node *in = cnn__in(n, 0);
    const size_t per = cnn__node_size(n);
    const int drop = n->type == CNN__DROPOUT && m->training && !m->dropout_off && n->rate != 0.0f;
    const unsigned long long key = m->seed * 1000003ULL + (uint64_t)n->index;
    const float keep = 1.0f / (1.0f - n->rate);
    int rc = CNN_OK;
    if (backward && !cnn__cl_has_grad(in)) return CNN_OK;
    CNN__CL_EACH(c, d) {
        const size_t count = (size_t)d->count * per;
        if (drop)
            rc = cnn__cl_run(c, d, backward ? CNN__K_DROPOUT_GRAD : CNN__K_DROPOUT, count, "mmiffuui",
                             backward ? cnn__cl_dout(d, n) : cnn__cl_out(d, in),
                             backward ? cnn__cl_dout(d, in) : cnn__cl_out(d, n), (int)per, (double)n->rate,
                             (double)keep, key, (unsigned long long)m->dropout_step, d->first);
        else if (backward) {
            if (n->type == CNN__ACTIVATION && !skip_act)
                rc = cnn__cl_activate_grad(c, d, n, cnn__cl_dout(d, n), cnn__cl_out(d, n),
                                           (size_t)d->count * per / n->c);
            if (!rc) rc = cnn__cl_run(c, d, CNN__K_ADD, count, "mm", cnn__cl_dout(d, in), cnn__cl_dout(d, n));
        } else {
            rc = cnn__cl_copy(c, d, cnn__cl_out(d, in), cnn__cl_out(d, n), count);
            if (!rc && n->type == CNN__ACTIVATION)
                rc = cnn__cl_activate(c, d, n, cnn__cl_out(d, n), (size_t)d->count * per / n->c, 0, 0);
        }
        if (rc) return rc;
    }
    return CNN_OK;
}

/* Add: the sum of the inputs, each taking the whole gradient; Concatenate:
   each input's channels side by side, each taking its slice of the gradient. */
static int cnn__cl_merge(cnn__cl *c, cnn_model *m, cnn_node *n, int backward, int skip_act) {
    int rc = CNN_OK;
    (void)m, (void)skip_act;
    CNN__CL_EACH(c, d) {
        const size_t rows = (size_t)d->count * n->h * n->w;
        int c0 = 0;
        for (int i = 0; i < n->n_inputs && !rc; i++) {
            const cnn_node *in = cnn__in(n, i);
            const size_t count = rows * in->c;
            if (backward && !cnn__cl_has_grad(in)) {
            } else if (n->type == CNN__ADD && backward) {
                rc = cnn__cl_run(c, d, CNN__K_ADD, count, "mm", cnn__cl_dout(d, in), cnn__cl_dout(d, n));
            } else if (n->type == CNN__ADD) {
                rc = i == 0
                         ? cnn__cl_copy(c, d, cnn__cl_out(d, in), cnn__cl_out(d, n), count)
                         : cnn__cl_run(c, d, CNN__K_ADD, count, "mm", cnn__cl_out(d, n), cnn__cl_out(d, in));
            } else {
                rc = cnn__cl_run(c, d, backward ? CNN__K_CONCAT_GRAD : CNN__K_CONCAT, count, "mmiii",
                                 backward ? cnn__cl_dout(d, n) : cnn__cl_out(d, in),
                                 backward ? cnn__cl_dout(d, in) : cnn__cl_out(d, n), in->c, n->c, c0);
            }
            c0 += in->c;
        }
        if (rc) return rc;
    }
    return CNN_OK;
}

/* ZeroPadding2D: kh rows at the top, kw columns at the left (the output's shape gives the rest) */
static int cnn__cl_zero_padding(cnn__cl *c, cnn_model *m, cnn_node *n, int backward, int skip_act) {
    const cnn_node *in = cnn__in(n, 0);
    int rc = CNN_OK;
    (void)m, (void)skip_act;
    if (backward && !cnn__cl_has_grad(in)) return CNN_OK;
    CNN__CL_EACH(c, d) {
        if (backward)
            rc = cnn__cl_run(c, d, CNN__K_ZERO_PAD_GRAD, (size_t)d->count * cnn__node_size(in), "mmiiiiiii",
                             cnn__cl_dout(d, n), cnn__cl_dout(d, in), in->h, in->w, in->c, n->h, n->w, n->kh,
                             n->kw);
        else
            rc = cnn__cl_run(c, d, CNN__K_ZERO_PAD, (size_t)d->count * cnn__node_size(n), "mmiiiiiii",
                             cnn__cl_out(d, in), cnn__cl_out(d, n), in->h, in->w, in->c, n->h, n->w, n->kh,
                             n->kw);
        if (rc) return rc;
    }
    return CNN_OK;
}

/* UpSampling2D (nearest): kh, kw are the factors */
static int cnn__cl_up_sampling(cnn__cl *c, cnn_model *m, cnn_node *n, int backward, int skip_act) {
    const cnn_node *in = cnn__in(n, 0);
    int rc = CNN_OK;
    (void)m, (void)skip_act;
    if (backward && !cnn__cl_has_grad(in)) return CNN_OK;
    CNN__CL_EACH(c, d) {
        if (backward)
            rc = cnn__cl_run(c, d, CNN__K_UP_SAMPLE_GRAD, (size_t)d->count * cnn__node_size(in), "mmiiiii",
                             cnn__cl_dout(d, n), cnn__cl_dout(d, in), in->h, in->w, in->c, n->kh, n->kw);
        else
            rc = cnn__cl_run(c, d, CNN__K_UP_SAMPLE, (size_t)d->count * cnn__node_size(n), "mmiiiii",
                             cnn__cl_out(d, in), cnn__cl_out(d, n), in->h, in->w, in->c, n->kh, n->kw);
        if (rc) return rc;
    }
    return CNN_OK;
}

static int cnn__cl_linear(cnn__cl *c, cnn_model *m, cnn_node *n, int backward, int skip_act) {
    return backward ? cnn__cl_linear_backward(c, m, n, skip_act) : cnn__cl_linear_forward(c, n);
}

static int cnn__cl_bn(cnn__cl *c, cnn_model *m, cnn_node *n, int backward, int skip_act) {
    (void)skip_act;
    return backward ? cnn__cl_bn_backward(c, m, n) : cnn__cl_bn_forward(c, m, n);
}

/* ---- the layer kinds that run here: one row each ---------------------------- */
/* A new kind of cnn.h runs here with its kernels in cnn__cl_source, an X() for
   each in CNN__CL_KERNEL_LIST, its pass (as cnn__cl_up_sampling) and its row
   below; the start-up check then runs it against the CPU at every attach. */

/* A layer's pass on every device in use: forward, or backward (each layer adds
   its input gradients; the backward pass clears them first). skip_act: the
   layer's gradient is already its pre-activation's (the output, a fused loss). */
typedef int (*cnn__cl_pass)(cnn__cl *c, cnn_model *m, cnn_node *n, int backward, int skip_act);
typedef struct cnn__cl_kind {
    int type;          /* CNN__CONV2D, ... (cnn.h's CNN__LAYER_KINDS) */
    cnn__cl_pass pass; /* NULL: nothing to run */
} cnn__cl_kind;
static const cnn__cl_kind cnn__cl_kinds[] = {
    {CNN__INPUT, NULL},   /* its output is the batch, written by the forward pass */
    {CNN__FLATTEN, NULL}, /* a view: its buffers are its input's */
    {CNN__CONV2D, cnn__cl_linear},
    {CNN__DENSE, cnn__cl_linear},
    {CNN__BATCH_NORM, cnn__cl_bn},
    {CNN__MAX_POOL, cnn__cl_pool},
    {CNN__AVG_POOL, cnn__cl_pool},
    {CNN__GLOBAL_AVG_POOL, cnn__cl_pool},
    {CNN__DROPOUT, cnn__cl_elementwise},
    {CNN__ACTIVATION, cnn__cl_elementwise},
    {CNN__ADD, cnn__cl_merge},
    {CNN__CONCAT, cnn__cl_merge},
    {CNN__ZERO_PADDING, cnn__cl_zero_padding},
    {CNN__UP_SAMPLING, cnn__cl_up_sampling},
};

/* The row of layer kind `type`, or NULL: a kind newer than this file */
static const cnn__cl_kind *cnn__cl_kind_of(int type) {
    for (size_t i = 0; i < sizeof cnn__cl_kinds / sizeof cnn__cl_kinds[0]; i++)
        if (cnn__cl_kinds[i].type == type) return &cnn__cl_kinds[i];
    return NULL;
}

/* Layer n's pass (its kind has a row: the attach checked the model) */
static int cnn__cl_layer(cnn__cl *c, cnn_model *m, cnn_node *n, int backward, int skip_act) {
    const cnn__cl_kind *k = cnn__cl_kind_of(n->type);
    if (!k)
        return cnn_set_error(CNN_ERR_ARG, "cnn_opencl: layer '%s' (type %d) does not run on OpenCL", n->name,
                             (int)n->type);
    return k->pass ? k->pass(c, m, n, backward, skip_act) : CNN_OK;
}

static int cnn__cl_forward_pass(cnn__cl *c, cnn_model *m, const float *x, int B) {
    c->step_t0 = c->phase_t0 = cnn_wall_time();
    const cnn_node *in = m->nodes[m->input], *o = m->nodes[m->output];
    const size_t per_in = cnn__node_size(in), U = cnn__node_size(o);
    int rc = cnn__cl_plan(c, m, B);
    c->host_s = 0;
    if (!rc && m->update_moving) memcpy(c->moving, m->state, m->n_state * sizeof(float));
    c->moving_staged = 0;
    if (!rc) memcpy(c->params_stage, m->params, m->n_params * sizeof(float)); /* see cnn__cl_dev.stage */
    CNN__CL_EACH(c, d) {
        memcpy(d->stage, x + (size_t)d->first * per_in, (size_t)d->count * per_in * sizeof(float));
        if (!rc)
            rc = cnn__cl_write(c, d, d->params, 0, m->n_params, c->params_stage, "writing the parameters");
        if (!rc)
            rc = cnn__cl_write(c, d, cnn__cl_out(d, in), 0, (size_t)d->count * per_in, d->stage,
                               "writing the batch");
    }
    for (int i = 0; i < m->n_nodes && !rc; i++) rc = cnn__cl_layer(c, m, m->nodes[i], 0, 0);
    CNN__CL_EACH(c, d) {
        if (!rc)
            rc = cnn__cl_read(c, d, cnn__cl_out(d, o), 0, (size_t)d->count * U,
                              d->stage + (size_t)d->cap * per_in, "reading the output");
    }
    if (!rc) rc = cnn__cl_wait_all(c, "the forward pass");
    if (rc) return cnn__cl_drain(c, rc);
    CNN__CL_EACH(c, d)
    memcpy(o->out + (size_t)d->first * U, d->stage + (size_t)d->cap * per_in, (size_t)d->count * U * 4);
    if (!m->training) {
        CNN__CL_EACH(c, d) cnn__cl_collect_times(d);
        c->step_s = cnn_wall_time() - c->step_t0;
    }
    return CNN_OK;
}

static int cnn__cl_backward_pass(cnn__cl *c, cnn_model *m, int B, int fused) {
    const cnn_node *o = m->nodes[m->output];
    const size_t U = cnn__node_size(o);
    const float *parts[CNN__CL_MAX_DEVICES + 1];
    int rc = CNN_OK, used = 1;
    double t0;
    (void)B;
    parts[0] = m->grads; /* the host's share: regularization, BatchNorm's gamma and beta */
    CNN__CL_EACH(c, d) {
        if (!rc) rc = cnn__cl_zero(c, d, d->grads, m->n_params, "clearing the gradients");
        for (int i = 0; i < m->n_nodes && !rc; i++)
            if (!d->nodes[i].shared && m->nodes[i]->type != CNN__INPUT)
                rc = cnn__cl_zero(c, d, d->nodes[i].dout, (size_t)d->count * cnn__node_size(m->nodes[i]),
                                  "clearing a layer's gradient");
        float *dout = d->stage + (size_t)d->cap * cnn__node_size(m->nodes[m->input]);
        memcpy(dout, o->dout + (size_t)d->first * U, (size_t)d->count * U * sizeof(float));
        if (!rc) rc = cnn__cl_write(c, d, cnn__cl_dout(d, o), 0, (size_t)d->count * U, dout,
                                    "writing the loss gradient");
    }
    for (int i = m->n_nodes - 1; i > 0 && !rc; i--) /* skip_act: dout is already d loss / d pre-activation */
        rc = cnn__cl_layer(c, m, m->nodes[i], 1, i == m->output && fused);
    CNN__CL_EACH(c, d) {
        if (!rc) rc = cnn__cl_read(c, d, d->grads, 0, m->n_params, d->grads_host, "reading the gradients");
        parts[used++] = d->grads_host;
    }
    if (!rc) rc = cnn__cl_wait_all(c, "the backward pass");
    if (rc) return cnn__cl_drain(c, rc);
    CNN__CL_EACH(c, d) cnn__cl_collect_times(d);
    t0 = cnn_wall_time();
    for (int i = 0; i < m->n_nodes; i++) { /* BatchNorm's gamma and beta gradients, computed on the host */
        const cnn_node *n = m->nodes[i];
        const float *g = n->type == CNN__BATCH_NORM ? c->coef_host[i] + 4 * n->c : NULL;
        if (g && n->trainable && cnn__bn_uses_batch(n))
            for (int ch = 0; ch < n->c; ch++) {
                m->grads[n->p_off + ch] += g[3 * n->c + ch];
                m->grads[n->p_off + n->c + ch] += g[4 * n->c + ch];
            }
    }
    cnn_sum_in_order(m->grads, parts, used, m->n_params); /* then the devices', in device order, in double */
    if (c->moving_staged) memcpy(m->state, c->moving, m->n_state * sizeof(float)); /* the step succeeded */
    c->moving_staged = 0;
    c->host_s += cnn_wall_time() - t0;
    c->step_s = cnn_wall_time() - c->step_t0;
    if (c->checking) return CNN_OK;
    c->steps++;
    if (c->n < 2) return CNN_OK; /* nothing to balance */
    for (int k = 0; k < c->n && !c->fixed && !c->equal && !c->host_clock; k++)
        /* no usable device clock: time them all by the host's */
        if (c->dev[k].count > 0 && c->dev[k].busy_s < 0) {
            if (!c->quiet)
                fprintf(stderr,
                        "cnn_opencl: device %d (%s) gives no usable kernel times; the auto split times every "
                        "device by the host's clock instead\n",
                        c->dev[k].info.index, c->dev[k].info.name);
            c->host_clock = 1;
            memset(c->n_obs, 0, (size_t)c->n * sizeof(int));
        }
    if (!c->fixed && !c->equal) { /* auto: record this step, re-balance now and then */
        for (int k = 0; k < c->n; k++) {
            cnn__cl_dev *d = &c->dev[k];
            if (d->count > 0 && d->steps_at_count++ >= 2) { /* the first steps at a size compile */
                c->obs[k][c->n_obs[k] % 16][0] = d->count;
                c->obs[k][c->n_obs[k] % 16][1] = c->host_clock ? d->wall_s : d->busy_s;
                c->n_obs[k]++;
            }
        }
        c->wall[c->n_wall++ & 7] = cnn_wall_time() - c->step_t0;
        if (c->since_change >= 0 && ++c->since_change == 6) cnn__cl_judge(c);
        if (c->steps % 4 == 0 && c->n_wall >= 4 && c->since_change < 0 && !c->frozen) cnn__cl_rebalance(c, B);
    }
    return CNN_OK;
}

/* ---- the start-up check of the model's own layers ------------------------- */

/* Device d (c->dev[k], not yet in use) runs one forward and backward pass of
   the model itself on a small batch, against the CPU path: the output and
   every parameter gradient within 1e-3 (a kernel the driver gets wrong is off
   by far more). Nothing of the model changes: training mode without
   moving-statistics updates, and the gradient buffer is scratch. */
static int cnn__cl_skew_check; /* test hook: the next checks see a device output off by this much */
static int cnn__cl_check_layers(cnn__cl *c, cnn_model *m, int k) {
    enum { B = 4 };
    cnn_node *in = m->nodes[m->input], *o = m->nodes[m->output];
    const size_t per = cnn__node_size(in), U = cnn__node_size(o);
    float *x = (float *)CNN_MALLOC(B * per * sizeof(float)),
          *want = (float *)CNN_MALLOC((B * U + m->n_params) * sizeof(float));
    const int n = c->n, equal = c->equal;
    cnn__cl_dev *dev = c->dev;
    double out_err = 0, out_norm = 0, g_err = 0, g_norm = 0;
    uint64_t h = 0x9e3779b97f4a7c15ULL;
    int rc = x && want ? cnn__ensure_batch(m, B)
                       : cnn_set_error(CNN_ERR_MEMORY, "cnn_opencl: out of host memory");
    if (rc) goto done;
    for (size_t i = 0; i < B * per; i++) x[i] = (float)((h = cnn__mix64(h + i)) >> 40) * (1.0f / 16777216.0f);
    m->training = 1;
    m->update_moving = 0;
    /* the CPU's output and gradients, from the loss gradient dout = output - 1/U */
    cnn__forward(m, x, B);
    for (size_t i = 0; i < B * U; i++) want[i] = o->out[i], o->dout[i] = o->out[i] - 1.0f / (float)U;
    memset(m->grads, 0, m->n_params * sizeof(float));
    cnn__backward(m, B, 0);
    memcpy(want + B * U, m->grads, m->n_params * sizeof(float));
    /* the device's, alone, split "equal" */
    c->dev = dev + k;
    c->n = 1;
    c->equal = 1;
    c->checking = 1;
    rc = cnn__cl_forward_pass(c, m, x, B);
    if (!rc) o->out[0] += (float)cnn__cl_skew_check;
    for (size_t i = 0; i < B * U && !rc; i++) {
        out_err += ((double)o->out[i] - want[i]) * ((double)o->out[i] - want[i]);
        out_norm += (double)want[i] * want[i];
        o->dout[i] = o->out[i] - 1.0f / (float)U;
    }
    memset(m->grads, 0, m->n_params * sizeof(float));
    if (!rc) rc = cnn__cl_backward_pass(c, m, B, 0);
    for (size_t i = 0; i < m->n_params && !rc; i++) {
        const double w = want[B * U + i];
        g_err += (m->grads[i] - w) * (m->grads[i] - w);
        g_norm += w * w;
    }
    c->dev = dev;
    c->n = n;
    c->equal = equal;
    c->checking = 0;
    dev[k].count = 0; /* the first real step plans afresh */
    m->training = 0;
    memset(m->grads, 0, m->n_params * sizeof(float));
    if (!rc && !(sqrt(out_err) <= 1e-3 * sqrt(out_norm) + 1e-6 && sqrt(g_err) <= 1e-3 * sqrt(g_norm) + 1e-6))
        rc = cnn_set_error(CNN_ERR_DEVICE,
                           "OpenCL device %d (%s, %s) fails its start-up check: a pass of the model "
                           "differs from the CPU's (output rel %.2g, gradients rel %.2g)",
                           dev[k].info.index, dev[k].info.name, dev[k].info.platform,
                           sqrt(out_err / (out_norm + 1e-30)), sqrt(g_err / (g_norm + 1e-30)));
done:
    CNN_FREE(x);
    CNN_FREE(want);
    return rc;
}

/* ---- a device that fails during a step (.drop_failed) ------------------------ */

/* After error rc in a step: with .drop_failed, leave out the devices whose
   commands failed and return 1 (the caller redoes the step on the devices
   left, or on the CPU when none is); else 0 (the error stands). */
static int cnn__cl_drop_failed(cnn__cl *c, cnn_model *m, int rc) {
    char why[512];
    int kept = 0, dropped = 0;
    if (!c->drop_failed || (rc != CNN_ERR_DEVICE && rc != CNN_ERR_MEMORY)) return 0;
    for (int k = 0; k < c->n; k++) dropped += c->dev[k].failed;
    if (dropped == 0) return 0; /* not a device's failure (host memory): the error stands */
    snprintf(why, sizeof why, "%s", cnn_last_error());
    for (int k = 0; k < c->n; k++) {
        cnn__cl_dev *d = &c->dev[k];
        if (d->failed) {
            c->any_hung |= d->hung;
            if (!c->quiet)
                fprintf(stderr, "cnn_opencl: leaving device %d (%s) out after its error: %s\n", d->info.index,
                        d->info.name, why);
            cnn__cl_dev_free(d, m->n_nodes);
            continue;
        }
        if (kept != k) { /* the devices left move down, with their split state */
            c->dev[kept] = *d;
            memset(d, 0, sizeof *d);
            c->weights[kept] = c->weights[k];
            c->before[kept] = c->before[k];
            c->n_obs[kept] = c->n_obs[k];
            c->shown[kept] = -1; /* the next description is news */
            memcpy(c->obs[kept], c->obs[k], sizeof c->obs[k]);
        }
        kept++;
    }
    c->n = kept;
    if (c->fixed) { /* the weights left decide; all zero: equal */
        double total = 0;
        for (int k = 0; k < kept; k++) total += c->weights[k];
        if (!(total > 0)) c->fixed = 0, c->equal = 1;
    } else if (!c->equal) { /* auto starts again from equal, judging changes afresh */
        for (int k = 0; k < kept; k++) c->weights[k] = 1;
        c->since_change = -1;
        c->n_wall = 0;
        c->alone = c->alone_tried = c->model_rejected = c->frozen = 0;
    }
    if (!c->quiet) {
        if (kept)
            fprintf(stderr, "cnn_opencl: redoing the step on the %d device%s left\n", kept,
                    kept == 1 ? "" : "s");
        else
            fprintf(stderr,
                    "cnn_opencl: no device left: the step is redone, and training goes on, on the CPU\n");
    }
    return 1;
}

/* The backend's passes: on the devices, or on the CPU once every device has
   failed (.drop_failed). A step that loses a device is redone whole on the
   others: its forward pass again (the output, and so the loss gradient the
   host computed from it, is the same up to rounding), then its backward pass.
   The host's gradients and moving statistics change only when a step
   succeeds, so nothing of the failed attempt remains. */
static int cnn__cl_forward(cnn_model *m, const float *x, int B) {
    cnn__cl *c = (cnn__cl *)m->backend.ctx;
    int rc;
    c->x = x;
    for (;;) {
        if (c->n == 0) {
            cnn__forward(m, x, B);
            return CNN_OK;
        }
        rc = cnn__cl_forward_pass(c, m, x, B);
        if (!rc || !cnn__cl_drop_failed(c, m, rc)) return rc;
    }
}

static int cnn__cl_backward(cnn_model *m, int B, int fused) {
    cnn__cl *c = (cnn__cl *)m->backend.ctx;
    int rc;
    for (;;) {
        if (c->n == 0) {
            cnn__backward(m, B, fused);
            return CNN_OK;
        }
        rc = cnn__cl_backward_pass(c, m, B, fused);
        if (!rc || !cnn__cl_drop_failed(c, m, rc)) return rc;
        if ((rc = cnn__cl_forward(m, c->x, B))) return rc;
    }
}

/* ======================================================================== */
/* Attach, detach, queries                                                  */
/* ======================================================================== */

/* Backends alive (attached, or being attached): CLBlast's kernel cache is
   one for the process, so it is cleared only when the last one goes (a
   re-attach keeps the new devices' warm kernels; other models keep theirs). */
static int cnn__cl_alive;

static void cnn__cl_free(cnn__cl *c, cnn_model *m) {
    if (!c) return;
    cnn__cl_alive--;
    c->fail_after = 0;
    for (int k = 0; c->dev && k < c->n; k++) { /* a bounded wait: a hung device is left as it is */
        if (c->dev[k].q && !c->dev[k].hung) (void)cnn__cl_wait(c, &c->dev[k], "finishing before release");
        c->any_hung |= c->dev[k].hung;
        cnn__cl_dev_free(&c->dev[k], m->n_nodes);
    }
    if (!c->any_hung) { /* else a hung device's transfers may still read these */
        if (cnn__cl_alive == 0) CLBlastClearCache(); /* before the contexts its kernels belong to go */
        CNN_FREE(c->params_stage);
        for (int i = 0; c->coef_host && i < m->n_nodes; i++) CNN_FREE(c->coef_host[i]);
        CNN_FREE(c->coef_host);
    }
    CNN_FREE(c->dev);
    CNN_FREE(c->weights);
    CNN_FREE(c->counts);
    CNN_FREE(c->moving);
    CNN_FREE(c->obs);
    CNN_FREE(c->n_obs);
    CNN_FREE(c->before);
    CNN_FREE(c->shown);
    CNN_FREE(c);
}

static void cnn__cl_release_backend(cnn_model *m) {
    cnn__cl_free((cnn__cl *)m->backend.ctx, m);
    memset(&m->backend, 0, sizeof m->backend);
}

/* The backend's describe: each device's name, platform and share of the
   batch (of the last step; before any, as the split mode starts), when asked
   or when a share moved by more than 3 points since the last line. */
static int cnn__cl_describe(cnn_model *m, int always, char *text, size_t size) {
    cnn__cl *c = (cnn__cl *)m->backend.ctx;
    double share[CNN__CL_MAX_DEVICES], total = 0;
    int changed = always, given = 0;
    size_t len;
    if (c->n == 0) { /* every device failed (.drop_failed) */
        snprintf(text, size, "OpenCL: no device left, running on the CPU");
        changed |= c->shown[0] != -2;
        c->shown[0] = -2;
        return changed;
    }
    for (int k = 0; k < c->n; k++) given += c->counts[k];
    for (int k = 0; k < c->n; k++) total += share[k] = given ? c->counts[k] : c->equal ? 1 : c->weights[k];
    for (int k = 0; k < c->n; k++) {
        share[k] /= total;
        changed |= fabs(share[k] - c->shown[k]) > 0.03;
    }
    if (!changed) return 0;
    len = (size_t)snprintf(text, size, "OpenCL, split %s:", c->fixed ? "fixed" : c->equal ? "equal" : "auto");
    for (int k = 0; k < c->n && len < size; k++) {
        const cnn__cl_dev *d = &c->dev[k];
        c->shown[k] = share[k];
        len += (size_t)snprintf(text + len, size - len, "%s device %d %s (%s) %.0f%%", k ? "," : "",
                                d->info.index, d->info.name, d->info.platform, 100 * share[k]);
        if (given && len < size)
            len += (size_t)snprintf(text + len, size - len, " (%d of %d)", c->counts[k], given);
    }
    return 1;
}

static cnn__cl *cnn__cl_of(const cnn_model *m) {
    return m && m->backend.forward == cnn__cl_forward ? (cnn__cl *)m->backend.ctx : NULL;
}

/* Can OpenCL run model m? Every layer of a kind in cnn__cl_kinds, one input. */
static int cnn__cl_check_model(const cnn_model *m, const char *who) {
    int inputs = 0;
    if (!m) return cnn_set_error(CNN_ERR_ARG, "%s: the model is NULL", who);
    if (!m->built)
        return cnn_set_error(CNN_ERR_STATE, "%s: set the model's output first (cnn_model_set_output)", who);
    for (int i = 0; i < m->n_nodes; i++) {
        const cnn_node *nd = m->nodes[i];
        if (!cnn__cl_kind_of(nd->type)) /* a layer kind newer than this file */
            return cnn_set_error(CNN_ERR_ARG, "%s: layer '%s' (%s) does not run on OpenCL yet", who, nd->name,
                                 nd->type >= 0 && nd->type < CNN__LAYER_TYPES ? cnn__type_names[nd->type]
                                                                              : "an unknown type");
        inputs += nd->type == CNN__INPUT;
    }
    if (inputs != 1)
        return cnn_set_error(CNN_ERR_ARG, "%s: the model has %d inputs; OpenCL runs models with one", who,
                             inputs);
    return CNN_OK;
}

/* The backend's state for n devices, its host buffers and options, in *out;
   returns CNN_OK or an error. */
static int cnn__cl_new(cnn_model *m, int n, const cnn_opencl_opts *op, const char *who, cnn__cl **out) {
    cnn__cl *c = (cnn__cl *)CNN_MALLOC(sizeof *c);
    int rc;
    *out = NULL;
    if (!c) return cnn_set_error(CNN_ERR_MEMORY, "%s: out of memory", who);
    memset(c, 0, sizeof *c);
    cnn__cl_alive++;
    c->dev = (cnn__cl_dev *)CNN_MALLOC((size_t)n * sizeof *c->dev);
    c->weights = (double *)CNN_MALLOC((size_t)n * sizeof(double));
    c->counts = (int *)CNN_MALLOC((size_t)n * sizeof(int));
    c->moving = (float *)CNN_MALLOC((m->n_state ? m->n_state : 1) * sizeof(float));
    c->coef_host = (float **)CNN_MALLOC((size_t)m->n_nodes * sizeof(float *));
    c->obs = (double (*)[16][2])CNN_MALLOC((size_t)n * sizeof *c->obs);
    c->n_obs = (int *)CNN_MALLOC((size_t)n * sizeof(int));
    c->before = (double *)CNN_MALLOC((size_t)n * sizeof(double));
    c->shown = (double *)CNN_MALLOC((size_t)n * sizeof(double));
    c->params_stage = (float *)CNN_MALLOC((m->n_params ? m->n_params : 1) * sizeof(float));
    c->since_change = -1;
    /* cnn__cl_free reads it */
    if (c->coef_host) memset(c->coef_host, 0, (size_t)m->n_nodes * sizeof(float *));
    if (!c->dev || !c->weights || !c->counts || !c->moving || !c->coef_host || !c->obs || !c->n_obs ||
        !c->before || !c->shown || !c->params_stage) {
        cnn__cl_free(c, m);
        return cnn_set_error(CNN_ERR_MEMORY, "%s: out of memory", who);
    }
    memset(c->dev, 0, (size_t)n * sizeof *c->dev);
    memset(c->counts, 0, (size_t)n * sizeof(int));
    memset(c->coef_host, 0, (size_t)m->n_nodes * sizeof(float *));
    memset(c->n_obs, 0, (size_t)n * sizeof(int));
    for (int k = 0; k < n; k++) c->shown[k] = -1; /* nothing shown yet */
    for (int i = 0; i < m->n_nodes; i++)
        if (m->nodes[i]->type == CNN__BATCH_NORM &&
            !(c->coef_host[i] = (float *)CNN_MALLOC((size_t)n * m->nodes[i]->c * 9 * sizeof(float)))) {
            cnn__cl_free(c, m);
            return cnn_set_error(CNN_ERR_MEMORY, "%s: out of memory", who);
        }
    c->timeout_s = op->timeout_s > 0 ? op->timeout_s : 120;
    c->quiet = op->quiet;
    c->fail_after = op->fail_after;
    c->drop_failed = op->drop_failed;
    c->local_bn = op->local_batchnorm;
    if ((rc = cnn_split_parse(op->split ? op->split : "auto", n, &c->fixed, c->weights))) {
        cnn__cl_free(c, m);
        return rc;
    }
    c->equal = op->split && !strcmp(op->split, "equal");
    *out = c;
    return CNN_OK;
}

/* Open devices idx[n] one at a time (CLBlast compiles on first use), leaving
   out, with a message, those that fail to open or fail the start-up check;
   returns how many are kept (c->n). */
static int cnn__cl_open_devices(cnn__cl *c, cnn_model *m, const int *idx, int n) {
    int kept = 0;
    for (int k = 0; k < n; k++) {
        cnn__cl_dev *d = &c->dev[kept];
        const double t0 = cnn_wall_time();
        double secs = 0;
        int rc;
        d->quiet = c->quiet;
        rc = cnn__cl_dev_open(d, idx[k], m);
        if (!rc) rc = cnn__cl_dev_check(c, d, &secs);
        if (!rc) rc = cnn__cl_check_layers(c, m, kept);
        secs = cnn_wall_time() - t0;
        if (rc) {
            if (!c->quiet)
                fprintf(stderr, "cnn_opencl: leaving device %d out: %s\n", idx[k], cnn_last_error());
            cnn__cl_dev_free(d, m->n_nodes);
            if (c->fixed) /* its weight goes with it */
                for (int j = kept; j < n - 1; j++) c->weights[j] = c->weights[j + 1];
            continue;
        }
        if (!c->quiet)
            fprintf(stderr,
                    "cnn_opencl: device %d: %s (%s), kernels built, CLBlast warmed and checked in %.2f s\n",
                    d->info.index, d->info.name, d->info.platform, secs);
        kept++;
    }
    memset(c->counts, 0, (size_t)n * sizeof(int)); /* no step yet (the checks' do not count) */
    return c->n = kept;
}

CNN__CL_IMPL int cnn_opencl_attach_opt(cnn_model *m, const cnn_opencl_opts *o) {
    static const char who[] = "cnn_opencl_attach";
    cnn_opencl_opts op;
    int idx[CNN__CL_MAX_DEVICES], n, rc, kept;
    cnn__cl *c;
    cnn_backend b;
    if (o) op = *o;
    else memset(&op, 0, sizeof op);
    if ((rc = cnn__cl_check_model(m, who))) return rc;
    if (op.timeout_s < 0)
        return cnn_set_error(CNN_ERR_ARG, "%s: timeout_s %g is negative", who, op.timeout_s);
    if ((n = cnn_opencl_select(op.devices, idx, CNN__CL_MAX_DEVICES)) < 0) return n;
    if ((rc = cnn__cl_new(m, n, &op, who, &c))) return rc;
    if ((kept = cnn__cl_open_devices(c, m, idx, n)) == 0) {
        cnn__cl_free(c, m);
        return cnn_set_error(CNN_ERR_DEVICE, "%s: none of the %d chosen OpenCL device%s could be used (%s)",
                             who, n, n == 1 ? "" : "s", cnn_last_error());
    }
    if (c->fixed) {
        double total = 0;
        for (int k = 0; k < kept; k++) total += c->weights[k];
        if (!(total > 0)) {
            cnn__cl_free(c, m);
            return cnn_set_error(CNN_ERR_DEVICE, "%s: the devices left have weight 0 in split '%s'", who,
                                 op.split);
        }
    } else {
        for (int k = 0; k < kept; k++) c->weights[k] = 1; /* auto starts equal */
    }
    memset(&b, 0, sizeof b);
    b.name = "OpenCL";
    b.ctx = c;
    b.forward = cnn__cl_forward;
    b.backward = cnn__cl_backward;
    b.release = cnn__cl_release_backend;
    b.describe = cnn__cl_describe;
    if ((rc = cnn_model_set_backend(m, &b))) {
        cnn__cl_free(c, m);
        return rc;
    }
    if (!c->quiet) {
        fprintf(stderr, "cnn_opencl: %d device%s, split %s", kept, kept == 1 ? "" : "s",
                c->fixed ? "fixed" : c->equal ? "equal" : "auto (equal until measured)");
        for (int k = 0; k < kept && c->fixed; k++) fprintf(stderr, "%s%g", k ? ":" : " ", c->weights[k]);
        fprintf(stderr, "\n");
    }
    return CNN_OK;
}

CNN__CL_IMPL int cnn_opencl_detach(cnn_model *m) {
    if (!m) return cnn_set_error(CNN_ERR_ARG, "cnn_opencl_detach: the model is NULL");
    if (!cnn__cl_of(m)) return CNN_OK;
    return cnn_model_set_backend(m, NULL);
}

CNN__CL_IMPL int cnn_opencl_num_devices(const cnn_model *m) {
    const cnn__cl *c = cnn__cl_of(m);
    return c ? c->n : 0;
}

CNN__CL_IMPL int cnn_opencl_device(const cnn_model *m, int k, cnn_opencl_device_info *info) {
    const cnn__cl *c = cnn__cl_of(m);
    if (!c || !info || k < 0 || k >= c->n)
        return cnn_set_error(CNN_ERR_ARG, "cnn_opencl_device: no device %d on this model", k);
    *info = c->dev[k].info;
    return CNN_OK;
}

CNN__CL_IMPL int cnn_opencl_get_split(const cnn_model *m, int *counts, int max) {
    const cnn__cl *c = cnn__cl_of(m);
    if (!c) return cnn_set_error(CNN_ERR_STATE, "cnn_opencl_get_split: the model is not on OpenCL devices");
    for (int k = 0; counts && k < c->n && k < max; k++) counts[k] = c->counts[k];
    return c->n;
}

CNN__CL_IMPL int cnn_opencl_get_times(const cnn_model *m, cnn_opencl_times *t) {
    const cnn__cl *c = cnn__cl_of(m);
    if (!c) return cnn_set_error(CNN_ERR_STATE, "cnn_opencl_get_times: the model is not on OpenCL devices");
    if (!t) return cnn_set_error(CNN_ERR_ARG, "cnn_opencl_get_times: t is NULL");
    memset(t, 0, sizeof *t);
    t->n = c->n;
    t->step_s = c->step_s;
    t->reduce_s = c->host_s;
    for (int k = 0; k < c->n; k++) {
        const cnn__cl_dev *d = &c->dev[k];
        t->compute_s[k] = d->busy_s < 0 ? -1 : d->busy_s - d->transfer_s;
        t->transfer_s[k] = d->transfer_s;
    }
    return c->n;
}

#endif /* CNN_OPENCL_IMPLEMENTATION_INCLUDED */
#endif /* CNN_OPENCL_IMPLEMENTATION */

/*
------------------------------------------------------------------------------
This software is available under 2 licenses -- choose whichever you prefer.
------------------------------------------------------------------------------
ALTERNATIVE A - MIT License
Copyright (c) 2026 the cnn.h authors
Permission is hereby granted, free of charge, to any person obtaining a copy of
this software and associated documentation files (the "Software"), to deal in
the Software without restriction, including without limitation the rights to
use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies
of the Software, and to permit persons to whom the Software is furnished to do
so, subject to the following conditions:
The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.
THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
------------------------------------------------------------------------------
ALTERNATIVE B - Public Domain (www.unlicense.org)
This is free and unencumbered software released into the public domain.
Anyone is free to copy, modify, publish, use, compile, sell, or distribute this
software, either in source code form or as a compiled binary, for any purpose,
commercial or non-commercial, and by any means.
In jurisdictions that recognize copyright laws, the author or authors of this
software dedicate any and all copyright interest in the software to the public
domain. We believe that in the public domain is the ability of anyone to use
this software, create derivative works of, modify, publish, and distribute the
software, and to give the software to the public domain.
------------------------------------------------------------------------------
*/
