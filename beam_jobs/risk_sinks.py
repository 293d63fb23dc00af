"""Where a run's risk tables go: the DuckDB warehouse file (the embedded default) or a BigQuery
dataset. Both take the same call, `publish(as_of_date, {table: rows}, run_record)` (rows: an Arrow
table, or a StagedTable of Parquet files streamed batch by batch), check the tables against the
contract first (smescore.warehouse.prepare_publish), and replace the date's rows in every table
and the run's row in `runs` atomically.

BigQuery: Parquet load jobs land every table in a run-scoped staging table, declared with the
contract's schema — the per-firm tables and the summary from the nightly pipeline's workers
(ParquetLoader, WORKER_LOADED), the small rest from the driver; then ONE multi-statement
transaction deletes the date's rows and inserts the staged ones, table by table; then the staging
tables are dropped. A failure before or inside the transaction leaves the published rows as they
were.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from beam_jobs import sinks
from beam_jobs.options import BigQueryConfig
from smescore import bigquery as bqlib
from smescore import files
from smescore import tables as contract
from smescore.warehouse import (PublishError, StagedTable, Warehouse, conform, conform_run_rows,
                                prepare_publish, prepare_replace, run_record_table)


# The risk tables of a firm each (and the summary computed from them) that the nightly pipeline's
# workers load into BigQuery themselves (ParquetLoader): nothing per firm passes the driver.
WORKER_LOADED = ("scores", "scores_shadow", "attributions", "firm_segments", "portfolio_summary")


def prestaged_tables(cfg) -> tuple[str, ...]:
    """The risk tables the workers load into the run's BigQuery staging tables (WORKER_LOADED);
    none for the DuckDB warehouse, which the driver fills from the staged files."""
    return WORKER_LOADED if cfg.sink == "bigquery" else ()


def write_load_file(rows: pa.Table | StagedTable, name: str, path: str, check=None) -> int:
    """A risk table's rows, conformed to the contract batch by batch (`check`: a table -> the
    conformed table; default `conform`), as one Parquet load file at `path`; its size in bytes.
    A staged table is streamed, never read whole."""
    check = check or functools.partial(conform, name)
    pieces = rows.conformed(check) if isinstance(rows, StagedTable) else [check(rows)]
    with pq.ParquetWriter(path, contract.arrow_schema(name)) as writer:
        for piece in pieces:
            writer.write_table(piece)
    return os.path.getsize(path)


LOADED_SCHEMA = pa.schema([("table", pa.string()), ("rows", pa.int64()),
                           ("load_bytes", pa.int64())])


@dataclasses.dataclass(frozen=True)
class ParquetLoader:
    """The workers' side of a BigQuery publication: a risk table the pipeline staged (a sorted
    Parquet file) -> checked against the contract and conformed, batch by batch -> one Parquet
    load job into the run's staging table. Only its row count and load bytes go on (to
    `prestaged.parquet`, which the driver checks and publishes in its transaction), so rows of
    this size never pass through the driver. Picklable: the client is made where it runs."""
    bq: BigQueryConfig
    emulator: Optional[str]
    as_of_date: dt.date
    run_id: str
    versions: tuple[str, ...]

    def __call__(self, name: str, staged_path: str) -> dict:
        conn = bqlib.Connection(self.bq.project, self.bq.location, self.emulator)
        check = functools.partial(self._check, name)
        with tempfile.TemporaryDirectory(prefix="smescore-load-") as work:
            local = staged_path
            if files.is_remote(staged_path):
                local = files.download(staged_path, os.path.join(work, "staged.parquet"))
            load_file = os.path.join(work, f"{name}.parquet")
            size = write_load_file(StagedTable.of(local), name, load_file, check)
            rows = bqlib.load_parquet(conn, self.bq.risk_dataset,
                                      bqlib.staging_name(self.run_id, name), load_file)
        return {"table": name, "rows": rows, "load_bytes": size}

    def _check(self, name: str, table: pa.Table) -> pa.Table:
        return conform_run_rows(name, table, self.as_of_date, self.run_id, list(self.versions))


def write_loaded(loaded: list[dict], path: str) -> None:
    """The rows and load bytes of every table the workers loaded (read back at publish)."""
    sinks.write_sorted_parquet([pa.Table.from_pylist(loaded, LOADED_SCHEMA)], path,
                               LOADED_SCHEMA, ["table"])


class BigQueryRiskSink:
    """The risk tables in `project.risk_dataset`."""

    def __init__(self, bq, conn: Optional[bqlib.Connection] = None):
        self.bq = bq
        self.dataset = bq.risk_dataset
        self.conn = conn or bqlib.Connection(bq.project, bq.location)
        self.tables = bqlib.RiskTables(self.conn, self.dataset)   # reads them back

    def __repr__(self) -> str:
        return f"BigQuery({self.bq.project}.{self.dataset})"

    def ensure_schema(self) -> None:
        bqlib.ensure_schema(self.conn, self.dataset)

    def query(self, sql: str, params=()) -> pa.Table:
        """Read the risk tables in DuckDB's SQL, as a Warehouse is read (bigquery.RiskTables)."""
        return self.tables.query(sql, params)

    def has_table(self, name: str) -> bool:
        return self.tables.has_table(name)

    @property
    def instance(self) -> str:
        """The Pushgateway grouping key's instance: the dataset the job publishes into."""
        return self.tables.instance

    def table_spec(self, table: str) -> str:
        return f"{self.bq.project}:{self.dataset}.{table}"

    def loader(self, as_of_date: dt.date, run_id: str, versions: Sequence[str]) -> ParquetLoader:
        """What the pipeline's workers load the run's large tables with (prestaged_tables)."""
        return ParquetLoader(self.bq, self.conn.emulator, as_of_date, run_id, tuple(versions))

    def create_staging(self, run_id: str, names: Sequence[str]) -> None:
        """Empty staging tables of the run (contract schema, expiring after STAGING_TTL), replacing
        any a crashed attempt left."""
        for name in names:
            bqlib.create_staging_table(self.conn, bqlib.table_resource(
                self.conn, self.dataset, name, bqlib.staging_name(run_id, name)))

    def drop_staging(self, run_id: str, names: Sequence[str]) -> None:
        bqlib.drop_tables(self.conn, self.dataset, [bqlib.staging_name(run_id, n) for n in names])

    def _load(self, staged: Mapping[str, str], tables: Mapping[str, pa.Table | StagedTable],
              work: str) -> None:
        """Every table (checked already), conformed into a Parquet file, loaded into its staging
        table: one load job each, no rows through Beam or JSON."""
        for name, rows in tables.items():
            path = os.path.join(work, f"{name}.parquet")
            write_load_file(rows, name, path)
            bqlib.load_parquet(self.conn, self.dataset, staged[name], path)

    def publish(self, as_of_date: dt.date, tables: Mapping[str, pa.Table | StagedTable],
                run_record: Mapping[str, Any], challengers: Sequence[str] = (),
                prestaged: Optional[Mapping[str, int]] = None) -> dict[str, int]:
        """Replace `as_of_date`'s rows in every given table and the run's row, atomically; rows
        may carry the run's model version or one of its `challengers` (shadow scores).
        A table is an Arrow table or a StagedTable (Parquet files, streamed into the load file).
        `prestaged` {table: rows}: tables the pipeline's workers already loaded into the run's
        staging tables (ParquetLoader), published in the same transaction.
        Returns {table: rows written}; raises ValueError (bad input, nothing touched) or
        PublishError (nothing replaced)."""
        conformed, run = prepare_publish(as_of_date, tables, run_record, challengers)
        everything = {**conformed, "runs": run}
        prestaged = dict(prestaged or {})
        if set(prestaged) & set(everything):
            raise ValueError(f"tables both given and prestaged: {set(prestaged) & set(everything)}")
        run_id = run_record["run_id"]
        staged = {name: bqlib.staging_name(run_id, name) for name in [*everything, *prestaged]}
        expected = {**{name: t.num_rows for name, t in everything.items()}, **prestaged}
        self._stage_and_replace(f"publish of {as_of_date} (run {run_id})", as_of_date, run_id,
                                everything, staged, expected, keys_from="runs")
        self._verify(as_of_date, expected, run_id, run.column("attempt_id")[0].as_py())
        return expected

    def _stage_and_replace(self, what: str, as_of_date: dt.date, staging_key: str,
                           tables: Mapping[str, pa.Table], staged: Mapping[str, str],
                           expected: Mapping[str, int], keys_from: str) -> None:
        """Load `tables` into their staging tables (the rest of `staged` is loaded already),
        check every staged count against `expected`, then ONE transaction replaces the date; the
        staging tables are dropped whatever happens. Raises PublishError, nothing replaced."""
        work = tempfile.mkdtemp(prefix="smescore-publish-")
        step = "staging"
        try:
            self.create_staging(staging_key, list(tables))
            self._load({n: staged[n] for n in tables}, tables, work)
            got = bqlib.count_rows(self.conn, self.dataset, staged)
            if got != expected:
                raise RuntimeError(f"staging tables hold {got} rows, expected {expected}")
            step = "transaction"
            self.conn.query(bqlib.replace_script(self.conn, self.dataset, staged, keys_from))
        except Exception as err:
            raise PublishError(
                f"{what} to {self!r} failed at {step!r}: {type(err).__name__}: {err}; the "
                f"dataset still holds the previous rows of {as_of_date}") from err
        finally:
            shutil.rmtree(work, ignore_errors=True)
            bqlib.drop_tables(self.conn, self.dataset, list(staged.values()))

    def replace_partitions(self, as_of_date: dt.date, tables: Mapping[str, pa.Table]
                           ) -> dict[str, int]:
        """Replace `as_of_date`'s rows of tables no scoring run writes (a backtest's
        `performance` and `backtest_roc`), atomically, without a run record: staged, counted,
        then one transaction. Returns {table: rows written}; ValueError or PublishError as
        `publish`."""
        conformed = prepare_replace(as_of_date, tables)
        if "performance" not in conformed:
            raise ValueError("a backtest's replace needs its 'performance' rows")
        tag = "backtest" + as_of_date.strftime("%Y%m%d")
        staged = {name: bqlib.staging_name(tag, name) for name in conformed}
        expected = {name: t.num_rows for name, t in conformed.items()}
        self._stage_and_replace(f"replace of {as_of_date} in {list(conformed)}", as_of_date, tag,
                                conformed, staged, expected, keys_from="performance")
        self._verify(as_of_date, expected)
        return expected

    def _verify(self, as_of_date: dt.date, expected: Mapping[str, int],
                run_id: Optional[str] = None, attempt_id: Optional[str] = None) -> None:
        """After the commit: the date (and the attempt's row in `runs`) holds exactly the rows
        written (no duplicates)."""
        dated = {n: n for n in expected if n != "runs"}
        got = bqlib.count_rows(self.conn, self.dataset, dated, {"as_of_date": as_of_date})
        if "runs" in expected:
            got.update(bqlib.count_rows(self.conn, self.dataset, {"runs": "runs"},
                                        {"attempt_id": attempt_id}))
        if got != dict(expected):
            what = f"publishing {as_of_date} (run {run_id})" if run_id else f"replacing {as_of_date}"
            raise RuntimeError(f"after {what} {self!r} holds {got} rows for it, expected "
                               f"{dict(expected)}")

    def record_failed_run(self, run_record: Mapping[str, Any]) -> None:
        """Upsert a failed attempt's row by attempt_id (one MERGE, values as parameters); no data
        touched."""
        run = run_record_table(run_record)
        if run_record["status"] != "failed":
            raise ValueError(f"run record: record_failed_run takes status 'failed', got "
                             f"{run_record['status']!r}")
        sql, params = bqlib.merge_run_sql(self.conn, self.dataset, run.to_pylist()[0])
        self.conn.query(sql, params)


def open_risk_tables(where, conn: Optional[bqlib.Connection] = None):
    """The risk tables, to write and to read back through one interface
    (smescore.warehouse.RiskTableStore), whichever engine holds them:
    a DuckDB file's path -> its Warehouse; a BigQueryConfig -> its `risk_dataset`
    (BigQueryRiskSink); a job's config -> what its --sink names (--warehouse, or the BigQuery
    flags); risk tables already open are returned as they are."""
    if isinstance(where, (str, os.PathLike)):
        return Warehouse(where)
    if isinstance(where, BigQueryConfig):
        return BigQueryRiskSink(where, conn)
    if hasattr(where, "sink"):
        if where.sink == "duckdb":
            return Warehouse(where.warehouse, lock_timeout=getattr(where, "lock_timeout", 0.0))
        if where.sink == "bigquery":
            return BigQueryRiskSink(where.bigquery, conn)
        raise ValueError(f"unknown --sink {where.sink!r}")
    return where
