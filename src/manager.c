/* The daemon: one sd-event loop, one timer per server, signals, reload.
 * This is the only module with mutable state that outlives a call. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>
#include <time.h>

#include "build-config.h"
#include "enforce.h"
#include "log.h"
#include "manager.h"
#include "message-ids.h"
#include "pg.h"
#include "policy.h"

#define STATEMENT_TIMEOUT "10s"

struct manager;

struct server_state {
        struct manager *manager;
        const struct server *server;    /* points into manager->config */
        PGconn *conn;
        int32_t backend_pid;
        bool was_up;                    /* connected at the end of the last attempt */
        bool tried;                     /* at least one attempt made */
        sd_event_source *timer;
};

struct manager {
        const struct manager_options *opts;
        struct config *config;
        struct server_state *servers;
        size_t n_servers;
        sd_event *event;
        uint64_t sessions_ended;
};

static uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}

static void server_disconnect(struct server_state *s) {
        if (s->conn)
                PQfinish(s->conn);
        s->conn = NULL;
        s->backend_pid = 0;
}

/* Log a connection problem once per change of state, not once per attempt. */
static void server_down(struct server_state *s, const char *what, const char *error) {
        if (s->was_up)
                log_event(LOG_ERR, MESSAGE_ID_SERVER_LOST, s->server->name, "connection lost: %s: %s", what, error);
        else if (!s->tried)
                log_event(LOG_ERR, MESSAGE_ID_SERVER_LOST, s->server->name, "could not connect: %s", error);
        else
                log_debug(s->server->name, "still unreachable: %s: %s", what, error);
        s->was_up = false;
        s->tried = true;
        server_disconnect(s);
}

static int server_connect(struct server_state *s) {
        PGresult *res;

        if (s->conn && PQstatus(s->conn) == CONNECTION_OK)
                return 0;
        server_disconnect(s);
        s->conn = pg_connect(s->server->conninfo);
        if (!s->conn || PQstatus(s->conn) != CONNECTION_OK) {
                server_down(s, "connect", s->conn ? PQerrorMessage(s->conn) : "out of memory");
                return -EIO;
        }
        /* A poll must never hang on a stuck server: bound our own statements. */
        res = PQexec(s->conn, "SET statement_timeout = '" STATEMENT_TIMEOUT "'");
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
                PQclear(res);
                server_down(s, "connect", PQerrorMessage(s->conn));
                return -EIO;
        }
        PQclear(res);
        s->backend_pid = PQbackendPID(s->conn);
        log_event(LOG_INFO, s->tried && !s->was_up ? MESSAGE_ID_SERVER_RESTORED : MESSAGE_ID_SERVER_CONNECTED,
                  s->server->name, "%s (server version %d, backend pid %" PRId32 ")",
                  s->tried && !s->was_up ? "connection restored" : "connected", PQserverVersion(s->conn),
                  s->backend_pid);
        s->was_up = true;
        s->tried = true;
        return 0;
}

/* pgsweeper's own backends on every server: never judged. */
static int32_t *own_pids(struct manager *m, size_t *ret_n) {
        int32_t *pids = xcalloc(m->n_servers, sizeof(int32_t));
        size_t n = 0;

        for (size_t i = 0; i < m->n_servers; i++)
                if (m->servers[i].conn && m->servers[i].backend_pid > 0)
                        pids[n++] = m->servers[i].backend_pid;
        *ret_n = n;
        return pids;
}

/* One cycle against one server: snapshot, judge, act, log. Returns the
 * delay until the next cycle in microseconds, or a negative errno. */
static int64_t server_cycle(struct server_state *s) {
        struct manager *m = s->manager;
        const struct server *srv = s->server;
        struct snapshot snap = {};
        struct judgement j = { .next_deadline = INT64_MAX };
        _cleanup_free_ enum result *results = NULL;
        _cleanup_free_ int32_t *own = NULL;
        const char *error = NULL;
        int64_t delay = srv->interval_ms * 1000;
        struct policy_input in = { .server = srv, .dry_run = m->config->dry_run || m->opts->dry_run };

        if (server_connect(s) < 0)
                return -EIO;

        if (pg_snapshot(s->conn, false, &snap, &error) < 0) {
                server_down(s, "snapshot", error);
                return -EIO;
        }
        own = own_pids(m, &in.n_own_pids);
        in.own_pids = own;
        policy_judge(&in, &snap, &j);

        results = xcalloc(j.n_decisions + 1, sizeof(*results));
        if (enforce(s->conn, &j, results, &error) < 0)
                log_error(srv->name, "action statement failed: %s", error);
        for (size_t i = 0; i < j.n_decisions; i++) {
                log_decision(srv->name, &j.decisions[i], results[i]);
                if (results[i] == RESULT_TERMINATED || results[i] == RESULT_CANCELLED)
                        m->sessions_ended++;
        }

        /* Wake when the first observed session crosses a limit, not one interval late. */
        if (j.next_deadline != INT64_MAX && snap.now != TS_NULL) {
                int64_t until = j.next_deadline - snap.now;
                if (until < delay)
                        delay = until;
        }
        if (delay < m->config->min_interval_ms * 1000)
                delay = m->config->min_interval_ms * 1000;

        judgement_free(&j);
        snapshot_free(&snap);
        if (PQstatus(s->conn) != CONNECTION_OK)
                server_down(s, "action", PQerrorMessage(s->conn));
        return delay;
}

