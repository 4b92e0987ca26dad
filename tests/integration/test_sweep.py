"""One-shot enforcement (--once): who dies, who survives, what is printed."""

import signal
import time

import pytest

from conftest import free_tcp_port, slow_factor, stop_process
from pgs_helpers import (ActiveQuery, assert_connection_alive, assert_connection_dead,
                         events, idle_rule, main_server, parse_duration_ms, yaml_config)

ONCE = ("--once", "--log-target", "stderr")


class Scene:
    """Sessions set up so that some are past max_idle 2s and some are not."""

    def __init__(self, pg):
        self.pg = pg
        # over the limit once we have slept
        self.old_named = pg.connect(application_name="victim-app")
        self.old_unnamed = pg.connect()          # empty application_name -> '-'
        self.old_other_db = pg.connect(user="other", dbname="postgres",
                                       application_name="victim-other")
        # protected or not over the limit
        self.superuser = pg.connect(user="postgres", dbname="postgres",
                                    application_name="su-idle")
        self.busy_conn = pg.connect(application_name="busy")
        self.busy = ActiveQuery(pg, self.busy_conn)
        self.busy.wait_active()
        time.sleep(2.6)
        self.young = pg.connect(application_name="young")
        # (conn.info.backend_pid reads 0 once the connection is dead)
        self.pid_named = self.old_named.info.backend_pid
        self.pid_unnamed = self.old_unnamed.info.backend_pid
        self.pid_other_db = self.old_other_db.info.backend_pid
        self.old = {c.info.backend_pid: c for c in
                    (self.old_named, self.old_unnamed, self.old_other_db)}
        self.survivors = {c.info.backend_pid: c for c in
                          (self.superuser, self.busy_conn, self.young)}

    def assert_only_reported(self, r, kind, what):
        """The --once run r killed nothing and reported every old session as
        kind ("dry-run", "log-only"); returns those lines by pid."""
        assert r.returncode == 0, r.stderr
        time.sleep(0.3)  # a (wrong) terminate would have taken effect by now
        for pid in list(self.old) + list(self.survivors):
            assert self.pg.pid_alive(pid), f"{what} killed pid {pid}\n{r.stderr}"
        assert not events(r.stderr, "terminated", "main"), r.stderr
        lines = events(r.stderr, kind, "main")
        assert set(lines) == set(self.old), r.stderr
        for conn in self.old.values():
            assert_connection_alive(conn)
        return lines

    def close(self):
        self.busy.stop()


@pytest.fixture
def scene(pg):
    s = Scene(pg)
    yield s
    s.close()


def test_once_terminates_only_old_idle_sessions(pg, sweeper, scene):
    cfg = yaml_config([main_server(pg)], idle_rule("2s"))
    r = sweeper.run_once(cfg, *ONCE)
    assert r.returncode == 0, r.stderr

    # every over-limit idle session is gone, server side and client side
    for pid, conn in scene.old.items():
        assert pg.wait_pid_gone(pid, 5), f"old idle pid {pid} still alive\n{r.stderr}"
        assert_connection_dead(conn)

    # survivors: young idle, active query, idle superuser
    for pid, conn in scene.survivors.items():
        assert pg.pid_alive(pid), f"pid {pid} was killed\n{r.stderr}"
    assert pg.activity(scene.busy.pid)[4] == "active"
    assert not scene.busy.done.is_set()
    assert_connection_alive(scene.young)
    assert_connection_alive(scene.superuser)
    # not even attempted (a superuser would be 'denied' by PostgreSQL itself)
    for pid in scene.survivors:
        assert f"pid {pid} (" not in r.stderr, f"survivor {pid} was judged:\n{r.stderr}"

    # exactly one SPEC-format line per victim, none for anyone else
    lines = events(r.stderr, "terminated", "main")
    assert set(lines) == set(scene.old), r.stderr
    expect = {
        scene.pid_named: ("app", "appdb", "victim-app"),
        scene.pid_unnamed: ("app", "appdb", "-"),
        scene.pid_other_db: ("other", "postgres", "victim-other"),
    }
    for pid, (user, db, app) in expect.items():
        m = lines[pid]
        assert (m["user"], m["db"], m["app"], m["client"]) == (user, db, app, "local")
        assert m["state"] == "idle"
        assert m["limit"] == "max_idle" and m["limit_value"] == "2s"
        assert m["rule"] == "idle-sessions"
        elapsed = parse_duration_ms(m["elapsed"])
        assert 2000 <= elapsed < 60000, m.group(0)


@pytest.mark.parametrize("how", ["cli", "global", "rule"])
def test_dry_run_kills_nothing(pg, sweeper, scene, how):
    rule_extra = "        dry_run: true\n" if how == "rule" else ""
    top = "dry_run: true\n" if how == "global" else ""
    cfg = yaml_config([main_server(pg)], idle_rule("2s", extra=rule_extra), top=top)
    args = ONCE + (("--dry-run",) if how == "cli" else ())
    lines = scene.assert_only_reported(sweeper.run_once(cfg, *args), "dry-run", "dry-run")
    m = lines[scene.pid_named]
    assert (m["user"], m["db"], m["app"], m["client"]) == ("app", "appdb", "victim-app", "local")
    assert m["limit"] == "max_idle" and m["rule"] == "idle-sessions"


