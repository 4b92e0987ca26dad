"""Daemon mode: enforcement over time, and stopping on signals."""

import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import SLOW, slow_factor
from pgs_helpers import assert_connection_dead, events, idle_rule, main_server, yaml_config

INTERVAL = 0.5
MAX_IDLE = 1.5
SLACK = 2.0 * slow_factor()
STOP_BOUND = 3.0 if SLOW else 1.0     # SPEC 6: "SIGTERM stops within a second"


def daemon_config(pg, extra_servers=()):
    servers = list(extra_servers) + [main_server(pg)]
    return yaml_config(servers, idle_rule("1500ms"), interval="500ms")


def wait_connected(pg, proc, timeout=10):
    deadline = time.monotonic() + timeout * slow_factor()
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"daemon exited early: {proc.communicate()[1]}"
        if pg.backend_pids_alive("pgsweeper"):
            return
        time.sleep(0.05)
    raise AssertionError("daemon never connected to the server")


def timed_stop(proc, sig):
    """Send sig; return (exit code, seconds until exit, stderr).  A daemon
    that ignores the signal for 10 s is killed and reported as rc None."""
    t0 = time.monotonic()
    proc.send_signal(sig)
    try:
        rc = proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        rc = None
    took = time.monotonic() - t0
    _, err = proc.communicate()
    return rc, took, err


class KeepAlive:
    """A session that runs SELECT 1 every 300 ms (never idle for 1.5 s)."""

    def __init__(self, conn):
        self.conn = conn
        self.pid = conn.info.backend_pid
        self.error = None
        self.queries = 0
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop_ev.is_set():
            try:
                self.conn.execute("SELECT 1")
                self.queries += 1
            except Exception as e:
                self.error = e
                return
            self.stop_ev.wait(0.3)

    def stop(self):
        self.stop_ev.set()
        self.thread.join(5)


def test_sessions_die_when_they_pass_the_limit(pg, sweeper):
    proc = sweeper.start_daemon(daemon_config(pg), "--log-target", "stderr")
    wait_connected(pg, proc)
    keep = KeepAlive(pg.connect(application_name="keepalive"))
    try:
        sessions = []   # (conn, pid, t_before_connect, t_after_connect)
        for i in range(3):
            t_before = time.monotonic()
            c = pg.connect(application_name=f"idle-{i}")
            sessions.append((c, c.info.backend_pid, t_before, time.monotonic()))
            time.sleep(0.7)     # staggered: each crosses the limit at its own time

        died = {}
        give_up = sessions[-1][3] + MAX_IDLE + INTERVAL + SLACK + 1.0
        while time.monotonic() < give_up and len(died) < len(sessions):
            for _, pid, _, _ in sessions:
                if pid not in died and not pg.pid_alive(pid):
                    died[pid] = time.monotonic()
            assert proc.poll() is None, "daemon exited"
            time.sleep(0.03)
        # keep the keepalive session going a bit longer than one more limit
        time.sleep(MAX_IDLE)
        assert proc.poll() is None, "daemon exited"

        for conn, pid, t_before, t_after in sessions:
            assert pid in died, f"idle session {pid} was never terminated"
            age = died[pid] - t_before
            # never before it passed the limit (0.1 s for clock granularity) ...
            assert died[pid] - t_before >= MAX_IDLE - 0.1, \
                f"pid {pid} terminated after only {age:.2f}s idle; pgsweeper said:\n{proc.stderr.read()}"
            # ... and not long after it (limit + one interval + slack)
            assert died[pid] - t_after <= MAX_IDLE + INTERVAL + SLACK, \
                f"pid {pid} terminated only after {age:.2f}s idle"
            assert_connection_dead(conn)

        assert keep.error is None, f"keepalive session failed: {keep.error!r}"
        assert keep.queries >= 10
        assert pg.pid_alive(keep.pid)
    finally:
        keep.stop()

    rc, took, err = timed_stop(proc, signal.SIGTERM)
    assert rc == 0, err
    assert took < STOP_BOUND, f"SIGTERM took {took:.2f}s\n{err}"
    killed = events(err, "terminated", "main")
    assert set(killed) == {pid for _, pid, _, _ in sessions}, err
    assert keep.pid not in killed


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_exits_0_quickly(pg, sweeper, sig):
    proc = sweeper.start_daemon(daemon_config(pg), "--log-target", "stderr")
    wait_connected(pg, proc)
    time.sleep(0.7)     # let at least one poll happen after connecting
    assert proc.poll() is None
    rc, took, err = timed_stop(proc, sig)
    assert rc == 0, f"exit {rc} on {sig!r}\n{err}"
    assert took < STOP_BOUND, f"{sig!r} took {took:.2f}s\n{err}"


@pytest.fixture
def tarpit():
    """A TCP port whose connections are accepted by the kernel and then
    never answered: a server that hangs mid-handshake."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    yield s.getsockname()[1]
    s.close()


def test_hanging_server_neither_blocks_others_nor_sigterm(pg, sweeper, tarpit):
    victim = pg.connect(application_name="victim-app")
    t_before = time.monotonic()
    vpid = victim.info.backend_pid
    hang = ("hang", f"host=127.0.0.1 port={tarpit} dbname=postgres user=pgsweeper "
                    f"sslmode=disable connect_timeout=60")
    proc = sweeper.start_daemon(daemon_config(pg, [hang]), "--log-target", "stderr")
    deadline = t_before + MAX_IDLE + INTERVAL + SLACK
    while pg.pid_alive(vpid) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.03)
    victim_alive = pg.pid_alive(vpid)
    time.sleep(0.5)
    exited_early = proc.poll()
    if exited_early is None:
        rc, took, err = timed_stop(proc, signal.SIGTERM)
    else:
        rc, took, err = exited_early, 0.0, proc.communicate()[1]

    assert exited_early is None, f"daemon exited with {exited_early}\n{err}"
    assert not victim_alive, \
        f"a hanging server delayed enforcement on the reachable one\n{err}"
    assert_connection_dead(victim)
    assert rc == 0, f"exit {rc} (None: ignored SIGTERM for 10 s)\n{err}"
    assert took < STOP_BOUND, f"SIGTERM with a hanging connect took {took:.2f}s\n{err}"
    assert set(events(err, "terminated", "main")) == {vpid}, err


def test_poll_is_scheduled_at_the_limit_not_the_interval(pg, sweeper):
    """SPEC 4: the next poll happens when the first observed session will
    cross its limit, not one (long) interval later."""
    victim = pg.connect(application_name="victim-app")
    vpid = victim.info.backend_pid
    t_after = time.monotonic()
    cfg = yaml_config([main_server(pg)],
                      idle_rule("1500ms"), interval="20s")
    proc = sweeper.start_daemon(cfg, "--log-target", "stderr")
    deadline = t_after + MAX_IDLE + SLACK
    while pg.pid_alive(vpid) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.03)
    died_after = time.monotonic() - t_after
    alive = pg.pid_alive(vpid)
    rc, _, err = timed_stop(proc, signal.SIGTERM)
    assert not alive, f"idle session still alive {died_after:.1f}s after it was opened " \
                      f"(limit 1.5s, interval 20s)\n{err}"
    assert rc == 0, err
    assert set(events(err, "terminated", "main")) == {vpid}, err
