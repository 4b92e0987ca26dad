"""An action statement whose answer is in flight when something else happens
(SIGTERM, a reload, a lost connection) is never forgotten: every signal that
may have been sent gets its entry. A TCP proxy (tcpproxy.py) between
pgsweeper and the real server holds back or cuts the answer on demand."""

import re
import signal
import time

import pytest

from conftest import SLOW, stop_process, wait_until
from pgs_helpers import ESCALATION_SQL, ActiveQuery, idle_rule, main_server, yaml_config
from tcpproxy import TcpProxy

# A fragment only pgsweeper's action statement carries.
ACTION = b"WITH ORDINALITY AS v(pid"
N = 20


def idle_victims(pg, n=N):
    conns = [pg.connect(application_name=f"victim-{i}") for i in range(n)]
    time.sleep(1.2)     # all over max_idle 1s at pgsweeper's first poll: one action for all
    return {c.info.backend_pid for c in conns}


def lines(err, rx):
    return [int(m.group(1)) for m in (re.match(rx, l) for l in err.splitlines()) if m]


def terminated(err, server="main"):
    return lines(err, re.escape(server) + r": terminated pid (\d+) ")


def unknown(err, server="main"):
    return lines(err, re.escape(server) + r": sent terminate to pid (\d+), result unknown")


@pytest.fixture
def proxy_factory():
    made = []

    def make(pg, **kw):
        p = TcpProxy(pg.port, trigger=ACTION, **kw)
        made.append(p)
        return p
    yield make
    for p in made:
        p.close()


def start(sweeper, proxy, extra_servers=(), rules=None):
    conf = yaml_config([("main", proxy.conninfo())] + list(extra_servers), rules or idle_rule("1s"),
                       interval="200ms")
    return sweeper.start_daemon(conf, "--log-target", "stderr"), conf


def sigterm_within_a_second(proc):
    """SIGTERM: exit 0 in under a second (two with PGSWEEPER_SLOW); returns stderr."""
    t0 = time.monotonic()
    rc = stop_process(proc, signal.SIGTERM)
    took = time.monotonic() - t0
    err = proc.stderr.read()
    assert rc == 0, err
    assert took < 1.0 * (2 if SLOW else 1), f"stop took {took:.2f}s"
    return err


def test_sigterm_waits_for_the_action_result(pg, sweeper, proxy_factory):
    proxy = proxy_factory(pg, mode="delay", seconds=0.4)
    pids = idle_victims(pg)
    proc, _ = start(sweeper, proxy)
    assert proxy.triggered.wait(15), "pgsweeper never sent its action"
    err = sigterm_within_a_second(proc)
    assert set(terminated(err)) == pids, err
    assert all(pg.wait_pid_gone(p) for p in pids)


def test_sigterm_with_the_answer_stalled_logs_unknown(pg, sweeper, proxy_factory):
    proxy = proxy_factory(pg, mode="stall")
    pids = idle_victims(pg)
    proc, _ = start(sweeper, proxy)
    assert proxy.triggered.wait(15), "pgsweeper never sent its action"
    # the server ran the statement: the sessions really are gone
    assert all(pg.wait_pid_gone(p) for p in pids)
    err = sigterm_within_a_second(proc)
    assert sorted(unknown(err)) == sorted(pids), err
    assert "pgsweeper stopped before the result arrived" in err


def test_lost_connection_logs_unknown_and_goes_on(pg, sweeper, proxy_factory):
    proxy = proxy_factory(pg, mode="cut", seconds=0.3)
    pids = idle_victims(pg)
    proc, _ = start(sweeper, proxy)
    assert proxy.triggered.wait(15), "pgsweeper never sent its action"
    assert all(pg.wait_pid_gone(p) for p in pids)
    # after the reconnect it still enforces
    late = pg.connect(application_name="after-the-cut")
    assert pg.wait_pid_gone(late.info.backend_pid, timeout=15), "no enforcement after the lost connection"
    assert stop_process(proc) == 0
    err = proc.stderr.read()
    assert sorted(unknown(err)) == sorted(pids), err
    assert terminated(err) == [late.info.backend_pid], err
    assert "the connection failed before the result arrived" in err
    # the next snapshot, after the reconnect, says what became of each
    assert sorted(outcomes(err, "gone")) == sorted(pids), err


