"""pgsweeper --explain (SPEC 12): one verdict per client session, from the
daemon's own judgement, without a signal, a journal entry or a metrics file."""

import concurrent.futures
import json
import re
import socket
import subprocess
import time
import uuid

import pytest

from conftest import HOSTILE, free_tcp_port, stop_process, wait_until
from pgs_helpers import assert_connection_alive, events, main_server, parse_duration_ms, yaml_config
from tcpproxy import TcpProxy

KEYS = ["server", "pid", "user", "database", "application", "client_addr", "state", "verdict", "rule",
        "limit", "limit_ms", "elapsed_ms", "remaining_ms", "action", "reason", "blocked",
        "group", "sessions", "max_sessions", "connections", "connection_slots",
        "holder", "name", "release", "slot_type", "active"]


def explain(sweeper, text, *args, expect=0):
    r = sweeper.run_once(text, "--explain", *args)
    assert r.returncode == expect, f"exit {r.returncode}, wanted {expect}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    return r


def explain_json(sweeper, text, *args, expect=0):
    r = explain(sweeper, text, "--json", *args, expect=expect)
    rows = json.loads(r.stdout)
    assert isinstance(rows, list)
    for row in rows:
        assert list(row) == KEYS, row
    return rows, r


def by_pid(rows, server="main"):
    """{pid: row} of the sessions (holders, after them, have no pid)."""
    out = {}
    for row in rows:
        if row["server"] == server and row["holder"] is None:
            assert row["pid"] not in out, f"two rows for pid {row['pid']}"
            out[row["pid"]] = row
    return out


@pytest.fixture
def lonely_role(pg):
    """A login role that no rule names."""
    su = pg.connect(user="postgres", dbname="postgres")
    su.execute("DO $$BEGIN CREATE ROLE lonely LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END$$")
    su.close()
    return "lonely"


VERDICT_RULES = (
    "      - name: idle-fast\n"
    "        max_idle: 1s\n"
    "        users: [app]\n"
    "        exempt:\n"
    "          applications: [exempt-rule]\n"
    "      - name: idle-slow\n"
    "        max_idle: 1h\n"
    "        action: cancel\n"
    "        users: [other]\n")


def verdict_config(pg, tmp_path):
    return yaml_config([main_server(pg)], VERDICT_RULES, interval=None,
                       top=(f"metrics_file: {tmp_path / 'metrics.prom'}\n"
                            "exempt:\n"
                            "  applications: [exempt-global]\n"),
                       server_extra="    exempt:\n      applications: [exempt-server]\n")


