"""Small helpers shared by the integration test files (not fixtures)."""

import re
import threading

import psycopg

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


def yaml_config(servers, rules, interval="1s", top=""):
    """servers: list of (name, conninfo); rules: YAML text of a rules list
    (indented for the server level, i.e. starting with '      - name:')."""
    text = f"interval: {interval}\n{top}servers:\n"
    for name, conninfo in servers:
        text += (f"  - name: {name}\n"
                 f"    conninfo: \"{conninfo}\"\n"
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


def assert_connection_dead(conn):
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return
    raise AssertionError(f"connection of pid {conn.info.backend_pid} still works")


def assert_connection_alive(conn):
    assert conn.execute("SELECT 1").fetchone()[0] == 1
