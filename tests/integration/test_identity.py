"""Who is pgsweeper on a server: its own connections (per cluster, never by
pid alone), a backend of its own it gave up on, another pgsweeper, and a
role that lacks the privileges to see anything."""

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from conftest import PgCluster, _find_pg_bindir, stop_process, wait_until
from pgs_helpers import idle_rule, main_server, yaml_config
from promtext import parse as parse_metrics, value as metric_value
from tcpproxy import TcpProxy
from test_service import NotifySocket


class NamespacedCluster(PgCluster):
    """A cluster whose postmaster is pid 1 of a pid namespace of its own:
    two of them hand out the same backend pids in the same order."""

    def _launch(self):
        if self._argv[0] != "unshare":
            self._argv = ["unshare", "--pid", "--fork", "--kill-child=SIGQUIT",
                          "setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"] + self._argv
            self._kw = {}
        super()._launch()

    def stop(self):
        # unshare ignores SIGINT while it waits: ask the postmaster (pid 1 inside)
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGINT)
        super().stop()


@pytest.fixture
def namespaced_pair():
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) to start clusters in pid namespaces")
    clusters = []
    try:
        for _ in range(2):
            c = NamespacedCluster(_find_pg_bindir())
            c.start()
            clusters.append(c)
        yield clusters
    finally:
        for c in clusters:
            c.stop()


def test_own_connections_are_recognised_per_cluster(namespaced_pair, sweeper):
    a, b = namespaced_pair
    # The first client backend of each namespace gets the same pid. On B it
    # is a victim; on A it is pgsweeper's own connection.
    # Backend pids count up from the same start in both namespaces, give or
    # take the start-up connections: victims on B cover the next pids of A.
    probe = a.connect(application_name="probe")
    a_next = probe.info.backend_pid + 1
    probe.close()
    victims = set()
    while not victims or max(victims) < a_next + 5:
        victims.add(b.connect(application_name="victim").info.backend_pid)
    time.sleep(1.2)
    conf = yaml_config([main_server(a, "a"), main_server(b, "b")],
                       idle_rule("1s"), interval="200ms")
    proc = sweeper.start_daemon(conf, "--log-target", "stderr")
    wait_until(lambda: a.backend_pids_alive("pgsweeper"), 10, what="pgsweeper on a")
    (vpid,) = a.backend_pids_alive("pgsweeper")
    assert vpid in victims, f"pgsweeper's pid {vpid} on a is no victim's pid on b {sorted(victims)}: " \
        "the test would show nothing"
    assert b.wait_pid_gone(vpid, timeout=10), "a session was spared for having pgsweeper's pid on another cluster"
    assert all(b.wait_pid_gone(p, timeout=5) for p in victims)
    assert stop_process(proc) == 0
    err = proc.stderr.read()
    assert re.search(rf"^b: terminated pid {vpid} ", err, re.M), err
    assert not re.search(r"^a: terminated", err, re.M), err


def test_abandoned_backend_is_ended_on_purpose(pg, sweeper):
    """The second poll's answer never comes and the server side stays open
    (a partition): after its client-side timeout pgsweeper reconnects, finds
    its old backend idle, and ends it as its own, not as a user session."""
    proxy = TcpProxy(pg.port, trigger=b"pgsweeper_snapshot", mode="blackhole", skip=2)
    try:
        conf = yaml_config([("main", proxy.conninfo())], idle_rule("1s"), interval="300ms")
        proc = sweeper.start_daemon(conf, "--log-target", "stderr", "-v")
        assert proxy.triggered.wait(15), "the second poll never came"
        old = pg.backend_pids_alive("pgsweeper")
        assert len(old) == 1, old
        old_pid = old.pop()
        assert pg.wait_pid_gone(old_pid, timeout=30), "the abandoned backend was left running"
        time.sleep(0.5)
        assert stop_process(proc) == 0
        err = proc.stderr.read()
    finally:
        proxy.close()
    assert re.search(rf"^main: terminated pid {old_pid}, pgsweeper's own backend of a connection it gave up on$",
                     err, re.M), err
    assert not re.search(rf"^main: terminated pid {old_pid} \(", err, re.M), \
        f"our own backend was judged as a user session:\n{err}"
    assert "timed out waiting for the server" in err, err


def test_another_pgsweeper_is_left_alone_but_its_name_is_not_a_pass(pg, sweeper):
    # A polls every 3 s: its connection sits idle far longer than B's max_idle.
    conf_a = yaml_config([main_server(pg)], idle_rule("1h"), interval="3s")
    proc_a = sweeper.start_daemon(conf_a, "--log-target", "stderr")
    wait_until(pg.sweeper_polled, 10, what="first pgsweeper polled")
    a_pids = pg.backend_pids_alive("pgsweeper")
    spoof = pg.connect(user="app", application_name="pgsweeper")
    conf_b = yaml_config([main_server(pg)], idle_rule("500ms"), interval="200ms")
    proc_b = sweeper.start_daemon(conf_b, "--log-target", "stderr")
    assert pg.wait_pid_gone(spoof.info.backend_pid, timeout=10), "application_name alone protected a session"
    time.sleep(3.5)     # A's connection has been idle > 500 ms for seconds, B polled it many times
    assert a_pids <= pg.backend_pids_alive("pgsweeper"), "the second pgsweeper ended the first one's connection"
    assert stop_process(proc_b) == 0
    assert stop_process(proc_a) == 0
    err_a, err_b = proc_a.stderr.read(), proc_b.stderr.read()
    assert "connection lost" not in err_a, err_a
    assert not re.search(r"terminated pid \d+ \(user pgsweeper", err_b), err_b


def test_missing_pg_monitor_is_said_once_and_shown(pg, sweeper, tmp_path):
    if not pg.admin_query("SELECT 1 FROM pg_roles WHERE rolname = 'blind'"):
        pg._admin.execute("CREATE ROLE blind LOGIN")
    metrics = tmp_path / "pgsweeper.prom"
    notify = NotifySocket(tmp_path / "notify")
    try:
        conf = yaml_config([("main", pg.conninfo(user="blind"))], idle_rule("1s"), interval="200ms",
                           top=f"metrics_file: {metrics}\n")
        path = sweeper.write_config(conf)
        proc = subprocess.Popen([str(sweeper.binary), "-c", str(path), "--log-target", "stderr"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env={**os.environ, "NOTIFY_SOCKET": notify.path})
        sweeper.procs.append(proc)
        notify.wait_for("READY")
        wait_until(lambda: metrics.exists() and "pgsweeper_server_privileges_ok" in metrics.read_text(), 10,
                   what="metrics")
        time.sleep(1.0)     # several polls
        samples = parse_metrics(metrics.read_text())
        assert stop_process(proc) == 0
        statuses = [f["STATUS"] for _, f in notify.messages if "STATUS" in f]
    finally:
        notify.close()
    err = proc.stderr.read()
    assert len(re.findall(r"^main: role blind lacks pg_monitor: .*GRANT pg_monitor TO blind;", err, re.M)) == 1, err
    assert len(re.findall(r"^main: role blind lacks pg_signal_backend", err, re.M)) == 1, err
    assert metric_value(samples, "pgsweeper_server_privileges_ok", server="main") == 0, samples
    assert any("missing privileges: main" in s for s in statuses), statuses
