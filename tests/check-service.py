#!/usr/bin/python3
"""What `meson install` ships around the binary: the systemd unit, the journal
catalog, the man pages and the default configuration.

    check-service.py security|verify|install|catalog SOURCE_DIR BUILD_DIR MESON

security  systemd-analyze security --offline=yes on the generated unit:
          prints the exposure score, fails above 1.5; and the directives the
          unit must have are there, with the configured paths.
verify    systemd-analyze verify on the unit installed into a temp root (with
          the binary and the man pages, so ExecStart= and Documentation= are
          checked too): exit 0 and no output at all.
install   meson install --destdir lays out every file, the installed config
          is the safe default and passes --check with the installed binary
          (its conf.d/ holds the README only), a server file dropped into
          conf.d/ is read (--dump shows it, "# from" its file), the
          every-key file, the alerting rules, their tests and the dashboard
          are examples under share/doc, the man pages are roff.
catalog   every MESSAGE_ID of include/message-ids.h has exactly one catalog
          entry with Subject/Defined-By/Support and a text, no entry is
          unknown, every @FIELD@ is a field pgsweeper logs, and the file loads
          with journalctl --update-catalog into a temp root.

Exit 77 (skip) only when a tool is missing.
"""
import json
import os
import re
import shutil
import sys
import tempfile

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checklib import Failed, check, run  # noqa: E402  (tests/checklib.py, beside this file)

MAX_EXPOSURE = 1.5
# The monitoring examples beside the every-key file (tests/check-monitoring.py checks them).
MONITORING_EXAMPLES = ("pgsweeper.rules.yml", "pgsweeper.rules.test.yml", "pgsweeper-dashboard.json")


def need(tool):
    path = shutil.which(tool)
    if not path:
        print(f"SKIP: {tool} not found", file=sys.stderr)
        sys.exit(77)
    return path


def build_options(build):
    with open(os.path.join(build, "meson-info", "intro-buildoptions.json")) as f:
        opts = {o["name"]: o["value"] for o in json.load(f)}
    prefix = opts["prefix"]
    # meson's rule: an absolute sysconfdir/sbindir/mandir ignores the prefix
    return {k: os.path.join(prefix, opts[k]) for k in ("sbindir", "sysconfdir", "mandir")} | {"prefix": prefix}


def generated_unit(build):
    path = os.path.join(build, "systemd", "pgsweeper.service")
    check(os.path.isfile(path), f"generated unit exists: {path}")
    return path


def unit_settings(path):
    """[Service] key -> list of values (comments and blank lines dropped)."""
    settings, section = {}, None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line
                continue
            key, _, value = line.partition("=")
            settings.setdefault((section, key), []).append(value)
    return settings


def cmd_security(src, build, meson):
    analyze = need("systemd-analyze")
    unit = generated_unit(build)
    o = build_options(build)
    s = unit_settings(unit)
    svc = lambda k: s.get(("[Service]", k), [])
    config = os.path.join(o["sysconfdir"], "pgsweeper", "pgsweeper.yaml")
    binary = os.path.join(o["sbindir"], "pgsweeper")
    check(re.search(r"@[a-z_]+@", open(unit).read()) is None, "no @placeholder@ left in the generated unit")
    check(svc("Type") == ["notify"], "Type=notify")
    check(svc("ExecStart") == [f"{binary} -c {config} --log-target journal"],
          f"ExecStart= runs {binary} on {config}, logging to the journal")
    check(svc("ExecStartPre") == [f"{binary} --check -c {config}"], "ExecStartPre= checks the configuration")
    check("/bin/kill -HUP $MAINPID" in svc("ExecReload"), "ExecReload= sends SIGHUP to the main process")
    check(svc("WatchdogSec") == ["30s"], "WatchdogSec=30s")
    check(svc("Restart") == ["on-failure"], "Restart=on-failure")
    check(svc("DynamicUser") == ["yes"] or svc("User") not in ([], ["root"]), "runs as its own user")
    check(svc("RestrictAddressFamilies") == ["AF_UNIX AF_INET AF_INET6"], "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6")
    check(svc("CapabilityBoundingSet") == [""], "CapabilityBoundingSet= is empty")
    check("@system-service" in svc("SystemCallFilter"), "SystemCallFilter=@system-service")
    for key in ("ProtectSystem", "UMask"):
        check(svc(key) == [{"ProtectSystem": "strict", "UMask": "0077"}[key]], f"{key}= set")
    for key in ("ProtectHome", "PrivateDevices", "PrivateTmp", "NoNewPrivileges", "MemoryDenyWriteExecute",
                "LockPersonality", "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
                "ProtectClock", "ProtectHostname", "ProtectControlGroups", "RestrictNamespaces",
                "RestrictRealtime", "RestrictSUIDSGID"):
        check(svc(key) == ["yes"], f"{key}=yes")

    r = run([analyze, "security", "--offline=yes", unit])
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr)
    m = re.search(r"Overall exposure level for pgsweeper\.service: (\d+\.\d+)", r.stdout)
    check(m is not None, "systemd-analyze security printed an overall exposure level")
    score = float(m.group(1))
    print(f"exposure score: {score}")
    check(score <= MAX_EXPOSURE, f"exposure {score} <= {MAX_EXPOSURE}")


