/* cnn_augment.h - v0.8 - image files, data augmentation and PNG plots for cnn.h

   The file and data side of cnn.h:
     - gzip'd IDX files (MNIST, Fashion-MNIST) and Fashion-MNIST in one call
     - NumPy .npz archives (np.savez, np.savez_compressed): a ZIP reader with ZIP64
     - a folder with one subfolder of images per class (png jpg bmp gif tga ppm pgm),
       decoded and resized to one size, as Keras' flow_from_directory lists them
     - one call that loads whichever of these a path holds (or CIFAR-10 binary)
     - PNG output: any uint8 image, and the Keras tutorial's two training graphs
       (loss and accuracy per epoch, train and validation) as one PNG
     - Keras' ImageDataGenerator, complete: random rotation, shift, shear and zoom
       as one bilinear resample, four fill modes, flips, channel shift, brightness,
       rescale, samplewise / featurewise standardization, ZCA whitening, fit,
       flow and flow_from_directory as batch sources for cnn_fit_source, with
       batches made on worker threads while the model trains

   USAGE
     cnn_augment.h includes cnn.h. In exactly one C or C++ file:

         #define CNN_IMPLEMENTATION             // cnn.h's implementation (here or elsewhere)
         #define CNN_AUGMENT_IMPLEMENTATION
         #define CNN_AUGMENT_STB_IMPLEMENTATION // unless stb is compiled elsewhere, see below
         #include "cnn_augment.h"

     Everywhere else just #include "cnn_augment.h". Needs C99 or C++, a POSIX
     system for the folder loaders (opendir/readdir/stat) and the flows' worker
     threads (pthreads), and stb_image and stb_image_write (resizing is this
     file's own, by PIL's rules): Debian's libstb-dev installs them under
     /usr/include/stb/, which is where this file looks (<stb/stb_image.h>). Link
     with -lm (and -lpthread where threads are not part of libc: glibc before
     2.34, some BSDs).

   STB, ONE COPY ONLY
     stb's implementation is compiled only when you ask for it:
       CNN_AUGMENT_STB_IMPLEMENTATION   defined in the file that has
                  CNN_AUGMENT_IMPLEMENTATION: compiles stb_image and stb_image_write
                  into that file as private (static) functions, so they never
                  clash with another copy of stb in your program. That file
                  may call stbi_load etc. itself, other files may not. Do not include
                  the stb headers yourself before this file there.
     Without it, this file only declares stb's functions: your program must compile
     stb's implementations somewhere else (STB_IMAGE_IMPLEMENTATION,
     STB_IMAGE_WRITE_IMPLEMENTATION), or link a library that has them. stb's own
     options (STBI_NO_*, STBI_MALLOC, ...) work as usual when defined before the
     implementation is compiled. Buffers from stb
     are freed with stbi_image_free, so a custom STBI_MALLOC stays consistent.

   EXAMPLE

         cnn_dataset *train = cnn_load_fashion_mnist(NULL, 1);   // 60000 x 28x28x1
         cnn_dataset *test = cnn_load_fashion_mnist(NULL, 0);    // 10000
         cnn_dataset *pets = cnn_load_image_dir("pets/train", .height = 64, .width = 64,
                                                .channels = 3);  // classes: cat, dog, ...
         if (!train || !test || !pets) fprintf(stderr, "%s\n", cnn_last_error());
         ...
         cnn_history *h = cnn_fit(m, train, .epochs = 10, .validation_data = test);
         cnn_history_plot_png(h, "history.png");                 // loss | accuracy
         cnn_write_png("first.png", train->w, train->h, train->c, train->images);

     C++ has no compound literals: fill a cnn_image_dir_opts and call
     cnn_load_image_dir_opt(dir, &opts) (a NULL opts means all defaults). The
     same holds for every keyword-style macro below (cnn_datagen_new ->
     cnn_datagen_new_opt, cnn_datagen_flow -> cnn_datagen_flow_opt, ...).

   IMAGE DATA GENERATOR (the tutorial's fit_generator, line for line)

         // datagen = ImageDataGenerator(rotation_range=20, width_shift_range=0.02,
         //                              height_shift_range=0.02, horizontal_flip=True)
         cnn_datagen *datagen = cnn_datagen_new(.rotation_range = 20,
                                                .width_shift_range = 0.02f,
                                                .height_shift_range = 0.02f,
                                                .horizontal_flip = 1,
                                                .rescale = 1.0f / 255);  // x_train / 255
         // model.fit_generator(datagen.flow(x_train, y_train, batch_size=32),
         //                     steps_per_epoch=x_train.shape[0] // 32, epochs=200,
         //                     validation_data=(x_test, y_test))
         cnn_flow *flow = cnn_datagen_flow(datagen, train, .batch_size = 32, .seed = 1);
         cnn_history *h = cnn_fit_source(m, cnn_flow_source(flow), .batch_size = 32,
                                         .steps_per_epoch = train->n / 32, .epochs = 200,
                                         .validation_data = test, .verbose = 1);
         cnn_flow_free(flow);
         cnn_datagen_free(datagen);

     Options structs follow cnn.h's rule: zero is Keras' default (with shuffle
     spelled .no_shuffle, and rescale 0 meaning none). A bad parameter (a negative
     range, zoom factors <= 0, an unknown fill mode, a target size of 0) makes the
     constructor return NULL with cnn_last_error() naming it.

   TRANSFORMS (cnn_datagen_get_random_transform / apply_transform / random_transform)
     One bilinear resample per image (Keras' interpolation_order=1; nearest with
     .interpolation = CNN_INTERP_NEAREST), then the colour changes. Pixel (x, y)
     is column x, row y, rows going down; the centre is ((w-1)/2, (h-1)/2). The
     transform is a pull map: output pixel p samples the input at
         R(theta) * (Sh(shear) * Z(zoom_x, zoom_y) * (p - centre) - shift) + centre
     (Keras' rotation x shift x shear x zoom, centred), so
       - theta (degrees) > 0 turns the picture counter-clockwise as displayed
         (theta = 90 is numpy's rot90);
       - shift_x / shift_y (pixels) > 0 move the content right / down; they are
         applied after the rotation, in the displayed frame, and before shear and
         zoom; width_shift_range draws shift_x, height_shift_range shift_y (as
         Keras documents them; a range < 1 is a fraction of the width / height);
         Keras' int and list forms are .width_shift_int = r (whole pixels from
         {0, ..., r-1}, times a random sign) and .width_shift_list = {a, b, ...}
         with .width_shift_list_len (one of the values times a random sign, a
         fraction of the width when all are < 1), the same for height;
       - shear (degrees) > 0 moves the lower half right and the upper half left;
       - zoom factors scale the sampling grid: above 1 the content looks smaller
         (zooms out), below 1 larger; zoom_x is horizontal. The random zoom draws
         zoom_x and zoom_y independently from the zoom range;
       - fill modes for samples outside the image: nearest aaa|abcd|ddd, constant
         kkk|abcd|kkk (k = cval), reflect dcba|abcd|dcba, wrap abcd|abcd|abcd - the
         bilinear interpolant of the input extended that way, which is scipy's
         affine_transform(order=1) with modes nearest, grid-constant, reflect and
         grid-wrap (Keras passes scipy's 'constant' and 'wrap', which differ: see
         DIFFERENCES FROM KERAS below);
       - flip_horizontal / flip_vertical mirror the result (probability 0.5 each
         when the generator flips);
       - channel_shift adds one intensity to every value, clipped to the image's
         own min..max (Keras' apply_channel_shift);
       - brightness multiplies, clipped to 0..255 (Keras' PIL brightness, without
         its rounding to 8 bits); an image outside 0..255 is mapped to 0..255 by
         its min and max and back; with 4 channels the alpha channel is left
         alone, as PIL's ImageEnhance.Brightness does.
     Random draws use Keras' ranges and order; draws are symmetric, so these
     conventions never bias training. Integer shifts, flips and multiples of 90
     degrees are exact (no interpolation error).

   STANDARDIZE AND FIT
     cnn_datagen_standardize applies, in Keras' order: preprocessing_function,
     rescale, samplewise center, samplewise std (divide by std + 1e-6),
     featurewise center, featurewise std (std + 1e-6), ZCA. Samplewise statistics
     are over the whole image (all channels). As Keras (with the same warnings on
     stderr), std normalization turns its centring on, and zca_whitening turns
     featurewise_center on and featurewise_std_normalization off.
     cnn_datagen_fit(g, x, .augment, .rounds, .seed) computes what the options
     need from the data after rescale (and a random transform when augment): the
     per-channel mean and std (ddof 0, over N, H, W) and, for ZCA, tf-keras 2.x's
     matrix from the SVD X = U S V^T of the N channel-centred images [N][D]:
     U diag(sqrt(N) / (s + zca_epsilon)) U^T over the top min(N, D) directions,
     i.e. weight 1 / (sqrt(lambda) + zca_epsilon / sqrt(N)) for each eigenvalue
     lambda of X^T X / N. With N >= D it comes from the D x D eigenproblem,
     O(N D^2 + D^3); with fewer images than values from the N x N Gram matrix,
     O(N^2 D + N D^2): seconds for 32x32x3 and a few hundred images, minutes for
     thousands. A featurewise step used before fit is an error, not a warning.

   FLOWS (cnn_datagen_flow, cnn_datagen_flow_float, cnn_datagen_flow_from_directory)
     A flow yields batches of batch_size transformed, standardized images with
     their targets: ceil(n / batch_size) batches per pass, the last one smaller, a
     fresh order every pass (unless .no_shuffle). Targets: the class index
     (y_width 1), one-hot with .one_hot, your own float rows with .y / .y_width;
     directory flows follow class_mode. subset = CNN_SUBSET_VALIDATION takes the
     first validation_split of the data (of each class folder), TRAINING the rest,
     as Keras (a split of arrays that loses a class is an error, as in Keras).
     save_to_dir writes every image handed out as {prefix}_{index}_{hash}.{format},
     scaled to 0..255 by its min and max as Keras' array_to_img does.
     Using a flow:
       - cnn_flow_source(f) is a cnn_batch_source for cnn_fit_source (with
         .steps_per_epoch more or fewer batches than a pass holds: sampling runs on
         across passes), .validation_source and cnn_evaluate_source. fit records the
         flow's rescale and featurewise mean/std in the model, so evaluate/predict
         and .validation_data arrays get the same preprocessing; samplewise steps,
         ZCA and preprocessing_function are not model preprocessing: validate those
         with a flow (a generator without random parameters, .no_shuffle). Give fit
         the flow's batch_size (fit asks for at most its own batch size; a larger
         flow batch is handed out in pieces).
       - cnn_flow_next(f, &x, &y): the next batch without a copy (valid until the
         next call), 0 once at the end of each pass, then the next pass.
     Threads: batches are made by .workers background threads (default 1; -1 =
     none, made inside next) up to .max_queue_size batches ahead (default 10, fewer
     if 10 would take over 64 MB; at least 2), and on across the end of a pass, so
     the model never waits for augmentation. A reset to another pass than the next
     one drops what was made ahead. Determinism: the order of a pass and the draws
     of an image depend only on (seed, pass, position in the pass), never on the
     thread that makes them: the same seed gives bit-identical batches with any
     number of workers (and without threads). preprocessing_function runs on the
     workers: it must be thread-safe. The generator may be freed once its flows
     exist (each flow keeps a copy); the dataset (and .y) must outlive the flow.
     A flow allocates everything when it is made: nothing is allocated per image.
   FLOW_FROM_DIRECTORY
     Classes are the sorted subfolder names (or .classes, in label order); files
     are found as by cnn_load_image_dir (recursively, by image extension, links to
     folders followed with .follow_links) and sorted per class. Images are decoded
     to color_mode's channels (rgb, grayscale, rgba) and resized to target_size
     (default 256 x 256) exactly as Keras' load_img does through PIL (see
     RESIZING): interpolation nearest (Keras' default), bilinear, bicubic,
     lanczos, box or hamming, and .keep_aspect_ratio (crop the centre to the
     target's aspect ratio first). By default every file is decoded when the
     flow is made, so a file with an image extension that does not decode is an error naming it right
     away (.skip_bad skips it with a warning on stderr instead); .lazy decodes on
     the workers batch by batch (for folders larger than memory): headers are
     checked up front, and a file that fails later makes next() fail naming it.

   IMAGE FOLDERS (cnn_load_image_dir)
     Classes are the subfolder names sorted byte-wise (as Python's sorted()); label k
     is the k-th name. Inside a class folder files are found recursively (like
     Keras' os.walk), by extension in any case: png jpg jpeg bmp gif (first frame)
     tga ppm pgm; other files are ignored, and so are names starting with '.'
     (".ipynb_checkpoints", macOS "._x.jpg" files). Files are in Keras' order,
     the same on every system: folders by path, each folder's own files (by
     name) before those of its subfolders. Symbolic links to folders inside a
     class folder are followed only with .follow_links = 1 (needs lstat, i.e.
     POSIX.1-2001 visible: the default with gcc/clang except in strict -std=c99
     without _XOPEN_SOURCE/_DEFAULT_SOURCE, where links are always followed);
     recursion stops 16 folders deep. Images are decoded and converted to the
     target channels by PIL's rules (a first image with grey + alpha counts as 4
     channels) and, when their size differs, resized by PIL's rules with
     .interpolation (default bilinear) and .keep_aspect_ratio, as cnn_load_image.
     An empty class folder still counts as a class.

   RESIZING (cnn_resize_uint8, cnn_load_image, image folders, directory flows)
     Keras resizes files with PIL, so this file restates PIL's Image.resize
     (Pillow 13) and gives the same bytes: nearest picks the pixel under each
     output pixel's centre, stepping in double as PIL does (so exact ties such as
     32 -> 28 fall the same way); the other filters are PIL's separable
     convolution with its supports, 22-bit fixed-point weights and its pass
     order (across first unless the height shrinks by more than twice as many
     pixels as the width), colours premultiplied by alpha for LA and RGBA. Any
     size pair works, 1 x 1 included (stb_image_resize v1, which this file used
     before 0.3, aborted on some, such as 41 -> 32). Channels are converted as
     PIL's convert: grey = (19595 R + 38470 G + 7471 B + 32768) >> 16, alpha
     dropped, or 255 where the file has none. tests/test_resize.c holds the
     sweep against Pillow's own output.

   DIFFERENCES FROM KERAS (deliberate; tests/test_keras.c measures each against
   tf-keras 2.21 itself)
     - fill mode constant is the true constant extension (scipy's
       grid-constant): Keras passes scipy's 'constant', which gives cval as
       soon as a sample leaves [0, n-1], so the one-pixel fringe differs.
     - fill mode wrap repeats with period n (scipy's grid-wrap): Keras passes
       scipy's legacy 'wrap', whose period is n - 1, so every wrapped value
       comes from one pixel further on (7 columns shifted by 3: Keras gives
       3 4 5 6 1 2 3, this file 3 4 5 6 0 1 2).
     - brightness stays in float; Keras truncates the image to 8 bits before
       and after PIL's blend, so ours is higher by up to 1 + brightness levels.
     - the centre of a transform is ((w-1)/2, (h-1)/2) in (x, y); tf-keras
       2.21 turns non-square images about ((h-1)/2, (w-1)/2), so a half turn
       of a 5x7 image is not a flip there.
     - width_shift_range moves the picture horizontally and height_shift_range
       vertically, as Keras documents them; tf-keras 2.21's code swaps them
       (its height range, scaled by the height, moves the picture across).
       Draws are symmetric, so training is the same either way.
     - file listing: names starting with '.' are skipped; gif, tga and pgm are
       taken, tif and tiff are not (stb_image has no TIFF decoder); Keras takes
       png jpg jpeg bmp ppm tif tiff; recursion stops 16 folders deep.
     - decoding is stb_image's: PNG, BMP and PPM give PIL's pixels (the tests
       compare 98,000 values of resized PNGs: all equal); JPEG decoders differ
       by a few levels; 16-bit PNGs become 8 bits (PIL's grayscale keeps 16).
     - ZCA leaves out directions the data do not span (eigenvalue below 1e-12 of
       the largest); Keras keeps them with weight sqrt(N) / zca_epsilon, where
       its float32 SVD makes them noise.

   REVISION HISTORY
     0.8  (2026-12-06) The resample about a fifth faster on every path, the images
          the same bits: the clamping modes' fixed-point coordinates add a
          per-image table of steps in 32-bit halves (no 64-bit adds along the
          row) and clamp in float (SSE2 has min and max for floats, not for
          32-bit ints); coordinates and pixels are made about 128 pixels (or
          one row) at a time, so that they stay in L1; the border columns'
          fill rule is found once an image. A flow permutes each image's index
          once, not twice. The coordinates' buffers hold one chunk of rows, not
          a whole image (2400x2400: 69 MB -> 29 KB a worker).
     0.7  (2026-12-05) The nearest and constant fill modes' sample coordinates in
          32.32 fixed point (within 2^-26 of a pixel of the double ones): the
          transform a third faster with plain -O2 flags.
     0.6  (2026-12-05) NumPy archives: cnn_load_npz, cnn_load_npz_float, cnn_npz_has
          (stored and deflated members, ZIP64, CRC-32 checked); cnn_draw_text
          (the plots' 5x9 font, for labelled pictures such as evaluate --plot's).
     0.5  (2026-12-05) The resample's coordinate loops vectorise with plain
          x86-64 flags (SSE2) too: 1.5x faster there; the images are the same.
          Hostile files: images are screened before stb_image decodes them
          (JPEG Huffman tables stb 2.27 overflows or leaves uninitialised,
          16-bit and overlong PNM headers, PNG chunks longer than the file,
          empty IDAT chunks), and image sizes, image folders and gzip data are
          held to cnn.h's memory limit (cnn_set_memory_limit). PNG files are
          written by this file's own encoder (stb_image_write's aborts when an
          allocation fails); stb_image_write still writes JPEG and BMP.
     0.4  (2026-12-05) The transform's resample is compiled for AVX2 and AVX-512
          too and runs on cnn.h's kernel path (CNN_KERNELS, cnn_set_kernels), so
          it vectorises without -march flags and on AVX2 (it was scalar there).
          Built in an ISO C mode (-std=c99) the images are the same as 0.3's;
          in GNU modes the compiler may fuse multiply-adds (last-bit changes).
     0.3  (2026-12-05) Tested against tf-keras 2.21 itself: resizing by PIL's rules
          (no abort on any size; bicubic, lanczos, box, hamming, keep_aspect_ratio),
          cnn_resize_uint8, cnn_load_image; Keras' file order; std normalization
          turns centring on; tf-keras 2.x's ZCA (n < d through the Gram matrix);
          brightness keeps alpha; int and list shift ranges.
     0.2  (2026-11-29) ImageDataGenerator: transforms, standardize, fit with ZCA,
          flow / flow_from_directory with background workers.
     0.1  (2026-11-28) first release: gzip'd IDX, Fashion-MNIST, image folders,
          cnn_load_dataset, PNG writing, training-history plot.

   LICENSE: see the end of this file (MIT or public domain, your choice).
*/
#ifndef CNN_AUGMENT_H_INCLUDED
#define CNN_AUGMENT_H_INCLUDED
#include "cnn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ======================================================================== */
/* Loaders: gzip'd IDX and Fashion-MNIST                                    */
/* ======================================================================== */

/* IDX image + label files, gzip'd (.gz, detected by the 1f 8b magic) or raw. */
CNN_DEF cnn_dataset *cnn_load_idx_gz(const char *images_path, const char *labels_path);
/* Fashion-MNIST from a folder holding {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz];
   dir NULL = /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist).
   Class names are the ten Fashion-MNIST names. */
CNN_DEF cnn_dataset *cnn_load_fashion_mnist(const char *dir, int train);

/* NumPy .npz archives (np.savez, np.savez_compressed): ZIP files of .npy
   members, stored or deflated, with the ZIP64 extra fields NumPy writes. Keys
   are the names given to np.savez ("x_train", or "x_train.npy"); the arrays are
   read as cnn_load_npy reads them. Every member is CRC-32 checked and every
   size checked against the file and the memory limit. For Keras' layout:
       cnn_dataset *train = cnn_load_npz("cifar10.npz", "x_train", "y_train");
       cnn_dataset *test = cnn_npz_has("cifar10.npz", "x_test") == 1
                               ? cnn_load_npz("cifar10.npz", "x_test", "y_test") : NULL; */
CNN_DEF cnn_dataset *cnn_load_npz(const char *path, const char *x_key, const char *y_key);
/* The same from an archive in memory. */
CNN_DEF cnn_dataset *cnn_load_npz_memory(const unsigned char *data, size_t len, const char *x_key,
                                         const char *y_key);
/* Float arrays from an archive, as cnn_load_npy_float reads them (y_key NULL: none). */
CNN_DEF cnn_float_arrays *cnn_load_npz_float(const char *path, const char *x_key, const char *y_key);
/* 1 when the archive has a member `key`, 0 when not, < 0 (and an error) when it
   cannot be read or is not a ZIP archive. */
CNN_DEF int cnn_npz_has(const char *path, const char *key);

/* ======================================================================== */
/* Resizing, by PIL's rules                                                 */
/* ======================================================================== */

/* Interpolation: of the random transforms (default bilinear, Keras'
   interpolation_order=1; nearest; the others are refused there) and of
   resizing files to a target size, where every value follows PIL's
   Image.resize, which is what Keras calls. What CNN_INTERP_DEFAULT (0) means
   depends on the call, as Keras' defaults do: nearest for flow_from_directory
   and cnn_load_image (Keras' load_img), bilinear for the transforms,
   cnn_load_image_dir and cnn_resize_uint8. */
typedef enum cnn_interpolation {
    CNN_INTERP_DEFAULT = 0,
    CNN_INTERP_NEAREST,   /* PIL NEAREST: the pixel under each output pixel's centre */
    CNN_INTERP_BILINEAR,  /* PIL BILINEAR: triangle filter, widened when shrinking */
    CNN_INTERP_BICUBIC,   /* PIL BICUBIC: cubic filter (a = -0.5), resizing only */
    CNN_INTERP_LANCZOS,   /* PIL LANCZOS: 3-lobed Lanczos, resizing only */
    CNN_INTERP_BOX,       /* PIL BOX: area average, resizing only */
    CNN_INTERP_HAMMING    /* PIL HAMMING: Hamming-windowed sinc, resizing only */
} cnn_interpolation;

/* Resize uint8 pixels src [sh][sw][c] into dst [dh][dw][c] (c = 1..4) exactly as
   PIL's Image.resize does for modes L, LA, RGB and RGBA: the same filters,
   supports and 22-bit fixed-point coefficients, Pillow 13's order of the two
   passes (across first unless the height shrinks by more than twice as many
   pixels as the width), and colours premultiplied by alpha (c = 2 or 4) for
   every filter but nearest. CNN_INTERP_DEFAULT means bilinear here.
   Any sizes from 1 x 1 up; src and dst must not overlap. Returns CNN_OK or a
   negative cnn_status (bad arguments, out of memory). */
CNN_DEF int cnn_resize_uint8(const unsigned char *src, int sw, int sh, int c, unsigned char *dst, int dw,
                             int dh, cnn_interpolation interpolation);

/* One image file as Keras' load_img(path, color_mode, target_size,
   interpolation, keep_aspect_ratio) makes it, into pixels [h][w][c]: decoded
   by stb_image, converted to c channels (1 grey, 3 RGB, 4 RGBA) by PIL's rules
   (grey from colour is ITU-R 601-2 luma, alpha dropped or added as 255), then,
   when its size is not h x w, resized by PIL's rules (keep_aspect_ratio: the
   centred crop with the target's aspect ratio first). interpolation 0 means
   nearest, as load_img. Returns CNN_OK or a negative cnn_status naming the file. */
CNN_DEF int cnn_load_image(const char *path, int h, int w, int c, cnn_interpolation interpolation,
                           int keep_aspect_ratio, unsigned char *pixels);

/* ======================================================================== */
/* Loaders: image folders, and any dataset path                             */
/* ======================================================================== */

typedef struct cnn_image_dir_opts {
    int height, width;   /* target size; 0 = the size of the first image */
    int channels;        /* 1, 3 or 4; 0 = the channels of the first image */
    int skip_bad;        /* 1 = skip undecodable files with a warning on stderr
                            instead of failing */
    int follow_links;    /* follow symbolic links to folders */
    cnn_interpolation interpolation; /* resizing (default bilinear) */
    int keep_aspect_ratio; /* crop the centre to the target's aspect ratio before
                              resizing (Keras' keep_aspect_ratio) */
} cnn_image_dir_opts;

/* A folder with one subfolder per class (classes = sorted subfolder names);
   files are taken by extension (png jpg jpeg bmp gif tga ppm pgm, any case),
   decoded and resized to the target size as cnn_load_image does (PIL's rules;
   bilinear unless .interpolation says otherwise), in Keras' file order. A file
   with an image extension that does not decode is an error naming it. */
CNN_DEF cnn_dataset *cnn_load_image_dir_opt(const char *dir, const cnn_image_dir_opts *o);
#ifndef __cplusplus
#define cnn_load_image_dir(dir, ...) cnn_load_image_dir_opt((dir), &(cnn_image_dir_opts){__VA_ARGS__})
#endif

/* Any dataset the examples take, by what the path holds:
     - a CIFAR-10 binary folder: the training batches (data_batch_1..5.bin), or
       test_batch.bin when it is the only batch there;
     - a single CIFAR-10 .bin file;
     - an IDX folder in the (Fashion-)MNIST layout ({train,t10k}-images-idx3-ubyte
       and -labels-idx1-ubyte, gzip'd or not): its training part, with the
       Fashion-MNIST class names;
     - an image folder with class subfolders (loaded at its own size). */
CNN_DEF cnn_dataset *cnn_load_dataset(const char *path);
/* The same, choosing the part of a CIFAR-10 or IDX folder: train != 0 as above,
   train == 0 the test part (test_batch.bin, t10k-*). Files and image folders
   have one part: both calls load them whole. */
CNN_DEF cnn_dataset *cnn_load_dataset_part(const char *path, int train);

/* ======================================================================== */
/* PNG output: images and training plots                                    */
/* ======================================================================== */

/* The tutorial's training graphs as one PNG: loss (left) and accuracy (right)
   per epoch, training and validation curves, axes with tick labels and a legend. */
CNN_DEF int cnn_history_plot_png(const cnn_history *h, const char *path);

/* Write uint8 pixels [h][w][c] (c = 1..4) as PNG. */
CNN_DEF int cnn_write_png(const char *path, int w, int h, int c, const unsigned char *pixels);

/* Draw text into RGB pixels [h][w][3] with the training plot's 5x9 font:
   each character a 6-pixel cell (times `scale` >= 1), top-left corner at
   (x, y), upper case drawn as lower case, characters the font lacks (it has
   digits, letters and .-+:()/%_=) as spaces, whatever falls outside the image
   clipped. Returns the text's width in pixels, or a negative cnn_status. */
CNN_DEF int cnn_draw_text(unsigned char *rgb, int w, int h, int x, int y, const char *text, int scale,
                          unsigned char r, unsigned char g, unsigned char b);

/* ======================================================================== */
/* ImageDataGenerator: options, random transforms, standardization          */
/* ======================================================================== */

/* How a transform fills the points that fall outside the input image. */
typedef enum cnn_fill_mode {
    CNN_FILL_NEAREST = 0, /* aaaa|abcd|dddd  (Keras' default) */
    CNN_FILL_CONSTANT,    /* kkkk|abcd|kkkk  with k = cval */
    CNN_FILL_REFLECT,     /* dcba|abcd|dcba */
    CNN_FILL_WRAP         /* abcd|abcd|abcd */
} cnn_fill_mode;

/* Keras' preprocessing_function: changes one image [h][w][c] in place; returns 0,
   or non-zero to stop the flow with an error. Runs on the flow's worker threads:
   it must be thread-safe. */
typedef int (*cnn_preprocessing_fn)(float *image, int h, int w, int c, void *user);

#define CNN_SHIFT_LIST_MAX 16 /* values in a list-form shift range */

typedef struct cnn_datagen_opts {
    int featurewise_center;            /* subtract the per-channel mean of the fitted data */
    int samplewise_center;             /* subtract each image's mean */
    int featurewise_std_normalization; /* divide by the per-channel std (+1e-6) of the fitted data */
    int samplewise_std_normalization;  /* divide each image by its std (+1e-6) */
    int zca_whitening;                 /* multiply by the fitted ZCA matrix (turns featurewise_center
                                          on and featurewise_std_normalization off, as Keras does) */
    float zca_epsilon;                 /* 0 = 1e-6 */
    float rotation_range;              /* degrees: theta uniform in [-r, r] */
    float width_shift_range;           /* horizontal shift: a fraction of the width when < 1,
                                          pixels when >= 1; uniform in [-r, r] */
    float height_shift_range;          /* vertical shift, the same way */
    int width_shift_int;               /* Keras' int width_shift_range=r: a whole-pixel shift
                                          drawn from {0, ..., r-1}, times a random sign (so 1
                                          never shifts, as in Keras). Note: Python's
                                          width_shift_range=2 is this int form; C's
                                          .width_shift_range = 2 is the float form (uniform
                                          in [-2, 2] pixels), Python's 2.0 */
    int height_shift_int;              /* the same vertically */
    float width_shift_list[CNN_SHIFT_LIST_MAX]; /* Keras' list width_shift_range=[a, b, ...]: */
    int width_shift_list_len;          /* one of the first len values, times a random sign;
                                          fractions of the width when all are < 1, else pixels */
    float height_shift_list[CNN_SHIFT_LIST_MAX];
    int height_shift_list_len;         /* (at most one form per axis: range, int or list) */
    float brightness_range[2];         /* {lo, hi}: a factor uniform in [lo, hi]; {0, 0} = none */
    float shear_range;                 /* degrees: shear uniform in [-r, r] */
    float zoom_range[2];               /* {z}: zoom_x, zoom_y uniform in [1-z, 1+z] (0 <= z < 1);
                                          {lo, hi}: in [lo, hi] (0 < lo <= hi); {0, 0} = none */
    float channel_shift_range;         /* intensity uniform in [-r, r] added to every channel */
    cnn_fill_mode fill_mode;           /* default nearest */
    float cval;                        /* the value of CNN_FILL_CONSTANT */
    int horizontal_flip, vertical_flip;/* flip with probability 0.5 */
    float rescale;                     /* multiply by this (0 = none, Keras' None) */
    cnn_preprocessing_fn preprocessing_function; /* NULL = none */
    void *preprocessing_user;          /* passed to preprocessing_function */
    float validation_split;            /* fraction held out for subset = CNN_SUBSET_VALIDATION */
    cnn_interpolation interpolation;   /* of the transform: default bilinear, or nearest */
} cnn_datagen_opts;

typedef struct cnn_datagen cnn_datagen;

/* A generator, or NULL (a bad parameter: cnn_last_error names it). */
CNN_DEF cnn_datagen *cnn_datagen_new_opt(const cnn_datagen_opts *o);
CNN_DEF void cnn_datagen_free(cnn_datagen *g);
/* The options in force (after defaults and the zca_whitening adjustments). */
CNN_DEF const cnn_datagen_opts *cnn_datagen_options(const cnn_datagen *g);

typedef struct cnn_datagen_fit_opts {
    int augment;     /* fit on randomly transformed images */
    int rounds;      /* with augment: passes over the data (0 = 1) */
    uint64_t seed;   /* the augmentation draws */
} cnn_datagen_fit_opts;

/* Keras' fit(x, augment, rounds, seed): the per-channel mean and std (ddof 0,
   over N, H and W) and the ZCA matrix of the data after rescale (and the random
   transforms with augment). Only what the options ask for is computed. */
CNN_DEF int cnn_datagen_fit_opt(cnn_datagen *g, const cnn_dataset *x, const cnn_datagen_fit_opts *o);
/* The same on float images x [n][h][w][c]. */
CNN_DEF int cnn_datagen_fit_float_opt(cnn_datagen *g, const float *x, int n, int h, int w, int c,
                                      const cnn_datagen_fit_opts *o);
/* The fitted statistics: mean and std [c] (NULL before fit), their channel count. */
CNN_DEF int cnn_datagen_stats(const cnn_datagen *g, const float **mean, const float **std, int *c);
/* The fitted ZCA matrix [d][d] (d = h*w*c), or NULL. */
CNN_DEF const float *cnn_datagen_zca_matrix(const cnn_datagen *g, int *d);
/* Set the statistics yourself (as assigning Keras' datagen.mean / .std); std may
   be NULL when only the mean is used. */
CNN_DEF int cnn_datagen_set_stats(cnn_datagen *g, const float *mean, const float *std, int c);

/* The explicit parameters of one transform; the zero value is the identity.
   Conventions: see TRANSFORMS at the top of this file: the centre is ((w-1)/2, (h-1)/2). */
typedef struct cnn_transform {
    float theta;            /* degrees; positive turns the picture counter-clockwise as displayed */
    float shift_x, shift_y; /* pixels; positive moves the content right (x) and down (y) */
    float shear;            /* degrees; positive moves the lower half right, the upper half left */
    float zoom_x, zoom_y;   /* scale of the sampling grid (0 = 1); above 1 zooms out */
    int flip_horizontal;    /* mirror left-right */
    int flip_vertical;      /* mirror top-bottom */
    float channel_shift;    /* added to every value, clipped to the image's min..max (0 = none) */
    float brightness;       /* factor (0 = none) */
} cnn_transform;

/* Keras' get_random_transform: the parameters drawn for an h x w image from seed. */
CNN_DEF int cnn_datagen_get_random_transform(const cnn_datagen *g, int h, int w, uint64_t seed,
                                             cnn_transform *t);
/* Keras' apply_transform: out = the transformed image x [h][w][c] (out may be x).
   Uses the generator's fill_mode, cval and interpolation. */
CNN_DEF int cnn_datagen_apply_transform_opt(const cnn_datagen *g, const float *x, int h, int w, int c,
                                            const cnn_transform *t, float *out);
/* Keras' random_transform: get_random_transform(seed) then apply_transform. */
CNN_DEF int cnn_datagen_random_transform(const cnn_datagen *g, const float *x, int h, int w, int c,
                                         uint64_t seed, float *out);
/* Keras' standardize, in place on n images [n][h][w][c]: preprocessing_function,
   rescale, samplewise center, samplewise std, featurewise center, featurewise
   std, ZCA. Featurewise steps need fit (or set_stats) first. */
CNN_DEF int cnn_datagen_standardize(const cnn_datagen *g, float *x, int n, int h, int w, int c);

/* ======================================================================== */
/* ImageDataGenerator: flow and flow_from_directory                         */
/* ======================================================================== */

typedef enum cnn_subset {
    CNN_SUBSET_ALL = 0,      /* Keras' subset=None */
    CNN_SUBSET_TRAINING,     /* all but the validation part */
    CNN_SUBSET_VALIDATION    /* the first validation_split of the data (of each class folder) */
} cnn_subset;

typedef struct cnn_flow_opts {
    int batch_size;          /* 0 = 32 */
    int no_shuffle;          /* 1 = shuffle=False; by default every pass has a new order */
    uint64_t seed;           /* the order and the random transforms */
    const char *save_to_dir; /* also write each augmented image there (NULL = no) */
    const char *save_prefix; /* NULL = "" */
    const char *save_format; /* "png" (NULL), "jpeg" ("jpg") or "bmp" */
    cnn_subset subset;       /* needs the generator's validation_split */
    int one_hot;             /* targets one-hot over num_classes (default: the class index) */
    const float *y;          /* explicit targets [n][y_width] instead of the labels */
    int y_width;
    int workers;             /* threads making batches ahead: 0 = 1, -1 = none (made inside next) */
    int max_queue_size;      /* batches made ahead: 0 = 10 */
} cnn_flow_opts;

typedef enum cnn_color_mode { CNN_COLOR_RGB = 0, CNN_COLOR_GRAYSCALE, CNN_COLOR_RGBA } cnn_color_mode;

typedef enum cnn_class_mode {
    CNN_CLASS_CATEGORICAL = 0, /* one-hot targets (y_width = number of classes) */
    CNN_CLASS_BINARY,          /* 0 or 1 (y_width 1); needs exactly two classes */
    CNN_CLASS_SPARSE,          /* the class index (y_width 1) */
    CNN_CLASS_INPUT,           /* the images themselves (autoencoders; y_width = h*w*c) */
    CNN_CLASS_NONE             /* no targets (y_width 0) */
} cnn_class_mode;

typedef struct cnn_directory_flow_opts {
    int target_size[2];          /* {height, width}; {0, 0} = {256, 256} */
    cnn_color_mode color_mode;   /* rgb (3 channels), grayscale (1), rgba (4) */
    const char *const *classes;  /* subfolder names in label order, NULL-terminated;
                                    NULL = every subfolder, sorted */
    cnn_class_mode class_mode;   /* default categorical */
    int batch_size;              /* 0 = 32 */
    int no_shuffle;
    uint64_t seed;
    const char *save_to_dir, *save_prefix, *save_format;
    int follow_links;            /* follow symbolic links to folders inside class folders */
    cnn_subset subset;
    cnn_interpolation interpolation; /* resizing to target_size (PIL's rules): default nearest */
    int keep_aspect_ratio;       /* crop the centre to target_size's aspect ratio first */
    int skip_bad;                /* skip files that do not decode, with a warning on stderr */
    int lazy;                    /* decode the files batch by batch on the workers (for folders
                                    larger than memory) instead of all at the start */
    int workers, max_queue_size; /* as in cnn_flow_opts */
} cnn_directory_flow_opts;

