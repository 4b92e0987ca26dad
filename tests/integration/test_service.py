"""pgsweeper as a service: sd_notify protocol, reload on SIGHUP, stop on SIGTERM."""

import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import stop_process, wait_until
from pgs_helpers import assert_connection_alive, idle_rule, main_server, yaml_config


class NotifySocket:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages = []        # (monotonic time, {key: value})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))

    def keys_in_order(self, *wanted):
        """The sequence of messages carrying any of the wanted keys, as key names."""
        out = []
        for _, fields in list(self.messages):
            for k in wanted:
                if k in fields:
                    out.append(k)
        return out

    def wait_for(self, key, count=1, timeout=10):
        wait_until(lambda: sum(key in f for _, f in list(self.messages)) >= count, timeout,
                   what=f"{count} x {key} on NOTIFY_SOCKET")

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def start(sweeper, config_path, env_extra=None):
    env = dict(os.environ)
    env.update(env_extra or {})
    p = subprocess.Popen([str(sweeper.binary), "-c", str(config_path), "--log-target", "stderr"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)
    sweeper.procs.append(p)
    return p


def own_pids(pg):
    return pg.backend_pids_alive("pgsweeper")


def test_notify_sequence_and_watchdog(pg, sweeper, tmp_path):
    notify = NotifySocket(tmp_path / "notify")
    try:
        conf = sweeper.write_config(yaml_config([main_server(pg)], idle_rule("30s"), interval="500ms"))
        proc = start(sweeper, conf, {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"})
        notify.wait_for("READY")
        wait_until(lambda: own_pids(pg), 10, what="pgsweeper connected")
        proc.send_signal(signal.SIGHUP)
        notify.wait_for("READY", count=2)
        notify.wait_for("WATCHDOG", count=3, timeout=5)
        assert stop_process(proc) == 0
        notify.wait_for("STOPPING")
    finally:
        notify.close()

    seq = [k for k in notify.keys_in_order("READY", "RELOADING", "STOPPING")]
    assert seq == ["READY", "RELOADING", "READY", "STOPPING"], seq
    reloading = [f for _, f in notify.messages if "RELOADING" in f][0]
    assert int(reloading["MONOTONIC_USEC"]) > 0, reloading
    # STATUS= carries a live summary once the server was polled
    statuses = [f["STATUS"] for _, f in notify.messages if "STATUS" in f]
    # one right at READY, before any server answered, then a live summary
    assert statuses and statuses[0] == "0/1 servers up, 0 sessions ended", statuses
    assert any(s.startswith("1/1 servers up") for s in statuses), statuses
    # watchdog pings at least every half period (0.2 s) while running
    pings = [t for t, f in notify.messages if "WATCHDOG" in f]
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    assert gaps and max(gaps) < 0.4, f"watchdog gaps {gaps}"


def test_bad_reload_keeps_the_running_rules(pg, sweeper):
    conf = sweeper.write_config(yaml_config([main_server(pg)], idle_rule("600ms"), interval="200ms"))
    proc = start(sweeper, conf)
    wait_until(lambda: own_pids(pg), 10, what="pgsweeper connected")
    before = own_pids(pg)

    conf.write_text("interval: 5\nservers:\n  - name: main\n    rules: []\n")
    proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    victim = pg.connect(application_name="after-bad-reload")
    pid = victim.info.backend_pid
    assert pg.wait_pid_gone(pid, timeout=5), "the old rules stopped enforcing after a bad reload"
    assert own_pids(pg) == before, "a failed reload touched the connection"
    assert stop_process(proc) == 0
    err = proc.stderr.read()
    assert f"{conf}:1:11: error:" in err, err     # file:line:col of the bad interval
    assert f"reload failed (errors in {conf}), keeping the running configuration" in err, err


def test_good_reload_changes_rules_and_keeps_unchanged_connections(pg, sweeper):
    conf = sweeper.write_config(yaml_config([main_server(pg)], idle_rule("500ms", action="log"), interval="200ms"))
    proc = start(sweeper, conf)
    wait_until(lambda: own_pids(pg), 10, what="pgsweeper connected")
    before = own_pids(pg)
    victim = pg.connect(application_name="logged-then-killed")
    pid = victim.info.backend_pid
    time.sleep(1.0)
    assert pg.pid_alive(pid), "action: log must not kill"

    conf.write_text(yaml_config([main_server(pg)], idle_rule("500ms", action="terminate"), interval="200ms"))
    proc.send_signal(signal.SIGHUP)
    assert pg.wait_pid_gone(pid, timeout=5), "the reloaded rule was not applied"
    assert own_pids(pg) == before, "an unchanged server was reconnected"

    # a changed conninfo means a new connection
    conf.write_text(yaml_config([main_server(pg, application_name="pgsweeper-2")],
                                idle_rule("500ms"), interval="200ms"))
    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: own_pids(pg) and own_pids(pg) != before, 10, what="reconnect after conninfo change")
    time.sleep(0.3)
    assert len(own_pids(pg)) == 1, f"the old connection was not closed: {own_pids(pg)}, {proc.poll()}"
    assert stop_process(proc) == 0
    err = proc.stderr.read()
    assert "configuration reloaded: 1 servers (1 kept, 0 added, 0 changed, 0 removed), 1 rules" in err, err
    assert "configuration reloaded: 1 servers (0 kept, 0 added, 1 changed, 0 removed), 1 rules" in err, err


def test_reload_adds_and_removes_servers(pg, sweeper):
    conf = sweeper.write_config(yaml_config([main_server(pg)], idle_rule("30s"), interval="200ms"))
    proc = start(sweeper, conf)
    wait_until(lambda: len(own_pids(pg)) == 1, 10, what="one connection")
    conf.write_text(yaml_config([main_server(pg), ("second", pg.conninfo(user="pgsweeper", dbname="appdb"))],
                                idle_rule("30s"), interval="200ms"))
    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: len(own_pids(pg)) == 2, 10, what="a second connection after adding a server")
    conf.write_text(yaml_config([("second", pg.conninfo(user="pgsweeper", dbname="appdb"))],
                                idle_rule("30s"), interval="200ms"))
    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: len(own_pids(pg)) == 1, 10, what="the removed server's connection closed")
    assert stop_process(proc) == 0
    err = proc.stderr.read()
    assert "(1 kept, 1 added, 0 changed, 0 removed)" in err, err
    assert "(1 kept, 0 added, 0 changed, 1 removed)" in err, err


