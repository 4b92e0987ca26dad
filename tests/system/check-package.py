#!/usr/bin/python3
"""What the Debian package ships, read from the built .deb itself.

    check-package.py SOURCE_DIR [DEB]

DEB defaults to $PGSWEEPER_DEB; without either, tools/build-deb builds one
into a temp dir. Checks:
- the file list: binary, unit, catalog, both man pages, the examples file, the
  configuration and the README of its conf.d/ as the two conffiles;
- the installed /etc/pgsweeper/pgsweeper.yaml is conf/pgsweeper-default.yaml
  and is safe, as the packaged binary itself reads it (--check, then --dump
  parsed as YAML): one server, the local one over /run/postgresql, every rule
  a shadow rule (dry_run: true), no metrics file or one under /run/pgsweeper;
- /etc/pgsweeper/conf.d/ holds conf/conf.d/README only, and a server file
  dropped in there is read by the shipped configuration (its include);
- /usr/share/doc/pgsweeper/examples/pgsweeper.yaml is conf/pgsweeper.yaml;
- the same directory holds conf/pgsweeper.rules.yml, conf/pgsweeper.rules.test.yml
  and conf/pgsweeper-dashboard.json, uncompressed (operators point Prometheus
  and Grafana at them, and the test file names the rules file) and equal to
  the tree's; promtool test rules passes there when promtool is installed;
- /usr/share/pgsweeper/capture.sql is sql/capture.sql (psql's capture);
- the package version is meson.build's project version and the binary's.
"""
import os
import re
import shutil
import sys
import tempfile

import yaml

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checklib import Failed, check, find_deb, run  # noqa: E402  (tests/checklib.py)

CONFIG = "/etc/pgsweeper/pgsweeper.yaml"
CONFD = "/etc/pgsweeper/conf.d"
MONITORING_EXAMPLES = ("pgsweeper.rules.yml", "pgsweeper.rules.test.yml", "pgsweeper-dashboard.json")


def gunzip_text(path):
    import gzip
    with gzip.open(path, "rt") as f:
        return f.read()


