/* The journal transport: journald's native protocol on a non-blocking socket
 * of our own, and a bounded queue for what the socket does not take at once. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "macro.h"

/* Journal fields: a key and its value, raw (the value may hold any byte
 * but NUL: the native protocol carries newlines in a length-prefixed form). */
struct fields {
        const char *key[32];
        char *value[32];
        size_t n;
};

void field_add(struct fields *f, const char *key, const char *fmt, ...) _printf_(3, 4);
void fields_free(struct fields *f);

/* One entry: MESSAGE (line, already escaped), PRIORITY, MESSAGE_ID if not
 * NULL, the fields of data if not NULL (taken: data is left empty), and
 * SYSLOG_IDENTIFIER. Sent at once, or queued; line goes to stderr when there
 * is no journal. In a full queue, entries that are not important make room
 * for those that are. */
void journal_emit(int priority, const char *message_id, const char *line, struct fields *data, bool important);

/* Journal entries the socket does not take at once wait in a bounded queue
 * that the event loop flushes: attach it once the loop exists. */
int log_attach_event(sd_event *e);
/* At exit: detach from the loop, try to send what is queued for at most
 * budget_usec, then write the rest to stderr (counted as dropped). */
void log_flush_at_exit(uint64_t budget_usec);
/* Entries waiting for the journal. */
size_t log_queued(void);
#define LOG_EXIT_FLUSH_USEC (250 * 1000)

/* Entries that did not reach the journal and went to stderr instead, since
 * the process started. */
uint64_t journal_dropped_total(void);
