"""Monthly firm x month series behind the feeds: sales, purchases, electricity, insured headcount
and tax-filing behaviour, with seasonality, trends, noise and the traces of the risk drivers.

All matrices are [n_firms, M] over the window months. A driver that is active in the hazard from
month t leaves its trace in the records that become known in month t: invoices dated in t, the
tax return and electricity bill for period t-1 (filed / issued in t).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from synth import calendar, firms as firms_mod
from synth.calendar import MonthGrid
from synth.firms import Firms, stream
from synth.risk import NONE, RiskPath
from transforms import feeds

BENIGN_DIP_RATE = 0.012          # a healthy firm's one- or two-month slump (lost order, repairs)
SALES_NOISE, POWER_NOISE = 0.15, 0.08
LATE_FILING, MISSING_FILING = 0.025, 0.012       # healthy firms
ARREARS_LATE, ARREARS_MISSING = 0.65, 0.25       # while tax arrears run
NO_BILL = 0.012
AFTER_DEFAULT_DECAY = 0.6        # activity of a defaulted firm shrinks by this a month


@dataclasses.dataclass
class Operations:
    """How each firm runs: growth, margins, tax habits, power and staff intensity."""
    growth: np.ndarray             # ln growth a year
    cash_factor: np.ndarray        # declared taxable sales / invoiced sales
    vat_rate: np.ndarray           # VAT paid / taxable sales
    purchase_ratio: np.ndarray
    kwh0: np.ndarray               # monthly kWh in an average month
    has_power: np.ndarray          # has its own electricity account
    tariff: np.ndarray             # CNY per kWh
    si_headcount0: np.ndarray      # employees with social insurance
    sales_rate: np.ndarray         # sales invoices in an average month
    purchase_rate: np.ndarray
    filing_day: np.ndarray         # usual filing day (1..15 of the next month)
    bill_day: np.ndarray           # usual bill day (early next month)
    sales_season: np.ndarray       # [n, 12] month-of-year factor
    power_season: np.ndarray       # [n, 12]
    power_elasticity: np.ndarray   # how much a holiday shutdown cuts kWh


def draw_operations(seed: int, firms: Firms) -> Operations:
    rng = stream(seed, "operations")
    n = firms.n
    ind = firms.industry
    trait = firms_mod.industry_trait
    small = firms.legal_form == feeds.LEGAL_FORMS.index("individual_business")
    sales0 = firms.monthly_sales0
    trade = ind == feeds.INDUSTRY_SECTIONS.index("F")            # traders turn over more per head
    revenue_per_head = 6e5 * np.exp(rng.normal(0, 0.4, n)) * np.where(trade, 2.0, 1.0)
    headcount = np.maximum(1, np.round(np.exp(firms.log_revenue) / revenue_per_head))
    coverage = np.where(small & (rng.random(n) < 0.5), 0.0, rng.beta(6, 2, n))
    sales_rate = np.clip(3.3 * (sales0 / 2.5e5) ** 0.6, 0.3, 500.0)
    season_names = list(calendar.SALES_SEASON)
    power_names = list(calendar.POWER_SEASON)
    sales_season = np.array([calendar.SALES_SEASON[s] for s in season_names])
    power_season = np.array([calendar.POWER_SEASON[s] for s in power_names])
    industrial = np.isin(ind, [feeds.INDUSTRY_SECTIONS.index(x) for x in "ABCDE"])
    purchase_ratio = trait("purchase_ratio")[ind] * np.exp(rng.normal(0, 0.2, n))
    return Operations(
        growth=rng.normal(0.03, 0.15, n),
        cash_factor=1.0 + rng.exponential(np.where(small, 0.3, 0.06)),
        vat_rate=np.where(small, rng.uniform(0.01, 0.03, n), rng.uniform(0.01, 0.045, n)),
        purchase_ratio=purchase_ratio,
        kwh0=sales0 * trait("kwh_per_cny")[ind] * np.exp(rng.normal(0, 0.5, n)),
        has_power=rng.random(n) > 0.04,
        tariff=np.where(industrial, rng.uniform(0.6, 0.75, n), rng.uniform(0.75, 0.95, n)).round(4),
        si_headcount0=np.round(headcount * coverage),
        sales_rate=sales_rate,
        purchase_rate=sales_rate * 0.8 * np.clip(purchase_ratio, 0.1, 1.5) ** 0.3,
        filing_day=rng.integers(3, 16, n),
        bill_day=rng.integers(1, 6, n),
        sales_season=sales_season[[season_names.index(s) for s in trait("sales_season")[ind]]],
        power_season=power_season[[power_names.index(s) for s in trait("power_season")[ind]]],
        power_elasticity=trait("power_elasticity")[ind].astype(np.float64),
    )


@dataclasses.dataclass
class Series:
    exists: np.ndarray             # [n, M] bool: established by the month's end
    sales: np.ndarray              # [n, M] invoiced sales, CNY
    purchases: np.ndarray
    kwh: np.ndarray                # NaN where no bill
    si_headcount: np.ndarray
    filed: np.ndarray              # [n, M] bool: the period's return is filed (at any time)
    filed_day: np.ndarray          # [n, M] filing date (days since epoch)
    taxable_sales: np.ndarray
    vat_paid: np.ndarray
    bill_day: np.ndarray           # [n, M] bill date (days), -1 where no bill
    days_overdue: np.ndarray       # [n, M] int


def _ar1(rng, shape, sigma, rho=0.6):
    """Log-scale AR(1) noise along the month axis, stationary standard deviation sigma."""
    eps = rng.normal(0, sigma * np.sqrt(1 - rho ** 2), shape)
    out = np.empty(shape)
    out[:, 0] = rng.normal(0, sigma, shape[0])
    for t in range(1, shape[1]):
        out[:, t] = rho * out[:, t - 1] + eps[:, t]
    return np.exp(out)


def _after_onset(onset, months, lead=0):
    """[n, M] bool: month w is at or after onset - lead (the period whose record shows it)."""
    return (onset != NONE)[:, None] & (months[None, :] >= (onset - lead)[:, None])


def build(seed: int, firms: Firms, ops: Operations, grid: MonthGrid, path: RiskPath,
          end_day: int, rng=None) -> Series:
    """`rng`: the draws of a chunk of firms (chunks.SplitStream); default the whole book's."""
    rng = stream(seed, "series") if rng is None else rng
    n, M = firms.n, grid.months
    months = np.arange(M)
    month_idx = grid.index(months)
    cal = calendar.calendar_month(month_idx) - 1
    activity = calendar.monthly_activity(grid.first, grid.last)
    age = month_idx[None, :] - firms.established_month[:, None]
    exists = age >= 0
    start_day, end_days = calendar.month_start_day(month_idx), calendar.month_end_day(month_idx)
    # Share of the establishment month the firm traded, and a ramp-up over its first months.
    first = np.clip((end_days[None, :] - firms.established_day[:, None] + 1)
                    / (end_days - start_day + 1)[None, :], 0, 1)
    ramp = exists * first * (1.0 - 0.5 * np.exp(-np.maximum(age, 0) / 4.0))
    trend = np.exp(ops.growth[:, None] * months[None, :] / 12.0)
    tau = path.default_month
    wind_down = np.where(months[None, :] > tau[:, None],
                         AFTER_DEFAULT_DECAY ** (months[None, :] - tau[:, None]).clip(0, 60), 1.0)
    wind_down[wind_down < 0.05] = 0.0

    collapse = np.where(_after_onset(path.onset["sales_collapse"], months),
                        1.0 - path.depth["sales_collapse"][:, None], 1.0)
    sales = (firms.monthly_sales0[:, None] * trend * ops.sales_season[:, cal] * activity[None, :]
             * _ar1(rng, (n, M), SALES_NOISE) * collapse * _benign_dips(rng, n, M)
             * ramp * wind_down)
    purchases = sales * ops.purchase_ratio[:, None] * np.exp(rng.normal(0, 0.25, (n, M)))

    drop = np.where(_after_onset(path.onset["power_drop"], months, lead=1),
                    1.0 - path.depth["power_drop"][:, None], 1.0)
    kwh = (ops.kwh0[:, None] * np.sqrt(trend) * ops.power_season[:, cal]
           * activity[None, :] ** ops.power_elasticity[:, None] * _ar1(rng, (n, M), POWER_NOISE)
           * drop * ramp * np.maximum(wind_down, 0.1 * (wind_down > 0)))
    headcount = _headcount(rng, ops, path, months, trend, exists, wind_down)
    filed, filed_day, taxable, vat = _tax_returns(rng, ops, path, grid, sales, exists, tau, end_days)
    bill_day, overdue, kwh = _bills(rng, ops, path, grid, kwh, exists, tau, end_days, end_day)
    return Series(exists=exists, sales=sales, purchases=purchases, kwh=kwh,
                  si_headcount=headcount, filed=filed, filed_day=filed_day, taxable_sales=taxable,
                  vat_paid=vat, bill_day=bill_day, days_overdue=overdue)


