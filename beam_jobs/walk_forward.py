"""`smescore validate`: the book of past month-ends as the nightly job would have scored it.

Features of every date come from one Beam job, the training-snapshot pipeline (the nightly's
point-in-time features plus the 12-month label where it is observed). Each date is then scored
in-process by the nightly job's own pieces: the routing of models/eligibility.py (in default /
cold-start rules / model), `with_model_outputs` on the exported SavedModel and models/score_rows.py's
`model_rows`, `rules_rows` and `in_default_rows`; nothing is published. `validate` drives it and
hands each date to the figures and checks of models/validation.py.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import os
import shutil
import tempfile
import time

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs import training_snapshots
from beam_jobs.sources import LocalFilesSource, data_extent
from models import eligibility, lifecycle, score_rows, signature
from models.eligibility import IN_DEFAULT, MODEL, RULES
from models import registry as model_registry
from models import validation as v
from models.rules import load_rules_config
from models.scorecard import load_scorecard_config
from smescore.monitoring import validation_report
from transforms import catalog

BATCH_ROWS = 20_000          # firms per SavedModel call (the nightly's shards hold thousands)


def labelled_snapshots(feeds: str, dates, n_shards: int = 16, beam_args=()
                       ) -> tuple[pa.Table, int]:
    """Features and label_default_12m of every firm at every date (one Beam job), and how many
    feed records it rejected."""
    source = LocalFilesSource(feeds)
    source.check()
    work = tempfile.mkdtemp(prefix="smescore-validate-")
    try:
        out = os.path.join(work, "snapshots.parquet")
        with beam.Pipeline(options=PipelineOptions(list(beam_args))) as p:
            training_snapshots.build_pipeline(p, source, list(dates), out, n_shards)
        rejected = pq.read_metadata(out[: -len(".parquet")] + ".rejected.parquet").num_rows
        return pq.read_table(out), rejected
    finally:
        shutil.rmtree(work, ignore_errors=True)
        source.cleanup()


def rows_of(table: pa.Table, as_of) -> pa.Table:
    return table.filter(pc.equal(table.column("as_of_date"), pa.scalar(as_of, pa.date32())))


@dataclasses.dataclass
class ScoredDate:
    counts: dict                      # firms, model_scored, rules, in_default
    model_frame: pd.DataFrame         # enterprise_id, pd, grade, score, default (NaN: unobserved)
    model_values: dict                # numeric inputs of the model-scored firms (NaN: missing)
    model_inputs: pa.Table            # their feature rows
    mean_abs_points: dict             # feature -> mean |points| over the model-scored firms


class BookScorer:
    """One version's SavedModel, loaded once, and the nightly's scoring of a date's feature table."""

    def __init__(self, saved_model_path: str, version: str, min_history_months: int, card: dict):
        self.model = tf.saved_model.load(saved_model_path)
        self.min_history = min_history_months
        scorecard = load_scorecard_config(None)
        rules = load_rules_config(None, scorecard.scale)
        self.scoring = score_rows.Scoring(scorecard.scale, scorecard.master_scale, rules.rules,
                                          version, f"validate-{version}",
                                          score_rows.typical_firms({version: card}))

    def route(self, table: pa.Table) -> dict[str, pa.Table]:
        """The nightly job's routing, applied to one table."""
        parts = eligibility.route(table, self.min_history)
        return {k: parts.get(k, table.slice(0, 0)) for k in (MODEL, RULES, IN_DEFAULT)}

    def score(self, table: pa.Table) -> ScoredDate:
        routed = self.route(table)
        model = routed[MODEL]
        scores, abs_points, n_points = [], {}, 0
        for start in range(0, model.num_rows, BATCH_ROWS):
            batch = model.slice(start, BATCH_ROWS)
            rows, attributions = score_rows.model_rows(
                signature.with_model_outputs(batch, self.model), self.scoring)
            scores.append(rows)
            sums = (attributions.select(["feature", "points"]).to_pandas()
                    .assign(points=lambda f: f["points"].abs()).groupby("feature")["points"].sum())
            for feature, total in sums.items():
                abs_points[feature] = abs_points.get(feature, 0.0) + float(total)
            n_points += batch.num_rows
        frame = (pa.concat_tables(scores).select(["enterprise_id", "pd", "grade", "score"]).to_pandas()
                 if scores else pd.DataFrame(columns=["enterprise_id", "pd", "grade", "score"]))
        # the rest of the book as the nightly scores it: its counts are the `scores` table's
        if routed[RULES].num_rows:
            scores.append(score_rows.rules_rows(routed[RULES], self.scoring))
        if routed[IN_DEFAULT].num_rows:
            scores.append(score_rows.in_default_rows(routed[IN_DEFAULT], self.scoring))
        sources = pd.Series(pa.concat_tables(scores).column("score_source").to_pylist()
                            if scores else [], dtype=object).value_counts()
        frame["default"] = pc.fill_null(model.column("label_default_12m").cast(pa.float64()),
                                        np.nan).to_numpy(zero_copy_only=False)
        values = {f.name: pc.fill_null(model.column(f.name).cast(pa.float64()), np.nan)
                  .to_numpy(zero_copy_only=False) for f in catalog.FEATURES if not f.is_categorical}
        counts = {"firms": table.num_rows, "model_scored": int(sources.get(MODEL, 0)),
                  "rules": int(sources.get(RULES, 0)), "in_default": int(sources.get(IN_DEFAULT, 0))}
        return ScoredDate(counts, frame, values, model,
                          {f: abs_points.get(f, 0.0) / max(n_points, 1) for f in catalog.NAMES})

    def serving_pd(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """PDs through the SavedModel's serving signature (raw inputs as signature.raw_inputs)."""
        serving = self.model.signatures[signature.SCORE_SIGNATURE]
        n = len(next(iter(inputs.values())))
        parts = [serving(**{k: tf.constant(v[i:i + BATCH_ROWS]) for k, v in inputs.items()})["pd"]
                 .numpy() for i in range(0, n, BATCH_ROWS)]
        return np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)


