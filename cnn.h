/* cnn.h - v0.1 - convolutional neural networks in one C header, the Keras way.

   Build, train, evaluate and save CNNs such as the Keras CIFAR-10 tutorial network:
   a functional graph of named layers, Adam / SGD / RMSprop, cross-entropy and MSE
   losses, a Keras-style fit() with progress bar, History and callbacks, and a
   documented binary model format.

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
     CNN_NO_SIGINT      do not catch Ctrl-C during cnn_fit

   THREADS AND DETERMINISM
     With OpenMP the kernels use omp_get_max_threads() threads (OMP_NUM_THREADS, or
     cnn_set_num_threads). One seed (cnn_model_set_seed) drives initialisation,
     shuffling and dropout; the same seed and thread count give bit-identical runs.
     Dropout masks depend on the seed, the epoch and the sample position, never on
     thread scheduling. During cnn_fit a SIGINT handler (the one piece of global
     state besides the error message) makes Ctrl-C stop after the current batch;
     the previous handler is restored when fit returns.

   MODEL FILE FORMAT (version 1, little-endian)
     "CNNMODEL" magic (8 bytes), u32 version, u64 payload length, payload, u32 CRC-32
     of the payload. The payload holds: the layer graph (type, name, inputs, options,
     trainable), input preprocessing (rescale, featurewise mean/std), class names,
     compile settings (loss, metrics, optimizer and its hyper-parameters, step
     count), then the parameters, the non-trainable state (BatchNorm moving
     statistics) and the optimizer slots as float32 arrays. Saving writes a
     temporary file beside the target, flushes it and renames it over the target,
     so a crash never leaves a half-written model at the target path.

   REVISION HISTORY
     0.1  (2026-11-28) first release: layers, losses, optimizers, fit, callbacks,
          save/load, CIFAR-10 binary and IDX loaders.

   LICENSE: see the end of this file (MIT or public domain, your choice).
*/
#ifndef CNN_H_INCLUDED
#define CNN_H_INCLUDED

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
    CNN_ERR_STATE = -6    /* the call is not valid now (not built, not compiled) */
} cnn_status;

/* The last error on this thread, as a sentence; "" when none. */
CNN_DEF const char *cnn_last_error(void);
/* Set the error (used by the companion headers too); returns code. */
CNN_DEF int cnn_set_error(int code, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Threads used by the kernels (OpenMP); n <= 0 means all cores. */
CNN_DEF void cnn_set_num_threads(int n);
CNN_DEF int cnn_get_num_threads(void);

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
    int kernel_size[2];       /* required: {kh, kw} */
    int strides[2];           /* {0,0} = {1,1} */
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
    int pool_size[2];         /* {0,0} = {2,2} */
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
#define cnn_activation(m, x, ...) cnn_activation_opt((m), (x), &(cnn_activation_opts){__VA_ARGS__})
#define cnn_add(m, inputs, n, ...) cnn_add_opt((m), (inputs), (n), &(cnn_name_opts){__VA_ARGS__})
#define cnn_concatenate(m, inputs, n, ...) \
    cnn_concatenate_opt((m), (inputs), (n), &(cnn_name_opts){__VA_ARGS__})
#endif

/* Finish the graph: the model computes `output` from its (single) input.
   Allocates and initialises the parameters (glorot_uniform, zero biases). */
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
} cnn_optimizer;

#ifndef __cplusplus
#define cnn_adam(...) ((cnn_optimizer){.type = CNN_ADAM, __VA_ARGS__})
#define cnn_sgd(...) ((cnn_optimizer){.type = CNN_SGD, __VA_ARGS__})
#define cnn_rmsprop(...) ((cnn_optimizer){.type = CNN_RMSPROP, __VA_ARGS__})
#endif

typedef enum cnn_loss {
    CNN_LOSS_NONE = 0,
    CNN_CATEGORICAL_CROSSENTROPY,        /* one-hot targets (labels are one-hot encoded) */
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
} cnn_batch_source;

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
    int interrupted;                      /* Ctrl-C stopped training */
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
    int patience;             /* 0 = 10 */
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
CNN_DEF void cnn_callback_free(cnn_callback *cb);
#ifndef __cplusplus
#define cnn_model_checkpoint(...) cnn_model_checkpoint_opt(&(cnn_checkpoint_opts){__VA_ARGS__})
#define cnn_early_stopping(...) cnn_early_stopping_opt(&(cnn_early_stopping_opts){__VA_ARGS__})
#define cnn_reduce_lr_on_plateau(...) cnn_reduce_lr_on_plateau_opt(&(cnn_reduce_lr_opts){__VA_ARGS__})
#define cnn_csv_logger(...) cnn_csv_logger_opt(&(cnn_csv_logger_opts){__VA_ARGS__})
#define cnn_lr_scheduler(...) cnn_lr_scheduler_opt(&(cnn_lr_scheduler_opts){__VA_ARGS__})
#define cnn_lambda_callback(...) cnn_lambda_callback_opt(&(cnn_lambda_opts){__VA_ARGS__})
#endif

typedef struct cnn_fit_opts {
    int batch_size;                 /* 0 = 32 */
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

#ifdef __cplusplus
}
#endif
#endif /* CNN_H_INCLUDED */
