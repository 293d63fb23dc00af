"""Where a run's risk tables go: the DuckDB warehouse file (the embedded default) or a BigQuery
dataset. Both take the same call, `publish(as_of_date, {table: Arrow table}, run_record)`, check
the tables against the contract first (smescore.warehouse.prepare_publish), and replace the date's
rows in every table and the run's row in `runs` atomically.

BigQuery: WriteToBigQuery (file loads) lands every table in a run-scoped staging table, declared
with the contract's schema — the attributions from the nightly pipeline's workers
(StageToBigQuery), the rest from the driver; then ONE multi-statement transaction deletes the
date's rows and inserts the staged ones, table by table; then the staging tables are dropped. A
failure before or inside the transaction leaves the published rows as they were.
"""
from __future__ import annotations

import atexit
import datetime as dt
import functools
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs import sinks
from beam_jobs.options import BigQueryConfig
from smescore import bigquery as bqlib
from smescore import tables as contract
from smescore.warehouse import (PublishError, Warehouse, conform_run_rows, prepare_publish,
                                prepare_replace, run_record_table)


def prestaged_tables(cfg) -> tuple[str, ...]:
    """The risk tables the nightly pipeline loads into BigQuery itself (StageToBigQuery) instead
    of staging them for the driver: the attributions, ~100 rows a firm."""
    return ("attributions",) if cfg.sink == "bigquery" else ()


class EmulatorApiClient:
    """WriteToBigQuery's `test_client` for an emulator: Beam's own BigQuery API client pointed at
    the emulator's endpoint, anonymous. Made lazily, and pickled as the endpoint alone, because
    Beam pickles the transforms that carry it."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint.rstrip("/")
        self._client = None

    def __getstate__(self):
        return {"endpoint": self.endpoint, "_client": None}

    def __getattr__(self, name):
        if name.startswith("__") or name in ("endpoint", "_client"):
            raise AttributeError(name)
        if self._client is None:
            # Beam's BigQuery REST client only when a test points the sink at an emulator
            import httplib2
            from apache_beam.io.gcp.internal.clients import bigquery as bq_api
            self._client = bq_api.BigqueryV2(
                url=f"{self.endpoint}/bigquery/v2/", get_credentials=False, credentials=None,
                http=httplib2.Http(timeout=30), response_encoding="utf8")
        return getattr(self._client, name)


class StagedRow(dict):
    """A risk-table row and the table it is loaded into: WriteToBigQuery picks each element's
    destination, so the rows of every table go through ONE write (and one set of load jobs).
    It is written out as the plain row."""
    __slots__ = ("table_spec",)


def staged_rows(table: pa.Table, table_spec: str):
    """Arrow rows as WriteToBigQuery takes them: dicts of Python values (dates and timestamps are
    written as ISO text; conform() already turned NaN into NULL)."""
    for row in table.to_pylist():
        out = StagedRow(row)
        out.table_spec = table_spec
        yield out


def read_staged(path_and_spec: tuple[str, str]):
    path, table_spec = path_and_spec
    for batch in pq.ParquetFile(path).iter_batches(batch_size=10_000):
        yield from staged_rows(pa.Table.from_batches([batch]), table_spec)


def _destination(row: StagedRow) -> str:
    return row.table_spec


def _schema_of(destination, schemas: dict) -> dict:
    """The contract schema of a destination (Beam hands over a TableReference or its text)."""
    if not isinstance(destination, str):
        destination = f"{destination.projectId}:{destination.datasetId}.{destination.tableId}"
    return schemas[destination]


@beam.ptransform_fn
def WriteRiskTables(pcoll, tables_by_spec: Mapping[str, str], test_client=None,
                    temp_location=None, validate: bool = True):
    """PCollection[StagedRow] -> every row loaded into its table (PROJECT:DATASET.TABLE), replacing
    what the table held; `tables_by_spec` names the risk table each destination holds, whose
    contract schema WriteToBigQuery declares."""
    schemas = {spec: {"fields": contract.bigquery_schema(name)}
               for spec, name in tables_by_spec.items()}
    return pcoll | "WriteToBigQuery" >> beam.io.WriteToBigQuery(
        _destination, schema=functools.partial(_schema_of, schemas=schemas),
        method=beam.io.WriteToBigQuery.Method.FILE_LOADS,
        create_disposition=beam.io.BigQueryDisposition.CREATE_IF_NEEDED,
        write_disposition=beam.io.BigQueryDisposition.WRITE_TRUNCATE,
        custom_gcs_temp_location=temp_location, test_client=test_client, validate=validate)


def conformed_rows(table: pa.Table, name: str, table_spec: str, as_of_date: dt.date, run_id: str,
                   versions: Sequence[str]):
    """One piece of a run's risk table, checked against the contract, as WriteToBigQuery rows."""
    return staged_rows(conform_run_rows(name, table, as_of_date, run_id, versions), table_spec)


