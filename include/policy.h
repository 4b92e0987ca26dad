/* The pure core: (server config, snapshot, now) -> decisions and next deadline.
 * No I/O, no clock reads. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "filter.h"

struct lock_seen;
struct snapshot_request;

#define TS_NULL INT64_MIN  /* a NULL timestamp in a snapshot row */

enum session_state {
        STATE_UNKNOWN,              /* NULL or a state we do not know */
        STATE_ACTIVE,
        STATE_IDLE,
        STATE_IDLE_IN_TRANSACTION,
        STATE_IDLE_IN_TRANSACTION_ABORTED,
        STATE_FASTPATH,
        STATE_DISABLED,
        _STATE_MAX,
};

/* One row of pg_stat_activity. Timestamps are microseconds since the Unix
 * epoch on the server's clock, TS_NULL when NULL. */
struct snapshot_row {
        int32_t pid;
        bool client_backend;        /* backend_type = 'client backend' */
        bool superuser;             /* rolsuper of the session's role */
        enum session_state state;
        int64_t backend_start;
        int64_t state_change;
        int64_t query_start;
        int64_t xact_start;
        int64_t xmin_age;           /* greatest(age(backend_xmin), age(backend_xid)); -1: holds none */
        bool lock_waiting;          /* wait_event_type = 'Lock' */
        /* From the lock graph (snapshot.has_graph), else TS_NULL and none:
         * when its wait (or a parallel worker's) began, and the pids it
         * waits for (pg_blocking_pids(), raw: duplicates and 0 possible). */
        int64_t wait_start;
        const int32_t *blockers;
        size_t n_blockers;
        const char *user;           /* never NULL: "" when NULL */
        const char *database;
        const char *application;
        const char *client_addr;    /* "local" for Unix sockets, "" when unknown */
        const char *query;          /* NULL unless asked for (log_query, or a queries filter) */
};

/* The client backends of one group key (user, database, application,
 * client address: those the request counted by; the others NULL). */
struct snapshot_group {
        const char *key[_GROUP_MAX];     /* [GROUP_ALL] unused */
        int64_t count;
};

/* What holds the xmin horizon back (VACUUM cannot remove rows newer than
 * the oldest): sessions, and two holders that are not sessions. */
enum holder_kind {
        HOLDER_SESSION,             /* a backend's xmin or xid (pg_stat_activity) */
        HOLDER_PREPARED,            /* a prepared transaction (pg_prepared_xacts) */
        HOLDER_SLOT,                /* a replication slot's xmin or catalog_xmin */
        _HOLDER_MAX,
};

/* A prepared transaction or a replication slot holding an xmin, read on
 * servers with a max_xmin_age rule. Never acted on: warned about. */
struct horizon_holder {
        enum holder_kind kind;      /* HOLDER_PREPARED or HOLDER_SLOT */
        const char *name;           /* the gid, the slot name */
        const char *owner;          /* prepared: its role; a slot: "" */
        const char *database;       /* "" for a physical slot */
        const char *slot_type;      /* a slot: "logical" or "physical"; prepared: "" */
        int64_t prepared_at;        /* prepared: when; a slot: TS_NULL */
        bool active;                /* a slot: a consumer is connected */
        int64_t xmin_age;           /* transactions */
};

/* Values of one group key: the idle sessions of these groups were sent. */
struct key_list {
        char **values;
        size_t n;
};

struct snapshot {
        int64_t now;                /* server clock when the snapshot was taken */
        int64_t connections;        /* client backends, every one (the sum of the groups); -1: unknown */
        int64_t connection_slots;   /* usable slots; -1: unknown */
        struct snapshot_group *groups;
        size_t n_groups;
        /* Which idle sessions were sent whatever their age (the request's
         * idle_all and idle_keys, see snapshot.h): a capped group's
         * victims can be chosen only among a complete set. */
        bool idle_all;
        struct key_list idle_keys[_GROUP_MAX];
        bool role_known;            /* the statement said whether the server is in recovery */
        bool in_recovery;           /* pg_is_in_recovery(): a standby */
        size_t n_lock_waiting;      /* rows waiting for a heavyweight lock */
        bool has_graph;             /* read with the lock graph statement */
        /* The horizon (read when a max_xmin_age rule asked for it): the
         * oldest xmin age per kind of holder, -1 when none holds one; and
         * every prepared transaction and slot holding one. */
        bool has_horizon;
        int64_t horizon_age[_HOLDER_MAX];
        struct horizon_holder *holders;
        size_t n_holders;
        int32_t *blocker_pool;      /* every row's blockers */
        struct snapshot_row *rows;
        size_t n_rows;
        char *strings;              /* one block holding every string of the rows */
};

void snapshot_free(struct snapshot *s);
/* Free the idle keys a snapshot noted (snapshot_free() does it). */
void snapshot_idle_keys_free(struct snapshot *s);

