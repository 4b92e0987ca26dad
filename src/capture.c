/* A capture (capture.h): its JSON (json.c) walked with a table of keys per
 * object into the daemon's own struct snapshot, built as
 * snapshot_from_result() builds one. Errors name the path to the value:
 * "[1].sessions[2].pid: expected ..., found ...". */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "capture.h"
#include "escape.h"
#include "json.h"
#include "macro.h"

#define CAPTURE_MAX_SERVERS 10000

enum kind { K_FORMAT, K_STRING, K_BOOL, K_INT, K_TIME, K_ROLE, K_HOLDER, K_ARRAY };

struct key {
        const char *name;
        enum kind kind;
        bool null;                      /* null allowed */
        int64_t min, max;               /* K_INT */
};

/* A member as read; a null one as the snapshot writes it: NULL, -1, TS_NULL. */
struct field {
        const struct json_value *v;
        const char *s;                  /* K_STRING */
        int64_t i;                      /* K_INT, K_TIME */
        bool b;                         /* K_BOOL; K_ROLE: standby; K_HOLDER: a slot */
};

enum { SRV_FORMAT, SRV_NAME, SRV_VERSION, SRV_NOW, SRV_ROLE, SRV_USER, SRV_CONNECTIONS, SRV_SLOTS, SRV_GROUPS,
       SRV_SESSIONS, SRV_HOLDERS, _SRV_MAX };
static const struct key server_keys[_SRV_MAX] = {
        [SRV_FORMAT] = { .name = "pgsweeper_capture", .kind = K_FORMAT },
        [SRV_NAME] = { .name = "server", .kind = K_STRING },
        [SRV_VERSION] = { .name = "server_version", .kind = K_STRING, .null = true },
        [SRV_NOW] = { .name = "now", .kind = K_TIME },
        [SRV_ROLE] = { .name = "role", .kind = K_ROLE },
        [SRV_USER] = { .name = "current_user", .kind = K_STRING, .null = true },
        [SRV_CONNECTIONS] = { .name = "connections", .kind = K_INT, .null = true, .min = 0, .max = INT32_MAX },
        [SRV_SLOTS] = { .name = "connection_slots", .kind = K_INT, .null = true, .min = 0, .max = INT32_MAX },
        [SRV_GROUPS] = { .name = "groups", .kind = K_ARRAY },
        [SRV_SESSIONS] = { .name = "sessions", .kind = K_ARRAY },
        [SRV_HOLDERS] = { .name = "holders", .kind = K_ARRAY },
};

/* The four names first, in the order of GROUP_USER..GROUP_CLIENT_ADDRESS. */
enum { G_USER, G_DATABASE, G_APPLICATION, G_CLIENT_ADDR, G_COUNT, _G_MAX };
static const struct key group_keys[_G_MAX] = {
        [G_USER] = { .name = "user", .kind = K_STRING, .null = true },
        [G_DATABASE] = { .name = "database", .kind = K_STRING, .null = true },
        [G_APPLICATION] = { .name = "application", .kind = K_STRING, .null = true },
        [G_CLIENT_ADDR] = { .name = "client_addr", .kind = K_STRING, .null = true },
        [G_COUNT] = { .name = "count", .kind = K_INT, .min = 1, .max = INT32_MAX },
};

enum { S_PID, S_BACKEND_TYPE, S_SUPERUSER, S_STATE, S_BACKEND_START, S_STATE_CHANGE, S_QUERY_START, S_XACT_START,
       S_WAIT_START, S_USER, S_DATABASE, S_APPLICATION, S_CLIENT_ADDR, S_WAIT_EVENT_TYPE, S_BLOCKING_PIDS,
       S_XMIN_AGE, S_QUERY, _S_MAX };
