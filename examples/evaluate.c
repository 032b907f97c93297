/* evaluate.c - how good is a trained model? Per-class scores and a confusion matrix.

   Build (from the repository root):
     gcc -std=c99 -O3 -march=native -fopenmp -Wall -Wextra -I. examples/evaluate.c -lm \
         -o examples/evaluate

   Run:
     examples/evaluate --model cifar.cnn --data cifar-10-batches-bin
     examples/evaluate --model demo.cnn --data /usr/share/datasets/fashion-mnist --batch-size 256
     examples/evaluate --model cifar.cnn --data cifar-10-batches-bin --plot confusion.png
     examples/evaluate --model cifar.cnn --data cifar10.npz     # its x_test, y_test

   The lesson:
     1. load a model saved by cifar10_cnn (weights, preprocessing, class names)
     2. load labelled images it has not seen (a test set)
     3. predict every image; the predicted class is the most probable one
     4. count, per class, how often the model was right: precision, recall, F1
        (the table scikit-learn's classification_report prints)
     5. the confusion matrix: which classes get mistaken for which (--plot:
        also as a picture, darker = more of that row's images)
     6. Keras' model.evaluate: the loss and the accuracy, as the last line */

#define CNN_IMPLEMENTATION
#define CNN_AUGMENT_IMPLEMENTATION
#define CNN_AUGMENT_STB_IMPLEMENTATION /* compile stb_image & co. in here too */
#include "cnn.h"
#include "cnn_augment.h"

#include "common.h" /* option parsing and one-line errors */
#include "device.h" /* --device: the CPU, or OpenCL devices when built with them */

static const char *usage =
    "usage: evaluate --model FILE --data DIR [--batch-size N] [--plot FILE]\n"
    "Score a trained model on labelled images: per-class precision, recall and\n"
    "F1, the confusion matrix, then the loss and accuracy.\n"
    "\n"
    "  --model FILE      a model saved by cifar10_cnn --save\n"
    "  --data DIR        CIFAR-10 binary folder (its test_batch.bin) or .bin\n"
    "                    file, an IDX folder such as Fashion-MNIST (its t10k\n"
    "                    part), an image folder with one subfolder per class, or\n"
    "                    a NumPy .npz file (np.savez) with x_test and y_test\n"
    "  --batch-size N    images per forward pass (default 32)\n"
    "  --plot FILE       also draw the confusion matrix into a PNG file\n"
    "  --device D        where the model runs: cpu (default), opencl or\n"
    "                    opencl:DEVICES (see examples/devices)\n"
    "  --help            show this help\n";

/* Print the classification report: one row per class, then the overall
   accuracy and two averages of the per-class scores.
     precision = of the images predicted as class k, the fraction that are k
     recall    = of the images that are k, the fraction predicted as k
     f1-score  = their harmonic mean, high only when both are high
     support   = how many images of class k there are
   confusion[t * k + p] counts images of true class t predicted as p. */
