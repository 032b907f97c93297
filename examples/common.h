/* common.h - the few command-line helpers the examples share.

   Nothing here is about neural networks: it only turns argv into checked
   values. Every error is ONE line on stderr, "program: what went wrong", and
   the exit status says whose fault it was:
     2  the command line (unknown option, missing or malformed value)
     1  everything else (a file that is missing or not what we expected)

   Options are written "--name VALUE" or "--name=VALUE". The helpers are
   "static inline" only so that a program using some of them gets no
   unused-function warning for the others. */
#ifndef EXAMPLES_COMMON_H
#define EXAMPLES_COMMON_H

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXIT_USAGE 2 /* EXIT_FAILURE (1) is used for every other error */

#if defined(__GNUC__) || defined(__clang__)
#define EX_NORETURN __attribute__((noreturn))
#define EX_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define EX_NORETURN
#define EX_PRINTF(a, b)
#endif

static const char *prog_name = "example"; /* set by main, starts every error */

/* Print "prog_name: message" as a single line and exit with `status`.
   Newlines inside the message (from a library error, say) become spaces. */
static inline EX_NORETURN EX_PRINTF(2, 3) void fail(int status, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    for (char *p = msg; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    fprintf(stderr, "%s: %s\n", prog_name, msg);
    exit(status);
}

/* If argv[*i] is option `name`, return its value ("--name V" consumes the next
   argument, "--name=V" does not); otherwise return NULL. */
static inline const char *arg_value(int argc, char **argv, int *i, const char *name) {
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0) return NULL;
    if (argv[*i][n] == '=') return argv[*i] + n + 1;
    if (argv[*i][n] != '\0') return NULL; /* e.g. "--datax" is not "--data" */
    if (*i + 1 >= argc) fail(EXIT_USAGE, "option %s needs a value (see --help)", name);
    return argv[++*i];
}

/* An integer in [lo, hi], or a usage error naming the option. */
static inline long arg_int(const char *opt, const char *s, long lo, long hi) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end != '\0' || errno == ERANGE)
        fail(EXIT_USAGE, "%s expects an integer, got '%s'", opt, s);
    if (v < lo || v > hi) fail(EXIT_USAGE, "%s must be between %ld and %ld, got %ld", opt, lo, hi, v);
    return v;
}

/* A non-negative 64-bit integer (seeds). */
static inline uint64_t arg_u64(const char *opt, const char *s) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || *end != '\0' || errno == ERANGE || strchr(s, '-'))
        fail(EXIT_USAGE, "%s expects a non-negative integer, got '%s'", opt, s);
    return (uint64_t)v;
}

/* A number in [lo, hi] (written so that NaN is rejected too). */
static inline double arg_float(const char *opt, const char *s, double lo, double hi) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || errno == ERANGE)
        fail(EXIT_USAGE, "%s expects a number, got '%s'", opt, s);
    if (!(v >= lo && v <= hi)) fail(EXIT_USAGE, "%s must be between %g and %g, got '%s'", opt, lo, hi, s);
    return v;
}

/* Fail now, not after an hour of training, when `path` cannot be written.
   A file that did not exist before is removed again. */
static inline void check_writable(const char *opt, const char *path) {
    FILE *f = fopen(path, "rb");
    int existed = f != NULL;
    if (f) fclose(f);
    f = fopen(path, "ab");
    if (!f) fail(EXIT_FAILURE, "%s: cannot write %s: %s", opt, path, strerror(errno));
    fclose(f);
    if (!existed) remove(path);
}

/* The display name of class k: the model's own name, else the dataset's, else
   "class k". `buf` holds the fallback text. */
static inline const char *class_label(const cnn_model *m, const cnn_dataset *d, int k, char *buf, size_t size) {
    const char *name = m ? cnn_model_class_name(m, k) : NULL;
    if (!name && d && d->class_names && k < d->num_classes) name = d->class_names[k];
    if (!name) {
        snprintf(buf, size, "class %d", k);
        name = buf;
    }
    return name;
}

/* Is this a NumPy archive (np.savez: a .npz file of named arrays)? */
static inline int is_npz(const char *path) {
    size_t n = strlen(path);
    return n >= 4 && !strcmp(path + n - 4, ".npz");
}

#endif /* EXAMPLES_COMMON_H */
