#!/usr/bin/python3
"""pgsweeper benchmarks (issue 7, item 6). Started by bench/run, which builds
pgsweeper, starts a throwaway PostgreSQL 15 and exports:

    PGSWEEPER_BIN  the binary to measure
    PGHOST PGPORT  the cluster (socket dir, port)
    PG_PID PG_DIR  postmaster pid, cluster dir (server.log lives there)
    PG_BINDIR      PostgreSQL binaries (the real psql, not the perl wrapper)
    BENCH_WORK     scratch dir for configs, logs, callgrind output

Prints one table at the end. Never part of `meson test`: it measures, it
does not pass or fail (exit status is 0 even when a target is missed).
Everything is measured side by side in this one run, so compare ratios: the
machine is small and shared.
"""
import os
import random
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

# psycopg 3.1 waits with select(), which fails on fds >= 1024: the bench
# holds 3000+ connections. epoll has no such limit.
os.environ.setdefault("PSYCOPG_WAIT_FUNC", "wait_epoll")
import psycopg  # noqa: E402

BIN = os.environ["PGSWEEPER_BIN"]
# BENCH_ONLY=fleet runs without a cluster: bench/run starts none and sets none of these.
PGHOST = os.environ.get("PGHOST", "")
PGPORT = os.environ.get("PGPORT", "")
PG_PID = int(os.environ.get("PG_PID") or 0)
PG_DIR = os.environ.get("PG_DIR", "")
PG_BINDIR = os.environ.get("PG_BINDIR", "/usr/lib/postgresql/15/bin")
WORK = os.environ["BENCH_WORK"]
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Knobs (environment overrides, for quick runs while editing the bench).
LAT_SESSIONS = int(os.environ.get("BENCH_LAT_SESSIONS", "30"))
LAT_SPREAD = float(os.environ.get("BENCH_LAT_SPREAD", "10"))     # s over which sessions open
CPU_SESSIONS = int(os.environ.get("BENCH_CPU_SESSIONS", "1000"))
CPU_SECONDS = float(os.environ.get("BENCH_CPU_SECONDS", "20"))
PSQL_RUNS = int(os.environ.get("BENCH_PSQL_RUNS", "100"))
VICTIMS = int(os.environ.get("BENCH_VICTIMS", "500"))
MANY_SERVERS = int(os.environ.get("BENCH_SERVERS", "200"))
QUIET_SESSIONS = int(os.environ.get("BENCH_QUIET_SESSIONS", "20"))
QUIET_SPREAD = float(os.environ.get("BENCH_QUIET_SPREAD", "10"))  # s over which sessions open
COST_POINTS = [int(x) for x in os.environ.get("BENCH_COST_POINTS", "0,1000,3000").split(",")]
COST_SECONDS = float(os.environ.get("BENCH_COST_SECONDS", "10"))
QUIET_LIMIT_S = 2.0
BARE_SCAN_SQL = "SELECT count(*) FROM pg_stat_get_activity(NULL)"

LIMIT_S = 3.0
CRON_EVERY = 5.0
CRON_SQL = ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE state = 'idle' "
            "AND state_change < now() - interval '{}' AND usename = 'app'")

children = []   # pgsweeper processes to stop if we die


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def connect(user="app", dbname="appdb", options=None):
    kw = {"host": PGHOST, "port": PGPORT, "user": user, "dbname": dbname, "autocommit": True}
    if options:
        kw["options"] = options
    return psycopg.connect(**kw)


def open_sessions(n, **kw):
    conns = []
    for i in range(n):
        conns.append(connect(**kw))
        if i and i % 250 == 0:
            log(f"  {i} sessions open")
    return conns


def close_all(conns):
    for c in conns:
        try:
            c.close()
        except Exception:
            pass


def wait_count(admin, sql, want, timeout=30.0):
    """Poll until `sql` (a count) returns `want`; return the count seen last."""
    end = time.monotonic() + timeout
    while True:
        n = admin.execute(sql).fetchone()[0]
        if n == want or time.monotonic() > end:
            return n
        time.sleep(0.02)


