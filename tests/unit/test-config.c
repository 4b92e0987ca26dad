#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "macro.h"
#include "unit.h"

static char *dump_text(const struct config *c);

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

static const char pressure_yaml[] =
        "servers:\n"
        "  - name: a\n"
        "    conninfo: dbname=x\n"
        "    rules:\n"
        "      - {name: plain, max_idle: 1h}\n"
        "      - {name: percent, max_idle: 5m, when_connections_above: 90%}\n"
        "      - {name: count, max_idle: 5m, when_connections_above: 450}\n"
        "      - {name: cap, max_sessions: 50, per: application, min_idle: 30s, applications: [\"web-*\"]}\n"
        "      - {name: one-group, max_sessions: 1, action: log}\n"
        "      - {name: per-user, max_sessions: 1000000, per: user, min_idle: 0s}\n"
        "      - {name: per-db, max_sessions: 7, per: database, when_connections_above: 100%}\n"
        "      - {name: per-addr, max_sessions: 3, per: client_address, min_idle: 1h30m,\n"
        "         when_connections_above: 1%, max_idle: 1d}\n"
        "      - {name: quoted, max_idle: 1m, when_connections_above: \"80%\"}\n";

/* The SPEC 14 keys: values, percent or count, defaults. */
static void test_pressure_fields(void) {
        struct config *c = unit_config("t.yaml", pressure_yaml);
        const struct rule *r;

        if (!c)
                return;
        CHECK_INT(c->servers[0].n_rules, 9, "rules");
        r = &c->servers[0].rules[0];
        CHECK_INT(r->limit_ms[LIMIT_SESSIONS], 0, "plain: no max_sessions");
        CHECK_INT(r->per, GROUP_ALL, "plain: per default");
        CHECK_INT(r->min_idle_ms, 0, "plain: min_idle default");
        CHECK_INT(r->connections_above, 0, "plain: no threshold");
        CHECK(!r->connections_above_percent);

        r = &c->servers[0].rules[1];
        CHECK_INT(r->connections_above, 90, "90%");
        CHECK(r->connections_above_percent);
        CHECK_INT(r->limit_ms[LIMIT_IDLE], 300000, "threshold rule keeps its limit");

        r = &c->servers[0].rules[2];
        CHECK_INT(r->connections_above, 450, "450");
        CHECK(!r->connections_above_percent);

        r = &c->servers[0].rules[3];
        CHECK_INT(r->limit_ms[LIMIT_SESSIONS], 50, "max_sessions");
        CHECK_INT(r->per, GROUP_APPLICATION, "per application");
        CHECK_INT(r->min_idle_ms, 30000, "min_idle");
        CHECK_INT(r->connections_above, 0, "cap: no threshold");
        CHECK_INT(r->action, ACTION_TERMINATE, "cap: default action");
        CHECK(r->filter.applications.given && r->filter.applications.n == 1);
        CHECK(!limit_is_duration(LIMIT_SESSIONS));
        CHECK_STR(limit_kind_to_string(LIMIT_SESSIONS), "max_sessions", "limit name");

        r = &c->servers[0].rules[4];
        CHECK_INT(r->limit_ms[LIMIT_SESSIONS], 1, "max_sessions 1");
        CHECK_INT(r->per, GROUP_ALL, "per omitted: one group");
        CHECK_INT(r->min_idle_ms, 0, "min_idle default");
        CHECK_INT(r->action, ACTION_LOG, "log with max_sessions");

        r = &c->servers[0].rules[5];
        CHECK_INT(r->limit_ms[LIMIT_SESSIONS], 1000000, "max_sessions at the top of its range");
        CHECK_INT(r->per, GROUP_USER, "per user");
        CHECK_INT(r->min_idle_ms, 0, "min_idle: 0s");

        r = &c->servers[0].rules[6];
        CHECK_INT(r->per, GROUP_DATABASE, "per database");
        CHECK_INT(r->connections_above, 100, "100%");
        CHECK(r->connections_above_percent);

        r = &c->servers[0].rules[7];
        CHECK_INT(r->per, GROUP_CLIENT_ADDRESS, "per client_address");
        CHECK_INT(r->min_idle_ms, 5400000, "min_idle 1h30m");
        CHECK_INT(r->connections_above, 1, "1%");
        CHECK(r->connections_above_percent);
        CHECK_INT(r->limit_ms[LIMIT_IDLE], 86400000, "max_idle next to max_sessions");

        r = &c->servers[0].rules[8];
        CHECK_INT(r->connections_above, 80, "quoted \"80%\"");
        CHECK(r->connections_above_percent);
        config_free(c);

        CHECK_STR(group_key_to_string(GROUP_ALL), "all", "group name");
        CHECK_STR(group_key_to_string(GROUP_CLIENT_ADDRESS), "client_address", "group name");
        CHECK_INT(group_key_from_string("application"), GROUP_APPLICATION, "group from name");
        CHECK(group_key_from_string("users") < 0);
}

