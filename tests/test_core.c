/* test_core.c - pieces the other tests do not reach: the SGD and RMSprop update
   rules, Dropout in training mode, the summary's totals, the progress bar, the
   CIFAR-10 binary loader, and save/load of a branching graph with every layer
   kind, featurewise statistics, frozen layers and the optimizer state. White-box
   where it must be: the implementation is compiled into this file. */
#define _XOPEN_SOURCE 700 /* mkdtemp, rmdir */
#define CNN_IMPLEMENTATION
#include "cnn.h"
#include "test_util.h"
#include "tutorial_net.h"

#include <fenv.h>
#include <stdlib.h>
#include <unistd.h>

static float frand(unsigned *s) { *s = *s * 1664525u + 1013904223u; return (float)((*s >> 8) & 0xffffff) / 8388608.0f - 1.0f; }

/* input 3x3x2 -> flatten -> dense(3) -> loss mse: a model small enough to
   predict its optimizer step by hand */
static cnn_model *tiny_dense(cnn_optimizer opt) {
    cnn_model *m = cnn_model_new();
    cnn_node *x = cnn_input(m, 3, 3, 2, "input");
    x = cnn_flatten(m, x, .name = "flatten");
    x = cnn_dense(m, x, .units = 3, .name = "dense");
    cnn_model_set_output(m, x);
    cnn_compile(m, .optimizer = opt, .loss = CNN_MSE);
    return m;
}

/* Two steps of an optimizer against its formula, written out here in double. */
static void check_optimizer(const char *name, cnn_optimizer opt) {
    test_begin(name);
    cnn_model *m = tiny_dense(opt);
    size_t n;
    float *p = cnn_model_params(m, &n), *g = cnn_model_grads(m, NULL);
    float x[4 * 18], y[4 * 3];
    unsigned s = 11;
    for (int i = 0; i < 4 * 18; i++) x[i] = frand(&s);
    for (int i = 0; i < 4 * 3; i++) y[i] = frand(&s);
    double *w = (double *)calloc(n, sizeof(double)), *v1 = (double *)calloc(n, sizeof(double)), *v2 = (double *)calloc(n, sizeof(double));
    for (size_t i = 0; i < n; i++) w[i] = p[i];
    const double lr = m->opt.learning_rate, mom = m->opt.momentum, rho = m->opt.rho, eps = m->opt.epsilon;
    double worst = 0;
    for (int step = 0; step < 2; step++) {
        float loss;
        CHECK(cnn_train_on_batch(m, x, y, 4, 3, &loss, NULL) == CNN_OK, "%s", cnn_last_error());
        for (size_t i = 0; i < n; i++) { /* g holds the gradient the step used */
            double gi = g[i];
            if (opt.type == CNN_SGD) {
                if (mom == 0) w[i] -= lr * gi;
                else {
                    v1[i] = mom * v1[i] - lr * gi;
                    w[i] += opt.nesterov ? mom * v1[i] - lr * gi : v1[i];
                }
            } else { /* RMSprop */
                v2[i] = rho * v2[i] + (1 - rho) * gi * gi;
                double inc = lr * gi / (sqrt(v2[i]) + eps);
                if (mom != 0) { v1[i] = mom * v1[i] + inc; inc = v1[i]; }
                w[i] -= inc;
            }
            double e = fabs(w[i] - p[i]) / (fabs(w[i]) > 1e-3 ? fabs(w[i]) : 1e-3);
            if (e > worst) worst = e;
            w[i] = p[i]; /* follow the float trajectory */
        }
    }
    CHECK(worst < 1e-5, "largest relative gap to the formula %.3g", worst);
    free(w); free(v1); free(v2);
    cnn_model_free(m);
}

static void test_dropout_training(void) {
    test_begin("Dropout: inverted scaling in training, identity in inference, masks from the seed");
    cnn_model *m = cnn_model_new();
    cnn_node *x = cnn_input(m, 1, 1, 4000, "input");
    x = cnn_dropout(m, x, .rate = 0.25f, .name = "drop");
    cnn_model_set_output(m, x);
    cnn_compile(m, .loss = CNN_MSE);
    float *in = (float *)malloc(2 * 4000 * sizeof(float)), *out = (float *)malloc(2 * 4000 * sizeof(float));
    for (int i = 0; i < 8000; i++) in[i] = 1.0f + (float)(i % 7);
    cnn__ensure_batch(m, 2);
    m->training = 1;
    cnn__forward(m, in, 2);
    const float *y = m->nodes[m->output]->out;
    int dropped = 0, bad = 0;
    for (int i = 0; i < 8000; i++) {
        if (y[i] == 0.0f) dropped++;
        else if (fabsf(y[i] - in[i] / 0.75f) > 1e-5f * in[i]) bad++;
    }
    CHECK(bad == 0, "%d kept values are not x / (1 - rate)", bad);
    CHECK(dropped > 8000 * 0.22 && dropped < 8000 * 0.28, "dropped %d of 8000 at rate 0.25", dropped);
    /* the mask depends on the sample position: the two samples differ */
    int same = 0;
    for (int i = 0; i < 4000; i++) same += (y[i] == 0) == (y[4000 + i] == 0);
    CHECK(same < 3900, "both samples got the same mask");
    /* the same keys give the same mask */
    float *first = (float *)malloc(8000 * sizeof(float));
    memcpy(first, y, 8000 * sizeof(float));
    cnn__forward(m, in, 2);
    CHECK(!memcmp(first, m->nodes[m->output]->out, 8000 * sizeof(float)), "same seed, epoch and sample gave another mask");
    /* backward passes the gradient through the same mask */
    memset(m->nodes[m->output]->dout, 0, 8000 * sizeof(float));
    for (int i = 0; i < 8000; i++) m->nodes[m->output]->dout[i] = 1.0f;
    float *dx = (float *)calloc(8000, sizeof(float));
    m->dx_in = dx;
    cnn__backward(m, 2, 0);
    m->dx_in = NULL;
    m->training = 0;
    int mismatch = 0;
    for (int i = 0; i < 8000; i++) mismatch += (first[i] == 0) != (dx[i] == 0) || (dx[i] != 0 && fabsf(dx[i] - 1 / 0.75f) > 1e-6f);
    CHECK(mismatch == 0, "%d gradients do not follow the mask", mismatch);
    CHECK(cnn_predict(m, in, 2, 2, out) == CNN_OK && !memcmp(out, in, 8000 * sizeof(float)), "inference must be the identity");
    free(in); free(out); free(first); free(dx);
    cnn_model_free(m);
}

static cnn_model *tutorial(int classes) {
    cnn_model *m = cnn_model_new();
    cnn_node *x = tutorial_layers(m, 32, 32, 3, classes, 0.2f);
    cnn_model_set_output(m, x);
    return m;
}

