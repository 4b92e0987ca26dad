/* Test tool: run pgsweeper's guarded action statement for one session with
 * values given on the command line, as if they came from a snapshot. Lets
 * tests drive the race between snapshot and action deterministically.
 *
 *   guarded-action CONNINFO LIMIT ACTION PID STATE BACKEND_START STATE_CHANGE QUERY_START XACT_START
 *
 * Timestamps are microseconds since the epoch ("null" for NULL); LIMIT is a
 * limit key (max_idle, ...), ACTION terminate or cancel. Prints the result. */
#include <stdio.h>
#include <string.h>

#include "enforce.h"
#include "macro.h"
#include "snapshot.h"
#include "sql.h"

static int64_t ts_arg(const char *s) {
        int64_t v;
        return strcmp(s, "null") == 0 || parse_int64(s, &v) < 0 ? TS_NULL : v;
}

int main(int argc, char **argv) {
        struct snapshot_row row = { .user = "", .database = "", .application = "", .client_addr = "" };
        struct rule rule = { .name = (char *) "test" };
        struct decision d = { .row = &row, .rule = &rule };
        struct judgement j = { .decisions = &d, .n_decisions = 1 };
        struct action_batch batch = {};
        enum result result;
        size_t next = 0;
        PGconn *conn;
        PGresult *res;
        int64_t pid;
        int code = 0;

        if (argc != 10) {
                fprintf(stderr, "usage: %s CONNINFO LIMIT ACTION PID STATE BACKEND_START STATE_CHANGE QUERY_START "
                                "XACT_START\n", argv[0]);
                return 2;
        }
        for (enum limit_kind k = 0; k < _LIMIT_MAX; k++)
                if (strcmp(argv[2], limit_kind_to_string(k)) == 0)
                        d.limit = k;
        d.action = strcmp(argv[3], "cancel") == 0 ? ACTION_CANCEL : ACTION_TERMINATE;
        rule.limit_ms[d.limit] = 1;
        if (parse_int64(argv[4], &pid) < 0)
                return 2;
        row.pid = (int32_t) pid;
        row.client_backend = true;
        row.state = session_state_parse(argv[5]);
        row.backend_start = ts_arg(argv[6]);
        row.state_change = ts_arg(argv[7]);
        row.query_start = ts_arg(argv[8]);
        row.xact_start = ts_arg(argv[9]);

        conn = PQconnectdb(argv[1]);
        if (PQstatus(conn) != CONNECTION_OK) {
                fprintf(stderr, "connect: %s", PQerrorMessage(conn));
                PQfinish(conn);
                return 1;
        }
        if (enforce_prepare(&j, &result) != 1 || enforce_next_batch(&j, &result, &next, &batch) != 1) {
                fprintf(stderr, "nothing to send\n");
                code = 1;
                goto out;
        }
        res = PQexecParams(conn, pg_action_sql, (int) ELEMENTSOF(batch.params), NULL,
                           (const char *const *) batch.params, NULL, NULL, 0);
        if (enforce_read_result(&batch, res, &result) < 0) {
                fprintf(stderr, "statement failed: %s", PQresultErrorMessage(res));
                code = 1;
        } else
                printf("%s\n", result_to_string(result));
        PQclear(res);
out:
        action_batch_free(&batch);
        PQfinish(conn);
        return code;
}
