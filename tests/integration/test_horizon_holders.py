"""The horizon's holders that are not sessions (SPEC 19), against a cluster
of its own with max_prepared_transactions and wal_level=logical: a prepared
transaction and a logical replication slot, aged by burning transaction IDs.

- On a server with a max_xmin_age rule below their age, the daemon warns
  about each exactly once over many polls (MESSAGE_ID_HORIZON_HOLDER, the
  fields, the exact command that releases it; a gid and a database name with
  a quote, a backslash and a newline: escaped in MESSAGE, raw in the
  fields), never acts on them, and the gauge pgsweeper_horizon_age shows
  their ages; the commands of the entries, run as they are, release them.
- With max_xmin_age above their age: no warning, the gauge still there.
- A server without max_xmin_age never reads them: its snapshot statement's
  scans of pg_prepared_xact() and pg_get_replication_slots() are never
  executed (auto_explain with log_analyze, for the role of that server
  only), while the same statement for a server with the rule does run them
  (the control that shows the check can see a difference); no warning, no
  horizon gauge for it.

A logical slot is created before the prepared transaction: creating one
waits for every running transaction, prepared ones included."""

import contextlib
import re
import signal
import time

import psycopg
import pytest

from conftest import start_cluster, stop_process, wait_until
from pgs_helpers import main_server, yaml_config, yaml_str
from promtext import parse as parse_metrics, value as metric_value

MESSAGE_ID_HORIZON_HOLDER = "cacf578808084e17add8fd10d9f5ea00"

# Roles whose every statement auto_explain logs with its plan and actual row
# counts (ALTER ROLE ... SET): the daemons of the reading test log in as them.
EXPLAINED_ROLES = ("pgs_plain", "pgs_hz")
SETTINGS = {
    "max_prepared_transactions": 10,
    "wal_level": "logical",
    "max_replication_slots": 10,
    "max_wal_senders": 10,
    "session_preload_libraries": "auto_explain",
    "log_line_prefix": "%m [%p] user=%u ",
}
# A database and a gid with a quote, a backslash and a newline (slot names
# are [a-z0-9_] only: the slot's database carries them instead).
DBNAME = "hz'db\\x\nend"
GID = "gid'1\\n\nsecond line"
SLOT = "hz_slot"
BURN = "DO $$ BEGIN FOR i IN 1..%d LOOP PERFORM txid_current(); COMMIT; END LOOP; END $$"
BURNED = 1000
INTERVAL = "200ms"


@pytest.fixture(scope="module")
def hcluster():
    cluster = start_cluster(SETTINGS)
    try:
        with connect(cluster, "postgres") as c:
            c.execute("CREATE DATABASE " + ident(DBNAME))
            for role in EXPLAINED_ROLES:
                c.execute(f"CREATE ROLE {role} LOGIN")
                c.execute(f"GRANT pg_monitor, pg_signal_backend TO {role}")
                for name, value in (("auto_explain.log_min_duration", "0"), ("auto_explain.log_analyze", "on"),
                                    ("auto_explain.log_timing", "off"), ("auto_explain.log_format", "text")):
                    c.execute(f"ALTER ROLE {role} SET {name} = {value}")
        assert cluster.admin_query("SHOW max_prepared_transactions")[0][0] == "10"
        assert cluster.admin_query("SHOW wal_level")[0][0] == "logical"
    except BaseException:
        cluster.stop()
        raise
    yield cluster
    cluster.stop()


def ident(name):
    return '"' + name.replace('"', '""') + '"'


def literal(s):
    return "'" + s.replace("'", "''") + "'"


def escaped(s):
    """How a line shows a name (escape_string): a backslash doubled, a newline as \\x0a."""
    return s.replace("\\", "\\\\").replace("\n", "\\x0a")


def field(e, name):
    """A journal field as text: journalctl -o json gives one that is not
    printable (a newline) as an array of byte values."""
    v = e.get(name)
    return bytes(v).decode() if isinstance(v, list) else v


