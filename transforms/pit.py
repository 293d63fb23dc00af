"""Point-in-time features for a group of firms as of a date: the one implementation.

Training snapshots (many as-of dates) and the nightly job (one date) both call `compute_features`,
so the two can never disagree. It is vectorised over firms: records become dense firm × month
matrices (`MonthlyPanel`), and every windowed feature is a slice of them. Beam hands it one shard of
firms at a time (all firms of a controller group in the same shard, so related-party features see
their relatives); see transforms/beam_features.py.

Only records known on or before the as-of date D are used: invoices and registry events by their
date, tax returns by their filing date, electricity bills by their bill date, loan snapshots by
their report month. See transforms/catalog.py for the window conventions.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from transforms import catalog, feeds
from transforms.records import Records

LOOKBACK = 24  # months kept in the panels: 12-month windows plus their year-ago comparison
# Changes against a base window: the months of history (months_history, uncapped) the base needs,
# counted back from the reference month (tax and power panels end one period earlier). With less,
# the base is partly before the firm's first record - before the feeds began, for most firms - and
# the change would read the start of data collection as growth (a training snapshot 13 months
# into the feeds compared 3 months of power with 1): the change is missing instead.
BASE_WINDOW_MONTHS = {
    "inv_sales_chg_1m": 4, "inv_sales_chg_3m": 6, "inv_sales_chg_6m": 12, "inv_sales_yoy_3m": 15,
    "inv_purch_chg_3m": 6, "tax_sales_chg_3m": 7, "tax_sales_yoy_3m": 16,
    "hc_chg_3m": 5, "hc_chg_6m": 8, "hc_chg_12m": 14,
    "pwr_yoy_1m": 14, "pwr_yoy_3m": 16, "pwr_chg_3m": 7,
}


@contextlib.contextmanager
def _all_nan_is_nan():
    """nanmean/nanmax of an empty window is NaN (a missing feature), which is what we want."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


FEATURE_SCHEMA = pa.schema(
    [pa.field("enterprise_id", pa.string(), nullable=False),
     pa.field("as_of_date", pa.date32(), nullable=False)]
    + [pa.field(f.name, pa.string() if f.is_categorical else pa.float32()) for f in catalog.FEATURES]
    + [pa.field("in_default", pa.bool_()), pa.field("months_history", pa.int32()),
       pa.field("label_default_12m", pa.float32())])


@dataclasses.dataclass
class FirmFrames:
    """Validated feed records of one group of firms, one `Records` per feed; the enterprises
    sorted by enterprise_id (the order of the feature rows), every record knowing its firm's
    place among them (`Records.firms`)."""
    enterprises: Records
    tax_filings: Records
    invoices: Records
    utility_bills: Records
    registry_events: Records
    loans: Records

    @classmethod
    def from_tables(cls, tables: dict) -> "FirmFrames":
        """Arrow tables with the contract's columns (a missing feed: no records)."""
        def table(name):
            t = tables.get(name)
            return feeds.FEEDS[name].schema.empty_table() if t is None else t
        ent = table("enterprises")
        ent = ent.take(pc.sort_indices(ent, [("enterprise_id", "ascending")]))
        ids = ent.column("enterprise_id").combine_chunks()
        return cls(**{name: Records(ent if name == "enterprises" else table(name), ids)
                      for name in feeds.FEEDS})


def month_index(dates) -> np.ndarray:
    """Months since 1970-01 for an array of dates (datetime64)."""
    return np.asarray(dates, dtype="datetime64[D]").astype("datetime64[M]").astype(np.int64)


def reference_month(as_of: dt.date) -> int:
    """The last complete month on or before D: D's month if D is a month-end, else the one before."""
    m = int(month_index(np.array([as_of], dtype="datetime64[D]"))[0])
    is_month_end = (as_of + dt.timedelta(days=1)).month != as_of.month
    return m if is_month_end else m - 1


