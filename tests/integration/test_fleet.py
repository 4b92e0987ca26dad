"""Fleet configuration (SPEC 16): include and rule_sets, with a real server.

Every server below points at the same test cluster, so every server sees
every session. Each server's rules therefore select their sessions by
application_name (or, for charlie, by user), and each server exempts a "keep"
session that its own rules would otherwise end: a rule that reached a server
it does not belong to (a set's rule given to every server, one file's rules
given to another file's server) would end that keep session, so a leak shows
deterministically, not only by which server won a race. pgsweeper's own
connections carry application_name pgs-SERVER, which tells them apart.
"""

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import DaemonProcess, slow_factor, stop_process, wait_until
from pgs_helpers import events, yaml_str
from test_service import NotifySocket

LIMIT = "700ms"
INTERVAL = "200ms"
RELOAD_FAILED_ID = "421a2c1e79b6437694b1c6771eba2ecf"   # include/message-ids.h


# --------------------------------------------------------------------------
# configuration text
# --------------------------------------------------------------------------

def conninfo(pg, name):
    return pg.conninfo(user="pgsweeper", dbname="postgres", application_name=f"pgs-{name}")


def server_text(pg, name, rules="", rule_sets=None, keep=None):
    """One entry of "servers:"; rules: lines at the rule level (6 spaces)."""
    text = (f"  - name: {name}\n"
            f"    conninfo: {yaml_str(conninfo(pg, name))}\n")
    if keep:
        text += f"    exempt:\n      applications: [{', '.join(keep)}]\n"
    if rule_sets:
        text += f"    rule_sets: [{', '.join(rule_sets)}]\n"
    if rules:
        text += f"    rules:\n{rules}"
    return text


def rule(name, limit=LIMIT, action="terminate", **filters):
    text = f"      - name: {name}\n        max_idle: {limit}\n        action: {action}\n"
    for key, values in filters.items():
        text += f"        {key}: [{', '.join(values)}]\n"
    return text


def set_text(name="std-idle", limit=LIMIT, action="terminate"):
    """The main file's rule sets: "standard", one rule for fleet-std*."""
    return ("rule_sets:\n"
            "  standard:\n"
            f"    - name: {name}\n"
            f"      max_idle: {limit}\n"
            f"      action: {action}\n"
            "      applications: [fleet-std*]\n")


def main_text(pg, include=('conf.d/*.yaml',), sets=None):
    """The main file: include, the set, and a server of its own (hq)."""
    return (f"interval: {INTERVAL}\n"
            f"include: [{', '.join(yaml_str(g) for g in include)}]\n"
            f"{set_text() if sets is None else sets}"
            "servers:\n"
            + server_text(pg, "hq", rule("hq-idle", applications=["fleet-hq*"]), keep=["fleet-hq-keep"]))


def alpha_text(pg):
    return "servers:\n" + server_text(pg, "alpha", rule("alpha-idle", applications=["fleet-alpha*"]),
                                      keep=["fleet-alpha-keep"])


def bravo_text(pg):
    """The set's rule first, then its own."""
    return "servers:\n" + server_text(pg, "bravo", rule("bravo-own", applications=["fleet-bravo*"]),
                                      rule_sets=["standard"], keep=["fleet-std-keep", "fleet-bravo-keep"])


def charlie_text(pg):
    """A user filter: every session of role "other" but its keep session."""
    return "servers:\n" + server_text(pg, "charlie", rule("charlie-idle", users=["other"]),
                                      keep=["fleet-charlie-keep"])


FILES = {"a-alpha.yaml": alpha_text, "b-bravo.yaml": bravo_text, "c-charlie.yaml": charlie_text}


def write_fleet(pg, tmp_path, files=("a-alpha.yaml", "b-bravo.yaml", "c-charlie.yaml")):
    """main file at tmp_path/pgsweeper.yaml, servers in tmp_path/conf.d."""
    confd = tmp_path / "conf.d"
    confd.mkdir(exist_ok=True)
    for f in files:
        (confd / f).write_text(FILES[f](pg))
    main = tmp_path / "pgsweeper.yaml"
    main.write_text(main_text(pg))
    return main, confd


# --------------------------------------------------------------------------
# the daemon
# --------------------------------------------------------------------------

