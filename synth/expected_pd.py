"""The true 12-month PD at a month-end: the expectation over simulated continuations of the book,
computed sparsely.

risk._expected_pd is the plain form: every continuation forks the book and recomputes every
firm's driver contributions and hazard at every step. Almost all of that is repeated work: a firm
whose drivers do not change along a continuation (no new event, onset or tax arrears, no relative
newly in arrears) has, `k` months on, the same contributions and hazard on every path. Here
`_Baseline` computes those once per month; a path recomputes only the rows it changed, and in
them only the drivers that changed; the onset draws compare the uniforms against the largest rate
a driver can have before they work out the firm's own. The random stream, its order and every
float operation on a row are the plain form's, so the numbers are bit-identical
(tests/test_generate_scale.py checks them against the plain form and against recorded files).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from synth import risk, truth

_COLUMN = {d: i for i, d in enumerate(truth.DRIVER_FAMILY)}      # = risk.DRIVERS' order

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


class _Baseline:
    """Per step k = 1..9 after month j, what every firm's drivers are if nothing new happens on
    the path: raw contributions (before the beta and overlap weighting), hazards, and the event
    counts' parts that no path changes."""

    def __init__(self, book, flow: FlowWeight, groups: Groups, j: int, w: int, age):
        p, n = book.p, book.n
        self.book, self.flow, self.groups, self.j, self.w = book, flow, groups, j, w
        self.tax = book.tax[:, j]
        rows = np.arange(n)
        self.recent, self.older, self.raw, self.offset, self.hazard = {}, {}, {}, {}, {}
        for k in range(1, risk.PD_DRAWS):
            jk = j + k
            lo, hi = max(jk - 11 - p.event_tail_months, 0), jk - 12
            for e in risk.EVENTS:
                cum = book.cum[e]
                # the count up to the path's month, less the events the path adds
                self.recent[e, k] = cum[:, j + 1] - cum[:, max(jk - 11, 0)]
                self.older[e, k] = (np.zeros(n) if hi < lo
                                    else (cum[:, hi + 1] - cum[:, lo]).astype(np.float64))
            raw = np.zeros((n, len(risk.DRIVERS)))
            for d in risk.FLOWS:
                raw[:, _COLUMN[d]] = flow.scale[d] * flow.weight(w + k - book.onset[d])
            raw[:, _COLUMN["tax_arrears"]] = self.tax
            raw[:, _COLUMN["related_arrears"]] = groups.related(rows, book.arrears, w + k)
            self._events(raw, slice(None), rows, k, {e: 0 for e in risk.EVENTS})
            self.raw[k] = raw
            a = age + k
            young = np.where(a < 12, p.young_firm[0], np.where(a < 36, p.young_firm[1], 0.0))
            self.offset[k] = p.base_logit + book.risk + young
            self.hazard[k] = self.finish(raw.copy(), rows, k)

    def _events(self, c, at, rows, k, new):
        """The churn and litigation columns of c[at] for `rows`, with `new` events each."""
        p = self.book.p
        weight = {e: (self.recent[e, k][rows] + new[e]).astype(np.float64)
                     + p.event_tail_weight * self.older[e, k][rows] for e in risk.EVENTS}
        c[at, _COLUMN["legal_rep_churn"]] = np.minimum(weight["legal_rep_change"], 2.0) ** 0.6
        c[at, _COLUMN["litigation"]] = np.minimum(
            weight["litigation"] + 0.5 * weight["admin_penalty"], 2.0) ** 0.6

    def finish(self, c, rows, k) -> np.ndarray:
        """risk._Book.contributions' weighting, then risk._Book.hazard, on raw rows c."""
        p = self.book.p
        c *= self.book.beta
        largest = c.argmax(axis=1)
        at = np.arange(len(rows))
        top = c[at, largest].copy()
        c *= p.secondary_weight
        c[at, largest] = top
        return 1.0 / (1.0 + np.exp(-(self.offset[k][rows] + c.sum(axis=1))))

    def path_hazard(self, path: "_Path", k: int) -> np.ndarray:
        """Every firm's hazard k months on along the path: the baseline, recomputed on the rows
        the path changed, in the drivers it changed."""
        hk = self.hazard[k].copy()
        rows = np.flatnonzero(path.changed)
        if not len(rows):
            return hk
        w = self.w + k
        c = self.raw[k][rows]
        c[:, _COLUMN["tax_arrears"]] = path.tax[rows]
        moved = path.new_onset[rows]
        if moved.any():
            r = rows[moved]
            for d in risk.FLOWS:
                c[moved, _COLUMN[d]] = (self.flow.scale[d][r]
                                        * self.flow.weight(w - path.onset[d][r]))
        touched = path.touched[rows]
        if touched.any():
            c[touched, _COLUMN["related_arrears"]] = self.groups.related(rows[touched],
                                                                         path.arrears, w)
        evented = path.evented[rows]
        if evented.any():
            r = rows[evented]
            self._events(c, evented, r, k, {e: v[r] for e, v in path.new_events.items()})
        hk[rows] = self.finish(c, rows, k)
        return hk


