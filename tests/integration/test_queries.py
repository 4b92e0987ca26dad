"""Query filter (SPEC 11): queries: globs in rule filters and exempt blocks,
matched against the first 1024 bytes of the query text (an idle session's
last query). The text is never logged unless log_query is on."""

import time

import psycopg

from pgs_helpers import ActiveQuery, assert_connection_alive, main_server, yaml_config

ONCE = ("--once", "--log-target", "stderr")


def idle_after(pg, sql, app):
    c = pg.connect(application_name=app)
    c.execute(sql)
    return c, c.info.backend_pid


def test_exempt_by_query_glob_global_and_rule(pg, sweeper, journal):
    keep, keep_pid = idle_after(pg, "SELECT 'keep-me' AS x", "keeper")
    keep2, keep2_pid = idle_after(pg, "SELECT 'rule-exempt' AS x", "keeper-2")
    victim, victim_pid = idle_after(pg, "SELECT 'victim' AS x", "victim")
    time.sleep(1.2)
    cursor = journal.cursor()
    r = sweeper.run_once(yaml_config([main_server(pg)],
                                     "      - name: idle\n"
                                     "        max_idle: 1s\n"
                                     "        exempt: {queries: [\"SELECT 'rule-exempt'*\"]}\n",
                                     top="exempt:\n  queries: [\"SELECT 'keep-me'*\"]\n", interval=None),
                         "--once", "--log-target", "journal")
    assert r.returncode == 0, r.stderr
    assert pg.wait_pid_gone(victim_pid), "the session whose query matches no exempt glob survived"
    assert_connection_alive(keep)
    assert_connection_alive(keep2)
    got = journal.read({"PGSWEEPER_PID": victim_pid, "_PID": r.pid}, after_cursor=cursor)
    assert len(got) == 1, got
    assert "PGSWEEPER_QUERY" not in got[0], "the text read for the filter must not be logged without log_query"


def test_rule_filter_by_query_glob(pg, sweeper):
    sleeper = pg.connect(application_name="sleeper")
    other = pg.connect(application_name="other-query")
    q1 = ActiveQuery(pg, sleeper, "SELECT pg_sleep(30)")
    q2 = ActiveQuery(pg, other, "SELECT 1 FROM pg_sleep(30)")
    q1.wait_active()
    q2.wait_active()
    time.sleep(1.1)
    try:
        r = sweeper.run_once(yaml_config([main_server(pg)],
                                         "      - name: sleepers\n"
                                         "        max_query_duration: 1s\n"
                                         "        action: cancel\n"
                                         "        queries: [\"SELECT pg_sleep(*\"]\n", interval=None), *ONCE)
        assert r.returncode == 0, r.stderr
        q1.thread.join(10)
        assert isinstance(q1.error, psycopg.errors.QueryCanceled), q1.error
        assert not q2.done.is_set(), "a query that does not match the glob was cancelled"
        assert f"cancelled pid {q1.pid} " in r.stderr and f"pid {q2.pid} " not in r.stderr, r.stderr
    finally:
        q2.stop()
        q1.stop()


def test_log_query_still_logs_the_text(pg, sweeper, journal):
    victim, pid = idle_after(pg, "SELECT 'with-text' AS x", "victim")
    time.sleep(1.2)
    cursor = journal.cursor()
    r = sweeper.run_once(yaml_config([main_server(pg)],
                                     "      - {name: idle, max_idle: 1s, queries: [\"SELECT 'with-text'*\"]}\n",
                                     top="log_query: true\n", interval=None),
                         "--once", "--log-target", "journal")
    assert r.returncode == 0, r.stderr
    got = journal.read({"PGSWEEPER_PID": pid, "_PID": r.pid}, after_cursor=cursor)
    assert len(got) == 1 and got[0].get("PGSWEEPER_QUERY") == "SELECT 'with-text' AS x", got
