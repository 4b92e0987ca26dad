/* The capture reader: JSON into the daemon's struct snapshot, every field;
 * timestamps to the microsecond; and what it says of files that are not
 * captures. JSON here is written with ' for ", turned by quoted(). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "capture.h"
#include "json.h"
#include "macro.h"
#include "unit.h"

static const char server_base[] =
        "{'pgsweeper_capture':1,'server':'s','server_version':null,'now':'2024-05-01T12:00:00Z','role':'primary',"
        "'current_user':null,'connections':null,'connection_slots':null,'groups':[],'sessions':[],'holders':[]}";
static const char session_base[] =
        "{'pid':1,'backend_type':'client backend','superuser':false,'state':'idle','backend_start':null,"
        "'state_change':null,'query_start':null,'xact_start':null,'wait_start':null,'user':'u','database':'d',"
        "'application':'a','client_addr':'local','wait_event_type':null,'blocking_pids':null,'xmin_age':null,"
        "'query':null}";
static const char group_base[] = "{'user':'u','database':'d','application':'a','client_addr':'local','count':1}";
static const char prepared_base[] =
        "{'holder':'prepared','name':'g','owner':'u','database':'d','slot_type':null,'active':null,"
        "'prepared_at':null,'xmin_age':1}";
static const char slot_base[] =
        "{'holder':'slot','name':'g','owner':null,'database':'d','slot_type':'logical','active':false,"
        "'prepared_at':null,'xmin_age':1}";

static char *quoted(char *s) {
        for (char *p = s; *p; p++)
                if (*p == '\'')
                        *p = '"';
        return s;
}

/* base with the value of its first member key replaced by value (the
 * member removed when value is NULL) */
static char *with(const char *base, const char *key, const char *value) {
        _cleanup_free_ char *pat = xasprintf("'%s':", key);
        const char *k = strstr(base, pat), *v, *end;
        int depth = 0;
        bool in_string = false;

        if (!k)
                abort();
        v = end = k + strlen(pat);
        for (; *end && (in_string || depth > 0 || (*end != ',' && *end != '}')); end++) {
                if (*end == '\'')
                        in_string = !in_string;
                else if (!in_string)
                        depth += (*end == '[' || *end == '{') - (*end == ']' || *end == '}');
        }
        if (value)
                return xasprintf("%.*s%s%s", (int) (v - base), base, value, end);
        if (k[-1] == ',')
                k--;
        else if (*end == ',')
                end++;
        return xasprintf("%.*s%s", (int) (k - base), base, end);
}

static int parse_text(const char *text, struct capture *c, char **error) {
        _cleanup_free_ char *s = quoted(xstrdup(text));
        return capture_parse(s, strlen(s), c, error);
}

static const char valid_object[] =
        "{'pgsweeper_capture': 1, 'server': 'main', 'server_version': '15.4',\n"
        " 'now': '2024-05-01T12:00:00Z', 'role': 'primary', 'current_user': 'pgsweeper',\n"
        " 'connections': 3, 'connection_slots': 97,\n"
        " 'groups': [\n"
        "   {'user': 'app', 'database': 'appdb', 'application': 'web', 'client_addr': '10.0.0.1', 'count': 2},\n"
        "   {'count': 1, 'user': null, 'database': null, 'application': null, 'client_addr': null}],\n"
        " 'sessions': [\n"
        "   {'pid': 101, 'backend_type': 'client backend', 'superuser': false, 'state': 'idle in transaction',\n"
        "    'backend_start': '2024-05-01 11:00:00+00', 'state_change': '2024-05-01T11:59:00.5Z',\n"
        "    'query_start': '2024-05-01T13:59:00.5+02:00', 'xact_start': '2024-05-01T06:29:00.5-05:30',\n"
        "    'wait_start': null, 'user': 'app', 'database': 'appdb', 'application': 'web',\n"
        "    'client_addr': '10.0.0.1', 'wait_event_type': 'Client', 'blocking_pids': null, 'xmin_age': 12,\n"
        "    'query': 'SELECT 1'},\n"
        "   {'query': null, 'pid': 102, 'backend_type': 'client backend', 'superuser': false, 'state': 'active',\n"
        "    'backend_start': '2024-05-01T11:00:00Z', 'state_change': '2024-05-01T11:58:00Z',\n"
        "    'query_start': '2024-05-01T11:58:00Z', 'xact_start': '2024-05-01T11:58:00Z',\n"
        "    'wait_start': '2024-05-01T11:58:30.25Z', 'user': null, 'database': null, 'application': null,\n"
        "    'client_addr': null, 'wait_event_type': 'Lock', 'blocking_pids': [101, 0, 101], 'xmin_age': null},\n"
        "   {'pid': 103, 'backend_type': 'autovacuum worker', 'superuser': true, 'state': 'starting',\n"
        "    'backend_start': null, 'state_change': null, 'query_start': null, 'xact_start': null,\n"
        "    'wait_start': null, 'user': '', 'database': 'appdb', 'application': '', 'client_addr': '',\n"
        "    'wait_event_type': null, 'blocking_pids': [], 'xmin_age': 0, 'query': 'VACUUM t'},\n"
        "   {'pid': 2147483647, 'backend_type': null, 'superuser': false, 'state': null,\n"
        "    'backend_start': null, 'state_change': null, 'query_start': null, 'xact_start': null,\n"
        "    'wait_start': null, 'user': 'x', 'database': 'y', 'application': 'z', 'client_addr': 'local',\n"
        "    'wait_event_type': 'Lock', 'blocking_pids': [2147483647], 'xmin_age': 2147483647, 'query': ''}],\n"
        " 'holders': [\n"
        "   {'holder': 'prepared', 'name': 'gid-1', 'owner': 'app', 'database': 'appdb', 'slot_type': null,\n"
        "    'active': null, 'prepared_at': '2024-05-01T11:00:00Z', 'xmin_age': 5000},\n"
        "   {'xmin_age': 7000, 'holder': 'slot', 'name': 'sub', 'owner': null, 'database': 'appdb',\n"
        "    'slot_type': 'logical', 'active': false, 'prepared_at': null},\n"
        "   {'holder': 'slot', 'name': 'gid-1', 'owner': null, 'database': null, 'slot_type': 'physical',\n"
        "    'active': true, 'prepared_at': null, 'xmin_age': 0}]}\n";

