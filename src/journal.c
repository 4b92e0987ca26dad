/* The journal: our own non-blocking socket and a bounded queue.
 *
 * sd_journal_sendv() blocks while journald's socket queue is full (journald
 * stopped or slow), and with it enforcement and SIGTERM. So entries are sent
 * with MSG_DONTWAIT in journald's native protocol; what the socket does not
 * take waits in a bounded queue, flushed in order when the socket is writable
 * again (a connected datagram socket reports EPOLLOUT when the peer's queue
 * has room). When the queue is full, debug/info entries make room first;
 * what still does not fit goes to stderr and is counted. */
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
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "journal.h"

void field_add(struct fields *f, const char *key, const char *fmt, ...) {
        va_list ap;
        char *value;

        if (f->n >= ELEMENTSOF(f->key))
                return;
        va_start(ap, fmt);
        value = xvasprintf(fmt, ap);
        va_end(ap);
        f->key[f->n] = key;
        f->value[f->n] = value;
        f->n++;
}

void fields_free(struct fields *f) {
        for (size_t i = 0; i < f->n; i++)
                free(f->value[i]);
        f->n = 0;
}

/* Move the fields of from to the end of to. */
static void fields_take(struct fields *to, struct fields *from) {
        for (size_t i = 0; i < from->n && to->n < ELEMENTSOF(to->key); i++) {
                to->key[to->n] = from->key[i];
                to->value[to->n++] = TAKE_PTR(from->value[i]);
        }
        fields_free(from);
}

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
        uint64_t dropped_total; /* since the start, for the metrics */
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
        journal.dropped_total++;
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
                _cleanup_free_ char *line = NULL;
                uint64_t n = journal.dropped;

                journal.dropped = 0;
                /* said here, not through log.c: the transport does not call back into its users */
                if (asprintf(&line, "pgsweeper: the journal takes entries again; %" PRIu64 " did not fit in "
                             "the queue meanwhile and were written to stderr", n) >= 0)
                        journal_emit(LOG_WARNING, NULL, line, NULL, true);
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
                journal.dropped_total += journal.n;
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

void journal_emit(int priority, const char *message_id, const char *line, struct fields *data, bool important) {
        _cleanup_(fields_free) struct fields f = {};
        struct entry e = {};
        int r;

        if (!journal.atexit_registered)
                journal.atexit_registered = atexit(flush_atexit) == 0;
        field_add(&f, "MESSAGE", "%s", line);
        field_add(&f, "PRIORITY", "%d", priority);
        if (message_id)
                field_add(&f, "MESSAGE_ID", "%s", message_id);
        if (data)
                fields_take(&f, data);
        field_add(&f, "SYSLOG_IDENTIFIER", "pgsweeper");
        e.data = serialize(&f, &e.size);
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

uint64_t journal_dropped_total(void) {
        return journal.dropped_total;
}
