#!/usr/bin/python3
"""pgsweeper soak (issue 10, "Also"). Started by bench/soak, which builds
pgsweeper, starts a throwaway PostgreSQL 15 and a private systemd-journald,
and exports PGSWEEPER_BIN, PGHOST, PGPORT, PG_PID and SOAK_WORK.

One pgsweeper with SOAK_SERVERS (20) server entries on the one cluster, all
with the rule `max_idle: 1s` for role app, logging to the journal. Every
SOAK_EVERY (2) s the driver opens SOAK_BATCH (20) new app sessions and leaves
them idle; every SOAK_HUP_EVERY (30) s it sends SIGHUP, after writing a broken
file for every fourth one (the next SIGHUP restores a good file). For
SOAK_SECONDS (600) s. Then it waits for the last sessions to end, stops
pgsweeper with SIGTERM and reads the journal back.

Acceptance (printed, exit status 1 when one fails):
  - sessions opened = sessions seen terminated by the client (FATAL 57P01,
    the socket closed by the server) = journal entries with
    PGSWEEPER_RESULT=terminated written by this pgsweeper, and the pids of
    those entries are exactly the pids of the sessions opened (as multisets:
    pid_max may wrap during a long run);
  - no sanitizer report on stderr (ASan, LSan at exit, UBSan);
  - RSS and open fds flat after warm-up (sampled every 5 s; start = first
    sample after SOAK_WARMUP s, 1 min, end).
"""
import collections
import concurrent.futures
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time

import psycopg

BIN = os.environ["PGSWEEPER_BIN"]
PGHOST = os.environ["PGHOST"]
PGPORT = os.environ["PGPORT"]
WORK = os.environ["SOAK_WORK"]
OUT = os.environ.get("SOAK_OUT", WORK)     # samples and stderr kept here
LABEL = os.environ.get("SOAK_LABEL", "soak")
SECONDS = float(os.environ.get("SOAK_SECONDS", "600"))
SERVERS = int(os.environ.get("SOAK_SERVERS", "20"))
BATCH = int(os.environ.get("SOAK_BATCH", "20"))
EVERY = float(os.environ.get("SOAK_EVERY", "2"))
HUP_EVERY = float(os.environ.get("SOAK_HUP_EVERY", "30"))
WARMUP = float(os.environ.get("SOAK_WARMUP", "10"))
SAMPLE_EVERY = 5.0

SANITIZER_MARKS = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "UndefinedBehaviorSanitizer")


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {LABEL}: {msg}", file=sys.stderr, flush=True)


def config_text(variant):
    """variant 0/1: two good files (they differ in interval, so that each
    reload really changes something); 'broken': not YAML."""
    if variant == "broken":
        return "interval: 10s\nservers: [\n  - name: {broken\n"
    lines = [f"interval: {10 + variant}s", "min_interval: 100ms", "servers:"]
    for i in range(SERVERS):
        lines += [f"  - name: {LABEL}{i:02d}",
                  f'    conninfo: "host={PGHOST} port={PGPORT} dbname=postgres user=pgsweeper"',
                  "    rules:",
                  "      - name: idle",
                  "        max_idle: 1s",
                  "        users: [app]",
                  f"        applications: [client{i:02d}]"]
    return "\n".join(lines) + "\n"


def write_config(path, variant):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(config_text(variant))
    os.rename(tmp, path)


