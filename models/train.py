"""Training: labelled snapshots -> TFT -> network -> calibration -> SavedModel -> registry.

The snapshots come from the feeds through a Beam job; beam_jobs/train_job.py runs it and hands
the frame to `Trainer.train_on` (this module builds no pipeline).

Out-of-time and out-of-sample design: labelled snapshots at month-ends; the earliest dates train,
the next ones validate (early stopping), the latest ones test, and validation and test use only
firms held out of training (see `holdout_firms`). The calibration (models/calibration.py) is
fitted on every held-out firm-date before the test dates (`calibration_firms`) and on out-of-fold
logits of the training firms (`out_of_fold_logits`). The model card carries the test
metrics, the challenger's, the generator's oracle AUC when a ground truth is present, and the
baseline that drift and SHAP need later.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
import time
import zlib

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

# models.network first: it sets TensorFlow's environment (tf_keras) before TensorFlow loads
from models import (baseline, calibration, eligibility, ground_truth, lifecycle, metrics, network,
                    registry)
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from models import export
from models.scorecard import ScoreScale
from transforms import catalog, preprocessing

# Paired bootstrap of each benchmark's test AUC minus the model's (metrics.auc_difference): whether
# a gap of a few thousandths is more than the few hundred test defaults can tell apart.
BENCHMARK_BOOTSTRAP_REPLICATES = 1000

# Declared risk directions of the numeric features the network is monotone in.
DIRECTIONS = {f.name: f.risk_direction for f in catalog.FEATURES
              if not f.is_categorical and f.risk_direction != 0}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    feeds: str
    registry: str
    as_of: dt.date | None = None
    hparams: network.HParams = network.HParams()
    valid_dates: int = 2
    test_dates: int = 2
    min_history_months: int = eligibility.MIN_HISTORY_MONTHS
    background_size: int = 200
    holdout_share: float = 0.25    # firms never seen in training; validation and test use only them
    n_shards: int = 16
    benchmark_unconstrained: bool = True   # also train the unconstrained network (card metric)
    # Its test AUC is the mean over this many seeds: on the 10k book three seeds gave 0.853-0.859,
    # a spread of the order of the 0.005 the validation compares it with.
    benchmark_seeds: int = 3
    # Out-of-fold logits of the training firms join the held-out firms in the calibration sample
    # (0: held-out firms only). On the 10k book the held-out quarter's default rate ran 5-16%
    # under its own true PD at 7 of 9 training dates, and it alone holds ~650 defaults, too few
    # to place two knots; with 4 folds the sample has ~2,700.
    calibration_folds: int = 4
    beam_args: tuple[str, ...] = ()

    def __post_init__(self):
        if self.background_size < 100:
            raise ValueError(f"background_size must be >= 100 firms, got {self.background_size}")
        if self.valid_dates < 1 or self.test_dates < 1:
            raise ValueError("valid_dates and test_dates must be >= 1")
        if not 0 < self.holdout_share < 1:
            raise ValueError(f"holdout_share must be in (0, 1), got {self.holdout_share}")
        if self.benchmark_seeds < 1:
            raise ValueError(f"benchmark_seeds must be >= 1, got {self.benchmark_seeds}")
        if self.calibration_folds == 1 or self.calibration_folds < 0:
            raise ValueError(f"calibration_folds must be 0 or >= 2, got {self.calibration_folds}")


def month_end(year: int, month: int) -> dt.date:
    y, m = (year + 1, 1) if month == 12 else (year, month + 1)
    return dt.date(y, m, 1) - dt.timedelta(days=1)


def add_months(d: dt.date, n: int) -> dt.date:
    m = d.year * 12 + d.month - 1 + n
    return month_end(m // 12, m % 12 + 1)


def snapshot_dates(first: dt.date, as_of: dt.date) -> list[dt.date]:
    """Month-ends with 12 months of history behind them and 12 observed months after them."""
    start, end = add_months(first, 11), add_months(as_of, -12)
    dates, d = [], start
    while d <= end:
        dates.append(d)
        d = add_months(d, 1)
    return dates


def split_dates(dates, valid_n, test_n):
    if len(dates) < valid_n + test_n + 1:
        raise ValueError(f"need at least {valid_n + test_n + 1} snapshot dates for an out-of-time "
                         f"split, the feeds give {len(dates)} ({dates[:1]}..{dates[-1:]}); "
                         f"generate more months")
    return dates[:-(valid_n + test_n)], dates[-(valid_n + test_n):-test_n], dates[-test_n:]


def fingerprint(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()


def frame_fingerprint(frame: pd.DataFrame) -> str:
    return fingerprint(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())


def folder_fingerprint(folder: str) -> str:
    h = hashlib.sha256()
    for base, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            path = os.path.join(base, name)
            h.update(os.path.relpath(path, folder).encode())
            with open(path, "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()


def eligible(frame: pd.DataFrame, min_history: int) -> pd.DataFrame:
    """Rows the model learns from: labelled, not already in default, enough history."""
    keep = eligibility.model_eligible(frame["in_default"], frame["months_history"], min_history) \
        & frame["label_default_12m"].notna()
    return frame[keep.to_numpy()].reset_index(drop=True)


def holdout_firms(enterprise_ids, share: float) -> np.ndarray:
    """Deterministic firm-level holdout (crc32 of the id). Monthly snapshots of one firm are near
    copies of each other, and a firm labelled bad at a training date is still labelled bad a few
    months later: validating on firms the network trained on rewards memorising firms, not risk."""
    buckets = np.array([zlib.crc32(str(e).encode()) % 10_000 for e in enterprise_ids])
    return buckets < share * 10_000


def calibration_firms(frame: pd.DataFrame, split: dict, held_out: np.ndarray) -> pd.DataFrame:
    """The held-out part of the calibration sample: every held-out firm-date before the test dates
    (the validation firms, and the held-out firms at the training dates, which the network never saw).
    The validation dates alone hold ~150 defaults on the 10k book, which left about +-8% noise in
    the PD level between otherwise equal models; the test dates stay out of it."""
    before_test = frame["as_of_date"].isin(list(split["train"]) + list(split["valid"])).to_numpy()
    return frame[before_test & held_out].reset_index(drop=True)


def out_of_fold_logits(x: dict, y: dict, enterprise_ids, hp: network.HParams, signs,
                       folds: int) -> np.ndarray:
    """Raw logits of every training row from a network trained without its firm (K folds by firm,
    each early-stopped on the validation firms like the model): calibration data as honest as the
    held-out firms', and 2.4 times as many on the 10k book. Empty with folds = 0."""
    if folds == 0:
        return np.zeros(0)
    fold = np.array([zlib.crc32(f"calibration-fold:{e}".encode()) % folds for e in enterprise_ids])
    oof = np.zeros(len(fold))
    for k in range(folds):
        inside = fold != k
        if not inside.any() or inside.all():
            raise ValueError(f"calibration fold {k} of {folds} is empty: too few training firms")
        model, _ = network.fit(x["train"][inside], y["train"][inside], x["valid"], y["valid"], hp,
                               signs=signs)
        oof[~inside] = network.raw_logit(model, x["train"][~inside])
    return oof