def monotonicity_sample(model_inputs: pa.Table, n: int, seed: int) -> dict[str, np.ndarray]:
    """A seeded sample of at most n model-scored firms, as the signature's raw inputs."""
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(model_inputs.num_rows, min(n, model_inputs.num_rows), replace=False))
    return signature.raw_inputs(model_inputs.take(pa.array(idx)))


def validate(registry: str, version: str, feeds: str, dates=None, out_dir: str | None = None,
             config: str | None = None, n_shards: int = 16, beam_args=(), progress=print) -> dict:
    """Validate `version` on the feeds; write validation.json into its folder and the HTML report
    into `out_dir` (default: the version folder). Returns the validation result."""
    t0 = time.time()
    timings = {}
    reg = model_registry.Registry(registry)
    if version not in reg.versions():
        raise v.ValidationError(f"unknown model version {version!r}; the registry {registry!r} "
                              f"holds {reg.versions()}")
    card = reg.model_card(version)
    if card.get("features") != list(catalog.NAMES):
        raise v.ValidationError(f"{version} was trained on another feature catalogue than this "
                              f"code's; validate it with the code that trained it")
    cfg = v.load_config(config)
    if not os.path.isdir(os.path.join(feeds, "loans")):
        raise v.ValidationError(f"{feeds!r} is not a feeds folder (no loans/ in it): validation "
                              f"needs the loans feed for its outcomes")
    _, feeds_end = data_extent(feeds)
    dates = sorted(set(dates)) if dates else v.walk_forward_dates(card, feeds_end)
    late = [d for d in dates if d > feeds_end]
    if late:
        raise v.ValidationError(f"the feeds end {feeds_end}; cannot validate as of {late}")
    roles = v.date_roles(card, dates)
    progress(f"[validate] {version}: {len(dates)} dates {dates[0]}..{dates[-1]}")

    table, n_rejected = labelled_snapshots(feeds, dates, n_shards, beam_args)
    timings["features_s"] = time.time() - t0
    progress(f"[validate] features: {table.num_rows:,} firm-dates, {n_rejected:,} feed records "
             f"rejected ({timings['features_s']:.1f}s)")
    book = BookScorer(reg.saved_model_path(version), version,
                       int(card.get("min_history_months") or eligibility.MIN_HISTORY_MONTHS),
                       card)
    truth = v.read_truth(feeds, dates)
    ranges = v.numeric_ranges(card)
    grades = list(book.scoring.master.grades)
    frames, per_date, oor, points = [], [], {}, {}
    last_model = None
    t1 = time.time()
    for as_of in dates:
        scored = book.score(rows_of(table, as_of))
        frame = scored.model_frame
        if truth is not None:
            frame = frame.merge(truth[truth["as_of_date"] == as_of].drop(columns="as_of_date"),
                                on="enterprise_id", how="left")
        frames.append(frame.assign(as_of_date=as_of))
        per_date.append(v.date_figures(frame, as_of, roles[as_of], scored.counts, cfg, grades))
        oor[str(as_of)] = v.out_of_range_shares(scored.model_values, ranges)
        points[str(as_of)] = scored.mean_abs_points
        last_model = scored.model_inputs
        progress(f"[validate] {as_of}: {scored.counts['model_scored']:,} model-scored firms")
    timings["scoring_s"] = time.time() - t1

    pooled = v.pooled_figures(frames, per_date, cfg, grades)
    rows_path = os.path.join(reg.version_dir(version), v.ROWS_NAME)
    v.write_rows(pd.concat(frames, ignore_index=True), rows_path)

    t2 = time.time()
    mono = monotonicity_sample(last_model, cfg.monotonicity_firms, cfg.seed)
    mono_rows = v.monotonicity(book.serving_pd, mono, card, cfg.monotonicity_tolerance)
    timings["monotonicity_s"] = time.time() - t2
    result = {
        "version": version, "model_card_as_of_date": card.get("as_of_date"),
        "validated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        .replace("+00:00", "Z"),
        "feeds": os.path.abspath(feeds), "feeds_end": str(feeds_end),
        "feed_records_rejected": n_rejected,
        "config": cfg.thresholds(), "config_fingerprint": cfg.fingerprint,
        "min_history_months": book.min_history, "truth": truth is not None,
        "dates": per_date, "pooled": pooled,
        "out_of_range": v.out_of_range_rows(oor, ranges),
        "monotonicity": {"as_of_date": str(dates[-1]), "n_firms": len(next(iter(mono.values()))),
                         "tolerance": cfg.monotonicity_tolerance, "features": mono_rows,
                         "violations": int(sum(r["violations"] for r in mono_rows))},
        "mean_abs_points": v.points_rows(points, card),
        "challengers": v.challengers(card),
    }
    result["checks"] = v.evaluate_checks(result, cfg)
    result["passed"] = not v.failed_checks(result["checks"])
    timings["total_s"] = time.time() - t0
    result["timings"] = {k: round(v, 2) for k, v in timings.items()}
    result = v.plain(result)
    model_registry.write_json_atomically(
        os.path.join(reg.version_dir(version), model_registry.VALIDATION), result)
    out = os.path.join(out_dir or reg.version_dir(version), v.REPORT_NAME)
    result_report = validation_report.write_report(result, out)
    failed = v.failed_checks(result["checks"])
    progress(f"[validate] {'PASSED' if result['passed'] else 'FAILED'}: {len(failed)} of "
             f"{len(result['checks'])} checks failed"
             + "".join(f"\n[validate]   {lifecycle.describe_check(c)}" for c in failed[:10])
             + f"\n[validate] report {result_report}")
    return {**result, "report": result_report, "rows": rows_path,
            "validation_json": os.path.join(reg.version_dir(version), model_registry.VALIDATION)}
