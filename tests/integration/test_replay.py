"""Replay (SPEC 17, issue 21): `--capture` (and sql/capture.sql through psql)
saves every session the rules read; `--explain --from FILE` judges that
capture with the configured rules, at the capture's now(), connecting
nowhere; its verdicts are the live --explain's taken at the same moment.

The capture side runs against real PostgreSQL 13 to 18; the replay side
judges what the capture holds (a server stopped, a config it never had)."""

import contextlib
import datetime
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from conftest import HOSTILE, PG_BINDIR, REPO, free_tcp_port, start_cluster, stop_process, wait_until
from pgs_helpers import assert_connection_alive, main_server, yaml_config, yaml_str
from test_explain import KEYS, assert_no_unsafe, json_name_bytes
from test_locks import idle_blocker, start_waiters, table  # noqa: F401  (table: a fixture)

CAPTURE_SQL = REPO / "sql" / "capture.sql"
CAPTURE_KEYS = ["pgsweeper_capture", "server", "server_version", "now", "role", "current_user", "connections",
                "connection_slots", "groups", "sessions", "holders"]
SESSION_KEYS = ["pid", "backend_type", "superuser", "state", "backend_start", "state_change", "query_start",
                "xact_start", "wait_start", "user", "database", "application", "client_addr", "wait_event_type",
                "blocking_pids", "xmin_age", "query"]
HOLDER_KEYS = ["holder", "name", "owner", "database", "slot_type", "active", "prepared_at", "xmin_age"]
# what differs between two reads of the same sessions a moment apart
TIMED = ("elapsed_ms", "remaining_ms")


# -- running the binary ----------------------------------------------------------

def run(sweeper, cfg, *args, expect=0, timeout=60):
    """The binary with a config (text, written to a file); stdout and stderr
    as bytes (a capture holds what the server holds: bytes that are not
    UTF-8 included). .pid is the process's."""
    argv = sweeper.argv(cfg, args)
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise AssertionError(f"{argv} did not finish within {timeout}s\nstdout:\n{out!r}\nstderr:\n{err!r}")
    assert p.returncode == expect, \
        f"{argv}: exit {p.returncode}, wanted {expect}\nstdout:\n{out!r}\nstderr:\n{err.decode(errors='replace')}"
    r = subprocess.CompletedProcess(argv, p.returncode, out, err)
    r.pid = p.pid
    r.config = argv[2]
    return r


def take_capture(sweeper, cfg, path, *args, expect=0):
    """--capture into path; the parsed array."""
    r = run(sweeper, cfg, "--capture", *args, expect=expect)
    path.write_bytes(r.stdout)
    data = parse_capture(r.stdout)
    assert isinstance(data, list), data
    for obj in data:
        check_capture_shape(obj)
    return data, r


def parse_capture(raw):
    """A capture's JSON: strings may hold bytes that are not UTF-8 (a role
    renamed to one); those come back as surrogates."""
    return json.loads(raw.decode("utf-8", errors="surrogateescape"))


def check_capture_shape(obj):
    assert list(obj) == CAPTURE_KEYS, list(obj)
    assert obj["pgsweeper_capture"] == 1
    for s in obj["sessions"]:
        assert list(s) == SESSION_KEYS, s
    for h in obj["holders"]:
        assert list(h) == HOLDER_KEYS, h


def explain_json(sweeper, cfg, *args, expect=0):
    r = run(sweeper, cfg, "--explain", "--json", *args, expect=expect)
    out = r.stdout.decode("utf-8")          # strict: --json is valid UTF-8 whatever the names hold
    assert_no_unsafe(out)
    rows = json.loads(out)
    assert isinstance(rows, list), rows
    for row in rows:
        assert list(row) == KEYS, row
    return rows, r


def explain_text(sweeper, cfg, *args, expect=0):
    r = run(sweeper, cfg, "--explain", *args, expect=expect)
    out = r.stdout.decode("utf-8")
    assert_no_unsafe(out)
    return out, r


def replay_json(sweeper, cfg, path, *args, expect=0):
    rows, r = explain_json(sweeper, cfg, "--from", str(path), *args, expect=expect)
    assert r.stderr == b"", r.stderr
    return rows, r


def replay_text(sweeper, cfg, path, *args, expect=0):
    out, r = explain_text(sweeper, cfg, "--from", str(path), *args, expect=expect)
    assert r.stderr == b"", r.stderr
    return out


def by_pid(rows, server="main"):
    """{pid: row} of the sessions (holders, after them, have no pid)."""
    out = {}
    for row in rows:
        if row["server"] == server and row["holder"] is None:
            assert row["pid"] not in out, f"two rows for pid {row['pid']}"
            out[row["pid"]] = row
    return out


SESSION_TITLES = ["SERVER", "PID", "USER", "DATABASE", "APPLICATION", "CLIENT", "STATE", "ELAPSED", "VERDICT"]
HOLDER_TITLES = ["SERVER", "HOLDER", "NAME", "OWNER", "DATABASE", "AGE", "VERDICT"]


def table_cells(lines, want_titles):
    """[{COLUMN: cell}] of one of explain's text tables, cut where the
    header's titles start (every row is aligned on them)."""
    assert lines, lines
    titles = [(m.group(), m.start()) for m in re.finditer(r"\S+", lines[0])]
    assert [t for t, _ in titles] == want_titles, lines[0]
    out = []
    for line in lines[1:]:
        cells = {}
        for k, (title, start) in enumerate(titles):
            end = titles[k + 1][1] if k + 1 < len(titles) else None
            assert start == 0 or line[start - 2:start] == "  ", (title, line)
            assert line[start] != " ", (title, line)
            cells[title] = line[start:end].rstrip() if end else line[start:]
        out.append(cells)
    return out


def text_tables(out):
    """The session table's lines and the holder table's (after a blank
    line; [] when there is none)."""
    lines = out.splitlines()
    assert lines and lines[0].startswith("SERVER"), out
    if "" not in lines:
        return lines, []
    i = lines.index("")
    assert lines[i + 1].startswith("SERVER") and "" not in lines[i + 1:], out
    return lines[:i], lines[i + 1:]


def text_cells(out):
    """{pid: {COLUMN: cell}} of explain's session table, and the pids in
    order."""
    rows, order = {}, []
    for cells in table_cells(text_tables(out)[0], SESSION_TITLES):
        pid = int(cells["PID"])
        rows[pid] = cells
        order.append(pid)
    return rows, order


def holder_text_cells(out):
    """[{COLUMN: cell}] of explain's holder table, in order ([] without one)."""
    lines = text_tables(out)[1]
    return table_cells(lines, HOLDER_TITLES) if lines else []


def holder_rows(rows):
    """The --json rows of prepared transactions and slots, in order: all after the sessions."""
    kinds = [r["holder"] is not None for r in rows]
    assert kinds == sorted(kinds), "a holder before a session"
    return [r for r in rows if r["holder"] is not None]


def untimed(cells):
    """A text row without what moves with the clock: ELAPSED, and the time
    left in a `next` verdict."""
    c = dict(cells)
    del c["ELAPSED"]
    c["VERDICT"] = re.sub(r" in \S+ -> ", " in ... -> ", c["VERDICT"])
    return c


