/* Who breaks which rule, and when the next one will. Pure: everything it
 * knows comes in through its arguments. */
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "netmatch.h"
#include "policy.h"

static const char *const state_names[_STATE_MAX] = {
        [STATE_UNKNOWN] = "",
        [STATE_ACTIVE] = "active",
        [STATE_IDLE] = "idle",
        [STATE_IDLE_IN_TRANSACTION] = "idle in transaction",
        [STATE_IDLE_IN_TRANSACTION_ABORTED] = "idle in transaction (aborted)",
        [STATE_FASTPATH] = "fastpath function call",
        [STATE_DISABLED] = "disabled",
};

const char *session_state_to_string(enum session_state s) {
        return s < _STATE_MAX ? state_names[s] : "";
}

enum session_state session_state_from_string(const char *s) {
        if (!s)
                return STATE_UNKNOWN;
        for (enum session_state i = 1; i < _STATE_MAX; i++)
                if (strcmp(s, state_names[i]) == 0)
                        return i;
        return STATE_UNKNOWN;
}

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
};

const char *verdict_kind_to_string(enum verdict_kind k) {
        return k < _VERDICT_MAX ? verdict_names[k] : "";
}

const char *verdict_reason_to_string(enum verdict_reason r) {
        return r < _REASON_MAX ? reason_names[r] : "";
}

void snapshot_free(struct snapshot *s) {
        free(s->rows);
        free(s->strings);
        *s = (struct snapshot) {};
}

void judgement_free(struct judgement *j) {
        free(j->decisions);
        free(j->verdicts);
        *j = (struct judgement) { .next_deadline = INT64_MAX };
}

