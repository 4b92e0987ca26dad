/* libpq plumbing: connection set-up, the snapshot statement and its result. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "pg.h"

/* Timestamps as int8 microseconds since the Unix epoch: exact (extract()
 * returns numeric since PG 14) and trivial to parse. now() is the server's
 * clock at the start of this statement; elapsed times never use ours. */
#define US(ts) "(extract(epoch FROM " ts ") * 1000000)::int8"

/* $1 query text wanted, $2..$6 per kind: the smallest limit (ms) less the
 * lookahead, or NULL when no rule sets that limit, $7 pids always wanted,
 * $8 superusers wanted, $9 lock waiters wanted (a rule judges lock chains),
 * $10 the smallest max_xmin_age (NULL: none). Rows: the client backends past
 * that bound, i.e. past a limit now or crossing one before the next poll can
 * come, those whose xid horizon is that old (ages cannot be planned: checked
 * every poll), and with $9 every backend waiting for a heavyweight lock (they
 * say whether the lock graph is worth reading); the C policy judges them
 * exactly and plans the next poll from the ones a rule can really act on. One
 * pass over pg_stat_get_activity() with plain comparisons; names, joins and
 * conversions only for the rows it keeps. The outer one-row join carries
 * now() and pg_is_in_recovery() even when no session is sent (its session
 * columns are then NULL). */
#define SNAPSHOT_SELECT(graph_cols)                                                                        \
        "SELECT c.pid, c.client, c.super, c.state, c.bs, c.sc, c.qs, c.xs, c.rolname, c.datname, c.app, c.addr, " \
        "  c.query, " US("now()") ", c.xmin_age, c.lock_wait, pg_is_in_recovery(), " graph_cols " "            \
        "FROM (SELECT 1) g LEFT JOIN ("                                                                       \
        "SELECT a.pid, a.backend_type = 'client backend' AS client, coalesce(r.rolsuper, false) AS super, a.state, " \
        US("a.backend_start") " AS bs, " US("a.state_change") " AS sc, " US("a.query_start") " AS qs, "        \
        US("a.xact_start") " AS xs, "                                                                         \
        "  r.rolname, d.datname, a.application_name AS app, "                                                 \
        "  CASE WHEN a.client_port = -1 THEN 'local' ELSE host(a.client_addr) END AS addr, "                   \
        "  CASE WHEN $1::bool THEN left(a.query, 1024) END AS query, "                                         \
        "  greatest(age(a.backend_xmin), age(a.backend_xid)) AS xmin_age, "                                    \
        "  coalesce(a.wait_event_type = 'Lock', false) AS lock_wait "

#define SNAPSHOT_WHERE                                                                                        \
        "WHERE a.pid <> pg_backend_pid() AND ("                                                               \
        "  (a.backend_type = 'client backend' "                                                               \
        "   AND ((a.state = 'idle' AND a.state_change <= now() - $2::int8 * interval '1 millisecond') "        \
        "    OR (a.state IN ('idle in transaction', 'idle in transaction (aborted)') "                         \
        "        AND a.state_change <= now() - $3::int8 * interval '1 millisecond') "                          \
        "    OR (a.state IN ('active', 'fastpath function call') "                                             \
        "        AND a.query_start <= now() - $4::int8 * interval '1 millisecond') "                           \
        "    OR a.xact_start <= now() - $5::int8 * interval '1 millisecond' "                                  \
        "    OR a.backend_start <= now() - $6::int8 * interval '1 millisecond' "                               \
        "    OR ($10::int8 IS NOT NULL AND greatest(age(a.backend_xmin), age(a.backend_xid)) >= $10::int8) "    \
        "    OR a.pid = ANY($7::int4[])) IS TRUE "                                                             \
        "   AND ($8::bool OR NOT coalesce(r.rolsuper, false))) "                                               \
        "  OR ($9::bool AND a.wait_event_type = 'Lock')"

const char pg_snapshot_sql[] =
        SNAPSHOT_SELECT("NULL::int4[], NULL::int8")
        "FROM pg_stat_get_activity(NULL) a "
        "LEFT JOIN pg_roles r ON r.oid = a.usesysid LEFT JOIN pg_database d ON d.oid = a.datid "
        SNAPSHOT_WHERE ")"
        ") c ON true";

/* The lock graph, read only when a poll of a server with max_blocking or
 * max_lock_wait saw a session waiting for a lock: the same rows as the
 * snapshot (same parameters), plus every waiter and every session it waits
 * for, each waiter with its blockers (pg_blocking_pids(); a parallel
 * worker's wait counts as its leader's) and when its wait began. Blockers
 * are raw: duplicates and pid 0 (a prepared transaction) are the policy's
 * to handle. */
