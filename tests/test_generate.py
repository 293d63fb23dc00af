"""The synthetic feed generator: contract, determinism, and the numbers that make it a credible
SME book (default rate, oracle AUC, cold start, related parties, seasonality, DPD ramps)."""
from __future__ import annotations

import datetime as dt
import filecmp
import os

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from synth.generate import generate
from transforms import feeds
from synth.truth import DRIVER_FAMILY, GROUND_TRUTH_DIR, GROUND_TRUTH_SCHEMA

END = dt.date(2026, 10, 31)
FIRMS, MONTHS, SEED = 3000, 24, 7


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    """One generated book, read back: summary, progress lines, ground truth and every feed."""
    out = str(tmp_path_factory.mktemp("book"))
    messages = []
    summary = generate(out, firms=FIRMS, months=MONTHS, end_date=END, seed=SEED,
                       progress=messages.append)
    frames = {f: pq.read_table(os.path.join(out, f)).to_pandas() for f in feeds.FEEDS}
    truth = pq.read_table(os.path.join(out, GROUND_TRUTH_DIR)).to_pandas()
    return {"out": out, "summary": summary, "progress": messages, "truth": truth, **frames}


def _as_month(dates):
    return pd.to_datetime(pd.Series(np.asarray(dates))).dt.to_period("M")


def test_every_feed_has_exactly_the_contract_schema(book):
    for name, feed in feeds.FEEDS.items():
        schema = pq.read_schema(os.path.join(book["out"], name, "part-00000.parquet"))
        assert schema.equals(feed.schema, check_metadata=True), name
    truth = pq.read_schema(os.path.join(book["out"], GROUND_TRUTH_DIR, "ground_truth.parquet"))
    assert truth.equals(GROUND_TRUTH_SCHEMA, check_metadata=True)


