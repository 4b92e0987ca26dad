/* Who breaks which rule, and when the next one will. Pure: everything it
 * knows comes in through its arguments. */
#include <stdlib.h>
#include <string.h>

#include "filter.h"
#include "lockgraph.h"
#include "macro.h"
#include "netmatch.h"
#include "policy.h"
#include "snapshot.h"

static const char *const state_names[_STATE_MAX] = {
        [STATE_UNKNOWN] = "",
        [STATE_ACTIVE] = "active",
        [STATE_IDLE] = "idle",
        [STATE_IDLE_IN_TRANSACTION] = "idle in transaction",
        [STATE_IDLE_IN_TRANSACTION_ABORTED] = "idle in transaction (aborted)",
        [STATE_FASTPATH] = "fastpath function call",
        [STATE_DISABLED] = "disabled",
};

DEFINE_STRING_TABLE_LOOKUP(session_state, enum session_state, state_names)

static const char *const holder_names[_HOLDER_MAX] = {
        [HOLDER_SESSION] = "session",
        [HOLDER_PREPARED] = "prepared",
        [HOLDER_SLOT] = "slot",
};

DEFINE_STRING_TABLE_TO_STRING(holder_kind, enum holder_kind, holder_names)

static const char *const verdict_names[_VERDICT_MAX] = {
        [VERDICT_NONE] = "none",
        [VERDICT_OVER] = "over",
        [VERDICT_NEXT] = "next",
        [VERDICT_EXEMPT] = "exempt",
        [VERDICT_PROTECTED] = "protected",
};

static const char *const reason_names[_REASON_MAX] = {
        [REASON_NO_RULE] = "no-rule",
        [REASON_NO_LIMIT] = "no-limit",
        [REASON_LIMIT] = "limit",
        [REASON_ESCALATION] = "escalation",
        [REASON_EXEMPT_GLOBAL] = "exempt-global",
        [REASON_EXEMPT_SERVER] = "exempt-server",
        [REASON_EXEMPT_RULE] = "exempt-rule",
        [REASON_NOT_CLIENT] = "not-client",
        [REASON_OWN_CONNECTION] = "own-connection",
        [REASON_OWN_ROLE] = "own-role",
        [REASON_SUPERUSER] = "superuser",
        [REASON_DYING] = "dying",
        [REASON_BELOW_THRESHOLD] = "below-threshold",
};

DEFINE_STRING_TABLE_LOOKUP(verdict_kind, enum verdict_kind, verdict_names)
DEFINE_STRING_TABLE_LOOKUP(verdict_reason, enum verdict_reason, reason_names)

void snapshot_free(struct snapshot *s) {
        snapshot_idle_keys_free(s);
        free(s->groups);
        free(s->rows);
        free(s->strings);
        free(s->blocker_pool);
        free(s->holders);
        *s = (struct snapshot) {};
}

void judgement_free(struct judgement *j) {
        free(j->holders);
        free(j->caps);
        free(j->decisions);
        free(j->verdicts);
        free(j->warnings);
        *j = (struct judgement) { .next_deadline = INT64_MAX };
}

int64_t limit_since(enum limit_kind k, const struct snapshot_row *row) {
        switch (k) {
        case LIMIT_IDLE:
                return row->state == STATE_IDLE ? row->state_change : TS_NULL;
        case LIMIT_IDLE_IN_TRANSACTION:
                return row->state == STATE_IDLE_IN_TRANSACTION || row->state == STATE_IDLE_IN_TRANSACTION_ABORTED ?
                               row->state_change : TS_NULL;
        case LIMIT_QUERY_DURATION:
                return row->state == STATE_ACTIVE || row->state == STATE_FASTPATH ? row->query_start : TS_NULL;
        case LIMIT_TRANSACTION_AGE:
                return row->xact_start;
        case LIMIT_SESSION_AGE:
                return row->backend_start;
        case LIMIT_BLOCKING:
                return row->state_change;   /* not the clock (the waits behind it are): what the guard checks */
        case LIMIT_LOCK_WAIT:
                return row->wait_start != TS_NULL ? row->query_start : TS_NULL;
        case LIMIT_XMIN_AGE:
                return row->xmin_age >= 0 ? row->xact_start : TS_NULL;   /* not a clock: what the guard checks */
        case LIMIT_SESSIONS:
                return row->state == STATE_IDLE ? row->state_change : TS_NULL;   /* the guard: still idle since then */
        default:
                return TS_NULL;
        }
}

