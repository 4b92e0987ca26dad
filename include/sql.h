/* Every statement pgsweeper sends: constant text with $n parameters. */
#pragma once

/* The snapshot (prepared once per connection as pg_snapshot_name): the
 * client backends past a limit, or crossing one before the next poll can
 * come, with now() and pg_is_in_recovery(), the usable slots and the client
 * backends counted per group key; SNAPSHOT_PARAMS parameters, built by
 * snapshot_params_build(). */
extern const char pg_snapshot_sql[];
extern const char pg_snapshot_name[];
/* The same, counting the client backends per user, database, application
 * and client address as $11..$14 ask (for a server with a max_sessions
 * rule): the same parameters, the same result. The lock graph counts so
 * too. */
extern const char pg_snapshot_groups_sql[];
extern const char pg_snapshot_groups_name[];
/* The lock graph: the snapshot's rows and parameters, plus every lock
 * waiter with its blockers and wait start, and every session waited for.
 * pg_lock_graph_sql_13 for servers without pg_locks.waitstart (< 14). */
extern const char pg_lock_graph_sql[];
extern const char pg_lock_graph_sql_13[];
extern const char pg_lock_graph_name[];
/* The right one of the two for a server of that PQserverVersion(). */
const char *pg_lock_graph_sql_for(int server_version);
#define SNAPSHOT_PARAMS 19
/* A capture of a server (capture.h): the lock graph statement with every
 * client backend wanted, as one JSON object; the snapshot's parameters,
 * then $20 the server's name. */
extern const char pg_capture_sql[];
extern const char pg_capture_sql_13[];
const char *pg_capture_sql_for(int server_version);
#define CAPTURE_PARAMS (SNAPSHOT_PARAMS + 1)

/* Run once per connection: bounds our statements, forces the generic plan,
 * and says who we are there (see struct pg_identity). */
extern const char pg_setup_sql[];
/* $1 pid, $2 backend_start: terminate that backend if it is still the same
 * one. For our own backend of a connection we gave up on. true: terminated. */
extern const char pg_end_abandoned_sql[];
/* The guarded action, built by enforce_prepare(). */
extern const char pg_action_sql[];
