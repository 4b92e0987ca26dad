/* pgsweeper --explain: what the daemon would do to every session, and why,
 * and which prepared transactions and slots it would warn about. The
 * judgement is policy_judge()'s, verdicts and holders included; this file
 * only fetches the snapshot and renders the verdicts. */
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "capture.h"
#include "duration.h"
#include "escape.h"
#include "explain.h"
#include "log.h"
#include "macro.h"
#include "oneshot.h"
#include "pgconn.h"
#include "plan.h"
#include "snapshot.h"
#include "sql.h"

#define ELLIPSIS "\xe2\x80\xa6"     /* … */

/* One server's snapshot and its judgement: the verdicts point into both. */
struct explained {
        struct snapshot snap;
        struct judgement judgement;
        const struct server *server;    /* whose rules judged it; NULL: not judged */
};

static void explained_done(struct explained *e) {
        judgement_free(&e->judgement);
        snapshot_free(&e->snap);
}

/* The judgement, live or replayed: the daemon's policy_judge(), verdicts
 * included, with no memory of earlier polls (no escalation, no session
 * still exiting, no lock seen before). */
static void explain_judge(const struct config *c, const struct server *srv, bool dry_run, const struct session_id *own,
                          size_t n_own, const char *own_role, struct explained *e) {
        policy_judge(&(struct policy_input) {
                             .server = srv,
                             .dry_run = dry_run || c->dry_run,
                             .own = own,
                             .n_own = n_own,
                             .own_role = own_role,
                             .verdicts = true,
                     },
                     &e->snap, &e->judgement);
        e->server = srv;
}

/* Every judged server's verdicts, sorted and printed; the exit status. */
static int explain_report(const struct explained *ex, size_t n, const struct explain_options *o, bool failed,
                          FILE *out) {
        _cleanup_free_ struct explain_row *rows = NULL;
        _cleanup_free_ struct explain_holder_row *holders = NULL;
        size_t n_rows = 0, n_holders = 0;

        for (size_t i = 0; i < n; i++) {
                if (!ex[i].server)
                        continue;
                rows = xreallocarray(rows, n_rows + ex[i].snap.n_rows + 1, sizeof(*rows));
                for (size_t k = 0; k < ex[i].snap.n_rows; k++) {
                        const struct verdict *v = &ex[i].judgement.verdicts[k];
                        /* Only client backends are sessions to explain. */
                        if (v->kind == VERDICT_PROTECTED && v->reason == REASON_NOT_CLIENT)
                                continue;
                        rows[n_rows++] = (struct explain_row) { ex[i].server->name, v };
                }
                /* Prepared transactions and slots: judged when a rule of
                 * the server sets max_xmin_age (policy_judge()). */
                holders = xreallocarray(holders, n_holders + ex[i].judgement.n_holders + 1, sizeof(*holders));
                for (size_t k = 0; k < ex[i].judgement.n_holders; k++)
                        holders[n_holders++] = (struct explain_holder_row) { ex[i].server->name,
                                                                             &ex[i].judgement.holders[k] };
        }
        explain_sort(rows, n_rows);
        explain_sort_holders(holders, n_holders);
        if (o->json)
                explain_print_json(rows, n_rows, holders, n_holders, out);
        else
                explain_print_text(rows, n_rows, holders, n_holders, out);
        return fflush(out) == 0 && !ferror(out) && !failed ? 0 : 1;
}

/* ---- live ---- */

struct live {
        const struct explain_options *options;
        struct explained *ex;
};

/* Connect, say who we are there, take one snapshot of every client backend
 * and judge it. Only SELECTs are sent. Blocking, as a one-shot command may
 * be, but every wait is bounded: a server that stops answering fails alone. */
