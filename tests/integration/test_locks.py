"""Lock chains (SPEC 8): max_blocking ends the root of a chain, max_lock_wait
the queued statement, min_blocked counts who waits behind; protected roots
are warned about once, never signalled; a parallel query's leader is the one
judged. Real sessions, real locks."""

import time

import psycopg
import pytest

from conftest import wait_until
from pgs_helpers import (ActiveQuery, assert_connection_alive, assert_connection_dead, guarded_action, main_server,
                         snapshot_of, yaml_config)

CHAIN_PROTECTED = "22e192afa7c64449b0a3a7a352e7feac"


@pytest.fixture
def table(pg):
    c = pg.connect()
    c.execute("DROP TABLE IF EXISTS lk")
    c.execute("CREATE TABLE lk (id int PRIMARY KEY, v int)")
    c.execute("INSERT INTO lk SELECT g, 0 FROM generate_series(1, 2000) g")
    c.execute("ANALYZE lk")
    c.close()
    return "lk"


def waiting(pg, pid):
    r = pg.admin_query("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,))
    return bool(r) and r[0][0] == "Lock"


def start_waiters(pg, n, sql, app="writer"):
    qs = []
    for i in range(n):
        q = ActiveQuery(pg, pg.connect(application_name=f"{app}-{i}"), sql)
        wait_until(lambda: waiting(pg, q.pid), 5, what=f"{app}-{i} waiting for a lock")
        qs.append(q)
    return qs


def idle_blocker(pg, user="app", dbname="appdb", app="blocker"):
    b = pg.connect(user=user, dbname=dbname, application_name=app, autocommit=False)
    b.execute("UPDATE lk SET v = v + 1 WHERE id = 1")     # idle in transaction, holding the row
    return b


def once(sweeper, text, journal=None):
    r = sweeper.run_once(text, "--once", "--log-target", "journal" if journal else "stderr")
    assert r.returncode == 0, r.stderr
    return r


def test_idle_in_transaction_root_ended_writers_finish(pg, sweeper, journal, table):
    blocker = idle_blocker(pg)
    bpid = blocker.info.backend_pid
    writers = start_waiters(pg, 3, "UPDATE lk SET v = v + 1 WHERE id = 1")
    time.sleep(1.1)
    cursor = journal.cursor()
    r = once(sweeper, yaml_config([main_server(pg)], "      - {name: lock-blockers, max_blocking: 1s}\n",
                                  interval=None), journal)
    assert pg.wait_pid_gone(bpid), "the root blocker survived"
    for w in writers:
        w.thread.join(10)
        assert w.done.is_set() and w.error is None, w.error
        assert pg.pid_alive(w.pid)
    got = journal.read({"PGSWEEPER_PID": bpid, "_PID": r.pid}, after_cursor=cursor)
    assert len(got) == 1, got
    e = got[0]
    assert e["PGSWEEPER_LIMIT"] == "max_blocking" and e["PGSWEEPER_RESULT"] == "terminated", e
    assert e["PGSWEEPER_BLOCKED"] == "3", e
    assert 1000 <= int(e["PGSWEEPER_ELAPSED_MS"]) < 30000, e
    assert "blocking 3 sessions for " in e["MESSAGE"] and "> max_blocking 1s [rule lock-blockers]" in e["MESSAGE"], e
    # only the root: no writer was judged
    assert not [x for x in journal.entries({"_PID": r.pid}, after_cursor=cursor)
                if x.get("PGSWEEPER_PID") in {str(w.pid) for w in writers}]



def test_job_queue_only_the_stuck_root_is_ended(pg, sweeper, journal):
    """Issue 18, defect 1: a worker that queued behind a stuck root and then
    got the lock has blocked the others only since it got it, not for the
    queue's age. max_blocking 3s, interval 1s; four workers queue 0.2 s apart
    and hold the lock 2 s each once they have it: the root is ended, and
    every worker commits (before the fix workers 1 to 3 were terminated as
    soon as each got the lock)."""
    root = pg.connect(application_name="stuck", autocommit=False)
    root.execute("SELECT pg_advisory_xact_lock(42)")        # idle in transaction, holding it
    rpid = root.info.backend_pid
    cursor = journal.cursor()
    d = sweeper.start_daemon(yaml_config([main_server(pg)],
                                         "      - {name: lock-blockers, max_blocking: 3s, users: [app]}\n",
                                         interval="1s"), "--log-target", "journal")
    try:
        workers = []
        for i in range(4):
            workers.append(ActiveQuery(pg, pg.connect(application_name=f"worker-{i}"),
                                       "begin; select pg_advisory_xact_lock(42); select pg_sleep(2); commit;"))
            time.sleep(0.2)
        assert pg.wait_pid_gone(rpid, 10), "the stuck root survived"
        for w in workers:
            w.thread.join(20)
            assert w.done.is_set() and w.error is None, (w.pid, w.error)
            assert pg.pid_alive(w.pid)
        assert d.poll() is None
        got = journal.read({"PGSWEEPER_PID": rpid, "_PID": d.pid}, after_cursor=cursor)
        assert len(got) == 1, got
        e = got[0]
        acted = [x for x in journal.entries({"_PID": d.pid}, after_cursor=cursor) if x.get("PGSWEEPER_RESULT")]
        assert [x["PGSWEEPER_PID"] for x in acted] == [str(rpid)], acted
        assert e["PGSWEEPER_LIMIT"] == "max_blocking" and e["PGSWEEPER_RESULT"] == "terminated", e
        assert 3000 <= int(e["PGSWEEPER_ELAPSED_MS"]) < 6000, e
    finally:
        d.terminate()
        d.wait(10)

def test_stderr_line(pg, sweeper, table):
    blocker = idle_blocker(pg)
    bpid = blocker.info.backend_pid
    writers = start_waiters(pg, 2, "UPDATE lk SET v = v + 1 WHERE id = 1")
    time.sleep(1.1)
    r = once(sweeper, yaml_config([main_server(pg)], "      - {name: lock-blockers, max_blocking: 1s}\n",
                                  interval=None))
    line = [l for l in r.stderr.splitlines() if f"pid {bpid} " in l]
    assert len(line) == 1, r.stderr
    assert line[0].startswith(f"main: terminated pid {bpid} (user app, db appdb, app blocker, local): "
                              "blocking 2 sessions for "), line
    assert line[0].endswith(" [rule lock-blockers]") and "> max_blocking 1s" in line[0], line
    for w in writers:
        w.thread.join(10)


def test_blocker_without_waiter_is_never_touched(pg, sweeper, table):
    blocker = idle_blocker(pg)
    time.sleep(1.3)
    r = once(sweeper, yaml_config([main_server(pg)], "      - {name: lock-blockers, max_blocking: 1s}\n",
                                  interval=None))
    assert f"pid {blocker.info.backend_pid} " not in r.stderr, r.stderr
    assert_connection_alive(blocker)


def test_min_blocked_above_the_queue_is_never_touched(pg, sweeper, table):
    blocker = idle_blocker(pg)
    writers = start_waiters(pg, 3, "UPDATE lk SET v = v + 1 WHERE id = 1")
    time.sleep(1.1)
    r = once(sweeper, yaml_config([main_server(pg)],
                                  "      - {name: lock-blockers, max_blocking: 1s, min_blocked: 4}\n",
                                  interval=None))
    assert f"pid {blocker.info.backend_pid} " not in r.stderr, r.stderr
    assert_connection_alive(blocker)
    assert all(waiting(pg, w.pid) for w in writers)
    blocker.rollback()
    for w in writers:
        w.thread.join(10)
        assert w.error is None


def test_lock_queue_alter_cancelled_selects_finish_root_untouched(pg, sweeper, journal, table):
    dump = pg.connect(application_name="pg_dump", autocommit=False)
    dump.execute("SELECT count(*) FROM lk")                 # ACCESS SHARE, held
    alter = ActiveQuery(pg, pg.connect(application_name="migration"), "ALTER TABLE lk ADD COLUMN extra int")
    wait_until(lambda: waiting(pg, alter.pid), 5, what="ALTER queued")
    selects = start_waiters(pg, 3, "SELECT count(*) FROM lk", app="reader")
    time.sleep(1.1)
    cursor = journal.cursor()
    rules = "      - {name: ddl-queue, max_lock_wait: 1s, min_blocked: 1, action: cancel}\n"
    r = once(sweeper, yaml_config([main_server(pg)], rules,
                                  top="exempt:\n  applications: [pg_dump]\n", interval=None), journal)
    alter.thread.join(10)
    assert isinstance(alter.error, psycopg.errors.QueryCanceled), alter.error
    assert alter.error.sqlstate == "57014"
    assert_connection_alive(alter.conn)
    for q in selects:
        q.thread.join(10)
        assert q.done.is_set() and q.error is None, q.error
    assert_connection_alive(dump)
    got = journal.read({"PGSWEEPER_PID": alter.pid, "_PID": r.pid}, after_cursor=cursor)
    assert len(got) == 1, got
    e = got[0]
    assert e["PGSWEEPER_LIMIT"] == "max_lock_wait" and e["PGSWEEPER_RESULT"] == "cancelled", e
    assert e["PGSWEEPER_BLOCKED"] == "3", e
    assert int(e["PGSWEEPER_ELAPSED_MS"]) >= 1000, e
    # readers (nobody behind them: min_blocked 1) and the exempt root were not judged
    judged = {x.get("PGSWEEPER_PID") for x in journal.entries({"_PID": r.pid}, after_cursor=cursor)}
    assert str(dump.info.backend_pid) not in judged
    assert not judged & {str(q.pid) for q in selects}


def test_superuser_root_warned_once_never_signalled(pg, sweeper, journal, table):
    blocker = idle_blocker(pg, user="postgres", dbname="appdb", app="su-blocker")
    bpid = blocker.info.backend_pid
    writers = start_waiters(pg, 3, "UPDATE lk SET v = v + 1 WHERE id = 1")
    cursor = journal.cursor()
    d = sweeper.start_daemon(yaml_config([main_server(pg)], "      - {name: lock-blockers, max_blocking: 500ms}\n",
                                         interval="200ms"), "--log-target", "journal")
    try:
        time.sleep(3.0)                                     # many polls
        assert d.poll() is None
        assert_connection_alive(blocker)
        entries = journal.entries({"_PID": d.pid}, after_cursor=cursor)
        warned = [x for x in entries if x.get("MESSAGE_ID") == CHAIN_PROTECTED]
        assert len(warned) == 1, warned
        w = warned[0]
        assert w["PGSWEEPER_PID"] == str(bpid) and w["PGSWEEPER_BLOCKED"] == "3", w
        assert w["PRIORITY"] == "4" and "superuser" in w["MESSAGE"] and f"pid {bpid} " in w["MESSAGE"], w
        assert not [x for x in entries if x.get("PGSWEEPER_RESULT")], "nothing is signalled in this chain"
    finally:
        d.terminate()
        d.wait(10)
        blocker.rollback()
        for w in writers:
            w.thread.join(10)


PARALLEL_SETUP = ("SET max_parallel_workers_per_gather = 2", "SET parallel_setup_cost = 0",
                  "SET parallel_tuple_cost = 0", "SET min_parallel_table_scan_size = 0",
                  "SET parallel_leader_participation = off")


def test_parallel_query_leader_is_judged(pg, sweeper, journal, table):
    leader_conn = pg.connect(application_name="parallel-report")
    for s in PARALLEL_SETUP:
        leader_conn.execute(s)
    plan = "\n".join(r[0] for r in leader_conn.execute(
        "EXPLAIN SELECT count(*) FROM lk WHERE pg_sleep(0.01) IS NOT NULL").fetchall())
    if "Gather" not in plan:
        pytest.skip(f"no parallel plan on this server:\n{plan}")
    q = ActiveQuery(pg, leader_conn, "SELECT count(*) FROM lk WHERE pg_sleep(0.01) IS NOT NULL")
    wait_until(lambda: pg.admin_query("SELECT count(*) FROM pg_stat_activity WHERE leader_pid = %s "
                                      "AND backend_type = 'parallel worker'", (q.pid,))[0][0] > 0,
               5, what="parallel workers")
    alter = ActiveQuery(pg, pg.connect(application_name="migration"), "ALTER TABLE lk ADD COLUMN extra int")
    wait_until(lambda: waiting(pg, alter.pid), 5, what="ALTER queued behind the parallel query")
    workers = {r[0] for r in pg.admin_query("SELECT pid FROM pg_stat_activity WHERE leader_pid = %s "
                                             "AND pid <> %s", (q.pid, q.pid))}
    assert workers
    time.sleep(1.1)
    cursor = journal.cursor()
    r = once(sweeper, yaml_config([main_server(pg)],
                                  "      - {name: lock-blockers, max_blocking: 1s, action: cancel}\n",
                                  interval=None), journal)
    q.thread.join(10)
    assert isinstance(q.error, psycopg.errors.QueryCanceled), q.error
    alter.thread.join(10)
    assert alter.error is None, alter.error
    entries = journal.entries({"_PID": r.pid}, after_cursor=cursor)
    acted = [x for x in entries if x.get("PGSWEEPER_RESULT")]
    assert len(acted) == 1 and acted[0]["PGSWEEPER_PID"] == str(q.pid), acted
    assert acted[0]["PGSWEEPER_BLOCKED"] == "1", acted


def guarded(pg, limit, action, pid, state, bs, sc, qs):
    """The guarded action judged with state and these times, no xact_start."""
    return guarded_action(pg, pid, [state, bs, sc, qs, "null"], limit, action)


def times(pg, pid):
    """backend_start, state_change, query_start as the snapshot has them."""
    return snapshot_of(pg, pid)[1:4]


def test_guards(pg, table):
    """Root: same state and state_change; waiter: still waiting for a lock in
    the same query (query_start)."""
    blocker = idle_blocker(pg)
    bpid = blocker.info.backend_pid
    bs, sc, qs = times(pg, bpid)
    blocker.execute("SELECT 1")                             # same transaction, new state_change
    assert guarded(pg, "max_blocking", "terminate", bpid, "idle in transaction", bs, sc, qs) == "changed"
    assert_connection_alive(blocker)

    (w,) = start_waiters(pg, 1, "UPDATE lk SET v = v + 1 WHERE id = 1")
    wbs, wsc, wqs = times(pg, w.pid)
    assert guarded(pg, "max_lock_wait", "cancel", w.pid, "active", wbs, wsc, int(wqs) - 1) == "changed"
    blocker.rollback()                                      # the waiter gets its lock and finishes
    w.thread.join(10)
    assert w.error is None
    assert guarded(pg, "max_lock_wait", "cancel", w.pid, "active", wbs, wsc, wqs) == "changed", \
        "no longer waiting for a lock: not cancelled"
    # and the positive case: waiting, same query
    blocker.execute("UPDATE lk SET v = v + 1 WHERE id = 1")
    (w2,) = start_waiters(pg, 1, "UPDATE lk SET v = v + 1 WHERE id = 1")
    b2, s2, q2 = times(pg, w2.pid)
    assert guarded(pg, "max_lock_wait", "cancel", w2.pid, "active", b2, s2, q2) == "cancelled"
    w2.thread.join(10)
    assert isinstance(w2.error, psycopg.errors.QueryCanceled), w2.error
    bs, sc, qs = times(pg, bpid)
    assert guarded(pg, "max_blocking", "terminate", bpid, "idle in transaction", bs, sc, qs) == "terminated"
    assert pg.wait_pid_gone(bpid)


def test_wait_start_is_the_lock_wait_not_the_query(pg, sweeper, table):
    """PostgreSQL 14+: the wait is timed from pg_locks.waitstart. A statement
    that ran 2 s before it queued has waited well under max_lock_wait. On 13
    the documented fallback (query_start) counts those 2 s too."""
    version = int(pg.admin_query("SHOW server_version_num")[0][0])
    blocker = idle_blocker(pg)
    q = ActiveQuery(pg, pg.connect(application_name="late-waiter"),
                    "DO $$ BEGIN PERFORM pg_sleep(2); UPDATE lk SET v = v + 1 WHERE id = 1; END $$")
    wait_until(lambda: waiting(pg, q.pid), 10, what="the statement queued after its sleep")
    time.sleep(0.3)
    r = once(sweeper, yaml_config([main_server(pg)], "      - {name: queue, max_lock_wait: 1500ms, action: cancel}\n",
                                  interval=None))
    if version >= 140000:
        assert f"pid {q.pid} " not in r.stderr, r.stderr
        assert waiting(pg, q.pid)
        blocker.rollback()
        q.thread.join(10)
        assert q.error is None, q.error
    else:
        assert f"cancelled pid {q.pid} " in r.stderr, r.stderr
        q.thread.join(10)
        blocker.rollback()


@pytest.fixture
def pg_prepared(pg_cluster):
    """A second throw-away cluster with max_prepared_transactions > 0 (the
    session cluster has none)."""
    from conftest import PgCluster
    c = PgCluster(pg_cluster.bindir)
    try:
        c.start()
        with psycopg.connect(c.conninfo(), autocommit=True) as a:
            a.execute("ALTER SYSTEM SET max_prepared_transactions = 4")
        c.restart()
        yield c
    finally:
        c.stop()


def test_prepared_transaction_root_is_warned_never_signalled(pg_prepared, sweeper, journal):
    pg = pg_prepared
    c = pg.connect()
    c.execute("CREATE TABLE lk (id int PRIMARY KEY, v int)")
    c.execute("INSERT INTO lk VALUES (1, 0)")
    prep = pg.connect(autocommit=False, application_name="two-phase")
    prep.execute("UPDATE lk SET v = v + 1 WHERE id = 1")
    prep.execute("PREPARE TRANSACTION 'pgsweeper-test'")
    prep.commit()
    writers = start_waiters(pg, 2, "UPDATE lk SET v = v + 1 WHERE id = 1")
    assert {0} == {r[0] for w in writers[:1]
                   for r in pg.admin_query("SELECT unnest(pg_blocking_pids(%s))", (w.pid,))}, "pid 0 expected"
    time.sleep(1.1)
    cursor = journal.cursor()
    try:
        r = once(sweeper, yaml_config([main_server(pg)], "      - {name: lock-blockers, max_blocking: 1s}\n",
                                      interval=None), journal)
        entries = journal.entries({"_PID": r.pid}, after_cursor=cursor)
        warned = [x for x in entries if x.get("MESSAGE_ID") == CHAIN_PROTECTED]
        assert len(warned) == 1, entries
        assert warned[0]["PGSWEEPER_PID"] == "0" and warned[0]["PGSWEEPER_BLOCKED"] == "2", warned
        assert "prepared transaction" in warned[0]["MESSAGE"], warned
        assert not [x for x in entries if x.get("PGSWEEPER_RESULT")], "nothing may be signalled"
        assert all(waiting(pg, w.pid) for w in writers)
    finally:
        c.execute("ROLLBACK PREPARED 'pgsweeper-test'")
        for w in writers:
            w.thread.join(10)
