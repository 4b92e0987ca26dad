"""Connection pressure and per-group caps (SPEC 14), against a cluster of its
own whose slots can really fill: max_connections 20, 3 reserved for
superusers, so 17 usable slots (reserved_connections, 16+, is 0 by default).

- when_connections_above (P% of the usable slots, or N): the rule applies
  only at a poll where connections (every client backend: superusers and
  pgsweeper's own included) are above it;
- max_sessions, per user|database|application|client_address (or one group,
  `all`), min_idle: the excess of a group is ended, the longest idle first,
  only among idle sessions that are neither exempt (global, server, rule)
  nor protected (superusers, pgsweeper's own connections), though all of
  them count; a group that cannot be brought under its cap says so once,
  and again once it has been under;
- the journal fields, the stderr line, the two gauges of the metrics file,
  dry-run and the blast-radius cap; and a storm that fills every slot.

The numbers the entries and gauges carry are checked against what
pg_stat_activity and pg_settings say at that moment, counted here."""

import re
import time
from pathlib import Path

import psycopg
import pytest

from conftest import start_cluster, stop_process, wait_until
from pgs_helpers import ActiveQuery, assert_connection_alive, main_server, parse_duration_ms, yaml_config
from promtext import parse as parse_metrics, value as metric_value

SETTINGS = {"max_connections": 20, "superuser_reserved_connections": 3}
SLOTS = 17          # 20 - 3 (- reserved_connections, 0 by default on 16+)
WARNING = "cannot be brought under"


# -- the cluster ---------------------------------------------------------------

@pytest.fixture(scope="module")
def small_cluster():
    cluster = start_cluster(SETTINGS)
    # what every number below rests on
    assert usable_slots(cluster) == SLOTS, "the cluster's settings did not take"
    yield cluster
    cluster.stop()


def connections(pg):
    """Client backends right now, as pgsweeper must count them: the test's own
    admin connection (a superuser's), pgsweeper's, everyone's."""
    return pg.admin_query("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")[0][0]


def usable_slots(pg):
    """max_connections - superuser_reserved_connections - reserved_connections (16+)."""
    rows = dict(pg.admin_query(
        "SELECT name, setting::int FROM pg_settings "
        "WHERE name IN ('max_connections', 'superuser_reserved_connections', 'reserved_connections')"))
    return rows["max_connections"] - rows["superuser_reserved_connections"] - rows.get("reserved_connections", 0)


@pytest.fixture
def spg(small_cluster):
    """The small cluster; every session a test opened is closed after it, and
    the next test starts from the admin connection alone (so that its counts
    are exact)."""
    assert connections(small_cluster) == 1, "a previous test left sessions behind"
    yield small_cluster
    small_cluster.end_test()
    # a session still in a query (a failed test's pg_sleep) does not notice
    # its client left: end whatever is left, as the superuser
    small_cluster.admin_query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")
    wait_until(lambda: connections(small_cluster) == 1, 10, what="every session of the test gone")


# -- sessions --------------------------------------------------------------------

def open_idle(pg, n, gap=0.05, **kw):
    """n idle sessions opened one after another (gap seconds apart, each ran
    a statement), so their idle ages differ: oldest first."""
    conns = []
    for _ in range(n):
        c = pg.connect(**kw)
        c.execute("SELECT 1")
        conns.append(c)
        time.sleep(gap)
    return conns


def pids(conns):
    return [c.info.backend_pid for c in conns]


def idle_order(pg, pid_list):
    """The pids, longest idle first, as pg_stat_activity says."""
    rows = pg.admin_query("SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s) ORDER BY state_change, pid",
                          (list(pid_list),))
    return [r[0] for r in rows]


def alive(pg, pid_list):
    return {p for p in pid_list if pg.pid_alive(p)}


def try_connect(pg, **kw):
    try:
        return pg.connect(**kw)
    except psycopg.OperationalError:
        return None


# -- pgsweeper -------------------------------------------------------------------

def config(pg, rules, interval="300ms", top=""):
    return yaml_config([main_server(pg)], rules, interval=interval, top=top)


def once(sweeper, pg, rules, target="stderr", top=""):
    r = sweeper.run_once(config(pg, rules, interval=None, top=top), "--once", "--log-target", target)
    assert r.returncode == 0, r.stderr
    return r


