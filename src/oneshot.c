/* The one-shot commands' side of a server; see oneshot.h. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "escape.h"
#include "macro.h"
#include "oneshot.h"
#include "pgconn.h"
#include "plan.h"
#include "sql.h"

/* The daemon's bounds (pgconn.h): PG_CONNECT_TIMEOUT_SEC, PG_STATEMENT_WAIT_SEC. */
#define USEC_PER_SEC UINT64_C(1000000)

void oneshot_error(const struct server *srv, const char *what, const char *detail) {
        _cleanup_free_ char *d = xstrdup(detail ? detail : ""), *name = escape_string(srv->name), *msg = NULL;

        join_lines(d);
        msg = escape_string(d);
        fprintf(stderr, "pgsweeper: %s: %s%s%s\n", name, what, *msg ? ": " : "", msg);
}

/* A failed wait for the server: the bound it hit, or libpq's word. */
static void wait_bound_error(const struct server *srv, const char *what, int r, unsigned bound_sec, PGconn *conn) {
        char timeout[64];

        if (r == -ETIMEDOUT) {
                snprintf(timeout, sizeof(timeout), "no answer within %us", bound_sec);
                oneshot_error(srv, what, timeout);
        } else
                oneshot_error(srv, what, PQerrorMessage(conn));
}

void oneshot_wait_error(const struct server *srv, const char *what, int r, PGconn *conn) {
        wait_bound_error(srv, what, r, PG_STATEMENT_WAIT_SEC, conn);
}

int oneshot_exec(const struct server *srv, PGconn *conn, const char *what, const char *sql, int n_params,
                 const char *const *params, PGresult **ret) {
        int r = pg_exec_bounded(conn, sql, n_params, params, PG_STATEMENT_WAIT_SEC * USEC_PER_SEC, ret);

        if (r < 0) {
                oneshot_wait_error(srv, what, r, conn);
                return r;
        }
        if (PQresultStatus(*ret) != PGRES_TUPLES_OK) {
                oneshot_error(srv, what, PQresultErrorMessage(*ret));
                PQclear(*ret);
                *ret = NULL;
                return -EIO;
        }
        return 0;
}

static void PQfinishp(PGconn **c) {
        if (*c)
                PQfinish(*c);
}

int oneshot_connect(const struct server *srv, PGconn **ret, struct pg_identity *id) {
        unsigned connect_sec = pg_connect_timeout_sec(srv->conninfo, PG_CONNECT_TIMEOUT_SEC);
        _cleanup_(PQfinishp) PGconn *conn = pg_connect_start(srv->conninfo);
        PGresult *setup = NULL;
        int r;

        *ret = NULL;
        if (!conn || PQstatus(conn) == CONNECTION_BAD) {
                oneshot_error(srv, "cannot connect", conn ? PQerrorMessage(conn) : strerror(ENOMEM));
                return -ECONNREFUSED;
        }
        r = pg_connect_bounded(conn, connect_sec * USEC_PER_SEC);
        if (r < 0) {
                wait_bound_error(srv, "cannot connect", r, connect_sec, conn);
                return r;
        }
        r = oneshot_exec(srv, conn, "set-up failed", pg_setup_sql, 0, NULL, &setup);
        if (r < 0)
                return r;
        r = pg_identity_from_result(setup, id);
        PQclear(setup);
        if (r < 0) {
                oneshot_error(srv, "set-up failed", "unexpected answer");
                return r;
        }
        /* Without pg_read_all_stats the server hides other roles'
         * sessions: explain's table, or a capture, would look complete and
         * not be. */
        if (!id->can_see_all) {
                _cleanup_free_ char *why = xasprintf("role %s lacks pg_monitor: other roles' sessions are hidden "
                                                     "from it and left out; fix: GRANT pg_monitor TO %s;",
                                                     id->role, id->role);
                oneshot_error(srv, "warning", why);
        }
        *ret = TAKE_PTR(conn);
        return 0;
}

