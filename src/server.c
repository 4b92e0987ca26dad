/* One server, driven by non-blocking libpq through its own state machine:
 *
 *   disconnected -> connecting -> setup -> ready -> polling -> acting -> ready
 *                       \_________\_________\_________\________> backoff -> connecting
 *
 * Nothing here blocks, and every phase that waits on the server has a
 * client-side timeout. A cycle (snapshot, judgement, action, log) runs under
 * one configuration from start to end; what the server remembers across
 * cycles names rules, it never points into a configuration. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <time.h>

#include "duration.h"
#include "log.h"
#include "macro.h"
#include "message-ids.h"
#include "metrics.h"
#include "server.h"

#define USEC_PER_MSEC           UINT64_C(1000)
#define USEC_PER_SEC            UINT64_C(1000000)
#define CONNECT_TIMEOUT_SEC     10u     /* unless the conninfo sets connect_timeout */
/* Our own statements are bounded on the server (statement_timeout, set by
 * pg_setup_sql) and, should the server or network hang, here. */
#define QUERY_TIMEOUT_USEC      (10 * USEC_PER_SEC)
#define BACKOFF_MIN_USEC        (500 * USEC_PER_MSEC)
#define BACKOFF_MAX_USEC        (60 * USEC_PER_SEC)
#define STILL_DOWN_EVERY_USEC   (10 * 60 * USEC_PER_SEC)

/* The clock itself, not the loop's cached time: what a poll costs includes
 * the CPU spent judging in this very iteration. */
static uint64_t clock_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

static uint64_t loop_usec(struct server_state *s) {
        uint64_t t = 0;
        sd_event_now(s->event, CLOCK_MONOTONIC, &t);
        return t;
}

static const char *name(const struct server_state *s) {
        return s->server->name;
}

static void reported_free(struct reported *r, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(r[i].rule);
        free(r);
}

static void escalations_clear(struct server_state *s) {
        for (size_t i = 0; i < s->n_escalations; i++)
                free(s->escalations[i].rule);
        free(s->escalations);
        s->escalations = NULL;
        s->n_escalations = 0;
}

static void cycle_reset(struct server_state *s) {
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
        s->graph_prepared = false;
        pg_identity_done(&s->id);
        s->on_result = NULL;
        cycle_reset(s);
}

static void server_start_connect(struct server_state *s);
static void server_poll(struct server_state *s);

static void schedule(struct server_state *s, uint64_t at) {
        sd_event_source_set_time(s->timer, at);
        sd_event_source_set_enabled(s->timer, SD_EVENT_ONESHOT);
}

static void arm_timeout(struct server_state *s, uint64_t usec) {
        sd_event_source_set_time(s->timeout, loop_usec(s) + usec);
        sd_event_source_set_enabled(s->timeout, SD_EVENT_ONESHOT);
}

static bool rule_escalates(const struct rule *r) {
        return r && r->action == ACTION_CANCEL && r->escalate_after_ms > 0;
}

static const struct rule *rule_named(const struct server *srv, const char *rule) {
        for (size_t i = 0; i < srv->n_rules; i++)
                if (strcmp(srv->rules[i].name, rule) == 0)
                        return &srv->rules[i];
        return NULL;
}

/* Move to another configuration: memories of rules that are gone (or no
 * longer escalate) are dropped, the others carry over by name. */
static void switch_config(struct server_state *s, const struct config *c, const struct server *srv) {
        size_t kept = 0;

        for (size_t i = 0; i < s->n_reported; i++)
                if (rule_named(srv, s->reported[i].rule))
                        s->reported[kept++] = s->reported[i];
                else
                        free(s->reported[i].rule);
        s->n_reported = kept;
        kept = 0;
        for (size_t i = 0; i < s->n_escalations; i++)
                if (rule_escalates(rule_named(srv, s->escalations[i].rule)))
                        s->escalations[kept++] = s->escalations[i];
                else
                        free(s->escalations[i].rule);
        s->n_escalations = kept;
        s->config = c;
        s->server = srv;
}

