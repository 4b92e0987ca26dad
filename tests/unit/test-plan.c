/* The planner: what a snapshot asks for, when the lock graph is read, when
 * the next poll comes; and the request as the statement's parameters. */
#include <stdlib.h>

#include "macro.h"
#include "plan.h"
#include "snapshot.h"
#include "unit.h"

#define MS 1000                     /* CLOCK_MONOTONIC usec per ms */
#define NOW (INT64_C(1700000000) * 1000000)

static struct config *load(const char *yaml) {
        return unit_config("plan-test.yaml", yaml);
}

#define SERVER "servers:\n  - name: s\n    conninfo: \"dbname=x\"\n    interval: 10s\n    rules:\n"

static void test_poll_request(void) {
        struct config *c = load("min_interval: 100ms\n" SERVER
                                "      - {name: idle, max_idle: 2s}\n"
                                "      - {name: watch, max_idle: 500ms, action: log}\n"
                                "      - {name: long, max_query_duration: 30s, action: cancel}\n"
                                "      - {name: tiny, max_session_age: 1s}\n"
                                "      - {name: xmin, max_xmin_age: 1000}\n");
        int32_t watched[2] = { 41, 42 };
        struct snapshot_request req;

        if (!c)
                return;
        /* gap: the smallest acting limit, 1s (max_session_age) */
        CHECK_INT(plan_gap_ms(&c->servers[0], c->min_interval_ms), 1000, "gap");
        plan_poll_request(c, &c->servers[0], watched, 2, &req);
        /* an acting rule is asked for one gap early, a log-only one once crossed */
        CHECK_INT(req.bound_ms[LIMIT_IDLE], 500, "idle: log-only 500ms beats 2s - 1s");
        CHECK_INT(req.bound_ms[LIMIT_QUERY_DURATION], 29000, "query: 30s less the gap");
        CHECK_INT(req.bound_ms[LIMIT_SESSION_AGE], 0, "session age: never below 0");
        CHECK_INT(req.bound_ms[LIMIT_IDLE_IN_TRANSACTION], -1, "no rule: -1");
        CHECK_INT(req.bound_ms[LIMIT_XMIN_AGE], 1000, "an age: no lookahead");
        CHECK(!req.every_session && !req.superusers && !req.lock_waiters && !req.with_query);
        CHECK_INT(req.n_pids, 2, "watched pids");
        CHECK(req.pids[0] == 41 && req.pids[1] == 42);
        snapshot_request_done(&req);
        config_free(c);
}

static void test_explain_request(void) {
        struct config *c = load(SERVER
                                "      - {name: idle, max_idle: 2s}\n"
                                "      - {name: chains, max_blocking: 5s}\n"
                                "      - {name: q, max_query_duration: 1m, queries: [\"VACUUM*\"]}\n");
        struct snapshot_request req;
        struct snapshot_params p;

        if (!c)
                return;
        plan_explain_request(c, &c->servers[0], &req);
        CHECK(req.every_session && req.superusers);
        CHECK(req.lock_waiters);   /* a lock rule: explain asks for the waiters too */
        CHECK(req.with_query);     /* a queries filter: explain needs the text as the daemon does */
        CHECK_INT(req.bound_ms[LIMIT_IDLE], 2000, "no lookahead for explain");
        CHECK_INT(req.n_pids, 0, "no escalations");
        snapshot_params_build(&req, &p);
        CHECK_STR(p.values[0], "t", "$1 query text");
        CHECK_STR(p.values[1], "2000", "$2 idle bound");
        CHECK(p.values[2] == NULL);                 /* no idle-in-transaction rule */
        CHECK_STR(p.values[3], "60000", "$4 query bound");
        CHECK_STR(p.values[5], "0", "$6: every session");
        CHECK_STR(p.values[6], "{}", "$7 no pids");
        CHECK_STR(p.values[7], "t", "$8 superusers");
        CHECK_STR(p.values[8], "t", "$9 lock waiters");
        CHECK(p.values[9] == NULL);                 /* no max_xmin_age */
        snapshot_params_free(&p);
        snapshot_request_done(&req);
        config_free(c);
}

/* A capture, whatever the rules: every session, and the horizon's holders
 * ($10 set, 0: every one), so that a replay with max_xmin_age shows them. */
static void test_capture_request(void) {
        struct snapshot_request req;
        struct snapshot_params p;

        plan_capture_request(&req);
        CHECK(req.every_session && req.superusers && req.lock_waiters && req.with_query && req.idle_all);
        for (enum limit_kind k = 0; k < _LIMIT_MAX; k++)
                CHECK_INT(req.bound_ms[k], k == LIMIT_XMIN_AGE ? 0 : -1, limit_kind_to_string(k));
        snapshot_params_build(&req, &p);
        CHECK_STR(p.values[5], "0", "$6: every session");
        CHECK_STR(p.values[9], "0", "$10: every holder");
        snapshot_params_free(&p);
        snapshot_request_done(&req);
}

