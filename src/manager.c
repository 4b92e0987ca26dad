/* The daemon: one sd-event loop, one thread, every server driven by
 * non-blocking libpq through its own state machine:
 *
 *   disconnected -> connecting -> setup -> ready -> polling -> acting -> ready
 *                       \_________\_________\_________\________> backoff -> connecting
 *
 * One slow or dead server never delays another: nothing here blocks, and
 * every phase that waits on a server has a client-side timeout. This is
 * the only module with mutable state that outlives a call. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>

#include "build-config.h"
#include "duration.h"
#include "enforce.h"
#include "log.h"
#include "manager.h"
#include "message-ids.h"
#include "metrics.h"
#include "pg.h"
#include "policy.h"

#define USEC_PER_MSEC           UINT64_C(1000)
#define USEC_PER_SEC            UINT64_C(1000000)
#define CONNECT_TIMEOUT_SEC     10u     /* unless the conninfo sets connect_timeout */
/* Our own statements are bounded on the server (statement_timeout) and,
 * should the server or network hang, here. */
#define STATEMENT_TIMEOUT       "5s"
#define QUERY_TIMEOUT_USEC      (10 * USEC_PER_SEC)
#define BACKOFF_MIN_USEC        (500 * USEC_PER_MSEC)
#define BACKOFF_MAX_USEC        (60 * USEC_PER_SEC)
#define STILL_DOWN_EVERY_USEC   (10 * 60 * USEC_PER_SEC)
#define METRICS_QUIET_USEC      USEC_PER_SEC

enum phase {
        PHASE_DISCONNECTED,
        PHASE_CONNECTING,
        PHASE_SETUP,
        PHASE_READY,
        PHASE_POLLING,
        PHASE_ACTING,
        PHASE_BACKOFF,
};

struct manager;
struct server_state;

/* What makes a decision "the same one as last poll": same session, same
 * crossing of the same rule. */
struct reported {
        int32_t pid;
        int64_t backend_start;
        int64_t since;
        const struct rule *rule;
};
typedef void (*result_fn)(struct server_state *s, PGresult *res);

struct server_state {
        struct manager *manager;
        const struct server *server;    /* points into manager->config */
        enum phase phase;
        PGconn *conn;
        int fd;                         /* the socket io watches; libpq may change it while connecting */
        int32_t backend_pid;
        sd_event_source *io;
        sd_event_source *timer;         /* next poll, or next connect attempt */
        sd_event_source *timeout;       /* the phase we wait in takes too long */
        result_fn on_result;            /* who gets the result of the statement in flight */
        PGresult *result;               /* last result of the statement in flight */

        bool ever_up;
        bool down;                      /* a failure was logged and nothing since */
        uint64_t down_since;
        uint64_t down_logged;
        uint64_t backoff_usec;
        bool fresh;                     /* first cycle on a new connection */
        bool cycle_done;                /* --once: this server finished its cycle */
        bool cycle_failed;

        /* Log-only and dry-run decisions repeat every poll while the session
         * stays over its limit: each is logged once, when first seen. */
        struct reported *reported;
        size_t n_reported;
        /* Queries cancelled under a rule with escalate_after, watched until due. */
        struct escalation *escalations;
        size_t n_escalations;
        /* Sessions terminated last cycle: still there at the next poll is worth a
         * warning, and they are not judged again that cycle (dying). */
        struct reported *ended;
        size_t n_ended;
        struct session_id *dying;
        size_t n_dying;
        /* Target roles a permission failure was already explained for. */
        char **denied_roles;
        size_t n_denied_roles;

        /* the cycle in flight */
        const struct config *cycle_config;  /* judged under this one (a reload may retire it) */
        uint64_t poll_started;
        struct snapshot snap;
        struct judgement judgement;
        struct action_batch batch;
        enum result *results;
};

struct manager {
        const struct manager_options *opts;
        struct config *config;
        struct server_state **servers;  /* each allocated alone: sd-event sources point at it */
        size_t n_servers;
        /* Configurations replaced by a reload whose rules an in-flight cycle still uses. */
        struct config **retired;
        size_t n_retired;
        sd_event *event;
        uint64_t sessions_ended;
        struct metrics *metrics;
        uint64_t metrics_written;       /* monotonic time of the last write */
        bool metrics_failing;           /* a write failure was logged */
        char last_error[64];            /* server of the last failure, for STATUS= (a copy:
                                         * a reload frees the configuration's names) */
};

static uint64_t now_usec(struct manager *m) {
        uint64_t t = 0;
        sd_event_now(m->event, CLOCK_MONOTONIC, &t);
        return t;
}

static void release_retired(struct manager *m);

