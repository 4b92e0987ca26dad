/* Every statement pgsweeper sends, as constant text: nothing from a
 * configuration or a session row is ever pasted into SQL; values travel as
 * $n parameters. */
#include "sql.h"

/* Timestamps as int8 microseconds since the Unix epoch: exact (extract()
 * returns numeric since PG 14) and trivial to parse. now() is the server's
 * clock at the start of this statement; elapsed times never use ours. */
#define US(ts) "(extract(epoch FROM " ts ") * 1000000)::int8"

/* $1 query text wanted, $2..$6 per kind: the smallest limit (ms) less the
 * lookahead, or NULL when no rule sets that limit, $7 pids always wanted,
 * $8 superusers wanted, $9 lock waiters wanted (a rule judges lock chains),
 * $10 the smallest max_xmin_age (NULL: none), $11..$14 count the client
 * backends per user, database, application, client address (each false:
 * not a key), $15 every idle session wanted, $16..$19 the idle sessions of
 * these users, databases, applications, client addresses wanted (the
 * groups a cap found over; NULL: none).
 *
 * One pass over pg_stat_get_activity(NULL), in an aggregate (CTE k): it
 * counts the client backends per group key (with no key: one row, the
 * connections) and collects the pids of the rows wanted: the client
 * backends past that bound, i.e. past a limit now or crossing one before
 * the next poll can come, those whose xid horizon is that old (ages cannot
 * be planned: checked every poll), the idle sessions of the groups asked
 * for, and with $9 every backend waiting for a heavyweight lock (they say
 * whether the lock graph is worth reading). The C policy judges them
 * exactly and plans the next poll from the ones a rule can really act on.
 * Only the wanted rows are read again, each by its pid
 * (pg_stat_get_activity(pid) reads the same copy of the status array,
 * taken once per transaction), with names, joins and conversions. Result
 * rows: the sessions (pid set), then one row per group (pid NULL, its
 * count in n, the key columns not counted by NULL, a NULL name of a key
 * counted by ''); the outer one-row join
 * carries now(), pg_is_in_recovery() and the usable slots even when no
 * session is sent. The bounds are computed once (InitPlans), not per
 * row. Counting in the pass costs about 5% of the statement at 1000
 * sessions, counting per key about a fifth more; a second scan of the
 * activity would cost about half the first. */
#define ADDR_EXPR "CASE WHEN a.client_port = -1 THEN 'local' ELSE host(a.client_addr) END"

#define SNAPSHOT_WANTED(extra)                                                                                     \
        "a.pid <> pg_backend_pid() AND ("                                                                    \
        "  (a.backend_type = 'client backend' "                                                              \
        "   AND ((a.state = 'idle' AND a.state_change <= (SELECT now() - $2::int8 * interval '1 millisecond')) "       \
        "    OR (a.state IN ('idle in transaction', 'idle in transaction (aborted)') "                        \
        "        AND a.state_change <= (SELECT now() - $3::int8 * interval '1 millisecond')) "                         \
        "    OR (a.state IN ('active', 'fastpath function call') "                                            \
        "        AND a.query_start <= (SELECT now() - $4::int8 * interval '1 millisecond')) "                          \
        "    OR a.xact_start <= (SELECT now() - $5::int8 * interval '1 millisecond') "                                 \
        "    OR a.backend_start <= (SELECT now() - $6::int8 * interval '1 millisecond') "                              \
        "    OR ($10::int8 IS NOT NULL AND greatest(age(a.backend_xmin), age(a.backend_xid)) >= $10::int8) "   \
        "    OR a.pid = ANY($7::int4[]) "                                                                     \
        "    OR (($15::bool OR $16::text[] IS NOT NULL OR $17::text[] IS NOT NULL OR $18::text[] IS NOT NULL " \
        "         OR $19::text[] IS NOT NULL) AND a.state = 'idle' "                                           \
        "        AND ($15::bool OR a.usesysid IN (SELECT oid FROM pg_roles WHERE rolname = ANY($16::text[])) "                                              \
        "             OR a.datid IN (SELECT oid FROM pg_database WHERE datname = ANY($17::text[])) "           \
        "             OR a.application_name = ANY($18::text[]) OR " ADDR_EXPR " = ANY($19::text[])))) IS TRUE " \
        "   AND ($8::bool OR a.usesysid NOT IN (SELECT oid FROM pg_roles WHERE rolsuper))) "                                              \
        "  OR ($9::bool AND a.wait_event_type = 'Lock') " extra ")"

