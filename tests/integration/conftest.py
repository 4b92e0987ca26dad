"""pytest harness for pgsweeper integration tests.

Fixtures
--------
pg_cluster (session)  a throw-away PostgreSQL cluster started from the
                      PostgreSQL binaries (initdb + postgres as a direct child).
pg (function)         the same cluster; connections opened through it during a
                      test are closed when the test ends. pg.major is the
                      server's major version (13..18).
start_cluster(settings)  not a fixture: a cluster of its own with other
                      postgres settings (e.g. a small max_connections), for a
                      module fixture; the caller stops it.

The server binaries come from $PGSWEEPER_PG_BINDIR (default Debian's
/usr/lib/postgresql/15/bin); every test id ends in the major, e.g. [pg13], and
@pytest.mark.min_pg(14) skips a test, with the reason, on an older server.
journal (session)     a systemd-journald to write to and read back from (the
                      running one, or one started here when running as root).
sweeper (function)    writes a YAML config into tmp_path and runs the binary
                      ($PGSWEEPER_BIN, default <repo>/build/pgsweeper).
hostile_sessions (function)  sessions of a role renamed to HOSTILE (bytes
                      every output must escape, HOSTILE_ESCAPED).

Helpers that are not fixtures (configurations, events, the guarded action)
are in pgs_helpers.py.

Run with /usr/bin/python3 -m pytest -v -p no:cacheprovider tests/integration/<file>
"""

import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

try:
    import psycopg
except ImportError:  # pragma: no cover - depends on the machine
    psycopg = None

REPO = Path(__file__).resolve().parents[2]
# THE variable naming the server under test (tools/test sets it for each of
# 13..18); Debian's 15 when unset. PGSWEEPER_PG_MAJOR, when set, is the major
# that directory must hold: a mismatch fails the session instead of testing
# the wrong server under another name.
PG_BINDIR_DEFAULT = "/usr/lib/postgresql/15/bin"
PG_BINDIR = os.environ.get("PGSWEEPER_PG_BINDIR") or PG_BINDIR_DEFAULT
PG_MAJOR_EXPECTED = os.environ.get("PGSWEEPER_PG_MAJOR", "")
JOURNAL_SOCKET = "/run/systemd/journal/socket"
JOURNALD_BIN = "/lib/systemd/systemd-journald"

# True when PGSWEEPER_SLOW=1 (sanitizer / valgrind builds): timing bounds
# are relaxed, never dropped.
SLOW = os.environ.get("PGSWEEPER_SLOW", "") not in ("", "0")


def slow_factor():
    return 3.0 if SLOW else 1.0


# --------------------------------------------------------------------------
# generic helpers
# --------------------------------------------------------------------------

def free_tcp_port():
    """A TCP port on 127.0.0.1 that nothing uses right now, below the
    ephemeral range (32768-60999 on Linux): a port the kernel hands out (bind
    to 0) is also the local port of the next outgoing connection, and the
    many parallel tests' connections took one from a cluster about to listen
    on it ("could not bind ... Address already in use"; seen once in CI)."""
    import random
    for _ in range(200):
        port = random.randrange(20000, 32000)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PortTaken(RuntimeError):
    """postgres could not listen on its port: another process took it meanwhile."""


