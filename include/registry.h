/* pgsweeper's own backends, per cluster: each server's live connection and
 * the backend of a connection it gave up on (it may live on until TCP
 * notices). One registry is shared by the servers of a process as a peer:
 * each server writes its own entry and reads the list for its cluster, so
 * that no server ever judges another one's connection. */
#pragma once

#include <stddef.h>

#include "policy.h"

struct registry;
struct registry_entry;

struct registry *registry_new(void);
/* Every entry must have left first. */
void registry_free(struct registry *r);

struct registry_entry *registry_join(struct registry *r);
void registry_leave(struct registry *r, struct registry_entry *e);

/* The entry's connection is up on cluster (pg_identity.cluster), as id. */
void registry_connected(struct registry_entry *e, const char *cluster, struct session_id id);
/* The connection is closed (its backend is gone or abandoned). */
void registry_disconnected(struct registry_entry *e);
/* The connection is given up on while its backend may live on: it becomes
 * the abandoned one (replacing an earlier one), to be ended on purpose
 * after the next connect to the same cluster. No-op when not connected. */
void registry_abandon(struct registry_entry *e);
/* The abandoned backend, if any (pid 0: none); *cluster is where it runs. */
struct session_id registry_abandoned(const struct registry_entry *e, const char **cluster);
/* It was ended, or is known gone. */
void registry_abandoned_done(struct registry_entry *e);

/* Every backend of the registry's entries on cluster, newly allocated
 * (free()); returns how many. */
size_t registry_sessions(const struct registry *r, const char *cluster, struct session_id **ret);