def test_every_verdict_and_nothing_touched(pg, sweeper, journal, tmp_path, lonely_role):
    sessions = {
        "over": pg.connect(user="app", application_name="over-me"),
        "next": pg.connect(user="other", application_name="next-me"),
        "superuser": pg.connect(user="postgres", dbname="postgres", application_name="super-me"),
        "exempt-global": pg.connect(user="app", application_name="exempt-global"),
        "exempt-server": pg.connect(user="app", application_name="exempt-server"),
        "exempt-rule": pg.connect(user="app", application_name="exempt-rule"),
        "none": pg.connect(user=lonely_role, dbname="postgres", application_name="none-me"),
    }
    pids = {k: c.info.backend_pid for k, c in sessions.items()}
    # A running daemon, logged in as the role explain uses: its connection is
    # pgsweeper's own. Its rule matches none of the sessions above.
    daemon_cfg = yaml_config([main_server(pg)], "      - {name: nobody, max_idle: 1s, users: [no-such-user]}\n",
                             interval=None)
    daemon = sweeper.start_daemon(daemon_cfg, "--log-target", "stderr")
    try:
        wait_until(lambda: pg.sweeper_polled(), 15, what="the daemon's first poll")
        daemon_pids = pg.backend_pids_alive(user="pgsweeper")
        assert daemon_pids
        time.sleep(1.2)                    # "over" passes its 1 s limit
        cursor = journal.cursor()
        cfg = verdict_config(pg, tmp_path)
        rows, r = explain_json(sweeper, cfg)
        text = explain(sweeper, cfg).stdout
    finally:
        stop_process(daemon)

    got = by_pid(rows)
    for kind, pid in pids.items():
        assert pid in got, f"{kind} session {pid} missing from {rows}"

    over = got[pids["over"]]
    assert over["verdict"] == "over" and over["rule"] == "idle-fast" and over["limit"] == "max_idle"
    assert over["limit_ms"] == 1000 and over["elapsed_ms"] >= 1000 and over["remaining_ms"] is None
    assert over["action"] == "terminate" and over["reason"] == "limit"
    assert (over["user"], over["database"], over["application"], over["client_addr"], over["state"]) == \
        ("app", "appdb", "over-me", "local", "idle")

    nxt = got[pids["next"]]
    assert nxt["verdict"] == "next" and nxt["rule"] == "idle-slow" and nxt["limit"] == "max_idle"
    assert nxt["limit_ms"] == 3600000 and nxt["action"] == "cancel" and nxt["reason"] == "limit"
    assert 3600000 - 60000 < nxt["remaining_ms"] <= 3600000
    assert nxt["elapsed_ms"] + nxt["remaining_ms"] == 3600000

    def check_no_limit(row, verdict, reason, rule=None):
        assert (row["verdict"], row["reason"], row["rule"]) == (verdict, reason, rule), row
        for k in ("limit", "limit_ms", "elapsed_ms", "remaining_ms", "action"):
            assert row[k] is None, (k, row)

    check_no_limit(got[pids["superuser"]], "protected", "superuser")
    check_no_limit(got[pids["exempt-global"]], "exempt", "exempt-global")
    check_no_limit(got[pids["exempt-server"]], "exempt", "exempt-server")
    check_no_limit(got[pids["exempt-rule"]], "exempt", "exempt-rule", "idle-fast")
    check_no_limit(got[pids["none"]], "none", "no-rule")
    daemon_rows = [got[p] for p in daemon_pids if p in got]
    assert daemon_rows, f"the daemon's connection {daemon_pids} is not shown: {rows}"
    for row in daemon_rows:
        check_no_limit(row, "protected", "own-role")
        assert row["application"].startswith("pgsweeper")

    # the text form: header, over first, then next, durations as in the log lines
    lines = text.splitlines()
    assert lines[0].split() == ["SERVER", "PID", "USER", "DATABASE", "APPLICATION", "CLIENT", "STATE", "ELAPSED",
                                "VERDICT"]
    assert lines[1].split()[1] == str(pids["over"]), text
    assert lines[2].split()[1] == str(pids["next"]), text
    m = re.search(r"  idle +(\S+) +over idle-fast: max_idle 1s -> terminate$", lines[1])
    assert m and parse_duration_ms(m.group(1)) >= 1000, lines[1]
    assert re.search(r"  next idle-slow: max_idle 1h in (59m\d+s|1h) -> cancel$", lines[2]), lines[2]
    # every column starts at the same place on every line
    starts = [m.start() for m in re.finditer(r"(?<=  )\S", lines[0])]
    for line in lines[1:]:
        assert line.startswith("main  "), line
        for s in starts:
            assert line[s - 2:s] == "  " and line[s] != " ", (s, line)
    for kind, words in (("superuser", "protected: superuser (terminate_superusers is off)"), ("exempt-global", "exempt: global exempt block"),
                        ("exempt-server", "exempt: exempt block of server main"),
                        ("exempt-rule", "exempt: exempt block of rule idle-fast"),
                        ("none", "none: no rule matches")):
        line = [l for l in lines if l.split()[1] == str(pids[kind])]
        assert len(line) == 1 and line[0].endswith(words), (kind, line)

    # nothing was touched, nothing was written
    for kind, conn in sessions.items():
        assert pg.pid_alive(pids[kind]), f"{kind} session ended"
        assert_connection_alive(conn)
    time.sleep(0.5)
    entries = journal.entries(after_cursor=cursor)
    touched = [e for e in entries if e.get("PGSWEEPER_PID") in {str(p) for p in pids.values()}]
    assert touched == [], touched
    assert not [e for e in entries if e.get("_PID") == str(r.pid)], "explain wrote to the journal"
    assert not (tmp_path / "metrics.prom").exists(), "explain wrote the metrics file"


