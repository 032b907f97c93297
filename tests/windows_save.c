/* windows_save.c - saving where rename() does not replace an existing file (Windows):
   cnn_save over an existing model, then a fit whose BackupAndRestore writes its backup
   at every epoch and deletes it at the end, then a run stopped after one epoch that a
   second fit resumes. Built by tests/windows.sh with MinGW-w64 and run under wine
   (it runs anywhere: make test does not need it). */
#define CNN_IMPLEMENTATION
#include "cnn.h"
#include "test_util.h"

/* stops after epoch 1 when *user is set */
static int stop_after_first(cnn_model *m, int epoch, const cnn_history *h, void *user) {
    (void)m, (void)h;
    return *(const int *)user && epoch == 0;
}

static cnn_model *model(void) {
    cnn_model *m = cnn_model_new();
    cnn_node *x = cnn_input(m, 4, 4, 1, "in");
    x = cnn_dense(m, cnn_flatten(m, x), .units = 2, .activation = CNN_SOFTMAX, .name = "out");
    if (cnn_model_set_output(m, x) || cnn_compile(m, .loss = CNN_CATEGORICAL_CROSSENTROPY)) {
        cnn_model_free(m);
        return NULL;
    }
    return m;
}

int main(void) {
    const char *path = "windows_save_test.cnn", *dir = "windows_save_backup";
    cnn_dataset *d = cnn_dataset_new(16, 4, 4, 1, 2);
    for (int i = 0; i < 16 * 16; i++) d->images[i] = (unsigned char)(i * 37);
    for (int i = 0; i < 16; i++) d->labels[i] = i % 2;

    test_begin("cnn_save over an existing model file");
    cnn_model *m = model();
    CHECK(m && cnn_save(m, path) == CNN_OK, "first save: %s", cnn_last_error());
    CHECK(m && cnn_save(m, path) == CNN_OK, "second save over the first: %s", cnn_last_error());
    cnn_model *back = cnn_load(path);
    CHECK(back != NULL, "load: %s", cnn_last_error());
    cnn_model_free(back);
    remove(path);

    test_begin("BackupAndRestore writes over its backup each epoch, resumes, and cleans up");
    cnn_history *h[2] = {NULL, NULL};
    float w[2][34];
    for (int run = 0; run < 2; run++) { /* run 1: stopped after epoch 1, then resumed */
        for (int part = 0; part < (run ? 2 : 1); part++) {
            cnn_model *k = model();
            int stop = run && !part;
            cnn_callback *cbs[3] = {cnn_backup_and_restore(.backup_dir = dir, .keep_backup = stop),
                                    cnn_lambda_callback(.on_epoch_end = stop_after_first, .user = &stop), NULL};
            cnn_history *got = k ? cnn_fit(k, d, .epochs = 3, .batch_size = 4, .callbacks = cbs) : NULL;
            CHECK(got != NULL, "run %d part %d: %s", run, part, cnn_last_error());
            if (got && (!run || part)) {
                h[run] = got;
                got = NULL;
                cnn_get_weights(k, "out", "kernel", w[run], 32);
                cnn_get_weights(k, "out", "bias", w[run] + 32, 2);
            }
            cnn_history_free(got);
            cnn_callback_free(cbs[0]);
            cnn_callback_free(cbs[1]);
            cnn_model_free(k);
        }
    }
    cnn_model_free(m);
    CHECK(h[0] && h[1] && h[0]->epochs == 3 && h[1]->epochs == 3, "epochs");
    CHECK(!memcmp(w[0], w[1], sizeof w[0]), "the resumed run ends elsewhere");
    FILE *f = fopen("windows_save_backup/backup.cnn", "rb");
    CHECK(f == NULL, "the backup is left after training");
    if (f) fclose(f);
    cnn_history_free(h[0]);
    cnn_history_free(h[1]);
    cnn_dataset_free(d);
    return test_finish();
}
