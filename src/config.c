/* The YAML configuration, walked with a table of expected keys per mapping.
 * Every problem is reported as FILE:LINE:COLUMN and the walk goes on, so one
 * run shows all of them. */
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "config.h"
#include "duration.h"
#include "macro.h"

#define CONFIG_MAX_BYTES   (1024 * 1024)
#define CONFIG_MAX_SERVERS 4096
#define CONFIG_MAX_RULES   256
#define NAME_MAX_LEN       63

struct parser {
        const char *file;
        yaml_document_t doc;
        struct diagnostics *diag;
        /* unsorted diagnostics with their position, sorted into diag at the end */
        struct pending {
                unsigned line, column, seq;
                bool error;
                char *text;
        } *pending;
        size_t n_pending;
};

struct key;
typedef void (*parse_fn)(struct parser *p, const struct key *k, yaml_node_t *node, void *dest);

struct key {
        const char *name;
        parse_fn parse;
        size_t offset;
        bool required;
};

static const char *const limit_keys[_LIMIT_MAX] = {
        [LIMIT_IDLE] = "max_idle",
        [LIMIT_IDLE_IN_TRANSACTION] = "max_idle_in_transaction",
        [LIMIT_QUERY_DURATION] = "max_query_duration",
        [LIMIT_TRANSACTION_AGE] = "max_transaction_age",
        [LIMIT_SESSION_AGE] = "max_session_age",
};

static const char *const action_names[_ACTION_MAX] = {
        [ACTION_LOG] = "log",
        [ACTION_CANCEL] = "cancel",
        [ACTION_TERMINATE] = "terminate",
};

const char *limit_kind_to_string(enum limit_kind k) {
        return k < _LIMIT_MAX ? limit_keys[k] : "?";
}

const char *action_to_string(enum action a) {
        return a < _ACTION_MAX ? action_names[a] : "?";
}

static struct source_pos pos_of(const yaml_node_t *node) {
        return (struct source_pos) { node->start_mark.line + 1, node->start_mark.column + 1 };
}

static void report(struct parser *p, bool error, struct source_pos pos, const char *fmt, ...) _printf_(4, 5);
static void report(struct parser *p, bool error, struct source_pos pos, const char *fmt, ...) {
        _cleanup_free_ char *msg = NULL;
        va_list ap;
        char *line;

        va_start(ap, fmt);
        if (vasprintf(&msg, fmt, ap) < 0)
                msg = NULL;
        va_end(ap);
        if ((pos.line > 0 ? asprintf(&line, "%s:%u:%u: %s: %s", p->file, pos.line, pos.column,
                                     error ? "error" : "warning", msg ? msg : "out of memory")
                          : asprintf(&line, "%s: %s: %s", p->file, error ? "error" : "warning",
                                     msg ? msg : "out of memory")) < 0) {
                fputs("out of memory\n", stderr);
                abort();
        }
        p->pending = xreallocarray(p->pending, p->n_pending + 1, sizeof(*p->pending));
        p->pending[p->n_pending] = (struct pending) {
                .line = pos.line, .column = pos.column, .seq = (unsigned) p->n_pending,
                .error = error, .text = line,
        };
        p->n_pending++;
}

#define error_at(p, node, ...)   report(p, true, pos_of(node), __VA_ARGS__)
#define warning_at(p, node, ...) report(p, false, pos_of(node), __VA_ARGS__)