def destdir_install(build, meson, dest):
    # --no-rebuild: meson test has built everything, and a second ninja in the
    # same build dir must not run concurrently with the test runner's.
    r = run([meson, "install", "-C", build, "--destdir", dest, "--no-rebuild", "--quiet"])
    if r.returncode != 0:
        sys.stderr.write(r.stdout + r.stderr)
    check(r.returncode == 0, "meson install --destdir succeeded")


def find_installed(dest, name, dirs):
    """The one installed path of NAME among DIRS (absolute, outside DEST)."""
    found = [d for d in dict.fromkeys(dirs) if os.path.isfile(dest + os.path.join(d, name))]
    check(len(found) == 1, f"{name} installed in exactly one of {sorted(set(dirs))} (found {found})")
    return os.path.join(found[0], name)


def unit_dirs(prefix):
    return [os.path.join(prefix, "lib/systemd/system"), "/usr/lib/systemd/system", "/lib/systemd/system"]


def catalog_dirs(prefix):
    return [os.path.join(prefix, "lib/systemd/catalog"), "/usr/lib/systemd/catalog"]


def host_unit_dir():
    for d in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        if os.path.isfile(os.path.join(d, "multi-user.target")):
            return d
    print("SKIP: no systemd unit directory with multi-user.target on this host", file=sys.stderr)
    sys.exit(77)


def cmd_verify(src, build, meson):
    analyze = need("systemd-analyze")
    o = build_options(build)
    with tempfile.TemporaryDirectory(prefix="pgsweeper-verify.") as root:
        destdir_install(build, meson, root)
        unit = find_installed(root, "pgsweeper.service", unit_dirs(o["prefix"]))
        # verify loads the unit's default dependencies (sysinit.target,
        # system.slice, ...) from the same root: bring the host's targets and slices.
        host = host_unit_dir()
        os.makedirs(root + "/usr/lib/systemd/system", exist_ok=True)
        for f in os.listdir(host):
            if f.endswith((".target", ".slice")) and not os.path.exists(root + "/usr/lib/systemd/system/" + f):
                shutil.copy(os.path.join(host, f), root + "/usr/lib/systemd/system/" + f, follow_symlinks=True)
        env = dict(os.environ)
        args = [analyze, "verify", f"--root={root}"]
        if os.path.exists(os.path.join(src, "man", "pgsweeper.yaml.5.scd")):
            # Documentation= names both pages: man finds them in the install
            env["MANPATH"] = root + o["mandir"]
        else:
            print("note: man/pgsweeper.yaml.5.scd does not exist yet: not checking Documentation= pages")
            args.append("--man=no")
        r = run(args + [unit], env=env)
        sys.stdout.write(r.stdout)
        sys.stderr.write(r.stderr)
        check(r.returncode == 0, "systemd-analyze verify exits 0")
        # parse problems (unknown keys, bad values) are warnings with exit 0
        check(r.stdout.strip() == "" and r.stderr.strip() == "", "systemd-analyze verify prints nothing")


