"""The generator at scale: the sparse ground truth (synth/expected_pd.py) gives exactly the numbers of
the plain one, the files are the bytes the plain generator wrote, and a book written in chunks
of firms (synth/chunks.py) holds the same rows."""
from __future__ import annotations

import datetime as dt
import hashlib
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synth.generate import generate
from synth import calendar, chunks, expected_pd, firms as firms_mod, risk, series, simulation, truth
from transforms import feeds

END = dt.date(2026, 10, 31)

# sha256 of every file of a 300-firm x 24-month book, seed 7, end 2026-10-31, as written by the
# generator before the sparse truth (main at 55d40c4, plain risk._expected_pd). Any change to a
# random stream, a float operation or the file layout shows here.
PLAIN_GENERATOR_300x24 = {
    "_ground_truth/ground_truth.parquet": "62b1fceb91de40399864b241ee8d725dfa3b237b35da90fe539b5f832db3e404",
    "enterprises/part-00000.parquet": "c263024a1b3504f86dd430a57663808b53de41858ada8ca1767e3bc8e70868f9",
    "invoices/part-00000.parquet": "144f91045b3bcd082d14bd8e1e665e14bf2572f5732674623cef3128b6d1eb82",
    "loans/part-00000.parquet": "9569dffa4a1aecf4fda32361b520a7fab78f944c0532be74044b8faa80402fbd",
    "registry_events/part-00000.parquet": "2f12139971de4e1f39ef44d44a7cbf4063db166abb53f84d535bf0dc339cf65b",
    "tax_filings/part-00000.parquet": "b0460da7fd8d378bbf7d67245ce4d54abba657b6d517f519604c23088250228d",
    "utility_bills/part-00000.parquet": "63210f18cc48b7b029169992b2ab28f61abb42f2334769306e14162fc1f3c00f",
}


def _hashes(folder: str) -> dict:
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def test_files_are_the_plain_generators_bytes(tmp_path):
    generate(str(tmp_path), firms=300, months=24, end_date=END, seed=7)
    assert _hashes(str(tmp_path)) == PLAIN_GENERATOR_300x24


@pytest.fixture(scope="module")
def small_book():
    end_day = int(np.datetime64(END, "D").astype(np.int64))
    grid = calendar.make_grid(END, 14, 24)
    book = firms_mod.draw_firms(11, 700, end_day)
    ops = series.draw_operations(11, book)
    loans = risk.draw_originations(11, book, grid)
    return book, grid, ops, loans


@pytest.mark.parametrize("paths", [1, 12])
def test_sparse_truth_equals_the_plain_expectation_bit_for_bit(small_book, paths):
    book, grid, ops, loans = small_book
    params = risk.RiskParams(truth_paths=paths)
    runs = [simulation.simulate(11, book, grid, loans, ops.has_power, ops.si_headcount0 >= 3,
                          params=params, plain_truth=plain) for plain in (True, False)]
    plain, sparse = (r.pd_12m[:, r.burn_in:] for r in runs)
    assert plain.shape == (700, 14)
    assert np.array_equal(plain, sparse)
    assert 0.01 < float(plain.mean()) < 0.2          # real PDs, not zeros on both sides
    assert np.array_equal(runs[0].arrears_start, runs[1].arrears_start)


def test_flow_weight_table_is_the_plain_weight(small_book):
    p = risk.RiskParams()
    book = risk._Book(np.random.default_rng(1), small_book[0], 40, p)
    flow = expected_pd.FlowWeight.of(book)
    ages = np.arange(-30, 60)
    assert np.array_equal(flow.weight(ages), risk._flow_weight(ages, p))
    assert np.array_equal(flow.weight(np.array([10**6, -10**6])), [0.0, 0.0])
    typical = sum(risk._DEPTH["power_drop"]) / 2
    assert np.array_equal(flow.scale["power_drop"], book.depth["power_drop"] / typical)


def test_groups_give_the_plain_related_arrears(small_book):
    book = small_book[0]
    groups = expected_pd.Groups.of(book.controller)
    rng = np.random.default_rng(3)
    arrears = np.where(rng.random(book.n) < 0.2, rng.integers(0, 12, book.n), risk.NEVER)
    rows = np.arange(book.n)
    seen = set()
    for w in (0, 3, 8, 14):
        plain = risk._related(book.controller, arrears, w)
        assert np.array_equal(groups.related(rows, arrears, w), plain)
        assert np.array_equal(groups.related(rows[::7], arrears, w), plain[::7])
        seen |= set(plain.tolist())
    assert seen == {0.0, 1.0, 1.25}
    mates = groups.around(np.array([int(np.argmax(np.bincount(book.controller)[book.controller]))]))
    assert len(mates) == np.bincount(book.controller).max() > 1


def test_chunks_of_firms_write_the_same_rows(tmp_path):
    """Chunks of 128 firms (3 chunks, the last short): the same rows in the same order, in one
    part file per chunk, as the whole book at once (the pinned files above)."""
    whole, chunked = str(tmp_path / "whole"), str(tmp_path / "chunked")
    a = generate(whole, firms=300, months=24, end_date=END, seed=7)
    b = generate(chunked, firms=300, months=24, end_date=END, seed=7, chunk_firms=128)
    assert a["rows"] == b["rows"]
    assert {k: v for k, v in a.items() if k not in ("out_dir", "elapsed_s")} == \
        {k: v for k, v in b.items() if k not in ("out_dir", "elapsed_s")}
    for folder in (*feeds.FEEDS, truth.GROUND_TRUTH_DIR):
        parts = sorted(os.listdir(os.path.join(chunked, folder)))
        per_firm = folder not in ("enterprises", "registry_events", "invoices")
        assert len(parts) == (3 if per_firm else 1), folder
        read = [pq.read_table(os.path.join(d, folder, p)) for d in (whole, chunked)
                for p in sorted(os.listdir(os.path.join(d, folder)))]
        one = pq.read_table(os.path.join(whole, folder))
        assert pa.concat_tables(read[len(read) - len(parts):]).equals(one), folder
    first = pq.read_table(os.path.join(chunked, "loans", "part-00001.parquet"))
    assert first.column("enterprise_id")[0].as_py() == "E0000129"     # numbered from the chunk
    assert first.column("loan_id")[0].as_py().startswith("L00000129-")


def test_split_stream_refuses_chunks_out_of_order():
    split = chunks.SplitStream(np.random.default_rng(1), chunks.bounds(10, 4))
    with pytest.raises(RuntimeError, match="chunk 0 draws first"):
        split.chunk(1)
    with pytest.raises(ValueError, match="chunk 0 draws 5 rows, it has 4 firms"):
        split.chunk(0).random((5, 2))
    assert chunks.bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
