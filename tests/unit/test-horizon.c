/* The horizon's holders that are not sessions (SPEC 19): prepared
 * transactions and replication slots, judged against the smallest
 * max_xmin_age of the server (policy.c judge_holders), warned once and then
 * at most hourly on the server's clock while they stay over
 * (memory_warn_holders), the line and the command that releases them
 * (log.c), and the gauge (metrics.c). No database: the snapshots are built
 * here; the log lines are read back from stderr (--log-target stderr). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "macro.h"
#include "memory.h"
#include "metrics.h"
#include "policy.h"
#include "unit.h"

#define S(x) ((int64_t) (x) * 1000000)  /* seconds -> server clock microseconds */
#define NOW S(1000000)                  /* 1970-01-12 13:46:40 UTC */

static struct config *load(const char *rules) {
        _cleanup_free_ char *yaml = xasprintf("servers:\n  - name: s\n    conninfo: \"dbname=x\"\n    rules:\n%s", rules);
        return unit_config("horizon-test.yaml", yaml);
}

static struct horizon_holder prepared(const char *gid, int64_t prepared_at, int64_t age) {
        return (struct horizon_holder) {
                .kind = HOLDER_PREPARED, .name = gid, .owner = "app", .database = "appdb", .slot_type = "",
                .prepared_at = prepared_at, .xmin_age = age,
        };
}

static struct horizon_holder slot(const char *name, int64_t age) {
        return (struct horizon_holder) {
                .kind = HOLDER_SLOT, .name = name, .owner = "", .database = "appdb", .slot_type = "logical",
                .prepared_at = TS_NULL, .active = false, .xmin_age = age,
        };
}

static void judge(const struct server *srv, struct horizon_holder *h, size_t n, int64_t now, struct judgement *j) {
        struct snapshot snap = { .now = now, .holders = h, .n_holders = n, .has_horizon = true };
        struct policy_input in = { .server = srv };

        policy_judge(&in, &snap, j);
}

/* Which rule, and who is over: the smallest max_xmin_age of the server,
 * whatever else the rules say; reaching it is enough. */
static void test_judge(void) {
        static const struct {
                const char *rules;
                const char *rule;       /* NULL: no holder judged */
                int64_t ages[4];        /* prepared, slot, prepared, slot */
                bool over[4];
        } table[] = {
                { "      - {name: wide, max_xmin_age: 500}\n"
                  "      - {name: tight, max_xmin_age: 200, action: log}\n"
                  "      - {name: idle, max_idle: 1h}\n",
                  "tight", { 200, 199, 1000, 201 }, { true, false, true, true } },
                /* the order of the rules does not matter, nor their action or dry run */
                { "      - {name: tight, max_xmin_age: 2_000, dry_run: true, users: [nobody]}\n"
                  "      - {name: wide, max_xmin_age: 50_000_000}\n",
                  "tight", { 1999, 2000, 0, 50000000 }, { false, true, false, true } },
                /* two rules with the same limit: the first */
                { "      - {name: first, max_xmin_age: 300}\n"
                  "      - {name: second, max_xmin_age: 300}\n",
                  "first", { 299, 300, 301, 1 }, { false, true, true, false } },
                /* no max_xmin_age rule: holders (as a replay might carry) are not judged */
                { "      - {name: idle, max_idle: 1h}\n"
                  "      - {name: old, max_transaction_age: 1h}\n",
                  NULL, { 1000000, 1000000, 1000000, 1000000 }, {} },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                struct config *c = load(table[i].rules);
                struct horizon_holder h[4] = {
                        prepared("p0", NOW - S(60), table[i].ages[0]), slot("s1", table[i].ages[1]),
                        prepared("p2", NOW - S(60), table[i].ages[2]), slot("s3", table[i].ages[3]),
                };
                const struct rule *r;
                struct judgement j;
                char what[64];

                if (!c)
                        continue;
                r = policy_horizon_rule(&c->servers[0]);
                snprintf(what, sizeof(what), "case %zu", i);
                judge(&c->servers[0], h, 4, NOW, &j);
                if (!table[i].rule) {
                        CHECK_AT(r == NULL, __FILE__, __LINE__, "%s: no horizon rule", what);
                        CHECK_INT(j.n_holders, 0, what);
                        CHECK_AT(j.holders == NULL, __FILE__, __LINE__, "%s: no holder verdicts", what);
                } else {
                        CHECK_AT(r != NULL, __FILE__, __LINE__, "%s: a horizon rule", what);
                        if (r)
                                CHECK_STR(r->name, table[i].rule, what);
                        CHECK_INT(j.n_holders, 4, what);
                        for (size_t k = 0; k < j.n_holders && k < 4; k++) {
                                CHECK_AT(j.holders[k].holder == &h[k], __FILE__, __LINE__, "%s: holder %zu in order",
                                         what, k);
                                CHECK_AT(j.holders[k].rule == r, __FILE__, __LINE__, "%s: holder %zu by %s", what, k,
                                         table[i].rule);
                                CHECK_AT(j.holders[k].over == table[i].over[k], __FILE__, __LINE__,
                                         "%s: holder %zu (age %" PRId64 ") over: got %d", what, k, table[i].ages[k],
                                         j.holders[k].over);
                        }
                }
                /* holders are never decisions: nothing is done to them */
                CHECK_INT(j.n_decisions, 0, what);
                judgement_free(&j);
                config_free(c);
        }
}

