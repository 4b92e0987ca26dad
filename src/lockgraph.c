/* The lock chains of one snapshot; see lockgraph.h.
 *
 * pg_blocking_pids() lists, for each waiter, every session in its way: the
 * holders of the lock and every waiter ahead of it in the queue. A queue of
 * n sessions is n(n-1)/2 entries, and walking up from each waiter (as this
 * file once did) is quadratic in them. Here:
 *
 * 1. pids become node numbers through one hash table; the blockers of each
 *    row, duplicates and the row itself dropped, become one edge list (CSR).
 * 2. Reduction, exact for reachability: a waiter V whose blockers include a
 *    waiter Y that began to wait before it (the latest such Y, by wait
 *    start then pid) reaches every blocker of Y through Y, so those edges
 *    of V go. By induction on that order every dropped edge stays a path.
 *    A queue becomes a path: each waiter behind the one ahead of it.
 * 3. Strongly connected components (a deadlock the server has not broken
 *    yet), then one pass in topological order that carries, per node, the
 *    set of waiters behind it as a bitset: the counts are of distinct
 *    sessions whatever the shape (diamonds, several holders).
 *
 * blocking_since comes from the direct edges before the reduction. */
#include <stdlib.h>
#include <string.h>

#include "lockgraph.h"
#include "macro.h"

int lock_seen_cmp(const void *a, const void *b) {
        const struct lock_seen *x = a, *y = b;
        if (x->id.pid != y->id.pid)
                return x->id.pid < y->id.pid ? -1 : 1;
        return x->id.backend_start < y->id.backend_start ? -1 : x->id.backend_start > y->id.backend_start;
}

const struct lock_seen *lock_seen_find(const struct lock_seen *seen, size_t n, struct session_id id) {
        struct lock_seen key = { id, 0 };
        return n > 0 ? bsearch(&key, seen, n, sizeof(*seen), lock_seen_cmp) : NULL;
}

/* pid -> node, open addressing. */
struct pid_map {
        int32_t *pids;
        size_t *nodes;
        size_t cap, n;
};

static size_t slot_of(const struct pid_map *m, int32_t pid) {
        size_t h = (size_t) ((uint32_t) pid * UINT32_C(2654435761)) & (m->cap - 1);
        while (m->nodes[h] != SIZE_MAX && m->pids[h] != pid)
                h = (h + 1) & (m->cap - 1);
        return h;
}

static void map_init(struct pid_map *m, size_t want) {
        size_t cap = 64;
        while (cap < 2 * want)
                cap *= 2;
        *m = (struct pid_map) { xcalloc(cap, sizeof(int32_t)), xmalloc(cap * sizeof(size_t)), cap, 0 };
        memset(m->nodes, 0xff, cap * sizeof(size_t));
}

static void map_free(struct pid_map *m) {
        free(m->pids);
        free(m->nodes);
}

/* Adds pid -> node unless pid is there; returns the pid's node. */
static size_t map_add(struct pid_map *m, int32_t pid, size_t node) {
        size_t h = slot_of(m, pid);

        if (m->nodes[h] != SIZE_MAX)
                return m->nodes[h];
        if (2 * (m->n + 1) > m->cap) {
                struct pid_map bigger;
                map_init(&bigger, m->cap);
                for (size_t i = 0; i < m->cap; i++)
                        if (m->nodes[i] != SIZE_MAX) {
                                size_t s = slot_of(&bigger, m->pids[i]);
                                bigger.pids[s] = m->pids[i];
                                bigger.nodes[s] = m->nodes[i];
                        }
                bigger.n = m->n;
                map_free(m);
                *m = bigger;
                h = slot_of(m, pid);
        }
        m->pids[h] = pid;
        m->nodes[h] = node;
        m->n++;
        return node;
}

/* Edges in CSR form: the targets of node v are adj[off[v]] .. adj[off[v + 1] - 1]. */
struct edges {
        size_t *off;
        size_t *adj;
};

