"""A password in a conninfo never reaches any output (issue 10, defect 4).

Every conninfo variant below holds a marker password. The valid ones are
servers of one configuration: some connect to the real cluster, some are
refused (a port nothing listens on), some fail authentication (a role with a
SCRAM password, given the wrong one). The broken ones are servers of another
configuration that cannot load. The marker is then searched for in every
output: --check, --dump, start-up, stderr at -v, every field of every journal
entry (read back with journalctl -o json), the metrics file, every STATUS=,
/proc/PID/cmdline, and the "reload failed" entries after a SIGHUP that
installs the broken file.
"""

import json
import os
import signal
import subprocess
import time
import urllib.parse
import uuid

import pytest

from conftest import free_tcp_port, stop_process, wait_until
from pgs_helpers import yaml_config
from test_service import NotifySocket

MARKER = "S3cr3tXYZ" + uuid.uuid4().hex[:8]
# the marker %-encoded byte for byte, as a URI may carry it
MARKER_PCT = "".join(f"%{b:02X}" for b in MARKER.encode())
FORMS = (MARKER, MARKER_PCT, MARKER_PCT.lower(), MARKER.lower())

SCRAM_ROLE = "secretuser"


def valid_variants(pg):
    """(name, conninfo, expected outcome) that load; each holds MARKER."""
    sock, port, free = pg.host, pg.port, free_tcp_port()
    tcp = f"host=127.0.0.1 port={port} dbname=postgres"
    uri = f"127.0.0.1:{port}/postgres"
    m = MARKER
    return [
        ("kv-plain", f"host={sock} port={port} user=pgsweeper dbname=postgres password={m}", "up"),
        ("kv-spaces", f"{tcp} user=pgsweeper password='{m} with spaces'", "up"),
        ("kv-quote-backslash", f"{tcp} user=pgsweeper password='{m}\\' \\\\ \"x'", "up"),
        ("kv-dquote", f'{tcp} user=pgsweeper password={m}"x', "up"),
        ("kv-percent", f"{tcp} user=pgsweeper password=%{m}%", "up"),
        ("kv-dup-first", f"password={m} {tcp} user=pgsweeper password=decoy", "up"),
        ("kv-dup-last", f"password=decoy {tcp} user=pgsweeper password={m}", "up"),
        ("kv-options-decoy", f"{tcp} user=pgsweeper options='-c application_name=password=decoy' password={m}", "up"),
        ("kv-options", f"{tcp} user=pgsweeper options='-c password={m}'", "fail"),
        ("kv-options-escaped", f"{tcp} user=pgsweeper options=-c\\ password={m}", "fail"),
        ("kv-sslpassword", f"{tcp} user=pgsweeper sslmode=disable sslpassword={m}", "up"),
        ("uri-plain", f"postgresql://pgsweeper:{m}@{uri}", "up"),
        ("uri-short", f"postgres://pgsweeper:{m}@{uri}", "up"),
        ("uri-encoded", f"postgresql://pgsweeper:{MARKER_PCT}@{uri}", "up"),
        ("uri-query", f"postgresql://pgsweeper@{uri}?password={m}", "up"),
        ("uri-query-encoded", f"postgresql://pgsweeper@{uri}?password={MARKER_PCT}", "up"),
        ("uri-only-password", f"postgresql://:{m}@{uri}?user=pgsweeper", "up"),
        ("uri-dquote", f'postgresql://pgsweeper:{m}"x@{uri}', "up"),
        ("uri-options",
         f"postgresql://pgsweeper:{m}@{uri}?options=-c%20password%3D{m}", "fail"),
        ("refused-kv", f"host=127.0.0.1 port={free} user=pgsweeper password={m}", "fail"),
        ("refused-uri", f"postgresql://pgsweeper:{m}@127.0.0.1:{free}/postgres", "fail"),
        ("refused-multihost",
         f"postgresql://pgsweeper:{m}@127.0.0.1:{free},127.0.0.1:{free}/postgres", "fail"),
        ("refused-ipv6", f"postgresql://pgsweeper:{m}@[::1]:{free}/postgres", "fail"),
        ("wrong-password-kv", f"host=127.0.0.1 port={port} user={SCRAM_ROLE} dbname=postgres password={m}", "fail"),
        ("wrong-password-uri", f"postgresql://{SCRAM_ROLE}:{m}@{uri}", "fail"),
        ("wrong-password-socket", f"host={sock} port={port} user={SCRAM_ROLE} dbname=postgres password={m}", "fail"),
    ]


