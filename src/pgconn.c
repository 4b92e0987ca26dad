/* One libpq connection, non-blocking, on sd-event; see pgconn.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "macro.h"
#include "pgconn.h"
#include "snapshot.h"

#define USEC_PER_SEC UINT64_C(1000000)

struct pgconn {
        sd_event *event;
        struct pgconn_callbacks cb;
        PGconn *conn;
        bool connecting;
        int fd;                         /* the socket io watches; libpq may change it while connecting */
        sd_event_source *io;
        sd_event_source *timeout;       /* the oldest statement in flight takes too long */
        /* The statements in flight, oldest first: who gets each result, and
         * the bound of each wait (armed when it becomes the oldest). The
         * connection is in libpq's pipeline mode from connect on, every
         * statement followed by a sync: the server runs a second statement
         * as soon as the first is done, without waiting for us to read its
         * answer, and an error in one never aborts the other. */
        pgconn_result_fn on_result[PGCONN_IN_FLIGHT_MAX];
        uint64_t timeout_usec[PGCONN_IN_FLIGHT_MAX];
        size_t n_in_flight;
        size_t syncs;                   /* syncs sent whose PGRES_PIPELINE_SYNC is not read yet */
        PGresult *result;               /* last result of the oldest statement in flight */
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

static uint64_t loop_usec(const struct pgconn *c) {
        uint64_t t = 0;
        sd_event_now(c->event, CLOCK_MONOTONIC, &t);
        return t;
}

static void arm_timeout(struct pgconn *c, uint64_t usec) {
        sd_event_source_set_time(c->timeout, loop_usec(c) + usec);
        sd_event_source_set_enabled(c->timeout, SD_EVENT_ONESHOT);
}

static void fail(struct pgconn *c, const char *what, const char *error) {
        c->cb.failed(c->cb.userdata, what, error);
}

void pgconn_close(struct pgconn *c) {
        if (!c)
                return;
        c->io = sd_event_source_disable_unref(c->io);
        sd_event_source_set_enabled(c->timeout, SD_EVENT_OFF);
        if (c->result)
                PQclear(c->result);
        c->result = NULL;
        if (c->conn)
                PQfinish(c->conn);
        c->conn = NULL;
        c->connecting = false;
        c->fd = -1;
        c->n_in_flight = 0;
        c->syncs = 0;
}

PGconn *pgconn_pq(const struct pgconn *c) {
        return c->conn;
}

const char *pgconn_error(const struct pgconn *c) {
        return c->conn ? PQerrorMessage(c->conn) : "not connected";
}

const char *pgconn_result_error(const struct pgconn *c, const PGresult *res) {
        const char *e = res ? PQresultErrorMessage(res) : NULL;
        return e && *e ? e : pgconn_error(c);
}

static int on_io(sd_event_source *source, int fd, uint32_t revents, void *userdata);

/* Watch the socket for the events libpq waits on. */
static int watch(struct pgconn *c, uint32_t events) {
        int fd = PQsocket(c->conn);

        if (fd < 0)
                return -EBADF;
        if (c->io && fd != c->fd)
                c->io = sd_event_source_disable_unref(c->io);
        c->fd = fd;
        if (!c->io)
                return sd_event_add_io(c->event, &c->io, fd, events, on_io, c);
        return sd_event_source_set_io_events(c->io, events);
}

int pgconn_send(struct pgconn *c, enum send_kind kind, const char *stmt, const char *sql, int n_params,
                const char *const *params, pgconn_result_fn fn, uint64_t timeout_usec) {
        int ok, r;

        if (c->n_in_flight >= PGCONN_IN_FLIGHT_MAX)
                return -EBUSY;
        switch (kind) {
        case SEND_PREPARE:
                ok = PQsendPrepare(c->conn, stmt, sql, n_params, NULL);
                break;
        case SEND_PREPARED:
                ok = PQsendQueryPrepared(c->conn, stmt, n_params, params, NULL, NULL, 0);
                break;
        default:
                ok = PQsendQueryParams(c->conn, sql, n_params, NULL, params, NULL, NULL, 0);
        }
        if (!ok || !PQpipelineSync(c->conn))
                return -ENOTCONN;
        c->syncs++;
        c->on_result[c->n_in_flight] = fn;
        c->timeout_usec[c->n_in_flight] = timeout_usec;
        if (c->n_in_flight++ == 0)
                arm_timeout(c, timeout_usec);
        r = PQflush(c->conn);
        if (r < 0 || watch(c, EPOLLIN | (r == 1 ? EPOLLOUT : 0)) < 0)
                return -EIO;
        return 0;
}

/* The oldest statement in flight finished: hand its result on; the next
 * one's wait is bounded from now. */