static const struct key session_keys[_S_MAX] = {
        [S_PID] = { .name = "pid", .kind = K_INT, .min = 1, .max = INT32_MAX },
        [S_BACKEND_TYPE] = { .name = "backend_type", .kind = K_STRING, .null = true },
        [S_SUPERUSER] = { .name = "superuser", .kind = K_BOOL },
        [S_STATE] = { .name = "state", .kind = K_STRING, .null = true },
        [S_BACKEND_START] = { .name = "backend_start", .kind = K_TIME, .null = true },
        [S_STATE_CHANGE] = { .name = "state_change", .kind = K_TIME, .null = true },
        [S_QUERY_START] = { .name = "query_start", .kind = K_TIME, .null = true },
        [S_XACT_START] = { .name = "xact_start", .kind = K_TIME, .null = true },
        [S_WAIT_START] = { .name = "wait_start", .kind = K_TIME, .null = true },
        [S_USER] = { .name = "user", .kind = K_STRING, .null = true },
        [S_DATABASE] = { .name = "database", .kind = K_STRING, .null = true },
        [S_APPLICATION] = { .name = "application", .kind = K_STRING, .null = true },
        [S_CLIENT_ADDR] = { .name = "client_addr", .kind = K_STRING, .null = true },
        [S_WAIT_EVENT_TYPE] = { .name = "wait_event_type", .kind = K_STRING, .null = true },
        [S_BLOCKING_PIDS] = { .name = "blocking_pids", .kind = K_ARRAY, .null = true },
        [S_XMIN_AGE] = { .name = "xmin_age", .kind = K_INT, .null = true, .min = 0, .max = INT32_MAX },
        [S_QUERY] = { .name = "query", .kind = K_STRING, .null = true },
};
static const struct key blocker_key = { .name = "blocking_pids", .kind = K_INT, .min = 0, .max = INT32_MAX };

/* The strings first, in the order of struct horizon_holder's. */
enum { H_NAME, H_OWNER, H_DATABASE, H_SLOT_TYPE, H_HOLDER, H_ACTIVE, H_PREPARED_AT, H_XMIN_AGE, _H_MAX };
static const struct key holder_keys[_H_MAX] = {
        [H_HOLDER] = { .name = "holder", .kind = K_HOLDER },
        [H_NAME] = { .name = "name", .kind = K_STRING },
        [H_OWNER] = { .name = "owner", .kind = K_STRING, .null = true },
        [H_DATABASE] = { .name = "database", .kind = K_STRING, .null = true },
        [H_SLOT_TYPE] = { .name = "slot_type", .kind = K_STRING, .null = true },
        [H_ACTIVE] = { .name = "active", .kind = K_BOOL, .null = true },
        [H_PREPARED_AT] = { .name = "prepared_at", .kind = K_TIME, .null = true },
        [H_XMIN_AGE] = { .name = "xmin_age", .kind = K_INT, .min = 0, .max = INT32_MAX },
};

/* "a.b", or "b" at the top; "a.b[i]" with an index */
static char *join(const char *path, const char *name, size_t i) {
        return i == SIZE_MAX ? xasprintf("%s%s%s", path, *path ? "." : "", name) :
                               xasprintf("%s%s%s[%zu]", path, *path ? "." : "", name, i);
}

static int fail(struct json_error *error, const struct json_value *at, const char *path, const char *fmt, ...)
        _printf_(4, 5);
static int fail(struct json_error *error, const struct json_value *at, const char *path, const char *fmt, ...) {
        _cleanup_free_ char *m = NULL;
        va_list ap;

        va_start(ap, fmt);
        m = xvasprintf(fmt, ap);
        va_end(ap);
        *error = (struct json_error) { at->line, at->column, *path ? xasprintf("%s: %s", path, m) : TAKE_PTR(m) };
        return -EINVAL;
}

static int fail_found(struct json_error *error, const struct json_value *v, const char *path, const char *expected) {
        _cleanup_free_ char *found = json_describe(v);
        return fail(error, v, path, "expected %s, found %s", expected, found);
}

static const struct json_value *member(const struct json_value *obj, const char *name) {
        for (size_t m = 0; m < obj->n; m++)
                if (strcmp(obj->items[2 * m].text, name) == 0)
                        return &obj->items[2 * m + 1];
        return NULL;
}

static bool digits(const char *s, size_t n, size_t *i, size_t k, unsigned *ret) {
        *ret = 0;
        for (size_t end = *i + k; *i < end; (*i)++) {
                if (*i >= n || s[*i] < '0' || s[*i] > '9')
                        return false;
                *ret = *ret * 10 + (unsigned) (s[*i] - '0');
        }
        return true;
}

