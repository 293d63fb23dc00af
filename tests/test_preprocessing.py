"""The shared TFT graph: hand-computed values on a few rows, then the full catalogue end to end.

Hand computations use values whose present parts are {-a, 0, +a} (or {0, L, 2L}): the mean is the
middle value and the population std is a*sqrt(2/3), so the z-scores are -sqrt(3/2), 0, +sqrt(3/2).
"""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
import tensorflow_transform as tft
from tensorflow_transform.beam import tft_unit

from transforms import catalog, feeds
from transforms import preprocessing as pp

NAN, INF = float("nan"), float("inf")
Z1 = math.sqrt(1.5)          # z of the outer values of {-a, 0, +a}
# __q of three present values a < b < c: the 19 analysed quantiles are a x6, b x7, c x6, so a sits
# at the middle of its run (rank 3 of 19), b at 9.5, c at 16; position 2 * rank / 19 - 1.
Q1 = 2 * 16 / 19 - 1
SUBSET = [catalog.BY_NAME[n] for n in (
    "inv_sales_amt_1m",      # log
    "inv_sales_chg_3m",      # z, pct_change: clipped to [-1, 1]
    "tax_inv_gap_3m",        # signed_log
    "ent_rep_age",           # z, years: not clipped; bucketized below
    "ent_industry",          # vocab
)]


def _batch(rows: list[tuple], features=SUBSET) -> pa.RecordBatch:
    """A flat feature batch, the shape the trainer hands over."""
    cols = list(zip(*rows))
    return pa.RecordBatch.from_arrays(
        [pa.array(c, pa.string() if f.is_categorical else pa.float32())
         for f, c in zip(features, cols)], schema=pp.raw_arrow_schema(features))


def _expected(amt_z, amt_m, chg_z, chg_m, gap_z, gap_m, age_z, age_m, age_b, ind_id,
              q=(0.0, 0.0, 0.0, 0.0)) -> dict:
    amt_q, chg_q, gap_q, age_q = q
    return {"inv_sales_amt_1m__z": amt_z, "inv_sales_amt_1m__missing": amt_m,
            "inv_sales_chg_3m__z": chg_z, "inv_sales_chg_3m__missing": chg_m,
            "tax_inv_gap_3m__z": gap_z, "tax_inv_gap_3m__missing": gap_m,
            "ent_rep_age__z": age_z, "ent_rep_age__missing": age_m, "ent_rep_age__bucket": age_b,
            "ent_industry__id": ind_id, "inv_sales_amt_1m__q": amt_q, "inv_sales_chg_3m__q": chg_q,
            "tax_inv_gap_3m__q": gap_q, "ent_rep_age__q": age_q}


