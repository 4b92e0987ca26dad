/* The policy's "why" (struct verdict) for every kind, on hand-made
 * snapshots, and explain's renderings of it. */
#include <stdlib.h>

#include "explain.h"
#include "macro.h"
#include "policy.h"
#include "unit.h"

#define S(x) ((int64_t) (x) * 1000000)
#define NOW S(1000000)

static struct config *load(const char *yaml) {
        struct diagnostics diag = {};
        struct config *c = NULL;
        int r = config_load_buffer("explain-test.yaml", yaml, strlen(yaml), &c, &diag);

        for (size_t i = 0; i < diag.n_lines && r < 0; i++)
                fprintf(stderr, "%s\n", diag.lines[i]);
        diagnostics_clear(&diag);
        CHECK_AT(r == 0 && c, __FILE__, __LINE__, "config did not load:\n%s", yaml);
        return c;
}

static struct snapshot_row row_make(int32_t pid, const char *user, const char *app, enum session_state state,
                                    int64_t age_s) {
        return (struct snapshot_row) {
                .pid = pid,
                .client_backend = true,
                .state = state,
                .backend_start = NOW - S(86400),
                .state_change = NOW - S(age_s),
                .query_start = NOW - S(age_s),
                .xact_start = state == STATE_IDLE ? TS_NULL : NOW - S(age_s),
                .user = user, .database = "appdb", .application = app, .client_addr = "local",
        };
}

static const char verdict_yaml[] =
        "exempt:\n"
        "  applications: [global-x]\n"
        "servers:\n"
        "  - name: s\n"
        "    conninfo: \"dbname=x\"\n"
        "    max_actions_per_cycle: 2\n"
        "    exempt:\n"
        "      applications: [server-x]\n"
        "    rules:\n"
        /* listed first, yet never the deciding rule beside an enforcing one */
        "      - {name: shadow, max_idle: 5s, dry_run: true, users: [app]}\n"
        "      - {name: fast, max_idle: 10s, users: [app], exempt: {applications: [rule-x]}}\n"
        "      - {name: slow, max_idle: 1h, action: cancel, users: [other]}\n"
        "      - {name: tx, max_idle_in_transaction: 1m, users: [tx]}\n"
        "      - {name: lone, max_idle: 1s, users: [lone], exempt: {applications: [rule-x]}}\n";

