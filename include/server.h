/* One server: its phases, its timers, and what it remembers from one cycle
 * to the next. It is given its configuration and its peers (metrics, the
 * registry of our own backends) by its owner, and hands each finished cycle
 * up as one report value through one callback; it never frees a
 * configuration, and its owner never sees its state (opaque). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "config.h"
#include "metrics.h"
#include "registry.h"

struct server_state;

/* One finished cycle: a poll judged (and acted on and logged), or a failure. */
struct server_report {
        bool failed;                /* the cycle failed: the server is down */
        bool eventful;              /* something was logged or changed: write the metrics now */
        bool finished;              /* retiring or stopping, and nothing in flight any more */
        uint64_t poll_usec;         /* from sending the snapshot to the end of the judgement */
        uint64_t ended;             /* sessions terminated or cancelled */
};

typedef void (*server_report_fn)(struct server_state *s, const struct server_report *r, void *userdata);

/* What the owner gives a server, by value. */
struct server_settings {
        bool dry_run;               /* --dry-run */
        bool once;                  /* --once: one cycle, no retry */
        struct metrics *metrics;
        struct registry *registry;
        server_report_fn report;
        void *userdata;
};

/* What the owner may know of a server. */
struct server_status {
        const char *name;
        const struct server *server;    /* the configuration it runs under */
        bool up;                    /* connected and not failing since */
        bool down;                  /* not up, and it was once or a failure was logged */
        bool unprivileged;          /* lacks pg_monitor or pg_signal_backend (warned) */
        bool cycle_done;            /* a cycle ended since it started (--once) */
        bool cycle_failed;          /* the last cycle failed */
        bool finished;
};

struct server_state *server_new(sd_event *e, const struct server_settings *settings, const struct config *c,
                                const struct server *srv);
void server_free(struct server_state *s);
struct server_status server_status(const struct server_state *s);

/* A reload kept this server (same name and conninfo): run under the new
 * configuration from the end of the cycle in flight, or now. */
void server_reconfigure(struct server_state *s, const struct config *c, const struct server *srv);
/* A reload removed or changed this server: no new cycle; an action in flight
 * is waited for (and logged) first. The status says when it is finished. */
void server_retire(struct server_state *s);
/* SIGTERM: the same, for every server. */
void server_stop(struct server_state *s);
/* Stop waiting for an action in flight: log each decision sent as unknown. */
void server_give_up_action(struct server_state *s, const char *why);
bool server_uses_config(const struct server_state *s, const struct config *c);