int64_t policy_poll_gap_ms(const struct server *srv, int64_t min_interval_ms) {
        int64_t gap = srv->interval_ms;

        for (size_t i = 0; i < srv->n_rules; i++) {
                const struct rule *r = &srv->rules[i];
                if (r->action == ACTION_LOG)
                        continue;
                for (enum limit_kind k = 0; k < _LIMIT_MAX; k++)
                        if (r->limit_ms[k] > 0 && r->limit_ms[k] < gap)
                                gap = r->limit_ms[k];
        }
        return gap < min_interval_ms ? min_interval_ms : gap;
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
                if (in->own[i].pid == row->pid && in->own[i].backend_start == row->backend_start)
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
                if (in->dying[i].pid == row->pid && in->dying[i].backend_start == row->backend_start)
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

bool filter_matches(const struct filter *f, const struct snapshot_row *row) {
        if (f->users.given && !name_list_matches(&f->users, row->user))
                return false;
        if (f->databases.given && !name_list_matches(&f->databases, row->database))
                return false;
        if (f->applications.given && !name_list_matches(&f->applications, row->application))
                return false;
        if (f->client_addresses.given && !addr_list_matches(&f->client_addresses, row->client_addr))
                return false;
        return true;
}

bool filter_exempts(const struct filter *exempt, const struct snapshot_row *row) {
        return name_list_matches(&exempt->users, row->user) ||
               name_list_matches(&exempt->databases, row->database) ||
               name_list_matches(&exempt->applications, row->application) ||
               addr_list_matches(&exempt->client_addresses, row->client_addr);
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

static int decision_cmp(const void *a, const void *b) {
        const struct decision *x = a, *y = b;
        /* The oldest offender first: furthest past its limit. */
        int64_t ox = x->elapsed_ms - x->rule->limit_ms[x->limit];
        int64_t oy = y->elapsed_ms - y->rule->limit_ms[y->limit];
        if (ox != oy)
                return ox > oy ? -1 : 1;
        return x->row->pid < y->row->pid ? -1 : x->row->pid > y->row->pid;
}

/* The decision of one rule for one row, if the row breaks it; updates *next
 * with the row's future crossings of this rule, and *soon (if not NULL) with
 * what the earliest of them is. */
static bool judge_rule(const struct policy_input *in, const struct snapshot *snap, const struct snapshot_row *row,
                       const struct rule *rule, struct decision *ret, int64_t *next, struct verdict *soon) {
        const struct escalation *e = find_escalation(in, row, rule);
        struct decision d = {};

        if (e) {
                /* Cancelled already: wait for escalate_after, then terminate. */
                if (snap->now < e->due) {
                        if (e->due < *next) {
                                *next = e->due;
                                if (soon)
                                        *soon = (struct verdict) { row, VERDICT_NEXT, REASON_ESCALATION, rule, NULL,
                                                LIMIT_QUERY_DURATION, (snap->now - row->query_start) / 1000,
                                                (e->due - snap->now + 999) / 1000, ACTION_TERMINATE,
                                                in->dry_run || rule->dry_run, true, false };
                        }
                        return false;
                }
                *ret = (struct decision) { row, rule, LIMIT_QUERY_DURATION,
                                           snap->now >= row->query_start ? (snap->now - row->query_start) / 1000 : 0,
                                           ACTION_TERMINATE, in->dry_run || rule->dry_run, true };
                return true;
        }
        for (enum limit_kind k = 0; k < _LIMIT_MAX; k++) {
                int64_t since = limit_since(k, row), elapsed_ms, limit = rule->limit_ms[k];

                if (limit <= 0 || since == TS_NULL)
                        continue;
                elapsed_ms = snap->now >= since ? (snap->now - since) / 1000 : 0;
                if (elapsed_ms >= limit) {
                        /* Of several broken limits, name the one broken longest ago. */
                        if (!d.rule || elapsed_ms - limit > d.elapsed_ms - rule->limit_ms[d.limit])
                                d = (struct decision) { row, rule, k, elapsed_ms, rule->action,
                                                        in->dry_run || rule->dry_run, false };
                } else if (since <= INT64_MAX - limit * 1000 && since + limit * 1000 < *next) {
                        *next = since + limit * 1000;
                        if (soon)
                                *soon = (struct verdict) { row, VERDICT_NEXT, REASON_LIMIT, rule, NULL, k, elapsed_ms,
                                                           limit - elapsed_ms, rule->action,
                                                           in->dry_run || rule->dry_run, false, false };
                }
        }
        if (!d.rule)
                return false;
        *ret = d;
        return true;
}

void policy_judge(const struct policy_input *in, const struct snapshot *snap, struct judgement *ret) {
        const struct server *srv = in->server;
        struct decision *out = xcalloc(snap->n_rows + 1, sizeof(*out));
        struct verdict *verdicts = in->verdicts ? xcalloc(snap->n_rows + 1, sizeof(*verdicts)) : NULL;
        size_t n = 0, kept = 0, signalling = 0, capped = 0;
        int64_t next = INT64_MAX;

        for (size_t i = 0; i < snap->n_rows; i++) {
                const struct snapshot_row *row = &snap->rows[i];
                struct decision best = {};
                struct verdict v = { .row = row }, soon = {};
                const struct rule *matched = NULL, *exempting = NULL;
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

                        if (!filter_matches(&rule->filter, row))
                                continue;
                        if (filter_exempts(&rule->exempt, row)) {
                                exempting = exempting ? exempting : rule;
                                continue;
                        }
                        matched = matched ? matched : rule;
                        if (judge_rule(in, snap, row, rule, &d, &row_next, verdicts ? &soon : NULL) &&
                            (!best.rule || stronger(&d, &best)))
                                best = d;
                }
                if (row_next < next)
                        next = row_next;
                if (best.rule)
                        out[n++] = best;
                if (!verdicts)
                        continue;

                /* The verdict, strongest first: what happens now, what
                 * happens next, why nothing happens. */
                if (best.rule)
                        v = (struct verdict) { row, VERDICT_OVER, best.escalated ? REASON_ESCALATION : REASON_LIMIT,
                                               best.rule, NULL, best.limit, best.elapsed_ms, 0, best.action,
                                               best.dry_run, best.escalated, false };
                else if (soon.rule)
                        v = soon;
                else if (exempting)
                        v = (struct verdict) { .row = row, .kind = VERDICT_EXEMPT, .reason = REASON_EXEMPT_RULE,
                                               .rule = exempting };
                else
                        v = (struct verdict) { .row = row, .reason = matched ? REASON_NO_LIMIT : REASON_NO_RULE,
                                               .rule = matched };
                if (v.kind == VERDICT_OVER || v.kind == VERDICT_NEXT)
                        v.exempt_rule = exempting;
                verdicts[i] = v;
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
                                    .verdicts = verdicts };
}
