"""Small helpers shared by the integration test files (not fixtures)."""

import os
import re
import subprocess
import threading
from pathlib import Path

import psycopg

from conftest import REPO

# One event line on stderr (SPEC section 5), e.g.
#   main: terminated pid 4242 (user app, db appdb, app psql, local): idle 3s > max_idle 2s [rule idle-sessions]
_EVENT_TAIL = (r"pid (?P<pid>\d+) \(user (?P<user>[^,]*), db (?P<db>[^,]*), "
               r"app (?P<app>[^,]*), (?P<client>[^)]*)\): (?P<state>idle|idle in transaction|active|[a-z ]+) "
               r"(?P<elapsed>\S+) >=? (?P<limit>max_[a-z_]+) (?P<limit_value>\S+) "
               r"\[rule (?P<rule>[^\]]+)\]$")
KIND_PREFIX = {
    "terminated": r"terminated ",
    "dry-run": r"dry-run: would terminate ",
    "log-only": r"log-only: ",
}


def event_re(kind, server):
    return re.compile(r"^" + re.escape(server) + r": " + KIND_PREFIX[kind] + _EVENT_TAIL)


def events(stderr, kind, server):
    """{pid: match} for every stderr line of that kind for that server."""
    rx = event_re(kind, server)
    out = {}
    for line in stderr.splitlines():
        m = rx.match(line)
        if m:
            pid = int(m.group("pid"))
            assert pid not in out, f"two '{kind}' lines for pid {pid}:\n{stderr}"
            out[pid] = m
    return out


_DUR_RX = re.compile(r"(\d+(?:\.\d+)?)(ms|s|min|m|h|d)")
_DUR_MS = {"ms": 1, "s": 1000, "m": 60000, "min": 60000, "h": 3600000, "d": 86400000}


def parse_duration_ms(text):
    """'1m12s' -> 72000, '850ms' -> 850; raises ValueError on junk."""
    pos, total = 0, 0.0
    for m in _DUR_RX.finditer(text):
        if m.start() != pos:
            raise ValueError(f"bad duration {text!r}")
        total += float(m.group(1)) * _DUR_MS[m.group(2)]
        pos = m.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"bad duration {text!r}")
    return total


def yaml_str(s):
    """A YAML double-quoted scalar: every byte reaches libpq as written."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def main_server(pg, name="main", **conninfo_extra):
    """(name, conninfo) of the server pg as pgsweeper's role on database
    postgres; conninfo_extra adds keywords (password=..., application_name=...)."""
    return (name, pg.conninfo(user="pgsweeper", dbname="postgres", **conninfo_extra))


def yaml_config(servers, rules, interval="1s", top="", server_extra=""):
    """servers: list of (name, conninfo, ...) (what follows conninfo is
    ignored); rules: YAML text of a rules list (indented for the server level,
    i.e. starting with '      - name:'), the same for every server.
    interval=None writes no interval: line (the daemon's default); top goes
    after it, before servers:; server_extra into every server, before rules:."""
    text = "" if interval is None else f"interval: {interval}\n"
    text += f"{top}servers:\n"
    for name, conninfo, *_ in servers:
        text += (f"  - name: {name}\n"
                 f"    conninfo: {yaml_str(conninfo)}\n"
                 f"{server_extra}"
                 f"    rules:\n{rules}")
    return text


def idle_rule(max_idle="2s", action="terminate", name="idle-sessions", extra=""):
    return (f"      - name: {name}\n"
            f"        max_idle: {max_idle}\n"
            f"        action: {action}\n{extra}")


# A query that shrugs off every cancel: only a terminate ends it.
ESCALATION_SQL = """
DO $$
BEGIN
  FOR i IN 1..600 LOOP
    BEGIN
      PERFORM pg_sleep(0.1);
    EXCEPTION WHEN query_canceled THEN
      NULL;   -- shrug off the cancel and keep going
    END;
  END LOOP;
END $$"""


class ActiveQuery:
    """Runs a long query on conn in a thread (the session stays 'active')."""

    def __init__(self, pg, conn, sql="SELECT pg_sleep(30)"):
        self.pg = pg
        self.conn = conn
        self.pid = conn.info.backend_pid
        self.error = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(sql,), daemon=True)
        self.thread.start()

    def _run(self, sql):
        try:
            self.conn.execute(sql)
        except Exception as e:  # cancelled at the end of the test, or killed
            self.error = e
        finally:
            self.done.set()

    def wait_active(self, timeout=5):
        import time
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = self.pg.activity(self.pid)
            if row and row[4] == "active":
                return
            time.sleep(0.02)
        raise AssertionError(f"pid {self.pid} never became active")

    def stop(self):
        if not self.done.is_set():
            self.pg.admin_query("SELECT pg_cancel_backend(%s)", (self.pid,))
        self.thread.join(10)

    @property
    def killed(self):
        """True if the query ended with a lost-connection error (terminate)."""
        return isinstance(self.error, psycopg.OperationalError) and \
            not isinstance(self.error, psycopg.errors.QueryCanceled)


# pgsweeper's own guarded statement, run with values of the test's choosing
# (tests/tools/guarded-action.c), so that the race between snapshot and action
# is exercised deterministically.
GUARDED_ACTION = Path(os.environ.get("PGSWEEPER_GUARDED_ACTION", REPO / "build" / "tests" / "guarded-action"))
_US = "(extract(epoch FROM {}) * 1000000)::int8"


def snapshot_of(pg, pid):
    """The values pgsweeper's snapshot would carry for pid, as strings:
    [state, backend_start, state_change, query_start, xact_start] (the times
    in microseconds, "null" for none)."""
    cols = ", ".join(_US.format(c) for c in ("backend_start", "state_change", "query_start", "xact_start"))
    rows = pg.admin_query(f"SELECT state, {cols} FROM pg_stat_activity WHERE pid = %s", (pid,))
    assert rows, f"pid {pid} not in pg_stat_activity"
    state, *ts = rows[0]
    return [state] + ["null" if t is None else str(t) for t in ts]


def guarded_action(pg, pid, values, limit="max_idle", action="terminate", user="pgsweeper"):
    """The guarded action on pid judged with values (as snapshot_of returns
    them), logged in as user; its result: terminated, cancelled, changed,
    gone or denied."""
    argv = [str(GUARDED_ACTION), pg.conninfo(user=user, dbname="postgres"), limit, action, str(pid),
            *map(str, values)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"guarded-action failed: {r.stderr}"
    return r.stdout.strip()


def assert_connection_dead(conn):
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return
    raise AssertionError(f"connection of pid {conn.info.backend_pid} still works")


def assert_connection_alive(conn):
    assert conn.execute("SELECT 1").fetchone()[0] == 1
