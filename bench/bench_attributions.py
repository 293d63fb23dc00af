"""Throughput of in-graph DeepLIFT attributions against shap.DeepExplainer, measured in one run.

    TF_USE_LEGACY_KERAS=1 python -m bench.bench_attributions [--rows 300 --background 100 --inputs 350]
        [--features 98]

Builds the production-shaped net (the monotone n -> 64 -> 32 -> 16 -> 1 of models.network, deployed
as its plain 72 -> 36 -> 18 ReLU stack) trained for a few steps on random data, calibrated with a
two-knot piecewise-linear map of the logit (a 4-unit ReLU layer and a read-out, as deployed), then
times shap.DeepExplainer and
models.explain.DeepLiftExplainer on the same rows (both warmed up first, so graph tracing is not
counted; best of a few repeats, since neighbours share this machine's cores), prints their max abs
difference and the throughput ratio, and then times the explainer alone on a nightly-sized batch
for each chunk size and jit setting asked for: attributions per column, and summed per business
feature in-graph as the exported SavedModel computes them (`groups`).
"""

from __future__ import annotations

import argparse
import time

from smescore import runtime

runtime.tf_environment()      # before TensorFlow loads (smescore/runtime.py)

import numpy as np  # noqa: E402
import shap  # noqa: E402
import tf_keras as keras  # noqa: E402

from models import network  # noqa: E402
from models.calibration import LogitCalibration  # noqa: E402
from models.explain import DEFAULT_CHUNK_ROWS, DeepLiftExplainer, dense_stack, fold_calibration  # noqa: E402

# the deployed shape: two knots (models/calibration.py)
CALIBRATION = LogitCalibration(-1.3, (0.8, 0.5, 1.1), (-0.5, 1.0))


def build_model(n_inputs: int, seed: int) -> tuple[keras.Model, np.ndarray]:
    """The production network (monotone 64-32-16 with convex, concave and saturated units, as
    models.network builds it; a third of the inputs free, the rest signed) trained a few steps on
    random rows, in the plain Dense/ReLU form that is exported; returns it and the rows."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(4000, n_inputs)).astype(np.float32)
    y = (x[:, :5].sum(1) + rng.normal(size=len(x)) > 2.0).astype(np.float32)
    signs = rng.choice([-1.0, 0.0, 1.0], size=n_inputs).astype(np.float32)
    hp = network.HParams(max_epochs=2, patience=2, seed=seed)
    model, _ = network.fit(x[:3000], y[:3000], x[3000:], y[3000:], hp, signs=signs)
    return model, x


def calibrated(model: keras.Model, calibration) -> keras.Model:
    """The model with its raw logit mapped through the calibration's own Dense layers, appended
    unfolded (models/calibration.py `dense_layers`): what shap is asked to explain."""
    out = model.output
    for i, (kernel, bias, activation) in enumerate(calibration.dense_layers()):
        layer = keras.layers.Dense(kernel.shape[1], activation=activation, name=f"calibration_{i}")
        out = layer(out)
        layer.set_weights([np.asarray(kernel, np.float32), np.asarray(bias, np.float32)])
    return keras.Model(model.inputs, out)


def rows_per_second(fn, rows: np.ndarray, repeats: int = 1) -> tuple[float, object]:
    """Best-of-`repeats` rows/s of fn(rows), and fn's last result."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn(rows)
        best = min(best, time.perf_counter() - start)
    return len(rows) / best, result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=300, help="rows explained by both explainers")
    parser.add_argument("--background", type=int, default=100, help="background rows K")
    parser.add_argument("--inputs", type=int, default=350, help="transformed input width n")
    parser.add_argument("--features", type=int, default=98,
                        help="business features the columns sum into (the exported explainer's "
                             "groups); 0: columns only")
    parser.add_argument("--big-rows", type=int, default=20_000, help="rows for the explainer-only run")
    parser.add_argument("--chunks", type=int, nargs="+", default=[DEFAULT_CHUNK_ROWS], help="chunk_rows to try")
    parser.add_argument("--jit", choices=["off", "on", "both"], default="both",
                        help="XLA-compile each chunk (the explainer's default is on)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    model, train = build_model(args.inputs, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    background = train[rng.choice(len(train), args.background, replace=False)]
    rows = rng.normal(size=(args.rows, args.inputs)).astype(np.float32)
    big = rng.normal(size=(args.big_rows, args.inputs)).astype(np.float32)
    layers = fold_calibration(dense_stack(model), CALIBRATION)

    reference = shap.DeepExplainer(calibrated(model, CALIBRATION), background)
    reference.shap_values(rows[:2])
    shap_rate, shap_phi = rows_per_second(lambda r: reference.shap_values(r)[..., 0], rows, repeats=3)
    widths = "-".join(str(kernel.shape[1]) for kernel, _, _ in layers)
    print(f"net {args.inputs}-{widths} (monotone 64-32-16, deployed plain, calibration's 4 units), "
          f"background {args.background}")
    print(f"shap.DeepExplainer      {args.rows:>6} rows: {shap_rate:10.0f} rows/s")

    jit_settings = {"off": [False], "on": [True], "both": [False, True]}[args.jit]
    for jit in jit_settings:
        for chunk in args.chunks:
            explainer = DeepLiftExplainer(layers, background, chunk_rows=chunk, jit_compile=jit)
            report_explainer(explainer, rows, big, shap_rate, shap_phi)
            if args.features:
                groups = feature_groups(args.inputs, args.features)
                explainer = DeepLiftExplainer(layers, background, chunk_rows=chunk, jit_compile=jit,
                                              groups=groups)
                report_explainer(explainer, rows, big, shap_rate, shap_phi @ groups.astype(np.float64))


def feature_groups(n_inputs: int, n_features: int) -> np.ndarray:
    """[n, F] 0/1 matrix: consecutive columns summed into F features, as the scoring model's
    z-score, missing-flag and one-hot columns sum into its business features."""
    groups = np.zeros((n_inputs, n_features), np.float32)
    groups[np.arange(n_inputs), np.arange(n_inputs) * n_features // n_inputs] = 1.0
    return groups


def report_explainer(explainer: DeepLiftExplainer, rows: np.ndarray, big: np.ndarray,
                     shap_rate: float, shap_phi: np.ndarray) -> None:
    """Print the explainer's rows/s on both batches, its ratio to shap's and its max abs difference."""
    def explain(batch: np.ndarray) -> np.ndarray:
        return explainer(batch)[1].numpy()

    explain(rows)  # trace (and XLA-compile) outside the timing
    rate, phi = rows_per_second(explain, rows, repeats=5)
    big_rate, _ = rows_per_second(explain, big, repeats=3)
    one = one_row_ms(explain, rows[:1])
    grouped = f"{explainer.output_width} features" if explainer.groups is not None else "columns"
    print(f"DeepLiftExplainer chunk={explainer.chunk_rows:<5} jit={explainer.jit_compile!s:<5} "
          f"{grouped:<11}: "
          f"{len(rows)} rows {rate:9.0f} rows/s ({rate / shap_rate:5.1f}x shap), "
          f"max|diff| {np.abs(phi - shap_phi).max():.2e}; "
          f"{len(big)} rows {big_rate:9.0f} rows/s ({big_rate / shap_rate:5.1f}x shap); "
          f"one row {one:.2f} ms (p50)")


def one_row_ms(explain, row: np.ndarray, calls: int = 200) -> float:
    """Median wall time of explaining a single row: what one firm scored on demand pays."""
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        explain(row)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))

if __name__ == "__main__":
    main()