def start(sweeper, pg, tmp_path, rules, target="journal", interval="300ms", top=""):
    """A running daemon with a metrics file; returns (process, metrics path)."""
    metrics = tmp_path / "pressure.prom"
    d = sweeper.start_daemon(config(pg, rules, interval=interval, top=f"metrics_file: {metrics}\n" + top),
                             "--log-target", target)
    return d, metrics


def stderr_now(d):
    return Path(d.stderr.name).read_text()


def samples(metrics):
    if not metrics.exists():
        return {}
    return parse_metrics(metrics.read_text())


def polls(metrics):
    return metric_value(samples(metrics), "pgsweeper_polls_total", server="main") or 0


def wait_polls(d, metrics, n, timeout=10):
    """Wait until the daemon has finished n more polls than now."""
    target = polls(metrics) + n

    def done():
        assert d.poll() is None, f"pgsweeper exited with {d.returncode}:\n{stderr_now(d)}"
        return polls(metrics) >= target
    wait_until(done, timeout, what=f"{n} more polls")


def stop(d):
    rc = stop_process(d)
    assert rc == 0, stderr_now(d)
    return stderr_now(d)


def daemon_entries(journal, d, cursor):
    return journal.entries({"_PID": d.pid}, after_cursor=cursor)


def acted(entries):
    """The decisions (entries with a result), never the service's other events."""
    return [e for e in entries if "PGSWEEPER_RESULT" in e]


def cap_warnings(entries):
    return [e for e in entries if WARNING in e.get("MESSAGE", "")]


def once_entries(journal, r, cursor, n):
    """The decisions of a finished --once run: at least n (waited for), then
    whatever else journald still had on its way."""
    journal.read({"_PID": r.pid}, after_cursor=cursor, min_entries=n)
    time.sleep(0.3)
    return journal.entries({"_PID": r.pid}, after_cursor=cursor)


def show(entries):
    return "\n".join(f"{e.get('PGSWEEPER_PID')} {e.get('PGSWEEPER_RESULT')} {e.get('MESSAGE')}" for e in entries)


# -- when_connections_above -------------------------------------------------------

@pytest.mark.parametrize("threshold", ["50%", "8"])
def test_threshold_activates_a_rule_only_above_it(spg, sweeper, journal, tmp_path, threshold):
    """50% of 17 slots is 8.5, the count form says 8: at 8 connections the
    rule is inactive (its idle victims, past max_idle, survive poll after
    poll); at 9 it applies and ends them. Superusers' sessions and
    pgsweeper's own connection are among the 9."""
    rules = (f"      - {{name: free-slots, when_connections_above: {threshold}, max_idle: 1s, users: [app]}}\n")
    victims = open_idle(spg, 4, application_name="pressure-victim")
    vpids = pids(victims)
    fillers = [spg.connect(user="other", dbname="postgres", application_name="filler"),
               spg.connect(user="postgres", dbname="postgres", application_name="filler-su")]
    cursor = journal.cursor()
    d, metrics = start(sweeper, spg, tmp_path, rules)
    wait_polls(d, metrics, 1)
    # admin + 4 victims + 2 fillers + pgsweeper: at the threshold, not above
    assert connections(spg) == 8
    time.sleep(1.2)                              # every victim is past max_idle 1s by now
    wait_polls(d, metrics, 3)
    assert alive(spg, vpids) == set(vpids), \
        f"a rule below its threshold acted:\n{show(daemon_entries(journal, d, cursor))}"
    assert not acted(daemon_entries(journal, d, cursor))
    assert connections(spg) == 8

    # one more: 9 connections until the victims go (counted before, not
    # after: pgsweeper may act before a count here could run)
    fillers.append(spg.connect(user="other", dbname="postgres", application_name="filler"))
    expected_connections = 9
    assert all(spg.wait_pid_gone(p, timeout=10) for p in vpids), \
        f"not ended above the threshold:\n{show(daemon_entries(journal, d, cursor))}"
    for f in fillers:
        assert_connection_alive(f)
    wait_until(lambda: len(acted(daemon_entries(journal, d, cursor))) >= 4, 10, what="4 journal entries")
    stop(d)
    got = acted(daemon_entries(journal, d, cursor))
    assert sorted(int(e["PGSWEEPER_PID"]) for e in got) == sorted(vpids), show(got)
    for e in got:
        assert e["PGSWEEPER_RULE"] == "free-slots" and e["PGSWEEPER_RESULT"] == "terminated", e
        assert e["PGSWEEPER_LIMIT"] == "max_idle", e
        assert e["PGSWEEPER_CONNECTIONS"] == str(expected_connections), e
        assert e["PGSWEEPER_CONNECTION_SLOTS"] == str(usable_slots(spg)) == str(SLOTS), e