static void test_every_kind(void) {
        static const struct {
                const char *what;
                enum verdict_kind kind;
                enum verdict_reason reason;
                const char *rule, *exempt_rule;
                int64_t elapsed_ms, remaining_ms;
                enum action action;
                bool dry_run, capped;
        } want[] = {
                { "over: enforcing rule beats a shadow one", VERDICT_OVER, REASON_LIMIT, "fast", NULL, 60000, 0,
                  ACTION_TERMINATE, false, false },
                { "next: earliest limit", VERDICT_NEXT, REASON_LIMIT, "slow", NULL, 600000, 3000000, ACTION_CANCEL,
                  false, false },
                { "exempt: global", VERDICT_EXEMPT, REASON_EXEMPT_GLOBAL, NULL, NULL, 0, 0, 0, false, false },
                { "exempt: server", VERDICT_EXEMPT, REASON_EXEMPT_SERVER, NULL, NULL, 0, 0, 0, false, false },
                { "over by shadow, spared by fast", VERDICT_OVER, REASON_LIMIT, "shadow", "fast", 60000, 0,
                  ACTION_TERMINATE, true, false },
                { "exempt: rule", VERDICT_EXEMPT, REASON_EXEMPT_RULE, "lone", NULL, 0, 0, 0, false, false },
                { "protected: superuser", VERDICT_PROTECTED, REASON_SUPERUSER, NULL, NULL, 0, 0, 0, false, false },
                { "protected: this process", VERDICT_PROTECTED, REASON_OWN_CONNECTION, NULL, NULL, 0, 0, 0, false,
                  false },
                { "protected: another pgsweeper", VERDICT_PROTECTED, REASON_OWN_ROLE, NULL, NULL, 0, 0, 0, false,
                  false },
                { "protected: not a client", VERDICT_PROTECTED, REASON_NOT_CLIENT, NULL, NULL, 0, 0, 0, false, false },
                { "protected: dying", VERDICT_PROTECTED, REASON_DYING, NULL, NULL, 0, 0, 0, false, false },
                { "none: no rule", VERDICT_NONE, REASON_NO_RULE, NULL, NULL, 0, 0, 0, false, false },
                { "none: rule, no limit in this state", VERDICT_NONE, REASON_NO_LIMIT, "tx", NULL, 0, 0, 0, false,
                  false },
                { "over, beyond the cap", VERDICT_OVER, REASON_LIMIT, "fast", NULL, 30000, 0, ACTION_TERMINATE,
                  false, true },
        };
        struct snapshot_row rows[ELEMENTSOF(want)] = {
                row_make(1, "app", "psql", STATE_IDLE, 60),
                row_make(2, "other", "psql", STATE_IDLE, 600),
                row_make(3, "app", "global-x", STATE_IDLE, 60),
                row_make(4, "app", "server-x", STATE_IDLE, 60),
                row_make(5, "app", "rule-x", STATE_IDLE, 60),
                row_make(6, "lone", "rule-x", STATE_IDLE, 60),
                row_make(7, "app", "psql", STATE_IDLE, 60),
                row_make(8, "app", "psql", STATE_IDLE, 60),
                row_make(9, "sweeper", "pgsweeper", STATE_IDLE, 60),
                row_make(10, "app", "psql", STATE_IDLE, 60),
                row_make(11, "app", "psql", STATE_IDLE, 60),
                row_make(12, "nobody", "psql", STATE_IDLE, 60),
                row_make(13, "tx", "psql", STATE_IDLE, 600),
                row_make(14, "app", "psql", STATE_IDLE, 30),
        };
        struct snapshot snap = { .now = NOW, .rows = rows, .n_rows = ELEMENTSOF(rows) };
        struct session_id own = { 8, rows[7].backend_start }, dying = { 11, rows[10].backend_start };
        struct config *c = load(verdict_yaml);
        struct judgement with, without;
        struct policy_input in;

        if (!c)
                return;
        rows[6].superuser = true;
        rows[9].client_backend = false;
        in = (struct policy_input) { .server = &c->servers[0], .own = &own, .n_own = 1, .own_role = "sweeper",
                                     .dying = &dying, .n_dying = 1 };
        policy_judge(&in, &snap, &without);
        in.verdicts = true;
        policy_judge(&in, &snap, &with);

        CHECK(without.verdicts == NULL);
        CHECK(with.verdicts != NULL);
        /* Asking why changes nothing of what is done. */
        CHECK_INT(with.n_decisions, without.n_decisions, "same decisions");
        CHECK_INT(with.n_capped, without.n_capped, "same cap");
        CHECK_INT(with.n_capped, 1, "one over the cap");
        CHECK_INT(with.next_deadline, without.next_deadline, "same deadline");
        CHECK_INT(with.next_deadline, rows[1].state_change + S(3600), "deadline of the next verdict");
        for (size_t i = 0; i < with.n_decisions && i < without.n_decisions; i++)
                CHECK(memcmp(&with.decisions[i], &without.decisions[i], sizeof(struct decision)) == 0);

        for (size_t i = 0; with.verdicts && i < ELEMENTSOF(want); i++) {
                const struct verdict *v = &with.verdicts[i];
                const char *what = want[i].what;

                CHECK(v->row == &rows[i]);
                CHECK_INT(v->kind, want[i].kind, what);
                CHECK_INT(v->reason, want[i].reason, what);
                CHECK_STR(v->rule ? v->rule->name : "(none)", want[i].rule ? want[i].rule : "(none)", what);
                CHECK_STR(v->exempt_rule ? v->exempt_rule->name : "(none)",
                          want[i].exempt_rule ? want[i].exempt_rule : "(none)", what);
                CHECK_INT(v->capped, want[i].capped, what);
                if (v->kind != VERDICT_OVER && v->kind != VERDICT_NEXT)
                        continue;
                CHECK_INT(v->limit, LIMIT_IDLE, what);
                CHECK_INT(v->elapsed_ms, want[i].elapsed_ms, what);
                CHECK_INT(v->remaining_ms, want[i].remaining_ms, what);
                CHECK_INT(v->action, want[i].action, what);
                CHECK_INT(v->dry_run, want[i].dry_run, what);
        }
        judgement_free(&with);
        judgement_free(&without);
        config_free(c);
}