class PreprocessingFnTest(tft_unit.TransformTestCase):
    """TFT's own harness on the RecordBatch path: analyse 4 rows, transform them plus 2 new ones."""

    def test_hand_computed_rows(self):
        # amt: log1p -> {0, L, 2L} with L = ln 4 (0, 3, 15 raw): mean L, std L*sqrt(2/3).
        # chg: -3 -> -1 and 25 -> 1 by the clip, so {-1, 0, 1}: z = -Z1, 0, Z1 (1000 -> 1: Z1).
        # __q reads the raw values (a monotone clip or log changes no rank): -Q1, 0, Q1 for the
        # three present values of each feature, 0 where missing, 1 above the largest, and
        # age 45 halfway between the quantile runs of 40 and 50: rank 13 -> 7/19.
        # gap: signed_log of {-3, 0, 3} -> {-ln4, 0, ln4}.
        # age: {30, 40, 50}; 2 quantile buckets split at the median 40; missing -> bucket 2.
        # industry: C twice, then B and A once (ties: reverse lexicographic) after the reserved
        # missing token: ['__missing__', 'C', 'B', 'A'], OOV = 4.
        train = _batch([
            (0.0, -3.0, -3.0, 30.0, "C"),
            (3.0, NAN, 0.0, 40.0, "A"),
            (NAN, 0.0, 3.0, NAN, "C"),
            (15.0, 25.0, NAN, 50.0, "B"),
        ])
        new = _batch([
            (255.0, 1000.0, NAN, 45.0, "Z"),   # 255 -> log 256 = 4L: z = 3L / (L*sqrt(2/3))
            (INF, NAN, -INF, NAN, ""),         # +-inf count as missing; '' -> reserved id 0
        ])
        expected = [
            _expected(-Z1, 0.0, -Z1, 0.0, -Z1, 0.0, -Z1, 0.0, 0, 1, q=(-Q1, -Q1, -Q1, -Q1)),
            _expected(0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1, 3),
            _expected(0.0, 1.0, 0.0, 0.0, Z1, 0.0, 0.0, 1.0, 2, 1, q=(0.0, 0.0, Q1, 0.0)),
            _expected(Z1, 0.0, Z1, 0.0, 0.0, 1.0, Z1, 0.0, 1, 2, q=(Q1, Q1, 0.0, Q1)),
            _expected(3 / math.sqrt(2 / 3), 0.0, Z1, 0.0, 0.0, 1.0, Z1 / 2, 0.0, 1, 4,
                      q=(1.0, 1.0, 0.0, 2 * 13 / 19 - 1)),
            _expected(0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 2, 0),
        ]
        self.assertAnalyzeAndTransformResults(
            [pp.to_tfxio_batch(train, SUBSET)],
            pp.raw_tensor_adapter_config(SUBSET),
            pp.make_preprocessing_fn(SUBSET, bucketized={"ent_rep_age": 2}),
            expected_data=expected,
            test_data=[pp.to_tfxio_batch(train, SUBSET), pp.to_tfxio_batch(new, SUBSET)],
            expected_vocab_file_contents={
                "vocab_ent_industry": [b"__missing__", b"C", b"B", b"A"]})

    @pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # TFT's 0/0
    def test_no_usable_variance_gives_zero(self):
        # Training saw no hc_last at all and only one tax_late_3m value: later values must not
        # come out as unscaled numbers the network never saw.
        feats = [catalog.BY_NAME["hc_last"], catalog.BY_NAME["tax_late_3m"]]
        train = _batch([(NAN, 2.0), (NAN, 2.0), (NAN, 2.0)], feats)
        new = _batch([(5.0, 3.0), (NAN, NAN)], feats)
        self.assertAnalyzeAndTransformResults(
            [pp.to_tfxio_batch(train, feats)], pp.raw_tensor_adapter_config(feats),
            pp.make_preprocessing_fn(feats),
            expected_data=[
                # no spread in training: __q stays 0 like __z (its weights never learned anything)
                {"hc_last__z": 0.0, "hc_last__missing": 0.0, "hc_last__q": 0.0,
                 "tax_late_3m__z": 0.0, "tax_late_3m__missing": 0.0, "tax_late_3m__q": 0.0},
                {"hc_last__z": 0.0, "hc_last__missing": 1.0, "hc_last__q": 0.0,
                 "tax_late_3m__z": 0.0, "tax_late_3m__missing": 1.0, "tax_late_3m__q": 0.0}],
            test_data=[pp.to_tfxio_batch(new, feats)])


# ---------- the full catalogue, end to end on the RecordBatch path ----------
N_TRAIN = 200
N_NEW = 40
LEVELS = {"ent_industry": feeds.INDUSTRY_SECTIONS[:5], "ent_province": feeds.PROVINCES[:5],
          "ent_legal_form": feeds.LEGAL_FORMS}


