/* libpq plumbing: connection set-up, the snapshot statement and its result. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "pg.h"

/* Timestamps as int8 microseconds since the Unix epoch: exact (extract()
 * returns numeric since PG 14) and trivial to parse. now() is the server's
 * clock at the start of this statement; elapsed times never use ours. */
#define US(ts) "(extract(epoch FROM " ts ") * 1000000)::int8"

const char pg_snapshot_sql[] =
        "SELECT a.pid, a.backend_type = 'client backend', coalesce(r.rolsuper, false), a.state, "
        US("a.backend_start") ", " US("a.state_change") ", " US("a.query_start") ", " US("a.xact_start") ", "
        "a.usename, a.datname, a.application_name, "
        "CASE WHEN a.client_port = -1 THEN 'local' ELSE host(a.client_addr) END, "
        "CASE WHEN $1::bool THEN left(a.query, 1024) END, "
        US("now()") " "
        "FROM pg_stat_activity a LEFT JOIN pg_roles r ON r.oid = a.usesysid "
        "WHERE a.pid <> pg_backend_pid()";

enum {
        COL_PID, COL_CLIENT_BACKEND, COL_SUPERUSER, COL_STATE,
        COL_BACKEND_START, COL_STATE_CHANGE, COL_QUERY_START, COL_XACT_START,
        COL_USER, COL_DATABASE, COL_APPLICATION, COL_CLIENT_ADDR, COL_QUERY, COL_NOW,
        _COL_MAX,
};

PGconn *pg_connect_start(const char *conninfo) {
        /* Processed in order, later wins: our defaults come before the user's
         * conninfo (expanded from "dbname"), so the user can change them. */
        const char *const keys[] = { "dbname", "fallback_application_name", NULL };
        const char *const values[] = { conninfo, "pgsweeper", NULL };
        PGconn *conn = PQconnectStartParams(keys, values, 1);

        if (conn && PQstatus(conn) != CONNECTION_BAD)
                PQsetnonblocking(conn, 1);
        return conn;
}

int parse_int64(const char *s, int64_t *ret) {
        char *end;
        long long v;

        errno = 0;
        v = strtoll(s, &end, 10);
        if (errno || end == s || *end)
                return -EINVAL;
        *ret = v;
        return 0;
}

static int64_t ts_value(const PGresult *res, int row, int col) {
        int64_t v;
        if (PQgetisnull(res, row, col) || parse_int64(PQgetvalue(res, row, col), &v) < 0)
                return TS_NULL;
        return v;
}

int snapshot_from_result(const PGresult *res, struct snapshot *ret) {
        static const int string_cols[] = { COL_USER, COL_DATABASE, COL_APPLICATION, COL_CLIENT_ADDR, COL_QUERY };
        int n = PQntuples(res);
        size_t bytes = 0, off = 0;
        struct snapshot s = { .now = TS_NULL };

        *ret = (struct snapshot) {};
        if (PQresultStatus(res) != PGRES_TUPLES_OK || PQnfields(res) != _COL_MAX)
                return -EBADMSG;

        /* All strings of the snapshot live in one block owned by it. */
        for (int i = 0; i < n; i++)
                for (size_t c = 0; c < ELEMENTSOF(string_cols); c++)
                        bytes += (size_t) PQgetlength(res, i, string_cols[c]) + 1;
        s.strings = xmalloc(bytes + 1);
        s.rows = xcalloc(n > 0 ? (size_t) n : 1, sizeof(*s.rows));

        for (int i = 0; i < n; i++) {
                struct snapshot_row *row = &s.rows[s.n_rows];
                const char **dest[ELEMENTSOF(string_cols)] = {
                        &row->user, &row->database, &row->application, &row->client_addr, &row->query,
                };
                int64_t pid;

                if (PQgetisnull(res, i, COL_PID) || parse_int64(PQgetvalue(res, i, COL_PID), &pid) < 0 ||
                    pid <= 0 || pid > INT32_MAX)
                        continue;
                row->pid = (int32_t) pid;
                row->client_backend = !PQgetisnull(res, i, COL_CLIENT_BACKEND) &&
                                      PQgetvalue(res, i, COL_CLIENT_BACKEND)[0] == 't';
                row->superuser = PQgetvalue(res, i, COL_SUPERUSER)[0] != 'f';
                row->state = PQgetisnull(res, i, COL_STATE) ? STATE_UNKNOWN :
                                                              session_state_from_string(PQgetvalue(res, i, COL_STATE));
                row->backend_start = ts_value(res, i, COL_BACKEND_START);
                row->state_change = ts_value(res, i, COL_STATE_CHANGE);
                row->query_start = ts_value(res, i, COL_QUERY_START);
                row->xact_start = ts_value(res, i, COL_XACT_START);
                for (size_t c = 0; c < ELEMENTSOF(string_cols); c++) {
                        size_t len = (size_t) PQgetlength(res, i, string_cols[c]);
                        if (string_cols[c] == COL_QUERY && PQgetisnull(res, i, COL_QUERY)) {
                                *dest[c] = NULL;
                                continue;
                        }
                        memcpy(s.strings + off, PQgetvalue(res, i, string_cols[c]), len);
                        s.strings[off + len] = '\0';
                        *dest[c] = s.strings + off;
                        off += len + 1;
                }
                if (s.now == TS_NULL)
                        s.now = ts_value(res, i, COL_NOW);
                s.n_rows++;
        }
        *ret = s;
        return 0;
}

void pg_snapshot_params(bool with_query, const char *params[static 1]) {
        params[0] = with_query ? "t" : "f";
}
