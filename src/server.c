/* One server's phases:
 *
 *   disconnected -> connecting -> setup -> ready -> polling -> acting -> ready
 *                       \_________\_________\_________\________> backoff -> connecting
 *
 * The connection itself (non-blocking libpq, timeouts) is pgconn.c's; what a
 * poll asks for and when the next comes is plan.c's; the judgement is
 * policy.c's; a finished cycle's log lines and memories are report.c's and
 * memory.c's. A cycle (snapshot, judgement, action, log) runs under one
 * configuration from start to end; what the server remembers across cycles
 * names rules, it never points into a configuration. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "duration.h"
#include "enforce.h"
#include "log.h"
#include "macro.h"
#include "memory.h"
#include "message-ids.h"
#include "pgconn.h"
#include "plan.h"
#include "policy.h"
#include "report.h"
#include "server.h"
#include "snapshot.h"
#include "sql.h"

#define USEC_PER_MSEC           UINT64_C(1000)
#define USEC_PER_SEC            UINT64_C(1000000)
#define QUERY_TIMEOUT_USEC      (PG_STATEMENT_WAIT_SEC * USEC_PER_SEC)
#define BACKOFF_MIN_USEC        (500 * USEC_PER_MSEC)
#define BACKOFF_MAX_USEC        (60 * USEC_PER_SEC)
#define STILL_DOWN_EVERY_USEC   (10 * 60 * USEC_PER_SEC)

enum phase {
        PHASE_DISCONNECTED,
        PHASE_CONNECTING,
        PHASE_SETUP,
        PHASE_READY,
        PHASE_POLLING,
        PHASE_ACTING,
        PHASE_BACKOFF,
};

struct server_state {
        sd_event *event;
        struct server_settings settings;
        /* The configuration this server runs under; a reload that comes while
         * a cycle is in flight parks the new one in next_* until the cycle
         * ends, so a cycle is judged, acted on and logged under one. */
        const struct config *config;
        const struct server *server;
        const struct config *next_config;
        const struct server *next_server;
        bool retiring;                  /* removed or changed by a reload: finish the action in flight, then go */
        bool stopping;                  /* SIGTERM: no new cycle */
        bool finished;                  /* retiring or stopping, and nothing in flight any more */

        enum phase phase;
        struct pgconn *pg;
        sd_event_source *timer;         /* next poll, or next connect attempt */
        bool graph_prepared;            /* the lock graph statement, on this connection */

        /* Who we are on this server, read at connect; our backends, and the
         * one of a connection we gave up on, are in the registry. */
        int32_t backend_pid;
        struct pg_identity id;
        struct registry_entry *own;
        bool privileges_warned;

        bool ever_up;
        bool down;                      /* a failure was logged and nothing since */
        uint64_t down_since;
        uint64_t down_logged;
        uint64_t backoff_usec;
        bool fresh;                     /* first cycle on a new connection */
        bool cycle_done;                /* --once: this server finished its cycle */
        bool cycle_failed;
        /* The server's role at the last poll that said it; ROLE_ANY: not seen
         * yet. Kept across reconnects, so a node that comes back in the other
         * role is one change. */
        enum server_role role;
        struct memory memory;

        /* the cycle in flight */
        uint64_t poll_started;          /* CLOCK_MONOTONIC, read when the snapshot is sent */
        uint64_t poll_usec;             /* from sending the snapshot to the end of the judgement */
        uint64_t snap_received;         /* CLOCK_MONOTONIC, when its answer was read */
        struct snapshot_request req;    /* what this poll asks; a second read asks more */
        struct snapshot snap;
        struct judgement judgement;
        enum result *results;
        /* The batches in flight, oldest first: the one the server runs and
         * those queued behind it, so the server never waits for us between
         * two (a storm's victims exit meanwhile, and we may wait long for
         * the CPU to read an answer). */
        struct action_batch batches[PGCONN_IN_FLIGHT_MAX];
        size_t n_batches;
        size_t next_decision;           /* where the next batch starts */
        size_t logged_upto;             /* decisions before this one are logged */
        struct cycle_outcome logged;    /* what the cycle logged so far */
};

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