/* A cancelled query under escalate_after: next (escalation pending), then over. */
static void test_escalation_reason(void) {
        struct config *c = load("servers:\n  - name: s\n    conninfo: \"dbname=x\"\n    rules:\n"
                                "      - {name: slow, max_query_duration: 10s, action: cancel, escalate_after: 5s}\n");
        struct snapshot_row row = row_make(9, "app", "psql", STATE_ACTIVE, 30);
        struct snapshot snap = { .now = NOW, .rows = &row, .n_rows = 1 };
        struct escalation e = { row.pid, row.backend_start, row.query_start, NOW + S(3), (char *) "slow" };
        struct policy_input in;
        struct judgement j;

        if (!c)
                return;
        in = (struct policy_input) { .server = &c->servers[0], .escalations = &e, .n_escalations = 1,
                                     .verdicts = true };
        policy_judge(&in, &snap, &j);
        CHECK_INT(j.verdicts[0].kind, VERDICT_NEXT, "pending escalation");
        CHECK_INT(j.verdicts[0].reason, REASON_ESCALATION, "pending escalation");
        CHECK_INT(j.verdicts[0].remaining_ms, 3000, "due in 3 s");
        CHECK_INT(j.verdicts[0].action, ACTION_TERMINATE, "escalation terminates");
        judgement_free(&j);
        e.due = NOW;
        policy_judge(&in, &snap, &j);
        CHECK_INT(j.verdicts[0].kind, VERDICT_OVER, "escalation due");
        CHECK_INT(j.verdicts[0].reason, REASON_ESCALATION, "escalation due");
        CHECK(j.verdicts[0].escalated);
        judgement_free(&j);
        config_free(c);
}

static void test_cell(void) {
        static const struct {
                const char *in;
                size_t width;
                const char *want;
        } table[] = {
                { "abcd", 4, "abcd" },
                { "abcde", 4, "abc\xe2\x80\xa6" },
                { "", 4, "" },
                /* whole escapes: never "\x1" */
                { "h\nE\x1b[31mX", 10, "h\\x0aE\xe2\x80\xa6" },
                { "h\nE\x1b[31mX", 11, "h\\x0aE\\x1b\xe2\x80\xa6" },
                { "a\\b", 2, "a\xe2\x80\xa6" },
                { "\xff\xfe", 8, "\\xff\\xfe" },
                /* characters, not bytes */
                { "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x83\x86\xe3\x82\xad", 4,
                  "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe2\x80\xa6" },
                { "\xe6\x97\xa5\xe6\x9c\xac", 2, "\xe6\x97\xa5\xe6\x9c\xac" },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                _cleanup_free_ char *got = explain_cell(table[i].in, table[i].width);
                char what[32];
                snprintf(what, sizeof(what), "cell case %zu", i);
                CHECK_STR(got, table[i].want, what);
        }
}

