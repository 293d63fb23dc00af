"""The embedded warehouse: the risk tables in one DuckDB file, published one as-of date at a time.

A publish replaces a date's rows in every table it is given and records the run in ONE transaction,
so a reader (another connection) sees the old date or the new one, never half of it, and a
failure anywhere leaves the previous rows in place. Outcome backtests, which belong to no scoring
run, replace their date's `performance` and `backtest_roc` rows the same way, without a run record
(`replace_partitions`). Incoming Arrow tables are checked against the contract in
smescore/tables.py before anything is touched, so a bad table fails with the table and column
named instead of a DuckDB cast error halfway through.

Connections are opened per call and closed again: DuckDB lets one process write a file, and a
long-lived connection would lock other processes (`smescore query`) out of it.

SQL here takes values only as bound parameters (`?`). Table and column names are interpolated, but
only ones that come from the contract (or that the contract has checked), never from data.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import os
import pathlib
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Optional, Protocol

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from smescore import sqlfiles
from smescore import tables as contract
from smescore.errors import ServiceUnavailable

VIEWS_DIR = sqlfiles.sql_path("views")
_INCOMING = "_smescore_incoming"   # name the Arrow table is registered under while it is copied in
PUBLISH_MEMORY = "512MB"           # DuckDB's buffer budget while a publish copies tables in
LOCK_POLL_S = 0.2


def connect_waiting(path: str, timeout_s: float = 0.0,
                    read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection, waiting up to `timeout_s` while another process holds the file's lock
    (DuckDB refuses at once); then ServiceUnavailable naming the file and the holder."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return duckdb.connect(path, read_only=read_only)
        except duckdb.IOException as err:
            if "lock" not in str(err).lower():
                raise
            if time.monotonic() >= deadline:
                holder = str(err).split("Conflicting lock is held in ")[-1].split(". See")[0]
                raise ServiceUnavailable(
                    f"warehouse {path} is held by another process ({holder}) after waiting "
                    f"{timeout_s:g}s; retry when it has closed the file or raise --lock_timeout"
                ) from None
            time.sleep(LOCK_POLL_S)


class PublishError(RuntimeError):
    """A publish failed inside its transaction and was rolled back; nothing changed."""


STAGED_BATCH_ROWS = 1 << 18   # rows per batch while a staged file is checked (bounded memory)


@dataclasses.dataclass(frozen=True)
class StagedTable:
    """A risk table's rows in local Parquet files (the nightly pipeline's staged output), published
    without being read into memory: `publish` checks them batch by batch against the contract,
    then the engine loads the files itself (DuckDB `read_parquet`, a BigQuery Parquet load).
    Rows go in in file order."""
    paths: tuple[str, ...]

    @classmethod
    def of(cls, *paths: str | os.PathLike) -> "StagedTable":
        return cls(tuple(str(p) for p in paths))

    @property
    def num_rows(self) -> int:
        return sum(pq.ParquetFile(p).metadata.num_rows for p in self.paths)

    def batches(self) -> Iterator[pa.Table]:
        for path in self.paths:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=STAGED_BATCH_ROWS):
                yield pa.Table.from_batches([batch])

    def conformed(self, check) -> Iterator[pa.Table]:
        """The rows batch by batch through `check` (a table -> the conformed table)."""
        for batch in self.batches():
            yield check(batch)


# ----------------------------------------------------------------------------- validation

def _loose_type(t: pa.DataType) -> pa.DataType:
    """The type without what does not change the values: nested nullability flags, list item names
    (Parquet writes 'element', Arrow 'item'), large/view string and list variants."""
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t):
        return pa.list_(_loose_type(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _loose_type(f.type)) for f in t])
    return t


def _check_columns(name: str, schema: pa.Schema) -> None:
    expected = contract.table(name).names
    missing = [c for c in expected if c not in schema.names]
    extra = [c for c in schema.names if c not in expected]
    if missing or extra:
        raise ValueError(f"table {name!r}: missing column(s) {missing}, unexpected column(s) "
                         f"{extra}; the contract's columns are {list(expected)}")
    for column in contract.table(name).columns:
        got = schema.field(column.name).type
        if _loose_type(got) != _loose_type(column.arrow_type):
            raise ValueError(f"table {name!r}, column {column.name!r}: expected type "
                             f"{column.arrow_type}, got {got}")


def _nan_to_null(array: pa.ChunkedArray) -> pa.ChunkedArray:
    """NaN poisons SQL aggregates (AVG over a NaN is NaN): in the warehouse, missing is NULL."""
    if not pa.types.is_floating(array.type):
        return array
    return pc.if_else(pc.is_nan(array), pa.scalar(None, array.type), array)


def _check_nulls(where: str, column: contract.Column, values: pa.ChunkedArray) -> None:
    """Required columns and required subfields of list-of-struct columns hold no NULL."""
    if (column.required or column.fields) and values.null_count:
        raise ValueError(f"{where}, column {column.name!r} is required but has "
                         f"{values.null_count} null value(s)")
    if column.fields:
        items = pc.list_flatten(values)
        if items.null_count:
            raise ValueError(f"{where}, column {column.name!r} has {items.null_count} null item(s)")
        for i, sub in enumerate(column.fields):
            _check_nulls(f"{where}, column {column.name!r}", sub,
                         _nan_to_null(pc.struct_field(items, [i])))


def _check_allowed(name: str, column: contract.Column, values: pa.ChunkedArray) -> None:
    if not column.allowed:
        return
    bad = pc.filter(values, pc.invert(pc.is_in(values, value_set=pa.array(column.allowed))))
    if len(bad):
        raise ValueError(f"table {name!r}, column {column.name!r}: {len(bad)} value(s) not in "
                         f"{list(column.allowed)}, e.g. {pc.unique(bad).to_pylist()[:5]}")


def _check_constant(name: str, column: str, values: pa.ChunkedArray, expected: Any) -> None:
    """Every row must carry the run's value: a row of another date would survive its replace."""
    bad = pc.filter(values, pc.not_equal(values, pa.scalar(expected, values.type)))
    if len(bad):
        raise ValueError(f"table {name!r}, column {column!r}: {len(bad)} row(s) are not "
                         f"{expected!r}, e.g. {pc.unique(bad).to_pylist()[:3]}")