/* A configuration parked by a reload during the cycle takes over now. */
static bool take_next_config(struct server_state *s) {
        if (!s->next_config)
                return false;
        switch_config(s, s->next_config, s->next_server);
        s->next_config = NULL;
        s->next_server = NULL;
        return true;
}

/* Nothing in flight any more: a retiring or stopping server is done. */
static bool wind_down(struct server_state *s) {
        if (!s->retiring && !s->stopping)
                return false;
        server_close(s);
        sd_event_source_set_enabled(s->timer, SD_EVENT_OFF);
        s->phase = PHASE_DISCONNECTED;
        s->finished = true;
        return true;
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

static bool log_cycle(struct server_state *s, const char *unknown_why);

/* libpq says "server closed the connection unexpectedly / This probably
 * means the server terminated abnormally..." for every restart, including
 * routine ones: the first words say what happened, libpq's text follows. */
static bool closed_by_server(const char *error) {
        return strstr(error, "server closed the connection") != NULL;
}

/* Something failed: log it once per change of state, close, retry later.
 * Decisions already sent are logged with result unknown: the signal may
 * have been delivered, and the audit trail must not miss one. */
static void server_fail(struct server_state *s, const char *what, const char *error) {
        uint64_t now = loop_usec(s);
        bool stopping = s->stopping || s->retiring;

        if (s->phase == PHASE_ACTING && s->batch.n > 0) {
                enforce_mark_unknown(&s->batch, s->results);
                log_cycle(s, "the connection failed before the result arrived");
        }
        /* Our backend may outlive a connection we give up on (the server or the
         * network stalls, TCP has not noticed): end it on purpose later. */
        if (s->conn && s->backend_pid > 0 && s->id.cluster && !stopping) {
                s->abandoned = (struct session_id) { s->backend_pid, s->id.backend_start };
                free(s->abandoned_cluster);
                s->abandoned_cluster = xstrdup(s->id.cluster);
        }
        if (!s->down) {
                if (s->ever_up && closed_by_server(error))
                        log_event(LOG_ERR, MESSAGE_ID_SERVER_LOST, name(s),
                                  "connection lost: server closed the connection (libpq: %s)", error);
                else if (s->ever_up)
                        log_event(LOG_ERR, MESSAGE_ID_SERVER_LOST, name(s), "connection lost (%s): %s", what, error);
                else
                        log_event(LOG_ERR, MESSAGE_ID_SERVER_LOST, name(s), "could not connect: %s", error);
                s->down = true;
                s->down_since = s->down_logged = now;
        } else if (now - s->down_logged >= STILL_DOWN_EVERY_USEC) {
                char d[DURATION_FORMAT_MAX];
                log_event(LOG_WARNING, MESSAGE_ID_SERVER_LOST, name(s), "still unreachable after %s: %s",
                          duration_format((int64_t) ((now - s->down_since) / USEC_PER_MSEC), d, sizeof(d)), error);
                s->down_logged = now;
        } else
                log_debug(name(s), "%s failed: %s", what, error);

        server_close(s);
        s->phase = PHASE_BACKOFF;
        take_next_config(s);
        s->cycle_done = true;
        s->cycle_failed = true;
        if (!wind_down(s) && !manager_options(s->manager)->once)
                schedule(s, now + next_backoff(s));
        manager_cycle_done(s->manager, s, true, true);
}

static void server_up(struct server_state *s) {
        if (s->down && s->ever_up) {
                char d[DURATION_FORMAT_MAX];
                log_event(LOG_NOTICE, MESSAGE_ID_SERVER_RESTORED, name(s),
                          "connection restored after %s (server version %d, backend pid %" PRId32 ")",
                          duration_format((int64_t) ((loop_usec(s) - s->down_since) / USEC_PER_MSEC), d, sizeof(d)),
                          PQserverVersion(s->conn), s->backend_pid);
        } else
                log_event(LOG_INFO, MESSAGE_ID_SERVER_CONNECTED, name(s),
                          "connected (server version %d, backend pid %" PRId32 ")", PQserverVersion(s->conn),
                          s->backend_pid);
        s->ever_up = true;
        s->down = false;
        s->fresh = true;
        s->backoff_usec = 0;
}

/* Without pg_monitor a role sees the state and timestamps of its own
 * sessions only: every rule would silently match nothing. Said once per
 * server, again only after it was fixed and lost. */
static void check_privileges(struct server_state *s) {
        bool ok = s->id.can_see_all && s->id.can_signal_all;

        metrics_set_privileges(manager_metrics(s->manager), name(s), ok);
        if (ok) {
                if (s->privileges_warned)
                        log_info(name(s), "role %s now has pg_monitor and pg_signal_backend", s->id.role);
                s->privileges_warned = false;
                return;
        }
        if (s->privileges_warned)
                return;
        s->privileges_warned = true;
        if (!s->id.can_see_all)
                log_event(LOG_WARNING, MESSAGE_ID_PRIVILEGES, name(s),
                          "role %s lacks pg_monitor: it cannot see other roles' sessions, so no rule can act on "
                          "them; fix: GRANT pg_monitor TO %s;", s->id.role, s->id.role);
        if (!s->id.can_signal_all)
                log_event(LOG_WARNING, MESSAGE_ID_PRIVILEGES, name(s),
                          "role %s lacks pg_signal_backend: it can signal only its own role's sessions; fix: "
                          "GRANT pg_signal_backend TO %s;", s->id.role, s->id.role);
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
                return sd_event_add_io(s->event, &s->io, fd, events, on_io, s);
        return sd_event_source_set_io_events(s->io, events);
}

enum send_kind {
        SEND_QUERY,         /* sql with params */
        SEND_PREPARE,       /* prepare sql as name */
        SEND_PREPARED,      /* run the statement prepared as name */
};

/* Send one statement; its result goes to fn. */
static void send_statement(struct server_state *s, enum phase phase, enum send_kind kind, const char *stmt,
                           const char *sql, int n_params, const char *const *params, result_fn fn) {
        int ok, r;

        switch (kind) {
        case SEND_PREPARE:
                ok = PQsendPrepare(s->conn, stmt, sql, n_params, NULL);
                break;
        case SEND_PREPARED:
                ok = PQsendQueryPrepared(s->conn, stmt, n_params, params, NULL, NULL, 0);
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

static void on_abandoned_done(struct server_state *s, PGresult *res) {
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
                server_fail(s, "setup", result_error(s, res));
                return;
        }
        if (PQntuples(res) == 1 && PQgetvalue(res, 0, 0)[0] == 't')
                log_event(LOG_NOTICE, MESSAGE_ID_ABANDONED, name(s),
                          "terminated pid %" PRId32 ", pgsweeper's own backend of a connection it gave up on",
                          s->abandoned.pid);
        else
                log_debug(name(s), "our abandoned backend pid %" PRId32 " is gone", s->abandoned.pid);
        s->abandoned = (struct session_id) {};
        s->phase = PHASE_READY;
        server_poll(s);
}

/* A backend of ours from a connection we gave up on, on this same cluster,
 * is ended before the first poll, by its exact identity, and said so: never
 * judged as somebody's session. */
static bool end_abandoned(struct server_state *s) {
        char pid[16], start[32];
        const char *params[2] = { pid, start };

        if (s->abandoned.pid <= 0 || !s->abandoned_cluster)
                return false;
        if (strcmp(s->abandoned_cluster, s->id.cluster) != 0) {
                s->abandoned = (struct session_id) {};    /* the cluster restarted: it is gone */
                return false;
        }
        snprintf(pid, sizeof(pid), "%" PRId32, s->abandoned.pid);
        snprintf(start, sizeof(start), "%" PRId64, s->abandoned.backend_start);
        send_statement(s, PHASE_SETUP, SEND_QUERY, NULL, pg_end_abandoned_sql, 2, params, on_abandoned_done);
        return true;
}

static void on_prepare_done(struct server_state *s, PGresult *res) {
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
                server_fail(s, "setup", result_error(s, res));
                return;
        }
        if (end_abandoned(s))
                return;
        s->phase = PHASE_READY;
        server_poll(s);
}

/* Polls run a prepared statement: planned once per connection, not per poll. */
static void on_setup_done(struct server_state *s, PGresult *res) {
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
                server_fail(s, "setup", result_error(s, res));
                return;
        }
        if (pg_identity_from_result(res, &s->id) < 0) {
                server_fail(s, "setup", "unexpected result shape");
                return;
        }
        server_up(s);
        check_privileges(s);
        send_statement(s, PHASE_SETUP, SEND_PREPARE, pg_snapshot_name, pg_snapshot_sql, SNAPSHOT_PARAMS, NULL,
                       on_prepare_done);
}