def test_deciding_rule_is_the_daemons(pg, sweeper):
    """Two rules judge one session: explain names the rule a real --once run
    acts under. The first-listed rule is never the answer here."""
    stronger_action = pg.connect(user="app", application_name="prec-a")
    enforcing = pg.connect(user="other", application_name="prec-b")
    rules = ("      - {name: a-cancel, max_idle: 1s, action: cancel, users: [app]}\n"
             "      - {name: a-terminate, max_idle: 2s, action: terminate, users: [app]}\n"
             "      - {name: b-shadow, max_idle: 1s, action: terminate, dry_run: true, users: [other]}\n"
             "      - {name: b-log, max_idle: 2s, action: log, users: [other]}\n")
    cfg = yaml_config([main_server(pg)], rules, interval=None)
    time.sleep(2.3)
    rows, _ = explain_json(sweeper, cfg)
    got = by_pid(rows)
    a, b = stronger_action.info.backend_pid, enforcing.info.backend_pid
    assert (got[a]["verdict"], got[a]["rule"], got[a]["action"]) == ("over", "a-terminate", "terminate"), got[a]
    assert (got[b]["verdict"], got[b]["rule"], got[b]["action"]) == ("over", "b-log", "log"), got[b]

    once = sweeper.run_once(cfg, "--once", "--log-target", "stderr")
    assert once.returncode == 0, once.stderr
    terminated = events(once.stderr, "terminated", "main")
    logged = events(once.stderr, "log-only", "main")
    assert terminated[a].group("rule") == got[a]["rule"], once.stderr
    assert logged[b].group("rule") == got[b]["rule"], once.stderr
    assert b not in terminated and a not in logged, once.stderr
    assert pg.wait_pid_gone(a)