def broken_variants():
    """Conninfo strings libpq cannot parse; each holds MARKER."""
    m = MARKER
    return [
        ("uri-dquote-ipv6", f'postgresql://u:{m}"@[::1/db'),
        ("uri-dquote-before", f'postgresql://u:pa"{m}@[::1/db'),
        ("uri-ipv6-open", f"postgresql://u:{m}@[::1/db"),
        ("uri-ipv6-empty", f"postgresql://u:{m}@[]/db"),
        ("uri-dquote-param", f'postgresql://u:{m}@h/db?x"y=1'),
        ("uri-marker-param", f"postgresql://u:{m}@h/db?{m}=1"),
        ("uri-param-no-equals", f"postgresql://u:{m}@h/db?password"),
        ("uri-param-two-equals", f"postgresql://u@h/db?password={m}=x"),
        ("uri-bad-escape", f"postgresql://u:{m}%zz@h/db"),
        ("uri-nul-escape", f"postgresql://u:{m}%00@h/db"),
        ("uri-query-marker-key", f"postgresql://u@h/db?password={m}&{m}=1"),
        ("kv-marker-as-key", f"password={m} {m}=1"),
        ("kv-marker-no-equals", f"password={m} {m}"),
        ("kv-spaced-marker", f"password = {m} {m}"),
        ("kv-unterminated", f"password='{m}"),
        ("kv-unterminated-escape", f"password='{m}\\'"),
        ("kv-marker-alone", m),
        ("kv-broken-after", f"host=x password={m} port"),
        ("kv-broken-before", f"bogus password={m}"),
        ("kv-unknown-before", f"nonsense=1 password={m}"),
        ("kv-dquote-broken", f'password="{m}" "x'),
        ("uri-raw-at", f"postgresql://pgsweeper:{m}@x@127.0.0.1:5432/postgres"),
        ("uri-raw-slash", f"postgresql://pgsweeper:pa/{m}@127.0.0.1:5432/postgres"),
        ("uri-raw-slash-digits", f"postgresql://pgsweeper:12/{m}@127.0.0.1:5432/postgres"),
        ("uri-bad-port", f"postgresql://pgsweeper:{m}@127.0.0.1:54x/postgres"),
        ("kv-port-marker", f"host=127.0.0.1 port={m} password={m}"),
    ]


# every server of these configurations: one rule that ends nothing here
RULES = "      - name: idle\n        max_idle: 1h\n"


def leaks(text):
    return [f for f in FORMS if f in text]


def assert_clean(text, where):
    found = leaks(text)
    assert not found, f"the password leaked into {where}: {found}\n{text}"


def journal_text(journal, cursor):
    """Every field of every entry after cursor, binary fields decoded."""
    out = []
    argv = ["journalctl", "--no-pager", "-o", "json"]
    if cursor:
        argv += ["--after-cursor", cursor]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    for line in r.stdout.splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        for k, v in entry.items():
            values = v if isinstance(v, list) and v and not isinstance(v[0], int) else [v]
            for one in values:
                if isinstance(one, list):       # a binary field: byte values
                    one = bytes(one).decode("latin-1")
                out.append(f"{k}={one}")
    return "\n".join(out)


@pytest.fixture(scope="module")
def scram_role(pg_cluster):
    """A role that needs a SCRAM password over TCP and the socket."""
    pg = pg_cluster

    def execute(sql):
        with pg._lock:
            pg._admin.execute(sql)

    execute("SET password_encryption = 'scram-sha-256'")
    execute(f"DROP ROLE IF EXISTS {SCRAM_ROLE}")
    execute(f"CREATE ROLE {SCRAM_ROLE} LOGIN PASSWORD 'the-right-one'")
    hba = pg.datadir / "pg_hba.conf"
    old = hba.read_text()
    hba.write_text(f"local all {SCRAM_ROLE} scram-sha-256\n"
                   f"host all {SCRAM_ROLE} 127.0.0.1/32 scram-sha-256\n" + old)
    pg.admin_query("SELECT pg_reload_conf()")
    # the role really needs its password now
    import psycopg
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(pg.conninfo(user=SCRAM_ROLE, host="127.0.0.1", password="wrong"), connect_timeout=5)
    yield SCRAM_ROLE
    hba.write_text(old)
    pg.admin_query("SELECT pg_reload_conf()")


def run(sweeper, path, *args):
    return subprocess.run([str(sweeper.binary), "-c", str(path), *args],
                          capture_output=True, text=True, timeout=30)


def test_check_and_dump_of_loadable_conninfos(pg, scram_role, sweeper):
    good = sweeper.write_config(yaml_config(valid_variants(pg), RULES, interval="300ms"))

    r = run(sweeper, good, "--check")
    assert r.returncode == 0, r.stderr
    assert_clean(r.stdout + r.stderr, "--check of the valid variants")

    r = run(sweeper, good, "--dump")
    assert r.returncode == 0, r.stderr
    assert_clean(r.stdout + r.stderr, "--dump")
    assert r.stdout.count("password='***'") >= 20, r.stdout   # the dump did show the servers


