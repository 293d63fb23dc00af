"""The book in chunks of firms, drawing exactly what the whole-book generator draws.

The monthly series and the loan snapshots are [firms x months] matrices, each drawn from its
named stream in one call per matrix: firm after firm, month after month. A chunk of firms
therefore owns one contiguous stretch of every call. `SplitStream` walks the stream once, call by
call, recording the generator's state where each chunk's stretch starts; a chunk then draws its
stretch from that state, and gets the very numbers the whole-book call would have given its rows
(numpy's generators draw element after element, keeping any half-used word in the state).
Calls must come in the same order, with the same shapes, in every chunk (the first chunk walks
them), which holds for series.build and tables.loans: their draws never depend on the data.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from synth.series import Series


def bounds(n: int, chunk: int) -> list[tuple[int, int]]:
    """[lo, hi) firm ranges of at most `chunk` firms."""
    if chunk < 1:
        raise ValueError(f"chunk must be a positive number of firms, got {chunk!r}")
    return [(lo, min(lo + chunk, n)) for lo in range(0, n, chunk)]


class SplitStream:
    """One named stream, handed out chunk by chunk (chunk 0 first)."""

    def __init__(self, rng: np.random.Generator, spans: list[tuple[int, int]]):
        self.rng, self.spans = rng, spans
        self.starts: list[list[dict]] = []         # per call: the state where each chunk starts

    def chunk(self, c: int) -> "ChunkDraws":
        if c and len(self.starts) == 0:
            raise RuntimeError("chunk 0 draws first: it walks the calls for the others")
        return ChunkDraws(self, c)

    def _walk(self, method: str, args: tuple, tail: tuple) -> None:
        states = []
        for lo, hi in self.spans:
            states.append(self.rng.bit_generator.state)
            getattr(self.rng, method)(*args, size=(hi - lo, *tail))
        self.starts.append(states)


class ChunkDraws:
    """The Generator methods the series and loans use, for one chunk's rows."""

    def __init__(self, split: SplitStream, c: int):
        self.split, self.c, self.call = split, c, 0

    def _draw(self, method: str, args: tuple, size) -> np.ndarray:
        size = (size,) if np.isscalar(size) else tuple(size)
        lo, hi = self.split.spans[self.c]
        if size[0] != hi - lo:
            raise ValueError(f"chunk {self.c} draws {size[0]} rows, it has {hi - lo} firms")
        if self.call == len(self.split.starts):
            if self.c:
                raise RuntimeError(f"chunk {self.c} made a call chunk 0 did not ({method})")
            self.split._walk(method, args, size[1:])
        generator = np.random.Generator(np.random.PCG64())
        generator.bit_generator.state = self.split.starts[self.call][self.c]
        self.call += 1
        return getattr(generator, method)(*args, size=size)

    def random(self, size):
        return self._draw("random", (), size)

    def normal(self, loc, scale, size):
        return self._draw("normal", (loc, scale), size)

    def uniform(self, low, high, size):
        return self._draw("uniform", (low, high), size)

    def integers(self, low, high, size):
        return self._draw("integers", (low, high), size)

    def geometric(self, p, size):
        return self._draw("geometric", (p,), size)


def rows(obj, n: int, lo: int, hi: int):
    """A dataclass (Firms, Operations, Originations, RiskPath) with every per-firm array, and
    dict of them, cut to firms lo..hi-1 (views, no copies)."""
    def cut(v):
        if isinstance(v, np.ndarray) and v.ndim and v.shape[0] == n:
            return v[lo:hi]
        if isinstance(v, dict):
            return {k: cut(x) for k, x in v.items()}
        return v
    changes = {f.name: cut(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if "n" in changes:
        changes["n"] = hi - lo
    return dataclasses.replace(obj, **changes)


@dataclasses.dataclass
class InvoiceLevels:
    """What the invoices read of the series, for the whole book: [n, M] each."""
    exists: np.ndarray
    sales: np.ndarray
    purchases: np.ndarray

    @classmethod
    def empty(cls, n: int, months: int) -> "InvoiceLevels":
        return cls(exists=np.zeros((n, months), bool), sales=np.zeros((n, months)),
                   purchases=np.zeros((n, months)))

    def fill(self, lo: int, s: Series) -> None:
        hi = lo + s.sales.shape[0]
        self.exists[lo:hi], self.sales[lo:hi], self.purchases[lo:hi] = \
            s.exists, s.sales, s.purchases