/* One message per bad value, at the value, and the load fails. */
static void test_pressure_errors(void) {
        static const struct {
                const char *rule, *want;
        } cases[] = {
                { "{name: r, max_idle: 1m, when_connections_above: 0}",
                  "t.yaml:5:57: error: \"when_connections_above\" is out of range: 0 is not" },
                { "{name: r, max_idle: 1m, when_connections_above: 0%}",
                  "t.yaml:5:57: error: \"when_connections_above\" is out of range: 0% is not from 1% to 100%" },
                { "{name: r, max_idle: 1m, when_connections_above: 101%}",
                  "is out of range: 101% is not from 1% to 100%" },
                { "{name: r, max_idle: 1m, when_connections_above: -1}", "not \"-1\"" },
                { "{name: r, max_idle: 1m, when_connections_above: 1.5%}", "not \"1.5%\"" },
                { "{name: r, max_idle: 1m, when_connections_above: lots}", "not \"lots\"" },
                { "{name: r, max_idle: 1m, when_connections_above: }", "\"when_connections_above\" has no value" },
                { "{name: r, max_idle: 1m, when_connections_above: [1]}", "not a list" },
                { "{name: r, max_sessions: 0}",
                  "t.yaml:5:33: error: \"max_sessions\" is out of range: 0 is not from 1 to 1000000" },
                { "{name: r, max_sessions: 2.5}",
                  "\"max_sessions\" must be a whole number of sessions from 1 to 1000000, not \"2.5\"" },
                { "{name: r, max_sessions: 10%}", "not \"10%\"" },
                { "{name: r, max_sessions: 5, per: role}",
                  "t.yaml:5:41: error: \"per\" must be user, database, application or client_address, not \"role\"" },
                { "{name: r, max_idle: 1m, per: user}",
                  "t.yaml:5:38: error: \"per\" only works with \"max_sessions\"; rule \"r\" has no max_sessions" },
                { "{name: r, max_idle: 1m, min_idle: 0s}", "\"min_idle\" only works with \"max_sessions\"" },
                { "{name: r, max_sessions: 5, min_idle: 30}", "invalid duration \"30\" for \"min_idle\"" },
                { "{name: r, max_sessions: 5, queries: [\"*\"]}",
                  "t.yaml:5:45: error: \"queries\" does not work with \"max_sessions\"" },
                { "{name: r, max_sessions: 5, action: cancel}",
                  "t.yaml:5:44: error: \"action: cancel\" does not work with \"max_sessions\" (rule \"r\"): "
                  "cancelling an idle session frees no connection slot; use terminate or log" },
                { "{name: r, when_connections_above: 90%}",
                  "t.yaml:5:9: error: rule \"r\" has no limit; set at least one of max_idle, "
                  "max_idle_in_transaction, max_query_duration, max_transaction_age, max_session_age, "
                  "max_blocking, max_lock_wait, max_xmin_age, max_sessions (when_connections_above is a condition, "
                  "not a limit)" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *text = NULL;
                struct diagnostics d;
                struct config *c;

                CHECK(asprintf(&text, "servers:\n  - name: a\n    conninfo: dbname=x\n    rules:\n      - %s\n",
                               cases[i].rule) > 0);
                c = load(text, &d);
                CHECK_AT(!c && d.n_errors == 1 && d.n_lines == 1, __FILE__, __LINE__,
                         "%s: want one error, got %zu lines", cases[i].rule, d.n_lines);
                if (d.n_lines > 0)
                        CHECK_AT(strstr(d.lines[0], cases[i].want) != NULL, __FILE__, __LINE__,
                                 "%s:\n got  %s\n want %s", cases[i].rule, d.lines[0], cases[i].want);
                config_free(c);
                diagnostics_clear(&d);
        }
}

/* The dump of the SPEC 14 keys loads back to the same rules and the same dump. */
static void test_pressure_dump_round_trip(void) {
        struct config *c = unit_config("t.yaml", pressure_yaml), *again = NULL;
        _cleanup_free_ char *dump = NULL, *dump2 = NULL;

        if (!c)
                return;
        dump = dump_text(c);
        CHECK(strstr(dump, "        when_connections_above: 90%\n") != NULL);
        CHECK(strstr(dump, "        when_connections_above: 450\n") != NULL);
        CHECK(strstr(dump, "        max_sessions: 50\n        per: application\n        min_idle: 30s\n") != NULL);
        CHECK(strstr(dump, "        max_sessions: 1\n        min_idle: 0s\n") != NULL);  /* no "per: all" */
        CHECK(strstr(dump, "per: all") == NULL);
        again = unit_config("dump.yaml", dump);
        if (again) {
                dump2 = dump_text(again);
                CHECK_STR(dump2, dump, "dump of the dump");
                CHECK_INT(again->servers[0].n_rules, c->servers[0].n_rules, "rules");
                for (size_t i = 0; i < c->servers[0].n_rules && i < again->servers[0].n_rules; i++) {
                        const struct rule *a = &c->servers[0].rules[i], *b = &again->servers[0].rules[i];
                        CHECK_STR(b->name, a->name, "name");
                        CHECK(memcmp(a->limit_ms, b->limit_ms, sizeof(a->limit_ms)) == 0);
                        CHECK_INT(b->per, a->per, "per");
                        CHECK_INT(b->min_idle_ms, a->min_idle_ms, "min_idle");
                        CHECK_INT(b->connections_above, a->connections_above, "when_connections_above");
                        CHECK_INT(b->connections_above_percent, a->connections_above_percent, "percent");
                        CHECK_INT(b->action, a->action, "action");
                }
        }
        config_free(again);
        config_free(c);
}

/* connections > P% of slots, exactly, in integers; > N for a count. */
static void test_pressure_on(void) {
        struct rule none = {}, count = { .connections_above = 450 };
        struct rule pct = { .connections_above = 90, .connections_above_percent = true };
        struct rule all = { .connections_above = 100, .connections_above_percent = true };
        struct rule one = { .connections_above = 1, .connections_above_percent = true };

        /* no threshold: always, even with unknown numbers */
        CHECK(rule_pressure_on(&none, 0, 0));
        CHECK(rule_pressure_on(&none, -1, -1));
        CHECK(rule_pressure_on(&none, 1000, 20));
        /* 90% of 20 slots is 18 */
        CHECK(!rule_pressure_on(&pct, 18, 20));
        CHECK(rule_pressure_on(&pct, 19, 20));
        /* 90% of 25 is 22.5: 22 is under, 23 over */
        CHECK(!rule_pressure_on(&pct, 22, 25));
        CHECK(rule_pressure_on(&pct, 23, 25));
        /* 90% of 100 */
        CHECK(!rule_pressure_on(&pct, 90, 100));
        CHECK(rule_pressure_on(&pct, 91, 100));
        /* unknown numbers: off */
        CHECK(!rule_pressure_on(&pct, -1, 20));
        CHECK(!rule_pressure_on(&pct, 19, -1));
        CHECK(!rule_pressure_on(&pct, 0, 0));
        CHECK(rule_pressure_on(&pct, 1, 0));  /* no usable slots at all, and a connection */
        /* a count */
        CHECK(!rule_pressure_on(&count, 450, 500));
        CHECK(rule_pressure_on(&count, 451, 500));
        CHECK(rule_pressure_on(&count, 451, -1));  /* the slots do not matter for a count */
        CHECK(!rule_pressure_on(&count, -1, 500));
        CHECK(!rule_pressure_on(&count, 0, 500));
        /* 100%: only beyond every usable slot (superusers in their reserve) */
        CHECK(!rule_pressure_on(&all, 97, 97));
        CHECK(rule_pressure_on(&all, 98, 97));
        /* 1% of 100 is 1 */
        CHECK(!rule_pressure_on(&one, 1, 100));
        CHECK(rule_pressure_on(&one, 2, 100));
        CHECK(rule_pressure_on(&one, 1, 99));
        /* large numbers do not overflow */
        CHECK(!rule_pressure_on(&pct, 900000, 1000000));
        CHECK(rule_pressure_on(&pct, 900001, 1000000));
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


#define MARKER "S3cr3tXYZ"

/* Conninfo strings that hold MARKER as a password (or where a password would
 * be), valid or not: no diagnostic and no dump may contain it. */
static const char *const secret_conninfos[] = {
        "password=" MARKER,
        "host=db password=" MARKER " dbname=x",
        "password='" MARKER " with spaces'",
        "password='" MARKER "\\' quote'",
        "password=" MARKER "\\\\backslash",
        "password=\"" MARKER "\"",
        "password=" MARKER " " MARKER "=1",
        "password = " MARKER " " MARKER,
        "password=" MARKER " x",
        "password='" MARKER,
        "password='" MARKER "\\'",
        MARKER,
        MARKER "=1 password=x",
        "dbname=x password=" MARKER " password=" MARKER "2",
        "options='-c password=" MARKER "' dbname=x",
        "options='-c password=" MARKER "\\ more' password=" MARKER,
        "options=-cpassword=" MARKER,
        "sslpassword=" MARKER " dbname=x",
        "postgresql://u:" MARKER "@h/db",
        "postgresql://u:" MARKER "\"x@h/db",
        "postgresql://u:" MARKER "\"@[::1/db",
        "postgresql://u:pa\"" MARKER "@[::1/db",
        "postgresql://u:" MARKER "@[::1/db",
        "postgresql://u:" MARKER "@[]/db",
        "postgresql://u:" MARKER "@h:5432x/db",
        "postgresql://u:" MARKER "@h/db?x\"y=1",
        "postgresql://u:" MARKER "@h/db?" MARKER "=1",
        "postgresql://u:" MARKER "@h/db?password",
        "postgresql://u:" MARKER "@h/db?a==b",
        "postgresql://u:" MARKER "%zz@h/db",
        "postgresql://u:" MARKER "%00@h/db",
        "postgresql://u:%53%33cr3tXYZ@h/db",
        "postgresql://u@h/db?password=" MARKER,
        "postgresql://u@h/db?password=" MARKER "&" MARKER "=1",
        "postgresql://:" MARKER "@h/db",
        "postgres://u:" MARKER "@h1,h2:5433/db?sslmode=require",
        "postgresql://u:" MARKER "@x@h/db",
        "postgresql://u:pa/" MARKER "@h/db",
        "postgresql://u:12/" MARKER "@h/db",
        "host=h port=" MARKER,
        "postgresql://u:" MARKER "@h/db?options=-c%20password%3D" MARKER,
};

/* dest receives the dump of c (or ""). */
static char *dump_text(const struct config *c) {
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);

        if (c)
                config_dump(c, f);
        fclose(f);
        return text;
}

static void test_conninfo_never_echoed(void) {
        for (size_t i = 0; i < ELEMENTSOF(secret_conninfos); i++) {
                _cleanup_free_ char *text = NULL, *quoted = NULL, *dump = NULL;
                struct diagnostics d;
                struct config *c;
                size_t n = 0;

                /* YAML double-quoted, so every byte reaches libpq as written */
                quoted = xmalloc(2 * strlen(secret_conninfos[i]) + 1);
                for (const char *v = secret_conninfos[i]; *v; v++) {
                        if (*v == '"' || *v == '\\')
                                quoted[n++] = '\\';
                        quoted[n++] = *v;
                }
                quoted[n] = '\0';
                CHECK(asprintf(&text, "servers:\n  - name: a\n    conninfo: \"%s\"\n    rules: [{name: r, max_idle: 1h}]\n",
                               quoted) > 0);
                c = load(text, &d);
                for (size_t l = 0; l < d.n_lines; l++) {
                        CHECK_AT(!strstr(d.lines[l], MARKER), __FILE__, __LINE__, "conninfo %zu leaks: %s", i,
                                 d.lines[l]);
                        /* every problem is placed at the conninfo's value */
                        CHECK_AT(strncmp(d.lines[l], "t.yaml:3:15: error: libpq ", 26) == 0,
                                 __FILE__, __LINE__, "conninfo %zu: %s", i, d.lines[l]);
                }
                CHECK_AT(c || d.n_errors == 1, __FILE__, __LINE__, "conninfo %zu: neither loaded nor one error", i);
                dump = dump_text(c);
                CHECK_AT(!strstr(dump, MARKER), __FILE__, __LINE__, "conninfo %zu leaks into the dump:\n%s", i, dump);
                config_free(c);
                diagnostics_clear(&d);
        }
}

/* Where the keyword/value form goes wrong is said by byte, not by quoting it. */
static void test_conninfo_positions(void) {
        static const struct {
                const char *conninfo;
                const char *what;
        } cases[] = {
                { "dbname=x " MARKER "=1", "an unknown keyword at byte 10 of the conninfo" },
                { "dbname=x " MARKER, "a keyword without \\\"=\\\" after it at byte 10 of the conninfo" },
                { "dbname=x password='" MARKER, "a quoted value without its closing quote at byte 19 of the conninfo" },
                { "  requiressl=1 sslmode=disable bad=1", "an unknown keyword at byte 32 of the conninfo" },
                { "postgresql://u:" MARKER "@[::1/db", "invalid URI: an IPv6 address without its closing \\\"]\\\"" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *text = NULL;
                struct diagnostics d;
                struct config *c;

                CHECK(asprintf(&text, "servers:\n  - name: a\n    conninfo: \"%s\"\n    rules: [{name: r, max_idle: 1h}]\n",
                               cases[i].conninfo) > 0);
                c = load(text, &d);
                CHECK(c == NULL);
                CHECK_INT(d.n_lines, 1, "lines");
                if (d.n_lines == 1) {
                        const char *colon = strrchr(d.lines[0], ')');
                        char want[256];
                        snprintf(want, sizeof(want), "): %s", cases[i].what);
                        /* the fixture's escapes are YAML's: compare unescaped */
                        for (char *w = want, *r = want;; r++) {
                                if (*r == '\\')
                                        r++;
                                if (!(*w++ = *r))
                                        break;
                        }
                        CHECK_AT(colon && strcmp(colon, want) == 0, __FILE__, __LINE__, "case %zu: got %s, want %s", i,
                                 d.lines[0], want);
                }
                diagnostics_clear(&d);
        }
}

static double now_sec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* A file that only nests is refused at the first level too deep, in bounded
 * time (libyaml's loader alone took minutes for 1 MiB). */
static void test_deep_nesting(void) {
        size_t n = 1024 * 1024 - 1;
        _cleanup_free_ char *text = xmalloc(n + 1);
        struct diagnostics d = {};
        struct config *c = NULL;
        double t;

        for (const char *open = "[{"; *open; open++) {
                memset(text, *open == '[' ? '[' : '{', n);
                text[n] = '\0';
                if (*open == '{')  /* {a: {a: {a: ... */
                        for (size_t i = 0; i + 4 <= n; i += 4)
                                memcpy(text + i, "{a: ", 4);
                t = now_sec();
                config_load_buffer("t.yaml", text, n, &c, &d);
                t = now_sec() - t;
                CHECK(c == NULL);
                CHECK_INT(d.n_lines, 1, "lines");
                if (d.n_lines == 1)
                        CHECK_STR(d.lines[0], *open == '[' ? "t.yaml:1:33: error: lists and mappings are nested more "
                                                             "than 32 deep here; stopped reading"
                                                           : "t.yaml:1:129: error: lists and mappings are nested more "
                                                             "than 32 deep here; stopped reading", "message");
                CHECK_AT(t < 5.0, __FILE__, __LINE__, "1 MiB of nesting took %.1f s", t);
                diagnostics_clear(&d);
        }

        /* the deepest file the cap allows still loads */
        c = load("servers:\n  - name: a\n    conninfo: dbname=x\n    rules: [{name: r, max_idle: 1h}]\n"
                 "x-deep: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n", &d);
        CHECK(c != NULL);
        CHECK_INT(d.n_lines, 0, "diagnostics at depth 32");
        config_free(c);
        diagnostics_clear(&d);
}

static void test_anchor_caps(void) {
        _cleanup_free_ char *anchors = NULL, *aliases = NULL;
        struct diagnostics d;
        char *p;

        /* 1001 anchors; libyaml checks each new one against all before it */
        p = anchors = xmalloc(1001 * 16 + 64);
        p += sprintf(p, "x-a: [");
        for (int i = 0; i < 1001; i++)
                p += sprintf(p, "%s&a%d 1", i ? "," : "", i);
        sprintf(p, "]\n");
        CHECK(load(anchors, &d) == NULL);
        CHECK(d.n_lines == 1 && strstr(d.lines[0], "t.yaml:1:") && strstr(d.lines[0], "more than 1000 anchors"));
        diagnostics_clear(&d);

        /* 10001 aliases; each is looked up among all anchors */
        p = aliases = xmalloc(10001 * 4 + 64);
        p += sprintf(p, "x-a: &a 1\nx-b: [");
        for (int i = 0; i < 10001; i++)
                p += sprintf(p, "%s*a", i ? "," : "");
        sprintf(p, "]\n");
        CHECK(load(aliases, &d) == NULL);
        CHECK(d.n_lines == 1 && strstr(d.lines[0], "t.yaml:2:") && strstr(d.lines[0], "more than 10000 aliases"));
        diagnostics_clear(&d);
}

static void on_alarm(int sig) {
        (void) sig;
        fputs("config_load blocked (the FIFO hang is back)\n", stderr);
        _exit(1);
}

static struct config *load_file(const char *path, struct diagnostics *d, int *ret) {
        struct config *c = NULL;
        *d = (struct diagnostics) {};
        *ret = config_load(path, &c, d);
        return c;
}

/* Only regular files are read, and opening one never waits. */
static void test_file_types(void) {
        char dir[] = "/tmp/test-config-XXXXXX", fifo[64];
        struct diagnostics d;
        int r;

        signal(SIGALRM, on_alarm);
        alarm(10);
        CHECK(mkdtemp(dir) != NULL);
        snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
        CHECK(mkfifo(fifo, 0600) == 0);
        CHECK(load_file(fifo, &d, &r) == NULL);
        CHECK_INT(r, -EINVAL, "FIFO");
        CHECK(d.n_lines == 1 && strstr(d.lines[0], ": error: is a FIFO; the configuration must be a regular file"));
        diagnostics_clear(&d);
        CHECK(load_file(dir, &d, &r) == NULL);
        CHECK(d.n_lines == 1 && strstr(d.lines[0], ": error: is a directory;"));
        diagnostics_clear(&d);
        CHECK(load_file("/dev/zero", &d, &r) == NULL);
        CHECK(d.n_lines == 1 && strstr(d.lines[0], "/dev/zero: error: is a character device;"));
        diagnostics_clear(&d);
        unlink(fifo);
        rmdir(dir);
        alarm(0);
}

/* st_size is not the size: /proc says 0 for files with content. */
static void test_read_to_eof(void) {
        struct diagnostics d;
        char path[] = "/tmp/test-config-XXXXXX";
        int fd, r;
        bool unknown_key = false;

        CHECK(load_file("/proc/self/status", &d, &r) == NULL);
        for (size_t i = 0; i < d.n_lines; i++) {
                CHECK_AT(!strstr(d.lines[i], "empty"), __FILE__, __LINE__, "%s", d.lines[i]);
                unknown_key = unknown_key || strstr(d.lines[i], "/proc/self/status:1:1: error: unknown key \"Name\"");
        }
        CHECK(unknown_key);
        diagnostics_clear(&d);

        /* a file over the cap is refused whole, without a parse */
        fd = mkstemp(path);
        CHECK(fd >= 0);
        CHECK(ftruncate(fd, 1024 * 1024 + 1) == 0);
        close(fd);
        CHECK(load_file(path, &d, &r) == NULL);
        CHECK(d.n_lines == 1 && strstr(d.lines[0], "error: the file is larger than 1048576 bytes"));
        diagnostics_clear(&d);
        unlink(path);
}

/* Every message is one escaped line (issue 18): the file's own name, and the
 * names, keys and values from it, as in the log lines. */
static void test_messages_escaped(void) {
        static const char name[] = "/tmp/no\nsuch\x1b[1m\xe2\x80\xae.yaml";
        static const char shown[] = "/tmp/no\\x0asuch\\x1b[1m\\u202e.yaml";
        _cleanup_free_ char *text = NULL, *want = NULL;
        struct config *c = NULL;
        struct diagnostics d;
        size_t len = 0;
        int r;

        CHECK(load_file(name, &d, &r) == NULL);
        CHECK(d.n_lines == 1);
        if (d.n_lines == 1) {
                CHECK(asprintf(&want, "%s: error: cannot open: No such file or directory", shown) > 0);
                CHECK_STR(d.lines[0], want, "file name");
        }
        diagnostics_clear(&d);

        /* past the cap, the note names the file too */
        text = xmalloc(1200 * 16);
        for (int i = 0; i < 1200; i++)
                len += (size_t) sprintf(text + len, "k%d\xe2\x80\xae: 1\n", i);
        d = (struct diagnostics) {};
        CHECK(config_load_buffer(name, text, len, &c, &d) < 0);
        CHECK(d.n_lines == 1001);
        for (size_t i = 0; i < d.n_lines; i++) {
                CHECK_AT(strncmp(d.lines[i], shown, strlen(shown)) == 0 && !strchr(d.lines[i], '\n') &&
                                 !strstr(d.lines[i], "\xe2\x80"),
                         __FILE__, __LINE__, "line %zu: %s", i, d.lines[i]);
                if (i + 1 == d.n_lines)
                        CHECK(strstr(d.lines[i], ": note: stopped reporting after 1000 problems") != NULL);
        }
        if (d.n_lines > 0)
                CHECK(strstr(d.lines[0], "error: unknown key \"k0\\u202e\"") != NULL);
        config_free(c);
        diagnostics_clear(&d);
}

/* SPEC 16, the fleet: files written to a scratch directory, loaded with
 * config_load() as the daemon does. */

#define SERVER(name) "  - {name: " name ", conninfo: dbname=x, rules: [{name: r, max_idle: 1h}]}\n"
#define SERVERS(name) "servers:\n" SERVER(name)

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        (void) st;
        (void) flag;
        (void) ftw;
        return remove(path);
}

static char *scratch_dir(void) {
        char *dir = xstrdup("/tmp/test-config-XXXXXX");

        if (!mkdtemp(dir)) {
                fprintf(stderr, "mkdtemp: %s\n", strerror(errno));
                abort();
        }
        return dir;
}

static void remove_tree(char *dir) {
        CHECK(nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) == 0);
        free(dir);
}

/* dir/name with text; the directories on the way are made. */
static void put(const char *dir, const char *name, const char *text) {
        _cleanup_free_ char *path = xasprintf("%s/%s", dir, name);
        FILE *f;

        for (char *slash = strchr(path + strlen(dir) + 1, '/'); slash; slash = strchr(slash + 1, '/')) {
                *slash = '\0';
                CHECK_AT(mkdir(path, 0755) == 0 || errno == EEXIST, __FILE__, __LINE__, "mkdir %s", path);
                *slash = '/';
        }
        f = fopen(path, "we");
        CHECK_AT(f != NULL, __FILE__, __LINE__, "cannot write %s", path);
        if (!f)
                return;
        fputs(text, f);
        fclose(f);
}

/* config_load(dir/name); the diagnostics are printed when the load fails unexpectedly. */
static struct config *load_in(const char *dir, const char *name, struct diagnostics *d, int *ret) {
        _cleanup_free_ char *path = xasprintf("%s/%s", dir, name);
        return load_file(path, d, ret);
}

static void show(const struct diagnostics *d) {
        for (size_t i = 0; i < d->n_lines; i++)
                fprintf(stderr, "  %s\n", d->lines[i]);
}

static bool has_line(const struct diagnostics *d, const char *want) {
        for (size_t i = 0; i < d->n_lines; i++)
                if (strstr(d->lines[i], want))
                        return true;
        return false;
}

#define CHECK_LINE(d, want) CHECK_AT(has_line(d, want), __FILE__, __LINE__, "no message with: %s", want)

/* The servers' names, then the files they come from, in order: "main a b | - conf.d/a.yaml ...". */
static char *servers_of(const struct config *c, const char *dir) {
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);

        for (size_t i = 0; c && i < c->n_servers; i++)
                fprintf(f, "%s%s", i ? " " : "", c->servers[i].name);
        fputs(" |", f);
        for (size_t i = 0; c && i < c->n_servers; i++) {
                const char *file = c->servers[i].file;
                if (file && strncmp(file, dir, strlen(dir)) == 0 && file[strlen(dir)] == '/')
                        file += strlen(dir) + 1;
                fprintf(f, " %s", file ? file : "-");
        }
        fclose(f);
        return text;
}