def test_broken_conninfos_are_never_echoed(sweeper):
    bad_variants = broken_variants()
    bad = sweeper.write_config(yaml_config(bad_variants, RULES, interval="300ms"))

    # one variant per file first: the failure names the variant
    for name, conninfo in bad_variants:
        one = sweeper.write_config(yaml_config([(name, conninfo)], RULES, interval="300ms"))
        r = run(sweeper, one, "--check")
        assert r.returncode == 78, (name, r.stderr)
        assert_clean(r.stdout + r.stderr, f"--check of {name}")

    for extra in (["--check"], ["--dump"], ["-v", "--log-target", "stderr"], ["-v", "--once"]):
        r = run(sweeper, bad, *extra)
        assert r.returncode == 78, (extra, r.stdout, r.stderr)
        assert_clean(r.stdout + r.stderr, f"{extra} of the broken variants")
        errors = [line for line in r.stderr.splitlines() if ": error: " in line]
        # one error per broken conninfo, each at its value's line:column
        assert len(errors) == len(bad_variants), r.stderr
        for i, line in enumerate(errors):
            assert line.startswith(f"{bad}:{4 + 5 * i}:15: error: libpq "), line


def daemon(sweeper, path, extra, env):
    argv = [str(sweeper.binary), "-c", str(path), "-v", *extra]
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    sweeper.procs.append(p)
    return p


@pytest.mark.parametrize("target", ["stderr", "journal"])
def test_running_daemon_never_shows_the_password(pg, scram_role, sweeper, journal, tmp_path, target):
    variants = valid_variants(pg)
    metrics = tmp_path / "pgsweeper.prom"
    conf = sweeper.write_config(yaml_config(variants, RULES, interval="300ms", top=f"metrics_file: {metrics}\n"))
    broken = yaml_config(broken_variants(), RULES, interval="300ms")
    notify = NotifySocket(tmp_path / "notify")
    cursor = journal.cursor()
    env = dict(os.environ, NOTIFY_SOCKET=notify.path)
    try:
        proc = daemon(sweeper, conf, ["--log-target", target], env)
        notify.wait_for("READY")
        n_up = sum(1 for _, _, outcome in variants if outcome == "up")
        # every server that should connect did, and the others failed at least once
        try:
            wait_until(lambda: len(pg.backend_pids_alive("pgsweeper")) >= n_up, 15,
                       what=f"{n_up} pgsweeper connections")
        except AssertionError:
            stop_process(proc)
            raise AssertionError(f"not every server connected:\n{proc.stderr.read()}")
        wait_until(lambda: metrics.exists() and "pgsweeper_server_up" in metrics.read_text(), 10,
                   what="the metrics file")
        time.sleep(1.5)        # failures, retries and STATUS= updates
        cmdline = open(f"/proc/{proc.pid}/cmdline", "rb").read().decode("latin-1")

        # a reload with the broken variants fails and keeps the running configuration
        conf.write_text(broken)
        proc.send_signal(signal.SIGHUP)
        notify.wait_for("READY", count=2)
        time.sleep(0.5)
        if target == "journal":
            # while it runs, the daemon retries what a slow journald did not
            # take yet (at exit, what is left goes to stderr instead)
            wait_until(lambda: "reload failed" in journal_text(journal, cursor), 30,
                       what="the reload-failed entry in the journal")
        metrics_text = metrics.read_text()
        assert stop_process(proc) == 0
        notify.wait_for("STOPPING")
        err = proc.stderr.read()
        out = proc.stdout.read()
    finally:
        notify.close()

    statuses = "\n".join(f"{k}={v}" for _, fields in notify.messages for k, v in fields.items())
    assert "STATUS=" in statuses
    assert_clean(statuses, "sd_notify messages")
    assert_clean(cmdline, "/proc/PID/cmdline")
    assert_clean(metrics_text, "the metrics file")
    assert_clean(out + err, f"stdout/stderr (--log-target {target})")
    assert 'pgsweeper_server_up{server="refused-kv"} 0' in metrics_text, metrics_text
    assert 'pgsweeper_server_up{server="kv-plain"} 1' in metrics_text, metrics_text

    if target == "stderr":
        text = err
    else:
        text = journal_text(journal, cursor)
        assert_clean(text, "the journal")
    # the outputs searched did carry the failures (the search was not vacuous)
    assert "reload failed (errors in " in text and "), keeping the running configuration" in text, text
    assert text.count("(not shown: it may hold a password)") >= len(broken_variants()), text
    assert "Connection refused" in text, text
    assert "password authentication failed" in text, text
    assert "unrecognized configuration parameter" in text, text
