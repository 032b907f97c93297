/* cifar10_cnn.c - the Keras CIFAR-10 tutorial, in C.

   Build (from the repository root):
     gcc -std=c99 -O3 -march=native -fopenmp -Wall -Wextra -I. examples/cifar10_cnn.c -lm \
         -o examples/cifar10_cnn

   Run:
     examples/cifar10_cnn                        # Fashion-MNIST, the offline demo
     examples/cifar10_cnn --data cifar-10-batches-bin --epochs 20 --save cifar.cnn
     examples/cifar10_cnn --data /tmp/cifar10/train --plot curves.png --history log.csv
     examples/cifar10_cnn --data /tmp/cifar10/train --augment     # the tutorial's generator
     examples/cifar10_cnn --tensorboard logs && tensorboard --logdir logs   # watch it train
     examples/cifar10_cnn --data cifar10.npz     # NumPy arrays: x_train, y_train (x_test, y_test)

   The lesson, top to bottom:
     1. read the options            (what a Python script gets from argparse)
     2. load the images             (uint8 pixels and integer labels)
     3. shuffle, limit, split off validation data
     4. build_network()             (the tutorial's model, layer by layer)
     5. fit, with callbacks: CSVLogger, BackupAndRestore (--backup), TensorBoard
        (--tensorboard), a LambdaCallback
        (with --augment: fit on the tutorial's ImageDataGenerator, batches made on a
        worker thread while the model trains)
     6. report: best validation accuracy, speed; save the model and the plot */

/* One file of a program defines the implementation macros before including
   the headers; the headers then carry the code, not just the declarations. */
#define CNN_IMPLEMENTATION
#define CNN_AUGMENT_IMPLEMENTATION
#define CNN_AUGMENT_STB_IMPLEMENTATION /* compile stb_image & co. in here too */
#include "cnn.h"
#include "cnn_augment.h"

#include "common.h" /* option parsing and one-line errors */
#include "device.h" /* --device: the CPU, or OpenCL devices when built with them */

static const char *usage =
    "usage: cifar10_cnn [options]\n"
    "Train the Keras CIFAR-10 tutorial network.\n"
    "\n"
    "  --data DIR        CIFAR-10 binary folder, or an image folder with one\n"
    "                    subfolder per class (default: Fashion-MNIST from\n"
    "                    /usr/share/datasets/fashion-mnist), or a NumPy .npz\n"
    "                    file (np.savez) with uint8 images x_train [n][h][w][c]\n"
    "                    and labels y_train; its x_test and y_test, when there,\n"
    "                    are the validation data (unless --val-split is given)\n"
    "  --x-key K, --y-key K  the .npz arrays to train on (default x_train, y_train)\n"
    "  --epochs N        passes over the training data (default 10)\n"
    "  --batch-size N    images per optimizer step (default 32)\n"
    "  --limit N         train on only N images (after shuffling)\n"
    "  --val-split F     fraction held out for validation (default 0.1, 0 = none)\n"
    "  --val-data DIR    validation images from another folder, no split (the\n"
    "                    test part of a CIFAR-10 or IDX folder)\n"
    "  --seed S          seed for shuffling, initialisation and dropout (default 1)\n"
    "  --threads T       CPU threads (default: all cores)\n"
    "  --save FILE       save the trained model to FILE\n"
    "  --history FILE    log loss and accuracy per epoch to a CSV file\n"
    "  --backup DIR      back the training up into DIR at each epoch's end; run the\n"
    "                    same command again after a crash and it goes on from there,\n"
    "                    ending as if never stopped (DIR is removed when training ends)\n"
    "  --tensorboard DIR write TensorBoard logs (curves, weight histograms) into\n"
    "                    DIR/train and DIR/validation: tensorboard --logdir DIR\n"
    "  --plot FILE       draw the training curves into a PNG file\n"
    "  --augment         train on randomly rotated (20 degrees), shifted (2%) and\n"
    "                    mirrored images, as the tutorial's ImageDataGenerator\n"
    "  --verbose V       0 silent, 1 progress bar, 2 one line per epoch (default 1)\n"
    DEVICE_USAGE
    "  --help            show this help\n";


