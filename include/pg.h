/* Talking to one PostgreSQL server: connect, snapshot, guarded action. */
#pragma once

#include <libpq-fe.h>
#include <stdbool.h>

#include "policy.h"

/* Start a non-blocking connection (drive it with PQconnectPoll). pgsweeper
 * adds a fallback application_name; the user's conninfo wins otherwise.
 * NULL only when out of memory. */
PGconn *pg_connect_start(const char *conninfo);

/* Constant SQL, exposed for tests and benchmarks. */
extern const char pg_snapshot_sql[];
extern const char pg_action_sql[];

/* The one parameter of pg_snapshot_sql: whether to read the query text. */
void pg_snapshot_params(bool with_query, const char *params[static 1]);

/* Turn a result of pg_snapshot_sql into a snapshot. -EBADMSG when the shape is wrong. */
int snapshot_from_result(const PGresult *res, struct snapshot *ret);

/* PostgreSQL timestamps travel as int8 microseconds since the Unix epoch. */
int parse_int64(const char *s, int64_t *ret);