def test_threshold_on_a_cap_rule(spg, sweeper, journal):
    """when_connections_above is a condition on any rule, max_sessions
    included: 5 connections (admin, 3 sessions of the group, pgsweeper) are
    not above 5, so the group over its cap is left alone; they are above 4."""
    conns = open_idle(spg, 3, application_name="hot-a")
    wait_until(lambda: connections(spg) == 4, 5, what="4 connections")
    rule = "      - {{name: cap-hot, when_connections_above: {}, max_sessions: 1, per: application, " \
           "applications: [hot-a]}}\n"
    r = once(sweeper, spg, rule.format(5))
    assert alive(spg, pids(conns)) == set(pids(conns)), r.stderr
    assert "[rule cap-hot]" not in r.stderr, r.stderr

    wait_until(lambda: connections(spg) == 4, 5, what="the first run's connection gone")
    victims = idle_order(spg, pids(conns))[:2]
    assert victims == pids(conns)[:2]
    cursor = journal.cursor()
    r = once(sweeper, spg, rule.format(4), target="journal")
    assert all(spg.wait_pid_gone(p) for p in victims)
    assert_connection_alive(conns[2])
    got = acted(once_entries(journal, r, cursor, 2))
    assert sorted(int(e["PGSWEEPER_PID"]) for e in got) == sorted(victims), show(got)
    for e in got:
        assert e["PGSWEEPER_LIMIT"] == "max_sessions", e
        assert e["PGSWEEPER_CONNECTIONS"] == "5" and e["PGSWEEPER_CONNECTION_SLOTS"] == str(SLOTS), e
        assert e["PGSWEEPER_SESSIONS"] == "3" and e["PGSWEEPER_MAX_SESSIONS"] == "1", e


# -- max_sessions -----------------------------------------------------------------

def test_cap_ends_the_longest_idle_of_the_group_over_it(spg, sweeper, journal):
    """5 idle sessions of cap-a, 2 of cap-b (older than all of cap-a), at
    most 3 per application: the 2 longest idle of cap-a are ended, nobody
    else."""
    b = open_idle(spg, 2, application_name="cap-b")
    a = open_idle(spg, 5, application_name="cap-a")
    assert idle_order(spg, pids(b) + pids(a)) == pids(b) + pids(a)
    rules = "      - {name: web-cap, max_sessions: 3, per: application, applications: [\"cap-*\"]}\n"
    cursor = journal.cursor()
    r = once(sweeper, spg, rules, target="journal")
    victims = pids(a)[:2]
    assert all(spg.wait_pid_gone(p) for p in victims), r.stderr
    for c in a[2:] + b:
        assert_connection_alive(c)
    got = acted(once_entries(journal, r, cursor, 2))
    assert sorted(int(e["PGSWEEPER_PID"]) for e in got) == sorted(victims), show(got)
    for e in got:
        expected = {"PGSWEEPER_RULE": "web-cap", "PGSWEEPER_ACTION": "terminate", "PGSWEEPER_RESULT": "terminated",
                    "PGSWEEPER_LIMIT": "max_sessions", "PGSWEEPER_GROUP": "application=cap-a",
                    "PGSWEEPER_SESSIONS": "5", "PGSWEEPER_MAX_SESSIONS": "3", "PGSWEEPER_APPLICATION": "cap-a",
                    "PGSWEEPER_STATE": "idle", "PGSWEEPER_USER": "app", "PGSWEEPER_CLIENT_ADDR": "local"}
        for k, v in expected.items():
            assert e.get(k) == v, f"{k}={e.get(k)!r}, expected {v!r}: {e}"