/* Each glob's files in sorted order (whatever the order they were made in),
 * the globs in the order written, after the main file's own servers; each
 * included server knows its file, the main file's have none. */
static void test_include_order(void) {
        char *dir = scratch_dir();
        _cleanup_free_ char *got = NULL, *got2 = NULL;
        struct diagnostics d;
        struct config *c;
        int r;

        put(dir, "main.yaml", "include: [\"conf.d/*.yaml\"]\n" SERVERS("main") SERVER("main2"));
        put(dir, "conf.d/b.yaml", SERVERS("b") SERVER("b2"));
        put(dir, "conf.d/c.yaml", SERVERS("c"));
        put(dir, "conf.d/a.yaml", SERVERS("a"));
        put(dir, "conf.d/10-z.yaml", SERVERS("z"));
        put(dir, "conf.d/ignored.yml", SERVERS("ignored"));
        c = load_in(dir, "main.yaml", &d, &r);
        CHECK_INT(r, 0, "load");
        if (r < 0)
                show(&d);
        CHECK_INT(d.n_lines, 0, "diagnostics");
        got = servers_of(c, dir);
        CHECK_STR(got, "main main2 z a b b2 c | - - conf.d/10-z.yaml conf.d/a.yaml conf.d/b.yaml conf.d/b.yaml "
                       "conf.d/c.yaml", "servers in order");
        CHECK_INT(c ? c->n_includes : 0, 1, "includes");
        config_free(c);
        diagnostics_clear(&d);

        /* two globs: the first one's files first */
        put(dir, "main.yaml", "include: [\"later/*.yaml\", \"conf.d/a.yaml\", \"conf.d/[bc].yaml\"]\n"
                              SERVERS("main"));
        put(dir, "later/x.yaml", SERVERS("x"));
        c = load_in(dir, "main.yaml", &d, &r);
        CHECK_INT(r, 0, "load");
        got2 = servers_of(c, dir);
        CHECK_STR(got2, "main x a b b2 c | - later/x.yaml conf.d/a.yaml conf.d/b.yaml conf.d/b.yaml conf.d/c.yaml",
                  "globs in the order written");
        config_free(c);
        diagnostics_clear(&d);
        remove_tree(dir);
}

