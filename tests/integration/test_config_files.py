"""Configuration files that are not what they seem (issue 10, defects 5, 6, 11).

A FIFO, a directory or a character device as the configuration, a 1 MiB file
of nothing but nesting, a file over the size cap, a /proc file: --check and
start-up refuse each at once with exit 78, and a SIGHUP that finds one keeps
the running rules, keeps enforcing, and still stops on SIGTERM within a second.
"""

import os
import signal
import subprocess
import time

import pytest

from conftest import slow_factor, stop_process, wait_until
from pgs_helpers import idle_rule, main_server, yaml_config
from test_service import NotifySocket, own_pids, start

DEEP_BYTES = 1024 * 1024 - 1          # just under the size cap: the depth cap must refuse it
DEEP_ERROR = ":1:33: error: lists and mappings are nested more than 32 deep here; stopped reading"


def run_bounded(sweeper, path, *args, bound=5.0):
    """Run pgsweeper -c path; it must finish within bound seconds."""
    argv = [str(sweeper.binary), "-c", str(path), *args]
    t = time.monotonic()
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=bound * slow_factor())
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{argv} did not finish within {bound * slow_factor()} s")
    r.elapsed = time.monotonic() - t
    return r


def make_fifo(tmp_path):
    path = tmp_path / "fifo.yaml"
    os.mkfifo(path)
    return path


def make_deep(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("[" * DEEP_BYTES)
    return path


@pytest.mark.parametrize("kind", ["fifo", "directory", "chardev"])
@pytest.mark.parametrize("mode", [["--check"], ["--dump"], ["--log-target", "stderr"]])
def test_non_regular_file_is_refused_at_once(sweeper, tmp_path, kind, mode):
    path, what = {
        "fifo": (lambda: make_fifo(tmp_path), "a FIFO"),
        "directory": (lambda: tmp_path, "a directory"),
        "chardev": (lambda: "/dev/zero", "a character device"),
    }[kind]
    path = path()
    r = run_bounded(sweeper, path, *mode)
    assert r.returncode == 78, (r.stdout, r.stderr)
    assert r.stdout == ""
    assert r.stderr == f"{path}: error: is {what}; the configuration must be a regular file\n"


def test_deep_nesting_is_refused_fast_with_its_position(sweeper, tmp_path):
    path = make_deep(tmp_path)
    for mode in (["--check"], ["--log-target", "stderr"]):
        r = run_bounded(sweeper, path, *mode)
        assert r.returncode == 78, r.stderr
        assert r.stderr == f"{path}{DEEP_ERROR}\n"


def test_file_over_the_size_cap(sweeper, tmp_path):
    path = tmp_path / "big.yaml"
    # a valid file padded with comments to 1 MiB + 1 byte
    text = yaml_config([("main", "dbname=postgres")], idle_rule("1h"))
    path.write_text(text + "#" * (1024 * 1024 + 1 - len(text) - 1) + "\n")
    assert path.stat().st_size == 1024 * 1024 + 1
    r = run_bounded(sweeper, path, "--check")
    assert r.returncode == 78
    assert r.stderr == (f"{path}: error: the file is larger than 1048576 bytes (1 MiB), "
                        "the most a configuration may have\n")
    # one byte less loads
    path.write_text(text + "#" * (1024 * 1024 - len(text) - 1) + "\n")
    r = run_bounded(sweeper, path, "--check")
    assert r.returncode == 0, r.stderr


def test_proc_file_is_read_to_the_end(sweeper):
    # st_size of a /proc file is 0, yet it has content: never "the file is empty"
    r = run_bounded(sweeper, "/proc/self/status", "--check")
    assert r.returncode == 78
    assert "empty" not in r.stderr, r.stderr
    assert '/proc/self/status:1:1: error: unknown key "Name" in the top level' in r.stderr, r.stderr


def replace_with_fifo(conf):
    conf.unlink()
    os.mkfifo(conf)


def replace_with_deep(conf):
    conf.write_text("[" * DEEP_BYTES)


@pytest.mark.parametrize("bad", ["fifo", "deep"])
def test_reload_of_a_bad_file_keeps_enforcing(pg, sweeper, tmp_path, bad):
    notify = NotifySocket(tmp_path / "notify")
    conf = sweeper.write_config(yaml_config([main_server(pg)], idle_rule("600ms"), interval="200ms"))
    try:
        proc = start(sweeper, conf, {"NOTIFY_SOCKET": notify.path})
        notify.wait_for("READY")
        wait_until(lambda: own_pids(pg), 10, what="pgsweeper connected")
        before = own_pids(pg)

        {"fifo": replace_with_fifo, "deep": replace_with_deep}[bad](conf)
        t = time.monotonic()
        proc.send_signal(signal.SIGHUP)
        # the reload is over (failed) in bounded time: READY=1 again
        notify.wait_for("READY", count=2, timeout=5 * slow_factor())
        reload_s = time.monotonic() - t

        # the old rules still enforce, on the same connection
        victim = pg.connect(application_name=f"after-{bad}-reload")
        assert pg.wait_pid_gone(victim.info.backend_pid, timeout=5), \
            "the old rules stopped enforcing after the reload"
        assert own_pids(pg) == before, "a failed reload touched the connection"

        t = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=1.0 * slow_factor())
        except subprocess.TimeoutExpired:
            raise AssertionError(f"SIGTERM did not stop pgsweeper within {1.0 * slow_factor()} s")
        stop_s = time.monotonic() - t
        assert rc == 0
    finally:
        stop_process(proc)
        notify.close()
    err = proc.stderr.read()
    assert f"reload failed (errors in {conf}), keeping the running configuration" in err, err
    if bad == "fifo":
        assert f"{conf}: error: is a FIFO; the configuration must be a regular file" in err, err
    else:
        assert f"{conf}{DEEP_ERROR}" in err, err
    print(f"reload of the {bad} file: {reload_s:.3f} s, stop: {stop_s:.3f} s")


