"""Promote, rollback, challengers and the automatic rollback, with their audit log.

First on a handmade registry (version folders holding only a model card) and a real DuckDB file
with handmade backtest rows; then end to end with the trained model and a degraded copy of it:
real scoring runs on DirectRunner and a real backtest on the generated portfolio.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import pathlib

import numpy as np
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
        write_validation(folder, passed=True)
    return Registry(str(root))


def reg_folder(reg, version) -> pathlib.Path:
    return pathlib.Path(reg.version_dir(version))


def write_validation(folder, passed: bool):
    """A validation.json as `smescore validate` writes it: one AUC check, passed or not."""
    auc = 0.80 if passed else 0.61
    (folder / "validation.json").write_text(json.dumps({
        "passed": passed, "validated_at": "2026-11-02T01:00:00Z", "config_fingerprint": "abc",
        "checks": [{"check": "min_auc", "scope": "2025-10-31", "value": auc, "threshold": 0.7,
                    "passed": passed},
                   {"check": "max_monotonicity_violations", "scope": "hist_months", "value": 0,
                    "threshold": 0, "passed": True}]}))


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
    assert lifecycle.previous_champion(reg) is None     # a rollback is not undone by another
    log = audit(reg)
    assert [(e["action"], e["from_version"], e["to_version"], e["who"], e["why"]) for e in log] == [
        ("promote", None, "v1", "ana", "first model"),
        ("promote", "v1", "v2", "ana", "better on the validation months"),
        ("rollback", "v2", "v1", "bo", "complaints from the branches")]
    for e in log:
        at = dt.datetime.strptime(e["at"], "%Y-%m-%dT%H:%M:%SZ")          # UTC, to the second
        assert abs((dt.datetime.utcnow() - at).total_seconds()) < 3600


def test_rollbacks_step_back_through_the_promotions(reg):
    for v in ("v1", "v2", "v3"):
        lifecycle.promote(reg, v)
    assert lifecycle.champion_history(reg) == ["v1", "v2", "v3"]
    assert lifecycle.rollback(reg)["to_version"] == "v2"
    lifecycle.promote(reg, "v3")                         # promoted again: rollback returns to v2
    assert lifecycle.champion_history(reg) == ["v1", "v2", "v3"]
    assert [lifecycle.rollback(reg)["to_version"] for _ in range(2)] == ["v2", "v1"]
    with pytest.raises(LifecycleError, match="v1 is the earliest champion left"):
        lifecycle.rollback(reg)
    assert [(e["from_version"], e["to_version"]) for e in audit(reg)] == [
        (None, "v1"), ("v1", "v2"), ("v2", "v3"), ("v3", "v2"), ("v2", "v3"), ("v3", "v2"),
        ("v2", "v1")]


def test_a_log_that_does_not_add_up_is_refused(reg):
    lifecycle.promote(reg, "v1")
    lifecycle.promote(reg, "v2")
    forged = {**audit(reg)[-1], "action": "rollback", "from_version": "v3", "to_version": "v1"}
    with open(lifecycle.audit_path(reg), "a") as fh:
        fh.write(json.dumps(forged) + "\n")
    with pytest.raises(LifecycleError, match=r"entry 3 \(rollback v3 -> v1\) does not follow"):
        lifecycle.rollback(reg)
    with open(lifecycle.audit_path(reg), "a") as fh:
        fh.write("not json\n")
    with pytest.raises(LifecycleError, match="line 4: not a JSON object"):
        lifecycle.read_audit(reg)


def test_a_registry_from_before_the_log_keeps_its_champion_as_the_base(reg, wh):
    reg.set_champion("v1")                               # set before audits existed
    backtest_rows(wh, D, {"v1": (0.60, 1000, 50)})       # far below its card's 0.80
    with pytest.raises(LifecycleError, match="records no champion change"):
        lifecycle.previous_champion(reg)
    assert lifecycle.automatic_rollback(reg, wh.path, 0.05) is None     # nothing to go back to
    lifecycle.promote(reg, "v2")
    assert lifecycle.champion_history(reg) == ["v1", "v2"]
    assert lifecycle.rollback(reg)["to_version"] == "v1" and reg.champion() == "v1"


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
                                             "earliest champion left in the audit log"):
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
    with pytest.raises(LifecycleError, match="champion.json names v3 but the audit log leaves "
                                             "v2 champion"):
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
    assert cli.main(["promote", "nope", "--registry", root]) == 3          # bad input
    assert "smescore: promote: unknown model version 'nope'" in capsys.readouterr().err
    assert cli.main(["challenger", "remove", "v2", "--registry", root]) == 3
    assert "'v2' is not a challenger" in capsys.readouterr().err
    # the version may come after the flags too (argparse alone refused it there)
    assert cli.main(["challenger", "remove", "--registry", root, "--why", "done", "v3"]) == 0
    assert cli.main(["challenger", "add", "--registry", root, "--by", "bo", "v3"]) == 0
    assert [e["action"] for e in audit(reg)] == ["promote", "promote", "challenger_add", "rollback",
                                                 "challenger_remove", "challenger_add"]
    assert (audit(reg)[-2]["why"], audit(reg)[-1]["who"]) == ("done", "bo")
    assert audit(reg)[0]["who"] == "ana"


# ----------------------------------------------------------------------------- validation gate

def test_promote_over_a_champion_needs_a_passed_validation(reg):
    lifecycle.promote(reg, "v1")
    os.remove(os.path.join(reg.version_dir("v2"), "validation.json"))
    with pytest.raises(lifecycle.PromotionRefused, match=r"v2 has not been validated \(.*"
                       r"validation.json is missing\): run `smescore validate --version v2"):
        lifecycle.promote(reg, "v2")
    write_validation(reg_folder(reg, "v2"), passed=False)
    with pytest.raises(lifecycle.PromotionRefused, match=r"v2 failed validation: 1 of 2 checks, "
                       r"e.g. min_auc\[2025-10-31\] = 0.61 \(threshold 0.7\); not promoted"):
        lifecycle.promote(reg, "v2", override="   ")
    assert reg.champion() == "v1" and len(audit(reg)) == 1
    entry = lifecycle.promote(reg, "v2", why="pilot", who="ana", override="accepted by the committee")
    assert reg.champion() == "v2"
    assert audit(reg)[-1] == entry
    assert entry["override"] == "accepted by the committee"
    assert entry["validation"] == {
        "status": "failed", "file": os.path.join(reg.version_dir("v2"), "validation.json"),
        "validated_at": "2026-11-02T01:00:00Z", "config_fingerprint": "abc", "n_checks": 2,
        "failed_checks": ["min_auc[2025-10-31] = 0.61 (threshold 0.7)"]}
    passed = lifecycle.promote(reg, "v3")
    assert passed["validation"]["status"] == "passed" and "override" not in passed
    assert isinstance(lifecycle.PromotionRefused("x"), lifecycle.LifecycleError)


def test_a_validation_that_says_passed_with_a_failed_check_is_a_failure(reg):
    lifecycle.promote(reg, "v1")
    path = reg_folder(reg, "v2") / "validation.json"
    forged = json.loads(path.read_text())
    forged["checks"][0].update(value=0.5, passed=False)
    path.write_text(json.dumps(forged))                  # "passed": true left in place
    with pytest.raises(lifecycle.PromotionRefused, match="v2 failed validation"):
        lifecycle.promote(reg, "v2")
    path.write_text('{"passed": true, "checks": [')     # cut short
    with pytest.raises(lifecycle.PromotionRefused, match="validation.json unreadable"):
        lifecycle.promote(reg, "v2")


def test_the_first_champion_of_an_empty_registry_needs_no_validation(reg):
    os.remove(os.path.join(reg.version_dir("v1"), "validation.json"))
    entry = lifecycle.promote(reg, "v1", why="the first model in the registry")
    assert reg.champion() == "v1" and "validation" not in entry


def test_cli_promote_refuses_in_one_line_and_overrides(reg, capsys):
    root = reg.root
    assert cli.main(["promote", "v1", "--registry", root]) == 0
    write_validation(reg_folder(reg, "v2"), passed=False)
    capsys.readouterr()
    assert cli.main(["promote", "v2", "--registry", root]) == 4      # the validation gate
    err = capsys.readouterr().err
    assert err.startswith("smescore: promote: v2 failed validation") and err.count("\n") == 1
    assert cli.main(["promote", "v2", "--registry", root, "--override", "pilot"]) == 0
    assert json.loads(capsys.readouterr().out)["override"] == "pilot"
    assert [e.get("override") for e in audit(reg)] == [None, "pilot"]


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


# ----------------------------------------------------------------------------- end to end

def _score(feeds, registry, warehouse, *extra) -> dict:
    from beam_jobs import score_portfolio
    return score_portfolio.run([f"--feeds={feeds}", f"--as_of={D}", f"--registry={registry}",
                                f"--warehouse={warehouse}", "--n_shards=4", *extra],
                               save_main_session=False, progress=lambda m: None)


def _run_view(wh: Warehouse, result: dict) -> dict:
    """What the run left behind: the versions of D's model scores and its run record."""
    versions = wh.query("SELECT DISTINCT model_version FROM scores WHERE as_of_date = ? AND "
                        "score_source = 'model'", [D]).column(0).to_pylist()
    # the attempt that published: a night rescoring the same inputs with the same version has
    # the same run id as an earlier night, and its own attempt
    run = wh.query("SELECT model_version, status, message FROM runs WHERE run_id = ? AND serving",
                   [result["run_id"]]).to_pylist()[0]
    return {"result": result, "score_versions": versions, "run": run}


