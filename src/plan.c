/* Planning one server's polls; see plan.h. */
#include <stdlib.h>

#include "macro.h"
#include "plan.h"

#define USEC_PER_MSEC UINT64_C(1000)

int64_t plan_gap_ms(const struct server *srv, int64_t min_interval_ms) {
        int64_t gap = srv->interval_ms;

        for (size_t i = 0; i < srv->n_rules; i++) {
                const struct rule *r = &srv->rules[i];
                if (r->action == ACTION_LOG)
                        continue;
                for (enum limit_kind k = 0; k < _LIMIT_MAX; k++)
                        if (limit_is_duration(k) && r->limit_ms[k] > 0 && r->limit_ms[k] < gap)
                                gap = r->limit_ms[k];
        }
        return gap < min_interval_ms ? min_interval_ms : gap;
}

/* The bounds per kind for a poll whose next one comes at most lookahead_ms
 * later: a rule that cancels or terminates needs its sessions lookahead_ms
 * before they cross (their deadline is planned), a log-only rule only once
 * they have crossed, and an age (not a duration) once it is reached. */
static void request_bounds(const struct server *srv, int64_t lookahead_ms, struct snapshot_request *req) {
        for (enum limit_kind k = 0; k < _LIMIT_MAX; k++) {
                req->bound_ms[k] = -1;
                for (size_t i = 0; i < srv->n_rules; i++) {
                        const struct rule *r = &srv->rules[i];
                        int64_t b = r->limit_ms[k] - (r->action == ACTION_LOG || !limit_is_duration(k) ? 0 : lookahead_ms);
                        if (r->limit_ms[k] <= 0)
                                continue;
                        if (b < 0)
                                b = 0;
                        if (req->bound_ms[k] < 0 || b < req->bound_ms[k])
                                req->bound_ms[k] = b;
                }
        }
}

static void request_common(const struct config *c, const struct server *srv, struct snapshot_request *ret) {
        *ret = (struct snapshot_request) {
                .with_query = c->log_query || policy_needs_query(srv),
                .superusers = srv->terminate_superusers,
                .lock_waiters = policy_reads_locks(srv),
        };
        /* A cap counts per its per key, and per every key its filters
         * select by: the policy filters the counts, not the server. */
        for (size_t i = 0; i < srv->n_rules; i++) {
                const struct rule *r = &srv->rules[i];

                if (r->limit_ms[LIMIT_SESSIONS] <= 0)
                        continue;
                ret->group_by[r->per] = r->per != GROUP_ALL;
                ret->group_by[GROUP_USER] |= r->filter.users.given;
                ret->group_by[GROUP_DATABASE] |= r->filter.databases.given;
                ret->group_by[GROUP_APPLICATION] |= r->filter.applications.given;
                ret->group_by[GROUP_CLIENT_ADDRESS] |= r->filter.client_addresses.given;
        }
}

void plan_poll_request(const struct config *c, const struct server *srv, const int32_t *pids, size_t n_pids,
                       struct snapshot_request *ret) {
        request_common(c, srv, ret);
        request_bounds(srv, plan_gap_ms(srv, c->min_interval_ms), ret);
        ret->pids = xcalloc(n_pids + 1, sizeof(int32_t));
        for (size_t i = 0; i < n_pids; i++)
                ret->pids[ret->n_pids++] = pids[i];
}

void plan_explain_request(const struct config *c, const struct server *srv, struct snapshot_request *ret) {
        request_common(c, srv, ret);
        request_bounds(srv, 0, ret);
        ret->superusers = true;
        ret->every_session = true;
}

void plan_capture_request(struct snapshot_request *ret) {
        *ret = (struct snapshot_request) {
                .with_query = true, .superusers = true, .every_session = true, .lock_waiters = true, .idle_all = true,
        };
        for (enum limit_kind k = 0; k < _LIMIT_MAX; k++)
                ret->bound_ms[k] = -1;
        /* The horizon's holders, every one (a replay's rules may set
         * max_xmin_age); it wants no more sessions: every client backend is
         * wanted already (every_session). */
        ret->bound_ms[LIMIT_XMIN_AGE] = 0;
        for (enum group_key g = GROUP_USER; g < _GROUP_MAX; g++)
                ret->group_by[g] = true;
}

bool plan_wants_graph(const struct server *srv, const struct snapshot *snap) {
        return snap->n_lock_waiting > 0 && policy_reads_locks(srv);
}

const char *plan_snapshot_sql(const struct server *srv) {
        return policy_counts_groups(srv) ? pg_snapshot_groups_sql : pg_snapshot_sql;
}

const char *plan_reread(const struct server *srv, const struct snapshot *snap, int server_version,
                        struct snapshot_request *req) {
        bool graph = plan_wants_graph(srv, snap);

        if (policy_wants_idle(srv, snap, req) == 0 && !graph)
                return NULL;
        return graph ? pg_lock_graph_sql_for(server_version) : pg_snapshot_groups_sql;
}

uint64_t plan_next_poll(const struct config *c, const struct server *srv, const struct plan_cycle *p) {
        uint64_t at = p->poll_started + (uint64_t) plan_gap_ms(srv, c->min_interval_ms) * USEC_PER_MSEC;
        uint64_t earliest = p->poll_started + (uint64_t) c->min_interval_ms * USEC_PER_MSEC;

        if (p->next_deadline != INT64_MAX && p->snap_now != TS_NULL && p->next_deadline > p->snap_now &&
            p->snap_received + (uint64_t) (p->next_deadline - p->snap_now) < at)
                at = p->snap_received + (uint64_t) (p->next_deadline - p->snap_now);
        return at < earliest ? earliest : at;
}