#define T0 INT64_C(1714564800000000)     /* 2024-05-01T12:00:00Z */
#define MIN(m) ((int64_t) (m) * 60000000)

static bool in_block(const struct snapshot *s, const char *p, size_t bytes) {
        return p >= s->strings && p + strlen(p) < s->strings + bytes;
}

static void test_valid_object(void) {
        /* every string of the rows, groups and holders, NUL included */
        static const size_t bytes = (4 + 6 + 4 + 9) + 4 + (4 + 6 + 4 + 9 + 9) + 4 + (1 + 6 + 1 + 1 + 9) +
                                    (2 + 2 + 2 + 6 + 1) + (6 + 4 + 6 + 1) + (4 + 1 + 6 + 8) + (6 + 1 + 1 + 9);
        struct capture c;
        _cleanup_free_ char *error = NULL;
        const struct snapshot *s;
        const struct snapshot_row *r;

        CHECK_INT(parse_text(valid_object, &c, &error), 0, "valid object");
        CHECK(error == NULL);
        if (c.n_servers != 1) {
                CHECK_INT(c.n_servers, 1, "servers");
                return;
        }
        CHECK_STR(c.servers[0].name, "main", "name");
        CHECK_STR(c.servers[0].server_version, "15.4", "server_version");
        CHECK_STR(c.servers[0].current_user, "pgsweeper", "current_user");
        s = &c.servers[0].snap;
        CHECK_INT(s->now, T0, "now");
        CHECK_INT(s->connections, 3, "connections");
        CHECK_INT(s->connection_slots, 97, "connection_slots");
        CHECK(s->idle_all && s->has_graph && s->role_known && !s->in_recovery);
        for (enum group_key g = 0; g < _GROUP_MAX; g++)
                CHECK(s->idle_keys[g].n == 0 && s->idle_keys[g].values == NULL);

        CHECK_INT(s->n_groups, 2, "groups");
        CHECK_STR(s->groups[0].key[GROUP_USER], "app", "group user");
        CHECK_STR(s->groups[0].key[GROUP_DATABASE], "appdb", "group database");
        CHECK_STR(s->groups[0].key[GROUP_APPLICATION], "web", "group application");
        CHECK_STR(s->groups[0].key[GROUP_CLIENT_ADDRESS], "10.0.0.1", "group client_addr");
        CHECK(s->groups[0].key[GROUP_ALL] == NULL);
        CHECK_INT(s->groups[0].count, 2, "group count");
        for (enum group_key g = GROUP_USER; g < _GROUP_MAX; g++) {
                CHECK_STR(s->groups[1].key[g], "", "a null group key");
                CHECK(in_block(s, s->groups[0].key[g], bytes) && in_block(s, s->groups[1].key[g], bytes));
        }
        CHECK_INT(s->groups[1].count, 1, "group count");

        CHECK_INT(s->n_rows, 4, "rows");
        CHECK_INT(s->n_lock_waiting, 2, "lock waiting");
        CHECK(s->blocker_pool != NULL);
        r = &s->rows[0];
        CHECK_INT(r->pid, 101, "pid");
        CHECK(r->client_backend && !r->superuser && !r->lock_waiting);
        CHECK_INT(r->state, STATE_IDLE_IN_TRANSACTION, "state");
        CHECK_INT(r->backend_start, T0 - MIN(60), "backend_start +00");
        CHECK_INT(r->state_change, T0 - MIN(1) + 500000, "state_change Z");
        CHECK_INT(r->query_start, T0 - MIN(1) + 500000, "query_start +02:00");
        CHECK_INT(r->xact_start, T0 - MIN(1) + 500000, "xact_start -05:30");
        CHECK_INT(r->wait_start, TS_NULL, "wait_start");
        CHECK_INT(r->xmin_age, 12, "xmin_age");
        CHECK(r->blockers == NULL && r->n_blockers == 0);
        CHECK_STR(r->user, "app", "user");
        CHECK_STR(r->database, "appdb", "database");
        CHECK_STR(r->application, "web", "application");
        CHECK_STR(r->client_addr, "10.0.0.1", "client_addr");
        CHECK_STR(r->query, "SELECT 1", "query");

        r = &s->rows[1];
        CHECK_INT(r->pid, 102, "pid");
        CHECK(r->client_backend && r->lock_waiting);
        CHECK_INT(r->state, STATE_ACTIVE, "state");
        CHECK_INT(r->wait_start, T0 - MIN(2) + 30250000, "wait_start");
        CHECK_INT(r->xmin_age, -1, "null xmin_age");
        CHECK(r->query == NULL);
        CHECK_STR(r->user, "", "null user");
        CHECK_STR(r->database, "", "null database");
        CHECK_STR(r->application, "", "null application");
        CHECK_STR(r->client_addr, "", "null client_addr");
        CHECK(r->blockers == s->blocker_pool && r->n_blockers == 3);
        CHECK(r->blockers[0] == 101 && r->blockers[1] == 0 && r->blockers[2] == 101);

        r = &s->rows[2];
        CHECK(!r->client_backend && r->superuser && !r->lock_waiting);
        CHECK_INT(r->state, STATE_UNKNOWN, "a state this build does not know");
        CHECK(r->backend_start == TS_NULL && r->state_change == TS_NULL && r->query_start == TS_NULL &&
              r->xact_start == TS_NULL && r->wait_start == TS_NULL);
        CHECK(r->blockers == NULL && r->n_blockers == 0);
        CHECK_INT(r->xmin_age, 0, "xmin_age 0");
        CHECK_STR(r->query, "VACUUM t", "query");

        r = &s->rows[3];
        CHECK_INT(r->pid, INT32_MAX, "the largest pid");
        CHECK(!r->client_backend && r->lock_waiting);
        CHECK_INT(r->state, STATE_UNKNOWN, "a null state");
        CHECK(r->blockers == s->blocker_pool + 3 && r->n_blockers == 1 && r->blockers[0] == INT32_MAX);
        CHECK_INT(r->xmin_age, INT32_MAX, "xmin_age");
        CHECK_STR(r->query, "", "an empty query is not null");

        /* one block holds every string, exactly */
        for (size_t i = 0; i < s->n_rows; i++) {
                r = &s->rows[i];
                CHECK(in_block(s, r->user, bytes) && in_block(s, r->database, bytes) &&
                      in_block(s, r->application, bytes) && in_block(s, r->client_addr, bytes) &&
                      (!r->query || in_block(s, r->query, bytes)));
        }

        /* the holders, with the oldest xmin of each kind */
        CHECK(s->has_horizon);
        CHECK_INT(s->n_holders, 3, "holders");
        CHECK_INT(s->horizon_age[HOLDER_SESSION], INT32_MAX, "the oldest session xmin");
        CHECK_INT(s->horizon_age[HOLDER_PREPARED], 5000, "the oldest prepared transaction");
        CHECK_INT(s->horizon_age[HOLDER_SLOT], 7000, "the oldest slot");
        if (s->n_holders == 3) {
                const struct horizon_holder *h = &s->holders[0];

                CHECK_INT(h->kind, HOLDER_PREPARED, "prepared");
                CHECK_STR(h->name, "gid-1", "gid");
                CHECK_STR(h->owner, "app", "owner");
                CHECK_STR(h->database, "appdb", "database");
                CHECK_STR(h->slot_type, "", "no slot type");
                CHECK(!h->active);
                CHECK_INT(h->prepared_at, T0 - MIN(60), "prepared_at");
                CHECK_INT(h->xmin_age, 5000, "prepared xmin_age");
                h = &s->holders[1];
                CHECK_INT(h->kind, HOLDER_SLOT, "logical slot");
                CHECK_STR(h->name, "sub", "slot name");
                CHECK_STR(h->owner, "", "a slot has no owner");
                CHECK_STR(h->database, "appdb", "a logical slot's database");
                CHECK_STR(h->slot_type, "logical", "slot type");
                CHECK(!h->active);
                CHECK_INT(h->prepared_at, TS_NULL, "no prepared_at");
                CHECK_INT(h->xmin_age, 7000, "slot xmin_age");
                h = &s->holders[2];
                CHECK_INT(h->kind, HOLDER_SLOT, "physical slot: the name of a gid too");
                CHECK_STR(h->database, "", "a physical slot has no database");
                CHECK_STR(h->slot_type, "physical", "slot type");
                CHECK(h->active);
                CHECK_INT(h->xmin_age, 0, "xmin_age 0");
                for (size_t i = 0; i < s->n_holders; i++) {
                        h = &s->holders[i];
                        CHECK(in_block(s, h->name, bytes) && in_block(s, h->owner, bytes) &&
                              in_block(s, h->database, bytes) && in_block(s, h->slot_type, bytes));
                }
                CHECK(s->holders[2].slot_type == s->strings + bytes - 9);
        }
        capture_free(&c);
        CHECK(c.servers == NULL && c.n_servers == 0);
}