def _performance(wh: Warehouse) -> pd.DataFrame:
    return wh.query("SELECT * FROM performance WHERE as_of_date = ? ORDER BY ALL", [D]).to_pandas()


def _model_scores(wh: Warehouse) -> pd.DataFrame:
    return wh.query("SELECT enterprise_id, model_version, pd, grade FROM scores WHERE "
                    "as_of_date = ? AND score_source = 'model'", [D]).to_pandas()


@pytest.fixture(scope="module")
def scenario(trained, small_feeds, tmp_path_factory):
    """The trained version v1 (champion since training) and v2, a degraded copy claiming v1's
    test AUC; every night scores D again. Promote v2, score; backtest D (v2 as published, v1
    rescored as the previous champion); roll back by hand, score; promote v2 again, score: the
    automatic rollback fires; backtest D again with `smescore backtest`."""
    import contextlib
    import io
    import shutil
    from beam_jobs import backtest
    from tests.degraded import register_degraded_copy
    source, v1, _ = trained
    tmp = tmp_path_factory.mktemp("lifecycle")
    registry, wh = str(tmp / "registry"), Warehouse(tmp / "risk.duckdb")
    shutil.copytree(source, registry)
    v2 = f"{v1}-degraded"
    register_degraded_copy(registry, v1, v2, noise=3.0, seed=0)
    out = {"v1": v1, "v2": v2, "registry": registry, "wh": wh}
    # The degraded v2 scores D a year before v1's baseline date: its score PSI (0.81) is at alert,
    # and the score_psi gate would rightly refuse to publish it. This scenario is about what the
    # registry changes, so that one gate is off here (tests/test_faults.py tests it).
    gates_config = tmp / "gates.json"
    gates_config.write_text('{"score_psi": {"enabled": false}}')

    def night(name, *extra):
        out[name] = _run_view(wh, _score(small_feeds, registry, wh.path,
                                         f"--gates_config={gates_config}", *extra))

    lifecycle.promote(registry, v2, why="release candidate", who="ana",
                      override="a degraded copy, promoted on purpose")   # never validated
    night("promoted")
    out["scores_v2"] = _model_scores(wh)
    out["backtest_1"] = backtest.run_backtest(D, small_feeds, wh.path, registry, n_shards=4,
                                              progress=lambda m: None)
    out["performance_1"] = _performance(wh)
    lifecycle.rollback(registry, why="the backtest", who="bo", warehouse=wh.path)
    night("rolled_back")
    lifecycle.promote(registry, v2, why="second try", who="ana", override="once more")
    night("auto")
    out["scores_v1"] = _model_scores(wh)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert cli.main(["backtest", "--as-of", str(D), "--feeds", small_feeds, "--warehouse",
                         wh.path, "--registry", registry, "--n-shards", "4"]) == 0
    out["backtest_2"] = json.loads(stdout.getvalue())
    out["performance_2"] = _performance(wh)
    return out


