"""The guarded action and what the daemon logs about its decisions.

The guarded statement is driven directly (tests/tools/guarded-action.c runs
pgsweeper's own SQL with values of our choosing), so the race between
snapshot and action is exercised deterministically: the test takes the
snapshot values, changes the session, then acts with the stale values."""

import time

import psycopg
import pytest

from conftest import stop_process
from pgs_helpers import (ActiveQuery, assert_connection_alive, assert_connection_dead, guarded_action, idle_rule,
                         main_server, snapshot_of, yaml_config)


@pytest.fixture
def weak_role(pg):
    """A role that can see sessions but lacks pg_signal_backend."""
    admin = pg.connect(user="postgres", dbname="postgres")
    admin.execute("DO $$BEGIN CREATE ROLE weak LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END$$")
    admin.execute("GRANT pg_monitor TO weak")
    admin.close()
    return "weak"


def test_matching_session_is_terminated(pg):
    victim = pg.connect(application_name="victim")
    pid = victim.info.backend_pid
    assert guarded_action(pg, pid, snapshot_of(pg, pid)) == "terminated"
    assert pg.wait_pid_gone(pid)
    assert_connection_dead(victim)


def test_session_that_ran_a_query_since_the_snapshot_is_left_alone(pg):
    victim = pg.connect(application_name="woke-up")
    pid = victim.info.backend_pid
    stale = snapshot_of(pg, pid)
    time.sleep(0.01)
    victim.execute("SELECT 1")          # idle again, but a new state_change
    assert snapshot_of(pg, pid)[2] != stale[2], "state_change did not move"
    assert guarded_action(pg, pid, stale) == "changed"
    time.sleep(0.2)
    assert pg.pid_alive(pid)
    assert_connection_alive(victim)


def test_session_that_became_active_is_left_alone(pg):
    victim = pg.connect(application_name="now-busy")
    pid = victim.info.backend_pid
    stale = snapshot_of(pg, pid)
    busy = ActiveQuery(pg, victim, "SELECT pg_sleep(3)")
    busy.wait_active()
    assert guarded_action(pg, pid, stale) == "changed"
    busy.thread.join(10)
    assert busy.error is None, f"the query was disturbed: {busy.error}"
    assert_connection_alive(victim)


def test_reused_pid_is_left_alone(pg):
    """Same pid, other backend_start: what a reused pid looks like."""
    victim = pg.connect(application_name="reused")
    pid = victim.info.backend_pid
    values = snapshot_of(pg, pid)
    values[1] = str(int(values[1]) - 1)
    assert guarded_action(pg, pid, values) == "changed"
    assert pg.pid_alive(pid)


def test_vanished_pid_is_gone(pg):
    victim = pg.connect(application_name="leaving")
    pid = victim.info.backend_pid
    values = snapshot_of(pg, pid)
    victim.close()
    assert pg.wait_pid_gone(pid)
    assert guarded_action(pg, pid, values) == "gone"


def test_cancel_hits_only_the_same_query(pg):
    victim = pg.connect(application_name="long-query")
    pid = victim.info.backend_pid
    busy = ActiveQuery(pg, victim, "SELECT pg_sleep(30)")
    busy.wait_active()
    values = snapshot_of(pg, pid)
    stale_query = list(values)
    stale_query[3] = str(int(values[3]) - 1)   # another query_start: another query
    assert guarded_action(pg, pid, stale_query, limit="max_query_duration", action="cancel") == "changed"
    time.sleep(0.2)
    assert not busy.done.is_set(), "a different query was cancelled"
    assert guarded_action(pg, pid, values, limit="max_query_duration", action="cancel") == "cancelled"
    busy.thread.join(10)
    assert isinstance(busy.error, psycopg.errors.QueryCanceled), busy.error
    assert busy.error.sqlstate == "57014"
    assert_connection_alive(victim)             # cancel keeps the session


def test_without_pg_signal_backend_the_result_is_denied(pg, weak_role):
    victim = pg.connect(application_name="protected-by-grants")
    pid = victim.info.backend_pid
    assert guarded_action(pg, pid, snapshot_of(pg, pid), user=weak_role) == "denied"
    assert pg.pid_alive(pid)


def test_superuser_session_is_denied_to_a_non_superuser(pg):
    victim = pg.connect(user="postgres", dbname="postgres", application_name="dba")
    pid = victim.info.backend_pid
    assert guarded_action(pg, pid, snapshot_of(pg, pid)) == "denied"
    assert pg.pid_alive(pid)


def test_denied_is_explained_once_per_role(pg, sweeper, weak_role):
    """A permission failure is logged once with the grant that fixes it, not once per poll."""
    victims = [pg.connect(application_name=f"v{i}") for i in range(2)]
    time.sleep(0.3)
    conf = yaml_config([("weak", pg.conninfo(user=weak_role, dbname="postgres"))],
                       idle_rule("200ms"), interval="300ms")
    proc = sweeper.start_daemon(conf, "--log-target", "stderr")
    time.sleep(2.5)
    assert stop_process(proc) == 0
    err = proc.stderr.read()
    lines = [l for l in err.splitlines() if "permission denied to terminate" in l]
    assert len(lines) == 1, f"expected one explained denial, got:\n{err}"
    assert "GRANT pg_signal_backend TO weak" in lines[0]
    for v in victims:
        assert pg.pid_alive(v.info.backend_pid)


def test_log_only_is_logged_once_per_crossing(pg, sweeper):
    """action: log keeps polling the same over-limit session; one entry, not one per poll."""
    victim = pg.connect(application_name="watched")
    pid = victim.info.backend_pid
    conf = yaml_config([main_server(pg)],
                       idle_rule("300ms", action="log"), interval="200ms")
    proc = sweeper.start_daemon(conf, "--log-target", "stderr")
    time.sleep(1.5)
    victim.execute("SELECT 1")   # a new idle period: a new crossing, logged again
    time.sleep(1.5)
    assert stop_process(proc) == 0
    err = proc.stderr.read()
    lines = [l for l in err.splitlines() if f"log-only: pid {pid} " in l]
    assert len(lines) == 2, f"expected two log-only entries (one per crossing), got:\n{err}"
    assert_connection_alive(victim)
