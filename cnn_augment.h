/* cnn_augment.h - v0.1 - image files, gzip'd IDX, image folders and PNG plots for cnn.h

   The file side of cnn.h: everything that decodes or encodes a file format.
     - gzip'd IDX files (MNIST, Fashion-MNIST) and Fashion-MNIST in one call
     - a folder with one subfolder of images per class (png jpg bmp gif tga ppm pgm),
       decoded and resized to one size, as Keras' flow_from_directory lists them
     - one call that loads whichever of these a path holds (or CIFAR-10 binary)
     - PNG output: any uint8 image, and the Keras tutorial's two training graphs
       (loss and accuracy per epoch, train and validation) as one PNG
   (The ImageDataGenerator will join this file; see the section banners.)

   USAGE
     cnn_augment.h includes cnn.h. In exactly one C or C++ file:

         #define CNN_IMPLEMENTATION             // cnn.h's implementation (here or elsewhere)
         #define CNN_AUGMENT_IMPLEMENTATION
         #define CNN_AUGMENT_STB_IMPLEMENTATION // unless stb is compiled elsewhere, see below
         #include "cnn_augment.h"

     Everywhere else just #include "cnn_augment.h". Needs C99 or C++, a POSIX
     system for the folder loaders (opendir/readdir/stat), and stb_image,
     stb_image_write and stb_image_resize (v1): Debian's libstb-dev installs them
     under /usr/include/stb/, which is where this file looks (<stb/stb_image.h>).
     Link with -lm.

   STB, ONE COPY ONLY
     stb's implementation is compiled only when you ask for it:
       CNN_AUGMENT_STB_IMPLEMENTATION   defined in the file that has
                  CNN_AUGMENT_IMPLEMENTATION: compiles stb_image, stb_image_write and
                  stb_image_resize into that file as private (static) functions, so
                  they never clash with another copy of stb in your program. That file
                  may call stbi_load etc. itself, other files may not. Do not include
                  the stb headers yourself before this file there.
     Without it, this file only declares stb's functions: your program must compile
     stb's implementations somewhere else (STB_IMAGE_IMPLEMENTATION,
     STB_IMAGE_WRITE_IMPLEMENTATION, STB_IMAGE_RESIZE_IMPLEMENTATION), or link a
     library that has them. stb's own options (STBI_NO_*, STBI_MALLOC, ...) work as
     usual when defined before the implementation is compiled. Buffers from stb
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
     cnn_load_image_dir_opt(dir, &opts) (a NULL opts means all defaults).

   IMAGE FOLDERS (cnn_load_image_dir)
     Classes are the subfolder names sorted byte-wise (as Python's sorted()); label k
     is the k-th name. Inside a class folder files are found recursively (like
     Keras' os.walk), by extension in any case: png jpg jpeg bmp gif (first frame)
     tga ppm pgm; other files are ignored, and so are names starting with '.'
     (".ipynb_checkpoints", macOS "._x.jpg" files). Files are sorted by their path,
     so the order is the same on every system. Symbolic links to folders inside a
     class folder are followed only with .follow_links = 1 (needs lstat, i.e.
     POSIX.1-2001 visible: the default with gcc/clang except in strict -std=c99
     without _XOPEN_SOURCE/_DEFAULT_SOURCE, where links are always followed);
     recursion stops 16 folders deep. Images are decoded to the target channels
     (grey <-> RGB conversion by stb_image; a first image with grey + alpha counts
     as 4 channels) and resized with a triangle (bilinear) filter when their size
     differs. An empty class folder still counts as a class.

   GZIP
     The gzip header (RFC 1952: FEXTRA, FNAME, FCOMMENT, FHCRC) is parsed here and
     the deflate data inflated by stb_image's zlib decoder; the CRC-32 and length
     in the trailer are checked, so a truncated or damaged file is an error, not
     garbage. One gzip member per file (what gzip writes); files not starting with
     1f 8b are read as they are.

   ERRORS
     As in cnn.h: a negative cnn_status or NULL, and cnn_last_error() names the file,
     folder or argument at fault. Nothing aborts; nothing leaks on error.

   CONFIGURATION MACROS (define before including the implementation)
     CNN_AUGMENT_STB_IMPLEMENTATION  compile private copies of stb (above)
     CNN_STB_INCLUDE_PLAIN      include "stb_image.h", "stb_image_write.h" and
                                "stb_image_resize.h" (your own copies, found on your
                                include path) instead of <stb/stb_image.h> etc.
     CNN_FASHION_MNIST_DIR      default folder of cnn_load_fashion_mnist
                                (default "/usr/share/datasets/fashion-mnist")
     CNN_STATIC, CNN_MALLOC, CNN_REALLOC, CNN_FREE   as in cnn.h

   REVISION HISTORY
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

/* ======================================================================== */
/* Loaders: image folders, and any dataset path                             */
/* ======================================================================== */

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