static void test_json_string(void) {
        static const struct {
                const char *in, *want;
        } table[] = {
                { "plain", "\"plain\"" },
                { "", "\"\"" },
                /* JSON's own quoting only: decodes to the name itself (issue 18) */
                { "a\"b", "\"a\\\"b\"" },
                { "a\\b", "\"a\\\\b\"" },
                { "q\"uo\\te'x", "\"q\\\"uo\\\\te'x\"" },
                { "\xc3\xa9\xe6\x97\xa5", "\"\xc3\xa9\xe6\x97\xa5\"" },
                /* what the text escapes, JSON writes as \u escapes of the same code point */
                { "n\nl\tt", "\"n\\u000al\\u0009t\"" },
                { "\x1b[31m\x07", "\"\\u001b[31m\\u0007\"" },
                { "\x7f", "\"\\u007f\"" },
                { "\xc2\x9b" "31m", "\"\\u009b31m\"" },
                { "a\xe2\x80\xa8" "b\xe2\x80\xa9", "\"a\\u2028b\\u2029\"" },
                { "\xe2\x80\xae" "exe.txt", "\"\\u202eexe.txt\"" },
                { "\xe2\x81\xa6\xe2\x81\xa9\xe2\x80\x8f\xd8\x9c", "\"\\u2066\\u2069\\u200f\\u061c\"" },
                /* a byte that is not UTF-8 is the text \xNN (JSON "\\xNN")... */
                { "\xff", "\"\\\\xff\"" },
                { "a\xc3z\xed\xa0\x80", "\"a\\\\xc3z\\\\xed\\\\xa0\\\\x80\"" },
                /* ...so a backslash that would read as one is itself \x5c */
                { "\\x41", "\"\\\\x5cx41\"" },
                { "\\xAb\\\\xff", "\"\\\\x5cxAb\\\\\\\\x5cxff\"" },
                { "\\xzz\\x4\\X41\\", "\"\\\\xzz\\\\x4\\\\X41\\\\\"" },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                _cleanup_free_ char *got = explain_json_string(table[i].in);
                char what[32];
                snprintf(what, sizeof(what), "json case %zu", i);
                CHECK_STR(got, table[i].want, what);
        }
}

/* Order and text: over furthest past first, next by time left, then the rest. */
static void test_text_order(void) {
        struct config *c = load("servers:\n  - name: s\n    conninfo: \"dbname=x\"\n    rules:\n"
                                "      - {name: idle, max_idle: 10s, users: [app]}\n"
                                "      - {name: old, max_session_age: 2d, users: [app]}\n");
        struct snapshot_row rows[] = {
                row_make(1, "nobody", "psql", STATE_IDLE, 60),   /* none */
                row_make(2, "app", "psql", STATE_IDLE, 5),       /* next idle in 5s */
                row_make(3, "app", "psql", STATE_IDLE, 20),      /* over by 10s */
                row_make(4, "app", "psql", STATE_IDLE, 600),     /* over by 590s */
                row_make(5, "app", "psql", STATE_ACTIVE, 1),     /* next: session age, in 1d */
                row_make(6, "app", "psql", STATE_IDLE, 60),      /* superuser */
        };
        struct snapshot snap = { .now = NOW, .rows = rows, .n_rows = ELEMENTSOF(rows) };
        struct explain_row er[ELEMENTSOF(rows)];
        static const int32_t order[] = { 4, 3, 2, 5, 6, 1 };
        _cleanup_free_ char *text = NULL;
        struct policy_input in;
        struct judgement j;
        size_t len = 0;
        FILE *f;

        if (!c)
                return;
        rows[5].superuser = true;
        in = (struct policy_input) { .server = &c->servers[0], .verdicts = true };
        policy_judge(&in, &snap, &j);
        for (size_t i = 0; i < ELEMENTSOF(rows); i++)
                er[i] = (struct explain_row) { "s", &j.verdicts[i] };
        explain_sort(er, ELEMENTSOF(er));
        for (size_t i = 0; i < ELEMENTSOF(order); i++)
                CHECK_INT(er[i].v->row->pid, order[i], "sorted pid");

        f = open_memstream(&text, &len);
        explain_print_text(er, ELEMENTSOF(er), NULL, 0, f);
        fclose(f);
        CHECK_STR(text,
                  "SERVER  PID  USER    DATABASE  APPLICATION  CLIENT  STATE   ELAPSED  VERDICT\n"
                  "s       4    app     appdb     psql         local   idle    10m      over idle: max_idle 10s -> terminate\n"
                  "s       3    app     appdb     psql         local   idle    20s      over idle: max_idle 10s -> terminate\n"
                  "s       2    app     appdb     psql         local   idle    5s       next idle: max_idle 10s in 5s -> terminate\n"
                  "s       5    app     appdb     psql         local   active  1d       next old: max_session_age 2d in 1d -> terminate\n"
                  "s       6    app     appdb     psql         local   idle    -        protected: superuser (terminate_superusers is off)\n"
                  "s       1    nobody  appdb     psql         local   idle    -        none: no rule matches\n",
                  "text table");
        judgement_free(&j);
        config_free(c);
}

