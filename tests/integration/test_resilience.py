"""A server that connects and then never answers a poll must neither delay
the others nor keep the daemon from stopping."""

import os
import re
import signal
import subprocess
import time

import pytest

from conftest import stop_process, wait_until
from fakepg import FakeServer
from pgs_helpers import idle_rule, main_server, yaml_config


@pytest.fixture
def silent_after_setup():
    f = FakeServer(answer=2)       # answers the set-up (SET, PREPARE), then hangs on the poll
    yield f
    f.close()


def stuck_and_main_config(pg, fake):
    return yaml_config([("stuck", fake.conninfo()), main_server(pg)], idle_rule("1s"), interval="300ms")


def test_sigterm_mid_poll_exits_0_within_a_second(pg, sweeper, silent_after_setup):
    proc = sweeper.start_daemon(stuck_and_main_config(pg, silent_after_setup), "--log-target", "stderr")
    # the poll is the third batch: it is now in flight, unanswered
    assert silent_after_setup.wait_statements(3), "pgsweeper never sent its poll to the fake server"
    victim = pg.connect(application_name="still-enforced")
    pid = victim.info.backend_pid
    assert pg.wait_pid_gone(pid, timeout=5), "a hanging server delayed the healthy one"
    t0 = time.monotonic()
    rc = stop_process(proc, signal.SIGTERM)
    took = time.monotonic() - t0
    assert rc == 0
    assert took < 1.0, f"SIGTERM mid-poll took {took:.2f}s"


def test_hung_poll_times_out_and_reconnects(pg, sweeper, silent_after_setup):
    proc = sweeper.start_daemon(stuck_and_main_config(pg, silent_after_setup), "--log-target", "stderr")
    assert silent_after_setup.wait_statements(3)
    # the client-side timeout (10 s) drops the connection, backoff reconnects
    with silent_after_setup.received:
        assert silent_after_setup.received.wait_for(lambda: silent_after_setup.connections >= 2, 20), \
            "no reconnect after the poll timed out"
    assert stop_process(proc) == 0
    err = proc.stderr.read()
    lost = [l for l in err.splitlines() if l.startswith("stuck: connection lost")]
    assert len(lost) == 1, err
    assert "timed out waiting for the server" in lost[0], err


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_server_restart_is_survived(pg, sweeper, mode):
    conf = yaml_config([main_server(pg)], idle_rule("1s"), interval="300ms")
    proc = sweeper.start_daemon(conf, "--log-target", "stderr")
    wait_until(pg.sweeper_polled, 10, what="pgsweeper connected and polled")
    pg.restart(mode, down_for=1.5)
    victim = pg.connect(application_name=f"after-{mode}-restart")
    assert pg.wait_pid_gone(victim.info.backend_pid, timeout=15), "no enforcement after the restart"
    assert proc.poll() is None, "pgsweeper died with the server"
    assert stop_process(proc) == 0
    err = proc.stderr.read()
    lost = [l for l in err.splitlines() if l.startswith("main: connection lost")]
    restored = [l for l in err.splitlines() if l.startswith("main: connection restored after ")]
    assert len(lost) == 1, f"lost should be logged once, not per attempt:\n{err}"
    assert len(restored) == 1, err
    # what happened comes first; libpq's lines are joined, not "?"
    assert lost[0].startswith("main: connection lost: server closed the connection (libpq: "), lost[0]
    assert "?" not in lost[0], lost[0]
    assert not [l for l in err.splitlines() if "could not connect" in l], \
        f"reconnect attempts must not be logged one by one:\n{err}"


def test_many_servers_are_polled_concurrently(pg, sweeper):
    """49 servers that accept a poll and never answer, plus a real one: all
    49 hold their poll in flight at the same time (so they are not polled one
    after another), and the real server is enforced meanwhile."""
    fakes = [FakeServer(answer=2) for _ in range(49)]
    try:
        servers = [(f"stuck{i}", f.conninfo()) for i, f in enumerate(fakes)] + [main_server(pg)]
        victim = pg.connect(application_name="among-49-stuck")
        time.sleep(1.1)
        t0 = time.monotonic()
        proc = sweeper.start_daemon(yaml_config(servers, idle_rule("1s"), interval="300ms"),
                                    "--once", "--log-target", "stderr")
        for f in fakes:
            assert f.wait_statements(3, timeout=10), "a server was not polled while others hung"
        assert pg.wait_pid_gone(victim.info.backend_pid, timeout=5), "the real server waited for the stuck ones"
        assert all(f.statements == 3 for f in fakes)
        rc = proc.wait(timeout=60)
        took = time.monotonic() - t0
        err = proc.stderr.read()
        assert rc == 1, err              # --once: unreachable servers make it exit 1
        assert sum("timed out waiting for the server" in l for l in err.splitlines()) == 49, err
        # one client-side timeout (10 s) for all of them together, not 49 in a row
        print(f"49 stuck servers + 1 real: --once took {took:.1f}s")
    finally:
        for f in fakes:
            f.close()