class _Path:
    """One continuation's own state; the rest is the book's as it stands at month j."""

    def __init__(self, book, j):
        n = book.n
        self.onset = {d: v.copy() for d, v in book.onset.items()}
        self.tax = book.tax[:, j].copy()
        self.arrears = book.arrears.copy()
        self.distress = book.distress
        self.new_events = {e: np.zeros(n, np.int16) for e in risk.EVENTS}
        self.changed = np.zeros(n, bool)       # rows whose drivers differ from the baseline's
        self.new_onset = np.zeros(n, bool)     # ... by a flow driver's onset
        self.evented = np.zeros(n, bool)       # ... by a registry event
        self.touched = np.zeros(n, bool)       # ... by a relative's arrears

    def arrears_start(self, firms, month, groups):
        self.arrears[firms] = month
        mates = groups.around(firms)
        self.touched[mates] = True
        self.changed[mates] = True


def expected_pd(book, rng, h, j, w, age, allowed, borrowing, paths: int,
                groups: Groups) -> np.ndarray:
    """1 - E[prod_{k=0..9} (1 - h_{j+k})] over `paths` continuations from month j: the same
    draws, in the same order, and the same numbers as risk._expected_pd."""
    n = book.n
    lend = [borrowing(w + k) for k in range(risk.PD_DRAWS)]
    base = _Baseline(book, FlowWeight.of(book), groups, j, w, age)
    tops = _largest_rates(book.p)
    survive = np.zeros(n)
    for _ in range(paths):
        survive += _survival(book, base, rng, h, j, w, age, allowed, lend, tops)
    return 1.0 - survive / paths


def _largest_rates(p) -> np.ndarray:
    """Per uniform column 1..7 of a step: the largest monthly rate its driver can have (in
    distress, after a sales collapse), a hair above, so no draw under the firm's own is missed."""
    most = p.distress_multiplier * max(p.cascade, 1.0) * (1 + 1e-9)
    return np.array([p.onset_of(x) * most for x in (*risk.EVENTS, *risk.FLOWS, "tax_arrears")])


def _survival(book, base, rng, h, j, w, age, allowed, lend, tops) -> np.ndarray:
    """One continuation: the survival of every firm over the 10 arrears draws."""
    p, n = book.p, book.n
    alive = 1.0 - h.astype(np.float64)
    path = _Path(book, j)
    first = (age >= 0) & lend[0] & (path.arrears == risk.NEVER) & (rng.random(n) < h)
    path.arrears_start(np.flatnonzero(first), w + 1, base.groups)
    for k in range(1, risk.PD_DRAWS):
        exists = age + k >= 0
        u = rng.random((n, 8))
        path.distress = exists & np.where(path.distress, u[:, 0] >= p.distress_exit,
                                          u[:, 0] < book.distress_p)
        _step(book, base.flow, path, u, tops, w + k, age + k, exists, allowed)
        hk = base.path_hazard(path, k)
        alive *= 1.0 - hk
        hit = np.flatnonzero(rng.random(n) < hk)
        hit = hit[exists[hit] & lend[k][hit] & (path.arrears[hit] == risk.NEVER)]
        path.arrears_start(hit, w + k + 1, base.groups)
    return alive


def _step(book, flow, path, u, tops, w, age, exists, allowed) -> None:
    """risk._Book.step_drivers for one path, on the firms whose uniform falls under the largest
    rate a driver can have; marks the rows whose drivers changed."""
    p = book.p
    sales_onset = path.onset["sales_collapse"]
    under = [np.flatnonzero(u[:, 1 + c] < top) for c, top in enumerate(tops)]

    def drawn(col, base_rate, cascades, cand):
        # the plain form's expression on the candidate rows: onset * boost * cascade
        cand = cand[exists[cand]]
        boost = 1.0 + (p.distress_multiplier - 1.0) * path.distress[cand]
        if cascades:
            sales_on = flow.weight(w - sales_onset[cand]) > 0
            rate = base_rate * boost * np.where(sales_on, p.cascade, 1.0)
        else:
            rate = base_rate * boost * 1.0
        return cand[u[cand, col] < rate]

    for k, e in enumerate(risk.EVENTS):
        hit = drawn(1 + k, p.onset_of(e), e == "litigation", under[k])
        path.new_events[e][hit] += 1
        path.evented[hit] = True
        path.changed[hit] = True
    starts = []
    for k, d in enumerate(risk.FLOWS):
        cand = under[3 + k]
        cand = cand[allowed[d][cand] & (path.onset[d][cand] == risk.NONE)
                    & (age[cand] >= p.min_history_for_drop)]
        starts.append(drawn(4 + k, p.onset_of(d), d != "sales_collapse", cand))
    was = np.flatnonzero(path.tax)
    cured = was[~(exists[was] & (age[was] >= 2) & (u[was, 7] >= p.tax_cure))]
    new = drawn(7, p.onset_of("tax_arrears"), True, under[6])
    new = new[~path.tax[new] & (age[new] >= 2)]
    for d, hit in zip(risk.FLOWS, starts):        # after every draw: the cascade reads onsets
        path.onset[d][hit] = w                    # as they were before the month
        path.new_onset[hit] = True
        path.changed[hit] = True
    path.tax[cured] = False
    path.tax[new] = True
    path.changed[cured] = True
    path.changed[new] = True