static void cycle_reset(struct server_state *s) {
        if (s->cycle_config) {
                s->cycle_config = NULL;
                release_retired(s->manager);
        }
        judgement_free(&s->judgement);
        snapshot_free(&s->snap);
        action_batch_free(&s->batch);
        free(s->results);
        s->results = NULL;
}

static void server_close(struct server_state *s) {
        s->io = sd_event_source_disable_unref(s->io);
        sd_event_source_set_enabled(s->timeout, SD_EVENT_OFF);
        if (s->result)
                PQclear(s->result);
        s->result = NULL;
        if (s->conn)
                PQfinish(s->conn);
        s->conn = NULL;
        s->fd = -1;
        s->backend_pid = 0;
        s->on_result = NULL;
        cycle_reset(s);
}

static void manager_check_once_done(struct manager *m);
static void server_start_connect(struct server_state *s);
static void server_poll(struct server_state *s);

static void schedule(struct server_state *s, uint64_t at) {
        sd_event_source_set_time(s->timer, at);
        sd_event_source_set_enabled(s->timer, SD_EVENT_ONESHOT);
}

static void arm_timeout(struct server_state *s, uint64_t usec) {
        sd_event_source_set_time(s->timeout, now_usec(s->manager) + usec);
        sd_event_source_set_enabled(s->timeout, SD_EVENT_ONESHOT);
}

/* After a cycle that acted, failed or changed a server's state, and at
 * reload and exit, the file is written at once; a quiet cycle only refreshes
 * it once a second: each write costs more CPU (open, rename) than a whole
 * poll, and scrapers read it every 15 s or so. */
static void write_metrics(struct manager *m, bool now) {
        uint64_t t = now_usec(m);
        int r;

        if (!m->config->metrics_file)
                return;
        if (!now && !m->metrics_failing && t - m->metrics_written < METRICS_QUIET_USEC)
                return;
        m->metrics_written = t;
        r = metrics_write(m->metrics, m->config->metrics_file);
        if (r < 0 && !m->metrics_failing)
                log_warning(NULL, "cannot write metrics to %s: %s (logged once until it works again)",
                            m->config->metrics_file, strerror(-r));
        else if (r >= 0 && m->metrics_failing)
                log_info(NULL, "metrics written to %s again", m->config->metrics_file);
        m->metrics_failing = r < 0;
}

/* eventful: the cycle failed, acted, logged or found the server back. */
static void finish_cycle(struct server_state *s, bool failed, bool eventful) {
        struct manager *m = s->manager;

        metrics_count_poll(m->metrics, s->server->name, !failed, now_usec(m) - s->poll_started);
        metrics_set_up(m->metrics, s->server->name, !failed);
        write_metrics(m, failed || eventful);
        s->cycle_done = true;
        s->cycle_failed = failed;
        if (s->manager->opts->once)
                manager_check_once_done(s->manager);
}

/* Full jitter: a random delay in [min, backoff], the bound doubling per failure. */
static uint64_t next_backoff(struct server_state *s) {
        uint64_t r = 0, span;

        s->backoff_usec = s->backoff_usec ? s->backoff_usec * 2 : BACKOFF_MIN_USEC;
        if (s->backoff_usec > BACKOFF_MAX_USEC)
                s->backoff_usec = BACKOFF_MAX_USEC;
        if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r))
                r = (uint64_t) random();
        span = s->backoff_usec > BACKOFF_MIN_USEC / 5 ? s->backoff_usec - BACKOFF_MIN_USEC / 5 : 1;
        return BACKOFF_MIN_USEC / 5 + r % span;
}

/* Something failed: log it once per change of state, close, retry later. */
static void server_fail(struct server_state *s, const char *what, const char *error) {
        struct manager *m = s->manager;
        uint64_t now = now_usec(m);

        if (!s->down) {
                if (s->ever_up)
                        log_event(LOG_ERR, MESSAGE_ID_SERVER_LOST, s->server->name, "connection lost (%s): %s",
                                  what, error);
                else
                        log_event(LOG_ERR, MESSAGE_ID_SERVER_LOST, s->server->name, "could not connect: %s", error);
                s->down = true;
                s->down_since = s->down_logged = now;
        } else if (now - s->down_logged >= STILL_DOWN_EVERY_USEC) {
                char d[DURATION_FORMAT_MAX];
                log_event(LOG_WARNING, MESSAGE_ID_SERVER_LOST, s->server->name, "still unreachable after %s: %s",
                          duration_format((int64_t) ((now - s->down_since) / USEC_PER_MSEC), d, sizeof(d)), error);
                s->down_logged = now;
        } else
                log_debug(s->server->name, "%s failed: %s", what, error);
        snprintf(m->last_error, sizeof(m->last_error), "%s", s->server->name);

        server_close(s);
        s->phase = PHASE_BACKOFF;
        finish_cycle(s, true, true);
        if (!m->opts->once)
                schedule(s, now + next_backoff(s));
}

