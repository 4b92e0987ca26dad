/* Reading the configuration: the file (a regular file, read to a bounded
 * size), then the YAML, whose shape is checked before libyaml builds it. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "config-internal.h"
#include "config.h"
#include "macro.h"

#define CONFIG_MAX_BYTES       (1024 * 1024)
/* The schema nests 7 deep at most (servers, a server, rules, a rule, exempt,
 * users, an entry); the caps bound libyaml's loader, see shape_ok(). */
#define CONFIG_MAX_DEPTH       32
#define CONFIG_MAX_ANCHORS     1000
#define CONFIG_MAX_ALIASES     10000

static void report_yaml_error(struct parser *p, const yaml_parser_t *yp) {
        struct source_pos pos = { (unsigned) yp->problem_mark.line + 1, (unsigned) yp->problem_mark.column + 1 };

        if (yp->error == YAML_MEMORY_ERROR) {
                fputs("out of memory\n", stderr);
                abort();
        }
        if (yp->context)
                config_report(p, true, pos, "YAML syntax: %s %s started at line %zu, column %zu",
                              yp->problem ? yp->problem : "error",
                              yp->context, yp->context_mark.line + 1, yp->context_mark.column + 1);
        else
                config_report(p, true, pos, "YAML syntax: %s", yp->problem ? yp->problem : "error");
}

/* libyaml's loader takes time that grows with the square of the nesting
 * depth (and of the number of anchors), and builds the whole document before
 * we see any of it. So a first pass over the parser's events, which costs
 * little and stops at the first excess, keeps every load short: a reload runs
 * on the event loop. Syntax errors are left to the loader, which reports the
 * same ones. */
static bool shape_ok(struct parser *p, const char *buf, size_t len) {
        yaml_parser_t yp;
        yaml_event_t ev;
        size_t depth = 0, anchors = 0, aliases = 0;
        bool ok = true, done = false;

        if (!yaml_parser_initialize(&yp)) {
                fputs("out of memory\n", stderr);
                abort();
        }
        yaml_parser_set_input_string(&yp, (const unsigned char *) buf, len);
        while (ok && !done && yaml_parser_parse(&yp, &ev)) {
                struct source_pos pos = { (unsigned) ev.start_mark.line + 1, (unsigned) ev.start_mark.column + 1 };
                const yaml_char_t *anchor = NULL;

                switch (ev.type) {
                case YAML_SEQUENCE_START_EVENT:
                case YAML_MAPPING_START_EVENT:
                        anchor = ev.type == YAML_SEQUENCE_START_EVENT ? ev.data.sequence_start.anchor :
                                                                        ev.data.mapping_start.anchor;
                        if (++depth > CONFIG_MAX_DEPTH) {
                                config_report(p, true, pos, "lists and mappings are nested more than %d deep here; "
                                              "stopped reading", CONFIG_MAX_DEPTH);
                                ok = false;
                        }
                        break;
                case YAML_SEQUENCE_END_EVENT:
                case YAML_MAPPING_END_EVENT:
                        depth--;
                        break;
                case YAML_SCALAR_EVENT:
                        anchor = ev.data.scalar.anchor;
                        break;
                case YAML_ALIAS_EVENT:
                        if (++aliases > CONFIG_MAX_ALIASES) {
                                config_report(p, true, pos, "more than %d aliases; stopped reading",
                                              CONFIG_MAX_ALIASES);
                                ok = false;
                        }
                        break;
                case YAML_STREAM_END_EVENT:
                        done = true;
                        break;
                default:
                        break;
                }
                if (anchor && ++anchors > CONFIG_MAX_ANCHORS) {
                        config_report(p, true, pos, "more than %d anchors; stopped reading", CONFIG_MAX_ANCHORS);
                        ok = false;
                }
                yaml_event_delete(&ev);
        }
        if (yp.error == YAML_MEMORY_ERROR) {
                fputs("out of memory\n", stderr);
                abort();
        }
        yaml_parser_delete(&yp);
        return ok;
}