/* A glob that matches nothing, or whose directory does not exist, is fine. */
static void test_include_nothing(void) {
        char *dir = scratch_dir();
        struct diagnostics d;
        struct config *c;
        int r;

        put(dir, "main.yaml", "include: [\"conf.d/*.yaml\", \"missing.d/*.yaml\", \"missing.yaml\", \"/nonexistent/*\"]\n"
                              SERVERS("main"));
        put(dir, "conf.d/README", "not a yaml file\n");
        c = load_in(dir, "main.yaml", &d, &r);
        CHECK_INT(r, 0, "load");
        CHECK_INT(d.n_lines, 0, "diagnostics");
        CHECK_INT(c ? c->n_servers : 0, 1, "servers");
        CHECK_INT(c ? c->n_includes : 0, 4, "includes kept as written");
        if (c && c->n_includes == 4)
                CHECK_STR(c->includes[1], "missing.d/*.yaml", "include as written");
        config_free(c);
        diagnostics_clear(&d);
        remove_tree(dir);
}

/* The same file matched by several globs, or by another spelling of its
 * path, or through a symbolic link, is read once: no "defined twice". */
static void test_include_once(void) {
        char *dir = scratch_dir();
        _cleanup_free_ char *got = NULL, *link = xasprintf("%s/links/web.yaml", dir);
        struct diagnostics d;
        struct config *c;
        int r;

        put(dir, "main.yaml", "include: [\"conf.d/*.yaml\", \"conf.d/web.yaml\", \"conf.d/w*\", \"./conf.d/web.yaml\",\n"
                              "          \"conf.d/../conf.d/web.yaml\", \"links/*.yaml\"]\n" SERVERS("main"));
        put(dir, "conf.d/web.yaml", SERVERS("web"));
        put(dir, "links/README", "");
        CHECK(symlink("../conf.d/web.yaml", link) == 0);
        c = load_in(dir, "main.yaml", &d, &r);
        CHECK_INT(r, 0, "load");
        if (r < 0)
                show(&d);
        got = servers_of(c, dir);
        CHECK_STR(got, "main web | - conf.d/web.yaml", "read once");
        config_free(c);
        diagnostics_clear(&d);
        remove_tree(dir);
}

