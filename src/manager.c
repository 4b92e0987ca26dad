/* The daemon: one sd-event loop, one thread. The manager owns the
 * configurations (the running one, and retired ones a cycle in flight still
 * runs under), the servers (server.c), the signals, sd_notify and the
 * metrics file, and the registry of our own backends that the servers
 * share. Servers are opaque here: each is created with its settings, read
 * through server_status(), and hands each finished cycle up as a report. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>

#include "build-config.h"
#include "escape.h"
#include "journal.h"
#include "log.h"
#include "macro.h"
#include "manager.h"
#include "message-ids.h"
#include "metrics.h"
#include "registry.h"
#include "server.h"

#define USEC_PER_MSEC           UINT64_C(1000)
#define USEC_PER_SEC            UINT64_C(1000000)
#define METRICS_QUIET_USEC      USEC_PER_SEC
/* SIGTERM waits this long for action results in flight, so the stop stays
 * within a second (with the journal's flush at exit, LOG_EXIT_FLUSH_USEC);
 * what has not arrived by then is logged as unknown. */
#define STOP_GRACE_USEC         (600 * USEC_PER_MSEC)

struct manager {
        const struct manager_options *opts;
        struct config *config;
        struct server_state **servers;  /* each allocated alone: sd-event sources point at it */
        size_t n_servers;
        /* Servers a reload removed or changed, finishing an action in flight. */
        struct server_state **draining;
        size_t n_draining;
        /* Configurations replaced by a reload that a server still runs under. */
        struct config **retired;
        size_t n_retired;
        sd_event *event;
        sd_event_source *reap;          /* frees finished draining servers, outside their callbacks */
        sd_event_source *stop_timer;
        bool stopping;
        uint64_t sessions_ended;
        struct metrics *metrics;
        struct registry *registry;      /* our backends, per cluster: every server's peer */
        uint64_t metrics_written;       /* monotonic time of the last write */
        bool metrics_failing;           /* a write failure was logged */
};

static uint64_t now_usec(struct manager *m) {
        uint64_t t = 0;
        sd_event_now(m->event, CLOCK_MONOTONIC, &t);
        return t;
}

/* Every server, kept or draining, for the walks that need all of them. */
#define FOREACH_SERVER(m, s, i)                                                                           \
        for (size_t i = 0; i < (m)->n_servers + (m)->n_draining; i++)                                     \
                for (struct server_state *s = i < (m)->n_servers ? (m)->servers[i] : (m)->draining[i - (m)->n_servers]; \
                     s; s = NULL)

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
        metrics_set_journal_dropped(m->metrics, journal_dropped_total());
        r = metrics_write(m->metrics, m->config->metrics_file);
        if (r < 0 && !m->metrics_failing)
                log_warning(NULL, "cannot write metrics to %s: %s (logged once until it works again)",
                            m->config->metrics_file, strerror(-r));
        else if (r >= 0 && m->metrics_failing)
                log_info(NULL, "metrics written to %s again", m->config->metrics_file);
        m->metrics_failing = r < 0;
}

/* Append a server's name to a list for STATUS=, escaped: a newline in a
 * name would start a new notify field. */
static void status_append(char *list, size_t size, size_t *n, const char *name) {
        _cleanup_free_ char *safe = escape_string(name);
        size_t len = strlen(list);

        snprintf(list + len, size - len, "%s%s", (*n)++ ? ", " : "", safe ? safe : "?");
}

/* STATUS= for systemctl status: what is wrong now, not what once was. */
static void notify_status(struct manager *m) {
        char down[256] = "", unprivileged[256] = "";
        size_t up = 0, n_down = 0, n_unprivileged = 0;

        for (size_t i = 0; i < m->n_servers; i++) {
                struct server_status st = server_status(m->servers[i]);
                if (st.up)
                        up++;
                else if (st.down)
                        status_append(down, sizeof(down), &n_down, st.name);
                if (st.unprivileged)
                        status_append(unprivileged, sizeof(unprivileged), &n_unprivileged, st.name);
        }
        sd_notifyf(0, "STATUS=%zu/%zu servers up, %" PRIu64 " session%s ended%s%s%s%s", up, m->n_servers,
                   m->sessions_ended, m->sessions_ended == 1 ? "" : "s", n_down ? "; down: " : "", down,
                   n_unprivileged ? "; missing privileges: " : "", unprivileged);
}