def _random_batch(n: int, rng: np.random.Generator, unseen_category: bool = False
                  ) -> pa.RecordBatch:
    """Plausible raw rows: heavy tails for 'log' features, ~15% missing, a few +-inf and nulls."""
    arrays = []
    for f in catalog.FEATURES:
        if f.is_categorical:
            levels = LEVELS[f.name]
            values = list(rng.choice(levels, n))
            values[0], values[1] = "", None            # missing both ways
            if unseen_category:
                values[2] = "never_seen"
            arrays.append(pa.array(values, pa.string()))
            continue
        if f.transform == "log":
            x = rng.lognormal(8.0, 2.0, n)
        elif f.kind == "pct_change":
            x = rng.normal(0.0, 0.5, n)
            x[rng.random(n) < 0.03] = 500.0             # producer that does not cap
        elif f.name == "ent_rep_age":
            x = rng.integers(22, 75, n).astype(float)
        else:
            x = rng.normal(3.0, 2.0, n)
        x[rng.random(n) < 0.15] = np.nan
        x[3] = np.inf
        arrays.append(pa.array(x.astype(np.float32)))
    return pa.RecordBatch.from_arrays(arrays, schema=pp.raw_arrow_schema())


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    rng = np.random.default_rng(7)
    train = [_random_batch(120, rng), _random_batch(N_TRAIN - 120, rng)]
    root = tmp_path_factory.mktemp("tft")
    out = pp.analyze_and_transform(train, str(root / "transform"), str(root / "tmp"))
    return {"train": train, "out": out, "dir": str(root / "transform"),
            "new": _random_batch(N_NEW, rng, unseen_category=True)}


def _raw(batches: list[pa.RecordBatch], name: str) -> np.ndarray:
    return np.concatenate([b.column(name).to_numpy(zero_copy_only=False) for b in batches])


def test_train_outputs_complete_and_finite(analysed):
    out = analysed["out"]
    assert list(out) == pp.TRANSFORMED_COLUMNS
    for col, values in out.items():
        assert values.shape == (N_TRAIN,), col
        assert np.isfinite(values).all(), col
        assert values.dtype == (np.int64 if col.endswith(("__id", "__bucket")) else np.float32), col


def test_train_z_is_standardised_over_present_values(analysed):
    out, train = analysed["out"], analysed["train"]
    for name in catalog.NUMERIC:
        present = np.isfinite(_raw(train, name))
        z, missing = out[f"{name}__z"], out[f"{name}__missing"]
        np.testing.assert_array_equal(missing, (~present).astype(np.float32), err_msg=name)
        assert (z[~present] == 0.0).all(), name
        assert z[present].mean() == pytest.approx(0.0, abs=1e-5), name
        assert z[present].std() == pytest.approx(1.0, abs=1e-4), name


def test_pct_change_outliers_are_clipped(analysed):
    z = analysed["out"]["inv_sales_chg_3m__z"]
    raw = _raw(analysed["train"], "inv_sales_chg_3m")
    # every 500 (= +50000%) is treated as +1000%, so all of them share one z
    assert np.unique(z[raw == 500.0]).size == 1


def test_quantile_position_never_decreases_with_the_value(analysed):
    """__q is in [-1, 1], 0 where missing, and orders firms as their raw values do (what the
    monotone network relies on), on train rows and on new ones."""
    new_out = pp.transform_batches(analysed["dir"], analysed["new"])
    for batches, out in ((analysed["train"], analysed["out"]), ([analysed["new"]], new_out)):
        for name in catalog.NUMERIC:
            raw, q = _raw(batches, name).astype(np.float64), out[f"{name}__q"]
            present = np.isfinite(raw)
            assert (np.abs(q) <= 1.0).all() and (q[~present] == 0.0).all(), name
            order = np.argsort(raw[present], kind="stable")
            assert (np.diff(q[present][order]) >= -1e-6).all(), name
    spread = analysed["out"]["inv_sales_amt_1m__q"]
    assert spread.min() < -0.8 and spread.max() > 0.8     # spread out, not squashed like z


