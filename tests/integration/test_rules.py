"""Every limit, filter and exempt level against real sessions, plus the
built-in protections, escalation and the blast-radius cap (SPEC 2-4)."""

import re
import threading
import time

import psycopg
import pytest

from pgs_helpers import (ESCALATION_SQL, ActiveQuery, assert_connection_alive, assert_connection_dead, main_server,
                         yaml_config)

ONCE = ("--once", "--log-target", "stderr")


def run_once(sweeper, text, *args):
    r = sweeper.run_once(text, *ONCE, *args)
    assert r.returncode == 0, r.stderr
    return r.stderr


def lines_for(err, pid):
    return [l for l in err.splitlines() if f" pid {pid} " in l]


# -- limits ----------------------------------------------------------------

def test_idle_in_transaction_and_aborted(pg, sweeper):
    plain = pg.connect(application_name="iit", autocommit=False)
    plain.execute("SELECT 1")                       # idle in transaction
    aborted = pg.connect(application_name="iit-aborted", autocommit=False)
    with pytest.raises(psycopg.errors.DivisionByZero):
        aborted.execute("SELECT 1/0")               # idle in transaction (aborted)
    idle = pg.connect(application_name="just-idle")
    time.sleep(1.2)
    err = run_once(sweeper, yaml_config([main_server(pg)], "      - {name: stuck, max_idle_in_transaction: 1s}\n",
                                        interval=None))
    for c, state in ((plain, "idle in transaction"), (aborted, "idle in transaction (aborted)")):
        pid = c.info.backend_pid
        assert pg.wait_pid_gone(pid), f"{state} session survived"
        assert any(f"): {state} " in l and "max_idle_in_transaction 1s" in l for l in lines_for(err, pid)), err
    assert pg.pid_alive(idle.info.backend_pid), "a plain idle session matched max_idle_in_transaction"


def test_query_duration_cancel_keeps_the_connection(pg, sweeper):
    conn = pg.connect(application_name="long-report")
    q = ActiveQuery(pg, conn, "SELECT pg_sleep(30)")
    q.wait_active()
    time.sleep(1.1)
    err = run_once(sweeper, yaml_config([main_server(pg)],
                                        "      - {name: runaway, max_query_duration: 1s, action: cancel}\n",
                                        interval=None))
    q.thread.join(10)
    assert isinstance(q.error, psycopg.errors.QueryCanceled), q.error
    assert q.error.sqlstate == "57014"
    assert_connection_alive(conn)
    assert any(l.startswith(f"main: cancelled pid {q.pid} ") and "query running" in l for l in lines_for(err, q.pid)), err


def test_escalation_terminates_a_query_that_ignores_cancel(pg, sweeper):
    conn = pg.connect(application_name="stubborn")
    q = ActiveQuery(pg, conn, ESCALATION_SQL)
    q.wait_active()
    rules = "      - {name: runaway, max_query_duration: 500ms, action: cancel, escalate_after: 1s}\n"
    proc = sweeper.start_daemon(yaml_config([main_server(pg)], rules, interval="200ms"), "--log-target", "stderr")
    assert pg.wait_pid_gone(q.pid, timeout=10), "the stubborn query was never terminated"
    q.thread.join(10)
    assert q.killed, q.error
    proc.terminate()
    err = proc.communicate(timeout=10)[1]
    own = lines_for(err, q.pid)
    cancels = [l for l in own if l.startswith(f"main: cancelled pid {q.pid} ")]
    escalations = [l for l in own if l.startswith(f"main: escalated: terminated pid {q.pid} ")]
    assert len(cancels) == 1, f"expected one cancel before the escalation:\n{err}"
    assert len(escalations) == 1, err
    assert own.index(cancels[0]) < own.index(escalations[0])


