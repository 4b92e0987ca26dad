/* Logging to the journal with structured fields, or readable lines to stderr. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <syslog.h>

#include "duration.h"
#include "enforce.h"
/* The journal queue's log_attach_event(), log_flush_at_exit() and
 * log_queued() reach their callers through this header. */
#include "journal.h"
#include "macro.h"
#include "policy.h"

enum log_target {
        LOG_TARGET_AUTO,
        LOG_TARGET_JOURNAL,
        LOG_TARGET_STDERR,
        _LOG_TARGET_MAX,
};

int log_target_from_string(const char *s);

/* Decide where messages go; max_priority is LOG_INFO, or LOG_DEBUG with -v. */
void log_setup(enum log_target target, int max_priority);
bool log_to_journal(void);

/* One event not about a session: server may be NULL, message_id may be NULL. */
void log_event(int priority, const char *message_id, const char *server, const char *fmt, ...)
        _printf_(4, 5);

#define log_error(server, ...)   log_event(LOG_ERR, NULL, server, __VA_ARGS__)
#define log_warning(server, ...) log_event(LOG_WARNING, NULL, server, __VA_ARGS__)
#define log_info(server, ...)    log_event(LOG_INFO, NULL, server, __VA_ARGS__)
#define log_debug(server, ...)   log_event(LOG_DEBUG, NULL, server, __VA_ARGS__)

/* One line of a configuration load's diagnostics (struct diagnostics),
 * escaped already: logged as it is, as "pgsweeper: LINE". */
void log_diagnostic(int priority, const char *line);

/* The server's role as a poll saw it: previous ROLE_ANY is the first
 * sighting (info); otherwise a change (notice, MESSAGE_ID_ROLE_CHANGED). */
void log_server_role(const char *server, enum server_role previous, enum server_role now);

/* A lock chain whose root may not be signalled (pid 0, a protected session). */
void log_chain_warning(const char *server, const struct chain_warning *w);
/* A group over its max_sessions cap that cannot be brought under (warning,
 * said once until it is under: memory.c). */
void log_cap_short(const char *server, const struct cap_group *g);
/* A prepared transaction or a slot at or over the smallest max_xmin_age:
 * named, with the command that releases it (again: said before, it stays). */
void log_horizon_holder(const char *server, const struct holder_verdict *v, bool again);
/* That command: "ROLLBACK PREPARED 'gid';" (run in its database), or
 * "SELECT pg_drop_replication_slot('name');". Newly allocated. */
char *log_holder_release(const struct horizon_holder *h);
/* "application " before a group's value in a sentence; "" for GROUP_ALL. */
const char *log_group_phrase(enum group_key per);
/* "19 connections > 90% of 20 slots": a rule's when_connections_above
 * with the numbers of a poll. */
const char *log_pressure_phrase(const struct rule *r, int64_t connections, int64_t slots, char buf[static 128]);

/* What the next snapshot showed of the session of an unknown result. */
void log_outcome(const char *server, const struct unknown_signal *u, enum outcome o);

/* One decision and what came of it. priority < 0: the result's usual
 * priority; hint, if not NULL, is appended to the message (how to fix it). */
void log_decision(const char *server, const struct decision *d, enum result r, int priority, const char *hint);

/* How a decision line compares elapsed time and limit: returns ">", ">="
 * (elapsed equals the limit, which is reached at >=) or "<", and writes the
 * elapsed time into elapsed, with its milliseconds when the usual format
 * would print it equal to the limit. */
const char *log_limit_comparison(int64_t elapsed_ms, int64_t limit_ms, char elapsed[static DURATION_FORMAT_MAX]);
