#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "build-config.h"
#include "macro.h"
#include "metrics.h"

/* A decision's result, or (outcome >= 0) what became of the session of an
 * unknown one. */
struct action_series {
        char *server, *rule;
        enum action action;
        enum result result;
        int outcome;                /* enum outcome, or -1 */
        uint64_t count;
};

struct server_series {
        char *server;
        uint64_t polls, poll_errors;
        uint64_t last_poll_usec;
        uint64_t last_poll_end;     /* CLOCK_REALTIME usec; 0: no poll yet */
        bool up;
        int privileges_ok;          /* -1: not known yet */
        int in_recovery;            /* -1: not known yet */
        int64_t connections, connection_slots;   /* at the last poll; -1: not known yet */
        bool has_horizon;                        /* a poll read the horizon */
        int64_t horizon_age[_HOLDER_MAX];        /* -1: none holds one */
};

struct metrics {
        struct action_series *actions;
        size_t n_actions;
        struct server_series *servers;
        size_t n_servers;
        uint64_t reloads_ok, reloads_failed;
        uint64_t journal_dropped;
};

struct metrics *metrics_new(void) {
        return xcalloc(1, sizeof(struct metrics));
}

void metrics_free(struct metrics *m) {
        if (!m)
                return;
        for (size_t i = 0; i < m->n_actions; i++) {
                free(m->actions[i].server);
                free(m->actions[i].rule);
        }
        for (size_t i = 0; i < m->n_servers; i++)
                free(m->servers[i].server);
        free(m->actions);
        free(m->servers);
        free(m);
}

static struct server_series *server_series(struct metrics *m, const char *server) {
        for (size_t i = 0; i < m->n_servers; i++)
                if (strcmp(m->servers[i].server, server) == 0)
                        return &m->servers[i];
        m->servers = xreallocarray(m->servers, m->n_servers + 1, sizeof(*m->servers));
        m->servers[m->n_servers] = (struct server_series) { .server = xstrdup(server), .privileges_ok = -1,
                                                            .in_recovery = -1, .connections = -1,
                                                            .connection_slots = -1 };
        return &m->servers[m->n_servers++];
}

static void count_action(struct metrics *m, const char *server, const char *rule, enum action a, enum result r,
                         int outcome) {
        for (size_t i = 0; i < m->n_actions; i++) {
                struct action_series *s = &m->actions[i];
                if (s->action == a && s->result == r && s->outcome == outcome && strcmp(s->server, server) == 0 &&
                    strcmp(s->rule, rule) == 0) {
                        s->count++;
                        return;
                }
        }
        m->actions = xreallocarray(m->actions, m->n_actions + 1, sizeof(*m->actions));
        m->actions[m->n_actions++] = (struct action_series) {
                .server = xstrdup(server), .rule = xstrdup(rule), .action = a, .result = r, .outcome = outcome,
                .count = 1,
        };
}

void metrics_count_result(struct metrics *m, const char *server, const char *rule, enum action a, enum result r) {
        count_action(m, server, rule, a, r, -1);
}

void metrics_count_outcome(struct metrics *m, const char *server, const char *rule, enum action a, enum outcome o) {
        count_action(m, server, rule, a, RESULT_UNKNOWN, (int) o);
}

void metrics_count_poll(struct metrics *m, const char *server, bool ok, uint64_t duration_usec,
                        uint64_t realtime_usec) {
        struct server_series *s = server_series(m, server);

        s->polls++;
        s->last_poll_end = realtime_usec;
        if (!ok)
                s->poll_errors++;
        else
                s->last_poll_usec = duration_usec;
}

void metrics_set_up(struct metrics *m, const char *server, bool up) {
        server_series(m, server)->up = up;
}

void metrics_set_privileges(struct metrics *m, const char *server, bool ok) {
        server_series(m, server)->privileges_ok = ok;
}

void metrics_forget_server(struct metrics *m, const char *server) {
        size_t kept = 0;

        for (size_t i = 0; i < m->n_actions; i++)
                if (strcmp(m->actions[i].server, server) == 0) {
                        free(m->actions[i].server);
                        free(m->actions[i].rule);
                } else
                        m->actions[kept++] = m->actions[i];
        m->n_actions = kept;
        kept = 0;
        for (size_t i = 0; i < m->n_servers; i++)
                if (strcmp(m->servers[i].server, server) == 0)
                        free(m->servers[i].server);
                else
                        m->servers[kept++] = m->servers[i];
        m->n_servers = kept;
}

void metrics_server_down(struct metrics *m, const char *server) {
        struct server_series *s = server_series(m, server);

        s->up = false;
        s->in_recovery = -1;
        s->connections = s->connection_slots = -1;
        s->has_horizon = false;
}

