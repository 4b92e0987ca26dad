/* Small helpers shared by every module. */
#pragma once

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _unused_ __attribute__((unused))
#define _fallthrough_ __attribute__((fallthrough))

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

static inline void freep(void *p) {
        free(*(void **) p);
}
#define _cleanup_free_ _cleanup_(freep)

static inline void fclosep(FILE **f) {
        if (*f)
                fclose(*f);
}
#define _cleanup_fclose_ _cleanup_(fclosep)

/* The names of an enum's values, after systemd's DEFINE_STRING_TABLE_LOOKUP,
 * one fallback for all: NAME_to_string(v) is the name, "?" for a value the
 * table does not name (never NULL, so always printable); NAME_from_string(s)
 * is the value, or -EINVAL for NULL or a name not in the table. */
#define DEFINE_STRING_TABLE_TO_STRING(name, type, table)                                \
        const char *name##_to_string(type v) {                                          \
                return (size_t) v < ELEMENTSOF(table) && table[v] ? table[v] : "?";     \
        }
#define DEFINE_STRING_TABLE_FROM_STRING(name, table)                                    \
        int name##_from_string(const char *s) {                                         \
                for (size_t i = 0; s && i < ELEMENTSOF(table); i++)                     \
                        if (table[i] && strcmp(table[i], s) == 0)                       \
                                return (int) i;                                         \
                return -EINVAL;                                                         \
        }
#define DEFINE_STRING_TABLE_LOOKUP(name, type, table)                                   \
        DEFINE_STRING_TABLE_TO_STRING(name, type, table)                                \
        DEFINE_STRING_TABLE_FROM_STRING(name, table)

/* Hand ownership out of a _cleanup_ variable. */
#define TAKE_PTR(p)                             \
        ({                                      \
                __typeof__(p) _p = (p);         \
                (p) = NULL;                     \
                _p;                             \
        })

/* Allocation failure is not recoverable for a daemon this small: say so and exit. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xreallocarray(void *p, size_t n, size_t size);
char *xstrdup(const char *s);
char *xasprintf(const char *fmt, ...) _printf_(1, 2);
char *xvasprintf(const char *fmt, va_list ap) _printf_(1, 0);

/* Close *fd unless negative (util.c: macro.h leaves unistd.h out, whose dup()
 * and the like would clash with local names). */
void closep(int *fd);
#define _cleanup_close_ _cleanup_(closep)

/* What a file that is not a regular one is ("a directory", "a FIFO", ...),
 * for "is a FIFO; ... must be a regular file". */
const char *file_type(mode_t mode);
/* Read fd to EOF (not to st_size: files in /proc say 0), at most max + 1
 * bytes, so that a file over the cap is seen as such: *ret_len > max. The
 * buffer is NUL-terminated. 0 or a negative errno. */
int read_bounded(int fd, size_t max, char **ret, size_t *ret_len);