static void explain_server(const struct config *c, size_t i, void *arg) {
        const struct server *srv = &c->servers[i];
        struct live *l = arg;
        struct explained *e = &l->ex[i];
        struct snapshot_request req;
        struct pg_identity id;
        struct session_id self;
        PGconn *conn;
        int r;

        if (oneshot_connect(srv, &conn, &id) < 0)
                return;
        /* The daemon's own read: the same statements and parsing, the lock
         * graph included when a rule needs it. */
        plan_explain_request(c, srv, &req);
        r = snapshot_fetch(conn, srv, &req, PG_STATEMENT_WAIT_SEC * UINT64_C(1000000), &e->snap);
        snapshot_request_done(&req);
        if (r < 0)
                oneshot_wait_error(srv, "snapshot failed", r, conn);
        else {
                self = (struct session_id) { PQbackendPID(conn), id.backend_start };
                explain_judge(c, srv, l->options->dry_run, &self, 1, id.role, e);
        }
        pg_identity_done(&id);
        PQfinish(conn);
}

int explain_run(const struct config *c, const struct explain_options *o, FILE *out) {
        _cleanup_free_ bool *asked = oneshot_select(c, o->server);
        _cleanup_free_ struct explained *ex = NULL;
        bool failed = false;
        int status;

        if (!asked)
                return EXPLAIN_UNKNOWN_SERVER;
        ex = xcalloc(c->n_servers + 1, sizeof(*ex));
        oneshot_each(c, asked, explain_server, &(struct live) { .options = o, .ex = ex });
        for (size_t i = 0; i < c->n_servers; i++)
                failed = failed || (asked[i] && !ex[i].server);
        status = explain_report(ex, c->n_servers, o, failed, out);
        for (size_t i = 0; i < c->n_servers; i++)
                explained_done(&ex[i]);
        return status;
}

/* ---- replay ---- */

/* The configured server a captured one is judged by: --server's, or the
 * one of the same name. */
static const struct server *replay_server(const struct config *c, const struct capture *cap, size_t k,
                                          const char *server) {
        const char *name = server ? server : cap->servers[k].name;

        for (size_t i = 0; i < c->n_servers; i++)
                if (strcmp(c->servers[i].name, name) == 0)
                        return &c->servers[i];
        return NULL;
}

int explain_replay(const struct config *c, const struct explain_options *o, const char *path, FILE *out) {
        _cleanup_free_ struct explained *ex = NULL;
        _cleanup_free_ char *error = NULL;
        struct capture cap = {};
        size_t pick = SIZE_MAX;
        int status;

        if (capture_read(path, &cap, &error) < 0) {
                fprintf(stderr, "%s\n", error);
                return EXPLAIN_BAD_CAPTURE;
        }
        /* --server: its rules judge the captured server of that name, or
         * the capture's only one (another host's snapshot judged with these
         * rules). Without: each captured server by its own rules. */
        if (o->server) {
                for (size_t k = 0; k < cap.n_servers && pick == SIZE_MAX; k++)
                        if (strcmp(cap.servers[k].name, o->server) == 0)
                                pick = k;
                if (pick == SIZE_MAX && cap.n_servers == 1)
                        pick = 0;
        }
        for (size_t k = 0; k < cap.n_servers; k++) {
                _cleanup_free_ char *name = escape_string(o->server ? o->server : cap.servers[k].name),
                                    *file = escape_string(path), *config = escape_string(c->path);

                if (o->server && pick == SIZE_MAX) {
                        fprintf(stderr, "pgsweeper: --server \"%s\": %s holds %zu servers, none of that name\n", name,
                                file, cap.n_servers);
                        capture_free(&cap);
                        return EXPLAIN_UNKNOWN_SERVER;
                }
                if ((pick == SIZE_MAX || pick == k) && !replay_server(c, &cap, k, o->server)) {
                        if (o->server)
                                fprintf(stderr, "pgsweeper: --server \"%s\": no such server in %s\n", name, config);
                        else
                                fprintf(stderr, "pgsweeper: %s: server \"%s\" is not in %s (name the one whose rules "
                                        "judge it with --server)\n", file, name, config);
                        capture_free(&cap);
                        return EXPLAIN_UNKNOWN_SERVER;
                }
        }

        ex = xcalloc(cap.n_servers + 1, sizeof(*ex));
        for (size_t k = 0; k < cap.n_servers; k++) {
                if (pick != SIZE_MAX && pick != k)
                        continue;
                /* The capture's own connection is not in it; pgsweeper's
                 * other sessions are told by the role that took it. */
                ex[k].snap = cap.servers[k].snap;
                cap.servers[k].snap = (struct snapshot) {};
                explain_judge(c, replay_server(c, &cap, k, o->server), o->dry_run, NULL, 0,
                              cap.servers[k].current_user, &ex[k]);
        }
        status = explain_report(ex, cap.n_servers, o, false, out);
        for (size_t k = 0; k < cap.n_servers; k++)
                explained_done(&ex[k]);
        capture_free(&cap);
        return status;
}

