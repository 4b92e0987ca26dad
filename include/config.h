/* The configuration: parsed once, immutable, replaced whole on reload. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "filter.h"

enum limit_kind {
        LIMIT_IDLE,                 /* state idle, now - state_change */
        LIMIT_IDLE_IN_TRANSACTION,  /* idle in transaction (aborted too), now - state_change */
        LIMIT_QUERY_DURATION,       /* state active, now - query_start */
        LIMIT_TRANSACTION_AGE,      /* any state, now - xact_start */
        LIMIT_SESSION_AGE,          /* now - backend_start */
        LIMIT_BLOCKING,             /* root of a lock chain: now - the longest wait behind it */
        LIMIT_LOCK_WAIT,            /* waiting for a heavyweight lock: now - its wait start */
        LIMIT_XMIN_AGE,             /* a count of transactions, not a duration:
                                     * greatest(age(backend_xmin), age(backend_xid)) */
        LIMIT_SESSIONS,             /* max_sessions: a count of sessions per group (section 14);
                                     * its victims are idle sessions, the longest idle first */
        _LIMIT_MAX,
};

/* Is the limit a duration (ms) whose crossing can be planned in time? */
static inline bool limit_is_duration(enum limit_kind k) {
        return k != LIMIT_XMIN_AGE && k != LIMIT_SESSIONS;
}

/* Is the limit's clock a timestamp of the session's own row (not the lock graph)? */
static inline bool limit_from_row(enum limit_kind k) {
        return k <= LIMIT_SESSION_AGE;
}

static inline bool limit_is_chain(enum limit_kind k) {
        return k == LIMIT_BLOCKING || k == LIMIT_LOCK_WAIT;
}

/* The server's role a rule applies on (pg_is_in_recovery()). */
enum server_role {
        ROLE_ANY,
        ROLE_PRIMARY,
        ROLE_STANDBY,
        _ROLE_MAX,
};

/* How max_sessions groups the sessions a rule selects ("per"). */
enum group_key {
        GROUP_ALL,                  /* per omitted: one group, "all" */
        GROUP_USER,
        GROUP_DATABASE,
        GROUP_APPLICATION,
        GROUP_CLIENT_ADDRESS,       /* a Unix-socket session's is "local" */
        _GROUP_MAX,
};

enum action {
        ACTION_LOG,
        ACTION_CANCEL,
        ACTION_TERMINATE,          /* ordered by strength: stronger wins */
        _ACTION_MAX,
};

/* Where a node stood in the file, 1-based, for messages. */
struct source_pos {
        unsigned line;
        unsigned column;
};

/* A session breaks a rule when filter_matches(&rule->filter, row), it is not
 * exempt (global, server or rule block) and it reaches (>=) any set limit. */
struct rule {
        char *name;
        int64_t limit_ms[_LIMIT_MAX];  /* 0: limit not set; ms, but a count for LIMIT_XMIN_AGE */
        enum action action;
        int64_t escalate_after_ms;     /* 0: none; only with ACTION_CANCEL */
        bool dry_run;                  /* shadow rule: judge and log, never signal */
        enum server_role role;         /* skipped on a server in the other role */
        int64_t min_blocked;           /* -1: default (1 with max_blocking, 0 with max_lock_wait) */
        enum group_key per;            /* max_sessions: the groups; GROUP_ALL: one */
        int64_t min_idle_ms;           /* max_sessions: victims are idle at least this long (default 0) */
        /* when_connections_above: 0, none; else the rule applies only at a
         * poll where connections > this count, or > this percent (1-100) of
         * the usable slots when connections_above_percent. */
        int64_t connections_above;
        bool connections_above_percent;
        struct filter filter;          /* users, databases, applications, client_addresses */
        struct filter exempt;          /* this rule's own exempt block */
        struct source_pos pos;
        bool shared;                   /* a copy of a rule set's rule: its name and filters belong to the set */
};

/* A rule set of the main file ("rule_sets"): servers that name it hold
 * copies of its rules (shared: one name and one set of filters for all). */