/* Own connections are recognised by (pid, backend_start) among this
 * process's connections to the same cluster, never by pid alone: pids repeat
 * across servers. Another pgsweeper is recognised by its login role, which
 * only someone holding pgsweeper's credentials can use, together with its
 * application_name; the name alone would be a free pass for anyone. */
static bool own_connection(const struct policy_input *in, const struct snapshot_row *row) {
        for (size_t i = 0; i < in->n_own; i++)
                if (session_id_equal(in->own[i], session_id_of(row)))
                        return true;
        return false;
}

static bool own_role(const struct policy_input *in, const struct snapshot_row *row) {
        return in->own_role && strcmp(row->user, in->own_role) == 0 &&
               strncmp(row->application, "pgsweeper", strlen("pgsweeper")) == 0;
}

bool policy_is_own(const struct policy_input *in, const struct snapshot_row *row) {
        return own_connection(in, row) || own_role(in, row);
}

static bool is_dying(const struct policy_input *in, const struct snapshot_row *row) {
        for (size_t i = 0; i < in->n_dying; i++)
                if (session_id_equal(in->dying[i], session_id_of(row)))
                        return true;
        return false;
}

/* Built-in protection: never judged, whatever the rules say. A session
 * terminated last cycle that has not exited yet is not judged again (it
 * would be signalled and logged twice). */
static bool protected_session(const struct policy_input *in, const struct snapshot_row *row,
                              enum verdict_reason *why) {
        *why = !row->client_backend ? REASON_NOT_CLIENT :
               own_connection(in, row) ? REASON_OWN_CONNECTION :
               own_role(in, row) ? REASON_OWN_ROLE :
               row->superuser && !in->server->terminate_superusers ? REASON_SUPERUSER :
               is_dying(in, row) ? REASON_DYING : REASON_NO_RULE;
        return *why != REASON_NO_RULE;
}

/* Exempt blocks are additive: global, then the server's, then the rule's.
 * The first two do not depend on the rule: checked once per session. */
static bool exempt_from_server(const struct server *srv, const struct snapshot_row *row,
                               enum verdict_reason *why) {
        *why = srv->global_exempt && filter_exempts(srv->global_exempt, row) ? REASON_EXEMPT_GLOBAL :
               filter_exempts(&srv->exempt, row) ? REASON_EXEMPT_SERVER : REASON_NO_RULE;
        return *why != REASON_NO_RULE;
}

bool escalation_matches(const struct escalation *e, const struct snapshot_row *row) {
        return e->pid == row->pid && e->backend_start == row->backend_start && e->query_start == row->query_start &&
               (row->state == STATE_ACTIVE || row->state == STATE_FASTPATH);
}

static const struct escalation *find_escalation(const struct policy_input *in, const struct snapshot_row *row,
                                                const struct rule *rule) {
        for (size_t i = 0; i < in->n_escalations; i++)
                if (strcmp(in->escalations[i].rule, rule->name) == 0 && escalation_matches(&in->escalations[i], row))
                        return &in->escalations[i];
        return NULL;
}

static bool signals(const struct decision *d) {
        return d->action != ACTION_LOG;
}

/* Of several rules a session breaks, one decides: an enforcing rule over a
 * shadow (dry-run) one, so shadowing a new rule never weakens an existing
 * one; then the strongest action; between equals, the first rule. */
static bool stronger(const struct decision *a, const struct decision *b) {
        if (a->dry_run != b->dry_run)
                return !a->dry_run;
        return a->action > b->action;
}

/* role: primary|standby applies only while the server is in that role; an
 * unknown role (no answer) matches only role: any. */
bool rule_applies_to_role(const struct rule *rule, const struct snapshot *snap) {
        if (rule->role == ROLE_ANY)
                return true;
        return snap->role_known && snap->in_recovery == (rule->role == ROLE_STANDBY);
}

bool policy_reads_locks(const struct server *srv) {
        for (size_t i = 0; i < srv->n_rules; i++)
                if (rule_reads_locks(&srv->rules[i]))
                        return true;
        return false;
}