typedef struct cnn_flow cnn_flow;

/* Keras' flow(x, y): batches of the dataset's images, transformed and
   standardized, with their labels. The dataset (and opts->y) must outlive the flow;
   the generator need not (the flow keeps a copy of it). */
CNN_DEF cnn_flow *cnn_datagen_flow_opt(const cnn_datagen *g, const cnn_dataset *d, const cnn_flow_opts *o);
/* The same from float images x [n][h][w][c] (targets from o->y, or none). */
CNN_DEF cnn_flow *cnn_datagen_flow_float_opt(const cnn_datagen *g, const float *x, int n, int h, int w,
                                             int c, const cnn_flow_opts *o);
/* Keras' flow_from_directory: one subfolder of images per class. */
CNN_DEF cnn_flow *cnn_datagen_flow_from_directory_opt(const cnn_datagen *g, const char *dir,
                                                      const cnn_directory_flow_opts *o);

/* The flow as the batch source cnn_fit_source / cnn_evaluate_source consume. */
CNN_DEF cnn_batch_source *cnn_flow_source(cnn_flow *f);
/* The next batch: *x [count][h][w][c] and *y [count][y_width] point into the flow
   and stay valid until the next call (y may be NULL). Returns count, 0 once at the
   end of each pass (the call after that starts the next pass), or a negative
   cnn_status. */
CNN_DEF int cnn_flow_next(cnn_flow *f, const float **x, const float **y);
/* Start pass `pass` (0-based) from its first batch. */
CNN_DEF int cnn_flow_reset(cnn_flow *f, int pass);
CNN_DEF int cnn_flow_len(const cnn_flow *f);         /* batches per pass: ceil(samples / batch_size) */
CNN_DEF int cnn_flow_samples(const cnn_flow *f);     /* images in one pass */
CNN_DEF int cnn_flow_num_classes(const cnn_flow *f); /* 0 when the targets are not labels */
CNN_DEF const char *cnn_flow_class_name(const cnn_flow *f, int k); /* NULL if none */
CNN_DEF const int *cnn_flow_classes(const cnn_flow *f);            /* [samples] labels, or NULL */
CNN_DEF const char *cnn_flow_filename(const cnn_flow *f, int i);   /* directory flows, else NULL */
CNN_DEF void cnn_flow_free(cnn_flow *f);

#ifndef __cplusplus
#define cnn_datagen_new(...) cnn_datagen_new_opt(&(cnn_datagen_opts){__VA_ARGS__})
#define cnn_datagen_fit(g, x, ...) cnn_datagen_fit_opt((g), (x), &(cnn_datagen_fit_opts){__VA_ARGS__})
#define cnn_datagen_fit_float(g, x, n, h, w, c, ...) \
    cnn_datagen_fit_float_opt((g), (x), (n), (h), (w), (c), &(cnn_datagen_fit_opts){__VA_ARGS__})
#define cnn_datagen_apply_transform(g, x, h, w, c, out, ...) \
    cnn_datagen_apply_transform_opt((g), (x), (h), (w), (c), &(cnn_transform){__VA_ARGS__}, (out))
#define cnn_datagen_flow(g, d, ...) cnn_datagen_flow_opt((g), (d), &(cnn_flow_opts){__VA_ARGS__})
#define cnn_datagen_flow_float(g, x, n, h, w, c, ...) \
    cnn_datagen_flow_float_opt((g), (x), (n), (h), (w), (c), &(cnn_flow_opts){__VA_ARGS__})
#define cnn_datagen_flow_from_directory(g, dir, ...) \
    cnn_datagen_flow_from_directory_opt((g), (dir), &(cnn_directory_flow_opts){__VA_ARGS__})
#endif

#ifdef __cplusplus
}
#endif
#endif /* CNN_AUGMENT_H_INCLUDED */

/* ######################################################################## */
/* #                          IMPLEMENTATION                              # */
/* ######################################################################## */
#ifdef CNN_AUGMENT_IMPLEMENTATION
#ifndef CNN_AUGMENT_IMPLEMENTATION_INCLUDED
#define CNN_AUGMENT_IMPLEMENTATION_INCLUDED

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#if defined(_MSC_VER)
#define CNN__AUG_NO_DIRENT 1 /* no opendir: the folder loaders report an error */
#else
#include <dirent.h>
#endif
/* lstat and S_ISLNK are POSIX.1-2001 (XSI); strict -std=c99 hides them on glibc. */
#if !defined(CNN__AUG_NO_DIRENT) && defined(S_ISLNK) &&                                   \
    ((defined(_POSIX_C_SOURCE) && _POSIX_C_SOURCE >= 200112L) || defined(_XOPEN_SOURCE) || \
     defined(__APPLE__) || defined(__FreeBSD__) || defined(__NetBSD__) || defined(__OpenBSD__))
#define CNN__AUG_HAVE_LSTAT 1
#endif

#ifndef CNN_MALLOC
#define CNN_MALLOC(sz) malloc(sz)
#define CNN_REALLOC(p, sz) realloc((p), (sz))
#define CNN_FREE(p) free(p)
#endif
#if defined(CNN_STATIC) && (defined(__GNUC__) || defined(__clang__))
#define CNN__AUG_IMPL static __attribute__((unused)) /* no warning for the ones not called */
#elif defined(CNN_STATIC)
#define CNN__AUG_IMPL static
#else
#define CNN__AUG_IMPL
#endif
#ifndef CNN_FASHION_MNIST_DIR
#define CNN_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"
#endif

/* ======================================================================== */
/* stb: stb_image (decode, zlib), stb_image_write (JPEG, BMP)               */
/* ======================================================================== */

#ifdef CNN_AUGMENT_STB_IMPLEMENTATION
#if defined(STBI_INCLUDE_STB_IMAGE_H) || defined(INCLUDE_STB_IMAGE_WRITE_H)
#error "cnn_augment.h: define CNN_AUGMENT_STB_IMPLEMENTATION before any stb header is included in this file"
#endif
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
/* stb_image 2.27 (Debian 12's) declares stbi_set_unpremultiply_on_load_thread but
   defines it as stbi__unpremultiply_on_load_thread: a static declaration without
   a definition warns. This name fixes 2.27 and is unused by other versions. */
#define stbi__unpremultiply_on_load_thread stbi_set_unpremultiply_on_load_thread
#endif

#if defined(__GNUC__) || defined(__clang__)
#pragma GCC diagnostic push
#ifdef __clang__
#pragma clang diagnostic ignored "-Wunknown-warning-option"
#else
#pragma GCC diagnostic ignored "-Wpragmas"
#endif
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wtype-limits"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wcast-qual"
#pragma GCC diagnostic ignored "-Wconversion"
#pragma GCC diagnostic ignored "-Wdouble-promotion"
#pragma GCC diagnostic ignored "-Wunused-value"
#endif
#ifdef CNN_STB_INCLUDE_PLAIN
#include "stb_image.h"
#include "stb_image_write.h"
#else
#include <stb/stb_image.h>
#include <stb/stb_image_write.h>
#endif
#if defined(__GNUC__) || defined(__clang__)
#pragma GCC diagnostic pop
#endif
#undef stbi__unpremultiply_on_load_thread

/* ======================================================================== */
/* Small helpers: paths, string lists, whole files                          */
/* ======================================================================== */

/* a + "/" + b, or NULL (error set) when out of memory */
static char *cnn__aug_join(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *s = (char *)CNN_MALLOC(la + lb + 2);
    if (!s) { cnn_set_error(CNN_ERR_MEMORY, "out of memory joining '%s' and '%s'", a, b); return NULL; }
    memcpy(s, a, la);
    if (la && a[la - 1] == '/') la--; /* "dir/" + "x" = "dir/x" */
    s[la] = '/';
    memcpy(s + la + 1, b, lb + 1);
    return s;
}

static char *cnn__aug_strdup(const char *a) {
    size_t n = strlen(a) + 1;
    char *s = (char *)CNN_MALLOC(n);
    if (s) memcpy(s, a, n);
    else cnn_set_error(CNN_ERR_MEMORY, "out of memory copying '%s'", a);
    return s;
}

/* does name end with suffix, ignoring ASCII case? */
static int cnn__aug_ends_with(const char *name, const char *suffix) {
    size_t n = strlen(name), k = strlen(suffix);
    if (k > n) return 0;
    name += n - k;
    for (size_t i = 0; i < k; i++) {
        int a = (unsigned char)name[i], b = (unsigned char)suffix[i];
        if (a >= 'A' && a <= 'Z') a += 'a' - 'A';
        if (a != b) return 0;
    }
    return 1;
}

static int cnn__aug_is_image_name(const char *name) {
    static const char *const ext[] = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tga", ".ppm", ".pgm"};
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++)
        if (cnn__aug_ends_with(name, ext[i]) && strlen(name) > strlen(ext[i])) return 1;
    return 0;
}

typedef struct cnn__aug_strlist {
    char **v;
    int n, cap;
} cnn__aug_strlist;

/* append s (owned by the list from now on, freed here on failure) */
static int cnn__aug_push(cnn__aug_strlist *l, char *s) {
    if (!s) return CNN_ERR_MEMORY;
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 16;
        char **v = (cap > 0 && (size_t)cap < (size_t)-1 / sizeof(char *))
                       ? (char **)CNN_REALLOC(l->v, (size_t)cap * sizeof(char *)) : NULL;
        if (!v) { CNN_FREE(s); return cnn_set_error(CNN_ERR_MEMORY, "out of memory listing files"); }
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = s;
    return CNN_OK;
}

static void cnn__aug_strlist_free(cnn__aug_strlist *l) {
    for (int i = 0; i < l->n; i++) CNN_FREE(l->v[i]);
    CNN_FREE(l->v);
    l->v = NULL;
    l->n = l->cap = 0;
}

static int cnn__aug_strcmp(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The order of Keras' file listing: sorted(os.walk(class folder)) by folder
   path, then each folder's files sorted by name, so a folder's own files come
   before those of its subfolders ("c/z.png" before "c/sub/a.png"). Paths are
   compared byte-wise, which for UTF-8 is Python's code-point order. */
static int cnn__aug_walk_cmp(const void *a, const void *b) {
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    const char *sx = strrchr(x, '/'), *sy = strrchr(y, '/');
    const size_t dx = sx ? (size_t)(sx - x) : 0, dy = sy ? (size_t)(sy - y) : 0;
    const int r = memcmp(x, y, dx < dy ? dx : dy);
    if (r) return r;
    if (dx != dy) return dx < dy ? -1 : 1; /* a folder sorts before its subfolders */
    return strcmp(sx ? sx + 1 : x, sy ? sy + 1 : y);
}

static int cnn__aug_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && !S_ISDIR(st.st_mode);
}

/* Read a whole file into a CNN_MALLOC'd buffer. */
static int cnn__aug_read_file(const char *path, const char *who, unsigned char **out, size_t *len) {
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL;
    size_t n = 0, cap = 0;
    *out = NULL;
    *len = 0;
    if (!f) return cnn_set_error(CNN_ERR_IO, "%s: cannot open '%s': %s", who, path, strerror(errno));
    for (;;) {
        size_t got;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : (size_t)1 << 16;
            unsigned char *nb = ncap > cap ? (unsigned char *)CNN_REALLOC(buf, ncap) : NULL;
            if (!nb) {
                CNN_FREE(buf);
                fclose(f);
                return cnn_set_error(CNN_ERR_MEMORY, "%s: out of memory reading '%s'", who, path);
            }
            buf = nb;
            cap = ncap;
        }
        got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    if (ferror(f)) {
        int e = errno;
        CNN_FREE(buf);
        fclose(f);
        return cnn_set_error(CNN_ERR_IO, "%s: cannot read '%s': %s", who, path, strerror(e));
    }
    fclose(f);
    *out = buf;
    *len = n;
    return CNN_OK;
}

/* ======================================================================== */
/* gzip (RFC 1952) around stb_image's inflate                               */
/* ======================================================================== */

static uint32_t cnn__aug_crc32(const unsigned char *p, size_t n) {
    uint32_t table[256], crc = 0xFFFFFFFFu;
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        table[i] = c;
    }
    for (size_t i = 0; i < n; i++) crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
    return crc ^ 0xFFFFFFFFu;
}

static uint32_t cnn__aug_le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint32_t cnn__aug_be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void cnn__aug_put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16), p[2] = (unsigned char)(v >> 8),
    p[3] = (unsigned char)v;
}

static const unsigned char cnn__png_signature[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};

/* File bytes, plain or inflated (CNN_MALLOC'd either way). */
typedef struct cnn__aug_blob {
    unsigned char *data;
    size_t len;
} cnn__aug_blob;

static void cnn__aug_blob_free(cnn__aug_blob *b) {
    CNN_FREE(b->data);
    b->data = NULL;
    b->len = 0;
}

/* Inflate one gzip member in[0..len) (which starts with 1f 8b). */
static int cnn__aug_gunzip(const unsigned char *in, size_t len, const char *path, const char *who,
                           cnn__aug_blob *out) {
    size_t p = 10, dlen;
    int flg, olen = 0, rc;
    uint32_t isize;
    char *dec;
    if (len < 18)
        return cnn_set_error(CNN_ERR_FORMAT, "%s: '%s' is a truncated gzip file (%zu bytes)", who, path, len);
    if (in[2] != 8)
        return cnn_set_error(CNN_ERR_FORMAT,
                             "%s: '%s': unsupported gzip compression method %d (only 8, deflate)", who, path,
                             in[2]);
    flg = in[3];
    if (flg & 0xE0)
        return cnn_set_error(CNN_ERR_FORMAT, "%s: '%s': reserved gzip header flags set", who, path);
    if (flg & 4) { /* FEXTRA: 2-byte length, then that many bytes */
        if (p + 2 > len) goto truncated;
        p += 2 + ((size_t)in[p] | (size_t)in[p + 1] << 8);
    }
    for (int field = 8; field <= 16; field *= 2) /* FNAME (8), FCOMMENT (16): zero-terminated */
        if (flg & field) {
            while (p < len && in[p]) p++;
            p++;
        }
    if (flg & 2) { /* FHCRC: low 16 bits of the header's CRC-32 */
        if (p + 2 > len) goto truncated;
        if ((cnn__aug_crc32(in, p) & 0xFFFF) != ((uint32_t)in[p] | (uint32_t)in[p + 1] << 8))
            return cnn_set_error(CNN_ERR_FORMAT, "%s: '%s': gzip header CRC mismatch", who, path);
        p += 2;
    }
    if (p + 8 > len) goto truncated;
    /* the 8 trailer bytes go to the decoder too: stb_image's inflate reads a few
       bytes ahead and reports a stream that ends exactly at its last code as corrupt */
    dlen = len - p;
    if (dlen > (size_t)INT_MAX)
        return cnn_set_error(CNN_ERR_FORMAT, "%s: '%s': gzip data over 2 GB is not supported", who, path);
    /* inflate into a buffer of the size the trailer gives (ISIZE), checked against
       the memory limit first: data that inflates to more is refused, however
       well it compresses (a few MB can inflate to GBs) */
    isize = cnn__aug_le32(in + len - 4);
    if (isize > (uint32_t)INT_MAX)
        return cnn_set_error(CNN_ERR_FORMAT, "%s: '%s': gzip data over 2 GB is not supported (ISIZE %lu)", who,
                             path, (unsigned long)isize);
    {
        char what[320];
        snprintf(what, sizeof what, "inflating '%.256s' (gzip)", path);
        if ((rc = cnn_check_memory(who, what, isize)) < 0) return rc;
    }
    /* deflate makes at most 1032 bytes of each byte it reads: a trailer claiming
       more is damaged, and must not make us allocate it */
    if ((unsigned long long)isize > 1032ull * dlen + 1024)
        return cnn_set_error(CNN_ERR_FORMAT,
                             "%s: '%s': damaged gzip trailer (it claims %lu bytes, more than deflate can make "
                             "of %zu bytes)",
                             who, path, (unsigned long)isize, dlen);
    dec = (char *)CNN_MALLOC(isize ? isize : 1);
    if (!dec) return cnn_set_error(CNN_ERR_MEMORY, "%s: out of memory inflating '%s'", who, path);
    olen = stbi_zlib_decode_noheader_buffer(dec, (int)isize, (const char *)in + p, (int)dlen);
    if (olen < 0) {
        CNN_FREE(dec);
        return cnn_set_error(CNN_ERR_FORMAT,
                             "%s: '%s': corrupt or truncated gzip data, or more of it than its trailer says "
                             "(%lu bytes) (%s)",
                             who, path, (unsigned long)isize,
                             stbi_failure_reason() ? stbi_failure_reason() : "inflate failed");
    }
    if ((uint32_t)olen != isize ||
        cnn__aug_crc32((const unsigned char *)dec, (size_t)olen) != cnn__aug_le32(in + len - 8)) {
        CNN_FREE(dec);
        return cnn_set_error(
            CNN_ERR_FORMAT,
            "%s: '%s': gzip length/CRC-32 mismatch (file truncated, damaged, or several gzip members)", who,
            path);
    }
    out->data = (unsigned char *)dec;
    out->len = (size_t)olen;
    return CNN_OK;
truncated:
    return cnn_set_error(CNN_ERR_FORMAT, "%s: '%s': truncated gzip header", who, path);
}

/* A file's bytes, inflated when it starts with the gzip magic 1f 8b. */
static int cnn__aug_load_maybe_gz(const char *path, const char *who, cnn__aug_blob *b) {
    unsigned char *raw;
    size_t len;
    int rc = cnn__aug_read_file(path, who, &raw, &len);
    b->data = NULL;
    b->len = 0;
    if (rc < 0) return rc;
    if (len >= 2 && raw[0] == 0x1f && raw[1] == 0x8b) {
        rc = cnn__aug_gunzip(raw, len, path, who, b);
        CNN_FREE(raw);
        return rc;
    }
    b->data = raw;
    b->len = len;
    return CNN_OK;
}

/* ======================================================================== */
/* IDX and Fashion-MNIST                                                    */
/* ======================================================================== */

CNN__AUG_IMPL cnn_dataset *cnn_load_idx_gz(const char *images_path, const char *labels_path) {
    static const char who[] = "cnn_load_idx_gz";
    cnn__aug_blob im, lb;
    cnn_dataset *d;
    if (!images_path || !labels_path) {
        cnn_set_error(CNN_ERR_ARG, "%s: %s is NULL", who, images_path ? "labels_path" : "images_path");
        return NULL;
    }
    if (cnn__aug_load_maybe_gz(images_path, who, &im) < 0) return NULL;
    if (cnn__aug_load_maybe_gz(labels_path, who, &lb) < 0) { cnn__aug_blob_free(&im); return NULL; }
    d = cnn_load_idx_memory(im.data, im.len, lb.data, lb.len);
    cnn__aug_blob_free(&im);
    cnn__aug_blob_free(&lb);
    if (!d) { /* add the file names to cnn.h's message */
        char why[400];
        const char *e = cnn_last_error();
        size_t n = strlen(e) < sizeof why ? strlen(e) : sizeof why - 1;
        memcpy(why, e, n);
        why[n] = 0;
        cnn_set_error(CNN_ERR_FORMAT, "%s('%s', '%s'): %s", who, images_path, labels_path, why);
    }
    return d;
}