struct rule_set {
        char *name;
        struct rule *rules;
        size_t n_rules;
        struct source_pos pos;
};

struct server {
        char *name;
        char *conninfo;                /* handed to libpq untouched; never logged */
        int64_t interval_ms;           /* effective (server value or global default) */
        unsigned max_actions_per_cycle;  /* effective (server value or global default) */
        bool terminate_superusers;
        struct filter exempt;          /* this server's own block; see global_exempt */
        const struct filter *global_exempt;  /* &config->exempt of the owning config */
        struct rule *rules;            /* its rule sets' rules, in order, then its own */
        size_t n_rules;
        struct source_pos pos;
        char *file;                    /* the included file that defines it; NULL: the main file */
        char **rule_sets;              /* the names of its rule_sets, as written */
        struct source_pos *rule_set_pos;
        size_t n_rule_sets;
};

struct config {
        char *path;
        int64_t interval_ms;
        int64_t min_interval_ms;
        bool dry_run;
        bool log_query;
        char *metrics_file;            /* absolute path, or NULL */
        unsigned max_actions_per_cycle;
        struct filter exempt;          /* global block, applies to every server */
        struct server *servers;        /* the main file's, then each included file's */
        size_t n_servers;
        char **includes;               /* the globs of "include", as written */
        size_t n_includes;
        struct rule_set *rule_sets;    /* of the main file; their rules are in the servers that name them */
        size_t n_rule_sets;
        size_t n_rule_copies;          /* rules of sets copied into servers, in all */
};

#define CONFIG_DEFAULT_INTERVAL_MS     INT64_C(10000)
#define CONFIG_DEFAULT_MIN_INTERVAL_MS INT64_C(100)
#define CONFIG_DEFAULT_MAX_ACTIONS     100u
#define CONFIG_MAX_ACTIONS             100000u

/* Messages found while loading: "FILE:LINE:COL: error: ..." lines, in file
 * order. Each line is already escaped (escape_string()): print it as it is,
 * or log it with log_diagnostic(), never through an escaping path again. */
struct diagnostics {
        char **lines;
        size_t n_lines;
        size_t n_errors;
        size_t n_warnings;
        char **error_files;         /* the files with an error, as named (not escaped), each once, in the order read */
        size_t n_error_files;
};

void diagnostics_clear(struct diagnostics *d);

/* Load and validate path. Returns 0 and the config, or a negative errno
 * (-EINVAL for a bad file, other errno when it cannot be read); every problem
 * is appended to diag either way. */
int config_load(const char *path, struct config **ret, struct diagnostics *diag);
/* The same from a buffer; name is used in messages. For tests and the
 * fuzzer: "include" is checked but not followed (no file is read). */
int config_load_buffer(const char *name, const char *buf, size_t len, struct config **ret,
                       struct diagnostics *diag);
void config_free(struct config *c);

/* Print the parsed configuration as YAML that loads back to the same
 * configuration: every key with its effective value, durations exact,
 * conninfo normalized with password values, and the values of the server
 * settings in "options", replaced by "***". */
void config_dump(const struct config *c, FILE *f);

const char *limit_kind_to_string(enum limit_kind k);
int limit_kind_from_string(const char *s);
const char *action_to_string(enum action a);
int action_from_string(const char *s);
const char *server_role_to_string(enum server_role r);
int server_role_from_string(const char *s);
/* "user", "database", "application", "client_address"; "all" for GROUP_ALL. */
const char *group_key_to_string(enum group_key g);
int group_key_from_string(const char *s);
/* How many sessions must wait behind a session for limit k of the rule to count. */
int64_t rule_min_blocked(const struct rule *r, enum limit_kind k);
/* Does the rule judge lock chains (max_blocking or max_lock_wait)? */
bool rule_reads_locks(const struct rule *r);
/* Does the rule apply at a poll that saw this many connections (client
 * backends) and usable slots? Always without when_connections_above; never
 * when either number is unknown (negative). */
bool rule_pressure_on(const struct rule *r, int64_t connections, int64_t slots);
