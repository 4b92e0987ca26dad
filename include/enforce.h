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
        _RESULT_MAX,
};

const char *result_to_string(enum result r);
enum result result_from_string(const char *s);

/* The timestamp that identifies "the same session in the same state" for a limit. */
const char *limit_guard_column(enum limit_kind k);
int64_t limit_since(enum limit_kind k, const struct snapshot_row *row);

/* Apply the decisions (blocking): log-only and dry-run decisions get their
 * result without I/O; the rest go to the server in one statement. results[i]
 * belongs to j->decisions[i]. Returns 0, or -EIO when the statement failed
 * (every signalling decision is then RESULT_FAILED) with *ret_error set. */
int enforce(PGconn *conn, const struct judgement *j, enum result *results, const char **ret_error);
