"""An unattended night, one fault at a time: each attempt ends with its documented exit
code and a one-line message naming the feed, file or gate and the numbers; the published rows of
every risk table stay byte-identical; the attempt gets its own `runs` row (the published attempt's
row untouched) and pushes its metrics to a real Pushgateway.

One published baseline warehouse per module (the session's book and model, as of END_DATE), copied
per test; real Beam DirectRunner runs, real SavedModels, real DuckDB.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from beam_jobs import gates, preflight, publish, score_portfolio
from smescore import tables
from smescore.errors import SmescoreError
from smescore.monitoring import metrics
from tests import monitoring_services as services
from tests.conftest import END_DATE

AS_OF = END_DATE
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _argv(feeds, registry, warehouse, *extra) -> list[str]:
    """The attempt's flags; an --as_of or --lock_timeout in `extra` replaces the default (a flag
    given twice is refused)."""
    given = {e.partition("=")[0] for e in extra}
    defaults = [f"--as_of={AS_OF}", "--lock_timeout=0"]
    return [f"--feeds={feeds}", f"--registry={registry}", f"--warehouse={warehouse}",
            "--n_shards=4", *[d for d in defaults if d.partition("=")[0] not in given], *extra]


def attempt(feeds, registry, warehouse, *extra) -> tuple[int, str, dict | None]:
    """(exit code, message, result) of one attempt, as main() reports it. With
    SMESCORE_FAULT_LOG=FILE each attempt's test, code and message are appended to FILE (JSON
    lines: the table of faults in the issue's closing note)."""
    try:
        result = score_portfolio.run(_argv(feeds, registry, warehouse, *extra),
                                     save_main_session=False, progress=lambda m: None)
        code, message = 0, ""
    except SmescoreError as err:
        result, code, message = None, err.exit_code, str(err)
    if os.environ.get("SMESCORE_FAULT_LOG"):
        with open(os.environ["SMESCORE_FAULT_LOG"], "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"test": os.environ.get("PYTEST_CURRENT_TEST", ""),
                                 "exit": code, "message": message}) + "\n")
    return code, message, result


def published(warehouse) -> dict[str, str]:
    """Every risk table but `runs`, as a digest of its rows in a fixed order (a deterministic
    dump): equal digests, byte-identical rows."""
    out = {}
    with duckdb.connect(str(warehouse), read_only=True) as con:
        for name, t in tables.TABLES.items():
            if name == "runs":
                continue
            cols = ", ".join(tables.quote(c) for c in t.names)
            rows = con.execute(f"SELECT {cols} FROM {tables.quote(name)} ORDER BY ALL").fetchall()
            out[name] = hashlib.sha256(repr(rows).encode()).hexdigest()
    return out


def runs(warehouse) -> list[dict]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute("SELECT * FROM runs ORDER BY started_at, attempt_id").fetch_arrow_table() \
            .to_pylist()


def serving(warehouse, as_of=AS_OF) -> list[str]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return [r for r, in con.execute("SELECT attempt_id FROM runs WHERE serving AND "
                                        "as_of_date = ?", [as_of]).fetchall()]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    with services.pushgateway(str(tmp_path_factory.mktemp("pgw") / "pushgateway.log")) as address:
        yield address


@pytest.fixture(scope="module")
def baseline(small_feeds, trained, tmp_path_factory):
    """One published night: (warehouse, its published digests, its runs rows)."""
    registry, _, _ = trained
    warehouse = tmp_path_factory.mktemp("baseline") / "risk.duckdb"
    code, message, result = attempt(small_feeds, registry, warehouse)
    assert code == 0, message
    return warehouse, published(warehouse), runs(warehouse), result


