/* What each event says: its fields and its one line, for the journal
 * (journal.c) or stderr. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "duration.h"
#include "escape.h"
#include "journal.h"
#include "log.h"
#include "message-ids.h"

static bool use_journal;
static int max_priority = LOG_INFO;

static const char *const target_names[_LOG_TARGET_MAX] = {
        [LOG_TARGET_AUTO] = "auto",
        [LOG_TARGET_JOURNAL] = "journal",
        [LOG_TARGET_STDERR] = "stderr",
};

DEFINE_STRING_TABLE_FROM_STRING(log_target, target_names)

/* Is stderr the journal's stream (systemd sets JOURNAL_STREAM=dev:ino)? */
static bool stderr_is_journal(void) {
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st) < 0)
                return false;
        return (unsigned long long) st.st_dev == dev && (unsigned long long) st.st_ino == ino;
}

void log_setup(enum log_target target, int priority) {
        max_priority = priority;
        switch (target) {
        case LOG_TARGET_JOURNAL:
                use_journal = true;
                break;
        case LOG_TARGET_STDERR:
                use_journal = false;
                break;
        default:
                use_journal = stderr_is_journal() || !isatty(STDERR_FILENO);
        }
}

bool log_to_journal(void) {
        return use_journal;
}

/* The one way out for every event: line is one escaped line, the MESSAGE
 * and the stderr form. */
static void emit_line(int priority, const char *message_id, struct fields *data, bool important, const char *line) {
        if (!use_journal) {
                fprintf(stderr, "%s\n", line);
                fflush(stderr);
                return;
        }
        journal_emit(priority, message_id, line, data, important);
}

/* The text, bytes from servers and users included, is escaped once into the
 * line. The fields of data keep those bytes raw, so an exact match on a role
 * name finds it. */
static void emit(int priority, const char *message_id, struct fields *data, bool important, const char *fmt, ...)
        _printf_(5, 6);
static void emit(int priority, const char *message_id, struct fields *data, bool important, const char *fmt, ...) {
        _cleanup_free_ char *raw = NULL, *line = NULL;
        va_list ap;

        va_start(ap, fmt);
        raw = xvasprintf(fmt, ap);
        va_end(ap);
        line = escape_string(raw);
        emit_line(priority, message_id, data, important, line);
}

void log_event(int priority, const char *message_id, const char *server, const char *fmt, ...) {
        _cleanup_(fields_free) struct fields f = {};
        _cleanup_free_ char *msg = NULL;
        va_list ap;

        if (priority > max_priority)
                return;
        va_start(ap, fmt);
        msg = xvasprintf(fmt, ap);
        va_end(ap);
        /* libpq messages end with a newline and may span lines: one line is easier to read and grep */
        join_lines(msg);
        if (server)
                field_add(&f, "PGSWEEPER_SERVER", "%s", server);
        emit(priority, message_id, &f, priority <= LOG_NOTICE, "%s: %s", server ? server : "pgsweeper", msg);
}

void log_diagnostic(int priority, const char *line) {
        _cleanup_(fields_free) struct fields f = {};
        _cleanup_free_ char *text = NULL;

        if (priority > max_priority)
                return;
        /* escaped by config_report() already: escaping it again would double its backslashes */
        text = xasprintf("pgsweeper: %s", line);
        emit_line(priority, NULL, &f, priority <= LOG_NOTICE, text);
}

void log_server_role(const char *server, enum server_role previous, enum server_role now) {
        _cleanup_(fields_free) struct fields f = {};
        const char *what = now == ROLE_STANDBY ? "standby (in recovery)" : "primary";
        int priority = previous == ROLE_ANY ? LOG_INFO : LOG_NOTICE;

        if (priority > max_priority)
                return;
        if (previous != ROLE_ANY)
                field_add(&f, "PGSWEEPER_PREVIOUS_ROLE", "%s", server_role_to_string(previous));
        field_add(&f, "PGSWEEPER_SERVER", "%s", server);
        field_add(&f, "PGSWEEPER_SERVER_ROLE", "%s", server_role_to_string(now));
        if (previous == ROLE_ANY)
                /* The first sighting is not a change: it has no MESSAGE_ID of its own. */
                emit(priority, NULL, &f, priority <= LOG_NOTICE, "%s: server is a %s", server, what);
        else
                emit(priority, MESSAGE_ID_ROLE_CHANGED, &f, priority <= LOG_NOTICE,
                     "%s: server role changed from %s to %s", server, server_role_to_string(previous), what);
}