# What no line of output may hold raw: controls (the newline ending a line
# aside), U+2028/U+2029 and the bidirectional controls (Unicode's Bidi_Control).
UNSAFE = set(chr(c) for c in range(0x20)) - {"\n"} | set(chr(c) for c in range(0x7f, 0xa0)) | \
    set("\u2028\u2029\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def assert_no_unsafe(out):
    for i, ch in enumerate(out):
        assert ch not in UNSAFE, f"raw {ch!r} at {i}: {out!r}"


def json_name_bytes(s):
    """The name a --json string stands for (pgsweeper(8), ESCAPING): \\xNN
    (two hex digits) is one byte that is not UTF-8, every other character
    is itself."""
    return re.sub(rb"\\x([0-9a-fA-F]{2})", lambda m: bytes([int(m[1], 16)]), s.encode("utf-8"))


def test_hostile_names(pg, sweeper, hostile_sessions):
    long_app = "a-very-long-application-name-" + "x" * 20  # under NAMEDATALEN
    conn, = hostile_sessions(application_name=long_app)
    pid = conn.info.backend_pid
    rules = "      - {name: idle, max_idle: 1h}\n"
    cfg = yaml_config([main_server(pg)], rules, interval=None)

    r = sweeper.run_once(cfg, "--explain", "--json")
    assert r.returncode == 0, r.stderr
    raw = r.stdout.encode()
    rows = json.loads(raw.decode("utf-8", errors="strict"))
    assert_no_unsafe(r.stdout)
    row = by_pid(rows)[pid]
    # escaped once: JSON escapes for what is UTF-8, \xNN only for the byte
    # that is not, and \x5c for the backslash that would read as one
    assert row["user"] == "h\u202e\nE\x1b[31m\x9b\\xff\u2028\\z\u2066\"'\t\\x5cx41", row
    assert json_name_bytes(row["user"]) == HOSTILE, row
    assert row["application"] == long_app, "the full name stays in --json"
    assert row["verdict"] == "next"

    p = sweeper.run_once(cfg, "--explain")
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert_no_unsafe(out)
    line = [l for l in out.splitlines() if f"  {pid}  " in l]
    assert len(line) == 1, out
    # cut on whole escapes, the full value only in --json
    assert "  h\\u202e\\x0aE\u2026  " in line[0], line[0]
    assert "  a-very-long-applica\u2026  " in line[0], line[0]


def test_json_names_decode_to_themselves(pg, sweeper):
    """--json escapes once (issue 18): quotes, backslashes, controls, the
    separators and bidi controls in a valid UTF-8 name decode back to it."""
    name = "q\"uo\\te'x\t\n\u202e\u2066\x1b[1m\x7f\u0085\u2028 \u00e9\\x41"
    app = "q\"uo\\te'x \\x41"   # PostgreSQL keeps printable ASCII in application_name
    plain = "json_" + uuid.uuid4().hex[:8]
    ident = '"' + name.replace('"', '""') + '"'
    su = pg.connect(user="postgres", dbname="postgres")
    su.execute(f"CREATE ROLE {plain} LOGIN")
    try:
        conn = pg.connect(user=plain, application_name=app)
        pid = conn.info.backend_pid
        su.execute(f"ALTER ROLE {plain} RENAME TO {ident}")
        cfg = yaml_config([main_server(pg)], "      - {name: idle, max_idle: 1h}\n", interval=None)
        rows, r = explain_json(sweeper, cfg)
        assert_no_unsafe(r.stdout)
        assert "\u00e9" in r.stdout, "printable UTF-8 stays as it is"
        row = by_pid(rows)[pid]
        assert row["user"] == "q\"uo\\te'x\t\n\u202e\u2066\x1b[1m\x7f\u0085\u2028 \u00e9\\x5cx41", row
        assert json_name_bytes(row["user"]) == name.encode(), row
        assert row["application"] == "q\"uo\\te'x \\x5cx41", row
        assert json_name_bytes(row["application"]) == app.encode(), row
        conn.close()
    finally:
        su.execute(f"DROP ROLE IF EXISTS {ident}")
        su.execute(f"DROP ROLE IF EXISTS {plain}")


def test_several_servers_one_down(pg, sweeper):
    conn = pg.connect(user="app", application_name="multi")
    pid = conn.info.backend_pid
    down = f"host=127.0.0.1 port={free_tcp_port()} dbname=postgres user=pgsweeper connect_timeout=2"
    rules = "      - {name: idle, max_idle: 1h}\n"
    cfg = yaml_config([main_server(pg), main_server(pg, "mirror"), ("down", down)], rules, interval=None)

    rows, r = explain_json(sweeper, cfg, expect=1)
    assert "down" in r.stderr and "cannot connect" in r.stderr, r.stderr
    assert {row["server"] for row in rows} == {"main", "mirror"}
    assert pid in by_pid(rows, "main") and pid in by_pid(rows, "mirror")
    text = explain(sweeper, cfg, expect=1).stdout
    assert any(l.startswith("main ") and f"  {pid}  " in l for l in text.splitlines()), text

    rows, _ = explain_json(sweeper, cfg, "--server", "mirror")
    assert rows and {row["server"] for row in rows} == {"mirror"}
    assert pid in by_pid(rows, "mirror")
    rows, r = explain_json(sweeper, cfg, "--server", "down", expect=1)
    assert rows == []
    r = explain(sweeper, cfg, "--server", "nowhere", expect=2)
    assert "nowhere" in r.stderr
    assert_connection_alive(conn)


# A server that stops answering (issue 18): explain waits at most 10 s for
# each statement (the daemon's bound), says which server and why, and still
# shows the servers after it. Before, it waited forever and printed nothing.
# The proxy passes the real login through, then nothing more either way
# once the trigger (the set-up statement, or the snapshot after a set-up
# that was answered) goes by, as in a network partition.
STATEMENT_TIMEOUT_S = 10
SLACK_S = 5
HANGS = {
    "after-login": b"set_config('statement_timeout'",
    "mid-snapshot": b"FROM pg_stat_get_activity(NULL) a",
}


@pytest.fixture
def frozen_proxies(pg):
    proxies = []

    def make(trigger):
        p = TcpProxy(pg.port, trigger=trigger, mode="blackhole", once=False)
        proxies.append(p)
        return p
    yield make
    for p in proxies:
        p.close()


def explain_timed(sweeper, cfg, *arg_lists):
    """Run explain once per list of extra arguments, all at once (each waits
    out the same bound); returns [(stdout, stderr, seconds)] in that order.
    The bound is the test: a hang fails here instead of blocking the suite."""
    argvs = [sweeper.argv(cfg, ("--explain", *args)) for args in arg_lists]

    def run(argv):
        t0 = time.monotonic()
        try:
            p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=STATEMENT_TIMEOUT_S * 3)
        except subprocess.TimeoutExpired as e:
            raise AssertionError(f"{argv} did not finish within {e.timeout}s\nstdout:\n{e.stdout}\n"
                                 f"stderr:\n{e.stderr}")
        took = time.monotonic() - t0
        assert p.returncode == 1, f"{argv}: exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
        assert STATEMENT_TIMEOUT_S - 0.5 <= took < STATEMENT_TIMEOUT_S + SLACK_S, f"{argv} took {took:.1f}s"
        return p.stdout, p.stderr, took

    with concurrent.futures.ThreadPoolExecutor(len(argvs)) as pool:
        return list(pool.map(run, argvs))