static int pending_cmp(const void *a, const void *b) {
        const struct pending *x = a, *y = b;
        if (x->line != y->line)
                return x->line < y->line ? -1 : 1;
        if (x->column != y->column)
                return x->column < y->column ? -1 : 1;
        return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void flush_diagnostics(struct parser *p) {
        struct diagnostics *d = p->diag;

        if (p->n_pending > 1)
                qsort(p->pending, p->n_pending, sizeof(*p->pending), pending_cmp);
        d->lines = xreallocarray(d->lines, d->n_lines + p->n_pending, sizeof(char *));
        for (size_t i = 0; i < p->n_pending; i++) {
                d->lines[d->n_lines++] = p->pending[i].text;
                if (p->pending[i].error)
                        d->n_errors++;
                else
                        d->n_warnings++;
        }
        free(p->pending);
        p->pending = NULL;
        p->n_pending = 0;
}

void diagnostics_clear(struct diagnostics *d) {
        for (size_t i = 0; i < d->n_lines; i++)
                free(d->lines[i]);
        free(d->lines);
        *d = (struct diagnostics) {};
}

static const char *node_kind(const yaml_node_t *node) {
        switch (node->type) {
        case YAML_SCALAR_NODE:
                return "a scalar";
        case YAML_SEQUENCE_NODE:
                return "a list";
        case YAML_MAPPING_NODE:
                return "a mapping";
        default:
                return "nothing";
        }
}

/* A plain scalar that YAML 1.1 reads as null: "", "~", "null". */
static bool scalar_is_null(const yaml_node_t *node) {
        const char *v = (const char *) node->data.scalar.value;
        if (node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
                return false;
        return !*v || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 || strcmp(v, "Null") == 0 ||
               strcmp(v, "NULL") == 0;
}

/* The scalar's text, or NULL after reporting why the node is not a usable scalar. */
static const char *expect_scalar(struct parser *p, const struct key *k, yaml_node_t *node, const char *what) {
        if (node->type != YAML_SCALAR_NODE) {
                error_at(p, node, "\"%s\" must be %s, not %s", k->name, what, node_kind(node));
                return NULL;
        }
        if (scalar_is_null(node)) {
                error_at(p, node, "\"%s\" has no value; expected %s", k->name, what);
                return NULL;
        }
        if (strlen((const char *) node->data.scalar.value) != node->data.scalar.length) {
                error_at(p, node, "\"%s\" contains a NUL byte", k->name);
                return NULL;
        }
        return (const char *) node->data.scalar.value;
}

/* Names end up in log lines, journal fields and metric labels: keep them tame. */
static void parse_name(struct parser *p, const struct key *k, yaml_node_t *node, void *dest) {
        const char *v = expect_scalar(p, k, node, "a name");
        if (!v)
                return;
        if (strlen(v) > NAME_MAX_LEN) {
                error_at(p, node, "name is longer than %d characters", NAME_MAX_LEN);
                return;
        }
        for (const char *c = v; *c; c++)
                if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
                      *c == '-' || *c == '_' || *c == '.')) {
                        error_at(p, node, "name \"%s\" may only contain letters, digits, '-', '_' and '.'", v);
                        return;
                }
        *(char **) dest = xstrdup(v);
}

static void parse_bool(struct parser *p, const struct key *k, yaml_node_t *node, void *dest) {
        static const char *const yes[] = { "true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON" };
        static const char *const no[] = { "false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF" };
        const char *v = expect_scalar(p, k, node, "true or false");

        if (!v)
                return;
        if (node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
                for (size_t i = 0; i < ELEMENTSOF(yes); i++)
                        if (strcmp(v, yes[i]) == 0) {
                                *(bool *) dest = true;
                                return;
                        }
                for (size_t i = 0; i < ELEMENTSOF(no); i++)
                        if (strcmp(v, no[i]) == 0) {
                                *(bool *) dest = false;
                                return;
                        }
        }
        error_at(p, node, "\"%s\" must be true or false, not \"%s\"", k->name, v);
}

/* A positive duration in milliseconds. */
static void parse_duration(struct parser *p, const struct key *k, yaml_node_t *node, void *dest) {
        const char *v = expect_scalar(p, k, node, "a duration such as \"30s\"");
        const char *why;
        int64_t ms;

        if (!v)
                return;
        if (duration_parse(v, &ms, &why) < 0) {
                error_at(p, node, "invalid duration \"%s\" for \"%s\": %s", v, k->name, why);
                return;
        }
        if (ms == 0) {
                error_at(p, node, "\"%s\" must be longer than zero", k->name);
                return;
        }
        *(int64_t *) dest = ms;
}

static void parse_action(struct parser *p, const struct key *k, yaml_node_t *node, void *dest) {
        const char *v = expect_scalar(p, k, node, "terminate, cancel or log");

        if (!v)
                return;
        for (enum action a = 0; a < _ACTION_MAX; a++)
                if (strcmp(v, action_names[a]) == 0) {
                        *(enum action *) dest = a;
                        return;
                }
        error_at(p, node, "unknown action \"%s\"; expected terminate, cancel or log", v);
}

/* Check a conninfo with libpq without ever echoing a password: libpq quotes
 * fragments of the string in its messages, so only fragments that stand in
 * key position ("frag=") are kept. */
