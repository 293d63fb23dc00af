"""The scoring service's alert rules and dashboard panels against the series its /metrics really
exposes: promtool checks and unit-tests the rules; every metric they read is one the service
exposes, checked on a live exposition."""
import json
import pathlib

import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from service import metrics
from tests.test_alert_rules import _promtool, metric_names

ROOT = pathlib.Path(__file__).resolve().parent.parent
RULES = ROOT / "infra" / "prometheus" / "smescore_service_alerts.yml"
RULE_TESTS = ROOT / "infra" / "prometheus" / "smescore_service_alerts_test.yml"
DASHBOARD = ROOT / "infra" / "grafana" / "smescore_dashboard.json"


def _rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def _service_panel_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])
            if "smescore_service_" in t["expr"]]


def test_promtool_checks_the_service_rules():
    done = _promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 4 rules found" in done.stdout


def test_promtool_unit_tests_of_the_service_rules_pass():
    done = _promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_service_alert_is_unit_tested():
    tested = {t["alertname"] for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
    assert tested == {r["alert"] for r in _rules()}


def test_rules_and_panels_read_series_the_service_exposes():
    m = metrics.ServiceMetrics()
    m.latency.labels("/v1/score/features", "champion").observe(0.02)
    m.requests.labels("/v1/score/features", "200").inc()
    m.batch_rows.observe(8)
    m.shadow.labels("v2", "ok").inc()
    m.serving("v1", ["v2"])
    m.swaps.labels("swapped").inc()
    exposed = {s.name for fam in text_string_to_metric_families(
        generate_latest(m.registry).decode()) for s in fam.samples}
    assert exposed >= set(metrics.NAMES)
    panels = _service_panel_exprs()
    assert len(panels) >= 6
    used = set().union(*(metric_names(e) for e in [r["expr"] for r in _rules()] + panels))
    assert used <= set(metrics.NAMES), sorted(used - set(metrics.NAMES))
    assert set(metrics.NAMES) - {"smescore_service_request_duration_seconds_count",
                                 "smescore_service_request_duration_seconds_sum"} <= used
