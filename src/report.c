/* A finished cycle to log lines, metrics and memory; see report.h. */
#include <stdio.h>
#include <stdlib.h>

#include "log.h"
#include "macro.h"
#include "message-ids.h"
#include "report.h"

/* Log one decision: repeats of log-only and dry-run decisions are dropped
 * (returns false for those: nothing new happened), a permission failure is
 * explained once per target role, then debug. */
static bool log_result(struct memory *m, const struct cycle *c, const struct decision *judged, enum result r) {
        /* Query text read for a queries filter is logged only with log_query. */
        struct snapshot_row row = *judged->row;
        struct decision copy = *judged;
        const struct decision *d = &copy;
        char hint[256];

        if (!c->config->log_query)
                row.query = NULL;
        copy.row = &row;

        if (r == RESULT_LOGGED || r == RESULT_DRY_RUN) {
                struct reported k = { session_id_of(d->row), limit_since(d->limit, d->row), (char *) d->rule->name };
                bool repeat = memory_reported_before(m, &k);
                k.rule = xstrdup(k.rule);
                m->reported_now[m->n_reported_now++] = k;
                if (repeat)
                        return false;
                log_decision(c->server, d, r, -1, NULL);
                return true;
        }
        if (r == RESULT_DENIED) {
                if (memory_role_denied_before(m, d->row->user)) {
                        log_decision(c->server, d, r, LOG_DEBUG, NULL);
                        return true;
                }
                if (d->row->superuser)
                        snprintf(hint, sizeof(hint), "only a superuser may signal a superuser's session: exempt "
                                 "role %s or leave terminate_superusers off (logged once per role)", d->row->user);
                else
                        snprintf(hint, sizeof(hint), "fix: GRANT pg_signal_backend TO %s; (logged once per role)",
                                 c->own_role ? c->own_role : "pgsweeper");
                log_decision(c->server, d, r, -1, hint);
                return true;
        }
        log_decision(c->server, d, r, -1, r == RESULT_UNKNOWN ? c->unknown_why : NULL);
        return true;
}

void report_begin(struct memory *m, const struct cycle *c) {
        size_t n = c->judgement->n_decisions;

        for (size_t i = 0; i < m->n_reported_now; i++)
                free(m->reported_now[i].rule);
        free(m->reported_now);
        m->reported_now = xcalloc(n + 1, sizeof(*m->reported_now));
        m->n_reported_now = 0;
        free(m->ended);
        m->ended = xcalloc(n + 1, sizeof(*m->ended));
        m->n_ended = 0;
}

struct cycle_outcome report_decisions(struct memory *m, struct metrics *metrics, const struct cycle *c, size_t from,
                                      size_t to) {
        const struct judgement *j = c->judgement;
        struct cycle_outcome out = {};

        for (size_t i = from; i < to && i < j->n_decisions; i++) {
                const struct decision *d = &j->decisions[i];
                enum result r = c->results[i];

                if (r == RESULT_NOT_SENT)
                        continue;
                if (log_result(m, c, d, r)) {
                        metrics_count_result(metrics, c->server, d->rule->name, d->action, r);
                        out.logged = true;
                }
                if (r == RESULT_TERMINATED || r == RESULT_CANCELLED)
                        out.ended++;
                if (r == RESULT_TERMINATED)
                        m->ended[m->n_ended++] = session_id_of(d->row);
                if (r == RESULT_UNKNOWN)
                        memory_add_unknown(m, d);
                if (r == RESULT_CANCELLED && rule_escalates(d->rule) && !d->escalated) {
                        m->escalations = xreallocarray(m->escalations, m->n_escalations + 1, sizeof(*m->escalations));
                        m->escalations[m->n_escalations++] = (struct escalation) {
                                .pid = d->row->pid, .backend_start = d->row->backend_start,
                                .query_start = d->row->query_start,
                                .due = c->snap_now + d->rule->escalate_after_ms * 1000, .rule = xstrdup(d->rule->name),
                        };
                }
        }
        return out;
}

struct cycle_outcome report_end(struct memory *m, const struct cycle *c) {
        const struct judgement *j = c->judgement;
        struct cycle_outcome out = {};

        if (j->n_capped > 0) {
                log_event(LOG_WARNING, MESSAGE_ID_CAP_HIT, c->server,
                          "max_actions_per_cycle (%u) reached: %zu more sessions over their limits wait for the "
                          "next cycle", c->srv->max_actions_per_cycle, j->n_capped);
                out.logged = true;
        }
        /* Only what is still over its limit stays remembered. */
        for (size_t i = 0; i < m->n_reported; i++)
                free(m->reported[i].rule);
        free(m->reported);
        m->reported = m->reported_now;
        m->n_reported = m->n_reported_now;
        m->reported_now = NULL;
        m->n_reported_now = 0;
        return out;
}

struct cycle_outcome report_cycle(struct memory *m, struct metrics *metrics, const struct cycle *c) {
        struct cycle_outcome out, end;

        report_begin(m, c);
        out = report_decisions(m, metrics, c, 0, c->judgement->n_decisions);
        end = report_end(m, c);
        out.logged |= end.logged;
        return out;
}