def _check_versions(name: str, values: pa.ChunkedArray, versions: pa.Array) -> None:
    bad = pc.filter(values, pc.invert(pc.is_in(values, value_set=versions)))
    if len(bad):
        raise ValueError(f"table {name!r}, column 'model_version': {len(bad)} row(s) are not "
                         f"the run's model {versions.to_pylist()[0]!r} or one of its challengers "
                         f"{versions.to_pylist()[1:]}, e.g. {pc.unique(bad).to_pylist()[:3]}")


def conform(name: str, table: pa.Table) -> pa.Table:
    """Check an Arrow table against the contract and return it in the contract's schema.

    Raises ValueError naming the table and column: unknown table, missing or unexpected columns,
    wrong types, NULL (or NaN) in required columns, values outside a column's allowed set.
    NaN in optional float columns becomes NULL.
    """
    if name not in contract.TABLES:
        raise ValueError(f"no risk table {name!r}; the tables are {list(contract.TABLES)}")
    if not isinstance(table, pa.Table):
        raise ValueError(f"table {name!r}: expected a pyarrow.Table, got {type(table).__name__}")
    _check_columns(name, table.schema)
    columns = []
    for column in contract.table(name).columns:
        values = _nan_to_null(table.column(column.name))
        _check_nulls(f"table {name!r}", column, values)
        _check_allowed(name, column, values)
        columns.append(values.cast(column.arrow_type))
    return pa.Table.from_arrays(columns, schema=contract.arrow_schema(name))


def run_record_table(run_record: Mapping[str, Any], serving: bool = False) -> pa.Table:
    """A run record (dict) -> a one-row `runs` table, checked like any other table.

    `serving` is the sink's to set (True only as a publish commits), never the caller's; a record
    without `attempt_id` is its run's first attempt, one without `gates` evaluated none."""
    names = contract.table("runs").names
    run_record = {"attempt_id": f"{run_record.get('run_id')}-1", "gates": [], **run_record,
                  "serving": serving}
    missing = [k for k in names if k not in run_record]
    extra = [k for k in run_record if k not in names]
    if missing or extra:
        raise ValueError(f"run record: missing key(s) {missing}, unexpected key(s) {extra}")
    arrays = {}
    for column in contract.table("runs").columns:
        try:
            arrays[column.name] = pa.array([run_record[column.name]], column.arrow_type)
        except (pa.ArrowException, TypeError, ValueError) as err:
            raise ValueError(f"run record, key {column.name!r}: {run_record[column.name]!r} is not "
                             f"a {column.arrow_type}: {err}") from None
    return conform("runs", pa.table(arrays))


