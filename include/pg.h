/* Talking to one PostgreSQL server: connect, snapshot, guarded action. */
#pragma once

#include <libpq-fe.h>
#include <stdbool.h>

#include "policy.h"

/* Start a non-blocking connection (drive it with PQconnectPoll). pgsweeper
 * adds a fallback application_name; the user's conninfo wins otherwise.
 * NULL only when out of memory. */
PGconn *pg_connect_start(const char *conninfo);

/* The conninfo's connect_timeout in seconds (libpq enforces it only for
 * blocking connects; the caller's timer does it here), or fallback. */
unsigned pg_connect_timeout_sec(const char *conninfo, unsigned fallback);

/* Constant SQL, exposed for tests and benchmarks. */
extern const char pg_snapshot_sql[];
extern const char pg_snapshot_name[];
extern const char pg_action_sql[];
/* The lock graph: the snapshot's rows and parameters, plus every lock
 * waiter with its blockers and wait start, and every session waited for.
 * pg_lock_graph_sql_13 for servers without pg_locks.waitstart (< 14). */
extern const char pg_lock_graph_sql[];
extern const char pg_lock_graph_sql_13[];
extern const char pg_lock_graph_name[];

/* Run once per connection: bounds our statements, forces the generic plan,
 * and says who we are there (see struct pg_identity). */
extern const char pg_setup_sql[];
/* $1 pid, $2 backend_start: terminate that backend if it is still the same
 * one. For our own backend of a connection we gave up on. true: terminated. */
extern const char pg_end_abandoned_sql[];

struct pg_identity {
        int64_t backend_start;
        char *cluster;              /* postmaster start time and port: tells clusters apart */
        char *role;                 /* current_user */
        bool can_see_all;           /* has the privileges of pg_read_all_stats (pg_monitor) */
        bool can_signal_all;        /* has the privileges of pg_signal_backend */
};

/* Read a result of pg_setup_sql. -EBADMSG on a wrong shape. */
int pg_identity_from_result(const PGresult *res, struct pg_identity *ret);
void pg_identity_done(struct pg_identity *id);

/* What a poll asks the server for: the client backends that are past a
 * limit, or will cross one that can act before the next poll comes (or
 * that are watched for escalation). The C policy judges those few rows
 * exactly and plans the next poll from the ones a rule can act on: the
 * server filters, C decides. */
struct snapshot_request {
        bool with_query;
        bool superusers;                     /* terminate_superusers: send them too */
        bool every_session;                  /* --explain: send every client backend */
        bool lock_waiters;                   /* send every session waiting for a lock */
        int64_t bound_ms[_LIMIT_MAX];        /* send rows at least this far into the limit; -1: no rule */
        const int32_t *pids;                 /* always send these (escalations) */
        size_t n_pids;
};

#define SNAPSHOT_PARAMS 10
struct snapshot_params {
        char *values[SNAPSHOT_PARAMS];
};

/* The bounds per kind for a server whose next poll comes at most
 * lookahead_ms later: a rule that cancels or terminates needs its sessions
 * lookahead_ms before they cross (their deadline is planned), a log-only
 * rule only once they have crossed. */
void snapshot_request_limits(const struct server *srv, int64_t lookahead_ms, struct snapshot_request *req);
void snapshot_params_build(const struct snapshot_request *req, struct snapshot_params *ret);
void snapshot_params_free(struct snapshot_params *p);

/* Turn a result of pg_snapshot_sql into a snapshot. -EBADMSG when the shape is wrong. */
int snapshot_from_result(const PGresult *res, struct snapshot *ret);

/* PostgreSQL timestamps travel as int8 microseconds since the Unix epoch. */
int parse_int64(const char *s, int64_t *ret);
