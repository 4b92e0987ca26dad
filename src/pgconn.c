/* libpq connections: how pgsweeper opens one. */
#include <stdlib.h>
#include <string.h>

#include "pgconn.h"
#include "snapshot.h"

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

unsigned pg_connect_timeout_sec(const char *conninfo, unsigned fallback) {
        PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
        unsigned r = fallback;

        for (PQconninfoOption *o = opts; o && o->keyword; o++)
                if (strcmp(o->keyword, "connect_timeout") == 0 && o->val) {
                        int64_t v;
                        /* libpq's own rule: anything under 2 s means 2 s, 0 means none (ours then) */
                        if (parse_int64(o->val, &v) == 0 && v > 0)
                                r = v < 2 ? 2 : v > 3600 ? 3600 : (unsigned) v;
                }
        PQconninfoFree(opts);
        return r;
}

