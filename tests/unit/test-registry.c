/* The registry of pgsweeper's own backends, per cluster. */
#include <stdlib.h>

#include "macro.h"
#include "registry.h"
#include "unit.h"

static bool has(const struct session_id *ids, size_t n, int32_t pid, int64_t bs) {
        for (size_t i = 0; i < n; i++)
                if (session_id_equal(ids[i], (struct session_id) { pid, bs }))
                        return true;
        return false;
}

int main(void) {
        struct registry *r = registry_new();
        struct registry_entry *a = registry_join(r), *b = registry_join(r), *c = registry_join(r);
        struct session_id *ids;
        const char *cluster;
        size_t n;

        n = registry_sessions(r, "A", &ids);
        CHECK_INT(n, 0, "nobody connected");
        free(ids);

        registry_connected(a, "A", (struct session_id) { 10, 100 });
        registry_connected(b, "A", (struct session_id) { 11, 110 });
        registry_connected(c, "B", (struct session_id) { 10, 200 });
        n = registry_sessions(r, "A", &ids);
        CHECK_INT(n, 2, "two servers on cluster A");
        CHECK(has(ids, n, 10, 100) && has(ids, n, 11, 110));
        CHECK(!has(ids, n, 10, 200));   /* same pid, other cluster */
        free(ids);
        n = registry_sessions(r, NULL, &ids);
        CHECK_INT(n, 0, "no cluster known: none");
        free(ids);

        /* a connection given up on stays ours, as the abandoned backend */
        registry_abandon(a);
        registry_disconnected(a);
        CHECK_INT(registry_abandoned(a, &cluster).pid, 10, "abandoned pid");
        CHECK_STR(cluster, "A", "abandoned cluster");
        registry_connected(a, "A", (struct session_id) { 12, 120 });
        n = registry_sessions(r, "A", &ids);
        CHECK_INT(n, 3, "the new connection, the abandoned one, b's");
        CHECK(has(ids, n, 10, 100) && has(ids, n, 12, 120) && has(ids, n, 11, 110));
        free(ids);
        registry_abandoned_done(a);
        CHECK_INT(registry_abandoned(a, &cluster).pid, 0, "done: none");
        CHECK(cluster == NULL);

        /* abandoning what is not connected does nothing */
        registry_disconnected(b);
        registry_abandon(b);
        CHECK_INT(registry_abandoned(b, &cluster).pid, 0, "nothing to abandon");

        registry_leave(r, c);
        n = registry_sessions(r, "B", &ids);
        CHECK_INT(n, 0, "c left");
        free(ids);
        registry_free(r);   /* frees a and b */
        return unit_finish("test-registry");
}