static void server_up(struct server_state *s) {
        struct manager *m = s->manager;

        if (s->down && s->ever_up) {
                char d[DURATION_FORMAT_MAX];
                log_event(LOG_NOTICE, MESSAGE_ID_SERVER_RESTORED, s->server->name,
                          "connection restored after %s (server version %d, backend pid %" PRId32 ")",
                          duration_format((int64_t) ((now_usec(m) - s->down_since) / USEC_PER_MSEC), d, sizeof(d)),
                          PQserverVersion(s->conn), s->backend_pid);
        } else
                log_event(LOG_INFO, MESSAGE_ID_SERVER_CONNECTED, s->server->name,
                          "connected (server version %d, backend pid %" PRId32 ")", PQserverVersion(s->conn),
                          s->backend_pid);
        s->ever_up = true;
        s->down = false;
        s->fresh = true;
        s->backoff_usec = 0;
}

static int on_io(sd_event_source *source, int fd, uint32_t revents, void *userdata);

/* Watch the socket for the events libpq waits on. */
static int watch(struct server_state *s, uint32_t events) {
        int fd = PQsocket(s->conn);

        if (fd < 0)
                return -EBADF;
        if (s->io && fd != s->fd)
                s->io = sd_event_source_disable_unref(s->io);
        s->fd = fd;
        if (!s->io)
                return sd_event_add_io(s->manager->event, &s->io, fd, events, on_io, s);
        return sd_event_source_set_io_events(s->io, events);
}

enum send_kind {
        SEND_QUERY,         /* sql with params */
        SEND_PREPARE,       /* prepare sql as name */
        SEND_PREPARED,      /* run the statement prepared as name */
};

/* Send one statement; its result goes to fn. */
static void send_statement(struct server_state *s, enum phase phase, enum send_kind kind, const char *name,
                           const char *sql, int n_params, const char *const *params, result_fn fn) {
        int ok, r;

        switch (kind) {
        case SEND_PREPARE:
                ok = PQsendPrepare(s->conn, name, sql, n_params, NULL);
                break;
        case SEND_PREPARED:
                ok = PQsendQueryPrepared(s->conn, name, n_params, params, NULL, NULL, 0);
                break;
        default:
                ok = PQsendQueryParams(s->conn, sql, n_params, NULL, params, NULL, NULL, 0);
        }
        if (!ok) {
                server_fail(s, "send", PQerrorMessage(s->conn));
                return;
        }
        s->phase = phase;
        s->on_result = fn;
        r = PQflush(s->conn);
        if (r < 0 || watch(s, EPOLLIN | (r == 1 ? EPOLLOUT : 0)) < 0) {
                server_fail(s, "send", PQerrorMessage(s->conn));
                return;
        }
        arm_timeout(s, QUERY_TIMEOUT_USEC);
}

static const char *result_error(struct server_state *s, PGresult *res) {
        const char *e = res ? PQresultErrorMessage(res) : NULL;
        return e && *e ? e : PQerrorMessage(s->conn);
}

/* The statement in flight finished: hand its result on. */
static void statement_done(struct server_state *s) {
        PGresult *res = s->result;
        result_fn fn = s->on_result;

        s->result = NULL;
        s->on_result = NULL;
        sd_event_source_set_enabled(s->timeout, SD_EVENT_OFF);
        fn(s, res);
        PQclear(res);
}

static void on_prepare_done(struct server_state *s, PGresult *res) {
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
                server_fail(s, "setup", result_error(s, res));
                return;
        }
        s->phase = PHASE_READY;
        server_up(s);
        server_poll(s);
}

/* Polls run a prepared statement: planned once per connection, not per poll. */
static void on_setup_done(struct server_state *s, PGresult *res) {
        if (PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_COMMAND_OK) {
                server_fail(s, "setup", result_error(s, res));
                return;
        }
        send_statement(s, PHASE_SETUP, SEND_PREPARE, pg_snapshot_name, pg_snapshot_sql, SNAPSHOT_PARAMS, NULL,
                       on_prepare_done);
}