def _check_date(as_of_date: Any) -> dt.date:
    if not isinstance(as_of_date, dt.date) or isinstance(as_of_date, dt.datetime):
        raise ValueError(f"as_of_date must be a datetime.date, got {as_of_date!r}")
    return as_of_date


def prepare_publish(as_of_date: dt.date, tables: Mapping[str, pa.Table],
                    run_record: Mapping[str, Any], challengers: Sequence[str] = ()
                    ) -> tuple[dict[str, pa.Table], pa.Table]:
    """Everything `publish` checks before it opens a transaction.

    Each table must be a date-partitioned risk table, conform to the contract, and hold only rows
    of this date and run, scored by the run's model version or one of its challengers (shadow and
    canary rows); the run record must be a succeeded run of this date.
    """
    _check_date(as_of_date)
    run = run_record_table(run_record, serving=True)
    if run_record["status"] != "succeeded":
        raise ValueError(f"run record: publish records a 'succeeded' run, got status "
                         f"{run_record['status']!r} (use record_failed_run)")
    _check_constant("runs", "as_of_date", run.column("as_of_date"), as_of_date)
    if not tables:
        raise ValueError("publish needs at least one table")
    versions = [run_record["model_version"], *challengers]
    return {name: _conform_or_check(name, tables[name], lambda t, n=name: conform_run_rows(
                n, t, as_of_date, run_record["run_id"], versions))
            for name in sorted(tables, key=_table_order)}, run


def _conform_or_check(name: str, rows, check):
    """An Arrow table -> conformed; a StagedTable -> checked batch by batch (a ValueError names
    the table and column as for an Arrow table) and returned as it is: the engine loads its files
    and conforms what differs (NaN -> NULL) as it does (`_insert_sql`)."""
    if isinstance(rows, StagedTable):
        if not rows.paths:
            raise ValueError(f"table {name!r}: a staged table needs at least one file")
        for _ in rows.conformed(check):
            pass
        return rows
    return check(rows)


def conform_run_rows(name: str, table: pa.Table, as_of_date: dt.date, run_id: str,
                     versions: Sequence[str]) -> pa.Table:
    """Rows of a date-partitioned risk table that one run publishes, conformed to the contract:
    all of `as_of_date` and `run_id`, scored by one of `versions`. Also checked piece by piece
    where the rows never reach the driver (the BigQuery load of the attributions)."""
    if contract.table(name).replaced_by != "as_of_date":
        raise ValueError(f"table {name!r} is not replaced by date; pass its row as run_record")
    table = conform(name, table)
    for column, value in (("as_of_date", as_of_date), ("run_id", run_id)):
        if column in table.column_names:
            _check_constant(name, column, table.column(column), value)
    if "model_version" in table.column_names:
        _check_versions(name, table.column("model_version"), pa.array(versions, pa.string()))
    return table


def prepare_replace(as_of_date: dt.date, tables: Mapping[str, pa.Table]) -> dict[str, pa.Table]:
    """Everything `replace_partitions` checks before it opens a transaction.

    Only date-partitioned tables that no scoring run writes (no `run_id` column: the backtests'
    `performance` and `backtest_roc`) may be replaced without a run record; every row must be of
    this date. Rows of several model versions may go in together.
    """
    _check_date(as_of_date)
    if not tables:
        raise ValueError("replace_partitions needs at least one table")
    conformed = {}
    for name in sorted(tables, key=_table_order):
        t = contract.table(name)
        if t.replaced_by != "as_of_date" or "run_id" in t.names:
            raise ValueError(f"table {name!r} is written by a scoring run: publish it with its "
                             f"run record (Warehouse.publish)")
        conformed[name] = _conform_or_check(name, tables[name], functools.partial(
            _conform_dated, name, as_of_date))
    return conformed


def _conform_dated(name: str, as_of_date: dt.date, table: pa.Table) -> pa.Table:
    table = conform(name, table)
    _check_constant(name, "as_of_date", table.column("as_of_date"), as_of_date)
    return table


def _table_order(name: str) -> int:
    """Contract order, so that a publish writes its tables in the same order every time."""
    if name not in contract.TABLES:
        raise ValueError(f"no risk table {name!r}; the tables are {list(contract.TABLES)}")
    return list(contract.TABLES).index(name)