static void edges_free(struct edges *e) {
        free(e->off);
        free(e->adj);
}

/* Wait order: earlier wait start first, then lower pid. */
static bool waits_before(const struct snapshot_row *a, const struct snapshot_row *b) {
        return a->wait_start != b->wait_start ? a->wait_start < b->wait_start : a->pid < b->pid;
}

/* Step 2: drop from each waiter the edges that the waiter just ahead of it
 * already has. mark[] is scratch, one per node, all SIZE_MAX. */
static void reduce(const struct snapshot *snap, size_t n_nodes, const struct edges *raw, size_t *mark,
                   struct edges *ret) {
        size_t n = snap->n_rows, k = 0;

        ret->off = xcalloc(n_nodes + 1, sizeof(size_t));
        ret->adj = xcalloc(raw->off[n_nodes] + 1, sizeof(size_t));
        for (size_t v = 0; v < n_nodes; v++) {
                size_t y = SIZE_MAX;

                ret->off[v] = k;
                if (v < n && snap->rows[v].wait_start != TS_NULL)
                        for (size_t i = raw->off[v]; i < raw->off[v + 1]; i++) {
                                size_t u = raw->adj[i];
                                if (u < n && snap->rows[u].wait_start != TS_NULL &&
                                    waits_before(&snap->rows[u], &snap->rows[v]) &&
                                    (y == SIZE_MAX || waits_before(&snap->rows[y], &snap->rows[u])))
                                        y = u;
                        }
                if (y != SIZE_MAX)
                        for (size_t i = raw->off[y]; i < raw->off[y + 1]; i++)
                                mark[raw->adj[i]] = v;
                for (size_t i = raw->off[v]; i < raw->off[v + 1]; i++)
                        if (y == SIZE_MAX || mark[raw->adj[i]] != v)
                                ret->adj[k++] = raw->adj[i];
        }
        ret->off[n_nodes] = k;
}

/* Step 3a: Tarjan's strongly connected components, without recursion.
 * comp[v] numbers the components in the order they complete: a component
 * completes after every component it reaches (its blockers), so the
 * waiters at the far end of the chains complete last. members lists the
 * nodes component by component, first[c] .. first[c + 1] - 1. */
static size_t components(size_t n_nodes, const struct edges *e, size_t *comp, size_t *members, size_t *first) {
        _cleanup_free_ size_t *index = xmalloc((n_nodes + 1) * sizeof(size_t));
        _cleanup_free_ size_t *low = xmalloc((n_nodes + 1) * sizeof(size_t));
        _cleanup_free_ size_t *stack = xmalloc((n_nodes + 1) * sizeof(size_t));
        _cleanup_free_ size_t *call = xmalloc((n_nodes + 1) * sizeof(size_t));   /* DFS path */
        _cleanup_free_ size_t *next = xmalloc((n_nodes + 1) * sizeof(size_t));   /* next edge to try */
        _cleanup_free_ bool *on_stack = xcalloc(n_nodes + 1, sizeof(bool));
        size_t counter = 0, n_stack = 0, n_comp = 0, n_members = 0;

        for (size_t v = 0; v < n_nodes; v++)
                index[v] = SIZE_MAX;
        for (size_t s = 0; s < n_nodes; s++) {
                size_t depth = 0;

                if (index[s] != SIZE_MAX)
                        continue;
                call[depth++] = s;
                index[s] = low[s] = counter++;
                next[s] = e->off[s];
                stack[n_stack++] = s;
                on_stack[s] = true;
                while (depth > 0) {
                        size_t v = call[depth - 1];

                        if (next[v] < e->off[v + 1]) {
                                size_t w = e->adj[next[v]++];
                                if (index[w] == SIZE_MAX) {
                                        index[w] = low[w] = counter++;
                                        next[w] = e->off[w];
                                        stack[n_stack++] = w;
                                        on_stack[w] = true;
                                        call[depth++] = w;
                                } else if (on_stack[w] && index[w] < low[v])
                                        low[v] = index[w];
                                continue;
                        }
                        depth--;
                        if (depth > 0 && low[v] < low[call[depth - 1]])
                                low[call[depth - 1]] = low[v];
                        if (low[v] != index[v])
                                continue;
                        first[n_comp] = n_members;
                        for (;;) {
                                size_t w = stack[--n_stack];
                                on_stack[w] = false;
                                comp[w] = n_comp;
                                members[n_members++] = w;
                                if (w == v)
                                        break;
                        }
                        n_comp++;
                }
        }
        first[n_comp] = n_members;
        return n_comp;
}

