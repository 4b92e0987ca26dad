#!/usr/bin/python3
"""The monitoring files of conf/, checked with promtool.

    check-monitoring.py rules|test|dashboard SOURCE_DIR

rules      promtool check rules (every lint, fatal) on conf/pgsweeper.rules.yml;
           its alert names are exactly those of the contract (pgsweeper(8),
           ALERTS), each rule has a for:, a severity (critical, warning or
           info), a summary and a description; every MESSAGE_ID it names is
           one of include/message-ids.h; its series are families of
           src/metrics.c with their labels, and the result, outcome and
           action values it matches are those of src/enforce.c and
           src/config-schema.c.
test       promtool test rules conf/pgsweeper.rules.test.yml; every alert has
           a case where it fires and one where it does not.
dashboard  conf/pgsweeper-dashboard.json parses (a key twice is an error); it
           has the datasource, instance and server variables (server from
           label_values(pgsweeper_polls_total, ...)); every panel but a row
           has a datasource and targets, each with a refId and a non-empty
           expression whose variables are all defined (a multi-value one only
           in a =~ or !~ matcher), whose series are known as for rules. Then,
           with the variables replaced by values as Grafana would (server
           "(main|replica)", $__rate_interval 4m, ...), every expression
           (and the variables' selectors) becomes a recording rule of a
           generated rules file that promtool check rules checks, and an
           alert absent(EXPR) that a promtool test over a sample of every
           family proves never fires: every panel shows data.

Exit status 77 (skipped) when promtool or python3-yaml is missing, with the
reason; tools/test installs both (the packages prometheus and python3-yaml).
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checklib import Failed, check  # noqa: E402  (tests/checklib.py, beside this file)

SKIP = 77
RULES = "conf/pgsweeper.rules.yml"
RULES_TEST = "conf/pgsweeper.rules.test.yml"
DASHBOARD = "conf/pgsweeper-dashboard.json"

# The contract of SPEC 18: operators silence and route alerts by these names.
ALERTS = ["PgsweeperServerDown", "PgsweeperPrivilegesMissing", "PgsweeperUnknownResults",
          "PgsweeperJournalDropped", "PgsweeperPollErrors", "PgsweeperMetricsStale",
          "PgsweeperConnectionsNearLimit", "PgsweeperTerminationBurst"]
SEVERITIES = {"critical", "warning", "info"}
# Families announced but not yet in src/metrics.c (SPEC 19, issue 22), with
# their labels: the dashboard shows them already. Drop an entry once
# src/metrics.c writes the family.
ANNOUNCED = {}
# Labels the scrape adds (node_exporter's target), and those of Prometheus'
# own series the dashboard reads.
SCRAPE_LABELS = {"job", "instance"}
OTHER_SERIES = {"up": set(), "ALERTS": {"alertname", "alertstate", "severity"}}

# What Grafana puts in place of its variables (multi-value ones as it formats
# a selection of two for Prometheus).
VARIABLE_VALUES = {"instance": "db1:9100", "server": "(main|replica)"}
BUILTIN_VALUES = {"__rate_interval": "4m", "__interval": "1m", "__range": "1h", "__range_s": "3600",
                  "__interval_ms": "60000"}


class Skip(Exception):
    pass


def must(cond, what):
    """check() without the "ok:" line, for the many small checks."""
    if not cond:
        raise Failed(what)


def need_yaml():
    try:
        import yaml
    except ImportError:
        raise Skip("python3-yaml is not installed (tools/test installs it)")
    return yaml


def promtool(*args, cwd=None):
    exe = shutil.which("promtool")
    if not exe:
        raise Skip("promtool is not installed (Debian package prometheus; tools/test installs it)")
    r = subprocess.run([exe, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(f"$ promtool {' '.join(args)}")
    print(r.stdout, end="")
    return r


def read(src, path):
    with open(os.path.join(src, path), encoding="utf-8") as f:
        return f.read()


class Known:
    """What the C sources say the metrics file holds."""

    def __init__(self, src):
        metrics_c = read(src, "src/metrics.c")
        self.families = set(re.findall(r'"(pgsweeper_[a-z_]+)', metrics_c))
        self.labels = set(re.findall(r'label\(f, "([a-z_]+)"', metrics_c)) | SCRAPE_LABELS
        for labels in ANNOUNCED.values():
            self.labels |= labels
        self.announced = {f for f in ANNOUNCED if f not in self.families}
        self.values = {
            "result": table(read(src, "src/enforce.c"), "result_names"),
            "outcome": table(read(src, "src/enforce.c"), "outcome_names"),
            "action": set(re.findall(r'\[ACTION_[A-Z]+\] = "([a-z-]+)"', read(src, "src/config-schema.c"))),
        }
        self.message_ids = set(re.findall(r'#define MESSAGE_ID_\w+\s+"([0-9a-f]{32})"',
                                          read(src, "include/message-ids.h")))
        check(len(self.families) >= 10 and self.values["result"] and self.values["outcome"]
              and self.values["action"] and self.message_ids,
              "the families, results, outcomes, actions and MESSAGE_IDs are read from the sources")

    def check_expr(self, expr, where):
        """The series an expression reads exist, with those labels and values."""
        names = set(re.findall(r"\b(pgsweeper_[a-z_]+)\b", expr))
        for name in names:
            must(name in self.families or name in ANNOUNCED, f"{where}: {name} is not a family of src/metrics.c")
        used = set()
        for m in re.finditer(r"\b(pgsweeper_[a-z_]+|ALERTS|up)?\s*\{([^}]*)\}", expr):
            family = m.group(1)
            for label, op, value in re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"', m.group(2)):
                if family in OTHER_SERIES:
                    # an alert's series has the labels of pgsweeper's series too
                    allowed = OTHER_SERIES[family] | SCRAPE_LABELS | (self.labels if family == "ALERTS" else set())
                    must(label in allowed, f"{where}: {family} has no label {label}")
                    continue
                used.add(label)
                if family in ("pgsweeper_actions_total", "pgsweeper_unknown_outcomes_total") \
                        and label in self.values:
                    alternatives = value.strip("()").split("|") if op in ("=~", "!~") else [value]
                    for v in alternatives:
                        if re.fullmatch(r"[a-z-]+", v):
                            must(v in self.values[label],
                                  f"{where}: {label}=\"{v}\" is none of {sorted(self.values[label])}")
        for m in re.finditer(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", expr):
            used |= {label.strip() for label in m.group(1).split(",") if label.strip()}
        for label in used:
            must(label in self.labels, f"{where}: no series of pgsweeper has the label {label}")
        for id128 in re.findall(r"MESSAGE_ID=([0-9a-f]+)", expr):
            must(id128 in self.message_ids, f"{where}: MESSAGE_ID={id128} is not in include/message-ids.h")

    def note(self):
        if self.announced:
            print(f"note: announced, not in src/metrics.c yet: {', '.join(sorted(self.announced))}")


def table(c_source, name):
    m = re.search(name + r"\[[^\]]*\] = \{(.*?)\};", c_source, re.S)
    return set(re.findall(r'= "([a-z-]+)"', m.group(1))) if m else set()


def check_rules(src):
    yaml = need_yaml()
    r = promtool("check", "rules", "--lint=all", "--lint-fatal", RULES, cwd=src)
    check(r.returncode == 0, f"promtool check rules {RULES} exits 0 ({r.returncode})")
    known = Known(src)
    doc = yaml.safe_load(read(src, RULES))
    groups = doc["groups"]
    check(len(groups) == 1, f"one group ({len(groups)})")
    rules = groups[0]["rules"]
    names = [r.get("alert") for r in rules]
    check(sorted(set(names)) == sorted(ALERTS) and len(names) == len(ALERTS),
          f"the alerts are exactly, and each once: {', '.join(ALERTS)} ({names})")
    for rule in rules:
        name = rule["alert"]
        check("for" in rule, f"{name} has a for:")
        severity = (rule.get("labels") or {}).get("severity")
        check(severity in SEVERITIES, f"{name}: severity is one of {sorted(SEVERITIES)} ({severity})")
        annotations = rule.get("annotations") or {}
        for key in ("summary", "description"):
            check((annotations.get(key) or "").strip(), f"{name} has a {key}")
        known.check_expr(rule["expr"], name)
        known.check_expr(annotations["description"], f"{name}'s description")
        print(f"ok: {name}: for {rule['for']}, severity {severity}")
    known.note()


def check_rules_test(src):
    yaml = need_yaml()
    r = promtool("test", "rules", RULES_TEST, cwd=src)
    check(r.returncode == 0, f"promtool test rules {RULES_TEST} exits 0 ({r.returncode})")
    doc = yaml.safe_load(read(src, RULES_TEST))
    fires, quiet = set(), set()
    for test in doc["tests"]:
        for case in test.get("alert_rule_test") or []:
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    for name in ALERTS:
        check(name in fires, f"{RULES_TEST} has a case where {name} fires")
        check(name in quiet, f"{RULES_TEST} has a case where {name} does not fire")
    print(f"ok: each of the {len(ALERTS)} alerts is tested firing and not firing")


def no_duplicate_keys(pairs):
    keys = [k for k, _ in pairs]
    dups = sorted({k for k in keys if keys.count(k) > 1})
    if dups:
        raise Failed(f"{DASHBOARD}: key given twice in one object: {', '.join(dups)}")
    return dict(pairs)


def substitute(expr, variables, where):
    """Grafana's interpolation, with the values above."""
    for m in re.finditer(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', expr):
        for name in re.findall(r"\$\{?(\w+)", m.group(3)):
            if variables.get(name, {}).get("multi"):
                must(m.group(2) in ("=~", "!~"),
                      f"{where}: multi-value ${name} in a {m.group(2)} matcher ({m.group(0)}): use =~")

    def value(m):
        name = m.group(1) or m.group(2)
        if name in BUILTIN_VALUES:
            return BUILTIN_VALUES[name]
        must(name in variables and name in VARIABLE_VALUES, f"{where}: unknown variable ${name}")
        return VARIABLE_VALUES[name]
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", value, expr)


# A sample of every family, as node_exporter would serve pgsweeper's file,
# one scrape a minute for an hour: the dashboard's expressions must all
# return something on it.
HOST = 'job="node",instance="db1:9100"'
MAIN = HOST + ',server="main"'
SAMPLE = [
    (f'pgsweeper_build_info{{{HOST},version="0.1.0"}}', "1x60"),
    (f'pgsweeper_actions_total{{{MAIN},rule="idle",action="terminate",result="terminated"}}', "0+2x60"),
    (f'pgsweeper_actions_total{{{MAIN},rule="idle",action="terminate",result="unknown"}}', "0+1x60"),
    (f'pgsweeper_actions_total{{{MAIN},rule="long-queries",action="cancel",result="cancelled"}}', "0+1x60"),
    (f'pgsweeper_unknown_outcomes_total{{{MAIN},rule="idle",action="terminate",outcome="gone"}}', "0+1x60"),
    (f'pgsweeper_polls_total{{{MAIN}}}', "0+6x60"),
    (f'pgsweeper_poll_errors_total{{{MAIN}}}', "0+1x60"),
    (f'pgsweeper_server_up{{{MAIN}}}', "1x60"),
    (f'pgsweeper_server_privileges_ok{{{MAIN}}}', "1x60"),
    (f'pgsweeper_last_poll_duration_seconds{{{MAIN}}}', "0.002x60"),
    (f'pgsweeper_last_poll_timestamp_seconds{{{MAIN}}}', "0+60x60"),
    (f'pgsweeper_server_in_recovery{{{MAIN}}}', "0x60"),
    (f'pgsweeper_server_connections{{{MAIN}}}', "50x60"),
    (f'pgsweeper_server_connection_slots{{{MAIN}}}', "100x60"),
    (f'pgsweeper_horizon_age{{{MAIN},holder="session"}}', "1000+100x60"),
    (f'pgsweeper_config_reloads_total{{{HOST},result="ok"}}', "0+1x60"),
    (f'pgsweeper_config_reloads_total{{{HOST},result="failed"}}', "0x60"),
    (f'pgsweeper_journal_dropped_total{{{HOST}}}', "0+1x60"),
    (f'ALERTS{{{MAIN},alertname="PgsweeperServerDown",alertstate="firing",severity="critical"}}', "1x60"),
]


def check_dashboard(src):
    yaml = need_yaml()
    if not shutil.which("promtool"):
        raise Skip("promtool is not installed (Debian package prometheus; tools/test installs it)")
    known = Known(src)
    try:
        d = json.loads(read(src, DASHBOARD), object_pairs_hook=no_duplicate_keys)
    except json.JSONDecodeError as e:
        raise Failed(f"{DASHBOARD} is not valid JSON: {e}")
    check(isinstance(d.get("schemaVersion"), int) and 36 <= d["schemaVersion"] <= 41,
          f"schemaVersion 36 to 41 ({d.get('schemaVersion')})")
    check(d.get("uid") and d.get("title"), "the dashboard has a uid and a title")
    variables = {v["name"]: v for v in d["templating"]["list"]}
    check(variables.get("datasource", {}).get("type") == "datasource"
          and variables["datasource"].get("query") == "prometheus",
          "a datasource variable of type prometheus, named datasource")
    ds = {"type": "prometheus", "uid": "${datasource}"}
    check(set(variables) >= {"datasource", "instance", "server"}, f"variables datasource, instance, server ({list(variables)})")
    exprs = []   # (where, expression as written)
    for name, v in variables.items():
        if v["type"] != "query":
            continue
        check(v.get("datasource") == ds, f"variable {name} reads ${{datasource}}")
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q)
        check(m, f"variable {name}: label_values(SELECTOR, LABEL) ({q})")
        exprs.append((f"variable {name}", m.group(1)))
    check(re.match(r"pgsweeper_polls_total\b", exprs[[w for w, _ in exprs].index("variable server")][1]),
          "variable server is label_values(pgsweeper_polls_total..., server)")

    panels, ids = [], set()

    def walk(ps):
        for p in ps:
            panels.append(p)
            walk(p.get("panels") or [])
    walk(d["panels"])
    for p in panels:
        where = f"panel {p.get('id')} \"{p.get('title')}\""
        must(isinstance(p.get("id"), int) and p["id"] not in ids, f"{where}: a unique integer id")
        ids.add(p["id"])
        g = p.get("gridPos") or {}
        must(all(isinstance(g.get(k), int) for k in "xywh") and g["x"] + g["w"] <= 24,
              f"{where}: a gridPos within 24 columns ({g})")
        must(p.get("title"), f"{where}: a title")
        if p["type"] == "row":
            continue
        must(p.get("datasource") == ds, f"{where}: datasource ${{datasource}} ({p.get('datasource')})")
        targets = p.get("targets") or []
        must(targets, f"{where}: has targets")
        refs = [t.get("refId") for t in targets]
        must(all(refs) and len(set(refs)) == len(refs), f"{where}: unique refIds ({refs})")
        for t in targets:
            check((t.get("expr") or "").strip(), f"{where} target {t.get('refId')}: a non-empty expression")
            must(t.get("datasource", ds) == ds, f"{where} target {t['refId']}: datasource ${{datasource}}")
            exprs.append((f"{where} target {t['refId']}", t["expr"]))
    check(len(exprs) >= 10, f"at least 10 expressions ({len(exprs)})")

    recording, absent = [], []
    for i, (where, expr) in enumerate(exprs):
        known.check_expr(expr, where)
        concrete = substitute(expr, variables, where)
        recording.append({"record": f"pgsweeper_dashboard:expr_{i}", "expr": concrete})
        absent.append({"alert": "DashboardExpressionEmpty", "expr": f"absent({concrete})", "for": "0m",
                       "labels": {"expression": where}})
    with tempfile.TemporaryDirectory(prefix="pgsweeper-dashboard.") as tmp:
        with open(os.path.join(tmp, "dashboard.rules.yml"), "w") as f:
            yaml.safe_dump({"groups": [{"name": "pgsweeper-dashboard", "rules": recording + absent}]}, f,
                           sort_keys=False, width=1000)
        with open(os.path.join(tmp, "dashboard.test.yml"), "w") as f:
            yaml.safe_dump({"rule_files": ["dashboard.rules.yml"], "evaluation_interval": "1m",
                            "tests": [{"interval": "1m",
                                       "input_series": [{"series": s, "values": v} for s, v in SAMPLE],
                                       "alert_rule_test": [{"eval_time": "60m",
                                                            "alertname": "DashboardExpressionEmpty",
                                                            "exp_alerts": []}]}]}, f,
                           sort_keys=False, width=1000)
        for s, _ in SAMPLE:
            known.check_expr(s, "the sample")
        r = promtool("check", "rules", "--lint=all", "--lint-fatal", "dashboard.rules.yml", cwd=tmp)
        check(r.returncode == 0, f"promtool check rules of the dashboard's expressions exits 0 ({r.returncode})")
        r = promtool("test", "rules", "dashboard.test.yml", cwd=tmp)
        check(r.returncode == 0, "every expression returns data on the sample (promtool test rules: the "
              "expressions of the DashboardExpressionEmpty alerts it lists return nothing)")
    rows = sum(p["type"] == "row" for p in panels)
    print(f"ok: {len(panels) - rows} panels in {rows} rows, {len(exprs)} expressions (variables included) "
          "checked by promtool, each with data on the sample")
    known.note()


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("rules", "test", "dashboard"):
        print(__doc__, file=sys.stderr)
        return 2
    mode, src = sys.argv[1], sys.argv[2]
    try:
        {"rules": check_rules, "test": check_rules_test, "dashboard": check_dashboard}[mode](src)
    except Skip as e:
        print(f"SKIP: {e}")
        return SKIP
    except Failed as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