class MonthlyPanel:
    """Dense [n_firms, LOOKBACK] matrices; column k is k months before the panel's newest month.
    Its rows are the group's firms (FirmFrames order) where `in_panel` holds."""

    def __init__(self, in_panel: np.ndarray):
        self.n = int(np.count_nonzero(in_panel))
        # The row of each firm of the group, -1 outside the panel, and one -1 more at the end:
        # a record of a firm the group lacks (Records.firms -1) reads it.
        self._row_of_firm = np.full(len(in_panel) + 1, -1, np.int64)
        self._row_of_firm[:-1][in_panel] = np.arange(self.n)

    def rows(self, records: Records) -> np.ndarray:
        """The panel row of each record's firm, -1 where it has none."""
        return self._row_of_firm[records.firms()]

    def locate(self, records: Records, month, newest_month: int):
        """(row, k) of each record inside the panel, and the mask of records that fall inside it."""
        row = self.rows(records)
        k = newest_month - np.asarray(month, dtype=np.int64)
        inside = (row >= 0) & (k >= 0) & (k < LOOKBACK)
        return row[inside], k[inside], inside

    def sum(self, row, k, weights=None) -> np.ndarray:
        flat = np.bincount(row * LOOKBACK + k, weights=weights, minlength=self.n * LOOKBACK)
        return flat.reshape(self.n, LOOKBACK).astype(np.float64)

    def max(self, row, k, values, empty=np.nan) -> np.ndarray:
        out = np.full(self.n * LOOKBACK, -np.inf)
        np.maximum.at(out, row * LOOKBACK + k, np.asarray(values, dtype=np.float64))
        out[np.isneginf(out)] = empty
        return out.reshape(self.n, LOOKBACK)