/* The horizon's holders that are not sessions, read only when $10 (a
 * max_xmin_age rule) is set: the one-time filter on the parameter keeps the
 * scans out of every other poll. Every prepared transaction and every slot
 * holding an xmin, whatever its age (there are few; the gauge wants the
 * oldest, the policy says which reach the limit), one row each (pid and n
 * NULL, holder 'prepared' or 'slot'): the owner and database in the name
 * columns, the gid or slot name as the application, the slot type as the
 * client address, when it was prepared as backend_start, a slot's active
 * flag as lock_wait, its age in xmin_age. */
#define HORIZON_HOLDERS                                                                                     \
        "UNION ALL "                                                                                          \
        "SELECT NULL, NULL, NULL, NULL, " US("p.prepared") ", NULL, NULL, NULL, p.owner::text, p.database::text, " \
        "  p.gid, NULL, NULL, age(p.transaction), NULL, NULL, NULL, NULL, NULL, NULL, 'prepared' "              \
        "FROM pg_prepared_xacts p WHERE $10::int8 IS NOT NULL "                                                 \
        "UNION ALL "                                                                                          \
        "SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, l.database::text, l.slot_name::text, "      \
        "  l.slot_type, NULL, greatest(age(l.xmin), age(l.catalog_xmin)), l.active, NULL, NULL, NULL, NULL, "   \
        "  NULL, 'slot' "                                                                                     \
        "FROM pg_replication_slots l "                                                                        \
        "WHERE $10::int8 IS NOT NULL AND (l.xmin IS NOT NULL OR l.catalog_xmin IS NOT NULL)"

/* The aggregate; extra: more rows wanted (an OR term). With keys, the
 * client backends are counted per user, database, application and client
 * address ($11..$14 say which count); without, in one group: the plain
 * aggregate costs less (measured at 1000 sessions: the grouping costs about
 * a sixth of the statement), and a server with no cap needs no more. */
#define GROUP_KEYS                                                                                           \
        "CASE WHEN $11::bool THEN a.usesysid END AS u, CASE WHEN $12::bool THEN a.datid END AS d, "             \
        "CASE WHEN $13::bool THEN a.application_name END AS app, "                                             \
        "CASE WHEN $14::bool THEN " ADDR_EXPR " END AS addr, "
#define NO_GROUP_KEYS                                                                                        \
        "CASE WHEN $11::bool THEN NULL::oid END AS u, CASE WHEN $12::bool THEN NULL::oid END AS d, "           \
        "CASE WHEN $13::bool THEN NULL::text END AS app, CASE WHEN $14::bool THEN NULL::text END AS addr, "
#define SNAPSHOT_GROUPS(extra, keys, group_by)                                                               \
        "k AS MATERIALIZED (SELECT " keys                                                                      \
        "          count(*) FILTER (WHERE a.backend_type = 'client backend') AS n, "                            \
        "          max(greatest(age(a.backend_xmin), age(a.backend_xid))) "                                      \
        "            FILTER (WHERE $10::int8 IS NOT NULL AND a.pid <> pg_backend_pid()) AS hz, "                  \
        "          array_agg(a.pid) FILTER (WHERE " SNAPSHOT_WANTED(extra) ") AS pids "                        \
        "        FROM pg_stat_get_activity(NULL) a " group_by ") "

/* graph_cols: the lock graph's two columns for the session rows, with
 * graph_join to read them (empty for the snapshot). */