@pytest.mark.parametrize("where", list(HANGS))
def test_server_that_stops_answering(pg, sweeper, frozen_proxies, where):
    conn = pg.connect(user="app", application_name="healthy")
    pid = conn.info.backend_pid
    proxy = frozen_proxies(HANGS[where])
    rules = "      - {name: idle, max_idle: 1h}\n"
    # the hanging server first: it must not keep the healthy one from being shown
    cfg = yaml_config([("frozen", proxy.conninfo()), main_server(pg)], rules, interval=None)
    statement = "set-up" if where == "after-login" else "snapshot"
    message = re.compile(rf"^pgsweeper: frozen: {statement} failed: no answer within {STATEMENT_TIMEOUT_S}s$",
                         re.M)

    (text, text_err, _), (js, js_err, _) = explain_timed(sweeper, cfg, [], ["--json"])
    assert proxy.triggered.is_set(), "explain never sent the statement the proxy freezes on"
    assert message.search(text_err), text_err
    lines = text.splitlines()
    assert lines and lines[0].startswith("SERVER"), text
    assert any(l.startswith("main ") and f"  {pid}  " in l for l in lines), text
    assert not any(l.startswith("frozen ") for l in lines), text

    assert message.search(js_err), js_err
    rows = json.loads(js)
    assert isinstance(rows, list) and rows, js
    assert {row["server"] for row in rows} == {"main"}
    assert by_pid(rows)[pid]["application"] == "healthy"
    assert_connection_alive(conn)


def test_server_that_never_finishes_the_handshake(pg, sweeper):
    """The kernel accepts the TCP connection (the listen backlog), nobody
    answers the startup packet; connect_timeout=0 (libpq: wait forever)
    falls back to the daemon's 10 s, as the daemon does. Three such servers
    are waited for at the same time: the run takes one bound, not three
    (explain_timed fails a run longer than 10 s + slack)."""
    conn = pg.connect(user="app", application_name="healthy")
    pid = conn.info.backend_pid
    mutes = []
    try:
        servers = []
        for i in range(3):
            mute = socket.socket()
            mutes.append(mute)
            mute.bind(("127.0.0.1", 0))
            mute.listen(8)
            port = mute.getsockname()[1]
            servers.append((f"mute{i}", f"host=127.0.0.1 port={port} dbname=postgres user=pgsweeper "
                                        "sslmode=disable connect_timeout=0"))
        cfg = yaml_config(servers + [main_server(pg)], "      - {name: idle, max_idle: 1h}\n", interval=None)
        [(out, err, _)] = explain_timed(sweeper, cfg, [])
    finally:
        for mute in mutes:
            mute.close()
    for i in range(3):
        assert re.search(rf"^pgsweeper: mute{i}: cannot connect: no answer within 10s$", err, re.M), err
    assert any(l.startswith("main ") and f"  {pid}  " in l for l in out.splitlines()), out