static void test_wants_graph(void) {
        struct config *c = load(SERVER "      - {name: chains, max_lock_wait: 5s}\n"
                                "  - name: t\n    conninfo: \"dbname=y\"\n    rules:\n"
                                "      - {name: idle, max_idle: 5s}\n");
        struct snapshot snap = { .n_lock_waiting = 1 };

        if (!c)
                return;
        CHECK(plan_wants_graph(&c->servers[0], &snap));
        CHECK(!plan_wants_graph(&c->servers[1], &snap));  /* no lock rule */
        snap.n_lock_waiting = 0;
        CHECK(!plan_wants_graph(&c->servers[0], &snap));  /* nobody waits */
        config_free(c);
}

static void test_next_poll(void) {
        struct config *c = load("min_interval: 200ms\n" SERVER "      - {name: idle, max_idle: 3s}\n");
        const struct server *srv;
        uint64_t t0 = UINT64_C(5000000);

        if (!c)
                return;
        srv = &c->servers[0];
        /* nothing to cross: one gap (3s) after the poll was sent */
        CHECK_INT(plan_next_poll(c, srv, &(struct plan_cycle) { t0, t0 + 50 * MS, NOW, INT64_MAX }),
                  t0 + 3000 * MS, "the gap");
        /* a crossing 1s after the server's now(): 1s after the receipt */
        CHECK_INT(plan_next_poll(c, srv, &(struct plan_cycle) { t0, t0 + 50 * MS, NOW, NOW + 1000 * MS }),
                  t0 + 1050 * MS, "the deadline, counted from the receipt");
        /* a crossing beyond the gap: the gap */
        CHECK_INT(plan_next_poll(c, srv, &(struct plan_cycle) { t0, t0 + 50 * MS, NOW, NOW + 9000 * MS }),
                  t0 + 3000 * MS, "never later than the gap");
        /* a crossing right away: no sooner than min_interval after this poll */
        CHECK_INT(plan_next_poll(c, srv, &(struct plan_cycle) { t0, t0 + 10 * MS, NOW, NOW + 1 }),
                  t0 + 200 * MS, "never sooner than min_interval");
        /* a deadline already past, or no server clock: the gap */
        CHECK_INT(plan_next_poll(c, srv, &(struct plan_cycle) { t0, t0 + 10 * MS, NOW, NOW - 1 }),
                  t0 + 3000 * MS, "a past deadline plans nothing");
        CHECK_INT(plan_next_poll(c, srv, &(struct plan_cycle) { t0, t0 + 10 * MS, TS_NULL, NOW }),
                  t0 + 3000 * MS, "no now(): the gap");
        config_free(c);
}

/* Caps: counted per their per key and per the keys their filters select by;
 * the idle sessions of a capped group asked for with the names quoted. */
static void test_group_request(void) {
        struct config *c = load(SERVER
                                "      - {name: cap, max_sessions: 5, per: application, users: [app]}\n"
                                "      - {name: idle, max_idle: 1m, databases: [x]}\n");
        struct snapshot_request req;
        struct snapshot_params p;

        if (!c)
                return;
        plan_poll_request(c, &c->servers[0], NULL, 0, &req);
        CHECK(req.group_by[GROUP_APPLICATION] && req.group_by[GROUP_USER]);
        CHECK(!req.group_by[GROUP_DATABASE] && !req.group_by[GROUP_CLIENT_ADDRESS]);
        snapshot_request_add_idle(&req, GROUP_APPLICATION, "we\"b,{1}\\");
        snapshot_request_add_idle(&req, GROUP_APPLICATION, "we\"b,{1}\\");   /* once */
        snapshot_request_add_idle(&req, GROUP_APPLICATION, "");
        snapshot_params_build(&req, &p);
        CHECK_STR(p.values[10], "t", "$11 per user");
        CHECK_STR(p.values[11], "f", "$12 not per database");
        CHECK_STR(p.values[12], "t", "$13 per application");
        CHECK_STR(p.values[13], "f", "$14 not per address");
        CHECK_STR(p.values[14], "f", "$15 not every idle session");
        CHECK(p.values[15] == NULL && p.values[16] == NULL && p.values[18] == NULL);
        CHECK_STR(p.values[17], "{\"we\\\"b,{1}\\\\\",\"\"}", "$18 quoted, escaped");
        snapshot_params_free(&p);
        snapshot_request_done(&req);
        config_free(c);

        c = load(SERVER "      - {name: all, max_sessions: 5}\n");
        if (!c)
                return;
        plan_poll_request(c, &c->servers[0], NULL, 0, &req);
        for (enum group_key g = 0; g < _GROUP_MAX; g++)
                CHECK(!req.group_by[g]);
        snapshot_request_add_idle(&req, GROUP_ALL, NULL);
        snapshot_params_build(&req, &p);
        CHECK_STR(p.values[14], "t", "$15 every idle session");
        snapshot_params_free(&p);
        snapshot_request_done(&req);
        config_free(c);
}

int main(void) {
        test_group_request();
        test_poll_request();
        test_explain_request();
        test_capture_request();
        test_wants_graph();
        test_next_poll();
        return unit_finish("test-plan");
}