static void test_valid_array(void) {
        _cleanup_free_ char *b = with(server_base, "server", "'b'"), *b2 = with(b, "role", "'standby'"),
                            *text = xasprintf("\xef\xbb\xbf [%s,\n%s]", server_base, b2), *error = NULL;
        struct capture c;

        CHECK_INT(parse_text(text, &c, &error), 0, "valid array after a BOM");
        if (c.n_servers != 2) {
                CHECK_INT(c.n_servers, 2, "servers");
                return;
        }
        CHECK_STR(c.servers[0].name, "s", "first");
        CHECK_STR(c.servers[1].name, "b", "second");
        CHECK(c.servers[0].current_user == NULL && c.servers[0].server_version == NULL);
        CHECK(!c.servers[0].snap.in_recovery && c.servers[1].snap.in_recovery && c.servers[1].snap.role_known);
        for (size_t i = 0; i < 2; i++) {
                const struct snapshot *s = &c.servers[i].snap;
                CHECK(s->connections == -1 && s->connection_slots == -1 && s->n_groups == 0 && s->n_rows == 0);
                CHECK(s->now == T0 && s->idle_all && s->has_graph && s->n_lock_waiting == 0);
                CHECK(s->has_horizon && s->n_holders == 0 && s->horizon_age[HOLDER_SESSION] == -1 &&
                      s->horizon_age[HOLDER_PREPARED] == -1 && s->horizon_age[HOLDER_SLOT] == -1);
        }
        capture_free(&c);
}

