"""Firmographics: who is in the portfolio, how big, how old, who controls them, whom they trade with.

Each attribute is drawn once per firm from its own random stream, so adding an attribute later
does not reshuffle the others.
"""
from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from synth import calendar
from transforms import feeds

# --- industry (GB/T 4754-2017 sections). Columns: portfolio weight, risk (logit), size (ln
# revenue shift), purchases / sales, kWh per CNY of sales, sales season, power season, activity
# elasticity of power (how much a shutdown cuts kWh). S (public administration) and T
# (international organisations) do not borrow from a commercial SME book.
_IND = {
    #     weight  risk  size  purch  kwh/CNY season          power        power~activity
    "A": (0.040, 0.30, -0.20, 0.50, 0.030, "harvest",      "irrigation", 0.5),
    "B": (0.005, 0.25, 0.80, 0.55, 0.120, "flat",         "flat",       1.0),
    "C": (0.220, 0.10, 0.50, 0.65, 0.060, "year_end",     "flat",       1.0),
    "D": (0.005, -0.50, 0.80, 0.70, 0.100, "flat",         "cooling",    0.5),
    "E": (0.100, 0.45, 0.40, 0.60, 0.015, "construction", "flat",       1.0),
    "F": (0.330, 0.15, 0.00, 0.85, 0.008, "retail",       "cooling",    0.4),
    "G": (0.050, 0.05, 0.20, 0.45, 0.020, "year_end",     "flat",       0.6),
    "H": (0.070, 0.40, -0.50, 0.45, 0.040, "hospitality",  "cooling",    0.3),
    "I": (0.035, -0.25, 0.10, 0.25, 0.020, "year_end",     "cooling",    0.3),
    "J": (0.002, -0.30, 0.30, 0.20, 0.010, "flat",         "cooling",    0.3),
    "K": (0.015, 0.50, 0.60, 0.50, 0.012, "year_end",     "cooling",    0.3),
    "L": (0.050, 0.20, 0.00, 0.35, 0.012, "year_end",     "cooling",    0.3),
    "M": (0.030, -0.20, -0.20, 0.30, 0.015, "year_end",     "cooling",    0.3),
    "N": (0.005, -0.10, 0.00, 0.40, 0.015, "flat",         "flat",       0.5),
    "O": (0.030, 0.20, -0.60, 0.35, 0.020, "retail",       "cooling",    0.3),
    "P": (0.005, -0.10, -0.40, 0.25, 0.015, "flat",         "cooling",    0.3),
    "Q": (0.005, -0.30, -0.20, 0.35, 0.020, "flat",         "cooling",    0.3),
    "R": (0.008, 0.30, -0.40, 0.35, 0.020, "hospitality",  "cooling",    0.3),
    "S": (0.000, 0.00, 0.00, 0.30, 0.010, "flat",         "flat",       0.3),
    "T": (0.000, 0.00, 0.00, 0.30, 0.010, "flat",         "flat",       0.3),
}
# --- provinces: weight in the book, risk (logit), size shift. The north-east and north-west
# carry more risk; the Yangtze delta, Beijing and Guangdong less and bigger firms.
_PROV = {
    "Beijing": (0.035, -0.25, 0.40), "Tianjin": (0.015, 0.10, 0.10), "Hebei": (0.035, 0.10, -0.10),
    "Shanxi": (0.012, 0.15, -0.10), "InnerMongolia": (0.008, 0.20, -0.10),
    "Liaoning": (0.020, 0.35, -0.10), "Jilin": (0.008, 0.35, -0.20), "Heilongjiang": (0.010, 0.40, -0.20),
    "Shanghai": (0.040, -0.30, 0.40), "Jiangsu": (0.110, -0.20, 0.20), "Zhejiang": (0.110, -0.25, 0.20),
    "Anhui": (0.035, 0.00, 0.00), "Fujian": (0.050, -0.10, 0.10), "Jiangxi": (0.020, 0.05, -0.10),
    "Shandong": (0.080, 0.00, 0.10), "Henan": (0.050, 0.10, -0.10), "Hubei": (0.040, 0.00, 0.00),
    "Hunan": (0.035, 0.05, -0.05), "Guangdong": (0.120, -0.10, 0.20), "Guangxi": (0.020, 0.15, -0.20),
    "Hainan": (0.005, 0.15, -0.20), "Chongqing": (0.025, 0.05, 0.00), "Sichuan": (0.050, 0.05, 0.00),
    "Guizhou": (0.012, 0.20, -0.20), "Yunnan": (0.015, 0.15, -0.20), "Tibet": (0.001, 0.25, -0.40),
    "Shaanxi": (0.020, 0.10, -0.10), "Gansu": (0.006, 0.25, -0.30), "Qinghai": (0.002, 0.25, -0.30),
    "Ningxia": (0.003, 0.25, -0.30), "Xinjiang": (0.008, 0.25, -0.20),
}
# --- legal forms: weight, risk, size shift. Individual businesses (个体工商户) are the smallest.
_FORM = {
    "limited_company": (0.62, 0.00, 0.30), "sole_proprietorship": (0.09, 0.10, -0.40),
    "partnership": (0.04, 0.00, 0.00), "individual_business": (0.25, 0.20, -1.00),
}
MEDIAN_REVENUE = 3.0e6           # CNY a year, a typical small firm
REVENUE_SIGMA = 1.25             # ln scale: 5th..95th percentile spans ~ x60
SIZE_RISK = -0.18                # logit per ln(revenue / median): small firms default more
COLD_START_SHARE = 0.09          # firms onboarded within the last ~5 months (under 6 of history)
COLD_START_DAYS = (7, 150)      # days before end_date; everyone else is over 7 months old
AGE_MEDIAN_YEARS, AGE_SIGMA = 7.0, 0.75
GROUPED_SHARE = 0.17             # firms sharing a controller with 1..4 others
GROUP_SIZES, GROUP_SIZE_P = (2, 3, 4, 5), (0.50, 0.25, 0.15, 0.10)
FRAILTY_SIGMA, GROUP_FRAILTY_SIGMA = 0.45, 0.35     # unobserved firm / controller risk (logit)


