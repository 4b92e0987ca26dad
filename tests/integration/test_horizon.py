"""The transaction-ID horizon (SPEC 9): max_xmin_age is a count of
transactions, compared by the server in the snapshot scan and judged at
every poll; the guard re-checks xact_start."""

import time

import psycopg

from conftest import wait_until
from pgs_helpers import (assert_connection_alive, assert_connection_dead, guarded_action, main_server, snapshot_of,
                         yaml_config)

BURN = "DO $$ BEGIN FOR i IN 1..%d LOOP PERFORM txid_current(); COMMIT; END LOOP; END $$"


def burn(pg, n):
    """n xids, each in its own top-level transaction."""
    c = pg.connect(user="postgres", dbname="postgres", application_name="burner")
    c.execute(BURN % n)
    c.close()


def holders(pg):
    rr = pg.connect(application_name="rr-holder", autocommit=False)
    rr.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    rr.execute("SELECT count(*) FROM pg_class")             # the snapshot is taken, and kept
    rc = pg.connect(application_name="rc-idle-in-xact", autocommit=False)
    rc.execute("SELECT count(*) FROM pg_class")             # READ COMMITTED: snapshot released after it
    idle = pg.connect(application_name="plain-idle")
    return rr, rc, idle


def xmin_age(pg, pid):
    return pg.admin_query("SELECT greatest(age(backend_xmin), age(backend_xid)) FROM pg_stat_activity "
                          "WHERE pid = %s", (pid,))[0][0]


def test_repeatable_read_holder_is_ended_read_committed_untouched(pg, sweeper, journal):
    rr, rc, idle = holders(pg)
    rr_pid = rr.info.backend_pid
    burn(pg, 300)
    assert xmin_age(pg, rr_pid) >= 300
    assert xmin_age(pg, rc.info.backend_pid) is None, "READ COMMITTED idle in transaction holds no xmin"
    cursor = journal.cursor()
    r = sweeper.run_once(yaml_config([main_server(pg)], "      - {name: horizon, max_xmin_age: 2_00}\n", interval=None),
                         "--once", "--log-target", "journal")
    assert r.returncode == 0, r.stderr
    assert pg.wait_pid_gone(rr.info.backend_pid), "the REPEATABLE READ holder survived"
    assert_connection_dead(rr)
    assert_connection_alive(rc)
    assert_connection_alive(idle)
    got = journal.read({"PGSWEEPER_PID": rr_pid, "_PID": r.pid}, after_cursor=cursor)
    assert len(got) == 1, got
    e = got[0]
    assert e["PGSWEEPER_LIMIT"] == "max_xmin_age" and e["PGSWEEPER_RESULT"] == "terminated", e
    assert int(e["PGSWEEPER_XMIN_AGE"]) >= 300 and e["PGSWEEPER_LIMIT_VALUE"] == "200", e
    assert "PGSWEEPER_LIMIT_MS" not in e and "PGSWEEPER_ELAPSED_MS" not in e, e
    assert "holds xmin " in e["MESSAGE"] and " transactions old > max_xmin_age 200 [rule horizon]" in e["MESSAGE"], e
    others = [x for x in journal.entries({"_PID": r.pid}, after_cursor=cursor)
              if x.get("PGSWEEPER_PID") in (str(rc.info.backend_pid), str(idle.info.backend_pid))]
    assert not others, others


def test_age_is_checked_at_every_poll(pg, sweeper):
    """No deadline can predict an age: a holder that crosses between polls is
    ended at the next poll (interval 500ms), with no time limit in the rule."""
    rr, rc, idle = holders(pg)
    rr_pid = rr.info.backend_pid
    d = sweeper.start_daemon(yaml_config([main_server(pg)], "      - {name: horizon, max_xmin_age: 200}\n",
                                         interval="500ms"), "--log-target", "stderr")
    try:
        time.sleep(1.2)                                     # several polls: young horizon, untouched
        assert pg.pid_alive(rr.info.backend_pid)
        burn(pg, 250)
        t0 = time.monotonic()
        assert pg.wait_pid_gone(rr.info.backend_pid, timeout=5), "not ended after crossing"
        assert time.monotonic() - t0 < 2.5
        assert pg.pid_alive(rc.info.backend_pid) and pg.pid_alive(idle.info.backend_pid)
    finally:
        d.terminate()
        out, err = d.communicate(timeout=10)
    assert f"terminated pid {rr_pid} " in err and "max_xmin_age 200" in err, err


def test_guard_spares_a_new_transaction(pg):
    """The guard is xact_start: a holder that committed and began a new
    transaction after the judgement is 'changed', not ended."""
    rr, rc, idle = holders(pg)
    pid = rr.info.backend_pid
    _, backend_start, _, _, old_xact_start = snapshot_of(pg, pid)
    rr.commit()
    rr.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    rr.execute("SELECT 1")

    def act(xact_start):
        return guarded_action(pg, pid, ["idle in transaction", backend_start, "null", "null", xact_start],
                              "max_xmin_age", "terminate")

    assert act(old_xact_start) == "changed"
    assert_connection_alive(rr)
    assert act(snapshot_of(pg, pid)[4]) == "terminated"
    assert pg.wait_pid_gone(pid)