static void classification_report(const cnn_model *m, const cnn_dataset *d, const int *confusion,
                                  int k) {
    char buf[32];
    int width = (int)strlen("weighted avg");
    for (int c = 0; c < k; c++) {
        int len = (int)strlen(class_label(m, d, c, buf, sizeof buf));
        if (len > width) width = len;
    }

    printf("%*s ", width, "");
    printf(" %9s %9s %9s %9s\n\n", "precision", "recall", "f1-score", "support");

    double macro[3] = {0, 0, 0}, weighted[3] = {0, 0, 0};
    int rows = 0, total = 0, correct = 0;
    for (int c = 0; c < k; c++) {
        int support = 0, predicted = 0, hits = confusion[c * k + c];
        for (int j = 0; j < k; j++) {
            support += confusion[c * k + j];   /* row c: images of class c */
            predicted += confusion[j * k + c]; /* column c: predicted as c */
        }
        /* Like scikit-learn, list only classes that occur in the truth or the
           predictions, and score 0 where a ratio would divide by zero. */
        if (support == 0 && predicted == 0) continue;
        double precision = predicted ? (double)hits / predicted : 0.0;
        double recall = support ? (double)hits / support : 0.0;
        double f1 = precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0.0;
        printf("%*s  %9.4f %9.4f %9.4f %9d\n", width, class_label(m, d, c, buf, sizeof buf),
               precision, recall, f1, support);
        macro[0] += precision, macro[1] += recall, macro[2] += f1;
        weighted[0] += precision * support, weighted[1] += recall * support,
            weighted[2] += f1 * support;
        rows++, total += support, correct += hits;
    }
    if (rows == 0 || total == 0) return;

    printf("\n%*s  %9s %9s %9.4f %9d\n", width, "accuracy", "", "", (double)correct / total, total);
    /* macro: every class counts the same; weighted: each by its support */
    printf("%*s  %9.4f %9.4f %9.4f %9d\n", width, "macro avg", macro[0] / rows, macro[1] / rows,
           macro[2] / rows, total);
    printf("%*s  %9.4f %9.4f %9.4f %9d\n", width, "weighted avg", weighted[0] / total,
           weighted[1] / total, weighted[2] / total, total);
}

/* Rows are the true classes, columns the predicted ones: the diagonal holds
   the right answers, a large number elsewhere shows two classes the model
   confuses (cat and dog, shirt and T-shirt). Columns are numbered; the row
   labels say which class each number stands for. */
static void print_confusion_matrix(const cnn_model *m, const cnn_dataset *d, const int *confusion,
                                   int k) {
    char buf[32];
    int name_width = 0, max_count = 0;
    for (int c = 0; c < k; c++) {
        int len = (int)strlen(class_label(m, d, c, buf, sizeof buf));
        if (len > name_width) name_width = len;
    }
    for (int i = 0; i < k * k; i++)
        if (confusion[i] > max_count) max_count = confusion[i];
    int col = snprintf(buf, sizeof buf, "%d", max_count);
    int idx = snprintf(buf, sizeof buf, "%d", k - 1);
    if (idx > col) col = idx;
    col += 2; /* two spaces between columns */

    printf("\nconfusion matrix (rows: true class, columns: predicted class)\n");
    printf("%*s", idx + 1 + name_width, "");
    for (int p = 0; p < k; p++) printf("%*d", col, p);
    printf("\n");
    for (int t = 0; t < k; t++) {
        printf("%*d %-*s", idx, t, name_width, class_label(m, d, t, buf, sizeof buf));
        for (int p = 0; p < k; p++) printf("%*d", col, confusion[t * k + p]);
        printf("\n");
    }
}

/* The confusion matrix as a heat map: one square cell per (true, predicted)
   pair, rows the true classes (numbered and named on the left), columns the
   predicted ones (numbered on top), each cell shaded by the fraction of its
   row's images it holds, white 0 to dark blue 1, with the count written in
   it. The diagonal holds the right answers; a dark cell elsewhere is a pair
   of classes the model mixes up. Text: cnn_draw_text, the training plot's font. */