/* Is the fragment f (flen bytes) written in key position ("f=") in conninfo? */
static bool fragment_is_key(const char *conninfo, const char *f, size_t flen) {
        for (const char *c = conninfo; flen > 0 && (c = strstr(c, "=")); c++) {
                const char *k = c;
                while (k > conninfo && k[-1] == ' ')
                        k--;
                if ((size_t) (k - conninfo) >= flen && strncmp(k - flen, f, flen) == 0 &&
                    (k - flen == conninfo || k[-(ptrdiff_t) flen - 1] == ' '))
                        return true;
        }
        return false;
}

static void redact_conninfo_error(const char *conninfo, const char *msg, char *out, size_t len) {
        size_t o = 0;

        for (const char *m = msg; *m && *m != '\n' && o + 1 < len; m++) {
                const char *end = *m == '"' ? strchr(m + 1, '"') : NULL;
                if (end) {
                        size_t flen = (size_t) (end - m - 1);
                        bool keep = fragment_is_key(conninfo, m + 1, flen);
                        int n = snprintf(out + o, len - o, "\"%.*s\"", keep ? (int) flen : 3, keep ? m + 1 : "...");
                        o = n < 0 || (size_t) n >= len - o ? len - 1 : o + (size_t) n;
                        m = end;
                        continue;
                }
                out[o++] = *m;
        }
        out[o] = '\0';
}

static void parse_conninfo(struct parser *p, const struct key *k, yaml_node_t *node, void *dest) {
        const char *v = expect_scalar(p, k, node, "a libpq connection string");
        PQconninfoOption *opts;
        char *err = NULL;

        if (!v)
                return;
        opts = PQconninfoParse(v, &err);
        if (!opts) {
                char clean[512];
                redact_conninfo_error(v, err ? err : "out of memory", clean, sizeof(clean));
                error_at(p, node, "invalid conninfo: %s", clean);
                PQfreemem(err);
                return;
        }
        PQconninfoFree(opts);
        *(char **) dest = xstrdup(v);
}

/* Walk a mapping against its key table: unknown and duplicate keys are
 * errors at the key, missing required keys at the mapping. */
static void walk_mapping(struct parser *p, yaml_node_t *node, const struct key *keys, size_t n_keys,
                         void *base, const char *what) {
        yaml_node_t *seen[32] = {};

        if (node->type != YAML_MAPPING_NODE) {
                error_at(p, node, "%s must be a mapping, not %s", what, node_kind(node));
                return;
        }
        for (yaml_node_pair_t *pair = node->data.mapping.pairs.start; pair < node->data.mapping.pairs.top; pair++) {
                yaml_node_t *knode = yaml_document_get_node(&p->doc, pair->key);
                yaml_node_t *vnode = yaml_document_get_node(&p->doc, pair->value);
                const char *name;
                size_t i;

                if (!knode || !vnode)
                        continue;
                if (knode->type != YAML_SCALAR_NODE) {
                        error_at(p, knode, "keys in %s must be plain names, not %s", what, node_kind(knode));
                        continue;
                }
                name = (const char *) knode->data.scalar.value;
                for (i = 0; i < n_keys; i++)
                        if (strcmp(name, keys[i].name) == 0)
                                break;
                if (i == n_keys) {
                        error_at(p, knode, "unknown key \"%s\" in %s", name, what);
                        continue;
                }
                if (seen[i]) {
                        error_at(p, knode, "duplicate key \"%s\" in %s (first at line %u)", name, what,
                                 pos_of(seen[i]).line);
                        continue;
                }
                seen[i] = knode;
                keys[i].parse(p, &keys[i], vnode, (char *) base + keys[i].offset);
        }
        for (size_t i = 0; i < n_keys; i++)
                if (keys[i].required && !seen[i])
                        error_at(p, node, "%s is missing the required key \"%s\"", what, keys[i].name);
}

/* Sequence of mappings into a freshly allocated array of element_size items. */
static void *walk_sequence(struct parser *p, const struct key *k, yaml_node_t *node, size_t max, size_t element_size,
                           size_t *ret_n, const char *item_what, const struct key *keys, size_t n_keys,
                           void (*init)(void *item, yaml_node_t *item_node)) {
        size_t n;
        char *items;

        *ret_n = 0;
        if (node->type != YAML_SEQUENCE_NODE) {
                error_at(p, node, "\"%s\" must be a list, not %s", k->name,
                         node->type == YAML_SCALAR_NODE && scalar_is_null(node) ? "empty" : node_kind(node));
                return NULL;
        }
        n = (size_t) (node->data.sequence.items.top - node->data.sequence.items.start);
        if (n == 0) {
                error_at(p, node, "\"%s\" must not be empty", k->name);
                return NULL;
        }
        if (n > max) {
                error_at(p, node, "\"%s\" has %zu entries; at most %zu are allowed", k->name, n, max);
                return NULL;
        }
        items = xcalloc(n, element_size);
        for (size_t i = 0; i < n; i++) {
                yaml_node_t *item = yaml_document_get_node(&p->doc, node->data.sequence.items.start[i]);
                if (!item)
                        continue;
                if (init)
                        init(items + i * element_size, item);
                walk_mapping(p, item, keys, n_keys, items + i * element_size, item_what);
        }
        *ret_n = n;
        return items;
}

