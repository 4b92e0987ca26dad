/* A cycle's decisions logged with their results (once, for repeats of
 * log-only and dry-run ones), counted in the metrics, and what the next
 * cycles need remembered. A cycle that acts in batches logs each batch's
 * decisions as it answers: report_begin, report_decisions per range, then
 * report_end. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "enforce.h"
#include "memory.h"
#include "metrics.h"
#include "policy.h"

struct cycle {
        const char *server;             /* the server's name, for the log */
        const struct config *config;
        const struct server *srv;
        const char *own_role;           /* our role there, for the permission hint; NULL: unknown */
        int64_t snap_now;               /* the snapshot's now(): escalations fall due from it */
        const struct judgement *judgement;
        const enum result *results;     /* one per decision */
        const char *unknown_why;        /* why results are RESULT_UNKNOWN, for the entries */
};

struct cycle_outcome {
        bool logged;                    /* something new was logged (or a cap was hit) */
        uint64_t ended;                 /* sessions terminated or cancelled */
};

void report_begin(struct memory *m, const struct cycle *c);
/* Log decisions [from, to). A RESULT_NOT_SENT decision is not logged. */
struct cycle_outcome report_decisions(struct memory *m, struct metrics *metrics, const struct cycle *c, size_t from,
                                      size_t to);
/* The cap warning, and the log-only and dry-run decisions seen this cycle
 * replace those of the last. */
struct cycle_outcome report_end(struct memory *m, const struct cycle *c);
/* All three, for a cycle whose results are all known. */
struct cycle_outcome report_cycle(struct memory *m, struct metrics *metrics, const struct cycle *c);