/* Step 3b: the waiters behind each node, as bits (one per waiter), carried
 * from the far end of the chains towards their roots. */
static void count_behind(const struct snapshot *snap, size_t n_nodes, const struct edges *e, struct lock_node *nodes) {
        size_t n = snap->n_rows, n_waiters = 0, words;
        _cleanup_free_ size_t *bit = xmalloc((n_nodes + 1) * sizeof(size_t));
        _cleanup_free_ size_t *comp = xmalloc((n_nodes + 1) * sizeof(size_t));
        _cleanup_free_ size_t *members = xmalloc((n_nodes + 1) * sizeof(size_t));
        _cleanup_free_ size_t *first = xmalloc((n_nodes + 2) * sizeof(size_t));
        _cleanup_free_ uint64_t **behind = NULL;
        size_t n_comp;

        for (size_t v = 0; v < n_nodes; v++)
                bit[v] = v < n && snap->rows[v].wait_start != TS_NULL ? n_waiters++ : SIZE_MAX;
        if (n_waiters == 0)
                return;
        words = (n_waiters + 63) / 64;
        n_comp = components(n_nodes, e, comp, members, first);
        behind = xcalloc(n_comp + 1, sizeof(*behind));

        for (size_t c = n_comp; c-- > 0;) {
                uint64_t *set = behind[c];
                size_t outside = 0, inside = 0;
                bool leads_on = false;

                for (size_t w = 0; set && w < words; w++)
                        outside += (size_t) __builtin_popcountll(set[w]);
                for (size_t i = first[c]; i < first[c + 1]; i++) {
                        size_t v = members[i];
                        inside += bit[v] != SIZE_MAX;
                        for (size_t k = e->off[v]; k < e->off[v + 1] && !leads_on; k++)
                                leads_on = comp[e->adj[k]] != c;
                }
                /* The members of a cycle wait behind each other: each has
                 * the others behind it, never itself. */
                for (size_t i = first[c]; i < first[c + 1]; i++) {
                        size_t v = members[i];
                        nodes[v].n_blocked = outside + (first[c + 1] - first[c] > 1 ? inside - (bit[v] != SIZE_MAX) : 0);
                }
                if (leads_on) {
                        if (!set)
                                set = behind[c] = xcalloc(words, sizeof(uint64_t));
                        for (size_t i = first[c]; i < first[c + 1]; i++)
                                if (bit[members[i]] != SIZE_MAX)
                                        set[bit[members[i]] / 64] |= UINT64_C(1) << (bit[members[i]] % 64);
                        for (size_t i = first[c]; i < first[c + 1]; i++) {
                                size_t v = members[i];
                                for (size_t k = e->off[v]; k < e->off[v + 1]; k++) {
                                        size_t t = comp[e->adj[k]];
                                        if (t == c)
                                                continue;
                                        if (!behind[t])
                                                behind[t] = xcalloc(words, sizeof(uint64_t));
                                        for (size_t w = 0; w < words; w++)
                                                behind[t][w] |= set[w];
                                }
                        }
                }
                free(behind[c]);
                behind[c] = NULL;
        }
}

