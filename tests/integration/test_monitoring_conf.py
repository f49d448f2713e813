"""The monitoring files operators install next to the daemon:
conf/prometheus/sessiond.rules.yml and conf/grafana/sessiond.json.

- `promtool check rules` accepts the rules and `promtool test rules` runs
  their unit tests (conf/prometheus/sessiond.rules.test.yml); promtool is in
  Debian's prometheus package;
- every sessiond_* metric the rules and the dashboard's queries use is one
  the real daemon exports: a daemon with the endpoint on, performance
  monitoring and health checks on (so that every series exists) is
  scraped over HTTP and each name is looked up;
- the dashboard is well-formed: unique panel ids, every query on the
  ${datasource} variable and the $job/$instance selection, panels inside
  the 24-column grid.
"""

import json
import os
import re
import shutil
import subprocess

import promtext
from harness import Daemon, TIMEOUT, Skip, run_tests, wait_for

SOURCE = os.environ["MESON_SOURCE_ROOT"]
RULES_DIR = os.path.join(SOURCE, "conf", "prometheus")
RULES = os.path.join(RULES_DIR, "sessiond.rules.yml")
DASHBOARD = os.path.join(SOURCE, "conf", "grafana", "sessiond.json")
METRIC = re.compile(r"\bsessiond_[a-zA-Z0-9_:]*")


def promtool(*args):
    tool = shutil.which("promtool")
    if not tool:
        raise Skip("promtool is not installed (Debian package prometheus)")
    p = subprocess.run([tool] + list(args), capture_output=True, text=True, timeout=120, cwd=RULES_DIR)
    assert p.returncode == 0, "promtool %s: exit %d\n%s%s" % (" ".join(args), p.returncode, p.stdout, p.stderr)
    return p.stdout


def test_promtool_check_rules():
    out = promtool("check", "rules", RULES)
    assert "SUCCESS: 12 rules found" in out, out


def test_promtool_test_rules():
    out = promtool("test", "rules", "sessiond.rules.test.yml")
    assert "SUCCESS" in out, out


def rule_exprs():
    """The expr: of each rule, read from the YAML text (no YAML library in
    the base system): the single-line ones and the | blocks."""
    text = open(RULES).read()
    exprs = re.findall(r"^\s+expr: (?!\|)(.+)$", text, re.M)
    exprs += ["\n".join(b) for b in re.findall(r"^\s+expr: \|\n((?:\s{10,}.+\n)+)", text, re.M)]
    alerts = re.findall(r"^\s+- alert: (\S+)$", text, re.M)
    assert len(exprs) == len(alerts) == 12, (exprs, alerts)
    return exprs


def dashboard_exprs():
    d = json.load(open(DASHBOARD))
    exprs = []
    for p in d["panels"]:
        for t in p.get("targets", []):
            exprs.append(t["expr"])
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            exprs.append(v["definition"])
    return d, exprs


def test_dashboard_well_formed():
    d, exprs = dashboard_exprs()
    assert d["uid"] == "sessiond" and d["title"] == "sessiond"
    names = {v["name"] for v in d["templating"]["list"]}
    assert {"datasource", "job", "instance"} <= names, names
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), ids
    for p in d["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", p["title"]
            for sel in re.findall(r"\{([^}]*)\}", t["expr"]):
                if "job=" in sel or sel.startswith("job"):
                    assert 'job="$job"' in sel and 'instance=~"$instance"' in sel, (p["title"], t["expr"])
            assert re.search(r'\{[^}]*job="\$job", instance=~"\$instance"', t["expr"]), (p["title"], t["expr"])
    # what the issue asks to see
    titles = " ".join(p["title"] for p in d["panels"]).lower()
    for want in ("sessions", "validations", "duration", "cleanup", "alerts", "loop lag", "database"):
        assert want in titles, want


def test_every_metric_is_exported():
    _, dash = dashboard_exprs()
    used = {}
    for where, exprs in (("rules", rule_exprs()), ("dashboard", dash)):
        for e in exprs:
            for name in METRIC.findall(e):
                used.setdefault(name, set()).add(where)
    assert len(used) > 30, sorted(used)
    port = promtext.free_port()
    settings = {"daemon.metrics_listen": "127.0.0.1:%d" % port,
                "monitoring.performance_monitoring": True,
                "monitoring.health_check_interval": 1}
    with Daemon(settings) as d, d.connect() as c:
        token = c.call("io.sessiond.Session.Create", {"user_id": "u"})["token"]
        c.call("io.sessiond.Session.Validate", {"token": token})
        c.call("io.sessiond.Admin.Cleanup", {"kind": "regular"})
        # the health status appears with the first periodic check
        fams = wait_for(lambda: (lambda f: "sessiond_health_status" in f and f)(promtext.scrape(port)),
                        timeout=TIMEOUT, what="a health check in the scrape")
        missing = {n: sorted(w) for n, w in used.items() if n not in fams}
        assert not missing, "used but not exported: %s" % missing
        # and the series the rules join on are there with the labels they expect
        alerts = {l["alert"] for l, _ in fams["sessiond_alert_threshold"]["samples"]}
        for a in re.findall(r'sessiond_alert_threshold\{alert="([a-z_]+)"\}', open(RULES).read()):
            assert a in alerts, a
        results = {l["result"] for l, _ in fams["sessiond_validations_total"]["samples"]}
        assert results == {"ok", "grace", "not_found", "expired", "fingerprint", "invalid"}, results


def test_the_check_can_fail():
    # a name the daemon does not export is caught
    assert "sessiond_no_such_metric" not in METRIC.findall("rate(sessiond_sessions_created_total[1m])")
    assert METRIC.findall('x{a="b"} + sessiond_no_such_metric') == ["sessiond_no_such_metric"]


run_tests([
    test_promtool_check_rules,
    test_promtool_test_rules,
    test_dashboard_well_formed,
    test_every_metric_is_exported,
    test_the_check_can_fail,
])
