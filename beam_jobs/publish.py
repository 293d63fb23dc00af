"""The run around the scoring pipeline: ids, the model and configs it used, and publication.

`run_id` is derived from (as_of_date, model_version, input fingerprint, config fingerprint): the same
night rerun on the same inputs has the same id and replaces its own rows.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import tempfile

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from beam_jobs import champion_challenger, drift, gates, sinks, sources
from models import lifecycle, score_rows
from models import registry as model_registry
from models.rules import load_rules_config
from models.scorecard import load_scorecard_config
from smescore import files, tables
from smescore.errors import BadInput, UsageError
from beam_jobs.risk_sinks import open_risk_tables, prestaged_tables
from smescore.warehouse import StagedTable

log = logging.getLogger(__name__)


class RunFailed(BadInput):
    """A run that cannot go ahead with these inputs (e.g. a model of another feature catalogue)."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def next_attempt_id(reader, run_id: str) -> str:
    """`<run_id>-<n>`: n counts this run_id's attempts on record, so every attempt gets its own
    row and a rerun of the same attempt never exists (the warehouse lock serialises writers)."""
    n = 0
    if reader.has_table("runs"):
        n = reader.query("SELECT COUNT(*) AS n FROM runs WHERE run_id = ?", [run_id]) \
            .column(0)[0].as_py()
    return f"{run_id}-{n + 1}"


def unstarted_run_id(cfg) -> str:
    """The run id of an attempt that failed before its inputs were fingerprinted (missing feed,
    bad model card, busy warehouse): derived from what is known, the date and the forced version."""
    return hashlib.sha256(json.dumps(
        [str(cfg.as_of), cfg.model_version or "champion", "not started"]).encode()).hexdigest()[:20]


def record_unstarted(cfg, err: BaseException, started_at: dt.datetime, progress=print) -> dict:
    """Record an attempt that failed before the pipeline, as its own `runs` row; returns it.
    Recording can fail too (the warehouse is what failed): the error is said, not raised."""
    run_id = unstarted_run_id(cfg)
    record = {"run_id": run_id, "as_of_date": cfg.as_of,
              "model_version": cfg.model_version or "unknown", "started_at": started_at,
              "finished_at": _now(), "status": "failed", "rows_in": [], "rows_rejected": 0,
              "firms_scored_model": 0, "firms_scored_rules": 0,
              "message": f"{type(err).__name__}: {err}"[:2000], "config_fingerprint": "",
              "gates": []}
    if cfg.sink == "duckdb" and not os.path.isdir(os.path.dirname(os.path.abspath(cfg.warehouse))):
        progress(f"[score] failed attempt not recorded: no warehouse folder for {cfg.warehouse}")
        record["attempt_id"] = f"{run_id}-?"        # never create a warehouse the operator refused
        return record
    try:
        sink = open_risk_tables(cfg)
        sink.ensure_schema()
        record["attempt_id"] = next_attempt_id(open_risk_tables(cfg), run_id)
        sink.record_failed_run(record)
    except Exception as record_err:  # noqa: BLE001 - the original error matters more
        progress(f"[score] could not record the failed attempt: {type(record_err).__name__}: "
                 f"{record_err}")
        record.setdefault("attempt_id", f"{run_id}-?")
    return record


def firm_segments_of(features: pa.Table, as_of, run_id: str) -> pa.Table:
    """A feature table's firmographics as `firm_segments` rows of the run."""
    n = features.num_rows
    return pa.table({"as_of_date": pa.array([as_of] * n, pa.date32()),
                     "enterprise_id": features.column("enterprise_id"),
                     "industry": features.column("ent_industry"),
                     "region": features.column("ent_province"),
                     "run_id": pa.array([run_id] * n, pa.string())},
                    schema=tables.arrow_schema("firm_segments"))


SCORE_COUNTS_SCHEMA = pa.schema([("score_source", pa.string()), ("model_role", pa.string()),
                                 ("firms", pa.int64())])


