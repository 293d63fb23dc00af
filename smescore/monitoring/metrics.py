"""The run's metrics, pushed to a Prometheus Pushgateway after every nightly run.

Every metric is a gauge labelled by `model_version`; `METRICS` below is the whole list, and the alert
rules (infra/prometheus/) and the dashboard (infra/grafana/) use exactly these names (a test checks).

Grouping key: `{job="smescore", instance=<the warehouse the run publishes into>}`, one group per
deployment and NOT per as-of date. The Pushgateway never forgets a group: per-date groups would pile
up, and a failed night's status would sit in its group, firing, forever. So:
- a successful run replaces the whole group (HTTP PUT): the group describes the latest published
  run, and series of the day before (a grade with no firms left, a retired feature) disappear;
- a failed run replaces only the run-level metrics it pushes (HTTP POST: status, duration, finish
  time). The last success time and the portfolio metrics of the last published run stay, which is
  what the "no successful run for 26 h" alert and the dashboard need.
The as-of date is a value (`smescore_run_as_of_timestamp_seconds`), not a label, for the same reason.

A push that fails is logged loudly and reported as False; it never fails the run.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Iterable, Mapping, Sequence

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import push_to_gateway, pushadd_to_gateway

from smescore import tables
from smescore.warehouse import Warehouse, reader

JOB = "smescore"
PUSH_TIMEOUT_S = 10
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Metric:
    name: str
    help: str
    labels: tuple[str, ...] = ()      # besides model_version

    @property
    def label_names(self) -> tuple[str, ...]:
        return ("model_version", *self.labels)


# Pushed after every run, failed or not (a failed run pushes only these, with POST).
RUN_METRICS = (
    Metric("smescore_run_success", "1 if the latest run published its risk tables, 0 if it failed."),
    Metric("smescore_run_duration_seconds",
           "Wall time of the latest run, start to publish or failure."),
    Metric("smescore_run_finished_timestamp_seconds", "When the latest run ended (Unix time)."),
    Metric("smescore_run_exit_code", "Exit code of the latest attempt: 0 published, 1 internal, "
           "2 usage, 3 bad input, 4 gate breached, 5 service unavailable."),
    Metric("smescore_gate_breached", "1 if the latest attempt found the gate breached for this "
           "feed or feature (overridden or not), else 0.", ("gate", "subject")),
    Metric("smescore_gate_overridden", "1 if the operator overrode the breached gate for the "
           "latest attempt, else 0.", ("gate", "subject")),
)
# Pushed after a successful run only: they describe the data it published.
PUBLISHED_METRICS = (
    Metric("smescore_last_success_timestamp_seconds",
           "When the last successful run published (Unix time)."),
    Metric("smescore_run_as_of_timestamp_seconds",
           "As-of date of the last successful run (Unix time of its midnight UTC)."),
    Metric("smescore_feed_rows_in", "Records read from the feed.", ("feed",)),
    Metric("smescore_feed_rows_rejected", "Records rejected (rejected_records); feed 'scoring' "
           "counts firms the model could not score.", ("feed",)),
    Metric("smescore_feed_rows_out", "Records that passed validation into the features "
           "(rows in minus rows rejected).", ("feed",)),
    Metric("smescore_table_rows_written", "Rows the run published into the risk table.", ("table",)),
    Metric("smescore_firms_by_grade", "Firms per grade, '1' best .. '10', 'D' in default.",
           ("grade",)),
    Metric("smescore_firms_by_score_source", "Firms per score source: model, cold-start rules, "
           "in default.", ("score_source",)),
    Metric("smescore_feature_psi", "PSI of the model feature against the book as of the "
           "training date.", ("feature",)),
    Metric("smescore_score_psi", "PSI of the score against the book as of the training date."),
    Metric("smescore_feature_psi_training_sample", "PSI of the model feature against the "
           "training sample.", ("feature",)),
    Metric("smescore_score_psi_training_sample", "PSI of the score against the training sample."),
    Metric("smescore_feature_out_of_range_share", "Share of model-scored firms whose value of the "
           "numeric model input lies outside the training sample's [min, max].", ("feature",)),
    Metric("smescore_backtest_auc", "AUC of the latest outcome backtest of this model version "
           "(segment 'all')."),
    Metric("smescore_backtest_ks", "KS of the latest outcome backtest of this model version "
           "(segment 'all')."),
    Metric("smescore_backtest_as_of_timestamp_seconds", "As-of date of the cohort the latest "
           "backtest scored (Unix time of its midnight UTC)."),
    Metric("smescore_model_card_auc", "Out-of-time test AUC on the model card, for comparison with "
           "the backtests."),
    Metric("smescore_model_card_ks", "Out-of-time test KS on the model card."),
)
METRICS: dict[str, Metric] = {m.name: m for m in RUN_METRICS + PUBLISHED_METRICS}


@dataclasses.dataclass(frozen=True)
class Sample:
    metric: str
    labels: Mapping[str, str]
    value: float


def instance_of(warehouse) -> str:
    """The grouping key's instance: which risk tables the job feeds (one deployment, one group):
    the DuckDB file's absolute path, or bigquery:PROJECT.DATASET."""
    return reader(warehouse).instance