static void test_summary(void) {
    test_begin("summary: shapes and the tutorial's parameter totals");
    cnn_model *m = tutorial(10);
    FILE *f = tmpfile();
    CHECK(cnn_summary(m, f) == CNN_OK, "%s", cnn_last_error());
    char text[8192] = {0};
    rewind(f);
    size_t len = fread(text, 1, sizeof text - 1, f);
    text[len] = 0;
    fclose(f);
    /* counted by hand from the layer sizes: conv 3*3*3*64+64, BN 4*64, conv
       3*3*64*32+32, BN 4*32, dense 1152*512+512, 512*256+256, 256*10+10 */
    long conv1 = 3 * 3 * 3 * 64 + 64, conv2 = 3 * 3 * 64 * 32 + 32, fc1 = 1152L * 512 + 512, fc2 = 512L * 256 + 256, sm = 256 * 10 + 10;
    long frozen = 2 * 64 + 2 * 32, total = conv1 + 4 * 64 + conv2 + 4 * 32 + fc1 + fc2 + sm;
    char want[128];
    snprintf(want, sizeof want, "Total params: %ld", total);
    CHECK(strstr(text, want) != NULL, "no '%s' in the summary", want);
    snprintf(want, sizeof want, "Trainable params: %ld", total - frozen);
    CHECK(strstr(text, want) != NULL, "no '%s'", want);
    snprintf(want, sizeof want, "Non-trainable params: %ld", frozen);
    CHECK(strstr(text, want) != NULL, "no '%s'", want);
    CHECK(strstr(text, "(None, 30, 30, 64)") && strstr(text, "(None, 15, 15, 64)") && strstr(text, "(None, 13, 13, 32)") &&
              strstr(text, "(None, 6, 6, 32)") && strstr(text, "(None, 1152)"),
          "output shapes missing");
    CHECK(cnn_model_param_count(m) == (size_t)total, "param count %zu, want %ld", cnn_model_param_count(m), total);
    snprintf(want, sizeof want, "CPU kernels: %s\n", cnn_kernels());
    CHECK(strstr(text, want) != NULL, "the summary does not name the kernel path: no '%s'", want);
    cnn_model_free(m);
}

static void test_progress_bar(void) {
    test_begin("progress bar: Keras' layout while running and at the end");
    FILE *f = tmpfile();
    cnn__progress(f, 32, 1563, 10.0, 0, 0, 1.0, 0.5, 1, NULL);  /* non-dynamic: nothing until the end */
    cnn__progress(f, 1563, 1563, 12.3, 1, 0, 0.81234, 0.71409, 1, " - val_loss: 0.9012 - val_accuracy: 0.6870");
    cnn__progress(f, 100, 1563, 10.0, 0, 1, 2.3, 0.1, 1, NULL); /* dynamic: redrawn with \r */
    cnn__progress(f, 20, 1563, 1.0, 0, 1, 2.3, 0.1, 0, NULL);   /* under 1/30 done: no arrow yet */
    char text[1024] = {0};
    rewind(f);
    size_t len = fread(text, 1, sizeof text - 1, f);
    text[len] = 0;
    fclose(f);
    const char *final = "1563/1563 [==============================] - 12s 8ms/step - loss: 0.8123 - accuracy: 0.7141 - val_loss: 0.9012 - val_accuracy: 0.6870\n";
    CHECK(!strncmp(text, final, strlen(final)), "final line:\n%s\nwant:\n%s", text, final);
    /* ETA = 10 s / 100 steps * 1463 steps left = 146.3 s */
    const char *running = "\r 100/1563 [>.............................] - ETA: 2:26 - loss: 2.3000 - accuracy: 0.1000";
    CHECK(strstr(text, running) != NULL, "running line:\n%s\nwant:\n%s", text + strlen(final), running);
    const char *start = "\r  20/1563 [..............................] - ETA: 1:17 - loss: 2.3000\033[K";
    CHECK(strstr(text, start) != NULL, "first line:\n%s\nwant:\n%s", text + strlen(final), start);
}

/* Five CIFAR-10 batches of 3 records each, plus batches.meta.txt */
static void test_cifar10_loader(void) {
    test_begin("CIFAR-10 binary folder: five batches, planar to NHWC, labels, meta names");
    char dir[] = "/tmp/cnn_cifar_XXXXXX";
    if (!mkdtemp(dir)) { CHECK(0, "mkdtemp"); return; }
    char path[256];
    unsigned char rec[3073];
    for (int b = 1; b <= 5; b++) {
        snprintf(path, sizeof path, "%s/data_batch_%d.bin", dir, b);
        FILE *f = fopen(path, "wb");
        for (int r = 0; r < 3; r++) {
            int idx = (b - 1) * 3 + r;
            rec[0] = (unsigned char)(idx % 10);
            for (int ch = 0; ch < 3; ch++)
                for (int p = 0; p < 1024; p++) rec[1 + ch * 1024 + p] = (unsigned char)(idx * 7 + ch * 50 + p);
            fwrite(rec, 1, sizeof rec, f);
        }
        fclose(f);
    }
    snprintf(path, sizeof path, "%s/batches.meta.txt", dir);
    FILE *f = fopen(path, "w");
    for (int k = 0; k < 10; k++) fprintf(f, "class%d\n", k);
    fclose(f);
    CHECK(cnn_is_cifar10_dir(dir), "folder not recognised");
    cnn_dataset *d = cnn_load_cifar10(dir, 1);
    CHECK(d != NULL, "%s", cnn_last_error());
    if (d) {
        CHECK(d->n == 15 && d->h == 32 && d->w == 32 && d->c == 3 && d->num_classes == 10, "shape %dx%dx%dx%d", d->n, d->h, d->w, d->c);
        int bad = 0;
        for (int i = 0; i < 15; i++) {
            bad += d->labels[i] != i % 10;
            for (int p = 0; p < 1024; p++)
                for (int ch = 0; ch < 3; ch++) bad += d->images[(size_t)i * 3072 + p * 3 + ch] != (unsigned char)(i * 7 + ch * 50 + p);
        }
        CHECK(bad == 0, "%d wrong pixels or labels", bad);
        CHECK(d->class_names && !strcmp(d->class_names[3], "class3"), "class names from batches.meta.txt");
        cnn_dataset_free(d);
    }
    d = cnn_load_cifar10(dir, 0);
    CHECK(d == NULL && strstr(cnn_last_error(), "test_batch.bin"), "a missing test batch must be named: %s", cnn_last_error());
    for (int b = 1; b <= 5; b++) { snprintf(path, sizeof path, "%s/data_batch_%d.bin", dir, b); remove(path); }
    snprintf(path, sizeof path, "%s/batches.meta.txt", dir);
    remove(path);
    rmdir(dir);
}