def stage_summary(staging: str, as_of, version: str, scores_rows: int, segment_rows: int) -> int:
    """On a worker, once the staged `scores` and `firm_segments` files are written (their row
    counts arrive as side inputs, which orders this step after them): `portfolio_summary.parquet`
    and `score_counts.parquet` (firms per score source and model role: what the driver's gates
    and result need), read from the columns they use. Returns the summary's rows."""
    scores = pq.read_table(os.path.join(staging, "scores.parquet"), columns=[
        "enterprise_id", "score", "pd", "grade", "score_source", "model_role"])
    segments = pq.read_table(os.path.join(staging, "firm_segments.parquet"),
                             columns=["enterprise_id", "industry", "region"])
    summary = portfolio_summary(scores.drop_columns(["model_role"]).to_pandas(),
                                segments.to_pandas(), as_of, version)
    table = pa.Table.from_pandas(summary, schema=tables.arrow_schema("portfolio_summary"),
                                 preserve_index=False)
    sinks.publish_file(lambda tmp: pq.write_table(table, tmp),
                       os.path.join(staging, "portfolio_summary.parquet"))
    counts = scores.group_by(["score_source", "model_role"]).aggregate([([], "count_all")])
    counts = counts.select(["score_source", "model_role", "count_all"]).rename_columns(
        SCORE_COUNTS_SCHEMA.names)
    sinks.write_sorted_parquet([counts], os.path.join(staging, "score_counts.parquet"),
                               SCORE_COUNTS_SCHEMA, ["score_source", "model_role"])
    return table.num_rows


PRESTAGED_SCHEMA = pa.schema([("table", pa.string()), ("rows", pa.int64())])


def write_prestaged(rows: int, table: str, path: str) -> None:
    """How many rows of `table` the pipeline loaded into its staging table (checked at publish)."""
    sinks.write_sorted_parquet([pa.table({"table": [table], "rows": [rows]}, PRESTAGED_SCHEMA)],
                               path, PRESTAGED_SCHEMA, ["table"])


COUNTS_SCHEMA = pa.schema([("feed", pa.string()), ("rows", pa.int64()), ("latest", pa.date32())])


def write_counts(counts: list[dict], path: str) -> None:
    """Rows read and the latest record date known on the as-of date, per feed (the gates read
    them), staged like the risk tables (a gs:// path on Dataflow)."""
    sinks.write_sorted_parquet([pa.Table.from_pylist(counts, COUNTS_SCHEMA)], path, COUNTS_SCHEMA,
                               ["feed"])


def portfolio_summary(scores: pd.DataFrame, segments: pd.DataFrame, as_of, version) -> pd.DataFrame:
    """Per segment: firms, mean PD, expected defaults, score percentiles, share of the portfolio."""
    df = scores.merge(segments, on="enterprise_id", how="left")
    df["all"] = "all"
    total = len(df)
    rows = []
    for seg_type, column in (("all", "all"), ("industry", "industry"), ("region", "region"),
                             ("grade", "grade"), ("score_source", "score_source")):
        for seg, g in df.groupby(column, sort=True):
            s = g["score"].to_numpy(np.float64)
            rows.append({"as_of_date": as_of, "model_version": version, "segment_type": seg_type,
                         "segment": str(seg), "n_firms": int(len(g)), "mean_pd": float(g["pd"].mean()),
                         "expected_defaults": float(g["pd"].sum()),
                         "score_p10": float(np.percentile(s, 10)),
                         "score_p50": float(np.percentile(s, 50)),
                         "score_p90": float(np.percentile(s, 90)),
                         "share_of_firms": len(g) / total})
    return pd.DataFrame(rows)


def drift_summary(drift_rows: pa.Table) -> dict:
    """Statuses per metric, the score's PSI and the features not 'ok' (for logs and the result)."""
    rows = drift_rows.to_pylist()
    out = {key: next((r["value"] for r in rows if r["metric"] == metric and r["segment"] == "all"
                      and r["feature"] == tables.SCORE_FEATURE), None)
           for key, metric in (("score_psi", "psi"),
                               ("score_psi_training_sample", "psi_training_sample"))}
    for metric in tables.DRIFT_METRICS:
        mine = [r for r in rows if r["metric"] == metric]
        out[metric] = {s: sum(r["status"] == s for r in mine) for s in tables.DRIFT_STATUSES}
    out["not_ok"] = sorted(
        f"{r['feature']}{'' if r['segment'] == 'all' else '[' + r['segment'] + ']'}:"
        f"{r['metric']}={r['value']:.3f}:{r['status']}" for r in rows if r["status"] != "ok")
    return out


