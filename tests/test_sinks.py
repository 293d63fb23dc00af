"""The sorted Parquet sink and the Arrow table coder on DirectRunner: parts written where the tables
are made, sorted in memory or merged as sorted runs into the same file; compacted slices."""
import os
import pickle

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_jobs import sinks, sorted_runs
from tests.shared_fs import SharedFileSystem
from transforms.arrow_coder import ArrowTableCoder, compact

SCHEMA = pa.schema([("enterprise_id", pa.string()), ("feature", pa.string()), ("phi", pa.float64()),
                    ("reasons", pa.list_(pa.struct([("code", pa.string())])))])


def _tables():
    """Shards of firms in no order, NaN and -0.0 among the values, and two identical tables (a
    table twice must land twice, as it would from a list of tables)."""
    rng = np.random.default_rng(3)
    out = []
    for shard in range(5):
        firms = [f"E{i:05d}" for i in rng.permutation(40)[:8] + 100 * shard]
        rows = [(f, feat) for f in firms for feat in ("tax_late_3m", "inv_sales_chg_3m", "hc_last")]
        phi = rng.normal(size=len(rows))
        phi[::7] = np.nan
        phi[1] = -0.0
        out.append(pa.table({"enterprise_id": [r[0] for r in rows], "feature": [r[1] for r in rows],
                             "phi": phi, "reasons": [[{"code": f"R{i % 3}"}] * (i % 2)
                                                     for i in range(len(rows))]}, schema=SCHEMA))
    dup = pa.table({"enterprise_id": ["E99999"], "feature": ["hc_last"], "phi": [1.5],
                    "reasons": [[]]}, schema=SCHEMA)
    return out + [dup, dup]


def _write(tables, path, in_memory_bytes):
    with beam.Pipeline() as p:
        (p | beam.Create(tables, reshuffle=False).with_output_types(pa.Table)
         | sinks.WriteSortedParquet(str(path), SCHEMA, ["enterprise_id", "feature"],
                                    in_memory_bytes=in_memory_bytes))
    return pq.read_table(path)


def _bits(table):
    """Row values with floats as bit patterns, so NaN and -0.0 compare exactly."""
    phi = table.column("phi").to_numpy().view(np.uint64).tolist()
    return list(zip(table.column("enterprise_id").to_pylist(), table.column("feature").to_pylist(),
                    phi, table.column("reasons").to_pylist()))


@pytest.mark.parametrize("in_memory_bytes", [sinks.MERGE_IN_MEMORY, 0], ids=["arrow", "merged"])
def test_sorted_sink_writes_every_row_sorted_and_leaves_no_parts(tmp_path, in_memory_bytes):
    tables = _tables()
    got = _write(tables, tmp_path / "out.parquet", in_memory_bytes)
    expected = pa.concat_tables(tables).sort_by([("enterprise_id", "ascending"),
                                                 ("feature", "ascending")])
    assert got.num_rows == expected.num_rows == 5 * 8 * 3 + 2
    assert _bits(got) == _bits(expected)
    assert got.schema.equals(SCHEMA)
    assert os.listdir(tmp_path) == ["out.parquet"]


def test_in_memory_sort_and_merged_runs_write_the_same_rows(tmp_path):
    a = _write(_tables(), tmp_path / "a.parquet", sinks.MERGE_IN_MEMORY)
    b = _write(_tables(), tmp_path / "b.parquet", 0)
    assert _bits(a) == _bits(b)


@pytest.mark.parametrize("in_memory_bytes", [sinks.MERGE_IN_MEMORY, 0], ids=["arrow", "merged"])
def test_an_empty_collection_writes_an_empty_file_with_the_schema(tmp_path, in_memory_bytes):
    got = _write([], tmp_path / "empty.parquet", in_memory_bytes)
    assert got.num_rows == 0 and got.schema.equals(SCHEMA)


def test_arrow_coder_round_trips_and_sizes_a_table_without_encoding_it():
    table = _tables()[0]
    coder = ArrowTableCoder()
    assert _bits(coder.decode(coder.encode(table))) == _bits(table)
    assert coder.estimate_size(table) == table.nbytes
    assert isinstance(beam.coders.registry.get_coder(pa.Table), ArrowTableCoder)


def test_a_compacted_slice_pickles_as_its_own_rows():
    """A Parquet batch is a slice of its row group; pickled (a ToList accumulator), a slice
    carries the whole buffer it was cut from. compact gives the same rows in their own buffers."""
    big = pa.table({"enterprise_id": [f"E{i:07d}" for i in range(200_000)],
                    "capital": np.arange(200_000, dtype=np.float64),
                    "province": pa.array(["Hunan", None] * 100_000)})
    batch = big.slice(150_000, 1_000)
    small = compact(batch)
    assert small.equals(batch) and small.schema == batch.schema
    assert len(pickle.dumps(batch)) > 50 * small.nbytes          # the whole row group
    assert len(pickle.dumps(small)) < 2 * small.nbytes + 10_000   # its own rows
    assert compact(big.slice(0, 0)).num_rows == 0