def test_promote_and_rollback_change_what_the_next_run_uses(scenario):
    v1, v2 = scenario["v1"], scenario["v2"]
    for night, version in (("promoted", v2), ("rolled_back", v1), ("auto", v1)):
        assert scenario[night]["score_versions"] == [version], night
        assert scenario[night]["run"]["model_version"] == version, night
        assert scenario[night]["run"]["status"] == "succeeded"
    assert scenario["promoted"]["run"]["message"] == scenario["rolled_back"]["run"]["message"] == ""
    assert scenario["auto"]["run"]["message"].startswith(f"automatic rollback from {v2} to {v1}")
    log = lifecycle.read_audit(scenario["registry"])
    assert [(e["action"], e["from_version"], e["to_version"], e["why"]) for e in log] == [
        ("promote", None, v1, "the first model in the registry"),      # by `smescore train`
        ("promote", v1, v2, "release candidate"),
        ("rollback", v2, v1, "the backtest"),
        ("promote", v1, v2, "second try"),
        ("automatic_rollback", v2, v1, scenario["auto"]["run"]["message"])]
    assert [e["who"] for e in log[1:4]] == ["ana", "bo", "ana"]
    assert "validation" not in log[0]                # the trainer's first champion needs none
    assert [(e.get("override"), e.get("validation", {}).get("status")) for e in log[1:4]] == [
        ("a degraded copy, promoted on purpose", "missing"), (None, None), ("once more", "missing")]
    assert log[1]["metrics"][v2]["card_test_auc"] == log[1]["metrics"][v1]["card_test_auc"]
    # given the warehouse, the rollback recorded both versions' backtests
    first = scenario["backtest_1"]["versions"]
    assert {v: log[2]["metrics"][v]["backtest"]["auc"] for v in (v1, v2)} == {
        v: pytest.approx(first[v]["auc"]) for v in (v1, v2)}
    assert lifecycle.previous_champion(scenario["registry"]) is None   # v1 is the first again
    with pytest.raises(LifecycleError, match="no previous champion"):
        lifecycle.rollback(scenario["registry"])


