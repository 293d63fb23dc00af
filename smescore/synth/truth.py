"""The true 12-month PD at a month-end: the expectation over simulated continuations of the book,
computed sparsely.

risk._expected_pd is the plain form: every continuation forks the book and recomputes every
firm's driver contributions and hazard at every step. Almost all of that is repeated work: a firm
whose drivers do not change along a continuation (no new event, onset or tax arrears, no relative
newly in arrears) has, `k` months on, the same contributions and hazard on every path. Here those
hazards are computed once per month (`_baseline`), each path recomputes only the rows it changed,
and the onset draws compare the uniforms against the largest rate first. The random stream, its
order and every float operation on a row are the plain form's, so the numbers are bit-identical
(tests/test_generate_scale.py pins them against the plain form and against recorded files).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from smescore.synth import risk

@dataclasses.dataclass(frozen=True)
class Groups:
    """Controller groups as a padded member table, so a few firms' relatives are one gather."""
    controller: np.ndarray         # [n] group index
    members: np.ndarray            # [groups, largest] firm indices, -1 padding

    @classmethod
    def of(cls, controller: np.ndarray) -> "Groups":
        order = np.argsort(controller, kind="stable")
        size = np.bincount(controller)
        start = np.r_[0, np.cumsum(size)[:-1]]
        slot = np.arange(len(order)) - start[controller[order]]
        members = np.full((len(size), int(size.max())), -1, np.int64)
        members[controller[order], slot] = order
        return cls(controller=controller, members=members)

    def related(self, rows, arrears, w) -> np.ndarray:
        """risk._related for `rows` only: 1 when another firm of the row's controller is in
        arrears at month-end w, 1.25 when one has defaulted."""
        mem = self.members[self.controller[rows]]
        other = (mem >= 0) & (mem != rows[:, None])
        a = arrears[np.where(mem >= 0, mem, 0)]
        late = (other & (a <= w)).sum(axis=1)
        defaulted = (other & (a + risk.RAMP_MONTHS <= w)).sum(axis=1)
        return (late > 0) * (1.0 + 0.25 * (defaulted > 0))

    def around(self, firms) -> np.ndarray:
        """The firms and everyone sharing a controller with them."""
        mem = self.members[self.controller[firms]].ravel()
        return mem[mem >= 0]


@dataclasses.dataclass(frozen=True)
class FlowWeight:
    """risk._flow_weight as a table over months since onset (the same literal weights), and each
    firm's depth / typical depth, the factor in front of it."""
    table: np.ndarray              # weight at age -1 (not started: 0), 0, 1, .., then 0
    scale: dict

    @classmethod
    def of(cls, book) -> "FlowWeight":
        ages = np.arange(-1, book.p.full_weight_months + book.p.half_weight_months + 1)
        return cls(table=risk._flow_weight(ages, book.p),
                   scale={d: book.depth[d] / (sum(risk._DEPTH[d]) / 2) for d in risk.FLOWS})

    def weight(self, age) -> np.ndarray:
        return self.table[np.clip(age + 1, 0, len(self.table) - 1)]


@dataclasses.dataclass
class _PathState:
    """What a continuation changes: the rest is read from the book as it stands at month j."""
    onset: dict
    tax: np.ndarray
    arrears: np.ndarray
    new_events: dict               # events drawn on this path in months since+1.., per firm
    since: int                     # the book's month j


def expected_pd(book, rng, h, j, w, age, allowed, borrowing, paths: int,
                groups: Groups) -> np.ndarray:
    """1 - E[prod_{k=0..9} (1 - h_{j+k})] over `paths` continuations from month j: the same
    draws, in the same order, and the same numbers as risk._expected_pd."""
    n = book.n
    lend = [borrowing(w + k) for k in range(risk.PD_DRAWS)]
    flow = FlowWeight.of(book)
    still = _PathState(onset=book.onset, tax=book.tax[:, j], arrears=book.arrears,
                       new_events={e: np.zeros(n, np.int16) for e in risk.EVENTS}, since=j)
    everyone = np.arange(n)
    baseline = [None] + [_hazard(book, flow, everyone, still, groups, j + k, w + k, age + k)
                         for k in range(1, risk.PD_DRAWS)]
    survive = np.zeros(n)
    for _ in range(paths):
        survive += _path(book, flow, rng, h, j, w, age, allowed, lend, baseline, groups)
    return 1.0 - survive / paths


def _path(book, flow, rng, h, j, w, age, allowed, lend, baseline, groups) -> np.ndarray:
    """One continuation: the survival of every firm over the 10 arrears draws."""
    p, n = book.p, book.n
    alive = 1.0 - h.astype(np.float64)
    state = _PathState(onset={d: v.copy() for d, v in book.onset.items()},
                       tax=book.tax[:, j].copy(), arrears=book.arrears.copy(),
                       new_events={e: np.zeros(n, np.int16) for e in risk.EVENTS}, since=j)
    changed = np.zeros(n, bool)
    first = (age >= 0) & lend[0] & (state.arrears == risk.NEVER) & (rng.random(n) < h)
    state.arrears[first] = w + 1
    changed[groups.around(np.flatnonzero(first))] = True
    distress = book.distress
    for k in range(1, risk.PD_DRAWS):
        exists = age + k >= 0
        u = rng.random((n, 8))
        distress = exists & np.where(distress, u[:, 0] >= p.distress_exit,
                                     u[:, 0] < book.distress_p)
        _step(book, flow, state, changed, u, distress, j + k, w + k, age + k, exists, allowed,
              book.tax[:, j])
        hk = baseline[k].copy()
        rows = np.flatnonzero(changed)
        hk[rows] = _hazard(book, flow, rows, state, groups, j + k, w + k, age + k)
        alive *= 1.0 - hk
        hit = np.flatnonzero(rng.random(n) < hk)
        hit = hit[exists[hit] & lend[k][hit] & (state.arrears[hit] == risk.NEVER)]
        state.arrears[hit] = w + k + 1
        changed[groups.around(hit)] = True
    return alive