CNN__AUG_IMPL cnn_dataset *cnn_load_fashion_mnist(const char *dir, int train) {
    static const char *const names[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                          "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};
    static const char *const kinds[2] = {"images-idx3-ubyte", "labels-idx1-ubyte"};
    char *path[2] = {NULL, NULL};
    cnn_dataset *d = NULL;
    if (!dir) dir = CNN_FASHION_MNIST_DIR;
    for (int i = 0; i < 2; i++) {
        char base[64], gz[72];
        char *raw;
        snprintf(base, sizeof base, "%s-%s", train ? "train" : "t10k", kinds[i]);
        snprintf(gz, sizeof gz, "%s.gz", base);
        path[i] = cnn__aug_join(dir, gz);
        if (!path[i]) goto done;
        if (cnn__aug_file_exists(path[i])) continue;
        raw = cnn__aug_join(dir, base);
        if (!raw) goto done;
        if (!cnn__aug_file_exists(raw)) {
            cnn_set_error(CNN_ERR_IO,
                          "cnn_load_fashion_mnist: neither '%s' nor '%s' exists (install Debian's "
                          "dataset-fashion-mnist, or pass the folder that holds the files)", path[i], raw);
            CNN_FREE(raw);
            goto done;
        }
        CNN_FREE(path[i]);
        path[i] = raw;
    }
    d = cnn_load_idx_gz(path[0], path[1]);
    if (!d) goto done;
    if (d->num_classes > 10 || d->c != 1) {
        cnn_set_error(CNN_ERR_FORMAT,
                      "cnn_load_fashion_mnist: '%s' has %d classes of %d channel(s), not Fashion-MNIST's "
                      "10 grey classes",
                      path[1], d->num_classes, d->c);
        cnn_dataset_free(d);
        d = NULL;
        goto done;
    }
    if (!d->class_names) d->num_classes = 10; /* a subset may lack the last classes */
    if (cnn_dataset_set_class_names(d, names, 10) < 0) { cnn_dataset_free(d); d = NULL; }
done:
    CNN_FREE(path[0]);
    CNN_FREE(path[1]);
    return d;
}

/* ======================================================================== */
/* NumPy .npz: a ZIP reader (stored and deflated members, ZIP64)            */
/* ======================================================================== */
/* What is read, all little-endian (PKWARE's APPNOTE): the end of central
   directory record (22 bytes + a comment) at the end of the file; when one of
   its fields is saturated (0xFFFF, 0xFFFFFFFF), the ZIP64 end record found
   through the locator just before it; the central directory, one 46-byte
   header + name + extra + comment per member, its sizes and local header
   offset in a ZIP64 extra field (id 1) when saturated; then the member's local
   header (30 bytes + name + extra) and its data. NumPy's savez writes ZIP64
   extras in every local header and, past 4 GiB, in the central directory. */

static uint64_t cnn__npz_le64(const unsigned char *p) {
    return (uint64_t)cnn__aug_le32(p) | (uint64_t)cnn__aug_le32(p + 4) << 32;
}
static unsigned cnn__npz_le16(const unsigned char *p) { return (unsigned)p[0] | (unsigned)p[1] << 8; }

typedef struct cnn__npz_member {
    char name[256];
    const unsigned char *data; /* the member's bytes in the archive */
    uint64_t csize, usize;     /* compressed, uncompressed */
    uint32_t crc;
    unsigned method, flags;
} cnn__npz_member;

/* Fill the ZIP64 fields (id 1) that saturated: usize, csize, offset in this
   order, each present only when its field is 0xFFFFFFFF. */
static int cnn__npz_zip64(const unsigned char *x, size_t xlen, uint64_t *usize, uint64_t *csize, uint64_t *offset) {
    size_t at = 0;
    while (at + 4 <= xlen) {
        unsigned id = cnn__npz_le16(x + at), sz = cnn__npz_le16(x + at + 2);
        if (at + 4 + sz > xlen) return 0;
        if (id == 1) {
            const unsigned char *f = x + at + 4;
            size_t k = 0;
            uint64_t *fields[3] = {usize, csize, offset};
            for (int i = 0; i < 3; i++) {
                if (!fields[i] || *fields[i] != 0xFFFFFFFFu) continue;
                if (k + 8 > sz) return 0;
                *fields[i] = cnn__npz_le64(f + k);
                k += 8;
            }
            return 1;
        }
        at += 4 + sz;
    }
    return 1;
}

/* Find member `name` in the archive z[0..len): 1 with m filled, 0 when absent
   (a list of the names there in `have`), or a negative error naming `where`. */
static int cnn__npz_find(const unsigned char *z, size_t len, const char *where, const char *name,
                         cnn__npz_member *m, char *have, size_t have_cap) {
    size_t eocd = 0, at;
    int found_eocd = 0;
    if (have_cap) have[0] = 0;
    /* the end record: the last PK\5\6 whose comment ends the file (or fits in it) */
    for (size_t back = 22; back <= len && back <= 22 + 65535; back++) {
        const unsigned char *p = z + len - back;
        if (cnn__aug_le32(p) == 0x06054b50u && back >= 22 + (size_t)cnn__npz_le16(p + 20)) {
            eocd = len - back;
            found_eocd = 1;
            break;
        }
    }
    if (!found_eocd)
        return cnn_set_error(CNN_ERR_FORMAT, "%s: not a ZIP archive (no end of central directory record)", where);
    uint64_t entries = cnn__npz_le16(z + eocd + 10), cd_size = cnn__aug_le32(z + eocd + 12),
             cd_off = cnn__aug_le32(z + eocd + 16);
    if (cnn__npz_le16(z + eocd + 4) || cnn__npz_le16(z + eocd + 6))
        return cnn_set_error(CNN_ERR_FORMAT, "%s: multi-part ZIP archives are not supported", where);
    if (entries == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_off == 0xFFFFFFFFu) {
        if (eocd < 20 || cnn__aug_le32(z + eocd - 20) != 0x07064b50u)
            return cnn_set_error(CNN_ERR_FORMAT, "%s: ZIP64 end of central directory locator missing", where);
        uint64_t z64 = cnn__npz_le64(z + eocd - 20 + 8);
        if (z64 > eocd - 20 || eocd - 20 - z64 < 56 || cnn__aug_le32(z + z64) != 0x06064b50u)
            return cnn_set_error(CNN_ERR_FORMAT, "%s: bad ZIP64 end of central directory record (offset %llu)",
                                 where, (unsigned long long)z64);
        entries = cnn__npz_le64(z + z64 + 32);
        cd_size = cnn__npz_le64(z + z64 + 40);
        cd_off = cnn__npz_le64(z + z64 + 48);
    }
    if (cd_off > len || cd_size > len - cd_off)
        return cnn_set_error(CNN_ERR_FORMAT,
                             "%s: the central directory (offset %llu, %llu bytes) lies outside the file (%zu bytes)",
                             where, (unsigned long long)cd_off, (unsigned long long)cd_size, len);
    const size_t cd_end = (size_t)(cd_off + cd_size);
    at = (size_t)cd_off;
    for (uint64_t e = 0; e < entries; e++) {
        const unsigned char *c = z + at;
        if (cd_end - at < 46 || cnn__aug_le32(c) != 0x02014b50u)
            return cnn_set_error(CNN_ERR_FORMAT, "%s: central directory entry %llu is damaged or missing", where,
                                 (unsigned long long)e);
        size_t nlen = cnn__npz_le16(c + 28), xlen = cnn__npz_le16(c + 30), clen = cnn__npz_le16(c + 32);
        if (cd_end - at - 46 < nlen + xlen + clen)
            return cnn_set_error(CNN_ERR_FORMAT, "%s: central directory entry %llu runs past the directory", where,
                                 (unsigned long long)e);
        const char *nm = (const char *)c + 46;
        if (strlen(name) != nlen || memcmp(nm, name, nlen)) { /* not this one: note its name */
            size_t used = have_cap ? strlen(have) : 0;
            if (have_cap && used + nlen + 3 < have_cap) {
                snprintf(have + used, have_cap - used, "%s%.*s", used ? ", " : "", (int)nlen, nm);
            } else if (have_cap > 4 && used + 4 < have_cap && (used < 3 || strcmp(have + used - 3, "..."))) {
                snprintf(have + used, have_cap - used, "...");
            }
            at += 46 + nlen + xlen + clen;
            continue;
        }
        uint64_t csize = cnn__aug_le32(c + 20), usize = cnn__aug_le32(c + 24), off = cnn__aug_le32(c + 42);
        if (!cnn__npz_zip64(c + 46 + nlen, xlen, &usize, &csize, &off))
            return cnn_set_error(CNN_ERR_FORMAT, "%s: member '%s': damaged extra field (ZIP64 sizes)", where, name);
        memset(m, 0, sizeof *m);
        snprintf(m->name, sizeof m->name, "%s", name);
        m->flags = cnn__npz_le16(c + 8);
        m->method = cnn__npz_le16(c + 10);
        m->crc = cnn__aug_le32(c + 16);
        m->csize = csize;
        m->usize = usize;
        /* the local header: the same name; the same sizes unless they follow the data (flag 8) */
        if (off > len || len - off < 30 || cnn__aug_le32(z + off) != 0x04034b50u)
            return cnn_set_error(CNN_ERR_FORMAT, "%s: member '%s': no local header at offset %llu", where, name,
                                 (unsigned long long)off);
        const unsigned char *l = z + off;
        size_t lnlen = cnn__npz_le16(l + 26), lxlen = cnn__npz_le16(l + 28);
        if (len - off - 30 < lnlen + lxlen || lnlen != nlen || memcmp(l + 30, name, nlen))
            return cnn_set_error(CNN_ERR_FORMAT, "%s: member '%s': its local header is damaged", where, name);
        if (!(m->flags & 8)) {
            uint64_t lc = cnn__aug_le32(l + 18), lu = cnn__aug_le32(l + 22);
            if (!cnn__npz_zip64(l + 30 + lnlen, lxlen, &lu, &lc, NULL) || lc != csize || lu != usize)
                return cnn_set_error(CNN_ERR_FORMAT,
                                     "%s: member '%s': the local header's sizes (%llu, %llu) differ from the central "
                                     "directory's (%llu, %llu)", where, name, (unsigned long long)lc,
                                     (unsigned long long)lu, (unsigned long long)csize, (unsigned long long)usize);
        }
        size_t data = (size_t)off + 30 + lnlen + lxlen;
        if (csize > len - data)
            return cnn_set_error(CNN_ERR_FORMAT, "%s: member '%s': %llu bytes of data run past the end of the file "
                                 "(truncated?)", where, name, (unsigned long long)csize);
        m->data = z + data;
        return 1;
    }
    return 0;
}

/* The member's bytes: a view into the archive (stored) or an inflated copy
   (*owned, CNN_MALLOC'd); CRC-32 checked either way. */
static int cnn__npz_extract(const cnn__npz_member *m, const unsigned char *z, size_t len, const char *who,
                            const char *where, const unsigned char **out, size_t *out_len, unsigned char **owned) {
    *owned = NULL;
    if (m->flags & 1)
        return cnn_set_error(CNN_ERR_FORMAT, "%s: member '%s' is encrypted", where, m->name);
    if (m->method == 0) {
        if (m->csize != m->usize)
            return cnn_set_error(CNN_ERR_FORMAT, "%s: stored member '%s' has %llu bytes but claims %llu", where,
                                 m->name, (unsigned long long)m->csize, (unsigned long long)m->usize);
        *out = m->data;
        *out_len = (size_t)m->usize;
    } else if (m->method == 8) {
        char what[320];
        int rc, olen;
        snprintf(what, sizeof what, "inflating %.256s", m->name);
        if ((rc = cnn_check_memory(who, what, m->usize)) < 0) return rc;
        if (m->usize > (uint64_t)INT_MAX || m->csize > (uint64_t)INT_MAX - 16)
            return cnn_set_error(CNN_ERR_FORMAT, "%s: member '%s': deflated members over 2 GB are not supported "
                                 "(save with np.savez, uncompressed)", where, m->name);
        /* deflate makes at most 1032 bytes of each byte it reads */
        if (m->usize > 1032ull * m->csize + 1024)
            return cnn_set_error(CNN_ERR_FORMAT, "%s: member '%s' claims %llu bytes, more than deflate makes of "
                                 "%llu", where, m->name, (unsigned long long)m->usize,
                                 (unsigned long long)m->csize);
        unsigned char *buf = (unsigned char *)CNN_MALLOC(m->usize ? (size_t)m->usize : 1);
        if (!buf) return cnn_set_error(CNN_ERR_MEMORY, "%s: out of memory inflating '%s'", who, m->name);
        /* a few bytes past the member go to the decoder (the central directory
           follows it): stb_image's inflate reads ahead */
        size_t avail = (size_t)(len - (size_t)(m->data - z)), in = (size_t)m->csize + 16;
        olen = stbi_zlib_decode_noheader_buffer((char *)buf, (int)m->usize, (const char *)m->data,
                                                (int)(in < avail ? in : avail));
        if (olen < 0) {
            CNN_FREE(buf);
            return cnn_set_error(CNN_ERR_FORMAT, "%s: member '%s': corrupt deflate data, or more than the %llu "
                                 "bytes its header says (%s)", where, m->name, (unsigned long long)m->usize,
                                 stbi_failure_reason() ? stbi_failure_reason() : "inflate failed");
        }
        if ((uint64_t)olen != m->usize) {
            CNN_FREE(buf);
            return cnn_set_error(CNN_ERR_FORMAT, "%s: member '%s' inflates to %d bytes, not the %llu its header "
                                 "says", where, m->name, olen, (unsigned long long)m->usize);
        }
        *out = *owned = buf;
        *out_len = (size_t)olen;
    } else {
        return cnn_set_error(CNN_ERR_FORMAT, "%s: member '%s': compression method %u is not supported (0, stored, "
                             "and 8, deflate, are)", where, m->name, m->method);
    }
    if (cnn__aug_crc32(*out, *out_len) != m->crc) {
        CNN_FREE(*owned);
        *owned = NULL;
        return cnn_set_error(CNN_ERR_FORMAT, "%s: member '%s': CRC-32 mismatch (the archive is damaged)", where,
                             m->name);
    }
    return CNN_OK;
}

/* the member name for a key: "x_train" -> "x_train.npy" (a key with .npy stays) */
static void cnn__npz_member_name(const char *key, char *out, size_t cap) {
    size_t n = strlen(key);
    snprintf(out, cap, "%s%s", key, n >= 4 && !strcmp(key + n - 4, ".npy") ? "" : ".npy");
}

/* Find and extract member `key`; -1 with an error when absent. */
static int cnn__npz_get(const unsigned char *z, size_t len, const char *who, const char *where, const char *key,
                        const unsigned char **out, size_t *out_len, unsigned char **owned) {
    cnn__npz_member m;
    char name[256], have[200];
    *owned = NULL;
    if (strlen(key) > 200) return cnn_set_error(CNN_ERR_ARG, "%s: key '%.40s...' is too long", who, key);
    cnn__npz_member_name(key, name, sizeof name);
    int rc = cnn__npz_find(z, len, where, name, &m, have, sizeof have);
    if (rc < 0) return rc;
    if (rc == 0)
        return cnn_set_error(CNN_ERR_FORMAT, "%s: no member '%s' (the archive holds: %s)", where, name,
                             have[0] ? have : "nothing");
    return cnn__npz_extract(&m, z, len, who, where, out, out_len, owned);
}

/* cnn.h's "fn: images: why" (or labels, x, y) becomes "where: member 'x.npy': why" */
static void cnn__npz_rename_error(const char *fn, const char *where, const char *x_key, const char *y_key) {
    static const char *const roles[4] = {"images", "labels", "x", "y"};
    char why[400], name[256];
    const char *e = cnn_last_error();
    size_t fl = strlen(fn);
    if (strncmp(e, fn, fl) || strncmp(e + fl, ": ", 2)) return;
    for (int i = 0; i < 4; i++) {
        size_t rl = strlen(roles[i]);
        if (!strncmp(e + fl + 2, roles[i], rl) && !strncmp(e + fl + 2 + rl, ": ", 2)) {
            snprintf(why, sizeof why, "%s", e + fl + 2 + rl + 2);
            cnn__npz_member_name(i % 2 ? y_key : x_key, name, sizeof name);
            cnn_set_error(CNN_ERR_FORMAT, "%s: member '%s': %s", where, name, why);
            return;
        }
    }
}

/* the two members x_key and y_key (y_key may be NULL for float arrays) as a dataset or float arrays */
static void *cnn__npz_load(const unsigned char *z, size_t len, const char *who, const char *where, const char *x_key,
                           const char *y_key, int floats) {
    const unsigned char *x = NULL, *y = NULL;
    size_t xl = 0, yl = 0;
    unsigned char *xo = NULL, *yo = NULL;
    void *r = NULL;
    if (!x_key || (!y_key && !floats)) {
        cnn_set_error(CNN_ERR_ARG, "%s: %s is NULL", who, x_key ? "y_key" : "x_key");
        return NULL;
    }
    if (cnn__npz_get(z, len, who, where, x_key, &x, &xl, &xo) < 0 ||
        (y_key && cnn__npz_get(z, len, who, where, y_key, &y, &yl, &yo) < 0))
        goto done;
    if (floats) {
        r = cnn_load_npy_float_memory(x, xl, y, yl);
        if (!r) cnn__npz_rename_error("cnn_load_npy_float_memory", where, x_key, y_key ? y_key : "");
    } else {
        r = cnn_load_npy_memory(x, xl, y, yl);
        if (!r) cnn__npz_rename_error("cnn_load_npy_memory", where, x_key, y_key);
    }
done:
    CNN_FREE(xo);
    CNN_FREE(yo);
    return r;
}

CNN__AUG_IMPL cnn_dataset *cnn_load_npz_memory(const unsigned char *data, size_t len, const char *x_key,
                                               const char *y_key) {
    static const char who[] = "cnn_load_npz_memory";
    if (!data) { cnn_set_error(CNN_ERR_ARG, "%s: data is NULL", who); return NULL; }
    return (cnn_dataset *)cnn__npz_load(data, len, who, who, x_key, y_key, 0);
}

static void *cnn__npz_load_file(const char *who, const char *path, const char *x_key, const char *y_key, int floats) {
    unsigned char *z;
    size_t len;
    char where[600];
    if (!path) { cnn_set_error(CNN_ERR_ARG, "%s: path is NULL", who); return NULL; }
    if (cnn__aug_read_file(path, who, &z, &len) < 0) return NULL;
    snprintf(where, sizeof where, "%s: '%.500s'", who, path);
    void *r = cnn__npz_load(z, len, who, where, x_key, y_key, floats);
    CNN_FREE(z);
    return r;
}

CNN__AUG_IMPL cnn_dataset *cnn_load_npz(const char *path, const char *x_key, const char *y_key) {
    return (cnn_dataset *)cnn__npz_load_file("cnn_load_npz", path, x_key, y_key, 0);
}

CNN__AUG_IMPL cnn_float_arrays *cnn_load_npz_float(const char *path, const char *x_key, const char *y_key) {
    return (cnn_float_arrays *)cnn__npz_load_file("cnn_load_npz_float", path, x_key, y_key, 1);
}

CNN__AUG_IMPL int cnn_npz_has(const char *path, const char *key) {
    static const char who[] = "cnn_npz_has";
    unsigned char *z;
    size_t len;
    char where[600], name[256];
    cnn__npz_member m;
    if (!path || !key) return cnn_set_error(CNN_ERR_ARG, "%s: %s is NULL", who, path ? "key" : "path");
    if (strlen(key) > 200) return cnn_set_error(CNN_ERR_ARG, "%s: key '%.40s...' is too long", who, key);
    int rc = cnn__aug_read_file(path, who, &z, &len);
    if (rc < 0) return rc;
    snprintf(where, sizeof where, "%s: '%.500s'", who, path);
    cnn__npz_member_name(key, name, sizeof name);
    rc = cnn__npz_find(z, len, where, name, &m, NULL, 0);
    CNN_FREE(z);
    return rc;
}

/* ======================================================================== */
/* Resizing by PIL's rules (what Keras' load_img calls)                     */
/* ======================================================================== */
/* PIL's Image.resize, restated so that our pixels are PIL's pixels:
     - nearest: output pixel x reads input column floor(x0 + (x + 1/2) * s)
       with s = in / out, the position stepped by repeated addition of s in
       double (so exact ties such as 32 -> 28 fall where PIL's fall);
     - the other filters: a separable convolution, the horizontal pass first
       into a uint8 image, then the vertical one. Output pixel x is centred at
       in0 + (x + 1/2) * s; the filter is stretched by max(s, 1) when shrinking
       (so it averages every input pixel it covers), cut to the input, its
       weights normalised to sum 1 and rounded to 22-bit fixed point; each
       sum is rounded (+ 2^21) and clamped to 0..255.
     - LA and RGBA are premultiplied by alpha before filtering and divided
       after (PIL's "La" / "RGBa" modes), so transparent pixels do not bleed. */

#define CNN__RS_BITS 22 /* PIL's PRECISION_BITS: 32 - 8 bits of pixel - 2 of headroom */

/* a * b rounded to double before anything else sees it. PIL's x86-64 build
   rounds every product; a compiler allowed to fuse a * b + c into one
   instruction would not, and one unit in the last place moves a window bound
   or a weight at an exact tie. Only the per-row and per-column tables use it. */
static double cnn__rs_mul(double a, double b) {
    volatile double p = a * b;
    return p;
}

static double cnn__rs_sinc(double x) {
    if (x == 0.0) return 1.0;
    x = cnn__rs_mul(x, 3.14159265358979323846);
    return sin(x) / x;
}

/* The filter kernels (x in input pixels at scale 1) and their supports. */
static double cnn__rs_filter(cnn_interpolation f, double x) {
    switch (f) {
    case CNN_INTERP_BOX: return x > -0.5 && x <= 0.5 ? 1.0 : 0.0;
    case CNN_INTERP_HAMMING:
        x = fabs(x);
        if (x == 0.0) return 1.0;
        if (x >= 1.0) return 0.0;
        x = cnn__rs_mul(x, 3.14159265358979323846);
        /* PIL writes the window's constants as floats: 0.54f, 0.46f */
        return cnn__rs_mul(sin(x) / x, (double)0.54f + cnn__rs_mul((double)0.46f, cos(x)));
    case CNN_INTERP_BICUBIC: /* Keys' cubic convolution, a = -0.5 */
        x = fabs(x);
        if (x < 1.0) return cnn__rs_mul(cnn__rs_mul(cnn__rs_mul(1.5, x) - 2.5, x), x) + 1;
        if (x < 2.0) return cnn__rs_mul(cnn__rs_mul(cnn__rs_mul(x - 5, x) + 8, x) - 4, -0.5);
        return 0.0;
    case CNN_INTERP_LANCZOS: /* sinc windowed by a sinc three times wider */
        return -3.0 <= x && x < 3.0 ? cnn__rs_mul(cnn__rs_sinc(x), cnn__rs_sinc(x / 3)) : 0.0;
    default: /* bilinear: the triangle */
        x = fabs(x);
        return x < 1.0 ? 1.0 - x : 0.0;
    }
}

static double cnn__rs_support(cnn_interpolation f) {
    return f == CNN_INTERP_BOX ? 0.5 : f == CNN_INTERP_BICUBIC ? 2.0 : f == CNN_INTERP_LANCZOS ? 3.0 : 1.0;
}

/* One axis' table: output pixel i reads the inputs first[i] .. first[i] + count[i] - 1
   with the fixed-point weights k[i * ksize ...]. The span [in0, in1) of the
   input is resized to n_out pixels. Returns ksize, or 0 out of memory. */
typedef struct cnn__rs_axis {
    int ksize;
    int *first, *count; /* [n_out] */
    int32_t *k;         /* [n_out][ksize] */
} cnn__rs_axis;

static void cnn__rs_axis_free(cnn__rs_axis *a) {
    CNN_FREE(a->first);
    CNN_FREE(a->count);
    CNN_FREE(a->k);
}

static int cnn__rs_axis_init(cnn__rs_axis *a, int n_in, float in0, float in1, int n_out,
                             cnn_interpolation f) {
    const double scale = (double)(in1 - in0) / n_out, filterscale = scale < 1.0 ? 1.0 : scale;
    const double support = cnn__rs_mul(cnn__rs_support(f), filterscale), ss = 1.0 / filterscale;
    double *w;
    memset(a, 0, sizeof *a);
    a->ksize = (int)ceil(support) * 2 + 1;
    if ((double)n_out * a->ksize > (double)(INT_MAX / 8)) return 0;
    w = (double *)CNN_MALLOC((size_t)a->ksize * sizeof(double));
    a->first = (int *)CNN_MALLOC((size_t)n_out * sizeof(int));
    a->count = (int *)CNN_MALLOC((size_t)n_out * sizeof(int));
    a->k = (int32_t *)CNN_MALLOC((size_t)n_out * (size_t)a->ksize * sizeof(int32_t));
    if (!w || !a->first || !a->count || !a->k) {
        CNN_FREE(w);
        cnn__rs_axis_free(a);
        return 0;
    }
    for (int i = 0; i < n_out; i++) {
        const double center = in0 + cnn__rs_mul(i + 0.5, scale);
        int lo = (int)(center - support + 0.5), hi = (int)(center + support + 0.5);
        double sum = 0;
        int32_t *k = a->k + (size_t)i * (size_t)a->ksize;
        if (lo < 0) lo = 0;
        if (hi > n_in) hi = n_in;
        hi -= lo; /* now the count (never above ksize: the window is 2 * support wide) */
        if (hi > a->ksize) hi = a->ksize;
        if (hi < 0) hi = 0;
        for (int j = 0; j < hi; j++) {
            w[j] = cnn__rs_filter(f, cnn__rs_mul((double)(j + lo) - center + 0.5, ss));
            sum += w[j];
        }
        for (int j = 0; j < a->ksize; j++) {
            double v = j < hi && sum != 0.0 ? w[j] / sum : j < hi ? w[j] : 0.0;
            v *= (double)(1 << CNN__RS_BITS); /* exact: a power of two */
            k[j] = (int32_t)(v < 0 ? v - 0.5 : v + 0.5);
        }
        a->first[i] = lo;
        a->count[i] = hi;
    }
    CNN_FREE(w);
    return a->ksize;
}

/* A fixed-point sum (with its rounding half already in) as a pixel. */
static unsigned char cnn__rs_clip(int64_t s) {
    if (s < 0) return 0;
    s >>= CNN__RS_BITS;
    return (unsigned char)(s > 255 ? 255 : s);
}

/* The pass across: out [oh][ow][c] from rows row0 .. row0 + oh - 1 of in [..][iw][c]. */
static void cnn__rs_pass_x(const unsigned char *in, int iw, int row0, unsigned char *out, int ow, int oh,
                           int c, const cnn__rs_axis *a) {
    for (int y = 0; y < oh; y++) {
        const unsigned char *row = in + (size_t)(y + row0) * (size_t)iw * (size_t)c;
        unsigned char *o = out + (size_t)y * (size_t)ow * (size_t)c;
        for (int x = 0; x < ow; x++) {
            const int32_t *k = a->k + (size_t)x * (size_t)a->ksize;
            const unsigned char *p = row + (size_t)a->first[x] * (size_t)c;
            for (int ch = 0; ch < c; ch++) {
                int64_t sum = (int64_t)1 << (CNN__RS_BITS - 1);
                for (int j = 0; j < a->count[x]; j++) sum += (int64_t)p[(size_t)j * c + ch] * k[j];
                o[(size_t)x * c + ch] = cnn__rs_clip(sum);
            }
        }
    }
}

/* The pass down: out [oh][w][c] from in [..][w][c], output row y reading from
   row a->first[y] - row0. */
static void cnn__rs_pass_y(const unsigned char *in, int w, int row0, unsigned char *out, int oh, int c,
                           const cnn__rs_axis *a) {
    const size_t stride = (size_t)w * (size_t)c;
    for (int y = 0; y < oh; y++) {
        const int32_t *k = a->k + (size_t)y * (size_t)a->ksize;
        const unsigned char *col = in + (size_t)(a->first[y] - row0) * stride;
        unsigned char *o = out + (size_t)y * stride;
        for (size_t i = 0; i < stride; i++) {
            int64_t sum = (int64_t)1 << (CNN__RS_BITS - 1);
            for (int j = 0; j < a->count[y]; j++) sum += (int64_t)col[(size_t)j * stride + i] * k[j];
            o[i] = cnn__rs_clip(sum);
        }
    }
}

/* Filtered resize of src [sh][sw][c], its span box {x0, y0, x1, y1}, into dst
   [dh][dw][c]: PIL's ImagingResample. Each pass rounds to uint8, so the order
   matters: across first, unless the height shrinks by more than twice as many
   pixels as the width does (Pillow 13's rule); across first only resizes the
   rows the pass down will read. Returns CNN_OK or CNN_ERR_MEMORY. */
static int cnn__rs_filtered(const unsigned char *src, int sw, int sh, int c, unsigned char *dst, int dw,
                            int dh, cnn_interpolation f, const float box[4]) {
    const int need_x = dw != sw || box[0] != 0 || box[2] != (float)dw;
    const int need_y = dh != sh || box[1] != 0 || box[3] != (float)dh;
    const int x_first = !(sh - dh > 0 && sh - dh > (sw - dw) * 2);
    cnn__rs_axis ax, ay;
    unsigned char *tmp = NULL;
    int rc = CNN_OK;
    memset(&ax, 0, sizeof ax);
    memset(&ay, 0, sizeof ay);
    if ((need_y && !cnn__rs_axis_init(&ay, sh, box[1], box[3], dh, f)) ||
        (need_x && !cnn__rs_axis_init(&ax, sw, box[0], box[2], dw, f))) {
        rc = CNN_ERR_MEMORY;
        goto done;
    }
    if (need_x && need_y) {
        if (x_first) { /* rows row0 .. row1 - 1 across into tmp [rows][dw], then down */
            const int row0 = ay.first[0], row1 = ay.first[dh - 1] + ay.count[dh - 1];
            const size_t rows = (size_t)(row1 > row0 ? row1 - row0 : 1);
            if (!(tmp = (unsigned char *)CNN_MALLOC((size_t)dw * rows * (size_t)c))) {
                rc = CNN_ERR_MEMORY;
                goto done;
            }
            cnn__rs_pass_x(src, sw, row0, tmp, dw, row1 - row0, c, &ax);
            cnn__rs_pass_y(tmp, dw, row0, dst, dh, c, &ay);
        } else { /* down into tmp [dh][sw], then across */
            if (!(tmp = (unsigned char *)CNN_MALLOC((size_t)sw * (size_t)dh * (size_t)c))) {
                rc = CNN_ERR_MEMORY;
                goto done;
            }
            cnn__rs_pass_y(src, sw, 0, tmp, dh, c, &ay);
            cnn__rs_pass_x(tmp, sw, 0, dst, dw, dh, c, &ax);
        }
    } else if (need_x) {
        cnn__rs_pass_x(src, sw, 0, dst, dw, dh, c, &ax);
    } else if (need_y) {
        cnn__rs_pass_y(src, sw, 0, dst, dh, c, &ay);
    } else {
        memcpy(dst, src, (size_t)dw * (size_t)dh * (size_t)c);
    }
done:
    CNN_FREE(tmp);
    cnn__rs_axis_free(&ax);
    cnn__rs_axis_free(&ay);
    return rc;
}

/* Nearest resize of the span box of src: PIL's ImagingScaleAffine (positions
   stepped by repeated addition; a position outside the input leaves a 0). */
static int cnn__rs_nearest(const unsigned char *src, int sw, int sh, int c, unsigned char *dst, int dw,
                           int dh, const float box[4]) {
    const double sx = (double)(box[2] - box[0]) / dw, sy = (double)(box[3] - box[1]) / dh;
    int *col = (int *)CNN_MALLOC((size_t)dw * sizeof(int));
    double pos = box[0] + sx * 0.5;
    if (!col) return CNN_ERR_MEMORY;
    for (int x = 0; x < dw; x++, pos += sx) {
        const int xi = pos < 0.0 ? -1 : (int)pos;
        col[x] = xi < sw ? xi : -1;
    }
    pos = box[1] + sy * 0.5;
    for (int y = 0; y < dh; y++, pos += sy) {
        const int yi = pos < 0.0 ? -1 : (int)pos;
        unsigned char *out = dst + (size_t)y * (size_t)dw * (size_t)c;
        for (int x = 0; x < dw; x++)
            for (int ch = 0; ch < c; ch++)
                out[(size_t)x * c + ch] = yi >= 0 && yi < sh && col[x] >= 0
                                              ? src[((size_t)yi * (size_t)sw + (size_t)col[x]) * c + ch] : 0;
    }
    CNN_FREE(col);
    return CNN_OK;
}

/* PIL's (a * b + 127) / 255 for the premultiplication, exactly. */
static unsigned char cnn__rs_muldiv255(unsigned a, unsigned b) {
    const unsigned t = a * b + 128;
    return (unsigned char)(((t >> 8) + t) >> 8);
}

/* PIL's Image.resize(size, filter, box) for src [sh][sw][c], c = 1..4 (L, LA,
   RGB, RGBA), into dst [dh][dw][c]. Returns CNN_OK or CNN_ERR_MEMORY. */
static int cnn__rs_resize_box(const unsigned char *src, int sw, int sh, int c, unsigned char *dst, int dw,
                              int dh, cnn_interpolation f, const float box[4]) {
    const size_t n_in = (size_t)sw * (size_t)sh, n_out = (size_t)dw * (size_t)dh;
    const int alpha = (c == 2 || c == 4) && f != CNN_INTERP_NEAREST;
    unsigned char *pre = NULL;
    int rc;
    if (dw == sw && dh == sh && box[0] == 0 && box[1] == 0 && box[2] == (float)sw && box[3] == (float)sh) {
        memcpy(dst, src, n_in * (size_t)c); /* PIL: a copy */
        return CNN_OK;
    }
    if (alpha) { /* colours premultiplied by alpha ("La", "RGBa") */
        if (!(pre = (unsigned char *)CNN_MALLOC(n_in * (size_t)c))) return CNN_ERR_MEMORY;
        for (size_t i = 0; i < n_in; i++) {
            const unsigned char *p = src + i * (size_t)c;
            unsigned char *q = pre + i * (size_t)c;
            for (int ch = 0; ch < c - 1; ch++) q[ch] = cnn__rs_muldiv255(p[ch], p[c - 1]);
            q[c - 1] = p[c - 1];
        }
        src = pre;
    }
    if (box[0] == (float)(int)box[0] && box[1] == (float)(int)box[1] && box[2] - box[0] == (float)dw &&
        box[3] - box[1] == (float)dh) { /* whole pixels, same size: PIL crops */
        for (int y = 0; y < dh; y++)
            memcpy(dst + (size_t)y * (size_t)dw * (size_t)c,
                   src + (((size_t)y + (size_t)box[1]) * (size_t)sw + (size_t)box[0]) * (size_t)c,
                   (size_t)dw * (size_t)c);
        rc = CNN_OK;
    } else if (f == CNN_INTERP_NEAREST) {
        rc = cnn__rs_nearest(src, sw, sh, c, dst, dw, dh, box);
    } else {
        rc = cnn__rs_filtered(src, sw, sh, c, dst, dw, dh, f, box);
    }
    if (alpha && rc == CNN_OK)
        for (size_t i = 0; i < n_out; i++) { /* back from premultiplied */
            unsigned char *q = dst + i * (size_t)c;
            const unsigned a = q[c - 1];
            if (a != 0 && a != 255)
                for (int ch = 0; ch < c - 1; ch++) {
                    const unsigned v = 255u * q[ch] / a;
                    q[ch] = (unsigned char)(v > 255 ? 255 : v);
                }
        }
    CNN_FREE(pre);
    return rc;
}

/* Keras' keep_aspect_ratio: the centred crop of an sw x sh image with the
   aspect ratio of dw x dh (integer arithmetic, as load_img). */
static void cnn__rs_aspect_box(int sw, int sh, int dw, int dh, float box[4]) {
    long long ch = (long long)sw * dh / dw, cw = (long long)sh * dw / dh;
    if (ch > sh) ch = sh;
    if (cw > sw) cw = sw;
    box[0] = (float)((sw - cw) / 2);
    box[1] = (float)((sh - ch) / 2);
    box[2] = box[0] + (float)cw;
    box[3] = box[1] + (float)ch;
}

static int cnn__rs_check(const char *who, int sw, int sh, int c, int dw, int dh, cnn_interpolation f) {
    if (sw <= 0 || sh <= 0 || dw <= 0 || dh <= 0)
        return cnn_set_error(CNN_ERR_ARG, "%s: sizes must be > 0 (from %dx%d to %dx%d)", who, sw, sh, dw, dh);
    if (c < 1 || c > 4) return cnn_set_error(CNN_ERR_ARG, "%s: channels must be 1 to 4, not %d", who, c);
    if ((double)sw * sh * c > (double)(SIZE_MAX / 4) || (double)dw * dh * c > (double)(SIZE_MAX / 4) ||
        (double)dw * 8 > (double)INT_MAX || (double)dh * 8 > (double)INT_MAX)
        return cnn_set_error(CNN_ERR_ARG, "%s: %dx%d to %dx%d is too large", who, sw, sh, dw, dh);
    if ((int)f < (int)CNN_INTERP_DEFAULT || (int)f > (int)CNN_INTERP_HAMMING)
        return cnn_set_error(CNN_ERR_ARG,
                             "%s: unknown interpolation %d (CNN_INTERP_NEAREST, _BILINEAR, _BICUBIC, "
                             "_LANCZOS, _BOX or _HAMMING)",
                             who, (int)f);
    return CNN_OK;
}

CNN__AUG_IMPL int cnn_resize_uint8(const unsigned char *src, int sw, int sh, int c, unsigned char *dst,
                                   int dw, int dh, cnn_interpolation interpolation) {
    static const char who[] = "cnn_resize_uint8";
    float box[4];
    int rc;
    if (!src || !dst)
        return cnn_set_error(CNN_ERR_ARG, "%s: the %s pixels are NULL", who, src ? "output" : "input");
    if ((rc = cnn__rs_check(who, sw, sh, c, dw, dh, interpolation))) return rc;
    if (interpolation == CNN_INTERP_DEFAULT) interpolation = CNN_INTERP_BILINEAR;
    box[0] = box[1] = 0;
    box[2] = (float)sw;
    box[3] = (float)sh;
    if (cnn__rs_resize_box(src, sw, sh, c, dst, dw, dh, interpolation, box))
        return cnn_set_error(CNN_ERR_MEMORY, "%s: out of memory resizing %dx%d to %dx%d", who, sw, sh, dw,
                             dh);
    return CNN_OK;
}

/* ======================================================================== */
/* Image folders: one subfolder per class                                   */
/* ======================================================================== */

#define CNN__AUG_MAX_DEPTH 16
static const char cnn__aug_dir_who[] = "cnn_load_image_dir";

#ifndef CNN__AUG_NO_DIRENT
/* Append the image files under folder `path` (recursively) to out. */
static int cnn__aug_scan_images(const char *who, const char *path, int depth, int follow_links,
                                cnn__aug_strlist *out) {
    DIR *dp = opendir(path);
    struct dirent *e;
    int rc = CNN_OK;
    if (!dp) return cnn_set_error(CNN_ERR_IO, "%s: cannot open folder '%s': %s", who, path, strerror(errno));
    while (rc == CNN_OK && (e = readdir(dp)) != NULL) {
        struct stat st;
        int is_link = 0;
        char *child;
        if (e->d_name[0] == '.') continue; /* ".", "..", hidden files and folders */
        child = cnn__aug_join(path, e->d_name);
        if (!child) { rc = CNN_ERR_MEMORY; break; }
#ifdef CNN__AUG_HAVE_LSTAT
        if (lstat(child, &st) != 0) { CNN_FREE(child); continue; }
        if (S_ISLNK(st.st_mode)) {
            is_link = 1;
            if (stat(child, &st) != 0) { CNN_FREE(child); continue; } /* dangling link */
        }
#else
        if (stat(child, &st) != 0) { CNN_FREE(child); continue; }
#endif
        if (S_ISDIR(st.st_mode)) {
            if ((!is_link || follow_links) && depth < CNN__AUG_MAX_DEPTH)
                rc = cnn__aug_scan_images(who, child, depth + 1, follow_links, out);
            CNN_FREE(child);
        } else if (S_ISREG(st.st_mode) && cnn__aug_is_image_name(e->d_name)) {
            rc = cnn__aug_push(out, child);
        } else {
            CNN_FREE(child);
        }
    }
    closedir(dp);
    return rc;
}

/* Sorted names of the class subfolders of dir. */
static int cnn__aug_list_classes(const char *who, const char *dir, cnn__aug_strlist *classes) {
    DIR *dp = opendir(dir);
    struct dirent *e;
    int rc = CNN_OK;
    if (!dp) return cnn_set_error(CNN_ERR_IO, "%s: cannot open folder '%s': %s", who, dir, strerror(errno));
    while (rc == CNN_OK && (e = readdir(dp)) != NULL) {
        struct stat st;
        char *child;
        if (e->d_name[0] == '.') continue;
        child = cnn__aug_join(dir, e->d_name);
        if (!child) { rc = CNN_ERR_MEMORY; break; }
        if (stat(child, &st) == 0 && S_ISDIR(st.st_mode))
            rc = cnn__aug_push(classes, cnn__aug_strdup(e->d_name));
        CNN_FREE(child);
    }
    closedir(dp);
    if (rc == CNN_OK && classes->n == 0)
        rc = cnn_set_error(CNN_ERR_FORMAT,
                           "%s: '%s' has no class subfolders (expected one folder of images per class)", who,
                           dir);
    if (rc == CNN_OK) qsort(classes->v, (size_t)classes->n, sizeof(char *), cnn__aug_strcmp);
    return rc;
}
#endif

/* The error (or warning, with skip_bad) for an image stb_image cannot read. */
#if defined(__cplusplus)
#define CNN__AUG_TLS thread_local
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L && !defined(__STDC_NO_THREADS__)
#define CNN__AUG_TLS _Thread_local
#elif defined(__GNUC__) || defined(__clang__)
#define CNN__AUG_TLS __thread
#else
#define CNN__AUG_TLS
#endif
static CNN__AUG_TLS const char *cnn__aug_reason; /* our own reason for the last failed load */

static CNN__AUG_TLS char cnn__aug_reason_buf[192]; /* a reason with numbers in it */

/* Two JPEG Huffman-table faults that stb_image 2.27 does not survive: a table
   (DHT segment, anywhere before the end of the file: progressive files have
   them between scans) declaring more than 256 codes, which stb writes past its
   table on (in stbi_info too); and a scan using a table the file has not
   defined before it, which stb decodes with uninitialised memory until an
   assertion aborts the program. Returns a reason, or NULL (why [cap] holds
   it). The walk follows stb's reading exactly: DHT and DQT tables are read
   while the segment's length stays positive, so a table may run past the
   length it declares (the next marker is looked for after it); bytes past the
   end read as 0; entropy-coded data is skipped as decoders do (0xFF is
   followed there by 0x00, a stuffed byte, or a restart marker). */
static const char *cnn__aug_jpeg_bad_huffman(const unsigned char *p, size_t n, char *why, size_t cap) {
    size_t i = 0;
    int defined[2][4] = {{0}}, progressive = 0; /* [DC/AC][table id] */
    if (n < 2 || p[0] != 0xFF) return NULL;
    while (i < n && p[i] == 0xFF) i++; /* stb takes fill bytes before the start marker too */
    if (i >= n || p[i] != 0xD8) return NULL;
    i++;
#define CNN__AUG_BYTE(k) ((k) < n ? p[k] : 0u)
    while (i + 1 < n) {
        unsigned m;
        long left;
        if (p[i] != 0xFF) { i++; continue; } /* entropy-coded data, or stray bytes stb skips */
        m = p[i + 1];
        if (m == 0xFF) { i++; continue; }     /* fill byte */
        if (m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD9)) { i += 2; continue; } /* no length */
        left = (long)(CNN__AUG_BYTE(i + 2) << 8 | CNN__AUG_BYTE(i + 3)) - 2;
        if (m == 0xC2) progressive = 1;
        if (m == 0xDA) { /* SOS: the tables its components use must be defined by now */
            const unsigned ns = CNN__AUG_BYTE(i + 4);
            const unsigned ss = CNN__AUG_BYTE(i + 5 + 2 * ns), se = CNN__AUG_BYTE(i + 6 + 2 * ns);
            const unsigned ah = CNN__AUG_BYTE(i + 7 + 2 * ns) >> 4;
            /* baseline scans use both; progressive ones the DC table on a first DC scan, the AC table on AC scans */
            const int need_dc = !progressive || (ss == 0 && ah == 0), need_ac = !progressive || se > 0;
            for (unsigned c = 0; c < ns && c < 4; c++) {
                const unsigned sel = CNN__AUG_BYTE(i + 6 + 2 * c), td = sel >> 4, ta = sel & 15;
                if ((need_dc && td < 4 && !defined[0][td]) || (need_ac && ta < 4 && !defined[1][ta])) {
                    snprintf(why, cap, "corrupt JPEG: a scan uses a Huffman table (%s %u) the file does not define",
                             need_dc && td < 4 && !defined[0][td] ? "DC" : "AC",
                             need_dc && td < 4 && !defined[0][td] ? td : ta);
                    return why;
                }
            }
        }
        i += 4;
        if (m == 0xC4) { /* DHT: 1 + 16 + (sum of counts) bytes a table */
            while (left > 0 && i < n) {
                const unsigned tc = CNN__AUG_BYTE(i) >> 4, th = CNN__AUG_BYTE(i) & 15;
                long codes = 0;
                for (size_t k = 1; k <= 16; k++) codes += (long)CNN__AUG_BYTE(i + k);
                if (codes > 256) {
                    snprintf(why, cap, "corrupt JPEG: a Huffman table declares %ld codes (at most 256)", codes);
                    return why;
                }
                if (tc < 2 && th < 4) defined[tc][th] = 1;
                i += 17 + (size_t)codes;
                left -= 17 + codes;
            }
        } else if (m == 0xDB) { /* DQT: 1 + 64 or 128 bytes a table */
            while (left > 0 && i < n) {
                const long size = CNN__AUG_BYTE(i) >> 4 ? 129 : 65;
                i += (size_t)size;
                left -= size;
            }
        } else if (left > 0) {
            i += (size_t)left; /* other segments (after SOS its header; the scan's data follows) */
        }
    }
#undef CNN__AUG_BYTE
    return NULL;
}

/* The width, height and maximum value of a binary PNM (P5, P6) header, read as
   stb_image reads it (whitespace and # comments between the numbers), each
   saturating at 1e9, those not there 0: returns how many it read (0 when it is
   not a binary PNM).
   stb_image 2.27 overflows an int on numbers of ten digits or more and reads
   past its buffer converting 16-bit (maxval > 255) files. */
static int cnn__aug_pnm_header(const unsigned char *p, size_t n, long v[3]) {
    size_t i = 2;
    v[0] = v[1] = v[2] = 0;
    if (n < 3 || p[0] != 'P' || (p[1] != '5' && p[1] != '6')) return 0;
    for (int k = 0; k < 3; k++) {
        for (;;) { /* whitespace and comments */
            while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r' || p[i] == '\v' ||
                             p[i] == '\f'))
                i++;
            if (i < n && p[i] == '#') while (i < n && p[i] != '\n' && p[i] != '\r') i++;
            else break;
        }
        if (i >= n || p[i] < '0' || p[i] > '9') return k;
        for (v[k] = 0; i < n && p[i] >= '0' && p[i] <= '9'; i++)
            v[k] = v[k] >= 100000000 ? 1000000000 : v[k] * 10 + (p[i] - '0');
    }
    return 3;
}

/* A PNG chunk that claims more bytes than the file has left: stb_image grows
   its IDAT buffer to the claimed length before reading (a 200-byte file can ask
   for 2 GB). Returns the claimed length of the first such chunk, or 0. */
static unsigned long cnn__aug_png_overlong_chunk(const unsigned char *p, size_t n) {
    size_t pos = 8;
    if (n < 8 || memcmp(p, cnn__png_signature, 8) != 0) return 0;
    while (pos + 8 <= n) {
        const unsigned long len = cnn__aug_be32(p + pos);
        if (len > n - pos - 8) return len;
        if (memcmp(p + pos + 4, "IEND", 4) == 0) return 0;
        pos += 12 + (size_t)len;
    }
    return 0;
}

/* Checks an image file's bytes before stb_image sees them: the two inputs on
   which Debian's stb_image 2.27 reads or writes out of bounds, PNG chunks longer
   than the file (stb allocates their claimed length first), and sizes over
   the memory limit (its header read by stbi_info; decoding can take up to 16
   bytes a pixel: 16-bit RGBA PNGs, float HDR). A BMP shorter than its header
   says is refused too (stb reads the missing pixels as zeros). p [n] is the
   file, or its first n bytes of file_size. Returns 1, or 0 with the reason in
   cnn__aug_reason; *x, *y, *comp as stbi_info gives them. */
static int cnn__aug_screen(const unsigned char *p, size_t n, size_t file_size, int *x, int *y, int *comp) {
    long pnm[3];
    unsigned long chunk;
    unsigned long long need;
    *x = *y = *comp = 0;
    if (cnn__aug_jpeg_bad_huffman(p, n, cnn__aug_reason_buf, sizeof cnn__aug_reason_buf)) {
        cnn__aug_reason = cnn__aug_reason_buf;
        return 0;
    }
    if (cnn__aug_pnm_header(p, n, pnm) > 0 && (pnm[0] > (1L << 24) || pnm[1] > (1L << 24) || pnm[2] > 255)) {
        if (pnm[2] > 255 && pnm[2] <= 65535)
            snprintf(cnn__aug_reason_buf, sizeof cnn__aug_reason_buf,
                     "16-bit PNM files (maxval %ld) are not supported; convert it to 8 bits", pnm[2]);
        else
            snprintf(cnn__aug_reason_buf, sizeof cnn__aug_reason_buf,
                     "corrupt PNM header: width %ld, height %ld, maxval %ld (at most 16777216, 16777216, 255)",
                     pnm[0], pnm[1], pnm[2]);
        cnn__aug_reason = cnn__aug_reason_buf;
        return 0;
    }
    if (n > (size_t)INT_MAX) {
        cnn__aug_reason = "image files over 2 GB are not supported";
        return 0;
    }
    if (n == file_size && (chunk = cnn__aug_png_overlong_chunk(p, n)) != 0) {
        snprintf(cnn__aug_reason_buf, sizeof cnn__aug_reason_buf,
                 "truncated or corrupt PNG: a chunk claims %lu bytes, more than the file holds", chunk);
        cnn__aug_reason = cnn__aug_reason_buf;
        return 0;
    }
    if (!stbi_info_from_memory(p, (int)n, x, y, comp)) {
        cnn__aug_reason = NULL; /* stbi_failure_reason() says why */
        return 0;
    }
    need = (unsigned long long)(unsigned)*x * (unsigned)*y * 16u;
    if (need > cnn_memory_limit()) {
        snprintf(cnn__aug_reason_buf, sizeof cnn__aug_reason_buf,
                 "its header claims %d x %d pixels: decoding would need up to %llu bytes, over the memory "
                 "limit of %llu (cnn_set_memory_limit)",
                 *x, *y, need, cnn_memory_limit());
        cnn__aug_reason = cnn__aug_reason_buf;
        return 0;
    }
    if (n >= 6 && p[0] == 'B' && p[1] == 'M') {
        const uint32_t declared = cnn__aug_le32(p + 2);
        if (declared > 0 && file_size < declared) {
            cnn__aug_reason = "the file is shorter than its BMP header says: truncated";
            return 0;
        }
    }
    return 1;
}

/* stbi_info and stbi_load on a file, through cnn__aug_screen; cnn__aug_why()
   tells why they failed. The size comes from the file's first 64 KB (the
   header, and any JPEG tables there), or from all of it where that is not
   enough; decoding checks the whole file. */
static int cnn__aug_info(const char *path, int *x, int *y, int *comp) {
    enum { PREFIX = 1 << 16 };
    unsigned char *buf = (unsigned char *)CNN_MALLOC(PREFIX);
    FILE *f = fopen(path, "rb");
    size_t len = 0, size = 0;
    int ok = 0;
    cnn__aug_reason = NULL;
    if (buf && f) {
        len = fread(buf, 1, PREFIX, f);
        if (fseek(f, 0, SEEK_END) == 0) {
            long end = ftell(f);
            size = end > 0 ? (size_t)end : len;
        }
        ok = 1;
    }
    if (f) fclose(f);
    if (!ok) {
        cnn__aug_reason = buf ? "cannot read the file" : "out of memory";
        CNN_FREE(buf);
        return 0;
    }
    ok = cnn__aug_screen(buf, len, size, x, y, comp);
    CNN_FREE(buf);
    if (!ok && size > len && !cnn__aug_reason) { /* a header beyond the first 64 KB (large JPEG metadata) */
        unsigned char *raw;
        if (cnn__aug_read_file(path, "cnn_augment", &raw, &len) < 0) {
            cnn__aug_reason = "cannot read the file";
            return 0;
        }
        ok = cnn__aug_screen(raw, len, len, x, y, comp);
        CNN_FREE(raw);
    }
    return ok;
}

/* Empty IDAT chunks taken out of a PNG in p [*n]: stb_image 2.27 adds 0 to a NULL
   pointer and hands it to memcpy when the first IDAT is empty (undefined
   behaviour); an empty chunk holds no data, and stb checks no chunk CRCs. */
static void cnn__aug_png_drop_empty_idat(unsigned char *p, size_t *n) {
    size_t pos = 8;
    if (*n < 8 || memcmp(p, cnn__png_signature, 8) != 0) return;
    while (pos + 8 <= *n) {
        const size_t len = (size_t)cnn__aug_be32(p + pos);
        if (len == 0 && memcmp(p + pos + 4, "IDAT", 4) == 0) { /* with its CRC, or what the file has of it */
            const size_t drop = *n - pos < 12 ? *n - pos : 12;
            memmove(p + pos, p + pos + drop, *n - pos - drop);
            *n -= drop;
            continue;
        }
        if (pos + 12 > *n || len > *n - pos - 12) return; /* a chunk past the end: stb refuses the file */
        if (memcmp(p + pos + 4, "IEND", 4) == 0) return;
        pos += 12 + len;
    }
}