static bool sep(const char *s, size_t n, size_t *i, const char *one_of) {
        if (*i >= n || !strchr(one_of, s[*i]))
                return false;
        (*i)++;
        return true;
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar
 * (H. Hinnant's days_from_civil): exact for every year, no time zone. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
        int64_t era;
        unsigned yoe, doy, doe;

        y -= m <= 2;
        era = (y >= 0 ? y : y - 399) / 400;
        yoe = (unsigned) (y - era * 400);
        doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
        doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        return era * 146097 + (int64_t) doe - 719468;
}

/* "YYYY-MM-DD(T| )HH:MM:SS[.F{1,6}](Z|(+|-)HH[:MM])" as microseconds since
 * the epoch. */
static bool parse_timestamp(const char *s, size_t n, int64_t *ret) {
        static const unsigned mdays[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
        unsigned y, mo, d, h, mi, sec, oh = 0, om = 0, digit;
        int64_t frac = 0, sign = 1;
        size_t i = 0;
        bool leap;

        if (!(digits(s, n, &i, 4, &y) && sep(s, n, &i, "-") && digits(s, n, &i, 2, &mo) && sep(s, n, &i, "-") &&
              digits(s, n, &i, 2, &d) && sep(s, n, &i, "T ") && digits(s, n, &i, 2, &h) && sep(s, n, &i, ":") &&
              digits(s, n, &i, 2, &mi) && sep(s, n, &i, ":") && digits(s, n, &i, 2, &sec)))
                return false;
        if (sep(s, n, &i, ".")) {
                size_t k = 0;

                for (; k < 6 && digits(s, n, &i, 1, &digit); k++)
                        frac = frac * 10 + digit;
                if (k == 0)
                        return false;
                for (; k < 6; k++)
                        frac *= 10;
        }
        if (!sep(s, n, &i, "Z")) {
                if (i >= n || (s[i] != '+' && s[i] != '-'))
                        return false;
                sign = s[i++] == '-' ? -1 : 1;
                if (!digits(s, n, &i, 2, &oh) || (sep(s, n, &i, ":") && !digits(s, n, &i, 2, &om)))
                        return false;
        }
        leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
        if (i != n || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || (mo == 2 && d == 29 && !leap) ||
            h > 23 || mi > 59 || sec > 59 || oh > 15 || om > 59)
                return false;
        *ret = ((days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec) - sign * (oh * 3600 + om * 60)) *
                       1000000 + frac;
        return true;
}

static char *expected(const struct key *k) {
        static const char *const what[] = {
                [K_STRING] = "a string", [K_BOOL] = "true or false", [K_ROLE] = "\"primary\" or \"standby\"",
                [K_HOLDER] = "\"prepared\" or \"slot\"",
                [K_TIME] = "a timestamp like \"2024-02-29 23:59:59.123456+02:00\"", [K_ARRAY] = "an array",
        };

        if (k->kind == K_INT)
                return xasprintf("an integer from %" PRId64 " to %" PRId64 "%s", k->min, k->max,
                                 k->null ? " or null" : "");
        return xasprintf("%s%s", what[k->kind], k->null ? " or null" : "");
}

/* v, the member k->name (index i unless SIZE_MAX) of the object at path */
static int read_field(const struct key *k, const struct json_value *v, const char *path, size_t i, struct field *f,
                      struct json_error *error) {
        _cleanup_free_ char *want = NULL, *at = NULL;
        bool ok = false;

        *f = (struct field) { .v = v, .i = k->kind == K_TIME ? TS_NULL : -1 };
        if (v->type == JSON_NULL && k->null)
                return 0;
        switch (k->kind) {
        case K_FORMAT:
                return 0;       /* read first: check_format() */
        case K_STRING:
                ok = v->type == JSON_STRING;
                f->s = v->text;
                break;
        case K_BOOL:
                ok = v->type == JSON_TRUE || v->type == JSON_FALSE;
                f->b = v->type == JSON_TRUE;
                break;
        case K_INT:
                ok = json_int64(v, &f->i) && f->i >= k->min && f->i <= k->max;
                break;
        case K_TIME:
                ok = v->type == JSON_STRING && parse_timestamp(v->text, v->n, &f->i);
                break;
        case K_ROLE:
                f->b = v->type == JSON_STRING && strcmp(v->text, "standby") == 0;
                ok = f->b || (v->type == JSON_STRING && strcmp(v->text, "primary") == 0);
                break;
        case K_HOLDER:
                f->b = v->type == JSON_STRING && strcmp(v->text, "slot") == 0;
                ok = f->b || (v->type == JSON_STRING && strcmp(v->text, "prepared") == 0);
                break;
        case K_ARRAY:
                ok = v->type == JSON_ARRAY;
                break;
        }
        if (ok)
                return 0;
        want = expected(k);
        at = join(path, k->name, i);
        return fail_found(error, v, at, want);
}

/* Every member known and well formed, every key present: f[] in table order. */
static int read_object(const struct json_value *obj, const char *path, const char *what, const struct key *keys,
                       size_t n_keys, struct field *f, struct json_error *error) {
        if (obj->type != JSON_OBJECT)
                return fail_found(error, obj, path, what);
        for (size_t i = 0; i < n_keys; i++)
                f[i] = (struct field) {};
        for (size_t m = 0; m < obj->n; m++) {
                const struct json_value *k = &obj->items[2 * m];
                size_t i = 0;
                int r;

                while (i < n_keys && strcmp(keys[i].name, k->text) != 0)
                        i++;
                if (i == n_keys) {
                        _cleanup_free_ char *name = json_describe(k);
                        return fail(error, k, path, "unknown key %s", name);
                }
                if ((r = read_field(&keys[i], k + 1, path, SIZE_MAX, &f[i], error)) < 0)
                        return r;
        }
        for (size_t i = 0; i < n_keys; i++)
                if (!f[i].v)
                        return fail(error, obj, path, "missing key \"%s\"", keys[i].name);
        return 0;
}

/* The version first: a later format's keys are not "unknown keys". */
static int check_format(const struct json_value *obj, const char *path, struct json_error *error) {
        const struct json_value *v = obj->type == JSON_OBJECT ? member(obj, "pgsweeper_capture") : NULL;
        _cleanup_free_ char *found = NULL;
        int64_t version;

        if (obj->type == JSON_OBJECT && !v)
                return fail(error, obj, path, "missing key \"pgsweeper_capture\": not a capture");
        if (!v || (json_int64(v, &version) && version == CAPTURE_FORMAT))
                return 0;
        if (v->type != JSON_NUMBER)
                return fail_found(error, v, path, "the capture format's version, 1");
        found = json_describe(v);
        return fail(error, v, path, "capture format %s is not supported (this pgsweeper reads %d)", found,
                    CAPTURE_FORMAT);
}

/* Values sorted by (value, place): the first repeat in the file, and the
 * place of the one it repeats. */
struct seen {
        int64_t num;
        const char *name;
        size_t i;
};

static int seen_order(const void *a, const void *b) {
        const struct seen *x = a, *y = b;
        int c = x->name ? strcmp(x->name, y->name) : (x->num > y->num) - (x->num < y->num);

        return c ? c : (x->i > y->i) - (x->i < y->i);
}

static bool first_repeat(struct seen *v, size_t n, size_t *dup, size_t *orig) {
        *dup = SIZE_MAX;
        qsort(v, n, sizeof(*v), seen_order);
        for (size_t j = 1; j < n; j++)
                if (v[j].num == v[j - 1].num && (!v[j].name || strcmp(v[j].name, v[j - 1].name) == 0) &&
                    v[j].i < *dup) {
                        *dup = v[j].i;
                        *orig = v[j - 1].i;
                }
        return *dup != SIZE_MAX;
}

static int read_groups(const struct json_value *a, const char *path, struct snapshot *snap,
                       struct json_error *error) {
        snap->groups = xcalloc(a->n, sizeof(*snap->groups));
        for (size_t i = 0; i < a->n; i++) {
                struct snapshot_group *g = &snap->groups[i];
                struct field f[_G_MAX];
                _cleanup_free_ char *p = join(path, "groups", i);
                int r;

                if ((r = read_object(&a->items[i], p, "an object (a group)", group_keys, _G_MAX, f, error)) < 0)
                        return r;
                for (size_t k = G_USER; k <= G_CLIENT_ADDR; k++)
                        g->key[GROUP_USER + k - G_USER] = f[k].s ? f[k].s : "";
                g->count = f[G_COUNT].i;
                snap->n_groups++;
        }
        return 0;
}

static int read_sessions(const struct json_value *a, const char *path, struct snapshot *snap,
                         struct json_error *error) {
        _cleanup_free_ struct seen *pids = xcalloc(a->n, sizeof(struct seen));
        size_t n_pool = 0, dup, orig;

        /* the blockers' pool at its size first: rows point into it */
        for (size_t i = 0; i < a->n; i++) {
                const struct json_value *b = a->items[i].type == JSON_OBJECT ?
                                                     member(&a->items[i], "blocking_pids") : NULL;
                n_pool += b && b->type == JSON_ARRAY ? b->n : 0;
        }
        snap->blocker_pool = n_pool ? xcalloc(n_pool, sizeof(int32_t)) : NULL;
        snap->rows = xcalloc(a->n, sizeof(*snap->rows));
        n_pool = 0;
        for (size_t i = 0; i < a->n; i++) {
                struct snapshot_row *row = &snap->rows[i];
                const char **names[] = { &row->user, &row->database, &row->application, &row->client_addr };
                struct field f[_S_MAX], b;
                _cleanup_free_ char *p = join(path, "sessions", i);
                int r;

                if ((r = read_object(&a->items[i], p, "an object (a session)", session_keys, _S_MAX, f, error)) < 0)
                        return r;
                for (size_t k = 0; f[S_BLOCKING_PIDS].v->type == JSON_ARRAY && k < f[S_BLOCKING_PIDS].v->n; k++) {
                        if ((r = read_field(&blocker_key, &f[S_BLOCKING_PIDS].v->items[k], p, k, &b, error)) < 0)
                                return r;
                        snap->blocker_pool[n_pool + row->n_blockers++] = (int32_t) b.i;
                }
                row->blockers = row->n_blockers ? snap->blocker_pool + n_pool : NULL;
                n_pool += row->n_blockers;
                row->pid = (int32_t) f[S_PID].i;
                row->client_backend = f[S_BACKEND_TYPE].s && strcmp(f[S_BACKEND_TYPE].s, "client backend") == 0;
                row->superuser = f[S_SUPERUSER].b;
                row->state = session_state_parse(f[S_STATE].s);
                row->backend_start = f[S_BACKEND_START].i;
                row->state_change = f[S_STATE_CHANGE].i;
                row->query_start = f[S_QUERY_START].i;
                row->xact_start = f[S_XACT_START].i;
                row->wait_start = f[S_WAIT_START].i;
                row->xmin_age = f[S_XMIN_AGE].i;
                row->lock_waiting = f[S_WAIT_EVENT_TYPE].s && strcmp(f[S_WAIT_EVENT_TYPE].s, "Lock") == 0;
                snap->n_lock_waiting += row->lock_waiting;
                for (size_t k = 0; k < ELEMENTSOF(names); k++)
                        *names[k] = f[S_USER + k].s ? f[S_USER + k].s : "";
                row->query = f[S_QUERY].s;
                pids[i] = (struct seen) { .num = row->pid, .i = i };
                snap->n_rows++;
        }
        if (first_repeat(pids, a->n, &dup, &orig)) {
                _cleanup_free_ char *q = join(path, "sessions", dup), *p = join(q, "pid", SIZE_MAX),
                                    *at = join(path, "sessions", orig);
                return fail(error, member(&a->items[dup], "pid"), p, "duplicate pid %" PRId32 ", first at %s",
                            snap->rows[dup].pid, at);
        }
        return 0;
}

/* A slot has a type and says whether it is active; a prepared transaction
 * neither: null where the live read has nothing. */
static int check_holder_shape(const struct field *f, const char *path, struct json_error *error) {
        static const size_t keys[] = { H_SLOT_TYPE, H_ACTIVE };
        bool slot = f[H_HOLDER].b;

        for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
                size_t k = keys[i];
                _cleanup_free_ char *p = NULL;

                if ((f[k].v->type == JSON_NULL) != slot)
                        continue;
                p = join(path, holder_keys[k].name, SIZE_MAX);
                return fail_found(error, f[k].v, p, !slot ? "null (a prepared transaction)" :
                                                    k == H_ACTIVE ? "true or false (a slot)" : "a string (a slot)");
        }
        return 0;
}

static int read_holders(const struct json_value *a, const char *path, struct snapshot *snap,
                        struct json_error *error) {
        /* per kind: a gid, or a slot's name, is unique on a server */
        _cleanup_free_ struct seen *gids = xcalloc(a->n + 1, sizeof(struct seen)),
                                   *slots = xcalloc(a->n + 1, sizeof(struct seen));
        size_t n_gids = 0, n_slots = 0, dup, orig;

        snap->holders = xcalloc(a->n + 1, sizeof(*snap->holders));
        for (size_t i = 0; i < a->n; i++) {
                struct horizon_holder *h = &snap->holders[i];
                const char **strings[] = { &h->name, &h->owner, &h->database, &h->slot_type };
                struct field f[_H_MAX];
                _cleanup_free_ char *p = join(path, "holders", i);
                int r;

                if ((r = read_object(&a->items[i], p, "an object (a prepared transaction or a slot)", holder_keys,
                                     _H_MAX, f, error)) < 0 ||
                    (r = check_holder_shape(f, p, error)) < 0)
                        return r;
                h->kind = f[H_HOLDER].b ? HOLDER_SLOT : HOLDER_PREPARED;
                for (size_t k = 0; k < ELEMENTSOF(strings); k++)
                        *strings[k] = f[H_NAME + k].s ? f[H_NAME + k].s : "";
                h->active = f[H_ACTIVE].b;
                h->prepared_at = f[H_PREPARED_AT].i;
                h->xmin_age = f[H_XMIN_AGE].i;
                if (h->xmin_age > snap->horizon_age[h->kind])
                        snap->horizon_age[h->kind] = h->xmin_age;
                if (h->kind == HOLDER_SLOT)
                        slots[n_slots++] = (struct seen) { .name = h->name, .i = i };
                else
                        gids[n_gids++] = (struct seen) { .name = h->name, .i = i };
                snap->n_holders++;
        }
        for (size_t k = 0; k < 2; k++)
                if (k == 0 ? first_repeat(gids, n_gids, &dup, &orig) : first_repeat(slots, n_slots, &dup, &orig)) {
                        _cleanup_free_ char *q = join(path, "holders", dup), *p = join(q, "name", SIZE_MAX),
                                            *at = join(path, "holders", orig),
                                            *name = escape_string(snap->holders[dup].name);
                        return fail(error, member(&a->items[dup], "name"), p, "duplicate %s \"%s\", first at %s",
                                    k == 0 ? "gid" : "slot", name, at);
                }
        return 0;
}

/* Until here the rows', groups' and holders' strings point into the JSON:
 * now into one block of the snapshot's own, as snapshot_free() expects. */
static void own_strings(struct snapshot *snap) {
        _cleanup_free_ const char ***at = xcalloc(5 * snap->n_rows + 4 * snap->n_groups + 4 * snap->n_holders + 1,
                                                  sizeof(*at));
        size_t n = 0, bytes = 1;
        char *o;

        for (size_t i = 0; i < snap->n_rows; i++) {
                struct snapshot_row *r = &snap->rows[i];
                const char **row_at[] = { &r->user, &r->database, &r->application, &r->client_addr, &r->query };
                for (size_t k = 0; k < ELEMENTSOF(row_at); k++)
                        if (*row_at[k])
                                at[n++] = row_at[k];
        }
        for (size_t i = 0; i < snap->n_groups; i++)
                for (enum group_key k = GROUP_USER; k <= GROUP_CLIENT_ADDRESS; k++)
                        at[n++] = &snap->groups[i].key[k];
        for (size_t i = 0; i < snap->n_holders; i++) {
                struct horizon_holder *h = &snap->holders[i];
                const char **holder_at[] = { &h->name, &h->owner, &h->database, &h->slot_type };
                for (size_t k = 0; k < ELEMENTSOF(holder_at); k++)
                        at[n++] = holder_at[k];
        }
        for (size_t i = 0; i < n; i++)
                bytes += strlen(*at[i]) + 1;
        o = snap->strings = xmalloc(bytes);
        for (size_t i = 0; i < n; i++) {
                size_t len = strlen(*at[i]) + 1;
                *at[i] = memcpy(o, *at[i], len);
                o += len;
        }
}

static void server_done(struct capture_server *s) {
        free(s->name);
        free(s->current_user);
        free(s->server_version);
        snapshot_free(&s->snap);
        *s = (struct capture_server) {};
}

static int read_server(const struct json_value *obj, const char *path, struct capture_server *ret,
                       struct json_error *error) {
        _cleanup_(server_done) struct capture_server s = {};
        struct field f[_SRV_MAX];
        int64_t sum = 0;
        int r;

        if ((r = check_format(obj, path, error)) < 0 ||
            (r = read_object(obj, path, "an object (a server)", server_keys, _SRV_MAX, f, error)) < 0)
                return r;
        s.name = xstrdup(f[SRV_NAME].s);
        s.server_version = f[SRV_VERSION].s ? xstrdup(f[SRV_VERSION].s) : NULL;
        s.current_user = f[SRV_USER].s ? xstrdup(f[SRV_USER].s) : NULL;
        s.snap = (struct snapshot) {
                .now = f[SRV_NOW].i,
                .connections = f[SRV_CONNECTIONS].i,
                .connection_slots = f[SRV_SLOTS].i,
                .idle_all = true,
                .role_known = true,
                .in_recovery = f[SRV_ROLE].b,
                .has_graph = true,
                .has_horizon = true,
        };
        for (enum holder_kind k = 0; k < _HOLDER_MAX; k++)
                s.snap.horizon_age[k] = -1;
        if ((r = read_groups(f[SRV_GROUPS].v, path, &s.snap, error)) < 0)
                return r;
        for (size_t i = 0; i < s.snap.n_groups; i++)
                sum += s.snap.groups[i].count;
        if (s.snap.connections >= 0 && sum != s.snap.connections) {
                _cleanup_free_ char *p = join(path, "connections", SIZE_MAX);
                return fail(error, f[SRV_CONNECTIONS].v, p, "expected %" PRId64 ", the sum of the groups' counts, "
                            "found %" PRId64, sum, s.snap.connections);
        }
        if (s.snap.connections < 0 && s.snap.n_groups > 0) {
                _cleanup_free_ char *p = join(path, "groups", SIZE_MAX);
                return fail(error, f[SRV_GROUPS].v, p, "expected no groups when connections is null, found %zu",
                            s.snap.n_groups);
        }
        if ((r = read_sessions(f[SRV_SESSIONS].v, path, &s.snap, error)) < 0 ||
            (r = read_holders(f[SRV_HOLDERS].v, path, &s.snap, error)) < 0)
                return r;
        /* the oldest backend xmin: the live read's covers every backend,
         * a capture's its sessions */
        for (size_t i = 0; i < s.snap.n_rows; i++)
                if (s.snap.rows[i].xmin_age > s.snap.horizon_age[HOLDER_SESSION])
                        s.snap.horizon_age[HOLDER_SESSION] = s.snap.rows[i].xmin_age;
        own_strings(&s.snap);
        *ret = s;
        s = (struct capture_server) {};
        return 0;
}

static int parse(const char *buf, size_t len, struct capture *ret, struct json_error *error) {
        _cleanup_(json_doc_free) struct json_doc doc = {};
        _cleanup_(capture_free) struct capture c = {};
        _cleanup_free_ struct seen *names = NULL;
        const struct json_value *root;
        size_t n, dup, orig;
        int r;

        if (len > CAPTURE_MAX_BYTES) {
                *error = (struct json_error) { 1, 1, xasprintf("larger than %d bytes (256 MiB), the most a capture "
                                                               "may have", CAPTURE_MAX_BYTES) };
                return -EINVAL;
        }
        if ((r = json_parse(buf, len, &doc, error)) < 0)
                return r;
        root = doc.root;
        if (root->type != JSON_OBJECT && root->type != JSON_ARRAY)
                return fail_found(error, root, "", "an object (a server) or an array of them");
        n = root->type == JSON_ARRAY ? root->n : 1;
        if (n == 0)
                return fail(error, root, "", "expected at least one server, found an empty array");
        if (n > CAPTURE_MAX_SERVERS)
                return fail(error, root, "", "expected at most %d servers, found %zu", CAPTURE_MAX_SERVERS, n);
        c.servers = xcalloc(n, sizeof(*c.servers));
        names = xcalloc(n, sizeof(*names));
        for (size_t i = 0; i < n; i++) {
                _cleanup_free_ char *p = root->type == JSON_ARRAY ? xasprintf("[%zu]", i) : xstrdup("");

                if ((r = read_server(root->type == JSON_ARRAY ? &root->items[i] : root, p, &c.servers[i], error)) < 0)
                        return r;
                names[i] = (struct seen) { .name = c.servers[i].name, .i = i };
                c.n_servers++;
        }
        if (first_repeat(names, n, &dup, &orig)) {
                _cleanup_free_ char *name = escape_string(c.servers[dup].name), *p = xasprintf("[%zu].server", dup);
                return fail(error, member(&root->items[dup], "server"), p, "duplicate server \"%s\", first at [%zu]",
                            name, orig);
        }
        *ret = c;
        c = (struct capture) {};
        return 0;
}

int capture_parse(const char *buf, size_t len, struct capture *ret, char **error) {
        struct json_error e = {};
        int r;

        *ret = (struct capture) {};
        *error = NULL;
        r = parse(buf, len, ret, &e);
        if (r < 0) {
                *error = xasprintf("%u:%u: %s", e.line, e.column, e.message);
                free(e.message);
        }
        return r;
}

int capture_read(const char *path, struct capture *ret, char **error) {
        _cleanup_free_ char *epath = escape_string(path), *buf = NULL;
        _cleanup_close_ int fd = -1;
        struct json_error e = {};
        struct stat st;
        size_t len = 0;
        int r;

        *ret = (struct capture) {};
        *error = NULL;
        /* O_NONBLOCK: opening a FIFO without a writer would wait forever */
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0 || fstat(fd, &st) < 0) {
                r = -errno;
                *error = xasprintf("%s: error: cannot %s: %s", epath, fd < 0 ? "open" : "stat", strerror(-r));
                return r;
        }
        if (!S_ISREG(st.st_mode))
                e.message = xasprintf("is %s; a capture must be a regular file", file_type(st.st_mode));
        /* st_size first: a file over the cap costs no read (/proc says 0: read_bounded() still stops) */
        else if (st.st_size <= CAPTURE_MAX_BYTES && (r = read_bounded(fd, CAPTURE_MAX_BYTES, &buf, &len)) < 0) {
                *error = xasprintf("%s: error: cannot read: %s", epath, strerror(-r));
                return r;
        } else if (st.st_size > CAPTURE_MAX_BYTES || len > CAPTURE_MAX_BYTES)
                e.message = xasprintf("the file is larger than %d bytes (256 MiB), the most a capture may have",
                                      CAPTURE_MAX_BYTES);
        if (e.message) {
                *error = xasprintf("%s: error: %s", epath, e.message);
                free(e.message);
                return -EINVAL;
        }
        r = parse(buf, len, ret, &e);
        if (r < 0) {
                *error = xasprintf("%s:%u:%u: error: %s", epath, e.line, e.column, e.message);
                free(e.message);
        }
        return r;
}

void capture_free(struct capture *c) {
        for (size_t i = 0; i < c->n_servers; i++)
                server_done(&c->servers[i]);
        free(c->servers);
        *c = (struct capture) {};
}