def unix_time(moment: dt.datetime | dt.date) -> float:
    """Seconds since the epoch; naive datetimes and dates are UTC (as in the risk tables)."""
    if not isinstance(moment, dt.datetime):
        moment = dt.datetime.combine(moment, dt.time())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.timestamp()


def run_samples(version: str, succeeded: bool, started_at: dt.datetime,
                finished_at: dt.datetime) -> list[Sample]:
    v = {"model_version": version}
    return [Sample("smescore_run_success", v, 1.0 if succeeded else 0.0),
            Sample("smescore_run_duration_seconds", v, (finished_at - started_at).total_seconds()),
            Sample("smescore_run_finished_timestamp_seconds", v, unix_time(finished_at))]


def attempt_samples(version: str, exit_code: int, gate_results: Sequence[Mapping]) -> list[Sample]:
    """The attempt's exit code and each gate's outcome (runs.gates)."""
    out = [Sample("smescore_run_exit_code", {"model_version": version}, float(exit_code))]
    for g in gate_results:
        labels = {"model_version": version, "gate": g["gate"], "subject": g["subject"]}
        out += [Sample("smescore_gate_breached", labels, float(g["status"] != "passed")),
                Sample("smescore_gate_overridden", labels, float(g["status"] == "overridden"))]
    return out


# The run's own rows only (run_id), so a rerun of another version never mixes in.
_REJECTED_SQL = """SELECT feed, COUNT(*) AS n FROM rejected_records
WHERE as_of_date = ? AND run_id = ? GROUP BY feed ORDER BY feed"""
_GRADES_SQL = """SELECT grade, COUNT(*) AS n FROM scores WHERE as_of_date = ? AND run_id = ?
GROUP BY grade"""
_SOURCES_SQL = """SELECT score_source, COUNT(*) AS n FROM scores WHERE as_of_date = ? AND run_id = ?
GROUP BY score_source"""
_DRIFT_SQL = """SELECT metric, feature, value FROM drift
WHERE as_of_date = ? AND run_id = ? AND model_version = ? AND segment = 'all'
  AND metric IN ('psi', 'psi_training_sample', 'out_of_range')
ORDER BY metric, feature"""
# drift metric -> (gauge of a feature, gauge of the score or None)
_DRIFT_GAUGES = {"psi": ("smescore_feature_psi", "smescore_score_psi"),
                 "psi_training_sample": ("smescore_feature_psi_training_sample",
                                         "smescore_score_psi_training_sample"),
                 "out_of_range": ("smescore_feature_out_of_range_share", None)}
_BACKTEST_SQL = """SELECT as_of_date, auc, ks FROM performance
WHERE model_version = ? AND segment_type = 'all' AND as_of_date <= ? AND auc IS NOT NULL
ORDER BY as_of_date DESC, backtested_at DESC LIMIT 1"""


def _counts(wh: Warehouse, sql: str, params: Sequence) -> dict[str, int]:
    t = wh.query(sql, list(params))
    return dict(zip(t.column(0).to_pylist(), t.column(1).to_pylist()))


# Written by backtests, not by the nightly run.
_BACKTEST_TABLES = ("performance", "backtest_roc")


def _rows_written(wh: Warehouse, as_of: dt.date) -> dict[str, int]:
    """Rows of the date in every table the run publishes (a publish replaces the whole date)."""
    out = {}
    for t in tables.TABLES.values():
        if t.replaced_by == "as_of_date" and t.name not in _BACKTEST_TABLES:
            # Table name from the contract, the date bound.
            out[t.name] = wh.query(f"SELECT COUNT(*) FROM {tables.quote(t.name)} "
                                   "WHERE as_of_date = ?", [as_of]).column(0)[0].as_py()
    return out