def mem(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k = line.split(":", 1)[0]
            if k in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[k] = int(line.split()[1])
    with open(f"/proc/{pid}/smaps_rollup") as f:
        out["Pss"] = next(int(l.split()[1]) for l in f if l.startswith("Pss:"))
    out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return out


def journal_entries(pid):
    r = subprocess.run(["journalctl", "--no-pager", "-o", "json", f"_PID={pid}"],
                       capture_output=True, text=True, timeout=120)
    return [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]


def ended_by_server(conn):
    """The server sent something to an idle session: peek at it (before
    libpq reads it) and return the SQLSTATE of the ErrorResponse, 57P01
    for pg_terminate_backend; "closed" if the socket closed without one."""
    s = socket.socket(fileno=os.dup(conn.fileno()))
    try:
        data = s.recv(8192, socket.MSG_PEEK)
    except OSError:
        data = b""
    finally:
        s.close()
    if data[:1] == b"E":
        m = re.search(rb"\0C([0-9A-Z]{5})\0", data)
        if m:
            return m.group(1).decode()
    return "closed" if not data else "other"


def open_session(application_name):
    return psycopg.connect(host=PGHOST, port=PGPORT, user="app", dbname="appdb", autocommit=True,
                           application_name=application_name)


def main():
    cfg = os.path.join(WORK, LABEL + ".yaml")
    write_config(cfg, 0)
    errpath = os.path.join(WORK, LABEL + ".stderr")
    err = open(errpath, "w")
    env = dict(os.environ,
               ASAN_OPTIONS="detect_leaks=1:print_summary=1",
               UBSAN_OPTIONS="print_stacktrace=1")
    p = subprocess.Popen([BIN, "-c", cfg, "--log-target", "journal"],
                         stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env)
    admin = psycopg.connect(host=PGHOST, port=PGPORT, user="postgres", dbname="postgres", autocommit=True)
    end = time.monotonic() + 60
    while admin.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = 'pgsweeper'").fetchone()[0] < SERVERS:
        if p.poll() is not None or time.monotonic() > end:
            sys.exit(f"{LABEL}: pgsweeper did not connect {SERVERS} entries (exit {p.poll()}); see {errpath}")
        time.sleep(0.1)
    admin.close()   # the driver keeps no idle superuser session around
    log(f"pgsweeper pid {p.pid}: {SERVERS} entries connected; soaking for {SECONDS:g} s")

    pool = concurrent.futures.ThreadPoolExecutor(4)
    live = {}                    # fd -> (conn, pid, opened_at)
    opened = collections.Counter()
    ended = collections.Counter()
    sqlstates = collections.Counter()
    latencies = []
    samples = []                 # (t, mem dict)
    hups = broken = 0
    t0 = time.monotonic()
    next_batch, next_hup, next_sample = t0, t0 + HUP_EVERY, t0 + WARMUP
    variant = 0
    n_batches = 0
    max_lag = 0.0

    def reap(timeout):
        if not live:
            time.sleep(timeout)
            return
        r, _, _ = select.select(list(live), [], [], timeout)
        now = time.monotonic()
        for fd in r:
            conn, pid, since = live.pop(fd)
            state = ended_by_server(conn)
            sqlstates[state] += 1
            ended[pid] += 1
            latencies.append(now - since)
            conn.close()

    while (now := time.monotonic()) < t0 + SECONDS:
        if now >= next_batch:
            max_lag = max(max_lag, now - next_batch)
            # Each session belongs to one entry (its application_name):
            # entries on one cluster with the same rule would all signal a
            # dying backend that is still listed. Connects run 4 at a time so
            # that a slow fork on a loaded machine does not hold back the rate.
            names = [f"client{(n_batches * BATCH + k) % SERVERS:02d}" for k in range(BATCH)]
            for c in pool.map(open_session, names):
                pid = c.info.backend_pid
                opened[pid] += 1
                live[c.fileno()] = (c, pid, time.monotonic())
            next_batch += EVERY
            n_batches += 1
        if now >= next_hup:
            hups += 1
            if hups % 4 == 0:
                write_config(cfg, "broken")
                broken += 1
            else:
                variant ^= 1
                write_config(cfg, variant)
            p.send_signal(signal.SIGHUP)
            next_hup += HUP_EVERY
        if now >= next_sample:
            samples.append((now - t0, mem(p.pid)))
            next_sample += SAMPLE_EVERY
        if p.poll() is not None:
            log(f"pgsweeper exited with {p.returncode} during the soak")
            break
        reap(max(0.0, min(next_batch, next_hup, next_sample, t0 + SECONDS) - time.monotonic()))

    # The last sessions end within about 2 s (limit 1 s + one gap of 1 s).
    drain_end = time.monotonic() + 15
    while live and time.monotonic() < drain_end:
        reap(0.2)
    samples.append((time.monotonic() - t0, mem(p.pid)))
    soak_wall = time.monotonic() - t0
    p.send_signal(signal.SIGTERM)
    try:
        rc = p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
        rc = "killed after 30 s"
    err.close()
    for conn, _, _ in live.values():
        conn.close()

    time.sleep(2)   # let journald write the last entries
    entries = journal_entries(p.pid)
    terminated = collections.Counter(int(e["PGSWEEPER_PID"]) for e in entries
                                     if e.get("PGSWEEPER_RESULT") == "terminated")
    other_results = collections.Counter(e.get("PGSWEEPER_RESULT") for e in entries
                                        if "PGSWEEPER_RESULT" in e and e["PGSWEEPER_RESULT"] != "terminated")
    reload_msgs = collections.Counter()
    for e in entries:
        m = e.get("MESSAGE", "")
        if isinstance(m, str) and "reload" in m.lower():
            reload_msgs["failed" if ("fail" in m.lower() or "error" in m.lower()) else "ok"] += 1
    with open(errpath, errors="replace") as f:
        stderr_text = f.read()
    san = [l for l in stderr_text.splitlines() if any(m in l for m in SANITIZER_MARKS)]

    n_open, n_end, n_term = sum(opened.values()), sum(ended.values()), sum(terminated.values())
    by_sqlstate = dict(sqlstates)
    first = next((m for t, m in samples if t >= WARMUP), samples[0][1])
    at60 = min(samples, key=lambda s: abs(s[0] - 60))[1]
    last = samples[-1][1]
    after = [m for t, m in samples if t >= WARMUP]
    res = {
        "label": LABEL, "seconds": round(soak_wall, 1), "pgsweeper_exit": rc,
        "batches": n_batches, "batches_due": int(SECONDS // EVERY) + (SECONDS % EVERY > 0), "max_batch_lag_s": round(max_lag, 2),
        "opened": n_open, "ended_by_server": n_end, "ended_sqlstates": by_sqlstate,
        "journal_terminated": n_term,
        "journal_pids_equal_opened": terminated == opened,
        "journal_duplicates": sum(v - opened.get(k, 0) for k, v in terminated.items() if v > opened.get(k, 0)),
        "journal_other_results": dict(other_results),
        "sighups": hups, "broken_files": broken, "reload_entries": dict(reload_msgs),
        "sanitizer_lines": len(san),
        "latency_s": {"median": sorted(latencies)[len(latencies) // 2] if latencies else None,
                      "max": max(latencies) if latencies else None},
        "rss_kib": {"start": first["VmRSS"], "1min": at60["VmRSS"], "end": last["VmRSS"],
                    "max_after_warmup": max(m["VmRSS"] for m in after)},
        "rss_anon_kib": {"start": first["RssAnon"], "1min": at60["RssAnon"], "end": last["RssAnon"],
                         "max_after_warmup": max(m["RssAnon"] for m in after)},
        "pss_kib": {"start": first["Pss"], "end": last["Pss"]},
        "fds": {"start": first["fds"], "1min": at60["fds"], "end": last["fds"],
                "min": min(m["fds"] for m in after), "max": max(m["fds"] for m in after)},
    }
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, LABEL + ".samples.json"), "w") as f:
        json.dump(samples, f)
    with open(os.path.join(OUT, LABEL + ".stderr"), "w") as f:
        f.write(stderr_text)
    res["rss_kib_by_minute"] = {f"{round(t / 60)}": m["VmRSS"] for t, m in samples
                                if abs(t - 60 * round(t / 60)) < SAMPLE_EVERY / 2 and t >= 55}
    res["rss_anon_kib_by_minute"] = {f"{round(t / 60)}": m["RssAnon"] for t, m in samples
                                     if abs(t - 60 * round(t / 60)) < SAMPLE_EVERY / 2 and t >= 55}
    print(json.dumps(res, indent=1))
    if san:
        print(f"{LABEL}: sanitizer report:\n" + "\n".join(san[:40]))
    ok = (n_open == n_end == n_term and terminated == opened and by_sqlstate == {"57P01": n_open}
          and not san and rc == 0)
    print(f"{LABEL}: {'PASS' if ok else 'FAIL'}: opened {n_open}, ended by the server {n_end}, "
          f"journal 'terminated' entries {n_term}, sanitizer lines {len(san)}, "
          f"RSS start/1min/end {res['rss_kib']['start']}/{res['rss_kib']['1min']}/{res['rss_kib']['end']} KiB, "
          f"fds {res['fds']['start']}/{res['fds']['1min']}/{res['fds']['end']}", flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
