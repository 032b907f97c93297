/* cnn_augment.h - image files, gzip'd IDX, image folders and PNG plots for cnn.h.
   (Documentation block: to be completed by the implementation.) */
#ifndef CNN_AUGMENT_H_INCLUDED
#define CNN_AUGMENT_H_INCLUDED
#include "cnn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* IDX image + label files, gzip'd (.gz, detected by the 1f 8b magic) or raw. */
CNN_DEF cnn_dataset *cnn_load_idx_gz(const char *images_path, const char *labels_path);
/* Fashion-MNIST from a folder holding {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz];
   dir NULL = /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist).
   Class names are the ten Fashion-MNIST names. */
CNN_DEF cnn_dataset *cnn_load_fashion_mnist(const char *dir, int train);

typedef struct cnn_image_dir_opts {
    int height, width;   /* target size; 0 = the size of the first image */
    int channels;        /* 1, 3 or 4; 0 = the channels of the first image */
    int skip_bad;        /* 1 = skip undecodable files with a warning on stderr
                            instead of failing */
    int follow_links;    /* follow symbolic links to folders */
} cnn_image_dir_opts;

/* A folder with one subfolder per class (classes = sorted subfolder names);
   files are taken by extension (png jpg jpeg bmp gif tga ppm pgm, any case),
   decoded with stb_image and resized (bilinear) to the target size. A file with
   an image extension that does not decode is an error naming it. */
CNN_DEF cnn_dataset *cnn_load_image_dir_opt(const char *dir, const cnn_image_dir_opts *o);
#ifndef __cplusplus
#define cnn_load_image_dir(dir, ...) cnn_load_image_dir_opt((dir), &(cnn_image_dir_opts){__VA_ARGS__})
#endif

/* Either a CIFAR-10 binary folder (train batches, or test_batch.bin when it is
   the only batch there), a single CIFAR-10 .bin file, or an image folder with
   class subfolders (loaded at its own size). */
CNN_DEF cnn_dataset *cnn_load_dataset(const char *path);

/* The tutorial's training graphs as one PNG: loss (left) and accuracy (right)
   per epoch, training and validation curves, axes with tick labels and a legend. */
CNN_DEF int cnn_history_plot_png(const cnn_history *h, const char *path);

/* Write uint8 pixels [h][w][c] (c = 1..4) as PNG. */
CNN_DEF int cnn_write_png(const char *path, int w, int h, int c, const unsigned char *pixels);

#ifdef __cplusplus
}
#endif
#endif /* CNN_AUGMENT_H_INCLUDED */