def test_transaction_age_any_state(pg, sweeper):
    conn = pg.connect(application_name="long-tx", autocommit=False)
    conn.execute("SELECT 1")
    time.sleep(2.2)
    conn2 = pg.connect(application_name="young-tx", autocommit=False)
    conn2.execute("SELECT 1")
    # a fresh query: state_change is new, only the transaction is old; the
    # young transaction stays far from the limit even on a loaded machine
    conn.execute("SELECT 2")
    err = run_once(sweeper, yaml_config([main_server(pg)], "      - {name: tx, max_transaction_age: 2s}\n",
                                        interval=None))
    pid = conn.info.backend_pid
    assert pg.wait_pid_gone(pid)
    assert any("max_transaction_age 2s" in l for l in lines_for(err, pid)), err
    assert pg.pid_alive(conn2.info.backend_pid)


def test_session_age(pg, sweeper):
    old = pg.connect(application_name="old-session")
    time.sleep(3.2)
    # the young session stays far from the limit even on a loaded machine
    young = pg.connect(application_name="young-session")
    young.execute("SELECT 1")
    err = run_once(sweeper, yaml_config([main_server(pg)], "      - {name: age, max_session_age: 3s}\n", interval=None))
    assert pg.wait_pid_gone(old.info.backend_pid)
    assert pg.pid_alive(young.info.backend_pid)
    assert any("session open" in l and "max_session_age 3s" in l for l in lines_for(err, old.info.backend_pid)), err


# -- filters and exempt ----------------------------------------------------

@pytest.mark.parametrize("rule_filter, victim_kw, bystander_kw", [
    ("users: [\"oth*\"]", dict(user="other", dbname="postgres"), dict(user="app", dbname="appdb")),
    ("databases: [appdb]", dict(user="app", dbname="appdb"), dict(user="other", dbname="postgres")),
    ("applications: [\"batch-*\"]", dict(application_name="batch-7"), dict(application_name="web")),
    ("client_addresses: [127.0.0.0/8]", dict(host="127.0.0.1"), dict()),
    ("client_addresses: [local]", dict(), dict(host="127.0.0.1")),
])
def test_filters(pg, sweeper, rule_filter, victim_kw, bystander_kw):
    victim = pg.connect(**victim_kw)
    bystander = pg.connect(**bystander_kw)
    time.sleep(1.1)
    err = run_once(sweeper, yaml_config([main_server(pg)], f"      - {{name: f, max_idle: 1s, {rule_filter}}}\n",
                                        interval=None))
    assert pg.wait_pid_gone(victim.info.backend_pid), err
    assert pg.pid_alive(bystander.info.backend_pid), err


@pytest.mark.parametrize("level", ["global", "server", "rule"])
def test_exempt_levels(pg, sweeper, level):
    spared = pg.connect(application_name="pg_dump")
    victim = pg.connect(application_name="psql")
    time.sleep(1.1)
    block = "exempt: {applications: [pg_dump, \"pg_restore*\"]}"
    top = f"{block}\n" if level == "global" else ""
    server_extra = f"    {block}\n" if level == "server" else ""
    rule = (f"      - {{name: idle, max_idle: 1s, {block}}}\n" if level == "rule"
            else "      - {name: idle, max_idle: 1s}\n")
    err = run_once(sweeper, yaml_config([main_server(pg)], rule, top=top, server_extra=server_extra, interval=None))
    assert pg.wait_pid_gone(victim.info.backend_pid), err
    assert pg.pid_alive(spared.info.backend_pid), err
    assert not lines_for(err, spared.info.backend_pid), "an exempt session must not even be logged"


# -- protections -------------------------------------------------------------