def start_daemon(sweeper, main, monkeypatch, notify, *args):
    """The daemon on main, output to files (DaemonProcess), NOTIFY_SOCKET set."""
    monkeypatch.setenv("NOTIFY_SOCKET", notify.path)
    proc = DaemonProcess([str(sweeper.binary), "-c", str(main), *args],
                         sweeper.tmp_path / f"daemon-{len(sweeper.procs)}")
    sweeper.procs.append(proc)
    monkeypatch.delenv("NOTIFY_SOCKET")
    return proc


def wait_ready(notify, proc, count=1):
    """count READY=1 messages; a daemon that exits first fails at once, with its stderr."""
    def ready():
        assert proc.poll() is None, f"the daemon exited with {proc.returncode}:\n{Path(proc.stderr.name).read_text()}"
        return sum("READY" in f for _, f in list(notify.messages)) >= count
    wait_until(ready, 10 * slow_factor(), what=f"{count} x READY on NOTIFY_SOCKET")


def own_pids_by_server(pg):
    """{server name: pgsweeper's backend pids for it}."""
    out = {}
    for app, pid in pg.admin_query(
            "SELECT application_name, pid FROM pg_stat_activity "
            "WHERE backend_type = 'client backend' AND usename = 'pgsweeper'"):
        if app.startswith("pgs-"):
            out.setdefault(app[4:], set()).add(pid)
    return out


def wait_servers_connected(pg, proc, names, timeout=10):
    def connected():
        assert proc.poll() is None, f"the daemon exited:\n{Path(proc.stderr.name).read_text()}"
        got = own_pids_by_server(pg)
        return got if set(got) == set(names) and all(len(p) == 1 for p in got.values()) else None
    return wait_until(connected, timeout * slow_factor(), what=f"one connection for each of {sorted(names)}")


ALL = ("hq", "alpha", "bravo", "charlie")


def terminations(stderr, servers=ALL):
    """{pid: [(server, rule), ...]} of every 'terminated' stderr line."""
    out = {}
    for server in servers:
        for pid, m in events(stderr, "terminated", server).items():
            out.setdefault(pid, []).append((server, m.group("rule")))
    return out


# --------------------------------------------------------------------------
# 1. each server judged by its own rules
# --------------------------------------------------------------------------

def open_sessions(pg):
    """(to_end, to_keep): {pid: (server, rule)} that must be ended, and
    {pid: conn} that must stay."""
    to_end = {}
    keep = {}
    for server, rule_name, user, app in (("hq", "hq-idle", "app", "fleet-hq"),
                                         ("alpha", "alpha-idle", "app", "fleet-alpha"),
                                         ("bravo", "std-idle", "app", "fleet-std"),
                                         ("bravo", "bravo-own", "app", "fleet-bravo"),
                                         ("charlie", "charlie-idle", "other", "fleet-charlie")):
        c = pg.connect(user=user, dbname="appdb" if user == "app" else "postgres", application_name=app)
        to_end[c.info.backend_pid] = (server, rule_name)
    # each ended by no rule of the server that exempts it, and by no rule of
    # any other server; fleet-none by no rule at all
    for user, app in (("app", "fleet-hq-keep"), ("app", "fleet-alpha-keep"), ("app", "fleet-std-keep"),
                      ("app", "fleet-bravo-keep"), ("other", "fleet-charlie-keep"), ("app", "fleet-none")):
        c = pg.connect(user=user, dbname="appdb" if user == "app" else "postgres", application_name=app)
        keep[c.info.backend_pid] = c
    return to_end, keep


