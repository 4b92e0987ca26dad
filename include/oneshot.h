/* The one-shot commands' side of a server (--explain, --capture): a
 * blocking connection whose every wait is bounded, and the servers asked at
 * the same time, so one hanging server costs its own bound, not the
 * others'. Errors go to stderr as "pgsweeper: SERVER: WHAT: DETAIL". */
#pragma once

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>

#include "config.h"
#include "snapshot.h"

/* A server the configuration does not name (--server): exit status 2. */
#define ONESHOT_UNKNOWN_SERVER 2

/* "pgsweeper: SERVER: WHAT: DETAIL" on stderr, escaped, on one line. */
void oneshot_error(const struct server *srv, const char *what, const char *detail);

/* Connect to srv (the daemon's connection: its conninfo and fallback
 * application name) and run pg_setup_sql, each wait bounded; the identity
 * in *id. 0, or a negative errno once the error is said. A role without
 * pg_monitor is a warning on stderr: other roles' sessions are hidden from
 * it. */
int oneshot_connect(const struct server *srv, PGconn **ret, struct pg_identity *id);

/* A statement that failed (r from pg_exec_bounded() or snapshot_fetch()):
 * "no answer within 10s" for -ETIMEDOUT, else libpq's message. */
void oneshot_wait_error(const struct server *srv, const char *what, int r, PGconn *conn);

/* Send a statement on a oneshot_connect() connection and wait for its
 * answer at most PG_STATEMENT_WAIT_SEC. 0 and *ret a PGRES_TUPLES_OK
 * result; or a negative errno once the error is said (what: "snapshot
 * failed", ...). */
int oneshot_exec(const struct server *srv, PGconn *conn, const char *what, const char *sql, int n_params,
                 const char *const *params, PGresult **ret);

/* --server NAME: the servers to ask, asked[i] for c->servers[i]
 * (n_servers + 1 entries, newly allocated). NULL once "no such server" is
 * said. */
bool *oneshot_select(const struct config *c, const char *server);

/* Call fn(c, i, arg) for every asked server, up to ONESHOT_WORKERS at once. */
#define ONESHOT_WORKERS 16
void oneshot_each(const struct config *c, const bool *asked, void (*fn)(const struct config *c, size_t i, void *arg),
                  void *arg);

/* pgsweeper --capture: one JSON array on out, one object per asked server
 * (capture.h); never signals, never writes to the journal. Exit status: 0,
 * 1 when a server could not be captured (the others are still written),
 * ONESHOT_UNKNOWN_SERVER. */
int capture_run(const struct config *c, const char *server, FILE *out);
