"""Pieces the benchmarks share: data and model preparation under /tmp/bench-*, the model-routed
feature batches, the Scoring of a registry version, subprocess runs with logs, and result output.

Benchmarks are not tests: each prints the figures it measured in one run. Data lives outside the
repository (default work folder /tmp/bench-smescore); generated feeds, feature tables and the
trained model are reused across runs when their parameters (and, for the model, the feature
catalogue) match, so a second `make bench` only re-measures.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import time

from smescore import runtime  # noqa: E402

runtime.tf_environment()

from transforms.featurize import DEFAULT_SHARDS  # noqa: E402  (the nightly's --n_shards)

DEFAULT_WORK = "/tmp/bench-smescore"
END_DATE = "2026-10-31"
SEED = 7
# Training needs >= 5 labelled month-end snapshots (12 months of history before and 12 observed
# after each): a 24-month portfolio gives one, so the model is trained on its own 36-month book.
TRAIN_MONTHS = 36
CLI = [sys.executable, "-m", "smescore.cli"]


def add_common_args(parser, with_model: bool = True) -> None:
    parser.add_argument("--work", default=DEFAULT_WORK,
                        help="folder for generated data, models and outputs (keep it under /tmp/bench-*)")
    parser.add_argument("--months", type=int, default=24, help="months of feeds for scored portfolios")
    parser.add_argument("--as-of", default=END_DATE)
    parser.add_argument("--seed", type=int, default=SEED)
    if with_model:
        parser.add_argument("--registry", default=None,
                            help="registry with a champion to score with (default: train one under --work)")
        parser.add_argument("--train-firms", type=int, default=10_000,
                            help=f"firms of the {TRAIN_MONTHS}-month portfolio the model is trained on")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def child_env() -> dict:
    """This process's environment (TensorFlow's variables set above, smescore/runtime.py) with a
    fixed hash seed for the child processes."""
    return {**os.environ, "PYTHONHASHSEED": "0"}


def run_logged(cmd: list[str], log_path: str) -> float:
    """Run cmd with stdout+stderr into log_path; its wall seconds. Raises with the log's tail."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as fh:
        rc = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, env=child_env(),
                             cwd=repo_root())
    elapsed = time.perf_counter() - start
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {rc}; last lines of {log_path}:\n{tail(log_path)}")
    return elapsed


def tail(path: str, lines: int = 40) -> str:
    with open(path, encoding="utf-8", errors="replace") as fh:
        return "".join(fh.readlines()[-lines:])


def repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _marker(folder: str) -> str:
    return os.path.join(folder, "_bench_params.json")


def _matches(folder: str, params: dict) -> bool:
    try:
        with open(_marker(folder), encoding="utf-8") as fh:
            return json.load(fh) == params
    except (OSError, ValueError):
        return False


def _mark(folder: str, params: dict) -> None:
    with open(_marker(folder), "w", encoding="utf-8") as fh:
        json.dump(params, fh)


def ensure_feeds(work: str, firms: int, months: int, seed: int = SEED, end_date: str = END_DATE) -> str:
    """Generated feeds for (firms, months, seed), made once; returns the feeds folder."""
    folder = os.path.join(work, f"feeds-{firms}x{months}-s{seed}")
    params = {"firms": firms, "months": months, "seed": seed, "end_date": end_date}
    if not _matches(folder, params):
        log(f"[bench] generating {firms:,} firms x {months} months -> {folder}")
        secs = run_logged([*CLI, "generate", "--out", folder, "--firms", str(firms), "--months",
                           str(months), "--end-date", end_date, "--seed", str(seed)],
                          os.path.join(work, "logs", f"generate-{firms}x{months}.log"))
        _mark(folder, params)
        log(f"[bench] generated in {secs:.1f}s")
    return folder


