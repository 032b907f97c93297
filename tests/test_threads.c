/* test_threads.c - two models trained at once in two threads, built with
   -fsanitize=thread (and without OpenMP, whose runtime ThreadSanitizer does not
   see) by make test: no data race, each fit's weights and History bit-identical
   to the same fit run alone, each thread's error message its own, and the
   SIGINT handler that was there before the fits there again after them. Then
   two threads saving to one path at once: every save succeeds, the file always
   loads, no temporary file is left. */
#define _POSIX_C_SOURCE 200809L
#define CNN_IMPLEMENTATION
#include "cnn.h"
#include "test_util.h"

#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>

typedef struct job {
    uint64_t seed;
    cnn_dataset *data;
    float *params; /* after the fit */
    size_t n_params;
    double loss[3];
    int ok, error_own;
} job;

static cnn_dataset *make_data(int salt) {
    cnn_dataset *d = cnn_dataset_new(48, 8, 8, 3, 3);
    if (!d) return NULL;
    for (int i = 0; i < 48 * 192; i++) d->images[i] = (unsigned char)((i * 7 + salt * 31) & 255);
    for (int i = 0; i < 48; i++) d->labels[i] = (i + salt) % 3;
    return d;
}

static void *train(void *arg) {
    job *j = (job *)arg;
    char want[64];
    cnn_model *m = cnn_model_new();
    cnn_model_set_seed(m, j->seed);
    cnn_node *x = cnn_input(m, 8, 8, 3, "in");
    x = cnn_conv2d(m, x, .filters = 8, .kernel_size = {3, 3}, .activation = CNN_RELU);
    x = cnn_max_pool2d(m, cnn_batch_norm(m, x), .pool_size = {2, 2});
    x = cnn_dropout(m, cnn_flatten(m, x), .rate = 0.25f);
    x = cnn_dense(m, x, .units = 3, .activation = CNN_SOFTMAX);
    j->ok = cnn_model_set_output(m, x) == CNN_OK &&
            cnn_compile(m, .loss = CNN_CATEGORICAL_CROSSENTROPY, .optimizer = cnn_adam()) == CNN_OK;
    cnn_history *h = j->ok ? cnn_fit(m, j->data, .epochs = 3, .batch_size = 8) : NULL;
    j->ok = j->ok && h != NULL;
    const double *loss = h ? cnn_history_get(h, "loss") : NULL;
    for (int e = 0; loss && e < 3; e++) j->loss[e] = loss[e];
    cnn_history_free(h);
    /* an error of this thread's own, read back here while the other thread makes its own */
    snprintf(want, sizeof want, "cnn_set_error from the thread of seed %llu", (unsigned long long)j->seed);
    cnn_set_error(CNN_ERR_ARG, "%s", want);
    for (int i = 0; i < 1000; i++) cnn_kernels();
    j->error_own = strcmp(cnn_last_error(), want) == 0;
    const float *p = cnn_model_params(m, &j->n_params);
    j->params = (float *)malloc(j->n_params * sizeof(float));
    if (j->params && p) memcpy(j->params, p, j->n_params * sizeof(float));
    cnn_model_free(m);
    return NULL;
}

static void before(int sig) { (void)sig; }

typedef struct saver {
    const char *path;
    int units, failed;
} saver;

static void *save_often(void *arg) {
    saver *s = (saver *)arg;
    cnn_model *m = cnn_model_new();
    cnn_node *x = cnn_input(m, 4, 4, 1, "in");
    x = cnn_dense(m, cnn_flatten(m, x), .units = s->units, .activation = CNN_SOFTMAX);
    if (cnn_model_set_output(m, x) != CNN_OK) s->failed = 100;
    for (int i = 0; i < 40 && !s->failed; i++) s->failed += cnn_save(m, s->path) != CNN_OK;
    cnn_model_free(m);
    return NULL;
}

int main(void) {
    job alone[2], together[2];
    pthread_t t[2];
    test_begin("two fits at once in two threads: each as alone, errors per thread, the SIGINT handler restored");
    signal(SIGINT, before);
    for (int k = 0; k < 2; k++) {
        memset(&alone[k], 0, sizeof alone[k]);
        alone[k].seed = 11 + (uint64_t)k;
        alone[k].data = make_data(k);
        together[k] = alone[k];
        train(&alone[k]); /* one after the other first */
    }
    for (int k = 0; k < 2; k++) CHECK(pthread_create(&t[k], NULL, train, &together[k]) == 0, "pthread_create");
    for (int k = 0; k < 2; k++) pthread_join(t[k], NULL);
    for (int k = 0; k < 2; k++) {
        CHECK(alone[k].ok && together[k].ok, "fit %d: %s", k, cnn_last_error());
        CHECK(together[k].error_own, "thread %d read another thread's error message", k);
        CHECK(alone[k].params && together[k].params && alone[k].n_params == together[k].n_params &&
                  !memcmp(alone[k].params, together[k].params, alone[k].n_params * sizeof(float)),
              "fit %d: the weights trained beside another fit differ from those trained alone", k);
        CHECK(!memcmp(alone[k].loss, together[k].loss, sizeof alone[k].loss), "fit %d: History differs", k);
        free(alone[k].params);
        free(together[k].params);
        cnn_dataset_free(alone[k].data);
    }
    {
        void (*now)(int) = signal(SIGINT, SIG_DFL);
        CHECK(now == before, "after the fits the SIGINT handler is not the one installed before them");
    }

    test_begin("two threads saving to one path at once: every save succeeds, the file loads, nothing left over");
    {
        char dir[] = "/tmp/cnn_test_threads_XXXXXX", path[64];
        CHECK(mkdtemp(dir) != NULL, "mkdtemp");
        snprintf(path, sizeof path, "%s/same.cnn", dir);
        saver sv[2] = {{path, 3, 0}, {path, 5, 0}};
        for (int k = 0; k < 2; k++) CHECK(pthread_create(&t[k], NULL, save_often, &sv[k]) == 0, "pthread_create");
        for (int k = 0; k < 2; k++) pthread_join(t[k], NULL);
        CHECK(sv[0].failed == 0 && sv[1].failed == 0, "%d and %d saves failed", sv[0].failed, sv[1].failed);
        cnn_model *back = cnn_load(path);
        CHECK(back != NULL, "the file does not load: %s", cnn_last_error());
        cnn_model_free(back);
        int left = 0;
        DIR *d = opendir(dir);
        for (struct dirent *e; d && (e = readdir(d));) left += strstr(e->d_name, ".tmp") != NULL;
        if (d) closedir(d);
        CHECK(left == 0, "%d temporary files left", left);
        remove(path);
        rmdir(dir);
    }
    return test_finish();
}