void metrics_set_horizon(struct metrics *m, const char *server, const int64_t age[_HOLDER_MAX]) {
        struct server_series *s = server_series(m, server);

        s->has_horizon = age != NULL;
        if (age)
                memcpy(s->horizon_age, age, sizeof(s->horizon_age));
}

void metrics_set_connections(struct metrics *m, const char *server, int64_t connections, int64_t slots) {
        struct server_series *s = server_series(m, server);
        s->connections = connections;
        s->connection_slots = slots;
}

void metrics_set_in_recovery(struct metrics *m, const char *server, bool in_recovery) {
        server_series(m, server)->in_recovery = in_recovery;
}

void metrics_count_reload(struct metrics *m, bool ok) {
        if (ok)
                m->reloads_ok++;
        else
                m->reloads_failed++;
}

void metrics_set_journal_dropped(struct metrics *m, uint64_t n) {
        m->journal_dropped = n;
}

/* A label value: backslash, double quote and newline escaped. */
static void label(FILE *f, const char *name, const char *value, bool first) {
        fprintf(f, "%s%s=\"", first ? "" : ",", name);
        for (const char *c = value; *c; c++) {
                if (*c == '\\' || *c == '"')
                        fputc('\\', f);
                if (*c == '\n')
                        fputs("\\n", f);
                else
                        fputc(*c, f);
        }
        fputc('"', f);
}