def fit_calibration(model, x: dict, y: dict, train_part: pd.DataFrame, hp: network.HParams, signs,
                    folds: int) -> tuple[calibration.LogitCalibration, dict]:
    """The calibration, fitted on the held-out firm-dates (through the model) and the training
    rows' out-of-fold logits, and a description of that sample for the model card."""
    oof = out_of_fold_logits(x, y, train_part["enterprise_id"], hp, signs, folds)
    oof_y = y["train"] if len(oof) else y["train"][:0]
    cal = calibration.fit(np.concatenate([network.raw_logit(model, x["calibration"]), oof]),
                          np.concatenate([y["calibration"], oof_y]))
    return cal, {"firm_dates": int(len(y["calibration"]) + len(oof)),
                 "defaults": int(y["calibration"].sum() + oof_y.sum()),
                 "held_out_firm_dates": int(len(y["calibration"])),
                 "out_of_fold_firm_dates": int(len(oof)), "folds": folds}


def oracle_auc(feeds_dir: str, test: pd.DataFrame) -> float | None:
    """AUC of the generator's true PD on the same test rows, when a ground truth is present."""
    truth = ground_truth.read(feeds_dir)
    if truth is None:
        return None
    truth["as_of_date"] = pd.to_datetime(truth["as_of_date"])
    keys = test[["enterprise_id", "as_of_date", "label_default_12m"]].copy()
    keys["as_of_date"] = pd.to_datetime(keys["as_of_date"])
    joined = keys.merge(truth, on=["enterprise_id", "as_of_date"], how="inner")
    if len(joined) != len(keys):
        raise ValueError(f"ground truth covers {len(joined)} of {len(keys)} test rows")
    return metrics.auc(joined["label_default_12m"], joined["true_pd_12m"])


