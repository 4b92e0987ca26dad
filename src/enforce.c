/* The guarded action: one statement per server and cycle that signals a
 * backend only if it is still the session that was judged, in the state it
 * was judged in, and says per pid what happened. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "enforce.h"
#include "macro.h"
#include "pg.h"

static const char *const result_names[_RESULT_MAX] = {
        [RESULT_TERMINATED] = "terminated",
        [RESULT_CANCELLED] = "cancelled",
        [RESULT_LOGGED] = "logged",
        [RESULT_DRY_RUN] = "dry-run",
        [RESULT_GONE] = "gone",
        [RESULT_CHANGED] = "changed",
        [RESULT_DENIED] = "denied",
        [RESULT_FAILED] = "failed",
        [RESULT_UNKNOWN] = "unknown",
};

DEFINE_STRING_TABLE_LOOKUP(result, enum result, result_names)

static const char *const guard_columns[_LIMIT_MAX] = {
        [LIMIT_IDLE] = "state_change",
        [LIMIT_IDLE_IN_TRANSACTION] = "state_change",
        [LIMIT_QUERY_DURATION] = "query_start",
        [LIMIT_TRANSACTION_AGE] = "xact_start",
        [LIMIT_SESSION_AGE] = "backend_start",
        [LIMIT_BLOCKING] = "state_change",
        [LIMIT_LOCK_WAIT] = "lock_wait",      /* query_start, and still waiting for a lock */
        [LIMIT_XMIN_AGE] = "xact_start",
};

const char *limit_guard_column(enum limit_kind k) {
        return k < _LIMIT_MAX ? guard_columns[k] : "backend_start";
}

#define US(ts) "(extract(epoch FROM " ts ") * 1000000)::int8"

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

/* Text array literal builder: {a,b,NULL,...}. Values are digits, guard
 * column names, state names or action names: quoted for the spaces in
 * "idle in transaction", none contains quotes or backslashes. */
struct array_text {
        char *buf;
        size_t len, cap;
};

static void array_append(struct array_text *a, const char *value, bool quote) {
        size_t need = (value ? strlen(value) : 4) + 4;
        if (a->len + need + 2 > a->cap) {
                a->cap = (a->len + need + 2) * 2;
                a->buf = xreallocarray(a->buf, a->cap, 1);
        }
        char sep = a->len == 0 ? '{' : ',';

        a->buf[a->len++] = sep;
        a->len += (size_t) snprintf(a->buf + a->len, a->cap - a->len, value && quote ? "\"%s\"" : "%s",
                                    value ? value : "NULL");
}

/* Only called after at least one array_append(). */
static void array_finish(struct array_text *a) {
        a->buf[a->len++] = '}';
        a->buf[a->len] = '\0';
}

/* The state that must still hold for the action to be right; NULL: any. */
static const char *guard_state(const struct decision *d) {
        switch (d->limit) {
        case LIMIT_IDLE:
        case LIMIT_IDLE_IN_TRANSACTION:
        case LIMIT_QUERY_DURATION:
        case LIMIT_BLOCKING:
                return session_state_to_string(d->row->state);
        default:
                return NULL;
        }
}

size_t enforce_prepare(const struct judgement *j, enum result *results, struct action_batch *ret) {
        struct array_text arrays[6] = {};

        *ret = (struct action_batch) { .index = xcalloc(j->n_decisions + 1, sizeof(size_t)) };
        for (size_t i = 0; i < j->n_decisions; i++) {
                const struct decision *d = &j->decisions[i];
                int64_t since = limit_since(d->limit, d->row);
                char num[32];

                if (d->dry_run) {
                        results[i] = RESULT_DRY_RUN;
                        continue;
                }
                if (d->action == ACTION_LOG) {
                        results[i] = RESULT_LOGGED;
                        continue;
                }
                results[i] = RESULT_FAILED;
                ret->index[ret->n++] = i;
                snprintf(num, sizeof(num), "%" PRId32, d->row->pid);
                array_append(&arrays[0], num, false);
                snprintf(num, sizeof(num), "%" PRId64, d->row->backend_start);
                array_append(&arrays[1], d->row->backend_start == TS_NULL ? NULL : num, false);
                array_append(&arrays[2], limit_guard_column(d->limit), true);
                snprintf(num, sizeof(num), "%" PRId64, since);
                array_append(&arrays[3], since == TS_NULL ? NULL : num, false);
                array_append(&arrays[4], guard_state(d), true);
                array_append(&arrays[5], action_to_string(d->action), true);
        }
        if (ret->n > 0)
                for (size_t a = 0; a < ELEMENTSOF(arrays); a++) {
                        array_finish(&arrays[a]);
                        ret->params[a] = arrays[a].buf;
                }
        return ret->n;
}

int enforce_read_result(const struct action_batch *b, const PGresult *res, enum result *results) {
        if (PQresultStatus(res) != PGRES_TUPLES_OK || PQnfields(res) != 2)
                return -EBADMSG;
        for (int row = 0; row < PQntuples(res); row++) {
                int64_t ord;
                int r;
                /* ord is 1-based over the batch, in the order sent */
                if (parse_int64(PQgetvalue(res, row, 0), &ord) < 0 || ord < 1 || (size_t) ord > b->n)
                        continue;
                r = result_from_string(PQgetvalue(res, row, 1));
                results[b->index[ord - 1]] = r < 0 ? RESULT_FAILED : (enum result) r;
        }
        return 0;
}

void action_batch_free(struct action_batch *b) {
        for (size_t a = 0; a < ELEMENTSOF(b->params); a++)
                free(b->params[a]);
        free(b->index);
        *b = (struct action_batch) {};
}

void enforce_mark_unknown(const struct action_batch *b, enum result *results) {
        for (size_t i = 0; i < b->n; i++)
                results[b->index[i]] = RESULT_UNKNOWN;
}
