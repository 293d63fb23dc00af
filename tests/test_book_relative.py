"""Changes read against the book: exact medians whatever the shards, the same numbers in Beam and
in process, a change every firm shares cancels out, and reasons word the gap to the book."""
import datetime as dt
import re

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that

from transforms import beam_features, book_relative, catalog, featurize

D1, D2 = dt.date(2026, 3, 31), dt.date(2026, 4, 30)


def _book(n=101, seed=3):
    """A feature table of n firms at two dates, the changes random with some missing."""
    rng = np.random.default_rng(seed)
    rows = {"enterprise_id": [f"E{i:04d}" for i in range(n)] * 2,
            "as_of_date": [D1] * n + [D2] * n}
    for f in catalog.FEATURES:
        if f.is_categorical:
            rows[f.name] = ["C"] * (2 * n)
        else:
            v = rng.normal(-0.1, 0.3, 2 * n).astype(np.float32)
            v[rng.random(2 * n) < 0.1] = np.nan
            rows[f.name] = v
    rows["in_default"] = [False] * (2 * n)
    rows["months_history"] = [24] * (2 * n)
    rows["label_default_12m"] = [None] * (2 * n)
    return pa.Table.from_pydict(rows, schema=featurize.FEATURE_SCHEMA)


def _shards(table, cuts):
    return [table.slice(a, b - a) for a, b in zip(cuts[:-1], cuts[1:])]


def test_the_changes_are_exactly_those_of_kind_change_or_trend():
    assert book_relative.FEATURES == tuple(
        f.name for f in catalog.FEATURES if f.kind in ("pct_change", "slope"))
    assert len(book_relative.FEATURES) == 15 and "inv_sales_chg_3m" in book_relative.FEATURES
    assert "inv_sales_amt_3m" not in book_relative.FEATURES          # levels are the firm's own


def test_medians_are_exact_and_do_not_depend_on_the_shards():
    book = _book()
    whole = book_relative.book_medians([book])
    cut = book_relative.book_medians(_shards(book, [0, 7, 50, 130, 202])[::-1])
    assert whole == cut
    for d in (D1, D2):
        rows = np.array(book.column("as_of_date").to_pylist()) == d
        for f in book_relative.FEATURES:
            v = book.column(f).to_numpy(zero_copy_only=False)[rows]
            assert whole[d][f] == float(np.median(v[np.isfinite(v)].astype(np.float64)))


def test_adjust_subtracts_the_median_of_the_rows_date_and_keeps_missing_values():
    book = _book()
    medians = book_relative.book_medians([book])
    out = book_relative.adjust(book, medians)
    f = "inv_sales_chg_3m"
    raw, adj = (t.column(f).to_numpy(zero_copy_only=False) for t in (book, out))
    np.testing.assert_array_equal(np.isnan(adj), np.isnan(raw))
    for rows, d in ((slice(0, 101), D1), (slice(101, 202), D2)):
        m = medians[d][f]
        want = ((1 + raw[rows].astype(np.float64)) / (1 + m) - 1).astype(np.float32)
        np.testing.assert_array_equal(adj[rows], want)
    # a trend subtracts (log scale)
    s = "pwr_slope_12m"
    np.testing.assert_array_equal(
        out.column(s).to_numpy(zero_copy_only=False)[:101],
        (book.column(s).to_numpy(zero_copy_only=False)[:101].astype(np.float64)
         - medians[D1][s]).astype(np.float32))
    # after the adjustment the book's median change is 0 at every date
    again = book_relative.book_medians([out])
    assert max(abs(again[d][g]) for d in again for g in book_relative.FEATURES) < 1e-6
    # everything else untouched
    np.testing.assert_array_equal(out.column("inv_sales_amt_3m").to_numpy(zero_copy_only=False),
                                  book.column("inv_sales_amt_3m").to_numpy(zero_copy_only=False))


def test_a_change_every_firm_shares_cancels_out():
    """A late Spring Festival takes a fifth off every firm's sales in the last 3 months: the
    firms' changes read against the book do not move."""
    book = _book()
    raw = book.column("inv_sales_chg_3m").to_numpy(zero_copy_only=False)
    shocked = book.set_column(
        book.schema.get_field_index("inv_sales_chg_3m"), "inv_sales_chg_3m",
        pa.array(((1 + raw) * np.float32(0.8) - 1).astype(np.float32)))
    a = book_relative.adjust(book, book_relative.book_medians([book]))
    b = book_relative.adjust(shocked, book_relative.book_medians([shocked]))
    np.testing.assert_allclose(b.column("inv_sales_chg_3m").to_numpy(zero_copy_only=False),
                               a.column("inv_sales_chg_3m").to_numpy(zero_copy_only=False),
                               atol=1e-6)


def test_bounds_stay_those_of_a_change():
    """No sales stays -100% whatever the book did, the +1000% cap holds, and a book whose
    median change is -100% leaves nothing to read against."""
    got = book_relative.against("pct_change", np.array([-1.0, 10.0, 0.5]),
                                np.array([-0.3, -0.5, -1.0]))
    assert got[0] == -1.0 and got[1] == 10.0 and np.isnan(got[2])


def test_a_date_without_the_book_is_an_error_not_an_unadjusted_row():
    book = _book()
    with pytest.raises(ValueError, match=r"no book medians for as-of date\(s\) \[datetime.date\(2026, 4, 30\)\]"):
        book_relative.adjust(book, {D1: book_relative.book_medians([book])[D1]})


def test_beam_reads_the_shards_against_the_whole_book_as_the_function_does():
    book = _book()
    shards = _shards(book, [0, 40, 101, 150, 202])
    expected = book_relative.adjust(book, book_relative.book_medians([book]))

    def same_rows(tables):
        got = pa.concat_tables(tables)
        got = got.take(np.lexsort([got.column("enterprise_id").to_numpy(zero_copy_only=False),
                                   got.column("as_of_date").to_numpy(zero_copy_only=False)]))
        want = expected.take(np.lexsort([
            expected.column("enterprise_id").to_numpy(zero_copy_only=False),
            expected.column("as_of_date").to_numpy(zero_copy_only=False)]))
        assert got.column_names == want.column_names
        for name in want.column_names:          # NaN equals NaN here, as a missing value
            np.testing.assert_array_equal(got.column(name).to_numpy(zero_copy_only=False),
                                          want.column(name).to_numpy(zero_copy_only=False))

    with BeamTestPipeline() as p:
        out = (p | beam.Create(shards, reshuffle=False)
               | beam_features.ReadAgainstTheBook())
        assert_that(out | beam.combiners.ToList(), lambda ts: same_rows(ts[0]))


def test_reasons_word_the_gap_to_the_book_in_both_languages():
    f = catalog.BY_NAME["inv_sales_chg_3m"]
    zh, en = catalog.reason_text(f, -0.35, 0.0, True)
    assert en == ("Weaker growth in invoiced sales than most firms: 35% below the book's median "
                  "in the last 3 months vs the prior 3 (typical: level with the book's median)")
    assert "低于全部企业中位数35%" in zh and not re.search(r"[A-Za-z]{3,}", zh)
    slope = catalog.BY_NAME["pwr_slope_12m"]
    assert catalog.render_value(slope, np.log(1.02), "en") == "2.0% a month above the book's median"
    assert f.desc_en.endswith(", against the book's median at the date")