@dataclasses.dataclass
class RunContext:
    cfg: object
    scoring: score_rows.Scoring
    roles: champion_challenger.Roles
    model_paths: dict            # version -> SavedModel path, the champion first
    card: dict                   # the champion's model card
    drift_reference: drift.Reference     # what drift is measured against, from the card
    drift_config: drift.DriftConfig
    config_fingerprint: str
    started_at: dt.datetime
    progress: object
    note: str = ""             # the run record's message when it succeeds (e.g. why it rolled back)
    attempt_id: str = ""
    gates: list = dataclasses.field(default_factory=list)   # gate results (runs.gates)
    rows_in: list = dataclasses.field(default_factory=list)
    gates_config: gates.GatesConfig | None = None

    @classmethod
    def start(cls, cfg, progress=print, input_fp: str | None = None,
              dry_run: bool = False, started_at: dt.datetime | None = None) -> "RunContext":
        """A dry run reads only a local registry: it neither rolls back nor reads the risk tables,
        and it does not touch a gs:// registry (offline, --no_auth): it needs --model_version
        then, and builds the job without challengers and with the drift baseline left out (the
        graph is never run)."""
        reg = model_registry.Registry(cfg.registry)
        if dry_run and files.is_remote(cfg.registry):
            return cls._offline(cfg, progress)
        rolled_back = None
        if not cfg.model_version and not dry_run:   # a forced version is the operator's call
            rolled_back = lifecycle.automatic_rollback(reg, open_risk_tables(cfg), cfg.max_auc_drop)
            if rolled_back:
                progress(f"[score] {rolled_back}")
        version = cfg.model_version or reg.champion()
        challengers = tuple(v for v in reg.challengers() if v != version)
        cards = {v: reg.model_card(v) for v in (version, *challengers)}
        for v, card_v in cards.items():
            try:
                model_registry.check_model_features(v, card_v)
            except model_registry.ModelMismatch as err:
                raise RunFailed(str(err)) from None
        typical = score_rows.typical_firms(cards)      # each version's reasons use its own card
        card = cards[version]
        roles = champion_challenger.Roles(version, challengers, cfg.canary_share)
        try:
            reference = drift.Reference.from_card(card)
        except ValueError as err:
            raise RunFailed(f"model card of {version}: {err}") from None
        drift_config = drift.DriftConfig.load(cfg.drift_config)
        gates_config = gates.GatesConfig.load(cfg.gates_config)    # refused before any work
        scorecard = load_scorecard_config(cfg.scorecard_config)
        rules = load_rules_config(cfg.rules_config, scorecard.scale)
        config_fp = hashlib.sha256(json.dumps({
            "scorecard": scorecard.fingerprint, "rules": rules.fingerprint,
            "min_history_months": cfg.min_history_months, "challengers": challengers,
            "canary_share": cfg.canary_share, "drift": dataclasses.asdict(drift_config)},
            sort_keys=True).encode()).hexdigest()
        run_id = hashlib.sha256(json.dumps(
            [str(cfg.as_of), version, input_fp or sources.input_fingerprint(cfg.feeds), config_fp]).encode()
        ).hexdigest()[:20]
        scoring = score_rows.Scoring(scorecard.scale, scorecard.master_scale, rules.rules,
                                     version, run_id, typical)
        progress(f"[score] run {run_id}: as of {cfg.as_of}, model {version}, "
                 f"scorecard {scorecard.version}, cold-start rules {rules.version}"
                 + (f"; challengers {', '.join(challengers)} in shadow, canary {roles.canary} on "
                    f"{cfg.canary_share:.0%} of firms" if challengers else ""))
        # an older trainer's card: the run goes on without the training sample metrics, and says so
        unmeasured = reference.warning(version)
        if unmeasured:
            log.warning(unmeasured)
            progress(f"[score] warning: {unmeasured}")
        paths = {v: reg.saved_model_path(v) for v in (version, *challengers)}
        for v, path in paths.items() if not dry_run else ():   # a dry run stays offline
            model_registry.check_saved_model(v, path)
        attempt_id = "dry-run" if dry_run else next_attempt_id(open_risk_tables(cfg), run_id)
        return cls(cfg, scoring, roles, paths, card, reference, drift_config, config_fp,
                   started_at or _now(), progress,
                   "; ".join(m for m in (rolled_back, unmeasured) if m), attempt_id,
                   gates_config=gates_config)

    @classmethod
    def _offline(cls, cfg, progress) -> "RunContext":
        if not cfg.model_version:
            raise UsageError(f"a dry run does not read the registry {cfg.registry}: give "
                             f"--model_version=VERSION (the champion: `gcloud storage cat "
                             f"{cfg.registry.rstrip('/')}/champion.json`)")
        version = cfg.model_version
        scorecard = load_scorecard_config(cfg.scorecard_config)
        rules = load_rules_config(cfg.rules_config, scorecard.scale)
        scoring = score_rows.Scoring(scorecard.scale, scorecard.master_scale, rules.rules,
                                     version, "dry-run", {})     # the graph is never run
        progress(f"[score] dry run: model {version} from {cfg.registry} (not read: no challengers, "
                 f"no drift baseline)")
        paths = {version: model_registry.Registry(cfg.registry).saved_model_path(version)}
        return cls(cfg, scoring, champion_challenger.Roles(version, (), cfg.canary_share), paths,
                   {"baseline": None}, drift.Reference(book=None),
                   drift.DriftConfig.load(cfg.drift_config), "dry-run", _now(), progress,
                   attempt_id="dry-run", gates_config=gates.GatesConfig.load(cfg.gates_config))

    def run_record(self, status: str, message: str, rows_in=(), rejected=0, n_model=0,
                   n_rules=0) -> dict:
        return {"attempt_id": self.attempt_id, "gates": list(self.gates),
                "run_id": self.scoring.run_id, "as_of_date": self.cfg.as_of,
                "model_version": self.scoring.model_version, "started_at": self.started_at,
                "finished_at": _now(), "status": status, "rows_in": list(rows_in or self.rows_in), "rows_rejected": int(rejected),
                "firms_scored_model": int(n_model), "firms_scored_rules": int(n_rules),
                "message": message, "config_fingerprint": self.config_fingerprint}

    def publish(self, staging: str) -> dict:
        """The staged tables into the risk tables, after the gates. The driver reads only small
        files (counts, drift, comparison, rejected records, the summary); the per-firm tables go
        as StagedTable (DuckDB copies the files in) or, on BigQuery, are already loaded by the
        workers (prestaged.parquet holds their counts)."""
        with tempfile.TemporaryDirectory(prefix="smescore-publish-") as local:
            return self._publish(staging, local)

    def _publish(self, staging: str, local: str) -> dict:
        def read(name):
            return pq.read_table(os.path.join(staging, f"{name}.parquet"))

        def staged(name):      # DuckDB reads local files; a gs:// staging folder is copied down
            path = os.path.join(staging, f"{name}.parquet")
            if files.is_remote(path):
                path = files.download(path, os.path.join(local, f"{name}.parquet"))
            return StagedTable.of(path)

        rejected, coverage = read("rejected"), read("rows_in").to_pylist()
        rows_in = [{"feed": c["feed"], "rows": c["rows"]} for c in coverage]
        self.rows_in = rows_in
        by_source, n_canary = {}, 0
        for c in read("score_counts").to_pylist():
            by_source[c["score_source"]] = by_source.get(c["score_source"], 0) + c["firms"]
            n_canary += c["firms"] if c["model_role"] == "canary" else 0
        n_firms = sum(by_source.values())
        n_model, n_rules = by_source.get("model", 0), by_source.get("rules", 0)
        drift_rows = read("drift")
        self.check_gates(coverage, rejected, n_model, drift_rows)
        rejected_rows = pa.table({
            "run_id": pa.array([self.scoring.run_id] * rejected.num_rows, pa.string()),
            "as_of_date": pa.array([self.cfg.as_of] * rejected.num_rows, pa.date32()),
            "feed": rejected.column("feed"), "record_json": rejected.column("record_json"),
            "reason": rejected.column("reason")})
        wh = open_risk_tables(self.cfg)
        wh.ensure_schema()
        published = {"drift": drift_rows, "challenger_comparison": read("challenger_comparison"),
                     "rejected_records": rejected_rows.cast(
                         tables.arrow_schema("rejected_records"))}
        prestaged, load_bytes = {}, {}
        if prestaged_tables(self.cfg):     # loaded by the workers into BigQuery staging tables
            for r in read("prestaged").to_pylist():
                prestaged[r["table"]], load_bytes[r["table"]] = r["rows"], r["load_bytes"]
            missing = set(prestaged_tables(self.cfg)) - set(prestaged)
            if missing:
                raise RuntimeError(f"the workers did not load {sorted(missing)} (staging "
                                   f"{staging})")
            extra = {"prestaged": prestaged}
        else:
            published.update({name: staged(name) for name in (
                "scores", "scores_shadow", "attributions", "firm_segments")})
            published["portfolio_summary"] = read("portfolio_summary")
            extra = {}
        target = self.cfg.warehouse or repr(wh)
        wh.publish(self.cfg.as_of, published, self.run_record(
            "succeeded", self.note, rows_in, rejected.num_rows, n_model, n_rules),
            challengers=self.roles.challengers, **extra)
        result = {"run_id": self.scoring.run_id, "as_of_date": str(self.cfg.as_of),
                  "model_version": self.scoring.model_version, "firms": n_firms,
                  "firms_scored_model": n_model, "firms_scored_rules": n_rules,
                  "firms_in_default": by_source.get("in_default", 0),
                  "rows_in": {r["feed"]: r["rows"] for r in rows_in},
                  "rows_rejected": rejected.num_rows, "warehouse": target,
                  "challengers": list(self.roles.challengers), "firms_canary": n_canary,
                  "drift": drift_summary(drift_rows), "message": self.note}
        if load_bytes:
            result["load_bytes"] = load_bytes
        self.progress(f"[score] published {n_firms:,} scores "
                      f"({n_model:,} model, {n_rules:,} rules) into {target}")
        return result

    def check_gates(self, coverage: list, rejected: pa.Table, n_model: int,
                    drift_rows: pa.Table) -> None:
        """Evaluate every gate into self.gates (recorded whatever happens); GateBreached if one
        is breached and not overridden."""
        cfg = self.cfg
        config = self.gates_config or gates.GatesConfig.load(cfg.gates_config)
        by_feed = {r["values"]: r["counts"]
                   for r in rejected.column("feed").value_counts().to_pylist()}
        results = gates.evaluate(config, cfg.as_of, cfg.max_rejected_share, coverage, by_feed,
                                 n_model, drift_rows.to_pylist(),
                                 gates.previous_night(open_risk_tables(cfg), cfg.as_of))
        self.gates = gates.apply_overrides(results, cfg.override_gates, cfg.override_reason)
        for r in self.gates:
            if r["status"] == "overridden":
                self.progress(f"[score] GATE OVERRIDDEN {r['gate']}[{r['subject']}]: {r['note']}")
        if any(r["status"] == "overridden" for r in self.gates):
            self.note = "; ".join(filter(None, [self.note, "gates overridden: " + ", ".join(
                sorted(set(cfg.override_gates))) + f" ({cfg.override_reason})"]))
        gates.enforce(self.gates, cfg.as_of)

    def fail(self, err: BaseException) -> None:
        """Record the failed run; its data partitions are not touched."""
        try:
            wh = open_risk_tables(self.cfg)
            wh.ensure_schema()
            message = f"{type(err).__name__}: {err}" + (f" ({self.note})" if self.note else "")
            wh.record_failed_run(self.run_record("failed", message[:2000]))
        except Exception as record_err:  # the original error matters more; say why we could not
            self.progress(f"[score] could not record the failed run: {record_err}")