/* \u escapes, pairs decoded; raw bytes >= 0x80 kept as they came */
static void test_strings(void) {
        static const char want_app[] = "\xff\xfe caf\xc3\xa9 \xc3";
        _cleanup_free_ char *s1 = with(session_base, "query", "'\\ud83d\\ude00 \\u00e9\\u65E5 \\\" \\\\ \\/ \\b\\f\\n\\r\\t'"),
                            *s2 = with(s1, "application", "'\xff\xfe caf\xc3\xa9 \xc3'"),
                            *list = xasprintf("[%s]", s2), *text = with(server_base, "sessions", list), *error = NULL;
        struct capture c;

        CHECK_INT(parse_text(text, &c, &error), 0, "escapes");
        if (c.n_servers != 1 || c.servers[0].snap.n_rows != 1) {
                CHECK(false);
                return;
        }
        CHECK_STR(c.servers[0].snap.rows[0].query, "\xf0\x9f\x98\x80 \xc3\xa9\xe6\x97\xa5 \" \\ / \b\f\n\r\t",
                  "decoded");
        CHECK_STR(c.servers[0].snap.rows[0].application, want_app, "raw bytes");
        capture_free(&c);
}

static const struct {
        const char *text;
        int64_t want;           /* TS_NULL: not a timestamp */
} timestamps[] = {
        { "2024-05-01T12:00:00Z", INT64_C(1714564800000000) },
        { "2024-05-01 12:00:00Z", INT64_C(1714564800000000) },
        { "2024-05-01 12:00:00+00", INT64_C(1714564800000000) },
        { "2024-05-01T12:00:00.1234-00:00", INT64_C(1714564800123400) },
        { "2024-02-29T13:45:00.123456+02:00", INT64_C(1709207100123456) },
        { "2024-02-29T13:45:00.123456-05:30", INT64_C(1709234100123456) },
        { "2024-05-01T12:00:00.123+15:59", INT64_C(1714507260123000) },
        { "2024-05-01T14:00:00.5+02", INT64_C(1714564800500000) },
        { "2024-05-01T12:00:00.12Z", INT64_C(1714564800120000) },
        { "2024-05-01T12:00:00.12345Z", INT64_C(1714564800123450) },
        { "2000-02-29T00:00:00.12Z", INT64_C(951782400120000) },
        { "1970-01-01T00:00:00Z", 0 },
        { "1970-01-01T01:00:00+01:00", 0 },
        { "1969-12-31T23:59:59.999999Z", -1 },
        { "1969-07-20T20:17:40.1Z", INT64_C(-14182939900000) },
        { "1965-01-01 00:00:00+01", INT64_C(-157770000000000) },
        { "1900-03-01T00:00:00Z", INT64_C(-2203891200000000) },
        { "1600-02-29T12:00:00.12345Z", INT64_C(-11670955199876550) },
        { "0001-01-01T00:00:00Z", INT64_C(-62135596800000000) },
        { "9999-12-31T23:59:59.999999Z", INT64_C(253402300799999999) },
        { "2023-02-29T00:00:00Z", TS_NULL },
        { "1900-02-29T00:00:00Z", TS_NULL },
        { "2024-04-31T00:00:00Z", TS_NULL },
        { "2024-13-01T00:00:00Z", TS_NULL },
        { "2024-00-01T00:00:00Z", TS_NULL },
        { "2024-05-00T00:00:00Z", TS_NULL },
        { "2024-05-01T24:00:00Z", TS_NULL },
        { "2024-05-01T12:60:00Z", TS_NULL },
        { "2024-05-01T12:00:60Z", TS_NULL },
        { "2024-05-01T12:00:00+16:00", TS_NULL },
        { "2024-05-01T12:00:00+15:60", TS_NULL },
        { "2024-05-01T12:00:00", TS_NULL },
        { "2024-05-01T12:00:00z", TS_NULL },
        { "2024-05-01t12:00:00Z", TS_NULL },
        { "2024-05-01T12:00:00+0200", TS_NULL },
        { "2024-05-01T12:00:00+02:", TS_NULL },
        { "2024-05-01T12:00:00+2", TS_NULL },
        { "2024-05-01T12:00:00.Z", TS_NULL },
        { "2024-05-01T12:00:00.1234567Z", TS_NULL },
        { "2024-05-01T12:00Z", TS_NULL },
        { "2024-5-01T12:00:00Z", TS_NULL },
        { "24-05-01T12:00:00Z", TS_NULL },
        { "2024-05-01", TS_NULL },
        { " 2024-05-01T12:00:00Z", TS_NULL },
        { "2024-05-01T12:00:00Z ", TS_NULL },
        { "2024-05-01T12:00:00ZZ", TS_NULL },
        { "2024-05-01T12:00:00 +02:00", TS_NULL },
        { "+2024-05-01T12:00:00Z", TS_NULL },
        { "2024-05-01T12:00:00+02:00 BC", TS_NULL },
        { "infinity", TS_NULL },
        { "", TS_NULL },
};

static void test_timestamps(void) {
        for (size_t i = 0; i < ELEMENTSOF(timestamps); i++) {
                _cleanup_free_ char *v = xasprintf("'%s'", timestamps[i].text), *text = with(server_base, "now", v),
                                    *error = NULL, *want = NULL;
                struct capture c;
                int r = parse_text(text, &c, &error);

                if (timestamps[i].want != TS_NULL) {
                        CHECK_AT(r == 0, __FILE__, __LINE__, "%s: %s", timestamps[i].text, error);
                        if (r == 0)
                                CHECK_INT(c.servers[0].snap.now, timestamps[i].want, timestamps[i].text);
                        capture_free(&c);
                        continue;
                }
                want = xasprintf("1:65: now: expected a timestamp like \"2024-02-29 23:59:59.123456+02:00\", "
                                 "found \"%s\"", timestamps[i].text);
                CHECK_INT(r, -EINVAL, timestamps[i].text);
                CHECK_STR(error, want, timestamps[i].text);
        }
}

/* Where a case's text comes from: RAW is the whole input; the others put
 * value as key's (NULL: key removed; key NULL: as it is) into one base. */