struct decision {
        const struct snapshot_row *row;
        const struct rule *rule;
        enum limit_kind limit;
        int64_t elapsed_ms;
        enum action action;
        bool dry_run;
        bool escalated;             /* terminate after a cancel the query ignored */
        enum server_role server_role;  /* the server's role in that snapshot; ROLE_ANY: unknown */
        size_t blocked;             /* max_blocking, max_lock_wait: sessions waiting behind it */
        /* max_sessions: the group (its key and value, NULL for GROUP_ALL)
         * and its count at the poll */
        enum group_key group_per;
        const char *group_value;
        int64_t sessions;
        /* A rule with when_connections_above: connections and usable slots
         * at the poll (unset for the others). */
        int64_t connections;
        int64_t connection_slots;
};

/* A group over a max_sessions cap at this poll. */
struct cap_group {
        const struct rule *rule;
        const char *value;          /* the per key's value; NULL: GROUP_ALL */
        int64_t sessions;           /* its count (every state, exempt and protected included) */
        size_t ending;              /* sessions ended for it now: victims, and those another rule ends */
        size_t short_by;            /* > 0: cannot be brought under max_sessions by that many */
        bool complete;              /* its idle sessions were all read (else judged at a later read) */
        int64_t connections;        /* at the poll, for a rule with when_connections_above */
        int64_t connection_slots;
};

/* A chain whose root may not be signalled (pid 0, or a protected session:
 * section 3) although a max_blocking rule would end it. */
struct chain_warning {
        int32_t pid;
        int64_t backend_start;      /* TS_NULL for pid 0 or a root without a row */
        const struct snapshot_row *row;   /* NULL: no row */
        const char *why;            /* "a prepared transaction", "a superuser", ... */
        const struct rule *rule;
        size_t blocked;
        int64_t wait_ms;            /* the longest wait behind it */
};

/* What the judgement says of one session, and why: explain's rows are
 * renderings of these, filled by the same loop that makes the decisions.
 * A new kind of rule adds a limit kind (max_blocking, max_lock_wait,
 * max_xmin_age: over and next as for the others), a reason (a rule skipped
 * for the server's role, a protected lock root) or, where the why needs a
 * number the row does not hold (the waiters behind a root), a field here
 * set where judge_rule() sets the decision; never another path through the
 * policy. */
enum verdict_kind {
        VERDICT_NONE,               /* no rule applies */
        VERDICT_OVER,               /* breaks a rule now; rule: the deciding one */
        VERDICT_NEXT,               /* will reach a limit; rule: the earliest */
        VERDICT_EXEMPT,
        VERDICT_PROTECTED,
        _VERDICT_MAX,
};

enum verdict_reason {
        REASON_NO_RULE,             /* none: no rule's filters match */
        REASON_NO_LIMIT,            /* none: rule matches, none of its limits applies in this state */
        REASON_LIMIT,               /* over, next: limit */
        REASON_ESCALATION,          /* over, next: a cancelled query still runs (escalate_after) */
        REASON_EXEMPT_GLOBAL,       /* exempt: the global block */
        REASON_EXEMPT_SERVER,       /* exempt: the server's block */
        REASON_EXEMPT_RULE,         /* exempt: rule's own block */
        REASON_NOT_CLIENT,          /* protected: not a client backend */
        REASON_OWN_CONNECTION,      /* protected: this process's connection */
        REASON_OWN_ROLE,            /* protected: another pgsweeper (own_role) */
        REASON_SUPERUSER,           /* protected: superuser, terminate_superusers off */
        REASON_DYING,               /* protected: terminated last cycle, still exiting */
        REASON_BELOW_THRESHOLD,     /* none: rule matches, connections not above its when_connections_above */
        _REASON_MAX,
};

struct verdict {
        const struct snapshot_row *row;
        enum verdict_kind kind;
        enum verdict_reason reason;
        const struct rule *rule;    /* see the kinds; REASON_EXEMPT_RULE and
                                     * REASON_NO_LIMIT: that rule; else NULL */
        const struct rule *exempt_rule;  /* over, next: the first matching rule
                                          * whose own block exempts it, or NULL */
        enum limit_kind limit;      /* over, next */
        int64_t elapsed_ms;         /* over, next */
        int64_t remaining_ms;       /* next: until the limit is reached */
        enum action action;         /* over, next */
        bool dry_run;
        bool escalated;
        bool capped;                /* over, beyond max_actions_per_cycle: waits a cycle */
        size_t blocked;             /* over, next under max_blocking or max_lock_wait: sessions waiting behind it */
        /* over under max_sessions: as in struct decision */
        enum group_key group_per;
        const char *group_value;
        int64_t sessions;
        /* over, next, below-threshold under a rule with when_connections_above:
         * as in struct decision */
        int64_t connections;
        int64_t connection_slots;
};

/* A prepared transaction or a slot of the snapshot, judged against the
 * smallest max_xmin_age of the server's rules. */
struct holder_verdict {
        const struct horizon_holder *holder;
        const struct rule *rule;    /* the rule of the smallest max_xmin_age */
        bool over;                  /* its age reaches it: warned about, never acted on */
};

