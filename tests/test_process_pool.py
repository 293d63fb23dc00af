"""Stages in worker processes (transforms/process_pool.py): the same outputs, in the same order,
as in the runner's own process; counters, tagged outputs and errors come back."""
import datetime as dt
import os
import shutil

import apache_beam as beam
import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.utils.windowed_value import WindowedValue

from beam_jobs import score_portfolio
from beam_jobs.sources import LocalFilesSource
from beam_jobs import sinks
from smescore.tables import TABLES
from tests.test_score_portfolio import MALFORMED
from transforms import beam_features, featurize, process_pool, progress
from transforms.process_pool import InWorkerProcesses, Work

AS_OF = dt.date(2026, 10, 31)


def squares_and_odd_ones(n: int, offset: int) -> Work:
    """A worker's function: the main output, a tagged one, a counter; slow for the first
    element so that a later one finishes first."""
    if n == 0:
        import time
        time.sleep(0.5)
    work = Work()
    work.emit(n * n + offset)
    if n % 2:
        work.emit(f"odd {n}", "odd")
    work.count("elements_squared", 1)
    return work


def fails_on_three(n: int) -> Work:
    if n == 3:
        raise ValueError("element 3 is malformed")
    work = Work()
    work.emit(n)
    return work


def _unwrapped(out):
    """(tag, value) of what the DoFn yielded (finish_bundle's outputs are windowed values)."""
    tag = out.tag if isinstance(out, beam.pvalue.TaggedOutput) else None
    value = out.value if isinstance(out, beam.pvalue.TaggedOutput) else out
    return tag, value.value if isinstance(value, WindowedValue) else value


@pytest.mark.parametrize("workers", [1, 2])
def test_outputs_come_back_in_input_order_with_their_tags(workers):
    """The DoFn itself: element 0 finishes last in a worker, yet comes out first."""
    dofn = InWorkerProcesses(squares_and_odd_ones, 100, workers=workers)
    dofn.start_bundle()
    out = [o for n in range(12) for o in dofn.process(n)]
    out += list(dofn.finish_bundle() or [])
    dofn.teardown()
    expected = []
    for n in range(12):
        expected.append((None, n * n + 100))
        if n % 2:
            expected.append(("odd", f"odd {n}"))
    assert [_unwrapped(o) for o in out] == expected


def test_a_pipeline_gets_the_tagged_outputs_and_the_counters_of_its_workers():
    with beam.Pipeline() as p:
        res = (p | beam.Create(list(range(12)))
               | beam.ParDo(InWorkerProcesses(squares_and_odd_ones, 100, workers=2))
               .with_outputs("odd", main="squares"))
        assert_that(res.squares, equal_to([n * n + 100 for n in range(12)]))
        assert_that(res.odd, equal_to([f"odd {n}" for n in range(1, 12, 2)]), label="odd")
    counters = p.result.metrics().query(
        beam.metrics.MetricsFilter().with_name("elements_squared"))["counters"]
    assert sum(c.committed for c in counters) == 12


def advances_its_own_progress(n: int) -> Work:
    progress.advance("firms featurized", n)      # as featurize.featurize does
    return Work()


def test_progress_advanced_in_a_worker_is_logged_by_the_runner_process(monkeypatch):
    """A spawned worker has no log handler: what it advances comes back with its Work."""
    logged = []
    monkeypatch.setattr(progress, "EVERY_S", 0.0)
    monkeypatch.setattr(progress.logging.getLogger("smescore.progress"), "info",
                        lambda fmt, line, **kw: logged.append(line))
    work = process_pool._in_worker(advances_its_own_progress, 7)
    assert work.progress == {"firms featurized": 7} and logged == []
    dofn = InWorkerProcesses(advances_its_own_progress, workers=2)
    dofn.start_bundle()
    for n in (3, 4):
        list(dofn.process(n))
    list(dofn.finish_bundle() or [])
    dofn.teardown()
    assert any("firms featurized" in line for line in logged)
    assert progress._counts["firms featurized"] >= 7


def test_an_error_in_a_worker_fails_the_stage_with_its_message():
    with pytest.raises(Exception, match="element 3 is malformed"):
        with beam.Pipeline() as p:
            (p | beam.Create(list(range(6)))
             | beam.ParDo(InWorkerProcesses(fails_on_three, workers=2)))