int config_load_buffer(const char *name, const char *buf, size_t len, struct config **ret, struct diagnostics *diag) {
        struct parser p = { .file = name, .diag = diag };
        yaml_parser_t yp;
        struct config *c = NULL;
        yaml_node_t *root;
        int r = -EINVAL;

        *ret = NULL;
        if (!shape_ok(&p, buf, len)) {
                config_flush_diagnostics(&p);
                return -EINVAL;
        }
        if (!yaml_parser_initialize(&yp)) {
                fputs("out of memory\n", stderr);
                abort();
        }
        yaml_parser_set_input_string(&yp, (const unsigned char *) buf, len);
        if (!yaml_parser_load(&yp, &p.doc)) {
                report_yaml_error(&p, &yp);
                yaml_parser_delete(&yp);
                config_flush_diagnostics(&p);
                return -EINVAL;
        }

        root = yaml_document_get_root_node(&p.doc);
        if (!root) {
                config_report(&p, true, (struct source_pos) { 1, 1 },
                              "the file is empty; it needs at least \"servers\"");
                goto out;
        }
        {
                yaml_document_t next;
                if (yaml_parser_load(&yp, &next)) {
                        yaml_node_t *extra = yaml_document_get_root_node(&next);
                        if (extra)
                                config_report(&p, true, pos_of(extra), "only one YAML document is allowed");
                        yaml_document_delete(&next);
                } else
                        report_yaml_error(&p, &yp);
        }

        p.unknown_key_reported = xcalloc((size_t) (p.doc.nodes.top - p.doc.nodes.start), 1);
        c = xcalloc(1, sizeof(*c));
        config_walk(&p, root, c);
        /* warnings about a half-read file would only confuse */
        if (!p.failed)
                config_cross_checks(&p, c, root);
out:
        if (p.failed || !c)
                goto fail;
        c->path = xstrdup(name);
        *ret = TAKE_PTR(c);
        r = 0;
fail:
        config_free(c);
        free(p.unknown_key_reported);
        yaml_document_delete(&p.doc);
        yaml_parser_delete(&yp);
        config_flush_diagnostics(&p);
        return r;
}

static const char *file_type(mode_t mode) {
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
static int read_bounded(int fd, size_t max, char **ret, size_t *ret_len) {
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

int config_load(const char *path, struct config **ret, struct diagnostics *diag) {
        struct parser p = { .file = path, .diag = diag };
        _cleanup_free_ char *buf = NULL;
        struct stat st;
        size_t len = 0;
        int fd, r;

        *ret = NULL;
        /* O_NONBLOCK: opening a FIFO without a writer would wait forever */
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0) {
                r = -errno;
                config_report(&p, true, (struct source_pos) { 0, 0 }, "cannot open: %s", strerror(-r));
                config_flush_diagnostics(&p);
                return r;
        }
        if (fstat(fd, &st) < 0) {
                r = -errno;
                config_report(&p, true, (struct source_pos) { 0, 0 }, "cannot stat: %s", strerror(-r));
        } else if (!S_ISREG(st.st_mode)) {
                r = -EINVAL;
                config_report(&p, true, (struct source_pos) { 0, 0 }, "is %s; the configuration must be a regular file",
                              file_type(st.st_mode));
        } else if ((r = read_bounded(fd, CONFIG_MAX_BYTES, &buf, &len)) < 0)
                config_report(&p, true, (struct source_pos) { 0, 0 }, "cannot read: %s", strerror(-r));
        else if (len > CONFIG_MAX_BYTES) {
                r = -EINVAL;
                config_report(&p, true, (struct source_pos) { 0, 0 }, "the file is larger than %d bytes (1 MiB), "
                              "the most a configuration may have", CONFIG_MAX_BYTES);
        }
        close(fd);
        if (r < 0) {
                config_flush_diagnostics(&p);
                return r;
        }
        return config_load_buffer(path, buf, len, ret, diag);
}
