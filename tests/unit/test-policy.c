/* The policy table: session x rules x time -> decision and next deadline. */
#include <stdlib.h>
#include <string.h>

#include "lockgraph.h"
#include "memory.h"
#include "plan.h"
#include "policy.h"
#include "snapshot.h"
#include "macro.h"
#include "unit.h"

#define S(x) ((int64_t) (x) * 1000000)  /* seconds -> server clock microseconds */
#define NOW S(1000000)

static struct snapshot_row row_base(int32_t pid, enum session_state state, int64_t state_age_s) {
        return (struct snapshot_row) {
                .pid = pid,
                .client_backend = true,
                .state = state,
                .backend_start = NOW - S(86400),
                .state_change = NOW - S(state_age_s),
                .query_start = NOW - S(state_age_s),
                .xact_start = state == STATE_IDLE ? TS_NULL : NOW - S(state_age_s),
                .user = "app", .database = "appdb", .application = "psql", .client_addr = "local",
        };
}

static struct rule rule_make(const char *name, enum limit_kind k, int64_t limit_ms, enum action a) {
        struct rule r = { .name = (char *) name, .action = a };
        r.limit_ms[k] = limit_ms;
        return r;
}

/* Judge one row against rules; returns the number of decisions. */
static size_t judge(struct rule *rules, size_t n_rules, struct snapshot_row *rows, size_t n_rows, bool dry_run,
                    const struct session_id *own, size_t n_own, struct judgement *j) {
        struct server srv = { .name = (char *) "test", .rules = rules, .n_rules = n_rules };
        struct snapshot snap = { .now = NOW, .rows = rows, .n_rows = n_rows };
        struct policy_input in = { .server = &srv, .dry_run = dry_run, .own = own, .n_own = n_own };
        policy_judge(&in, &snap, j);
        return j->n_decisions;
}

/* Each limit against each state: who is judged, with which elapsed time. */
static void test_limits_by_state(void) {
        static const struct {
                enum limit_kind limit;
                enum session_state state;
                int64_t age_s;
                bool breaks;
        } table[] = {
                { LIMIT_IDLE, STATE_IDLE, 31, true },
                { LIMIT_IDLE, STATE_IDLE, 30, true },        /* reaching the limit is enough */
                { LIMIT_IDLE, STATE_IDLE, 29, false },
                { LIMIT_IDLE, STATE_ACTIVE, 600, false },
                { LIMIT_IDLE, STATE_IDLE_IN_TRANSACTION, 600, false },
                { LIMIT_IDLE, STATE_UNKNOWN, 600, false },
                { LIMIT_IDLE_IN_TRANSACTION, STATE_IDLE_IN_TRANSACTION, 31, true },
                { LIMIT_IDLE_IN_TRANSACTION, STATE_IDLE_IN_TRANSACTION_ABORTED, 31, true },
                { LIMIT_IDLE_IN_TRANSACTION, STATE_IDLE, 600, false },
                { LIMIT_IDLE_IN_TRANSACTION, STATE_ACTIVE, 600, false },
                { LIMIT_QUERY_DURATION, STATE_ACTIVE, 31, true },
                { LIMIT_QUERY_DURATION, STATE_FASTPATH, 31, true },
                { LIMIT_QUERY_DURATION, STATE_IDLE, 600, false },
                { LIMIT_QUERY_DURATION, STATE_ACTIVE, 10, false },
                { LIMIT_TRANSACTION_AGE, STATE_ACTIVE, 31, true },
                { LIMIT_TRANSACTION_AGE, STATE_IDLE_IN_TRANSACTION, 31, true },
                { LIMIT_TRANSACTION_AGE, STATE_IDLE, 600, false },  /* idle: no transaction */
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                struct rule r = rule_make("r", table[i].limit, 30000, ACTION_TERMINATE);
                struct snapshot_row row = row_base(100, table[i].state, table[i].age_s);
                struct judgement j;
                char what[128];

                snprintf(what, sizeof(what), "case %zu (%s, %s, %" PRId64 "s)", i,
                         limit_kind_to_string(table[i].limit), session_state_to_string(table[i].state),
                         table[i].age_s);
                CHECK_INT(judge(&r, 1, &row, 1, false, NULL, 0, &j), table[i].breaks ? 1 : 0, what);
                if (j.n_decisions == 1) {
                        CHECK_INT(j.decisions[0].row->pid, 100, what);
                        CHECK_INT(j.decisions[0].limit, table[i].limit, what);
                        CHECK_INT(j.decisions[0].elapsed_ms, table[i].age_s * 1000, what);
                        CHECK_INT(j.decisions[0].action, ACTION_TERMINATE, what);
                        CHECK(!j.decisions[0].dry_run);
                }
                judgement_free(&j);
        }
}

static void test_session_age(void) {
        struct rule r = rule_make("old", LIMIT_SESSION_AGE, 3600 * 1000, ACTION_TERMINATE);
        struct snapshot_row rows[2] = { row_base(1, STATE_ACTIVE, 1), row_base(2, STATE_IDLE, 1) };
        struct judgement j;

        rows[1].backend_start = NOW - S(60);
        CHECK_INT(judge(&r, 1, rows, 2, false, NULL, 0, &j), 1, "session age");
        CHECK_INT(j.decisions[0].row->pid, 1, "the day-old session");
        CHECK_INT(j.next_deadline, NOW - S(60) + S(3600), "young session's deadline");
        judgement_free(&j);
}

/* Built-in protection beats any rule. */
static void test_protections(void) {
        struct rule r = rule_make("r", LIMIT_IDLE, 1000, ACTION_TERMINATE);
        struct snapshot_row rows[4] = {
                row_base(1, STATE_IDLE, 60), row_base(2, STATE_IDLE, 60), row_base(3, STATE_IDLE, 60),
                row_base(4, STATE_IDLE, 60),
        };
        struct session_id own[] = { { 3, rows[2].backend_start } };
        struct judgement j;

        rows[0].superuser = true;
        rows[1].client_backend = false;   /* walsender, autovacuum, worker... */
        CHECK_INT(judge(&r, 1, rows, 4, false, own, 1, &j), 1, "only the plain session");
        CHECK_INT(j.decisions[0].row->pid, 4, "plain session judged");
        CHECK_INT(j.next_deadline, INT64_MAX, "protected sessions add no deadline");
        judgement_free(&j);

        /* Own connections are (pid, backend_start) pairs: the same pid with
         * another backend_start is someone else's session (another server,
         * another pid namespace), and is judged. */
        {
                struct session_id other[] = { { 4, rows[3].backend_start + 1 } };
                CHECK_INT(judge(&r, 1, &rows[3], 1, false, other, 1, &j), 1, "same pid elsewhere is judged");
                judgement_free(&j);
        }

        /* Another pgsweeper: our login role and pgsweeper's application_name.
         * Either alone is not enough (a user can set any application_name). */
        {
                struct server srv = { .name = (char *) "test", .rules = &r, .n_rules = 1 };
                struct snapshot_row peers[3] = { row_base(5, STATE_IDLE, 60), row_base(6, STATE_IDLE, 60),
                                                 row_base(7, STATE_IDLE, 60) };
                struct snapshot snap = { .now = NOW, .rows = peers, .n_rows = 3 };
                struct policy_input in = { .server = &srv, .own_role = "sweeper" };
                peers[0].user = "sweeper";
                peers[0].application = "pgsweeper";
                peers[1].user = "app";
                peers[1].application = "pgsweeper";   /* spoofed name */
                peers[2].user = "sweeper";
                peers[2].application = "psql";        /* an operator as pgsweeper's role */
                policy_judge(&in, &snap, &j);
                CHECK_INT(j.n_decisions, 2, "only the other pgsweeper is protected");
                CHECK(j.n_decisions == 2 && j.decisions[0].row->pid != 5 && j.decisions[1].row->pid != 5);
                judgement_free(&j);
        }

        /* Terminated last cycle and still exiting: not judged (nor signalled) again;
         * a new backend that reuses the pid is judged. */
        {
                struct server srv = { .name = (char *) "test", .rules = &r, .n_rules = 1 };
                struct snapshot snap = { .now = NOW, .rows = &rows[3], .n_rows = 1 };
                struct session_id dying = { 4, rows[3].backend_start };
                struct policy_input in = { .server = &srv, .dying = &dying, .n_dying = 1 };
                policy_judge(&in, &snap, &j);
                CHECK_INT(j.n_decisions, 0, "dying session not judged again");
                judgement_free(&j);
                dying.backend_start++;
                policy_judge(&in, &snap, &j);
                CHECK_INT(j.n_decisions, 1, "same pid, other backend: judged");
                judgement_free(&j);
        }
}

