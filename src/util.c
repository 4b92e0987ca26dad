#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "macro.h"

static void oom(void) {
        fputs("pgsweeper: out of memory\n", stderr);
        abort();
}

void *xmalloc(size_t n) {
        void *p = malloc(n ? n : 1);
        if (!p)
                oom();
        return p;
}

void *xcalloc(size_t n, size_t size) {
        void *p = calloc(n ? n : 1, size ? size : 1);
        if (!p)
                oom();
        return p;
}

void *xreallocarray(void *p, size_t n, size_t size) {
        void *q = reallocarray(p, n ? n : 1, size ? size : 1);
        if (!q)
                oom();
        return q;
}

char *xstrdup(const char *s) {
        char *p = strdup(s);
        if (!p)
                oom();
        return p;
}

char *xvasprintf(const char *fmt, va_list ap) {
        char *p;

        if (vasprintf(&p, fmt, ap) < 0)
                oom();
        return p;
}

char *xasprintf(const char *fmt, ...) {
        va_list ap;
        char *p;

        va_start(ap, fmt);
        p = xvasprintf(fmt, ap);
        va_end(ap);
        return p;
}

void closep(int *fd) {
        if (*fd >= 0)
                close(*fd);
}

const char *file_type(mode_t mode) {
        if (S_ISDIR(mode))
                return "a directory";
        if (S_ISFIFO(mode))
                return "a FIFO";
        if (S_ISCHR(mode))
                return "a character device";
        if (S_ISBLK(mode))
                return "a block device";
        if (S_ISSOCK(mode))
                return "a socket";
        return "not a regular file";
}

/* Read to EOF, not to st_size: files in /proc say 0. At most max + 1 bytes,
 * so a file over the cap is seen as such. */
int read_bounded(int fd, size_t max, char **ret, size_t *ret_len) {
        _cleanup_free_ char *buf = NULL;
        size_t len = 0, size = 0;

        for (;;) {
                ssize_t n;

                if (len == size) {
                        if (size > max)
                                break;
                        size = size ? size * 2 : 64 * 1024;
                        if (size > max + 1)
                                size = max + 1;
                        buf = xreallocarray(buf, size + 1, 1);
                }
                n = read(fd, buf + len, size - len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                if (n == 0)
                        break;
                len += (size_t) n;
        }
        buf[len] = '\0';  /* the first pass through the loop allocated it */
        *ret = TAKE_PTR(buf);
        *ret_len = len;
        return 0;
}