class Trainer:
    """One training run. Steps are methods so tests and benchmarks can reuse them."""

    def __init__(self, cfg: TrainConfig, progress=print):
        self.cfg = cfg
        self.progress = progress
        self.t0 = time.time()

    def log(self, message: str) -> None:
        self.progress(f"[train {time.time() - self.t0:6.1f}s] {message}")

    def train_on(self, frame: pd.DataFrame, split: dict, oracle_feeds: str | None = None
                 ) -> tuple[str, dict]:
        """Labelled snapshots -> a published registry version. `split` names the as-of dates of
        train/valid/test and the training date `as_of`."""
        hp = self.cfg.hparams
        tf.keras.utils.set_random_seed(hp.seed)
        tf.config.experimental.enable_op_determinism()
        reg = registry.Registry(self.cfg.registry)
        staging = reg.staging_dir()
        work = tempfile.mkdtemp(prefix="smescore-tft-")
        try:
            reference = reference_population(frame, split.get("reference"),
                                             self.cfg.min_history_months)
            frame = eligible(frame, self.cfg.min_history_months)
            held_out = holdout_firms(frame["enterprise_id"], self.cfg.holdout_share)
            parts = {name: frame[frame["as_of_date"].isin(split[name]).to_numpy()
                                 & (held_out if name != "train" else ~held_out)].reset_index(drop=True)
                     for name in ("train", "valid", "test")}
            for name, part in parts.items():
                self.log(f"{name}: {len(part):,} firm-dates, default rate "
                         f"{part.label_default_12m.mean():.2%}")
            calibration_part = calibration_firms(frame, split, held_out)

            tft_dir = os.path.join(staging, registry.TRANSFORM_FN)
            preprocessing.analyze_and_transform(to_batches(parts["train"]), tft_dir, work)
            tft_output = tft.TFTransformOutput(tft_dir)
            columns = preprocessing.input_columns(tft_output)
            x = {name: assemble_numpy(tft_output, part, columns) for name, part in parts.items()}
            y = {name: part["label_default_12m"].to_numpy(np.float32) for name, part in parts.items()}
            x["calibration"] = assemble_numpy(tft_output, calibration_part, columns)
            y["calibration"] = calibration_part["label_default_12m"].to_numpy(np.float32)
            self.log(f"TFT analysed on train; model input width {x['train'].shape[1]}")

            signs = network.input_signs(columns, DIRECTIONS)
            model, history = network.fit(x["train"], y["train"], x["valid"], y["valid"], hp,
                                         log_dir=os.path.join(staging, "logs"), signs=signs)
            self.log(f"network trained ({'monotone' if hp.monotone else 'unconstrained'}): "
                     f"{len(history['loss'])} epochs, lowest val loss {min(history['val_loss']):.4f} "
                     f"(the stopping rule), best val AUC {max(history['val_auc']):.4f}")
            cal, self.calibration_sample = fit_calibration(model, x, y, parts["train"], hp, signs,
                                                           self.cfg.calibration_folds)
            sample = self.calibration_sample
            self.log(f"calibration on {sample['firm_dates']:,} firm-dates ({sample['defaults']} "
                     f"defaults; {sample['held_out_firm_dates']:,} held out, "
                     f"{sample['out_of_fold_firm_dates']:,} out of fold): slopes "
                     f"{', '.join(f'{v:.2f}' for v in cal.slopes)}")
            test_pd = cal.pd(network.raw_logit(model, x["test"]))
            test_metrics = metrics.summary(y["test"], test_pd)
            benchmarks = {"challenger_logistic_regression": challenger_metrics(
                              x["train"], y["train"], x["test"], y["test"], hp.seed),
                          "challenger_monotone_gbm": monotone_gbm_metrics(parts, hp.seed)}
            if hp.monotone and self.cfg.benchmark_unconstrained:
                benchmarks["unconstrained_network"] = unconstrained_metrics(
                    x, y, hp, self.cfg.benchmark_seeds)
            for figures, scores in benchmarks.values():
                figures["auc_minus_model"] = metrics.auc_difference(
                    y["test"], test_pd, scores, parts["test"]["enterprise_id"],
                    BENCHMARK_BOOTSTRAP_REPLICATES, hp.seed)
            benchmarks = {name: figures for name, (figures, _) in benchmarks.items()}
            challenger = benchmarks["challenger_logistic_regression"]
            gbm = benchmarks["challenger_monotone_gbm"]
            unconstrained = benchmarks.get("unconstrained_network")
            oracle = oracle_auc(oracle_feeds, parts["test"]) if oracle_feeds else None
            free_auc = "n/a" if unconstrained is None else (
                f"{unconstrained['auc']:.4f} over {len(unconstrained['seeds'])} seeds, "
                f"{unconstrained['auc_min']:.4f}-{unconstrained['auc_max']:.4f}")
            self.log(f"out-of-time test: AUC {test_metrics['auc']:.4f} (logistic regression "
                     f"{challenger['auc']:.4f}, monotone GBM {gbm['auc']:.4f}, unconstrained network "
                     f"{free_auc}, oracle {'n/a' if oracle is None else f'{oracle:.4f}'}), "
                     f"mean PD {test_metrics['mean_pd']:.4f} vs observed {test_metrics['default_rate']:.4f}")

            rng = np.random.default_rng(hp.seed)
            n_bg = min(self.cfg.background_size, len(parts["train"]))
            bg_idx = np.sort(rng.choice(len(parts["train"]), n_bg, replace=False))
            background = parts["train"].iloc[bg_idx].reset_index(drop=True)
            saved_model = os.path.join(staging, registry.SAVED_MODEL)
            export.export(saved_model, tft_output, model, cal, x["train"][bg_idx], columns)
            exported = tf.saved_model.load(saved_model)     # loaded once for the three reads
            check = saved_model_check(exported, parts["test"], test_pd)
            self.log(f"SavedModel exported; max |Δpd| vs the evaluation path {check:.2e}")
            pq.write_table(pa.Table.from_pandas(background, preserve_index=False),
                           os.path.join(staging, registry.BACKGROUND))
            model.save(os.path.join(staging, registry.NETWORK))    # for audits: the bare network

            if not len(reference):
                self.log("no firms at the training date: the drift baseline is the training sample")
                reference = parts["train"]
            drift_baseline = reference_baseline(exported, reference, hp.seed)
            # the same bins over the training sample itself: what the network actually saw
            drift_baseline["training_sample"] = reference_baseline(exported, parts["train"], hp.seed)
            self.log(f"drift baseline: {len(reference):,} model-eligible firms as of "
                     f"{split.get('reference') or 'the training dates'}")
            card = self.model_card(split, parts, hp, cal, test_metrics,
                                   {**benchmarks, "unconstrained_network": unconstrained},
                                   oracle, history, tft_dir, frame, background, drift_baseline, check)
            version = card["version"]
            registry.write_json_atomically(os.path.join(staging, registry.MODEL_CARD), card)
            reg.publish(staging, version)
            if lifecycle.current_champion(reg) is None:        # audited like any promote
                lifecycle.promote(reg, version, why="the first model in the registry")
                self.log(f"{version} is the first model in the registry: champion")
            self.log(f"published {reg.version_dir(version)}")
            return version, card
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def model_card(self, split, parts, hp, cal, test_metrics, benchmarks, oracle, history,
                   tft_dir, frame, background, drift_baseline, check) -> dict:
        data_fp = frame_fingerprint(frame)
        transform_fp = folder_fingerprint(tft_dir)
        hp_dict = dataclasses.asdict(hp)
        design = json.loads(json.dumps({k: v for k, v in dataclasses.asdict(self.cfg).items()
                                        if k not in ("feeds", "registry", "beam_args", "hparams")},
                                       default=str))
        version = f"{split['as_of']:%Y%m%d}-" \
                  f"{fingerprint(data_fp, hp_dict, design, catalog.NAMES)[:10]}"
        scale = ScoreScale()
        return {
            "version": version,
            "model_type": "keras_monotone_mlp_calibrated" if hp.monotone else "keras_mlp_calibrated",
            "monotone_features": {f.name: f.risk_direction for f in catalog.FEATURES
                                  if hp.monotone and f.name in DIRECTIONS},
            "as_of_date": str(split["as_of"]),
            "snapshot_dates": {k: [str(d) for d in split[k]] for k in ("train", "valid", "test")},
            "features": list(catalog.NAMES),
            "min_history_months": self.cfg.min_history_months,
            "fingerprints": {"training_data": data_fp, "transform": transform_fp},
            "rows": {k: int(len(v)) for k, v in parts.items()},
            "rejected_feed_records": split.get("rejected_records"),
            "hyperparameters": hp_dict,
            "design": design,
            "training_history": history,
            "calibration": {"method": "monotone_piecewise_linear_logit", **cal.to_card(),
                            "fitted_on": "held-out firms at the training and validation dates, "
                                         "and the training firms' out-of-fold logits",
                            **self.calibration_sample},
            "metrics": {"test": test_metrics, **benchmarks, "oracle_auc": oracle},
            "oracle_auc": oracle,
            "saved_model_max_abs_pd_diff": check,
            "baseline": drift_baseline,
            "training_distribution": baseline.training_distribution(parts["train"]),
            "shap_background": {"n_firms": int(len(background)), "file": registry.BACKGROUND,
                                "firms": background["enterprise_id"].tolist(),
                                "as_of_dates": sorted({str(d) for d in background["as_of_date"]})},
        }