@pytest.mark.parametrize("in_memory_bytes", [sinks.MERGE_IN_MEMORY, 0], ids=["arrow", "merged"])
def test_a_remote_path_keeps_parts_and_file_on_the_shared_file_system(tmp_path, monkeypatch,
                                                                      in_memory_bytes):
    shared, cwd = tmp_path / "shared", tmp_path / "cwd"
    shared.mkdir(), cwd.mkdir()
    monkeypatch.setattr(SharedFileSystem, "ROOT", str(shared))
    monkeypatch.chdir(cwd)
    assert sinks.is_remote("sharedfs://bucket/run/scores.parquet")
    with beam.Pipeline() as p:
        (p | beam.Create(_tables(), reshuffle=False).with_output_types(pa.Table)
         | sinks.WriteSortedParquet("sharedfs://bucket/run/scores.parquet", SCHEMA,
                                    ["enterprise_id", "feature"], in_memory_bytes=in_memory_bytes))
    local = _write(_tables(), tmp_path / "local.parquet", in_memory_bytes)
    assert _bits(pq.read_table(shared / "bucket" / "run" / "scores.parquet")) == _bits(local)
    assert os.listdir(shared / "bucket" / "run") == ["scores.parquet"]   # parts removed
    assert os.listdir(cwd) == []            # nothing landed on the driver's disk


def test_the_merge_of_sorted_runs_equals_one_sort_in_small_memory(tmp_path, monkeypatch):
    """Many rounds of a few rows a part: ties across parts (in the parts' name order, as a stable
    sort of them in that order gives), null keys last, a part longer than the whole budget with
    one key, an empty part."""
    monkeypatch.setattr(sorted_runs, "PART_BATCH_ROWS", 7)
    schema = pa.schema([("segment", pa.string()), ("n", pa.int64()), ("v", pa.float64())])
    rng = np.random.default_rng(5)
    tables = []
    for part in range(9):
        k = int(rng.integers(0, 120))
        segs = rng.choice(["a", "b", "c", None], size=k, p=[0.3, 0.3, 0.3, 0.1]).tolist()
        tables.append(pa.table({"segment": segs, "n": rng.integers(0, 20, k),
                                "v": rng.normal(size=k)}, schema=schema))
    tables.append(pa.table({"segment": ["b"] * 300, "n": [4] * 300,
                            "v": np.arange(300.0)}, schema=schema))
    tables.append(schema.empty_table())
    keys = ["segment", "n"]
    parts = sorted(sinks.write_part(t, str(tmp_path), schema, keys) for t in tables)
    n = sorted_runs.merge_sorted_runs(parts, str(tmp_path / "out.parquet"), schema, keys,
                                      row_group_rows=50, budget_rows=40)
    got = pq.read_table(tmp_path / "out.parquet")
    in_name_order = pa.concat_tables([pa.ipc.open_file(p).read_all() for p in parts])
    expected = in_name_order.sort_by([(k, "ascending") for k in keys])
    assert n == got.num_rows == sum(t.num_rows for t in tables)
    assert got.equals(expected)
    assert got.column("segment").null_count > 0 and got.column("segment")[-1].as_py() is None
    assert pq.ParquetFile(tmp_path / "out.parquet").metadata.num_row_groups > 5


