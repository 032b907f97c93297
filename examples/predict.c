/* predict.c - ask a trained model what is in a picture.

   Build (from the repository root):
     gcc -std=c99 -O3 -march=native -fopenmp -Wall -Wextra -I. examples/predict.c -lm \
         -o examples/predict

   Run:
     examples/predict --model cifar.cnn cat.png truck.jpg
     examples/predict --model cifar.cnn --top 5 horse.jpg ship.png

   Prints one line per image, the K most probable classes first:
     cat.png: cat 0.8123, dog 0.1002, frog 0.0311

   The lesson:
     1. load the model (weights, preprocessing and class names in one file)
     2. read each image file into uint8 pixels with stb_image, converted to the
        number of channels the model was trained on (1 grey, 3 RGB)
     3. resize it to the model's input size: a CNN only accepts the size it
        was built for
     4. predict: the softmax gives one probability per class; sort them */

#define CNN_IMPLEMENTATION
#define CNN_AUGMENT_IMPLEMENTATION
#define CNN_AUGMENT_STB_IMPLEMENTATION /* compile stb_image & co. in here too */
#include "cnn.h"
#include "cnn_augment.h"

#include "common.h" /* option parsing and one-line errors */
#include "device.h" /* --device: the CPU, or OpenCL devices when built with them */

static const char *usage =
    "usage: predict --model FILE [--top K] IMAGE...\n"
    "Print the K most probable classes of each image (png, jpg, bmp, gif, tga,\n"
    "ppm, pgm), resized to the model's input size.\n"
    "\n"
    "  --model FILE      a model saved by cifar10_cnn --save\n"
    "  --top K           how many classes to show per image (default 3)\n"
    "  --device D        where the model runs: cpu (default), opencl or\n"
    "                    opencl:DEVICES (see examples/devices)\n"
    "  --help            show this help\n";

int main(int argc, char **argv) {
    prog_name = "predict";

    /* options; everything that is not an option is an image path */
    const char *model_path = NULL, *device = NULL;
    int top = 3, n_images = 0, only_images = 0;
    const char **images = (const char **)calloc((size_t)argc, sizeof *images);
    if (!images) fail(EXIT_FAILURE, "out of memory");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (only_images || a[0] != '-' || !strcmp(a, "-")) {
            images[n_images++] = a;
        } else if (!strcmp(a, "--")) {
            only_images = 1; /* the rest are file names, even "-x.png" */
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage, stdout);
            free(images);
            return 0;
        } else if ((v = arg_value(argc, argv, &i, "--model"))) {
            model_path = v;
        } else if ((v = arg_value(argc, argv, &i, "--top"))) {
            top = (int)arg_int("--top", v, 1, 1000000);
        } else if ((v = arg_value(argc, argv, &i, "--device"))) {
            device = v;
        } else {
            fail(EXIT_USAGE, "unknown option '%s' (see --help)", a);
        }
    }
    if (!model_path) fail(EXIT_USAGE, "--model FILE is required (see --help)");
    if (n_images == 0) fail(EXIT_USAGE, "no image given (see --help)");

    /* 1. the model */
    cnn_model *m = cnn_load(model_path);
    if (!m) fail(EXIT_FAILURE, "cannot load model %s: %s", model_path, cnn_last_error());
    use_device(m, device, NULL);
    int h, w, c;
    if (cnn_model_input_shape(m, &h, &w, &c) != CNN_OK) fail(EXIT_FAILURE, "%s", cnn_last_error());
    if (c != 1 && c != 3 && c != 4)
        fail(EXIT_FAILURE, "model %s takes %d channels; images are read as 1 (grey), 3 (RGB) or 4 (RGBA)", model_path, c);
    int k = cnn_model_output_size(m);
    if (k < 1) fail(EXIT_FAILURE, "model %s has no outputs: %s", model_path, cnn_last_error());
    if (top > k) top = k; /* cannot show more classes than there are */

    unsigned char *resized = (unsigned char *)malloc((size_t)h * w * c);
    float *probs = (float *)malloc((size_t)k * sizeof(float));
    int *order = (int *)malloc((size_t)k * sizeof(int));
    if (!resized || !probs || !order) fail(EXIT_FAILURE, "out of memory");

    for (int i = 0; i < n_images; i++) {
        /* 2. decode, convert to the model's channels (a colour photo becomes
           grey for a Fashion-MNIST model) and squeeze the whole picture into
           h x w, as Keras' load_img(path, color_mode, target_size) does; bilinear,
           as cnn_load_image_dir resized the training images */
        if (cnn_load_image(images[i], h, w, c, CNN_INTERP_BILINEAR, 0, resized) != CNN_OK)
            fail(EXIT_FAILURE, "%s", cnn_last_error());
        const unsigned char *input = resized;

        /* 4. predict one image; the model rescales the pixels itself */
        if (cnn_predict_images(m, input, 1, 1, probs) != CNN_OK)
            fail(EXIT_FAILURE, "prediction failed for %s: %s", images[i], cnn_last_error());

        /* the `top` most probable classes: a partial selection sort */
        for (int j = 0; j < k; j++) order[j] = j;
        for (int j = 0; j < top; j++)
            for (int q = j + 1; q < k; q++)
                if (probs[order[q]] > probs[order[j]]) {
                    int t = order[j];
                    order[j] = order[q];
                    order[q] = t;
                }

        char buf[32];
        printf("%s:", images[i]);
        for (int j = 0; j < top; j++)
            printf("%s %s %.4f", j ? "," : "", class_label(m, NULL, order[j], buf, sizeof buf),
                   probs[order[j]]);
        printf("\n");
    }

    free(order);
    free(probs);
    free(resized);
    free(images);
    cnn_model_free(m);
    return 0;
}
