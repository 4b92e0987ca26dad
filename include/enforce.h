/* Acting on decisions: guarded statements of at most ENFORCE_BATCH_MAX
 * victims each, one after another on the server's connection. */
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
        /* Not a result: a decision to signal whose batch was never sent (a
         * stop, a retirement or a failure came first). It is not logged; the
         * session is judged again at the next poll. */
        RESULT_NOT_SENT = -1,
};

const char *result_to_string(enum result r);
int result_from_string(const char *s);

/* What became of the session of an unknown result, as the next snapshot
 * shows it. */
enum outcome {
        OUTCOME_GONE,               /* no backend with that pid and backend_start */
        OUTCOME_PRESENT,            /* still there: judged again like any session */
        _OUTCOME_MAX,
};

const char *outcome_to_string(enum outcome o);
int outcome_from_string(const char *s);

/* A signal whose result is unknown, kept (with copies of what its entry
 * named) until the next snapshot says what became of the session. */
struct unknown_signal {
        struct session_id id;
        enum action action;
        char *rule, *user, *database, *application, *client_addr;
};

void unknown_signal_done(struct unknown_signal *u);

/* The timestamp that identifies "the same session in the same state" for a limit. */
const char *limit_guard_column(enum limit_kind k);

/* The victims of one action statement: a storm of 500 victims is 5
 * statements, each bounded by statement_timeout, so a slow host costs the
 * audit trail of one batch at most, never of the whole cycle. */
#define ENFORCE_BATCH_MAX 100

/* The parameters of pg_action_sql for one batch. */
struct action_batch {
        char *params[6];
        size_t n;                   /* decisions sent to the server */
        size_t *index;              /* batch position -> decision index */
};

/* Give log-only and dry-run decisions their result; the others start as
 * RESULT_NOT_SENT. Returns how many decisions are to be signalled. */
size_t enforce_prepare(const struct judgement *j, enum result *results);
/* The next batch: up to ENFORCE_BATCH_MAX decisions still RESULT_NOT_SENT
 * from *next on (their results become RESULT_FAILED until read); *next
 * moves past the last one taken. Returns the batch size: 0, nothing left. */
size_t enforce_next_batch(const struct judgement *j, enum result *results, size_t *next, struct action_batch *ret);
/* The index of the decision after the batch's last one (0 for none). */
size_t action_batch_end(const struct action_batch *b);
/* Read the per-decision results of pg_action_sql. -EBADMSG on a wrong shape. */
int enforce_read_result(const struct action_batch *b, const PGresult *res, enum result *results);
/* The statement was sent but its result is lost: each decision in the batch
 * may or may not have been signalled. */
void enforce_mark_unknown(const struct action_batch *b, enum result *results);
void action_batch_free(struct action_batch *b);
