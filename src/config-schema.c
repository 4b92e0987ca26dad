/* The YAML configuration, walked with a table of expected keys per mapping.
 * Every problem is reported as FILE:LINE:COLUMN and the walk goes on, so one
 * run shows all of them. */
#include <inttypes.h>
#include <libpq-fe.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "config-internal.h"
#include "config.h"
#include "conninfo.h"
#include "duration.h"
#include "filter.h"
#include "macro.h"
#include "netmatch.h"

#define CONFIG_MAX_SERVERS     4096
#define CONFIG_MAX_RULES       256
#define CONFIG_MAX_LIST        4096
/* Aliases let a small file name the same subtree many times ("billion
 * laughs"); every node visited and every 64 bytes copied cost one unit. */
#ifndef CONFIG_MAX_WORK  /* the fuzz build lowers it to spend its time elsewhere */
#define CONFIG_MAX_WORK        1000000
#endif
#define NAME_MAX_LEN           63
#define INCLUDE_MAX_LEN        4096
/* Rules copied from rule sets into servers, in all: a fleet of 4000 servers
 * with a set of 50 rules fits. */
#define CONFIG_MAX_RULE_COPIES 200000
#define PATTERN_MAX_LEN        255
#define MAX_KEYS               24

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
        [LIMIT_SESSIONS] = "max_sessions",
};

static const char *const group_key_names[_GROUP_MAX] = {
        [GROUP_ALL] = "all",
        [GROUP_USER] = "user",
        [GROUP_DATABASE] = "database",
        [GROUP_APPLICATION] = "application",
        [GROUP_CLIENT_ADDRESS] = "client_address",
};

DEFINE_STRING_TABLE_LOOKUP(group_key, enum group_key, group_key_names)

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

bool rule_pressure_on(const struct rule *r, int64_t connections, int64_t slots) {
        if (r->connections_above <= 0)
                return true;
        if (connections < 0 || (r->connections_above_percent && slots < 0))
                return false;
        /* P% of the slots, exactly: connections > P * slots / 100 */
        return r->connections_above_percent ? connections * 100 > r->connections_above * slots
                                            : connections > r->connections_above;
}

DEFINE_STRING_TABLE_LOOKUP(server_role, enum server_role, role_names)

static const char *const action_names[_ACTION_MAX] = {
        [ACTION_LOG] = "log",
        [ACTION_CANCEL] = "cancel",
        [ACTION_TERMINATE] = "terminate",
};

DEFINE_STRING_TABLE_LOOKUP(limit_kind, enum limit_kind, limit_keys)
DEFINE_STRING_TABLE_LOOKUP(action, enum action, action_names)

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

/* A duration in milliseconds; zero allowed or not. Returns -1 when reported. */
static int64_t duration_value(struct parser *p, const struct key *k, yaml_node_t *node, bool zero_ok) {
        const char *v = expect_scalar(p, k, node, "a duration such as \"30s\"");
        const char *why;
        int64_t ms;

        if (!v)
                return -1;
        if (duration_parse(v, &ms, &why) < 0) {
                error_at(p, node, "invalid duration \"%s\" for \"%s\": %s", v, k->name, why);
                return -1;
        }
        if (ms == 0 && !zero_ok) {
                error_at(p, node, "\"%s\" must be longer than zero", k->name);
                return -1;
        }
        return ms;
}

