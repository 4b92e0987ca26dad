"""The log path: a stalled journald never blocks the daemon (issue 10, defect
8), and hostile bytes from a server are escaped the same way in every line
(defect 11).

These tests run their own systemd-journald in a private mount namespace (a
tmpfs over /run and /var/log/journal), so stopping it with SIGSTOP cannot
stall anybody else's journald; pgsweeper runs in that namespace through
nsenter(1), and the journal is read back there with journalctl.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from conftest import HOSTILE, HOSTILE_ESCAPED, JOURNALD_BIN, free_tcp_port, slow_factor, stop_process, wait_until
from pgs_helpers import idle_rule, main_server, yaml_config

JOURNALD_CONF = """[Journal]
Storage=volatile
ReadKMSG=no
RateLimitBurst=0
ForwardToSyslog=no
ForwardToWall=no
ForwardToConsole=no
"""

# Mount a tmpfs over /run (the journal socket, the runtime journal) and over
# /var/log/journal, give journald its own configuration, then become it.
NAMESPACE_SETUP = r"""
set -e
conf="$1"
mount --make-rprivate /
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /var/log/journal 2>/dev/null || true
mkdir -p /run/systemd/journal /run/log/journal /run/pgsweeper-test
cp "$conf" /run/pgsweeper-test/journald.conf
mount --bind /run/pgsweeper-test/journald.conf /etc/systemd/journald.conf
exec "$2"
"""


class PrivateJournal:
    def __init__(self, proc):
        self.proc = proc
        self.pid = proc.pid
        self.stopped = False

    @property
    def socket_path(self):
        return f"/proc/{self.pid}/root/run/systemd/journal/socket"

    def nsenter(self, argv):
        return ["nsenter", "--mount", "--target", str(self.pid), "--"] + list(argv)

    def entries(self, **match):
        r = subprocess.run(self.nsenter(["journalctl", "--no-pager", "--all", "-o", "json"]),
                           capture_output=True, timeout=30)
        out = []
        for line in r.stdout.splitlines():
            if line.startswith(b"{"):
                e = json.loads(line)
                if all(field_bytes(e.get(k)) == (v.encode() if isinstance(v, str) else v)
                       for k, v in match.items()):
                    out.append(e)
        return out

    def read(self, timeout=10, min_entries=1, **match):
        deadline = time.monotonic() + timeout
        while True:
            found = self.entries(**match)
            if len(found) >= min_entries or time.monotonic() >= deadline:
                return found
            time.sleep(0.2)

    def stop(self):
        os.kill(self.pid, signal.SIGSTOP)
        self.stopped = True

    def cont(self):
        if self.stopped:
            os.kill(self.pid, signal.SIGCONT)
            self.stopped = False

    def fill_socket_queue(self):
        """Send datagrams until journald's (stopped) socket takes no more."""
        n = 0
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(self.socket_path)
            while n < 100000:
                try:
                    s.send(b"MESSAGE=pgsweeper test filler\nSYSLOG_IDENTIFIER=pgsweeper-filler\n",
                           socket.MSG_DONTWAIT)
                except BlockingIOError:
                    return n
                n += 1
        raise AssertionError("journald's socket queue never filled up")


def field_bytes(value):
    """journalctl -o json gives a field as a string, or as an array of byte
    values when it is not printable UTF-8."""
    if value is None:
        return None
    if isinstance(value, list):
        return bytes(value)
    return value.encode()