/* every layer kind in one branching graph */
static cnn_model *branchy(void) {
    cnn_model *m = cnn_model_new();
    cnn_model_set_seed(m, 5);
    cnn_node *in = cnn_input(m, 8, 8, 3, "input");
    cnn_node *a = cnn_conv2d(m, in, .filters = 4, .kernel_size = {3, 3}, .padding = CNN_SAME, .activation = CNN_LEAKY_RELU, .alpha = 0.2f, .name = "a");
    cnn_node *b = cnn_conv2d(m, in, .filters = 4, .kernel_size = {1, 1}, .no_bias = 1, .kernel_regularizer = {0.001f, 0.01f}, .name = "b");
    cnn_node *s = cnn_add(m, ((cnn_node *[]){a, b}), 2, .name = "sum");
    cnn_node *n = cnn_batch_norm(m, s, .momentum = 0.9f, .epsilon = 1e-2f, .name = "bn");
    cnn_node *p1 = cnn_max_pool2d(m, n, .pool_size = {2, 2}, .name = "maxp");
    cnn_node *p2 = cnn_avg_pool2d(m, n, .pool_size = {3, 3}, .strides = {2, 2}, .padding = CNN_SAME, .name = "avgp");
    cnn_node *c = cnn_concatenate(m, ((cnn_node *[]){p1, p2}), 2, .name = "cat");
    cnn_node *e = cnn_conv2d(m, c, .filters = 6, .kernel_size = {2, 2}, .strides = {2, 2}, .activation = CNN_ELU, .name = "strided");
    cnn_node *g = cnn_global_avg_pool2d(m, e, .name = "gap");
    cnn_node *t = cnn_activation(m, g, .activation = CNN_TANH, .name = "tanh");
    cnn_node *d = cnn_dropout(m, t, .rate = 0.1f, .name = "drop");
    cnn_node *o = cnn_dense(m, d, .units = 3, .activation = CNN_SOFTMAX, .name = "out");
    cnn_model_set_output(m, o);
    cnn_compile(m, .optimizer = cnn_adam(.learning_rate = 0.01f), .loss = CNN_SPARSE_CATEGORICAL_CROSSENTROPY, .metrics = CNN_ACCURACY);
    return m;
}

static void test_save_load_roundtrip(void) {
    test_begin("save/load: every layer kind, preprocessing, frozen layers, optimizer state");
    cnn_model *m = branchy();
    const float mean[3] = {0.1f, 0.2f, 0.3f}, sd[3] = {1.5f, 2.0f, 0.5f};
    const char *names[3] = {"red", "green", "blue"};
    CHECK(cnn_model_set_featurewise(m, mean, sd, 3) == CNN_OK, "%s", cnn_last_error());
    cnn_model_set_rescale(m, 1.0f / 255);
    cnn_model_set_class_names(m, names, 3);
    cnn_set_trainable(m, "b", 0);
    float x[6 * 192], y[6];
    unsigned s = 3;
    for (int i = 0; i < 6 * 192; i++) x[i] = frand(&s);
    for (int i = 0; i < 6; i++) y[i] = (float)(i % 3);
    for (int k = 0; k < 3; k++) cnn_train_on_batch(m, x, y, 6, 1, NULL, NULL);
    const char *path = "/tmp/cnn_test_core_roundtrip.cnn";
    CHECK(cnn_save(m, path) == CNN_OK, "%s", cnn_last_error());
    cnn_model *l = cnn_load(path);
    CHECK(l != NULL, "%s", cnn_last_error());
    if (!l) { cnn_model_free(m); return; }
    CHECK(l->n_nodes == m->n_nodes && l->n_params == m->n_params, "graph differs");
    CHECK(!memcmp(l->params, m->params, m->n_params * sizeof(float)) && !memcmp(l->state, m->state, m->n_state * sizeof(float)), "weights differ");
    CHECK(!memcmp(l->slot1, m->slot1, m->n_params * sizeof(float)) && !memcmp(l->slot2, m->slot2, m->n_params * sizeof(float)) && l->step == m->step, "optimizer state differs");
    CHECK(l->mean && l->std && !memcmp(l->mean, mean, sizeof mean) && !memcmp(l->std, sd, sizeof sd) && l->rescale == m->rescale, "preprocessing differs");
    CHECK(!cnn__find(l, "b")->trainable && cnn__find(l, "a")->trainable, "trainable flags differ");
    CHECK(cnn_model_num_class_names(l) == 3 && !strcmp(cnn_model_class_name(l, 2), "blue"), "class names differ");
    unsigned char img[2 * 192];
    for (int i = 0; i < 2 * 192; i++) img[i] = (unsigned char)(i * 13);
    float p1[6], p2[6];
    cnn_predict_images(m, img, 2, 2, p1);
    cnn_predict_images(l, img, 2, 2, p2);
    CHECK(!memcmp(p1, p2, sizeof p1), "predictions differ");
    /* training on from the file is training on from memory */
    for (int k = 0; k < 2; k++) {
        cnn_train_on_batch(m, x, y, 6, 1, NULL, NULL);
        cnn_train_on_batch(l, x, y, 6, 1, NULL, NULL);
    }
    CHECK(!memcmp(l->params, m->params, m->n_params * sizeof(float)), "continued training diverges after load");
    remove(path);
    cnn_model_free(l);
    cnn_model_free(m);
}

static void test_split_off(void) {
    test_begin("cnn_dataset_split_off: Keras' split point, no copy of the kept part, bad input");
    cnn_dataset *d = cnn_dataset_new(50, 2, 2, 1, 5), *tail = NULL, *a = NULL, *b = NULL;
    for (int i = 0; i < 50; i++) { d->labels[i] = i % 5; for (int p = 0; p < 4; p++) d->images[i * 4 + p] = (unsigned char)i; }
    CHECK(cnn_dataset_split(d, 0.1f, &a, &b) == CNN_OK, "%s", cnn_last_error());
    CHECK(cnn_dataset_split_off(d, 0.1f, &tail) == CNN_OK, "%s", cnn_last_error());
    CHECK(d->n == 45 && tail && tail->n == 5 && a->n == 45 && b->n == 5, "sizes %d + %d", d->n, tail ? tail->n : -1);
    CHECK(tail && tail->images[0] == 45 && tail->labels[4] == 49 % 5 && !memcmp(d->images, a->images, 45 * 4), "contents differ from cnn_dataset_split");
    cnn_dataset *t2 = (cnn_dataset *)1;
    CHECK(cnn_dataset_split_off(d, 1.0f, &t2) < 0 && t2 == NULL && strstr(cnn_last_error(), "fraction"), "fraction 1: %s", cnn_last_error());
    CHECK(cnn_dataset_split_off(NULL, 0.1f, &t2) < 0 && strstr(cnn_last_error(), "NULL"), "NULL dataset: %s", cnn_last_error());
    CHECK(cnn_dataset_split_off(d, 0.1f, NULL) < 0 && strstr(cnn_last_error(), "NULL"), "NULL output: %s", cnn_last_error());
    CHECK(d->n == 45, "failed calls must leave the dataset alone");
    cnn_dataset_free(d); cnn_dataset_free(tail); cnn_dataset_free(a); cnn_dataset_free(b);
}