def test_transform_batches_reproduces_train_rows_in_order(analysed):
    again = pp.transform_batches(analysed["dir"], analysed["train"])
    for col in pp.TRANSFORMED_COLUMNS:
        np.testing.assert_allclose(again[col], analysed["out"][col], atol=1e-5, err_msg=col)


def test_transform_batches_on_new_rows(analysed):
    new = analysed["new"]
    out = pp.transform_batches(analysed["dir"], new)
    tft_output = tft.TFTransformOutput(analysed["dir"])
    assert set(out) == set(pp.TRANSFORMED_COLUMNS)
    for col, values in out.items():
        assert values.shape == (N_NEW,) and np.isfinite(values).all(), col
    oov = tft_output.vocabulary_size_by_name("vocab_ent_industry")
    assert out["ent_industry__id"][2] == oov                 # unseen category -> the OOV id
    assert out["ent_industry__id"][0] == out["ent_industry__id"][1] == 0   # '' and null
    for name, n in pp.BUCKETIZED.items():
        raw = new.column(name).to_numpy(zero_copy_only=False)
        buckets = out[f"{name}__bucket"]
        assert ((buckets == n) == ~np.isfinite(raw)).all(), name
        assert buckets.min() >= 0 and buckets.max() <= n, name


def test_input_columns_follow_the_catalogue(analysed):
    tft_output = tft.TFTransformOutput(analysed["dir"])
    cols = pp.input_columns(tft_output)
    assert [c for c, _, _ in cols] == pp.TRANSFORMED_COLUMNS
    assert [c for c, _, _ in cols[:4]] == [
        "inv_sales_amt_1m__z", "inv_sales_amt_1m__q", "inv_sales_amt_1m__missing",
        "inv_sales_amt_3m__z"]
    depth = {c: d for c, _, d in cols}
    for name in catalog.CATEGORICAL:    # levels seen + reserved missing token + OOV
        assert depth[f"{name}__id"] == len(LEVELS[name]) + 1 + 1, name
    for name, n in pp.BUCKETIZED.items():
        assert depth[f"{name}__bucket"] == n + 1, name
    assert all(d == 1 for c, _, d in cols if c.endswith(("__z", "__q", "__missing")))
    assert {f for _, f, _ in cols} == set(catalog.NAMES)


# ---------- pure functions ----------
def test_names_and_contract_constants():
    assert pp.transformed_name("hc_last", "z") == "hc_last__z"
    assert pp.business_feature("ent_age_years__bucket") == "ent_age_years"
    with pytest.raises(ValueError, match="suffix"):
        pp.transformed_name("hc_last", "scaled")
    assert len(pp.TRANSFORMED_NUMERIC) == 3 * len(catalog.NUMERIC)
    assert all(not catalog.BY_NAME[n].is_categorical for n in pp.BUCKETIZED)
    assert set(pp.raw_feature_spec()) == set(catalog.NAMES)


def test_to_tfxio_batch_normalises_nulls_and_validates():
    feats = [catalog.BY_NAME["hc_last"], catalog.BY_NAME["ent_industry"]]
    flat = pa.RecordBatch.from_pydict({"hc_last": pa.array([1.0, None], pa.float64()),
                                       "ent_industry": pa.array(["C", None]),
                                       "enterprise_id": pa.array(["E1", "E2"])})
    out = pp.to_tfxio_batch(flat, feats)
    assert out.schema == pp.tfxio_arrow_schema(feats)          # extra column dropped
    hc = out.column("hc_last").flatten().to_numpy()
    assert hc[0] == 1.0 and np.isnan(hc[1])
    assert out.column("ent_industry").flatten().to_pylist() == [b"C", b""]
    with pytest.raises(ValueError, match="lacks feature columns"):
        pp.to_tfxio_batch(flat.drop_columns(["hc_last"]), feats)
    with pytest.raises(ValueError, match="must be numeric"):
        pp.to_tfxio_batch(flat.set_column(0, "hc_last", pa.array(["x", "y"])), feats)