bool policy_needs_query(const struct server *srv) {
        if ((srv->global_exempt && filter_uses_query(srv->global_exempt)) || filter_uses_query(&srv->exempt))
                return true;
        for (size_t i = 0; i < srv->n_rules; i++)
                if (filter_uses_query(&srv->rules[i].filter) || filter_uses_query(&srv->rules[i].exempt))
                        return true;
        return false;
}

/* How far past its limit: in ms, a count for max_xmin_age; a cap's victim
 * by how long it has been idle past min_idle. */
static int64_t overshoot(const struct decision *d) {
        return d->elapsed_ms - (d->limit == LIMIT_SESSIONS ? d->rule->min_idle_ms : d->rule->limit_ms[d->limit]);
}

static int decision_cmp(const void *a, const void *b) {
        const struct decision *x = a, *y = b;
        /* The oldest offender first: furthest past its limit. */
        int64_t ox = overshoot(x), oy = overshoot(y);
        if (ox != oy)
                return ox > oy ? -1 : 1;
        return x->row->pid < y->row->pid ? -1 : x->row->pid > y->row->pid;
}

/* The decision of one rule for one row, if the row breaks it; updates *next
 * with the row's future crossings of this rule, and *soon (if not NULL) with
 * what the earliest of them is. */
/* The sessions behind a lock-chain node, for limit k; 0 when the limit
 * does not apply to it (max_blocking: not a root; max_lock_wait: not waiting). */
static int64_t node_count(const struct rule *rule, enum limit_kind k, const struct lock_node *node, size_t *ret) {
        *ret = node->n_blocked;
        if ((k == LIMIT_BLOCKING && !node->root) || (k == LIMIT_LOCK_WAIT && !node->waiter))
                return -1;
        return (int64_t) node->n_blocked;
}

static bool judge_rule(const struct policy_input *in, const struct snapshot *snap, const struct snapshot_row *row,
                       const struct lock_node *node, const struct rule *rule, struct decision *ret, int64_t *next,
                       struct verdict *soon) {
        const struct escalation *e = find_escalation(in, row, rule);
        struct decision d = {};

        if (e) {
                /* Cancelled already: wait for escalate_after, then terminate. */
                if (snap->now < e->due) {
                        if (e->due < *next) {
                                *next = e->due;
                                if (soon)
                                        *soon = (struct verdict) {
                                                .row = row, .kind = VERDICT_NEXT, .reason = REASON_ESCALATION,
                                                .rule = rule, .limit = LIMIT_QUERY_DURATION,
                                                .elapsed_ms = (snap->now - row->query_start) / 1000,
                                                .remaining_ms = (e->due - snap->now + 999) / 1000,
                                                .action = ACTION_TERMINATE, .dry_run = in->dry_run || rule->dry_run,
                                                .escalated = true,
                                        };
                        }
                        return false;
                }
                *ret = (struct decision) {
                        .row = row, .rule = rule, .limit = LIMIT_QUERY_DURATION,
                        .elapsed_ms = snap->now >= row->query_start ? (snap->now - row->query_start) / 1000 : 0,
                        .action = ACTION_TERMINATE, .dry_run = in->dry_run || rule->dry_run, .escalated = true,
                };
                return true;
        }
        /* An age, not a time: checked at every poll, never planned. */
        if (rule->limit_ms[LIMIT_XMIN_AGE] > 0 && row->xmin_age >= rule->limit_ms[LIMIT_XMIN_AGE])
                d = (struct decision) { .row = row, .rule = rule, .limit = LIMIT_XMIN_AGE, .elapsed_ms = row->xmin_age,
                                        .action = rule->action, .dry_run = in->dry_run || rule->dry_run };
        for (enum limit_kind k = 0; k < _LIMIT_MAX; k++) {
                int64_t since, elapsed_ms, limit = rule->limit_ms[k];
                size_t blocked = 0;

                if (limit <= 0 || !limit_is_duration(k))
                        continue;
                if (limit_from_row(k))
                        since = limit_since(k, row);
                else if (!node || node_count(rule, k, node, &blocked) < rule_min_blocked(rule, k))
                        continue;
                else
                        since = k == LIMIT_BLOCKING ? (node->root ? node->blocking_since : TS_NULL) : row->wait_start;
                if (since == TS_NULL)
                        continue;
                elapsed_ms = snap->now >= since ? (snap->now - since) / 1000 : 0;
                if (elapsed_ms >= limit) {
                        /* Of several broken limits, name the one broken longest ago
                         * (a broken time limit before an age: it says when). */
                        if (!d.rule || d.limit == LIMIT_XMIN_AGE ||
                            elapsed_ms - limit > d.elapsed_ms - rule->limit_ms[d.limit])
                                d = (struct decision) { .row = row, .rule = rule, .limit = k, .elapsed_ms = elapsed_ms,
                                                        .action = rule->action,
                                                        .dry_run = in->dry_run || rule->dry_run, .blocked = blocked };
                } else if (since <= INT64_MAX - limit * 1000 && since + limit * 1000 < *next) {
                        *next = since + limit * 1000;
                        if (soon)
                                *soon = (struct verdict) {
                                        .row = row, .kind = VERDICT_NEXT, .reason = REASON_LIMIT, .rule = rule,
                                        .limit = k, .elapsed_ms = elapsed_ms, .remaining_ms = limit - elapsed_ms,
                                        .action = rule->action, .dry_run = in->dry_run || rule->dry_run,
                                        .blocked = blocked,
                                };
                }
        }
        if (!d.rule)
                return false;
        *ret = d;
        return true;
}

