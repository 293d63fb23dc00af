"""Promote, rollback, challengers and the automatic rollback, with their audit log.

First on a handmade registry (version folders holding only a model card) and a real DuckDB file
with handmade backtest rows; then end to end with the trained model and a degraded copy of it:
real scoring runs on DirectRunner and a real backtest on the generated portfolio.
"""
from __future__ import annotations

import datetime as dt
import json
import os

import pandas as pd
import pyarrow as pa
import pytest

from models import lifecycle, performance
from models.lifecycle import LifecycleError
from models.registry import Registry
from smescore import cli, tables
from smescore.warehouse import Warehouse

D = dt.date(2025, 10, 31)
CARDS = {"v1": (0.80, 0.45), "v2": (0.82, 0.47), "v3": (0.79, 0.44)}     # test AUC, KS


@pytest.fixture()
def reg(tmp_path) -> Registry:
    root = tmp_path / "registry"
    for version, (auc, ks) in CARDS.items():
        folder = root / "versions" / version
        folder.mkdir(parents=True)
        (folder / "model_card.json").write_text(json.dumps(
            {"version": version, "metrics": {"test": {"auc": auc, "ks": ks}}}))
    return Registry(str(root))


def audit(reg) -> list[dict]:
    return lifecycle.read_audit(reg)


def backtest_rows(wh: Warehouse, as_of: dt.date, figures: dict[str, tuple[float, int, int]]):
    """Backtest rows (segment 'all' only) with the given (auc, n_firms, n_defaults) per version."""
    at = dt.datetime(2026, 11, 1)
    rows = [{"as_of_date": as_of, "model_version": v, "segment_type": "all", "segment": "all",
             "outcome_months": 12, "n_firms": n, "n_defaults": k, "auc": auc, "ks": auc - 0.4,
             "gini": 2 * auc - 1, "brier": 0.04, "predicted_default_rate": 0.05,
             "observed_default_rate": k / n, "binomial_p_value": 0.5, "calibration_status": "ok",
             "backtested_at": at} for v, (auc, n, k) in figures.items()]
    wh.replace_partitions(as_of, {"performance": pa.Table.from_pylist(
        rows, schema=tables.arrow_schema("performance"))})


@pytest.fixture()
def wh(tmp_path) -> Warehouse:
    w = Warehouse(tmp_path / "risk.duckdb")
    w.ensure_schema()
    return w


# ----------------------------------------------------------------------------- promote/rollback

def test_promote_and_rollback_move_the_champion_and_the_log_shows_each_step(reg):
    first = lifecycle.promote(reg, "v1", why="first model", who="ana")
    assert (first["from_version"], first["to_version"], first["champion"]) == (None, "v1", "v1")
    assert first["metrics"] == {"v1": {"card_test_auc": 0.80, "card_test_ks": 0.45}}
    assert lifecycle.previous_champion(reg) is None
    lifecycle.promote(reg, "v2", why="better on the validation months", who="ana")
    assert reg.champion() == "v2" and lifecycle.previous_champion(reg) == "v1"
    back = lifecycle.rollback(reg, why="complaints from the branches", who="bo")
    assert reg.champion() == "v1"
    assert (back["action"], back["from_version"], back["to_version"]) == ("rollback", "v2", "v1")
    assert back["metrics"]["v2"] == {"card_test_auc": 0.82, "card_test_ks": 0.47}
    assert lifecycle.previous_champion(reg) == "v2"     # the one v1 replaced this time
    log = audit(reg)
    assert [(e["action"], e["from_version"], e["to_version"], e["who"], e["why"]) for e in log] == [
        ("promote", None, "v1", "ana", "first model"),
        ("promote", "v1", "v2", "ana", "better on the validation months"),
        ("rollback", "v2", "v1", "bo", "complaints from the branches")]
    for e in log:
        at = dt.datetime.strptime(e["at"], "%Y-%m-%dT%H:%M:%SZ")          # UTC, to the second
        assert abs((dt.datetime.utcnow() - at).total_seconds()) < 3600