/* An absolute glob is used as it is; a relative one is relative to the main
 * file's directory, not to the working directory. */
static void test_include_absolute(void) {
        char *dir = scratch_dir();
        _cleanup_free_ char *main_text = xasprintf("include: [\"%s/fleet/*.yaml\", \"../rel/*.yaml\"]\n" SERVERS("main"), dir);
        _cleanup_free_ char *got = NULL, *got2 = NULL, *fleet = xasprintf("%s/fleet/a.yaml", dir);
        char cwd[4096];
        struct diagnostics d;
        struct config *c;
        int r;

        put(dir, "etc/main.yaml", main_text);
        put(dir, "fleet/a.yaml", SERVERS("a"));
        put(dir, "rel/b.yaml", SERVERS("b"));
        put(dir, "etc/fleet/decoy.yaml", SERVERS("decoy"));
        c = load_in(dir, "etc/main.yaml", &d, &r);
        CHECK_INT(r, 0, "load");
        got = servers_of(c, dir);
        CHECK_STR(got, "main a b | - fleet/a.yaml etc/../rel/b.yaml", "absolute and relative globs");
        if (c && c->n_servers > 1)
                CHECK_STR(c->servers[1].file, fleet, "absolute file name");
        config_free(c);
        diagnostics_clear(&d);

        /* the main file named relative to the working directory */
        CHECK(getcwd(cwd, sizeof(cwd)) != NULL);
        CHECK(chdir(dir) == 0);
        c = load_file("etc/main.yaml", &d, &r);
        CHECK_INT(r, 0, "load, relative name");
        got2 = servers_of(c, dir);
        CHECK_AT(strstr(got2, "main a b | - ") && strstr(got2, " etc/../rel/b.yaml"), __FILE__, __LINE__, "%s", got2);
        config_free(c);
        diagnostics_clear(&d);
        CHECK(chdir(cwd) == 0);
        remove_tree(dir);
}

/* The main file's directory is a directory, not a pattern: a "[1]" in it
 * does not match "1" (and read another directory's files). */
static void test_include_dir_with_glob_chars(void) {
        char *dir = scratch_dir();
        _cleanup_free_ char *got = NULL;
        struct diagnostics d;
        struct config *c;
        int r;

        put(dir, "etc[1]*?/main.yaml", "include: [\"conf.d/*.yaml\"]\n" SERVERS("main"));
        put(dir, "etc[1]*?/conf.d/web.yaml", SERVERS("web"));
        put(dir, "etc1xy/conf.d/decoy.yaml", SERVERS("decoy"));
        c = load_in(dir, "etc[1]*?/main.yaml", &d, &r);
        CHECK_INT(r, 0, "load");
        got = servers_of(c, dir);
        CHECK_STR(got, "main web | - etc[1]*?/conf.d/web.yaml", "the directory as it is");
        config_free(c);
        diagnostics_clear(&d);
        remove_tree(dir);
}