def test_action_log_kills_nothing(pg, sweeper, scene):
    cfg = yaml_config([main_server(pg)], idle_rule("2s", action="log", name="just-looking"))
    lines = scene.assert_only_reported(sweeper.run_once(cfg, *ONCE), "log-only", "action: log")
    m = lines[scene.pid_unnamed]
    assert (m["user"], m["db"], m["app"], m["client"]) == ("app", "appdb", "-", "local")
    assert m["rule"] == "just-looking" and m["limit"] == "max_idle"


def test_tcp_client_address_is_printed(pg, sweeper):
    victim = pg.connect(host="127.0.0.1", application_name="tcp-victim")
    pid = victim.info.backend_pid
    time.sleep(1.2)
    cfg = yaml_config([main_server(pg)], idle_rule("1s"))
    r = sweeper.run_once(cfg, *ONCE)
    assert r.returncode == 0, r.stderr
    assert pg.wait_pid_gone(pid), r.stderr
    lines = events(r.stderr, "terminated", "main")
    assert set(lines) == {pid}, r.stderr
    assert lines[pid]["client"] == "127.0.0.1"
    assert lines[pid]["limit_value"] == "1s"


def test_unreachable_server_exit_1_and_others_enforced(pg, sweeper):
    victim = pg.connect(application_name="victim-app")
    pid = victim.info.backend_pid
    time.sleep(2.3)
    dead_port = free_tcp_port()
    servers = [("down", f"host=127.0.0.1 port={dead_port} dbname=postgres "
                        f"user=pgsweeper connect_timeout=3"),
               main_server(pg)]
    t0 = time.monotonic()
    r = sweeper.run_once(yaml_config(servers, idle_rule("2s")), *ONCE)
    took = time.monotonic() - t0
    assert r.returncode == 1, r.stderr
    assert any(line.startswith("down: ") and "connect" in line
               for line in r.stderr.splitlines()), r.stderr
    assert pg.wait_pid_gone(pid), f"reachable server not enforced\n{r.stderr}"
    assert_connection_dead(victim)
    assert set(events(r.stderr, "terminated", "main")) == {pid}, r.stderr
    assert not events(r.stderr, "terminated", "down")
    assert took < 15 * slow_factor(), f"--once took {took:.1f}s"


def test_unreachable_unix_socket_server_exit_1(pg, sweeper, tmp_path):
    # nothing listens in an empty socket directory
    servers = [("nosock", f"host={tmp_path} port={pg.port} dbname=postgres user=pgsweeper")]
    r = sweeper.run_once(yaml_config(servers, idle_rule("2s")), *ONCE)
    assert r.returncode == 1, r.stderr
    assert any(line.startswith("nosock: ") and "connect" in line
               for line in r.stderr.splitlines()), r.stderr


def test_own_connections_are_never_touched(pg, sweeper):
    # Two server entries on the same cluster: each one's connection is, for
    # the other, an idle non-superuser session far past max_idle 100ms.
    cfg = yaml_config([main_server(pg, "a"), main_server(pg, "b")], idle_rule("100ms"),
                      interval="300ms")
    proc = sweeper.start_daemon(cfg, "--log-target", "stderr")
    try:
        own = pg.backend_pids_alive("pgsweeper")
        deadline = time.monotonic() + 10 * slow_factor()
        while len(own) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            own = pg.backend_pids_alive("pgsweeper")
        assert len(own) >= 2, f"pgsweeper did not connect to both entries: {own}"
        # their application_name is pgsweeper
        for pid in own:
            assert pg.activity(pid)[3] == "pgsweeper", pg.activity(pid)

        victim = pg.connect(application_name="victim-app")
        victim_pid = victim.info.backend_pid
        victim_died = None
        t_end = time.monotonic() + 3.0
        while time.monotonic() < t_end:
            now = pg.backend_pids_alive("pgsweeper")
            assert now == own, f"pgsweeper's own backends changed: {own} -> {now}"
            if victim_died is None and not pg.pid_alive(victim_pid):
                victim_died = time.monotonic()
            assert proc.poll() is None, "daemon exited"
            time.sleep(0.05)
        assert victim_died is not None, "idle app session was not terminated"
    finally:
        rc = stop_process(proc, signal.SIGTERM, timeout=10)
        _, err = proc.communicate()
    assert rc == 0, err
    for pid in own:
        assert f"terminated pid {pid} " not in err, f"own backend {pid} terminated:\n{err}"
        assert f"pid {pid} (user" not in err, f"own backend {pid} was judged/logged:\n{err}"
    killed = set(events(err, "terminated", "a")) | set(events(err, "terminated", "b"))
    assert killed == {victim_pid}, err