/* Everything memory_warn_holders() writes to stderr during one poll. */
static char *poll_lines(struct memory *m, const struct server *srv, struct horizon_holder *h, size_t n,
                        int64_t now) {
        struct snapshot snap = { .now = now, .holders = h, .n_holders = n, .has_horizon = true };
        struct policy_input in = { .server = srv };
        struct judgement j;
        FILE *f = tmpfile();
        int saved = dup(STDERR_FILENO);
        char *text;
        long len;

        if (!f || saved < 0) {
                CHECK_AT(false, __FILE__, __LINE__, "cannot capture stderr");
                return xstrdup("");
        }
        policy_judge(&in, &snap, &j);
        fflush(stderr);
        dup2(fileno(f), STDERR_FILENO);
        memory_warn_holders(m, "s", &snap, &j);
        fflush(stderr);
        dup2(saved, STDERR_FILENO);
        close(saved);
        judgement_free(&j);
        fseek(f, 0, SEEK_END);
        len = ftell(f);
        text = xmalloc((size_t) (len > 0 ? len : 0) + 1);
        rewind(f);
        len = (long) fread(text, 1, (size_t) (len > 0 ? len : 0), f);
        text[len] = '\0';
        fclose(f);
        return text;
}

static size_t count_lines(const char *text) {
        size_t n = 0;

        for (; *text; text++)
                n += *text == '\n';
        return n;
}

/* One holder over several polls: said at the first, not at the polls of
 * the next hour, again an hour later on the server's clock; forgotten once
 * under (or a poll without holders), said at once when it is back; a
 * prepared transaction is its gid and when it was prepared. */
static void test_warn_once_then_hourly(void) {
        struct config *c = load("      - {name: tight, max_xmin_age: 200}\n");
        const struct server *srv;
        struct memory m = {};
        static const struct {
                const char *what;
                int64_t at_s;           /* seconds after the first poll */
                int64_t age;            /* of p (the prepared transaction "g1") */
                int64_t prepared_at_s;  /* of p, seconds after NOW (-60: the first one) */
                bool present;           /* p is in the snapshot at all */
                int64_t slot_age;       /* of the slot "s1"; -1: not in the snapshot */
                size_t lines;           /* lines said at this poll */
                const char *said;       /* a part of them, NULL: no check */
                bool again;             /* said as "(still there: said hourly)" */
        } steps[] = {
                { "first sighting", 0, 250, -60, true, -1, 1, "prepared transaction g1 ", false },
                { "a minute later", 60, 260, -60, true, -1, 0, NULL, false },
                { "59m59s later", 3599, 300, -60, true, -1, 0, NULL, false },
                { "an hour later", 3600, 310, -60, true, -1, 1, "prepared transaction g1 ", true },
                { "a minute after that", 3660, 320, -60, true, -1, 0, NULL, false },
                /* a slot appears over: said at once; p stays quiet */
                { "a slot joins", 3720, 330, -60, true, 500, 1, "replication slot s1 ", false },
                { "both stay", 3780, 340, -60, true, 510, 0, NULL, false },
                /* an hour after p's second warning, not yet an hour after the slot's */
                { "p's hour", 7200, 350, -60, true, 520, 1, "prepared transaction g1 ", true },
                { "the slot's hour", 7320, 360, -60, true, 530, 1, "replication slot s1 ", true },
                /* p under the limit: forgotten (an age never shrinks on a server;
                 * a verdict under comes from a reload that raised the limit,
                 * which this smaller age stands for) */
                { "p under", 7380, 199, -60, true, 540, 0, NULL, false },
                { "p back over", 7440, 200, -60, true, 550, 1, "prepared transaction g1 ", false },
                { "p back quiet", 7500, 210, -60, true, 560, 0, NULL, false },
                /* the same gid prepared again (the first one ended): a new one */
                { "same gid, new prepared_at", 7560, 220, 7000, true, 570, 1, "prepared transaction g1 ", false },
                { "the new one stays", 7620, 230, 7000, true, 580, 0, NULL, false },
                /* gone: forgotten; prepared again later with the same gid and time:
                 * said again (there was a poll without it) */
                { "p gone", 7680, 0, 7000, false, 590, 0, NULL, false },
                { "p back", 7740, 240, 7000, true, 600, 1, "prepared transaction g1 ", false },
                /* a poll with no holders at all (nothing holds one, or no
                 * max_xmin_age rule): everything forgotten */
                { "no holders", 7800, 0, 7000, false, -1, 0, NULL, false },
                { "both back", 7860, 250, 7000, true, 610, 2, NULL, false },
        };

        if (!c)
                return;
        srv = &c->servers[0];
        for (size_t i = 0; i < ELEMENTSOF(steps); i++) {
                struct horizon_holder h[2];
                size_t n = 0;
                _cleanup_free_ char *text = NULL;

                if (steps[i].present)
                        h[n++] = prepared("g1", NOW + S(steps[i].prepared_at_s), steps[i].age);
                if (steps[i].slot_age >= 0)
                        h[n++] = slot("s1", steps[i].slot_age);
                text = poll_lines(&m, srv, h, n, NOW + S(steps[i].at_s));
                CHECK_AT(count_lines(text) == steps[i].lines, __FILE__, __LINE__,
                         "step %zu (%s): %zu lines, want %zu:\n%s", i, steps[i].what, count_lines(text),
                         steps[i].lines, text);
                if (steps[i].said)
                        CHECK_AT(strstr(text, steps[i].said), __FILE__, __LINE__, "step %zu (%s): says \"%s\":\n%s", i,
                                 steps[i].what, steps[i].said, text);
                if (steps[i].lines)
                        CHECK_AT(!strstr(text, " (still there: said hourly)\n") == !steps[i].again, __FILE__,
                                 __LINE__, "step %zu (%s): %s:\n%s", i, steps[i].what,
                                 steps[i].again ? "said again, as such" : "a first warning, not 'still there'", text);
        }
        /* what is remembered: the holders over at the last poll, nothing else */
        CHECK_INT(m.n_warned_holders, 2, "both remembered");
        memory_done(&m);
        config_free(c);
}

