/* Where messages go: the journal with structured fields, or one readable
 * line per event on stderr. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
/* CODE_FILE/CODE_LINE would name this file, never the event's origin */
#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>
#include <unistd.h>

#include "duration.h"
#include "log.h"
#include "message-ids.h"

static bool use_journal;
static int max_priority = LOG_INFO;

static const char *const target_names[_LOG_TARGET_MAX] = {
        [LOG_TARGET_AUTO] = "auto",
        [LOG_TARGET_JOURNAL] = "journal",
        [LOG_TARGET_STDERR] = "stderr",
};

int log_target_from_string(const char *s) {
        for (int i = 0; i < _LOG_TARGET_MAX; i++)
                if (strcmp(s, target_names[i]) == 0)
                        return i;
        return -EINVAL;
}

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

/* Journal fields are collected as "KEY=value" strings. */
struct fields {
        struct iovec iov[24];
        char *owned[24];
        size_t n;
};

static void field_add(struct fields *f, const char *key, const char *fmt, ...) _printf_(3, 4);
static void field_add(struct fields *f, const char *key, const char *fmt, ...) {
        _cleanup_free_ char *value = NULL;
        va_list ap;
        char *s;

        if (f->n >= ELEMENTSOF(f->iov))
                return;
        va_start(ap, fmt);
        if (vasprintf(&value, fmt, ap) < 0)
                value = NULL;
        va_end(ap);
        if (!value || asprintf(&s, "%s=%s", key, value) < 0)
                return;
        f->owned[f->n] = s;
        f->iov[f->n] = (struct iovec) { .iov_base = s, .iov_len = strlen(s) };
        f->n++;
}

static void fields_free(struct fields *f) {
        for (size_t i = 0; i < f->n; i++)
                free(f->owned[i]);
        f->n = 0;
}

/* One event is one line: control characters (a role name may hold a
 * newline) are shown as '?'. */
static void sanitize_line(char *s) {
        for (; *s; s++)
                if ((unsigned char) *s < 0x20 || *s == 0x7f)
                        *s = '?';
}

/* Send to the journal; fall back to stderr when it is not there. */
static void emit(struct fields *f, const char *line) {
        if (use_journal) {
                field_add(f, "SYSLOG_IDENTIFIER", "pgsweeper");
                if (sd_journal_sendv(f->iov, (int) f->n) >= 0)
                        return;
        }
        fprintf(stderr, "%s\n", line);
        fflush(stderr);
}

void log_event(int priority, const char *message_id, const char *server, const char *fmt, ...) {
        _cleanup_free_ char *msg = NULL, *line = NULL;
        struct fields f = {};
        va_list ap;

        if (priority > max_priority)
                return;
        va_start(ap, fmt);
        if (vasprintf(&msg, fmt, ap) < 0)
                msg = NULL;
        va_end(ap);
        if (!msg)
                return;
        /* libpq messages end with a newline and may span lines: one line is easier to read and grep */
        for (char *c = msg; *c; c++)
                if (*c == '\n')
                        *c = c[1] ? ' ' : '\0';
        if (asprintf(&line, "%s: %s", server ? server : "pgsweeper", msg) < 0)
                return;
        sanitize_line(line);
        field_add(&f, "MESSAGE", "%s", line);
        field_add(&f, "PRIORITY", "%d", priority);
        if (message_id)
                field_add(&f, "MESSAGE_ID", "%s", message_id);
        if (server)
                field_add(&f, "PGSWEEPER_SERVER", "%s", server);
        emit(&f, line);
        fields_free(&f);
}

/* How the elapsed time of a limit reads in a sentence. */
static const char *limit_phrase(const struct decision *d) {
        switch (d->limit) {
        case LIMIT_QUERY_DURATION:
                return "query running";
        case LIMIT_TRANSACTION_AGE:
                return "transaction open";
        case LIMIT_SESSION_AGE:
                return "session open";
        default:
                return session_state_to_string(d->row->state);
        }
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
        const struct snapshot_row *row = d->row;
        const char *verb = d->action == ACTION_CANCEL ? "cancel" : "terminate";
        char elapsed[DURATION_FORMAT_MAX], limit[DURATION_FORMAT_MAX], what[96];
        _cleanup_free_ char *line = NULL;
        struct fields f = {};

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
        duration_format(d->elapsed_ms, elapsed, sizeof(elapsed));
        duration_format(d->rule->limit_ms[d->limit], limit, sizeof(limit));
        if (asprintf(&line, "%s: %s (user %s, db %s, app %s, %s): %s %s > %s %s [rule %s]", server, what,
                     *row->user ? row->user : "-", *row->database ? row->database : "-",
                     *row->application ? row->application : "-", *row->client_addr ? row->client_addr : "-",
                     limit_phrase(d), elapsed, limit_kind_to_string(d->limit), limit, d->rule->name) < 0)
                return;
        if (hint) {
                char *with_hint;
                if (asprintf(&with_hint, "%s; %s", line, hint) < 0)
                        return;
                free(line);
                line = with_hint;
        }
        sanitize_line(line);

        field_add(&f, "MESSAGE", "%s", line);
        field_add(&f, "PRIORITY", "%d", priority);
        field_add(&f, "MESSAGE_ID", "%s",
                  d->escalated && r == RESULT_TERMINATED ? MESSAGE_ID_ESCALATED : result_meta[r].message_id);
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
        field_add(&f, "PGSWEEPER_LIMIT_MS", "%" PRId64, d->rule->limit_ms[d->limit]);
        field_add(&f, "PGSWEEPER_ELAPSED_MS", "%" PRId64, d->elapsed_ms);
        if (d->escalated)
                field_add(&f, "PGSWEEPER_ESCALATED", "1");
        if (row->query)
                field_add(&f, "PGSWEEPER_QUERY", "%s", row->query);
        emit(&f, line);
        fields_free(&f);
}
