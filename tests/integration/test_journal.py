"""Structured journal entries (SPEC section 5) and password hygiene."""

import json
import re
import time


from conftest import free_tcp_port
from pgs_helpers import idle_rule, main_server, yaml_config

# in main's conninfo: trust auth ignores the password; it must still never be printed
SECRET = "hunter2-secret"


def entries_text(entries):
    return "\n".join(json.dumps(e) for e in entries)


def test_terminate_entry_fields(pg, sweeper, journal):
    victim = pg.connect(application_name="victim-app")
    second = pg.connect(application_name="victim-two")
    vpid, spid = victim.info.backend_pid, second.info.backend_pid
    time.sleep(2.3)
    cursor = journal.cursor()
    r = sweeper.run_once(yaml_config([main_server(pg, password=SECRET)], idle_rule("2s")),
                         "--once", "--log-target", "journal")
    assert r.returncode == 0, r.stderr
    assert pg.wait_pid_gone(vpid) and pg.wait_pid_gone(spid), r.stderr

    got = journal.read({"PGSWEEPER_PID": vpid, "_PID": r.pid}, after_cursor=cursor)
    assert len(got) == 1, f"expected one entry for pid {vpid}: {entries_text(got)}"
    e = got[0]
    assert e.get("SYSLOG_IDENTIFIER") == "pgsweeper"
    assert e.get("PRIORITY") == "5"
    assert re.fullmatch(r"[0-9a-fA-F]{32}", e.get("MESSAGE_ID", "")), e.get("MESSAGE_ID")
    expected = {
        "PGSWEEPER_SERVER": "main",
        "PGSWEEPER_RULE": "idle-sessions",
        "PGSWEEPER_ACTION": "terminate",
        "PGSWEEPER_RESULT": "terminated",
        "PGSWEEPER_PID": str(vpid),
        "PGSWEEPER_USER": "app",
        "PGSWEEPER_DATABASE": "appdb",
        "PGSWEEPER_APPLICATION": "victim-app",
        "PGSWEEPER_CLIENT_ADDR": "local",
        "PGSWEEPER_STATE": "idle",
        "PGSWEEPER_LIMIT": "max_idle",
        "PGSWEEPER_LIMIT_MS": "2000",
    }
    for k, v in expected.items():
        assert e.get(k) == v, f"{k}={e.get(k)!r}, expected {v!r}\n{json.dumps(e, indent=1)}"
    elapsed = e.get("PGSWEEPER_ELAPSED_MS", "")
    assert re.fullmatch(r"\d+", elapsed), elapsed
    assert 2000 <= int(elapsed) < 60000
    assert "PGSWEEPER_QUERY" not in e, "log_query is off by default"

    msg = e.get("MESSAGE", "")
    for fact in ("main", "idle-sessions", str(vpid), "app", "appdb", "victim-app",
                 "local", "idle"):
        assert fact in msg, f"MESSAGE lacks {fact!r}: {msg!r}"

    # same event kind -> same MESSAGE_ID
    got2 = journal.read({"PGSWEEPER_PID": spid, "_PID": r.pid}, after_cursor=cursor)
    assert len(got2) == 1, entries_text(got2)
    assert got2[0].get("PGSWEEPER_APPLICATION") == "victim-two"
    assert got2[0].get("MESSAGE_ID") == e["MESSAGE_ID"]

    everything = journal.entries(after_cursor=cursor)
    assert SECRET not in entries_text(everything)
    assert SECRET not in r.stdout + r.stderr


def test_dry_run_entry(pg, sweeper, journal):
    victim = pg.connect(application_name="victim-app")
    vpid = victim.info.backend_pid
    time.sleep(2.3)
    cursor = journal.cursor()
    r = sweeper.run_once(yaml_config([main_server(pg, password=SECRET)], idle_rule("2s")),
                         "--once", "--dry-run", "--log-target", "journal")
    assert r.returncode == 0, r.stderr
    got = journal.read({"PGSWEEPER_PID": vpid, "_PID": r.pid}, after_cursor=cursor)
    assert len(got) == 1, entries_text(got)
    assert got[0].get("PGSWEEPER_ACTION") == "terminate"
    assert got[0].get("PGSWEEPER_RESULT") == "dry-run"
    assert pg.pid_alive(vpid)
    assert SECRET not in entries_text(journal.entries(after_cursor=cursor))


def test_password_never_printed(pg, sweeper, journal, tmp_path):
    """Failure paths are where conninfo strings tend to leak."""
    down = f"host=127.0.0.1 port={free_tcp_port()} dbname=postgres user=pgsweeper " \
           f"password={SECRET} connect_timeout=3"
    nosock = f"host={tmp_path} port={pg.port} dbname=postgres user=pgsweeper password={SECRET}"
    servers = [("down", down), ("nosock", nosock), main_server(pg, password=SECRET)]
    victim = pg.connect(application_name="victim-app")
    vpid = victim.info.backend_pid
    time.sleep(2.3)
    cfg = yaml_config(servers, idle_rule("2s"))
    cursor = journal.cursor()
    outputs = []

    r = sweeper.run_once(cfg, "--once", "-v", "--log-target", "journal")
    assert r.returncode == 1, r.stderr
    outputs.append(r.stdout + r.stderr)
    assert pg.wait_pid_gone(vpid), r.stderr

    r = sweeper.run_once(cfg, "--once", "-v", "--dry-run", "--log-target", "stderr")
    assert r.returncode == 1, r.stderr
    assert "down: " in r.stderr and "nosock: " in r.stderr, r.stderr
    outputs.append(r.stdout + r.stderr)

    r = sweeper.run_once(cfg, "--check")
    assert r.returncode == 0, r.stderr
    outputs.append(r.stdout + r.stderr)

    # config errors: an unparsable conninfo, and an error next to a password
    bad_conninfo = yaml_config([("bad", f"password={SECRET} no_such_option=1 user=x")],
                               idle_rule("2s"))
    r = sweeper.run_once(bad_conninfo, "--check")
    assert r.returncode == 78, r.stdout + r.stderr
    outputs.append(r.stdout + r.stderr)
    r = sweeper.run_once(bad_conninfo, "--once", "--log-target", "journal")
    assert r.returncode == 78, r.stdout + r.stderr
    outputs.append(r.stdout + r.stderr)

    unquoted = yaml_config([("bad", f"password='{SECRET} user=x")], idle_rule("2s"))
    r = sweeper.run_once(unquoted, "--check")
    assert r.returncode == 78, r.stdout + r.stderr
    outputs.append(r.stdout + r.stderr)

    for i, out in enumerate(outputs):
        assert SECRET not in out, f"password printed by run #{i}:\n{out}"
    everything = journal.entries(after_cursor=cursor)
    assert everything, "expected journal entries from the journal-target runs"
    assert SECRET not in entries_text(everything)


