"""The service's typed validation (transforms/validate.py `validate_typed`) keeps, types and
rejects exactly what the nightly `validate_table` does: on the session book's feeds, on hand-made
records, and on every kind of bad value (each sent back to validate_table, which words the reason);
and `split_duplicates` keeps one record per key with or without duplicates."""
import datetime as dt
import glob
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests import handmade
from transforms import feeds, validate


def _same(feed: str, table: pa.Table):
    fast, fast_rejects = validate.validate_typed(feed, table)
    slow, slow_rejects = validate.validate_table(feed, table)
    assert fast.equals(slow, check_metadata=True)
    assert fast_rejects == slow_rejects
    return fast, fast_rejects


def test_the_book_feeds_pass_unchanged(small_feeds):
    kept = 0
    for feed in feeds.FEEDS:
        paths = sorted(glob.glob(os.path.join(small_feeds, feed, "*.parquet")))
        table = pa.concat_tables([pq.read_table(p) for p in paths])
        good, rejects = _same(feed, table)
        assert good.num_rows == table.num_rows and rejects == []
        kept += good.num_rows
    assert kept > 10_000


def test_hand_made_records_pass_unchanged():
    for feed, table in handmade.tables().items():
        good, rejects = _same(feed, table)
        assert good.num_rows == table.num_rows and rejects == []


def _with(feed: str, index: int, **values) -> pa.Table:
    rows = handmade.records()[feed]
    rows[index] = {**rows[index], **values}
    return pa.Table.from_pylist(rows, schema=feeds.FEEDS[feed].schema)


@pytest.mark.parametrize("feed,values,reason", [
    ("invoices", {"amount": -5.0}, "negative amount"),
    ("invoices", {"amount": float("nan")}, "non-finite amount"),
    ("invoices", {"amount": float("inf")}, "non-finite amount"),
    ("invoices", {"amount": 1e15}, "implausible amount"),
    ("invoices", {"direction": "gift"}, "unknown direction"),
    ("invoices", {"counterparty_id": "   "}, "missing counterparty_id"),
    ("invoices", {"invoice_date": None}, "missing invoice_date"),
    ("enterprises", {"province": "Atlantis"}, "unknown province"),
    ("enterprises", {"legal_rep_age": 300}, "implausible legal_rep_age"),
    ("tax_filings", {"filed_late": None}, "missing filed_late"),
    ("utility_bills", {"days_overdue": -1}, "negative days_overdue"),
    ("loans", {"balance": -1.0}, "negative balance"),
])
def test_every_bad_value_gets_the_nightly_reason(feed, values, reason):
    table = _with(feed, 1, **values)
    good, rejects = _same(feed, table)
    assert good.num_rows == table.num_rows - 1
    assert len(rejects) == 1 and rejects[0]["reason"].startswith(reason)


def test_a_far_date_and_a_blank_optional_text_go_to_the_nightly_rules():
    """Both can pass, but only validate_table knows how it reads them: the answer is its own."""
    _same("enterprises", _with("enterprises", 0, established_date=dt.date(2300, 1, 1)))
    good, _ = _same("enterprises", _with("enterprises", 0, uscc_hash=" "))
    assert good.column("uscc_hash")[0].as_py() is None           # blank optional text: missing


def test_an_untyped_table_goes_to_the_nightly_rules():
    strings = pa.table({name: pa.array(["x"], pa.string())
                        for name in feeds.FEEDS["registry_events"].schema.names})
    _same("registry_events", strings)


def test_duplicates_keep_one_record_per_key_in_any_arrival_order():
    table = handmade.tables()["invoices"]
    doubled = pa.concat_tables([table.slice(2, 1), table])
    good, rejects = validate.split_duplicates("invoices", doubled)
    assert good.num_rows == table.num_rows and len(rejects) == 1
    assert rejects[0]["reason"] == "duplicate invoice_id"
    reordered, none = validate.split_duplicates("invoices", table.take([*range(table.num_rows)][::-1]))
    assert none == [] and reordered.equals(validate.split_duplicates("invoices", table)[0])