def wait_until(predicate, timeout, interval=0.05, what="condition"):
    """Poll predicate() until it returns a truthy value; return it or raise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def stop_process(proc, sig=signal.SIGTERM, timeout=10):
    """Stop exactly this Popen child: sig, wait, SIGKILL fallback."""
    if proc.poll() is not None:
        return proc.returncode
    try:
        proc.send_signal(sig)
    except ProcessLookupError:
        pass
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=10)


def _find_pg_bindir():
    d = PG_BINDIR
    if os.access(os.path.join(d, "postgres"), os.X_OK) and os.access(os.path.join(d, "initdb"), os.X_OK):
        return d
    return None


_server_version = None


def pg_server_version():
    """(major, "13.23") of the postgres binary under test, None if there is none."""
    global _server_version
    if _server_version is None:
        if _find_pg_bindir() is None:
            return None
        out = subprocess.run([os.path.join(PG_BINDIR, "postgres"), "--version"],
                             capture_output=True, text=True, timeout=30).stdout
        m = re.search(r"\(PostgreSQL\) (\d+)(?:\.(\d+))?", out)
        if m is None:
            raise RuntimeError(f"{PG_BINDIR}/postgres --version printed {out!r}")
        _server_version = (int(m.group(1)), m.group(1) + "." + (m.group(2) or "0"))
    return _server_version


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "min_pg(major): the test needs PostgreSQL MAJOR or newer; "
        "skipped with a reason on older servers")


def pytest_report_header(config):
    v = pg_server_version()
    return f"PostgreSQL {v[1] if v else 'not found'} from {PG_BINDIR}"


def pytest_collection_modifyitems(config, items):
    """Every test id carries the server major ([pg13]); tests marked min_pg(N)
    are skipped, with the reason, on an older server."""
    v = pg_server_version()
    if v is None:
        return
    for item in items:
        item._nodeid += f"[pg{v[0]}]"
        for mark in item.iter_markers("min_pg"):
            if v[0] < int(mark.args[0]):
                item.add_marker(pytest.mark.skip(
                    reason=f"needs PostgreSQL {mark.args[0]} or newer (server under test: {v[1]})"))


# --------------------------------------------------------------------------
# PostgreSQL cluster
# --------------------------------------------------------------------------

class PgCluster:
    """A private PostgreSQL cluster owned by this test session."""

    def __init__(self, bindir, settings=None):
        self.bindir = bindir
        # -c NAME=VALUE of the postgres command line that replace or join the
        # defaults of start() (None: the defaults, as every file but a few uses)
        self.settings = dict(settings or {})
        self.as_root = os.geteuid() == 0
        self.base = Path(tempfile.mkdtemp(prefix="pgsweeper-it-"))
        self.datadir = self.base / "data"
        self.host = str(self.base / "sock")   # Unix socket directory
        self.port = free_tcp_port()
        self.logfile = self.base / "postgres.log"
        self.proc = None
        self._conns = []          # every connection opened via connect()
        self._test_conns = []     # those opened during the current test
        self._lock = threading.Lock()
        self._admin = None

    # -- lifecycle ---------------------------------------------------------

    def _run_as_owner(self, argv, **kw):
        if self.as_root:
            argv = ["runuser", "-u", "postgres", "--"] + argv
        return subprocess.run(argv, check=False, capture_output=True, text=True,
                              timeout=120, **kw)

    def start(self):
        os.mkdir(self.host)
        if self.as_root:
            pw = pwd.getpwnam("postgres")
            # mkdtemp makes the dir 0700; postgres must be able to enter it.
            for p in (self.base, Path(self.host)):
                os.chown(p, pw.pw_uid, pw.pw_gid)
            os.chmod(self.base, 0o755)
            # make every parent traversable (normally /tmp already is)
            for parent in self.base.parents:
                mode = os.stat(parent).st_mode
                if mode & 0o001 == 0:
                    os.chmod(parent, mode | 0o001)
        r = self._run_as_owner([os.path.join(self.bindir, "initdb"), "-D",
                                str(self.datadir), "-A", "trust", "-U", "postgres",
                                "-E", "UTF8", "--no-locale", "--no-sync"])
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")

        argv = [os.path.join(self.bindir, "postgres"), "-D", str(self.datadir),
                "-k", self.host, "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1",
                "-c", "max_connections=600",      # test_inflight opens 450 victims
                "-c", "fsync=off",
                "-c", "synchronous_commit=off",
                "-c", "full_page_writes=off",
                "-c", "shared_buffers=16MB",
                "-c", "logging_collector=off",
                "-c", "log_min_messages=warning",
                # pg_stat_activity.query must not be truncated weirdly
                "-c", "track_activity_query_size=4096"]
        for name, value in self.settings.items():
            opt = f"{name}={value}"
            for i, arg in enumerate(argv):
                if arg.startswith(name + "="):
                    argv[i] = opt
                    break
            else:
                argv += ["-c", opt]
        kw = {}
        if self.as_root:
            pw = pwd.getpwnam("postgres")
            kw = dict(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
        self._log_fh = open(self.logfile, "ab")
        self._argv, self._kw = argv, kw
        for attempt in range(5):
            try:
                self._launch()
                break
            except PortTaken:
                if attempt == 4:
                    raise
                # the port went between free_tcp_port() and postgres' bind: another one
                self.port = free_tcp_port()
                self._argv[self._argv.index("-p") + 1] = str(self.port)
        for stmt in ("CREATE ROLE pgsweeper LOGIN",
                     "GRANT pg_monitor, pg_signal_backend TO pgsweeper",
                     "CREATE ROLE app LOGIN",
                     "CREATE ROLE other LOGIN",
                     "CREATE DATABASE appdb OWNER app"):
            self._admin.execute(stmt)

    def _launch(self):
        # Direct child (no pg_ctl, no runuser in between): self.proc.pid is the
        # postmaster pid, so teardown stops exactly this server.
        log_start = self.logfile.stat().st_size if self.logfile.exists() else 0
        self.proc = subprocess.Popen(self._argv, stdin=subprocess.DEVNULL,
                                     stdout=self._log_fh, stderr=subprocess.STDOUT,
                                     cwd=str(self.base), start_new_session=True, **self._kw)
        deadline = time.monotonic() + 30
        last_err = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.logfile.read_text(errors="replace")
                if "Address already in use" in log[log_start:]:
                    raise PortTaken(f"port {self.port} taken:\n" + log[log_start:])
                raise RuntimeError(f"postgres exited with {self.proc.returncode}:\n" + log)
            try:
                c = psycopg.connect(self.conninfo(user="postgres"), autocommit=True,
                                    connect_timeout=2)
                c.execute("SELECT 1")
                self._admin = c
                break
            except psycopg.OperationalError as e:
                last_err = e
                time.sleep(0.1)
        else:
            raise RuntimeError(f"postgres not ready after 30 s: {last_err}\n"
                               + self.logfile.read_text(errors="replace"))

    def restart(self, mode="fast", down_for=0.0):
        """Stop the postmaster (fast: SIGINT, immediate: SIGQUIT), stay down
        for down_for seconds, start it again on the same port and socket."""
        with contextlib.suppress(Exception):
            self._admin.close()
        self._admin = None
        stop_process(self.proc, signal.SIGINT if mode == "fast" else signal.SIGQUIT, timeout=30)
        time.sleep(down_for)
        self._launch()

    def stop(self):
        for c in self._conns:
            with contextlib.suppress(Exception):
                c.close()
        self._conns.clear()
        if self._admin is not None:
            with contextlib.suppress(Exception):
                self._admin.close()
        if self.proc is not None:
            # SIGINT = fast shutdown; SIGKILL fallback after 30 s
            stop_process(self.proc, signal.SIGINT, timeout=30)
            self._log_fh.close()
        shutil.rmtree(self.base, ignore_errors=True)

    # -- connections -------------------------------------------------------

    def conninfo(self, user="postgres", dbname="postgres", host=None, port=None,
                 **extra):
        parts = {"host": host or self.host, "port": port or self.port,
                 "dbname": dbname, "user": user}
        parts.update(extra)
        return " ".join(f"{k}={v}" for k, v in parts.items())

    def connect(self, user="app", dbname="appdb", application_name=None,
                autocommit=True, host=None):
        kw = {}
        if application_name is not None:
            kw["application_name"] = application_name
        conn = psycopg.connect(self.conninfo(user=user, dbname=dbname, host=host),
                               autocommit=autocommit, connect_timeout=10, **kw)
        with self._lock:
            self._conns.append(conn)
            self._test_conns.append(conn)
        return conn

    def end_test(self):
        """Close what the finished test opened, so tests do not interfere."""
        with self._lock:
            conns, self._test_conns = self._test_conns, []
        for c in conns:
            with contextlib.suppress(Exception):
                c.close()
            with contextlib.suppress(ValueError):
                self._conns.remove(c)
        # wait until those backends are really gone from pg_stat_activity
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            row = self.admin_query(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() "
                "AND usename IN ('app', 'other', 'pgsweeper')")
            if row[0][0] == 0:
                break
            time.sleep(0.05)

    # -- introspection (as superuser) ---------------------------------------

    def admin_query(self, sql, params=None):
        with self._lock:
            return self._admin.execute(sql, params).fetchall()

    def backend_pids_alive(self, user=None):
        """pids of client backends (optionally of one role), excluding ours."""
        sql = ("SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' "
               "AND pid <> pg_backend_pid()")
        params = []
        if user is not None:
            sql += " AND usename = %s"
            params.append(user)
        return {r[0] for r in self.admin_query(sql, params)}

    def sweeper_polled(self, user="pgsweeper"):
        """A backend of that role has run pgsweeper's snapshot at least once
        (so the daemon is past its set-up and counts as connected)."""
        return bool(self.admin_query(
            "SELECT 1 FROM pg_stat_activity WHERE backend_type = 'client backend' AND usename = %s "
            "AND query LIKE %s", (user, "%pg_stat_get_activity(NULL)%")))

    def pid_alive(self, pid):
        return bool(self.admin_query(
            "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)))

    def activity(self, pid):
        rows = self.admin_query(
            "SELECT pid, usename, datname, application_name, state, backend_type "
            "FROM pg_stat_activity WHERE pid = %s", (pid,))
        return rows[0] if rows else None

    def wait_pid_gone(self, pid, timeout=5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.pid_alive(pid):
                return True
            time.sleep(0.05)
        return False


def start_cluster(settings=None):
    """A started PgCluster of the server under test (skips or fails the
    test like pg_cluster when there is none); settings as PgCluster's.
    The caller stops it."""
    if psycopg is None:
        pytest.skip("psycopg (3) is not installed for this python")
    bindir = _find_pg_bindir()
    if bindir is None:
        if os.environ.get("PGSWEEPER_PG_BINDIR"):
            pytest.fail(f"PGSWEEPER_PG_BINDIR={PG_BINDIR} holds no initdb and postgres")
        pytest.skip(f"PostgreSQL server binaries (initdb, postgres) not found in {PG_BINDIR}")
    major, version = pg_server_version()
    if PG_MAJOR_EXPECTED and str(major) != PG_MAJOR_EXPECTED:
        pytest.fail(f"PGSWEEPER_PG_MAJOR={PG_MAJOR_EXPECTED} but {bindir}/postgres is {version}")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root but there is no 'postgres' OS user for initdb")
    cluster = PgCluster(bindir, settings)
    cluster.major, cluster.version = major, version
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="session")
def pg_cluster():
    cluster = start_cluster()
    yield cluster
    cluster.stop()


@pytest.fixture
def pg(pg_cluster):
    yield pg_cluster
    pg_cluster.end_test()


# A role name with a right-to-left override (U+202E), a newline, ESC, a C1
# CSI (U+009B), an invalid byte, a line separator (U+2028), a backslash, a
# left-to-right isolate (U+2066), quotes, a tab and the text \x41; and how
# pgsweeper shows it in every line (stderr, MESSAGE, --explain). PostgreSQL
# itself replaces such bytes in application_name, so they reach
# pg_stat_activity through the role name.
HOSTILE = b"h\xe2\x80\xae\nE\x1b[31m\xc2\x9b\xff\xe2\x80\xa8\\z\xe2\x81\xa6\"'\t\\x41"
HOSTILE_ESCAPED = "h\\u202e\\x0aE\\x1b[31m\\xc2\\x9b\\xff\\u2028\\\\z\\u2066\"'\\x09\\\\x41"


@pytest.fixture
def hostile_sessions(pg):
    """hostile_sessions(n=1, gap=0, application_name=None): n idle sessions
    on appdb, gap seconds apart, of a fresh role then renamed to HOSTILE
    (invalid UTF-8 is only accepted from a SQL_ASCII database;
    pg_stat_activity shows the new name). Returns the connections, oldest
    first; at the end of the test they are closed and the role dropped. Once
    per test (there is one HOSTILE)."""
    made = []

    def make(n=1, gap=0.0, application_name=None):
        assert not made, "hostile_sessions once per test"
        plain = "hostile_" + uuid.uuid4().hex[:8]
        su = pg.connect(user="postgres", dbname="postgres")
        su.execute(f"CREATE ROLE {plain} LOGIN")
        if not su.execute("SELECT 1 FROM pg_database WHERE datname = 'sqlascii'").fetchall():
            su.execute("CREATE DATABASE sqlascii ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' "
                       "TEMPLATE template0")
        conns = []
        for i in range(n):
            if i:
                time.sleep(gap)
            conns.append(pg.connect(user=plain, dbname="appdb", application_name=application_name))
        admin = pg.connect(user="postgres", dbname="sqlascii")
        admin.execute(b'ALTER ROLE ' + plain.encode() + b' RENAME TO "' + HOSTILE.replace(b'"', b'""') + b'"')
        made.append((conns, admin))
        return conns

    yield make
    for conns, admin in made:
        for c in conns:
            with contextlib.suppress(Exception):
                c.close()
        with contextlib.suppress(Exception):
            admin.execute(b'DROP ROLE "' + HOSTILE.replace(b'"', b'""') + b'"')


# --------------------------------------------------------------------------
# systemd journal
# --------------------------------------------------------------------------

def _journal_socket_alive():
    if not os.path.exists(JOURNAL_SOCKET):
        return False
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        s.connect(JOURNAL_SOCKET)
        return True
    except OSError:
        return False
    finally:
        s.close()


class Journal:
    def __init__(self, directory=None):
        self.directory = directory

    def _base(self):
        argv = ["journalctl", "--no-pager"]
        if self.directory:
            argv += ["--directory", self.directory]
        return argv

    def cursor(self):
        """Cursor of the newest entry (None if the journal is empty)."""
        r = subprocess.run(self._base() + ["-o", "json", "-n", "1"],
                           capture_output=True, text=True, timeout=30)
        for line in r.stdout.splitlines():
            line = line.strip()
            if line.startswith("{"):
                return json.loads(line).get("__CURSOR")
        return None

    def entries(self, match_fields=None, after_cursor=None):
        """Entries matching every FIELD=value (after the cursor, if given).

        journalctl 252 returns nothing for --after-cursor combined with
        FIELD=value matches, so with a cursor the matching is done here."""
        match = {k: str(v) for k, v in (match_fields or {}).items()}
        argv = self._base() + ["-o", "json"]
        if after_cursor:
            argv += ["--after-cursor", after_cursor]
        else:
            argv += [f"{k}={v}" for k, v in match.items()]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        out = []
        for line in r.stdout.splitlines():
            line = line.strip()
            if line.startswith("{"):
                e = json.loads(line)
                if all(e.get(k) == v for k, v in match.items()):
                    out.append(e)
        return out

    def read(self, match_fields, timeout=10, after_cursor=None, min_entries=1):
        """Poll journalctl until >= min_entries entries match; return them."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.entries(match_fields, after_cursor)
            if len(found) >= min_entries or time.monotonic() >= deadline:
                return found
            time.sleep(0.2)

    def send(self, **fields):
        """Write one entry with the native protocol (like sd_journal_send)."""
        payload = "".join(f"{k}={v}\n" for k, v in fields.items()).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(payload, JOURNAL_SOCKET)