def to_batches(frame: pd.DataFrame, rows: int = 50_000) -> list[pa.RecordBatch]:
    """Raw feature columns as Arrow RecordBatches (TFXIO's fast path into TFT)."""
    table = pa.Table.from_pandas(frame[list(catalog.NAMES)], preserve_index=False)
    return table.to_batches(max_chunksize=rows)


def assemble_numpy(tft_output: tft.TFTransformOutput, frame: pd.DataFrame, columns) -> np.ndarray:
    transformed = preprocessing.transform_batches(tft_output, to_batches(frame))
    return network.assemble(transformed, columns).numpy()


def evaluation_pd(version_dir: str, frame: pd.DataFrame) -> np.ndarray:
    """The trainer's evaluation path, rebuilt from a registry version: TFT output, the bare
    network, the calibration. The SavedModel must agree with it (it is the same computation in one graph)."""
    tft_output = tft.TFTransformOutput(os.path.join(version_dir, registry.TRANSFORM_FN))
    x = assemble_numpy(tft_output, frame, preprocessing.input_columns(tft_output))
    model = keras.models.load_model(os.path.join(version_dir, registry.NETWORK), compile=False)
    with open(os.path.join(version_dir, registry.MODEL_CARD), encoding="utf-8") as fh:
        cal = json.load(fh)["calibration"]
    return calibration.LogitCalibration.from_card(cal).pd(network.raw_logit(model, x))


