"""Parquet feed batches named by (file, row group) and read where they are used
(transforms/row_groups.py): the same tables Beam's Parquet reader gives, and the same feed
coverage for the publication gates."""
import datetime as dt
import glob
import os
import re

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.util import assert_that

from beam_jobs import gates
from beam_jobs.sources import LocalFilesSource
from smescore.errors import BadInput
from tests import handmade
from transforms import row_groups


def _feeds_in_small_row_groups(folder: str) -> str:
    """The handmade feeds, each in two files of 3-row row groups."""
    for name, table in handmade.tables().items():
        os.makedirs(os.path.join(folder, name))
        half = table.num_rows // 2
        for i, part in enumerate((table.slice(0, half), table.slice(half))):
            pq.write_table(part, os.path.join(folder, name, f"part-{i:05d}.parquet"),
                           row_group_size=3)
    return folder


def test_every_row_group_is_named_once_and_reads_as_parquet_reads_it(tmp_path):
    feeds = _feeds_in_small_row_groups(str(tmp_path / "feeds"))
    paths = sorted(os.path.join(feeds, "invoices", f) for f in os.listdir(f"{feeds}/invoices"))
    groups = row_groups.of_files(paths)
    expected = [(p, i, pq.ParquetFile(p).metadata.row_group(i).num_rows)
                for p in paths for i in range(pq.ParquetFile(p).metadata.num_row_groups)]
    assert [(g.path, g.index, g.num_rows) for g in groups] == expected
    assert len(groups) > 2 and {g.num_rows for g in groups} >= {3}
    for g in groups:
        table = row_groups.read(g)
        assert table.equals(pq.ParquetFile(g.path).read_row_group(g.index))
        assert table.num_rows == g.num_rows
    # Only the columns asked for that the file has; a table passes through the same way.
    dates = row_groups.read(groups[0], ["invoice_date", "not_a_column"])
    assert dates.column_names == ["invoice_date"]
    table = row_groups.read(groups[0])
    assert row_groups.read(table) is table
    assert row_groups.read(table, ["not_a_column", "invoice_date"]).equals(dates)


def test_the_local_source_gives_the_tables_beams_parquet_reader_gives(tmp_path):
    feeds = _feeds_in_small_row_groups(str(tmp_path / "feeds"))

    def same_tables(expected_glob):
        expected = list(pq.ParquetFile(p).read_row_group(i)
                        for p in sorted(glob.glob(expected_glob))
                        for i in range(pq.ParquetFile(p).metadata.num_row_groups))

        def check(tables):
            key = lambda t: t.to_pylist()[0]["invoice_id"]  # noqa: E731
            got, want = sorted(tables, key=key), sorted(expected, key=key)
            assert len(got) == len(want) and all(a.equals(b) for a, b in zip(got, want))
        return check

    with beam.Pipeline() as p:
        named = LocalFilesSource(feeds).read(p)["invoices"]
        ours = named | beam.Map(row_groups.read)
        beams = p | beam.io.ReadFromParquetBatched(os.path.join(feeds, "invoices", "*.parquet"))
        assert_that(ours, same_tables(os.path.join(feeds, "invoices", "*.parquet")), label="ours")
        assert_that(beams, same_tables(os.path.join(feeds, "invoices", "*.parquet")),
                    label="beams")


def test_feed_coverage_of_named_row_groups_equals_that_of_their_tables(tmp_path):
    feeds = _feeds_in_small_row_groups(str(tmp_path / "feeds"))
    for feed in ("invoices", "loans", "utility_bills"):
        paths = sorted(os.path.join(feeds, feed, f) for f in os.listdir(f"{feeds}/{feed}"))
        groups = row_groups.of_files(paths)
        tables = [row_groups.read(g) for g in groups]
        whole = pa.concat_tables(tables)
        column = whole.column(gates.feed_contract.FEEDS[feed].date_column).to_pylist()
        for as_of in (min(column), max(column), dt.date(2000, 1, 31)):
            fn = gates.FeedCoverageFn(feed, as_of)
            by_name, by_table = (fn.extract_output(_combine(fn, batches))
                                 for batches in (groups, tables))
            assert by_name == by_table
            known = [d for d in column if d <= as_of]
            assert by_name == {"feed": feed, "rows": whole.num_rows,
                               "latest": max(known) if known else None}


def _combine(fn, batches):
    acc = fn.create_accumulator()
    for b in batches:
        acc = fn.add_input(acc, b)
    return acc


def test_a_corrupt_page_behind_a_good_footer_is_named_bad_input(tmp_path):
    # The footer reads (the source lists the row groups), the page does not: a one-line error
    # naming the file and row group, with the bad-input exit code, not an internal error.
    feeds = _feeds_in_small_row_groups(str(tmp_path / "feeds"))
    path = os.path.join(feeds, "invoices", "part-00000.parquet")
    data = bytearray(open(path, "rb").read())
    data[4:400] = bytes(b ^ 0xFF for b in data[4:400])
    open(path, "wb").write(data)
    groups = row_groups.of_files([path])
    with pytest.raises(BadInput, match=rf"^{re.escape(path)}: row group 0 is not readable \(.+\); "
                                       r"replace the file with a complete copy or remove it$"):
        row_groups.read(groups[0])