static void test_precedence(void) {
        struct rule rules[3] = {
                rule_make("log-first", LIMIT_IDLE, 1000, ACTION_LOG),
                rule_make("cancel", LIMIT_IDLE, 1000, ACTION_CANCEL),
                rule_make("terminate", LIMIT_IDLE, 1000, ACTION_TERMINATE),
        };
        struct snapshot_row row = row_base(7, STATE_IDLE, 60);
        struct judgement j;

        judge(rules, 3, &row, 1, false, NULL, 0, &j);
        CHECK_STR(j.decisions[0].rule->name, "terminate", "strongest action wins");
        judgement_free(&j);

        /* Equal actions: the first rule in the file. */
        rules[1].action = ACTION_TERMINATE;
        judge(rules, 3, &row, 1, false, NULL, 0, &j);
        CHECK_STR(j.decisions[0].rule->name, "cancel", "first of equals wins");
        judgement_free(&j);

        /* A shadow rule never overrides an enforcing one, whatever its action. */
        rules[1].action = ACTION_CANCEL;
        rules[2].dry_run = true;
        judge(rules, 3, &row, 1, false, NULL, 0, &j);
        CHECK_STR(j.decisions[0].rule->name, "cancel", "enforcing beats dry-run");
        CHECK(!j.decisions[0].dry_run);
        judgement_free(&j);

        /* Only shadow rules match: the decision is a dry run. */
        judge(&rules[2], 1, &row, 1, false, NULL, 0, &j);
        CHECK(j.decisions[0].dry_run);
        judgement_free(&j);

        /* Global dry run marks everything. */
        judge(rules, 2, &row, 1, true, NULL, 0, &j);
        CHECK(j.decisions[0].dry_run);
        CHECK_STR(j.decisions[0].rule->name, "cancel", "global dry run keeps precedence");
        judgement_free(&j);
}

/* A rule with several limits names the one broken longest ago. */
static void test_which_limit(void) {
        struct rule r = rule_make("r", LIMIT_IDLE_IN_TRANSACTION, 10000, ACTION_TERMINATE);
        struct snapshot_row row = row_base(5, STATE_IDLE_IN_TRANSACTION, 20);
        struct judgement j;

        r.limit_ms[LIMIT_TRANSACTION_AGE] = 60000;
        row.xact_start = NOW - S(300);    /* 240 s past the transaction limit */
        judge(&r, 1, &row, 1, false, NULL, 0, &j);
        CHECK_INT(j.decisions[0].limit, LIMIT_TRANSACTION_AGE, "longest broken limit");
        CHECK_INT(j.decisions[0].elapsed_ms, 300000, "elapsed of that limit");
        judgement_free(&j);
}

static void test_order_and_deadline(void) {
        struct rule r = rule_make("r", LIMIT_IDLE, 10000, ACTION_TERMINATE);
        struct snapshot_row rows[5] = {
                row_base(10, STATE_IDLE, 15), row_base(11, STATE_IDLE, 500), row_base(12, STATE_IDLE, 3),
                row_base(13, STATE_IDLE, 40), row_base(14, STATE_IDLE, 8),
        };
        struct judgement j;

        CHECK_INT(judge(&r, 1, rows, 5, false, NULL, 0, &j), 3, "three over the limit");
        CHECK_INT(j.decisions[0].row->pid, 11, "oldest offender first");
        CHECK_INT(j.decisions[1].row->pid, 13, "then the next oldest");
        CHECK_INT(j.decisions[2].row->pid, 10, "then the youngest offender");
        /* pid 14 crosses in 2 s, pid 12 in 7 s: the earliest wins */
        CHECK_INT(j.next_deadline, NOW + S(2), "next deadline");
        judgement_free(&j);

        /* NULL timestamps are not a crossing. */
        rows[0].state_change = TS_NULL;
        CHECK_INT(judge(&r, 1, rows, 1, false, NULL, 0, &j), 0, "NULL state_change");
        CHECK_INT(j.next_deadline, INT64_MAX, "no deadline from NULL");
        judgement_free(&j);

        /* A clock that went backwards (state_change after now) is elapsed 0, not negative. */
        rows[0].state_change = NOW + S(5);
        CHECK_INT(judge(&r, 1, rows, 1, false, NULL, 0, &j), 0, "future state_change");
        judgement_free(&j);

        CHECK_INT(judge(&r, 1, rows, 0, false, NULL, 0, &j), 0, "empty snapshot");
        CHECK_INT(j.next_deadline, INT64_MAX, "empty snapshot deadline");
        judgement_free(&j);

}

/* Filters, exempt blocks, protections and the cap, from real configuration text. */
static struct config *load(const char *yaml) {
        return unit_config("policy-test.yaml", yaml);
}

#define PREAMBLE "servers:\n  - name: s\n    conninfo: \"dbname=x\"\n"