def challenger_metrics(x_train, y_train, x_test, y_test, seed) -> tuple[dict, list]:
    """Logistic regression on the same transformed inputs: the benchmark a network must beat.
    (Its card figures, [its test scores].)"""
    lr = LogisticRegression(C=0.1, max_iter=2000, random_state=seed)
    lr.fit(x_train, y_train)
    p = lr.predict_proba(x_test)[:, 1]
    return {"model": "logistic_regression", "auc": metrics.auc(y_test, p), "ks": metrics.ks(y_test, p),
            "mean_pd": float(p.mean())}, [p]


def unconstrained_metrics(x: dict, y: dict, hp: network.HParams, seeds: int = 1) -> tuple[dict, list]:
    """The same network without the monotone constraints, trained the same way and Platt-calibrated
    on the held-out firms (its AUC does not depend on the calibration): what monotonicity costs
    (or gains) in discrimination, reported in the model card. Its figures
    are means over `seeds` trainings (seeds hp.seed, hp.seed + 1, ...), each one kept beside them:
    with a few hundred test defaults, one training's AUC is mostly the luck of its seed.
    (Its card figures, [every training's test scores].)"""
    runs, scores = [], []
    for i in range(seeds):
        free = dataclasses.replace(hp, monotone=False, seed=hp.seed + i)
        model, history = network.fit(x["train"], y["train"], x["valid"], y["valid"], free)
        platt = calibration.fit_platt(network.raw_logit(model, x["calibration"]), y["calibration"])
        p = platt.pd(network.raw_logit(model, x["test"]))
        scores.append(p)
        runs.append({"seed": free.seed, "auc": metrics.auc(y["test"], p), "ks": metrics.ks(y["test"], p),
                     "mean_pd": float(p.mean()), "epochs": len(history["loss"])})
    aucs = [r["auc"] for r in runs]
    return {"model": "unconstrained_mlp", "auc": float(np.mean(aucs)),
            "ks": float(np.mean([r["ks"] for r in runs])),
            "mean_pd": float(np.mean([r["mean_pd"] for r in runs])),
            "auc_min": float(min(aucs)), "auc_max": float(max(aucs)), "seeds": runs}, scores


