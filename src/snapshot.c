/* The snapshot statement's two sides: a request turned into its
 * parameters, and its result turned into a struct snapshot. The daemon, --once
 * and --explain all read a server through here. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "macro.h"
#include "plan.h"
#include "snapshot.h"
#include "sql.h"

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

/* The columns of pg_snapshot_sql and pg_lock_graph_sql, in order. */
enum {
        COL_PID, COL_CLIENT_BACKEND, COL_SUPERUSER, COL_STATE,
        COL_BACKEND_START, COL_STATE_CHANGE, COL_QUERY_START, COL_XACT_START,
        COL_USER, COL_DATABASE, COL_APPLICATION, COL_CLIENT_ADDR, COL_QUERY, COL_NOW,
        COL_XMIN_AGE, COL_LOCK_WAIT, COL_IN_RECOVERY, COL_BLOCKERS, COL_WAIT_START, COL_COUNT, COL_SLOTS,
        COL_HOLDER, _COL_MAX,
};

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

/* The value at (row, col) copied into the snapshot's block of strings at
 * *off, which moves past it. */
static const char *take_string(const PGresult *res, int row, int col, char *strings, size_t *off) {
        size_t len = (size_t) PQgetlength(res, row, col);
        char *at = strings + *off;

        memcpy(at, PQgetvalue(res, row, col), len);
        at[len] = '\0';
        *off += len + 1;
        return at;
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
        s.groups = xcalloc(n > 0 ? (size_t) n : 1, sizeof(*s.groups));
        s.holders = xcalloc(n > 0 ? (size_t) n : 1, sizeof(*s.holders));
        for (enum holder_kind k = 0; k < _HOLDER_MAX; k++)
                s.horizon_age[k] = -1;
        s.connections = s.connection_slots = -1;
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
                        s.connection_slots = ts_value(res, i, COL_SLOTS);
                        if (s.connection_slots == TS_NULL)
                                s.connection_slots = -1;
                }
                if (!PQgetisnull(res, i, COL_HOLDER)) {
                        /* a prepared transaction or a slot (see HORIZON_HOLDERS) */
                        struct horizon_holder *h = &s.holders[s.n_holders];
                        const char **names[] = { &h->owner, &h->database, &h->name, &h->slot_type };

                        h->kind = strcmp(PQgetvalue(res, i, COL_HOLDER), "slot") == 0 ? HOLDER_SLOT : HOLDER_PREPARED;
                        h->xmin_age = ts_value(res, i, COL_XMIN_AGE);
                        if (h->xmin_age == TS_NULL)
                                continue;
                        h->prepared_at = ts_value(res, i, COL_BACKEND_START);
                        h->active = PQgetvalue(res, i, COL_LOCK_WAIT)[0] == 't';
                        for (size_t c = 0; c < ELEMENTSOF(names); c++)
                                *names[c] = take_string(res, i, string_cols[c], s.strings, &off);
                        if (h->xmin_age > s.horizon_age[h->kind])
                                s.horizon_age[h->kind] = h->xmin_age;
                        s.n_holders++;
                        continue;
                }
                if (PQgetisnull(res, i, COL_PID) && !PQgetisnull(res, i, COL_COUNT)) {
                        /* a group: its count, and the keys it was counted by */
                        static const enum group_key keys[] = {
                                GROUP_USER, GROUP_DATABASE, GROUP_APPLICATION, GROUP_CLIENT_ADDRESS,
                        };
                        struct snapshot_group *g = &s.groups[s.n_groups];
                        int64_t hz = ts_value(res, i, COL_XMIN_AGE);

                        /* the oldest xmin of the group's backends (asked with a max_xmin_age bound) */
                        if (hz != TS_NULL && hz > s.horizon_age[HOLDER_SESSION])
                                s.horizon_age[HOLDER_SESSION] = hz;
                        if (ts_value(res, i, COL_COUNT) <= 0)
                                continue;
                        g->count = ts_value(res, i, COL_COUNT);
                        for (size_t c = 0; c < ELEMENTSOF(keys); c++) {
                                if (!PQgetisnull(res, i, string_cols[c]))
                                        g->key[keys[c]] = take_string(res, i, string_cols[c], s.strings, &off);
                        }
                        s.connections = (s.connections < 0 ? 0 : s.connections) + g->count;
                        s.n_groups++;
                        continue;
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
                        if (string_cols[c] == COL_QUERY && PQgetisnull(res, i, COL_QUERY)) {
                                *dest[c] = NULL;
                                continue;
                        }
                        *dest[c] = take_string(res, i, string_cols[c], s.strings, &off);
                }
                s.n_rows++;
        }
        for (size_t i = 0; i < s.n_rows; i++)
                s.rows[i].blockers = s.rows[i].n_blockers ? pool + first_blocker[i] : NULL;
        s.blocker_pool = pool;
        *ret = s;
        return 0;
}