enum where { RAW, SERVER, SESSION, SESSION2, GROUP, ARRAY2, PREPARED, SLOT, PREPARED2, SLOT2 };

static const struct {
        enum where where;
        const char *key, *value, *want;
} bad[] = {
        /* not JSON, or not a capture's shape */
        { RAW, NULL, "", "1:1: empty: not a capture" },
        { RAW, NULL, " \n\t\r\n ", "1:1: empty: not a capture" },
        { RAW, NULL, "servers:\n  - name: a\n", "1:1: expected a JSON value, found \"servers\"" },
        { RAW, NULL, "hello world", "1:1: expected a JSON value, found \"hello\"" },
        { RAW, NULL, "{'a':1}", "1:1: missing key \"pgsweeper_capture\": not a capture" },
        { RAW, NULL, "[1,2]", "1:2: [0]: expected an object (a server), found 1" },
        { RAW, NULL, "[]", "1:1: expected at least one server, found an empty array" },
        { RAW, NULL, "'s'", "1:1: expected an object (a server) or an array of them, found \"s\"" },
        { RAW, NULL, "null", "1:1: expected an object (a server) or an array of them, found null" },
        { RAW, NULL, "[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]",
          "1:17: arrays and objects nested more than 16 deep; stopped reading" },
        { RAW, NULL, "{'a':1} x", "1:9: expected the end of the input after the value, found \"x\"" },
        { RAW, NULL, "{'a':1}{", "1:8: expected the end of the input after the value, found \"{\"" },
        { RAW, NULL, "{'pgsweeper_capture':1,'server':", "1:33: expected a JSON value, found the end of the input" },
        { RAW, NULL, "{'pgsweeper_capture':1,", "1:24: expected a string key, found the end of the input" },
        { RAW, NULL, "[{'a':1}", "1:9: expected ',' or ']', found the end of the input" },
        { RAW, NULL, "{'a':1,}", "1:8: expected a string key, found \"}\"" },
        { RAW, NULL, "{'a' 1}", "1:6: expected ':' after the key, found \"1\"" },
        { RAW, NULL, "{'a':1 'b':2}", "1:8: expected ',' or '}', found \"b\"" },
        { RAW, NULL, "[1,]", "1:4: expected a JSON value, found \"]\"" },
        { RAW, NULL, "{'a':tru}", "1:6: expected a JSON value, found \"tru\"" },
        { RAW, NULL, "{'a':01}", "1:6: expected a JSON number (no leading zero), found \"01\"" },
        { RAW, NULL, "{'a':1.}", "1:6: expected a JSON number (a digit after '.'), found \"1.\"" },
        { RAW, NULL, "{'a':1e+}", "1:6: expected a JSON number (a digit in the exponent), found \"1e+\"" },
        { RAW, NULL, "{'a':-}", "1:6: expected a JSON value, found \"-\"" },
        { RAW, NULL, "{'a':+1}", "1:6: expected a JSON value, found \"+1\"" },
        { RAW, NULL, "{'a':'b", "1:6: expected '\"' to end the string, found the end of the input" },
        { RAW, NULL, "{'a':'b\nc'}", "1:8: expected a character or an escape in the string, found the control "
          "character 0x0a" },
        { RAW, NULL, "{'a':'\\x'}", "1:8: expected an escape (one of \" \\ / b f n r t u) after \\, found \"x\"" },
        { RAW, NULL, "{'a':'\\u12g4'}", "1:9: expected 4 hex digits after \\u, found \"12g4\"" },
        { RAW, NULL, "{'a':'\\u12'}", "1:9: expected 4 hex digits after \\u, found \"12\"" },
        { RAW, NULL, "{'a':'x\\ud800'}", "1:8: lone surrogate \\uD800: expected \\uDC00 to \\uDFFF after it" },
        { RAW, NULL, "{'a':'\\ud800\\u0041'}", "1:7: lone surrogate \\uD800: expected \\uDC00 to \\uDFFF after it" },
        { RAW, NULL, "{'a':'\\udc00'}", "1:7: lone surrogate \\uDC00: expected \\uD800 to \\uDBFF before it" },
        { RAW, NULL, "{'a':'\\u0000'}", "1:7: a string holds U+0000: no PostgreSQL name or query can" },
        { RAW, NULL, "{'a':1,'b':2,'a':3}", "1:14: duplicate key \"a\"" },
        { RAW, NULL, "{\n 'x\xff\\n':1,\n 'x\xff\\n':2}", "3:2: duplicate key \"x\\xff\\x0a\"" },
        /* the server */
        { SERVER, "pgsweeper_capture", "2", "1:22: capture format 2 is not supported (this pgsweeper reads 1)" },
        { SERVER, "pgsweeper_capture", "1.0", "1:22: capture format 1.0 is not supported (this pgsweeper reads 1)" },
        { SERVER, "pgsweeper_capture", "'1'", "1:22: expected the capture format's version, 1, found \"1\"" },
        { SERVER, "now", NULL, "1:1: missing key \"now\"" },
        { SERVER, "sessions", NULL, "1:1: missing key \"sessions\"" },
        { SERVER, "role", "'master'", "1:95: role: expected \"primary\" or \"standby\", found \"master\"" },
        { SERVER, "role", "'\xff\x7f[31m'", "1:95: role: expected \"primary\" or \"standby\", found \"\\xff\\x7f[31m\"" },
        /* cut after 32 bytes, never inside a character */
        { SERVER, "role", "'a\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9'",
          "1:95: role: expected \"primary\" or \"standby\", found \"a\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\"..." },
        { SERVER, "server", "null", "1:33: server: expected a string, found null" },
        { SERVER, "server_version", "15", "1:54: server_version: expected a string or null, found 15" },
        { SERVER, "connections", "-1", "1:139: connections: expected an integer from 0 to 2147483647 or null, found -1" },
        { SERVER, "connection_slots", "1e3",
          "1:163: connection_slots: expected an integer from 0 to 2147483647 or null, found 1e3" },
        { SERVER, "connection_slots", "99999999999999999999999999999999999",
          "1:163: connection_slots: expected an integer from 0 to 2147483647 or null, found "
          "99999999999999999999999999999999..." },
        { SERVER, "groups", "{}", "1:177: groups: expected an array, found an empty object" },
        { SERVER, "groups", "[{'user':'u','database':'d','application':'a','client_addr':'local','count':1}]",
          "1:177: groups: expected no groups when connections is null, found 1" },
        { SERVER, "sessions", "null", "1:191: sessions: expected an array, found null" },
        { SERVER, "sessions", "[1]", "1:192: sessions[0]: expected an object (a session), found 1" },
        { SERVER, "current_user", "'x','extra':1", "1:124: unknown key \"extra\"" },
        /* a session */
        { SESSION, "pid", "0", "1:199: sessions[0].pid: expected an integer from 1 to 2147483647, found 0" },
        { SESSION, "pid", "2147483648", "1:199: sessions[0].pid: expected an integer from 1 to 2147483647, found 2147483648" },
        { SESSION, "pid", "1.5", "1:199: sessions[0].pid: expected an integer from 1 to 2147483647, found 1.5" },
        { SESSION, "pid", "1e3", "1:199: sessions[0].pid: expected an integer from 1 to 2147483647, found 1e3" },
        { SESSION, "pid", "-0", "1:199: sessions[0].pid: expected an integer from 1 to 2147483647, found -0" },
        { SESSION, "pid", "'12a'", "1:199: sessions[0].pid: expected an integer from 1 to 2147483647, found \"12a\"" },
        { SESSION, "pid", "9223372036854775808",
          "1:199: sessions[0].pid: expected an integer from 1 to 2147483647, found 9223372036854775808" },
        { SESSION, "pid", NULL, "1:192: sessions[0]: missing key \"pid\"" },
        { SESSION, "pid", "1,'pid':2", "1:201: duplicate key \"pid\"" },
        { SESSION, "query", "null,'wait_event':null", "1:501: sessions[0]: unknown key \"wait_event\"" },
        { SESSION, "superuser", "'f'", "1:245: sessions[0].superuser: expected true or false, found \"f\"" },
        { SESSION, "state", "1", "1:259: sessions[0].state: expected a string or null, found 1" },
        { SESSION, "backend_start", "'2024-05-01'",
          "1:282: sessions[0].backend_start: expected a timestamp like \"2024-02-29 23:59:59.123456+02:00\" or null, "
          "found \"2024-05-01\"" },
        { SESSION, "blocking_pids", "[1,-1]",
          "1:470: sessions[0].blocking_pids[1]: expected an integer from 0 to 2147483647, found -1" },
        { SESSION, "blocking_pids", "7", "1:467: sessions[0].blocking_pids: expected an array or null, found 7" },
        { SESSION, "xmin_age", "-5", "1:483: sessions[0].xmin_age: expected an integer from 0 to 2147483647 or null, "
          "found -5" },
        { SESSION, "query", "'\x01'", "1:497: expected a character or an escape in the string, found the control "
          "character 0x01" },
        { SESSION, "query", "'\\ud800'", "1:497: lone surrogate \\uD800: expected \\uDC00 to \\uDFFF after it" },
        { SESSION, "user", "'\\u0000'", "1:370: a string holds U+0000: no PostgreSQL name or query can" },
        { SESSION2, NULL, NULL, "1:509: sessions[1].pid: duplicate pid 1, first at sessions[0]" },
        /* a group */
        { GROUP, "count", "0", "1:250: groups[0].count: expected an integer from 1 to 2147483647, found 0" },
        { GROUP, "count", "-3", "1:250: groups[0].count: expected an integer from 1 to 2147483647, found -3" },
        { GROUP, "count", "2", "1:139: connections: expected 2, the sum of the groups' counts, found 1" },
        { GROUP, "client_addr", NULL, "1:175: groups[0]: missing key \"client_addr\"" },
        { GROUP, "user", "[]", "1:183: groups[0].user: expected a string or null, found an empty array" },
        /* the servers of an array */
        { ARRAY2, NULL, NULL, "1:241: [1].server: duplicate server \"s\", first at [0]" },
        { ARRAY2, "now", "'2024-05-01'",
          "1:273: [1].now: expected a timestamp like \"2024-02-29 23:59:59.123456+02:00\", found \"2024-05-01\"" },
        { ARRAY2, "pgsweeper_capture", "3", "1:230: [1]: capture format 3 is not supported (this pgsweeper reads 1)" },
        /* the holders */
        { SERVER, "holders", NULL, "1:1: missing key \"holders\"" },
        { SERVER, "holders", "null", "1:204: holders: expected an array, found null" },
        { SERVER, "holders", "{}", "1:204: holders: expected an array, found an empty object" },
        { SERVER, "holders", "[1]", "1:205: holders[0]: expected an object (a prepared transaction or a slot), found 1" },
        { PREPARED, "holder", "'session'", "1:215: holders[0].holder: expected \"prepared\" or \"slot\", found \"session\"" },
        { PREPARED, "holder", "null", "1:215: holders[0].holder: expected \"prepared\" or \"slot\", found null" },
        { PREPARED, "holder", NULL, "1:205: holders[0]: missing key \"holder\"" },
        { PREPARED, "name", "null", "1:233: holders[0].name: expected a string, found null" },
        { PREPARED, "name", "7", "1:233: holders[0].name: expected a string, found 7" },
        { PREPARED, "owner", "false", "1:245: holders[0].owner: expected a string or null, found false" },
        { PREPARED, "slot_type", "'logical'",
          "1:276: holders[0].slot_type: expected null (a prepared transaction), found \"logical\"" },
        { PREPARED, "active", "true", "1:290: holders[0].active: expected null (a prepared transaction), found true" },
        { PREPARED, "prepared_at", "'yesterday'",
          "1:309: holders[0].prepared_at: expected a timestamp like \"2024-02-29 23:59:59.123456+02:00\" or null, "
          "found \"yesterday\"" },
        { PREPARED, "xmin_age", "null", "1:325: holders[0].xmin_age: expected an integer from 0 to 2147483647, found null" },
        { PREPARED, "xmin_age", "-1", "1:325: holders[0].xmin_age: expected an integer from 0 to 2147483647, found -1" },
        { PREPARED, "xmin_age", "2147483648",
          "1:325: holders[0].xmin_age: expected an integer from 0 to 2147483647, found 2147483648" },
        { PREPARED, "xmin_age", "1,'plugin':'x'", "1:327: holders[0]: unknown key \"plugin\"" },
        { SLOT, "slot_type", "null", "1:273: holders[0].slot_type: expected a string (a slot), found null" },
        { SLOT, "active", "null", "1:292: holders[0].active: expected true or false (a slot), found null" },
        { SLOT, "active", "'t'", "1:292: holders[0].active: expected true or false or null, found \"t\"" },
        { PREPARED2, NULL, NULL, "1:356: holders[1].name: duplicate gid \"g\", first at holders[0]" },
        { SLOT2, NULL, NULL, "1:355: holders[1].name: duplicate slot \"g\", first at holders[0]" },
};