def test_cap_stderr_lines(spg, sweeper):
    """The line names the group and the numbers; without per, just the count."""
    a = open_idle(spg, 3, application_name="line-a")
    b = open_idle(spg, 2, application_name="line-b", host="127.0.0.1")
    rules = ("      - {name: web-cap, max_sessions: 2, per: application, applications: [line-a]}\n"
             "      - {name: all-cap, max_sessions: 1, applications: [line-b]}\n")
    r = once(sweeper, spg, rules)
    pa, pb = pids(a)[0], pids(b)[0]
    assert spg.wait_pid_gone(pa) and spg.wait_pid_gone(pb), r.stderr
    ended = [l for l in r.stderr.splitlines() if re.match(r"main: terminated pid \d+ ", l)]
    assert len(ended) == 2, r.stderr
    la = [l for l in ended if f" pid {pa} " in l]
    lb = [l for l in ended if f" pid {pb} " in l]
    assert len(la) == 1 and len(lb) == 1, r.stderr
    m = re.fullmatch(rf"main: terminated pid {pa} \(user app, db appdb, app line-a, local\): "
                     r"3 sessions of application line-a > max_sessions 2, idle (\S+) \[rule web-cap\]", la[0])
    assert m, la[0]
    assert parse_duration_ms(m.group(1)) >= 0
    m = re.fullmatch(rf"main: terminated pid {pb} \(user app, db appdb, app line-b, 127\.0\.0\.1\): "
                     r"2 sessions > max_sessions 1, idle (\S+) \[rule all-cap\]", lb[0])
    assert m, lb[0]
    for c in a[1:] + b[1:]:
        assert_connection_alive(c)


def test_active_iit_exempt_and_superusers_count_but_are_never_victims(spg, sweeper, journal, tmp_path):
    """A group of 5 with a cap of 2: a superuser's idle session and an exempt
    one (both the longest idle), an idle-in-transaction one, an active one
    and one plain idle session past min_idle. Only the plain one can go; the
    group stays over its cap and that is said once over many polls. Once the
    group has been under its cap and goes over again, it is said again."""
    su = spg.connect(user="postgres", dbname="postgres", application_name="cap-p")
    su.execute("SELECT 1")
    exempt = spg.connect(user="other", dbname="appdb", application_name="cap-p")
    exempt.execute("SELECT 1")
    iit = spg.connect(application_name="cap-p", autocommit=False)
    iit.execute("SELECT 1")                                  # idle in transaction
    active = ActiveQuery(spg, spg.connect(application_name="cap-p"), "SELECT pg_sleep(60)")
    active.wait_active()
    plain = spg.connect(application_name="cap-p")
    plain.execute("SELECT 1")
    keep = [su.info.backend_pid, exempt.info.backend_pid, iit.info.backend_pid, active.pid]
    rules = ("      - {name: cap-p, max_sessions: 2, per: application, applications: [cap-p], min_idle: 1s,\n"
             "         exempt: {users: [other]}}\n")
    cursor = journal.cursor()
    d, metrics = start(sweeper, spg, tmp_path, rules)
    extra = []
    try:
        assert spg.wait_pid_gone(plain.info.backend_pid, timeout=10), \
            f"the one possible victim survived:\n{show(daemon_entries(journal, d, cursor))}"
        wait_polls(d, metrics, 5)
        assert alive(spg, keep) == set(keep), show(daemon_entries(journal, d, cursor))
        assert not active.done.is_set(), active.error
        entries = daemon_entries(journal, d, cursor)
        got = acted(entries)
        assert [int(e["PGSWEEPER_PID"]) for e in got] == [plain.info.backend_pid], show(got)
        assert got[0]["PGSWEEPER_SESSIONS"] == "5" and got[0]["PGSWEEPER_RESULT"] == "terminated", got[0]
        warnings = cap_warnings(entries)
        assert len(warnings) == 1, show(entries)
        w = warnings[0]
        assert w["PRIORITY"] == "4", w
        assert w["PGSWEEPER_RULE"] == "cap-p" and w["PGSWEEPER_GROUP"] == "application=cap-p", w
        assert w["PGSWEEPER_SESSIONS"] == "5" and w["PGSWEEPER_MAX_SESSIONS"] == "2", w
        assert "PGSWEEPER_PID" not in w or int(w["PGSWEEPER_PID"]) not in keep, w

        # under the cap (the superuser's session alone), then over it again
        for p in keep[1:]:
            spg.admin_query("SELECT pg_terminate_backend(%s)", (p,))
        assert all(spg.wait_pid_gone(p) for p in keep[1:])
        wait_polls(d, metrics, 3)
        assert len(cap_warnings(daemon_entries(journal, d, cursor))) == 1
        for _ in range(2):
            q = ActiveQuery(spg, spg.connect(application_name="cap-p"), "SELECT pg_sleep(60)")
            q.wait_active()
            extra.append(q)
        wait_until(lambda: len(cap_warnings(daemon_entries(journal, d, cursor))) >= 2, 10,
                   what="the second warning")
        wait_polls(d, metrics, 4)
        entries = daemon_entries(journal, d, cursor)
        warnings = cap_warnings(entries)
        assert len(warnings) == 2, show(entries)
        assert warnings[1]["PGSWEEPER_SESSIONS"] == "3" and warnings[1]["PGSWEEPER_GROUP"] == "application=cap-p"
        assert len(acted(entries)) == 1, show(acted(entries))
        assert spg.pid_alive(keep[0]) and all(spg.pid_alive(q.pid) for q in extra)
    finally:
        stop(d)
        for q in [active] + extra:
            q.stop()


