/* libFuzzer entry point for the capture reader (json.c, capture.c). Besides
 * "no crash, no leak": a failure says why in one escaped line and returns
 * nothing; a success holds a snapshot policy_judge() can take.
 *
 *   CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false
 *   ninja -C build-fuzz tests/fuzz-capture
 *   mkdir -p /tmp/fuzz-capture && build-fuzz/tests/fuzz-capture -max_len=4096 \
 *           -dict=tests/fuzz/capture.dict -max_total_time=600 /tmp/fuzz-capture tests/fuzz/capture-corpus
 *
 * Add every crash reproducer to tests/fuzz/capture-corpus: plain test runs replay it. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "capture.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_snapshot(const struct snapshot *s) {
        int64_t sum = 0;

        if (!s->idle_all || !s->has_graph || !s->has_horizon || !s->role_known || s->now == TS_NULL || !s->strings)
                abort();
        for (size_t i = 0; i < s->n_holders; i++) {
                const struct horizon_holder *h = &s->holders[i];
                if ((h->kind != HOLDER_PREPARED && h->kind != HOLDER_SLOT) || !h->name || !h->owner ||
                    !h->database || !h->slot_type || h->xmin_age < 0 || h->xmin_age > s->horizon_age[h->kind] ||
                    (h->kind == HOLDER_PREPARED && (*h->slot_type || h->active)))
                        abort();
        }
        for (size_t i = 0; i < s->n_groups; i++) {
                for (enum group_key k = GROUP_USER; k < _GROUP_MAX; k++)
                        if (!s->groups[i].key[k])
                                abort();
                sum += s->groups[i].count;
        }
        if (s->connections != (s->connections < 0 ? -1 : sum) || (s->connections < 0 && s->n_groups))
                abort();
        for (size_t i = 0; i < s->n_rows; i++) {
                const struct snapshot_row *r = &s->rows[i];
                if (r->pid <= 0 || !r->user || !r->database || !r->application || !r->client_addr ||
                    (r->blockers == NULL) != (r->n_blockers == 0) || r->xmin_age < -1)
                        abort();
                for (size_t b = 0; b < r->n_blockers; b++)
                        if (r->blockers[b] < 0)
                                abort();
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct capture c;
        char *error = NULL;
        int r;

        if (size > 1024 * 1024)
                return 0;
        r = capture_parse((const char *) data, size, &c, &error);
        if (r < 0) {
                if (r != -EINVAL || !error || c.servers || c.n_servers)
                        abort();
                for (const char *p = error; *p; p++)
                        if ((unsigned char) *p < 0x20 || *p == 0x7f)
                                abort();  /* escaped: one printable line */
                free(error);
                return 0;
        }
        if (error || c.n_servers == 0)
                abort();
        for (size_t i = 0; i < c.n_servers; i++)
                check_snapshot(&c.servers[i].snap);
        capture_free(&c);
        return 0;
}