_IND_COLUMNS = ("weight", "risk", "size", "purchase_ratio", "kwh_per_cny", "sales_season",
                "power_season", "power_elasticity")
assert tuple(_IND) == feeds.INDUSTRY_SECTIONS and tuple(_PROV) == feeds.PROVINCES
assert tuple(_FORM) == feeds.LEGAL_FORMS


def _column(table: dict, j: int) -> np.ndarray:
    return np.array([row[j] for row in table.values()])


def industry_trait(name: str) -> np.ndarray:
    """One column of the industry table, indexed like feeds.INDUSTRY_SECTIONS."""
    return _column(_IND, _IND_COLUMNS.index(name))


def _pick(rng, table: dict, n: int) -> np.ndarray:
    w = _column(table, 0).astype(np.float64)
    return rng.choice(len(table), size=n, p=w / w.sum())


def stream(seed: int, name: str) -> np.random.Generator:
    """An independent, named random stream for one part of the generator."""
    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")
    return np.random.default_rng([seed, key])


@dataclasses.dataclass
class Firms:
    n: int
    enterprise_id: np.ndarray      # 'E0000001', ...
    uscc_hash: np.ndarray
    industry: np.ndarray           # index into feeds.INDUSTRY_SECTIONS
    province: np.ndarray           # index into feeds.PROVINCES
    legal_form: np.ndarray         # index into feeds.LEGAL_FORMS
    log_revenue: np.ndarray        # ln annual sales (CNY) at the start of the window
    registered_capital: np.ndarray
    established_day: np.ndarray    # days since 1970-01-01
    established_month: np.ndarray  # month index
    rep_age: np.ndarray            # float, NaN = unknown
    controller: np.ndarray         # controller group index (singletons have their own)
    controller_id: np.ndarray
    static_risk: np.ndarray        # observable logit shift: industry, region, size, form, rep age
    frailty: np.ndarray            # unobserved logit shift (firm + controller group)

    @property
    def monthly_sales0(self) -> np.ndarray:
        return np.exp(self.log_revenue) / 12.0