def test_exempt_sessions_of_every_level_count_but_are_never_victims(spg, sweeper):
    """Global, server and rule exempt blocks: the three longest idle of the
    group are exempt, one by each; they count (5 > 2), the 2 plain ones go,
    the group stays over its cap and that is said once."""
    exempt = [open_idle(spg, 1, application_name=app)[0] for app in ("ex-global", "ex-server", "ex-rule")]
    plain = open_idle(spg, 2, application_name="plain")
    rules = "      - {name: cap-user, max_sessions: 2, per: user, users: [app], exempt: {applications: [ex-rule]}}\n"
    r = sweeper.run_once(yaml_config([main_server(spg)], rules, interval=None,
                                     top="exempt: {applications: [ex-global]}\n",
                                     server_extra="    exempt: {applications: [ex-server]}\n"),
                         "--once", "--log-target", "stderr")
    assert r.returncode == 0, r.stderr
    assert all(spg.wait_pid_gone(p) for p in pids(plain)), r.stderr
    for c in exempt:
        assert_connection_alive(c)
        assert f" pid {c.info.backend_pid} " not in r.stderr, r.stderr
    ended = re.findall(r"^main: terminated pid (\d+) .*: 5 sessions of user app > max_sessions 2, idle \S+ "
                       r"\[rule cap-user\]$", r.stderr, re.M)
    assert sorted(map(int, ended)) == sorted(pids(plain)), r.stderr
    warnings = [l for l in r.stderr.splitlines() if WARNING in l]
    assert len(warnings) == 1, r.stderr
    w = warnings[0]      # with the group and the numbers
    assert w.startswith("main: ") and "5 sessions" in w and "user app" in w and "max_sessions 2" in w \
        and "[rule cap-user]" in w, w


def test_own_connections_count_but_are_never_victims(spg, sweeper, journal, tmp_path):
    """Two server entries on this cluster: pgsweeper's two connections (one
    per entry) are a group of 2 over a cap of 1, and neither is a victim
    for either entry (the other's connection is its own too, and sent to
    it: only a session's own backend is left out of its snapshot). Each
    entry says once that the group cannot be brought under."""
    metrics = tmp_path / "own.prom"
    rules = "      - {name: cap-own, max_sessions: 1, per: user, users: [pgsweeper]}\n"
    cursor = journal.cursor()
    d = sweeper.start_daemon(yaml_config([main_server(spg), main_server(spg, "twin")], rules, interval="300ms",
                                         top=f"metrics_file: {metrics}\n"), "--log-target", "journal")
    try:
        wait_polls(d, metrics, 1)
        own = set(spg.backend_pids_alive(user="pgsweeper"))
        assert len(own) == 2, own
        wait_polls(d, metrics, 5)
        assert spg.backend_pids_alive(user="pgsweeper") == own, "pgsweeper ended one of its own connections"
    finally:
        stop(d)
    entries = daemon_entries(journal, d, cursor)
    assert not acted(entries), show(acted(entries))
    warnings = cap_warnings(entries)
    assert sorted(w["PGSWEEPER_SERVER"] for w in warnings) == ["main", "twin"], show(entries)
    for w in warnings:
        assert w["PGSWEEPER_GROUP"] == "user=pgsweeper" and w["PGSWEEPER_SESSIONS"] == "2", w


