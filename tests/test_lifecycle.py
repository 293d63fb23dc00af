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
    run = wh.query("SELECT model_version, status, message FROM runs WHERE run_id = ?",
                   [result["run_id"]]).to_pylist()[0]
    return {"result": result, "score_versions": versions, "run": run}


def _performance(wh: Warehouse) -> pd.DataFrame:
    return wh.query("SELECT * FROM performance WHERE as_of_date = ? ORDER BY ALL", [D]).to_pandas()


@pytest.fixture(scope="module")
def scenario(trained, small_feeds, tmp_path_factory):
    """The trained version v1 (champion since training) and v2, a degraded copy claiming v1's
    test AUC. Promote v2 and score D; backtest D; score D again (the automatic rollback fires);
    backtest D again (`smescore backtest`); roll back by hand and score D with the automatic
    rollback switched off (--max_auc_drop=1)."""
    import contextlib
    import io
    import shutil
    from models import backtest
    from tests.degraded import register_degraded_copy
    source, v1, _ = trained
    tmp = tmp_path_factory.mktemp("lifecycle")
    registry, wh = str(tmp / "registry"), Warehouse(tmp / "risk.duckdb")
    shutil.copytree(source, registry)
    v2 = f"{v1}-degraded"
    register_degraded_copy(registry, v1, v2, noise=1.0, seed=0)
    out = {"v1": v1, "v2": v2, "registry": registry, "wh": wh}

    lifecycle.promote(registry, v2, why="release candidate", who="ana")
    out["promoted"] = _run_view(wh, _score(small_feeds, registry, wh.path))
    out["backtest_1"] = backtest.run_backtest(D, small_feeds, wh.path, registry, n_shards=4,
                                              progress=lambda m: None)
    out["performance_1"] = _performance(wh)
    out["auto"] = _run_view(wh, _score(small_feeds, registry, wh.path))
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert cli.main(["backtest", "--as-of", str(D), "--feeds", small_feeds, "--warehouse",
                         wh.path, "--registry", registry, "--n-shards", "4"]) == 0
    out["backtest_2"] = json.loads(stdout.getvalue())
    out["performance_2"] = _performance(wh)
    lifecycle.rollback(registry, why="drill", who="bo", warehouse=wh.path)
    out["rolled_back"] = _run_view(wh, _score(small_feeds, registry, wh.path, "--max_auc_drop=1"))
    return out


def test_promote_and_rollback_change_what_the_next_run_uses(scenario):
    v1, v2 = scenario["v1"], scenario["v2"]
    assert scenario["promoted"]["score_versions"] == [v2]
    assert scenario["promoted"]["run"] == {"model_version": v2, "status": "succeeded",
                                           "message": ""}
    assert scenario["auto"]["score_versions"] == [v1]
    assert scenario["rolled_back"]["score_versions"] == [v2]
    log = lifecycle.read_audit(scenario["registry"])
    assert [(e["action"], e["from_version"], e["to_version"], e["who"]) for e in log] == [
        ("promote", None, v1, log[0]["who"]),                   # `smescore train`, first model
        ("promote", v1, v2, "ana"),
        ("automatic_rollback", v2, v1, log[2]["who"]),
        ("rollback", v1, v2, "bo")]
    assert log[0]["why"] == "the first model in the registry"
    assert log[1]["metrics"][v2]["card_test_auc"] == log[1]["metrics"][v1]["card_test_auc"]
    # given the warehouse, the manual rollback records both versions' latest backtests
    perf = scenario["performance_2"].set_index(["model_version", "segment_type", "segment"])
    for v in (v1, v2):
        assert log[3]["metrics"][v]["backtest"]["auc"] == pytest.approx(perf.loc[(v, "all", "all"),
                                                                                 "auc"])


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
    assert message.startswith(f"automatic rollback from {v2} to {v1}: the backtest of 2025-10-31 "
                              f"({versions[v1]['n_firms']} firms, {versions[v1]['n_defaults']} "
                              f"defaults) gives {v2} an AUC of {versions[v2]['auc']:.4f}")
    entry = [e for e in lifecycle.read_audit(scenario["registry"])
             if e["action"] == "automatic_rollback"]
    assert len(entry) == 1 and entry[0]["why"] == message
    evidence = entry[0]["metrics"]["evidence"]
    assert evidence["champion_backtest"]["auc"] == pytest.approx(versions[v2]["auc"], abs=1e-12)
    assert evidence["previous_backtest"]["auc"] == pytest.approx(versions[v1]["auc"], abs=1e-12)
    assert evidence["champion_card_test_auc"] == card_auc and evidence["max_auc_drop"] == 0.05


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