/* A text[] literal of arbitrary strings (names a server sent: quotes,
 * backslashes, commas and braces included): every element quoted, " and \
 * escaped. The server parses it as a parameter, never as SQL. */
static char *text_array(const struct key_list *l) {
        size_t len = 3;
        char *buf, *p;

        for (size_t i = 0; i < l->n; i++)
                len += 2 * strlen(l->values[i]) + 3;
        p = buf = xmalloc(len);
        *p++ = '{';
        for (size_t i = 0; i < l->n; i++) {
                if (i)
                        *p++ = ',';
                *p++ = '"';
                for (const char *c = l->values[i]; *c; c++) {
                        if (*c == '"' || *c == '\\')
                                *p++ = '\\';
                        *p++ = *c;
                }
                *p++ = '"';
        }
        *p++ = '}';
        *p = '\0';
        return buf;
}

void snapshot_params_build(const struct snapshot_request *req, struct snapshot_params *ret) {
        static const enum limit_kind order[] = {
                LIMIT_IDLE, LIMIT_IDLE_IN_TRANSACTION, LIMIT_QUERY_DURATION, LIMIT_TRANSACTION_AGE, LIMIT_SESSION_AGE,
        };
        size_t len = 3, off;

        *ret = (struct snapshot_params) {};
        ret->values[0] = xstrdup(req->with_query ? "t" : "f");
        for (size_t i = 0; i < ELEMENTSOF(order); i++)
                if (req->bound_ms[order[i]] >= 0)
                        ret->values[1 + i] = xasprintf("%" PRId64, req->bound_ms[order[i]]);
        len += req->n_pids * 12;
        ret->values[6] = xmalloc(len);
        off = (size_t) snprintf(ret->values[6], len, "{");
        for (size_t i = 0; i < req->n_pids; i++)
                off += (size_t) snprintf(ret->values[6] + off, len - off, "%s%" PRId32, i ? "," : "", req->pids[i]);
        snprintf(ret->values[6] + off, len - off, "}");
        ret->values[7] = xstrdup(req->superusers ? "t" : "f");
        ret->values[8] = xstrdup(req->lock_waiters ? "t" : "f");
        if (req->bound_ms[LIMIT_XMIN_AGE] >= 0)
                ret->values[9] = xasprintf("%" PRId64, req->bound_ms[LIMIT_XMIN_AGE]);
        /* A session-age bound of now() makes every backend a candidate. */
        if (req->every_session) {
                free(ret->values[5]);
                ret->values[5] = xstrdup("0");
        }
        for (enum group_key g = GROUP_USER; g < _GROUP_MAX; g++) {
                ret->values[10 + g - GROUP_USER] = xstrdup(req->group_by[g] ? "t" : "f");
                if (req->idle_keys[g].n > 0)
                        ret->values[15 + g - GROUP_USER] = text_array(&req->idle_keys[g]);
        }
        ret->values[14] = xstrdup(req->idle_all ? "t" : "f");
}

static void key_list_done(struct key_list *l) {
        for (size_t i = 0; i < l->n; i++)
                free(l->values[i]);
        free(l->values);
        *l = (struct key_list) {};
}

static bool key_list_has(const struct key_list *l, const char *value) {
        for (size_t i = 0; i < l->n; i++)
                if (strcmp(l->values[i], value) == 0)
                        return true;
        return false;
}

static void key_list_add(struct key_list *l, const char *value) {
        if (key_list_has(l, value))
                return;
        l->values = xreallocarray(l->values, l->n + 1, sizeof(*l->values));
        l->values[l->n++] = xstrdup(value);
}

void snapshot_request_add_idle(struct snapshot_request *r, enum group_key per, const char *value) {
        if (per == GROUP_ALL)
                r->idle_all = true;
        else if (per < _GROUP_MAX)
                key_list_add(&r->idle_keys[per], value);
}

void snapshot_note_request(struct snapshot *snap, const struct snapshot_request *req) {
        snap->idle_all = req->idle_all || req->every_session;
        snap->has_horizon = req->bound_ms[LIMIT_XMIN_AGE] >= 0;
        for (enum group_key g = GROUP_USER; g < _GROUP_MAX; g++)
                for (size_t i = 0; i < req->idle_keys[g].n; i++)
                        key_list_add(&snap->idle_keys[g], req->idle_keys[g].values[i]);
}

bool snapshot_has_idle(const struct snapshot *snap, enum group_key per, const char *value) {
        return snap->idle_all || (per != GROUP_ALL && per < _GROUP_MAX && key_list_has(&snap->idle_keys[per], value));
}

void snapshot_idle_keys_free(struct snapshot *snap) {
        for (enum group_key g = 0; g < _GROUP_MAX; g++)
                key_list_done(&snap->idle_keys[g]);
}