# ---------- small numeric helpers (NaN where undefined, never inf) ----------
def _div(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    out = np.full(np.broadcast(a, b).shape, np.nan)
    ok = np.isfinite(a) & np.isfinite(b) & (b > 0)
    np.divide(a, b, out=out, where=ok)
    return out


CHANGE_CAP = 10.0      # +1000%: one tiny base cannot dominate


def _change(new, base):
    """Relative change new/base - 1, capped at +1000% so one tiny base cannot dominate."""
    return np.minimum(_div(new, base) - 1.0, CHANGE_CAP)


def _win(m, w, start=0):
    return m[:, start:start + w].sum(axis=1)


def _cv(m):
    mean = m.mean(axis=1)
    return _div(m.std(axis=1), mean)


def _log_slope(m, valid=None):
    """Least-squares slope of log1p(monthly values) per month, oldest to newest; NaN if < 3 points."""
    y = np.log1p(np.maximum(m, 0.0))
    valid = np.ones_like(y, dtype=bool) if valid is None else valid
    t = -np.arange(m.shape[1], dtype=np.float64)[None, :]          # k months ago -> time -k
    n = valid.sum(axis=1)
    w = valid.astype(np.float64)
    tm = _div((t * w).sum(1), n)[:, None]
    ym = _div((y * w).sum(1), n)[:, None]
    cov = ((t - tm) * (y - ym) * w).sum(1)
    var = (((t - tm) ** 2) * w).sum(1)
    out = _div(cov, var)
    out[n < 3] = np.nan
    return out


def _masked_sum(m, mask, w):
    """Window sum over months that have a record; NaN when the window has none."""
    s = _win(np.where(mask, m, 0.0), w)
    return np.where(mask[:, :w].any(axis=1), s, np.nan)


# ---------- feature families ----------
def _invoice_features(fr, panel, ref, as_of, hist):
    inv = fr.invoices.known("invoice_date", as_of)
    row, k, inside = panel.locate(inv, month_index(inv.dates("invoice_date")), ref)
    inv = inv.where(inside)
    sales = inv.equals("direction", "sales")
    normal = inv.equals("status", "normal")
    red = inv.equals("status", "red_letter")
    void = inv.equals("status", "void")
    amt = inv.numbers("amount")

    def panel_sum(mask, weights=None):
        return panel.sum(row[mask], k[mask], None if weights is None else weights[mask])

    s_amt = np.maximum(panel_sum(sales & normal, amt) - panel_sum(sales & red, amt), 0.0)
    s_cnt = panel_sum(sales & normal)
    p_amt = np.maximum(panel_sum(~sales & normal, amt) - panel_sum(~sales & red, amt), 0.0)
    s_all = panel_sum(sales)
    s_void = panel_sum(sales & void)
    s_red_amt, s_norm_amt = panel_sum(sales & red, amt), panel_sum(sales & normal, amt)
    any_inv = panel_sum(np.ones(len(row), bool)) > 0

    f = {}
    for w in (1, 3, 6, 12):
        f[f"inv_sales_amt_{w}m"] = _win(s_amt, w)
        f[f"inv_sales_cnt_{w}m"] = _win(s_cnt, w)
        f[f"inv_purch_amt_{w}m"] = _win(p_amt, w)
    f["inv_sales_chg_1m"] = _change(s_amt[:, 0], _win(s_amt, 3, 1) / 3.0)
    f["inv_sales_chg_3m"] = _change(_win(s_amt, 3), _win(s_amt, 3, 3))
    f["inv_sales_chg_6m"] = _change(_win(s_amt, 6), _win(s_amt, 6, 6))
    f["inv_sales_yoy_3m"] = _change(_win(s_amt, 3), _win(s_amt, 3, 12))
    f["inv_sales_vol_12m"] = _cv(s_amt[:, :12])
    in_hist = np.arange(LOOKBACK)[None, :] < hist[:, None]
    f["inv_sales_slope_12m"] = _log_slope(s_amt[:, :12], in_hist[:, :12])
    f["inv_months_no_sales_12m"] = ((s_cnt[:, :12] == 0) & in_hist[:, :12]).sum(1).astype(np.float64)
    f["inv_avg_ticket_3m"] = _div(_win(s_amt, 3), _win(s_cnt, 3))
    f["inv_purch_chg_3m"] = _change(_win(p_amt, 3), _win(p_amt, 3, 3))
    f["inv_purch_sales_ratio_3m"] = _div(_win(p_amt, 3), _win(s_amt, 3))
    f["inv_void_ratio_3m"] = _div(_win(s_void, 3), _win(s_all, 3))
    f["inv_void_ratio_12m"] = _div(_win(s_void, 12), _win(s_all, 12))
    f["inv_red_ratio_3m"] = _div(_win(s_red_amt, 3), _win(s_norm_amt, 3))
    f["inv_red_ratio_12m"] = _div(_win(s_red_amt, 12), _win(s_norm_amt, 12))
    f["hist_inv_months_12m"] = any_inv[:, :12].sum(1).astype(np.float64)
    f.update(_counterparty_features(inv.texts("counterparty_id"), row, k, sales & normal,
                                    ~sales & normal, amt, panel.n))
    return f, s_amt


def _counterparty_features(cp, row, k, sale, purchase, amt, n):
    """Customer concentration over 12 months and the share of sales to new customers (`cp`:
    each invoice's counterparty)."""
    last12 = k < 12
    if n <= SMALL_GROUP and (sale & last12).sum() <= SMALL_GROUP_INVOICES:
        return _counterparty_features_small(cp, row, k, sale & last12, purchase & last12, amt, n)
    df = pd.DataFrame({"row": row[sale & last12], "cp": cp[sale & last12],
                       "amt": amt[sale & last12], "recent": k[sale & last12] < 3})
    df["recent_amt"] = np.where(df["recent"], df["amt"], 0.0)
    df["older_n"] = (~df["recent"]).astype(np.int64)
    by_cp = df.groupby(["row", "cp"], sort=False).agg(
        amt=("amt", "sum"), recent_amt=("recent_amt", "sum"), older_n=("older_n", "sum")
    ).reset_index()
    by_cp["is_new"] = by_cp["older_n"].to_numpy() == 0
    total = by_cp.groupby("row")["amt"].transform("sum").to_numpy()
    share = _div(by_cp["amt"].to_numpy(), total)
    by_cp["share"], by_cp["share2"] = share, share ** 2
    by_cp["new_recent"] = np.where(by_cp["is_new"], by_cp["recent_amt"], 0.0)
    g = by_cp.groupby("row").agg(top1=("share", "max"), hhi=("share2", "sum"), n=("cp", "size"),
                                 recent=("recent_amt", "sum"), new_recent=("new_recent", "sum"))
    out = {name: np.full(n, np.nan) for name in ("inv_top1_share_12m", "inv_hhi_12m",
                                                  "inv_new_cust_share_3m")}
    out["inv_n_customers_12m"] = np.zeros(n)
    idx = g.index.to_numpy()
    out["inv_top1_share_12m"][idx] = g["top1"].to_numpy()
    out["inv_hhi_12m"][idx] = g["hhi"].to_numpy()
    out["inv_n_customers_12m"][idx] = g["n"].to_numpy(np.float64)
    out["inv_new_cust_share_3m"][idx] = _div(g["new_recent"].to_numpy(), g["recent"].to_numpy())
    sup = pd.Series(cp[purchase & last12]).groupby(row[purchase & last12]).nunique()
    out["inv_n_suppliers_12m"] = np.zeros(n)
    out["inv_n_suppliers_12m"][sup.index.to_numpy()] = sup.to_numpy(np.float64)
    return out


# A group of at most this many firms (a controller group: the scoring service's one firm on demand)
# finds its relatives and its customers without pandas' merge and group-by, whose fixed cost was
# over half of a small group's features (relatives ~1/3, customers ~10 ms a firm). The float sums
# of amounts follow pandas' own group sum to the last bit: rows in order, Kahan-compensated
# (_GroupSums). tests/test_features.py compares both paths.
SMALL_GROUP = 64
SMALL_GROUP_INVOICES = 5_000      # sales invoices of 12 months; a longer Python loop loses to pandas


class _GroupSums:
    """pandas' group sum (pandas/_libs/groupby.pyx group_sum), one value at a time: NaN skipped,
    each group's sum Kahan-compensated in the order its values arrive. Equal to
    DataFrame.groupby(...).agg('sum') bit for bit, for groups filled in row order."""

    def __init__(self):
        self.sums, self.compensation = [], []

    def new_group(self) -> None:
        self.sums.append(0.0)
        self.compensation.append(0.0)

    def add(self, group: int, value: float) -> None:
        if value != value:
            return
        y = value - self.compensation[group]
        t = self.sums[group] + y
        c = t - self.sums[group] - y
        self.compensation[group] = 0.0 if c != c else c    # an infinite value: pandas resets it
        self.sums[group] = t


def _counterparty_features_small(cp, row, k, sale, purchase, amt, n):
    """_counterparty_features of a small group with Python dicts and _GroupSums: the same
    customers in the same order (first appearance), the same sums to the last bit."""
    pairs, pair_row, older = {}, [], []
    amount, recent = _GroupSums(), _GroupSums()
    for r, c, a, is_recent in zip(row[sale].tolist(), cp[sale].tolist(), amt[sale].tolist(),
                                  (k[sale] < 3).tolist()):
        if c is None or c != c:             # a group-by drops a missing key
            continue
        i = pairs.get((r, c))
        if i is None:
            i = pairs[(r, c)] = len(pair_row)
            pair_row.append(r)
            older.append(0)
            amount.new_group()
            recent.new_group()
        amount.add(i, a)
        recent.add(i, a if is_recent else 0.0)
        older[i] += not is_recent
    pair_row = np.asarray(pair_row, np.int64)
    pair_amt = np.asarray(amount.sums, np.float64)
    pair_recent = np.asarray(recent.sums, np.float64)
    firm_total, firm_recent, firm_new, firm_hhi = (_GroupSums() for _ in range(4))
    rows = sorted(set(pair_row.tolist()))
    slot = {r: j for j, r in enumerate(rows)}
    for sums in (firm_total, firm_recent, firm_new, firm_hhi):
        for _ in rows:
            sums.new_group()
    for r, a in zip(pair_row.tolist(), pair_amt.tolist()):
        firm_total.add(slot[r], a)
    total = np.asarray(firm_total.sums)[[slot[r] for r in pair_row.tolist()]] if len(pair_row) else pair_amt
    share = _div(pair_amt, total)
    share2 = share ** 2
    new_recent = np.where(np.asarray(older) == 0, pair_recent, 0.0)
    top1 = [np.nan] * len(rows)
    for r, sh, sh2, rec, new in zip(pair_row.tolist(), share.tolist(), share2.tolist(),
                                    pair_recent.tolist(), new_recent.tolist()):
        j = slot[r]
        firm_hhi.add(j, sh2)
        firm_recent.add(j, rec)
        firm_new.add(j, new)
        if sh == sh and not top1[j] >= sh:   # a max that skips NaN, as pandas' does
            top1[j] = sh
    out = {name: np.full(n, np.nan) for name in ("inv_top1_share_12m", "inv_hhi_12m",
                                                  "inv_new_cust_share_3m")}
    out["inv_n_customers_12m"] = np.zeros(n)
    idx = np.asarray(rows, np.int64)
    if len(idx):
        out["inv_top1_share_12m"][idx] = top1
        out["inv_hhi_12m"][idx] = firm_hhi.sums
        out["inv_n_customers_12m"][idx] = np.bincount(pair_row, minlength=n)[idx].astype(np.float64)
        out["inv_new_cust_share_3m"][idx] = _div(firm_new.sums, firm_recent.sums)
    suppliers = [set() for _ in range(n)]
    for r, c in zip(row[purchase].tolist(), cp[purchase].tolist()):
        if c is not None and c == c:
            suppliers[r].add(c)
    out["inv_n_suppliers_12m"] = np.array([len(s) for s in suppliers], np.float64)
    return out


def _expected_periods(est_month, newest):
    """Periods on or after the establishment month: only those can be 'missing'."""
    k = np.arange(LOOKBACK)[None, :]
    return (newest - k) >= est_month[:, None]


def _tax_features(fr, panel, ref, as_of, est_month, s_amt):
    tax = fr.tax_filings.known("filed_date", as_of)
    newest = ref - 1   # the return filed in the reference month is for the month before
    row, k, inside = panel.locate(tax, month_index(tax.dates("period_month")), newest)
    tax = tax.where(inside)
    filed = panel.sum(row, k) > 0
    ts = panel.sum(row, k, tax.numbers("taxable_sales"))
    vat = panel.sum(row, k, tax.numbers("vat_paid"))
    late = panel.sum(row, k, tax.numbers("filed_late"))
    hc = np.where(filed, panel.sum(row, k, tax.numbers("si_headcount")), np.nan)
    expected = _expected_periods(est_month, newest)

    f = {}
    for w in (1, 3, 6, 12):
        f[f"tax_sales_{w}m"] = _masked_sum(ts, filed, w)
    f["tax_sales_chg_3m"] = _change(_win(ts, 3), _win(ts, 3, 3))
    f["tax_sales_yoy_3m"] = _change(_win(ts, 3), _win(ts, 3, 12))
    f["tax_vat_3m"] = _masked_sum(vat, filed, 3)
    f["tax_vat_12m"] = _masked_sum(vat, filed, 12)
    f["tax_vat_rate_12m"] = _div(f["tax_vat_12m"], f["tax_sales_12m"])
    for w in (3, 6, 12):
        f[f"tax_late_{w}m"] = _win(late, w)
    for w in (3, 12):
        f[f"tax_missing_{w}m"] = _win((expected & ~filed).astype(np.float64), w)
    # 12 periods, not the panel's 24: training snapshots start with 12 months of feeds behind them
    any_late = late[:, :12] > 0
    f["tax_months_since_late"] = np.where(any_late.any(1), any_late.argmax(1) + 1.0, np.nan)
    # Tax periods ref-1..ref-3 are invoice months k=1..3.
    f["tax_inv_gap_3m"] = _div(_masked_sum(ts, filed, 3), _win(s_amt, 3, 1))
    hc_last = hc[:, 0].copy()
    for j in (1, 2):
        hc_last = np.where(np.isnan(hc_last), hc[:, j], hc_last)
    f["hc_last"] = hc_last
    with _all_nan_is_nan():
        f["hc_avg_12m"] = np.where(filed[:, :12].any(1), np.nanmean(hc[:, :12], axis=1), np.nan)
        hc_3 = np.nanmean(hc[:, :3], axis=1)
    f["hc_chg_3m"] = _change(hc[:, 0], hc[:, 3])
    f["hc_chg_6m"] = _change(hc[:, 0], hc[:, 6])
    f["hc_chg_12m"] = _change(hc[:, 0], hc[:, 12])
    f["hc_sales_per_head_3m"] = _div(f["tax_sales_3m"], hc_3)
    return f, (row, k, tax.numbers("filed_late") != 0), hc_3


def _power_features(fr, panel, ref, as_of, est_month, hc_3):
    ub = fr.utility_bills.known("bill_date", as_of)
    newest = ref - 1   # bills for a month are issued early in the next
    row, k, inside = panel.locate(ub, month_index(ub.dates("period_month")), newest)
    ub = ub.where(inside)
    billed = panel.sum(row, k) > 0
    kwh = panel.sum(row, k, ub.numbers("kwh"))
    bill = panel.sum(row, k, ub.numbers("amount"))
    overdue = panel.max(row, k, ub.numbers("days_overdue"))
    expected = _expected_periods(est_month, newest)

    f = {}
    for w in (1, 3, 6, 12):
        f[f"pwr_kwh_{w}m"] = _masked_sum(kwh, billed, w)
    both = billed[:, 0] & billed[:, 12]
    f["pwr_yoy_1m"] = np.where(both, _change(kwh[:, 0], kwh[:, 12]), np.nan)
    f["pwr_yoy_3m"] = _change(_masked_sum(kwh, billed, 3), _masked_sum(kwh[:, 12:], billed[:, 12:], 3))
    f["pwr_chg_3m"] = _change(_masked_sum(kwh, billed, 3), _masked_sum(kwh[:, 3:], billed[:, 3:], 3))
    kwh12 = np.where(billed[:, :12], kwh[:, :12], np.nan)
    with _all_nan_is_nan():
        f["pwr_vol_12m"] = _div(np.nanstd(kwh12, axis=1), np.nanmean(kwh12, axis=1))
    f["pwr_slope_12m"] = _log_slope(kwh[:, :12], billed[:, :12])
    f["pwr_bill_3m"] = _masked_sum(bill, billed, 3)
    f["pwr_bill_12m"] = _masked_sum(bill, billed, 12)
    with _all_nan_is_nan():
        f["pwr_overdue_max_3m"] = np.nanmax(np.where(billed[:, :3], overdue[:, :3], np.nan), axis=1)
        f["pwr_overdue_max_12m"] = np.nanmax(np.where(billed[:, :12], overdue[:, :12], np.nan), axis=1)
    f["pwr_overdue_cnt_12m"] = (billed[:, :12] & (overdue[:, :12] > 0)).sum(1).astype(np.float64)
    f["pwr_missing_12m"] = _win((expected & ~billed).astype(np.float64), 12)
    f["pwr_kwh_per_head_3m"] = _div(f["pwr_kwh_3m"], hc_3)
    return f, billed


def _registry_features(fr, panel, as_of):
    ev = fr.registry_events.known("event_date", as_of)
    now = int(month_index(np.array([as_of], dtype="datetime64[D]"))[0])   # D's own month counts
    row = panel.rows(ev)
    k = now - month_index(ev.dates("event_date"))
    inside = (row >= 0) & (k >= 0) & (k < 36)            # registry windows reach back 36 months
    row, k, ev = row[inside], k[inside], ev.where(inside)
    amount = ev.numbers("amount")

    def count(kind, w):
        m = ev.equals("event_type", kind) & (k < w)
        return np.bincount(row[m], minlength=panel.n).astype(np.float64)

    def total(kind, w, values):
        m = ev.equals("event_type", kind) & (k < w) & np.isfinite(values)
        return np.bincount(row[m], weights=values[m], minlength=panel.n)

    f = {
        "reg_rep_chg_12m": count("legal_rep_change", 12),
        "reg_rep_chg_36m": count("legal_rep_change", 36),
        "reg_addr_chg_12m": count("address_change", 12),
        "reg_cap_chg_12m": count("capital_change", 12),
        "reg_cap_cut_12m": total("capital_change", 12, np.maximum(-amount, 0.0)),
        "reg_penalty_12m": count("admin_penalty", 12),
        "reg_penalty_36m": count("admin_penalty", 36),
        "reg_litig_3m": count("litigation", 3),
        "reg_litig_12m": count("litigation", 12),
        "reg_litig_36m": count("litigation", 36),
        "reg_litig_amt_12m": total("litigation", 12, amount),
    }
    latest = np.full(panel.n, np.inf)
    np.minimum.at(latest, row, k.astype(np.float64))
    f["reg_months_since_event"] = np.where(np.isfinite(latest), latest, np.nan)
    return f


def _loan_status(fr, panel, as_of):
    """Own arrears: DPD at the latest month-end, the worst and the count of past-due month-ends over
    12 months, and whether the firm is already in default at D."""
    ln = fr.loans.known("report_month", as_of)
    now = int(month_index(np.array([as_of], dtype="datetime64[D]"))[0])
    row = panel.rows(ln)
    k = now - month_index(ln.dates("report_month"))
    dpd = ln.numbers("days_past_due")
    ok = row >= 0
    last12 = ok & (k < 12)
    max_dpd_12m = np.zeros(panel.n)
    np.maximum.at(max_dpd_12m, row[last12], dpd[last12])
    latest = np.full(panel.n, np.iinfo(np.int64).max)
    np.minimum.at(latest, row[ok], k[ok])
    dpd_now = np.zeros(panel.n)
    at_latest = ok & (k == latest[np.where(ok, row, 0)])
    np.maximum.at(dpd_now, row[at_latest], dpd[at_latest])
    months_in_arrears = panel.sum(row[last12 & (dpd > 0)], k[last12 & (dpd > 0)]).astype(bool)
    ever_default = np.zeros(panel.n, bool)
    m = ok & (dpd >= feeds.DEFAULT_DPD)
    ever_default[row[m]] = True
    has_loan = latest < np.iinfo(np.int64).max
    own = {"loan_dpd_now": np.where(has_loan, dpd_now, np.nan),
           "loan_max_dpd_12m": np.where(has_loan, max_dpd_12m, np.nan),
           "loan_arrears_months_12m": np.where(has_loan, months_in_arrears[:, :12].sum(1), np.nan)}
    return max_dpd_12m, ever_default, own


def _related_features(ctrl, own):
    """Relatives = other firms with the same controller (`ctrl`: each firm's); sums and maxima
    exclude the firm itself."""
    if len(ctrl) <= SMALL_GROUP:
        return _related_features_small(ctrl, own)
    df = pd.DataFrame({"row": np.arange(len(ctrl)), "ctrl": ctrl, **own})
    pairs = df[["row", "ctrl"]].merge(df, on="ctrl", suffixes=("", "_rel"))
    pairs = pairs[pairs["row"] != pairs["row_rel"]]
    g = pairs.groupby("row").agg(
        n=("row_rel", "size"), arrears=("arrears", "sum"), max_dpd=("max_dpd", "max"),
        defaults=("default", "sum"), late=("late", "sum"), filings=("filings", "sum"),
        litig=("litig", "sum"))
    n = len(ctrl)
    f = {name: np.zeros(n) for name in ("rel_n_related", "rel_arrears_firms_12m", "rel_max_dpd_12m",
                                        "rel_default_firms_12m", "rel_litig_12m")}
    f["rel_late_tax_share_12m"] = np.full(n, np.nan)
    idx = g.index.to_numpy()
    f["rel_n_related"][idx] = g["n"]
    f["rel_arrears_firms_12m"][idx] = g["arrears"]
    f["rel_max_dpd_12m"][idx] = g["max_dpd"]
    f["rel_default_firms_12m"][idx] = g["defaults"]
    f["rel_litig_12m"][idx] = g["litig"]
    f["rel_late_tax_share_12m"][idx] = _div(g["late"].to_numpy(), g["filings"].to_numpy())
    return f


def _related_features_small(ctrl, own):
    """_related_features of a small group without pandas' merge: every `own` value is a whole
    number (counts, flags, days), so its sums are exact in any order; the same numbers."""
    codes = pd.factorize(ctrl, use_na_sentinel=False)[0]    # merge joins missing keys too
    n = len(ctrl)
    same = (codes[:, None] == codes[None, :]) & ~np.eye(n, dtype=bool)
    n_rel = same.sum(1)
    has = n_rel > 0

    def total(name):
        return np.where(same, own[name][None, :], 0.0).sum(1)
    f = {"rel_n_related": n_rel.astype(np.float64),
         "rel_arrears_firms_12m": np.where(has, total("arrears"), 0.0),
         "rel_max_dpd_12m": np.where(has, np.where(same, own["max_dpd"][None, :], -np.inf).max(1, initial=-np.inf),
                                     0.0),
         "rel_default_firms_12m": np.where(has, total("default"), 0.0),
         "rel_litig_12m": np.where(has, total("litig"), 0.0)}
    f["rel_late_tax_share_12m"] = np.where(has, _div(total("late"), total("filings")), np.nan)
    return f


def _history_months(fr, panel, ref, as_of):
    """Months from the firm's first known invoice, tax period or bill to the reference month."""
    first = np.full(panel.n, np.iinfo(np.int64).max)
    for records, date_col, month_col in ((fr.invoices, "invoice_date", "invoice_date"),
                                         (fr.tax_filings, "filed_date", "period_month"),
                                         (fr.utility_bills, "bill_date", "period_month")):
        known = records.known(date_col, as_of)
        row = panel.rows(known)
        months = month_index(known.dates(month_col))
        ok = row >= 0
        np.minimum.at(first, row[ok], months[ok])
    return np.where(first == np.iinfo(np.int64).max, 0, np.maximum(ref - first + 1, 0))


def compute_features(frames: FirmFrames, as_of: dt.date, outcome_end: dt.date | None = None
                     ) -> pa.Table:
    """One row per firm established on or before D, by enterprise_id: a FEATURE_SCHEMA table
    (the keys, the catalogue's features, in_default, months_history and the label).

    `outcome_end` (the last loan report month available) enables the training label: 90+ DPD within
    the 12 months after D; null when the window is not fully observed or the firm is already in
    default at D.
    """
    in_panel = frames.enterprises.dates("established_date") <= np.datetime64(as_of)
    ent = frames.enterprises.where(in_panel)
    panel = MonthlyPanel(in_panel)
    ref = reference_month(as_of)
    est_month = month_index(ent.dates("established_date"))
    hist = _history_months(frames, panel, ref, as_of)

    f, s_amt = _invoice_features(frames, panel, ref, as_of, hist)
    tax, (t_row, t_k, t_late), hc_3 = _tax_features(frames, panel, ref, as_of, est_month, s_amt)
    f.update(tax)
    pwr, _ = _power_features(frames, panel, ref, as_of, est_month, hc_3)
    f.update(pwr)
    f.update(_registry_features(frames, panel, as_of))
    max_dpd, in_default, own_loans = _loan_status(frames, panel, as_of)
    f.update(own_loans)
    t12 = t_k < 12
    own = {
        "arrears": (max_dpd > 0).astype(np.float64), "max_dpd": max_dpd,
        "default": (max_dpd >= feeds.DEFAULT_DPD).astype(np.float64),
        "late": np.bincount(t_row[t12], weights=t_late[t12].astype(np.float64), minlength=panel.n),
        "filings": np.bincount(t_row[t12], minlength=panel.n).astype(np.float64),
        "litig": f["reg_litig_12m"],
    }
    f.update(_related_features(ent.texts("controller_id"), own))
    f["ent_reg_capital"] = ent.numbers("registered_capital")
    age_days = np.datetime64(as_of) - ent.dates("established_date")
    f["ent_age_years"] = age_days.astype(np.float64) / 365.25
    f["ent_rep_age"] = ent.numbers("legal_rep_age")
    f["hist_months"] = hist.astype(np.float64)
    for name, column in (("ent_industry", "industry"), ("ent_province", "province"),
                         ("ent_legal_form", "legal_form")):
        f[name] = np.array(["" if v is None else v for v in ent.texts(column)], object)

    for name, months in BASE_WINDOW_MONTHS.items():
        f[name] = np.where(hist >= months, f[name], np.nan)

    columns = {"enterprise_id": ent.texts("enterprise_id"),
               "as_of_date": np.full(panel.n, np.datetime64(as_of, "D"))}
    for feat in catalog.FEATURES:
        col = f[feat.name]
        if not feat.is_categorical:
            col = np.asarray(col, np.float64)
            col = (col if feat.cap is None else np.minimum(col, feat.cap)).astype(np.float32)
        columns[feat.name] = col
    columns["in_default"] = in_default
    columns["months_history"] = hist.astype(np.int32)
    columns["label_default_12m"] = _labels(frames, panel, as_of, in_default, outcome_end)
    return feature_table(columns)


def _labels(frames, panel, as_of, in_default, outcome_end):
    """1.0 / 0.0 for 90+ DPD within the 12 months after D; NaN when not observable or in default."""
    if outcome_end is None:
        return np.full(panel.n, np.nan, np.float32)
    now = int(month_index(np.array([as_of], dtype="datetime64[D]"))[0])
    if int(month_index(np.array([outcome_end], dtype="datetime64[D]"))[0]) < now + 12:
        return np.full(panel.n, np.nan, np.float32)
    ln = frames.loans
    k = month_index(ln.dates("report_month")) - now
    m = (k >= 1) & (k <= 12) & (ln.numbers("days_past_due") >= feeds.DEFAULT_DPD)
    bad = panel.rows(ln)[m]
    label = np.zeros(panel.n, np.float32)
    label[bad[bad >= 0]] = 1.0
    label[in_default] = np.nan
    return label


def feature_table(columns) -> pa.Table:
    """Feature columns ({name: values}, the float ones float32) as a FEATURE_SCHEMA table, NaN as
    null, as pa.Table.from_pandas would convert them: compute_features' rows, and
    featurize.features_to_arrow's from a DataFrame."""
    arrays = [pa.array(columns[f.name], f.type, mask=np.isnan(columns[f.name]))
              if f.type == pa.float32() else pa.array(columns[f.name], f.type, from_pandas=True)
              for f in FEATURE_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=FEATURE_SCHEMA)
