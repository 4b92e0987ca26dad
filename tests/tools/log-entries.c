/* Test tool: write many journal entries through pgsweeper's log module, for
 * the tests of a stalled journald (queue bound, priorities, drops).
 *
 *   log-entries NOISE DECISIONS [BIG_BYTES]
 *
 * Logs NOISE info events ("noise N"), then DECISIONS terminated entries (pid
 * 1..DECISIONS), then, if BIG_BYTES > 0, one notice event whose message is
 * that many bytes long. Prints "queued N" (entries waiting in the queue),
 * waits for a line on stdin, runs an event loop until the queue is empty (at
 * most 10 s), flushes at exit and prints the metrics. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-event.h>

#include "journal.h"
#include "log.h"
#include "metrics.h"

static int on_tick(sd_event_source *s, uint64_t usec, void *userdata) {
        sd_event *e = sd_event_source_get_event(s);
        uint64_t now;

        if (log_queued() == 0)
                return sd_event_exit(e, 0);
        (void) sd_event_now(e, CLOCK_MONOTONIC, &now);
        if (now >= *(uint64_t *) userdata)
                return sd_event_exit(e, 1);
        (void) sd_event_source_set_time(s, now + 20 * 1000);
        return sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
}

int main(int argc, char **argv) {
        struct snapshot_row row = { .user = "app", .database = "appdb", .application = "tool", .client_addr = "local",
                                    .state = STATE_IDLE };
        struct rule rule = { .name = (char *) "idle-sessions" };
        struct decision d = { .row = &row, .rule = &rule, .action = ACTION_TERMINATE, .limit = LIMIT_IDLE,
                              .elapsed_ms = 2000 };
        long noise, decisions, big = 0;
        sd_event *e = NULL;
        uint64_t deadline;
        struct metrics *m;
        char buf[64];
        int r;

        if (argc < 3)
                return 2;
        noise = strtol(argv[1], NULL, 10);
        decisions = strtol(argv[2], NULL, 10);
        if (argc > 3)
                big = strtol(argv[3], NULL, 10);
        rule.limit_ms[LIMIT_IDLE] = 1000;

        log_setup(LOG_TARGET_JOURNAL, LOG_DEBUG);
        for (long i = 0; i < noise; i++)
                log_event(LOG_INFO, NULL, "noise", "noise %ld", i);
        for (long i = 0; i < decisions; i++) {
                row.pid = (int32_t) (i + 1);
                log_decision("main", &d, RESULT_TERMINATED, -1, NULL);
        }
        if (big > 0) {
                char *s = malloc((size_t) big + 1);
                memset(s, 'b', (size_t) big);
                s[big] = '\0';
                log_event(LOG_NOTICE, NULL, "big", "%s", s);
                free(s);
        }
        printf("queued %zu\n", log_queued());
        fflush(stdout);
        if (!fgets(buf, sizeof(buf), stdin))
                return 2;

        if (sd_event_new(&e) < 0 || log_attach_event(e) < 0)
                return 2;
        (void) sd_event_now(e, CLOCK_MONOTONIC, &deadline);
        deadline += 10 * 1000 * 1000;
        if (sd_event_add_time(e, NULL, CLOCK_MONOTONIC, 0, 0, on_tick, &deadline) < 0)
                return 2;
        r = sd_event_loop(e);
        printf("loop %s, queued %zu\n", r == 0 ? "emptied the queue" : "timed out", log_queued());
        log_flush_at_exit(LOG_EXIT_FLUSH_USEC);
        sd_event_unref(e);
        m = metrics_new();
        metrics_set_journal_dropped(m, journal_dropped_total());
        metrics_format(m, stdout);
        metrics_free(m);
        return 0;
}
