/* Prometheus text-format counters, written atomically for node_exporter's
 * textfile collector. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"
#include "enforce.h"
#include "policy.h"

struct metrics;

struct metrics *metrics_new(void);
void metrics_free(struct metrics *m);

void metrics_count_result(struct metrics *m, const char *server, const char *rule, enum action a, enum result r);
/* What the next snapshot showed of a session whose action result was unknown. */
void metrics_count_outcome(struct metrics *m, const char *server, const char *rule, enum action a, enum outcome o);
/* A poll (or an attempt to connect) ended at realtime_usec (CLOCK_REALTIME). */
void metrics_count_poll(struct metrics *m, const char *server, bool ok, uint64_t duration_usec,
                        uint64_t realtime_usec);
void metrics_set_up(struct metrics *m, const char *server, bool up);
/* Does the role have pg_monitor and pg_signal_backend there? */
void metrics_set_privileges(struct metrics *m, const char *server, bool ok);
/* Was the server in recovery (a standby) at the last poll? */
void metrics_set_in_recovery(struct metrics *m, const char *server, bool in_recovery);
/* Client backends and usable slots at the last poll (negative: unknown). */
void metrics_set_connections(struct metrics *m, const char *server, int64_t connections, int64_t slots);
/* The oldest xmin age per kind of holder at the last poll (policy.h
 * enum holder_kind; negative: none holds one); NULL: the poll did not read
 * the horizon (no max_xmin_age rule any more), the gauge goes. */
void metrics_set_horizon(struct metrics *m, const char *server, const int64_t age[_HOLDER_MAX]);
/* A poll failed: what "the last poll" said (role, connections, slots,
 * horizon) is no longer known; the server is down. */
void metrics_server_down(struct metrics *m, const char *server);
/* A server left the configuration: every series of it goes. */
void metrics_forget_server(struct metrics *m, const char *server);
void metrics_count_reload(struct metrics *m, bool ok);
/* Log entries that did not reach the journal and went to stderr instead
 * (journal_dropped_total()): the owner sets it before writing. */
void metrics_set_journal_dropped(struct metrics *m, uint64_t n);

/* The exposition text. */
void metrics_format(const struct metrics *m, FILE *f);
/* Write to path through a temporary file and rename(2), readable by all
 * (node_exporter runs as another user). Returns 0 or a negative errno. */
int metrics_write(const struct metrics *m, const char *path);