/* ---- order ---- */

static int kind_rank(enum verdict_kind k) {
        static const int rank[_VERDICT_MAX] = {
                [VERDICT_OVER] = 0, [VERDICT_NEXT] = 1, [VERDICT_EXEMPT] = 2, [VERDICT_PROTECTED] = 3,
                [VERDICT_NONE] = 4,
        };
        return k < _VERDICT_MAX ? rank[k] : _VERDICT_MAX;
}

static int64_t overdue_ms(const struct verdict *v) {
        return v->elapsed_ms - (v->limit == LIMIT_SESSIONS ? v->rule->min_idle_ms : v->rule->limit_ms[v->limit]);
}

static int row_cmp(const void *a, const void *b) {
        const struct explain_row *x = a, *y = b;
        int c = kind_rank(x->v->kind) - kind_rank(y->v->kind);

        if (c != 0)
                return c;
        if (x->v->kind == VERDICT_OVER && overdue_ms(x->v) != overdue_ms(y->v))
                return overdue_ms(x->v) > overdue_ms(y->v) ? -1 : 1;
        if (x->v->kind == VERDICT_NEXT && x->v->remaining_ms != y->v->remaining_ms)
                return x->v->remaining_ms < y->v->remaining_ms ? -1 : 1;
        c = strcmp(x->server, y->server);
        if (c != 0)
                return c;
        return (x->v->row->pid > y->v->row->pid) - (x->v->row->pid < y->v->row->pid);
}

void explain_sort(struct explain_row *rows, size_t n) {
        if (n > 1)
                qsort(rows, n, sizeof(*rows), row_cmp);
}

static int holder_cmp(const void *a, const void *b) {
        const struct explain_holder_row *x = a, *y = b;
        const struct horizon_holder *hx = x->v->holder, *hy = y->v->holder;
        int c;

        if (x->v->over != y->v->over)
                return x->v->over ? -1 : 1;
        if (hx->xmin_age != hy->xmin_age)
                return hx->xmin_age > hy->xmin_age ? -1 : 1;
        c = strcmp(x->server, y->server);
        if (c != 0)
                return c;
        if (hx->kind != hy->kind)
                return hx->kind < hy->kind ? -1 : 1;
        return strcmp(hx->name, hy->name);
}

void explain_sort_holders(struct explain_holder_row *rows, size_t n) {
        if (n > 1)
                qsort(rows, n, sizeof(*rows), holder_cmp);
}

/* ---- text ---- */

/* Characters of escaped (hence valid UTF-8) text: bytes that do not continue a sequence. */
static size_t text_width(const char *s) {
        size_t n = 0;
        for (; *s; s++)
                n += ((unsigned char) *s & 0xc0) != 0x80;
        return n;
}

/* Bytes of the unit at s of escape_bytes() output: one escape or one character. */
static size_t unit_len(const char *s) {
        unsigned char c = (unsigned char) *s;

        if (c == '\\')
                return s[1] == 'x' ? 4 : s[1] == 'u' ? 6 : 2;
        return c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
}