def gbm_matrix(frame: pd.DataFrame, categories: dict[str, list[str]]) -> pd.DataFrame:
    """Raw features for gradient boosting: numbers as they are (NaN = missing, which the trees
    route on their own), categories as pandas categoricals over the training categories."""
    out = frame[list(catalog.NUMERIC)].astype(np.float64)
    for name in catalog.CATEGORICAL:
        out[name] = pd.Categorical(frame[name].fillna("").astype(str), categories=categories[name])
    return out[list(catalog.NAMES)]


def monotone_gbm_metrics(parts: dict, seed: int) -> tuple[dict, list]:
    """scikit-learn's HistGradientBoostingClassifier with `monotonic_cst` from the declared risk
    directions, on the same raw snapshots and split (early stopping on the validation firms): the
    industry's default choice, which the network must not lose to."""
    categories = {n: sorted(parts["train"][n].fillna("").astype(str).unique()) for n in catalog.CATEGORICAL}
    x = {k: gbm_matrix(v, categories) for k, v in parts.items()}
    # a feature training never saw (e.g. a seasonally adjusted change on a short history) is a
    # constant to the trees: scikit-learn cannot bin an all-missing column
    unseen = [n for n in catalog.NUMERIC if x["train"][n].isna().all()]
    for frame in x.values():
        frame[unseen] = 0.0
    y = {k: v["label_default_12m"].to_numpy(np.float64) for k, v in parts.items()}
    cst = [DIRECTIONS.get(n, 0) for n in catalog.NAMES]
    gbm = HistGradientBoostingClassifier(
        learning_rate=0.05, max_leaf_nodes=15, min_samples_leaf=100, l2_regularization=1.0,
        monotonic_cst=cst, categorical_features="from_dtype", early_stopping=False,
        warm_start=True, random_state=seed)
    # Early stopping on the held-out validation firms (as the network's): grow 50 trees at a
    # time, keep the count with the best validation AUC, stop 150 trees past it.
    best_auc, best_iter = -1.0, 0
    for n_iter in range(50, 1001, 50):
        gbm.set_params(max_iter=n_iter).fit(x["train"], y["train"])
        valid_auc = metrics.auc(y["valid"], gbm.predict_proba(x["valid"])[:, 1])
        if valid_auc > best_auc + 1e-4:
            best_auc, best_iter = valid_auc, n_iter
        elif n_iter >= best_iter + 150:
            break
    gbm.set_params(warm_start=False, max_iter=best_iter).fit(x["train"], y["train"])
    p = gbm.predict_proba(x["test"])[:, 1]
    return {"model": "monotone_hist_gradient_boosting", "auc": metrics.auc(y["test"], p),
            "ks": metrics.ks(y["test"], p), "mean_pd": float(p.mean()), "n_iter": best_iter}, [p]


