#include <errno.h>
#include <stdlib.h>

#include "config.h"
#include "macro.h"
#include "unit.h"

static struct config *load(const char *text, struct diagnostics *d) {
        struct config *c = NULL;
        *d = (struct diagnostics) {};
        config_load_buffer("t.yaml", text, strlen(text), &c, d);
        return c;
}

static void test_fields(void) {
        struct diagnostics d;
        struct config *c = load("interval: 20s\n"
                                "log_query: yes\n"
                                "metrics_file: /var/lib/x.prom\n"
                                "max_actions_per_cycle: 7\n"
                                "exempt: {users: [postgres]}\n"
                                "servers:\n"
                                "  - name: a\n"
                                "    conninfo: dbname=x\n"
                                "    terminate_superusers: true\n"
                                "    max_actions_per_cycle: 3\n"
                                "    rules:\n"
                                "      - {name: r, max_idle: 1m, action: cancel, escalate_after: 30s, users: [u*],\n"
                                "         client_addresses: [local], exempt: {databases: [d]}}\n"
                                "  - name: b\n"
                                "    conninfo: dbname=y\n"
                                "    interval: 5s\n"
                                "    rules: [{name: r, max_session_age: 1d, action: log}]\n",
                                &d);

        CHECK(c != NULL);
        CHECK_INT(d.n_lines, 0, "diagnostics");
        if (!c)
                return;
        CHECK_INT(c->interval_ms, 20000, "interval");
        CHECK_INT(c->min_interval_ms, 100, "min_interval default");
        CHECK(c->log_query && !c->dry_run);
        CHECK_STR(c->metrics_file, "/var/lib/x.prom", "metrics_file");
        CHECK_INT(c->max_actions_per_cycle, 7, "global max actions");
        CHECK(c->exempt.set && c->exempt.users.n == 1 && !c->exempt.databases.given);
        CHECK_INT(c->n_servers, 2, "servers");
        CHECK(c->servers[0].terminate_superusers && !c->servers[1].terminate_superusers);
        CHECK_INT(c->servers[0].max_actions_per_cycle, 3, "server max actions");
        CHECK_INT(c->servers[1].max_actions_per_cycle, 7, "inherited max actions");
        CHECK_INT(c->servers[0].interval_ms, 20000, "inherited interval");
        CHECK_INT(c->servers[1].interval_ms, 5000, "own interval");
        CHECK(c->servers[0].global_exempt == &c->exempt && c->servers[1].global_exempt == &c->exempt);
        const struct rule *r = &c->servers[0].rules[0];
        CHECK_INT(r->limit_ms[LIMIT_IDLE], 60000, "max_idle");
        CHECK_INT(r->action, ACTION_CANCEL, "action");
        CHECK_INT(r->escalate_after_ms, 30000, "escalate_after");
        CHECK(r->filter.set && r->filter.users.given && !r->filter.databases.given);
        CHECK(r->filter.client_addresses.local && r->filter.client_addresses.n == 0);
        CHECK(r->exempt.set && r->exempt.databases.n == 1);
        CHECK_INT(r->pos.line, 12, "rule line");
        CHECK_INT(c->servers[1].rules[0].action, ACTION_LOG, "log action");
        CHECK_INT(c->servers[1].rules[0].limit_ms[LIMIT_SESSION_AGE], 86400000, "session age");
        config_free(c);
        diagnostics_clear(&d);
}

/* 100 servers x 100 rules x 3 lists x 100 names, written in 2 kB. */
static void test_alias_bomb(void) {
        struct diagnostics d;
        char text[4096];
        size_t n = 0;

        n += (size_t) snprintf(text + n, sizeof(text) - n, "x-u: &u [");
        for (int i = 0; i < 100; i++)
                n += (size_t) snprintf(text + n, sizeof(text) - n, "%su%d", i ? "," : "", i);
        n += (size_t) snprintf(text + n, sizeof(text) - n, "]\nx-r: &r {name: r, max_idle: 1s, users: *u, "
                               "databases: *u, applications: *u}\nx-rs: &rs [*r");
        for (int i = 1; i < 100; i++)
                n += (size_t) snprintf(text + n, sizeof(text) - n, ",*r");
        n += (size_t) snprintf(text + n, sizeof(text) - n, "]\nx-s: &s {name: s, conninfo: dbname=x, rules: *rs}\n"
                               "servers: [*s");
        for (int i = 1; i < 100; i++)
                n += (size_t) snprintf(text + n, sizeof(text) - n, ",*s");
        snprintf(text + n, sizeof(text) - n, "]\n");

        struct config *c = load(text, &d);
        CHECK(c == NULL);
        CHECK(d.n_errors > 0 && d.n_lines < 10);
        bool said = false;
        for (size_t i = 0; i < d.n_lines; i++)
                said = said || strstr(d.lines[i], "too large once aliases are expanded");
        CHECK(said);
        config_free(c);
        diagnostics_clear(&d);

        /* the same shared rule list in many servers: fine, and one message per problem */
        c = load("r: &r [{name: r, max_idle: 1s, users: [\"[\"]}]\n"
                 "servers:\n"
                 "  - {name: a, conninfo: dbname=x, rules: *r}\n"
                 "  - {name: b, conninfo: dbname=x, rules: *r}\n"
                 "  - {name: c, conninfo: dbname=x, rules: *r}\n",
                 &d);
        CHECK(c == NULL);
        /* "r" at the top is unknown; the bad glob is reported once */
        CHECK_INT(d.n_errors, 2, "errors");
        CHECK_INT(d.n_lines, 2, "lines");
        config_free(c);
        diagnostics_clear(&d);
}

static void test_sorted(void) {
        struct diagnostics d;
        struct config *c = load("servers:\n"
                                "  - name: a\n"
                                "    conninfo: dbname=x\n"
                                "    rules:\n"
                                "      - {name: r, max_idle: 30}\n"
                                "bogus: 1\n"
                                "interval: 0s\n",
                                &d);
        CHECK(c == NULL);
        CHECK_INT(d.n_errors, 3, "errors");
        if (d.n_lines == 3) {
                CHECK(strstr(d.lines[0], "t.yaml:5:") != NULL);
                CHECK(strstr(d.lines[1], "t.yaml:6:1: error: unknown key \"bogus\"") != NULL);
                CHECK(strstr(d.lines[2], "t.yaml:7:11: error:") != NULL);
        }
        diagnostics_clear(&d);
}

int main(void) {
        test_fields();
        test_alias_bomb();
        test_sorted();
        return unit_finish("test-config");
}