struct judgement {
        struct decision *decisions; /* oldest offender first */
        size_t n_decisions;
        size_t n_capped;            /* signalling decisions left for the next cycle */
        int64_t next_deadline;      /* server clock (us) when the next observed
                                     * session crosses a limit; INT64_MAX: none */
        struct verdict *verdicts;   /* with policy_input.verdicts: one per row, in
                                     * row order; else NULL */
        struct chain_warning *warnings;
        size_t n_warnings;
        struct cap_group *caps;     /* every group over a cap, by rule and value */
        size_t n_caps;
        struct holder_verdict *holders;   /* every holder of snap, when a rule sets max_xmin_age */
        size_t n_holders;
};

/* A query cancelled under a rule with escalate_after: if the same query
 * (pid, backend_start, query_start) still runs at due, it is terminated.
 * It outlives the configuration it was made under: the rule is named, not
 * pointed at. */
struct escalation {
        int32_t pid;
        int64_t backend_start;
        int64_t query_start;
        int64_t due;                /* server clock, us */
        char *rule;                 /* the rule's name; owned by whoever keeps the escalation */
};

/* A backend, told apart from a later one with the same pid. */
struct session_id {
        int32_t pid;
        int64_t backend_start;
};

static inline bool session_id_equal(struct session_id a, struct session_id b) {
        return a.pid == b.pid && a.backend_start == b.backend_start;
}

static inline struct session_id session_id_of(const struct snapshot_row *row) {
        return (struct session_id) { row->pid, row->backend_start };
}

struct policy_input {
        const struct server *server;
        bool dry_run;               /* global or command line */
        const struct session_id *own;     /* this process's backends on this server's cluster */
        size_t n_own;
        /* The role pgsweeper logs in as here: its sessions whose
         * application_name starts with "pgsweeper" are other pgsweeper
         * processes (NULL: unknown). */
        const char *own_role;
        const struct escalation *escalations;
        size_t n_escalations;
        const struct session_id *dying;   /* terminated last cycle, still exiting: not judged again */
        size_t n_dying;
        bool verdicts;              /* also say why of every row (judgement.verdicts) */
        /* Sessions seen waiting for a lock at earlier polls (see lockgraph.h):
         * a root among them is judged under max_blocking from the first poll
         * that saw it holding, not from the waits it queued with. NULL: no
         * memory (--explain, a first poll). */
        const struct lock_seen *held_since;
        size_t n_held_since;
};

/* When did the clock of limit k start for this row? TS_NULL: the limit does
 * not apply to the session in its current state. */
int64_t limit_since(enum limit_kind k, const struct snapshot_row *row);

/* Is the row one of pgsweeper's own connections (this process, or another
 * pgsweeper logged in as the same role)? */
bool policy_is_own(const struct policy_input *in, const struct snapshot_row *row);

/* Judge every row. Rules: built-in protections first (own connections,
 * non-client backends, superusers unless terminate_superusers); a session
 * breaks a rule when it passes the rule's filters, no exempt block (global,
 * server, rule) matches it, and it reaches any of the rule's limits. Of the
 * rules it breaks, one decides (see stronger()). Decisions come oldest
 * offender first; signalling ones beyond max_actions_per_cycle are dropped
 * and counted in n_capped. */
void policy_judge(const struct policy_input *in, const struct snapshot *snap,
                  struct judgement *ret);

/* The groups over a max_sessions cap whose idle sessions snap lacks: asks
 * req for them (a second read of the same poll). Returns how many. */
size_t policy_wants_idle(const struct server *srv, const struct snapshot *snap, struct snapshot_request *req);
/* Is the rule judged at this poll: its role, and its connection threshold? */
bool policy_rule_active(const struct rule *rule, const struct snapshot *snap);
/* Does any rule of the server set max_sessions? */
bool policy_counts_groups(const struct server *srv);

/* Does the rule's role (primary, standby, any) match the server's in this snapshot? */
bool rule_applies_to_role(const struct rule *rule, const struct snapshot *snap);
/* The rule of the server with the smallest max_xmin_age; NULL: none. */
const struct rule *policy_horizon_rule(const struct server *srv);
/* Does any rule of the server judge lock chains? */
bool policy_reads_locks(const struct server *srv);
/* Does any filter or exempt block of the server match query text? */
bool policy_needs_query(const struct server *srv);

/* Does the escalation still describe this row's running query? */
bool escalation_matches(const struct escalation *e, const struct snapshot_row *row);
void judgement_free(struct judgement *j);

const char *verdict_kind_to_string(enum verdict_kind k);
int verdict_kind_from_string(const char *s);
/* Stable names of the reasons ("superuser", "exempt-global", ...). */
const char *verdict_reason_to_string(enum verdict_reason r);
int verdict_reason_from_string(const char *s);

/* "session", "prepared", "slot". */
const char *holder_kind_to_string(enum holder_kind k);

const char *session_state_to_string(enum session_state s);
int session_state_from_string(const char *s);
/* pg_stat_activity.state as a value; NULL or a state this build does not
 * know (a newer server's) is STATE_UNKNOWN. */
static inline enum session_state session_state_parse(const char *s) {
        int r = session_state_from_string(s);
        return r < 0 ? STATE_UNKNOWN : (enum session_state) r;
}
