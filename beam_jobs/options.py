"""Job arguments: one PipelineOptions subclass for every smescore job, turned into a validated,
immutable config per job.

Beam builds one argument parser out of every PipelineOptions subclass it knows, so two classes may
not declare the same flag: the jobs share this one class and each config checks its own flags.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re

from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs.gates import GATES
from models.eligibility import MIN_HISTORY_MONTHS
from transforms.featurize import DEFAULT_SHARDS
from smescore.bigquery import DATASET_RE, LOCATION_RE, PROJECT_RE
from smescore import flags
from smescore.errors import UsageError


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
        parser.add_argument("--n_shards", type=int, default=DEFAULT_SHARDS,
                            help="Firm shards, at least (a controller group never straddles "
                                 "two; a book of over 3,200 firms a shard gets more)")
        parser.add_argument("--min_history_months", type=int, default=MIN_HISTORY_MONTHS,
                            help="Firms with less feed history go to the cold-start rules")
        parser.add_argument("--max_rejected_share", type=float, default=0.05,
                            help="Gate: fail before publishing when a larger share of any one "
                                 "feed's records (or of the firms to score) is rejected "
                                 "(per-feed limits in --gates_config win)")
        parser.add_argument("--scorecard_config", default=None,
                            help="Score scale and master scale JSON (default: packaged)")
        parser.add_argument("--rules_config", default=None,
                            help="Cold-start rules JSON (default: packaged)")
        parser.add_argument("--max_auc_drop", type=float, default=0.05,
                            help="Roll back to the previous champion when the champion's latest "
                                 "backtest AUC is this far below its model card's and the "
                                 "previous one did better on the same cohort")
        # `--require_gpu` or `--require_gpu=true|false`: flex templates pass every parameter
        # as --name=value, which a plain store_true flag refuses.
        parser.add_argument("--require_gpu", nargs="?", const=True, default=False, type=boolean,
                            help="Fail fast when a worker has no GPU (GPU Dataflow jobs)")
        parser.add_argument("--canary_share", type=float, default=0.10,
                            help="Share of model-scored firms whose official score comes from the "
                                 "first challenger (chosen by a hash of enterprise_id)")
        parser.add_argument("--drift_config", default=None,
                            help="Drift thresholds JSON (default: packaged smescore/config/drift.json)")
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
        # An unattended night: gates before publishing, the warehouse checked first.
        parser.add_argument("--gates_config", default=os.environ.get("SMESCORE_GATES_CONFIG"),
                            help="Publication gates JSON (default: $SMESCORE_GATES_CONFIG, else "
                                 "the packaged smescore/config/gates.json)")
        parser.add_argument("--override_gate", default=None, choices=GATES,
                            help="Publish although this gate is breached, for this run only "
                                 "(needs --override_reason; recorded in runs)")
        parser.add_argument("--override_reason", default=None,
                            help="Why the gate(s) of --override_gate may be breached tonight "
                                 "(recorded in the attempt's runs row)")
        parser.add_argument("--lock_timeout", type=float, default=60.0,
                            help="Seconds to wait while another writer holds the warehouse before "
                                 "giving up (exit 5)")
        parser.add_argument("--create_warehouse", nargs="?", const=True, default=False,
                            type=boolean,
                            help="Create the --warehouse folder if it does not exist (otherwise "
                                 "a missing folder is an error, not a new warehouse)")
        # Monitoring, after the run: both off unless given.
        parser.add_argument("--pushgateway", default="",
                            help="Prometheus Pushgateway host:port to push the run's metrics to "
                                 "after success and after failure (default: off)")
        parser.add_argument("--report_dir", default="",
                            help="Folder to write the HTML run report run-report-<as_of>.html "
                                 "into after a successful run (default: off)")


SOURCES = ("files", "bigquery")
SINKS = ("duckdb", "bigquery")

# BigQuery names go into SQL as identifiers (values never do), so they are checked up front
# against these patterns (smescore/bigquery.py); the flex template's metadata.json mirrors them.


def _shards(o) -> int:
    if o.n_shards < 1:
        raise ValueError(f"--n_shards must be >= 1, got {o.n_shards}")
    return o.n_shards


_GATEWAY = re.compile(r"^(https?://)?[A-Za-z0-9_.\[\]:-]+:[0-9]{1,5}(/[^\s]*)?$")


def _pushgateway(address: str | None) -> str:
    """'' (off) or host:port, optionally http(s)://host:port[/path] (a gateway behind a proxy)."""
    address = (address or "").strip()
    if address and not _GATEWAY.match(address):
        raise ValueError(f"--pushgateway must be host:port (e.g. 127.0.0.1:9091), got {address!r}")
    return address


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


def _matching(value: str, pattern: str, flag: str) -> str:
    if not re.fullmatch(pattern, value):
        raise ValueError(f"{flag} {value!r} is not a valid name (expected {pattern})")
    return value