/* Free the retired configurations no server runs under any more. */
static void release_retired(struct manager *m) {
        size_t kept = 0;

        for (size_t i = 0; i < m->n_retired; i++) {
                bool used = false;
                FOREACH_SERVER(m, s, k)
                        used = used || server_uses_config(s, m->retired[i]);
                if (used)
                        m->retired[kept++] = m->retired[i];
                else
                        config_free(m->retired[i]);
        }
        m->n_retired = kept;
}

static bool all_finished(struct manager *m) {
        FOREACH_SERVER(m, s, i)
                if (!server_status(s).finished)
                        return false;
        return true;
}

static void check_once_done(struct manager *m) {
        bool failed = false;

        for (size_t i = 0; i < m->n_servers; i++) {
                struct server_status st = server_status(m->servers[i]);
                if (!st.cycle_done)
                        return;
                failed = failed || st.cycle_failed;
        }
        sd_event_exit(m->event, failed ? 1 : 0);
}

/* A server finished a cycle (failed: the server is down). */
static void on_server_report(struct server_state *s, const struct server_report *r, void *userdata) {
        struct manager *m = userdata;
        const char *name = server_status(s).name;
        struct timespec wall;

        m->sessions_ended += r->ended;
        clock_gettime(CLOCK_REALTIME, &wall);
        metrics_count_poll(m->metrics, name, !r->failed, r->poll_usec,
                           (uint64_t) wall.tv_sec * USEC_PER_SEC + (uint64_t) wall.tv_nsec / 1000);
        if (r->failed)
                metrics_server_down(m->metrics, name);
        else
                metrics_set_up(m->metrics, name, true);
        write_metrics(m, r->failed || r->eventful);
        /* A finished server that is still listed is a stopping one; a
         * draining (retired) one is freed, outside its own callback. */
        if (r->finished && m->n_draining > 0)
                sd_event_source_set_enabled(m->reap, SD_EVENT_ONESHOT);
        if (m->stopping && all_finished(m)) {
                sd_event_exit(m->event, 0);
                return;
        }
        if (m->opts->once)
                check_once_done(m);
        else
                notify_status(m);
}

/* A retired server is freed: its series leave the metrics unless a
 * server of the same name runs on (its conninfo changed). */
static void free_retired(struct manager *m, struct server_state *s) {
        _cleanup_free_ char *name = xstrdup(server_status(s).name);
        bool named = false;

        server_free(s);
        for (size_t i = 0; i < m->n_servers && !named; i++)
                named = m->servers[i] && strcmp(server_status(m->servers[i]).name, name) == 0;
        for (size_t i = 0; i < m->n_draining && !named; i++)
                named = m->draining[i] && m->draining[i] != s && strcmp(server_status(m->draining[i]).name, name) == 0;
        if (!named)
                metrics_forget_server(m->metrics, name);
}

static int on_reap(sd_event_source *source, void *userdata) {
        struct manager *m = userdata;
        size_t kept = 0;

        for (size_t i = 0; i < m->n_draining; i++)
                if (server_status(m->draining[i]).finished)
                        free_retired(m, TAKE_PTR(m->draining[i]));
                else
                        m->draining[kept++] = m->draining[i];
        m->n_draining = kept;
        release_retired(m);
        return 0;
}

static size_t count_rules(const struct config *c) {
        size_t n = 0;
        for (size_t i = 0; i < c->n_servers; i++)
                n += c->servers[i].n_rules;
        return n;
}

/* A server that leaves the configuration: gone at once, or once the action
 * it has in flight is answered and logged. */
