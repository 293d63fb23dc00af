"""Job arguments: one PipelineOptions subclass, turned into a validated, immutable config."""
from __future__ import annotations

import dataclasses
import datetime as dt

from apache_beam.options.pipeline_options import PipelineOptions


def parse_date(text: str, what: str = "date") -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be YYYY-MM-DD, got {text!r}") from None


def require(opts, *names) -> None:
    """Beam parses every registered options class on every pipeline, so flags cannot be
    argparse-required; the job checks its own."""
    missing = [f"--{n}" for n in names if getattr(opts, n) in (None, "")]
    if missing:
        raise ValueError(f"missing required flags: {', '.join(missing)}")


class FeaturesOptions(PipelineOptions):
    """`python -m beam_jobs.build_features --feeds DIR --as_of D --out FILE [Beam flags]`."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--feeds", help="Feeds folder: <feeds>/<feed>/*.parquet|csv")
        parser.add_argument("--as_of", help="As-of date YYYY-MM-DD")
        parser.add_argument("--out", help="Feature table to write (.parquet)")
        parser.add_argument("--rejected_out", default=None,
                            help="Where rejected records go (.parquet); default: beside --out")
        parser.add_argument("--n_shards", type=int, default=32,
                            help="Firm shards (controller groups never straddle two)")


@dataclasses.dataclass(frozen=True)
class FeaturesConfig:
    feeds: str
    as_of: dt.date
    out: str
    rejected_out: str
    n_shards: int

    @classmethod
    def from_options(cls, options: PipelineOptions) -> "FeaturesConfig":
        o = options.view_as(FeaturesOptions)
        require(o, "feeds", "as_of", "out")
        if o.n_shards < 1:
            raise ValueError(f"--n_shards must be >= 1, got {o.n_shards}")
        if not o.out.endswith(".parquet"):
            raise ValueError(f"--out must name a .parquet file, got {o.out!r}")
        rejected = o.rejected_out or o.out[: -len(".parquet")] + ".rejected.parquet"
        return cls(o.feeds, parse_date(o.as_of, "--as_of"), o.out, rejected, o.n_shards)