@pytest.mark.parametrize("change", ["removed", "conninfo"])
def test_reload_that_drops_the_server_finishes_the_cycle(pg, sweeper, proxy_factory, change):
    proxy = proxy_factory(pg, mode="delay", seconds=0.5)
    pids = idle_victims(pg)
    # a second server entry keeps the file valid once "main" is gone
    other = main_server(pg, "other")
    rules = idle_rule("1s", extra="        users: [nobody]\n")
    other_block = yaml_config([other], rules).split("servers:\n", 1)[1]
    conf = yaml_config([("main", proxy.conninfo())], idle_rule("1s"), interval="200ms") + other_block
    proc = sweeper.start_daemon(conf, "--log-target", "stderr")
    path = sweeper.tmp_path / f"pgsweeper-{sweeper._n}.yaml"
    assert proxy.triggered.wait(15), "pgsweeper never sent its action"
    if change == "removed":
        path.write_text(yaml_config([other], rules, interval="200ms"))
    else:
        path.write_text(yaml_config([("main", proxy.conninfo() + " connect_timeout=5")], rules,
                                    interval="200ms") + other_block)
    proc.send_signal(signal.SIGHUP)
    assert all(pg.wait_pid_gone(p) for p in pids)
    time.sleep(1.0)     # the delayed answer arrives meanwhile
    assert stop_process(proc) == 0
    err = proc.stderr.read()
    assert "configuration reloaded" in err, err
    assert set(terminated(err)) == pids, err


def test_two_reloads_during_an_escalation(pg, sweeper, proxy_factory):
    """A SIGHUP while the cancel's answer is in flight, a second one while the
    query still runs: no crash (the sanitizer build aborts on a use after
    free), one cancel, and the escalation on time."""
    proxy = proxy_factory(pg, mode="delay", seconds=0.6)
    conn = pg.connect(application_name="stubborn")
    q = ActiveQuery(pg, conn, ESCALATION_SQL)
    q.wait_active()
    rules = "      - {name: runaway, max_query_duration: 500ms, action: cancel, escalate_after: 3s}\n"
    conf = yaml_config([("main", proxy.conninfo())], rules, interval="200ms")
    proc = sweeper.start_daemon(conf, "--log-target", "stderr")
    path = sweeper.tmp_path / f"pgsweeper-{sweeper._n}.yaml"
    assert proxy.triggered.wait(15), "pgsweeper never sent its cancel"
    t_cancel = proxy.triggered_at
    # first reload: same rule, plus one more rule (a different configuration object)
    path.write_text(yaml_config([("main", proxy.conninfo())],
                                rules + "      - {name: extra, max_idle: 1h}\n", interval="200ms"))
    proc.send_signal(signal.SIGHUP)
    time.sleep(1.2)     # the cancel's answer has arrived; the query shrugged it off
    assert proc.poll() is None, proc.stderr.read()
    path.write_text(yaml_config([("main", proxy.conninfo())],
                                rules + "      - {name: extra2, max_idle: 2h}\n", interval="200ms"))
    proc.send_signal(signal.SIGHUP)
    assert pg.wait_pid_gone(q.pid, timeout=10), "the stubborn query was never terminated"
    t_dead = time.monotonic()
    q.thread.join(10)
    assert proc.poll() is None, proc.stderr.read()
    assert stop_process(proc) == 0
    err = proc.stderr.read()
    cancels = [l for l in err.splitlines() if l.startswith(f"main: cancelled pid {q.pid} ")]
    escalations = [l for l in err.splitlines() if l.startswith(f"main: escalated: terminated pid {q.pid} ")]
    assert len(cancels) == 1, err
    assert len(escalations) == 1, err
    # due 3 s after the cancel; polls every 200 ms, so at most a few hundred ms late
    waited = t_dead - t_cancel
    assert 2.9 <= waited < 4.0 * (1.5 if SLOW else 1), f"escalated {waited:.2f}s after the cancel"