/* Limits that are counts read as counts (max_xmin_age was shown as a
 * duration, "max_xmin_age 200ms", with the age as "312ms"); a cap names its
 * group; a gated rule below its threshold says so with the numbers. */
static void test_text_counts(void) {
        struct config *c = load("servers:\n  - name: s\n    conninfo: \"dbname=x\"\n    rules:\n"
                                "      - {name: horizon, max_xmin_age: 200, users: [tx]}\n"
                                "      - {name: cap, max_sessions: 1, per: application, users: [app]}\n"
                                "      - {name: free, when_connections_above: 90%, max_idle: 1s, users: [gated]}\n");
        struct snapshot_row rows[] = {
                row_make(1, "tx", "psql", STATE_IDLE_IN_TRANSACTION, 60),
                row_make(2, "app", "web", STATE_IDLE, 30),
                row_make(3, "app", "web", STATE_IDLE, 20),
                row_make(4, "gated", "psql", STATE_IDLE, 60),
        };
        struct snapshot_group groups[] = {
                { .key = { [GROUP_USER] = "tx", [GROUP_APPLICATION] = "psql" }, .count = 1 },
                { .key = { [GROUP_USER] = "app", [GROUP_APPLICATION] = "web" }, .count = 2 },
                { .key = { [GROUP_USER] = "gated", [GROUP_APPLICATION] = "psql" }, .count = 1 },
        };
        struct snapshot snap = { .now = NOW, .rows = rows, .n_rows = ELEMENTSOF(rows), .groups = groups,
                                 .n_groups = ELEMENTSOF(groups), .connections = 4, .connection_slots = 20,
                                 .idle_all = true };
        struct explain_row er[ELEMENTSOF(rows)];
        _cleanup_free_ char *text = NULL;
        struct policy_input in;
        struct judgement j;
        size_t len = 0;
        FILE *f;

        if (!c)
                return;
        rows[0].xmin_age = 312;
        in = (struct policy_input) { .server = &c->servers[0], .verdicts = true };
        policy_judge(&in, &snap, &j);
        for (size_t i = 0; i < ELEMENTSOF(rows); i++)
                er[i] = (struct explain_row) { "s", &j.verdicts[i] };
        explain_sort(er, ELEMENTSOF(er));
        f = open_memstream(&text, &len);
        explain_print_text(er, ELEMENTSOF(er), NULL, 0, f);
        fclose(f);
        CHECK_STR(text,
                  "SERVER  PID  USER   DATABASE  APPLICATION  CLIENT  STATE                ELAPSED  VERDICT\n"
                  "s       2    app    appdb     web          local   idle                 30s      over cap: 2 sessions of application web > max_sessions 1 -> terminate\n"
                  "s       1    tx     appdb     psql         local   idle in transaction  312      over horizon: max_xmin_age 200 -> terminate\n"
                  "s       3    app    appdb     web          local   idle                 -        none: counted by rule cap (max_sessions 1), not a victim\n"
                  "s       4    gated  appdb     psql         local   idle                 -        none: rule free is inactive, not 4 connections > 90% of 20 slots\n",
                  "text table");
        judgement_free(&j);
        config_free(c);
}

/* Prepared transactions and slots: policy_judge()'s holder verdicts, after
 * the sessions in both renderings, every name escaped as a session's. */