class Night:
    """A copy of the baseline warehouse for one test, and what to compare after the attempt."""

    def __init__(self, baseline, trained, small_feeds, gateway, tmp_path):
        self.root = tmp_path
        self.warehouse = tmp_path / "wh" / "risk.duckdb"
        self.warehouse.parent.mkdir()
        shutil.copy(baseline[0], self.warehouse)
        self.before, self.runs_before, self.result = baseline[1], baseline[2], baseline[3]
        self.baseline_warehouse = baseline[0]
        self.registry, self.version = trained[0], trained[1]
        self.feeds, self.gateway = small_feeds, gateway

    def copy_feeds(self):
        source, self.feeds = self.feeds, self.root / "feeds"
        shutil.copytree(source, self.feeds)
        return self.feeds

    def attempt(self, *extra, feeds=None, registry=None, warehouse=None):
        return attempt(feeds or self.feeds, registry or self.registry,
                       warehouse or self.warehouse, f"--pushgateway={self.gateway}", *extra)

    def assert_untouched(self):
        """Published rows byte-identical; the published attempt's row unchanged and serving."""
        assert published(self.warehouse) == self.before
        after = {r["attempt_id"]: r for r in runs(self.warehouse)}
        for r in self.runs_before:
            assert after[r["attempt_id"]] == r
        assert serving(self.warehouse) == [self.runs_before[0]["attempt_id"]]

    def new_attempts(self) -> list[dict]:
        known = {r["attempt_id"] for r in self.runs_before}
        return [r for r in runs(self.warehouse) if r["attempt_id"] not in known]

    def scraped(self):
        return services.scrape(self.gateway, metrics.JOB, metrics.instance_of(str(self.warehouse)))


@pytest.fixture
def night(baseline, trained, small_feeds, gateway, tmp_path):
    return Night(baseline, trained, small_feeds, gateway, tmp_path)


def one_line(message: str) -> bool:
    return bool(message) and "\n" not in message


def gate_of(row: dict, gate: str, subject: str) -> dict:
    return next(g for g in row["gates"] if (g["gate"], g["subject"]) == (gate, subject))


def assert_failed_attempt(night, code, gate=None, subject=None):
    """One new failed, not serving attempt row; the metrics say failed with this exit code."""
    new = night.new_attempts()
    assert [(r["status"], r["serving"]) for r in new] == [("failed", False)]
    m = night.scraped()
    version = new[0]["model_version"]
    assert m["smescore_run_success"][(("model_version", version),)] == 0
    assert m["smescore_run_exit_code"][(("model_version", version),)] == code
    if gate:
        assert gate_of(new[0], gate, subject)["status"] == "breached"
        key = (("gate", gate), ("model_version", version), ("subject", subject))
        assert m["smescore_gate_breached"][key] == 1
    return new[0]


def rewrite(folder, change):
    """Apply change(table) -> table to every Parquet file of a feed folder."""
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        pq.write_table(change(pq.read_table(path)), path)


# ----------------------------------------------------------------------------- the baseline

def test_the_baseline_night_passes_every_gate_and_is_the_one_serving(baseline):
    warehouse, _, rows, result = baseline
    assert [(r["attempt_id"], r["status"], r["serving"]) for r in rows] == [
        (f"{result['run_id']}-1", "succeeded", True)]
    statuses = {(g["gate"], g["subject"]): g["status"] for g in rows[0]["gates"]}
    assert set(statuses.values()) == {"passed"}
    assert {s for g, s in statuses if g == "feed_freshness"} == {
        "tax_filings", "invoices", "utility_bills", "registry_events", "loans"}
    assert ("as_of_coverage", "all") in statuses and ("score_psi", "score") in statuses
    assert {s for g, s in statuses if g == "rejected_share"} == {
        "enterprises", "tax_filings", "invoices", "utility_bills", "registry_events", "loans",
        "scoring"}
    # no previous published night: no row-count band yet
    assert not [g for g, _ in statuses if g == "row_count_band"]


# ----------------------------------------------------------------------------- before the pipeline

def test_a_missing_feed_fails_before_the_pipeline_with_its_own_attempt_rows(night, monkeypatch):
    feeds = night.copy_feeds()
    shutil.rmtree(feeds / "loans")
    # a killed run's staging folder (its process is gone) is removed by the next attempt
    monkeypatch.setattr(tempfile, "tempdir", str(night.root))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = night.root / f"{preflight.STAGING_PREFIX}{dead.pid}-abc123"
    (stale / "scores.parquet").mkdir(parents=True)
    live = night.root / f"{preflight.STAGING_PREFIX}{os.getpid()}-live"
    live.mkdir()
    t0 = time.monotonic()
    code, message, _ = night.attempt()
    assert time.monotonic() - t0 < 60            # no pipeline ran
    assert code == 3 and one_line(message) and "loans" in message
    assert not stale.exists() and live.exists()
    code2, _, _ = night.attempt()
    assert code2 == 3
    night.assert_untouched()
    new = night.new_attempts()
    run_id = publish.unstarted_run_id(score_portfolio.parse(_argv(feeds, 1, 1), False)[1])
    assert [r["attempt_id"] for r in new] == [f"{run_id}-1", f"{run_id}-2"]
    assert all(r["status"] == "failed" and "loans" in r["message"] and r["gates"] == []
               for r in new)
    m = night.scraped()
    assert m["smescore_run_exit_code"][(("model_version", "unknown"),)] == 3