def saved_model_check(loaded, test: pd.DataFrame, expected_pd: np.ndarray) -> float:
    """Score the test rows through the exported signature alone (`loaded`: the exported
    SavedModel, tf.saved_model.load); the largest |Δpd|."""
    got = loaded.signatures[export.SCORE_SIGNATURE](**export.raw_tensors(test))["pd"].numpy()
    return float(np.max(np.abs(got.astype(np.float64) - expected_pd)))


def reference_population(frame: pd.DataFrame, as_of, min_history: int) -> pd.DataFrame:
    """The firms the model would score on the training date (not in default, enough history)."""
    if as_of is None:
        return frame.iloc[:0]
    keep = (frame["as_of_date"] == as_of) & \
        eligibility.model_eligible(frame["in_default"], frame["months_history"], min_history)
    return frame[keep.to_numpy()].reset_index(drop=True)


def reference_baseline(loaded, reference: pd.DataFrame, seed: int, n: int = 50_000) -> dict:
    """The drift baseline stored with the version, from the exported model itself (`loaded`,
    tf.saved_model.load of it): feature bins, score bins and mean |points| per feature of the
    reference population (a sample of at most n).

    The reference is the portfolio as of the training date rather than the pooled training
    snapshots: those span years in which feed histories were still short (the data window
    starts somewhere), so a book scored today would drift from them on history-length and
    year-on-year features alone."""
    rng = np.random.default_rng(seed + 1)
    idx = np.sort(rng.choice(len(reference), min(n, len(reference)), replace=False))
    sample = reference.iloc[idx].reset_index(drop=True)
    out = loaded.signatures[export.EXPLAIN_SIGNATURE](**export.raw_tensors(sample))
    scale = ScoreScale()
    points = scale.points_from_phi(out["phi"].numpy().astype(np.float64))
    scores = scale.score_from_logit(out["logit"].numpy().astype(np.float64))
    b = baseline.training_baseline(sample, scores, dict(zip(catalog.NAMES, np.abs(points).mean(axis=0))))
    industry = sample["ent_industry"].fillna("").astype(str).to_numpy()
    b["score_by_industry"] = {ind: baseline.score_bins(scores[industry == ind])
                              for ind in sorted(set(industry))}
    b["population"] = {"as_of_dates": sorted({str(d) for d in sample["as_of_date"]}),
                       "n_firms": int(len(sample))}
    return b