def test_min_idle_spares_young_sessions_until_they_reach_it(spg, sweeper, tmp_path):
    """Cap 1, min_idle 2s, 3 fresh sessions: nobody is a victim before 2 s of
    idleness (several polls see the group over its cap), then the 2 oldest
    are ended, each logged with at least 2 s idle."""
    rules = "      - {name: cap-min, max_sessions: 1, per: application, applications: [mi-a], min_idle: 2s}\n"
    d, metrics = start(sweeper, spg, tmp_path, rules, target="stderr")
    wait_polls(d, metrics, 1)
    t_before = time.monotonic()             # the oldest went idle after this
    first = polls(metrics)
    conns = open_idle(spg, 3, gap=0.1, application_name="mi-a")
    while time.monotonic() < t_before + 1.6:
        assert alive(spg, pids(conns)) == set(pids(conns)), f"ended before min_idle:\n{stderr_now(d)}"
        time.sleep(0.05)
    assert polls(metrics) - first >= 3, "too few polls saw the group young"
    victims = pids(conns)[:2]
    assert all(spg.wait_pid_gone(p, timeout=10) for p in victims), stderr_now(d)
    wait_polls(d, metrics, 2)
    assert_connection_alive(conns[2])
    err = stop(d)
    for p in victims:
        lines = [l for l in err.splitlines() if l.startswith(f"main: terminated pid {p} ")]
        assert len(lines) == 1, err
        m = re.search(r"> max_sessions 1, idle (\S+) \[rule cap-min\]$", lines[0])
        assert m and parse_duration_ms(m.group(1)) >= 2000, lines[0]
    assert not re.search(rf"terminated pid {pids(conns)[2]} ", err), err


# Each case: the sessions in the order they are opened (user, database,
# application, TCP or not), the rule's per (None: none), and what is ended:
# {index of the victim: its PGSWEEPER_GROUP}. The cap is 2; every group of 2
# is left alone, every group of 3 loses its oldest. Only app and other pass
# the rule's filter (the admin connection and pgsweeper's are not counted).
PER_CASES = {
    "user": ("user", [("other", "postgres", "u", False), ("other", "postgres", "u", False),
                      ("app", "appdb", "u", False), ("app", "appdb", "u", False), ("app", "appdb", "u", False)],
             {2: "user=app"}),
    "database": ("database", [("other", "postgres", "d", False), ("app", "postgres", "d", False),
                              ("app", "appdb", "d", False), ("other", "appdb", "d", False),
                              ("app", "appdb", "d", False)],
                 {2: "database=appdb"}),
    "application": ("application", [("app", "appdb", "grp-y", False), ("app", "appdb", "grp-y", False),
                                    ("app", "appdb", "grp-x", False), ("other", "appdb", "grp-x", False),
                                    ("app", "appdb", "grp-x", False)],
                    {2: "application=grp-x"}),
    "client_address": ("client_address", [("app", "appdb", "c", False), ("app", "appdb", "c", True),
                                          ("other", "postgres", "c", False), ("other", "postgres", "c", True),
                                          ("app", "appdb", "c", False), ("app", "appdb", "c", True)],
                       {0: "client_address=local", 1: "client_address=127.0.0.1"}),
    "none": (None, [("app", "appdb", "n-1", False), ("other", "postgres", "n-2", True),
                    ("app", "appdb", "n-3", True)],
             {0: "all"}),
}


@pytest.mark.parametrize("case", list(PER_CASES))
def test_every_per(spg, sweeper, journal, case):
    per, sessions, victims = PER_CASES[case]
    conns = []
    for user, dbname, app, tcp in sessions:
        c = spg.connect(user=user, dbname=dbname, application_name=app, host="127.0.0.1" if tcp else None)
        c.execute("SELECT 1")
        conns.append(c)
        time.sleep(0.05)
    per_key = f", per: {per}" if per else ""
    rules = f"      - {{name: cap, max_sessions: 2{per_key}, users: [app, other]}}\n"
    cursor = journal.cursor()
    r = once(sweeper, spg, rules, target="journal")
    vpids = {conns[i].info.backend_pid: group for i, group in victims.items()}
    assert all(spg.wait_pid_gone(p) for p in vpids), r.stderr
    for i, c in enumerate(conns):
        if i not in victims:
            assert_connection_alive(c)
    got = acted(once_entries(journal, r, cursor, len(vpids)))
    assert sorted(int(e["PGSWEEPER_PID"]) for e in got) == sorted(vpids), show(got)
    for e in got:
        assert e["PGSWEEPER_GROUP"] == vpids[int(e["PGSWEEPER_PID"])], e
        assert e["PGSWEEPER_SESSIONS"] == "3" and e["PGSWEEPER_MAX_SESSIONS"] == "2", e
        assert e["PGSWEEPER_LIMIT"] == "max_sessions" and e["PGSWEEPER_RESULT"] == "terminated", e