def test_workers_default_to_one_a_core_on_direct_runner_and_none_elsewhere(monkeypatch):
    monkeypatch.delenv(process_pool.ENV, raising=False)
    assert process_pool.workers_for(beam.Pipeline()) == os.cpu_count()
    monkeypatch.setenv(process_pool.ENV, "3")
    assert process_pool.workers_for(beam.Pipeline()) == 3

    class DataflowRunner:            # the runner's class name is what decides
        pass

    monkeypatch.delenv(process_pool.ENV)
    pipeline = beam.Pipeline()
    pipeline.runner = DataflowRunner()
    assert process_pool.workers_for(pipeline) == 1
    # A job started inside a worker (an unguarded script, imported by the spawn) runs in place.
    monkeypatch.setattr(process_pool.multiprocessing, "parent_process", lambda: object())
    assert process_pool.workers_for(beam.Pipeline()) == 1


def test_the_shared_pool_stops_its_workers_once_idle(monkeypatch):
    monkeypatch.setattr(process_pool, "IDLE_S", 0.2)
    pool = process_pool._SharedPool()
    executor = pool.acquire(2)
    pids = set(executor.map(_pid, range(4)))
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    assert pool.acquire(2) is executor             # a second stage shares it
    pool.release()
    pool.release()
    import time
    time.sleep(1.0)
    assert pool._executor is None
    # the workers exit: the idle timer's shutdown joins them, which took over 0.8 s on a slow,
    # busy host, so wait for it (bounded) instead of assuming how long it takes
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _pid(_):
    return os.getpid()


def _features(feeds, out, with_labels):
    with beam.Pipeline() as p:
        feats, rejected = LocalFilesSource(feeds).read(p) | beam_features.ComputeFeatures(
            [dt.date(2025, 6, 30), AS_OF] if with_labels else [AS_OF], n_shards=4,
            with_labels=with_labels)
        feats | sinks.WriteSortedParquet(str(out), featurize.FEATURE_SCHEMA,
                                         ["as_of_date", "enterprise_id"])
    return pq.read_table(out).to_pandas()


def test_training_snapshots_with_labels_are_the_same_with_two_workers(small_feeds, tmp_path,
                                                                     monkeypatch):
    one = _features(small_feeds, tmp_path / "one.parquet", True)
    monkeypatch.setenv(process_pool.ENV, "2")
    two = _features(small_feeds, tmp_path / "two.parquet", True)
    assert len(one) > 1000 and one["label_default_12m"].notna().any()
    pd.testing.assert_frame_equal(one, two)


def _night(feeds, registry, warehouse):
    return score_portfolio.run([f"--feeds={feeds}", f"--as_of={AS_OF}", f"--registry={registry}",
                                f"--warehouse={warehouse}", "--n_shards=4"],
                               save_main_session=False, progress=lambda m: None)


def test_a_night_with_two_workers_publishes_the_same_rows(small_feeds, trained, tmp_path,
                                                          monkeypatch):
    """Every table, every row: the night in one process and with two worker processes."""
    registry, _, _ = trained
    feeds = tmp_path / "feeds"                     # with malformed records: rejects cross too
    shutil.copytree(small_feeds, feeds)
    for feed, rows in MALFORMED.items():
        pacsv.write_csv(pa.Table.from_pylist(rows), str(feeds / feed / "malformed.csv"))
    one = _night(feeds, registry, tmp_path / "one.duckdb")
    monkeypatch.setenv(process_pool.ENV, "2")
    two = _night(feeds, registry, tmp_path / "two.duckdb")
    assert one["run_id"] == two["run_id"] and one["firms"] == two["firms"] > 1000
    assert one["rows_rejected"] == two["rows_rejected"] == 11
    timestamps = {"started_at", "finished_at"}
    with duckdb.connect() as con:
        con.execute(f"ATTACH '{tmp_path / 'one.duckdb'}' AS a (READ_ONLY)")
        con.execute(f"ATTACH '{tmp_path / 'two.duckdb'}' AS b (READ_ONLY)")
        compared = 0
        for table in TABLES:
            cols = [r[0] for r in con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE database_name = 'a' "
                "AND table_name = ?", [table]).fetchall() if r[0] not in timestamps]
            if not cols:
                continue
            select = ", ".join(f'"{c}"' for c in cols)
            n = con.execute(f"SELECT count(*) FROM a.{table}").fetchone()[0]
            for x, y in (("a", "b"), ("b", "a")):
                differing = con.execute(f"SELECT count(*) FROM (SELECT {select} FROM {x}.{table} "
                                        f"EXCEPT ALL SELECT {select} FROM {y}.{table})").fetchone()
                assert differing[0] == 0, (table, x)
            compared += n
    assert compared > 100_000          # the attributions alone