#define LOCK_GRAPH_SQL(waitstart_cte, waitstart_join, waitstart)                                                               \
        "WITH w AS MATERIALIZED (SELECT coalesce(a.leader_pid, a.pid) AS pid, a.pid AS waiter, "                \
        "                               pg_blocking_pids(a.pid) AS blockers, a.query_start "                    \
        "          FROM pg_stat_get_activity(NULL) a "                                                          \
        "          WHERE a.wait_event_type = 'Lock' AND a.pid <> pg_backend_pid()), "                           \
        waitstart_cte                                                                                          \
        "lg AS (SELECT w.pid, array_agg(b.b) FILTER (WHERE b.b IS NOT NULL) AS blockers, "                      \
        "              coalesce(min(" waitstart "), now()) AS wait_start "                                      \
        "       FROM w " waitstart_join " LEFT JOIN LATERAL unnest(w.blockers) b(b) ON true GROUP BY w.pid), "  \
        "ids AS (SELECT pid FROM lg UNION SELECT unnest(blockers) FROM lg) "                                    \
        SNAPSHOT_SELECT("c.blockers, c.wait_start")                                                            \
        ", lg.blockers, " US("lg.wait_start") " AS wait_start "                                                 \
        "FROM pg_stat_get_activity(NULL) a "                                                                   \
        "LEFT JOIN pg_roles r ON r.oid = a.usesysid LEFT JOIN pg_database d ON d.oid = a.datid "               \
        "LEFT JOIN lg ON lg.pid = a.pid "                                                                      \
        SNAPSHOT_WHERE " OR a.pid IN (SELECT pid FROM ids))"                                                   \
        ") c ON true"

/* pg_locks.waitstart exists from PostgreSQL 14; before, the waiter's
 * query_start stands in (the wait began at or after it). */
const char pg_lock_graph_sql[] = LOCK_GRAPH_SQL(
        "ls AS (SELECT l.pid, min(l.waitstart) AS waitstart FROM pg_locks l WHERE NOT l.granted GROUP BY l.pid), ",
        "LEFT JOIN ls ON ls.pid = w.waiter", "ls.waitstart");
const char pg_lock_graph_sql_13[] = LOCK_GRAPH_SQL("", "", "w.query_start");
const char pg_lock_graph_name[] = "pgsweeper_lock_graph";

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

int pg_identity_from_result(const PGresult *res, struct pg_identity *ret) {
        *ret = (struct pg_identity) {};
        if (PQresultStatus(res) != PGRES_TUPLES_OK || PQnfields(res) != 7 || PQntuples(res) != 1 ||
            parse_int64(PQgetvalue(res, 0, 2), &ret->backend_start) < 0)
                return -EBADMSG;
        ret->cluster = xstrdup(PQgetvalue(res, 0, 3));
        ret->role = xstrdup(PQgetvalue(res, 0, 4));
        ret->can_see_all = PQgetvalue(res, 0, 5)[0] == 't';
        ret->can_signal_all = PQgetvalue(res, 0, 6)[0] == 't';
        return 0;
}

void pg_identity_done(struct pg_identity *id) {
        free(id->cluster);
        free(id->role);
        *id = (struct pg_identity) {};
}

/* Name of the snapshot statement, prepared once per connection. */
const char pg_snapshot_name[] = "pgsweeper_snapshot";

enum {
        COL_PID, COL_CLIENT_BACKEND, COL_SUPERUSER, COL_STATE,
        COL_BACKEND_START, COL_STATE_CHANGE, COL_QUERY_START, COL_XACT_START,
        COL_USER, COL_DATABASE, COL_APPLICATION, COL_CLIENT_ADDR, COL_QUERY, COL_NOW,
        COL_XMIN_AGE, COL_LOCK_WAIT, COL_IN_RECOVERY, COL_BLOCKERS, COL_WAIT_START,
        _COL_MAX,
};

PGconn *pg_connect_start(const char *conninfo) {
        /* Processed in order, later wins: our defaults come before the user's
         * conninfo (expanded from "dbname"), so the user can change them. */
        const char *const keys[] = { "dbname", "fallback_application_name", NULL };
        const char *const values[] = { conninfo, "pgsweeper", NULL };
        PGconn *conn = PQconnectStartParams(keys, values, 1);

        if (conn && PQstatus(conn) != CONNECTION_BAD)
                PQsetnonblocking(conn, 1);
        return conn;
}

