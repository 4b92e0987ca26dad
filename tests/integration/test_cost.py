"""What a poll costs is what the metrics file says it costs: the last poll's
duration covers the judgement, not only the round trip."""

import os
import subprocess
import time

from pgs_helpers import main_server, yaml_config
from promtext import parse as parse_metrics, value as metric_value

SESSIONS = 150
RULES = 128
GLOBS = 800


def many_globs_config(pg, metrics):
    # Every rule matches every session, and each rule's exempt list ends with
    # the glob that exempts them, so judging tries all GLOBS globs per session
    # and rule (globs cannot be hashed), and decides nothing. One anchored
    # list keeps the file small.
    globs = "".join(f'"nomatch_{i}_*", ' for i in range(GLOBS))
    rules = "".join(f"      - name: r{r}\n        max_idle: {r + 1}ms\n        exempt: {{applications: *globs}}\n"
                    for r in range(RULES))
    return yaml_config([main_server(pg)], rules, interval=None,
                       top=f"metrics_file: {metrics}\nx-globs: &globs [{globs}\"cost-*\"]\n")


def once(sweeper, text):
    path = sweeper.write_config(text)
    proc = subprocess.Popen([str(sweeper.binary), "-c", str(path), "--once", "--log-target", "stderr"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode()
    assert proc.returncode == 0, err
    return usage.ru_utime + usage.ru_stime


def test_poll_duration_includes_the_judgement(pg, sweeper, tmp_path):
    """The same configuration run once with SESSIONS candidates and once with
    none: the CPU difference is the judging, which the metric must show."""
    metrics = tmp_path / "pgsweeper.prom"
    conns = [pg.connect(application_name=f"cost-{i}") for i in range(SESSIONS)]
    time.sleep(0.3)
    busy = once(sweeper, many_globs_config(pg, metrics))
    reported = metric_value(parse_metrics(metrics.read_text()), "pgsweeper_last_poll_duration_seconds",
                            server="main")
    for c in conns:
        c.close()
    pg.end_test()
    quiet = min(once(sweeper, many_globs_config(pg, metrics)) for _ in range(2))
    judging = busy - quiet
    print(f"CPU: {busy:.3f}s with {SESSIONS} sessions, {quiet:.3f}s without; last poll reported {reported:.4f}s")
    assert judging > 0.05, "the judgement is too cheap here for the test to show anything"
    assert reported >= 0.6 * judging, \
        f"the poll took at least {judging:.3f}s of CPU for judging, the metric says {reported:.4f}s"