/* --- max_sessions: per-group caps (section 14) --- */

bool policy_counts_groups(const struct server *srv) {
        for (size_t i = 0; i < srv->n_rules; i++)
                if (srv->rules[i].limit_ms[LIMIT_SESSIONS] > 0)
                        return true;
        return false;
}

/* Is the rule judged at this poll: its role, and its connection threshold? */
static bool rule_active(const struct rule *rule, const struct snapshot *snap) {
        return rule_applies_to_role(rule, snap) && rule_pressure_on(rule, snap->connections, snap->connection_slots);
}

bool policy_rule_active(const struct rule *rule, const struct snapshot *snap) {
        return rule_active(rule, snap);
}

static const char *row_key(const struct snapshot_row *row, enum group_key per) {
        switch (per) {
        case GROUP_USER:
                return row->user;
        case GROUP_DATABASE:
                return row->database;
        case GROUP_APPLICATION:
                return row->application;
        case GROUP_CLIENT_ADDRESS:
                return row->client_addr;
        default:
                return NULL;
        }
}

static int value_cmp(const char *a, const char *b) {
        return a == b ? 0 : !a ? -1 : !b ? 1 : strcmp(a, b);
}

static int cap_group_cmp(const void *a, const void *b) {
        return value_cmp(((const struct cap_group *) a)->value, ((const struct cap_group *) b)->value);
}

/* The groups of a cap rule over its cap at this poll, sorted by value:
 * the counts of the groups whose keys pass the rule's filters (a
 * max_sessions rule filters by user, database, application and client
 * address only, the keys the request counted by), summed per value of its
 * per key. */
static size_t groups_over(const struct rule *rule, const struct snapshot *snap, struct cap_group **ret) {
        struct cap_group *c = xcalloc(snap->n_groups + 1, sizeof(*c));
        size_t n = 0, merged = 0;

        for (size_t i = 0; i < snap->n_groups; i++) {
                const struct snapshot_group *g = &snap->groups[i];
                const struct snapshot_row key = {
                        .client_backend = true,
                        .user = g->key[GROUP_USER] ? g->key[GROUP_USER] : "",
                        .database = g->key[GROUP_DATABASE] ? g->key[GROUP_DATABASE] : "",
                        .application = g->key[GROUP_APPLICATION] ? g->key[GROUP_APPLICATION] : "",
                        .client_addr = g->key[GROUP_CLIENT_ADDRESS] ? g->key[GROUP_CLIENT_ADDRESS] : "",
                };

                if (!filter_matches(&rule->filter, &key))
                        continue;
                c[n++] = (struct cap_group) { .rule = rule, .value = rule->per == GROUP_ALL ? NULL : row_key(&key, rule->per),
                                              .sessions = g->count };
        }
        if (n > 1)
                qsort(c, n, sizeof(*c), cap_group_cmp);
        for (size_t i = 0; i < n; i++) {
                if (merged > 0 && value_cmp(c[merged - 1].value, c[i].value) == 0)
                        c[merged - 1].sessions += c[i].sessions;
                else
                        c[merged++] = c[i];
        }
        n = 0;
        for (size_t i = 0; i < merged; i++)
                if (c[i].sessions > rule->limit_ms[LIMIT_SESSIONS]) {
                        c[n] = c[i];
                        c[n].complete = snapshot_has_idle(snap, rule->per, c[i].value ? c[i].value : "");
                        n++;
                }
        *ret = c;
        return n;
}