/* a source of 40 constant images that remembers the batch sizes fit asked for */
typedef struct { int pos, asked; } count_src;
static int count_reset(void *ctx, int epoch) { (void)epoch; ((count_src *)ctx)->pos = 0; return 0; }
static int count_next(void *ctx, int max_count, float *x, float *y) {
    count_src *c = (count_src *)ctx;
    c->asked = max_count;
    int n = 40 - c->pos < max_count ? 40 - c->pos : max_count;
    for (int i = 0; i < n * 18; i++) x[i] = 0.5f;
    for (int i = 0; i < n * 3; i++) y[i] = 0.1f;
    c->pos += n;
    return n;
}

static void test_source_batch_size(void) {
    test_begin("fit takes a batch source's own batch size when none is given");
    cnn_model *m = tiny_dense(cnn_adam());
    count_src c = {0, 0};
    cnn_batch_source src;
    memset(&src, 0, sizeof src);
    src.ctx = &c; src.samples = 40; src.h = 3; src.w = 3; src.c = 2; src.y_width = 3;
    src.reset = count_reset; src.next = count_next; src.batch_size = 16;
    cnn_history *h = cnn_fit_source(m, &src, .epochs = 1);
    CHECK(h && c.asked == 16, "fit asked for batches of %d, want 16: %s", c.asked, h ? "" : cnn_last_error());
    cnn_history_free(h);
    h = cnn_fit_source(m, &src, .epochs = 1, .batch_size = 8);
    CHECK(h && c.asked == 8, "an explicit batch_size wins: asked %d", c.asked);
    cnn_history_free(h);
    cnn_model_free(m);
}

static void test_profile(void) {
    test_begin("profiling: counts calls and work per layer; bad input is refused");
    cnn_model *m = tiny_dense(cnn_adam());
    float x[4 * 18] = {0}, y[4 * 3] = {0};
    CHECK(cnn_set_profiling(m, 1) == CNN_OK, "%s", cnn_last_error());
    cnn_train_on_batch(m, x, y, 4, 3, NULL, NULL);
    cnn_train_on_batch(m, x, y, 4, 3, NULL, NULL);
    cnn_layer_profile p;
    int n = cnn_model_num_layers(m);
    CHECK(n == 3, "%d layers, want 3", n);
    CHECK(cnn_get_profile(m, 2, &p) == CNN_OK && !strcmp(p.name, "dense") && !strcmp(p.type, "Dense"), "layer 2: %s", cnn_last_error());
    CHECK(p.forward_calls == 2 && p.backward_calls == 2, "calls %lld / %lld", p.forward_calls, p.backward_calls);
    CHECK(p.forward_flop == 2 * 2.0 * 4 * 18 * 3, "forward flop %g, want %g", p.forward_flop, 2 * 2.0 * 4 * 18 * 3);
    CHECK(cnn_get_profile(m, 3, &p) < 0 && strstr(cnn_last_error(), "layer 3"), "past the end: %s", cnn_last_error());
    CHECK(cnn_get_profile(m, 0, NULL) < 0 && strstr(cnn_last_error(), "NULL"), "NULL result: %s", cnn_last_error());
    CHECK(cnn_get_profile(NULL, 0, &p) < 0 && cnn_set_profiling(NULL, 1) < 0 && cnn_model_num_layers(NULL) < 0, "NULL model accepted");
    cnn_model *unbuilt = cnn_model_new();
    CHECK(cnn_set_profiling(unbuilt, 1) < 0 && strstr(cnn_last_error(), "output"), "unbuilt model: %s", cnn_last_error());
    cnn_model_free(unbuilt);
    CHECK(cnn_set_profiling(m, 0) == CNN_OK, "switching off");
    cnn_train_on_batch(m, x, y, 4, 3, NULL, NULL);
    cnn_get_profile(m, 2, &p);
    CHECK(p.forward_calls == 2, "counting went on after switching off");
    CHECK(cnn_wall_time() > 0, "cnn_wall_time");
    cnn_model_free(m);
}

/* conv -> BN -> max pool -> dense; with `linear_between` an identity Activation
   sits between BN and the pool, which keeps cnn.h from fusing them. Pools:
   0 overlapping windows (BN fused into the pool), 1 windows tiling the conv
   output and 2 windows leaving its last row and column out (in both, the conv
   also makes BN's input gradient as it goes, in batch mode). */
static cnn_model *bn_pool_model(int linear_between, int pool, cnn_activation_type act) {
    cnn_model *m = cnn_model_new();
    cnn_model_set_seed(m, 9);
    cnn_node *x = cnn_input(m, pool == 2 ? 6 : 7, 7, 2, "input");
    x = cnn_conv2d(m, x, .filters = 3, .kernel_size = {2, 2}, .activation = act, .name = "conv");
    x = cnn_batch_norm(m, x, .name = "bn");
    if (linear_between) x = cnn_activation(m, x, .activation = CNN_LINEAR, .name = "id");
    if (pool == 0) x = cnn_max_pool2d(m, x, .pool_size = {2, 2}, .strides = {1, 2}, .name = "pool");
    else x = cnn_max_pool2d(m, x, .pool_size = {2, 2}, .name = "pool");
    x = cnn_flatten(m, x, .name = "flat");
    x = cnn_dense(m, x, .units = 4, .activation = CNN_SOFTMAX, .name = "out");
    cnn_model_set_output(m, x);
    /* plain SGD: Adam would magnify rounding-level differences of tiny gradients */
    cnn_compile(m, .loss = CNN_CATEGORICAL_CROSSENTROPY, .optimizer = cnn_sgd(.learning_rate = 0.1f));
    return m;
}