/* libpq's own reason, when it closed the socket with one. */
static const char *no_socket_error(struct server_state *s) {
        const char *e = PQerrorMessage(s->conn);
        return e && *e ? e : "no socket";
}

static void connect_progress(struct server_state *s) {
        switch (PQconnectPoll(s->conn)) {
        case PGRES_POLLING_READING:
                if (watch(s, EPOLLIN) < 0)
                        server_fail(s, "connect", no_socket_error(s));
                return;
        case PGRES_POLLING_WRITING:
                if (watch(s, EPOLLOUT) < 0)
                        server_fail(s, "connect", no_socket_error(s));
                return;
        case PGRES_POLLING_OK:
                s->backend_pid = PQbackendPID(s->conn);
                s->phase = PHASE_SETUP;
                send_statement(s, PHASE_SETUP, SEND_QUERY, NULL, pg_setup_sql, 0, NULL, on_setup_done);
                return;
        default:
                server_fail(s, "connect", PQerrorMessage(s->conn));
        }
}

/* Server notices (e.g. "PID n is not a PostgreSQL backend process" when a
 * victim exits first) are not our events: debug level, never raw stderr. */
static void on_notice(void *userdata, const char *message) {
        struct server_state *s = userdata;
        log_debug(name(s), "server notice: %s", message);
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

static struct reported reported_key(const struct decision *d) {
        return (struct reported) { d->row->pid, d->row->backend_start, limit_since(d->limit, d->row),
                                   (char *) d->rule->name };
}

static bool reported_before(const struct server_state *s, const struct reported *k) {
        for (size_t i = 0; i < s->n_reported; i++)
                if (s->reported[i].pid == k->pid && s->reported[i].backend_start == k->backend_start &&
                    s->reported[i].since == k->since && strcmp(s->reported[i].rule, k->rule) == 0)
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
static bool log_result(struct server_state *s, const struct decision *judged, enum result r, struct reported *now,
                       size_t *n_now, const char *unknown_why) {
        /* Query text read for a queries filter is logged only with log_query. */
        struct snapshot_row row = *judged->row;
        struct decision copy = *judged;
        const struct decision *d = &copy;
        char hint[256];

        if (!s->config->log_query)
                row.query = NULL;
        copy.row = &row;

        if (r == RESULT_LOGGED || r == RESULT_DRY_RUN) {
                struct reported k = reported_key(d);
                bool repeat = reported_before(s, &k);
                k.rule = xstrdup(k.rule);
                now[(*n_now)++] = k;
                if (repeat)
                        return false;
                log_decision(name(s), d, r, -1, NULL);
                return true;
        }
        if (r == RESULT_DENIED) {
                if (role_denied_before(s, d->row->user)) {
                        log_decision(name(s), d, r, LOG_DEBUG, NULL);
                        return true;
                }
                if (d->row->superuser)
                        snprintf(hint, sizeof(hint), "only a superuser may signal a superuser's session: exempt "
                                 "role %s or leave terminate_superusers off (logged once per role)", d->row->user);
                else
                        snprintf(hint, sizeof(hint), "fix: GRANT pg_signal_backend TO %s; (logged once per role)",
                                 s->id.role ? s->id.role : "pgsweeper");
                log_decision(name(s), d, r, -1, hint);
                return true;
        }
        log_decision(name(s), d, r, -1, r == RESULT_UNKNOWN ? unknown_why : NULL);
        return true;
}

/* Log every decision of the cycle with its result and remember what the
 * next cycles need: repeats, sessions terminated, escalations due. Returns
 * whether anything new was logged. */
static bool log_cycle(struct server_state *s, const char *unknown_why) {
        struct manager *m = s->manager;
        const struct judgement *j = &s->judgement;
        struct reported *now = xcalloc(j->n_decisions + 1, sizeof(*now));
        size_t n_now = 0;
        uint64_t ended = 0;
        bool logged = false;

        free(s->ended);
        s->ended = xcalloc(j->n_decisions + 1, sizeof(*s->ended));
        s->n_ended = 0;
        free(s->dying);
        s->dying = xcalloc(j->n_decisions + 1, sizeof(*s->dying));
        s->n_dying = 0;
        for (size_t i = 0; i < j->n_decisions; i++) {
                const struct decision *d = &j->decisions[i];
                enum result r = s->results[i];

                if (log_result(s, d, r, now, &n_now, unknown_why)) {
                        metrics_count_result(manager_metrics(m), name(s), d->rule->name, d->action, r);
                        logged = true;
                }
                if (r == RESULT_TERMINATED || r == RESULT_CANCELLED)
                        ended++;
                if (r == RESULT_TERMINATED)
                        s->ended[s->n_ended++] = session_id_of(d->row);
                if (r == RESULT_CANCELLED && rule_escalates(d->rule) && !d->escalated) {
                        s->escalations = xreallocarray(s->escalations, s->n_escalations + 1, sizeof(*s->escalations));
                        s->escalations[s->n_escalations++] = (struct escalation) {
                                .pid = d->row->pid, .backend_start = d->row->backend_start,
                                .query_start = d->row->query_start,
                                .due = s->snap.now + d->rule->escalate_after_ms * 1000, .rule = xstrdup(d->rule->name),
                        };
                }
        }
        manager_count_ended(m, ended);
        if (j->n_capped > 0)
                log_event(LOG_WARNING, MESSAGE_ID_CAP_HIT, name(s),
                          "max_actions_per_cycle (%u) reached: %zu more sessions over their limits wait for the "
                          "next cycle", s->server->max_actions_per_cycle, j->n_capped);
        /* Only what is still over its limit stays remembered. */
        reported_free(s->reported, s->n_reported);
        s->reported = now;
        s->n_reported = n_now;
        return logged || j->n_capped > 0;
}

/* The cycle is over: log it and plan the next (plan_next_poll). */
static void cycle_complete(struct server_state *s) {
        uint64_t at = plan_next_poll(s->config, s->server, &(struct plan_cycle) {
                .poll_started = s->poll_started, .snap_received = s->snap_received,
                .snap_now = s->snap.now, .next_deadline = s->judgement.next_deadline,
        });
        bool eventful = log_cycle(s, NULL) || s->fresh;

        cycle_reset(s);
        s->phase = PHASE_READY;
        s->fresh = false;
        s->cycle_done = true;
        s->cycle_failed = false;
        if (!wind_down(s) && !manager_options(s->manager)->once) {
                /* New rules from a reload during the cycle apply at once. */
                if (take_next_config(s))
                        at = s->poll_started;
                schedule(s, at);
        }
        manager_cycle_done(s->manager, s, false, eventful);
}

static void on_action_done(struct server_state *s, PGresult *res) {
        if (enforce_read_result(&s->batch, res, s->results) < 0) {
                /* An error can come after some backends were signalled. */
                log_error(name(s), "action statement failed: %s", result_error(s, res));
                enforce_mark_unknown(&s->batch, s->results);
        }
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
                else
                        free(s->escalations[i].rule);
        }
        s->n_escalations = kept;

        s->n_dying = 0;
        for (size_t i = 0; i < s->n_ended; i++)
                for (size_t r = 0; r < s->snap.n_rows; r++) {
                        const struct snapshot_row *row = &s->snap.rows[r];
                        if (session_id_equal(s->ended[i], session_id_of(row))) {
                                log_warning(name(s), "pid %" PRId32 " is still there after it was "
                                            "terminated (state %s); it may be stuck in an uninterruptible wait",
                                            row->pid, session_state_to_string(row->state));
                                s->dying[s->n_dying++] = s->ended[i];
                                break;
                        }
                }
        s->n_ended = 0;
}

/* pg_is_in_recovery() as this poll saw it: a change is one entry. */
static void track_role(struct server_state *s) {
        enum server_role now;

        if (!s->snap.role_known)
                return;
        now = s->snap.in_recovery ? ROLE_STANDBY : ROLE_PRIMARY;
        metrics_set_in_recovery(manager_metrics(s->manager), name(s), s->snap.in_recovery);
        if (now == s->role)
                return;
        log_server_role(name(s), s->role, now);
        s->role = now;
}

/* Chains whose root may not be signalled: each root said once, for as
 * long as it stays one. */
static void warn_protected_roots(struct server_state *s) {
        const struct judgement *j = &s->judgement;
        struct session_id *now = xcalloc(j->n_warnings + 1, sizeof(*now));

        for (size_t i = 0; i < j->n_warnings; i++) {
                struct session_id id = { j->warnings[i].pid, j->warnings[i].backend_start };
                bool seen = false;

                for (size_t k = 0; k < s->n_warned_roots && !seen; k++)
                        seen = session_id_equal(s->warned_roots[k], id);
                if (!seen)
                        log_chain_warning(name(s), &j->warnings[i]);
                now[i] = id;
        }
        free(s->warned_roots);
        s->warned_roots = now;
        s->n_warned_roots = j->n_warnings;
}

/* Judge the snapshot (with its lock graph if one was read) and act. */
static void judge_and_act(struct server_state *s) {
        _cleanup_free_ struct session_id *own = NULL;
        struct policy_input in = {
                .server = s->server,
                .dry_run = s->config->dry_run || manager_options(s->manager)->dry_run,
                .own_role = s->id.role,
        };

        track_role(s);
        in.n_own = manager_own_sessions(s->manager, s, &own);
        in.own = own;
        watch_earlier_actions(s);
        in.escalations = s->escalations;
        in.n_escalations = s->n_escalations;
        in.dying = s->dying;
        in.n_dying = s->n_dying;
        policy_judge(&in, &s->snap, &s->judgement);
        s->poll_usec = clock_usec() - s->poll_started;
        warn_protected_roots(s);

        s->results = xcalloc(s->judgement.n_decisions + 1, sizeof(*s->results));
        if (enforce_prepare(&s->judgement, s->results, &s->batch) == 0) {
                cycle_complete(s);
                return;
        }
        send_statement(s, PHASE_ACTING, SEND_QUERY, NULL, pg_action_sql, (int) ELEMENTSOF(s->batch.params),
                       (const char *const *) s->batch.params, on_action_done);
}

/* What this cycle asks the server for; both statements of a poll take it. */
static void poll_params(struct server_state *s, struct snapshot_params *ret) {
        struct snapshot_request req;

        plan_poll_request(s->config, s->server, s->escalations, s->n_escalations, &req);
        snapshot_params_build(&req, ret);
        snapshot_request_done(&req);
}

static void on_graph_done(struct server_state *s, PGresult *res) {
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
                server_fail(s, "lock graph", result_error(s, res));
                return;
        }
        snapshot_free(&s->snap);
        if (snapshot_from_result(res, &s->snap) < 0) {
                server_fail(s, "lock graph", "unexpected result shape");
                return;
        }
        s->snap_received = loop_usec(s);
        s->snap.has_graph = true;
        judge_and_act(s);
}