static unsigned char *cnn__aug_load(const char *path, int *x, int *y, int *comp, int c) {
    unsigned char *raw, *px = NULL;
    size_t len;
    cnn__aug_reason = NULL;
    if (cnn__aug_read_file(path, "cnn_augment", &raw, &len) < 0) {
        cnn__aug_reason = "cannot read the file";
        return NULL;
    }
    if (cnn__aug_screen(raw, len, len, x, y, comp)) {
        cnn__aug_png_drop_empty_idat(raw, &len);
        px = stbi_load_from_memory(raw, (int)len, x, y, comp, c);
    }
    CNN_FREE(raw);
    return px;
}

static const char *cnn__aug_why(void) {
    const char *why = cnn__aug_reason ? cnn__aug_reason : stbi_failure_reason();
    return why ? why : "unknown reason";
}

/* PIL's mode conversion of n pixels with `from` channels (1 L, 2 LA, 3 RGB,
   4 RGBA) to `to` channels (1, 3 or 4), as load_img's img.convert(): grey from
   colour is ITU-R 601-2 luma in PIL's 16-bit fixed point, alpha is dropped, kept,
   or 255 where there was none. */
static void cnn__aug_convert(const unsigned char *in, int from, unsigned char *out, int to, size_t n) {
    const int grey = from <= 2, has_alpha = from == 2 || from == 4;
    for (size_t i = 0; i < n; i++, in += from, out += to) {
        if (to == 1) {
            out[0] = grey
                         ? in[0]
                         : (unsigned char)((in[0] * 19595u + in[1] * 38470u + in[2] * 7471u + 0x8000u) >> 16);
            continue;
        }
        out[0] = in[0];
        out[1] = grey ? in[0] : in[1];
        out[2] = grey ? in[0] : in[2];
        if (to == 4) out[3] = has_alpha ? in[from - 1] : 255;
    }
}

/* Image file `path` as Keras' load_img(color_mode, target_size, interpolation,
   keep_aspect_ratio) makes it: decoded at its own channels, converted to c (1,
   3 or 4) by PIL's rules, and resized by PIL's rules to h x w (when its size
   differs) into dst [h][w][c]. Returns CNN_OK, CNN_ERR_FORMAT (it does not
   decode: cnn__aug_why() says why) or CNN_ERR_MEMORY; sets no error message,
   so that worker threads can call it. */
static int cnn__aug_load_resized(const char *path, int h, int w, int c, cnn_interpolation f, int keep_aspect,
                                 unsigned char *dst) {
    int x, y, comp, rc = CNN_OK;
    unsigned char *px = cnn__aug_load(path, &x, &y, &comp, 0), *conv = NULL;
    const unsigned char *img = px;
    if (!px) return CNN_ERR_FORMAT;
    if (x <= 0 || y <= 0 || comp < 1 || comp > 4) {
        stbi_image_free(px);
        cnn__aug_reason = "the image has no pixels";
        return CNN_ERR_FORMAT;
    }
    if (comp != c) {
        if (!(conv = (unsigned char *)CNN_MALLOC((size_t)x * (size_t)y * (size_t)c))) {
            stbi_image_free(px);
            return CNN_ERR_MEMORY;
        }
        cnn__aug_convert(px, comp, conv, c, (size_t)x * (size_t)y);
        img = conv;
    }
    if (x == w && y == h) {
        memcpy(dst, img, (size_t)w * (size_t)h * (size_t)c);
    } else {
        float box[4] = {0, 0, (float)x, (float)y};
        if (keep_aspect) cnn__rs_aspect_box(x, y, w, h, box);
        rc = cnn__rs_resize_box(img, x, y, c, dst, w, h, f, box);
    }
    stbi_image_free(px);
    CNN_FREE(conv);
    return rc;
}

CNN__AUG_IMPL int cnn_load_image(const char *path, int h, int w, int c, cnn_interpolation interpolation,
                                 int keep_aspect_ratio, unsigned char *pixels) {
    static const char who[] = "cnn_load_image";
    int rc;
    if (!path || !pixels)
        return cnn_set_error(CNN_ERR_ARG, "%s: the %s is NULL", who, path ? "pixel buffer" : "path");
    if (c != 1 && c != 3 && c != 4)
        return cnn_set_error(CNN_ERR_ARG, "%s: channels must be 1, 3 or 4, not %d ('%s')", who, c, path);
    if ((rc = cnn__rs_check(who, 1, 1, c, w, h, interpolation))) return rc;
    rc = cnn__aug_load_resized(path, h, w, c, interpolation ? interpolation : CNN_INTERP_NEAREST,
                               keep_aspect_ratio, pixels);
    if (rc == CNN_ERR_FORMAT)
        return cnn_set_error(rc, "%s: cannot decode image '%s' (%s)", who, path, cnn__aug_why());
    if (rc) return cnn_set_error(rc, "%s: out of memory decoding or resizing '%s' to %dx%d", who, path, w, h);
    return CNN_OK;
}

static int cnn__aug_bad_image(const char *who, const char *path, int skip_bad) {
    const char *why = cnn__aug_why();
    if (skip_bad) {
        fprintf(stderr, "%s: warning: skipping '%s': cannot decode it (%s)\n", who, path, why);
        return CNN_OK;
    }
    return cnn_set_error(CNN_ERR_FORMAT, "%s: cannot decode image '%s' (%s)", who, path, why);
}

#ifndef CNN__AUG_NO_DIRENT
/* The error of both folder loaders when not one of their files decodes. */
static int cnn__aug_none_decoded(const char *who, int total, const char *dir) {
    return cnn_set_error(CNN_ERR_FORMAT, "%s: none of the %d image files in '%s' could be decoded", who,
                         total, dir);
}

/* Append the image files of class folder dir/cls to out (empty on entry), in
   Keras' order: both folder loaders list their classes this way. */
static int cnn__aug_class_files(const char *who, const char *dir, const char *cls, int follow_links,
                                cnn__aug_strlist *out) {
    char *cdir = cnn__aug_join(dir, cls);
    int rc = cdir ? cnn__aug_scan_images(who, cdir, 0, follow_links, out) : CNN_ERR_MEMORY;
    CNN_FREE(cdir);
    if (rc < 0) return rc;
    if (out->n > 1) qsort(out->v, (size_t)out->n, sizeof(char *), cnn__aug_walk_cmp);
    return rc;
}

/* cnn_load_image_dir's options, checked before any file is read. */
static int cnn__aug_dir_check(const char *dir, const cnn_image_dir_opts *opt) {
    if (!dir) return cnn_set_error(CNN_ERR_ARG, "%s: the folder is NULL", cnn__aug_dir_who);
    if (opt->height < 0 || opt->width < 0)
        return cnn_set_error(CNN_ERR_ARG, "%s: target size %dx%d is negative ('%s')", cnn__aug_dir_who,
                             opt->height, opt->width, dir);
    if (opt->channels != 0 && opt->channels != 1 && opt->channels != 3 && opt->channels != 4)
        return cnn_set_error(CNN_ERR_ARG,
                             "%s: channels must be 1, 3 or 4 (0 = those of the first image), not %d "
                             "('%s')",
                             cnn__aug_dir_who, opt->channels, dir);
    if ((int)opt->interpolation < (int)CNN_INTERP_DEFAULT ||
        (int)opt->interpolation > (int)CNN_INTERP_HAMMING)
        return cnn_set_error(CNN_ERR_ARG,
                             "%s: unknown interpolation %d (CNN_INTERP_NEAREST, _BILINEAR, _BICUBIC, "
                             "_LANCZOS, _BOX or _HAMMING) ('%s')",
                             cnn__aug_dir_who, (int)opt->interpolation, dir);
    return CNN_OK;
}

/* The sorted class subfolders of dir and the image files of each, files
   [classes->n] (set as soon as allocated, so the caller frees what was listed
   when this fails); *total counts the files. */
static int cnn__aug_dir_list(const char *dir, int follow_links, cnn__aug_strlist *classes,
                             cnn__aug_strlist **files, int *total) {
    cnn__aug_strlist *fl;
    int rc = cnn__aug_list_classes(cnn__aug_dir_who, dir, classes);
    if (rc < 0) return rc;
    fl = *files = (cnn__aug_strlist *)CNN_MALLOC((size_t)classes->n * sizeof *fl);
    if (!fl) return cnn_set_error(CNN_ERR_MEMORY, "%s: out of memory ('%s')", cnn__aug_dir_who, dir);
    memset(fl, 0, (size_t)classes->n * sizeof *fl);
    for (int ci = 0; ci < classes->n; ci++) {
        if ((rc = cnn__aug_class_files(cnn__aug_dir_who, dir, classes->v[ci], follow_links, &fl[ci])) < 0)
            return rc;
        if (fl[ci].n > INT_MAX - *total)
            return cnn_set_error(CNN_ERR_ARG, "%s: too many images in '%s'", cnn__aug_dir_who, dir);
        *total += fl[ci].n;
    }
    if (*total == 0)
        return cnn_set_error(CNN_ERR_FORMAT,
                             "%s: no image files (png jpg jpeg bmp gif tga ppm pgm) in the %d class "
                             "folder%s of '%s'",
                             cnn__aug_dir_who, classes->n, classes->n == 1 ? "" : "s", dir);
    return CNN_OK;
}

/* The target size and channels *h, *w, *c: those given, or those of the first
   readable image (its header, through cnn__aug_info). */
static int cnn__aug_dir_size(const char *dir, const cnn_image_dir_opts *opt, const cnn__aug_strlist *files,
                             int nclasses, int total, int *h, int *w, int *c) {
    *h = opt->height;
    *w = opt->width;
    *c = opt->channels;
    for (int ci = 0; ci < nclasses && (!*h || !*w || !*c); ci++)
        for (int fi = 0; fi < files[ci].n && (!*h || !*w || !*c); fi++) {
            int x, y, comp;
            if (cnn__aug_info(files[ci].v[fi], &x, &y, &comp) && x > 0 && y > 0) { /* stb takes 0 rows */
                if (!*h) *h = y;
                if (!*w) *w = x;
                if (!*c) *c = comp == 2 ? 4 : comp;
            } else if (!opt->skip_bad) {
                return cnn__aug_bad_image(cnn__aug_dir_who, files[ci].v[fi], 0);
            }
        }
    if (!*h || !*w || !*c) return cnn__aug_none_decoded(cnn__aug_dir_who, total, dir);
    return CNN_OK;
}

/* Decode every file into d's images, in order, with its class as its label;
   with skip_bad a file that does not decode is skipped (with a warning), so
   *kept may end below d->n. */
static int cnn__aug_dir_decode(cnn_dataset *d, const cnn__aug_strlist *files, int nclasses,
                               const cnn_image_dir_opts *opt, int *kept) {
    const cnn_interpolation interp =
        opt->interpolation == CNN_INTERP_DEFAULT ? CNN_INTERP_BILINEAR : opt->interpolation;
    const size_t img_size = (size_t)d->h * (size_t)d->w * (size_t)d->c;
    int k = 0;
    for (int ci = 0; ci < nclasses; ci++)
        for (int fi = 0; fi < files[ci].n; fi++) {
            const char *path = files[ci].v[fi];
            unsigned char *dst = d->images + (size_t)k * img_size;
            int rc = cnn__aug_load_resized(path, d->h, d->w, d->c, interp, opt->keep_aspect_ratio, dst);
            if (rc == CNN_ERR_MEMORY)
                return cnn_set_error(CNN_ERR_MEMORY, "%s: out of memory decoding or resizing '%s' to %dx%d",
                                     cnn__aug_dir_who, path, d->w, d->h);
            if (rc) {
                if ((rc = cnn__aug_bad_image(cnn__aug_dir_who, path, opt->skip_bad)) < 0) return rc;
                continue;
            }
            d->labels[k++] = ci;
        }
    *kept = k;
    return CNN_OK;
}
#endif

CNN__AUG_IMPL cnn_dataset *cnn_load_image_dir_opt(const char *dir, const cnn_image_dir_opts *o) {
#ifdef CNN__AUG_NO_DIRENT
    (void)o;
    cnn_set_error(CNN_ERR_STATE, "%s: folder listing (dirent.h) is not available on this system ('%s')",
                  cnn__aug_dir_who, dir ? dir : "NULL");
    return NULL;
#else
    cnn_image_dir_opts opt;
    cnn__aug_strlist classes = {NULL, 0, 0};
    cnn__aug_strlist *files = NULL; /* [classes.n] */
    cnn_dataset *d = NULL;
    int h, w, c, total = 0, k = 0, ok = 0;

    if (o) opt = *o;
    else memset(&opt, 0, sizeof opt);
    if (cnn__aug_dir_check(dir, &opt)) return NULL;
    if (cnn__aug_dir_list(dir, opt.follow_links, &classes, &files, &total) < 0) goto done;
    if (cnn__aug_dir_size(dir, &opt, files, classes.n, total, &h, &w, &c) < 0) goto done;
    if (cnn_check_memory(cnn__aug_dir_who, "the folder's images", (unsigned long long)total * h * w * c) < 0)
        goto done;
    d = cnn_dataset_new(total, h, w, c, classes.n);
    if (!d) goto done;
    if (cnn__aug_dir_decode(d, files, classes.n, &opt, &k) < 0) goto done;
    if (k == 0) {
        cnn__aug_none_decoded(cnn__aug_dir_who, total, dir);
        goto done;
    }
    if (k < total) { /* some were skipped */
        cnn_dataset *s = cnn_dataset_subset(d, 0, k);
        if (!s) goto done;
        cnn_dataset_free(d);
        d = s;
    }
    if (cnn_dataset_set_class_names(d, (const char *const *)classes.v, classes.n) < 0) goto done;
    ok = 1;
done:
    if (!ok) {
        cnn_dataset_free(d);
        d = NULL;
    }
    if (files)
        for (int ci = 0; ci < classes.n; ci++) cnn__aug_strlist_free(&files[ci]);
    CNN_FREE(files);
    cnn__aug_strlist_free(&classes);
    return d;
#endif
}

/* Does dir hold an IDX image file of the (Fashion-)MNIST layout, raw or gzip'd? */
static int cnn__aug_is_idx_dir(const char *dir) {
    static const char *const names[4] = {"train-images-idx3-ubyte", "train-images-idx3-ubyte.gz",
                                         "t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz"};
    for (int i = 0; i < 4; i++) {
        char *p = cnn__aug_join(dir, names[i]);
        int found = p && cnn__aug_file_exists(p);
        CNN_FREE(p);
        if (found) return 1;
    }
    return 0;
}

CNN__AUG_IMPL cnn_dataset *cnn_load_dataset(const char *path) { return cnn_load_dataset_part(path, 1); }

CNN__AUG_IMPL cnn_dataset *cnn_load_dataset_part(const char *path, int train) {
    struct stat st;
    if (!path) { cnn_set_error(CNN_ERR_ARG, "cnn_load_dataset: the path is NULL"); return NULL; }
    if (stat(path, &st) != 0) {
        cnn_set_error(CNN_ERR_IO, "cnn_load_dataset: cannot access '%s': %s", path, strerror(errno));
        return NULL;
    }
    if (S_ISDIR(st.st_mode)) {
        if (cnn_is_cifar10_dir(path)) {
            char *first = cnn__aug_join(path, "data_batch_1.bin");
            int has_train;
            if (!first) return NULL;
            has_train = cnn__aug_file_exists(first);
            CNN_FREE(first);
            return cnn_load_cifar10(path, train && has_train);
        }
        if (cnn__aug_is_idx_dir(path)) return cnn_load_fashion_mnist(path, train);
        return cnn_load_image_dir_opt(path, NULL);
    }
    if (S_ISREG(st.st_mode) && cnn__aug_ends_with(path, ".bin")) return cnn_load_cifar10_file(path);
    cnn_set_error(
        CNN_ERR_ARG,
        "cnn_load_dataset: '%s' is neither a folder (CIFAR-10 batches, or one subfolder of images per "
        "class) nor a CIFAR-10 .bin file",
        path);
    return NULL;
}

/* ======================================================================== */
/* PNG output                                                               */
/* ======================================================================== */

/* The PNG encoder: each row filtered (the one of PNG's five filters whose
   output has the smallest sum of absolute values), then deflated with LZ77 and
   deflate's fixed Huffman codes (RFC 1951), in a zlib stream (RFC 1950). Written
   here rather than taken from stb_image_write, whose compressor asserts (aborts)
   when an allocation fails and leaks when the last one does: every allocation
   here goes through CNN_MALLOC and a failure is an error returned. */
typedef struct cnn__png_bits {
    unsigned char *out; /* room for the worst case: 9 bits a byte, and the headers */
    size_t n;
    uint32_t buf;
    int count;
} cnn__png_bits;

static void cnn__png_put(cnn__png_bits *b, uint32_t bits, int n) { /* LSB first */
    b->buf |= bits << b->count;
    b->count += n;
    while (b->count >= 8) {
        b->out[b->n++] = (unsigned char)b->buf;
        b->buf >>= 8;
        b->count -= 8;
    }
}

/* a Huffman code of n bits, written from its most significant bit */
static void cnn__png_code(cnn__png_bits *b, uint32_t code, int n) {
    uint32_t rev = 0;
    for (int i = 0; i < n; i++) rev |= ((code >> i) & 1u) << (n - 1 - i);
    cnn__png_put(b, rev, n);
}

static void cnn__png_symbol(cnn__png_bits *b, int s) { /* deflate's fixed literal/length code */
    if (s < 144) cnn__png_code(b, 0x30u + (uint32_t)s, 8);
    else if (s < 256) cnn__png_code(b, 0x190u + (uint32_t)(s - 144), 9);
    else if (s < 280) cnn__png_code(b, (uint32_t)(s - 256), 7);
    else cnn__png_code(b, 0xC0u + (uint32_t)(s - 280), 8);
}

static void cnn__png_match(cnn__png_bits *b, int len, int dist) {
    static const unsigned short len_base[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
                                                31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
    static const unsigned char len_extra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                                2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
    static const unsigned short dist_base[30] = {1,    2,    3,    4,    5,    7,     9,     13,    17,  25,
                                                 33,   49,   65,   97,   129,  193,   257,   385,   513, 769,
                                                 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
    int l = 28, d = 29;
    while (len_base[l] > len) l--;
    while (dist_base[d] > dist) d--;
    cnn__png_symbol(b, 257 + l);
    cnn__png_put(b, (uint32_t)(len - len_base[l]), len_extra[l]);
    cnn__png_code(b, (uint32_t)d, 5);
    cnn__png_put(b, (uint32_t)(dist - dist_base[d]), d < 4 ? 0 : d / 2 - 1);
}

/* zlib stream of d [n] into z (room for n + n / 8 + 64 bytes); returns its length */
static size_t cnn__png_deflate(const unsigned char *d, size_t n, unsigned char *z, int *head, int *prev) {
    enum { WINDOW = 32768, CHAIN = 32, HASH_BITS = 15 };
    cnn__png_bits b = {z, 0, 0, 0};
    uint32_t a1 = 1, a2 = 0;
    size_t i = 0;
    for (int k = 0; k < 1 << HASH_BITS; k++) head[k] = -1;
    z[b.n++] = 0x78; /* deflate, 32K window */
    z[b.n++] = 0x01;
    cnn__png_put(&b, 1, 1); /* the last block */
    cnn__png_put(&b, 1, 2); /* fixed Huffman codes */
#define CNN__PNG_HASH(p) ((((uint32_t)(p)[0] << 16 | (uint32_t)(p)[1] << 8 | (p)[2]) * 2654435761u) >> (32 - HASH_BITS))
#define CNN__PNG_INSERT(pos)                                    \
    do {                                                        \
        const uint32_t h_ = CNN__PNG_HASH(d + (pos));           \
        prev[(pos) & (WINDOW - 1)] = head[h_];                  \
        head[h_] = (int)(pos);                                  \
    } while (0)
    while (i < n) {
        int best = 0, dist = 0;
        if (i + 3 <= n) {
            const size_t most = n - i < 258 ? n - i : 258;
            int cand = head[CNN__PNG_HASH(d + i)];
            for (int chain = 0; cand >= 0 && i - (size_t)cand <= WINDOW && chain < CHAIN; chain++) {
                size_t len = 0;
                int next;
                while (len < most && d[(size_t)cand + len] == d[i + len]) len++;
                if ((int)len > best) { best = (int)len; dist = (int)(i - (size_t)cand); }
                if (len == most) break;
                next = prev[cand & (WINDOW - 1)];
                if (next >= cand) break; /* an entry a newer position overwrote */
                cand = next;
            }
            CNN__PNG_INSERT(i);
        }
        if (best >= 3) {
            cnn__png_match(&b, best, dist);
            for (size_t k = 1; k < (size_t)best; k++)
                if (i + k + 3 <= n) CNN__PNG_INSERT(i + k);
            i += (size_t)best;
        } else {
            cnn__png_symbol(&b, d[i++]);
        }
    }
#undef CNN__PNG_INSERT
#undef CNN__PNG_HASH
    cnn__png_symbol(&b, 256);
    if (b.count) cnn__png_put(&b, 0, 8 - b.count);
    for (size_t k = 0; k < n; k++) { /* Adler-32 */
        a1 = (a1 + d[k]) % 65521u;
        a2 = (a2 + a1) % 65521u;
    }
    cnn__aug_put_be32(z + b.n, (a2 << 16) | a1);
    return b.n + 4;
}

static int cnn__png_paeth(int a, int b, int c) {
    const int p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);
    return pa <= pb && pa <= pc ? a : (pb <= pc ? b : c);
}

/* one chunk at o + *at: length, type, data (copied from data, or already in
   place when data is NULL), CRC-32 of type and data */
static void cnn__png_chunk(unsigned char *o, size_t *at, const char *type, const unsigned char *data, size_t n) {
    cnn__aug_put_be32(o + *at, (uint32_t)n);
    memcpy(o + *at + 4, type, 4);
    if (data && n) memcpy(o + *at + 8, data, n);
    cnn__aug_put_be32(o + *at + 8 + n, cnn__aug_crc32(o + *at + 4, n + 4));
    *at += 12 + n;
}

/* pixels [h][w][c] (rows `stride` bytes apart) as a PNG file at path */
static int cnn__png_write(const char *who, const char *path, int w, int h, int c, const unsigned char *pixels,
                          size_t stride) {
    static const unsigned char color_type[5] = {0, 0, 4, 2, 6}; /* by channels: grey, grey+alpha, RGB, RGBA */
    const size_t row = (size_t)w * c, raw_n = (row + 1) * (size_t)h, zcap = raw_n + raw_n / 8 + 64;
    unsigned char *raw = NULL, *file = NULL, *trial = NULL, ihdr[13];
    int *head = NULL, *prev = NULL;
    size_t at = 0, zn;
    int rc = CNN_OK;
    FILE *f;
    if (raw_n > (size_t)INT_MAX) /* the match finder keeps positions in ints */
        return cnn_set_error(CNN_ERR_ARG, "%s: '%s': %dx%dx%d is over the 2 GB this PNG writer takes", who, path, w,
                             h, c);
    raw = (unsigned char *)CNN_MALLOC(raw_n);
    file = (unsigned char *)CNN_MALLOC(zcap + 64);
    trial = (unsigned char *)CNN_MALLOC(row ? row : 1);
    head = (int *)CNN_MALLOC(sizeof(int) << 15);
    prev = (int *)CNN_MALLOC(sizeof(int) * 32768);
    if (!raw || !file || !trial || !head || !prev) {
        rc = cnn_set_error(CNN_ERR_MEMORY, "%s: out of memory writing '%s'", who, path);
        goto done;
    }
    for (int y = 0; y < h; y++) { /* filter each row with the filter that leaves the least */
        const unsigned char *cur = pixels + (size_t)y * stride, *up = y ? pixels + (size_t)(y - 1) * stride : NULL;
        unsigned char *dst = raw + (size_t)y * (row + 1);
        long best_sum = -1;
        for (int type = 0; type < 5; type++) {
            long sum = 0;
            for (size_t i = 0; i < row; i++) {
                const int a = i >= (size_t)c ? cur[i - c] : 0, b = up ? up[i] : 0,
                          cc = up && i >= (size_t)c ? up[i - c] : 0;
                const int pred = type == 0 ? 0 : type == 1 ? a : type == 2 ? b : type == 3 ? (a + b) / 2
                                                                                             : cnn__png_paeth(a, b, cc);
                trial[i] = (unsigned char)(cur[i] - pred);
                sum += trial[i] < 128 ? trial[i] : 256 - trial[i];
            }
            if (best_sum < 0 || sum < best_sum) {
                best_sum = sum;
                dst[0] = (unsigned char)type;
                memcpy(dst + 1, trial, row);
            }
        }
    }
    memcpy(file, cnn__png_signature, 8);
    at = 8;
    cnn__aug_put_be32(ihdr, (uint32_t)w);
    cnn__aug_put_be32(ihdr + 4, (uint32_t)h);
    ihdr[8] = 8; /* bits a sample */
    ihdr[9] = color_type[c];
    ihdr[10] = ihdr[11] = ihdr[12] = 0; /* deflate, adaptive filters, no interlace */
    cnn__png_chunk(file, &at, "IHDR", ihdr, 13);
    /* the zlib stream goes straight into its chunk's place */
    zn = cnn__png_deflate(raw, raw_n, file + at + 8, head, prev);
    cnn__png_chunk(file, &at, "IDAT", NULL, zn);
    cnn__png_chunk(file, &at, "IEND", NULL, 0);
    errno = 0;
    f = fopen(path, "wb");
    if (!f || fwrite(file, 1, at, f) != at) rc = cnn_set_error(CNN_ERR_IO, "%s: cannot write '%s': %s", who, path,
                                                              errno ? strerror(errno) : "disk full");
    if (f && fclose(f) != 0 && rc == CNN_OK)
        rc = cnn_set_error(CNN_ERR_IO, "%s: cannot write '%s': %s", who, path, strerror(errno));
done:
    CNN_FREE(raw);
    CNN_FREE(file);
    CNN_FREE(trial);
    CNN_FREE(head);
    CNN_FREE(prev);
    return rc;
}

CNN__AUG_IMPL int cnn_write_png(const char *path, int w, int h, int c, const unsigned char *pixels) {
    if (!path) return cnn_set_error(CNN_ERR_ARG, "cnn_write_png: the path is NULL");
    if (!pixels) return cnn_set_error(CNN_ERR_ARG, "cnn_write_png: the pixels are NULL ('%s')", path);
    if (w <= 0 || h <= 0 || c < 1 || c > 4 || w > INT_MAX / c)
        return cnn_set_error(CNN_ERR_ARG, "cnn_write_png: bad image size %dx%d with %d channel(s) ('%s'); "
                             "channels must be 1..4", w, h, c, path);
    return cnn__png_write("cnn_write_png", path, w, h, c, pixels, (size_t)w * c);
}

/* ======================================================================== */
/* Training plot: canvas, 5x9 font, axes, curves, legend                    */
/* ======================================================================== */

typedef struct cnn__aug_canvas {
    unsigned char *px; /* [h][w][3] */
    int w, h;
} cnn__aug_canvas;

typedef struct cnn__aug_rgb {
    unsigned char r, g, b;
} cnn__aug_rgb;

static void cnn__aug_blend(cnn__aug_canvas *cv, int x, int y, cnn__aug_rgb col, double a) {
    unsigned char *p;
    if (x < 0 || y < 0 || x >= cv->w || y >= cv->h || a <= 0) return;
    if (a > 1) a = 1;
    p = cv->px + ((size_t)y * (size_t)cv->w + (size_t)x) * 3;
    p[0] = (unsigned char)(p[0] + (col.r - p[0]) * a + 0.5);
    p[1] = (unsigned char)(p[1] + (col.g - p[1]) * a + 0.5);
    p[2] = (unsigned char)(p[2] + (col.b - p[2]) * a + 0.5);
}

/* pixels [x0, x1) x [y0, y1) */
static void cnn__aug_fill(cnn__aug_canvas *cv, int x0, int y0, int x1, int y1, cnn__aug_rgb col) {
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++) cnn__aug_blend(cv, x, y, col, 1);
}

/* An antialiased segment of half-width r (a dot when both ends are equal);
   pixel (x, y) has its centre at (x, y). */
static void cnn__aug_segment(cnn__aug_canvas *cv, double ax, double ay, double bx, double by, double r,
                             cnn__aug_rgb col) {
    double dx = bx - ax, dy = by - ay, l2 = dx * dx + dy * dy;
    int x0 = (int)floor((ax < bx ? ax : bx) - r - 1), x1 = (int)ceil((ax > bx ? ax : bx) + r + 1);
    int y0 = (int)floor((ay < by ? ay : by) - r - 1), y1 = (int)ceil((ay > by ? ay : by) + r + 1);
    if (x0 < 0) x0 = 0;
    if (y0 < 0) y0 = 0;
    if (x1 >= cv->w) x1 = cv->w - 1;
    if (y1 >= cv->h) y1 = cv->h - 1;
    for (int y = y0; y <= y1; y++)
        for (int x = x0; x <= x1; x++) {
            double t = l2 > 0 ? ((x - ax) * dx + (y - ay) * dy) / l2 : 0, ex, ey;
            if (t < 0) t = 0;
            if (t > 1) t = 1;
            ex = x - (ax + t * dx);
            ey = y - (ay + t * dy);
            cnn__aug_blend(cv, x, y, col, r + 0.5 - sqrt(ex * ex + ey * ey));
        }
}

/* 5x9 glyphs (7 rows above the baseline, 2 for descenders); upper case is drawn
   as lower case, characters without a glyph as a space. */
static const char cnn__aug_font_chars[] = "0123456789abcdefghijklmnopqrstuvwxyz.-+:()/%_=";
static const unsigned char cnn__aug_font[][9] = { /* rows top to bottom, bit 4 = left column */
    {14,17,19,21,25,17,14,0,0}, {4,12,4,4,4,4,14,0,0}, {14,17,1,2,4,8,31,0,0},
    {14,17,1,6,1,17,14,0,0}, {2,6,10,18,31,2,2,0,0}, {31,16,30,1,1,17,14,0,0},
    {6,8,16,30,17,17,14,0,0}, {31,1,2,4,8,8,8,0,0}, {14,17,17,14,17,17,14,0,0},
    {14,17,17,15,1,2,12,0,0}, {0,0,14,1,15,17,15,0,0}, {16,16,30,17,17,17,30,0,0},
    {0,0,15,16,16,16,15,0,0}, {1,1,15,17,17,17,15,0,0}, {0,0,14,17,31,16,14,0,0},
    {6,8,30,8,8,8,8,0,0}, {0,0,15,17,17,17,15,1,14}, {16,16,30,17,17,17,17,0,0},
    {4,0,12,4,4,4,14,0,0}, {2,0,6,2,2,2,2,18,12}, {16,16,18,20,24,20,18,0,0},
    {12,4,4,4,4,4,14,0,0}, {0,0,26,21,21,21,21,0,0}, {0,0,30,17,17,17,17,0,0},
    {0,0,14,17,17,17,14,0,0}, {0,0,30,17,17,17,30,16,16}, {0,0,15,17,17,17,15,1,1},
    {0,0,22,25,16,16,16,0,0}, {0,0,15,16,14,1,30,0,0}, {8,8,30,8,8,9,6,0,0},
    {0,0,17,17,17,19,13,0,0}, {0,0,17,17,17,10,4,0,0}, {0,0,17,17,21,21,10,0,0},
    {0,0,17,10,4,10,17,0,0}, {0,0,17,17,17,17,15,1,14}, {0,0,31,2,4,8,31,0,0},
    {0,0,0,0,0,12,12,0,0}, {0,0,0,31,0,0,0,0,0}, {0,4,4,31,4,4,0,0,0}, {0,12,12,0,12,12,0,0,0},
    {2,4,8,8,8,4,2,0,0}, {8,4,2,2,2,4,8,0,0}, {1,1,2,4,8,16,16,0,0}, {24,25,2,4,8,19,3,0,0},
    {0,0,0,0,0,0,0,31,0}, {0,0,31,0,31,0,0,0,0}};

static int cnn__aug_text_width(const char *s, int scale) {
    int n = (int)strlen(s);
    return n ? (6 * n - 1) * scale : 0;
}

/* Text with its top-left corner at (x, y). */
static void cnn__aug_text(cnn__aug_canvas *cv, int x, int y, const char *s, int scale, cnn__aug_rgb col) {
    for (; *s; s++, x += 6 * scale) {
        int ch = (unsigned char)*s;
        const char *at;
        if (ch >= 'A' && ch <= 'Z') ch += 'a' - 'A';
        at = ch ? strchr(cnn__aug_font_chars, ch) : NULL;
        if (!at) continue;
        for (int row = 0; row < 9; row++)
            for (int bit = 0; bit < 5; bit++)
                if (cnn__aug_font[at - cnn__aug_font_chars][row] & (16 >> bit))
                    cnn__aug_fill(cv, x + bit * scale, y + row * scale, x + (bit + 1) * scale,
                                  y + (row + 1) * scale, col);
    }
}

static int cnn__aug_finite(double v) { return v == v && v - v == 0; }

/* A "nice" step (1, 2 or 5 times a power of ten) of at least x > 0. */
static double cnn__aug_nice_step(double x) {
    double p = pow(10, floor(log10(x))), f = x / p;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
}

static void cnn__aug_format_tick(char *buf, size_t size, double v, double step, double vmax) {
    if (vmax >= 1e6 || step < 1e-4) snprintf(buf, size, "%.2e", v);
    else if (step >= 1) snprintf(buf, size, "%.0f", v);
    else snprintf(buf, size, "%.*f", (int)ceil(-log10(step) - 1e-9), v);
}

/* A panel's plotting area [x0, x1] x [y0, y1] in pixels and the ranges it
   shows: epochs xlo..xhi across, values lo..hi up. */
typedef struct cnn__aug_plot {
    int x0, y0, x1, y1;
    double xlo, xhi, lo, hi;
} cnn__aug_plot;
/* an epoch and a value of plot p as pixel coordinates */
#define CNN__AUG_X(p, v) ((p)->x0 + ((v) - (p)->xlo) / ((p)->xhi - (p)->xlo) * ((p)->x1 - (p)->x0))
#define CNN__AUG_Y(p, v) ((p)->y1 - ((v) - (p)->lo) / ((p)->hi - (p)->lo) * ((p)->y1 - (p)->y0))

/* The value range p->lo..p->hi of the finite values of the series, padded by
   5% each side (a flat line: by 5% of its value) as matplotlib pads, and *vmax,
   the larger of their magnitudes; returns how many series there are. */
static int cnn__aug_panel_range(const double *series[2], int epochs, cnn__aug_plot *p, double *vmax) {
    double lo = HUGE_VAL, hi = -HUGE_VAL, pad;
    int n_series = 0;
    for (int s = 0; s < 2; s++)
        if (series[s]) {
            n_series++;
            for (int e = 0; e < epochs; e++)
                if (cnn__aug_finite(series[s][e])) {
                    if (series[s][e] < lo) lo = series[s][e];
                    if (series[s][e] > hi) hi = series[s][e];
                }
        }
    if (lo > hi) { lo = 0; hi = 1; } /* nothing to show */
    *vmax = fabs(lo) > fabs(hi) ? fabs(lo) : fabs(hi);
    if (hi - lo <= 1e-9 * (*vmax > 1 ? *vmax : 1)) pad = *vmax > 0 ? *vmax * 0.05 : 0.05;
    else pad = (hi - lo) * 0.05;
    p->lo = lo - pad;
    p->hi = hi + pad;
    return n_series;
}

/* The curves: segments between consecutive finite values, dots when few epochs. */
static void cnn__aug_panel_curves(cnn__aug_canvas *cv, const cnn__aug_plot *p, const double *series[2],
                                  int epochs, const cnn__aug_rgb colors[2]) {
    for (int s = 0; s < 2; s++) {
        const double *v = series[s];
        if (!v) continue;
        for (int e = 0; e < epochs; e++) {
            if (!cnn__aug_finite(v[e])) continue;
            double x = CNN__AUG_X(p, e + 1), y = CNN__AUG_Y(p, v[e]);
            if (e + 1 < epochs && cnn__aug_finite(v[e + 1]))
                cnn__aug_segment(cv, x, y, CNN__AUG_X(p, e + 2), CNN__AUG_Y(p, v[e + 1]), 1.0, colors[s]);
            if (epochs <= 40 || e == 0 || !cnn__aug_finite(v[e - 1]))
                cnn__aug_segment(cv, x, y, x, y, epochs <= 40 ? 2.5 : 1.5, colors[s]);
        }
    }
}

/* The legend of n_series (> 0) series, in the corner that covers the fewest
   points (matplotlib's "best"). */