static void test_bn_pool_fusion(void) {
    test_begin("BatchNorm fused into max pooling (and its gradient into the conv): same as unfused");
    enum { NB = 5, IN = 7 * 7 * 2 };
    float x[NB * IN], y[NB * 4] = {0}, p1[NB * 4], p2[NB * 4], dx1[NB * IN], dx2[NB * IN];
    unsigned s = 21;
    for (int i = 0; i < NB * IN; i++) x[i] = frand(&s);
    for (int b = 0; b < NB; b++) y[b * 4 + b % 4] = 1;
    static const char *frozen_name[] = {"trainable", "BN frozen", "conv frozen"};
    for (int pool = 0; pool < 3; pool++)
        for (int relu = 0; relu < 2; relu++)
            for (int frozen = 0; frozen < 3; frozen++) {
                cnn_activation_type act = relu ? CNN_RELU : CNN_LINEAR;
                cnn_model *a = bn_pool_model(0, pool, act), *b = bn_pool_model(1, pool, act);
                const int in = (pool == 2 ? 6 : 7) * 7 * 2;
                char what[96];
                snprintf(what, sizeof what, "pool %d, %s conv, %s", pool, relu ? "ReLU" : "linear", frozen_name[frozen]);
                CHECK(cnn__find(a, "bn")->fuse.pool && !cnn__find(b, "bn")->fuse.pool, "%s: BN fusion not decided as expected", what);
                CHECK(!cnn__find(a, "conv")->fuse.bn_input_grad == (pool == 0) && !cnn__find(b, "conv")->fuse.bn_input_grad,
                      "%s: conv gradient fusion not decided as expected", what);
                if (frozen) {
                    cnn_set_trainable(a, frozen == 1 ? "bn" : "conv", 0);
                    cnn_set_trainable(b, frozen == 1 ? "bn" : "conv", 0);
                }
                float loss1, loss2;
                size_t n;
                /* with the input gradient (dz kept for it), then without (as in training) */
                cnn_input_gradient(a, x, y, NB, 4, dx1, &loss1);
                cnn_input_gradient(b, x, y, NB, 4, dx2, &loss2);
                float *g1 = cnn_model_grads(a, &n), *g2 = cnn_model_grads(b, NULL);
                CHECK(fabsf(loss1 - loss2) <= 1e-6f * fabsf(loss2), "%s: loss %g vs %g", what, loss1, loss2);
                CHECK(test_rel_err(dx1, dx2, NB * in) < 1e-5, "%s: input gradient differs by %g", what, test_rel_err(dx1, dx2, NB * in));
                CHECK(test_rel_err(g1, g2, n) < 1e-5, "%s: parameter gradients differ by %g", what, test_rel_err(g1, g2, n));
                CHECK(cnn_train_on_batch(a, x, y, NB, 4, &loss1, NULL) == CNN_OK && cnn_train_on_batch(b, x, y, NB, 4, &loss2, NULL) == CNN_OK,
                      "%s: train_on_batch: %s", what, cnn_last_error());
                CHECK(test_rel_err(g1, g2, n) < 1e-5, "%s: training gradients differ by %g", what, test_rel_err(g1, g2, n));
                cnn_predict(a, x, NB, NB, p1);
                cnn_predict(b, x, NB, NB, p2);
                CHECK(test_rel_err(p1, p2, NB * 4) < 1e-6, "%s: predictions differ", what);
                cnn_model_free(a);
                cnn_model_free(b);
            }
}

/* The tutorial's blocks, big enough that the conv layers run in parallel, take
   BatchNorm's batch sums in their GEMM, and (64 filters on 32x32) make dz in
   more than one stack slice per chunk of rows; `apart` puts identity layers
   between conv, BN and pool, which keeps cnn.h from fusing any of them. The
   second conv's weight gradient reads its 64-channel input directly; `variant`
   1 pads it (zeros outside the image), 2 also strides it and gives it 40
   filters (a full register tile and a narrower one), 3 pads the first conv and
   gives it 24 filters; 4 and 5 pool other windows than 2x2: 4 with 3x4 and
   2x3 windows that leave rows and columns out, 5 with one 16x16 window (256
   cells, the most whose argmax cells fit in a byte) and a 'same' second conv
   pooled 1x1 */
enum { TB_BATCH = 8, TB_IN = 32 * 32 * 3, TB_PARAMS = 30000 };
static cnn_model *two_block_model(int apart, int variant) {
    cnn_model *m = cnn_model_new();
    cnn_model_set_seed(m, 5);
    cnn_node *x = cnn_input(m, 32, 32, 3, "input");
    for (int i = 0; i < 2; i++) {
        /* variants: 0 as the tutorial; 1 the second conv padded; 2 also strided, 40 filters;
           3 the first conv padded with 24 filters (not a multiple of the 16-lane blocks) */
        x = cnn_conv2d(m, x, .filters = i ? (variant == 2 ? 40 : 8) : (variant == 3 ? 24 : 64), .kernel_size = {3, 3},
                       .activation = CNN_RELU,
                       .padding = (i && variant && variant < 3) || (!i && variant == 3) || (i && variant == 5) ? CNN_SAME : CNN_VALID,
                       .strides = {i && variant == 2 ? 2 : 1, i && variant == 2 ? 2 : 1});
        if (apart) x = cnn_activation(m, x, .activation = CNN_LINEAR);
        x = cnn_batch_norm(m, x);
        if (apart) x = cnn_activation(m, x, .activation = CNN_LINEAR);
        static const int pools[6][2][2] = {{{2, 2}, {2, 2}}, {{2, 2}, {2, 2}}, {{2, 2}, {2, 2}},
                                           {{2, 2}, {2, 2}}, {{3, 4}, {2, 3}}, {{16, 16}, {1, 1}}};
        x = cnn_max_pool2d(m, x, .pool_size = {pools[variant][i][0], pools[variant][i][1]});
    }
    x = cnn_flatten(m, x);
    x = cnn_dense(m, x, .units = 4, .activation = CNN_SOFTMAX);
    cnn_model_set_output(m, x);
    cnn_compile(m, .loss = CNN_CATEGORICAL_CROSSENTROPY);
    return m;
}

static void test_thread_count_gradients(void) {
    test_begin("gradients (with and without the input's) are bit-identical for 1, 2 and 3 threads");
    static float x[TB_BATCH * TB_IN], y[TB_BATCH * 4], dx[3][TB_BATCH * TB_IN], g[3][TB_PARAMS], gt[3][TB_PARAMS];
    unsigned s = 3;
    for (int i = 0; i < TB_BATCH * TB_IN; i++) x[i] = frand(&s);
    for (int b = 0; b < TB_BATCH; b++) y[b * 4 + b % 4] = 1;
    size_t n = 0;
    for (int variant = 0; variant <= 5; variant++) {
        for (int t = 0; t < 3; t++) {
            cnn_set_num_threads(t + 1);
            cnn_model *m = two_block_model(0, variant);
            float loss;
            CHECK(cnn_input_gradient(m, x, y, TB_BATCH, 4, dx[t], &loss) == CNN_OK, "%s", cnn_last_error());
            const float *gr = cnn_model_grads(m, &n);
            CHECK(n <= TB_PARAMS, "%zu parameters", n);
            if (n > TB_PARAMS) n = TB_PARAMS;
            memcpy(g[t], gr, n * sizeof(float));
            /* a training step: the first conv makes no input gradient then */
            CHECK(cnn_train_on_batch(m, x, y, TB_BATCH, 4, &loss, NULL) == CNN_OK, "%s", cnn_last_error());
            memcpy(gt[t], cnn_model_grads(m, NULL), n * sizeof(float));
            cnn_model_free(m);
        }
        cnn_set_num_threads(1);
        for (int t = 1; t < 3; t++) {
            CHECK(!memcmp(dx[0], dx[t], sizeof dx[0]), "input gradient with %d threads differs from 1 thread", t + 1);
            CHECK(!memcmp(g[0], g[t], n * sizeof(float)), "parameter gradients with %d threads differ from 1 thread", t + 1);
            CHECK(!memcmp(gt[0], gt[t], n * sizeof(float)), "training gradients with %d threads differ from 1 thread", t + 1);
        }
    }
}