#define SNAPSHOT_SELECT(graph_cols, graph_join, more_cols)                                                   \
        "SELECT c.pid, c.client, c.super, c.state, c.bs, c.sc, c.qs, c.xs, c.rolname, c.datname, c.app, c.addr, " \
        "  c.query, " US("now()") " AS now_us, c.xmin_age, c.lock_wait, pg_is_in_recovery() AS in_recovery, "  \
        "  c.blockers, c.wait_start, c.n, g.slots, c.holder " more_cols " "                                    \
        "FROM (SELECT current_setting('max_connections')::int4 "                                               \
        "             - current_setting('superuser_reserved_connections')::int4 "                               \
        "             - coalesce(current_setting('reserved_connections', true)::int4, 0) AS slots) g "           \
        "LEFT JOIN ("                                                                                         \
        "SELECT a.pid, a.backend_type = 'client backend' AS client, coalesce(r.rolsuper, false) AS super, a.state, " \
        US("a.backend_start") " AS bs, " US("a.state_change") " AS sc, " US("a.query_start") " AS qs, "        \
        US("a.xact_start") " AS xs, "                                                                         \
        "  r.rolname, d.datname, a.application_name AS app, " ADDR_EXPR " AS addr, "                           \
        "  CASE WHEN $1::bool THEN left(a.query, 1024) END AS query, "                                         \
        "  greatest(age(a.backend_xmin), age(a.backend_xid)) AS xmin_age, "                                    \
        "  coalesce(a.wait_event_type = 'Lock', false) AS lock_wait, " graph_cols ", NULL::int8 AS n, "        \
        "  a.backend_type, a.wait_event_type, NULL::text AS holder "                                          \
        "FROM k CROSS JOIN LATERAL unnest(k.pids) p(pid) CROSS JOIN LATERAL pg_stat_get_activity(p.pid) a "     \
        "LEFT JOIN pg_roles r ON r.oid = a.usesysid LEFT JOIN pg_database d ON d.oid = a.datid " graph_join    \
        "UNION ALL "                                                                                          \
        "SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "                                                \
        "  CASE WHEN $11::bool THEN coalesce(r.rolname, '') END, CASE WHEN $12::bool THEN coalesce(d.datname, '') END, " \
        "  CASE WHEN $13::bool THEN coalesce(k.app, '') END, CASE WHEN $14::bool THEN coalesce(k.addr, '') END, NULL, " \
        "  k.hz, NULL, NULL, NULL, k.n, NULL, NULL, NULL "                                                    \
        "FROM k LEFT JOIN pg_roles r ON r.oid = k.u LEFT JOIN pg_database d ON d.oid = k.d "                   \
        "WHERE k.n > 0 OR k.hz IS NOT NULL "                                                                   \
        HORIZON_HOLDERS                                                                                       \
        ") c ON true"

#define SNAPSHOT_SQL(keys, group_by)                                                                         \
        "WITH " SNAPSHOT_GROUPS("", keys, group_by)                                                            \
        SNAPSHOT_SELECT("NULL::int4[] AS blockers, NULL::int8 AS wait_start", "", "")

const char pg_snapshot_sql[] = SNAPSHOT_SQL(NO_GROUP_KEYS, "");
const char pg_snapshot_groups_sql[] = SNAPSHOT_SQL(GROUP_KEYS, "GROUP BY 1, 2, 3, 4");
const char pg_snapshot_groups_name[] = "pgsweeper_snapshot_groups";

/* The lock graph, read only when a poll of a server with max_blocking or
 * max_lock_wait saw a session waiting for a lock: the same rows as the
 * snapshot (same parameters), plus every waiter and every session it waits
 * for, each waiter with its blockers (pg_blocking_pids(); a parallel
 * worker's wait counts as its leader's) and when its wait began. Blockers
 * are raw: duplicates and pid 0 (a prepared transaction) are the policy's
 * to handle. The arrays are passed through whole: only a parallel group
 * with several waiting members is unnested (to merge them, the leader
 * dropped). A queue of n lists n(n-1)/2 pids (every waiter ahead); the
 * exact reduction to one edge per waiter is lockgraph.c's, in linear time:
 * done here with set operations per row, it cost more than twice the
 * statement (measured at 1000 waiters: 840 ms against 350 ms), and
 * pg_blocking_pids() itself, about 140 ms there, is the floor. The
 * sessions waited for are found without unnesting those lists either:
 * every waiter, and every holder of a lock that someone waits for (from
 * one read of pg_locks, a parallel worker as its leader); a holder whose
 * mode conflicts with no waiter is a row with no edge, harmless. */
#define LOCK_GRAPH_SQL(waitstart_col, waitstart, more_cols)                                                     \
        "WITH w AS MATERIALIZED (SELECT coalesce(a.leader_pid, a.pid) AS pid, a.pid AS waiter, "                \
        "                               pg_blocking_pids(a.pid) AS blockers, a.query_start "                    \
        "          FROM pg_stat_get_activity(NULL) a "                                                          \
        "          WHERE a.wait_event_type = 'Lock' AND a.pid <> pg_backend_pid()), "                           \
        "lk AS MATERIALIZED (SELECT l.pid, l.granted, " waitstart_col " AS waitstart, "                         \
        "          ROW(l.locktype, l.database, l.relation, l.page, l.tuple, l.virtualxid, l.transactionid, "    \
        "              l.classid, l.objid, l.objsubid)::text AS tag "                                           \
        "          FROM pg_locks l WHERE l.pid IS NOT NULL), "                                                  \
        "ls AS (SELECT pid, min(waitstart) AS waitstart FROM lk WHERE NOT granted GROUP BY pid), "               \
        "lg AS (SELECT w.pid, CASE WHEN count(*) = 1 THEN min(w.blockers) "                                     \
        "              ELSE ARRAY(SELECT b.b FROM w x, unnest(x.blockers) b(b) "                                \
        "                         WHERE x.pid = w.pid AND b.b <> w.pid) END AS blockers, "                      \
        "              coalesce(min(" waitstart "), now()) AS wait_start "                                      \
        "       FROM w LEFT JOIN ls ON ls.pid = w.waiter GROUP BY w.pid), "                                     \
        "ids AS (SELECT pid FROM lg UNION "                                                                     \
        "        SELECT coalesce(x.leader_pid, h.pid) FROM lk h "                                               \
        "        LEFT JOIN pg_stat_get_activity(NULL) x ON x.pid = h.pid "                                      \
        "        WHERE h.granted AND h.tag IN (SELECT tag FROM lk WHERE NOT granted)), "                        \
        SNAPSHOT_GROUPS("OR a.pid IN (SELECT pid FROM ids)", GROUP_KEYS, "GROUP BY 1, 2, 3, 4")                                                \
        SNAPSHOT_SELECT("lg.blockers, " US("lg.wait_start") " AS wait_start", "LEFT JOIN lg ON lg.pid = a.pid ",  \
                        more_cols)