def test_each_server_is_judged_by_its_own_rules(pg, sweeper, tmp_path, monkeypatch):
    main, _ = write_fleet(pg, tmp_path)
    to_end, keep = open_sessions(pg)
    notify, proc = NotifySocket(tmp_path / "notify"), None
    try:
        proc = start_daemon(sweeper, main, monkeypatch, notify, "--log-target", "stderr")
        wait_ready(notify, proc)
        wait_servers_connected(pg, proc, ALL)
        for pid, (server, rule_name) in to_end.items():
            assert pg.wait_pid_gone(pid, timeout=5 * slow_factor()), \
                f"pid {pid} was not ended by {server}'s rule {rule_name}"
        # the keep sessions are as old as the ended ones: past the limit for
        # several polls by now
        time.sleep(0.6)
        for pid, conn in keep.items():
            assert pg.pid_alive(pid), f"pid {pid} ({pg.activity(pid)}) was ended by a rule of another server"
            assert conn.execute("SELECT 1").fetchone()[0] == 1
        assert stop_process(proc) == 0
    finally:
        if proc is not None:
            stop_process(proc)
        notify.close()
    err = proc.stderr.read()
    assert re.search(r"started, servers: 4\b", err), err
    # each ended session by exactly the server and rule it was meant for
    assert terminations(err) == {pid: [want] for pid, want in to_end.items()}, err
    assert "dry-run" not in err and "log-only" not in err, err


# --------------------------------------------------------------------------
# 2. a reload with a broken included file keeps everything
# --------------------------------------------------------------------------

XRAY_GOOD = "servers:\n  - name: xray\n    conninfo: {conninfo}\n    rules:\n{rules}"
BROKEN = {
    # an unknown key in the server of line 2: at line 4, column 5
    "unknown-key": ("servers:\n  - name: xray\n    conninfo: {conninfo}\n    frobnicate: 1\n    rules:\n{rules}",
                    ':4:5: error: unknown key "frobnicate" in a server'),
    # a flow mapping of line 5 closed by "]": libyaml stops there (column 61)
    "yaml-syntax": ("servers:\n  - name: xray\n    conninfo: {conninfo}\n    rules:\n"
                    "      - {{name: x-idle, max_idle: 1s, applications: [fleet-x]]\n",
                    ":5:61: error: YAML syntax: did not find expected ',' or '}' while parsing a flow mapping "
                    "started at line 5, column 9"),
}


@pytest.mark.parametrize("broken", sorted(BROKEN))
def test_reload_with_a_broken_included_file_keeps_the_running_configuration(pg, sweeper, tmp_path, monkeypatch,
                                                                            journal, broken):
    main, confd = write_fleet(pg, tmp_path, files=("b-bravo.yaml",))
    xray = confd / "x.yaml"
    fill = dict(conninfo=yaml_str(conninfo(pg, "xray")), rules=rule("x-idle", applications=["fleet-x"]))
    xray.write_text(XRAY_GOOD.format(**fill))
    notify, proc = NotifySocket(tmp_path / "notify"), None
    cursor = journal.cursor()
    try:
        proc = start_daemon(sweeper, main, monkeypatch, notify, "--log-target", "journal")
        wait_ready(notify, proc)
        before = wait_servers_connected(pg, proc, ("hq", "bravo", "xray"))

        # the new main file alone would load, but its set would end nothing
        # within 700ms (and names its rule otherwise): had the reload taken it
        # without the broken file, the fleet-std session below would stay
        main.write_text(main_text(pg, sets=set_text(name="std-idle-v2", limit="1h")))
        text, diagnostic = BROKEN[broken]
        xray.write_text(text.format(**fill))
        proc.send_signal(signal.SIGHUP)
        wait_ready(notify, proc, count=2)

        # (backend_pid reads 0 once psycopg sees the connection dead: kept here)
        std = pg.connect(application_name="fleet-std").info.backend_pid
        x = pg.connect(application_name="fleet-x").info.backend_pid
        for pid, what in ((std, "the set's old rule (bravo)"), (x, "the broken file's old rule (xray)")):
            assert pg.wait_pid_gone(pid, timeout=5 * slow_factor()), f"{what} stopped enforcing after a failed reload"
        assert own_pids_by_server(pg) == before, "a failed reload touched the connections"

        want_pids = {str(std), str(x)}

        def logged():
            # the journal queue is flushed from the loop: poll until it is all in
            found = [e for e in journal.entries(after_cursor=cursor) if e.get("_PID") == str(proc.pid)]
            done = want_pids <= {e.get("PGSWEEPER_PID") for e in found} and \
                any(e.get("MESSAGE_ID") == RELOAD_FAILED_ID for e in found)
            return found if done else None

        got = wait_until(logged, 15, interval=0.2, what="the reload and termination entries in the journal")
        assert stop_process(proc) == 0
    finally:
        if proc is not None:
            stop_process(proc)
        notify.close()

    failed = [e for e in got if e.get("MESSAGE_ID") == RELOAD_FAILED_ID]
    assert [e["MESSAGE"] for e in failed] == [
        f"pgsweeper: reload failed (errors in {xray}), keeping the running configuration"], failed
    assert failed[0].get("PRIORITY") == "3", failed
    diag = [e for e in got if e.get("MESSAGE", "").startswith(f"pgsweeper: {xray}:")]
    assert [e["MESSAGE"] for e in diag] == [f"pgsweeper: {xray}{diagnostic}"], [e.get("MESSAGE") for e in got]
    assert diag[0].get("PRIORITY") == "3", diag
    ended = {e["PGSWEEPER_PID"]: (e.get("PGSWEEPER_SERVER"), e.get("PGSWEEPER_RULE"), e.get("PGSWEEPER_RESULT"))
             for e in got if e.get("PGSWEEPER_PID") in want_pids}
    assert ended == {str(std): ("bravo", "std-idle", "terminated"), str(x): ("xray", "x-idle", "terminated")}, ended