/* A slot and a prepared transaction of the same name are two holders. */
static void test_kinds_apart(void) {
        struct config *c = load("      - {name: tight, max_xmin_age: 100}\n");
        struct memory m = {};
        struct horizon_holder h[2] = { prepared("x", NOW - S(5), 150), slot("x", 150) };
        char *text;

        if (!c)
                return;
        text = poll_lines(&m, &c->servers[0], h, 2, NOW);
        CHECK_INT(count_lines(text), 2, "a gid and a slot of the same name");
        free(text);
        text = poll_lines(&m, &c->servers[0], h, 2, NOW + S(1));
        CHECK_INT(count_lines(text), 0, "neither again a second later");
        free(text);
        memory_done(&m);
        config_free(c);
}

/* A snapshot without the server's clock (now NULL: no server sends one, but
 * nothing else guarantees it): the holder is said, and the next poll with a
 * clock does not compute with the unknown time of that warning (UBSan:
 * signed overflow) but says it again. */
static void test_no_clock(void) {
        struct config *c = load("      - {name: tight, max_xmin_age: 100}\n");
        struct memory m = {};
        struct horizon_holder h = slot("s1", 150);
        char *text;

        if (!c)
                return;
        text = poll_lines(&m, &c->servers[0], &h, 1, TS_NULL);
        CHECK_INT(count_lines(text), 1, "said without a clock");
        free(text);
        text = poll_lines(&m, &c->servers[0], &h, 1, NOW);
        CHECK_INT(count_lines(text), 1, "said again once there is a clock");
        CHECK(strstr(text, "(still there: said hourly)"));
        free(text);
        text = poll_lines(&m, &c->servers[0], &h, 1, NOW + S(60));
        CHECK_INT(count_lines(text), 0, "then hourly");
        free(text);
        memory_done(&m);
        config_free(c);
}

/* The lines, whole: the facts, the command, the database to run it in; a
 * name with a quote, a backslash and a newline is escaped in the line and
 * doubled as SQL wants it in the command. */