unsigned pg_connect_timeout_sec(const char *conninfo, unsigned fallback) {
        PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
        unsigned r = fallback;

        for (PQconninfoOption *o = opts; o && o->keyword; o++)
                if (strcmp(o->keyword, "connect_timeout") == 0 && o->val) {
                        int64_t v;
                        /* libpq's own rule: anything under 2 s means 2 s, 0 means none (ours then) */
                        if (parse_int64(o->val, &v) == 0 && v > 0)
                                r = v < 2 ? 2 : v > 3600 ? 3600 : (unsigned) v;
                }
        PQconninfoFree(opts);
        return r;
}

int parse_int64(const char *s, int64_t *ret) {
        char *end;
        long long v;

        errno = 0;
        v = strtoll(s, &end, 10);
        if (errno || end == s || *end)
                return -EINVAL;
        *ret = v;
        return 0;
}

static int64_t ts_value(const PGresult *res, int row, int col) {
        int64_t v;
        if (PQgetisnull(res, row, col) || parse_int64(PQgetvalue(res, row, col), &v) < 0)
                return TS_NULL;
        return v;
}

/* "{1,2,0}" -> pids appended to *pool; returns how many. Junk is skipped. */
static size_t parse_pid_array(const char *s, int32_t **pool, size_t *n_pool) {
        size_t n = 0;

        while (*s) {
                char *end;
                long v;

                if (*s < '0' || *s > '9') {
                        s++;
                        continue;
                }
                errno = 0;
                v = strtol(s, &end, 10);
                s = end;
                if (errno || v < 0 || v > INT32_MAX)
                        continue;
                *pool = xreallocarray(*pool, *n_pool + 1, sizeof(int32_t));
                (*pool)[(*n_pool)++] = (int32_t) v;
                n++;
        }
        return n;
}

int snapshot_from_result(const PGresult *res, struct snapshot *ret) {
        static const int string_cols[] = { COL_USER, COL_DATABASE, COL_APPLICATION, COL_CLIENT_ADDR, COL_QUERY };
        int n = PQntuples(res);
        size_t bytes = 0, off = 0, n_pool = 0;
        _cleanup_free_ size_t *first_blocker = NULL;
        int32_t *pool = NULL;
        struct snapshot s = { .now = TS_NULL };

        *ret = (struct snapshot) {};
        if (PQresultStatus(res) != PGRES_TUPLES_OK || PQnfields(res) != _COL_MAX)
                return -EBADMSG;

        /* All strings of the snapshot live in one block owned by it. */
        for (int i = 0; i < n; i++)
                for (size_t c = 0; c < ELEMENTSOF(string_cols); c++)
                        bytes += (size_t) PQgetlength(res, i, string_cols[c]) + 1;
        s.strings = xmalloc(bytes + 1);
        s.rows = xcalloc(n > 0 ? (size_t) n : 1, sizeof(*s.rows));
        first_blocker = xcalloc(n > 0 ? (size_t) n : 1, sizeof(*first_blocker));

        for (int i = 0; i < n; i++) {
                struct snapshot_row *row = &s.rows[s.n_rows];
                const char **dest[ELEMENTSOF(string_cols)] = {
                        &row->user, &row->database, &row->application, &row->client_addr, &row->query,
                };
                int64_t pid;

                if (s.now == TS_NULL) {
                        s.now = ts_value(res, i, COL_NOW);
                        s.role_known = !PQgetisnull(res, i, COL_IN_RECOVERY);
                        s.in_recovery = PQgetvalue(res, i, COL_IN_RECOVERY)[0] == 't';
                }
                if (parse_int64(PQgetvalue(res, i, COL_PID), &pid) < 0 || pid <= 0 || pid > INT32_MAX)
                        continue;
                row->pid = (int32_t) pid;
                row->client_backend = !PQgetisnull(res, i, COL_CLIENT_BACKEND) &&
                                      PQgetvalue(res, i, COL_CLIENT_BACKEND)[0] == 't';
                row->superuser = PQgetvalue(res, i, COL_SUPERUSER)[0] != 'f';
                row->state = session_state_parse(PQgetisnull(res, i, COL_STATE) ? NULL : PQgetvalue(res, i, COL_STATE));
                row->backend_start = ts_value(res, i, COL_BACKEND_START);
                row->state_change = ts_value(res, i, COL_STATE_CHANGE);
                row->query_start = ts_value(res, i, COL_QUERY_START);
                row->xact_start = ts_value(res, i, COL_XACT_START);
                row->xmin_age = ts_value(res, i, COL_XMIN_AGE);
                if (row->xmin_age == TS_NULL)
                        row->xmin_age = -1;
                row->lock_waiting = PQgetvalue(res, i, COL_LOCK_WAIT)[0] == 't';
                s.n_lock_waiting += row->lock_waiting;
                row->wait_start = ts_value(res, i, COL_WAIT_START);
                if (!PQgetisnull(res, i, COL_BLOCKERS)) {
                        first_blocker[s.n_rows] = n_pool;   /* the pool may still move */
                        row->n_blockers = parse_pid_array(PQgetvalue(res, i, COL_BLOCKERS), &pool, &n_pool);
                }
                for (size_t c = 0; c < ELEMENTSOF(string_cols); c++) {
                        size_t len = (size_t) PQgetlength(res, i, string_cols[c]);
                        if (string_cols[c] == COL_QUERY && PQgetisnull(res, i, COL_QUERY)) {
                                *dest[c] = NULL;
                                continue;
                        }
                        memcpy(s.strings + off, PQgetvalue(res, i, string_cols[c]), len);
                        s.strings[off + len] = '\0';
                        *dest[c] = s.strings + off;
                        off += len + 1;
                }
                s.n_rows++;
        }
        for (size_t i = 0; i < s.n_rows; i++)
                s.rows[i].blockers = s.rows[i].n_blockers ? pool + first_blocker[i] : NULL;
        s.blocker_pool = pool;
        *ret = s;
        return 0;
}

