/* The YAML configuration, walked with a table of expected keys per mapping.
 * Every problem is reported as FILE:LINE:COLUMN and the walk goes on, so one
 * run shows all of them. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
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
#include "escape.h"
#include "duration.h"
#include "macro.h"

#define CONFIG_MAX_BYTES       (1024 * 1024)
#define CONFIG_MAX_SERVERS     4096
#define CONFIG_MAX_RULES       256
#define CONFIG_MAX_LIST        4096
#define CONFIG_MAX_DIAGNOSTICS 1000
/* The schema nests 7 deep at most (servers, a server, rules, a rule, exempt,
 * users, an entry); the caps bound libyaml's loader, see shape_ok(). */
#define CONFIG_MAX_DEPTH       32
#define CONFIG_MAX_ANCHORS     1000
#define CONFIG_MAX_ALIASES     10000
/* Aliases let a small file name the same subtree many times ("billion
 * laughs"); every node visited and every 64 bytes copied cost one unit. */
#ifndef CONFIG_MAX_WORK  /* the fuzz build lowers it to spend its time elsewhere */
#define CONFIG_MAX_WORK        1000000
#endif
#define NAME_MAX_LEN           63
#define PATTERN_MAX_LEN        255
#define MAX_KEYS               24
#define DIAG_SLOTS             2048  /* > 2 * CONFIG_MAX_DIAGNOSTICS, power of two */

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
        /* a node reached through several aliases reports its problems once */
        uint32_t slots[DIAG_SLOTS];
        bool failed;
        bool truncated;
        size_t work;
        bool over_budget;
        /* per node, a bit per table where it was reported as an unknown key:
         * the suggestions are costly and an alias repeats them */
        uint8_t *unknown_key_reported;
};

struct key;
typedef void (*parse_fn)(struct parser *p, const struct key *k, yaml_node_t *node, void *dest);

struct key {
        const char *name;
        parse_fn parse;
        size_t offset;
        bool required;
};

struct table {
        unsigned id;                /* 0..7 */
        const char *what;           /* "a rule": for messages */
        const struct key *keys;
        size_t n_keys;
};

static const char *const limit_keys[_LIMIT_MAX] = {
        [LIMIT_IDLE] = "max_idle",
        [LIMIT_IDLE_IN_TRANSACTION] = "max_idle_in_transaction",
        [LIMIT_QUERY_DURATION] = "max_query_duration",
        [LIMIT_TRANSACTION_AGE] = "max_transaction_age",
        [LIMIT_SESSION_AGE] = "max_session_age",
        [LIMIT_BLOCKING] = "max_blocking",
        [LIMIT_LOCK_WAIT] = "max_lock_wait",
        [LIMIT_XMIN_AGE] = "max_xmin_age",
};

static const char *const role_names[_ROLE_MAX] = {
        [ROLE_ANY] = "any",
        [ROLE_PRIMARY] = "primary",
        [ROLE_STANDBY] = "standby",
};

int64_t rule_min_blocked(const struct rule *r, enum limit_kind k) {
        if (r->min_blocked >= 0)
                return r->min_blocked;
        return k == LIMIT_BLOCKING ? 1 : 0;
}

bool rule_reads_locks(const struct rule *r) {
        return r->limit_ms[LIMIT_BLOCKING] > 0 || r->limit_ms[LIMIT_LOCK_WAIT] > 0;
}

DEFINE_STRING_TABLE_LOOKUP(server_role, enum server_role, role_names)

static const char *const action_names[_ACTION_MAX] = {
        [ACTION_LOG] = "log",
        [ACTION_CANCEL] = "cancel",
        [ACTION_TERMINATE] = "terminate",
};

DEFINE_STRING_TABLE_LOOKUP(limit_kind, enum limit_kind, limit_keys)
DEFINE_STRING_TABLE_LOOKUP(action, enum action, action_names)

static struct source_pos pos_of(const yaml_node_t *node) {
        return (struct source_pos) { node->start_mark.line + 1, node->start_mark.column + 1 };
}

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
        p->failed = p->failed || error;
        add_pending(p, error, pos, line);
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
        d->lines = xreallocarray(d->lines, d->n_lines + p->n_pending + 1, sizeof(char *));
        for (size_t i = 0; i < p->n_pending; i++) {
                d->lines[d->n_lines++] = p->pending[i].text;
                if (p->pending[i].error)
                        d->n_errors++;
                else
                        d->n_warnings++;
        }
        if (p->truncated && asprintf(&d->lines[d->n_lines], "%s: note: stopped reporting after %d problems",
                                     p->file, CONFIG_MAX_DIAGNOSTICS) >= 0)
                d->n_lines++;
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

