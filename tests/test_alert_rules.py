"""Alert rules and dashboard against the metrics we push: promtool checks and unit-tests the rules,
and every metric name in a rule or a Grafana query must be one smescore.monitoring.metrics pushes."""
import json
import pathlib
import re
import subprocess

import pytest
import yaml

from service import metrics as service_metrics
from smescore.monitoring import metrics
from tests.monitoring_services import executable

ROOT = pathlib.Path(__file__).resolve().parent.parent
RULES = ROOT / "infra" / "prometheus" / "smescore_alerts.yml"
RULE_TESTS = ROOT / "infra" / "prometheus" / "smescore_alerts_test.yml"
DASHBOARD = ROOT / "infra" / "grafana" / "smescore_dashboard.json"

# PromQL words that look like metric names but are not.
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression reads: identifiers that are not functions, keywords,
    label names (inside {...} or by/on/... lists), strings or durations."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    names = re.findall(r"(?<![\w.$])([A-Za-z_:][A-Za-z0-9_:]*)\b(?!\s*\()", s)
    return {n for n in names if n.lower() not in _KEYWORDS}


def test_metric_names_parser():
    assert metric_names('time() - max by (job, instance) (a_b{job="x", y=~"$z"}) > 26 * 3600') \
        == {"a_b"}
    assert metric_names("topk(15, m1{i=~\"$instance\"}) / on (v) group_left (w) m2 or m3[5m]") == \
        {"m1", "m2", "m3"}
    assert metric_names("absent(up{job=\"smescore\"}) and bool 1e3") == {"up"}


def _rule_exprs() -> list[str]:
    doc = yaml.safe_load(RULES.read_text())
    return [r["expr"] for g in doc["groups"] for r in g["rules"]]


def _dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for var in dash["templating"]["list"]:
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        exprs.append(re.fullmatch(r"label_values\((.*),\s*\w+\)", query).group(1))
    return exprs


def _promtool(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([executable("promtool"), *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def test_promtool_checks_the_rules():
    done = _promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 8 rules found" in done.stdout


def test_promtool_rule_unit_tests_pass():
    done = _promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_rule_unit_tests_cover_every_alert():
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    tested = {t["alertname"] for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
    assert tested == alerts


def test_dashboard_queries_are_valid_promql(tmp_path):
    """promtool parses every Grafana query (as a recording rule), Grafana variables filled in."""
    exprs = [e.replace("$instance", ".*") for e in _dashboard_exprs()]
    rules = {"groups": [{"name": "grafana", "rules": [{"record": f"grafana:query_{i}", "expr": e}
                                                      for i, e in enumerate(exprs)]}]}
    path = tmp_path / "grafana_queries.yml"
    path.write_text(yaml.safe_dump(rules))
    done = _promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in done.stdout


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_queries_use_only_metrics_we_push(source):
    exprs = _rule_exprs() if source == "rules" else _dashboard_exprs()
    used = set().union(*(metric_names(e) for e in exprs))
    # the dashboard also has the scoring service's panels (its own rules: test_service_alerts.py)
    known = set(metrics.METRICS) | (set(service_metrics.NAMES) if source == "dashboard" else set())
    assert used and used <= known, sorted(used - known)


def test_every_pushed_metric_is_on_the_dashboard_or_in_a_rule():
    used = set().union(*(metric_names(e) for e in _rule_exprs() + _dashboard_exprs()))
    assert set(metrics.METRICS) - used == set()
    on_dashboard = set().union(*(metric_names(e) for e in _dashboard_exprs()))
    assert set(metrics.METRICS) - on_dashboard == set()
