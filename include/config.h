/* The configuration: parsed once, immutable, replaced whole on reload. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum limit_kind {
        LIMIT_IDLE,                 /* state idle, now - state_change */
        LIMIT_IDLE_IN_TRANSACTION,  /* idle in transaction (aborted too), now - state_change */
        LIMIT_QUERY_DURATION,       /* state active, now - query_start */
        LIMIT_TRANSACTION_AGE,      /* any state, now - xact_start */
        LIMIT_SESSION_AGE,          /* now - backend_start */
        _LIMIT_MAX,
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

struct rule {
        char *name;
        int64_t limit_ms[_LIMIT_MAX];  /* 0: limit not set */
        enum action action;
        bool dry_run;                  /* shadow rule: judge and log, never signal */
        struct source_pos pos;
};

struct server {
        char *name;
        char *conninfo;                /* handed to libpq untouched; never logged */
        int64_t interval_ms;           /* effective (server value or global default) */
        struct rule *rules;
        size_t n_rules;
        struct source_pos pos;
};

struct config {
        char *path;
        int64_t interval_ms;
        int64_t min_interval_ms;
        bool dry_run;
        struct server *servers;
        size_t n_servers;
};

#define CONFIG_DEFAULT_INTERVAL_MS     INT64_C(10000)
#define CONFIG_DEFAULT_MIN_INTERVAL_MS INT64_C(100)

/* Messages found while loading: "FILE:LINE:COL: error: ..." lines, in file order. */
struct diagnostics {
        char **lines;
        size_t n_lines;
        size_t n_errors;
        size_t n_warnings;
};

void diagnostics_clear(struct diagnostics *d);

/* Load and validate path. Returns 0 and the config, or a negative errno
 * (-EINVAL for a bad file, other errno when it cannot be read); every problem
 * is appended to diag either way. */
int config_load(const char *path, struct config **ret, struct diagnostics *diag);
/* The same from a buffer; name is used in messages. For tests and the fuzzer. */
int config_load_buffer(const char *name, const char *buf, size_t len, struct config **ret,
                       struct diagnostics *diag);
void config_free(struct config *c);

const char *limit_kind_to_string(enum limit_kind k);
const char *action_to_string(enum action a);