static void notify_status(struct manager *m) {
        size_t up = 0;

        for (size_t i = 0; i < m->n_servers; i++)
                up += m->servers[i].was_up;
        sd_notifyf(0, "STATUS=%zu/%zu servers up, %" PRIu64 " sessions ended", up, m->n_servers, m->sessions_ended);
}

static int on_timer(sd_event_source *source, uint64_t usec, void *userdata) {
        struct server_state *s = userdata;
        uint64_t start = now_usec();
        int64_t delay = server_cycle(s);

        if (delay < 0)
                delay = s->server->interval_ms * 1000;
        sd_event_source_set_time(source, start + (uint64_t) delay);
        sd_event_source_set_enabled(source, SD_EVENT_ONESHOT);
        notify_status(s->manager);
        return 0;
}

static void servers_stop(struct manager *m) {
        for (size_t i = 0; i < m->n_servers; i++) {
                server_disconnect(&m->servers[i]);
                sd_event_source_disable_unref(m->servers[i].timer);
        }
        free(m->servers);
        m->servers = NULL;
        m->n_servers = 0;
}

static int servers_start(struct manager *m) {
        m->n_servers = m->config->n_servers;
        m->servers = xcalloc(m->n_servers, sizeof(*m->servers));
        for (size_t i = 0; i < m->n_servers; i++) {
                struct server_state *s = &m->servers[i];
                int r;

                *s = (struct server_state) { .manager = m, .server = &m->config->servers[i] };
                if (!m->event)
                        continue;
                /* The first poll of every server happens at start-up. */
                r = sd_event_add_time(m->event, &s->timer, CLOCK_MONOTONIC, 0, 1000, on_timer, s);
                if (r < 0)
                        return r;
        }
        return 0;
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

        sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%" PRIu64, now_usec());
        r = config_load(m->opts->config_path, &c, &diag);
        for (size_t i = 0; i < diag.n_lines; i++)
                log_event(r < 0 ? LOG_ERR : LOG_WARNING, NULL, NULL, "%s", diag.lines[i]);
        diagnostics_clear(&diag);
        if (r < 0) {
                log_event(LOG_ERR, MESSAGE_ID_RELOAD_FAILED, NULL,
                          "reload failed, keeping the running configuration");
        } else {
                servers_stop(m);
                config_free(m->config);
                m->config = c;
                r = servers_start(m);
                if (r < 0)
                        return sd_event_exit(m->event, 1);
                log_event(LOG_INFO, MESSAGE_ID_RELOAD_OK, NULL, "configuration reloaded, servers: %zu",
                          m->config->n_servers);
        }
        sd_notify(0, "READY=1");
        return 0;
}

static int run_once(struct manager *m) {
        int failed = 0;

        for (size_t i = 0; i < m->n_servers; i++)
                if (server_cycle(&m->servers[i]) < 0)
                        failed++;
        return failed ? 1 : 0;
}

static int run_daemon(struct manager *m) {
        sigset_t mask;
        int r;

        /* libsystemd 252 needs the signals blocked before it can own them. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        sigprocmask(SIG_BLOCK, &mask, NULL);

        r = sd_event_default(&m->event);
        if (r < 0)
                goto fail;
        if ((r = sd_event_add_signal(m->event, NULL, SIGTERM, on_exit_signal, m)) < 0 ||
            (r = sd_event_add_signal(m->event, NULL, SIGINT, on_exit_signal, m)) < 0 ||
            (r = sd_event_add_signal(m->event, NULL, SIGHUP, on_reload, m)) < 0)
                goto fail;
        r = sd_event_set_watchdog(m->event, true);
        if (r < 0)
                goto fail;
        r = servers_start(m);
        if (r < 0)
                goto fail;

        log_event(LOG_INFO, MESSAGE_ID_STARTED, NULL, "pgsweeper %s started, servers: %zu%s", PACKAGE_VERSION,
                  m->n_servers, m->config->dry_run || m->opts->dry_run ? " (dry run)" : "");
        sd_notify(0, "READY=1");
        r = sd_event_loop(m->event);
        if (r < 0)
                goto fail;
        return r;
fail:
        log_error(NULL, "event loop: %s", strerror(-r));
        return 1;
}

int manager_run(const struct manager_options *opts, struct config *config) {
        struct manager m = { .opts = opts, .config = config };
        int code;

        if (opts->once) {
                servers_start(&m);
                code = run_once(&m);
        } else
                code = run_daemon(&m);

        servers_stop(&m);
        config_free(m.config);
        sd_event_unref(m.event);
        return code;
}