static char *bad_text(size_t i) {
        _cleanup_free_ char *one = NULL, *list = NULL, *server = NULL;
        const char *v = bad[i].value;

        switch (bad[i].where) {
        case RAW:
                return xstrdup(v);
        case SERVER:
                return with(server_base, bad[i].key, v);
        case SESSION:
        case SESSION2:
                one = bad[i].key ? with(session_base, bad[i].key, v) : xstrdup(session_base);
                list = bad[i].where == SESSION ? xasprintf("[%s]", one) : xasprintf("[%s,%s]", session_base, one);
                return with(server_base, "sessions", list);
        case GROUP:
                one = bad[i].key ? with(group_base, bad[i].key, v) : xstrdup(group_base);
                list = xasprintf("[%s]", one);
                server = with(server_base, "connections", "1");
                return with(server, "groups", list);
        case ARRAY2:
                one = bad[i].key ? with(server_base, bad[i].key, v) : xstrdup(server_base);
                return xasprintf("[%s,%s]", server_base, one);
        case PREPARED:
        case SLOT:
        case PREPARED2:
        case SLOT2: {
                const char *base = bad[i].where == PREPARED || bad[i].where == PREPARED2 ? prepared_base : slot_base;

                one = bad[i].key ? with(base, bad[i].key, v) : xstrdup(base);
                list = bad[i].where == PREPARED || bad[i].where == SLOT ? xasprintf("[%s]", one) :
                                                                          xasprintf("[%s,%s]", base, one);
                return with(server_base, "holders", list);
        }
        }
        abort();
}