def test_an_invalid_model_card_is_bad_input_naming_the_registry(night, tmp_path):
    registry = tmp_path / "registry"
    shutil.copytree(night.registry, registry)
    (registry / "versions" / night.version / "model_card.json").write_text('{"version": "v1", ')
    code, message, _ = night.attempt(registry=registry)
    assert code == 3 and one_line(message) and str(registry) in message
    night.assert_untouched()
    assert_failed_attempt(night, 3)


def test_a_model_version_not_in_the_registry_is_bad_input(night):
    code, message, _ = night.attempt("--model_version=2099.01.01-missing")
    assert code == 3 and one_line(message) and "2099.01.01-missing" in message
    night.assert_untouched()
    row = assert_failed_attempt(night, 3)
    assert row["model_version"] == "2099.01.01-missing"


def test_a_model_of_another_feature_catalogue_is_refused_before_the_pipeline(night, tmp_path):
    registry = tmp_path / "registry"
    shutil.copytree(night.registry, registry)
    card_path = registry / "versions" / night.version / "model_card.json"
    card = json.loads(card_path.read_text())
    card["features"] = card["features"][:-2]
    card_path.write_text(json.dumps(card))
    code, message, _ = night.attempt(registry=registry)
    assert code == 3 and one_line(message) and "another feature catalogue" in message
    night.assert_untouched()
    assert_failed_attempt(night, 3)


def test_an_unknown_gate_in_the_gates_config_is_refused_before_the_pipeline(night, tmp_path):
    config = tmp_path / "gates.json"
    config.write_text(json.dumps({"feed_freshnes": {}}))
    t0 = time.monotonic()
    code, message, _ = night.attempt(f"--gates_config={config}")
    assert time.monotonic() - t0 < 60
    assert code == 3 and one_line(message)
    assert str(config) in message and "unknown gates ['feed_freshnes']" in message
    night.assert_untouched()
    assert_failed_attempt(night, 3)


def test_a_mistyped_warehouse_folder_is_refused_and_not_created(night, tmp_path):
    warehouse = tmp_path / "wherehouse" / "risk.duckdb"
    code, message, _ = night.attempt(warehouse=warehouse)
    assert code == 3 and one_line(message)
    assert f"folder {warehouse.parent} does not exist" in message and "--create_warehouse" in message
    assert not warehouse.parent.exists()
    night.assert_untouched()


def test_create_warehouse_starts_one_and_records_the_attempt_there(night, tmp_path):
    feeds = night.copy_feeds()
    shutil.rmtree(feeds / "invoices")
    warehouse = tmp_path / "new" / "risk.duckdb"
    code, message, _ = night.attempt("--create_warehouse", warehouse=warehouse)
    assert code == 3 and "invoices" in message            # the feed, now: the folder was made
    assert [(r["status"], r["serving"]) for r in runs(warehouse)] == [("failed", False)]


def test_a_read_only_warehouse_location_is_unavailable_before_any_work(night):
    warehouse = "/sys/risk.duckdb"                    # exists, and not writable even by root
    t0 = time.monotonic()
    code, message, _ = night.attempt(warehouse=warehouse)
    assert time.monotonic() - t0 < 30
    assert code == 5 and one_line(message)
    assert "warehouse /sys/risk.duckdb is not writable" in message
    night.assert_untouched()


def test_a_warehouse_locked_by_another_run_is_waited_for_then_unavailable(night):
    holder = preflight.WarehouseLock(str(night.warehouse), 0)     # another smescore run
    try:
        t0 = time.monotonic()
        code, message, _ = night.attempt("--lock_timeout=1.5")
        waited = time.monotonic() - t0
    finally:
        holder.release()
    assert code == 5 and one_line(message)
    assert f"{night.warehouse}.lock" in message and f"pid {os.getpid()}" in message
    assert 1.5 <= waited < 60
    night.assert_untouched()
    row = assert_failed_attempt(night, 5)
    assert "locked by another run" in row["message"]