def test_shadow_memory_survives_two_reloads_around_an_action(pg, sweeper, proxy_factory):
    """A shadow (log-only) decision is remembered so that it is logged once
    per crossing. Made in a cycle whose action was in flight during a reload,
    it used to point into the freed configuration: a second reload read it.
    It must survive both reloads, and still be logged exactly once."""
    proxy = proxy_factory(pg, mode="delay", seconds=0.6)
    watched = pg.connect(application_name="watched")
    pids = idle_victims(pg, 3)
    rules = (idle_rule("1s") + "        applications: [victim-*]\n"
             + "      - {name: watch, max_idle: 1s, action: log, applications: [watched]}\n")
    conf = yaml_config([("main", proxy.conninfo())], rules, interval="200ms")
    proc = sweeper.start_daemon(conf, "--log-target", "stderr")
    path = sweeper.tmp_path / f"pgsweeper-{sweeper._n}.yaml"
    assert proxy.triggered.wait(15), "pgsweeper never sent its action"
    path.write_text(yaml_config([("main", proxy.conninfo())], rules + "      - {name: extra, max_idle: 1h}\n",
                                interval="200ms"))
    proc.send_signal(signal.SIGHUP)
    time.sleep(1.2)         # the action's answer arrived; several polls since
    path.write_text(yaml_config([("main", proxy.conninfo())], rules + "      - {name: extra2, max_idle: 2h}\n",
                                interval="200ms"))
    proc.send_signal(signal.SIGHUP)
    time.sleep(1.0)
    assert proc.poll() is None, proc.stderr.read()
    assert stop_process(proc) == 0
    err = proc.stderr.read()
    assert set(terminated(err)) == pids, err
    logged = [l for l in err.splitlines() if l.startswith(f"main: log-only: pid {watched.info.backend_pid} ")]
    assert len(logged) == 1, err


# -- storms: batches of at most 100 victims (SPEC 15) -------------------------

STORM = 450     # five batches: 100, 100, 100, 100, 50
IN_FLIGHT = 4   # PGCONN_IN_FLIGHT_MAX: batches sent before the first answers
STORM_TOP = "max_actions_per_cycle: 1000\n"


def outcomes(err, outcome, server="main"):
    return lines(err, re.escape(server) + r": outcome of the unknown (?:terminate|cancel) of pid (\d+) .*: "
                 + outcome + r"\b")


def start_storm(sweeper, proxy, *extra):
    conf = yaml_config([("main", proxy.conninfo())], idle_rule("1s"), interval="200ms", top=STORM_TOP)
    return sweeper.start_daemon(conf, "--log-target", "stderr", *extra)


def test_a_storm_cut_short_loses_only_the_batches_in_flight(pg, sweeper, proxy_factory):
    """450 victims are five action statements, four in flight at a time:
    the fifth goes out when the first answers. The connection is cut then:
    the first batch is logged terminated as it answered, only the batches
    still in flight are unknown (the fifth, and those before it whose answer
    did not get through first), and each unknown gets an outcome entry
    (gone) at the next snapshot, after the reconnect."""
    proxy = proxy_factory(pg, mode="cut", seconds=0.5, skip=IN_FLIGHT)
    pids = idle_victims(pg, STORM)
    metrics = sweeper.tmp_path / "storm.prom"
    conf = yaml_config([("main", proxy.conninfo())], idle_rule("1s"), interval="200ms",
                       top=STORM_TOP + f"metrics_file: {metrics}\n")
    proc = sweeper.start_daemon(conf, "--log-target", "stderr")
    assert proxy.triggered.wait(30), "pgsweeper never sent a fifth action statement"
    assert all(pg.wait_pid_gone(p, timeout=30) for p in pids)
    try:
        wait_until(lambda: metrics.exists() and re.search(r'outcome="gone"\} \d+', metrics.read_text()),
                   timeout=15, what="the outcomes in the metrics file")
        time.sleep(0.5)
    finally:
        assert stop_process(proc) == 0
        err = proc.stderr.read()
    lost, done = unknown(err), terminated(err)
    assert len(lost) in (50, 150, 250, 350), err
    assert len(set(done)) == STORM - len(lost), err
    assert set(lost) | set(done) == pids, err
    # every unknown has its outcome: the server ran the statements, so gone
    assert sorted(outcomes(err, "gone")) == sorted(lost), err
    assert outcomes(err, "present") == [], err
    # the batches that answered were logged, terminated, before any unknown
    out = err.splitlines()
    first_unknown = next(i for i, l in enumerate(out) if "result unknown" in l)
    before = [l for l in out[:first_unknown] if re.match(r"main: terminated pid \d+ ", l)]
    assert len(before) == STORM - len(lost), err
    text = metrics.read_text()
    assert re.search(r'^pgsweeper_unknown_outcomes_total\{server="main",rule="idle-sessions",'
                     rf'action="terminate",outcome="gone"\}} {len(lost)}$', text, re.M), text
    assert re.search(r'^pgsweeper_actions_total\{server="main",rule="idle-sessions",'
                     rf'action="terminate",result="unknown"\}} {len(lost)}$', text, re.M), text


