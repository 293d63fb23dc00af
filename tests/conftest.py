"""Shared, session-scoped fixtures: one small generated portfolio, one trained model version.

Small on purpose (CI has 2 cores): a few hundred firms are enough to exercise every stage for
real — generator, Beam on DirectRunner, TFT analyze/transform, a trained SavedModel, DuckDB.
"""
from __future__ import annotations

import datetime as dt
import os

from smescore import runtime

runtime.tf_environment()

import pytest  # noqa: E402

# The session book's 30 months leave three training snapshot dates (April-June 2025): its October
# nights really do reach outside that training range (a 12-month sales trend: 7.5% of firms, a
# seasonal shift), so the out-of-range gate would rightly refuse every fixture night. The suite's
# nights publish with it off; tests/test_faults.py and tests/test_drift.py test that gate and
# metric themselves. The 36-month books of `make demo` and the acceptance runs pass it.
os.environ.setdefault("SMESCORE_GATES_CONFIG",
                      os.path.join(os.path.dirname(__file__), "short_book_gates.json"))

# The suite's pipelines run every stage in place: a pool of worker processes would start for
# each of its ~100 small pipelines. tests/test_process_pool.py runs them with workers and
# checks that every table comes out the same.
os.environ.setdefault("SMESCORE_WORKER_PROCESSES", "1")

END_DATE = dt.date(2026, 10, 31)
FIRMS, MONTHS, SEED = 1200, 30, 11


@pytest.fixture(scope="session")
def small_feeds(tmp_path_factory) -> str:
    from synth.generate import generate
    out = str(tmp_path_factory.mktemp("feeds"))
    generate(out, firms=FIRMS, months=MONTHS, end_date=END_DATE, seed=SEED)
    return out


@pytest.fixture(scope="session")
def trained(small_feeds, tmp_path_factory):
    """(registry dir, version, model card) of a model trained on the small portfolio."""
    from beam_jobs import train_job
    from models import network
    from models.train import TrainConfig
    registry = str(tmp_path_factory.mktemp("registry"))
    cfg = TrainConfig(feeds=small_feeds, registry=registry, background_size=100,
                      hparams=network.HParams(max_epochs=12, patience=4), n_shards=4)
    version, card = train_job.train(cfg, progress=lambda m: None)
    return registry, version, card


@pytest.fixture(scope="session")
def registry_with_challenger(trained, small_feeds, tmp_path_factory):
    """(registry dir, champion, challenger): the session's trained model as champion and a second
    real model (another seed, fewer epochs) as challenger, in a copy of the registry. Read only."""
    import shutil
    from models import network
    from beam_jobs import train_job
    from models import registry as model_registry
    from models.train import TrainConfig
    src, champion, _ = trained
    reg_dir = str(tmp_path_factory.mktemp("reg") / "registry")
    shutil.copytree(src, reg_dir)
    cfg = TrainConfig(feeds=small_feeds, registry=reg_dir, background_size=100, n_shards=4,
                      hparams=network.HParams(max_epochs=6, patience=3, seed=8))
    challenger, _ = train_job.train(cfg, progress=lambda m: None)
    reg = model_registry.Registry(reg_dir)
    assert reg.champion() == champion != challenger
    reg.set_challengers([challenger])
    return reg_dir, champion, challenger