@pytest.fixture
def private_journal(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("a private journald in its own mount namespace needs root")
    for tool in ("unshare", "nsenter", "journalctl"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    if not os.access(JOURNALD_BIN, os.X_OK):
        pytest.skip("systemd-journald is not installed")
    conf = tmp_path / "journald.conf"
    conf.write_text(JOURNALD_CONF)
    proc = subprocess.Popen(["unshare", "--mount", "--", "sh", "-c", NAMESPACE_SETUP, "sh",
                             str(conf), JOURNALD_BIN],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    j = PrivateJournal(proc)

    def ready():
        # /proc/PID/root/run is the host's /run until the tmpfs is mounted:
        # wait for the exec of journald (after every mount) and its socket
        with contextlib.suppress(OSError):
            return (os.path.realpath(f"/proc/{proc.pid}/exe") == os.path.realpath(JOURNALD_BIN)
                    and os.path.exists(j.socket_path))
        return False

    try:
        wait_until(lambda: proc.poll() is not None or ready(), 10, what="private journald socket")
        if proc.poll() is not None:
            pytest.skip("cannot start systemd-journald in a private mount namespace: "
                        + proc.stderr.read().decode(errors="replace"))
        assert os.readlink(f"/proc/{proc.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
        marker = uuid.uuid4().hex
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(f"MESSAGE=self-check\nPGSWEEPER_TEST_MARKER={marker}\n".encode(), j.socket_path)
        assert j.read(timeout=10, PGSWEEPER_TEST_MARKER=marker), "the private journal does not work"
        yield j
    finally:
        # never leave a journald stopped, whatever happened
        with contextlib.suppress(ProcessLookupError):
            j.cont()
        stop_process(proc, signal.SIGTERM, timeout=10)


def start_in(journal, sweeper, config_text, *args):
    """pgsweeper in the journal's namespace (nsenter execs it: same pid)."""
    argv = journal.nsenter(sweeper.argv(config_text, args))
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    sweeper.procs.append(p)
    return p


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_idle(pg, n):
    return [pg.connect(application_name=f"stall-{i}") for i in range(n)]


def sweeper_config(pg, max_idle="1s", interval="200ms"):
    return yaml_config([main_server(pg)],
                       idle_rule(max_idle), interval=interval)


def wait_gone(pg, pids, timeout):
    deadline = time.monotonic() + timeout
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        alive = {p for p in alive if pg.pid_alive(p)}
        time.sleep(0.1)
    return alive


def test_stalled_journald_does_not_stop_enforcement(pg, sweeper, private_journal):
    """journald stopped and its socket full: sessions are still terminated,
    and once journald runs again every action entry arrives, once."""
    j = private_journal
    d = start_in(j, sweeper, sweeper_config(pg), "--log-target", "journal")
    assert j.read(timeout=10, _PID=str(d.pid)), "pgsweeper's start entry never reached the journal"
    pids = []
    try:
        j.stop()
        filled = j.fill_socket_queue()
        cpu0, t0 = cpu_seconds(d.pid), time.monotonic()
        # two waves: the first one's entries find the socket full; the daemon
        # must still see and end the second
        for wave in range(2):
            conns = open_idle(pg, 5)
            wave_pids = [c.info.backend_pid for c in conns]
            pids += wave_pids
            left = wait_gone(pg, wave_pids, 10 * slow_factor())
            assert not left, (f"wave {wave}: sessions {sorted(left)} not terminated while journald "
                              f"is stopped (socket filled with {filled} datagrams)")
        busy = (cpu_seconds(d.pid) - cpu0) / (time.monotonic() - t0)
        assert busy < 0.5, f"pgsweeper used {busy:.0%} of a CPU while the journal was stuck (busy loop?)"
        assert d.poll() is None, "pgsweeper exited while journald was stopped"
    finally:
        j.cont()
    got = {}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        entries = j.entries(_PID=str(d.pid), PGSWEEPER_RESULT="terminated")
        got = {}
        for e in entries:
            got.setdefault(int(e["PGSWEEPER_PID"]), []).append(e)
        if set(pids) <= set(got):
            break
        time.sleep(0.2)
    assert set(got) == set(pids), f"terminated entries for {sorted(got)}, sessions {sorted(pids)}"
    assert all(len(v) == 1 for v in got.values()), "an entry arrived twice"
    d.send_signal(signal.SIGTERM)
    _, err = d.communicate(timeout=10)
    assert d.returncode == 0, err.decode(errors="replace")
    # nothing overflowed, so nothing went to stderr instead
    assert b"not take" not in err and b"queue is full" not in err, err.decode(errors="replace")


def test_sigterm_while_journald_is_stalled(pg, sweeper, private_journal):
    """SIGTERM ends the daemon within about a second even though journald
    takes nothing; what it could not send is on stderr, not lost."""
    j = private_journal
    d = start_in(j, sweeper, sweeper_config(pg), "--log-target", "journal")
    assert j.read(timeout=10, _PID=str(d.pid)), "pgsweeper's start entry never reached the journal"
    try:
        j.stop()
        j.fill_socket_queue()
        conns = open_idle(pg, 5)
        pids = [c.info.backend_pid for c in conns]
        left = wait_gone(pg, pids, 10 * slow_factor())
        assert not left, f"sessions {sorted(left)} not terminated while journald is stopped"
        time.sleep(0.3)   # the entries are written (or waiting) by now
        t0 = time.monotonic()
        d.send_signal(signal.SIGTERM)
        try:
            _, err = d.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            d.kill()
            d.communicate()
            pytest.fail("pgsweeper ignored SIGTERM while journald was stopped")
        took = time.monotonic() - t0
    finally:
        j.cont()
    err = err.decode(errors="replace")
    assert d.returncode == 0, err
    assert took < 1.0 * slow_factor(), f"stop took {took:.2f}s"
    for pid in pids:
        assert re.search(rf"^main: terminated pid {pid} \(", err, re.M), \
            f"the entry for pid {pid} is neither in the journal nor on stderr:\n{err}"
    m = re.search(r"the journal did not take (\d+) entries before exit", err)
    assert m and int(m.group(1)) >= len(pids), err


def test_hostile_bytes_escaped_in_line_and_message(pg, sweeper, private_journal, hostile_sessions):
    first, second = hostile_sessions(2, gap=2.5)
    j = private_journal
    conninfo = pg.conninfo(user="pgsweeper", dbname="postgres")
    # stderr: the first session only (idle > 2s; the second is younger)
    cfg = yaml_config([("main", conninfo)], idle_rule("2s"))
    p = subprocess.run(j.nsenter(sweeper.argv(cfg, ["--once", "--log-target", "stderr"])),
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    err = p.stderr.decode("utf-8")   # strict: the line must be valid UTF-8
    lines = [l for l in err.splitlines() if f"terminated pid {first.info.backend_pid} " in l]
    assert len(lines) == 1, err
    assert f"(user {HOSTILE_ESCAPED}, db appdb, " in lines[0], lines[0]
    for bad in ("\x1b", "\x9b", "\u2028", "\ufffd", "\u202e", "\u2066", "\t"):
        assert bad not in err, f"{bad!r} reached stderr: {err!r}"
    assert pg.wait_pid_gone(first.info.backend_pid)

    # the journal: MESSAGE escaped, PGSWEEPER_USER the role's own bytes
    time.sleep(2.2)
    p = subprocess.run(j.nsenter(sweeper.argv(cfg, ["--once", "--log-target", "journal"])),
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    pid = second.info.backend_pid
    got = j.read(timeout=10, PGSWEEPER_PID=str(pid))
    assert len(got) == 1, got
    e = got[0]
    msg = e["MESSAGE"]
    assert isinstance(msg, str), f"MESSAGE is not printable UTF-8: {msg!r}"
    for bad in ("\x1b", "\x9b", "\u2028", "\u202e", "\u2066", "\t", "\n"):
        assert bad not in msg, f"{bad!r} reached MESSAGE: {msg!r}"
    assert f"terminated pid {pid} (user {HOSTILE_ESCAPED}, db appdb, " in msg, msg
    assert field_bytes(e["PGSWEEPER_USER"]) == HOSTILE, e["PGSWEEPER_USER"]
    # an operator's exact match on the role name finds the entry
    r = subprocess.run(j.nsenter([b"journalctl", b"--no-pager", b"-o", b"json",
                                  b"PGSWEEPER_USER=" + HOSTILE]), capture_output=True, timeout=30)
    pids = [json.loads(l).get("PGSWEEPER_PID") for l in r.stdout.splitlines() if l.startswith(b"{")]
    assert str(pid) in pids, r.stdout


def test_libpq_multiline_error_is_one_line(sweeper):
    """"Connection refused\\n\\tIs the server running..." reads as one line
    with a space, not a '?' (issue 11 item 5)."""
    port = free_tcp_port()
    cfg = yaml_config([("down", f"host=127.0.0.1 port={port} dbname=postgres connect_timeout=2")],
                      idle_rule("1h"))
    r = sweeper.run_once(cfg, "--once", "--log-target", "stderr")
    lines = [l for l in r.stderr.splitlines() if "Connection refused" in l]
    assert lines, r.stderr
    assert "Connection refused Is the server running" in lines[0], lines[0]
    assert "?Is" not in r.stderr and "\\x09" not in r.stderr and "\\x0a" not in r.stderr, r.stderr


def log_entries_tool():
    b = os.environ.get("PGSWEEPER_LOG_ENTRIES")
    path = b or str(Path(__file__).resolve().parents[2] / "build" / "tests" / "log-entries")
    if not os.access(path, os.X_OK):
        pytest.fail(f"log-entries test tool not found: {path} (build it, or set PGSWEEPER_LOG_ENTRIES)")
    return path


def run_tool(journal, *args, stalled):
    """Run log-entries in the journal's namespace; with stalled, journald is
    stopped and its socket full while the entries are logged, and resumed
    before the tool flushes. Returns (pid, queued, stdout, stderr)."""
    try:
        if stalled:
            journal.stop()
            journal.fill_socket_queue()
        p = subprocess.Popen(journal.nsenter([log_entries_tool(), *map(str, args)]), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # the tool logs everything before it reads stdin: its first line
        # comes while journald is still stopped
        first = p.stdout.readline()
        m = re.fullmatch(r"queued (\d+)\n", first)
        assert m, first + p.stderr.read()
    finally:
        journal.cont()
    out, err = p.communicate("go\n", timeout=60)
    assert p.returncode == 0, err
    return p.pid, int(m.group(1)), first + out, err


def dropped_metric(out):
    m = re.search(r"^pgsweeper_journal_dropped_total (\d+)$", out, re.M)
    assert m, out
    return int(m.group(1))


QUEUE_MAX = 4096


def test_overflow_drops_noise_first(private_journal):
    """5000 info entries and then 10 decisions while journald is stopped: the
    queue keeps 4096, info entries make room for every decision, and each
    entry that did not fit is on stderr and counted."""
    j = private_journal
    pid, queued, out, err = run_tool(j, 5000, 10, stalled=True)
    assert queued == QUEUE_MAX, out
    assert "loop emptied the queue" in out, out
    dropped = 5010 - QUEUE_MAX
    assert dropped_metric(out) == dropped, out
    assert err.count("the queue is full") == 1, "the overflow is said once, not per drop"
    on_stderr = re.findall(r"^noise: noise (\d+)$", err, re.M)
    assert len(on_stderr) == dropped and "main: terminated" not in err, err[:2000]
    decisions = j.read(timeout=15, min_entries=10, _PID=str(pid), PGSWEEPER_RESULT="terminated")
    assert sorted(int(e["PGSWEEPER_PID"]) for e in decisions) == list(range(1, 11))
    noise = j.read(timeout=15, min_entries=5000 - dropped, _PID=str(pid), PRIORITY="6")
    noise = [e for e in noise if e["MESSAGE"].startswith("noise: ")]
    assert len(noise) == 5000 - dropped
    # the ones in the journal and the ones on stderr are all of them, once
    got = sorted([int(e["MESSAGE"].split()[-1]) for e in noise] + [int(n) for n in on_stderr])
    assert got == list(range(5000))
    back = [e for e in j.entries(_PID=str(pid), PRIORITY="4") if "takes entries again" in e["MESSAGE"]]
    assert len(back) == 1 and f"; {dropped} did not fit" in back[0]["MESSAGE"], back


def test_overflow_of_decisions_goes_to_stderr(private_journal):
    """More decisions than the queue holds: none is lost, the extra ones are
    on stderr and in the drop counter."""
    j = private_journal
    n = QUEUE_MAX + 104
    pid, queued, out, err = run_tool(j, 0, n, stalled=True)
    assert queued == QUEUE_MAX and "loop emptied the queue" in out, out
    assert dropped_metric(out) == 104, out
    on_stderr = [int(x) for x in re.findall(r"^main: terminated pid (\d+) \(", err, re.M)]
    assert len(on_stderr) == 104, err[:2000]
    in_journal = [int(e["PGSWEEPER_PID"]) for e in
                  j.read(timeout=20, min_entries=QUEUE_MAX, _PID=str(pid), PGSWEEPER_RESULT="terminated")]
    assert len(in_journal) == QUEUE_MAX
    assert sorted(in_journal + on_stderr) == list(range(1, n + 1)), "an entry was lost or doubled"


def test_entry_larger_than_a_datagram(private_journal):
    """An entry too large for the socket goes through a sealed memfd."""
    j = private_journal
    with open("/proc/sys/net/core/wmem_max") as f:
        size = int(f.read()) * 2 + 100000   # more than SO_SNDBUF can ever be
    pid, queued, out, err = run_tool(j, 0, 0, size, stalled=False)
    assert queued == 0 and err == "", err
    got = j.read(timeout=10, _PID=str(pid), PRIORITY="5")
    assert len(got) == 1, got
    assert got[0]["MESSAGE"] == "big: " + "b" * size