/* ======================================================================== */
/* ImageDataGenerator (to come)                                             */
/* ======================================================================== */

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
/* stb: stb_image (decode, zlib), stb_image_write (PNG), stb_image_resize   */
/* ======================================================================== */

#ifdef CNN_AUGMENT_STB_IMPLEMENTATION
#if defined(STBI_INCLUDE_STB_IMAGE_H) || defined(INCLUDE_STB_IMAGE_WRITE_H) || \
    defined(STBIR_INCLUDE_STB_IMAGE_RESIZE_H)
#error "cnn_augment.h: CNN_AUGMENT_STB_IMPLEMENTATION needs the stb headers not to be included before it in this file"
#endif
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_RESIZE_STATIC
#define STB_IMAGE_RESIZE_IMPLEMENTATION
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
#include "stb_image_resize.h"
#else
#include <stb/stb_image.h>
#include <stb/stb_image_write.h>
#include <stb/stb_image_resize.h>
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

/* File bytes, plain or inflated (the latter allocated by stb, freed by stbi_image_free). */
typedef struct cnn__aug_blob {
    unsigned char *data;
    size_t len;
    int from_stb;
} cnn__aug_blob;

static void cnn__aug_blob_free(cnn__aug_blob *b) {
    if (b->from_stb) stbi_image_free(b->data);
    else CNN_FREE(b->data);
    b->data = NULL;
    b->len = 0;
}

/* Inflate one gzip member in[0..len) (which starts with 1f 8b). */
static int cnn__aug_gunzip(const unsigned char *in, size_t len, const char *path, const char *who,
                           cnn__aug_blob *out) {
    size_t p = 10, dlen;
    int flg, olen = 0;
    char *dec;
    if (len < 18) return cnn_set_error(CNN_ERR_FORMAT, "%s: '%s' is a truncated gzip file (%zu bytes)", who, path, len);
    if (in[2] != 8)
        return cnn_set_error(CNN_ERR_FORMAT, "%s: '%s': unsupported gzip compression method %d (only 8, deflate)",
                             who, path, in[2]);
    flg = in[3];
    if (flg & 0xE0) return cnn_set_error(CNN_ERR_FORMAT, "%s: '%s': reserved gzip header flags set", who, path);
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
    dec = stbi_zlib_decode_noheader_malloc((const char *)in + p, (int)dlen, &olen);
    if (!dec)
        return cnn_set_error(CNN_ERR_FORMAT, "%s: '%s': corrupt or truncated gzip data (%s)", who, path,
                             stbi_failure_reason() ? stbi_failure_reason() : "inflate failed");
    if ((uint32_t)olen != cnn__aug_le32(in + len - 4) ||
        cnn__aug_crc32((const unsigned char *)dec, (size_t)olen) != cnn__aug_le32(in + len - 8)) {
        stbi_image_free(dec);
        return cnn_set_error(CNN_ERR_FORMAT,
                             "%s: '%s': gzip length/CRC-32 mismatch (file truncated, damaged, or several gzip members)",
                             who, path);
    }
    out->data = (unsigned char *)dec;
    out->len = (size_t)olen;
    out->from_stb = 1;
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
    b->from_stb = 0;
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
        cnn_set_error(CNN_ERR_FORMAT, "cnn_load_fashion_mnist: '%s' has %d classes of %d channel(s), not Fashion-MNIST's "
                      "10 grey classes", path[1], d->num_classes, d->c);
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
/* Image folders: one subfolder per class                                   */
/* ======================================================================== */

#define CNN__AUG_MAX_DEPTH 16
static const char cnn__aug_dir_who[] = "cnn_load_image_dir";

#ifndef CNN__AUG_NO_DIRENT
/* Append the image files under folder `path` (recursively) to out. */
static int cnn__aug_scan_images(const char *who, const char *path, int depth, int follow_links, cnn__aug_strlist *out) {
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
        if (stat(child, &st) == 0 && S_ISDIR(st.st_mode)) rc = cnn__aug_push(classes, cnn__aug_strdup(e->d_name));
        CNN_FREE(child);
    }
    closedir(dp);
    if (rc == CNN_OK && classes->n == 0)
        rc = cnn_set_error(CNN_ERR_FORMAT, "%s: '%s' has no class subfolders (expected one folder of images per class)",
                           who, dir);
    if (rc == CNN_OK) qsort(classes->v, (size_t)classes->n, sizeof(char *), cnn__aug_strcmp);
    return rc;
}
#endif