char *explain_cell(const char *s, size_t width) {
        _cleanup_free_ char *esc = escape_string(s);
        size_t used = 0, off = 0, len = strlen(esc);
        char *out;

        if (text_width(esc) <= width || width == 0)
                return TAKE_PTR(esc);
        /* Keep whole units while one character is left for the ellipsis. */
        while (off < len) {
                size_t u = unit_len(esc + off), w = esc[off] == '\\' ? u : 1;
                if (used + w > width - 1)
                        break;
                used += w;
                off += u;
        }
        out = xmalloc(off + sizeof(ELLIPSIS));
        memcpy(out, esc, off);
        memcpy(out + off, ELLIPSIS, sizeof(ELLIPSIS));
        return out;
}

static const char *action_words(const struct verdict *v) {
        return v->dry_run ? v->action == ACTION_LOG ? "log (dry-run)" :
                            v->action == ACTION_CANCEL ? "cancel (dry-run)" : "terminate (dry-run)" :
                            action_to_string(v->action);
}

/* The VERDICT column: "over idle-sessions: max_idle 30m -> terminate". */
static char *verdict_text(const char *server, const struct verdict *v) {
        _cleanup_free_ char *rule = v->rule ? escape_string(v->rule->name) : NULL, *srv = escape_string(server),
                            *spared = v->exempt_rule ? escape_string(v->exempt_rule->name) : NULL;
        char limit[DURATION_FORMAT_MAX], left[DURATION_FORMAT_MAX], waiting[64] = "", phrase[128], pressure[136] = "",
                group[1024] = "";
        char *s = NULL;
        int r = -1;

        if (v->rule && v->rule->connections_above > 0 &&
            (v->kind == VERDICT_OVER || v->kind == VERDICT_NEXT || v->reason == REASON_BELOW_THRESHOLD))
                snprintf(pressure, sizeof(pressure), "%s%s", v->reason == REASON_BELOW_THRESHOLD ? "" : ", ",
                         log_pressure_phrase(v->rule, v->connections, v->connection_slots, phrase));
        switch (v->kind) {
        case VERDICT_OVER:
        case VERDICT_NEXT:
                if (v->limit == LIMIT_SESSIONS) {
                        /* "5 sessions of application web-1 > max_sessions 3" */
                        _cleanup_free_ char *value = escape_string(v->group_value ? v->group_value : "");
                        bool all = v->group_per == GROUP_ALL;

                        snprintf(limit, sizeof(limit), "%" PRId64, v->rule->limit_ms[LIMIT_SESSIONS]);
                        snprintf(group, sizeof(group), "%" PRId64 " sessions%s%s%s > ", v->sessions,
                                 all ? "" : " of ", log_group_phrase(v->group_per), all ? "" : value);
                } else if (!limit_is_duration(v->limit))
                        snprintf(limit, sizeof(limit), "%" PRId64, v->rule->limit_ms[v->limit]);
                else
                        duration_format(v->rule->limit_ms[v->limit], limit, sizeof(limit));
                duration_format(v->remaining_ms, left, sizeof(left));
                if (limit_is_chain(v->limit))
                        snprintf(waiting, sizeof(waiting), " (%zu waiting behind it)", v->blocked);
                r = asprintf(&s, "%s %s: %s%s %s%s%s%s%s -> %s%s%s%s%s", verdict_kind_to_string(v->kind), rule,
                             group, limit_kind_to_string(v->limit), limit, waiting,
                             v->kind == VERDICT_NEXT ? " in " : "", v->kind == VERDICT_NEXT ? left : "", pressure,
                             action_words(v), v->reason == REASON_ESCALATION ? " (escalation of a cancelled query)" : "",
                             v->capped ? ", waits for the next cycle (max_actions_per_cycle)" : "",
                             spared ? "; exempt from rule " : "", spared ? spared : "");
                break;
        case VERDICT_EXEMPT:
                r = v->reason == REASON_EXEMPT_GLOBAL ? asprintf(&s, "exempt: global exempt block") :
                    v->reason == REASON_EXEMPT_SERVER ? asprintf(&s, "exempt: exempt block of server %s", srv) :
                                                        asprintf(&s, "exempt: exempt block of rule %s", rule);
                break;
        case VERDICT_PROTECTED:
                r = asprintf(&s, "protected: %s",
                             v->reason == REASON_SUPERUSER ? "superuser (terminate_superusers is off)" :
                             v->reason == REASON_OWN_CONNECTION ? "own connection (this process)" :
                             v->reason == REASON_OWN_ROLE ? "own connection (a pgsweeper logged in as its role)" :
                             v->reason == REASON_DYING ? "terminated, still exiting" : "not a client backend");
                break;
        default:
                r = v->reason == REASON_NO_LIMIT && v->rule->limit_ms[LIMIT_SESSIONS] > 0 ?
                            asprintf(&s, "none: counted by rule %s (max_sessions %" PRId64 "), not a victim", rule,
                                     v->rule->limit_ms[LIMIT_SESSIONS]) :
                    v->reason == REASON_NO_LIMIT ?
                            asprintf(&s, "none: rule %s sets no limit for this state", rule) :
                    v->reason == REASON_BELOW_THRESHOLD ?
                            asprintf(&s, "none: rule %s is inactive, not %s", rule, pressure) :
                            asprintf(&s, "none: no rule matches");
        }
        return r < 0 ? xstrdup("") : s;
}