static void connect_progress(struct server_state *s) {
        switch (PQconnectPoll(s->conn)) {
        case PGRES_POLLING_READING:
                if (watch(s, EPOLLIN) < 0)
                        server_fail(s, "connect", "no socket");
                return;
        case PGRES_POLLING_WRITING:
                if (watch(s, EPOLLOUT) < 0)
                        server_fail(s, "connect", "no socket");
                return;
        case PGRES_POLLING_OK:
                s->backend_pid = PQbackendPID(s->conn);
                s->phase = PHASE_SETUP;
                /* A generic plan: the snapshot is planned once, not at every poll. */
                send_statement(s, PHASE_SETUP, SEND_QUERY, NULL,
                               "SELECT set_config('statement_timeout', '" STATEMENT_TIMEOUT "', false), "
                               "set_config('plan_cache_mode', 'force_generic_plan', false)",
                               0, NULL, on_setup_done);
                return;
        default:
                server_fail(s, "connect", PQerrorMessage(s->conn));
        }
}

/* Server notices (e.g. "PID n is not a PostgreSQL backend process" when a
 * victim exits first) are not our events: debug level, never raw stderr. */
static void on_notice(void *userdata, const char *message) {
        struct server_state *s = userdata;
        log_debug(s->server->name, "server notice: %s", message);
}

static void server_start_connect(struct server_state *s) {
        server_close(s);
        s->conn = pg_connect_start(s->server->conninfo);
        if (!s->conn || PQstatus(s->conn) == CONNECTION_BAD) {
                server_fail(s, "connect", s->conn ? PQerrorMessage(s->conn) : "out of memory");
                return;
        }
        PQsetNoticeProcessor(s->conn, on_notice, s);
        s->phase = PHASE_CONNECTING;
        arm_timeout(s, pg_connect_timeout_sec(s->server->conninfo, CONNECT_TIMEOUT_SEC) * USEC_PER_SEC);
        connect_progress(s);
}

static void read_results(struct server_state *s) {
        if (!PQconsumeInput(s->conn)) {
                server_fail(s, "read", PQerrorMessage(s->conn));
                return;
        }
        if (!s->on_result)
                return;  /* nothing in flight: a notice, or the server going away (seen next time) */
        while (!PQisBusy(s->conn)) {
                PGresult *res = PQgetResult(s->conn);
                if (!res) {
                        statement_done(s);
                        return;
                }
                if (s->result)
                        PQclear(s->result);
                s->result = res;
        }
}

static int on_io(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        struct server_state *s = userdata;

        if (s->phase == PHASE_CONNECTING) {
                connect_progress(s);
                return 0;
        }
        if (revents & EPOLLOUT) {
                int r = PQflush(s->conn);
                if (r < 0) {
                        server_fail(s, "write", PQerrorMessage(s->conn));
                        return 0;
                }
                if (watch(s, EPOLLIN | (r == 1 ? EPOLLOUT : 0)) < 0) {
                        server_fail(s, "write", "no socket");
                        return 0;
                }
        }
        if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR))
                read_results(s);
        return 0;
}

static int on_timeout(sd_event_source *source, uint64_t usec, void *userdata) {
        struct server_state *s = userdata;

        server_fail(s, s->phase == PHASE_CONNECTING ? "connect" : "query",
                    s->phase == PHASE_CONNECTING ? "timed out while connecting" : "timed out waiting for the server");
        return 0;
}

/* pgsweeper's own backends on every server: never judged. */
static int32_t *own_pids(struct manager *m, size_t *ret_n) {
        int32_t *pids = xcalloc(m->n_servers, sizeof(int32_t));
        size_t n = 0;

        for (size_t i = 0; i < m->n_servers; i++)
                if (m->servers[i]->conn && m->servers[i]->backend_pid > 0)
                        pids[n++] = m->servers[i]->backend_pid;
        *ret_n = n;
        return pids;
}

static void notify_status(struct manager *m) {
        size_t up = 0;

        for (size_t i = 0; i < m->n_servers; i++)
                up += m->servers[i]->ever_up && !m->servers[i]->down;
        sd_notifyf(0, "STATUS=%zu/%zu servers up, %" PRIu64 " sessions ended%s%s", up, m->n_servers,
                   m->sessions_ended, *m->last_error ? ", last error on " : "", m->last_error);
}

static struct reported reported_key(const struct decision *d) {
        return (struct reported) { d->row->pid, d->row->backend_start, limit_since(d->limit, d->row), d->rule };
}

static bool reported_before(const struct server_state *s, const struct reported *k) {
        for (size_t i = 0; i < s->n_reported; i++)
                if (s->reported[i].pid == k->pid && s->reported[i].backend_start == k->backend_start &&
                    s->reported[i].since == k->since && s->reported[i].rule == k->rule)
                        return true;
        return false;
}

