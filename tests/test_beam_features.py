"""The Beam feature job on DirectRunner: same numbers as the in-process function, training
snapshots equal the nightly path, malformed records are kept with a reason."""
import datetime as dt
import json
import os

import apache_beam as beam
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from beam_jobs import build_features, sinks
from beam_jobs.sources import LocalFilesSource
from tests import handmade
from tests.shared_fs import SharedFileSystem
from transforms import beam_features, book_relative, catalog, featurize, pit


def _direct(tables, as_of):
    """The in-process features of a whole book, read against that book as the job reads them."""
    table = pit.compute_features(pit.FirmFrames.from_tables(tables), as_of)
    return book_relative.adjust(table, book_relative.book_medians([table])).to_pandas()


def _run_features(feeds_dir, as_of_dates, out, with_labels=False, n_shards=3):
    with beam.Pipeline() as p:
        feats, _ = LocalFilesSource(feeds_dir).read(p) | beam_features.ComputeFeatures(
            as_of_dates, n_shards=n_shards, with_labels=with_labels)
        feats | sinks.WriteSortedParquet(str(out), featurize.FEATURE_SCHEMA,
                                         ["as_of_date", "enterprise_id"])
    return pq.read_table(out).to_pandas()


def test_feature_job_writes_what_the_function_computes(tmp_path):
    feeds_dir = handmade.write(str(tmp_path / "feeds"))
    out = tmp_path / "features.parquet"
    build_features.run([f"--feeds={feeds_dir}", "--as_of=2026-06-30", f"--out={out}",
                        "--n_shards=3"], save_main_session=False)
    job = pq.read_table(out).to_pandas()
    direct = _direct(handmade.tables(), handmade.D)
    assert list(job["enterprise_id"]) == ["E1", "E2", "E4"]
    pd.testing.assert_frame_equal(job[list(catalog.NAMES)], direct[list(catalog.NAMES)],
                                  check_dtype=False)
    assert pq.read_table(str(out).replace(".parquet", ".rejected.parquet")).num_rows == 0


def test_training_snapshot_equals_the_nightly_features(tmp_path):
    feeds_dir = handmade.write(str(tmp_path / "feeds"))
    dates = [dt.date(2026, 3, 31), handmade.D, dt.date(2026, 9, 30)]
    snapshots = _run_features(feeds_dir, dates, tmp_path / "snap.parquet", with_labels=True)
    nightly = _run_features(feeds_dir, [handmade.D], tmp_path / "nightly.parquet", n_shards=7)
    on_d = pd.to_datetime(snapshots["as_of_date"]).dt.date == handmade.D
    snap_d = snapshots[on_d].reset_index(drop=True)
    pd.testing.assert_frame_equal(snap_d[list(catalog.NAMES)], nightly[list(catalog.NAMES)])
    assert snapshots["as_of_date"].nunique() == 3


def test_a_large_book_gets_more_shards_and_the_same_features(tmp_path, monkeypatch):
    """--n_shards is a floor: past MAX_FIRMS_PER_SHARD firms a shard the book is cut into more
    shards (one shard's memory stays flat as the book grows), and no feature changes."""
    assert featurize.shard_count(100_000, 32) == 32          # the 100k book: the default
    assert featurize.shard_count(1_000_000, 32) == 313
    assert featurize.shard_count(10, 4) == 4
    feeds_dir = handmade.write(str(tmp_path / "feeds"))
    few = _run_features(feeds_dir, [handmade.D], tmp_path / "few.parquet", n_shards=1)
    monkeypatch.setattr(featurize, "MAX_FIRMS_PER_SHARD", 1)
    index = beam_features.build_firm_index([handmade.tables()["enterprises"]], 1)
    assert len(set(index["shards"].tolist())) > 1            # one shard per controller group
    many = _run_features(feeds_dir, [handmade.D], tmp_path / "many.parquet", n_shards=1)
    pd.testing.assert_frame_equal(few, many)


