/* A capture: what pgsweeper --capture (or capture.sql through psql) wrote,
 * read back into the daemon's own struct snapshot, so that --explain --from
 * judges it with policy_judge() like a live snapshot. No second judgement.
 *
 * The format (pgsweeper(8), REPLAY): one JSON object per server, or a JSON
 * array of them. Every key below is required, unknown keys are errors; "or
 * null" says where null is allowed.
 *
 *   "pgsweeper_capture": 1                 the format's version
 *   "server": string                       the server's name in the configuration
 *   "server_version": string or null       informational
 *   "now": TIMESTAMP                       the server's now() when it was taken
 *   "role": "primary" or "standby"
 *   "current_user": string or null         the role that took it
 *   "connections": integer or null         client backends; the sum of the groups' counts
 *                                          (null: "groups" is empty)
 *   "connection_slots": integer or null    usable slots
 *   "groups": [ { "user", "database", "application", "client_addr": string or null,
 *                 "count": integer >= 1 } ]
 *   "sessions": [ { "pid": integer 1..2147483647, unique,
 *                   "backend_type": string or null, "superuser": boolean,
 *                   "state": string or null,
 *                   "backend_start", "state_change", "query_start", "xact_start",
 *                   "wait_start": TIMESTAMP or null,
 *                   "user", "database", "application", "client_addr": string or null,
 *                   "wait_event_type": string or null,
 *                   "blocking_pids": [ integer 0..2147483647 ] or null,
 *                   "xmin_age": integer >= 0 or null,
 *                   "query": string or null } ]
 *   "holders": [ { "holder": "prepared" or "slot",    what holds an xmin besides sessions
 *                  "name": string,                   the gid, the slot's name; unique per kind
 *                  "owner", "database": string or null,    null: none (a slot's owner, a
 *                                                    physical slot's database)
 *                  "slot_type": string for a slot, null for a prepared transaction,
 *                  "active": true or false for a slot, null for a prepared transaction,
 *                  "prepared_at": TIMESTAMP or null,
 *                  "xmin_age": integer >= 0 } ]
 *
 * TIMESTAMP: "YYYY-MM-DDTHH:MM:SS[.F{1,6}]" then "Z" or an offset "+HH:MM"
 * ("-", ":MM" optional); a space may stand for the "T".
 *
 * Integers are written without a fraction or an exponent. Every count here
 * (connections, connection_slots, count, the xmin ages) is at most 2147483647,
 * as PostgreSQL's own int4 (age(), pids) and its backend limit keep them. */
#pragma once

#include <stddef.h>

#include "policy.h"

/* The largest capture file read: a busy server's sessions with their
 * queries fit many times over. */
#define CAPTURE_MAX_BYTES (256 * 1024 * 1024)
#define CAPTURE_FORMAT 1

struct capture_server {
        char *name;
        char *current_user;         /* NULL: null in the file */
        char *server_version;       /* NULL: null in the file */
        /* Ready for policy_judge(): every session was read (idle_all), with
         * the lock graph (has_graph) and the horizon's holders (has_horizon;
         * horizon_age: the oldest of each kind, the sessions' from their
         * xmin_age), the role known; a null name is "". */
        struct snapshot snap;
};

struct capture {
        struct capture_server *servers;
        size_t n_servers;
};

/* Parse len bytes at buf (no NUL needed) as a capture. 0; or -EINVAL and
 * *error = "LINE:COLUMN: MESSAGE" (newly allocated, escaped: printable as
 * is; the column counts bytes) naming what is wrong, at the first problem
 * found, with the path to the value ("[1].sessions[2].pid: ..."). */
int capture_parse(const char *buf, size_t len, struct capture *ret, char **error);

/* Read the file at path (a regular file of at most CAPTURE_MAX_BYTES,
 * opened so that a FIFO cannot make it wait) and parse it. 0; or a
 * negative errno and *error = "PATH:LINE:COLUMN: error: MESSAGE" or
 * "PATH: error: MESSAGE" (newly allocated, escaped). */
int capture_read(const char *path, struct capture *ret, char **error);

void capture_free(struct capture *c);