static void test_block_fusion(void) {
    test_begin("conv -> BN -> pool blocks fused (BN sums in the conv, gradients in the conv) match unfused");
    static float x[TB_BATCH * TB_IN], y[TB_BATCH * 4], dx[2][TB_BATCH * TB_IN], p[2][TB_BATCH * 4];
    cnn_set_num_threads(2);
    /* offset 1000: BatchNorm's E[x^2] - E[x]^2 must not lose the variance; run 2:
       an outlier 1000 times the rest in the first window of each of the conv's
       runs of rows (the conv sums its statistics about the first row of each
       tile: an outlier there must not cost the variance);
       the last runs take the other variants of two_block_model */
    for (int run = 0; run < 8; run++) {
        const int offset = run == 1 ? 1000 : 0, variant = run < 3 ? 0 : run - 2;
        unsigned s = 4;
        for (int i = 0; i < TB_BATCH * TB_IN; i++) x[i] = frand(&s) + (float)offset;
        for (int ch = 0; run == 2 && ch < CNN__CHUNKS; ch++) { /* an outlier at the centre of the first */
            const int r0 = TB_BATCH * 900 * ch / CNN__CHUNKS;        /* window of each run of rows */
            const int b = r0 / 900, oy = r0 % 900 / 30, ox = r0 % 30;
            for (int c = 0; c < 3; c++) x[b * TB_IN + ((oy + 1) * 32 + ox + 1) * 3 + c] = 1000.0f;
        }
        for (int b = 0; b < TB_BATCH; b++) y[b * 4 + (b * 3) % 4] = 1;
        cnn_model *m[2] = {two_block_model(0, variant), two_block_model(1, variant)};
        CHECK(cnn__find(m[0], "conv2d")->fuse.bn && cnn__find(m[0], "conv2d")->fuse.bn_input_grad && !cnn__find(m[1], "conv2d")->fuse.bn,
              "fusion not decided as expected");
        float loss[2];
        for (int k = 0; k < 2; k++) cnn_input_gradient(m[k], x, y, TB_BATCH, 4, dx[k], &loss[k]);
        const cnn_node *bn[2] = {cnn__find(m[0], "batch_normalization"), cnn__find(m[1], "batch_normalization")};
        const double estat = test_rel_err(bn[0]->stat, bn[1]->stat, 2 * (size_t)bn[0]->c); /* batch mean, inverse std */
        CHECK(estat < 1e-6, "offset %d: batch statistics differ by %g", offset, estat);
        size_t n0, n1;
        float *g0 = cnn_model_grads(m[0], &n0), *g1 = cnn_model_grads(m[1], &n1);
        const double edx = test_rel_err(dx[0], dx[1], TB_BATCH * TB_IN), eg = n0 == n1 ? test_rel_err(g0, g1, n0) : 1;
        static const char *what[] = {"", ", second conv padded", ", second conv padded and strided", ", first conv padded, 24 filters",
                                     ", 3x4 and 2x3 pools", ", a 16x16 pool"};
        printf("# offset %d%s%s: statistics rel. err %.2g, loss %.7g vs %.7g, input gradient %.2g, parameter gradients %.2g\n",
               offset, run == 2 ? ", outlier pixels" : "", what[variant], estat, loss[0], loss[1], edx, eg);
        if (offset) { /* past the statistics, inputs of 1000 +- 1 leave float only 4 digits: */
            for (int k = 0; k < 2; k++) cnn_model_free(m[k]); /* nothing more to compare closely */
            continue;
        }
        CHECK(n0 == n1 && fabsf(loss[0] - loss[1]) <= 1e-6f * fabsf(loss[1]), "loss %g vs %g", loss[0], loss[1]);
        CHECK(edx < 1e-5, "input gradient differs by %g", edx);
        CHECK(eg < 1e-5, "parameter gradients differ by %g", eg);
        for (int k = 0; k < 2; k++) {
            cnn_train_on_batch(m[k], x, y, TB_BATCH, 4, &loss[k], NULL);
            cnn_predict(m[k], x, TB_BATCH, TB_BATCH, p[k]);
            cnn_model_free(m[k]);
        }
        CHECK(test_rel_err(p[0], p[1], TB_BATCH * 4) < 1e-3, "predictions after an Adam step differ by %g", test_rel_err(p[0], p[1], TB_BATCH * 4));
    }
    cnn_set_num_threads(1);
}

/* Predictions do not depend on the batch size: a batch of one takes the GEMM's
   column-panel path and a whole im2col, a batch of 8 the row path, im2col runs
   and tiles that read the input directly; all sum in the same order. */
static void test_predict_batch_invariance(void) {
    test_begin("predictions of a batch equal those of its images one at a time, bit for bit");
    static float x[TB_BATCH * TB_IN], p[TB_BATCH * 4], p1[TB_BATCH * 4];
    unsigned s = 6;
    for (int i = 0; i < TB_BATCH * TB_IN; i++) x[i] = frand(&s);
    cnn_set_num_threads(2);
    for (int variant = 0; variant <= 5; variant++) {
        cnn_model *m = two_block_model(0, variant);
        CHECK(cnn_predict(m, x, TB_BATCH, TB_BATCH, p) == CNN_OK, "%s", cnn_last_error());
        for (int b = 0; b < TB_BATCH; b++)
            CHECK(cnn_predict(m, x + (size_t)b * TB_IN, 1, 1, p1 + b * 4) == CNN_OK, "%s", cnn_last_error());
        CHECK(memcmp(p, p1, sizeof p) == 0, "variant %d: batch and one-by-one predictions differ", variant);
        cnn_model_free(m);
    }
    cnn_set_num_threads(1);
}

/* The thread tuner's decisions on made-up step times (cnn__tune_begin/_end with
   the step's start moved back by the time it is to have taken): a step takes
   on_two seconds a sample on 2 threads, on_one on 1. Returns the team used. */
