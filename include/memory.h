/* What one server remembers from one cycle to the next. Rules are named,
 * never pointed at: memories outlive the configuration a reload frees. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "enforce.h"
#include "lockgraph.h"
#include "metrics.h"
#include "policy.h"

/* What makes a decision "the same one as last poll": same session, same
 * crossing of the same rule. */
struct reported {
        struct session_id id;
        int64_t since;
        char *rule;
};

struct warned_cap {
        char *rule;
        char *value;
};

/* A prepared transaction (gid, prepared at) or a slot (name) warned about,
 * and when (the server's clock). */
struct warned_holder {
        enum holder_kind kind;
        char *name;
        int64_t prepared_at;
        int64_t warned_at;
};

/* How often a holder that stays is said again: an hour. */
#define HOLDER_WARN_EVERY_USEC (INT64_C(3600) * 1000000)

struct memory {
        /* Log-only and dry-run decisions repeat every poll while the session
         * stays over its limit: each is logged once, when first seen. */
        struct reported *reported;
        size_t n_reported;
        /* The same, of the cycle being logged (batch by batch): it replaces
         * reported when the cycle ends. */
        struct reported *reported_now;
        size_t n_reported_now;
        /* Queries cancelled under a rule with escalate_after, watched until due. */
        struct escalation *escalations;
        size_t n_escalations;
        /* Sessions terminated last cycle: still there at the next poll is worth
         * a warning, and they are not judged again that cycle (dying). */
        struct session_id *ended;
        size_t n_ended;
        struct session_id *dying;
        size_t n_dying;
        /* Roots of lock chains that may not be signalled, already warned about. */
        struct session_id *warned_roots;
        size_t n_warned_roots;
        /* Signals whose result is unknown: the next snapshot says what
         * became of each session (an outcome entry). */
        struct unknown_signal *unknowns;
        size_t n_unknowns;
        /* Sessions seen waiting for a lock, and those of them seen holding
         * since (policy_input.held_since), sorted: kept while they are rows. */
        struct lock_seen *held_since;
        size_t n_held_since;
        /* Groups over a cap that could not be brought under, warned about:
         * kept while they stay over (rule name, value; NULL value: GROUP_ALL). */
        struct warned_cap *warned_caps;
        size_t n_warned_caps;
        /* Prepared transactions and slots at or over the smallest
         * max_xmin_age, warned about: kept while they stay over. */
        struct warned_holder *warned_holders;
        size_t n_warned_holders;
        /* Target roles a permission failure was already explained for. */
        char **denied_roles;
        size_t n_denied_roles;
};

void memory_done(struct memory *m);

/* The server runs under another configuration: memories of rules that are
 * gone (or no longer escalate) are dropped, the others carry over by name. */
void memory_switch(struct memory *m, const struct server *srv);

/* The pids a poll must read whatever their state: escalations being
 * watched and the sessions of unknown results. Returns how many. */
size_t memory_watched_pids(const struct memory *m, int32_t **ret);

/* Before judging snap: forget escalations whose query is over, warn about
 * (and hold back from judgement: dying) sessions terminated last cycle that
 * are still there, and log (and count) the outcome of each unknown result:
 * gone, or present (judged again). */
void memory_before_judge(struct memory *m, struct metrics *metrics, const char *server, const struct snapshot *snap);

/* A signal of this decision was sent and its result is unknown. */
void memory_add_unknown(struct memory *m, const struct decision *d);

/* From snap (part of memory_before_judge): every session waiting for a lock
 * now; every one that was waiting at the last poll and is not now, with
 * snap->now (the first poll that saw it holding) or the time it had. A
 * session that is no row of snap is forgotten: it neither waits nor blocks
 * anyone now (all waiters and all they wait for are rows when the graph is
 * read; with no waiter there is no graph), so any later wait behind it
 * begins after this poll. */
void memory_track_waiters(struct memory *m, const struct snapshot *snap);

/* Chains whose root may not be signalled: each root said once, for as long
 * as it stays one. */
void memory_warn_roots(struct memory *m, const char *server, const struct judgement *j);

/* Groups over a cap that cannot be brought under: each said once, until a
 * poll finds it at or under its cap. */
void memory_warn_caps(struct memory *m, const struct server *srv, const struct snapshot *snap,
                      const struct judgement *j);

/* Prepared transactions and slots that reach the smallest max_xmin_age:
 * each said when first seen over, again at most hourly (on the server's
 * clock, snap->now) while it stays over; forgotten once under or gone. */
void memory_warn_holders(struct memory *m, const char *server, const struct snapshot *snap,
                         const struct judgement *j);

/* Was this log-only or dry-run decision logged at the last cycle? */
bool memory_reported_before(const struct memory *m, const struct reported *k);
/* Was a permission failure on this target role explained before? Records it. */
bool memory_role_denied_before(struct memory *m, const char *role);

/* Does the rule escalate (cancel, then terminate after escalate_after)? */
static inline bool rule_escalates(const struct rule *r) {
        return r && r->action == ACTION_CANCEL && r->escalate_after_ms > 0;
}
