"""A server that connects and then never answers a poll must neither delay
the others nor keep the daemon from stopping."""

import re
import signal
import time

import pytest

from conftest import stop_process, wait_until
from fakepg import FakeServer
from pgs_helpers import idle_rule, yaml_config


@pytest.fixture
def silent_after_setup():
    f = FakeServer(answer=1)       # answers "SET statement_timeout", then hangs on the snapshot
    yield f
    f.close()


def config(pg, fake):
    servers = [("stuck", f"host=127.0.0.1 port={fake.port} dbname=postgres user=pgsweeper sslmode=disable"),
               ("main", pg.conninfo(user="pgsweeper", dbname="postgres"))]
    return yaml_config(servers, idle_rule("1s"), interval="300ms")


def test_sigterm_mid_poll_exits_0_within_a_second(pg, sweeper, silent_after_setup):
    proc = sweeper.start_daemon(config(pg, silent_after_setup), "--log-target", "stderr")
    # the snapshot statement is the second batch: it is now in flight, unanswered
    assert silent_after_setup.wait_statements(2), "pgsweeper never sent its poll to the fake server"
    victim = pg.connect(application_name="still-enforced")
    pid = victim.info.backend_pid
    assert pg.wait_pid_gone(pid, timeout=5), "a hanging server delayed the healthy one"
    t0 = time.monotonic()
    rc = stop_process(proc, signal.SIGTERM)
    took = time.monotonic() - t0
    assert rc == 0
    assert took < 1.0, f"SIGTERM mid-poll took {took:.2f}s"


def test_hung_poll_times_out_and_reconnects(pg, sweeper, silent_after_setup):
    proc = sweeper.start_daemon(config(pg, silent_after_setup), "--log-target", "stderr")
    assert silent_after_setup.wait_statements(2)
    # the client-side timeout (10 s) drops the connection, backoff reconnects
    with silent_after_setup.received:
        assert silent_after_setup.received.wait_for(lambda: silent_after_setup.connections >= 2, 20), \
            "no reconnect after the poll timed out"
    assert stop_process(proc) == 0
    err = proc.stderr.read()
    lost = [l for l in err.splitlines() if l.startswith("stuck: connection lost")]
    assert len(lost) == 1, err
    assert "timed out waiting for the server" in lost[0], err