def test_reload_messages_are_escaped_once(pg, sweeper, tmp_path):
    """A name from the file reaches the reload's log line escaped as in
    --check (issue 18, defect 5): no raw control or bidi control, no forged
    line, and its backslash doubled once, not twice."""
    notify = NotifySocket(tmp_path / "notify")
    conf = sweeper.write_config(yaml_config([main_server(pg)], idle_rule("1h")))
    try:
        proc = start(sweeper, conf, {"NOTIFY_SOCKET": notify.path})
        notify.wait_for("READY")
        conf.write_text(yaml_config([main_server(pg)], '      - {name: "x\\nfake.yaml:1:1: configuration OK'
                                                       '\\e[31m\\u202e\\\\", max_idle: 1h}\n'))
        proc.send_signal(signal.SIGHUP)
        notify.wait_for("READY", count=2, timeout=5 * slow_factor())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5 * slow_factor()) == 0
    finally:
        stop_process(proc)
        notify.close()
    err = proc.stderr.read()
    assert f"reload failed (errors in {conf}), keeping the running configuration" in err, err
    assert 'error: name "x\\x0afake.yaml:1:1: configuration OK\\x1b[31m\\u202e\\\\" may only contain' in err, err
    assert not any(line.startswith("fake.yaml") for line in err.splitlines()), err
    for bad in ("\x1b", "\u202e"):
        assert bad not in err, f"{bad!r} reached stderr: {err!r}"


def test_command_line_echo_is_escaped(sweeper, tmp_path):
    """An argument echoed in an error message is escaped too."""
    conf = sweeper.write_config("servers: []\n")
    for args, want in ((["--log-target", "\x1b[2J\u202e\n"], 'invalid --log-target "\\x1b[2J\\u202e\\x0a"'),
                       (["extra\x07\u2066"], 'unexpected argument "extra\\x07\\u2066"'),
                       # getopt's own message printed an unknown option raw
                       (["--bog\x1b[31mus\u202e"], 'invalid option "--bog\\x1b[31mus\\u202e"')):
        r = subprocess.run([str(sweeper.binary), "-c", str(conf), *args], capture_output=True, text=True,
                           timeout=10 * slow_factor())
        assert r.returncode == 2, r
        assert want in r.stderr, r.stderr
        for bad in ("\x1b", "\x07", "\u202e", "\u2066"):
            assert bad not in r.stderr, f"{bad!r} reached stderr: {r.stderr!r}"