static void retire(struct manager *m, struct server_state *s) {
        server_retire(s);
        if (server_status(s).finished) {
                free_retired(m, s);
                return;
        }
        m->draining = xreallocarray(m->draining, m->n_draining + 1, sizeof(*m->draining));
        m->draining[m->n_draining++] = s;
}

static struct server_state *new_server(struct manager *m, const struct config *c, const struct server *srv) {
        struct server_settings settings = {
                .dry_run = m->opts->dry_run, .once = m->opts->once, .metrics = m->metrics,
                .registry = m->registry, .report = on_server_report, .userdata = m,
        };
        return server_new(m->event, &settings, c, srv);
}

/* Swap in a new configuration. Servers whose name and conninfo did not
 * change keep their connection and their memories (by rule name); a cycle
 * in flight finishes under the configuration it started with. Other servers
 * are closed (after their action in flight) or opened. */
static int apply_config(struct manager *m, struct config *c) {
        struct server_state **next = xcalloc(c->n_servers + 1, sizeof(*next));
        _cleanup_free_ struct server_state **going = NULL;
        size_t added = 0, changed = 0, removed = 0, kept = 0, n_going = 0;

        for (size_t i = 0; i < c->n_servers; i++) {
                const struct server *srv = &c->servers[i];
                bool conninfo_changed = false;

                for (size_t k = 0; k < m->n_servers && !next[i]; k++) {
                        struct server_state *s = m->servers[k];
                        const struct server *was = s ? server_status(s).server : NULL;
                        if (!s || strcmp(was->name, srv->name) != 0)
                                continue;
                        if (strcmp(was->conninfo, srv->conninfo) != 0) {
                                conninfo_changed = true;
                                continue;
                        }
                        next[i] = TAKE_PTR(m->servers[k]);
                }
                if (next[i]) {
                        server_reconfigure(next[i], c, srv);
                        kept++;
                        continue;
                }
                changed += conninfo_changed;
                added += !conninfo_changed;
                next[i] = new_server(m, c, srv);
                if (!next[i])
                        return -ENOMEM;
        }
        /* Retired once the new list is in place: a server whose name runs
         * on (its conninfo changed) keeps its series in the metrics. */
        going = xcalloc(m->n_servers + 1, sizeof(*going));
        for (size_t k = 0; k < m->n_servers; k++)
                if (m->servers[k]) {
                        bool still_named = false;
                        for (size_t i = 0; i < c->n_servers; i++)
                                still_named = still_named || strcmp(c->servers[i].name, server_status(m->servers[k]).name) == 0;
                        removed += !still_named;
                        going[n_going++] = TAKE_PTR(m->servers[k]);
                }
        free(m->servers);
        m->servers = next;
        m->n_servers = c->n_servers;
        for (size_t k = 0; k < n_going; k++)
                retire(m, going[k]);

        m->retired = xreallocarray(m->retired, m->n_retired + 1, sizeof(*m->retired));
        m->retired[m->n_retired++] = m->config;
        m->config = c;
        release_retired(m);

        log_event(LOG_INFO, MESSAGE_ID_RELOAD_OK, NULL,
                  "configuration reloaded: %zu servers (%zu kept, %zu added, %zu changed, %zu removed), %zu rules",
                  c->n_servers, kept, added, changed, removed, count_rules(c));
        return 0;
}

static int on_stop_timeout(sd_event_source *source, uint64_t usec, void *userdata) {
        struct manager *m = userdata;

        FOREACH_SERVER(m, s, i)
                server_give_up_action(s, "pgsweeper stopped before the result arrived");
        return sd_event_exit(m->event, 0);
}

/* SIGTERM: no new cycle anywhere; an action already sent is waited for
 * (bounded), so that what it did is logged. */
