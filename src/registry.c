/* pgsweeper's own backends, per cluster; see registry.h. */
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "registry.h"

struct registry_entry {
        char *cluster;              /* NULL: not connected */
        struct session_id id;
        char *abandoned_cluster;    /* NULL: nothing abandoned */
        struct session_id abandoned;
};

struct registry {
        struct registry_entry **entries;
        size_t n_entries;
};

struct registry *registry_new(void) {
        return xcalloc(1, sizeof(struct registry));
}

void registry_free(struct registry *r) {
        if (!r)
                return;
        while (r->n_entries > 0)
                registry_leave(r, r->entries[0]);
        free(r->entries);
        free(r);
}

struct registry_entry *registry_join(struct registry *r) {
        struct registry_entry *e = xcalloc(1, sizeof(*e));

        r->entries = xreallocarray(r->entries, r->n_entries + 1, sizeof(*r->entries));
        r->entries[r->n_entries++] = e;
        return e;
}

void registry_leave(struct registry *r, struct registry_entry *e) {
        if (!e)
                return;
        for (size_t i = 0; i < r->n_entries; i++)
                if (r->entries[i] == e) {
                        r->entries[i] = r->entries[--r->n_entries];
                        break;
                }
        free(e->cluster);
        free(e->abandoned_cluster);
        free(e);
}

void registry_connected(struct registry_entry *e, const char *cluster, struct session_id id) {
        free(e->cluster);
        e->cluster = xstrdup(cluster);
        e->id = id;
}

void registry_disconnected(struct registry_entry *e) {
        free(e->cluster);
        e->cluster = NULL;
        e->id = (struct session_id) {};
}

void registry_abandon(struct registry_entry *e) {
        if (!e->cluster || e->id.pid <= 0)
                return;
        free(e->abandoned_cluster);
        e->abandoned_cluster = TAKE_PTR(e->cluster);
        e->abandoned = e->id;
        e->id = (struct session_id) {};
}

struct session_id registry_abandoned(const struct registry_entry *e, const char **cluster) {
        *cluster = e->abandoned_cluster;
        return e->abandoned_cluster ? e->abandoned : (struct session_id) {};
}

void registry_abandoned_done(struct registry_entry *e) {
        free(e->abandoned_cluster);
        e->abandoned_cluster = NULL;
        e->abandoned = (struct session_id) {};
}

size_t registry_sessions(const struct registry *r, const char *cluster, struct session_id **ret) {
        struct session_id *own = xcalloc(2 * r->n_entries + 1, sizeof(*own));
        size_t n = 0;

        for (size_t i = 0; cluster && i < r->n_entries; i++) {
                const struct registry_entry *e = r->entries[i];
                if (e->cluster && e->id.pid > 0 && strcmp(e->cluster, cluster) == 0)
                        own[n++] = e->id;
                if (e->abandoned_cluster && e->abandoned.pid > 0 && strcmp(e->abandoned_cluster, cluster) == 0)
                        own[n++] = e->abandoned;
        }
        *ret = own;
        return n;
}