static bool role_denied_before(struct server_state *s, const char *role) {
        for (size_t i = 0; i < s->n_denied_roles; i++)
                if (strcmp(s->denied_roles[i], role) == 0)
                        return true;
        s->denied_roles = xreallocarray(s->denied_roles, s->n_denied_roles + 1, sizeof(char *));
        s->denied_roles[s->n_denied_roles++] = xstrdup(role);
        return false;
}

/* Log one decision: repeats of log-only and dry-run decisions are dropped
 * (returns false for those: nothing new happened), a permission failure is
 * explained once per target role, then debug. */
static bool log_result(struct server_state *s, const struct decision *d, enum result r, struct reported *now,
                       size_t *n_now) {
        char hint[256];

        if (r == RESULT_LOGGED || r == RESULT_DRY_RUN) {
                struct reported k = reported_key(d);
                now[(*n_now)++] = k;
                if (reported_before(s, &k))
                        return false;
                log_decision(s->server->name, d, r, -1, NULL);
                return true;
        }
        if (r == RESULT_DENIED) {
                if (role_denied_before(s, d->row->user)) {
                        log_decision(s->server->name, d, r, LOG_DEBUG, NULL);
                        return true;
                }
                if (d->row->superuser)
                        snprintf(hint, sizeof(hint), "only a superuser may signal a superuser's session: exempt "
                                 "role %s or leave terminate_superusers off (logged once per role)", d->row->user);
                else
                        snprintf(hint, sizeof(hint), "fix: GRANT pg_signal_backend TO %s; (logged once per role)",
                                 PQuser(s->conn) ? PQuser(s->conn) : "pgsweeper");
                log_decision(s->server->name, d, r, -1, hint);
                return true;
        }
        log_decision(s->server->name, d, r, -1, NULL);
        return true;
}

static void cycle_complete(struct server_state *s) {
        struct manager *m = s->manager;
        const struct judgement *j = &s->judgement;
        uint64_t delay = (uint64_t) s->server->interval_ms * USEC_PER_MSEC;
        struct reported *now = xcalloc(j->n_decisions + 1, sizeof(*now));
        size_t n_now = 0;
        bool eventful = s->fresh || j->n_capped > 0;

        free(s->ended);
        s->ended = xcalloc(j->n_decisions + 1, sizeof(*s->ended));
        s->n_ended = 0;
        free(s->dying);
        s->dying = xcalloc(j->n_decisions + 1, sizeof(*s->dying));
        for (size_t i = 0; i < j->n_decisions; i++) {
                const struct decision *d = &j->decisions[i];

                if (log_result(s, d, s->results[i], now, &n_now)) {
                        metrics_count_result(m->metrics, s->server->name, d->rule->name, d->action, s->results[i]);
                        eventful = true;
                }
                if (s->results[i] == RESULT_TERMINATED || s->results[i] == RESULT_CANCELLED)
                        m->sessions_ended++;
                if (s->results[i] == RESULT_TERMINATED)
                        s->ended[s->n_ended++] = reported_key(d);
                if (s->results[i] == RESULT_CANCELLED && d->rule->escalate_after_ms > 0 && !d->escalated) {
                        s->escalations = xreallocarray(s->escalations, s->n_escalations + 1, sizeof(*s->escalations));
                        s->escalations[s->n_escalations++] = (struct escalation) {
                                .pid = d->row->pid, .backend_start = d->row->backend_start,
                                .query_start = d->row->query_start,
                                .due = s->snap.now + d->rule->escalate_after_ms * 1000, .rule = d->rule,
                        };
                }
        }
        if (j->n_capped > 0)
                log_event(LOG_WARNING, MESSAGE_ID_CAP_HIT, s->server->name,
                          "max_actions_per_cycle (%u) reached: %zu more sessions over their limits wait for the "
                          "next cycle", s->server->max_actions_per_cycle, j->n_capped);
        /* Only what is still over its limit stays remembered. */
        free(s->reported);
        s->reported = now;
        s->n_reported = n_now;
        /* Wake when the first observed session crosses a limit, not one interval late. */
        if (j->next_deadline != INT64_MAX && s->snap.now != TS_NULL && j->next_deadline > s->snap.now &&
            (uint64_t) (j->next_deadline - s->snap.now) < delay)
                delay = (uint64_t) (j->next_deadline - s->snap.now);
        if (delay < (uint64_t) m->config->min_interval_ms * USEC_PER_MSEC)
                delay = (uint64_t) m->config->min_interval_ms * USEC_PER_MSEC;

        cycle_reset(s);
        s->phase = PHASE_READY;
        s->fresh = false;
        finish_cycle(s, false, eventful);
        if (!m->opts->once)
                schedule(s, s->poll_started + delay);
        notify_status(m);
}

