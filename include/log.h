/* Logging to the journal with structured fields, or readable lines to stderr. */
#pragma once

#include <stdbool.h>
#include <syslog.h>

#include "enforce.h"
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

/* One decision and what came of it. priority < 0: the result's usual
 * priority; hint, if not NULL, is appended to the message (how to fix it). */
void log_decision(const char *server, const struct decision *d, enum result r, int priority, const char *hint);