static int on_exit_signal(sd_event_source *source, const struct signalfd_siginfo *si, void *userdata) {
        struct manager *m = userdata;

        if (m->stopping)
                return 0;
        m->stopping = true;
        sd_notify(0, "STOPPING=1");
        log_event(LOG_INFO, MESSAGE_ID_STOPPED, NULL, "stopping on %s", strsignal((int) si->ssi_signo));
        FOREACH_SERVER(m, s, i)
                server_stop(s);
        if (all_finished(m))
                return sd_event_exit(m->event, 0);
        return sd_event_add_time_relative(m->event, &m->stop_timer, CLOCK_MONOTONIC, STOP_GRACE_USEC, USEC_PER_MSEC,
                                          on_stop_timeout, m);
}

static int on_reload(sd_event_source *source, const struct signalfd_siginfo *si, void *userdata) {
        struct manager *m = userdata;
        struct diagnostics diag = {};
        struct config *c = NULL;
        int r;

        if (m->stopping)
                return 0;
        sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%" PRIu64, now_usec(m));
        r = config_load(m->opts->config_path, &c, &diag);
        for (size_t i = 0; i < diag.n_lines; i++)
                log_diagnostic(r < 0 ? LOG_ERR : LOG_WARNING, diag.lines[i]);
        metrics_count_reload(m->metrics, r >= 0);
        if (r < 0) {
                /* which files: the main one, or included ones (log_event escapes) */
                _cleanup_free_ char *files = NULL;
                for (size_t i = 0; i < diag.n_error_files; i++) {
                        char *more = xasprintf("%s%s%s", files ? files : "", i ? ", " : "", diag.error_files[i]);
                        free(files);
                        files = more;
                }
                log_event(LOG_ERR, MESSAGE_ID_RELOAD_FAILED, NULL,
                          "reload failed (errors in %s), keeping the running configuration", files ? files : "?");
        } else if (apply_config(m, c) < 0) {
                diagnostics_clear(&diag);
                return sd_event_exit(m->event, 1);
        }
        diagnostics_clear(&diag);
        write_metrics(m, true);
        sd_notify(0, "READY=1");
        notify_status(m);
        return 0;
}

static void servers_free(struct manager *m) {
        FOREACH_SERVER(m, s, i)
                server_free(s);
        free(m->servers);
        free(m->draining);
        m->servers = m->draining = NULL;
        m->n_servers = m->n_draining = 0;
}

static int servers_start(struct manager *m) {
        m->n_servers = m->config->n_servers;
        m->servers = xcalloc(m->n_servers, sizeof(*m->servers));
        for (size_t i = 0; i < m->n_servers; i++)
                if (!(m->servers[i] = new_server(m, m->config, &m->config->servers[i])))
                        return -ENOMEM;
        return 0;
}

int manager_run(const struct manager_options *opts, struct config *config) {
        struct manager m = { .opts = opts, .config = config, .metrics = metrics_new(), .registry = registry_new() };
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
            (r = sd_event_add_signal(m.event, NULL, SIGINT, on_exit_signal, &m)) < 0 ||
            (r = sd_event_add_defer(m.event, &m.reap, on_reap, &m)) < 0 ||
            (r = sd_event_source_set_enabled(m.reap, SD_EVENT_OFF)) < 0)
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
                notify_status(&m);      /* "0/N servers up" until the first one answers */
        }
        r = sd_event_loop(m.event);
        if (r < 0)
                goto fail;
        write_metrics(&m, true);
out:
        servers_free(&m);
        for (size_t i = 0; i < m.n_retired; i++)
                config_free(m.retired[i]);
        free(m.retired);
        config_free(m.config);
        metrics_free(m.metrics);
        registry_free(m.registry);
        sd_event_source_disable_unref(m.reap);
        sd_event_source_disable_unref(m.stop_timer);
        log_flush_at_exit(LOG_EXIT_FLUSH_USEC);  /* last: entries logged while stopping too */
        sd_event_unref(m.event);
        return r;
fail:
        log_error(NULL, "event loop: %s", strerror(-r));
        r = 1;
        goto out;
}
