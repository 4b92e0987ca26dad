/* Writes capture.sql: pgsweeper's own capture statement (src/sql.c) with
 * its own parameters, for psql on a host without pgsweeper. The file is in
 * the tree (and installed); the test capture-sql-current says when it is
 * behind the statement: regenerate it with
 *   build/sql/gen-capture-sql > sql/capture.sql */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "plan.h"
#include "snapshot.h"
#include "sql.h"

/* A parameter as an SQL literal: the values are pgsweeper's own (flags,
 * numbers, arrays of numbers), quoted all the same. */
static void literal(const char *v) {
        if (!v) {
                fputs("NULL", stdout);
                return;
        }
        putchar('\'');
        for (; *v; v++) {
                if (*v == '\'')
                        putchar('\'');
                putchar(*v);
        }
        putchar('\'');
}

/* The statement, readable: a line break before each clause and where a
 * line grows past WIDTH, only at a space outside a quoted literal, so the
 * text means what the one-line constant means. */
#define WIDTH 100
static void statement(const char *sql) {
        static const char *const clauses[] = {
                " WITH ", " SELECT ", " FROM ", " LEFT JOIN ", " CROSS JOIN ", " WHERE ", " GROUP BY ", " UNION ",
                " ORDER BY ",
        };
        bool quoted = false;
        size_t col = 0;

        for (const char *c = sql; *c; c++) {
                bool brk = false;

                if (*c == '\'')
                        quoted = !quoted;
                if (*c == ' ' && !quoted) {
                        while (c[1] == ' ')
                                c++;
                        for (size_t i = 0; i < sizeof(clauses) / sizeof(*clauses) && !brk; i++)
                                brk = strncmp(c, clauses[i] + 1, strlen(clauses[i]) - 1) == 0 && col > 40;
                        brk = brk || col >= WIDTH;
                        if (brk) {
                                fputs("\n  ", stdout);
                                col = 2;
                                continue;
                        }
                }
                putchar(*c);
                col++;
        }
}

int main(void) {
        struct snapshot_request req;
        struct snapshot_params params;

        plan_capture_request(&req);
        snapshot_params_build(&req, &params);
        fputs("-- pgsweeper capture: every session the rules read, as one JSON object\n"
              "-- (pgsweeper(8), REPLAY), for a host where pgsweeper is not installed:\n"
              "--\n"
              "--   psql -XAt -v server=NAME -f capture.sql \"CONNINFO\" > capture.json\n"
              "--\n"
              "-- NAME is the server's name in the configuration whose rules will judge\n"
              "-- it; then, anywhere: pgsweeper --explain --from capture.json. It only\n"
              "-- reads (pg_stat_activity, pg_locks, pg_roles, pg_database,\n"
              "-- pg_prepared_xacts, pg_replication_slots); run it as a role with\n"
              "-- pg_monitor (or a superuser) to see every session and its query, as\n"
              "-- pgsweeper's role does. Like pgsweeper's, its statement gives\n"
              "-- up after 5 s. The capture holds query texts: keep it as you would the\n"
              "-- server's logs.\n"
              "--\n"
              "-- Generated from pgsweeper's own statement (src/sql.c); do not edit.\n"
              "\\set QUIET on\n"
              "\\set ON_ERROR_STOP on\n"
              "SET statement_timeout = '5s';\n"
              "\\if :{?server}\n"
              "\\else\n"
              "DO $$BEGIN RAISE EXCEPTION 'capture.sql needs the server''s name: psql -XAt -v server=NAME -f capture.sql'; END$$;\n"
              "\\endif\n"
              "SELECT current_setting('server_version_num')::int >= 140000 AS pgsweeper_waitstart \\gset\n"
              "\\if :pgsweeper_waitstart\n",
              stdout);
        fputs("PREPARE pgsweeper_capture AS\n  ", stdout);
        statement(pg_capture_sql);
        fputs(";\n\\else\nPREPARE pgsweeper_capture AS\n  ", stdout);
        statement(pg_capture_sql_13);
        fputs(";\n\\endif\n", stdout);
        fputs("EXECUTE pgsweeper_capture(", stdout);
        for (size_t i = 0; i < SNAPSHOT_PARAMS; i++) {
                literal(params.values[i]);
                fputs(", ", stdout);
        }
        fputs(":'server');\nDEALLOCATE pgsweeper_capture;\n", stdout);
        snapshot_params_free(&params);
        snapshot_request_done(&req);
        return fflush(stdout) == 0 ? 0 : 1;
}