def ts_us(text):
    """A capture TIMESTAMP (UTC, as capture writes it) in microseconds."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?Z", text)
    assert m, text
    dt = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    return int(dt.timestamp()) * 1000000 + int((m.group(2) or "0").ljust(6, "0"))


def session(capture_obj, pid):
    got = [s for s in capture_obj["sessions"] if s["pid"] == pid]
    assert len(got) == 1, f"pid {pid} in the capture {len(got)} times"
    return got[0]


def no_sweeper_backends(pg):
    """The last run's connection (application pgsweeper) is gone: two reads
    count the same connections."""
    return pg.admin_query("SELECT count(*) FROM pg_stat_activity WHERE usename = 'pgsweeper' "
                          "AND application_name = 'pgsweeper'")[0][0] == 0


def not_ours(rows):
    """{pid: row} without the connections of the pgsweeper runs (each read
    shows the other's if it lingers)."""
    return {p: r for p, r in by_pid(rows).items() if (r["user"], r["application"]) != ("pgsweeper", "pgsweeper")}


def same_rows(live, replay, gap_ms, pids):
    """Row for row the same verdicts; elapsed and remaining moved by at most
    the gap between the two reads (the capture first)."""
    for pid in pids:
        a, b = live[pid], replay[pid]
        for k in KEYS:
            if k not in TIMED:
                assert a[k] == b[k], f"pid {pid} {k}: live {a[k]!r}, replay {b[k]!r}\nlive {a}\nreplay {b}"
        for k in TIMED:
            assert (a[k] is None) == (b[k] is None), (k, a, b)
        if a["elapsed_ms"] is not None:
            assert 0 <= a["elapsed_ms"] - b["elapsed_ms"] <= gap_ms, (gap_ms, a, b)
        if a["remaining_ms"] is not None:
            assert 0 <= b["remaining_ms"] - a["remaining_ms"] <= gap_ms, (gap_ms, a, b)


def psql_binary():
    own = Path(PG_BINDIR) / "psql"
    return str(own) if os.access(own, os.X_OK) else "/usr/lib/postgresql/15/bin/psql"


def psql_capture(pg, *variables, expect=0):
    argv = [psql_binary(), "-XAt"]
    for v in variables:
        argv += ["-v", v]
    argv += ["-f", str(CAPTURE_SQL), pg.conninfo(user="pgsweeper", dbname="postgres")]
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    if expect == 0:
        assert p.returncode == 0, f"{argv}: exit {p.returncode}\n{p.stderr.decode(errors='replace')}"
    else:
        assert p.returncode != 0, f"{argv} succeeded: {p.stdout!r}"
    return p


# -- a cluster this file may stop ----------------------------------------------

@pytest.fixture
def own_pg():
    """A cluster of this test's own, small, that the test stops (the session's
    `pg` stays up for the other tests); whatever is left is stopped at the end."""
    c = start_cluster({"max_connections": 40, "superuser_reserved_connections": 3})
    try:
        yield c
    finally:
        c.stop()


def make_lock_table(pg):
    c = pg.connect()
    c.execute("DROP TABLE IF EXISTS lk")
    c.execute("CREATE TABLE lk (id int PRIMARY KEY, v int)")
    c.execute("INSERT INTO lk SELECT g, 0 FROM generate_series(1, 100) g")
    c.close()


# -- 1. every verdict kind: live and replay of the same moment -------------------

VERDICT_RULES = (
    "      - name: idle-fast\n"
    "        max_idle: 1s\n"
    "        users: [app]\n"
    "        applications: [over-me, exempt-global, exempt-server, exempt-rule]\n"
    "        exempt:\n"
    "          applications: [exempt-rule]\n"
    "      - {name: idle-slow, max_idle: 1h, action: cancel, users: [other]}\n"
    "      - {name: lock-blockers, max_blocking: 1s, applications: [blocker]}\n"
    "      - name: lock-queue\n"
    "        max_lock_wait: 3h\n"
    "        action: cancel\n"
    "        applications: [\"writer-*\"]\n"
    "        exempt:\n"
    "          applications: [writer-1]\n"
    "      - {name: cap, max_sessions: 2, per: application, applications: [capped]}\n"
    "      - {name: hot, when_connections_above: 1, max_idle: 2h, action: log, applications: [pressured]}\n")


def verdict_config(pg, tmp_path):
    return yaml_config([main_server(pg)], VERDICT_RULES, interval=None,
                       top=(f"metrics_file: {tmp_path / 'metrics.prom'}\n"
                            "exempt:\n"
                            "  applications: [exempt-global]\n"),
                       server_extra="    exempt:\n      applications: [exempt-server]\n")


# name: (verdict, rule, limit, action, reason, blocked)
EXPECTED = {
    "over-me": ("over", "idle-fast", "max_idle", "terminate", "limit", None),
    "next-me": ("next", "idle-slow", "max_idle", "cancel", "limit", None),
    "super-me": ("protected", None, None, None, "superuser", None),
    "exempt-global": ("exempt", None, None, None, "exempt-global", None),
    "exempt-server": ("exempt", None, None, None, "exempt-server", None),
    "exempt-rule": ("exempt", "idle-fast", None, None, "exempt-rule", None),
    "none-me": ("none", None, None, None, "no-rule", None),
    "blocker": ("over", "lock-blockers", "max_blocking", "terminate", "limit", 2),
    "writer-0": ("next", "lock-queue", "max_lock_wait", "cancel", "limit", 1),
    "writer-1": ("exempt", "lock-queue", None, None, "exempt-rule", None),
    "capped-0": ("over", "cap", "max_sessions", "terminate", "limit", None),
    "capped-1": ("none", "cap", None, None, "no-limit", None),
    "capped-2": ("none", "cap", None, None, "no-limit", None),
    "pressured": ("next", "hot", "max_idle", "log", "limit", None),
    "pgsweeper-daemon": ("protected", None, None, None, "own-role", None),
}


def open_verdict_sessions(pg):
    """A session of each verdict kind, and a lock chain: blocker (idle in
    transaction, holding a row) with writer-0 queued behind it and writer-1
    behind both. Returns {name: pid}, {name: connection}, the writers."""
    su = pg.connect(user="postgres", dbname="postgres")
    su.execute("CREATE ROLE lonely LOGIN")
    su.close()
    make_lock_table(pg)
    conns = {"over-me": pg.connect(user="app", application_name="over-me"),
             "next-me": pg.connect(user="other", application_name="next-me"),
             "super-me": pg.connect(user="postgres", dbname="postgres", application_name="super-me"),
             "exempt-global": pg.connect(user="app", application_name="exempt-global"),
             "exempt-server": pg.connect(user="app", application_name="exempt-server"),
             "exempt-rule": pg.connect(user="app", application_name="exempt-rule"),
             "none-me": pg.connect(user="lonely", dbname="postgres", application_name="none-me"),
             "pressured": pg.connect(user="app", application_name="pressured"),
             # another pgsweeper logged in as the role: the capture says which role took it
             "pgsweeper-daemon": pg.connect(user="pgsweeper", dbname="postgres", application_name="pgsweeper-daemon")}
    for i in range(3):                 # idle in this order: capped-0 the longest
        conns[f"capped-{i}"] = pg.connect(user="app", application_name="capped")
        conns[f"capped-{i}"].execute("SELECT 1")
        time.sleep(0.1)
    conns["blocker"] = idle_blocker(pg)
    writers = start_waiters(pg, 2, "UPDATE lk SET v = v + 1 WHERE id = 1")
    for i, w in enumerate(writers):
        conns[f"writer-{i}"] = w.conn
    # every limit that is passed is passed by 1 s or more at the capture, every
    # limit not reached is an hour or more away: the moments of the reads
    # cannot change a verdict. The `next` sessions are hours apart (1h, 2h,
    # 3h), so that their order cannot turn on a millisecond either.
    time.sleep(2.0)
    return {k: c.info.backend_pid for k, c in conns.items()}, conns, writers


def test_replay_gives_the_live_verdicts_with_the_server_stopped(own_pg, sweeper, tmp_path):
    pg = own_pg
    pids, conns, writers = open_verdict_sessions(pg)
    cfg = verdict_config(pg, tmp_path)
    cap_path = tmp_path / "capture.json"

    t0 = time.monotonic()
    cap, _ = take_capture(sweeper, cfg, cap_path)
    wait_until(lambda: no_sweeper_backends(pg), 10, what="the capture's connection gone")
    live, _ = explain_json(sweeper, cfg)
    gap_ms = (time.monotonic() - t0) * 1000 + 5
    wait_until(lambda: no_sweeper_backends(pg), 10, what="the explain's connection gone")
    live_text, _ = explain_text(sweeper, cfg)

    # nothing was signalled by any of it
    assert all(pg.pid_alive(p) for p in pids.values())
    assert not any(w.done.is_set() for w in writers)

    # the capture: one server, with every session the rules read
    assert len(cap) == 1
    obj = cap[0]
    assert (obj["server"], obj["role"], obj["current_user"]) == ("main", "primary", "pgsweeper")
    assert obj["connection_slots"] == 37
    for name, pid in pids.items():
        s = session(obj, pid)
        app = "capped" if name.startswith("capped") else name
        assert (s["backend_type"], s["application"]) == ("client backend", app), s
    assert session(obj, pids["blocker"])["state"] == "idle in transaction"
    assert session(obj, pids["blocker"])["blocking_pids"] is None
    assert session(obj, pids["writer-0"])["blocking_pids"] == [pids["blocker"]]
    w1 = session(obj, pids["writer-1"])["blocking_pids"]
    assert w1 and set(w1) <= {pids["blocker"], pids["writer-0"]}, w1
    assert session(obj, pids["super-me"])["superuser"] is True
    assert session(obj, pids["over-me"])["superuser"] is False

    # live, each kind is what it should be (so that "the same" means something)
    live_rows = not_ours(live)
    for name, want in EXPECTED.items():
        row = live_rows[pids[name]]
        assert (row["verdict"], row["rule"], row["limit"], row["action"], row["reason"], row["blocked"]) == want, \
            (name, row)

    # the server goes away: the replay connects nowhere
    stop_process(pg.proc, signal.SIGINT, timeout=30)
    assert pg.proc.poll() is not None
    replay, _ = replay_json(sweeper, cfg, cap_path)
    text = replay_text(sweeper, cfg, cap_path)

    # the same rows, live and replayed
    replay_rows = not_ours(replay)
    assert set(live_rows) == set(replay_rows), (live, replay)
    assert set(pids.values()) <= set(replay_rows)
    same_rows(live_rows, replay_rows, gap_ms, replay_rows)

    # each kind is what it should be (not merely the same twice)
    for name, (verdict, rule, limit, action, reason, blocked) in EXPECTED.items():
        row = replay_rows[pids[name]]
        assert (row["verdict"], row["rule"], row["limit"], row["action"], row["reason"], row["blocked"]) == \
            (verdict, rule, limit, action, reason, blocked), (name, row)
    cap_row = replay_rows[pids["capped-0"]]
    assert (cap_row["group"], cap_row["sessions"], cap_row["max_sessions"]) == ("application=capped", 3, 2), cap_row
    hot = replay_rows[pids["pressured"]]
    assert hot["connections"] == obj["connections"] and hot["connection_slots"] == 37, hot
    assert replay_rows[pids["super-me"]]["elapsed_ms"] is None

    # judged at the capture's now(), to the millisecond
    now = ts_us(obj["now"])
    over = replay_rows[pids["over-me"]]
    assert over["elapsed_ms"] == (now - ts_us(session(obj, pids["over-me"])["state_change"])) // 1000, over
    assert over["elapsed_ms"] >= 2000, over
    w0 = replay_rows[pids["writer-0"]]
    assert w0["elapsed_ms"] == (now - ts_us(session(obj, pids["writer-0"])["wait_start"])) // 1000, w0
    assert w0["remaining_ms"] == 3 * 3600000 - w0["elapsed_ms"], w0

    # the text form, row for row the live one's (the clock's columns aside)
    live_cells, live_order = text_cells(live_text)
    cells, order = text_cells(text)
    mine = set(pids.values())
    assert [p for p in order if p in mine] == [p for p in live_order if p in mine], (live_text, text)
    for pid in mine:
        assert untimed(cells[pid]) == untimed(live_cells[pid]), (cells[pid], live_cells[pid])
    assert cells[pids["blocker"]]["VERDICT"] == \
        "over lock-blockers: max_blocking 1s (2 waiting behind it) -> terminate", cells[pids["blocker"]]
    assert cells[pids["exempt-rule"]]["VERDICT"] == "exempt: exempt block of rule idle-fast"
    assert cells[pids["super-me"]]["VERDICT"] == "protected: superuser (terminate_superusers is off)"
    assert cells[pids["pgsweeper-daemon"]]["VERDICT"] == "protected: own connection (a pgsweeper logged in as its role)"
    assert not (tmp_path / "metrics.prom").exists(), "a capture or a replay wrote the metrics file"


# -- 2. the capture's time is the judgement's ------------------------------------

def test_judged_at_the_captures_now_not_the_replays(pg, sweeper, tmp_path):
    conn = pg.connect(user="app", application_name="half-idle")
    conn.execute("SELECT 1")
    pid = conn.info.backend_pid
    cfg = yaml_config([main_server(pg)], "      - {name: idle-2s, max_idle: 2s, applications: [half-idle]}\n",
                      interval=None)
    time.sleep(0.5)
    t0 = time.monotonic()
    cap, _ = take_capture(sweeper, cfg, tmp_path / "capture.json")
    s = session(cap[0], pid)
    idle_ms = (ts_us(cap[0]["now"]) - ts_us(s["state_change"])) // 1000
    assert 500 <= idle_ms < 2000, s
    time.sleep(max(0.0, 3.0 - (time.monotonic() - t0)))

    rows, _ = replay_json(sweeper, cfg, tmp_path / "capture.json")
    row = by_pid(rows)[pid]
    assert (row["verdict"], row["rule"], row["limit"]) == ("next", "idle-2s", "max_idle"), row
    assert row["elapsed_ms"] == idle_ms and row["remaining_ms"] == 2000 - idle_ms, row
    assert 0 < row["remaining_ms"] <= 1500, row
    line = [l for l in replay_text(sweeper, cfg, tmp_path / "capture.json").splitlines() if f"  {pid}  " in l]
    assert len(line) == 1 and re.search(r"  next idle-2s: max_idle 2s in \S+ -> terminate$", line[0]), line
    # the wall clock says otherwise: a live read now finds it over
    live, _ = explain_json(sweeper, cfg)
    assert by_pid(live)[pid]["verdict"] == "over", by_pid(live)[pid]
    assert_connection_alive(conn)


# -- 3. capture.sql through psql -----------------------------------------------

SQL_RULES = ("      - {name: idle-fast, max_idle: 1s, users: [app], applications: [over-me]}\n"
             "      - {name: idle-slow, max_idle: 1h, users: [other]}\n"
             "      - {name: lock-blockers, max_blocking: 1s, applications: [blocker]}\n"
             "      - {name: lock-queue, max_lock_wait: 1h, action: cancel, applications: [\"writer-*\"]}\n")


def test_capture_sql_through_psql_gives_the_same_verdicts(pg, sweeper, tmp_path, table):
    conns = [pg.connect(user="app", application_name="over-me"), pg.connect(user="other", application_name="n"),
             pg.connect(user="postgres", dbname="postgres", application_name="su")]
    blocker = idle_blocker(pg)
    writers = start_waiters(pg, 2, "UPDATE lk SET v = v + 1 WHERE id = 1")
    mine = {c.info.backend_pid for c in conns} | {blocker.info.backend_pid} | {w.pid for w in writers}
    time.sleep(1.5)
    cfg = yaml_config([main_server(pg)], SQL_RULES, interval=None)

    t0 = time.monotonic()
    ours, _ = take_capture(sweeper, cfg, tmp_path / "pgsweeper.json")
    p = psql_capture(pg, "server=main")
    gap_ms = (time.monotonic() - t0) * 1000 + 5
    assert p.stderr == b"", p.stderr
    (tmp_path / "psql.json").write_bytes(p.stdout)
    (tmp_path / "psql-list.json").write_bytes(b"[" + p.stdout + b"]")
    theirs = parse_capture(p.stdout)
    assert isinstance(theirs, dict), theirs          # one object, not an array
    check_capture_shape(theirs)

    # the same sessions, field for field (nothing of theirs moved meanwhile)
    ours = ours[0]
    assert (theirs["server"], theirs["role"], theirs["current_user"], theirs["connection_slots"]) == \
        (ours["server"], ours["role"], ours["current_user"], ours["connection_slots"])
    assert theirs["server_version"] == ours["server_version"]
    assert ts_us(ours["now"]) <= ts_us(theirs["now"])
    for pid in mine:
        a, b = session(ours, pid), session(theirs, pid)
        # an xid handed out meanwhile (autovacuum's analyze) ages a horizon
        assert {k: v for k, v in a.items() if k != "xmin_age"} == {k: v for k, v in b.items() if k != "xmin_age"}
        assert (a["xmin_age"] is None) == (b["xmin_age"] is None) and (a["xmin_age"] or 0) <= (b["xmin_age"] or 0)

    rows, _ = replay_json(sweeper, cfg, tmp_path / "pgsweeper.json")
    via_psql, r1 = replay_json(sweeper, cfg, tmp_path / "psql.json")
    _, r2 = replay_json(sweeper, cfg, tmp_path / "psql-list.json")
    assert r1.stdout == r2.stdout, "--from takes the object or an array of it alike"
    # replay's elapsed is the capture's: psql's read came after ours
    same_rows({p: r for p, r in by_pid(via_psql).items()}, by_pid(rows), gap_ms, mine)
    got = by_pid(via_psql)
    assert got[blocker.info.backend_pid]["verdict"] == "over" and got[blocker.info.backend_pid]["blocked"] == 2
    assert [got[w.pid]["verdict"] for w in writers] == ["next", "next"]
    blocker.rollback()
    for w in writers:
        w.thread.join(10)


def test_capture_sql_needs_the_servers_name(pg):
    p = psql_capture(pg, expect=1)
    assert p.stdout == b"", p.stdout
    assert b"capture.sql needs the server's name: psql -XAt -v server=NAME -f capture.sql" in p.stderr, p.stderr


# -- 4. replay with rules the capture never had -------------------------------

NIGHT_RULES = "      - {name: idle-long, max_idle: 1h, users: [app]}\n"
NEW_RULE = ("      - name: lock-blockers\n"
            "        max_blocking: 1s\n"
            "        exempt:\n"
            "          applications: [nightly-backup]\n")


@pytest.fixture
def last_night(pg, table, tmp_path, sweeper):
    """A batch job (idle in transaction) blocking two writers, and the backup
    blocking one; captured under rules that have nothing for either."""
    batch = idle_blocker(pg, app="nightly-batch")
    backup = pg.connect(application_name="nightly-backup", autocommit=False)
    backup.execute("UPDATE lk SET v = v + 1 WHERE id = 2")
    writers = start_waiters(pg, 2, "UPDATE lk SET v = v + 1 WHERE id = 1")
    behind_backup = start_waiters(pg, 1, "UPDATE lk SET v = v + 1 WHERE id = 2", app="reporter")
    time.sleep(1.5)
    cfg_a = yaml_config([main_server(pg)], NIGHT_RULES, interval=None)
    path = tmp_path / "last-night.json"
    take_capture(sweeper, cfg_a, path)
    yield dict(path=path, cfg_a=cfg_a, batch=batch.info.backend_pid, backup=backup.info.backend_pid,
               writers=[w.pid for w in writers], reporter=behind_backup[0].pid)
    batch.rollback()
    backup.rollback()
    for w in writers + behind_backup:
        w.thread.join(10)


def test_new_rule_ends_the_blocker_and_spares_the_backup(pg, sweeper, last_night):
    n = last_night
    before, _ = replay_json(sweeper, n["cfg_a"], n["path"])
    got = by_pid(before)
    for pid in (n["batch"], n["backup"]):
        assert (got[pid]["verdict"], got[pid]["reason"], got[pid]["rule"]) == ("none", "no-limit", "idle-long"), \
            got[pid]
    assert all(r["verdict"] != "over" for r in before), before

    cfg_b = yaml_config([main_server(pg)], NIGHT_RULES + NEW_RULE, interval=None)
    after, _ = replay_json(sweeper, cfg_b, n["path"])
    got = by_pid(after)
    batch = got[n["batch"]]
    assert (batch["verdict"], batch["rule"], batch["limit"], batch["action"], batch["blocked"]) == \
        ("over", "lock-blockers", "max_blocking", "terminate", 2), batch
    assert batch["elapsed_ms"] >= 1500, batch
    backup = got[n["backup"]]
    assert (backup["verdict"], backup["reason"], backup["rule"]) == ("exempt", "exempt-rule", "lock-blockers"), backup
    text = replay_text(sweeper, cfg_b, n["path"])
    cells, order = text_cells(text)
    assert order[0] == n["batch"], text
    assert cells[n["batch"]]["VERDICT"] == "over lock-blockers: max_blocking 1s (2 waiting behind it) -> terminate"
    assert cells[n["backup"]]["VERDICT"] == "exempt: exempt block of rule lock-blockers"

    # --dry-run: the same verdicts, the actions as a dry run
    dry, _ = replay_json(sweeper, cfg_b, n["path"], "--dry-run")
    assert by_pid(dry)[n["batch"]]["action"] == "dry-run", by_pid(dry)[n["batch"]]
    assert {k: v for k, v in by_pid(dry)[n["batch"]].items() if k != "action"} == \
        {k: v for k, v in batch.items() if k != "action"}
    cells, _ = text_cells(replay_text(sweeper, cfg_b, n["path"], "--dry-run"))
    assert cells[n["batch"]]["VERDICT"].endswith("-> terminate (dry-run)"), cells[n["batch"]]
    # the replay signalled nothing
    assert all(pg.pid_alive(p) for p in [n["batch"], n["backup"], *n["writers"], n["reporter"]])


def test_server_option_and_servers_not_configured(pg, sweeper, last_night, tmp_path):
    n = last_night
    dead = f"host=127.0.0.1 port={free_tcp_port()} dbname=postgres user=pgsweeper connect_timeout=1"
    # two servers, neither reachable: the rules are all a replay needs
    cfg = ("servers:\n"
           f"  - name: main\n    conninfo: {yaml_str(dead)}\n    rules:\n{NIGHT_RULES}"
           f"  - name: candidate\n    conninfo: {yaml_str(dead)}\n    rules:\n{NIGHT_RULES + NEW_RULE}")
    rows, _ = replay_json(sweeper, cfg, n["path"])
    assert {r["server"] for r in rows} == {"main"}
    assert by_pid(rows)[n["batch"]]["verdict"] == "none"

    # --server: the single captured server judged with another server's rules
    rows, _ = replay_json(sweeper, cfg, n["path"], "--server", "candidate")
    assert rows and {r["server"] for r in rows} == {"candidate"}, rows
    assert by_pid(rows, "candidate")[n["batch"]]["verdict"] == "over"

    r = run(sweeper, cfg, "--explain", "--from", str(n["path"]), "--server", "nowhere", expect=2)
    assert r.stdout == b""
    assert r.stderr.decode() == f'pgsweeper: --server "nowhere": no such server in {r.config}\n', r.stderr

    # a captured server the configuration does not have
    other = yaml_config([("elsewhere", dead)], NIGHT_RULES, interval=None)
    r = run(sweeper, other, "--explain", "--from", str(n["path"]), expect=2)
    assert r.stdout == b""
    assert r.stderr.decode() == (f'pgsweeper: {n["path"]}: server "main" is not in {r.config} '
                                 "(name the one whose rules judge it with --server)\n"), r.stderr
    rows, _ = replay_json(sweeper, other, n["path"], "--server", "elsewhere")
    assert {r["server"] for r in rows} == {"elsewhere"}

    # a capture of two servers: --server picks one of them, by name only
    two = yaml_config([main_server(pg), main_server(pg, "mirror")], NIGHT_RULES, interval=None)
    path2 = tmp_path / "two.json"
    cap, _ = take_capture(sweeper, two, path2)
    assert [o["server"] for o in cap] == ["main", "mirror"]
    rows, _ = replay_json(sweeper, two, path2)
    assert {r["server"] for r in rows} == {"main", "mirror"}
    rows, _ = replay_json(sweeper, two, path2, "--server", "mirror")
    assert {r["server"] for r in rows} == {"mirror"}
    r = run(sweeper, cfg, "--explain", "--from", str(path2), "--server", "candidate", expect=2)
    assert r.stderr.decode() == f'pgsweeper: --server "candidate": {path2} holds 2 servers, none of that name\n', \
        r.stderr
    assert r.stdout == b""


# -- 5. hostile names ------------------------------------------------------------

HOSTILE_DB = "d\u202e\n\"q'\t\\x41\x1b[1m\u2028"
HOSTILE_APP = "q\"uo\\te'x \\x41"


@pytest.fixture
def hostile_db(pg):
    su = pg.connect(user="postgres", dbname="postgres")
    ident = '"' + HOSTILE_DB.replace('"', '""') + '"'
    su.execute(f"CREATE DATABASE {ident} OWNER app")
    conns = []

    def connect(**kw):
        c = psycopg.connect(host=pg.host, port=pg.port, dbname=HOSTILE_DB, user="app", autocommit=True, **kw)
        conns.append(c)
        return c
    yield connect
    for c in conns:
        with contextlib.suppress(Exception):
            c.close()
    wait_until(lambda: not pg.admin_query("SELECT 1 FROM pg_stat_activity WHERE datname = %s", (HOSTILE_DB,)),
               10, what="the hostile database's sessions gone")
    su.execute(f"DROP DATABASE {ident}")


def test_hostile_names_escaped_as_live(pg, sweeper, tmp_path, hostile_sessions, hostile_db):
    h, = hostile_sessions(application_name=HOSTILE_APP)
    d = hostile_db(application_name="in-hostile-db")
    pids = [h.info.backend_pid, d.info.backend_pid]
    cfg = yaml_config([main_server(pg)], "      - {name: idle, max_idle: 1h}\n", interval=None)
    path = tmp_path / "capture.json"

    live, _ = explain_json(sweeper, cfg)
    live_text, _ = explain_text(sweeper, cfg)
    cap, _ = take_capture(sweeper, cfg, path)
    # the capture holds the names as the server has them
    assert session(cap[0], pids[0])["user"].encode("utf-8", errors="surrogateescape") == HOSTILE
    assert session(cap[0], pids[0])["application"] == HOSTILE_APP
    assert session(cap[0], pids[1])["database"] == HOSTILE_DB

    replay, _ = replay_json(sweeper, cfg, path)
    text = replay_text(sweeper, cfg, path)

    lrows, rrows = by_pid(live), by_pid(replay)
    for pid in pids:
        for k in ("user", "database", "application", "client_addr", "state", "verdict", "rule"):
            assert lrows[pid][k] == rrows[pid][k], (k, lrows[pid], rrows[pid])
    assert json_name_bytes(rrows[pids[0]]["user"]) == HOSTILE, rrows[pids[0]]
    assert json_name_bytes(rrows[pids[0]]["application"]) == HOSTILE_APP.encode()
    assert rrows[pids[1]]["database"] == HOSTILE_DB.replace("\\x41", "\\x5cx41"), rrows[pids[1]]
    lcells, _ = text_cells(live_text)
    cells, _ = text_cells(text)
    for pid in pids:
        assert untimed(cells[pid]) == untimed(lcells[pid]), (cells[pid], lcells[pid])
    assert cells[pids[0]]["USER"] == "h\\u202e\\x0aE\u2026", cells[pids[0]]
    assert cells[pids[1]]["DATABASE"] == "d\\u202e\\x0a\"q'\u2026", cells[pids[1]]


# -- 6. --capture touches nothing ------------------------------------------------

def test_capture_signals_nothing_and_writes_nothing(pg, sweeper, journal, tmp_path):
    conns = [pg.connect(user="app", application_name=f"victim-{i}") for i in range(3)]
    conns[0].execute("SELECT 1")
    pids = [c.info.backend_pid for c in conns]
    time.sleep(1.2)
    # rules that would end every one of them, a metrics file to write
    cfg = yaml_config([main_server(pg)], "      - {name: idle, max_idle: 1s, users: [app]}\n", interval=None,
                      top=f"metrics_file: {tmp_path / 'metrics.prom'}\n")
    cursor = journal.cursor()
    cap, r = take_capture(sweeper, cfg, tmp_path / "c.json")
    assert r.stderr == b"", r.stderr
    # every session is in it, as pg_stat_activity has it
    obj = cap[0]
    for c, pid in zip(conns, pids):
        s = session(obj, pid)
        row = pg.admin_query("SELECT usename, datname, application_name, state, "
                             "(extract(epoch FROM backend_start) * 1000000)::int8, "
                             "(extract(epoch FROM state_change) * 1000000)::int8 FROM pg_stat_activity "
                             "WHERE pid = %s", (pid,))[0]
        assert (s["user"], s["database"], s["application"], s["state"]) == row[:4], (s, row)
        assert (ts_us(s["backend_start"]), ts_us(s["state_change"])) == row[4:], (s, row)
        assert s["client_addr"] == "local" and s["superuser"] is False and s["blocking_pids"] is None
    time.sleep(0.5)
    for c, pid in zip(conns, pids):
        assert pg.pid_alive(pid)
        assert_connection_alive(c)
    entries = journal.entries(after_cursor=cursor)
    assert not [e for e in entries if e.get("_PID") == str(r.pid)], "--capture wrote to the journal"
    assert not [e for e in entries if e.get("PGSWEEPER_PID") in {str(p) for p in pids}]
    assert not (tmp_path / "metrics.prom").exists(), "--capture wrote the metrics file"


def test_capture_exit_codes(pg, sweeper, tmp_path):
    conn = pg.connect(user="app", application_name="multi")
    pid = conn.info.backend_pid
    down = f"host=127.0.0.1 port={free_tcp_port()} dbname=postgres user=pgsweeper connect_timeout=2"
    cfg = yaml_config([main_server(pg), ("down", down), main_server(pg, "mirror")],
                      "      - {name: idle, max_idle: 1h}\n", interval=None)
    cap, r = take_capture(sweeper, cfg, tmp_path / "c.json", expect=1)
    assert [o["server"] for o in cap] == ["main", "mirror"], cap
    assert all(session(o, pid)["application"] == "multi" for o in cap)
    err = r.stderr.decode()
    assert re.search(r"^pgsweeper: down: cannot connect", err, re.M), err
    # what it holds replays
    rows, _ = replay_json(sweeper, cfg, tmp_path / "c.json")
    assert pid in by_pid(rows, "main") and pid in by_pid(rows, "mirror")

    cap, _ = take_capture(sweeper, cfg, tmp_path / "m.json", "--server", "mirror")
    assert [o["server"] for o in cap] == ["mirror"]
    cap, _ = take_capture(sweeper, cfg, tmp_path / "d.json", "--server", "down", expect=1)
    assert cap == []
    r = run(sweeper, cfg, "--capture", "--server", "nowhere", expect=2)
    assert r.stdout == b""
    assert r.stderr.decode() == f'pgsweeper: --server "nowhere": no such server in {r.config}\n', r.stderr
    assert_connection_alive(conn)


WARN_NO_MONITOR = ("pgsweeper: main: warning: role other lacks pg_monitor: other roles' sessions are hidden "
                   "from it and left out; fix: GRANT pg_monitor TO other;\n")


def test_capture_by_a_role_without_pg_monitor_warns(pg, sweeper, tmp_path):
    """Without pg_read_all_stats the server hides other roles' sessions: the
    capture says so instead of looking complete."""
    conn = pg.connect(user="app", application_name="hidden")
    cfg = yaml_config([("main", pg.conninfo(user="other", dbname="postgres"))],
                      "      - {name: idle, max_idle: 1h}\n", interval=None)
    cap, r = take_capture(sweeper, cfg, tmp_path / "c.json")
    assert r.stderr.decode() == WARN_NO_MONITOR, r.stderr
    assert cap[0]["current_user"] == "other"
    assert conn.info.backend_pid not in {s["pid"] for s in cap[0]["sessions"]}, "another role's session, seen?"
    # live explain, from the same connection code, says the same
    r = run(sweeper, cfg, "--explain", "--json", expect=0)
    assert r.stderr.decode() == WARN_NO_MONITOR, r.stderr
    assert conn.info.backend_pid not in {row["pid"] for row in json.loads(r.stdout)}
    assert_connection_alive(conn)


# -- 7. a capture written by hand, judged exactly; and files that are not captures --

def hand_capture():
    """A capture as a person (or another tool) could write it: offsets, a
    space for the "T", fractions of any length, the bare object."""
    def s(pid, state, since, **kw):
        row = {"pid": pid, "backend_type": "client backend", "superuser": False, "state": state,
               "backend_start": "2026-01-01T09:00:00Z", "state_change": since, "query_start": since,
               "xact_start": None, "wait_start": None, "user": "app", "database": "appdb", "application": "web",
               "client_addr": "10.0.0.7", "wait_event_type": "Client", "blocking_pids": None, "xmin_age": None,
               "query": "SELECT 1"}
        row.update(kw)
        return row
    return {
        "pgsweeper_capture": 1, "server": "main", "server_version": "16.4", "now": "2026-01-01 12:00:00+02:00",
        "role": "primary", "current_user": "pgsweeper", "connections": 6, "connection_slots": 97,
        "groups": [{"user": "app", "database": "appdb", "application": "web", "client_addr": "10.0.0.7", "count": 5},
                   {"user": "postgres", "database": "postgres", "application": "psql", "client_addr": "local",
                    "count": 1}],
        "sessions": [
            s(101, "idle", "2026-01-01T09:58:30Z"),                          # idle 90 s
            s(102, "idle", "2026-01-01T11:59:59.5+02:00"),                   # idle 0.5 s
            s(103, "idle", "2026-01-01T09:00:00Z", superuser=True, user="postgres", database="postgres",
              application="psql", client_addr="local"),
            s(104, "idle in transaction", "2026-01-01T09:50:00Z", xact_start="2026-01-01T09:50:00Z",
              query="UPDATE t SET v = 1"),
            s(105, "active", "2026-01-01T09:59:00Z", wait_start="2026-01-01T09:59:00.25Z",
              wait_event_type="Lock", blocking_pids=[104], query="UPDATE t SET v = 2"),
            s(106, "active", "2026-01-01T09:59:50.123Z", application="report"),
            s(107, None, None, backend_type="autovacuum worker", user=None, database="appdb", application="",
              client_addr=None, query=None),
        ],
        "holders": [
            {"holder": "prepared", "name": "batch-42", "owner": "app", "database": "appdb", "slot_type": None,
             "active": None, "prepared_at": "2026-01-01T08:00:00+01:00", "xmin_age": 120000},
            {"holder": "slot", "name": "sub", "owner": None, "database": "appdb", "slot_type": "logical",
             "active": False, "prepared_at": None, "xmin_age": 250000},
            {"holder": "slot", "name": "standby-1", "owner": None, "database": None, "slot_type": "physical",
             "active": True, "prepared_at": None, "xmin_age": 40}]}


HAND_RULES = ("      - {name: idle, max_idle: 1m, applications: [web]}\n"
              "      - {name: blockers, max_blocking: 30s}\n"
              "      - {name: queue, max_lock_wait: 10m, action: cancel}\n"
              "      - {name: reports, max_query_duration: 20s, action: cancel, applications: [report]}\n")


def nowhere_config(rules=HAND_RULES, name="main"):
    dead = f"host=127.0.0.1 port={free_tcp_port()} dbname=postgres user=pgsweeper connect_timeout=1"
    return yaml_config([(name, dead)], rules, interval=None)


def test_hand_written_capture_is_judged_exactly(sweeper, tmp_path):
    path = tmp_path / "hand.json"
    path.write_text(json.dumps(hand_capture(), indent=1))
    rows, _ = replay_json(sweeper, nowhere_config(), path)
    got = by_pid(rows)
    assert sorted(got) == [101, 102, 103, 104, 105, 106], "the autovacuum worker is no session to explain"
    want = {
        101: ("over", "idle", "max_idle", 90000, None, "terminate", None),
        102: ("next", "idle", "max_idle", 500, 59500, "terminate", None),
        103: ("protected", None, None, None, None, None, None),
        104: ("over", "blockers", "max_blocking", 59750, None, "terminate", 1),
        105: ("next", "queue", "max_lock_wait", 59750, 540250, "cancel", 0),
        106: ("next", "reports", "max_query_duration", 9877, 10123, "cancel", None),
    }
    for pid, w in want.items():
        r = got[pid]
        assert (r["verdict"], r["rule"], r["limit"], r["elapsed_ms"], r["remaining_ms"], r["action"],
                r["blocked"]) == w, r
    assert (got[101]["user"], got[101]["database"], got[101]["application"], got[101]["client_addr"]) == \
        ("app", "appdb", "web", "10.0.0.7")
    assert got[104]["state"] == "idle in transaction"
    # the bare object and an array of it are the same capture
    listed = tmp_path / "listed.json"
    listed.write_text(json.dumps([hand_capture()]))
    again, _ = replay_json(sweeper, nowhere_config(), listed)
    assert again == rows
    text = replay_text(sweeper, nowhere_config(), path)
    cells, order = text_cells(text)
    assert order == [101, 104, 106, 102, 105, 103], text
    assert cells[101]["ELAPSED"] == "1m30s" and cells[101]["VERDICT"] == "over idle: max_idle 1m -> terminate"
    assert cells[104]["VERDICT"] == "over blockers: max_blocking 30s (1 waiting behind it) -> terminate", cells[104]
    # no rule sets max_xmin_age: the prepared transaction and the slots are not judged, nor shown
    assert holder_rows(rows) == [] and holder_text_cells(text) == [], text


HORIZON_RULES = ("      - {name: horizon, max_xmin_age: 100000, applications: [none-such]}\n"
                 "      - {name: wide, max_xmin_age: 1_000_000}\n")


def test_hand_written_holders_are_judged_exactly(sweeper, tmp_path):
    """With max_xmin_age, the capture's holders follow the sessions, judged
    against the smallest limit of the server's rules (whatever its filters),
    warned about and never acted on."""
    path = tmp_path / "hand.json"
    path.write_text(json.dumps(hand_capture(), indent=1))
    plain, _ = replay_json(sweeper, nowhere_config(), path)
    rows, _ = replay_json(sweeper, nowhere_config(HAND_RULES + HORIZON_RULES), path)
    # the sessions' verdicts are the same (none holds an xmin)
    assert by_pid(rows) == by_pid(plain)
    nulls = {k: None for k in KEYS}
    common = dict(nulls, server="main", rule="horizon", limit="max_xmin_age", limit_ms=100000)
    assert holder_rows(rows) == [
        dict(common, database="appdb", verdict="warn", elapsed_ms=250000, reason="horizon-holder", holder="slot",
             name="sub", release="SELECT pg_drop_replication_slot('sub');", slot_type="logical", active=False),
        dict(common, user="app", database="appdb", verdict="warn", elapsed_ms=120000, reason="horizon-holder",
             holder="prepared", name="batch-42", release="ROLLBACK PREPARED 'batch-42';"),
        dict(common, verdict="none", elapsed_ms=40, reason="below-limit", holder="slot", name="standby-1",
             release="SELECT pg_drop_replication_slot('standby-1');", slot_type="physical", active=True),
    ], rows
    text = replay_text(sweeper, nowhere_config(HAND_RULES + HORIZON_RULES), path)
    assert text_cells(text) == text_cells(replay_text(sweeper, nowhere_config(), path))
    assert holder_text_cells(text) == [
        {"SERVER": "main", "HOLDER": "slot (logical, inactive)", "NAME": "sub", "OWNER": "-", "DATABASE": "appdb",
         "AGE": "250000", "VERDICT": "warn: holds xmin 250000 transactions old >= max_xmin_age 100000 (rule horizon); "
                                    "release: SELECT pg_drop_replication_slot('sub'); once its consumer is gone for good"},
        {"SERVER": "main", "HOLDER": "prepared", "NAME": "batch-42", "OWNER": "app", "DATABASE": "appdb",
         "AGE": "120000", "VERDICT": "warn: holds xmin 120000 transactions old >= max_xmin_age 100000 (rule horizon); "
                                    "release: ROLLBACK PREPARED 'batch-42'; in database appdb"},
        {"SERVER": "main", "HOLDER": "slot (physical, active)", "NAME": "standby-1", "OWNER": "-", "DATABASE": "-",
         "AGE": "40", "VERDICT": "none: holds xmin 40 transactions old < max_xmin_age 100000 (rule horizon)"},
    ], text


def test_a_captured_server_the_config_lacks_is_named_escaped(sweeper, tmp_path):
    cap = hand_capture()
    cap["server"] = "evil\n\u202ename\x1b[1m"
    path = tmp_path / "evil.json"
    path.write_text(json.dumps(cap))
    cfg = nowhere_config()
    r = run(sweeper, cfg, "--explain", "--from", str(path), expect=2)
    assert r.stdout == b""
    assert r.stderr.decode("utf-8") == (f'pgsweeper: {path}: server "evil\\x0a\\u202ename\\x1b[1m" is not in '
                                        f"{r.config} (name the one whose rules judge it with --server)\n"), r.stderr
    rows, _ = replay_json(sweeper, cfg, path, "--server", "main")
    assert {row["server"] for row in rows} == {"main"} and by_pid(rows)[101]["verdict"] == "over"


def capture_bytes(mutate=None):
    """The hand capture in an array, indented (so that lines and columns
    are worth checking), after mutate(obj) changed its only server."""
    cap = [hand_capture()]
    if mutate:
        mutate(cap[0])
    return json.dumps(cap, indent=1).encode()


def at_nth(needle, n=1):
    """Where the n-th occurrence of needle starts."""
    def find(data):
        i = -1
        for _ in range(n):
            i = data.index(needle, i + 1)
        return i
    return find


def after(prefix, n=1):
    """Where the value after the n-th prefix (a key and its ': ') starts."""
    find = at_nth(prefix, n)
    return lambda data: find(data) + len(prefix)


def line_col(data, offset):
    line = data.count(b"\n", 0, offset) + 1
    return line, offset - (data.rfind(b"\n", 0, offset) + 1) + 1


def mutated(fn):
    return lambda tmp: write(tmp, capture_bytes(fn))


def raw(data):
    return lambda tmp: write(tmp, data)


def write(tmp, data, name="capture.json"):
    p = tmp / name
    p.write_bytes(data)
    return p, data


def first_session(**kw):
    def fn(obj):
        for k, v in kw.items():
            if v is KeyError:
                del obj["sessions"][0][k]
            else:
                obj["sessions"][0][k] = v
    return fn


def server(**kw):
    def fn(obj):
        obj.update(kw)
    return fn


def without(key):
    def fn(obj):
        del obj[key]
    return fn


def first_holder(**kw):
    def fn(obj):
        obj["holders"][0].update(kw)
    return fn


def second_holder(**kw):
    def fn(obj):
        obj["holders"][1].update(kw)
    return fn


def fifo(tmp):
    p = tmp / "capture.fifo"
    os.mkfifo(p)
    return p, None


def directory(tmp):
    p = tmp / "capture.d"
    p.mkdir()
    return p, None


def missing(tmp):
    return tmp / "no-such-capture.json", None


def huge(tmp):
    """A sparse file just over the cap (256 MiB): costs no disk."""
    p = tmp / "huge.json"
    with open(p, "wb") as f:
        f.truncate(256 * 1024 * 1024 + 1)
    return p, None


def truncated(tmp):
    data = capture_bytes()
    return write(tmp, data[:data.index(b'"state": ') + len(b'"state": ')])


def duplicate_key(tmp):
    data = capture_bytes()
    i = data.index(b'"server":')
    return write(tmp, data[:i] + b'"server": "again",\n  ' + data[i:])


def hostile_name(tmp):
    return write(tmp, b"hello, world\n", name="bad\nname\u202e.json")


def deep(tmp):
    return write(tmp, b"[" * 20 + b"]" * 20)


def nul_in_name(tmp):
    data = capture_bytes()
    return write(tmp, data.replace(b'"application": "report"', b'"application": "rep\\u0000ort"'))


def twice(obj):
    obj["sessions"][1]["pid"] = obj["sessions"][0]["pid"]


def end_of(data):
    return len(data)


TS = 'a timestamp like "2024-02-29 23:59:59.123456+02:00"'
# (id, the file, where the error is (None: the file as a whole), the message after "error: ")
MALFORMED = [
    ("plain-text", raw(b"hello, world\n"), lambda d: 0, 'expected a JSON value, found "hello"'),
    ("empty", raw(b""), (1, 1), "empty: not a capture"),
    ("whitespace-only", raw(b" \n\t\n"), (1, 1), "empty: not a capture"),
    ("yaml-config", raw(b"servers:\n  - name: a\n"), lambda d: 0, 'expected a JSON value, found "servers"'),
    ("object-of-another-shape", raw(b'{"a": 1}'), lambda d: 0,
     'missing key "pgsweeper_capture": not a capture'),
    ("array-of-numbers", raw(b"[1, 2]"), lambda d: 1, "[0]: expected an object (a server), found 1"),
    ("empty-array", raw(b"[]"), lambda d: 0, "expected at least one server, found an empty array"),
    ("a-string", raw(b'"capture"'), lambda d: 0,
     'expected an object (a server) or an array of them, found "capture"'),
    ("pid-as-string", mutated(first_session(pid="101")), at_nth(b'"101"'),
     '[0].sessions[0].pid: expected an integer from 1 to 2147483647, found "101"'),
    ("pid-zero", mutated(first_session(pid=0)), after(b'"pid": '),
     "[0].sessions[0].pid: expected an integer from 1 to 2147483647, found 0"),
    ("superuser-as-1", mutated(first_session(superuser=1)), after(b'"superuser": '),
     "[0].sessions[0].superuser: expected true or false, found 1"),
    ("now-not-a-timestamp", mutated(server(now="yesterday")), at_nth(b'"yesterday"'),
     f'[0].now: expected {TS}, found "yesterday"'),
    ("month-13", mutated(first_session(state_change="2026-13-01T00:00:00Z")), at_nth(b'"2026-13-01T00:00:00Z"'),
     f'[0].sessions[0].state_change: expected {TS} or null, found "2026-13-01T00:00:00Z"'),
    ("role-unknown", mutated(server(role="master")), at_nth(b'"master"'),
     '[0].role: expected "primary" or "standby", found "master"'),
    ("blocker-not-a-pid", mutated(first_session(blocking_pids=["104"])), at_nth(b'"104"'),
     '[0].sessions[0].blocking_pids[0]: expected an integer from 0 to 2147483647, found "104"'),
    ("missing-key", mutated(first_session(state=KeyError)), at_nth(b"{", 4),
     '[0].sessions[0]: missing key "state"'),
    ("unknown-key", mutated(first_session(colour="red")), at_nth(b'"colour"'),
     '[0].sessions[0]: unknown key "colour"'),
    ("duplicate-key", duplicate_key, at_nth(b'"server"', 2), 'duplicate key "server"'),
    ("duplicate-pid", mutated(twice), after(b'"pid": ', 2),
     "[0].sessions[1].pid: duplicate pid 101, first at [0].sessions[0]"),
    ("connections-not-the-groups-sum", mutated(server(connections=7)), after(b'"connections": '),
     "[0].connections: expected 6, the sum of the groups' counts, found 7"),
    ("truncated", truncated, end_of, "expected a JSON value, found the end of the input"),
    ("trailing-garbage", raw(capture_bytes() + b"\nx"), lambda d: len(d) - 1,
     'expected the end of the input after the value, found "x"'),
    ("nested-too-deep", deep, lambda d: 16, "arrays and objects nested more than 16 deep; stopped reading"),
    ("nul-in-a-name", nul_in_name, at_nth(b"\\u0000"), "a string holds U+0000: no PostgreSQL name or query can"),
    ("raw-newline-in-a-string", raw(b'[{"pgsweeper_capture": 1, "server": "a\nb"}]'), lambda d: d.index(b"\n"),
     "expected a character or an escape in the string, found the control character 0x0a"),
    ("format-2", mutated(server(pgsweeper_capture=2)), after(b'"pgsweeper_capture": '),
     "[0]: capture format 2 is not supported (this pgsweeper reads 1)"),
    ("holders-missing", mutated(without("holders")), at_nth(b"{", 1), '[0]: missing key "holders"'),
    ("holders-not-an-array", mutated(server(holders={})), after(b'"holders": '),
     "[0].holders: expected an array, found an empty object"),
    ("holder-kind-unknown", mutated(first_holder(holder="session")), at_nth(b'"session"'),
     '[0].holders[0].holder: expected "prepared" or "slot", found "session"'),
    ("holder-name-null", mutated(first_holder(name=None)), after(b'"name": '),
     "[0].holders[0].name: expected a string, found null"),
    ("holder-age-negative", mutated(first_holder(xmin_age=-1)),
     lambda d: d.index(b'"xmin_age": -1') + len(b'"xmin_age": '),
     "[0].holders[0].xmin_age: expected an integer from 0 to 2147483647, found -1"),
    ("prepared-with-active", mutated(first_holder(active=True)), after(b'"active": '),
     "[0].holders[0].active: expected null (a prepared transaction), found true"),
    ("slot-without-type", mutated(second_holder(slot_type=None)), after(b'"slot_type": ', 2),
     "[0].holders[1].slot_type: expected a string (a slot), found null"),
    ("holder-unknown-key", mutated(first_holder(plugin="pgoutput")), at_nth(b'"plugin"'),
     '[0].holders[0]: unknown key "plugin"'),
    ("duplicate-slot", mutated(second_holder(name="standby-1")), after(b'"name": ', 3),
     '[0].holders[2].name: duplicate slot "standby-1", first at [0].holders[1]'),
    ("fifo", fifo, None, "is a FIFO; a capture must be a regular file"),
    ("directory", directory, None, "is a directory; a capture must be a regular file"),
    ("missing-file", missing, None, "cannot open: No such file or directory"),
    ("huge-sparse-file", huge, None,
     "the file is larger than 268435456 bytes (256 MiB), the most a capture may have"),
    ("hostile-file-name", hostile_name, lambda d: 0, 'expected a JSON value, found "hello"'),
]


def escaped_path(p):
    """A path as pgsweeper's messages show it (pgsweeper(8), ESCAPING)."""
    return str(p).replace("\n", "\\x0a").replace("\u202e", "\\u202e")


@pytest.mark.parametrize("make, where, message", [pytest.param(*m[1:], id=m[0]) for m in MALFORMED])
def test_not_a_capture(sweeper, tmp_path, make, where, message):
    path, data = make(tmp_path)
    if callable(where):
        where = line_col(data, where(data))
    if isinstance(where, tuple):
        want = f"{escaped_path(path)}:{where[0]}:{where[1]}: error: {message}\n"
    else:
        want = f"{escaped_path(path)}: error: {message}\n"
    r = run(sweeper, nowhere_config(), "--explain", "--from", str(path), expect=78, timeout=30)
    assert r.stdout == b"", r.stdout
    assert r.stderr.decode("utf-8") == want
    # the same with --json: no half-written array
    r = run(sweeper, nowhere_config(), "--explain", "--json", "--from", str(path), expect=78, timeout=30)
    assert r.stdout == b"" and r.stderr.decode("utf-8") == want


# -- 8. the horizon's holders (SPEC 19): live and replayed alike -----------------

HOLDER_LIMIT = 50
BURN = "DO $$ BEGIN FOR i IN 1..%d LOOP PERFORM txid_current(); COMMIT; END LOOP; END $$"
HOLDER_RULES = (f"      - {{name: xmin, max_xmin_age: {HOLDER_LIMIT}, applications: [none-such]}}\n"
                "      - {name: idle, max_idle: 1h, users: [app]}\n")
OLD_GID = "it's-old"


@pytest.fixture
def horizon_pg():
    """A cluster of this test's own that can prepare transactions and keep
    logical slots (settings the session's `pg` does not have)."""
    c = start_cluster({"max_prepared_transactions": 4, "wal_level": "logical"})
    try:
        yield c
    finally:
        c.stop()


def prepare(pg, gid):
    c = pg.connect(user="app", application_name="preparer")
    c.execute("BEGIN")
    c.execute("INSERT INTO hz VALUES (1)")                  # an xid: the prepared transaction holds it
    c.execute("PREPARE TRANSACTION " + "'" + gid.replace("'", "''") + "'")
    c.close()


def untimed_holder_cells(cells):
    """A holder text row without its age (xids handed out between two reads age it)."""
    c = dict(cells)
    del c["AGE"]
    c["VERDICT"] = re.sub(r"^(\w+: holds xmin )\d+", r"\1...", c["VERDICT"])
    return c


def test_holders_live_and_replayed(horizon_pg, sweeper, tmp_path):
    """A logical slot and a prepared transaction past max_xmin_age, and one
    prepared transaction under it: --explain lists them after the sessions,
    and a replay of a capture taken at the same moment lists the same rows;
    with no max_xmin_age rule neither does. Nothing is rolled back or dropped."""
    pg = horizon_pg
    su = pg.connect(user="postgres", dbname="appdb")
    su.execute("CREATE TABLE hz (v int)")
    su.execute("GRANT INSERT ON hz TO app")
    # a logical slot waits for every running transaction, prepared ones too: made first
    su.execute("SELECT pg_create_logical_replication_slot('sub', 'pgoutput')")
    # a slot that holds no xmin is no holder
    su.execute("SELECT pg_create_physical_replication_slot('standby_1', true)")
    su.execute(BURN % 5)                                     # the slot's catalog_xmin is the oldest
    prepare(pg, OLD_GID)
    su.execute(BURN % (HOLDER_LIMIT + 20))
    prepare(pg, "young")
    idle = pg.connect(user="app", application_name="idle-app")
    idle_pid = idle.info.backend_pid
    cfg = yaml_config([main_server(pg)], HOLDER_RULES, interval=None)
    plain_cfg = yaml_config([main_server(pg)], "      - {name: idle, max_idle: 1h, users: [app]}\n", interval=None)
    path = tmp_path / "capture.json"

    cap, _ = take_capture(sweeper, cfg, path)
    wait_until(lambda: no_sweeper_backends(pg), 10, what="the capture's connection gone")
    live, _ = explain_json(sweeper, cfg)
    wait_until(lambda: no_sweeper_backends(pg), 10, what="the explain's connection gone")
    live_text, _ = explain_text(sweeper, cfg)
    p = psql_capture(pg, "server=main")
    assert p.stderr == b"", p.stderr
    (tmp_path / "psql.json").write_bytes(p.stdout)

    # the capture holds every holder as the server has it
    prepared = {r[0]: r[1:] for r in pg.admin_query(
        "SELECT gid, owner::text, database::text, (extract(epoch FROM prepared) * 1000000)::int8, "
        "age(transaction) FROM pg_prepared_xacts")}
    slot_age, = pg.admin_query("SELECT age(catalog_xmin) FROM pg_replication_slots WHERE slot_name = 'sub'")[0]
    holders = {(h["holder"], h["name"]): h for h in cap[0]["holders"]}
    assert sorted(holders) == [("prepared", OLD_GID), ("prepared", "young"), ("slot", "sub")], cap[0]["holders"]
    for gid in (OLD_GID, "young"):
        h = holders[("prepared", gid)]
        assert (h["owner"], h["database"], h["slot_type"], h["active"]) == ("app", "appdb", None, None), h
        assert ts_us(h["prepared_at"]) == prepared[gid][2], (h, prepared[gid])
        assert 0 <= prepared[gid][3] - h["xmin_age"] <= 5, (h, prepared[gid])
    h = holders[("slot", "sub")]
    assert (h["owner"], h["database"], h["slot_type"], h["active"], h["prepared_at"]) == \
        (None, "appdb", "logical", False, None), h
    assert HOLDER_LIMIT + 20 <= h["xmin_age"] <= slot_age, (h, slot_age)
    assert holders[("prepared", OLD_GID)]["xmin_age"] >= HOLDER_LIMIT + 20
    assert holders[("prepared", "young")]["xmin_age"] < HOLDER_LIMIT
    theirs = parse_capture(p.stdout)
    check_capture_shape(theirs)
    assert [{k: v for k, v in h.items() if k != "xmin_age"} for h in theirs["holders"]] == \
        [{k: v for k, v in h.items() if k != "xmin_age"} for h in cap[0]["holders"]]

    # live: the sessions, then the holders, over first and oldest first
    live_holders = holder_rows(live)
    assert [(r["holder"], r["name"], r["verdict"], r["reason"]) for r in live_holders] == [
        ("slot", "sub", "warn", "horizon-holder"), ("prepared", OLD_GID, "warn", "horizon-holder"),
        ("prepared", "young", "none", "below-limit")], live_holders
    for r in live_holders:
        assert (r["server"], r["rule"], r["limit"], r["limit_ms"]) == ("main", "xmin", "max_xmin_age", HOLDER_LIMIT)
        assert r["pid"] is None and r["action"] is None and r["remaining_ms"] is None, r
    slot, old, young = live_holders
    assert (slot["user"], slot["database"], slot["slot_type"], slot["active"]) == (None, "appdb", "logical", False)
    assert slot["release"] == "SELECT pg_drop_replication_slot('sub');", slot
    assert (old["user"], old["database"], old["slot_type"], old["active"]) == ("app", "appdb", None, None)
    assert old["release"] == "ROLLBACK PREPARED 'it''s-old';", old
    assert by_pid(live)[idle_pid]["verdict"] == "next", "the sessions are shown as before"

    # the text: a second table after a blank line
    cells = holder_text_cells(live_text)
    assert [(c["HOLDER"], c["NAME"], c["OWNER"], c["DATABASE"]) for c in cells] == [
        ("slot (logical, inactive)", "sub", "-", "appdb"), ("prepared", OLD_GID, "app", "appdb"),
        ("prepared", "young", "app", "appdb")], live_text
    assert re.fullmatch(rf"warn: holds xmin \d+ transactions old >= max_xmin_age {HOLDER_LIMIT} \(rule xmin\); "
                        r"release: SELECT pg_drop_replication_slot\('sub'\); once its consumer is gone for good",
                        cells[0]["VERDICT"]), cells[0]
    assert re.fullmatch(rf"warn: holds xmin \d+ transactions old >= max_xmin_age {HOLDER_LIMIT} \(rule xmin\); "
                        r"release: ROLLBACK PREPARED 'it''s-old'; in database appdb", cells[1]["VERDICT"]), cells[1]
    assert re.fullmatch(rf"none: holds xmin \d+ transactions old < max_xmin_age {HOLDER_LIMIT} \(rule xmin\)",
                        cells[2]["VERDICT"]), cells[2]
    for c, r in zip(cells, live_holders):
        assert c["AGE"] == str(r["elapsed_ms"]) and f" {c['AGE']} transactions" in c["VERDICT"], (c, r)

    # replayed: the same rows, the capture's ages (read first: no older than live's)
    for replayed in (tmp_path / "capture.json", tmp_path / "psql.json"):
        rows, _ = replay_json(sweeper, cfg, replayed)
        got = holder_rows(rows)
        assert len(got) == len(live_holders), (got, live_holders)
        for a, b in zip(live_holders, got):
            assert {k: v for k, v in a.items() if k != "elapsed_ms"} == \
                {k: v for k, v in b.items() if k != "elapsed_ms"}, (replayed, a, b)
            assert 0 <= a["elapsed_ms"] - b["elapsed_ms"] <= 5, (replayed, a, b)
        text = replay_text(sweeper, cfg, replayed)
        assert [untimed_holder_cells(c) for c in holder_text_cells(text)] == \
            [untimed_holder_cells(c) for c in cells], (text, live_text)

    # no max_xmin_age: not read live, not judged in a replay
    for rows in (replay_json(sweeper, plain_cfg, path)[0], explain_json(sweeper, plain_cfg)[0]):
        assert holder_rows(rows) == [] and idle_pid in by_pid(rows), rows
    for text in (replay_text(sweeper, plain_cfg, path), explain_text(sweeper, plain_cfg)[0]):
        assert holder_text_cells(text) == [] and "\n\n" not in text, text

    # all of it only read
    assert {r[0] for r in pg.admin_query("SELECT gid FROM pg_prepared_xacts")} == {OLD_GID, "young"}
    assert {r[0] for r in pg.admin_query("SELECT slot_name FROM pg_replication_slots")} == {"sub", "standby_1"}
    assert_connection_alive(idle)
    su.execute("ROLLBACK PREPARED 'it''s-old'")
    su.execute("ROLLBACK PREPARED 'young'")
    su.execute("SELECT pg_drop_replication_slot('sub')")
