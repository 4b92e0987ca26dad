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

/* What a poll asks the server for. The server sends only the client
 * backends that are past the smallest limit any rule sets for their state
 * (or that are watched for escalation), plus one summary row with the
 * earliest moment one of the others crosses such a limit. The C policy then
 * judges those few rows exactly: the server filters, C decides. */
struct snapshot_request {
        bool with_query;
        bool superusers;                     /* terminate_superusers: send them too */
        int64_t min_limit_ms[_LIMIT_MAX];    /* 0: no rule sets this limit */
        const int32_t *pids;                 /* always send these (escalations) */
        size_t n_pids;
};

#define SNAPSHOT_PARAMS 8
struct snapshot_params {
        char *values[SNAPSHOT_PARAMS];
};

/* The smallest limit per kind over a server's rules. */
void snapshot_request_limits(const struct server *srv, struct snapshot_request *req);
void snapshot_params_build(const struct snapshot_request *req, struct snapshot_params *ret);
void snapshot_params_free(struct snapshot_params *p);

/* Turn a result of pg_snapshot_sql into a snapshot. -EBADMSG when the shape is wrong. */
int snapshot_from_result(const PGresult *res, struct snapshot *ret);

/* PostgreSQL timestamps travel as int8 microseconds since the Unix epoch. */
int parse_int64(const char *s, int64_t *ret);
