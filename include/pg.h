/* Talking to one PostgreSQL server: connect, snapshot, guarded action. */
#pragma once

#include <libpq-fe.h>
#include <stdbool.h>

#include "policy.h"

/* Connection parameters pgsweeper adds around the user's conninfo. The
 * user's values win for everything but what pgsweeper needs to be safe. */
PGconn *pg_connect(const char *conninfo);

/* Constant SQL, exposed for tests and benchmarks. */
extern const char pg_snapshot_sql[];
extern const char pg_action_sql[];

/* Take one snapshot (blocking). Returns 0 or -EIO with *ret_error set to a
 * static or libpq-owned message valid until the next call on conn. */
int pg_snapshot(PGconn *conn, bool with_query, struct snapshot *ret, const char **ret_error);

/* Turn a result of pg_snapshot_sql into a snapshot. -EBADMSG when the shape is wrong. */
int snapshot_from_result(const PGresult *res, struct snapshot *ret);

/* PostgreSQL timestamps travel as int8 microseconds since the Unix epoch. */
int parse_int64(const char *s, int64_t *ret);