#ifdef _OPENMP
static int tuner_step(cnn__thread_tuner *t, double on_two, double on_one) {
    enum { B = 32 };
    cnn__tune_begin(t);
    const int team = cnn_get_num_threads();
    t->t0 = cnn_wall_time() - (team == 2 ? on_two : on_one) * B;
    cnn__tune_end(t, B);
    return team;
}
#endif
static void test_thread_tuner(void) {
    test_begin("thread tuner: all threads when they are faster, one when a busy core slows them, again later");
#ifdef _OPENMP
    const char *env = getenv("OMP_NUM_THREADS");
    if (env && *env) { printf("# skipped: OMP_NUM_THREADS pins the threads\n"); return; }
    cnn_set_num_threads(0); /* all cores, tuned */
    omp_set_num_threads(2); /* as on a 2-core machine */
    cnn__thread_tuner idle = {0}, busy = {0}, even = {0}, pinned = {0};
    int ones = 0, twos = 0;
    for (int n = 0; n < 40; n++) ones += tuner_step(&idle, 1e-4, 2e-4) == 1; /* 2 threads twice as fast */
    CHECK(idle.trying < 0 && idle.cand[idle.best] == 2, "idle: settled on %d threads", idle.cand[idle.best]);
    CHECK(idle.hold == CNN__TUNE_HOLD_LAST, "idle: a clear choice holds %d steps, not %d", CNN__TUNE_HOLD_LAST,
          idle.hold);
    CHECK(ones <= CNN__TUNE_SETTLE + 1, "idle: %d of 40 steps on one thread (dropped after one timed step)", ones);
    for (int n = 0; n < 200; n++) twos += tuner_step(&busy, 1e-3, 1e-4) == 2; /* 2 threads ten times slower */
    CHECK(busy.cand[busy.best] == 1, "busy: settled on %d threads", busy.cand[busy.best]);
    /* the first trial starts on all threads with no bar to drop them: the first step (untimed), then
       CNN__TUNE_SECONDS of timed steps (32 ms each here) */
    CHECK(twos <= 3, "busy: %d of 200 steps on both threads", twos);
    for (int n = 0; n < CNN__TUNE_HOLD_LAST + 40; n++) tuner_step(&busy, 1e-4, 2e-4); /* the load ends */
    CHECK(busy.cand[busy.best] == 2, "after the load: %d threads, want 2", busy.cand[busy.best]);
    for (int n = 0; n < 40; n++) tuner_step(&even, 1e-4, 1e-4);
    CHECK(even.cand[even.best] == 1, "equal speeds: %d threads, want the fewer (1)", even.cand[even.best]);
    CHECK(even.hold == CNN__TUNE_HOLD_FIRST, "equal speeds: an unclear choice is tried again soon (hold %d)",
          even.hold);
    cnn_set_num_threads(2);
    for (int n = 0; n < 20; n++) CHECK(tuner_step(&pinned, 1e-3, 1e-4) == 2, "pinned: the count moved");
#else
    printf("# skipped: built without OpenMP\n");
#endif
    cnn_set_num_threads(1);
}

/* The path's register tiles against the plain loops (cnn__tile_narrow,
   cnn__tile_at_narrow) on every height the layers ask of them (mr, at_mr,
   tn_mr, and the short ones a product's last rows take), odd and even step
   counts, added to C or not: the split tiles (AVX2's 9 rows as 6 + 3, its 3
   rows in two sets of sums, its 9 x 32 window tiles as three 3 x 32) must add
   up every step, and tiles of fewer columns than the path's (padded) must
   write only theirs. */
/* the stack below the caller filled with signalling NaNs, where the frames of
   its next call will lie: a tile that computed on uninitialised stack would
   raise FE_INVALID */
static CNN__NOINLINE unsigned stack_of_nans(void) {
    volatile unsigned int junk[16384];
    for (int i = 0; i < 16384; i++) junk[i] = 0x7fa00000u;
    return junk[16383];
}

static void test_kernel_tiles(void) {
    test_begin("register tiles match the plain loops, every height and step count");
    const cnn__kernel_path *kern = cnn__kern();
    enum { KMAX = 301, LD = CNN__NR_MAX + 5, ROWS = 16 };
    static float a[KMAX * LD], b[KMAX * LD], x[KMAX * 64], c0[ROWS * LD], c[ROWS * LD], want[ROWS * LD];
    const float *win[KMAX];
    unsigned s = 11;
    for (int i = 0; i < KMAX * LD; i++) { a[i] = frand(&s); b[i] = frand(&s); }
    for (int i = 0; i < KMAX * 64; i++) x[i] = frand(&s);
    for (int i = 0; i < ROWS * LD; i++) c0[i] = frand(&s);
    for (int k = 0; k < KMAX; k++) win[k] = x + (size_t)(k * 37 % KMAX) * 64; /* scattered windows */
    const int heights[] = {1, 2, 3, 4, 5, kern->mr, kern->at_mr, kern->tn_mr};
    static const int steps[] = {0, 1, 2, 3, 63, 64, 257, 300}; /* 257 and 300: a narrow tile's blocks */
    double worst = 0;
    int cases = 0;
    /* an epilogue on narrow tiles too: bias, ReLU and BatchNorm's sums (padded, see cnn__tile_padded) */
    float bias[CNN__NR_MAX], sums[2][3][CNN__NR_MAX];
    for (int j = 0; j < CNN__NR_MAX; j++) bias[j] = frand(&s) - 0.5f;
    for (int hi = 0; hi < 8; hi++)
        for (int si = 0; si < 8; si++)
            for (int load = 0; load < 2; load++)
                for (int kind = 0; kind < 9; kind++) {
                    const int R = heights[hi], K = steps[si];
                    /* kinds 4 and 5: NN tiles of fewer columns than the path's, with an epilogue;
                       kind 6: a TN tile of 5 columns (a softmax's kernel gradient); kinds 7 and 8:
                       window tiles as wide as the path's at_nr, and 3 columns fewer */
                    const int cols = kind < 4 ? kern->nr : kind == 4 ? kern->nr - 1 : kind < 7 ? 5
                                     : kind == 7 ? kern->at_nr : kern->at_nr - 3;
                    memcpy(c, c0, sizeof c);
                    memcpy(want, c0, sizeof want);
                    if (kind == 0) { /* a TN tile: rows of A along a row of the matrix */
                        kern->tile(K, a, 1, LD, b, LD, c, LD, R, cols, load, NULL);
                        cnn__tile_narrow(K, a, 1, LD, b, LD, want, LD, R, cols, load, NULL);
                    } else if (kind == 1) { /* an NN tile: rows of A are its rows */
                        kern->tile(K, a, LD, 1, b, LD, c, LD, R, cols, load, NULL);
                        cnn__tile_narrow(K, a, LD, 1, b, LD, want, LD, R, cols, load, NULL);
                    } else if (kind == 6) {
                        stack_of_nans();
                        feclearexcept(FE_INVALID);
                        kern->tile(K, a, 1, LD, b, LD, c, LD, R, cols, load, NULL);
                        CHECK(!fetestexcept(FE_INVALID), "%d columns, %d rows, %d steps, load %d: an invalid "
                              "operation (uninitialised padding?)", cols, R, K, load);
                        cnn__tile_narrow(K, a, 1, LD, b, LD, want, LD, R, cols, load, NULL);
                    } else if (kind >= 4) {
                        if (R > kern->mr) continue;
                        for (int v = 0; v < 2; v++)
                            for (int w = 0; w < 3; w++)
                                for (int j = 0; j < CNN__NR_MAX; j++) sums[v][w][j] = w == 0 ? 0.25f : 1.0f;
                        const int opens = load; /* both ways of the statistics' group */
                        cnn__epilogue e0 = {bias, kind == 4, NULL, sums[0][0], sums[0][1], sums[0][2], opens};
                        cnn__epilogue e1 = {bias, kind == 4, NULL, sums[1][0], sums[1][1], sums[1][2], opens};
                        stack_of_nans();
                        feclearexcept(FE_INVALID);
                        kern->tile(K, a, LD, 1, b, LD, c, LD, R, cols, load, &e0);
                        CHECK(!fetestexcept(FE_INVALID), "%d columns, %d rows, %d steps, load %d: an invalid "
                              "operation (uninitialised padding?)", cols, R, K, load);
                        cnn__tile_narrow(K, a, LD, 1, b, LD, want, LD, R, cols, load, &e1);
                        double se = 0;
                        for (int w = 0; w < 3; w++)
                            for (int j = 0; j < CNN__NR_MAX; j++) {
                                const double d = fabs((double)sums[0][w][j] - sums[1][w][j]);
                                se = fmax(se, j < cols ? d / (1 + fabs((double)sums[1][w][j])) : d * 1e9);
                            }
                        CHECK(se <= 1e-5, "%d columns, %d rows, %d steps: statistics differ by %g (or a column past them written)",
                              cols, R, K, se);
                    } else if (kind == 2 || kind >= 7) { /* rows read through window pointers */
                        kern->tile_at(R, K, win, 3, b, LD, c, LD, cols, load, NULL);
                        cnn__tile_at_narrow(R, K, win, 3, b, LD, want, LD, cols, load);
                    } else { /* full tiles that also step a prefetch */
                        if (R != kern->mr && R != kern->tn_mr) continue;
                        cnn__prefetch pf = {(const char *)x, 0, sizeof x};
                        kern->tile_prefetching(R, K, a, LD, b, LD, c, LD, load, &pf);
                        cnn__tile_narrow(K, a, 1, LD, b, LD, want, LD, R, cols, load, NULL);
                    }
                    double e = 0;
                    for (int r = 0; r < ROWS; r++)
                        for (int j = 0; j < LD; j++) {
                            const double d = fabs((double)c[r * LD + j] - want[r * LD + j]);
                            e = fmax(e, r < R && j < cols ? d / (1 + fabs((double)want[r * LD + j])) : d * 1e9);
                        }
                    CHECK(e <= 1e-5, "kind %d, %d rows, %d steps, load %d: relative error %g (or a cell outside the tile written)",
                          kind, R, K, load, e);
                    worst = fmax(worst, e);
                    cases++;
                }
    printf("# %s: %d tiles, largest relative difference %.2g\n", kern->name, cases, worst);
}