void log_chain_warning(const char *server, const struct chain_warning *w) {
        _cleanup_(fields_free) struct fields f = {};
        const struct snapshot_row *row = w->row;
        char wait[DURATION_FORMAT_MAX], limit[DURATION_FORMAT_MAX], who[512];

        if (LOG_WARNING > max_priority)
                return;
        duration_format(w->wait_ms, wait, sizeof(wait));
        duration_format(w->rule->limit_ms[LIMIT_BLOCKING], limit, sizeof(limit));
        if (row)
                snprintf(who, sizeof(who), "pid %" PRId32 " (user %s, db %s, app %s, %s)", w->pid,
                         *row->user ? row->user : "-", *row->database ? row->database : "-",
                         *row->application ? row->application : "-", *row->client_addr ? row->client_addr : "-");
        else
                snprintf(who, sizeof(who), "pid %" PRId32, w->pid);
        field_add(&f, "PGSWEEPER_SERVER", "%s", server);
        field_add(&f, "PGSWEEPER_RULE", "%s", w->rule->name);
        field_add(&f, "PGSWEEPER_PID", "%" PRId32, w->pid);
        if (row) {
                field_add(&f, "PGSWEEPER_USER", "%s", row->user);
                field_add(&f, "PGSWEEPER_DATABASE", "%s", row->database);
                field_add(&f, "PGSWEEPER_APPLICATION", "%s", row->application);
        }
        field_add(&f, "PGSWEEPER_LIMIT", "max_blocking");
        field_add(&f, "PGSWEEPER_LIMIT_MS", "%" PRId64, w->rule->limit_ms[LIMIT_BLOCKING]);
        field_add(&f, "PGSWEEPER_ELAPSED_MS", "%" PRId64, w->wait_ms);
        field_add(&f, "PGSWEEPER_BLOCKED", "%zu", w->blocked);
        field_add(&f, "PGSWEEPER_PROTECTED", "%s", w->why);
        emit(LOG_WARNING, MESSAGE_ID_CHAIN_PROTECTED, &f, true,
             "%s: lock chain root %s is %s and is never signalled: %zu session%s waiting behind it "
             "for %s > max_blocking %s [rule %s] (said once per root)", server, who, w->why, w->blocked,
             w->blocked == 1 ? "" : "s", wait, limit, w->rule->name);
}

void log_outcome(const char *server, const struct unknown_signal *u, enum outcome o) {
        _cleanup_(fields_free) struct fields f = {};
        const char *verb = u->action == ACTION_CANCEL ? "cancel" : "terminate";
        int priority = o == OUTCOME_GONE ? LOG_NOTICE : LOG_WARNING;

        if (priority > max_priority)
                return;
        field_add(&f, "PGSWEEPER_SERVER", "%s", server);
        field_add(&f, "PGSWEEPER_RULE", "%s", u->rule);
        field_add(&f, "PGSWEEPER_ACTION", "%s", action_to_string(u->action));
        field_add(&f, "PGSWEEPER_OUTCOME", "%s", outcome_to_string(o));
        field_add(&f, "PGSWEEPER_PID", "%" PRId32, u->id.pid);
        field_add(&f, "PGSWEEPER_USER", "%s", u->user);
        field_add(&f, "PGSWEEPER_DATABASE", "%s", u->database);
        field_add(&f, "PGSWEEPER_APPLICATION", "%s", u->application);
        field_add(&f, "PGSWEEPER_CLIENT_ADDR", "%s", u->client_addr);
        emit(priority, MESSAGE_ID_OUTCOME, &f, true,
             "%s: outcome of the unknown %s of pid %" PRId32 " (user %s, db %s, app %s, %s): %s [rule %s]", server,
             verb, u->id.pid, *u->user ? u->user : "-", *u->database ? u->database : "-",
             *u->application ? u->application : "-", *u->client_addr ? u->client_addr : "-",
             o == OUTCOME_GONE ? "gone, no backend with that pid and start any more"
                               : "present, the same session is still there and is judged again",
             u->rule);
}

const char *log_group_phrase(enum group_key per) {
        switch (per) {
        case GROUP_USER:
                return "user ";
        case GROUP_DATABASE:
                return "database ";
        case GROUP_APPLICATION:
                return "application ";
        case GROUP_CLIENT_ADDRESS:
                return "client address ";
        default:
                return "";
        }
}