size_t policy_wants_idle(const struct server *srv, const struct snapshot *snap, struct snapshot_request *req) {
        size_t wanted = 0;

        for (size_t r = 0; r < srv->n_rules; r++) {
                const struct rule *rule = &srv->rules[r];
                _cleanup_free_ struct cap_group *over = NULL;
                size_t n;

                if (rule->limit_ms[LIMIT_SESSIONS] <= 0 || !rule_active(rule, snap))
                        continue;
                n = groups_over(rule, snap, &over);
                for (size_t i = 0; i < n; i++)
                        if (!over[i].complete) {
                                snapshot_request_add_idle(req, rule->per, over[i].value ? over[i].value : "");
                                wanted++;
                        }
        }
        return wanted;
}

static struct cap_group *find_group(struct cap_group *over, size_t n, const char *value) {
        size_t lo = 0, hi = n;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                int c = value_cmp(over[mid].value, value);
                if (c == 0)
                        return &over[mid];
                if (c < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return NULL;
}

/* A cap's candidates, in the order they go: the longest idle first. */
struct candidate {
        size_t row;
        struct cap_group *group;
};

static const struct snapshot *cmp_snap;   /* qsort has no argument: set around the one call */

static int candidate_cmp(const void *a, const void *b) {
        const struct snapshot_row *x = &cmp_snap->rows[((const struct candidate *) a)->row];
        const struct snapshot_row *y = &cmp_snap->rows[((const struct candidate *) b)->row];

        if (x->state_change != y->state_change)
                return x->state_change < y->state_change ? -1 : 1;
        return x->pid < y->pid ? -1 : x->pid > y->pid;
}

/* The cap of one rule: its groups over max_sessions, and the decisions
 * that bring them under (merged into best[], one per row, with the rows'
 * other decisions: one decides, see stronger()). Every session of a group
 * counts; the victims are idle for at least min_idle, neither protected
 * nor exempt, the longest idle first, at most the excess less what ends
 * anyway (sessions another rule terminates now, sessions terminated last
 * cycle still exiting). */
static void judge_cap(const struct policy_input *in, const struct snapshot *snap, const struct rule *rule,
                      struct decision *best, struct verdict *verdicts, int64_t *next, struct judgement *j) {
        const struct server *srv = in->server;
        _cleanup_free_ struct cap_group *over = NULL;
        _cleanup_free_ struct candidate *cand = NULL, *waiting = NULL;
        size_t n_over = groups_over(rule, snap, &over), n_cand = 0, n_waiting = 0;

        if (n_over == 0)
                return;
        cand = xcalloc(snap->n_rows + 1, sizeof(*cand));
        waiting = xcalloc(snap->n_rows + 1, sizeof(*waiting));
        for (size_t i = 0; i < snap->n_rows; i++) {
                const struct snapshot_row *row = &snap->rows[i];
                struct cap_group *g;
                enum verdict_reason why;
                int64_t since;

                if (!row->client_backend || !filter_matches(&rule->filter, row) ||
                    !(g = find_group(over, n_over, rule->per == GROUP_ALL ? NULL : row_key(row, rule->per))) ||
                    !g->complete)
                        continue;
                /* ended anyway: terminated last cycle and still exiting, or
                 * terminated now by another rule (not a shadow one; a dry
                 * run counts it, as the real run would) */
                if (is_dying(in, row) ||
                    (best[i].rule && !best[i].rule->dry_run && best[i].action == ACTION_TERMINATE)) {
                        g->ending++;
                        continue;
                }
                if (row->state != STATE_IDLE || protected_session(in, row, &why) || exempt_from_server(srv, row, &why) ||
                    filter_exempts(&rule->exempt, row))
                        continue;
                since = row->state_change + rule->min_idle_ms * 1000;
                if (snap->now < since) {
                        if (since < *next)
                                *next = since;     /* a victim once it has been idle min_idle */
                        waiting[n_waiting++] = (struct candidate) { i, g };
                        continue;
                }
                cand[n_cand++] = (struct candidate) { i, g };
        }
        cmp_snap = snap;
        if (n_cand > 1)
                qsort(cand, n_cand, sizeof(*cand), candidate_cmp);
        cmp_snap = NULL;