# ----------------------------------------------------------------------------- writing

def _insert_sql(name: str) -> str:
    """INSERT of a staged table's files (`?`: the list of paths), conformed as `conform` does
    what it can differ in: NaN in a float column becomes NULL (the checks have passed already)."""
    t, q = contract.table(name), contract.quote
    select_sql = ", ".join(
        f"CASE WHEN isnan({q(c.name)}) THEN NULL ELSE {q(c.name)} END AS {q(c.name)}"
        if pa.types.is_floating(c.arrow_type) else q(c.name) for c in t.columns)
    # Identifiers from the contract (not data); the paths are bound.
    return (f"INSERT INTO {q(t.name)} ({', '.join(q(c) for c in t.names)}) SELECT {select_sql} "
            f"FROM read_parquet(?)")


def _replace_rows(con: duckdb.DuckDBPyConnection, name: str, rows: pa.Table | StagedTable,
                  key: str, value: Any) -> None:
    """Inside the caller's transaction: delete the rows whose `key` is `value`, insert `rows`
    (an Arrow table, or staged Parquet files that DuckDB reads itself, never whole in memory).

    Rows go in in the order given (the pipeline writes them sorted). Sorting them here on the
    cluster columns tripled the insert time (4.1M attribution rows: 2.2 s -> 6.4 s) for no
    query we run.
    """
    t, q = contract.table(name), contract.quote
    # Identifiers from the contract (not data); the value is bound.
    con.execute(f"DELETE FROM {q(t.name)} WHERE {q(key)} = ?", [value])
    if isinstance(rows, StagedTable):
        con.execute(_insert_sql(name), [list(rows.paths)])
        return
    columns_sql = ", ".join(q(c) for c in t.names)
    con.register(_INCOMING, rows)
    try:
        con.execute(f"INSERT INTO {q(t.name)} ({columns_sql}) SELECT {columns_sql} "
                    f"FROM {q(_INCOMING)}")
    finally:
        con.unregister(_INCOMING)


class RiskTableStore(Protocol):
    """The risk tables, whichever engine holds them: `Warehouse` (a DuckDB file) and
    beam_jobs.risk_sinks.BigQueryRiskSink (a BigQuery dataset), both opened by
    beam_jobs.risk_sinks.open_risk_tables and held to the same contract tests
    (tests/test_risk_tables.py). Reads take DuckDB's SQL with `?` values on either engine."""

    def ensure_schema(self) -> None:
        """Create the contract's tables and views where missing; refuse a drifted table."""

    def publish(self, as_of_date: dt.date, tables: Mapping[str, pa.Table],
                run_record: Mapping[str, Any], challengers: Sequence[str] = ()) -> dict[str, int]:
        """Replace the date's rows of every given table and record the run, atomically."""

    def replace_partitions(self, as_of_date: dt.date, tables: Mapping[str, pa.Table]
                           ) -> dict[str, int]:
        """Replace the date's rows of tables no scoring run writes (a backtest's), atomically."""

    def record_failed_run(self, run_record: Mapping[str, Any]) -> None:
        """Upsert a failed attempt's `runs` row; no data touched."""

    def query(self, sql: str, params=()) -> pa.Table:
        """Rows of a read in DuckDB's SQL."""

    def has_table(self, name: str) -> bool:
        """Whether the table exists (False too before any publication)."""

    @property
    def instance(self) -> str:
        """Where the tables live (the metrics' grouping key)."""