static void rule_init(void *item, yaml_node_t *node) {
        struct rule *r = item;
        r->action = ACTION_TERMINATE;
        r->pos = pos_of(node);
}

static void server_init(void *item, yaml_node_t *node) {
        ((struct server *) item)->pos = pos_of(node);
}

#define KEY(type, field, fn, req) { #field, fn, offsetof(type, field), req }

static const struct key rule_keys[] = {
        KEY(struct rule, name, parse_name, true),
        { "max_idle", parse_duration, offsetof(struct rule, limit_ms[LIMIT_IDLE]), false },
        { "max_idle_in_transaction", parse_duration, offsetof(struct rule, limit_ms[LIMIT_IDLE_IN_TRANSACTION]), false },
        { "max_query_duration", parse_duration, offsetof(struct rule, limit_ms[LIMIT_QUERY_DURATION]), false },
        { "max_transaction_age", parse_duration, offsetof(struct rule, limit_ms[LIMIT_TRANSACTION_AGE]), false },
        { "max_session_age", parse_duration, offsetof(struct rule, limit_ms[LIMIT_SESSION_AGE]), false },
        KEY(struct rule, action, parse_action, false),
        KEY(struct rule, dry_run, parse_bool, false),
};

static void parse_rules(struct parser *p, const struct key *k, yaml_node_t *node, void *dest) {
        struct server *s = (struct server *) ((char *) dest - offsetof(struct server, rules));

        s->rules = walk_sequence(p, k, node, CONFIG_MAX_RULES, sizeof(struct rule), &s->n_rules, "rule", rule_keys,
                                 ELEMENTSOF(rule_keys), rule_init);
        for (size_t i = 0; i < s->n_rules; i++) {
                struct rule *r = &s->rules[i];
                bool any = false;
                yaml_node_t *item = yaml_document_get_node(&p->doc, node->data.sequence.items.start[i]);

                for (enum limit_kind l = 0; l < _LIMIT_MAX; l++)
                        any = any || r->limit_ms[l] > 0;
                if (!any && item && item->type == YAML_MAPPING_NODE)
                        error_at(p, item, "rule%s%s has no limit; set at least one of max_idle, "
                                 "max_idle_in_transaction, max_query_duration, max_transaction_age, max_session_age",
                                 r->name ? " " : "", r->name ? r->name : "");
                for (size_t j = 0; j < i && r->name; j++)
                        if (s->rules[j].name && strcmp(s->rules[j].name, r->name) == 0) {
                                error_at(p, item, "duplicate rule name \"%s\" (first at line %u)", r->name,
                                         s->rules[j].pos.line);
                                break;
                        }
        }
}

static const struct key server_keys[] = {
        KEY(struct server, name, parse_name, true),
        KEY(struct server, conninfo, parse_conninfo, true),
        { "interval", parse_duration, offsetof(struct server, interval_ms), false },
        KEY(struct server, rules, parse_rules, true),
};

static void parse_servers(struct parser *p, const struct key *k, yaml_node_t *node, void *dest) {
        struct config *c = (struct config *) ((char *) dest - offsetof(struct config, servers));

        c->servers = walk_sequence(p, k, node, CONFIG_MAX_SERVERS, sizeof(struct server), &c->n_servers, "server",
                                   server_keys, ELEMENTSOF(server_keys), server_init);
        for (size_t i = 0; i < c->n_servers; i++)
                for (size_t j = 0; j < i && c->servers[i].name; j++)
                        if (c->servers[j].name && strcmp(c->servers[j].name, c->servers[i].name) == 0) {
                                report(p, true, c->servers[i].pos, "duplicate server name \"%s\" (first at line %u)",
                                       c->servers[i].name, c->servers[j].pos.line);
                                break;
                        }
}

static const struct key top_keys[] = {
        { "interval", parse_duration, offsetof(struct config, interval_ms), false },
        { "min_interval", parse_duration, offsetof(struct config, min_interval_ms), false },
        KEY(struct config, dry_run, parse_bool, false),
        KEY(struct config, servers, parse_servers, true),
};