def test_a_warehouse_file_held_by_another_process_is_waited_for_then_unavailable(night):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
         "print('held', flush=True); time.sleep(120)", str(night.warehouse)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        code, message, _ = night.attempt("--lock_timeout=1")
        waited = time.monotonic() - t0
    finally:
        holder.kill()
        holder.wait()
    assert code == 5 and one_line(message)
    assert str(night.warehouse) in message and f"PID {holder.pid}" in message
    assert waited >= 1
    night.assert_untouched()
    # the file was held: the attempt could not be recorded there, the metrics still say it
    assert night.new_attempts() == []
    m = night.scraped()
    assert m["smescore_run_exit_code"][(("model_version", "unknown"),)] == 5


def test_the_cli_prints_one_line_and_exits_with_the_code(night, tmp_path):
    """`smescore score` as the scheduler runs it: exit 3, one `smescore:` line on stderr."""
    feeds = night.copy_feeds()
    shutil.rmtree(feeds / "utility_bills")
    proc = subprocess.run(
        [sys.executable, "-m", "smescore.cli", "score", f"--feeds={feeds}", f"--as-of={AS_OF}",
         f"--registry={night.registry}", f"--warehouse={night.warehouse}", "--n-shards=4"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3
    ours = [line for line in proc.stderr.splitlines() if line.startswith("smescore:")]
    assert len(ours) == 1 and "utility_bills" in ours[0] and "Traceback" not in proc.stderr
    night.assert_untouched()


# ----------------------------------------------------------------------------- the gates

def test_an_empty_feed_breaches_freshness_and_the_row_band(night):
    feeds = night.copy_feeds()
    rewrite(feeds / "utility_bills", lambda t: t.slice(0, 0))
    code, message, _ = night.attempt()
    assert code == 4 and one_line(message)
    assert message.startswith("gate feed_freshness breached for utility_bills: no utility_bills "
                              "records known on or before 2026-10-31 (0 rows read)")
    assert "row_count_band[utility_bills]" in message and "--override_gate" in message
    night.assert_untouched()
    row = assert_failed_attempt(night, 4, "feed_freshness", "utility_bills")
    band = gate_of(row, "row_count_band", "utility_bills")
    assert (band["status"], band["value"], band["threshold"]) == ("breached", 0.0, 0.8)


def test_invoices_missing_two_months_breach_their_freshness(night):
    feeds = night.copy_feeds()
    cut = pa.scalar(dt.date(2026, 9, 1), pa.date32())
    rewrite(feeds / "invoices", lambda t: t.filter(pc.less(t["invoice_date"], cut)))
    code, message, _ = night.attempt()
    assert code == 4 and one_line(message)
    assert message.startswith("gate feed_freshness breached for invoices: latest invoices record "
                              "2026-08-31 is 61 days before the as-of date 2026-10-31 (limit 7)")
    night.assert_untouched()
    row = assert_failed_attempt(night, 4, "feed_freshness", "invoices")
    assert gate_of(row, "feed_freshness", "invoices")["value"] == 61
    assert gate_of(row, "feed_freshness", "tax_filings")["status"] == "passed"


def test_an_as_of_date_beyond_the_feeds_is_refused_and_latest_scores_keeps_serving(night):
    code, message, _ = night.attempt("--as_of=2027-06-30")
    assert code == 4 and one_line(message)
    assert message.startswith("gate as_of_coverage breached for all: as-of date 2027-06-30 is 242 "
                              "days after the latest record of any feed (2026-10-31; limit 31)")
    assert published(night.warehouse) == night.before
    row = assert_failed_attempt(night, 4, "as_of_coverage", "all")
    assert row["as_of_date"] == dt.date(2027, 6, 30)
    with duckdb.connect(str(night.warehouse), read_only=True) as con:
        assert con.execute("SELECT DISTINCT as_of_date FROM latest_scores").fetchall() == [(AS_OF,)]


def test_half_the_tax_filings_invalid_breach_their_own_rejected_share(night):
    """Pooled over all feeds this is ~4% (under 5%); per feed it is 52%."""
    feeds = night.copy_feeds()

    def spoil(t):
        bad = np.arange(t.num_rows) % 25 < 13                     # 52% of the rows
        sales = np.where(bad, -1.0, t["taxable_sales"].to_numpy(zero_copy_only=False))
        return t.set_column(t.schema.get_field_index("taxable_sales"), "taxable_sales",
                            pa.array(sales))
    rewrite(feeds / "tax_filings", spoil)
    code, message, _ = night.attempt()
    assert code == 4 and one_line(message)
    assert message.startswith("gate rejected_share breached for tax_filings: ")
    assert "15,063 of 28,959 tax_filings records rejected (52.01%, limit 5.00%)" in message
    night.assert_untouched()
    row = assert_failed_attempt(night, 4, "rejected_share", "tax_filings")
    pooled = row["rows_rejected"] / sum(r["rows"] for r in row["rows_in"])
    assert pooled < 0.05
    assert gate_of(row, "rejected_share", "invoices")["status"] == "passed"


def test_half_the_loans_missing_breach_the_row_band_of_the_published_night(night):
    feeds = night.copy_feeds()
    rewrite(feeds / "loans", lambda t: t.filter(pa.array(np.arange(t.num_rows) % 2 == 0)))
    code, message, _ = night.attempt()
    assert code == 4 and one_line(message)
    assert message.startswith("gate row_count_band breached for loans: ")
    assert "vs 35,773 in the published run of 2026-10-31 (ratio 0.50, band 0.8-1.25)" in message
    night.assert_untouched()
    assert_failed_attempt(night, 4, "row_count_band", "loans")


# The model's drift baseline is the book on its training date (END_DATE): a month earlier the
# score's PSI is small but not 0, and an alert threshold under it makes the gate fire.
EARLIER = dt.date(2026, 9, 30)


def _sensitive_drift(tmp_path):
    config = tmp_path / "drift.json"
    config.write_text(json.dumps({"psi": {"warn": 0.0, "alert": 1e-6},
                                  "missing_rate_change": {"warn": 0.05, "alert": 0.10},
                                  "attribution_drift": {"warn": 0.25, "alert": 0.50},
                                  "out_of_range": {"warn": 0.01, "alert": 0.05}}))
    return config


def test_score_psi_at_alert_blocks_publication(night, tmp_path):
    code, message, _ = night.attempt(f"--drift_config={_sensitive_drift(tmp_path)}",
                                     f"--as_of={EARLIER}")
    assert code == 4 and one_line(message)
    assert message.startswith("gate score_psi breached for score: score PSI ")
    assert "(alert at 1e-06)" in message
    night.assert_untouched()
    row = assert_failed_attempt(night, 4, "score_psi", "score")
    assert gate_of(row, "score_psi", "score")["value"] > 1e-6


def test_an_overridden_gate_publishes_and_records_the_override_and_its_reason(night, tmp_path):
    reason = "drift reviewed by the model risk desk, ticket MR-1234"
    code, message, result = night.attempt(f"--drift_config={_sensitive_drift(tmp_path)}",
                                          f"--as_of={EARLIER}", "--override_gate=score_psi",
                                          f"--override_reason={reason}")
    assert code == 0, message
    new = night.new_attempts()
    assert [(r["status"], r["serving"]) for r in new] == [("succeeded", True)]
    g = gate_of(new[0], "score_psi", "score")
    assert g["status"] == "overridden" and g["note"].endswith(f"overridden: {reason}")
    assert f"gates overridden: score_psi ({reason})" in new[0]["message"]
    # one serving attempt per date: the new one for its date, the baseline's still for its own
    assert serving(night.warehouse, EARLIER) == [new[0]["attempt_id"]]
    assert serving(night.warehouse) == [night.runs_before[0]["attempt_id"]]
    old = {r["attempt_id"]: r for r in runs(night.warehouse)}[night.runs_before[0]["attempt_id"]]
    assert old == night.runs_before[0]
    key = (("gate", "score_psi"), ("model_version", night.version), ("subject", "score"))
    m = night.scraped()
    assert m["smescore_gate_overridden"][key] == 1 and m["smescore_gate_breached"][key] == 1
    assert m["smescore_run_exit_code"][(("model_version", night.version),)] == 0


def test_an_implausible_invoice_is_rejected_not_scored(night):
    """One invoice of 1e15 CNY: a rejected record with the bound named; the firm's score is what
    it was without it, and the rerun (new inputs, new run id) is the one serving."""
    feeds = night.copy_feeds()
    path = sorted((feeds / "invoices").iterdir())[0]
    t = pq.read_table(path)
    row = t.slice(0, 1).to_pylist()[0]
    firm = row["enterprise_id"]
    pq.write_table(pa.Table.from_pylist([{**row, "invoice_id": "HUGE-1", "amount": 1e15,
                                          "direction": "sales", "status": "normal",
                                          "invoice_date": dt.date(2026, 10, 20)}], t.schema),
                   feeds / "invoices" / "huge.parquet")
    code, message, result = night.attempt()
    assert code == 0, message
    with duckdb.connect(str(night.warehouse), read_only=True) as con:
        reasons = con.execute("SELECT reason FROM rejected_records WHERE record_json LIKE "
                              "'%HUGE-1%'").fetchall()
        grades = con.execute("SELECT run_id, score, grade FROM scores WHERE enterprise_id = ?",
                             [firm]).fetchall()
    assert reasons == [("implausible amount 1e+15 (beyond 1e+10)",)]
    assert result["run_id"] != night.result["run_id"]
    new = night.new_attempts()
    assert serving(night.warehouse) == [new[0]["attempt_id"]] == [f"{result['run_id']}-1"]
    with duckdb.connect(str(night.baseline_warehouse), read_only=True) as con:
        before = con.execute("SELECT score, grade FROM scores WHERE enterprise_id = ?",
                             [firm]).fetchall()
    assert len(grades) == 1 and grades[0][0] == result["run_id"]
    assert [grades[0][1:]] == before


def test_a_failed_rerun_of_the_published_run_gets_its_own_attempt(night, tmp_path):
    """The same inputs, version and scoring config as the published run, so the same run id
    (the gates are not part of it); a stricter gate fails it: attempt 2 is recorded failed and
    attempt 1's row is untouched and still serves."""
    config = tmp_path / "gates.json"
    config.write_text(json.dumps({"feed_freshness": {"max_lag_days": {"utility_bills": 10}}}))
    code, message, _ = night.attempt(f"--gates_config={config}")
    assert code == 4 and one_line(message)
    assert message.startswith("gate feed_freshness breached for utility_bills: latest "
                              "utility_bills record 2026-10-06 is 25 days before the as-of date "
                              "2026-10-31 (limit 10)")
    night.assert_untouched()
    row = assert_failed_attempt(night, 4, "feed_freshness", "utility_bills")
    assert row["run_id"] == night.result["run_id"]
    assert row["attempt_id"] == f"{night.result['run_id']}-2"


def test_a_champion_without_its_variables_is_refused_before_the_pipeline(night, tmp_path):
    registry = tmp_path / "registry"
    shutil.copytree(night.registry, registry)
    variables = registry / "versions" / night.version / "saved_model" / "variables"
    shutil.rmtree(variables)
    t0 = time.monotonic()
    code, message, _ = night.attempt(registry=registry)
    assert time.monotonic() - t0 < 60
    assert code == 3 and one_line(message)
    assert f"model {night.version}: the SavedModel at" in message and "variables" in message
    night.assert_untouched()
    assert_failed_attempt(night, 3)


# ----------------------------------------------------------------------------- gates, unit

def test_out_of_range_at_alert_blocks_per_feature():
    cfg = gates.GatesConfig.load()
    rows = [{"metric": "out_of_range", "feature": "sales_12m", "segment": "all", "value": 0.31,
             "threshold": 0.10, "status": "alert"},
            {"metric": "out_of_range", "feature": "kwh_3m", "segment": "all", "value": 0.02,
             "threshold": 0.10, "status": "ok"},
            {"metric": "out_of_range", "feature": "sales_12m", "segment": "C", "value": 0.9,
             "threshold": 0.10, "status": "alert"}]
    results = gates.drift_gates(cfg, rows)
    assert [(r["subject"], r["status"]) for r in results] == [("sales_12m", "breached"),
                                                              ("kwh_3m", "passed")]
    with pytest.raises(SmescoreError, match=r"^gate out_of_range breached for sales_12m: 31.00% "
                                            r"of sales_12m values outside the training range"):
        gates.enforce(results, AS_OF)
    gates.enforce(gates.apply_overrides(results, ["out_of_range"], "known"), AS_OF)


@pytest.mark.parametrize("raw, message", [
    ({"feed_freshness": {"max_lag_days": {"invoice": 7}}},
     r"feed_freshness.max_lag_days: unknown feeds \['invoice'\]"),
    ({"row_count_band": {"min_ratio": 1.5}}, r"row_count_band.min_ratio must be a number in"),
    ({"rejected_share": {"per_feed": {"loans": "5%"}}}, r"rejected_share.per_feed.loans must be"),
    ({"score_psi": {"enabled": "yes"}}, r"score_psi.enabled must be true or false"),
    ({"as_of_coverage": {"max_days": 3}}, r"'as_of_coverage': unknown keys \['max_days'\]"),
])
def test_a_bad_gates_config_names_the_key(tmp_path, raw, message):
    path = tmp_path / "gates.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(SmescoreError, match=message) as err:
        gates.GatesConfig.load(str(path))
    assert err.value.exit_code == 3 and str(path) in str(err.value)