/* ------------------------------------------------------------------------ */
/* The model: the tutorial's build_network                                  */
/* ------------------------------------------------------------------------ */

/* Two convolutional blocks find local patterns (edges, then textures), each
   followed by BatchNormalization (keeps activations well scaled, so training is
   faster) and 2x2 max pooling (halves the picture, keeps the strongest
   response). Two fully connected layers then combine the patterns, with
   Dropout against overfitting, and a softmax gives one probability per class.

   The seed is set before cnn_model_set_output, which draws the initial weights,
   so the same seed always starts from the same network. Returns NULL on error. */
static cnn_model *build_network(int h, int w, int c, int num_classes, uint64_t seed) {
    cnn_model *m = cnn_model_new();
    if (!m) return NULL;
    cnn_model_set_seed(m, seed);

    cnn_node *inputs = cnn_input(m, h, w, c, "input");

    /* convolutional block 1 */
    cnn_node *x = cnn_conv2d(m, inputs, .filters = 64, .kernel_size = {3, 3},
                             .padding = CNN_VALID, .activation = CNN_RELU, .name = "conv_1");
    x = cnn_batch_norm(m, x, .name = "batch_norm_1");
    x = cnn_max_pool2d(m, x, .pool_size = {2, 2}, .name = "pool_1");

    /* convolutional block 2 */
    x = cnn_conv2d(m, x, .filters = 32, .kernel_size = {3, 3},
                   .padding = CNN_VALID, .activation = CNN_RELU, .name = "conv_2");
    x = cnn_batch_norm(m, x, .name = "batch_norm_2");
    x = cnn_max_pool2d(m, x, .pool_size = {2, 2}, .name = "pool_2");

    /* from a stack of feature maps to one vector */
    x = cnn_flatten(m, x, .name = "flatten");

    /* fully connected layers; Dropout zeroes 20% of the values while training */
    x = cnn_dense(m, x, .units = 512, .activation = CNN_RELU, .name = "fc1");
    x = cnn_dropout(m, x, .rate = 0.2f, .name = "dropout1");
    x = cnn_dense(m, x, .units = 256, .activation = CNN_RELU, .name = "fc2");
    x = cnn_dropout(m, x, .rate = 0.2f, .name = "dropout2");

    /* one output per class; softmax turns them into probabilities */
    cnn_node *output = cnn_dense(m, x, .units = num_classes, .activation = CNN_SOFTMAX,
                                 .name = "softmax");

    /* A NULL node anywhere above makes every later call fail, so checking the
       last two calls is enough; cnn_last_error() names the layer at fault. */
    if (cnn_model_set_output(m, output) != CNN_OK ||
        cnn_compile(m, .optimizer = cnn_adam(), .loss = CNN_CATEGORICAL_CROSSENTROPY,
                    .metrics = CNN_ACCURACY) != CNN_OK) {
        cnn_model_free(m);
        return NULL;
    }
    return m;
}

/* ------------------------------------------------------------------------ */
/* main                                                                     */
/* ------------------------------------------------------------------------ */

/* on_epoch_end of the LambdaCallback: one more epoch trained (0 = go on) */
static int count_epoch(cnn_model *m, int epoch, const cnn_history *h, void *user) {
    (void)m, (void)epoch, (void)h;
    ++*(int *)user;
    return 0;
}

