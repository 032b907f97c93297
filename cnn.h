/* cnn.h - v0.13 - convolutional neural networks in one C header, the Keras way.

   Build, train, evaluate and save CNNs such as the Keras CIFAR-10 tutorial network:
   a functional graph of named layers, Adam / SGD / RMSprop (with Keras' gradient
   clipping), cross-entropy and MSE losses, a Keras-style fit() with progress bar,
   History and callbacks (BackupAndRestore among them: a killed run resumes exactly),
   and a documented binary model format.

   USAGE
     In exactly one C or C++ file:
         #define CNN_IMPLEMENTATION
         #include "cnn.h"
     Everywhere else just #include "cnn.h".

     Needs C99 (C11's _Thread_local is used for the error message when available;
     gcc/clang's __thread otherwise) or C++. Link with -lm. Add -fopenmp to train on
     all cores; without it everything runs on one thread.

   EXAMPLE (the tutorial's build_network)

         cnn_model *m = cnn_model_new();
         cnn_node *x = cnn_input(m, 32, 32, 3, "input");
         x = cnn_conv2d(m, x, .filters = 64, .kernel_size = {3, 3},
                        .activation = CNN_RELU, .name = "conv_1");
         x = cnn_batch_norm(m, x, .name = "batch_norm_1");
         x = cnn_max_pool2d(m, x, .pool_size = {2, 2}, .name = "pool_1");
         x = cnn_conv2d(m, x, .filters = 32, .kernel_size = {3, 3},
                        .activation = CNN_RELU, .name = "conv_2");
         x = cnn_batch_norm(m, x, .name = "batch_norm_2");
         x = cnn_max_pool2d(m, x, .pool_size = {2, 2}, .name = "pool_2");
         x = cnn_flatten(m, x, .name = "flatten");
         x = cnn_dense(m, x, .units = 512, .activation = CNN_RELU, .name = "fc1");
         x = cnn_dropout(m, x, .rate = 0.2f, .name = "dropout1");
         x = cnn_dense(m, x, .units = 256, .activation = CNN_RELU, .name = "fc2");
         x = cnn_dropout(m, x, .rate = 0.2f, .name = "dropout2");
         x = cnn_dense(m, x, .units = 10, .activation = CNN_SOFTMAX, .name = "softmax");
         cnn_model_set_output(m, x);
         cnn_compile(m, .optimizer = cnn_adam(), .loss = CNN_CATEGORICAL_CROSSENTROPY,
                     .metrics = CNN_ACCURACY);
         cnn_model_set_rescale(m, 1.0f / 255);        // inputs are uint8 images
         cnn_summary(m, stdout);

         cnn_dataset *train = cnn_load_cifar10("cifar-10-batches-bin", 1);
         cnn_history *h = cnn_fit(m, train, .batch_size = 32, .epochs = 10,
                                  .validation_split = 0.1f, .verbose = 1);
         if (!h) fprintf(stderr, "%s\n", cnn_last_error());
         cnn_save(m, "model.cnn");

   OPTIONS STRUCTS AND KEYWORD-STYLE CALLS
     Every constructor with options takes a struct whose zero value is the Keras
     default. In C the lower-case macros (cnn_conv2d, cnn_fit, cnn_adam, ...) wrap
     their trailing arguments in a compound literal, so calls read like Keras
     keyword arguments. C++ (and anyone who prefers) fills the struct and calls the
     function named with an _opt suffix: cnn_conv2d_opt(m, x, &opts).
     One deviation from "zero means Keras": cnn_fit_opts.verbose is 0 = silent,
     because 0 is a value users ask for; pass .verbose = 1 for the progress bar.

   ERRORS
     Functions return a negative cnn_status or NULL on error; cnn_last_error() then
     returns a sentence naming the layer, argument or file at fault (per thread).
     User errors never abort.

   CONFIGURATION MACROS (define before including the implementation)
     CNN_STATIC         every function static (private copy in one translation unit)
     CNN_MALLOC(sz), CNN_REALLOC(p,sz), CNN_FREE(p)   allocator (default libc)
     CNN_ASSERT(x)      internal invariant check (default assert)
     CNN_MEMORY_LIMIT   bytes a size read from a file may claim (default 4 GiB; see
                        cnn_set_memory_limit)
     CNN_NO_SIGINT      do not catch Ctrl-C during cnn_fit
     CNN_NO_FUSION      the fast path runs every layer on its own (see cnn__fusion)
     CNN_NO_AVX512, CNN_NO_AVX2, CNN_NO_NEON   leave those kernels out (cnn_set_kernels)
     CNN_NO_HUGEPAGES   on Linux (x86-64, AArch64), buffers of 4 MiB and more are not
                        advised into 2 MiB pages (with the default allocator they are:
                        see cnn__calloc)
     CNN_REFERENCE      models run on the reference path by default: every layer as
                        plain loops over its shapes, no fused layers (slow; to read,
                        and to check the fast path against; cnn_set_reference switches it)

   THREADS AND DETERMINISM
     With OpenMP the kernels use omp_get_max_threads() threads (OMP_NUM_THREADS, or
     cnn_set_num_threads). One seed (cnn_model_set_seed) drives initialisation,
     shuffling and dropout; the same seed and thread count give bit-identical runs.
     Dropout masks depend on the seed, the optimizer step and the sample position, never on
     thread scheduling. Global state is four things: the error message (per
     thread), the kernel path (cnn_set_kernels), the memory limit for sizes read
     from files (cnn_set_memory_limit) and, during cnn_fit only, a SIGINT
     handler that makes Ctrl-C stop after the current batch; fit restores the
     previous handler when it returns, and CNN_NO_SIGINT leaves Ctrl-C alone.
     Thread safety: separate models may be built, trained, saved and used in
     separate threads at once (tests/test_threads.c runs two fits at once under
     ThreadSanitizer); fits running at once share the SIGINT handler (Ctrl-C
     stops all of them; the last to end restores the previous handler). One
     model is not to be used by two threads at once. cnn_set_kernels,
     cnn_set_num_threads and cnn_set_memory_limit are process-wide settings: call
     them before starting threads. cnn_last_error is per thread.
     Every long sum (BatchNorm statistics, bias and kernel gradients) is cut into
     fixed runs of rows, so the results are also the same for any thread count;
     they are the same run to run for a kernel path (two paths agree to rounding).

   SPEED
     Convolutions and Dense layers are GEMMs on one register-blocked FMA kernel
     (8x32 tiles in AVX-512 intrinsics, 6x16 in AVX2 and NEON, 4x16 in portable C
     that compilers vectorize); bias and ReLU ride along in its stores. The kernels of each
     instruction set sit in one section, reached through one table, and the best
     path the processor runs is chosen at run time, whatever the compiler flags
     (cnn_set_kernels; a plain -O2 build runs the AVX-512 or AVX2 path where the
     processor has it; GCC 6 or later, or Clang).
     A Conv2D -> BatchNormalization -> MaxPooling2D block, as in the tutorial,
     is fused: the conv's GEMM sums the batch statistics as it stores, the pool
     applies the normalization as it reads, and in the backward pass the conv
     makes BatchNorm's input gradient a slice at a time as its own weight
     gradient consumes it (a layer put between them keeps them apart; the
     results agree to rounding). The per-layer profile (cnn_set_profiling)
     shows where the time goes.

   MODEL FILE FORMAT (versions 1 and 2, little-endian)
     "CNNMODEL" magic (8 bytes), u32 version, u64 payload length, payload, u32 CRC-32
     of the payload. The payload holds: the layer graph (type, name, inputs, options,
     trainable), input preprocessing (rescale, featurewise mean/std), class names,
     compile settings (loss, metrics, optimizer and its hyper-parameters, step
     count; version 2 adds clipnorm, clipvalue and global_clipnorm as 3 floats after
     nesterov, and is written only for a model that clips, so others stay version
     1), then the parameters, the non-trainable state (BatchNorm moving
     statistics) and the optimizer slots as float32 arrays. Saving writes a
     temporary file ("<path>.tmp<pid>") beside the target, flushes it and renames
     it over the target, so a crash never leaves a half-written model at the target
     path; a later save removes the temporary files of writers that died (a live
     writer's stays). A file that passes its checksum is still checked: layers
     that imply more weights than the file holds are refused before anything is
     allocated, and every size is checked against int overflow.
     Compatibility: a new layer kind adds a type number (its place in
     CNN__LAYER_KINDS) and leaves the version alone; an older reader refuses such
     a file with "unknown layer type N". Any change to the layout itself raises
     the version, and every older version keeps loading.

   REVISION HISTORY (what changed for users; the speed work of each version is
   logged in bench/README.md, "Performance log")
     0.13 (2026-12-06) on Linux (x86-64, AArch64), buffers of 4 MiB and more
          (a batch's activations) are advised into 2 MiB pages
          (CNN_NO_HUGEPAGES leaves it out; a custom CNN_MALLOC never gets it);
          inference through a fused Conv2D -> BatchNorm -> MaxPooling2D runs a
          block of samples at a time, so the pool reads the conv's output from
          cache (see bench/README.md).
     0.12 (2026-12-06) faster training on every path (see bench/README.md):
          BatchNorm's per-channel sums with their sums in registers, a Dense
          layer's kernel fetched ahead of its first tiles, the last columns of a
          product (a softmax of 10 units) in vector tiles, training's conv
          output fetched ahead of its stores, the gradient zeroed by all
          threads. Those last columns now round as the rest of their
          path does (its fused multiply-adds or not), no longer as plain loops.
     0.11 (2026-12-05) faster AVX2 and NEON weight gradients (see bench/README.md);
          cnn_load tells running out of memory from a bad file for every part of
          the file (featurewise statistics and class names included).
     0.10 (2026-12-05) gradient clipping (cnn_optimizer's clipnorm, clipvalue,
          global_clipnorm, as Keras'), saved in model file version 2 (written only
          for a model that clips); BackupAndRestore (cnn_backup_and_restore): a
          killed fit started again ends bit-identical to one never stopped;
          TerminateOnNaN names the epoch, batch and loss; ModelCheckpoint does not
          write a model whose weights are not finite; a layer's output for a batch
          (cnn_layer_output, cnn_layer_output_training; fused layers included) and
          layers by name or index (cnn_get_layer, cnn_model_layer, cnn_node_type);
          NumPy .npy files (cnn_load_npy, cnn_load_npy_float) and float arrays as
          a batch source (cnn_float_source); the TensorBoard callback
          (cnn_tensorboard); model files whose layers' outputs exceed the memory
          limit are refused; pkg-config files (make install).
     0.9  (2026-12-05) ZeroPadding2D and UpSampling2D (nearest); the CPU kernels
          chosen at run time (cnn_set_kernels, cnn_kernels, CNN_KERNELS,
          CNN_NO_AVX512): a build without -march flags runs the AVX-512 path
          where the processor has it. The moving mean of BatchNorm moves towards
          the batch mean in double (differs from 0.8 in the last bit). Plain -O2
          builds train within a few percent of -march=native ones. Kernels,
          pool windows and strides of at most 65536; loading refuses files whose
          layers imply more weights than they hold; saving removes dead writers'
          temporary files.
     0.8  (2026-12-05) the reference path (cnn_set_reference, CNN_REFERENCE):
          every layer as plain loops, to read and to check against;
          CNN_NO_FUSION; backends (cnn_model_set_backend, used by cnn_opencl.h)
          that fit shows at verbose 1 or 2; the helpers a split batch needs
          (cnn_split_batch, cnn_split_parse, cnn_split_balance, cnn_moments_add,
          cnn_sum_in_order); CNN_ERR_DEVICE.
     0.3-0.7 (2026-11-29) faster training and prediction (see bench/README.md);
          no change to the API or the model file.
     0.2  (2026-11-29) per-layer profiling (cnn_set_profiling), cnn_dataset_split_off,
          batch sources with their own batch size, cnn_wall_time; faster kernels.
     0.1  (2026-11-28) first release: layers, losses, optimizers, fit, callbacks,
          save/load, CIFAR-10 binary and IDX loaders.

   LICENSE: see the end of this file (MIT or public domain, your choice).
*/
#ifndef CNN_H_INCLUDED
#define CNN_H_INCLUDED

#if defined(__MINGW32__) && !defined(__USE_MINGW_ANSI_STDIO)
#define __USE_MINGW_ANSI_STDIO 1 /* MinGW: C99 printf formats (%zu, %lld), where cnn.h comes first */
#endif

#define CNN_VERSION "0.13"       /* this header's version (see REVISION HISTORY) */
#define CNN_FORMAT_VERSION 2    /* the newest model file version (see MODEL FILE FORMAT) */

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef CNN_STATIC
#define CNN_DEF static
#else
#define CNN_DEF extern
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ======================================================================== */
/* Errors                                                                   */
/* ======================================================================== */

typedef enum cnn_status {
    CNN_OK = 0,
    CNN_ERR_ARG = -1,     /* a bad argument (NULL, out of range, unknown name) */
    CNN_ERR_SHAPE = -2,   /* shapes do not connect */
    CNN_ERR_IO = -3,      /* a file could not be opened, read or written */
    CNN_ERR_FORMAT = -4,  /* a file is not in the expected format */
    CNN_ERR_MEMORY = -5,  /* out of memory */
    CNN_ERR_STATE = -6,   /* the call is not valid now (not built, not compiled) */
    CNN_ERR_DEVICE = -7   /* a compute device failed (an OpenCL error, a timeout) */
} cnn_status;

/* The last error on this thread, as a sentence; "" when none. */
CNN_DEF const char *cnn_last_error(void);
/* Set the error (used by the companion headers too); returns code. */
CNN_DEF int cnn_set_error(int code, const char *fmt, ...)
#if defined(__MINGW32__)
    __attribute__((format(gnu_printf, 2, 3))) /* C99 formats: see cnn_set_error */
#elif defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Wall-clock seconds from an arbitrary origin, for timing (OpenMP's clock, or
   gettimeofday). */
CNN_DEF double cnn_wall_time(void);

/* Threads used by the kernels (OpenMP). n > 0 pins n threads; n <= 0 means
   all cores, and training then tunes the count on a busy machine (fewer
   threads when another program holds a core and that is faster; see
   cnn__thread_tuner), as it does when neither this nor OMP_NUM_THREADS is
   set. Results never depend on the thread count. */
CNN_DEF void cnn_set_num_threads(int n);
/* the threads the kernels use now (the tuned count during training) */
CNN_DEF int cnn_get_num_threads(void);

/* The CPU kernels' instruction-set path, process-wide: "avx512", "avx2" (with
   FMA), "neon" (AArch64) or "portable" (plain C the compiler vectorises). By default the best
   one this processor runs, chosen at run time whatever the compiler flags; the
   environment variable CNN_KERNELS or this call pins one (NULL or "auto": the
   best again). An unknown name, or one this processor or build cannot run, is
   CNN_ERR_ARG and changes nothing. Call it between steps. Results are
   bit-identical run to run within a path; two paths agree to rounding.
   CNN_NO_AVX512, CNN_NO_AVX2 and CNN_NO_NEON leave those paths out of the build. */
CNN_DEF int cnn_set_kernels(const char *name);
/* the path in use, e.g. "avx512" */
CNN_DEF const char *cnn_kernels(void);

/* The memory limit for sizes read from files that their length does not bound:
   an image's pixels (from its header, before decoding), an image folder's
   dataset, a gzip file's inflated data. A file claiming more is refused before
   anything is allocated, naming the file, the size and the limit (a 123-byte
   GIF can claim 65535 x 65535 pixels): CNN_ERR_MEMORY, or for an image
   CNN_ERR_FORMAT as for any image that does not decode (skipped with a warning
   under skip_bad). Process-wide; set
   it before loading from several threads. 0 restores the default,
   CNN_MEMORY_LIMIT (4 GiB unless defined otherwise). */
CNN_DEF void cnn_set_memory_limit(unsigned long long bytes);
CNN_DEF unsigned long long cnn_memory_limit(void);
/* CNN_OK when `bytes` (what `what` would take) is within the limit, else
   CNN_ERR_MEMORY with a message "who: what needs N bytes, over the memory limit
   of M" (used by the companion headers too) */
CNN_DEF int cnn_check_memory(const char *who, const char *what, unsigned long long bytes);

/* ======================================================================== */
/* Datasets: uint8 images [n][h][w][c] with integer class labels           */
/* ======================================================================== */

typedef struct cnn_dataset {
    int n, h, w, c;          /* n images of h x w x c */
    unsigned char *images;   /* [n][h][w][c], 0..255 */
    int *labels;             /* [n], each in 0..num_classes-1 */
    int num_classes;
    char **class_names;      /* [num_classes] or NULL */
} cnn_dataset;

/* A dataset of n zeroed images; labels zero. NULL on bad sizes or no memory. */
CNN_DEF cnn_dataset *cnn_dataset_new(int n, int h, int w, int c, int num_classes);
CNN_DEF void cnn_dataset_free(cnn_dataset *d);
/* Copy count names (count must equal d->num_classes). */
CNN_DEF int cnn_dataset_set_class_names(cnn_dataset *d, const char *const *names, int count);
/* Shuffle images and labels together with a seeded permutation. */
CNN_DEF int cnn_dataset_shuffle(cnn_dataset *d, uint64_t seed);
/* A new dataset with images start..start+count-1 (class names copied). */
CNN_DEF cnn_dataset *cnn_dataset_subset(const cnn_dataset *d, int start, int count);
/* Split off the last `fraction` of d (as Keras validation_split): *first gets
   the first n - round(n*fraction) images, *second the rest. Both new. */
CNN_DEF int cnn_dataset_split(const cnn_dataset *d, float fraction, cnn_dataset **first,
                              cnn_dataset **second);
/* The same split without copying the larger part: the last `fraction` moves to
   a new *tail and d keeps (and shrinks to) the rest. Peak memory stays near the
   dataset's own size. */
CNN_DEF int cnn_dataset_split_off(cnn_dataset *d, float fraction, cnn_dataset **tail);

/* CIFAR-10 binary format (the official cifar-10-batches-bin folder): train != 0
   loads data_batch_1..5.bin, train == 0 loads test_batch.bin. Class names come
   from batches.meta.txt when present, else the standard ten. */
CNN_DEF cnn_dataset *cnn_load_cifar10(const char *dir, int train);
/* One CIFAR-10 binary batch file (10000 records of 1 label byte + 3072 bytes). */
CNN_DEF cnn_dataset *cnn_load_cifar10_file(const char *path);
/* Raw (uncompressed) IDX image and label files, as MNIST and Fashion-MNIST ship
   them. Gzip'd files are read by cnn_load_idx_gz in cnn_augment.h. */
CNN_DEF cnn_dataset *cnn_load_idx(const char *images_path, const char *labels_path);
/* The same from IDX bytes already in memory. */
CNN_DEF cnn_dataset *cnn_load_idx_memory(const unsigned char *images, size_t images_len,
                                         const unsigned char *labels, size_t labels_len);
/* Does this folder hold CIFAR-10 binary batches (data_batch_1.bin or test_batch.bin)? */
CNN_DEF int cnn_is_cifar10_dir(const char *dir);

/* NumPy .npy files (np.save: format versions 1.0, 2.0 and 3.0, C order only).
   Images: uint8 [n][h][w][c], or [n][h][w] (c = 1), as Keras' datasets give
   them. Labels: class indices of any integer dtype (u1 i1 u2 i2 u4 i4 u8 i8,
   either byte order), shaped [n] or [n][1] as Keras' cifar10.load_data() gives
   (num_classes = the largest label + 1); or one-hot rows [n][classes], integer
   or float, each row a single 1 among zeros (num_classes = the width). Labels
   are 0..2^24-1. Every size in the files is checked against the file and the
   memory limit; errors name the file and the field (a Fortran-order array, an
   unsupported dtype, a count that differs between images and labels).
   Compressed or not, .npz archives (np.savez) are read by cnn_load_npz in
   cnn_augment.h. */
CNN_DEF cnn_dataset *cnn_load_npy(const char *images_path, const char *labels_path);
/* The same from .npy bytes already in memory (errors name them "images" and "labels"). */
CNN_DEF cnn_dataset *cnn_load_npy_memory(const unsigned char *images, size_t images_len,
                                         const unsigned char *labels, size_t labels_len);

/* Model-ready float arrays (already scaled as the model wants them), for data
   that was preprocessed elsewhere: feed them to cnn_fit_source through
   cnn_float_source, to cnn_predict, or to cnn_train_on_batch. */
typedef struct cnn_float_arrays {
    int n, h, w, c;  /* n samples of h x w x c */
    float *x;        /* [n][h][w][c] */
    int y_width;     /* 1: one class index (or binary target) per sample; >1: one-hot or
                        dense rows; 0: no targets (y NULL) */
    float *y;        /* [n][y_width] */
    int num_classes; /* integer index labels: the largest + 1; rows: y_width; else 0 */
} cnn_float_arrays;
/* float32 or float64 x [n][h][w][c], [n][h][w] (c = 1) or [n][features]
   (h = w = 1), converted to float; y (NULL for none) [n], [n][1] or [n][k], of
   any integer or float dtype (integers are checked as labels, 0..2^24-1; floats
   must be finite). Free with cnn_float_arrays_free. */
CNN_DEF cnn_float_arrays *cnn_load_npy_float(const char *x_path, const char *y_path);
/* The same from bytes in memory (y NULL for none; errors name them "x" and "y"). */
CNN_DEF cnn_float_arrays *cnn_load_npy_float_memory(const unsigned char *x, size_t x_len,
                                                    const unsigned char *y, size_t y_len);
CNN_DEF void cnn_float_arrays_free(cnn_float_arrays *a);

/* ======================================================================== */
/* Model graph                                                              */
/* ======================================================================== */

typedef struct cnn_model cnn_model;
typedef struct cnn_node cnn_node; /* a layer's output inside a model */

typedef enum cnn_activation_type {
    CNN_LINEAR = 0, CNN_RELU, CNN_SIGMOID, CNN_TANH, CNN_SOFTMAX, CNN_LEAKY_RELU, CNN_ELU
} cnn_activation_type;

typedef enum cnn_padding { CNN_VALID = 0, CNN_SAME } cnn_padding;

typedef struct cnn_regularizer {
    float l1, l2;             /* adds l1*sum|w| + l2*sum w^2 to the loss */
} cnn_regularizer;

typedef struct cnn_conv2d_opts {
    int filters;              /* required, > 0 */
    int kernel_size[2];       /* required: {kh, kw}, each at most 65536 */
    int strides[2];           /* {0,0} = {1,1}; at most 65536 */
    cnn_padding padding;      /* CNN_VALID (default) or CNN_SAME */
    cnn_activation_type activation; /* default linear */
    float alpha;              /* leaky_relu slope (0 = 0.3) or elu alpha (0 = 1) */
    int no_bias;              /* 1 = use_bias=False */
    cnn_regularizer kernel_regularizer;
    const char *name;         /* NULL = automatic ("conv2d", "conv2d_1", ...) */
} cnn_conv2d_opts;

typedef struct cnn_dense_opts {
    int units;                /* required, > 0 */
    cnn_activation_type activation;
    float alpha;
    int no_bias;
    cnn_regularizer kernel_regularizer;
    const char *name;
} cnn_dense_opts;

typedef struct cnn_batch_norm_opts {
    float momentum;           /* 0 = 0.99 */
    float epsilon;            /* 0 = 1e-3 */
    const char *name;
} cnn_batch_norm_opts;

typedef struct cnn_pool2d_opts {
    int pool_size[2];         /* {0,0} = {2,2}; sides at most 65536; max pooling: 65536 cells */
    int strides[2];           /* {0,0} = pool_size */
    cnn_padding padding;
    const char *name;
} cnn_pool2d_opts;

typedef struct cnn_dropout_opts {
    float rate;               /* fraction dropped, 0 <= rate < 1 */
    const char *name;
} cnn_dropout_opts;

typedef struct cnn_activation_opts {
    cnn_activation_type activation;
    float alpha;
    const char *name;
} cnn_activation_opts;

typedef struct cnn_name_opts {
    const char *name;
} cnn_name_opts;

typedef struct cnn_zero_padding2d_opts {
    int padding[4];           /* rows added at the top, bottom, columns at the left, right;
                                 all 0 = 1 on each side (Keras' default, padding=1) */
    const char *name;
} cnn_zero_padding2d_opts;

typedef struct cnn_up_sampling2d_opts {
    int size[2];              /* each row repeated size[0] times, each column size[1] times;
                                 a 0 means 2 (Keras' default). Nearest neighbour (Keras' default
                                 interpolation; its bilinear option is not implemented) */
    const char *name;
} cnn_up_sampling2d_opts;

CNN_DEF cnn_model *cnn_model_new(void);
CNN_DEF void cnn_model_free(cnn_model *m);

/* Layers. Each returns the new layer's output node, or NULL (see cnn_last_error).
   A NULL input propagates: the call fails and names the layer being added. */
CNN_DEF cnn_node *cnn_input(cnn_model *m, int h, int w, int c, const char *name);
CNN_DEF cnn_node *cnn_conv2d_opt(cnn_model *m, cnn_node *x, const cnn_conv2d_opts *o);
CNN_DEF cnn_node *cnn_dense_opt(cnn_model *m, cnn_node *x, const cnn_dense_opts *o);
CNN_DEF cnn_node *cnn_batch_norm_opt(cnn_model *m, cnn_node *x, const cnn_batch_norm_opts *o);
CNN_DEF cnn_node *cnn_max_pool2d_opt(cnn_model *m, cnn_node *x, const cnn_pool2d_opts *o);
CNN_DEF cnn_node *cnn_avg_pool2d_opt(cnn_model *m, cnn_node *x, const cnn_pool2d_opts *o);
CNN_DEF cnn_node *cnn_global_avg_pool2d_opt(cnn_model *m, cnn_node *x, const cnn_name_opts *o);
CNN_DEF cnn_node *cnn_flatten_opt(cnn_model *m, cnn_node *x, const cnn_name_opts *o);
CNN_DEF cnn_node *cnn_dropout_opt(cnn_model *m, cnn_node *x, const cnn_dropout_opts *o);
/* ZeroPadding2D: zeros around each image, [h][w][c] -> [top+h+bottom][left+w+right][c] */
CNN_DEF cnn_node *cnn_zero_padding2d_opt(cnn_model *m, cnn_node *x, const cnn_zero_padding2d_opts *o);
/* UpSampling2D: each pixel repeated, [h][w][c] -> [h*size[0]][w*size[1]][c] */
CNN_DEF cnn_node *cnn_up_sampling2d_opt(cnn_model *m, cnn_node *x, const cnn_up_sampling2d_opts *o);
CNN_DEF cnn_node *cnn_activation_opt(cnn_model *m, cnn_node *x, const cnn_activation_opts *o);
/* Element-wise sum of n >= 2 nodes of equal shape. */
CNN_DEF cnn_node *cnn_add_opt(cnn_model *m, cnn_node *const *inputs, int n, const cnn_name_opts *o);
/* Concatenation along channels of n >= 2 nodes of equal height and width. */
CNN_DEF cnn_node *cnn_concatenate_opt(cnn_model *m, cnn_node *const *inputs, int n,
                                      const cnn_name_opts *o);

#ifndef __cplusplus
#define cnn_conv2d(m, x, ...) cnn_conv2d_opt((m), (x), &(cnn_conv2d_opts){__VA_ARGS__})
#define cnn_dense(m, x, ...) cnn_dense_opt((m), (x), &(cnn_dense_opts){__VA_ARGS__})
#define cnn_batch_norm(m, x, ...) cnn_batch_norm_opt((m), (x), &(cnn_batch_norm_opts){__VA_ARGS__})
#define cnn_max_pool2d(m, x, ...) cnn_max_pool2d_opt((m), (x), &(cnn_pool2d_opts){__VA_ARGS__})
#define cnn_avg_pool2d(m, x, ...) cnn_avg_pool2d_opt((m), (x), &(cnn_pool2d_opts){__VA_ARGS__})
#define cnn_global_avg_pool2d(m, x, ...) \
    cnn_global_avg_pool2d_opt((m), (x), &(cnn_name_opts){__VA_ARGS__})
#define cnn_flatten(m, x, ...) cnn_flatten_opt((m), (x), &(cnn_name_opts){__VA_ARGS__})
#define cnn_dropout(m, x, ...) cnn_dropout_opt((m), (x), &(cnn_dropout_opts){__VA_ARGS__})
#define cnn_zero_padding2d(m, x, ...) \
    cnn_zero_padding2d_opt((m), (x), &(cnn_zero_padding2d_opts){__VA_ARGS__})
#define cnn_up_sampling2d(m, x, ...) \
    cnn_up_sampling2d_opt((m), (x), &(cnn_up_sampling2d_opts){__VA_ARGS__})
#define cnn_activation(m, x, ...) cnn_activation_opt((m), (x), &(cnn_activation_opts){__VA_ARGS__})
#define cnn_add(m, inputs, n, ...) cnn_add_opt((m), (inputs), (n), &(cnn_name_opts){__VA_ARGS__})
#define cnn_concatenate(m, inputs, n, ...) \
    cnn_concatenate_opt((m), (inputs), (n), &(cnn_name_opts){__VA_ARGS__})
#endif

/* Finish the graph: the model computes `output` from its (single) input.
   Allocates and initialises the parameters (glorot_uniform, zero biases).
   Layers the output does not depend on are dropped; their cnn_node handles
   become invalid. When a layer call fails it returns NULL, and every later call
   given that NULL keeps the first failure's message, so checking this call's
   result is enough to learn what went wrong. */
CNN_DEF int cnn_model_set_output(cnn_model *m, cnn_node *output);
/* Seed for initialisation, shuffling and dropout (default 0). Set it before
   cnn_model_set_output; afterwards it re-initialises the weights. */
CNN_DEF int cnn_model_set_seed(cnn_model *m, uint64_t seed);
/* Print the Keras summary table (name, type, output shape, parameters). */
CNN_DEF int cnn_summary(const cnn_model *m, FILE *out);

/* Shape queries. */
CNN_DEF int cnn_model_input_shape(const cnn_model *m, int *h, int *w, int *c);
CNN_DEF int cnn_model_output_size(const cnn_model *m);        /* units of the output */
CNN_DEF size_t cnn_model_param_count(const cnn_model *m);     /* trainable + not */
CNN_DEF int cnn_node_shape(const cnn_node *x, int *h, int *w, int *c);
CNN_DEF const char *cnn_node_name(const cnn_node *x);

/* Input preprocessing kept in the model (and its file): inputs given as uint8
   (datasets, cnn_predict_images) become (pixel * rescale - mean[c]) / std[c].
   Default: rescale 1, no mean/std. mean/std may be NULL to clear them. */
CNN_DEF int cnn_model_set_rescale(cnn_model *m, float rescale);
CNN_DEF int cnn_model_set_featurewise(cnn_model *m, const float *mean, const float *std, int c);
CNN_DEF float cnn_model_rescale(const cnn_model *m);
/* Class names carried in the model (cnn_fit copies them from the dataset when
   the model has none). */
CNN_DEF int cnn_model_set_class_names(cnn_model *m, const char *const *names, int count);
CNN_DEF const char *cnn_model_class_name(const cnn_model *m, int k); /* NULL if none */
CNN_DEF int cnn_model_num_class_names(const cnn_model *m);

/* Per-layer weights by name. `which` is "kernel", "bias", "gamma", "beta",
   "moving_mean" or "moving_variance". cnn_layer_weights returns a pointer into
   the model (count set) or NULL; get/set copy exactly `count` floats. */
CNN_DEF float *cnn_layer_weights(cnn_model *m, const char *layer, const char *which, size_t *count);
CNN_DEF int cnn_get_weights(const cnn_model *m, const char *layer, const char *which, float *out,
                            size_t count);
CNN_DEF int cnn_set_weights(cnn_model *m, const char *layer, const char *which, const float *in,
                            size_t count);
/* Freeze (0) or unfreeze (1) a layer; a frozen BatchNormalization runs in
   inference mode, as in Keras. */
CNN_DEF int cnn_set_trainable(cnn_model *m, const char *layer, int trainable);

/* All trainable parameters in one buffer, gradients in another of the same layout. */
CNN_DEF float *cnn_model_params(cnn_model *m, size_t *count);
CNN_DEF float *cnn_model_grads(cnn_model *m, size_t *count);

/* ======================================================================== */
/* Compile: optimizer, loss, metrics                                        */
/* ======================================================================== */

typedef enum cnn_optimizer_type { CNN_ADAM = 0, CNN_SGD, CNN_RMSPROP } cnn_optimizer_type;

typedef struct cnn_optimizer {
    cnn_optimizer_type type;
    float learning_rate;      /* 0 = 0.001 (Adam, RMSprop) / 0.01 (SGD) */
    float beta_1, beta_2;     /* Adam: 0 = 0.9, 0.999 */
    float epsilon;            /* Adam, RMSprop: 0 = 1e-7 */
    float momentum;           /* SGD momentum, RMSprop momentum (default 0) */
    int nesterov;             /* SGD */
    float rho;                /* RMSprop: 0 = 0.9 */
    /* Gradient clipping, as Keras optimizers take it (0 = off; at most one of the three):
       clipnorm scales each weight tensor's gradient (a kernel, a bias) down to that L2
       norm, clipvalue clips every gradient value to [-clipvalue, clipvalue], and
       global_clipnorm scales all gradients together down to that L2 norm over all of them. */
    float clipnorm, clipvalue, global_clipnorm;
} cnn_optimizer;

#ifndef __cplusplus
#define cnn_adam(...) ((cnn_optimizer){.type = CNN_ADAM, __VA_ARGS__})
#define cnn_sgd(...) ((cnn_optimizer){.type = CNN_SGD, __VA_ARGS__})
#define cnn_rmsprop(...) ((cnn_optimizer){.type = CNN_RMSPROP, __VA_ARGS__})
#endif

typedef enum cnn_loss {
    CNN_LOSS_NONE = 0,
    CNN_CATEGORICAL_CROSSENTROPY,        /* one-hot targets [B][classes], or class indices [B] */
    CNN_SPARSE_CATEGORICAL_CROSSENTROPY, /* integer targets */
    CNN_BINARY_CROSSENTROPY,             /* targets in [0,1], sigmoid outputs */
    CNN_MSE                              /* mean squared error */
} cnn_loss;

enum { CNN_ACCURACY = 1 }; /* metrics bit set */

typedef struct cnn_compile_opts {
    cnn_optimizer optimizer;  /* zero = Adam with Keras defaults */
    cnn_loss loss;            /* required */
    int metrics;              /* CNN_ACCURACY or 0 */
} cnn_compile_opts;

CNN_DEF int cnn_compile_opt(cnn_model *m, const cnn_compile_opts *o);
#ifndef __cplusplus
#define cnn_compile(m, ...) cnn_compile_opt((m), &(cnn_compile_opts){__VA_ARGS__})
#endif
CNN_DEF float cnn_get_learning_rate(const cnn_model *m);
CNN_DEF int cnn_set_learning_rate(cnn_model *m, float lr);

/* ======================================================================== */
/* Batch sources: what fit consumes                                         */
/* ======================================================================== */

/* A stream of batches. x is filled with model-ready floats [count][h][w][c]
   (already preprocessed); y with targets [count][y_width], where y_width is
   either 1 (a class index, or a binary target) or the model's output width
   (one-hot or dense targets). `next` returns the number of samples written
   (1..max_count), 0 when the pass is over, or a negative cnn_status after
   setting the error. `reset` starts pass `epoch` (0-based) and may reshuffle.
   `samples` is the number of samples in one pass (used for steps per epoch). */
typedef struct cnn_batch_source {
    void *ctx;
    int samples;
    int h, w, c;
    int y_width;
    int (*reset)(void *ctx, int epoch);
    int (*next)(void *ctx, int max_count, float *x, float *y);
    /* Optional: preprocessing the source applies, recorded in the model by fit so
       that evaluate/predict on uint8 images repeat it (rescale 0 = unknown). */
    float rescale;
    const float *mean, *std;  /* [c] or NULL */
    int batch_size;           /* the source's own batch size, used by fit when its
                                 .batch_size is 0 (as Keras takes a generator's); 0 = none */
} cnn_batch_source;

/* A batch source over float arrays (cnn_float_arrays, from cnn_load_npy_float
   or filled in by you): a is not copied and must outlive the source. A pass is
   a->n samples, in order, or in a fresh order every pass from seed when shuffle
   is nonzero. Train with cnn_fit_source (.validation_source takes another one,
   unshuffled); free with cnn_float_source_free. NULL and an error when a has no
   samples or no targets. */
CNN_DEF cnn_batch_source *cnn_float_source(const cnn_float_arrays *a, int shuffle, uint64_t seed);
CNN_DEF void cnn_float_source_free(cnn_batch_source *src);

/* ======================================================================== */
/* Training                                                                 */
/* ======================================================================== */

/* History: every metric per epoch ("loss", "accuracy", "val_loss", "val_accuracy",
   and "lr"). */
#define CNN_HISTORY_MAX_KEYS 8
typedef struct cnn_history {
    int epochs;                           /* epochs recorded */
    int n_keys;
    char keys[CNN_HISTORY_MAX_KEYS][24];
    double *values[CNN_HISTORY_MAX_KEYS]; /* values[k][epoch] */
    int capacity;
    int stopped_early;                    /* a callback stopped training */
    int interrupted;                      /* Ctrl-C stopped training (the cut epoch is not recorded) */
} cnn_history;

/* The values of key per epoch (history->epochs of them), or NULL. */
CNN_DEF const double *cnn_history_get(const cnn_history *h, const char *key);
CNN_DEF void cnn_history_free(cnn_history *h);

typedef enum cnn_monitor_mode { CNN_MODE_AUTO = 0, CNN_MODE_MIN, CNN_MODE_MAX } cnn_monitor_mode;

typedef struct cnn_callback cnn_callback;

typedef struct cnn_checkpoint_opts {
    const char *filepath;     /* Keras template, e.g. "w.{epoch:02d}-{val_accuracy:.4f}.cnn" */
    const char *monitor;      /* NULL = "val_loss" */
    int save_best_only;
    cnn_monitor_mode mode;
    int verbose;
} cnn_checkpoint_opts;

typedef struct cnn_early_stopping_opts {
    const char *monitor;      /* NULL = "val_loss" */
    float min_delta;
    int patience;
    cnn_monitor_mode mode;
    int restore_best_weights;
    int verbose;
} cnn_early_stopping_opts;

typedef struct cnn_reduce_lr_opts {
    const char *monitor;      /* NULL = "val_loss" */
    float factor;             /* 0 = 0.1 */
    int patience;             /* 0 = 10 (Keras' default; use 1 for the shortest wait) */
    cnn_monitor_mode mode;
    float min_delta;          /* 0 = 1e-4 */
    int cooldown;
    float min_lr;
    int verbose;
} cnn_reduce_lr_opts;

typedef struct cnn_csv_logger_opts {
    const char *filename;
    char separator;           /* 0 = ',' */
    int append;
} cnn_csv_logger_opts;

/* schedule(epoch 0-based, current lr, user) -> new lr */
typedef struct cnn_lr_scheduler_opts {
    float (*schedule)(int epoch, float lr, void *user);
    void *user;
    int verbose;
} cnn_lr_scheduler_opts;

/* A user callback: return non-zero from any hook to stop training. */
typedef struct cnn_lambda_opts {
    int (*on_epoch_begin)(cnn_model *m, int epoch, void *user);
    int (*on_epoch_end)(cnn_model *m, int epoch, const cnn_history *h, void *user);
    int (*on_batch_end)(cnn_model *m, int epoch, int batch, float loss, void *user);
    void *user;
} cnn_lambda_opts;

CNN_DEF cnn_callback *cnn_model_checkpoint_opt(const cnn_checkpoint_opts *o);
CNN_DEF cnn_callback *cnn_early_stopping_opt(const cnn_early_stopping_opts *o);
CNN_DEF cnn_callback *cnn_reduce_lr_on_plateau_opt(const cnn_reduce_lr_opts *o);
CNN_DEF cnn_callback *cnn_csv_logger_opt(const cnn_csv_logger_opts *o);
CNN_DEF cnn_callback *cnn_lr_scheduler_opt(const cnn_lr_scheduler_opts *o);
CNN_DEF cnn_callback *cnn_terminate_on_nan(void);
CNN_DEF cnn_callback *cnn_lambda_callback_opt(const cnn_lambda_opts *o);

/* BackupAndRestore (Keras' name): at the end of every epoch, the whole training
   state goes to backup_dir/backup.cnn (written beside and renamed over, so a kill
   leaves the old backup or the new one): the model with its optimizer slots and
   step (which key the dropout masks), the epoch, the History, where the batch
   source stood (its pass and the batches taken from it: an augmentation flow's
   draws follow from them), the shuffle seed of cnn_fit, and the state of the
   other callbacks in the list (EarlyStopping's best and wait and its best weights,
   ReduceLROnPlateau's best, wait and cooldown, ModelCheckpoint's best). When fit
   starts with a backup in the folder, it restores all of it and goes on from the
   next epoch, so that a run killed and started again ends bit-identical to a run
   never stopped (same seed and thread count): the same weights, and the same
   History, which then holds the epochs of before the kill as well. The run must be
   the same one: the same model, callbacks (kinds, in order), batch size and steps
   per epoch, or fit refuses the backup and says why. The optimizer's settings,
   learning rate included, come from the backup (as the rate a callback lowered
   must). Give a CSVLogger .append = 1, or its file loses the epochs before the
   kill. When training ends (not when it fails or is interrupted) the backup is
   deleted, unless keep_backup; a diverged epoch (weights not finite) is not
   backed up. Backups are made at epoch ends only (Keras' save_freq="epoch"). */
typedef struct cnn_backup_opts {
    const char *backup_dir;   /* required: the folder, made (with its parents) when missing */
    int keep_backup;          /* 1 = keep it after training (Keras' delete_checkpoint=False) */
    int verbose;              /* 1 = say when it resumes */
} cnn_backup_opts;
CNN_DEF cnn_callback *cnn_backup_and_restore_opt(const cnn_backup_opts *o);

/* TensorBoard (Keras' name and options): event files that TensorBoard reads
   (`tensorboard --logdir logs`), laid out as Keras 2 lays them out:
     log_dir/train/events.out.tfevents.<time>.<host>.<pid>.<n>.v2
       "epoch_loss", "epoch_accuracy" (and "epoch_lr" when the History has lr)
       at step = epoch (0-based); with update_freq N, "batch_loss" and
       "batch_accuracy" (the epoch's running means, as the progress bar shows
       them) every N optimizer steps, at step = optimizer steps taken;
       every histogram_freq epochs a histogram of each weight tensor, tagged as
       Keras 2 tags it, "<layer>/<weight>_0/histogram" ("conv_1/kernel_0/histogram",
       "batch_norm_1/moving_mean_0/histogram"; non-finite values are left out)
     log_dir/validation/events.out.tfevents...
       the validation pass's values under the same tags ("epoch_loss", ...),
       and "evaluation_loss_vs_iterations" (and accuracy) at step = optimizer steps.
   Histograms are TensorFlow's HistogramProto with TensorFlow's default buckets
   (tf.compat.v1.summary.histogram: limits +-1e-12 * 1.1^k up to 1e20, 0 and
   +-DBL_MAX, runs of empty buckets merged). Files are flushed at every epoch
   end; a folder that cannot be made or a file that cannot be written is an
   error that fit returns, naming the path. Each fit starts new files. */
enum { CNN_UPDATE_EPOCH = 0, CNN_UPDATE_BATCH = 1 };
typedef struct cnn_tensorboard_opts {
    const char *log_dir;      /* NULL = "logs" (made, with its parents, when missing) */
    int histogram_freq;       /* weight histograms every N epochs; 0 = none (Keras' default) */
    int update_freq;          /* CNN_UPDATE_EPOCH (0): epoch scalars only; N > 0: also batch_
                                 scalars every N batches (CNN_UPDATE_BATCH = every batch) */
} cnn_tensorboard_opts;
CNN_DEF cnn_callback *cnn_tensorboard_opt(const cnn_tensorboard_opts *o);
CNN_DEF void cnn_callback_free(cnn_callback *cb);
#ifndef __cplusplus
#define cnn_model_checkpoint(...) cnn_model_checkpoint_opt(&(cnn_checkpoint_opts){__VA_ARGS__})
#define cnn_early_stopping(...) cnn_early_stopping_opt(&(cnn_early_stopping_opts){__VA_ARGS__})
#define cnn_reduce_lr_on_plateau(...) cnn_reduce_lr_on_plateau_opt(&(cnn_reduce_lr_opts){__VA_ARGS__})
#define cnn_csv_logger(...) cnn_csv_logger_opt(&(cnn_csv_logger_opts){__VA_ARGS__})
#define cnn_lr_scheduler(...) cnn_lr_scheduler_opt(&(cnn_lr_scheduler_opts){__VA_ARGS__})
#define cnn_lambda_callback(...) cnn_lambda_callback_opt(&(cnn_lambda_opts){__VA_ARGS__})
#define cnn_backup_and_restore(...) cnn_backup_and_restore_opt(&(cnn_backup_opts){__VA_ARGS__})
#define cnn_tensorboard(...) cnn_tensorboard_opt(&(cnn_tensorboard_opts){__VA_ARGS__})
#endif

typedef struct cnn_fit_opts {
    int batch_size;                 /* 0 = the batch source's own, else 32 */
    int epochs;                     /* 0 = 1 */
    int initial_epoch;
    int no_shuffle;                 /* 1 = shuffle=False */
    float validation_split;         /* last fraction of the training arrays */
    const cnn_dataset *validation_data;
    cnn_batch_source *validation_source;
    int steps_per_epoch;            /* 0 = one pass over the data */
    int validation_steps;           /* 0 = one pass */
    int verbose;                    /* 0 silent, 1 progress bar, 2 one line per epoch */
    cnn_callback **callbacks;       /* NULL-terminated array, or NULL */
    const float *class_weight;      /* [num classes] or NULL */
    FILE *out;                      /* progress output, NULL = stdout */
} cnn_fit_opts;

/* Train on a uint8 dataset (preprocessed with the model's rescale/featurewise
   statistics). Returns the History (free with cnn_history_free), or NULL. */
CNN_DEF cnn_history *cnn_fit_opt(cnn_model *m, const cnn_dataset *train, const cnn_fit_opts *o);
/* Train on a batch source. */
CNN_DEF cnn_history *cnn_fit_source_opt(cnn_model *m, cnn_batch_source *train,
                                        const cnn_fit_opts *o);
#ifndef __cplusplus
#define cnn_fit(m, data, ...) cnn_fit_opt((m), (data), &(cnn_fit_opts){__VA_ARGS__})
#define cnn_fit_source(m, src, ...) cnn_fit_source_opt((m), (src), &(cnn_fit_opts){__VA_ARGS__})
#endif

/* One optimizer step on a batch of model-ready floats x [n][h][w][c] with
   targets y [n][y_width] (see cnn_batch_source). loss/accuracy may be NULL. */
CNN_DEF int cnn_train_on_batch(cnn_model *m, const float *x, const float *y, int n, int y_width,
                               float *loss, float *accuracy);

typedef struct cnn_eval_result {
    double loss, accuracy;
} cnn_eval_result;

/* Loss and accuracy on a uint8 dataset (batch_size 0 = 32). */
CNN_DEF int cnn_evaluate(cnn_model *m, const cnn_dataset *d, int batch_size, cnn_eval_result *r);
/* Loss and accuracy over one pass of a batch source. */
CNN_DEF int cnn_evaluate_source(cnn_model *m, cnn_batch_source *src, int batch_size, int steps,
                                cnn_eval_result *r);
/* Outputs [n][output size] for model-ready floats x [n][h][w][c]. */
CNN_DEF int cnn_predict(cnn_model *m, const float *x, int n, int batch_size, float *out);
/* Outputs for uint8 images [n][h][w][c], preprocessed as the model says. */
CNN_DEF int cnn_predict_images(cnn_model *m, const unsigned char *images, int n, int batch_size,
                               float *out);
/* Convert uint8 images to model-ready floats with the model's preprocessing. */
CNN_DEF int cnn_preprocess(const cnn_model *m, const unsigned char *images, int n, float *x);

/* ======================================================================== */
/* Save / load                                                              */
/* ======================================================================== */

CNN_DEF int cnn_save(const cnn_model *m, const char *path);
CNN_DEF cnn_model *cnn_load(const char *path);
CNN_DEF cnn_model *cnn_load_memory(const void *data, size_t len);

/* ======================================================================== */
/* Debugging aids                                                           */
/* ======================================================================== */

/* Compare the analytic gradient of the loss on (x, y) with central differences
   on up to `samples` parameters per layer; returns the largest relative error
   found, or a negative value on error. Dropout is off during the check. */
CNN_DEF double cnn_gradient_check(cnn_model *m, const float *x, const float *y, int n, int y_width,
                                  int samples, double step);
/* Gradient of the loss with respect to the input x, written to dx [n][h][w][c]
   (also fills the parameter gradients). */
CNN_DEF int cnn_input_gradient(cnn_model *m, const float *x, const float *y, int n, int y_width,
                               float *dx, float *loss);

/* Looking inside a model (also one read by cnn_load, which has no node handles).
   cnn_get_layer: the layer named `name` (Keras' model.get_layer), or NULL with
   an error naming it; cnn_model_layer: layer i in graph order (0 = the input,
   see cnn_model_num_layers); cnn_node_type: a layer's Keras class name
   ("Conv2D"). The nodes serve cnn_node_shape and cnn_node_name. */
CNN_DEF cnn_node *cnn_get_layer(const cnn_model *m, const char *name);
CNN_DEF cnn_node *cnn_model_layer(const cnn_model *m, int i);
CNN_DEF const char *cnn_node_type(const cnn_node *x);
/* The output of layer `layer` for model-ready floats x [n][h][w][c], written
   to out [n][lh][lw][lc] (lh, lw, lc: cnn_node_shape of cnn_get_layer(m,
   layer); the input layer gives x back). Inference mode, as cnn_predict:
   BatchNorm uses its moving statistics, Dropout passes values through. The
   passes run on the CPU (also when a backend is installed), up to that layer
   and no further, in chunks of max(32, the largest batch run so far) samples,
   and are not counted by the profiler.
   The fast path's fused blocks (see cnn_set_reference): a BatchNormalization
   that the MaxPooling2D after it applies as it reads never stores its own
   output there, so for such a layer the call runs the reference passes, the
   plain loops: up to batch_norm_1 of the tutorial network about 0.9 ms per
   32x32x3 image on one core (AVX-512 Xeon), 7 times the fast path's 0.13 ms.
   Every other layer, a fused Conv2D included, stores its output on the fast
   path and costs what cnn_predict costs up to it. */
CNN_DEF int cnn_layer_output(cnn_model *m, const char *layer, const float *x, int n, float *out);
/* The same in training mode, as the passes behind cnn_input_gradient and
   cnn_gradient_check see it: BatchNorm normalises with the statistics of these
   n samples (one batch, never chunked; the moving statistics stay as they
   are), Dropout is off. What the loss and the gradients of a step on x are
   computed from. */
CNN_DEF int cnn_layer_output_training(cnn_model *m, const char *layer, const float *x, int n,
                                      float *out);

/* Per-layer time and arithmetic of the passes run while profiling is on. */
typedef struct cnn_layer_profile {
    const char *name, *type;           /* "conv_1", "Conv2D" */
    double forward_s, backward_s;      /* wall-clock seconds in the layer's passes */
    double forward_flop, backward_flop;/* floating-point operations (a multiply-add is 2) of
                                          the layer's products; 0 for layers without any */
    long long forward_calls, backward_calls;
    const char *kernels;               /* the CPU kernel path of the passes ("avx512", see
                                          cnn_set_kernels), or "reference" */
} cnn_layer_profile;

/* Switch profiling on (resetting the counters) or off. It costs two clock
   reads per layer and pass. */
CNN_DEF int cnn_set_profiling(cnn_model *m, int on);
CNN_DEF int cnn_model_num_layers(const cnn_model *m);
/* The counters of layer i (0 = the input layer, in graph order). */
CNN_DEF int cnn_get_profile(const cnn_model *m, int i, cnn_layer_profile *p);

/* The reference path (1) or the fast one (0, the default; define
   CNN_REFERENCE to make 1 the default): every layer's forward and backward
   pass as plain loops over its shapes, the formula next to them, no fused
   layers, no blocking (the derivations: docs/gradients.md). Layers whose fast
   pass is already a plain loop (Flatten, Dropout, Add, ...) and the optimizer
   run as on the fast path, and the softmax + crossentropy gradient is taken
   as one, as always. Slow, and there to be read and to check the fast path
   against (tests/test_reference.c). Switch between steps, not inside one. */
CNN_DEF int cnn_set_reference(cnn_model *m, int on);

/* ======================================================================== */
/* Backends, and a batch split between workers                              */
/* ======================================================================== */

/* A backend runs the forward and backward passes somewhere else than on this
   CPU (cnn_opencl.h installs one that runs them on OpenCL devices); fit,
   train_on_batch, evaluate and predict call it instead of the CPU passes. The
   host keeps the truth: parameters, optimizer slots and BatchNorm moving
   statistics live in the model, the loss and the optimizer step run here, so
   cnn_save works at any time. A backend reads the model's mode (training,
   dropout step, moving-statistics update) from the model and must be compiled
   with cnn.h's implementation (it sees the model's internals). */
typedef struct cnn_backend {
    const char *name;                        /* "OpenCL (2 devices)" */
    void *ctx;                               /* the backend's own state */
    /* the batch x [B][h][w][c] through the network: the output layer's values
       land in the model's host output buffer; BatchNorm moving statistics are
       updated in the model when the model says so. Returns CNN_OK or an error. */
    int (*forward)(cnn_model *m, const float *x, int B);
    /* from d loss / d output in the model's host output gradient (d loss / d
       pre-activation when `fused`), add the parameter gradients to the model's
       host gradient buffer */
    int (*backward)(cnn_model *m, int B, int fused);
    /* the model is freed, or another backend replaces this one */
    void (*release)(cnn_model *m);
    /* optional: one line saying where the passes run and how a batch is shared
       ("OpenCL, split auto: ..."), written to text[size]; returns 1 when it
       wrote it (`always`, or the sharing changed by more than a few points
       since the last line written), else 0. cnn_fit at verbose 1 or 2 shows it
       before the first epoch and after each epoch that changed it. */
    int (*describe)(cnn_model *m, int always, char *text, size_t size);
} cnn_backend;

/* Install a backend (copied), or NULL to run on the CPU again. */
CNN_DEF int cnn_model_set_backend(cnn_model *m, const cnn_backend *b);
/* The backend in use, or NULL on the CPU. */
CNN_DEF const cnn_backend *cnn_model_get_backend(const cnn_model *m);

/* The samples of a batch of B for each of n workers, counts[n]: with weights
   NULL, Keras' equal rule (B / n each, the last worker the remainder);
   otherwise in proportion to weights[n] (>= 0, not all 0) in whole samples,
   by largest remainders (ties to the lower index). Worker k takes the samples
   after those of workers 0..k-1. Returns CNN_OK or an argument error. */
CNN_DEF int cnn_split_batch(int B, int n, const double *weights, int *counts);
/* Parse a split: "equal", "auto", or fixed weights "3:1" (one per worker, n
   of them). *fixed is set when weights were given. */
CNN_DEF int cnn_split_parse(const char *spec, int n, int *fixed, double *weights);
/* Balance from timings: worker k takes a[k] + b[k] * samples seconds for a
   step. counts[n] for a batch of B such that all finish together as nearly
   as whole samples allow; a worker whose fixed cost a[k] exceeds the time the
   others need gets nothing. Returns the predicted step time, or < 0 on a bad
   argument. */
CNN_DEF double cnn_split_balance(int B, int n, const double *a, const double *b, int *counts);

/* Per-channel moments of rows spread over workers (for BatchNorm synchronised
   across devices): each worker sums x - shift and (x - shift)^2 about a shift
   of its own (its first row keeps float sums accurate); cnn_moments_add merges
   them exactly, in double, in the order called (Chan's parallel formula). */
typedef struct cnn_moments { double count, mean, m2; } cnn_moments;
CNN_DEF void cnn_moments_add(cnn_moments *acc, double count, double shift, double sum, double sum_sq);
/* out[i] = parts[0][i] + parts[1][i] + ... in that order, summed in double. */
CNN_DEF void cnn_sum_in_order(float *out, const float *const *parts, int n, size_t count);
/* BatchNormalization of one channel over a batch split between workers, from
   its merged moments: the mean and 1 / sqrt(variance + epsilon) to normalize
   with, and (when moving_mean is not NULL) the moving statistics moved as
   Keras does: moving = momentum * moving + (1 - momentum) * batch, with the
   unbiased (count / (count - 1)) variance. */
CNN_DEF void cnn_bn_batch_stats(const cnn_moments *acc, float epsilon, float momentum, float *mean,
                                float *inv, float *moving_mean, float *moving_var);
/* BatchNormalization's input gradient for one channel of a group of M values
   (the whole batch, or one worker's), from sum dy and sum dy * (x - mean):
   dx = k[0] * dy + k[1] * x + k[2]. Returns gamma's gradient, sum dy * xhat
   (beta's is sum dy). */
CNN_DEF double cnn_bn_grad_coefficients(double gamma, double mean, double inv, double sum_dy,
                                        double sum_dy_xc, double M, float k[3]);

#ifdef __cplusplus
}
#endif
#endif /* CNN_H_INCLUDED */

/* ######################################################################## */
/* #                          IMPLEMENTATION                              # */
/* ######################################################################## */
#ifdef CNN_IMPLEMENTATION
#ifndef CNN_IMPLEMENTATION_INCLUDED
#define CNN_IMPLEMENTATION_INCLUDED

#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h> /* the AVX-512 and AVX2 kernels (see Kernels) */
#endif
#if defined(__aarch64__) && !defined(CNN_NO_NEON)
#include <arm_neon.h> /* the NEON kernels */
#endif
#ifdef _WIN32
#include <direct.h> /* _mkdir, _rmdir: the folders of BackupAndRestore and TensorBoard */
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h> /* MoveFileExA: saving over an existing file */
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <dirent.h>
#include <sys/stat.h> /* mkdir: the folders of BackupAndRestore and TensorBoard */
#include <sys/time.h>
#include <unistd.h>
#define CNN__POSIX 1
#ifndef __cplusplus
extern int fileno(FILE *);   /* POSIX, hidden by glibc in strict C99 mode */
extern int kill(int, int);   /* the same (pid_t is an int where this is compiled) */
#endif
#endif
#ifdef _OPENMP
#include <omp.h>
#define CNN__OMP(x) _Pragma(#x)
#else
#define CNN__OMP(x) /* without OpenMP everything runs on one thread */
#endif
/* Loops with less work than this many multiply-adds run on one thread: waking
   threads costs more than it saves, and far more when the cores are busy. */
#ifndef CNN__PARALLEL_MIN
#define CNN__PARALLEL_MIN 32768
#endif
#define CNN__PARALLEL_FOR(work) \
    CNN__OMP(omp parallel for schedule(static) if((work) > CNN__PARALLEL_MIN) num_threads(cnn__team_size()))

#ifndef CNN_MALLOC
#define CNN_MALLOC(sz) malloc(sz)
#define CNN_REALLOC(p, sz) realloc((p), (sz))
#define CNN_FREE(p) free(p)
#define CNN__LIBC_MALLOC 1 /* then big buffers may ask for huge pages (see cnn__calloc) */
#endif
/* Linux's madvise, declared here because strict C99 hides it in <sys/mman.h>;
   MADV_HUGEPAGE is 14 on these architectures. CNN_NO_HUGEPAGES leaves it out. */
#if defined(CNN__LIBC_MALLOC) && !defined(CNN_NO_HUGEPAGES) && defined(__linux__) && \
    (defined(__x86_64__) || defined(__aarch64__))
#define CNN__HUGEPAGES 1
#ifdef __cplusplus
#include <sys/mman.h> /* C++ compilers define _GNU_SOURCE, which shows it */
#else
extern int madvise(void *, size_t, int);
#endif
#endif
#ifndef CNN_ASSERT
#include <assert.h>
#define CNN_ASSERT(x) assert(x)
#endif

#if defined(CNN_STATIC) && (defined(__GNUC__) || defined(__clang__))
#define CNN_IMPL static __attribute__((unused)) /* a program need not call everything */
#elif defined(CNN_STATIC)
#define CNN_IMPL static
#else
#define CNN_IMPL
#endif

#if defined(__cplusplus)
#define CNN__THREAD_LOCAL thread_local
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L && !defined(__STDC_NO_THREADS__)
#define CNN__THREAD_LOCAL _Thread_local
#elif defined(__GNUC__) || defined(__clang__)
#define CNN__THREAD_LOCAL __thread
#elif defined(_MSC_VER)
#define CNN__THREAD_LOCAL __declspec(thread)
#else
#define CNN__THREAD_LOCAL /* no thread-local storage: one error message per process */
#endif

#if defined(__GNUC__) || defined(__clang__)
#define CNN__UNROLL(n) _Pragma(CNN__STR(GCC unroll n)) /* unroll the next loop n times */
#define CNN__STR(x) #x
#define CNN__RESTRICT __restrict__
#define CNN__NOINLINE __attribute__((noinline))
#define CNN__ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define CNN__UNROLL(n)
#define CNN__RESTRICT
#define CNN__NOINLINE
#define CNN__ALWAYS_INLINE
#endif

/* ======================================================================== */
/* Errors, memory, time, threads                                            */
/* ======================================================================== */

static CNN__THREAD_LOCAL char cnn__error[512];
static CNN__THREAD_LOCAL int cnn__error_code; /* the code cnn_set_error last returned, for callers that wrap the message */

CNN_IMPL const char *cnn_last_error(void) { return cnn__error; }

#ifndef CNN_MEMORY_LIMIT
#define CNN_MEMORY_LIMIT (4ull << 30) /* 4 GiB: see cnn_set_memory_limit */
#endif
static unsigned long long cnn__memory_limit = CNN_MEMORY_LIMIT;

CNN_IMPL void cnn_set_memory_limit(unsigned long long bytes) {
    cnn__memory_limit = bytes ? bytes : (unsigned long long)CNN_MEMORY_LIMIT;
}

CNN_IMPL unsigned long long cnn_memory_limit(void) { return cnn__memory_limit; }

CNN_IMPL int cnn_check_memory(const char *who, const char *what, unsigned long long bytes) {
    if (bytes <= cnn__memory_limit) return CNN_OK;
    return cnn_set_error(CNN_ERR_MEMORY,
                         "%s: %s needs %llu bytes (%.1f MB), over the memory limit of %llu bytes "
                         "(cnn_set_memory_limit, CNN_MEMORY_LIMIT)",
                         who ? who : "cnn", what ? what : "the data", bytes, (double)bytes / 1e6,
                         cnn__memory_limit);
}

CNN_IMPL int cnn_set_error(int code, const char *fmt, ...) {
    char msg[sizeof cnn__error]; /* the arguments may include cnn_last_error() itself */
    va_list ap;
    va_start(ap, fmt);
#if defined(__MINGW32__)
    __mingw_vsnprintf(msg, sizeof msg, fmt, ap); /* C99 formats whatever __USE_MINGW_ANSI_STDIO says */
#else
    vsnprintf(msg, sizeof msg, fmt, ap);
#endif
    va_end(ap);
    memcpy(cnn__error, msg, sizeof msg);
    cnn__error_code = code;
    return code;
}

static void *cnn__calloc(size_t count, size_t size) {
    if (size && count > (size_t)-1 / size) return NULL;
    size_t bytes = count * size;
    void *p = CNN_MALLOC(bytes ? bytes : 1);
#ifdef CNN__HUGEPAGES
    /* A batch's activations (7.4 MB for the tutorial's conv_1 at 32 images)
       are read in streams that cross a 4 KiB page every 16 rows; in 2 MiB
       pages training ran 2-5% faster. Any buffer of 4 MiB or more is advised
       (activations, parameters, datasets), before the memset touches it, on
       the whole 2 MiB pages inside it: a hint, and where the kernel says no,
       nothing changes. */
    const uintptr_t huge = (uintptr_t)2 << 20;
    if (p && bytes >= 2 * huge) {
        const uintptr_t first = ((uintptr_t)p + huge - 1) & ~(huge - 1), last = ((uintptr_t)p + bytes) & ~(huge - 1);
        if (last > first) (void)madvise((void *)first, (size_t)(last - first), 14 /* MADV_HUGEPAGE */);
    }
#endif
    if (p) memset(p, 0, bytes);
    return p;
}

/* calloc that sets the error when it fails; `what` names the allocation */
static void *cnn__alloc(size_t count, size_t size, const char *what) {
    void *p = cnn__calloc(count, size);
    if (!p) cnn_set_error(CNN_ERR_MEMORY, "out of memory allocating %s (%zu bytes)", what, count * size);
    return p;
}

static char *cnn__strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = (char *)CNN_MALLOC(n);
    if (d) memcpy(d, s, n);
    return d;
}

CNN_IMPL double cnn_wall_time(void) {
#if defined(_OPENMP)
    return omp_get_wtime();
#elif defined(CNN__POSIX)
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return tv.tv_sec + tv.tv_usec * 1e-6;
#else
    return (double)clock() / CLOCKS_PER_SEC;
#endif
}

static int cnn__threads_pinned;         /* see cnn__thread_tuner */
static CNN__THREAD_LOCAL int cnn__team; /* threads of this thread's parallel loops; 0: OpenMP's default */
CNN_IMPL void cnn_set_num_threads(int n) {
    cnn__threads_pinned = n > 0;
    cnn__team = 0; /* a count the tuner chose before is forgotten */
#ifdef _OPENMP
    omp_set_num_threads(n > 0 ? n : omp_get_num_procs());
#else
    (void)n;
#endif
}


/* ---- threads on a busy machine ------------------------------------------ */
/* OpenMP's threads wait for each other at the end of every parallel loop.
   When another program keeps a core busy, the thread that shares it runs part
   of the time and every loop waits for it: training on all cores can fall far
   below the speed of one thread. So, unless the thread count is pinned
   (cnn_set_num_threads(n > 0), or OMP_NUM_THREADS), training steps tune it:
   now and then they time a few steps on each candidate count (all threads,
   half of them, one) and keep the fewest threads unless more are clearly
   faster. The results never depend on the thread count: this changes the
   speed only. */
enum {
    CNN__TUNE_STEPS = 6,  /* steps timed per candidate count, at most */
    CNN__TUNE_SETTLE = 2, /* untimed steps first when the count falls: the OS moves threads meanwhile */
    /* steps until the next trial: from the first, doubled after each trial that
       kept the same count, up to the last (at once when the choice was clear) */
    CNN__TUNE_HOLD_FIRST = 64, CNN__TUNE_HOLD_LAST = 1000
};
#define CNN__TUNE_SECONDS 0.05 /* a count's timing ends when its timed steps took this long */

static int cnn__team_size(void) {
#ifdef _OPENMP
    return cnn__team > 0 ? cnn__team : omp_get_max_threads();
#else
    return 1;
#endif
}

typedef struct cnn__thread_tuner {
    int cand[3], n_cand;  /* candidate thread counts: all, (half,) one */
    int best;             /* index of the count in use between trials */
    int trying;           /* index of the count being timed, -1 between trials */
    int settle, timed;    /* the count being timed: untimed steps left, steps timed */
    int left, hold;       /* steps left until the next trial, and the last hold's length */
    double sum, spent;    /* its timed steps: seconds per sample summed, seconds */
    double seconds[3];    /* mean seconds per sample of each count in the last trial */
    double bar;           /* the best mean of this trial: a count 1.5 times slower is dropped at once */
    double t0;            /* this step's start */
} cnn__thread_tuner;

CNN_IMPL int cnn_get_num_threads(void) { return cnn__team_size(); }

/* the next count of a trial (index i) */
static void cnn__tune_next(cnn__thread_tuner *t, int i, int previous_team) {
    t->trying = i, t->timed = 0, t->sum = t->spent = 0;
    t->settle = t->cand[i] < previous_team ? CNN__TUNE_SETTLE : 0;
}

/* before a training step: the team for it */
static void cnn__tune_begin(cnn__thread_tuner *t) {
#ifdef _OPENMP
    const char *env = getenv("OMP_NUM_THREADS");
    if (cnn__threads_pinned || (env && *env)) { cnn__team = 0; return; }
    if (!t->n_cand) { /* the first step: the candidates, and a trial at once */
        const int all = omp_get_max_threads();
        t->cand[t->n_cand++] = all;
        if (all >= 4) t->cand[t->n_cand++] = all / 2;
        if (all >= 2) t->cand[t->n_cand++] = 1;
        t->best = 0;
        cnn__tune_next(t, 0, all);
        t->settle = 1; /* the first step also sizes the buffers */
        if (t->n_cand < 2) t->trying = -1, t->left = 1 << 30; /* a single core has nothing to tune */
    }
    cnn__team = t->cand[t->trying >= 0 ? t->trying : t->best];
    t->t0 = cnn_wall_time();
#else
    (void)t;
#endif
}

/* after it (B samples): time it during a trial, and move on */
static void cnn__tune_end(cnn__thread_tuner *t, int B) {
    if (!cnn__team || t->n_cand < 2) return; /* pinned */
    const double seconds = cnn_wall_time() - t->t0;
    if (t->trying < 0) { /* holding until the next trial */
        if (--t->left <= 0) { t->bar = 0; cnn__tune_next(t, 0, cnn__team); }
        return;
    }
    if (t->settle > 0) { t->settle--; return; }
    t->sum += seconds / B;
    t->spent += seconds;
    t->timed++;
    /* a count is done when timed enough, or when slower than 1.5 times the best
       of this trial (under load, all threads can be ten times slower than one:
       a trial must not stay there) */
    if (t->timed < CNN__TUNE_STEPS && t->spent < CNN__TUNE_SECONDS &&
        !(t->bar > 0 && seconds / B > 1.5 * t->bar))
        return;
    const double mean = t->sum / t->timed;
    t->seconds[t->trying] = mean;
    if (!(t->bar > 0) || mean < t->bar) t->bar = mean;
    if (t->trying + 1 < t->n_cand) { cnn__tune_next(t, t->trying + 1, cnn__team); return; }
    /* the fewest threads unless more are clearly (10%) faster */
    const int before = t->best;
    t->best = t->n_cand - 1;
    for (int i = t->n_cand - 2; i >= 0; i--)
        if (t->seconds[i] < 0.9 * t->seconds[t->best]) t->best = i;
    int clear = 1; /* every other count 1.5 times slower */
    for (int i = 0; i < t->n_cand; i++)
        clear = clear && (i == t->best || t->seconds[i] > 1.5 * t->seconds[t->best]);
    t->hold = clear ? CNN__TUNE_HOLD_LAST
              : t->best != before || !t->hold ? CNN__TUNE_HOLD_FIRST
              : 2 * t->hold < CNN__TUNE_HOLD_LAST ? 2 * t->hold : CNN__TUNE_HOLD_LAST;
    t->trying = -1;
    t->left = t->hold;
}

/* ======================================================================== */
/* Random numbers: splitmix64 for streams, a stateless hash for dropout     */
/* ======================================================================== */

static uint64_t cnn__mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

typedef struct cnn__rng { uint64_t state; } cnn__rng;

static uint64_t cnn__rng_next(cnn__rng *r) {
    r->state += 0x9e3779b97f4a7c15ULL;
    return cnn__mix64(r->state);
}

/* uniform in [0, 1) with 24 bits */
static float cnn__rng_uniform(cnn__rng *r) { return (float)(cnn__rng_next(r) >> 40) * (1.0f / 16777216.0f); }

/* uniform integer in [0, n) */
static uint64_t cnn__rng_below(cnn__rng *r, uint64_t n) { return cnn__rng_next(r) % n; }

/* a uniform float in [0,1) that depends only on its four keys */
static float cnn__hash_uniform(uint64_t a, uint64_t b, uint64_t c, uint64_t d) {
    uint64_t h = cnn__mix64(a + 0x9e3779b97f4a7c15ULL);
    h = cnn__mix64(h ^ (b + 0x632be59bd9b4e019ULL));
    h = cnn__mix64(h ^ (c + 0x85ebca77c2b2ae63ULL));
    h = cnn__mix64(h ^ d);
    return (float)(h >> 40) * (1.0f / 16777216.0f);
}

/* ======================================================================== */
/* Datasets and raw loaders                                                 */
/* ======================================================================== */

CNN_IMPL cnn_dataset *cnn_dataset_new(int n, int h, int w, int c, int num_classes) {
    if (n < 0 || h <= 0 || w <= 0 || c <= 0 || num_classes < 0) {
        cnn_set_error(CNN_ERR_ARG, "cnn_dataset_new: bad size n=%d h=%d w=%d c=%d classes=%d", n, h, w, c,
                      num_classes);
        return NULL;
    }
    size_t per = (size_t)h * w * c;
    if ((size_t)h * w / w != (size_t)h || per / c != (size_t)h * w || (n && per > SIZE_MAX / (size_t)n)) {
        cnn_set_error(CNN_ERR_ARG, "cnn_dataset_new: %d images of %dx%dx%d do not fit in memory", n, h, w, c);
        return NULL;
    }
    cnn_dataset *d = (cnn_dataset *)cnn__alloc(1, sizeof *d, "a dataset");
    if (!d) return NULL;
    d->n = n; d->h = h; d->w = w; d->c = c; d->num_classes = num_classes;
    d->images = (unsigned char *)cnn__alloc((size_t)n * h * w * c, 1, "dataset images");
    d->labels = (int *)cnn__alloc((size_t)n, sizeof(int), "dataset labels");
    if (!d->images || !d->labels) { cnn_dataset_free(d); return NULL; }
    return d;
}

static void cnn__free_names(char **names, int count) {
    if (!names) return;
    for (int i = 0; i < count; i++) CNN_FREE(names[i]);
    CNN_FREE(names);
}

/* copy `count` strings; NULL and an error on failure */
static char **cnn__copy_names(const char *const *names, int count) {
    char **copy = (char **)cnn__alloc((size_t)count, sizeof(char *), "class names");
    if (!copy) return NULL;
    for (int i = 0; i < count; i++) {
        if (!names[i]) {
            cnn_set_error(CNN_ERR_ARG, "class name %d is NULL", i);
            cnn__free_names(copy, i);
            return NULL;
        }
        copy[i] = cnn__strdup(names[i]);
        if (!copy[i]) {
            cnn_set_error(CNN_ERR_MEMORY, "out of memory copying class names");
            cnn__free_names(copy, i);
            return NULL;
        }
    }
    return copy;
}

CNN_IMPL void cnn_dataset_free(cnn_dataset *d) {
    if (!d) return;
    CNN_FREE(d->images);
    CNN_FREE(d->labels);
    cnn__free_names(d->class_names, d->num_classes);
    CNN_FREE(d);
}

CNN_IMPL int cnn_dataset_set_class_names(cnn_dataset *d, const char *const *names, int count) {
    if (!d || !names)
        return cnn_set_error(CNN_ERR_ARG, "cnn_dataset_set_class_names: NULL %s", d ? "names" : "dataset");
    if (count != d->num_classes)
        return cnn_set_error(CNN_ERR_ARG, "cnn_dataset_set_class_names: %d names for %d classes", count,
                             d->num_classes);
    for (int i = 0; i < count; i++)
        if (!names[i])
            return cnn_set_error(CNN_ERR_ARG, "cnn_dataset_set_class_names: class name %d is NULL", i);
    char **copy = cnn__copy_names(names, count);
    if (!copy) return CNN_ERR_MEMORY;
    cnn__free_names(d->class_names, d->num_classes);
    d->class_names = copy;
    return CNN_OK;
}

static int cnn__check_dataset(const cnn_dataset *d, const char *fn) {
    if (!d) return cnn_set_error(CNN_ERR_ARG, "%s: the dataset is NULL", fn);
    if (d->n <= 0) return cnn_set_error(CNN_ERR_ARG, "%s: the dataset is empty", fn);
    if (!d->images || !d->labels || d->h <= 0 || d->w <= 0 || d->c <= 0)
        return cnn_set_error(CNN_ERR_ARG, "%s: the dataset has no images or labels", fn);
    return CNN_OK;
}

CNN_IMPL int cnn_dataset_shuffle(cnn_dataset *d, uint64_t seed) {
    int rc = cnn__check_dataset(d, "cnn_dataset_shuffle");
    if (rc) return rc;
    size_t sz = (size_t)d->h * d->w * d->c;
    unsigned char *tmp = (unsigned char *)cnn__alloc(sz, 1, "a shuffle buffer");
    if (!tmp) return CNN_ERR_MEMORY;
    cnn__rng r = {cnn__mix64(seed ^ 0x5348554646ULL)};
    for (int i = d->n - 1; i > 0; i--) { /* Fisher-Yates */
        int j = (int)cnn__rng_below(&r, (uint64_t)i + 1);
        memcpy(tmp, d->images + i * sz, sz);
        memcpy(d->images + i * sz, d->images + j * sz, sz);
        memcpy(d->images + j * sz, tmp, sz);
        int t = d->labels[i]; d->labels[i] = d->labels[j]; d->labels[j] = t;
    }
    CNN_FREE(tmp);
    return CNN_OK;
}

CNN_IMPL cnn_dataset *cnn_dataset_subset(const cnn_dataset *d, int start, int count) {
    if (!d) { cnn_set_error(CNN_ERR_ARG, "cnn_dataset_subset: the dataset is NULL"); return NULL; }
    if (start < 0 || count < 0 || start > d->n || count > d->n - start) {
        cnn_set_error(CNN_ERR_ARG, "cnn_dataset_subset: range %d..%d outside the %d images", start,
                      start + count, d->n);
        return NULL;
    }
    cnn_dataset *s = cnn_dataset_new(count, d->h, d->w, d->c, d->num_classes);
    if (!s) return NULL;
    size_t sz = (size_t)d->h * d->w * d->c;
    if (count) {
        memcpy(s->images, d->images + (size_t)start * sz, (size_t)count * sz);
        memcpy(s->labels, d->labels + start, (size_t)count * sizeof(int));
    }
    if (d->class_names &&
        cnn_dataset_set_class_names(s, (const char *const *)d->class_names, d->num_classes)) {
        cnn_dataset_free(s);
        return NULL;
    }
    return s;
}

/* Keras' split point: floor(n * (1 - fraction)). The float fraction is first
   rounded to 6 decimals, so 0.1f means 0.1 as it does in Python. */
static int cnn__split_at(int n, float fraction) {
    double f = floor((double)fraction * 1e6 + 0.5) / 1e6;
    return (int)floor((double)n * (1.0 - f));
}

CNN_IMPL int cnn_dataset_split(const cnn_dataset *d, float fraction, cnn_dataset **first,
                               cnn_dataset **second) {
    if (!first || !second) return cnn_set_error(CNN_ERR_ARG, "cnn_dataset_split: NULL output pointer");
    *first = *second = NULL;
    int rc = cnn__check_dataset(d, "cnn_dataset_split");
    if (rc) return rc;
    if (!(fraction >= 0.0f && fraction < 1.0f))
        return cnn_set_error(CNN_ERR_ARG, "cnn_dataset_split: fraction %g is not in [0, 1)", fraction);
    int n2 = d->n - cnn__split_at(d->n, fraction);
    *first = cnn_dataset_subset(d, 0, d->n - n2);
    *second = cnn_dataset_subset(d, d->n - n2, n2);
    if (!*first || !*second) {
        cnn_dataset_free(*first); cnn_dataset_free(*second);
        *first = *second = NULL;
        return CNN_ERR_MEMORY;
    }
    return CNN_OK;
}

CNN_IMPL int cnn_dataset_split_off(cnn_dataset *d, float fraction, cnn_dataset **tail) {
    if (!tail) return cnn_set_error(CNN_ERR_ARG, "cnn_dataset_split_off: NULL output pointer");
    *tail = NULL;
    int rc = cnn__check_dataset(d, "cnn_dataset_split_off");
    if (rc) return rc;
    if (!(fraction >= 0.0f && fraction < 1.0f))
        return cnn_set_error(CNN_ERR_ARG, "cnn_dataset_split_off: fraction %g is not in [0, 1)", fraction);
    int keep = cnn__split_at(d->n, fraction);
    *tail = cnn_dataset_subset(d, keep, d->n - keep);
    if (!*tail) return CNN_ERR_MEMORY;
    size_t per = (size_t)d->h * d->w * d->c;
    d->n = keep;
    /* shrink in place; a failed shrink leaves the larger blocks, which is harmless */
    unsigned char *img = keep ? (unsigned char *)CNN_REALLOC(d->images, (size_t)keep * per) : NULL;
    int *lab = keep ? (int *)CNN_REALLOC(d->labels, (size_t)keep * sizeof(int)) : NULL;
    if (img) d->images = img;
    if (lab) d->labels = lab;
    return CNN_OK;
}

/* Read a whole file; NULL and an error naming it on failure. */
/* Make the folder `path` and its parents where missing (path is restored after
   its separators are cut in turn). 0, or -1 with errno. */
static int cnn__make_folders(char *path) {
    for (char *p = path + 1;; p++) {
        if (*p && *p != '/' && *p != '\\') continue;
        char c = *p;
        *p = 0;
        int bad = 0;
#if defined(_WIN32)
        bad = _mkdir(path) != 0 && errno != EEXIST;
#elif defined(CNN__POSIX)
        bad = mkdir(path, 0777) != 0 && errno != EEXIST;
#endif
        *p = c;
        if (bad || !c) return bad ? -1 : 0;
    }
}

static unsigned char *cnn__read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) { cnn_set_error(CNN_ERR_IO, "cannot open '%s': %s", path, strerror(errno)); return NULL; }
    size_t cap = 1 << 16, n = 0;
    unsigned char *buf = (unsigned char *)CNN_MALLOC(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n < cap) break;
        unsigned char *nb = (unsigned char *)CNN_REALLOC(buf, cap * 2);
        if (!nb) { CNN_FREE(buf); buf = NULL; break; }
        buf = nb; cap *= 2;
    }
    int err = ferror(f);
    fclose(f);
    if (!buf) { cnn_set_error(CNN_ERR_MEMORY, "out of memory reading '%s'", path); return NULL; }
    if (err) { CNN_FREE(buf); cnn_set_error(CNN_ERR_IO, "cannot read '%s'", path); return NULL; }
    *len = n;
    return buf;
}

static const char *cnn__cifar10_names[10] = {"airplane", "automobile", "bird", "cat", "deer",
                                             "dog", "frog", "horse", "ship", "truck"};

/* Append CIFAR-10 records (1 label byte + 3072 planar RGB bytes) to d at index at. */
static void cnn__cifar10_records(cnn_dataset *d, int at, const unsigned char *buf, int count) {
    for (int i = 0; i < count; i++) {
        const unsigned char *r = buf + (size_t)i * 3073;
        unsigned char *img = d->images + (size_t)(at + i) * 3072;
        d->labels[at + i] = r[0];
        for (int p = 0; p < 1024; p++) /* planar R, G, B -> interleaved NHWC */
            for (int ch = 0; ch < 3; ch++) img[p * 3 + ch] = r[1 + ch * 1024 + p];
    }
}

static int cnn__cifar10_check(const unsigned char *buf, size_t len, const char *path) {
    if (len == 0 || len % 3073)
        return cnn_set_error(CNN_ERR_FORMAT,
                             "'%s' is not a CIFAR-10 binary batch (size %zu is not a multiple of 3073)", path,
                             len);
    for (size_t i = 0; i < len; i += 3073)
        if (buf[i] > 9)
            return cnn_set_error(CNN_ERR_FORMAT, "'%s': record %zu has label %d, not 0..9", path, i / 3073,
                                 buf[i]);
    return CNN_OK;
}

CNN_IMPL cnn_dataset *cnn_load_cifar10_file(const char *path) {
    if (!path) { cnn_set_error(CNN_ERR_ARG, "cnn_load_cifar10_file: path is NULL"); return NULL; }
    size_t len = 0;
    unsigned char *buf = cnn__read_file(path, &len);
    if (!buf) return NULL;
    cnn_dataset *d = NULL;
    if (!cnn__cifar10_check(buf, len, path) && (d = cnn_dataset_new((int)(len / 3073), 32, 32, 3, 10))) {
        cnn__cifar10_records(d, 0, buf, d->n);
        if (cnn_dataset_set_class_names(d, cnn__cifar10_names, 10)) { cnn_dataset_free(d); d = NULL; }
    }
    CNN_FREE(buf);
    return d;
}

static int cnn__file_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}

CNN_IMPL int cnn_is_cifar10_dir(const char *dir) {
    if (!dir) return 0;
    char p[4096];
    snprintf(p, sizeof p, "%s/data_batch_1.bin", dir);
    if (cnn__file_exists(p)) return 1;
    snprintf(p, sizeof p, "%s/test_batch.bin", dir);
    return cnn__file_exists(p);
}

/* Class names from batches.meta.txt (one per line), if it has ten. */
static void cnn__cifar10_meta(cnn_dataset *d, const char *dir) {
    char p[4096], line[256], *names[10];
    int count = 0;
    snprintf(p, sizeof p, "%s/batches.meta.txt", dir);
    FILE *f = fopen(p, "r");
    if (!f) return;
    while (count < 10 && fgets(line, sizeof line, f)) {
        size_t n = strcspn(line, "\r\n");
        line[n] = 0;
        if (n == 0) continue;
        names[count++] = cnn__strdup(line);
    }
    fclose(f);
    if (count == 10) cnn_dataset_set_class_names(d, (const char *const *)names, 10);
    for (int i = 0; i < count; i++) CNN_FREE(names[i]);
}

CNN_IMPL cnn_dataset *cnn_load_cifar10(const char *dir, int train) {
    if (!dir) { cnn_set_error(CNN_ERR_ARG, "cnn_load_cifar10: dir is NULL"); return NULL; }
    const int nfiles = train ? 5 : 1;
    unsigned char *bufs[5] = {0};
    size_t lens[5] = {0}, total = 0;
    char p[4096];
    cnn_dataset *d = NULL;
    for (int i = 0; i < nfiles; i++) {
        if (train) snprintf(p, sizeof p, "%s/data_batch_%d.bin", dir, i + 1);
        else snprintf(p, sizeof p, "%s/test_batch.bin", dir);
        bufs[i] = cnn__read_file(p, &lens[i]);
        if (!bufs[i] || cnn__cifar10_check(bufs[i], lens[i], p)) goto done;
        total += lens[i] / 3073;
    }
    d = cnn_dataset_new((int)total, 32, 32, 3, 10);
    if (d) {
        int at = 0;
        for (int i = 0; i < nfiles; i++) {
            cnn__cifar10_records(d, at, bufs[i], (int)(lens[i] / 3073));
            at += (int)(lens[i] / 3073);
        }
        if (cnn_dataset_set_class_names(d, cnn__cifar10_names, 10)) {
            cnn_dataset_free(d);
            d = NULL;
            goto done;
        }
        cnn__cifar10_meta(d, dir);
    }
done:
    for (int i = 0; i < nfiles; i++) CNN_FREE(bufs[i]);
    return d;
}

static uint32_t cnn__be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

CNN_IMPL cnn_dataset *cnn_load_idx_memory(const unsigned char *images, size_t images_len,
                                          const unsigned char *labels, size_t labels_len) {
    if (!images || !labels) {
        cnn_set_error(CNN_ERR_ARG, "cnn_load_idx_memory: NULL %s", images ? "labels" : "images");
        return NULL;
    }
    /* images: 00 00 08 ndim, dims (big-endian u32), data; labels: 00 00 08 01, n, data */
    if (images_len < 4 || images[0] || images[1] || images[2] != 0x08 || images[3] < 2 || images[3] > 4) {
        cnn_set_error(CNN_ERR_FORMAT,
                      "IDX images: bad magic (want unsigned-byte data with 2 to 4 dimensions)");
        return NULL;
    }
    int ndim = images[3];
    if (images_len < 4 + 4 * (size_t)ndim) {
        cnn_set_error(CNN_ERR_FORMAT, "IDX images: truncated header");
        return NULL;
    }
    uint32_t dims[4] = {1, 1, 1, 1};
    for (int i = 0; i < ndim; i++) dims[i] = cnn__be32(images + 4 + 4 * i);
    uint32_t n = dims[0], h = dims[1], w = ndim >= 3 ? dims[2] : 1, c = ndim == 4 ? dims[3] : 1;
    if (!n || !h || !w || !c || n > INT_MAX || h > 65536 || w > 65536 || c > 4096) {
        cnn_set_error(CNN_ERR_FORMAT, "IDX images: bad dimensions %ux%ux%ux%u", n, h, w, c);
        return NULL;
    }
    size_t per = (size_t)h * w * c; /* h, w <= 65536 and c <= 4096: no overflow here */
    if (per > (SIZE_MAX - 64) / n) {
        cnn_set_error(CNN_ERR_FORMAT, "IDX images: %u images of %u bytes are too many", n, (unsigned)per);
        return NULL;
    }
    size_t need = 4 + 4 * (size_t)ndim + (size_t)n * per;
    if (images_len < need) {
        cnn_set_error(CNN_ERR_FORMAT, "IDX images: truncated (%zu bytes, need %zu)", images_len, need);
        return NULL;
    }
    if (labels_len < 8 || labels[0] || labels[1] || labels[2] != 0x08 || labels[3] != 1) {
        cnn_set_error(CNN_ERR_FORMAT, "IDX labels: bad magic (want unsigned-byte data with 1 dimension)");
        return NULL;
    }
    if (cnn__be32(labels + 4) != n) {
        cnn_set_error(CNN_ERR_FORMAT, "IDX labels: %u labels for %u images", cnn__be32(labels + 4), n);
        return NULL;
    }
    if (labels_len < 8 + (size_t)n) { cnn_set_error(CNN_ERR_FORMAT, "IDX labels: truncated"); return NULL; }
    int classes = 0;
    for (uint32_t i = 0; i < n; i++) if (labels[8 + i] + 1 > classes) classes = labels[8 + i] + 1;
    cnn_dataset *d = cnn_dataset_new((int)n, (int)h, (int)w, (int)c, classes);
    if (!d) return NULL;
    memcpy(d->images, images + 4 + 4 * ndim, (size_t)n * h * w * c);
    for (uint32_t i = 0; i < n; i++) d->labels[i] = labels[8 + i];
    return d;
}

CNN_IMPL cnn_dataset *cnn_load_idx(const char *images_path, const char *labels_path) {
    if (!images_path || !labels_path) { cnn_set_error(CNN_ERR_ARG, "cnn_load_idx: NULL path"); return NULL; }
    size_t il = 0, ll = 0;
    unsigned char *ib = cnn__read_file(images_path, &il), *lb = NULL;
    cnn_dataset *d = NULL;
    if (ib && (lb = cnn__read_file(labels_path, &ll))) {
        d = cnn_load_idx_memory(ib, il, lb, ll);
        if (!d) cnn_set_error(CNN_ERR_FORMAT, "'%s' / '%s': %s", images_path, labels_path, cnn_last_error());
    }
    CNN_FREE(ib);
    CNN_FREE(lb);
    return d;
}

/* ---- NumPy .npy (np.save) ------------------------------------------------ */
/* The file: the magic \x93NUMPY, a major and minor version byte, the header's
   length (2 bytes little-endian in 1.0, 4 in 2.0 and 3.0), the header (a Python
   dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), },
   padded with spaces and a newline), then the elements in C order. */

#define CNN__NPY_MAX_DIMS 8
#define CNN__NPY_MAX_LABEL (1 << 24) /* labels 0..2^24-1: exact as floats */

typedef struct cnn__npy {
    char descr[24];      /* the dtype as written, e.g. "<f4" */
    char kind;           /* 'u' 'i' 'f' */
    int size, big;       /* bytes per element; big-endian */
    int ndim;
    uint64_t shape[CNN__NPY_MAX_DIMS];
    uint64_t count;      /* elements */
    const unsigned char *data;
} cnn__npy;

/* the NumPy name of a dtype letter and size, for messages */
static const char *cnn__npy_type_name(char kind, int size) {
    switch (kind) {
    case 'u':
        return size == 1 ? "uint8" : size == 2 ? "uint16" : size == 4 ? "uint32" : size == 8 ? "uint64" : "unsigned";
    case 'i': return size == 1 ? "int8" : size == 2 ? "int16" : size == 4 ? "int32" : size == 8 ? "int64" : "integer";
    case 'f': return size == 2 ? "float16" : size == 4 ? "float32" : size == 8 ? "float64" : "float";
    case 'c': return size == 8 ? "complex64" : size == 16 ? "complex128" : "complex";
    case 'b': return "bool";
    case 'U': return "unicode string";
    case 'S': return "byte string";
    case 'O': return "Python object";
    case 'M': return "datetime64";
    case 'm': return "timedelta64";
    case 'V': return "void";
    default: return "unknown";
    }
}

/* "(3, 32, 32)" */
static const char *cnn__npy_shape_str(const cnn__npy *a, char *buf, size_t cap) {
    size_t at = 0;
    at += (size_t)snprintf(buf, cap, "(");
    for (int i = 0; i < a->ndim && at < cap; i++)
        at += (size_t)snprintf(buf + at, cap - at, "%s%llu", i ? ", " : "", (unsigned long long)a->shape[i]);
    if (at < cap) snprintf(buf + at, cap - at, a->ndim == 1 ? ",)" : ")");
    return buf;
}

static void cnn__npy_ws(const char *h, size_t n, size_t *i) {
    while (*i < n && (h[*i] == ' ' || h[*i] == '\t' || h[*i] == '\n' || h[*i] == '\r')) (*i)++;
}

/* a quoted Python string at h[*i] into out (cap bytes); 0 when it is not one */
static int cnn__npy_str(const char *h, size_t n, size_t *i, char *out, size_t cap) {
    if (*i >= n || (h[*i] != '\'' && h[*i] != '"')) return 0;
    char q = h[(*i)++];
    size_t k = 0;
    while (*i < n && h[*i] != q) {
        if (h[*i] == '\\' || k + 1 >= cap) return 0;
        out[k++] = h[(*i)++];
    }
    if (*i >= n) return 0;
    (*i)++;
    out[k] = 0;
    return 1;
}

/* parse the header dict h[0..n) into a; an error naming `name` on failure */
static int cnn__npy_dict(const char *h, size_t n, const char *name, cnn__npy *a) {
    size_t i = 0;
    int have = 0, fortran = 0; /* have: bit 0 descr, 1 fortran_order, 2 shape */
    char key[32], why[96];
    cnn__npy_ws(h, n, &i);
    if (i >= n || h[i++] != '{') { snprintf(why, sizeof why, "it does not start with '{'"); goto bad; }
    for (;;) {
        cnn__npy_ws(h, n, &i);
        if (i < n && h[i] == '}') { i++; break; }
        if (!cnn__npy_str(h, n, &i, key, sizeof key)) {
            snprintf(why, sizeof why, "a key is not a short string");
            goto bad;
        }
        cnn__npy_ws(h, n, &i);
        if (i >= n || h[i++] != ':') { snprintf(why, sizeof why, "no ':' after '%s'", key); goto bad; }
        cnn__npy_ws(h, n, &i);
        if (!strcmp(key, "descr")) {
            if (i < n && h[i] == '[')
                return cnn_set_error(CNN_ERR_FORMAT, "%s: descr: structured dtypes (a list of fields) are not "
                                     "supported: save a plain numeric array", name);
            if (!cnn__npy_str(h, n, &i, a->descr, sizeof a->descr)) {
                snprintf(why, sizeof why, "descr is not a short string");
                goto bad;
            }
            have |= 1;
        } else if (!strcmp(key, "fortran_order")) {
            if (i + 4 <= n && !memcmp(h + i, "True", 4)) { fortran = 1; i += 4; }
            else if (i + 5 <= n && !memcmp(h + i, "False", 5)) { fortran = 0; i += 5; }
            else { snprintf(why, sizeof why, "fortran_order is not True or False"); goto bad; }
            have |= 2;
        } else if (!strcmp(key, "shape")) {
            if (i >= n || h[i++] != '(') { snprintf(why, sizeof why, "shape is not a tuple"); goto bad; }
            a->ndim = 0;
            for (;;) {
                cnn__npy_ws(h, n, &i);
                if (i < n && h[i] == ')') { i++; break; }
                if (i >= n || h[i] < '0' || h[i] > '9') {
                    snprintf(why, sizeof why, "shape holds a non-number");
                    goto bad;
                }
                uint64_t v = 0;
                while (i < n && h[i] >= '0' && h[i] <= '9') {
                    if (v > (UINT64_MAX - 9) / 10) { snprintf(why, sizeof why, "a shape number overflows"); goto bad; }
                    v = v * 10 + (uint64_t)(h[i++] - '0');
                }
                if (i < n && h[i] == 'L') i++; /* Python 2's long */
                if (a->ndim == CNN__NPY_MAX_DIMS)
                    return cnn_set_error(CNN_ERR_FORMAT, "%s: shape has more than %d dimensions", name,
                                         CNN__NPY_MAX_DIMS);
                a->shape[a->ndim++] = v;
                cnn__npy_ws(h, n, &i);
                if (i < n && h[i] == ',') i++;
                else if (i >= n || h[i] != ')') {
                    snprintf(why, sizeof why, "shape is not a tuple of numbers");
                    goto bad;
                }
            }
            have |= 4;
        } else {
            snprintf(why, sizeof why, "unknown key '%s'", key);
            goto bad;
        }
        cnn__npy_ws(h, n, &i);
        if (i < n && h[i] == ',') { i++; continue; }
        if (i < n && h[i] == '}') { i++; break; }
        snprintf(why, sizeof why, "no ',' or '}' after '%s'", key);
        goto bad;
    }
    cnn__npy_ws(h, n, &i);
    if (i < n) { snprintf(why, sizeof why, "text after the closing '}'"); goto bad; }
    if (have != 7) {
        snprintf(why, sizeof why, "no '%s' key", !(have & 1) ? "descr" : !(have & 2) ? "fortran_order" : "shape");
        goto bad;
    }
    if (fortran)
        return cnn_set_error(CNN_ERR_FORMAT, "%s: fortran_order: True is not supported: save with "
                             "np.ascontiguousarray", name);
    return CNN_OK;
bad:
    return cnn_set_error(CNN_ERR_FORMAT, "%s: bad header dict (%s)", name, why);
}

/* Read the .npy bytes p[0..len) into a (a->data points into p); name names them in errors. */
static int cnn__npy_parse(const unsigned char *p, size_t len, const char *name, cnn__npy *a) {
    memset(a, 0, sizeof *a);
    if (!p) return cnn_set_error(CNN_ERR_ARG, "%s: the data is NULL", name);
    if (len < 10 || memcmp(p, "\x93NUMPY", 6))
        return cnn_set_error(CNN_ERR_FORMAT, "%s: bad magic (not a .npy file, which starts with \\x93NUMPY)", name);
    size_t hlen, at;
    if (p[6] == 1) { hlen = (size_t)p[8] | (size_t)p[9] << 8; at = 10; }
    else if ((p[6] == 2 || p[6] == 3) && len >= 12) {
        hlen = (size_t)p[8] | (size_t)p[9] << 8 | (size_t)p[10] << 16 | (size_t)p[11] << 24;
        at = 12;
    }
    else return cnn_set_error(CNN_ERR_FORMAT, "%s: .npy format version %d.%d is not supported (1.0, 2.0 and 3.0 are)",
                              name, p[6], p[7]);
    if (hlen > len - at)
        return cnn_set_error(CNN_ERR_FORMAT, "%s: header length %zu runs past the end of the file (%zu bytes)",
                             name, hlen, len);
    int rc = cnn__npy_dict((const char *)p + at, hlen, name, a);
    if (rc) return rc;
    /* descr: byte order < > | (= native), a kind letter, a size in bytes */
    const char *d = a->descr;
    char order = d[0];
    int size = 0, ok = (order == '<' || order == '>' || order == '|' || order == '=') && d[1];
    for (int k = 2; ok && d[k]; k++) {
        if (d[k] < '0' || d[k] > '9' || size > 1000) ok = 0;
        else size = size * 10 + (d[k] - '0');
    }
    if (!ok) return cnn_set_error(CNN_ERR_FORMAT, "%s: descr: dtype '%s' is not supported (not a plain number type)",
                                  name, d);
    const uint16_t one = 1;
    int host_big = *(const unsigned char *)&one == 0;
    a->kind = d[1];
    a->size = size;
    a->big = order == '>' || (order == '=' && host_big);
    if (!(((a->kind == 'u' || a->kind == 'i') && (size == 1 || size == 2 || size == 4 || size == 8)) ||
          (a->kind == 'f' && (size == 4 || size == 8))))
        return cnn_set_error(CNN_ERR_FORMAT, "%s: descr: dtype '%s' (%s) is not supported (integers and float32, "
                             "float64 are)", name, d, cnn__npy_type_name(a->kind, size));
    a->count = 1;
    for (int k = 0; k < a->ndim; k++) {
        if (a->shape[k] && a->count > UINT64_MAX / a->shape[k]) {
            char sh[160];
            return cnn_set_error(CNN_ERR_FORMAT, "%s: shape %s overflows", name, cnn__npy_shape_str(a, sh, sizeof sh));
        }
        a->count *= a->shape[k];
    }
    size_t have = len - at - hlen;
    if (a->count > (uint64_t)(have / (size_t)size)) {
        char sh[160];
        return cnn_set_error(CNN_ERR_FORMAT, "%s: data truncated: shape %s of '%s' is %llu elements x %d bytes; the "
                             "file holds %zu bytes after its header", name, cnn__npy_shape_str(a, sh, sizeof sh), d,
                             (unsigned long long)a->count, size, have);
    }
    a->data = p + at + hlen;
    return CNN_OK;
}

/* element i as raw bits in host order */
static uint64_t cnn__npy_bits(const cnn__npy *a, size_t i) {
    const unsigned char *q = a->data + i * (size_t)a->size;
    uint64_t v = 0;
    for (int k = 0; k < a->size; k++) v |= (uint64_t)q[a->big ? a->size - 1 - k : k] << (8 * k);
    return v;
}

/* element i as a double (integers above 2^53 rounded: enough to range-check labels) */
static double cnn__npy_value(const cnn__npy *a, size_t i) {
    uint64_t v = cnn__npy_bits(a, i);
    if (a->kind == 'f') {
        if (a->size == 4) { uint32_t b = (uint32_t)v; float f; memcpy(&f, &b, 4); return f; }
        double x;
        memcpy(&x, &v, 8);
        return x;
    }
    if (a->kind == 'i' && (v >> (8 * a->size - 1) & 1)) { /* negative: two's complement */
        if (a->size < 8) v |= ~(uint64_t)0 << (8 * a->size);
        return -(double)(~v + 1);
    }
    return (double)v;
}

/* Labels: [n] or [n][1] indices of an integer dtype (or whole floats), or one-hot
   rows [n][k]. Writes n ints to out (when not NULL) and the class count. */
static int cnn__npy_labels(const cnn__npy *a, const char *name, int *out, int *num_classes) {
    char sh[160];
    if (a->ndim < 1 || a->ndim > 2 || a->shape[0] == 0 || (a->ndim == 2 && a->shape[1] == 0))
        return cnn_set_error(CNN_ERR_FORMAT, "%s: shape %s: labels must be (n,), (n, 1) or one-hot (n, classes)",
                             name, cnn__npy_shape_str(a, sh, sizeof sh));
    const size_t n = (size_t)a->shape[0], k = a->ndim == 2 ? (size_t)a->shape[1] : 1;
    int classes = 0;
    if (k == 1) {
        for (size_t i = 0; i < n; i++) {
            double v = cnn__npy_value(a, i);
            if (!(v >= 0) || v >= CNN__NPY_MAX_LABEL || v != floor(v))
                return cnn_set_error(CNN_ERR_FORMAT, "%s: label %.17g of sample %zu is out of range (class indices are "
                                     "0..%d)", name, v, i, CNN__NPY_MAX_LABEL - 1);
            if ((int)v + 1 > classes) classes = (int)v + 1;
            if (out) out[i] = (int)v;
        }
    } else {
        if (k > CNN__NPY_MAX_LABEL)
            return cnn_set_error(CNN_ERR_FORMAT, "%s: shape %s: one-hot rows of %zu classes are too wide", name,
                                 cnn__npy_shape_str(a, sh, sizeof sh), k);
        for (size_t i = 0; i < n; i++) {
            size_t hot = k;
            for (size_t j = 0; j < k; j++) {
                double v = cnn__npy_value(a, i * k + j);
                if (v == 1 && hot == k) hot = j;
                else if (v != 0)
                    return cnn_set_error(CNN_ERR_FORMAT, "%s: row %zu is not one-hot (column %zu holds %g): one-hot "
                                         "labels are 0 and a single 1", name, i, j, v);
            }
            if (hot == k)
                return cnn_set_error(CNN_ERR_FORMAT, "%s: row %zu is not one-hot (all zeros)", name, i);
            if (out) out[i] = (int)hot;
        }
        classes = (int)k;
    }
    *num_classes = classes;
    return CNN_OK;
}

static cnn_dataset *cnn__load_npy(const char *who, const unsigned char *images, size_t images_len,
                                  const char *iname, const unsigned char *labels, size_t labels_len,
                                  const char *lname) {
    cnn__npy im, lb;
    char sh[160];
    if (cnn__npy_parse(images, images_len, iname, &im) || cnn__npy_parse(labels, labels_len, lname, &lb)) return NULL;
    if (im.kind != 'u' || im.size != 1) {
        cnn_set_error(CNN_ERR_FORMAT, "%s: descr: images must be uint8 ('|u1'), not '%s' (%s)%s", iname, im.descr,
                      cnn__npy_type_name(im.kind, im.size),
                      im.kind == 'f' ? ": load float arrays with cnn_load_npy_float" : "");
        return NULL;
    }
    if (im.ndim < 3 || im.ndim > 4 || !im.count || im.shape[0] > INT_MAX || im.shape[1] > 65536 ||
        im.shape[2] > 65536 || (im.ndim == 4 && im.shape[3] > 4096)) {
        cnn_set_error(CNN_ERR_FORMAT, "%s: shape %s: images must be (n, h, w, c) or (n, h, w), none 0, h and "
                      "w <= 65536, c <= 4096%s",
                      iname, cnn__npy_shape_str(&im, sh, sizeof sh),
                      im.ndim == 2 ? " (reshape flat rows to (n, h, w))" : "");
        return NULL;
    }
    const int n = (int)im.shape[0], h = (int)im.shape[1], w = (int)im.shape[2], c = im.ndim == 4 ? (int)im.shape[3] : 1;
    if (lb.ndim >= 1 && lb.shape[0] != (uint64_t)n) {
        cnn_set_error(CNN_ERR_FORMAT, "%s: shape %s: %llu labels for %d images", lname,
                      cnn__npy_shape_str(&lb, sh, sizeof sh), (unsigned long long)lb.shape[0], n);
        return NULL;
    }
    int classes = 0;
    if (cnn__npy_labels(&lb, lname, NULL, &classes)) return NULL;
    if (cnn_check_memory(who, "the dataset", (unsigned long long)im.count + (unsigned long long)n * sizeof(int)))
        return NULL;
    cnn_dataset *d = cnn_dataset_new(n, h, w, c, classes);
    if (!d) return NULL;
    memcpy(d->images, im.data, (size_t)im.count);
    cnn__npy_labels(&lb, lname, d->labels, &classes);
    return d;
}

CNN_IMPL cnn_dataset *cnn_load_npy_memory(const unsigned char *images, size_t images_len,
                                          const unsigned char *labels, size_t labels_len) {
    return cnn__load_npy("cnn_load_npy_memory", images, images_len, "cnn_load_npy_memory: images", labels,
                         labels_len, "cnn_load_npy_memory: labels");
}

/* read one or two files (b_path may be NULL); names for messages: "who: 'path'" */
static int cnn__npy_read_pair(const char *who, const char *a_path, const char *b_path, unsigned char **a,
                              size_t *a_len, unsigned char **b, size_t *b_len, char *a_name, char *b_name,
                              size_t cap) {
    *a = *b = NULL;
    *a_len = *b_len = 0;
    if (!a_path) return cnn_set_error(CNN_ERR_ARG, "%s: the path is NULL", who);
    snprintf(a_name, cap, "%s: '%s'", who, a_path);
    if (b_path) snprintf(b_name, cap, "%s: '%s'", who, b_path);
    if (!(*a = cnn__read_file(a_path, a_len))) return cnn_set_error(CNN_ERR_IO, "%s: %s", who, cnn_last_error());
    if (b_path && !(*b = cnn__read_file(b_path, b_len))) {
        CNN_FREE(*a);
        *a = NULL;
        return cnn_set_error(CNN_ERR_IO, "%s: %s", who, cnn_last_error());
    }
    return CNN_OK;
}

CNN_IMPL cnn_dataset *cnn_load_npy(const char *images_path, const char *labels_path) {
    static const char who[] = "cnn_load_npy";
    unsigned char *ib, *lb;
    size_t il, ll;
    char iname[600], lname[600];
    if (!labels_path) { cnn_set_error(CNN_ERR_ARG, "%s: labels_path is NULL", who); return NULL; }
    if (cnn__npy_read_pair(who, images_path, labels_path, &ib, &il, &lb, &ll, iname, lname, sizeof iname))
        return NULL;
    cnn_dataset *d = cnn__load_npy(who, ib, il, iname, lb, ll, lname);
    CNN_FREE(ib);
    CNN_FREE(lb);
    return d;
}

CNN_IMPL void cnn_float_arrays_free(cnn_float_arrays *a) {
    if (!a) return;
    CNN_FREE(a->x);
    CNN_FREE(a->y);
    CNN_FREE(a);
}

/* convert all of a's elements to floats at out */
static void cnn__npy_to_float(const cnn__npy *a, float *out) {
    const uint16_t one = 1;
    if (a->kind == 'f' && a->size == 4 && a->big == (*(const unsigned char *)&one == 0)) {
        memcpy(out, a->data, (size_t)a->count * 4);
        return;
    }
    for (size_t i = 0; i < (size_t)a->count; i++) out[i] = (float)cnn__npy_value(a, i);
}

static cnn_float_arrays *cnn__load_npy_float(const char *who, const unsigned char *x, size_t x_len,
                                             const char *xname, const unsigned char *y, size_t y_len,
                                             const char *yname) {
    cnn__npy xa, ya;
    char sh[160];
    if (cnn__npy_parse(x, x_len, xname, &xa) || (y && cnn__npy_parse(y, y_len, yname, &ya))) return NULL;
    if (xa.kind != 'f') {
        cnn_set_error(CNN_ERR_FORMAT, "%s: descr: x must be float32 or float64, not '%s' (%s)%s", xname, xa.descr,
                      cnn__npy_type_name(xa.kind, xa.size),
                      xa.kind == 'u' && xa.size == 1 ? ": load uint8 images with cnn_load_npy" : "");
        return NULL;
    }
    if (xa.ndim < 2 || xa.ndim > 4 || !xa.count || xa.shape[0] > INT_MAX || xa.count / xa.shape[0] > INT_MAX ||
        xa.shape[1] > INT_MAX || (xa.ndim >= 3 && xa.shape[2] > INT_MAX) || (xa.ndim == 4 && xa.shape[3] > INT_MAX)) {
        cnn_set_error(CNN_ERR_FORMAT, "%s: shape %s: x must be (n, h, w, c), (n, h, w) or (n, features), none of "
                      "them 0", xname, cnn__npy_shape_str(&xa, sh, sizeof sh));
        return NULL;
    }
    const int n = (int)xa.shape[0];
    int y_width = 0, classes = 0;
    if (y) {
        if (ya.ndim < 1 || ya.ndim > 2 || ya.shape[0] != (uint64_t)n || (ya.ndim == 2 && !ya.shape[1]) ||
            ya.count / (uint64_t)n > INT_MAX) {
            cnn_set_error(CNN_ERR_FORMAT, "%s: shape %s: y must be (%d,), (%d, 1) or (%d, width) for %d samples",
                          yname, cnn__npy_shape_str(&ya, sh, sizeof sh), n, n, n, n);
            return NULL;
        }
        y_width = ya.ndim == 2 ? (int)ya.shape[1] : 1;
        if (ya.kind == 'f')
            for (size_t i = 0; i < (size_t)ya.count; i++)
                if (!isfinite(cnn__npy_value(&ya, i))) {
                    cnn_set_error(CNN_ERR_FORMAT, "%s: element %zu is not finite", yname, i);
                    return NULL;
                }
        if (cnn__npy_labels(&ya, yname, NULL, &classes)) {
            if (y_width == 1 && ya.kind != 'f') return NULL; /* integer indices must be labels */
            classes = 0;                                     /* dense or soft targets */
        }
    }
    unsigned long long bytes = ((unsigned long long)xa.count + (y ? (unsigned long long)ya.count : 0)) * sizeof(float);
    if (cnn_check_memory(who, "the float arrays", bytes)) return NULL;
    cnn_float_arrays *a = (cnn_float_arrays *)cnn__alloc(1, sizeof *a, "float arrays");
    if (!a) return NULL;
    a->n = n;
    a->h = xa.ndim >= 3 ? (int)xa.shape[1] : 1;
    a->w = xa.ndim >= 3 ? (int)xa.shape[2] : 1;
    a->c = xa.ndim == 4 ? (int)xa.shape[3] : xa.ndim == 3 ? 1 : (int)xa.shape[1];
    a->y_width = y_width;
    a->num_classes = classes;
    a->x = (float *)cnn__alloc((size_t)xa.count, sizeof(float), "x");
    if (y) a->y = (float *)cnn__alloc((size_t)ya.count, sizeof(float), "y");
    if (!a->x || (y && !a->y)) { cnn_float_arrays_free(a); return NULL; }
    cnn__npy_to_float(&xa, a->x);
    if (y) cnn__npy_to_float(&ya, a->y);
    return a;
}

CNN_IMPL cnn_float_arrays *cnn_load_npy_float_memory(const unsigned char *x, size_t x_len, const unsigned char *y,
                                                     size_t y_len) {
    return cnn__load_npy_float("cnn_load_npy_float_memory", x, x_len, "cnn_load_npy_float_memory: x", y, y_len,
                               "cnn_load_npy_float_memory: y");
}

CNN_IMPL cnn_float_arrays *cnn_load_npy_float(const char *x_path, const char *y_path) {
    static const char who[] = "cnn_load_npy_float";
    unsigned char *xb, *yb;
    size_t xl, yl;
    char xname[600], yname[600];
    if (cnn__npy_read_pair(who, x_path, y_path, &xb, &xl, &yb, &yl, xname, yname, sizeof xname)) return NULL;
    cnn_float_arrays *a = cnn__load_npy_float(who, xb, xl, xname, yb, yl, yname);
    CNN_FREE(xb);
    CNN_FREE(yb);
    return a;
}

/* ---- float arrays as a batch source ------------------------------------- */

typedef struct cnn__float_source {
    cnn_batch_source src; /* first: the pointer handed out */
    const cnn_float_arrays *a;
    int *order;           /* [n] sample order of the current pass */
    int pos, shuffle;
    uint64_t seed;
} cnn__float_source;

/* One pass's sample order of an array source: order[0..n) = 0..n-1, shuffled
   when asked by a permutation drawn from key (a fresh one per pass: the key
   mixes in the pass). */
static void cnn__pass_order(int *order, int n, int shuffle, uint64_t key) {
    for (int i = 0; i < n; i++) order[i] = i;
    if (!shuffle) return;
    cnn__rng r = {cnn__mix64(key)};
    for (int i = n - 1; i > 0; i--) {
        int j = (int)cnn__rng_below(&r, (uint64_t)i + 1), t = order[i];
        order[i] = order[j]; order[j] = t;
    }
}

static int cnn__float_reset(void *ctx, int epoch) {
    cnn__float_source *s = (cnn__float_source *)ctx;
    cnn__pass_order(s->order, s->a->n, s->shuffle,
                    s->seed ^ (0x464c4f4154ULL + (uint64_t)epoch * 0x9e3779b97f4a7c15ULL));
    s->pos = 0;
    return CNN_OK;
}

static int cnn__float_next(void *ctx, int max_count, float *x, float *y) {
    cnn__float_source *s = (cnn__float_source *)ctx;
    const cnn_float_arrays *a = s->a;
    const size_t per = (size_t)a->h * a->w * a->c, yw = (size_t)a->y_width;
    int count = a->n - s->pos < max_count ? a->n - s->pos : max_count;
    for (int i = 0; i < count; i++) {
        size_t k = (size_t)s->order[s->pos + i];
        memcpy(x + (size_t)i * per, a->x + k * per, per * sizeof(float));
        memcpy(y + (size_t)i * yw, a->y + k * yw, yw * sizeof(float));
    }
    s->pos += count;
    return count;
}

CNN_IMPL cnn_batch_source *cnn_float_source(const cnn_float_arrays *a, int shuffle, uint64_t seed) {
    static const char who[] = "cnn_float_source";
    if (!a || !a->x) {
        cnn_set_error(CNN_ERR_ARG, "%s: the %s is NULL", who, a ? "x array" : "arrays pointer");
        return NULL;
    }
    if (a->n <= 0 || a->h <= 0 || a->w <= 0 || a->c <= 0 ||
        (size_t)a->h * a->w > (size_t)INT_MAX / (size_t)a->c) {
        cnn_set_error(CNN_ERR_ARG, "%s: bad size n=%d h=%d w=%d c=%d", who, a->n, a->h, a->w, a->c);
        return NULL;
    }
    if (!a->y || a->y_width <= 0) {
        cnn_set_error(CNN_ERR_ARG, "%s: the arrays have no targets (y): training needs them", who);
        return NULL;
    }
    cnn__float_source *s = (cnn__float_source *)cnn__alloc(1, sizeof *s, "a float source");
    if (!s) return NULL;
    s->order = (int *)cnn__alloc((size_t)a->n, sizeof(int), "a sample order");
    if (!s->order) { CNN_FREE(s); return NULL; }
    s->a = a;
    s->shuffle = shuffle;
    s->seed = seed;
    s->src.ctx = s;
    s->src.samples = a->n;
    s->src.h = a->h; s->src.w = a->w; s->src.c = a->c;
    s->src.y_width = a->y_width;
    s->src.reset = cnn__float_reset;
    s->src.next = cnn__float_next;
    cnn__float_reset(s, 0);
    return &s->src;
}

CNN_IMPL void cnn_float_source_free(cnn_batch_source *src) {
    if (!src) return;
    cnn__float_source *s = (cnn__float_source *)src; /* src is its first member */
    CNN_FREE(s->order);
    CNN_FREE(s);
}

/* ======================================================================== */
/* Model structures                                                         */
/* ======================================================================== */
/* Shape legend used below: B = batch, H/W/C = a layer's input height, width,
   channels, Ho/Wo/Co = its output, K = kh*kw*C (one im2col row). */

/* Every layer kind: its id, its block (cnn__kind_<block>, see Layers), its
   Keras class name and the prefix of its automatic names, as Keras makes them.
   A kind's position is its type number in the model file: new kinds go last. */
#define CNN__LAYER_KINDS(X)                                                      \
    X(INPUT, input, "InputLayer", "input")                                       \
    X(CONV2D, conv2d, "Conv2D", "conv2d")                                        \
    X(DENSE, dense, "Dense", "dense")                                            \
    X(BATCH_NORM, bn, "BatchNormalization", "batch_normalization")               \
    X(MAX_POOL, maxpool, "MaxPooling2D", "max_pooling2d")                        \
    X(AVG_POOL, avgpool, "AveragePooling2D", "average_pooling2d")                \
    X(GLOBAL_AVG_POOL, gap, "GlobalAveragePooling2D", "global_average_pooling2d") \
    X(FLATTEN, flatten, "Flatten", "flatten")                                    \
    X(DROPOUT, dropout, "Dropout", "dropout")                                    \
    X(ACTIVATION, activation, "Activation", "activation")                        \
    X(ADD, add, "Add", "add")                                                    \
    X(CONCAT, concat, "Concatenate", "concatenate")                              \
    X(ZERO_PADDING, zero_padding, "ZeroPadding2D", "zero_padding2d")              \
    X(UP_SAMPLING, up_sampling, "UpSampling2D", "up_sampling2d")

#define CNN__KIND_ID(id, block, keras, prefix) CNN__##id,
enum cnn__layer_type { CNN__LAYER_KINDS(CNN__KIND_ID) CNN__LAYER_TYPES };
#undef CNN__KIND_ID

#define CNN__MAX_INPUTS 16
#define CNN__NAME_MAX 64

/* The fusion plan: the blocks of layers the fast path runs as one, decided
   once per graph by cnn__plan_fusion (NULL / 0: not fused). The tutorial's
   Conv2D (ReLU) -> BatchNormalization -> MaxPooling2D is the block it is for:
     - a BatchNorm whose only reader is a MaxPooling2D is applied by the pool as
       it reads (y = x * k + shift at each window cell), and its backward pass
       reads the pool's gradient and maxima: its own out and dout stay unused;
     - a Conv2D (ReLU or linear) whose only reader is a BatchNorm sums that
       BatchNorm's batch statistics from its product's tiles as they are stored;
     - when that BatchNorm is in turn fused into a pool whose windows are its
       strides ('valid', at most 256 cells; the last rows or columns may fall
       outside every window) and the conv is narrower than 65536, the Conv2D
       also makes the BatchNorm's input gradient, slice by slice, in its
       backward pass.
   CNN_NO_FUSION plans nothing, and the reference passes (cnn_set_reference)
   ignore the plan; the results agree to rounding (tests/test_reference.c,
   tests/test_core.c). */
typedef struct cnn__fusion {
    struct cnn_node *pool;      /* BatchNorm: the MaxPooling2D that applies it */
    struct cnn_node *bn;        /* Conv2D: the BatchNorm that takes its batch sums from it */
    int bn_input_grad;          /* Conv2D: and whose input gradient it makes (batch mode) */
} cnn__fusion;

struct cnn_node {
    cnn_model *model;
    int index, type;
    char name[CNN__NAME_MAX];
    int n_inputs, inputs[CNN__MAX_INPUTS]; /* node indices, all smaller than index */
    int h, w, c;                           /* output shape of one sample */
    /* options; which ones matter depends on the type */
    int units;                  /* Conv2D filters, Dense units */
    int kh, kw, sh, sw;         /* kernel / pool window and strides */
    int padding, pad_top, pad_left;
    int activation;             /* fused activation (Conv2D, Dense, Activation) */
    float alpha;                /* leaky_relu / elu parameter */
    int use_bias;
    float l1, l2;               /* kernel regularizer */
    float rate;                 /* Dropout */
    float momentum, epsilon;    /* BatchNormalization */
    int trainable;
    /* parameters in model->params: kernel then bias, or gamma then beta */
    size_t p_off, p_count, kernel_count;
    /* non-trainable state in model->state: BatchNorm moving mean then variance */
    size_t s_off, s_count;
    /* per-batch buffers, sized for model->cap_batch samples */
    float *out;                 /* [B][h][w][c] */
    float *dout;                /* [B][h][w][c] gradient of the loss w.r.t. out */
    float *im2col;              /* Conv2D: the im2col rows [B*Ho*Wo][K] the forward pass made (or, see
                                   cnn__conv_grad_from_input, C zeros at its start, the rest unused) */
    float *mask;                /* Dropout: each value's factor, 0 or 1 / (1 - rate) [B][h][w][c] */
    float *x_at_max;            /* MaxPooling2D applying a fused BatchNorm: BatchNorm's input at each
                                   maximum [B][h][w][c] (see cnn__fusion) */
    float *stat;                /* BatchNorm: batch mean [c], inverse std [c] */
    double *acc;                /* BatchNorm: sums [2c], then partial sums [CNN__CHUNKS][2c], then
                                   room for the statistics groups' floats (see cnn__epilogue) */
    float *coef;                /* BatchNorm: per-channel coefficients [3c] of the current pass */
    unsigned char *argmax;      /* MaxPooling2D: the window cell of each output's maximum (see
                                   cnn__argmax_cell) */
    cnn_layer_profile prof;     /* filled while model->profiling */
    int dout_written;           /* backward: a consumer has written dout in this pass */
    cnn__fusion fuse;           /* the fast path's blocks this layer is part of (cnn__plan_fusion) */
    int stats_ready;            /* BatchNorm: the Conv2D before has summed this pass's input */
};

struct cnn_model {
    cnn_node **nodes;
    int n_nodes, cap_nodes;
    int input, output;          /* node indices; -1 until set */
    int built;
    uint64_t seed;
    /* all trainable parameters, gradients and optimizer slots: the same layout */
    float *params, *grads, *slot1, *slot2;
    size_t n_params;
    float *state;               /* non-trainable state (BatchNorm moving statistics) */
    size_t n_state;
    /* compile */
    int compiled;
    cnn_optimizer opt;
    cnn_loss loss;
    int metrics;
    long long step;             /* optimizer steps taken */
    /* input preprocessing for uint8 data */
    float rescale;
    float *mean, *std;          /* [c] or NULL */
    int stats_c;
    char **class_names;
    int n_class_names;
    /* run-time */
    int cap_batch;
    float *scratch;             /* backward passes: transposed kernels, partial sums */
    size_t scratch_size;
    int training;               /* BatchNorm batch statistics, dropout on */
    int dropout_off;            /* training-mode pass without dropout (checks) */
    int update_moving;          /* update BatchNorm moving statistics in this pass */
    uint64_t dropout_step;      /* key of this pass's dropout masks (the optimizer step) */
    float *x_in;                /* the batch being processed [B][h][w][c], not owned */
    float *dx_in;               /* where to put d loss / d input, or NULL */
    int dx_in_written;          /* as cnn_node.dout_written, for dx_in */
    int profiling;
    int reference;              /* the passes run on each kind's reference passes (cnn_set_reference) */
    long long first_sample;     /* the batch's first sample in a larger batch that workers split (a
                                   backend sets it): dropout masks follow the global sample index */
    int dout_is_preact;         /* backward: the output's dout is already d loss / d pre-activation
                                   (softmax + crossentropy, sigmoid + binary crossentropy) */
    cnn_backend backend;        /* backend.forward NULL: the CPU passes */
    cnn__thread_tuner tuner;    /* training's thread count on a busy machine (cnn__tune_begin) */
};

static size_t cnn__node_size(const cnn_node *n) { return (size_t)n->h * n->w * n->c; }

static cnn_node *cnn__in(const cnn_node *n, int i) { return n->model->nodes[n->inputs[i]]; }

/* Whether a layer's output is a vector, not an image (Keras: rank 2): a Dense,
   Flatten or GlobalAveragePooling2D output, or one that keeps such a shape */
static int cnn__is_flat(const cnn_node *n) {
    if (n->type == CNN__DENSE || n->type == CNN__FLATTEN || n->type == CNN__GLOBAL_AVG_POOL) return 1;
    return n->h == 1 && n->w == 1 && n->type != CNN__INPUT && n->type != CNN__CONV2D && n->n_inputs > 0 &&
           cnn__is_flat(cnn__in(n, 0));
}

/* A max pool keeps, for each output, the cell of its window that held the
   maximum, ky * kw + kx: a byte, or two for windows of more than 256 cells. A
   byte is a quarter of an input offset's memory, and BatchNorm's fused
   backward compares 16 of them in one instruction. */
static int cnn__argmax_wide(const cnn_node *pool) { return pool->kh * pool->kw > 256; }
static int cnn__argmax_cell(const cnn_node *pool, size_t i) {
    return cnn__argmax_wide(pool) ? ((const unsigned short *)(const void *)pool->argmax)[i] : pool->argmax[i];
}
/* where cell `cell` of output (oy, ox)'s window lies in the pool's input
   (W_in wide), channel 0, as an offset inside the sample */
static size_t cnn__window_offset(const cnn_node *pool, int W_in, int oy, int ox, int cell) {
    const int iy = oy * pool->sh - pool->pad_top + cell / pool->kw,
              ix = ox * pool->sw - pool->pad_left + cell % pool->kw;
    return ((size_t)iy * W_in + ix) * pool->c;
}

/* The input buffer of node n's i-th input ([B][size]) */
static const float *cnn__in_out(const cnn_node *n, int i) {
    const cnn_node *p = cnn__in(n, i);
    return p->type == CNN__INPUT ? n->model->x_in : p->out;
}

/* ======================================================================== */
/* Graph construction                                                       */
/* ======================================================================== */

#define CNN__KIND_NAME(id, block, keras, prefix) keras,
#define CNN__KIND_PREFIX(id, block, keras, prefix) prefix,
static const char *cnn__type_names[CNN__LAYER_TYPES] = {CNN__LAYER_KINDS(CNN__KIND_NAME)};
static const char *cnn__auto_names[CNN__LAYER_TYPES] = {CNN__LAYER_KINDS(CNN__KIND_PREFIX)};
#undef CNN__KIND_NAME
#undef CNN__KIND_PREFIX

CNN_IMPL cnn_model *cnn_model_new(void) {
    cnn_model *m = (cnn_model *)cnn__alloc(1, sizeof *m, "a model");
    if (!m) return NULL;
    m->input = m->output = -1;
    m->rescale = 1.0f;
#ifdef CNN_REFERENCE
    m->reference = 1;
#endif
    return m;
}

static void cnn__free_buffers(cnn_model *m) {
    for (int i = 0; i < m->n_nodes; i++) {
        cnn_node *n = m->nodes[i];
        CNN_FREE(n->out); CNN_FREE(n->dout); CNN_FREE(n->im2col); CNN_FREE(n->mask); CNN_FREE(n->x_at_max);
        CNN_FREE(n->stat); CNN_FREE(n->argmax);
        CNN_FREE(n->acc); CNN_FREE(n->coef);
        n->out = n->dout = n->im2col = n->mask = n->x_at_max = n->stat = n->coef = NULL;
        n->acc = NULL;
        n->argmax = NULL;
    }
    CNN_FREE(m->scratch);
    m->scratch = NULL;
    m->scratch_size = 0;
    m->cap_batch = 0;
}

CNN_IMPL void cnn_model_free(cnn_model *m) {
    if (!m) return;
    if (m->backend.release) m->backend.release(m);
    cnn__free_buffers(m);
    for (int i = 0; i < m->n_nodes; i++) CNN_FREE(m->nodes[i]);
    CNN_FREE(m->nodes);
    CNN_FREE(m->params); CNN_FREE(m->grads); CNN_FREE(m->slot1); CNN_FREE(m->slot2); CNN_FREE(m->state);
    CNN_FREE(m->mean); CNN_FREE(m->std);
    cnn__free_names(m->class_names, m->n_class_names);
    CNN_FREE(m);
}

static cnn_node *cnn__find(const cnn_model *m, const char *name) {
    for (int i = 0; i < m->n_nodes; i++)
        if (!strcmp(m->nodes[i]->name, name)) return m->nodes[i];
    return NULL;
}

/* Check the model and the inputs of a new layer of `type`; on success return a
   new node (not yet in the graph) with its name set. */
static cnn_node *cnn__new_node(cnn_model *m, int type, cnn_node *const *inputs, int n_inputs,
                               const char *name) {
    const char *kind = cnn__type_names[type];
    const char *shown = name ? name : cnn__auto_names[type];
    if (!m) { cnn_set_error(CNN_ERR_ARG, "%s '%s': the model is NULL", kind, shown); return NULL; }
    if (m->built) {
        cnn_set_error(CNN_ERR_STATE, "%s '%s': the model's output is already set; layers cannot be added",
                      kind, shown);
        return NULL;
    }
    if (n_inputs > CNN__MAX_INPUTS) {
        cnn_set_error(CNN_ERR_ARG, "%s '%s': at most %d inputs", kind, shown, CNN__MAX_INPUTS);
        return NULL;
    }
    for (int i = 0; i < n_inputs; i++) {
        if (!inputs[i]) { /* an earlier layer failed: keep its message, the root cause */
            if (!cnn__error[0]) cnn_set_error(CNN_ERR_ARG, "%s '%s': input %d is NULL", kind, shown, i);
            return NULL;
        }
        if (inputs[i]->model != m || inputs[i]->index >= m->n_nodes ||
            m->nodes[inputs[i]->index] != inputs[i]) {
            cnn_set_error(CNN_ERR_ARG, "%s '%s': input '%s' belongs to another model", kind, shown,
                          inputs[i]->name);
            return NULL;
        }
    }
    if (name && (!name[0] || strlen(name) >= CNN__NAME_MAX)) {
        cnn_set_error(CNN_ERR_ARG, "%s: the name must have 1 to %d characters", kind, CNN__NAME_MAX - 1);
        return NULL;
    }
    if (name && cnn__find(m, name)) {
        cnn_set_error(CNN_ERR_ARG, "%s '%s': a layer with this name already exists", kind, name);
        return NULL;
    }
    cnn_node *n = (cnn_node *)cnn__alloc(1, sizeof *n, "a layer");
    if (!n) return NULL;
    n->model = m;
    n->type = type;
    n->trainable = 1;
    n->n_inputs = n_inputs;
    for (int i = 0; i < n_inputs; i++) n->inputs[i] = inputs[i]->index;
    if (name) {
        strcpy(n->name, name);
    } else { /* Keras style: conv2d, conv2d_1, conv2d_2, ... */
        for (int k = 0;; k++) {
            if (k == 0) snprintf(n->name, sizeof n->name, "%s", cnn__auto_names[type]);
            else snprintf(n->name, sizeof n->name, "%s_%d", cnn__auto_names[type], k);
            if (!cnn__find(m, n->name)) break;
        }
    }
    return n;
}

/* Append a finished node to the graph (takes ownership). */
static cnn_node *cnn__push(cnn_model *m, cnn_node *n) {
    if ((long long)n->h * n->w * n->c > INT_MAX) { /* sizes and offsets inside a sample are ints */
        cnn_set_error(CNN_ERR_SHAPE, "layer '%s': %dx%dx%d values per sample are too many", n->name, n->h,
                      n->w, n->c);
        CNN_FREE(n);
        return NULL;
    }
    if (m->n_nodes == m->cap_nodes) {
        int cap = m->cap_nodes ? m->cap_nodes * 2 : 16;
        cnn_node **nn = (cnn_node **)CNN_REALLOC(m->nodes, (size_t)cap * sizeof *nn);
        if (!nn) {
            cnn_set_error(CNN_ERR_MEMORY, "out of memory adding layer '%s'", n->name);
            CNN_FREE(n);
            return NULL;
        }
        m->nodes = nn;
        m->cap_nodes = cap;
    }
    n->index = m->n_nodes;
    m->nodes[m->n_nodes++] = n;
    cnn__error[0] = 0; /* so that a later NULL input reports the failure that caused it */
    cnn__error_code = CNN_OK;
    return n;
}

static cnn_node *cnn__fail(cnn_node *n) { CNN_FREE(n); return NULL; }

static int cnn__check_activation(int a, float *alpha, const char *layer) {
    if (a < CNN_LINEAR || a > CNN_ELU)
        return cnn_set_error(CNN_ERR_ARG, "layer '%s': unknown activation %d", layer, a);
    if (*alpha == 0.0f) *alpha = a == CNN_LEAKY_RELU ? 0.3f : 1.0f;
    if (!(*alpha > 0.0f) || !isfinite(*alpha))
        return cnn_set_error(CNN_ERR_ARG, "layer '%s': activation alpha must be > 0", layer);
    return CNN_OK;
}

static int cnn__check_regularizer(cnn_regularizer r, const char *layer) {
    if (!(r.l1 >= 0.0f) || !(r.l2 >= 0.0f) || !isfinite(r.l1) || !isfinite(r.l2))
        return cnn_set_error(CNN_ERR_ARG, "layer '%s': regularizer factors must be finite and >= 0", layer);
    return CNN_OK;
}

/* Output size and leading padding of a window sliding over `in` (Keras rules:
   'same' pads ceil(in/s) outputs, the odd pixel at the bottom/right). In 64
   bits: k and s come from the caller, or from a model file. */
static int cnn__window(int in, int k, int s, int padding, int *pad_before) {
    if (padding == CNN_SAME) {
        const long long out = ((long long)in + s - 1) / s, total = (out - 1) * s + k - in;
        *pad_before = total > 0 ? (int)(total / 2) : 0; /* k <= CNN__WINDOW_MAX: fits */
        return (int)out;
    }
    *pad_before = 0;
    return in >= k ? (in - k) / s + 1 : 0;
}

/* the largest kernel, pool window side and stride (a bound that keeps the
   window arithmetic, oy * s - pad + ky, far inside an int) */
#define CNN__WINDOW_MAX 65536
static int cnn__check_window(const char *kind, const char *name, int kh, int kw, int sh, int sw) {
    if (kh > CNN__WINDOW_MAX || kw > CNN__WINDOW_MAX || sh > CNN__WINDOW_MAX || sw > CNN__WINDOW_MAX)
        return cnn_set_error(CNN_ERR_ARG, "%s '%s': window %dx%d with strides %dx%d: at most %d each", kind,
                             name, kh, kw, sh, sw, CNN__WINDOW_MAX);
    return CNN_OK;
}

/* ======================================================================== */
/* GEMM kernels (row-major, register-blocked, OpenMP over output tiles)     */
/* ======================================================================== */
/* Both products the layers need reduce to one micro-kernel that keeps a
   mr x nr tile of C in registers (the kernel path's, see Kernels below) while
   it walks the shared dimension:
     NN: C[M][N] (+)= A[M][K] * B[K][N]        (forward, input gradients)
     TN: C[K][N] (+)= A[M][K]^T * D[M][N]      (weight gradients)
   Each element of C is summed by one thread in a fixed order, so the results
   do not depend on the thread count. */

/* Sums over many rows (BatchNorm statistics, bias and kernel gradients) are
   cut into this many fixed runs of rows, summed in parallel, then added in run
   order: the results do not depend on the thread count. */
#define CNN__CHUNKS 32

/* a*b + c in one rounding where the machine has FMA: ISO C modes (-std=c99)
   forbid the compiler to fuse a*b+c by itself, which would halve the speed */
#ifdef FP_FAST_FMAF
#define CNN__FMA(a, b, c) fmaf((a), (b), (c))
#else
#define CNN__FMA(a, b, c) ((a) * (b) + (c))
#endif

/* The epilogue applied as a finished tile is stored: + bias[j], then ReLU.
   Fusing them saves two passes over a layer's output. */
typedef struct cnn__epilogue {
    const float *bias;
    int relu;
    double *stats; /* gemm_nn's row path, when not NULL: per-chunk sums of the finished
                      outputs and of their squares, [CNN__CHUNKS][2N] (BatchNorm's),
                      then room for [CNN__CHUNKS][3N] floats (the open groups below) */
    /* BatchNorm's statistics, a group of row tiles at a time (see cnn__stats_close):
       a tile's columns of the group's shift (the group's first row) and float
       sums of d = x - shift and of d^2, += each finished row's. The tile that
       opens the group sets the shift and starts the sums. */
    float *shift, *s, *q;
    int opens;
} cnn__epilogue;

/* Memory a pass will read next (bytes [next, end) of base), fetched into L2
   one cache line per step of a product that meanwhile computes from cache:
   the conv output that BatchNorm's pass reads, behind the kernel gradient
   product (see cnn__conv_backward_through_bn), so that the pass does not wait
   on memory */
typedef struct cnn__prefetch { const char *base; size_t next, end; } cnn__prefetch;
#if defined(__GNUC__) || defined(__clang__)
#define CNN__PREFETCH_L2(p) __builtin_prefetch((p), 0, 2)
#else
#define CNN__PREFETCH_L2(p) ((void)(p))
#endif

/* ======================================================================== */
/* Kernels: one section per instruction set, reached through one table      */
/* ======================================================================== */
/* The inner loops the layers spend their time in, written once per
   instruction set. A layer never names an instruction set: it calls
   cnn__kern()->tile(...) and reads the tile shape (mr, tn_mr, nr) from the
   same row. A new instruction set is one more section and one more row of
   cnn__kernel_paths below.
     tile              C[rows][cols] (+)= A B over K, then the epilogue
     tile_prefetching  a full TN tile that also steps a prefetch
     tile_at           a TN tile whose A rows are read through a pointer table
     copy_windows      im2col's whole rows: span rows of kh runs of run floats
     bn_dz_rows        BatchNorm's fused input gradient through ReLU (see
                       cnn__conv_backward_through_bn)
     max_2x2           a 2x2 max-pooling window, BatchNorm applied as it reads
     channel_sums      per-channel sums in double (BatchNorm's statistics and gradient)
     add_into          d += g over a run of floats (the conv input gradient's scatter)
     adam_update       Adam's update of a run of parameters
   Results are bit-identical run to run for a path and a thread count; two
   paths round differently (FMA or not, tile order) and agree to rounding. */
typedef struct cnn__kernel_path {
    const char *name;  /* "avx512", "avx2", "neon", "portable": what CNN_KERNELS and cnn_set_kernels take */
    int mr, tn_mr, nr; /* register tile: rows (NN product), rows (TN product, see tn_height), columns */
    int at_mr;         /* rows of a tile_at tile: a window cell's channels, this many at a time (mr at a time
                          where the rest stays a multiple; see cnn__conv_weight_grad_rows) */
    int at_nr;         /* columns a tile_at call takes: nr, or more where the path has wider tiles */
    int (*supported)(void);
    void (*tile)(int K, const float *a, size_t a_rs, size_t a_ks, const float *b, size_t ldb, float *c,
                 size_t ldc, int rows, int cols, int load, const cnn__epilogue *ep);
    void (*tile_prefetching)(int R, int K, const float *a, size_t a_ks, const float *b, size_t ldb, float *c,
                             size_t ldc, int load, cnn__prefetch *pf);
    void (*tile_at)(int R, int K, const float *const *win, size_t off, const float *b, size_t ldb, float *c,
                    size_t ldc, int cols, int load, cnn__prefetch *pf);
    void (*copy_windows)(float *dst, int ldd, const float *src, size_t step, size_t row_step, int span,
                         int kh, int run);
    void (*bn_dz_rows)(int N, int rows, const float *y, const float *mean, const float *k,
                       const unsigned char *argmax, const float *g, const long long *at, const int *cell,
                       int relu, float *d, float *ss);
    void (*max_2x2)(int C, const float *x0, const float *x2, const float *k, const float *shift, float *y,
                    unsigned char *am, float *xm);
    void (*channel_sums)(const float *a, const float *b, const float *shift, const float *scale, size_t rows,
                         int C, double *p, double *q);
    void (*add_into)(float *d, const float *g, int len);
    void (*adam_update)(float *p, const float *g, float *s1, float *s2, long long count, float b1, float b2,
                        float lr_t, float eps);
} cnn__kernel_path;

/* The tallest register tile and the widest of any path: stack buffers are sized by them */
enum { CNN__MR_MAX = 12, CNN__NR_MAX = 32 };

/* c[r][j] (+)= sum_k a[r*a_rs + k*a_ks] * b[k*ldb + j], then the epilogue, in
   plain loops: the definition the tests hold the tiles to, and what a path's
   tile falls back on for a height it has no registers for (a product's last
   columns go through cnn__tile_padded) */
static void cnn__tile_narrow(int K, const float *CNN__RESTRICT a, size_t a_rs, size_t a_ks,
                             const float *CNN__RESTRICT b, size_t ldb, float *CNN__RESTRICT c, size_t ldc,
                             int rows, int cols, int load, const cnn__epilogue *ep) {
    for (int r = 0; r < rows; r++) {
        float *cr = c + r * ldc;
        if (!load)
            for (int j = 0; j < cols; j++) cr[j] = 0.0f;
        for (int k = 0; k < K; k++) {
            const float ar = a[r * a_rs + (size_t)k * a_ks];
            const float *bk = b + (size_t)k * ldb;
            for (int j = 0; j < cols; j++) cr[j] = CNN__FMA(ar, bk[j], cr[j]);
        }
        if (ep && ep->bias)
            for (int j = 0; j < cols; j++) cr[j] += ep->bias[j];
        if (ep && ep->relu)
            for (int j = 0; j < cols; j++) cr[j] = cr[j] < 0 ? 0.0f : cr[j];
    }
    for (int j = 0; ep && ep->s && j < cols; j++) { /* BatchNorm's statistics (see cnn__stats_close) */
        const float shift = ep->opens ? c[j] : ep->shift[j];
        float s = ep->opens ? 0.0f : ep->s[j], q = ep->opens ? 0.0f : ep->q[j];
        for (int r = 0; r < rows; r++) {
            const float d = c[r * ldc + j] - shift;
            s += d;
            q = CNN__FMA(d, d, q);
        }
        ep->shift[j] = shift;
        ep->s[j] = s;
        ep->q[j] = q;
    }
}

/* A path's tile of all nr columns (see cnn__kernel_path) */
typedef void (*cnn__tile_fn)(int K, const float *a, size_t a_rs, size_t a_ks, const float *b, size_t ldb,
                             float *c, size_t ldc, int rows, int cols, int load, const cnn__epilogue *ep);

/* A tile of cols < nr columns (a Dense layer of 10 units, a conv of 8
   filters) through the path's full-width tile: B's columns copied into
   zero-padded blocks of at most 256 steps, C's rows, the bias and BatchNorm's
   statistics into padded copies, and their first cols columns copied back.
   Each output takes the same multiply-adds in the same order as in a full
   tile, so it rounds as the rest of its path does. The plain loops of
   cnn__tile_narrow had cost the tutorial's softmax layer 0.09 ms a step on
   AVX2, several times its share of the multiply-adds. Never inlined: its
   16 KiB of buffers would come with every call of the path's tile. */
static CNN__NOINLINE void cnn__tile_padded(cnn__tile_fn full, int nr, int K, const float *a, size_t a_rs,
                                           size_t a_ks, const float *b, size_t ldb, float *c, size_t ldc,
                                           int rows, int cols, int load, const cnn__epilogue *ep) {
    enum { KP = 128 }; /* steps of B padded at a time: 16 KiB at most */
    float bp[(int)KP * (int)CNN__NR_MAX], cp[(int)CNN__MR_MAX * (int)CNN__NR_MAX]; /* [kb][nr], [rows][nr] */
    float bias[CNN__NR_MAX] = {0}, shift[CNN__NR_MAX] = {0}, s[CNN__NR_MAX] = {0}, q[CNN__NR_MAX] = {0};
    const size_t width = (size_t)cols * sizeof(float);
    if (rows > CNN__MR_MAX || nr > CNN__NR_MAX) {
        cnn__tile_narrow(K, a, a_rs, a_ks, b, ldb, c, ldc, rows, cols, load, ep);
        return;
    }
    cnn__epilogue e = {NULL, 0, NULL, NULL, NULL, NULL, 0};
    if (ep) {
        e = *ep;
        if (ep->bias) memcpy(bias, ep->bias, width), e.bias = bias;
        if (ep->s) {
            if (!ep->opens) memcpy(shift, ep->shift, width), memcpy(s, ep->s, width), memcpy(q, ep->q, width);
            e.shift = shift, e.s = s, e.q = q;
        }
    }
    for (int r = 0; load && r < rows; r++) { /* the padding too: no garbage through the multiply-adds */
        memcpy(cp + r * nr, c + r * ldc, width);
        memset(cp + r * nr + cols, 0, (size_t)(nr - cols) * sizeof(float));
    }
    for (int k0 = 0; k0 == 0 || k0 < K; k0 += KP) {
        const int kb = K - k0 < KP ? K - k0 : KP;
        for (int k = 0; k < kb; k++) {
            memcpy(bp + (size_t)k * nr, b + (size_t)(k0 + k) * ldb, width);
            memset(bp + (size_t)k * nr + cols, 0, (size_t)(nr - cols) * sizeof(float));
        }
        full(kb, a + (size_t)k0 * a_ks, a_rs, a_ks, bp, (size_t)nr, cp, (size_t)nr, rows, nr, load || k0 > 0,
             k0 + kb >= K && ep ? &e : NULL);
    }
    for (int r = 0; r < rows; r++) memcpy(c + r * ldc, cp + r * nr, width);
    if (ep && ep->s) memcpy(ep->shift, shift, width), memcpy(ep->s, s, width), memcpy(ep->q, q, width);
}

/* the same for a tile_at tile's last columns: A's row k is win[k] + off */
static void cnn__tile_at_narrow(int R, int K, const float *const *CNN__RESTRICT win, size_t off,
                                const float *CNN__RESTRICT b, size_t ldb, float *CNN__RESTRICT c, size_t ldc,
                                int cols, int load) {
    for (int r = 0; r < R; r++) {
        for (int j = 0; !load && j < cols; j++) c[r * ldc + j] = 0.0f;
        for (int k = 0; k < K; k++)
            for (int j = 0; j < cols; j++)
                c[r * ldc + j] = CNN__FMA(win[k][off + r], b[(size_t)k * ldb + j], c[r * ldc + j]);
    }
}

/* dst[0..len) = src[0..len) in fixed-size moves the compiler inlines. The
   runs im2col copies are short (9 floats for a 3x3 kernel on RGB): a memcpy
   call each would cost more than the copy, and a plain copy loop would
   become one (or a slow rep movs). */
static CNN__ALWAYS_INLINE void cnn__copy_floats(float *CNN__RESTRICT dst, const float *CNN__RESTRICT src,
                                                int len) {
    int q = 0;
    for (; q + 16 <= len; q += 16) memcpy(dst + q, src + q, 16 * sizeof(float));
    if (len - q >= 8) { memcpy(dst + q, src + q, 8 * sizeof(float)); q += 8; }
    if (len - q >= 4) { memcpy(dst + q, src + q, 4 * sizeof(float)); q += 4; }
    if (len - q >= 2) { memcpy(dst + q, src + q, 2 * sizeof(float)); q += 2; }
    if (len - q >= 1) dst[q] = src[q];
}

/* ---- portable C: any processor, vectorised by the compiler where it can ---- */

enum { CNN__PORTABLE_MR = 4, CNN__PORTABLE_NR = 16 }; /* 4 x 16 floats: 16 4-float accumulators */

#if defined(__GNUC__) || defined(__clang__)
/* GCC's and Clang's vector types: 4 floats that any target keeps in one
   register (SSE, NEON) or two (none), so that the tile's accumulators stay in
   registers: left to itself, the vectoriser shuffles a float acc[4][16]
   through memory (15 GFLOP/s on an AVX-512 machine). The same operations,
   in the same order, as the plain loops below. */
typedef float cnn__v4 __attribute__((vector_size(16)));
static CNN__ALWAYS_INLINE cnn__v4 cnn__v4_load(const float *p) {
    cnn__v4 v;
    memcpy(&v, p, sizeof v);
    return v;
}
static CNN__ALWAYS_INLINE void cnn__v4_store(float *p, cnn__v4 v) { memcpy(p, &v, sizeof v); }
#define CNN__PORTABLE_V4 1
#endif

/* R full-width rows of a tile, R a constant where this is inlined, so that the
   compiler unrolls the loops and keeps acc in registers. Row r of step k of A
   is a[r * a_rs + k * a_ks], or with a table win (tile_at) win[k][a_ks + r].
   pf, when not NULL: memory to fetch into L2, a cache line per step of k. */
static CNN__ALWAYS_INLINE void cnn__tile_rows_portable(const int R, int K, const float *CNN__RESTRICT a,
                                                       size_t a_rs, size_t a_ks,
                                                       const float *const *CNN__RESTRICT win,
                                                       const float *CNN__RESTRICT b, size_t ldb,
                                                       float *CNN__RESTRICT c, size_t ldc, int load,
                                                       const cnn__epilogue *ep, cnn__prefetch *pf) {
    enum { NR = CNN__PORTABLE_NR };
    float acc[CNN__PORTABLE_MR][NR];
    size_t pf_next = pf ? pf->next : 0, pf_end = pf ? pf->end : 0;
#ifdef CNN__PORTABLE_V4
    cnn__v4 vacc[CNN__PORTABLE_MR][NR / 4];
    for (int r = 0; r < R; r++)
        for (int h = 0; h < NR / 4; h++)
            vacc[r][h] = load ? cnn__v4_load(c + r * ldc + 4 * h) : (cnn__v4){0, 0, 0, 0};
    for (int k = 0; k < K; k++) {
        const float *bk = b + (size_t)k * ldb;
        const float *ak = win ? win[k] + a_ks : a + (size_t)k * a_ks;
        if (pf_next < pf_end) { CNN__PREFETCH_L2(pf->base + pf_next); pf_next += 64; }
        const cnn__v4 b0 = cnn__v4_load(bk), b1 = cnn__v4_load(bk + 4), b2 = cnn__v4_load(bk + 8),
                      b3 = cnn__v4_load(bk + 12);
        for (int r = 0; r < R; r++) {
            const float av = ak[r * a_rs];
            const cnn__v4 ar = {av, av, av, av};
            vacc[r][0] = ar * b0 + vacc[r][0];
            vacc[r][1] = ar * b1 + vacc[r][1];
            vacc[r][2] = ar * b2 + vacc[r][2];
            vacc[r][3] = ar * b3 + vacc[r][3];
        }
    }
    for (int r = 0; r < R; r++)
        for (int h = 0; h < NR / 4; h++) cnn__v4_store(acc[r] + 4 * h, vacc[r][h]);
#else
    for (int r = 0; r < R; r++)
        for (int j = 0; j < NR; j++) acc[r][j] = load ? c[r * ldc + j] : 0.0f;
    for (int k = 0; k < K; k++) {
        const float *bk = b + (size_t)k * ldb;
        const float *ak = win ? win[k] + a_ks : a + (size_t)k * a_ks;
        if (pf_next < pf_end) { CNN__PREFETCH_L2(pf->base + pf_next); pf_next += 64; }
        for (int r = 0; r < R; r++) {
            const float ar = ak[r * a_rs];
            for (int j = 0; j < NR; j++) acc[r][j] = ar * bk[j] + acc[r][j];
        }
    }
#endif
    if (pf) pf->next = pf_next;
    /* the epilogue: + bias (or + 0), then max(., 0) for ReLU (or max(., -inf), a no-op) */
    float bias[NR] = {0};
    const float floor = ep && ep->relu ? 0.0f : -INFINITY;
    if (ep && ep->bias) memcpy(bias, ep->bias, sizeof bias);
    for (int r = 0; r < R; r++)
        for (int j = 0; j < NR; j++) {
            const float v = acc[r][j] + bias[j];
            acc[r][j] = v < floor ? floor : v;
            c[r * ldc + j] = acc[r][j];
        }
    if (ep && ep->s) { /* BatchNorm's statistics (see cnn__stats_close) */
        float shift[NR], s[NR], q[NR];
        for (int j = 0; j < NR; j++) {
            shift[j] = ep->opens ? acc[0][j] : ep->shift[j];
            s[j] = ep->opens ? 0.0f : ep->s[j];
            q[j] = ep->opens ? 0.0f : ep->q[j];
        }
        for (int r = 0; r < R; r++)
            for (int j = 0; j < NR; j++) {
                const float d = acc[r][j] - shift[j];
                s[j] += d;
                q[j] = CNN__FMA(d, d, q[j]);
            }
        for (int j = 0; j < NR; j++) {
            ep->shift[j] = shift[j];
            ep->s[j] = s[j];
            ep->q[j] = q[j];
        }
    }
}

/* Full-width tiles of each height run in registers (one copy of the loop per
   height); narrower ones through them padded (cnn__tile_padded). Never
   inlined: inside a bigger loop the accumulators would spill. */
static CNN__NOINLINE void cnn__tile_portable(int K, const float *a, size_t a_rs, size_t a_ks, const float *b,
                                             size_t ldb, float *c, size_t ldc, int rows, int cols, int load,
                                             const cnn__epilogue *ep) {
    if (cols == CNN__PORTABLE_NR) switch (rows) {
        case 1: cnn__tile_rows_portable(1, K, a, a_rs, a_ks, NULL, b, ldb, c, ldc, load, ep, NULL); return;
        case 2: cnn__tile_rows_portable(2, K, a, a_rs, a_ks, NULL, b, ldb, c, ldc, load, ep, NULL); return;
        case 3: cnn__tile_rows_portable(3, K, a, a_rs, a_ks, NULL, b, ldb, c, ldc, load, ep, NULL); return;
        case 4: cnn__tile_rows_portable(4, K, a, a_rs, a_ks, NULL, b, ldb, c, ldc, load, ep, NULL); return;
        default: break;
        }
    if (cols < CNN__PORTABLE_NR) /* a product's last columns */
        cnn__tile_padded(cnn__tile_portable, CNN__PORTABLE_NR, K, a, a_rs, a_ks, b, ldb, c, ldc, rows, cols, load,
                         ep);
    else /* a height this path has no tile for */
        cnn__tile_narrow(K, a, a_rs, a_ks, b, ldb, c, ldc, rows, cols, load, ep);
}

static CNN__NOINLINE void cnn__tile_prefetching_portable(int R, int K, const float *a, size_t a_ks,
                                                         const float *b, size_t ldb, float *c, size_t ldc,
                                                         int load, cnn__prefetch *pf) {
    (void)R; /* always CNN__PORTABLE_MR: tn_mr is mr here */
    cnn__tile_rows_portable(CNN__PORTABLE_MR, K, a, 1, a_ks, NULL, b, ldb, c, ldc, load, NULL, pf);
}

static CNN__NOINLINE void cnn__tile_at_portable(int R, int K, const float *const *win, size_t off,
                                                const float *b, size_t ldb, float *c, size_t ldc, int cols,
                                                int load, cnn__prefetch *pf) {
    if (cols == CNN__PORTABLE_NR && R == CNN__PORTABLE_MR)
        cnn__tile_rows_portable(CNN__PORTABLE_MR, K, NULL, 1, off, win, b, ldb, c, ldc, load, NULL, pf);
    else
        cnn__tile_at_narrow(R, K, win, off, b, ldb, c, ldc, cols, load);
}

/* The next two are written once in plain C and inlined into each path's
   function, where the compiler vectorises them for that instruction set. */
static CNN__ALWAYS_INLINE void cnn__copy_windows_c(float *dst, int ldd, const float *src, size_t step,
                                                   size_t row_step, int span, int kh, int run) {
    for (int r = 0; r < span; r++, src += step, dst += ldd)
        for (int ky = 0; ky < kh; ky++) cnn__copy_floats(dst + ky * run, src + ky * row_step, run);
}

static CNN__ALWAYS_INLINE void
cnn__bn_dz_rows_c(int N, int rows, const float *CNN__RESTRICT y, const float *CNN__RESTRICT mean,
                  const float *CNN__RESTRICT k, const unsigned char *CNN__RESTRICT argmax,
                  const float *CNN__RESTRICT g, const long long *at, const int *cell, int relu,
                  float *CNN__RESTRICT d, float *CNN__RESTRICT ss) {
    const float *CNN__RESTRICT k1 = k, *CNN__RESTRICT k2 = k + N, *CNN__RESTRICT k3 = k + 2 * N;
    for (int i = 0; i < rows; i++) {
        const float *CNN__RESTRICT yr = y + (size_t)i * N;
        const unsigned char *CNN__RESTRICT am = at[i] >= 0 ? argmax + at[i] : NULL;
        const float *CNN__RESTRICT gr = at[i] >= 0 ? g + at[i] : NULL;
        float *CNN__RESTRICT dr = d + (size_t)i * N;
        for (int c = 0; c < N; c++) {
            float v = CNN__FMA(yr[c] - mean[c], k3[c], k2[c]);
            if (am) v = CNN__FMA(k1[c], am[c] == cell[i] ? gr[c] : 0.0f, v);
            dr[c] = relu && !(yr[c] > 0) ? 0.0f : v;
        }
        for (int c = 0; c < N; c++) ss[c] += dr[c];
    }
}

/* One 2x2 window lying inside the input, all C channels: y [C] the maximum of
   the cells x0, x1 = x0 + C (the window's top row), x2, x3 = x2 + C (its
   bottom row), am [C] the first cell holding it (0 to 3, see cnn__argmax_cell)
   and, when xm is not NULL, xm [C] the input there; BatchNorm's x * k + shift
   applied first when k is not NULL. One pass with everything in registers. */
static CNN__ALWAYS_INLINE void cnn__max_2x2_c(int C, const float *CNN__RESTRICT x0,
                                              const float *CNN__RESTRICT x2, const float *CNN__RESTRICT k,
                                              const float *CNN__RESTRICT shift, float *CNN__RESTRICT y,
                                              unsigned char *CNN__RESTRICT am, float *CNN__RESTRICT xm) {
    const float *CNN__RESTRICT x1 = x0 + C, *CNN__RESTRICT x3 = x2 + C;
    for (int c = 0; c < C; c++) {
        const float v0 = k ? x0[c] * k[c] + shift[c] : x0[c], v1 = k ? x1[c] * k[c] + shift[c] : x1[c];
        const float v2 = k ? x2[c] * k[c] + shift[c] : x2[c], v3 = k ? x3[c] * k[c] + shift[c] : x3[c];
        /* the cell as a float: gcc turns int selects of 0..3 into branches, and stops vectorising */
        float best = v0, raw = x0[c], at = 0;
        at = v1 > best ? 1.0f : at; raw = v1 > best ? x1[c] : raw; best = v1 > best ? v1 : best;
        at = v2 > best ? 2.0f : at; raw = v2 > best ? x2[c] : raw; best = v2 > best ? v2 : best;
        at = v3 > best ? 3.0f : at; raw = v3 > best ? x3[c] : raw; best = v3 > best ? v3 : best;
        y[c] = best;
        am[c] = (unsigned char)at;
        if (xm) xm[c] = raw;
    }
}

/* the three uses, each inlined apart so that each loop vectorises without tests */
static CNN__ALWAYS_INLINE void cnn__max_2x2_any(int C, const float *x0, const float *x2, const float *k,
                                                const float *shift, float *y, unsigned char *am, float *xm) {
    if (k && xm) cnn__max_2x2_c(C, x0, x2, k, shift, y, am, xm);
    else if (k) cnn__max_2x2_c(C, x0, x2, k, shift, y, am, NULL);
    else cnn__max_2x2_c(C, x0, x2, NULL, NULL, y, am, NULL);
}

/* Per-channel sums of rows [rows][C] of a (ld floats apart), in double, row
   after row: p[c] = sum of a[r][c]; q[c] = sum of a[r][c] * t[r][c], where
   t = (b[r][c] - shift[c]) * scale[c] (BatchNorm's gradient against its
   normalised input) or, without b, t = a (sums of squares). A float times a
   float is exact in double, so a fused multiply-add changes nothing and every
   path gives the same sums. Eight channels at a time with their sums in
   registers: summed in memory, each row's sums waited for the row before's. */
static CNN__ALWAYS_INLINE void cnn__channel_sums_c(const float *CNN__RESTRICT a, const float *CNN__RESTRICT b,
                                                   const float *CNN__RESTRICT shift,
                                                   const float *CNN__RESTRICT scale, size_t rows, int C, size_t ld,
                                                   double *CNN__RESTRICT p, double *CNN__RESTRICT q) {
    for (int c0 = 0; c0 < C; c0 += 8) {
        const int w = C - c0 < 8 ? C - c0 : 8;
        double sp[8] = {0}, sq[8] = {0};
        for (size_t r = 0; r < rows; r++) {
            const float *CNN__RESTRICT ar = a + r * ld + c0;
            if (b) {
                const float *CNN__RESTRICT br = b + r * ld + c0;
                for (int j = 0; j < w; j++) {
                    sp[j] += ar[j];
                    sq[j] += (double)ar[j] * ((br[j] - shift[c0 + j]) * scale[c0 + j]);
                }
            } else {
                for (int j = 0; j < w; j++) {
                    sp[j] += ar[j];
                    sq[j] += (double)ar[j] * ar[j];
                }
            }
        }
        for (int j = 0; j < w; j++) p[c0 + j] = sp[j], q[c0 + j] = sq[j];
    }
}

/* d[0..len) += g[0..len), in blocks of 16 with a fixed count that compilers
   vectorise at -O2 too (GCC's -O2 vectorises only loops whose count it knows),
   for each path's vectors where it is inlined */
static CNN__ALWAYS_INLINE void cnn__add_into_c(float *CNN__RESTRICT d, const float *CNN__RESTRICT g, int len) {
    int q = 0;
    for (; q + 16 <= len; q += 16)
        for (int j = 0; j < 16; j++) d[q + j] += g[q + j];
    for (; q < len; q++) d[q] += g[q];
}

static void cnn__add_into_portable(float *d, const float *g, int len) { cnn__add_into_c(d, g, len); }

static void cnn__channel_sums_portable(const float *a, const float *b, const float *shift, const float *scale,
                                       size_t rows, int C, double *p, double *q) {
    if (b) cnn__channel_sums_c(a, b, shift, scale, rows, C, (size_t)C, p, q);
    else cnn__channel_sums_c(a, NULL, NULL, NULL, rows, C, (size_t)C, p, q);
}

static void cnn__copy_windows_portable(float *dst, int ldd, const float *src, size_t step, size_t row_step,
                                       int span, int kh, int run) {
    cnn__copy_windows_c(dst, ldd, src, step, row_step, span, kh, run);
}

static void cnn__bn_dz_rows_portable(int N, int rows, const float *y, const float *mean, const float *k,
                                     const unsigned char *argmax, const float *g, const long long *at,
                                     const int *cell, int relu, float *d, float *ss) {
    cnn__bn_dz_rows_c(N, rows, y, mean, k, argmax, g, at, cell, relu, d, ss);
}

static void cnn__max_2x2_portable(int C, const float *x0, const float *x2, const float *k, const float *shift,
                                  float *y, unsigned char *am, float *xm) {
    cnn__max_2x2_any(C, x0, x2, k, shift, y, am, xm);
}

/* Adam (see cnn__optimizer_step): m = b1 m + (1-b1) g, v = b2 v + (1-b2) g^2,
   p -= lr_t m / (sqrt(v) + eps). Every operation is correctly rounded, so a
   vector path gives the same result as this loop. */
static void cnn__adam_update_portable(float *CNN__RESTRICT p, const float *CNN__RESTRICT g,
                                      float *CNN__RESTRICT s1, float *CNN__RESTRICT s2, long long count,
                                      float b1, float b2, float lr_t, float eps) {
    CNN__PARALLEL_FOR(count)
    for (long long k = 0; k < count; k++) {
        s1[k] = b1 * s1[k] + (1 - b1) * g[k];
        s2[k] = b2 * s2[k] + (1 - b2) * g[k] * g[k];
        p[k] -= lr_t * s1[k] / (sqrtf(s2[k]) + eps);
    }
}

static int cnn__supported_portable(void) { return 1; }

/* A vector path's Adam: lanes parameters at a time through its lanes function,
   the last count % lanes in a zero-padded block through the same function, so
   that every parameter takes the same instructions (sqrtf may set errno, which
   keeps compilers from vectorising the portable loop in ISO C modes). A macro,
   so that the parallel loop is compiled in the path's section, where the lanes
   function inlines, whatever the flags. */
typedef void (*cnn__adam_lanes_fn)(float *p, const float *g, float *s1, float *s2, float b1, float b2,
                                   float lr_t, float eps);
#define CNN__ADAM_BLOCKS(lanes, lanes_fn)                                                                   \
    do {                                                                                                   \
        const long long blocks = count / (lanes);                                                         \
        CNN__PARALLEL_FOR(count)                                                                           \
        for (long long i = 0; i < blocks; i++)                                                             \
            lanes_fn(p + i * (lanes), g + i * (lanes), s1 + i * (lanes), s2 + i * (lanes), b1, b2, lr_t,  \
                     eps);                                                                                 \
        cnn__adam_rest(lanes_fn, p, g, s1, s2, blocks * (lanes), count, b1, b2, lr_t, eps);                 \
    } while (0)
#if defined(__GNUC__) || defined(__clang__)
__attribute__((unused)) /* a build without vector sections (CNN_NO_AVX512 CNN_NO_AVX2) has no use for it */
#endif
static void cnn__adam_rest(cnn__adam_lanes_fn lanes_fn, float *p, const float *g, float *s1, float *s2,
                           long long done, long long count, float b1, float b2, float lr_t, float eps) {
    if (done < count) {
        float tp[16] = {0}, tg[16] = {0}, t1[16] = {0}, t2[16] = {0}; /* lanes <= 16 */
        const size_t rest = (size_t)(count - done) * sizeof(float);
        memcpy(tp, p + done, rest), memcpy(tg, g + done, rest);
        memcpy(t1, s1 + done, rest), memcpy(t2, s2 + done, rest);
        lanes_fn(tp, tg, t1, t2, b1, b2, lr_t, eps);
        memcpy(p + done, tp, rest), memcpy(s1 + done, t1, rest), memcpy(s2 + done, t2, rest);
    }
}


/* ---- AVX-512 (F, BW, VL with FMA): x86-64 from Skylake-SP and Zen 4 on ---- */
/* Compiled whatever the flags where the compiler can target it function by
   function (GCC, Clang), and run only where the processor has it; other
   compilers build it when their flags target AVX-512. CNN_NO_AVX512 leaves it out. */
#if !defined(CNN_NO_AVX512) && (defined(__x86_64__) || defined(_M_X64))
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 6)
#define CNN__AVX512 1
#if defined(__clang__)
#define CNN__AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))
#pragma clang attribute push(CNN__AVX512_TARGET, apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx2,fma")
#pragma GCC optimize("O3") /* the plain C bodies vectorised (and their loops unswitched) at -O2 as at -O3 */
#endif
#elif defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define CNN__AVX512 1
#endif
#endif
#ifdef CNN__AVX512

enum { CNN__AVX512_MR = 8, CNN__AVX512_TN_MR = 9, CNN__AVX512_NR = 32 };
/* 8 x 32 floats = 16 of the 32 zmm registers; the TN product's 9-row tiles
   (18 accumulators) fit K = 27 (a 3x3 kernel on RGB) in 3 tiles, not 4 of 8 */

/* R full-width rows of a tile (R a constant where this is inlined): the same
   operations as cnn__tile_rows_portable, in AVX-512 intrinsics, two zmm
   accumulators a row. In plain C the compiler keeps the 8 x 32 accumulators in
   registers through the product but in memory through the epilogue. */
static CNN__ALWAYS_INLINE void cnn__tile_rows_avx512(const int R, int K, const float *CNN__RESTRICT a,
                                                     size_t a_rs, size_t a_ks,
                                                     const float *const *CNN__RESTRICT win,
                                                     const float *CNN__RESTRICT b, size_t ldb,
                                                     float *CNN__RESTRICT c, size_t ldc, int load,
                                                     const cnn__epilogue *ep, cnn__prefetch *pf) {
    __m512 acc[CNN__AVX512_TN_MR][2];
    CNN__UNROLL(16)
    for (int r = 0; r < R; r++) {
        acc[r][0] = load ? _mm512_loadu_ps(c + r * ldc) : _mm512_setzero_ps();
        acc[r][1] = load ? _mm512_loadu_ps(c + r * ldc + 16) : _mm512_setzero_ps();
    }
    const size_t s1 = a_rs, s3 = 3 * a_rs; /* rows r are read at a0, a4 or a8 plus 0, s1, 2 s1 or s3 */
    size_t pf_next = pf ? pf->next : 0, pf_end = pf ? pf->end : 0;
    CNN__UNROLL(2) /* half the loop's own instructions per FMA */
    for (int k = 0; k < K; k++) {
        const float *bk = b + (size_t)k * ldb;
        const float *a0 = win ? win[k] + a_ks : a + (size_t)k * a_ks, *a4 = a0 + 4 * s1, *a8 = a4 + 4 * s1;
        const __m512 b0 = _mm512_loadu_ps(bk), b1 = _mm512_loadu_ps(bk + 16);
        if (pf_next < pf_end) { CNN__PREFETCH_L2(pf->base + pf_next); pf_next += 64; }
        CNN__UNROLL(16)
        for (int r = 0; r < R; r++) {
            const float *at = r < 4 ? a0 : r < 8 ? a4 : a8;
            const __m512 ar = _mm512_set1_ps(at[r % 4 == 0 ? 0 : r % 4 == 1 ? s1 : r % 4 == 2 ? 2 * s1 : s3]);
            acc[r][0] = _mm512_fmadd_ps(ar, b0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(ar, b1, acc[r][1]);
        }
    }
    if (pf) pf->next = pf_next;
    if (!ep) {
        CNN__UNROLL(16)
        for (int r = 0; r < R; r++) {
            _mm512_storeu_ps(c + r * ldc, acc[r][0]);
            _mm512_storeu_ps(c + r * ldc + 16, acc[r][1]);
        }
        return;
    }
    /* + bias, then max(floor, .): floor 0 for ReLU, else -inf (NaN stays NaN) */
    const __m512 floor = _mm512_set1_ps(ep->relu ? 0.0f : -INFINITY);
    const __m512 bias0 = ep->bias ? _mm512_loadu_ps(ep->bias) : _mm512_setzero_ps();
    const __m512 bias1 = ep->bias ? _mm512_loadu_ps(ep->bias + 16) : _mm512_setzero_ps();
    CNN__UNROLL(16)
    for (int r = 0; r < R; r++) {
        acc[r][0] = _mm512_mask_max_ps(floor, (__mmask16)0xFFFF, floor, _mm512_add_ps(acc[r][0], bias0));
        acc[r][1] = _mm512_mask_max_ps(floor, (__mmask16)0xFFFF, floor, _mm512_add_ps(acc[r][1], bias1));
        _mm512_storeu_ps(c + r * ldc, acc[r][0]);
        _mm512_storeu_ps(c + r * ldc + 16, acc[r][1]);
    }
    if (ep->s) { /* BatchNorm's statistics, as below */
        __m512 shift[2], s[2], q[2];
        for (int h = 0; h < 2; h++) {
            shift[h] = ep->opens ? acc[0][h] : _mm512_loadu_ps(ep->shift + 16 * h);
            s[h] = ep->opens ? _mm512_setzero_ps() : _mm512_loadu_ps(ep->s + 16 * h);
            q[h] = ep->opens ? _mm512_setzero_ps() : _mm512_loadu_ps(ep->q + 16 * h);
        }
        CNN__UNROLL(16)
        for (int r = 0; r < R; r++)
            for (int h = 0; h < 2; h++) {
                const __m512 d = _mm512_sub_ps(acc[r][h], shift[h]);
                s[h] = _mm512_add_ps(s[h], d);
                q[h] = _mm512_fmadd_ps(d, d, q[h]);
            }
        for (int h = 0; h < 2; h++) {
            if (ep->opens) _mm512_storeu_ps(ep->shift + 16 * h, shift[h]);
            _mm512_storeu_ps(ep->s + 16 * h, s[h]);
            _mm512_storeu_ps(ep->q + 16 * h, q[h]);
        }
    }
}

/* bn_dz_rows for channels [c0, c0 + 16Q) (those below N), Q a constant
   where this is inlined: row after row, the Q sums in registers (a sum kept in
   memory would chain each row's add to the previous row's store) */
static CNN__ALWAYS_INLINE void cnn__bn_dz_block_avx512(
    const int Q, int N, int c0, int rows, const float *CNN__RESTRICT y, const float *CNN__RESTRICT mean,
    const float *CNN__RESTRICT k1, const float *CNN__RESTRICT k2, const float *CNN__RESTRICT k3,
    const unsigned char *CNN__RESTRICT argmax, const float *CNN__RESTRICT g, const long long *at,
    const int *cell, int relu, float *CNN__RESTRICT d, float *CNN__RESTRICT ss) {
    __mmask16 lanes[4];
    __m512 vmean[4], v1[4], v2[4], v3[4], sum[4];
    for (int q = 0; q < Q; q++) {
        const int c = c0 + 16 * q;
        lanes[q] = (__mmask16)(N - c >= 16 ? 0xFFFF : (1u << (N - c)) - 1);
        vmean[q] = _mm512_maskz_loadu_ps(lanes[q], mean + c);
        v1[q] = _mm512_maskz_loadu_ps(lanes[q], k1 + c);
        v2[q] = _mm512_maskz_loadu_ps(lanes[q], k2 + c);
        v3[q] = _mm512_maskz_loadu_ps(lanes[q], k3 + c);
        sum[q] = _mm512_maskz_loadu_ps(lanes[q], ss + c);
    }
    for (int i = 0; i < rows; i++) {
        const __m128i here = _mm_set1_epi8((char)cell[i]);
        for (int q = 0; q < Q; q++) {
            const int c = c0 + 16 * q;
            const __m512 yv = _mm512_maskz_loadu_ps(lanes[q], y + (size_t)i * N + c);
            /* live: the lanes ReLU passes (all of them without ReLU); dz is 0 elsewhere */
            const __mmask16 live = relu ? _mm512_mask_cmp_ps_mask(lanes[q], yv, _mm512_setzero_ps(),
                                                                  _CMP_GT_OQ)
                                        : lanes[q];
            __m512 v = _mm512_maskz_fmadd_ps(live, _mm512_sub_ps(yv, vmean[q]), v3[q], v2[q]);
            if (at[i] >= 0) {
                const __mmask16 hit = _mm_mask_cmpeq_epi8_mask(
                    live, _mm_maskz_loadu_epi8(lanes[q], argmax + at[i] + c), here);
                v = _mm512_mask3_fmadd_ps(v1[q], _mm512_maskz_loadu_ps(hit, g + at[i] + c), v, hit);
            }
            _mm512_mask_storeu_ps(d + (size_t)i * N + c, lanes[q], v);
            sum[q] = _mm512_add_ps(sum[q], v);
        }
    }
    for (int q = 0; q < Q; q++) _mm512_mask_storeu_ps(ss + c0 + 16 * q, lanes[q], sum[q]);
}

static CNN__NOINLINE void cnn__tile_avx512(int K, const float *a, size_t a_rs, size_t a_ks, const float *b,
                                           size_t ldb, float *c, size_t ldc, int rows, int cols, int load,
                                           const cnn__epilogue *ep) {
    if (cols == CNN__AVX512_NR) switch (rows) {
        case 1: cnn__tile_rows_avx512(1, K, a, a_rs, a_ks, NULL, b, ldb, c, ldc, load, ep, NULL); return;
        case 2: cnn__tile_rows_avx512(2, K, a, a_rs, a_ks, NULL, b, ldb, c, ldc, load, ep, NULL); return;
        case 3: cnn__tile_rows_avx512(3, K, a, a_rs, a_ks, NULL, b, ldb, c, ldc, load, ep, NULL); return;
        case 4: cnn__tile_rows_avx512(4, K, a, a_rs, a_ks, NULL, b, ldb, c, ldc, load, ep, NULL); return;
        case 5: cnn__tile_rows_avx512(5, K, a, a_rs, a_ks, NULL, b, ldb, c, ldc, load, ep, NULL); return;
        case 6: cnn__tile_rows_avx512(6, K, a, a_rs, a_ks, NULL, b, ldb, c, ldc, load, ep, NULL); return;
        case 7: cnn__tile_rows_avx512(7, K, a, a_rs, a_ks, NULL, b, ldb, c, ldc, load, ep, NULL); return;
        case 8: cnn__tile_rows_avx512(8, K, a, a_rs, a_ks, NULL, b, ldb, c, ldc, load, ep, NULL); return;
        case 9: cnn__tile_rows_avx512(9, K, a, a_rs, a_ks, NULL, b, ldb, c, ldc, load, ep, NULL); return;
        default: break;
        }
    if (cols < CNN__AVX512_NR) /* a product's last columns */
        cnn__tile_padded(cnn__tile_avx512, CNN__AVX512_NR, K, a, a_rs, a_ks, b, ldb, c, ldc, rows, cols, load,
                         ep);
    else /* a height this path has no tile for */
        cnn__tile_narrow(K, a, a_rs, a_ks, b, ldb, c, ldc, rows, cols, load, ep);
}

static CNN__NOINLINE void cnn__tile_prefetching_avx512(int R, int K, const float *a, size_t a_ks,
                                                       const float *b, size_t ldb, float *c, size_t ldc,
                                                       int load, cnn__prefetch *pf) {
    if (R == CNN__AVX512_TN_MR)
        cnn__tile_rows_avx512(CNN__AVX512_TN_MR, K, a, 1, a_ks, NULL, b, ldb, c, ldc, load, NULL, pf);
    else cnn__tile_rows_avx512(CNN__AVX512_MR, K, a, 1, a_ks, NULL, b, ldb, c, ldc, load, NULL, pf);
}

static CNN__NOINLINE void cnn__tile_at_avx512(int R, int K, const float *const *win, size_t off,
                                              const float *b, size_t ldb, float *c, size_t ldc, int cols,
                                              int load, cnn__prefetch *pf) {
    if (cols == CNN__AVX512_NR && R == CNN__AVX512_MR)
        cnn__tile_rows_avx512(CNN__AVX512_MR, K, NULL, 1, off, win, b, ldb, c, ldc, load, NULL, pf);
    else if (cols == CNN__AVX512_NR && R == CNN__AVX512_TN_MR)
        cnn__tile_rows_avx512(CNN__AVX512_TN_MR, K, NULL, 1, off, win, b, ldb, c, ldc, load, NULL, pf);
    else
        cnn__tile_at_narrow(R, K, win, off, b, ldb, c, ldc, cols, load);
}

/* im2col's runs in masked moves of up to 16 floats (a 3x3 window on RGB has runs of 9) */
static void cnn__copy_windows_avx512(float *dst, int ldd, const float *src, size_t step, size_t row_step,
                                     int span, int kh, int run) {
    const __mmask16 tail = (__mmask16)((1u << (run % 16)) - 1);
    for (int r = 0; r < span; r++, src += step, dst += ldd)
        for (int ky = 0; ky < kh; ky++) {
            float *CNN__RESTRICT d = dst + ky * run;
            const float *CNN__RESTRICT s = src + ky * row_step;
            int q = 0;
            for (; q + 16 <= run; q += 16) _mm512_storeu_ps(d + q, _mm512_loadu_ps(s + q));
            _mm512_mask_storeu_ps(d + q, tail, _mm512_maskz_loadu_ps(tail, s + q));
        }
}

static void cnn__bn_dz_rows_avx512(int N, int rows, const float *y, const float *mean, const float *k,
                                   const unsigned char *argmax, const float *g, const long long *at,
                                   const int *cell, int relu, float *d, float *ss) {
    const float *k1 = k, *k2 = k + N, *k3 = k + 2 * N;
    for (int c0 = 0; c0 < N; c0 += 64)
        switch (((N - c0 < 64 ? N - c0 : 64) + 15) / 16) { /* 16-lane blocks of the next 64 channels */
        case 1:
            cnn__bn_dz_block_avx512(1, N, c0, rows, y, mean, k1, k2, k3, argmax, g, at, cell, relu, d, ss);
            break;
        case 2:
            cnn__bn_dz_block_avx512(2, N, c0, rows, y, mean, k1, k2, k3, argmax, g, at, cell, relu, d, ss);
            break;
        case 3:
            cnn__bn_dz_block_avx512(3, N, c0, rows, y, mean, k1, k2, k3, argmax, g, at, cell, relu, d, ss);
            break;
        default:
            cnn__bn_dz_block_avx512(4, N, c0, rows, y, mean, k1, k2, k3, argmax, g, at, cell, relu, d, ss);
            break;
        }
}

static void cnn__max_2x2_avx512(int C, const float *x0, const float *x2, const float *k, const float *shift,
                                float *y, unsigned char *am, float *xm) {
    cnn__max_2x2_any(C, x0, x2, k, shift, y, am, xm);
}

/* cnn__channel_sums_c on 16 * Q channels from c0 (Q = 1 or 2): the sums in
   4 * Q registers of 8 doubles, 8 channels a register (the masked conversion:
   g++ warns about the plain one's undefined vector) */
static CNN__ALWAYS_INLINE void cnn__channel_sums_block_avx512(int Q, const float *a, const float *b,
                                                              const float *shift, const float *scale,
                                                              size_t rows, int C, int c0, double *p,
                                                              double *q) {
    __m512d sp[4], sq[4];
    __m256 sh[4], sc[4];
    for (int v = 0; v < 2 * Q; v++) {
        sp[v] = sq[v] = _mm512_setzero_pd();
        sh[v] = b ? _mm256_loadu_ps(shift + c0 + 8 * v) : _mm256_setzero_ps();
        sc[v] = b ? _mm256_loadu_ps(scale + c0 + 8 * v) : _mm256_setzero_ps();
    }
    for (size_t r = 0; r < rows; r++)
        for (int v = 0; v < 2 * Q; v++) {
            const __m512d xd = _mm512_maskz_cvtps_pd((__mmask8)0xFF, _mm256_loadu_ps(a + r * C + c0 + 8 * v));
            const __m256 t =
                b ? _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(b + r * C + c0 + 8 * v), sh[v]), sc[v])
                  : _mm256_setzero_ps();
            const __m512d td = b ? _mm512_maskz_cvtps_pd((__mmask8)0xFF, t) : xd;
            sp[v] = _mm512_add_pd(sp[v], xd);
            sq[v] = _mm512_fmadd_pd(xd, td, sq[v]);
        }
    for (int v = 0; v < 2 * Q; v++) {
        _mm512_storeu_pd(p + c0 + 8 * v, sp[v]);
        _mm512_storeu_pd(q + c0 + 8 * v, sq[v]);
    }
}

static void cnn__channel_sums_avx512(const float *a, const float *b, const float *shift, const float *scale,
                                     size_t rows, int C, double *p, double *q) {
    int c0 = 0;
    for (; c0 + 32 <= C; c0 += 32)
        if (b) cnn__channel_sums_block_avx512(2, a, b, shift, scale, rows, C, c0, p, q);
        else cnn__channel_sums_block_avx512(2, a, NULL, NULL, NULL, rows, C, c0, p, q);
    for (; c0 + 16 <= C; c0 += 16)
        if (b) cnn__channel_sums_block_avx512(1, a, b, shift, scale, rows, C, c0, p, q);
        else cnn__channel_sums_block_avx512(1, a, NULL, NULL, NULL, rows, C, c0, p, q);
    if (c0 < C && b)
        cnn__channel_sums_c(a + c0, b + c0, shift + c0, scale + c0, rows, C - c0, (size_t)C, p + c0, q + c0);
    else if (c0 < C)
        cnn__channel_sums_c(a + c0, NULL, NULL, NULL, rows, C - c0, (size_t)C, p + c0, q + c0);
}

static void cnn__add_into_avx512(float *d, const float *g, int len) { cnn__add_into_c(d, g, len); }

/* Adam on 16 parameters (see CNN__ADAM_BLOCKS) */
static void cnn__adam_lanes_avx512(float *p, const float *g, float *s1, float *s2, float b1, float b2,
                                   float lr_t, float eps) {
    const __m512 gk = _mm512_loadu_ps(g);
    const __m512 m = _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(b1), _mm512_loadu_ps(s1)),
                                   _mm512_mul_ps(_mm512_set1_ps(1 - b1), gk));
    const __m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(b2), _mm512_loadu_ps(s2)),
                                   _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(1 - b2), gk), gk));
    /* the masked form: g++ warns about the plain form's undefined vector */
    const __m512 root = _mm512_mask_sqrt_ps(v, (__mmask16)0xFFFF, v);
    const __m512 step = _mm512_div_ps(_mm512_mul_ps(_mm512_set1_ps(lr_t), m),
                                      _mm512_add_ps(root, _mm512_set1_ps(eps)));
    _mm512_storeu_ps(s1, m);
    _mm512_storeu_ps(s2, v);
    _mm512_storeu_ps(p, _mm512_sub_ps(_mm512_loadu_ps(p), step));
}

static void cnn__adam_update_avx512(float *p, const float *g, float *s1, float *s2, long long count, float b1,
                                    float b2, float lr_t, float eps) {
    CNN__ADAM_BLOCKS(16, cnn__adam_lanes_avx512);
}

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__) && __GNUC__ >= 6
#pragma GCC pop_options
#endif

static int cnn__supported_avx512(void) {
#if defined(__GNUC__) || defined(__clang__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
#else
    return 1; /* the build targets it (see above) */
#endif
}
#endif /* CNN__AVX512 */

/* ---- AVX2 with FMA: x86-64 from Haswell and Zen 1 on ---- */
/* Built as the AVX-512 section is (see there); CNN_NO_AVX2 leaves it out. */
#if !defined(CNN_NO_AVX2) && (defined(__x86_64__) || defined(_M_X64))
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 6)
#define CNN__AVX2 1
#define CNN__AVX2_TARGET __attribute__((target("avx2,fma")))
#if defined(__clang__)
#pragma clang attribute push(CNN__AVX2_TARGET, apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#pragma GCC optimize("O3") /* as in the AVX-512 section */
#endif
#elif defined(__AVX2__) /* MSVC's /arch:AVX2 brings FMA too, without saying __FMA__ */
#define CNN__AVX2 1
#endif
#endif
#ifdef CNN__AVX2

/* 6 x 16 floats: 12 of the 16 ymm registers, with two for B's row and one for
   A's broadcast value. tile_at takes a window cell's channels 4 at a time, so
   that the common channel counts (multiples of 4) take its fast path. */
enum { CNN__AVX2_MR = 6, CNN__AVX2_TN_MR = 9, CNN__AVX2_NR = 16, CNN__AVX2_AT_MR = 4 };

/* R full-width rows of a tile: the operations of cnn__tile_rows_portable in
   AVX2 intrinsics, two ymm accumulators a row */
static CNN__ALWAYS_INLINE void cnn__tile_rows_avx2(const int R, int K, const float *CNN__RESTRICT a,
                                                   size_t a_rs, size_t a_ks,
                                                   const float *const *CNN__RESTRICT win,
                                                   const float *CNN__RESTRICT b, size_t ldb,
                                                   float *CNN__RESTRICT c, size_t ldc, int load,
                                                   const cnn__epilogue *ep, cnn__prefetch *pf) {
    __m256 acc[CNN__AVX2_MR][2];
    CNN__UNROLL(8)
    for (int r = 0; r < R; r++) {
        acc[r][0] = load ? _mm256_loadu_ps(c + r * ldc) : _mm256_setzero_ps();
        acc[r][1] = load ? _mm256_loadu_ps(c + r * ldc + 8) : _mm256_setzero_ps();
    }
    size_t pf_next = pf ? pf->next : 0, pf_end = pf ? pf->end : 0;
    CNN__UNROLL(2)
    for (int k = 0; k < K; k++) {
        const float *bk = b + (size_t)k * ldb;
        const float *ak = win ? win[k] + a_ks : a + (size_t)k * a_ks;
        const __m256 b0 = _mm256_loadu_ps(bk), b1 = _mm256_loadu_ps(bk + 8);
        if (pf_next < pf_end) { CNN__PREFETCH_L2(pf->base + pf_next); pf_next += 64; }
        CNN__UNROLL(8)
        for (int r = 0; r < R; r++) {
            const __m256 ar = _mm256_broadcast_ss(ak + r * a_rs);
            acc[r][0] = _mm256_fmadd_ps(ar, b0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(ar, b1, acc[r][1]);
        }
    }
    if (pf) pf->next = pf_next;
    /* + bias (or + 0), then max(floor, .): floor 0 for ReLU, else -inf (NaN stays NaN) */
    const __m256 floor = _mm256_set1_ps(ep && ep->relu ? 0.0f : -INFINITY);
    const __m256 bias0 = ep && ep->bias ? _mm256_loadu_ps(ep->bias) : _mm256_setzero_ps();
    const __m256 bias1 = ep && ep->bias ? _mm256_loadu_ps(ep->bias + 8) : _mm256_setzero_ps();
    CNN__UNROLL(8)
    for (int r = 0; r < R; r++) {
        if (ep) {
            acc[r][0] = _mm256_max_ps(floor, _mm256_add_ps(acc[r][0], bias0));
            acc[r][1] = _mm256_max_ps(floor, _mm256_add_ps(acc[r][1], bias1));
        }
        _mm256_storeu_ps(c + r * ldc, acc[r][0]);
        _mm256_storeu_ps(c + r * ldc + 8, acc[r][1]);
    }
    if (ep && ep->s) { /* BatchNorm's statistics from the registers (see cnn__stats_close) */
        __m256 shift[2], s[2], q[2];
        for (int h = 0; h < 2; h++) {
            shift[h] = ep->opens ? acc[0][h] : _mm256_loadu_ps(ep->shift + 8 * h);
            s[h] = ep->opens ? _mm256_setzero_ps() : _mm256_loadu_ps(ep->s + 8 * h);
            q[h] = ep->opens ? _mm256_setzero_ps() : _mm256_loadu_ps(ep->q + 8 * h);
        }
        CNN__UNROLL(8)
        for (int r = 0; r < R; r++)
            for (int h = 0; h < 2; h++) {
                const __m256 d = _mm256_sub_ps(acc[r][h], shift[h]);
                s[h] = _mm256_add_ps(s[h], d);
                q[h] = _mm256_fmadd_ps(d, d, q[h]);
            }
        for (int h = 0; h < 2; h++) {
            _mm256_storeu_ps(ep->shift + 8 * h, shift[h]);
            _mm256_storeu_ps(ep->s + 8 * h, s[h]);
            _mm256_storeu_ps(ep->q + 8 * h, q[h]);
        }
    }
}

/* 3 rows x 16 columns of the TN product, without an epilogue: 6 accumulators
   would make one chain of multiply-adds each, too few to hide the
   multiply-add's latency (4 cycles, 2 a cycle), so even and odd steps k add
   into two sets, summed at the end. Rows as in cnn__tile_rows_avx2. */
static CNN__ALWAYS_INLINE void cnn__tile3_avx2(int K, const float *CNN__RESTRICT a, size_t a_rs, size_t a_ks,
                                               const float *const *CNN__RESTRICT win,
                                               const float *CNN__RESTRICT b, size_t ldb,
                                               float *CNN__RESTRICT c, size_t ldc, int load,
                                               cnn__prefetch *pf) {
    __m256 acc[2][3][2]; /* [k % 2][row][half] */
    CNN__UNROLL(3)
    for (int r = 0; r < 3; r++)
        for (int h = 0; h < 2; h++) {
            acc[0][r][h] = load ? _mm256_loadu_ps(c + r * ldc + 8 * h) : _mm256_setzero_ps();
            acc[1][r][h] = _mm256_setzero_ps();
        }
    size_t pf_next = pf ? pf->next : 0, pf_end = pf ? pf->end : 0;
    for (int k0 = 0; k0 < K; k0 += 2)
        CNN__UNROLL(2)
        for (int p = 0; p < 2; p++) { /* step k0 + p, into set p */
            const int k = k0 + p;
            if (k == K) break;
            const float *ak = win ? win[k] + a_ks : a + (size_t)k * a_ks;
            const __m256 b0 = _mm256_loadu_ps(b + (size_t)k * ldb), b1 = _mm256_loadu_ps(b + (size_t)k * ldb + 8);
            if (pf_next < pf_end) { CNN__PREFETCH_L2(pf->base + pf_next); pf_next += 64; }
            CNN__UNROLL(3)
            for (int r = 0; r < 3; r++) {
                const __m256 ar = _mm256_broadcast_ss(ak + r * a_rs);
                acc[p][r][0] = _mm256_fmadd_ps(ar, b0, acc[p][r][0]);
                acc[p][r][1] = _mm256_fmadd_ps(ar, b1, acc[p][r][1]);
            }
        }
    if (pf) pf->next = pf_next;
    CNN__UNROLL(3)
    for (int r = 0; r < 3; r++)
        for (int h = 0; h < 2; h++) _mm256_storeu_ps(c + r * ldc + 8 * h, _mm256_add_ps(acc[0][r][h], acc[1][r][h]));
}

/* The TN product's 9-row tiles (kernel rows of 9 floats: 3x3 on RGB, 3x1 on 3
   channels, ...) as a 6-row tile and a 3-row one: 9 rows x 16 columns would
   need 18 accumulators and AVX2 has 16 registers. Two 9 x 8 halves, 9
   accumulators each, took one broadcast per multiply-add, so that a step's
   loads outran its multiply-adds: conv_1's weight gradient alone, one thread,
   went from 94 to 113 GFLOP/s. */
static CNN__ALWAYS_INLINE void cnn__tile9_avx2(int K, const float *CNN__RESTRICT a, size_t a_rs, size_t a_ks,
                                               const float *const *CNN__RESTRICT win,
                                               const float *CNN__RESTRICT b, size_t ldb,
                                               float *CNN__RESTRICT c, size_t ldc, int load,
                                               cnn__prefetch *pf) {
    cnn__tile_rows_avx2(6, K, a, a_rs, a_ks, win, b, ldb, c, ldc, load, NULL, pf);
    if (win) cnn__tile3_avx2(K, NULL, 1, a_ks + 6, win, b, ldb, c + 6 * ldc, ldc, load, pf);
    else cnn__tile3_avx2(K, a + 6 * a_rs, a_rs, a_ks, NULL, b, ldb, c + 6 * ldc, ldc, load, pf);
}

static CNN__NOINLINE void cnn__tile_avx2(int K, const float *a, size_t a_rs, size_t a_ks, const float *b,
                                         size_t ldb, float *c, size_t ldc, int rows, int cols, int load,
                                         const cnn__epilogue *ep) {
    if (cols == CNN__AVX2_NR && rows == CNN__AVX2_TN_MR && !ep) { /* the TN product's edge tiles */
        cnn__tile9_avx2(K, a, a_rs, a_ks, NULL, b, ldb, c, ldc, load, NULL);
        return;
    }
    if (cols == CNN__AVX2_NR) switch (rows) {
        case 1: cnn__tile_rows_avx2(1, K, a, a_rs, a_ks, NULL, b, ldb, c, ldc, load, ep, NULL); return;
        case 2: cnn__tile_rows_avx2(2, K, a, a_rs, a_ks, NULL, b, ldb, c, ldc, load, ep, NULL); return;
        case 3: cnn__tile_rows_avx2(3, K, a, a_rs, a_ks, NULL, b, ldb, c, ldc, load, ep, NULL); return;
        case 4: cnn__tile_rows_avx2(4, K, a, a_rs, a_ks, NULL, b, ldb, c, ldc, load, ep, NULL); return;
        case 5: cnn__tile_rows_avx2(5, K, a, a_rs, a_ks, NULL, b, ldb, c, ldc, load, ep, NULL); return;
        case 6: cnn__tile_rows_avx2(6, K, a, a_rs, a_ks, NULL, b, ldb, c, ldc, load, ep, NULL); return;
        default: break;
        }
    if (cols < CNN__AVX2_NR) /* a product's last columns */
        cnn__tile_padded(cnn__tile_avx2, CNN__AVX2_NR, K, a, a_rs, a_ks, b, ldb, c, ldc, rows, cols, load,
                         ep);
    else /* a height this path has no tile for */
        cnn__tile_narrow(K, a, a_rs, a_ks, b, ldb, c, ldc, rows, cols, load, ep);
}

static CNN__NOINLINE void cnn__tile_prefetching_avx2(int R, int K, const float *a, size_t a_ks,
                                                     const float *b, size_t ldb, float *c, size_t ldc,
                                                     int load, cnn__prefetch *pf) {
    if (R == CNN__AVX2_TN_MR) cnn__tile9_avx2(K, a, 1, a_ks, NULL, b, ldb, c, ldc, load, pf);
    else cnn__tile_rows_avx2(CNN__AVX2_MR, K, a, 1, a_ks, NULL, b, ldb, c, ldc, load, NULL, pf);
}

/* 3 rows x 32 columns of a TN tile whose A rows are read through win (rows r
   at win[k] + a_ks + r): 12 accumulators, 3 broadcasts and one B vector at a
   time fill the 16 registers, for 8 loads a step against 12 multiply-adds
   (the 6 + 3 rows of cnn__tile9_avx2 take 15 against 18, and two 6 x 16
   tiles 18 against 24). Three of them make the 9 x 32 tile of 9-float kernel
   rows (3x3 on RGB: conv_1's weight gradient), two the 6 x 32 tile of a
   window cell's channels (conv_2's). */
static CNN__ALWAYS_INLINE void cnn__tile3x32_avx2(int K, const float *const *CNN__RESTRICT win, size_t a_ks,
                                                  const float *CNN__RESTRICT b, size_t ldb,
                                                  float *CNN__RESTRICT c, size_t ldc, int load,
                                                  cnn__prefetch *pf) {
    __m256 acc[3][4];
    CNN__UNROLL(3)
    for (int r = 0; r < 3; r++)
        for (int h = 0; h < 4; h++) acc[r][h] = load ? _mm256_loadu_ps(c + r * ldc + 8 * h) : _mm256_setzero_ps();
    size_t pf_next = pf ? pf->next : 0, pf_end = pf ? pf->end : 0;
    for (int k = 0; k < K; k++) {
        const float *ak = win[k] + a_ks, *bk = b + (size_t)k * ldb;
        if (pf_next < pf_end) { CNN__PREFETCH_L2(pf->base + pf_next); pf_next += 64; }
        const __m256 a0 = _mm256_broadcast_ss(ak), a1 = _mm256_broadcast_ss(ak + 1),
                     a2 = _mm256_broadcast_ss(ak + 2);
        CNN__UNROLL(4)
        for (int h = 0; h < 4; h++) {
            const __m256 bh = _mm256_loadu_ps(bk + 8 * h);
            acc[0][h] = _mm256_fmadd_ps(a0, bh, acc[0][h]);
            acc[1][h] = _mm256_fmadd_ps(a1, bh, acc[1][h]);
            acc[2][h] = _mm256_fmadd_ps(a2, bh, acc[2][h]);
        }
    }
    if (pf) pf->next = pf_next;
    CNN__UNROLL(3)
    for (int r = 0; r < 3; r++)
        for (int h = 0; h < 4; h++) _mm256_storeu_ps(c + r * ldc + 8 * h, acc[r][h]);
}

static CNN__NOINLINE void cnn__tile_at_avx2(int R, int K, const float *const *win, size_t off, const float *b,
                                            size_t ldb, float *c, size_t ldc, int cols, int load,
                                            cnn__prefetch *pf) {
    if ((R == CNN__AVX2_TN_MR || R == CNN__AVX2_MR) && cols == 2 * CNN__AVX2_NR) { /* see cnn__tile3x32_avx2 */
        for (int r = 0; r < R; r += 3)
            cnn__tile3x32_avx2(K, win, off + (size_t)r, b, ldb, c + (size_t)r * ldc, ldc, load, pf);
        return;
    }
    if (cols > CNN__AVX2_NR) { /* the last columns of an at_nr-wide step: 16, then the rest */
        cnn__tile_at_avx2(R, K, win, off, b, ldb, c, ldc, CNN__AVX2_NR, load, pf);
        cnn__tile_at_avx2(R, K, win, off, b + CNN__AVX2_NR, ldb, c + CNN__AVX2_NR, ldc, cols - CNN__AVX2_NR, load,
                          pf);
        return;
    }
    if (cols == CNN__AVX2_NR && R == CNN__AVX2_AT_MR)
        cnn__tile_rows_avx2(CNN__AVX2_AT_MR, K, NULL, 1, off, win, b, ldb, c, ldc, load, NULL, pf);
    else if (cols == CNN__AVX2_NR && R == CNN__AVX2_MR)
        cnn__tile_rows_avx2(CNN__AVX2_MR, K, NULL, 1, off, win, b, ldb, c, ldc, load, NULL, pf);
    else if (cols == CNN__AVX2_NR && R == CNN__AVX2_TN_MR)
        cnn__tile9_avx2(K, NULL, 1, off, win, b, ldb, c, ldc, load, pf);
    else
        cnn__tile_at_narrow(R, K, win, off, b, ldb, c, ldc, cols, load);
}

static void cnn__copy_windows_avx2(float *dst, int ldd, const float *src, size_t step, size_t row_step,
                                   int span, int kh, int run) {
    cnn__copy_windows_c(dst, ldd, src, step, row_step, span, kh, run);
}

/* bn_dz_rows for channels [c0, c0 + 8Q), Q (1 or 2) and RELU constants where
   this is inlined: the 4Q coefficient vectors and the Q sums stay in registers
   from row to row (16 registers hold no more), and a row tests once whether it
   lies in a pooling window. */
static CNN__ALWAYS_INLINE void cnn__bn_dz_block_avx2(
    const int Q, const int RELU, int N, int c0, int rows, const float *CNN__RESTRICT y,
    const float *CNN__RESTRICT mean, const float *CNN__RESTRICT k1, const float *CNN__RESTRICT k2,
    const float *CNN__RESTRICT k3, const unsigned char *CNN__RESTRICT argmax, const float *CNN__RESTRICT g,
    const long long *at, const int *cell, float *CNN__RESTRICT d, float *CNN__RESTRICT ss) {
    __m256 sum[2], mq[2], k1q[2], k2q[2], k3q[2];
    const __m256 zero = _mm256_setzero_ps();
    for (int q = 0; q < Q; q++) {
        const int c = c0 + 8 * q;
        sum[q] = _mm256_loadu_ps(ss + c);
        mq[q] = _mm256_loadu_ps(mean + c);
        k1q[q] = _mm256_loadu_ps(k1 + c);
        k2q[q] = _mm256_loadu_ps(k2 + c);
        k3q[q] = _mm256_loadu_ps(k3 + c);
    }
    for (int i = 0; i < rows; i++) {
        const float *yi = y + (size_t)i * N + c0;
        float *di = d + (size_t)i * N + c0;
        __m256 v[2];
        for (int q = 0; q < Q; q++) v[q] = _mm256_fmadd_ps(_mm256_sub_ps(_mm256_loadu_ps(yi + 8 * q), mq[q]), k3q[q], k2q[q]);
        if (at[i] >= 0) { /* the pooled gradient where this cell held its window's maximum */
            const __m128i here = _mm_set1_epi8((char)cell[i]);
            const unsigned char *am = argmax + at[i] + c0;
            const float *gi = g + at[i] + c0;
            for (int q = 0; q < Q; q++) {
                const __m128i cells = _mm_loadl_epi64((const __m128i *)(const void *)(am + 8 * q));
                const __m256 hit = _mm256_castsi256_ps(_mm256_cvtepi8_epi32(_mm_cmpeq_epi8(cells, here)));
                v[q] = _mm256_fmadd_ps(k1q[q], _mm256_and_ps(hit, _mm256_loadu_ps(gi + 8 * q)), v[q]);
            }
        }
        for (int q = 0; q < Q; q++) {
            /* dz is 0 where ReLU stopped the gradient */
            if (RELU) v[q] = _mm256_and_ps(v[q], _mm256_cmp_ps(_mm256_loadu_ps(yi + 8 * q), zero, _CMP_GT_OQ));
            _mm256_storeu_ps(di + 8 * q, v[q]);
            sum[q] = _mm256_add_ps(sum[q], v[q]);
        }
    }
    for (int q = 0; q < Q; q++) _mm256_storeu_ps(ss + c0 + 8 * q, sum[q]);
}

static void cnn__bn_dz_rows_avx2(int N, int rows, const float *y, const float *mean, const float *k,
                                 const unsigned char *argmax, const float *g, const long long *at,
                                 const int *cell, int relu, float *d, float *ss) {
    const float *k1 = k, *k2 = k + N, *k3 = k + 2 * N;
    if (N % 8) { /* channel counts that vectors do not tile: the plain loop */
        cnn__bn_dz_rows_c(N, rows, y, mean, k, argmax, g, at, cell, relu, d, ss);
        return;
    }
    for (int c0 = 0; c0 < N; c0 += 16) { /* 16 channels at a time, 8 where 8 are left */
        const int two = N - c0 >= 16;
        if (two && relu) cnn__bn_dz_block_avx2(2, 1, N, c0, rows, y, mean, k1, k2, k3, argmax, g, at, cell, d, ss);
        else if (two) cnn__bn_dz_block_avx2(2, 0, N, c0, rows, y, mean, k1, k2, k3, argmax, g, at, cell, d, ss);
        else if (relu) cnn__bn_dz_block_avx2(1, 1, N, c0, rows, y, mean, k1, k2, k3, argmax, g, at, cell, d, ss);
        else cnn__bn_dz_block_avx2(1, 0, N, c0, rows, y, mean, k1, k2, k3, argmax, g, at, cell, d, ss);
    }
}

static void cnn__max_2x2_avx2(int C, const float *x0, const float *x2, const float *k, const float *shift,
                              float *y, unsigned char *am, float *xm) {
    cnn__max_2x2_any(C, x0, x2, k, shift, y, am, xm);
}

/* cnn__channel_sums_c on 8 * Q channels from c0 (Q = 1 or 2): the sums in
   4 * Q registers of 4 doubles */
static CNN__ALWAYS_INLINE void cnn__channel_sums_block_avx2(int Q, const float *a, const float *b,
                                                            const float *shift, const float *scale, size_t rows,
                                                            int C, int c0, double *p, double *q) {
    __m256d sp[4], sq[4];
    __m256 sh[2], sc[2];
    for (int v = 0; v < 2 * Q; v++) sp[v] = sq[v] = _mm256_setzero_pd();
    for (int v = 0; v < Q; v++) {
        sh[v] = b ? _mm256_loadu_ps(shift + c0 + 8 * v) : _mm256_setzero_ps();
        sc[v] = b ? _mm256_loadu_ps(scale + c0 + 8 * v) : _mm256_setzero_ps();
    }
    for (size_t r = 0; r < rows; r++) {
        const float *ar = a + r * C + c0;
        for (int v = 0; v < Q; v++) {
            const __m256 x = _mm256_loadu_ps(ar + 8 * v);
            const __m256 t =
                b ? _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(b + r * C + c0 + 8 * v), sh[v]), sc[v]) : x;
            const __m256d x0 = _mm256_cvtps_pd(_mm256_castps256_ps128(x));
            const __m256d x1 = _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1));
            const __m256d t0 = b ? _mm256_cvtps_pd(_mm256_castps256_ps128(t)) : x0;
            const __m256d t1 = b ? _mm256_cvtps_pd(_mm256_extractf128_ps(t, 1)) : x1;
            sp[2 * v] = _mm256_add_pd(sp[2 * v], x0);
            sp[2 * v + 1] = _mm256_add_pd(sp[2 * v + 1], x1);
            sq[2 * v] = _mm256_fmadd_pd(x0, t0, sq[2 * v]);
            sq[2 * v + 1] = _mm256_fmadd_pd(x1, t1, sq[2 * v + 1]);
        }
    }
    for (int v = 0; v < 2 * Q; v++) {
        _mm256_storeu_pd(p + c0 + 4 * v, sp[v]);
        _mm256_storeu_pd(q + c0 + 4 * v, sq[v]);
    }
}

static void cnn__channel_sums_avx2(const float *a, const float *b, const float *shift, const float *scale,
                                   size_t rows, int C, double *p, double *q) {
    int c0 = 0;
    for (; c0 + 16 <= C; c0 += 16)
        if (b) cnn__channel_sums_block_avx2(2, a, b, shift, scale, rows, C, c0, p, q);
        else cnn__channel_sums_block_avx2(2, a, NULL, NULL, NULL, rows, C, c0, p, q);
    for (; c0 + 8 <= C; c0 += 8)
        if (b) cnn__channel_sums_block_avx2(1, a, b, shift, scale, rows, C, c0, p, q);
        else cnn__channel_sums_block_avx2(1, a, NULL, NULL, NULL, rows, C, c0, p, q);
    if (c0 < C && b)
        cnn__channel_sums_c(a + c0, b + c0, shift + c0, scale + c0, rows, C - c0, (size_t)C, p + c0, q + c0);
    else if (c0 < C)
        cnn__channel_sums_c(a + c0, NULL, NULL, NULL, rows, C - c0, (size_t)C, p + c0, q + c0);
}

static void cnn__add_into_avx2(float *d, const float *g, int len) { cnn__add_into_c(d, g, len); }

/* Adam on 8 parameters (see CNN__ADAM_BLOCKS) */
static void cnn__adam_lanes_avx2(float *p, const float *g, float *s1, float *s2, float b1, float b2,
                                 float lr_t, float eps) {
    const __m256 gk = _mm256_loadu_ps(g);
    const __m256 m = _mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(b1), _mm256_loadu_ps(s1)),
                                   _mm256_mul_ps(_mm256_set1_ps(1 - b1), gk));
    const __m256 v = _mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(b2), _mm256_loadu_ps(s2)),
                                   _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(1 - b2), gk), gk));
    const __m256 step = _mm256_div_ps(_mm256_mul_ps(_mm256_set1_ps(lr_t), m),
                                      _mm256_add_ps(_mm256_sqrt_ps(v), _mm256_set1_ps(eps)));
    _mm256_storeu_ps(s1, m);
    _mm256_storeu_ps(s2, v);
    _mm256_storeu_ps(p, _mm256_sub_ps(_mm256_loadu_ps(p), step));
}

static void cnn__adam_update_avx2(float *p, const float *g, float *s1, float *s2, long long count, float b1,
                                  float b2, float lr_t, float eps) {
    CNN__ADAM_BLOCKS(8, cnn__adam_lanes_avx2);
}

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__) && __GNUC__ >= 6
#pragma GCC pop_options
#endif

static int cnn__supported_avx2(void) {
#if defined(__GNUC__) || defined(__clang__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 1; /* the build targets it (see above) */
#endif
}
#endif /* CNN__AVX2 */

/* ---- ARM NEON (AArch64, where it is always there) ---- */
/* CNN_NO_NEON leaves it out. */
#if !defined(CNN_NO_NEON) && defined(__aarch64__)
#define CNN__NEON 1

/* 6 x 16 floats: 24 of the 32 q registers, four for B's row and one for A's value */
enum { CNN__NEON_MR = 6, CNN__NEON_NR = 16, CNN__NEON_AT_MR = 4 };

/* R full-width rows of a tile: the operations of cnn__tile_rows_portable in
   NEON intrinsics, four q accumulators a row */
static CNN__ALWAYS_INLINE void cnn__tile_rows_neon(const int R, int K, const float *CNN__RESTRICT a,
                                                   size_t a_rs, size_t a_ks,
                                                   const float *const *CNN__RESTRICT win,
                                                   const float *CNN__RESTRICT b, size_t ldb,
                                                   float *CNN__RESTRICT c, size_t ldc, int load,
                                                   const cnn__epilogue *ep, cnn__prefetch *pf) {
    float32x4_t acc[CNN__NEON_MR][4];
    for (int r = 0; r < R; r++)
        for (int h = 0; h < 4; h++) acc[r][h] = load ? vld1q_f32(c + r * ldc + 4 * h) : vdupq_n_f32(0.0f);
    size_t pf_next = pf ? pf->next : 0, pf_end = pf ? pf->end : 0;
    for (int k = 0; k < K; k++) {
        const float *bk = b + (size_t)k * ldb;
        const float *ak = win ? win[k] + a_ks : a + (size_t)k * a_ks;
        const float32x4_t b0 = vld1q_f32(bk), b1 = vld1q_f32(bk + 4), b2 = vld1q_f32(bk + 8),
                          b3 = vld1q_f32(bk + 12);
        if (pf_next < pf_end) { CNN__PREFETCH_L2(pf->base + pf_next); pf_next += 64; }
        for (int r = 0; r < R; r++) {
            const float32x4_t ar = vdupq_n_f32(ak[r * a_rs]);
            acc[r][0] = vfmaq_f32(acc[r][0], ar, b0);
            acc[r][1] = vfmaq_f32(acc[r][1], ar, b1);
            acc[r][2] = vfmaq_f32(acc[r][2], ar, b2);
            acc[r][3] = vfmaq_f32(acc[r][3], ar, b3);
        }
    }
    if (pf) pf->next = pf_next;
    /* + bias (or + 0), then max(floor, .): floor 0 for ReLU, else -inf (NaN stays NaN) */
    const float32x4_t floor = vdupq_n_f32(ep && ep->relu ? 0.0f : -INFINITY);
    for (int r = 0; r < R; r++)
        for (int h = 0; h < 4; h++) {
            if (ep) {
                const float32x4_t bias = ep->bias ? vld1q_f32(ep->bias + 4 * h) : vdupq_n_f32(0.0f);
                acc[r][h] = vmaxq_f32(floor, vaddq_f32(acc[r][h], bias));
            }
            vst1q_f32(c + r * ldc + 4 * h, acc[r][h]);
        }
    if (ep && ep->s) /* BatchNorm's statistics from the registers (see cnn__stats_close) */
        for (int h = 0; h < 4; h++) {
            const float32x4_t shift = ep->opens ? acc[0][h] : vld1q_f32(ep->shift + 4 * h);
            float32x4_t s = ep->opens ? vdupq_n_f32(0.0f) : vld1q_f32(ep->s + 4 * h);
            float32x4_t q = ep->opens ? vdupq_n_f32(0.0f) : vld1q_f32(ep->q + 4 * h);
            for (int r = 0; r < R; r++) {
                const float32x4_t d = vsubq_f32(acc[r][h], shift);
                s = vaddq_f32(s, d);
                q = vfmaq_f32(q, d, d);
            }
            vst1q_f32(ep->shift + 4 * h, shift);
            vst1q_f32(ep->s + 4 * h, s);
            vst1q_f32(ep->q + 4 * h, q);
        }
}

static CNN__NOINLINE void cnn__tile_neon(int K, const float *a, size_t a_rs, size_t a_ks, const float *b,
                                         size_t ldb, float *c, size_t ldc, int rows, int cols, int load,
                                         const cnn__epilogue *ep) {
    if (cols == CNN__NEON_NR) switch (rows) {
        case 1: cnn__tile_rows_neon(1, K, a, a_rs, a_ks, NULL, b, ldb, c, ldc, load, ep, NULL); return;
        case 2: cnn__tile_rows_neon(2, K, a, a_rs, a_ks, NULL, b, ldb, c, ldc, load, ep, NULL); return;
        case 3: cnn__tile_rows_neon(3, K, a, a_rs, a_ks, NULL, b, ldb, c, ldc, load, ep, NULL); return;
        case 4: cnn__tile_rows_neon(4, K, a, a_rs, a_ks, NULL, b, ldb, c, ldc, load, ep, NULL); return;
        case 5: cnn__tile_rows_neon(5, K, a, a_rs, a_ks, NULL, b, ldb, c, ldc, load, ep, NULL); return;
        case 6: cnn__tile_rows_neon(6, K, a, a_rs, a_ks, NULL, b, ldb, c, ldc, load, ep, NULL); return;
        default: break;
        }
    if (cols < CNN__NEON_NR) /* a product's last columns */
        cnn__tile_padded(cnn__tile_neon, CNN__NEON_NR, K, a, a_rs, a_ks, b, ldb, c, ldc, rows, cols, load,
                         ep);
    else /* a height this path has no tile for */
        cnn__tile_narrow(K, a, a_rs, a_ks, b, ldb, c, ldc, rows, cols, load, ep);
}

static CNN__NOINLINE void cnn__tile_prefetching_neon(int R, int K, const float *a, size_t a_ks,
                                                     const float *b, size_t ldb, float *c, size_t ldc,
                                                     int load, cnn__prefetch *pf) {
    (void)R; /* always CNN__NEON_MR: tn_mr is mr here */
    cnn__tile_rows_neon(CNN__NEON_MR, K, a, 1, a_ks, NULL, b, ldb, c, ldc, load, NULL, pf);
}

static CNN__NOINLINE void cnn__tile_at_neon(int R, int K, const float *const *win, size_t off, const float *b,
                                            size_t ldb, float *c, size_t ldc, int cols, int load,
                                            cnn__prefetch *pf) {
    if (cols == CNN__NEON_NR && R == CNN__NEON_AT_MR)
        cnn__tile_rows_neon(CNN__NEON_AT_MR, K, NULL, 1, off, win, b, ldb, c, ldc, load, NULL, pf);
    else if (cols == CNN__NEON_NR && R == CNN__NEON_MR)
        cnn__tile_rows_neon(CNN__NEON_MR, K, NULL, 1, off, win, b, ldb, c, ldc, load, NULL, pf);
    else
        cnn__tile_at_narrow(R, K, win, off, b, ldb, c, ldc, cols, load);
}

/* Adam on 4 parameters at a time (AArch64's vector square root and division
   round correctly, as the portable loop's) */
static void cnn__adam_lanes_neon(float *p, const float *g, float *s1, float *s2, float b1, float b2,
                                 float lr_t, float eps) {
    const float32x4_t gk = vld1q_f32(g);
    const float32x4_t m = vaddq_f32(vmulq_f32(vdupq_n_f32(b1), vld1q_f32(s1)),
                                    vmulq_f32(vdupq_n_f32(1 - b1), gk));
    const float32x4_t v = vaddq_f32(vmulq_f32(vdupq_n_f32(b2), vld1q_f32(s2)),
                                    vmulq_f32(vmulq_f32(vdupq_n_f32(1 - b2), gk), gk));
    const float32x4_t step = vdivq_f32(vmulq_f32(vdupq_n_f32(lr_t), m),
                                       vaddq_f32(vsqrtq_f32(v), vdupq_n_f32(eps)));
    vst1q_f32(s1, m);
    vst1q_f32(s2, v);
    vst1q_f32(p, vsubq_f32(vld1q_f32(p), step));
}

static void cnn__adam_update_neon(float *p, const float *g, float *s1, float *s2, long long count, float b1,
                                  float b2, float lr_t, float eps) {
    CNN__ADAM_BLOCKS(4, cnn__adam_lanes_neon);
}

static int cnn__supported_neon(void) { return 1; }
#endif /* CNN__NEON */

/* ---- the table ---- */

/* Best first: the first row the processor supports runs unless CNN_KERNELS
   or cnn_set_kernels names another. */
static const cnn__kernel_path cnn__kernel_paths[] = {
#ifdef CNN__AVX512
    {"avx512", CNN__AVX512_MR, CNN__AVX512_TN_MR, CNN__AVX512_NR, CNN__AVX512_MR, CNN__AVX512_NR,
     cnn__supported_avx512, cnn__tile_avx512, cnn__tile_prefetching_avx512, cnn__tile_at_avx512,
     cnn__copy_windows_avx512, cnn__bn_dz_rows_avx512, cnn__max_2x2_avx512, cnn__channel_sums_avx512,
     cnn__add_into_avx512, cnn__adam_update_avx512},
#endif
#ifdef CNN__AVX2
    {"avx2", CNN__AVX2_MR, CNN__AVX2_TN_MR, CNN__AVX2_NR, CNN__AVX2_AT_MR, 2 * CNN__AVX2_NR,
     cnn__supported_avx2, cnn__tile_avx2, cnn__tile_prefetching_avx2, cnn__tile_at_avx2,
     cnn__copy_windows_avx2, cnn__bn_dz_rows_avx2, cnn__max_2x2_avx2, cnn__channel_sums_avx2,
     cnn__add_into_avx2, cnn__adam_update_avx2},
#endif
#ifdef CNN__NEON
    {"neon", CNN__NEON_MR, CNN__NEON_MR, CNN__NEON_NR, CNN__NEON_AT_MR, CNN__NEON_NR, cnn__supported_neon,
     cnn__tile_neon, cnn__tile_prefetching_neon, cnn__tile_at_neon, cnn__copy_windows_portable,
     cnn__bn_dz_rows_portable, cnn__max_2x2_portable, cnn__channel_sums_portable, cnn__add_into_portable,
     cnn__adam_update_neon},
#endif
    {"portable", CNN__PORTABLE_MR, CNN__PORTABLE_MR, CNN__PORTABLE_NR, CNN__PORTABLE_MR, CNN__PORTABLE_NR,
     cnn__supported_portable, cnn__tile_portable, cnn__tile_prefetching_portable, cnn__tile_at_portable,
     cnn__copy_windows_portable, cnn__bn_dz_rows_portable, cnn__max_2x2_portable, cnn__channel_sums_portable,
     cnn__add_into_portable, cnn__adam_update_portable},
};
enum { CNN__KERNEL_PATHS = (int)(sizeof cnn__kernel_paths / sizeof cnn__kernel_paths[0]) };

static const cnn__kernel_path *cnn__kernel_path_now; /* NULL until the first use */
/* read and written atomically where the compiler can, so that models on several threads may start together */
#if defined(__GNUC__) || defined(__clang__)
#define CNN__LOAD_PATH() __atomic_load_n(&cnn__kernel_path_now, __ATOMIC_ACQUIRE)
#define CNN__STORE_PATH(k) __atomic_store_n(&cnn__kernel_path_now, (k), __ATOMIC_RELEASE)
#else
#define CNN__LOAD_PATH() cnn__kernel_path_now
#define CNN__STORE_PATH(k) (cnn__kernel_path_now = (k))
#endif

/* the row named name that this processor runs, or NULL */
static const cnn__kernel_path *cnn__find_kernel_path(const char *name) {
    for (int i = 0; i < CNN__KERNEL_PATHS; i++)
        if (!strcmp(cnn__kernel_paths[i].name, name) && cnn__kernel_paths[i].supported())
            return &cnn__kernel_paths[i];
    return NULL;
}

static const cnn__kernel_path *cnn__best_kernel_path(void) {
    for (int i = 0; i < CNN__KERNEL_PATHS; i++)
        if (cnn__kernel_paths[i].supported()) return &cnn__kernel_paths[i];
    return &cnn__kernel_paths[CNN__KERNEL_PATHS - 1];
}

/* The path in use: chosen at the first call, from CNN_KERNELS when it names
   a path this processor runs (a warning on stderr when it does not). The
   layers call it outside their parallel loops. */
static const cnn__kernel_path *cnn__kern(void) {
    const cnn__kernel_path *now = CNN__LOAD_PATH();
    if (now) return now;
    const char *want = getenv("CNN_KERNELS");
    const cnn__kernel_path *k = want && *want && strcmp(want, "auto") ? cnn__find_kernel_path(want) : NULL;
    if (want && *want && strcmp(want, "auto") && !k)
        fprintf(stderr, "cnn.h: CNN_KERNELS=%s is not a kernel path this build and processor run; using %s\n",
                want, cnn__best_kernel_path()->name);
    CNN__STORE_PATH(k ? k : cnn__best_kernel_path());
    return CNN__LOAD_PATH();
}

CNN_IMPL int cnn_set_kernels(const char *name) {
    if (!name || !name[0] || !strcmp(name, "auto")) {
        CNN__STORE_PATH(cnn__best_kernel_path());
        return CNN_OK;
    }
    const cnn__kernel_path *k = cnn__find_kernel_path(name);
    if (!k) {
        char runs[128] = "";
        for (int i = 0; i < CNN__KERNEL_PATHS; i++)
            if (cnn__kernel_paths[i].supported())
                snprintf(runs + strlen(runs), sizeof runs - strlen(runs), "%s%s", runs[0] ? ", " : "",
                         cnn__kernel_paths[i].name);
        return cnn_set_error(CNN_ERR_ARG,
                             "cnn_set_kernels: '%s' is not a kernel path this build and processor run (%s)",
                             name, runs);
    }
    CNN__STORE_PATH(k);
    return CNN_OK;
}

CNN_IMPL const char *cnn_kernels(void) { return cnn__kern()->name; }

/* the epilogue with its bias, and the statistics of group (when not NULL),
   moved to column j, for the last slice of K only */
static cnn__epilogue cnn__epilogue_at(const cnn__epilogue *ep, int j, const cnn__epilogue *group) {
    cnn__epilogue e = {ep && ep->bias ? ep->bias + j : NULL, ep ? ep->relu : 0, NULL, NULL, NULL, NULL, 0};
    if (group) { e.shift = group->shift + j; e.s = group->s + j; e.q = group->q + j; e.opens = group->opens; }
    return e;
}

/* The tiles of a run of gemm_nn's row path take BatchNorm's statistics in
   groups of this many row tiles. Within a group, float sums of d = x - shift
   (the shift: the group's first row) and of d^2; at its end, those of x and
   x^2 in double (cnn__stats_close). Float sums of x^2 would lose the variance
   of activations far from 0; double ones in every tile cost 7% of a shallow
   conv's forward pass. d is small (its squares add up to no more than twice
   the group's own squared deviations plus its first row's), so its float sums
   keep the variance. Longer groups lose more to float rounding: with 8 tiles
   the batch statistics stay within 2.3e-7 of double sums even with an outlier
   as the shift (test_core), with 16 within 9.1e-7. */
enum { CNN__STATS_TILES = 8 };
/* a group of G rows into the run's sums, columns [0, N): sum x = sum d + G shift,
   sum x^2 = sum d^2 + shift (2 sum d + G shift) */
static void cnn__stats_close(int N, int G, const cnn__epilogue *group, double *CNN__RESTRICT sum,
                             double *CNN__RESTRICT sq) {
    for (int j = 0; j < N; j++) {
        const double sh = group->shift[j];
        sum[j] += group->s[j] + G * sh;
        sq[j] += group->q[j] + sh * (2.0 * group->s[j] + G * sh);
    }
}

/* A Conv2D's input, read as its im2col matrix a tile at a time (see cnn__im2col_rows) */
typedef struct cnn__conv_input { const cnn_node *conv, *in; const float *x; float *col; } cnn__conv_input;
static void cnn__im2col_rows(const cnn_node *n, const cnn_node *in, const float *x, int r0, int rows, int k0,
                             int kb, float *CNN__RESTRICT dst, int ldd);

enum { CNN__KB = 256 }; /* a 256-deep slice of B stays in L2 while row tiles stream */
/* im2col rows kept for the backward pass are made this many row tiles at a
   time: fewer calls, with longer spans of whole rows copied in each */
enum { CNN__IM2COL_TILES = 16 };
/* A shallow conv (K up to this) that keeps no im2col makes the rows of the
   same number of tiles at a time on the stack; deeper ones read the input
   directly (cnn__conv_tile_inside) or make a tile's rows at a time */
enum { CNN__GROUP_K = 32 };

/* Whether rows [i, i+rows) of conv n's output lie in one output row with
   their windows inside its input (no padding read) */
static int cnn__conv_rows_inside(const cnn_node *n, const cnn_node *in, int i, int rows) {
    const int oy = i % (n->h * n->w) / n->w, ox = i % n->w;
    const int iy0 = oy * n->sh - n->pad_top, ix0 = ox * n->sw - n->pad_left;
    return ox + rows <= n->w && iy0 >= 0 && iy0 + n->kh <= in->h && ix0 >= 0 &&
           ix0 + (rows - 1) * n->sw + n->kw <= in->w;
}

/* c [rows][N] (+)= rows [i, i+rows) of conv n's im2col matrix times B [K][N],
   read from the input itself (see cnn__conv_rows_inside): for each kernel row
   ky, A's rows are runs of kw*C floats of x, one every sw*C floats. The same
   sums in the same order as from im2col, so the same results. */
static void cnn__conv_tile_inside(const cnn__conv_input *cv, int i, int rows, const float *CNN__RESTRICT B,
                                  int ldb, float *CNN__RESTRICT c, int ldc, int N, int load,
                                  const cnn__epilogue *ep, const cnn__epilogue *group) {
    const cnn__kernel_path *kern = cnn__kern();
    const cnn_node *n = cv->conv, *in = cv->in;
    const int HWo = n->h * n->w, b = i / HWo, oy = i % HWo / n->w, ox = i % n->w;
    const int C = in->c, W = in->w, run = n->kw * C;
    const float *x0 = cv->x +
                      (((size_t)b * in->h + oy * n->sh - n->pad_top) * W + ox * n->sw - n->pad_left) * C;
    for (int ky = 0; ky < n->kh; ky++)
        for (int k0 = 0; k0 < run; k0 += CNN__KB) {
            const int kb = run - k0 < CNN__KB ? run - k0 : CNN__KB, last = ky == n->kh - 1 && k0 + kb == run;
            for (int j = 0; j < N; j += kern->nr) {
                const cnn__epilogue e = cnn__epilogue_at(ep, j, group);
                kern->tile(kb, x0 + (size_t)ky * W * C + k0, (size_t)n->sw * C, 1,
                           B + (size_t)(ky * run + k0) * ldb + j, (size_t)ldb, c + j, (size_t)ldc, rows,
                           N - j < kern->nr ? N - j : kern->nr, load || ky > 0 || k0 > 0, last ? &e : NULL);
            }
        }
}

/* Rows of the next register tile where `left` rows remain: mr, but for the
   last two tiles, which share what is left evenly. A short tile has too few
   accumulators to hide the multiply-add's latency: a batch of 32 on 6-row
   tiles is 6 + 6 + 6 + 6 + 4 + 4 rows, not 6 + 6 + 6 + 6 + 6 + 2. */
static int cnn__rows_of_tile(int left, int mr) {
    return left > mr && left < 2 * mr ? (left + 1) / 2 : (left < mr ? left : mr);
}

/* C = A B (+ C), with the epilogue on the last slice of K. With conv != NULL
   (and M >= 64 * kern->mr), A is the conv's im2col matrix, made just before use
   so that the product reads it from cache: CNN__IM2COL_TILES row tiles at a
   time into conv->col when the backward pass will read it again; else as
   many on the stack for a shallow conv (CNN__GROUP_K), and for a deeper one a
   tile whose windows lie inside the input reads the input itself
   (cnn__conv_tile_inside), any other making its rows in a small buffer. */
static void cnn__gemm_nn(int M, int N, int K, const float *A, int lda, const float *CNN__RESTRICT B,
                         int ldb, float *CNN__RESTRICT C, int ldc, int accumulate, const cnn__epilogue *ep,
                         const cnn__conv_input *conv) {
    const cnn__kernel_path *kern = cnn__kern();
    const int row_tiles = (M + kern->mr - 1) / kern->mr, col_tiles = (N + kern->nr - 1) / kern->nr;
    CNN_ASSERT(M >= 64 * kern->mr || (!conv && !(ep && ep->stats)));
    if (M < 64 * kern->mr) {
        /* Few rows (a Dense layer's batch): threads take column panels, so each
           panel of B is read from memory once and serves every row. The sums run
           in the same order as below. */
        int tiles = 1; /* row tiles per block of B (1 for no rows, which then fetch nothing) */
        for (int i = cnn__rows_of_tile(M, kern->mr); i < M; i += cnn__rows_of_tile(M - i, kern->mr))
            tiles++;
        CNN__PARALLEL_FOR((long long)M * N * K)
        for (int ct = 0; ct < col_tiles; ct++) {
            const int j = ct * kern->nr, cols = N - j < kern->nr ? N - j : kern->nr;
            const cnn__epilogue e = cnn__epilogue_at(ep, j, NULL);
            for (int k0 = 0; k0 < K; k0 += CNN__KB) {
                const int kb = K - k0 < CNN__KB ? K - k0 : CNN__KB;
                /* The next block of B (the panel's next rows, else the next
                   panel's first) is fetched into L2 a share per row tile: the
                   first tile of a block otherwise waits on its rows of B, ldb
                   apart, one after another (fc1's forward pass ran at a third
                   of the peak). Every line of each row: nr floats need not
                   start on a line. */
                const int next_j = k0 + kb < K ? j : j + kern->nr, next_k = k0 + kb < K ? k0 + kb : 0;
                const int next_end = next_j >= N ? next_k : (K - next_k < CNN__KB ? K : next_k + CNN__KB);
                const int per_tile = (next_end - next_k + tiles - 1) / tiles;
                const int next_cols = N - next_j < kern->nr ? N - next_j : kern->nr;
                const size_t row_bytes = (size_t)next_cols * sizeof(float);
                int fetch = next_k;
                for (int i = 0, rows; i < M; i += rows) {
                    rows = cnn__rows_of_tile(M - i, kern->mr);
                    const int stop = fetch + per_tile < next_end ? fetch + per_tile : next_end;
                    for (; fetch < stop; fetch++) {
                        const char *row = (const char *)(B + (size_t)fetch * ldb + next_j);
                        for (size_t o = 0; o < row_bytes; o += 64) CNN__PREFETCH_L2(row + o);
                        CNN__PREFETCH_L2(row + row_bytes - 1);
                    }
                    kern->tile(kb, A + (size_t)i * lda + k0, (size_t)lda, 1, B + (size_t)k0 * ldb + j,
                               (size_t)ldb, C + (size_t)i * ldc + j, (size_t)ldc, rows, cols,
                               accumulate || k0 > 0, k0 + kb == K ? &e : NULL);
                }
            }
        }
        return;
    }
    /* Threads take row tiles; with statistics, in CNN__CHUNKS fixed runs of
       tiles, so that the sums taken run by run do not depend on the thread count. */
    const int runs = ep && ep->stats ? CNN__CHUNKS : row_tiles;
    CNN__PARALLEL_FOR((long long)M * N * K)
    for (int run = 0; run < runs; run++) {
        double *CNN__RESTRICT sum = ep && ep->stats ? ep->stats + (size_t)run * 2 * N : NULL,
                              *CNN__RESTRICT sq = sum ? sum + N : NULL;
        for (int c = 0; sum && c < 2 * N; c++) sum[c] = 0;
        cnn__epilogue stats = {NULL, 0, NULL, NULL, NULL, NULL, 0}; /* the open group of tiles' statistics */
        int stats_rows = 0;
        if (sum) {
            stats.shift = (float *)(void *)(ep->stats + (size_t)CNN__CHUNKS * 2 * N) + (size_t)run * 3 * N;
            stats.s = stats.shift + N;
            stats.q = stats.s + N;
        }
        const int t0 = (int)((long long)row_tiles * run / runs),
                  t1 = (int)((long long)row_tiles * (run + 1) / runs);
        /* im2col rows made CNN__IM2COL_TILES tiles at a time: into the kept
           matrix, or for a shallow conv that keeps none into group */
        const int grouped = conv && (conv->col || K <= CNN__GROUP_K);
        float group[CNN__IM2COL_TILES * CNN__MR_MAX * CNN__GROUP_K]; /* [rows][K] */
        const float *made = A; /* rows made, from row made_i0 on, lda apart */
        int made_i0 = 0;
        for (int t = t0; t < t1; t++) {
            const int i = t * kern->mr, rows = M - i < kern->mr ? M - i : kern->mr;
            float *c = C + (size_t)i * ldc;
            if (sum && t + 1 < t1) {
                /* training's conv output (read back by BatchNorm and the pool):
                   the next row tile's rows of C fetched into L2 as this one
                   runs, since a store that misses waits for its line to come in
                   (conv_1's 7.4 MB output took a quarter of its forward pass;
                   0.9 -> 0.8 ms at 2 threads on AVX2) */
                const int next_rows = M - i - kern->mr < kern->mr ? M - i - kern->mr : kern->mr;
                const char *next = (const char *)(c + (size_t)kern->mr * ldc);
                for (size_t o = 0; o < (size_t)next_rows * ldc * sizeof(float); o += 64)
                    CNN__PREFETCH_L2(next + o);
            }
            stats.opens = (t - t0) % CNN__STATS_TILES == 0;
            if (sum && stats.opens && stats_rows) {
                cnn__stats_close(N, stats_rows, &stats, sum, sq);
                stats_rows = 0;
            }
            stats_rows += rows;
            if (grouped && (t - t0) % CNN__IM2COL_TILES == 0) {
                const int end = (t + CNN__IM2COL_TILES < t1 ? t + CNN__IM2COL_TILES : t1) * kern->mr;
                float *dst = conv->col ? conv->col + (size_t)i * lda : group;
                cnn__im2col_rows(conv->conv, conv->in, conv->x, i, (end < M ? end : M) - i, 0, K, dst, lda);
                made = dst;
                made_i0 = i;
            }
            /* windows inside the input: no im2col needed */
            if (conv && !grouped && cnn__conv_rows_inside(conv->conv, conv->in, i, rows)) {
                cnn__conv_tile_inside(conv, i, rows, B, ldb, c, ldc, N, accumulate, ep, sum ? &stats : NULL);
                continue;
            }
            for (int k0 = 0; k0 < K; k0 += CNN__KB) {
                const int kb = K - k0 < CNN__KB ? K - k0 : CNN__KB;
                float a_rows[CNN__MR_MAX * CNN__KB]; /* an im2col block [rows][kb] nobody keeps */
                const float *ak = made + (size_t)(i - made_i0) * lda + k0;
                size_t a_rs = (size_t)lda;
                if (conv && !grouped) {
                    cnn__im2col_rows(conv->conv, conv->in, conv->x, i, rows, k0, kb, a_rows, CNN__KB);
                    ak = a_rows;
                    a_rs = CNN__KB;
                }
                for (int j = 0; j < N; j += kern->nr) {
                    const cnn__epilogue e = cnn__epilogue_at(ep, j, sum ? &stats : NULL);
                    kern->tile(kb, ak, a_rs, 1, B + (size_t)k0 * ldb + j, (size_t)ldb, c + j, (size_t)ldc,
                               rows, N - j < kern->nr ? N - j : kern->nr, accumulate || k0 > 0,
                               k0 + kb == K ? &e : NULL);
                }
            }
        }
        if (sum && stats_rows) cnn__stats_close(N, stats_rows, &stats, sum, sq);
    }
}

/* rows of the TN product's tiles of C [K][N] (see kern->tn_mr), and their count */
static int cnn__tn_height(const cnn__kernel_path *kern, int K) {
    return K % kern->mr != 0 && K % kern->tn_mr == 0 ? kern->tn_mr : kern->mr;
}
static int cnn__tn_tile_count(int K, int N) {
    const cnn__kernel_path *kern = cnn__kern();
    const int h = cnn__tn_height(kern, K);
    return ((K + h - 1) / h) * ((N + kern->nr - 1) / kern->nr);
}

/* The TN product over rows [m0, m0+mb) of A and D for C's tiles lo..hi-1
   (numbered row tile * col_tiles + column tile), added to C (load) or not */
enum { CNN__TN_ROWS = 256 }; /* rows of A and D visited per pass, so they stay in cache */
static void cnn__tn_tiles(int lo, int hi, int m0, int mb, int N, int K, const float *CNN__RESTRICT A, int lda,
                          const float *CNN__RESTRICT D, int ldd, float *CNN__RESTRICT C, int ldc, int load,
                          cnn__prefetch *pf) {
    const cnn__kernel_path *kern = cnn__kern();
    const int col_tiles = (N + kern->nr - 1) / kern->nr, h = cnn__tn_height(kern, K);
    for (int t = lo; t < hi; t++) {
        const int k = (t / col_tiles) * h, j = (t % col_tiles) * kern->nr;
        const int rows = K - k < h ? K - k : h, cols = N - j < kern->nr ? N - j : kern->nr;
        if (pf && rows == h && cols == kern->nr)
            kern->tile_prefetching(rows, mb, A + (size_t)m0 * lda + k, (size_t)lda, D + (size_t)m0 * ldd + j,
                                   (size_t)ldd, C + (size_t)k * ldc + j, (size_t)ldc, load, pf);
        else
            kern->tile(mb, A + (size_t)m0 * lda + k, 1, (size_t)lda, D + (size_t)m0 * ldd + j, (size_t)ldd,
                      C + (size_t)k * ldc + j, (size_t)ldc, rows, cols, load, NULL);
    }
}

/* this thread's share [*lo, *hi) of n items (all of them outside a parallel region) */
static void cnn__thread_share(int n, int *lo, int *hi) {
    int tid = 0, nt = 1;
#ifdef _OPENMP
    tid = omp_get_thread_num();
    nt = omp_get_num_threads();
#endif
    *lo = (int)((long long)n * tid / nt);
    *hi = (int)((long long)n * (tid + 1) / nt);
}

static void cnn__gemm_tn(int M, int N, int K, const float *CNN__RESTRICT A, int lda,
                         const float *CNN__RESTRICT D, int ldd, float *CNN__RESTRICT C, int ldc) {
    const int tiles = cnn__tn_tile_count(K, N);
    CNN__OMP(omp parallel if(((long long)M * N * K) > CNN__PARALLEL_MIN) num_threads(cnn__team_size()))
    {
        int lo, hi;
        cnn__thread_share(tiles, &lo, &hi);
        for (int m0 = 0; m0 < M; m0 += CNN__TN_ROWS)
            cnn__tn_tiles(lo, hi, m0, M - m0 < CNN__TN_ROWS ? M - m0 : CNN__TN_ROWS, N, K, A, lda, D, ldd, C,
                          ldc, 1, NULL);
    }
}

/* p[0..count) = 0, in blocks the threads share: a serial memset of the
   3 MB gradient left the other threads waiting every step */
static void cnn__zero_floats(float *p, size_t count) {
    enum { BLOCK = 16384 };
    const long long blocks = (long long)((count + BLOCK - 1) / BLOCK);
    CNN__PARALLEL_FOR((long long)count / 8)
    for (long long b = 0; b < blocks; b++) {
        const size_t lo = (size_t)b * BLOCK, len = count - lo < (size_t)BLOCK ? count - lo : (size_t)BLOCK;
        memset(p + lo, 0, len * sizeof(float));
    }
}

/* T[N][K] = W[K][N]^T */
static void cnn__transpose(int K, int N, const float *W, float *T) {
    for (int k = 0; k < K; k++)
        for (int n = 0; n < N; n++) T[(size_t)n * K + k] = W[(size_t)k * N + n];
}

/* ======================================================================== */
/* Activations (applied in place on a layer's output)                       */
/* ======================================================================== */

/* y [rows][c]: softmax over the last axis of each row */
static void cnn__softmax_rows(float *y, size_t rows, int c) {
CNN__PARALLEL_FOR((long long)rows * c)
    for (long long r = 0; r < (long long)rows; r++) {
        float *v = y + (size_t)r * c, mx = v[0], sum = 0;
        for (int i = 1; i < c; i++) mx = v[i] > mx ? v[i] : mx;
        for (int i = 0; i < c; i++) { v[i] = expf(v[i] - mx); sum += v[i]; }
        float inv = 1.0f / sum;
        for (int i = 0; i < c; i++) v[i] *= inv;
    }
}

static void cnn__activate(float *y, size_t count, int c, int act, float alpha) {
    long long n = (long long)count;
    switch (act) {
    case CNN_RELU:
CNN__PARALLEL_FOR(n)
        for (long long i = 0; i < n; i++) y[i] = y[i] < 0 ? 0 : y[i]; /* NaN stays NaN */
        break;
    case CNN_SIGMOID:
CNN__PARALLEL_FOR(n)
        for (long long i = 0; i < n; i++) y[i] = 1.0f / (1.0f + expf(-y[i]));
        break;
    case CNN_TANH:
CNN__PARALLEL_FOR(n)
        for (long long i = 0; i < n; i++) y[i] = tanhf(y[i]);
        break;
    case CNN_LEAKY_RELU:
CNN__PARALLEL_FOR(n)
        for (long long i = 0; i < n; i++) y[i] = y[i] < 0 ? alpha * y[i] : y[i];
        break;
    case CNN_ELU:
CNN__PARALLEL_FOR(n)
        for (long long i = 0; i < n; i++) y[i] = y[i] > 0 ? y[i] : alpha * expm1f(y[i]);
        break;
    case CNN_SOFTMAX: cnn__softmax_rows(y, count / c, c); break;
    default: break;
    }
}

/* dy := dy * act'(.) given the activation's output y (every activation here has
   a derivative expressible through its output). */
static void cnn__activate_backward(const float *y, float *dy, size_t count, int c, int act, float alpha) {
    long long n = (long long)count;
    switch (act) {
    case CNN_RELU:
CNN__PARALLEL_FOR(n)
        for (long long i = 0; i < n; i++) dy[i] = y[i] > 0 ? dy[i] : 0;
        break;
    case CNN_SIGMOID:
CNN__PARALLEL_FOR(n)
        for (long long i = 0; i < n; i++) dy[i] *= y[i] * (1 - y[i]);
        break;
    case CNN_TANH:
CNN__PARALLEL_FOR(n)
        for (long long i = 0; i < n; i++) dy[i] *= 1 - y[i] * y[i];
        break;
    case CNN_LEAKY_RELU:
CNN__PARALLEL_FOR(n)
        for (long long i = 0; i < n; i++) dy[i] = y[i] > 0 ? dy[i] : alpha * dy[i];
        break;
    case CNN_ELU: /* y = alpha*(e^x - 1) for x <= 0, so dy/dx = y + alpha */
CNN__PARALLEL_FOR(n)
        for (long long i = 0; i < n; i++) dy[i] = y[i] > 0 ? dy[i] : dy[i] * (y[i] + alpha);
        break;
    case CNN_SOFTMAX: {
        long long rows = (long long)(count / c);
CNN__PARALLEL_FOR((long long)count)
        for (long long r = 0; r < rows; r++) {
            const float *p = y + (size_t)r * c;
            float *d = dy + (size_t)r * c, dot = 0;
            for (int i = 0; i < c; i++) dot += d[i] * p[i];
            for (int i = 0; i < c; i++) d[i] = p[i] * (d[i] - dot);
        }
        break;
    }
    default: break;
    }
}

/* ======================================================================== */
/* Layers: forward and backward                                             */
/* ======================================================================== */
/* forward(n, B) fills n->out from its inputs; backward(n, B) reads n->dout
   (which it may overwrite) and ADDS the gradients of its inputs into their dout
   (several layers may feed from one) and of its parameters into model->grads. */

/* The gradient buffer of node n's i-th input, or NULL when nobody needs it. */
static float *cnn__in_dout(const cnn_node *n, int i) {
    const cnn_node *p = cnn__in(n, i);
    return p->type == CNN__INPUT ? n->model->dx_in : p->dout;
}

/* The same, claimed for writing: *add is 0 for the first layer to write it in
   this backward pass (which overwrites, so no buffer needs clearing first) and
   1 for later ones (a layer feeding several others sums their gradients). */
static float *cnn__in_grad(cnn_node *n, int i, int *add) {
    cnn_node *p = cnn__in(n, i);
    int *written = p->type == CNN__INPUT ? &n->model->dx_in_written : &p->dout_written;
    *add = *written;
    *written = 1;
    return cnn__in_dout(n, i);
}

/* first writers of a scatter (pooling; the reference passes) start from zero */
static float *cnn__in_grad_zeroed(cnn_node *n, int i, int B) {
    int add;
    float *dx = cnn__in_grad(n, i, &add);
    if (dx && !add) memset(dx, 0, (size_t)B * cnn__node_size(cnn__in(n, i)) * sizeof(float));
    return dx;
}

/* The activation whose derivative a backward pass applies to n's dout: none
   for the output layer when the loss already gave d loss / d pre-activation
   (its softmax or sigmoid fused with the crossentropy, see cnn__loss). */
static int cnn__grad_activation(const cnn_node *n) {
    return n->model->dout_is_preact && n->index == n->model->output ? CNN_LINEAR : n->activation;
}

/* batch statistics when training (and trainable), moving statistics otherwise */
static int cnn__bn_uses_batch(const cnn_node *n) { return n->model->training && n->trainable; }

/* A BatchNorm channel's statistics from its batch mean mu and biased variance
   var over M values: the mean and inv = 1 / sqrt(var + epsilon) that
   normalise, and, when moving_mean is not NULL, Keras' moving update:
   moving = momentum * moving + (1 - momentum) * batch, with the variance
   unbiased (var * M / (M - 1)). Every path (fast, reference, split between
   devices) closes its statistics here. */
static void cnn__bn_close(double mu, double var, double M, float epsilon, float momentum, float *mean,
                          float *inv, float *moving_mean, float *moving_var) {
    *mean = (float)mu;
    *inv = (float)(1.0 / sqrt(var + epsilon));
    if (moving_mean) {
        const double unbiased = M > 1 ? var * M / (M - 1) : var;
        *moving_mean = (float)((double)momentum * *moving_mean + (1.0 - momentum) * mu);
        *moving_var = (float)((double)momentum * *moving_var + (1.0 - momentum) * unbiased);
    }
}

/* ---- Conv2D: im2col + GEMM --------------------------------------------- */

/* Rows [r0, r0+rows) and columns [k0, k0+kb) of conv n's im2col matrix
   col [B*Ho*Wo][K] into dst [rows][ldd], from its input x [B][H][W][C]; the
   K index is (ky*kw + kx)*C + ci, so each ky gives one run of kw*C floats,
   contiguous in x away from the borders. */
static void cnn__im2col_rows(const cnn_node *n, const cnn_node *in, const float *x, int r0, int rows, int k0,
                             int kb, float *CNN__RESTRICT dst, int ldd) {
    const int H = in->h, W = in->w, C = in->c, HWo = n->h * n->w, run = n->kw * C;
    int b = r0 / HWo, oy = r0 % HWo / n->w, ox = r0 % HWo % n->w; /* of row r0, then stepped */
    for (int i = 0; i < rows; i++) {
        const int iy0 = oy * n->sh - n->pad_top, ix0 = ox * n->sw - n->pad_left;
        const int inside_x = ix0 >= 0 && ix0 + n->kw <= W;
        float *CNN__RESTRICT d = dst + (size_t)i * ldd;
        if (k0 == 0 && kb == n->kh * run && cnn__conv_rows_inside(n, in, b * HWo + oy * n->w + ox, 1)) {
            /* whole rows, all inside, up to the end of the output row: each is kh runs of x */
            int span = n->w - ox < rows - i ? n->w - ox : rows - i;
            while (!cnn__conv_rows_inside(n, in, b * HWo + oy * n->w + ox, span)) span--;
            const float *src = x + (((size_t)b * H + iy0) * W + ix0) * C;
            const size_t row_step = (size_t)W * C, step = (size_t)n->sw * C;
            cnn__kern()->copy_windows(d, ldd, src, step, row_step, span, n->kh, run);
            i += span - 1;
            ox += span;
            if (ox == n->w) { ox = 0; if (++oy == n->h) { oy = 0; b++; } }
            continue;
        }
        for (int k = k0, ky = k0 / run, at = k0 % run; k < k0 + kb; ky++, at = 0) {
            const int iy = iy0 + ky, len = run - at < k0 + kb - k ? run - at : k0 + kb - k;
            float *CNN__RESTRICT out = d + (k - k0);
            if (iy < 0 || iy >= H) {
                for (int q = 0; q < len; q++) out[q] = 0.0f;
            } else if (inside_x) {
                cnn__copy_floats(out, x + (((size_t)b * H + iy) * W + ix0) * C + at, len);
            } else { /* at the left or right border: zero what lies outside */
                for (int q = 0; q < len; q++) {
                    const int ix = ix0 + (at + q) / C;
                    out[q] = ix < 0 || ix >= W ? 0.0f : x[(((size_t)b * H + iy) * W + ix) * C + (at + q) % C];
                }
            }
            k += len;
        }
        if (++ox == n->w) { ox = 0; if (++oy == n->h) { oy = 0; b++; } }
    }
}

/* a 1x1 convolution with strides 1 needs no im2col: its input is the matrix */
static int cnn__conv_direct(const cnn_node *n) {
    return n->kh == 1 && n->kw == 1 && n->sh == 1 && n->sw == 1;
}

/* all of col [B*Ho*Wo][K] */
static void cnn__im2col(const cnn_node *n, const cnn_node *in, const float *x, float *col, int B) {
    const int M = B * n->h * n->w, K = n->kh * n->kw * in->c;
CNN__PARALLEL_FOR((long long)M * K)
    for (int r = 0; r < M; r += 64)
        cnn__im2col_rows(n, in, x, r, M - r < 64 ? M - r : 64, 0, K, col + (size_t)r * K, K);
}

/* The reverse of cnn__im2col_rows: adds src [rows][lds], rows [r0, r0+rows)
   and columns [k0, k0+kb) of an im2col-shaped gradient, into dx [B][H][W][C]
   where those entries were read from (a run at a time through kern->add_into). */
static void cnn__col2im_rows(const cnn__kernel_path *kern, const cnn_node *n, const cnn_node *in,
                             const float *src, int lds, int r0, int rows, int k0, int kb, float *dx) {
    const int H = in->h, W = in->w, C = in->c, HWo = n->h * n->w, run = n->kw * C;
    int b = r0 / HWo, oy = r0 % HWo / n->w, ox = r0 % HWo % n->w; /* of row r0, then stepped */
    for (int i = 0; i < rows; i++) {
        const int iy0 = oy * n->sh - n->pad_top, ix0 = ox * n->sw - n->pad_left;
        const int inside_x = ix0 >= 0 && ix0 + n->kw <= W;
        const float *s = src + (size_t)i * lds;
        for (int k = k0, ky = k0 / run, at = k0 % run; k < k0 + kb; ky++, at = 0) {
            const int iy = iy0 + ky, len = run - at < k0 + kb - k ? run - at : k0 + kb - k;
            const float *CNN__RESTRICT g = s + (k - k0);
            if (iy >= 0 && iy < H && inside_x) {
                float *CNN__RESTRICT d = dx + (((size_t)b * H + iy) * W + ix0) * C + at;
                kern->add_into(d, g, len);
            } else if (iy >= 0 && iy < H) { /* at the left or right border: drop what lies outside */
                for (int q = 0; q < len; q++) {
                    const int ix = ix0 + (at + q) / C;
                    if (ix >= 0 && ix < W) dx[(((size_t)b * H + iy) * W + ix) * C + (at + q) % C] += g[q];
                }
            }
            k += len;
        }
        if (++ox == n->w) { ox = 0; if (++oy == n->h) { oy = 0; b++; } }
    }
}

/* Per-channel sums over the rows of a [M][C] tensor, in double, into out[2C]:
     b != NULL:     out[c] = sum a,  out[C+c] = sum a * (b - shift) * scale
                    (shift, scale [C]: BatchNorm's x-hat computed on the fly)
     otherwise:     out[c] = sum a,  out[C+c] = sum a^2
   The rows are cut into a fixed number of chunks summed in parallel and then
   added in chunk order, so the result does not depend on the thread count.
   part holds CNN__CHUNKS x 2C doubles. */
/* Rows [first row of chunk ch, first row of chunk ch + 1) of M rows */
static size_t cnn__chunk_start(size_t M, int ch) { return M * (size_t)ch / CNN__CHUNKS; }

/* out[width] = the chunks' partial sums part[CNN__CHUNKS][width] added in
   chunk order: the one order every chunked sum ends in, whatever the threads */
static void cnn__merge_chunks(const double *part, int width, double *out) {
    for (int c = 0; c < width; c++) out[c] = 0;
    for (int ch = 0; ch < CNN__CHUNKS; ch++)
        for (int c = 0; c < width; c++) out[c] += part[(size_t)ch * width + c];
}

/* out[2C] = the per-channel sums of a [M][C] (see cnn__channel_sums_c): sums
   of a, then of a * t, each chunk of rows summed apart (part [CNN__CHUNKS][2C])
   and the chunks' sums added in order, so the same whatever the threads */
static void cnn__channel_sums(const float *a, const float *b, const float *shift, const float *scale,
                              size_t M, int C, double *part, double *out) {
    const cnn__kernel_path *kern = cnn__kern();
    CNN__PARALLEL_FOR((long long)M * C)
    for (int ch = 0; ch < CNN__CHUNKS; ch++) {
        const size_t r0 = cnn__chunk_start(M, ch), r1 = cnn__chunk_start(M, ch + 1);
        kern->channel_sums(a + r0 * C, b ? b + r0 * C : NULL, shift, scale, r1 - r0, C, part + (size_t)ch * 2 * C,
                           part + (size_t)ch * 2 * C + C);
    }
    cnn__merge_chunks(part, 2 * C, out);
}

/* dy[M][N] := dy where y > 0, else 0 (ReLU's gradient), and out[N] = its column
   sums, in one pass; chunked like cnn__channel_sums, so the same sums */
static void cnn__relu_grad_sums(const float *y, float *dy, size_t M, int N, double *part, double *out) {
    /* four operations an element (mask, store, widen, add): fc1's 32 x 512 runs on all threads */
    CNN__PARALLEL_FOR((long long)M * N * 4)
    for (int ch = 0; ch < CNN__CHUNKS; ch++) {
        const size_t r0 = cnn__chunk_start(M, ch), r1 = cnn__chunk_start(M, ch + 1);
        double *CNN__RESTRICT p = part + (size_t)ch * N;
        for (int c = 0; c < N; c++) p[c] = 0;
        for (size_t r = r0; r < r1; r++) {
            const float *CNN__RESTRICT yr = y + r * N;
            float *CNN__RESTRICT dr = dy + r * N;
            /* two loops over one row in cache, each in blocks of 16 channels
               that vectorise at -O2 too, then the channels left */
            int c0 = 0;
            for (; c0 + 16 <= N; c0 += 16)
                for (int j = 0; j < 16; j++) dr[c0 + j] = yr[c0 + j] > 0 ? dr[c0 + j] : 0.0f;
            for (int c = c0; c < N; c++) dr[c] = yr[c] > 0 ? dr[c] : 0.0f;
            for (c0 = 0; c0 + 16 <= N; c0 += 16)
                for (int j = 0; j < 16; j++) p[c0 + j] += dr[c0 + j];
            for (int c = c0; c < N; c++) p[c] += dr[c];
        }
    }
    cnn__merge_chunks(part, N, out);
}

/* db[N] += column sums of d[M][N]; the model's scratch holds the partial sums */
static void cnn__bias_grad(cnn_model *m, const float *d, float *db, size_t M, int N) {
    double *sums = (double *)m->scratch, *part = sums + 2 * N;
    cnn__channel_sums(d, NULL, NULL, NULL, M, N, part, sums);
    for (int j = 0; j < N; j++) db[j] += (float)sums[j];
}

/* out[M][units] = act(A[M][K] W[K][units] + bias): Conv2D (A = im2col rows) and
   Dense (A = the inputs); bias and ReLU ride along in the GEMM's stores */
static void cnn__linear_forward(cnn_node *n, int M, int K, const float *A, const float *W, double *stats,
                                const cnn__conv_input *conv) {
    const int N = n->units;
    cnn__epilogue ep = {
        n->use_bias ? W + n->kernel_count : NULL, n->activation == CNN_RELU, stats, NULL, NULL, NULL, 0};
    cnn__gemm_nn(M, N, K, A, K, W, N, n->out, N, 0, &ep, conv);
    if (n->activation != CNN_RELU) cnn__activate(n->out, (size_t)M * N, N, n->activation, n->alpha);
}

#define CNN__KERNEL_PARTS_MAX (1u << 20) /* floats of per-chunk kernel gradients, at most */
#define CNN__DZ_BUFFER 8192              /* floats of dz a thread keeps on its stack (32 KiB) */

/* A trainable Conv2D fused with a training BatchNorm (and its pool; see
   cnn__conv_backward_through_bn) whose input has a multiple of kern->at_mr channels,
   or whose kernel rows are runs of kern->tn_mr floats with no padding (3x3 on
   RGB, 'valid', with AVX-512), keeps no im2col from its forward pass (but for a
   batch too small for the row path, where cnn__im2col makes it whole anyway):
   its backward pass takes the weight gradient from the input itself, in
   slices of at most CNN__SLICE_ROWS rows, through a table of where each row's window
   lies in the input (cnn__conv_weight_grad_rows). Storing the whole im2col
   matrix (12.5 MB for the tutorial's conv_2, 3.1 MB for its conv_1) and reading
   its rows back cost more than reading the input through the table. Also
   needed: kernel partials in chunks, and a slice's dz on the stack. */
enum { CNN__SLICE_ROWS = 64 }; /* rows of dz such a backward pass makes at a time */
static int cnn__conv_grad_from_input(const cnn_node *n) {
    const cnn__kernel_path *kern = cnn__kern();
    const cnn_model *m = n->model;
    const int C = cnn__in(n, 0)->c, K = n->kh * n->kw * C, N = n->units;
    const int row_runs = n->kw * C == kern->tn_mr && kern->tn_mr != kern->mr && n->padding == CNN_VALID;
    return m->training && n->trainable && !cnn__conv_direct(n) && (C % kern->at_mr == 0 || row_runs) &&
           n->fuse.bn_input_grad && cnn__bn_uses_batch(n->fuse.bn) &&
           (size_t)CNN__CHUNKS * K * N <= CNN__KERNEL_PARTS_MAX &&
           (size_t)CNN__SLICE_ROWS * N <= CNN__DZ_BUFFER;
}

/* kp [K][N] (+)= the weight gradient of rows [r0, r0+rows) (rows <= CNN__SLICE_ROWS)
   of conv n, from its input x and dz [rows][N]: for each kernel cell (ky, kx),
   a table of where that cell of each row's window lies in x (or zeros, of C
   floats, outside the image) feeds tile_at, its channels kern->mr at a time,
   then kern->at_mr at a time; or, where C is not a multiple of kern->at_mr (see cnn__conv_grad_from_input), for
   each kernel row a table of where that row of each window starts, its kw*C =
   kern->tn_mr floats one tile of rows of kp. pf: memory to fetch meanwhile. */
static void cnn__conv_weight_grad_rows(const cnn_node *n, const cnn_node *in, const float *x,
                                       const float *zeros, int r0, int rows, const float *dz, float *kp,
                                       int load, cnn__prefetch *pf) {
    const cnn__kernel_path *kern = cnn__kern();
    const int H = in->h, W = in->w, C = in->c, N = n->units, HWo = n->h * n->w;
    int iy0[CNN__SLICE_ROWS], ix0[CNN__SLICE_ROWS], sample[CNN__SLICE_ROWS]; /* of each row's window */
    int b = r0 / HWo, oy = r0 % HWo / n->w, ox = r0 % HWo % n->w; /* of row r0, then stepped */
    for (int i = 0; i < rows; i++) {
        sample[i] = b;
        iy0[i] = oy * n->sh - n->pad_top;
        ix0[i] = ox * n->sw - n->pad_left;
        if (++ox == n->w) { ox = 0; if (++oy == n->h) { oy = 0; b++; } }
    }
    if (C % kern->at_mr != 0) { /* kernel rows of kern->tn_mr floats, windows inside x */
        const int run = n->kw * C;
        const float *win[CNN__SLICE_ROWS]; /* each window's top row; kernel row ky lies ky * W * C further */
        for (int i = 0; i < rows; i++) win[i] = x + (((size_t)sample[i] * H + iy0[i]) * W + ix0[i]) * C;
        /* the prefetch spread over the tile calls, a share each: issued all
           in the first calls, the fetches crowded the product's own misses */
        const int calls = n->kh * ((N + kern->at_nr - 1) / kern->at_nr);
        const size_t end = pf ? pf->end : 0, share = pf && end > pf->next ? (end - pf->next) / calls + 64 : 0;
        for (int ky = 0; ky < n->kh; ky++)
            for (int j = 0; j < N; j += kern->at_nr) {
                if (pf) pf->end = pf->next + share < end ? pf->next + share : end;
                kern->tile_at(run, rows, win, (size_t)ky * W * C, dz + j, (size_t)N,
                              kp + (size_t)ky * run * N + j, (size_t)N, N - j < kern->at_nr ? N - j : kern->at_nr,
                              load, pf);
            }
        return;
    }
    /* a cell's channels in tiles of kern->mr rows (the NN tile's height, which
       holds more accumulators) as far as the rest stays a multiple of
       kern->at_mr, then of kern->at_mr: 64 channels as 10 x 6 + 4 on AVX2 */
    int tall_rows = C / kern->mr * kern->mr;
    while (tall_rows > 0 && (C - tall_rows) % kern->at_mr) tall_rows -= kern->mr;
    for (int ky = 0; ky < n->kh; ky++)
        for (int kx = 0; kx < n->kw; kx++) {
            const float *win[CNN__SLICE_ROWS];
            for (int i = 0; i < rows; i++) {
                const int iy = iy0[i] + ky, ix = ix0[i] + kx;
                win[i] = iy >= 0 && iy < H && ix >= 0 && ix < W
                             ? x + (((size_t)sample[i] * H + iy) * W + ix) * C
                             : zeros;
            }
            float *kc = kp + (size_t)(ky * n->kw + kx) * C * N; /* this cell's rows of kp */
            for (int c = 0, R; c < C; c += R) {
                R = c < tall_rows ? kern->mr : kern->at_mr;
                for (int j = 0; j < N; j += kern->at_nr)
                    kern->tile_at(R, rows, win, (size_t)c, dz + j, (size_t)N, kc + (size_t)c * N + j, (size_t)N,
                                  N - j < kern->at_nr ? N - j : kern->at_nr, load, NULL);
            }
        }
}

/* A Conv2D or Dense layer's dy [M][units] becomes d(pre-activation), and the
   bias gradient is added; with ReLU both happen in one pass over dy. */
static void cnn__pre_activation_grad(cnn_node *n, float *dy, size_t M) {
    cnn_model *m = n->model;
    const int N = n->units, act = cnn__grad_activation(n);
    float *gb = n->trainable && n->use_bias ? m->grads + n->p_off + n->kernel_count : NULL;
    if (act == CNN_RELU && gb) {
        double *sums = (double *)m->scratch, *part = sums + N;
        cnn__relu_grad_sums(n->out, dy, M, N, part, sums);
        for (int j = 0; j < N; j++) gb[j] += (float)sums[j];
        return;
    }
    cnn__activate_backward(n->out, dy, M * N, N, act, n->alpha);
    if (gb) cnn__bias_grad(m, dy, gb, M, N);
}

/* Conv2D -> BatchNorm (batch mode) -> MaxPooling2D whose windows are its strides.
   BatchNorm's input gradient is dense,
       dy = k1 * ([pool gradient at the argmax cells] - k2 - xhat * k3),
   and costs a pass that writes it and another that reads it back. Here it is
   made slice by slice of rows, turned into d(pre-activation) dz and consumed
   while the slice is in cache: bias and kernel gradient partial sums per chunk
   of rows (the bias's in float over a slice, in double across slices), added
   in chunk order at the end. The chunks are fixed (CNN__CHUNKS), so the sums do
   not depend on the thread count. dz stays in a stack buffer, or goes to dout
   when the input gradient needs it, or when the kernel partials would be too
   big (then one GEMM over all rows takes the kernel gradient). The kernel
   partials come from the kept im2col, or, where cnn__conv_grad_from_input,
   from the input itself in slices of at most CNN__SLICE_ROWS rows. */
/* floats of scratch: bias partials (doubles), slice sums, kernel partials */
static size_t cnn__through_bn_scratch(int K, int N) {
    size_t parts = (size_t)CNN__CHUNKS * K * N;
    return 3 * (size_t)CNN__CHUNKS * N + (parts <= CNN__KERNEL_PARTS_MAX ? parts : 0);
}

/* rows [rows][N] of dz, from the conv's output y [rows][N] (BatchNorm's input),
   the coefficients k [3N] (see above) and, for a row in a pooling window
   (at[i] >= 0), the pool's argmax (bytes) and gradient g at [at[i], at[i] + N):
   the row is a channel's maximum where argmax[at[i] + c] == cell[i], its cell in
   the window. ReLU's gradient applied; ss [N] += each row of d, row after row. */
enum { CNN__DZ_ROWS = 64 }; /* rows per call: the size of at and cell */
/* For rows [r0, r0 + rows) of conv n's output, at and cell as cnn__bn_dz_rows
   reads them: the offset of the pool output whose window holds the row (-1
   where none does: pool windows are strides, 'valid') and the row's cell in
   that window, ky * kw + kx (at most 256 cells, see cnn__fusion). An output row's
   run at a time, each row apart from the one before: stepping a row's position
   from the last one's chains the rows and took as long as BatchNorm's pass. */
static void cnn__pool_cells(const cnn_node *n, const cnn_node *pool, int r0, int rows, long long *at,
                            int *cell) {
    const int W = n->w, HW = n->h * W, N = n->units;
    /* ox / kw as ox * inverse >> 32, exact for ox < 2^16 and kw <= 256
       (cnn__plan_fusion fuses no wider layer) */
    const unsigned long long inverse = (1ull << 32) / (unsigned)pool->kw + 1;
    int b = r0 / HW, oy = r0 % HW / W, ox0 = r0 % W, py = oy / pool->kh, ky = oy % pool->kh; /* of row r0 */
    for (int i = 0; i < rows;) {
        const int run = W - ox0 < rows - i ? W - ox0 : rows - i;
        const long long row_at = ((long long)b * pool->h + py) * pool->w; /* pool output (b, py, 0) */
        for (int j = 0; j < run; j++) {
            const int ox = ox0 + j, px = (int)(((unsigned long long)ox * inverse) >> 32);
            at[i + j] = py < pool->h && px < pool->w ? (row_at + px) * N : -1;
            cell[i + j] = ky * pool->kw + ox - px * pool->kw;
        }
        i += run;
        ox0 = 0; /* the next output row */
        if (++ky == pool->kh) { ky = 0; py++; }
        if (++oy == n->h) { oy = ky = py = 0; b++; }
    }
}

/* the first row of slice s of [r0, r1) cut into `slices` of equal size (r1 past the last) */
static int cnn__slice_start(int r0, int r1, int slices, int s) {
    return s >= slices ? r1 : r0 + (int)((long long)(r1 - r0) * s / slices);
}

static void cnn__conv_backward_through_bn(cnn_node *n, int B, const float *A, int K) {
    const cnn__kernel_path *kern = cnn__kern();
    cnn_model *m = n->model;
    const cnn_node *in = cnn__in(n, 0);
    const float *x = cnn__in_out(n, 0);
    const int from_input = cnn__conv_grad_from_input(n); /* then A is not kept: see there */
    float *zeros = n->im2col; /* [C], for cnn__conv_weight_grad_rows */
    if (from_input) memset(zeros, 0, (size_t)in->c * sizeof(float));
    const cnn_node *bn = n->fuse.bn, *pool = bn->fuse.pool;
    const int N = n->units, M = B * n->h * n->w, relu = cnn__grad_activation(n) == CNN_RELU;
    /* BatchNorm's input gradient is k1 * dy + k2 + (y - mean) * k3 (see cnn__bn_backward) */
    const float *y = n->out, *mean = bn->stat, *k = bn->coef;
    float *gW = n->trainable ? m->grads + n->p_off : NULL;
    float *gb = gW && n->use_bias ? gW + n->kernel_count : NULL;
    const int tiles = cnn__tn_tile_count(K, N);
    const int in_chunks = gW && (size_t)CNN__CHUNKS * K * N <= CNN__KERNEL_PARTS_MAX;
    double *bias_part = (double *)m->scratch;                  /* [CNN__CHUNKS][N] */
    float *slice_sum = m->scratch + 2 * CNN__CHUNKS * N;       /* [CNN__CHUNKS][N] */
    float *kernel_part = slice_sum + CNN__CHUNKS * N;           /* [CNN__CHUNKS][K][N] */
    const int keep = cnn__in_dout(n, 0) != NULL;
    /* dz is kept in dout, else in a stack buffer */
    const int to_dout = keep || !in_chunks || N > CNN__DZ_BUFFER;
    /* rows per slice: CNN__SLICE_ROWS keeps a slice's dz and its rows of A in L1 */
    const int step = to_dout && !from_input ? M : N * CNN__SLICE_ROWS <= CNN__DZ_BUFFER ? CNN__SLICE_ROWS
                                                                                       : CNN__DZ_BUFFER / N;
    if (!keep && !gW) return; /* a frozen first layer: nothing to make */
    CNN__PARALLEL_FOR((long long)M * N * K)
    for (int ch = 0; ch < CNN__CHUNKS; ch++) {
        float buffer[CNN__DZ_BUFFER];
        const int r0 = (int)cnn__chunk_start((size_t)M, ch), r1 = (int)cnn__chunk_start((size_t)M, ch + 1);
        double *bp = bias_part + (size_t)ch * N;
        float *ss = slice_sum + (size_t)ch * N, *kp = NULL;
        for (int c = 0; c < N; c++) { bp[c] = 0; ss[c] = 0; }
        if (in_chunks) {
            kp = kernel_part + (size_t)ch * K * N; /* set by the chunk's first slice */
            if (r0 == r1) memset(kp, 0, (size_t)K * N * sizeof(float));
        }
        /* slices of the chunk, of equal size: 900 rows as 15 of 60 rather than
           14 of 64 and one of 4, whose product would cost almost a whole one */
        const int slices = step > 0 ? (r1 - r0 + step - 1) / step : 0;
        for (int sl = 0; sl < slices; sl++) {
            const int s0 = cnn__slice_start(r0, r1, slices, sl), s1 = cnn__slice_start(r0, r1, slices, sl + 1);
            float *dz = to_dout ? n->dout + (size_t)s0 * N : buffer; /* [s1 - s0][N] */
            for (int q0 = s0; q0 < s1; q0 += CNN__DZ_ROWS) {
                const int rows = s1 - q0 < CNN__DZ_ROWS ? s1 - q0 : CNN__DZ_ROWS;
                long long at[CNN__DZ_ROWS];
                int cell[CNN__DZ_ROWS];
                cnn__pool_cells(n, pool, q0, rows, at, cell);
                kern->bn_dz_rows(N, rows, y + (size_t)q0 * N, mean, k, pool->argmax, pool->dout, at, cell,
                                 relu, dz + (size_t)(q0 - s0) * N, ss);
            }
            for (int c = 0; c < N; c++) { bp[c] += ss[c]; ss[c] = 0; }
            /* the next slice's rows of y, fetched as the product runs */
            cnn__prefetch next = {(const char *)y, (size_t)s1 * N * sizeof(float),
                                  (size_t)cnn__slice_start(r0, r1, slices, sl + 2) * N * sizeof(float)};
            if (from_input) {
                cnn__conv_weight_grad_rows(n, in, x, zeros, s0, s1 - s0, dz, kp, s0 > r0, &next);
            } else if (in_chunks) {
                for (int m0 = 0; m0 < s1 - s0; m0 += CNN__TN_ROWS)
                    cnn__tn_tiles(0, tiles, m0, s1 - s0 - m0 < CNN__TN_ROWS ? s1 - s0 - m0 : CNN__TN_ROWS, N,
                                  K, A + (size_t)s0 * K, K, dz, N, kp, N, s0 > r0 || m0 > 0, &next);
            }
        }
    }
    if (gb) {
        double *sums = (double *)(void *)slice_sum; /* [N]: the slices are done */
        cnn__merge_chunks(bias_part, N, sums);
        for (int c = 0; c < N; c++) gb[c] += (float)sums[c];
    }
    if (!in_chunks) { /* dz is in dout: step == M when in_chunks is 0 */
        if (gW) cnn__gemm_tn(M, N, K, A, K, n->dout, N, gW, N);
        return;
    }
    /* gW[i] += the chunks' partials for i added in chunk order, 64 values of i
       at a time so that the adds vectorise across i */
    const long long KN = (long long)K * N;
    enum { SPAN = 64 };
    CNN__PARALLEL_FOR(KN * CNN__CHUNKS)
    for (long long i0 = 0; i0 < KN; i0 += SPAN) {
        float sum[SPAN] = {0};
        const int span = KN - i0 < SPAN ? (int)(KN - i0) : SPAN;
        if (span == SPAN) {
            for (int ch = 0; ch < CNN__CHUNKS; ch++)
                for (int j = 0; j < SPAN; j++) sum[j] += kernel_part[ch * KN + i0 + j];
        } else {
            for (int ch = 0; ch < CNN__CHUNKS; ch++)
                for (int j = 0; j < span; j++) sum[j] += kernel_part[ch * KN + i0 + j];
        }
        for (int j = 0; j < span; j++) gW[i0 + j] += sum[j];
    }
}

/* ---- passes several layers share ------------------------------------------ */

/* out = the input, unchanged (Flatten: the same values, read as [B][h*w*c]) */
static void cnn__copy_forward(cnn_node *n, int B) {
    memcpy(n->out, cnn__in_out(n, 0), (size_t)B * cnn__node_size(n) * sizeof(float));
}

/* dx (+)= dout, element-wise, for input i */
static void cnn__pass_backward(cnn_node *n, int B, int i) {
    int add;
    float *dx = cnn__in_grad(n, i, &add);
    if (!dx) return;
    const long long count = (long long)B * (long long)cnn__node_size(n);
CNN__PARALLEL_FOR(count)
    for (long long k = 0; k < count; k++) dx[k] = (add ? dx[k] : 0.0f) + n->dout[k];
}

static void cnn__copy_backward(cnn_node *n, int B) { cnn__pass_backward(n, B, 0); }

/* ======================================================================== */
/* Layers: one block each                                                   */
/* ======================================================================== */
/* A layer kind is one block below: the constructor users call (cnn_xxx_opt),
   its forward and backward passes, its reference passes where the fast ones
   are not plain loops already, and its row, a cnn__layer_kind, that tells the
   rest of the model everything else it needs: how to rebuild the layer from
   the model file, initialise and name its tensors, size its batch buffers and
   count its FLOPs. Adding a layer = one block here, one line in
   CNN__LAYER_KINDS, the declaration of its constructor (and options) at the
   top, and for OpenCL one row of cnn_opencl.h's kernel table.

   Shapes are NHWC: a sample is [h][w][c], a Conv2D kernel [kh][kw][c_in][filters],
   a Dense kernel [c_in][units], biases follow their kernel. A forward pass
   reads its inputs' outputs (cnn__in_out) and writes n->out; a backward pass
   reads d loss / d output in n->dout and adds the gradients of its inputs
   (cnn__in_grad) and of its parameters (m->grads). The reference passes
   (cnn_set_reference) are the formulas as plain loops over the shapes, to be
   read and to check the fast ones against (tests/test_reference.c). */

/* One layer's settings in the model file (format version 1), in this order:
   12 unsigned 32-bit integers, then 6 floats. Each kind's rebuild reads the
   fields it has and leaves the others as written. */
typedef struct cnn__layer_record {
    int h, w, c;                     /* the output shape */
    int units;                       /* Conv2D filters, Dense units */
    int kh, kw, sh, sw, padding;     /* kernel or pool window, strides, CNN_VALID / CNN_SAME */
    int activation, use_bias, trainable;
    float alpha;                     /* leaky_relu / elu parameter */
    float l1, l2;                    /* kernel regularizer */
    float rate;                      /* Dropout */
    float momentum, epsilon;         /* BatchNormalization */
} cnn__layer_record;

/* a named tensor of a layer: count floats at offset in its parameters
   (m->params + p_off) or, state = 1, in its state (m->state + s_off) */
typedef struct cnn__tensor_ref { const char *name; int state; size_t offset, count; } cnn__tensor_ref;

/* A kind's row names, in this order: forward, backward, ref_forward,
   ref_backward, rebuild, init, tensor, buffers, flop (NULL where it has none). */
typedef struct cnn__layer_kind {
    void (*forward)(cnn_node *n, int B);
    void (*backward)(cnn_node *n, int B);
    void (*ref_forward)(cnn_node *n, int B);  /* NULL: forward is the reference already */
    void (*ref_backward)(cnn_node *n, int B); /* NULL: backward is */
    /* the layer from its record in the model file, after its inputs */
    cnn_node *(*rebuild)(cnn_model *m, const char *name, cnn_node **ins, int n_in,
                         const cnn__layer_record *L);
    void (*init)(cnn_node *n, cnn__rng *r);  /* initial parameters and state (NULL: it has none) */
    /* named tensor t = 0, 1, ...: 1 and *ref, or 0 past the last (NULL: none) */
    int (*tensor)(const cnn_node *n, int t, cnn__tensor_ref *ref);
    /* batch buffers beyond out and dout for B samples, raising *scratch to the
       floats of m->scratch the passes need; 0 when out of memory (NULL: none) */
    int (*buffers)(cnn_node *n, int B, size_t *scratch);
    double (*flop)(const cnn_node *n, int B); /* the forward pass's floating-point operations (NULL: 0) */
} cnn__layer_kind;

/* The input value x[b][iy][ix][c] under window cell (ky, kx) of output
   (oy, ox), or NULL where the cell lies in the padding. */
static const float *cnn__ref_at(const cnn_node *n, const cnn_node *in, const float *x, int b, int oy, int ox,
                                int ky, int kx) {
    const int iy = oy * n->sh - n->pad_top + ky, ix = ox * n->sw - n->pad_left + kx;
    if (iy < 0 || iy >= in->h || ix < 0 || ix >= in->w) return NULL;
    return x + (((size_t)b * in->h + iy) * in->w + ix) * in->c;
}

/* ---- InputLayer: the batch itself, [B][h][w][c] ------------------------- */

CNN_IMPL cnn_node *cnn_input(cnn_model *m, int h, int w, int c, const char *name) {
    cnn_node *n = cnn__new_node(m, CNN__INPUT, NULL, 0, name);
    if (!n) return NULL;
    if (m->input >= 0) {
        cnn_set_error(CNN_ERR_ARG,
                      "Input '%s': the model already has an input ('%s'); one input is supported", n->name,
                      m->nodes[m->input]->name);
        return cnn__fail(n);
    }
    if (h <= 0 || w <= 0 || c <= 0) {
        cnn_set_error(CNN_ERR_SHAPE, "Input '%s': shape %dx%dx%d must be positive", n->name, h, w, c);
        return cnn__fail(n);
    }
    if ((long long)h * w > INT_MAX / c) { /* sizes and offsets inside a sample are ints */
        cnn_set_error(CNN_ERR_SHAPE, "Input '%s': %dx%dx%d values per sample are too many", n->name, h, w, c);
        return cnn__fail(n);
    }
    n->h = h; n->w = w; n->c = c;
    n = cnn__push(m, n);
    if (n) m->input = n->index;
    return n;
}

static void cnn__input_pass(cnn_node *n, int B) { (void)n; (void)B; }

static cnn_node *cnn__rebuild_input(cnn_model *m, const char *name, cnn_node **ins, int n_in,
                                    const cnn__layer_record *L) {
    (void)ins; (void)n_in;
    return cnn_input(m, L->h, L->w, L->c, name);
}

static const cnn__layer_kind cnn__kind_input = {
    cnn__input_pass, cnn__input_pass, NULL, NULL, cnn__rebuild_input, NULL, NULL, NULL, NULL};

/* ---- Conv2D ------------------------------------------------------------- */

CNN_IMPL cnn_node *cnn_conv2d_opt(cnn_model *m, cnn_node *x, const cnn_conv2d_opts *o) {
    cnn_node *n = cnn__new_node(m, CNN__CONV2D, &x, 1, o ? o->name : NULL);
    if (!n) return NULL;
    if (!o) { cnn_set_error(CNN_ERR_ARG, "Conv2D '%s': options are NULL", n->name); return cnn__fail(n); }
    n->units = o->filters;
    n->kh = o->kernel_size[0]; n->kw = o->kernel_size[1];
    n->sh = o->strides[0] ? o->strides[0] : 1;
    n->sw = o->strides[1] ? o->strides[1] : 1;
    n->padding = o->padding;
    n->activation = o->activation;
    n->alpha = o->alpha;
    n->use_bias = !o->no_bias;
    n->l1 = o->kernel_regularizer.l1; n->l2 = o->kernel_regularizer.l2;
    if (n->units <= 0) {
        cnn_set_error(CNN_ERR_ARG, "Conv2D '%s': filters must be > 0 (got %d)", n->name, n->units);
        return cnn__fail(n);
    }
    if (n->kh <= 0 || n->kw <= 0) {
        cnn_set_error(CNN_ERR_ARG, "Conv2D '%s': kernel_size must be positive (got %dx%d)", n->name, n->kh,
                      n->kw);
        return cnn__fail(n);
    }
    if (n->sh <= 0 || n->sw <= 0) {
        cnn_set_error(CNN_ERR_ARG, "Conv2D '%s': strides must be positive", n->name);
        return cnn__fail(n);
    }
    if (n->padding != CNN_VALID && n->padding != CNN_SAME) {
        cnn_set_error(CNN_ERR_ARG, "Conv2D '%s': padding must be CNN_VALID or CNN_SAME", n->name);
        return cnn__fail(n);
    }
    if (cnn__check_window("Conv2D", n->name, n->kh, n->kw, n->sh, n->sw)) return cnn__fail(n);
    if ((long long)n->kh * n->kw * x->c > INT_MAX) { /* a row of im2col is indexed by int */
        cnn_set_error(CNN_ERR_SHAPE, "Conv2D '%s': a %dx%d kernel over %d channels is too deep", n->name,
                      n->kh, n->kw, x->c);
        return cnn__fail(n);
    }
    if (cnn__check_activation(n->activation, &n->alpha, n->name) ||
        cnn__check_regularizer(o->kernel_regularizer, n->name))
        return cnn__fail(n);
    if (x->h == 1 && x->w == 1 && cnn__in(n, 0)->type == CNN__FLATTEN) {
        cnn_set_error(CNN_ERR_SHAPE, "Conv2D '%s': input '%s' is flat; Conv2D needs an image", n->name,
                      x->name);
        return cnn__fail(n);
    }
    n->h = cnn__window(x->h, n->kh, n->sh, n->padding, &n->pad_top);
    n->w = cnn__window(x->w, n->kw, n->sw, n->padding, &n->pad_left);
    n->c = n->units;
    if (n->h <= 0 || n->w <= 0) {
        cnn_set_error(CNN_ERR_SHAPE, "Conv2D '%s': kernel %dx%d does not fit input '%s' of %dx%dx%d", n->name,
                      n->kh, n->kw, x->name, x->h, x->w, x->c);
        return cnn__fail(n);
    }
    n->kernel_count = (size_t)n->kh * n->kw * x->c * n->units;
    n->p_count = n->kernel_count + (n->use_bias ? (size_t)n->units : 0);
    return cnn__push(m, n);
}

static void cnn__conv_forward(cnn_node *n, int B) {
    const cnn__kernel_path *kern = cnn__kern();
    cnn_model *m = n->model;
    const cnn_node *in = cnn__in(n, 0);
    const int K = n->kh * n->kw * in->c, M = B * n->h * n->w;
    const float *W = m->params + n->p_off;
    const float *x = cnn__in_out(n, 0);
    const float *A = cnn__conv_direct(n) ? x : n->im2col;
    /* im2col kept for the weight gradient, where the backward pass reads it */
    const cnn__conv_input src = {
        n, in, x, m->training && n->trainable && !cnn__conv_grad_from_input(n) ? n->im2col : NULL};
    const int rows_path = M >= 64 * kern->mr; /* cnn__gemm_nn's path by rows, see there */
    if (!cnn__conv_direct(n) && !rows_path) cnn__im2col(n, in, x, n->im2col, B);
    /* a BatchNorm reading only this layer gets its batch sums from the GEMM's
       tiles as they are stored (the row path of cnn__gemm_nn) */
    cnn_node *bn = n->fuse.bn;
    const int stats = bn && cnn__bn_uses_batch(bn) && rows_path;
    if (bn) bn->stats_ready = stats;
    cnn__linear_forward(n, M, K, A, W, stats ? bn->acc + 2 * n->units : NULL,
                        !cnn__conv_direct(n) && rows_path ? &src : NULL);
}

static void cnn__conv_backward(cnn_node *n, int B) {
    const cnn__kernel_path *kern = cnn__kern();
    cnn_model *m = n->model;
    const cnn_node *in = cnn__in(n, 0);
    const int K = n->kh * n->kw * in->c, M = B * n->h * n->w, N = n->units;
    const int direct = cnn__conv_direct(n);
    const float *A = direct ? cnn__in_out(n, 0) : n->im2col; /* im2col, kept by the forward pass (not when
                                                              cnn__conv_grad_from_input, or when frozen) */
    float *dy = n->dout; /* becomes d(pre-activation) */
    if (n->fuse.bn_input_grad && cnn__bn_uses_batch(n->fuse.bn)) {
        cnn__conv_backward_through_bn(n, B, A, K);
    } else {
        cnn__pre_activation_grad(n, dy, (size_t)M);
        if (n->trainable) cnn__gemm_tn(M, N, K, A, K, dy, N, m->grads + n->p_off, N);
    }
    int add = 0;
    float *dx = cnn__in_grad(n, 0, &add);
    if (!dx) return;
    float *WT = m->scratch;                      /* [N][K] */
    cnn__transpose(K, N, m->params + n->p_off, WT);
    if (direct) { cnn__gemm_nn(M, K, N, dy, N, WT, K, dx, K, add, NULL, NULL); return; }
    /* d(im2col) = dy W^T, a register tile at a time, each tile added into dx
       at once (its rows lie in one sample): nothing the size of im2col is
       written. Threads take whole samples, so every dx sum runs in one order;
       each zeroes its samples' dx first (unless dx holds another branch's). */
    enum { KS = 512 }; /* columns of d(im2col) rows made at a time: 16 KiB for 8 rows */
    const int P = n->h * n->w;
    const size_t per_sample = cnn__node_size(in);
    CNN__PARALLEL_FOR((long long)M * N * K)
    for (int b = 0; b < B; b++) {
        if (!add) memset(dx + (size_t)b * per_sample, 0, per_sample * sizeof(float));
        for (int i = 0, rows; i < P; i += rows) {
            rows = cnn__rows_of_tile(P - i, kern->mr);
            for (int k0 = 0; k0 < K; k0 += KS) {
                const int ks = K - k0 < KS ? K - k0 : KS;
                float dcol[CNN__MR_MAX * KS]; /* [rows][ks] */
                for (int k = k0; k < k0 + ks; k += kern->nr)
                    kern->tile(N, dy + ((size_t)b * P + i) * N, N, 1, WT + k, K, dcol + (k - k0), KS, rows,
                              k0 + ks - k < kern->nr ? k0 + ks - k : kern->nr, 0, NULL);
                cnn__col2im_rows(kern, n, in, dcol, KS, b * P + i, rows, k0, ks, dx);
            }
        }
    }
}

/* Conv2D: y[b][oy][ox][u] = act(bias[u] + sum over ky, kx, c of
   x[b][oy*sh - pad_top + ky][ox*sw - pad_left + kx][c] * W[ky][kx][c][u]) */
static void cnn__ref_conv_forward(cnn_node *n, int B) {
    const cnn_node *in = cnn__in(n, 0);
    const float *x = cnn__in_out(n, 0), *W = n->model->params + n->p_off, *bias = W + n->kernel_count;
    const int C = in->c, U = n->units;
    for (int b = 0; b < B; b++)
        for (int oy = 0; oy < n->h; oy++)
            for (int ox = 0; ox < n->w; ox++) {
                float *y = n->out + (((size_t)b * n->h + oy) * n->w + ox) * U;
                for (int u = 0; u < U; u++) y[u] = n->use_bias ? bias[u] : 0.0f;
                for (int ky = 0; ky < n->kh; ky++)
                    for (int kx = 0; kx < n->kw; kx++) {
                        const float *xc = cnn__ref_at(n, in, x, b, oy, ox, ky, kx);
                        if (!xc) continue;
                        for (int c = 0; c < C; c++)
                            for (int u = 0; u < U; u++)
                                y[u] += xc[c] * W[((size_t)(ky * n->kw + kx) * C + c) * U + u];
                    }
            }
    cnn__activate(n->out, (size_t)B * cnn__node_size(n), U, n->activation, n->alpha);
}

/* With dz = dy * act'(z): dW[ky][kx][c][u] = sum over b, oy, ox of x[..][c] * dz[b][oy][ox][u];
   dbias[u] = sum of dz[..][u]; dx[..][c] += sum over u of W[ky][kx][c][u] * dz[b][oy][ox][u] */
static void cnn__ref_conv_backward(cnn_node *n, int B) {
    cnn_model *m = n->model;
    const cnn_node *in = cnn__in(n, 0);
    const float *x = cnn__in_out(n, 0), *W = m->params + n->p_off;
    float *gW = n->trainable ? m->grads + n->p_off : NULL,
          *gb = gW && n->use_bias ? gW + n->kernel_count : NULL;
    float *dx = cnn__in_grad_zeroed(n, 0, B);
    const int C = in->c, U = n->units;
    cnn__activate_backward(n->out, n->dout, (size_t)B * cnn__node_size(n), U, cnn__grad_activation(n),
                           n->alpha);
    for (int b = 0; b < B; b++)
        for (int oy = 0; oy < n->h; oy++)
            for (int ox = 0; ox < n->w; ox++) {
                const float *dz = n->dout + (((size_t)b * n->h + oy) * n->w + ox) * U;
                for (int u = 0; u < U && gb; u++) gb[u] += dz[u];
                for (int ky = 0; ky < n->kh; ky++)
                    for (int kx = 0; kx < n->kw; kx++) {
                        const float *xc = cnn__ref_at(n, in, x, b, oy, ox, ky, kx);
                        if (!xc) continue;
                        for (int c = 0; c < C; c++) {
                            const size_t k = ((size_t)(ky * n->kw + kx) * C + c) * U;
                            float *dxc = dx ? dx + (xc - x) + c : NULL;
                            for (int u = 0; u < U; u++) {
                                if (gW) gW[k + u] += xc[c] * dz[u];
                                if (dxc) *dxc += W[k + u] * dz[u];
                            }
                        }
                    }
            }
}

static cnn_node *cnn__rebuild_conv2d(cnn_model *m, const char *name, cnn_node **ins, int n_in,
                                     const cnn__layer_record *L) {
    cnn_conv2d_opts o;
    memset(&o, 0, sizeof o);
    o.filters = L->units;
    o.kernel_size[0] = L->kh, o.kernel_size[1] = L->kw, o.strides[0] = L->sh, o.strides[1] = L->sw;
    o.padding = (cnn_padding)L->padding, o.activation = (cnn_activation_type)L->activation,
    o.alpha = L->alpha;
    o.no_bias = !L->use_bias, o.kernel_regularizer.l1 = L->l1, o.kernel_regularizer.l2 = L->l2, o.name = name;
    return cnn_conv2d_opt(m, n_in > 0 ? ins[0] : NULL, &o);
}

/* glorot_uniform kernel (Keras' default): U(-limit, limit), limit = sqrt(6 / (fan_in + fan_out)),
   fans counted over the receptive field; zero bias */
static void cnn__init_glorot(cnn_node *n, cnn__rng *r) {
    float *p = n->model->params + n->p_off;
    const double rf = n->type == CNN__CONV2D ? (double)n->kh * n->kw : 1.0; /* receptive field */
    const double limit = sqrt(6.0 / (rf * cnn__in(n, 0)->c + rf * n->units));
    for (size_t k = 0; k < n->kernel_count; k++) p[k] = (float)((2.0 * cnn__rng_uniform(r) - 1.0) * limit);
    for (size_t k = n->kernel_count; k < n->p_count; k++) p[k] = 0.0f;
}

/* kernel, then bias (when used) */
static int cnn__tensors_kernel_bias(const cnn_node *n, int t, cnn__tensor_ref *ref) {
    const size_t bias = n->p_count - n->kernel_count;
    if (t == 0) {
        ref->name = "kernel", ref->state = 0, ref->offset = 0, ref->count = n->kernel_count;
        return 1;
    }
    if (t == 1 && bias) {
        ref->name = "bias", ref->state = 0, ref->offset = n->kernel_count, ref->count = bias;
        return 1;
    }
    return 0;
}

/* im2col [B*Ho*Wo][K]; scratch for the transposed kernel [K][N], the bias
   gradient's partial sums and the fused backward pass */
static int cnn__buffers_conv2d(cnn_node *n, int B, size_t *scratch) {
    const size_t K = (size_t)n->kh * n->kw * cnn__in(n, 0)->c, M = (size_t)B * n->h * n->w;
    const size_t need[3] = {(size_t)(CNN__CHUNKS + 1) * 4 * n->units, K * n->units,
                            n->fuse.bn_input_grad ? cnn__through_bn_scratch((int)K, n->units) : 0};
    for (int i = 0; i < 3; i++) *scratch = need[i] > *scratch ? need[i] : *scratch;
    n->im2col = (float *)cnn__calloc(M * K, sizeof(float));
    return n->im2col != NULL;
}

/* multiply-adds x 2 of the forward product for B samples (the backward pass
   does twice that: weight gradient and input gradient) */
static double cnn__flop_linear(const cnn_node *n, int B) {
    return 2.0 * B * n->h * n->w * (double)n->kernel_count;
}

static const cnn__layer_kind cnn__kind_conv2d = {
    cnn__conv_forward,        cnn__conv_backward,  cnn__ref_conv_forward,
    cnn__ref_conv_backward,   cnn__rebuild_conv2d, cnn__init_glorot,
    cnn__tensors_kernel_bias, cnn__buffers_conv2d, cnn__flop_linear};

/* ---- Dense -------------------------------------------------------------- */

CNN_IMPL cnn_node *cnn_dense_opt(cnn_model *m, cnn_node *x, const cnn_dense_opts *o) {
    cnn_node *n = cnn__new_node(m, CNN__DENSE, &x, 1, o ? o->name : NULL);
    if (!n) return NULL;
    if (!o) { cnn_set_error(CNN_ERR_ARG, "Dense '%s': options are NULL", n->name); return cnn__fail(n); }
    n->units = o->units;
    n->activation = o->activation;
    n->alpha = o->alpha;
    n->use_bias = !o->no_bias;
    n->l1 = o->kernel_regularizer.l1; n->l2 = o->kernel_regularizer.l2;
    if (n->units <= 0) {
        cnn_set_error(CNN_ERR_ARG, "Dense '%s': units must be > 0 (got %d)", n->name, n->units);
        return cnn__fail(n);
    }
    if (cnn__check_activation(n->activation, &n->alpha, n->name) ||
        cnn__check_regularizer(o->kernel_regularizer, n->name))
        return cnn__fail(n);
    if (x->h != 1 || x->w != 1) {
        /* Keras applies Dense to the last axis of an image; we ask for an explicit Flatten */
        cnn_set_error(
            CNN_ERR_SHAPE,
            "Dense '%s': input '%s' has shape %dx%dx%d; add a Flatten or GlobalAveragePooling2D between them",
            n->name, x->name, x->h, x->w, x->c);
        return cnn__fail(n);
    }
    n->h = n->w = 1;
    n->c = n->units;
    n->kernel_count = (size_t)x->c * n->units;
    n->p_count = n->kernel_count + (n->use_bias ? (size_t)n->units : 0);
    return cnn__push(m, n);
}

static void cnn__dense_forward(cnn_node *n, int B) {
    const float *W = n->model->params + n->p_off;
    const int K = cnn__in(n, 0)->c;
    cnn__linear_forward(n, B, K, cnn__in_out(n, 0), W, NULL, NULL);
}

static void cnn__dense_backward(cnn_node *n, int B) {
    cnn_model *m = n->model;
    const int K = cnn__in(n, 0)->c, N = n->units;
    float *dy = n->dout;
    cnn__pre_activation_grad(n, dy, (size_t)B);
    if (n->trainable) cnn__gemm_tn(B, N, K, cnn__in_out(n, 0), K, dy, N, m->grads + n->p_off, N);
    int add;
    float *dx = cnn__in_grad(n, 0, &add);
    if (!dx) return;
    /* dx = dy W^T, computed as dx^T[K][B] = W[K][N] dy^T[N][B]: the kernel is
       then read once, row by row, instead of transposed every step */
    float *dyT = m->scratch, *dxT = m->scratch + (size_t)N * B;
    cnn__transpose(B, N, dy, dyT);
    cnn__gemm_nn(K, B, N, m->params + n->p_off, N, dyT, B, dxT, B, 0, NULL, NULL);
CNN__PARALLEL_FOR((long long)B * K * 4)
    for (int b = 0; b < B; b++)
        for (int k = 0; k < K; k++)
            dx[(size_t)b * K + k] = (add ? dx[(size_t)b * K + k] : 0.0f) + dxT[(size_t)k * B + b];
}

/* Dense: y[b][u] = act(bias[u] + sum over k of x[b][k] * W[k][u]), x flattened */
static void cnn__ref_dense_forward(cnn_node *n, int B) {
    const int K = (int)cnn__node_size(cnn__in(n, 0)), U = n->units;
    const float *x = cnn__in_out(n, 0), *W = n->model->params + n->p_off, *bias = W + n->kernel_count;
    for (int b = 0; b < B; b++)
        for (int u = 0; u < U; u++) {
            float s = n->use_bias ? bias[u] : 0.0f;
            for (int k = 0; k < K; k++) s += x[(size_t)b * K + k] * W[(size_t)k * U + u];
            n->out[(size_t)b * U + u] = s;
        }
    cnn__activate(n->out, (size_t)B * U, U, n->activation, n->alpha);
}

/* dz = dy * act'(z); dW[k][u] = sum over b of x[b][k] dz[b][u]; dbias[u] = sum of dz[b][u];
   dx[b][k] += sum over u of W[k][u] dz[b][u] */
static void cnn__ref_dense_backward(cnn_node *n, int B) {
    cnn_model *m = n->model;
    const int K = (int)cnn__node_size(cnn__in(n, 0)), U = n->units;
    const float *x = cnn__in_out(n, 0), *W = m->params + n->p_off, *dz = n->dout;
    float *gW = n->trainable ? m->grads + n->p_off : NULL,
          *gb = gW && n->use_bias ? gW + n->kernel_count : NULL;
    float *dx = cnn__in_grad_zeroed(n, 0, B);
    cnn__activate_backward(n->out, n->dout, (size_t)B * U, U, cnn__grad_activation(n), n->alpha);
    for (int b = 0; b < B; b++)
        for (int u = 0; u < U; u++) {
            const float g = dz[(size_t)b * U + u];
            if (gb) gb[u] += g;
            for (int k = 0; k < K; k++) {
                if (gW) gW[(size_t)k * U + u] += x[(size_t)b * K + k] * g;
                if (dx) dx[(size_t)b * K + k] += W[(size_t)k * U + u] * g;
            }
        }
}

static cnn_node *cnn__rebuild_dense(cnn_model *m, const char *name, cnn_node **ins, int n_in,
                                    const cnn__layer_record *L) {
    cnn_dense_opts o;
    memset(&o, 0, sizeof o);
    o.units = L->units, o.activation = (cnn_activation_type)L->activation, o.alpha = L->alpha,
    o.no_bias = !L->use_bias;
    o.kernel_regularizer.l1 = L->l1, o.kernel_regularizer.l2 = L->l2, o.name = name;
    return cnn_dense_opt(m, n_in > 0 ? ins[0] : NULL, &o);
}

/* scratch: dy^T [N][B] and dx^T [K][B], and the bias gradient's partial sums */
static int cnn__buffers_dense(cnn_node *n, int B, size_t *scratch) {
    const size_t K = (size_t)cnn__in(n, 0)->c,
                 need[2] = {(size_t)(CNN__CHUNKS + 1) * 4 * n->units, (K + n->units) * B};
    for (int i = 0; i < 2; i++) *scratch = need[i] > *scratch ? need[i] : *scratch;
    return 1;
}

static const cnn__layer_kind cnn__kind_dense = {
    cnn__dense_forward,       cnn__dense_backward, cnn__ref_dense_forward,
    cnn__ref_dense_backward,  cnn__rebuild_dense,  cnn__init_glorot,
    cnn__tensors_kernel_bias, cnn__buffers_dense,  cnn__flop_linear};

/* ---- BatchNormalization (axis -1) --------------------------------------- */

CNN_IMPL cnn_node *cnn_batch_norm_opt(cnn_model *m, cnn_node *x, const cnn_batch_norm_opts *o) {
    cnn_node *n = cnn__new_node(m, CNN__BATCH_NORM, &x, 1, o ? o->name : NULL);
    if (!n) return NULL;
    n->momentum = o && o->momentum != 0.0f ? o->momentum : 0.99f;
    n->epsilon = o && o->epsilon != 0.0f ? o->epsilon : 1e-3f;
    if (!(n->momentum >= 0.0f && n->momentum <= 1.0f)) {
        cnn_set_error(CNN_ERR_ARG, "BatchNormalization '%s': momentum %g is not in [0, 1]", n->name,
                      n->momentum);
        return cnn__fail(n);
    }
    if (!(n->epsilon > 0.0f)) {
        cnn_set_error(CNN_ERR_ARG, "BatchNormalization '%s': epsilon must be > 0", n->name);
        return cnn__fail(n);
    }
    n->h = x->h; n->w = x->w; n->c = x->c;
    n->p_count = 2 * (size_t)n->c;   /* gamma, beta */
    n->s_count = 2 * (size_t)n->c;   /* moving mean, moving variance */
    return cnn__push(m, n);
}

static void cnn__bn_forward(cnn_node *n, int B) {
    cnn_model *m = n->model;
    const int C = n->c;
    const size_t M = (size_t)B * n->h * n->w;
    const float *x = cnn__in_out(n, 0), *gamma = m->params + n->p_off, *beta = gamma + C;
    float *mmean = m->state + n->s_off, *mvar = mmean + C;
    float *mean = n->stat, *inv = n->stat + C;
    if (cnn__bn_uses_batch(n)) {
        /* sum and sum of squares in one pass, in double (here, or the conv's
           GEMM adds up in double its tiles' float sums about their first
           rows): E[x^2] - E[x]^2 keeps float-level accuracy for activations of
           any reasonable scale */
        double *sum = n->acc, *sq = n->acc + C, *part = n->acc + 2 * C;
        if (n->stats_ready) { /* the Conv2D before left its per-chunk sums in part */
            cnn__merge_chunks(part, 2 * C, sum);
        } else {
            cnn__channel_sums(x, NULL, NULL, NULL, M, C, part, sum);
        }
        for (int c = 0; c < C; c++) {
            const double mu = sum[c] / M, var = sq[c] / M - mu * mu;
            cnn__bn_close(mu, var > 0 ? var : 0, (double)M, n->epsilon, n->momentum, &mean[c], &inv[c],
                          m->update_moving ? &mmean[c] : NULL, &mvar[c]);
        }
    } else {
        for (int c = 0; c < C; c++) { mean[c] = mmean[c]; inv[c] = 1.0f / sqrtf(mvar[c] + n->epsilon); }
    }
    /* y = gamma * (x - mean) * inv + beta = x * k + (beta - mean * k) */
    float *k = n->coef, *shift = n->coef + C, *y = n->out;
    for (int c = 0; c < C; c++) { k[c] = gamma[c] * inv[c]; shift[c] = beta[c] - mean[c] * k[c]; }
    if (n->fuse.pool) return; /* the max-pooling layer applies k and shift as it reads */
CNN__PARALLEL_FOR((long long)M * C)
    for (long long r = 0; r < (long long)M; r++)
        for (int c = 0; c < C; c++) y[(size_t)r * C + c] = x[(size_t)r * C + c] * k[c] + shift[c];
}

/* BatchNorm fused into a max pool: its dy is the pool's gradient at the argmax
   cells and zero elsewhere. Sums of dy and dy*xhat over those cells (fixed chunks
   of pool positions, so thread-count independent) into s[2C]; the pool kept
   BatchNorm's input x at those cells in its x_at_max (read in order, not gathered). */
static void cnn__bn_pool_sums(const cnn_node *n, const cnn_node *pool, int B, double *s) {
    const int C = n->c;
    cnn__channel_sums(pool->dout, pool->x_at_max, n->stat, n->stat + C, (size_t)B * pool->h * pool->w, C,
                      n->acc + 2 * C, s);
}

/* dx at each maximum += k[c] * pool gradient, sample by sample (a window stays in its sample) */
static void cnn__bn_pool_scatter(const cnn_node *n, const cnn_node *pool, int B, const float *k, float *dx) {
    const int C = n->c;
    const size_t per_in = cnn__node_size(n);
    CNN__PARALLEL_FOR((long long)B * pool->h * pool->w * C)
    for (int b = 0; b < B; b++)
        for (int oy = 0; oy < pool->h; oy++)
            for (int ox = 0; ox < pool->w; ox++) {
                const size_t o = (((size_t)b * pool->h + oy) * pool->w + ox) * C;
                for (int c = 0; c < C; c++)
                    dx[(size_t)b * per_in +
                       cnn__window_offset(pool, n->w, oy, ox, cnn__argmax_cell(pool, o + c)) + c] +=
                        k[c] * pool->dout[o + c];
            }
}

static void cnn__bn_backward(cnn_node *n, int B) {
    cnn_model *m = n->model;
    const int C = n->c;
    const size_t M = (size_t)B * n->h * n->w;
    const float *gamma = m->params + n->p_off, *mean = n->stat, *inv = n->stat + C, *x = cnn__in_out(n, 0),
                *dy = n->dout;
    const cnn_node *pool = n->fuse.pool;
    const int deferred = cnn__in(n, 0)->fuse.bn == n && cnn__in(n, 0)->fuse.bn_input_grad &&
                         cnn__bn_uses_batch(n);
    int add = 0;
    float *dx = deferred ? NULL : cnn__in_grad(n, 0, &add); /* deferred: the Conv2D makes dx */
    if (!cnn__bn_uses_batch(n)) { /* frozen or inference: an affine map */
        if (!dx) return;
        if (pool) {
            float *k1 = n->coef;
            for (int c = 0; c < C; c++) k1[c] = gamma[c] * inv[c];
            if (!add) memset(dx, 0, M * C * sizeof(float));
            cnn__bn_pool_scatter(n, pool, B, k1, dx);
            return;
        }
        for (size_t r = 0; r < M; r++)
            for (int c = 0; c < C; c++)
                dx[r * C + c] = (add ? dx[r * C + c] : 0.0f) + dy[r * C + c] * gamma[c] * inv[c];
        return;
    }
    double *s = n->acc; /* sum dy, sum dy*xhat, with xhat = (x - mean) * inv */
    if (pool) cnn__bn_pool_sums(n, pool, B, s);
    else cnn__channel_sums(dy, x, mean, inv, M, C, n->acc + 2 * C, s);
    float *g = m->grads + n->p_off;
    for (int c = 0; c < C; c++) { g[c] += (float)s[C + c]; g[C + c] += (float)s[c]; }
    float *k1 = n->coef, *k2 = k1 + C, *k3 = k1 + 2 * C;
    for (int c = 0; c < C; c++) { /* dx = gamma*inv/M * (M*dy - sum dy - xhat * sum dy*xhat) */
        k1[c] = gamma[c] * inv[c];
        k2[c] = (float)(s[c] / M);
        k3[c] = (float)(s[C + c] / M);
    }
    if (deferred) { /* for the Conv2D: dx = k1 * dy + k2' + (x - mean) * k3', one FMA a cell */
        for (int c = 0; c < C; c++) { k2[c] = -k1[c] * k2[c]; k3[c] = -k1[c] * inv[c] * k3[c]; }
        return;
    }
    if (dx) {
        if (pool) { /* dy is zero but at the pool's argmax cells: the dense part, then those */
CNN__PARALLEL_FOR((long long)M * C)
            for (long long r = 0; r < (long long)M; r++)
                for (int c = 0; c < C; c++) {
                    size_t i = (size_t)r * C + c;
                    dx[i] = (add ? dx[i] : 0.0f) - k1[c] * (k2[c] + (x[i] - mean[c]) * inv[c] * k3[c]);
                }
            cnn__bn_pool_scatter(n, pool, B, k1, dx);
            return;
        }
CNN__PARALLEL_FOR((long long)M * C)
        for (long long r = 0; r < (long long)M; r++)
            for (int c = 0; c < C; c++) {
                size_t i = (size_t)r * C + c;
                dx[i] = (add ? dx[i] : 0.0f) + k1[c] * (dy[i] - k2[c] - (x[i] - mean[c]) * inv[c] * k3[c]);
            }
    }
}

/* BatchNormalization over the M = B*h*w values of each channel c:
   training: mean = sum x / M, var = sum (x - mean)^2 / M (and the moving
   statistics move towards mean and the unbiased M/(M-1) var by 1 - momentum);
   otherwise (inference, or frozen) the moving statistics. Then
   y = gamma * (x - mean) / sqrt(var + epsilon) + beta. */
static void cnn__ref_bn_forward(cnn_node *n, int B) {
    cnn_model *m = n->model;
    const int C = n->c;
    const size_t M = (size_t)B * n->h * n->w;
    const float *x = cnn__in_out(n, 0), *gamma = m->params + n->p_off, *beta = gamma + C;
    float *mmean = m->state + n->s_off, *mvar = mmean + C, *mean = n->stat, *inv = n->stat + C;
    for (int c = 0; c < C; c++) {
        if (cnn__bn_uses_batch(n)) {
            double mu = 0, var = 0;
            for (size_t r = 0; r < M; r++) mu += x[r * C + c];
            mu /= (double)M;
            for (size_t r = 0; r < M; r++) var += (x[r * C + c] - mu) * (x[r * C + c] - mu);
            var /= (double)M;
            cnn__bn_close(mu, var, (double)M, n->epsilon, n->momentum, &mean[c], &inv[c],
                          m->update_moving ? &mmean[c] : NULL, &mvar[c]);
        } else {
            mean[c] = mmean[c];
            inv[c] = 1.0f / sqrtf(mvar[c] + n->epsilon);
        }
        for (size_t r = 0; r < M; r++)
            n->out[r * C + c] = gamma[c] * (x[r * C + c] - mean[c]) * inv[c] + beta[c];
    }
}

/* With xhat = (x - mean) * inv: dgamma = sum dy * xhat, dbeta = sum dy, and,
   as mean and var depend on every x of the channel,
   dx = gamma * inv / M * (M * dy - sum dy - xhat * sum dy * xhat);
   with the moving statistics (constants) dx = gamma * inv * dy. */
static void cnn__ref_bn_backward(cnn_node *n, int B) {
    cnn_model *m = n->model;
    const int C = n->c;
    const size_t M = (size_t)B * n->h * n->w;
    const float *x = cnn__in_out(n, 0), *gamma = m->params + n->p_off, *dy = n->dout, *mean = n->stat,
                *inv = n->stat + C;
    int add;
    float *dx = cnn__in_grad(n, 0, &add);
    for (int c = 0; c < C; c++) {
        double sdy = 0, sdyx = 0;
        for (size_t r = 0; r < M; r++) {
            sdy += dy[r * C + c];
            sdyx += (double)dy[r * C + c] * ((x[r * C + c] - mean[c]) * inv[c]);
        }
        if (cnn__bn_uses_batch(n)) {
            m->grads[n->p_off + c] += (float)sdyx;
            m->grads[n->p_off + C + c] += (float)sdy;
        }
        for (size_t r = 0; r < M && dx; r++) {
            const size_t i = r * C + c;
            const double xhat = (x[i] - mean[c]) * inv[c];
            const double g = cnn__bn_uses_batch(n) ? gamma[c] * inv[c] / M * (M * dy[i] - sdy - xhat * sdyx)
                                                   : gamma[c] * inv[c] * dy[i];
            dx[i] = (add ? dx[i] : 0.0f) + (float)g;
        }
    }
}

static cnn_node *cnn__rebuild_bn(cnn_model *m, const char *name, cnn_node **ins, int n_in,
                                 const cnn__layer_record *L) {
    cnn_batch_norm_opts o = {L->momentum, L->epsilon, name};
    return cnn_batch_norm_opt(m, n_in > 0 ? ins[0] : NULL, &o);
}

/* gamma 1, beta 0, moving mean 0, moving variance 1 */
static void cnn__init_bn(cnn_node *n, cnn__rng *r) {
    float *p = n->model->params + n->p_off, *s = n->model->state + n->s_off;
    (void)r;
    for (int c = 0; c < n->c; c++) { p[c] = 1.0f; p[n->c + c] = 0.0f; }
    for (int c = 0; c < n->c; c++) { s[c] = 0.0f; s[n->c + c] = 1.0f; }
}

static int cnn__tensors_bn(const cnn_node *n, int t, cnn__tensor_ref *ref) {
    static const char *names[4] = {"gamma", "beta", "moving_mean", "moving_variance"};
    if (t < 0 || t > 3) return 0;
    ref->name = names[t], ref->state = t >= 2, ref->offset = (size_t)(t % 2) * n->c,
    ref->count = (size_t)n->c;
    return 1;
}

/* the batch statistics stat [2c], their sums acc and this pass's coefficients coef [3c] */
static int cnn__buffers_bn(cnn_node *n, int B, size_t *scratch) {
    (void)B; (void)scratch;
    n->stat = (float *)cnn__calloc(2 * (size_t)n->c, sizeof(float));
    n->acc = (double *)cnn__calloc((2 * CNN__CHUNKS + 1) * 2 * (size_t)n->c, sizeof(double));
    n->coef = (float *)cnn__calloc(3 * (size_t)n->c, sizeof(float));
    return n->stat && n->acc && n->coef;
}

static const cnn__layer_kind cnn__kind_bn = {cnn__bn_forward,      cnn__bn_backward, cnn__ref_bn_forward,
                                             cnn__ref_bn_backward, cnn__rebuild_bn,  cnn__init_bn,
                                             cnn__tensors_bn,      cnn__buffers_bn,  NULL};

/* ---- MaxPooling2D ------------------------------------------------------- */

static cnn_node *cnn__pool(cnn_model *m, cnn_node *x, const cnn_pool2d_opts *o, int type) {
    cnn_node *n = cnn__new_node(m, type, &x, 1, o ? o->name : NULL);
    if (!n) return NULL;
    const char *kind = cnn__type_names[type];
    n->kh = o && o->pool_size[0] ? o->pool_size[0] : 2;
    n->kw = o && o->pool_size[1] ? o->pool_size[1] : 2;
    n->sh = o && o->strides[0] ? o->strides[0] : n->kh;
    n->sw = o && o->strides[1] ? o->strides[1] : n->kw;
    n->padding = o ? o->padding : CNN_VALID;
    if (n->kh <= 0 || n->kw <= 0 || n->sh <= 0 || n->sw <= 0) {
        cnn_set_error(CNN_ERR_ARG, "%s '%s': pool_size and strides must be positive", kind, n->name);
        return cnn__fail(n);
    }
    if (type == CNN__MAX_POOL && (long long)n->kh * n->kw > 65536) { /* see cnn__argmax_cell */
        cnn_set_error(CNN_ERR_ARG, "%s '%s': a window of %dx%d is more than 65536 cells", kind, n->name,
                      n->kh, n->kw);
        return cnn__fail(n);
    }
    if (n->padding != CNN_VALID && n->padding != CNN_SAME) {
        cnn_set_error(CNN_ERR_ARG, "%s '%s': padding must be CNN_VALID or CNN_SAME", kind, n->name);
        return cnn__fail(n);
    }
    if (cnn__check_window(kind, n->name, n->kh, n->kw, n->sh, n->sw)) return cnn__fail(n);
    n->h = cnn__window(x->h, n->kh, n->sh, n->padding, &n->pad_top);
    n->w = cnn__window(x->w, n->kw, n->sw, n->padding, &n->pad_left);
    n->c = x->c;
    if (n->h <= 0 || n->w <= 0) {
        cnn_set_error(CNN_ERR_SHAPE, "%s '%s': window %dx%d does not fit input '%s' of %dx%dx%d", kind,
                      n->name, n->kh, n->kw, x->name, x->h, x->w, x->c);
        return cnn__fail(n);
    }
    return cnn__push(m, n);
}

CNN_IMPL cnn_node *cnn_max_pool2d_opt(cnn_model *m, cnn_node *x, const cnn_pool2d_opts *o) {
    return cnn__pool(m, x, o, CNN__MAX_POOL);
}

/* One window of any shape, padding skipped, as max_2x2 (see Kernels): the cells go to
   the pool's argmax from element `at` on, xm [C] as there. Channels 64 at a
   time, their cells on the stack. */
static void cnn__max_window(cnn_node *n, const float *CNN__RESTRICT xb, int H, int W, int oy, int ox,
                            const float *k, const float *shift, float *CNN__RESTRICT y, size_t at,
                            float *CNN__RESTRICT xm) {
    const int C = n->c;
    for (int c0 = 0; c0 < C; c0 += 64) {
        const int cn = C - c0 < 64 ? C - c0 : 64;
        int cell[64], first = 1;
        for (int ky = 0; ky < n->kh; ky++) {
            const int iy = oy * n->sh - n->pad_top + ky;
            if (iy < 0 || iy >= H) continue;
            for (int kx = 0; kx < n->kw; kx++) {
                const int ix = ox * n->sw - n->pad_left + kx, here = ky * n->kw + kx;
                if (ix < 0 || ix >= W) continue;
                const float *CNN__RESTRICT xc = xb + ((size_t)iy * W + ix) * C + c0;
                if (first) { /* the window's first cell seeds the maximum (NaN included) */
                    for (int c = 0; c < cn; c++) {
                        y[c0 + c] = k ? xc[c] * k[c0 + c] + shift[c0 + c] : xc[c];
                        cell[c] = here;
                    }
                    first = 0;
                    continue;
                }
                for (int c = 0; c < cn; c++) {
                    const float v = k ? xc[c] * k[c0 + c] + shift[c0 + c] : xc[c];
                    const int better = v > y[c0 + c];
                    y[c0 + c] = better ? v : y[c0 + c];
                    cell[c] = better ? here : cell[c];
                }
            }
        }
        for (int c = 0; c < cn; c++) {
            if (cnn__argmax_wide(n))
                ((unsigned short *)(void *)n->argmax)[at + c0 + c] = (unsigned short)cell[c];
            else n->argmax[at + c0 + c] = (unsigned char)cell[c];
            if (xm) xm[c0 + c] = xb[cnn__window_offset(n, W, oy, ox, cell[c]) + c0 + c];
        }
    }
}

static void cnn__maxpool_forward(cnn_node *n, int B) {
    const cnn__kernel_path *kern = cnn__kern();
    const cnn_node *in = cnn__in(n, 0);
    const int H = in->h, W = in->w, C = n->c;
    const float *x = cnn__in_out(n, 0), *k = NULL, *shift = NULL;
    float *xmax = NULL; /* [B][h][w][C]: x at the maxima, for BatchNorm's backward */
    if (in->fuse.pool) { /* pool BatchNorm's y = x * k + shift, computed here from its input */
        x = cnn__in_out(in, 0);
        k = in->coef;
        shift = in->coef + C;
        if (cnn__bn_uses_batch(in)) xmax = n->x_at_max;
    }
CNN__PARALLEL_FOR((long long)B * cnn__node_size(n) * n->kh * n->kw)
    for (long long r = 0; r < (long long)B * n->h; r++) {
        int b = (int)(r / n->h), oy = (int)(r % n->h);
        const float *CNN__RESTRICT xb = x + (size_t)b * H * W * C; /* this sample */
        for (int ox = 0; ox < n->w; ox++) {
            const size_t o = ((size_t)r * n->w + ox) * C;
            float *CNN__RESTRICT xm = xmax ? xmax + o : NULL;
            const int iy = oy * n->sh - n->pad_top, ix = ox * n->sw - n->pad_left;
            if (n->kh == 2 && n->kw == 2 && iy >= 0 && iy + 2 <= H && ix >= 0 && ix + 2 <= W) {
                const float *x0 = xb + ((size_t)iy * W + ix) * C, *x2 = x0 + (size_t)W * C;
                kern->max_2x2(C, x0, x2, k, shift, n->out + o, n->argmax + o, xm);
            } else {
                cnn__max_window(n, xb, H, W, oy, ox, k, shift, n->out + o, o, xm);
            }
        }
    }
}

static void cnn__maxpool_backward(cnn_node *n, int B) {
    const cnn_node *in = cnn__in(n, 0);
    if (in->fuse.pool) return; /* the BatchNorm before it reads n->dout and argmax itself */
    const size_t per_out = cnn__node_size(n), per_in = cnn__node_size(in);
    const int C = n->c, W = in->w;
    int add;
    float *dx = cnn__in_grad(n, 0, &add);
    if (!dx) return;
    if (!add && n->sh == n->kh && n->sw == n->kw && n->padding == CNN_VALID && in->h == n->h * n->kh &&
        W == n->w * n->kw) {
        /* the windows tile the input: write every input once, the maximum its
           gradient and the rest zero, instead of clearing and scattering */
CNN__PARALLEL_FOR((long long)B * per_in)
        for (long long r = 0; r < (long long)B * n->h; r++) {
            const int b = (int)(r / n->h), oy = (int)(r % n->h);
            for (int ox = 0; ox < n->w; ox++) {
                const size_t o = ((size_t)r * n->w + ox) * C;
                const float *CNN__RESTRICT g = n->dout + o;
                for (int cell = 0; cell < n->kh * n->kw; cell++) {
                    float *CNN__RESTRICT d = dx + (size_t)b * per_in + cnn__window_offset(n, W, oy, ox, cell);
                    for (int c = 0; c < C; c++) d[c] = cnn__argmax_cell(n, o + c) == cell ? g[c] : 0.0f;
                }
            }
        }
        return;
    }
    if (!add) memset(dx, 0, (size_t)B * per_in * sizeof(float));
CNN__PARALLEL_FOR((long long)B * per_out)
    for (int b = 0; b < B; b++)
        for (int oy = 0; oy < n->h; oy++)
            for (int ox = 0; ox < n->w; ox++) {
                const size_t o = (size_t)b * per_out + ((size_t)oy * n->w + ox) * C;
                for (int c = 0; c < C; c++)
                    dx[(size_t)b * per_in + cnn__window_offset(n, W, oy, ox, cnn__argmax_cell(n, o + c)) +
                       c] += n->dout[o + c];
            }
}

/* MaxPooling2D: y = the largest input in the window (its first cell on ties;
   padding cells take no part); the gradient goes to that cell alone. */
static int cnn__ref_max_cell(const cnn_node *n, const cnn_node *in, const float *x, int b, int oy, int ox,
                             int c) {
    int best = -1;
    float v = 0;
    for (int cell = 0; cell < n->kh * n->kw; cell++) {
        const float *xc = cnn__ref_at(n, in, x, b, oy, ox, cell / n->kw, cell % n->kw);
        if (xc && (best < 0 || xc[c] > v)) best = cell, v = xc[c];
    }
    return best;
}

static void cnn__ref_maxpool_forward(cnn_node *n, int B) {
    const cnn_node *in = cnn__in(n, 0);
    const float *x = cnn__in_out(n, 0);
    for (int b = 0; b < B; b++)
        for (int oy = 0; oy < n->h; oy++)
            for (int ox = 0; ox < n->w; ox++)
                for (int c = 0; c < n->c; c++) {
                    const int cell = cnn__ref_max_cell(n, in, x, b, oy, ox, c);
                    n->out[(((size_t)b * n->h + oy) * n->w + ox) * n->c + c] =
                        cnn__ref_at(n, in, x, b, oy, ox, cell / n->kw, cell % n->kw)[c];
                }
}

static void cnn__ref_maxpool_backward(cnn_node *n, int B) {
    const cnn_node *in = cnn__in(n, 0);
    const float *x = cnn__in_out(n, 0);
    float *dx = cnn__in_grad_zeroed(n, 0, B);
    if (!dx) return;
    for (int b = 0; b < B; b++)
        for (int oy = 0; oy < n->h; oy++)
            for (int ox = 0; ox < n->w; ox++)
                for (int c = 0; c < n->c; c++) {
                    const int cell = cnn__ref_max_cell(n, in, x, b, oy, ox, c);
                    const float *xc = cnn__ref_at(n, in, x, b, oy, ox, cell / n->kw, cell % n->kw);
                    dx[(xc - x) + c] += n->dout[(((size_t)b * n->h + oy) * n->w + ox) * n->c + c];
                }
}

static cnn_node *cnn__rebuild_pool(cnn_model *m, const char *name, cnn_node **ins, int n_in,
                                   const cnn__layer_record *L, int type) {
    cnn_pool2d_opts o;
    memset(&o, 0, sizeof o);
    o.pool_size[0] = L->kh, o.pool_size[1] = L->kw, o.strides[0] = L->sh, o.strides[1] = L->sw;
    o.padding = (cnn_padding)L->padding, o.name = name;
    return cnn__pool(m, n_in > 0 ? ins[0] : NULL, &o, type);
}
static cnn_node *cnn__rebuild_maxpool(cnn_model *m, const char *name, cnn_node **ins, int n_in,
                                      const cnn__layer_record *L) {
    return cnn__rebuild_pool(m, name, ins, n_in, L, CNN__MAX_POOL);
}

/* argmax: each output's window cell; x_at_max when it applies a fused BatchNorm */
static int cnn__buffers_maxpool(cnn_node *n, int B, size_t *scratch) {
    const size_t size = (size_t)B * cnn__node_size(n);
    (void)scratch;
    n->argmax = (unsigned char *)cnn__calloc(size, cnn__argmax_wide(n) ? 2 : 1);
    if (cnn__in(n, 0)->fuse.pool) n->x_at_max = (float *)cnn__calloc(size, sizeof(float));
    return n->argmax && (n->x_at_max || !cnn__in(n, 0)->fuse.pool);
}

static const cnn__layer_kind cnn__kind_maxpool = {cnn__maxpool_forward,
                                                  cnn__maxpool_backward,
                                                  cnn__ref_maxpool_forward,
                                                  cnn__ref_maxpool_backward,
                                                  cnn__rebuild_maxpool,
                                                  NULL,
                                                  NULL,
                                                  cnn__buffers_maxpool,
                                                  NULL};

/* ---- AveragePooling2D --------------------------------------------------- */

CNN_IMPL cnn_node *cnn_avg_pool2d_opt(cnn_model *m, cnn_node *x, const cnn_pool2d_opts *o) {
    return cnn__pool(m, x, o, CNN__AVG_POOL);
}

/* The window offsets [*k0, *k1) that land inside an input side of n cells, for
   an output at o (stride s, padding pad, window k): the loops below visit only
   those, so a window far larger than the input (its side may be 65536) costs
   what the input holds. */
static void cnn__window_inside(int o, int s, int pad, int k, int n, int *k0, int *k1) {
    const long long start = (long long)o * s - pad; /* the input index of offset 0 */
    *k0 = start < 0 ? (int)(-start < k ? -start : k) : 0;
    *k1 = n - start < k ? (int)(n - start > *k0 ? n - start : *k0) : k;
}

/* backward 0: out = the mean of each window; backward 1: dx += dout / count */
static void cnn__avgpool_pass(cnn_node *n, int B, int backward) {
    const cnn_node *in = cnn__in(n, 0);
    const int H = in->h, W = in->w, C = n->c;
    const float *x = cnn__in_out(n, 0);
    float *dx = backward ? cnn__in_grad_zeroed(n, 0, B) : NULL;
    if (backward && !dx) return;
CNN__PARALLEL_FOR((long long)B * cnn__node_size(n) * n->kh * n->kw)
    for (int b = 0; b < B; b++)
        for (int oy = 0; oy < n->h; oy++)
            for (int ox = 0; ox < n->w; ox++) {
                size_t o = (((size_t)b * n->h + oy) * n->w + ox) * C;
                int y0, y1, x0, x1;
                cnn__window_inside(oy, n->sh, n->pad_top, n->kh, H, &y0, &y1);
                cnn__window_inside(ox, n->sw, n->pad_left, n->kw, W, &x0, &x1);
                const float scale = 1.0f / (float)((y1 - y0) * (x1 - x0)); /* Keras leaves padding out */
                if (!backward) for (int c = 0; c < C; c++) n->out[o + c] = 0;
                for (int ky = y0; ky < y1; ky++) {
                    int iy = oy * n->sh - n->pad_top + ky;
                    for (int kx = x0; kx < x1; kx++) {
                        int ix = ox * n->sw - n->pad_left + kx;
                        size_t i = (((size_t)b * H + iy) * W + ix) * C;
                        if (backward) for (int c = 0; c < C; c++) dx[i + c] += n->dout[o + c] * scale;
                        else for (int c = 0; c < C; c++) n->out[o + c] += x[i + c];
                    }
                }
                if (!backward) for (int c = 0; c < C; c++) n->out[o + c] *= scale;
            }
}

static void cnn__avgpool_forward(cnn_node *n, int B) { cnn__avgpool_pass(n, B, 0); }

static void cnn__avgpool_backward(cnn_node *n, int B) { cnn__avgpool_pass(n, B, 1); }

static cnn_node *cnn__rebuild_avgpool(cnn_model *m, const char *name, cnn_node **ins, int n_in,
                                      const cnn__layer_record *L) {
    return cnn__rebuild_pool(m, name, ins, n_in, L, CNN__AVG_POOL);
}

static const cnn__layer_kind cnn__kind_avgpool = {cnn__avgpool_forward, cnn__avgpool_backward, NULL, NULL,
                                                  cnn__rebuild_avgpool, NULL, NULL, NULL, NULL};

/* ---- GlobalAveragePooling2D --------------------------------------------- */

CNN_IMPL cnn_node *cnn_global_avg_pool2d_opt(cnn_model *m, cnn_node *x, const cnn_name_opts *o) {
    cnn_node *n = cnn__new_node(m, CNN__GLOBAL_AVG_POOL, &x, 1, o ? o->name : NULL);
    if (!n) return NULL;
    n->h = n->w = 1;
    n->c = x->c;
    return cnn__push(m, n);
}

static void cnn__gap_forward(cnn_node *n, int B) {
    const cnn_node *in = cnn__in(n, 0);
    const size_t P = (size_t)in->h * in->w;
    const int C = n->c;
    const float *x = cnn__in_out(n, 0);
    for (int b = 0; b < B; b++) {
        float *y = n->out + (size_t)b * C;
        for (int c = 0; c < C; c++) y[c] = 0;
        for (size_t p = 0; p < P; p++)
            for (int c = 0; c < C; c++) y[c] += x[((size_t)b * P + p) * C + c];
        for (int c = 0; c < C; c++) y[c] /= (float)P;
    }
}

static void cnn__gap_backward(cnn_node *n, int B) {
    const cnn_node *in = cnn__in(n, 0);
    const size_t P = (size_t)in->h * in->w;
    const int C = n->c;
    float *dx = cnn__in_grad_zeroed(n, 0, B);
    if (!dx) return;
    for (int b = 0; b < B; b++)
        for (size_t p = 0; p < P; p++)
            for (int c = 0; c < C; c++)
                dx[((size_t)b * P + p) * C + c] += n->dout[(size_t)b * C + c] / (float)P;
}

static cnn_node *cnn__rebuild_gap(cnn_model *m, const char *name, cnn_node **ins, int n_in,
                                  const cnn__layer_record *L) {
    cnn_name_opts o = {name};
    (void)L;
    return cnn_global_avg_pool2d_opt(m, n_in > 0 ? ins[0] : NULL, &o);
}

static const cnn__layer_kind cnn__kind_gap = {
    cnn__gap_forward, cnn__gap_backward, NULL, NULL, cnn__rebuild_gap, NULL, NULL, NULL, NULL};

/* ---- Flatten ------------------------------------------------------------ */

CNN_IMPL cnn_node *cnn_flatten_opt(cnn_model *m, cnn_node *x, const cnn_name_opts *o) {
    cnn_node *n = cnn__new_node(m, CNN__FLATTEN, &x, 1, o ? o->name : NULL);
    if (!n) return NULL;
    n->h = n->w = 1;
    n->c = x->h * x->w * x->c; /* NHWC order, as Keras channels_last */
    return cnn__push(m, n);
}

static cnn_node *cnn__rebuild_flatten(cnn_model *m, const char *name, cnn_node **ins, int n_in,
                                      const cnn__layer_record *L) {
    cnn_name_opts o = {name};
    (void)L;
    return cnn_flatten_opt(m, n_in > 0 ? ins[0] : NULL, &o);
}

static const cnn__layer_kind cnn__kind_flatten = {cnn__copy_forward, cnn__copy_backward, NULL, NULL,
                                                  cnn__rebuild_flatten, NULL, NULL, NULL, NULL};

/* ---- Dropout ------------------------------------------------------------ */

CNN_IMPL cnn_node *cnn_dropout_opt(cnn_model *m, cnn_node *x, const cnn_dropout_opts *o) {
    cnn_node *n = cnn__new_node(m, CNN__DROPOUT, &x, 1, o ? o->name : NULL);
    if (!n) return NULL;
    n->rate = o ? o->rate : 0.0f;
    if (!(n->rate >= 0.0f && n->rate < 1.0f)) {
        cnn_set_error(CNN_ERR_ARG, "Dropout '%s': rate %g is not in [0, 1)", n->name, n->rate);
        return cnn__fail(n);
    }
    n->h = x->h; n->w = x->w; n->c = x->c;
    return cnn__push(m, n);
}

/* Dropout masks depend on (seed, layer, optimizer step, sample index in the whole batch, element)
   only: a worker given samples [first_sample, ...) of a split batch draws their masks. */
static void cnn__dropout_forward(cnn_node *n, int B) {
    cnn_model *m = n->model;
    const size_t per = cnn__node_size(n);
    const float *x = cnn__in_out(n, 0);
    if (!m->training || m->dropout_off || n->rate == 0.0f) {
        memcpy(n->out, x, (size_t)B * per * sizeof(float));
        for (size_t i = 0; i < (size_t)B * per; i++) n->mask[i] = 1.0f;
        return;
    }
    const float keep = 1.0f / (1.0f - n->rate);
    const uint64_t layer_key = m->seed * 1000003ULL + (uint64_t)n->index;
    /* a hash of about 16 operations an element: a batch of 32 x 512 runs on all threads */
CNN__PARALLEL_FOR((long long)B * per * 16)
    for (int b = 0; b < B; b++)
        for (size_t i = 0; i < per; i++) {
            size_t k = (size_t)b * per + i;
            float u = cnn__hash_uniform(layer_key, m->dropout_step, (uint64_t)(m->first_sample + b), i);
            n->mask[k] = u < n->rate ? 0.0f : keep;
            n->out[k] = x[k] * n->mask[k];
        }
}

static void cnn__dropout_backward(cnn_node *n, int B) {
    int add;
    float *dx = cnn__in_grad(n, 0, &add);
    if (!dx) return;
    const long long count = (long long)B * (long long)cnn__node_size(n);
CNN__PARALLEL_FOR(count)
    for (long long k = 0; k < count; k++) dx[k] = (add ? dx[k] : 0.0f) + n->dout[k] * n->mask[k];
}

static cnn_node *cnn__rebuild_dropout(cnn_model *m, const char *name, cnn_node **ins, int n_in,
                                      const cnn__layer_record *L) {
    cnn_dropout_opts o = {L->rate, name};
    return cnn_dropout_opt(m, n_in > 0 ? ins[0] : NULL, &o);
}

/* mask: each value's factor, 0 or 1 / (1 - rate) */
static int cnn__buffers_dropout(cnn_node *n, int B, size_t *scratch) {
    (void)scratch;
    n->mask = (float *)cnn__calloc((size_t)B * cnn__node_size(n), sizeof(float));
    return n->mask != NULL;
}

static const cnn__layer_kind cnn__kind_dropout = {cnn__dropout_forward,
                                                  cnn__dropout_backward,
                                                  NULL,
                                                  NULL,
                                                  cnn__rebuild_dropout,
                                                  NULL,
                                                  NULL,
                                                  cnn__buffers_dropout,
                                                  NULL};

/* ---- Activation --------------------------------------------------------- */

CNN_IMPL cnn_node *cnn_activation_opt(cnn_model *m, cnn_node *x, const cnn_activation_opts *o) {
    cnn_node *n = cnn__new_node(m, CNN__ACTIVATION, &x, 1, o ? o->name : NULL);
    if (!n) return NULL;
    n->activation = o ? o->activation : CNN_LINEAR;
    n->alpha = o ? o->alpha : 0.0f;
    if (cnn__check_activation(n->activation, &n->alpha, n->name)) return cnn__fail(n);
    n->h = x->h; n->w = x->w; n->c = x->c;
    return cnn__push(m, n);
}

static void cnn__activation_forward(cnn_node *n, int B) {
    cnn__copy_forward(n, B);
    cnn__activate(n->out, (size_t)B * cnn__node_size(n), n->c, n->activation, n->alpha);
}

static void cnn__activation_backward(cnn_node *n, int B) {
    cnn__activate_backward(n->out, n->dout, (size_t)B * cnn__node_size(n), n->c, cnn__grad_activation(n),
                           n->alpha);
    cnn__pass_backward(n, B, 0);
}

static cnn_node *cnn__rebuild_activation(cnn_model *m, const char *name, cnn_node **ins, int n_in,
                                         const cnn__layer_record *L) {
    cnn_activation_opts o = {(cnn_activation_type)L->activation, L->alpha, name};
    return cnn_activation_opt(m, n_in > 0 ? ins[0] : NULL, &o);
}

static const cnn__layer_kind cnn__kind_activation = {cnn__activation_forward,
                                                     cnn__activation_backward,
                                                     NULL,
                                                     NULL,
                                                     cnn__rebuild_activation,
                                                     NULL,
                                                     NULL,
                                                     NULL,
                                                     NULL};

/* ---- Add ---------------------------------------------------------------- */

static cnn_node *cnn__merge(cnn_model *m, cnn_node *const *inputs, int count, const cnn_name_opts *o,
                            int type) {
    const char *kind = cnn__type_names[type];
    if (!inputs || count < 2) {
        if (m)
            cnn_set_error(CNN_ERR_ARG, "%s '%s': needs a list of at least 2 inputs (got %d)", kind,
                          o && o->name ? o->name : cnn__auto_names[type], inputs ? count : 0);
        else cnn_set_error(CNN_ERR_ARG, "%s: the model is NULL", kind);
        return NULL;
    }
    cnn_node *n = cnn__new_node(m, type, inputs, count, o ? o->name : NULL);
    if (!n) return NULL;
    const cnn_node *a = inputs[0];
    n->h = a->h; n->w = a->w; n->c = a->c;
    for (int i = 1; i < count; i++) {
        const cnn_node *b = inputs[i];
        int same = type == CNN__ADD ? (b->h == a->h && b->w == a->w && b->c == a->c)
                                    : (b->h == a->h && b->w == a->w);
        if (!same) {
            cnn_set_error(CNN_ERR_SHAPE,
                          "%s '%s': input '%s' (%dx%dx%d) does not match input '%s' (%dx%dx%d)", kind,
                          n->name, a->name, a->h, a->w, a->c, b->name, b->h, b->w, b->c);
            return cnn__fail(n);
        }
        if (type == CNN__CONCAT) {
            if ((long long)n->c + b->c > INT_MAX) { /* cnn__push checks the whole size */
                cnn_set_error(CNN_ERR_SHAPE, "Concatenate '%s': more than %d channels", n->name, INT_MAX);
                return cnn__fail(n);
            }
            n->c += b->c;
        }
    }
    return cnn__push(m, n);
}

CNN_IMPL cnn_node *cnn_add_opt(cnn_model *m, cnn_node *const *inputs, int n, const cnn_name_opts *o) {
    return cnn__merge(m, inputs, n, o, CNN__ADD);
}

static void cnn__add_forward(cnn_node *n, int B) {
    const long long count = (long long)B * (long long)cnn__node_size(n);
    cnn__copy_forward(n, B);
    for (int i = 1; i < n->n_inputs; i++) {
        const float *x = cnn__in_out(n, i);
CNN__PARALLEL_FOR(count)
        for (long long k = 0; k < count; k++) n->out[k] += x[k];
    }
}

static void cnn__add_backward(cnn_node *n, int B) {
    for (int i = 0; i < n->n_inputs; i++) cnn__pass_backward(n, B, i);
}

static cnn_node *cnn__rebuild_add(cnn_model *m, const char *name, cnn_node **ins, int n_in,
                                  const cnn__layer_record *L) {
    cnn_name_opts o = {name};
    (void)L;
    return cnn_add_opt(m, ins, n_in, &o);
}

static const cnn__layer_kind cnn__kind_add = {
    cnn__add_forward, cnn__add_backward, NULL, NULL, cnn__rebuild_add, NULL, NULL, NULL, NULL};

/* ---- Concatenate -------------------------------------------------------- */

CNN_IMPL cnn_node *cnn_concatenate_opt(cnn_model *m, cnn_node *const *inputs, int n, const cnn_name_opts *o) {
    return cnn__merge(m, inputs, n, o, CNN__CONCAT);
}

/* forward copies each input's channels into its slice; backward adds them back */
static void cnn__concat_pass(cnn_node *n, int B, int backward) {
    const size_t P = (size_t)B * n->h * n->w;
    int c0 = 0;
    for (int i = 0; i < n->n_inputs; i++) {
        const int ci = cnn__in(n, i)->c;
        const float *x = cnn__in_out(n, i);
        int add = 0;
        float *dx = backward ? cnn__in_grad(n, i, &add) : NULL;
        if (!backward)
            for (size_t p = 0; p < P; p++)
                memcpy(n->out + p * n->c + c0, x + p * ci, (size_t)ci * sizeof(float));
        else if (dx)
            for (size_t p = 0; p < P; p++)
                for (int c = 0; c < ci; c++)
                    dx[p * ci + c] = (add ? dx[p * ci + c] : 0.0f) + n->dout[p * n->c + c0 + c];
        c0 += ci;
    }
}

static void cnn__concat_forward(cnn_node *n, int B) { cnn__concat_pass(n, B, 0); }

static void cnn__concat_backward(cnn_node *n, int B) { cnn__concat_pass(n, B, 1); }

static cnn_node *cnn__rebuild_concat(cnn_model *m, const char *name, cnn_node **ins, int n_in,
                                     const cnn__layer_record *L) {
    cnn_name_opts o = {name};
    (void)L;
    return cnn_concatenate_opt(m, ins, n_in, &o);
}

static const cnn__layer_kind cnn__kind_concat = {cnn__concat_forward, cnn__concat_backward, NULL, NULL,
                                                 cnn__rebuild_concat, NULL, NULL, NULL, NULL};

/* ---- ZeroPadding2D ------------------------------------------------------ */
/* kh, kw hold the rows added at the top and the columns added at the left;
   the output shape gives the bottom and right. */

CNN_IMPL cnn_node *cnn_zero_padding2d_opt(cnn_model *m, cnn_node *x, const cnn_zero_padding2d_opts *o) {
    cnn_node *n = cnn__new_node(m, CNN__ZERO_PADDING, &x, 1, o ? o->name : NULL);
    if (!n) return NULL;
    if (cnn__is_flat(x)) {
        cnn_set_error(CNN_ERR_SHAPE, "ZeroPadding2D '%s': input '%s' is flat; ZeroPadding2D needs an image",
                      n->name, x->name);
        return cnn__fail(n);
    }
    int pad[4] = {1, 1, 1, 1}; /* top, bottom, left, right */
    if (o && (o->padding[0] || o->padding[1] || o->padding[2] || o->padding[3]))
        memcpy(pad, o->padding, sizeof pad);
    for (int i = 0; i < 4; i++)
        if (pad[i] < 0 || pad[i] > 65535) {
            cnn_set_error(CNN_ERR_ARG, "ZeroPadding2D '%s': padding %d is not in 0..65535", n->name, pad[i]);
            return cnn__fail(n);
        }
    const long long h = (long long)x->h + pad[0] + pad[1], w = (long long)x->w + pad[2] + pad[3];
    if (h > INT_MAX || w > INT_MAX || h * w > INT_MAX / x->c) {
        cnn_set_error(CNN_ERR_SHAPE, "ZeroPadding2D '%s': %lldx%lldx%d values per sample are too many",
                      n->name, h, w, x->c);
        return cnn__fail(n);
    }
    n->kh = pad[0], n->kw = pad[2];
    n->h = (int)h, n->w = (int)w, n->c = x->c;
    return cnn__push(m, n);
}

/* y[b][top + i][left + j][c] = x[b][i][j][c], 0 in the border */
static void cnn__zero_padding_forward(cnn_node *n, int B) {
    const cnn_node *in = cnn__in(n, 0);
    const float *x = cnn__in_out(n, 0);
    const size_t row = (size_t)in->w * in->c; /* floats of an input row */
    memset(n->out, 0, (size_t)B * cnn__node_size(n) * sizeof(float));
    CNN__PARALLEL_FOR((long long)B * cnn__node_size(n))
    for (int b = 0; b < B; b++)
        for (int i = 0; i < in->h; i++)
            memcpy(n->out + (((size_t)b * n->h + n->kh + i) * n->w + n->kw) * n->c,
                   x + ((size_t)b * in->h + i) * row, row * sizeof(float));
}

/* dx[b][i][j][c] (+)= dy[b][top + i][left + j][c]: the border's gradient goes nowhere */
static void cnn__zero_padding_backward(cnn_node *n, int B) {
    const cnn_node *in = cnn__in(n, 0);
    const size_t row = (size_t)in->w * in->c;
    int add;
    float *dx = cnn__in_grad(n, 0, &add);
    if (!dx) return;
    CNN__PARALLEL_FOR((long long)B * cnn__node_size(in))
    for (int b = 0; b < B; b++)
        for (int i = 0; i < in->h; i++) {
            const float *dy = n->dout + (((size_t)b * n->h + n->kh + i) * n->w + n->kw) * n->c;
            float *d = dx + ((size_t)b * in->h + i) * row;
            for (size_t k = 0; k < row; k++) d[k] = (add ? d[k] : 0.0f) + dy[k];
        }
}

static cnn_node *cnn__rebuild_zero_padding(cnn_model *m, const char *name, cnn_node **ins, int n_in,
                                           const cnn__layer_record *L) {
    cnn_node *x = n_in > 0 ? ins[0] : NULL;
    cnn_zero_padding2d_opts o;
    memset(&o, 0, sizeof o);
    if (x) { /* bottom and right from the record's shape (in 64 bits: the record is untrusted) */
        const long long bottom = (long long)L->h - x->h - L->kh, right = (long long)L->w - x->w - L->kw;
        if (bottom < INT_MIN || bottom > INT_MAX || right < INT_MIN || right > INT_MAX) {
            cnn_set_error(CNN_ERR_FORMAT, "ZeroPadding2D '%s': the record's shape %dx%d does not follow from its input",
                          name, L->h, L->w);
            return NULL;
        }
        o.padding[0] = L->kh;
        o.padding[1] = (int)bottom;
        o.padding[2] = L->kw;
        o.padding[3] = (int)right;
    }
    o.name = name;
    cnn_node *n = cnn_zero_padding2d_opt(m, x, &o);
    if (n && (n->h != L->h || n->w != L->w)) { /* a record of all-zero padding reads as the default 1 */
        cnn_set_error(CNN_ERR_FORMAT,
                      "ZeroPadding2D '%s': the record's shape %dx%d does not follow from its input", name,
                      L->h, L->w);
        return NULL;
    }
    return n;
}

static const cnn__layer_kind cnn__kind_zero_padding = {cnn__zero_padding_forward,
                                                       cnn__zero_padding_backward,
                                                       NULL,
                                                       NULL,
                                                       cnn__rebuild_zero_padding,
                                                       NULL,
                                                       NULL,
                                                       NULL,
                                                       NULL};

/* ---- UpSampling2D (nearest) --------------------------------------------- */
/* kh, kw hold the factors of rows and columns. */

CNN_IMPL cnn_node *cnn_up_sampling2d_opt(cnn_model *m, cnn_node *x, const cnn_up_sampling2d_opts *o) {
    cnn_node *n = cnn__new_node(m, CNN__UP_SAMPLING, &x, 1, o ? o->name : NULL);
    if (!n) return NULL;
    if (cnn__is_flat(x)) {
        cnn_set_error(CNN_ERR_SHAPE, "UpSampling2D '%s': input '%s' is flat; UpSampling2D needs an image",
                      n->name, x->name);
        return cnn__fail(n);
    }
    n->kh = o && o->size[0] ? o->size[0] : 2;
    n->kw = o && o->size[1] ? o->size[1] : 2;
    if (n->kh < 1 || n->kw < 1 || n->kh > 65535 || n->kw > 65535) {
        cnn_set_error(CNN_ERR_ARG, "UpSampling2D '%s': size %dx%d must be in 1..65535", n->name, n->kh,
                      n->kw);
        return cnn__fail(n);
    }
    const long long h = (long long)x->h * n->kh, w = (long long)x->w * n->kw;
    if (h > INT_MAX || w > INT_MAX || h * w > INT_MAX / x->c) {
        cnn_set_error(CNN_ERR_SHAPE, "UpSampling2D '%s': %lldx%lldx%d values per sample are too many",
                      n->name, h, w, x->c);
        return cnn__fail(n);
    }
    n->h = (int)h, n->w = (int)w, n->c = x->c;
    return cnn__push(m, n);
}

/* y[b][i][j][c] = x[b][i / kh][j / kw][c] */
static void cnn__up_sampling_forward(cnn_node *n, int B) {
    const cnn_node *in = cnn__in(n, 0);
    const float *x = cnn__in_out(n, 0);
    const int C = n->c;
    CNN__PARALLEL_FOR((long long)B * cnn__node_size(n))
    for (int b = 0; b < B; b++)
        for (int i = 0; i < n->h; i++)
            for (int j = 0; j < n->w; j++)
                memcpy(n->out + (((size_t)b * n->h + i) * n->w + j) * C,
                       x + (((size_t)b * in->h + i / n->kh) * in->w + j / n->kw) * C,
                       (size_t)C * sizeof(float));
}

/* dx[b][i][j][c] (+)= the sum of dy over the kh x kw block that repeats it,
   row by row */
static void cnn__up_sampling_backward(cnn_node *n, int B) {
    const cnn_node *in = cnn__in(n, 0);
    const int C = n->c;
    int add;
    float *dx = cnn__in_grad(n, 0, &add);
    if (!dx) return;
    CNN__PARALLEL_FOR((long long)B * cnn__node_size(n))
    for (int b = 0; b < B; b++)
        for (int i = 0; i < in->h; i++)
            for (int j = 0; j < in->w; j++) {
                float *d = dx + (((size_t)b * in->h + i) * in->w + j) * C;
                for (int c = 0; c < C; c++) {
                    float sum = 0;
                    for (int p = 0; p < n->kh; p++)
                        for (int q = 0; q < n->kw; q++)
                            sum +=
                                n->dout[(((size_t)b * n->h + i * n->kh + p) * n->w + j * n->kw + q) * C + c];
                    d[c] = (add ? d[c] : 0.0f) + sum;
                }
            }
}

static cnn_node *cnn__rebuild_up_sampling(cnn_model *m, const char *name, cnn_node **ins, int n_in,
                                          const cnn__layer_record *L) {
    cnn_up_sampling2d_opts o = {{L->kh, L->kw}, name};
    return cnn_up_sampling2d_opt(m, n_in > 0 ? ins[0] : NULL, &o);
}

static const cnn__layer_kind cnn__kind_up_sampling = {cnn__up_sampling_forward,
                                                      cnn__up_sampling_backward,
                                                      NULL,
                                                      NULL,
                                                      cnn__rebuild_up_sampling,
                                                      NULL,
                                                      NULL,
                                                      NULL,
                                                      NULL};

/* ---- the table: the kinds in CNN__LAYER_KINDS' order --------------------- */

#define CNN__KIND_ROW(id, block, keras, prefix) &cnn__kind_##block,
static const cnn__layer_kind *const cnn__layers[CNN__LAYER_TYPES] = {CNN__LAYER_KINDS(CNN__KIND_ROW)};
#undef CNN__KIND_ROW

/* ======================================================================== */
/* Building: parameters, initialisation, batch buffers                      */
/* ======================================================================== */

/* every layer's initial parameters and state, layer after layer from one
   stream of the model's seed; the optimizer starts afresh */
static void cnn__init_params(cnn_model *m) {
    cnn__rng r = {cnn__mix64(m->seed ^ 0x494e4954ULL)};
    for (int i = 0; i < m->n_nodes; i++)
        if (cnn__layers[m->nodes[i]->type]->init) cnn__layers[m->nodes[i]->type]->init(m->nodes[i], &r);
    if (m->slot1) memset(m->slot1, 0, m->n_params * sizeof(float));
    if (m->slot2) memset(m->slot2, 0, m->n_params * sizeof(float));
    m->step = 0;
}

#ifndef CNN_NO_FUSION
/* The only reader of node i, or NULL when it has none or several. */
static cnn_node *cnn__only_reader(const cnn_model *m, int i) {
    cnn_node *only = NULL;
    int readers = 0;
    for (int j = i + 1; j < m->n_nodes; j++)
        for (int k = 0; k < m->nodes[j]->n_inputs; k++)
            if (m->nodes[j]->inputs[k] == i) readers++, only = m->nodes[j];
    return readers == 1 ? only : NULL;
}
#endif

/* The fusion plan of the graph (see cnn__fusion). */
static void cnn__plan_fusion(cnn_model *m) {
    for (int i = 0; i < m->n_nodes; i++) memset(&m->nodes[i]->fuse, 0, sizeof m->nodes[i]->fuse);
#ifndef CNN_NO_FUSION
    for (int i = 0; i < m->n_nodes; i++) { /* BatchNorm -> MaxPooling2D */
        cnn_node *n = m->nodes[i], *only = cnn__only_reader(m, i);
        if (n->type == CNN__BATCH_NORM && only && only->type == CNN__MAX_POOL) n->fuse.pool = only;
    }
    for (int i = 0; i < m->n_nodes; i++) { /* Conv2D -> BatchNorm (-> MaxPooling2D) */
        cnn_node *n = m->nodes[i], *bn = cnn__only_reader(m, i);
        const cnn_node *pool = bn ? bn->fuse.pool : NULL;
        if (n->type != CNN__CONV2D || (n->activation != CNN_RELU && n->activation != CNN_LINEAR) || !bn ||
            bn->type != CNN__BATCH_NORM)
            continue;
        n->fuse.bn = bn;
        n->fuse.bn_input_grad = pool && pool->sh == pool->kh && pool->sw == pool->kw &&
                                pool->padding == CNN_VALID && !cnn__argmax_wide(pool) &&
                                n->w < 65536 /* see cnn__pool_cells */;
    }
#endif
}

CNN_IMPL int cnn_model_set_output(cnn_model *m, cnn_node *output) {
    if (!m) return cnn_set_error(CNN_ERR_ARG, "cnn_model_set_output: the model is NULL");
    if (!output) /* keep the message of the layer that failed, if any */
        return cnn__error[0] ? CNN_ERR_ARG
                             : cnn_set_error(CNN_ERR_ARG, "cnn_model_set_output: the output layer is NULL");
    if (output->model != m)
        return cnn_set_error(CNN_ERR_ARG, "cnn_model_set_output: layer '%s' belongs to another model",
                             output->name);
    if (m->built) return cnn_set_error(CNN_ERR_STATE, "cnn_model_set_output: the output is already set");
    if (m->input < 0)
        return cnn_set_error(CNN_ERR_STATE, "cnn_model_set_output: the model has no Input layer");
    if (output->type == CNN__INPUT)
        return cnn_set_error(CNN_ERR_ARG, "cnn_model_set_output: the output '%s' is the input itself",
                             output->name);
    /* Keep only what the output depends on: layers built but unused would cost time. */
    char *used = (char *)cnn__alloc((size_t)m->n_nodes, 1, "a layer mask");
    if (!used) return CNN_ERR_MEMORY;
    used[output->index] = 1;
    for (int i = output->index; i >= 0; i--)
        if (used[i])
            for (int k = 0; k < m->nodes[i]->n_inputs; k++) used[m->nodes[i]->inputs[k]] = 1;
    if (!used[m->input]) {
        CNN_FREE(used);
        return cnn_set_error(CNN_ERR_SHAPE,
                             "cnn_model_set_output: output '%s' is not connected to input '%s'", output->name,
                             m->nodes[m->input]->name);
    }
    int *remap = (int *)cnn__alloc((size_t)m->n_nodes, sizeof(int), "a layer map");
    if (!remap) { CNN_FREE(used); return CNN_ERR_MEMORY; }
    int kept = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        cnn_node *n = m->nodes[i];
        if (!used[i]) { CNN_FREE(n); continue; } /* handles to dropped layers become invalid */
        remap[i] = kept;
        for (int k = 0; k < n->n_inputs; k++) n->inputs[k] = remap[n->inputs[k]];
        n->index = kept;
        m->nodes[kept++] = n;
    }
    m->input = remap[m->input];
    m->output = remap[output->index];
    m->n_nodes = kept;
    CNN_FREE(used);
    cnn__plan_fusion(m);
    CNN_FREE(remap);
    size_t np = 0, ns = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        cnn_node *n = m->nodes[i];
        n->p_off = np; np += n->p_count;
        n->s_off = ns; ns += n->s_count;
    }
    m->n_params = np;
    m->n_state = ns;
    m->params = (float *)cnn__alloc(np, sizeof(float), "parameters");
    m->grads = (float *)cnn__alloc(np, sizeof(float), "gradients");
    m->state = (float *)cnn__alloc(ns, sizeof(float), "BatchNorm statistics");
    if (!m->params || !m->grads || !m->state) {
        CNN_FREE(m->params); CNN_FREE(m->grads); CNN_FREE(m->state);
        m->params = m->grads = m->state = NULL;
        return CNN_ERR_MEMORY;
    }
    m->built = 1;
    cnn__init_params(m);
    return CNN_OK;
}

CNN_IMPL int cnn_model_set_seed(cnn_model *m, uint64_t seed) {
    if (!m) return cnn_set_error(CNN_ERR_ARG, "cnn_model_set_seed: the model is NULL");
    m->seed = seed;
    if (m->built) cnn__init_params(m);
    return CNN_OK;
}

static int cnn__check_built(const cnn_model *m, const char *fn) {
    if (!m) return cnn_set_error(CNN_ERR_ARG, "%s: the model is NULL", fn);
    if (!m->built)
        return cnn_set_error(CNN_ERR_STATE, "%s: the model has no output yet (call cnn_model_set_output)",
                             fn);
    return CNN_OK;
}

static int cnn__check_compiled(const cnn_model *m, const char *fn) {
    int rc = cnn__check_built(m, fn);
    if (rc) return rc;
    if (!m->compiled)
        return cnn_set_error(CNN_ERR_STATE, "%s: the model is not compiled (call cnn_compile)", fn);
    return CNN_OK;
}

/* Size the batch buffers for B samples (grow only). */
static int cnn__ensure_batch(cnn_model *m, int B) {
    if (B <= m->cap_batch) return CNN_OK;
    cnn__free_buffers(m);
    size_t scratch = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        cnn_node *n = m->nodes[i];
        size_t sz = (size_t)B * cnn__node_size(n);
        if (n->type == CNN__INPUT) continue;
        n->out = (float *)cnn__calloc(sz, sizeof(float));
        n->dout = (float *)cnn__calloc(sz, sizeof(float));
        const cnn__layer_kind *kind = cnn__layers[n->type];
        const int ok = n->out && n->dout && (!kind->buffers || kind->buffers(n, B, &scratch));
        if (!ok) {
            cnn__free_buffers(m);
            return cnn_set_error(CNN_ERR_MEMORY, "out of memory for a batch of %d at layer '%s'", B, n->name);
        }
    }
    m->scratch = (float *)cnn__calloc(scratch, sizeof(float));
    if (!m->scratch) {
        cnn__free_buffers(m);
        return cnn_set_error(CNN_ERR_MEMORY, "out of memory for a batch of %d", B);
    }
    m->scratch_size = scratch;
    m->cap_batch = B;
    return CNN_OK;
}

/* ======================================================================== */
/* Forward, loss, backward                                                  */
/* ======================================================================== */

/* the forward pass's floating-point operations for B samples */
static double cnn__layer_flop(const cnn_node *n, int B) {
    return cnn__layers[n->type]->flop ? cnn__layers[n->type]->flop(n, B) : 0;
}

/* node n's forward pass over B samples, timed when profiling (the batch's
   operations and calls are counted by the caller) */
static void cnn__forward_node(cnn_node *n, int B) {
    cnn_model *m = n->model;
    const double t0 = m->profiling ? cnn_wall_time() : 0;
    const cnn__layer_kind *kind = cnn__layers[n->type];
    (m->reference && kind->ref_forward ? kind->ref_forward : kind->forward)(n, B);
    if (m->profiling) n->prof.forward_s += cnn_wall_time() - t0;
}

/* Inference through Conv2D -> BatchNorm -> MaxPooling2D, fused (the pool
   applies BatchNorm's k and shift as it reads the conv's output), a block of
   samples at a time: the conv writes a block's output over the first samples
   of its buffer, again and again, so that the pool reads it from the caches
   rather than from memory (the tutorial's conv_1 writes 59 MB for a batch of
   256, which the pool read back at 2.7 ms of 22 on AVX2). About 1 MiB of conv
   output a thread; each thread's rows of the pool are roughly those its rows
   of the product made (both split the block's rows evenly, in order). The
   three must be adjacent in node order (another branch between them: no
   blocks). The conv's buffer then holds the last block only: its one reader
   is the BatchNorm, whose one reader is the pool (cnn_layer_output runs its
   own passes). Returns the nodes it ran (3), or 0 where node i starts no such
   run. */
static int cnn__forward_conv_blocks(cnn_model *m, int i, int B) {
    cnn_node *n = m->nodes[i], *bn = n->fuse.bn, *pool = bn ? bn->fuse.pool : NULL;
    if (m->training || m->reference || !pool || i + 2 >= m->n_nodes || m->nodes[i + 1] != bn ||
        m->nodes[i + 2] != pool || m->output == i || m->output == i + 1 || cnn__argmax_wide(pool))
        return 0;
    const size_t per_thread = (size_t)1 << 20, sample = cnn__node_size(n) * sizeof(float);
    const int block = (int)(per_thread * (size_t)cnn__team_size() / sample);
    if (block < 1 || block >= B) return 0;
    cnn_node *in = cnn__in(n, 0);
    const size_t in_size = cnn__node_size(in), pool_size = cnn__node_size(pool);
    float *x = in->type == CNN__INPUT ? m->x_in : in->out, *pool_out = pool->out;
    unsigned char *argmax = pool->argmax; /* a byte a value (not wide) */
    cnn__forward_node(bn, B);            /* its coefficients, the same for every block */
    for (int b0 = 0; b0 < B; b0 += block) {
        const int S = B - b0 < block ? B - b0 : block;
        if (in->type == CNN__INPUT) m->x_in = x + (size_t)b0 * in_size;
        else in->out = x + (size_t)b0 * in_size;
        cnn__forward_node(n, S);
        pool->out = pool_out + (size_t)b0 * pool_size;
        pool->argmax = argmax + (size_t)b0 * pool_size;
        cnn__forward_node(pool, S);
    }
    if (in->type == CNN__INPUT) m->x_in = x;
    else in->out = x;
    pool->out = pool_out;
    pool->argmax = argmax;
    return 3;
}

static void cnn__forward(cnn_model *m, const float *x, int B) {
    (void)cnn__kern(); /* the kernel path is chosen here, before any parallel loop reads it */
    CNN_ASSERT(m->built && B > 0 && B <= m->cap_batch); /* callers size the buffers first */
    m->x_in = (float *)x;
    for (int i = 0; i < m->n_nodes;) {
        int ran = cnn__forward_conv_blocks(m, i, B);
        if (!ran) {
            cnn__forward_node(m->nodes[i], B);
            ran = 1;
        }
        for (int j = i; j < i + ran && m->profiling; j++) {
            cnn_node *n = m->nodes[j];
            n->prof.forward_flop += cnn__layer_flop(n, B);
            n->prof.forward_calls++;
        }
        i += ran;
    }
}

/* The backend's line on where the passes run (always, or when it changed). */
static void cnn__describe_backend(cnn_model *m, int always, FILE *out) {
    char where[1024];
    if (m->backend.describe(m, always, where, sizeof where)) fprintf(out, "%s\n", where);
}

/* The forward pass on the backend in use: the CPU, or the one installed. */
static int cnn__run_forward(cnn_model *m, const float *x, int B) {
    if (m->backend.forward) return m->backend.forward(m, x, B);
    cnn__forward(m, x, B);
    return CNN_OK;
}

static const float *cnn__output(const cnn_model *m) { return m->nodes[m->output]->out; }

static int cnn__argmax(const float *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) if (v[i] > v[best]) best = i;
    return best;
}

/* class index of target row t (y_width 1: the value itself; else its argmax) */
static int cnn__target_class(const float *t, int y_width) {
    return y_width == 1 ? (int)t[0] : cnn__argmax(t, y_width);
}

/* Validate targets y [B][y_width] against the model's output width U. */
static int cnn__check_targets(const cnn_model *m, const float *y, int B, int y_width, const char *fn) {
    const int U = cnn_model_output_size(m);
    if (!y) return cnn_set_error(CNN_ERR_ARG, "%s: the targets are NULL", fn);
    if (y_width != 1 && y_width != U)
        return cnn_set_error(CNN_ERR_SHAPE,
                             "%s: targets have width %d; the output '%s' has %d units (give 1 class index "
                             "per sample or %d values)",
                             fn, y_width, m->nodes[m->output]->name, U, U);
    int sparse = y_width == 1 && U > 1; /* one class index per sample */
    if (m->loss == CNN_SPARSE_CATEGORICAL_CROSSENTROPY && y_width != 1)
        return cnn_set_error(
            CNN_ERR_SHAPE,
            "%s: sparse_categorical_crossentropy takes one class index per sample (y_width 1), not %d", fn,
            y_width);
    for (int b = 0; b < B; b++)
        for (int j = 0; j < y_width; j++) {
            float v = y[(size_t)b * y_width + j];
            if (!isfinite(v))
                return cnn_set_error(CNN_ERR_ARG, "%s: target %d of sample %d is not finite", fn, j, b);
            if (sparse && (v < 0 || v >= U || v != floorf(v)))
                return cnn_set_error(CNN_ERR_ARG, "%s: label %g of sample %d is not a class index in 0..%d",
                                     fn, v, b, U - 1);
        }
    return CNN_OK;
}

/* Loss (mean over the batch, weighted per sample), accuracy, and d loss/d output
   written into the output node's dout (already d(pre-activation) when the
   softmax/sigmoid is fused with cross-entropy: *fused is set). y_width as in
   cnn_batch_source; weights [num classes] or NULL. */
static void cnn__loss(cnn_model *m, const float *y, int B, int y_width, const float *class_weight,
                      int want_grad, double *loss_out, double *acc_out, int *fused) {
    const cnn_node *o = m->nodes[m->output];
    const int U = (int)cnn__node_size(o);
    const float *p = o->out;
    float *d = o->dout;
    const float eps = 1e-7f;
    double loss = 0, correct = 0;
    int sparse_targets = y_width == 1 && U > 1;
    *fused = (m->loss == CNN_CATEGORICAL_CROSSENTROPY || m->loss == CNN_SPARSE_CATEGORICAL_CROSSENTROPY) &&
             o->activation == CNN_SOFTMAX && o->type != CNN__ACTIVATION &&
             (o->type == CNN__DENSE || o->type == CNN__CONV2D);
    if (m->loss == CNN_BINARY_CROSSENTROPY && o->activation == CNN_SIGMOID &&
        (o->type == CNN__DENSE || o->type == CNN__CONV2D))
        *fused = 1;
    for (int b = 0; b < B; b++) {
        const float *pb = p + (size_t)b * U, *tb = y + (size_t)b * y_width;
        float *db = d + (size_t)b * U;
        int label = cnn__target_class(tb, y_width);
        double w = class_weight && (U > 1 || y_width == 1) ? class_weight[U > 1 ? label : (tb[0] > 0.5f)]
                                                           : 1.0;
        double l = 0;
        float scale = (float)(w / B);
        switch (m->loss) {
        case CNN_CATEGORICAL_CROSSENTROPY:
        case CNN_SPARSE_CATEGORICAL_CROSSENTROPY:
            for (int j = 0; j < U; j++) {
                float t = sparse_targets ? (j == label) : tb[j];
                float pc = pb[j] < eps ? eps : pb[j] > 1 - eps ? 1 - eps : pb[j];
                if (t != 0) l -= t * log(pc);
                if (want_grad)
                    db[j] = *fused ? (pb[j] - t) * scale
                                   : (pb[j] > eps && pb[j] < 1 - eps ? -t / pc * scale : 0.0f);
            }
            correct += cnn__argmax(pb, U) == label;
            break;
        case CNN_BINARY_CROSSENTROPY:
            for (int j = 0; j < U; j++) {
                float t = sparse_targets ? (j == label) : tb[y_width == 1 ? 0 : j];
                float pc = pb[j] < eps ? eps : pb[j] > 1 - eps ? 1 - eps : pb[j];
                l -= (t * log(pc) + (1 - t) * log(1 - pc)) / U;
                if (want_grad)
                    db[j] = *fused ? (pb[j] - t) * scale / U
                                   : (pb[j] > eps && pb[j] < 1 - eps ? (pc - t) / (pc * (1 - pc)) * scale / U
                                                                     : 0.0f);
                correct += (double)((pb[j] > 0.5f) == (t > 0.5f)) / U;
            }
            break;
        case CNN_MSE:
        default:
            for (int j = 0; j < U; j++) {
                float t = sparse_targets ? (j == label) : tb[y_width == 1 ? 0 : j];
                float e = pb[j] - t;
                l += (double)e * e / U;
                if (want_grad) db[j] = 2 * e * scale / U;
            }
            correct += U > 1 ? cnn__argmax(pb, U) == label : (pb[0] > 0.5f) == (tb[0] > 0.5f);
            break;
        }
        loss += w * l;
    }
    *loss_out = loss / B;
    *acc_out = correct / B;
}

/* L1/L2 penalties of the kernels; adds their gradient when grad != 0 */
static double cnn__regularize(cnn_model *m, int grad) {
    double total = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        const cnn_node *n = m->nodes[i];
        if (n->l1 == 0 && n->l2 == 0) continue;
        const float *w = m->params + n->p_off;
        float *g = m->grads + n->p_off;
        for (size_t k = 0; k < n->kernel_count; k++) {
            total += n->l1 * fabs(w[k]) + n->l2 * (double)w[k] * w[k];
            if (grad && n->trainable) g[k] += n->l1 * (float)((w[k] > 0) - (w[k] < 0)) + 2 * n->l2 * w[k];
        }
    }
    return total;
}

static void cnn__backward(cnn_model *m, int B, int fused) {
    (void)cnn__kern(); /* the kernel path is chosen here, before any parallel loop reads it */
    CNN_ASSERT(B <= m->cap_batch);
    for (int i = 0; i < m->n_nodes; i++) m->nodes[i]->dout_written = 0; /* consumers overwrite, then add */
    m->dx_in_written = 0;
    m->dout_is_preact = fused;
    for (int i = m->n_nodes - 1; i >= 0; i--) {
        cnn_node *n = m->nodes[i];
        double t0 = m->profiling ? cnn_wall_time() : 0;
        const cnn__layer_kind *kind = cnn__layers[n->type];
        (m->reference && kind->ref_backward ? kind->ref_backward : kind->backward)(n, B);
        if (m->profiling) {
            int input_grad = n->n_inputs > 0 && cnn__in_dout(n, 0) != NULL;
            n->prof.backward_s += cnn_wall_time() - t0;
            n->prof.backward_flop += cnn__layer_flop(n, B) * (input_grad ? 2 : 1);
            n->prof.backward_calls++;
        }
    }
    m->dout_is_preact = 0;
}

/* forward (training mode) + loss + backward; grads are overwritten */
static int cnn__compute_gradients(cnn_model *m, const float *x, const float *y, int B, int y_width,
                                  const float *class_weight, double *loss, double *acc) {
    int rc = cnn__ensure_batch(m, B);
    if (rc) return rc;
    int fused;
    const int on_backend = m->backend.forward && !m->dx_in; /* backends give no input gradient */
    cnn__zero_floats(m->grads, m->n_params);
    m->training = 1;
    if (on_backend) rc = m->backend.forward(m, x, B);
    else cnn__forward(m, x, B);
    if (!rc) {
        cnn__loss(m, y, B, y_width, class_weight, 1, loss, acc, &fused);
        *loss += cnn__regularize(m, 1);
        if (on_backend) rc = m->backend.backward(m, B, fused);
        else cnn__backward(m, B, fused);
    }
    m->training = 0;
    return rc;
}

/* ======================================================================== */
/* Optimizers: one loop over the flat parameter buffer                      */
/* ======================================================================== */

/* The sum of squares of g[0..count), in double, the same whatever the thread
   count: fixed blocks summed in parallel, then the blocks' sums in order. */
static double cnn__sum_squares(const float *g, long long count) {
    enum { BLOCK = 16384 };
    double total = 0;
    const long long blocks = (count + BLOCK - 1) / BLOCK;
    for (long long b0 = 0; b0 < blocks; b0 += 64) { /* 64 blocks' sums at a time */
        double part[64];
        const long long nb = blocks - b0 < 64 ? blocks - b0 : 64;
CNN__PARALLEL_FOR(count)
        for (long long b = 0; b < nb; b++) {
            const long long lo = (b0 + b) * BLOCK, hi = lo + BLOCK < count ? lo + BLOCK : count;
            double s = 0;
            for (long long k = lo; k < hi; k++) s += (double)g[k] * g[k];
            part[b] = s;
        }
        for (long long b = 0; b < nb; b++) total += part[b];
    }
    return total;
}

static void cnn__scale_floats(float *g, long long count, float scale) {
CNN__PARALLEL_FOR(count)
    for (long long k = 0; k < count; k++) g[k] *= scale;
}

/* Gradient clipping before the step, as Keras' optimizers do it (tf.clip_by_norm
   per weight tensor, tf.clip_by_global_norm over all, tf.clip_by_value):
     clipnorm:        g <- g * clipnorm / max(||g||, clipnorm)   for each tensor
     global_clipnorm: g <- g * global_clipnorm / max(||all g||, global_clipnorm)
     clipvalue:       g <- min(max(g, -clipvalue), clipvalue)
   Only trainable layers' gradients count, as only their weights are Keras'
   trainable variables. A non-finite norm leaves the gradients as they are
   (TerminateOnNaN sees the loss). */
static void cnn__clip_gradients(cnn_model *m) {
    const cnn_optimizer *o = &m->opt;
    if (o->global_clipnorm > 0) {
        double sum = 0;
        for (int i = 0; i < m->n_nodes; i++) {
            const cnn_node *n = m->nodes[i];
            if (n->trainable && n->p_count) sum += cnn__sum_squares(m->grads + n->p_off, (long long)n->p_count);
        }
        const double norm = sqrt(sum);
        if (!(norm > o->global_clipnorm) || !isfinite(norm)) return;
        const float scale = (float)(o->global_clipnorm / norm);
        for (int i = 0; i < m->n_nodes; i++) {
            const cnn_node *n = m->nodes[i];
            if (n->trainable && n->p_count) cnn__scale_floats(m->grads + n->p_off, (long long)n->p_count, scale);
        }
        return;
    }
    for (int i = 0; i < m->n_nodes; i++) {
        const cnn_node *n = m->nodes[i];
        if (!n->trainable || !n->p_count) continue;
        if (o->clipvalue > 0) {
            float *g = m->grads + n->p_off;
            const float v = o->clipvalue;
            const long long count = (long long)n->p_count;
CNN__PARALLEL_FOR(count)
            for (long long k = 0; k < count; k++) g[k] = g[k] > v ? v : g[k] < -v ? -v : g[k];
        }
        cnn__tensor_ref ref;
        for (int t = 0; o->clipnorm > 0 && cnn__layers[n->type]->tensor && cnn__layers[n->type]->tensor(n, t, &ref);
             t++) {
            if (ref.state) continue;
            float *g = m->grads + n->p_off + ref.offset;
            const double norm = sqrt(cnn__sum_squares(g, (long long)ref.count));
            if (norm > o->clipnorm && isfinite(norm))
                cnn__scale_floats(g, (long long)ref.count, (float)(o->clipnorm / norm));
        }
    }
}

static void cnn__optimizer_step(cnn_model *m) {
    const cnn_optimizer *o = &m->opt;
    const float lr = o->learning_rate;
    m->step++;
    if (o->clipnorm > 0 || o->clipvalue > 0 || o->global_clipnorm > 0) cnn__clip_gradients(m);
    /* Adam (Keras): lr_t = lr*sqrt(1-b2^t)/(1-b1^t); m = b1 m + (1-b1) g;
       v = b2 v + (1-b2) g^2; p -= lr_t * m / (sqrt(v) + eps) */
    const float b1 = o->beta_1, b2 = o->beta_2, eps = o->epsilon;
    const float lr_t = (float)(lr * sqrt(1.0 - pow(b2, (double)m->step)) / (1.0 - pow(b1, (double)m->step)));
    for (int i = 0; i < m->n_nodes; i++) {
        const cnn_node *n = m->nodes[i];
        if (!n->trainable || !n->p_count) continue;
        float *CNN__RESTRICT p = m->params + n->p_off, *CNN__RESTRICT g = m->grads + n->p_off;
        float *CNN__RESTRICT s1 = m->slot1 + n->p_off, *CNN__RESTRICT s2 = m->slot2 + n->p_off;
        const long long count = (long long)n->p_count;
        switch (o->type) {
        case CNN_ADAM:
            cnn__kern()->adam_update(p, g, s1, s2, count, b1, b2, lr_t, eps);
            break;
        case CNN_SGD: /* Keras: v = momentum*v - lr*g; p += v (nesterov: p += momentum*v - lr*g) */
CNN__PARALLEL_FOR(count)
            for (long long k = 0; k < count; k++) {
                if (o->momentum == 0.0f) { p[k] -= lr * g[k]; continue; }
                s1[k] = o->momentum * s1[k] - lr * g[k];
                p[k] += o->nesterov ? o->momentum * s1[k] - lr * g[k] : s1[k];
            }
            break;
        case CNN_RMSPROP: /* v = rho v + (1-rho) g^2; step = lr g / (sqrt(v) + eps), with momentum optional */
CNN__PARALLEL_FOR(count)
            for (long long k = 0; k < count; k++) {
                s2[k] = o->rho * s2[k] + (1 - o->rho) * g[k] * g[k];
                float stepk = lr * g[k] / (sqrtf(s2[k]) + eps);
                if (o->momentum != 0.0f) { s1[k] = o->momentum * s1[k] + stepk; stepk = s1[k]; }
                p[k] -= stepk;
            }
            break;
        }
    }
}

CNN_IMPL int cnn_compile_opt(cnn_model *m, const cnn_compile_opts *o) {
    int rc = cnn__check_built(m, "cnn_compile");
    if (rc) return rc;
    if (!o) return cnn_set_error(CNN_ERR_ARG, "cnn_compile: options are NULL");
    if (o->loss < CNN_CATEGORICAL_CROSSENTROPY || o->loss > CNN_MSE)
        return cnn_set_error(CNN_ERR_ARG, "cnn_compile: unknown or missing loss (%d)", (int)o->loss);
    if (o->metrics & ~CNN_ACCURACY)
        return cnn_set_error(CNN_ERR_ARG, "cnn_compile: unknown metrics bits 0x%x", (unsigned)o->metrics);
    cnn_optimizer opt = o->optimizer;
    if (opt.type < CNN_ADAM || opt.type > CNN_RMSPROP)
        return cnn_set_error(CNN_ERR_ARG, "cnn_compile: unknown optimizer type %d", (int)opt.type);
    if (opt.learning_rate == 0.0f) opt.learning_rate = opt.type == CNN_SGD ? 0.01f : 0.001f;
    if (opt.beta_1 == 0.0f) opt.beta_1 = 0.9f;
    if (opt.beta_2 == 0.0f) opt.beta_2 = 0.999f;
    if (opt.epsilon == 0.0f) opt.epsilon = 1e-7f;
    if (opt.rho == 0.0f) opt.rho = 0.9f;
    if (!(opt.learning_rate > 0) || !isfinite(opt.learning_rate))
        return cnn_set_error(CNN_ERR_ARG, "cnn_compile: learning_rate must be > 0");
    if (!(opt.beta_1 > 0 && opt.beta_1 < 1 && opt.beta_2 > 0 && opt.beta_2 < 1))
        return cnn_set_error(CNN_ERR_ARG, "cnn_compile: Adam betas must be in (0, 1)");
    if (!(opt.epsilon > 0)) return cnn_set_error(CNN_ERR_ARG, "cnn_compile: epsilon must be > 0");
    if (!(opt.momentum >= 0 && opt.momentum < 1))
        return cnn_set_error(CNN_ERR_ARG, "cnn_compile: momentum must be in [0, 1)");
    if (!(opt.rho > 0 && opt.rho < 1))
        return cnn_set_error(CNN_ERR_ARG, "cnn_compile: rho must be in (0, 1)");
    const float clips[3] = {opt.clipnorm, opt.clipvalue, opt.global_clipnorm};
    const char *const clip_names[3] = {"clipnorm", "clipvalue", "global_clipnorm"};
    for (int i = 0; i < 3; i++)
        if (!(clips[i] >= 0) || !isfinite(clips[i]))
            return cnn_set_error(CNN_ERR_ARG, "cnn_compile: %s %g must be finite and >= 0 (0 = no clipping)",
                                 clip_names[i], clips[i]);
    if ((clips[0] > 0) + (clips[1] > 0) + (clips[2] > 0) > 1)
        return cnn_set_error(CNN_ERR_ARG,
                             "cnn_compile: give only one of clipnorm (%g), clipvalue (%g) and global_clipnorm (%g) "
                             "(Keras refuses clipnorm with global_clipnorm, and ignores clipvalue beside either)",
                             clips[0], clips[1], clips[2]);
    if (!m->slot1) {
        float *s1 = (float *)cnn__alloc(m->n_params, sizeof(float), "optimizer slots");
        float *s2 = s1 ? (float *)cnn__alloc(m->n_params, sizeof(float), "optimizer slots") : NULL;
        if (!s2) { CNN_FREE(s1); return CNN_ERR_MEMORY; }
        m->slot1 = s1; m->slot2 = s2;
    } else { /* a new optimizer starts fresh, as in Keras */
        memset(m->slot1, 0, m->n_params * sizeof(float));
        memset(m->slot2, 0, m->n_params * sizeof(float));
    }
    m->step = 0;
    m->opt = opt;
    m->loss = o->loss;
    m->metrics = o->metrics;
    m->compiled = 1;
    return CNN_OK;
}

CNN_IMPL float cnn_get_learning_rate(const cnn_model *m) {
    return m && m->compiled ? m->opt.learning_rate : 0.0f;
}

CNN_IMPL int cnn_set_learning_rate(cnn_model *m, float lr) {
    int rc = cnn__check_compiled(m, "cnn_set_learning_rate");
    if (rc) return rc;
    if (!(lr > 0) || !isfinite(lr))
        return cnn_set_error(CNN_ERR_ARG, "cnn_set_learning_rate: %g is not a positive learning rate", lr);
    m->opt.learning_rate = lr;
    return CNN_OK;
}

/* ======================================================================== */
/* Train on a batch, predict, evaluate                                      */
/* ======================================================================== */

static int cnn__check_batch(const cnn_model *m, const void *x, int n, const char *fn) {
    if (!x) return cnn_set_error(CNN_ERR_ARG, "%s: the inputs are NULL", fn);
    if (n <= 0) return cnn_set_error(CNN_ERR_ARG, "%s: the number of samples must be > 0 (got %d)", fn, n);
    (void)m;
    return CNN_OK;
}

/* a compiled model, n > 0 inputs and valid targets */
static int cnn__check_xy(const cnn_model *m, const float *x, const float *y, int n, int y_width,
                         const char *fn) {
    int rc = cnn__check_compiled(m, fn);
    if (!rc) rc = cnn__check_batch(m, x, n, fn);
    if (!rc) rc = cnn__check_targets(m, y, n, y_width, fn);
    return rc;
}

/* one optimizer step; class_weight may be NULL */
static int cnn__train_step(cnn_model *m, const float *x, const float *y, int B, int y_width,
                           const float *class_weight, double *loss, double *acc) {
    /* Dropout masks are keyed by the step (saved with the model, so training
       resumes identically after a load) and the sample's place in the batch. */
    m->dropout_step = (uint64_t)m->step;
    m->update_moving = 1;
    cnn__tune_begin(&m->tuner);
    int rc = cnn__compute_gradients(m, x, y, B, y_width, class_weight, loss, acc);
    m->update_moving = 0;
    if (!rc) cnn__optimizer_step(m);
    cnn__tune_end(&m->tuner, B);
    return rc;
}

CNN_IMPL int cnn_train_on_batch(cnn_model *m, const float *x, const float *y, int n, int y_width, float *loss,
                                float *accuracy) {
    int rc = cnn__check_xy(m, x, y, n, y_width, "cnn_train_on_batch");
    if (rc) return rc;
    double l, a;
    rc = cnn__train_step(m, x, y, n, y_width, NULL, &l, &a);
    if (rc) return rc;
    if (loss) *loss = (float)l;
    if (accuracy) *accuracy = (float)a;
    return CNN_OK;
}

/* inference in chunks of batch_size; out [n][U] */
CNN_IMPL int cnn_predict(cnn_model *m, const float *x, int n, int batch_size, float *out) {
    int rc = cnn__check_built(m, "cnn_predict");
    if (!rc) rc = cnn__check_batch(m, x, n, "cnn_predict");
    if (rc) return rc;
    if (!out) return cnn_set_error(CNN_ERR_ARG, "cnn_predict: the output buffer is NULL");
    if (batch_size < 0)
        return cnn_set_error(CNN_ERR_ARG, "cnn_predict: batch_size %d is negative", batch_size);
    if (batch_size == 0) batch_size = 32;
    const cnn_node *in = m->nodes[m->input];
    const size_t per_in = cnn__node_size(in), U = (size_t)cnn_model_output_size(m);
    int B = batch_size < n ? batch_size : n;
    if ((rc = cnn__ensure_batch(m, B))) return rc;
    m->training = 0;
    for (int s = 0; s < n; s += B) {
        int b = n - s < B ? n - s : B;
        if ((rc = cnn__run_forward(m, x + (size_t)s * per_in, b))) return rc;
        memcpy(out + (size_t)s * U, cnn__output(m), (size_t)b * U * sizeof(float));
    }
    return CNN_OK;
}

CNN_IMPL int cnn_preprocess(const cnn_model *m, const unsigned char *images, int n, float *x) {
    int rc = cnn__check_built(m, "cnn_preprocess");
    if (!rc) rc = cnn__check_batch(m, images, n, "cnn_preprocess");
    if (rc) return rc;
    if (!x) return cnn_set_error(CNN_ERR_ARG, "cnn_preprocess: the output buffer is NULL");
    const cnn_node *in = m->nodes[m->input];
    const size_t count = (size_t)n * cnn__node_size(in);
    const int C = in->c;
    for (size_t i = 0; i < count; i++) {
        float v = images[i] * m->rescale;
        if (m->mean) v = (v - m->mean[i % C]) / m->std[i % C];
        x[i] = v;
    }
    return CNN_OK;
}

CNN_IMPL int cnn_predict_images(cnn_model *m, const unsigned char *images, int n, int batch_size,
                                float *out) {
    int rc = cnn__check_built(m, "cnn_predict_images");
    if (!rc) rc = cnn__check_batch(m, images, n, "cnn_predict_images");
    if (rc) return rc;
    if (!out) return cnn_set_error(CNN_ERR_ARG, "cnn_predict_images: the output buffer is NULL");
    if (batch_size < 0)
        return cnn_set_error(CNN_ERR_ARG, "cnn_predict_images: batch_size %d is negative", batch_size);
    if (batch_size == 0) batch_size = 32;
    const size_t per_in = cnn__node_size(m->nodes[m->input]), U = (size_t)cnn_model_output_size(m);
    int B = batch_size < n ? batch_size : n;
    float *x = (float *)cnn__alloc((size_t)B * per_in, sizeof(float), "an input batch");
    if (!x) return CNN_ERR_MEMORY;
    for (int s = 0; s < n && !rc; s += B) {
        int b = n - s < B ? n - s : B;
        rc = cnn_preprocess(m, images + (size_t)s * per_in, b, x);
        if (!rc) rc = cnn_predict(m, x, b, b, out + (size_t)s * U);
    }
    CNN_FREE(x);
    return rc;
}

/* ---- the dataset as a batch source (used by fit and evaluate) ----------- */

typedef struct cnn__array_source {
    const cnn_dataset *d;
    const cnn_model *m;
    int *order;      /* [n] sample order of the current pass */
    int pos, shuffle;
    uint64_t seed;
} cnn__array_source;

static int cnn__array_reset(void *ctx, int epoch) {
    cnn__array_source *s = (cnn__array_source *)ctx;
    cnn__pass_order(s->order, s->d->n, s->shuffle,
                    s->seed ^ (0x45504f4348ULL + (uint64_t)epoch * 0x9e3779b97f4a7c15ULL));
    s->pos = 0;
    return CNN_OK;
}

static int cnn__array_next(void *ctx, int max_count, float *x, float *y) {
    cnn__array_source *s = (cnn__array_source *)ctx;
    const cnn_dataset *d = s->d;
    const size_t per = (size_t)d->h * d->w * d->c;
    int count = d->n - s->pos < max_count ? d->n - s->pos : max_count;
    for (int i = 0; i < count; i++) {
        int k = s->order[s->pos + i];
        cnn_preprocess(s->m, d->images + (size_t)k * per, 1, x + (size_t)i * per);
        y[i] = (float)d->labels[k];
    }
    s->pos += count;
    return count;
}

static int cnn__check_dataset_fits(const cnn_model *m, const cnn_dataset *d, const char *fn) {
    int rc = cnn__check_dataset(d, fn);
    if (rc) return rc;
    const cnn_node *in = m->nodes[m->input];
    if (d->h != in->h || d->w != in->w || d->c != in->c)
        return cnn_set_error(CNN_ERR_SHAPE, "%s: images are %dx%dx%d but input '%s' expects %dx%dx%d", fn,
                             d->h, d->w, d->c, in->name, in->h, in->w, in->c);
    const int U = cnn_model_output_size(m);
    for (int i = 0; i < d->n; i++) {
        int limit = (m->loss == CNN_BINARY_CROSSENTROPY && U == 1) ? 2 : U;
        if (d->labels[i] < 0 || d->labels[i] >= limit)
            return cnn_set_error(CNN_ERR_ARG,
                                 "%s: label %d of image %d is out of range for output '%s' with %d units", fn,
                                 d->labels[i], i, m->nodes[m->output]->name, U);
    }
    return CNN_OK;
}

/* set up src to stream d (NULL order on failure) */
static int cnn__array_source_init(cnn_batch_source *src, cnn__array_source *s, const cnn_model *m,
                                  const cnn_dataset *d, int shuffle, uint64_t seed) {
    memset(src, 0, sizeof *src);
    memset(s, 0, sizeof *s);
    s->d = d; s->m = m; s->shuffle = shuffle; s->seed = seed;
    s->order = (int *)cnn__alloc((size_t)d->n, sizeof(int), "a sample order");
    if (!s->order) return CNN_ERR_MEMORY;
    src->ctx = s;
    src->samples = d->n;
    src->h = d->h; src->w = d->w; src->c = d->c;
    src->y_width = 1;
    src->reset = cnn__array_reset;
    src->next = cnn__array_next;
    return CNN_OK;
}

static int cnn__check_source(const cnn_model *m, const cnn_batch_source *src, const char *fn) {
    if (!src) return cnn_set_error(CNN_ERR_ARG, "%s: the batch source is NULL", fn);
    if (!src->next || !src->reset)
        return cnn_set_error(CNN_ERR_ARG, "%s: the batch source has no next/reset functions", fn);
    const cnn_node *in = m->nodes[m->input];
    if (src->h != in->h || src->w != in->w || src->c != in->c)
        return cnn_set_error(CNN_ERR_SHAPE,
                             "%s: the batch source gives %dx%dx%d images but input '%s' expects %dx%dx%d", fn,
                             src->h, src->w, src->c, in->name, in->h, in->w, in->c);
    int U = cnn_model_output_size(m);
    if (src->y_width != 1 && src->y_width != U)
        return cnn_set_error(CNN_ERR_SHAPE,
                             "%s: the batch source gives targets of width %d; output '%s' has %d units", fn,
                             src->y_width, m->nodes[m->output]->name, U);
    return CNN_OK;
}

/* Loss/accuracy over `steps` batches of a source (0 = one pass), inference mode. */
static int cnn__evaluate_source(cnn_model *m, cnn_batch_source *src, int batch_size, int steps,
                                cnn_eval_result *r) {
    const size_t per_in = cnn__node_size(m->nodes[m->input]);
    float *x = (float *)cnn__alloc((size_t)batch_size * per_in, sizeof(float), "an evaluation batch");
    float *y = (float *)cnn__alloc((size_t)batch_size * src->y_width, sizeof(float), "evaluation targets");
    int rc = (x && y) ? cnn__ensure_batch(m, batch_size) : CNN_ERR_MEMORY;
    double loss_sum = 0, acc_sum = 0;
    long long seen = 0;
    if (!rc) rc = src->reset(src->ctx, 0);
    for (int step = 0; !rc && (steps <= 0 || step < steps); step++) {
        int got = src->next(src->ctx, batch_size, x, y);
        if (got < 0) { rc = got; break; }
        if (got == 0) break;
        if (got > batch_size) {
            rc = cnn_set_error(CNN_ERR_ARG, "batch source returned %d samples for a batch of %d", got,
                               batch_size);
            break;
        }
        if ((rc = cnn__check_targets(m, y, got, src->y_width, "evaluate"))) break;
        double l, a;
        int fused;
        m->training = 0;
        if ((rc = cnn__run_forward(m, x, got))) break;
        cnn__loss(m, y, got, src->y_width, NULL, 0, &l, &a, &fused);
        loss_sum += l * got;
        acc_sum += a * got;
        seen += got;
    }
    CNN_FREE(x);
    CNN_FREE(y);
    if (rc) return rc;
    if (!seen) return cnn_set_error(CNN_ERR_ARG, "evaluate: the batch source gave no samples");
    r->loss = loss_sum / seen + cnn__regularize(m, 0);
    r->accuracy = acc_sum / seen;
    return CNN_OK;
}

CNN_IMPL int cnn_evaluate_source(cnn_model *m, cnn_batch_source *src, int batch_size, int steps,
                                 cnn_eval_result *r) {
    int rc = cnn__check_compiled(m, "cnn_evaluate_source");
    if (!rc) rc = cnn__check_source(m, src, "cnn_evaluate_source");
    if (rc) return rc;
    if (!r) return cnn_set_error(CNN_ERR_ARG, "cnn_evaluate_source: the result pointer is NULL");
    if (batch_size < 0)
        return cnn_set_error(CNN_ERR_ARG, "cnn_evaluate_source: batch_size %d is negative", batch_size);
    return cnn__evaluate_source(m, src, batch_size ? batch_size : 32, steps, r);
}

CNN_IMPL int cnn_evaluate(cnn_model *m, const cnn_dataset *d, int batch_size, cnn_eval_result *r) {
    int rc = cnn__check_compiled(m, "cnn_evaluate");
    if (!rc) rc = cnn__check_dataset_fits(m, d, "cnn_evaluate");
    if (rc) return rc;
    if (!r) return cnn_set_error(CNN_ERR_ARG, "cnn_evaluate: the result pointer is NULL");
    if (batch_size < 0)
        return cnn_set_error(CNN_ERR_ARG, "cnn_evaluate: batch_size %d is negative", batch_size);
    cnn_batch_source src;
    cnn__array_source s;
    if ((rc = cnn__array_source_init(&src, &s, m, d, 0, 0))) return rc;
    rc = cnn__evaluate_source(m, &src, batch_size ? batch_size : 32, 0, r);
    CNN_FREE(s.order);
    return rc;
}

/* ======================================================================== */
/* Queries, weights by name, preprocessing, class names, summary            */
/* ======================================================================== */

CNN_IMPL int cnn_model_input_shape(const cnn_model *m, int *h, int *w, int *c) {
    if (!m || m->input < 0)
        return cnn_set_error(CNN_ERR_ARG, "cnn_model_input_shape: %s",
                             m ? "the model has no input" : "the model is NULL");
    const cnn_node *in = m->nodes[m->input];
    if (h) *h = in->h;
    if (w) *w = in->w;
    if (c) *c = in->c;
    return CNN_OK;
}

CNN_IMPL int cnn_model_output_size(const cnn_model *m) {
    if (!m) return cnn_set_error(CNN_ERR_ARG, "cnn_model_output_size: the model is NULL");
    if (m->output < 0) return cnn_set_error(CNN_ERR_STATE, "cnn_model_output_size: the model has no output");
    return (int)cnn__node_size(m->nodes[m->output]);
}

CNN_IMPL size_t cnn_model_param_count(const cnn_model *m) { return m ? m->n_params + m->n_state : 0; }

CNN_IMPL int cnn_node_shape(const cnn_node *x, int *h, int *w, int *c) {
    if (!x) return cnn_set_error(CNN_ERR_ARG, "cnn_node_shape: the layer is NULL");
    if (h) *h = x->h;
    if (w) *w = x->w;
    if (c) *c = x->c;
    return CNN_OK;
}

CNN_IMPL const char *cnn_node_name(const cnn_node *x) { return x ? x->name : NULL; }

/* a pointer to tensor `which` of layer `layer` and its size; NULL + error if none */
static float *cnn__tensor(const cnn_model *m, const char *layer, const char *which, size_t *count,
                          const char *fn) {
    if (!m || !layer || !which) {
        cnn_set_error(CNN_ERR_ARG, "%s: NULL %s", fn, !m ? "model" : !layer ? "layer name" : "tensor name");
        return NULL;
    }
    if (!m->built) {
        cnn_set_error(CNN_ERR_STATE, "%s: the model has no output yet (call cnn_model_set_output)", fn);
        return NULL;
    }
    cnn_node *n = cnn__find(m, layer);
    if (!n) { cnn_set_error(CNN_ERR_ARG, "%s: no layer named '%s'", fn, layer); return NULL; }
    cnn__tensor_ref ref;
    for (int t = 0; cnn__layers[n->type]->tensor && cnn__layers[n->type]->tensor(n, t, &ref); t++)
        if (!strcmp(which, ref.name)) {
            *count = ref.count;
            return (ref.state ? m->state + n->s_off : m->params + n->p_off) + ref.offset;
        }
    cnn_set_error(CNN_ERR_ARG, "%s: layer '%s' (%s) has no tensor '%s'", fn, layer, cnn__type_names[n->type],
                  which);
    return NULL;
}

CNN_IMPL float *cnn_layer_weights(cnn_model *m, const char *layer, const char *which, size_t *count) {
    size_t n = 0;
    float *p = cnn__tensor(m, layer, which, &n, "cnn_layer_weights");
    if (count) *count = p ? n : 0;
    return p;
}

CNN_IMPL int cnn_get_weights(const cnn_model *m, const char *layer, const char *which, float *out,
                             size_t count) {
    size_t n = 0;
    const float *p = cnn__tensor(m, layer, which, &n, "cnn_get_weights");
    if (!p) return CNN_ERR_ARG;
    if (!out) return cnn_set_error(CNN_ERR_ARG, "cnn_get_weights: the output buffer is NULL");
    if (count != n)
        return cnn_set_error(CNN_ERR_SHAPE, "cnn_get_weights: '%s' of layer '%s' has %zu values, not %zu",
                             which, layer, n, count);
    memcpy(out, p, n * sizeof(float));
    return CNN_OK;
}

CNN_IMPL int cnn_set_weights(cnn_model *m, const char *layer, const char *which, const float *in,
                             size_t count) {
    size_t n = 0;
    float *p = cnn__tensor(m, layer, which, &n, "cnn_set_weights");
    if (!p) return CNN_ERR_ARG;
    if (!in) return cnn_set_error(CNN_ERR_ARG, "cnn_set_weights: the input buffer is NULL");
    if (count != n)
        return cnn_set_error(CNN_ERR_SHAPE, "cnn_set_weights: '%s' of layer '%s' has %zu values, not %zu",
                             which, layer, n, count);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(in[i]))
            return cnn_set_error(CNN_ERR_ARG,
                                 "cnn_set_weights: value %zu for '%s' of layer '%s' is not finite", i, which,
                                 layer);
    if (!strcmp(which, "moving_variance"))
        for (size_t i = 0; i < n; i++)
            if (in[i] < 0)
                return cnn_set_error(CNN_ERR_ARG,
                                     "cnn_set_weights: moving_variance of layer '%s' must be >= 0", layer);
    memcpy(p, in, n * sizeof(float));
    return CNN_OK;
}

CNN_IMPL int cnn_set_trainable(cnn_model *m, const char *layer, int trainable) {
    if (!m || !layer)
        return cnn_set_error(CNN_ERR_ARG, "cnn_set_trainable: NULL %s", m ? "layer name" : "model");
    cnn_node *n = cnn__find(m, layer);
    if (!n) return cnn_set_error(CNN_ERR_ARG, "cnn_set_trainable: no layer named '%s'", layer);
    n->trainable = trainable != 0;
    return CNN_OK;
}

CNN_IMPL float *cnn_model_params(cnn_model *m, size_t *count) {
    if (count) *count = m && m->built ? m->n_params : 0;
    if (cnn__check_built(m, "cnn_model_params")) return NULL;
    return m->params;
}

CNN_IMPL float *cnn_model_grads(cnn_model *m, size_t *count) {
    if (count) *count = m && m->built ? m->n_params : 0;
    if (cnn__check_built(m, "cnn_model_grads")) return NULL;
    return m->grads;
}

CNN_IMPL int cnn_model_set_rescale(cnn_model *m, float rescale) {
    if (!m) return cnn_set_error(CNN_ERR_ARG, "cnn_model_set_rescale: the model is NULL");
    if (!(rescale != 0.0f) || !isfinite(rescale))
        return cnn_set_error(CNN_ERR_ARG, "cnn_model_set_rescale: rescale %g must be finite and non-zero",
                             rescale);
    m->rescale = rescale;
    return CNN_OK;
}

CNN_IMPL float cnn_model_rescale(const cnn_model *m) { return m ? m->rescale : 0.0f; }

CNN_IMPL int cnn_model_set_featurewise(cnn_model *m, const float *mean, const float *std, int c) {
    if (!m) return cnn_set_error(CNN_ERR_ARG, "cnn_model_set_featurewise: the model is NULL");
    if (!mean && !std) {
        CNN_FREE(m->mean);
        CNN_FREE(m->std);
        m->mean = m->std = NULL;
        m->stats_c = 0;
        return CNN_OK;
    }
    if (!mean || !std)
        return cnn_set_error(CNN_ERR_ARG, "cnn_model_set_featurewise: give both mean and std, or neither");
    if (m->input < 0 || c != m->nodes[m->input]->c)
        return cnn_set_error(CNN_ERR_SHAPE, "cnn_model_set_featurewise: %d channels, but the input has %d", c,
                             m->input < 0 ? 0 : m->nodes[m->input]->c);
    for (int i = 0; i < c; i++)
        if (!isfinite(mean[i]) || !(std[i] > 0) || !isfinite(std[i]))
            return cnn_set_error(
                CNN_ERR_ARG, "cnn_model_set_featurewise: channel %d needs a finite mean and a std > 0", i);
    float *nm = (float *)cnn__alloc((size_t)c, sizeof(float), "featurewise mean");
    float *ns = (float *)cnn__alloc((size_t)c, sizeof(float), "featurewise std");
    if (!nm || !ns) { CNN_FREE(nm); CNN_FREE(ns); return CNN_ERR_MEMORY; }
    memcpy(nm, mean, (size_t)c * sizeof(float));
    memcpy(ns, std, (size_t)c * sizeof(float));
    CNN_FREE(m->mean); CNN_FREE(m->std);
    m->mean = nm; m->std = ns; m->stats_c = c;
    return CNN_OK;
}

CNN_IMPL int cnn_model_set_class_names(cnn_model *m, const char *const *names, int count) {
    if (!m || !names)
        return cnn_set_error(CNN_ERR_ARG, "cnn_model_set_class_names: NULL %s", m ? "names" : "model");
    if (count <= 0)
        return cnn_set_error(CNN_ERR_ARG, "cnn_model_set_class_names: count %d must be > 0", count);
    for (int i = 0; i < count; i++)
        if (!names[i])
            return cnn_set_error(CNN_ERR_ARG, "cnn_model_set_class_names: class name %d is NULL", i);
    char **copy = cnn__copy_names(names, count);
    if (!copy) return CNN_ERR_MEMORY;
    cnn__free_names(m->class_names, m->n_class_names);
    m->class_names = copy;
    m->n_class_names = count;
    return CNN_OK;
}

CNN_IMPL const char *cnn_model_class_name(const cnn_model *m, int k) {
    return m && k >= 0 && k < m->n_class_names ? m->class_names[k] : NULL;
}

CNN_IMPL int cnn_model_num_class_names(const cnn_model *m) { return m ? m->n_class_names : 0; }

CNN_IMPL int cnn_summary(const cnn_model *m, FILE *out) {
    int rc = cnn__check_built(m, "cnn_summary");
    if (rc) return rc;
    if (!out) return cnn_set_error(CNN_ERR_ARG, "cnn_summary: the output stream is NULL");
    const char *rule = "_______________________________________________________________________";
    const char *dbl = "=======================================================================";
    size_t trainable = 0, frozen = 0;
    fprintf(out, "Model: \"model\"\n%s\n", rule);
    fprintf(out, " %-34s %-22s %-10s\n%s\n", "Layer (type)", "Output Shape", "Param #", dbl);
    for (int i = 0; i < m->n_nodes; i++) {
        const cnn_node *n = m->nodes[i];
        char label[128], shape[64];
        snprintf(label, sizeof label, "%s (%s)", n->name, cnn__type_names[n->type]);
        if (cnn__is_flat(n)) snprintf(shape, sizeof shape, "(None, %d)", n->c);
        else snprintf(shape, sizeof shape, "(None, %d, %d, %d)", n->h, n->w, n->c);
        size_t params = n->p_count + n->s_count;
        fprintf(out, " %-34s %-22s %-10zu\n", label, shape, params);
        if (n->n_inputs > 1)
            for (int k = 0; k < n->n_inputs; k++) fprintf(out, " %-34s <- %s\n", "", cnn__in(n, k)->name);
        fprintf(out, "%s\n", i + 1 < m->n_nodes ? "" : dbl);
        if (n->trainable) trainable += n->p_count; else frozen += n->p_count;
        frozen += n->s_count;
    }
    fprintf(out, "Total params: %zu\nTrainable params: %zu\nNon-trainable params: %zu\n", trainable + frozen,
            trainable, frozen);
    fprintf(out, "CPU kernels: %s\n%s\n", m->reference ? "reference" : cnn_kernels(), rule);
    return CNN_OK;
}

/* ======================================================================== */
/* History                                                                  */
/* ======================================================================== */

CNN_IMPL const double *cnn_history_get(const cnn_history *h, const char *key) {
    if (!h || !key) return NULL;
    for (int k = 0; k < h->n_keys; k++)
        if (!strcmp(h->keys[k], key)) return h->values[k];
    return NULL;
}

CNN_IMPL void cnn_history_free(cnn_history *h) {
    if (!h) return;
    for (int k = 0; k < h->n_keys; k++) CNN_FREE(h->values[k]);
    CNN_FREE(h);
}

/* record `value` for `key` at epoch index h->epochs (the epoch being finished) */
static int cnn__history_put(cnn_history *h, const char *key, double value) {
    int k = 0;
    while (k < h->n_keys && strcmp(h->keys[k], key)) k++;
    if (k == h->n_keys) {
        if (k == CNN_HISTORY_MAX_KEYS)
            return cnn_set_error(CNN_ERR_ARG, "history: too many keys (adding '%s')", key);
        snprintf(h->keys[k], sizeof h->keys[k], "%s", key);
        h->values[k] = (double *)cnn__alloc((size_t)(h->capacity > 0 ? h->capacity : 1), sizeof(double),
                                            "history");
        if (!h->values[k]) return CNN_ERR_MEMORY;
        for (int e = 0; e < h->capacity; e++) h->values[k][e] = NAN;
        h->n_keys++;
    }
    if (h->epochs >= h->capacity) {
        int cap = h->capacity ? h->capacity * 2 : 16;
        for (int j = 0; j < h->n_keys; j++) {
            double *v = (double *)CNN_REALLOC(h->values[j], (size_t)cap * sizeof(double));
            if (!v) return cnn_set_error(CNN_ERR_MEMORY, "out of memory growing the history");
            for (int e = h->capacity; e < cap; e++) v[e] = NAN;
            h->values[j] = v;
        }
        h->capacity = cap;
    }
    h->values[k][h->epochs] = value;
    return CNN_OK;
}

/* ======================================================================== */
/* Callbacks                                                                */
/* ======================================================================== */

enum {
    CNN__CB_CHECKPOINT,
    CNN__CB_EARLY_STOP,
    CNN__CB_REDUCE_LR,
    CNN__CB_CSV,
    CNN__CB_SCHEDULER,
    CNN__CB_NAN,
    CNN__CB_LAMBDA,
    CNN__CB_BACKUP,
    CNN__CB_TENSORBOARD
};

/* TensorBoard's state (see cnn_tensorboard_opt; its code follows the other
   callbacks' below). A protobuf message being built, grown as needed: */
typedef struct cnn__pb {
    unsigned char *p;
    size_t len, cap;
    int failed;                   /* out of memory: the message is incomplete */
} cnn__pb;

typedef struct cnn__tensorboard {
    char *log_dir;
    int histogram_freq, update_freq;
    FILE *f[2];                   /* the run's event files: 0 train, 1 validation (opened when first written) */
    char *path[2];                /* their paths */
    double *limits, *counts;      /* TensorFlow's default bucket limits [n_limits]; counts [3 n_limits] */
    int n_limits;
    cnn__pb histo, value, msg, rec; /* a HistogramProto, the Summary.Value, the Event, the record */
} cnn__tensorboard;

static void cnn__tb_close(cnn__tensorboard *tb) {
    for (int i = 0; i < 2; i++) {
        if (tb->f[i]) fclose(tb->f[i]);
        CNN_FREE(tb->path[i]);
        tb->f[i] = NULL, tb->path[i] = NULL;
    }
}

static void cnn__tb_free(cnn__tensorboard *tb) {
    if (!tb) return;
    cnn__tb_close(tb);
    CNN_FREE(tb->log_dir);
    CNN_FREE(tb->limits);
    CNN_FREE(tb->counts);
    CNN_FREE(tb->histo.p);
    CNN_FREE(tb->value.p);
    CNN_FREE(tb->msg.p);
    CNN_FREE(tb->rec.p);
    CNN_FREE(tb);
}

struct cnn_callback {
    int kind;
    char monitor[24];
    int mode_max;                 /* 1: larger is better */
    float min_delta;
    int patience, cooldown, verbose;
    double best;
    int wait, cooldown_left, best_epoch;
    /* checkpoint (filepath), backup (filepath: the backup file, filename: its folder) */
    char *filepath;
    int save_best_only;
    int keep_backup;
    /* early stopping */
    int restore_best;
    float *best_params, *best_state;
    /* reduce lr */
    float factor, min_lr;
    /* csv */
    char *filename;
    char separator;
    int append;
    FILE *csv;
    int csv_header_done;
    cnn_lr_scheduler_opts sched;
    cnn_lambda_opts lambda;
    cnn__tensorboard *tb;
};

static cnn_callback *cnn__callback_new(int kind, const char *monitor, cnn_monitor_mode mode) {
    cnn_callback *cb = (cnn_callback *)cnn__alloc(1, sizeof *cb, "a callback");
    if (!cb) return NULL;
    cb->kind = kind;
    if (!monitor) monitor = "val_loss";
    if (strlen(monitor) >= sizeof cb->monitor) {
        cnn_set_error(CNN_ERR_ARG, "callback: monitor name '%s' is too long", monitor);
        CNN_FREE(cb);
        return NULL;
    }
    strcpy(cb->monitor, monitor);
    if (mode < CNN_MODE_AUTO || mode > CNN_MODE_MAX) {
        cnn_set_error(CNN_ERR_ARG, "callback: unknown mode %d", (int)mode);
        CNN_FREE(cb);
        return NULL;
    }
    /* Keras' auto mode: metrics with "acc" in their name are maximised */
    cb->mode_max = mode == CNN_MODE_MAX || (mode == CNN_MODE_AUTO && strstr(monitor, "acc") != NULL);
    cb->best = cb->mode_max ? -INFINITY : INFINITY;
    cb->best_epoch = -1;
    return cb;
}

CNN_IMPL cnn_callback *cnn_model_checkpoint_opt(const cnn_checkpoint_opts *o) {
    if (!o || !o->filepath || !o->filepath[0]) {
        cnn_set_error(CNN_ERR_ARG, "ModelCheckpoint: filepath is missing");
        return NULL;
    }
    cnn_callback *cb = cnn__callback_new(CNN__CB_CHECKPOINT, o->monitor, o->mode);
    if (!cb) return NULL;
    cb->filepath = cnn__strdup(o->filepath);
    if (!cb->filepath) { CNN_FREE(cb); cnn_set_error(CNN_ERR_MEMORY, "out of memory"); return NULL; }
    cb->save_best_only = o->save_best_only;
    cb->verbose = o->verbose;
    return cb;
}

CNN_IMPL cnn_callback *cnn_early_stopping_opt(const cnn_early_stopping_opts *o) {
    cnn_early_stopping_opts d;
    memset(&d, 0, sizeof d);
    if (!o) o = &d;
    if (o->patience < 0 || !(o->min_delta >= 0)) {
        cnn_set_error(CNN_ERR_ARG, "EarlyStopping: patience and min_delta must be >= 0");
        return NULL;
    }
    cnn_callback *cb = cnn__callback_new(CNN__CB_EARLY_STOP, o->monitor, o->mode);
    if (!cb) return NULL;
    cb->min_delta = o->min_delta;
    cb->patience = o->patience;
    cb->restore_best = o->restore_best_weights;
    cb->verbose = o->verbose;
    return cb;
}

CNN_IMPL cnn_callback *cnn_reduce_lr_on_plateau_opt(const cnn_reduce_lr_opts *o) {
    cnn_reduce_lr_opts d;
    memset(&d, 0, sizeof d);
    if (!o) o = &d;
    float factor = o->factor == 0.0f ? 0.1f : o->factor;
    if (!(factor > 0 && factor < 1)) {
        cnn_set_error(CNN_ERR_ARG, "ReduceLROnPlateau: factor %g must be in (0, 1)", factor);
        return NULL;
    }
    if (o->patience < 0 || o->cooldown < 0 || !(o->min_lr >= 0) || !(o->min_delta >= 0)) {
        cnn_set_error(CNN_ERR_ARG,
                      "ReduceLROnPlateau: patience, cooldown, min_lr and min_delta must be >= 0");
        return NULL;
    }
    cnn_callback *cb = cnn__callback_new(CNN__CB_REDUCE_LR, o->monitor, o->mode);
    if (!cb) return NULL;
    cb->factor = factor;
    cb->patience = o->patience ? o->patience : 10;
    cb->min_delta = o->min_delta == 0.0f ? 1e-4f : o->min_delta;
    cb->cooldown = o->cooldown;
    cb->min_lr = o->min_lr;
    cb->verbose = o->verbose;
    return cb;
}

CNN_IMPL cnn_callback *cnn_csv_logger_opt(const cnn_csv_logger_opts *o) {
    if (!o || !o->filename || !o->filename[0]) {
        cnn_set_error(CNN_ERR_ARG, "CSVLogger: filename is missing");
        return NULL;
    }
    cnn_callback *cb = cnn__callback_new(CNN__CB_CSV, NULL, CNN_MODE_AUTO);
    if (!cb) return NULL;
    cb->filename = cnn__strdup(o->filename);
    if (!cb->filename) { CNN_FREE(cb); cnn_set_error(CNN_ERR_MEMORY, "out of memory"); return NULL; }
    cb->separator = o->separator ? o->separator : ',';
    cb->append = o->append;
    return cb;
}

CNN_IMPL cnn_callback *cnn_lr_scheduler_opt(const cnn_lr_scheduler_opts *o) {
    if (!o || !o->schedule) {
        cnn_set_error(CNN_ERR_ARG, "LearningRateScheduler: schedule function is missing");
        return NULL;
    }
    cnn_callback *cb = cnn__callback_new(CNN__CB_SCHEDULER, NULL, CNN_MODE_AUTO);
    if (cb) { cb->sched = *o; cb->verbose = o->verbose; }
    return cb;
}

CNN_IMPL cnn_callback *cnn_terminate_on_nan(void) {
    return cnn__callback_new(CNN__CB_NAN, NULL, CNN_MODE_AUTO);
}

CNN_IMPL cnn_callback *cnn_lambda_callback_opt(const cnn_lambda_opts *o) {
    if (!o || (!o->on_epoch_begin && !o->on_epoch_end && !o->on_batch_end)) {
        cnn_set_error(CNN_ERR_ARG, "LambdaCallback: no hook given");
        return NULL;
    }
    cnn_callback *cb = cnn__callback_new(CNN__CB_LAMBDA, NULL, CNN_MODE_AUTO);
    if (cb) cb->lambda = *o;
    return cb;
}

CNN_IMPL cnn_callback *cnn_backup_and_restore_opt(const cnn_backup_opts *o) {
    if (!o || !o->backup_dir || !o->backup_dir[0]) {
        cnn_set_error(CNN_ERR_ARG, "BackupAndRestore: backup_dir is missing");
        return NULL;
    }
    size_t len = strlen(o->backup_dir);
    if (len > 4000) {
        cnn_set_error(CNN_ERR_ARG, "BackupAndRestore: backup_dir is too long (%zu characters)", len);
        return NULL;
    }
    cnn_callback *cb = cnn__callback_new(CNN__CB_BACKUP, NULL, CNN_MODE_AUTO);
    if (!cb) return NULL;
    cb->filename = cnn__strdup(o->backup_dir);
    cb->filepath = (char *)CNN_MALLOC(len + 16);
    if (!cb->filename || !cb->filepath) {
        cnn_callback_free(cb);
        cnn_set_error(CNN_ERR_MEMORY, "out of memory");
        return NULL;
    }
    snprintf(cb->filepath, len + 16, "%s/backup.cnn", o->backup_dir);
    cb->keep_backup = o->keep_backup;
    cb->verbose = o->verbose;
    return cb;
}

CNN_IMPL void cnn_callback_free(cnn_callback *cb) {
    if (!cb) return;
    if (cb->csv) fclose(cb->csv);
    CNN_FREE(cb->filepath);
    CNN_FREE(cb->filename);
    CNN_FREE(cb->best_params);
    CNN_FREE(cb->best_state);
    cnn__tb_free(cb->tb);
    CNN_FREE(cb);
}

/* Keras filepath templates: "{epoch:02d}", "{val_accuracy:.4f}", "{loss}" */
static int cnn__format_path(const char *tmpl, int epoch1, const cnn_history *h, char *out, size_t cap) {
    size_t o = 0;
    for (const char *p = tmpl; *p;) {
        if (*p != '{') { if (o + 1 >= cap) goto too_long; out[o++] = *p++; continue; }
        const char *close = strchr(p, '}');
        if (!close) return cnn_set_error(CNN_ERR_ARG, "ModelCheckpoint: unclosed '{' in filepath '%s'", tmpl);
        char key[64] = {0}, spec[32] = {0}, fmt[40];
        const char *colon = (const char *)memchr(p, ':', (size_t)(close - p));
        size_t klen = (size_t)((colon ? colon : close) - p - 1);
        if (klen == 0 || klen >= sizeof key)
            return cnn_set_error(CNN_ERR_ARG, "ModelCheckpoint: bad field in filepath '%s'", tmpl);
        memcpy(key, p + 1, klen);
        if (colon) {
            size_t slen = (size_t)(close - colon - 1);
            if (slen >= sizeof spec || strspn(colon + 1, "0123456789.dfeg") < slen)
                return cnn_set_error(CNN_ERR_ARG, "ModelCheckpoint: bad format in field '{%s}' of '%s'", key,
                                     tmpl);
            memcpy(spec, colon + 1, slen);
        }
        char piece[128];
        if (!strcmp(key, "epoch")) {
            char last = spec[0] ? spec[strlen(spec) - 1] : 'd';
            if (last == 'd') {
                snprintf(fmt, sizeof fmt, "%%%s", spec[0] ? spec : "d");
                snprintf(piece, sizeof piece, fmt, epoch1);
            } else {
                snprintf(fmt, sizeof fmt, "%%%s", spec);
                snprintf(piece, sizeof piece, fmt, (double)epoch1);
            }
        } else {
            const double *v = cnn_history_get(h, key);
            if (!v)
                return cnn_set_error(CNN_ERR_ARG,
                                     "ModelCheckpoint: filepath '%s' names '%s', which is not in the logs",
                                     tmpl, key);
            char last = spec[0] ? spec[strlen(spec) - 1] : 'g';
            if (last == 'd') snprintf(piece, sizeof piece, "%d", (int)v[h->epochs - 1]);
            else {
                snprintf(fmt, sizeof fmt, "%%%s", spec[0] ? spec : ".6g");
                snprintf(piece, sizeof piece, fmt, v[h->epochs - 1]);
            }
        }
        size_t pl = strlen(piece);
        if (o + pl >= cap) goto too_long;
        memcpy(out + o, piece, pl);
        o += pl;
        p = close + 1;
    }
    out[o] = 0;
    return CNN_OK;
too_long:
    return cnn_set_error(CNN_ERR_ARG, "ModelCheckpoint: the path made from '%s' is too long", tmpl);
}

/* is `current` better than `best` by more than min_delta? */
static int cnn__improved(const cnn_callback *cb, double current, double best) {
    return cb->mode_max ? current - cb->min_delta > best : current + cb->min_delta < best;
}

/* training state shared by fit and its callbacks */
typedef struct cnn__fit_state {
    cnn_model *m;
    cnn_history *h;
    FILE *out;
    int out_dynamic;             /* the progress bar is redrawn in place on out */
    int stop;
} cnn__fit_state;

/* Are all of the model's weights and statistics finite? (A diverged model is
   not worth a checkpoint.) */
static int cnn__model_finite(const cnn_model *m) {
    int finite = 1;
    for (size_t i = 0; i < m->n_params && finite; i++) finite = isfinite(m->params[i]);
    for (size_t i = 0; i < m->n_state && finite; i++) finite = isfinite(m->state[i]);
    return finite;
}

/* at the start of each fit, as Keras' on_train_begin: truncate, or append */
static int cnn__csv_open(cnn_callback *cb) {
    if (cb->csv) fclose(cb->csv);
    long size = 0;
    if (cb->append) {
        FILE *f = fopen(cb->filename, "rb");
        if (f) { fseek(f, 0, SEEK_END); size = ftell(f); fclose(f); }
    }
    cb->csv = fopen(cb->filename, cb->append ? "a" : "w");
    if (!cb->csv)
        return cnn_set_error(CNN_ERR_IO, "CSVLogger: cannot open '%s': %s", cb->filename, strerror(errno));
    cb->csv_header_done = size > 0; /* appending to a log that has its header */
    return CNN_OK;
}

static int cnn__csv_write(cnn_callback *cb, const cnn_history *h, int epoch0) {
    if (!cb->csv) return cnn_set_error(CNN_ERR_STATE, "CSVLogger: '%s' is not open", cb->filename);
    int order[CNN_HISTORY_MAX_KEYS], n = h->n_keys;
    for (int i = 0; i < n; i++) order[i] = i;
    for (int i = 1; i < n; i++) /* keys sorted, as Keras writes them */
        for (int j = i; j > 0 && strcmp(h->keys[order[j - 1]], h->keys[order[j]]) > 0; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    if (!cb->csv_header_done) {
        fprintf(cb->csv, "epoch");
        for (int i = 0; i < n; i++) fprintf(cb->csv, "%c%s", cb->separator, h->keys[order[i]]);
        fprintf(cb->csv, "\n");
        cb->csv_header_done = 1;
    }
    fprintf(cb->csv, "%d", epoch0);
    for (int i = 0; i < n; i++)
        fprintf(cb->csv, "%c%.17g", cb->separator, h->values[order[i]][h->epochs - 1]);
    fprintf(cb->csv, "\n");
    fflush(cb->csv);
    return ferror(cb->csv) ? cnn_set_error(CNN_ERR_IO, "CSVLogger: cannot write '%s'", cb->filename) : CNN_OK;
}

static int cnn__snapshot(cnn_callback *cb, const cnn_model *m) {
    if (!cb->best_params || !cb->best_state) {
        CNN_FREE(cb->best_params);
        CNN_FREE(cb->best_state);
        cb->best_params = (float *)cnn__alloc(m->n_params, sizeof(float), "best weights");
        cb->best_state = (float *)cnn__alloc(m->n_state, sizeof(float), "best weights");
        if (!cb->best_params || !cb->best_state) return CNN_ERR_MEMORY;
    }
    memcpy(cb->best_params, m->params, m->n_params * sizeof(float));
    memcpy(cb->best_state, m->state, m->n_state * sizeof(float));
    return CNN_OK;
}

static void cnn__restore(const cnn_callback *cb, cnn_model *m, FILE *out) {
    if (!cb->best_params) return;
    memcpy(m->params, cb->best_params, m->n_params * sizeof(float));
    memcpy(m->state, cb->best_state, m->n_state * sizeof(float));
    if (cb->verbose)
        fprintf(out, "Restoring model weights from the end of the best epoch: %d.\n", cb->best_epoch + 1);
}

/* ---- TensorBoard: event files, written by hand ------------------------- */

/* An event file is a sequence of records (TensorFlow's TFRecord framing):
     uint64  length of data          (little-endian)
     uint32  masked CRC-32C of the 8 length bytes
     bytes   data: one serialised Event message
     uint32  masked CRC-32C of data
   CRC-32C is the Castagnoli polynomial (reflected 0x82F63B78); the mask is
   ((crc >> 15) | (crc << 17)) + 0xa282ead8. The first record's Event carries
   file_version "brain.Event:2"; every other one a Summary of one Value.

   The messages, as tensorboard/compat/proto (event.proto, summary.proto,
   histogram.proto; proto3) define them, and the fields used here:
     Event          { double wall_time = 1; int64 step = 2;
                      oneof what { string file_version = 3; Summary summary = 5; } }
     Summary        { repeated Value value = 1; }
     Summary.Value  { string tag = 1;
                      oneof value { float simple_value = 2; HistogramProto histo = 5; } }
     HistogramProto { double min = 1; double max = 2; double num = 3; double sum = 4;
                      double sum_squares = 5; repeated double bucket_limit = 6 [packed];
                      repeated double bucket = 7 [packed]; }
   Protobuf's wire format: each field is a key, varint(field << 3 | wire type),
   then its value: wire type 0 a varint (7 bits a byte, low bits first, the top
   bit set on all bytes but the last), 1 eight little-endian bytes (double),
   5 four (float), 2 a varint length then that many bytes (strings, nested
   messages, packed repeated numbers). */

static void cnn__pb_bytes(cnn__pb *b, const void *data, size_t n) {
    if (b->failed || n == 0) return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) cap *= 2;
        unsigned char *p = (unsigned char *)CNN_REALLOC(b->p, cap);
        if (!p) { b->failed = 1; return; }
        b->p = p, b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void cnn__pb_varint(cnn__pb *b, uint64_t v) {
    unsigned char t[10];
    int n = 0;
    do {
        t[n++] = (unsigned char)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    cnn__pb_bytes(b, t, (size_t)n);
}

static void cnn__pb_fixed(cnn__pb *b, uint64_t v, int n) { /* n little-endian bytes */
    unsigned char t[8];
    for (int i = 0; i < n; i++) t[i] = (unsigned char)(v >> (8 * i));
    cnn__pb_bytes(b, t, (size_t)n);
}

static void cnn__pb_key(cnn__pb *b, int field, int wire) { cnn__pb_varint(b, (uint64_t)field << 3 | (uint64_t)wire); }

static void cnn__pb_double(cnn__pb *b, int field, double v) {
    uint64_t u;
    memcpy(&u, &v, 8);
    cnn__pb_key(b, field, 1);
    cnn__pb_fixed(b, u, 8);
}

static size_t cnn__pb_varint_len(uint64_t v) {
    size_t n = 1;
    for (; v > 0x7f; v >>= 7) n++;
    return n;
}

/* a string, or a nested message already serialised */
static void cnn__pb_blob(cnn__pb *b, int field, const void *data, size_t n) {
    cnn__pb_key(b, field, 2);
    cnn__pb_varint(b, n);
    cnn__pb_bytes(b, data, n);
}

/* packed repeated double */
static void cnn__pb_doubles(cnn__pb *b, int field, const double *v, int n) {
    cnn__pb_key(b, field, 2);
    cnn__pb_varint(b, (uint64_t)n * 8);
    for (int i = 0; i < n; i++) {
        uint64_t u;
        memcpy(&u, &v[i], 8);
        cnn__pb_fixed(b, u, 8);
    }
}

static uint32_t cnn__crc32c(const unsigned char *p, size_t n) { /* bitwise: the records are small */
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1u)));
    }
    return ~c;
}

static uint32_t cnn__crc32c_masked(const unsigned char *p, size_t n) {
    uint32_t c = cnn__crc32c(p, n);
    return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

static double cnn__unix_time(void) {
#ifdef CNN__POSIX
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec * 1e-6;
#else
    return (double)time(NULL);
#endif
}

/* Frame tb->msg (an Event) as a record and append it to event file `run`. */
static int cnn__tb_record(cnn__tensorboard *tb, int run) {
    cnn__pb *r = &tb->rec, *e = &tb->msg;
    unsigned char head[8];
    r->len = 0;
    if (e->failed) return cnn_set_error(CNN_ERR_MEMORY, "TensorBoard: out of memory building an event");
    for (int i = 0; i < 8; i++) head[i] = (unsigned char)((uint64_t)e->len >> (8 * i));
    cnn__pb_bytes(r, head, 8);
    cnn__pb_fixed(r, cnn__crc32c_masked(head, 8), 4);
    cnn__pb_bytes(r, e->p, e->len);
    cnn__pb_fixed(r, cnn__crc32c_masked(e->p, e->len), 4);
    if (r->failed) return cnn_set_error(CNN_ERR_MEMORY, "TensorBoard: out of memory building an event");
    if (fwrite(r->p, 1, r->len, tb->f[run]) != r->len)
        return cnn_set_error(CNN_ERR_IO, "TensorBoard: cannot write '%s': %s", tb->path[run], strerror(errno));
    return CNN_OK;
}

#if defined(CNN__POSIX) && !defined(__cplusplus)
extern int gethostname(char *, size_t); /* POSIX, hidden by glibc in strict C99 mode */
#endif

/* Start event file `run` (0 train, 1 validation): log_dir/<run>/events.out.
   tfevents.<seconds>.<host>.<pid>.<n>.v2, n the first number not taken, and
   its first record, the file_version event. */
static int cnn__tb_open(cnn__tensorboard *tb, int run) {
    const char *sub = run ? "validation" : "train";
    char host[256] = "localhost";
    long pid = 0;
    const double now = cnn__unix_time();
#ifdef CNN__POSIX
    if (gethostname(host, sizeof host) != 0 || !host[0]) strcpy(host, "localhost");
    host[sizeof host - 1] = 0;
    pid = (long)getpid();
#endif
    for (char *h = host; *h; h++) /* a file name */
        if (*h == '/' || *h == '\\' || *h == ':') *h = '_';
    size_t cap = strlen(tb->log_dir) + strlen(host) + 96;
    char *path = (char *)cnn__alloc(cap, 1, "a TensorBoard file name");
    if (!path) return CNN_ERR_MEMORY;
    snprintf(path, cap, "%s/%s", tb->log_dir, sub);
    if (cnn__make_folders(path)) {
        int rc = cnn_set_error(CNN_ERR_IO, "TensorBoard: cannot make the folder '%s': %s", path, strerror(errno));
        CNN_FREE(path);
        return rc;
    }
    const size_t dir_len = strlen(path);
    for (int n = 0;; n++) {
        snprintf(path + dir_len, cap - dir_len, "/events.out.tfevents.%010lld.%s.%ld.%d.v2", (long long)now, host,
                 pid, n);
        FILE *probe = fopen(path, "rb");
        if (!probe) break;
        fclose(probe);
    }
    tb->f[run] = fopen(path, "wb");
    CNN_FREE(tb->path[run]);
    tb->path[run] = path;
    if (!tb->f[run]) return cnn_set_error(CNN_ERR_IO, "TensorBoard: cannot open '%s': %s", path, strerror(errno));
    tb->msg.len = 0;
    cnn__pb_double(&tb->msg, 1, now);                        /* wall_time */
    cnn__pb_blob(&tb->msg, 3, "brain.Event:2", 13);          /* file_version */
    return cnn__tb_record(tb, run);
}

/* Append an Event holding tb->value (a Summary.Value) at `step` to run's file. */
static int cnn__tb_event(cnn__tensorboard *tb, int run, long long step) {
    int rc;
    if (!tb->f[run] && (rc = cnn__tb_open(tb, run))) return rc;
    if (tb->value.failed) return cnn_set_error(CNN_ERR_MEMORY, "TensorBoard: out of memory building a summary");
    cnn__pb *e = &tb->msg;
    e->len = 0;
    cnn__pb_double(e, 1, cnn__unix_time());                  /* wall_time */
    cnn__pb_key(e, 2, 0);                                    /* step */
    cnn__pb_varint(e, (uint64_t)step);
    /* summary: a Summary whose one field is `value` (field 1) */
    cnn__pb_key(e, 5, 2);
    cnn__pb_varint(e, 1 + (uint64_t)cnn__pb_varint_len(tb->value.len) + tb->value.len);
    cnn__pb_blob(e, 1, tb->value.p, tb->value.len);
    return cnn__tb_record(tb, run);
}

/* A scalar: Summary.Value { tag, simple_value } */
static int cnn__tb_scalar(cnn__tensorboard *tb, int run, long long step, const char *tag, double v) {
    cnn__pb *b = &tb->value;
    float f = (float)v;
    uint32_t u;
    memcpy(&u, &f, 4);
    b->len = 0;
    cnn__pb_blob(b, 1, tag, strlen(tag));
    cnn__pb_key(b, 2, 5); /* simple_value, a float */
    cnn__pb_fixed(b, u, 4);
    return cnn__tb_event(tb, run, step);
}

/* TensorFlow's default bucket limits (tensorflow/core/lib/histogram), made
   with the same double arithmetic: -DBL_MAX, -v_k .. -v_0, 0, v_0 .. v_k,
   DBL_MAX for v_i = 1e-12 * 1.1^i < 1e20 (multiplied in turn). Bucket i
   counts the values in [limits[i-1], limits[i]). tb->counts holds room for
   the counts and for the encoded limits and counts: 3 * n_limits. */
static int cnn__tb_limits(cnn__tensorboard *tb) {
    int k = 0;
    for (double v = 1.0e-12; v < 1.0e20; v *= 1.1) k++;
    tb->n_limits = 2 * k + 3;
    tb->limits = (double *)cnn__alloc((size_t)tb->n_limits, sizeof(double), "histogram buckets");
    tb->counts = (double *)cnn__alloc(3 * (size_t)tb->n_limits, sizeof(double), "histogram buckets");
    if (!tb->limits || !tb->counts) return CNN_ERR_MEMORY;
    tb->limits[0] = -DBL_MAX;
    tb->limits[k + 1] = 0.0;
    tb->limits[2 * k + 2] = DBL_MAX;
    int i = 0;
    for (double v = 1.0e-12; v < 1.0e20; v *= 1.1, i++) {
        tb->limits[k - i] = -v;
        tb->limits[k + 2 + i] = v;
    }
    return CNN_OK;
}

/* A histogram of n floats (the finite ones), as TensorFlow's Histogram::Add
   and EncodeToProto(preserve_zero_buckets = false) make it: a run of empty
   buckets is written as one, with the run's last limit. */
static int cnn__tb_histogram(cnn__tensorboard *tb, long long step, const char *tag, const float *x, size_t n) {
    const int nl = tb->n_limits;
    double mn = DBL_MAX, mx = -DBL_MAX, num = 0, sum = 0, sum_sq = 0;
    double *counts = tb->counts, *out_limits = counts + nl, *out_counts = counts + 2 * nl;
    memset(counts, 0, (size_t)nl * sizeof(double));
    for (size_t i = 0; i < n; i++) {
        const double v = x[i];
        if (!isfinite(v)) continue;
        int lo = 0, hi = nl - 1; /* the first limit > v (std::upper_bound); limits[nl-1] = DBL_MAX > v */
        while (lo < hi) {
            int mid = (lo + hi) / 2;
            if (tb->limits[mid] > v) hi = mid;
            else lo = mid + 1;
        }
        counts[lo] += 1;
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
        num += 1, sum += v, sum_sq += v * v;
    }
    int out = 0;
    for (int i = 0; i < nl;) {
        double end = tb->limits[i], count = counts[i];
        int j = i + 1;
        while (count <= 0 && j < nl && counts[j] <= 0) end = tb->limits[j], count = counts[j], j++;
        out_limits[out] = end, out_counts[out] = count, out++;
        i = j;
    }
    cnn__pb *h = &tb->histo, *b = &tb->value;
    h->len = 0;
    cnn__pb_double(h, 1, mn);
    cnn__pb_double(h, 2, mx);
    cnn__pb_double(h, 3, num);
    cnn__pb_double(h, 4, sum);
    cnn__pb_double(h, 5, sum_sq);
    cnn__pb_doubles(h, 6, out_limits, out);
    cnn__pb_doubles(h, 7, out_counts, out);
    b->len = 0;
    cnn__pb_blob(b, 1, tag, strlen(tag));
    if (h->failed) b->failed = 1;
    else cnn__pb_blob(b, 5, h->p, h->len); /* histo */
    return cnn__tb_event(tb, 0, step);
}

/* Every weight tensor of every layer, in the model's order, tagged as Keras 2
   does ("conv_1/kernel_0/histogram"). */
static int cnn__tb_histograms(cnn__tensorboard *tb, const cnn_model *m, long long step) {
    for (int i = 0; i < m->n_nodes; i++) {
        const cnn_node *nd = m->nodes[i];
        cnn__tensor_ref ref;
        for (int t = 0; cnn__layers[nd->type]->tensor && cnn__layers[nd->type]->tensor(nd, t, &ref); t++) {
            char tag[CNN__NAME_MAX + 64];
            snprintf(tag, sizeof tag, "%s/%s_0/histogram", nd->name, ref.name);
            const float *x = (ref.state ? m->state + nd->s_off : m->params + nd->p_off) + ref.offset;
            int rc = cnn__tb_histogram(tb, step, tag, x, ref.count);
            if (rc) return rc;
        }
    }
    return CNN_OK;
}

static int cnn__tb_flush(cnn__tensorboard *tb) {
    for (int i = 0; i < 2; i++)
        if (tb->f[i] && (fflush(tb->f[i]) != 0 || ferror(tb->f[i])))
            return cnn_set_error(CNN_ERR_IO, "TensorBoard: cannot write '%s': %s", tb->path[i], strerror(errno));
    return CNN_OK;
}

/* on_epoch_end: the History's values of this epoch (val_ ones to the
   validation file, without the prefix), at step epoch; the validation values
   again against optimizer steps (Keras 2's on_test_end); the histograms. */
static int cnn__tb_epoch_end(cnn_callback *cb, cnn__fit_state *st, int epoch0) {
    cnn__tensorboard *tb = cb->tb;
    const cnn_history *h = st->h;
    const int e = h->epochs - 1;
    char tag[64];
    int rc = CNN_OK;
    for (int k = 0; k < h->n_keys && !rc; k++) {
        const int val = !strncmp(h->keys[k], "val_", 4);
        snprintf(tag, sizeof tag, "epoch_%s", h->keys[k] + (val ? 4 : 0));
        rc = cnn__tb_scalar(tb, val, epoch0, tag, h->values[k][e]);
    }
    for (int k = 0; k < h->n_keys && !rc; k++)
        if (!strncmp(h->keys[k], "val_", 4)) {
            snprintf(tag, sizeof tag, "evaluation_%s_vs_iterations", h->keys[k] + 4);
            rc = cnn__tb_scalar(tb, 1, st->m->step, tag, h->values[k][e]);
        }
    if (!rc && tb->histogram_freq && epoch0 % tb->histogram_freq == 0)
        rc = cnn__tb_histograms(tb, st->m, epoch0);
    return rc ? rc : cnn__tb_flush(tb);
}

/* on_batch_end, with update_freq N: every N optimizer steps, the running
   means of this epoch so far (Keras 2's batch_ scalars) at step = steps taken. */
static int cnn__tb_batch_end(cnn__fit_state *st, cnn_callback **callbacks, double loss, double acc, int has_acc) {
    int rc = CNN_OK;
    for (cnn_callback **c = callbacks; c && *c && !rc; c++) {
        cnn__tensorboard *tb = (*c)->tb;
        if ((*c)->kind != CNN__CB_TENSORBOARD || tb->update_freq <= 0 || st->m->step % tb->update_freq) continue;
        rc = cnn__tb_scalar(tb, 0, st->m->step, "batch_loss", loss);
        if (!rc && has_acc) rc = cnn__tb_scalar(tb, 0, st->m->step, "batch_accuracy", acc);
    }
    return rc;
}

CNN_IMPL cnn_callback *cnn_tensorboard_opt(const cnn_tensorboard_opts *o) {
    cnn_tensorboard_opts d;
    memset(&d, 0, sizeof d);
    if (!o) o = &d;
    const char *dir = o->log_dir ? o->log_dir : "logs";
    if (!dir[0] || strlen(dir) > 4000) {
        cnn_set_error(CNN_ERR_ARG, "TensorBoard: log_dir is %s", dir[0] ? "too long" : "empty");
        return NULL;
    }
    if (o->histogram_freq < 0 || o->update_freq < 0) {
        cnn_set_error(CNN_ERR_ARG, "TensorBoard: histogram_freq (%d) and update_freq (%d) must be >= 0",
                      o->histogram_freq, o->update_freq);
        return NULL;
    }
    cnn_callback *cb = cnn__callback_new(CNN__CB_TENSORBOARD, NULL, CNN_MODE_AUTO);
    if (!cb) return NULL;
    cb->tb = (cnn__tensorboard *)cnn__alloc(1, sizeof *cb->tb, "a TensorBoard callback");
    if (!cb->tb) { cnn_callback_free(cb); return NULL; }
    cb->tb->histogram_freq = o->histogram_freq;
    cb->tb->update_freq = o->update_freq;
    cb->tb->log_dir = cnn__strdup(dir);
    if (!cb->tb->log_dir || cnn__tb_limits(cb->tb)) {
        cnn_callback_free(cb);
        cnn_set_error(CNN_ERR_MEMORY, "out of memory");
        return NULL;
    }
    /* a trailing separator would double in the paths */
    for (size_t n = strlen(cb->tb->log_dir); n > 1 && (cb->tb->log_dir[n - 1] == '/' || cb->tb->log_dir[n - 1] == '\\');)
        cb->tb->log_dir[--n] = 0;
    return cb;
}

/* on_epoch_end of one callback; epoch0 is 0-based. Returns <0 on error. */
static int cnn__callback_epoch_end(cnn_callback *cb, cnn__fit_state *st, int epoch0) {
    cnn_model *m = st->m;
    const cnn_history *h = st->h;
    const double *series = cnn_history_get(h, cb->monitor);
    double cur = series ? series[h->epochs - 1] : NAN;
    int needs_monitor = cb->kind == CNN__CB_EARLY_STOP || cb->kind == CNN__CB_REDUCE_LR ||
                        (cb->kind == CNN__CB_CHECKPOINT && cb->save_best_only);
    if (needs_monitor && !series) {
        fprintf(st->out, "WARNING: callback monitors '%s', which is not available (keys:", cb->monitor);
        for (int k = 0; k < h->n_keys; k++) fprintf(st->out, " %s", h->keys[k]);
        fprintf(st->out, "); skipping it.\n");
        return CNN_OK;
    }
    switch (cb->kind) {
    case CNN__CB_CHECKPOINT: {
        char path[4096];
        int rc = cnn__format_path(cb->filepath, epoch0 + 1, h, path, sizeof path);
        if (rc) return rc;
        if (!cnn__model_finite(m)) { /* keep the last good file rather than write a diverged model */
            fprintf(st->out, "Epoch %d: ModelCheckpoint: the weights are not finite (training diverged); "
                             "%s is not written.\n", epoch0 + 1, path);
            return CNN_OK;
        }
        if (cb->save_best_only) {
            if (!(cb->mode_max ? cur > cb->best : cur < cb->best)) {
                if (cb->verbose)
                    fprintf(st->out, "\nEpoch %d: %s did not improve from %.5f\n", epoch0 + 1, cb->monitor,
                            cb->best);
                return CNN_OK;
            }
            if (cb->verbose)
                fprintf(st->out, "\nEpoch %d: %s improved from %.5f to %.5f, saving model to %s\n",
                        epoch0 + 1, cb->monitor, cb->best, cur, path);
            cb->best = cur;
        } else if (cb->verbose) fprintf(st->out, "\nEpoch %d: saving model to %s\n", epoch0 + 1, path);
        return cnn_save(m, path);
    }
    case CNN__CB_EARLY_STOP:
        /* Keras 3 logic: an improving epoch never stops training (Keras 2 stopped
           at patience=0 even while improving) */
        cb->wait++;
        if (cnn__improved(cb, cur, cb->best) || cb->best_epoch < 0) {
            cb->best = cur;
            cb->best_epoch = epoch0;
            cb->wait = 0;
            if (cb->restore_best && cnn__snapshot(cb, m)) return CNN_ERR_MEMORY;
            return CNN_OK;
        }
        if (cb->wait >= cb->patience && epoch0 > 0) {
            st->stop = 1;
            st->h->stopped_early = 1;
            if (cb->verbose) fprintf(st->out, "Epoch %d: early stopping\n", epoch0 + 1);
            if (cb->restore_best) cnn__restore(cb, m, st->out);
        }
        return CNN_OK;
    case CNN__CB_REDUCE_LR:
        if (cb->cooldown_left > 0) { cb->cooldown_left--; cb->wait = 0; }
        if (cnn__improved(cb, cur, cb->best)) { cb->best = cur; cb->wait = 0; }
        else if (cb->cooldown_left <= 0 && ++cb->wait >= cb->patience) {
            float old = m->opt.learning_rate;
            if (old > cb->min_lr) {
                float lr = old * cb->factor;
                if (lr < cb->min_lr) lr = cb->min_lr;
                m->opt.learning_rate = lr;
                if (cb->verbose)
                    fprintf(st->out, "\nEpoch %d: ReduceLROnPlateau reducing learning rate to %g.\n",
                            epoch0 + 1, lr);
                cb->cooldown_left = cb->cooldown;
                cb->wait = 0;
            }
        }
        return CNN_OK;
    case CNN__CB_CSV: return cnn__csv_write(cb, h, epoch0);
    case CNN__CB_TENSORBOARD: return cnn__tb_epoch_end(cb, st, epoch0);
    case CNN__CB_LAMBDA:
        if (cb->lambda.on_epoch_end && cb->lambda.on_epoch_end(m, epoch0, h, cb->lambda.user))
            st->stop = st->h->stopped_early = 1;
        return CNN_OK;
    default: return CNN_OK;
    }
}

/* ======================================================================== */
/* fit: the training loop, progress bar, Ctrl-C                             */
/* ======================================================================== */

static volatile sig_atomic_t cnn__sigint_seen;
static void cnn__on_sigint(int sig) { (void)sig; cnn__sigint_seen = 1; }

#if !defined(CNN_NO_SIGINT)
/* Fits running at once (in several threads) share one SIGINT handler: the first
   to start installs it, the last to end puts back the one it found, and Ctrl-C
   stops all of them. A spin lock (GCC/Clang atomics, no threads library) keeps
   the count and the handler consistent; other compilers get no lock, so start
   and end fits from one thread at a time there. */
static int cnn__fits_running;
static void (*cnn__sigint_before)(int) = SIG_ERR;
#if defined(__GNUC__) || defined(__clang__)
static char cnn__sigint_lock_flag;
#define CNN__SIGINT_LOCK() while (__atomic_test_and_set(&cnn__sigint_lock_flag, __ATOMIC_ACQUIRE))
#define CNN__SIGINT_UNLOCK() __atomic_clear(&cnn__sigint_lock_flag, __ATOMIC_RELEASE)
#else
#define CNN__SIGINT_LOCK() (void)0
#define CNN__SIGINT_UNLOCK() (void)0
#endif
static void cnn__sigint_enter(void) {
    CNN__SIGINT_LOCK();
    if (cnn__fits_running++ == 0) {
        cnn__sigint_seen = 0;
        cnn__sigint_before = signal(SIGINT, cnn__on_sigint);
    }
    CNN__SIGINT_UNLOCK();
}
static void cnn__sigint_leave(void) {
    CNN__SIGINT_LOCK();
    if (--cnn__fits_running == 0 && cnn__sigint_before != SIG_ERR) signal(SIGINT, cnn__sigint_before);
    CNN__SIGINT_UNLOCK();
}
#endif

static void cnn__format_duration(char *buf, size_t cap, double s) {
    long t = (long)s; /* truncated, as Keras prints it */
    if (t >= 3600) snprintf(buf, cap, "%ld:%02ld:%02ld", t / 3600, (t % 3600) / 60, t % 60);
    else if (t >= 60) snprintf(buf, cap, "%ld:%02ld", t / 60, t % 60);
    else snprintf(buf, cap, "%lds", t);
}

/* Keras' Progbar line: " 32/1563 [>.....] - ETA: 1:23 - loss: ..." or the final form */
static void cnn__progress(FILE *out, int step, int steps, double elapsed, int final, int dynamic, double loss,
                          double acc, int has_acc, const char *val) {
    char line[512];
    int len = 0, digits = 1;
    for (int s = steps; s >= 10; s /= 10) digits++;
    len += snprintf(line + len, sizeof line - len, "%*d/%d [", digits, step, steps);
    int filled = steps > 0 ? (int)(30.0 * step / steps) : 30;
    for (int i = 0; i < 30; i++)
        line[len++] = i < filled - 1 || (i == filled - 1 && step >= steps) ? '='
                      : i == filled - 1                                    ? '>'
                                                                           : '.';
    len += snprintf(line + len, sizeof line - len, "]");
    if (final) {
        double per = step > 0 ? elapsed / step : 0;
        char unit[32];
        if (per >= 1) snprintf(unit, sizeof unit, "%.0fs/step", per);
        else if (per >= 1e-3) snprintf(unit, sizeof unit, "%.0fms/step", per * 1e3);
        else snprintf(unit, sizeof unit, "%.0fus/step", per * 1e6);
        len += snprintf(line + len, sizeof line - len, " - %.0fs %s", elapsed, unit);
    } else {
        char eta[32];
        cnn__format_duration(eta, sizeof eta, step > 0 ? elapsed / step * (steps - step) : 0);
        len += snprintf(line + len, sizeof line - len, " - ETA: %s", eta);
    }
    len += snprintf(line + len, sizeof line - len, " - loss: %.4f", loss);
    if (has_acc) len += snprintf(line + len, sizeof line - len, " - accuracy: %.4f", acc);
    if (val) snprintf(line + len, sizeof line - len, "%s", val);
    if (dynamic) fprintf(out, "\r%s\033[K%s", line, final ? "\n" : "");
    else if (final) fprintf(out, "%s\n", line);
    fflush(out);
}

static int cnn__is_tty(FILE *f) {
#ifdef CNN__POSIX
    return isatty(fileno(f));
#else
    (void)f;
    return 0;
#endif
}

/* ---- fit: the callbacks' hooks, one epoch, the epoch's log, the loop ----- */

/* A new run, as Keras' on_train_begin: EarlyStopping and ReduceLROnPlateau
   forget the last run, CSVLogger opens its file. */
static int cnn__callbacks_train_begin(cnn_callback **callbacks) {
    int rc = CNN_OK;
    for (cnn_callback **c = callbacks; c && *c; c++)
        if ((*c)->kind == CNN__CB_EARLY_STOP || (*c)->kind == CNN__CB_REDUCE_LR) {
            (*c)->wait = (*c)->cooldown_left = 0;
            (*c)->best = (*c)->mode_max ? -INFINITY : INFINITY;
            (*c)->best_epoch = -1;
            CNN_FREE((*c)->best_params);
            CNN_FREE((*c)->best_state);
            (*c)->best_params = (*c)->best_state = NULL;
        }
    for (cnn_callback **c = callbacks; !rc && c && *c; c++)
        if ((*c)->kind == CNN__CB_CSV) rc = cnn__csv_open(*c);
    for (cnn_callback **c = callbacks; !rc && c && *c; c++) /* TensorBoard: new files, the train one now */
        if ((*c)->kind == CNN__CB_TENSORBOARD) { cnn__tb_close((*c)->tb); rc = cnn__tb_open((*c)->tb, 0); }
    return rc;
}

/* on_epoch_begin: LearningRateScheduler sets the rate, LambdaCallback's hook may stop. */
static int cnn__callbacks_epoch_begin(cnn__fit_state *st, cnn_callback **callbacks, int epoch) {
    cnn_model *m = st->m;
    for (cnn_callback **c = callbacks; c && *c; c++) {
        if ((*c)->kind == CNN__CB_SCHEDULER) {
            float lr = (*c)->sched.schedule(epoch, m->opt.learning_rate, (*c)->sched.user);
            if (!(lr > 0) || !isfinite(lr))
                return cnn_set_error(CNN_ERR_ARG, "LearningRateScheduler: schedule returned %g for epoch %d",
                                     lr, epoch);
            m->opt.learning_rate = lr;
            if ((*c)->verbose)
                fprintf(st->out, "\nEpoch %d: LearningRateScheduler setting learning rate to %g.\n",
                        epoch + 1, lr);
        }
        if ((*c)->kind == CNN__CB_LAMBDA && (*c)->lambda.on_epoch_begin &&
            (*c)->lambda.on_epoch_begin(m, epoch, (*c)->lambda.user))
            st->stop = st->h->stopped_early = 1;
    }
    return CNN_OK;
}

/* on_batch_end: TerminateOnNaN and LambdaCallback may stop. */
static void cnn__callbacks_batch_end(cnn__fit_state *st, cnn_callback **callbacks, int epoch, int step,
                                     double loss) {
    for (cnn_callback **c = callbacks; c && *c; c++) {
        if ((*c)->kind == CNN__CB_NAN && !isfinite(loss) && !st->stop) {
            fprintf(st->out,
                    "%sEpoch %d, batch %d: invalid loss %g, terminating training (TerminateOnNaN). The "
                    "weights diverged: a lower learning rate or gradient clipping (clipnorm) may help.\n",
                    st->out_dynamic ? "\n" : "", epoch + 1, step, loss);
            st->stop = st->h->stopped_early = 1;
        }
        if ((*c)->kind == CNN__CB_LAMBDA && (*c)->lambda.on_batch_end &&
            (*c)->lambda.on_batch_end(st->m, epoch, step, (float)loss, (*c)->lambda.user))
            st->stop = st->h->stopped_early = 1;
    }
}

/* on_train_end: EarlyStopping with restore_best_weights also restores when
   training simply ends; CSV files close (the callbacks stay reusable). */
static void cnn__callbacks_train_end(cnn__fit_state *st, cnn_callback **callbacks, int rc,
                                     int initial_epoch) {
    for (cnn_callback **c = callbacks; !rc && c && *c; c++)
        if ((*c)->kind == CNN__CB_EARLY_STOP && (*c)->restore_best && !st->h->stopped_early &&
            (*c)->best_epoch >= 0 && (*c)->best_epoch != st->h->epochs - 1 + initial_epoch)
            cnn__restore(*c, st->m, st->out);
    for (cnn_callback **c = callbacks; c && *c; c++)
        if ((*c)->csv) { fclose((*c)->csv); (*c)->csv = NULL; }
    for (cnn_callback **c = callbacks; c && *c; c++)
        if ((*c)->tb) cnn__tb_close((*c)->tb);
}

/* What fit's loop shares between its parts. */
typedef struct cnn__fit_run {
    cnn_batch_source *src;
    const cnn_fit_opts *o;
    const float *class_weight;
    float *x, *y;                /* one batch [bs][h][w][c], [bs][y_width] */
    int bs, steps, has_acc, dynamic;
    int pass;                    /* passes over the source so far, for reshuffling */
    int in_pass;                 /* batches taken from the source since it started pass `pass` */
    int first_epoch;             /* the epoch the History starts at (a resumed run's first run's) */
    uint64_t *shuffle_seed;      /* cnn_fit's array source's seed (NULL for other sources) */
    /* this epoch */
    double t0, loss_sum, acc_sum;
    long long seen;
    int step;
} cnn__fit_run;

/* BackupAndRestore, defined after Save / load, whose serialisation it uses */
static int cnn__backup_restore(cnn_callback *cb, cnn__fit_state *st, cnn__fit_run *r, int *next_epoch);
static int cnn__backup_write(cnn_callback *cb, cnn__fit_state *st, const cnn__fit_run *r, int epoch);
static void cnn__backup_delete(const cnn_callback *cb);

/* Take `count` batches from the source and drop them: where a resumed run's
   source stood when the backup was made (any source can do this; the array
   sources and flows make the same batches again, being functions of their
   seed, pass and position). */
static int cnn__skip_batches(cnn__fit_run *r, int count) {
    for (int i = 0; i < count; i++) {
        int got = r->src->next(r->src->ctx, r->bs, r->x, r->y);
        if (got < 0) return got;
        if (got == 0)
            return cnn_set_error(CNN_ERR_STATE,
                                 "BackupAndRestore: the batch source ended after %d of the %d batches the "
                                 "backed-up run had taken from pass %d",
                                 i, count, r->pass);
    }
    return CNN_OK;
}

/* One epoch's steps: batches from the source, a training step each, the
   batch callbacks and the progress bar. Returns CNN_OK or an error. */
static int cnn__fit_epoch(cnn__fit_state *st, cnn__fit_run *r, int epoch) {
    cnn_model *m = st->m;
    cnn_batch_source *src = r->src;
    double last_draw = 0;
    int rc = CNN_OK;
    r->t0 = cnn_wall_time();
    r->loss_sum = r->acc_sum = 0;
    r->seen = 0;
    for (r->step = 0; r->step < r->steps; r->step++) {
        int got = src->next(src->ctx, r->bs, r->x, r->y);
        double l, a, now;
        if (got == 0 && r->o->steps_per_epoch) { /* sampling continues across passes */
            if ((rc = src->reset(src->ctx, ++r->pass))) return rc;
            r->in_pass = 0;
            got = src->next(src->ctx, r->bs, r->x, r->y);
        }
        if (got < 0) return got;
        if (got == 0) break;
        r->in_pass++;
        if (got > r->bs)
            return cnn_set_error(CNN_ERR_ARG, "cnn_fit: batch source returned %d samples for a batch of %d",
                                 got, r->bs);
        if ((rc = cnn__check_targets(m, r->y, got, src->y_width, "cnn_fit"))) return rc;
        if ((rc = cnn__train_step(m, r->x, r->y, got, src->y_width, r->class_weight, &l, &a))) return rc;
        r->loss_sum += l * got;
        r->acc_sum += a * got;
        r->seen += got;
        cnn__callbacks_batch_end(st, r->o->callbacks, epoch, r->step, l);
        if ((rc = cnn__tb_batch_end(st, r->o->callbacks, r->loss_sum / r->seen, r->acc_sum / r->seen, r->has_acc)))
            return rc;
        now = cnn_wall_time();
        if (r->dynamic && (now - last_draw > 0.1 || r->step + 1 == r->steps)) {
            cnn__progress(st->out, r->step + 1, r->steps, now - r->t0, 0, 1, r->loss_sum / r->seen,
                          r->acc_sum / r->seen, r->has_acc, NULL);
            last_draw = now;
        }
#if !defined(CNN_NO_SIGINT)
        if (cnn__sigint_seen) st->stop = st->h->interrupted = 1;
#endif
        if (st->stop) { r->step++; break; }
    }
    return CNN_OK;
}

/* The epoch's History entries (loss, accuracy, the validation pass's, lr) and
   its line at verbose 1 or 2. */
static int cnn__fit_epoch_log(cnn__fit_state *st, cnn__fit_run *r, cnn_batch_source *val) {
    cnn_model *m = st->m;
    const cnn_fit_opts *o = r->o;
    const double elapsed = cnn_wall_time() - r->t0, loss = r->loss_sum / r->seen, acc = r->acc_sum / r->seen;
    char vtext[160] = "";
    int rc, track_lr = 0;
    if ((rc = cnn__history_put(st->h, "loss", loss))) return rc;
    if (r->has_acc && (rc = cnn__history_put(st->h, "accuracy", acc))) return rc;
    if (val) {
        cnn_eval_result e;
        if ((rc = cnn__evaluate_source(m, val, r->bs, o->validation_steps, &e))) return rc;
        if ((rc = cnn__history_put(st->h, "val_loss", e.loss))) return rc;
        if (r->has_acc && (rc = cnn__history_put(st->h, "val_accuracy", e.accuracy))) return rc;
        if (r->has_acc)
            snprintf(vtext, sizeof vtext, " - val_loss: %.4f - val_accuracy: %.4f", e.loss, e.accuracy);
        else snprintf(vtext, sizeof vtext, " - val_loss: %.4f", e.loss);
    }
    if (o->verbose == 1)
        cnn__progress(st->out, r->step, r->steps, elapsed, 1, r->dynamic, loss, acc, r->has_acc, vtext);
    else if (o->verbose == 2) {
        fprintf(st->out, "%d/%d - %.0fs - loss: %.4f", r->step, r->steps, elapsed, loss);
        if (r->has_acc) fprintf(st->out, " - accuracy: %.4f", acc);
        fprintf(st->out, "%s\n", vtext);
        fflush(st->out);
    }
    if (o->verbose && m->backend.describe)
        cnn__describe_backend(m, 0, st->out); /* when the sharing changed */
    /* lr as used in this epoch (callbacks may change it for the next), as Keras logs it */
    for (cnn_callback **c = o->callbacks; c && *c; c++)
        track_lr |= (*c)->kind == CNN__CB_REDUCE_LR || (*c)->kind == CNN__CB_SCHEDULER;
    return track_lr ? cnn__history_put(st->h, "lr", m->opt.learning_rate) : CNN_OK;
}

/* The loop behind cnn_fit and cnn_fit_source. val may be NULL; shuffle_seed is
   cnn_fit's array source's seed (a backup restores it), NULL for other sources. */
static cnn_history *cnn__fit(cnn_model *m, cnn_batch_source *src, cnn_batch_source *val,
                             const cnn_fit_opts *o, const float *class_weight, uint64_t *shuffle_seed) {
    const int want_bs = o->batch_size ? o->batch_size : src->batch_size > 0 ? src->batch_size : 32;
    const int epochs = o->epochs ? o->epochs : 1;
    const size_t per_in = cnn__node_size(m->nodes[m->input]);
    cnn__fit_state st;
    cnn__fit_run r;
    int rc;
    memset(&st, 0, sizeof st);
    memset(&r, 0, sizeof r);
    st.m = m;
    st.out = o->out ? o->out : stdout;
    r.src = src, r.o = o, r.class_weight = class_weight, r.shuffle_seed = shuffle_seed;
    /* a batch larger than the data is the whole data: size the buffers for that */
    r.bs = src->samples > 0 && src->samples < want_bs && !o->steps_per_epoch ? src->samples : want_bs;
    r.steps = o->steps_per_epoch ? o->steps_per_epoch : (src->samples + r.bs - 1) / r.bs;
    r.has_acc = (m->metrics & CNN_ACCURACY) != 0;
    r.dynamic = o->verbose == 1 && cnn__is_tty(st.out);
    st.out_dynamic = r.dynamic;
    r.pass = o->initial_epoch;
    st.h = (cnn_history *)cnn__alloc(1, sizeof(cnn_history), "a history");
    r.x = (float *)cnn__alloc((size_t)r.bs * per_in, sizeof(float), "a training batch");
    r.y = (float *)cnn__alloc((size_t)r.bs * src->y_width, sizeof(float), "training targets");
    rc = (st.h && r.x && r.y) ? cnn__ensure_batch(m, r.bs) : CNN_ERR_MEMORY;
    if (r.steps <= 0 && !rc) rc = cnn_set_error(CNN_ERR_ARG, "cnn_fit: the training data gives no batches");
#if !defined(CNN_NO_SIGINT)
    /* Ctrl-C stops after the current batch; see THREADS AND DETERMINISM */
    const int sigint_entered = !rc;
    if (sigint_entered) cnn__sigint_enter();
#endif
    cnn_callback *backup = NULL; /* the first BackupAndRestore in the list restores */
    for (cnn_callback **c = o->callbacks; c && *c && !backup; c++)
        if ((*c)->kind == CNN__CB_BACKUP) backup = *c;
    int start_epoch = o->initial_epoch;
    r.first_epoch = o->initial_epoch;
    if (!rc) rc = cnn__callbacks_train_begin(o->callbacks);
    if (!rc && backup) rc = cnn__backup_restore(backup, &st, &r, &start_epoch);
    if (!rc) rc = src->reset(src->ctx, r.pass);
    if (!rc && r.in_pass) rc = cnn__skip_batches(&r, r.in_pass);
    for (int epoch = start_epoch; !rc && epoch < epochs && !st.stop; epoch++) {
        if ((rc = cnn__callbacks_epoch_begin(&st, o->callbacks, epoch)) || st.stop) break;
        if (o->verbose && m->backend.describe && epoch == start_epoch)
            cnn__describe_backend(m, 1, st.out);
        if (o->verbose) fprintf(st.out, "Epoch %d/%d\n", epoch + 1, epochs);
        if (!o->steps_per_epoch && epoch != start_epoch) {
            if ((rc = src->reset(src->ctx, ++r.pass))) break;
            r.in_pass = 0;
        }
        if ((rc = cnn__fit_epoch(&st, &r, epoch))) break;
        if (st.h->interrupted) { /* the History keeps the completed epochs only */
            if (o->verbose)
                fprintf(st.out, "%sInterrupted: training stopped after batch %d of epoch %d.\n",
                        r.dynamic ? "\n" : "", r.step, epoch + 1);
            break;
        }
        if (!r.seen) {
            rc = cnn_set_error(CNN_ERR_ARG, "cnn_fit: the training data gave no samples in epoch %d",
                               epoch + 1);
            break;
        }
        if ((rc = cnn__fit_epoch_log(&st, &r, val))) break;
        st.h->epochs++;
        for (cnn_callback **c = o->callbacks; c && *c && !rc; c++)
            rc = cnn__callback_epoch_end(*c, &st, epoch);
        /* after every other callback's epoch end, so that their state is this epoch's */
        for (cnn_callback **c = o->callbacks; c && *c && !rc; c++)
            if ((*c)->kind == CNN__CB_BACKUP) rc = cnn__backup_write(*c, &st, &r, epoch);
    }
    cnn__callbacks_train_end(&st, o->callbacks, rc, r.first_epoch);
    for (cnn_callback **c = o->callbacks; !rc && !st.h->interrupted && c && *c; c++)
        if ((*c)->kind == CNN__CB_BACKUP && !(*c)->keep_backup) cnn__backup_delete(*c);
#if !defined(CNN_NO_SIGINT)
    if (sigint_entered) cnn__sigint_leave();
#endif
    CNN_FREE(r.x);
    CNN_FREE(r.y);
    if (rc) { /* the error is set where it happened */
        cnn_history_free(st.h);
        return NULL;
    }
    return st.h;
}

static int cnn__check_fit_opts(const cnn_model *m, const cnn_fit_opts *o) {
    if (!o) return cnn_set_error(CNN_ERR_ARG, "cnn_fit: options are NULL");
    if (o->batch_size < 0)
        return cnn_set_error(CNN_ERR_ARG, "cnn_fit: batch_size %d must be > 0", o->batch_size);
    if (o->epochs < 0) return cnn_set_error(CNN_ERR_ARG, "cnn_fit: epochs %d must be > 0", o->epochs);
    if (o->initial_epoch < 0 || o->initial_epoch >= (o->epochs ? o->epochs : 1))
        return cnn_set_error(CNN_ERR_ARG, "cnn_fit: initial_epoch %d must be in [0, epochs)",
                             o->initial_epoch);
    if (o->steps_per_epoch < 0 || o->validation_steps < 0)
        return cnn_set_error(CNN_ERR_ARG, "cnn_fit: steps_per_epoch and validation_steps must be >= 0");
    if (o->verbose < 0 || o->verbose > 2)
        return cnn_set_error(CNN_ERR_ARG, "cnn_fit: verbose %d must be 0, 1 or 2", o->verbose);
    if (!(o->validation_split >= 0 && o->validation_split < 1))
        return cnn_set_error(CNN_ERR_ARG, "cnn_fit: validation_split %g is not in [0, 1)",
                             o->validation_split);
    int nval = (o->validation_split > 0) + (o->validation_data != NULL) + (o->validation_source != NULL);
    if (nval > 1)
        return cnn_set_error(
            CNN_ERR_ARG, "cnn_fit: give only one of validation_split, validation_data, validation_source");
    if (o->class_weight) {
        int U = cnn_model_output_size(m), k = U > 1 ? U : 2;
        for (int i = 0; i < k; i++)
            if (!(o->class_weight[i] >= 0) || !isfinite(o->class_weight[i]))
                return cnn_set_error(CNN_ERR_ARG, "cnn_fit: class_weight[%d] must be finite and >= 0", i);
    }
    return CNN_OK;
}

CNN_IMPL cnn_history *cnn_fit_opt(cnn_model *m, const cnn_dataset *train, const cnn_fit_opts *o) {
    if (cnn__check_compiled(m, "cnn_fit") || cnn__check_fit_opts(m, o) ||
        cnn__check_dataset_fits(m, train, "cnn_fit"))
        return NULL;
    if (o->validation_data && cnn__check_dataset_fits(m, o->validation_data, "cnn_fit (validation_data)"))
        return NULL;
    if (o->validation_source && cnn__check_source(m, o->validation_source, "cnn_fit (validation_source)"))
        return NULL;
    /* validation_split takes the last fraction of the data before shuffling, as Keras does */
    int n_val = o->validation_split > 0 ? train->n - cnn__split_at(train->n, o->validation_split) : 0;
    if (o->validation_split > 0 && (n_val == 0 || n_val == train->n)) {
        cnn_set_error(CNN_ERR_ARG, "cnn_fit: validation_split %g of %d images leaves an empty part",
                      o->validation_split, train->n);
        return NULL;
    }
    /* the model keeps the dataset's class names (a save after fit holds them): a
       failure to store them is fit's failure, not a model silently without them */
    if (!m->class_names && train->class_names && train->num_classes > 0 &&
        cnn_model_set_class_names(m, (const char *const *)train->class_names, train->num_classes) < 0)
        return NULL;
    cnn_dataset tr = *train, va = *train;
    tr.n = train->n - n_val;
    va.n = n_val;
    va.images = train->images + (size_t)tr.n * train->h * train->w * train->c;
    va.labels = train->labels + tr.n;
    cnn_batch_source src, vsrc, *val = o->validation_source;
    cnn__array_source s, vs;
    memset(&vs, 0, sizeof vs);
    /* the shuffle seed moves on with every step taken, so repeated fit calls see new orders */
    if (cnn__array_source_init(&src, &s, m, &tr, !o->no_shuffle, m->seed ^ cnn__mix64((uint64_t)m->step)))
        return NULL;
    const cnn_dataset *vd = n_val ? &va : o->validation_data;
    if (vd) {
        if (cnn__array_source_init(&vsrc, &vs, m, vd, 0, 0)) { CNN_FREE(s.order); return NULL; }
        val = &vsrc;
    }
    cnn_history *h = cnn__fit(m, &src, val, o, o->class_weight, &s.seed);
    CNN_FREE(s.order);
    CNN_FREE(vs.order);
    return h;
}

CNN_IMPL cnn_history *cnn_fit_source_opt(cnn_model *m, cnn_batch_source *train, const cnn_fit_opts *o) {
    if (cnn__check_compiled(m, "cnn_fit_source") || cnn__check_fit_opts(m, o) ||
        cnn__check_source(m, train, "cnn_fit_source"))
        return NULL;
    if (o->validation_split > 0) {
        cnn_set_error(
            CNN_ERR_ARG,
            "cnn_fit_source: validation_split needs arrays; give validation_data or validation_source");
        return NULL;
    }
    if (o->validation_data &&
        cnn__check_dataset_fits(m, o->validation_data, "cnn_fit_source (validation_data)"))
        return NULL;
    if (o->validation_source &&
        cnn__check_source(m, o->validation_source, "cnn_fit_source (validation_source)"))
        return NULL;
    if (train->samples <= 0 && !o->steps_per_epoch) {
        cnn_set_error(CNN_ERR_ARG, "cnn_fit_source: the source does not know its size; give steps_per_epoch");
        return NULL;
    }
    /* the source's preprocessing goes into the model (and its file), or fit fails */
    if (train->rescale != 0.0f && cnn_model_set_rescale(m, train->rescale) < 0) return NULL;
    if (train->mean && train->std && cnn_model_set_featurewise(m, train->mean, train->std, train->c) < 0)
        return NULL;
    cnn_batch_source vsrc, *val = o->validation_source;
    cnn__array_source vs;
    memset(&vs, 0, sizeof vs);
    if (o->validation_data) {
        if (cnn__array_source_init(&vsrc, &vs, m, o->validation_data, 0, 0)) return NULL;
        val = &vsrc;
    }
    cnn_history *h = cnn__fit(m, train, val, o, o->class_weight, NULL);
    CNN_FREE(vs.order);
    return h;
}

/* ======================================================================== */
/* Save / load (format described at the top of this file)                   */
/* ======================================================================== */


typedef struct cnn__buf { unsigned char *p; size_t len, cap; int failed; } cnn__buf;

static void cnn__put(cnn__buf *b, const void *src, size_t n) {
    if (b->failed || n == 0) return; /* src may be NULL when n is 0: memcpy may not take it */
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) cap *= 2;
        unsigned char *np = (unsigned char *)CNN_REALLOC(b->p, cap);
        if (!np) { b->failed = 1; return; }
        b->p = np; b->cap = cap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}
static void cnn__put_u32(cnn__buf *b, uint32_t v) {
    unsigned char t[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 24)};
    cnn__put(b, t, 4);
}
static void cnn__put_u64(cnn__buf *b, uint64_t v) {
    cnn__put_u32(b, (uint32_t)v);
    cnn__put_u32(b, (uint32_t)(v >> 32));
}
static void cnn__put_f32(cnn__buf *b, float f) { uint32_t u; memcpy(&u, &f, 4); cnn__put_u32(b, u); }
static void cnn__put_str(cnn__buf *b, const char *s) {
    cnn__put_u32(b, (uint32_t)strlen(s));
    cnn__put(b, s, strlen(s));
}
static void cnn__put_floats(cnn__buf *b, const float *f, size_t n) {
    for (size_t i = 0; i < n; i++) cnn__put_f32(b, f[i]);
}

typedef struct cnn__reader { const unsigned char *p; size_t len, pos; int failed; } cnn__reader;

static int cnn__get(cnn__reader *r, void *dst, size_t n) {
    if (r->failed || n > r->len - r->pos) { r->failed = 1; if (dst) memset(dst, 0, n); return 0; }
    if (dst) memcpy(dst, r->p + r->pos, n);
    r->pos += n;
    return 1;
}
static uint32_t cnn__get_u32(cnn__reader *r) {
    unsigned char t[4];
    cnn__get(r, t, 4);
    return (uint32_t)t[0] | (uint32_t)t[1] << 8 | (uint32_t)t[2] << 16 | (uint32_t)t[3] << 24;
}
static uint64_t cnn__get_u64(cnn__reader *r) {
    uint64_t lo = cnn__get_u32(r);
    return lo | (uint64_t)cnn__get_u32(r) << 32;
}
static float cnn__get_f32(cnn__reader *r) {
    uint32_t u = cnn__get_u32(r);
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static int cnn__get_str(cnn__reader *r, char *dst, size_t cap) {
    uint32_t n = cnn__get_u32(r);
    if (r->failed || n >= cap) { r->failed = 1; return 0; }
    cnn__get(r, dst, n);
    dst[n] = 0;
    return !r->failed;
}
static void cnn__get_floats(cnn__reader *r, float *f, size_t n) {
    if (r->failed || n > (r->len - r->pos) / 4) { r->failed = 1; return; }
    for (size_t i = 0; i < n; i++) f[i] = cnn__get_f32(r);
}

static uint32_t cnn__crc32(const unsigned char *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return ~c;
}

/* The record's fields in file order (see cnn__layer_record): one list that
   writing and reading both follow, by name. A layer's node has fields of the
   same names. */
#define CNN__RECORD_INTS(X) \
    X(h) X(w) X(c) X(units) X(kh) X(kw) X(sh) X(sw) X(padding) X(activation) X(use_bias) X(trainable)
#define CNN__RECORD_FLOATS(X) X(alpha) X(l1) X(l2) X(rate) X(momentum) X(epsilon)

static void cnn__put_record(cnn__buf *b, const cnn_node *n) {
#define CNN__PUT_INT(f) cnn__put_u32(b, (uint32_t)n->f);
#define CNN__PUT_FLOAT(f) cnn__put_f32(b, n->f);
    CNN__RECORD_INTS(CNN__PUT_INT)
    CNN__RECORD_FLOATS(CNN__PUT_FLOAT)
#undef CNN__PUT_INT
#undef CNN__PUT_FLOAT
}

static void cnn__get_record(cnn__reader *r, cnn__layer_record *L) {
#define CNN__GET_INT(f) L->f = (int)cnn__get_u32(r);
#define CNN__GET_FLOAT(f) L->f = cnn__get_f32(r);
    CNN__RECORD_INTS(CNN__GET_INT)
    CNN__RECORD_FLOATS(CNN__GET_FLOAT)
#undef CNN__GET_INT
#undef CNN__GET_FLOAT
}

/* The oldest format version that holds the model: 2 only for gradient clipping,
   so that a model without it stays readable by cnn.h 0.9 and older. */
static uint32_t cnn__format_version(const cnn_model *m) {
    const cnn_optimizer *o = &m->opt;
    return m->compiled && (o->clipnorm > 0 || o->clipvalue > 0 || o->global_clipnorm > 0) ? 2u : 1u;
}

static void cnn__serialize(const cnn_model *m, cnn__buf *b) {
    cnn__put_u32(b, (uint32_t)m->n_nodes);
    cnn__put_u32(b, (uint32_t)m->input);
    cnn__put_u32(b, (uint32_t)m->output);
    for (int i = 0; i < m->n_nodes; i++) {
        const cnn_node *n = m->nodes[i];
        cnn__put_u32(b, (uint32_t)n->type);
        cnn__put_str(b, n->name);
        cnn__put_u32(b, (uint32_t)n->n_inputs);
        for (int k = 0; k < n->n_inputs; k++) cnn__put_u32(b, (uint32_t)n->inputs[k]);
        cnn__put_record(b, n);
    }
    cnn__put_u64(b, m->seed);
    cnn__put_f32(b, m->rescale);
    cnn__put_u32(b, (uint32_t)(m->mean ? m->stats_c : 0));
    if (m->mean) {
        cnn__put_floats(b, m->mean, (size_t)m->stats_c);
        cnn__put_floats(b, m->std, (size_t)m->stats_c);
    }
    cnn__put_u32(b, (uint32_t)m->n_class_names);
    for (int i = 0; i < m->n_class_names; i++) cnn__put_str(b, m->class_names[i]);
    cnn__put_u32(b, (uint32_t)m->compiled);
    if (m->compiled) {
        const cnn_optimizer *o = &m->opt;
        cnn__put_u32(b, (uint32_t)m->loss);
        cnn__put_u32(b, (uint32_t)m->metrics);
        cnn__put_u32(b, (uint32_t)o->type);
        float f[6] = {o->learning_rate, o->beta_1, o->beta_2, o->epsilon, o->momentum, o->rho};
        cnn__put_floats(b, f, 6);
        cnn__put_u32(b, (uint32_t)o->nesterov);
        if (cnn__format_version(m) >= 2) {
            float clip[3] = {o->clipnorm, o->clipvalue, o->global_clipnorm};
            cnn__put_floats(b, clip, 3);
        }
        cnn__put_u64(b, (uint64_t)m->step);
    }
    cnn__put_u64(b, m->n_params);
    cnn__put_floats(b, m->params, m->n_params);
    cnn__put_u64(b, m->n_state);
    cnn__put_floats(b, m->state, m->n_state);
    cnn__put_u32(b, m->compiled && m->slot1 ? 1u : 0u);
    if (m->compiled && m->slot1) {
        cnn__put_floats(b, m->slot1, m->n_params);
        cnn__put_floats(b, m->slot2, m->n_params);
    }
}

#ifdef CNN__POSIX
/* What writers killed in the middle of a save left beside the target: files
   named "<name>.tmp<pid>" whose process is gone (a live one, or one that
   cannot be asked, keeps its file: two processes may save at once). */
static void cnn__remove_dead_temps(const char *path) {
    const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
    char dir[4096], full[4096 + 256];
    const size_t dlen = slash ? (size_t)(slash - path) : 0, blen = strlen(base);
    if (dlen >= sizeof dir) return;
    if (!slash) strcpy(dir, ".");
    else if (dlen == 0) strcpy(dir, "/");
    else { memcpy(dir, path, dlen); dir[dlen] = 0; }
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *name = e->d_name, *digits = name + blen + 4;
        if (strncmp(name, base, blen) || strncmp(name + blen, ".tmp", 4) || *digits < '0' || *digits > '9')
            continue;
        char *end;
        const long pid = strtol(digits, &end, 10);
        if (*end == '-') /* "<pid>-<hex>": the writer's thread, see cnn__write_atomic */
            for (end++; (*end >= '0' && *end <= '9') || (*end >= 'a' && *end <= 'f'); end++) {}
        if (*end || pid <= 0 || pid == (long)getpid()) continue;
        if (kill((int)pid, 0) == 0 || errno != ESRCH) continue; /* alive, or not ours to ask */
        snprintf(full, sizeof full, "%s/%s", dir, name);
        remove(full);
    }
    closedir(d);
}
#endif

/* Write bytes to path as a whole or not at all: a temporary file beside the
   target ("<path>.tmp<pid>-<hex>"), flushed to the disk, then renamed over the
   target; a reader sees the old file or the new one, never half of one. The hex
   part is the address of this call's frame: calls running at once in threads of
   one process have distinct frames, so two threads saving to one path never
   write the same temporary file. `who` names the caller in errors. */
static int cnn__write_atomic(const char *who, const char *path, const unsigned char *bytes, size_t len) {
    int rc = CNN_OK, ok;
    size_t plen = strlen(path);
    char *tmp = (char *)CNN_MALLOC(plen + 48);
    if (!tmp) return cnn_set_error(CNN_ERR_MEMORY, "%s: out of memory", who);
#ifdef CNN__POSIX
    snprintf(tmp, plen + 48, "%s.tmp%ld-%lx", path, (long)getpid(), (unsigned long)(uintptr_t)&rc);
#else
    snprintf(tmp, plen + 48, "%s.tmp%lx", path, (unsigned long)(uintptr_t)&rc);
#endif
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        rc = cnn_set_error(CNN_ERR_IO, "%s: cannot create '%s': %s", who, tmp, strerror(errno));
        goto done;
    }
    ok = fwrite(bytes, 1, len, f) == len && fflush(f) == 0;
#ifdef CNN__POSIX
    ok = ok && fsync(fileno(f)) == 0;
#endif
    ok = (fclose(f) == 0) && ok;
    if (!ok) {
        remove(tmp);
        rc = cnn_set_error(CNN_ERR_IO, "%s: cannot write '%s': %s", who, tmp, strerror(errno));
        goto done;
    }
#ifdef _WIN32
    /* rename() there refuses an existing target; MoveFileEx replaces it */
    if (!MoveFileExA(tmp, path, MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH)) {
        remove(tmp);
        rc = cnn_set_error(CNN_ERR_IO, "%s: cannot rename '%s' to '%s' (Windows error %lu)", who, tmp, path,
                           (unsigned long)GetLastError());
        goto done;
    }
#else
    if (rename(tmp, path) != 0) {
        remove(tmp);
        rc = cnn_set_error(CNN_ERR_IO, "%s: cannot rename '%s' to '%s': %s", who, tmp, path, strerror(errno));
        goto done;
    }
#endif
#ifdef CNN__POSIX
    cnn__remove_dead_temps(path);
#endif
done:
    CNN_FREE(tmp);
    return rc;
}

CNN_IMPL int cnn_save(const cnn_model *m, const char *path) {
    int rc = cnn__check_built(m, "cnn_save");
    if (rc) return rc;
    if (!path || !path[0]) return cnn_set_error(CNN_ERR_ARG, "cnn_save: the path is empty");
    cnn__buf payload, file;
    memset(&payload, 0, sizeof payload);
    memset(&file, 0, sizeof file);
    cnn__serialize(m, &payload);
    if (payload.failed) {
        CNN_FREE(payload.p);
        return cnn_set_error(CNN_ERR_MEMORY, "cnn_save: out of memory serialising the model");
    }
    cnn__put(&file, "CNNMODEL", 8);
    cnn__put_u32(&file, cnn__format_version(m));
    cnn__put_u64(&file, payload.len);
    cnn__put(&file, payload.p, payload.len);
    cnn__put_u32(&file, cnn__crc32(payload.p, payload.len));
    CNN_FREE(payload.p);
    if (file.failed) {
        CNN_FREE(file.p);
        return cnn_set_error(CNN_ERR_MEMORY, "cnn_save: out of memory serialising the model");
    }
    rc = cnn__write_atomic("cnn_save", path, file.p, file.len);
    CNN_FREE(file.p);
    return rc;
}

/* rebuild a node from its stored record; NULL on error */
static cnn_node *cnn__rebuild_node(cnn_model *m, int type, const char *name, cnn_node **ins, int n_in,
                                   const cnn__layer_record *L) {
    if (type < 0 || type >= CNN__LAYER_TYPES) {
        cnn_set_error(CNN_ERR_FORMAT, "unknown layer type %d", type);
        return NULL;
    }
    return cnn__layers[type]->rebuild(m, name, ins, n_in, L);
}

/* the layer graph: each layer rebuilt through its kind from its record */
static int cnn__read_layers(cnn_model *m, cnn__reader *r) {
    uint32_t n_nodes = cnn__get_u32(r), input = cnn__get_u32(r), output = cnn__get_u32(r);
    if (r->failed || n_nodes == 0 || n_nodes > 100000 || input >= n_nodes || output >= n_nodes) {
        if (r->failed) cnn_set_error(CNN_ERR_FORMAT, "truncated before the layer count");
        else cnn_set_error(CNN_ERR_FORMAT, "bad layer count %u (1 to 100000), input %u, output %u", n_nodes, input,
                           output);
        return CNN_ERR_FORMAT;
    }
    for (uint32_t i = 0; i < n_nodes; i++) {
        char name[CNN__NAME_MAX];
        uint32_t type = cnn__get_u32(r);
        if (!cnn__get_str(r, name, sizeof name)) {
            cnn_set_error(CNN_ERR_FORMAT, "layer %u: bad name", i);
            return CNN_ERR_FORMAT;
        }
        uint32_t n_in = cnn__get_u32(r);
        cnn_node *ins[CNN__MAX_INPUTS];
        if (!r->failed && type >= CNN__LAYER_TYPES) { /* a newer cnn.h's layer kind */
            cnn_set_error(CNN_ERR_FORMAT, "layer '%s': unknown layer type %u (this is cnn.h " CNN_VERSION ")",
                          name, type);
            return CNN_ERR_FORMAT;
        }
        if (r->failed || n_in > CNN__MAX_INPUTS) {
            cnn_set_error(CNN_ERR_FORMAT, "layer '%s': bad inputs", name);
            return CNN_ERR_FORMAT;
        }
        for (uint32_t k = 0; k < n_in; k++) {
            uint32_t idx = cnn__get_u32(r);
            if (idx >= i) {
                cnn_set_error(CNN_ERR_FORMAT, "layer '%s': input %u is not an earlier layer", name, idx);
                return CNN_ERR_FORMAT;
            }
            ins[k] = m->nodes[idx];
        }
        cnn__layer_record L;
        cnn__get_record(r, &L);
        if (r->failed) {
            cnn_set_error(CNN_ERR_FORMAT, "layer '%s': truncated", name);
            return CNN_ERR_FORMAT;
        }
        cnn_node *n = cnn__rebuild_node(m, (int)type, name, ins, (int)n_in, &L);
        if (!n) /* the file's fault, unless memory ran out */
            return cnn_set_error(cnn__error_code == CNN_ERR_MEMORY ? CNN_ERR_MEMORY : CNN_ERR_FORMAT,
                                 "layer '%s': %s", name, cnn_last_error());
        if (n->h != L.h || n->w != L.w || n->c != L.c) {
            cnn_set_error(CNN_ERR_FORMAT, "layer '%s': stored shape does not match", name);
            return CNN_ERR_FORMAT;
        }
        n->trainable = L.trainable != 0;
    }
    if ((int)input != m->input) {
        cnn_set_error(CNN_ERR_FORMAT, "input index %u is not the Input layer (%d)", input, m->input);
        return CNN_ERR_FORMAT;
    }
    /* the weights and statistics these layers hold are stored further on: a file
       too short for them is refused before anything that size is allocated */
    const size_t room = (r->len - r->pos) / sizeof(float);
    size_t implied = 0;
    for (int i = 0; i < m->n_nodes && implied <= room; i++)
        implied += m->nodes[i]->p_count > room || m->nodes[i]->s_count > room
                       ? room + 1
                       : m->nodes[i]->p_count + m->nodes[i]->s_count;
    if (implied > room) {
        cnn_set_error(CNN_ERR_FORMAT, "the layers hold more weights than the file's %zu remaining bytes",
                      r->len - r->pos);
        return CNN_ERR_FORMAT;
    }
    /* and one sample's layer outputs: a few bytes can describe gigabytes of them
       (an UpSampling2D of 20000x20000), which a predict would then allocate */
    double outputs = 0, largest = 0;
    int big = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        const double bytes = (double)m->nodes[i]->h * m->nodes[i]->w * m->nodes[i]->c * sizeof(float);
        outputs += bytes;
        if (bytes > largest) largest = bytes, big = i;
    }
    if (outputs > (double)cnn_memory_limit()) {
        char what[160];
        snprintf(what, sizeof what, "one sample's layer outputs (the largest: '%s', %dx%dx%d)", m->nodes[big]->name,
                 m->nodes[big]->h, m->nodes[big]->w, m->nodes[big]->c);
        return cnn_check_memory("cnn_load", what, outputs < 1.8e19 ? (unsigned long long)outputs : ~0ULL);
    }
    int rc = cnn_model_set_output(m, m->nodes[output]);
    if (rc == CNN_ERR_MEMORY) return rc; /* its message says what did not fit */
    if (rc || m->n_nodes != (int)n_nodes) {
        cnn_set_error(CNN_ERR_FORMAT, "the stored graph is inconsistent");
        return CNN_ERR_FORMAT;
    }
    return CNN_OK;
}

/* the seed, input preprocessing and class names */
static int cnn__read_preprocessing(cnn_model *m, cnn__reader *r) {
    m->seed = cnn__get_u64(r);
    m->rescale = cnn__get_f32(r);
    uint32_t sc = cnn__get_u32(r);
    if (r->failed || !isfinite(m->rescale) || m->rescale == 0 || (sc && (int)sc != m->nodes[m->input]->c)) {
        if (r->failed) cnn_set_error(CNN_ERR_FORMAT, "truncated in the preprocessing");
        else cnn_set_error(CNN_ERR_FORMAT, "bad preprocessing: rescale %g, featurewise channels %u (the input has %d)",
                           m->rescale, sc, m->nodes[m->input]->c);
        return CNN_ERR_FORMAT;
    }
    if (sc) {
        float mean[4096], stdv[4096];
        if (sc > 4096) {
            cnn_set_error(CNN_ERR_FORMAT, "bad preprocessing: featurewise channels %u (at most 4096)", sc);
            return CNN_ERR_FORMAT;
        }
        cnn__get_floats(r, mean, sc);
        cnn__get_floats(r, stdv, sc);
        const int rc = r->failed ? CNN_ERR_FORMAT : cnn_model_set_featurewise(m, mean, stdv, (int)sc);
        if (rc) return cnn_set_error(rc == CNN_ERR_MEMORY ? CNN_ERR_MEMORY : CNN_ERR_FORMAT,
                                     "bad featurewise statistics: %s", r->failed ? "truncated" : cnn_last_error());
    }
    uint32_t nc = cnn__get_u32(r);
    if (r->failed || nc > 100000) {
        cnn_set_error(CNN_ERR_FORMAT, "bad class name count %u (at most 100000)%s", nc, r->failed ? ", truncated" : "");
        return CNN_ERR_FORMAT;
    }
    if (nc) {
        m->class_names = (char **)cnn__alloc(nc, sizeof(char *), "class names");
        if (!m->class_names) return CNN_ERR_MEMORY;
        for (uint32_t i = 0; i < nc; i++) {
            char name[1024];
            if (!cnn__get_str(r, name, sizeof name)) return cnn_set_error(CNN_ERR_FORMAT, "bad class name %u", i);
            if (!(m->class_names[i] = cnn__strdup(name)))
                return cnn_set_error(CNN_ERR_MEMORY, "out of memory copying class name %u", i);
            m->n_class_names = (int)i + 1;
        }
    }
    return CNN_OK;
}

/* compile settings, when saved (*compiled), and the optimizer's step count */
static int cnn__read_compile(cnn_model *m, cnn__reader *r, uint32_t version, uint32_t *compiled,
                             uint64_t *step) {
    *compiled = cnn__get_u32(r);
    if (*compiled) {
        cnn_compile_opts co;
        memset(&co, 0, sizeof co);
        co.loss = (cnn_loss)cnn__get_u32(r);
        co.metrics = (int)cnn__get_u32(r);
        co.optimizer.type = (cnn_optimizer_type)cnn__get_u32(r);
        float f[6];
        cnn__get_floats(r, f, 6);
        co.optimizer.learning_rate = f[0]; co.optimizer.beta_1 = f[1]; co.optimizer.beta_2 = f[2];
        co.optimizer.epsilon = f[3]; co.optimizer.momentum = f[4]; co.optimizer.rho = f[5];
        co.optimizer.nesterov = (int)cnn__get_u32(r);
        if (version >= 2) { /* gradient clipping */
            float clip[3];
            cnn__get_floats(r, clip, 3);
            co.optimizer.clipnorm = clip[0]; co.optimizer.clipvalue = clip[1]; co.optimizer.global_clipnorm = clip[2];
        }
        *step = cnn__get_u64(r);
        const int rc = r->failed ? CNN_ERR_FORMAT : cnn_compile_opt(m, &co);
        if (rc) return cnn_set_error(rc == CNN_ERR_MEMORY ? CNN_ERR_MEMORY : CNN_ERR_FORMAT, "bad compile settings: %s",
                                     r->failed ? "truncated" : cnn_last_error());
    }
    return CNN_OK;
}

/* fill the empty model m from the payload; an error code on failure */
static int cnn__deserialize(cnn_model *m, cnn__reader *r, uint32_t version) {
    uint32_t compiled = 0;
    uint64_t step = 0;
    int rc = cnn__read_layers(m, r);
    if (!rc) rc = cnn__read_preprocessing(m, r);
    if (!rc) rc = cnn__read_compile(m, r, version, &compiled, &step);
    if (rc) return rc;
    uint64_t count = cnn__get_u64(r);
    if (count != m->n_params) {
        cnn_set_error(CNN_ERR_FORMAT, "parameter count %llu does not match the layers' %zu", (unsigned long long)count,
                      m->n_params);
        return CNN_ERR_FORMAT;
    }
    cnn__get_floats(r, m->params, m->n_params);
    count = cnn__get_u64(r);
    if (count != m->n_state) {
        cnn_set_error(CNN_ERR_FORMAT, "state count %llu does not match the layers' %zu", (unsigned long long)count,
                      m->n_state);
        return CNN_ERR_FORMAT;
    }
    cnn__get_floats(r, m->state, m->n_state);
    uint32_t slots = cnn__get_u32(r);
    if (slots && !compiled) {
        cnn_set_error(CNN_ERR_FORMAT, "optimizer state without compile settings");
        return CNN_ERR_FORMAT;
    }
    if (slots) { cnn__get_floats(r, m->slot1, m->n_params); cnn__get_floats(r, m->slot2, m->n_params); }
    m->step = (long long)step;
    if (r->failed) { cnn_set_error(CNN_ERR_FORMAT, "truncated weights"); return CNN_ERR_FORMAT; }
    if (r->pos != r->len) {
        cnn_set_error(CNN_ERR_FORMAT, "%zu unexpected bytes after the weights", r->len - r->pos);
        return CNN_ERR_FORMAT;
    }
    return CNN_OK;
}

CNN_IMPL cnn_model *cnn_load_memory(const void *data, size_t len) {
    const unsigned char *p = (const unsigned char *)data;
    if (!p) { cnn_set_error(CNN_ERR_ARG, "cnn_load_memory: data is NULL"); return NULL; }
    if (len == 0) { cnn_set_error(CNN_ERR_FORMAT, "model file is empty"); return NULL; }
    if (len < 24 || memcmp(p, "CNNMODEL", 8)) {
        cnn_set_error(CNN_ERR_FORMAT, "not a cnn.h model file (bad magic)");
        return NULL;
    }
    cnn__reader r = {p + 8, len - 8, 0, 0};
    uint32_t version = cnn__get_u32(&r);
    if (version < 1 || version > (uint32_t)CNN_FORMAT_VERSION) {
        cnn_set_error(CNN_ERR_FORMAT, "model file version %u is not supported (this cnn.h reads versions 1 to %u)",
                      version, (uint32_t)CNN_FORMAT_VERSION);
        return NULL;
    }
    uint64_t plen = cnn__get_u64(&r);
    if (plen != len - 24) {
        cnn_set_error(CNN_ERR_FORMAT,
                      "model file is truncated or has trailing data (%zu payload bytes, header says %llu)",
                      len < 24 ? 0 : len - 24, (unsigned long long)plen);
        return NULL;
    }
    const unsigned char *payload = p + 20;
    uint32_t crc = (uint32_t)payload[plen] | (uint32_t)payload[plen + 1] << 8 |
                   (uint32_t)payload[plen + 2] << 16 | (uint32_t)payload[plen + 3] << 24;
    if (crc != cnn__crc32(payload, (size_t)plen)) {
        cnn_set_error(CNN_ERR_FORMAT, "model file is corrupted (checksum mismatch)");
        return NULL;
    }
    cnn__reader pr = {payload, (size_t)plen, 0, 0};
    cnn_model *m = cnn_model_new();
    const int rc = m ? cnn__deserialize(m, &pr, version) : CNN_ERR_MEMORY;
    if (rc) {
        cnn_model_free(m);
        /* running out of memory is not the file's fault: say which it was */
        if (rc == CNN_ERR_MEMORY) cnn_set_error(CNN_ERR_MEMORY, "out of memory loading a model: %s", cnn_last_error());
        else cnn_set_error(CNN_ERR_FORMAT, "bad model file: %s", cnn_last_error());
        return NULL;
    }
    return m;
}

CNN_IMPL cnn_model *cnn_load(const char *path) {
    if (!path) { cnn_set_error(CNN_ERR_ARG, "cnn_load: path is NULL"); return NULL; }
    size_t len = 0;
    unsigned char *buf = cnn__read_file(path, &len);
    if (!buf) return NULL;
    cnn_model *m = cnn_load_memory(buf, len);
    if (!m) cnn_set_error(CNN_ERR_FORMAT, "'%s': %s", path, cnn_last_error());
    CNN_FREE(buf);
    return m;
}

/* ======================================================================== */
/* BackupAndRestore: the training state at an epoch's end, and back         */
/* ======================================================================== */

/* backup.cnn: "CNNBAKUP", u32 version (1), u64 payload length, payload, u32 CRC-32
   of the payload, all little-endian. The payload:
     u32 next epoch, u32 the History's first epoch, u32 batch size, u32 steps per epoch,
     u32 pass, u32 batches taken in it, u32 has a shuffle seed, u64 shuffle seed,
     the History: u32 epochs, u32 keys, per key its name and each epoch's value (f64 bits),
     the callbacks: u32 count, per callback u32 kind, f64 best, u32 wait, u32 cooldown
       left, u32 best epoch + 1, u32 best weights held (then the parameters and the
       state as f32),
     the model: u32 its format version, u64 length, the payload of its model file. */
#define CNN__BACKUP_VERSION 1u

static void cnn__put_f64(cnn__buf *b, double v) { uint64_t u; memcpy(&u, &v, 8); cnn__put_u64(b, u); }
static double cnn__get_f64(cnn__reader *r) { uint64_t u = cnn__get_u64(r); double v; memcpy(&v, &u, 8); return v; }

/* The backup's folder and its parents, made when missing (as Keras makes them). */
static int cnn__backup_folder(const cnn_callback *cb) {
    if (cnn__make_folders(cb->filename))
        return cnn_set_error(CNN_ERR_IO, "BackupAndRestore: cannot make the folder '%s': %s", cb->filename,
                             strerror(errno));
    return CNN_OK;
}

static int cnn__backup_write(cnn_callback *cb, cnn__fit_state *st, const cnn__fit_run *r, int epoch) {
    const cnn_model *m = st->m;
    const cnn_history *h = st->h;
    cnn__buf p, model, file;
    int n_cb = 0, rc;
    memset(&p, 0, sizeof p);
    memset(&model, 0, sizeof model);
    memset(&file, 0, sizeof file);
    if (!cnn__model_finite(m)) { /* a diverged run: the last good backup stays */
        fprintf(st->out, "Epoch %d: BackupAndRestore: the weights are not finite (training diverged); the backup "
                         "of epoch %d stays.\n", epoch + 1, epoch);
        return CNN_OK;
    }
    if ((rc = cnn__backup_folder(cb))) return rc;
    cnn__put_u32(&p, (uint32_t)(epoch + 1));
    cnn__put_u32(&p, (uint32_t)r->first_epoch);
    cnn__put_u32(&p, (uint32_t)r->bs);
    cnn__put_u32(&p, (uint32_t)r->steps);
    cnn__put_u32(&p, (uint32_t)r->pass);
    cnn__put_u32(&p, (uint32_t)r->in_pass);
    cnn__put_u32(&p, r->shuffle_seed ? 1u : 0u);
    cnn__put_u64(&p, r->shuffle_seed ? *r->shuffle_seed : 0);
    cnn__put_u32(&p, (uint32_t)h->epochs);
    cnn__put_u32(&p, (uint32_t)h->n_keys);
    for (int k = 0; k < h->n_keys; k++) {
        cnn__put_str(&p, h->keys[k]);
        for (int e = 0; e < h->epochs; e++) cnn__put_f64(&p, h->values[k][e]);
    }
    for (cnn_callback **c = r->o->callbacks; c && *c; c++) n_cb++;
    cnn__put_u32(&p, (uint32_t)n_cb);
    for (cnn_callback **c = r->o->callbacks; c && *c; c++) {
        const cnn_callback *k = *c;
        cnn__put_u32(&p, (uint32_t)k->kind);
        cnn__put_f64(&p, k->best);
        cnn__put_u32(&p, (uint32_t)k->wait);
        cnn__put_u32(&p, (uint32_t)k->cooldown_left);
        cnn__put_u32(&p, (uint32_t)(k->best_epoch + 1));
        cnn__put_u32(&p, k->best_params ? 1u : 0u);
        if (k->best_params) {
            cnn__put_floats(&p, k->best_params, m->n_params);
            cnn__put_floats(&p, k->best_state, m->n_state);
        }
    }
    cnn__serialize(m, &model);
    cnn__put_u32(&p, cnn__format_version(m));
    cnn__put_u64(&p, model.len);
    cnn__put(&p, model.p, model.len);
    CNN_FREE(model.p);
    cnn__put(&file, "CNNBAKUP", 8);
    cnn__put_u32(&file, CNN__BACKUP_VERSION);
    cnn__put_u64(&file, p.len);
    cnn__put(&file, p.p, p.len);
    cnn__put_u32(&file, p.failed ? 0 : cnn__crc32(p.p, p.len));
    if (model.failed || p.failed || file.failed)
        rc = cnn_set_error(CNN_ERR_MEMORY, "BackupAndRestore: out of memory serialising the training state");
    else rc = cnn__write_atomic("BackupAndRestore", cb->filepath, file.p, file.len);
    CNN_FREE(p.p);
    CNN_FREE(file.p);
    return rc;
}

/* Do a and b have the same layers (kinds, names, shapes, weights), the same
   optimizer? Says the first difference in why. */
static int cnn__same_training(const cnn_model *a, const cnn_model *b, char *why, size_t cap) {
    if (a->n_nodes != b->n_nodes) {
        snprintf(why, cap, "it has %d layers, the model %d", a->n_nodes, b->n_nodes);
        return 0;
    }
    for (int i = 0; i < a->n_nodes; i++) {
        const cnn_node *x = a->nodes[i], *y = b->nodes[i];
        if (x->type != y->type || strcmp(x->name, y->name) || x->h != y->h || x->w != y->w || x->c != y->c ||
            x->p_count != y->p_count || x->s_count != y->s_count) {
            snprintf(why, cap, "its layer %d is '%s' (%s %dx%dx%d), the model's '%s' (%s %dx%dx%d)", i, x->name,
                     cnn__type_names[x->type], x->h, x->w, x->c, y->name, cnn__type_names[y->type], y->h, y->w,
                     y->c);
            return 0;
        }
    }
    if (!a->compiled || a->opt.type != b->opt.type || a->loss != b->loss) {
        snprintf(why, cap, "it was compiled with another optimizer or loss");
        return 0;
    }
    return 1;
}

/* The callbacks' state as the backup holds it, until all of it has been read. */
typedef struct cnn__backup_cb {
    int kind, wait, cooldown_left, best_epoch;
    double best;
    float *params, *state;  /* EarlyStopping's best weights, or NULL */
} cnn__backup_cb;

/* Read what the backup holds after the History (the callbacks, the model) and,
   when all of it is sound, put it in place. */
static int cnn__backup_apply(cnn_callback *cb, cnn__fit_state *st, cnn__fit_run *r, cnn__reader *rd) {
    cnn_model *m = st->m, *t = NULL;
    cnn__backup_cb *cbs = NULL;
    char why[512];
    int n_cb = 0, rc = CNN_OK;
    for (cnn_callback **c = r->o->callbacks; c && *c; c++) n_cb++;
    if (cnn__get_u32(rd) != (uint32_t)n_cb) {
        return cnn_set_error(CNN_ERR_ARG, "BackupAndRestore: '%s' is of a run with other callbacks than this fit's %d",
                             cb->filepath, n_cb);
    }
    cbs = (cnn__backup_cb *)cnn__alloc((size_t)n_cb + 1, sizeof *cbs, "the backed-up callbacks");
    if (!cbs) return CNN_ERR_MEMORY;
    for (int i = 0; i < n_cb && !rc; i++) {
        cnn__backup_cb *b = &cbs[i];
        b->kind = (int)cnn__get_u32(rd);
        b->best = cnn__get_f64(rd);
        const uint32_t wait = cnn__get_u32(rd), cooldown = cnn__get_u32(rd), best_epoch = cnn__get_u32(rd);
        if (rd->failed || wait > (1u << 30) || cooldown > (1u << 30) || best_epoch > (1u << 30)) {
            rd->failed = 1; /* (the counts go on from there: they must not overflow) */
            break;
        }
        b->wait = (int)wait;
        b->cooldown_left = (int)cooldown;
        b->best_epoch = (int)best_epoch - 1;
        if (b->kind != r->o->callbacks[i]->kind)
            rc = cnn_set_error(CNN_ERR_ARG, "BackupAndRestore: '%s' is of a run with other callbacks (number %d "
                               "differs in kind)", cb->filepath, i + 1);
        else if (cnn__get_u32(rd) && !rd->failed) {
            if (m->n_params > (rd->len - rd->pos) / 4 || m->n_state > (rd->len - rd->pos) / 4) { rd->failed = 1; break; }
            b->params = (float *)cnn__alloc(m->n_params ? m->n_params : 1, sizeof(float), "best weights");
            b->state = (float *)cnn__alloc(m->n_state ? m->n_state : 1, sizeof(float), "best weights");
            if (!b->params || !b->state) { rc = CNN_ERR_MEMORY; break; }
            cnn__get_floats(rd, b->params, m->n_params);
            cnn__get_floats(rd, b->state, m->n_state);
        }
    }
    uint32_t version = cnn__get_u32(rd);
    uint64_t len = cnn__get_u64(rd);
    if (!rc && (rd->failed || version < 1 || version > CNN_FORMAT_VERSION || len != rd->len - rd->pos))
        rc = cnn_set_error(CNN_ERR_FORMAT, "BackupAndRestore: '%s' is damaged (the callbacks' state)", cb->filepath);
    if (!rc) {
        cnn__reader mr = {rd->p + rd->pos, (size_t)len, 0, 0};
        t = cnn_model_new();
        if (!t) rc = CNN_ERR_MEMORY;
        else if ((rc = cnn__deserialize(t, &mr, version)))
            rc = cnn_set_error(rc == CNN_ERR_MEMORY ? CNN_ERR_MEMORY : CNN_ERR_FORMAT,
                               "BackupAndRestore: the model in '%s' does not load: %s", cb->filepath, cnn_last_error());
        else if (!cnn__same_training(t, m, why, sizeof why))
            rc = cnn_set_error(CNN_ERR_ARG, "BackupAndRestore: '%s' is of another model: %s", cb->filepath, why);
    }
    if (!rc) { /* all read and checked: now the model and the callbacks take it */
        memcpy(m->params, t->params, m->n_params * sizeof(float));
        memcpy(m->state, t->state, m->n_state * sizeof(float));
        memcpy(m->slot1, t->slot1, m->n_params * sizeof(float));
        memcpy(m->slot2, t->slot2, m->n_params * sizeof(float));
        m->step = t->step;
        m->opt = t->opt;
        m->seed = t->seed;
        for (int i = 0; i < n_cb; i++) {
            cnn_callback *k = r->o->callbacks[i];
            k->best = cbs[i].best;
            k->wait = cbs[i].wait;
            k->cooldown_left = cbs[i].cooldown_left;
            k->best_epoch = cbs[i].best_epoch;
            if (cbs[i].params) {
                CNN_FREE(k->best_params);
                CNN_FREE(k->best_state);
                k->best_params = cbs[i].params;
                k->best_state = cbs[i].state;
                cbs[i].params = cbs[i].state = NULL;
            }
        }
    }
    for (int i = 0; i < n_cb; i++) { CNN_FREE(cbs[i].params); CNN_FREE(cbs[i].state); }
    CNN_FREE(cbs);
    cnn_model_free(t);
    return rc;
}

/* At the start of fit: no backup, a fresh start (CNN_OK); else the state of the
   end of the backed-up epoch, and *next_epoch, or an error saying why not. */
/* The backup's payload (len bytes, its checksum checked): the counts, the
   History, then through cnn__backup_apply the callbacks and the model. */
static int cnn__backup_take(cnn_callback *cb, cnn__fit_state *st, cnn__fit_run *r, const unsigned char *payload,
                            size_t len, int *next_epoch) {
    cnn__reader rd = {payload, len, 0, 0};
    int rc = CNN_OK;
    const int next = (int)cnn__get_u32(&rd), first = (int)cnn__get_u32(&rd), bs = (int)cnn__get_u32(&rd),
              steps = (int)cnn__get_u32(&rd), pass = (int)cnn__get_u32(&rd), in_pass = (int)cnn__get_u32(&rd);
    const uint32_t has_seed = cnn__get_u32(&rd);
    const uint64_t seed = cnn__get_u64(&rd);
    const int epochs = (int)cnn__get_u32(&rd), n_keys = (int)cnn__get_u32(&rd);
    /* batches in one pass over the source (a pass may span several short epochs) */
    const long long per_pass = r->src->samples > 0 ? ((long long)r->src->samples + r->bs - 1) / r->bs : INT_MAX;
    if (rd.failed || next < 1 || first < 0 || first >= next || pass < 0 || pass > (1 << 30) || in_pass < 0 ||
        in_pass > per_pass ||
        epochs != next - first || n_keys > CNN_HISTORY_MAX_KEYS || (size_t)epochs > rd.len / 8) {
        return cnn_set_error(CNN_ERR_FORMAT, "BackupAndRestore: '%s' is damaged (its epoch counts; delete it to "
                             "start afresh)", cb->filepath);
    }
    if (bs != r->bs || steps != r->steps || (has_seed != 0) != (r->shuffle_seed != NULL)) {
        return cnn_set_error(CNN_ERR_ARG, "BackupAndRestore: '%s' is of a run with batch size %d and %d steps per "
                             "epoch%s; this fit has %d and %d%s", cb->filepath, bs, steps,
                             has_seed ? " on arrays" : " on a batch source", r->bs, r->steps,
                             r->shuffle_seed ? " on arrays" : " on a batch source");
    }
    /* the History of the epochs before */
    for (int k = 0; k < n_keys && !rc; k++) {
        char key[sizeof st->h->keys[0]];
        if (!cnn__get_str(&rd, key, sizeof key)) { rd.failed = 1; break; }
        for (int e = 0; e < epochs && !rc; e++) {
            st->h->epochs = e;
            rc = cnn__history_put(st->h, key, cnn__get_f64(&rd));
        }
    }
    st->h->epochs = 0;
    if (!rc && rd.failed)
        rc = cnn_set_error(CNN_ERR_FORMAT, "BackupAndRestore: '%s' is damaged (its History)", cb->filepath);
    if (!rc) rc = cnn__backup_apply(cb, st, r, &rd);
    if (rc) { /* a fresh History again: nothing of the backup is half taken */
        for (int k = 0; k < st->h->n_keys; k++) CNN_FREE(st->h->values[k]);
        memset(st->h, 0, sizeof *st->h);
        return rc;
    }
    st->h->epochs = epochs;
    r->first_epoch = first;
    *next_epoch = next;
    if (r->shuffle_seed) *r->shuffle_seed = seed;
    /* a pass per epoch starts the next pass; steps_per_epoch goes on in the pass */
    r->pass = r->o->steps_per_epoch ? pass : pass + 1;
    r->in_pass = r->o->steps_per_epoch ? in_pass : 0;
    if (cb->verbose)
        fprintf(st->out, "BackupAndRestore: resuming after epoch %d from %s\n", next, cb->filepath);
    return CNN_OK;
}

static int cnn__backup_restore(cnn_callback *cb, cnn__fit_state *st, cnn__fit_run *r, int *next_epoch) {
    int rc = cnn__backup_folder(cb); /* an unusable folder fails now, not after the first epoch */
    if (rc) return rc;
    FILE *probe = fopen(cb->filepath, "rb");
    if (!probe) return errno == ENOENT ? CNN_OK
                                       : cnn_set_error(CNN_ERR_IO, "BackupAndRestore: cannot open '%s': %s",
                                                       cb->filepath, strerror(errno));
    fclose(probe);
    size_t len = 0;
    unsigned char *bytes = cnn__read_file(cb->filepath, &len);
    if (!bytes) return cnn_set_error(CNN_ERR_IO, "BackupAndRestore: %s", cnn_last_error());
    cnn__reader head = {bytes, len, 0, 0};
    char magic[8];
    cnn__get(&head, magic, 8);
    uint32_t version = cnn__get_u32(&head);
    uint64_t plen = cnn__get_u64(&head);
    if (head.failed || memcmp(magic, "CNNBAKUP", 8) || version != CNN__BACKUP_VERSION || plen != len - 24 ||
        cnn__crc32(bytes + 20, (size_t)plen) !=
            ((uint32_t)bytes[len - 4] | (uint32_t)bytes[len - 3] << 8 | (uint32_t)bytes[len - 2] << 16 |
             (uint32_t)bytes[len - 1] << 24)) {
        rc = cnn_set_error(CNN_ERR_FORMAT, "BackupAndRestore: '%s' is not a backup this cnn.h reads, or is damaged "
                           "(delete it to start afresh)", cb->filepath);
        goto done;
    }
    rc = cnn__backup_take(cb, st, r, bytes + 20, (size_t)plen, next_epoch);
done:
    CNN_FREE(bytes);
    return rc;
}

/* Training ended: the backup goes, and its folder when that is left empty. */
static void cnn__backup_delete(const cnn_callback *cb) {
    remove(cb->filepath);
#ifdef _WIN32
    _rmdir(cb->filename);
#elif defined(CNN__POSIX)
    rmdir(cb->filename);
#endif
}

/* ======================================================================== */
/* Backends, and a batch split between workers                              */
/* ======================================================================== */

CNN_IMPL int cnn_model_set_backend(cnn_model *m, const cnn_backend *b) {
    if (!m) return cnn_set_error(CNN_ERR_ARG, "cnn_model_set_backend: the model is NULL");
    if (b && (!b->forward || !b->backward))
        return cnn_set_error(CNN_ERR_ARG,
                             "cnn_model_set_backend: backend '%s' lacks its forward or backward pass",
                             b->name ? b->name : "?");
    if (m->backend.release) m->backend.release(m);
    if (b) m->backend = *b;
    else memset(&m->backend, 0, sizeof m->backend);
    return CNN_OK;
}

CNN_IMPL const cnn_backend *cnn_model_get_backend(const cnn_model *m) {
    return m && m->backend.forward ? &m->backend : NULL;
}

CNN_IMPL int cnn_split_batch(int B, int n, const double *weights, int *counts) {
    double total = 0;
    int given = 0;
    if (B < 0 || n <= 0 || !counts)
        return cnn_set_error(CNN_ERR_ARG, "cnn_split_batch: a batch of %d between %d workers%s", B, n,
                             counts ? "" : " (counts is NULL)");
    if (!weights) { /* Keras' multi_gpu_model: B / n each, the remainder to the last */
        for (int k = 0; k < n; k++) counts[k] = B / n;
        counts[n - 1] += B % n;
        return CNN_OK;
    }
    double largest = 0, scale = 1;
    for (int k = 0; k < n; k++) {
        if (!(weights[k] >= 0) || !isfinite(weights[k]))
            return cnn_set_error(CNN_ERR_ARG, "cnn_split_batch: weight %d (%g) must be a finite number >= 0",
                                 k, weights[k]);
        total += weights[k];
        largest = weights[k] > largest ? weights[k] : largest;
    }
    if (!(total > 0)) return cnn_set_error(CNN_ERR_ARG, "cnn_split_batch: the weights are all 0");
    if (!isfinite(total)) { /* finite weights whose sum is not: scale them down first */
        scale = 1 / largest;
        total = 0;
        for (int k = 0; k < n; k++) total += weights[k] * scale;
    }
    /* whole parts first, then the largest remainders B w - count * total, which
       are exact for integer weights, so exact ties go to the lower index */
    for (int k = 0; k < n; k++) {
        counts[k] = (int)floor((double)B * (weights[k] * scale) / total);
        given += counts[k];
    }
    while (given < B) {
        int best = -1;
        double best_rem = -1;
        for (int k = 0; k < n; k++) {
            const double rem = (double)B * (weights[k] * scale) - counts[k] * total;
            if (weights[k] > 0 && rem > best_rem) { best = k; best_rem = rem; }
        }
        counts[best]++;
        given++;
    }
    return CNN_OK;
}

CNN_IMPL int cnn_split_parse(const char *spec, int n, int *fixed, double *weights) {
    const char *p = spec;
    if (!spec || n <= 0 || !fixed || !weights)
        return cnn_set_error(CNN_ERR_ARG, "cnn_split_parse: NULL argument or no workers");
    *fixed = 0;
    if (!strcmp(spec, "equal") || !strcmp(spec, "auto") || !*spec) return CNN_OK;
    for (int k = 0; k < n; k++) {
        char *end;
        weights[k] = strtod(p, &end);
        if (end == p || !(weights[k] >= 0) || !isfinite(weights[k]))
            return cnn_set_error(CNN_ERR_ARG,
                                 "split '%s': weight %d is not a number >= 0 (give equal, auto or "
                                 "W1:W2:..., one weight per device)",
                                 spec, k + 1);
        p = end;
        if (k < n - 1 && *p++ != ':')
            return cnn_set_error(CNN_ERR_ARG, "split '%s' has fewer weights than the %d devices", spec, n);
    }
    if (*p) return cnn_set_error(CNN_ERR_ARG, "split '%s' has more weights than the %d devices", spec, n);
    for (int k = 0; k < n; k++)
        if (weights[k] > 0) return (*fixed = 1, CNN_OK);
    return cnn_set_error(CNN_ERR_ARG, "split '%s': the weights are all 0", spec);
}

CNN_IMPL double cnn_split_balance(int B, int n, const double *a, const double *b, int *counts) {
    double lo = 0, hi = 0, t;
    if (B < 0 || n <= 0 || !a || !b || !counts)
        return cnn_set_error(CNN_ERR_ARG, "cnn_split_balance: bad arguments");
    for (int k = 0; k < n; k++) {
        if (!(a[k] >= 0 && b[k] > 0) || !isfinite(a[k]) || !isfinite(b[k]))
            return cnn_set_error(CNN_ERR_ARG,
                                 "cnn_split_balance: worker %d's timing (%g + %g per sample) is not "
                                 "usable",
                                 k, a[k], b[k]);
        if (k == 0 || a[k] + b[k] * B < hi) hi = a[k] + b[k] * B; /* one worker alone */
    }
    for (int it = 0; it < 200; it++) { /* the least time T by which the workers can do B samples */
        double total = 0;
        t = 0.5 * (lo + hi);
        for (int k = 0; k < n; k++) total += t > a[k] ? floor((t - a[k]) / b[k]) : 0;
        if (total >= B) hi = t;
        else lo = t;
    }
    t = 0;
    for (int k = 0, given = 0; k < n; k++) {
        counts[k] = hi > a[k] ? (int)floor((hi - a[k]) / b[k]) : 0;
        if (counts[k] > B - given) counts[k] = B - given;
        given += counts[k];
        if (k == n - 1 && given < B) { /* rounding: the rest to the worker that finishes first */
            int best = 0;
            for (int j = 1; j < n; j++)
                if (a[j] + b[j] * (counts[j] + 1) < a[best] + b[best] * (counts[best] + 1)) best = j;
            counts[best] += B - given;
        }
    }
    for (int k = 0; k < n; k++)
        if (counts[k] > 0 && a[k] + b[k] * counts[k] > t) t = a[k] + b[k] * counts[k];
    return t;
}

CNN_IMPL void cnn_moments_add(cnn_moments *acc, double count, double shift, double sum, double sum_sq) {
    double mean, m2, delta, total;
    if (!(count > 0)) return;
    mean = shift + sum / count;                  /* this part's mean and centred sum of squares */
    m2 = sum_sq - sum * sum / count;
    if (m2 < 0) m2 = 0;
    total = acc->count + count;
    delta = mean - acc->mean;
    acc->mean += delta * count / total;
    acc->m2 += m2 + delta * delta * acc->count * count / total;
    acc->count = total;
}

CNN_IMPL void cnn_sum_in_order(float *out, const float *const *parts, int n, size_t count) {
    for (size_t i = 0; i < count; i++) {
        double s = 0;
        for (int k = 0; k < n; k++) s += parts[k][i];
        out[i] = (float)s;
    }
}

CNN_IMPL void cnn_bn_batch_stats(const cnn_moments *acc, float epsilon, float momentum, float *mean,
                                 float *inv, float *moving_mean, float *moving_var) {
    cnn__bn_close(acc->mean, acc->count > 0 ? acc->m2 / acc->count : 0, acc->count, epsilon, momentum, mean,
                  inv, moving_mean, moving_var);
}

CNN_IMPL double cnn_bn_grad_coefficients(double gamma, double mean, double inv, double sum_dy,
                                         double sum_dy_xc, double M, float k[3]) {
    /* dx = gamma inv / M (M dy - sum dy - xhat sum dy xhat), xhat = (x - mean) inv */
    const double dgamma = sum_dy_xc * inv, k1 = gamma * inv, k2 = -k1 * inv * dgamma / M;
    k[0] = (float)k1;
    k[1] = (float)k2;
    k[2] = (float)(-k1 * sum_dy / M - k2 * mean);
    return dgamma;
}

/* ======================================================================== */
/* Debugging aids: profile, input gradient, finite-difference gradient check */
/* ======================================================================== */

CNN_IMPL int cnn_set_reference(cnn_model *m, int on) {
    if (!m) return cnn_set_error(CNN_ERR_ARG, "cnn_set_reference: the model is NULL");
    m->reference = on != 0;
    return CNN_OK;
}

CNN_IMPL int cnn_set_profiling(cnn_model *m, int on) {
    int rc = cnn__check_built(m, "cnn_set_profiling");
    if (rc) return rc;
    m->profiling = on != 0;
    if (on)
        for (int i = 0; i < m->n_nodes; i++) memset(&m->nodes[i]->prof, 0, sizeof m->nodes[i]->prof);
    return CNN_OK;
}

CNN_IMPL int cnn_model_num_layers(const cnn_model *m) {
    if (!m) return cnn_set_error(CNN_ERR_ARG, "cnn_model_num_layers: the model is NULL");
    return m->n_nodes;
}

CNN_IMPL int cnn_get_profile(const cnn_model *m, int i, cnn_layer_profile *p) {
    int rc = cnn__check_built(m, "cnn_get_profile");
    if (rc) return rc;
    if (!p) return cnn_set_error(CNN_ERR_ARG, "cnn_get_profile: the result pointer is NULL");
    if (i < 0 || i >= m->n_nodes)
        return cnn_set_error(CNN_ERR_ARG, "cnn_get_profile: layer %d is not in 0..%d", i, m->n_nodes - 1);
    const cnn_node *n = m->nodes[i];
    *p = n->prof;
    p->name = n->name;
    p->type = cnn__type_names[n->type];
    p->kernels = m->reference ? "reference" : cnn_kernels();
    return CNN_OK;
}

CNN_IMPL int cnn_input_gradient(cnn_model *m, const float *x, const float *y, int n, int y_width, float *dx,
                                float *loss) {
    int rc = cnn__check_xy(m, x, y, n, y_width, "cnn_input_gradient");
    if (rc) return rc;
    if (!dx) return cnn_set_error(CNN_ERR_ARG, "cnn_input_gradient: dx is NULL");
    memset(dx, 0, (size_t)n * cnn__node_size(m->nodes[m->input]) * sizeof(float));
    double l, a;
    m->dx_in = dx;
    m->dropout_off = 1;
    rc = cnn__compute_gradients(m, x, y, n, y_width, NULL, &l, &a);
    m->dx_in = NULL;
    m->dropout_off = 0;
    if (!rc && loss) *loss = (float)l;
    return rc;
}

CNN_IMPL cnn_node *cnn_get_layer(const cnn_model *m, const char *name) {
    cnn_node *n;
    if (!m) { cnn_set_error(CNN_ERR_ARG, "cnn_get_layer: the model is NULL"); return NULL; }
    if (!name) { cnn_set_error(CNN_ERR_ARG, "cnn_get_layer: the layer name is NULL"); return NULL; }
    n = cnn__find(m, name);
    if (!n) cnn_set_error(CNN_ERR_ARG, "cnn_get_layer: no layer named '%s'", name);
    return n;
}

CNN_IMPL cnn_node *cnn_model_layer(const cnn_model *m, int i) {
    if (!m) { cnn_set_error(CNN_ERR_ARG, "cnn_model_layer: the model is NULL"); return NULL; }
    if (i < 0 || i >= m->n_nodes) {
        cnn_set_error(CNN_ERR_ARG, "cnn_model_layer: layer %d is not in 0..%d", i, m->n_nodes - 1);
        return NULL;
    }
    return m->nodes[i];
}

CNN_IMPL const char *cnn_node_type(const cnn_node *x) { return x ? cnn__type_names[x->type] : NULL; }

/* Layer `layer`'s output for x [n][h][w][c] into out, in inference mode
   (chunked) or in training mode (one batch); see cnn_layer_output. Nodes are
   in graph order, each reading only earlier ones, so running nodes 0..target
   computes the target. On the fast path a BatchNorm fused into the pool after
   it (fuse.pool) leaves its out unwritten: that call runs the reference
   passes, which ignore the fusion plan. */
static int cnn__layer_output(cnn_model *m, const char *layer, const float *x, int n, float *out, int training,
                             const char *fn) {
    int rc = cnn__check_built(m, fn);
    if (!rc) rc = cnn__check_batch(m, x, n, fn);
    if (rc) return rc;
    if (!layer) return cnn_set_error(CNN_ERR_ARG, "%s: the layer name is NULL", fn);
    if (!out) return cnn_set_error(CNN_ERR_ARG, "%s: the output buffer is NULL", fn);
    const cnn_node *target = cnn__find(m, layer);
    if (!target) return cnn_set_error(CNN_ERR_ARG, "%s: no layer named '%s'", fn, layer);
    const size_t per_in = cnn__node_size(m->nodes[m->input]), per_out = cnn__node_size(target);
    if (target->type == CNN__INPUT) {
        memcpy(out, x, (size_t)n * per_in * sizeof(float));
        return CNN_OK;
    }
    int B = n;
    if (!training) {
        const int chunk = m->cap_batch > 32 ? m->cap_batch : 32;
        if (B > chunk) B = chunk;
    }
    if ((rc = cnn__ensure_batch(m, B))) return rc;
    const int reference = m->reference, fused = target->fuse.pool != NULL;
    (void)cnn__kern(); /* chosen before any parallel loop reads it, as in cnn__forward */
    m->reference = reference || fused;
    m->training = training;
    m->dropout_off = training; /* as cnn_input_gradient and cnn_gradient_check */
    m->update_moving = 0;
    for (int s = 0; s < n; s += B) {
        const int b = n - s < B ? n - s : B;
        m->x_in = (float *)(x + (size_t)s * per_in);
        for (int i = 0; i <= target->index; i++) {
            cnn_node *nd = m->nodes[i];
            const cnn__layer_kind *kind = cnn__layers[nd->type];
            (m->reference && kind->ref_forward ? kind->ref_forward : kind->forward)(nd, b);
        }
        memcpy(out + (size_t)s * per_out, target->out, (size_t)b * per_out * sizeof(float));
    }
    m->reference = reference;
    m->training = 0;
    m->dropout_off = 0;
    return CNN_OK;
}

CNN_IMPL int cnn_layer_output(cnn_model *m, const char *layer, const float *x, int n, float *out) {
    return cnn__layer_output(m, layer, x, n, out, 0, "cnn_layer_output");
}

CNN_IMPL int cnn_layer_output_training(cnn_model *m, const char *layer, const float *x, int n, float *out) {
    return cnn__layer_output(m, layer, x, n, out, 1, "cnn_layer_output_training");
}

/* loss in training mode (dropout off, moving statistics untouched) */
static double cnn__loss_at(cnn_model *m, const float *x, const float *y, int B, int y_width) {
    double l, a;
    int fused;
    m->training = 1;
    cnn__forward(m, x, B);
    cnn__loss(m, y, B, y_width, NULL, 0, &l, &a, &fused);
    m->training = 0;
    return l + cnn__regularize(m, 0);
}

CNN_IMPL double cnn_gradient_check(cnn_model *m, const float *x, const float *y, int n, int y_width,
                                   int samples, double step) {
    int rc = cnn__check_xy(m, x, y, n, y_width, "cnn_gradient_check");
    if (!rc && (samples <= 0 || !(step > 0)))
        rc = cnn_set_error(CNN_ERR_ARG, "cnn_gradient_check: samples and step must be > 0");
    if (rc) return rc;
    double l, a, worst = 0;
    m->dropout_off = 1;
    rc = cnn__compute_gradients(m, x, y, n, y_width, NULL, &l, &a);
    if (rc) { m->dropout_off = 0; return rc; }
    float *analytic = (float *)cnn__alloc(m->n_params, sizeof(float), "gradient copy");
    if (!analytic) { m->dropout_off = 0; return CNN_ERR_MEMORY; }
    memcpy(analytic, m->grads, m->n_params * sizeof(float));
    for (int i = 0; i < m->n_nodes; i++) {
        const cnn_node *nd = m->nodes[i];
        if (!nd->trainable) continue;
        size_t count = nd->p_count, take = count < (size_t)samples ? count : (size_t)samples;
        for (size_t s = 0; s < take; s++) {
            size_t k = nd->p_off + (take == count ? s : (s * 7919u) % count);
            float keep = m->params[k];
            m->params[k] = (float)(keep + step);
            double lp = cnn__loss_at(m, x, y, n, y_width);
            m->params[k] = (float)(keep - step);
            double lm = cnn__loss_at(m, x, y, n, y_width);
            m->params[k] = keep;
            double num = (lp - lm) / (2 * step), ana = analytic[k];
            double scale = fabs(num) > fabs(ana) ? fabs(num) : fabs(ana);
            double err = fabs(num - ana) / (scale > 1e-3 ? scale : 1e-3);
            if (err > worst) worst = err;
        }
    }
    memcpy(m->grads, analytic, m->n_params * sizeof(float));
    CNN_FREE(analytic);
    m->dropout_off = 0;
    return worst;
}

#endif /* CNN_IMPLEMENTATION_INCLUDED */
#endif /* CNN_IMPLEMENTATION */

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
domain. We make this dedication in perpetuity for the benefit of the public at
large and to the detriment of our heirs and successors. We intend this
dedication to be an overt act of relinquishment in perpetuity of all present
and future rights to this software under copyright law.
------------------------------------------------------------------------------
*/