def wait_no_app(timeout=30.0):
    """Wait until no app session is left (over a short-lived connection)."""
    with connect(user="postgres", dbname="postgres") as a:
        wait_count(a, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'", 0, timeout)


def app_count(admin):
    return admin.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'").fetchone()[0]


def wait_all_gone(admin, t0, timeout):
    """Seconds from t0 (monotonic) to the first poll (every ~10 ms) that
    finds no app session; None if some are left after timeout."""
    while time.monotonic() - t0 < timeout:
        if app_count(admin) == 0:
            return time.monotonic() - t0
        time.sleep(0.01)
    return None


# --- /proc helpers ----------------------------------------------------------

def proc_stat(pid):
    """(ppid, utime+stime, cutime+cstime) in seconds, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()
    # fields[0] is field 3 (state): utime is field 14 -> index 11
    ppid = int(fields[1])
    own = (int(fields[11]) + int(fields[12])) / CLK_TCK
    kids = (int(fields[13]) + int(fields[14])) / CLK_TCK
    return ppid, own, kids


def proc_cpu(pid):
    """CPU seconds of a live process: /proc/PID/schedstat (ns, the
    scheduler's sum_exec_runtime: user+sys), else utime+stime in ticks."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        st = proc_stat(pid)
        return st[1] if st else float("nan")


def cluster_cpu():
    """CPU seconds of the whole cluster: the postmaster itself, every live
    child, and (through the postmaster's cutime/cstime) every child that has
    exited and been reaped, such as the backend of each psql run."""
    pm = proc_stat(PG_PID)
    total = pm[1] + pm[2]
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == PG_PID:
            continue
        st = proc_stat(int(d))
        if st and st[0] == PG_PID:
            total += st[1]
    return total


def vm_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


# --- pgsweeper --------------------------------------------------------------

def conninfo(**extra):
    s = f"host={PGHOST} port={PGPORT} dbname=postgres user=pgsweeper"
    for k, v in extra.items():
        s += f" {k}={v}"
    return s


def write_config(name, *, interval, rules, servers=1, min_interval="100ms", max_actions=None, metrics=None):
    path = os.path.join(WORK, name + ".yaml")
    lines = [f"interval: {interval}", f"min_interval: {min_interval}"]
    if max_actions:
        lines.append(f"max_actions_per_cycle: {max_actions}")
    if metrics:
        lines.append(f"metrics_file: {metrics}")
    lines.append("servers:")
    for i in range(servers):
        srv = "bench" if servers == 1 else f"bench{i:03d}"
        lines += [f"  - name: {srv}",
                  f'    conninfo: "{conninfo()}"',
                  "    rules:"]
        for rname, limit in rules:
            lines += [f"      - name: {rname}", f"        max_idle: {limit}", "        users: [app]"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


_metrics_ok = None


def metrics_path(name):
    """A metrics_file path when this pgsweeper accepts the key (--check),
    else None: polls are then estimated as duration / interval."""
    global _metrics_ok
    if _metrics_ok is None:
        cfg = write_config("metrics-check", interval="1s", rules=[("idle", "1h")],
                           metrics=os.path.join(WORK, "check.prom"))
        _metrics_ok = subprocess.run([BIN, "--check", "-c", cfg], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL).returncode == 0
        if not _metrics_ok:
            log("metrics_file not supported by this pgsweeper: polls are estimated as duration / interval")
    return os.path.join(WORK, name + ".prom") if _metrics_ok else None


def start_sweeper(config, name, *extra, wrapper=()):
    err = open(os.path.join(WORK, name + ".stderr"), "w")
    p = subprocess.Popen([*wrapper, BIN, "-c", config, "--log-target", "stderr", *extra],
                         stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    p.errfile = err.name
    children.append(p)
    return p


def stop_sweeper(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if p in children:
        children.remove(p)


def count_lines(path, needle):
    with open(path, errors="replace") as f:
        return sum(needle in line for line in f)


def sweeper_backends(admin):
    return [r[0] for r in admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE usename = 'pgsweeper' ORDER BY pid").fetchall()]


def read_polls(path):
    if path is None:
        return None
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("pgsweeper_polls_total{"):
                    return int(line.split()[-1])
    except OSError:
        pass
    return None


def next_metrics_write(path, timeout=10.0):
    """Wait for the metrics file to be rewritten (pgsweeper rewrites it right
    after a poll, at most once a second when nothing changes) and return its
    polls count then: CPU read at that moment lines up with a poll boundary."""
    def stamp():
        try:
            return os.stat(path).st_mtime_ns
        except OSError:
            return None
    m0, end = stamp(), time.monotonic() + timeout
    while stamp() == m0 and time.monotonic() < end:
        time.sleep(0.002)
    return read_polls(path)


def psql(sql, user="postgres"):
    subprocess.run([os.path.join(PG_BINDIR, "psql"), "-X", "-q", "-h", PGHOST, "-p", PGPORT,
                    "-U", user, "-d", "postgres", "-c", sql],
                   check=True, stdout=subprocess.DEVNULL)


def pct(values, p):
    """Nearest-rank percentile."""
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(-(-p * len(v) // 100)) - 1))
    return v[k]


# --- a. latency past the limit ------------------------------------------------

def latency_run(admin, method, seed):
    """Open LAT_SESSIONS app sessions, one every LAT_SPREAD/N s (jittered),
    start the enforcer right after the first one, and time, per session, the
    moment its client socket becomes readable (the FATAL message the backend
    sends just before it exits) against state_change + 3 s from
    pg_stat_activity (server clock; same host, same CLOCK_REALTIME)."""
    rng = random.Random(seed)
    step = LAT_SPREAD / LAT_SESSIONS
    offsets = [i * step + rng.uniform(0, step) for i in range(LAT_SESSIONS)]
    options = f"-c idle_session_timeout={int(LIMIT_S * 1000)}ms" if method == "idle_session_timeout" else None
    live = {}          # fd -> pid, sessions not yet seen to end
    conns = {}         # pid -> connection (kept referenced until the end)
    idle_since = {}    # pid -> epoch seconds
    gone = {}          # pid -> epoch seconds
    lock = threading.Lock()
    opened = threading.Event()
    stop = threading.Event()
    enforcer = []

    def watcher():
        while not stop.is_set():
            with lock:
                fds = list(live)
            if not fds:
                if opened.is_set():
                    return
                time.sleep(0.005)
                continue
            r, _, _ = select.select(fds, [], [], 0.01)
            t = time.time()
            with lock:
                for fd in r:
                    gone[live.pop(fd)] = t

    def cron():
        t0 = time.monotonic()
        k = 0
        while not stop.is_set():
            psql(CRON_SQL.format(f"{LIMIT_S:g} seconds"))
            k += 1
            stop.wait(max(0.0, t0 + k * CRON_EVERY - time.monotonic()))

    w = threading.Thread(target=watcher, daemon=True)
    w.start()
    t0 = time.monotonic()
    for i, off in enumerate(offsets):
        time.sleep(max(0.0, t0 + off - time.monotonic()))
        c = connect(options=options)
        pid = c.info.backend_pid
        row = admin.execute("SELECT extract(epoch FROM state_change)::float8 FROM pg_stat_activity "
                            "WHERE pid = %s AND state = 'idle'", (pid,)).fetchone()
        idle_since[pid] = row[0] if row else time.time()
        with lock:
            conns[pid] = c
            live[c.fileno()] = pid
        if i == 0:
            if method == "pgsweeper":
                cfg = write_config("latency", interval="60s", rules=[("idle", f"{LIMIT_S:g}s")])
                enforcer.append(start_sweeper(cfg, "latency"))
            elif method == "cron":
                th = threading.Thread(target=cron, daemon=True)
                th.start()
                enforcer.append(th)
    opened.set()
    # Every session is due at most LAT_SPREAD + 3 s from t0; give each method
    # a generous bound (pgsweeper's worst case for an unseen session is its
    # 60 s interval, so wait past that rather than hide a miss).
    w.join(LAT_SPREAD + LIMIT_S + 65)
    stop.set()
    for e in enforcer:
        if isinstance(e, subprocess.Popen):
            stop_sweeper(e)
            terminated = count_lines(e.errfile, ": terminated pid")
            errfile = e.errfile
        else:
            e.join()
    close_all(conns.values())
    lat = [gone[p] - (idle_since[p] + LIMIT_S) for p in gone]
    missing = LAT_SESSIONS - len(lat)
    wait_count(admin, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'", 0)
    res = {"n": len(lat), "missing": missing, "min": min(lat) if lat else float("nan")}
    if lat:
        res.update(median=statistics.median(lat), p95=pct(lat, 95), max=max(lat))
    if method == "pgsweeper":
        res["terminated_lines"] = terminated
        if missing:
            with open(errfile) as f:
                log("pgsweeper stderr (tail): " + "".join(f.readlines()[-5:]))
    return res


# --- a2. latency past the limit, quiet server ------------------------------------

def latency_quiet(variant, seed):
    """Issue 12: pgsweeper (interval 60s, max_idle 2s) is started on a quiet
    server (no client session but the bench's, none of them of role app) and
    the sessions are opened only after its first poll, at random moments over
    QUIET_SPREAD s. The caller holds no connection during the run.

    variant "silent": the bench sends nothing to the server while pgsweeper
    runs, it only opens the app sessions and watches their sockets; a
    session's idle start is the client's clock when its connection is ready
    (the backend becomes idle as it sends ReadyForQuery, just before).
    variant "admin": like a., a superuser connection reads state_change from
    pg_stat_activity after each connect (a busy superuser session, which no
    rule can act on: it must not change when pgsweeper polls); the offset
    between the two idle starts is reported."""
    admin = connect(user="postgres", dbname="postgres") if variant == "admin" else None
    rng = random.Random(seed)
    offsets = sorted(rng.uniform(0, QUIET_SPREAD) for _ in range(QUIET_SESSIONS))
    metrics = metrics_path("quiet-" + variant)
    cfg = write_config("quiet-" + variant, interval="60s", rules=[("idle", f"{QUIET_LIMIT_S:g}s")],
                       metrics=metrics)
    p = start_sweeper(cfg, "quiet-" + variant)
    live, ready, state_change, gone, conns = {}, {}, {}, {}, []
    try:
        end = time.monotonic() + 20
        while (read_polls(metrics) or 0) < 1 and time.monotonic() < end and p.poll() is None:
            time.sleep(0.005)
        polls0, t0 = read_polls(metrics) or 0, time.monotonic()
        lock, stop = threading.Lock(), threading.Event()

        def watcher():
            # Its own thread: a connect() that blocks on a loaded machine
            # must not delay the moment a session's end is seen.
            while not stop.is_set():
                with lock:
                    fds = list(live)
                if not fds:
                    time.sleep(0.002)
                    continue
                r, _, _ = select.select(fds, [], [], 0.01)
                t = time.time()
                with lock:
                    for fd in r:
                        gone[live.pop(fd)] = t

        w = threading.Thread(target=watcher, daemon=True)
        w.start()
        for off in offsets:
            time.sleep(max(0.0, t0 + off - time.monotonic()))
            c = connect()
            ready_t = time.time()
            pid = c.info.backend_pid
            conns.append(c)
            ready[pid] = ready_t
            with lock:
                live[c.fileno()] = pid
            if admin is not None:
                row = admin.execute("SELECT extract(epoch FROM state_change)::float8 FROM pg_stat_activity "
                                    "WHERE pid = %s AND state = 'idle'", (pid,)).fetchone()
                if row:
                    state_change[pid] = row[0]
        deadline = t0 + QUIET_SPREAD + QUIET_LIMIT_S + 65   # past the 60 s interval: a miss shows
        while time.monotonic() < deadline:
            with lock:
                if not live:
                    break
            time.sleep(0.02)
        stop.set()
        w.join()
        run_s = time.monotonic() - t0
        polls1 = next_metrics_write(metrics, 3) if metrics else None
    finally:
        stop_sweeper(p)
        close_all(conns)
        if admin is not None:
            admin.close()
    base = state_change if variant == "admin" else ready
    lat = [gone[pid] - (base[pid] + QUIET_LIMIT_S) for pid in gone if pid in base]
    res = {"variant": variant, "n": len(lat), "missing": QUIET_SESSIONS - len(lat),
           "terminated_lines": count_lines(p.errfile, ": terminated pid"),
           "polls": (polls1 - polls0) if polls1 is not None else None, "seconds": run_s}
    if lat:
        res.update(median=statistics.median(lat), p95=pct(lat, 95), max=max(lat), min=min(lat))
    res["sessions"] = sorted((base[pid], gone[pid]) for pid in gone if pid in base)
    if state_change:
        off = [ready[p_] - state_change[p_] for p_ in state_change]
        res.update(ready_offset_median=statistics.median(off), ready_offset_max=max(off))
    return res


def sweeper_cost(admin, seconds):
    """pgsweeper at interval 100ms, rule max_idle 1h (nothing to do): CPU of
    its process and of its backend per poll, over `seconds`, the window
    opened and closed right after a metrics file rewrite (so the polls
    counted line up with the CPU read)."""
    metrics = metrics_path("cost")
    cfg = write_config("cost", interval="100ms", rules=[("idle", "1h")], metrics=metrics)
    p = start_sweeper(cfg, "cost")
    try:
        end = time.monotonic() + 20
        while (read_polls(metrics) or 0) < 5 and time.monotonic() < end:
            time.sleep(0.05)
        end = time.monotonic() + 10
        while not (backends := sweeper_backends(admin)) and time.monotonic() < end and p.poll() is None:
            time.sleep(0.05)
        if len(backends) != 1:
            raise RuntimeError(f"expected one pgsweeper backend, found {backends}")
        be = backends[0]
        polls0 = next_metrics_write(metrics)
        t0, sw0, be0 = time.monotonic(), proc_cpu(p.pid), proc_cpu(be)
        time.sleep(max(0.0, seconds - 1.0))
        polls1 = next_metrics_write(metrics)
        t1, sw1, be1 = time.monotonic(), proc_cpu(p.pid), proc_cpu(be)
    finally:
        stop_sweeper(p)
    polls = polls1 - polls0
    return {"polls": polls, "seconds": t1 - t0, "client": (sw1 - sw0) / polls, "backend": (be1 - be0) / polls}


def bare_scan_cost(runs, spacing):
    """Backend CPU of the bare scan, BARE_SCAN_SQL, as a prepared statement
    (like pgsweeper's snapshot) on one pgsweeper-role connection, one run
    every `spacing` s (0: back to back)."""
    with psycopg.connect(host=PGHOST, port=PGPORT, user="pgsweeper", dbname="postgres",
                         autocommit=True) as c:
        be = c.info.backend_pid
        for _ in range(5):
            c.execute(BARE_SCAN_SQL, prepare=True).fetchall()
        b0, t0 = proc_cpu(be), time.monotonic()
        for k in range(runs):
            c.execute(BARE_SCAN_SQL, prepare=True).fetchall()
            if spacing:
                time.sleep(max(0.0, t0 + (k + 1) * spacing - time.monotonic()))
        return (proc_cpu(be) - b0) / runs


def snapshot_cost(runs, spacing):
    """Backend CPU of pgsweeper's own statement (pg_snapshot_sql, the form of
    a server without a cap) run by the bench the way pgsweeper runs it
    (prepared, plan_cache_mode = force_generic_plan, parameters as untyped
    text), one run every `spacing` s: tells the statement from the client's
    way of sending it. The parameters: one rule max_idle 1h at a 100 ms gap."""
    import re
    sql = snapshot_sql_cpp(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    q = re.sub(r"\$(\d+)", lambda m: f"%(p{m.group(1)})s", sql.replace("%", "%%"))
    args = {f"p{k}": v for k, v in PRESSURE_PARAMS_A.items()}
    with psycopg.connect(host=PGHOST, port=PGPORT, user="pgsweeper", dbname="postgres",
                         autocommit=True) as c:
        c.execute("SET plan_cache_mode = force_generic_plan")
        be = c.info.backend_pid
        for _ in range(5):
            c.execute(q, args, prepare=True).fetchall()
        b0, t0 = proc_cpu(be), time.monotonic()
        for k in range(runs):
            c.execute(q, args, prepare=True).fetchall()
            if spacing:
                time.sleep(max(0.0, t0 + (k + 1) * spacing - time.monotonic()))
        return (proc_cpu(be) - b0) / runs


def cost_point(admin, n):
    """One row of the cost table at n idle app sessions (already open)."""
    sw = sweeper_cost(admin, COST_SECONDS)
    runs = max(20, int(COST_SECONDS / 0.1))
    return {"sessions": n, "sweeper": sw,
            "bare_spaced": bare_scan_cost(runs, 0.1),
            "bare_b2b": bare_scan_cost(runs, 0),
            "stmt_spaced": snapshot_cost(runs, 0.1)}


# --- b. CPU per poll with 1000 idle sessions ------------------------------------

def cpu_bench(admin):
    metrics = metrics_path("cpu")
    cfg = write_config("cpu", interval="100ms", rules=[("idle", "1h")], metrics=metrics)

    # Idle noise of the cluster with the sessions open and nothing polling.
    c0, t0 = cluster_cpu(), time.monotonic()
    time.sleep(5)
    noise = (cluster_cpu() - c0) / (time.monotonic() - t0)

    p = start_sweeper(cfg, "cpu")
    try:
        end = time.monotonic() + (20 if metrics else 1)
        while (read_polls(metrics) or 0) < 5 and time.monotonic() < end:
            time.sleep(0.05)
        end = time.monotonic() + 10
        while not (backends := sweeper_backends(admin)) and time.monotonic() < end and p.poll() is None:
            time.sleep(0.05)
        if len(backends) != 1:
            raise RuntimeError(f"expected one pgsweeper backend, found {backends}")
        be = backends[0]
        polls0, t0 = read_polls(metrics), time.monotonic()
        sw0, be0, cl0 = proc_cpu(p.pid), proc_cpu(be), cluster_cpu()
        time.sleep(CPU_SECONDS)
        sw1, be1, cl1 = proc_cpu(p.pid), proc_cpu(be), cluster_cpu()
        polls1, t1 = read_polls(metrics), time.monotonic()
    finally:
        stop_sweeper(p)
    dur = t1 - t0
    polls = polls1 - polls0 if metrics else round(dur / 0.1)
    sw = {"polls": polls, "seconds": dur, "estimated": not metrics,
          "client": (sw1 - sw0) / polls, "backend": (be1 - be0) / polls,
          "cluster": (cl1 - cl0 - noise * dur) / polls}

    # The cron way: PSQL_RUNS runs of the same kind of statement, back to back.
    sql = CRON_SQL.format("1 hour")
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cl0, t0 = cluster_cpu(), time.monotonic()
    for _ in range(PSQL_RUNS):
        psql(sql)
    cl1, t1 = cluster_cpu(), time.monotonic()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    client = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    ps = {"runs": PSQL_RUNS, "client": client / PSQL_RUNS,
          "cluster": (cl1 - cl0 - noise * (t1 - t0)) / PSQL_RUNS}

    # Reference floors on the server side: the backend CPU of a bare scan of
    # pg_stat_activity and of SELECT 1, sent like pgsweeper sends its
    # statements (extended protocol, unnamed statement, no prepare).
    floors = {}
    with psycopg.connect(host=PGHOST, port=PGPORT, user="pgsweeper", dbname="postgres",
                         autocommit=True, prepare_threshold=None) as c:
        be = c.info.backend_pid
        for name, q in (("scan", "SELECT count(*) FROM pg_stat_activity WHERE pid <> %s"),
                        ("select1", "SELECT %s::int")):
            for _ in range(20):
                c.execute(q, (0,)).fetchall()
            b0 = proc_cpu(be)
            for _ in range(PSQL_RUNS * 3):
                c.execute(q, (0,)).fetchall()
            floors[name] = (proc_cpu(be) - b0) / (PSQL_RUNS * 3)
    return {"sweeper": sw, "psql": ps, "noise": noise, "floors": floors}


# --- e. instructions per poll (callgrind) ------------------------------------

def callgrind_once(name):
    cfg = write_config(name, interval="60s", rules=[("idle", "1h")])
    out = os.path.join(WORK, name + ".callgrind")
    p = start_sweeper(cfg, name, "--once",
                      wrapper=("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"))
    rc = p.wait(300)
    children.remove(p)
    total = None
    with open(out) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                total = int(line.split()[1])
    return {"rc": rc, "ir": total}


def callgrind_daemon(name, seconds):
    """The daemon under callgrind at interval 100ms for `seconds`, stopped by
    SIGTERM: with P polls (metrics_file), (Ir - Ir of --once) / (P - 1) is the
    cost of one more poll, start-up and exit cancelled out."""
    metrics = metrics_path(name)
    cfg = write_config(name, interval="100ms", rules=[("idle", "1h")], metrics=metrics)
    out = os.path.join(WORK, name + ".callgrind")
    p = start_sweeper(cfg, name, wrapper=("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"))
    time.sleep(seconds)
    stop_sweeper(p)
    polls = read_polls(metrics)
    if polls is None:
        polls = round(seconds / 0.1)   # an upper bound: start-up under valgrind is slow
    total = None
    with open(out) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                total = int(line.split()[1])
    return {"ir": total, "polls": polls}


# --- c. 500 victims at once ----------------------------------------------------

def victims_bench(admin):
    """All VICTIMS app sessions are idle > 1 s; one pgsweeper --once ends them.
    Time from spawning pgsweeper to the last one gone from pg_stat_activity
    (polled every ~10 ms), and the wall time of the pgsweeper process. The
    pgsweeper role logs its statements (log_statement = all) during this run
    so that its round trips can be counted in the server log."""
    n = app_count(admin)
    cfg = write_config("victims", interval="60s", rules=[("idle", "1s")], max_actions=1000)
    admin.execute("ALTER ROLE pgsweeper SET log_statement = 'all'")
    logpath = os.path.join(PG_DIR, "server.log")
    logpos = os.path.getsize(logpath)
    time.sleep(1.2)    # every session idle > 1 s
    exited = {}
    t0 = time.monotonic()
    p = start_sweeper(cfg, "victims", "--once")
    threading.Thread(target=lambda: exited.setdefault("t", (p.wait(), time.monotonic())), daemon=True).start()
    all_gone = wait_all_gone(admin, t0, 30)
    p.wait(30)
    children.remove(p)
    time.sleep(0.2)
    admin.execute("ALTER ROLE pgsweeper RESET log_statement")
    with open(logpath, errors="replace") as f:
        f.seek(logpos)
        stmts = [l.split("LOG:", 1)[1].strip() for l in f
                 if "LOG:  statement:" in l or "LOG:  execute" in l]
    return {"sessions": n, "all_gone": all_gone, "wall": exited["t"][1] - t0, "rc": exited["t"][0],
            "terminated": count_lines(p.errfile, ": terminated pid"),
            "statements": [s[:50] + ("..." if len(s) > 50 else "") for s in stmts],
            "action_statements": sum("pg_terminate_backend" in s for s in stmts)}


# --- d. RSS --------------------------------------------------------------------

def rss_bench(admin, servers):
    cfg = write_config(f"rss{servers}", interval="60s", rules=[("idle", "1h")], servers=servers)
    p = start_sweeper(cfg, f"rss{servers}")
    try:
        n = wait_count(admin, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'pgsweeper'",
                       servers, timeout=60)
        time.sleep(3)
        mem = {k: vm_kib(p.pid, k) for k in ("VmHWM", "VmRSS", "RssAnon", "RssFile")}
        with open(f"/proc/{p.pid}/smaps_rollup") as f:
            mem["Pss"] = next(int(l.split()[1]) for l in f if l.startswith("Pss:"))
    finally:
        stop_sweeper(p)
    wait_count(admin, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'pgsweeper'", 0)
    return {"servers": servers, "connected": n, "hwm_kib": mem["VmHWM"], "mem": mem}


# --- table ---------------------------------------------------------------------

def verdict(ok):
    return "met" if ok else "MISSED"


def ms(x):
    return f"{x * 1000:.2f} ms"


def sec(x):
    return f"{x:.3f} s"


def main():
    r = {}
    admin = connect(user="postgres", dbname="postgres")
    server_version = admin.execute("SHOW server_version").fetchone()[0]
    # Fail early and loudly when this pgsweeper does not take the bench's configuration.
    cfg = write_config("check", interval="60s", rules=[("idle", "3s")], max_actions=1000)
    chk = subprocess.run([BIN, "--check", "-c", cfg], capture_output=True, text=True)
    if chk.returncode != 0:
        sys.exit(f"pgsweeper rejects the bench configuration:\n{chk.stderr}")
    try:
        for method in ("pgsweeper", "idle_session_timeout", "cron"):
            log(f"a. latency: {method} ({LAT_SESSIONS} sessions over {LAT_SPREAD:g} s)")
            r["lat_" + method] = latency_run(admin, method, seed=7)
            log(f"   {r['lat_' + method]}")

        log(f"a2. latency on a quiet server: {QUIET_SESSIONS} sessions after the first poll, "
            f"interval 60s, max_idle {QUIET_LIMIT_S:g}s")
        admin.close()       # the bench holds no connection of its own during a2
        for variant in ("silent", "admin"):
            wait_no_app()
            r["quiet_" + variant] = latency_quiet(variant, seed=12)
            log(f"   { {k: v for k, v in r['quiet_' + variant].items() if k != 'sessions'} }")
        admin = connect(user="postgres", dbname="postgres")

        conns = []
        r["cost"] = []
        for n in sorted(set(COST_POINTS) | {CPU_SESSIONS}):
            if n > len(conns):
                log(f"opening idle sessions: {len(conns)} -> {n}")
                conns += open_sessions(n - len(conns))
            wait_count(admin, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'", n)
            if n in COST_POINTS:
                log(f"cost per poll at {n} sessions: pgsweeper {COST_SECONDS:g} s, bare scan")
                r["cost"].append(cost_point(admin, n))
                log(f"   {r['cost'][-1]}")
            if n == CPU_SESSIONS:
                log(f"b. CPU per poll: pgsweeper for {CPU_SECONDS:g} s, then {PSQL_RUNS} psql runs")
                r["cpu"] = cpu_bench(admin)
                log(f"   {r['cpu']}")
                log(f"e. callgrind: pgsweeper --once, {len(conns)} sessions")
                r["cg_full"] = callgrind_once("cg-full")
                log(f"   {r['cg_full']}")
                r["cgd_full"] = callgrind_daemon("cgd-full", 6)
                log(f"   {r['cgd_full']}")

        log(f"c. {VICTIMS} victims")
        close_all(conns[VICTIMS:])
        conns = conns[:VICTIMS]
        wait_count(admin, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'", VICTIMS)
        r["victims"] = victims_bench(admin)
        log(f"   {r['victims']}")
        close_all(conns)
        wait_count(admin, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'", 0)

        log("e. callgrind: pgsweeper --once, 0 sessions")
        r["cg_empty"] = callgrind_once("cg-empty")
        log(f"   {r['cg_empty']}")
        r["cgd_empty"] = callgrind_daemon("cgd-empty", 6)
        log(f"   {r['cgd_empty']}")

        for n in (1, MANY_SERVERS):
            log(f"d. RSS with {n} server(s)")
            r[f"rss{n}"] = rss_bench(admin, n)
            log(f"   {r[f'rss{n}']}")
    finally:
        for p in list(children):
            stop_sweeper(p)

    rows = []   # (measurement, value, target, verdict)
    for m, label in (("pgsweeper", "pgsweeper (interval 60s)"),
                     ("idle_session_timeout", "idle_session_timeout = 3s"),
                     ("cron", "psql loop every 5 s")):
        x = r["lat_" + m]
        if x["n"]:
            v = f"{x['median']:.3f} / {x['p95']:.3f} / {x['max']:.3f} s"
        else:
            v = "none ended"
        if x["missing"]:
            v += f" ({x['missing']} not ended)"
        if m == "pgsweeper":
            rows.append((f"a. latency past limit, med/p95/max: {label}", v, "p95 <= 0.25 s",
                         verdict(x["n"] and not x["missing"] and x["p95"] <= 0.25)))
        else:
            rows.append((f"   {label}", v, "", ""))

    def quiet_val(x):
        v = f"{x['median']:.3f} / {x['p95']:.3f} / {x['max']:.3f} s" if x["n"] else "none ended"
        return v + (f" ({x['missing']} not ended)" if x["missing"] else "")
    qs, qa = r["quiet_silent"], r["quiet_admin"]
    rows += [
        (f"a2. quiet server, {QUIET_SESSIONS} sessions after 1st poll, interval 60s, max_idle 2s, "
         "med/p95/max: bench silent", quiet_val(qs), "med <= 0.01 s, p95 <= 0.1 s",
         verdict(qs["n"] and not qs["missing"] and qs["median"] <= 0.01 and qs["p95"] <= 0.1)),
        ("    same, a superuser connection queries after each connect", quiet_val(qa),
         "med <= 0.01 s, p95 <= 0.1 s",
         verdict(qa["n"] and not qa["missing"] and qa["median"] <= 0.01 and qa["p95"] <= 0.1)),
        ("    polls during the runs (silent / superuser busy)",
         f"{qs['polls']} in {qs['seconds']:.1f} s / {qa['polls']} in {qa['seconds']:.1f} s", "", ""),
    ]

    cost = r["cost"]
    for x in cost:
        sw_ = x["sweeper"]
        tot = sw_["client"] + sw_["backend"]
        at_cpu = x["sessions"] == CPU_SESSIONS
        rows += [
            (f"f. cost/poll, {x['sessions']} idle: pgsweeper process + backend",
             f"{ms(sw_['client'])} + {ms(sw_['backend'])} = {ms(tot)}", "", ""),
            ("   bare scan backend, prepared, 100 ms apart / back to back",
             f"{ms(x['bare_spaced'])} / {ms(x['bare_b2b'])}", "", ""),
            ("   ref: pgsweeper's statement run by the bench, backend, 100 ms apart", ms(x["stmt_spaced"]), "", ""),
            ("   ratio pgsweeper total / bare scan (100 ms apart)", f"{tot / x['bare_spaced']:.2f}",
             "<= 2.00" if at_cpu else "", verdict(tot <= 2 * x["bare_spaced"]) if at_cpu else ""),
        ]
    if len(cost) >= 2:
        a, b = cost[0], cost[-1]
        dn = b["sessions"] - a["sessions"]

        def slope(f):
            return (f(b) - f(a)) / dn * 1e6
        rows += [
            (f"   slope {a['sessions']}->{b['sessions']} sessions, per session: pgsweeper process / backend",
             f"{slope(lambda x: x['sweeper']['client']):.3f} / {slope(lambda x: x['sweeper']['backend']):.3f} us", "", ""),
            ("   slope per session: bare scan (100 ms apart / back to back)",
             f"{slope(lambda x: x['bare_spaced']):.3f} / {slope(lambda x: x['bare_b2b']):.3f} us", "", ""),
        ]

    c = r["cpu"]
    sw, ps = c["sweeper"], c["psql"]
    sw_total = sw["client"] + sw["backend"]
    ps_total = ps["client"] + ps["cluster"]
    rows += [
        (f"b. CPU/poll, {CPU_SESSIONS} idle: pgsweeper process", ms(sw["client"]), "", ""),
        ("   pgsweeper's backend (/proc of its pid)", ms(sw["backend"]), "", ""),
        ("   pgsweeper's side of the cluster (whole tree)", ms(sw["cluster"]), "", ""),
        ("   pgsweeper total (process + backend)", ms(sw_total), "", ""),
        ("   psql run: psql process", ms(ps["client"]), "", ""),
        ("   psql run: cluster (backend it spawns)", ms(ps["cluster"]), "", ""),
        ("   psql run total", ms(ps_total), "", ""),
        ("   ratio pgsweeper / psql", f"{sw_total / ps_total:.3f}", "<= 0.100",
         verdict(sw_total <= ps_total / 10)),
        ("   ref: backend CPU, count(*) FROM pg_stat_activity", ms(c["floors"]["scan"]), "", ""),
        ("   ref: backend CPU, SELECT 1", ms(c["floors"]["select1"]), "", ""),
    ]

    v = r["victims"]
    gone = v["all_gone"]
    rows += [
        (f"c. {v['sessions']} victims: start -> all gone", sec(gone) if gone is not None else "not all gone",
         "< 1 s", verdict(gone is not None and gone < 1.0)),
        ("   pgsweeper --once wall time", sec(v["wall"]), "", ""),
        ("   sessions terminated (stderr lines)", str(v["terminated"]), "", ""),
        ("   statements sent / of them actions (server log)",
         f"{len(v['statements'])} / {v['action_statements']}", "batches of <= 100",
         verdict(v["terminated"] == v["sessions"] and v["action_statements"] == -(-v["sessions"] // 100))),
    ]

    r1, rn = r["rss1"], r[f"rss{MANY_SERVERS}"]
    rows += [
        ("d. RSS (VmHWM), 1 server", f"{r1['hwm_kib'] / 1024:.2f} MiB", "<= 4 MiB",
         verdict(r1["hwm_kib"] <= 4 * 1024)),
        (f"   RSS (VmHWM), {MANY_SERVERS} servers ({rn['connected']} connected)",
         f"{rn['hwm_kib'] / 1024:.2f} MiB", "<= 12 MiB", verdict(rn["hwm_kib"] <= 12 * 1024)),
    ]

    for x, lim in ((r1, 1.4), (rn, 5.0)):
        m = x["mem"]
        rows.append((f"g. RssAnon, {x['servers']} server(s) (RSS / PSS beside)",
                     f"{m['RssAnon'] / 1024:.2f} MiB (RSS {m['VmRSS'] / 1024:.2f}, PSS {m['Pss'] / 1024:.2f})",
                     f"<= {lim:g} MiB", verdict(m["RssAnon"] <= lim * 1024)))

    full, empty = r["cg_full"]["ir"], r["cg_empty"]["ir"]

    def per_poll(d, once):
        return (d["ir"] - once) / (d["polls"] - 1) if d["ir"] and d["polls"] and d["polls"] > 1 else float("nan")
    pp_full, pp_empty = per_poll(r["cgd_full"], full), per_poll(r["cgd_empty"], empty)
    rows += [
        (f"e. Ir, --once, {CPU_SESSIONS} idle sessions", f"{full:,}", "", ""),
        ("   Ir, --once, 0 sessions", f"{empty:,}", "", ""),
        (f"   difference ({CPU_SESSIONS} sessions vs 0)", f"{full - empty:,}", "", ""),
        (f"   Ir per poll in the daemon, {CPU_SESSIONS} sessions", f"{pp_full:,.0f}", "", ""),
        ("   Ir per poll in the daemon, 0 sessions", f"{pp_empty:,.0f}", "", ""),
    ]

    w0 = max(len(x[0]) for x in rows)
    w1 = max(len(x[1]) for x in rows)
    w2 = max(len(x[2]) for x in rows)
    print()
    print(f"pgsweeper benchmarks: PostgreSQL {server_version}, {os.cpu_count()} CPUs, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    print(f"{'measurement':<{w0}}  {'value':>{w1}}  {'target':<{w2}}  result")
    print("-" * (w0 + w1 + w2 + 12))
    for m, val, tgt, ver in rows:
        print(f"{m:<{w0}}  {val:>{w1}}  {tgt:<{w2}}  {ver}")
    print()
    print("notes:")
    print(f" a. {LAT_SESSIONS} sessions per method opened one every {LAT_SPREAD / LAT_SESSIONS:.2f} s (jittered); "
          "the enforcer starts after the first one, so pgsweeper's deadline-driven polls observe every later one "
          "before its limit. Latency = client socket readable (FATAL sent by the dying backend) - "
          "(state_change + 3 s).")
    print(f" b. {sw['polls']} polls in {sw['seconds']:.1f} s "
          f"({'ESTIMATED as duration / interval' if sw['estimated'] else 'polls_total from metrics_file'}); "
          f"{PSQL_RUNS} psql runs back to back ({PG_BINDIR}/psql, -U postgres). pgsweeper and its backend: "
          f"/proc/PID/schedstat (ns); psql process: getrusage(RUSAGE_CHILDREN); whole tree = utime+stime "
          f"(1/{CLK_TCK} s ticks) of the postmaster + live children + reaped children (cutime), minus the "
          f"idle noise ({c['noise'] * 1000:.1f} ms/s) measured before. ref rows: {PSQL_RUNS * 3} runs of the "
          "statement on one pgsweeper-role connection, unnamed statements, backend schedstat.")
    print(f" a2. {QUIET_SESSIONS} sessions at random moments over {QUIET_SPREAD:g} s, all opened after pgsweeper's "
          "first poll (metrics_file polls_total >= 1); the bench holds no other connection. Latency = client "
          "socket readable - (idle start + 2 s); idle start: silent = client clock when the connection is ready; "
          "superuser = state_change read by a postgres connection right after each connect (client ready - "
          f"state_change: median {qa.get('ready_offset_median', float('nan')) * 1000:.2f} ms, "
          f"max {qa.get('ready_offset_max', float('nan')) * 1000:.2f} ms). Terminated lines: "
          f"{qs['terminated_lines']} / {qa['terminated_lines']}.")
    print(f" f. pgsweeper at interval 100ms, rule max_idle 1h, {COST_SECONDS:g} s window opened and closed at a "
          "metrics_file rewrite (polls: " + ", ".join(f"{x['sweeper']['polls']} at {x['sessions']}" for x in cost)
          + f"); bare scan = '{BARE_SCAN_SQL}' prepared, on a pgsweeper-role connection, "
          f"{max(20, int(COST_SECONDS / 0.1))} runs 100 ms apart and as many back to back; CPU from "
          "/proc/PID/schedstat.")
    print(f" c. statements seen in the server log for role pgsweeper: {'; '.join(v['statements'])}")
    for x in (r1, rn):
        m = x["mem"]
        print(f" d. {x['servers']} server(s): VmHWM {m['VmHWM']} KiB, VmRSS {m['VmRSS']} KiB = RssAnon {m['RssAnon']} "
              f"KiB (heap, stacks) + RssFile {m['RssFile']} KiB (binary and shared libraries, shared with "
              f"other processes); PSS {m['Pss']} KiB")
    print(" e. valgrind --tool=callgrind; --once rows: total Ir of the process (start-up, connect, one cycle, "
          f"exit); per-poll rows: daemon at interval 100ms under callgrind, (Ir - Ir of --once) / (polls - 1), "
          f"{r['cgd_full']['polls']} and {r['cgd_empty']['polls']} polls.")


# --- f. lock chains, horizon, role: the cost of the wave-2 rules (issue 13) ---

LOCK_ROUNDS = int(os.environ.get("BENCH_LOCK_ROUNDS", "3"))
LOCK_SECONDS = float(os.environ.get("BENCH_LOCK_SECONDS", "8"))
LOCK_WAITERS = int(os.environ.get("BENCH_LOCK_WAITERS", "100"))


def write_wave2_config(name, with_new_rules):
    """The cpu_bench rule (max_idle 1h, users [app], interval 100ms), and
    optionally the new rules, set so that none acts: a lock-chain rule of
    each kind, max_xmin_age, role: primary."""
    path = os.path.join(WORK, name + ".yaml")
    lines = ["interval: 100ms", "min_interval: 100ms", f"metrics_file: {os.path.join(WORK, name + '.prom')}",
             "servers:", "  - name: bench", f'    conninfo: "{conninfo()}"', "    rules:",
             "      - {name: idle, max_idle: 1h, users: [app]}"]
    if with_new_rules:
        lines += ["      - {name: blockers, max_blocking: 1h, users: [app], role: primary}",
                  "      - {name: queue, max_lock_wait: 1h, min_blocked: 1, action: cancel, users: [app]}",
                  "      - {name: horizon, max_xmin_age: 1_000_000_000, users: [app]}"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def measure_per_poll(admin, cfg, name, seconds, binary=None):
    """CPU per poll (pgsweeper process + its backend, schedstat) over `seconds`."""
    metrics = cfg[:-len(".yaml")] + ".prom"     # where write_wave2_config put it
    if os.path.exists(metrics):
        os.unlink(metrics)                  # the previous round's count
    if binary:
        err = open(os.path.join(WORK, name + ".stderr"), "w")
        p = subprocess.Popen([binary, "-c", cfg, "--log-target", "stderr"], stdin=subprocess.DEVNULL,
                             stdout=err, stderr=err)
        children.append(p)
    else:
        p = start_sweeper(cfg, name)
    try:
        end = time.monotonic() + 20
        while (read_polls(metrics) or 0) < 5 and time.monotonic() < end:
            time.sleep(0.05)
        backends = sweeper_backends(admin)
        if len(backends) != 1:
            raise RuntimeError(f"expected one pgsweeper backend, found {backends}")
        be = backends[0]
        polls0, sw0, be0 = read_polls(metrics), proc_cpu(p.pid), proc_cpu(be)
        time.sleep(seconds)
        polls1, sw1, be1 = read_polls(metrics), proc_cpu(p.pid), proc_cpu(be)
    finally:
        stop_sweeper(p)
    n = polls1 - polls0
    return {"polls": n, "client": (sw1 - sw0) / n, "backend": (be1 - be0) / n}


def locks_bench(admin):
    """Side by side in one run, 1000 idle sessions: (1) without the new
    rules, (2) with them and no lock waiter (target: within 10% of 1), (3)
    with them and LOCK_WAITERS sessions queued behind one idle-in-transaction
    blocker. Rounds alternate 1 and 2 (the machine is shared); medians."""
    conns = open_sessions(CPU_SESSIONS)
    setup = connect()
    setup.execute("DROP TABLE IF EXISTS bench_lk")
    setup.execute("CREATE TABLE bench_lk (id int PRIMARY KEY, v int)")
    setup.execute("INSERT INTO bench_lk VALUES (1, 0)")
    plain, new = write_wave2_config("w2-plain", False), write_wave2_config("w2-new", True)
    base = write_wave2_config("w2-base", False)
    runs = {"plain": [], "new": [], "waiters": []}
    # BENCH_BASELINE_BIN: an older pgsweeper (before these rules) measured with
    # the plain configuration in the same rounds: the cost they add when unused.
    baseline = os.environ.get("BENCH_BASELINE_BIN")
    if baseline:
        runs["base"] = []
    try:
        for i in range(LOCK_ROUNDS):
            for key, cfg in (("base", base), ("plain", plain), ("new", new)):
                if key not in runs:
                    continue
                log(f"f. round {i + 1}: {key}")
                runs[key].append(measure_per_poll(admin, cfg, f"w2-{key}", LOCK_SECONDS,
                                                  binary=baseline if key == "base" else None))
                log(f"   {runs[key][-1]}")
        blocker = connect()
        blocker.execute("BEGIN")
        blocker.execute("UPDATE bench_lk SET v = v + 1 WHERE id = 1")
        threads = []
        for c in conns[:LOCK_WAITERS]:
            t = threading.Thread(target=lambda c=c: c.execute("UPDATE bench_lk SET v = v + 1 WHERE id = 1"),
                                 daemon=True)
            t.start()
            threads.append(t)
        n = wait_count(admin, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
                       LOCK_WAITERS)
        log(f"f. {n} sessions wait behind one blocker")
        for i in range(LOCK_ROUNDS):
            log(f"f. round {i + 1}: waiters")
            runs["waiters"].append(measure_per_poll(admin, new, "w2-waiters", LOCK_SECONDS))
        blocker.execute("ROLLBACK")
        for t in threads:
            t.join(10)
        blocker.close()
    finally:
        close_all(conns)
        setup.execute("DROP TABLE IF EXISTS bench_lk")
        setup.close()

    def med(key, field):
        return statistics.median(x[field] for x in runs[key])
    out = {k: {f: med(k, f) for f in ("client", "backend")} for k in runs}
    for k in out:
        out[k]["total"] = out[k]["client"] + out[k]["backend"]
        out[k]["polls"] = sum(x["polls"] for x in runs[k])
    return out


def locks_main():
    admin = connect(user="postgres", dbname="postgres")
    server_version = admin.execute("SHOW server_version").fetchone()[0]
    log(f"f. wave-2 rules: {CPU_SESSIONS} idle sessions, {LOCK_ROUNDS} rounds of {LOCK_SECONDS:g} s")
    try:
        r = locks_bench(admin)
    finally:
        for p in list(children):
            stop_sweeper(p)
    base = r["plain"]["total"]
    print()
    print(f"pgsweeper wave-2 rules: PostgreSQL {server_version}, {os.cpu_count()} CPUs, "
          f"{time.strftime('%Y-%m-%d %H:%M')}, {CPU_SESSIONS} idle sessions, interval 100ms")
    print(f"{'CPU per poll (median of rounds)':<52}  {'process':>9}  {'backend':>9}  {'total':>9}  "
          f"{'vs 1':>7}  target")
    if "base" in r:
        x = r["base"]
        print(f"{'0. before these rules (BENCH_BASELINE_BIN), same config as 1':<52}  {ms(x['client']):>9}  "
              f"{ms(x['backend']):>9}  {ms(x['total']):>9}  {(x['total'] / base - 1) * 100:+6.1f}%")
    for key, label, target in (("plain", "1. without the new rules", ""),
                               ("new", "2. with them, no lock waiter", "<= +10%"),
                               ("waiters", f"3. with them, {LOCK_WAITERS} waiters behind one blocker", "")):
        x = r[key]
        ratio = x["total"] / base - 1
        ver = verdict(ratio <= 0.10) if target else ""
        print(f"{label:<52}  {ms(x['client']):>9}  {ms(x['backend']):>9}  {ms(x['total']):>9}  "
              f"{ratio * 100:+6.1f}%  {target} {ver}")
    print(f"polls measured (1/2/3): {r['plain']['polls']} / {r['new']['polls']} / {r['waiters']['polls']}; "
          "pgsweeper process and its backend by /proc/PID/schedstat.")


# --- storms (issue 18): many victims in one cycle (SPEC 15) ------------------------------

STORM_SIZES = [int(x) for x in os.environ.get("BENCH_STORM_SIZES", "500,2000").split(",")]
STORM_ROUNDS = int(os.environ.get("BENCH_STORM_ROUNDS", "3"))
STORM_LOADS = os.environ.get("BENCH_STORM_LOADS", "quiet,loaded").split(",")
STORM_PSQL_SQL = ("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                  "WHERE usename = 'app' AND state = 'idle'")


def storm_once(admin, n, method):
    """n idle app sessions, idle > 1 s; then either one pgsweeper --once
    (cap above n) or one psql statement ends them all. Returns the time from
    spawning the process to the last session gone from pg_stat_activity
    (polled every 10 ms), and for pgsweeper its terminated and unknown entries."""
    conns = open_sessions(n)
    try:
        wait_count(admin, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND state = 'idle'", n, 60)
        time.sleep(1.2)
        out = {}
        t0 = time.monotonic()
        if method == "pgsweeper":
            cfg = write_config(f"storm-{n}", interval="60s", rules=[("idle", "1s")], max_actions=n + 100)
            p = start_sweeper(cfg, f"storm-{n}", "--once")
        else:
            p = subprocess.Popen([os.path.join(PG_BINDIR, "psql"), "-X", "-q", "-h", PGHOST, "-p", PGPORT,
                                  "-U", "postgres", "-d", "postgres", "-c", STORM_PSQL_SQL],
                                 stdout=subprocess.DEVNULL)
        gone = wait_all_gone(admin, t0, 120)
        p.wait(60)
        out["wall"] = time.monotonic() - t0
        if method == "pgsweeper":
            children.remove(p)
            out["terminated"] = count_lines(p.errfile, ": terminated pid")
            out["unknown"] = count_lines(p.errfile, "result unknown")
            out["rc"] = p.returncode
        out["all_gone"] = gone
        return out
    finally:
        close_all(conns)
        wait_no_app(60)


def storm_sigterm(admin, n):
    """n idle victims, one pgsweeper daemon (cap above n); SIGTERM as soon
    as its first entry is on stderr. Returns how long the exit took, the
    entries written (terminated, unknown) and the sessions left alive: every
    victim is either logged or never sent (alive)."""
    conns = open_sessions(n)
    try:
        wait_count(admin, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND state = 'idle'", n, 60)
        time.sleep(1.2)
        cfg = write_config(f"storm-term-{n}", interval="60s", rules=[("idle", "1s")], max_actions=n + 100)
        p = start_sweeper(cfg, f"storm-term-{n}")
        t0 = time.monotonic()
        while count_lines(p.errfile, ": terminated pid") == 0 and time.monotonic() - t0 < 60:
            time.sleep(0.002)
        t1 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        p.wait(30)
        took = time.monotonic() - t1
        children.remove(p)
        time.sleep(0.5)
        return {"exit": took, "rc": p.returncode, "terminated": count_lines(p.errfile, ": terminated pid"),
                "unknown": count_lines(p.errfile, "result unknown"), "alive": app_count(admin)}
    finally:
        close_all(conns)
        wait_no_app(60)


def burners(k):
    return [subprocess.Popen(["/bin/sh", "-c", "while :; do :; done"]) for _ in range(k)]


def storm_main():
    """BENCH_ONLY=storm: the storm rows only; quiet, then with two CPU burners."""
    admin = connect(user="postgres", dbname="postgres")
    server_version = admin.execute("SHOW server_version").fetchone()[0]
    rows = []
    for load in STORM_LOADS:
        hogs = burners(2) if load == "loaded" else []
        try:
            for n in STORM_SIZES:
                res = {"pgsweeper": [], "psql": []}
                for r in range(STORM_ROUNDS):
                    order = ("psql", "pgsweeper") if r % 2 == 0 else ("pgsweeper", "psql")
                    for method in order:
                        log(f"storm {load}: {n} victims, {method}, round {r + 1}")
                        res[method].append(storm_once(admin, n, method))
                log(f"storm {load}: {n} victims, SIGTERM after the first batch")
                res["sigterm"] = storm_sigterm(admin, n)
                rows.append((load, n, res))
        finally:
            for h in hogs:
                h.kill()
                h.wait()
    print()
    print(f"Storms (issue 18): PostgreSQL {server_version}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M')}, "
          f"{STORM_ROUNDS} rounds per method (alternating order), cap above N")
    print(f"{'host':<7} {'N':>5}  {'psql: all gone':>15}  {'pgsweeper: all gone':>20}  {'ratio':>6}  "
          f"{'terminated':>10}  {'unknown':>7}  target")
    for load, n, res in rows:
        ps = statistics.median(x["all_gone"] or float("inf") for x in res["psql"])
        sw = statistics.median(x["all_gone"] or float("inf") for x in res["pgsweeper"])
        term = min(x["terminated"] for x in res["pgsweeper"])
        unk = max(x["unknown"] for x in res["pgsweeper"])
        ok = sw <= 1.1 * ps and term == n and unk == 0
        print(f"{load:<7} {n:>5}  {sec(ps):>15}  {sec(sw):>20}  {sw / ps:>6.2f}  {term:>10}  {unk:>7}  "
              f"<= 1.1x, all terminated, none unknown {verdict(ok)}")
        for method in ("psql", "pgsweeper"):
            print(f"        {method}: all gone " + ", ".join(sec(x['all_gone'] or float('inf')) for x in res[method])
                  + "; process wall " + ", ".join(sec(x['wall']) for x in res[method]))
        t = res["sigterm"]
        ok = t["exit"] < 1.0 and t["rc"] == 0 and t["terminated"] + t["unknown"] + t["alive"] == n
        print(f"        SIGTERM after the first entry: exit {sec(t['exit'])} (rc {t['rc']}), "
              f"{t['terminated']} terminated + {t['unknown']} unknown logged, {t['alive']} never sent "
              f"(alive); target: exit < 1 s, logged + alive = N {verdict(ok)}")


# --- lock queue: judging a long queue, and the canary behind it (issue 18) ---

LQ_POINTS = [int(x) for x in os.environ.get("BENCH_LQ_POINTS", "300,1000,3000").split(",")]
LQ_IDLE_S = 2.0


def lockqueue_run(admin, binary, name, n):
    """One pgsweeper (binary) on a server where n sessions queue on an
    advisory lock a superuser holds, with a canary idle app session and a
    max_idle rule for it: how late past its limit the canary ends, and the
    last poll's duration (snapshot sent -> judgement done)."""
    metrics = os.path.join(WORK, name + ".prom")
    cfg = os.path.join(WORK, name + ".yaml")
    with open(cfg, "w") as f:
        f.write("\n".join(["interval: 1s", "min_interval: 100ms", f"metrics_file: {metrics}", "servers:",
                           "  - name: bench", f'    conninfo: "{conninfo()}"', "    rules:",
                           "      - {name: blockers, max_blocking: 3s, users: [app]}",
                           f"      - {{name: canary, max_idle: {int(LQ_IDLE_S * 1000)}ms, users: [app], "
                           "applications: [canary]}"]) + "\n")
    canary = connect(options="-c application_name=canary")
    sc = admin.execute("SELECT extract(epoch FROM state_change) FROM pg_stat_activity WHERE pid = %s",
                       (canary.info.backend_pid,)).fetchone()[0]
    err = open(os.path.join(WORK, name + ".stderr"), "w")
    p = subprocess.Popen([binary, "-c", cfg, "--log-target", "stderr"], stdin=subprocess.DEVNULL,
                         stdout=err, stderr=err)
    children.append(p)
    try:
        watch = select.poll()                              # fds past 1024 here: no select()
        watch.register(canary.pgconn.socket, select.POLLIN)
        r = watch.poll(60000)
        ended = time.time()
        late = ended - (float(sc) + LQ_IDLE_S) if r else None
        poll_s = None
        try:
            for line in open(metrics):
                if line.startswith("pgsweeper_last_poll_duration_seconds"):
                    poll_s = float(line.split()[-1])
        except OSError:
            pass
    finally:
        stop_sweeper(p)
        canary.close()
    return {"late": late, "poll": poll_s}


def lockqueue_main():
    """BENCH_ONLY=lockqueue: at each of BENCH_LQ_POINTS waiters, the canary's
    lateness with this build and, if BENCH_BASELINE_BIN is set, with that one
    first, on the same queue; then bench-judge --lock-queue gives the
    judging CPU alone."""
    admin = connect(user="postgres", dbname="postgres")
    baseline = os.environ.get("BENCH_BASELINE_BIN")
    rows = []
    for n in LQ_POINTS:
        holder = connect(user="postgres")                  # advisory locks are per database: appdb's
        holder.execute("SELECT pg_advisory_lock(77)")
        conns = open_sessions(n)
        for c in conns:
            c.pgconn.send_query(b"SELECT pg_advisory_lock(77)")
        got = wait_count(admin, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'", n, 120)
        log(f"lock queue: {got} sessions wait on advisory lock 77")
        for label, binary in (("before", baseline), ("now", BIN)):
            if binary:
                x = lockqueue_run(admin, binary, f"lq-{label}-{n}", n)
                log(f"  {label}: {x}")
                rows.append((n, label, x))
        holder.close()
        close_all(conns)
        wait_count(admin, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'", 0, 60)
    print()
    print(f"{'waiters':>7}  {'build':<7}  {'canary past max_idle':>20}  {'last poll (s)':>13}")
    for n, label, x in rows:
        late = f"{x['late']:.3f} s" if x["late"] is not None else "not ended"
        poll = f"{x['poll']:.3f}" if x["poll"] is not None else "-"
        print(f"{n:>7}  {label:<7}  {late:>20}  {poll:>13}")


def quiet_main():
    """BENCH_ONLY=quiet: only scenario a2 (latency on a quiet server)."""
    for variant in ("silent", "admin"):
        wait_no_app()
        x = latency_quiet(variant, seed=12)
        print(f"a2 {variant}: " + str({k: v for k, v in x.items() if k != "sessions"}))


# --- fleet configuration (SPEC 16): include and rule_sets, no PostgreSQL ------

FLEET_POINTS = [int(x) for x in os.environ.get("BENCH_FLEET_POINTS", "250,500,1000,2000").split(",")]
FLEET_RUNS = int(os.environ.get("BENCH_FLEET_RUNS", "5"))
FLEET_SERVERS = int(os.environ.get("BENCH_FLEET_SERVERS", "1000"))
FLEET_CPU_WINDOW = float(os.environ.get("BENCH_FLEET_CPU_SECONDS", "10"))
# A closed port: every connect is refused at once, nothing is ever polled.
FLEET_CONNINFO = "host=127.0.0.1 port=1 connect_timeout=1 dbname=postgres user=pgsweeper"
FLEET_SET = """rule_sets:
  standard:
    - name: idle-in-transaction
      max_idle_in_transaction: 30m
    - name: long-queries
      max_query_duration: 1h
      action: cancel
"""


def fleet_server(i):
    """One server: the main file's rule set, then 2 rules of its own."""
    return (f"  - name: db{i:05d}\n"
            f'    conninfo: "{FLEET_CONNINFO} application_name=bench-{i}"\n'
            "    rule_sets: [standard]\n"
            "    rules:\n"
            "      - name: idle-sessions\n"
            "        max_idle: 8h\n"
            "        users: [app, \"report_*\"]\n"
            "      - name: old-sessions\n"
            "        max_session_age: 7d\n"
            "        action: log\n")


def fleet_tree(n, included=True):
    """A main file (include, the rule set, one server of its own: it needs
    one) and n server files in conf.d/, one server each; or, included=False,
    the same n + 1 servers in the main file alone. Returns the main file."""
    d = tempfile.mkdtemp(prefix=f"fleet{n}-", dir=WORK)
    main = os.path.join(d, "pgsweeper.yaml")
    body = "interval: 60s\n" + ('include: ["conf.d/*.yaml"]\n' if included else "") + FLEET_SET
    body += "servers:\n" + fleet_server(0).replace("db00000", "local")
    if included:
        os.mkdir(os.path.join(d, "conf.d"))
        for i in range(1, n + 1):
            with open(os.path.join(d, "conf.d", f"db{i:05d}.yaml"), "w") as f:
                f.write("servers:\n" + fleet_server(i))
    else:
        body += "".join(fleet_server(i) for i in range(1, n + 1))
    with open(main, "w") as f:
        f.write(body)
    return main


def fleet_check(main, runs):
    """Wall time of `pgsweeper --check -c main`: one warm-up, then `runs`."""
    times = []
    for k in range(runs + 1):
        t0 = time.monotonic()
        r = subprocess.run([BIN, "--check", "-c", main], capture_output=True, text=True)
        dt = time.monotonic() - t0
        if r.returncode != 0 or r.stdout != "configuration OK\n":
            raise SystemExit(f"--check -c {main} failed ({r.returncode}): {r.stdout}{r.stderr[:2000]}")
        if k:
            times.append(dt)
    return times


def fleet_servers_in_dump(main):
    r = subprocess.run([BIN, "--dump", "-c", main], capture_output=True, text=True, check=True)
    lines = r.stdout.splitlines()
    # servers, their "# from" comments, their own rules, and the set's rules (written once, at the top)
    return (sum(line.startswith("  - name: ") for line in lines),
            sum(line.startswith("  # from ") for line in lines),
            sum(line.startswith("      - name: ") for line in lines),
            sum(line.startswith("    - name: ") for line in lines))


def fleet_start(main, servers, settle=2.0, cpu_window=0.0):
    """Start the daemon with NOTIFY_SOCKET on a datagram socket of ours,
    drained by a thread as systemd would (sd_notify blocks on a full queue):
    the seconds from Popen to READY=1, then (after `settle` s, every server
    refused and backing off) its memory from /proc/PID/status."""
    path = os.path.join(WORK, f"notify-{os.getpid()}-{time.monotonic_ns()}.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.1)
    messages = []           # (monotonic time, text)
    stop = threading.Event()

    def drain():
        while not stop.is_set():
            try:
                data = sock.recv(65536).decode()
                messages.append((time.monotonic(), data))
            except socket.timeout:
                continue
    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    err = open(os.path.join(WORK, "fleet-daemon.stderr"), "w")
    env = dict(os.environ, NOTIFY_SOCKET=path)
    t0 = time.monotonic()
    p = subprocess.Popen([BIN, "-c", main, "--log-target", "stderr"], stdin=subprocess.DEVNULL,
                         stdout=err, stderr=err, env=env)
    children.append(p)
    ready = None
    try:
        while ready is None and time.monotonic() < t0 + 60 and p.poll() is None:
            ready = next((t - t0 for t, m in list(messages) if "READY=1" in m.split("\n")), None)
            time.sleep(0.001)
        if ready is None:
            raise SystemExit(f"no READY=1 within 60 s (exit {p.poll()}); see {err.name}")
        cpu_ready = proc_cpu(p.pid)
        time.sleep(settle)
        mem = {k: vm_kib(p.pid, k) for k in ("RssAnon", "RssFile", "VmRSS", "VmHWM")}
        cpu_settle = proc_cpu(p.pid)
        at_settle = list(messages)
        # every server refused and retrying with backoff: what it costs
        cpu_idle = None
        if cpu_window:
            time.sleep(cpu_window)
            cpu_idle = (proc_cpu(p.pid) - cpu_settle) / cpu_window
        # a reload: every file read again, the servers matched by name and
        # conninfo (all kept); SIGHUP to the READY=1 that follows RELOADING=1
        n_before = len(messages)
        t_hup = time.monotonic()
        p.send_signal(signal.SIGHUP)
        reload_s = None
        while reload_s is None and time.monotonic() < t_hup + 60 and p.poll() is None:
            seen = False
            for t, m in list(messages)[n_before:]:
                seen = seen or "RELOADING=1" in m.split("\n")
                if seen and "READY=1" in m.split("\n"):
                    reload_s = t - t_hup
                    break
            time.sleep(0.001)
    finally:
        stop_sweeper(p)
        stop.set()
        reader.join(2)
        sock.close()
        os.unlink(path)
        err.close()
    with open(err.name) as f:
        text = f.read()
    started = [line for line in text.splitlines() if " started, servers: " in line]
    reloaded = [line for line in text.splitlines() if "configuration reloaded" in line]
    return {"ready_s": ready, "mem": mem, "reload_s": reload_s, "cpu_ready": cpu_ready,
            "cpu_settle": cpu_settle - cpu_ready, "cpu_idle": cpu_idle, "reloaded": reloaded[0] if reloaded else "?", "started": started[0] if started else "?",
            "refused_lines": text.count("could not connect"), "servers": servers,
            "notify_messages": len(at_settle), "settle_s": at_settle[-1][0] - t0 if at_settle else 0.0,
            "status_messages": sum("STATUS=" in m for _, m in at_settle),
            "notify_bytes": sum(len(m) for _, m in at_settle),
            "last_status": next((m for _, m in reversed(messages) if "STATUS=" in m), "")}


def fleet_main():
    """BENCH_ONLY=fleet: SPEC 16's bench row. No PostgreSQL: bench/run starts
    none. 1. --check of a main file with a rule set and N included server
    files (one server each: the set + 2 rules), median of FLEET_RUNS, at each
    of FLEET_POINTS, and at 0 files for the fixed cost; the same servers in
    one file for comparison. 2. Start-up to READY=1 and RssAnon with
    FLEET_SERVERS included servers on a closed port (never connected)."""
    log(f"fleet: --check at {FLEET_POINTS} included files, {FLEET_RUNS} runs each (+1 warm-up)")
    rows = []
    base = statistics.median(fleet_check(fleet_tree(0), FLEET_RUNS))
    for n in FLEET_POINTS:
        main = fleet_tree(n)
        servers, froms, rules, set_rules = fleet_servers_in_dump(main)
        if servers != n + 1 or froms != n or rules != 2 * (n + 1) or set_rules != 2:
            raise SystemExit(f"{n} files: --dump shows {servers} servers, {froms} '# from', {rules} own rules, "
                             f"{set_rules} rules of the set")
        t = fleet_check(main, FLEET_RUNS)
        one = statistics.median(fleet_check(fleet_tree(n, included=False), FLEET_RUNS)) if n <= 3000 else None  # one file: at most 1 MiB
        rows.append((n, statistics.median(t), min(t), max(t), one))
        shutil.rmtree(os.path.dirname(main))
        log(f"  {n} files: median {statistics.median(t) * 1000:.1f} ms")
    log(f"fleet: daemon start-up with {FLEET_SERVERS} included servers on {FLEET_CONNINFO.split(' connect')[0]}")
    main = fleet_tree(FLEET_SERVERS)
    starts = [fleet_start(main, FLEET_SERVERS + 1, cpu_window=FLEET_CPU_WINDOW if k == 0 else 0.0)
              for k in range(FLEET_RUNS)]
    # the same servers in the main file alone (at most 1 MiB: about 3000 servers)
    one = fleet_start(fleet_tree(FLEET_SERVERS, included=False), FLEET_SERVERS + 1) if FLEET_SERVERS <= 3000 else None

    print()
    print(f"Fleet configuration (SPEC 16): main file with rule set 'standard' (2 rules) and one server, "
          f"+ N files in conf.d/ with one server each (rule_sets: [standard] + 2 own rules); "
          f"{os.cpu_count()} CPUs; median of {FLEET_RUNS} warm runs")
    print(f"  --check, main file only (fixed cost): {ms(base)}")
    print(f"  {'files':>6}  {'--check median':>14}  {'min..max':>17}  {'per file':>9}  {'(t - fixed)/N':>13}  "
          f"{'same servers, one file':>22}")
    for n, med, lo, hi, one_file in rows:
        print(f"  {n:>6}  {ms(med):>14}  {lo * 1000:>7.1f}..{hi * 1000:.1f} ms  {med / n * 1e6:>6.0f} us  "
              f"{(med - base) / n * 1e6:>10.0f} us  {ms(one_file) if one_file else '-':>22}")
    if len(rows) >= 2:
        (n0, t0, *_), (n1, t1, *_) = rows[0], rows[-1]
        print(f"  growth {n0} -> {n1} files: x{t1 / t0:.2f} for x{n1 / n0:.2f} the files; "
              f"slope {(t1 - t0) / (n1 - n0) * 1e6:.0f} us per file")
    at1000 = [r for r in rows if r[0] == 1000]
    if at1000:
        print(f"  target: 1000 files check in under 1 s: {verdict(at1000[0][1] < 1.0)} ({ms(at1000[0][1])})")
    ready = [x["ready_s"] for x in starts]
    anon = [x["mem"]["RssAnon"] for x in starts]
    print(f"  start-up, {FLEET_SERVERS} included files ({FLEET_SERVERS + 1} servers, port 1: refused), "
          f"Popen to READY=1 on NOTIFY_SOCKET: median {ms(statistics.median(ready))} "
          f"(runs {' '.join(f'{x * 1000:.0f}' for x in ready)} ms); '{starts[0]['started']}'")
    print(f"  first run: {starts[0]['refused_lines']} servers logged 'could not connect' (none of the "
          f"{FLEET_SERVERS + 1} connected); {starts[0]['notify_messages']} sd_notify datagrams from start to "
          f"2 s after READY=1, {starts[0]['status_messages']} of them with STATUS= "
          f"({starts[0]['notify_bytes'] / 1024:.0f} KiB)")
    print(f"  memory 2 s after READY=1: RssAnon median {statistics.median(anon) / 1024:.1f} MiB "
          f"(runs {' '.join(str(x) for x in anon)} kB), VmHWM {starts[0]['mem']['VmHWM'] / 1024:.1f} MiB, "
          f"VmRSS {starts[0]['mem']['VmRSS'] / 1024:.1f} MiB")
    x = starts[0]
    print(f"  CPU of the daemon (first run): {x['cpu_ready'] * 1000:.0f} ms to READY=1, "
          f"{x['cpu_settle'] * 1000:.0f} ms in the {2.0:.0f} s after (every server refused once), then "
          f"{x['cpu_idle'] * 100:.1f}% of a core over {FLEET_CPU_WINDOW:.0f} s of retries with backoff")
    rel = [x["reload_s"] for x in starts]
    print(f"  reload (SIGHUP to READY=1 after RELOADING=1), 2 s after start-up: median "
          f"{ms(statistics.median(rel))} (runs {' '.join(f'{x * 1000:.0f}' for x in rel)} ms); "
          f"'{starts[0]['reloaded']}'")
    if one:
        print(f"  the same {FLEET_SERVERS + 1} servers in one file: READY=1 after {ms(one['ready_s'])}, "
              f"RssAnon {one['mem']['RssAnon'] / 1024:.1f} MiB, VmHWM {one['mem']['VmHWM'] / 1024:.1f} MiB")


# --- connection pressure (issue 19, SPEC 14): caps and thresholds that do not act ---

PRESSURE_ROUNDS = int(os.environ.get("BENCH_PRESSURE_ROUNDS", "5"))
PRESSURE_SECONDS = float(os.environ.get("BENCH_PRESSURE_SECONDS", "15"))
PRESSURE_APPS = int(os.environ.get("BENCH_PRESSURE_APPS", "7"))          # web-0 .. web-6
PRESSURE_CAP = int(os.environ.get("BENCH_PRESSURE_CAP", "500"))


def write_pressure_config(name, with_pressure):
    """Configuration A (without): the cpu_bench rule, max_idle 1h for users
    [app], interval and min_interval 100ms. B (with): the same plus a
    per-application cap on web-* that no group reaches and a rule with a
    connection threshold that 1000 sessions stay under."""
    path = os.path.join(WORK, name + ".yaml")
    lines = ["interval: 100ms", "min_interval: 100ms", f"metrics_file: {os.path.join(WORK, name + '.prom')}",
             "servers:", "  - name: bench", f'    conninfo: "{conninfo()}"', "    rules:",
             "      - {name: idle, max_idle: 1h, users: [app]}"]
    if with_pressure:
        lines += [f'      - {{name: web-cap, max_sessions: {PRESSURE_CAP}, per: application, applications: ["web-*"]}}',
                  "      - {name: free-slots, when_connections_above: 95%, max_idle: 1h, users: [app]}"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def read_metric(path, prefix):
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(prefix):
                    return float(line.split()[-1])
    except OSError:
        pass
    return None


def measure_aligned(admin, cfg, name, seconds, binary=None):
    """CPU per poll of a pgsweeper process and of its one backend
    (/proc/PID/schedstat) over about `seconds`, the window opened and closed
    right after a rewrite of the metrics file (as sweeper_cost), so the polls
    counted (pgsweeper_polls_total) line up with the CPU read."""
    metrics = cfg[:-len(".yaml")] + ".prom"
    if os.path.exists(metrics):
        os.unlink(metrics)                  # the previous round's count
    err = open(os.path.join(WORK, name + ".stderr"), "w")
    p = subprocess.Popen([binary or BIN, "-c", cfg, "--log-target", "stderr"], stdin=subprocess.DEVNULL,
                         stdout=err, stderr=err)
    children.append(p)
    try:
        end = time.monotonic() + 20
        while (read_polls(metrics) or 0) < 5 and time.monotonic() < end and p.poll() is None:
            time.sleep(0.05)
        backends = sweeper_backends(admin)
        if len(backends) != 1:
            raise RuntimeError(f"{name}: expected one pgsweeper backend, found {backends} (see {err.name})")
        be = backends[0]
        polls0 = next_metrics_write(metrics)
        t0, sw0, be0 = time.monotonic(), proc_cpu(p.pid), proc_cpu(be)
        time.sleep(max(0.0, seconds - 1.0))
        polls1 = next_metrics_write(metrics)
        t1, sw1, be1 = time.monotonic(), proc_cpu(p.pid), proc_cpu(be)
        conns = read_metric(metrics, "pgsweeper_server_connections{")
        slots = read_metric(metrics, "pgsweeper_server_connection_slots{")
    finally:
        stop_sweeper(p)
        err.close()
    n = polls1 - polls0
    return {"polls": n, "seconds": t1 - t0, "client": (sw1 - sw0) / n, "backend": (be1 - be0) / n,
            "connections": conns, "slots": slots,
            "terminated": count_lines(err.name, "terminated"), "warnings": count_lines(err.name, "warning")}


def snapshot_sql_cpp(root, name="pg_snapshot_sql"):
    """A statement of root/src/sql.c (pg_snapshot_sql, or name) as the server
    receives it: the C preprocessor expands the macros (the statement is
    built from nested ones since 4c31c1c), Python joins the string literals."""
    import re
    out = subprocess.run(["cc", "-E", "-P", "-I", os.path.join(root, "include"), os.path.join(root, "src", "sql.c")],
                         check=True, capture_output=True, text=True).stdout
    body = out[out.index(name + "[] ="):]
    body = body[body.index("=") + 1:body.index(";")]
    return "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', body))


def statements_alone_cost(stmts, rounds, runs, spacing):
    """Backend CPU per run of each snapshot statement run by the bench on ONE
    pgsweeper-role connection (kept open, as pgsweeper keeps its own),
    prepared with plan_cache_mode = force_generic_plan, the statements taking
    turns run by run (the order rotates), one run every `spacing` s.
    stmts: [(key, sql, {N: value for $N})]. Returns {key: [CPU per run, one
    figure per round]}. (A fresh connection per statement, tried first, made
    the old statement look 1.2-1.4x dearer than on a long-lived one.)"""
    import re
    prepared = []
    for key, sql, params in stmts:
        q = re.sub(r"\$(\d+)", lambda m: f"%(p{m.group(1)})s", sql.replace("%", "%%"))
        prepared.append((key, q, {f"p{k}": v for k, v in params.items()}))
    out = {key: [] for key, _, _ in stmts}
    with psycopg.connect(host=PGHOST, port=PGPORT, user="pgsweeper", dbname="postgres", autocommit=True) as c:
        c.execute("SET plan_cache_mode = force_generic_plan")
        be = c.info.backend_pid
        for _ in range(6):
            for key, q, args in prepared:
                c.execute(q, args, prepare=True).fetchall()
        for r in range(rounds):
            spent = {key: 0.0 for key in out}
            for k in range(runs):
                n = (r * runs + k) % len(prepared)
                for key, q, args in prepared[n:] + prepared[:n]:
                    b0 = proc_cpu(be)
                    c.execute(q, args, prepare=True).fetchall()
                    spent[key] += proc_cpu(be) - b0
                    time.sleep(spacing)
            for key in out:
                out[key].append(spent[key] / runs)
            log(f"statement alone, round {r + 1}: " + ", ".join(f"{k} {ms(v[-1])}" for k, v in out.items()))
    return out


# What pgsweeper sends for config A (max_idle 1h at a 100 ms gap: bound 1h -
# 100ms, no other limit, no pids, no superusers, no lock waiters, no xmin
# age) and, from 4c31c1c on, no group key, no idle sessions wanted; B counts
# per application ($13). As text of type unknown (psycopg sends a str so),
# like pgsweeper, which prepares with no parameter types: the statement's
# casts type them. Typed Python values (a bool, an int4 for 3599900) gave
# the old statement another generic plan, 1.4x the cost of the one the
# daemon runs.
PRESSURE_PARAMS_OLD = {1: "f", 2: str(3600000 - 100), 3: None, 4: None, 5: None, 6: None, 7: "{}", 8: "f", 9: "f",
                       10: None}
PRESSURE_PARAMS_A = {**PRESSURE_PARAMS_OLD, 11: "f", 12: "f", 13: "f", 14: "f", 15: "f",
                     16: None, 17: None, 18: None, 19: None}
PRESSURE_PARAMS_B = {**PRESSURE_PARAMS_A, 13: "t"}
PRESSURE_STMT_RUNS = int(os.environ.get("BENCH_PRESSURE_STMT_RUNS", "50"))


def pressure_main():
    """BENCH_ONLY=pressure: issue 19. With 1000 idle app sessions spread over
    PRESSURE_APPS application names, the CPU per poll of A (one plain rule),
    B (A plus a cap no group reaches and a threshold not crossed; target B/A
    <= 1.2) and, with BENCH_BASELINE_BIN, C (that older binary with A: the
    snapshot statement before the one-pass counting), in alternating rounds."""
    admin = connect(user="postgres", dbname="postgres")
    server_version = admin.execute("SHOW server_version").fetchone()[0]
    baseline = os.environ.get("BENCH_BASELINE_BIN")
    cfg_a, cfg_b = write_pressure_config("pr-a", False), write_pressure_config("pr-b", True)
    cfg_c = write_pressure_config("pr-c", False)
    for cfg in (cfg_a, cfg_b):
        r = subprocess.run([BIN, "--check", "-c", cfg], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{cfg} rejected: {r.stderr}")
    methods = [("A", cfg_a, None), ("B", cfg_b, None)] + ([("C", cfg_c, baseline)] if baseline else [])
    runs = {m[0]: [] for m in methods}
    stmt_runs = {}
    log(f"pressure: opening {CPU_SESSIONS} idle app sessions over {PRESSURE_APPS} application names")
    conns = []
    try:
        for i in range(CPU_SESSIONS):
            conns.append(psycopg.connect(host=PGHOST, port=PGPORT, user="app", dbname="appdb", autocommit=True,
                                         application_name=f"web-{i % PRESSURE_APPS}"))
            if i and i % 250 == 0:
                log(f"  {i} sessions open")
        groups = admin.execute("SELECT application_name, count(*) FROM pg_stat_activity "
                               "WHERE backend_type = 'client backend' GROUP BY 1 ORDER BY 1").fetchall()
        log(f"pressure: client backends per application: {groups}")
        # What B's rules say about this cluster: --explain renders caps and thresholds.
        ex = subprocess.run([BIN, "--explain", "-c", cfg_b], capture_output=True, text=True)
        with open(os.path.join(WORK, "pr-b.explain"), "w") as f:
            f.write(ex.stdout + ex.stderr)
        import collections
        import re
        verdicts = collections.Counter(re.sub(r"[0-9][0-9hms.]*", "N", re.split(r"\s{2,}", line.strip())[-1])
                                       for line in ex.stdout.splitlines()[1:] if line.strip())
        log(f"pressure: --explain with B (exit {ex.returncode}), verdicts: {dict(verdicts.most_common(6))}")
        for i in range(PRESSURE_ROUNDS):
            order = methods[i % len(methods):] + methods[:i % len(methods)]
            for key, cfg, binary in order:
                x = measure_aligned(admin, cfg, f"pr-{key.lower()}", PRESSURE_SECONDS, binary)
                runs[key].append(x)
                log(f"round {i + 1} {key}: {x['polls']} polls in {x['seconds']:.1f} s, "
                    f"process {ms(x['client'])}, backend {ms(x['backend'])} per poll, "
                    f"connections {x['connections']}, slots {x['slots']}, terminated {x['terminated']}")
        # The statements alone, run by the bench: the old one (BENCH_BASELINE_SRC)
        # and the new one with A's and with B's parameters, 100 ms apart.
        stmts = [("A", snapshot_sql_cpp(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")),
                  PRESSURE_PARAMS_A)]
        # B: a server with a cap reads with the form that counts per key
        # (pg_snapshot_groups_sql); before it existed, one statement did both.
        root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
        try:
            stmts.append(("B", snapshot_sql_cpp(root, "pg_snapshot_groups_sql"), PRESSURE_PARAMS_B))
        except ValueError:
            stmts.append(("B", stmts[0][1], PRESSURE_PARAMS_B))
        if os.environ.get("BENCH_BASELINE_SRC"):
            stmts.append(("C", snapshot_sql_cpp(os.environ["BENCH_BASELINE_SRC"]), PRESSURE_PARAMS_OLD))
        for key, sql, params in stmts:
            if (sql.count("$19") > 0) != (19 in params):
                raise RuntimeError(f"statement {key}: parameters do not match")
        stmt_runs = statements_alone_cost(stmts, PRESSURE_ROUNDS, PRESSURE_STMT_RUNS, 0.1)
        left = app_count(admin)
    finally:
        for p in list(children):
            stop_sweeper(p)
        close_all(conns)

    def med(key, field):
        return statistics.median(x[field] for x in runs[key])
    out = {}
    for key in runs:
        out[key] = {f: med(key, f) for f in ("client", "backend")}
        out[key]["total"] = statistics.median(x["client"] + x["backend"] for x in runs[key])
        out[key]["polls"] = sum(x["polls"] for x in runs[key])
        out[key]["seconds"] = sum(x["seconds"] for x in runs[key])
    a = out["A"]
    labels = {"A": "A. without: max_idle 1h, users [app]",
              "B": f"B. with: A + max_sessions {PRESSURE_CAP} per application + 95% threshold",
              "C": "C. BENCH_BASELINE_BIN (statement before 4c31c1c), config A"}
    print()
    print(f"pgsweeper connection pressure (issue 19): PostgreSQL {server_version}, {os.cpu_count()} CPUs, "
          f"{time.strftime('%Y-%m-%d %H:%M')}, {CPU_SESSIONS} idle app sessions over {PRESSURE_APPS} "
          f"applications, interval 100ms, {PRESSURE_ROUNDS} rounds of {PRESSURE_SECONDS:g} s, medians")
    print(f"{'method':<72}  {'polls/s':>7}  {'daemon/poll':>11}  {'backend/poll':>12}  {'total/poll':>10}  "
          f"{'x A (d / b / total)':>22}  target")
    for key in runs:
        x = out[key]
        rd, rb, rt = x["client"] / a["client"], x["backend"] / a["backend"], x["total"] / a["total"]
        ratio = "" if key == "A" else f"{rd:.2f} / {rb:.2f} / {rt:.2f}"
        target = f"<= 1.2  {verdict(rt <= 1.2)}" if key == "B" else ""
        print(f"{labels[key]:<72}  {x['polls'] / x['seconds']:>7.1f}  {ms(x['client']):>11}  "
              f"{ms(x['backend']):>12}  {ms(x['total']):>10}  {ratio:>22}  {target}")
    print("per round, total ms/poll (process + backend); the order of the methods rotates each round:")
    for i in range(PRESSURE_ROUNDS):
        cells = []
        for key in runs:
            x = runs[key][i]
            cells.append(f"{key} {(x['client'] + x['backend']) * 1000:.2f}")
        pair = (runs["B"][i]["client"] + runs["B"][i]["backend"]) / (runs["A"][i]["client"] + runs["A"][i]["backend"])
        extra = ""
        if "C" in runs:
            pc = (runs["C"][i]["client"] + runs["C"][i]["backend"]) / (runs["A"][i]["client"] + runs["A"][i]["backend"])
            extra = f", C/A {pc:.2f}"
        print(f"  round {i + 1}: " + ", ".join(cells) + f"   B/A {pair:.2f}{extra}")
    if stmt_runs:
        sa = statistics.median(stmt_runs["A"])
        print(f"statement alone, backend CPU per run (one connection, prepared, generic plan, the statements "
              f"taking turns 100 ms apart, {PRESSURE_STMT_RUNS} runs each per round, median of {PRESSURE_ROUNDS} "
              "rounds):")
        for key, label in (("A", "pg_snapshot_sql, A's parameters"),
                           ("B", "pg_snapshot_groups_sql, B's (per application)"),
                           ("C", "old statement (before 4c31c1c), A's parameters")):
            if key in stmt_runs:
                v = stmt_runs[key]
                print(f"  {label:<58}  {ms(statistics.median(v)):>9}  x A {statistics.median(v) / sa:.2f}   "
                      f"rounds {' '.join(f'{x * 1000:.2f}' for x in v)}")
    term = {k: sum(x["terminated"] for x in runs[k]) for k in runs}
    warn = {k: sum(x["warnings"] for x in runs[k]) for k in runs}
    print(f"stderr lines 'terminated' / 'warning' per method: {term} / {warn}; app sessions left at the end: {left} of {CPU_SESSIONS}; "
          f"B's gauges: connections {runs['B'][-1]['connections']}, slots {runs['B'][-1]['slots']}")


# --- horizon holders (issue 22, SPEC 19): what reading them costs a poll ---

HORIZON_ROUNDS = int(os.environ.get("BENCH_HORIZON_ROUNDS", "5"))
HORIZON_SECONDS = float(os.environ.get("BENCH_HORIZON_SECONDS", "15"))
HORIZON_STMT_RUNS = int(os.environ.get("BENCH_HORIZON_STMT_RUNS", "50"))
HORIZON_LIMIT = 50_000_000
HORIZON_SLOT = "bench_horizon_slot"


def write_horizon_config(name, with_horizon):
    """The cpu_bench rule (max_idle 1h, users [app]), interval and
    min_interval 100ms, a metrics file; with_horizon adds a max_xmin_age
    rule of 50_000_000 that nothing here reaches."""
    path = os.path.join(WORK, name + ".yaml")
    lines = ["interval: 100ms", "min_interval: 100ms", f"metrics_file: {os.path.join(WORK, name + '.prom')}",
             "servers:", "  - name: bench", f'    conninfo: "{conninfo()}"', "    rules:",
             "      - {name: idle, max_idle: 1h, users: [app]}"]
    if with_horizon:
        lines.append(f"      - {{name: horizon, max_xmin_age: {HORIZON_LIMIT:_}}}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


# What pgsweeper sends for those configurations (as PRESSURE_PARAMS_A): $10
# the smallest max_xmin_age, or NULL without the rule.
HORIZON_PARAMS = {**PRESSURE_PARAMS_A, 10: str(HORIZON_LIMIT)}


def explain_analyze(stmts, runs):
    """EXPLAIN ANALYZE of each statement (generic plan, as pgsweeper runs it),
    `runs` times on one pgsweeper-role connection, the statements taking
    turns: {key: (median execution ms, the plan text of the median run)}."""
    import re
    plans = {key: [] for key, _, _ in stmts}
    with psycopg.connect(host=PGHOST, port=PGPORT, user="pgsweeper", dbname="postgres", autocommit=True) as c:
        c.execute("SET plan_cache_mode = force_generic_plan")
        calls = []
        for key, sql, params in stmts:
            name = "bench_ea_" + key.lower()
            c.execute(f"PREPARE {name} AS {sql}")
            args = ", ".join("NULL" if params.get(n) is None else "'" + params[n] + "'"
                             for n in range(1, max(params) + 1))
            calls.append((key, f"EXPLAIN (ANALYZE, TIMING ON) EXECUTE {name}({args})"))
        for _ in range(runs):
            for key, q in calls:
                text = "\n".join(r[0] for r in c.execute(q))
                t = float(re.search(r"Execution Time: ([0-9.]+) ms", text).group(1))
                plans[key].append((t, text))
        for key, _ in calls:
            c.execute(f"DEALLOCATE bench_ea_{key.lower()}")
    out = {}
    for key, p in plans.items():
        p.sort(key=lambda x: x[0])
        out[key] = p[len(p) // 2]
    return out


def plan_node_ms(text, node):
    """The total actual time (ms) of the first plan node whose line holds `node`."""
    import re
    for line in text.splitlines():
        if node in line:
            m = re.search(r"actual time=[0-9.]+\.\.([0-9.]+) ", line)
            return float(m.group(1)) if m else 0.0      # (never executed)
    return None


def measure_together(admin, methods, seconds):
    """The daemons of `methods` ([(key, cfg, binary)]) running at the same
    time, so that the load of the machine, which moves from minute to minute
    on the shared host, weighs on all of them alike. Each one's window opens
    and closes right after a rewrite of its own metrics file (as
    measure_aligned): the windows overlap but for up to a second at each end.
    Returns {key: {"polls", "seconds", "client", "backend"}}."""
    procs, backends = {}, {}
    try:
        for key, cfg, binary in methods:
            metrics = cfg[:-len(".yaml")] + ".prom"
            if os.path.exists(metrics):
                os.unlink(metrics)
            before = set(sweeper_backends(admin))
            err = open(os.path.join(WORK, f"hz-together-{key.lower()}.stderr"), "w")
            p = subprocess.Popen([binary or BIN, "-c", cfg, "--log-target", "stderr"], stdin=subprocess.DEVNULL,
                                 stdout=err, stderr=err)
            children.append(p)
            procs[key] = (p, metrics)
            end = time.monotonic() + 20
            while (read_polls(metrics) or 0) < 5 and time.monotonic() < end and p.poll() is None:
                time.sleep(0.05)
            new = set(sweeper_backends(admin)) - before
            if len(new) != 1:
                raise RuntimeError(f"{key}: expected one new pgsweeper backend, found {new}")
            backends[key] = new.pop()
        marks = {}

        def mark(key):
            p, metrics = procs[key]
            polls = next_metrics_write(metrics)
            marks.setdefault(key, []).append((polls, time.monotonic(), proc_cpu(p.pid), proc_cpu(backends[key])))

        for _ in range(2):
            threads = [threading.Thread(target=mark, args=(key,)) for key in procs]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if len(marks[next(iter(procs))]) == 1:
                time.sleep(max(0.0, seconds - 1.0))
    finally:
        for p, _ in procs.values():
            stop_sweeper(p)
    out = {}
    for key, ((p0, t0, c0, b0), (p1, t1, c1, b1)) in marks.items():
        n = p1 - p0
        out[key] = {"polls": n, "seconds": t1 - t0, "client": (c1 - c0) / n, "backend": (b1 - b0) / n}
    return out


def horizon_main():
    """BENCH_ONLY=horizon: issue 22. With 1000 idle app sessions, the CPU per
    poll of A (BENCH_BASELINE_BIN, the binary before the holders were read,
    with a max_xmin_age rule), B (the current binary, same configuration;
    target B/A <= 1.10) and C (the current binary without max_xmin_age), in
    rotating rounds; then the statements alone and EXPLAIN ANALYZE."""
    admin = connect(user="postgres", dbname="postgres")
    server_version = admin.execute("SHOW server_version").fetchone()[0]
    baseline = os.environ.get("BENCH_BASELINE_BIN")
    if not baseline:
        raise RuntimeError("BENCH_ONLY=horizon needs BENCH_BASELINE_BIN (bench/run builds it)")
    cfg_a, cfg_b = write_horizon_config("hz-a", True), write_horizon_config("hz-b", True)
    cfg_c = write_horizon_config("hz-c", False)
    for cfg in (cfg_b, cfg_c):
        r = subprocess.run([BIN, "--check", "-c", cfg], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{cfg} rejected: {r.stderr}")
    # A slot the scan finds (physical, not reserving WAL: it holds no xmin,
    # so no row comes of it); prepared transactions need a restart
    # (max_prepared_transactions), there are none.
    admin.execute("SELECT pg_create_physical_replication_slot(%s, false)", (HORIZON_SLOT,))
    methods = [("A", cfg_a, baseline), ("B", cfg_b, None), ("C", cfg_c, None)]
    runs = {m[0]: [] for m in methods}
    together = {m[0]: [] for m in methods}
    stmt_runs, plans = {}, {}
    log(f"horizon: opening {CPU_SESSIONS} idle app sessions")
    conns = []
    gauges = {}
    try:
        conns = open_sessions(CPU_SESSIONS)
        for i in range(HORIZON_ROUNDS):
            order = methods[i % len(methods):] + methods[:i % len(methods)]
            for key, cfg, binary in order:
                x = measure_aligned(admin, cfg, f"hz-{key.lower()}", HORIZON_SECONDS, binary)
                runs[key].append(x)
                with open(cfg[:-len(".yaml")] + ".prom") as f:
                    gauges[key] = [line.strip() for line in f if line.startswith("pgsweeper_horizon_age{")]
                log(f"round {i + 1} {key}: {x['polls']} polls in {x['seconds']:.1f} s, "
                    f"process {ms(x['client'])}, backend {ms(x['backend'])} per poll, terminated {x['terminated']}")
        for i in range(HORIZON_ROUNDS):
            x = measure_together(admin, methods[i % len(methods):] + methods[:i % len(methods)], HORIZON_SECONDS)
            for key in together:
                together[key].append(x[key])
            log(f"together, round {i + 1}: " + ", ".join(
                f"{k} {v['polls']} polls, {ms(v['client'])} + {ms(v['backend'])}" for k, v in x.items()))
        root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
        stmts = [("A", snapshot_sql_cpp(os.environ["BENCH_BASELINE_SRC"]), HORIZON_PARAMS),
                 ("B", snapshot_sql_cpp(root), HORIZON_PARAMS),
                 ("C", snapshot_sql_cpp(root), PRESSURE_PARAMS_A)]
        stmt_runs = statements_alone_cost(stmts, HORIZON_ROUNDS, HORIZON_STMT_RUNS, 0.1)
        plans = explain_analyze(stmts, 21)
        left = app_count(admin)
    finally:
        for p in list(children):
            stop_sweeper(p)
        close_all(conns)
        admin.execute("SELECT pg_drop_replication_slot(%s)", (HORIZON_SLOT,))

    out = {}
    for key in runs:
        out[key] = {f: statistics.median(x[f] for x in runs[key]) for f in ("client", "backend")}
        out[key]["total"] = statistics.median(x["client"] + x["backend"] for x in runs[key])
        out[key]["polls"] = sum(x["polls"] for x in runs[key])
        out[key]["seconds"] = sum(x["seconds"] for x in runs[key])
    a = out["A"]
    labels = {"A": "A. before the holders (BENCH_BASELINE_BIN), max_xmin_age rule",
              "B": "B. current, same configuration (reads the holders)",
              "C": "C. current, without max_xmin_age"}
    print()
    print(f"pgsweeper horizon holders (issue 22): PostgreSQL {server_version}, {os.cpu_count()} CPUs, "
          f"{time.strftime('%Y-%m-%d %H:%M')}, {CPU_SESSIONS} idle app sessions, interval 100ms, "
          f"{HORIZON_ROUNDS} rounds of {HORIZON_SECONDS:g} s, medians")
    print(f"{'method':<64}  {'polls/s':>7}  {'daemon/poll':>11}  {'backend/poll':>12}  {'total/poll':>10}  "
          f"{'x A (d / b / total)':>22}  target")
    for key in runs:
        x = out[key]
        rd, rb, rt = x["client"] / a["client"], x["backend"] / a["backend"], x["total"] / a["total"]
        ratio = "" if key == "A" else f"{rd:.2f} / {rb:.2f} / {rt:.2f}"
        target = f"<= 1.10  {verdict(rt <= 1.10)}" if key == "B" else ""
        print(f"{labels[key]:<64}  {x['polls'] / x['seconds']:>7.1f}  {ms(x['client']):>11}  "
              f"{ms(x['backend']):>12}  {ms(x['total']):>10}  {ratio:>22}  {target}")
    print("per round, total ms/poll (process + backend); the order of the methods rotates each round:")
    for i in range(HORIZON_ROUNDS):
        tot = {k: runs[k][i]["client"] + runs[k][i]["backend"] for k in runs}
        print(f"  round {i + 1}: " + ", ".join(f"{k} {v * 1000:.2f}" for k, v in tot.items())
              + f"   B/A {tot['B'] / tot['A']:.2f}, C/A {tot['C'] / tot['A']:.2f}")
    bas = [(runs["B"][i]["client"] + runs["B"][i]["backend"]) / (runs["A"][i]["client"] + runs["A"][i]["backend"])
           for i in range(HORIZON_ROUNDS)]
    print(f"  B/A per round: min {min(bas):.2f}, median {statistics.median(bas):.2f}, max {max(bas):.2f}")
    print(f"the three daemons running at the same time ({HORIZON_ROUNDS} rounds of {HORIZON_SECONDS:g} s, each "
          "daemon's window aligned on its own metrics writes), medians:")
    tg = {k: {f: statistics.median(x[f] for x in v) for f in ("client", "backend")} for k, v in together.items()}
    for k in tg:
        tg[k]["total"] = statistics.median(x["client"] + x["backend"] for x in together[k])
    for key in together:
        x = tg[key]
        rd, rb, rt = (x[f] / tg["A"][f] for f in ("client", "backend", "total"))
        ratio = "" if key == "A" else f"{rd:.2f} / {rb:.2f} / {rt:.2f}"
        target = f"<= 1.10  {verdict(rt <= 1.10)}" if key == "B" else ""
        polls = sum(r["polls"] for r in together[key])
        secs = sum(r["seconds"] for r in together[key])
        print(f"{labels[key]:<64}  {polls / secs:>7.1f}  {ms(x['client']):>11}  {ms(x['backend']):>12}  "
              f"{ms(x['total']):>10}  {ratio:>22}  {target}")
    tbas = []
    for i in range(HORIZON_ROUNDS):
        tot = {k: together[k][i]["client"] + together[k][i]["backend"] for k in together}
        tbas.append(tot["B"] / tot["A"])
        print(f"  round {i + 1}: " + ", ".join(f"{k} {v * 1000:.2f}" for k, v in tot.items())
              + f"   B/A {tot['B'] / tot['A']:.2f}, C/A {tot['C'] / tot['A']:.2f}")
    print(f"  B/A per round: min {min(tbas):.2f}, median {statistics.median(tbas):.2f}, max {max(tbas):.2f}")
    if stmt_runs:
        sa = statistics.median(stmt_runs["A"])
        print(f"statement alone, backend CPU per run (one connection, prepared, generic plan, the statements "
              f"taking turns 100 ms apart, {HORIZON_STMT_RUNS} runs each per round, median of {HORIZON_ROUNDS} "
              "rounds):")
        for key, label in (("A", "pg_snapshot_sql before the holders, $10 set"),
                           ("B", "pg_snapshot_sql now, $10 set (reads the holders)"),
                           ("C", "pg_snapshot_sql now, $10 NULL")):
            v = stmt_runs[key]
            print(f"  {label:<58}  {ms(statistics.median(v)):>9}  x A {statistics.median(v) / sa:.2f}   "
                  f"rounds {' '.join(f'{x * 1000:.2f}' for x in v)}")
    if plans:
        print("EXPLAIN ANALYZE (the statements taking turns), Execution Time, median of 21 runs: "
              + ", ".join(f"{k} {plans[k][0]:.3f} ms" for k in plans))
        names = {"scan": "Function Scan on pg_stat_get_activity a_1", "agg": "->  Aggregate",
                 "px": 'Subquery Scan on "*SELECT* 3"', "px_scan": "Function Scan on pg_prepared_xact",
                 "sl": 'Subquery Scan on "*SELECT* 4"', "sl_scan": "Function Scan on pg_get_replication_slots"}
        for k, (t, text) in plans.items():
            n = {key: plan_node_ms(text, node) for key, node in names.items()}
            print(f"  {k}: activity scan {n['scan']} ms, aggregate (k) {n['agg']} ms; prepared xacts branch "
                  f"{n['px']} ms (scan {n['px_scan']}), slots branch {n['sl']} ms (scan {n['sl_scan']})")
        with open(os.path.join(WORK, "hz-plans.txt"), "w") as f:
            for k, (t, text) in plans.items():
                f.write(f"== {k} ({t:.3f} ms)\n{text}\n")
        for k, (t, text) in plans.items():
            print(f"  plan {k}:")
            for line in text.splitlines():
                print("    " + line)
    term = {k: sum(x["terminated"] for x in runs[k]) for k in runs}
    warn = {k: sum(x["warnings"] for x in runs[k]) for k in runs}
    print(f"stderr lines 'terminated' / 'warning' per method: {term} / {warn}; app sessions left at the end: "
          f"{left} of {CPU_SESSIONS}")
    print(f"horizon gauges at the last round: {gauges}")


if __name__ == "__main__":
    # BENCH_ONLY=locks bench/run: only the wave-2 rules' figures (section f);
    # BENCH_ONLY=quiet: only the quiet-server latency (a2);
    # BENCH_ONLY=lockqueue: only the lock queue of issue 18;
    # BENCH_ONLY=pressure: only the connection-pressure rows of issue 19;
    # BENCH_ONLY=horizon: only the horizon holders' row of issue 22;
    # BENCH_ONLY=fleet: only the fleet configuration rows (SPEC 16, no cluster).
    if os.environ.get("BENCH_ONLY") == "fleet":
        fleet_main()
    elif os.environ.get("BENCH_ONLY") == "locks" or "--locks" in sys.argv[1:]:
        locks_main()
    elif os.environ.get("BENCH_ONLY") == "quiet":
        quiet_main()
    elif os.environ.get("BENCH_ONLY") == "storm":
        storm_main()
    elif os.environ.get("BENCH_ONLY") == "lockqueue":
        lockqueue_main()
    elif os.environ.get("BENCH_ONLY") == "pressure":
        pressure_main()
    elif os.environ.get("BENCH_ONLY") == "horizon":
        horizon_main()
    else:
        main()