static void test_filters_and_exempt(void) {
        static const struct {
                const char *yaml;
                const char *user, *database, *application, *client;
                bool superuser;
                const char *want;       /* rule name that decides, or NULL */
        } table[] = {
                /* user globs */
                { PREAMBLE "    rules:\n      - {name: r, max_idle: 1s, users: [\"report_*\"]}\n",
                  "report_x", "db", "app", "local", false, "r" },
                { PREAMBLE "    rules:\n      - {name: r, max_idle: 1s, users: [\"report_*\"]}\n",
                  "app", "db", "app", "local", false, NULL },
                { PREAMBLE "    rules:\n      - {name: r, max_idle: 1s, users: [\"rep?rt\"]}\n",
                  "report", "db", "app", "local", false, "r" },
                /* databases, applications */
                { PREAMBLE "    rules:\n      - {name: r, max_idle: 1s, databases: [analytics]}\n",
                  "u", "analytics", "a", "local", false, "r" },
                { PREAMBLE "    rules:\n      - {name: r, max_idle: 1s, databases: [analytics]}\n",
                  "u", "analytics2", "a", "local", false, NULL },
                { PREAMBLE "    rules:\n      - {name: r, max_idle: 1s, applications: [\"pgAdmin*\"]}\n",
                  "u", "d", "pgAdmin 4 - DB:postgres", "local", false, "r" },
                { PREAMBLE "    rules:\n      - {name: r, max_idle: 1s, applications: [\"pgAdmin*\"]}\n",
                  "u", "d", "psql", "local", false, NULL },
                /* every given filter must pass */
                { PREAMBLE "    rules:\n      - {name: r, max_idle: 1s, users: [\"a*\"], databases: [d1]}\n",
                  "alice", "d1", "x", "local", false, "r" },
                { PREAMBLE "    rules:\n      - {name: r, max_idle: 1s, users: [\"a*\"], databases: [d1]}\n",
                  "alice", "d2", "x", "local", false, NULL },
                /* addresses: CIDR v4 and v6, v4-mapped, local */
                { PREAMBLE "    rules:\n      - {name: r, max_idle: 1s, client_addresses: [10.0.0.0/8, \"::1\"]}\n",
                  "u", "d", "a", "10.1.2.3", false, "r" },
                { PREAMBLE "    rules:\n      - {name: r, max_idle: 1s, client_addresses: [10.0.0.0/8, \"::1\"]}\n",
                  "u", "d", "a", "::1", false, "r" },
                { PREAMBLE "    rules:\n      - {name: r, max_idle: 1s, client_addresses: [10.0.0.0/8, \"::1\"]}\n",
                  "u", "d", "a", "::ffff:10.9.9.9", false, "r" },
                { PREAMBLE "    rules:\n      - {name: r, max_idle: 1s, client_addresses: [10.0.0.0/8, \"::1\"]}\n",
                  "u", "d", "a", "192.168.1.1", false, NULL },
                { PREAMBLE "    rules:\n      - {name: r, max_idle: 1s, client_addresses: [10.0.0.0/8, \"::1\"]}\n",
                  "u", "d", "a", "local", false, NULL },
                { PREAMBLE "    rules:\n      - {name: r, max_idle: 1s, client_addresses: [local]}\n",
                  "u", "d", "a", "local", false, "r" },
                { PREAMBLE "    rules:\n      - {name: r, max_idle: 1s, client_addresses: [local]}\n",
                  "u", "d", "a", "127.0.0.1", false, NULL },
                /* exempt at each level */
                { "exempt: {users: [dba]}\n" PREAMBLE "    rules:\n      - {name: r, max_idle: 1s}\n",
                  "dba", "d", "a", "local", false, NULL },
                { "exempt: {users: [dba]}\n" PREAMBLE "    rules:\n      - {name: r, max_idle: 1s}\n",
                  "app", "d", "a", "local", false, "r" },
                { PREAMBLE "    exempt: {databases: [maintenance]}\n    rules:\n      - {name: r, max_idle: 1s}\n",
                  "app", "maintenance", "a", "local", false, NULL },
                { PREAMBLE "    rules:\n      - {name: r, max_idle: 1s, exempt: {applications: [pg_dump]}}\n",
                  "app", "d", "pg_dump", "local", false, NULL },
                /* exempt from one rule only: the other still applies */
                { PREAMBLE "    rules:\n      - {name: r1, max_idle: 1s, exempt: {applications: [pg_dump]}}\n"
                  "      - {name: r2, max_idle: 1s, action: log}\n",
                  "app", "d", "pg_dump", "local", false, "r2" },
                /* an exempt block matches ANY entry of ANY key */
                { PREAMBLE "    exempt: {users: [nobody], client_addresses: [10.0.0.0/8]}\n    rules:\n"
                  "      - {name: r, max_idle: 1s}\n",
                  "app", "d", "a", "10.0.0.5", false, NULL },
                /* superusers: protected unless the server says otherwise */
                { PREAMBLE "    rules:\n      - {name: r, max_idle: 1s}\n",
                  "postgres", "d", "a", "local", true, NULL },
                { PREAMBLE "    terminate_superusers: true\n    rules:\n      - {name: r, max_idle: 1s}\n",
                  "postgres", "d", "a", "local", true, "r" },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                struct config *c = load(table[i].yaml);
                struct snapshot_row row = row_base(42, STATE_IDLE, 60);
                struct snapshot snap = { .now = NOW, .rows = &row, .n_rows = 1 };
                struct policy_input in;
                struct judgement j;
                char what[64];

                if (!c)
                        continue;
                in = (struct policy_input) { .server = &c->servers[0] };
                row.user = table[i].user;
                row.database = table[i].database;
                row.application = table[i].application;
                row.client_addr = table[i].client;
                row.superuser = table[i].superuser;
                snprintf(what, sizeof(what), "filter case %zu", i);
                policy_judge(&in, &snap, &j);
                CHECK_INT(j.n_decisions, table[i].want ? 1 : 0, what);
                if (table[i].want && j.n_decisions == 1)
                        CHECK_STR(j.decisions[0].rule->name, table[i].want, what);
                judgement_free(&j);
                config_free(c);
        }
}

static void test_cap(void) {
        struct config *c = load("max_actions_per_cycle: 2\n" PREAMBLE
                                "    rules:\n      - {name: kill, max_idle: 10s}\n"
                                "      - {name: watch, max_idle_in_transaction: 10s, action: log}\n");
        struct snapshot_row rows[6] = {
                row_base(1, STATE_IDLE, 20), row_base(2, STATE_IDLE, 90), row_base(3, STATE_IDLE, 50),
                row_base(4, STATE_IDLE, 70), row_base(5, STATE_IDLE_IN_TRANSACTION, 99),
                row_base(6, STATE_IDLE_IN_TRANSACTION, 98),
        };
        struct snapshot snap = { .now = NOW, .rows = rows, .n_rows = 6 };
        struct policy_input in;
        struct judgement j;

        if (!c)
                return;
        CHECK_INT(c->servers[0].max_actions_per_cycle, 2, "cap inherited from the top level");
        in = (struct policy_input) { .server = &c->servers[0] };
        policy_judge(&in, &snap, &j);
        /* two log-only (not actions) + the two oldest idle ones */
        CHECK_INT(j.n_decisions, 4, "kept decisions");
        CHECK_INT(j.n_capped, 2, "capped decisions");
        for (size_t i = 0; i < j.n_decisions; i++)
                CHECK(j.decisions[i].row->pid == 5 || j.decisions[i].row->pid == 6 || j.decisions[i].row->pid == 2 ||
                      j.decisions[i].row->pid == 4);
        judgement_free(&j);

        /* dry run counts against the cap too: it shows what the real run would do */
        in.dry_run = true;
        policy_judge(&in, &snap, &j);
        CHECK_INT(j.n_capped, 2, "capped in dry run");
        judgement_free(&j);
        config_free(c);
}

/* How long a server may go without a poll. */
static void test_poll_gap(void) {
        struct config *c = load(PREAMBLE "    interval: 60s\n    rules:\n"
                                "      - {name: idle, max_idle: 2s}\n"
                                "      - {name: watch, max_idle_in_transaction: 500ms, action: log}\n"
                                "      - {name: shadow, max_query_duration: 5s, dry_run: true, action: cancel}\n");
        struct snapshot_row rows[2] = { row_base(1, STATE_IDLE, 1), row_base(2, STATE_IDLE, 1) };
        struct snapshot snap = { .now = NOW, .rows = rows, .n_rows = 2 };
        struct policy_input in;
        struct judgement j;

        if (!c)
                return;
        CHECK_INT(plan_gap_ms(&c->servers[0], 100), 2000, "smallest acting limit, log-only rules aside");
        CHECK_INT(plan_gap_ms(&c->servers[0], 3000), 3000, "never under min_interval");
        c->servers[0].rules[0].limit_ms[LIMIT_IDLE] = 0;
        CHECK_INT(plan_gap_ms(&c->servers[0], 100), 5000, "shadow rules count");
        c->servers[0].rules[2].limit_ms[LIMIT_QUERY_DURATION] = 0;
        CHECK_INT(plan_gap_ms(&c->servers[0], 100), 60000, "no acting limit: the interval");
        c->servers[0].rules[0].limit_ms[LIMIT_IDLE] = 2000;

        /* Sessions no rule can act on plan no poll: a superuser, one exempt. */
        rows[0].superuser = true;
        rows[1].user = "postgres";
        c->servers[0].global_exempt = &c->exempt;
        c->exempt.users = (struct name_list) { .patterns = (char *[]) { (char *) "postgres" }, .n = 1, .given = true };
        in = (struct policy_input) { .server = &c->servers[0] };
        policy_judge(&in, &snap, &j);
        CHECK_INT(j.next_deadline, INT64_MAX, "protected and exempt sessions add no deadline");
        judgement_free(&j);
        c->exempt.users = (struct name_list) {};
        rows[0].superuser = false;
        policy_judge(&in, &snap, &j);
        CHECK_INT(j.next_deadline, NOW - S(1) + S(2), "an actionable session does");
        judgement_free(&j);
        config_free(c);
}

