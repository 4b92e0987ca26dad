/* Which sessions a rule or an exempt block names: lists of netmatch.h's
 * globs and address blocks, one per key, tested against a snapshot row. */
#pragma once

#include <stdbool.h>

#include "netmatch.h"

struct snapshot_row;

/* The filter keys of a rule, or an exempt block. queries match the
 * session's query text (its first 1024 bytes), read only for candidates. */
struct filter {
        struct name_list users, databases, applications;
        struct addr_list client_addresses;
        struct name_list queries;
        bool set;                   /* at least one key given */
};

/* Query text globs (queries) need the text of the sessions they judge. */
static inline bool filter_uses_query(const struct filter *f) {
        return f->queries.given;
}

/* Set f->set from the keys given; call once they are all parsed. */
void filter_finish(struct filter *f);

/* Free what the filter owns and zero it. */
void filter_done(struct filter *f);

/* Same lists in the same order. */
bool filter_equal(const struct filter *a, const struct filter *b);

/* Structurally, does every row that passes narrow also pass wide? True when
 * each key of wide is absent or written identically in narrow. Conservative:
 * false does not mean some row passes narrow only. */
bool filter_includes(const struct filter *wide, const struct filter *narrow);

/* Rule filters: true when the row passes EVERY given key (AND across keys,
 * OR within one key's list). A filter with no key given passes every row; a
 * given empty list passes none. */
bool filter_matches(const struct filter *f, const struct snapshot_row *row);

/* Exempt blocks: true when the row matches ANY entry of ANY given key (OR
 * across keys and entries). An empty or absent block exempts nothing. Global,
 * server and rule blocks are additive: a session is exempt from a rule when
 * any of the three exempts it. */
bool filter_exempts(const struct filter *exempt, const struct snapshot_row *row);
