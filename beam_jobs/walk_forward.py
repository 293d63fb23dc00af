"""The book of past month-ends as the nightly job would have scored it (for `smescore validate`).

Features of every date come from one Beam job, the training-snapshot pipeline (the nightly's
point-in-time features plus the 12-month label where it is observed). Each date is then scored
in-process by the nightly job's own pieces: `RouteFirms` (in default / cold-start rules / model),
the RunInference handler's `with_model_outputs` on the exported SavedModel, and score_rows'
`model_rows`, `rules_rows` and `in_default_rows`; nothing is published.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs import inference, score_rows, training_snapshots
from beam_jobs.score_portfolio import IN_DEFAULT, MODEL, RULES, RouteFirms
from beam_jobs.sources import LocalFilesSource
from models.rules import load_rules_config
from models.scorecard import load_scorecard_config
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
        import tensorflow as tf
        self.model = tf.saved_model.load(saved_model_path)
        self.min_history = min_history_months
        scorecard = load_scorecard_config(None)
        rules = load_rules_config(None, scorecard.scale)
        self.scoring = score_rows.Scoring(scorecard.scale, scorecard.master_scale, rules.rules,
                                          version, f"validate-{version}",
                                          score_rows.typical_firms({version: card}))

    def route(self, table: pa.Table) -> dict[str, pa.Table]:
        """The nightly job's routing, applied to one table."""
        parts = {MODEL: [], RULES: [], IN_DEFAULT: []}
        for out in RouteFirms(self.min_history).process(table):
            if isinstance(out, beam.pvalue.TaggedOutput):
                parts[out.tag].append(out.value)
            else:
                parts[MODEL].append(out)
        return {k: pa.concat_tables(v) if v else table.slice(0, 0) for k, v in parts.items()}

    def score(self, table: pa.Table) -> ScoredDate:
        routed = self.route(table)
        model = routed[MODEL]
        scores, abs_points, n_points = [], {}, 0
        for start in range(0, model.num_rows, BATCH_ROWS):
            batch = model.slice(start, BATCH_ROWS)
            rows, attributions = score_rows.model_rows(
                inference.with_model_outputs(batch, self.model), self.scoring)
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
        """PDs through the SavedModel's serving signature (raw inputs as inference.raw_inputs)."""
        import tensorflow as tf
        from models import export
        signature = self.model.signatures[export.SCORE_SIGNATURE]
        n = len(next(iter(inputs.values())))
        parts = [signature(**{k: tf.constant(v[i:i + BATCH_ROWS]) for k, v in inputs.items()})["pd"]
                 .numpy() for i in range(0, n, BATCH_ROWS)]
        return np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)


def monotonicity_sample(model_inputs: pa.Table, n: int, seed: int) -> dict[str, np.ndarray]:
    """A seeded sample of at most n model-scored firms, as the signature's raw inputs."""
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(model_inputs.num_rows, min(n, model_inputs.num_rows), replace=False))
    return inference.raw_inputs(model_inputs.take(pa.array(idx)))
