"""Feature windows pinned on hand-made records (tests/handmade.py) whose answers are known."""
import datetime as dt

import numpy as np
import pytest

from tests import handmade
from transforms import catalog, pit


@pytest.fixture(scope="module")
def rows():
    frames = pit.FirmFrames.from_tables(handmade.tables())
    out = pit.compute_features(frames, handmade.D, outcome_end=dt.date(2027, 6, 30))
    return out.to_pandas().set_index("enterprise_id")


def test_one_row_per_firm_established_by_the_as_of_date(rows):
    assert list(rows.index) == ["E1", "E2", "E4"]          # E3 is established after D
    assert set(catalog.NAMES) <= set(rows.columns)


def test_invoice_windows(rows):
    e1 = rows.loc["E1"]
    assert e1.inv_sales_amt_1m == 6_000            # the July invoice is after D: ignored
    assert e1.inv_sales_amt_3m == 18_000
    assert e1.inv_sales_amt_6m == 48_000
    assert e1.inv_sales_amt_12m == 108_000
    assert e1.inv_sales_cnt_3m == 3                # the void invoice is not a sale
    assert e1.inv_sales_chg_3m == pytest.approx(-0.4, abs=1e-6)
    assert e1.inv_sales_chg_6m == pytest.approx(48 / 60 - 1, abs=1e-6)
    assert np.isnan(e1.inv_sales_yoy_3m)           # nothing invoiced a year before
    assert e1.inv_sales_chg_1m == pytest.approx(6_000 / (22_000 / 3) - 1, abs=1e-6)
    assert e1.inv_top1_share_12m == pytest.approx(102 / 108, abs=1e-6)
    assert e1.inv_hhi_12m == pytest.approx((102 / 108) ** 2 + (6 / 108) ** 2, abs=1e-6)
    assert e1.inv_n_customers_12m == 2
    assert e1.inv_new_cust_share_3m == pytest.approx(1 / 3, abs=1e-6)
    assert e1.inv_void_ratio_3m == pytest.approx(0.25)
    assert e1.inv_void_ratio_12m == pytest.approx(1 / 13, abs=1e-6)
    assert e1.inv_purch_amt_1m == 4_000
    assert e1.inv_purch_sales_ratio_3m == pytest.approx(4_000 / 18_000, abs=1e-6)
    assert e1.inv_months_no_sales_12m == 0


def test_tax_windows_use_returns_filed_by_the_as_of_date(rows):
    e1 = rows.loc["E1"]
    assert e1.tax_sales_1m == 10_000               # period 2026-05; June's return comes in July
    assert e1.tax_sales_12m == 120_000
    assert e1.tax_late_3m == 0 and e1.tax_late_6m == 1
    assert e1.tax_months_since_late == 4           # period 2026-02, four periods back
    assert e1.tax_missing_12m == 0
    assert e1.hc_last == 8
    assert e1.hc_chg_3m == pytest.approx(-0.2, abs=1e-6)
    assert np.isnan(e1.hc_chg_12m)                 # no return for period 2025-05
    assert e1.tax_inv_gap_3m == pytest.approx(30_000 / 22_000, abs=1e-6)
    assert e1.tax_vat_rate_12m == pytest.approx(0.03, abs=1e-6)


def test_power_and_registry_windows(rows):
    e1 = rows.loc["E1"]
    assert e1.pwr_kwh_1m == 700
    assert e1.pwr_yoy_1m == pytest.approx(-0.3, abs=1e-6)
    assert e1.pwr_overdue_max_3m == 12 and e1.pwr_overdue_cnt_12m == 1
    assert e1.reg_rep_chg_12m == 1 and e1.reg_rep_chg_36m == 2
    assert e1.reg_litig_3m == 1 and e1.reg_litig_amt_12m == 50_000
    assert e1.reg_litig_12m == 1 and e1.reg_litig_36m == 2
    assert e1.reg_months_since_event == 0


def test_related_parties_history_default_and_labels(rows):
    e1, e2, e4 = rows.loc["E1"], rows.loc["E2"], rows.loc["E4"]
    assert e1.rel_n_related == 1 and e1.rel_arrears_firms_12m == 1 and e1.rel_max_dpd_12m == 30
    assert e2.rel_arrears_firms_12m == 0           # a firm is not its own relative
    assert e2.hist_months == 3 and e2.months_history == 3
    assert np.isnan(e2.ent_rep_age)                # unknown stays missing: imputation is TFT's
    assert e1.label_default_12m == 1.0 and e2.label_default_12m == 0.0
    assert bool(e4.in_default) and np.isnan(e4.label_default_12m)


