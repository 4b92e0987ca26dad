/* Where messages go: the journal with structured fields, or one readable
 * line per event on stderr. */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "duration.h"
#include "escape.h"
#include "log.h"
#include "message-ids.h"
#include "metrics.h"

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

/* Journal fields: a key and its value, raw (the value may hold any byte
 * but NUL: the native protocol carries newlines in a length-prefixed form). */
struct fields {
        const char *key[32];
        char *value[32];
        size_t n;
};

static void field_add(struct fields *f, const char *key, const char *fmt, ...) _printf_(3, 4);
static void field_add(struct fields *f, const char *key, const char *fmt, ...) {
        va_list ap;
        char *value;

        if (f->n >= ELEMENTSOF(f->key))
                return;
        va_start(ap, fmt);
        if (vasprintf(&value, fmt, ap) < 0)
                value = NULL;
        va_end(ap);
        if (!value)
                return;
        f->key[f->n] = key;
        f->value[f->n] = value;
        f->n++;
}

static void fields_free(struct fields *f) {
        for (size_t i = 0; i < f->n; i++)
                free(f->value[i]);
        f->n = 0;
}

/* ---- the journal: our own non-blocking socket and a bounded queue ----
 *
 * sd_journal_sendv() blocks while journald's socket queue is full (journald
 * stopped or slow), and with it enforcement and SIGTERM. So entries are sent
 * with MSG_DONTWAIT in journald's native protocol; what the socket does not
 * take waits in a bounded queue, flushed in order when the socket is writable
 * again (a connected datagram socket reports EPOLLOUT when the peer's queue
 * has room). When the queue is full, debug/info entries make room first;
 * what still does not fit goes to stderr and is counted. */

#define JOURNAL_SOCKET "/run/systemd/journal/socket"
#define QUEUE_MAX_ENTRIES 4096
#define QUEUE_MAX_BYTES (16u << 20)
#define SNDBUF_SIZE (8 * 1024 * 1024)

struct entry {
        char *data;     /* the datagram, native protocol */
        size_t size;
        char *line;     /* the escaped one-line form, for stderr */
        bool important; /* a decision (but a debug one), or an event at notice or above */
};

static struct {
        int fd;
        struct entry *q;
        size_t head, n, cap, bytes;
        sd_event *event;
        sd_event_source *io;
        uint64_t dropped;       /* since the queue was last empty */
        bool atexit_registered;
} journal = { .fd = -1 };

static void entry_free(struct entry *e) {
        free(e->data);
        free(e->line);
        *e = (struct entry) {};
}

/* KEY=value\n, or KEY\n + little-endian 64-bit length + value + \n when the
 * value holds a newline. */
static char *serialize(const struct fields *f, size_t *size) {
        size_t n = 0, off = 0;
        char *buf;

        for (size_t i = 0; i < f->n; i++)
                n += strlen(f->key[i]) + strlen(f->value[i]) + 10;
        buf = xmalloc(n);
        for (size_t i = 0; i < f->n; i++) {
                size_t klen = strlen(f->key[i]), vlen = strlen(f->value[i]);

                memcpy(buf + off, f->key[i], klen);
                off += klen;
                if (memchr(f->value[i], '\n', vlen)) {
                        uint64_t le = htole64((uint64_t) vlen);
                        buf[off++] = '\n';
                        memcpy(buf + off, &le, sizeof(le));
                        off += sizeof(le);
                } else
                        buf[off++] = '=';
                memcpy(buf + off, f->value[i], vlen);
                off += vlen;
                buf[off++] = '\n';
        }
        *size = off;
        return buf;
}

/* stderr when the journal is stuck: a stream socket (the journal's own
 * stdout stream, under systemd) would block just the same, so never wait on
 * one. Files, pipes and terminals are written as usual. */
static void stderr_nowait(const char *line) {
        _cleanup_free_ char *s = NULL;
        struct stat st;
        int n;

        n = asprintf(&s, "%s\n", line);
        if (n < 0)
                return;
        if (fstat(STDERR_FILENO, &st) == 0 && S_ISSOCK(st.st_mode)) {
                fflush(stderr);
                (void) !send(STDERR_FILENO, s, (size_t) n, MSG_DONTWAIT | MSG_NOSIGNAL);
                return;
        }
        fputs(s, stderr);
        fflush(stderr);
}

static void journal_disconnect(void) {
        journal.io = sd_event_source_disable_unref(journal.io);
        if (journal.fd >= 0)
                close(journal.fd);
        journal.fd = -1;
}