void snapshot_params_free(struct snapshot_params *p) {
        for (size_t i = 0; i < SNAPSHOT_PARAMS; i++)
                free(p->values[i]);
        *p = (struct snapshot_params) {};
}

void snapshot_request_done(struct snapshot_request *r) {
        free(r->pids);
        for (enum group_key g = 0; g < _GROUP_MAX; g++)
                key_list_done(&r->idle_keys[g]);
        *r = (struct snapshot_request) {};
}

static uint64_t monotonic_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000u + (uint64_t) ts.tv_nsec / 1000u;
}

/* Wait until conn's socket is readable (or writable, for_write), or until
 * deadline_usec passes: 1 ready, 0 timed out, negative errno. */
static int wait_socket(PGconn *conn, bool for_write, uint64_t deadline_usec) {
        struct pollfd p = { .fd = PQsocket(conn), .events = POLLIN | (for_write ? POLLOUT : 0) };

        if (p.fd < 0)
                return -EBADF;
        for (;;) {
                uint64_t now = monotonic_usec(), ms;
                int r;

                if (now >= deadline_usec)
                        return 0;
                /* rounded up: never spin on a last fraction of a millisecond */
                ms = (deadline_usec - now + 999) / 1000;
                r = poll(&p, 1, ms > INT32_MAX ? INT32_MAX : (int) ms);
                if (r > 0)
                        return 1;
                if (r < 0 && errno != EINTR)
                        return -errno;
        }
}

int pg_connect_bounded(PGconn *conn, uint64_t timeout_usec) {
        uint64_t deadline = monotonic_usec() + timeout_usec;
        PostgresPollingStatusType st = PGRES_POLLING_WRITING;   /* as libpq says to begin */

        for (;;) {
                int r;

                if (st == PGRES_POLLING_OK)
                        return 0;
                if (st == PGRES_POLLING_FAILED)
                        return -ECONNREFUSED;
                r = wait_socket(conn, st == PGRES_POLLING_WRITING, deadline);
                if (r <= 0)
                        return r == 0 ? -ETIMEDOUT : r;
                st = PQconnectPoll(conn);
        }
}

int pg_exec_bounded(PGconn *conn, const char *sql, int n_params, const char *const *params, uint64_t timeout_usec,
                    PGresult **ret) {
        uint64_t deadline = monotonic_usec() + timeout_usec;
        PGresult *last = NULL;

        *ret = NULL;
        if (PQsetnonblocking(conn, 1) < 0 ||
            !PQsendQueryParams(conn, sql, n_params, NULL, params, NULL, NULL, 0))
                return -EIO;
        /* libpq's asynchronous loop: flush what is queued, then read until a
         * result is complete; PQgetResult() never waits on the socket here. */
        for (;;) {
                int flushed = PQflush(conn), r;
                PGresult *res;

                if (flushed < 0)
                        break;
                if (flushed == 0 && !PQisBusy(conn)) {
                        res = PQgetResult(conn);
                        if (!res) {
                                *ret = last;
                                return 0;
                        }
                        if (last)
                                PQclear(last);
                        last = res;
                        continue;
                }
                r = wait_socket(conn, flushed == 1, deadline);
                if (r <= 0) {
                        if (last)
                                PQclear(last);
                        return r == 0 ? -ETIMEDOUT : r;
                }
                if (!PQconsumeInput(conn))
                        break;
        }
        if (last)
                PQclear(last);
        return -EIO;
}

static int fetch(PGconn *conn, const char *sql, const struct snapshot_params *p, uint64_t timeout_usec,
                 struct snapshot *ret) {
        PGresult *res = NULL;
        int r = pg_exec_bounded(conn, sql, SNAPSHOT_PARAMS, (const char *const *) p->values, timeout_usec, &res);

        if (r >= 0)
                r = snapshot_from_result(res, ret);
        PQclear(res);
        return r;
}

int snapshot_fetch(PGconn *conn, const struct server *srv, struct snapshot_request *req, uint64_t timeout_usec,
                   struct snapshot *ret) {
        struct snapshot_params params;
        const char *again;
        int r;

        *ret = (struct snapshot) {};
        snapshot_params_build(req, &params);
        r = fetch(conn, plan_snapshot_sql(srv), &params, timeout_usec, ret);
        if (r >= 0)
                snapshot_note_request(ret, req);
        if (r >= 0 && (again = plan_reread(srv, ret, PQserverVersion(conn), req))) {
                snapshot_free(ret);
                snapshot_params_free(&params);
                snapshot_params_build(req, &params);
                r = fetch(conn, again, &params, timeout_usec, ret);
                if (r >= 0) {
                        ret->has_graph = again != pg_snapshot_groups_sql;
                        snapshot_note_request(ret, req);
                }
        }
        snapshot_params_free(&params);
        return r;
}