static void test_escalation(void) {
        struct config *c = load(PREAMBLE "    rules:\n"
                                "      - {name: slow, max_query_duration: 10s, action: cancel, escalate_after: 5s}\n");
        struct snapshot_row row = row_base(9, STATE_ACTIVE, 30);
        struct snapshot snap = { .now = NOW, .rows = &row, .n_rows = 1 };
        struct escalation e;
        struct policy_input in;
        struct judgement j;

        if (!c)
                return;
        in = (struct policy_input) { .server = &c->servers[0] };
        policy_judge(&in, &snap, &j);
        CHECK_INT(j.n_decisions, 1, "first: cancel");
        CHECK_INT(j.decisions[0].action, ACTION_CANCEL, "first action");
        CHECK(!j.decisions[0].escalated);
        judgement_free(&j);

        /* cancelled 2 s ago, same query still running: wait, wake at due */
        e = (struct escalation) { row.pid, row.backend_start, row.query_start, NOW + S(3), (char *) "slow" };
        in.escalations = &e;
        in.n_escalations = 1;
        policy_judge(&in, &snap, &j);
        CHECK_INT(j.n_decisions, 0, "pending escalation: no second cancel");
        CHECK_INT(j.next_deadline, NOW + S(3), "wake when the escalation is due");
        judgement_free(&j);

        /* due: terminate, marked as an escalation */
        e.due = NOW;
        policy_judge(&in, &snap, &j);
        CHECK_INT(j.n_decisions, 1, "escalated");
        CHECK_INT(j.decisions[0].action, ACTION_TERMINATE, "escalated action");
        CHECK(j.decisions[0].escalated);
        judgement_free(&j);

        /* an escalation remembered under another rule's name is not this rule's */
        e.rule = (char *) "other";
        policy_judge(&in, &snap, &j);
        CHECK_INT(j.n_decisions, 1, "other rule's escalation");
        CHECK(!j.decisions[0].escalated);
        judgement_free(&j);
        e.rule = (char *) "slow";

        /* another query now (query_start moved): a new cancel, not an escalation */
        row.query_start = NOW - S(12);
        policy_judge(&in, &snap, &j);
        CHECK_INT(j.n_decisions, 1, "new query");
        CHECK_INT(j.decisions[0].action, ACTION_CANCEL, "new query is cancelled first");
        CHECK(!j.decisions[0].escalated);
        judgement_free(&j);
        config_free(c);
}

/* role: primary|standby against the snapshot's pg_is_in_recovery(). */
static void test_role(void) {
        struct rule rules[3] = {
                rule_make("any", LIMIT_IDLE, 1000, ACTION_LOG),
                rule_make("primary", LIMIT_IDLE, 1000, ACTION_CANCEL),
                rule_make("standby", LIMIT_IDLE, 1000, ACTION_TERMINATE),
        };
        struct server srv = { .name = (char *) "test", .rules = rules, .n_rules = 3 };
        struct snapshot_row row = row_base(7, STATE_IDLE, 60);
        struct snapshot snap = { .now = NOW, .rows = &row, .n_rows = 1 };
        struct policy_input in = { .server = &srv };
        struct judgement j;

        rules[1].role = ROLE_PRIMARY;
        rules[2].role = ROLE_STANDBY;
        snap.role_known = true;
        snap.in_recovery = false;
        policy_judge(&in, &snap, &j);
        CHECK_INT(j.n_decisions, 1, "primary");
        CHECK_STR(j.decisions[0].rule->name, "primary", "primary rule decides on a primary");
        CHECK_INT(j.decisions[0].server_role, ROLE_PRIMARY, "decision carries the role");
        judgement_free(&j);

        snap.in_recovery = true;
        policy_judge(&in, &snap, &j);
        CHECK_STR(j.decisions[0].rule->name, "standby", "standby rule decides on a standby");
        CHECK_INT(j.decisions[0].server_role, ROLE_STANDBY, "decision carries the role");
        judgement_free(&j);

        /* no answer: only role-less rules */
        snap.role_known = false;
        policy_judge(&in, &snap, &j);
        CHECK_STR(j.decisions[0].rule->name, "any", "unknown role: role: any only");
        CHECK_INT(j.decisions[0].server_role, ROLE_ANY, "unknown role");
        judgement_free(&j);
}

/* max_xmin_age: an age, judged at every poll, never a deadline. */
static void test_xmin_age(void) {
        struct rule r = rule_make("horizon", LIMIT_XMIN_AGE, 200, ACTION_TERMINATE);
        struct snapshot_row rows[4] = {
                row_base(1, STATE_IDLE_IN_TRANSACTION, 5), row_base(2, STATE_IDLE_IN_TRANSACTION, 5),
                row_base(3, STATE_IDLE, 5), row_base(4, STATE_ACTIVE, 5),
        };
        struct judgement j;

        rows[0].xmin_age = 312;
        rows[1].xmin_age = 199;
        rows[2].xmin_age = -1;      /* holds none */
        rows[3].xmin_age = 200;     /* reaching it is enough */
        CHECK_INT(judge(&r, 1, rows, 4, false, NULL, 0, &j), 2, "xmin ages");
        CHECK_INT(j.decisions[0].row->pid, 1, "oldest horizon first");
        CHECK_INT(j.decisions[0].limit, LIMIT_XMIN_AGE, "limit");
        CHECK_INT(j.decisions[0].elapsed_ms, 312, "the age is reported");
        CHECK_INT(j.decisions[1].row->pid, 4, "at the limit");
        CHECK_INT(j.next_deadline, INT64_MAX, "ages plan no deadline");
        CHECK_INT(limit_since(LIMIT_XMIN_AGE, &rows[0]), rows[0].xact_start, "guarded by xact_start");
        judgement_free(&j);

        /* a time limit of the same rule that is broken names the decision */
        r.limit_ms[LIMIT_IDLE_IN_TRANSACTION] = 1000;
        CHECK_INT(judge(&r, 1, rows, 1, false, NULL, 0, &j), 1, "both broken");
        CHECK_INT(j.decisions[0].limit, LIMIT_IDLE_IN_TRANSACTION, "the time limit names it");
        judgement_free(&j);

        /* and an age never shortens the poll gap */
        {
                struct rule only = rule_make("h", LIMIT_XMIN_AGE, 5, ACTION_TERMINATE);
                struct server srv = { .interval_ms = 10000, .rules = &only, .n_rules = 1 };
                CHECK_INT(plan_gap_ms(&srv, 100), 10000, "xmin age is no duration");
        }
}

/* A waiter: pid waits since `since` seconds ago for the listed pids. */
static struct snapshot_row waiter(int32_t pid, int64_t since_s, const int32_t *blockers, size_t n) {
        struct snapshot_row r = row_base(pid, STATE_ACTIVE, since_s);
        r.wait_start = NOW - S(since_s);
        r.lock_waiting = true;
        r.blockers = blockers;
        r.n_blockers = n;
        return r;
}

static struct snapshot_row holder(int32_t pid, enum session_state st) {
        struct snapshot_row r = row_base(pid, st, 100);
        r.wait_start = TS_NULL;
        return r;
}

static const struct lock_node *node_for(const struct lock_graph *g, const struct snapshot *snap, int32_t pid) {
        for (size_t i = 0; i < snap->n_rows; i++)
                if (snap->rows[i].pid == pid)
                        return &g->nodes[i];
        for (size_t k = 0; k < g->n_orphans; k++)
                if (g->orphan_pids[k] == pid)
                        return &g->nodes[snap->n_rows + k];
        return NULL;
}

