"""Job arguments: one PipelineOptions subclass for every smescore job, turned into a validated,
immutable config per job.

Beam builds one argument parser out of every PipelineOptions subclass it knows, so two classes may
not declare the same flag: the jobs share this one class and each config checks its own flags.
"""
from __future__ import annotations

import dataclasses
import datetime as dt

from apache_beam.options.pipeline_options import PipelineOptions


def parse_date(text: str, what: str = "date") -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be YYYY-MM-DD, got {text!r}") from None


def boolean(text: str) -> bool:
    value = {"true": True, "false": False}.get(str(text).strip().lower())
    if value is None:
        raise ValueError(f"expected true or false, got {text!r}")
    return value


def require(opts, *names) -> None:
    """Flags cannot be argparse-required (every job parses every flag), so each job checks."""
    missing = [f"--{n}" for n in names if getattr(opts, n) in (None, "")]
    if missing:
        raise ValueError(f"missing required flags: {', '.join(missing)}")


class SmescoreOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--feeds", help="Feeds folder: <feeds>/<feed>/*.parquet|csv")
        parser.add_argument("--as_of", help="As-of date YYYY-MM-DD")
        parser.add_argument("--as_of_dates", help="Comma-separated as-of dates (training snapshots)")
        parser.add_argument("--out", help="Table to write (.parquet)")
        parser.add_argument("--rejected_out", default=None,
                            help="Where rejected records go (.parquet); default: beside --out")
        parser.add_argument("--registry", help="Model registry folder")
        parser.add_argument("--warehouse", help="DuckDB file of the risk tables")
        parser.add_argument("--model_version", default=None,
                            help="Score with this version instead of the registry's champion")
        parser.add_argument("--n_shards", type=int, default=32,
                            help="Firm shards (a controller group never straddles two)")
        parser.add_argument("--min_history_months", type=int, default=6,
                            help="Firms with less feed history go to the cold-start rules")
        parser.add_argument("--max_rejected_share", type=float, default=0.05,
                            help="Fail before publishing when more feed records are rejected")
        parser.add_argument("--scorecard_config", default=None,
                            help="Score scale and master scale JSON (default: packaged)")
        parser.add_argument("--rules_config", default=None,
                            help="Cold-start rules JSON (default: packaged)")
        # `--require_gpu` or `--require_gpu=true|false`: flex templates pass every parameter
        # as --name=value, which a plain store_true flag refuses.
        parser.add_argument("--require_gpu", nargs="?", const=True, default=False, type=boolean,
                            help="Fail fast when a worker has no GPU (GPU Dataflow jobs)")
        # Where feeds come from and where risk tables go: local files + DuckDB (the embedded
        # default) or BigQuery (production).
        parser.add_argument("--source", choices=SOURCES, default="files",
                            help="Feeds: 'files' (--feeds folder) or 'bigquery' (--feeds_dataset)")
        parser.add_argument("--sink", choices=SINKS, default="duckdb",
                            help="Risk tables: 'duckdb' (--warehouse file) or 'bigquery' "
                                 "(--risk_dataset)")
        parser.add_argument("--bq_project", default=None,
                            help="Google Cloud project of the BigQuery datasets")
        parser.add_argument("--feeds_dataset", default=None,
                            help="BigQuery dataset holding the feed tables (--source=bigquery)")
        parser.add_argument("--risk_dataset", default=None,
                            help="BigQuery dataset of the risk tables (--sink=bigquery)")
        parser.add_argument("--bq_location", default="US", help="BigQuery location of the datasets")


SOURCES = ("files", "bigquery")
SINKS = ("duckdb", "bigquery")


def _shards(o) -> int:
    if o.n_shards < 1:
        raise ValueError(f"--n_shards must be >= 1, got {o.n_shards}")
    return o.n_shards


def _parquet(path: str, flag: str) -> str:
    if not path.endswith(".parquet"):
        raise ValueError(f"{flag} must name a .parquet file, got {path!r}")
    return path


@dataclasses.dataclass(frozen=True)
class FeaturesConfig:
    """`python -m beam_jobs.build_features --feeds DIR --as_of D --out FILE [Beam flags]`."""
    feeds: str
    as_of: dt.date
    out: str
    rejected_out: str
    n_shards: int

    @classmethod
    def from_options(cls, options: PipelineOptions) -> "FeaturesConfig":
        o = options.view_as(SmescoreOptions)
        require(o, "feeds", "as_of", "out")
        out = _parquet(o.out, "--out")
        rejected = o.rejected_out or out[: -len(".parquet")] + ".rejected.parquet"
        return cls(o.feeds, parse_date(o.as_of, "--as_of"), out, rejected, _shards(o))


@dataclasses.dataclass(frozen=True)
class SnapshotConfig:
    """`python -m beam_jobs.training_snapshots --feeds DIR --as_of_dates D1,D2 --out FILE`."""
    feeds: str
    as_of_dates: tuple[dt.date, ...]
    out: str
    n_shards: int

    @classmethod
    def from_options(cls, options: PipelineOptions) -> "SnapshotConfig":
        o = options.view_as(SmescoreOptions)
        require(o, "feeds", "as_of_dates", "out")
        dates = tuple(parse_date(d.strip(), "--as_of_dates") for d in o.as_of_dates.split(","))
        return cls(o.feeds, dates, _parquet(o.out, "--out"), _shards(o))


@dataclasses.dataclass(frozen=True)
class ScoreConfig:
    """`python -m beam_jobs.score_portfolio --feeds DIR --as_of D --registry DIR --warehouse F`."""
    feeds: str
    as_of: dt.date
    registry: str
    warehouse: str
    model_version: str | None
    n_shards: int
    min_history_months: int
    max_rejected_share: float
    scorecard_config: str | None
    rules_config: str | None
    require_gpu: bool

    @classmethod
    def from_options(cls, options: PipelineOptions) -> "ScoreConfig":
        o = options.view_as(SmescoreOptions)
        require(o, "feeds", "as_of", "registry", "warehouse")
        if o.min_history_months < 0:
            raise ValueError(f"--min_history_months must be >= 0, got {o.min_history_months}")
        if not 0 <= o.max_rejected_share <= 1:
            raise ValueError(f"--max_rejected_share must be in [0, 1], got {o.max_rejected_share}")
        return cls(o.feeds, parse_date(o.as_of, "--as_of"), o.registry, o.warehouse,
                   o.model_version, _shards(o), o.min_history_months, o.max_rejected_share,
                   o.scorecard_config, o.rules_config, bool(o.require_gpu))