def test_a_part_is_written_as_a_sorted_run_of_small_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(sorted_runs, "PART_BATCH_ROWS", 16)
    table = _tables()[0]
    reader = pa.ipc.open_file(sinks.write_part(table, str(tmp_path), SCHEMA,
                                               ["enterprise_id", "feature"]))
    assert reader.num_record_batches == -(-table.num_rows // 16)
    run = reader.read_all()
    assert sorted_runs.sort_indices(run, ["enterprise_id", "feature"]) is None
    assert sorted_runs.sort_indices(table, ["enterprise_id", "feature"]) is not None
    assert _bits(run) == _bits(table.sort_by([("enterprise_id", "ascending"),
                                              ("feature", "ascending")]))


def test_the_order_check_agrees_with_arrows_sort():
    """in_order (linear) says a table is in key order exactly when Arrow's stable sort would
    leave it as it is: ties, several keys, nulls and NaN (which Arrow places last)."""
    rng = np.random.default_rng(11)
    for _ in range(400):
        n = int(rng.integers(0, 9))
        table = pa.table({"a": rng.choice(["x", "y", "é", None], n, p=[.4, .4, .15, .05]).tolist(),
                          "b": rng.integers(0, 3, n),
                          "c": rng.choice([0.5, 1.0, np.nan], n)})
        if rng.random() < 0.6:
            table = table.sort_by([("a", "ascending"), ("b", "ascending"), ("c", "ascending")])
        for keys in (["a"], ["b"], ["a", "b"], ["b", "a"], ["a", "b", "c"], ["c"]):
            arrow = pa.compute.sort_indices(table, [(k, "ascending") for k in keys]).to_numpy()
            identity = np.array_equal(arrow, np.arange(n))
            nulls = any(table.column(k).null_count for k in keys) or (
                "c" in keys and bool(np.isnan(table.column("c").to_numpy()).any()))
            # in order <=> Arrow keeps the order (nulls and NaN: "not in order", Arrow sorts)
            assert sorted_runs.in_order(table, keys) == (identity and (not nulls or n < 2))


def test_files_are_written_in_calls_below_a_mebibyte(tmp_path, monkeypatch):
    """One write() of 1 MiB or more is 40x slower in the kernel of the VM the figures come from:
    every temporary file goes out in WRITE_CHUNK pieces, byte for byte."""
    from smescore import files
    assert files.WRITE_CHUNK < 1 << 20
    calls = []

    class Recording:
        def write(self, data):
            calls.append(bytes(data))
    data = pa.py_buffer(np.random.default_rng(0).bytes(3 * files.WRITE_CHUNK + 123))
    files.write_all(Recording(), data)
    assert [len(c) for c in calls] == [files.WRITE_CHUNK] * 3 + [123]
    assert b"".join(calls) == data.to_pybytes()
    files.write_bytes(str(tmp_path / "f.bin"), data)
    assert (tmp_path / "f.bin").read_bytes() == data.to_pybytes()


@pytest.mark.parametrize("in_memory_bytes", [sinks.MERGE_IN_MEMORY, 0], ids=["arrow", "merged"])
def test_parts_written_where_rows_are_made_merge_like_tables_and_are_removed(tmp_path,
                                                                             in_memory_bytes):
    # Some tables arrive as the names of parts a PartWriter wrote elsewhere (the scoring
    # workers write the attributions): the same file as from the tables, and the parts are gone.
    tables = _tables()
    elsewhere = tmp_path / "written-by-workers"
    elsewhere.mkdir()
    writer = sinks.PartWriter(str(elsewhere), SCHEMA, ("enterprise_id", "feature"))
    # the two identical tables (5, 6) both as parts: one file, named twice, read twice
    mixed = [writer.write(t) if i % 2 or i == 6 else t for i, t in enumerate(tables)]
    assert sum(isinstance(m, str) for m in mixed) == 4 and len(os.listdir(elsewhere)) == 3
    with beam.Pipeline() as p:
        (p | beam.Create(mixed, reshuffle=False)
         | sinks.WriteSortedParquet(str(tmp_path / "mixed.parquet"), SCHEMA,
                                    ["enterprise_id", "feature"], in_memory_bytes=in_memory_bytes))
    expected = _write(tables, tmp_path / "tables.parquet", in_memory_bytes)
    assert _bits(pq.read_table(tmp_path / "mixed.parquet")) == _bits(expected)
    assert os.listdir(elsewhere) == []
    assert sorted(os.listdir(tmp_path)) == ["mixed.parquet", "tables.parquet", "written-by-workers"]


def test_rows_with_equal_keys_follow_the_part_names_whichever_folder_holds_the_parts(tmp_path):
    # Two rows with the same keys and other values: their order in the file is that of their
    # parts' names (content hashes), whether a part was written by a PartWriter elsewhere or by
    # the sink in its own folder. Both ways round, so that a folder-first order fails one.
    a, b = (pa.table({"enterprise_id": ["E1"], "feature": ["hc_last"], "phi": [phi],
                      "reasons": [[]]}, schema=SCHEMA) for phi in (1.0, 2.0))
    expected = _bits(_write([a, b], tmp_path / "tables.parquet", 0))
    for n, (elsewhere, own) in enumerate(((a, b), (b, a))):
        folder = tmp_path / f"workers-{n}"
        folder.mkdir()
        writer = sinks.PartWriter(str(folder), SCHEMA, ("enterprise_id", "feature"))
        with beam.Pipeline() as p:
            (p | beam.Create([writer.write(elsewhere), own], reshuffle=False)
             | sinks.WriteSortedParquet(str(tmp_path / f"mixed-{n}.parquet"), SCHEMA,
                                        ["enterprise_id", "feature"], in_memory_bytes=0))
        assert _bits(pq.read_table(tmp_path / f"mixed-{n}.parquet")) == expected