/* The chain walk on hand-made graphs. */
static void test_lock_graph(void) {
        /* 10 <- 11 <- 12, 13 <- 11 (a queue behind an idle blocker), with
         * duplicates as pg_blocking_pids gives for parallel groups */
        static const int32_t b11[] = { 10, 10, 10 }, b12[] = { 11 }, b13[] = { 11, 10 };
        struct snapshot_row rows[] = {
                holder(10, STATE_IDLE_IN_TRANSACTION), waiter(11, 30, b11, 3), waiter(12, 20, b12, 1),
                waiter(13, 10, b13, 2), holder(14, STATE_IDLE),
        };
        struct snapshot snap = { .now = NOW, .rows = rows, .n_rows = ELEMENTSOF(rows), .has_graph = true };
        struct lock_graph g;
        const struct lock_node *n;

        lock_graph_build(&snap, NULL, 0, &g);
        n = node_for(&g, &snap, 10);
        CHECK(n->root && !n->waiter);
        CHECK_INT(n->n_blocked, 3, "transitive count, duplicates once");
        CHECK_INT(n->blocking_since, NOW - S(30), "longest wait of those waiting for the root");
        n = node_for(&g, &snap, 11);
        CHECK(!n->root && n->waiter);
        CHECK_INT(n->n_blocked, 2, "waiters behind a waiter");
        CHECK_INT(n->blocking_since, NOW - S(20), "longest wait of those waiting for it");
        n = node_for(&g, &snap, 12);
        CHECK(!n->root && n->n_blocked == 0);
        n = node_for(&g, &snap, 14);
        CHECK(!n->root && !n->waiter && n->n_blocked == 0);
        CHECK_INT(g.n_orphans, 0, "every pid has a row");
        lock_graph_free(&g);

        /* a cycle (a deadlock before the detector breaks it): walked once, no root */
        {
                static const int32_t c1[] = { 2 }, c2[] = { 3 }, c3[] = { 1 };
                struct snapshot_row cyc[] = { waiter(1, 5, c1, 1), waiter(2, 5, c2, 1), waiter(3, 5, c3, 1) };
                struct snapshot cs = { .now = NOW, .rows = cyc, .n_rows = 3, .has_graph = true };

                lock_graph_build(&cs, NULL, 0, &g);
                for (size_t i = 0; i < 3; i++) {
                        CHECK(!g.nodes[i].root);
                        CHECK_INT(g.nodes[i].n_blocked, 2, "each of a 3-cycle has the two others behind it");
                }
                lock_graph_free(&g);
        }

        /* pid 0 (a prepared transaction) and a pid without a row are orphan roots */
        {
                static const int32_t p1[] = { 0 }, p2[] = { 1, 0 }, p3[] = { 99 };
                struct snapshot_row pr[] = { waiter(1, 8, p1, 1), waiter(2, 4, p2, 2), waiter(3, 2, p3, 1) };
                struct snapshot ps = { .now = NOW, .rows = pr, .n_rows = 3, .has_graph = true };

                lock_graph_build(&ps, NULL, 0, &g);
                CHECK_INT(g.n_orphans, 2, "pid 0 and pid 99");
                n = node_for(&g, &ps, 0);
                CHECK(n && n->root);
                CHECK_INT(n->n_blocked, 2, "both waiters behind pid 0, the second once");
                CHECK_INT(n->blocking_since, NOW - S(8), "oldest");
                n = node_for(&g, &ps, 99);
                CHECK(n && n->root && n->n_blocked == 1);
                lock_graph_free(&g);
        }

        /* a waiter listing itself (must not count itself) */
        {
                static const int32_t self[] = { 5, 6 };
                struct snapshot_row sr[] = { waiter(5, 3, self, 2), holder(6, STATE_ACTIVE) };
                struct snapshot ss = { .now = NOW, .rows = sr, .n_rows = 2, .has_graph = true };

                lock_graph_build(&ss, NULL, 0, &g);
                CHECK_INT(g.nodes[0].n_blocked, 0, "not behind itself");
                CHECK(g.nodes[1].root && g.nodes[1].n_blocked == 1);
                lock_graph_free(&g);
        }
}

/* max_blocking judges roots only, max_lock_wait waiters, min_blocked counts;
 * protected roots are warnings. */
static void test_lock_rules(void) {
        static const int32_t b11[] = { 10 }, b12[] = { 11 }, b13[] = { 11 }, b21[] = { 0 };
        struct snapshot_row rows[] = {
                holder(10, STATE_IDLE_IN_TRANSACTION), waiter(11, 30, b11, 1), waiter(12, 20, b12, 1),
                waiter(13, 10, b13, 1), waiter(21, 50, b21, 1),
        };
        struct snapshot snap = { .now = NOW, .rows = rows, .n_rows = ELEMENTSOF(rows), .has_graph = true };
        struct rule r = rule_make("chain", LIMIT_BLOCKING, 25000, ACTION_TERMINATE);
        struct server srv = { .name = (char *) "test", .rules = &r, .n_rules = 1 };
        struct policy_input in = { .server = &srv };
        struct judgement j;

        r.min_blocked = -1;
        policy_judge(&in, &snap, &j);
        CHECK_INT(j.n_decisions, 1, "the root only");
        CHECK_INT(j.decisions[0].row->pid, 10, "root judged");
        CHECK_INT(j.decisions[0].limit, LIMIT_BLOCKING, "limit");
        CHECK_INT(j.decisions[0].blocked, 3, "blocked");
        CHECK_INT(j.decisions[0].elapsed_ms, 30000, "longest wait behind it");
        CHECK_INT(j.n_warnings, 1, "pid 0 root");
        CHECK_INT(j.warnings[0].pid, 0, "pid 0 warned");
        CHECK_STR(j.warnings[0].why, "a prepared transaction", "why");
        CHECK_INT(j.warnings[0].blocked, 1, "one behind pid 0");
        judgement_free(&j);

        /* not reached yet: a deadline at the longest wait + the limit */
        r.limit_ms[LIMIT_BLOCKING] = 60000;
        policy_judge(&in, &snap, &j);
        CHECK_INT(j.n_decisions, 0, "not yet");
        CHECK_INT(j.next_deadline, NOW - S(30) + S(60), "deadline: the root's longest wait + the limit (pid 0 sets none)");
        judgement_free(&j);

        /* min_blocked above the queue */
        r.limit_ms[LIMIT_BLOCKING] = 1000;
        r.min_blocked = 4;
        policy_judge(&in, &snap, &j);
        CHECK_INT(j.n_decisions, 0, "min_blocked 4 > 3");
        CHECK_INT(j.n_warnings, 0, "nor warned");
        judgement_free(&j);

        /* a superuser root is warned, not judged */
        r.min_blocked = -1;
        rows[0].superuser = true;
        policy_judge(&in, &snap, &j);
        CHECK_INT(j.n_decisions, 0, "superuser root not judged");
        CHECK_INT(j.n_warnings, 2, "superuser and pid 0");
        CHECK_INT(j.warnings[0].pid, 10, "superuser root warned");
        CHECK_STR(j.warnings[0].why, "a superuser's session", "why");
        judgement_free(&j);
        rows[0].superuser = false;

        /* max_lock_wait with min_blocked 1: the waiter with others behind it */
        r = rule_make("queue", LIMIT_LOCK_WAIT, 5000, ACTION_CANCEL);
        r.min_blocked = 1;
        policy_judge(&in, &snap, &j);
        CHECK_INT(j.n_decisions, 1, "only 11 has waiters behind it");
        CHECK_INT(j.decisions[0].row->pid, 11, "the queued statement");
        CHECK_INT(j.decisions[0].blocked, 2, "two behind it");
        CHECK_INT(j.decisions[0].elapsed_ms, 30000, "its own wait");
        judgement_free(&j);

        /* default min_blocked 0: every waiter past the limit */
        r.min_blocked = -1;
        policy_judge(&in, &snap, &j);
        CHECK_INT(j.n_decisions, 4, "11, 12, 13, 21");
        judgement_free(&j);

        /* without the graph (no waiter seen), lock rules judge nothing */
        snap.has_graph = false;
        policy_judge(&in, &snap, &j);
        CHECK_INT(j.n_decisions, 0, "no graph");
        judgement_free(&j);
}

/* Issue 18, defect 1: a root is judged for the time it has itself been
 * blocking. 30 holds a lock that 31 has waited for 5 s; 32 waits for 31
 * (which holds another lock) since 60 s: 30 has been in 32's way for 5 s
 * only, since 31 began to wait for it. */
static void test_blocking_is_its_own(void) {
        static const int32_t b31[] = { 30 }, b32[] = { 31 };
        struct snapshot_row rows[] = { holder(30, STATE_IDLE_IN_TRANSACTION), waiter(31, 5, b31, 1),
                                       waiter(32, 60, b32, 1) };
        struct snapshot snap = { .now = NOW, .rows = rows, .n_rows = ELEMENTSOF(rows), .has_graph = true };
        struct rule r = rule_make("chain", LIMIT_BLOCKING, 10000, ACTION_TERMINATE);
        struct server srv = { .name = (char *) "test", .rules = &r, .n_rules = 1 };
        struct policy_input in = { .server = &srv };
        struct judgement j;

        r.min_blocked = -1;
        policy_judge(&in, &snap, &j);
        CHECK_INT(j.n_decisions, 0, "blocking 5 s < 10 s: the 60 s wait behind 31 is not 30's doing");
        CHECK_INT(j.next_deadline, NOW - S(5) + S(10), "deadline from its own direct waiter");
        judgement_free(&j);
}

/* Issue 18, defect 1: the job queue. The stuck root is gone; 41 got the
 * lock that 42, 43, 44 queued for with it (they wait since 8, 7.8, 7.6 s).
 * The last poll saw 41 waiting: it has blocked them only since it got the
 * lock, and the first poll that saw it holding is where its clock starts. */
