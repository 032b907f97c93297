/* backup.c - fuzz target: the payload of a BackupAndRestore file (backup.cnn),
   wrapped in a valid header and checksum so that mutations reach the parser
   (cnn__backup_take: the counts, the History, the callbacks' state, the model),
   then restored by a fit of 1 epoch of a small model with the callbacks whose
   state a backup holds. The seed is the payload of the backup such a fit wrote
   after its first epoch (make_corpus.c includes this file, with
   FUZZ_BACKUP_FIT_ONLY, to write it). */
#ifndef FUZZ_NAME
#define FUZZ_NAME "backup"
#endif
#include "fuzz.h"
#define CNN_IMPLEMENTATION
#include "cnn.h"

static cnn_model *fuzz_backup_model(void) {
    cnn_model *m = cnn_model_new();
    cnn_node *x = cnn_input(m, 4, 4, 1, "in");
    x = cnn_conv2d(m, x, .filters = 2, .kernel_size = {3, 3}, .activation = CNN_RELU, .name = "conv");
    x = cnn_batch_norm(m, x, .name = "bn");
    x = cnn_dropout(m, cnn_flatten(m, x, .name = "flat"), .rate = 0.25f, .name = "drop");
    x = cnn_dense(m, x, .units = 2, .activation = CNN_SOFTMAX, .name = "out");
    if (cnn_model_set_output(m, x) || cnn_compile(m, .loss = CNN_CATEGORICAL_CROSSENTROPY, .metrics = CNN_ACCURACY)) {
        cnn_model_free(m);
        return NULL;
    }
    return m;
}

/* fit of `epochs` with a backup in folder dir (kept) */
static cnn_history *fuzz_backup_fit(const char *dir, int epochs) {
    cnn_dataset *d = cnn_dataset_new(8, 4, 4, 1, 2);
    cnn_model *m = fuzz_backup_model();
    cnn_history *h = NULL;
    if (d && m) {
        for (int i = 0; i < 8 * 16; i++) d->images[i] = (unsigned char)(i * 29);
        for (int i = 0; i < 8; i++) d->labels[i] = i % 2;
        cnn_callback *cbs[4] = {cnn_reduce_lr_on_plateau(.monitor = "loss", .patience = 1),
                                cnn_early_stopping(.monitor = "loss", .restore_best_weights = 1, .patience = 3),
                                cnn_backup_and_restore(.backup_dir = dir, .keep_backup = 1), NULL};
        if (cbs[0] && cbs[1] && cbs[2]) h = cnn_fit(m, d, .epochs = epochs, .batch_size = 4, .callbacks = cbs);
        for (int i = 0; i < 3; i++) cnn_callback_free(cbs[i]);
    }
    cnn_model_free(m);
    cnn_dataset_free(d);
    return h;
}

#ifndef FUZZ_BACKUP_FIT_ONLY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char dir[600], path[700];
    unsigned char *file = (unsigned char *)malloc(size + 24);
    uint32_t crc;
    FUZZ_SETUP();
    if (!file) return 0;
    fuzz_path("backup", dir, sizeof dir);
    snprintf(path, sizeof path, "%s/backup.cnn", dir);
    memcpy(file, "CNNBAKUP", 8);
    file[8] = 1, file[9] = file[10] = file[11] = 0;
    for (int i = 0; i < 8; i++) file[12 + i] = (unsigned char)((uint64_t)size >> (8 * i));
    if (size) memcpy(file + 20, data, size);
    crc = cnn__crc32(file + 20, size);
    for (int i = 0; i < 4; i++) file[20 + size + i] = (unsigned char)(crc >> (8 * i));
    fuzz_write(path, file, size + 24);
    free(file);
    cnn_history_free(fuzz_backup_fit(dir, 1)); /* a restored backup has nothing left to train */
    return 0;
}
#endif