def test_cap_victims_count_against_max_actions_per_cycle(spg, sweeper):
    conns = open_idle(spg, 5, application_name="cycle")
    r = once(sweeper, spg, "      - {name: cap, max_sessions: 1, applications: [cycle]}\n",
             top="max_actions_per_cycle: 2\n")
    assert all(spg.wait_pid_gone(p) for p in pids(conns)[:2]), r.stderr
    for c in conns[2:]:
        assert_connection_alive(c)
    assert "max_actions_per_cycle (2) reached" in r.stderr, r.stderr
    assert len(re.findall(r"^main: terminated pid ", r.stderr, re.M)) == 2, r.stderr


def test_dry_run_cap_rule_logs_and_ends_nothing(spg, sweeper):
    conns = open_idle(spg, 3, application_name="dry-a")
    r = once(sweeper, spg, "      - {name: cap-dry, max_sessions: 1, per: application, applications: [dry-a], "
                           "dry_run: true}\n")
    time.sleep(0.3)
    assert alive(spg, pids(conns)) == set(pids(conns)), r.stderr
    lines = [l for l in r.stderr.splitlines() if l.startswith("main: dry-run: would terminate pid ")]
    assert sorted(int(re.match(r"main: dry-run: would terminate pid (\d+) ", l).group(1)) for l in lines) \
        == sorted(pids(conns)[:2]), r.stderr
    for l in lines:
        assert "3 sessions of application dry-a > max_sessions 1" in l and l.endswith("[rule cap-dry]"), l
    assert not re.search(r"^main: terminated pid ", r.stderr, re.M), r.stderr


# -- the gauges ---------------------------------------------------------------------

def test_gauges_match_the_cluster(spg, sweeper, tmp_path):
    rules = ("      - {name: cap, max_sessions: 100, per: user}\n"
             "      - {name: hot, when_connections_above: 90%, max_idle: 1h}\n")
    d, metrics = start(sweeper, spg, tmp_path, rules, target="stderr")

    def gauges():
        s = samples(metrics)
        return (metric_value(s, "pgsweeper_server_connections", server="main"),
                metric_value(s, "pgsweeper_server_connection_slots", server="main"))

    wait_polls(d, metrics, 1)
    assert connections(spg) == 2                     # the admin connection and pgsweeper's
    wait_until(lambda: gauges()[0] == 2, 5, what=f"connections gauge 2, it says {gauges()}")
    assert gauges()[1] == usable_slots(spg) == SLOTS
    open_idle(spg, 3, gap=0)
    open_idle(spg, 2, gap=0, user="other", dbname="postgres", host="127.0.0.1")
    open_idle(spg, 1, gap=0, user="postgres", dbname="postgres")
    n = connections(spg)
    assert n == 8
    wait_until(lambda: gauges()[0] == n, 5, what=f"connections gauge {n}, it says {gauges()}")
    assert gauges()[1] == SLOTS
    text = metrics.read_text()
    assert "# TYPE pgsweeper_server_connections gauge" in text, text
    assert "# TYPE pgsweeper_server_connection_slots gauge" in text, text
    stop(d)


# -- a storm ------------------------------------------------------------------------