/* A rule set's rules come first, in the order the server names the sets,
 * then its own; every server owns a copy (its own names, patterns, lists),
 * so freeing the configuration frees each once (ASan in build-sanitize). */
static void test_rule_sets(void) {
        static const char main_text[] =
                "include: [\"conf.d/*.yaml\"]\n"
                "rule_sets:\n"
                "  standard:\n"
                "    - {name: s1, max_idle: 1h, users: [\"app_*\"], client_addresses: [10.0.0.0/8]}\n"
                "    - {name: s2, max_idle_in_transaction: 5m, exempt: {applications: [pg_dump]}}\n"
                "  ops:\n"
                "    - {name: o1, max_query_duration: 15m, action: cancel, escalate_after: 1m}\n"
                "servers:\n"
                "  - name: m\n"
                "    conninfo: dbname=x\n"
                "    rule_sets: [standard]\n"
                "    rules: [{name: own-m, max_session_age: 1d}]\n"
                "  - {name: n, conninfo: dbname=x, rule_sets: [standard]}\n";
        static const char web[] =
                "servers:\n"
                "  - name: x\n"
                "    conninfo: dbname=x\n"
                "    rule_sets: [ops, standard]\n"
                "    rules: [{name: own-x, max_idle: 2h}]\n"
                "  - {name: y, conninfo: dbname=x, rule_sets: [standard]}\n";
        static const char *const want[][5] = {
                { "s1", "s2", "own-m" }, { "s1", "s2" }, { "o1", "s1", "s2", "own-x" }, { "s1", "s2" },
        };
        char *dir = scratch_dir();
        _cleanup_free_ char *dump = NULL, *dump2 = NULL;
        struct config *c, *again;
        struct diagnostics d;
        int r;

        put(dir, "main.yaml", main_text);
        put(dir, "conf.d/web.yaml", web);
        c = load_in(dir, "main.yaml", &d, &r);
        CHECK_INT(r, 0, "load");
        if (r < 0)
                show(&d);
        diagnostics_clear(&d);
        if (!c) {
                remove_tree(dir);
                return;
        }
        CHECK_INT(c->n_rule_sets, 2, "rule sets");
        CHECK_INT(c->n_servers, 4, "servers");
        for (size_t i = 0; i < c->n_servers && i < ELEMENTSOF(want); i++) {
                size_t n = 0;
                while (n < ELEMENTSOF(want[i]) && want[i][n])
                        n++;
                CHECK_INT(c->servers[i].n_rules, n, c->servers[i].name);
                for (size_t j = 0; j < n && j < c->servers[i].n_rules; j++)
                        CHECK_STR(c->servers[i].rules[j].name, want[i][j], c->servers[i].name);
        }
        if (c->n_servers == 4 && c->servers[0].n_rules == 3 && c->servers[2].n_rules == 4) {
                const struct server *m = &c->servers[0], *n = &c->servers[1], *x = &c->servers[2];
                const struct rule *s1 = &m->rules[0];

                /* the set's values, and its place in the main file */
                CHECK_INT(s1->limit_ms[LIMIT_IDLE], 3600000, "s1 max_idle");
                CHECK(s1->filter.users.n == 1 && s1->filter.client_addresses.n == 1);
                CHECK_INT(s1->pos.line, 4, "s1 line");
                CHECK_INT(x->rules[0].action, ACTION_CANCEL, "o1 action");
                CHECK_INT(x->rules[0].escalate_after_ms, 60000, "o1 escalate_after");
                CHECK(m->rules[1].exempt.set && m->rules[1].exempt.applications.n == 1);
                CHECK_INT(x->rules[3].limit_ms[LIMIT_IDLE], 7200000, "own-x max_idle");
                /* each server its own array of rules; a set's rules are copies
                 * sharing the set's name and filters (freed with the set, once) */
                CHECK(m->rules != n->rules && m->rules[0].shared && n->rules[0].shared);
                CHECK(m->rules[0].name == n->rules[0].name && m->rules[0].name == x->rules[1].name);
                CHECK(m->rules[0].filter.users.patterns == n->rules[0].filter.users.patterns);
                CHECK(!x->rules[3].shared);
                CHECK(c->n_rule_sets >= 1 && c->rule_sets[0].rules[0].name == m->rules[0].name);
                CHECK_STR(m->rule_sets[0], "standard", "rule_sets as written");
                CHECK(x->n_rule_sets == 2 && strcmp(x->rule_sets[0], "ops") == 0);
        }
        /* the dump: every rule written out in every server, no rule_sets, no include */
        dump = dump_text(c);
        /* the sets written once and named by the servers; no include (every server is in the dump) */
        CHECK(strstr(dump, "\nrule_sets:\n") != NULL && strstr(dump, "include") == NULL);
        CHECK(strstr(dump, "  # from ") != NULL);
        again = unit_config("dump.yaml", dump);
        if (again) {
                CHECK_INT(again->n_servers, 4, "servers in the dump");
                CHECK_INT(again->servers[2].n_rules, 4, "x's rules in the dump");
                dump2 = dump_text(again);
                /* the same, less the "# from" comments (one file now) */
                CHECK(strstr(dump2, "# from") == NULL);
        }
        config_free(again);
        config_free(c);
        remove_tree(dir);
}

/* A FIFO (or any file that is not regular) matched by a glob is an error in
 * that file, and opening it never waits for a writer. */
static void test_include_fifo(void) {
        char *dir = scratch_dir();
        _cleanup_free_ char *fifo = xasprintf("%s/conf.d/pipe.yaml", dir);
        struct diagnostics d;
        int r;

        put(dir, "main.yaml", "include: [\"conf.d/*.yaml\"]\n" SERVERS("main"));
        put(dir, "conf.d/web.yaml", SERVERS("web"));
        CHECK(mkfifo(fifo, 0600) == 0);
        signal(SIGALRM, on_alarm);
        alarm(10);
        CHECK(load_in(dir, "main.yaml", &d, &r) == NULL);
        alarm(0);
        CHECK_INT(r, -EINVAL, "FIFO");
        CHECK_INT(d.n_lines, 1, "lines");
        if (d.n_lines == 1) {
                _cleanup_free_ char *want = xasprintf("%s: error: is a FIFO; an included file must be a regular file",
                                                      fifo);
                CHECK_STR(d.lines[0], want, "FIFO message");
        }
        CHECK(d.n_error_files == 1 && strcmp(d.error_files[0], fifo) == 0);
        diagnostics_clear(&d);
        remove_tree(dir);
}

/* An included file has the main file's cap: 1 MiB is read, a byte more is not. */
static void test_include_too_large(void) {
        char *dir = scratch_dir();
        _cleanup_free_ char *big = xasprintf("%s/conf.d/big.yaml", dir), *text = xmalloc(1024 * 1024 + 2);
        struct diagnostics d;
        struct config *c;
        size_t len;
        int fd, r;

        put(dir, "main.yaml", "include: [\"conf.d/*.yaml\"]\n" SERVERS("main"));
        /* exactly 1 MiB: a server, then comment lines */
        len = (size_t) sprintf(text, SERVERS("big"));
        while (len < 1024 * 1024) {
                size_t line = 1024 * 1024 - len < 80 ? 1024 * 1024 - len : 80;
                memset(text + len, ' ', line);
                text[len] = '#';
                text[len + line - 1] = '\n';
                len += line;
        }
        text[len] = '\0';
        put(dir, "conf.d/big.yaml", text);
        c = load_in(dir, "main.yaml", &d, &r);
        CHECK_INT(r, 0, "1 MiB loads");
        if (r < 0)
                show(&d);
        CHECK_INT(c ? c->n_servers : 0, 2, "servers");
        config_free(c);
        diagnostics_clear(&d);

        fd = open(big, O_WRONLY | O_APPEND | O_CLOEXEC);
        CHECK(fd >= 0 && write(fd, "\n", 1) == 1);
        close(fd);
        CHECK(load_in(dir, "main.yaml", &d, &r) == NULL);
        CHECK_INT(r, -EINVAL, "a byte over");
        CHECK_INT(d.n_lines, 1, "lines");
        if (d.n_lines == 1) {
                _cleanup_free_ char *want = xasprintf("%s: error: the file is larger than 1048576 bytes (1 MiB), the "
                                                      "most a configuration may have", big);
                CHECK_STR(d.lines[0], want, "too large");
        }
        diagnostics_clear(&d);
        remove_tree(dir);
}