static void test_holders(void) {
        struct config *c = load("servers:\n  - name: s\n    conninfo: \"dbname=x\"\n    rules:\n"
                                "      - {name: wide, max_xmin_age: 5000}\n"
                                "      - {name: xmin, max_xmin_age: 1000, users: [tx]}\n"),
                      *without = load("servers:\n  - name: s\n    conninfo: \"dbname=x\"\n    rules:\n"
                                      "      - {name: idle, max_idle: 1h}\n");
        struct snapshot_row rows[] = { row_make(1, "tx", "psql", STATE_IDLE_IN_TRANSACTION, 60) };
        struct horizon_holder holders[] = {
                { HOLDER_PREPARED, "young", "app", "appdb", "", NOW - S(60), false, 20 },
                { HOLDER_SLOT, "sub\n\xe2\x80\xae", "", "appdb", "logical", TS_NULL, false, 1500 },
                { HOLDER_PREPARED, "it's", "app", "appdb", "", NOW - S(3600), false, 1234 },
                { HOLDER_SLOT, "standby", "", "", "physical", TS_NULL, true, 999 },
        };
        struct snapshot snap = { .now = NOW, .rows = rows, .n_rows = ELEMENTSOF(rows), .holders = holders,
                                 .n_holders = ELEMENTSOF(holders), .has_horizon = true };
        struct explain_row er[ELEMENTSOF(rows)];
        struct explain_holder_row eh[ELEMENTSOF(holders)];
        static const char *const order[] = { "sub\n\xe2\x80\xae", "it's", "standby", "young" };
        _cleanup_free_ char *text = NULL, *json = NULL;
        struct policy_input in;
        struct judgement j;
        size_t len = 0;
        FILE *f;

        if (!c || !without)
                return;
        rows[0].xmin_age = 1100;
        in = (struct policy_input) { .server = &without->servers[0], .verdicts = true };
        policy_judge(&in, &snap, &j);
        CHECK(j.holders == NULL && j.n_holders == 0);    /* no max_xmin_age: not judged, not shown */
        judgement_free(&j);

        in.server = &c->servers[0];
        policy_judge(&in, &snap, &j);
        CHECK_INT(j.n_holders, ELEMENTSOF(holders), "every holder judged");
        for (size_t i = 0; i < j.n_holders && i < ELEMENTSOF(holders); i++) {
                /* the smallest max_xmin_age, whatever the rule's filters */
                CHECK_STR(j.holders[i].rule->name, "xmin", "the rule of the smallest limit");
                CHECK(j.holders[i].holder == &holders[i]);
                eh[i] = (struct explain_holder_row) { "s", &j.holders[i] };
        }
        CHECK(j.holders[1].over && j.holders[2].over && !j.holders[0].over && !j.holders[3].over);
        er[0] = (struct explain_row) { "s", &j.verdicts[0] };
        explain_sort_holders(eh, ELEMENTSOF(eh));
        for (size_t i = 0; i < ELEMENTSOF(order); i++)
                CHECK_STR(eh[i].v->holder->name, order[i], "over first, oldest first");

        f = open_memstream(&text, &len);
        explain_print_text(er, ELEMENTSOF(er), eh, ELEMENTSOF(eh), f);
        fclose(f);
        CHECK_STR(text,
                  "SERVER  PID  USER  DATABASE  APPLICATION  CLIENT  STATE                ELAPSED  VERDICT\n"
                  "s       1    tx    appdb     psql         local   idle in transaction  1100     over xmin: max_xmin_age 1000 -> terminate\n"
                  "\n"
                  "SERVER  HOLDER                    NAME           OWNER  DATABASE  AGE   VERDICT\n"
                  "s       slot (logical, inactive)  sub\\x0a\\u202e  -      appdb     1500  warn: holds xmin 1500 transactions old >= max_xmin_age 1000 (rule xmin); release: SELECT pg_drop_replication_slot('sub\\x0a\\u202e'); once its consumer is gone for good\n"
                  "s       prepared                  it's           app    appdb     1234  warn: holds xmin 1234 transactions old >= max_xmin_age 1000 (rule xmin); release: ROLLBACK PREPARED 'it''s'; in database appdb\n"
                  "s       slot (physical, active)   standby        -      -         999   none: holds xmin 999 transactions old < max_xmin_age 1000 (rule xmin)\n"
                  "s       prepared                  young          app    appdb     20    none: holds xmin 20 transactions old < max_xmin_age 1000 (rule xmin)\n",
                  "text tables");

        len = 0;
        f = open_memstream(&json, &len);
        explain_print_json(er, ELEMENTSOF(er), eh, 2, f);
        fclose(f);
        CHECK_STR(json,
                  "[\n"
                  " {\"server\": \"s\", \"pid\": 1, \"user\": \"tx\", \"database\": \"appdb\", \"application\": \"psql\", "
                  "\"client_addr\": \"local\", \"state\": \"idle in transaction\", \"verdict\": \"over\", \"rule\": \"xmin\", "
                  "\"limit\": \"max_xmin_age\", \"limit_ms\": 1000, \"elapsed_ms\": 1100, \"remaining_ms\": null, "
                  "\"action\": \"terminate\", \"reason\": \"limit\", \"blocked\": null, \"group\": null, \"sessions\": null, "
                  "\"max_sessions\": null, \"connections\": null, \"connection_slots\": null, \"holder\": null, "
                  "\"name\": null, \"release\": null, \"slot_type\": null, \"active\": null},\n"
                  " {\"server\": \"s\", \"pid\": null, \"user\": null, \"database\": \"appdb\", \"application\": null, "
                  "\"client_addr\": null, \"state\": null, \"verdict\": \"warn\", \"rule\": \"xmin\", "
                  "\"limit\": \"max_xmin_age\", \"limit_ms\": 1000, \"elapsed_ms\": 1500, \"remaining_ms\": null, "
                  "\"action\": null, \"reason\": \"horizon-holder\", \"blocked\": null, \"group\": null, "
                  "\"sessions\": null, \"max_sessions\": null, \"connections\": null, \"connection_slots\": null, "
                  "\"holder\": \"slot\", \"name\": \"sub\\u000a\\u202e\", "
                  "\"release\": \"SELECT pg_drop_replication_slot('sub\\u000a\\u202e');\", \"slot_type\": \"logical\", "
                  "\"active\": false},\n"
                  " {\"server\": \"s\", \"pid\": null, \"user\": \"app\", \"database\": \"appdb\", \"application\": null, "
                  "\"client_addr\": null, \"state\": null, \"verdict\": \"warn\", \"rule\": \"xmin\", "
                  "\"limit\": \"max_xmin_age\", \"limit_ms\": 1000, \"elapsed_ms\": 1234, \"remaining_ms\": null, "
                  "\"action\": null, \"reason\": \"horizon-holder\", \"blocked\": null, \"group\": null, "
                  "\"sessions\": null, \"max_sessions\": null, \"connections\": null, \"connection_slots\": null, "
                  "\"holder\": \"prepared\", \"name\": \"it's\", \"release\": \"ROLLBACK PREPARED 'it''s';\", "
                  "\"slot_type\": null, \"active\": null}\n"
                  "]\n",
                  "json");

        /* no holder: no second table */
        free(text);
        text = NULL;
        len = 0;
        f = open_memstream(&text, &len);
        explain_print_text(NULL, 0, NULL, 0, f);
        fclose(f);
        CHECK_STR(text, "SERVER  PID  USER  DATABASE  APPLICATION  CLIENT  STATE  ELAPSED  VERDICT\n", "empty");
        judgement_free(&j);
        config_free(c);
        config_free(without);
}

int main(void) {
        test_holders();
        test_text_counts();
        test_every_kind();
        test_escalation_reason();
        test_cell();
        test_json_string();
        test_text_order();
        return unit_finish("test-explain");
}
