/* Reading the configuration: the file (a regular file, read to a bounded
 * size), then the YAML, whose shape is checked before libyaml builds it. */
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <libgen.h>
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
/* A fleet: files "include" may match, and servers in all of them. */
#define CONFIG_MAX_INCLUDED    10000
#define CONFIG_MAX_SERVERS_TOTAL 10000

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

/* Parse buf into p->doc: its shape first, then libyaml's loader; one
 * document. Returns its root, or NULL (reported). */
static yaml_node_t *load_document(struct parser *p, const char *buf, size_t len) {
        yaml_parser_t yp;
        yaml_node_t *root;

        if (!shape_ok(p, buf, len))
                return NULL;
        if (!yaml_parser_initialize(&yp)) {
                fputs("out of memory\n", stderr);
                abort();
        }
        yaml_parser_set_input_string(&yp, (const unsigned char *) buf, len);
        if (!yaml_parser_load(&yp, &p->doc)) {
                report_yaml_error(p, &yp);
                yaml_parser_delete(&yp);
                return NULL;
        }
        p->doc_loaded = true;
        root = yaml_document_get_root_node(&p->doc);
        if (!root)
                config_report(p, true, (struct source_pos) { 1, 1 },
                              p->included ? "the file is empty; an included file needs \"servers\""
                                          : "the file is empty; it needs at least \"servers\"");
        else {
                yaml_document_t next;
                if (yaml_parser_load(&yp, &next)) {
                        yaml_node_t *extra = yaml_document_get_root_node(&next);
                        if (extra)
                                config_report(p, true, pos_of(extra), "only one YAML document is allowed");
                        yaml_document_delete(&next);
                } else
                        report_yaml_error(p, &yp);
        }
        yaml_parser_delete(&yp);
        if (root)
                p->unknown_key_reported = xcalloc((size_t) (p->doc.nodes.top - p->doc.nodes.start), 1);
        return root;
}

static void parser_free(struct parser *p) {
        free(p->unknown_key_reported);
        p->unknown_key_reported = NULL;
        if (p->doc_loaded)
                yaml_document_delete(&p->doc);
        p->doc_loaded = false;
        config_parser_done(p);
}

/* A configuration file (the main one or an included one) into *ret: a
 * regular file, at most CONFIG_MAX_BYTES, opened so that a FIFO cannot
 * make it wait. Problems are reported on p. */
static int read_file(struct parser *p, const char *path, char **ret, size_t *ret_len) {
        _cleanup_free_ char *buf = NULL;
        struct stat st;
        size_t len = 0;
        int fd, r;

        /* O_NONBLOCK: opening a FIFO without a writer would wait forever */
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0) {
                r = -errno;
                config_report(p, true, (struct source_pos) { 0, 0 }, "cannot open: %s", strerror(-r));
                return r;
        }
        if (fstat(fd, &st) < 0) {
                r = -errno;
                config_report(p, true, (struct source_pos) { 0, 0 }, "cannot stat: %s", strerror(-r));
        } else if (!S_ISREG(st.st_mode)) {
                r = -EINVAL;
                config_report(p, true, (struct source_pos) { 0, 0 }, "is %s; %s must be a regular file",
                              file_type(st.st_mode), p->included ? "an included file" : "the configuration");
        } else if ((r = read_bounded(fd, CONFIG_MAX_BYTES, &buf, &len)) < 0)
                config_report(p, true, (struct source_pos) { 0, 0 }, "cannot read: %s", strerror(-r));
        else if (len > CONFIG_MAX_BYTES) {
                r = -EINVAL;
                config_report(p, true, (struct source_pos) { 0, 0 }, "the file is larger than %d bytes (1 MiB), "
                              "the most a configuration may have", CONFIG_MAX_BYTES);
        }
        close(fd);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(buf);
        *ret_len = len;
        return 0;
}

/* The main file's directory as the start of a glob: its own "*", "?", "["
 * and backslash stand for themselves (/etc/pgsweeper[1]/ is a directory, not a
 * pattern). */
static char *glob_escape(const char *s) {
        char *out = xmalloc(2 * strlen(s) + 1), *o = out;

        for (; *s; s++) {
                if (strchr("*?[\\", *s))
                        *o++ = '\\';
                *o++ = *s;
        }
        *o = '\0';
        return out;
}

/* glob() skips a directory it cannot read unless told: one that does not
 * exist is a glob that matches nothing, any other error stops the glob. */
static int glob_error(const char *path, int error) {
        (void) path;
        return error != ENOENT && error != ENOTDIR;
}

/* The files "include" names: each glob relative to the main file's
 * directory (unless absolute), matched in sorted order, each file once
 * (however it is spelled: the same device and inode is the same file). */
