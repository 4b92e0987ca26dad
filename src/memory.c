/* What one server remembers from one cycle to the next; see memory.h. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "macro.h"
#include "memory.h"

static void reported_free(struct reported *r, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(r[i].rule);
        free(r);
}

static void unknowns_free(struct memory *m) {
        for (size_t i = 0; i < m->n_unknowns; i++)
                unknown_signal_done(&m->unknowns[i]);
        free(m->unknowns);
        m->unknowns = NULL;
        m->n_unknowns = 0;
}

static void warned_caps_free(struct warned_cap *w, size_t n) {
        for (size_t i = 0; i < n; i++) {
                free(w[i].rule);
                free(w[i].value);
        }
        free(w);
}

static void warned_holders_free(struct warned_holder *w, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(w[i].name);
        free(w);
}

void memory_done(struct memory *m) {
        reported_free(m->reported, m->n_reported);
        reported_free(m->reported_now, m->n_reported_now);
        unknowns_free(m);
        for (size_t i = 0; i < m->n_escalations; i++)
                free(m->escalations[i].rule);
        free(m->escalations);
        free(m->ended);
        free(m->dying);
        free(m->warned_roots);
        warned_caps_free(m->warned_caps, m->n_warned_caps);
        warned_holders_free(m->warned_holders, m->n_warned_holders);
        free(m->held_since);
        for (size_t k = 0; k < m->n_denied_roles; k++)
                free(m->denied_roles[k]);
        free(m->denied_roles);
        *m = (struct memory) {};
}

static const struct rule *rule_named(const struct server *srv, const char *rule) {
        for (size_t i = 0; i < srv->n_rules; i++)
                if (strcmp(srv->rules[i].name, rule) == 0)
                        return &srv->rules[i];
        return NULL;
}

void memory_switch(struct memory *m, const struct server *srv) {
        size_t kept = 0;

        for (size_t i = 0; i < m->n_reported; i++)
                if (rule_named(srv, m->reported[i].rule))
                        m->reported[kept++] = m->reported[i];
                else
                        free(m->reported[i].rule);
        m->n_reported = kept;
        kept = 0;
        for (size_t i = 0; i < m->n_escalations; i++)
                if (rule_escalates(rule_named(srv, m->escalations[i].rule)))
                        m->escalations[kept++] = m->escalations[i];
                else
                        free(m->escalations[i].rule);
        m->n_escalations = kept;
}

void memory_warn_caps(struct memory *m, const struct server *srv, const struct snapshot *snap,
                      const struct judgement *j) {
        struct warned_cap *now = xcalloc(j->n_caps + m->n_warned_caps + 1, sizeof(*now));
        size_t n = 0;

        /* A rule not judged at this poll (its role, its threshold) cannot
         * say its groups went under: what was said stays said. */
        for (size_t k = 0; k < m->n_warned_caps; k++) {
                const struct rule *rule = rule_named(srv, m->warned_caps[k].rule);
                if (rule && !policy_rule_active(rule, snap))
                        now[n++] = (struct warned_cap) { xstrdup(m->warned_caps[k].rule),
                                                         m->warned_caps[k].value ? xstrdup(m->warned_caps[k].value)
                                                                                 : NULL };
        }

        for (size_t i = 0; i < j->n_caps; i++) {
                const struct cap_group *g = &j->caps[i];
                bool seen = false;

                for (size_t k = 0; k < m->n_warned_caps && !seen; k++)
                        seen = strcmp(m->warned_caps[k].rule, g->rule->name) == 0 &&
                               (m->warned_caps[k].value == g->value ||
                                (m->warned_caps[k].value && g->value && strcmp(m->warned_caps[k].value, g->value) == 0));
                if (!seen && g->short_by == 0)
                        continue;   /* over, but being brought under */
                if (!seen)
                        log_cap_short(srv->name, g);
                now[n++] = (struct warned_cap) { xstrdup(g->rule->name), g->value ? xstrdup(g->value) : NULL };
        }
        warned_caps_free(m->warned_caps, m->n_warned_caps);
        m->warned_caps = now;
        m->n_warned_caps = n;
}

static bool same_holder(const struct warned_holder *w, const struct horizon_holder *h) {
        return w->kind == h->kind && strcmp(w->name, h->name) == 0 &&
               (h->kind != HOLDER_PREPARED || w->prepared_at == h->prepared_at);
}

void memory_warn_holders(struct memory *m, const char *server, const struct snapshot *snap,
                         const struct judgement *j) {
        struct warned_holder *now;
        size_t n = 0;

        /* A poll that did not read them (no max_xmin_age rule now) says
         * nothing of them: forget. */
        now = xcalloc(j->n_holders + 1, sizeof(*now));
        for (size_t i = 0; i < j->n_holders; i++) {
                const struct holder_verdict *v = &j->holders[i];
                const struct warned_holder *before = NULL;
                int64_t at;

                if (!v->over)
                        continue;
                for (size_t k = 0; k < m->n_warned_holders && !before; k++)
                        if (same_holder(&m->warned_holders[k], v->holder))
                                before = &m->warned_holders[k];
                at = before ? before->warned_at : TS_NULL;
                /* no clock (now or then): say it rather than compute with TS_NULL */
                if (!before || snap->now == TS_NULL || before->warned_at == TS_NULL ||
                    snap->now - before->warned_at >= HOLDER_WARN_EVERY_USEC) {
                        log_horizon_holder(server, v, before != NULL);
                        at = snap->now;
                }
                now[n++] = (struct warned_holder) { .kind = v->holder->kind, .name = xstrdup(v->holder->name),
                                                    .prepared_at = v->holder->prepared_at, .warned_at = at };
        }
        warned_holders_free(m->warned_holders, m->n_warned_holders);
        m->warned_holders = now;
        m->n_warned_holders = n;
}