# --------------------------------------------------------------------------
# 3. a reload that adds a file
# --------------------------------------------------------------------------

def test_reload_adding_a_file_polls_its_server_and_keeps_the_others(pg, sweeper, tmp_path, monkeypatch):
    main, confd = write_fleet(pg, tmp_path, files=("a-alpha.yaml", "b-bravo.yaml"))
    victim = pg.connect(user="other", dbname="postgres", application_name="fleet-charlie")
    pid = victim.info.backend_pid
    notify, proc = NotifySocket(tmp_path / "notify"), None
    try:
        proc = start_daemon(sweeper, main, monkeypatch, notify, "--log-target", "stderr")
        wait_ready(notify, proc)
        before = wait_servers_connected(pg, proc, ("hq", "alpha", "bravo"))
        time.sleep(1.0)
        assert pg.pid_alive(pid), "no rule of hq, alpha or bravo may end a session of role other"

        (confd / "c-charlie.yaml").write_text(charlie_text(pg))
        proc.send_signal(signal.SIGHUP)
        wait_ready(notify, proc, count=2)
        assert pg.wait_pid_gone(pid, timeout=5 * slow_factor()), "the added server's rule did not end the session"
        after = wait_servers_connected(pg, proc, ALL)
        assert {k: after[k] for k in before} == before, f"unchanged servers were reconnected: {before} -> {after}"
        assert stop_process(proc) == 0
    finally:
        if proc is not None:
            stop_process(proc)
        notify.close()
    err = proc.stderr.read()
    assert "configuration reloaded: 4 servers (3 kept, 1 added, 0 changed, 0 removed)" in err, err
    assert terminations(err) == {pid: [("charlie", "charlie-idle")]}, err


# --------------------------------------------------------------------------
# 4. --check, --dump and --explain read every file
# --------------------------------------------------------------------------

def run(sweeper, main, *args):
    return subprocess.run([str(sweeper.binary), "-c", str(main), *args], capture_output=True, text=True,
                          timeout=30 * slow_factor())


def test_check_reports_every_included_file(pg, sweeper, tmp_path):
    main, confd = write_fleet(pg, tmp_path)
    r = run(sweeper, main, "--check")
    assert (r.returncode, r.stdout, r.stderr) == (0, "configuration OK\n", ""), r

    alpha, charlie = confd / "a-alpha.yaml", confd / "c-charlie.yaml"
    alpha.write_text(alpha_text(pg).replace("    exempt:", "    exmept:"))
    charlie.write_text(charlie_text(pg).replace("users: [other]", "users: [other"))
    r = run(sweeper, main, "--check")
    assert r.returncode == 78, r
    assert r.stdout == "", r
    # both files, each at its own line and column, in the order read: the
    # key of line 4; the flow sequence of line 10 that the file ends in
    assert r.stderr.splitlines() == [
        f'{alpha}:4:5: error: unknown key "exmept" in a server; did you mean "exempt"?',
        f"{charlie}:11:1: error: YAML syntax: did not find expected ',' or ']' while parsing a flow sequence "
        "started at line 10, column 16",
    ], r.stderr

    # a server named in two files: an error that names both places
    alpha.write_text(alpha_text(pg))
    charlie.write_text(charlie_text(pg).replace("name: charlie", "name: alpha"))
    r = run(sweeper, main, "--check")
    assert r.returncode == 78, r
    assert r.stderr == f'{charlie}:2:5: error: server "alpha" is defined twice: here and at {alpha}:2:5\n', r.stderr