static void test_malformed(void) {
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_free_ char *text = bad_text(i), *error = NULL;
                struct capture c;
                int r = parse_text(text, &c, &error);

                CHECK_AT(r == -EINVAL, __FILE__, __LINE__, "case %zu: %s: returned %d", i, text, r);
                CHECK_AT(error && strcmp(error, bad[i].want) == 0, __FILE__, __LINE__,
                         "case %zu: %s:\n  got  %s\n  want %s", i, text, error ? error : "(null)", bad[i].want);
                CHECK(c.servers == NULL && c.n_servers == 0);
                capture_free(&c);
        }
}

/* Sizes a hostile file could use to make the reader slow: many keys in one
 * object, many sessions, many servers. Quadratic handling would not finish. */
static void test_large(void) {
        enum { KEYS = 300000, SESSIONS = 100000 };
        _cleanup_free_ char *keys = xmalloc(KEYS * 16 + 64), *list = xmalloc((SESSIONS + 1) * (sizeof(session_base) + 8)),
                            *servers = xmalloc(10001 * 2 + 2), *text = NULL, *error = NULL, *want = NULL;
        struct capture c;
        size_t o = 0;

        o += (size_t) sprintf(keys, "{");
        for (size_t i = 0; i < KEYS; i++)
                o += (size_t) sprintf(keys + o, "'k%zu':0,", i);
        sprintf(keys + o, "'k%d':1}", KEYS / 2);
        CHECK_INT(parse_text(keys, &c, &error), -EINVAL, "many keys");
        want = xasprintf("1:%zu: duplicate key \"k%d\"", o + 1, KEYS / 2);
        CHECK_STR(error, want, "many keys");
        free(TAKE_PTR(error));

        /* every pid 1..SESSIONS, then 7 again */
        o = (size_t) sprintf(list, "[");
        for (size_t i = 1; i <= SESSIONS + 1; i++) {
                _cleanup_free_ char *pid = xasprintf("%zu", i <= SESSIONS ? i : 7),
                                    *one = with(session_base, "pid", pid);
                o += (size_t) sprintf(list + o, "%s%s", one, i <= SESSIONS ? "," : "]");
        }
        text = with(server_base, "sessions", list);
        CHECK_INT(parse_text(text, &c, &error), -EINVAL, "many sessions");
        free(want);
        want = xasprintf("1:%zu: sessions[%d].pid: duplicate pid 7, first at sessions[6]",
                         strlen(text) - strlen(session_base) - strlen(",'holders':[]") + 6, SESSIONS);
        CHECK_STR(error, want, "many sessions");
        free(TAKE_PTR(error));

        o = (size_t) sprintf(servers, "[");
        for (size_t i = 0; i < 10001; i++)
                o += (size_t) sprintf(servers + o, "1%s", i < 10000 ? "," : "]");
        CHECK_INT(parse_text(servers, &c, &error), -EINVAL, "many servers");
        CHECK_STR(error, "1:1: expected at most 10000 servers, found 10001", "many servers");
        free(TAKE_PTR(error));

        /* values beyond JSON_MAX_VALUES are not read: memory stays bounded */
        {
                _cleanup_free_ char *zeros = xmalloc(2 * (size_t) JSON_MAX_VALUES + 8);

                o = (size_t) sprintf(zeros, "[");
                for (size_t i = 0; i < JSON_MAX_VALUES; i++)
                        o += (size_t) sprintf(zeros + o, "0,");
                sprintf(zeros + o, "0]");
                CHECK_INT(parse_text(zeros, &c, &error), -EINVAL, "many values");
                free(want);
                want = xasprintf("1:%zu: more than %d values, more than any capture holds; stopped reading",
                                 2 * (size_t) JSON_MAX_VALUES, JSON_MAX_VALUES);
                CHECK_STR(error, want, "many values");
        }
}

