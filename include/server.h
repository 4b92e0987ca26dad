/* One server: its connection's state machine, its timers, and what it
 * remembers from one cycle to the next. The manager owns the configurations
 * and the loop; a server never frees a configuration, and the manager never
 * reads a server's PGresult. */
#pragma once

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "config.h"
#include "enforce.h"
#include "manager.h"
#include "pgconn.h"
#include "plan.h"
#include "snapshot.h"
#include "sql.h"
#include "policy.h"

struct manager;
struct metrics;

enum phase {
        PHASE_DISCONNECTED,
        PHASE_CONNECTING,
        PHASE_SETUP,
        PHASE_READY,
        PHASE_POLLING,
        PHASE_ACTING,
        PHASE_BACKOFF,
};

/* What makes a decision "the same one as last poll": same session, same
 * crossing of the same rule. The rule is named: this outlives reloads. */
struct reported {
        int32_t pid;
        int64_t backend_start;
        int64_t since;
        char *rule;
};

struct server_state;
typedef void (*result_fn)(struct server_state *s, PGresult *res);

struct server_state {
        struct manager *manager;
        sd_event *event;
        /* The configuration this server runs under; a reload that comes while
         * a cycle is in flight parks the new one in next_* until the cycle
         * ends, so a cycle is judged, acted on and logged under one. */
        const struct config *config;
        const struct server *server;
        const struct config *next_config;
        const struct server *next_server;
        bool retiring;                  /* removed or changed by a reload: finish the action in flight, then go */
        bool stopping;                  /* SIGTERM: no new cycle */
        bool finished;                  /* retiring or stopping, and nothing in flight any more */

        enum phase phase;
        PGconn *conn;
        int fd;                         /* the socket io watches; libpq may change it while connecting */
        sd_event_source *io;
        sd_event_source *timer;         /* next poll, or next connect attempt */
        sd_event_source *timeout;       /* the phase we wait in takes too long */
        result_fn on_result;            /* who gets the result of the statement in flight */
        bool graph_prepared;            /* the lock graph statement, on this connection */
        PGresult *result;               /* last result of the statement in flight */

        /* Who we are on this server, read at connect. */
        int32_t backend_pid;
        struct pg_identity id;
        bool privileges_warned;
        /* Our backend of a connection we gave up on (a timeout, a failed
         * read): it may live on, idle, until TCP notices. Ended on purpose
         * after the next connect to the same cluster. */
        struct session_id abandoned;
        char *abandoned_cluster;

        bool ever_up;
        bool down;                      /* a failure was logged and nothing since */
        uint64_t down_since;
        uint64_t down_logged;
        uint64_t backoff_usec;
        bool fresh;                     /* first cycle on a new connection */
        bool cycle_done;                /* --once: this server finished its cycle */
        bool cycle_failed;

        /* Log-only and dry-run decisions repeat every poll while the session
         * stays over its limit: each is logged once, when first seen. */
        struct reported *reported;
        size_t n_reported;
        /* Queries cancelled under a rule with escalate_after, watched until due. */
        struct escalation *escalations;
        size_t n_escalations;
        /* Sessions terminated last cycle: still there at the next poll is worth a
         * warning, and they are not judged again that cycle (dying). */
        struct session_id *ended;
        size_t n_ended;
        struct session_id *dying;
        size_t n_dying;
        /* The server's role at the last poll that said it; ROLE_ANY: not seen
         * yet. Kept across reconnects, so a node that comes back in the other
         * role is one change. */
        enum server_role role;
        /* Roots of lock chains that may not be signalled, already warned about. */
        struct session_id *warned_roots;
        size_t n_warned_roots;
        /* Target roles a permission failure was already explained for. */
        char **denied_roles;
        size_t n_denied_roles;

        /* the cycle in flight */
        uint64_t poll_started;          /* CLOCK_MONOTONIC, read when the snapshot is sent */
        uint64_t poll_usec;             /* from sending the snapshot to the end of the judgement */
        uint64_t snap_received;         /* CLOCK_MONOTONIC, when its answer was read */
        struct snapshot snap;
        struct judgement judgement;
        struct action_batch batch;
        enum result *results;
};

struct server_state *server_new(struct manager *m, sd_event *e, const struct config *c, const struct server *srv);
void server_free(struct server_state *s);

/* A reload kept this server (same name and conninfo): run under the new
 * configuration from the end of the cycle in flight, or now. */
void server_reconfigure(struct server_state *s, const struct config *c, const struct server *srv);
/* A reload removed or changed this server: no new cycle; an action in flight
 * is waited for (and logged) first. finished says when it may be freed. */
void server_retire(struct server_state *s);
/* SIGTERM: the same, for every server. */
void server_stop(struct server_state *s);
/* Stop waiting for an action in flight: log each decision sent as unknown. */
void server_give_up_action(struct server_state *s, const char *why);
bool server_uses_config(const struct server_state *s, const struct config *c);
bool server_is_up(const struct server_state *s);

/* Provided by the manager. */
struct metrics *manager_metrics(struct manager *m);
const struct manager_options *manager_options(struct manager *m);
/* The cycle ended (failed: the server is down). */
void manager_cycle_done(struct manager *m, struct server_state *s, bool failed, bool eventful);
/* This process's backends on the cluster s is connected to. */
size_t manager_own_sessions(struct manager *m, const struct server_state *s, struct session_id **ret);
void manager_count_ended(struct manager *m, uint64_t n);