def test_dump_names_the_file_of_each_included_server(pg, sweeper, tmp_path):
    main, confd = write_fleet(pg, tmp_path)
    r = run(sweeper, main, "--dump")
    assert r.returncode == 0, r
    lines = r.stdout.splitlines()
    names = [i for i, line in enumerate(lines) if line.startswith("  - name: ")]
    assert [lines[i] for i in names] == ['  - name: "hq"', '  - name: "alpha"', '  - name: "bravo"',
                                         '  - name: "charlie"'], r.stdout
    # the main file's server has no comment; each included one its file's
    assert not lines[names[0] - 1].startswith("  # from"), r.stdout
    for i, f in zip(names[1:], ("a-alpha.yaml", "b-bravo.yaml", "c-charlie.yaml")):
        assert lines[i - 1] == f"  # from {confd / f}", r.stdout
    assert sum(line.startswith("  # from ") for line in lines) == 3, r.stdout
    # bravo: names its set (written once, at the top) and has its own rule
    bravo = "\n".join(lines[names[2]:names[3]])
    assert '    rule_sets: ["standard"]' in bravo, bravo
    assert re.findall(r'      - name: "([^"]+)"', bravo) == ["bravo-own"], bravo
    top = "\n".join(lines[:names[0]])
    assert re.search(r'^rule_sets:\n  "standard":\n    - name: "std-idle"$', top, re.M), top
    # the dump is a configuration of its own, the same servers in the same order
    again = tmp_path / "dumped.yaml"
    again.write_text(r.stdout)
    r2 = run(sweeper, again, "--dump")
    assert r2.returncode == 0, r2
    assert r2.stdout == "".join(line + "\n" for line in lines if not line.startswith("  # from ")), r2.stdout


def test_explain_finds_a_server_of_an_included_file(pg, sweeper, tmp_path):
    main, _ = write_fleet(pg, tmp_path)
    conn = pg.connect(user="other", dbname="postgres", application_name="fleet-charlie")
    pid = conn.info.backend_pid
    time.sleep(0.8)
    r = run(sweeper, main, "--explain", "--json", "--server", "charlie")
    assert r.returncode == 0, r
    rows = json.loads(r.stdout)
    assert rows and {row["server"] for row in rows} == {"charlie"}, rows
    mine = [row for row in rows if row["pid"] == pid]
    assert len(mine) == 1 and mine[0]["rule"] == "charlie-idle" and mine[0]["action"] == "terminate", mine
    assert pg.pid_alive(pid), "--explain must not act"
    r = run(sweeper, main, "--explain", "--server", "zulu")
    assert r.returncode == 2 and "zulu" in r.stderr, r


# --------------------------------------------------------------------------
# 5. include order
# --------------------------------------------------------------------------

def test_included_servers_come_in_sorted_file_order(pg, sweeper, tmp_path):
    confd = tmp_path / "conf.d"
    confd.mkdir()
    # written neither in sorted order nor in its reverse
    for f in ("00-first.yaml", "20-third.yaml", "10-second.yaml"):
        name = f[3:-5]
        (confd / f).write_text("servers:\n" + server_text(pg, name, rule(f"{name}-idle", limit="1h")))
    main = tmp_path / "pgsweeper.yaml"
    # the second glob matches a file the first one did: read once (else "defined twice")
    main.write_text(main_text(pg, include=("conf.d/*.yaml", "conf.d/1*.yaml")))
    r = run(sweeper, main, "--dump")
    assert r.returncode == 0, r
    got = [line for line in r.stdout.splitlines() if line.startswith(("  - name: ", "  # from "))]
    assert got == ['  - name: "hq"',
                   f"  # from {confd / '00-first.yaml'}", '  - name: "first"',
                   f"  # from {confd / '10-second.yaml'}", '  - name: "second"',
                   f"  # from {confd / '20-third.yaml'}", '  - name: "third"'], r.stdout