/* The path's per-channel sums (BatchNorm's, in double) against the plain
   loops of their definition, exactly: a float times a float is exact in
   double and each channel is summed row after row, so every path must give
   the same bits. Channel counts on both sides of each vector width, rows from
   none on, with b (the normalised input) and without (sums of squares); the
   sums past C must stay untouched. */
static void test_channel_sums(void) {
    test_begin("per-channel sums match their definition exactly, every width");
    const cnn__kernel_path *kern = cnn__kern();
    enum { CMAX = 70, RMAX = 37 };
    static float a[RMAX * CMAX], b[RMAX * CMAX], shift[CMAX], scale[CMAX];
    unsigned s = 5;
    for (int i = 0; i < RMAX * CMAX; i++) { a[i] = 4 * frand(&s) - 1; b[i] = 100 * frand(&s); }
    for (int c = 0; c < CMAX; c++) { shift[c] = 50 * frand(&s); scale[c] = frand(&s) + 0.5f; }
    static const int widths[] = {1, 3, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 48, 64, 70};
    static const int heights[] = {0, 1, 5, 37};
    int cases = 0;
    for (int wi = 0; wi < 15; wi++)
        for (int hi = 0; hi < 4; hi++)
            for (int with_b = 0; with_b < 2; with_b++) {
                const int C = widths[wi], rows = heights[hi];
                double p[CMAX + 1], q[CMAX + 1], wp[CMAX] = {0}, wq[CMAX] = {0};
                p[C] = q[C] = -7; /* must stay */
                for (int r = 0; r < rows; r++)
                    for (int c = 0; c < C; c++) {
                        const float x = a[r * C + c];
                        const float t = with_b ? (b[r * C + c] - shift[c]) * scale[c] : x;
                        wp[c] += x;
                        wq[c] += (double)x * t;
                    }
                kern->channel_sums(a, with_b ? b : NULL, with_b ? shift : NULL, with_b ? scale : NULL,
                                   (size_t)rows, C, p, q);
                int bad = p[C] != -7 || q[C] != -7;
                for (int c = 0; c < C; c++) bad |= p[c] != wp[c] || q[c] != wq[c];
                CHECK(!bad, "%d channels, %d rows, %s: sums differ from the definition (or a sum past C written)",
                      C, rows, with_b ? "with b" : "squares");
                cases++;
            }
    printf("# %s: %d cases\n", kern->name, cases);
}

int main(void) {
    const char *pinned = getenv("CNN_KERNELS"); /* tests/run.sh pins each kernel path in turn */
    test_begin("CNN_KERNELS pins the kernel path");
    CHECK(!pinned || !*pinned || !strcmp(cnn_kernels(), pinned), "CNN_KERNELS=%s, running %s", pinned, cnn_kernels());
    printf("# kernel path: %s\n", cnn_kernels());
    cnn_set_num_threads(1);
    check_optimizer("SGD (plain) follows p -= lr*g", cnn_sgd(.learning_rate = 0.1f));
    check_optimizer("SGD momentum follows Keras' velocity rule", cnn_sgd(.learning_rate = 0.1f, .momentum = 0.9f));
    check_optimizer("SGD nesterov follows Keras' rule", cnn_sgd(.learning_rate = 0.1f, .momentum = 0.9f, .nesterov = 1));
    check_optimizer("RMSprop follows its rule", cnn_rmsprop());
    check_optimizer("RMSprop with momentum", cnn_rmsprop(.momentum = 0.5f));
    test_dropout_training();
    test_summary();
    test_progress_bar();
    test_cifar10_loader();
    test_save_load_roundtrip();
    test_split_off();
    test_source_batch_size();
    test_profile();
    test_bn_pool_fusion();
    test_thread_count_gradients();
    test_thread_tuner();
    test_block_fusion();
    test_predict_batch_invariance();
    test_kernel_tiles();
    test_channel_sums();
    return test_finish();
}