        for (size_t c = 0; c < n_cand; c++) {
                struct cap_group *g = cand[c].group;
                const struct snapshot_row *row = &snap->rows[cand[c].row];
                struct decision d;

                if ((int64_t) g->ending >= g->sessions - rule->limit_ms[LIMIT_SESSIONS])
                        continue;
                d = (struct decision) {
                        .row = row, .rule = rule, .limit = LIMIT_SESSIONS,
                        .elapsed_ms = snap->now >= row->state_change ? (snap->now - row->state_change) / 1000 : 0,
                        .action = rule->action, .dry_run = in->dry_run || rule->dry_run,
                        .group_per = rule->per, .group_value = g->value, .sessions = g->sessions,
                };
                if (best[cand[c].row].rule && !stronger(&d, &best[cand[c].row]))
                        continue;   /* a stronger decision stands (the cap is a shadow rule): not ended by it */
                g->ending++;
                best[cand[c].row] = d;
                if (verdicts)
                        verdicts[cand[c].row] = (struct verdict) {
                                .row = row, .kind = VERDICT_OVER, .reason = REASON_LIMIT, .rule = rule,
                                .limit = LIMIT_SESSIONS, .elapsed_ms = d.elapsed_ms, .action = d.action,
                                .dry_run = d.dry_run, .group_per = rule->per, .group_value = g->value,
                                .sessions = g->sessions,
                        };
        }
        /* explain: the idle sessions of a group still over, once they have been idle min_idle */
        for (size_t w = 0; verdicts && w < n_waiting; w++) {
                const struct cap_group *g = waiting[w].group;
                const struct snapshot_row *row = &snap->rows[waiting[w].row];
                struct verdict *v = &verdicts[waiting[w].row];
                int64_t left = (row->state_change + rule->min_idle_ms * 1000 - snap->now + 999) / 1000;

                if ((int64_t) g->ending >= g->sessions - rule->limit_ms[LIMIT_SESSIONS] || v->kind == VERDICT_OVER ||
                    (v->kind == VERDICT_NEXT && v->remaining_ms <= left))
                        continue;
                *v = (struct verdict) {
                        .row = row, .kind = VERDICT_NEXT, .reason = REASON_LIMIT, .rule = rule,
                        .limit = LIMIT_SESSIONS, .elapsed_ms = (snap->now - row->state_change) / 1000,
                        .remaining_ms = left, .action = rule->action, .dry_run = in->dry_run || rule->dry_run,
                        .group_per = rule->per, .group_value = g->value, .sessions = g->sessions,
                };
        }
        j->caps = xreallocarray(j->caps, j->n_caps + n_over, sizeof(*j->caps));
        for (size_t i = 0; i < n_over; i++) {
                int64_t excess = over[i].sessions - rule->limit_ms[LIMIT_SESSIONS];
                over[i].short_by = over[i].complete && (int64_t) over[i].ending < excess ?
                                           (size_t) (excess - (int64_t) over[i].ending) : 0;
                over[i].connections = snap->connections;
                over[i].connection_slots = snap->connection_slots;
                j->caps[j->n_caps++] = over[i];
        }
}

/* Why a chain's root may not be signalled; NULL: it may. */
static const char *root_protection(const struct policy_input *in, const struct snapshot_row *row, int32_t pid) {
        enum verdict_reason why;

        if (!row)
                return pid == 0 ? "a prepared transaction" : NULL;
        if (is_dying(in, row) || !protected_session(in, row, &why))
                return NULL;
        if (!row->client_backend)
                return "not a client backend";
        if (policy_is_own(in, row))
                return "a pgsweeper connection";
        return "a superuser's session";
}

/* Roots that a max_blocking rule would end but that may not be signalled:
 * said, never acted on. */
static void chain_warnings(const struct policy_input *in, const struct snapshot *snap, const struct lock_graph *g,
                           struct judgement *j) {
        const struct server *srv = in->server;
        size_t n_nodes = snap->n_rows + g->n_orphans;

