/* The lock chains of one snapshot: who waits behind whom, which sessions are
 * roots, and since when each has been blocking. Pure, like the policy that
 * uses it. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy.h"

/* A session's place in the lock graph of one snapshot. */
struct lock_node {
        bool waiter;                /* waits for a lock (wait_start set) */
        bool root;                  /* others wait behind it and it waits for nobody */
        size_t n_blocked;           /* distinct sessions waiting behind it, directly or through others */
        /* Since when it has been blocking someone, at the earliest: the
         * oldest wait of the sessions waiting for it directly (a session
         * further down a chain may have waited longer, but for someone
         * else: this one was not in its way yet), and for a root no earlier
         * than held_since says (it was still waiting itself). TS_NULL:
         * nobody waits for it. */
        int64_t blocking_since;
};

/* The chains of a snapshot: nodes[i] for rows[i], then one node per pid
 * that sessions wait for but that has no row (pid 0, a prepared
 * transaction; or a backend gone meanwhile), orphan_pids[k] for
 * nodes[n_rows + k]. Cycles (a deadlock not yet broken) count each member
 * behind the others. */
struct lock_graph {
        struct lock_node *nodes;
        int32_t *orphan_pids;
        size_t n_orphans;
};

/* held_since: sessions seen waiting for a lock at an earlier poll (sorted by
 * pid, then backend_start; see lock_seen_cmp), each with the server clock of
 * the first poll that saw it no longer waiting (TS_NULL: waiting at the last
 * one). A root listed there cannot have blocked anyone as a root before that
 * poll: its blocking_since is not earlier. NULL when nothing is remembered
 * (--explain, a first poll): the waits behind the root are all there is. */
struct lock_seen {
        struct session_id id;
        int64_t since;
};

int lock_seen_cmp(const void *a, const void *b);
const struct lock_seen *lock_seen_find(const struct lock_seen *seen, size_t n, struct session_id id);

/* Linear in the rows and the blockers listed (pg_blocking_pids() lists, for
 * each waiter of a queue, every waiter ahead of it: quadratic in the queue,
 * reduced here before the walk), plus the counting: one bit per waiter for
 * each node that others wait for, in one pass in topological order. */
void lock_graph_build(const struct snapshot *snap, const struct lock_seen *held_since, size_t n_held_since,
                      struct lock_graph *ret);
void lock_graph_free(struct lock_graph *g);