def _benign_dips(rng, n, M):
    """Temporary slumps of 30-60% lasting one or two months, unrelated to default risk."""
    start = rng.random((n, M)) < BENIGN_DIP_RATE
    long = rng.random((n, M)) < 0.5
    depth = rng.uniform(0.3, 0.6, (n, M))
    factor = np.where(start, 1 - depth, 1.0)
    carry = np.zeros((n, M), bool)
    carry[:, 1:] = start[:, :-1] & long[:, :-1]
    return factor * np.where(carry, 1 - np.roll(depth, 1, axis=1), 1.0)


def _headcount(rng, ops, path, months, trend, exists, wind_down):
    """Insured headcount; a decline shows from the period before the driver's month, first
    partly, then in full."""
    onset = path.onset["headcount_decline"]
    depth = path.depth["headcount_decline"][:, None]
    k = np.where((onset == NONE)[:, None], -1, months[None, :] - (onset[:, None] - 1))
    cut = np.where(k == 0, 0.6 * depth, np.where(k > 0, depth, 0.0))
    noise = np.exp(rng.normal(0, 0.03, trend.shape))
    level = ops.si_headcount0[:, None] * trend ** 0.4 * (1 - cut) * noise
    level = np.where(wind_down < 1, level * np.sqrt(wind_down), level)
    return np.where(exists, np.round(level), 0).astype(np.int64)


