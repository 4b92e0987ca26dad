/* A finished cycle: logged once (repeats of log-only and dry-run decisions
 * dropped), counted, and remembered for the next cycles (terminated
 * sessions, escalations due); memories follow rules by name. */
#include <stdlib.h>

#include "macro.h"
#include "memory.h"
#include "metrics.h"
#include "policy.h"
#include "report.h"
#include "unit.h"

#define S(x) ((int64_t) (x) * 1000000)
#define NOW S(1000000)

static struct config *load(const char *yaml) {
        return unit_config("report-test.yaml", yaml);
}

static struct snapshot_row row(int32_t pid, enum session_state state, int64_t age_s) {
        return (struct snapshot_row) {
                .pid = pid, .client_backend = true, .state = state, .backend_start = NOW - S(86400) + pid,
                .state_change = NOW - S(age_s), .query_start = NOW - S(age_s),
                .xact_start = state == STATE_IDLE ? TS_NULL : NOW - S(age_s),
                .user = "app", .database = "appdb", .application = "psql", .client_addr = "local",
        };
}

/* Judge snap under srv, give every decision the result of its rule's
 * action (terminated, cancelled, dry-run), and report the cycle. */
static struct cycle_outcome run(struct memory *m, struct metrics *metrics, const struct config *c,
                                const struct server *srv, struct snapshot *snap) {
        struct policy_input in = { .server = srv, .escalations = m->escalations, .n_escalations = m->n_escalations,
                                   .dying = m->dying, .n_dying = m->n_dying };
        struct judgement j;
        struct cycle_outcome out;
        enum result *results;

        memory_before_judge(m, srv->name, snap);
        in.escalations = m->escalations;
        in.n_escalations = m->n_escalations;
        in.dying = m->dying;
        in.n_dying = m->n_dying;
        policy_judge(&in, snap, &j);
        results = xcalloc(j.n_decisions + 1, sizeof(*results));
        for (size_t i = 0; i < j.n_decisions; i++)
                results[i] = j.decisions[i].dry_run ? RESULT_DRY_RUN :
                             j.decisions[i].action == ACTION_CANCEL ? RESULT_CANCELLED : RESULT_TERMINATED;
        out = report_cycle(m, metrics, &(struct cycle) {
                .server = srv->name, .config = c, .srv = srv, .own_role = "pgsweeper", .snap_now = snap->now,
                .judgement = &j, .results = results,
        });
        free(results);
        judgement_free(&j);
        return out;
}

int main(void) {
        struct config *c = load("servers:\n  - name: s\n    conninfo: \"dbname=x\"\n    rules:\n"
                                "      - {name: shadow, max_idle: 1s, dry_run: true}\n"
                                "      - {name: kill, max_idle_in_transaction: 1s}\n"
                                "      - {name: esc, max_query_duration: 1s, action: cancel, escalate_after: 10s}\n");
        struct config *c2 = load("servers:\n  - name: s\n    conninfo: \"dbname=x\"\n    rules:\n"
                                 "      - {name: other, max_idle: 1h}\n");
        struct metrics *metrics = metrics_new();
        struct memory m = {};
        struct snapshot_row rows[3] = {
                row(1, STATE_IDLE, 5), row(2, STATE_IDLE_IN_TRANSACTION, 5), row(3, STATE_ACTIVE, 5),
        };
        struct snapshot snap = { .now = NOW, .rows = rows, .n_rows = 3 };
        struct cycle_outcome out;

        if (!c || !c2)
                return 1;
        out = run(&m, metrics, c, &c->servers[0], &snap);
        CHECK(out.logged);
        CHECK_INT(out.ended, 2, "one terminated, one cancelled");
        CHECK_INT(m.n_reported, 1, "the dry-run decision is remembered");
        CHECK_INT(m.n_ended, 1, "the terminated session is watched");
        CHECK(session_id_equal(m.ended[0], session_id_of(&rows[1])));
        CHECK_INT(m.n_escalations, 1, "the cancelled query is watched for escalation");
        CHECK_INT(m.escalations[0].pid, 3, "escalation pid");
        CHECK_INT(m.escalations[0].due, NOW + S(10), "due escalate_after after the snapshot");
        CHECK_STR(m.escalations[0].rule, "esc", "escalation rule by name");

        /* Next cycle: pid 2 is still there (dying: warned, not judged again),
         * pid 3 still runs the same query (not yet due), pid 1 still idle:
         * its dry-run decision is not logged again. */
        snap.now = NOW + S(1);
        out = run(&m, metrics, c, &c->servers[0], &snap);
        CHECK(!out.logged);
        CHECK_INT(out.ended, 0, "nothing ended");
        CHECK_INT(m.n_reported, 1, "still remembered");
        CHECK_INT(m.n_escalations, 1, "still watched");

        /* pid 1 woke up and went idle again: a new crossing, logged again. */
        rows[0].state_change = NOW;
        snap.now = NOW + S(3);
        out = run(&m, metrics, c, &c->servers[0], &snap);
        CHECK(out.logged);

        /* A reload without those rules: their memories go. */
        memory_switch(&m, &c2->servers[0]);
        CHECK_INT(m.n_reported, 0, "shadow is gone");
        CHECK_INT(m.n_escalations, 0, "esc is gone");

        /* A permission failure is explained once per role. */
        CHECK(!memory_role_denied_before(&m, "app"));
        CHECK(memory_role_denied_before(&m, "app"));
        CHECK(!memory_role_denied_before(&m, "other"));

        memory_done(&m);
        metrics_free(metrics);
        config_free(c);
        config_free(c2);
        return unit_finish("test-report");
}
