"""The risk-table contract: every published table, its columns, types, modes and layout, once.

Everything that writes or creates a risk table reads this module: the Beam job builds its Arrow
tables with `arrow_schema()`, the DuckDB warehouse creates its tables from `duckdb_ddl()` and
validates what it publishes against `TABLES`, and the BigQuery sink (later) creates its tables from
`bigquery_schema()`, `partition_by` and `cluster_by`. No TensorFlow, no database client here.

Conventions:
- `required` columns never hold NULL. A list-of-struct column is never NULL either (an empty list
  instead), which is what BigQuery's REPEATED mode means; the subfields carry their own modes.
- Timestamps are UTC without a zone attached (Arrow `timestamp[us]`, DuckDB `TIMESTAMP`); BigQuery's
  `TIMESTAMP` reads such values as UTC.
- The date-partitioned tables are replaced one `as_of_date` at a time; `runs` is keyed by `attempt_id`.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import pyarrow as pa

GRADES = tuple(str(g) for g in range(1, 11)) + ("D",)
SCORE_SOURCES = ("model", "rules", "in_default")
SEGMENT_TYPES = ("all", "industry", "region", "grade", "score_source")
RUN_STATUSES = ("succeeded", "failed")
GATE_STATUSES = ("passed", "breached", "overridden")
MODEL_ROLES = ("champion", "canary", "challenger")
DRIFT_METRICS = ("psi", "psi_training_sample", "out_of_range", "missing_rate_change",
                 "attribution_drift")
DRIFT_STATUSES = ("ok", "warn", "alert")
SCORE_FEATURE = "__score__"          # the `feature` of the score's own drift rows
COMPARISON_METRICS = ("n_firms", "rank_correlation", "psi", "mean_score_change",
                      "grade_migration")
PERFORMANCE_SEGMENT_TYPES = ("all", "industry", "region", "grade")
CALIBRATION_STATUSES = ("ok", "too_many_defaults", "too_few_defaults")


@dataclasses.dataclass(frozen=True)
class Column:
    """One column. `fields` makes it a list of structs (BigQuery REPEATED RECORD)."""
    name: str
    type: Optional[pa.DataType]
    description: str
    required: bool = False
    allowed: tuple[str, ...] = ()          # the only values a string column may hold, if fixed
    fields: tuple["Column", ...] = ()

    @property
    def is_record_list(self) -> bool:
        return bool(self.fields)

    @property
    def arrow_type(self) -> pa.DataType:
        if not self.fields:
            return self.type
        item = pa.struct([f.arrow_field for f in self.fields])
        return pa.list_(pa.field("item", item, nullable=False))

    @property
    def arrow_field(self) -> pa.Field:
        return pa.field(self.name, self.arrow_type, nullable=not (self.required or self.fields))

    @property
    def mode(self) -> str:
        if self.fields:
            return "REPEATED"
        return "REQUIRED" if self.required else "NULLABLE"


@dataclasses.dataclass(frozen=True)
class Table:
    """One risk table. `replaced_by` is the column whose value a publish replaces as a whole."""
    name: str
    description: str
    columns: tuple[Column, ...]
    partition_by: Optional[str]
    cluster_by: tuple[str, ...]
    replaced_by: str

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"table {self.name!r} has no column {name!r}; it has {list(self.names)}")


def _col(name, type_, description, required=True, allowed=()) -> Column:
    return Column(name, type_, description, required, tuple(allowed))


def _records(name, description, *fields: Column) -> Column:
    return Column(name, None, description, required=True, fields=tuple(fields))


def _as_of_date(what: str) -> Column:
    return _col("as_of_date", pa.date32(), f"The date {what} is as of: features use only records "
                "known on or before it.")


def _model_version() -> Column:
    return _col("model_version", pa.string(), "Registry version of the model that scored the run "
                "(also recorded for rules-scored and in-default firms).")


def _run_id() -> Column:
    return _col("run_id", pa.string(), "Id of the run that wrote the row, derived from the as-of "
                "date, model version, input and config fingerprints (never random).")


def _model_role(description: str) -> Column:
    return _col("model_role", pa.string(), description, allowed=MODEL_ROLES)


def _status(description: str, allowed) -> Column:
    return _col("status", pa.string(), description, allowed=allowed)


SCORES = Table(
    name="scores",
    description="One row per firm and as-of date: calibrated 12-month PD, 300..850 score, grade "
                "and up to four reasons.",
    columns=(
        _as_of_date("the score"),
        _col("enterprise_id", pa.string(), "The firm."),
        _model_version(),
        _col("score_source", pa.string(), "Who scored the firm: 'model', the cold-start 'rules' "
             "(history too short) or 'in_default' (already 90+ days past due).",
             allowed=SCORE_SOURCES),
        _model_role("'champion' for the champion's official score, 'canary' where the canary "
                    "challenger's score is the official one (a fixed hash share of firms)."),
        _col("pd", pa.float64(), "Calibrated probability of a 90+ DPD default within 12 months "
             "(1 for firms in default)."),
        _col("score", pa.int32(), "PDO score, offset - factor * ln(pd / (1 - pd)), clamped to "
             "300..850."),
        _col("grade", pa.string(), "Master-scale grade, '1' (best) .. '10', or 'D' in default.",
             allowed=GRADES),
        _col("base_points", pa.float64(), "Score points of the average firm; base_points plus "
             "the points of all features is the unclamped score. Null for firms in default.",
             required=False),
        _records(
            "reasons", "Up to four features that took the most points away, worst first.",
            _col("code", pa.string(), "Stable reason code."),
            _col("feature", pa.string(), "Business feature the reason is about."),
            _col("points", pa.float64(), "Score points the feature took away (negative)."),
            _col("text_zh", pa.string(), "The reason in Chinese, with the firm's actual value."),
            _col("text_en", pa.string(), "The reason in English, with the firm's actual value.")),
        _run_id(),
    ),
    partition_by="as_of_date",
    cluster_by=("model_version", "grade", "enterprise_id"),
    replaced_by="as_of_date",
)

ATTRIBUTIONS = Table(
    name="attributions",
    description="One row per model-scored firm and business feature: SHAP value in log-odds and "
                "the score points it is worth.",
    columns=(
        _as_of_date("the attribution"),
        _col("enterprise_id", pa.string(), "The firm."),
        _model_version(),
        _col("feature", pa.string(), "Business feature (TFT-derived inputs summed back to it)."),
        _col("value", pa.float64(), "The firm's raw feature value; null when missing or "
             "categorical.", required=False),
        _col("value_text", pa.string(), "The firm's category for a categorical feature; null "
             "when missing or numeric.", required=False),
        _col("phi", pa.float64(), "Attribution in calibrated log-odds (DeepLIFT/SHAP)."),
        _col("points", pa.float64(), "Score points, -factor * phi."),
    ),
    partition_by="as_of_date",
    cluster_by=("model_version", "feature", "enterprise_id"),
    replaced_by="as_of_date",
)

ATTRIBUTIONS_COMPACT = Table(
    name="attributions_compact",
    description="The attributions of dates the retention policy compacted "
                "(smescore/config/retention.json): per model version, segment and business "
                "feature, what the firms' rows added up to. The view attribution_summary reads "
                "these for compacted dates and the full rows for the others.",
    columns=(
        _as_of_date("the attribution"),
        _model_version(),
        _col("segment_type", pa.string(), "How the book is cut: 'all', 'industry' or 'region'.",
             allowed=("all", "industry", "region")),
        _col("segment", pa.string(), "'all', the industry section letter or the province "
             "('unknown' for a firm without segments that date)."),
        _col("feature", pa.string(), "Business feature."),
        _col("n_firms", pa.int64(), "Model-scored firms with an attribution for the feature."),
        _col("n_negative", pa.int64(), "Of them, firms whose points for the feature are below 0."),
        _col("sum_points", pa.float64(), "Sum of the firms' points for the feature."),
        _col("mean_points", pa.float64(), "Mean points (sum_points / n_firms)."),
        _col("mean_abs_points", pa.float64(), "Mean |points|: what attribution drift compares."),
        _col("mean_phi", pa.float64(), "Mean attribution in calibrated log-odds."),
    ),
    partition_by="as_of_date",
    cluster_by=("model_version", "segment_type", "feature"),
    replaced_by="as_of_date",
)

PORTFOLIO_SUMMARY = Table(
    name="portfolio_summary",
    description="Per as-of date and segment: firms, mean PD, expected defaults, score percentiles.",
    columns=(
        _as_of_date("the summary"),
        _model_version(),
        _col("segment_type", pa.string(), "How the book is cut: 'all', 'industry', 'region', "
             "'grade' or 'score_source'.", allowed=SEGMENT_TYPES),
        _col("segment", pa.string(), "The segment's value ('all' for the whole book)."),
        _col("n_firms", pa.int64(), "Firms in the segment."),
        _col("mean_pd", pa.float64(), "Mean PD of the segment."),
        _col("expected_defaults", pa.float64(), "Sum of PD: defaults expected within 12 months."),
        _col("score_p10", pa.float64(), "10th percentile of the score."),
        _col("score_p50", pa.float64(), "Median score."),
        _col("score_p90", pa.float64(), "90th percentile of the score."),
        _col("share_of_firms", pa.float64(), "n_firms over all firms scored that date."),
    ),
    partition_by="as_of_date",
    cluster_by=("model_version", "segment_type", "segment"),
    replaced_by="as_of_date",
)

FIRM_SEGMENTS = Table(
    name="firm_segments",
    description="Per as-of date: the industry and region of every firm in the book that date, as "
                "the feeds gave them, so that scores and reasons can be cut by segment.",
    columns=(
        _as_of_date("the segments"),
        _col("enterprise_id", pa.string(), "The firm."),
        _col("industry", pa.string(), "GB/T 4754 industry section letter, A..T."),
        _col("region", pa.string(), "Province of registration (pinyin)."),
        _run_id(),
    ),
    partition_by="as_of_date",
    cluster_by=("industry", "region", "enterprise_id"),
    replaced_by="as_of_date",
)

RUNS = Table(
    name="runs",
    description="One row per attempt of a scoring run: what went in, what came out, which gates "
                "it passed, and why it failed. A failed attempt never changes another's row; one "
                "succeeded attempt per date is marked serving.",
    columns=(
        _col("attempt_id", pa.string(), "Id of this attempt: the run_id and the attempt's number "
             "(<run_id>-<n>, n counting the attempts of that run_id); never random."),
        _run_id(),
        _as_of_date("the run"),
        _model_version(),
        _col("started_at", pa.timestamp("us"), "When the run started (UTC)."),
        _col("finished_at", pa.timestamp("us"), "When the run finished or failed (UTC)."),
        _col("status", pa.string(), "'succeeded' or 'failed'.", allowed=RUN_STATUSES),
        _records("rows_in", "Records read, per feed.",
                 _col("feed", pa.string(), "Feed name."),
                 _col("rows", pa.int64(), "Records read from the feed.")),
        _col("rows_rejected", pa.int64(), "Feed records rejected (see rejected_records)."),
        _col("firms_scored_model", pa.int64(), "Firms scored by the model."),
        _col("firms_scored_rules", pa.int64(), "Firms scored by the cold-start rules."),
        _col("message", pa.string(), "Why the run failed, or notes.", required=False),
        _col("config_fingerprint", pa.string(), "Hash of the scorecard, rules and run settings."),
        _col("serving", pa.bool_(), "True on the one succeeded attempt whose rows the date's "
             "partitions hold (the last published); False on every other attempt."),
        _records("gates", "The publication gates the attempt evaluated, one item per gate and "
                 "feed or feature (empty when it failed before the gates).",
                 _col("gate", pa.string(), "Gate name (smescore/config/gates.json)."),
                 _col("subject", pa.string(), "Feed or feature the gate measured ('all' for the "
                      "whole run)."),
                 _col("status", pa.string(), "passed | breached | overridden",
                      allowed=GATE_STATUSES),
                 _col("value", pa.float64(), "What was measured.", required=False),
                 _col("threshold", pa.float64(), "The limit it was held to.", required=False),
                 _col("note", pa.string(), "The numbers in words, and an override's reason.",
                      required=False)),
    ),
    partition_by=None,
    cluster_by=("as_of_date", "model_version", "run_id"),
    replaced_by="attempt_id",
)

REJECTED_RECORDS = Table(
    name="rejected_records",
    description="Feed records the run could not use, with the reason; nothing is dropped silently.",
    columns=(
        _run_id(),
        _as_of_date("the run"),
        _col("feed", pa.string(), "Feed the record came from ('scoring' for firms inference "
             "could not score)."),
        _col("record_json", pa.string(), "The record as read, as JSON."),
        _col("reason", pa.string(), "Why it was rejected."),
    ),
    partition_by="as_of_date",
    cluster_by=("feed", "run_id"),
    replaced_by="as_of_date",
)

SCORES_SHADOW = Table(
    name="scores_shadow",
    description="Model scores that are not official: every challenger's score of every "
                "model-scored firm, and the champion's score of the canary firms.",
    columns=tuple(
        c if c.name != "model_role" else _model_role(
            "'challenger' for a challenger's shadow score, 'champion' for the champion's "
            "(unofficial) score of a canary firm.")
        for c in SCORES.columns),
    partition_by="as_of_date",
    cluster_by=("model_version", "grade", "enterprise_id"),
    replaced_by="as_of_date",
)

DRIFT = Table(
    name="drift",
    description="Per run: drift of the score and of every model feature against the references "
                "stored with the model version (bins fixed at training): the book as of the "
                "training date and the training sample.",
    columns=(
        _as_of_date("the drift measurement"),
        _model_version(),
        _col("feature", pa.string(), f"Model feature, or '{SCORE_FEATURE}' for the score."),
        _col("segment", pa.string(), "'all' (the model-scored book), or 'industry=<section>' "
             "for the score's PSI (metric 'psi') within one industry big enough to measure."),
        _col("metric", pa.string(), "'psi' (population stability index on the bins of the book "
             "as of the training date), 'psi_training_sample' (the same on the bins of the "
             "training sample), 'out_of_range' (share of model-scored firms whose present value "
             "lies outside the training sample's [min, max]; numeric features), "
             "'missing_rate_change' (missing share now minus at the training date, absolute) or "
             "'attribution_drift' (relative change of mean |points| vs the training date).",
             allowed=DRIFT_METRICS),
        _col("value", pa.float64(), "The metric's value."),
        _col("warn_threshold", pa.float64(), "Value above which the status is 'warn'."),
        _col("threshold", pa.float64(), "Value above which the status is 'alert'."),
        _status("'ok', 'warn' or 'alert'.", DRIFT_STATUSES),
        _run_id(),
    ),
    partition_by="as_of_date",
    cluster_by=("model_version", "metric", "feature", "segment"),
    replaced_by="as_of_date",
)

CHALLENGER_COMPARISON = Table(
    name="challenger_comparison",
    description="Per run and challenger: how its shadow scores compare with the champion's on the "
                "same model-scored firms.",
    columns=(
        _as_of_date("the comparison"),
        _col("champion_version", pa.string(), "The champion's model version."),
        _col("challenger_version", pa.string(), "The challenger's model version."),
        _col("metric", pa.string(), "'n_firms', 'rank_correlation' (Spearman of the scores), "
             "'psi' (challenger's score distribution against the champion's), "
             "'mean_score_change' (challenger minus champion) or 'grade_migration' (firms moving "
             "from_grade -> to_grade).", allowed=COMPARISON_METRICS),
        _col("from_grade", pa.string(), "Champion's grade (grade_migration rows only).",
             required=False),
        _col("to_grade", pa.string(), "Challenger's grade (grade_migration rows only).",
             required=False),
        _col("value", pa.float64(), "The metric's value (a firm count for grade_migration)."),
        _run_id(),
    ),
    partition_by="as_of_date",
    cluster_by=("challenger_version", "metric"),
    replaced_by="as_of_date",
)

PERFORMANCE = Table(
    name="performance",
    description="Outcome backtests: how the scores published for an as-of date ranked and "
                "calibrated the defaults of the following 12 months, per model version and segment.",
    columns=(
        _as_of_date("the backtested scores"),
        _model_version(),
        _col("segment_type", pa.string(), "'all', 'industry', 'region' or 'grade'.",
             allowed=PERFORMANCE_SEGMENT_TYPES),
        _col("segment", pa.string(), "The segment's value ('all' for the whole cohort)."),
        _col("outcome_months", pa.int32(), "Outcome window after as_of_date, in months."),
        _col("n_firms", pa.int64(), "Model-scored firms of the cohort in the segment."),
        _col("n_defaults", pa.int64(), "Of them, firms 90+ days past due within the window."),
        _col("auc", pa.float64(), "Area under the ROC curve; null when the segment has no "
             "defaults or no non-defaults.", required=False),
        _col("ks", pa.float64(), "Kolmogorov-Smirnov statistic; null like auc.", required=False),
        _col("gini", pa.float64(), "2 * auc - 1; null like auc.", required=False),
        _col("brier", pa.float64(), "Mean squared error of the PD against the outcome."),
        _col("predicted_default_rate", pa.float64(), "Mean PD of the segment."),
        _col("observed_default_rate", pa.float64(), "n_defaults / n_firms."),
        _col("binomial_p_value", pa.float64(), "Two-sided binomial test of n_defaults against "
             "n_firms * predicted_default_rate."),
        _col("calibration_status", pa.string(), "'ok' unless the binomial test rejects at 5%: "
             "'too_many_defaults' or 'too_few_defaults'.", allowed=CALIBRATION_STATUSES),
        _col("backtested_at", pa.timestamp("us"), "When the backtest ran (UTC)."),
    ),
    partition_by="as_of_date",
    cluster_by=("model_version", "segment_type", "segment"),
    replaced_by="as_of_date",
)

BACKTEST_ROC = Table(
    name="backtest_roc",
    description="ROC curve points of each backtest (segment 'all'), for plots.",
    columns=(
        _as_of_date("the backtested scores"),
        _model_version(),
        _col("false_positive_rate", pa.float64(), "Share of non-defaults at or above the cut."),
        _col("true_positive_rate", pa.float64(), "Share of defaults at or above the cut."),
        _col("pd_cut", pa.float64(), "The PD cut-off of the point."),
    ),
    partition_by="as_of_date",
    cluster_by=("model_version",),
    replaced_by="as_of_date",
)

TABLES: dict[str, Table] = {t.name: t for t in
                            (SCORES, SCORES_SHADOW, ATTRIBUTIONS, ATTRIBUTIONS_COMPACT,
                             PORTFOLIO_SUMMARY, DRIFT,
                             CHALLENGER_COMPARISON, PERFORMANCE, BACKTEST_ROC, RUNS,
                             REJECTED_RECORDS, FIRM_SEGMENTS)}


def table(name: str) -> Table:
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"no risk table {name!r}; the tables are {list(TABLES)}") from None


def arrow_schema(name: str) -> pa.Schema:
    """The Arrow schema to build a table's rows with (required columns are non-nullable)."""
    return pa.schema([c.arrow_field for c in table(name).columns])


