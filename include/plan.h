/* Planning one server's polls: what a snapshot asks the server for, whether
 * the lock graph is worth reading, and when the next poll comes. Pure: the
 * clocks come in as arguments. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "policy.h"
#include "snapshot.h"

/* The longest a server may go without a poll, in ms: its interval, but
 * never more than the smallest limit of a rule that cancels or terminates
 * (shadow rules included, so a dry run polls as the real run would), so
 * that a session that appears just after a poll is seen before it can
 * cross; never less than min_interval. Log-only rules do not shorten it. */
int64_t plan_gap_ms(const struct server *srv, int64_t min_interval_ms);

/* What a daemon (or --once) poll asks for: the rows that are past a limit,
 * or cross one that acts within one gap (a log-only rule: once crossed),
 * the watched pids (escalations, unknown results) whatever their state,
 * lock waiters when a rule judges lock chains, query text when a filter or
 * log_query needs it. */
void plan_poll_request(const struct config *c, const struct server *srv, const int32_t *pids, size_t n_pids,
                       struct snapshot_request *ret);

/* What --explain asks for: every client backend (superusers too, shown as
 * protected), with no lookahead; the rest as a poll. */
void plan_explain_request(const struct config *c, const struct server *srv, struct snapshot_request *ret);

/* What a capture asks for, whatever the rules (a replay may judge it with
 * others): every client backend with its query, superusers, every lock
 * waiter and the sessions waited for, counted per every group key, and
 * every prepared transaction and replication slot holding an xmin (an
 * xmin bound of 0); its parameters are pg_capture_sql's first
 * SNAPSHOT_PARAMS. */
void plan_capture_request(struct snapshot_request *ret);

/* After the snapshot: read the lock graph too? Only for a server with a
 * lock rule, and only when the snapshot saw a session waiting for a lock. */
bool plan_wants_graph(const struct server *srv, const struct snapshot *snap);

/* The first read of a poll: pg_snapshot_groups_sql for a server with a
 * max_sessions rule (it counts per key), else pg_snapshot_sql. */
const char *plan_snapshot_sql(const struct server *srv);

/* After the snapshot (read with req): read again in the same poll? When
 * the lock graph is wanted, or a cap found a group over it whose idle
 * sessions the read did not send (req then asks for them too). Returns the
 * statement for the second read (pg_lock_graph_sql_for(server_version) or
 * pg_snapshot_groups_sql), NULL for none. */
const char *plan_reread(const struct server *srv, const struct snapshot *snap, int server_version,
                        struct snapshot_request *req);

/* When one cycle's poll went, came back and what it found. */
struct plan_cycle {
        uint64_t poll_started;      /* CLOCK_MONOTONIC usec, when the snapshot was sent */
        uint64_t snap_received;     /* CLOCK_MONOTONIC usec, when its answer was read */
        int64_t snap_now;           /* the server's now() in the snapshot; TS_NULL: none */
        int64_t next_deadline;      /* judgement's next crossing on the server's clock; INT64_MAX: none */
};

/* The next poll, CLOCK_MONOTONIC usec: when the first session a rule can
 * act on crosses a limit, but no later than one gap after this poll and
 * never sooner than min_interval after it. The deadline is counted from the
 * snapshot's receipt: the server read now() somewhere between sending and
 * receiving, so the poll is never early on the server's clock (an early poll
 * would find the session just short of its limit and the next could only
 * come min_interval later) and late by at most a round trip. */
uint64_t plan_next_poll(const struct config *c, const struct server *srv, const struct plan_cycle *p);