enum { COL_SERVER, COL_PID, COL_USER, COL_DATABASE, COL_APPLICATION, COL_CLIENT, COL_STATE, COL_ELAPSED, COL_VERDICT,
       _COLS };

/* A column of a table: its title, and the width its cells are cut to. */
struct column {
        const char *title;
        size_t max;                 /* 0: never cut */
};

static const struct column columns[_COLS] = {
        [COL_SERVER] = { "SERVER", 16 },
        [COL_PID] = { "PID", 0 },
        [COL_USER] = { "USER", 16 },
        [COL_DATABASE] = { "DATABASE", 16 },
        [COL_APPLICATION] = { "APPLICATION", 20 },
        [COL_CLIENT] = { "CLIENT", 39 },  /* a full IPv6 address */
        [COL_STATE] = { "STATE", 0 },
        [COL_ELAPSED] = { "ELAPSED", 0 },
        [COL_VERDICT] = { "VERDICT", 0 },
};

static void row_cells(const struct explain_row *row, char *cells[static _COLS]) {
        const struct snapshot_row *r = row->v->row;
        const char *state = session_state_to_string(r->state);
        char elapsed[DURATION_FORMAT_MAX] = "-";

        if (row->v->kind == VERDICT_OVER || row->v->kind == VERDICT_NEXT) {
                if (row->v->limit == LIMIT_SESSIONS)
                        duration_format(row->v->elapsed_ms, elapsed, sizeof(elapsed));   /* idle for */
                else if (!limit_is_duration(row->v->limit))
                        snprintf(elapsed, sizeof(elapsed), "%" PRId64, row->v->elapsed_ms);
                else
                        log_limit_comparison(row->v->elapsed_ms, row->v->rule->limit_ms[row->v->limit], elapsed);
        }
        cells[COL_SERVER] = explain_cell(row->server, columns[COL_SERVER].max);
        if (asprintf(&cells[COL_PID], "%" PRId32, r->pid) < 0)
                cells[COL_PID] = xstrdup("?");
        cells[COL_USER] = explain_cell(*r->user ? r->user : "-", columns[COL_USER].max);
        cells[COL_DATABASE] = explain_cell(*r->database ? r->database : "-", columns[COL_DATABASE].max);
        cells[COL_APPLICATION] = explain_cell(*r->application ? r->application : "-", columns[COL_APPLICATION].max);
        cells[COL_CLIENT] = explain_cell(*r->client_addr ? r->client_addr : "-", columns[COL_CLIENT].max);
        cells[COL_STATE] = xstrdup(*state ? state : "-");
        cells[COL_ELAPSED] = xstrdup(elapsed);
        cells[COL_VERDICT] = verdict_text(row->server, row->v);
}

