/* One libpq connection, non-blocking, driven by sd-event: connect, send a
 * statement, hand its result on. Every wait has a client-side timeout.
 * What the statements are and what comes of them is the owner's (server.c);
 * the owner hears of each event through one callback each, and may close
 * the connection from inside any of them. */
#pragma once

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

/* The bounds of every wait for a server, the daemon's and --explain's:
 * connecting takes at most the conninfo's connect_timeout, or this without
 * one; a statement's answer at most PG_STATEMENT_WAIT_SEC. pg_setup_sql's
 * statement_timeout (5 s) usually ends a slow statement on the server
 * first; these end the wait for a server or network that stopped answering. */
#define PG_CONNECT_TIMEOUT_SEC  10u
#define PG_STATEMENT_WAIT_SEC   10u

/* Start a non-blocking connection (drive it with PQconnectPoll). pgsweeper
 * adds a fallback application_name; the user's conninfo wins otherwise.
 * NULL only when out of memory. */
PGconn *pg_connect_start(const char *conninfo);

/* The conninfo's connect_timeout in seconds (libpq enforces it only for
 * blocking connects; the caller's timer does it here), or fallback. */
unsigned pg_connect_timeout_sec(const char *conninfo, unsigned fallback);

typedef void (*pgconn_result_fn)(void *userdata, PGresult *res);

struct pgconn_callbacks {
        void (*connected)(void *userdata);
        /* what: "connect", "send", "read", "write", "query"; error: libpq's or ours */
        void (*failed)(void *userdata, const char *what, const char *error);
        void (*notice)(void *userdata, const char *message);
        void *userdata;
};

/* Statements in flight at once: the one the server runs and three queued
 * behind it. During a storm the exiting victims leave us little CPU; with
 * one queued, the server ran dry between batches while we waited to read
 * an answer (bench/README.md, storms). */
#define PGCONN_IN_FLIGHT_MAX 4

enum send_kind {
        SEND_QUERY,         /* sql with params */
        SEND_PREPARE,       /* prepare sql as name */
        SEND_PREPARED,      /* run the statement prepared as name */
};

struct pgconn;

/* NULL when sd-event refuses a timer. */
struct pgconn *pgconn_new(sd_event *e, struct pgconn_callbacks cb);
void pgconn_free(struct pgconn *c);

/* Close (if open), then connect to conninfo; connected or failed follows. */
void pgconn_connect(struct pgconn *c, const char *conninfo, unsigned default_timeout_sec);
void pgconn_close(struct pgconn *c);
/* The libpq connection, NULL when closed. */
PGconn *pgconn_pq(const struct pgconn *c);

/* Send one statement; its result goes to fn (a PGresult the caller must not
 * keep: it is cleared when fn returns), its wait bounded by timeout_usec
 * from the moment the statements before it have answered. A statement may
 * be sent while another is in flight (up to PGCONN_IN_FLIGHT_MAX): the
 * server runs it right after, and the results come in order.
 * -ENOTCONN: nothing was sent (libpq refused it); -EIO: it was handed to
 * libpq but writing failed; -EBUSY: too many in flight. Either way the
 * caller calls it a failure; the failed callback is not called for these. */
int pgconn_send(struct pgconn *c, enum send_kind kind, const char *stmt, const char *sql, int n_params,
                const char *const *params, pgconn_result_fn fn, uint64_t timeout_usec);

/* The error of a failed result, or the connection's. */
const char *pgconn_result_error(const struct pgconn *c, const PGresult *res);
const char *pgconn_error(const struct pgconn *c);