static void cnn__aug_panel_legend(cnn__aug_canvas *cv, const cnn__aug_plot *p, const double *series[2],
                                  int epochs, int n_series, const cnn__aug_rgb colors[2], cnn__aug_rgb text) {
    static const char *const labels[2] = {"train", "validation"};
    const cnn__aug_rgb frame = {200, 200, 200}, white = {255, 255, 255};
    const int x0 = p->x0, y0 = p->y0, x1 = p->x1, y1 = p->y1;
    int bw = 8 + 24 + 6 + cnn__aug_text_width(series[1] ? labels[1] : labels[0], 1) + 8;
    int bh = 8 + 14 * n_series, best = 0, best_count = INT_MAX, bx, by, row = 0;
    for (int corner = 0; corner < 4; corner++) { /* upper right, lower right, upper left, lower left */
        int cx = corner < 2 ? x1 - 8 - bw : x0 + 8, cy = corner % 2 ? y1 - 8 - bh : y0 + 8, count = 0;
        for (int s = 0; s < 2; s++)
            for (int e = 0; series[s] && e < epochs; e++)
                if (cnn__aug_finite(series[s][e])) {
                    double x = CNN__AUG_X(p, e + 1), y = CNN__AUG_Y(p, series[s][e]);
                    count += x >= cx - 4 && x <= cx + bw + 4 && y >= cy - 4 && y <= cy + bh + 4;
                }
        if (count < best_count) { best_count = count; best = corner; }
    }
    bx = best < 2 ? x1 - 8 - bw : x0 + 8;
    by = best % 2 ? y1 - 8 - bh : y0 + 8;
    cnn__aug_fill(cv, bx, by, bx + bw, by + bh, frame);
    cnn__aug_fill(cv, bx + 1, by + 1, bx + bw - 1, by + bh - 1, white);
    for (int s = 0; s < 2; s++) {
        int ly = by + 4 + 14 * row + 7;
        if (!series[s]) continue;
        cnn__aug_segment(cv, bx + 8, ly, bx + 32, ly, 1.0, colors[s]);
        cnn__aug_text(cv, bx + 38, ly - 4, labels[s], 1, text);
        row++;
    }
}

/* One panel: axes in the box [x0, x1] x [y0, y1] (the plotting area), title
   above, tick labels, curves of up to two series, legend. */
static void cnn__aug_panel(cnn__aug_canvas *cv, int x0, int y0, int x1, int y1, const char *title,
                           const double *series[2], int epochs) {
    const cnn__aug_rgb colors[2] = {{31, 119, 180}, {255, 127, 14}}; /* matplotlib C0, C1 */
    const cnn__aug_rgb black = {0, 0, 0}, grid = {222, 222, 222}, text = {34, 34, 34};
    cnn__aug_plot pl;
    double step, vmax;
    char buf[48];
    int n_series;

    pl.x0 = x0;
    pl.y0 = y0;
    pl.x1 = x1;
    pl.y1 = y1;
    n_series = cnn__aug_panel_range(series, epochs, &pl, &vmax);
    pl.xlo = epochs > 1 ? 1 - (epochs - 1) * 0.05 : 0.5;
    pl.xhi = epochs > 1 ? epochs + (epochs - 1) * 0.05 : 1.5;

    /* y grid, ticks and labels */
    step = cnn__aug_nice_step((pl.hi - pl.lo) / 5);
    for (double k = ceil(pl.lo / step); k * step <= pl.hi; k++) {
        double v = fabs(k) < 0.5 ? 0 : k * step;
        int y = (int)floor(CNN__AUG_Y(&pl, v) + 0.5);
        cnn__aug_fill(cv, x0 + 1, y, x1, y + 1, grid);
        cnn__aug_fill(cv, x0 - 5, y, x0, y + 1, black);
        cnn__aug_format_tick(buf, sizeof buf, v, step, vmax);
        cnn__aug_text(cv, x0 - 9 - cnn__aug_text_width(buf, 1), y - 3, buf, 1, text);
    }
    /* x grid, ticks and labels (whole epochs, 1-based) */
    step = epochs > 1 ? cnn__aug_nice_step((epochs - 1) / 8.0) : 1;
    if (step < 1) step = 1;
    for (double k = ceil((pl.xlo > 1 ? pl.xlo : 1) / step); k * step <= pl.xhi; k++) { /* epochs start at 1 */
        int x = (int)floor(CNN__AUG_X(&pl, k * step) + 0.5);
        cnn__aug_fill(cv, x, y0, x + 1, y1, grid);
        cnn__aug_fill(cv, x, y1 + 1, x + 1, y1 + 6, black);
        snprintf(buf, sizeof buf, "%.0f", k * step);
        cnn__aug_text(cv, x - cnn__aug_text_width(buf, 1) / 2, y1 + 10, buf, 1, text);
    }
    cnn__aug_text(cv, (x0 + x1 - cnn__aug_text_width("epoch", 1)) / 2, y1 + 26, "epoch", 1, text);
    cnn__aug_text(cv, (x0 + x1 - cnn__aug_text_width(title, 2)) / 2, y0 - 28, title, 2, text);

    cnn__aug_panel_curves(cv, &pl, series, epochs, colors);
    /* the frame */
    cnn__aug_fill(cv, x0, y0, x1 + 1, y0 + 1, black);
    cnn__aug_fill(cv, x0, y1, x1 + 1, y1 + 1, black);
    cnn__aug_fill(cv, x0, y0, x0 + 1, y1 + 1, black);
    cnn__aug_fill(cv, x1, y0, x1 + 1, y1 + 1, black);
    if (n_series) cnn__aug_panel_legend(cv, &pl, series, epochs, n_series, colors, text);
}
#undef CNN__AUG_X
#undef CNN__AUG_Y

CNN__AUG_IMPL int cnn_history_plot_png(const cnn_history *h, const char *path) {
    enum { W = 1000, H = 400, PANEL = W / 2 };
    const double *loss[2], *acc[2];
    cnn__aug_canvas cv;
    int ok;
    if (!h) return cnn_set_error(CNN_ERR_ARG, "cnn_history_plot_png: the history is NULL");
    if (!path) return cnn_set_error(CNN_ERR_ARG, "cnn_history_plot_png: the path is NULL");
    if (h->epochs <= 0)
        return cnn_set_error(CNN_ERR_ARG, "cnn_history_plot_png: the history is empty (no epochs) ('%s')",
                             path);
    loss[0] = cnn_history_get(h, "loss");
    loss[1] = cnn_history_get(h, "val_loss");
    acc[0] = cnn_history_get(h, "accuracy");
    acc[1] = cnn_history_get(h, "val_accuracy");
    if (!acc[0]) acc[0] = cnn_history_get(h, "acc"); /* older Keras names */
    if (!acc[1]) acc[1] = cnn_history_get(h, "val_acc");
    if (!loss[0] && !loss[1] && !acc[0] && !acc[1])
        return cnn_set_error(CNN_ERR_ARG,
                             "cnn_history_plot_png: the history has no loss or accuracy values ('%s')", path);
    cv.w = W;
    cv.h = H;
    cv.px = (unsigned char *)CNN_MALLOC((size_t)W * H * 3);
    if (!cv.px) return cnn_set_error(CNN_ERR_MEMORY, "cnn_history_plot_png: out of memory ('%s')", path);
    memset(cv.px, 255, (size_t)W * H * 3);
    cnn__aug_panel(&cv, 72, 44, PANEL - 16, H - 48, "loss", loss, h->epochs);
    cnn__aug_panel(&cv, PANEL + 72, 44, W - 16, H - 48, "accuracy", acc, h->epochs);
    ok = cnn__png_write("cnn_history_plot_png", path, W, H, 3, cv.px, (size_t)W * 3);
    CNN_FREE(cv.px);
    return ok;
}

CNN__AUG_IMPL int cnn_draw_text(unsigned char *rgb, int w, int h, int x, int y, const char *text, int scale,
                                unsigned char r, unsigned char g, unsigned char b) {
    cnn__aug_canvas cv;
    cnn__aug_rgb col;
    if (!rgb || !text) return cnn_set_error(CNN_ERR_ARG, "cnn_draw_text: the %s NULL", rgb ? "text is" : "pixels are");
    if (w <= 0 || h <= 0 || scale < 1 || scale > 64)
        return cnn_set_error(CNN_ERR_ARG, "cnn_draw_text: bad image size %dx%d or scale %d (1..64)", w, h, scale);
    if (strlen(text) > 4096) return cnn_set_error(CNN_ERR_ARG, "cnn_draw_text: the text is longer than 4096");
    cv.px = rgb;
    cv.w = w;
    cv.h = h;
    col.r = r;
    col.g = g;
    col.b = b;
    if (x < w && y < h && x > INT_MIN / 2 && y > -9 * scale) /* else nothing shows (and x + width stays an int) */
        cnn__aug_text(&cv, x, y, text, scale, col);
    return cnn__aug_text_width(text, scale);
}

/* ======================================================================== */
/* ImageDataGenerator: threads, random numbers, options                     */
/* ======================================================================== */

#if !defined(CNN_AUGMENT_NO_THREADS) && (defined(__unix__) || defined(__APPLE__))
#include <pthread.h>
#define CNN__IDG_THREADS 1 /* background workers; without them batches are made inside next */
#endif
#ifdef _OPENMP
#include <omp.h>
#define CNN__IDG_OMP(x) _Pragma(#x)
#else
#define CNN__IDG_OMP(x)
#endif

/* splitmix64's finaliser: every random number here is a hash of a counter, so a
   draw depends only on (seed, pass, sample), never on which thread makes it. */
static uint64_t cnn__idg_mix(uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

typedef struct cnn__idg_rng {
    uint64_t s;
} cnn__idg_rng;

/* uniform in [lo, hi) with 53 random bits */
static double cnn__idg_uniform(cnn__idg_rng *r, double lo, double hi) {
    r->s += 0x9e3779b97f4a7c15ULL;
    return lo + (hi - lo) * ((double)(cnn__idg_mix(r->s) >> 11) * (1.0 / 9007199254740992.0));
}

/* The seed of one image: sample `pos` of pass `pass` (fit: round and index). */
static uint64_t cnn__idg_sample_key(uint64_t seed, uint64_t pass, uint64_t pos) {
    return cnn__idg_mix(cnn__idg_mix(cnn__idg_mix(seed ^ 0x494d475345454431ULL) ^ pass) ^ pos);
}

/* Position i of a pseudo-random permutation of 0..n-1 chosen by key: a 4-round
   Feistel network on the smallest even number of bits covering n, walked until
   it lands below n (fewer than 4 steps on average). No table: any batch of any
   pass can be made by any thread in any order. */
static int cnn__idg_permute(int i, int n, uint64_t key) {
    int bits = 2;
    uint64_t v = (uint64_t)i, mask;
    while (((uint64_t)1 << bits) < (uint64_t)n) bits += 2;
    mask = ((uint64_t)1 << (bits / 2)) - 1;
    do {
        uint64_t l = v >> (bits / 2), r = v & mask;
        for (int round = 0; round < 4; round++) {
            uint64_t nl = r;
            r = l ^ (cnn__idg_mix(key + (uint64_t)round * 0x2545f4914f6cdd1dULL + r) & mask);
            l = nl;
        }
        v = (l << (bits / 2)) | r;
    } while (v >= (uint64_t)n);
    return (int)v;
}

static uint64_t cnn__idg_order_key(uint64_t seed, int pass) {
    return cnn__idg_mix(cnn__idg_mix(seed ^ 0x53485546464c4521ULL) ^ (uint64_t)pass);
}

struct cnn_datagen {
    cnn_datagen_opts o;
    double zoom_lo, zoom_hi;  /* zoom factors drawn from [lo, hi]; both 1 = no zoom */
    int c;                    /* channels of mean/std; 0 = not fitted */
    float *mean, *std;        /* [c] */
    int d;                    /* size of the ZCA matrix; 0 = none */
    float *pc;                /* [d][d] */
};

static int cnn__idg_range(const char *who, const char *name, float v) {
    if (!(v >= 0) || !cnn__aug_finite(v))
        return cnn_set_error(CNN_ERR_ARG, "%s: %s must be a finite number >= 0, not %g", who, name,
                             (double)v);
    return CNN_OK;
}

/* Does the generator draw anything at random? */
static int cnn__idg_is_random(const cnn_datagen *g) {
    const cnn_datagen_opts *o = &g->o;
    return o->rotation_range != 0 || o->width_shift_range != 0 || o->height_shift_range != 0 ||
           o->width_shift_int != 0 || o->height_shift_int != 0 || o->width_shift_list_len != 0 ||
           o->height_shift_list_len != 0 || o->shear_range != 0 || !(g->zoom_lo == 1 && g->zoom_hi == 1) ||
           o->channel_shift_range != 0 || o->brightness_range[0] != 0 || o->brightness_range[1] != 0 ||
           o->horizontal_flip || o->vertical_flip;
}

/* The zoom factors' bounds *lo..*hi from zoom_range, in either of Keras' forms:
   a float z (1-z .. 1+z) or a pair. */
static int cnn__idg_check_zoom(const cnn_datagen_opts *op, const char *who, double *lo, double *hi) {
    if (!cnn__aug_finite(op->zoom_range[0]) || !cnn__aug_finite(op->zoom_range[1]))
        return cnn_set_error(CNN_ERR_ARG, "%s: zoom_range {%g, %g} is not finite", who,
                             (double)op->zoom_range[0], (double)op->zoom_range[1]);
    if (op->zoom_range[1] == 0) { /* the float form z: [1-z, 1+z] */
        if (!(op->zoom_range[0] >= 0 && op->zoom_range[0] < 1))
            return cnn_set_error(CNN_ERR_ARG,
                                 "%s: zoom_range %g must be in [0, 1): zoom factors 1-z .. 1+z must "
                                 "stay > 0 (or give {lo, hi} with 0 < lo <= hi)",
                                 who, (double)op->zoom_range[0]);
        *lo = 1.0 - op->zoom_range[0];
        *hi = 1.0 + op->zoom_range[0];
    } else {
        if (!(op->zoom_range[0] > 0 && op->zoom_range[1] >= op->zoom_range[0]))
            return cnn_set_error(CNN_ERR_ARG,
                                 "%s: zoom_range {%g, %g} must have 0 < lo <= hi (zoom factors <= 0 "
                                 "are not images)",
                                 who, (double)op->zoom_range[0], (double)op->zoom_range[1]);
        *lo = op->zoom_range[0];
        *hi = op->zoom_range[1];
    }
    return CNN_OK;
}

/* The shifts: each axis in at most one of its three forms (_range, _int, _list). */
static int cnn__idg_check_shifts(const cnn_datagen_opts *op, const char *who) {
    if (op->width_shift_int < 0 || op->height_shift_int < 0)
        return cnn_set_error(CNN_ERR_ARG, "%s: %s %d must be >= 0", who, op->width_shift_int < 0 ?
                             "width_shift_int" : "height_shift_int",
                             op->width_shift_int < 0 ? op->width_shift_int : op->height_shift_int);
    for (int axis = 0; axis < 2; axis++) {
        const char *name = axis ? "height_shift" : "width_shift";
        const float *list = axis ? op->height_shift_list : op->width_shift_list;
        const int len = axis ? op->height_shift_list_len : op->width_shift_list_len;
        const int forms = ((axis ? op->height_shift_range : op->width_shift_range) != 0) +
                          ((axis ? op->height_shift_int : op->width_shift_int) != 0) + (len != 0);
        if (len < 0 || len > CNN_SHIFT_LIST_MAX)
            return cnn_set_error(CNN_ERR_ARG, "%s: %s_list_len %d must be 0..%d", who, name, len,
                                 CNN_SHIFT_LIST_MAX);
        for (int i = 0; i < len; i++)
            if (!cnn__aug_finite(list[i]))
                return cnn_set_error(CNN_ERR_ARG, "%s: %s_list[%d] is not finite", who, name, i);
        if (forms > 1)
            return cnn_set_error(CNN_ERR_ARG, "%s: give %s as one of _range, _int or _list, not %d of them",
                                 who, name, forms);
    }
    return CNN_OK;
}

/* Every option of cnn_datagen_new, checked in a fixed order (the first bad one
   is the one reported); *zoom_lo..*zoom_hi as cnn__idg_check_zoom. */
static int cnn__idg_check_opts(const cnn_datagen_opts *op, const char *who, double *zoom_lo,
                               double *zoom_hi) {
    int rc;
    if ((rc = cnn__idg_range(who, "rotation_range", op->rotation_range)) ||
        (rc = cnn__idg_range(who, "width_shift_range", op->width_shift_range)) ||
        (rc = cnn__idg_range(who, "height_shift_range", op->height_shift_range)) ||
        (rc = cnn__idg_range(who, "shear_range", op->shear_range)) ||
        (rc = cnn__idg_range(who, "channel_shift_range", op->channel_shift_range)) ||
        (rc = cnn__idg_range(who, "zca_epsilon", op->zca_epsilon)))
        return rc;
    if ((rc = cnn__idg_check_zoom(op, who, zoom_lo, zoom_hi))) return rc;
    if ((op->brightness_range[0] != 0 || op->brightness_range[1] != 0) &&
        !(op->brightness_range[0] >= 0 && op->brightness_range[1] >= op->brightness_range[0] &&
          cnn__aug_finite(op->brightness_range[1])))
        return cnn_set_error(CNN_ERR_ARG, "%s: brightness_range {%g, %g} must have 0 <= lo <= hi", who,
                             (double)op->brightness_range[0], (double)op->brightness_range[1]);
    if ((int)op->fill_mode < (int)CNN_FILL_NEAREST || (int)op->fill_mode > (int)CNN_FILL_WRAP)
        return cnn_set_error(CNN_ERR_ARG, "%s: unknown fill_mode %d (CNN_FILL_NEAREST, CNN_FILL_CONSTANT, "
                             "CNN_FILL_REFLECT or CNN_FILL_WRAP)", who, (int)op->fill_mode);
    if ((int)op->interpolation < (int)CNN_INTERP_DEFAULT || (int)op->interpolation > (int)CNN_INTERP_HAMMING)
        return cnn_set_error(CNN_ERR_ARG, "%s: unknown interpolation %d (CNN_INTERP_BILINEAR or "
                             "CNN_INTERP_NEAREST)", who, (int)op->interpolation);
    /* Keras' transforms are scipy's orders 0 and 1 */
    if ((int)op->interpolation > (int)CNN_INTERP_BILINEAR) {
        static const char *const names[] = {"bicubic", "lanczos", "box", "hamming"};
        return cnn_set_error(CNN_ERR_ARG,
                             "%s: interpolation %s is for resizing files (flow_from_directory, "
                             "cnn_load_image); the transforms take CNN_INTERP_BILINEAR or CNN_INTERP_NEAREST",
                             who, names[(int)op->interpolation - (int)CNN_INTERP_BICUBIC]);
    }
    if (!cnn__aug_finite(op->cval) || !cnn__aug_finite(op->rescale))
        return cnn_set_error(CNN_ERR_ARG, "%s: %s %g is not finite", who,
                             cnn__aug_finite(op->cval) ? "rescale" : "cval",
                             (double)(cnn__aug_finite(op->cval) ? op->rescale : op->cval));
    if (!(op->validation_split >= 0 && op->validation_split < 1))
        return cnn_set_error(CNN_ERR_ARG, "%s: validation_split %g must be in [0, 1)", who,
                             (double)op->validation_split);
    return cnn__idg_check_shifts(op, who);
}

/* The defaults of zero options, then Keras' adjustments with its warnings: ZCA
   implies centring and replaces std normalization; std normalization implies
   centring. */
static void cnn__idg_keras_adjust(cnn_datagen_opts *op, const char *who) {
    if (op->zca_epsilon == 0) op->zca_epsilon = 1e-6f;
    if (op->interpolation == CNN_INTERP_DEFAULT) op->interpolation = CNN_INTERP_BILINEAR;
    if (op->zca_whitening && !op->featurewise_center) {
        fprintf(stderr, "%s: warning: zca_whitening turns featurewise_center on (as Keras does)\n", who);
        op->featurewise_center = 1;
    }
    if (op->zca_whitening && op->featurewise_std_normalization) {
        fprintf(stderr,
                "%s: warning: zca_whitening turns featurewise_std_normalization off (as Keras does)\n", who);
        op->featurewise_std_normalization = 0;
    }
    if (op->featurewise_std_normalization && !op->featurewise_center) {
        fprintf(stderr,
                "%s: warning: featurewise_std_normalization turns featurewise_center on (as Keras does)\n",
                who);
        op->featurewise_center = 1;
    }
    if (op->samplewise_std_normalization && !op->samplewise_center) {
        fprintf(stderr,
                "%s: warning: samplewise_std_normalization turns samplewise_center on (as Keras does)\n",
                who);
        op->samplewise_center = 1;
    }
}

CNN__AUG_IMPL cnn_datagen *cnn_datagen_new_opt(const cnn_datagen_opts *o) {
    static const char who[] = "cnn_datagen_new";
    cnn_datagen_opts op;
    cnn_datagen *g;
    double lo = 1, hi = 1;
    if (o) op = *o;
    else memset(&op, 0, sizeof op);
    if (cnn__idg_check_opts(&op, who, &lo, &hi)) return NULL;
    cnn__idg_keras_adjust(&op, who);
    g = (cnn_datagen *)CNN_MALLOC(sizeof *g);
    if (!g) {
        cnn_set_error(CNN_ERR_MEMORY, "%s: out of memory", who);
        return NULL;
    }
    memset(g, 0, sizeof *g);
    g->o = op;
    g->zoom_lo = lo;
    g->zoom_hi = hi;
    return g;
}

CNN__AUG_IMPL void cnn_datagen_free(cnn_datagen *g) {
    if (!g) return;
    CNN_FREE(g->mean);
    CNN_FREE(g->std);
    CNN_FREE(g->pc);
    CNN_FREE(g);
}

CNN__AUG_IMPL const cnn_datagen_opts *cnn_datagen_options(const cnn_datagen *g) {
    if (!g) {
        cnn_set_error(CNN_ERR_ARG, "cnn_datagen_options: the generator is NULL");
        return NULL;
    }
    return &g->o;
}

CNN__AUG_IMPL int cnn_datagen_stats(const cnn_datagen *g, const float **mean, const float **std, int *c) {
    if (!g) return cnn_set_error(CNN_ERR_ARG, "cnn_datagen_stats: the generator is NULL");
    if (mean) *mean = g->mean;
    if (std) *std = g->std;
    if (c) *c = g->c;
    return CNN_OK;
}

CNN__AUG_IMPL const float *cnn_datagen_zca_matrix(const cnn_datagen *g, int *d) {
    if (d) *d = g ? g->d : 0;
    if (!g) cnn_set_error(CNN_ERR_ARG, "cnn_datagen_zca_matrix: the generator is NULL");
    return g ? g->pc : NULL;
}

CNN__AUG_IMPL int cnn_datagen_set_stats(cnn_datagen *g, const float *mean, const float *std, int c) {
    static const char who[] = "cnn_datagen_set_stats";
    float *m = NULL, *s = NULL;
    if (!g) return cnn_set_error(CNN_ERR_ARG, "%s: the generator is NULL", who);
    if (!mean && !std) {
        CNN_FREE(g->mean);
        CNN_FREE(g->std);
        g->mean = g->std = NULL;
        g->c = 0;
        return CNN_OK;
    }
    if (c < 1 || c > 4096)
        return cnn_set_error(CNN_ERR_ARG, "%s: channel count %d must be in 1..4096", who, c);
    for (int k = 0; k < c; k++)
        if ((mean && !cnn__aug_finite(mean[k])) || (std && !(std[k] >= 0 && cnn__aug_finite(std[k]))))
            return cnn_set_error(CNN_ERR_ARG, "%s: %s[%d] must be finite%s", who,
                                 mean && !cnn__aug_finite(mean[k]) ? "mean" : "std", k,
                                 mean && !cnn__aug_finite(mean[k]) ? "" : " and >= 0");
    m = (float *)CNN_MALLOC((size_t)c * sizeof(float));
    s = (float *)CNN_MALLOC((size_t)c * sizeof(float));
    if (!m || !s) {
        CNN_FREE(m);
        CNN_FREE(s);
        return cnn_set_error(CNN_ERR_MEMORY, "%s: out of memory", who);
    }
    for (int k = 0; k < c; k++) {
        m[k] = mean ? mean[k] : 0.0f;
        s[k] = std ? std[k] : 1.0f;
    }
    CNN_FREE(g->mean);
    CNN_FREE(g->std);
    g->mean = m;
    g->std = s;
    g->c = c;
    return CNN_OK;
}

/* ======================================================================== */
/* ImageDataGenerator: one image (affine resample, colour, standardize)     */
/* ======================================================================== */

/* The pull map: output pixel (x, y) samples the input at
   (a*x + b*y + tx, c*x + d*y + ty); x is the column, y the row. */
typedef struct cnn__idg_affine {
    double a, b, c, d, tx, ty;
} cnn__idg_affine;

/* Rows of an h x w image the resample makes at a time: about 128 pixels, or one
   row, so that their blocks' offsets and fractions stay in L1 (see the resample). */
static int cnn__idg_chunk_rows(int h, int w) {
    const int rows = w < 128 ? 128 / w : 1;
    return rows < h ? rows : h;
}

/* Per-thread buffers, allocated once: nothing is allocated per image. */
typedef struct cnn__idg_scratch {
    int *off;            /* [rows*w] where each output pixel of a chunk of rows (cnn__idg_chunk_rows)
                            reads: its 2x2 block's offset in pad */
    float *fx, *fy;      /* [rows*w] the fractions of its sample coordinates */
    float *pad;          /* [h+3][w+3][c] (+4 spare) the input as float, extended by the fill
                            rule: one pixel above and left, two below and right */
    float *zca;          /* [h*w*c] when whitening */
    unsigned char *img8; /* [h*w*c] a file decoded by a lazy flow, or an image being saved */
} cnn__idg_scratch;

static void cnn__idg_scratch_free(cnn__idg_scratch *s) {
    CNN_FREE(s->off);
    CNN_FREE(s->fx);
    CNN_FREE(s->fy);
    CNN_FREE(s->pad);
    CNN_FREE(s->zca);
    CNN_FREE(s->img8);
    memset(s, 0, sizeof *s);
}

static int cnn__idg_scratch_init(cnn__idg_scratch *s, int h, int w, int c, int zca, int bytes) {
    const size_t n = (size_t)h * (size_t)w * (size_t)c, chunk = (size_t)cnn__idg_chunk_rows(h, w) * (size_t)w;
    memset(s, 0, sizeof *s);
    s->off = (int *)CNN_MALLOC(chunk * sizeof(int));
    s->fx = (float *)CNN_MALLOC(chunk * sizeof(float));
    s->fy = (float *)CNN_MALLOC(chunk * sizeof(float));
    s->pad = (float *)CNN_MALLOC(((size_t)(h + 3) * (size_t)(w + 3) * (size_t)c + 4) * sizeof(float));
    if (zca) s->zca = (float *)CNN_MALLOC(n * sizeof(float));
    if (bytes) s->img8 = (unsigned char *)CNN_MALLOC(n);
    if (!s->off || !s->fx || !s->fy || !s->pad || (zca && !s->zca) || (bytes && !s->img8)) {
        cnn__idg_scratch_free(s);
        return cnn_set_error(CNN_ERR_MEMORY, "out of memory allocating transform buffers for %dx%dx%d images",
                             h, w, c);
    }
    return CNN_OK;
}

/* sin and cos of an angle in degrees, exact at multiples of 90 */
static void cnn__idg_sincos(double deg, double *s, double *c) {
    double r = fmod(deg, 360.0);
    if (r < 0) r += 360.0;
    if (r == 0) { *s = 0; *c = 1; }
    else if (r == 90) { *s = 1; *c = 0; }
    else if (r == 180) { *s = 0; *c = -1; }
    else if (r == 270) { *s = -1; *c = 0; }
    else {
        double t = deg * (3.14159265358979323846 / 180.0);
        *s = sin(t);
        *c = cos(t);
    }
}

/* matrix = rotation x shift x shear x zoom about the centre, flips folded in:
     in = R * (Sh * Z * (out - ctr) - shift) + ctr,   ctr = ((w-1)/2, (h-1)/2)
   R = [cos -sin; sin cos] (pulling through it turns the picture counter-clockwise
   as displayed, rows going down), Sh = [1 -sin(shear); 0 cos(shear)],
   Z = diag(zoom_x, zoom_y). A flip after the transform mirrors `out` about the
   centre, i.e. negates a column of the matrix. */
static void cnn__idg_affine_of(const cnn_transform *t, int h, int w, cnn__idg_affine *A) {
    const double zx = t->zoom_x != 0 ? t->zoom_x : 1.0, zy = t->zoom_y != 0 ? t->zoom_y : 1.0;
    const double cx = (w - 1) * 0.5, cy = (h - 1) * 0.5;
    double st, ct, ss, cs, m01, m11, a, b, c, d;
    cnn__idg_sincos(t->theta, &st, &ct);
    cnn__idg_sincos(t->shear, &ss, &cs);
    m01 = -ss * zy; /* Sh * Z = [zx m01; 0 m11] */
    m11 = cs * zy;
    a = ct * zx;
    b = ct * m01 - st * m11;
    c = st * zx;
    d = st * m01 + ct * m11;
    if (t->flip_horizontal) { a = -a; c = -c; }
    if (t->flip_vertical) { b = -b; d = -d; }
    A->a = a;
    A->b = b;
    A->c = c;
    A->d = d;
    A->tx = cx - (a * cx + b * cy) - (ct * t->shift_x - st * t->shift_y);
    A->ty = cy - (c * cx + d * cy) - (st * t->shift_x + ct * t->shift_y);
}

/* The index that sample i of an n-long line reads under a fill mode; -1 = cval. */
static int cnn__idg_map(int i, int n, int mode) {
    int p;
    if ((unsigned)i < (unsigned)n) return i;
    switch (mode) {
    case CNN_FILL_CONSTANT: return -1;
    case CNN_FILL_REFLECT:  /* period 2n: abcd|dcba */
        p = 2 * n;
        i %= p;
        if (i < 0) i += p;
        return i < n ? i : p - 1 - i;
    case CNN_FILL_WRAP:     /* period n */
        i %= n;
        return i < 0 ? i + n : i;
    default:                /* nearest */
        return i < 0 ? 0 : n - 1;
    }
}

#if defined(__GNUC__) || defined(__clang__)
#define CNN__IDG_RESTRICT __restrict__
#define CNN__IDG_INLINE __attribute__((always_inline)) inline
#else
#define CNN__IDG_RESTRICT
#define CNN__IDG_INLINE inline
#endif

/* The resample is optimised as at -O3, whatever the flags, and assumes no
   floating-point traps: without that, GCC keeps the fill rules' conditional
   products as branches wherever AVX-512's masks are missing, and the loops stay
   scalar. Bodies and the functions that inline them must agree. The values are
   the same; only floating-point exception flags could differ. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("O3", "no-trapping-math")
#endif

/* The input as float with a border made by the fill rule: pad[r+1][q+1] =
   input[map(r)][map(q)] for r in -1..h+1, q in -1..w+1 (cval where map gives -1).
   With it every fill mode becomes a rule on the sample coordinate (below) and
   every output pixel reads one 2x2 block of pad, without a branch. */
static CNN__IDG_INLINE void cnn__idg_pad(const unsigned char *x8, const float *xf, int h, int w, int c,
                                         int mode, float cval, float *pad) {
    const size_t C = (size_t)c, prow = (size_t)(w + 3) * C, row = (size_t)w * C;
    const int border[3] = {-1, w, w + 1}; /* the columns left and right of each row, */
    int from[3];                          /* and where the fill rule takes them (-1: cval) */
    for (int e = 0; e < 3; e++) from[e] = cnn__idg_map(border[e], w, mode);
    for (int r = 0; r < h; r++) { /* the inside, and the left and right borders of each row */
        float *d = pad + (size_t)(r + 1) * prow;
        if (x8) {
            const unsigned char *sr = x8 + (size_t)r * row;
            for (size_t i = 0; i < row; i++) d[C + i] = (float)sr[i];
        } else {
            memcpy(d + C, xf + (size_t)r * row, row * sizeof(float));
        }
        for (int e = 0; e < 3; e++) {
            float *to = d + (size_t)(border[e] + 1) * C;
            const float *src = d + (size_t)(from[e] + 1) * C;
            for (size_t k = 0; k < C; k++) to[k] = from[e] < 0 ? cval : src[k];
        }
    }
    for (int r = -1; r <= h + 1; r += (r == -1 ? h + 1 : 1)) { /* whole rows above and below */
        const int m = cnn__idg_map(r, h, mode);
        float *d = pad + (size_t)(r + 1) * prow;
        if (m < 0) for (size_t i = 0; i < prow; i++) d[i] = cval;
        else memcpy(d, pad + (size_t)(m + 1) * prow, prow * sizeof(float));
    }
}

/* The per-coordinate rules, written as selects on doubles that hold whole
   numbers (exact below 2^53), so that the loops below vectorize on every
   instruction set: each pixel converts to int once, at the end. (A comparison
   turned into an int mixes 64- and 32-bit lanes, which SSE2 cannot select.) */
/* i = floor(v), f = v - i */
#define CNN__IDG_FLOOR(v, i, f)        \
    do {                               \
        i = (double)(int)(v);          \
        i -= i > (v) ? 1.0 : 0.0;      \
        f = (v) - i;                   \
    } while (0)
/* clamp the segment start i to [lo, hi]; a clamped one reads one sample (f = 0) */
#define CNN__IDG_CLAMP(i, f, lo, hi)                 \
    do {                                             \
        f = (i < (lo) || i >= (hi)) ? 0.0 : f;       \
        i = i < (lo) ? (lo) : i;                     \
        i = i > (hi) ? (hi) : i;                     \
    } while (0)
/* i mod n in [0, n) */
#define CNN__IDG_MOD(i, n)                        \
    do {                                          \
        const double q_ = i / (n);                \
        double k_ = (double)(int)q_;              \
        k_ -= k_ > q_ ? 1.0 : 0.0;                \
        i -= k_ * (n);                            \
        i += i < 0 ? (n) : 0.0;                   \
        i -= i >= (n) ? (n) : 0.0;                \
    } while (0)
/* reflect with period 2n about n - 1/2: a segment [i, i+1] in the mirrored half
   runs backwards (start 2n-2-i, fraction 1-f); at f == 0 (a sample point, or
   nearest interpolation) take the mirrored point 2n-1-i itself, exactly */
#define CNN__IDG_REFLECT(i, f, n, point)                          \
    do {                                                          \
        const int at_ = (point) || f == 0;                        \
        double flipped_i_, flipped_f_;                            \
        CNN__IDG_MOD(i, 2.0 * (n));                               \
        flipped_i_ = 2.0 * (n) - 1.0 - i - (at_ ? 0.0 : 1.0);     \
        flipped_f_ = at_ ? 0.0 : 1.0 - f;                         \
        f = i >= (n) ? flipped_f_ : f;                            \
        i = i >= (n) ? flipped_i_ : i;                            \
    } while (0)
/* the fill rule on one pixel's coordinates (X, Y) -> x0, y0, f, g */
#define CNN__IDG_FOLD(X, Y)                                                        \
    do {                                                                           \
        CNN__IDG_FLOOR(X, x0, f);                                                  \
        CNN__IDG_FLOOR(Y, y0, g);                                                  \
        if (mode == CNN_FILL_NEAREST) {                                            \
            CNN__IDG_CLAMP(x0, f, 0.0, w - 1.0);                                   \
            CNN__IDG_CLAMP(y0, g, 0.0, h - 1.0);                                   \
        } else if (mode == CNN_FILL_CONSTANT) {                                    \
            CNN__IDG_CLAMP(x0, f, -1.0, (double)w);                                \
            CNN__IDG_CLAMP(y0, g, -1.0, (double)h);                                \
        } else if (mode == CNN_FILL_WRAP) {                                        \
            CNN__IDG_MOD(x0, (double)w);                                           \
            CNN__IDG_MOD(y0, (double)h);                                           \
        } else {                                                                   \
            CNN__IDG_REFLECT(x0, f, (double)w, nearest);                           \
            CNN__IDG_REFLECT(y0, g, (double)h, nearest);                           \
        }                                                                          \
        off[ox] = (int)((y0 + 1.0) * prow + (x0 + 1.0) * c);                       \
        fx[ox] = (float)f * keep;                                                  \
        fy[ox] = (float)g * keep;                                                  \
    } while (0)

/* The clamping fill modes (nearest, constant: the tutorial's) on a row that
   stays within 2^30 pixels of the image: the coordinates in 32.32 fixed point,
   so that no step along the row rounds to a float and back. Their whole parts
   are the high 32 bits, their fractions the low ones. Each run of
   CNN__IDG_RUN pixels starts from the double coordinates, and pixel j of the
   run adds j steps, the double step rounded to 2^-33: the error stays below
   2^-26 of a pixel, and the fractions keep 24 bits, as a float does. The
   offsets are made in float, exact below 2^24 (the caller checks the size,
   and that the row and its step stay within 2^30).
   The 64-bit numbers are kept as two 32-bit halves, added with the low half's
   carry: the same sums as 64-bit adds, but every operation in 32-bit lanes (4
   to an SSE2 register, which has no 64-bit compare, narrowing or conversion
   to float). The j steps are the same for every row of an image: a table. */
enum { CNN__IDG_RUN = 64 }; /* pixels a restart from double */
#define CNN__IDG_FIXED_MAX 1073741824.0 /* 2^30: the reach of a row and its step in fixed point */
typedef struct {
    uint32_t xl[CNN__IDG_RUN], xh[CNN__IDG_RUN]; /* j * x step: low and high halves */
    uint32_t yl[CNN__IDG_RUN], yh[CNN__IDG_RUN]; /* j * y step */
} cnn__idg_steps;

/* the steps of the map's row direction (a, cc), j = 0 .. min(w, RUN) - 1; only the
   fixed-point rows read them, and only where |a| and |cc| are below 2^30 (beyond,
   the steps would not fit a long long: the table is left unset) */
static CNN__IDG_INLINE void cnn__idg_steps_of(double a, double cc, int w, cnn__idg_steps *st) {
    const double one = 4294967296.0; /* 2^32 */
    if (!(fabs(a) < CNN__IDG_FIXED_MAX && fabs(cc) < CNN__IDG_FIXED_MAX)) return;
    const long long x_step = (long long)floor(a * one + 0.5), y_step = (long long)floor(cc * one + 0.5);
    const int n = w < CNN__IDG_RUN ? w : CNN__IDG_RUN;
    for (int j = 0; j < n; j++) { /* unsigned: the products wrap as two's complement does */
        const unsigned long long X = (unsigned long long)x_step * (unsigned)j;
        const unsigned long long Y = (unsigned long long)y_step * (unsigned)j;
        st->xl[j] = (uint32_t)X, st->xh[j] = (uint32_t)(X >> 32);
        st->yl[j] = (uint32_t)Y, st->yh[j] = (uint32_t)(Y >> 32);
    }
}

/* Out as cnn__idg_coords_row; st from cnn__idg_steps_of(a, cc, w). */
static CNN__IDG_INLINE void cnn__idg_coords_row_fixed(const cnn__idg_steps *CNN__IDG_RESTRICT st, double bx,
                                                      double by, double a, double cc, int h, int w, int c,
                                                      int mode, float keep, int *CNN__IDG_RESTRICT off,
                                                      float *CNN__IDG_RESTRICT fx, float *CNN__IDG_RESTRICT fy) {
    const double one = 4294967296.0; /* 2^32 */
    /* a segment start outside [lo, top) reads one sample: the edge (nearest) or cval (constant) */
    const float x_lo = mode == CNN_FILL_NEAREST ? 0.0f : -1.0f, y_lo = x_lo;
    const float x_top = (float)(mode == CNN_FILL_NEAREST ? w - 1 : w);
    const float y_top = (float)(mode == CNN_FILL_NEAREST ? h - 1 : h);
    const float prow = (float)((w + 3) * c), pixel = (float)c;
    const float scale = keep * (1.0f / 16777216.0f); /* 24 bits of fraction, or none (nearest) */
    for (int o = 0; o < w; o += CNN__IDG_RUN) {
        const int n = w - o < CNN__IDG_RUN ? w - o : CNN__IDG_RUN;
        const unsigned long long X = (unsigned long long)(long long)floor((a * o + bx) * one + 0.5);
        const unsigned long long Y = (unsigned long long)(long long)floor((cc * o + by) * one + 0.5);
        const uint32_t Xl = (uint32_t)X, Xh = (uint32_t)(X >> 32), Yl = (uint32_t)Y, Yh = (uint32_t)(Y >> 32);
        for (int j = 0; j < n; j++) {
            const uint32_t xl = Xl + st->xl[j], yl = Yl + st->yl[j];
            const uint32_t xh = Xh + st->xh[j] + (xl < Xl), yh = Yh + st->yh[j] + (yl < Yl); /* carries */
            /* floor: the high half, read as signed, then as float, where SSE has min and max
               (exact inside the image; rounding keeps an outside value outside). Written so
               that GCC and Clang find them: "a < b ? b : a" is max(a, b) */
            const float x0 = (float)(int)xh, y0 = (float)(int)yh;
            const float xa = x0 < x_lo ? x_lo : x0, ya = y0 < y_lo ? y_lo : y0;
            const float xc = x_top < xa ? x_top : xa, yc = y_top < ya ? y_top : ya;
            const float f = (float)(int)(xl >> 8) * scale, g = (float)(int)(yl >> 8) * scale;
            fx[o + j] = xc == x0 && x0 < x_top ? f : 0.0f; /* beyond the edge: one sample */
            fy[o + j] = yc == y0 && y0 < y_top ? g : 0.0f;
            off[o + j] = (int)((yc + 1.0f) * prow + (xc + 1.0f) * pixel);
        }
    }
}

/* The sample coordinates of output row oy, folded by the fill mode so that the
   padded input answers exactly (every 2x2 block starts in [-1, n]):
     nearest   clamp to [0, n-1] (beyond the edge every sample is the edge);
     constant  clamp to [-1, n] (beyond, both samples are cval);
     wrap      floor mod n (the interpolant is n-periodic);
     reflect   floor mod 2n, mirrored (the interpolant is symmetric about -1/2).
   Out: the offset of each pixel's 2x2 block in pad, and the fractions. The
   clamping modes go to cnn__idg_coords_row_fixed where they can; otherwise the
   coordinates are computed in double (exact enough for any image size, no drift
   along the row). The map is linear along the row, so its ends bound it: only
   a row reaching absurdly far out (huge zoom factors) takes the loop that clamps
   before converting to int. The mode is a constant of each loop: the compiler
   makes one vectorized loop per mode. */
static CNN__IDG_INLINE void cnn__idg_coords_row_with(const cnn__idg_affine *A, const cnn__idg_steps *st, int oy,
                                                     int h, int w, int c, int mode, int nearest,
                                                     int *CNN__IDG_RESTRICT off, float *CNN__IDG_RESTRICT fx,
                                                     float *CNN__IDG_RESTRICT fy) {
    const double half = nearest ? 0.5 : 0.0; /* order 0 rounds: floor(v + 0.5) */
    const double bx = A->b * oy + A->tx + half, by = A->d * oy + A->ty + half, a = A->a, cc = A->c;
    const double ex = a * (w - 1) + bx, ey = cc * (w - 1) + by, big = 1e9;
    const float keep = nearest ? 0.0f : 1.0f;
    const int prow = (w + 3) * c;
    const double fixed_max = CNN__IDG_FIXED_MAX;
    if ((mode == CNN_FILL_NEAREST || mode == CNN_FILL_CONSTANT) && fabs(bx) < fixed_max &&
        fabs(by) < fixed_max && fabs(ex) < fixed_max && fabs(ey) < fixed_max && fabs(a) < fixed_max &&
        fabs(cc) < fixed_max &&
        (double)(h + 3) * prow < 16777216.0) {
        cnn__idg_coords_row_fixed(st, bx, by, a, cc, h, w, c, mode, keep, off, fx, fy);
        return;
    }
    if (fabs(bx) < big && fabs(by) < big && fabs(ex) < big && fabs(ey) < big) {
        switch (mode) {
#define CNN__IDG_ROW(M)                                                            \
    case M:                                                                        \
        for (int ox = 0; ox < w; ox++) {                                           \
            const int mode_ = M;                                                   \
            const double X = a * ox + bx, Y = cc * ox + by;                        \
            double f, g, x0, y0;                                                   \
            (void)mode_;                                                           \
            CNN__IDG_FOLD_M(X, Y, M);                                              \
        }                                                                          \
        break;
#define CNN__IDG_FOLD_M(X, Y, M) \
    do {                         \
        const int mode = M;      \
        CNN__IDG_FOLD(X, Y);     \
    } while (0)
            CNN__IDG_ROW(CNN_FILL_NEAREST)
            CNN__IDG_ROW(CNN_FILL_CONSTANT)
            CNN__IDG_ROW(CNN_FILL_REFLECT)
            CNN__IDG_ROW(CNN_FILL_WRAP)
#undef CNN__IDG_ROW
#undef CNN__IDG_FOLD_M
        default: break;
        }
        return;
    }
    for (int ox = 0; ox < w; ox++) {
        double X = a * ox + bx, Y = cc * ox + by, f, g, x0, y0;
        X = X < -big ? -big : (X > big ? big : X);
        Y = Y < -big ? -big : (Y > big ? big : Y);
        CNN__IDG_FOLD(X, Y);
    }
}
/* one row, as above (the tests call it) */
static CNN__IDG_INLINE void cnn__idg_coords_row(const cnn__idg_affine *A, int oy, int h, int w, int c, int mode,
                                                int nearest, int *off, float *fx, float *fy) {
    cnn__idg_steps st;
    cnn__idg_steps_of(A->a, A->c, w, &st);
    cnn__idg_coords_row_with(A, &st, oy, h, w, c, mode, nearest, off, fx, fy);
}
/* rows oy0 .. oy0 + rows - 1 of the image: off, fx, fy [rows*w]; st from cnn__idg_steps_of
   where the mode clamps */
static CNN__IDG_INLINE void cnn__idg_coords(const cnn__idg_affine *A, const cnn__idg_steps *st, int oy0, int rows,
                                            int h, int w, int c, int mode, int nearest, int *off, float *fx,
                                            float *fy) {
    for (int r = 0; r < rows; r++)
        cnn__idg_coords_row_with(A, st, oy0 + r, h, w, c, mode, nearest, off + (size_t)r * w, fx + (size_t)r * w,
                                 fy + (size_t)r * w);
}
#undef CNN__IDG_FIXED_MAX
#undef CNN__IDG_FLOOR
#undef CNN__IDG_CLAMP
#undef CNN__IDG_MOD
#undef CNN__IDG_REFLECT
#undef CNN__IDG_FOLD

/* a + t * (b - a); one rounding less where the target has FMA (strict C modes
   do not contract a*b+c on their own) */
#if defined(__FMA__) || defined(__ARM_FEATURE_FMA)
#define CNN__IDG_LERP(a, b, t) fmaf((t), (b) - (a), (a))
#else
#define CNN__IDG_LERP(a, b, t) ((a) + (t) * ((b) - (a)))
#endif

/* bilinear blend of channel k from the 2x2 block starting at pad[i] (row stride
   R, pixel stride C), into output pixel ox */
#define CNN__IDG_BLEND(k, C, R)                                                                  \
    do {                                                                                         \
        const float t0_ = CNN__IDG_LERP(pad[i + (k)], pad[i + (C) + (k)], wx);                   \
        const float t1_ = CNN__IDG_LERP(pad[i + (R) + (k)], pad[i + (R) + (C) + (k)], wx);       \
        o[ox * (C) + (k)] = CNN__IDG_LERP(t0_, t1_, wy);                                         \
    } while (0)

/* A pixel's channels as one 4-float vector (GCC / clang vector extensions: SSE,
   NEON, ... or plain code where there is none); the scalar code elsewhere. */
#if (defined(__GNUC__) || defined(__clang__)) && !defined(CNN_AUGMENT_NO_SIMD)
typedef float cnn__idg_v4 __attribute__((vector_size(16)));
#define CNN__IDG_V4 1
#endif

/* npix output pixels o [npix][c] from the padded input (which has 4 spare floats
   at its end), their blocks and fractions in off, fx, fy [npix]; spill: more
   pixels follow in o, which the last one's 4th lane may overwrite. Neighbouring
   pixels read scattered blocks, so the work is vectorized across channels, not
   pixels: gathers are slow on many CPUs. */
static CNN__IDG_INLINE void cnn__idg_gather(const float *CNN__IDG_RESTRICT pad, int npix, int spill, int w, int c,
                                            const int *CNN__IDG_RESTRICT off,
                                            const float *CNN__IDG_RESTRICT fx,
                                            const float *CNN__IDG_RESTRICT fy, float *CNN__IDG_RESTRICT o) {
    const int R = (w + 3) * c;
    int ox = 0;
#ifdef CNN__IDG_V4
    if (c == 3 || c == 4) { /* with 3 channels the 4th lane is overwritten by the next pixel */
        /* one loop per pixel size, so that the block's offsets are constants */
#define CNN__IDG_V4_LOOP(C)                                             \
    for (; ox < last; ox++) {                                           \
        const float *p = pad + off[ox];                                 \
        const float wx = fx[ox], wy = fy[ox];                           \
        cnn__idg_v4 a, b, d, e, t0, t1;                                 \
        memcpy(&a, p, sizeof a);                                        \
        memcpy(&b, p + (C), sizeof b);                                  \
        memcpy(&d, p + R, sizeof d);                                    \
        memcpy(&e, p + R + (C), sizeof e);                              \
        t0 = a + (b - a) * wx;                                          \
        t1 = d + (e - d) * wx;                                          \
        t0 = t0 + (t1 - t0) * wy;                                       \
        memcpy(o + (size_t)ox * (C), &t0, sizeof t0);                   \
    }
        const int last = c == 3 && !spill ? npix - 1 : npix;
        if (c == 3) CNN__IDG_V4_LOOP(3)
        else CNN__IDG_V4_LOOP(4)
#undef CNN__IDG_V4_LOOP
    }
#endif
    if (c == 3) {
        for (; ox < npix; ox++) {
            const int i = off[ox];
            const float wx = fx[ox], wy = fy[ox];
            CNN__IDG_BLEND(0, 3, R);
            CNN__IDG_BLEND(1, 3, R);
            CNN__IDG_BLEND(2, 3, R);
        }
    } else if (c == 1) {
        for (; ox < npix; ox++) {
            const int i = off[ox];
            const float wx = fx[ox], wy = fy[ox];
            CNN__IDG_BLEND(0, 1, R);
        }
    } else {
        for (; ox < npix; ox++) {
            const int i = off[ox];
            const float wx = fx[ox], wy = fy[ox];
            for (int k = 0; k < c; k++) CNN__IDG_BLEND(k, c, R);
        }
    }
}
#undef CNN__IDG_BLEND

/* The resample, padding, coordinates and gather, compiled once per instruction set as
   cnn.h's kernels are, and run on the one that cnn.h's kernel path names
   (cnn_kernels(): CNN_KERNELS, cnn_set_kernels). The coordinate loops run in
   double: 2 lanes with plain x86-64 flags, 4 with AVX2, 8 with AVX-512. The
   same plain C in each; a path's results are its own (FMA may fuse the blends
   where the flags allow contraction). */
#define CNN__IDG_RESAMPLE_ARGS                                                                     \
    const unsigned char *x8, const float *xf, int h, int w, int c, const cnn__idg_affine *A, int mode, \
        int nearest, float cval, cnn__idg_scratch *s, float *out
#define CNN__IDG_RESAMPLE_BODY                                                                             \
    {                                                                                                      \
        cnn__idg_steps st;                                                                                 \
        const int rows = cnn__idg_chunk_rows(h, w); /* about 128 pixels: their blocks stay in L1 */         \
        cnn__idg_pad(x8, xf, h, w, c, mode, cval, s->pad);                                                 \
        if (mode == CNN_FILL_NEAREST || mode == CNN_FILL_CONSTANT) cnn__idg_steps_of(A->a, A->c, w, &st);  \
        for (int oy = 0; oy < h; oy += rows) {                                                             \
            const int n = h - oy < rows ? h - oy : rows;                                                   \
            cnn__idg_coords(A, &st, oy, n, h, w, c, mode, nearest, s->off, s->fx, s->fy);                  \
            cnn__idg_gather(s->pad, n * w, oy + n < h, w, c, s->off, s->fx, s->fy,                         \
                            out + (size_t)oy * (size_t)w * (size_t)c);                                     \
        }                                                                                                  \
    }
typedef void (*cnn__idg_resample_fn)(CNN__IDG_RESAMPLE_ARGS);
static void cnn__idg_resample_portable(CNN__IDG_RESAMPLE_ARGS) CNN__IDG_RESAMPLE_BODY
/* GCC and Clang compile the x86-64 paths function by function whatever the
   flags (cnn.h runs them only where the processor has them); CNN_NO_AVX2 and
   CNN_NO_AVX512 leave them out, as in cnn.h. (Pragmas spelled out: GCC drops
   an optimize pragma that comes from a macro.) */
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 6))
#if !defined(CNN_NO_AVX2)
#define CNN__IDG_AVX2 1
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#pragma GCC optimize("O3", "no-trapping-math") /* as the bodies (see above) */
#endif
static void cnn__idg_resample_avx2(CNN__IDG_RESAMPLE_ARGS) CNN__IDG_RESAMPLE_BODY
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif
#if !defined(CNN_NO_AVX512)
#define CNN__IDG_AVX512 1
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx2,fma")
#pragma GCC optimize("O3", "no-trapping-math")
#endif
static void cnn__idg_resample_avx512(CNN__IDG_RESAMPLE_ARGS) CNN__IDG_RESAMPLE_BODY
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif
#endif
#undef CNN__IDG_RESAMPLE_BODY
#undef CNN__IDG_RESAMPLE_ARGS

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