const char *log_pressure_phrase(const struct rule *r, int64_t connections, int64_t slots, char buf[static 128]) {
        if (r->connections_above_percent)
                snprintf(buf, 128, "%" PRId64 " connections > %" PRId64 "%% of %" PRId64 " slots", connections,
                         r->connections_above, slots);
        else
                snprintf(buf, 128, "%" PRId64 " connections > %" PRId64 " (%" PRId64 " slots)", connections,
                         r->connections_above, slots);
        return buf;
}

/* PGSWEEPER_GROUP ("application=web-1", "all"), _SESSIONS, _MAX_SESSIONS. */
static void log_group_fields(struct fields *f, const struct rule *r, enum group_key per, const char *value,
                             int64_t sessions) {
        if (per == GROUP_ALL)
                field_add(f, "PGSWEEPER_GROUP", "all");
        else
                field_add(f, "PGSWEEPER_GROUP", "%s=%s", group_key_to_string(per), value ? value : "");
        field_add(f, "PGSWEEPER_SESSIONS", "%" PRId64, sessions);
        field_add(f, "PGSWEEPER_MAX_SESSIONS", "%" PRId64, r->limit_ms[LIMIT_SESSIONS]);
}

void log_cap_short(const char *server, const struct cap_group *g) {
        _cleanup_(fields_free) struct fields f = {};
        char idle[DURATION_FORMAT_MAX];

        if (LOG_WARNING > max_priority)
                return;
        duration_format(g->rule->min_idle_ms, idle, sizeof(idle));
        field_add(&f, "PGSWEEPER_SERVER", "%s", server);
        field_add(&f, "PGSWEEPER_RULE", "%s", g->rule->name);
        field_add(&f, "PGSWEEPER_LIMIT", "max_sessions");
        log_group_fields(&f, g->rule, g->rule->per, g->value, g->sessions);
        field_add(&f, "PGSWEEPER_ENDING", "%zu", g->ending);
        if (g->rule->connections_above > 0) {
                field_add(&f, "PGSWEEPER_CONNECTIONS", "%" PRId64, g->connections);
                field_add(&f, "PGSWEEPER_CONNECTION_SLOTS", "%" PRId64, g->connection_slots);
        }
        field_add(&f, "PGSWEEPER_SHORT_BY", "%zu", g->short_by);
        emit(LOG_WARNING, MESSAGE_ID_CAP_SHORT, &f, true,
             "%s: %" PRId64 " sessions%s%s%s > max_sessions %" PRId64 " cannot be brought under: %zu ending, "
             "the others are not idle for %s or are exempt or protected [rule %s] (said once until it is under)",
             server, g->sessions, g->rule->per == GROUP_ALL ? "" : " of ", log_group_phrase(g->rule->per),
             g->rule->per == GROUP_ALL ? "" : g->value ? g->value : "", g->rule->limit_ms[LIMIT_SESSIONS], g->ending,
             idle, g->rule->name);
}

/* s as an SQL string literal ('it''s'), for a command a person runs. */
static char *sql_literal(const char *s) {
        char *out = xmalloc(2 * strlen(s) + 3), *o = out;

        *o++ = '\'';
        for (; *s; s++) {
                if (*s == '\'')
                        *o++ = '\'';
                *o++ = *s;
        }
        *o++ = '\'';
        *o = '\0';
        return out;
}