static void test_job_queue_promoted_waiter(void) {
        static const int32_t b42[] = { 41 }, b43[] = { 41, 42 }, b44[] = { 41, 42, 43 };
        struct snapshot_row rows[] = { holder(41, STATE_ACTIVE), waiter(42, 8, b42, 1), waiter(43, 8, b43, 2),
                                       waiter(44, 7, b44, 3) };
        struct snapshot snap = { .now = NOW, .rows = rows, .n_rows = ELEMENTSOF(rows), .has_graph = true };
        struct rule r = rule_make("chain", LIMIT_BLOCKING, 3000, ACTION_TERMINATE);
        struct server srv = { .name = (char *) "test", .rules = &r, .n_rules = 1 };
        struct policy_input in = { .server = &srv };
        struct memory m = {};
        struct judgement j;

        rows[0].wait_start = TS_NULL;
        rows[2].wait_start -= S(1) / 5;        /* 43 queued 0.2 s after 42 */
        rows[1].wait_start -= S(2) / 5;
        r.min_blocked = -1;

        /* the poll before: 41 waits too (for the root, gone since) */
        {
                struct snapshot_row before[] = { rows[0], rows[1], rows[2], rows[3] };
                struct snapshot prev = { .now = NOW - S(1), .rows = before, .n_rows = 4 };
                before[0].lock_waiting = true;
                memory_track_waiters(&m, &prev);
                CHECK_INT(m.n_held_since, 4, "four waiters remembered");
        }
        memory_track_waiters(&m, &snap);
        CHECK_INT(m.n_held_since, 4, "41 now holding, still remembered");
        in.held_since = m.held_since;
        in.n_held_since = m.n_held_since;
        policy_judge(&in, &snap, &j);
        CHECK_INT(j.n_decisions, 0, "41 has blocked them for 0 s, not for the queue's 8 s");
        CHECK_INT(j.next_deadline, NOW + S(3), "its clock started at this poll");
        judgement_free(&j);

        /* 2.5 s later, still holding: 2.5 s, not under the limit's reach yet;
         * 3 s after the first poll that saw it holding, it is over */
        snap.now = NOW + S(5) / 2;
        memory_track_waiters(&m, &snap);
        in.held_since = m.held_since;
        in.n_held_since = m.n_held_since;
        policy_judge(&in, &snap, &j);
        CHECK_INT(j.n_decisions, 0, "2.5 s of its own");
        judgement_free(&j);
        snap.now = NOW + S(3);
        memory_track_waiters(&m, &snap);
        in.held_since = m.held_since;
        in.n_held_since = m.n_held_since;
        policy_judge(&in, &snap, &j);
        CHECK_INT(j.n_decisions, 1, "3 s of its own: over");
        CHECK_INT(j.decisions[0].elapsed_ms, 3000, "counted from the first poll that saw it holding");
        CHECK_INT(j.decisions[0].blocked, 3, "three behind it");
        judgement_free(&j);

        /* without memory (--explain, a first poll) the waits are all there is */
        snap.now = NOW;
        in.held_since = NULL;
        in.n_held_since = 0;
        policy_judge(&in, &snap, &j);
        CHECK_INT(j.n_decisions, 1, "no memory: the oldest direct wait");
        judgement_free(&j);

        /* a session that is no row any more is forgotten */
        snap.n_rows = 0;
        memory_track_waiters(&m, &snap);
        CHECK_INT(m.n_held_since, 0, "forgotten");
        memory_done(&m);
}

/* The reference: a walk up from each waiter, as lock_graph_build once did. */
static void naive_counts(const struct snapshot *snap, size_t n_nodes, const int32_t *pids, size_t *count,
                         int64_t *direct) {
        size_t *stamp = xcalloc(n_nodes + 1, sizeof(size_t)), *stack = xcalloc(n_nodes + 1, sizeof(size_t));
        for (size_t i = 0; i < n_nodes; i++) {
                count[i] = 0;
                direct[i] = TS_NULL;
        }
        for (size_t w = 0; w < snap->n_rows; w++) {
                size_t n_stack = 1;
                if (snap->rows[w].wait_start == TS_NULL)
                        continue;
                stamp[w] = w + 1;
                stack[0] = w;
                while (n_stack > 0) {
                        size_t v = stack[--n_stack];
                        const struct snapshot_row *r = v < snap->n_rows ? &snap->rows[v] : NULL;
                        for (size_t b = 0; r && b < r->n_blockers; b++) {
                                size_t u = SIZE_MAX;
                                for (size_t k = 0; k < n_nodes && u == SIZE_MAX; k++)
                                        if (pids[k] == r->blockers[b])
                                                u = k;
                                if (v == w && u != w && (direct[u] == TS_NULL || snap->rows[w].wait_start < direct[u]))
                                        direct[u] = snap->rows[w].wait_start;
                                if (stamp[u] == w + 1)
                                        continue;
                                stamp[u] = w + 1;
                                count[u]++;
                                stack[n_stack++] = u;
                        }
                }
        }
        free(stamp);
        free(stack);
}

/* Issue 18, defect 3: the linear build agrees with the walk on random
 * graphs (queues, several holders, diamonds, cycles, pid 0), and a queue of
 * 3000 is a path, not 4.5 million edges walked 3000 times. */
static void test_lock_graph_random(void) {
        unsigned seed = 18;
        size_t mismatches = 0;

        for (int round = 0; round < 300; round++) {
                size_t n = 2 + (size_t) (rand_r(&seed) % 40), n_pool = 0;
                struct snapshot_row *rows = xcalloc(n, sizeof(*rows));
                int32_t *pool = xcalloc(4 * n + 1, sizeof(int32_t)), *pids;
                struct snapshot snap = { .now = NOW, .rows = rows, .n_rows = n, .has_graph = true };
                struct lock_graph g;
                size_t *count;
                int64_t *direct;

                for (size_t i = 0; i < n; i++) {
                        bool waits = rand_r(&seed) % 3 != 0;
                        rows[i] = waits ? waiter((int32_t) i + 1, rand_r(&seed) % 20, NULL, 0) : holder((int32_t) i + 1, STATE_IDLE);
                }
                for (size_t i = 0; i < n; i++) {
                        size_t nb = rows[i].wait_start != TS_NULL ? 1 + (size_t) (rand_r(&seed) % 4) : 0;
                        rows[i].blockers = pool + n_pool;
                        for (size_t b = 0; b < nb; b++) {
                                unsigned x = (unsigned) rand_r(&seed) % (unsigned) (n + 2);
                                /* mostly waiters ahead (a queue), some anything (cycles), pid 0, a missing pid */
                                pool[n_pool++] = x == n ? 0 : x == n + 1 ? 999 : (int32_t) x + 1;
                        }
                        rows[i].n_blockers = nb;
                }
                lock_graph_build(&snap, NULL, 0, &g);
                pids = xcalloc(n + g.n_orphans + 1, sizeof(int32_t));
                for (size_t i = 0; i < n; i++)
                        pids[i] = rows[i].pid;
                for (size_t k = 0; k < g.n_orphans; k++)
                        pids[n + k] = g.orphan_pids[k];
                count = xcalloc(n + g.n_orphans + 1, sizeof(size_t));
                direct = xcalloc(n + g.n_orphans + 1, sizeof(int64_t));
                naive_counts(&snap, n + g.n_orphans, pids, count, direct);
                for (size_t v = 0; v < n + g.n_orphans; v++)
                        mismatches += g.nodes[v].n_blocked != count[v] ||
                                      g.nodes[v].root != (count[v] > 0 && !(v < n && rows[v].wait_start != TS_NULL)) ||
                                      g.nodes[v].blocking_since != direct[v];
                lock_graph_free(&g);
                free(pids);
                free(count);
                free(direct);
                free(rows);
                free(pool);
        }
        CHECK_INT(mismatches, 0, "random graphs: counts, roots and direct waits as the walk says");

        /* a diamond: the ALTER (52) queued behind two SELECTs (50, 51) that
         * wait for the holder (49), a reader behind the ALTER: 49 has 4
         * sessions behind it, each once */
        {
                static const int32_t b50[] = { 49 }, b51[] = { 49 }, b52[] = { 49, 50, 51 }, b53[] = { 52, 49, 50, 51 };
                struct snapshot_row dr[] = { holder(49, STATE_IDLE_IN_TRANSACTION), waiter(50, 9, b50, 1),
                                             waiter(51, 8, b51, 1), waiter(52, 7, b52, 3), waiter(53, 6, b53, 4) };
                struct snapshot ds = { .now = NOW, .rows = dr, .n_rows = 5, .has_graph = true };
                struct lock_graph g;
                lock_graph_build(&ds, NULL, 0, &g);
                CHECK_INT(g.nodes[0].n_blocked, 4, "diamond counted once");
                CHECK_INT(g.nodes[3].n_blocked, 1, "the reader behind the ALTER");
                CHECK_INT(g.nodes[1].n_blocked, 2, "the ALTER and the reader behind the first SELECT");
                lock_graph_free(&g);
        }

        /* 3000 on one lock, each listing the holder and every waiter ahead */
        {
                size_t n = 3001, n_pool = 0;
                struct snapshot_row *q = xcalloc(n, sizeof(*q));
                int32_t *pool = xcalloc(n * (n + 1) / 2 + 1, sizeof(int32_t));
                struct snapshot qs = { .now = NOW, .rows = q, .n_rows = n, .has_graph = true };
                struct lock_graph g;

                q[0] = holder(1, STATE_IDLE);
                for (size_t i = 1; i < n; i++) {
                        q[i] = waiter((int32_t) i + 1, 0, pool + n_pool, i);
                        q[i].wait_start = NOW - S(4000) + (int64_t) i;
                        for (size_t b = 0; b < i; b++)
                                pool[n_pool++] = (int32_t) b + 1;
                }
                lock_graph_build(&qs, NULL, 0, &g);
                CHECK(g.nodes[0].root);
                CHECK_INT(g.nodes[0].n_blocked, 3000, "all behind the holder");
                CHECK_INT(g.nodes[1].n_blocked, 2999, "all but itself behind the first");
                CHECK_INT(g.nodes[3000].n_blocked, 0, "none behind the last");
                CHECK_INT(g.nodes[0].blocking_since, NOW - S(4000) + 1, "the first waiter's wait");
                lock_graph_free(&g);
                free(q);
                free(pool);
        }
}