/* diagnostics.error_files: the files with an error, each once, in the order
 * read; a file with warnings only is not one of them. */
static void test_error_files(void) {
        char *dir = scratch_dir();
        _cleanup_free_ char *a = xasprintf("%s/conf.d/a.yaml", dir), *c_file = xasprintf("%s/conf.d/c.yaml", dir),
                            *main_file = xasprintf("%s/main.yaml", dir);
        struct diagnostics d;
        struct config *c;
        int r;

        put(dir, "main.yaml", "include: [\"conf.d/*.yaml\"]\n" SERVERS("main"));
        put(dir, "conf.d/a.yaml", "servers:\n  - {name: a, conninfo: dbname=x, rules: [{name: r, max_idle: 30}]}\n"
                                  "  - {name: a2, conninfo: dbname=x, rules: [{name: r, max_idle: 0s}]}\n");
        put(dir, "conf.d/b.yaml", "servers:\n  - {name: b, conninfo: dbname=x, rules: [{name: r, max_idle: 1h, "
                                  "users: []}]}\n");
        put(dir, "conf.d/c.yaml", "servers:\n" SERVER("c") "bogus: 1\n");
        put(dir, "conf.d/d.yaml", SERVERS("d"));
        c = load_in(dir, "main.yaml", &d, &r);
        CHECK(c == NULL);
        CHECK_INT(r, -EINVAL, "load");
        CHECK_INT(d.n_errors, 3, "errors");
        CHECK_INT(d.n_warnings, 1, "warnings");
        CHECK_INT(d.n_error_files, 2, "error files");
        if (d.n_error_files == 2) {
                CHECK_STR(d.error_files[0], a, "first file with an error");
                CHECK_STR(d.error_files[1], c_file, "second file with an error");
        }
        /* in the order read, each at its place in its file */
        CHECK_INT(d.n_lines, 4, "lines");
        if (d.n_lines == 4) {
                CHECK(strstr(d.lines[0], "/conf.d/a.yaml:2:63: error: invalid duration \"30\"") != NULL);
                CHECK(strstr(d.lines[1], "/conf.d/a.yaml:3:64: error: \"max_idle\" must be longer than zero") != NULL);
                CHECK(strstr(d.lines[2], "/conf.d/b.yaml:2:74: warning: rule \"r\" can never match") != NULL);
                CHECK(strstr(d.lines[3], "/conf.d/c.yaml:3:1: error: unknown key \"bogus\" in an included file") != NULL);
        }
        diagnostics_clear(&d);

        /* the main file too, first */
        put(dir, "main.yaml", "include: [\"conf.d/*.yaml\"]\nbogus: 1\n" SERVERS("main"));
        CHECK(load_in(dir, "main.yaml", &d, &r) == NULL);
        CHECK_INT(d.n_error_files, 3, "error files");
        if (d.n_error_files == 3) {
                CHECK_STR(d.error_files[0], main_file, "main file");
                CHECK_STR(d.error_files[1], a, "a");
                CHECK_STR(d.error_files[2], c_file, "c");
        }
        diagnostics_clear(&d);

        /* a duplicate server is the later file's error */
        put(dir, "main.yaml", "include: [\"conf.d/*.yaml\"]\n" SERVERS("d"));
        put(dir, "conf.d/a.yaml", SERVERS("a"));
        put(dir, "conf.d/c.yaml", SERVERS("c"));
        CHECK(load_in(dir, "main.yaml", &d, &r) == NULL);
        CHECK_INT(d.n_errors, 1, "errors");
        CHECK(d.n_error_files == 1 && strstr(d.error_files[0], "/conf.d/d.yaml"));
        if (d.n_lines == 2) {
                _cleanup_free_ char *want = xasprintf("%s/conf.d/d.yaml:2:5: error: server \"d\" is defined twice: "
                                                      "here and at %s:3:5", dir, main_file);
                CHECK_STR(d.lines[1], want, "defined twice");
        } else
                show(&d);
        diagnostics_clear(&d);

        /* warnings only: it loads, and no file has an error */
        put(dir, "conf.d/d.yaml", SERVERS("d"));
        put(dir, "main.yaml", "include: [\"conf.d/*.yaml\"]\n" SERVERS("main"));
        c = load_in(dir, "main.yaml", &d, &r);
        CHECK(c != NULL);
        CHECK_INT(d.n_error_files, 0, "error files");
        CHECK_INT(d.n_warnings, 1, "warnings");
        config_free(c);
        diagnostics_clear(&d);
        remove_tree(dir);
}

/* config_load_buffer checks "include" but reads no file: a glob naming a
 * real file with an error changes nothing. */
static void test_buffer_does_not_follow(void) {
        char *dir = scratch_dir();
        _cleanup_free_ char *text = xasprintf("include: [\"%s/conf.d/*.yaml\", \"conf.d/*.yaml\"]\n" SERVERS("main"), dir);
        struct diagnostics d = {};
        struct config *c = NULL;
        int r;

        put(dir, "conf.d/bad.yaml", "servers: 1\nbogus: 2\n");
        put(dir, "conf.d/main.yaml", SERVERS("main"));
        put(dir, "main.yaml", text);
        r = config_load_buffer("t.yaml", text, strlen(text), &c, &d);
        CHECK_INT(r, 0, "load_buffer");
        CHECK_INT(d.n_lines, 0, "diagnostics");
        CHECK_INT(c ? c->n_servers : 0, 1, "servers");
        CHECK_INT(c ? c->n_includes : 0, 2, "includes");
        config_free(c);
        diagnostics_clear(&d);

        /* the same text from the file follows it */
        c = load_in(dir, "main.yaml", &d, &r);
        CHECK(c == NULL);
        CHECK_LINE(&d, "/conf.d/bad.yaml:1:10: error: \"servers\" must be a list, not a scalar");
        CHECK_LINE(&d, "/conf.d/main.yaml:2:5: error: server \"main\" is defined twice");
        diagnostics_clear(&d);
        remove_tree(dir);
}

/* A directory glob() cannot read is an error, not "matches nothing": the
 * servers in it would be dropped without a word. As root (who reads any
 * directory) the check runs in a child as nobody. */
