"""Arrow tables for the small feeds and the ground truth, typed exactly as transforms.feeds."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from synth import calendar, risk
from synth.calendar import MonthGrid
from synth.firms import Firms, stream
from synth.series import Series
from synth import truth
from transforms import feeds


# ---------- column helpers ----------
def dates(days) -> pa.Array:
    return pa.array(np.asarray(days, np.int64).astype(np.int32), pa.date32())


def strings(values: np.ndarray, index: np.ndarray) -> pa.Array:
    """values[index] as a plain string column, built through a dictionary (fast for repeats)."""
    return pa.DictionaryArray.from_arrays(pa.array(np.asarray(index, np.int32)),
                                          pa.array(values, pa.string())).dictionary_decode()


def table(feed: str, columns: dict) -> pa.Table:
    schema = feeds.FEEDS[feed].schema if feed in feeds.FEEDS else truth.GROUND_TRUTH_SCHEMA
    arrays = [columns[f.name] if isinstance(columns[f.name], (pa.Array, pa.ChunkedArray))
              else pa.array(columns[f.name], f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def _cells(mask):
    """(firm, month) of every True cell, firm-major."""
    firm, w = np.nonzero(mask)
    return firm, w


# ---------- feeds ----------
def enterprises(firms: Firms) -> pa.Table:
    idx = np.arange(firms.n)
    age = firms.rep_age
    return table("enterprises", {
        "enterprise_id": strings(firms.enterprise_id, idx),
        "uscc_hash": pa.array(firms.uscc_hash, pa.string()),
        "industry": strings(np.array(feeds.INDUSTRY_SECTIONS), firms.industry),
        "province": strings(np.array(feeds.PROVINCES), firms.province),
        "legal_form": strings(np.array(feeds.LEGAL_FORMS), firms.legal_form),
        "registered_capital": firms.registered_capital,
        "established_date": dates(firms.established_day),
        "legal_rep_age": pa.array(np.nan_to_num(age, nan=0).astype(np.int32), pa.int32(),
                                  mask=np.isnan(age)),
        "controller_id": pa.array(firms.controller_id, pa.string()),
    })


def tax_filings(firms: Firms, grid: MonthGrid, s: Series, end_day: int) -> pa.Table:
    """One row per filed return known by end_date (a return filed later is not in the feed)."""
    due = calendar.month_end_day(grid.index(np.arange(grid.months))) + 15
    firm, w = _cells(s.filed & (s.filed_day <= end_day))
    return table("tax_filings", {
        "enterprise_id": strings(firms.enterprise_id, firm),
        "period_month": dates(calendar.month_start_day(grid.index(w))),
        "filed_date": dates(s.filed_day[firm, w]),
        "taxable_sales": s.taxable_sales[firm, w],
        "vat_paid": s.vat_paid[firm, w],
        "filed_late": s.filed_day[firm, w] > due[w],
        "si_headcount": s.si_headcount[firm, w].astype(np.int32),
    })


def utility_bills(firms: Firms, grid: MonthGrid, s: Series, tariff: np.ndarray, end_day: int) -> pa.Table:
    firm, w = _cells((s.bill_day >= 0) & (s.bill_day <= end_day))
    kwh = s.kwh[firm, w]
    return table("utility_bills", {
        "enterprise_id": strings(firms.enterprise_id, firm),
        "period_month": dates(calendar.month_start_day(grid.index(w))),
        "bill_date": dates(s.bill_day[firm, w]),
        "kwh": kwh,
        "amount": np.round(kwh * tariff[firm], 2),
        "days_overdue": s.days_overdue[firm, w].astype(np.int32),
    })


# Benign registry events (not risk drivers): monthly rates.
CAPITAL_CHANGE_RATE, ADDRESS_CHANGE_RATE = 0.003, 0.004


def registry_events(seed: int, firms: Firms, grid: MonthGrid, path: risk.RiskPath,
                    end_day: int) -> pa.Table:
    """Driver events from the risk path (burn-in included: the registry keeps history) plus
    benign capital and address changes."""
    rng = stream(seed, "registry")
    T = path.burn_in + grid.months
    month = grid.first - path.burn_in + np.arange(T)
    exists = month[None, :] >= firms.established_month[:, None]
    kinds = {"legal_rep_change": path.events["legal_rep_change"] > 0,
             "litigation": path.events["litigation"] > 0,
             "admin_penalty": path.events["admin_penalty"] > 0,
             "capital_change": exists & (rng.random((firms.n, T)) < CAPITAL_CHANGE_RATE),
             "address_change": exists & (rng.random((firms.n, T)) < ADDRESS_CHANGE_RATE)}
    parts = []
    for kind, mask in kinds.items():
        firm, j = _cells(mask)
        start = np.maximum(calendar.month_start_day(month[j]), firms.established_day[firm])
        end = calendar.month_end_day(month[j])
        day = start + np.floor(rng.random(len(firm)) * (end - start + 1)).astype(np.int64)
        parts.append((firm, day, np.full(len(firm), feeds.REGISTRY_EVENT_TYPES.index(kind)),
                      _event_amount(rng, kind, firms, firm)))
    firm, day, kind, amount = (np.concatenate(x) for x in zip(*parts))
    keep = day <= end_day
    firm, day, kind, amount = firm[keep], day[keep], kind[keep], amount[keep]
    order = np.lexsort((kind, firm, day))
    firm, day, kind, amount = firm[order], day[order], kind[order], amount[order]
    return table("registry_events", {
        "event_id": pa.array([f"R{seed % 1000:03d}{k + 1:09d}" for k in range(len(firm))], pa.string()),
        "enterprise_id": strings(firms.enterprise_id, firm),
        "event_date": dates(day),
        "event_type": strings(np.array(feeds.REGISTRY_EVENT_TYPES), kind),
        "amount": pa.array(amount, pa.float64(), mask=np.isnan(amount)),
    })


def _event_amount(rng, kind, firms, firm):
    n = len(firm)
    revenue = np.exp(firms.log_revenue[firm])
    if kind == "capital_change":
        up = rng.random(n) < 0.7
        size = firms.registered_capital[firm] * np.where(up, rng.uniform(0.2, 1.0, n),
                                                          -rng.uniform(0.2, 0.6, n))
        return np.round(size / 1e4) * 1e4
    if kind == "admin_penalty":
        return np.round(np.exp(rng.normal(np.log(1e4), 1.0, n)), -2)
    if kind == "litigation":
        return np.round(revenue * np.exp(rng.normal(np.log(0.05), 1.0, n)), -2)
    return np.full(n, np.nan)


def loans(seed: int, firms: Firms, grid: MonthGrid, orig: risk.Originations,
          path: risk.RiskPath, rng=None, first_firm: int = 0) -> pa.Table:
    """Month-end snapshots of each loan from origination on. DPD 30, 60, 90 in the three months
    ending with the default month, then +30 a month; balances freeze (with interest) once
    payments stop. A second loan of the same borrower goes into arrears with the first."""
    # `rng`, `first_firm`: a chunk of firms (chunks.SplitStream), numbered from first_firm
    rng = stream(seed, "loan-balances") if rng is None else rng
    n, M = firms.n, grid.months
    revenue = np.exp(firms.log_revenue)
    amount1 = np.clip(np.round(revenue * np.exp(rng.normal(np.log(0.2), 0.5, n)), -4), 3e4, 3e7)
    amount2 = np.round(amount1 * rng.uniform(0.3, 0.8, n), -4)
    revolving = rng.random((n, 2)) < 0.6
    util = np.clip(0.8 + np.cumsum(rng.normal(0, 0.05, (n, M)), axis=1), 0.3, 1.0)
    month_end = calendar.month_end_day(grid.index(np.arange(M)))
    s = path.arrears_start
    rows = []
    # no new loan to a borrower already in arrears: lent on or before its last performing month
    last_lending_day = np.where(s >= M, np.iinfo(np.int64).max,
                                calendar.month_end_day(grid.first + np.minimum(s, M) - 1))
    for k, (day, amount) in enumerate(((orig.first_day, amount1), (orig.second_day, amount2))):
        has = (day >= 0) & (day <= last_lending_day)
        alive = has[:, None] & (day[:, None] <= month_end[None, :])
        firm, w = _cells(alive)
        orig_month = calendar.month_of_days(day)
        elapsed = grid.first + w - orig_month[firm]
        term = np.maximum(1.0 - elapsed / 36.0, 0.05)
        paid_to = np.minimum(w, s[firm] - 1)                   # last month with payments made
        el_paid = grid.first + paid_to - orig_month[firm]
        perf = np.where(revolving[firm, k], util[firm, np.clip(paid_to, 0, M - 1)],
                        np.maximum(1.0 - np.maximum(el_paid, 0) / 36.0, 0.05))
        in_arrears = w >= s[firm]
        balance = amount[firm] * np.where(in_arrears, perf * 1.005 ** (w - s[firm] + 1),
                                          np.where(revolving[firm, k], util[firm, w], term))
        dpd = np.where(in_arrears, 30 * (w - s[firm] + 1), 0)
        rows.append((firm, w, np.full(len(firm), k), day[firm], np.round(balance, 2), dpd))
    firm, w, k, day, balance, dpd = (np.concatenate(x) for x in zip(*rows))
    order = np.lexsort((w, k, firm))
    firm, w, k, day, balance, dpd = (a[order] for a in (firm, w, k, day, balance, dpd))
    loan_ids = np.array([f"L{i + 1:08d}-{j + 1}" for i in range(first_firm, first_firm + n)
                         for j in range(2)], dtype=object)
    return table("loans", {
        "loan_id": strings(loan_ids, firm * 2 + k),
        "enterprise_id": strings(firms.enterprise_id, firm),
        "report_month": dates(month_end[w]),
        "origination_date": dates(day),
        "balance": balance,
        "days_past_due": dpd.astype(np.int32),
    })


def ground_truth(firms: Firms, grid: MonthGrid, path: risk.RiskPath) -> pa.Table:
    """Every firm at every month-end from its establishment on."""
    month_end = calendar.month_end_day(grid.index(np.arange(grid.months)))
    firm, w = _cells(firms.established_day[:, None] <= month_end[None, :])
    pd_ = risk.true_pd(path)[firm, w]
    dom = path.window(path.dominant)[firm, w].astype(np.int64)
    names = np.array(risk.DRIVERS + ("",), dtype=object)
    driver = pa.DictionaryArray.from_arrays(
        pa.array(np.where(dom < 0, len(risk.DRIVERS), dom).astype(np.int32), mask=dom < 0),
        pa.array(names, pa.string())).dictionary_decode()
    return table("_ground_truth", {
        "enterprise_id": strings(firms.enterprise_id, firm),
        "as_of_date": dates(month_end[w]),
        "true_pd_12m": pd_,
        "dominant_driver": driver,
    })
