/* Feed files (or every file of directories) to the fuzz target once each, so
 * plain test runs, under ASan/UBSan in CI, replay the corpus without libFuzzer. */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "macro.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path) {
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        _cleanup_free_ char *buf = NULL;
        size_t len = 0, cap = 0, n;

        if (!f) {
                fprintf(stderr, "%s: %s\n", path, strerror(errno));
                return -errno;
        }
        do {
                if (len == cap) {
                        cap = cap ? cap * 2 : 4096;
                        buf = xreallocarray(buf, cap, 1);
                }
                n = fread(buf + len, 1, cap - len, f);
                len += n;
        } while (n > 0);
        LLVMFuzzerTestOneInput((const uint8_t *) buf, len);
        return 0;
}

static int cmp(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

static int replay(const char *path, size_t *count) {
        struct stat st;
        struct dirent *de;
        char **names = NULL;
        size_t n = 0;
        int r = 0;
        DIR *d;

        if (stat(path, &st) < 0) {
                fprintf(stderr, "%s: %s\n", path, strerror(errno));
                return -errno;
        }
        if (!S_ISDIR(st.st_mode)) {
                (*count)++;
                return replay_file(path);
        }
        d = opendir(path);
        if (!d)
                return -errno;
        while ((de = readdir(d)))
                if (de->d_name[0] != '.') {
                        names = xreallocarray(names, n + 1, sizeof(char *));
                        if (asprintf(&names[n++], "%s/%s", path, de->d_name) < 0)
                                abort();
                }
        closedir(d);
        qsort(names, n, sizeof(char *), cmp);
        for (size_t i = 0; i < n; i++) {
                if (r == 0)
                        r = replay(names[i], count);
                free(names[i]);
        }
        free(names);
        return r;
}

int main(int argc, char **argv) {
        size_t count = 0;

        for (int i = 1; i < argc; i++)
                if (replay(argv[i], &count) < 0)
                        return EXIT_FAILURE;
        printf("replayed %zu inputs\n", count);
        return count > 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