def connect(pg, dbname, user="postgres"):
    # keyword arguments: psycopg quotes the database name for the conninfo
    return psycopg.connect(host=pg.host, port=pg.port, dbname=dbname, user=user, autocommit=True, connect_timeout=10)


def holder_ages(pg):
    """{"prepared": age, "slot": age} right now."""
    p = pg.admin_query("SELECT age(transaction) FROM pg_prepared_xacts WHERE gid = %s", (GID,))
    s = pg.admin_query("SELECT greatest(age(xmin), age(catalog_xmin)) FROM pg_replication_slots "
                       "WHERE slot_name = %s", (SLOT,))
    return {"prepared": p[0][0] if p else None, "slot": s[0][0] if s else None}


@pytest.fixture
def holders(hcluster):
    """A logical slot in DBNAME, then a transaction of role app prepared there
    as GID, then BURNED transaction IDs burnt: both are at least BURNED old.
    Released at the end if a test left them."""
    pg = hcluster
    with connect(pg, DBNAME) as c:
        c.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (SLOT,))
    with connect(pg, DBNAME, user="app") as c:
        c.autocommit = False
        c.execute("SELECT txid_current()")                      # it has an xid
        c.execute("PREPARE TRANSACTION " + literal(GID))
        c.autocommit = True
    with connect(pg, "postgres") as c:
        c.execute(BURN % BURNED)
    ages = holder_ages(pg)
    assert ages["prepared"] >= BURNED and ages["slot"] >= BURNED, ages
    row = pg.admin_query("SELECT owner, database, to_char(prepared AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') "
                         "FROM pg_prepared_xacts WHERE gid = %s", (GID,))
    assert row and row[0][:2] == ("app", DBNAME), row
    yield {"prepared_at": row[0][2] + " UTC", **ages}
    with connect(pg, DBNAME) as c:
        if c.execute("SELECT 1 FROM pg_prepared_xacts WHERE gid = %s", (GID,)).fetchall():
            c.execute("ROLLBACK PREPARED " + literal(GID))
    with connect(pg, "postgres") as c:
        if c.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (SLOT,)).fetchall():
            c.execute("SELECT pg_drop_replication_slot(%s)", (SLOT,))


def run_daemon(sweeper, config, tmp_path, polls=12, timeout=30):
    """The daemon until its metrics file counts `polls` polls of every server,
    then SIGTERM; returns (pid, stderr, metrics samples after its exit)."""
    d = sweeper.start_daemon(config, "--log-target", "journal")
    metrics = tmp_path / "horizon.prom"

    def polled():
        if d.poll() is not None:
            raise AssertionError(f"pgsweeper exited with {d.returncode}: {d.stderr.read()}")
        try:
            s = parse_metrics(metrics.read_text())
        except (OSError, ValueError):
            return False
        counts = [v for (name, _), v in s.items() if name == "pgsweeper_polls_total"]
        return counts and min(counts) >= polls

    try:
        wait_until(polled, timeout, interval=0.1, what=f"{polls} polls")
    finally:
        stop_process(d, signal.SIGTERM)
    _, err = d.communicate()
    assert d.returncode == 0, err
    return d.pid, err, parse_metrics(metrics.read_text())


def config(pg, tmp_path, servers, interval=INTERVAL):
    """servers: [(name, user, rules YAML)]."""
    text = f"interval: {interval}\nmin_interval: 100ms\nmetrics_file: {tmp_path / 'horizon.prom'}\nservers:\n"
    for name, user, rules in servers:
        text += (f"  - name: {name}\n"
                 f"    conninfo: {yaml_str(pg.conninfo(user=user, dbname='postgres'))}\n"
                 f"    rules:\n{rules}")
    return text


def horizon_entries(journal, pid, cursor):
    return [e for e in journal.entries({"_PID": pid}, after_cursor=cursor)
            if e.get("MESSAGE_ID") == MESSAGE_ID_HORIZON_HOLDER]