/* the resample of the kernel path in use (a vector path only where it runs) */
static cnn__idg_resample_fn cnn__idg_resampler(void) {
    const char *path = cnn_kernels();
#ifdef CNN__IDG_AVX512
    if (strcmp(path, "avx512") == 0) return cnn__idg_resample_avx512;
#endif
#ifdef CNN__IDG_AVX2
    if (strcmp(path, "avx2") == 0) return cnn__idg_resample_avx2;
#endif
    (void)path;
    return cnn__idg_resample_portable;
}

static void cnn__idg_minmax(const float *x, size_t n, float *mn, float *mx) {
    float lo = x[0], hi = x[0];
    for (size_t i = 1; i < n; i++) {
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
    }
    *mn = lo;
    *mx = hi;
}

/* Keras' channel shift (one intensity for every channel, clipped to the image's
   range) and brightness (a factor, clipped to 0..255; an image outside 0..255 is
   mapped to it by its min and max and back). With 4 channels (and 2, grey +
   alpha, which Keras refuses) brightness leaves the alpha channel alone, as
   PIL's ImageEnhance.Brightness. Flips commute
   with both, so they live in the matrix. x is [n / c][c]. */
static void cnn__idg_color(const cnn_transform *t, float *x, size_t n, int c) {
    float mn, mx;
    if (t->channel_shift != 0) {
        const float s = t->channel_shift;
        cnn__idg_minmax(x, n, &mn, &mx);
        for (size_t i = 0; i < n; i++) {
            float v = x[i] + s;
            x[i] = v < mn ? mn : (v > mx ? mx : v);
        }
    }
    if (t->brightness != 0) {
        const float b = t->brightness;
        const size_t colours = c == 4 ? 3 : c == 2 ? 1 : (size_t)c; /* all but alpha (RGBA, grey + alpha) */
        cnn__idg_minmax(x, n, &mn, &mx);
        if (mn >= 0 && mx <= 255) {
            for (size_t p = 0; p < n; p += (size_t)c)
                for (size_t k = p; k < p + colours; k++) {
                    float v = x[k] * b;
                    x[k] = v > 255 ? 255 : v;
                }
        } else if (mx > mn) {
            const float span = mx - mn;
            for (size_t p = 0; p < n; p += (size_t)c)
                for (size_t k = p; k < p + colours; k++) {
                    float v = (x[k] - mn) / span * 255 * b;
                    v = v > 255 ? 255 : v;
                    x[k] = v / 255 * span + mn;
                }
        }
    }
}

/* The random transform and colour change of one image: x8 (uint8) or xf (float)
   [h][w][c] -> out (float, never aliasing the input). */
static void cnn__idg_transform(const cnn_datagen *g, const unsigned char *x8, const float *xf, int h, int w,
                               int c, const cnn_transform *t, cnn__idg_scratch *s, float *out) {
    const size_t n = (size_t)h * (size_t)w * (size_t)c;
    const int nearest = g->o.interpolation == CNN_INTERP_NEAREST, mode = (int)g->o.fill_mode;
    const float cval = g->o.cval;
    cnn__idg_affine A;
    cnn__idg_affine_of(t, h, w, &A);
    if (A.a == 1 && A.b == 0 && A.c == 0 && A.d == 1 && A.tx == 0 && A.ty == 0) {
        if (x8) for (size_t i = 0; i < n; i++) out[i] = (float)x8[i];
        else memcpy(out, xf, n * sizeof(float));
    } else {
        cnn__idg_resampler()(x8, xf, h, w, c, &A, mode, nearest, cval, s, out);
    }
    cnn__idg_color(t, out, n, c);
}

/* Keras' get_random_transform, drawing in Keras' order. */
/* One shift in pixels along an axis of `size` pixels, in Keras' three forms:
   a float range r (uniform in [-r, r], times size when r < 1), an int r (a
   whole number of pixels from {0, ..., r-1}, times a random sign), or a list
   (one of its values, times a random sign, times size when all are < 1). */
static double cnn__idg_draw_shift(cnn__idg_rng *r, float range, int whole, const float *list, int len,
                                  int size) {
    if (whole) {
        int k = (int)cnn__idg_uniform(r, 0, whole);
        k = k < whole ? k : whole - 1;
        return cnn__idg_uniform(r, 0, 1) < 0.5 ? -k : k;
    }
    if (len) {
        int k = (int)cnn__idg_uniform(r, 0, len), all_below_1 = 1;
        double v;
        for (int i = 0; i < len; i++) all_below_1 &= list[i] < 1;
        v = list[k < len ? k : len - 1];
        if (cnn__idg_uniform(r, 0, 1) < 0.5) v = -v;
        return all_below_1 ? v * size : v;
    }
    if (range != 0) {
        const double v = cnn__idg_uniform(r, -range, range);
        return range < 1 ? v * size : v;
    }
    return 0;
}

static void cnn__idg_draw(const cnn_datagen *g, int h, int w, uint64_t seed, cnn_transform *t) {
    const cnn_datagen_opts *o = &g->o;
    cnn__idg_rng r;
    r.s = cnn__idg_mix(seed);
    memset(t, 0, sizeof *t);
    if (o->rotation_range != 0) t->theta = (float)cnn__idg_uniform(&r, -o->rotation_range, o->rotation_range);
    t->shift_x = (float)cnn__idg_draw_shift(&r, o->width_shift_range, o->width_shift_int, o->width_shift_list,
                                            o->width_shift_list_len, w);
    t->shift_y = (float)cnn__idg_draw_shift(&r, o->height_shift_range, o->height_shift_int,
                                            o->height_shift_list, o->height_shift_list_len, h);
    if (o->shear_range != 0) t->shear = (float)cnn__idg_uniform(&r, -o->shear_range, o->shear_range);
    if (!(g->zoom_lo == 1 && g->zoom_hi == 1)) {
        t->zoom_x = (float)cnn__idg_uniform(&r, g->zoom_lo, g->zoom_hi);
        t->zoom_y = (float)cnn__idg_uniform(&r, g->zoom_lo, g->zoom_hi);
    }
    if (o->horizontal_flip) t->flip_horizontal = cnn__idg_uniform(&r, 0, 1) < 0.5;
    if (o->vertical_flip) t->flip_vertical = cnn__idg_uniform(&r, 0, 1) < 0.5;
    if (o->channel_shift_range != 0)
        t->channel_shift = (float)cnn__idg_uniform(&r, -o->channel_shift_range, o->channel_shift_range);
    if (o->brightness_range[0] != 0 || o->brightness_range[1] != 0)
        t->brightness = (float)cnn__idg_uniform(&r, o->brightness_range[0], o->brightness_range[1]);
}

/* Keras' standardize of one image, in place. tmp: [h*w*c] for ZCA. `index`
   names the image in an error. */
static int cnn__idg_standardize_one(const cnn_datagen *g, float *x, int h, int w, int c, float *tmp,
                                    long long index) {
    const cnn_datagen_opts *o = &g->o;
    const size_t n = (size_t)h * (size_t)w * (size_t)c, pixels = (size_t)h * (size_t)w;
    if (o->preprocessing_function) {
        int r = o->preprocessing_function(x, h, w, c, o->preprocessing_user);
        if (r)
            return cnn_set_error(CNN_ERR_ARG, "preprocessing_function returned %d for image %lld", r, index);
    }
    if (o->rescale != 0) {
        const float r = o->rescale;
        for (size_t i = 0; i < n; i++) x[i] *= r;
    }
    if (o->samplewise_center || o->samplewise_std_normalization) {
        double sum = 0, ss = 0, mean;
        for (size_t i = 0; i < n; i++) sum += x[i];
        mean = sum / (double)n;
        if (o->samplewise_center) {
            const float m = (float)mean;
            for (size_t i = 0; i < n; i++) x[i] -= m;
            mean -= m; /* what is left of the mean after subtracting it in float */
        }
        if (o->samplewise_std_normalization) {
            float div;
            for (size_t i = 0; i < n; i++) {
                double dv = x[i] - mean;
                ss += dv * dv;
            }
            div = (float)sqrt(ss / (double)n) + 1e-6f;
            for (size_t i = 0; i < n; i++) x[i] /= div;
        }
    }
    if (o->featurewise_center)
        for (size_t p = 0; p < pixels; p++)
            for (int k = 0; k < c; k++) x[p * (size_t)c + (size_t)k] -= g->mean[k];
    if (o->featurewise_std_normalization)
        for (size_t p = 0; p < pixels; p++)
            for (int k = 0; k < c; k++) x[p * (size_t)c + (size_t)k] /= g->std[k] + 1e-6f;
    if (o->zca_whitening) { /* x (a row) times the matrix */
        memset(tmp, 0, n * sizeof(float));
        for (size_t i = 0; i < n; i++) {
            const float xi = x[i];
            const float *prow = g->pc + i * n;
            for (size_t j = 0; j < n; j++) tmp[j] += xi * prow[j];
        }
        memcpy(x, tmp, n * sizeof(float));
    }
    return CNN_OK;
}

/* Is the generator ready to standardize h x w x c images? */
static int cnn__idg_check_ready(const cnn_datagen *g, int h, int w, int c, const char *who) {
    const cnn_datagen_opts *o = &g->o;
    if ((o->featurewise_center || o->featurewise_std_normalization) && !g->mean)
        return cnn_set_error(CNN_ERR_STATE,
                             "%s: the generator has %s but no statistics yet: call cnn_datagen_fit "
                             "(or cnn_datagen_set_stats) first",
                             who,
                             o->zca_whitening        ? "zca_whitening"
                             : o->featurewise_center ? "featurewise_center"
                                                     : "featurewise_std_normalization");
    if ((o->featurewise_center || o->featurewise_std_normalization) && g->c != c)
        return cnn_set_error(
            CNN_ERR_SHAPE, "%s: the generator's statistics have %d channel(s), the images %d", who, g->c, c);
    if (o->zca_whitening && !g->pc)
        return cnn_set_error(CNN_ERR_STATE, "%s: the generator has zca_whitening but no ZCA matrix yet: call "
                             "cnn_datagen_fit first", who);
    if (o->zca_whitening && (size_t)g->d != (size_t)h * (size_t)w * (size_t)c)
        return cnn_set_error(CNN_ERR_SHAPE,
                             "%s: the ZCA matrix was fitted on images of %d values, these have %dx%dx%d", who,
                             g->d, h, w, c);
    return CNN_OK;
}

static int cnn__idg_check_shape(int h, int w, int c, const char *who) {
    if (h <= 0 || w <= 0 || c <= 0 || (double)h * w * c > (double)(INT_MAX / 4))
        return cnn_set_error(CNN_ERR_ARG, "%s: bad image shape %dx%dx%d", who, h, w, c);
    return CNN_OK;
}

static int cnn__idg_check_transform(const cnn_transform *t, const char *who) {
    const float v[8] = {t->theta, t->shift_x, t->shift_y, t->shear, t->zoom_x, t->zoom_y, t->channel_shift,
                        t->brightness};
    static const char *const names[8] = {"theta", "shift_x", "shift_y", "shear", "zoom_x", "zoom_y",
                                         "channel_shift", "brightness"};
    for (int i = 0; i < 8; i++)
        if (!cnn__aug_finite(v[i])) return cnn_set_error(CNN_ERR_ARG, "%s: %s is not finite", who, names[i]);
    if (t->zoom_x < 0 || t->zoom_y < 0)
        return cnn_set_error(CNN_ERR_ARG, "%s: zoom %s %g must be > 0 (0 means 1)", who,
                             t->zoom_x < 0 ? "zoom_x" : "zoom_y",
                             (double)(t->zoom_x < 0 ? t->zoom_x : t->zoom_y));
    if (t->brightness < 0)
        return cnn_set_error(CNN_ERR_ARG, "%s: brightness %g must be >= 0 (0 means none)", who,
                             (double)t->brightness);
    return CNN_OK;
}

CNN__AUG_IMPL int cnn_datagen_get_random_transform(const cnn_datagen *g, int h, int w, uint64_t seed,
                                                   cnn_transform *t) {
    static const char who[] = "cnn_datagen_get_random_transform";
    if (!g || !t) return cnn_set_error(CNN_ERR_ARG, "%s: the %s is NULL", who, g ? "transform" : "generator");
    if (cnn__idg_check_shape(h, w, 1, who)) return CNN_ERR_ARG;
    cnn__idg_draw(g, h, w, seed, t);
    return CNN_OK;
}

CNN__AUG_IMPL int cnn_datagen_apply_transform_opt(const cnn_datagen *g, const float *x, int h, int w, int c,
                                                  const cnn_transform *t, float *out) {
    static const char who[] = "cnn_datagen_apply_transform";
    cnn__idg_scratch s;
    cnn_transform id;
    float *copy = NULL;
    int rc;
    if (!g || !x || !out)
        return cnn_set_error(CNN_ERR_ARG, "%s: the %s is NULL", who,
                             !g   ? "generator"
                             : !x ? "image"
                                  : "output");
    if ((rc = cnn__idg_check_shape(h, w, c, who))) return rc;
    if (!t) {
        memset(&id, 0, sizeof id);
        t = &id;
    }
    if ((rc = cnn__idg_check_transform(t, who))) return rc;
    if ((rc = cnn__idg_scratch_init(&s, h, w, c, 0, 0))) return rc;
    if (x == out) { /* the resample reads everywhere: work from a copy */
        const size_t n = (size_t)h * (size_t)w * (size_t)c;
        copy = (float *)CNN_MALLOC(n * sizeof(float));
        if (!copy) {
            cnn__idg_scratch_free(&s);
            return cnn_set_error(CNN_ERR_MEMORY, "%s: out of memory", who);
        }
        memcpy(copy, x, n * sizeof(float));
        x = copy;
    }
    cnn__idg_transform(g, NULL, x, h, w, c, t, &s, out);
    CNN_FREE(copy);
    cnn__idg_scratch_free(&s);
    return CNN_OK;
}

CNN__AUG_IMPL int cnn_datagen_random_transform(const cnn_datagen *g, const float *x, int h, int w, int c,
                                               uint64_t seed, float *out) {
    cnn_transform t;
    if (!g) return cnn_set_error(CNN_ERR_ARG, "cnn_datagen_random_transform: the generator is NULL");
    if (cnn__idg_check_shape(h, w, c, "cnn_datagen_random_transform")) return CNN_ERR_ARG;
    cnn__idg_draw(g, h, w, seed, &t);
    return cnn_datagen_apply_transform_opt(g, x, h, w, c, &t, out);
}

CNN__AUG_IMPL int cnn_datagen_standardize(const cnn_datagen *g, float *x, int n, int h, int w, int c) {
    static const char who[] = "cnn_datagen_standardize";
    const size_t per = (size_t)h * (size_t)w * (size_t)c;
    float *tmp = NULL;
    int rc;
    if (!g || !x)
        return cnn_set_error(CNN_ERR_ARG, "%s: the %s is NULL", who, g ? "image array" : "generator");
    if (n < 0) return cnn_set_error(CNN_ERR_ARG, "%s: image count %d is negative", who, n);
    if ((rc = cnn__idg_check_shape(h, w, c, who)) || (rc = cnn__idg_check_ready(g, h, w, c, who))) return rc;
    if (g->o.zca_whitening && !(tmp = (float *)CNN_MALLOC(per * sizeof(float))))
        return cnn_set_error(CNN_ERR_MEMORY, "%s: out of memory", who);
    for (int i = 0; i < n && !rc; i++) rc = cnn__idg_standardize_one(g, x + (size_t)i * per, h, w, c, tmp, i);
    CNN_FREE(tmp);
    return rc;
}

/* ======================================================================== */
/* ImageDataGenerator: fit (statistics, ZCA)                                */
/* ======================================================================== */

/* Householder reduction of the symmetric v [n][n] to tridiagonal form (tred2's
   first half): e[1..n-1] gets the sub-diagonal, d[1..n-1] each step's scale h,
   and v the Householder vectors that cnn__idg_tridiag_vectors accumulates. */
#define V_(i, j) v[(size_t)(i) * (size_t)n + (size_t)(j)] /* element (i, j) of v [n][n], in both halves */
static void cnn__idg_householder(double *v, double *d, double *e, int n) {
    for (int j = 0; j < n; j++) d[j] = V_(n - 1, j);
    for (int i = n - 1; i > 0; i--) {
        double scale = 0, h = 0;
        for (int k = 0; k < i; k++) scale += fabs(d[k]);
        if (scale == 0) {
            e[i] = d[i - 1];
            for (int j = 0; j < i; j++) {
                d[j] = V_(i - 1, j);
                V_(i, j) = 0;
                V_(j, i) = 0;
            }
        } else {
            double f, g, hh;
            for (int k = 0; k < i; k++) {
                d[k] /= scale;
                h += d[k] * d[k];
            }
            f = d[i - 1];
            g = sqrt(h);
            if (f > 0) g = -g;
            e[i] = scale * g;
            h -= f * g;
            d[i - 1] = f - g;
            for (int j = 0; j < i; j++) e[j] = 0;
            for (int j = 0; j < i; j++) {
                f = d[j];
                V_(j, i) = f;
                g = e[j] + V_(j, j) * f;
                for (int k = j + 1; k <= i - 1; k++) {
                    g += V_(k, j) * d[k];
                    e[k] += V_(k, j) * f;
                }
                e[j] = g;
            }
            f = 0;
            for (int j = 0; j < i; j++) {
                e[j] /= h;
                f += e[j] * d[j];
            }
            hh = f / (h + h);
            for (int j = 0; j < i; j++) e[j] -= hh * d[j];
            for (int j = 0; j < i; j++) {
                f = d[j];
                g = e[j];
                for (int k = j; k <= i - 1; k++) V_(k, j) -= (f * e[k] + g * d[k]);
                d[j] = V_(i - 1, j);
                V_(i, j) = 0;
            }
        }
        d[i] = h;
    }
}

/* tred2's second half: accumulate the transformations in v [n][n] into the
   orthogonal matrix that tridiagonalises, leaving the diagonal in d [n]. */
static void cnn__idg_tridiag_vectors(double *v, double *d, int n) {
    for (int i = 0; i < n - 1; i++) {
        double h;
        V_(n - 1, i) = V_(i, i);
        V_(i, i) = 1;
        h = d[i + 1];
        if (h != 0) {
            for (int k = 0; k <= i; k++) d[k] = V_(k, i + 1) / h;
            for (int j = 0; j <= i; j++) {
                double g = 0;
                for (int k = 0; k <= i; k++) g += V_(k, i + 1) * V_(k, j);
                for (int k = 0; k <= i; k++) V_(k, j) -= g * d[k];
            }
        }
        for (int k = 0; k <= i; k++) V_(k, i + 1) = 0;
    }
    for (int j = 0; j < n; j++) {
        d[j] = V_(n - 1, j);
        V_(n - 1, j) = 0;
    }
    V_(n - 1, n - 1) = 1;
}
#undef V_

/* tql2: the implicit QL method on the tridiagonal matrix (diagonal d [n],
   sub-diagonal e[1..n-1]), applying its rotations to the vectors, the ROWS of
   z [n][n]. On return d holds the eigenvalues. Returns 0, or -1 if an
   eigenvalue took over 60 iterations. */
static int cnn__idg_ql(double *z, double *d, double *e, int n) {
    double f = 0, tst1 = 0;
    const double eps = 2.220446049250313e-16;
    for (int i = 1; i < n; i++) e[i - 1] = e[i];
    e[n - 1] = 0;
    for (int l = 0; l < n; l++) {
        int m = l, iter = 0;
        tst1 = fmax(tst1, fabs(d[l]) + fabs(e[l]));
        while (m < n - 1 && fabs(e[m]) > eps * tst1) m++;
        if (m > l) {
            do {
                double g = d[l], p = (d[l + 1] - g) / (2.0 * e[l]), r = hypot(p, 1.0), dl1, h, c = 1, c2 = 1,
                       c3 = 1, el1, s = 0, s2 = 0;
                if (++iter > 60) return -1;
                if (p < 0) r = -r;
                d[l] = e[l] / (p + r);
                d[l + 1] = e[l] * (p + r);
                dl1 = d[l + 1];
                h = g - d[l];
                for (int i = l + 2; i < n; i++) d[i] -= h;
                f += h;
                p = d[m];
                el1 = e[l + 1];
                for (int i = m - 1; i >= l; i--) {
                    double *zi = z + (size_t)i * n, *zi1 = zi + n;
                    c3 = c2;
                    c2 = c;
                    s2 = s;
                    g = c * e[i];
                    h = c * p;
                    r = hypot(p, e[i]);
                    e[i + 1] = s * r;
                    s = e[i] / r;
                    c = p / r;
                    p = c * d[i] - s * g;
                    d[i + 1] = h + s * (c * g + s * d[i]);
                    for (int k = 0; k < n; k++) {
                        double t = zi1[k];
                        zi1[k] = s * zi[k] + c * t;
                        zi[k] = c * zi[k] - s * t;
                    }
                }
                p = -s * s2 * c3 * el1 * e[l] / dl1;
                e[l] = s * p;
                d[l] = c * p;
            } while (fabs(e[l]) > eps * tst1);
        }
        d[l] += f;
        e[l] = 0;
    }
    return 0;
}