def cmd_install(src, build, meson):
    o = build_options(build)
    with tempfile.TemporaryDirectory(prefix="pgsweeper-install.") as dest:
        destdir_install(build, meson, dest)
        binary = dest + os.path.join(o["sbindir"], "pgsweeper")
        check(os.path.isfile(binary) and os.access(binary, os.X_OK), f"binary installed: {o['sbindir']}/pgsweeper")
        config = os.path.join(o["sysconfdir"], "pgsweeper", "pgsweeper.yaml")
        with open(os.path.join(src, "conf", "pgsweeper-default.yaml"), "rb") as f:
            shipped = f.read()
        check(os.path.isfile(dest + config), f"default configuration installed: {config}")
        with open(dest + config, "rb") as f:
            check(f.read() == shipped, "installed configuration is the safe default conf/pgsweeper-default.yaml")
        example = dest + os.path.join(o["prefix"], "share/doc/pgsweeper/examples/pgsweeper.yaml")
        with open(os.path.join(src, "conf", "pgsweeper.yaml"), "rb") as a:
            check(os.path.isfile(example) and open(example, "rb").read() == a.read(),
                  "the every-key conf/pgsweeper.yaml is installed under share/doc/pgsweeper/examples")
        for name in MONITORING_EXAMPLES:
            installed = dest + os.path.join(o["prefix"], "share/doc/pgsweeper/examples", name)
            with open(os.path.join(src, "conf", name), "rb") as a:
                check(os.path.isfile(installed) and open(installed, "rb").read() == a.read(),
                      f"conf/{name} is installed under share/doc/pgsweeper/examples")
        confd = os.path.join(o["sysconfdir"], "pgsweeper", "conf.d")
        with open(os.path.join(src, "conf", "conf.d", "README"), "rb") as a:
            check(open(dest + confd + "/README", "rb").read() == a.read(),
                  f"{confd}/README is conf/conf.d/README")
        check(sorted(os.listdir(dest + confd)) == ["README"], f"{confd} holds the README only")
        r = run([binary, "--check", "-c", dest + config])
        check(r.returncode == 0 and r.stdout == "configuration OK\n" and r.stderr == "",
              f"installed binary accepts the installed configuration with an empty conf.d "
              f"({r.returncode}: {r.stdout}{r.stderr})")
        # the include of the installed configuration reads a dropped-in file
        dropped = dest + confd + "/db1.yaml"
        with open(dropped, "w") as f:
            f.write('servers:\n  - name: db1\n    conninfo: "host=db1.example.net dbname=postgres user=pgsweeper"\n'
                    '    rule_sets: [standard]\n')
        r = run([binary, "--dump", "-c", dest + config])
        os.unlink(dropped)
        check(r.returncode == 0 and f"  # from {dropped}\n  - name: \"db1\"\n" in r.stdout,
              f"a server file dropped into {confd} is read, using the rule set of the main file "
              f"({r.returncode}: {r.stdout[-300:]}{r.stderr})")
        r = run([binary, "--version"])
        check(r.returncode == 0 and r.stdout.startswith("pgsweeper "), "installed binary runs")

        unit = find_installed(dest, "pgsweeper.service", unit_dirs(o["prefix"]))
        s = unit_settings(dest + unit)
        check(s.get(("[Service]", "ExecStart"), [""])[0].startswith(f"{o['sbindir']}/pgsweeper -c {config} "),
              "installed unit starts the installed binary on the installed configuration")
        catalog = find_installed(dest, "pgsweeper.catalog", catalog_dirs(o["prefix"]))
        with open(os.path.join(src, "systemd", "pgsweeper.catalog"), "rb") as a, open(dest + catalog, "rb") as b:
            check(a.read() == b.read(), "installed catalog is systemd/pgsweeper.catalog")

        pages = [("pgsweeper", "8")]
        if os.path.exists(os.path.join(src, "man", "pgsweeper.yaml.5.scd")):
            pages.append(("pgsweeper.yaml", "5"))
        else:
            print("note: man/pgsweeper.yaml.5.scd does not exist yet: not expecting pgsweeper.yaml.5")
        for name, section in pages:
            page = dest + os.path.join(o["mandir"], "man" + section, f"{name}.{section}")
            check(os.path.isfile(page), f"man page installed: {name}({section})")
            with open(page) as f:
                text = f.read()
            check(re.search(rf'^\.TH "?{re.escape(name)}"? "?{section}"?', text, re.M) is not None,
                  f"{name}.{section} is a roff page with .TH {name} {section}")
            if shutil.which("man"):
                r = run(["man", "-l", page], env=dict(os.environ, MANWIDTH="80", MANPAGER="cat", PAGER="cat"))
                check(r.returncode == 0 and r.stderr.strip() == "" and name in r.stdout,
                      f"{name}.{section} renders at 80 columns without a troff warning {r.stderr.strip()!r}")

        expected = {binary, dest + config, dest + confd + "/README", example, dest + unit, dest + catalog} | {
            dest + os.path.join(o["mandir"], "man" + sec, f"{n}.{sec}") for n, sec in pages}
        installed = {os.path.join(d, f) for d, _, fs in os.walk(dest) for f in fs}
        print("installed:", *sorted(p[len(dest):] for p in installed), sep="\n  ")
        check(expected <= installed, "every expected file is installed")