def test_each_holder_warned_once_never_acted_on(hcluster, holders, sweeper, journal, tmp_path):
    pg = hcluster
    cursor = journal.cursor()
    pid, err, samples = run_daemon(
        sweeper, config(pg, tmp_path, [("main", "pgsweeper", "      - {name: horizon, max_xmin_age: 500}\n")]),
        tmp_path, polls=12)
    polls = metric_value(samples, "pgsweeper_polls_total", server="main")
    assert polls >= 12, samples
    got = horizon_entries(journal, pid, cursor)
    by_kind = {}
    for e in got:
        by_kind.setdefault(e.get("PGSWEEPER_HOLDER"), []).append(e)
    assert sorted(by_kind) == ["prepared", "slot"], got
    assert len(by_kind["prepared"]) == 1 and len(by_kind["slot"]) == 1, \
        f"each holder once over {polls:.0f} polls: {[field(e, 'MESSAGE') for e in got]}"
    after = holder_ages(pg)

    # the prepared transaction: every field, the names raw
    p = by_kind["prepared"][0]
    release = "ROLLBACK PREPARED " + literal(GID) + ";"
    assert p["PRIORITY"] == "4", p
    assert field(p, "PGSWEEPER_SERVER") == "main"
    assert field(p, "PGSWEEPER_GID") == GID, p
    assert field(p, "PGSWEEPER_USER") == "app"
    assert field(p, "PGSWEEPER_DATABASE") == DBNAME, p
    assert field(p, "PGSWEEPER_PREPARED_AT") == holders["prepared_at"], p
    assert holders["prepared"] <= int(p["PGSWEEPER_XMIN_AGE"]) <= after["prepared"], (p, holders, after)
    assert (p["PGSWEEPER_RULE"], p["PGSWEEPER_LIMIT"], p["PGSWEEPER_LIMIT_VALUE"]) == ("horizon", "max_xmin_age", "500")
    assert field(p, "PGSWEEPER_RELEASE") == release, p
    assert not {"PGSWEEPER_SLOT", "PGSWEEPER_SLOT_TYPE", "PGSWEEPER_SLOT_ACTIVE", "PGSWEEPER_PID"} & set(p), p
    message = field(p, "MESSAGE")
    assert message == (f"main: prepared transaction {escaped(GID)} (owner app, database {escaped(DBNAME)}, "
                       f"prepared {holders['prepared_at']}) holds xmin {p['PGSWEEPER_XMIN_AGE']} transactions old "
                       f">= max_xmin_age 500 [rule horizon]; pgsweeper never ends it: if it is abandoned, run "
                       f"{escaped(release)} in database {escaped(DBNAME)} (COMMIT PREPARED keeps its work "
                       f"instead)"), message

    # the slot
    s = by_kind["slot"][0]
    drop = f"SELECT pg_drop_replication_slot('{SLOT}');"
    assert s["PRIORITY"] == "4", s
    assert field(s, "PGSWEEPER_SLOT") == SLOT and field(s, "PGSWEEPER_SLOT_TYPE") == "logical", s
    assert field(s, "PGSWEEPER_SLOT_ACTIVE") == "0", s
    assert field(s, "PGSWEEPER_DATABASE") == DBNAME, s
    assert holders["slot"] <= int(s["PGSWEEPER_XMIN_AGE"]) <= after["slot"], (s, holders, after)
    assert (s["PGSWEEPER_RULE"], s["PGSWEEPER_LIMIT"], s["PGSWEEPER_LIMIT_VALUE"]) == ("horizon", "max_xmin_age", "500")
    assert field(s, "PGSWEEPER_RELEASE") == drop, s
    assert not {"PGSWEEPER_GID", "PGSWEEPER_USER", "PGSWEEPER_PREPARED_AT", "PGSWEEPER_PID"} & set(s), s
    assert field(s, "MESSAGE") == (
        f"main: replication slot {SLOT} (logical, inactive, database {escaped(DBNAME)}) holds xmin "
        f"{s['PGSWEEPER_XMIN_AGE']} transactions old >= max_xmin_age 500 [rule horizon]; pgsweeper never drops "
        f"it: once its consumer is gone for good, run {drop} (a consumer that comes back finds it gone)"), s

    # never acted on: both still there, nothing else logged about them
    assert after["prepared"] is not None and after["slot"] is not None, after
    assert not any("PGSWEEPER_ACTION" in e for e in journal.entries({"_PID": pid}, after_cursor=cursor))

    # the gauge: the oldest of each kind (read at the last poll: between what
    # the holders were before the daemon and what they are now)
    for kind in ("prepared", "slot"):
        v = metric_value(samples, "pgsweeper_horizon_age", server="main", holder=kind)
        assert v is not None and holders[kind] <= v <= after[kind], (kind, v, holders, after)
    assert metric_value(samples, "pgsweeper_horizon_age", server="main", holder="session") is not None

    # the commands of the entries, run as they are, release them: the
    # rollback in its database as its owner, the drop from another database
    with connect(pg, field(p, "PGSWEEPER_DATABASE"), user=field(p, "PGSWEEPER_USER")) as c:
        c.execute(field(p, "PGSWEEPER_RELEASE"))
    with connect(pg, "postgres") as c:
        c.execute(field(s, "PGSWEEPER_RELEASE"))
    assert holder_ages(pg) == {"prepared": None, "slot": None}