static void send_graph(struct server_state *s) {
        struct snapshot_params params;

        poll_params(s, &params);
        send_statement(s, PHASE_POLLING, SEND_PREPARED, pg_lock_graph_name, NULL, SNAPSHOT_PARAMS,
                       (const char *const *) params.values, on_graph_done);
        snapshot_params_free(&params);
}

static void on_graph_prepared(struct server_state *s, PGresult *res) {
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
                server_fail(s, "lock graph", result_error(s, res));
                return;
        }
        s->graph_prepared = true;
        send_graph(s);
}

static void on_snapshot_done(struct server_state *s, PGresult *res) {
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
                server_fail(s, "snapshot", result_error(s, res));
                return;
        }
        if (snapshot_from_result(res, &s->snap) < 0) {
                server_fail(s, "snapshot", "unexpected result shape");
                return;
        }
        s->snap_received = loop_usec(s);
        /* The lock graph only for a server with a lock rule, and only when
         * this poll saw a session waiting for a lock. */
        if (!plan_wants_graph(s->server, &s->snap)) {
                judge_and_act(s);
                return;
        }
        /* Prepared once per connection, the first time it is needed; its
         * text depends on the version (pg_locks.waitstart since 14). */
        if (!s->graph_prepared) {
                send_statement(s, PHASE_POLLING, SEND_PREPARE, pg_lock_graph_name,
                               pg_lock_graph_sql_for(PQserverVersion(s->conn)),
                               SNAPSHOT_PARAMS, NULL, on_graph_prepared);
                return;
        }
        send_graph(s);
}

