/* Acting on decisions: one guarded statement per server and cycle. */
#pragma once

#include <libpq-fe.h>

#include "policy.h"

enum result {
        RESULT_TERMINATED,
        RESULT_CANCELLED,
        RESULT_LOGGED,
        RESULT_DRY_RUN,
        RESULT_GONE,
        RESULT_CHANGED,
        RESULT_DENIED,
        RESULT_FAILED,
        RESULT_UNKNOWN,             /* sent, but the result was lost with the connection */
        _RESULT_MAX,
};

const char *result_to_string(enum result r);
int result_from_string(const char *s);

/* The timestamp that identifies "the same session in the same state" for a limit. */
const char *limit_guard_column(enum limit_kind k);

/* The parameters of pg_action_sql for one judgement. */
struct action_batch {
        char *params[6];
        size_t n;                   /* decisions sent to the server */
        size_t *index;              /* batch position -> decision index */
};

/* Give log-only and dry-run decisions their result and put the rest in a
 * batch (results of those start as RESULT_FAILED). Returns the batch size:
 * 0 means nothing to send. */
size_t enforce_prepare(const struct judgement *j, enum result *results, struct action_batch *ret);
/* Read the per-decision results of pg_action_sql. -EBADMSG on a wrong shape. */
int enforce_read_result(const struct action_batch *b, const PGresult *res, enum result *results);
/* The statement was sent but its result is lost: each decision in the batch
 * may or may not have been signalled. */
void enforce_mark_unknown(const struct action_batch *b, enum result *results);
void action_batch_free(struct action_batch *b);