BAD = {
    "invoices": [
        dict(invoice_id="", enterprise_id="E1", invoice_date="2026-05-01", direction="sales",
             amount="10", counterparty_id="K1", status="normal"),                   # missing id
        dict(invoice_id="B2", enterprise_id="E1", invoice_date="2026-05-01", direction="sales",
             amount="-5", counterparty_id="K1", status="normal"),                   # negative
        dict(invoice_id="B3", enterprise_id="E1", invoice_date="2026-13-45", direction="sales",
             amount="5", counterparty_id="K1", status="normal"),                    # bad date
        dict(invoice_id="B4", enterprise_id="E1", invoice_date="2026-05-01", direction="gift",
             amount="5", counterparty_id="K1", status="normal"),                    # category
        dict(invoice_id="B5", enterprise_id="E1", invoice_date="2026-05-01", direction="sales",
             amount="inf", counterparty_id="K1", status="normal"),                  # inf
        dict(invoice_id="B6", enterprise_id="E1", invoice_date="2026-05-01", direction="sales",
             amount="abc", counterparty_id="K1", status="normal"),                  # not a number
        dict(invoice_id="B7", enterprise_id="E99", invoice_date="2026-05-01", direction="sales",
             amount="5", counterparty_id="K1", status="normal"),                    # unknown firm
        dict(invoice_id="S0", enterprise_id="E1", invoice_date="2025-07-10", direction="sales",
             amount="10000.0", counterparty_id="K1", status="normal"),              # duplicate
    ],
    "utility_bills": [
        dict(enterprise_id="E1", period_month="2026-05-01", bill_date="2026-06-05", kwh="nan",
             amount="1", days_overdue="0"),                                         # NaN
        dict(enterprise_id="E1", period_month="2026-05-01", bill_date="2026-06-05", kwh="1",
             amount="1", days_overdue="2.5"),                                       # non-integer
    ],
    "enterprises": [
        dict(enterprise_id="E7", uscc_hash="h", industry="Z", province="Zhejiang",
             legal_form="limited_company", registered_capital="1", established_date="2020-01-01",
             legal_rep_age="40", controller_id="C7"),                               # unknown industry
    ],
}


def test_malformed_records_are_rejected_with_reasons_and_the_rest_unchanged(tmp_path):
    feeds_dir = handmade.write(str(tmp_path / "feeds"))
    for feed, rows in BAD.items():
        table = pa.Table.from_pylist(rows)
        pacsv.write_csv(table, os.path.join(feeds_dir, feed, "bad.csv"))
    out = tmp_path / "features.parquet"
    build_features.run([f"--feeds={feeds_dir}", "--as_of=2026-06-30", f"--out={out}"],
                       save_main_session=False)
    rejected = pq.read_table(str(out).replace(".parquet", ".rejected.parquet")).to_pandas()
    reasons = dict(zip(rejected["record_json"].map(lambda j: json.loads(j).get("invoice_id")
                                                   or json.loads(j).get("enterprise_id")),
                       rejected["reason"]))
    assert len(rejected) == 11
    assert set(rejected["reason"]) == {
        "missing invoice_id", "negative amount", "unparseable date in invoice_date: '2026-13-45'",
        "unknown direction 'gift'", "non-finite amount", "unparseable value in amount: 'abc'",
        "unknown enterprise_id", "duplicate invoice_id", "non-finite kwh",
        "non-integer days_overdue", "unknown industry 'Z'"}
    assert reasons["B7"] == "unknown enterprise_id"
    job = pq.read_table(out).to_pandas()
    clean = _direct(handmade.tables(), handmade.D)
    pd.testing.assert_frame_equal(job[list(catalog.NAMES)], clean[list(catalog.NAMES)],
                                  check_dtype=False)


@pytest.mark.parametrize("shared", [False, True], ids=["local", "shared-file-system"])
def test_rows_spread_over_files_meet_in_their_shard_and_shuffle_files_are_removed(
        tmp_path, monkeypatch, shared):
    """Every feed split into three files (three read batches, so a shard's rows come from several
    shuffle files): the same features as in one piece, and no shuffle file left behind, on the
    local disk or on a file system the workers share (as under a gs:// --temp_location)."""
    feeds_dir = str(tmp_path / "feeds")
    for name, table in handmade.tables().items():
        os.makedirs(os.path.join(feeds_dir, name))
        step = max(1, -(-table.num_rows // 3))
        for i, start in enumerate(range(0, table.num_rows, step)):
            pq.write_table(table.slice(start, step), os.path.join(feeds_dir, name, f"p{i}.parquet"))
    shuffle = tmp_path / "shuffle"
    folder = str(shuffle)
    if shared:
        monkeypatch.setattr(SharedFileSystem, "ROOT", str(tmp_path))
        folder = "sharedfs://shuffle"
    with beam.Pipeline() as p:
        feats, _ = LocalFilesSource(feeds_dir).read(p) | beam_features.ComputeFeatures(
            [handmade.D], n_shards=2, shuffle_folder=folder)
        feats | sinks.WriteSortedParquet(str(tmp_path / "f.parquet"), featurize.FEATURE_SCHEMA,
                                         ["as_of_date", "enterprise_id"])
    job = pq.read_table(tmp_path / "f.parquet").to_pandas()
    direct = _direct(handmade.tables(), handmade.D)
    pd.testing.assert_frame_equal(job[list(catalog.NAMES)], direct[list(catalog.NAMES)],
                                  check_dtype=False)
    assert not shuffle.exists()