/* pg_locks.waitstart exists from PostgreSQL 14; before, the waiter's
 * query_start stands in (the wait began at or after it). */
const char pg_lock_graph_sql[] = LOCK_GRAPH_SQL("l.waitstart", "ls.waitstart", "");
const char pg_lock_graph_sql_13[] = LOCK_GRAPH_SQL("NULL::timestamptz", "w.query_start", "");
const char pg_lock_graph_name[] = "pgsweeper_lock_graph";

/* A capture (--capture, capture.sql): the lock graph statement itself, with
 * every client backend wanted and the horizon's holders read ($10 set: see
 * HORIZON_HOLDERS for which column carries what), read into one JSON object
 * (capture.h says its keys); $20 the server's name. The rows are the
 * daemon's, so a replay judges what a live read would have judged; only the
 * rendering is added: timestamps as UTC ISO 8601 text (exact: the interval
 * arithmetic is in integer microseconds), backend and wait event types as
 * the server says them. A group counted only for its oldest xmin (no client
 * backend: n = 0) is no group of the capture. */
#define ISO(us) "to_char(timestamp 'epoch' + (" us ") * interval '1 microsecond', " \
                "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
#define CAPTURE_SQL(waitstart_col, waitstart)                                                                   \
        "SELECT json_build_object('pgsweeper_capture', 1, 'server', $20::text, "                                \
        "  'server_version', current_setting('server_version'), 'now', " ISO("max(s.now_us)") ", "             \
        "  'role', CASE WHEN bool_or(s.in_recovery) THEN 'standby' ELSE 'primary' END, "                      \
        "  'current_user', current_user, 'connections', sum(s.n), 'connection_slots', max(s.slots), "          \
        "  'groups', coalesce(json_agg(json_build_object('user', s.rolname, 'database', s.datname, "          \
        "      'application', s.app, 'client_addr', s.addr, 'count', s.n) "                                    \
        "    ORDER BY s.rolname, s.datname, s.app, s.addr) FILTER (WHERE s.n > 0), '[]'), "                     \
        "  'sessions', coalesce(json_agg(json_build_object('pid', s.pid, 'backend_type', s.backend_type, "    \
        "      'superuser', s.super, 'state', s.state, 'backend_start', " ISO("s.bs") ", "                     \
        "      'state_change', " ISO("s.sc") ", 'query_start', " ISO("s.qs") ", "                               \
        "      'xact_start', " ISO("s.xs") ", 'wait_start', " ISO("s.wait_start") ", "                          \
        "      'user', s.rolname, 'database', s.datname, 'application', s.app, 'client_addr', s.addr, "        \
        "      'wait_event_type', s.wait_event_type, 'blocking_pids', s.blockers, 'xmin_age', s.xmin_age, "   \
        "      'query', s.query) ORDER BY s.pid) FILTER (WHERE s.pid IS NOT NULL), '[]'), "                     \
        "  'holders', coalesce(json_agg(json_build_object('holder', s.holder, 'name', s.app, "                  \
        "      'owner', s.rolname, 'database', s.datname, 'slot_type', s.addr, 'active', s.lock_wait, "         \
        "      'prepared_at', " ISO("s.bs") ", 'xmin_age', s.xmin_age) ORDER BY s.holder, s.app) "              \
        "    FILTER (WHERE s.holder IS NOT NULL), '[]')) "                                                     \
        "FROM (" LOCK_GRAPH_SQL(waitstart_col, waitstart, ", c.backend_type, c.wait_event_type") ") s"