@beam.ptransform_fn
def StageToBigQuery(pcoll, sink: "BigQueryRiskSink", name: str, as_of_date: dt.date, run_id: str,
                    versions: Sequence[str]):
    """PCollection[pa.Table] of one risk table -> the run's staging table of it, loaded by the
    workers, so that rows of this size never pass through the driver. A piece that breaks the
    contract fails the job, and nothing is published. Returns the PCollection of its row count."""
    spec = sink.table_spec(bqlib.staging_name(run_id, name))
    test_client, temp_location, validate = sink.load_settings()
    (pcoll | "Rows" >> beam.FlatMap(conformed_rows, name, spec, as_of_date, run_id, list(versions))
     | "Load" >> WriteRiskTables({spec: name}, test_client=test_client,
                                 temp_location=temp_location, validate=validate))
    return pcoll | "CountRows" >> sinks.TotalRows()


class BigQueryRiskSink:
    """The risk tables in `project.risk_dataset`.

    `temp_location` is where WriteToBigQuery writes its load files (a gs:// path in production,
    from --temp_location); against an emulator a local folder is used.
    """

    def __init__(self, bq, conn: Optional[bqlib.Connection] = None,
                 temp_location: Optional[str] = None):
        self.bq = bq
        self.dataset = bq.risk_dataset
        self.conn = conn or bqlib.Connection(bq.project, bq.location)
        self.temp_location = temp_location
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

    def load_settings(self, work: Optional[str] = None) -> tuple:
        """(test_client, temp_location, validate) for WriteToBigQuery: against an emulator, Beam's
        API client pointed at it and a local folder for the load files (under `work`, else a
        fresh one); in production the default client and --temp_location (gs://)."""
        emulator = self.conn.emulator
        if not emulator:
            return None, self.temp_location, True
        temp = tempfile.mkdtemp(prefix="loads-", dir=work)
        atexit.register(shutil.rmtree, temp, True)
        return EmulatorApiClient(emulator), temp, False

    def create_staging(self, run_id: str, names: Sequence[str]) -> None:
        """Empty staging tables of the run (contract schema, expiring after STAGING_TTL), replacing
        any a crashed attempt left."""
        for name in names:
            bqlib.create_staging_table(self.conn, bqlib.table_resource(
                self.conn, self.dataset, name, bqlib.staging_name(run_id, name)))

    def drop_staging(self, run_id: str, names: Sequence[str]) -> None:
        bqlib.drop_tables(self.conn, self.dataset, [bqlib.staging_name(run_id, n) for n in names])

    def _load(self, staged: Mapping[str, str], tables: Mapping[str, pa.Table], work: str) -> None:
        """One DirectRunner pipeline: every Arrow table, via Parquet, into its staging table."""
        test_client, temp, validate = self.load_settings(work)
        options = PipelineOptions(["--runner=DirectRunner", f"--project={self.bq.project}",
                                   *([f"--temp_location={temp}"] if temp else [])])
        specs, files = {}, []
        for name, table in tables.items():
            spec = self.table_spec(staged[name])
            specs[spec] = name
            files.append((os.path.join(work, f"{name}.parquet"), spec))
            pq.write_table(table, files[-1][0])
        with beam.Pipeline(options=options) as p:
            (p | "StagedFiles" >> beam.Create(files)
             | "Rows" >> beam.FlatMap(read_staged)
             | "LoadStaging" >> WriteRiskTables(specs, test_client=test_client,
                                                temp_location=temp, validate=validate))

    def publish(self, as_of_date: dt.date, tables: Mapping[str, pa.Table],
                run_record: Mapping[str, Any], challengers: Sequence[str] = (),
                prestaged: Optional[Mapping[str, int]] = None) -> dict[str, int]:
        """Replace `as_of_date`'s rows in every given table and the run's row, atomically; rows
        may carry the run's model version or one of its `challengers` (shadow scores).
        `prestaged` {table: rows}: tables the pipeline already loaded into the run's staging
        tables (StageToBigQuery), published in the same transaction.
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
        return BigQueryRiskSink(where, conn, where.temp_location)
    if hasattr(where, "sink"):
        if where.sink == "duckdb":
            return Warehouse(where.warehouse, lock_timeout=getattr(where, "lock_timeout", 0.0))
        if where.sink == "bigquery":
            return BigQueryRiskSink(where.bigquery, conn, where.bigquery.temp_location)
        raise ValueError(f"unknown --sink {where.sink!r}")
    return where