def _tax_returns(rng, ops, path, grid, sales, exists, tau, end_days):
    """VAT returns: filed by the 15th of the next month, late (after it) or never. The return for
    period w is due in month w+1, so tax arrears active in w+1 make it late or missing."""
    n, M = sales.shape
    arrears_due = np.zeros((n, M), bool)
    arrears_due[:, :-1] = path.window(path.tax_arrears)[:, 1:]
    months = np.arange(M)[None, :]
    defaulted = months > tau[:, None]
    p_missing = np.where(arrears_due, ARREARS_MISSING, MISSING_FILING)
    p_missing = np.where(defaulted, 0.5, p_missing)
    p_late = np.where(arrears_due, ARREARS_LATE, LATE_FILING)
    u = rng.random((n, M, 2))
    filed = exists & (u[..., 0] >= p_missing) & (sales > 0)
    late = u[..., 1] < p_late
    next_start = end_days[None, :] + 1
    on_time = np.clip(ops.filing_day[:, None] + rng.integers(-2, 3, (n, M)), 1, 15)
    late_by = 1 + np.minimum(rng.geometric(1 / 15, (n, M)), 90)
    filed_day = next_start - 1 + np.where(late, 15 + late_by, on_time)
    taxable = sales * ops.cash_factor[:, None] * np.exp(rng.normal(0, 0.05, (n, M)))
    vat = taxable * ops.vat_rate[:, None] * np.exp(rng.normal(0, 0.1, (n, M)))
    return filed, filed_day, taxable.round(2), vat.round(2)


def _bills(rng, ops, path, grid, kwh, exists, tau, end_days, end_day):
    """Electricity bills issued early the next month; paid late mostly by firms whose power use
    has dropped (the bill for period w is known in w+1, when the driver shows)."""
    n, M = kwh.shape
    months = np.arange(M)[None, :]
    dropping = _after_onset(path.onset["power_drop"], np.arange(M), lead=1)
    defaulted = months > tau[:, None]
    has = exists & ops.has_power[:, None] & (rng.random((n, M)) >= np.where(defaulted, 0.3, NO_BILL))
    has &= kwh > 0
    day = end_days[None, :] + ops.bill_day[:, None] + rng.integers(0, 2, (n, M))
    u = rng.random((n, M))
    late_p = np.where(dropping, 0.45, 0.07)
    late_p = np.where(defaulted, 0.8, late_p)
    days = np.where(dropping | defaulted, rng.integers(15, 91, (n, M)),
                    np.minimum(rng.geometric(1 / 6, (n, M)), 60))
    overdue = np.where(u < late_p, days, 0)
    kwh = np.where(has, np.round(kwh, 1), np.nan)
    return np.where(has, day, -1), overdue.astype(np.int64), kwh