/* A positive duration in milliseconds. */
static void parse_duration(struct parser *p, const struct key *k, yaml_node_t *node, void *dest) {
        int64_t ms = duration_value(p, k, node, false);
        if (ms >= 0)
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

/* A count of sessions, min to CONFIG_MAX_SESSIONS, into *dest. */
#define CONFIG_MAX_SESSIONS 1000000
static void session_count(struct parser *p, const struct key *k, yaml_node_t *node, int64_t *dest, int min) {
        const char *v = expect_scalar(p, k, node, "a number of sessions");
        int64_t n = 0;
        const char *c;

        if (!v)
                return;
        for (c = v; *c >= '0' && *c <= '9' && n <= CONFIG_MAX_SESSIONS; c++)
                n = n * 10 + (*c - '0');
        if (node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) {
                error_at(p, node, "\"%s\" must be a plain number, not the quoted string \"%s\"", k->name, v);
                return;
        }
        if (c == v || *c) {
                if (c != v && *c >= '0' && *c <= '9')
                        error_at(p, node, "\"%s\" is out of range: %s is not from %d to %d", k->name, v, min,
                                 CONFIG_MAX_SESSIONS);
                else
                        error_at(p, node, "\"%s\" must be a whole number of sessions from %d to %d, not \"%s\"",
                                 k->name, min, CONFIG_MAX_SESSIONS, v);
                return;
        }
        if (n < min || n > CONFIG_MAX_SESSIONS) {
                error_at(p, node, "\"%s\" is out of range: %s is not from %d to %d", k->name, v, min,
                         CONFIG_MAX_SESSIONS);
                return;
        }
        *dest = n;
}

static void parse_session_count(struct parser *p, const struct key *k, yaml_node_t *node, void *dest) {
        session_count(p, k, node, dest, 0);
}

/* max_sessions: a limit, so at least one session. */
static void parse_max_sessions(struct parser *p, const struct key *k, yaml_node_t *node, void *dest) {
        session_count(p, k, node, dest, 1);
}

/* A duration that may be zero ("0s"): min_idle, whose default is 0. */
static void parse_duration_or_zero(struct parser *p, const struct key *k, yaml_node_t *node, void *dest) {
        int64_t ms = duration_value(p, k, node, true);
        if (ms >= 0)
                *(int64_t *) dest = ms;
}

static void parse_group_key(struct parser *p, const struct key *k, yaml_node_t *node, void *dest) {
        const char *v = expect_scalar(p, k, node, "user, database, application or client_address");
        int g;

        if (!v)
                return;
        g = group_key_from_string(v);
        /* "all" is what omitting "per" means; it is not written */
        if (g > GROUP_ALL) {
                *(enum group_key *) dest = (enum group_key) g;
                return;
        }
        error_at(p, node, "\"%s\" must be user, database, application or client_address, not \"%s\"", k->name, v);
}

/* when_connections_above: "P%" (1 to 100 percent of the usable slots) or N
 * connections, a plain positive whole number. dest is the rule's
 * connections_above; connections_above_percent is set alongside. */
#define THRESHOLD_EXAMPLE "a percentage such as 90% or a number of connections such as 450"
static void parse_connections_above(struct parser *p, const struct key *k, yaml_node_t *node, void *dest) {
        struct rule *r = (struct rule *) ((char *) dest - offsetof(struct rule, connections_above));
        const char *v = expect_scalar(p, k, node, THRESHOLD_EXAMPLE);
        int64_t n = 0;
        bool over = false, percent;
        const char *c;

        if (!v)
                return;
        for (c = v; *c >= '0' && *c <= '9'; c++) {
                n = n * 10 + (*c - '0');
                over = over || n > CONFIG_MAX_SESSIONS;
                if (over)
                        n = CONFIG_MAX_SESSIONS + 1;
        }
        percent = c != v && c[0] == '%' && c[1] == '\0';
        if (c == v || (*c && !percent)) {
                error_at(p, node, "\"%s\" must be a whole percentage of the usable connection slots (1%% to 100%%, "
                         "such as 90%%) or a whole number of connections (such as 450), not \"%s\"", k->name, v);
                return;
        }
        if (percent && (n < 1 || n > 100)) {
                error_at(p, node, "\"%s\" is out of range: %s is not from 1%% to 100%%", k->name, v);
                return;
        }
        /* "90%" is a string in YAML either way; a count must be a plain number */
        if (!percent && node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) {
                error_at(p, node, "\"%s\" must be a plain number such as 450, not the quoted string \"%s\"",
                         k->name, v);
                return;
        }
        if (!percent && (n < 1 || over)) {
                error_at(p, node, "\"%s\" is out of range: %s is not from 1 to %d connections", k->name, v,
                         CONFIG_MAX_SESSIONS);
                return;
        }
        r->connections_above = n;
        r->connections_above_percent = percent;
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

static bool table_has(const struct table *t, const char *name) {
        for (size_t i = 0; i < t->n_keys; i++)
                if (strcmp(t->keys[i].name, name) == 0)
                        return true;
        return false;
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

bool config_filter_never_matches(const struct filter *f) {
        for (size_t i = 0; i < ELEMENTSOF(exempt_keys); i++)
                if (list_empty(f, i))
                        return true;
        return false;
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
        { "max_sessions", parse_max_sessions, offsetof(struct rule, limit_ms[LIMIT_SESSIONS]), false },
        KEY(struct rule, per, parse_group_key, false),
        { "min_idle", parse_duration_or_zero, offsetof(struct rule, min_idle_ms), false },
        { "when_connections_above", parse_connections_above, offsetof(struct rule, connections_above), false },
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
        yaml_node_t *max_sessions = seen[key_index(&rule_table, "max_sessions")];
        yaml_node_t *action = seen[key_index(&rule_table, "action")];
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
                         "max_xmin_age, max_sessions%s", label,
                         seen[key_index(&rule_table, "when_connections_above")]
                                 ? " (when_connections_above is a condition, not a limit)" : "");
        if (seen[key_index(&rule_table, "min_blocked")] && !rule_reads_locks(r) && any)
                error_at(p, seen[key_index(&rule_table, "min_blocked")],
                         "\"min_blocked\" only works with \"max_blocking\" or \"max_lock_wait\"; %s has neither", label);
        if (r->escalate_after_ms > 0 && r->action != ACTION_CANCEL && action_valid(action))
                error_at(p, seen[key_index(&rule_table, "escalate_after")],
                         "\"escalate_after\" only works with \"action: cancel\"; %s has action %s%s", label,
                         action_names[r->action], action ? "" : " (the default)");
        /* the keys of max_sessions, reported even when its own value was wrong */
        if (!max_sessions && any)
                for (size_t i = 0; i < 2; i++) {
                        const char *key = i ? "min_idle" : "per";
                        if (seen[key_index(&rule_table, key)])
                                error_at(p, seen[key_index(&rule_table, key)],
                                         "\"%s\" only works with \"max_sessions\"; %s has no max_sessions", key,
                                         label);
                }
        if (max_sessions && seen[key_index(&rule_table, "queries")])
                error_at(p, seen[key_index(&rule_table, "queries")],
                         "\"queries\" does not work with \"max_sessions\" (%s): max_sessions counts sessions by "
                         "user, database, application and client address, whatever they run", label);
        if (max_sessions && r->action == ACTION_CANCEL && action_valid(action))
                error_at(p, action, "\"action: cancel\" does not work with \"max_sessions\" (%s): cancelling an "
                         "idle session frees no connection slot; use terminate or log", label);
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

static void rules_free(struct rule *rules, size_t n) {
        for (size_t j = 0; j < n; j++) {
                if (rules[j].shared)
                        continue;
                free(rules[j].name);
                filter_done(&rules[j].filter);
                filter_done(&rules[j].exempt);
        }
        free(rules);
}

/* A list of rules (a server's "rules", or a rule set), each name once. */
static struct rule *walk_rules(struct parser *p, const struct key *k, yaml_node_t *node, size_t *ret_n) {
        struct rule *rules = walk_sequence(p, k, node, CONFIG_MAX_RULES, sizeof(struct rule), ret_n, &rule_table,
                                           rule_init, rule_check);

        for (size_t i = 0; i < *ret_n; i++) {
                struct rule *r = &rules[i];
                yaml_node_t *item = sequence_item(p, node, i);

                for (size_t j = 0; j < i && r->name; j++) {
                        if (!rules[j].name || strcmp(rules[j].name, r->name) != 0)
                                continue;
                        if (item == sequence_item(p, node, j))
                                error_at(p, item, "rule \"%s\" is listed twice in \"%s\" at line %u (the same "
                                         "alias used twice)", r->name, k->name, pos_of(node).line);
                        else
                                error_at(p, item, "duplicate rule name \"%s\" (first at line %u)", r->name,
                                         rules[j].pos.line);
                        break;
                }
        }
        return rules;
}

static void parse_rules(struct parser *p, const struct key *k, yaml_node_t *node, void *dest) {
        struct server *s = (struct server *) ((char *) dest - offsetof(struct server, rules));

        s->rules = walk_rules(p, k, node, &s->n_rules);
}

/* A server's "rule_sets": names, resolved once every file is read. */
static void parse_server_sets(struct parser *p, const struct key *k, yaml_node_t *node, void *dest) {
        struct server *s = (struct server *) ((char *) dest - offsetof(struct server, rule_sets));
        size_t n;

        if (!list_prologue(p, k, node, "[standard]"))
                return;
        n = sequence_length(node);
        if (n == 0) {
                /* as "rules: []": a server would be left without a rule */
                error_at(p, node, "\"%s\" must not be empty", k->name);
                return;
        }
        s->rule_sets = xcalloc(n + 1, sizeof(char *));
        s->rule_set_pos = xcalloc(n + 1, sizeof(*s->rule_set_pos));
        for (size_t i = 0; i < n && !p->over_budget; i++) {
                yaml_node_t *item = sequence_item(p, node, i);
                const char *v;

                if (item && scalar_is_null(item)) {
                        error_at(p, item, "empty entry in \"%s\"; expected the name of a rule set", k->name);
                        continue;
                }
                if (!item || !(v = list_entry(p, k, item, "names of rule sets")))
                        continue;
                for (size_t j = 0; j < s->n_rule_sets; j++)
                        if (strcmp(s->rule_sets[j], v) == 0) {
                                error_at(p, item, "rule set \"%s\" is named twice in \"rule_sets\"", v);
                                v = NULL;
                                break;
                        }
                if (!v)
                        continue;
                s->rule_set_pos[s->n_rule_sets] = pos_of(item);
                s->rule_sets[s->n_rule_sets++] = xstrdup(v);
        }
}

/* "rule_sets" at the top level: a mapping of names to lists of rules, each
 * checked and kept once; servers that name a set hold copies of its rules
 * (config_resolve_sets). */
static void parse_rule_sets(struct parser *p, const struct key *k, yaml_node_t *node, void *dest) {
        static const struct key set_key = { .name = "rule_sets" };
        struct config *c = (struct config *) ((char *) dest - offsetof(struct config, rule_sets));

        if (node->type != YAML_MAPPING_NODE) {
                error_at(p, node, "\"rule_sets\" must be a mapping of set names to lists of rules, not %s",
                         kind_or_empty(node));
                return;
        }
        for (yaml_node_pair_t *pair = node->data.mapping.pairs.start; pair < node->data.mapping.pairs.top; pair++) {
                yaml_node_t *knode = yaml_document_get_node(&p->doc, pair->key);
                yaml_node_t *vnode = yaml_document_get_node(&p->doc, pair->value);
                _cleanup_free_ char *name = NULL;
                struct rule *rules;
                size_t n;
                bool dup = false;

                if (!knode || !vnode || !spend(p, knode, 1))
                        break;
                if (knode->type != YAML_SCALAR_NODE) {
                        error_at(p, knode, "the names of rule sets must be plain names, not %s", node_kind(knode));
                        continue;
                }
                if (scalar_is_null(knode) || !knode->data.scalar.value[0]) {
                        error_at(p, knode, "a rule set needs a name; this one is empty");
                        continue;
                }
                parse_name(p, &set_key, knode, &name);
                if (!name)
                        continue;
                for (size_t i = 0; i < c->n_rule_sets && !dup; i++)
                        if (strcmp(c->rule_sets[i].name, name) == 0) {
                                error_at(p, knode, "duplicate rule set \"%s\" (first at line %u)", name,
                                         c->rule_sets[i].pos.line);
                                dup = true;
                        }
                rules = walk_rules(p, &(struct key) { .name = name }, vnode, &n);
                if (dup) {
                        rules_free(rules, n);
                        continue;
                }
                /* kept even when wrong (reported here): a server naming it is not told it is undefined */
                c->rule_sets = xreallocarray(c->rule_sets, c->n_rule_sets + 1, sizeof(*c->rule_sets));
                c->rule_sets[c->n_rule_sets++] = (struct rule_set) { TAKE_PTR(name), rules, n, pos_of(knode) };
        }
}

/* "include": globs, followed by config_load() once the main file is read. */
static void parse_include(struct parser *p, const struct key *k, yaml_node_t *node, void *dest) {
        struct config *c = (struct config *) ((char *) dest - offsetof(struct config, includes));
        size_t n;

        if (!list_prologue(p, k, node, "[\"conf.d/*.yaml\"]"))
                return;
        n = sequence_length(node);
        c->includes = xcalloc(n + 1, sizeof(char *));
        for (size_t i = 0; i < n && !p->over_budget; i++) {
                yaml_node_t *item = sequence_item(p, node, i);
                const char *v;

                if (item && scalar_is_null(item)) {
                        error_at(p, item, "an entry of \"include\" must not be empty");
                        continue;
                }
                if (!item || !(v = list_entry(p, k, item, "file names or glob patterns")))
                        continue;
                if (!*v) {
                        error_at(p, item, "an entry of \"include\" must not be empty");
                        continue;
                }
                if (strlen(v) > INCLUDE_MAX_LEN) {
                        error_at(p, item, "an entry of \"include\" is longer than %d characters", INCLUDE_MAX_LEN);
                        continue;
                }
                c->includes[c->n_includes++] = xstrdup(v);
        }
}

static const struct table server_table;

static void server_check(struct parser *p, void *item, yaml_node_t *node, yaml_node_t **seen) {
        ((struct server *) item)->pos = pos_of(node);
        if (node->type == YAML_MAPPING_NODE && !seen[key_index(&server_table, "rules")] &&
            !seen[key_index(&server_table, "rule_sets")])
                error_at(p, node, "a server is missing the required key \"rules\" (or \"rule_sets\")");
}

static const struct key server_keys[] = {
        KEY(struct server, name, parse_name, true),
        KEY(struct server, conninfo, parse_conninfo, true),
        { "interval", parse_duration, offsetof(struct server, interval_ms), false },
        KEY(struct server, max_actions_per_cycle, parse_action_count, false),
        KEY(struct server, terminate_superusers, parse_bool, false),
        KEY(struct server, exempt, parse_exempt, false),
        KEY(struct server, rule_sets, parse_server_sets, false),
        KEY(struct server, rules, parse_rules, false),
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
                                config_report(p, true, c->servers[i].pos, "server \"%s\" is listed twice in "
                                              "\"servers\" at line %u (the same alias used twice)",
                                              c->servers[i].name, pos_of(node).line);
                        else
                                config_report(p, true, c->servers[i].pos,
                                              "duplicate server name \"%s\" (first at line %u)",
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
        KEY(struct config, servers, parse_servers, false),   /* required unless "include" (config_walk) */
        { "include", parse_include, offsetof(struct config, includes), false },
        { "rule_sets", parse_rule_sets, offsetof(struct config, rule_sets), false },
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

/* An included file holds "servers" only. */
static void walk_included(struct parser *p, yaml_node_t *root, struct config *c) {
        static const struct key servers_key = KEY(struct config, servers, parse_servers, true);
        bool servers = false;

        if (root->type != YAML_MAPPING_NODE) {
                error_at(p, root, "an included file must be a mapping with \"servers\", not %s", kind_or_empty(root));
                return;
        }
        for (yaml_node_pair_t *pair = root->data.mapping.pairs.start; pair < root->data.mapping.pairs.top; pair++) {
                yaml_node_t *knode = yaml_document_get_node(&p->doc, pair->key);
                yaml_node_t *vnode = yaml_document_get_node(&p->doc, pair->value);
                const char *name;

                if (!knode || !vnode || !spend(p, knode, 1))
                        break;
                if (knode->type != YAML_SCALAR_NODE) {
                        error_at(p, knode, "keys in an included file must be plain names, not %s", node_kind(knode));
                        continue;
                }
                name = (const char *) knode->data.scalar.value;
                if (strncmp(name, "x-", 2) == 0)
                        continue;
                if (strcmp(name, "servers") == 0) {
                        if (servers)
                                error_at(p, knode, "duplicate key \"servers\" in an included file");
                        else
                                parse_servers(p, &servers_key, vnode, &c->servers);
                        servers = true;
                } else if (strcmp(name, "include") == 0)
                        error_at(p, knode, "an included file cannot include; list every glob in \"include\" of "
                                 "the main file");
                else if (table_has(&top_table, name))
                        error_at(p, knode, "key \"%s\" belongs in the main file; an included file holds "
                                 "\"servers\" only", name);
                else
                        error_at(p, knode, "unknown key \"%s\" in an included file, which holds \"servers\" only",
                                 name);
        }
        if (!servers && !p->over_budget)
                error_at(p, root, "an included file is missing the required key \"servers\"");
}

void config_walk(struct parser *p, yaml_node_t *root, struct config *c) {
        yaml_node_t *seen[MAX_KEYS] = {};

        if (p->included) {
                walk_included(p, root, c);
                return;
        }
        walk_mapping(p, root, &top_table, c, seen);
        /* a fleet's main file may leave every server to its included files */
        if (root->type == YAML_MAPPING_NODE && !p->over_budget && !seen[key_index(&top_table, "servers")] &&
            !seen[key_index(&top_table, "include")])
                error_at(p, root, "%s is missing the required key \"servers\"", top_table.what);
}

void config_finish(struct config *c) {
        finish(c);
}

void config_parser_done(struct parser *p) {
        (void) p;
}

static const struct rule_set *find_set(const struct config *c, const char *name) {
        for (size_t i = 0; i < c->n_rule_sets; i++)
                if (strcmp(c->rule_sets[i].name, name) == 0)
                        return &c->rule_sets[i];
        return NULL;
}

void config_resolve_sets(struct parser *p, struct config *c, size_t from) {
        for (size_t i = from; i < c->n_servers; i++) {
                struct server *s = &c->servers[i];
                _cleanup_free_ struct source_pos *origin = NULL;   /* per set rule: the set's name in the server */
                _cleanup_free_ const char **set_of = NULL;          /* per set rule: its set */
                struct rule *rules = NULL;
                size_t n = 0;
                bool ok = true;

                for (size_t k = 0; k < s->n_rule_sets; k++) {
                        const struct rule_set *set = find_set(c, s->rule_sets[k]);

                        if (!set) {
                                char known[256] = "";
                                size_t used = 0;

                                for (size_t m = 0; m < c->n_rule_sets && used < sizeof(known) - 8; m++) {
                                        int w = snprintf(known + used, sizeof(known) - used, "%s%s", m ? ", " : "",
                                                         c->rule_sets[m].name);
                                        used += w > 0 ? (size_t) w : 0;
                                }
                                if (used >= sizeof(known) - 8)
                                        snprintf(known + sizeof(known) - 8, 8, ", ...");
                                config_report(p, true, s->rule_set_pos[k], "rule set \"%s\" is not defined; the "
                                              "main file %s defines %s%s", s->rule_sets[k], c->path ? c->path : "",
                                              c->n_rule_sets ? "" : "none (\"rule_sets\", at its top level)", known);
                                ok = false;
                                continue;
                        }
                        c->n_rule_copies += set->n_rules;
                        if (c->n_rule_copies > CONFIG_MAX_RULE_COPIES) {
                                config_report(p, true, s->rule_set_pos[k], "more than %d rules in all the servers "
                                              "once the rule sets are copied into every server that names them; "
                                              "stopped at rule set \"%s\" here", CONFIG_MAX_RULE_COPIES,
                                              s->rule_sets[k]);
                                ok = false;
                                break;
                        }
                        rules = xreallocarray(rules, n + set->n_rules + s->n_rules + 1, sizeof(*rules));
                        origin = xreallocarray(origin, n + set->n_rules + 1, sizeof(*origin));
                        set_of = xreallocarray(set_of, n + set->n_rules + 1, sizeof(*set_of));
                        for (size_t m = 0; m < set->n_rules; m++) {
                                rules[n + m] = set->rules[m];
                                rules[n + m].shared = true;
                                origin[n + m] = s->rule_set_pos[k];
                                set_of[n + m] = set->name;
                        }
                        n += set->n_rules;
                }
                if (!ok || n == 0) {
                        rules_free(rules, n);
                        continue;
                }
                /* the sets' rules first, then its own; every name once */
                rules = xreallocarray(rules, n + s->n_rules + 1, sizeof(*rules));
                if (s->n_rules > 0)  /* no rules of its own: s->rules is NULL */
                        memcpy(rules + n, s->rules, s->n_rules * sizeof(*rules));
                if (n + s->n_rules > CONFIG_MAX_RULES)
                        config_report(p, true, s->pos, "server \"%s\" has %zu rules with its rule sets; at most %d "
                                      "are allowed", s->name ? s->name : "", n + s->n_rules, CONFIG_MAX_RULES);
                /* a name twice among its own rules was reported by their walk */
                for (size_t a = 0; a < n + s->n_rules; a++)
                        for (size_t b = 0; b < a && b < n && rules[a].name; b++)
                                if (rules[b].name && strcmp(rules[a].name, rules[b].name) == 0) {
                                        char first[128], second[128];

                                        snprintf(first, sizeof(first), b < n ? "rule set \"%s\"" : "%s",
                                                 b < n ? set_of[b] : "its own rules");
                                        snprintf(second, sizeof(second), a < n ? "rule set \"%s\"" : "%s",
                                                 a < n ? set_of[a] : "its own rules");
                                        config_report(p, true, a >= n ? rules[a].pos : origin[a],
                                                      "rule \"%s\" appears twice in server \"%s\": in %s (%s "
                                                      "line %u) and in %s (%s line %u)", rules[a].name,
                                                      s->name ? s->name : "", first, b < n ? c->path : p->file,
                                                      rules[b].pos.line, second, a < n ? c->path : p->file,
                                                      rules[a].pos.line);
                                        break;
                                }
                free(s->rules);
                s->rules = rules;
                s->n_rules += n;
        }
}

static uint32_t name_hash(const char *s) {
        uint32_t h = 2166136261u;
        for (; *s; s++)
                h = (h ^ (uint8_t) *s) * 16777619u;
        return h;
}

/* The servers' names in an open-addressing table (slot: index + 1), so that a
 * fleet of n files costs n lookups, not n^2 comparisons. */
void config_check_server_names(struct parser *p, const struct config *c, size_t from, struct name_index *idx) {
        if (idx->n_slots < 2 * (c->n_servers + 1)) {
                size_t n_slots = 1024;
                while (n_slots < 2 * (c->n_servers + 1))
                        n_slots *= 2;
                free(idx->slots);
                idx->slots = xcalloc(n_slots, sizeof(*idx->slots));
                idx->n_slots = n_slots;
                idx->indexed = 0;
        }
        for (size_t i = idx->indexed; i < c->n_servers; i++) {
                const char *name = c->servers[i].name;
                size_t slot;

                if (!name)
                        continue;
                for (slot = name_hash(name) & (idx->n_slots - 1); idx->slots[slot];
                     slot = (slot + 1) & (idx->n_slots - 1)) {
                        const struct server *j = &c->servers[idx->slots[slot] - 1];

                        if (strcmp(j->name, name) != 0)
                                continue;
                        /* a duplicate inside one file was reported by that file's walk */
                        if (i >= from && idx->slots[slot] - 1 < from)
                                config_report(p, true, c->servers[i].pos, "server \"%s\" is defined twice: here "
                                              "and at %s:%u:%u", name, j->file ? j->file : c->path ? c->path : "",
                                              j->pos.line, j->pos.column);
                        break;
                }
                if (!idx->slots[slot])
                        idx->slots[slot] = i + 1;
        }
        idx->indexed = c->n_servers;
}

void config_free(struct config *c) {
        if (!c)
                return;
        config_free_parts(c);
        free(c);
}

void config_free_parts(struct config *c) {
        for (size_t i = 0; i < c->n_servers; i++) {
                struct server *s = &c->servers[i];
                rules_free(s->rules, s->n_rules);
                for (size_t j = 0; j < s->n_rule_sets; j++)
                        free(s->rule_sets[j]);
                free(s->rule_sets);
                free(s->rule_set_pos);
                free(s->file);
                free(s->name);
                free(s->conninfo);
                filter_done(&s->exempt);
        }
        free(c->servers);
        for (size_t i = 0; i < c->n_includes; i++)
                free(c->includes[i]);
        free(c->includes);
        for (size_t i = 0; i < c->n_rule_sets; i++) {
                free(c->rule_sets[i].name);
                rules_free(c->rule_sets[i].rules, c->rule_sets[i].n_rules);
        }
        free(c->rule_sets);
        filter_done(&c->exempt);
        free(c->metrics_file);
        free(c->path);
        *c = (struct config) {};
}
