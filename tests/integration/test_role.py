"""Primary and standby (SPEC 10): role: per rule, pg_is_in_recovery() read
by the snapshot itself, one journal entry per change, the metrics gauge.
The standby is a real streaming replica made with pg_basebackup -R."""

import os
import subprocess
import time

import pytest

from conftest import PgCluster, free_tcp_port, wait_until
from pgs_helpers import main_server, yaml_config

ONCE = ("--once", "--log-target", "stderr")


class Standby(PgCluster):
    """A streaming standby of primary, made by pg_basebackup -R."""

    def __init__(self, primary):
        super().__init__(primary.bindir)
        self.primary = primary

    def start(self):
        os.mkdir(self.host)
        if self.as_root:
            import pwd
            pw = pwd.getpwnam("postgres")
            for p in (self.base, self.host):
                os.chown(p, pw.pw_uid, pw.pw_gid)
            os.chmod(self.base, 0o755)
        r = self._run_as_owner([os.path.join(self.bindir, "pg_basebackup"), "-D", str(self.datadir),
                                "-R", "-X", "stream", "-c", "fast", "-h", self.primary.host,
                                "-p", str(self.primary.port), "-U", "postgres"])
        if r.returncode != 0:
            raise RuntimeError(f"pg_basebackup failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        self._argv = [os.path.join(self.bindir, "postgres"), "-D", str(self.datadir),
                      "-k", self.host, "-p", str(self.port),
                      "-c", "listen_addresses=", "-c", "max_connections=600",  # the primary's (conftest): a standby needs at least as many
                      "-c", "fsync=off", "-c", "logging_collector=off",
                      "-c", "log_min_messages=warning", "-c", "hot_standby=on"]
        self._kw = {}
        if self.as_root:
            import pwd
            pw = pwd.getpwnam("postgres")
            self._kw = dict(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
        self._log_fh = open(self.logfile, "ab")
        self._launch()


@pytest.fixture
def standby(pg):
    if not os.access(os.path.join(pg.bindir, "pg_basebackup"), os.X_OK):
        pytest.skip("pg_basebackup not found next to postgres")
    s = Standby(pg)
    try:
        s.start()
        wait_until(lambda: s.admin_query("SELECT pg_is_in_recovery()")[0][0], 10, what="standby in recovery")
        yield s
    finally:
        s.stop()


RULES = ("      - {name: standby-idle, max_idle: 1s, role: standby}\n"
         "      - {name: primary-idle, max_idle: 1s, role: primary, action: log}\n")


def test_standby_rule_never_acts_on_the_primary(pg, sweeper):
    conn = pg.connect(application_name="on-primary")
    time.sleep(1.3)
    r = sweeper.run_once(yaml_config([main_server(pg)], RULES, interval=None), *ONCE)
    assert r.returncode == 0, r.stderr
    pid = conn.info.backend_pid
    assert pg.pid_alive(pid), r.stderr
    assert "[rule standby-idle]" not in r.stderr, r.stderr
    assert "never acts" not in r.stderr, "rules of different roles do not shadow each other"
    # the primary rule (log-only) did judge it: the role was read as primary
    assert f"log-only: pid {pid} " in r.stderr and "[rule primary-idle]" in r.stderr, r.stderr
    assert "server is a primary" in r.stderr, r.stderr


def test_standby_rule_acts_on_a_real_standby(pg, standby, sweeper, journal, tmp_path):
    conn = standby.connect(application_name="on-standby")
    pid = conn.info.backend_pid
    metrics = tmp_path / "m.prom"
    time.sleep(1.3)
    cursor = journal.cursor()
    r = sweeper.run_once(yaml_config([main_server(standby, "replica")], RULES, interval=None,
                                     top=f"metrics_file: {metrics}\n"),
                         "--once", "--log-target", "journal")
    assert r.returncode == 0, r.stderr
    assert standby.wait_pid_gone(pid), "the standby rule did not end the session on the standby"
    got = journal.read({"PGSWEEPER_PID": pid, "_PID": r.pid}, after_cursor=cursor)
    assert len(got) == 1, got
    e = got[0]
    assert e["PGSWEEPER_RULE"] == "standby-idle" and e["PGSWEEPER_RESULT"] == "terminated", e
    assert e["PGSWEEPER_SERVER_ROLE"] == "standby", e
    # the primary rule did not judge it
    assert not [x for x in journal.entries({"_PID": r.pid}, after_cursor=cursor)
                if x.get("PGSWEEPER_RULE") == "primary-idle"]
    assert 'pgsweeper_server_in_recovery{server="replica"} 1' in metrics.read_text()


def test_promotion_is_one_role_change_and_primary_rules_apply(pg, standby, sweeper, journal, tmp_path):
    metrics = tmp_path / "m.prom"
    rules = ("      - {name: primary-idle, max_idle: 1s, role: primary}\n"
             "      - {name: standby-log, max_idle: 1s, role: standby, action: log}\n")
    cursor = journal.cursor()
    d = sweeper.start_daemon(yaml_config([main_server(standby, "node")], rules, interval="300ms",
                                         top=f"metrics_file: {metrics}\n"),
                             "--log-target", "journal")
    try:
        conn = standby.connect(application_name="before-promotion")
        pid = conn.info.backend_pid
        # judged as a standby: logged by the standby rule, left alone by the primary one
        wait_until(lambda: [x for x in journal.entries({"_PID": d.pid}, after_cursor=cursor)
                            if x.get("PGSWEEPER_PID") == str(pid)], 10, what="standby-log entry")
        assert standby.pid_alive(pid)
        wait_until(lambda: metrics.exists() and
                   'pgsweeper_server_in_recovery{server="node"} 1' in metrics.read_text(), 5, what="gauge 1")
        assert standby.admin_query("SELECT pg_promote(true, 30)")[0][0] is True
        assert standby.wait_pid_gone(pid, timeout=10), "primary rule did not apply after the promotion"
        wait_until(lambda: 'pgsweeper_server_in_recovery{server="node"} 0' in metrics.read_text(), 5,
                   what="gauge 0")
        time.sleep(1.0)   # a few more polls: still exactly one change
        changes = [x for x in journal.entries({"_PID": d.pid}, after_cursor=cursor)
                   if x.get("MESSAGE_ID") == "80b3b1e28f4e46a8bb2626bf4d417eae"]
        assert len(changes) == 1, changes
        c = changes[0]
        assert c["PGSWEEPER_SERVER"] == "node" and c["PGSWEEPER_SERVER_ROLE"] == "primary", c
        assert c["PGSWEEPER_PREVIOUS_ROLE"] == "standby", c
        ended = [x for x in journal.entries({"_PID": d.pid}, after_cursor=cursor)
                 if x.get("PGSWEEPER_PID") == str(pid) and x.get("PGSWEEPER_RESULT") == "terminated"]
        assert len(ended) == 1 and ended[0]["PGSWEEPER_RULE"] == "primary-idle", ended
        assert ended[0]["PGSWEEPER_SERVER_ROLE"] == "primary", ended
    finally:
        d.terminate()
        d.wait(10)