@pytest.mark.parametrize("answered", [0, 1])
def test_sigterm_during_a_storm_logs_every_batch_that_answered(pg, sweeper, proxy_factory, answered):
    """SIGTERM while the answers are held back, after `answered` batches got
    theirs through: the daemon stops within a second; the batches that
    answered are logged terminated, those in flight unknown, and a batch
    never sent is not logged: its sessions live on."""
    proxy = proxy_factory(pg, mode="stall", skip=0 if answered == 0 else IN_FLIGHT)
    pids = idle_victims(pg, STORM)
    proc = start_storm(sweeper, proxy)
    assert proxy.triggered.wait(30), "pgsweeper never sent the action statement the proxy waits for"
    time.sleep(0.3)
    err = sigterm_within_a_second(proc)
    done, lost = set(terminated(err)), set(unknown(err))
    assert "pgsweeper stopped before the result arrived" in err
    assert not done & lost, err
    never_sent = pids - done - lost
    if answered == 0:
        # batches 1-4 in flight, batch 5 never sent
        assert len(done) == 0 and len(lost) == 400 and len(never_sent) == STORM - 400, err
    else:
        # batch 1 answered and batch 5 went out; answers of 2-4 may have got through before the stall
        assert len(done) >= 100 and len(done) + len(lost) == STORM and not never_sent, err
    assert all(pg.wait_pid_gone(p) for p in done | lost)
    assert {p for p in never_sent if pg.pid_alive(p)} == never_sent


def test_unknown_cancel_is_followed_by_outcome_present(pg, sweeper, proxy_factory):
    """A cancel whose answer is lost: the session survives a cancel (only its
    query ends), so the next snapshot (which reads the pid whatever its state:
    it is idle now, under every limit) logs it present, judged again."""
    proxy = proxy_factory(pg, mode="cut", seconds=0.5)
    conn = pg.connect(application_name="runaway")
    q = ActiveQuery(pg, conn, "SELECT pg_sleep(60)")
    q.wait_active()
    rules = "      - {name: runaway, max_query_duration: 500ms, action: cancel}\n"
    proc = sweeper.start_daemon(yaml_config([("main", proxy.conninfo())], rules, interval="200ms"),
                                "--log-target", "stderr")
    assert proxy.triggered.wait(15), "pgsweeper never sent its cancel"
    q.thread.join(10)
    wait_until(lambda: (pg.activity(q.pid) or [None] * 5)[4] == "idle", timeout=10, what="the cancelled session idle")
    time.sleep(2.0)     # reconnect (backoff 0.1-0.5 s) and the next snapshot
    assert stop_process(proc) == 0
    err = proc.stderr.read()
    assert lines(err, r"main: sent cancel to pid (\d+), result unknown") == [q.pid], err
    assert outcomes(err, "present") == [q.pid], err
    assert outcomes(err, "gone") == [], err


def test_outcome_entry_in_the_journal(pg, sweeper, proxy_factory, journal):
    """The outcome entry's fields and MESSAGE_ID, read back from journald."""
    proxy = proxy_factory(pg, mode="cut", seconds=0.3)
    pids = idle_victims(pg, 3)
    cursor = journal.cursor()
    proc = sweeper.start_daemon(yaml_config([("main", proxy.conninfo())], idle_rule("1s"), interval="200ms"),
                                "--log-target", "journal")
    assert proxy.triggered.wait(15), "pgsweeper never sent its action"
    victim = sorted(pids)[0]
    got = journal.read({"PGSWEEPER_PID": victim, "PGSWEEPER_OUTCOME": "gone"}, after_cursor=cursor, timeout=15)
    assert stop_process(proc) == 0
    assert len(got) == 1, got
    e = got[0]
    assert e["MESSAGE_ID"] == "13377f00caee466294ff3240645d42f7", e
    assert e["PRIORITY"] == "5", e
    for k, v in {"PGSWEEPER_SERVER": "main", "PGSWEEPER_RULE": "idle-sessions", "PGSWEEPER_ACTION": "terminate",
                 "PGSWEEPER_USER": "app", "PGSWEEPER_DATABASE": "appdb", "PGSWEEPER_CLIENT_ADDR": "local"}.items():
        assert e.get(k) == v, (k, e)
    assert "outcome of the unknown terminate of pid %d" % victim in e["MESSAGE"], e
    unknown_entries = journal.read({"PGSWEEPER_PID": victim, "PGSWEEPER_RESULT": "unknown"}, after_cursor=cursor)
    assert len(unknown_entries) == 1, unknown_entries