void lock_graph_build(const struct snapshot *snap, const struct lock_seen *held_since, size_t n_held_since,
                      struct lock_graph *ret) {
        size_t n = snap->n_rows, n_nodes, n_listed = 0, k = 0;
        struct pid_map map;
        _cleanup_free_ size_t *target = NULL, *mark = NULL;
        struct edges raw = {}, reduced = {};
        struct lock_graph g = {};

        for (size_t i = 0; i < n; i++)
                n_listed += snap->rows[i].n_blockers;
        map_init(&map, n + 1);
        /* Rows with the same pid (a pid reused within one snapshot cannot
         * happen; be safe) resolve to the first. */
        for (size_t i = 0; i < n; i++)
                map_add(&map, snap->rows[i].pid, i);
        /* Step 1: every listed pid as a node; pids without a row are orphans. */
        target = xcalloc(n_listed + 1, sizeof(size_t));
        for (size_t i = 0; i < n; i++)
                for (size_t b = 0; b < snap->rows[i].n_blockers; b++) {
                        int32_t pid = snap->rows[i].blockers[b];
                        size_t u = map_add(&map, pid, n + g.n_orphans);
                        if (u == n + g.n_orphans) {
                                g.orphan_pids = xreallocarray(g.orphan_pids, g.n_orphans + 1, sizeof(int32_t));
                                g.orphan_pids[g.n_orphans++] = pid;
                        }
                        target[k++] = u;
                }
        map_free(&map);
        n_nodes = n + g.n_orphans;
        g.nodes = xcalloc(n_nodes + 1, sizeof(*g.nodes));
        mark = xmalloc((n_nodes + 1) * sizeof(size_t));
        for (size_t v = 0; v < n_nodes; v++) {
                mark[v] = SIZE_MAX;
                g.nodes[v].blocking_since = TS_NULL;
                g.nodes[v].waiter = v < n && snap->rows[v].wait_start != TS_NULL;
        }

        /* The edges, each once, none to itself; and the oldest direct wait. */
        raw.off = xcalloc(n_nodes + 1, sizeof(size_t));
        raw.adj = xcalloc(n_listed + 1, sizeof(size_t));
        k = 0;
        for (size_t v = 0, t = 0; v < n_nodes; v++) {
                const struct snapshot_row *r = v < n ? &snap->rows[v] : NULL;

                raw.off[v] = k;
                mark[v] = v;
                for (size_t b = 0; r && b < r->n_blockers; b++, t++) {
                        size_t u = target[t];
                        struct lock_node *to = &g.nodes[u];
                        if (mark[u] == v)
                                continue;
                        mark[u] = v;
                        raw.adj[k++] = u;
                        if (r->wait_start != TS_NULL &&
                            (to->blocking_since == TS_NULL || r->wait_start < to->blocking_since))
                                to->blocking_since = r->wait_start;
                }
        }
        raw.off[n_nodes] = k;
        for (size_t v = 0; v < n_nodes; v++)
                mark[v] = SIZE_MAX;

        reduce(snap, n_nodes, &raw, mark, &reduced);
        edges_free(&raw);
        count_behind(snap, n_nodes, &reduced, g.nodes);
        edges_free(&reduced);

        for (size_t v = 0; v < n_nodes; v++) {
                struct lock_node *node = &g.nodes[v];
                const struct lock_seen *seen;

                node->root = node->n_blocked > 0 && !node->waiter;
                if (!node->root || v >= n || node->blocking_since == TS_NULL ||
                    !(seen = lock_seen_find(held_since, n_held_since, session_id_of(&snap->rows[v]))))
                        continue;
                /* It was still waiting at an earlier poll: it has blocked
                 * others as a root since it got its lock, which was after
                 * that poll; the first poll that saw it holding is the
                 * sparing bound (TS_NULL: that is this poll). */
                int64_t since = seen->since != TS_NULL ? seen->since : snap->now;
                if (since > node->blocking_since)
                        node->blocking_since = since;
        }
        *ret = g;
}

void lock_graph_free(struct lock_graph *g) {
        free(g->nodes);
        free(g->orphan_pids);
        *g = (struct lock_graph) {};
}
