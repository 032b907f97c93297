/* fuzz.h - what the fuzz targets in tests/fuzz share.

   Each target is one C file defining LLVMFuzzerTestOneInput (libFuzzer's entry
   point) over one of the library's readers of outside data. Built two ways:
     - with clang -fsanitize=fuzzer,address,undefined by `make fuzz` (tests/fuzz/run.sh),
       which mutates the seed corpus for FUZZ_SECONDS per target;
     - with any compiler, without libFuzzer: alone with -DFUZZ_REPLAY (main() below
       feeds every file of the corpus folders, seeds and the inputs of fixed
       crashes, to the target once), or all in one program, replay.c, which make
       test builds once under ASan/UBSan.
   Readers that take a path get the input written to a file in a private
   temporary folder, removed at exit. */
#ifndef CNN_FUZZ_H
#define CNN_FUZZ_H
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The library's limit for sizes read from files (cnn_set_memory_limit), lowered
   from its 4 GiB default so that what it lets through stays under libFuzzer's
   1 GB allocation limit and that each input takes well under a second under the
   sanitizers (262,144 pixels at most: images take up to 16 bytes a pixel).
   Each target calls it first. */
#define FUZZ_SETUP() cnn_set_memory_limit(4ull << 20)

/* the private temporary folder (made on first use) and a path inside it */
static char fuzz_tmp[512];
static inline void fuzz_rm_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *e;
        char sub[1024];
        while (d && (e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            snprintf(sub, sizeof sub, "%.760s/%.255s", path, e->d_name);
            fuzz_rm_tree(sub);
        }
        if (d) closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}
static inline void fuzz_cleanup(void) {
    if (fuzz_tmp[0]) fuzz_rm_tree(fuzz_tmp);
}
static inline const char *fuzz_path(const char *name, char *out, size_t cap) {
    if (!fuzz_tmp[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(fuzz_tmp, sizeof fuzz_tmp, "%s/cnn-fuzz-XXXXXX", t && *t ? t : "/tmp");
        if (!mkdtemp(fuzz_tmp)) { perror("fuzz: mkdtemp"); abort(); }
        atexit(fuzz_cleanup);
    }
    snprintf(out, cap, "%s/%s", fuzz_tmp, name);
    return out;
}
/* write n bytes to the file at path (its folder made first); aborts on failure,
   which is the harness's, not the library's */
static inline void fuzz_write(const char *path, const void *data, size_t n) {
    char dir[1024];
    char *slash;
    FILE *f;
    snprintf(dir, sizeof dir, "%s", path);
    for (slash = strchr(dir + 1, '/'); slash; slash = strchr(slash + 1, '/')) {
        *slash = 0;
        mkdir(dir, 0700);
        *slash = '/';
    }
    f = fopen(path, "wb");
    if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f)) { perror(path); abort(); }
}

#if defined(FUZZ_REPLAY) || defined(FUZZ_REPLAY_ALL)
/* replay: every regular file named in args, or found in a folder named there,
   once through entry; prints "PASS fuzz replay NAME: N inputs" */
static int fuzz_replay_file(int (*entry)(const uint8_t *, size_t), const char *path) {
    FILE *f = fopen(path, "rb");
    long n;
    uint8_t *buf;
    if (!f) { perror(path); return 0; }
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = (uint8_t *)malloc(n > 0 ? (size_t)n : 1);
    if (!buf || (n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n)) { perror(path); abort(); }
    fclose(f);
    entry(buf, (size_t)n);
    free(buf);
    return 1;
}
static inline int fuzz_replay(int (*entry)(const uint8_t *, size_t), const char *name, int nargs, char **args) {
    int count = 0;
    for (int i = 0; i < nargs; i++) {
        struct stat st;
        if (stat(args[i], &st) != 0) { perror(args[i]); return 2; }
        if (S_ISDIR(st.st_mode)) {
            struct dirent **names;
            int n = scandir(args[i], &names, NULL, alphasort);
            for (int k = 0; k < n; k++) {
                char p[2048];
                struct stat fs;
                snprintf(p, sizeof p, "%s/%s", args[i], names[k]->d_name);
                if (stat(p, &fs) == 0 && S_ISREG(fs.st_mode)) count += fuzz_replay_file(entry, p);
                free(names[k]);
            }
            if (n >= 0) free(names);
        } else {
            count += fuzz_replay_file(entry, args[i]);
        }
    }
    printf("PASS fuzz replay %s: %d inputs\n", name, count);
    return 0;
}
#endif
#ifdef FUZZ_REPLAY
int main(int argc, char **argv) { return fuzz_replay(LLVMFuzzerTestOneInput, FUZZ_NAME, argc - 1, argv + 1); }
#endif
#endif