def test_backtest_on_generated_data_matches_an_independent_computation(scenario, small_feeds):
    from sklearn.metrics import roc_auc_score
    v1, v2, wh = scenario["v1"], scenario["v2"], scenario["wh"]
    # The last run left v2's official scores of D, the ones the first backtest read: redo it by hand.
    assert scenario["rolled_back"]["score_versions"] == [v2]
    scores = wh.query("SELECT enterprise_id, pd, grade FROM scores WHERE as_of_date = ? AND "
                      "score_source = 'model'", [D]).to_pandas()
    scores = scores.merge(_independent_outcomes(small_feeds), left_on="enterprise_id",
                          right_index=True, how="left").fillna({"in_default": False,
                                                                "default": False})
    assert not scores["in_default"].any()                   # the job routed those to grade D
    y = scores["default"].astype(int).to_numpy()
    first, second = scenario["backtest_1"]["versions"], scenario["backtest_2"]["versions"]
    assert scenario["backtest_1"]["cohort_firms"] == len(scores) > 900
    assert scenario["backtest_1"]["cohort_defaults"] == y.sum() > 20
    assert first[v2]["scores"] == "published"
    assert first[v2]["auc"] == pytest.approx(roc_auc_score(y, scores["pd"]), abs=1e-12)
    assert first[v2]["brier"] == pytest.approx(((scores["pd"] - y) ** 2).mean(), abs=1e-12)
    assert first[v2]["predicted_default_rate"] == pytest.approx(scores["pd"].mean(), abs=1e-12)
    perf = scenario["performance_1"]
    grades = perf[(perf.model_version == v2) & (perf.segment_type == "grade")]
    by_grade = scores.groupby("grade")["default"].agg(["size", "sum"])
    assert dict(zip(grades["segment"], zip(grades["n_firms"], grades["n_defaults"]))) == {
        g: (int(r["size"]), int(r["sum"])) for g, r in by_grade.iterrows()}
    for v in (v1, v2):
        for seg in ("industry", "region", "grade"):
            part = perf[(perf.model_version == v) & (perf.segment_type == seg)]
            assert part["n_firms"].sum() == len(scores) and part["n_defaults"].sum() == y.sum()
    # Scored by the pipeline or rescored from the SavedModel: the same figures, both ways round.
    for v in (v1, v2):
        assert first[v]["scores"] != second[v]["scores"]
        for key in ("auc", "ks", "brier", "predicted_default_rate"):
            assert first[v][key] == pytest.approx(second[v][key], abs=1e-9), (v, key)
    # The rerun replaced D's rows: as many rows, no duplicates.
    keys = ["model_version", "segment_type", "segment"]
    p2 = scenario["performance_2"]
    assert len(p2) == len(perf) == len(p2.drop_duplicates(keys))
    roc = wh.query("SELECT model_version, COUNT(*) AS n, MIN(false_positive_rate) AS lo, "
                   "MAX(true_positive_rate) AS hi FROM backtest_roc WHERE as_of_date = ? "
                   "GROUP BY 1 ORDER BY 1", [D]).to_pylist()
    assert [(r["model_version"], r["lo"], r["hi"]) for r in roc] == [(v1, 0.0, 1.0), (v2, 0.0, 1.0)]


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