struct match {
        char *path;
        dev_t dev;
        ino_t ino;
        bool known;                 /* stat() said dev and ino */
        size_t seq;                 /* order of matching */
        bool dup;
};

static int match_cmp(const void *a, const void *b) {
        const struct match *x = a, *y = b;

        if (x->known != y->known)
                return x->known ? -1 : 1;
        if (x->known && (x->dev != y->dev || x->ino != y->ino))
                return x->dev != y->dev ? (x->dev < y->dev ? -1 : 1) : (x->ino < y->ino ? -1 : 1);
        if (!x->known) {
                int c = strcmp(x->path, y->path);
                if (c)
                        return c;
        }
        return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int seq_cmp(const void *a, const void *b) {
        const struct match *x = a, *y = b;
        return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* The files "include" names: each glob relative to the main file's
 * directory (unless absolute; the directory's own glob characters
 * escaped), its matches in sorted order, the globs in the order written;
 * each file once (by device and inode: another spelling or a symlink is
 * the same file), the main file never. Sorting, not comparing every pair:
 * a fleet of n files costs n log n. */
static size_t include_paths(struct parser *main, const struct config *c, char ***ret) {
        _cleanup_free_ char *copy = xstrdup(main->file), *dir = NULL;
        struct match *m = NULL;
        struct stat self;
        bool self_known = stat(main->file, &self) == 0, over = false;
        char **paths = NULL;
        size_t n = 0, kept = 0;

        dir = glob_escape(dirname(copy));
        for (size_t i = 0; i < c->n_includes && !over; i++) {
                _cleanup_free_ char *pattern = c->includes[i][0] == '/' || strcmp(dir, ".") == 0 ?
                                                       xstrdup(c->includes[i]) :
                                                       xasprintf("%s/%s", dir, c->includes[i]);
                glob_t g = {};
                int r = glob(pattern, 0, glob_error, &g);

                if (r == GLOB_NOSPACE) {
                        fputs("out of memory\n", stderr);
                        abort();
                }
                if (r == GLOB_ABORTED)
                        config_report(main, true, (struct source_pos) { 0, 0 },
                                      "include \"%s\": a directory on the way cannot be read", c->includes[i]);
                for (size_t k = 0; r == 0 && k < g.gl_pathc; k++) {
                        struct stat st;
                        bool known = stat(g.gl_pathv[k], &st) == 0;

                        if (known && self_known && st.st_dev == self.st_dev && st.st_ino == self.st_ino)
                                continue;   /* "*.yaml" next to the main file: not itself */
                        if (n >= 4 * (size_t) CONFIG_MAX_INCLUDED) {
                                over = true;
                                break;
                        }
                        m = xreallocarray(m, n + 1, sizeof(*m));
                        m[n] = (struct match) { xstrdup(g.gl_pathv[k]), known ? st.st_dev : 0, known ? st.st_ino : 0,
                                                known, n, false };
                        n++;
                }
                globfree(&g);
        }
        if (n > 1) {
                qsort(m, n, sizeof(*m), match_cmp);
                for (size_t i = 1; i < n; i++)
                        m[i].dup = m[i].known && m[i - 1].known ? m[i].dev == m[i - 1].dev && m[i].ino == m[i - 1].ino
                                                                : !m[i].known && !m[i - 1].known &&
                                                                          strcmp(m[i].path, m[i - 1].path) == 0;
                qsort(m, n, sizeof(*m), seq_cmp);
        }
        for (size_t i = 0; i < n; i++) {
                if (m[i].dup || over || kept >= CONFIG_MAX_INCLUDED) {
                        if (!m[i].dup && !over && kept == CONFIG_MAX_INCLUDED)
                                over = true;
                        free(m[i].path);
                        continue;
                }
                paths = xreallocarray(paths, kept + 1, sizeof(char *));
                paths[kept++] = m[i].path;
        }
        if (over)
                config_report(main, true, (struct source_pos) { 0, 0 }, "\"include\" matches more than %d files",
                              CONFIG_MAX_INCLUDED);
        free(m);
        *ret = paths;
        return kept;
}

/* One included file: its servers appended to c, their rule sets resolved
 * from the main file's. Its problems go to diag. Returns false on error. */
static bool load_included(struct parser *main, struct config *c, const char *path, struct diagnostics *diag,
                          struct name_index *names) {
        struct parser p = { .file = path, .diag = diag, .included = true };
        _cleanup_free_ char *buf = NULL;
        struct config part = {};
        yaml_node_t *root;
        size_t len = 0, from = c->n_servers;
        bool ok;

        if (read_file(&p, path, &buf, &len) >= 0 && (root = load_document(&p, buf, len))) {
                config_walk(&p, root, &part);
                if (c->n_servers + part.n_servers > CONFIG_MAX_SERVERS_TOTAL)
                        config_report(&p, true, pos_of(root), "more than %d servers in all the files",
                                      CONFIG_MAX_SERVERS_TOTAL);
                else if (part.n_servers > 0) {
                        c->servers = xreallocarray(c->servers, c->n_servers + part.n_servers, sizeof(*c->servers));
                        memcpy(c->servers + c->n_servers, part.servers, part.n_servers * sizeof(*c->servers));
                        for (size_t i = 0; i < part.n_servers; i++)
                                c->servers[c->n_servers + i].file = xstrdup(path);
                        c->n_servers += part.n_servers;
                        free(part.servers);
                        part.servers = NULL;
                        part.n_servers = 0;
                        config_resolve_sets(&p, c, from);
                        config_check_server_names(&p, c, from, names);
                }
        }
        ok = !p.failed;
        part.path = NULL;
        config_free_parts(&part);
        parser_free(&p);
        config_flush_diagnostics(&p);
        return ok;
}

static void diagnostics_append(struct diagnostics *to, struct diagnostics *from) {
        /* memcpy() from NULL is undefined even for 0 bytes: an empty part has NULL arrays */
        if (from->n_lines > 0) {
                to->lines = xreallocarray(to->lines, to->n_lines + from->n_lines + 1, sizeof(char *));
                memcpy(to->lines + to->n_lines, from->lines, from->n_lines * sizeof(char *));
                to->n_lines += from->n_lines;
        }
        to->n_errors += from->n_errors;
        to->n_warnings += from->n_warnings;
        if (from->n_error_files > 0) {
                to->error_files = xreallocarray(to->error_files, to->n_error_files + from->n_error_files + 1,
                                                sizeof(char *));
                memcpy(to->error_files + to->n_error_files, from->error_files, from->n_error_files * sizeof(char *));
                to->n_error_files += from->n_error_files;
        }
        free(from->lines);
        free(from->error_files);
        *from = (struct diagnostics) {};
}

/* The main file's text: walked, its servers' rule sets resolved, then
 * (follow) every included file; a problem anywhere fails the whole load. */
static int load_config(const char *name, const char *buf, size_t len, bool follow, struct config **ret,
                       struct diagnostics *diag) {
        struct parser p = { .file = name, .diag = diag };
        struct diagnostics included = {};
        struct config *c = NULL;
        yaml_node_t *root;
        bool failed = false;
        int r = -EINVAL;

        *ret = NULL;
        root = load_document(&p, buf, len);
        if (root) {
                c = xcalloc(1, sizeof(*c));
                c->path = xstrdup(name);
                config_walk(&p, root, c);
                config_resolve_sets(&p, c, 0);
                if (follow && c->n_includes > 0) {
                        _cleanup_free_ char **paths = NULL;
                        size_t n = include_paths(&p, c, &paths);

                        struct name_index names = {};

                        config_check_server_names(&p, c, c->n_servers, &names);   /* the main file's */
                        for (size_t i = 0; i < n; i++) {
                                failed |= !load_included(&p, c, paths[i], &included, &names);
                                free(paths[i]);
                        }
                        free(names.slots);
                }
                if (c->n_servers == 0 && c->n_includes > 0 && !p.failed && !failed)
                        config_report(&p, true, (struct source_pos) { 0, 0 },
                                      follow ? "no server: the main file has no \"servers\", and no file of "
                                               "\"include\" defines one"
                                             : "no server in the main file (its \"include\" is not followed here)");
                /* warnings about a half-read configuration would only confuse */
                if (!p.failed && !failed)
                        config_cross_checks(&p, c, root);
                config_finish(c);
        }
        if (!p.failed && !failed && c) {
                *ret = TAKE_PTR(c);
                r = 0;
        }
        config_free(c);
        parser_free(&p);
        config_flush_diagnostics(&p);
        diagnostics_append(diag, &included);
        return r;
}

int config_load_buffer(const char *name, const char *buf, size_t len, struct config **ret, struct diagnostics *diag) {
        return load_config(name, buf, len, false, ret, diag);
}

int config_load(const char *path, struct config **ret, struct diagnostics *diag) {
        struct parser p = { .file = path, .diag = diag };
        _cleanup_free_ char *buf = NULL;
        size_t len = 0;
        int r;

        *ret = NULL;
        r = read_file(&p, path, &buf, &len);
        config_flush_diagnostics(&p);
        if (r < 0)
                return r;
        return load_config(path, buf, len, true, ret, diag);
}