def ensure_features(work: str, feeds: str, as_of: str) -> str:
    """`smescore features` output for feeds as of a date, made once; returns the Parquet path."""
    out = os.path.join(work, f"features-{os.path.basename(feeds)}-{as_of}.parquet")
    params = {"feeds": feeds, "as_of": as_of, "catalog": catalog_fingerprint(),
              "feeds_mtime": os.path.getmtime(_marker(feeds))}
    marker = out + ".params.json"
    try:
        with open(marker, encoding="utf-8") as fh:
            fresh = json.load(fh) == params and os.path.exists(out)
    except (OSError, ValueError):
        fresh = False
    if not fresh:
        log(f"[bench] computing features of {feeds} as of {as_of} -> {out}")
        secs = run_logged([*CLI, "features", "--feeds", feeds, "--as-of", as_of, "--out", out],
                          os.path.join(work, "logs", f"features-{os.path.basename(feeds)}.log"))
        with open(marker, "w", encoding="utf-8") as fh:
            json.dump(params, fh)
        log(f"[bench] features in {secs:.1f}s")
    return out


def catalog_fingerprint() -> str:
    from transforms import catalog
    return hashlib.sha256(json.dumps(list(catalog.NAMES)).encode()).hexdigest()[:10]


def ensure_model(work: str, registry: str | None, train_firms: int, seed: int = SEED) -> tuple[str, str]:
    """(registry, champion version) whose SavedModel takes the current feature catalogue.

    A model exported under another catalogue fails every RunInference batch (its signature does not
    take the new features), so the default registry is keyed by the catalogue's fingerprint and
    trained when absent; an explicit --registry is checked and refused when it does not match.
    """
    from models.registry import Registry
    if registry is None:
        registry = os.path.join(work, f"registry-{catalog_fingerprint()}")
        try:
            Registry(registry).champion()
        except FileNotFoundError:
            feeds = ensure_feeds(work, train_firms, TRAIN_MONTHS, seed)
            log(f"[bench] training a model on {feeds} -> {registry} (not part of any figure)")
            secs = run_logged([*CLI, "train", "--feeds", feeds, "--registry", registry],
                              os.path.join(work, "logs", f"train-{os.path.basename(registry)}.log"))
            log(f"[bench] trained in {secs:.1f}s")
    reg = Registry(registry)
    version = reg.champion()
    check_model_matches_catalog(reg, version)
    return registry, version


def check_model_matches_catalog(reg, version: str) -> None:
    from transforms import catalog
    features = reg.model_card(version)["features"]
    if list(features) != list(catalog.NAMES):
        missing = sorted(set(catalog.NAMES) - set(features))
        extra = sorted(set(features) - set(catalog.NAMES))
        raise SystemExit(
            f"model {version} in {reg.root} was exported for another feature catalogue "
            f"(catalogue has {len(catalog.NAMES)} features, the model {len(features)}; new: {missing}, "
            f"gone: {extra}); every RunInference batch would fail. Retrain or omit --registry.")


def make_scoring(reg, version: str, run_id: str = "bench"):
    """The Scoring the nightly job builds (packaged scorecard and cold-start rules, the version's
    typical firm from its model card)."""
    from models import score_rows
    from models.rules import load_rules_config
    from models.scorecard import load_scorecard_config
    scorecard = load_scorecard_config(None)
    rules = load_rules_config(None, scorecard.scale)
    return score_rows.Scoring(scorecard.scale, scorecard.master_scale, rules.rules, version, run_id,
                              score_rows.typical_firms({version: reg.model_card(version)}))


def model_routed(table):
    """The firms the nightly job sends to the model (models/eligibility.py, its default history)."""
    from models import eligibility
    return eligibility.route(table).get(eligibility.MODEL, table.slice(0, 0))


def read_model_batches(path: str, batch_rows: int):
    """The model-routed firms of a features Parquet, as tables of batch_rows rows (the last shorter)."""
    import pyarrow.parquet as pq
    table = model_routed(pq.read_table(path)).combine_chunks()
    return [table.slice(start, batch_rows) for start in range(0, table.num_rows, batch_rows)]


def count_model_rows(path: str) -> int:
    import pyarrow.parquet as pq
    return model_routed(pq.read_table(path, columns=["in_default", "months_history"])).num_rows


def nightly_batch_rows(n_rows: int, shards: int = DEFAULT_SHARDS) -> int:
    """Rows per RunInference element in the nightly job: model firms spread over --n_shards."""
    return max(1, math.ceil(n_rows / shards))


def write_json(path: str | None, payload: dict) -> None:
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2, default=str)