/* --- max_sessions and when_connections_above (section 14) --- */

static struct snapshot_row app_row(int32_t pid, const char *app, enum session_state st, int64_t age_s) {
        struct snapshot_row r = row_base(pid, st, age_s);
        r.application = app;
        return r;
}

/* The groups the statement would count for these rows, per application. */
static size_t count_apps(const struct snapshot_row *rows, size_t n, struct snapshot_group *ret) {
        size_t g = 0;

        for (size_t i = 0; i < n; i++) {
                size_t k = 0;
                while (k < g && strcmp(ret[k].key[GROUP_APPLICATION], rows[i].application) != 0)
                        k++;
                if (k == g)
                        ret[g++] = (struct snapshot_group) { .key = { [GROUP_APPLICATION] = rows[i].application } };
                ret[k].count++;
        }
        return g;
}

static bool decided(const struct judgement *j, int32_t pid, const char *rule) {
        for (size_t i = 0; i < j->n_decisions; i++)
                if (j->decisions[i].row->pid == pid)
                        return !rule || strcmp(j->decisions[i].rule->name, rule) == 0;
        return false;
}

static bool caps_dry_run;   /* judge_caps(): a global dry run */

static void judge_caps(struct rule *rules, size_t n_rules, struct snapshot_row *rows, size_t n, bool complete,
                       const struct session_id *dying, size_t n_dying, unsigned max_actions, struct judgement *j,
                       struct snapshot *snap_out) {
        static struct snapshot_group groups[64];
        struct server srv = { .name = (char *) "test", .rules = rules, .n_rules = n_rules,
                              .max_actions_per_cycle = max_actions };
        struct snapshot snap = { .now = NOW, .rows = rows, .n_rows = n, .groups = groups,
                                 .idle_all = complete, .connection_slots = 20 };
        struct policy_input in = { .server = &srv, .dying = dying, .n_dying = n_dying, .verdicts = true,
                                   .dry_run = caps_dry_run };

        snap.n_groups = count_apps(rows, n, groups);
        snap.connections = (int64_t) n;
        policy_judge(&in, &snap, j);
        if (snap_out)
                *snap_out = snap;
}

