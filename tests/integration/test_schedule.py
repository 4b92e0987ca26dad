"""When pgsweeper polls: at most one gap (the interval, or the smallest limit
that acts) apart, and sooner only for a session a rule can act on. Counts of
polls from the metrics file over a fixed window are compared, never times."""

import re
import select
import time

from conftest import SLOW, stop_process, wait_until
from pgs_helpers import idle_rule, main_server, yaml_config
from promtext import parse as parse_metrics, value as metric_value


def polls(path, servers):
    if not path.exists():
        return None
    samples = parse_metrics(path.read_text())
    return {s: metric_value(samples, "pgsweeper_polls_total", server=s) or 0 for s in servers}


def count_polls(sweeper, tmp_path, conf_text, servers, window, name):
    """Start pgsweeper, wait for its first poll, count the polls of each
    server over window seconds."""
    metrics = tmp_path / f"{name}.prom"
    proc = sweeper.start_daemon(f"metrics_file: {metrics}\n" + conf_text, "--log-target", "stderr")
    wait_until(lambda: (p := polls(metrics, servers)) and all(v >= 1 for v in p.values()), 15,
               what="first polls")
    before = polls(metrics, servers)
    time.sleep(window)
    after = polls(metrics, servers)
    assert stop_process(proc) == 0
    return {s: after[s] - before[s] for s in servers}, proc.stderr.read()


def test_unrelated_sessions_do_not_move_the_polls(pg, sweeper, tmp_path):
    """Superusers' and exempt sessions that cross max_idle at staggered
    moments between polls would each have pulled a poll forward; no rule can
    act on them, so they must not."""
    rules = idle_rule("3s", extra="        exempt: {applications: [exempt-*]}\n")
    conf = yaml_config([main_server(pg)], rules, interval="30s")
    window = 7.0
    quiet, _ = count_polls(sweeper, tmp_path, conf, ["main"], window, "quiet")
    conns = []
    for i in range(12):
        if i % 2:
            conns.append(pg.connect(user="postgres", dbname="postgres", application_name=f"dba-{i}"))
        else:
            conns.append(pg.connect(application_name=f"exempt-{i}"))
        time.sleep(0.25)
    busy, err = count_polls(sweeper, tmp_path, conf, ["main"], window, "busy")
    print(f"polls in {window:g}s: {quiet['main']:g} quiet, {busy['main']:g} with 12 unrelated sessions crossing")
    assert quiet["main"] >= 2, quiet      # the gap (3 s) makes polls come, whatever the interval
    assert abs(busy["main"] - quiet["main"]) <= 1, (quiet, busy, err)
    assert all(pg.pid_alive(c.info.backend_pid) for c in conns)


def test_twenty_entries_on_one_cluster_poll_as_often_as_one(pg, sweeper, tmp_path):
    """Each entry's own idle connection is pgsweeper's: never a crossing to
    plan a poll for, for any entry."""
    window = 5.0
    one = yaml_config([main_server(pg, "e0")], idle_rule("1s"), interval="10s")
    alone, _ = count_polls(sweeper, tmp_path, one, ["e0"], window, "one")
    names = [f"e{i}" for i in range(20)]
    many = yaml_config([main_server(pg, n) for n in names], idle_rule("1s"), interval="10s")
    together, err = count_polls(sweeper, tmp_path, many, names, window, "many")
    print(f"polls in {window:g}s: {alone['e0']:g} for one entry, per entry of 20: {sorted(together.values())}")
    assert alone["e0"] >= 3, alone
    assert all(abs(v - alone["e0"]) <= 1 for v in together.values()), (alone, together)
    assert not re.search(r"terminated pid", err), err


def test_session_opened_between_polls_is_ended_at_its_limit(pg, sweeper):
    """interval 60s, max_idle 2s, a quiet server: a session opened after the
    first poll is ended at its limit, not at the next interval. Quiet means
    no other session crosses anything meanwhile, so the test's own admin
    connection stays silent and the end is seen on the victim's socket."""
    conf = yaml_config([main_server(pg)], idle_rule("2s"), interval="60s")
    proc = sweeper.start_daemon(conf, "--log-target", "stderr")
    wait_until(pg.sweeper_polled, 10, what="first poll")
    time.sleep(2.5)         # the admin connection's own idle crossing is behind us
    conn = pg.connect(application_name="late")
    t0 = time.monotonic()
    readable, _, _ = select.select([conn.fileno()], [], [], 10)
    took = time.monotonic() - t0
    assert readable, "not ended within 10 s of a 2 s limit (interval is 60 s)"
    assert stop_process(proc) == 0
    err = proc.stderr.read()
    assert re.search(rf"^main: terminated pid {conn.info.backend_pid} ", err, re.M), err
    assert took < 2.0 + 1.0 * (3 if SLOW else 1), f"ended {took:.2f}s after it opened"


def test_capped_rest_waits_for_the_next_regular_poll(pg, sweeper):
    """Cap 4, 10 victims: 4, 4, 2 in three cycles one gap apart (3 s here),
    however many unrelated sessions cross meanwhile."""
    victims = [pg.connect(application_name=f"capped-{i}") for i in range(10)]
    dbas = []
    time.sleep(3.1)
    conf = yaml_config([main_server(pg)], idle_rule("3s"), interval="30s",
                       top="max_actions_per_cycle: 4\n")
    proc = sweeper.start_daemon(conf, "--log-target", "stderr")
    seen = {}
    t0 = time.monotonic()
    pids = {c.info.backend_pid for c in victims}
    while len(seen) < len(pids) and time.monotonic() - t0 < 15:
        for p in pids - set(seen):
            if not pg.pid_alive(p):
                seen[p] = time.monotonic() - t0
        if len(dbas) < 10:      # superusers crossing max_idle at staggered moments
            dbas.append(pg.connect(user="postgres", dbname="postgres", application_name="dba"))
        time.sleep(0.05)
    assert stop_process(proc) == 0
    err = proc.stderr.read()
    assert len(seen) == len(pids), f"{len(seen)} of {len(pids)} ended:\n{err}"
    # the cycles' terminations, grouped by the cap warnings between them
    caps = [l for l in err.splitlines() if "max_actions_per_cycle (4) reached" in l]
    assert len(caps) == 2, err
    times = sorted(seen.values())
    first, second, third = times[:4], times[4:8], times[8:]
    assert max(first) < min(second) and max(second) < min(third), times
    for a, b in ((first, second), (second, third)):
        gap = min(b) - max(a)
        assert 2.0 <= gap <= 4.5 * (2 if SLOW else 1), f"cycles {gap:.2f}s apart, the gap is 3 s: {times}"