static void header(FILE *f, const char *name, const char *type, const char *help) {
        fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Per-server values, printed by server_family(). */
static void polls_value(FILE *f, const struct server_series *s) {
        fprintf(f, "%" PRIu64, s->polls);
}

static void poll_errors_value(FILE *f, const struct server_series *s) {
        fprintf(f, "%" PRIu64, s->poll_errors);
}

static void up_value(FILE *f, const struct server_series *s) {
        fprintf(f, "%d", s->up ? 1 : 0);
}

static void privileges_value(FILE *f, const struct server_series *s) {
        fprintf(f, "%d", s->privileges_ok);
}

static void duration_value(FILE *f, const struct server_series *s) {
        fprintf(f, "%" PRIu64 ".%06" PRIu64, s->last_poll_usec / 1000000, s->last_poll_usec % 1000000);
}

static void last_poll_value(FILE *f, const struct server_series *s) {
        fprintf(f, "%" PRIu64 ".%06" PRIu64, s->last_poll_end / 1000000, s->last_poll_end % 1000000);
}

/* One metric family with a sample per server. */
static void server_family(FILE *f, const struct metrics *m, const char *name, const char *type, const char *help,
                          void (*value)(FILE *f, const struct server_series *s)) {
        header(f, name, type, help);
        for (size_t i = 0; i < m->n_servers; i++) {
                fprintf(f, "%s{", name);
                label(f, "server", m->servers[i].server, true);
                fputs("} ", f);
                value(f, &m->servers[i]);
                fputc('\n', f);
        }
}

static void action_family(FILE *f, const struct metrics *m, const char *name, bool outcomes) {
        for (size_t i = 0; i < m->n_actions; i++) {
                const struct action_series *s = &m->actions[i];
                if ((s->outcome >= 0) != outcomes)
                        continue;
                fprintf(f, "%s{", name);
                label(f, "server", s->server, true);
                label(f, "rule", s->rule, false);
                label(f, "action", action_to_string(s->action), false);
                if (outcomes)
                        label(f, "outcome", outcome_to_string((enum outcome) s->outcome), false);
                else
                        label(f, "result", result_to_string(s->result), false);
                fprintf(f, "} %" PRIu64 "\n", s->count);
        }
}

/* A gauge known once a poll said it: absent before. */
static void known_gauge(FILE *f, const struct metrics *m, const char *family, const char *help, size_t offset) {
        header(f, family, "gauge", help);
        for (size_t i = 0; i < m->n_servers; i++) {
                int64_t v = *(const int64_t *) ((const char *) &m->servers[i] + offset);
                if (v < 0)
                        continue;
                fprintf(f, "%s{", family);
                label(f, "server", m->servers[i].server, true);
                fprintf(f, "} %" PRId64 "\n", v);
        }
}


void metrics_format(const struct metrics *m, FILE *f) {
        header(f, "pgsweeper_build_info", "gauge", "pgsweeper version; always 1.");
        fprintf(f, "pgsweeper_build_info{");
        label(f, "version", PACKAGE_VERSION, true);
        fprintf(f, "} 1\n");

        header(f, "pgsweeper_actions_total", "counter",
               "Decisions on sessions by server, rule, action and result.");
        action_family(f, m, "pgsweeper_actions_total", false);
        header(f, "pgsweeper_unknown_outcomes_total", "counter",
               "Sessions of unknown results by what the next snapshot showed: gone or present.");
        action_family(f, m, "pgsweeper_unknown_outcomes_total", true);

        server_family(f, m, "pgsweeper_polls_total", "counter", "Polls per server (connection attempts included), counted when each ends.", polls_value);
        server_family(f, m, "pgsweeper_poll_errors_total", "counter",
                      "Polls that failed (connection, timeout, query).", poll_errors_value);
        server_family(f, m, "pgsweeper_server_up", "gauge", "1 when the last connection attempt or poll succeeded.",
                      up_value);
        server_family(f, m, "pgsweeper_server_privileges_ok", "gauge",
                      "1 when pgsweeper's role has pg_monitor and pg_signal_backend there, 0 when not, "
                      "-1 before the first connection.", privileges_value);
        server_family(f, m, "pgsweeper_last_poll_duration_seconds", "gauge",
                      "Wall time of the last successful poll, from sending the snapshot to the end of the "
                      "judgement (the action's round trip is not included).", duration_value);
        header(f, "pgsweeper_last_poll_timestamp_seconds", "gauge",
               "Unix time when the last poll of the server (or attempt to connect to it) ended, successful "
               "or not: staleness means pgsweeper stopped polling; absent before the first.");
        for (size_t i = 0; i < m->n_servers; i++) {
                if (m->servers[i].last_poll_end == 0)
                        continue;
                fputs("pgsweeper_last_poll_timestamp_seconds{", f);
                label(f, "server", m->servers[i].server, true);
                fputs("} ", f);
                last_poll_value(f, &m->servers[i]);
                fputc('\n', f);
        }
        header(f, "pgsweeper_server_in_recovery", "gauge",
               "1 when the server was a standby (pg_is_in_recovery()) at the last poll, 0 when a primary; "
               "absent before the first poll and while the server is down.");
        for (size_t i = 0; i < m->n_servers; i++) {
                if (m->servers[i].in_recovery < 0)
                        continue;
                fputs("pgsweeper_server_in_recovery{", f);
                label(f, "server", m->servers[i].server, true);
                fprintf(f, "} %d\n", m->servers[i].in_recovery);
        }
        known_gauge(f, m, "pgsweeper_server_connections",
                    "Client backends at the last poll (superusers and pgsweeper's own included): what fills the "
                    "connection slots; absent before the first poll and while the server is down.",
                    offsetof(struct server_series, connections));
        known_gauge(f, m, "pgsweeper_server_connection_slots",
                    "Usable connection slots at the last poll: max_connections - superuser_reserved_connections "
                    "- reserved_connections (16+); absent before the first poll and while the server is down.",
                    offsetof(struct server_series, connection_slots));
        header(f, "pgsweeper_horizon_age", "gauge",
               "Age in transactions of the oldest xmin held by each kind of holder (session: a backend; "
               "prepared: a prepared transaction; slot: a replication slot), 0 when none holds one; only for "
               "servers with a max_xmin_age rule, from their first poll, absent while the server is down.");
        for (size_t i = 0; i < m->n_servers; i++)
                for (enum holder_kind k = 0; m->servers[i].has_horizon && k < _HOLDER_MAX; k++) {
                        fputs("pgsweeper_horizon_age{", f);
                        label(f, "server", m->servers[i].server, true);
                        label(f, "holder", holder_kind_to_string(k), false);
                        fprintf(f, "} %" PRId64 "\n", m->servers[i].horizon_age[k] < 0 ? 0 : m->servers[i].horizon_age[k]);
                }
        header(f, "pgsweeper_config_reloads_total", "counter", "Configuration reloads by result.");
        fprintf(f, "pgsweeper_config_reloads_total{result=\"ok\"} %" PRIu64 "\n", m->reloads_ok);
        fprintf(f, "pgsweeper_config_reloads_total{result=\"failed\"} %" PRIu64 "\n", m->reloads_failed);
        header(f, "pgsweeper_journal_dropped_total", "counter",
               "Log entries the journal did not take in time (its queue was full, or at exit): written to stderr.");
        fprintf(f, "pgsweeper_journal_dropped_total %" PRIu64 "\n", m->journal_dropped);
}

int metrics_write(const struct metrics *m, const char *path) {
        _cleanup_free_ char *tmp = NULL;
        FILE *f;
        int fd, r = 0;

        /* Same directory as the target, so rename(2) is atomic. */
        if (asprintf(&tmp, "%s.tmp.%d", path, (int) getpid()) < 0)
                return -ENOMEM;
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0)
                return -errno;
        if (fchmod(fd, 0644) < 0) {
                r = -errno;
                close(fd);
                unlink(tmp);
                return r;
        }
        f = fdopen(fd, "w");
        if (!f) {
                r = -errno;
                close(fd);
                unlink(tmp);
                return r;
        }
        metrics_format(m, f);
        if (fflush(f) != 0 || ferror(f))
                r = -EIO;
        if (fclose(f) != 0 && r == 0)
                r = -errno;
        if (r == 0 && rename(tmp, path) < 0)
                r = -errno;
        if (r < 0)
                unlink(tmp);
        return r;
}