/* a file over the limit of capture_parse() itself, without the memory: no
 * byte beyond the first is read */
static void test_parse_limit(void) {
        _cleanup_free_ char *error = NULL;
        struct capture c;

        CHECK_INT(capture_parse("{", (size_t) CAPTURE_MAX_BYTES + 1, &c, &error), -EINVAL, "too large");
        CHECK_STR(error, "1:1: larger than 268435456 bytes (256 MiB), the most a capture may have", "too large");
}

static void on_alarm(int sig) {
        (void) sig;
        fputs("capture_read blocked (a FIFO?)\n", stderr);
        _exit(1);
}

static void read_fails(const char *path, int want_r, const char *want) {
        _cleanup_free_ char *error = NULL;
        struct capture c;
        int r = capture_read(path, &c, &error);

        CHECK_AT(r == want_r, __FILE__, __LINE__, "%s: returned %d, want %d", path, r, want_r);
        CHECK_AT(error && strcmp(error, want) == 0, __FILE__, __LINE__, "%s:\n  got  %s\n  want %s", path,
                 error ? error : "(null)", want);
        CHECK(c.servers == NULL && c.n_servers == 0);
}

static void write_file(const char *path, const char *text) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        size_t len = strlen(text);

        CHECK(fd >= 0 && write(fd, text, len) == (ssize_t) len);
        close(fd);
}

static void test_read(void) {
        char dir[] = "/tmp/test-capture-XXXXXX";
        _cleanup_free_ char *fifo = NULL, *missing = NULL, *odd = NULL, *empty = NULL, *big = NULL, *good = NULL,
                            *bad_file = NULL, *want = NULL, *error = NULL, *text = NULL;
        struct capture c;
        int fd;

        signal(SIGALRM, on_alarm);
        alarm(10);
        if (!mkdtemp(dir)) {
                CHECK(false);
                return;
        }
        fifo = xasprintf("%s/fifo", dir);
        CHECK(mkfifo(fifo, 0600) == 0);
        want = xasprintf("%s: error: is a FIFO; a capture must be a regular file", fifo);
        read_fails(fifo, -EINVAL, want);
        free(want);
        want = xasprintf("%s: error: is a directory; a capture must be a regular file", dir);
        read_fails(dir, -EINVAL, want);
        free(want);
        read_fails("/dev/null", -EINVAL, "/dev/null: error: is a character device; a capture must be a regular file");

        missing = xasprintf("%s/missing", dir);
        want = xasprintf("%s: error: cannot open: No such file or directory", missing);
        read_fails(missing, -ENOENT, want);
        free(want);
        odd = xasprintf("%s/no\nfile\x1b", dir);
        want = xasprintf("%s/no\\x0afile\\x1b: error: cannot open: No such file or directory", dir);
        read_fails(odd, -ENOENT, want);
        free(want);

        empty = xasprintf("%s/empty", dir);
        write_file(empty, "");
        want = xasprintf("%s:1:1: error: empty: not a capture", empty);
        read_fails(empty, -EINVAL, want);
        free(want);

        bad_file = xasprintf("%s/bad.json", dir);
        write_file(bad_file, "[\n  {\"pgsweeper_capture\": 2}\n]\n");
        want = xasprintf("%s:2:25: error: [0]: capture format 2 is not supported (this pgsweeper reads 1)", bad_file);
        read_fails(bad_file, -EINVAL, want);
        free(want);

        /* sparse: costs no disk, and no read either */
        big = xasprintf("%s/big", dir);
        fd = open(big, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        CHECK(fd >= 0 && ftruncate(fd, (off_t) CAPTURE_MAX_BYTES + 1) == 0);
        close(fd);
        want = xasprintf("%s: error: the file is larger than 268435456 bytes (256 MiB), the most a capture may have",
                         big);
        read_fails(big, -EINVAL, want);

        good = xasprintf("%s/good.json", dir);
        text = quoted(xstrdup(valid_object));
        write_file(good, text);
        CHECK_INT(capture_read(good, &c, &error), 0, "a good file");
        CHECK(error == NULL && c.n_servers == 1 && c.servers[0].snap.n_rows == 4);
        capture_free(&c);

        unlink(fifo);
        unlink(empty);
        unlink(big);
        unlink(good);
        unlink(bad_file);
        rmdir(dir);
        alarm(0);
}

int main(void) {
        test_valid_object();
        test_valid_array();
        test_strings();
        test_timestamps();
        test_malformed();
        test_large();
        test_parse_limit();
        test_read();
        return unit_finish("test-capture");
}