def test_under_the_limit_no_warning_gauge_still_there(hcluster, holders, sweeper, journal, tmp_path):
    pg = hcluster
    cursor = journal.cursor()
    pid, err, samples = run_daemon(
        sweeper, config(pg, tmp_path, [("main", "pgsweeper", "      - {name: horizon, max_xmin_age: 1_000_000}\n")]),
        tmp_path, polls=8)
    assert horizon_entries(journal, pid, cursor) == []
    after = holder_ages(pg)
    for kind in ("prepared", "slot"):
        v = metric_value(samples, "pgsweeper_horizon_age", server="main", holder=kind)
        assert v is not None and holders[kind] <= v <= after[kind], (kind, v, holders, after)
    assert after["prepared"] is not None and after["slot"] is not None


# The scans of the two holders in the logged plan of the snapshot statement.
SCANS = {"prepared": "Function Scan on pg_prepared_xact", "slot": "Function Scan on pg_get_replication_slots"}
LOG_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \S+ \[\d+\] user=(\S*) ", re.M)


def logged_plans(text, user):
    """The auto_explain messages of that role in the server log text."""
    starts = list(LOG_START.finditer(text))
    out = []
    for i, m in enumerate(starts):
        msg = text[m.start():starts[i + 1].start() if i + 1 < len(starts) else len(text)]
        if m.group(1) == user and "plan:" in msg and "Query Text:" in msg:
            out.append(msg)
    return out


def scan_lines(plan, kind):
    return [line.strip() for line in plan.splitlines() if SCANS[kind] in line]