def draw_firms(seed: int, n: int, end_day: int) -> Firms:
    rng = stream(seed, "firms")
    ind = _pick(rng, _IND, n)
    prov = _pick(rng, _PROV, n)
    form = _pick(rng, _FORM, n)
    log_rev = (np.log(MEDIAN_REVENUE) + industry_trait("size")[ind] + _column(_PROV, 2)[prov]
               + _column(_FORM, 2)[form] + rng.normal(0.0, REVENUE_SIGMA, n))
    log_rev = np.clip(log_rev, np.log(6e4), np.log(8e8))
    est_day = _established(rng, n, end_day, form)
    rep_age = np.clip(np.round(rng.normal(46, 9, n)), 20, 75)
    rep_age[rng.random(n) < 0.02] = np.nan
    controller, prov = _controller_groups(rng, n, prov)
    capital = _registered_capital(rng, log_rev, form)
    young_rep = np.nan_to_num(rep_age, nan=46) < 28
    old_rep = np.nan_to_num(rep_age, nan=46) > 65
    static = (industry_trait("risk")[ind] + _column(_PROV, 1)[prov] + _column(_FORM, 1)[form]
              + SIZE_RISK * np.clip(log_rev - np.log(MEDIAN_REVENUE), -3, 3)
              + 0.25 * young_rep + 0.20 * old_rep)
    frailty = (rng.normal(0, FRAILTY_SIGMA, n)
               + rng.normal(0, GROUP_FRAILTY_SIGMA, controller.max() + 1)[controller]
               * (np.bincount(controller)[controller] > 1))
    ids = np.array([f"E{i + 1:07d}" for i in range(n)], dtype=object)
    ctrl_ids = _controller_ids(seed, controller)
    return Firms(n=n, enterprise_id=ids, uscc_hash=_uscc_hashes(rng, prov),
                 industry=ind, province=prov, legal_form=form, log_revenue=log_rev,
                 registered_capital=capital, established_day=est_day,
                 established_month=calendar.month_of_days(est_day),
                 rep_age=rep_age, controller=controller, controller_id=ctrl_ids,
                 static_risk=static, frailty=frailty)


def _established(rng, n, end_day, form) -> np.ndarray:
    """Mostly years old (lognormal age); a slice of recently onboarded firms is the cold start."""
    age_years = np.exp(rng.normal(np.log(AGE_MEDIAN_YEARS), AGE_SIGMA, n))
    small = form == feeds.LEGAL_FORMS.index("individual_business")     # shops open and close fast
    age_years = np.where(small, age_years * 0.7, age_years)
    age_days = np.clip(age_years * 365.25, 215, 35 * 365.25).astype(np.int64)
    cold = rng.random(n) < COLD_START_SHARE
    age_days[cold] = rng.integers(COLD_START_DAYS[0], COLD_START_DAYS[1] + 1, cold.sum())
    return end_day - age_days


def _controller_groups(rng, n, prov) -> tuple[np.ndarray, np.ndarray]:
    """Controller index per firm: ~17% of firms share one with 1..4 others, mostly in the same
    province (one boss, several shops)."""
    sizes = []
    while sum(sizes) < GROUPED_SHARE * n:
        sizes.append(int(rng.choice(GROUP_SIZES, p=GROUP_SIZE_P)))
    members = rng.permutation(n)[: min(sum(sizes), n)]
    controller = np.arange(n)
    start = 0
    prov = prov.copy()
    for size in sizes:
        grp = members[start:start + size]
        start += size
        if len(grp) == 0:
            break
        controller[grp] = grp[0]
        same = rng.random(len(grp)) < 0.8
        prov[grp[same]] = prov[grp[0]]
    _, controller = np.unique(controller, return_inverse=True)
    return controller, prov