static void test_max_sessions(void) {
        struct rule cap = rule_make("web-cap", LIMIT_SESSIONS, 3, ACTION_TERMINATE);
        struct judgement j;

        cap.per = GROUP_APPLICATION;
        {
                /* 5 of web-a, 2 of web-b: the 2 longest idle of web-a go. */
                struct snapshot_row rows[] = {
                        app_row(11, "web-a", STATE_IDLE, 30), app_row(12, "web-a", STATE_IDLE, 50),
                        app_row(13, "web-a", STATE_IDLE, 10), app_row(14, "web-a", STATE_IDLE, 40),
                        app_row(15, "web-a", STATE_IDLE, 20), app_row(21, "web-b", STATE_IDLE, 900),
                        app_row(22, "web-b", STATE_IDLE, 900),
                };
                judge_caps(&cap, 1, rows, ELEMENTSOF(rows), true, NULL, 0, 0, &j, NULL);
                CHECK_INT(j.n_decisions, 2, "two victims");
                CHECK(decided(&j, 12, "web-cap") && decided(&j, 14, "web-cap"));
                CHECK(!decided(&j, 21, NULL) && !decided(&j, 22, NULL));
                CHECK_INT(j.decisions[0].limit, LIMIT_SESSIONS, "limit");
                CHECK_INT(j.decisions[0].row->pid, 12, "the longest idle first");
                CHECK_STR(j.decisions[0].group_value, "web-a", "group");
                CHECK_INT(j.decisions[0].sessions, 5, "count");
                CHECK_INT(j.decisions[0].elapsed_ms, 50000, "idle for");
                CHECK_INT(j.n_caps, 1, "one group over");
                CHECK_INT(j.caps[0].short_by, 0, "brought under");
                CHECK_STR(j.verdicts[1].group_value, "web-a", "verdict of a victim");
                CHECK_INT(j.verdicts[1].kind, VERDICT_OVER, "verdict over");
                CHECK_INT(j.verdicts[0].kind, VERDICT_NONE, "not a victim");
                judgement_free(&j);

                /* the blast-radius cap holds back the second */
                judge_caps(&cap, 1, rows, ELEMENTSOF(rows), true, NULL, 0, 1, &j, NULL);
                CHECK_INT(j.n_decisions, 1, "max_actions_per_cycle");
                CHECK_INT(j.n_capped, 1, "one waits");
                CHECK(decided(&j, 12, NULL));
                judgement_free(&j);

                /* the group's idle sessions were not all read: nothing yet, and a second read asks for them */
                {
                        struct snapshot snap;
                        struct snapshot_request req = {};
                        struct server srv = { .name = (char *) "test", .rules = &cap, .n_rules = 1 };

                        judge_caps(&cap, 1, rows, ELEMENTSOF(rows), false, NULL, 0, 0, &j, &snap);
                        CHECK_INT(j.n_decisions, 0, "incomplete group: no victim");
                        CHECK_INT(j.n_caps, 1, "but it is over");
                        CHECK(!j.caps[0].complete && j.caps[0].short_by == 0);
                        CHECK_INT(policy_wants_idle(&srv, &snap, &req), 1, "one group wanted");
                        CHECK_INT(req.idle_keys[GROUP_APPLICATION].n, 1, "by application");
                        CHECK_STR(req.idle_keys[GROUP_APPLICATION].values[0], "web-a", "web-a");
                        snapshot_request_done(&req);
                        judgement_free(&j);
                }
        }
        {
                /* Ties: same state_change, the lower pid first. */
                struct snapshot_row rows[] = {
                        app_row(31, "web-a", STATE_IDLE, 60), app_row(30, "web-a", STATE_IDLE, 60),
                        app_row(32, "web-a", STATE_IDLE, 60), app_row(33, "web-a", STATE_IDLE, 60),
                };
                judge_caps(&cap, 1, rows, ELEMENTSOF(rows), true, NULL, 0, 0, &j, NULL);
                CHECK_INT(j.n_decisions, 1, "one over");
                CHECK(decided(&j, 30, NULL));
                judgement_free(&j);
        }
        {
                /* Active, idle in transaction, exempt and superuser sessions
                 * count and are never victims; what cannot be ended is said. */
                struct rule c2 = cap;
                struct snapshot_row rows[] = {
                        app_row(41, "web-a", STATE_IDLE, 500), app_row(42, "web-a", STATE_ACTIVE, 400),
                        app_row(43, "web-a", STATE_IDLE_IN_TRANSACTION, 300), app_row(44, "web-a", STATE_IDLE, 200),
                        app_row(45, "web-a", STATE_IDLE, 20), app_row(46, "web-a", STATE_IDLE, 10),
                };
                rows[0].superuser = true;
                rows[3].user = "backup";
                c2.exempt.users = (struct name_list) { .patterns = (char *[]) { (char *) "backup" }, .n = 1,
                                                       .given = true };
                filter_finish(&c2.exempt);
                c2.limit_ms[LIMIT_SESSIONS] = 2;   /* excess 4, two can go */
                judge_caps(&c2, 1, rows, ELEMENTSOF(rows), true, NULL, 0, 0, &j, NULL);
                CHECK_INT(j.n_decisions, 2, "only the plain idle ones");
                CHECK(decided(&j, 45, NULL) && decided(&j, 46, NULL));
                CHECK_INT(j.n_caps, 1, "over");
                CHECK_INT(j.caps[0].sessions, 6, "everyone counts");
                CHECK_INT(j.caps[0].ending, 2, "two ending");
                CHECK_INT(j.caps[0].short_by, 2, "short by two");
                CHECK_INT(j.verdicts[3].kind, VERDICT_EXEMPT, "exempt stays exempt");
                CHECK_INT(j.verdicts[0].kind, VERDICT_PROTECTED, "superuser stays protected");
                judgement_free(&j);

                /* min_idle: the young ones wait, and the next poll comes when the first is old enough */
                c2.min_idle_ms = 15000;
                judge_caps(&c2, 1, rows, ELEMENTSOF(rows), true, NULL, 0, 0, &j, NULL);
                CHECK_INT(j.n_decisions, 1, "only one idle 15s");
                CHECK(decided(&j, 45, NULL) && !decided(&j, 46, NULL));
                CHECK_INT(j.next_deadline, NOW - S(10) + S(15), "when pid 46 reaches min_idle");
                CHECK_INT(j.verdicts[5].kind, VERDICT_NEXT, "explain: 46 is next");
                CHECK_INT(j.verdicts[5].limit, LIMIT_SESSIONS, "under the cap");
                CHECK_INT(j.verdicts[5].remaining_ms, 5000, "in 5s");
                judgement_free(&j);
        }
        {
                /* What another rule terminates now, and what is still exiting,
                 * counts toward the excess: no extra victim. */
                struct rule rules[2] = { rule_make("idle", LIMIT_IDLE, 45000, ACTION_TERMINATE), cap };
                struct snapshot_row rows[] = {
                        app_row(51, "web-a", STATE_IDLE, 50), app_row(52, "web-a", STATE_IDLE, 40),
                        app_row(53, "web-a", STATE_IDLE, 30), app_row(54, "web-a", STATE_IDLE, 20),
                        app_row(55, "web-a", STATE_IDLE, 10),
                };
                struct session_id dying[] = { { 54, NOW - S(86400) } };

                judge_caps(rules, 2, rows, ELEMENTSOF(rows), true, NULL, 0, 0, &j, NULL);
                CHECK_INT(j.n_decisions, 2, "one by max_idle, one by the cap");
                CHECK(decided(&j, 51, "idle") && decided(&j, 52, "web-cap"));
                judgement_free(&j);
                /* a dry run judges exactly as the real run: the same two */
                caps_dry_run = true;
                judge_caps(rules, 2, rows, ELEMENTSOF(rows), true, NULL, 0, 0, &j, NULL);
                caps_dry_run = false;
                CHECK_INT(j.n_decisions, 2, "dry run: the same two");
                CHECK(decided(&j, 51, "idle") && decided(&j, 52, "web-cap") && j.decisions[0].dry_run);
                judgement_free(&j);
                /* a shadow rule's termination ends nothing: the cap picks as without it */
                rules[0].dry_run = true;
                judge_caps(rules, 2, rows, ELEMENTSOF(rows), true, NULL, 0, 0, &j, NULL);
                rules[0].dry_run = false;
                CHECK_INT(j.n_decisions, 2, "shadow idle rule on 51, and the cap on 51 and 52");
                CHECK(decided(&j, 51, "web-cap") && decided(&j, 52, "web-cap"));
                judgement_free(&j);
                judge_caps(rules, 2, rows, ELEMENTSOF(rows), true, dying, 1, 0, &j, NULL);
                CHECK_INT(j.n_decisions, 1, "the dying one counts too");
                CHECK(decided(&j, 51, "idle") && !decided(&j, 52, NULL));
                judgement_free(&j);
        }
        {
                /* No per: one group, "all". */
                struct rule all = rule_make("all-cap", LIMIT_SESSIONS, 2, ACTION_LOG);
                struct snapshot_row rows[] = {
                        app_row(61, "x", STATE_IDLE, 5), app_row(62, "y", STATE_IDLE, 6), app_row(63, "z", STATE_IDLE, 7),
                };
                judge_caps(&all, 1, rows, ELEMENTSOF(rows), true, NULL, 0, 0, &j, NULL);
                CHECK_INT(j.n_decisions, 1, "one over the whole server");
                CHECK(decided(&j, 63, NULL));
                CHECK(j.decisions[0].group_per == GROUP_ALL && j.decisions[0].group_value == NULL);
                CHECK_INT(j.decisions[0].sessions, 3, "all three");
                judgement_free(&j);
        }
}

static void test_connection_threshold(void) {
        struct rule r = rule_make("free-slots", LIMIT_IDLE, 1000, ACTION_TERMINATE);
        struct snapshot_row rows[] = { row_base(71, STATE_IDLE, 60) };
        struct server srv = { .name = (char *) "test", .rules = &r, .n_rules = 1 };
        struct snapshot snap = { .now = NOW, .rows = rows, .n_rows = 1, .connections = 18, .connection_slots = 20 };
        struct policy_input in = { .server = &srv, .verdicts = true };
        struct judgement j;

        r.connections_above = 90;
        r.connections_above_percent = true;
        policy_judge(&in, &snap, &j);
        CHECK_INT(j.n_decisions, 0, "18 of 20 is not above 90%");
        CHECK_INT(j.verdicts[0].reason, REASON_BELOW_THRESHOLD, "inactive");
        CHECK_INT(j.verdicts[0].connections, 18, "with the numbers");
        CHECK_INT(j.next_deadline, INT64_MAX, "an inactive rule plans nothing");
        judgement_free(&j);
        snap.connections = 19;
        policy_judge(&in, &snap, &j);
        CHECK_INT(j.n_decisions, 1, "19 of 20 is");
        CHECK_INT(j.decisions[0].connections, 19, "connections");
        CHECK_INT(j.decisions[0].connection_slots, 20, "slots");
        judgement_free(&j);
        r.connections_above_percent = false;
        r.connections_above = 19;
        policy_judge(&in, &snap, &j);
        CHECK_INT(j.n_decisions, 0, "19 is not above 19");
        judgement_free(&j);
        snap.connections = -1;
        r.connections_above = 1;
        policy_judge(&in, &snap, &j);
        CHECK_INT(j.n_decisions, 0, "unknown numbers: inactive");
        judgement_free(&j);
}

int main(void) {
        test_limits_by_state();
        test_session_age();
        test_protections();
        test_precedence();
        test_which_limit();
        test_order_and_deadline();
        test_filters_and_exempt();
        test_cap();
        test_escalation();
        test_poll_gap();
        test_role();
        test_xmin_age();
        test_lock_graph();
        test_lock_rules();
        test_blocking_is_its_own();
        test_job_queue_promoted_waiter();
        test_lock_graph_random();
        test_max_sessions();
        test_connection_threshold();
        return unit_finish("test-policy");
}