def _step(book, flow, state, changed, u, distress, j, w, age, exists, allowed, tax_then) -> None:
    """risk._Book.step_drivers for one path, touching only the firms whose uniform falls under
    the largest rate a driver can have; marks the firms whose contributions changed."""
    p = book.p
    sales_onset = state.onset["sales_collapse"]

    def rate(base, rows, cascades):
        # the plain form's expression on the candidate rows: onset * boost * cascade
        boost = 1.0 + (p.distress_multiplier - 1.0) * distress[rows]
        if not cascades:
            return base * boost * 1.0
        sales_on = flow.weight(w - sales_onset[rows]) > 0
        return base * boost * np.where(sales_on, p.cascade, 1.0)

    def drawn(col, base, cascades, rows=None):
        top = base * p.distress_multiplier * max(p.cascade, 1.0) * (1 + 1e-9)
        cand = np.flatnonzero(u[:, col] < top) if rows is None else rows
        cand = cand[exists[cand]]
        return cand[u[cand, col] < rate(base, cand, cascades)]

    for k, e in enumerate(risk.EVENTS):
        hit = drawn(1 + k, p.onset_of(e), e == "litigation")
        state.new_events[e][hit] += 1
        changed[hit] = True
    starts = []
    for k, d in enumerate(risk.FLOWS):
        cand = np.flatnonzero(u[:, 4 + k] < p.onset_of(d) * p.distress_multiplier
                              * max(p.cascade, 1.0) * (1 + 1e-9))
        cand = cand[allowed[d][cand] & (state.onset[d][cand] == risk.NONE)
                    & (age[cand] >= p.min_history_for_drop)]
        starts.append(drawn(4 + k, p.onset_of(d), d != "sales_collapse", cand))
    was = np.flatnonzero(state.tax)
    stay = was[exists[was] & (age[was] >= 2) & (u[was, 7] >= p.tax_cure)]
    new = drawn(7, p.onset_of("tax_arrears"), True)
    new = new[~state.tax[new] & (age[new] >= 2)]
    for d, hit in zip(risk.FLOWS, starts):        # after every draw: they read onsets as of j-1
        state.onset[d][hit] = w
        changed[hit] = True
    state.tax = np.zeros_like(state.tax)
    state.tax[stay] = True
    state.tax[new] = True
    changed |= state.tax != tax_then


def _hazard(book, flow, rows, state, groups, j, w, age) -> np.ndarray:
    """risk._Book.contributions + hazard for `rows` at month j (window month w), from the path's
    onsets, tax arrears, arrears and the events drawn since the book's month."""
    p = book.p
    c = np.zeros((len(rows), len(risk.DRIVERS)))
    for d in risk.FLOWS:
        c[:, risk.DRIVERS.index(d)] = flow.scale[d][rows] * flow.weight(w - state.onset[d][rows])
    column = risk.DRIVERS.index          # (risk imports this module: look names up at run time)
    c[:, column("tax_arrears")] = state.tax[rows]
    c[:, column("related_arrears")] = groups.related(rows, state.arrears, w)
    weight = {e: _event_weight(book, state, e, rows, j) for e in risk.EVENTS}
    c[:, column("legal_rep_churn")] = np.minimum(weight["legal_rep_change"], 2.0) ** 0.6
    c[:, column("litigation")] = np.minimum(weight["litigation"] + 0.5 * weight["admin_penalty"], 2.0) ** 0.6
    c *= book.beta
    largest = c.argmax(axis=1)
    top = c[np.arange(len(rows)), largest].copy()
    c *= p.secondary_weight
    c[np.arange(len(rows)), largest] = top
    a = age[rows]
    young = np.where(a < 12, p.young_firm[0], np.where(a < 36, p.young_firm[1], 0.0))
    return 1.0 / (1.0 + np.exp(-(p.base_logit + book.risk[rows] + young + c.sum(axis=1))))


def _event_weight(book, state, e, rows, j) -> np.ndarray:
    """risk._Book.event_weight at month j after the book's month: events of the last 12 months
    count in full (the book's up to its month plus the path's since), the 12 before at the tail
    weight. Integer counts, so the floats are the plain form's."""
    p, cum = book.p, book.cum[e]
    now = cum[rows, state.since + 1] + state.new_events[e][rows]
    recent = (now - cum[rows, max(j - 11, 0)]).astype(np.float64)
    lo, hi = max(j - 11 - p.event_tail_months, 0), j - 12
    older = (np.zeros(len(rows)) if hi < lo
             else (cum[rows, hi + 1] - cum[rows, lo]).astype(np.float64))
    return recent + p.event_tail_weight * older
