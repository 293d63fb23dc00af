"""Publication gates: what a night's staged outputs must satisfy before they replace anything.

Nobody watches the job at 2 am, so a degraded book must fail the run, not reach the risk tables:
every feed has records recent enough for the as-of date (each feed's expected lag), the as-of date
is not beyond what the feeds cover, each feed's row count is within a band of the last published
night's, each feed's rejected share is under its limit (per feed: a pooled share lets half of one
feed through), and the score's PSI and the features' out-of-range shares are not at alert level.

Each gate yields one result per feed or feature (recorded in the attempt's `runs` row and pushed as
metrics). A breached gate raises GateBreached before publication, unless the operator overrode that
gate for this run (`--override_gate NAME --override_reason TEXT`: recorded as 'overridden').
Thresholds: smescore/config/gates.json (or --gates_config), unknown keys refused.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Mapping, Optional, Sequence

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc

from smescore import config, tables
from smescore.errors import BadInput, GateBreached
from transforms import feeds as feed_contract
from transforms import row_groups

GATES = ("as_of_coverage", "feed_freshness", "row_count_band", "rejected_share", "score_psi",
         "out_of_range")
OUT_OF_RANGE = "out_of_range"      # the drift metric (share of values beyond the training range)
SCORING = "scoring"                # the rejected-records feed of firms the model could not score


@dataclasses.dataclass(frozen=True)
class GatesConfig:
    enabled: Mapping[str, bool]
    max_lag_days: Mapping[str, int]        # feed -> days between the latest record and the as-of
    max_days_beyond_feeds: int
    min_ratio: float
    max_ratio: float
    min_previous_rows: int                 # feeds smaller than this last night are not banded
    rejected_share: Mapping[str, float]    # feed (or 'scoring') -> limit; else --max_rejected_share

    @classmethod
    def load(cls, path: Optional[str] = None) -> "GatesConfig":
        raw, where = config.read_json("gates.json", path, "gates config",
                                      "; fix the file or pass --gates_config")
        try:
            return cls._parse(raw)
        except (TypeError, ValueError, KeyError) as err:
            raise BadInput(f"gates config {where}: {err}") from None

    @classmethod
    def _parse(cls, raw) -> "GatesConfig":
        keys = {"feed_freshness": {"max_lag_days"}, "as_of_coverage": {"max_days_beyond_feeds"},
                "row_count_band": {"min_ratio", "max_ratio", "min_previous_rows"},
                "rejected_share": {"per_feed"}, "score_psi": set(), "out_of_range": set()}
        if not isinstance(raw, dict):
            raise ValueError(f"expected an object of gates, got {type(raw).__name__}")
        unknown = sorted(set(raw) - set(GATES))
        if unknown:
            raise ValueError(f"unknown gates {unknown}; the gates are {list(GATES)}")
        enabled = {}
        for gate in GATES:
            section = raw.get(gate, {})
            if not isinstance(section, dict):
                raise ValueError(f"{gate!r} must be an object, got {section!r}")
            extra = sorted(set(section) - keys[gate] - {"enabled"})
            if extra:
                raise ValueError(f"{gate!r}: unknown keys {extra}; allowed "
                                 f"{sorted(keys[gate] | {'enabled'})}")
            enabled[gate] = section.get("enabled", True)
            if not isinstance(enabled[gate], bool):
                raise ValueError(f"{gate}.enabled must be true or false, got {enabled[gate]!r}")
        lags = raw.get("feed_freshness", {}).get("max_lag_days", {})
        shares = raw.get("rejected_share", {}).get("per_feed", {})
        for what, mapping, allowed in (("feed_freshness.max_lag_days", lags, feed_contract.FEEDS),
                                       ("rejected_share.per_feed", shares,
                                        [*feed_contract.FEEDS, SCORING])):
            bad = sorted(set(mapping) - set(allowed))
            if bad:
                raise ValueError(f"{what}: unknown feeds {bad}; the feeds are {list(allowed)}")
        for feed, days in lags.items():
            _number(f"feed_freshness.max_lag_days.{feed}", days, 0, None, integer=True)
        for feed, share in shares.items():
            _number(f"rejected_share.per_feed.{feed}", share, 0, 1)
        band = raw.get("row_count_band", {})
        lo = _number("row_count_band.min_ratio", band.get("min_ratio", 0.8), 0, 1)
        hi = _number("row_count_band.max_ratio", band.get("max_ratio", 1.25), 1, None)
        return cls(enabled, dict(lags),
                   _number("as_of_coverage.max_days_beyond_feeds",
                           raw.get("as_of_coverage", {}).get("max_days_beyond_feeds", 31), 0, None,
                           integer=True),
                   lo, hi, _number("row_count_band.min_previous_rows",
                                   band.get("min_previous_rows", 100), 0, None, integer=True),
                   dict(shares))


def _number(name, value, lo, hi, integer=False):
    ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
    if not ok or value < lo or (hi is not None and value > hi):
        raise ValueError(f"{name} must be {'an integer' if integer else 'a number'} in "
                         f"[{lo}, {hi if hi is not None else 'inf'}], got {value!r}")
    return value


# ----------------------------------------------------------------------------- in the pipeline

def latest_known(table: pa.Table, feed: str, as_of: dt.date) -> Optional[dt.date]:
    """The feed's latest record date known on the as-of date (CSV text dates parsed; unparseable
    ones ignored here, the validation rejects them)."""
    column = feed_contract.FEEDS[feed].date_column
    if column not in table.column_names or table.num_rows == 0:
        return None
    values = table.column(column)
    if not pa.types.is_date32(values.type):
        values = pc.cast(pc.strptime(pc.utf8_trim_whitespace(pc.cast(values, pa.string())),
                                     format="%Y-%m-%d", unit="s", error_is_null=True), pa.date32())
    known = pc.filter(values, pc.less_equal(values, pa.scalar(as_of, pa.date32())))
    return pc.max(known).as_py() if len(known) else None


class FeedCoverageFn(beam.CombineFn):
    """Batches of one feed -> (rows read, latest record date known on the as-of date)."""

    def __init__(self, feed: str, as_of: dt.date):
        self.feed, self.as_of = feed, as_of

    def create_accumulator(self):
        return 0, None

    def add_input(self, acc, batch):
        # A named row group: its date column alone is read here (transforms/row_groups.py)
        dates = row_groups.read(batch, [feed_contract.FEEDS[self.feed].date_column])
        return self.merge_accumulators([acc, (batch.num_rows,
                                              latest_known(dates, self.feed, self.as_of))])

    def merge_accumulators(self, accs):
        accs = list(accs)
        dates = [d for _, d in accs if d is not None]
        return sum(n for n, _ in accs), (max(dates) if dates else None)

    def extract_output(self, acc):
        return {"feed": self.feed, "rows": acc[0], "latest": acc[1]}


@beam.ptransform_fn
def FeedCoverage(pcoll, feed: str, as_of: dt.date):
    return pcoll | "Combine" >> beam.CombineGlobally(FeedCoverageFn(feed, as_of))


# ----------------------------------------------------------------------------- at publish

def _result(gate, subject, breached, value, threshold, note) -> dict:
    return {"gate": gate, "subject": subject, "status": "breached" if breached else "passed",
            "value": None if value is None else float(value),
            "threshold": None if threshold is None else float(threshold), "note": note}


def freshness(cfg: GatesConfig, as_of: dt.date, coverage: Sequence[dict]) -> list[dict]:
    out = []
    for c in coverage:
        if c["feed"] not in cfg.max_lag_days:
            continue
        limit = cfg.max_lag_days[c["feed"]]
        if c["latest"] is None:
            out.append(_result("feed_freshness", c["feed"], True, None, limit,
                               f"no {c['feed']} records known on or before {as_of} "
                               f"({c['rows']:,} rows read)"))
            continue
        lag = (as_of - c["latest"]).days
        out.append(_result("feed_freshness", c["feed"], lag > limit, lag, limit,
                           f"latest {c['feed']} record {c['latest']} is {lag} days before the "
                           f"as-of date {as_of} (limit {limit})"))
    return out


def coverage_gate(cfg: GatesConfig, as_of: dt.date, coverage: Sequence[dict]) -> list[dict]:
    dates = [c["latest"] for c in coverage if c["latest"] is not None]
    if not dates:
        return [_result("as_of_coverage", "all", True, None, cfg.max_days_beyond_feeds,
                        f"no feed has a record on or before {as_of}")]
    latest = max(dates)
    beyond = (as_of - latest).days
    return [_result("as_of_coverage", "all", beyond > cfg.max_days_beyond_feeds, beyond,
                    cfg.max_days_beyond_feeds,
                    f"as-of date {as_of} is {beyond} days after the latest record of any feed "
                    f"({latest}; limit {cfg.max_days_beyond_feeds})")]


def row_band(cfg: GatesConfig, coverage: Sequence[dict], previous: Optional[dict]) -> list[dict]:
    """`previous`: {'as_of_date', 'attempt_id', 'rows_in': {feed: rows}} of the serving night."""
    if previous is None:
        return []
    out = []
    for c in coverage:
        before = previous["rows_in"].get(c["feed"])
        if before is None or before < cfg.min_previous_rows:
            continue
        ratio = c["rows"] / before
        out.append(_result("row_count_band", c["feed"],
                           not cfg.min_ratio <= ratio <= cfg.max_ratio, ratio,
                           cfg.min_ratio if ratio < cfg.min_ratio else cfg.max_ratio,
                           f"{c['rows']:,} {c['feed']} rows vs {before:,} in the published run of "
                           f"{previous['as_of_date']} (ratio {ratio:.2f}, band "
                           f"{cfg.min_ratio:g}-{cfg.max_ratio:g})"))
    return out


def rejected_shares(cfg: GatesConfig, default_limit: float, rows_in: Mapping[str, int],
                    rejected_by_feed: Mapping[str, int], firms_scored: int) -> list[dict]:
    """Per feed: rejected records over records read; 'scoring': firms the model could not score
    over firms to score."""
    out = []
    for feed, n in sorted({**{f: rows_in.get(f, 0) for f in feed_contract.FEEDS},
                           SCORING: firms_scored + rejected_by_feed.get(SCORING, 0)}.items()):
        bad = rejected_by_feed.get(feed, 0)
        share, limit = bad / max(n, 1), cfg.rejected_share.get(feed, default_limit)
        what = "firms could not be scored by the model" if feed == SCORING else \
            f"{feed} records rejected"
        out.append(_result("rejected_share", feed, share > limit, share, limit,
                           f"{bad:,} of {n:,} {what} ({share:.2%}, limit {limit:.2%})"))
    return out


def drift_gates(cfg: GatesConfig, drift_rows: Sequence[dict]) -> list[dict]:
    out = []
    if cfg.enabled["score_psi"]:
        for r in drift_rows:
            if (r["metric"], r["feature"], r["segment"]) == ("psi", tables.SCORE_FEATURE, "all"):
                out.append(_result("score_psi", "score", r["status"] == "alert", r["value"],
                                   r["threshold"], f"score PSI {r['value']:.3f} against the "
                                   f"training baseline (alert at {r['threshold']:g})"))
    if cfg.enabled["out_of_range"]:
        for r in drift_rows:
            if r["metric"] == OUT_OF_RANGE and r["segment"] == "all":
                out.append(_result("out_of_range", r["feature"], r["status"] == "alert",
                                   r["value"], r["threshold"],
                                   f"{r['value']:.2%} of {r['feature']} values outside the "
                                   f"training range (alert at {r['threshold']:.2%})"))
    return out


def evaluate(cfg: GatesConfig, as_of: dt.date, default_limit: float, coverage: Sequence[dict],
             rejected_by_feed: Mapping[str, int], firms_scored: int, drift_rows: Sequence[dict],
             previous: Optional[dict]) -> list[dict]:
    """Every enabled gate's results, in GATES order."""
    rows_in = {c["feed"]: c["rows"] for c in coverage}
    by_gate = {
        "feed_freshness": lambda: freshness(cfg, as_of, coverage),
        "as_of_coverage": lambda: coverage_gate(cfg, as_of, coverage),
        "row_count_band": lambda: row_band(cfg, coverage, previous),
        "rejected_share": lambda: rejected_shares(cfg, default_limit, rows_in, rejected_by_feed,
                                                  firms_scored)}
    out = []
    for gate in GATES:
        if gate in by_gate and cfg.enabled[gate]:
            out += by_gate[gate]()
    return out + drift_gates(cfg, drift_rows)