static void server_poll(struct server_state *s) {
        struct snapshot_params params;

        poll_params(s, &params);
        s->poll_started = clock_usec();
        send_statement(s, PHASE_POLLING, SEND_PREPARED, pg_snapshot_name, NULL, SNAPSHOT_PARAMS,
                       (const char *const *) params.values, on_snapshot_done);
        snapshot_params_free(&params);
}

static int on_timer(sd_event_source *source, uint64_t usec, void *userdata) {
        struct server_state *s = userdata;

        if (s->retiring || s->stopping)
                return 0;
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
                s->poll_started = clock_usec();
                server_start_connect(s);
                break;
        default:
                break;  /* busy: the cycle in flight schedules the next one */
        }
        return 0;
}

void server_free(struct server_state *s) {
        if (!s)
                return;
        server_close(s);
        sd_event_source_disable_unref(s->timer);
        sd_event_source_disable_unref(s->timeout);
        reported_free(s->reported, s->n_reported);
        escalations_clear(s);
        free(s->ended);
        free(s->dying);
        free(s->warned_roots);
        free(s->abandoned_cluster);
        for (size_t k = 0; k < s->n_denied_roles; k++)
                free(s->denied_roles[k]);
        free(s->denied_roles);
        free(s);
}

struct server_state *server_new(struct manager *m, sd_event *e, const struct config *c, const struct server *srv) {
        struct server_state *s = xcalloc(1, sizeof(*s));