        for (size_t i = 0; i < n_nodes; i++) {
                const struct lock_node *node = &g->nodes[i];
                const struct snapshot_row *row = i < snap->n_rows ? &snap->rows[i] : NULL;
                int32_t pid = row ? row->pid : g->orphan_pids[i - snap->n_rows];
                const char *why;
                int64_t wait_ms;

                if (!node->root || node->blocking_since == TS_NULL || !(why = root_protection(in, row, pid)))
                        continue;
                if (row && exempt_from_server(srv, row, &(enum verdict_reason) { 0 }))
                        continue;
                wait_ms = snap->now >= node->blocking_since ? (snap->now - node->blocking_since) / 1000 : 0;
                for (size_t r = 0; r < srv->n_rules; r++) {
                        const struct rule *rule = &srv->rules[r];

                        if (rule->limit_ms[LIMIT_BLOCKING] <= 0 || !rule_applies_to_role(rule, snap) ||
                            (row && (!filter_matches(&rule->filter, row) || filter_exempts(&rule->exempt, row))) ||
                            (int64_t) node->n_blocked < rule_min_blocked(rule, LIMIT_BLOCKING) ||
                            wait_ms < rule->limit_ms[LIMIT_BLOCKING])
                                continue;
                        j->warnings = xreallocarray(j->warnings, j->n_warnings + 1, sizeof(*j->warnings));
                        j->warnings[j->n_warnings++] = (struct chain_warning) {
                                .pid = pid, .backend_start = row ? row->backend_start : TS_NULL, .row = row,
                                .why = why, .rule = rule, .blocked = node->n_blocked, .wait_ms = wait_ms,
                        };
                        break;
                }
        }
}

const struct rule *policy_horizon_rule(const struct server *srv) {
        const struct rule *best = NULL;

        for (size_t i = 0; i < srv->n_rules; i++)
                if (srv->rules[i].limit_ms[LIMIT_XMIN_AGE] > 0 &&
                    (!best || srv->rules[i].limit_ms[LIMIT_XMIN_AGE] < best->limit_ms[LIMIT_XMIN_AGE]))
                        best = &srv->rules[i];
        return best;
}

/* Prepared transactions and slots are not sessions: no filter, role or
 * threshold of a rule speaks of them, and nothing is done to them. Each is
 * judged against the smallest max_xmin_age of the server (the same bound
 * the snapshot read them with), so that they are said, not ended. */
static void judge_holders(const struct server *srv, const struct snapshot *snap, struct judgement *j) {
        const struct rule *rule = policy_horizon_rule(srv);

        if (!rule || snap->n_holders == 0)
                return;
        j->holders = xcalloc(snap->n_holders, sizeof(*j->holders));
        for (size_t i = 0; i < snap->n_holders; i++)
                j->holders[j->n_holders++] = (struct holder_verdict) {
                        .holder = &snap->holders[i], .rule = rule,
                        .over = snap->holders[i].xmin_age >= rule->limit_ms[LIMIT_XMIN_AGE],
                };
}

void policy_judge(const struct policy_input *in, const struct snapshot *snap, struct judgement *ret) {
        const struct server *srv = in->server;
        _cleanup_free_ struct decision *best = xcalloc(snap->n_rows + 1, sizeof(*best));
        struct decision *out;
        struct verdict *verdicts = in->verdicts ? xcalloc(snap->n_rows + 1, sizeof(*verdicts)) : NULL;
        size_t n = 0, kept = 0, signalling = 0, capped = 0;
        int64_t next = INT64_MAX;
        struct lock_graph graph = {};
        struct judgement j = {};

        if (snap->has_graph)
                lock_graph_build(snap, in->held_since, in->n_held_since, &graph);

        for (size_t i = 0; i < snap->n_rows; i++) {
                const struct snapshot_row *row = &snap->rows[i];
                struct verdict v = { .row = row }, soon = {};
                const struct rule *matched = NULL, *exempting = NULL, *inactive = NULL;
                int64_t row_next = INT64_MAX;

                if (protected_session(in, row, &v.reason))
                        v.kind = VERDICT_PROTECTED;
                else if (exempt_from_server(srv, row, &v.reason))
                        v.kind = VERDICT_EXEMPT;
                if (v.kind != VERDICT_NONE) {
                        if (verdicts)
                                verdicts[i] = v;
                        continue;
                }

                for (size_t r = 0; r < srv->n_rules; r++) {
                        const struct rule *rule = &srv->rules[r];
                        struct decision d;

                        if (!rule_applies_to_role(rule, snap) || !filter_matches(&rule->filter, row))
                                continue;
                        if (filter_exempts(&rule->exempt, row)) {
                                exempting = exempting ? exempting : rule;
                                continue;
                        }
                        /* A condition, not a limit: below its threshold the rule is not judged. */
                        if (!rule_pressure_on(rule, snap->connections, snap->connection_slots)) {
                                inactive = inactive ? inactive : rule;
                                continue;
                        }
                        matched = matched ? matched : rule;
                        if (judge_rule(in, snap, row, graph.nodes ? &graph.nodes[i] : NULL, rule, &d, &row_next,
                                       verdicts ? &soon : NULL) &&
                            (!best[i].rule || stronger(&d, &best[i])))
                                best[i] = d;
                }
                if (row_next < next)
                        next = row_next;
                if (!verdicts)
                        continue;

                /* The verdict, strongest first: what happens now, what
                 * happens next, why nothing happens. */
                if (best[i].rule)
                        v = (struct verdict) {
                                .row = row, .kind = VERDICT_OVER,
                                .reason = best[i].escalated ? REASON_ESCALATION : REASON_LIMIT, .rule = best[i].rule,
                                .limit = best[i].limit, .elapsed_ms = best[i].elapsed_ms, .action = best[i].action,
                                .dry_run = best[i].dry_run, .escalated = best[i].escalated, .blocked = best[i].blocked,
                        };
                else if (soon.rule)
                        v = soon;
                else if (exempting)
                        v = (struct verdict) { .row = row, .kind = VERDICT_EXEMPT, .reason = REASON_EXEMPT_RULE,
                                               .rule = exempting };
                else if (inactive)
                        v = (struct verdict) { .row = row, .reason = REASON_BELOW_THRESHOLD, .rule = inactive };
                else
                        v = (struct verdict) { .row = row, .reason = matched ? REASON_NO_LIMIT : REASON_NO_RULE,
                                               .rule = matched };
                if (v.kind == VERDICT_OVER || v.kind == VERDICT_NEXT)
                        v.exempt_rule = exempting;
                verdicts[i] = v;
        }

        /* Caps count groups, not one session at a time: judged once the
         * sessions' own limits are, so that what those end counts. */
        for (size_t r = 0; r < srv->n_rules; r++)
                if (srv->rules[r].limit_ms[LIMIT_SESSIONS] > 0 && rule_active(&srv->rules[r], snap))
                        judge_cap(in, snap, &srv->rules[r], best, verdicts, &next, &j);

        out = xcalloc(snap->n_rows + 1, sizeof(*out));
        for (size_t i = 0; i < snap->n_rows; i++) {
                if (!best[i].rule)
                        continue;
                out[n] = best[i];
                out[n].server_role = !snap->role_known ? ROLE_ANY : snap->in_recovery ? ROLE_STANDBY : ROLE_PRIMARY;
                out[n].connections = snap->connections;
                out[n].connection_slots = snap->connection_slots;
                n++;
        }
        if (verdicts)
                for (size_t i = 0; i < snap->n_rows; i++)
                        if (verdicts[i].rule && verdicts[i].rule->connections_above > 0) {
                                verdicts[i].connections = snap->connections;
                                verdicts[i].connection_slots = snap->connection_slots;
                        }
        if (n > 1)
                qsort(out, n, sizeof(*out), decision_cmp);

        /* Blast-radius cap: the oldest offenders go first, the rest wait for
         * the next cycle. Dry-run decisions count, so a dry run shows what
         * the real run would do. Log-only decisions are not actions. */
        for (size_t i = 0; i < n; i++) {
                if (signals(&out[i]) && srv->max_actions_per_cycle > 0 &&
                    signalling >= srv->max_actions_per_cycle) {
                        capped++;
                        if (verdicts)
                                verdicts[out[i].row - snap->rows].capped = true;
                        continue;
                }
                signalling += signals(&out[i]);
                out[kept++] = out[i];
        }
        *ret = (struct judgement) { .decisions = out, .n_decisions = kept, .n_capped = capped, .next_deadline = next,
                                    .verdicts = verdicts, .caps = j.caps, .n_caps = j.n_caps };
        judge_holders(srv, snap, ret);
        if (graph.nodes)
                chain_warnings(in, snap, &graph, ret);
        lock_graph_free(&graph);
}