static void cycle_reset(struct server_state *s) {
        judgement_free(&s->judgement);
        snapshot_free(&s->snap);
        snapshot_request_done(&s->req);
        for (size_t i = 0; i < s->n_batches; i++)
                action_batch_free(&s->batches[i]);
        s->n_batches = 0;
        free(s->results);
        s->results = NULL;
        s->next_decision = s->logged_upto = 0;
}

static void server_close(struct server_state *s) {
        pgconn_close(s->pg);
        registry_disconnected(s->own);
        s->backend_pid = 0;
        s->graph_prepared = false;
        pg_identity_done(&s->id);
        cycle_reset(s);
}

static void server_start_connect(struct server_state *s);
static void server_poll(struct server_state *s);

static void schedule(struct server_state *s, uint64_t at) {
        sd_event_source_set_time(s->timer, at);
        sd_event_source_set_enabled(s->timer, SD_EVENT_ONESHOT);
}

static void switch_config(struct server_state *s, const struct config *c, const struct server *srv) {
        memory_switch(&s->memory, srv);
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

static struct cycle cycle_of(struct server_state *s, const char *unknown_why) {
        return (struct cycle) {
                .server = name(s), .config = s->config, .srv = s->server, .own_role = s->id.role,
                .snap_now = s->snap.now, .judgement = &s->judgement, .results = s->results,
                .unknown_why = unknown_why,
        };
}

/* Log the decisions whose results are in, up to (not including) upto. */
static void log_through(struct server_state *s, size_t upto, const char *unknown_why) {
        struct cycle c = cycle_of(s, unknown_why);
        struct cycle_outcome out;

        if (upto <= s->logged_upto)
                return;
        out = report_decisions(&s->memory, s->settings.metrics, &c, s->logged_upto, upto);
        s->logged_upto = upto;
        s->logged.logged |= out.logged;
        s->logged.ended += out.ended;
}

/* Log the rest of the cycle (but the batches never sent) and end it. */
static void log_rest(struct server_state *s, const char *unknown_why) {
        struct cycle c = cycle_of(s, unknown_why);

        log_through(s, s->judgement.n_decisions, unknown_why);
        s->logged.logged |= report_end(&s->memory, &c).logged;
}

/* The batches in flight are lost: their victims are unknown. Returns the
 * sessions the cycle ended. */
static uint64_t log_cycle_cut_short(struct server_state *s, const char *unknown_why) {
        for (size_t i = 0; i < s->n_batches; i++)
                enforce_mark_unknown(&s->batches[i], s->results);
        log_rest(s, unknown_why);
        return s->logged.ended;
}

static void report(struct server_state *s, bool failed, bool eventful, uint64_t ended) {
        s->settings.report(s, &(struct server_report) {
                .failed = failed, .eventful = eventful, .finished = s->finished, .poll_usec = s->poll_usec,
                .ended = ended,
        }, s->settings.userdata);
}

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
        uint64_t now = loop_usec(s), ended = 0;
        bool stopping = s->stopping || s->retiring;

        if (s->phase == PHASE_ACTING)
                ended = log_cycle_cut_short(s, "the connection failed before the result arrived");
        /* Our backend may outlive a connection we give up on (the server or the
         * network stalls, TCP has not noticed): end it on purpose later. */
        if (pgconn_pq(s->pg) && !stopping)
                registry_abandon(s->own);
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
        if (!wind_down(s) && !s->settings.once)
                schedule(s, now + next_backoff(s));
        report(s, true, true, ended);
}

static void on_pg_failed(void *userdata, const char *what, const char *error) {
        server_fail(userdata, what, error);
}

/* Server notices are not our events: debug level. */
static void on_pg_notice(void *userdata, const char *message) {
        struct server_state *s = userdata;
        log_debug(name(s), "server notice: %s", message);
}