@pytest.fixture(scope="session")
def journal():
    proc = None
    created_dirs = []
    if not _journal_socket_alive():
        if os.geteuid() != 0:
            pytest.skip("no systemd-journald is running and starting one needs root")
        if not os.access(JOURNALD_BIN, os.X_OK) or shutil.which("journalctl") is None:
            pytest.skip("systemd-journald / journalctl not installed")
        for d in ("/run/systemd/journal", "/run/log", "/run/log/journal"):
            if not os.path.isdir(d):
                created_dirs.append(d)
        os.makedirs("/run/systemd/journal", exist_ok=True)
        proc = subprocess.Popen([JOURNALD_BIN], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        try:
            wait_until(lambda: proc.poll() is not None or _journal_socket_alive(),
                       10, what="systemd-journald socket")
        except AssertionError:
            stop_process(proc)
            raise
        if proc.poll() is not None:
            raise RuntimeError("systemd-journald exited with %s: %s"
                               % (proc.returncode, proc.stderr.read()))
    j = Journal()
    # self-check: an entry written now must be readable back
    marker = uuid.uuid4().hex
    j.send(MESSAGE=f"pgsweeper test harness self-check {marker}",
           SYSLOG_IDENTIFIER="pgsweeper-tests", PGSWEEPER_TEST_MARKER=marker)
    got = j.read({"PGSWEEPER_TEST_MARKER": marker}, timeout=10)
    if not got:
        if proc is not None:
            stop_process(proc)
        raise RuntimeError("journalctl does not show an entry written to "
                           f"{JOURNAL_SOCKET}; journal harness is broken")
    yield j
    if proc is not None:
        stop_process(proc, signal.SIGTERM, timeout=10)
        for d in reversed(created_dirs):
            shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------
# the binary
# --------------------------------------------------------------------------

def sweeper_binary():
    b = os.environ.get("PGSWEEPER_BIN")
    return Path(b) if b else REPO / "build" / "pgsweeper"


class DaemonProcess(subprocess.Popen):
    """A daemon whose stdout and stderr go to files, not pipes: a storm
    writes more than a pipe holds (64 KiB) before a test reads it, and a
    daemon blocked on a full pipe is the test's doing, not the daemon's.
    .stdout and .stderr read those files: read them once it has exited;
    communicate() waits for the exit, then reads them."""

    def __init__(self, argv, stem):
        out_path, err_path = f"{stem}.stdout", f"{stem}.stderr"
        with open(out_path, "w") as out, open(err_path, "w") as err:
            super().__init__(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        self.stdout, self.stderr = open(out_path), open(err_path)

    def communicate(self, input=None, timeout=None):
        self.wait(timeout)
        return self.stdout.read(), self.stderr.read()


class Sweeper:
    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.binary = sweeper_binary()
        self.procs = []
        self._n = 0

    def write_config(self, text):
        self._n += 1
        path = self.tmp_path / f"pgsweeper-{self._n}.yaml"
        path.write_text(text)
        return path

    def argv(self, config_text, extra_args):
        path = self.write_config(config_text)
        return [str(self.binary), "-c", str(path), *extra_args]

    def run_once(self, config_text, *extra_args, timeout=60):
        """Run to completion; returns CompletedProcess with an extra .pid."""
        argv = self.argv(config_text, extra_args)
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            raise AssertionError(f"pgsweeper did not finish within {timeout}s: "
                                 f"{argv}\nstdout:\n{out}\nstderr:\n{err}")
        cp = subprocess.CompletedProcess(argv, p.returncode, out, err)
        cp.pid = p.pid
        return cp

    def start_daemon(self, config_text, *extra_args):
        """A running daemon (DaemonProcess): its output goes to files."""
        argv = self.argv(config_text, extra_args)
        p = DaemonProcess(argv, self.tmp_path / f"pgsweeper-{self._n}")
        self.procs.append(p)
        return p

    def cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            with contextlib.suppress(Exception):
                p.communicate(timeout=10)


@pytest.fixture
def sweeper(tmp_path):
    s = Sweeper(tmp_path)
    if not (s.binary.is_file() and os.access(s.binary, os.X_OK)):
        pytest.fail(f"pgsweeper binary not found or not executable: {s.binary} "
                    "(build it, or set PGSWEEPER_BIN)")
    yield s
    s.cleanup()


# --------------------------------------------------------------------------
# session outcome: all skipped -> 77 (meson "skipped")
# --------------------------------------------------------------------------

_outcomes = {}


def pytest_runtest_logreport(report):
    prev = _outcomes.get(report.nodeid)
    if report.skipped:
        state = "skipped"
    elif report.failed:
        state = "ran"
    elif report.when == "call":
        state = "ran"
    else:
        return
    if prev != "ran":
        _outcomes[report.nodeid] = state


def pytest_sessionfinish(session, exitstatus):
    if session.testscollected and int(exitstatus) == 0 and _outcomes \
            and len(_outcomes) == session.testscollected \
            and all(v == "skipped" for v in _outcomes.values()):
        session.exitstatus = 77