/* Charge cost to the walk; false (reported once) when the budget is spent. */
static bool spend(struct parser *p, const yaml_node_t *node, size_t cost) {
        if (p->over_budget)
                return false;
        p->work += cost;
        if (p->work <= CONFIG_MAX_WORK)
                return true;
        p->over_budget = true;
        error_at(p, node, "the configuration is too large once aliases are expanded; stopped reading here");
        return false;
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
        if (node->type != YAML_SCALAR_NODE || node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
                return false;
        return !*v || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 || strcmp(v, "Null") == 0 ||
               strcmp(v, "NULL") == 0;
}

static const char *kind_or_empty(const yaml_node_t *node) {
        return scalar_is_null(node) ? "empty" : node_kind(node);
}

static size_t sequence_length(const yaml_node_t *node) {
        return (size_t) (node->data.sequence.items.top - node->data.sequence.items.start);
}

static yaml_node_t *sequence_item(struct parser *p, const yaml_node_t *node, size_t i) {
        return yaml_document_get_node(&p->doc, node->data.sequence.items.start[i]);
}

/* The text of a scalar without NUL bytes, or NULL when it is not one (not reported). */
static const char *scalar_text(struct parser *p, yaml_node_t *node) {
        if (node->type != YAML_SCALAR_NODE || !spend(p, node, 1 + node->data.scalar.length / 64))
                return NULL;
        if (strlen((const char *) node->data.scalar.value) != node->data.scalar.length)
                return NULL;
        return (const char *) node->data.scalar.value;
}

/* The scalar's text, or NULL after reporting why the node is not a usable scalar. */
static const char *expect_scalar(struct parser *p, const struct key *k, yaml_node_t *node, const char *what) {
        const char *v;

        if (node->type != YAML_SCALAR_NODE) {
                error_at(p, node, "\"%s\" must be %s, not %s", k->name, what, node_kind(node));
                return NULL;
        }
        if (scalar_is_null(node)) {
                error_at(p, node, "\"%s\" has no value; expected %s", k->name, what);
                return NULL;
        }
        v = scalar_text(p, node);
        if (!v && !p->over_budget)
                error_at(p, node, "\"%s\" contains a NUL byte", k->name);
        return v;
}

/* Names end up in log lines, journal fields and metric labels: keep them tame. */
static void parse_name(struct parser *p, const struct key *k, yaml_node_t *node, void *dest) {
        const char *v = expect_scalar(p, k, node, "a name");
        if (!v)
                return;
        if (!*v) {
                error_at(p, node, "\"%s\" must not be empty", k->name);
                return;
        }
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

        int a;

        if (!v)
                return;
        a = action_from_string(v);
        if (a >= 0) {
                *(enum action *) dest = (enum action) a;
                return;
        }
        error_at(p, node, "unknown action \"%s\"; expected terminate, cancel or log", v);
}

static void parse_role(struct parser *p, const struct key *k, yaml_node_t *node, void *dest) {
        const char *v = expect_scalar(p, k, node, "primary, standby or any");

        int r;

        if (!v)
                return;
        r = server_role_from_string(v);
        if (r >= 0) {
                *(enum server_role *) dest = (enum server_role) r;
                return;
        }
        error_at(p, node, "unknown role \"%s\"; expected primary, standby or any", v);
}

/* A count of transactions: a positive whole number, "_" allowed between
 * digits (50_000_000). Xids are 32 bits and age() is at most 2^31. */
#define XID_AGE_MAX INT64_C(2147483647)
static void parse_xid_count(struct parser *p, const struct key *k, yaml_node_t *node, void *dest) {
        const char *v = expect_scalar(p, k, node, "a number of transactions such as 50_000_000");
        int64_t n = 0;
        bool digit = false, over = false;
        const char *c;

        if (!v)
                return;
        for (c = v; *c; c++) {
                if (*c >= '0' && *c <= '9') {
                        n = n * 10 + (*c - '0');
                        over = over || n > XID_AGE_MAX;
                        if (over)
                                n = XID_AGE_MAX + 1;
                        digit = true;
                } else if (*c == '_' && digit && c[1] >= '0' && c[1] <= '9')
                        continue;
                else
                        break;
        }
        if (node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) {
                error_at(p, node, "\"%s\" must be a plain number such as 50_000_000, not the quoted string \"%s\"",
                         k->name, v);
                return;
        }
        if (*c || !digit) {
                error_at(p, node, "\"%s\" must be a whole number of transactions such as 50_000_000 (no unit, "
                         "sign or fraction), not \"%s\"", k->name, v);
                return;
        }
        if (n < 1 || over) {
                error_at(p, node, "\"%s\" is out of range: %s is not from 1 to %" PRId64, k->name, v, XID_AGE_MAX);
                return;
        }
        *(int64_t *) dest = n;
}

/* A count of sessions, 0 to CONFIG_MAX_SESSIONS. */
#define CONFIG_MAX_SESSIONS 1000000
static void parse_session_count(struct parser *p, const struct key *k, yaml_node_t *node, void *dest) {
        const char *v = expect_scalar(p, k, node, "a number of sessions");
        int64_t n = 0;
        const char *c;

        if (!v)
                return;
        for (c = v; *c >= '0' && *c <= '9' && n <= CONFIG_MAX_SESSIONS; c++)
                n = n * 10 + (*c - '0');
        if (c == v || *c || node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) {
                if (c != v && *c >= '0' && *c <= '9')
                        error_at(p, node, "\"%s\" is out of range: %s is not from 0 to %d", k->name, v,
                                 CONFIG_MAX_SESSIONS);
                else
                        error_at(p, node, "\"%s\" must be a whole number of sessions from 0 to %d, not \"%s\"",
                                 k->name, CONFIG_MAX_SESSIONS, v);
                return;
        }
        if (n > CONFIG_MAX_SESSIONS) {
                error_at(p, node, "\"%s\" is out of range: %s is not from 0 to %d", k->name, v, CONFIG_MAX_SESSIONS);
                return;
        }
        *(int64_t *) dest = n;
}

/* A decimal integer from 1 to CONFIG_MAX_ACTIONS. */
static void parse_action_count(struct parser *p, const struct key *k, yaml_node_t *node, void *dest) {
        const char *v = expect_scalar(p, k, node, "a number");
        unsigned long n = 0;
        const char *c;

        if (!v)
                return;
        for (c = v; *c >= '0' && *c <= '9' && n <= CONFIG_MAX_ACTIONS; c++)
                n = n * 10 + (unsigned long) (*c - '0');
        if (c == v || (*c && !(*c >= '0' && *c <= '9')) || node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) {
                error_at(p, node, "\"%s\" must be a whole number from 1 to %u, not \"%s\"", k->name,
                         CONFIG_MAX_ACTIONS, v);
                return;
        }
        if (n < 1 || n > CONFIG_MAX_ACTIONS) {
                error_at(p, node, "\"%s\" is out of range: %s is not from 1 to %u", k->name, v, CONFIG_MAX_ACTIONS);
                return;
        }
        *(unsigned *) dest = (unsigned) n;
}

static void parse_path(struct parser *p, const struct key *k, yaml_node_t *node, void *dest) {
        const char *v = expect_scalar(p, k, node, "an absolute file name");
        size_t n;

        if (!v)
                return;
        n = strlen(v);
        if (v[0] != '/') {
                error_at(p, node, "\"%s\" must be an absolute path, not \"%s\"", k->name, v);
                return;
        }
        if (v[n - 1] == '/') {
                error_at(p, node, "\"%s\" must name a file, not a directory: \"%s\"", k->name, v);
                return;
        }
        if (n >= PATH_MAX) {
                error_at(p, node, "\"%s\" is longer than %d bytes", k->name, PATH_MAX - 1);
                return;
        }
        *(char **) dest = xstrdup(v);
}

/* A conninfo may hold a password anywhere (a keyword written where a value
 * was meant, a URI's user part, a quote that ends early), and libpq quotes
 * fragments of the string in its parse errors. So nothing of the string, nor
 * libpq's message, is ever shown: only what kind of problem it is and, for
 * the keyword/value form, the byte where it starts. */
static bool conninfo_is_uri(const char *s) {
        return strncmp(s, "postgresql://", 13) == 0 || strncmp(s, "postgres://", 11) == 0;
}

/* Is name (len bytes) a keyword libpq knows? */
static bool conninfo_keyword_known(const char *name, size_t len) {
        PQconninfoOption *all = PQconninfoParse("", NULL);
        bool found = len == 10 && strncmp(name, "requiressl", 10) == 0;  /* still accepted by libpq */

        for (PQconninfoOption *o = all; o && o->keyword && !found; o++)
                found = strlen(o->keyword) == len && strncmp(o->keyword, name, len) == 0;
        PQconninfoFree(all);
        return found;
}

/* Walk the keyword/value form the way libpq's conninfo_parse does; on the
 * first problem, its byte offset and a description free of user bytes. */
static bool conninfo_find_problem(const char *s, size_t *ret_offset, const char **ret_what) {
        const char *c = s;

        while (*c) {
                const char *key, *key_end;

                if (isspace((unsigned char) *c)) {
                        c++;
                        continue;
                }
                key = c;
                while (*c && *c != '=' && !isspace((unsigned char) *c))
                        c++;
                key_end = c;
                while (isspace((unsigned char) *c))
                        c++;
                if (*c != '=') {
                        *ret_offset = (size_t) (key - s);
                        *ret_what = "a keyword without \"=\" after it";
                        return true;
                }
                c++;
                while (isspace((unsigned char) *c))
                        c++;
                if (*c == '\'') {
                        const char *open = c++;
                        for (;; c++) {
                                if (!*c) {
                                        *ret_offset = (size_t) (open - s);
                                        *ret_what = "a quoted value without its closing quote";
                                        return true;
                                }
                                if (*c == '\\' && c[1])
                                        c++;
                                else if (*c == '\'') {
                                        c++;
                                        break;
                                }
                        }
                } else
                        for (; *c && !isspace((unsigned char) *c); c++)
                                if (*c == '\\' && c[1])
                                        c++;
                if (!conninfo_keyword_known(key, (size_t) (key_end - key))) {
                        *ret_offset = (size_t) (key - s);
                        *ret_what = "an unknown keyword";
                        return true;
                }
        }
        return false;
}

/* libpq's English parse errors, told apart by their constant text only. */
static const char *conninfo_uri_problem(const char *libpq_error) {
        static const struct {
                const char *libpq;
                const char *ours;
        } kinds[] = {
                { "IPv6 host address may not be empty", "an empty IPv6 address" },
                { "in IPv6 host address", "an IPv6 address without its closing \"]\"" },
                { "unexpected character", "an unexpected character after the host (expected \":\" or \"/\")" },
                { "extra key/value separator", "a query parameter with two \"=\"" },
                { "missing key/value separator", "a query parameter without \"=\"" },
                { "invalid URI query parameter", "an unknown query parameter" },
                { "invalid connection option", "an unknown query parameter" },
                { "invalid percent-encoded token", "an invalid %-escape" },
                { "forbidden value %00", "a %00 escape" },
                { "out of memory", "out of memory" },
        };

        for (size_t i = 0; libpq_error && i < ELEMENTSOF(kinds); i++)
                if (strstr(libpq_error, kinds[i].libpq))
                        return kinds[i].ours;
        return NULL;
}

/* libpq parses a URI whose password holds a raw "@" or "/" without complaint,
 * but into a host, port or database name made of pieces of the password,
 * which its connection errors (and the server's) would then quote. */
static const char *conninfo_misparsed(const char *s, const PQconninfoOption *opts) {
        if (conninfo_is_uri(s)) {
                const char *rest = strstr(s, "://") + 3;
                size_t end = strcspn(rest, "?");
                const char *slash = memchr(rest, '/', end);

                if (slash && memchr(slash, '@', end - (size_t) (slash - rest)))
                        return "an \"@\" after a \"/\" (write \"/\" in a password as %2F, \"@\" as %40)";
        }
        for (const PQconninfoOption *o = opts; o->keyword; o++) {
                if (!o->val)
                        continue;
                if (strcmp(o->keyword, "port") == 0 && o->val[strspn(o->val, "0123456789, \t\n\r\f\v")])
                        return "the port is not a number";
                if (strcmp(o->keyword, "host") == 0 && conninfo_is_uri(s) && strchr(o->val, '@'))
                        return "the host contains \"@\" (write \"@\" in a password as %40)";
        }
        return NULL;
}

static void parse_conninfo(struct parser *p, const struct key *k, yaml_node_t *node, void *dest) {
        const char *v = expect_scalar(p, k, node, "a libpq connection string");
        PQconninfoOption *opts;
        const char *what;
        char *err = NULL;
        size_t offset;

        if (!v)
                return;
        opts = PQconninfoParse(v, &err);
        if (opts) {
                what = conninfo_misparsed(v, opts);
                if (what)
                        error_at(p, node, "libpq would misread this conninfo (not shown: it may hold a password): %s",
                                 what);
                else
                        *(char **) dest = xstrdup(v);
                PQconninfoFree(opts);
                return;
        }
        if (conninfo_is_uri(v)) {
                what = conninfo_uri_problem(err);
                if (what)
                        error_at(p, node, "libpq cannot parse this conninfo (not shown: it may hold a password): "
                                 "invalid URI: %s", what);
                else
                        error_at(p, node, "libpq cannot parse this conninfo (not shown: it may hold a password): "
                                 "invalid URI");
        } else if (conninfo_find_problem(v, &offset, &what))
                error_at(p, node, "libpq cannot parse this conninfo (not shown: it may hold a password): "
                         "%s at byte %zu of the conninfo", what, offset + 1);
        else
                error_at(p, node, "libpq cannot parse this conninfo (not shown: it may hold a password)");
        PQfreemem(err);
}

/* Filter and exempt lists. An empty list is accepted here; the mapping that
 * holds it warns, because only it knows what the list would have matched. */
static bool list_prologue(struct parser *p, const struct key *k, yaml_node_t *node, const char *example) {
        if (node->type != YAML_SEQUENCE_NODE) {
                error_at(p, node, "\"%s\" must be a list such as %s, not %s", k->name, example, kind_or_empty(node));
                return false;
        }
        if (sequence_length(node) > CONFIG_MAX_LIST) {
                error_at(p, node, "\"%s\" has %zu entries; at most %d are allowed", k->name, sequence_length(node),
                         CONFIG_MAX_LIST);
                return false;
        }
        return true;
}

/* The text of a list entry, or NULL after reporting why it is not one. */
static const char *list_entry(struct parser *p, const struct key *k, yaml_node_t *item, const char *what) {
        const char *v;

        if (item->type != YAML_SCALAR_NODE) {
                error_at(p, item, "entries of \"%s\" must be %s, not %s", k->name, what, node_kind(item));
                return NULL;
        }
        if (scalar_is_null(item)) {
                error_at(p, item, "empty entry in \"%s\"; write \"\" to match an empty name", k->name);
                return NULL;
        }
        v = scalar_text(p, item);
        if (!v && !p->over_budget)
                error_at(p, item, "entry of \"%s\" contains a NUL byte", k->name);
        return v;
}

static void parse_name_list(struct parser *p, const struct key *k, yaml_node_t *node, void *dest) {
        struct name_list *l = dest;
        size_t n;

        if (!list_prologue(p, k, node, "[app_*, reports]"))
                return;
        n = sequence_length(node);
        l->given = true;
        l->patterns = xcalloc(n, sizeof(char *));
        for (size_t i = 0; i < n && !p->over_budget; i++) {
                yaml_node_t *item = sequence_item(p, node, i);
                const char *v, *why;

                if (!item || !(v = list_entry(p, k, item, "names or glob patterns")))
                        continue;
                if (strlen(v) > PATTERN_MAX_LEN) {
                        error_at(p, item, "pattern in \"%s\" is longer than %d characters", k->name, PATTERN_MAX_LEN);
                        continue;
                }
                if (glob_check(v, &why) < 0) {
                        error_at(p, item, "invalid pattern \"%s\" in \"%s\": %s", v, k->name, why);
                        continue;
                }
                l->patterns[l->n++] = xstrdup(v);
        }
        name_list_compile(l);
}

static void parse_addr_list(struct parser *p, const struct key *k, yaml_node_t *node, void *dest) {
        struct addr_list *l = dest;
        size_t n;

        if (!list_prologue(p, k, node, "[local, 10.0.0.0/8, \"::1\"]"))
                return;
        n = sequence_length(node);
        l->given = true;
        l->masks = xcalloc(n, sizeof(struct netmask));
        for (size_t i = 0; i < n && !p->over_budget; i++) {
                yaml_node_t *item = sequence_item(p, node, i);
                const char *v, *why;

                if (!item || !(v = list_entry(p, k, item, "addresses, CIDR blocks or local")))
                        continue;
                if (strcmp(v, "local") == 0) {
                        l->local = true;
                        continue;
                }
                if (netmask_parse(v, &l->masks[l->n], &why) < 0) {
                        error_at(p, item, "invalid address \"%s\" in \"%s\": %s", v, k->name, why);
                        continue;
                }
                l->n++;
        }
}

static const char *key_home(const char *name, const struct table *here, char *buf, size_t len);
static const char *key_suggestion(const char *name, const struct table *t);

/* Walk a mapping against its key table: unknown and duplicate keys are errors
 * at the key, missing required keys at the mapping. seen (optional, n_keys
 * entries) receives each key's value node. */
static void walk_mapping(struct parser *p, yaml_node_t *node, const struct table *t, void *base, yaml_node_t **seen) {
        yaml_node_t *keys_seen[MAX_KEYS] = {}, *values[MAX_KEYS] = {};

        if (node->type != YAML_MAPPING_NODE) {
                error_at(p, node, "%s must be a mapping, not %s", t->what, kind_or_empty(node));
                return;
        }
        for (yaml_node_pair_t *pair = node->data.mapping.pairs.start; pair < node->data.mapping.pairs.top; pair++) {
                yaml_node_t *knode = yaml_document_get_node(&p->doc, pair->key);
                yaml_node_t *vnode = yaml_document_get_node(&p->doc, pair->value);
                const char *name, *hint;
                char home[128];
                size_t i;

                if (!knode || !vnode || !spend(p, knode, 1))
                        break;
                if (knode->type != YAML_SCALAR_NODE) {
                        error_at(p, knode, "keys in %s must be plain names, not %s", t->what, node_kind(knode));
                        continue;
                }
                name = (const char *) knode->data.scalar.value;
                if (strncmp(name, "x-", 2) == 0)  /* a place to define anchors, as in docker-compose */
                        continue;
                for (i = 0; i < t->n_keys; i++)
                        if (strcmp(name, t->keys[i].name) == 0)
                                break;
                if (i == t->n_keys) {
                        uint8_t *reported = &p->unknown_key_reported[knode - p->doc.nodes.start];
                        if (*reported & (1u << t->id))
                                continue;
                        *reported |= (uint8_t) (1u << t->id);
                        if (strcmp(name, "<<") == 0)
                                error_at(p, knode, "YAML merge keys (\"<<\") are not supported; reuse a whole rule "
                                         "or list with an alias (*name) instead");
                        else if ((hint = key_home(name, t, home, sizeof(home))))
                                error_at(p, knode, "key \"%s\" is not allowed in %s; it belongs in %s", name, t->what,
                                         hint);
                        else if ((hint = key_suggestion(name, t)))
                                error_at(p, knode, "unknown key \"%s\" in %s; did you mean \"%s\"?", name, t->what,
                                         hint);
                        else
                                error_at(p, knode, "unknown key \"%s\" in %s", name, t->what);
                        continue;
                }
                if (keys_seen[i]) {
                        error_at(p, knode, "duplicate key \"%s\" in %s (first at line %u)", name, t->what,
                                 pos_of(keys_seen[i]).line);
                        continue;
                }
                keys_seen[i] = knode;
                values[i] = vnode;
                t->keys[i].parse(p, &t->keys[i], vnode, (char *) base + t->keys[i].offset);
        }
        for (size_t i = 0; i < t->n_keys && !p->over_budget; i++)
                if (t->keys[i].required && !keys_seen[i])
                        error_at(p, node, "%s is missing the required key \"%s\"", t->what, t->keys[i].name);
        if (seen)
                memcpy(seen, values, t->n_keys * sizeof(*seen));
}

/* The index of key name in t; t must have it. */
static size_t key_index(const struct table *t, const char *name) {
        for (size_t i = 0; i < t->n_keys; i++)
                if (strcmp(t->keys[i].name, name) == 0)
                        return i;
        abort();
}

#define KEY(type, field, fn, req) { #field, fn, offsetof(type, field), req }
#define TABLE(id, what, keys) { id, what, keys, ELEMENTSOF(keys) }

static const struct key exempt_keys[] = {
        KEY(struct filter, users, parse_name_list, false),
        KEY(struct filter, databases, parse_name_list, false),
        KEY(struct filter, applications, parse_name_list, false),
        KEY(struct filter, client_addresses, parse_addr_list, false),
        KEY(struct filter, queries, parse_name_list, false),
};
static const struct table exempt_table = TABLE(0, "an exempt block", exempt_keys);

static bool list_empty(const struct filter *f, size_t key) {
        switch (key) {
        case 0:
                return f->users.given && f->users.n == 0;
        case 1:
                return f->databases.given && f->databases.n == 0;
        case 2:
                return f->applications.given && f->applications.n == 0;
        case 3:
                return f->client_addresses.given && f->client_addresses.n == 0 && !f->client_addresses.local;
        default:
                return f->queries.given && f->queries.n == 0;
        }
}

static void parse_exempt(struct parser *p, const struct key *k, yaml_node_t *node, void *dest) {
        yaml_node_t *seen[ELEMENTSOF(exempt_keys)] = {};
        struct filter *f = dest;

        if (node->type != YAML_MAPPING_NODE) {
                error_at(p, node, "\"%s\" must be a mapping of users, databases, applications, client_addresses and queries, "
                         "not %s", k->name, kind_or_empty(node));
                return;
        }
        walk_mapping(p, node, &exempt_table, f, seen);
        filter_finish(f);
        for (size_t i = 0; i < ELEMENTSOF(exempt_keys); i++)
                if (seen[i] && list_empty(f, i) && sequence_length(seen[i]) == 0)
                        warning_at(p, seen[i], "\"%s\" in \"exempt\" is an empty list and exempts nothing",
                                   exempt_keys[i].name);
}

/* Sequence of mappings into a freshly allocated array of element_size items;
 * check sees each item with its key table's value nodes. */
static void *walk_sequence(struct parser *p, const struct key *k, yaml_node_t *node, size_t max, size_t element_size,
                           size_t *ret_n, const struct table *t, void (*init)(void *item),
                           void (*check)(struct parser *p, void *item, yaml_node_t *node, yaml_node_t **seen)) {
        size_t n;
        char *items;

        *ret_n = 0;
        if (node->type != YAML_SEQUENCE_NODE) {
                error_at(p, node, "\"%s\" must be a list, not %s", k->name, kind_or_empty(node));
                return NULL;
        }
        n = sequence_length(node);
        if (n == 0) {
                error_at(p, node, "\"%s\" must not be empty", k->name);
                return NULL;
        }
        if (n > max) {
                error_at(p, node, "\"%s\" has %zu entries; at most %zu are allowed", k->name, n, max);
                return NULL;
        }
        items = xcalloc(n, element_size);
        *ret_n = n;
        for (size_t i = 0; i < n && !p->over_budget; i++) {
                yaml_node_t *item = sequence_item(p, node, i);
                yaml_node_t *seen[MAX_KEYS] = {};

                if (!item || !spend(p, item, 1))
                        break;
                if (init)
                        init(items + i * element_size);
                walk_mapping(p, item, t, items + i * element_size, seen);
                check(p, items + i * element_size, item, seen);
        }
        return items;
}

static const struct key rule_keys[] = {
        KEY(struct rule, name, parse_name, true),
        { "max_idle", parse_duration, offsetof(struct rule, limit_ms[LIMIT_IDLE]), false },
        { "max_idle_in_transaction", parse_duration, offsetof(struct rule, limit_ms[LIMIT_IDLE_IN_TRANSACTION]), false },
        { "max_query_duration", parse_duration, offsetof(struct rule, limit_ms[LIMIT_QUERY_DURATION]), false },
        { "max_transaction_age", parse_duration, offsetof(struct rule, limit_ms[LIMIT_TRANSACTION_AGE]), false },
        { "max_session_age", parse_duration, offsetof(struct rule, limit_ms[LIMIT_SESSION_AGE]), false },
        { "max_blocking", parse_duration, offsetof(struct rule, limit_ms[LIMIT_BLOCKING]), false },
        { "max_lock_wait", parse_duration, offsetof(struct rule, limit_ms[LIMIT_LOCK_WAIT]), false },
        { "max_xmin_age", parse_xid_count, offsetof(struct rule, limit_ms[LIMIT_XMIN_AGE]), false },
        KEY(struct rule, min_blocked, parse_session_count, false),
        KEY(struct rule, action, parse_action, false),
        { "escalate_after", parse_duration, offsetof(struct rule, escalate_after_ms), false },
        KEY(struct rule, dry_run, parse_bool, false),
        KEY(struct rule, role, parse_role, false),
        /* the filter keys, in exempt_keys' order: rule_check relies on it */
        { "users", parse_name_list, offsetof(struct rule, filter.users), false },
        { "databases", parse_name_list, offsetof(struct rule, filter.databases), false },
        { "applications", parse_name_list, offsetof(struct rule, filter.applications), false },
        { "client_addresses", parse_addr_list, offsetof(struct rule, filter.client_addresses), false },
        { "queries", parse_name_list, offsetof(struct rule, filter.queries), false },
        KEY(struct rule, exempt, parse_exempt, false),
};
static const struct table rule_table = TABLE(1, "a rule", rule_keys);

/* Absent, or written correctly (a wrong one was reported already). */
static bool action_valid(const yaml_node_t *node) {
        if (!node)
                return true;
        if (node->type != YAML_SCALAR_NODE)
                return false;
        for (enum action a = 0; a < _ACTION_MAX; a++)
                if (strcmp((const char *) node->data.scalar.value, action_names[a]) == 0)
                        return true;
        return false;
}

static void rule_check(struct parser *p, void *item, yaml_node_t *node, yaml_node_t **seen) {
        size_t first_filter = key_index(&rule_table, "users");
        struct rule *r = item;
        char label[NAME_MAX_LEN + 8] = "this rule";
        bool any = false;

        r->pos = pos_of(node);
        if (node->type != YAML_MAPPING_NODE)
                return;
        if (r->name)
                snprintf(label, sizeof(label), "rule \"%s\"", r->name);
        filter_finish(&r->filter);
        for (enum limit_kind l = 0; l < _LIMIT_MAX; l++)
                any = any || seen[key_index(&rule_table, limit_keys[l])];
        if (!any)
                error_at(p, node, "%s has no limit; set at least one of max_idle, max_idle_in_transaction, "
                         "max_query_duration, max_transaction_age, max_session_age, max_blocking, max_lock_wait, "
                         "max_xmin_age", label);
        if (seen[key_index(&rule_table, "min_blocked")] && !rule_reads_locks(r) && any)
                error_at(p, seen[key_index(&rule_table, "min_blocked")],
                         "\"min_blocked\" only works with \"max_blocking\" or \"max_lock_wait\"; %s has neither", label);
        if (r->escalate_after_ms > 0 && r->action != ACTION_CANCEL && action_valid(seen[key_index(&rule_table, "action")]))
                error_at(p, seen[key_index(&rule_table, "escalate_after")],
                         "\"escalate_after\" only works with \"action: cancel\"; %s has action %s%s", label,
                         action_names[r->action], seen[key_index(&rule_table, "action")] ? "" : " (the default)");
        for (size_t i = 0; i < ELEMENTSOF(exempt_keys); i++)
                if (seen[first_filter + i] && list_empty(&r->filter, i) &&
                    sequence_length(seen[first_filter + i]) == 0)
                        warning_at(p, seen[first_filter + i], "%s can never match: \"%s\" is an empty list", label,
                                   exempt_keys[i].name);
}

static void rule_init(void *item) {
        ((struct rule *) item)->action = ACTION_TERMINATE;
        ((struct rule *) item)->min_blocked = -1;
}

static void parse_rules(struct parser *p, const struct key *k, yaml_node_t *node, void *dest) {
        struct server *s = (struct server *) ((char *) dest - offsetof(struct server, rules));

        s->rules = walk_sequence(p, k, node, CONFIG_MAX_RULES, sizeof(struct rule), &s->n_rules, &rule_table,
                                 rule_init, rule_check);
        for (size_t i = 0; i < s->n_rules; i++) {
                struct rule *r = &s->rules[i];
                yaml_node_t *item = sequence_item(p, node, i);

                for (size_t j = 0; j < i && r->name; j++) {
                        if (!s->rules[j].name || strcmp(s->rules[j].name, r->name) != 0)
                                continue;
                        if (item == sequence_item(p, node, j))
                                error_at(p, item, "rule \"%s\" is listed twice in \"rules\" at line %u (the same "
                                         "alias used twice)", r->name, pos_of(node).line);
                        else
                                error_at(p, item, "duplicate rule name \"%s\" (first at line %u)", r->name,
                                         s->rules[j].pos.line);
                        break;
                }
        }
}

static void server_check(struct parser *p, void *item, yaml_node_t *node, yaml_node_t **seen) {
        ((struct server *) item)->pos = pos_of(node);
}

static const struct key server_keys[] = {
        KEY(struct server, name, parse_name, true),
        KEY(struct server, conninfo, parse_conninfo, true),
        { "interval", parse_duration, offsetof(struct server, interval_ms), false },
        KEY(struct server, max_actions_per_cycle, parse_action_count, false),
        KEY(struct server, terminate_superusers, parse_bool, false),
        KEY(struct server, exempt, parse_exempt, false),
        KEY(struct server, rules, parse_rules, true),
};
static const struct table server_table = TABLE(2, "a server", server_keys);

static void parse_servers(struct parser *p, const struct key *k, yaml_node_t *node, void *dest) {
        struct config *c = (struct config *) ((char *) dest - offsetof(struct config, servers));

        c->servers = walk_sequence(p, k, node, CONFIG_MAX_SERVERS, sizeof(struct server), &c->n_servers,
                                   &server_table, NULL, server_check);
        for (size_t i = 0; i < c->n_servers; i++)
                for (size_t j = 0; j < i && c->servers[i].name; j++) {
                        if (!c->servers[j].name || strcmp(c->servers[j].name, c->servers[i].name) != 0)
                                continue;
                        if (sequence_item(p, node, i) == sequence_item(p, node, j))
                                report(p, true, c->servers[i].pos, "server \"%s\" is listed twice in \"servers\" at "
                                       "line %u (the same alias used twice)", c->servers[i].name, pos_of(node).line);
                        else
                                report(p, true, c->servers[i].pos, "duplicate server name \"%s\" (first at line %u)",
                                       c->servers[i].name, c->servers[j].pos.line);
                        break;
                }
}

static const struct key top_keys[] = {
        { "interval", parse_duration, offsetof(struct config, interval_ms), false },
        { "min_interval", parse_duration, offsetof(struct config, min_interval_ms), false },
        KEY(struct config, dry_run, parse_bool, false),
        KEY(struct config, log_query, parse_bool, false),
        KEY(struct config, metrics_file, parse_path, false),
        KEY(struct config, max_actions_per_cycle, parse_action_count, false),
        KEY(struct config, exempt, parse_exempt, false),
        KEY(struct config, servers, parse_servers, true),
};
static const struct table top_table = TABLE(3, "the top level", top_keys);

_Static_assert(ELEMENTSOF(rule_keys) <= MAX_KEYS && ELEMENTSOF(server_keys) <= MAX_KEYS &&
                       ELEMENTSOF(top_keys) <= MAX_KEYS, "MAX_KEYS is too small");

static const struct table *const all_tables[] = { &top_table, &server_table, &rule_table, &exempt_table };

/* "a server or a rule" when name is a key of other tables but not of here. */
static const char *key_home(const char *name, const struct table *here, char *buf, size_t len) {
        size_t n = 0;

        buf[0] = '\0';
        for (size_t t = 0; t < ELEMENTSOF(all_tables); t++) {
                if (all_tables[t] == here)
                        continue;
                for (size_t i = 0; i < all_tables[t]->n_keys; i++)
                        if (strcmp(all_tables[t]->keys[i].name, name) == 0) {
                                int r = snprintf(buf + n, len - n, "%s%s", n ? " or " : "", all_tables[t]->what);
                                if (r > 0 && (size_t) r < len - n)
                                        n += (size_t) r;
                        }
        }
        return n ? buf : NULL;
}

static size_t edit_distance(const char *a, const char *b) {
        size_t la = strlen(a), lb = strlen(b), row[33];

        if (la > 32 || lb > 32)
                return SIZE_MAX;
        for (size_t j = 0; j <= lb; j++)
                row[j] = j;
        for (size_t i = 1; i <= la; i++) {
                size_t diag = row[0];
                row[0] = i;
                for (size_t j = 1; j <= lb; j++) {
                        size_t up = row[j], best = diag + (a[i - 1] != b[j - 1]);
                        if (up + 1 < best)
                                best = up + 1;
                        if (row[j - 1] + 1 < best)
                                best = row[j - 1] + 1;
                        diag = up;
                        row[j] = best;
                }
        }
        return row[lb];
}

static const char *key_suggestion(const char *name, const struct table *t) {
        const char *best = NULL;
        size_t best_d = 3;

        for (size_t i = 0; i < t->n_keys; i++) {
                size_t d = edit_distance(name, t->keys[i].name);
                if (d < best_d && d <= strlen(t->keys[i].name) / 2) {
                        best = t->keys[i].name;
                        best_d = d;
                }
        }
        return best;
}

/* The value node of key name in a mapping, or NULL. */
static yaml_node_t *find_value(struct parser *p, yaml_node_t *map, const char *name) {
        if (!map || map->type != YAML_MAPPING_NODE)
                return NULL;
        for (yaml_node_pair_t *pair = map->data.mapping.pairs.start; pair < map->data.mapping.pairs.top; pair++) {
                yaml_node_t *k = yaml_document_get_node(&p->doc, pair->key);
                if (k && k->type == YAML_SCALAR_NODE && strcmp((const char *) k->data.scalar.value, name) == 0)
                        return yaml_document_get_node(&p->doc, pair->value);
        }
        return NULL;
}

static void finish(struct config *c) {
        if (c->interval_ms == 0)
                c->interval_ms = CONFIG_DEFAULT_INTERVAL_MS;
        if (c->min_interval_ms == 0)
                c->min_interval_ms = CONFIG_DEFAULT_MIN_INTERVAL_MS;
        if (c->max_actions_per_cycle == 0)
                c->max_actions_per_cycle = CONFIG_DEFAULT_MAX_ACTIONS;
        for (size_t i = 0; i < c->n_servers; i++) {
                struct server *s = &c->servers[i];
                if (s->interval_ms == 0)
                        s->interval_ms = c->interval_ms;
                if (s->max_actions_per_cycle == 0)
                        s->max_actions_per_cycle = c->max_actions_per_cycle;
                s->global_exempt = &c->exempt;
        }
}

/* Does rule a act on every session that rule b would act on, and win? The
 * policy picks enforcing over dry-run, then the stronger action, then the
 * earlier rule. */
static bool rule_shadows(const struct rule *a, size_t ia, const struct rule *b, size_t ib) {
        bool b_has_limit = false;

        for (size_t i = 0; i < ELEMENTSOF(exempt_keys); i++)
                if (list_empty(&b->filter, i))
                        return false;  /* warned about already: it never matches at all */
        if (a->role != ROLE_ANY && a->role != b->role)
                return false;  /* b applies in a role where a does not */

        if (a->dry_run != b->dry_run) {
                if (a->dry_run)
                        return false;
        } else if (a->action != b->action) {
                if (a->action < b->action)
                        return false;
        } else if (ia > ib)
                return false;
        for (enum limit_kind l = 0; l < _LIMIT_MAX; l++) {
                if (b->limit_ms[l] == 0)
                        continue;
                b_has_limit = true;
                if (a->limit_ms[l] == 0 || a->limit_ms[l] > b->limit_ms[l])
                        return false;
                if (limit_is_chain(l) && rule_min_blocked(a, l) > rule_min_blocked(b, l))
                        return false;
        }
        return b_has_limit && filter_includes(&a->filter, &b->filter) &&
               (!a->exempt.set || filter_equal(&a->exempt, &b->exempt));
}

/* Warnings that need the whole file: they never fail the load. */
static void cross_checks(struct parser *p, const struct config *c, yaml_node_t *root) {
        yaml_node_t *servers = find_value(p, root, "servers");
        char a[DURATION_FORMAT_MAX], b[DURATION_FORMAT_MAX];

        if (c->min_interval_ms > c->interval_ms && find_value(p, root, "min_interval"))
                warning_at(p, find_value(p, root, "min_interval"),
                           "\"min_interval\" (%s) is longer than \"interval\" (%s); polls happen at most every %s",
                           duration_format(c->min_interval_ms, a, sizeof(a)),
                           duration_format(c->interval_ms, b, sizeof(b)), a);
        if (!servers || servers->type != YAML_SEQUENCE_NODE || p->over_budget)
                return;
        for (size_t i = 0; i < c->n_servers && i < sequence_length(servers); i++) {
                const struct server *s = &c->servers[i];
                yaml_node_t *snode = sequence_item(p, servers, i);
                yaml_node_t *rules = find_value(p, snode, "rules");

                if (!s->name)
                        continue;
                for (size_t j = 0; rules && j < s->n_rules; j++)
                        for (size_t k = 0; k < s->n_rules; k++)
                                if (k != j && s->rules[j].name && s->rules[k].name &&
                                    rule_shadows(&s->rules[k], k, &s->rules[j], j)) {
                                        report(p, false, s->rules[j].pos,
                                               "rule \"%s\" never acts in server \"%s\": rule \"%s\" (line %u) "
                                               "catches every session it would and takes precedence",
                                               s->rules[j].name, s->name, s->rules[k].name, s->rules[k].pos.line);
                                        break;
                                }
        }
}

void config_free(struct config *c) {
        if (!c)
                return;
        for (size_t i = 0; i < c->n_servers; i++) {
                struct server *s = &c->servers[i];
                for (size_t j = 0; j < s->n_rules; j++) {
                        free(s->rules[j].name);
                        filter_done(&s->rules[j].filter);
                        filter_done(&s->rules[j].exempt);
                }
                free(s->rules);
                free(s->name);
                free(s->conninfo);
                filter_done(&s->exempt);
        }
        free(c->servers);
        filter_done(&c->exempt);
        free(c->metrics_file);
        free(c->path);
        free(c);
}

/* Exact and loadable again: "1h30m", "1m0s5ms" never; "1m5ms". */
static void dump_duration(FILE *f, int64_t ms) {
        static const struct {
                const char *suffix;
                int64_t ms;
        } parts[] = { { "d", 86400000 }, { "h", 3600000 }, { "m", 60000 }, { "s", 1000 }, { "ms", 1 } };

        for (size_t i = 0; i < ELEMENTSOF(parts); i++)
                if (ms >= parts[i].ms) {
                        fprintf(f, "%" PRId64 "%s", ms / parts[i].ms, parts[i].suffix);
                        ms %= parts[i].ms;
                }
        fputc('\n', f);
}

/* Code points libyaml accepts unescaped in a double-quoted scalar without
 * folding them: YAML 1.1's printable set minus line breaks and the BOM. */
static bool yaml_printable(uint32_t cp) {
        return (cp >= 0x20 && cp <= 0x7e) || (cp >= 0xa0 && cp <= 0xd7ff && cp != 0x2028 && cp != 0x2029) ||
               (cp >= 0xe000 && cp <= 0xfffd && cp != 0xfeff) || (cp >= 0x10000 && cp <= 0x10ffff);
}

/* A YAML double-quoted scalar that reads back byte for byte. */
static void dump_string(FILE *f, const char *s) {
        const unsigned char *c = (const unsigned char *) s;
        const char *end = s + strlen(s);

        fputc('"', f);
        while (*c) {
                uint32_t cp = 0;
                size_t n = utf8_decode((const char *) c, (size_t) (end - (const char *) c), &cp);

                if (*c == '"' || *c == '\\')
                        fprintf(f, "\\%c", *c);
                else if (n == 0) {
                        fprintf(f, "\\x%02x", *c);  /* not UTF-8: escape the byte */
                        n = 1;
                } else if (yaml_printable(cp))
                        fwrite(c, 1, n, f);
                else if (cp <= 0xff)
                        fprintf(f, "\\x%02x", (unsigned) cp);
                else if (cp <= 0xffff)
                        fprintf(f, "\\u%04x", (unsigned) cp);
                else
                        fprintf(f, "\\U%08x", (unsigned) cp);
                c += n;
        }
        fputc('"', f);
}

static void dump_name_list(FILE *f, const char *indent, const char *key, const struct name_list *l) {
        if (!l->given)
                return;
        fprintf(f, "%s%s: [", indent, key);
        for (size_t i = 0; i < l->n; i++) {
                fputs(i ? ", " : "", f);
                dump_string(f, l->patterns[i]);
        }
        fputs("]\n", f);
}

static void dump_filter(FILE *f, const char *indent, const struct filter *flt) {
        const struct addr_list *a = &flt->client_addresses;

        dump_name_list(f, indent, "users", &flt->users);
        dump_name_list(f, indent, "databases", &flt->databases);
        dump_name_list(f, indent, "applications", &flt->applications);
        dump_name_list(f, indent, "queries", &flt->queries);
        if (a->given) {
                fprintf(f, "%sclient_addresses: [%s", indent, a->local ? "local" : "");
                for (size_t i = 0; i < a->n; i++) {
                        char buf[NETMASK_FORMAT_MAX];
                        fprintf(f, "%s\"%s\"", i || a->local ? ", " : "", netmask_format(&a->masks[i], buf, sizeof(buf)));
                }
                fputs("]\n", f);
        }
}

static void dump_exempt(FILE *f, const char *indent, const char *inner, const struct filter *flt) {
        if (!flt->set)
                return;
        fprintf(f, "%sexempt:\n", indent);
        dump_filter(f, inner, flt);
}

static void dump_quoted_chars(FILE *m, const char *v, size_t n) {
        for (size_t i = 0; i < n; i++)
                fprintf(m, v[i] == '\'' || v[i] == '\\' ? "\\%c" : "%c", v[i]);
}

/* "options" passes settings to the server, and a setting can be a credential
 * ("-c app.token=..."): show each argument up to its "=", the value as ***. */
static void dump_server_options(FILE *m, const char *v) {
        while (*v) {
                size_t n = 0;
                const char *eq;

                while (v[n] && !isspace((unsigned char) v[n]))
                        n += v[n] == '\\' && v[n + 1] ? 2 : 1;
                eq = memchr(v, '=', n);
                if (eq) {
                        dump_quoted_chars(m, v, (size_t) (eq - v) + 1);
                        fputs("***", m);
                } else
                        dump_quoted_chars(m, v, n);
                v += n;
                for (; isspace((unsigned char) *v); v++)
                        fputc(' ', m);
        }
}

/* Options in libpq's order, values quoted; secrets (dispchar '*') as ***. */
static void dump_conninfo(FILE *f, const char *conninfo) {
        PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
        char *text = NULL;
        size_t len = 0;
        FILE *m;

        if (!opts || !(m = open_memstream(&text, &len))) {
                PQconninfoFree(opts);
                fputs("\"\"\n", f);
                return;
        }
        for (PQconninfoOption *o = opts; o->keyword; o++) {
                if (!o->val)
                        continue;
                fprintf(m, "%s%s='", ftell(m) ? " " : "", o->keyword);
                if (o->dispchar && strchr(o->dispchar, '*'))
                        fputs("***", m);
                else if (strcmp(o->keyword, "options") == 0)
                        dump_server_options(m, o->val);
                else
                        dump_quoted_chars(m, o->val, strlen(o->val));
                fputc('\'', m);
        }
        fclose(m);
        dump_string(f, text);
        fputc('\n', f);
        free(text);
        PQconninfoFree(opts);
}

void config_dump(const struct config *c, FILE *f) {
        fputs("interval: ", f);
        dump_duration(f, c->interval_ms);
        fputs("min_interval: ", f);
        dump_duration(f, c->min_interval_ms);
        fprintf(f, "dry_run: %s\n", c->dry_run ? "true" : "false");
        fprintf(f, "log_query: %s\n", c->log_query ? "true" : "false");
        if (c->metrics_file) {
                fputs("metrics_file: ", f);
                dump_string(f, c->metrics_file);
                fputc('\n', f);
        }
        fprintf(f, "max_actions_per_cycle: %u\n", c->max_actions_per_cycle);
        dump_exempt(f, "", "  ", &c->exempt);
        fputs("servers:\n", f);
        for (size_t i = 0; i < c->n_servers; i++) {
                const struct server *s = &c->servers[i];

                fputs("  - name: ", f);
                dump_string(f, s->name);
                fputs("\n    conninfo: ", f);
                dump_conninfo(f, s->conninfo);
                fputs("    interval: ", f);
                dump_duration(f, s->interval_ms);
                fprintf(f, "    max_actions_per_cycle: %u\n", s->max_actions_per_cycle);
                fprintf(f, "    terminate_superusers: %s\n", s->terminate_superusers ? "true" : "false");
                dump_exempt(f, "    ", "      ", &s->exempt);
                fputs("    rules:\n", f);
                for (size_t j = 0; j < s->n_rules; j++) {
                        const struct rule *r = &s->rules[j];

                        fputs("      - name: ", f);
                        dump_string(f, r->name);
                        fputc('\n', f);
                        for (enum limit_kind l = 0; l < _LIMIT_MAX; l++)
                                if (r->limit_ms[l] > 0 && !limit_is_duration(l))
                                        fprintf(f, "        %s: %" PRId64 "\n", limit_keys[l], r->limit_ms[l]);
                                else if (r->limit_ms[l] > 0) {
                                        fprintf(f, "        %s: ", limit_keys[l]);
                                        dump_duration(f, r->limit_ms[l]);
                                }
                        /* With both lock limits and no min_blocked, each has its own
                         * default: no single value says that. */
                        if (r->min_blocked >= 0 || (rule_reads_locks(r) &&
                                                    !(r->limit_ms[LIMIT_BLOCKING] > 0 && r->limit_ms[LIMIT_LOCK_WAIT] > 0)))
                                fprintf(f, "        min_blocked: %" PRId64 "\n",
                                        rule_min_blocked(r, r->limit_ms[LIMIT_BLOCKING] > 0 ? LIMIT_BLOCKING
                                                                                            : LIMIT_LOCK_WAIT));
                        fprintf(f, "        action: %s\n", action_names[r->action]);
                        if (r->escalate_after_ms > 0) {
                                fputs("        escalate_after: ", f);
                                dump_duration(f, r->escalate_after_ms);
                        }
                        fprintf(f, "        dry_run: %s\n", r->dry_run ? "true" : "false");
                        fprintf(f, "        role: %s\n", role_names[r->role]);
                        dump_filter(f, "        ", &r->filter);
                        dump_exempt(f, "        ", "          ", &r->exempt);
                }
        }
}

static void report_yaml_error(struct parser *p, const yaml_parser_t *yp) {
        struct source_pos pos = { (unsigned) yp->problem_mark.line + 1, (unsigned) yp->problem_mark.column + 1 };

        if (yp->error == YAML_MEMORY_ERROR) {
                fputs("out of memory\n", stderr);
                abort();
        }
        if (yp->context)
                report(p, true, pos, "YAML syntax: %s %s started at line %zu, column %zu",
                       yp->problem ? yp->problem : "error",
                       yp->context, yp->context_mark.line + 1, yp->context_mark.column + 1);
        else
                report(p, true, pos, "YAML syntax: %s", yp->problem ? yp->problem : "error");
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
                                report(p, true, pos, "lists and mappings are nested more than %d deep here; "
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
                                report(p, true, pos, "more than %d aliases; stopped reading", CONFIG_MAX_ALIASES);
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
                        report(p, true, pos, "more than %d anchors; stopped reading", CONFIG_MAX_ANCHORS);
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
                flush_diagnostics(&p);
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
                        report_yaml_error(&p, &yp);
        }

        p.unknown_key_reported = xcalloc((size_t) (p.doc.nodes.top - p.doc.nodes.start), 1);
        c = xcalloc(1, sizeof(*c));
        walk_mapping(&p, root, &top_table, c, NULL);
        finish(c);
        /* warnings about a half-read file would only confuse */
        if (!p.failed)
                cross_checks(&p, c, root);
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
        flush_diagnostics(&p);
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
                report(&p, true, (struct source_pos) { 0, 0 }, "cannot open: %s", strerror(-r));
                flush_diagnostics(&p);
                return r;
        }
        if (fstat(fd, &st) < 0) {
                r = -errno;
                report(&p, true, (struct source_pos) { 0, 0 }, "cannot stat: %s", strerror(-r));
        } else if (!S_ISREG(st.st_mode)) {
                r = -EINVAL;
                report(&p, true, (struct source_pos) { 0, 0 }, "is %s; the configuration must be a regular file",
                       file_type(st.st_mode));
        } else if ((r = read_bounded(fd, CONFIG_MAX_BYTES, &buf, &len)) < 0)
                report(&p, true, (struct source_pos) { 0, 0 }, "cannot read: %s", strerror(-r));
        else if (len > CONFIG_MAX_BYTES) {
                r = -EINVAL;
                report(&p, true, (struct source_pos) { 0, 0 }, "the file is larger than %d bytes (1 MiB), "
                       "the most a configuration may have", CONFIG_MAX_BYTES);
        }
        close(fd);
        if (r < 0) {
                flush_diagnostics(&p);
                return r;
        }
        return config_load_buffer(path, buf, len, ret, diag);
}