static void print_line(char *const *cells, const size_t *width, size_t n_cols, FILE *out) {
        for (size_t c = 0; c < n_cols; c++) {
                fputs(cells[c], out);
                if (c + 1 < n_cols)
                        fprintf(out, "%*s", (int) (width[c] - text_width(cells[c]) + 2), "");
        }
        fputc('\n', out);
}

/* n rows of n_cols cells each (cells[i * n_cols + c], freed here) under
 * the columns' titles, every column as wide as its widest cell. */
static void print_table(const struct column *cols, char **cells, size_t n, size_t n_cols, FILE *out) {
        _cleanup_free_ size_t *width = xcalloc(n_cols, sizeof(*width));
        _cleanup_free_ char **titles = xcalloc(n_cols, sizeof(*titles));

        for (size_t c = 0; c < n_cols; c++) {
                titles[c] = (char *) cols[c].title;
                width[c] = strlen(titles[c]);
        }
        for (size_t i = 0; i < n; i++)
                for (size_t c = 0; c < n_cols; c++)
                        if (text_width(cells[i * n_cols + c]) > width[c])
                                width[c] = text_width(cells[i * n_cols + c]);
        print_line(titles, width, n_cols, out);
        for (size_t i = 0; i < n; i++) {
                print_line(cells + i * n_cols, width, n_cols, out);
                for (size_t c = 0; c < n_cols; c++)
                        free(cells[i * n_cols + c]);
        }
}

/* ---- holders: text ---- */

/* A holder's verdict and reason, in the text and the JSON alike: "warn"
 * (at or over the limit: what the daemon warns about) or "none". */
static const char *holder_verdict_name(const struct holder_verdict *v) {
        return v->over ? "warn" : "none";
}

static const char *holder_reason_name(const struct holder_verdict *v) {
        return v->over ? "horizon-holder" : "below-limit";
}

enum { HCOL_SERVER, HCOL_HOLDER, HCOL_NAME, HCOL_OWNER, HCOL_DATABASE, HCOL_AGE, HCOL_VERDICT, _HCOLS };

static const struct column holder_columns[_HCOLS] = {
        [HCOL_SERVER] = { "SERVER", 16 },
        [HCOL_HOLDER] = { "HOLDER", 0 },
        [HCOL_NAME] = { "NAME", 32 },   /* the whole name is in the release command */
        [HCOL_OWNER] = { "OWNER", 16 },
        [HCOL_DATABASE] = { "DATABASE", 16 },
        [HCOL_AGE] = { "AGE", 0 },
        [HCOL_VERDICT] = { "VERDICT", 0 },
};

/* The VERDICT column of a holder, before escaping:
 * "warn: holds xmin 1234 transactions old >= max_xmin_age 1000 (rule xmin);
 *  release: ROLLBACK PREPARED 'gid'; in database appdb", or "none: holds
 * xmin 20 transactions old < max_xmin_age 1000 (rule xmin)". */
static char *holder_verdict_text(const struct holder_verdict *v) {
        const struct horizon_holder *h = v->holder;
        _cleanup_free_ char *release = NULL, *tail = NULL;
        char *s = xasprintf("%s: holds xmin %" PRId64 " transactions old %s max_xmin_age %" PRId64 " (rule %s)",
                            holder_verdict_name(v), h->xmin_age, v->over ? ">=" : "<",
                            v->rule->limit_ms[LIMIT_XMIN_AGE], v->rule->name);

        if (!v->over)
                return s;
        release = log_holder_release(h);
        tail = h->kind == HOLDER_SLOT ? xasprintf("%s; release: %s once its consumer is gone for good", s, release) :
               *h->database ? xasprintf("%s; release: %s in database %s", s, release, h->database) :
                              xasprintf("%s; release: %s", s, release);
        free(s);
        return TAKE_PTR(tail);
}