def apply_overrides(results: list[dict], overrides: Sequence[str], reason: str) -> list[dict]:
    """Breached results of an overridden gate become 'overridden', the reason in their note."""
    return [{**r, "status": "overridden", "note": f"{r['note']}; overridden: {reason}"}
            if r["status"] == "breached" and r["gate"] in overrides else r for r in results]


def enforce(results: Sequence[dict], as_of: dt.date) -> None:
    """Raise GateBreached naming the first breach (and how many more) when any gate is breached."""
    breached = [r for r in results if r["status"] == "breached"]
    if not breached:
        return
    first = breached[0]
    more = sorted({f"{r['gate']}[{r['subject']}]" for r in breached[1:]})
    raise GateBreached(
        f"gate {first['gate']} breached for {first['subject']}: {first['note']}"
        + (f"; also breached: {', '.join(more)}" if more else "")
        + f"; nothing published for {as_of}, the risk tables are untouched; fix the input or "
          f"rerun with --override_gate {first['gate']} --override_reason '<why>'")


PREVIOUS_SQL = """SELECT as_of_date, attempt_id, rows_in FROM runs
WHERE serving AND status = 'succeeded' AND as_of_date <= ?
ORDER BY as_of_date DESC, attempt_id DESC LIMIT 1"""


def previous_night(reader, as_of: dt.date) -> Optional[dict]:
    """The serving attempt of the latest published date up to `as_of` (None: nothing published)."""
    if not reader.has_table("runs"):
        return None
    rows = reader.query(PREVIOUS_SQL, [as_of]).to_pylist()
    if not rows:
        return None
    r = rows[0]
    return {"as_of_date": r["as_of_date"], "attempt_id": r["attempt_id"],
            "rows_in": {x["feed"]: x["rows"] for x in r["rows_in"]}}