size_t memory_watched_pids(const struct memory *m, int32_t **ret) {
        int32_t *pids = xcalloc(m->n_escalations + m->n_unknowns + 1, sizeof(int32_t));
        size_t n = 0;

        for (size_t i = 0; i < m->n_escalations; i++)
                pids[n++] = m->escalations[i].pid;
        for (size_t i = 0; i < m->n_unknowns; i++)
                pids[n++] = m->unknowns[i].id.pid;
        *ret = pids;
        return n;
}

void memory_add_unknown(struct memory *m, const struct decision *d) {
        const struct snapshot_row *row = d->row;

        m->unknowns = xreallocarray(m->unknowns, m->n_unknowns + 1, sizeof(*m->unknowns));
        m->unknowns[m->n_unknowns++] = (struct unknown_signal) {
                .id = session_id_of(row), .action = d->action, .rule = xstrdup(d->rule->name),
                .user = xstrdup(row->user), .database = xstrdup(row->database),
                .application = xstrdup(row->application), .client_addr = xstrdup(row->client_addr),
        };
}

static bool in_snapshot(const struct snapshot *snap, struct session_id id) {
        for (size_t r = 0; r < snap->n_rows; r++)
                if (session_id_equal(id, session_id_of(&snap->rows[r])))
                        return true;
        return false;
}

void memory_before_judge(struct memory *m, struct metrics *metrics, const char *server, const struct snapshot *snap) {
        size_t kept = 0;

        /* The snapshot read their pids (memory_watched_pids): not in it is gone. */
        for (size_t i = 0; i < m->n_unknowns; i++) {
                const struct unknown_signal *u = &m->unknowns[i];
                enum outcome o = in_snapshot(snap, u->id) ? OUTCOME_PRESENT : OUTCOME_GONE;
                log_outcome(server, u, o);
                metrics_count_outcome(metrics, server, u->rule, u->action, o);
        }
        unknowns_free(m);

        for (size_t i = 0; i < m->n_escalations; i++) {
                bool running = false;
                for (size_t r = 0; r < snap->n_rows && !running; r++)
                        running = escalation_matches(&m->escalations[i], &snap->rows[r]);
                if (running)
                        m->escalations[kept++] = m->escalations[i];
                else
                        free(m->escalations[i].rule);
        }
        m->n_escalations = kept;

        free(m->dying);
        m->dying = xcalloc(m->n_ended + 1, sizeof(*m->dying));
        m->n_dying = 0;
        for (size_t i = 0; i < m->n_ended; i++)
                for (size_t r = 0; r < snap->n_rows; r++) {
                        const struct snapshot_row *row = &snap->rows[r];
                        if (session_id_equal(m->ended[i], session_id_of(row))) {
                                log_warning(server, "pid %" PRId32 " is still there after it was "
                                            "terminated (state %s); it may be stuck in an uninterruptible wait",
                                            row->pid, session_state_to_string(row->state));
                                m->dying[m->n_dying++] = m->ended[i];
                                break;
                        }
                }
        m->n_ended = 0;
        memory_track_waiters(m, snap);
}

void memory_track_waiters(struct memory *m, const struct snapshot *snap) {
        struct lock_seen *now = xcalloc(snap->n_rows + 1, sizeof(*now));
        size_t n = 0;

        for (size_t r = 0; r < snap->n_rows; r++) {
                const struct snapshot_row *row = &snap->rows[r];
                const struct lock_seen *before;

                if (row->lock_waiting || row->wait_start != TS_NULL)
                        now[n++] = (struct lock_seen) { session_id_of(row), TS_NULL };
                else if ((before = lock_seen_find(m->held_since, m->n_held_since, session_id_of(row))))
                        now[n++] = (struct lock_seen) { before->id,
                                                         before->since != TS_NULL ? before->since : snap->now };
        }
        qsort(now, n, sizeof(*now), lock_seen_cmp);
        free(m->held_since);
        m->held_since = now;
        m->n_held_since = n;
}

void memory_warn_roots(struct memory *m, const char *server, const struct judgement *j) {
        struct session_id *now = xcalloc(j->n_warnings + 1, sizeof(*now));

        for (size_t i = 0; i < j->n_warnings; i++) {
                struct session_id id = { j->warnings[i].pid, j->warnings[i].backend_start };
                bool seen = false;

                for (size_t k = 0; k < m->n_warned_roots && !seen; k++)
                        seen = session_id_equal(m->warned_roots[k], id);
                if (!seen)
                        log_chain_warning(server, &j->warnings[i]);
                now[i] = id;
        }
        free(m->warned_roots);
        m->warned_roots = now;
        m->n_warned_roots = j->n_warnings;
}

bool memory_reported_before(const struct memory *m, const struct reported *k) {
        for (size_t i = 0; i < m->n_reported; i++)
                if (session_id_equal(m->reported[i].id, k->id) && m->reported[i].since == k->since &&
                    strcmp(m->reported[i].rule, k->rule) == 0)
                        return true;
        return false;
}

bool memory_role_denied_before(struct memory *m, const char *role) {
        for (size_t i = 0; i < m->n_denied_roles; i++)
                if (strcmp(m->denied_roles[i], role) == 0)
                        return true;
        m->denied_roles = xreallocarray(m->denied_roles, m->n_denied_roles + 1, sizeof(char *));
        m->denied_roles[m->n_denied_roles++] = xstrdup(role);
        return false;
}