class Warehouse:
    """The risk tables in a DuckDB file at `path` (created by `ensure_schema`)."""

    def __init__(self, path: str | os.PathLike, views_dir: str | os.PathLike = VIEWS_DIR,
                 lock_timeout: float = 0.0):
        self.path = str(path)
        self.views_dir = pathlib.Path(views_dir)
        self.lock_timeout = lock_timeout     # seconds to wait while another process holds the file

    def __repr__(self) -> str:
        return f"Warehouse({self.path!r})"

    def _connect(self, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        if read_only and not os.path.exists(self.path):
            raise FileNotFoundError(f"no warehouse at {self.path}: run `smescore score` first")
        return connect_waiting(self.path, self.lock_timeout, read_only)

    def view_sql(self) -> dict[str, str]:
        """{view name: CREATE OR REPLACE VIEW ...} from sql/views/*.sql, one view per file (the
        DuckDB form; BigQuery gets the sqlglot translation, sql/bigquery/views). A warehouse
        without its views must not pass for a complete one.
        """
        paths = sorted(self.views_dir.glob("*.sql"))
        if not paths:
            raise FileNotFoundError(f"no view definitions (*.sql) in {self.views_dir}")
        return {p.stem: p.read_text(encoding="utf-8") for p in paths}

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection inside BEGIN .. COMMIT; ROLLBACK on any error."""
        with self._connect() as con:
            con.begin()
            try:
                yield con
                con.commit()
            except BaseException:
                _rollback(con)
                raise

    def ensure_schema(self) -> None:
        """Create the tables the contract declares (if missing) and (re)create the views.

        Idempotent. A table that exists with other columns than the contract's is an error (it needs
        a migration), not something to paper over; the one migration known is applied
        (`runs` of one row per run -> one row per attempt, `_migrate_runs_to_attempts`).
        """
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with self._transaction() as con:
            _migrate_runs_to_attempts(con)
            for name in contract.TABLES:
                con.execute(contract.duckdb_ddl(name))
                _check_existing(con, name)
            for sql in self.view_sql().values():
                con.execute(sql)

    def publish(self, as_of_date: dt.date, tables: Mapping[str, pa.Table],
                run_record: Mapping[str, Any], challengers: Sequence[str] = ()) -> dict[str, int]:
        """Replace `as_of_date`'s rows in every given table and record the run, atomically.
        A table is an Arrow table or a StagedTable (Parquet files, copied in by DuckDB).

        Everything is validated first (ValueError, nothing touched); then one transaction deletes
        the date's rows and inserts the new ones table by table, and upserts the run record (by
        attempt_id) as the one serving its date. Any error rolls the whole transaction back and
        is raised as PublishError. Returns {table: rows written}.
        """
        conformed, run = prepare_publish(as_of_date, tables, run_record, challengers)
        step = "connect"
        try:
            with self._transaction() as con:
                # The insert streams from Arrow; without a limit DuckDB buffers up to 80% of RAM.
                con.execute(f"SET memory_limit = '{PUBLISH_MEMORY}'")
                for name, rows in conformed.items():
                    step = name
                    _replace_rows(con, name, rows, "as_of_date", as_of_date)
                step = "runs"
                _record_serving(con, run)
                step = "commit"
        except Exception as err:
            raise PublishError(
                f"publish of {as_of_date} (run {run_record['run_id']}) rolled back at {step!r}: "
                f"{type(err).__name__}: {err}; the warehouse still holds the previous rows of "
                f"{as_of_date}") from err
        return {**{name: rows.num_rows for name, rows in conformed.items()}, "runs": 1}

    def replace_partitions(self, as_of_date: dt.date, tables: Mapping[str, pa.Table]
                           ) -> dict[str, int]:
        """Replace `as_of_date`'s rows of tables that no scoring run writes (an outcome backtest's
        `performance` and `backtest_roc`), atomically, without recording a run.

        Validated first (ValueError, nothing touched); one transaction; any error rolls it back and
        is raised as PublishError. Returns {table: rows written}.
        """
        conformed = prepare_replace(as_of_date, tables)
        step = "connect"
        try:
            with self._transaction() as con:
                for name, rows in conformed.items():
                    step = name
                    _replace_rows(con, name, rows, "as_of_date", as_of_date)
                step = "commit"
        except Exception as err:
            raise PublishError(
                f"replace of {as_of_date} in {list(conformed)} rolled back at {step!r}: "
                f"{type(err).__name__}: {err}; the warehouse still holds the previous rows of "
                f"{as_of_date}") from err
        return {name: rows.num_rows for name, rows in conformed.items()}

    def record_failed_run(self, run_record: Mapping[str, Any]) -> None:
        """Record a failed attempt (replacing an earlier record of the same attempt_id), never
        serving; no data and no other attempt's row touched."""
        run = run_record_table(run_record)
        if run_record["status"] != "failed":
            raise ValueError(f"run record: record_failed_run takes status 'failed', got "
                             f"{run_record['status']!r}")
        with self._transaction() as con:
            _replace_rows(con, "runs", run, "attempt_id", run.column("attempt_id")[0].as_py())

    @property
    def instance(self) -> str:
        """The Pushgateway grouping key's instance: the file the job publishes into."""
        return os.path.abspath(self.path)

    def has_table(self, name: str) -> bool:
        """False too when there is no warehouse file yet."""
        return os.path.exists(self.path) and bool(self.query(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = ?",
            [name]).column(0)[0].as_py())

    def query(self, sql: str, params: Optional[Sequence[Any] | Mapping[str, Any]] = None
              ) -> pa.Table:
        """Run one SQL statement on a read-only connection; values go in `params`, bound to `?`
        (a sequence) or `$name` (a mapping), never formatted into the SQL."""
        with self._connect(read_only=True) as con:
            return con.execute(sql, params).to_arrow_table()


