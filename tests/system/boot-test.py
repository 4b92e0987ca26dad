#!/usr/bin/python3
"""The Debian package under a real systemd (PID 1), booted with systemd-nspawn.

    boot-test.py SOURCE_DIR [DEB]

DEB defaults to $PGSWEEPER_DEB; without either, tools/build-deb builds one.
DEBS, the .debs installed inside (the container has no network), is
$PGSWEEPER_CONTAINER_DEBS (tools/test fetches them); without it, this script
runs tools/lib.sh's fetch_container_debs itself (apt-get --download-only on
this machine, nothing installed here). A failed download is a failure.
The container is this machine's own tree, copy-on-write (an overlay of / with
a tmpfs upper layer), booted as in /work/shared/notes/systemd-in-a-container.md
(also summed up in README, "Development"): own machine id, own cgroups,
--private-network (its PostgreSQL, postgresql@15-main, starts at boot on its
own loopback), CAP_BPF and the bpf system call so that IPAddressDeny= works.

Inside it: dpkg -i the package, create the role and grants of the README, write
a configuration with one enforcing rule, then check (each prints "ok:"):
 install    the package installs; its unit is enabled and active on the safe
            default; the journal catalog was loaded by the install
 start      systemctl start: active, STATUS= says the server is up
 enforce    an idle session of the test role is terminated at its limit
 journal    that entry has MESSAGE_ID and PGSWEEPER_* fields; journalctl -x
            shows its catalog text
 capture    --capture run with the service's identity (DynamicUser=
            pgsweeper, the README's grants) sees the test role's idle session
            and its query; /usr/share/pgsweeper/capture.sql through psql takes
            the same; --explain --from replays both to the same verdict, at
            the capture's time
 reload     a good edit applies (a renamed rule with a new limit ends the next
            session); a broken file fails the reload, the same process keeps
            enforcing the old rules
 fleet      a server file dropped into /etc/pgsweeper/conf.d (read through the
            main file's include, by the sandboxed service) with a rule set of
            the main file: reload, and its server ends the next session; that
            file broken and SIGHUP sent past ExecReload='s check: "reload
            failed (errors in /etc/pgsweeper/conf.d/...)", the same process
            keeps enforcing
 node-exporter
            Debian's prometheus-node-exporter (its .debs fetched on this
            machine beforehand, see DEBS above) installed inside, its textfile
            collector pointed at /run/pgsweeper by a drop-in, pgsweeper's
            metrics_file there: pgsweeper_polls_total and
            pgsweeper_last_poll_timestamp_seconds read back from
            http://localhost:9100/metrics (current, then advancing), every
            series of the file there, node_textfile_scrape_error 0;
            PostgreSQL stopped: pgsweeper_server_up 0 there; started: 1
 watchdog   SIGSTOP of the main process: "Watchdog timeout", a new main process
 startlimit a broken file plus systemctl restart ends in the start limit; once
            fixed, start is refused until systemctl reset-failed (pgsweeper(8))
 stop       systemctl stop exits 0 in under 2 s, status 0
 ipdeny     IPAddressDeny=any alone: the server over 127.0.0.1 stays down (the
            filter is really applied); plus IPAddressAllow=localhost: pgsweeper
            connects over host=127.0.0.1 and enforces
Every mount, cgroup and process made here is removed on the way out, failure
or not. Exit 77 only when this machine cannot boot a container (not root, no
systemd-nspawn, overlayfs or cgroup mounts refused), with the reason.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checklib import Failed, check, find_deb  # noqa: E402  (tests/checklib.py, read on the host)

SKIP = 77
CGROUP = "/sys/fs/cgroup"
NAME = f"pgsweeper-systest-{os.getpid()}"
DEB_DIR = "/srv/pgsweeper-deb"
DEBS_DIR = "/srv/pgsweeper-container-debs"       # read-only: tools/lib.sh's PGSWEEPER_CONTAINER_DEBS
CONFIG = "/etc/pgsweeper/pgsweeper.yaml"
DROPIN_DIR = "/etc/systemd/system/pgsweeper.service.d"
MESSAGE_ID_TERMINATED = "c8d9cef8c7894f4eb8061eb514d27d30"
MESSAGE_ID_RELOAD_FAILED = "421a2c1e79b6437694b1c6771eba2ecf"
CONFD_FILE = "/etc/pgsweeper/conf.d/50-systest-tcp.yaml"
APP_PASSWORD = "systest-app-pw"
SWEEPER_PASSWORD = "systest-sweeper-pw"
# commands run inside get a plain environment, not this process's
INSIDE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


class Skip(Exception):
    pass


def passed(what):
    """Report a check whose assertion is the step just before (a command run
    with check=True, or a wait_for that raises on timeout)."""
    print("ok:", what, flush=True)


def log(*a):
    print(*a, flush=True)


def wait_for(pred, timeout, what, interval=0.2):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise Failed(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Container:
    """One booted container; close() undoes everything, in reverse order."""

    def __init__(self, deb, debs):
        self.deb = deb
        self.debs = debs
        self.tmp = tempfile.mkdtemp(prefix="pgsweeper-systest.")
        self.ovl = os.path.join(self.tmp, "ovl")
        self.root = os.path.join(self.tmp, "root")
        self.mounts = []        # mount points, in mount order
        self.cgroups = []       # cgroup dirs we made
        self.nspawn = None
        self.init_pid = None
        self.log_path = os.path.join(self.tmp, "nspawn.log")

    # -- setup ---------------------------------------------------------------

    def mount(self, *argv):
        target = argv[-1]
        os.makedirs(target, exist_ok=True)
        r = subprocess.run(["mount", *argv], capture_output=True, text=True)
        if r.returncode != 0:
            raise Skip(f"cannot mount {' '.join(argv)}: {r.stderr.strip()}")
        self.mounts.append(target)

    def make_cgroups(self):
        """A cgroup of our own in each hierarchy nspawn looks at (hybrid: the
        unified and the name=systemd ones; pure v2: the root)."""
        if os.path.exists(os.path.join(CGROUP, "cgroup.controllers")):
            parents = [CGROUP]
        else:
            parents = [os.path.join(CGROUP, h) for h in ("unified", "systemd")]
        for p in parents:
            if not os.path.isdir(p):
                raise Skip(f"no cgroup hierarchy at {p}")
            d = os.path.join(p, NAME)
            try:
                os.mkdir(d)
            except OSError as e:
                raise Skip(f"cannot create a cgroup in {p}: {e}")
            self.cgroups.append(d)

    def boot(self):
        self.mount("-t", "tmpfs", "-o", "mode=0755", "tmpfs", self.ovl)
        for d in ("upper", "work"):
            os.mkdir(os.path.join(self.ovl, d))
        self.mount("-t", "overlay", "overlay", "-o",
                   f"lowerdir=/,upperdir={self.ovl}/upper,workdir={self.ovl}/work", self.root)
        r = subprocess.run(["systemd-id128", "new"], capture_output=True, text=True, check=True)
        with open(os.path.join(self.root, "etc/machine-id"), "w") as f:
            f.write(r.stdout)
        self.make_cgroups()
        # The shell joins our cgroups, then becomes nspawn: the container's
        # payload/supervisor cgroups are made under ours, not at the root.
        join = "".join(f"echo $$ > {d}/cgroup.procs && " for d in self.cgroups)
        argv = ["systemd-nspawn", "-D", self.root, "-b", "--register=no", "--keep-unit",
                "--private-network", f"--machine={NAME}", f"--bind-ro={os.path.dirname(self.deb)}:{DEB_DIR}",
                f"--bind-ro={self.debs}:{DEBS_DIR}",
                "--console=read-only", "--capability=CAP_BPF", "--system-call-filter=bpf"]
        self.log_fh = open(self.log_path, "wb")
        self.nspawn = subprocess.Popen(["sh", "-c", join + 'exec "$@"', "sh", *argv],
                                       stdin=subprocess.DEVNULL, stdout=self.log_fh, stderr=subprocess.STDOUT,
                                       env=dict(os.environ, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1"),
                                       start_new_session=True)

        def init_pid():
            # nspawn's first child is an intermediate that exits; the init is
            # the child that runs systemd (as seen from here, not "(sd-...)")
            if self.nspawn.poll() is not None:
                raise Failed(f"systemd-nspawn exited with {self.nspawn.returncode}: {self.console_tail()}")
            try:
                with open(f"/proc/{self.nspawn.pid}/task/{self.nspawn.pid}/children") as f:
                    kids = f.read().split()
                for k in kids:
                    with open(f"/proc/{k}/comm") as f:
                        if f.read().strip() == "systemd":
                            return int(k)
            except OSError:
                pass
            return None

        self.init_pid = wait_for(init_pid, 30, "the container's init")
        state = wait_for(lambda: self.running_state(), 90, "systemctl is-system-running --wait", interval=0.5)
        log(f"container {NAME} booted: init pid {self.init_pid}, system {state}")

    def running_state(self):
        if self.nspawn.poll() is not None:
            raise Failed(f"systemd-nspawn exited with {self.nspawn.returncode}: {self.console_tail()}")
        r = self.run("systemctl", "is-system-running", "--wait", timeout=90, check=False, quiet=True)
        state = r.stdout.strip()
        if state not in ("running", "degraded"):
            log(f"is-system-running: {state!r} {r.stderr.strip()}")
            return None
        return state

    def console_tail(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-30:])
        except OSError:
            return ""

    # -- inside --------------------------------------------------------------

    def run(self, *argv, check=True, timeout=60, input=None, quiet=False):
        cmd = ["nsenter", "-t", str(self.init_pid), "-a", "--", *argv]
        if not quiet:
            log("+", " ".join(argv))
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input, env=INSIDE_ENV)
        if check and r.returncode != 0:
            raise Failed(f"{' '.join(argv)} exited with {r.returncode}:\n{r.stdout}{r.stderr}")
        return r

    def popen(self, *argv):
        return subprocess.Popen(["nsenter", "-t", str(self.init_pid), "-a", "--", *argv],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=INSIDE_ENV)

    def write(self, path, text):
        # through the container's own view (no host path tricks)
        self.run("sh", "-c", f'mkdir -p "$(dirname "$1")" && cat > "$1"', "sh", path, input=text)

    def psql(self, sql):
        return self.run("runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1",
                        "-d", "postgres", "-At", "-c", sql).stdout

    def show(self, *props):
        out = self.run("systemctl", "show", "pgsweeper", *[f"-p{p}" for p in props], quiet=True).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, *matches, cursor=None):
        argv = ["journalctl", "--no-pager", "-o", "json"]
        if cursor:
            argv += ["--after-cursor", cursor]
        r = self.run(*argv, *matches, quiet=True)
        return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]

    def cursor(self):
        r = self.run("journalctl", "--no-pager", "-o", "json", "-n", "1", quiet=True)
        lines = [line for line in r.stdout.splitlines() if line.startswith("{")]
        return json.loads(lines[-1])["__CURSOR"] if lines else None

    # -- teardown -------------------------------------------------------------

    def close(self):
        if self.nspawn is not None and self.nspawn.poll() is None:
            if self.init_pid:
                subprocess.run(["nsenter", "-t", str(self.init_pid), "-a", "--", "systemctl", "poweroff"],
                               capture_output=True, timeout=30)
            try:
                self.nspawn.wait(timeout=30)
            except subprocess.TimeoutExpired:
                # nspawn forwards SIGTERM to the container as a shutdown request
                self.nspawn.terminate()
                try:
                    self.nspawn.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self.nspawn.kill()
                    self.nspawn.wait(timeout=15)
        if self.nspawn is not None:
            self.log_fh.close()
        # whatever is still in our cgroups was started by this test
        for d in self.cgroups:
            for _ in range(50):
                pids = self.cgroup_pids(d)
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.1)
        for target in reversed(self.mounts):
            r = subprocess.run(["umount", "-R", target], capture_output=True, text=True)
            if r.returncode != 0:
                log(f"umount {target}: {r.stderr.strip()}; detaching it lazily")
                subprocess.run(["umount", "-R", "-l", target], capture_output=True)
        for d in self.cgroups:
            for sub, _, _ in sorted(os.walk(d), key=lambda w: -w[0].count("/")):
                try:
                    os.rmdir(sub)
                except OSError as e:
                    log(f"cannot remove cgroup {sub}: {e}")
        shutil.rmtree(self.tmp, ignore_errors=True)
        leftovers = [m for m in self.mounts if os.path.ismount(m)] + [d for d in self.cgroups if os.path.exists(d)]
        if leftovers:
            raise Failed(f"cleanup left {leftovers}")
        log("cleanup: container stopped, mounts and cgroups removed")

    @staticmethod
    def cgroup_pids(d):
        pids = set()
        for sub, _, files in os.walk(d):
            if "cgroup.procs" in files:
                try:
                    with open(os.path.join(sub, "cgroup.procs")) as f:
                        pids |= {int(p) for p in f.read().split()}
                except OSError:
                    pass
        return pids


# ---------------------------------------------------------------------------
# the checks
# ---------------------------------------------------------------------------

def config(rule, limit, host="/run/postgresql", extra=""):
    conninfo = f"host={host} dbname=postgres user=pgsweeper"
    if host != "/run/postgresql":
        conninfo += f" password={SWEEPER_PASSWORD} connect_timeout=3"
    return f"""interval: 1s