static void plot_confusion_matrix(const cnn_model *m, const cnn_dataset *d, const int *confusion, int k,
                                  const char *path) {
    enum { CELL = 34, PAD = 10, LINE = 14 };
    char buf[64];
    int name_width = 0;
    for (int c = 0; c < k; c++) { /* the widest row label, "3 cat", in pixels (6 a character) */
        char name[24];
        snprintf(buf, sizeof buf, "%d %s", c, class_label(m, d, c, name, sizeof name));
        if (6 * (int)strlen(buf) > name_width) name_width = 6 * (int)strlen(buf);
    }
    const int x0 = PAD + name_width + 6, y0 = PAD + 2 * LINE + 4; /* the grid's top-left corner */
    const char *title = "confusion matrix - rows: true class - columns: predicted class",
               *footer = "shade: the fraction of the row (white = 0  dark blue = 1)";
    int W = x0 + k * CELL + PAD, H = y0 + k * CELL + LINE + PAD;
    if (W < 2 * PAD + 6 * (int)strlen(title)) W = 2 * PAD + 6 * (int)strlen(title);
    unsigned char *px = (unsigned char *)malloc((size_t)W * H * 3);
    if (!px) fail(EXIT_FAILURE, "out of memory for the confusion matrix picture");
    memset(px, 255, (size_t)W * H * 3);
    cnn_draw_text(px, W, H, PAD, PAD, title, 1, 0, 0, 0);
    for (int c = 0; c < k; c++) {
        snprintf(buf, sizeof buf, "%d", c); /* column numbers, centred over their cells */
        cnn_draw_text(px, W, H, x0 + c * CELL + (CELL - 6 * (int)strlen(buf) + 1) / 2, y0 - LINE, buf, 1, 0, 0, 0);
        char name[24];
        snprintf(buf, sizeof buf, "%d %s", c, class_label(m, d, c, name, sizeof name));
        cnn_draw_text(px, W, H, PAD, y0 + c * CELL + (CELL - 9) / 2, buf, 1, 0, 0, 0);
    }
    for (int t = 0; t < k; t++) {
        int row = 0;
        for (int p = 0; p < k; p++) row += confusion[t * k + p];
        for (int p = 0; p < k; p++) {
            const int n = confusion[t * k + p];
            const double f = row ? (double)n / row : 0; /* 0 white .. 1 dark blue (8, 48, 107) */
            const unsigned char rgb[3] = {(unsigned char)(255 - f * 247), (unsigned char)(255 - f * 207),
                                          (unsigned char)(255 - f * 148)};
            for (int y = 1; y < CELL; y++) /* a 1-pixel white line between cells */
                for (int x = 1; x < CELL; x++)
                    memcpy(px + ((size_t)(y0 + t * CELL + y) * W + x0 + p * CELL + x) * 3, rgb, 3);
            snprintf(buf, sizeof buf, "%d", n);
            const int light = f > 0.45 ? 255 : 0, tw = 6 * (int)strlen(buf) - 1;
            if (tw <= CELL - 2)
                cnn_draw_text(px, W, H, x0 + p * CELL + (CELL - tw + 1) / 2, y0 + t * CELL + (CELL - 7) / 2, buf, 1,
                              (unsigned char)light, (unsigned char)light, (unsigned char)light);
        }
    }
    cnn_draw_text(px, W, H, PAD, y0 + k * CELL + 4, footer, 1, 90, 90, 90);
    if (cnn_write_png(path, W, H, 3, px) != CNN_OK) fail(EXIT_FAILURE, "--plot: %s", cnn_last_error());
    free(px);
}