def test_the_log_is_only_ever_appended_to(reg):
    lifecycle.promote(reg, "v1")
    lifecycle.promote(reg, "v2")
    with open(lifecycle.audit_path(reg), "rb") as fh:
        before = fh.read()
    lifecycle.rollback(reg)
    lifecycle.add_challenger(reg, "v3")
    with open(lifecycle.audit_path(reg), "rb") as fh:
        after = fh.read()
    assert after.startswith(before) and after.count(b"\n") == 4
    assert all(json.loads(line)["action"] for line in after.splitlines())


def test_rollback_without_a_previous_champion_is_refused(reg):
    with pytest.raises(FileNotFoundError, match="no champion"):
        lifecycle.rollback(reg)
    lifecycle.promote(reg, "v1")
    with pytest.raises(LifecycleError, match="no previous champion to roll back to: v1 is the "
                                             "first champion"):
        lifecycle.rollback(reg)
    assert reg.champion() == "v1" and len(audit(reg)) == 1


def test_promote_of_an_unknown_version_or_of_the_champion_is_refused(reg):
    lifecycle.promote(reg, "v1")
    with pytest.raises(LifecycleError, match=r"unknown model version 'v9'.*\['v1', 'v2', 'v3'\]"):
        lifecycle.promote(reg, "v9")
    with pytest.raises(LifecycleError, match="v1 is already the champion"):
        lifecycle.promote(reg, "v1")
    assert reg.champion() == "v1" and len(audit(reg)) == 1


def test_a_champion_the_log_does_not_explain_is_not_guessed(reg):
    lifecycle.promote(reg, "v1")
    lifecycle.promote(reg, "v2")
    reg.set_champion("v3")                                  # behind the log's back
    with pytest.raises(LifecycleError, match="champion.json names v3 but the audit log's latest "
                                             "champion change .* is to v2"):
        lifecycle.rollback(reg)
    assert reg.champion() == "v3"


def test_challengers_are_audited_and_a_promoted_challenger_leaves_the_list(reg):
    lifecycle.promote(reg, "v1")
    lifecycle.add_challenger(reg, "v2", why="shadow for a month")
    lifecycle.add_challenger(reg, "v3")
    assert reg.challengers() == ["v2", "v3"]
    with pytest.raises(LifecycleError, match="already a challenger"):
        lifecycle.add_challenger(reg, "v2")
    with pytest.raises(LifecycleError, match="v1 is the champion"):
        lifecycle.add_challenger(reg, "v1")
    with pytest.raises(LifecycleError, match="unknown model version"):
        lifecycle.add_challenger(reg, "v9")
    entry = lifecycle.promote(reg, "v2")
    assert reg.champion() == "v2" and reg.challengers() == ["v3"]
    assert entry["challengers"] == ["v3"]
    lifecycle.remove_challenger(reg, "v3", why="worse than the champion")
    assert reg.challengers() == []
    with pytest.raises(LifecycleError, match="'v3' is not a challenger"):
        lifecycle.remove_challenger(reg, "v3")
    assert [(e["action"], e["from_version"], e["to_version"], e["challengers"])
            for e in audit(reg)] == [
        ("promote", None, "v1", []), ("challenger_add", None, "v2", ["v2"]),
        ("challenger_add", None, "v3", ["v2", "v3"]), ("promote", "v1", "v2", ["v3"]),
        ("challenger_remove", "v3", None, [])]


def test_with_a_warehouse_the_log_records_the_latest_backtests(reg, wh):
    backtest_rows(wh, D - dt.timedelta(days=31), {"v1": (0.70, 900, 40)})
    backtest_rows(wh, D, {"v1": (0.78, 1000, 50), "v2": (0.81, 1000, 50)})
    lifecycle.promote(reg, "v1")
    entry = lifecycle.promote(reg, "v2", warehouse=wh.path)
    assert entry["metrics"]["v1"]["backtest"]["as_of_date"] == "2025-10-31"
    assert entry["metrics"]["v1"]["backtest"]["auc"] == pytest.approx(0.78)
    assert entry["metrics"]["v2"]["backtest"]["n_defaults"] == 50
    assert entry["metrics"]["v2"]["card_test_auc"] == 0.82