def published_samples(warehouse, result: Mapping, model_card: Mapping,
                      finished_at: dt.datetime) -> list[Sample]:
    """What a successful run published, read back from the risk tables (a DuckDB file or a
    reader, smescore.warehouse.reader) and its result."""
    wh, version = reader(warehouse), result["model_version"]
    as_of, run_id = dt.date.fromisoformat(str(result["as_of_date"])), result["run_id"]
    v = {"model_version": version}
    out = [Sample("smescore_last_success_timestamp_seconds", v, unix_time(finished_at)),
           Sample("smescore_run_as_of_timestamp_seconds", v, unix_time(as_of))]
    rejected = _counts(wh, _REJECTED_SQL, [as_of, run_id])
    for feed, rows in sorted(result["rows_in"].items()):
        out += [Sample("smescore_feed_rows_in", {**v, "feed": feed}, rows),
                Sample("smescore_feed_rows_out", {**v, "feed": feed}, rows - rejected.get(feed, 0))]
    for feed in sorted(set(result["rows_in"]) | set(rejected)):
        out.append(Sample("smescore_feed_rows_rejected", {**v, "feed": feed},
                          rejected.get(feed, 0)))
    for table, rows in _rows_written(wh, as_of).items():
        out.append(Sample("smescore_table_rows_written", {**v, "table": table}, rows))
    grades = _counts(wh, _GRADES_SQL, [as_of, run_id])
    out += [Sample("smescore_firms_by_grade", {**v, "grade": g}, grades.get(g, 0))
            for g in tables.GRADES]
    sources = _counts(wh, _SOURCES_SQL, [as_of, run_id])
    out += [Sample("smescore_firms_by_score_source", {**v, "score_source": s}, sources.get(s, 0))
            for s in tables.SCORE_SOURCES]
    for r in wh.query(_DRIFT_SQL, [as_of, run_id, version]).to_pylist():
        feature_gauge, score_gauge = _DRIFT_GAUGES[r["metric"]]
        if r["feature"] == tables.SCORE_FEATURE:
            out.append(Sample(score_gauge, v, r["value"]))
        else:
            out.append(Sample(feature_gauge, {**v, "feature": r["feature"]}, r["value"]))
    backtest = wh.query(_BACKTEST_SQL, [version, as_of]).to_pylist()
    if backtest:
        b = backtest[0]
        out += [Sample("smescore_backtest_auc", v, b["auc"]),
                Sample("smescore_backtest_ks", v, b["ks"]),
                Sample("smescore_backtest_as_of_timestamp_seconds", v, unix_time(b["as_of_date"]))]
    test = model_card.get("metrics", {}).get("test", {})
    out += [Sample(name, v, test[key]) for name, key in (("smescore_model_card_auc", "auc"),
                                                         ("smescore_model_card_ks", "ks"))
            if test.get(key) is not None]
    return out


def collectors_of(samples: Iterable[Sample]) -> CollectorRegistry:
    """Prometheus collectors of their own (never the process-wide default) holding just these
    samples ("registry" in this project means the model registry)."""
    collectors, gauges = CollectorRegistry(), {}
    for s in samples:
        m = METRICS[s.metric]
        if m.name not in gauges:
            gauges[m.name] = Gauge(m.name, m.help, m.label_names, registry=collectors)
        gauges[m.name].labels(**{k: s.labels[k] for k in m.label_names}).set(float(s.value))
    return collectors


def push(gateway: str, instance: str, samples: Sequence[Sample], replace: bool,
         progress=print) -> bool:
    """PUT (replace=True: the whole group) or POST (only these metrics) to the Pushgateway.

    Returns False, after logging an error, when the push fails: monitoring being down must not
    fail the nightly run, but nobody should miss that it is blind.
    """
    send = push_to_gateway if replace else pushadd_to_gateway
    try:
        send(gateway, job=JOB, registry=collectors_of(samples), grouping_key={"instance": instance},
             timeout=PUSH_TIMEOUT_S)
    except Exception as err:  # noqa: BLE001 - any push error (DNS, refused, HTTP 4xx/5xx) is logged
        message = (f"METRICS PUSH FAILED: {len(samples)} samples to Pushgateway {gateway} "
                   f"(job={JOB}, instance={instance}): {type(err).__name__}: {err}")
        log.error(message)
        progress(f"[monitor] {message}")
        return False
    progress(f"[monitor] pushed {len(samples)} samples to Pushgateway {gateway}")
    return True
