/* The guarded action: statements of at most ENFORCE_BATCH_MAX victims that
 * signal a backend only if it is still the session that was judged, in the
 * state it was judged in, and say per pid what happened. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "enforce.h"
#include "macro.h"
#include "snapshot.h"
#include "sql.h"

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

static const char *const outcome_names[_OUTCOME_MAX] = {
        [OUTCOME_GONE] = "gone",
        [OUTCOME_PRESENT] = "present",
};

DEFINE_STRING_TABLE_LOOKUP(outcome, enum outcome, outcome_names)

void unknown_signal_done(struct unknown_signal *u) {
        free(u->rule);
        free(u->user);
        free(u->database);
        free(u->application);
        free(u->client_addr);
        *u = (struct unknown_signal) {};
}

static const char *const guard_columns[_LIMIT_MAX] = {
        [LIMIT_IDLE] = "state_change",
        [LIMIT_IDLE_IN_TRANSACTION] = "state_change",
        [LIMIT_QUERY_DURATION] = "query_start",
        [LIMIT_TRANSACTION_AGE] = "xact_start",
        [LIMIT_SESSION_AGE] = "backend_start",
        [LIMIT_BLOCKING] = "state_change",
        [LIMIT_LOCK_WAIT] = "lock_wait",      /* query_start, and still waiting for a lock */
        [LIMIT_XMIN_AGE] = "xact_start",
        [LIMIT_SESSIONS] = "state_change",   /* still idle since the same moment */
};

const char *limit_guard_column(enum limit_kind k) {
        return k < _LIMIT_MAX ? guard_columns[k] : "backend_start";
}

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
        case LIMIT_SESSIONS:
                return session_state_to_string(d->row->state);
        default:
                return NULL;
        }
}

static bool signals(const struct decision *d) {
        return !d->dry_run && d->action != ACTION_LOG;
}

size_t enforce_prepare(const struct judgement *j, enum result *results) {
        size_t n = 0;

        for (size_t i = 0; i < j->n_decisions; i++) {
                const struct decision *d = &j->decisions[i];
                if (d->dry_run)
                        results[i] = RESULT_DRY_RUN;
                else if (d->action == ACTION_LOG)
                        results[i] = RESULT_LOGGED;
                else {
                        results[i] = RESULT_NOT_SENT;
                        n++;
                }
        }
        return n;
}

size_t enforce_next_batch(const struct judgement *j, enum result *results, size_t *next, struct action_batch *ret) {
        struct array_text arrays[6] = {};
        size_t i;

        *ret = (struct action_batch) { .index = xcalloc(ENFORCE_BATCH_MAX, sizeof(size_t)) };
        for (i = *next; i < j->n_decisions && ret->n < ENFORCE_BATCH_MAX; i++) {
                const struct decision *d = &j->decisions[i];
                int64_t since = limit_since(d->limit, d->row);
                char num[32];

                if (!signals(d) || results[i] != RESULT_NOT_SENT)
                        continue;
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
        *next = i;
        if (ret->n > 0)
                for (size_t a = 0; a < ELEMENTSOF(arrays); a++) {
                        array_finish(&arrays[a]);
                        ret->params[a] = arrays[a].buf;
                }
        return ret->n;
}

size_t action_batch_end(const struct action_batch *b) {
        return b->n > 0 ? b->index[b->n - 1] + 1 : 0;
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
