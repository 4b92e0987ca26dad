/* Judging cost alone: N sessions x R rules x E exempt names, the policy as
 * the daemon runs it (lists compiled at load), and the same with the lists
 * left uncompiled (every pattern tried, as before name_list_compile), in
 * one run. Prints microseconds of CPU per judgement. bench/run runs it.
 *
 * bench-judge --lock-queue N [ROUNDS] (issue 18): one superuser holding a
 * lock, N sessions queued on it, each listing the holder and every waiter
 * ahead of it as pg_blocking_pids() does (N(N-1)/2 + N pids), and one idle
 * canary past a max_idle rule: milliseconds of CPU per judgement. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "macro.h"
#include "policy.h"

static double cpu_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
        return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static char *config_text(int rules, int exempt) {
        size_t cap = 256 + (size_t) rules * 160 + (size_t) exempt * 24;
        char *t = xmalloc(cap);
        size_t n = 0;

        n += (size_t) snprintf(t + n, cap - n, "exempt:\n  users: [");
        for (int i = 0; i < exempt; i++)
                n += (size_t) snprintf(t + n, cap - n, "%sadmin_%d", i ? ", " : "", i);
        n += (size_t) snprintf(t + n, cap - n, "]\nservers:\n  - name: main\n    conninfo: \"dbname=postgres\"\n"
                                               "    rules:\n");
        for (int i = 0; i < rules; i++)
                n += (size_t) snprintf(t + n, cap - n,
                                       "      - {name: r%d, max_idle: %dh, databases: [\"app*\", db_%d]}\n", i,
                                       i + 1, i);
        return t;
}

static void uncompile(struct name_list *l) {
        free(l->slots);
        free(l->globs);
        l->slots = NULL;
        l->globs = NULL;
        l->n_slots = l->n_globs = 0;
}

static void uncompile_filter(struct filter *f) {
        uncompile(&f->users);
        uncompile(&f->databases);
        uncompile(&f->applications);
}

static double judge_usec(const struct config *c, const struct snapshot *snap, int rounds) {
        struct policy_input in = { .server = &c->servers[0] };
        double t0 = cpu_usec();

        for (int i = 0; i < rounds; i++) {
                struct judgement j;
                policy_judge(&in, snap, &j);
                judgement_free(&j);
        }
        return (cpu_usec() - t0) / rounds;
}

static int lock_queue(int waiters, int rounds) {
        static const char text[] = "servers:\n  - name: main\n    conninfo: \"dbname=postgres\"\n    rules:\n"
                                   "      - {name: lock-blockers, max_blocking: 3s, users: [app]}\n"
                                   "      - {name: canary, max_idle: 2s, users: [app], applications: [canary]}\n";
        struct diagnostics diag = {};
        struct config *c = NULL;
        struct snapshot snap = { .now = INT64_C(1000000) * 1000000, .has_graph = true };
        size_t n = (size_t) waiters + 2, n_pool = 0;
        int32_t *pool = xcalloc((size_t) waiters * ((size_t) waiters + 1) / 2 + 1, sizeof(int32_t));
        double ms;

        if (config_load_buffer("bench", text, strlen(text), &c, &diag) < 0)
                return 1;
        snap.rows = xcalloc(n, sizeof(*snap.rows));
        snap.n_rows = n;
        for (size_t i = 0; i < n; i++) {
                snap.rows[i] = (struct snapshot_row) {
                        .pid = 1000 + (int32_t) i, .client_backend = true, .state = STATE_IDLE,
                        .backend_start = snap.now - INT64_C(600) * 1000000,
                        .state_change = snap.now - INT64_C(300) * 1000000, .query_start = TS_NULL,
                        .xact_start = TS_NULL, .wait_start = TS_NULL, .user = "app", .database = "appdb",
                        .application = "psql", .client_addr = "local",
                };
        }
        snap.rows[0].superuser = true;
        snap.rows[0].user = "postgres";
        snap.rows[n - 1].application = "canary";
        snap.rows[n - 1].state_change = snap.now - INT64_C(2100) * 1000;
        for (size_t i = 1; i + 1 < n; i++) {
                struct snapshot_row *r = &snap.rows[i];
                r->state = STATE_ACTIVE;
                r->query_start = r->state_change = r->xact_start = r->wait_start =
                        snap.now - INT64_C(200) * 1000000 + (int64_t) i * 1000;
                r->lock_waiting = true;
                r->blockers = pool + n_pool;
                for (size_t b = 0; b < i; b++)
                        pool[n_pool++] = 1000 + (int32_t) b;
                r->n_blockers = i;
        }
        ms = judge_usec(c, &snap, rounds) / 1000;
        printf("judge a lock queue of %d waiters (%zu pids listed): %.2f ms CPU\n", waiters, n_pool, ms);
        free(pool);
        free(snap.rows);
        config_free(c);
        return 0;
}

int main(int argc, char **argv) {
        if (argc > 2 && strcmp(argv[1], "--lock-queue") == 0)
                return lock_queue(atoi(argv[2]), argc > 3 ? atoi(argv[3]) : 5);
        int sessions = argc > 1 ? atoi(argv[1]) : 1000, rules = argc > 2 ? atoi(argv[2]) : 100,
            exempt = argc > 3 ? atoi(argv[3]) : 1000, rounds = argc > 4 ? atoi(argv[4]) : 20;
        _cleanup_free_ char *text = config_text(rules, exempt);
        struct diagnostics diag = {};
        struct config *c = NULL;
        struct snapshot snap = { .now = INT64_C(1000000) * 1000000 };
        char (*names)[32] = xcalloc((size_t) sessions, sizeof(*names));
        double compiled, plain;

        if (config_load_buffer("bench", text, strlen(text), &c, &diag) < 0) {
                for (size_t i = 0; i < diag.n_lines; i++)
                        fprintf(stderr, "%s\n", diag.lines[i]);
                return 1;
        }
        snap.rows = xcalloc((size_t) sessions, sizeof(*snap.rows));
        snap.n_rows = (size_t) sessions;
        for (int i = 0; i < sessions; i++) {
                /* every session a candidate (idle 2 days) of every rule, none
                 * exempt: the worst case, each rule's exempt check runs */
                snprintf(names[i], sizeof(names[i]), "app_%d", i % (rules ? rules : 1));
                snap.rows[i] = (struct snapshot_row) {
                        .pid = 1000 + i, .client_backend = true, .state = STATE_IDLE,
                        .backend_start = snap.now - INT64_C(3) * 86400 * 1000000,
                        .state_change = snap.now - INT64_C(2) * 86400 * 1000000, .query_start = TS_NULL,
                        .xact_start = TS_NULL, .user = names[i], .database = "appdb", .application = "psql",
                        .client_addr = "local",
                };
        }
        compiled = judge_usec(c, &snap, rounds);
        uncompile_filter(&c->exempt);
        for (size_t r = 0; r < c->servers[0].n_rules; r++)
                uncompile_filter(&c->servers[0].rules[r].filter);
        plain = judge_usec(c, &snap, rounds);
        printf("judge %d sessions x %d rules x %d exempt names: %.0f us CPU (lists compiled), %.0f us (every "
               "pattern tried)\n", sessions, rules, exempt, compiled, plain);
        free(snap.rows);
        free(names);
        config_free(c);
        return 0;
}