static int journal_connect(void) {
        union {
                struct sockaddr sa;
                struct sockaddr_un un;
        } addr = { .un = { .sun_family = AF_UNIX, .sun_path = JOURNAL_SOCKET } };
        int fd, size = SNDBUF_SIZE;

        if (journal.fd >= 0)
                return 0;
        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        /* large entries fit in one datagram, up to the system's wmem_max */
        (void) setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
        if (connect(fd, &addr.sa, sizeof(addr.un)) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        journal.fd = fd;
        return 0;
}

/* Too large for a datagram: the entry goes in a sealed memfd, passed with
 * SCM_RIGHTS (journald reads it from there). */
static int send_memfd(const struct entry *e) {
        union {
                struct cmsghdr cmsg;
                char buf[CMSG_SPACE(sizeof(int))];
        } control = {};
        struct msghdr mh = { .msg_control = &control, .msg_controllen = sizeof(control) };
        struct cmsghdr *cmsg;
        int fd, r = 0;

        fd = memfd_create("pgsweeper-journal", MFD_ALLOW_SEALING | MFD_CLOEXEC);
        if (fd < 0)
                return -errno;
        for (size_t off = 0; off < e->size;) {
                ssize_t w = write(fd, e->data + off, e->size - off);
                if (w < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        goto out;
                }
                off += (size_t) w;
        }
        if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0) {
                r = -errno;
                goto out;
        }
        cmsg = CMSG_FIRSTHDR(&mh);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
        if (sendmsg(journal.fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
                r = -errno;
out:
        close(fd);
        return r;
}

static int send_once(const struct entry *e) {
        if (send(journal.fd, e->data, e->size, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0)
                return 0;
        if (errno == EMSGSIZE || errno == ENOBUFS)
                return send_memfd(e);
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
}

/* 0, -EAGAIN (journald's queue is full: try later), or another error (no
 * journal: the entry goes to stderr). */
static int journal_send(const struct entry *e) {
        int r = journal_connect();

        if (r < 0)
                return r;
        r = send_once(e);
        if (r == -ECONNREFUSED || r == -ECONNRESET || r == -ENOTCONN || r == -EPIPE) {
                /* journald restarted: its socket is a new one */
                journal_disconnect();
                r = journal_connect();
                if (r >= 0)
                        r = send_once(e);
        }
        return r;
}

static int on_journal_writable(sd_event_source *s, int fd, uint32_t revents, void *userdata);

/* Ask the event loop to call back when the socket takes entries again. */
static void queue_arm(bool on) {
        if (!on || !journal.event || journal.fd < 0) {
                if (journal.io)
                        (void) sd_event_source_set_enabled(journal.io, SD_EVENT_OFF);
                return;
        }
        if (!journal.io) {
                if (sd_event_add_io(journal.event, &journal.io, journal.fd, EPOLLOUT, on_journal_writable, NULL) < 0)
                        journal.io = NULL;
                else
                        (void) sd_event_source_set_description(journal.io, "journal-queue");
                return;
        }
        (void) sd_event_source_set_enabled(journal.io, SD_EVENT_ON);
}

static void queue_pop(struct entry *out) {
        *out = journal.q[journal.head];
        journal.bytes -= out->size;
        journal.head++;
        if (--journal.n == 0)
                journal.head = 0;
}

static void queue_remove(size_t i) {
        struct entry *e = &journal.q[journal.head + i];

        journal.bytes -= e->size;
        entry_free(e);
        memmove(e, e + 1, (journal.n - i - 1) * sizeof(*e));
        if (--journal.n == 0)
                journal.head = 0;
}

/* An entry that will not reach the journal: stderr, counted, said once. */
static void dropped(const char *line) {
        if (journal.dropped++ == 0)
                stderr_nowait("pgsweeper: the journal is not taking entries and the queue is full: "
                              "entries that do not fit are written to stderr until it takes them again");
        metrics_count_journal_dropped(1);
        stderr_nowait(line);
}

static void queue_push(struct entry *e) {
        while (journal.n >= QUEUE_MAX_ENTRIES || journal.bytes + e->size > QUEUE_MAX_BYTES) {
                size_t i = 0;

                while (i < journal.n && journal.q[journal.head + i].important)
                        i++;
                if (!e->important || i == journal.n) {
                        /* nothing less important than the newcomer to make room with */
                        dropped(e->line);
                        entry_free(e);
                        return;
                }
                dropped(journal.q[journal.head + i].line);
                queue_remove(i);
        }
        if (journal.head + journal.n == journal.cap) {
                if (journal.head > 0) {
                        memmove(journal.q, journal.q + journal.head, journal.n * sizeof(*journal.q));
                        journal.head = 0;
                } else {
                        journal.cap = journal.cap ? journal.cap * 2 : 64;
                        journal.q = xreallocarray(journal.q, journal.cap, sizeof(*journal.q));
                }
        }
        journal.q[journal.head + journal.n++] = *e;
        journal.bytes += e->size;
        *e = (struct entry) {};
        queue_arm(true);
}

/* Send queued entries in order until the socket is full again. */
static void queue_flush(void) {
        while (journal.n > 0) {
                struct entry e = journal.q[journal.head];
                int r = journal_send(&e);

                if (r == -EAGAIN)
                        return;
                if (r < 0)
                        stderr_nowait(e.line);  /* no journal any more: as if it never was */
                queue_pop(&e);
                entry_free(&e);
        }
        queue_arm(false);
        if (journal.dropped > 0) {
                uint64_t n = journal.dropped;
                journal.dropped = 0;
                log_event(LOG_WARNING, NULL, NULL,
                          "the journal takes entries again; %" PRIu64 " did not fit in the queue meanwhile "
                          "and were written to stderr", n);
        }
}

static int on_journal_writable(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        queue_flush();
        return 0;
}

int log_attach_event(sd_event *e) {
        sd_event_unref(journal.event);
        journal.event = sd_event_ref(e);
        queue_arm(journal.n > 0);
        return 0;
}

void log_flush_at_exit(uint64_t budget_usec) {
        struct timespec ts;
        uint64_t deadline, now;

        journal.io = sd_event_source_disable_unref(journal.io);
        journal.event = sd_event_unref(journal.event);
        clock_gettime(CLOCK_MONOTONIC, &ts);
        deadline = (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000 + budget_usec;
        for (;;) {
                queue_flush();
                if (journal.n == 0 || journal.fd < 0)
                        break;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                now = (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
                if (now >= deadline)
                        break;
                (void) poll(&(struct pollfd) { .fd = journal.fd, .events = POLLOUT }, 1,
                            (int) ((deadline - now + 999) / 1000));
        }
        if (journal.n > 0) {
                _cleanup_free_ char *note = NULL;
                if (asprintf(&note, "pgsweeper: the journal did not take %zu entries before exit: written to stderr",
                             journal.n) >= 0)
                        stderr_nowait(note);
                metrics_count_journal_dropped(journal.n);
                while (journal.n > 0) {
                        struct entry e;
                        queue_pop(&e);
                        stderr_nowait(e.line);
                        entry_free(&e);
                }
        }
        free(journal.q);
        journal.q = NULL;
        journal.cap = journal.head = 0;
}

size_t log_queued(void) {
        return journal.n;
}

static void flush_atexit(void) {
        if (journal.n > 0 || journal.event)
                log_flush_at_exit(LOG_EXIT_FLUSH_USEC);
        journal_disconnect();
}

/* Send to the journal, or queue; stderr when there is no journal. The line
 * is already escaped. */
static void emit(struct fields *f, const char *line, bool important) {
        struct entry e = {};
        int r;

        if (!use_journal) {
                fprintf(stderr, "%s\n", line);
                fflush(stderr);
                return;
        }
        if (!journal.atexit_registered)
                journal.atexit_registered = atexit(flush_atexit) == 0;
        field_add(f, "SYSLOG_IDENTIFIER", "pgsweeper");
        e.data = serialize(f, &e.size);
        e.important = important;
        if (journal.n == 0) {
                r = journal_send(&e);
                if (r != -EAGAIN) {
                        if (r < 0) {
                                fprintf(stderr, "%s\n", line);
                                fflush(stderr);
                        }
                        entry_free(&e);
                        return;
                }
        }
        e.line = xstrdup(line);
        queue_push(&e);
}

void log_event(int priority, const char *message_id, const char *server, const char *fmt, ...) {
        _cleanup_free_ char *msg = NULL, *raw = NULL, *line = NULL;
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
        join_lines(msg);
        if (asprintf(&raw, "%s: %s", server ? server : "pgsweeper", msg) < 0)
                return;
        line = escape_string(raw);
        field_add(&f, "MESSAGE", "%s", line);
        field_add(&f, "PRIORITY", "%d", priority);
        if (message_id)
                field_add(&f, "MESSAGE_ID", "%s", message_id);
        if (server)
                field_add(&f, "PGSWEEPER_SERVER", "%s", server);
        emit(&f, line, priority <= LOG_NOTICE);
        fields_free(&f);
}

void log_server_role(const char *server, enum server_role previous, enum server_role now) {
        _cleanup_free_ char *raw = NULL, *line = NULL;
        const char *what = now == ROLE_STANDBY ? "standby (in recovery)" : "primary";
        struct fields f = {};
        int priority = previous == ROLE_ANY ? LOG_INFO : LOG_NOTICE;

        if (priority > max_priority)
                return;
        if ((previous == ROLE_ANY ? asprintf(&raw, "%s: server is a %s", server, what)
                                  : asprintf(&raw, "%s: server role changed from %s to %s", server,
                                             server_role_to_string(previous), what)) < 0)
                return;
        line = escape_string(raw);
        field_add(&f, "MESSAGE", "%s", line);
        field_add(&f, "PRIORITY", "%d", priority);
        /* The first sighting is not a change: it has no MESSAGE_ID of its own. */
        if (previous != ROLE_ANY) {
                field_add(&f, "MESSAGE_ID", "%s", MESSAGE_ID_ROLE_CHANGED);
                field_add(&f, "PGSWEEPER_PREVIOUS_ROLE", "%s", server_role_to_string(previous));
        }
        field_add(&f, "PGSWEEPER_SERVER", "%s", server);
        field_add(&f, "PGSWEEPER_SERVER_ROLE", "%s", server_role_to_string(now));
        emit(&f, line, priority <= LOG_NOTICE);
        fields_free(&f);
}

void log_chain_warning(const char *server, const struct chain_warning *w) {
        const struct snapshot_row *row = w->row;
        char wait[DURATION_FORMAT_MAX], limit[DURATION_FORMAT_MAX], who[512];
        _cleanup_free_ char *raw = NULL, *line = NULL;
        struct fields f = {};

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
        if (asprintf(&raw, "%s: lock chain root %s is %s and is never signalled: %zu session%s waiting behind it "
                     "for %s > max_blocking %s [rule %s] (said once per root)", server, who, w->why, w->blocked,
                     w->blocked == 1 ? "" : "s", wait, limit, w->rule->name) < 0)
                return;
        line = escape_string(raw);
        field_add(&f, "MESSAGE", "%s", line);
        field_add(&f, "PRIORITY", "%d", LOG_WARNING);
        field_add(&f, "MESSAGE_ID", "%s", MESSAGE_ID_CHAIN_PROTECTED);
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
        emit(&f, line, true);
        fields_free(&f);
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
        const struct snapshot_row *row = d->row;
        const char *verb = d->action == ACTION_CANCEL ? "cancel" : "terminate";
        char elapsed[DURATION_FORMAT_MAX], limit[DURATION_FORMAT_MAX], what[96], phrase[64];
        _cleanup_free_ char *raw = NULL, *line = NULL;
        const char *op;
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
        if (limit_is_duration(d->limit)) {
                op = log_limit_comparison(d->elapsed_ms, d->rule->limit_ms[d->limit], elapsed);
                duration_format(d->rule->limit_ms[d->limit], limit, sizeof(limit));
        } else {
                /* an age in transactions: "holds xmin 312 transactions old > max_xmin_age 200" */
                op = d->elapsed_ms == d->rule->limit_ms[d->limit] ? ">=" : ">";
                snprintf(elapsed, sizeof(elapsed), "%" PRId64 " transactions old", d->elapsed_ms);
                snprintf(limit, sizeof(limit), "%" PRId64, d->rule->limit_ms[d->limit]);
        }
        if (asprintf(&raw, "%s: %s (user %s, db %s, app %s, %s): %s %s %s %s %s [rule %s]%s%s", server, what,
                     *row->user ? row->user : "-", *row->database ? row->database : "-",
                     *row->application ? row->application : "-", *row->client_addr ? row->client_addr : "-",
                     limit_phrase(d, phrase), elapsed, op, limit_kind_to_string(d->limit), limit, d->rule->name,
                     hint ? "; " : "", hint ? hint : "") < 0)
                return;
        line = escape_string(raw);

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
        if (limit_is_duration(d->limit)) {
                field_add(&f, "PGSWEEPER_LIMIT_MS", "%" PRId64, d->rule->limit_ms[d->limit]);
                field_add(&f, "PGSWEEPER_ELAPSED_MS", "%" PRId64, d->elapsed_ms);
        } else {
                field_add(&f, "PGSWEEPER_LIMIT_VALUE", "%" PRId64, d->rule->limit_ms[d->limit]);
                field_add(&f, "PGSWEEPER_XMIN_AGE", "%" PRId64, d->elapsed_ms);
        }
        if (limit_is_chain(d->limit))
                field_add(&f, "PGSWEEPER_BLOCKED", "%zu", d->blocked);
        field_add(&f, "PGSWEEPER_SERVER_ROLE", "%s",
                  d->server_role == ROLE_ANY ? "unknown" : server_role_to_string(d->server_role));
        if (d->escalated)
                field_add(&f, "PGSWEEPER_ESCALATED", "1");
        if (row->query)
                field_add(&f, "PGSWEEPER_QUERY", "%s", row->query);
        /* MESSAGE is escaped; the PGSWEEPER_* data fields keep the server's
         * bytes, so an exact match on a role name finds it. Every decision
         * but the debug ones (gone, changed) outranks info noise in the queue. */
        emit(&f, line, priority < LOG_DEBUG);
        fields_free(&f);
}
