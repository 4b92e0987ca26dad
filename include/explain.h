/* pgsweeper --explain: one snapshot of every client session of each server
 * (and, with a max_xmin_age rule, of its prepared transactions and slots),
 * judged by the daemon's own policy, printed as a table or as JSON. It never
 * signals a backend and never writes to the journal or the metrics file. */
#pragma once

#include <stdbool.h>
#include <stdio.h>

#include "config.h"
#include "policy.h"

struct explain_options {
        const char *server;         /* only this server; NULL: every server */
        bool json;
        bool dry_run;               /* --dry-run: judge as a dry run would */
};

/* A server the configuration does not name: exit status 2. */
#define EXPLAIN_UNKNOWN_SERVER 2
/* A file that is not a capture: EX_CONFIG. */
#define EXPLAIN_BAD_CAPTURE 78

/* Explain every selected server on out; errors go to stderr. Returns the
 * exit status: 0, 1 when a server could not be explained (the others are
 * still shown), EXPLAIN_UNKNOWN_SERVER. */
int explain_run(const struct config *c, const struct explain_options *o, FILE *out);

/* --explain --from: the capture at path (capture.h) judged as live explain
 * judges a snapshot, at the capture's now(), connecting nowhere: each
 * captured server by the configured server of its name, or every one (or
 * the one of that name) by o->server's. The same output. Returns 0,
 * EXPLAIN_BAD_CAPTURE (the error said), EXPLAIN_UNKNOWN_SERVER. */
int explain_replay(const struct config *c, const struct explain_options *o, const char *path, FILE *out);

/* One session's verdict on a server, as explain shows it. */
struct explain_row {
        const char *server;
        const struct verdict *v;
};

/* A prepared transaction's or a replication slot's verdict on a server
 * (policy_judge()'s judgement.holders), as explain shows it after the
 * sessions. */
struct explain_holder_row {
        const char *server;
        const struct holder_verdict *v;
};

/* Rows in the order they are shown: over (furthest past its limit first),
 * then next (least time left first), then exempt, protected, none. */
void explain_sort(struct explain_row *rows, size_t n);
/* Holders in the order they are shown: those at or over the limit (warn)
 * first, each kind oldest first; then server, kind and name. */
void explain_sort_holders(struct explain_holder_row *rows, size_t n);
/* The table of sessions, header first; when there are holders, a blank
 * line and their table. */
void explain_print_text(const struct explain_row *rows, size_t n, const struct explain_holder_row *holders,
                        size_t n_holders, FILE *out);
/* One JSON array: the sessions, then the holders; every object has every
 * key (null where it does not apply). */
void explain_print_json(const struct explain_row *rows, size_t n, const struct explain_holder_row *holders,
                        size_t n_holders, FILE *out);

/* s escaped (escape_string) and cut to at most width characters, the last
 * one "…" when cut; never cut inside an escape. Newly allocated. */
char *explain_cell(const char *s, size_t width);
/* s as a JSON string (escape_json): decodes to s itself when s is UTF-8.
 * Newly allocated. */
char *explain_json_string(const char *s);