/* Symmetric eigendecomposition (Householder tridiagonalisation, then the
   implicit QL method; EISPACK's tred2/tql2). On entry v [n][n] holds the
   symmetric matrix; on return z [n][n] holds the eigenvectors as ROWS and d [n]
   the eigenvalues. e [n] is scratch. Returns 0, or -1 if QL did not converge. */
static int cnn__idg_eigen(double *v, double *z, double *d, double *e, int n) {
    cnn__idg_householder(v, d, e, n);
    cnn__idg_tridiag_vectors(v, d, n);
    e[0] = 0;
    /* z = v transposed: QL's rotations then touch two contiguous rows */
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) z[(size_t)j * n + i] = v[(size_t)i * (size_t)n + (size_t)j];
    return cnn__idg_ql(z, d, e, n);
}

/* sigma (upper triangle) += xt^T xt over nb of the B columns of xt [n][B] */
static void cnn__idg_syrk(double *sigma, const double *xt, int n, int B, int nb) {
    CNN__IDG_OMP(omp parallel for schedule(dynamic, 8) if (n >= 256))
    for (int i = 0; i < n; i++) {
        const double *xi = xt + (size_t)i * (size_t)B;
        double *row = sigma + (size_t)i * (size_t)n;
        for (int j = i; j < n; j++) {
            const double *xj = xt + (size_t)j * (size_t)B;
            double s = 0;
            for (int b = 0; b < nb; b++) s += xi[b] * xj[b];
            row[j] += s;
        }
    }
}

/* ZCA as tf-keras 2.x computes it from the SVD X = U S V^T of the centred
   data X [N][d]: W = U diag(sqrt(N) / (s + eps)) U^T over the top min(N, d)
   directions. With lambda = s^2 / N, the eigenvalues of X^T X / N, a direction's
   weight is 1 / (sqrt(lambda) + eps / sqrt(N)). Directions the data do not
   span (lambda below 1e-12 of the largest: rounding noise) are left out. */
static double cnn__idg_zca_weight(double lambda, double lambda_max, double eps, double N) {
    return lambda > lambda_max * 1e-12 && lambda > 0 ? 1.0 / (sqrt(lambda) + eps / sqrt(N)) : 0.0;
}

/* pc [d][d] = sum_j r_j r_j^T over the rows r_j of rows [m][d] (a d x d product
   of dot products; rows is overwritten with its transpose in t [d][m]). */
static void cnn__idg_outer_sum(const double *rows, double *t, int m, int d, float *pc) {
    for (int j = 0; j < m; j++)
        for (int a = 0; a < d; a++) t[(size_t)a * m + j] = rows[(size_t)j * d + a];
    CNN__IDG_OMP(omp parallel for schedule(dynamic, 8) if (d >= 256))
    for (int a = 0; a < d; a++) {
        const double *ra = t + (size_t)a * m;
        for (int b = a; b < d; b++) {
            const double *rb = t + (size_t)b * m;
            double s = 0;
            for (int j = 0; j < m; j++) s += ra[j] * rb[j];
            pc[(size_t)a * d + b] = pc[(size_t)b * d + a] = (float)s;
        }
    }
}

/* The ZCA matrix when N >= d, from sigma = X^T X / N [d][d] (upper triangle;
   used as scratch): its eigenvectors u_j with their weights. */
static int cnn__idg_zca_matrix(double *sigma, int d, double eps, double N, float *pc, const char *who) {
    double *z = (double *)CNN_MALLOC((size_t)d * (size_t)d * sizeof(double));
    double *ev = (double *)CNN_MALLOC((size_t)d * sizeof(double)),
           *e = (double *)CNN_MALLOC((size_t)d * sizeof(double));
    double lmax = 0;
    int rc = CNN_OK;
    if (!z || !ev || !e) {
        rc = cnn_set_error(CNN_ERR_MEMORY, "%s: out of memory for the ZCA matrix (%d x %d)", who, d, d);
        goto done;
    }
    for (int i = 0; i < d; i++) /* mirror the upper triangle */
        for (int j = 0; j < i; j++) sigma[(size_t)i * d + j] = sigma[(size_t)j * d + i];
    if (cnn__idg_eigen(sigma, z, ev, e, d) != 0) {
        rc = cnn_set_error(CNN_ERR_ARG,
                           "%s: the eigendecomposition for ZCA did not converge (non-finite data?)", who);
        goto done;
    }
    for (int j = 0; j < d; j++) lmax = ev[j] > lmax ? ev[j] : lmax;
    for (int j = 0; j < d; j++) { /* eigenvector j (row j of z) times the square root of its weight */
        const double s = sqrt(cnn__idg_zca_weight(ev[j], lmax, eps, N));
        for (int k = 0; k < d; k++) z[(size_t)j * d + k] *= s;
    }
    cnn__idg_outer_sum(z, sigma, d, d, pc);
done:
    CNN_FREE(z);
    CNN_FREE(ev);
    CNN_FREE(e);
    return rc;
}

/* The ZCA matrix when N < d, from the centred data x [N][d] itself (overwritten):
   the eigenvectors v_j of the Gram matrix x x^T / N [N][N] give the directions
   u_j = x^T v_j / sqrt(N lambda_j) with the same lambda_j, so the work is
   O(N^2 d + N^3 + N d^2) instead of O(d^3). */
static int cnn__idg_zca_gram(double *x, int N, int d, double eps, float *pc, const char *who) {
    double *g = (double *)CNN_MALLOC((size_t)N * (size_t)N * sizeof(double));
    double *z = (double *)CNN_MALLOC((size_t)N * (size_t)N * sizeof(double));
    double *ev = (double *)CNN_MALLOC((size_t)N * sizeof(double));
    double *e = (double *)CNN_MALLOC((size_t)N * sizeof(double));
    double *u = (double *)CNN_MALLOC((size_t)N * (size_t)d * sizeof(double));
    double lmax = 0;
    int rc = CNN_OK;
    if (!g || !z || !ev || !e || !u) {
        rc = cnn_set_error(CNN_ERR_MEMORY, "%s: out of memory for the ZCA matrix (%d x %d)", who, d, d);
        goto done;
    }
    CNN__IDG_OMP(omp parallel for schedule(dynamic, 4) if (N >= 64))
    for (int i = 0; i < N; i++)
        for (int j = 0; j <= i; j++) {
            const double *xi = x + (size_t)i * d, *xj = x + (size_t)j * d;
            double s = 0;
            for (int k = 0; k < d; k++) s += xi[k] * xj[k];
            g[(size_t)i * N + j] = g[(size_t)j * N + i] = s / N;
        }
    if (cnn__idg_eigen(g, z, ev, e, N) != 0) {
        rc = cnn_set_error(CNN_ERR_ARG,
                           "%s: the eigendecomposition for ZCA did not converge (non-finite data?)", who);
        goto done;
    }
    for (int j = 0; j < N; j++) lmax = ev[j] > lmax ? ev[j] : lmax;
    for (int j = 0; j < N; j++) { /* u_j = x^T v_j / sqrt(N lambda_j), times the square root of its weight */
        const double w = cnn__idg_zca_weight(ev[j], lmax, eps, N);
        const double s = w > 0 ? sqrt(w / (N * ev[j])) : 0;
        double *uj = u + (size_t)j * d;
        for (int k = 0; k < d; k++) uj[k] = 0;
        for (int i = 0; i < N && s != 0; i++) {
            const double vi = z[(size_t)j * N + i] * s;
            const double *xi = x + (size_t)i * d;
            for (int k = 0; k < d; k++) uj[k] += vi * xi[k];
        }
    }
    cnn__idg_outer_sum(u, x, N, d, pc); /* x is free now: it holds the transpose */
done:
    CNN_FREE(g);
    CNN_FREE(z);
    CNN_FREE(ev);
    CNN_FREE(e);
    CNN_FREE(u);
    return rc;
}

/* Image i of fit round r as fit sees it: rescaled, then (augment) transformed. */
static void cnn__idg_fit_image(const cnn_datagen *g, const unsigned char *x8, const float *xf, int h, int w,
                               int c, int r, int i, int augment, uint64_t seed, cnn__idg_scratch *s,
                               float *tmp, float *img) {
    const size_t n = (size_t)h * (size_t)w * (size_t)c;
    const float scale = g->o.rescale != 0 ? g->o.rescale : 1.0f;
    float *dst = augment ? tmp : img;
    if (x8) for (size_t k = 0; k < n; k++) dst[k] = (float)x8[(size_t)i * n + k] * scale;
    else for (size_t k = 0; k < n; k++) dst[k] = xf[(size_t)i * n + k] * scale;
    if (augment) {
        cnn_transform t;
        cnn__idg_draw(g, h, w, cnn__idg_sample_key(seed ^ 0x464954ULL, (uint64_t)r, (uint64_t)i), &t);
        cnn__idg_transform(g, NULL, tmp, h, w, c, &t, s, img);
    }
}

enum { CNN__IDG_FIT_B = 32 }; /* images per rank-B update of fit's covariance */

/* fit's buffers. ZCA's covariance comes from all the centred images (gram:
   fewer images than values per image) or is summed B images at a time. */
typedef struct cnn__idg_fitbuf {
    double *sum, *ss;  /* [c]: per channel, sums of the values and of the squared deviations */
    float *img, *tmp;  /* [h][w][c]: the image fit sees, and the image before its transform */
    float *mean, *std; /* [c] */
    float *pc;         /* [per][per]: the ZCA matrix */
    double *sigma;     /* [per][per]: the covariance (not gram) */
    double *xt;        /* [per][B]: the centred images of the next rank-B update (not gram) */
    double *xall;      /* [N][per]: the centred images (gram) */
} cnn__idg_fitbuf;

static void cnn__idg_fitbuf_free(cnn__idg_fitbuf *b) {
    CNN_FREE(b->sum);
    CNN_FREE(b->ss);
    CNN_FREE(b->img);
    CNN_FREE(b->tmp);
    CNN_FREE(b->mean);
    CNN_FREE(b->std);
    CNN_FREE(b->sigma);
    CNN_FREE(b->xt);
    CNN_FREE(b->xall);
    CNN_FREE(b->pc);
}

/* fit's buffers for images of per values, c channels, N of them in all (b
   zeroed on entry; whatever was allocated stays in b when this fails). */
static int cnn__idg_fit_alloc(cnn__idg_fitbuf *b, int c, size_t per, double N, int zca, int gram,
                              const char *who) {
    b->sum = (double *)CNN_MALLOC((size_t)c * sizeof(double));
    b->ss = (double *)CNN_MALLOC((size_t)c * sizeof(double));
    b->img = (float *)CNN_MALLOC(per * sizeof(float));
    b->tmp = (float *)CNN_MALLOC(per * sizeof(float));
    b->mean = (float *)CNN_MALLOC((size_t)c * sizeof(float));
    b->std = (float *)CNN_MALLOC((size_t)c * sizeof(float));
    if (!b->sum || !b->ss || !b->img || !b->tmp || !b->mean || !b->std)
        return cnn_set_error(CNN_ERR_MEMORY, "%s: out of memory", who);
    if (zca) {
        b->pc = (float *)CNN_MALLOC(per * per * sizeof(float));
        if (gram) { /* the centred images [N][per] */
            b->xall = (double *)CNN_MALLOC((size_t)N * per * sizeof(double));
        } else {    /* sigma [per][per], summed B images at a time from xt [per][B] */
            b->sigma = (double *)CNN_MALLOC(per * per * sizeof(double));
            b->xt = (double *)CNN_MALLOC(per * CNN__IDG_FIT_B * sizeof(double));
            if (b->sigma) memset(b->sigma, 0, per * per * sizeof(double));
        }
        if (!b->pc || (gram ? !b->xall : !b->sigma || !b->xt))
            return cnn_set_error(CNN_ERR_MEMORY, "%s: out of memory for the ZCA matrix (%zu x %zu)", who, per,
                                 per);
    }
    return CNN_OK;
}

/* fit's arguments, all checked before anything is allocated. */
static int cnn__idg_fit_check(const cnn_datagen *g, int n, int h, int w, int c, int rounds,
                              const cnn_datagen_fit_opts *fo, const char *who) {
    const size_t per = (size_t)h * (size_t)w * (size_t)c;
    int rc;
    if (fo && fo->rounds < 0)
        return cnn_set_error(CNN_ERR_ARG, "%s: rounds %d must be >= 1 (0 = 1)", who, fo->rounds);
    if (n <= 0) return cnn_set_error(CNN_ERR_ARG, "%s: no images to fit on (n = %d)", who, n);
    if ((rc = cnn__idg_check_shape(h, w, c, who))) return rc;
    if ((double)n * rounds > (double)INT_MAX)
        return cnn_set_error(CNN_ERR_ARG, "%s: %d rounds of %d images are too many", who, rounds, n);
    if (g->o.zca_whitening && per > 32768)
        return cnn_set_error(CNN_ERR_ARG,
                             "%s: ZCA of %dx%dx%d images needs a %zu x %zu matrix; at most 32768 "
                             "values per image are supported",
                             who, h, w, c, per, per);
    return CNN_OK;
}

/* The ZCA matrix b->pc from pass 2's centred data: from the images themselves
   (gram), or from sigma, the sum of their outer products, divided by N here. */
static int cnn__idg_fit_zca(cnn__idg_fitbuf *b, size_t per, double N, int gram, float eps, const char *who) {
    if (gram) return cnn__idg_zca_gram(b->xall, (int)N, (int)per, eps, b->pc, who);
    for (size_t i = 0; i < per; i++)
        for (size_t j = i; j < per; j++) b->sigma[i * per + j] /= N;
    return cnn__idg_zca_matrix(b->sigma, (int)per, eps, N, b->pc, who);
}

static int cnn__idg_fit(cnn_datagen *g, const unsigned char *x8, const float *xf, int n, int h, int w, int c,
                        const cnn_datagen_fit_opts *fo, const char *who) {
    enum { B = CNN__IDG_FIT_B };
    const cnn_datagen_opts *o = &g->o;
    const int augment = fo ? fo->augment : 0, rounds = augment && fo->rounds ? fo->rounds : 1;
    const uint64_t seed = fo ? fo->seed : 0;
    const size_t per = (size_t)h * (size_t)w * (size_t)c;
    const int zca = o->zca_whitening;
    const double N = (double)rounds * n; /* images fit sees */
    const int gram = zca && N < (double)per; /* fewer images than values: ZCA from the data itself */
    double count;
    cnn__idg_fitbuf b;
    cnn__idg_scratch s;
    int rc = CNN_OK, nb = 0;
    memset(&s, 0, sizeof s);
    memset(&b, 0, sizeof b);
    /* the checks include ZCA's size limit, which may come before the early return
       below: with ZCA on there is always something to compute */
    if ((rc = cnn__idg_fit_check(g, n, h, w, c, rounds, fo, who))) return rc;
    if (!o->featurewise_center && !o->featurewise_std_normalization && !zca)
        return CNN_OK; /* nothing to compute */
    if ((rc = cnn__idg_fit_alloc(&b, c, per, N, zca, gram, who))) goto done;
    if (augment && (rc = cnn__idg_scratch_init(&s, h, w, c, 0, 0))) goto done;
    memset(b.sum, 0, (size_t)c * sizeof(double));
    memset(b.ss, 0, (size_t)c * sizeof(double));
    count = (double)rounds * n * h * w;
    for (int r = 0; r < rounds; r++) /* pass 1: the mean */
        for (int i = 0; i < n; i++) {
            cnn__idg_fit_image(g, x8, xf, h, w, c, r, i, augment, seed, &s, b.tmp, b.img);
            for (size_t p = 0; p < per; p += (size_t)c)
                for (int k = 0; k < c; k++) b.sum[k] += b.img[p + (size_t)k];
        }
    for (int k = 0; k < c; k++) b.mean[k] = (float)(b.sum[k] / count);
    for (int r = 0; r < rounds; r++) /* pass 2: the std and the covariance of the centred data */
        for (int i = 0; i < n; i++) {
            cnn__idg_fit_image(g, x8, xf, h, w, c, r, i, augment, seed, &s, b.tmp, b.img);
            for (size_t p = 0; p < per; p += (size_t)c)
                for (int k = 0; k < c; k++) {
                    double v = (double)b.img[p + (size_t)k] - b.mean[k];
                    b.ss[k] += v * v;
                    const double centred = (double)(b.img[p + (size_t)k] - b.mean[k]);
                    if (gram) b.xall[((size_t)r * n + (size_t)i) * per + p + (size_t)k] = centred;
                    else if (zca) b.xt[(p + (size_t)k) * B + (size_t)nb] = centred;
                }
            if (zca && !gram && ++nb == B) {
                cnn__idg_syrk(b.sigma, b.xt, (int)per, B, nb);
                nb = 0;
            }
        }
    if (zca && !gram && nb) cnn__idg_syrk(b.sigma, b.xt, (int)per, B, nb);
    for (int k = 0; k < c; k++) b.std[k] = (float)sqrt(b.ss[k] / count);
    if (zca) {
        if ((rc = cnn__idg_fit_zca(&b, per, N, gram, o->zca_epsilon, who))) goto done;
        CNN_FREE(g->pc);
        g->pc = b.pc;
        g->d = (int)per;
        b.pc = NULL;
    }
    CNN_FREE(g->mean);
    CNN_FREE(g->std);
    g->mean = b.mean;
    g->std = b.std;
    g->c = c;
    b.mean = b.std = NULL;
done:
    cnn__idg_scratch_free(&s);
    cnn__idg_fitbuf_free(&b);
    return rc;
}

CNN__AUG_IMPL int cnn_datagen_fit_opt(cnn_datagen *g, const cnn_dataset *x, const cnn_datagen_fit_opts *o) {
    if (!g || !x)
        return cnn_set_error(CNN_ERR_ARG, "cnn_datagen_fit: the %s is NULL", g ? "dataset" : "generator");
    if (!x->images) return cnn_set_error(CNN_ERR_ARG, "cnn_datagen_fit: the dataset has no images");
    return cnn__idg_fit(g, x->images, NULL, x->n, x->h, x->w, x->c, o, "cnn_datagen_fit");
}

CNN__AUG_IMPL int cnn_datagen_fit_float_opt(cnn_datagen *g, const float *x, int n, int h, int w, int c,
                                            const cnn_datagen_fit_opts *o) {
    if (!g || !x)
        return cnn_set_error(CNN_ERR_ARG, "cnn_datagen_fit_float: the %s is NULL",
                             g ? "image array" : "generator");
    return cnn__idg_fit(g, NULL, x, n, h, w, c, o, "cnn_datagen_fit_float");
}

/* ======================================================================== */
/* ImageDataGenerator: flows (batches made ahead on worker threads)         */
/* ======================================================================== */

/* A flow is an endless stream of batches, numbered seq = 0, 1, 2, ... from the
   pass it was (re)started at: batch seq is batch (seq % per_pass) of pass
   start_pass + seq / per_pass. A batch is a pure function of (seed, pass, batch),
   so workers may make them in any order; they fill a ring of max_queue_size
   slots, at most that many batches ahead of the consumer, and run on across the
   end of a pass (the next pass is what fit asks for next). A reset to anything
   else discards what was made ahead and restarts the stream. */

enum { CNN__IDG_FREE = 0, CNN__IDG_BUSY, CNN__IDG_READY };
enum { CNN__IDG_Y_NONE = 0, CNN__IDG_Y_INDEX, CNN__IDG_Y_ONEHOT, CNN__IDG_Y_GIVEN, CNN__IDG_Y_INPUT };
enum { CNN__IDG_PNG = 0, CNN__IDG_JPEG, CNN__IDG_BMP };

typedef struct cnn__idg_slot {
    float *x, *y;      /* [batch][h][w][c], [batch][y_width] */
    long long seq;     /* which batch it holds when READY */
    int count, state;
    int err;           /* the batch failed: the error and its message */
    char msg[512];
} cnn__idg_slot;

typedef struct cnn__idg_worker_arg {
    cnn_flow *f;
    cnn__idg_scratch *s;
} cnn__idg_worker_arg;

struct cnn_flow {
    cnn_batch_source src;      /* what cnn_flow_source hands out */
    cnn_datagen g;             /* a private copy of the generator */
    int n, h, w, c;            /* samples per pass and their shape */
    const unsigned char *x8;   /* uint8 images of the subset, or NULL */
    const float *xf;           /* float images of the subset, or NULL */
    cnn_dataset *own;          /* decoded images of a directory flow */
    char **files;              /* [n] paths of a directory flow */
    int lazy;                  /* directory flows decoding per batch ... */
    cnn_interpolation resize;  /* ... resize the files this way */
    int keep_aspect;           /* ... after cropping to the target's aspect ratio */
    int *labels;               /* [n], or NULL */
    const float *y;            /* explicit targets of the subset */
    int y_mode, y_width, num_classes;
    char **class_names;        /* [num_classes], or NULL */
    int bs, per_pass, shuffle, random, pass_free;
    uint64_t seed;
    char *save_dir, *save_prefix;
    int save_fmt;
    float *rec_mean, *rec_std; /* featurewise statistics as the model records them */
    int Q;                     /* slots */
    cnn__idg_slot *slots;
    int start_pass, cur_pass, at_end, held, held_off, started;
    long long cons_seq, prod_seq;
    int nworkers, nthreads, busy, quit;
    unsigned gen_id;
    cnn__idg_scratch *scratch; /* [nworkers + 1]: one per worker, the last for inline work */
#ifdef CNN__IDG_THREADS
    pthread_t *threads;
    cnn__idg_worker_arg *args;
    pthread_mutex_t mu;
    pthread_cond_t work_cv, done_cv;
    int sync_made;
#endif
};

static const char *const cnn__idg_fmt_ext[3] = {"png", "jpg", "bmp"};

/* Keras' array_to_img(scale=True) then a file: min..max stretched to 0..255. */
static int cnn__idg_save(const cnn_flow *f, const float *x, int index, uint64_t key, unsigned char *buf) {
    const size_t n = (size_t)f->h * (size_t)f->w * (size_t)f->c;
    char path[4096];
    float mn, mx, shift;
    int ok, len;
    cnn__idg_minmax(x, n, &mn, &mx);
    shift = mn < 0 ? -mn : 0;
    mx += shift;
    for (size_t i = 0; i < n; i++) {
        float v = x[i] + shift;
        if (mx != 0) v /= mx;
        v *= 255;
        buf[i] = (unsigned char)(v < 0 ? 0 : (v > 255 ? 255 : v));
    }
    len = snprintf(path, sizeof path, "%s/%s_%d_%d.%s", f->save_dir, f->save_prefix, index,
                   (int)(cnn__idg_mix(key ^ 0x5341564555ULL) % 10000000u), cnn__idg_fmt_ext[f->save_fmt]);
    if (len < 0 || (size_t)len >= sizeof path)
        return cnn_set_error(CNN_ERR_ARG, "save_to_dir: the file name under '%s' is too long", f->save_dir);
    errno = 0;
    if (f->save_fmt == CNN__IDG_JPEG) ok = stbi_write_jpg(path, f->w, f->h, f->c, buf, 75);
    else if (f->save_fmt == CNN__IDG_BMP) ok = stbi_write_bmp(path, f->w, f->h, f->c, buf);
    else return cnn__png_write("save_to_dir", path, f->w, f->h, f->c, buf, (size_t)f->w * f->c);
    if (!ok)
        return cnn_set_error(CNN_ERR_IO, "save_to_dir: cannot write '%s': %s", path,
                             errno ? strerror(errno) : "out of memory or disk full");
    return CNN_OK;
}

static const char cnn__idg_dir_who[] = "cnn_datagen_flow_from_directory";

/* Decode, convert and resize file `path` into dst [h][w][c] as Keras' load_img. */
static int cnn__idg_load_image(const cnn_flow *f, const char *path, unsigned char *dst) {
    int rc = cnn__aug_load_resized(path, f->h, f->w, f->c, f->resize, f->keep_aspect, dst);
    if (rc == CNN_ERR_FORMAT)
        return cnn_set_error(CNN_ERR_FORMAT, "%s: cannot decode image '%s' (%s)", cnn__idg_dir_who, path,
                             cnn__aug_why());
    if (rc)
        return cnn_set_error(CNN_ERR_MEMORY, "%s: out of memory decoding or resizing '%s'", cnn__idg_dir_who,
                             path);
    return CNN_OK;
}

/* Make batch b of pass `pass` into slot (on any thread). */
static int cnn__idg_fill(cnn_flow *f, cnn__idg_scratch *s, int pass, int b, cnn__idg_slot *slot) {
    const int first = b * f->bs, count = f->n - first < f->bs ? f->n - first : f->bs;
    const size_t per = (size_t)f->h * (size_t)f->w * (size_t)f->c;
    const int key_pass = f->pass_free ? 0 : pass;
    const uint64_t order = cnn__idg_order_key(f->seed, key_pass);
    int rc = CNN_OK, next = -1; /* the next image's index, found when it was fetched ahead */
    for (int i = 0; i < count && !rc; i++) {
        const int pos = first + i, j = next >= 0 ? next : f->shuffle ? cnn__idg_permute(pos, f->n, order) : pos;
        const uint64_t key = cnn__idg_sample_key(f->seed, (uint64_t)key_pass, (uint64_t)pos);
        const unsigned char *img8 = NULL;
        const float *imgf = NULL;
        float *x = slot->x + (size_t)i * per, *y = slot->y + (size_t)i * (size_t)f->y_width;
        cnn_transform t;
        if (f->x8) img8 = f->x8 + (size_t)j * per;
        else if (f->xf) imgf = f->xf + (size_t)j * per;
        else {
            if ((rc = cnn__idg_load_image(f, f->files[j], s->img8))) break;
            img8 = s->img8;
        }
        if (i + 1 < count && (f->x8 || f->xf)) { /* the next image, fetched while this one is made */
            next = f->shuffle ? cnn__idg_permute(pos + 1, f->n, order) : pos + 1;
            const char *p = f->x8 ? (const char *)(f->x8 + (size_t)next * per)
                                  : (const char *)(f->xf + (size_t)next * per);
            const size_t all = per * (f->x8 ? 1 : sizeof(float)), bytes = all < 65536 ? all : 65536; /* its start */
            for (size_t q = 0; q < bytes; q += 64) CNN__PREFETCH_L2(p + q);
        }
        if (f->random) cnn__idg_draw(&f->g, f->h, f->w, key, &t);
        else memset(&t, 0, sizeof t);
        cnn__idg_transform(&f->g, img8, imgf, f->h, f->w, f->c, &t, s, x);
        if ((rc = cnn__idg_standardize_one(&f->g, x, f->h, f->w, f->c, s->zca, j))) break;
        switch (f->y_mode) {
        case CNN__IDG_Y_INDEX: y[0] = (float)f->labels[j]; break;
        case CNN__IDG_Y_ONEHOT:
            memset(y, 0, (size_t)f->y_width * sizeof(float));
            y[f->labels[j]] = 1.0f;
            break;
        case CNN__IDG_Y_GIVEN:
            memcpy(y, f->y + (size_t)j * (size_t)f->y_width, (size_t)f->y_width * sizeof(float));
            break;
        case CNN__IDG_Y_INPUT: memcpy(y, x, per * sizeof(float)); break;
        default: break;
        }
    }
    slot->err = rc;
    slot->count = rc ? 0 : count;
    if (rc) snprintf(slot->msg, sizeof slot->msg, "%s", cnn_last_error());
    return rc;
}

/* save_to_dir: the images of batch b of pass `pass`, as handed out (consumer side). */
static void cnn__idg_save_batch(cnn_flow *f, int pass, int b, cnn__idg_slot *slot) {
    const size_t per = (size_t)f->h * (size_t)f->w * (size_t)f->c;
    const int key_pass = f->pass_free ? 0 : pass;
    const uint64_t order = cnn__idg_order_key(f->seed, key_pass);
    for (int i = 0; i < slot->count && !slot->err; i++) {
        const int pos = b * f->bs + i, j = f->shuffle ? cnn__idg_permute(pos, f->n, order) : pos;
        const uint64_t key = cnn__idg_sample_key(f->seed, (uint64_t)key_pass, (uint64_t)pos);
        if ((slot->err = cnn__idg_save(f, slot->x + (size_t)i * per, j, key, f->scratch[f->nworkers].img8)))
            snprintf(slot->msg, sizeof slot->msg, "%s", cnn_last_error());
    }
}

#ifdef CNN__IDG_THREADS
static void *cnn__idg_worker(void *arg) {
    cnn__idg_worker_arg *wa = (cnn__idg_worker_arg *)arg;
    cnn_flow *f = wa->f;
    pthread_mutex_lock(&f->mu);
    for (;;) {
        long long seq;
        unsigned gen;
        int pass, b;
        cnn__idg_slot *slot;
        while (!f->quit && f->prod_seq >= f->cons_seq + f->Q) pthread_cond_wait(&f->work_cv, &f->mu);
        if (f->quit) break;
        seq = f->prod_seq++;
        slot = &f->slots[seq % f->Q];
        slot->state = CNN__IDG_BUSY;
        f->busy++;
        gen = f->gen_id;
        pass = f->start_pass + (int)(seq / f->per_pass);
        b = (int)(seq % f->per_pass);
        pthread_mutex_unlock(&f->mu);
        cnn__idg_fill(f, wa->s, pass, b, slot);
        pthread_mutex_lock(&f->mu);
        f->busy--;
        if (gen == f->gen_id) {
            slot->seq = seq;
            slot->state = CNN__IDG_READY;
        } else {
            slot->state = CNN__IDG_FREE; /* made for a stream that was restarted */
        }
        pthread_cond_broadcast(&f->done_cv);
    }
    pthread_mutex_unlock(&f->mu);
    return NULL;
}
#endif

static void cnn__idg_lock(cnn_flow *f) {
#ifdef CNN__IDG_THREADS
    if (f->nthreads) pthread_mutex_lock(&f->mu);
#else
    (void)f;
#endif
}

static void cnn__idg_unlock(cnn_flow *f, int wake_workers) {
#ifdef CNN__IDG_THREADS
    if (f->nthreads) {
        if (wake_workers) pthread_cond_broadcast(&f->work_cv);
        pthread_mutex_unlock(&f->mu);
    }
#else
    (void)f;
    (void)wake_workers;
#endif
}

/* Start the workers (on first use). If no thread starts, batches are made inline. */
static void cnn__idg_start(cnn_flow *f) {
    f->started = 1;
#ifdef CNN__IDG_THREADS
    if (f->sync_made)
        for (int i = 0; i < f->nworkers; i++) {
            f->args[i].f = f;
            f->args[i].s = &f->scratch[i];
            if (pthread_create(&f->threads[i], NULL, cnn__idg_worker, &f->args[i]) != 0) break;
            f->nthreads++;
        }
#endif
}

/* Hand back the batch the consumer held. */
static void cnn__idg_release(cnn_flow *f) {
    cnn__idg_slot *slot = &f->slots[f->cons_seq % f->Q];
    cnn__idg_lock(f);
    slot->state = CNN__IDG_FREE;
    f->cons_seq++;
    f->held = 0;
    cnn__idg_unlock(f, 1);
}

/* Restart the stream at pass `pass`, discarding what was made ahead. */
static void cnn__idg_restart(cnn_flow *f, int pass) {
    cnn__idg_lock(f);
    f->gen_id++;
#ifdef CNN__IDG_THREADS
    while (f->nthreads && f->busy) pthread_cond_wait(&f->done_cv, &f->mu);
#endif
    for (int i = 0; i < f->Q; i++) f->slots[i].state = CNN__IDG_FREE;
    f->prod_seq = f->cons_seq = 0;
    f->start_pass = f->cur_pass = pass;
    f->held = f->at_end = 0;
    cnn__idg_unlock(f, 1);
}

/* The next batch of the current pass into *out (held until the next fetch):
   its count, 0 at the end of the pass, or an error. */
static int cnn__idg_fetch(cnn_flow *f, cnn__idg_slot **out) {
    cnn__idg_slot *slot;
    long long c;
    if (f->held) cnn__idg_release(f);
    c = f->cons_seq;
    if (f->start_pass + c / f->per_pass > f->cur_pass) {
        f->at_end = 1;
        return 0;
    }
    if (!f->started) cnn__idg_start(f);
    slot = &f->slots[c % f->Q];
#ifdef CNN__IDG_THREADS
    if (f->nthreads) {
        pthread_mutex_lock(&f->mu);
        while (!(slot->state == CNN__IDG_READY && slot->seq == c)) pthread_cond_wait(&f->done_cv, &f->mu);
        pthread_mutex_unlock(&f->mu);
    } else
#endif
    if (!(slot->state == CNN__IDG_READY && slot->seq == c)) {
        cnn__idg_fill(f, &f->scratch[f->nworkers], f->start_pass + (int)(c / f->per_pass),
                      (int)(c % f->per_pass), slot);
        slot->seq = c;
        slot->state = CNN__IDG_READY;
    }
    f->held = 1;
    f->held_off = 0;
    *out = slot;
    if (!slot->err && f->save_dir) /* only batches handed out, not those made ahead */
        cnn__idg_save_batch(f, f->start_pass + (int)(c / f->per_pass), (int)(c % f->per_pass), slot);
    if (slot->err) {
        f->held_off = slot->count;
        return cnn_set_error(slot->err, "%s", slot->msg);
    }
    return slot->count;
}

CNN__AUG_IMPL int cnn_flow_reset(cnn_flow *f, int pass) {
    long long begin, boundary;
    if (!f) return cnn_set_error(CNN_ERR_ARG, "cnn_flow_reset: the flow is NULL");
    if (pass < 0) return cnn_set_error(CNN_ERR_ARG, "cnn_flow_reset: pass %d is negative", pass);
    if (f->held && f->held_off >= f->slots[f->cons_seq % f->Q].count) cnn__idg_release(f);
    begin = (long long)(f->cur_pass - f->start_pass) * f->per_pass;
    boundary = begin + f->per_pass;
    if (!f->held && f->cons_seq == begin && (pass == f->cur_pass || f->pass_free)) { /* nothing taken yet */
        f->at_end = 0;
        return CNN_OK;
    }
    /* on to the next */
    if (!f->held && f->cons_seq == boundary && (pass == f->cur_pass + 1 || f->pass_free)) {
        f->cur_pass++;
        f->at_end = 0;
        return CNN_OK;
    }
    cnn__idg_restart(f, pass);
    return CNN_OK;
}

CNN__AUG_IMPL int cnn_flow_next(cnn_flow *f, const float **x, const float **y) {
    cnn__idg_slot *slot = NULL;
    int got;
    if (x) *x = NULL;
    if (y) *y = NULL;
    if (!f) return cnn_set_error(CNN_ERR_ARG, "cnn_flow_next: the flow is NULL");
    if (f->at_end && f->cur_pass < INT_MAX) cnn_flow_reset(f, f->cur_pass + 1);
    got = cnn__idg_fetch(f, &slot);
    if (got > 0) {
        f->held_off = got;
        if (x) *x = slot->x;
        if (y) *y = f->y_width ? slot->y : NULL;
    }
    return got;
}

static int cnn__idg_src_reset(void *ctx, int epoch) { return cnn_flow_reset((cnn_flow *)ctx, epoch); }

/* The batch source's next: copies up to max_count samples of the current batch. */
static int cnn__idg_src_next(void *ctx, int max_count, float *x, float *y) {
    cnn_flow *f = (cnn_flow *)ctx;
    const size_t per = (size_t)f->h * (size_t)f->w * (size_t)f->c;
    cnn__idg_slot *slot = f->held ? &f->slots[f->cons_seq % f->Q] : NULL;
    int k;
    if (max_count <= 0 || !x)
        return cnn_set_error(CNN_ERR_ARG, "cnn_flow: next needs max_count > 0 and a buffer");
    if (!slot || f->held_off >= slot->count) {
        int got = cnn__idg_fetch(f, &slot);
        if (got <= 0) return got;
    }
    k = slot->count - f->held_off < max_count ? slot->count - f->held_off : max_count;
    memcpy(x, slot->x + (size_t)f->held_off * per, (size_t)k * per * sizeof(float));
    if (f->y_width && y)
        memcpy(y, slot->y + (size_t)f->held_off * (size_t)f->y_width,
               (size_t)k * (size_t)f->y_width * sizeof(float));
    f->held_off += k;
    return k;
}