static void on_action_done(struct server_state *s, PGresult *res) {
        if (enforce_read_result(&s->batch, res, s->results) < 0)
                log_error(s->server->name, "action statement failed: %s", result_error(s, res));
        cycle_complete(s);
}

/* Before judging: forget escalations whose query is over, and warn about
 * sessions terminated last cycle that are still there. */
static void watch_earlier_actions(struct server_state *s) {
        size_t kept = 0;

        for (size_t i = 0; i < s->n_escalations; i++) {
                bool running = false;
                for (size_t r = 0; r < s->snap.n_rows && !running; r++)
                        running = escalation_matches(&s->escalations[i], &s->snap.rows[r]);
                if (running)
                        s->escalations[kept++] = s->escalations[i];
        }
        s->n_escalations = kept;

        s->n_dying = 0;
        for (size_t i = 0; i < s->n_ended; i++)
                for (size_t r = 0; r < s->snap.n_rows; r++) {
                        const struct snapshot_row *row = &s->snap.rows[r];
                        if (row->pid == s->ended[i].pid && row->backend_start == s->ended[i].backend_start) {
                                log_warning(s->server->name, "pid %" PRId32 " is still there after it was "
                                            "terminated (state %s); it may be stuck in an uninterruptible wait",
                                            row->pid, session_state_to_string(row->state));
                                s->dying[s->n_dying++] = (struct session_id) { row->pid, row->backend_start };
                                break;
                        }
                }
        s->n_ended = 0;
}

static void on_snapshot_done(struct server_state *s, PGresult *res) {
        struct manager *m = s->manager;
        _cleanup_free_ int32_t *own = NULL;
        struct policy_input in = {
                .server = s->server,
                .dry_run = m->config->dry_run || m->opts->dry_run,
        };

        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
                server_fail(s, "snapshot", result_error(s, res));
                return;
        }
        if (snapshot_from_result(res, &s->snap) < 0) {
                server_fail(s, "snapshot", "unexpected result shape");
                return;
        }
        own = own_pids(m, &in.n_own_pids);
        in.own_pids = own;
        watch_earlier_actions(s);
        in.escalations = s->escalations;
        in.n_escalations = s->n_escalations;
        in.dying = s->dying;
        in.n_dying = s->n_dying;
        policy_judge(&in, &s->snap, &s->judgement);

        s->results = xcalloc(s->judgement.n_decisions + 1, sizeof(*s->results));
        if (enforce_prepare(&s->judgement, s->results, &s->batch) == 0) {
                cycle_complete(s);
                return;
        }
        send_statement(s, PHASE_ACTING, SEND_QUERY, NULL, pg_action_sql, (int) ELEMENTSOF(s->batch.params),
                       (const char *const *) s->batch.params, on_action_done);
}

static void server_poll(struct server_state *s) {
        _cleanup_free_ int32_t *pids = xcalloc(s->n_escalations + 1, sizeof(int32_t));
        struct snapshot_request req = { .with_query = s->manager->config->log_query, .pids = pids };
        struct snapshot_params params;

        for (size_t i = 0; i < s->n_escalations; i++)
                pids[req.n_pids++] = s->escalations[i].pid;
        snapshot_request_limits(s->server, &req);
        snapshot_params_build(&req, &params);
        s->poll_started = now_usec(s->manager);
        s->cycle_config = s->manager->config;
        send_statement(s, PHASE_POLLING, SEND_PREPARED, pg_snapshot_name, NULL, SNAPSHOT_PARAMS,
                       (const char *const *) params.values, on_snapshot_done);
        snapshot_params_free(&params);
}

static int on_timer(sd_event_source *source, uint64_t usec, void *userdata) {
        struct server_state *s = userdata;

        switch (s->phase) {
        case PHASE_READY:
                if (PQstatus(s->conn) == CONNECTION_OK) {
                        server_poll(s);
                        break;
                }
                /* the connection went away while idle */
                _fallthrough_;
        case PHASE_DISCONNECTED:
        case PHASE_BACKOFF:
                s->poll_started = now_usec(s->manager);
                server_start_connect(s);
                break;
        default:
                break;  /* busy: the cycle in flight schedules the next one */
        }
        return 0;
}

static void server_free(struct server_state *s) {
        if (!s)
                return;
        server_close(s);
        sd_event_source_disable_unref(s->timer);
        sd_event_source_disable_unref(s->timeout);
        free(s->reported);
        free(s->escalations);
        free(s->ended);
        free(s->dying);
        for (size_t k = 0; k < s->n_denied_roles; k++)
                free(s->denied_roles[k]);
        free(s->denied_roles);
        free(s);
}