static void holder_cells(const struct explain_holder_row *row, char *cells[static _HCOLS]) {
        const struct horizon_holder *h = row->v->holder;
        _cleanup_free_ char *verdict = holder_verdict_text(row->v), *kind = NULL;

        kind = h->kind == HOLDER_SLOT ? xasprintf("slot (%s, %s)", *h->slot_type ? h->slot_type : "-",
                                                  h->active ? "active" : "inactive") :
                                        xstrdup(holder_kind_to_string(h->kind));
        cells[HCOL_SERVER] = explain_cell(row->server, holder_columns[HCOL_SERVER].max);
        cells[HCOL_HOLDER] = explain_cell(kind, holder_columns[HCOL_HOLDER].max);
        cells[HCOL_NAME] = explain_cell(h->name, holder_columns[HCOL_NAME].max);
        cells[HCOL_OWNER] = explain_cell(*h->owner ? h->owner : "-", holder_columns[HCOL_OWNER].max);
        cells[HCOL_DATABASE] = explain_cell(*h->database ? h->database : "-", holder_columns[HCOL_DATABASE].max);
        cells[HCOL_AGE] = xasprintf("%" PRId64, h->xmin_age);
        cells[HCOL_VERDICT] = explain_cell(verdict, holder_columns[HCOL_VERDICT].max);
}

void explain_print_text(const struct explain_row *rows, size_t n, const struct explain_holder_row *holders,
                        size_t n_holders, FILE *out) {
        char **cells = xcalloc((n + 1) * _COLS, sizeof(*cells));

        for (size_t i = 0; i < n; i++)
                row_cells(&rows[i], cells + i * _COLS);
        print_table(columns, cells, n, _COLS, out);
        free(cells);
        if (n_holders == 0)
                return;
        fputc('\n', out);
        cells = xcalloc((n_holders + 1) * _HCOLS, sizeof(*cells));
        for (size_t i = 0; i < n_holders; i++)
                holder_cells(&holders[i], cells + i * _HCOLS);
        print_table(holder_columns, cells, n_holders, _HCOLS, out);
        free(cells);
}

/* ---- JSON ---- */

char *explain_json_string(const char *s) {
        return escape_json(s);
}

static void json_key_string(FILE *out, const char *key, const char *value, bool comma) {
        fprintf(out, "\"%s\": ", key);
        if (value) {
                _cleanup_free_ char *q = explain_json_string(value);
                fputs(q, out);
        } else
                fputs("null", out);
        if (comma)
                fputs(", ", out);
}

static void json_key_int(FILE *out, const char *key, bool present, int64_t value) {
        if (present)
                fprintf(out, "\"%s\": %" PRId64 ", ", key, value);
        else
                fprintf(out, "\"%s\": null, ", key);
}