CNN__AUG_IMPL void cnn_flow_free(cnn_flow *f) {
    if (!f) return;
#ifdef CNN__IDG_THREADS
    if (f->nthreads) {
        pthread_mutex_lock(&f->mu);
        f->quit = 1;
        pthread_cond_broadcast(&f->work_cv);
        pthread_mutex_unlock(&f->mu);
        for (int i = 0; i < f->nthreads; i++) pthread_join(f->threads[i], NULL);
    }
    if (f->sync_made) {
        pthread_mutex_destroy(&f->mu);
        pthread_cond_destroy(&f->work_cv);
        pthread_cond_destroy(&f->done_cv);
    }
    CNN_FREE(f->threads);
    CNN_FREE(f->args);
#endif
    if (f->slots)
        for (int i = 0; i < f->Q; i++) {
            CNN_FREE(f->slots[i].x);
            CNN_FREE(f->slots[i].y);
        }
    CNN_FREE(f->slots);
    if (f->scratch)
        for (int i = 0; i <= f->nworkers; i++) cnn__idg_scratch_free(&f->scratch[i]);
    CNN_FREE(f->scratch);
    CNN_FREE(f->g.mean);
    CNN_FREE(f->g.std);
    CNN_FREE(f->g.pc);
    cnn_dataset_free(f->own);
    if (f->files)
        for (int i = 0; i < f->n; i++) CNN_FREE(f->files[i]);
    CNN_FREE(f->files);
    CNN_FREE(f->labels);
    if (f->class_names)
        for (int k = 0; k < f->num_classes; k++) CNN_FREE(f->class_names[k]);
    CNN_FREE(f->class_names);
    CNN_FREE(f->save_dir);
    CNN_FREE(f->save_prefix);
    CNN_FREE(f->rec_mean);
    CNN_FREE(f->rec_std);
    CNN_FREE(f);
}

/* The options every flow shares. */
typedef struct cnn__idg_common {
    int batch_size, no_shuffle;
    uint64_t seed;
    const char *save_to_dir, *save_prefix, *save_format;
    int workers, max_queue_size;
} cnn__idg_common;

/* A new flow over n samples of h x w x c (data, targets and names set by the
   caller afterwards, before cnn__idg_flow_finish). */
static cnn_flow *cnn__idg_flow_new(const cnn_datagen *g, int n, int h, int w, int c, const cnn__idg_common *o,
                                   const char *who) {
    cnn_flow *f;
    const char *fmt = o->save_format ? o->save_format : "png";
    int save_fmt;
    struct stat st;
    if (!g) {
        cnn_set_error(CNN_ERR_ARG, "%s: the generator is NULL", who);
        return NULL;
    }
    if (cnn__idg_check_shape(h, w, c, who) || cnn__idg_check_ready(g, h, w, c, who)) return NULL;
    if (n <= 0) {
        cnn_set_error(CNN_ERR_ARG, "%s: no samples to flow (n = %d)", who, n);
        return NULL;
    }
    if (o->batch_size < 0) {
        cnn_set_error(CNN_ERR_ARG, "%s: batch_size %d must be > 0 (0 = 32)", who, o->batch_size);
        return NULL;
    }
    if (o->workers < -1 || o->workers > 256 || o->max_queue_size < 0) {
        cnn_set_error(CNN_ERR_ARG, "%s: workers %d must be in -1..256 and max_queue_size %d >= 0", who,
                      o->workers, o->max_queue_size);
        return NULL;
    }
    if (!strcmp(fmt, "png")) save_fmt = CNN__IDG_PNG;
    else if (!strcmp(fmt, "jpeg") || !strcmp(fmt, "jpg")) save_fmt = CNN__IDG_JPEG;
    else if (!strcmp(fmt, "bmp")) save_fmt = CNN__IDG_BMP;
    else {
        cnn_set_error(CNN_ERR_ARG, "%s: unknown save_format '%s' (png, jpeg or bmp)", who, fmt);
        return NULL;
    }
    if (o->save_to_dir && (stat(o->save_to_dir, &st) != 0 || !S_ISDIR(st.st_mode))) {
        cnn_set_error(CNN_ERR_IO, "%s: save_to_dir '%s' is not a folder", who, o->save_to_dir);
        return NULL;
    }
    if (o->save_to_dir && c != 1 && c != 3 && c != 4) {
        cnn_set_error(CNN_ERR_ARG, "%s: save_to_dir writes images of 1, 3 or 4 channels, not %d", who, c);
        return NULL;
    }
    f = (cnn_flow *)CNN_MALLOC(sizeof *f);
    if (!f) {
        cnn_set_error(CNN_ERR_MEMORY, "%s: out of memory", who);
        return NULL;
    }
    memset(f, 0, sizeof *f);
    f->g = *g; /* statistics copied below */
    f->g.mean = f->g.std = f->g.pc = NULL;
    f->n = n;
    f->h = h;
    f->w = w;
    f->c = c;
    f->bs = o->batch_size ? o->batch_size : 32;
    f->per_pass = (int)(((long long)n + f->bs - 1) / f->bs);
    f->shuffle = !o->no_shuffle;
    f->random = cnn__idg_is_random(g);
    f->pass_free = !f->shuffle && !f->random;
    f->seed = o->seed;
    f->save_fmt = save_fmt;
    f->nworkers = o->workers == 0 ? 1 : (o->workers < 0 ? 0 : o->workers);
#ifndef CNN__IDG_THREADS
    f->nworkers = 0;
#endif
    f->Q = o->max_queue_size ? o->max_queue_size : 10;
    if (o->save_to_dir && (!(f->save_dir = cnn__aug_strdup(o->save_to_dir)) ||
                           !(f->save_prefix = cnn__aug_strdup(o->save_prefix ? o->save_prefix : "")))) {
        cnn_flow_free(f);
        return NULL;
    }
    if (g->mean) {
        f->g.mean = (float *)CNN_MALLOC((size_t)g->c * sizeof(float));
        f->g.std = (float *)CNN_MALLOC((size_t)g->c * sizeof(float));
        if (!f->g.mean || !f->g.std) goto oom;
        memcpy(f->g.mean, g->mean, (size_t)g->c * sizeof(float));
        if (g->std) memcpy(f->g.std, g->std, (size_t)g->c * sizeof(float));
        else for (int k = 0; k < g->c; k++) f->g.std[k] = 1.0f;
    }
    if (g->pc && g->o.zca_whitening) {
        f->g.pc = (float *)CNN_MALLOC((size_t)g->d * (size_t)g->d * sizeof(float));
        if (!f->g.pc) goto oom;
        memcpy(f->g.pc, g->pc, (size_t)g->d * (size_t)g->d * sizeof(float));
    } else {
        f->g.d = 0;
    }
    if ((g->o.featurewise_center || g->o.featurewise_std_normalization) && !g->o.zca_whitening) {
        f->rec_mean = (float *)CNN_MALLOC((size_t)c * sizeof(float));
        f->rec_std = (float *)CNN_MALLOC((size_t)c * sizeof(float));
        if (!f->rec_mean || !f->rec_std) goto oom;
        for (int k = 0; k < c; k++) {
            f->rec_mean[k] = g->o.featurewise_center ? g->mean[k] : 0.0f;
            f->rec_std[k] = g->o.featurewise_std_normalization ? g->std[k] + 1e-6f : 1.0f;
        }
    }
    return f;
oom:
    cnn_set_error(CNN_ERR_MEMORY, "%s: out of memory", who);
    cnn_flow_free(f);
    return NULL;
}

/* Buffers, threads and the batch-source view, once data and targets are set. */
static cnn_flow *cnn__idg_flow_finish(cnn_flow *f, const char *who) {
    const size_t per = (size_t)f->h * (size_t)f->w * (size_t)f->c,
                 batch_bytes = (size_t)f->bs * per * sizeof(float);
    const int bytes = f->lazy || f->save_dir;
    if (f->nworkers == 0) f->Q = 1;
    else if (f->Q > 2 && (size_t)f->Q * batch_bytes > ((size_t)64 << 20)) { /* default queue < 64 MB */
        size_t q = ((size_t)64 << 20) / (batch_bytes ? batch_bytes : 1);
        f->Q = q < 2 ? 2 : (int)q;
    }
    /* each array is zeroed as soon as it exists, so the cleanup after a failure
       frees only what was allocated */
    f->slots = (cnn__idg_slot *)CNN_MALLOC((size_t)f->Q * sizeof(cnn__idg_slot));
    if (f->slots) memset(f->slots, 0, (size_t)f->Q * sizeof(cnn__idg_slot));
    f->scratch = (cnn__idg_scratch *)CNN_MALLOC((size_t)(f->nworkers + 1) * sizeof(cnn__idg_scratch));
    if (f->scratch) memset(f->scratch, 0, (size_t)(f->nworkers + 1) * sizeof(cnn__idg_scratch));
    if (!f->slots || !f->scratch) goto oom;
    for (int i = 0; i < f->Q; i++) {
        f->slots[i].x = (float *)CNN_MALLOC(batch_bytes);
        f->slots[i].y = (float *)CNN_MALLOC((size_t)f->bs * (size_t)(f->y_width ? f->y_width : 1) *
                                            sizeof(float));
        if (!f->slots[i].x || !f->slots[i].y) goto oom;
    }
    for (int i = 0; i <= f->nworkers; i++)
        if (cnn__idg_scratch_init(&f->scratch[i], f->h, f->w, f->c, f->g.o.zca_whitening, bytes)) {
            cnn_set_error(CNN_ERR_MEMORY, "%s: out of memory for transform buffers", who);
            cnn_flow_free(f);
            return NULL;
        }
#ifdef CNN__IDG_THREADS
    if (f->nworkers) {
        f->threads = (pthread_t *)CNN_MALLOC((size_t)f->nworkers * sizeof(pthread_t));
        f->args = (cnn__idg_worker_arg *)CNN_MALLOC((size_t)f->nworkers * sizeof(cnn__idg_worker_arg));
        if (!f->threads || !f->args) goto oom;
        if (pthread_mutex_init(&f->mu, NULL) == 0) {
            if (pthread_cond_init(&f->work_cv, NULL) == 0) {
                if (pthread_cond_init(&f->done_cv, NULL) == 0) f->sync_made = 1;
                else pthread_cond_destroy(&f->work_cv);
            }
            if (!f->sync_made) pthread_mutex_destroy(&f->mu);
        }
    }
#endif
    f->src.ctx = f;
    f->src.samples = f->n;
    f->src.h = f->h;
    f->src.w = f->w;
    f->src.c = f->c;
    f->src.y_width = f->y_width;
    f->src.batch_size = f->bs; /* fit takes it when its own batch_size is 0 */
    f->src.reset = cnn__idg_src_reset;
    f->src.next = cnn__idg_src_next;
    f->src.rescale = f->g.o.rescale != 0 ? f->g.o.rescale : 1.0f;
    f->src.mean = f->rec_mean;
    f->src.std = f->rec_std;
    return f;
oom:
    cnn_set_error(CNN_ERR_MEMORY, "%s: out of memory for %d batches of %d images of %dx%dx%d", who, f->Q,
                  f->bs, f->h, f->w, f->c);
    cnn_flow_free(f);
    return NULL;
}

/* Keras' int(n * validation_split), reading the float as the decimal it was
   written as (0.7f * 10 is 6.99..., Python's 0.7 * 10 is 7.000...1). */
static int cnn__idg_split_at(float split, int n) {
    char buf[32];
    snprintf(buf, sizeof buf, "%.7g", (double)split);
    return (int)(strtod(buf, NULL) * n);
}

/* [*start, *start + *count) of n samples for a subset */
static int cnn__idg_subset(const cnn_datagen *g, cnn_subset subset, int n, int *start, int *count,
                           const char *who) {
    int split;
    *start = 0;
    *count = n;
    if (subset == CNN_SUBSET_ALL) return CNN_OK;
    if ((int)subset < 0 || (int)subset > (int)CNN_SUBSET_VALIDATION)
        return cnn_set_error(CNN_ERR_ARG, "%s: unknown subset %d (CNN_SUBSET_ALL, CNN_SUBSET_TRAINING or "
                             "CNN_SUBSET_VALIDATION)", who, (int)subset);
    if (g->o.validation_split <= 0)
        return cnn_set_error(CNN_ERR_ARG, "%s: a subset needs the generator's validation_split > 0", who);
    split = cnn__idg_split_at(g->o.validation_split, n);
    if (subset == CNN_SUBSET_VALIDATION) *count = split;
    else {
        *start = split;
        *count = n - split;
    }
    return CNN_OK;
}

static cnn__idg_common cnn__idg_common_of(const cnn_flow_opts *o) {
    cnn__idg_common c;
    c.batch_size = o->batch_size;
    c.no_shuffle = o->no_shuffle;
    c.seed = o->seed;
    c.save_to_dir = o->save_to_dir;
    c.save_prefix = o->save_prefix;
    c.save_format = o->save_format;
    c.workers = o->workers;
    c.max_queue_size = o->max_queue_size;
    return c;
}

/* Copy class names into the flow. */
static int cnn__idg_copy_names(cnn_flow *f, char *const *names, int count) {
    if (!names || count <= 0) return CNN_OK;
    f->class_names = (char **)CNN_MALLOC((size_t)count * sizeof(char *));
    if (!f->class_names) return cnn_set_error(CNN_ERR_MEMORY, "out of memory copying class names");
    memset(f->class_names, 0, (size_t)count * sizeof(char *));
    for (int k = 0; k < count; k++)
        if (!(f->class_names[k] = cnn__aug_strdup(names[k] ? names[k] : ""))) return CNN_ERR_MEMORY;
    return CNN_OK;
}

/* flow over uint8 (d) or float (xf) images */
static cnn_flow *cnn__idg_flow_arrays(const cnn_datagen *g, const cnn_dataset *d, const float *xf, int n,
                                      int h, int w, int c, const cnn_flow_opts *o, const char *who) {
    cnn_flow_opts none;
    cnn__idg_common co;
    cnn_flow *f;
    int start, count;
    const int *labels = d ? d->labels : NULL;
    if (!o) {
        memset(&none, 0, sizeof none);
        o = &none;
    }
    if (!g) {
        cnn_set_error(CNN_ERR_ARG, "%s: the generator is NULL", who);
        return NULL;
    }
    if (o->y && o->y_width <= 0) {
        cnn_set_error(CNN_ERR_ARG, "%s: explicit targets y need y_width > 0 (got %d)", who, o->y_width);
        return NULL;
    }
    if (!o->y && o->y_width) {
        cnn_set_error(CNN_ERR_ARG, "%s: y_width %d given without targets y", who, o->y_width);
        return NULL;
    }
    if (o->one_hot && (o->y || !labels)) {
        cnn_set_error(CNN_ERR_ARG, "%s: one_hot needs the dataset's labels (not explicit y)", who);
        return NULL;
    }
    if (n <= 0) {
        cnn_set_error(CNN_ERR_ARG, "%s: no samples to flow (n = %d)", who, n);
        return NULL;
    }
    if (cnn__idg_subset(g, o->subset, n, &start, &count, who)) return NULL;
    if (count <= 0) {
        cnn_set_error(CNN_ERR_ARG, "%s: the %s subset of %d images with validation_split %g is empty", who,
                      o->subset == CNN_SUBSET_VALIDATION ? "validation" : "training", n,
                      (double)g->o.validation_split);
        return NULL;
    }
    if (labels && !o->y && o->subset != CNN_SUBSET_ALL) { /* Keras refuses splits that lose classes */
        int split = o->subset == CNN_SUBSET_VALIDATION ? count : start, nc = 0, differ = 0;
        unsigned char *seen;
        for (int i = 0; i < n; i++) nc = labels[i] + 1 > nc ? labels[i] + 1 : nc;
        seen = (unsigned char *)CNN_MALLOC((size_t)(nc > 0 ? nc : 1));
        if (!seen) {
            cnn_set_error(CNN_ERR_MEMORY, "%s: out of memory", who);
            return NULL;
        }
        memset(seen, 0, (size_t)(nc > 0 ? nc : 1));
        for (int i = 0; i < n; i++)
            if (labels[i] >= 0) seen[labels[i]] |= (unsigned char)(i < split ? 1 : 2);
        for (int k = 0; k < nc; k++) differ |= seen[k] == 1 || seen[k] == 2;
        CNN_FREE(seen);
        if (differ) {
            cnn_set_error(CNN_ERR_ARG,
                          "%s: the training and validation subsets have different classes after the split "
                          "at %d of %d images (sorted by label? shuffle the dataset first)",
                          who, split, n);
            return NULL;
        }
    }
    co = cnn__idg_common_of(o);
    f = cnn__idg_flow_new(g, count, h, w, c, &co, who);
    if (!f) return NULL;
    if (d) f->x8 = d->images + (size_t)start * (size_t)h * (size_t)w * (size_t)c;
    else f->xf = xf + (size_t)start * (size_t)h * (size_t)w * (size_t)c;
    if (o->y) {
        f->y = o->y + (size_t)start * (size_t)o->y_width;
        f->y_mode = CNN__IDG_Y_GIVEN;
        f->y_width = o->y_width;
    } else if (labels) {
        f->labels = (int *)CNN_MALLOC((size_t)count * sizeof(int));
        if (!f->labels) {
            cnn_set_error(CNN_ERR_MEMORY, "%s: out of memory", who);
            cnn_flow_free(f);
            return NULL;
        }
        memcpy(f->labels, labels + start, (size_t)count * sizeof(int));
        f->num_classes = d->num_classes;
        for (int i = 0; i < count; i++)
            if (f->labels[i] < 0 || (o->one_hot && f->labels[i] >= d->num_classes)) {
                cnn_set_error(CNN_ERR_ARG, "%s: label %d of image %d is outside 0..%d", who, f->labels[i],
                              start + i, d->num_classes - 1);
                cnn_flow_free(f);
                return NULL;
            }
        f->y_mode = o->one_hot ? CNN__IDG_Y_ONEHOT : CNN__IDG_Y_INDEX;
        f->y_width = o->one_hot ? d->num_classes : 1;
        if (d->class_names && cnn__idg_copy_names(f, d->class_names, d->num_classes)) {
            cnn_flow_free(f);
            return NULL;
        }
    }
    return cnn__idg_flow_finish(f, who);
}

CNN__AUG_IMPL cnn_flow *cnn_datagen_flow_opt(const cnn_datagen *g, const cnn_dataset *d,
                                             const cnn_flow_opts *o) {
    if (!d || !d->images) {
        cnn_set_error(CNN_ERR_ARG, "cnn_datagen_flow: the dataset is NULL or has no images");
        return NULL;
    }
    return cnn__idg_flow_arrays(g, d, NULL, d->n, d->h, d->w, d->c, o, "cnn_datagen_flow");
}

CNN__AUG_IMPL cnn_flow *cnn_datagen_flow_float_opt(const cnn_datagen *g, const float *x, int n, int h, int w,
                                                   int c, const cnn_flow_opts *o) {
    if (!x) {
        cnn_set_error(CNN_ERR_ARG, "cnn_datagen_flow_float: the image array is NULL");
        return NULL;
    }
    return cnn__idg_flow_arrays(g, NULL, x, n, h, w, c, o, "cnn_datagen_flow_float");
}

/* ---- flow_from_directory -------------------------------------------------- */

#ifndef CNN__AUG_NO_DIRENT
/* flow_from_directory's options, checked before any file is read: *th x *tw x
   *ch is the images' size (target_size {0, 0} is Keras' 256 x 256), and
   op->interpolation is made explicit (Keras' default is nearest). */
static int cnn__idg_dir_check(const cnn_datagen *g, const char *dir, cnn_directory_flow_opts *op, int *th,
                              int *tw, int *ch) {
    const char *who = cnn__idg_dir_who;
    if (!g || !dir) return cnn_set_error(CNN_ERR_ARG, "%s: the %s is NULL", who, g ? "folder" : "generator");
    *th = op->target_size[0];
    *tw = op->target_size[1];
    if (*th == 0 && *tw == 0) *th = *tw = 256;
    if (*th <= 0 || *tw <= 0)
        return cnn_set_error(CNN_ERR_ARG,
                             "%s: target_size {%d, %d} must have height and width > 0 (or both 0 for "
                             "Keras' 256 x 256) ('%s')",
                             who, op->target_size[0], op->target_size[1], dir);
    if ((int)op->color_mode < 0 || (int)op->color_mode > (int)CNN_COLOR_RGBA)
        return cnn_set_error(CNN_ERR_ARG, "%s: unknown color_mode %d (CNN_COLOR_RGB, CNN_COLOR_GRAYSCALE or "
                             "CNN_COLOR_RGBA)", who, (int)op->color_mode);
    if ((int)op->class_mode < 0 || (int)op->class_mode > (int)CNN_CLASS_NONE)
        return cnn_set_error(CNN_ERR_ARG,
                             "%s: unknown class_mode %d (CNN_CLASS_CATEGORICAL, _BINARY, _SPARSE, "
                             "_INPUT or _NONE)",
                             who, (int)op->class_mode);
    if ((int)op->interpolation < 0 || (int)op->interpolation > (int)CNN_INTERP_HAMMING)
        return cnn_set_error(CNN_ERR_ARG,
                             "%s: unknown interpolation %d (CNN_INTERP_NEAREST, _BILINEAR, _BICUBIC, "
                             "_LANCZOS, _BOX or _HAMMING)",
                             who, (int)op->interpolation);
    if (op->interpolation == CNN_INTERP_DEFAULT) op->interpolation = CNN_INTERP_NEAREST; /* Keras' default */
    if ((int)op->subset < 0 || (int)op->subset > (int)CNN_SUBSET_VALIDATION ||
        (op->subset && g->o.validation_split <= 0))
        return cnn_set_error(CNN_ERR_ARG, "%s: %s", who,
                             op->subset && (int)op->subset <= (int)CNN_SUBSET_VALIDATION
                                 ? "a subset needs the generator's validation_split > 0"
                                 : "unknown subset");
    *ch = op->color_mode == CNN_COLOR_GRAYSCALE ? 1 : op->color_mode == CNN_COLOR_RGBA ? 4 : 3;
    return CNN_OK;
}

/* The classes, in label order: those given (each a subfolder of dir, listed
   once), or the sorted subfolders. */
static int cnn__idg_dir_classes(const char *dir, const cnn_directory_flow_opts *op,
                                cnn__aug_strlist *classes) {
    const char *who = cnn__idg_dir_who;
    int rc;
    if (op->classes) {
        for (const char *const *p = op->classes; *p; p++) {
            struct stat st;
            char *cdir;
            if (!**p || strchr(*p, '/'))
                return cnn_set_error(CNN_ERR_ARG, "%s: class name '%s' is not a subfolder name", who, *p);
            for (int i = 0; i < classes->n; i++)
                if (!strcmp(classes->v[i], *p))
                    return cnn_set_error(CNN_ERR_ARG, "%s: class '%s' is listed twice", who, *p);
            if (!(cdir = cnn__aug_join(dir, *p))) return CNN_ERR_MEMORY;
            if (stat(cdir, &st) != 0 || !S_ISDIR(st.st_mode)) {
                rc = cnn_set_error(CNN_ERR_IO, "%s: class folder '%s' does not exist", who, cdir);
                CNN_FREE(cdir);
                return rc;
            }
            CNN_FREE(cdir);
            if ((rc = cnn__aug_push(classes, cnn__aug_strdup(*p))) < 0) return rc;
        }
        if (classes->n == 0) return cnn_set_error(CNN_ERR_ARG, "%s: the classes list is empty", who);
    } else if ((rc = cnn__aug_list_classes(who, dir, classes)) < 0) {
        return rc;
    }
    if (op->class_mode == CNN_CLASS_BINARY && classes->n != 2)
        return cnn_set_error(CNN_ERR_ARG, "%s: class_mode binary needs exactly 2 classes, '%s' has %d", who,
                             dir, classes->n);
    return CNN_OK;
}

/* The subset's slice of one class's sorted files: Keras splits each class on
   its own at int(n * validation_split), the validation part first. The slice's
   names move to all, with label ci in labels [*cap]; the others are freed, and
   files is left empty (also when this fails). */
static int cnn__idg_dir_subset(const cnn_datagen *g, cnn_subset subset, const char *dir, int ci,
                               cnn__aug_strlist *files, cnn__aug_strlist *all, int **labels, int *cap) {
    int lo = 0, hi = files->n, rc;
    if (subset) {
        int split = cnn__idg_split_at(g->o.validation_split, files->n);
        if (subset == CNN_SUBSET_VALIDATION) hi = split;
        else lo = split;
    }
    for (int i = 0; i < files->n; i++) {
        if (i < lo || i >= hi) {
            CNN_FREE(files->v[i]);
            continue;
        }
        if (all->n == *cap) {
            int ncap = *cap ? *cap * 2 : 256;
            int *nl = ncap > 0 ? (int *)CNN_REALLOC(*labels, (size_t)ncap * sizeof(int)) : NULL;
            if (!nl) {
                for (int r = i; r < files->n; r++) CNN_FREE(files->v[r]);
                files->n = 0;
                return cnn_set_error(CNN_ERR_MEMORY, "%s: out of memory listing '%s'", cnn__idg_dir_who, dir);
            }
            *labels = nl;
            *cap = ncap;
        }
        (*labels)[all->n] = ci;
        if ((rc = cnn__aug_push(all, files->v[i])) < 0) {
            for (int r = i + 1; r < files->n; r++) CNN_FREE(files->v[r]);
            files->n = 0;
            return rc;
        }
    }
    files->n = 0; /* the names now belong to `all` (or were freed) */
    return CNN_OK;
}

/* The files to flow: each class folder in label order, listed in Keras' order
   (cnn__aug_class_files), then cut to the subset's slice (cnn__idg_dir_subset);
   all gets their paths, *labels [all->n] their classes. */
static int cnn__idg_dir_list(const cnn_datagen *g, const char *dir, const cnn_directory_flow_opts *op,
                             const cnn__aug_strlist *classes, cnn__aug_strlist *all, int **labels) {
    const char *who = cnn__idg_dir_who;
    cnn__aug_strlist files = {NULL, 0, 0}; /* one class's, at a time */
    int rc = CNN_OK, cap = 0;
    for (int ci = 0; ci < classes->n; ci++) {
        if ((rc = cnn__aug_class_files(who, dir, classes->v[ci], op->follow_links, &files)) < 0) break;
        if ((rc = cnn__idg_dir_subset(g, op->subset, dir, ci, &files, all, labels, &cap)) < 0) break;
    }
    cnn__aug_strlist_free(&files);
    if (rc < 0) return rc;
    if (all->n == 0)
        return cnn_set_error(CNN_ERR_FORMAT,
                             "%s: no image files (png jpg jpeg bmp gif tga ppm pgm) in the %s%d "
                             "class folder%s of '%s'",
                             who,
                             op->subset == CNN_SUBSET_VALIDATION ? "validation part of the "
                             : op->subset == CNN_SUBSET_TRAINING ? "training part of the "
                                                                 : "",
                             classes->n, classes->n == 1 ? "" : "s", dir);
    return CNN_OK;
}

/* Decode every listed file now into images [all->n][th][tw][ch], on all cores
   when built with OpenMP (lazy: images is NULL and only the headers are read,
   the workers decode later); then, in file order, keep the good ones (keep
   [*kept]: their indices in all, their images moved to the front) and report
   the bad. status [all->n] is scratch. */
static int cnn__idg_dir_decode(const cnn__aug_strlist *all, const cnn_directory_flow_opts *op, int th, int tw,
                               int ch, unsigned char *images, int *status, int *keep, int *kept) {
    const char *who = cnn__idg_dir_who;
    const size_t per = (size_t)th * (size_t)tw * (size_t)ch;
    const int n_files = all->n, lazy = op->lazy, keep_aspect = op->keep_aspect_ratio;
    const cnn_interpolation interp = op->interpolation;
    char **names = all->v;
    int k = 0, rc;
    CNN__IDG_OMP(omp parallel for schedule(dynamic, 8))
    for (int i = 0; i < n_files; i++) {
        int x, y, comp;
        if (lazy) status[i] = cnn__aug_info(names[i], &x, &y, &comp) && x > 0 && y > 0 ? CNN_OK : CNN_ERR_FORMAT;
        else
            status[i] = cnn__aug_load_resized(names[i], th, tw, ch, interp, keep_aspect,
                                              images + (size_t)i * per);
    }
    for (int i = 0; i < n_files; i++) {
        int x, y, comp;
        if (status[i] == CNN_ERR_MEMORY)
            return cnn_set_error(CNN_ERR_MEMORY, "%s: out of memory decoding '%s'", who, names[i]);
        if (status[i]) { /* decode it again here: the reason is kept per thread */
            unsigned char *px = cnn__aug_load(names[i], &x, &y, &comp, ch);
            stbi_image_free(px);
            if ((rc = cnn__aug_bad_image(who, names[i], op->skip_bad)) < 0) return rc;
            continue;
        }
        if (images && k != i) memcpy(images + (size_t)k * per, images + (size_t)i * per, per);
        keep[k++] = i;
    }
    *kept = k;
    return CNN_OK;
}

/* The flow over the k kept files (keep [k]: indices into all and labels): their
   names move from all into the flow, and so does *d, the decoded images (NULL
   when lazy). Frees the flow and returns NULL when it fails. */
static cnn_flow *cnn__idg_dir_build(const cnn_datagen *g, const cnn_directory_flow_opts *op,
                                    const cnn__aug_strlist *classes, cnn__aug_strlist *all, const int *labels,
                                    const int *keep, int k, int th, int tw, int ch, cnn_dataset **d) {
    const char *who = cnn__idg_dir_who;
    cnn__idg_common co;
    cnn_flow *f;
    co.batch_size = op->batch_size;
    co.no_shuffle = op->no_shuffle;
    co.seed = op->seed;
    co.save_to_dir = op->save_to_dir;
    co.save_prefix = op->save_prefix;
    co.save_format = op->save_format;
    co.workers = op->workers;
    co.max_queue_size = op->max_queue_size;
    if (!(f = cnn__idg_flow_new(g, k, th, tw, ch, &co, who))) return NULL;
    f->files = (char **)CNN_MALLOC((size_t)k * sizeof(char *));
    f->labels = (int *)CNN_MALLOC((size_t)k * sizeof(int));
    if (!f->files || !f->labels) {
        CNN_FREE(f->files);
        f->files = NULL;
        cnn_set_error(CNN_ERR_MEMORY, "%s: out of memory", who);
        goto fail;
    }
    for (int i = 0; i < k; i++) { /* the kept names move into the flow */
        f->files[i] = all->v[keep[i]];
        all->v[keep[i]] = NULL;
        f->labels[i] = labels[keep[i]];
    }
    f->num_classes = classes->n;
    if (cnn__idg_copy_names(f, classes->v, classes->n)) goto fail;
    f->lazy = op->lazy;
    f->resize = op->interpolation;
    f->keep_aspect = op->keep_aspect_ratio;
    if (*d) {
        f->own = *d;
        f->x8 = (*d)->images;
        *d = NULL;
    }
    switch (op->class_mode) {
    case CNN_CLASS_CATEGORICAL: f->y_mode = CNN__IDG_Y_ONEHOT; f->y_width = classes->n; break;
    case CNN_CLASS_BINARY:
    case CNN_CLASS_SPARSE: f->y_mode = CNN__IDG_Y_INDEX; f->y_width = 1; break;
    case CNN_CLASS_INPUT: f->y_mode = CNN__IDG_Y_INPUT; f->y_width = th * tw * ch; break;
    default: f->y_mode = CNN__IDG_Y_NONE; f->y_width = 0; break;
    }
    return cnn__idg_flow_finish(f, who);
fail:
    cnn_flow_free(f);
    return NULL;
}
#endif

CNN__AUG_IMPL cnn_flow *cnn_datagen_flow_from_directory_opt(const cnn_datagen *g, const char *dir,
                                                            const cnn_directory_flow_opts *o) {
#ifdef CNN__AUG_NO_DIRENT
    (void)g;
    (void)o;
    cnn_set_error(CNN_ERR_STATE, "%s: folder listing (dirent.h) is not available on this system ('%s')",
                  cnn__idg_dir_who, dir ? dir : "NULL");
    return NULL;
#else
    const char *who = cnn__idg_dir_who;
    cnn_directory_flow_opts op;
    cnn__aug_strlist classes = {NULL, 0, 0}, all = {NULL, 0, 0};
    cnn_flow *f = NULL;
    cnn_dataset *d = NULL;
    int *labels = NULL, *keep = NULL, *status = NULL; /* [all.n] */
    int th = 0, tw = 0, ch = 0, k = 0; /* sizes set by cnn__idg_dir_check; 0 quiets -Wmaybe-uninitialized */
    if (o) op = *o;
    else memset(&op, 0, sizeof op);
    if (cnn__idg_dir_check(g, dir, &op, &th, &tw, &ch)) return NULL;
    if (cnn__idg_dir_classes(dir, &op, &classes) < 0) goto done;
    if (cnn__idg_dir_list(g, dir, &op, &classes, &all, &labels) < 0) goto done;
    keep = (int *)CNN_MALLOC((size_t)all.n * sizeof(int));
    status = (int *)CNN_MALLOC((size_t)all.n * sizeof(int));
    if (!keep || !status) {
        cnn_set_error(CNN_ERR_MEMORY, "%s: out of memory", who);
        goto done;
    }
    if (!op.lazy) {
        const unsigned long long bytes = (unsigned long long)all.n * th * tw * ch;
        if (cnn_check_memory(who, "the folder's images", bytes) < 0) goto done;
        if (!(d = cnn_dataset_new(all.n, th, tw, ch, classes.n))) goto done;
    }
    if (cnn__idg_dir_decode(&all, &op, th, tw, ch, d ? d->images : NULL, status, keep, &k) < 0) goto done;
    if (k == 0) {
        cnn__aug_none_decoded(who, all.n, dir);
        goto done;
    }
    if (d) d->n = k;
    f = cnn__idg_dir_build(g, &op, &classes, &all, labels, keep, k, th, tw, ch, &d);
done:
    cnn_dataset_free(d);
    for (int i = 0; i < all.n; i++) CNN_FREE(all.v[i]);
    CNN_FREE(all.v);
    cnn__aug_strlist_free(&classes);
    CNN_FREE(labels);
    CNN_FREE(keep);
    CNN_FREE(status);
    return f;
#endif
}

/* ---- flow queries ---------------------------------------------------------- */

CNN__AUG_IMPL cnn_batch_source *cnn_flow_source(cnn_flow *f) {
    if (!f) cnn_set_error(CNN_ERR_ARG, "cnn_flow_source: the flow is NULL");
    return f ? &f->src : NULL;
}

CNN__AUG_IMPL int cnn_flow_len(const cnn_flow *f) { return f ? f->per_pass : 0; }
CNN__AUG_IMPL int cnn_flow_samples(const cnn_flow *f) { return f ? f->n : 0; }
CNN__AUG_IMPL int cnn_flow_num_classes(const cnn_flow *f) { return f && f->labels ? f->num_classes : 0; }

CNN__AUG_IMPL const char *cnn_flow_class_name(const cnn_flow *f, int k) {
    return f && f->class_names && k >= 0 && k < f->num_classes ? f->class_names[k] : NULL;
}

CNN__AUG_IMPL const int *cnn_flow_classes(const cnn_flow *f) { return f ? f->labels : NULL; }

CNN__AUG_IMPL const char *cnn_flow_filename(const cnn_flow *f, int i) {
    return f && f->files && i >= 0 && i < f->n ? f->files[i] : NULL;
}

#endif /* CNN_AUGMENT_IMPLEMENTATION_INCLUDED */
#endif /* CNN_AUGMENT_IMPLEMENTATION */

/*
------------------------------------------------------------------------------
This software is available under 2 licenses -- choose whichever you prefer.
------------------------------------------------------------------------------
ALTERNATIVE A - MIT License
Copyright (c) 2026 the cnn.h authors
Permission is hereby granted, free of charge, to any person obtaining a copy of
this software and associated documentation files (the "Software"), to deal in
the Software without restriction, including without limitation the rights to
use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies
of the Software, and to permit persons to whom the Software is furnished to do
so, subject to the following conditions:
The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.
THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
------------------------------------------------------------------------------
ALTERNATIVE B - Public Domain (www.unlicense.org)
This is free and unencumbered software released into the public domain.
Anyone is free to copy, modify, publish, use, compile, sell, or distribute this
software, either in source code form or as a compiled binary, for any purpose,
commercial or non-commercial, and by any means.
In jurisdictions that recognize copyright laws, the author or authors of this
software dedicate any and all copyright interest in the software to the public
domain. We make this dedication for the benefit of the public at large and to
the detriment of our heirs and successors. We intend this dedication to be an
overt act of relinquishment in perpetuity of all present and future rights to
this software under copyright law.
THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN
ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION
WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
------------------------------------------------------------------------------
*/
