"""The e-invoice feed (the big one), generated one month at a time from its own random stream,
so memory stays bounded and the rows do not depend on how months are grouped into files.

Per firm-month the invoice count is Poisson around a size-dependent rate (heavy-tailed: the
biggest firms issue hundreds), the month's invoiced sales / purchases are split over them, each
invoice goes to a customer / supplier drawn by that counterparty's share, and on a day drawn from
the month's activity (weekends, the Spring Festival and the golden week are quiet). A few
invoices are voided and re-issued, and a few sales are reversed by red-letter invoices.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

from synth import calendar
from synth.calendar import MonthGrid
from synth.firms import Firms, TradeNetwork, counterparty_ids
from synth.series import Operations, Series
from synth.tables import dates, strings, table

VOID_SHARE = 0.025               # issued in error, voided (and re-issued)
RED_LETTER_SHARE = 0.015         # reversed later (returns, disputes): a separate red-letter invoice
COUNT_ELASTICITY = 0.7           # invoice count follows the month's level less than 1:1
_DIGITS = 20                     # e-invoice numbers are 20 digits


def month_stream(seed: int, w: int) -> np.random.Generator:
    key = int.from_bytes(hashlib.sha256(b"invoices").digest()[:4], "little")
    return np.random.default_rng([seed, key, w])


def expected_rows(firms: Firms, ops: Operations, s: Series) -> np.ndarray:
    """Expected invoice rows per window month (to size the output files)."""
    base = firms.monthly_sales0[:, None]
    rel_s = np.where(s.sales > 0, s.sales / base, 0.0) ** COUNT_ELASTICITY
    base_p = base * ops.purchase_ratio[:, None]
    rel_p = np.where(s.purchases > 0, s.purchases / base_p, 0.0) ** COUNT_ELASTICITY
    n = ops.sales_rate[:, None] * rel_s + ops.purchase_rate[:, None] * rel_p
    return n.sum(axis=0) * (1 + VOID_SHARE + RED_LETTER_SHARE)


class InvoiceMaker:
    def __init__(self, seed: int, firms: Firms, ops: Operations, grid: MonthGrid, s: Series,
                 customers: TradeNetwork, suppliers: TradeNetwork, end_day: int):
        self.seed, self.firms, self.ops, self.grid, self.s = seed, firms, ops, grid, s
        self.network = {"sales": customers, "purchase": suppliers}
        self.end_day = end_day
        used = np.union1d(customers.counterparty, suppliers.counterparty)
        self.cp_index = used                                   # pool index -> row in cp_names
        self.cp_names = counterparty_ids(seed, used)
        days, weight = calendar.daily_activity(grid.first, grid.last)
        self.days = days
        month = calendar.month_of_days(days) - grid.first
        share = weight / np.bincount(month, weights=weight)[month]
        # month w + cumulative share within month w: one sorted array for all months
        before = np.r_[0, np.cumsum(np.bincount(month, weights=share))][month]
        self.day_cum = month + np.cumsum(share) - before
        ends = np.cumsum(np.bincount(month)) - 1
        self.day_cum[ends] = np.arange(len(ends)) + 1.0

    def month(self, w: int) -> pa.Table:
        rng = month_stream(self.seed, w)
        f, s, ops = self.firms, self.s, self.ops
        base = f.monthly_sales0
        parts = []
        for code, direction, level, rate, ratio in (
                (1, "sales", s.sales[:, w], ops.sales_rate, 1.0),
                (2, "purchase", s.purchases[:, w], ops.purchase_rate, ops.purchase_ratio)):
            lam = rate * (np.maximum(level, 0) / (base * ratio)) ** COUNT_ELASTICITY
            count = rng.poisson(np.where(s.exists[:, w] & (level > 0), lam, 0.0))
            parts.append(self._split(rng, w, code, direction, count, level))
        firm, code, seq, day, amount, cp = (np.concatenate(x) for x in zip(*parts))
        status = np.zeros(len(firm), np.int8)                  # 0 normal, 1 void, 2 red_letter
        firm, code, seq, day, amount, cp, status = self._voids_and_reversals(
            rng, w, firm, code, seq, day, amount, cp, status)
        return table("invoices", {
            "invoice_id": self._invoice_ids(w, code + 2 * status, firm, seq),
            "enterprise_id": strings(f.enterprise_id, firm),
            "invoice_date": dates(day),
            "direction": strings(np.array(["sales", "purchase"]), (code - 1)),
            "amount": amount,
            "counterparty_id": strings(self.cp_names, np.searchsorted(self.cp_index, cp)),
            "status": strings(np.array(["normal", "void", "red_letter"]), status),
        })

    def _split(self, rng, w, code, direction, count, level):
        """Rows for one direction: the month's level split over `count` invoices."""
        firm = np.repeat(np.arange(len(count)), count)
        starts = np.r_[0, np.cumsum(count)][:-1]
        seq = np.arange(len(firm)) - starts[firm]
        weight = rng.gamma(2.0, 1.0, len(firm))
        total = np.bincount(firm, weights=weight, minlength=len(count))[firm]
        amount = np.round(level[firm] * weight / total, 2)
        net = self.network[direction]
        pick = np.searchsorted(net.cum_share, firm + rng.random(len(firm)), side="right")
        cp = net.counterparty[np.minimum(pick, len(net.counterparty) - 1)]
        day = self._days(rng, w, firm)
        return firm, np.full(len(firm), code, np.int64), seq, day, amount, cp

    def _days(self, rng, w, firm):
        """Issue dates: by the month's activity profile; in the month a firm opens, on or after
        its establishment date."""
        pos = np.searchsorted(self.day_cum, w + rng.random(len(firm)), side="right")
        day = self.days[np.minimum(pos, len(self.days) - 1)]
        est = self.firms.established_day[firm]
        month_end = calendar.month_end_day([self.grid.first + w])[0]
        young = day < est
        span = month_end - est[young] + 1
        day[young] = est[young] + np.floor(rng.random(young.sum()) * span).astype(np.int64)
        return day

    def _voids_and_reversals(self, rng, w, firm, code, seq, day, amount, cp, status):
        void = rng.random(len(firm)) < VOID_SHARE
        red = (rng.random(len(firm)) < RED_LETTER_SHARE) & ~void
        red_day = day[red] + rng.integers(1, 46, red.sum())
        keep = red_day <= self.end_day
        pieces = [(a, a[void], a[red][keep]) for a in (firm, code, seq, day, amount, cp)]
        out = [np.concatenate(p) for p in pieces]
        out[3][len(firm) + void.sum():] = red_day[keep]
        status = np.concatenate([status, np.ones(void.sum(), np.int8), np.full(keep.sum(), 2, np.int8)])
        return (*out, status)

    def _invoice_ids(self, w, kind, firm, seq) -> pa.Array:
        """20 digits: yymm of issue month, kind (1 sales, 2 purchase, 3/4 void, 5/6 red letter),
        firm number (8), sequence within the firm-month (7)."""
        month_idx = self.grid.first + w
        yymm = (month_idx // 12 + 1970) % 100 * 100 + month_idx % 12 + 1
        value_parts = ((np.full(len(firm), yymm), 4), (kind, 1), (firm + 1, 8), (seq, 7))
        digits = np.empty((len(firm), _DIGITS), np.uint8)
        col = 0
        for value, width in value_parts:
            v = np.asarray(value, np.int64)
            for p in range(width - 1, -1, -1):
                digits[:, col + p] = 48 + v % 10
                v = v // 10
            col += width
        offsets = np.arange(0, _DIGITS * (len(firm) + 1), _DIGITS, dtype=np.int32)
        return pa.StringArray.from_buffers(len(firm), pa.py_buffer(offsets),
                                           pa.py_buffer(digits.tobytes()))