def test_auto_target_without_terminal_uses_journal(pg, sweeper, journal):
    """SPEC 5: --log-target auto writes to the journal when stderr is not a
    terminal (here: a pipe)."""
    victim = pg.connect(application_name="victim-auto")
    vpid = victim.info.backend_pid
    time.sleep(2.3)
    cursor = journal.cursor()
    r = sweeper.run_once(yaml_config([main_server(pg, password=SECRET)], idle_rule("2s")),
                         "--once")
    assert r.returncode == 0, r.stderr
    assert pg.wait_pid_gone(vpid), r.stderr
    got = journal.read({"PGSWEEPER_PID": vpid, "_PID": r.pid}, after_cursor=cursor)
    assert len(got) == 1, f"no journal entry for pid {vpid}; stderr:\n{r.stderr}"
    assert got[0].get("PGSWEEPER_APPLICATION") == "victim-auto"
    assert got[0].get("PGSWEEPER_RESULT") == "terminated"


def _ids():
    """MESSAGE_ID_* from include/message-ids.h."""
    from conftest import REPO
    text = (REPO / "include" / "message-ids.h").read_text()
    return dict(re.findall(r'#define MESSAGE_ID_(\w+)\s+"([0-9a-f]{32})"', text))


def test_every_service_event_has_its_message_id(pg, sweeper, journal, tmp_path):
    """start, connect, could-not-connect, terminate, cap, reload ok/failed, stop."""
    import signal
    from conftest import stop_process, wait_until

    ids = _ids()
    victims = [pg.connect(application_name=f"j{i}") for i in range(3)]
    time.sleep(0.6)
    dead_port = free_tcp_port()
    servers = [main_server(pg, password=SECRET),
               ("down", f"host=127.0.0.1 port={dead_port} dbname=postgres user=pgsweeper password={SECRET}")]
    conf = sweeper.write_config("max_actions_per_cycle: 2\n" +
                                yaml_config(servers, idle_rule("500ms", extra="        users: [app]\n"),
                                            interval="300ms"))
    cursor = journal.cursor()
    import subprocess
    proc = subprocess.Popen([str(sweeper.binary), "-c", str(conf), "--log-target", "journal"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sweeper.procs.append(proc)
    wait_until(lambda: all(not pg.pid_alive(v.info.backend_pid) for v in victims), 10, what="victims gone")
    proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    conf.write_text("servers: [")
    proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert stop_process(proc) == 0

    want = {"STARTED": "6", "SERVER_CONNECTED": "6", "SERVER_LOST": "3", "TERMINATED": "5",
            "CAP_HIT": "4", "RELOAD_OK": "6", "RELOAD_FAILED": "3", "STOPPED": "6"}
    got = journal.read({"_PID": proc.pid}, after_cursor=cursor, min_entries=len(want) + 2)
    by_id = {}
    for e in got:
        by_id.setdefault(e.get("MESSAGE_ID"), []).append(e)
    for name, prio in want.items():
        entries = by_id.get(ids[name], [])
        assert entries, f"no journal entry with MESSAGE_ID_{name}:\n{entries_text(got)}"
        assert all(e.get("PRIORITY") == prio for e in entries), (name, [e.get("PRIORITY") for e in entries])
    lost = by_id[ids["SERVER_LOST"]]
    assert len(lost) == 1 and lost[0].get("PGSWEEPER_SERVER") == "down", entries_text(lost)
    assert len(by_id[ids["TERMINATED"]]) == 3
    # the bad file's errors are in the journal too, at err, with file:line:col
    assert any(e.get("PRIORITY") == "3" and re.search(re.escape(str(conf)) + r":\d+:\d+: error: ", e.get("MESSAGE", ""))
               for e in got), entries_text(got)
    assert SECRET not in entries_text(got)


def test_log_query_adds_the_query_text(pg, sweeper, journal):
    victim = pg.connect(application_name="with-query")
    victim.execute("SELECT 42 AS pgsweeper_marker")
    pid = victim.info.backend_pid
    time.sleep(2.2)
    cursor = journal.cursor()
    r = sweeper.run_once("log_query: true\n" + yaml_config([main_server(pg, password=SECRET)], idle_rule("2s")),
                         "--once", "--log-target", "journal")
    assert r.returncode == 0, r.stderr
    got = journal.read({"PGSWEEPER_PID": pid, "_PID": r.pid}, after_cursor=cursor)
    assert len(got) == 1, entries_text(got)
    assert got[0].get("PGSWEEPER_QUERY") == "SELECT 42 AS pgsweeper_marker", entries_text(got)
    assert "pgsweeper_marker" not in got[0].get("MESSAGE", ""), "the query belongs in its own field only"