def _record_serving(con: duckdb.DuckDBPyConnection, run: pa.Table) -> None:
    """Inside the publish's transaction: the published attempt's row, now the one serving its
    date; every other attempt of the date stops serving (their rows are otherwise untouched)."""
    attempt, as_of = run.column("attempt_id")[0].as_py(), run.column("as_of_date")[0].as_py()
    con.execute('UPDATE runs SET serving = FALSE WHERE as_of_date = ? AND serving',
                [as_of])
    _replace_rows(con, "runs", run, "attempt_id", attempt)


# `runs` before attempts were recorded: one row per run_id, no attempt_id, serving or gates.
RUNS_BEFORE_ATTEMPTS = ("run_id", "as_of_date", "model_version", "started_at", "finished_at",
                        "status", "rows_in", "rows_rejected", "firms_scored_model",
                        "firms_scored_rules", "message", "config_fingerprint")


def _migrate_runs_to_attempts(con: duckdb.DuckDBPyConnection) -> None:
    """Inside ensure_schema's transaction: a `runs` table of the earlier contract becomes the
    current one, each row its run's attempt 1, the latest succeeded run of each date serving
    (what the date's partitions hold: the last publish replaced them), no gates recorded."""
    columns = tuple(r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'runs' "
        "ORDER BY ordinal_position").fetchall())
    if columns != RUNS_BEFORE_ATTEMPTS:
        return
    q, legacy = contract.quote, "runs_before_attempts"
    gates_type = contract.duckdb_type(contract.table("runs").column("gates"))
    derived = {
        "attempt_id": f"{q('run_id')} || '-1'",
        "serving": f"{q('status')} = 'succeeded' AND ROW_NUMBER() OVER (PARTITION BY "
                   f"{q('as_of_date')}, {q('status')} ORDER BY {q('finished_at')} DESC, "
                   f"{q('run_id')} DESC) = 1",
        "gates": f"CAST([] AS {gates_type})"}
    select_sql = ", ".join(derived.get(c, q(c)) for c in contract.table("runs").names)
    # Identifiers and expressions from the contract, not data.
    con.execute(f"ALTER TABLE runs RENAME TO {q(legacy)}")
    con.execute(contract.duckdb_ddl("runs"))
    con.execute(f"INSERT INTO runs SELECT {select_sql} FROM {q(legacy)}")
    con.execute(f"DROP TABLE {q(legacy)}")


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Roll back, unless DuckDB already has (a failed COMMIT ends the transaction itself): a
    second error from ROLLBACK would hide the one that matters."""
    try:
        con.rollback()
    except duckdb.TransactionException:
        pass  # no transaction left to roll back; the caller re-raises the original error


def _check_existing(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """The table in the file has the contract's columns, in order, with the contract's types."""
    # Identifier from the contract, not data.
    schema = con.execute(f"SELECT * FROM {contract.quote(name)} LIMIT 0").to_arrow_table().schema
    got = [(f.name, _loose_type(f.type)) for f in schema]
    expected = [(c.name, _loose_type(c.arrow_type)) for c in contract.table(name).columns]
    if got != expected:
        raise RuntimeError(f"table {name!r} in the warehouse does not match the contract (it needs "
                           f"a migration): has {[(n, str(t)) for n, t in got]}, expected "
                           f"{[(n, str(t)) for n, t in expected]}")


def reader(risk_tables) -> "RiskTableStore":
    """The risk tables a core function is handed: a DuckDB file's path becomes its Warehouse;
    open risk tables (a RiskTableStore, or smescore.bigquery.RiskTables, which reads only) are
    returned as they are. The pipelines and the CLI open them with
    beam_jobs.risk_sinks.open_risk_tables."""
    if isinstance(risk_tables, (str, os.PathLike)):
        return Warehouse(risk_tables)
    return risk_tables