/* The error (or warning, with skip_bad) for an image stb_image cannot read. */
static int cnn__aug_bad_image(const char *who, const char *path, int skip_bad) {
    const char *why = stbi_failure_reason();
    if (!why) why = "unknown reason";
    if (skip_bad) {
        fprintf(stderr, "%s: warning: skipping '%s': cannot decode it (%s)\n", who, path, why);
        return CNN_OK;
    }
    return cnn_set_error(CNN_ERR_FORMAT, "%s: cannot decode image '%s' (%s)", who, path, why);
}

CNN__AUG_IMPL cnn_dataset *cnn_load_image_dir_opt(const char *dir, const cnn_image_dir_opts *o) {
#ifdef CNN__AUG_NO_DIRENT
    (void)o;
    cnn_set_error(CNN_ERR_STATE, "%s: folder listing (dirent.h) is not available on this system ('%s')",
                  cnn__aug_dir_who, dir ? dir : "NULL");
    return NULL;
#else
    cnn_image_dir_opts opt;
    cnn__aug_strlist classes = {NULL, 0, 0};
    cnn__aug_strlist *files = NULL;
    cnn_dataset *d = NULL;
    int h, w, c, total = 0, k = 0, ok = 0;
    size_t img_size;

    if (o) opt = *o;
    else memset(&opt, 0, sizeof opt);
    if (!dir) { cnn_set_error(CNN_ERR_ARG, "%s: the folder is NULL", cnn__aug_dir_who); return NULL; }
    if (opt.height < 0 || opt.width < 0) {
        cnn_set_error(CNN_ERR_ARG, "%s: target size %dx%d is negative ('%s')", cnn__aug_dir_who, opt.height,
                      opt.width, dir);
        return NULL;
    }
    if (opt.channels != 0 && opt.channels != 1 && opt.channels != 3 && opt.channels != 4) {
        cnn_set_error(CNN_ERR_ARG, "%s: channels must be 1, 3 or 4 (0 = those of the first image), not %d ('%s')",
                      cnn__aug_dir_who, opt.channels, dir);
        return NULL;
    }
    if (cnn__aug_list_classes(cnn__aug_dir_who, dir, &classes) < 0) goto done;
    files = (cnn__aug_strlist *)CNN_MALLOC((size_t)classes.n * sizeof *files);
    if (!files) { cnn_set_error(CNN_ERR_MEMORY, "%s: out of memory ('%s')", cnn__aug_dir_who, dir); goto done; }
    memset(files, 0, (size_t)classes.n * sizeof *files);
    for (int ci = 0; ci < classes.n; ci++) {
        char *cdir = cnn__aug_join(dir, classes.v[ci]);
        int rc = cdir ? cnn__aug_scan_images(cnn__aug_dir_who, cdir, 0, opt.follow_links, &files[ci]) : CNN_ERR_MEMORY;
        CNN_FREE(cdir);
        if (rc < 0) goto done;
        if (files[ci].n > 1) qsort(files[ci].v, (size_t)files[ci].n, sizeof(char *), cnn__aug_strcmp);
        if (files[ci].n > INT_MAX - total) {
            cnn_set_error(CNN_ERR_ARG, "%s: too many images in '%s'", cnn__aug_dir_who, dir);
            goto done;
        }
        total += files[ci].n;
    }
    if (total == 0) {
        cnn_set_error(CNN_ERR_FORMAT, "%s: no image files (png jpg jpeg bmp gif tga ppm pgm) in the %d class folder%s of '%s'",
                      cnn__aug_dir_who, classes.n, classes.n == 1 ? "" : "s", dir);
        goto done;
    }

    /* the target size and channels: given, or those of the first readable image */
    h = opt.height;
    w = opt.width;
    c = opt.channels;
    for (int ci = 0; ci < classes.n && (!h || !w || !c); ci++)
        for (int fi = 0; fi < files[ci].n && (!h || !w || !c); fi++) {
            int x, y, comp;
            if (stbi_info(files[ci].v[fi], &x, &y, &comp)) {
                if (!h) h = y;
                if (!w) w = x;
                if (!c) c = comp == 2 ? 4 : comp;
            } else if (!opt.skip_bad) {
                cnn__aug_bad_image(cnn__aug_dir_who, files[ci].v[fi], 0);
                goto done;
            }
        }
    if (!h || !w || !c) {
        cnn_set_error(CNN_ERR_FORMAT, "%s: none of the %d image files in '%s' could be decoded", cnn__aug_dir_who,
                      total, dir);
        goto done;
    }
    d = cnn_dataset_new(total, h, w, c, classes.n);
    if (!d) goto done;
    img_size = (size_t)h * (size_t)w * (size_t)c;

    for (int ci = 0; ci < classes.n; ci++)
        for (int fi = 0; fi < files[ci].n; fi++) {
            const char *path = files[ci].v[fi];
            int x, y, comp;
            unsigned char *px = stbi_load(path, &x, &y, &comp, c);
            unsigned char *dst = d->images + (size_t)k * img_size;
            if (!px) {
                if (cnn__aug_bad_image(cnn__aug_dir_who, path, opt.skip_bad) < 0) goto done;
                continue;
            }
            if (x == w && y == h) {
                memcpy(dst, px, img_size);
            } else if (!stbir_resize_uint8_generic(px, x, y, 0, dst, w, h, 0, c, c == 4 ? 3 : STBIR_ALPHA_CHANNEL_NONE,
                                                   0, STBIR_EDGE_CLAMP, STBIR_FILTER_TRIANGLE,
                                                   STBIR_COLORSPACE_LINEAR, NULL)) {
                stbi_image_free(px);
                cnn_set_error(CNN_ERR_MEMORY, "%s: cannot resize '%s' (%dx%d) to %dx%d (out of memory)",
                              cnn__aug_dir_who, path, x, y, w, h);
                goto done;
            }
            stbi_image_free(px);
            d->labels[k++] = ci;
        }
    if (k == 0) {
        cnn_set_error(CNN_ERR_FORMAT, "%s: none of the %d image files in '%s' could be decoded", cnn__aug_dir_who,
                      total, dir);
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
    cnn_set_error(CNN_ERR_ARG,
                  "cnn_load_dataset: '%s' is neither a folder (CIFAR-10 batches, or one subfolder of images per "
                  "class) nor a CIFAR-10 .bin file", path);
    return NULL;
}

/* ======================================================================== */
/* PNG output                                                               */
/* ======================================================================== */

CNN__AUG_IMPL int cnn_write_png(const char *path, int w, int h, int c, const unsigned char *pixels) {
    if (!path) return cnn_set_error(CNN_ERR_ARG, "cnn_write_png: the path is NULL");
    if (!pixels) return cnn_set_error(CNN_ERR_ARG, "cnn_write_png: the pixels are NULL ('%s')", path);
    if (w <= 0 || h <= 0 || c < 1 || c > 4 || w > INT_MAX / c)
        return cnn_set_error(CNN_ERR_ARG, "cnn_write_png: bad image size %dx%d with %d channel(s) ('%s'); "
                             "channels must be 1..4", w, h, c, path);
    errno = 0;
    if (!stbi_write_png(path, w, h, c, pixels, w * c))
        return cnn_set_error(CNN_ERR_IO, "cnn_write_png: cannot write '%s': %s", path,
                             errno ? strerror(errno) : "out of memory or disk full");
    return CNN_OK;
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
                    cnn__aug_fill(cv, x + bit * scale, y + row * scale, x + (bit + 1) * scale, y + (row + 1) * scale, col);
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

/* One panel: axes in the box [x0, x1] x [y0, y1] (the plotting area), title
   above, tick labels, curves of up to two series, legend. */
static void cnn__aug_panel(cnn__aug_canvas *cv, int x0, int y0, int x1, int y1, const char *title,
                           const double *series[2], int epochs) {
    static const char *const labels[2] = {"train", "validation"};
    const cnn__aug_rgb colors[2] = {{31, 119, 180}, {255, 127, 14}}; /* matplotlib C0, C1 */
    const cnn__aug_rgb black = {0, 0, 0}, grid = {222, 222, 222}, text = {34, 34, 34}, frame = {200, 200, 200};
    const cnn__aug_rgb white = {255, 255, 255};
    double lo = HUGE_VAL, hi = -HUGE_VAL, xlo, xhi, step, vmax, pad;
    char buf[48];
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
    vmax = fabs(lo) > fabs(hi) ? fabs(lo) : fabs(hi);
    if (hi - lo <= 1e-9 * (vmax > 1 ? vmax : 1)) pad = vmax > 0 ? vmax * 0.05 : 0.05;
    else pad = (hi - lo) * 0.05;
    lo -= pad;
    hi += pad;
    xlo = epochs > 1 ? 1 - (epochs - 1) * 0.05 : 0.5;
    xhi = epochs > 1 ? epochs + (epochs - 1) * 0.05 : 1.5;
#define CNN__AUG_X(v) (x0 + ((v) - xlo) / (xhi - xlo) * (x1 - x0))
#define CNN__AUG_Y(v) (y1 - ((v) - lo) / (hi - lo) * (y1 - y0))

    /* y grid, ticks and labels */
    step = cnn__aug_nice_step((hi - lo) / 5);
    for (double k = ceil(lo / step); k * step <= hi; k++) {
        double v = fabs(k) < 0.5 ? 0 : k * step;
        int y = (int)floor(CNN__AUG_Y(v) + 0.5);
        cnn__aug_fill(cv, x0 + 1, y, x1, y + 1, grid);
        cnn__aug_fill(cv, x0 - 5, y, x0, y + 1, black);
        cnn__aug_format_tick(buf, sizeof buf, v, step, vmax);
        cnn__aug_text(cv, x0 - 9 - cnn__aug_text_width(buf, 1), y - 3, buf, 1, text);
    }
    /* x grid, ticks and labels (whole epochs, 1-based) */
    step = epochs > 1 ? cnn__aug_nice_step((epochs - 1) / 8.0) : 1;
    if (step < 1) step = 1;
    for (double k = ceil((xlo > 1 ? xlo : 1) / step); k * step <= xhi; k++) { /* epochs start at 1 */
        int x = (int)floor(CNN__AUG_X(k * step) + 0.5);
        cnn__aug_fill(cv, x, y0, x + 1, y1, grid);
        cnn__aug_fill(cv, x, y1 + 1, x + 1, y1 + 6, black);
        snprintf(buf, sizeof buf, "%.0f", k * step);
        cnn__aug_text(cv, x - cnn__aug_text_width(buf, 1) / 2, y1 + 10, buf, 1, text);
    }
    cnn__aug_text(cv, (x0 + x1 - cnn__aug_text_width("epoch", 1)) / 2, y1 + 26, "epoch", 1, text);
    cnn__aug_text(cv, (x0 + x1 - cnn__aug_text_width(title, 2)) / 2, y0 - 28, title, 2, text);

    /* curves: segments between consecutive finite values, dots when few epochs */
    for (int s = 0; s < 2; s++) {
        const double *v = series[s];
        if (!v) continue;
        for (int e = 0; e < epochs; e++) {
            if (!cnn__aug_finite(v[e])) continue;
            double x = CNN__AUG_X(e + 1), y = CNN__AUG_Y(v[e]);
            if (e + 1 < epochs && cnn__aug_finite(v[e + 1]))
                cnn__aug_segment(cv, x, y, CNN__AUG_X(e + 2), CNN__AUG_Y(v[e + 1]), 1.0, colors[s]);
            if (epochs <= 40 || e == 0 || !cnn__aug_finite(v[e - 1]))
                cnn__aug_segment(cv, x, y, x, y, epochs <= 40 ? 2.5 : 1.5, colors[s]);
        }
    }
    /* the frame */
    cnn__aug_fill(cv, x0, y0, x1 + 1, y0 + 1, black);
    cnn__aug_fill(cv, x0, y1, x1 + 1, y1 + 1, black);
    cnn__aug_fill(cv, x0, y0, x0 + 1, y1 + 1, black);
    cnn__aug_fill(cv, x1, y0, x1 + 1, y1 + 1, black);

    /* legend in the corner that covers the fewest points (matplotlib's "best") */
    if (n_series) {
        int bw = 8 + 24 + 6 + cnn__aug_text_width(series[1] ? labels[1] : labels[0], 1) + 8;
        int bh = 8 + 14 * n_series, best = 0, best_count = INT_MAX, bx, by, row = 0;
        for (int corner = 0; corner < 4; corner++) { /* upper right, lower right, upper left, lower left */
            int cx = corner < 2 ? x1 - 8 - bw : x0 + 8, cy = corner % 2 ? y1 - 8 - bh : y0 + 8, count = 0;
            for (int s = 0; s < 2; s++)
                for (int e = 0; series[s] && e < epochs; e++)
                    if (cnn__aug_finite(series[s][e])) {
                        double x = CNN__AUG_X(e + 1), y = CNN__AUG_Y(series[s][e]);
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
#undef CNN__AUG_X
#undef CNN__AUG_Y
}

CNN__AUG_IMPL int cnn_history_plot_png(const cnn_history *h, const char *path) {
    enum { W = 1000, H = 400, PANEL = W / 2 };
    const double *loss[2], *acc[2];
    cnn__aug_canvas cv;
    int ok;
    if (!h) return cnn_set_error(CNN_ERR_ARG, "cnn_history_plot_png: the history is NULL");
    if (!path) return cnn_set_error(CNN_ERR_ARG, "cnn_history_plot_png: the path is NULL");
    if (h->epochs <= 0)
        return cnn_set_error(CNN_ERR_ARG, "cnn_history_plot_png: the history is empty (no epochs) ('%s')", path);
    loss[0] = cnn_history_get(h, "loss");
    loss[1] = cnn_history_get(h, "val_loss");
    acc[0] = cnn_history_get(h, "accuracy");
    acc[1] = cnn_history_get(h, "val_accuracy");
    if (!acc[0]) acc[0] = cnn_history_get(h, "acc"); /* older Keras names */
    if (!acc[1]) acc[1] = cnn_history_get(h, "val_acc");
    if (!loss[0] && !loss[1] && !acc[0] && !acc[1])
        return cnn_set_error(CNN_ERR_ARG, "cnn_history_plot_png: the history has no loss or accuracy values ('%s')",
                             path);
    cv.w = W;
    cv.h = H;
    cv.px = (unsigned char *)CNN_MALLOC((size_t)W * H * 3);
    if (!cv.px) return cnn_set_error(CNN_ERR_MEMORY, "cnn_history_plot_png: out of memory ('%s')", path);
    memset(cv.px, 255, (size_t)W * H * 3);
    cnn__aug_panel(&cv, 72, 44, PANEL - 16, H - 48, "loss", loss, h->epochs);
    cnn__aug_panel(&cv, PANEL + 72, 44, W - 16, H - 48, "accuracy", acc, h->epochs);
    errno = 0;
    ok = stbi_write_png(path, W, H, 3, cv.px, W * 3);
    CNN_FREE(cv.px);
    if (!ok)
        return cnn_set_error(CNN_ERR_IO, "cnn_history_plot_png: cannot write '%s': %s", path,
                             errno ? strerror(errno) : "out of memory or disk full");
    return CNN_OK;
}

/* ======================================================================== */
/* ImageDataGenerator (to come)                                             */
/* ======================================================================== */

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