def test_rerun_writes_byte_identical_files(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    sa = generate(a, firms=300, months=24, end_date=END, seed=3)
    sb = generate(b, firms=300, months=24, end_date=END, seed=3)
    files = sorted(os.path.relpath(os.path.join(d, f), a) for d, _, fs in os.walk(a) for f in fs)
    assert len(files) == 7
    match, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert (mismatch, errors) == ([], [])
    assert {k: v for k, v in sa.items() if k not in ("out_dir", "elapsed_s")} == \
        {k: v for k, v in sb.items() if k not in ("out_dir", "elapsed_s")}
    other = generate(str(tmp_path / "c"), firms=300, months=24, end_date=END, seed=4)
    assert other["rows"] != sa["rows"]


def test_summary_counts_rows_and_reports_progress(book):
    s = book["summary"]
    assert s["rows"] == {**{f: len(book[f]) for f in feeds.FEEDS}, "ground_truth": len(book["truth"])}
    assert any(m.startswith("invoices: ") and m.endswith(" rows") for m in book["progress"])
    assert s["elapsed_s"] > 0


def _labels_from_feeds(book):
    """(as-of date, firm, label, true PD) rows as the trainer builds them: D from end-24 to end-12
    months, firms established by D and not in default at D, label = 90+ DPD in D+1..D+12."""
    loans, truth = book["loans"], book["truth"]
    ln_month = _as_month(loans["report_month"])
    default = loans[loans["days_past_due"] >= feeds.DEFAULT_DPD]
    first_default = default.groupby("enterprise_id")["report_month"].min()
    first_default = _as_month(first_default).set_axis(first_default.index)
    end = pd.Period(END, "M")
    rows = []
    for k in range(12, 25):
        d = end - k
        if d < ln_month.min():
            continue
        t = truth[_as_month(truth["as_of_date"]).to_numpy() == d]
        fd = t["enterprise_id"].map(first_default)
        performing = ~(fd <= d).fillna(False).to_numpy(bool)
        label = ((fd > d) & (fd <= d + 12)).fillna(False).to_numpy(bool)
        rows.append(pd.DataFrame({"d": str(d), "firm": t["enterprise_id"].to_numpy(),
                                  "label": label, "pd": t["true_pd_12m"].to_numpy(),
                                  "driver": t["dominant_driver"].to_numpy()})[performing])
    return pd.concat(rows, ignore_index=True)


def test_default_rate_and_oracle_auc_are_realistic(book):
    s = book["summary"]
    assert 0.02 <= s["default_rate_12m"] <= 0.05
    assert 0.78 <= s["oracle_auc"] <= 0.90
    rows = _labels_from_feeds(book)
    assert len(rows) == s["oracle_rows"]
    assert rows["label"].mean() == pytest.approx(s["default_rate_12m"], abs=1e-12)
    assert roc_auc_score(rows["label"], rows["pd"]) == pytest.approx(s["oracle_auc"], abs=1e-12)


def test_defaults_are_mostly_explained_by_named_drivers(book):
    rows = _labels_from_feeds(book)
    positives = rows[rows["label"]]
    assert positives["driver"].notna().mean() >= 0.80
    assert book["summary"]["defaults_with_driver"] >= 0.80
    assert set(rows["driver"].dropna()) <= set(DRIVER_FAMILY)
    # firms with an active driver default several times as often as those without
    with_driver = rows["driver"].notna()
    assert rows.loc[with_driver, "label"].mean() > 3 * rows.loc[~with_driver, "label"].mean()


def test_ground_truth_covers_every_firm_at_every_month_end_after_it_opened(book):
    truth, ent = book["truth"], book["enterprises"]
    month_ends = pd.period_range(end=pd.Period(END, "M"), periods=MONTHS, freq="M")
    month_ends = month_ends.to_timestamp(how="end").normalize()
    est = pd.to_datetime(ent["established_date"]).to_numpy()
    expected = int((est[:, None] <= month_ends.to_numpy()[None, :]).sum())
    assert len(truth) == expected
    assert not truth.duplicated(["enterprise_id", "as_of_date"]).any()
    assert truth["true_pd_12m"].between(0, 1).all()
    assert set(truth["dominant_driver"].dropna()) == set(DRIVER_FAMILY)
    # a borrower in arrears at D has a sealed default: the truth says so
    dpd = book["loans"].groupby(["enterprise_id", "report_month"])["days_past_due"].max().reset_index()
    late = truth.merge(dpd, left_on=["enterprise_id", "as_of_date"],
                       right_on=["enterprise_id", "report_month"])
    assert (late.loc[late["days_past_due"] > 0, "true_pd_12m"] == 1.0).all()


def test_dpd_ramps_30_60_90_then_stays_in_default(book):
    loans = book["loans"].sort_values(["loan_id", "report_month"])
    assert (pd.to_datetime(loans["report_month"]).dt.is_month_end).all()
    assert (loans["origination_date"] <= loans["report_month"]).all()
    dpd = loans.groupby("loan_id")["days_past_due"]
    first = loans["days_past_due"].gt(0) & dpd.shift().fillna(0).eq(0)
    assert (loans.loc[first, "days_past_due"] == 30).all()        # no DPD before the ramp starts
    steps = (loans["days_past_due"] - dpd.shift()).where(dpd.shift() > 0)
    assert steps.dropna().eq(30).all()                            # 30 -> 60 -> 90 -> 120 ..., never cured
    defaulted = loans[loans["days_past_due"] >= 90]["enterprise_id"].nunique()
    assert 0.03 * FIRMS <= defaulted <= 0.15 * FIRMS
    # both loans of a borrower fall behind in the same month
    start = loans[first].groupby("enterprise_id")["report_month"].nunique()
    assert (start == 1).all()


def test_loans_every_firm_borrows_some_twice(book):
    per_firm = book["loans"].groupby("enterprise_id")["loan_id"].nunique()
    assert len(per_firm) == FIRMS
    assert 0.08 <= (per_firm == 2).mean() <= 0.25 and per_firm.max() == 2


def test_cold_start_firms_have_under_six_months_of_history(book):
    ent, inv, tax = book["enterprises"], book["invoices"], book["tax_filings"]
    est = pd.to_datetime(ent["established_date"])
    recent = est > pd.Timestamp(END) - pd.DateOffset(months=6)
    assert 0.07 <= recent.mean() <= 0.11
    firsts = pd.concat([inv.groupby("enterprise_id")["invoice_date"].min(),
                        tax.groupby("enterprise_id")["period_month"].min()]).groupby(level=0).min()
    end = pd.Period(END, "M")
    history = pd.Series([(end - m).n + 1 for m in _as_month(firsts)], index=firsts.index)
    is_recent = history.index.isin(ent.loc[recent, "enterprise_id"])
    assert history[is_recent].max() < 6
    assert (history[~is_recent] >= 6).mean() > 0.95
    # nothing is recorded before a firm exists
    inv_est = inv["enterprise_id"].map(ent.set_index("enterprise_id")["established_date"])
    assert (inv["invoice_date"] >= inv_est).all()


def test_related_parties_share_a_controller(book):
    sizes = book["enterprises"]["controller_id"].value_counts()
    grouped = sizes[sizes > 1]
    assert 0.15 <= grouped.sum() / FIRMS <= 0.20
    assert grouped.min() == 2 and grouped.max() == 5


def test_firms_span_orders_of_magnitude_and_realistic_industries(book):
    ent, inv = book["enterprises"], book["invoices"]
    mix = ent["industry"].value_counts(normalize=True)
    assert list(mix.index[:2]) == ["F", "C"] and mix["F"] > 0.25
    assert {"E", "H"} <= set(mix.index[:6]) and not {"S", "T"} & set(mix.index)
    sales = inv[(inv["direction"] == "sales") & (inv["status"] == "normal")]
    annual = sales.groupby("enterprise_id")["amount"].sum() * 12 / MONTHS
    assert annual.quantile(0.95) / annual.quantile(0.05) > 100
    assert ent["registered_capital"].quantile(0.95) / ent["registered_capital"].quantile(0.05) > 50
    rep_age = ent["legal_rep_age"]
    assert rep_age.dropna().between(18, 80).all() and rep_age.isna().mean() < 0.05


def test_invoice_volume_and_heavy_tail(book):
    inv = book["invoices"]
    per_firm_month = len(inv) / book["summary"]["rows"]["ground_truth"]
    assert 5 <= per_firm_month <= 10
    counts = inv["enterprise_id"].value_counts()
    assert counts.head(FIRMS // 100).sum() / len(inv) > 0.04      # the top 1% of firms
    assert counts.head(FIRMS // 10).sum() / len(inv) > 0.25       # the top 10%
    assert set(inv["direction"]) == {"sales", "purchase"}
    assert inv["invoice_id"].is_unique and inv["amount"].gt(0).all()


def test_void_and_red_letter_invoices_are_a_few_percent(book):
    inv = book["invoices"]
    share = inv["status"].value_counts(normalize=True)
    assert 0.01 <= share["void"] <= 0.04
    assert 0.005 <= share["red_letter"] <= 0.03
    # a red-letter invoice reverses an earlier normal one: same firm, counterparty and amount
    key = ["enterprise_id", "counterparty_id", "amount", "direction"]
    red = inv[inv["status"] == "red_letter"].merge(inv[inv["status"] == "normal"], on=key,
                                                   suffixes=("", "_orig"))
    assert red["invoice_id"].nunique() == (inv["status"] == "red_letter").sum()
    assert (red.groupby("invoice_id").apply(
        lambda g: (g["invoice_date_orig"] < g["invoice_date"]).any(), include_groups=False)).all()


def test_spring_festival_dip_in_invoices_and_electricity(book):
    """February (the Spring Festival shutdown) is below January and March, on average."""
    inv, bills = book["invoices"], book["utility_bills"]
    sales = inv[(inv["direction"] == "sales") & (inv["status"] == "normal")]
    by_month = sales.groupby(_as_month(sales["invoice_date"]).to_numpy())["amount"].sum()
    kwh = bills.groupby(_as_month(bills["period_month"]).to_numpy())["kwh"].sum()
    for series in (by_month, kwh):
        febs = [p for p in series.index if p.month == 2]
        assert febs
        assert np.mean([series[f] / series[f - 1] for f in febs]) < 0.9
        assert np.mean([series[f] / series[f + 1] for f in febs]) < 0.9


def test_tax_filings_late_and_missing(book):
    tax, ent = book["tax_filings"], book["enterprises"]
    due = pd.to_datetime(tax["period_month"]) + pd.DateOffset(months=1, days=14)
    assert (tax["filed_late"] == (pd.to_datetime(tax["filed_date"]) > due)).all()
    assert 0.03 <= tax["filed_late"].mean() <= 0.15
    assert (pd.to_datetime(tax["filed_date"]) <= pd.Timestamp(END)).all()
    # missing returns: firm-months (before the last, not yet due) without a filing
    est = _as_month(ent.set_index("enterprise_id")["established_date"])
    end = pd.Period(END, "M")
    due_periods = sum(max(0, (end - 1 - max(m, end - MONTHS + 1)).n + 1) for m in est)
    assert 0.01 <= 1 - len(tax) / due_periods <= 0.10
    assert tax["si_headcount"].ge(0).all() and tax["vat_paid"].le(tax["taxable_sales"]).all()


def test_registry_events_carry_signed_amounts(book):
    ev = book["registry_events"]
    assert set(ev["event_type"]) == set(feeds.REGISTRY_EVENT_TYPES)
    cap = ev.loc[ev["event_type"] == "capital_change", "amount"]
    assert (cap > 0).any() and (cap < 0).any()
    assert ev.loc[ev["event_type"].isin(["admin_penalty", "litigation"]), "amount"].gt(0).all()
    assert ev.loc[ev["event_type"].isin(["legal_rep_change", "address_change"]), "amount"].isna().all()
    assert ev["event_id"].is_unique and (pd.to_datetime(ev["event_date"]) <= pd.Timestamp(END)).all()


def test_sales_collapse_shows_in_invoiced_sales(book):
    """Where sales_collapse dominates, the last 3 months' invoiced sales are far below the same
    3 months a year before (the trace a point-in-time model sees)."""
    inv, truth = book["invoices"], book["truth"]
    sales = inv[(inv["direction"] == "sales") & (inv["status"] == "normal")]
    m = sales.assign(m=_as_month(sales["invoice_date"]).to_numpy()).groupby(
        ["enterprise_id", "m"])["amount"].sum().unstack(fill_value=0.0)
    end = pd.Period(END, "M")
    d = end - 6
    cols = lambda first: [first - k for k in range(3)]                      # noqa: E731
    recent = m.reindex(columns=cols(d), fill_value=0).sum(axis=1)
    year_ago = m.reindex(columns=cols(d - 12), fill_value=0).sum(axis=1)
    change = recent / year_ago.where(year_ago > 0) - 1
    t = truth[_as_month(truth["as_of_date"]).to_numpy() == d].set_index("enterprise_id")
    collapse = change.reindex(t.index[t["dominant_driver"] == "sales_collapse"]).dropna()
    healthy = change.reindex(t.index[t["dominant_driver"].isna()]).dropna()
    assert len(collapse) >= 20
    assert collapse.median() <= -0.35 and healthy.median() > -0.1


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="month-end"):
        generate(str(tmp_path), firms=10, months=12, end_date=dt.date(2026, 10, 30), seed=1)
    with pytest.raises(ValueError, match="firms"):
        generate(str(tmp_path), firms=0, months=12, end_date=END, seed=1)


def test_invoice_shift_thins_one_industry_in_the_last_months_only(book, tmp_path):
    from synth.generate import InvoiceShift
    out = str(tmp_path / "shifted")
    summary = generate(out, firms=FIRMS, months=MONTHS, end_date=END, seed=SEED,
                       shift=InvoiceShift("F", drop=0.30, months=2))
    assert summary["shift"] == {"industry": "F", "drop": 0.30, "months": 2}
    for feed in feeds.FEEDS:                       # every other feed is byte for byte the same
        if feed != "invoices":
            assert filecmp.cmp(os.path.join(book["out"], feed, "part-00000.parquet"),
                               os.path.join(out, feed, "part-00000.parquet"), shallow=False), feed
    before, after = book["invoices"], pq.read_table(os.path.join(out, "invoices")).to_pandas()
    assert set(after.invoice_id) <= set(before.invoice_id)      # rows are removed, none changed
    retail = set(book["enterprises"].loc[book["enterprises"].industry == "F", "enterprise_id"])
    last2 = _as_month(before.invoice_date) >= pd.Period(END, "M") - 1
    gone = before[~before.invoice_id.isin(after.invoice_id)]
    assert gone.enterprise_id.isin(retail).all()
    assert (_as_month(gone.invoice_date) >= pd.Period(END, "M") - 1).all()
    hit = before[last2 & before.enterprise_id.isin(retail)]
    assert len(gone) / len(hit) == pytest.approx(0.30, abs=0.01)


def test_invoice_shift_arguments_are_checked():
    from synth.generate import InvoiceShift
    with pytest.raises(ValueError, match="industry must be one of"):
        InvoiceShift("Z")
    with pytest.raises(ValueError, match=r"drop must lie in \(0, 1\]"):
        InvoiceShift("C", drop=1.5)