def test_metrics_file_after_a_known_sequence(pg, sweeper, tmp_path):
    from promtext import parse, value

    metrics = tmp_path / "metrics" / "pgsweeper.prom"
    metrics.parent.mkdir()
    victims = [pg.connect(application_name=f"m{i}") for i in range(2)]
    watched = pg.connect(user="other", dbname="postgres", application_name="watched")
    time.sleep(0.6)
    rules = ("      - {name: idle, max_idle: 500ms, users: [app]}\n"
             "      - {name: watch, max_idle: 500ms, users: [other], action: log}\n")
    conf = sweeper.write_config(f"metrics_file: {metrics}\n" + yaml_config([main_server(pg)], rules, interval="300ms"))
    started = time.time()
    proc = start(sweeper, conf)
    for v in victims:
        assert pg.wait_pid_gone(v.info.backend_pid)
    proc.send_signal(signal.SIGHUP)                     # a good reload
    time.sleep(0.5)
    conf.write_text("servers: oops\n")
    proc.send_signal(signal.SIGHUP)                     # a bad one
    time.sleep(0.8)
    assert stop_process(proc) == 0

    text = metrics.read_text()
    samples = parse(text)
    assert oct(metrics.stat().st_mode & 0o777) == "0o644", "node_exporter must be able to read it"
    assert value(samples, "pgsweeper_actions_total", server="main", rule="idle", action="terminate",
                 result="terminated") == 2, text
    assert value(samples, "pgsweeper_actions_total", server="main", rule="watch", action="log",
                 result="logged") == 1, text
    assert value(samples, "pgsweeper_polls_total", server="main") >= 3, text
    assert value(samples, "pgsweeper_poll_errors_total", server="main") == 0, text
    assert value(samples, "pgsweeper_server_up", server="main") == 1, text
    assert 0 < value(samples, "pgsweeper_last_poll_duration_seconds", server="main") < 5, text
    # wall-clock seconds, with microseconds, of a poll of this run (the file
    # is written at stop: the last poll ended before the stop did)
    assert started < value(samples, "pgsweeper_last_poll_timestamp_seconds", server="main") < time.time(), text
    assert re.search(r'^pgsweeper_last_poll_timestamp_seconds\{server="main"\} \d+\.\d{6}$', text, re.M), text
    assert value(samples, "pgsweeper_config_reloads_total", result="ok") == 1, text
    assert value(samples, "pgsweeper_config_reloads_total", result="failed") == 1, text
    assert any(k[0] == "pgsweeper_build_info" for k in samples), text
    assert not list(metrics.parent.glob("*.tmp.*")), "temporary files left behind"
    assert_connection_alive(watched)


def test_metrics_forget_a_removed_server_and_what_a_down_server_no_longer_says(pg, sweeper, tmp_path):
    """A server a reload removes leaves the metrics file (its series would
    otherwise say "up" forever, with a frozen timestamp: node_exporter serves
    them and a staleness alert fires); a server that goes down no longer
    reports the connections, slots and role of its last poll (an alert on
    connections near the limit would fire through the outage)."""
    from promtext import parse, value
    from tcpproxy import TcpProxy

    metrics = tmp_path / "m.prom"
    proxy = TcpProxy(pg.port)
    try:
        servers = [main_server(pg), ("second", pg.conninfo(user="pgsweeper", dbname="appdb")),
                   ("proxied", proxy.conninfo())]
        conf = sweeper.write_config(f"metrics_file: {metrics}\n" + yaml_config(servers, idle_rule("30s"),
                                                                               interval="200ms"))
        proc = start(sweeper, conf)

        def series(name, server):
            if not metrics.exists():
                return None
            return value(parse(metrics.read_text()), name, server=server)

        for name in ("main", "second", "proxied"):
            wait_until(lambda: series("pgsweeper_server_connections", name) is not None, 10,
                       what=f"connections of {name} in the metrics file")
        proxy.close()                   # the proxied server goes down and stays down
        wait_until(lambda: series("pgsweeper_server_up", "proxied") == 0, 20, what="proxied down")
        text = metrics.read_text()
        for family in ("pgsweeper_server_connections", "pgsweeper_server_connection_slots",
                       "pgsweeper_server_in_recovery"):
            assert f'{family}{{server="proxied"}}' not in text, text
            assert f'{family}{{server="main"}}' in text, text

        conf.write_text(f"metrics_file: {metrics}\n" + yaml_config([main_server(pg)], idle_rule("30s"),
                                                                   interval="200ms"))
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: 'server="second"' not in metrics.read_text()
                   and 'server="proxied"' not in metrics.read_text(), 10,
                   what="the removed servers' series gone from the metrics file")
        assert series("pgsweeper_server_up", "main") == 1, metrics.read_text()
        assert stop_process(proc) == 0
        text = metrics.read_text()
        assert 'server="second"' not in text and 'server="proxied"' not in text, text
    finally:
        proxy.close()