def test_cli_commands(reg, wh, capsys):
    root = reg.root
    assert cli.main(["promote", "v1", "--registry", root, "--why", "first", "--by", "ana"]) == 0
    assert cli.main(["promote", "v2", "--registry", root, "--warehouse", wh.path]) == 0
    assert cli.main(["challenger", "add", "v3", "--registry", root]) == 0
    capsys.readouterr()
    assert cli.main(["challenger", "list", "--registry", root]) == 0
    assert json.loads(capsys.readouterr().out) == {"champion": "v2", "challengers": ["v3"]}
    assert cli.main(["rollback", "--registry", root, "--why", "bad night"]) == 0
    assert json.loads(capsys.readouterr().out)["to_version"] == "v1"
    assert cli.main(["promote", "nope", "--registry", root]) == 1
    assert "smescore promote: unknown model version 'nope'" in capsys.readouterr().err
    assert cli.main(["challenger", "remove", "v2", "--registry", root]) == 1
    assert "'v2' is not a challenger" in capsys.readouterr().err
    assert [e["action"] for e in audit(reg)] == ["promote", "promote", "challenger_add", "rollback"]
    assert audit(reg)[0]["who"] == "ana"


# ----------------------------------------------------------------------------- automatic rollback

@pytest.mark.parametrize("case, figures, fires", [
    ("drop and previous better", {"v2": (0.74, 1000, 50), "v1": (0.79, 1000, 50)}, True),
    ("drop within the limit", {"v2": (0.78, 1000, 50), "v1": (0.79, 1000, 50)}, False),
    ("previous no better", {"v2": (0.74, 1000, 50), "v1": (0.74, 1000, 50)}, False),
    ("another cohort", {"v2": (0.74, 1000, 50), "v1": (0.79, 990, 50)}, False),
    ("previous not backtested", {"v2": (0.74, 1000, 50)}, False),
])
def test_automatic_rollback_decision(reg, wh, case, figures, fires):
    lifecycle.promote(reg, "v1")
    lifecycle.promote(reg, "v2")                      # card AUC 0.82; the limit 0.05 -> 0.77
    backtest_rows(wh, D, figures)
    reason = lifecycle.automatic_rollback(reg, wh.path, max_auc_drop=0.05, who="nightly")
    assert reg.champion() == ("v1" if fires else "v2")
    assert (reason is not None) == fires
    if fires:
        assert reason == ("automatic rollback from v2 to v1: the backtest of 2025-10-31 (1000 "
                          "firms, 50 defaults) gives v2 an AUC of 0.7400, 0.0800 below its model "
                          "card's 0.8200 (more than max_auc_drop 0.05), and v1 an AUC of 0.7900 "
                          "on the same cohort")
        entry = audit(reg)[-1]
        assert (entry["action"], entry["from_version"], entry["to_version"], entry["why"],
                entry["who"]) == ("automatic_rollback", "v2", "v1", reason, "nightly")
        evidence = entry["metrics"]["evidence"]
        assert evidence["champion_backtest"]["auc"] == pytest.approx(0.74)
        assert evidence["previous_backtest"]["auc"] == pytest.approx(0.79)
        assert evidence["champion_card_test_auc"] == 0.82 and evidence["max_auc_drop"] == 0.05
        # v1 is fine: the next check leaves it alone (no ping-pong)
        assert lifecycle.automatic_rollback(reg, wh.path, 0.05) is None
    else:
        assert len(audit(reg)) == 2


def test_automatic_rollback_reads_the_champions_latest_backtest_only(reg, wh):
    lifecycle.promote(reg, "v1")
    lifecycle.promote(reg, "v2")
    backtest_rows(wh, D - dt.timedelta(days=31), {"v2": (0.60, 900, 40), "v1": (0.79, 900, 40)})
    backtest_rows(wh, D, {"v2": (0.80, 1000, 50), "v1": (0.79, 1000, 50)})
    assert lifecycle.automatic_rollback(reg, wh.path, 0.05) is None     # recovered since
    assert lifecycle.automatic_rollback(reg, str(wh.path) + ".absent", 0.05) is None
    assert reg.champion() == "v2"
    with pytest.raises(ValueError, match=r"max_auc_drop must be in \[0, 1\], got 2"):
        lifecycle.automatic_rollback(reg, wh.path, 2)