def test_own_loan_arrears(rows):
    e1, e2, e4 = rows.loc["E1"], rows.loc["E2"], rows.loc["E4"]
    assert e1.loan_dpd_now == 0 and e1.loan_max_dpd_12m == 0     # the 90 DPD comes after D
    assert e2.loan_dpd_now == 30 and e2.loan_arrears_months_12m == 1
    assert e4.loan_dpd_now == 95 and e4.loan_arrears_months_12m == 4   # March..June 2026


def test_no_label_when_the_outcome_window_is_not_observed():
    frames = pit.FirmFrames.from_tables(handmade.tables())
    out = pit.compute_features(frames, handmade.D, outcome_end=dt.date(2027, 3, 31))
    assert out.column("label_default_12m").null_count == out.num_rows > 0


def test_a_mid_month_date_uses_the_previous_complete_month():
    assert pit.reference_month(dt.date(2026, 6, 30)) == pit.reference_month(dt.date(2026, 7, 15))
    frames = pit.FirmFrames.from_tables(handmade.tables())
    mid = pit.compute_features(frames, dt.date(2026, 7, 15)).to_pandas().set_index("enterprise_id")
    assert mid.loc["E1", "inv_sales_amt_1m"] == 6_000   # July is not complete yet


def test_small_groups_sum_their_customers_to_the_last_bit(monkeypatch):
    """pit's customer concentration for a small group (plain loops, pandas' compensated sums)
    against its pandas group-by, bit for bit: 12 firms, 3,000 invoices with amounts over nine
    orders of magnitude, repeat customers, a missing counterparty, a firm with no sales."""
    rng = np.random.default_rng(3)
    m, n = 3000, 12
    cp = rng.choice(np.array([f"C{i}" for i in range(40)] + [None], object), m)
    row = rng.integers(0, n - 1, m)                   # firm n-1 has no invoice at all
    k = rng.integers(0, 15, m)                        # months back: 12..14 fall outside
    sale = rng.random(m) < 0.7
    amt = np.exp(rng.uniform(-3, 18, m))
    amt[rng.random(m) < 0.02] = 0.0
    small = pit._counterparty_features(cp, row, k, sale, ~sale, amt, n)
    monkeypatch.setattr(pit, "SMALL_GROUP", 0)
    grouped = pit._counterparty_features(cp, row, k, sale, ~sale, amt, n)
    assert set(small) == set(grouped)
    for name in grouped:
        np.testing.assert_array_equal(small[name], grouped[name], err_msg=name)
    assert grouped["inv_n_customers_12m"][n - 1] == 0 and np.isnan(grouped["inv_hhi_12m"][n - 1])
    assert 0 < np.nanmin(grouped["inv_top1_share_12m"]) < 1


def test_small_groups_find_their_relatives_with_the_same_numbers(monkeypatch):
    """pit's path for a small group (the service's one firm) against its pandas merge: 60 firms in
    uneven controller groups (one firm alone, ties of the worst DPD, a missing controller)."""
    rng = np.random.default_rng(5)
    n = 60
    ctrl = rng.choice(["C1", "C2", "C3", "C4", "C5", None], n, p=[.3, .3, .2, .1, .05, .05])
    ctrl[0] = "ALONE"
    own = {"arrears": rng.integers(0, 2, n).astype(np.float64),
           "max_dpd": rng.choice([0.0, 30.0, 95.0, 120.0], n),
           "default": rng.integers(0, 2, n).astype(np.float64),
           "late": rng.integers(0, 4, n).astype(np.float64),
           "filings": rng.integers(0, 13, n).astype(np.float64),
           "litig": rng.integers(0, 3, n).astype(np.float64)}
    small = pit._related_features(ctrl, own)
    monkeypatch.setattr(pit, "SMALL_GROUP", 0)
    merged = pit._related_features(ctrl, own)
    assert set(small) == set(merged)
    for name in merged:
        np.testing.assert_array_equal(small[name], merged[name], err_msg=name)
    assert small["rel_n_related"][0] == 0 and np.isnan(small["rel_late_tax_share_12m"][0])
    assert small["rel_n_related"].max() > 10
    monkeypatch.setattr(pit, "SMALL_GROUP", 64)
    empty = pit._related_features(ctrl[:0], {k: v[:0] for k, v in own.items()})
    assert set(empty) == set(merged) and all(len(v) == 0 for v in empty.values())