@dataclasses.dataclass(frozen=True)
class BigQueryConfig:
    """Where the job reads feeds from and writes risk tables to in BigQuery.

    The feed query results are staged in `risk_dataset` (the only dataset the job's service
    account may write), so `--source=bigquery` needs it too. The risk tables go in by Parquet
    load jobs that upload their files (beam_jobs/risk_sinks.py): no bucket is needed for them.
    """
    project: str
    feeds_dataset: str | None
    risk_dataset: str
    location: str

    @classmethod
    def from_options(cls, o, source: str, sink: str) -> "BigQueryConfig | None":
        if source != "bigquery" and sink != "bigquery":
            return None
        needed = ["bq_project", "risk_dataset"] + (["feeds_dataset"] if source == "bigquery" else [])
        try:
            require(o, *needed)
        except ValueError as err:
            raise ValueError(f"{err} (--source={source} --sink={sink})") from None
        return cls(_matching(o.bq_project, PROJECT_RE, "--bq_project"),
                   o.feeds_dataset and _matching(o.feeds_dataset, DATASET_RE, "--feeds_dataset"),
                   _matching(o.risk_dataset, DATASET_RE, "--risk_dataset"),
                   _matching(o.bq_location, LOCATION_RE, "--bq_location"))


@dataclasses.dataclass(frozen=True)
class ScoreConfig:
    """`python -m beam_jobs.score_portfolio --feeds DIR --as_of D --registry DIR --warehouse F`,
    or with `--source=bigquery` / `--sink=bigquery` and the BigQuery flags instead of --feeds /
    --warehouse."""
    feeds: str | None
    as_of: dt.date
    registry: str
    warehouse: str | None
    model_version: str | None
    n_shards: int
    min_history_months: int
    max_rejected_share: float
    scorecard_config: str | None
    rules_config: str | None
    require_gpu: bool
    canary_share: float = 0.10
    drift_config: str | None = None
    pushgateway: str = ""        # host:port, or "" for no metrics push
    report_dir: str = ""         # folder of the HTML run report, or "" for none
    max_auc_drop: float = 0.05
    source: str = "files"        # SOURCES
    sink: str = "duckdb"         # SINKS
    bigquery: BigQueryConfig | None = None     # with --source=bigquery or --sink=bigquery
    gates_config: str | None = None
    override_gates: tuple[str, ...] = ()       # gates allowed to be breached this run
    override_reason: str = ""
    lock_timeout: float = 60.0
    create_warehouse: bool = False

    @classmethod
    def from_options(cls, options: PipelineOptions) -> "ScoreConfig":
        o = options.view_as(SmescoreOptions)
        require(o, "as_of", "registry", *(["feeds"] if o.source == "files" else []),
                *(["warehouse"] if o.sink == "duckdb" else []))
        bigquery = BigQueryConfig.from_options(o, o.source, o.sink)
        if o.min_history_months < 0:
            raise ValueError(f"--min_history_months must be >= 0, got {o.min_history_months}")
        if not 0 <= o.max_rejected_share <= 1:
            raise ValueError(f"--max_rejected_share must be in [0, 1], got {o.max_rejected_share}")
        if not 0 <= o.canary_share <= 1:
            raise ValueError(f"--canary_share must be in [0, 1], got {o.canary_share}")
        if not 0 <= o.max_auc_drop <= 1:
            raise ValueError(f"--max_auc_drop must be in [0, 1], got {o.max_auc_drop}")
        overrides = (o.override_gate,) if o.override_gate else ()
        reason = (o.override_reason or "").strip()
        if overrides and not reason:
            raise ValueError("--override_gate needs --override_reason (it is recorded in runs)")
        if reason and not overrides:
            raise ValueError("--override_reason without --override_gate overrides nothing")
        if o.lock_timeout < 0:
            raise ValueError(f"--lock_timeout must be >= 0 seconds, got {o.lock_timeout}")
        return cls(o.feeds, parse_date(o.as_of, "--as_of"), o.registry, o.warehouse,
                   o.model_version, _shards(o), o.min_history_months, o.max_rejected_share,
                   o.scorecard_config, o.rules_config, bool(o.require_gpu),
                   canary_share=o.canary_share, drift_config=o.drift_config,
                   pushgateway=_pushgateway(o.pushgateway), report_dir=o.report_dir or "",
                   max_auc_drop=o.max_auc_drop, source=o.source, sink=o.sink, bigquery=bigquery,
                   gates_config=o.gates_config, override_gates=overrides,
                   override_reason=reason, lock_timeout=o.lock_timeout,
                   create_warehouse=bool(o.create_warehouse))


# Which of SmescoreOptions' flags each job reads: its command line (`smescore <command>` and
# `python -m beam_jobs.<job>`) offers those and refuses the rest. The nightly job reads every flag
# the other jobs do not own, so a flag declared above reaches it (and `smescore score`) by itself.
JOB_FLAGS = {
    "build_features": ("feeds", "as_of", "out", "rejected_out", "n_shards"),
    "training_snapshots": ("feeds", "as_of_dates", "out", "n_shards"),
}
NOT_SCORING = ("as_of_dates", "out", "rejected_out")
REQUIRED = {"build_features": ("feeds", "as_of", "out"),
            "training_snapshots": ("feeds", "as_of_dates", "out"),
            "score_portfolio": ("as_of", "registry")}


def job_flags(job: str):
    """The argparse actions of `job`'s flags, in declaration order (smescore/flags.py)."""
    if job == "score_portfolio":
        return flags.declared(SmescoreOptions, exclude=NOT_SCORING)
    return flags.declared(SmescoreOptions, JOB_FLAGS[job])


class OptionError(UsageError, ValueError):
    """A flag value a job refuses (exit 2)."""


def config(config_cls, options: PipelineOptions):
    """`config_cls.from_options`, with a flag value it refuses reported as a usage error."""
    try:
        return config_cls.from_options(options)
    except ValueError as err:
        raise OptionError(str(err)) from None