static void test_include_unreadable_dir(void) {
        char *dir = scratch_dir();
        _cleanup_free_ char *conf = xasprintf("%s/conf.d", dir);
        pid_t pid;
        int status = 0;

        put(dir, "main.yaml", "include: [\"conf.d/*.yaml\"]\n" SERVERS("main"));
        put(dir, "conf.d/web.yaml", SERVERS("web"));
        CHECK(chmod(dir, 0755) == 0 && chmod(conf, 0311) == 0);
        pid = fork();
        if (pid == 0) {
                struct diagnostics d;
                struct config *c;
                int r;

                if (geteuid() == 0 && (setgroups(0, NULL) < 0 || setresgid(65534, 65534, 65534) < 0 ||
                                       setresuid(65534, 65534, 65534) < 0))
                        _exit(77);
                c = load_in(dir, "main.yaml", &d, &r);
                if (c || d.n_lines != 1 ||
                    !strstr(d.lines[0], "/main.yaml: error: include \"conf.d/*.yaml\": a directory on the way cannot "
                                        "be read")) {
                        show(&d);
                        _exit(1);
                }
                _exit(0);
        }
        CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
        CHECK_AT(WIFEXITED(status) && WEXITSTATUS(status) == 0, __FILE__, __LINE__, "child: status %d", status);
        CHECK(chmod(conf, 0755) == 0);
        remove_tree(dir);
}

/* The rules of a set are copied into each server that names it (sharing
 * its names and filters), at most CONFIG_MAX_RULE_COPIES (200000) in all:
 * 4000 servers with a set of 50 fit; one more server fails the load, once,
 * where it stopped; no server is left with the rules copied so far. */
static void test_rule_set_budget(void) {
        size_t cap = 512 * 1024;
        struct diagnostics d = {};
        struct config *c = NULL;

        for (int servers = 4000; servers <= 4001; servers++) {
                _cleanup_free_ char *text = xmalloc(cap);
                size_t n = 0;
                int r;

                n += (size_t) snprintf(text + n, cap - n, "rule_sets:\n  big:\n");
                for (int i = 0; i < 50; i++)
                        n += (size_t) snprintf(text + n, cap - n, "    - {name: r%d, max_idle: 1h, users: [a, b, c, d]}\n",
                                               i);
                n += (size_t) snprintf(text + n, cap - n, "servers:\n");
                for (int i = 0; i < servers; i++)
                        n += (size_t) snprintf(text + n, cap - n,
                                               "  - {name: s%04d, conninfo: dbname=x, rule_sets: [big]}\n", i);
                CHECK(n < cap - 1);
                r = config_load_buffer("t.yaml", text, n, &c, &d);
                if (servers == 4000) {
                        CHECK_INT(r, 0, "4000 servers with a set of 50 rules");
                        CHECK(c && c->n_servers == 4000 && c->servers[3999].n_rules == 50);
                        config_free(c);
                        diagnostics_clear(&d);
                        continue;
                }
                CHECK_INT(r, -EINVAL, "one more server");
                CHECK(c == NULL);
                CHECK_INT(d.n_lines, 1, "one message");
                if (d.n_lines == 1)
                        CHECK_AT(strncmp(d.lines[0], "t.yaml:4054:", 12) == 0 &&
                                         strstr(d.lines[0], ": error: more than 200000 rules in all the servers once "
                                                            "the rule sets are copied into every server that names "
                                                            "them; stopped at rule set \"big\" here"),
                                 __FILE__, __LINE__, "%s", d.lines[0]);
                diagnostics_clear(&d);
        }
}


/* A hostile file name stays on its line in the dump's "# from" comment. */
static void test_dump_from_escaped(void) {
        char *dir = scratch_dir();
        _cleanup_free_ char *dump = NULL;
        struct config *c, *again;
        struct diagnostics d;
        int r;

        put(dir, "main.yaml", "include: [\"conf.d/*.yaml\"]\n" SERVERS("main"));
        put(dir, "conf.d/a\nservers: []\n#.yaml", SERVERS("web"));
        c = load_in(dir, "main.yaml", &d, &r);
        CHECK_INT(r, 0, "load");
        dump = dump_text(c);
        CHECK_AT(strstr(dump, "/conf.d/a\\x0aservers: []\\x0a#.yaml\n  - name: \"web\"\n"), __FILE__, __LINE__, "%s",
                 dump);
        again = unit_config("dump.yaml", dump);
        CHECK_INT(again ? again->n_servers : 0, 2, "the dump loads");
        config_free(again);
        config_free(c);
        diagnostics_clear(&d);
        remove_tree(dir);
}

/* "*.yaml" next to the main file matches the main file too: it is never
 * read again as an included file (it would define its servers twice). And
 * a fleet's main file may leave every server to its included files. */
static void test_include_skips_the_main_file(void) {
        char *dir = scratch_dir();
        _cleanup_free_ char *got = NULL;
        struct diagnostics d;
        struct config *c;
        int r;

        put(dir, "main.yaml", "include: [\"*.yaml\"]\n" SERVERS("main"));
        put(dir, "web.yaml", SERVERS("web"));
        c = load_in(dir, "main.yaml", &d, &r);
        CHECK_INT(r, 0, "load");
        if (r < 0)
                show(&d);
        got = servers_of(c, dir);
        CHECK_STR(got, "main web | - web.yaml", "the main file is not included");
        config_free(c);
        diagnostics_clear(&d);

        put(dir, "main.yaml", "include: [\"conf.d/*.yaml\"]\nrule_sets:\n  std:\n    - {name: idle, max_idle: 1h}\n");
        put(dir, "conf.d/a.yaml", "servers:\n  - {name: a, conninfo: dbname=x, rule_sets: [std]}\n");
        c = load_in(dir, "main.yaml", &d, &r);
        CHECK_INT(r, 0, "servers only in included files");
        if (r < 0)
                show(&d);
        CHECK(c && c->n_servers == 1 && c->servers[0].n_rules == 1 && c->servers[0].rules[0].shared);
        config_free(c);
        diagnostics_clear(&d);

        remove_tree(dir);
}

/* A name twice among a server's own rules is said once, by their walk,
 * even when the server also names a set. */
static void test_own_duplicate_said_once(void) {
        static const char text[] =
                "rule_sets:\n  std:\n    - {name: idle, max_idle: 1h}\n"
                "servers:\n  - name: s\n    conninfo: dbname=x\n    rule_sets: [std]\n    rules:\n"
                "      - {name: x, max_idle: 1m}\n      - {name: x, max_idle: 2m}\n";
        struct diagnostics d = {};
        struct config *c = NULL;
        int r = config_load_buffer("t.yaml", text, strlen(text), &c, &d);

        CHECK_INT(r, -EINVAL, "a duplicate");
        CHECK_INT(d.n_lines, 1, "said once");
        if (d.n_lines)
                CHECK_STR(d.lines[0], "t.yaml:10:9: error: duplicate rule name \"x\" (first at line 9)", "the walk's");
        diagnostics_clear(&d);
}

int main(void) {
        test_include_skips_the_main_file();
        test_own_duplicate_said_once();
        test_conninfo_never_echoed();
        test_conninfo_positions();
        test_deep_nesting();
        test_anchor_caps();
        test_file_types();
        test_read_to_eof();
        test_fields();
        test_alias_bomb();
        test_sorted();
        test_messages_escaped();
        test_pressure_fields();
        test_pressure_errors();
        test_pressure_dump_round_trip();
        test_pressure_on();
        test_include_order();
        test_include_nothing();
        test_include_once();
        test_include_absolute();
        test_include_dir_with_glob_chars();
        test_rule_sets();
        test_include_fifo();
        test_include_too_large();
        test_error_files();
        test_buffer_does_not_follow();
        test_include_unreadable_dir();
        test_rule_set_budget();
        test_dump_from_escaped();
        return unit_finish("test-config");
}
