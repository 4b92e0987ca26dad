/* The messages of one load: kept once per text, sorted by position. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config-internal.h"
#include "escape.h"
#include "macro.h"

static uint32_t text_hash(const char *s) {
        uint32_t h = 2166136261u;
        for (; *s; s++)
                h = (h ^ (uint8_t) *s) * 16777619u;
        return h;
}

/* Keep line unless the same text was already reported. Takes ownership. */
static void add_pending(struct parser *p, bool error, struct source_pos pos, char *line) {
        uint32_t slot = text_hash(line) & (DIAG_SLOTS - 1);

        for (; p->slots[slot]; slot = (slot + 1) & (DIAG_SLOTS - 1))
                if (strcmp(p->pending[p->slots[slot] - 1].text, line) == 0) {
                        free(line);
                        return;
                }
        if (p->n_pending >= CONFIG_MAX_DIAGNOSTICS) {
                p->truncated = true;
                free(line);
                return;
        }
        p->pending = xreallocarray(p->pending, p->n_pending + 1, sizeof(*p->pending));
        p->pending[p->n_pending] = (struct pending) {
                .line = pos.line, .column = pos.column, .seq = (unsigned) p->n_pending,
                .error = error, .text = line,
        };
        p->slots[slot] = (uint32_t) ++p->n_pending;
}

/* Every line is escaped here, once (escape.h): the file's name and the
 * names, keys and values the message quotes from it can hold any byte, and
 * whoever prints a line (--check, a reload's log, the tests) prints it as it
 * is. */
void config_report(struct parser *p, bool error, struct source_pos pos, const char *fmt, ...) {
        _cleanup_free_ char *msg = NULL, *file = escape_string(p->file), *text = NULL;
        va_list ap;
        char *line;

        va_start(ap, fmt);
        msg = xvasprintf(fmt, ap);
        va_end(ap);
        text = escape_string(msg);
        if ((pos.line > 0 ? asprintf(&line, "%s:%u:%u: %s: %s", file, pos.line, pos.column,
                                     error ? "error" : "warning", text)
                          : asprintf(&line, "%s: %s: %s", file, error ? "error" : "warning", text)) < 0) {
                fputs("out of memory\n", stderr);
                abort();
        }
        p->failed = p->failed || error;
        add_pending(p, error, pos, line);
}

static int pending_cmp(const void *a, const void *b) {
        const struct pending *x = a, *y = b;
        if (x->line != y->line)
                return x->line < y->line ? -1 : 1;
        if (x->column != y->column)
                return x->column < y->column ? -1 : 1;
        return x->seq < y->seq ? -1 : x->seq > y->seq;
}

void config_flush_diagnostics(struct parser *p) {
        struct diagnostics *d = p->diag;

        if (p->n_pending > 1)
                qsort(p->pending, p->n_pending, sizeof(*p->pending), pending_cmp);
        d->lines = xreallocarray(d->lines, d->n_lines + p->n_pending + 1, sizeof(char *));
        for (size_t i = 0; i < p->n_pending; i++) {
                d->lines[d->n_lines++] = p->pending[i].text;
                if (p->pending[i].error)
                        d->n_errors++;
                else
                        d->n_warnings++;
        }
        for (size_t i = 0; i < p->n_pending; i++)
                if (p->pending[i].error || p->truncated) {
                        char *file = xstrdup(p->file);
                        bool seen = false;

                        for (size_t k = 0; k < d->n_error_files && !seen; k++)
                                seen = strcmp(d->error_files[k], file) == 0;
                        if (seen) {
                                free(file);
                                break;
                        }
                        d->error_files = xreallocarray(d->error_files, d->n_error_files + 1, sizeof(char *));
                        d->error_files[d->n_error_files++] = file;
                        break;
                }
        if (p->truncated) {
                _cleanup_free_ char *file = escape_string(p->file);
                if (asprintf(&d->lines[d->n_lines], "%s: note: stopped reporting after %d problems", file,
                             CONFIG_MAX_DIAGNOSTICS) >= 0)
                        d->n_lines++;
        }
        free(p->pending);
        p->pending = NULL;
        p->n_pending = 0;
}

void diagnostics_clear(struct diagnostics *d) {
        for (size_t i = 0; i < d->n_lines; i++)
                free(d->lines[i]);
        free(d->lines);
        for (size_t i = 0; i < d->n_error_files; i++)
                free(d->error_files[i]);
        free(d->error_files);
        *d = (struct diagnostics) {};
}