def _controller_ids(seed: int, controller: np.ndarray) -> np.ndarray:
    tags = [hashlib.sha256(f"controller-{seed}-{c}".encode()).hexdigest()[:12].upper()
            for c in range(controller.max() + 1)]
    return np.array([f"P{t}" for t in tags], dtype=object)[controller]


def _registered_capital(rng, log_rev, form) -> np.ndarray:
    """Round figures, loosely tied to size; individual businesses declare small capital."""
    ratio = np.exp(rng.normal(np.log(0.4), 1.0, len(log_rev)))
    cap = np.exp(log_rev) * ratio
    small = form == feeds.LEGAL_FORMS.index("individual_business")
    cap[small] = np.exp(rng.normal(np.log(1e5), 0.8, small.sum()))
    step = np.where(cap >= 1e6, 1e5, 1e4)
    return np.maximum(np.round(cap / step) * step, 1e4)


def _uscc_hashes(rng, prov) -> np.ndarray:
    """sha256 of a fake 18-character Unified Social Credit Code: '91' + region code + org code."""
    alphabet = np.array(list("0123456789ABCDEFGHJKLMNPQRTUWXY"))
    region = 110000 + prov * 10000 + rng.integers(100, 9999, len(prov)) % 10000
    body = alphabet[rng.integers(0, len(alphabet), (len(prov), 10))]
    codes = ["91" + f"{r:06d}"[:6] + "".join(b) for r, b in zip(region, body)]
    return np.array([hashlib.sha256(c.encode()).hexdigest() for c in codes], dtype=object)


@dataclasses.dataclass
class TradeNetwork:
    """Each firm's customers and suppliers (indices into a shared counterparty pool) with the
    share of its sales / purchases each one takes, flattened firm by firm."""
    firm: np.ndarray
    counterparty: np.ndarray
    cum_share: np.ndarray          # firm index + cumulative share within the firm: sorted globally
    pool_size: int


def draw_trade_network(seed: int, firms: Firms, direction: str) -> TradeNetwork:
    """Concentrated by design: Dirichlet shares, and a quarter of the firms sell mostly to one or
    two customers. Popular counterparties (big buyers, wholesalers) recur across firms."""
    rng = stream(seed, f"trade-{direction}")
    size = np.clip(firms.log_revenue - np.log(1e5), 0, 6)
    base = (1.5, 2.5) if direction == "sales" else (1.0, 1.8)
    k = 1 + rng.poisson(base[0] + base[1] * size)
    k = np.minimum(k, 60)
    firm = np.repeat(np.arange(firms.n), k)
    alpha = 0.6 if direction == "sales" else 0.8
    w = rng.gamma(alpha, 1.0, len(firm)) + 1e-9
    if direction == "sales":
        starts = np.r_[0, np.cumsum(k)[:-1]]
        dependent = rng.random(firms.n) < 0.25
        w[starts[dependent]] = 0.0
        totals = np.bincount(firm, weights=w)
        top = rng.uniform(0.55, 0.9, firms.n)
        # the dependent firm's first customer takes `top` of sales, the rest share the remainder
        w[starts[dependent]] = np.where(k[dependent] > 1,
                                        top[dependent] / (1 - top[dependent]) * totals[dependent], 1.0)
    share = w / np.bincount(firm, weights=w)[firm]
    ends = np.cumsum(k)
    running = np.cumsum(share)
    cum = running - np.r_[0.0, running[ends[:-1] - 1]][firm]      # cumulative share within firm
    cum[ends - 1] = 1.0          # each firm's last breakpoint closes its interval exactly
    pool = max(2000, 3 * firms.n)
    counterparty = np.floor(pool * rng.random(len(firm)) ** 2.5).astype(np.int64)
    return TradeNetwork(firm=firm, counterparty=counterparty, cum_share=firm + np.minimum(cum, 1.0),
                        pool_size=pool)


def counterparty_ids(seed: int, indices: np.ndarray) -> np.ndarray:
    """Pseudonymised counterparty ids for the pool entries actually used."""
    return np.array([f"K{hashlib.sha256(f'cp-{seed}-{i}'.encode()).hexdigest()[:14].upper()}"
                     for i in indices], dtype=object)