static struct server_state *server_new(struct manager *m, const struct server *srv) {
        struct server_state *s = xcalloc(1, sizeof(*s));

        *s = (struct server_state) { .manager = m, .server = srv, .fd = -1 };
        /* The first poll happens right away; accuracy 1us, as the default
         * (250ms) would defeat deadline scheduling. */
        if (sd_event_add_time(m->event, &s->timer, CLOCK_MONOTONIC, 0, 1, on_timer, s) < 0 ||
            sd_event_add_time(m->event, &s->timeout, CLOCK_MONOTONIC, UINT64_MAX, USEC_PER_MSEC, on_timeout, s) < 0) {
                server_free(s);
                return NULL;
        }
        sd_event_source_set_enabled(s->timeout, SD_EVENT_OFF);
        return s;
}

static void servers_stop(struct manager *m) {
        for (size_t i = 0; i < m->n_servers; i++)
                server_free(TAKE_PTR(m->servers[i]));
        free(m->servers);
        m->servers = NULL;
        m->n_servers = 0;
}

static int servers_start(struct manager *m) {
        m->n_servers = m->config->n_servers;
        m->servers = xcalloc(m->n_servers, sizeof(*m->servers));
        for (size_t i = 0; i < m->n_servers; i++)
                if (!(m->servers[i] = server_new(m, &m->config->servers[i])))
                        return -ENOMEM;
        return 0;
}

/* Free the retired configurations no cycle in flight uses any more. */
static void release_retired(struct manager *m) {
        size_t kept = 0;

        for (size_t i = 0; i < m->n_retired; i++) {
                bool used = false;
                for (size_t k = 0; k < m->n_servers; k++)
                        used = used || (m->servers[k] && m->servers[k]->cycle_config == m->retired[i]);
                if (used)
                        m->retired[kept++] = m->retired[i];
                else
                        config_free(m->retired[i]);
        }
        m->n_retired = kept;
}

static size_t count_rules(const struct config *c) {
        size_t n = 0;
        for (size_t i = 0; i < c->n_servers; i++)
                n += c->servers[i].n_rules;
        return n;
}

static const struct rule *rule_named(const struct server *srv, const char *name) {
        for (size_t i = 0; i < srv->n_rules; i++)
                if (strcmp(srv->rules[i].name, name) == 0)
                        return &srv->rules[i];
        return NULL;
}

/* A kept server's memories point at rules of the old configuration: move
 * them to the rules of the same name, drop those whose rule is gone (or no
 * longer escalates). The old configuration is still alive here. */
static void remap_rules(struct server_state *s, const struct server *srv) {
        size_t kept = 0;

        for (size_t i = 0; i < s->n_reported; i++)
                if ((s->reported[i].rule = rule_named(srv, s->reported[i].rule->name)))
                        s->reported[kept++] = s->reported[i];
        s->n_reported = kept;
        kept = 0;
        for (size_t i = 0; i < s->n_escalations; i++) {
                const struct rule *r = rule_named(srv, s->escalations[i].rule->name);
                if (r && r->action == ACTION_CANCEL && r->escalate_after_ms > 0) {
                        s->escalations[i].rule = r;
                        s->escalations[kept++] = s->escalations[i];
                }
        }
        s->n_escalations = kept;
        s->server = srv;
}

/* Swap in a new configuration. Servers whose name and conninfo did not
 * change keep their connection (and their place in the schedule, but poll
 * now so new rules apply at once); the others are closed or opened. */
static int apply_config(struct manager *m, struct config *c) {
        struct server_state **next = xcalloc(c->n_servers + 1, sizeof(*next));
        size_t added = 0, changed = 0, removed = 0, kept = 0;
        struct config *old = m->config;

        for (size_t i = 0; i < c->n_servers; i++) {
                const struct server *srv = &c->servers[i];
                bool conninfo_changed = false;

                for (size_t k = 0; k < m->n_servers && !next[i]; k++) {
                        struct server_state *s = m->servers[k];
                        if (!s || strcmp(s->server->name, srv->name) != 0)
                                continue;
                        if (strcmp(s->server->conninfo, srv->conninfo) != 0) {
                                conninfo_changed = true;
                                continue;
                        }
                        next[i] = s;
                        m->servers[k] = NULL;
                }
                if (next[i]) {
                        struct server_state *s = next[i];
                        remap_rules(s, srv);
                        if (s->phase == PHASE_READY)
                                schedule(s, now_usec(m));
                        kept++;
                        continue;
                }
                changed += conninfo_changed;
                added += !conninfo_changed;
                next[i] = server_new(m, srv);
                if (!next[i])
                        return -ENOMEM;
        }
        for (size_t k = 0; k < m->n_servers; k++)
                if (m->servers[k]) {
                        bool still_named = false;
                        for (size_t i = 0; i < c->n_servers; i++)
                                still_named = still_named || strcmp(c->servers[i].name, m->servers[k]->server->name) == 0;
                        removed += !still_named;
                        server_free(TAKE_PTR(m->servers[k]));
                }
        free(m->servers);
        m->servers = next;
        m->n_servers = c->n_servers;
        m->config = c;

        m->retired = xreallocarray(m->retired, m->n_retired + 1, sizeof(*m->retired));
        m->retired[m->n_retired++] = old;
        release_retired(m);

        log_event(LOG_INFO, MESSAGE_ID_RELOAD_OK, NULL,
                  "configuration reloaded: %zu servers (%zu kept, %zu added, %zu changed, %zu removed), %zu rules",
                  c->n_servers, kept, added, changed, removed, count_rules(c));
        return 0;
}

