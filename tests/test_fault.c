/* test_fault.c - the whole pipeline with each of its allocations failing in turn:
   build and compile a model, fit it on an augmentation flow (validation data,
   EarlyStopping, ReduceLROnPlateau, ModelCheckpoint, CSVLogger), plot its
   History and write a PNG, evaluate, predict, save, load and predict again. Each run fails at the k-th request to
   CNN_MALLOC/CNN_REALLOC, for every k until a run makes fewer requests than k.
   Every failure must come back as an error with a message, at the call that
   met it; nothing may crash, and nothing may leak (make test builds this with
   ASan, UBSan and LeakSanitizer). CNN_FAULT_STRIDE=s tries every s-th point
   (default 1, every point); CNN_FAULT_WORKERS=w makes the flow's batches on w
   worker threads (default none: made inside the fit), as make fault does. */
#ifndef _XOPEN_SOURCE
#define _XOPEN_SOURCE 700 /* mkdtemp under -std=c99 */
#endif
#include <stdlib.h>
static long requests, fail_at; /* requests counted atomically: flow workers allocate too */
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

#include <unistd.h>

static char dir[64], model_path[128], csv_path[128], plot_path[128], png_path[128];
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

int main(void) {
    const char *env = getenv("CNN_FAULT_STRIDE");
    const long stride = env && atol(env) > 0 ? atol(env) : 1;
    const char *wenv = getenv("CNN_FAULT_WORKERS");
    if (wenv && atoi(wenv) > 0) workers = atoi(wenv);
    long k, points = 0, failures = 0, silent = 0;
    snprintf(dir, sizeof dir, "/tmp/cnn_fault_XXXXXX");
    if (!mkdtemp(dir)) { printf("FAIL mkdtemp\n"); return 1; }
    snprintf(model_path, sizeof model_path, "%s/model.cnn", dir);
    snprintf(csv_path, sizeof csv_path, "%s/log.csv", dir);
    snprintf(plot_path, sizeof plot_path, "%s/plot.png", dir);
    snprintf(png_path, sizeof png_path, "%s/image.png", dir);
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
    remove(model_path);
    remove(csv_path);
    remove(plot_path);
    remove(png_path);
    rmdir(dir);
    return test_finish();
}