static void statement_done(struct pgconn *c) {
        PGresult *res = c->result;
        pgconn_result_fn fn = c->on_result[0];

        c->result = NULL;
        c->n_in_flight--;
        memmove(c->on_result, c->on_result + 1, c->n_in_flight * sizeof(c->on_result[0]));
        memmove(c->timeout_usec, c->timeout_usec + 1, c->n_in_flight * sizeof(c->timeout_usec[0]));
        if (c->n_in_flight > 0)
                arm_timeout(c, c->timeout_usec[0]);
        else
                sd_event_source_set_enabled(c->timeout, SD_EVENT_OFF);
        fn(c->cb.userdata, res);
        PQclear(res);
}

/* libpq's own reason, when it closed the socket with one. */
static const char *no_socket_error(const struct pgconn *c) {
        const char *e = PQerrorMessage(c->conn);
        return e && *e ? e : "no socket";
}

static void connect_progress(struct pgconn *c) {
        switch (PQconnectPoll(c->conn)) {
        case PGRES_POLLING_READING:
                if (watch(c, EPOLLIN) < 0)
                        fail(c, "connect", no_socket_error(c));
                return;
        case PGRES_POLLING_WRITING:
                if (watch(c, EPOLLOUT) < 0)
                        fail(c, "connect", no_socket_error(c));
                return;
        case PGRES_POLLING_OK:
                c->connecting = false;
                if (!PQenterPipelineMode(c->conn)) {
                        fail(c, "connect", PQerrorMessage(c->conn));
                        return;
                }
                c->cb.connected(c->cb.userdata);
                return;
        default:
                fail(c, "connect", PQerrorMessage(c->conn));
        }
}

/* Server notices (e.g. "PID n is not a PostgreSQL backend process" when a
 * victim exits first) are the owner's to log, never raw stderr. */
static void on_notice(void *userdata, const char *message) {
        struct pgconn *c = userdata;
        c->cb.notice(c->cb.userdata, message);
}

void pgconn_connect(struct pgconn *c, const char *conninfo, unsigned default_timeout_sec) {
        pgconn_close(c);
        c->conn = pg_connect_start(conninfo);
        if (!c->conn || PQstatus(c->conn) == CONNECTION_BAD) {
                fail(c, "connect", c->conn ? PQerrorMessage(c->conn) : "out of memory");
                return;
        }
        PQsetNoticeProcessor(c->conn, on_notice, c);
        c->connecting = true;
        arm_timeout(c, pg_connect_timeout_sec(conninfo, default_timeout_sec) * USEC_PER_SEC);
        connect_progress(c);
}

/* Results come as: the statement's result(s), NULL, then its sync's
 * PGRES_PIPELINE_SYNC. An owner's callback may close the connection. */
static void read_results(struct pgconn *c) {
        if (!PQconsumeInput(c->conn)) {
                fail(c, "read", PQerrorMessage(c->conn));
                return;
        }
        while (c->conn && (c->n_in_flight > 0 || c->syncs > 0) && !PQisBusy(c->conn)) {
                PGresult *res = PQgetResult(c->conn);

                if (!res) {
                        if (c->n_in_flight == 0)
                                return;         /* nothing of ours is left to read */
                        statement_done(c);
                        continue;
                }
                if (PQresultStatus(res) == PGRES_PIPELINE_SYNC) {
                        PQclear(res);
                        if (c->syncs > 0)
                                c->syncs--;
                        continue;
                }
                if (c->result)
                        PQclear(c->result);
                c->result = res;
        }
}

static int on_io(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        struct pgconn *c = userdata;

        if (c->connecting) {
                connect_progress(c);
                return 0;
        }
        if (revents & EPOLLOUT) {
                int r = PQflush(c->conn);
                if (r < 0) {
                        fail(c, "write", PQerrorMessage(c->conn));
                        return 0;
                }
                if (watch(c, EPOLLIN | (r == 1 ? EPOLLOUT : 0)) < 0) {
                        fail(c, "write", "no socket");
                        return 0;
                }
        }
        if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR))
                read_results(c);
        return 0;
}

static int on_timeout(sd_event_source *source, uint64_t usec, void *userdata) {
        struct pgconn *c = userdata;

        fail(c, c->connecting ? "connect" : "query",
             c->connecting ? "timed out while connecting" : "timed out waiting for the server");
        return 0;
}

struct pgconn *pgconn_new(sd_event *e, struct pgconn_callbacks cb) {
        struct pgconn *c = xcalloc(1, sizeof(*c));

        *c = (struct pgconn) { .event = e, .cb = cb, .fd = -1 };
        if (sd_event_add_time(e, &c->timeout, CLOCK_MONOTONIC, UINT64_MAX, 1000, on_timeout, c) < 0) {
                free(c);
                return NULL;
        }
        sd_event_source_set_enabled(c->timeout, SD_EVENT_OFF);
        return c;
}

void pgconn_free(struct pgconn *c) {
        if (!c)
                return;
        pgconn_close(c);
        sd_event_source_disable_unref(c->timeout);
        free(c);
}