def test_the_automatic_rollback_fires_when_the_champion_is_made_worse(scenario):
    v1, v2 = scenario["v1"], scenario["v2"]
    versions = scenario["backtest_1"]["versions"]
    assert versions[v2]["scores"] == "published" and versions[v1]["scores"] == "rescored"
    card_auc = Registry(scenario["registry"]).model_card(v2)["metrics"]["test"]["auc"]
    assert card_auc - versions[v2]["auc"] > 0.05            # measured: 0.7201 - 0.5797 = 0.14
    assert versions[v1]["auc"] > versions[v2]["auc"] + 0.1  # measured: 0.7788 vs 0.5797
    auto = scenario["auto"]
    assert auto["result"]["model_version"] == auto["run"]["model_version"] == v1
    message = auto["run"]["message"]
    assert message == auto["result"]["message"]
    assert message == (
        f"automatic rollback from {v2} to {v1}: the backtest of 2025-10-31 "
        f"({versions[v1]['n_firms']} firms, {versions[v1]['n_defaults']} defaults) gives {v2} an "
        f"AUC of {versions[v2]['auc']:.4f}, {card_auc - versions[v2]['auc']:.4f} below its model "
        f"card's {card_auc:.4f} (more than max_auc_drop 0.05), and {v1} an AUC of "
        f"{versions[v1]['auc']:.4f} on the same cohort")
    entry = lifecycle.read_audit(scenario["registry"])[-1]
    assert entry["action"] == "automatic_rollback" and entry["why"] == message
    evidence = entry["metrics"]["evidence"]
    assert evidence["champion_backtest"]["auc"] == pytest.approx(versions[v2]["auc"], abs=1e-12)
    assert evidence["previous_backtest"]["auc"] == pytest.approx(versions[v1]["auc"], abs=1e-12)
    assert evidence["champion_card_test_auc"] == card_auc and evidence["max_auc_drop"] == 0.05
    assert entry["metrics"][v2]["backtest"]["auc"] == pytest.approx(versions[v2]["auc"])


def _independent_outcomes(feeds_dir: str) -> pd.DataFrame:
    """Per firm, straight from the loans feed: in default at D, defaulted in the 12 months after."""
    import pyarrow.parquet as pq
    from transforms.feeds import DEFAULT_DPD
    loans = pq.read_table(os.path.join(feeds_dir, "loans"),
                          columns=["enterprise_id", "report_month", "days_past_due"]).to_pandas()
    month = pd.to_datetime(loans["report_month"])
    k = (month.dt.year * 12 + month.dt.month) - (D.year * 12 + D.month)   # months after D
    bad = loans["days_past_due"] >= DEFAULT_DPD
    return pd.DataFrame({
        "in_default": loans[bad & (k <= 0)].groupby("enterprise_id").size() > 0,
        "default": loans[bad & (k >= 1) & (k <= 12)].groupby("enterprise_id").size() > 0,
    }).fillna(False)


def _by_hand(scores: pd.DataFrame, feeds_dir: str) -> tuple[np.ndarray, np.ndarray]:
    joined = scores.merge(_independent_outcomes(feeds_dir), left_on="enterprise_id",
                          right_index=True, how="left").fillna({"in_default": False,
                                                                "default": False})
    assert not joined["in_default"].any()                   # the job routed those to grade D
    return joined["default"].astype(int).to_numpy(), joined["pd"].to_numpy()