def test_storm_frees_slots_then_stops_under_the_threshold(spg, sweeper, journal, tmp_path):
    """Sessions fill every usable slot while pgsweeper runs (interval 1s,
    free-slots above 80% = 13.6 connections, max_idle 1s): a newcomer is
    refused, then gets in once pgsweeper has freed slots. Then at 13
    connections, all idle past max_idle, nothing more is ended."""
    rules = "      - {name: storm, when_connections_above: 80%, max_idle: 1s, users: [app]}\n"
    cursor = journal.cursor()
    d, metrics = start(sweeper, spg, tmp_path, rules, interval="1s")
    try:
        wait_polls(d, metrics, 1)
        storm, refused = [], None
        for _ in range(SLOTS + 5):
            try:
                storm.append(spg.connect(application_name="storm"))
            except psycopg.OperationalError as e:
                refused = e
                break
        assert refused is not None, f"{len(storm)} sessions and no slot shortage"
        assert re.search(r"remaining connection slots are reserved|too many clients", str(refused)), refused
        t_full = time.monotonic()
        newcomer = wait_until(lambda: try_connect(spg, application_name="newcomer"), 10, interval=0.1,
                              what="a free slot for a newcomer")
        print(f"storm of {len(storm)} sessions: a newcomer got in {time.monotonic() - t_full:.2f}s after the refusal")
        assert {p for p in pids(storm) if not spg.pid_alive(p)}, "a newcomer got in but no storm session was ended"

        # the storm is over: let the last cycles settle, under the threshold
        wait_until(lambda: connections(spg) * 100 <= 80 * SLOTS, 10, what="connections under the threshold")
        wait_polls(d, metrics, 2)
        ended = {p for p in pids(storm) if not spg.pid_alive(p)}
        # 13 connections (not above 13.6), every session idle past max_idle
        calm = [c for c in storm if c.info.backend_pid not in ended] + [newcomer]
        calm_pids = {c.info.backend_pid for c in calm if spg.pid_alive(c.info.backend_pid)}
        while connections(spg) < 13:
            c = spg.connect(application_name="calm")
            c.execute("SELECT 1")
            calm_pids.add(c.info.backend_pid)
        assert connections(spg) == 13
        time.sleep(1.2)
        wait_polls(d, metrics, 3)
        assert alive(spg, calm_pids) == calm_pids, \
            f"ended under the threshold:\n{show(acted(daemon_entries(journal, d, cursor)))}"
    finally:
        err = stop(d)
    got = acted(daemon_entries(journal, d, cursor))
    assert {int(e["PGSWEEPER_PID"]) for e in got} == ended, f"{show(got)}\n{err}"
    for e in got:
        assert e["PGSWEEPER_RULE"] == "storm" and e["PGSWEEPER_RESULT"] == "terminated", e
        assert int(e["PGSWEEPER_CONNECTIONS"]) * 100 > 80 * SLOTS, e
        assert e["PGSWEEPER_CONNECTION_SLOTS"] == str(SLOTS), e


HOSTILE_DB = 'cap"db\\,{x}\nz\u202e'


def test_cap_group_named_by_hostile_bytes(spg, sweeper):
    """A group's value comes from the server: a database name with a quote, a
    backslash, a comma, braces, a newline and a bidi control. The second read
    asks for that group's idle sessions as an element of a text[] parameter
    (a wrong quoting would miss them, and nothing would be ended), and the
    line shows the name escaped, one line per entry."""
    from psycopg import sql
    with psycopg.connect(spg.conninfo(user="postgres", dbname="postgres"), autocommit=True) as su:
        su.execute(sql.SQL("CREATE DATABASE {} OWNER app").format(sql.Identifier(HOSTILE_DB)))
    conns = []
    try:
        for _ in range(3):
            c = psycopg.connect(spg.conninfo(user="app", dbname="appdb"), dbname=HOSTILE_DB, autocommit=True)
            c.execute("SELECT 1")
            conns.append(c)
            time.sleep(0.05)
        first = conns[0].info.backend_pid
        r = once(sweeper, spg, "      - {name: db-cap, max_sessions: 2, per: database, users: [app]}\n")
        assert spg.wait_pid_gone(first), r.stderr
        for c in conns[1:]:
            assert_connection_alive(c)
        ended = [l for l in r.stderr.splitlines() if " terminated pid " in l]
        assert len(ended) == 1, r.stderr
        shown = 'cap"db\\\\,{x}\\x0az\\u202e'
        assert f"(user app, db {shown}, app -, local): 3 sessions of database {shown} > max_sessions 2" in ended[0], \
            ended[0]
    finally:
        for c in conns:
            c.close()
        spg.admin_query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (HOSTILE_DB,))
        wait_until(lambda: not spg.admin_query("SELECT 1 FROM pg_stat_activity WHERE datname = %s", (HOSTILE_DB,)),
                   10, what="no session left in the database")
        with psycopg.connect(spg.conninfo(user="postgres", dbname="postgres"), autocommit=True) as su:
            su.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(HOSTILE_DB)))