        *s = (struct server_state) { .manager = m, .event = e, .config = c, .server = srv, .fd = -1 };
        /* The first poll happens right away; accuracy 1us, as the default
         * (250ms) would defeat deadline scheduling. */
        if (sd_event_add_time(e, &s->timer, CLOCK_MONOTONIC, 0, 1, on_timer, s) < 0 ||
            sd_event_add_time(e, &s->timeout, CLOCK_MONOTONIC, UINT64_MAX, USEC_PER_MSEC, on_timeout, s) < 0) {
                server_free(s);
                return NULL;
        }
        sd_event_source_set_enabled(s->timeout, SD_EVENT_OFF);
        return s;
}

void server_reconfigure(struct server_state *s, const struct config *c, const struct server *srv) {
        if (s->phase == PHASE_POLLING || s->phase == PHASE_ACTING) {
                s->next_config = c;
                s->next_server = srv;
                return;
        }
        s->next_config = NULL;
        s->next_server = NULL;
        switch_config(s, c, srv);
        /* Keep the connection and poll now, so new rules apply at once. */
        if (s->phase == PHASE_READY)
                schedule(s, loop_usec(s));
}

/* Only an action in flight is waited for: a snapshot in flight has signalled
 * nothing and is dropped. */
static void wind_down_unless_acting(struct server_state *s) {
        s->next_config = NULL;
        s->next_server = NULL;
        sd_event_source_set_enabled(s->timer, SD_EVENT_OFF);
        if (s->phase != PHASE_ACTING)
                wind_down(s);
}

void server_retire(struct server_state *s) {
        s->retiring = true;
        wind_down_unless_acting(s);
}

void server_stop(struct server_state *s) {
        s->stopping = true;
        wind_down_unless_acting(s);
}

void server_give_up_action(struct server_state *s, const char *why) {
        if (s->phase != PHASE_ACTING)
                return;
        enforce_mark_unknown(&s->batch, s->results);
        log_cycle(s, why);
        wind_down(s);
}

bool server_uses_config(const struct server_state *s, const struct config *c) {
        return s->config == c || s->next_config == c;
}

bool server_is_up(const struct server_state *s) {
        return s->ever_up && !s->down;
}