servers:
  - name: local
    conninfo: "{conninfo}"
    rules:
      - name: {rule}
        max_idle: {limit}
        users: [app]
        action: terminate
{extra}"""


# A session of the test role over TCP that stays idle, and reports when the
# server closes it: prints "pid N", then "closed after S" (or "open after S").
IDLE_SESSION = r"""
import select, sys, time, psycopg
c = psycopg.connect("host=127.0.0.1 dbname=postgres user=app password=%s application_name=systest-idle",
                    autocommit=True)
c.execute("SELECT 1")
t0 = time.monotonic()
print("pid", c.info.backend_pid, flush=True)
r, _, _ = select.select([c.fileno()], [], [], float(sys.argv[1]))
print("closed" if r else "open", "after", round(time.monotonic() - t0, 2), flush=True)
""" % APP_PASSWORD


def idle_session(ct, wait):
    """Start one; returns (backend pid, Popen)."""
    p = ct.popen("/usr/bin/python3", "-c", IDLE_SESSION, str(wait))
    line = p.stdout.readline()
    if not line.startswith("pid "):
        p.kill()
        raise Failed(f"idle session did not start: {line}{p.stderr.read()}")
    return int(line.split()[1]), p


def session_end(p, timeout):
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise Failed("the idle session helper hung")
    m = re.match(r"(closed|open) after ([\d.]+)", out.strip())
    if not m:
        raise Failed(f"idle session helper: {out}{err}")
    return m.group(1) == "closed", float(m.group(2))


def terminated_entry(ct, pid, timeout=10):
    def find():
        return ct.journal(f"MESSAGE_ID={MESSAGE_ID_TERMINATED}", f"PGSWEEPER_PID={pid}")
    return wait_for(find, timeout, f"the journal entry of pid {pid}")[0]


def enforce(ct, rule, limit_s, what):
    pid, p = idle_session(ct, limit_s + 30)
    closed, after = session_end(p, limit_s + 40)
    check(closed and limit_s <= after <= limit_s + 3,
          f"{what}: idle session (pid {pid}) terminated at its {limit_s}s limit (after {after}s)")
    e = terminated_entry(ct, pid)
    check(e.get("PGSWEEPER_RULE") == rule, f"{what}: ended by rule {rule} ({e.get('PGSWEEPER_RULE')})")
    return pid, e


def restart(ct, verb="restart"):
    # The unit allows 5 starts in 2 minutes (StartLimitBurst=); this test
    # starts it more often than that on purpose, so reset the counter first.
    ct.run("systemctl", "reset-failed", "pgsweeper", check=False, quiet=True)
    ct.run("systemctl", verb, "pgsweeper")


def status_text(ct):
    return ct.show("StatusText")["StatusText"]


def servers_up(text, up, total):
    return re.search(rf"\b{up}/{total} servers? up\b", text) is not None


def check_install(ct):
    # This tree is a Docker image's: its policy-rc.d (exit 101) stops package
    # scripts from starting services, which no real database host has. Remove
    # it in the container only (the overlay's upper layer).
    ct.run("rm", "-f", "/usr/sbin/policy-rc.d")
    r = ct.run("dpkg", "-i", f"{DEB_DIR}/{os.path.basename(ct.deb)}", timeout=180)
    log(r.stdout)
    passed("dpkg -i installs the package")
    s = ct.show("UnitFileState", "ActiveState")
    check(s["UnitFileState"] == "enabled", f"the unit is enabled on install ({s['UnitFileState']})")
    wait_for(lambda: ct.show("ActiveState")["ActiveState"] == "active", 20, "pgsweeper active")
    passed("the unit is active on the shipped (safe) configuration")
    r = ct.run("journalctl", "--list-catalog", MESSAGE_ID_TERMINATED, quiet=True, check=False)
    check(MESSAGE_ID_TERMINATED in r.stdout, "the install loaded the journal catalog (journalctl --list-catalog)")


def setup_database(ct):
    # the role and grants of the README, plus a test role that logs in over TCP
    ct.psql("CREATE ROLE pgsweeper LOGIN")
    ct.psql("GRANT pg_monitor, pg_signal_backend TO pgsweeper")
    ct.psql(f"ALTER ROLE pgsweeper PASSWORD '{SWEEPER_PASSWORD}'")
    ct.psql(f"CREATE ROLE app LOGIN PASSWORD '{APP_PASSWORD}'")


def check_start(ct):
    ct.run("systemctl", "stop", "pgsweeper")
    ct.write(CONFIG, config("idle-app", "4s"))
    restart(ct, "start")
    check(ct.show("ActiveState")["ActiveState"] == "active", "systemctl start: active")
    text = wait_for(lambda: (lambda t: t if servers_up(t, 1, 1) else None)(status_text(ct)), 15,
                    "STATUS= with the server up")
    passed(f"STATUS= line present and says the server is up: {text!r}")


def check_enforce_and_journal(ct):
    pid, e = enforce(ct, "idle-app", 4, "enforce")
    check(e.get("MESSAGE_ID") == MESSAGE_ID_TERMINATED, "journal: MESSAGE_ID is the terminated id")
    want = {"PGSWEEPER_SERVER": "local", "PGSWEEPER_USER": "app", "PGSWEEPER_DATABASE": "postgres",
            "PGSWEEPER_APPLICATION": "systest-idle", "PGSWEEPER_ACTION": "terminate",
            "PGSWEEPER_RESULT": "terminated", "PGSWEEPER_LIMIT": "max_idle", "PGSWEEPER_LIMIT_MS": "4000",
            "PGSWEEPER_CLIENT_ADDR": "127.0.0.1", "_SYSTEMD_UNIT": "pgsweeper.service"}
    got = {k: e.get(k) for k in want}
    check(got == want, f"journal: PGSWEEPER_* fields of the entry ({got})")
    check(int(e.get("PGSWEEPER_ELAPSED_MS", "0")) >= 4000, f"journal: elapsed {e.get('PGSWEEPER_ELAPSED_MS')} ms >= limit")
    r = ct.run("journalctl", "--no-pager", "-x", "-u", "pgsweeper", f"MESSAGE_ID={MESSAGE_ID_TERMINATED}",
               f"PGSWEEPER_PID={pid}", quiet=True)
    subject = f"Subject: pgsweeper terminated PostgreSQL backend {pid} (rule idle-app)"
    check(subject in r.stdout and "Defined-By: pgsweeper" in r.stdout,
          f"journalctl -x shows the catalog text with the fields filled in ({subject!r})")


def check_capture(ct):
    pid, p = idle_session(ct, 30)
    time.sleep(1)
    # The service's identity, as an operator would take a capture on the host.
    r = ct.run("systemd-run", "--quiet", "--wait", "--pipe", "--collect", "-p", "DynamicUser=yes",
               "-p", "User=pgsweeper", "/usr/sbin/pgsweeper", "--capture", "-c", CONFIG, quiet=True)
    taken = json.loads(r.stdout)
    check(len(taken) == 1 and taken[0]["server"] == "local", f"--capture: one object for server local ({r.stdout[:200]})")
    seen = {s["pid"]: s for s in taken[0]["sessions"]}
    check(pid in seen and seen[pid]["user"] == "app" and seen[pid]["query"] == "SELECT 1"
          and seen[pid]["state"] == "idle", f"--capture as pgsweeper sees the app session and its query ({seen.get(pid)})")
    ct.write("/tmp/capture.json", r.stdout)
    r = ct.run("runuser", "-u", "postgres", "--", "psql", "-XAt", "-v", "server=local", "-f",
               "/usr/share/pgsweeper/capture.sql", "dbname=postgres", quiet=True)
    ct.write("/tmp/capture-psql.json", r.stdout)
    session_end(p, 40)
    for path in ("/tmp/capture.json", "/tmp/capture-psql.json"):
        r = ct.run("/usr/sbin/pgsweeper", "--explain", "--from", path, "-c", CONFIG, "--json", quiet=True)
        rows = [x for x in json.loads(r.stdout) if x["pid"] == pid]
        check(len(rows) == 1 and rows[0]["verdict"] == "next" and rows[0]["rule"] == "idle-app"
              and 500 <= rows[0]["remaining_ms"] <= 3100,
              f"--explain --from {path}: next under idle-app, at the capture's time ({rows})")


def check_reload(ct):
    main_pid = ct.show("MainPID")["MainPID"]
    ct.write(CONFIG, config("idle-app-reloaded", "6s"))
    r = ct.run("systemctl", "reload", "pgsweeper", check=False)
    check(r.returncode == 0, "systemctl reload with a good edit: exit 0")
    enforce(ct, "idle-app-reloaded", 6, "reload good")
    check(ct.show("MainPID")["MainPID"] == main_pid, "reload kept the same main process")

    ct.write(CONFIG, config("idle-app-broken", "2s") + "  - this is: [not valid\n")
    r = ct.run("systemctl", "reload", "pgsweeper", check=False)
    check(r.returncode != 0, f"systemctl reload with a broken file fails (exit {r.returncode})")
    s = ct.show("ActiveState", "MainPID")
    check(s["ActiveState"] == "active" and s["MainPID"] == main_pid,
          f"after the failed reload the same process is still active ({s})")
    enforce(ct, "idle-app-reloaded", 6, "reload broken")
    ct.write(CONFIG, config("idle-app", "4s"))


def check_fleet(ct):
    """SPEC 16 under the real unit: the main file includes conf.d/*.yaml and
    defines a rule set; the server of the dropped-in file (over TCP, so its
    sessions are told apart from the main file's server) uses it."""
    main_pid = ct.show("MainPID")["MainPID"]
    ct.write(CONFIG, f"""interval: 1s
include: ["conf.d/*.yaml"]
rule_sets:
  fleet:
    - name: idle-app-fleet
      max_idle: 5s
      users: [app]
      action: terminate
servers:
  - name: local
    conninfo: "host=/run/postgresql dbname=postgres user=pgsweeper"
    rules:
      - name: idle-app-slow
        max_idle: 1h
        users: [app]
""")
    server = f"""servers:
  - name: fleet-tcp
    conninfo: "host=127.0.0.1 dbname=postgres user=pgsweeper password={SWEEPER_PASSWORD} connect_timeout=3"
    rule_sets: [fleet]
"""
    ct.write(CONFD_FILE, server)
    r = ct.run("systemctl", "reload", "pgsweeper", check=False)
    check(r.returncode == 0, f"systemctl reload with a server file in conf.d: exit 0 ({r.stdout}{r.stderr})")
    _, e = enforce(ct, "idle-app-fleet", 5, "fleet")
    check(e.get("PGSWEEPER_SERVER") == "fleet-tcp", f"fleet: ended by the included server ({e.get('PGSWEEPER_SERVER')})")

    cursor = ct.cursor()
    ct.write(CONFD_FILE, server + "    interval: [\n")
    r = ct.run("systemctl", "reload", "pgsweeper", check=False)
    check(r.returncode != 0 and CONFD_FILE in r.stdout + r.stderr + ct.run(
        "systemctl", "status", "--no-pager", "-l", "-n", "20", "pgsweeper", check=False, quiet=True).stdout,
          f"systemctl reload with a broken included file fails and names it (exit {r.returncode})")
    # past ExecReload='s check: the daemon's own reload reads every file again
    ct.run("systemctl", "kill", "-s", "HUP", "--kill-whom=main", "pgsweeper")
    want = f"reload failed (errors in {CONFD_FILE}), keeping the running configuration"
    # journalctl 252 ignores matches combined with --after-cursor: filter here
    wait_for(lambda: any(e.get("MESSAGE_ID") == MESSAGE_ID_RELOAD_FAILED and want in e.get("MESSAGE", "")
                         for e in ct.journal(cursor=cursor)),
             10, f"the journal entry {want!r}")
    passed(f"SIGHUP with a broken included file: {want!r}")
    s = ct.show("ActiveState", "MainPID")
    check(s["ActiveState"] == "active" and s["MainPID"] == main_pid,
          f"after the failed reload the same process is still active ({s})")
    enforce(ct, "idle-app-fleet", 5, "fleet, broken included file")
    ct.run("rm", "-f", CONFD_FILE)
    ct.write(CONFIG, config("idle-app", "4s"))
    ct.run("systemctl", "reload", "pgsweeper")


# node_exporter as Debian ships it, reading pgsweeper's file
NODE_EXPORTER = "prometheus-node-exporter"
NODE_EXPORTER_DROPIN = f"/etc/systemd/system/{NODE_EXPORTER}.service.d/pgsweeper.conf"
METRICS_FILE = "/run/pgsweeper/pgsweeper.prom"
# Debian's unit runs `prometheus-node-exporter $ARGS` with
# EnvironmentFile=/etc/default/prometheus-node-exporter, which sets ARGS="".
# An Environment=ARGS=... drop-in would lose: variables of EnvironmentFile=
# override those of Environment= (systemd.exec(5)). So the drop-in replaces
# ExecStart= (emptied first, or it would be a second command) and keeps $ARGS,
# so that the operator's /etc/default file still applies.
NODE_EXPORTER_DROPIN_TEXT = f"""[Service]
ExecStart=
ExecStart=/usr/bin/prometheus-node-exporter $ARGS --collector.textfile.directory={os.path.dirname(METRICS_FILE)}
"""

# One scrape of node_exporter from inside: the container's time() around it,
# and only the sample lines of pgsweeper's and the textfile collector's
# families (the whole page is some 100 kB of node_* series).
SCRAPE = r"""
import json, time, urllib.request
t0 = time.time()
try:
    with urllib.request.urlopen("http://localhost:9100/metrics", timeout=10) as r:
        status, body = r.status, r.read().decode()
except Exception as e:
    status, body = repr(e), ""
lines = [l for l in body.splitlines() if l.startswith(("pgsweeper_", "node_textfile_"))]
print(json.dumps({"t0": t0, "t1": time.time(), "status": status, "lines": lines}))
"""

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?')


def parse_samples(lines):
    """Text-format sample lines to {(name, ((label, value), ...)): float},
    labels sorted: node_exporter writes them in its own order and its own
    float format (1.7e+09), so compare parsed."""
    out = {}
    for line in lines:
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            raise Failed(f"not a sample line: {line!r}")
        labels = tuple(sorted(LABEL.findall(m.group(2) or "")))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def series(name, **labels):
    return (name, tuple(sorted(labels.items())))


def value(samples, key):
    return "absent" if samples.get(key) is None else f"{samples[key]:g}"


def scrape(ct):
    """(container time before, after, samples, sample lines), or None while
    :9100 does not answer."""
    r = ct.run("/usr/bin/python3", "-c", SCRAPE, quiet=True)
    got = json.loads(r.stdout)
    if got["status"] != 200:
        return None
    return got["t0"], got["t1"], parse_samples(got["lines"]), got["lines"]


def check_node_exporter(ct):
    """SPEC 18: Debian's node_exporter reads pgsweeper's metrics file through
    its textfile collector, and serves what an alert needs."""
    # The .debs were fetched on the host; apt resolves against the same
    # package lists and installed set as there (the overlay of /), takes the
    # files from a writable copy of the directory, and must not download.
    t0 = time.monotonic()
    ct.run("cp", "-rT", DEBS_DIR, "/var/tmp/pgsweeper-container-debs")
    r = ct.run("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q",
               "--no-install-recommends", "--no-download",
               "-o", "Dir::Cache::archives=/var/tmp/pgsweeper-container-debs/", NODE_EXPORTER,
               timeout=300, check=False)
    check(r.returncode == 0, f"apt-get install {NODE_EXPORTER} from the .debs fetched on the host, no network "
          f"({time.monotonic() - t0:.1f}s){'' if r.returncode == 0 else ': ' + r.stdout + r.stderr}")
    ct.write(NODE_EXPORTER_DROPIN, NODE_EXPORTER_DROPIN_TEXT)
    ct.run("systemctl", "daemon-reload")
    cursor = ct.cursor()
    ct.run("systemctl", "restart", NODE_EXPORTER)
    argv = ct.run("systemctl", "show", NODE_EXPORTER, "-pExecStart", quiet=True).stdout
    check("--collector.textfile.directory=/run/pgsweeper" in argv,
          f"drop-in {NODE_EXPORTER_DROPIN}: textfile collector on /run/pgsweeper")

    ct.write(CONFIG, config("idle-app", "4s", extra=f"metrics_file: {METRICS_FILE}\n"))
    ct.run("systemctl", "reload", "pgsweeper")

    local = {"server": "local"}
    polls, stamp, up = (series(n, **local) for n in ("pgsweeper_polls_total", "pgsweeper_last_poll_timestamp_seconds",
                                                     "pgsweeper_server_up"))
    scrape_error = series("node_textfile_scrape_error")

    def first():
        s = scrape(ct)
        return s if s and s[2].get(polls, 0) > 0 and stamp in s[2] else None
    t1, t2, a, lines = wait_for(first, 60, 'pgsweeper_polls_total{server="local"} > 0 at :9100', interval=0.5)
    log("read back from http://localhost:9100/metrics:\n  " + "\n  ".join(lines))
    check(a.get(scrape_error) == 0,
          f"node_textfile_scrape_error {value(a, scrape_error)}: node_exporter parsed the file")
    check(a.get(up) == 1, f'pgsweeper_server_up{{server="local"}} {value(a, up)}')
    check(t1 - 10 <= a[stamp] <= t2 + 1,
          f"pgsweeper_last_poll_timestamp_seconds {a[stamp]:.3f} is current (container time {t2:.3f}, "
          f"{t2 - a[stamp]:.1f}s before)")
    mtimes = [k for k in a if k[0] == "node_textfile_mtime_seconds"]
    check(mtimes == [series("node_textfile_mtime_seconds", file=METRICS_FILE)]
          or mtimes == [series("node_textfile_mtime_seconds", file=os.path.basename(METRICS_FILE))],
          f"node_textfile_mtime_seconds for pgsweeper's file only ({mtimes})")
    # Every series of the file is served, and nothing else of pgsweeper's:
    # node_exporter drops (and only logs) what it cannot merge.
    in_file = parse_samples(ct.run("cat", METRICS_FILE, quiet=True).stdout.splitlines())
    served = {k for k in a if k[0].startswith("pgsweeper_")}
    check(set(in_file) == served,
          f"the {len(in_file)} series of {METRICS_FILE} are those served at :9100 "
          f"(only in the file: {sorted(set(in_file) - served)}; only served: {sorted(served - set(in_file))})")

    def advanced():
        s = scrape(ct)
        return s if s and s[2].get(polls, 0) > a[polls] and s[2].get(stamp, 0) > a[stamp] else None
    _, _, b, _ = wait_for(advanced, 30, "pgsweeper_polls_total and the timestamp advancing at :9100", interval=1)
    passed(f"at :9100 over time: pgsweeper_polls_total {a[polls]:.0f} -> {b[polls]:.0f}, "
           f"pgsweeper_last_poll_timestamp_seconds {a[stamp]:.3f} -> {b[stamp]:.3f}")

    ct.run("systemctl", "stop", "postgresql@15-main")
    t0 = time.monotonic()

    def down():
        s = scrape(ct)
        return s if s and s[2].get(up) == 0 else None
    _, _, c, lines = wait_for(down, 60, 'pgsweeper_server_up{server="local"} 0 at :9100', interval=0.5)
    log("read back from http://localhost:9100/metrics:\n  " + "\n  ".join(lines))
    passed(f'PostgreSQL stopped: pgsweeper_server_up{{server="local"}} 0 at :9100 after '
           f"{time.monotonic() - t0:.1f}s (node_textfile_scrape_error {value(c, scrape_error)})")
    ct.run("systemctl", "start", "postgresql@15-main")
    t0 = time.monotonic()
    # pgsweeper retries with a backoff that doubles per failure: generous
    wait_for(lambda: (lambda s: s and s[2].get(up) == 1)(scrape(ct)), 120,
             'pgsweeper_server_up{server="local"} 1 at :9100', interval=0.5)
    passed(f'PostgreSQL started again: pgsweeper_server_up{{server="local"}} 1 at :9100 after '
           f"{time.monotonic() - t0:.1f}s")

    # No error or warning of node_exporter's about the textfile collector or
    # pgsweeper's series (what it cannot parse or merge is logged, the rest
    # served); its start lists the collectors, "collector=textfile" among
    # them. journalctl 252 ignores matches combined with --after-cursor:
    # filter here.
    msgs = [e.get("MESSAGE", "") for e in ct.journal(cursor=cursor)
            if e.get("_SYSTEMD_UNIT") == f"{NODE_EXPORTER}.service"]
    bad = [m for m in msgs if re.search(r"level=(error|warn)", m) and re.search(r"textfile|pgsweeper", m)]
    check(any("collector=textfile" in m for m in msgs) and not bad,
          f"node_exporter's journal ({len(msgs)} entries): textfile collector on, no error about it ({bad})")

    # as the later steps expect: the plain configuration, no node_exporter
    ct.run("systemctl", "stop", NODE_EXPORTER)
    ct.write(CONFIG, config("idle-app", "4s"))
    ct.run("systemctl", "reload", "pgsweeper")


def check_watchdog(ct):
    ct.write(f"{DROPIN_DIR}/50-systest-watchdog.conf", "[Service]\nWatchdogSec=2s\nRestartSec=1s\n")
    ct.run("systemctl", "daemon-reload")
    restart(ct)
    s = ct.show("MainPID", "NRestarts", "WatchdogUSec")
    check(s["WatchdogUSec"] == "2s", f"drop-in WatchdogSec=2s in effect ({s['WatchdogUSec']})")
    cursor = ct.cursor()
    old = s["MainPID"]
    ct.run("kill", "-STOP", old)
    t0 = time.monotonic()
    new = wait_for(lambda: (lambda s: s["MainPID"] if s["ActiveState"] == "active" and s["MainPID"] not in ("0", old)
                            else None)(ct.show("ActiveState", "MainPID")), 45, "a restart after SIGSTOP")
    passed(f"SIGSTOP of main pid {old}: restarted as pid {new} after {time.monotonic() - t0:.1f}s")
    # journalctl 252 ignores matches combined with --after-cursor: filter here
    msgs = [e.get("MESSAGE", "") for e in ct.journal(cursor=cursor) if e.get("_PID") == "1"]
    check(any("Watchdog timeout" in m for m in msgs), "the journal says: Watchdog timeout")
    n = int(ct.show("NRestarts")["NRestarts"])
    check(n > int(s["NRestarts"]), f"NRestarts went up ({s['NRestarts']} -> {n})")
    enforce(ct, "idle-app", 4, "after the watchdog restart")
    ct.run("rm", f"{DROPIN_DIR}/50-systest-watchdog.conf")
    ct.run("systemctl", "daemon-reload")


def check_start_limit(ct):
    """What pgsweeper(8) says: a broken file plus systemctl restart fails, is
    retried every RestartSec= into the start limit, and once the file is
    fixed, start is refused until systemctl reset-failed."""
    ct.write(CONFIG, "servers: [\n")
    ct.run("systemctl", "reset-failed", "pgsweeper", check=False, quiet=True)
    cursor = ct.cursor()
    r = ct.run("systemctl", "restart", "pgsweeper", check=False)
    check(r.returncode != 0, f"broken file: systemctl restart fails (exit {r.returncode})")
    t0 = time.monotonic()

    def limit_hit():
        # systemd 252 keeps Result=exit-code here; the journal names the limit
        return any(e.get("_PID") == "1" and e.get("UNIT") == "pgsweeper.service"
                   and "Start request repeated too quickly" in e.get("MESSAGE", "")
                   for e in ct.journal(cursor=cursor))
    wait_for(limit_hit, 60, "'Start request repeated too quickly'", interval=1)
    s = ct.show("ActiveState", "NRestarts")
    check(s["ActiveState"] == "failed",
          f"retried every RestartSec= into the start limit after {time.monotonic() - t0:.0f}s ({s})")
    ct.write(CONFIG, config("idle-app", "4s"))
    r = ct.run("systemctl", "start", "pgsweeper", check=False)
    s = ct.show("ActiveState", "Result")
    check(r.returncode != 0 and s["ActiveState"] != "active",
          f"file fixed, but systemctl start is refused until reset-failed (exit {r.returncode}, {s})")
    ct.run("systemctl", "reset-failed", "pgsweeper")
    ct.run("systemctl", "start", "pgsweeper")
    check(ct.show("ActiveState")["ActiveState"] == "active", "after systemctl reset-failed, start works")


def check_stop(ct):
    restart(ct)
    t0 = time.monotonic()
    r = ct.run("systemctl", "stop", "pgsweeper", check=False)
    took = time.monotonic() - t0
    check(r.returncode == 0 and took < 2.0, f"systemctl stop: exit {r.returncode} in {took * 1000:.0f} ms")
    s = ct.show("ActiveState", "Result", "ExecMainStatus")
    check(s == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"},
          f"stopped cleanly: {s}")


def check_ip_address_deny(ct):
    dropin = f"{DROPIN_DIR}/50-systest-ip.conf"
    ct.write(CONFIG, config("idle-app-tcp", "4s", host="127.0.0.1"))
    # the negative first: without the localhost allow, TCP to 127.0.0.1 must
    # fail, or the allow below would prove nothing
    ct.write(dropin, "[Service]\nIPAddressDeny=any\n")
    ct.run("systemctl", "daemon-reload")
    cursor = ct.cursor()
    restart(ct)
    check(ct.show("IPAddressDeny")["IPAddressDeny"] not in ("", None), "IPAddressDeny=any is set on the unit")
    pid, p = idle_session(ct, 9)
    time.sleep(8)
    st = ct.show("ActiveState", "StatusText")
    closed, after = session_end(p, 20)
    # STATUS= is empty until a server answers: accept that or 0/1, never 1/1
    check(st["ActiveState"] == "active" and not closed and not servers_up(st["StatusText"], 1, 1),
          f"IPAddressDeny=any alone: server over 127.0.0.1 not reached, session {pid} untouched ({st})")
    errors = [e for e in ct.journal(cursor=cursor)
              if e.get("_SYSTEMD_UNIT") == "pgsweeper.service" and e.get("PGSWEEPER_SERVER") == "local"
              and int(e.get("PRIORITY", "6")) <= 3]
    check(errors, f"IPAddressDeny=any alone: connection errors in the journal ({[e.get('MESSAGE') for e in errors]})")
    ct.write(dropin, "[Service]\nIPAddressDeny=any\nIPAddressAllow=localhost\n")
    ct.run("systemctl", "daemon-reload")
    restart(ct)
    wait_for(lambda: servers_up(status_text(ct), 1, 1), 15, "the server over 127.0.0.1 up")
    passed("IPAddressDeny=any + IPAddressAllow=localhost: connected over host=127.0.0.1")
    enforce(ct, "idle-app-tcp", 4, "IPAddressAllow=localhost")
    ct.run("systemctl", "stop", "pgsweeper")
    r = ct.run("journalctl", "--no-pager", "-o", "export", "-u", "pgsweeper", quiet=True)
    check(SWEEPER_PASSWORD not in r.stdout and len(r.stdout) > 0,
          "the password of the conninfo appears in no journal entry of the unit")


def preflight():
    if os.geteuid() != 0:
        raise Skip("booting a container needs root")
    for tool in ("systemd-nspawn", "nsenter", "systemd-id128"):
        if shutil.which(tool) is None:
            raise Skip(f"{tool} not installed (package systemd-container / util-linux)")
    if not os.path.isdir("/usr/lib/postgresql/15/bin"):
        raise Skip("no postgresql-15 in this tree for the container to start")


def container_debs(src):
    """The directory of .debs installed inside (the container cannot download)."""
    debs = os.environ.get("PGSWEEPER_CONTAINER_DEBS", "")
    if not debs:
        r = subprocess.run(["bash", "-c", 'source "$1/tools/lib.sh" && fetch_container_debs', "bash", src],
                           stdout=subprocess.PIPE, text=True)
        check(r.returncode == 0, f"tools/lib.sh fetch_container_debs (exit {r.returncode})")
        debs = r.stdout.strip().splitlines()[-1]
    names = sorted(f for f in os.listdir(debs) if f.endswith(".deb")) if os.path.isdir(debs) else []
    check(any(f.startswith(NODE_EXPORTER + "_") for f in names), f".debs for the container in {debs}: {names}")
    return os.path.abspath(debs)


def main():
    src = os.path.abspath(sys.argv[1])
    with open("/etc/nsswitch.conf") as f:
        nsswitch = f.read()
    deb_tmp = None
    ct = None
    try:
        preflight()
        deb_tmp = tempfile.mkdtemp(prefix="pgsweeper-systest-deb.")  # used when there is no DEB
        deb = find_deb(src, deb_tmp)
        check(os.path.isfile(deb), f"package: {deb}")
        debs = container_debs(src)
        ct = Container(deb, debs)
        t0 = time.monotonic()
        ct.boot()
        log(f"boot took {time.monotonic() - t0:.1f}s")
        check_install(ct)
        setup_database(ct)
        for step in (check_start, check_enforce_and_journal, check_capture, check_reload, check_fleet,
                     check_node_exporter, check_watchdog, check_start_limit, check_stop, check_ip_address_deny):
            log(f"== {step.__name__}")
            t0 = time.monotonic()
            step(ct)
            log(f"== {step.__name__} took {time.monotonic() - t0:.1f}s")
    except Skip as e:
        print(f"SKIP: {e}", file=sys.stderr)
        return SKIP
    except Failed as e:
        print(f"FAIL: {e}", file=sys.stderr)
        if ct is not None and ct.init_pid:
            r = subprocess.run(["nsenter", "-t", str(ct.init_pid), "-a", "--", "journalctl", "--no-pager",
                                "-u", "pgsweeper", "-n", "60"], capture_output=True, text=True)
            print("--- journalctl -u pgsweeper (last 60) ---\n" + r.stdout, file=sys.stderr)
            print("--- console ---\n" + ct.console_tail(), file=sys.stderr)
        return 1
    finally:
        if ct is not None:
            try:
                ct.close()
            except Exception as e:
                print(f"FAIL: cleanup: {e}", file=sys.stderr)
                return 1
        if deb_tmp:
            shutil.rmtree(deb_tmp, ignore_errors=True)
        with open("/etc/nsswitch.conf") as f:
            if f.read() != nsswitch:
                print("FAIL: /etc/nsswitch.conf changed during the test", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