int main(int argc, char **argv) {
    prog_name = "cifar10_cnn";

    /* 1. options ---------------------------------------------------------- */
    const char *data_dir = NULL, *val_dir = NULL, *x_key = "x_train", *y_key = "y_train";
    const char *save_path = NULL, *history_path = NULL, *plot_path = NULL, *backup_dir = NULL,
               *tensorboard_dir = NULL;
    const char *device = NULL, *split = NULL;
    int epochs = 10, batch_size = 32, limit = 0, threads = 0, verbose = 1, augment = 0;
    double val_split = 0.1;
    int val_split_given = 0;
    uint64_t seed = 1;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage, stdout);
            return 0;
        } else if ((v = arg_value(argc, argv, &i, "--data"))) {
            data_dir = v;
        } else if ((v = arg_value(argc, argv, &i, "--x-key"))) {
            x_key = v;
        } else if ((v = arg_value(argc, argv, &i, "--y-key"))) {
            y_key = v;
        } else if ((v = arg_value(argc, argv, &i, "--val-data"))) {
            val_dir = v;
        } else if ((v = arg_value(argc, argv, &i, "--epochs"))) {
            epochs = (int)arg_int("--epochs", v, 1, 1000000);
        } else if ((v = arg_value(argc, argv, &i, "--batch-size"))) {
            batch_size = (int)arg_int("--batch-size", v, 1, 1 << 20);
        } else if ((v = arg_value(argc, argv, &i, "--limit"))) {
            limit = (int)arg_int("--limit", v, 1, 2147483647L);
        } else if ((v = arg_value(argc, argv, &i, "--val-split"))) {
            val_split = arg_float("--val-split", v, 0.0, 0.99);
            val_split_given = 1;
        } else if ((v = arg_value(argc, argv, &i, "--seed"))) {
            seed = arg_u64("--seed", v);
        } else if ((v = arg_value(argc, argv, &i, "--threads"))) {
            threads = (int)arg_int("--threads", v, 1, 4096);
        } else if ((v = arg_value(argc, argv, &i, "--save"))) {
            save_path = v;
        } else if ((v = arg_value(argc, argv, &i, "--history"))) {
            history_path = v;
        } else if ((v = arg_value(argc, argv, &i, "--backup"))) {
            backup_dir = v;
        } else if ((v = arg_value(argc, argv, &i, "--tensorboard"))) {
            tensorboard_dir = v;
        } else if ((v = arg_value(argc, argv, &i, "--plot"))) {
            plot_path = v;
        } else if (!strcmp(a, "--augment")) {
            augment = 1;
        } else if ((v = arg_value(argc, argv, &i, "--verbose"))) {
            verbose = (int)arg_int("--verbose", v, 0, 2);
        } else if ((v = arg_value(argc, argv, &i, "--device"))) {
            device = v;
        } else if ((v = arg_value(argc, argv, &i, "--split"))) {
            split = v;
        } else {
            fail(EXIT_USAGE, "unknown option '%s' (see --help)", a);
        }
    }
    if (val_dir && val_split_given && val_split > 0)
        fail(EXIT_USAGE, "use either --val-split or --val-data, not both");
    if (save_path) check_writable("--save", save_path);
    if (history_path) check_writable("--history", history_path);
    if (plot_path) check_writable("--plot", plot_path);
    if (threads > 0) cnn_set_num_threads(threads);

    /* 2. data --------------------------------------------------------------
       Images stay uint8 (a quarter of the memory of floats); the model turns
       them into floats batch by batch, with the rescale set below.
       A NumPy archive holds named arrays, as Keras' cifar10.load_data() returns
       them: np.savez("cifar10.npz", x_train=x_train, y_train=y_train,
       x_test=x_test, y_test=y_test). Its test part becomes the validation data. */
    cnn_dataset *all = NULL, *npz_test = NULL;
    if (data_dir && is_npz(data_dir)) {
        all = cnn_load_npz(data_dir, x_key, y_key);
        if (all && !val_dir && !val_split_given && cnn_npz_has(data_dir, "x_test") == 1) {
            npz_test = cnn_load_npz(data_dir, "x_test", "y_test");
            if (!npz_test) fail(EXIT_FAILURE, "cannot load x_test, y_test: %s", cnn_last_error());
        }
    } else {
        all = data_dir ? cnn_load_dataset(data_dir) : cnn_load_fashion_mnist(NULL, 1);
    }
    if (!all)
        fail(EXIT_FAILURE, "cannot load %s: %s", data_dir ? data_dir : "Fashion-MNIST",
             cnn_last_error());
    if (all->n < 1) fail(EXIT_FAILURE, "no images in %s", data_dir ? data_dir : "Fashion-MNIST");
    if (all->num_classes < 2)
        fail(EXIT_FAILURE, "need at least 2 classes to classify, %s has %d",
             data_dir ? data_dir : "the dataset", all->num_classes);

    /* 3. shuffle, limit, split ---------------------------------------------
       Image folders list their classes one after the other. Shuffling first
       makes the first N images (--limit) and the last fraction (the validation
       split, taken from the end as Keras does) a fair mix of all classes. */
    if (cnn_dataset_shuffle(all, seed) != CNN_OK) fail(EXIT_FAILURE, "%s", cnn_last_error());
    if (limit > 0 && limit < all->n) {
        cnn_dataset *sub = cnn_dataset_subset(all, 0, limit);
        if (!sub) fail(EXIT_FAILURE, "%s", cnn_last_error());
        cnn_dataset_free(all);
        all = sub;
    }

    cnn_dataset *train = NULL, *val = NULL;
    if (val_dir || npz_test) {
        /* the test part of a CIFAR-10 or IDX folder, or the .npz file's x_test */
        val = npz_test ? npz_test : cnn_load_dataset_part(val_dir, 0);
        if (!val) fail(EXIT_FAILURE, "cannot load %s: %s", val_dir, cnn_last_error());
        if (val->h != all->h || val->w != all->w || val->c != all->c)
            fail(EXIT_FAILURE, "validation images are %dx%dx%d but training images are %dx%dx%d",
                 val->h, val->w, val->c, all->h, all->w, all->c);
        if (val->num_classes > all->num_classes)
            fail(EXIT_FAILURE, "validation data has %d classes, training data only %d",
                 val->num_classes, all->num_classes);
        train = all;
    } else if (val_split > 0) {
        /* the last fraction moves out; the rest stays where it is (no copy) */
        if (cnn_dataset_split_off(all, (float)val_split, &val) != CNN_OK)
            fail(EXIT_FAILURE, "%s", cnn_last_error());
        train = all;
        if (train->n < 1 || val->n < 1)
            fail(EXIT_FAILURE, "%d images are too few to split off %g for validation",
                 train->n + val->n, val_split);
    } else {
        train = all;
    }
    printf("train: %d images of %dx%dx%d, %d classes; validation: %d images\n", train->n,
           train->h, train->w, train->c, train->num_classes, val ? val->n : 0);

    /* 4. the model ------------------------------------------------------- */
    cnn_model *m = build_network(train->h, train->w, train->c, train->num_classes, seed);
    if (!m) fail(EXIT_FAILURE, "cannot build the network: %s", cnn_last_error());
    /* Pixels 0..255 become 0..1 inside the model (Keras: x_train / 255). The
       factor is saved with the model, so evaluate and predict repeat it. */
    cnn_model_set_rescale(m, 1.0f / 255);
    /* The class names travel in the model file too, for predict's output. */
    if (train->class_names)
        cnn_model_set_class_names(m, (const char *const *)train->class_names, train->num_classes);
    cnn_summary(m, stdout);
    /* With --device opencl the same model trains on OpenCL devices, each batch
       split between them (Keras' multi_gpu_model); nothing else changes. */
    use_device(m, device, split);

    /* 5. training -------------------------------------------------------- */
    /* Callbacks run at the end of each epoch; the list ends with NULL. */
    cnn_callback *callbacks[5] = {NULL, NULL, NULL, NULL, NULL};
    int n_callbacks = 0, epochs_run = 0;
    if (history_path) { /* a run that resumes from a backup adds to its log */
        callbacks[n_callbacks] = cnn_csv_logger(.filename = history_path, .append = backup_dir != NULL);
        if (!callbacks[n_callbacks++]) fail(EXIT_FAILURE, "%s", cnn_last_error());
    }
    if (backup_dir) { /* Keras' BackupAndRestore: the whole training state, each epoch */
        callbacks[n_callbacks] = cnn_backup_and_restore(.backup_dir = backup_dir, .verbose = verbose > 0);
        if (!callbacks[n_callbacks++]) fail(EXIT_FAILURE, "%s", cnn_last_error());
    }
    if (tensorboard_dir) { /* Keras' TensorBoard: loss and accuracy curves of training and
                              validation, and each layer's weights as histograms every epoch */
        callbacks[n_callbacks] = cnn_tensorboard(.log_dir = tensorboard_dir, .histogram_freq = 1);
        if (!callbacks[n_callbacks++]) fail(EXIT_FAILURE, "%s", cnn_last_error());
    }
    /* a LambdaCallback counts the epochs this run trains, for the throughput (a
       resumed run's History also holds the epochs from before) */
    callbacks[n_callbacks] = cnn_lambda_callback(.on_epoch_end = count_epoch, .user = &epochs_run);
    if (!callbacks[n_callbacks++]) fail(EXIT_FAILURE, "%s", cnn_last_error());

    /* With --augment the tutorial's ImageDataGenerator makes every batch: each
       image randomly rotated by up to 20 degrees, shifted by up to 2% of its
       size, mirrored left-right half of the time (fill_mode nearest). A "flow"
       over the training images is a batch source; it makes batches on a worker
       thread while the model trains, and the same seed gives the same batches.
       The generator's rescale replaces the tutorial's x_train / 255, and fit
       records it in the model. As in the tutorial, an epoch is n / batch_size
       steps, and sampling continues across passes over the data. */
    cnn_datagen *datagen = NULL;
    cnn_flow *flow = NULL;
    int steps = 0;
    if (augment) {
        datagen = cnn_datagen_new(.rotation_range = 20, .width_shift_range = 0.02f,
                                  .height_shift_range = 0.02f, .horizontal_flip = 1,
                                  .rescale = 1.0f / 255);
        if (datagen) flow = cnn_datagen_flow(datagen, train, .batch_size = batch_size, .seed = seed);
        if (!flow) fail(EXIT_FAILURE, "cannot set up augmentation: %s", cnn_last_error());
        steps = train->n / batch_size > 0 ? train->n / batch_size : 1;
    }

    double t0 = cnn_wall_time();
    cnn_history *hist = augment
        ? cnn_fit_source(m, cnn_flow_source(flow), .batch_size = batch_size, .epochs = epochs,
                         .steps_per_epoch = steps, .validation_data = val, .verbose = verbose,
                         .callbacks = callbacks)
        : cnn_fit(m, train, .batch_size = batch_size, .epochs = epochs,
                  .validation_data = val, .verbose = verbose, .callbacks = callbacks);
    double seconds = cnn_wall_time() - t0;
    if (!hist) fail(EXIT_FAILURE, "training failed: %s", cnn_last_error());
    if (hist->interrupted) printf("training interrupted after %d epochs\n", hist->epochs);

    /* 6. report ---------------------------------------------------------- */
    const double *val_acc = cnn_history_get(hist, "val_accuracy");
    const double *acc = cnn_history_get(hist, "accuracy");
    if (val_acc && hist->epochs > 0) {
        int best = 0;
        for (int e = 1; e < hist->epochs; e++)
            if (val_acc[e] > val_acc[best]) best = e;
        printf("best val_accuracy: %.4f at epoch %d\n", val_acc[best], best + 1);
    } else if (acc && hist->epochs > 0) {
        printf("final accuracy: %.4f (no validation data)\n", acc[hist->epochs - 1]);
    }
    /* Throughput counts the training images of every epoch run over the wall
       time of the whole fit (so it includes the validation passes). */
    double images = augment ? (double)steps * batch_size * epochs_run : (double)train->n * epochs_run;
    printf("throughput: %.1f img/s\n", seconds > 0 ? images / seconds : 0.0);
    report_device(m, stdout); /* on OpenCL: where the last batch's time went */

    int status = 0;
    if (save_path) {
        if (cnn_save(m, save_path) != CNN_OK) {
            fprintf(stderr, "%s: cannot save the model: %s\n", prog_name, cnn_last_error());
            status = 1;
        } else {
            printf("model saved to %s\n", save_path);
        }
    }
    if (plot_path) {
        if (cnn_history_plot_png(hist, plot_path) != CNN_OK) {
            fprintf(stderr, "%s: cannot draw the plot: %s\n", prog_name, cnn_last_error());
            status = 1;
        } else {
            printf("training curves drawn in %s\n", plot_path);
        }
    }

    cnn_history_free(hist);
    cnn_flow_free(flow);
    cnn_datagen_free(datagen);
    for (int i = 0; i < n_callbacks; i++) cnn_callback_free(callbacks[i]);
    cnn_model_free(m);
    if (val) cnn_dataset_free(val);
    cnn_dataset_free(train);
    return status;
}