def test_server_without_max_xmin_age_never_reads_them(hcluster, holders, sweeper, journal, tmp_path):
    """One daemon, two servers on the same cluster, each logged in as its own
    role: "plain" (max_idle only) and "hz" (max_xmin_age far above their
    age). auto_explain logs each role's statements with actual row counts:
    plain's snapshot never executes the scans of the holders, hz's runs them
    at every poll (and finds one of each). No warning from either; the
    gauge for hz only."""
    pg = hcluster
    log_from = pg.logfile.stat().st_size
    cursor = journal.cursor()
    pid, err, samples = run_daemon(sweeper, config(pg, tmp_path, [
        ("plain", "pgs_plain", "      - {name: idle, max_idle: 1h}\n"),
        ("hz", "pgs_hz", "      - {name: idle, max_idle: 1h}\n      - {name: horizon, max_xmin_age: 1_000_000_000}\n"),
    ]), tmp_path, polls=6)
    log = pg.logfile.read_bytes()[log_from:].decode(errors="replace")

    for user, read in (("pgs_plain", False), ("pgs_hz", True)):
        snapshots = [p for p in logged_plans(log, user) if "pg_stat_get_activity(NULL)" in p]
        assert len(snapshots) >= 6, f"{user}: {len(snapshots)} snapshot plans logged:\n{log[-3000:]}"
        for plan in snapshots:
            for kind in SCANS:
                lines = scan_lines(plan, kind)
                assert len(lines) == 1, f"{user}: one {SCANS[kind]} in the plan:\n{plan}"
                if read:
                    # executed once, one row: the holder of the fixture (18 prints rows=1.00)
                    assert re.search(r"\(actual rows=1(?:\.00)? loops=1\)", lines[0]), f"{user}: {lines[0]}\n{plan}"
                else:
                    assert lines[0].endswith("(never executed)"), f"{user}: {lines[0]}\n{plan}"

    assert horizon_entries(journal, pid, cursor) == []
    assert not [k for k in samples if k[0] == "pgsweeper_horizon_age" and ("server", "plain") in k[1]], samples
    for kind in ("session", "prepared", "slot"):
        assert metric_value(samples, "pgsweeper_horizon_age", server="hz", holder=kind) is not None, samples
    assert metric_value(samples, "pgsweeper_horizon_age", server="hz", holder="prepared") >= holders["prepared"]


def test_reload_without_the_rule_drops_the_gauge_and_forgets(hcluster, holders, sweeper, journal, tmp_path):
    """A reload that takes max_xmin_age away: the next polls no longer read
    the horizon, the gauge goes from the metrics file (it does not stay
    frozen at its last value), and the holders are forgotten: a reload that
    brings the rule back says each of them again, once."""
    pg = hcluster
    with_rule = config(pg, tmp_path, [("main", "pgsweeper", "      - {name: horizon, max_xmin_age: 500}\n")])
    without = config(pg, tmp_path, [("main", "pgsweeper", "      - {name: idle, max_idle: 1h}\n")])
    metrics = tmp_path / "horizon.prom"
    cursor = journal.cursor()
    d = sweeper.start_daemon(with_rule, "--log-target", "journal")
    path = sweeper.tmp_path / f"pgsweeper-{sweeper._n}.yaml"

    def samples():
        try:
            return parse_metrics(metrics.read_text())
        except (OSError, ValueError):
            return {}

    def gauge():
        return metric_value(samples(), "pgsweeper_horizon_age", server="main", holder="slot")

    def polls():
        return metric_value(samples(), "pgsweeper_polls_total", server="main") or 0

    def said():
        return sorted(e.get("PGSWEEPER_HOLDER") for e in horizon_entries(journal, d.pid, cursor))

    try:
        wait_until(lambda: said() == ["prepared", "slot"] and gauge() is not None, 15, interval=0.2,
                   what="both holders said and the gauge")
        path.write_text(without)
        d.send_signal(signal.SIGHUP)
        wait_until(lambda: gauge() is None, 15, interval=0.1, what="the gauge gone after the reload")
        p0 = polls()
        wait_until(lambda: polls() >= p0 + 5, 15, interval=0.1, what="5 polls without the rule")
        assert gauge() is None and said() == ["prepared", "slot"]
        path.write_text(with_rule)
        d.send_signal(signal.SIGHUP)
        wait_until(lambda: len(said()) == 4, 15, interval=0.2, what="both said again after the rule came back")
        p0 = polls()
        wait_until(lambda: polls() >= p0 + 5, 15, interval=0.1, what="5 more polls")
    finally:
        stop_process(d, signal.SIGTERM)
    d.communicate()
    got = horizon_entries(journal, d.pid, cursor)
    assert sorted(e.get("PGSWEEPER_HOLDER") for e in got) == ["prepared", "prepared", "slot", "slot"], got
    assert not any("still there" in field(e, "MESSAGE") for e in got), got
    assert gauge() is not None
