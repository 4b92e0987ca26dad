/* The snapshot statement's two sides: what a poll asks for, as its
 * parameters, and its result as a struct snapshot (policy.h). */
#pragma once

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "policy.h"
#include "sql.h"

/* Who we are on a server, from pg_setup_sql. */
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

/* What a snapshot asks the server for (plan.c decides it): the client
 * backends that are past a limit, or will cross one that can act before
 * the next poll comes (or that are watched for escalation). The C policy
 * judges those few rows exactly: the server filters, C decides. */
struct snapshot_request {
        bool with_query;
        bool superusers;                     /* send superusers' sessions too */
        bool every_session;                  /* --explain: send every client backend */
        bool lock_waiters;                   /* send every session waiting for a lock */
        int64_t bound_ms[_LIMIT_MAX];        /* send rows at least this far into the limit; -1: no rule */
        int32_t *pids;                       /* always send these (escalations); owned */
        size_t n_pids;
        bool group_by[_GROUP_MAX];           /* count the client backends per these keys ([GROUP_ALL] unused) */
        bool idle_all;                       /* send every idle session */
        struct key_list idle_keys[_GROUP_MAX];   /* send the idle sessions of these groups; owned */
};

/* Ask for the idle sessions of the group whose per key is value (GROUP_ALL:
 * every idle session). */
void snapshot_request_add_idle(struct snapshot_request *r, enum group_key per, const char *value);
/* Record in snap which idle sessions req had sent (see struct snapshot). */
void snapshot_note_request(struct snapshot *snap, const struct snapshot_request *req);
/* Were all the idle sessions of the group whose per key is value sent? */
bool snapshot_has_idle(const struct snapshot *snap, enum group_key per, const char *value);

void snapshot_request_done(struct snapshot_request *r);

struct snapshot_params {
        char *values[SNAPSHOT_PARAMS];
};

void snapshot_params_build(const struct snapshot_request *req, struct snapshot_params *ret);
void snapshot_params_free(struct snapshot_params *p);

/* Turn a result of pg_snapshot_sql (or pg_lock_graph_sql) into a snapshot.
 * -EBADMSG when the shape is wrong. */
int snapshot_from_result(const PGresult *res, struct snapshot *ret);

/* The blocking side, for the one-shot commands (--explain): every wait has
 * a deadline, so a server that stops answering costs a bounded time.
 *
 * Drive a connection begun by pg_connect_start() (pgconn.h) to its end, at
 * most timeout_usec: 0 connected; -ETIMEDOUT; -ECONNREFUSED or another
 * negative errno when it failed (the connection's error message says why). */
int pg_connect_bounded(PGconn *conn, uint64_t timeout_usec);

/* Send one statement (conn made non-blocking) and wait for its last result,
 * at most timeout_usec: 0 and the result in *ret (a failed statement
 * included: check its status); -ETIMEDOUT when the server did not answer in
 * time (the statement is still in flight: the caller closes conn); -EIO
 * when libpq failed (its error message says why). */
int pg_exec_bounded(PGconn *conn, const char *sql, int n_params, const char *const *params, uint64_t timeout_usec,
                    PGresult **ret);

/* The same read as the daemon's, blocking, for the one-shot commands: the
 * snapshot, then a second read when plan_reread() says so (the lock graph,
 * the idle sessions of a group over its cap; req gains what it asks), on a
 * connection that ran pg_setup_sql; each statement waits at most
 * timeout_usec. Negative errno on failure: -ETIMEDOUT when the server did not
 * answer in time; otherwise the connection's error message says why. */
int snapshot_fetch(PGconn *conn, const struct server *srv, struct snapshot_request *req, uint64_t timeout_usec,
                   struct snapshot *ret);

/* PostgreSQL timestamps travel as int8 microseconds since the Unix epoch. */
int parse_int64(const char *s, int64_t *ret);