/* A server timestamp (us since the epoch) as "2026-12-06 09:43:55 UTC". */
static void format_utc(int64_t us, char buf[static 32]) {
        struct tm tm;
        time_t t = (time_t) (us / 1000000 - (us % 1000000 < 0));

        if (us == TS_NULL || !gmtime_r(&t, &tm) || strftime(buf, 32, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
                snprintf(buf, 32, "an unknown time");
}

char *log_holder_release(const struct horizon_holder *h) {
        _cleanup_free_ char *name = sql_literal(h->name);

        if (h->kind == HOLDER_SLOT)
                return xasprintf("SELECT pg_drop_replication_slot(%s);", name);
        return xasprintf("ROLLBACK PREPARED %s;", name);
}

void log_horizon_holder(const char *server, const struct holder_verdict *v, bool again) {
        _cleanup_(fields_free) struct fields f = {};
        _cleanup_free_ char *release = NULL;
        const struct horizon_holder *h = v->holder;
        int64_t limit = v->rule->limit_ms[LIMIT_XMIN_AGE];
        char at[32];

        if (LOG_WARNING > max_priority)
                return;
        release = log_holder_release(h);
        format_utc(h->prepared_at, at);
        field_add(&f, "PGSWEEPER_SERVER", "%s", server);
        field_add(&f, "PGSWEEPER_HOLDER", "%s", holder_kind_to_string(h->kind));
        field_add(&f, h->kind == HOLDER_SLOT ? "PGSWEEPER_SLOT" : "PGSWEEPER_GID", "%s", h->name);
        if (h->kind == HOLDER_SLOT) {
                field_add(&f, "PGSWEEPER_SLOT_TYPE", "%s", h->slot_type);
                field_add(&f, "PGSWEEPER_SLOT_ACTIVE", "%d", h->active ? 1 : 0);
        } else {
                field_add(&f, "PGSWEEPER_USER", "%s", h->owner);
                field_add(&f, "PGSWEEPER_PREPARED_AT", "%s", at);
        }
        if (*h->database)
                field_add(&f, "PGSWEEPER_DATABASE", "%s", h->database);
        field_add(&f, "PGSWEEPER_XMIN_AGE", "%" PRId64, h->xmin_age);
        field_add(&f, "PGSWEEPER_RULE", "%s", v->rule->name);
        field_add(&f, "PGSWEEPER_LIMIT", "max_xmin_age");
        field_add(&f, "PGSWEEPER_LIMIT_VALUE", "%" PRId64, limit);
        field_add(&f, "PGSWEEPER_RELEASE", "%s", release);
        if (h->kind == HOLDER_SLOT)
                emit(LOG_WARNING, MESSAGE_ID_HORIZON_HOLDER, &f, true,
                     "%s: replication slot %s (%s, %s%s%s) holds xmin %" PRId64 " transactions old >= max_xmin_age %"
                     PRId64 " [rule %s]; pgsweeper never drops it: once its consumer is gone for good, run %s "
                     "(a consumer that comes back finds it gone)%s",
                     server, h->name, h->slot_type, h->active ? "active" : "inactive", *h->database ? ", database " : "",
                     h->database, h->xmin_age, limit, v->rule->name, release, again ? " (still there: said hourly)" : "");
        else
                emit(LOG_WARNING, MESSAGE_ID_HORIZON_HOLDER, &f, true,
                     "%s: prepared transaction %s (owner %s, database %s, prepared %s) holds xmin %" PRId64
                     " transactions old >= max_xmin_age %" PRId64 " [rule %s]; pgsweeper never ends it: if it is "
                     "abandoned, run %s%s%s (COMMIT PREPARED keeps its work instead)%s",
                     server, h->name, h->owner, h->database, at, h->xmin_age, limit, v->rule->name, release,
                     *h->database ? " in database " : "", h->database, again ? " (still there: said hourly)" : "");
}

/* How the elapsed time of a limit reads in a sentence. */
static const char *limit_phrase(const struct decision *d, char buf[static 64]) {
        switch (d->limit) {
        case LIMIT_BLOCKING:
                snprintf(buf, 64, "blocking %zu session%s for", d->blocked, d->blocked == 1 ? "" : "s");
                return buf;
        case LIMIT_LOCK_WAIT:
                return "waiting for a lock";
        case LIMIT_QUERY_DURATION:
                return "query running";
        case LIMIT_TRANSACTION_AGE:
                return "transaction open";
        case LIMIT_SESSION_AGE:
                return "session open";
        case LIMIT_XMIN_AGE:
                return "holds xmin";
        default:
                return session_state_to_string(d->row->state);
        }
}

const char *log_limit_comparison(int64_t elapsed_ms, int64_t limit_ms, char elapsed[static DURATION_FORMAT_MAX]) {
        char limit[DURATION_FORMAT_MAX];

        duration_format(elapsed_ms, elapsed, DURATION_FORMAT_MAX);
        if (elapsed_ms == limit_ms)
                return ">=";
        if (elapsed_ms < limit_ms)
                return "<";
        duration_format(limit_ms, limit, sizeof(limit));
        if (strcmp(elapsed, limit) == 0 && elapsed_ms >= 60 * 1000) {
                /* Above a minute the format drops the milliseconds ("31m" for
                 * 31m0.4s): show them, or "31m > 31m" reads false. */
                size_t len;
                duration_format(elapsed_ms - elapsed_ms % (60 * 1000), elapsed, DURATION_FORMAT_MAX);
                len = strlen(elapsed);
                duration_format(elapsed_ms % (60 * 1000), elapsed + len, DURATION_FORMAT_MAX - len);
        }
        return ">";
}

static const struct {
        int priority;
        const char *message_id;
} result_meta[_RESULT_MAX] = {
        [RESULT_TERMINATED] = { LOG_NOTICE, MESSAGE_ID_TERMINATED },
        [RESULT_CANCELLED] = { LOG_NOTICE, MESSAGE_ID_CANCELLED },
        [RESULT_LOGGED] = { LOG_NOTICE, MESSAGE_ID_LOGGED },
        [RESULT_DRY_RUN] = { LOG_INFO, MESSAGE_ID_DRY_RUN },
        [RESULT_GONE] = { LOG_DEBUG, MESSAGE_ID_SKIPPED },
        [RESULT_CHANGED] = { LOG_DEBUG, MESSAGE_ID_SKIPPED },
        [RESULT_DENIED] = { LOG_WARNING, MESSAGE_ID_DENIED },
        [RESULT_FAILED] = { LOG_ERR, MESSAGE_ID_FAILED },
        [RESULT_UNKNOWN] = { LOG_WARNING, MESSAGE_ID_UNKNOWN },
};

void log_decision(const char *server, const struct decision *d, enum result r, int priority, const char *hint) {
        _cleanup_(fields_free) struct fields f = {};
        const struct snapshot_row *row = d->row;
        const char *verb = d->action == ACTION_CANCEL ? "cancel" : "terminate";
        char elapsed[DURATION_FORMAT_MAX], limit[DURATION_FORMAT_MAX], what[96], phrase[64], why[512], pressure[128];
        const char *op;

        if (r >= _RESULT_MAX)
                return;
        if (priority < 0)
                priority = result_meta[r].priority;
        if (priority > max_priority)
                return;
        switch (r) {
        case RESULT_TERMINATED:
        case RESULT_CANCELLED:
                snprintf(what, sizeof(what), "%s%s pid %" PRId32, d->escalated ? "escalated: " : "",
                         result_to_string(r), row->pid);
                break;
        case RESULT_LOGGED:
                snprintf(what, sizeof(what), "log-only: pid %" PRId32, row->pid);
                break;
        case RESULT_DRY_RUN:
                snprintf(what, sizeof(what), "dry-run: would %s pid %" PRId32,
                         d->action == ACTION_LOG ? "log" : verb, row->pid);
                break;
        case RESULT_GONE:
        case RESULT_CHANGED:
                snprintf(what, sizeof(what), "did not %s pid %" PRId32 ", %s since the snapshot", verb, row->pid,
                         result_to_string(r));
                break;
        case RESULT_DENIED:
                snprintf(what, sizeof(what), "permission denied to %s pid %" PRId32, verb, row->pid);
                break;
        case RESULT_UNKNOWN:
                snprintf(what, sizeof(what), "sent %s to pid %" PRId32 ", result unknown", verb,
                         row->pid);
                break;
        default:
                snprintf(what, sizeof(what), "failed to %s pid %" PRId32, verb, row->pid);
        }
        if (d->limit == LIMIT_SESSIONS) {
                /* "53 sessions of application web-1 > max_sessions 50, idle 12m3s" */
                duration_format(d->elapsed_ms, elapsed, sizeof(elapsed));
                snprintf(why, sizeof(why), "%" PRId64 " sessions%s%s%s > max_sessions %" PRId64 ", idle %s",
                         d->sessions, d->group_per == GROUP_ALL ? "" : " of ", log_group_phrase(d->group_per),
                         d->group_per == GROUP_ALL ? "" : d->group_value ? d->group_value : "",
                         d->rule->limit_ms[LIMIT_SESSIONS], elapsed);
        } else {
                if (limit_is_duration(d->limit)) {
                        op = log_limit_comparison(d->elapsed_ms, d->rule->limit_ms[d->limit], elapsed);
                        duration_format(d->rule->limit_ms[d->limit], limit, sizeof(limit));
                } else {
                        /* an age in transactions: "holds xmin 312 transactions old > max_xmin_age 200" */
                        op = d->elapsed_ms == d->rule->limit_ms[d->limit] ? ">=" : ">";
                        snprintf(elapsed, sizeof(elapsed), "%" PRId64 " transactions old", d->elapsed_ms);
                        snprintf(limit, sizeof(limit), "%" PRId64, d->rule->limit_ms[d->limit]);
                }
                snprintf(why, sizeof(why), "%s %s %s %s %s", limit_phrase(d, phrase), elapsed, op,
                         limit_kind_to_string(d->limit), limit);
        }
        if (d->rule->connections_above > 0) {
                size_t len = strlen(why);
                snprintf(why + len, sizeof(why) - len, ", %s", log_pressure_phrase(d->rule, d->connections,
                                                                                    d->connection_slots, pressure));
        }
        field_add(&f, "PGSWEEPER_SERVER", "%s", server);
        field_add(&f, "PGSWEEPER_RULE", "%s", d->rule->name);
        field_add(&f, "PGSWEEPER_ACTION", "%s", action_to_string(d->action));
        field_add(&f, "PGSWEEPER_RESULT", "%s", result_to_string(r));
        field_add(&f, "PGSWEEPER_PID", "%" PRId32, row->pid);
        field_add(&f, "PGSWEEPER_USER", "%s", row->user);
        field_add(&f, "PGSWEEPER_DATABASE", "%s", row->database);
        field_add(&f, "PGSWEEPER_APPLICATION", "%s", row->application);
        field_add(&f, "PGSWEEPER_CLIENT_ADDR", "%s", row->client_addr);
        field_add(&f, "PGSWEEPER_STATE", "%s", session_state_to_string(row->state));
        field_add(&f, "PGSWEEPER_LIMIT", "%s", limit_kind_to_string(d->limit));
        if (d->limit == LIMIT_SESSIONS) {
                field_add(&f, "PGSWEEPER_LIMIT_VALUE", "%" PRId64, d->rule->limit_ms[LIMIT_SESSIONS]);
                field_add(&f, "PGSWEEPER_ELAPSED_MS", "%" PRId64, d->elapsed_ms);
                field_add(&f, "PGSWEEPER_MIN_IDLE_MS", "%" PRId64, d->rule->min_idle_ms);
                log_group_fields(&f, d->rule, d->group_per, d->group_value, d->sessions);
        } else if (limit_is_duration(d->limit)) {
                field_add(&f, "PGSWEEPER_LIMIT_MS", "%" PRId64, d->rule->limit_ms[d->limit]);
                field_add(&f, "PGSWEEPER_ELAPSED_MS", "%" PRId64, d->elapsed_ms);
        } else {
                field_add(&f, "PGSWEEPER_LIMIT_VALUE", "%" PRId64, d->rule->limit_ms[d->limit]);
                field_add(&f, "PGSWEEPER_XMIN_AGE", "%" PRId64, d->elapsed_ms);
        }
        if (limit_is_chain(d->limit))
                field_add(&f, "PGSWEEPER_BLOCKED", "%zu", d->blocked);
        if (d->rule->connections_above > 0) {
                field_add(&f, "PGSWEEPER_CONNECTIONS", "%" PRId64, d->connections);
                field_add(&f, "PGSWEEPER_CONNECTION_SLOTS", "%" PRId64, d->connection_slots);
        }
        field_add(&f, "PGSWEEPER_SERVER_ROLE", "%s",
                  d->server_role == ROLE_ANY ? "unknown" : server_role_to_string(d->server_role));
        if (d->escalated)
                field_add(&f, "PGSWEEPER_ESCALATED", "1");
        if (row->query)
                field_add(&f, "PGSWEEPER_QUERY", "%s", row->query);
        /* Every decision but the debug ones (gone, changed) outranks info noise in the queue. */
        emit(priority, d->escalated && r == RESULT_TERMINATED ? MESSAGE_ID_ESCALATED : result_meta[r].message_id,
             &f, priority < LOG_DEBUG, "%s: %s (user %s, db %s, app %s, %s): %s [rule %s]%s%s", server,
             what, *row->user ? row->user : "-", *row->database ? row->database : "-",
             *row->application ? row->application : "-", *row->client_addr ? row->client_addr : "-",
             why, d->rule->name, hint ? "; " : "", hint ? hint : "");
}
