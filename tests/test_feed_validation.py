"""The service's typed validation (transforms/validate.py `validate_typed`) keeps, types and
rejects exactly what the nightly `validate_table` does: on the session book's feeds, on hand-made
records, and on every kind of bad value (each sent back to validate_table, which words the reason);
and `split_duplicates` keeps one record per key with or without duplicates."""
import datetime as dt
import glob
import os

import pyarrow as pa
import pyarrow.compute as pc
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


def test_arrow_trims_the_whitespace_python_strips():
    """validate_typed finds blanks with Arrow's utf8_trim_whitespace, validate_table with Python's
    str.strip: the same characters, every code point (surrogates cannot be UTF-8)."""
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    blank = pc.equal(pc.utf8_trim_whitespace(pa.array(chars)), "").to_numpy(zero_copy_only=False)
    assert [c for c, b in zip(chars, blank) if b != c.isspace()] == []
    assert blank.sum() == 29
    for text in ("\x1c", "\x1f \x85", "\u3000\t"):       # blank: the nightly rules' reason
        good, rejects = _same("invoices", _with("invoices", 1, counterparty_id=text))
        assert len(rejects) == 1 and rejects[0]["reason"].startswith("missing counterparty_id")


def test_a_composite_key_twice_is_a_duplicate_and_a_null_in_it_is_decided_exactly():
    table = handmade.tables()["tax_filings"]
    again = table.slice(1, 1).set_column(
        table.schema.get_field_index("vat_paid"), "vat_paid", pa.array([123.0]))
    good, rejects = validate.split_duplicates("tax_filings", pa.concat_tables([table, again]))
    assert good.num_rows == table.num_rows
    assert [r["reason"] for r in rejects] == ["duplicate enterprise_id/period_month"]
    # the same firm in two months is no duplicate, nor are two firms with no period
    assert validate._every_key_once(table, ["enterprise_id", "period_month"])
    nulls = pa.table({"enterprise_id": ["E1", "E2"], "period_month": pa.array([None, None], pa.date32())})
    assert not validate._every_key_once(nulls, ["enterprise_id", "period_month"])
    assert validate.split_duplicates("tax_filings", pa.concat_tables([
        table, table.slice(0, 2).set_column(1, "period_month", pa.array([None, None], pa.date32()))
        .set_column(0, "enterprise_id", pa.array(["E1", "E2"]))]))[1] == []


def test_a_feed_without_records_passes_without_the_nightly_rules(monkeypatch):
    """A firm with no registry event sends an empty table: nothing to check, no pandas."""
    def nightly(*_):
        raise AssertionError("validate_table called")
    monkeypatch.setattr(validate, "validate_table", nightly)
    for feed, schema in ((f, feeds.FEEDS[f].schema) for f in feeds.FEEDS):
        good, rejects = validate.validate_typed(feed, schema.empty_table())
        assert good.num_rows == 0 and good.schema.equals(schema) and rejects == []
