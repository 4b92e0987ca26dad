/* A finished cycle: logged once (repeats of log-only and dry-run decisions
 * dropped), counted, and remembered for the next cycles (terminated
 * sessions, escalations due); memories follow rules by name. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

        memory_before_judge(m, metrics, srv->name, snap);
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

/* A storm: 250 victims are three batches (100, 100, 50) in decision order,
 * log-only and dry-run decisions in none; a cut batch's victims are
 * unknown, the batches never sent are not logged, and the next snapshot
 * gives each unknown its outcome (gone or present, counted). */
static void test_storm(void) {
        struct config *c = load("max_actions_per_cycle: 1000\n"
                                "servers:\n  - name: s\n    conninfo: \"dbname=x\"\n    rules:\n"
                                "      - {name: watch, max_idle: 1s, action: log, applications: [watched]}\n"
                                "      - {name: kill, max_idle: 1s, applications: [psql]}\n");
        enum { N = 252 };
        struct snapshot_row *rows = xcalloc(N, sizeof(*rows));
        struct snapshot snap = { .now = NOW, .rows = rows, .n_rows = N };
        struct policy_input in = {};
        struct metrics *metrics = metrics_new();
        struct memory m = {};
        struct action_batch b = {};
        struct judgement j;
        enum result *results;
        size_t next = 0, sizes[4] = {}, n_batches = 0;
        _cleanup_free_ char *text = NULL;
        size_t text_len = 0;
        FILE *f;

        if (!c)
                return;
        in.server = &c->servers[0];
        for (int i = 0; i < N; i++)
                rows[i] = row(100 + i, STATE_IDLE, 5);
        rows[7].application = rows[200].application = "watched";      /* log-only */
        policy_judge(&in, &snap, &j);
        CHECK_INT(j.n_decisions, N, "every session is judged");
        results = xcalloc(N, sizeof(*results));
        CHECK_INT(enforce_prepare(&j, results), N - 2, "250 to signal");
        CHECK_INT(results[7], RESULT_LOGGED, "log-only has its result");
        CHECK_INT(results[8], RESULT_NOT_SENT, "a victim starts not sent");
        while (n_batches < 4 && enforce_next_batch(&j, results, &next, &b) > 0) {
                sizes[n_batches++] = b.n;
                for (size_t k = 0; k < b.n; k++)
                        CHECK(b.index[k] != 7 && b.index[k] != 200);
                if (n_batches == 1)
                        CHECK_INT(action_batch_end(&b), 101, "the first batch ends after decision 100");
                for (size_t k = 0; k < b.n && n_batches == 1; k++)
                        results[b.index[k]] = RESULT_TERMINATED;
                if (n_batches == 2)
                        enforce_mark_unknown(&b, results);      /* cut short */
                action_batch_free(&b);
                if (n_batches == 2)
                        break;  /* the third batch is never sent */
        }
        CHECK_INT(n_batches, 2, "two batches sent");
        CHECK_INT(sizes[0], 100, "batch 1");
        CHECK_INT(sizes[1], 100, "batch 2");
        CHECK_INT(results[N - 1], RESULT_NOT_SENT, "the last victim was never sent");
        CHECK_INT(enforce_next_batch(&j, results, &next, &b), 50, "the third batch: the 50 left");
        action_batch_free(&b);
        for (size_t i = 0; i < N; i++)
                if (results[i] == RESULT_FAILED)
                        results[i] = RESULT_NOT_SENT;   /* as if the stop came before it */

        report_begin(&m, &(struct cycle) { .judgement = &j });
        struct cycle cyc = { .server = "s", .config = c, .srv = &c->servers[0], .snap_now = NOW, .judgement = &j,
                             .results = results, .unknown_why = "cut" };
        struct cycle_outcome out = report_decisions(&m, metrics, &cyc, 0, N);
        report_end(&m, &cyc);
        CHECK_INT(out.ended, 100, "the first batch ended its victims");
        CHECK_INT(m.n_unknowns, 100, "the second batch is unknown");
        CHECK_INT(m.n_ended, 100, "terminated ones are watched");
        CHECK_INT(m.n_reported, 2, "the log-only decisions are remembered");
        int32_t *pids;
        CHECK_INT(memory_watched_pids(&m, &pids), 100, "the unknowns' pids are read by the next poll");
        free(pids);

        /* Next snapshot: one unknown victim is still there, the others gone. */
        struct snapshot_row present = {};
        for (size_t i = 0; i < N; i++)
                if (session_id_equal(session_id_of(&rows[i]), m.unknowns[0].id))
                        present = rows[i];
        struct snapshot next_snap = { .now = NOW + S(1), .rows = &present, .n_rows = 1 };
        CHECK_INT(present.pid, m.unknowns[0].id.pid, "found");
        memory_before_judge(&m, metrics, "s", &next_snap);
        CHECK_INT(m.n_unknowns, 0, "each outcome is said once");
        f = open_memstream(&text, &text_len);
        metrics_format(metrics, f);
        fclose(f);
        CHECK(strstr(text, "pgsweeper_unknown_outcomes_total{server=\"s\",rule=\"kill\",action=\"terminate\","
                           "outcome=\"gone\"} 99\n"));
        CHECK(strstr(text, "pgsweeper_unknown_outcomes_total{server=\"s\",rule=\"kill\",action=\"terminate\","
                           "outcome=\"present\"} 1\n"));
        CHECK(strstr(text, "pgsweeper_actions_total{server=\"s\",rule=\"kill\",action=\"terminate\","
                           "result=\"unknown\"} 100\n"));
        CHECK(strstr(text, "pgsweeper_actions_total{server=\"s\",rule=\"kill\",action=\"terminate\","
                           "result=\"terminated\"} 100\n"));
        CHECK(!strstr(text, "action=\"terminate\",result=\"failed\""));

        free(results);
        judgement_free(&j);
        memory_done(&m);
        metrics_free(metrics);
        free(rows);
        config_free(c);
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
        test_storm();
        return unit_finish("test-report");
}