static void manager_check_once_done(struct manager *m) {
        bool failed = false;

        for (size_t i = 0; i < m->n_servers; i++) {
                if (!m->servers[i]->cycle_done)
                        return;
                failed = failed || m->servers[i]->cycle_failed;
        }
        sd_event_exit(m->event, failed ? 1 : 0);
}

static int on_exit_signal(sd_event_source *source, const struct signalfd_siginfo *si, void *userdata) {
        struct manager *m = userdata;

        sd_notify(0, "STOPPING=1");
        log_event(LOG_INFO, MESSAGE_ID_STOPPED, NULL, "stopping on %s", strsignal((int) si->ssi_signo));
        return sd_event_exit(m->event, 0);
}

static int on_reload(sd_event_source *source, const struct signalfd_siginfo *si, void *userdata) {
        struct manager *m = userdata;
        struct diagnostics diag = {};
        struct config *c = NULL;
        int r;

        sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%" PRIu64, now_usec(m));
        r = config_load(m->opts->config_path, &c, &diag);
        for (size_t i = 0; i < diag.n_lines; i++)
                log_event(r < 0 ? LOG_ERR : LOG_WARNING, NULL, NULL, "%s", diag.lines[i]);
        diagnostics_clear(&diag);
        metrics_count_reload(m->metrics, r >= 0);
        if (r < 0) {
                log_event(LOG_ERR, MESSAGE_ID_RELOAD_FAILED, NULL,
                          "reload failed, keeping the running configuration");
        } else if (apply_config(m, c) < 0)
                return sd_event_exit(m->event, 1);
        write_metrics(m, true);
        sd_notify(0, "READY=1");
        return 0;
}

int manager_run(const struct manager_options *opts, struct config *config) {
        struct manager m = { .opts = opts, .config = config, .metrics = metrics_new() };
        sigset_t mask;
        int r;

        /* libsystemd 252 needs the signals blocked before it can own them. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        sigprocmask(SIG_BLOCK, &mask, NULL);

        r = sd_event_default(&m.event);
        if (r < 0)
                goto fail;
        log_attach_event(m.event);  /* the journal queue is flushed from the loop */
        if ((r = sd_event_add_signal(m.event, NULL, SIGTERM, on_exit_signal, &m)) < 0 ||
            (r = sd_event_add_signal(m.event, NULL, SIGINT, on_exit_signal, &m)) < 0)
                goto fail;
        if (!opts->once) {
                if ((r = sd_event_add_signal(m.event, NULL, SIGHUP, on_reload, &m)) < 0)
                        goto fail;
                if ((r = sd_event_set_watchdog(m.event, true)) < 0)
                        goto fail;
        }
        r = servers_start(&m);
        if (r < 0)
                goto fail;

        if (!opts->once) {
                log_event(LOG_INFO, MESSAGE_ID_STARTED, NULL, "pgsweeper %s started, servers: %zu%s", PACKAGE_VERSION,
                          m.n_servers, m.config->dry_run || opts->dry_run ? " (dry run)" : "");
                sd_notify(0, "READY=1");
        }
        r = sd_event_loop(m.event);
        if (r < 0)
                goto fail;
        write_metrics(&m, true);
out:
        servers_stop(&m);
        release_retired(&m);
        free(m.retired);
        config_free(m.config);
        metrics_free(m.metrics);
        log_flush_at_exit(LOG_EXIT_FLUSH_USEC);  /* last: entries logged while stopping too */
        sd_event_unref(m.event);
        return r;
fail:
        log_error(NULL, "event loop: %s", strerror(-r));
        r = 1;
        goto out;
}