_DUCKDB_TYPES = {pa.bool_(): "BOOLEAN", pa.date32(): "DATE", pa.string(): "VARCHAR", pa.float64(): "DOUBLE",
                 pa.int32(): "INTEGER", pa.int64(): "BIGINT", pa.timestamp("us"): "TIMESTAMP"}
# Arrow -> BigQuery API column types, for the risk tables and the feed tables alike
BIGQUERY_TYPES = {pa.bool_(): "BOOLEAN", pa.date32(): "DATE", pa.string(): "STRING", pa.float64(): "FLOAT",
                   pa.int32(): "INTEGER", pa.int64(): "INTEGER", pa.timestamp("us"): "TIMESTAMP"}


def quote(identifier: str) -> str:
    """A quoted SQL identifier: some contract names are keywords (`rows` in DuckDB and BigQuery)."""
    return '"' + identifier.replace('"', '""') + '"'


def duckdb_type(column: Column) -> str:
    """DuckDB type of the column, e.g. `STRUCT("feed" VARCHAR, "rows" BIGINT)[]`."""
    if column.fields:
        inner = ", ".join(f"{quote(f.name)} {duckdb_type(f)}" for f in column.fields)
        return f"STRUCT({inner})[]"
    return _DUCKDB_TYPES[column.type]


def duckdb_ddl(name: str) -> str:
    """CREATE TABLE IF NOT EXISTS for DuckDB. Names come from this contract, never from data."""
    t = table(name)
    lines = [f"    {quote(c.name)} {duckdb_type(c)}{' NOT NULL' if c.required or c.fields else ''}"
             for c in t.columns]
    return f"CREATE TABLE IF NOT EXISTS {quote(t.name)} (\n" + ",\n".join(lines) + "\n)"


def _bigquery_field(column: Column) -> dict:
    field = {"name": column.name,
             "type": "RECORD" if column.fields else BIGQUERY_TYPES[column.type],
             "mode": column.mode, "description": column.description}
    if column.fields:
        field["fields"] = [_bigquery_field(f) for f in column.fields]
    return field


def bigquery_schema(name: str) -> list[dict]:
    """The table's schema in BigQuery's JSON form (what `bq mk --schema` and the API take)."""
    return [_bigquery_field(c) for c in table(name).columns]