void snapshot_request_limits(const struct server *srv, int64_t lookahead_ms, struct snapshot_request *req) {
        for (enum limit_kind k = 0; k < _LIMIT_MAX; k++) {
                req->bound_ms[k] = -1;
                for (size_t i = 0; i < srv->n_rules; i++) {
                        const struct rule *r = &srv->rules[i];
                        /* An age cannot be planned: a session is sent once it is reached. */
                        int64_t b = r->limit_ms[k] - (r->action == ACTION_LOG || !limit_is_duration(k) ? 0 : lookahead_ms);
                        if (r->limit_ms[k] <= 0)
                                continue;
                        if (b < 0)
                                b = 0;
                        if (req->bound_ms[k] < 0 || b < req->bound_ms[k])
                                req->bound_ms[k] = b;
                }
        }
        req->superusers = srv->terminate_superusers;
}

void snapshot_params_build(const struct snapshot_request *req, struct snapshot_params *ret) {
        static const enum limit_kind order[] = {
                LIMIT_IDLE, LIMIT_IDLE_IN_TRANSACTION, LIMIT_QUERY_DURATION, LIMIT_TRANSACTION_AGE, LIMIT_SESSION_AGE,
        };
        size_t len = 3, off;

        *ret = (struct snapshot_params) {};
        ret->values[0] = xstrdup(req->with_query ? "t" : "f");
        for (size_t i = 0; i < ELEMENTSOF(order); i++)
                if (req->bound_ms[order[i]] >= 0 &&
                    asprintf(&ret->values[1 + i], "%" PRId64, req->bound_ms[order[i]]) < 0)
                        ret->values[1 + i] = NULL;
        len += req->n_pids * 12;
        ret->values[6] = xmalloc(len);
        off = (size_t) snprintf(ret->values[6], len, "{");
        for (size_t i = 0; i < req->n_pids; i++)
                off += (size_t) snprintf(ret->values[6] + off, len - off, "%s%" PRId32, i ? "," : "", req->pids[i]);
        snprintf(ret->values[6] + off, len - off, "}");
        ret->values[7] = xstrdup(req->superusers ? "t" : "f");
        ret->values[8] = xstrdup(req->lock_waiters ? "t" : "f");
        if (req->bound_ms[LIMIT_XMIN_AGE] >= 0 &&
            asprintf(&ret->values[9], "%" PRId64, req->bound_ms[LIMIT_XMIN_AGE]) < 0)
                ret->values[9] = NULL;
        /* A session-age bound of now() makes every backend a candidate. */
        if (req->every_session) {
                free(ret->values[5]);
                ret->values[5] = xstrdup("0");
        }
}

void snapshot_params_free(struct snapshot_params *p) {
        for (size_t i = 0; i < SNAPSHOT_PARAMS; i++)
                free(p->values[i]);
        *p = (struct snapshot_params) {};
}