def test_backtest_on_generated_data_matches_an_independent_computation(scenario, small_feeds):
    from sklearn.metrics import roc_auc_score
    v1, v2, wh = scenario["v1"], scenario["v2"], scenario["wh"]
    first, second = scenario["backtest_1"]["versions"], scenario["backtest_2"]["versions"]
    for version, scores, figures in ((v2, scenario["scores_v2"], first[v2]),
                                     (v1, scenario["scores_v1"], second[v1])):
        assert set(scores["model_version"]) == {version}
        assert figures["scores"] == "published"
        y, pd_ = _by_hand(scores, small_feeds)
        assert (figures["n_firms"], figures["n_defaults"]) == (len(y), y.sum())
        assert figures["auc"] == pytest.approx(roc_auc_score(y, pd_), abs=1e-12)
        assert figures["brier"] == pytest.approx(((pd_ - y) ** 2).mean(), abs=1e-12)
        assert figures["predicted_default_rate"] == pytest.approx(pd_.mean(), abs=1e-12)
    assert scenario["backtest_1"]["cohort_firms"] == len(scenario["scores_v1"]) > 900
    assert scenario["backtest_1"]["cohort_defaults"] > 20
    # Grades of the published scores, counted by hand.
    perf = scenario["performance_1"]
    grades = perf[(perf.model_version == v2) & (perf.segment_type == "grade")]
    y, _ = _by_hand(scenario["scores_v2"], small_feeds)
    by_grade = pd.DataFrame({"grade": scenario["scores_v2"]["grade"], "y": y}).groupby("grade")["y"]
    assert dict(zip(grades["segment"], zip(grades["n_firms"], grades["n_defaults"]))) == {
        g: (int(n), int(k)) for (g, n), k in zip(by_grade.size().items(), by_grade.sum())}
    for v in (v1, v2):
        for seg in ("industry", "region", "grade"):
            part = perf[(perf.model_version == v) & (perf.segment_type == seg)]
            assert part["n_firms"].sum() == len(y) and part["n_defaults"].sum() == y.sum()
    # v1 rescored from its SavedModel in the first backtest, published by the pipeline in the
    # second: the same figures.
    assert first[v1]["scores"] == "rescored"
    for key in ("n_firms", "n_defaults", "auc", "ks", "brier", "predicted_default_rate"):
        assert first[v1][key] == pytest.approx(second[v1][key], abs=1e-9), key
    # The rerun replaced D's rows: v2 is neither champion nor previous champion any more, so D
    # now holds v1's rows only, once each.
    assert list(second) == [v1] and scenario["backtest_2"]["not_scored"] == {}
    p1, p2 = scenario["performance_1"], scenario["performance_2"]
    keys = ["model_version", "segment_type", "segment"]
    assert len(p2) == len(p2.drop_duplicates(keys)) == (p1.model_version == v1).sum()
    assert set(p2["model_version"]) == {v1}
    roc = wh.query("SELECT model_version, MIN(false_positive_rate) AS lo, "
                   "MAX(true_positive_rate) AS hi FROM backtest_roc WHERE as_of_date = ? "
                   "GROUP BY 1", [D]).to_pylist()
    assert roc == [{"model_version": v1, "lo": 0.0, "hi": 1.0}]


def test_max_auc_drop_flag():
    from apache_beam.options.pipeline_options import PipelineOptions
    from beam_jobs.options import ScoreConfig
    base = ["--feeds=f", "--as_of=2025-10-31", "--registry=r", "--warehouse=w"]
    assert ScoreConfig.from_options(PipelineOptions(base)).max_auc_drop == 0.05
    assert ScoreConfig.from_options(PipelineOptions(base + ["--max_auc_drop=0.1"])).max_auc_drop \
        == 0.1
    with pytest.raises(ValueError, match=r"--max_auc_drop must be in \[0, 1\], got -0.1"):
        ScoreConfig.from_options(PipelineOptions(base + ["--max_auc_drop=-0.1"]))


def test_a_warehouse_without_backtests_rolls_nothing_back(reg, tmp_path):
    import duckdb
    lifecycle.promote(reg, "v1")
    lifecycle.promote(reg, "v2")
    old = tmp_path / "old.duckdb"                   # a warehouse from before the backtest tables
    duckdb.connect(str(old)).close()
    assert lifecycle.automatic_rollback(reg, str(old), 0.05) is None
    assert lifecycle.latest_backtest(str(old), "v2") is None