/* Send one statement in phase; its result goes to fn. */
static void send_statement(struct server_state *s, enum phase phase, enum send_kind kind, const char *stmt,
                           const char *sql, int n_params, const char *const *params, pgconn_result_fn fn) {
        int r = pgconn_send(s->pg, kind, stmt, sql, n_params, params, fn, QUERY_TIMEOUT_USEC);

        if (r == -ENOTCONN) {
                server_fail(s, "send", pgconn_error(s->pg));
                return;
        }
        s->phase = phase;
        if (r < 0)
                server_fail(s, "send", pgconn_error(s->pg));
}

/* A statement did not succeed: the cycle fails, in the server's words. */
static bool result_failed(struct server_state *s, const PGresult *res, ExecStatusType want, const char *what) {
        if (PQresultStatus(res) == want)
                return false;
        server_fail(s, what, pgconn_result_error(s->pg, res));
        return true;
}

static void server_up(struct server_state *s) {
        PGconn *conn = pgconn_pq(s->pg);

        if (s->down && s->ever_up) {
                char d[DURATION_FORMAT_MAX];
                log_event(LOG_NOTICE, MESSAGE_ID_SERVER_RESTORED, name(s),
                          "connection restored after %s (server version %d, backend pid %" PRId32 ")",
                          duration_format((int64_t) ((loop_usec(s) - s->down_since) / USEC_PER_MSEC), d, sizeof(d)),
                          PQserverVersion(conn), s->backend_pid);
        } else
                log_event(LOG_INFO, MESSAGE_ID_SERVER_CONNECTED, name(s),
                          "connected (server version %d, backend pid %" PRId32 ")", PQserverVersion(conn),
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

        metrics_set_privileges(s->settings.metrics, name(s), ok);
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

static void on_abandoned_done(void *userdata, PGresult *res) {
        struct server_state *s = userdata;
        const char *cluster;
        struct session_id gone = registry_abandoned(s->own, &cluster);

        if (result_failed(s, res, PGRES_TUPLES_OK, "setup"))
                return;
        if (PQntuples(res) == 1 && PQgetvalue(res, 0, 0)[0] == 't')
                log_event(LOG_NOTICE, MESSAGE_ID_ABANDONED, name(s),
                          "terminated pid %" PRId32 ", pgsweeper's own backend of a connection it gave up on",
                          gone.pid);
        else
                log_debug(name(s), "our abandoned backend pid %" PRId32 " is gone", gone.pid);
        registry_abandoned_done(s->own);
        s->phase = PHASE_READY;
        server_poll(s);
}

/* A backend of ours from a connection we gave up on, on this same cluster,
 * is ended before the first poll, by its exact identity, and said so: never
 * judged as somebody's session. */
static bool end_abandoned(struct server_state *s) {
        const char *cluster;
        struct session_id a = registry_abandoned(s->own, &cluster);
        char pid[16], start[32];
        const char *params[2] = { pid, start };

        if (a.pid <= 0 || !cluster)
                return false;
        if (strcmp(cluster, s->id.cluster) != 0) {
                registry_abandoned_done(s->own);    /* the cluster restarted: it is gone */
                return false;
        }
        snprintf(pid, sizeof(pid), "%" PRId32, a.pid);
        snprintf(start, sizeof(start), "%" PRId64, a.backend_start);
        send_statement(s, PHASE_SETUP, SEND_QUERY, NULL, pg_end_abandoned_sql, 2, params, on_abandoned_done);
        return true;
}

static void on_prepare_done(void *userdata, PGresult *res) {
        struct server_state *s = userdata;
        if (result_failed(s, res, PGRES_COMMAND_OK, "setup"))
                return;
        if (end_abandoned(s))
                return;
        s->phase = PHASE_READY;
        server_poll(s);
}

static void on_prepare_first_done(void *userdata, PGresult *res) {
        struct server_state *s = userdata;
        result_failed(s, res, PGRES_COMMAND_OK, "setup");
}

/* Polls run a prepared statement: planned once per connection, not per poll. */
static void on_setup_done(void *userdata, PGresult *res) {
        struct server_state *s = userdata;
        if (result_failed(s, res, PGRES_TUPLES_OK, "setup"))
                return;
        if (pg_identity_from_result(res, &s->id) < 0) {
                server_fail(s, "setup", "unexpected result shape");
                return;
        }
        registry_connected(s->own, s->id.cluster, (struct session_id) { s->backend_pid, s->id.backend_start });
        server_up(s);
        check_privileges(s);
        /* both forms of the snapshot: a reload may add or drop a cap on this connection */
        send_statement(s, PHASE_SETUP, SEND_PREPARE, pg_snapshot_name, pg_snapshot_sql, SNAPSHOT_PARAMS, NULL,
                       on_prepare_first_done);
        send_statement(s, PHASE_SETUP, SEND_PREPARE, pg_snapshot_groups_name, pg_snapshot_groups_sql,
                       SNAPSHOT_PARAMS, NULL, on_prepare_done);
}

static void on_pg_connected(void *userdata) {
        struct server_state *s = userdata;

        s->backend_pid = PQbackendPID(pgconn_pq(s->pg));
        s->phase = PHASE_SETUP;
        send_statement(s, PHASE_SETUP, SEND_QUERY, NULL, pg_setup_sql, 0, NULL, on_setup_done);
}

static void server_start_connect(struct server_state *s) {
        server_close(s);
        s->phase = PHASE_CONNECTING;
        pgconn_connect(s->pg, s->server->conninfo, PG_CONNECT_TIMEOUT_SEC);
}

static void on_action_done(void *userdata, PGresult *res);

/* The cycle is over: log what is left of it and plan the next
 * (plan_next_poll). */
static void cycle_complete(struct server_state *s) {
        uint64_t at = plan_next_poll(s->config, s->server, &(struct plan_cycle) {
                .poll_started = s->poll_started, .snap_received = s->snap_received,
                .snap_now = s->snap.now, .next_deadline = s->judgement.next_deadline,
        });
        bool eventful;
        uint64_t ended;

        log_rest(s, NULL);
        eventful = s->logged.logged || s->fresh;
        ended = s->logged.ended;
        cycle_reset(s);
        s->phase = PHASE_READY;
        s->fresh = false;
        s->cycle_done = true;
        s->cycle_failed = false;
        if (!wind_down(s) && !s->settings.once) {
                /* New rules from a reload during the cycle apply at once. */
                if (take_next_config(s))
                        at = s->poll_started;
                schedule(s, at);
        }
        report(s, false, eventful, ended);
}

/* Keep the server busy: send batches of the cycle until PGCONN_IN_FLIGHT_MAX are in flight,
 * unless a stop or a retirement came (the sessions of the batches never
 * sent are judged again by whoever polls next). Returns false when none is
 * in flight: the cycle is done acting. */
static bool send_batches(struct server_state *s) {
        while (!s->stopping && !s->retiring && s->n_batches < PGCONN_IN_FLIGHT_MAX &&
               (s->phase == PHASE_POLLING || s->phase == PHASE_ACTING)) {
                struct action_batch *b = &s->batches[s->n_batches];

                if (enforce_next_batch(&s->judgement, s->results, &s->next_decision, b) == 0) {
                        action_batch_free(b);
                        break;
                }
                s->n_batches++;
                send_statement(s, PHASE_ACTING, SEND_QUERY, NULL, pg_action_sql, (int) ELEMENTSOF(b->params),
                               (const char *const *) b->params, on_action_done);
        }
        return s->n_batches > 0;
}

/* The oldest batch answered: the next goes out at once, so that the server
 * always has one to run while this one's decisions are logged, whatever
 * comes of the others. A batch that failed (its statement_timeout on a host
 * short of CPU, an error) may have signalled some: only its own victims
 * are unknown. */
static void on_action_done(void *userdata, PGresult *res) {
        struct server_state *s = userdata;
        _cleanup_free_ char *why = NULL;
        size_t end;
        bool more;

        if (enforce_read_result(&s->batches[0], res, s->results) < 0) {
                why = xasprintf("the action statement failed: %s", pgconn_result_error(s->pg, res));
                log_error(name(s), "action statement failed: %s", pgconn_result_error(s->pg, res));
                enforce_mark_unknown(&s->batches[0], s->results);
        }
        end = action_batch_end(&s->batches[0]);
        action_batch_free(&s->batches[0]);
        memmove(&s->batches[0], &s->batches[1], (--s->n_batches) * sizeof(s->batches[0]));
        more = send_batches(s);
        if (s->phase != PHASE_ACTING)
                return;         /* a send failed: the whole cycle was logged and closed */
        log_through(s, end, why);
        if (!more)
                cycle_complete(s);
}

/* pg_is_in_recovery() as this poll saw it: a change is one entry. */
static void track_role(struct server_state *s) {
        enum server_role now;

        if (!s->snap.role_known)
                return;
        now = s->snap.in_recovery ? ROLE_STANDBY : ROLE_PRIMARY;
        metrics_set_in_recovery(s->settings.metrics, name(s), s->snap.in_recovery);
        if (now == s->role)
                return;
        log_server_role(name(s), s->role, now);
        s->role = now;
}

/* Judge the snapshot (with its lock graph if one was read) and act. */
static void judge_and_act(struct server_state *s) {
        _cleanup_free_ struct session_id *own = NULL;
        struct policy_input in = {
                .server = s->server,
                .dry_run = s->config->dry_run || s->settings.dry_run,
                .own_role = s->id.role,
        };

        track_role(s);
        in.n_own = registry_sessions(s->settings.registry, s->id.cluster, &own);
        in.own = own;
        memory_before_judge(&s->memory, s->settings.metrics, name(s), &s->snap);
        in.escalations = s->memory.escalations;
        in.n_escalations = s->memory.n_escalations;
        in.dying = s->memory.dying;
        in.n_dying = s->memory.n_dying;
        in.held_since = s->memory.held_since;
        in.n_held_since = s->memory.n_held_since;
        policy_judge(&in, &s->snap, &s->judgement);
        s->poll_usec = clock_usec() - s->poll_started;
        memory_warn_roots(&s->memory, name(s), &s->judgement);
        memory_warn_caps(&s->memory, s->server, &s->snap, &s->judgement);
        memory_warn_holders(&s->memory, name(s), &s->snap, &s->judgement);
        metrics_set_horizon(s->settings.metrics, name(s), s->snap.has_horizon ? s->snap.horizon_age : NULL);
        metrics_set_connections(s->settings.metrics, name(s), s->snap.connections, s->snap.connection_slots);

        s->results = xcalloc(s->judgement.n_decisions + 1, sizeof(*s->results));
        enforce_prepare(&s->judgement, s->results);
        report_begin(&s->memory, &(struct cycle) { .judgement = &s->judgement });
        s->logged = (struct cycle_outcome) {};
        if (!send_batches(s) && s->phase == PHASE_POLLING)
                cycle_complete(s);
}

/* The statement of this cycle's request, prepared as name. */
static void send_read(struct server_state *s, const char *name, pgconn_result_fn done) {
        struct snapshot_params params;

        snapshot_params_build(&s->req, &params);
        send_statement(s, PHASE_POLLING, SEND_PREPARED, name, NULL, SNAPSHOT_PARAMS,
                       (const char *const *) params.values, done);
        snapshot_params_free(&params);
}

/* A read's answer into s->snap; false when it failed (the server is failed). */
static bool read_done(struct server_state *s, PGresult *res, const char *what, bool graph) {
        if (result_failed(s, res, PGRES_TUPLES_OK, what))
                return false;
        snapshot_free(&s->snap);
        if (snapshot_from_result(res, &s->snap) < 0) {
                server_fail(s, what, "unexpected result shape");
                return false;
        }
        s->snap_received = loop_usec(s);
        s->snap.has_graph = graph;
        snapshot_note_request(&s->snap, &s->req);
        return true;
}

static void on_reread_done(void *userdata, PGresult *res) {
        struct server_state *s = userdata;
        if (read_done(s, res, "snapshot", false))
                judge_and_act(s);
}

static void on_graph_done(void *userdata, PGresult *res) {
        struct server_state *s = userdata;
        if (read_done(s, res, "lock graph", true))
                judge_and_act(s);
}

static void on_graph_prepared(void *userdata, PGresult *res) {
        struct server_state *s = userdata;
        if (result_failed(s, res, PGRES_COMMAND_OK, "lock graph"))
                return;
        s->graph_prepared = true;
        send_read(s, pg_lock_graph_name, on_graph_done);
}

/* The first read of a poll. A second one follows when plan_reread() says
 * so: the lock graph, or the idle sessions of a group over its cap. */
static void on_snapshot_done(void *userdata, PGresult *res) {
        struct server_state *s = userdata;
        int version = PQserverVersion(pgconn_pq(s->pg));
        const char *again;

        if (!read_done(s, res, "snapshot", false))
                return;
        again = plan_reread(s->server, &s->snap, version, &s->req);
        if (!again) {
                judge_and_act(s);
                return;
        }
        if (again == pg_snapshot_groups_sql) {
                send_read(s, pg_snapshot_groups_name, on_reread_done);
                return;
        }
        /* Prepared once per connection, the first time it is needed; its
         * text depends on the version (pg_locks.waitstart since 14). */
        if (!s->graph_prepared) {
                send_statement(s, PHASE_POLLING, SEND_PREPARE, pg_lock_graph_name, again, SNAPSHOT_PARAMS, NULL,
                               on_graph_prepared);
                return;
        }
        send_read(s, pg_lock_graph_name, on_graph_done);
}

static void server_poll(struct server_state *s) {
        _cleanup_free_ int32_t *pids = NULL;
        size_t n_pids = memory_watched_pids(&s->memory, &pids);

        snapshot_request_done(&s->req);
        plan_poll_request(s->config, s->server, pids, n_pids, &s->req);
        s->poll_started = clock_usec();
        send_read(s, plan_snapshot_sql(s->server) == pg_snapshot_groups_sql ? pg_snapshot_groups_name
                                                                              : pg_snapshot_name,
                  on_snapshot_done);
}

static int on_timer(sd_event_source *source, uint64_t usec, void *userdata) {
        struct server_state *s = userdata;

        if (s->retiring || s->stopping)
                return 0;
        switch (s->phase) {
        case PHASE_READY:
                if (PQstatus(pgconn_pq(s->pg)) == CONNECTION_OK) {
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
        pgconn_free(s->pg);
        sd_event_source_disable_unref(s->timer);
        memory_done(&s->memory);
        registry_leave(s->settings.registry, s->own);
        free(s);
}

struct server_state *server_new(sd_event *e, const struct server_settings *settings, const struct config *c,
                                const struct server *srv) {
        struct server_state *s = xcalloc(1, sizeof(*s));

        *s = (struct server_state) { .event = e, .settings = *settings, .config = c, .server = srv };
        s->own = registry_join(settings->registry);
        s->pg = pgconn_new(e, (struct pgconn_callbacks) {
                .connected = on_pg_connected, .failed = on_pg_failed, .notice = on_pg_notice, .userdata = s,
        });
        /* The first poll happens right away; accuracy 1us, as the default
         * (250ms) would defeat deadline scheduling. */
        if (!s->pg || sd_event_add_time(e, &s->timer, CLOCK_MONOTONIC, 0, 1, on_timer, s) < 0) {
                server_free(s);
                return NULL;
        }
        return s;
}

struct server_status server_status(const struct server_state *s) {
        return (struct server_status) {
                .name = s->server->name, .server = s->server, .up = s->ever_up && !s->down,
                .down = !(s->ever_up && !s->down) && (s->ever_up || s->down), .unprivileged = s->privileges_warned, .cycle_done = s->cycle_done,
                .cycle_failed = s->cycle_failed, .finished = s->finished,
        };
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
        log_cycle_cut_short(s, why);
        wind_down(s);
}

bool server_uses_config(const struct server_state *s, const struct config *c) {
        return s->config == c || s->next_config == c;
}