def test_fifty_databases_swept_in_one_cycle(pg, sweeper):
    admin = pg.connect(user="postgres", dbname="postgres")
    names = [f"db{i:02d}" for i in range(50)]
    for n in names:
        admin.execute(f"CREATE DATABASE {n} OWNER app")
    victims = {}
    for n in names:
        for _ in range(2):
            c = pg.connect(dbname=n, application_name=f"idle-in-{n}")
            victims[c.info.backend_pid] = n
    time.sleep(1.1)
    servers = [(n, pg.conninfo(user="pgsweeper", dbname=n)) for n in names]
    rules = "      - {name: idle, max_idle: 1s, users: [app]}\n"
    text = "servers:\n" + "".join(
        f"  - name: {n}\n    conninfo: \"{ci}\"\n    rules:\n"
        f"      - {{name: idle, max_idle: 1s, users: [app], databases: [{n}]}}\n" for n, ci in servers)
    t0 = time.monotonic()
    r = sweeper.run_once(text, "--once", "--log-target", "stderr")
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    ended = {}
    for l in r.stderr.splitlines():
        m = re.match(r"^(db\d\d): terminated pid (\d+) ", l)
        if m:
            ended[int(m.group(2))] = m.group(1)
    assert ended == victims, "each server ends exactly the sessions of its own database"
    print(f"50 servers, 100 victims, one --once cycle: {took:.2f}s")


def test_connect_timeout_from_conninfo_is_honoured(pg, sweeper):
    """libpq enforces connect_timeout only for blocking connects; pgsweeper's
    own timer must use the conninfo's value (here 2 s, default 10 s)."""
    import socket
    tarpit = socket.socket()
    tarpit.bind(("127.0.0.1", 0))
    tarpit.listen(8)                 # never accepted: the handshake never completes
    try:
        port = tarpit.getsockname()[1]
        servers = [("tarpit", f"host=127.0.0.1 port={port} dbname=postgres user=pgsweeper "
                              "sslmode=disable connect_timeout=2")]
        t0 = time.monotonic()
        r = sweeper.run_once(yaml_config(servers, idle_rule("1s")), "--once", "--log-target", "stderr")
        took = time.monotonic() - t0
        assert r.returncode == 1, r.stderr
        assert "tarpit: could not connect: timed out while connecting" in r.stderr, r.stderr
        assert 1.5 <= took < 8, f"connect_timeout=2 took {took:.1f}s (the default is 10 s)"
    finally:
        tarpit.close()


def test_status_says_what_is_wrong_now(pg, sweeper, tmp_path):
    """STATUS= names a server while it is down and forgets it once it is
    back; "1 session", not "1 sessions"."""
    from test_service import NotifySocket
    notify = NotifySocket(tmp_path / "notify")
    try:
        conf = yaml_config([main_server(pg)], idle_rule("1s"), interval="300ms")
        path = sweeper.write_config(conf)
        proc = subprocess.Popen([str(sweeper.binary), "-c", str(path), "--log-target", "stderr"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env={**os.environ, "NOTIFY_SOCKET": notify.path})
        sweeper.procs.append(proc)
        wait_until(pg.sweeper_polled, 10, what="pgsweeper connected and polled")
        victim = pg.connect(application_name="one")
        assert pg.wait_pid_gone(victim.info.backend_pid, timeout=10)

        def status():
            return [f["STATUS"] for _, f in notify.messages if "STATUS" in f][-1]
        wait_until(lambda: "1 session ended" in status(), 5, what="STATUS with one session ended")
        pg.restart("fast", down_for=2.0)
        down_seen = [f["STATUS"] for _, f in notify.messages if "STATUS" in f]
        wait_until(lambda: status().startswith("1/1 servers up"), 15, what="STATUS back to 1/1 up")
        time.sleep(0.5)
        last = status()
        assert stop_process(proc) == 0
    finally:
        notify.close()
    assert any("0/1 servers up" in st and "down: main" in st for st in down_seen), down_seen
    assert "down" not in last and "error" not in last, last
    assert "1 session ended" in last and "sessions ended" not in last, last