def test_builtin_protections_hold_even_against_a_rule_that_matches_everything(pg, sweeper):
    walsender = psycopg.connect(pg.conninfo(user="postgres", dbname="postgres", replication="database"),
                                autocommit=True)
    try:
        su = pg.connect(user="postgres", dbname="postgres", application_name="dba")
        app = pg.connect(application_name="ordinary")
        time.sleep(0.2)
        protected = {r[0]: r[1] for r in pg.admin_query(
            "SELECT pid, backend_type FROM pg_stat_activity WHERE backend_type <> 'client backend'")}
        assert "walsender" in protected.values() and "autovacuum launcher" in protected.values(), protected
        rules = ("      - {name: everything, max_session_age: 1ms}\n"
                 "      - {name: everything-idle, max_idle: 1ms}\n")
        err = run_once(sweeper, yaml_config([main_server(pg)], rules, interval=None))
        assert pg.wait_pid_gone(app.info.backend_pid), err
        for pid, kind in protected.items():
            assert pg.pid_alive(pid), f"{kind} (pid {pid}) was touched:\n{err}"
            assert not lines_for(err, pid), f"{kind} (pid {pid}) was judged:\n{err}"
        assert pg.pid_alive(su.info.backend_pid), "a superuser session was terminated by default"
        assert not lines_for(err, su.info.backend_pid)
    finally:
        walsender.close()


def test_terminate_superusers_lets_rules_judge_superusers(pg, sweeper):
    su = pg.connect(user="postgres", dbname="postgres", application_name="dba")
    time.sleep(1.1)
    err = run_once(sweeper, yaml_config([main_server(pg)], "      - {name: idle, max_idle: 1s}\n",
                                        server_extra="    terminate_superusers: true\n", interval=None))
    # pgsweeper's role is not a superuser: the kill is denied, with the
    # reason, once for the role (the fixture's own idle superuser session
    # is judged too; only the first denial per role is logged above debug)
    lines = [l for l in err.splitlines() if "permission denied to terminate" in l]
    assert len(lines) == 1 and "(user postgres," in lines[0], err
    assert "only a superuser may signal a superuser's session" in lines[0], err
    assert pg.pid_alive(su.info.backend_pid)
    r = sweeper.run_once(yaml_config([main_server(pg)], "      - {name: idle, max_idle: 1s}\n",
                                     server_extra="    terminate_superusers: true\n", interval=None), *ONCE, "-v")
    assert any(l.startswith(f"main: permission denied to terminate pid {su.info.backend_pid} ")
               for l in r.stderr.splitlines()), r.stderr


# -- the cap -----------------------------------------------------------------

def test_cap_250_victims(pg, sweeper):
    victims = {}
    for i in range(250):
        c = psycopg.connect(pg.conninfo(user="app", dbname="appdb"), autocommit=True,
                            application_name=f"victim-{i}")
        victims[c.info.backend_pid] = c
    try:
        time.sleep(1.1)
        text = yaml_config([main_server(pg)], "      - {name: idle, max_idle: 1s, users: [app]}\n",
                           top="max_actions_per_cycle: 100\n", interval=None)
        cycles = 0
        while True:
            cycles += 1
            assert cycles <= 4, "250 victims at 100 per cycle need 3 cycles"
            err = run_once(sweeper, text, "-v")
            lines = err.splitlines()
            # every signalling decision is one line: terminated, or (debug) gone/changed
            acted = [l for l in lines if l.startswith("main: terminated pid ")
                     or (l.startswith("main: did not terminate pid ") and " since the snapshot" in l)]
            warns = [l for l in lines if "max_actions_per_cycle (100) reached" in l]
            assert len(acted) <= 100, err
            # each --once is a new process without the memory of the last one:
            # let this cycle's victims finish exiting before the next run
            for l in acted:
                pg.wait_pid_gone(int(re.search(r" pid (\d+) ", l).group(1)), timeout=10)
            if not warns:
                break
            assert len(warns) == 1 and len(acted) == 100, err
            m = re.search(r"reached: (\d+) more sessions", warns[0])
            assert m and int(m.group(1)) > 0, err
            print(f"cycle {cycles}: 100 acted, {m.group(1)} wait")
        assert cycles == 3, f"expected 3 capped cycles for 250 victims, got {cycles}"
        # pg_terminate_backend() signals; give the last ones a moment to exit
        deadline = time.monotonic() + 5
        while (alive := pg.backend_pids_alive("app") & set(victims)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive, f"{len(alive)} victims survived three capped cycles"
    finally:
        for c in victims.values():
            c.close()