def test_command_line_errors(pg, sweeper):
    cfg = yaml_config([main_server(pg)], "      - {name: idle, max_idle: 1h}\n", interval=None)
    for args in (["--json"], ["--server", "main"], ["--explain", "--once"]):
        r = sweeper.run_once(cfg, *args)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stdout == "", (args, r.stdout)
    r = sweeper.run_once("servers: [\n", "--explain", "--json")
    assert r.returncode == 78, r.stderr
    assert r.stdout == ""


# Lock chains (issue 17): explain reads the server as the daemon does, lock
# graph included, so a max_blocking root and a max_lock_wait waiter get their
# verdicts with the number of sessions waiting behind them. Before, explain
# took its own snapshot without the graph and showed both as "none".
from test_locks import idle_blocker, start_waiters, table  # noqa: E402,F401  (table: a fixture)

LOCK_RULES = ("      - {name: lock-blockers, max_blocking: %s, users: [app], applications: [blocker]}\n"
              "      - {name: lock-queue, max_lock_wait: %s, action: cancel, applications: [\"writer-*\"]}\n")


def lock_config(pg, blocking, lock_wait):
    return yaml_config([main_server(pg)], LOCK_RULES % (blocking, lock_wait), interval=None)


def test_lock_chain_verdicts_over(pg, sweeper, table):
    blocker = idle_blocker(pg)
    bpid = blocker.info.backend_pid
    writers = start_waiters(pg, 2, "UPDATE lk SET v = v + 1 WHERE id = 1")
    time.sleep(1.1)
    cfg = lock_config(pg, "1s", "1s")
    rows, _ = explain_json(sweeper, cfg)
    got = by_pid(rows)
    root = got[bpid]
    assert root["verdict"] == "over" and root["rule"] == "lock-blockers", root
    assert root["limit"] == "max_blocking" and root["limit_ms"] == 1000, root
    assert root["action"] == "terminate" and root["blocked"] == 2, root
    assert root["elapsed_ms"] >= 1000, root
    for w in writers:
        row = got[w.pid]
        assert row["verdict"] == "over" and row["rule"] == "lock-queue", row
        assert row["limit"] == "max_lock_wait" and row["action"] == "cancel", row
        assert isinstance(row["blocked"], int) and 1000 <= row["elapsed_ms"] < 60000, row
    # the one who waits longest has the other behind it; the last has nobody
    assert sorted(got[w.pid]["blocked"] for w in writers) == [0, 1], [got[w.pid] for w in writers]
    text = explain(sweeper, cfg).stdout
    line = [l for l in text.splitlines() if f"  {bpid}  " in l]
    assert len(line) == 1, text
    assert "over lock-blockers: max_blocking 1s (2 waiting behind it) -> terminate" in line[0], line
    # explain signalled nothing
    assert pg.pid_alive(bpid) and all(pg.pid_alive(w.pid) and not w.done.is_set() for w in writers)
    blocker.rollback()
    for w in writers:
        w.thread.join(10)
        assert w.done.is_set() and w.error is None, w.error


def test_lock_chain_verdicts_next(pg, sweeper, table):
    blocker = idle_blocker(pg)
    bpid = blocker.info.backend_pid
    writers = start_waiters(pg, 1, "UPDATE lk SET v = v + 1 WHERE id = 1")
    rows, _ = explain_json(sweeper, lock_config(pg, "1h", "2h"))
    got = by_pid(rows)
    root, waiter = got[bpid], got[writers[0].pid]
    assert root["verdict"] == "next" and root["limit"] == "max_blocking" and root["blocked"] == 1, root
    assert 3500000 < root["remaining_ms"] <= 3600000, root
    assert waiter["verdict"] == "next" and waiter["limit"] == "max_lock_wait" and waiter["blocked"] == 0, waiter
    assert 7100000 < waiter["remaining_ms"] <= 7200000, waiter
    # a session outside the chain has no waiter count
    assert all(r["blocked"] is None for p, r in got.items() if p not in (bpid, writers[0].pid)), rows
    blocker.rollback()
    writers[0].thread.join(10)