def main():
    src = sys.argv[1]
    with tempfile.TemporaryDirectory(prefix="pgsweeper-deb.") as tmp:
        deb = find_deb(src, os.path.join(tmp, "build"))
        check(os.path.isfile(deb), f"package exists: {deb}")
        arch = run(["dpkg-architecture", "-qDEB_HOST_ARCH"]).stdout.strip()
        meson_version = re.search(r"version\s*:\s*'([^']+)'", open(os.path.join(src, "meson.build")).read()).group(1)
        check(os.path.basename(deb) == f"pgsweeper_{meson_version}_{arch}.deb",
              f"file name is pgsweeper_<meson version {meson_version}>_<{arch}>.deb: {os.path.basename(deb)}")
        fields = run(["dpkg-deb", "-f", deb, "Package", "Version"]).stdout
        check(f"Version: {meson_version}\n" in fields, f"package version is {meson_version}")

        root = os.path.join(tmp, "root")
        check(run(["dpkg-deb", "-x", deb, root]).returncode == 0, "dpkg-deb -x extracts it")
        ctl = os.path.join(tmp, "control")
        check(run(["dpkg-deb", "-e", deb, ctl]).returncode == 0, "dpkg-deb -e extracts the control files")
        with open(os.path.join(ctl, "conffiles")) as f:
            conffiles = f.read().split()
        check(sorted(conffiles) == sorted([CONFIG, CONFD + "/README"]),
              f"the conffiles are {CONFIG} and {CONFD}/README ({conffiles})")
        postinst = open(os.path.join(ctl, "postinst")).read()
        check("deb-systemd-helper enable 'pgsweeper.service'" in postinst, "postinst enables the unit (dh_installsystemd)")

        files = {os.path.join(d, f)[len(root):] for d, _, fs in os.walk(root) for f in fs}
        print("files:", *sorted(files), sep="\n  ")
        for path in ("/usr/sbin/pgsweeper", CONFIG, "/lib/systemd/system/pgsweeper.service",
                     "/usr/lib/systemd/catalog/pgsweeper.catalog", "/usr/share/man/man8/pgsweeper.8.gz",
                     "/usr/share/man/man5/pgsweeper.yaml.5.gz", "/usr/share/doc/pgsweeper/copyright",
                     CONFD + "/README"):
            check(path in files, f"ships {path}")
        examples = [p for p in files if p.startswith("/usr/share/doc/pgsweeper/examples/pgsweeper.yaml")]
        check(len(examples) == 1, f"ships the every-key example under /usr/share/doc/pgsweeper/examples ({examples})")
        example = root + examples[0]
        text = gunzip_text(example) if example.endswith(".gz") else open(example).read()
        check(text == open(os.path.join(src, "conf", "pgsweeper.yaml")).read(), "the example is conf/pgsweeper.yaml")
        for name in MONITORING_EXAMPLES:
            path = "/usr/share/doc/pgsweeper/examples/" + name
            check(path in files, f"ships {path}, uncompressed")
            with open(os.path.join(src, "conf", name), "rb") as a, open(root + path, "rb") as b:
                check(a.read() == b.read(), f"{path} is conf/{name}")
        promtool = shutil.which("promtool")
        if promtool:
            r = run([promtool, "test", "rules", "pgsweeper.rules.test.yml"],
                    cwd=root + "/usr/share/doc/pgsweeper/examples")
            check(r.returncode == 0, "promtool test rules passes in the shipped examples directory"
                  + ("" if r.returncode == 0 else f": {r.stdout}{r.stderr}"))
        else:
            print("promtool not installed: the shipped rules are not run here")
        capture_sql = root + "/usr/share/pgsweeper/capture.sql"
        check(os.path.exists(capture_sql) and
              open(capture_sql).read() == open(os.path.join(src, "sql", "capture.sql")).read(),
              "ships /usr/share/pgsweeper/capture.sql, which is sql/capture.sql")
        for page in ("man8/pgsweeper.8.gz", "man5/pgsweeper.yaml.5.gz"):
            check(gunzip_text(root + "/usr/share/man/" + page).lstrip().startswith((".TH", ".\\\"", "'\\\"")),
                  f"{page} is a roff page")

        config = root + CONFIG
        check(open(config).read() == open(os.path.join(src, "conf", "pgsweeper-default.yaml")).read(),
              "the shipped configuration is conf/pgsweeper-default.yaml")
        check(sorted(os.listdir(root + CONFD)) == ["README"], f"{CONFD} holds the README only")
        check(open(root + CONFD + "/README").read() == open(os.path.join(src, "conf", "conf.d", "README")).read(),
              f"{CONFD}/README is conf/conf.d/README")
        binary = root + "/usr/sbin/pgsweeper"
        r = run([binary, "--version"])
        check(r.returncode == 0 and r.stdout.split()[:2] == ["pgsweeper", meson_version],
              f"the packaged binary runs and is version {meson_version} ({r.stdout.strip()})")
        r = run([binary, "--check", "-c", config])
        check(r.returncode == 0 and r.stdout == "configuration OK\n" and r.stderr == "",
              f"the packaged binary accepts the shipped configuration without a warning ({r.stdout}{r.stderr})")
        r = run([binary, "--dump", "-c", config])
        check(r.returncode == 0, "--dump of the shipped configuration works")
        print(r.stdout)
        dump = yaml.safe_load(r.stdout)
        servers = dump.get("servers") or []
        check(len(servers) == 1, f"exactly one server ({[s.get('name') for s in servers]})")
        conninfo = dict(re.findall(r"(\w+)='((?:[^'\\]|\\.)*)'", servers[0]["conninfo"]))
        check(conninfo.get("host") == "/run/postgresql" and "hostaddr" not in conninfo and "service" not in conninfo
              and "port" not in conninfo,
              f"the server is the local one over /run/postgresql ({conninfo})")
        # a server's rules: those of the sets it names (written once at the top of the dump), then its own
        sets = dump.get("rule_sets") or {}

        def rules_of(server):
            return [r for name in server.get("rule_sets") or [] for r in sets.get(name) or []] + \
                   (server.get("rules") or [])

        rules = [(s["name"], r) for s in servers for r in rules_of(s)]
        check(len(rules) >= 1, f"there are rules to shadow ({len(rules)})")
        for server, rule in rules:
            check(rule.get("dry_run") is True, f"{server}/{rule['name']}: dry_run: true (a shadow rule)")
        metrics = dump.get("metrics_file")
        check(metrics is None or (os.path.normpath(metrics).startswith("/run/pgsweeper/")),
              f"no metrics file, or one under /run/pgsweeper ({metrics})")
        # a server file dropped into conf.d is read (include: ["conf.d/*.yaml"])
        dropped = root + CONFD + "/db1.yaml"
        with open(dropped, "w") as f:
            f.write('servers:\n  - name: db1\n    conninfo: "host=db1.example.net dbname=postgres user=pgsweeper"\n'
                    '    rule_sets: [standard]\n')
        r = run([binary, "--dump", "-c", config])
        os.unlink(dropped)
        check(r.returncode == 0, f"--dump with a server file in {CONFD} works ({r.stderr})")
        check(f"  # from {dropped}\n" in r.stdout, f"--dump says the server came from {dropped}")
        dumped = yaml.safe_load(r.stdout)
        sets = dumped.get("rule_sets") or {}
        names = [(s["name"], [x.get("dry_run") for x in rules_of(s)]) for s in dumped.get("servers") or []]
        check(names[0][0] == "local" and names[1][0] == "db1" and len(names) == 2 and names[1][1]
              and all(names[1][1]),
              f"the dropped-in server comes after local, with the shadow rules of its rule set ({names})")
        unit = open(root + "/lib/systemd/system/pgsweeper.service").read()
        check(f"\nExecStart=/usr/sbin/pgsweeper -c {CONFIG} " in unit,
              "the packaged unit runs /usr/sbin/pgsweeper on the shipped configuration")


if __name__ == "__main__":
    try:
        main()
    except Failed as e:
        print(f"FAIL: {e}", file=sys.stderr)
        sys.exit(1)