void config_free(struct config *c) {
        if (!c)
                return;
        for (size_t i = 0; i < c->n_servers; i++) {
                struct server *s = &c->servers[i];
                for (size_t j = 0; j < s->n_rules; j++)
                        free(s->rules[j].name);
                free(s->rules);
                free(s->name);
                free(s->conninfo);
        }
        free(c->servers);
        free(c->path);
        free(c);
}

static void finish(struct config *c) {
        if (c->interval_ms == 0)
                c->interval_ms = CONFIG_DEFAULT_INTERVAL_MS;
        if (c->min_interval_ms == 0)
                c->min_interval_ms = CONFIG_DEFAULT_MIN_INTERVAL_MS;
        for (size_t i = 0; i < c->n_servers; i++)
                if (c->servers[i].interval_ms == 0)
                        c->servers[i].interval_ms = c->interval_ms;
}

int config_load_buffer(const char *name, const char *buf, size_t len, struct config **ret, struct diagnostics *diag) {
        struct parser p = { .file = name, .diag = diag };
        yaml_parser_t yp;
        struct config *c = NULL;
        yaml_node_t *root;
        int r = -EINVAL;

        *ret = NULL;
        if (!yaml_parser_initialize(&yp)) {
                fputs("out of memory\n", stderr);
                abort();
        }
        yaml_parser_set_input_string(&yp, (const unsigned char *) buf, len);
        if (!yaml_parser_load(&yp, &p.doc)) {
                struct source_pos pos = { (unsigned) yp.problem_mark.line + 1, (unsigned) yp.problem_mark.column + 1 };
                if (yp.context)
                        report(&p, true, pos, "YAML syntax: %s %s", yp.problem ? yp.problem : "error", yp.context);
                else
                        report(&p, true, pos, "YAML syntax: %s", yp.problem ? yp.problem : "error");
                yaml_parser_delete(&yp);
                flush_diagnostics(&p);
                return -EINVAL;
        }

        root = yaml_document_get_root_node(&p.doc);
        if (!root) {
                report(&p, true, (struct source_pos) { 1, 1 }, "the file is empty; it needs at least \"servers\"");
                goto out;
        }
        {
                yaml_document_t next;
                if (yaml_parser_load(&yp, &next)) {
                        yaml_node_t *extra = yaml_document_get_root_node(&next);
                        if (extra)
                                report(&p, true, pos_of(extra), "only one YAML document is allowed");
                        yaml_document_delete(&next);
                } else
                        report(&p, true, (struct source_pos) { (unsigned) yp.problem_mark.line + 1,
                                                               (unsigned) yp.problem_mark.column + 1 },
                               "YAML syntax: %s", yp.problem ? yp.problem : "error");
        }

        c = xcalloc(1, sizeof(*c));
        walk_mapping(&p, root, top_keys, ELEMENTSOF(top_keys), c, "the top level");
        finish(c);
out:
        for (size_t i = 0; i < p.n_pending; i++)
                if (p.pending[i].error)
                        goto fail;
        if (!c)
                goto fail;
        c->path = xstrdup(name);
        *ret = TAKE_PTR(c);
        r = 0;
fail:
        config_free(c);
        yaml_document_delete(&p.doc);
        yaml_parser_delete(&yp);
        flush_diagnostics(&p);
        return r;
}

int config_load(const char *path, struct config **ret, struct diagnostics *diag) {
        struct parser p = { .file = path, .diag = diag };
        _cleanup_free_ char *buf = NULL;
        struct stat st;
        size_t len = 0;
        int fd, r;

        *ret = NULL;
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0) {
                r = -errno;
                report(&p, true, (struct source_pos) { 0, 0 }, "cannot open: %s", strerror(-r));
                flush_diagnostics(&p);
                return r;
        }
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > CONFIG_MAX_BYTES) {
                report(&p, true, (struct source_pos) { 0, 0 }, "not a regular file of at most %d bytes",
                       CONFIG_MAX_BYTES);
                close(fd);
                flush_diagnostics(&p);
                return -EINVAL;
        }
        buf = xmalloc((size_t) st.st_size + 1);
        while (len < (size_t) st.st_size) {
                ssize_t n = read(fd, buf + len, (size_t) st.st_size - len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                len += (size_t) n;
        }
        close(fd);
        buf[len] = '\0';
        return config_load_buffer(path, buf, len, ret, diag);
}