bool *oneshot_select(const struct config *c, const char *server) {
        bool *asked = xcalloc(c->n_servers + 1, sizeof(*asked));
        bool found = false;

        for (size_t i = 0; i < c->n_servers; i++) {
                asked[i] = !server || strcmp(c->servers[i].name, server) == 0;
                found = found || asked[i];
        }
        if (server && !found) {
                _cleanup_free_ char *name = escape_string(server), *path = escape_string(c->path);
                fprintf(stderr, "pgsweeper: --server \"%s\": no such server in %s\n", name, path);
                free(asked);
                return NULL;
        }
        return asked;
}

/* The servers are asked by up to ONESHOT_WORKERS threads at once, each
 * taking the next server not yet taken; each server's wait is bounded on
 * its own, so the whole run takes about the longest of them. */
struct work {
        const struct config *config;
        const bool *asked;
        void (*fn)(const struct config *c, size_t i, void *arg);
        void *arg;
        atomic_size_t next;
};

static void *worker(void *arg) {
        struct work *w = arg;

        for (size_t i; (i = atomic_fetch_add(&w->next, 1)) < w->config->n_servers;)
                if (w->asked[i])
                        w->fn(w->config, i, w->arg);
        return NULL;
}

void oneshot_each(const struct config *c, const bool *asked, void (*fn)(const struct config *c, size_t i, void *arg),
                  void *arg) {
        struct work w = { .config = c, .asked = asked, .fn = fn, .arg = arg };
        pthread_t threads[ONESHOT_WORKERS];
        size_t n = 0, n_asked = 0;

        for (size_t i = 0; i < c->n_servers; i++)
                n_asked += asked[i];
        atomic_init(&w.next, 0);
        /* One server needs no thread; a thread that cannot start leaves the
         * work to the others (or to this one). */
        while (n_asked > 1 && n < n_asked && n < ONESHOT_WORKERS &&
               pthread_create(&threads[n], NULL, worker, &w) == 0)
                n++;
        worker(&w);
        for (size_t i = 0; i < n; i++)
                pthread_join(threads[i], NULL);
}

/* ---- --capture ---- */

/* One server's capture: the JSON object the server built, or NULL. */
static void capture_server(const struct config *c, size_t i, void *arg) {
        const struct server *srv = &c->servers[i];
        char **json = arg;
        struct snapshot_request req;
        struct snapshot_params params;
        const char *values[CAPTURE_PARAMS];
        struct pg_identity id;
        PGresult *res = NULL;
        PGconn *conn;

        if (oneshot_connect(srv, &conn, &id) < 0)
                return;
        plan_capture_request(&req);
        snapshot_params_build(&req, &params);
        memcpy(values, params.values, sizeof(params.values));
        values[SNAPSHOT_PARAMS] = srv->name;
        if (oneshot_exec(srv, conn, "capture failed", pg_capture_sql_for(PQserverVersion(conn)), CAPTURE_PARAMS,
                         values, &res) == 0) {
                if (PQntuples(res) == 1 && PQnfields(res) == 1 && !PQgetisnull(res, 0, 0))
                        json[i] = xstrdup(PQgetvalue(res, 0, 0));
                else
                        oneshot_error(srv, "capture failed", "unexpected answer");
                PQclear(res);
        }
        snapshot_params_free(&params);
        snapshot_request_done(&req);
        pg_identity_done(&id);
        PQfinish(conn);
}

int capture_run(const struct config *c, const char *server, FILE *out) {
        _cleanup_free_ bool *asked = oneshot_select(c, server);
        char **json;
        bool failed = false, first = true;

        if (!asked)
                return ONESHOT_UNKNOWN_SERVER;
        json = xcalloc(c->n_servers + 1, sizeof(*json));
        oneshot_each(c, asked, capture_server, json);
        fputs("[", out);
        for (size_t i = 0; i < c->n_servers; i++) {
                if (!asked[i])
                        continue;
                if (json[i]) {
                        fprintf(out, "%s\n%s", first ? "" : ",", json[i]);
                        first = false;
                } else
                        failed = true;
                free(json[i]);
        }
        fputs(first ? "]\n" : "\n]\n", out);
        free(json);
        return fflush(out) == 0 && !ferror(out) && !failed ? 0 : 1;
}