const char pg_capture_sql[] = CAPTURE_SQL("l.waitstart", "ls.waitstart");
const char pg_capture_sql_13[] = CAPTURE_SQL("NULL::timestamptz", "w.query_start");

const char *pg_capture_sql_for(int server_version) {
        return server_version >= 140000 ? pg_capture_sql : pg_capture_sql_13;
}

/* Two clusters (other hosts, containers, pid namespaces) can have backends
 * with the same pid: own connections are told apart by cluster, pid and
 * backend_start. The cluster is named by its postmaster's start time (us)
 * and port, readable by any role. */
const char pg_setup_sql[] =
        "SELECT set_config('statement_timeout', '5s', false), "
        "set_config('plan_cache_mode', 'force_generic_plan', false), "
        US("(SELECT backend_start FROM pg_stat_get_activity(pg_backend_pid()))") ", "
        US("pg_postmaster_start_time()") "::text || ':' || current_setting('port'), "
        "current_user, pg_has_role('pg_read_all_stats', 'USAGE'), pg_has_role('pg_signal_backend', 'USAGE')";

const char pg_end_abandoned_sql[] =
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_stat_get_activity($1::int4) a "
        "                         WHERE " US("a.backend_start") " = $2::int8) "
        "       THEN pg_terminate_backend($1::int4) ELSE false END";

/* Name of the snapshot statement, prepared once per connection. */
const char pg_snapshot_name[] = "pgsweeper_snapshot";

/* $1 pids, $2 backend_start, $3 guard column name, $4 its value, $5 state
 * (NULL: any), $6 action. Permission is checked before signalling because
 * pg_terminate_backend() raises an error, not false, when it is missing,
 * and one error would abort the whole batch. The checks mirror
 * pg_signal_backend(): superuser targets need a superuser; others need the
 * privileges of the target role or of pg_signal_backend. Once permitted,
 * the functions return false only when the pid is no longer a backend (it
 * exited after this statement's view of pg_stat_activity was taken) or
 * kill() failed, which for a backend we just saw means the same: gone. */
const char pg_action_sql[] =
        "WITH v AS (SELECT * FROM unnest($1::int4[], $2::int8[], $3::text[], $4::int8[], $5::text[], $6::text[]) "
        "             WITH ORDINALITY AS v(pid, backend_start, guard, since, state, action, ord)), "
        "me AS (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) "
        "SELECT v.ord, CASE "
        "WHEN a.pid IS NULL THEN 'gone' "
        "WHEN a.backend_type IS DISTINCT FROM 'client backend' "
        "  OR " US("a.backend_start") " IS DISTINCT FROM v.backend_start "
        "  OR (v.state IS NOT NULL AND a.state IS DISTINCT FROM v.state) "
        "  OR CASE v.guard WHEN 'state_change' THEN " US("a.state_change")
        "                  WHEN 'query_start' THEN " US("a.query_start")
        "                  WHEN 'lock_wait' THEN " US("a.query_start")
        "                  WHEN 'xact_start' THEN " US("a.xact_start")
        "                  ELSE " US("a.backend_start") " END IS DISTINCT FROM v.since "
        "  OR CASE WHEN v.guard = 'lock_wait' THEN NOT EXISTS (SELECT 1 FROM pg_stat_get_activity(NULL) w "
        "       WHERE coalesce(w.leader_pid, w.pid) = v.pid AND w.wait_event_type = 'Lock') ELSE false END "
        "  THEN 'changed' "
        "WHEN r.oid IS NULL THEN 'denied' "
        "WHEN r.rolsuper AND NOT coalesce((SELECT rolsuper FROM me), false) THEN 'denied' "
        "WHEN NOT (pg_has_role(r.oid, 'USAGE') OR pg_has_role('pg_signal_backend', 'USAGE')) THEN 'denied' "
        "WHEN v.action = 'terminate' THEN CASE WHEN pg_terminate_backend(v.pid) THEN 'terminated' ELSE 'gone' END "
        "WHEN v.action = 'cancel' THEN CASE WHEN pg_cancel_backend(v.pid) THEN 'cancelled' ELSE 'gone' END "
        "ELSE 'failed' END "
        "FROM v LEFT JOIN pg_stat_activity a ON a.pid = v.pid "
        "LEFT JOIN pg_roles r ON r.oid = a.usesysid";

const char *pg_lock_graph_sql_for(int server_version) {
        return server_version >= 140000 ? pg_lock_graph_sql : pg_lock_graph_sql_13;
}