static void test_lines(void) {
        struct config *c = load("      - {name: horizon, max_xmin_age: 1_000}\n");
        struct memory m = {};
        struct horizon_holder p = prepared("tx'1\\z\nend", NOW - S(3600), 1500), l = slot("cdc_slot", 1000);
        struct horizon_holder phys = { .kind = HOLDER_SLOT, .name = "standby1", .owner = "", .database = "",
                                       .slot_type = "physical", .prepared_at = TS_NULL, .active = true,
                                       .xmin_age = 4000 };
        char *text;

        if (!c)
                return;
        text = poll_lines(&m, &c->servers[0], &p, 1, NOW);
        CHECK_STR(text,
                  "s: prepared transaction tx'1\\\\z\\x0aend (owner app, database appdb, prepared 1970-01-12 "
                  "12:46:40 UTC) holds xmin 1500 transactions old >= max_xmin_age 1000 [rule horizon]; pgsweeper "
                  "never ends it: if it is abandoned, run ROLLBACK PREPARED 'tx''1\\\\z\\x0aend'; in database appdb "
                  "(COMMIT PREPARED keeps its work instead)\n",
                  "prepared line");
        free(text);
        text = poll_lines(&m, &c->servers[0], &l, 1, NOW);
        CHECK_STR(text,
                  "s: replication slot cdc_slot (logical, inactive, database appdb) holds xmin 1000 transactions "
                  "old >= max_xmin_age 1000 [rule horizon]; pgsweeper never drops it: once its consumer is gone "
                  "for good, run SELECT pg_drop_replication_slot('cdc_slot'); (a consumer that comes back finds "
                  "it gone)\n",
                  "logical slot line, at the limit");
        free(text);
        text = poll_lines(&m, &c->servers[0], &phys, 1, NOW);
        CHECK_STR(text,
                  "s: replication slot standby1 (physical, active) holds xmin 4000 transactions old >= "
                  "max_xmin_age 1000 [rule horizon]; pgsweeper never drops it: once its consumer is gone for "
                  "good, run SELECT pg_drop_replication_slot('standby1'); (a consumer that comes back finds it "
                  "gone)\n",
                  "physical slot line");
        free(text);
        memory_done(&m);
        config_free(c);

        /* the command alone (PGSWEEPER_RELEASE), raw */
        static const struct {
                enum holder_kind kind;
                const char *name, *want;
        } release[] = {
                { HOLDER_PREPARED, "g", "ROLLBACK PREPARED 'g';" },
                { HOLDER_PREPARED, "it's", "ROLLBACK PREPARED 'it''s';" },
                { HOLDER_PREPARED, "''", "ROLLBACK PREPARED '''''';" },
                { HOLDER_PREPARED, "a\\b\nc", "ROLLBACK PREPARED 'a\\b\nc';" },
                { HOLDER_PREPARED, "", "ROLLBACK PREPARED '';" },
                { HOLDER_SLOT, "sub_1", "SELECT pg_drop_replication_slot('sub_1');" },
                { HOLDER_SLOT, "o'k", "SELECT pg_drop_replication_slot('o''k');" },
        };
        for (size_t i = 0; i < ELEMENTSOF(release); i++) {
                struct horizon_holder h = { .kind = release[i].kind, .name = release[i].name };
                _cleanup_free_ char *got = log_holder_release(&h);
                CHECK_STR(got, release[i].want, release[i].name);
        }
}

/* pgsweeper_horizon_age{server,holder}: every kind once the server read the
 * horizon, 0 for a kind none holds; absent for a server that never did. */
static void test_gauge(void) {
        struct metrics *mx = metrics_new();
        const int64_t age[_HOLDER_MAX] = { [HOLDER_SESSION] = 12, [HOLDER_PREPARED] = -1, [HOLDER_SLOT] = 3400 };
        _cleanup_free_ char *text = NULL;
        size_t len = 0;
        FILE *f;

        metrics_set_connections(mx, "other", 3, 10);     /* a server without the horizon */
        metrics_set_horizon(mx, "s", age);
        f = open_memstream(&text, &len);
        metrics_format(mx, f);
        fclose(f);
        CHECK(strstr(text, "# TYPE pgsweeper_horizon_age gauge\n"));
        CHECK(strstr(text, "pgsweeper_horizon_age{server=\"s\",holder=\"session\"} 12\n"));
        CHECK(strstr(text, "pgsweeper_horizon_age{server=\"s\",holder=\"prepared\"} 0\n"));
        CHECK(strstr(text, "pgsweeper_horizon_age{server=\"s\",holder=\"slot\"} 3400\n"));
        CHECK(!strstr(text, "pgsweeper_horizon_age{server=\"other\""));
        free(text);
        text = NULL;

        /* a poll that did not read it (a reload took the max_xmin_age rule
         * away): the gauge goes rather than stay frozen */
        metrics_set_horizon(mx, "s", NULL);
        f = open_memstream(&text, &len);
        metrics_format(mx, f);
        fclose(f);
        CHECK(strstr(text, "# TYPE pgsweeper_horizon_age gauge\n"));
        CHECK(!strstr(text, "pgsweeper_horizon_age{server=\"s\""));
        metrics_free(mx);
}

int main(void) {
        log_setup(LOG_TARGET_STDERR, LOG_INFO);
        test_judge();
        test_warn_once_then_hourly();
        test_kinds_apart();
        test_no_clock();
        test_lines();
        test_gauge();
        return unit_finish("test-horizon");
}