def message_ids(src):
    with open(os.path.join(src, "include", "message-ids.h")) as f:
        ids = re.findall(r'^#define\s+(MESSAGE_ID_\w+)\s+"([0-9a-f]{32})"', f.read(), re.M)
    check(len(ids) >= 16, f"include/message-ids.h defines the message ids ({len(ids)})")
    check(len({v for _, v in ids}) == len(ids), "message ids are distinct")
    return dict(ids)


def logged_fields(src):
    fields = {"MESSAGE", "PRIORITY", "MESSAGE_ID", "SYSLOG_IDENTIFIER"}
    with open(os.path.join(src, "src", "log.c")) as f:
        fields |= set(re.findall(r'"(PGSWEEPER_[A-Z_]+)"', f.read()))
    return fields


def parse_catalog(path):
    """id -> {"headers": {...}, "body": str}; raises on text before the first entry."""
    entries, cur = {}, None
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if line.startswith("#") and cur is None:
                continue
            m = re.match(r"^-- ([0-9a-f]{32})(?:@\S+)?\s*$", line)
            if m:
                check(m.group(1) not in entries, f"catalog line {n}: {m.group(1)} appears once")
                cur = entries[m.group(1)] = {"headers": {}, "body": "", "in_headers": True}
                continue
            check(not line.startswith("-- "), f"catalog line {n}: a '-- ' line is an entry header '-- <32 hex digits>'")
            if cur is None:
                check(line.strip() == "", f"catalog line {n}: nothing but comments before the first entry")
                continue
            if cur["in_headers"] and line.strip() == "":
                cur["in_headers"] = False
            elif cur["in_headers"]:
                key, sep, value = line.partition(":")
                check(sep == ":" and value.strip() != "", f"catalog line {n}: header 'Key: value'")
                cur["headers"][key] = value.strip()
            else:
                cur["body"] += line
    return entries


def cmd_catalog(src, build, meson):
    journalctl = need("journalctl")
    ids = message_ids(src)
    catalog = os.path.join(src, "systemd", "pgsweeper.catalog")
    entries = parse_catalog(catalog)
    for name, mid in sorted(ids.items()):
        check(mid in entries, f"catalog has an entry for {name} ({mid})")
        e = entries[mid]
        check(e["headers"].get("Subject"), f"{name}: Subject:")
        check(e["headers"].get("Defined-By") == "pgsweeper", f"{name}: Defined-By: pgsweeper")
        check(e["headers"].get("Support"), f"{name}: Support:")
        check(len(e["body"].strip()) > 80, f"{name}: has a text")
    unknown = set(entries) - set(ids.values())
    check(not unknown, f"no catalog entry for an id pgsweeper does not log ({sorted(unknown)})")
    known = logged_fields(src)
    with open(catalog) as f:
        text = "".join(line for line in f if not line.startswith("#"))
    used = set(re.findall(r"@([A-Z0-9_]+)@", text))
    check(used <= known, f"every @FIELD@ in the catalog is a field pgsweeper logs ({sorted(used - known)})")

    with tempfile.TemporaryDirectory(prefix="pgsweeper-catalog.") as root:
        os.makedirs(root + "/usr/lib/systemd/catalog")
        shutil.copy(catalog, root + "/usr/lib/systemd/catalog/pgsweeper.catalog")
        r = run([journalctl, f"--root={root}", "--update-catalog"])
        sys.stderr.write(r.stderr)
        check(r.returncode == 0 and r.stderr.strip() == "", "journalctl --update-catalog loads it without complaint")
        check(os.path.isfile(root + "/var/lib/systemd/catalog/database"), "catalog database written")
        r = run([journalctl, f"--root={root}", "--list-catalog"])
        check(r.returncode == 0, "journalctl --list-catalog works")
        listed = {line.split()[0] for line in r.stdout.splitlines() if line.strip()}
        for name, mid in sorted(ids.items()):
            check(mid in listed, f"journalctl lists {name} ({mid})")
        r = run([journalctl, f"--root={root}", "--dump-catalog", ids["MESSAGE_ID_TERMINATED"]])
        check(r.returncode == 0 and "Defined-By: pgsweeper" in r.stdout, "journalctl --dump-catalog shows an entry")


def main():
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, src, build, meson = sys.argv[1:]
    try:
        {"security": cmd_security, "verify": cmd_verify, "install": cmd_install, "catalog": cmd_catalog}[cmd](
            src, build, meson)
    except Failed as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
