"""Named risk drivers, the monthly default hazard they imply, the defaults drawn from it, and the
ground truth (true 12-month PD, dominant driver) at every month-end.

The drivers (names = synth/truth.py's DRIVER_FAMILY) and the trace each leaves from its first month:
  sales_collapse     invoiced (and declared) sales fall 40-80% and stay down
  tax_arrears        VAT returns filed after the 15th of the next month, or not at all
  power_drop         electricity use falls 35-70% against the same month a year before
  headcount_decline  insured headcount falls 25-60%
  related_arrears    another firm of the same controller shows DPD in the loans feed
  legal_rep_churn    legal_rep_change events (counted over 12 months, then at 0.4 for 12 more)
  litigation         litigation events, and admin penalties at half weight (same windows)
Behind them, an unobserved distress state makes them arrive together, and static risk (industry,
region, size, legal form, age, the legal representative's age) plus an unobserved frailty shift
every firm's hazard.

Timing, which is what keeps the oracle honest:
- A driver enters the hazard in month t only when its trace is known at month-end t (an invoice
  dated in t, a return or bill for period t-1 filed / issued in t, a registry event or a relative's
  loan snapshot dated in t).
- h_t, the hazard in force at month-end t, is the probability that a performing borrower misses a
  payment in month t+1 (arrears start, DPD 30 at month-end t+1). Missed payments are never cured:
  DPD 60 at t+2 and 90 (default) at t+3, then +30 a month. So the DPD ramp starts only after the
  draw, and DPD 30 appears exactly two months before the default month.
- true_pd_12m at month-end D is 1 for a borrower already in arrears (its default is sealed and its
  DPD is in the feeds). Otherwise defaults in D+1..D+12 are arrears starting in D+1..D+10, so
  PD = 1 - E[prod_{k=0..9} (1 - h_{D+k})], the expectation over how the book can go on from its
  state at D: drivers known at D ageing and leaving their windows, and new distress, driver onsets
  and relatives' arrears arriving as the simulation draws them. It is estimated with
  `truth_paths` simulated continuations per month (their own random stream, so the feeds do not
  depend on it), each firm's survival taken in closed form along every path. Assuming no new
  driver instead understates the PD: the observed 12-month default rate ran ~1.37x such a
  'truth' at every date (10k firms, seed 7), so a model calibrated to outcomes looked +37% off.
- The dominant driver at D is the one with the largest logit contribution at D (null: none active).
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np

from synth import truth
from synth.calendar import MonthGrid, month_of_days
from synth.firms import Firms, stream

DRIVERS = tuple(truth.DRIVER_FAMILY)          # ground-truth names, in a fixed order
NONE = -10**6                                 # onset month of a driver that never started
NEVER = 10**6                                 # arrears / default month of a firm that never defaults
RAMP_MONTHS = 2                               # DPD 30 at s, 60 at s+1, 90 (default) at s+2
PD_DRAWS = 12 - RAMP_MONTHS                   # arrears draws that can still default within 12m
FLOWS = ("sales_collapse", "power_drop", "headcount_decline")
EVENTS = ("legal_rep_change", "litigation", "admin_penalty")
_DEPTH = {"sales_collapse": (0.4, 0.8), "power_drop": (0.35, 0.7), "headcount_decline": (0.25, 0.6)}


@dataclasses.dataclass(frozen=True)
class RiskParams:
    """Hazard logit = base + static risk + young firm + frailty + driver contributions.

    Tuned (seeds 7 and 11; 3,000 and 10,000 firms x 36 months) so that the oracle AUC is ~0.83,
    the 12-month default rate ~3.5%, and ~85-90% of defaults have a named driver active at each
    as-of date in the year before them.
    """
    base_logit: float = -9.4
    beta: tuple = (("sales_collapse", 3.6), ("tax_arrears", 3.3), ("power_drop", 3.0),
                   ("headcount_decline", 2.7), ("related_arrears", 3.15),
                   ("legal_rep_churn", 2.4), ("litigation", 2.25))
    secondary_weight: float = 0.35             # drivers beside the largest one count this much
    young_firm: tuple = (0.5, 0.25)            # logit for age < 1 year, < 3 years
    frailty_weight: float = 0.35               # scale of the unobserved firm / group risk
    # Monthly onset probability of each driver for a healthy firm, and the multiplier while the
    # firm is in (unobserved) financial distress. Distress comes first; the drivers are how it
    # shows. Riskier firms (static risk + frailty) fall into distress more often.
    onset: tuple = (("sales_collapse", 0.005), ("tax_arrears", 0.005), ("power_drop", 0.0045),
                    ("headcount_decline", 0.0045), ("legal_rep_change", 0.0055),
                    ("litigation", 0.0065), ("admin_penalty", 0.0055))
    distress_multiplier: float = 4.0
    distress_enter: float = 0.008
    distress_exit: float = 0.02
    distress_risk_slope: float = 0.8
    tax_cure: float = 0.05                     # monthly chance tax arrears end
    cascade: float = 3.0                       # a sales collapse makes other drivers likelier
    flow_ramp: tuple = (0.3, 0.5, 0.7, 0.85)   # flow drivers bite gradually (cash buffers) ...
    full_weight_months: int = 13               # ... count fully for a year (while year-on-year
    half_weight_months: int = 2                # features show the drop), then half, then not at all
    event_tail_months: int = 12                # registry events count fully for 12 months, then
    event_tail_weight: float = 0.4             # at this weight for 12 more (reg_*_36m)
    min_history_for_drop: int = 6              # a drop needs months of history to be visible
    truth_paths: int = 64                      # continuations behind each true 12-month PD

    def beta_of(self, name):
        return dict(self.beta)[name]

    def onset_of(self, name):
        return dict(self.onset)[name]


@dataclasses.dataclass
class Originations:
    first_day: np.ndarray          # origination date (days) of every firm's loan
    second_day: np.ndarray         # a second loan for some firms, -1 where none

    @property
    def first_month(self):
        return month_of_days(self.first_day)


def draw_originations(seed: int, firms: Firms, grid: MonthGrid) -> Originations:
    """Older firms borrowed up to three years before the window; newer ones soon after opening."""
    rng = stream(seed, "loans")
    n = firms.n
    earliest = np.maximum(firms.established_month + 3, grid.first - 36)
    latest = grid.first - 1
    pre = earliest <= latest
    month = np.where(pre, earliest + np.floor(rng.random(n) * np.maximum(latest - earliest + 1, 1)),
                     firms.established_month + rng.integers(0, 3, n)).astype(np.int64)
    month = np.minimum(month, grid.last)
    day = _day_in_month(rng, month, not_before=firms.established_day)
    second = np.full(n, -1, np.int64)
    has2 = rng.random(n) < 0.18
    lo = np.maximum(month + 3, grid.first - 12)
    hi = grid.last - 2
    ok = has2 & (lo <= hi)
    m2 = lo + np.floor(rng.random(n) * np.maximum(hi - lo + 1, 1)).astype(np.int64)
    second[ok] = _day_in_month(rng, m2, not_before=firms.established_day)[ok]
    return Originations(first_day=day, second_day=second)


def _day_in_month(rng, month, not_before):
    start = month.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
    end = (month + 1).astype("datetime64[M]").astype("datetime64[D]").astype(np.int64) - 1
    start = np.maximum(start, np.minimum(not_before, end))
    return start + np.floor(rng.random(len(month)) * (end - start + 1)).astype(np.int64)


@dataclasses.dataclass
class RiskPath:
    """Everything the feeds and the ground truth need, on the simulated months (burn-in first:
    column j is window month w = j - burn_in)."""
    burn_in: int
    hazard: np.ndarray             # [n, T] h_t, the probability of arrears starting in t+1
    pd_12m: np.ndarray             # [n, T] 12-month PD implied at month-end t (before arrears)
    dominant: np.ndarray           # [n, T] int8 index into DRIVERS, -1 = no driver active
    onset: dict                    # flow drivers: window month of onset (NONE = never)
    depth: dict                    # flow drivers: fractional drop
    tax_arrears: np.ndarray        # [n, T] bool: returns filed late / skipped this month
    events: dict                   # [n, T] int8 counts: legal_rep_change, litigation, admin_penalty
    arrears_start: np.ndarray      # window month of DPD 30 (NEVER = never)

    @property
    def default_month(self) -> np.ndarray:
        return np.where(self.arrears_start == NEVER, NEVER, self.arrears_start + RAMP_MONTHS)

    def window(self, matrix):
        return matrix[:, self.burn_in:]


def _flow_weight(age, p: RiskParams):
    """Weight of a flow driver (sales, power, headcount) by months since onset."""
    full = (age >= 0) & (age < p.full_weight_months)
    half = (age >= p.full_weight_months) & (age < p.full_weight_months + p.half_weight_months)
    w = full * 1.0 + half * 0.5
    for k, ramp in enumerate(p.flow_ramp):
        w = np.where(age == k, ramp, w)
    return w


class _Book:
    """The simulation state: driver histories of every firm up to the current month j."""

    def __init__(self, rng, firms: Firms, T: int, p: RiskParams):
        n = firms.n
        self.n, self.p, self.firms = n, p, firms
        self.depth = {d: rng.uniform(*_DEPTH[d], n) for d in FLOWS}
        self.onset = {d: np.full(n, NONE, np.int64) for d in FLOWS}
        # PD_DRAWS spare columns past T: the months the ground truth's continuations simulate
        self.events = {e: np.zeros((n, T + PD_DRAWS), np.int8) for e in EVENTS}
        self.cum = {e: np.zeros((n, T + PD_DRAWS + 1), np.int16) for e in EVENTS}   # before column j
        self.tax = np.zeros((n, T + PD_DRAWS), bool)
        self.arrears = np.full(n, NEVER, np.int64)
        self.risk = firms.static_risk + p.frailty_weight * firms.frailty
        self.beta = np.array([p.beta_of(d) for d in DRIVERS])
        # Riskier firms fall into distress more often; start at the long-run share, so default
        # rates do not drift up through the window.
        self.distress_p = np.minimum(p.distress_enter * np.exp(p.distress_risk_slope * self.risk), 0.2)
        self.distress = rng.random(n) < self.distress_p / (self.distress_p + p.distress_exit)

    def count(self, e, lo, hi):
        """Events of type e in columns lo..hi (clipped to what has been simulated)."""
        lo = max(lo, 0)
        if hi < lo:
            return np.zeros(self.n)
        return (self.cum[e][:, hi + 1] - self.cum[e][:, lo]).astype(np.float64)

    def event_weight(self, e, j, ahead):
        """Events of the last 12 months count fully, older ones (12 more) at a reduced weight;
        `ahead` months later, with no new events."""
        p, t = self.p, j + ahead
        recent = self.count(e, t - 11, j)
        older = self.count(e, t - 11 - p.event_tail_months, min(t - 12, j))
        return recent + p.event_tail_weight * older

    def contributions(self, j, w, ahead=0):
        """[n, 7] logit contributions of the drivers in force `ahead` months after month j,
        assuming no new driver starts (what is known at month-end j)."""
        p, n = self.p, self.n
        c = np.zeros((n, len(DRIVERS)))
        for d in FLOWS:
            typical = sum(_DEPTH[d]) / 2
            c[:, DRIVERS.index(d)] = self.depth[d] / typical * _flow_weight(w + ahead - self.onset[d], p)
        c[:, DRIVERS.index("tax_arrears")] = self.tax[:, j]
        c[:, DRIVERS.index("related_arrears")] = _related(self.firms.controller, self.arrears, w)
        c[:, DRIVERS.index("legal_rep_churn")] = np.minimum(
            self.event_weight("legal_rep_change", j, ahead), 2.0) ** 0.6
        c[:, DRIVERS.index("litigation")] = np.minimum(
            self.event_weight("litigation", j, ahead)
            + 0.5 * self.event_weight("admin_penalty", j, ahead), 2.0) ** 0.6
        c *= self.beta
        # Troubles overlap (a collapse in sales and in power are partly the same news): drivers
        # beside the largest one add less.
        largest = c.argmax(axis=1)
        top = c[np.arange(n), largest].copy()
        c *= p.secondary_weight
        c[np.arange(n), largest] = top
        return c

    def hazard(self, c, age):
        p = self.p
        young = np.where(age < 12, p.young_firm[0], np.where(age < 36, p.young_firm[1], 0.0))
        return 1.0 / (1.0 + np.exp(-(p.base_logit + self.risk + young + c.sum(axis=1))))

    def step_drivers(self, u, j, w, age, exists, allowed):
        """Distress and driver onsets in month j; u: [n, 8] uniforms."""
        p = self.p
        self.distress = exists & np.where(self.distress, u[:, 0] >= p.distress_exit,
                                          u[:, 0] < self.distress_p)
        boost = 1.0 + (p.distress_multiplier - 1.0) * self.distress
        sales_on = _flow_weight(w - self.onset["sales_collapse"], p) > 0
        cascade = np.where(sales_on, p.cascade, 1.0)
        for k, e in enumerate(EVENTS):
            rate = p.onset_of(e) * boost * (cascade if e == "litigation" else 1.0)
            self.events[e][:, j] = exists & (u[:, 1 + k] < rate)
            self.cum[e][:, j + 1] = self.cum[e][:, j] + self.events[e][:, j]
        for k, d in enumerate(FLOWS):
            rate = p.onset_of(d) * boost * (cascade if d != "sales_collapse" else 1.0)
            start = (exists & allowed[d] & (self.onset[d] == NONE)
                     & (age >= p.min_history_for_drop) & (u[:, 4 + k] < rate))
            self.onset[d][start] = w
        was = self.tax[:, j - 1] if j else np.zeros(self.n, bool)
        self.tax[:, j] = exists & (age >= 2) & np.where(
            was, u[:, 7] >= p.tax_cure, u[:, 7] < p.onset_of("tax_arrears") * boost * cascade)

    def fork(self) -> "_Book":
        """A continuation of the book: its own distress, onsets and arrears; the event and tax
        columns shared (see _expected_pd)."""
        other = copy.copy(self)
        other.onset = {d: v.copy() for d, v in self.onset.items()}
        other.distress = self.distress.copy()
        other.arrears = self.arrears.copy()
        return other

    def replace(self, firms_mask, j):
        """Burn-in only: a firm that would have defaulted is replaced by a fresh one."""
        for d in FLOWS:
            self.onset[d][firms_mask] = NONE
        for e in EVENTS:
            self.events[e][firms_mask, : j + 1] = 0
            self.cum[e][firms_mask, : j + 2] = 0
        self.tax[firms_mask, : j + 1] = False
        self.distress[firms_mask] = False


def _expected_pd(book: "_Book", rng, h, j, w, age, allowed, borrowing, paths: int) -> np.ndarray:
    """1 - E[prod_{k=0..9} (1 - h_{j+k})] over `paths` continuations of the book from month j.

    Each continuation forks the state that changes in place (distress, onsets, arrears) and
    writes its months j+1.. into the book's event and tax columns as scratch: the main simulation
    rewrites every column before it reads it. Relatives' arrears are drawn (they feed the
    related-arrears driver); a firm's own survival is the product of its hazards along the path."""
    survive = np.zeros(book.n)
    for _ in range(paths):
        fork = book.fork()
        alive = 1.0 - h.astype(np.float64)
        fork.arrears[(age >= 0) & borrowing(w) & (fork.arrears == NEVER) & (rng.random(book.n) < h)] = w + 1
        for k in range(1, PD_DRAWS):
            exists = age + k >= 0
            fork.step_drivers(rng.random((book.n, 8)), j + k, w + k, age + k, exists, allowed)
            hk = fork.hazard(fork.contributions(j + k, w + k), age + k)
            alive *= 1.0 - hk
            draw = exists & borrowing(w + k) & (fork.arrears == NEVER) & (rng.random(book.n) < hk)
            fork.arrears[draw] = w + k + 1
        survive += alive
    return 1.0 - survive / paths


def _related(controller, arrears, w):
    """1 when another firm of the same controller is in arrears or default at month-end w
    (its DPD is in the loans feed), 1.25 when one of them has defaulted."""
    late = arrears <= w
    defaulted = arrears + RAMP_MONTHS <= w
    groups = controller.max() + 1
    n_late = np.bincount(controller, weights=late, minlength=groups)[controller] - late
    n_def = np.bincount(controller, weights=defaulted, minlength=groups)[controller] - defaulted
    return (n_late > 0) * (1.0 + 0.25 * (n_def > 0))


def true_pd(path: RiskPath) -> np.ndarray:
    """[n, M] 12-month PD at every window month-end (1 where arrears are already running)."""
    pd_ = path.window(path.pd_12m).astype(np.float64)
    months = np.arange(pd_.shape[1])[None, :]
    return np.where(path.arrears_start[:, None] <= months, 1.0, pd_)