void explain_print_json(const struct explain_row *rows, size_t n, const struct explain_holder_row *holders,
                        size_t n_holders, FILE *out) {
        fputs("[", out);
        for (size_t i = 0; i < n; i++) {
                const struct verdict *v = rows[i].v;
                const struct snapshot_row *r = v->row;
                const char *state = session_state_to_string(r->state);
                bool limited = v->kind == VERDICT_OVER || v->kind == VERDICT_NEXT;

                fputs(i ? ",\n {" : "\n {", out);
                json_key_string(out, "server", rows[i].server, true);
                fprintf(out, "\"pid\": %" PRId32 ", ", r->pid);
                json_key_string(out, "user", r->user, true);
                json_key_string(out, "database", r->database, true);
                json_key_string(out, "application", r->application, true);
                json_key_string(out, "client_addr", *r->client_addr ? r->client_addr : NULL, true);
                json_key_string(out, "state", *state ? state : NULL, true);
                json_key_string(out, "verdict", verdict_kind_to_string(v->kind), true);
                json_key_string(out, "rule", v->rule ? v->rule->name : NULL, true);
                json_key_string(out, "limit", limited ? limit_kind_to_string(v->limit) : NULL, true);
                json_key_int(out, "limit_ms", limited && v->limit != LIMIT_SESSIONS,
                             limited ? v->rule->limit_ms[v->limit] : 0);
                json_key_int(out, "elapsed_ms", limited, v->elapsed_ms);
                json_key_int(out, "remaining_ms", v->kind == VERDICT_NEXT, v->remaining_ms);
                json_key_string(out, "action", !limited ? NULL : v->dry_run ? "dry-run" : action_to_string(v->action),
                                true);
                json_key_string(out, "reason", verdict_reason_to_string(v->reason), true);
                if (limited && limit_is_chain(v->limit))
                        fprintf(out, "\"blocked\": %zu, ", v->blocked);
                else
                        fputs("\"blocked\": null, ", out);
                {
                        /* every object has every key: null where it does not apply */
                        bool capped = limited && v->limit == LIMIT_SESSIONS;
                        bool gated = v->rule && v->rule->connections_above > 0 && v->kind != VERDICT_EXEMPT;
                        _cleanup_free_ char *group = NULL;

                        if (capped && v->group_per != GROUP_ALL &&
                            asprintf(&group, "%s=%s", group_key_to_string(v->group_per),
                                     v->group_value ? v->group_value : "") < 0)
                                group = NULL;
                        json_key_string(out, "group", !capped ? NULL : group ? group : "all", true);
                        json_key_int(out, "sessions", capped, v->sessions);
                        json_key_int(out, "max_sessions", capped, capped ? v->rule->limit_ms[LIMIT_SESSIONS] : 0);
                        json_key_int(out, "connections", gated, v->connections);
                        json_key_int(out, "connection_slots", gated, v->connection_slots);
                }
                fputs("\"holder\": null, \"name\": null, \"release\": null, \"slot_type\": null, \"active\": null}",
                      out);
        }
        for (size_t i = 0; i < n_holders; i++) {
                const struct holder_verdict *v = holders[i].v;
                const struct horizon_holder *h = v->holder;
                _cleanup_free_ char *release = log_holder_release(h);
                bool slot = h->kind == HOLDER_SLOT;

                fputs(n + i ? ",\n {" : "\n {", out);
                json_key_string(out, "server", holders[i].server, true);
                fputs("\"pid\": null, ", out);
                json_key_string(out, "user", *h->owner ? h->owner : NULL, true);
                json_key_string(out, "database", *h->database ? h->database : NULL, true);
                fputs("\"application\": null, \"client_addr\": null, \"state\": null, ", out);
                json_key_string(out, "verdict", holder_verdict_name(v), true);
                json_key_string(out, "rule", v->rule->name, true);
                json_key_string(out, "limit", limit_kind_to_string(LIMIT_XMIN_AGE), true);
                json_key_int(out, "limit_ms", true, v->rule->limit_ms[LIMIT_XMIN_AGE]);
                json_key_int(out, "elapsed_ms", true, h->xmin_age);
                fputs("\"remaining_ms\": null, \"action\": null, ", out);
                json_key_string(out, "reason", holder_reason_name(v), true);
                fputs("\"blocked\": null, \"group\": null, \"sessions\": null, \"max_sessions\": null, "
                      "\"connections\": null, \"connection_slots\": null, ", out);
                json_key_string(out, "holder", holder_kind_to_string(h->kind), true);
                json_key_string(out, "name", h->name, true);
                json_key_string(out, "release", release, true);
                json_key_string(out, "slot_type", slot && *h->slot_type ? h->slot_type : NULL, true);
                fprintf(out, "\"active\": %s}", !slot ? "null" : h->active ? "true" : "false");
        }
        fputs(n + n_holders ? "\n]\n" : "]\n", out);
}