int main(int argc, char **argv) {
    prog_name = "evaluate";

    /* options */
    const char *model_path = NULL, *data_path = NULL, *device = NULL, *plot_path = NULL;
    int batch_size = 32;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage, stdout);
            return 0;
        } else if ((v = arg_value(argc, argv, &i, "--model"))) {
            model_path = v;
        } else if ((v = arg_value(argc, argv, &i, "--data"))) {
            data_path = v;
        } else if ((v = arg_value(argc, argv, &i, "--batch-size"))) {
            batch_size = (int)arg_int("--batch-size", v, 1, 1 << 20);
        } else if ((v = arg_value(argc, argv, &i, "--device"))) {
            device = v;
        } else if ((v = arg_value(argc, argv, &i, "--plot"))) {
            plot_path = v;
        } else {
            fail(EXIT_USAGE, "unknown option '%s' (see --help)", a);
        }
    }
    if (!model_path) fail(EXIT_USAGE, "--model FILE is required (see --help)");
    if (!data_path) fail(EXIT_USAGE, "--data DIR is required (see --help)");
    if (plot_path) check_writable("--plot", plot_path);

    /* 1. the model: its file also holds the input preprocessing (rescale) and
       the class names, so nothing about training has to be repeated here. */
    cnn_model *m = cnn_load(model_path);
    if (!m) fail(EXIT_FAILURE, "cannot load model %s: %s", model_path, cnn_last_error());
    use_device(m, device, NULL);
    int h, w, c;
    if (cnn_model_input_shape(m, &h, &w, &c) != CNN_OK) fail(EXIT_FAILURE, "%s", cnn_last_error());
    int k = cnn_model_output_size(m);
    if (k < 1) fail(EXIT_FAILURE, "model %s has no outputs: %s", model_path, cnn_last_error());

    /* 2. the images, which must have the shape the model was trained on */
    /* (the test part of a CIFAR-10 or IDX folder, or a .npz file's x_test and y_test) */
    cnn_dataset *d = is_npz(data_path) ? cnn_load_npz(data_path, "x_test", "y_test")
                                       : cnn_load_dataset_part(data_path, 0);
    if (!d) fail(EXIT_FAILURE, "cannot load %s: %s", data_path, cnn_last_error());
    if (d->n < 1) fail(EXIT_FAILURE, "no images in %s", data_path);
    if (d->h != h || d->w != w || d->c != c)
        fail(EXIT_FAILURE, "the images in %s are %dx%dx%d but the model expects %dx%dx%d",
             data_path, d->h, d->w, d->c, h, w, c);
    if (d->num_classes > k)
        fail(EXIT_FAILURE, "%s has %d classes but the model only knows %d", data_path,
             d->num_classes, k);
    /* Labels are class numbers; a folder whose classes differ from the
       training folder's would number them differently. Say so, once. */
    if (d->class_names) {
        for (int j = 0; j < d->num_classes; j++) {
            const char *mine = cnn_model_class_name(m, j);
            if (mine && d->class_names[j] && strcmp(mine, d->class_names[j]) != 0) {
                fprintf(stderr, "evaluate: note: class %d is '%s' in %s and '%s' in the model\n", j,
                        d->class_names[j], data_path, mine);
                break;
            }
        }
    }
    printf("evaluating %s on %d images of %dx%dx%d from %s\n\n", model_path, d->n, h, w, c,
           data_path);

    /* 3. predict: probs[i * k + j] is the probability that image i is class j */
    float *probs = (float *)malloc((size_t)d->n * (size_t)k * sizeof(float));
    int *confusion = (int *)calloc((size_t)k * (size_t)k, sizeof(int));
    if (!probs || !confusion) fail(EXIT_FAILURE, "out of memory for %d predictions", d->n);
    if (cnn_predict_images(m, d->images, d->n, batch_size, probs) != CNN_OK)
        fail(EXIT_FAILURE, "prediction failed: %s", cnn_last_error());
    for (int i = 0; i < d->n; i++) {
        const float *p = probs + (size_t)i * k;
        int best = 0;
        for (int j = 1; j < k; j++)
            if (p[j] > p[best]) best = j;
        int truth = d->labels[i];
        if (truth < 0 || truth >= k) fail(EXIT_FAILURE, "image %d has label %d, outside 0..%d", i, truth, k - 1);
        confusion[truth * k + best]++;
    }

    /* 4. and 5. */
    classification_report(m, d, confusion, k);
    print_confusion_matrix(m, d, confusion, k);
    if (plot_path) {
        plot_confusion_matrix(m, d, confusion, k, plot_path);
        printf("\nconfusion matrix drawn in %s\n", plot_path);
    }

    /* 6. the model's own loss and accuracy (Keras: model.evaluate) */
    cnn_eval_result r;
    if (cnn_evaluate(m, d, batch_size, &r) != CNN_OK)
        fail(EXIT_FAILURE, "evaluation failed: %s", cnn_last_error());
    printf("\nloss: %.4f - accuracy: %.4f\n", r.loss, r.accuracy);

    free(confusion);
    free(probs);
    cnn_dataset_free(d);
    cnn_model_free(m);
    return 0;
}
