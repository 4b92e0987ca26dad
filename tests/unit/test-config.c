#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
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

int main(void) {
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
        return unit_finish("test-config");
}
