"""The risk dataset in BigQuery, through the official client: connection, tables and views from the
contract, the publish transaction, parameterised queries. No Beam here (beam_jobs/risk_sinks.py
moves the rows).

Values only ever reach BigQuery as query parameters. Identifiers (project, dataset, table and
column names) are put into SQL, quoted by sqlglot, and only ones that come from the contract or
from the job's flags, which options.py checks against BigQuery's naming rules first.

`BIGQUERY_EMULATOR_HOST=http://host:port` (the variable google-cloud-bigquery itself honours)
points everything at a local emulator such as the `bqemulator` package, with anonymous
credentials and short timeouts; the tests use it.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import sqlglot
from sqlglot import exp

from smescore import flags, retention, runtime, sqlfiles, sqlgen
from smescore.errors import UsageError
from smescore import tables as contract

EMULATOR_ENV = "BIGQUERY_EMULATOR_HOST"
# What the job's flags must look like before they name anything in SQL.
PROJECT_RE = r"^(?:[a-z][a-z0-9.-]*[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$"
DATASET_RE = r"^[A-Za-z_][A-Za-z0-9_]{0,1023}$"
LOCATION_RE = r"^[A-Za-z]+(?:-[a-z]+[0-9]+)?$"
STAGING_TTL = dt.timedelta(days=1)     # staging tables a crashed run leaves behind expire
# Checked in order: a bool is an int and a datetime is a date to isinstance.
_PARAM_TYPES = ((bool, "BOOL"), (int, "INT64"), (float, "FLOAT64"), (str, "STRING"),
                (dt.datetime, "TIMESTAMP"), (dt.date, "DATE"))


def emulator_host() -> Optional[str]:
    return os.environ.get(EMULATOR_ENV) or None


@dataclasses.dataclass(frozen=True)
class Connection:
    """A project and location to run jobs in; `client` is made once per Connection."""
    project: str
    location: str
    emulator: Optional[str] = dataclasses.field(default_factory=emulator_host)

    @property
    def timeout(self) -> float:
        """Seconds per API call. An emulator answers a bad request with HTTP 500, which the
        client retries for minutes unless told otherwise."""
        return 20.0 if self.emulator else 120.0

    @property
    def retry(self):
        from google.cloud.bigquery import DEFAULT_RETRY
        return DEFAULT_RETRY.with_deadline(30.0 if self.emulator else 600.0)

    @functools.cached_property
    def client(self):
        from google.cloud import bigquery
        if not self.emulator:
            return bigquery.Client(project=self.project, location=self.location)
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        return bigquery.Client(project=self.project, location=self.location,
                               credentials=AnonymousCredentials(),
                               client_options=ClientOptions(api_endpoint=self.emulator))

    def table_id(self, dataset: str, name: str) -> str:
        """project.dataset.name, the form the client's API calls take."""
        return f"{self.project}.{dataset}.{name}"

    def ref(self, dataset: str, name: str) -> str:
        """`project`.`dataset`.`name`, the form SQL takes."""
        return sqlgen.table_ref(self.project, dataset, name)

    def query(self, sql: str, params: Optional[Mapping[str, Any]] = None):
        """Run one statement (or a script without parameters) and wait; returns the row
        iterator. Values go in `params`, bound by name (@name), never into `sql`."""
        from google.cloud import bigquery
        config = bigquery.QueryJobConfig(query_parameters=query_parameters(params or {}))
        job = self.client.query(sql, job_config=config, timeout=self.timeout, retry=self.retry)
        return job.result(timeout=self.timeout * 10)

    def rows(self, sql: str, params: Optional[Mapping[str, Any]] = None) -> list[dict]:
        return [dict(r.items()) for r in self.query(sql, params)]


class RiskTables:
    """The risk dataset read as the DuckDB warehouse is: `query(sql, params)` takes the DuckDB
    dialect with `?` placeholders over bare table names — the queries the metrics, the run report
    and the automatic rollback share between both engines — and returns an Arrow table. sqlglot
    translates the statement, qualifies its tables with project.dataset and turns the i-th `?`
    into @p<i>; the values go as parameters."""

    def __init__(self, conn: Connection, dataset: str):
        if not re.fullmatch(PROJECT_RE, conn.project) or not re.fullmatch(DATASET_RE, dataset):
            raise ValueError(f"not a BigQuery project and dataset: {conn.project!r}, {dataset!r}")
        self.conn, self.dataset = conn, dataset

    def __repr__(self) -> str:
        return f"BigQuery({self.conn.project}.{self.dataset})"

    @property
    def instance(self) -> str:
        """The Pushgateway grouping key's instance: the dataset the job publishes into."""
        return f"bigquery:{self.conn.project}.{self.dataset}"

    def has_table(self, name: str) -> bool:
        from google.api_core.exceptions import NotFound
        try:
            self.conn.client.get_table(self.conn.table_id(self.dataset, name),
                                       timeout=self.conn.timeout, retry=self.conn.retry)
        except NotFound:
            return False
        return True

    def translate(self, duckdb_sql: str) -> str:
        statement = sqlglot.parse_one(duckdb_sql, read="duckdb")
        # The tree's walk is not the text's order (a WITH clause comes last): tag each `?`, find
        # the tags in the generated text, number them in that order.
        tagged = []
        for k, placeholder in enumerate(list(statement.find_all(exp.Placeholder))):
            if placeholder.this:
                raise ValueError(f"named placeholder {placeholder.sql()!r}: use ? placeholders")
            tagged.append(placeholder.replace(exp.Placeholder(this=f"smescore_tag{k}")))
        order = [int(k) for k in re.findall(r"smescore_tag(\d+)", statement.sql("duckdb"))]
        for i, k in enumerate(order):
            tagged[k].set("this", f"p{i}")
        return sqlgen.qualify(statement.sql("bigquery", unsupported_level=sqlglot.ErrorLevel.RAISE),
                              self.conn.project, self.dataset)

    def query(self, sql: str, params: Sequence[Any] = ()):
        rows = self.conn.query(self.translate(sql), {f"p{i}": v for i, v in enumerate(params)})
        return rows.to_arrow(create_bqstorage_client=False)


def _scalar_type(value: Any) -> str:
    for kind, name in _PARAM_TYPES:     # bool before int, datetime before date
        if isinstance(value, kind):
            return name
    raise TypeError(f"no BigQuery parameter type for {type(value).__name__} ({value!r})")


def query_parameters(params: Mapping[str, Any]) -> list:
    """Named scalar parameters, typed from the Python values (date -> DATE, str -> STRING, ...).
    BigQuery takes no NULL parameter: a None is an error here, not a silent NULL."""
    from google.cloud import bigquery
    out = []
    for name, value in params.items():
        if value is None:
            raise ValueError(f"query parameter @{name} is None; BigQuery parameters cannot be NULL")
        out.append(bigquery.ScalarQueryParameter(name, _scalar_type(value), value))
    return out


def parameter_names(sql: str) -> set[str]:
    """The @names a BigQuery statement uses."""
    return {p.name for p in sqlglot.parse_one(sql, read="bigquery").find_all(exp.Parameter)}


# ----------------------------------------------------------------------------- schema

def schema_fields(name_or_fields) -> list:
    """The contract's BigQuery schema as the client's SchemaField objects."""
    from google.cloud import bigquery
    fields = (contract.bigquery_schema(name_or_fields) if isinstance(name_or_fields, str)
              else name_or_fields)
    return [bigquery.SchemaField(f["name"], f["type"], mode=f["mode"],
                                 description=f["description"],
                                 fields=schema_fields(f["fields"]) if "fields" in f else ())
            for f in fields]


def _shape(fields) -> list[tuple]:
    """(name, type, mode, subfields) of a schema, ignoring descriptions; FLOAT64/INT64 spelt as
    the API spells them."""
    alias = {**{ddl: api for api, ddl in sqlgen.DDL_TYPES.items()}, "STRUCT": "RECORD"}
    return [(f.name, alias.get(f.field_type, f.field_type), f.mode or "NULLABLE",
             _shape(f.fields)) for f in fields]


def table_resource(conn: Connection, dataset: str, name: str, table_name: Optional[str] = None):
    """A client Table for the contract's table `name` (partitioning, clustering, descriptions),
    created as `table_name` (default: the same name)."""
    from google.cloud import bigquery
    t = contract.table(name)
    resource = bigquery.Table(conn.table_id(dataset, table_name or name), schema=schema_fields(name))
    resource.description = t.description
    if t.partition_by:
        # the retention policy's age rule, on the table itself (not on a run's staging copy)
        expiry = None if table_name not in (None, name) else \
            retention.Policy.load().expiration_days(name)
        resource.time_partitioning = bigquery.TimePartitioning(
            field=t.partition_by, expiration_ms=expiry * 86_400_000 if expiry else None)
    resource.clustering_fields = list(t.cluster_by) or None
    return resource


def ensure_dataset(conn: Connection, dataset: str) -> None:
    from google.cloud import bigquery
    resource = bigquery.Dataset(f"{conn.project}.{dataset}")
    resource.location = conn.location
    conn.client.create_dataset(resource, exists_ok=True, timeout=conn.timeout, retry=conn.retry)


def ensure_schema(conn: Connection, dataset: str) -> None:
    """Create the dataset, every contract table that is missing, and (re)create the views.

    Idempotent. A table that exists with another shape than the contract's (names, types, modes)
    is an error that needs a migration, as in the DuckDB warehouse. Tables are created through the
    API from the contract, which is what the committed DDL in sql/bigquery/tables says too.
    """
    from google.api_core.exceptions import NotFound
    ensure_dataset(conn, dataset)
    for name in contract.TABLES:
        try:
            existing = conn.client.get_table(conn.table_id(dataset, name), timeout=conn.timeout,
                                             retry=conn.retry)
        except NotFound:
            conn.client.create_table(table_resource(conn, dataset, name), exists_ok=True,
                                     timeout=conn.timeout, retry=conn.retry)
            continue
        if _shape(existing.schema) != _shape(schema_fields(name)):
            raise RuntimeError(f"table {conn.table_id(dataset, name)} does not match the contract "
                               f"(it needs a migration): has {_shape(existing.schema)}, expected "
                               f"{_shape(schema_fields(name))}")
    for view_sql in view_statements(conn.project, dataset).values():
        conn.query(view_sql)


def view_statements(project: str, dataset: str) -> dict[str, str]:
    """{view: CREATE OR REPLACE VIEW with every table qualified} from sql/bigquery/views."""
    return {name: sqlgen.qualify(text, project, dataset)
            for name, text in sqlfiles.read_folder("bigquery", "views").items()}


# ----------------------------------------------------------------------------- publish

def staging_name(run_id: str, name: str) -> str:
    """Run-scoped staging table of `name`; run ids are hex digests (contract: never random)."""
    if not run_id.replace("-", "").isalnum():
        raise ValueError(f"run_id {run_id!r} cannot name a staging table")
    return f"staging__{name}__{run_id}"


def replace_script(conn: Connection, dataset: str, staged: Mapping[str, str],
                   keys_from: str = "runs") -> str:
    """ONE multi-statement transaction: for every staged table, delete the rows of the run's
    as_of_date and insert the staged rows; replace the attempt's row in `runs` by attempt_id, the
    one serving its date (the date's other attempts stop serving).

    The script holds no values: which date and run it replaces comes from the staged rows of
    `keys_from` themselves (the run's `runs` row; `performance` for a backtest, which publishes
    no run), read into script variables first, so that the deletes compare a partition column
    with a constant and BigQuery prunes them to the one partition. (Scripts take no query
    parameters on the emulator.) If any statement fails, BigQuery rolls the whole transaction back.
    """
    if keys_from not in staged:
        raise ValueError(f"the staged tables must include {keys_from!r}, where the keys come from")
    runs = {f["name"]: f for f in contract.bigquery_schema("runs")}
    order = sorted(staged, key=list(contract.TABLES).index)
    keys = sorted({contract.table(name).replaced_by for name in order} | {"as_of_date"})
    statements = [
        f"DECLARE {sqlgen.script_variable('replaced_' + key)} {sqlgen.sql_type(runs[key])} "
        f"DEFAULT (SELECT MAX({sqlgen.ident(key)}) FROM {conn.ref(dataset, staged[keys_from])});"
        for key in keys]
    statements.append("BEGIN TRANSACTION;")
    for name in order:
        t = contract.table(name)
        columns_sql = ", ".join(sqlgen.ident(c) for c in t.names)
        if name == "runs":      # the published attempt becomes the one serving its date
            statements.append(
                f"UPDATE {conn.ref(dataset, name)} SET {sqlgen.ident('serving')} = FALSE "
                f"WHERE {sqlgen.ident('as_of_date')} = {sqlgen.script_variable('replaced_as_of_date')}"
                f" AND {sqlgen.ident('serving')};")
        statements += [
            f"DELETE FROM {conn.ref(dataset, name)} WHERE {sqlgen.ident(t.replaced_by)} = "
            f"{sqlgen.script_variable('replaced_' + t.replaced_by)};",
            f"INSERT INTO {conn.ref(dataset, name)} ({columns_sql}) "
            f"SELECT {columns_sql} FROM {conn.ref(dataset, staged[name])};"]
    statements.append("COMMIT TRANSACTION;")
    return "\n".join(statements)


def count_rows(conn: Connection, dataset: str, tables: Mapping[str, str],
               where: Optional[Mapping[str, Any]] = None) -> dict[str, int]:
    """{name: rows of table tables[name]} in one query; `where` {column: value} filters every
    table (values bound as parameters)."""
    if not tables:
        return {}
    where = dict(where or {})
    for column in where:
        sqlgen.ident(column)                      # a parameter name must be an identifier too
    where_sql = " AND ".join(f"{sqlgen.ident(c)} = @{c}" for c in where) or "TRUE"
    parts = [f"SELECT {sqlgen.string_literal(name)} AS name, COUNT(*) AS n "
             f"FROM {conn.ref(dataset, table)} WHERE {where_sql}"
             for name, table in tables.items()]
    return {r["name"]: r["n"] for r in conn.rows("\nUNION ALL\n".join(parts), where)}


def merge_run_sql(conn: Connection, dataset: str, run_record: Mapping[str, Any]) -> tuple[str, dict]:
    """(MERGE statement, parameters) that upserts one `runs` row by attempt_id; the row's values
    are parameters. A NULL value is written as a typed NULL (BigQuery takes no NULL parameter)."""
    t = contract.table("runs")
    fields = {f["name"]: f for f in contract.bigquery_schema("runs")}
    select_sql, params = [], {}
    for column in t.names:
        value = run_record[column]
        if fields[column]["mode"] == "REPEATED":
            # A list of structs: one scalar parameter per field of each item (typed NULL if None).
            items_sql = []
            for i, item in enumerate(value):
                parts = []
                for sub in fields[column]["fields"]:
                    name = f"{column}_{i}_{sub['name']}"
                    if item[sub["name"]] is None:
                        parts.append(f"CAST(NULL AS {sqlgen.sql_type(sub)}) "
                                     f"AS {sqlgen.ident(sub['name'])}")
                    else:
                        params[name] = item[sub["name"]]
                        parts.append(f"@{name} AS {sqlgen.ident(sub['name'])}")
                items_sql.append(f"STRUCT({', '.join(parts)})")
            array_sql = f"[{', '.join(items_sql)}]" if items_sql else "[]"
            select_sql.append(f"CAST({array_sql} AS {sqlgen.sql_type(fields[column])}) "
                              f"AS {sqlgen.ident(column)}")
        elif value is None:
            select_sql.append(f"CAST(NULL AS {sqlgen.sql_type(fields[column])}) "
                              f"AS {sqlgen.ident(column)}")
        else:
            params[column] = value
            select_sql.append(f"@{column} AS {sqlgen.ident(column)}")
    q = sqlgen.ident
    sql = (f"MERGE {conn.ref(dataset, 'runs')} AS t\n"
           f"USING (SELECT {', '.join(select_sql)}) AS s\n"
           f"ON t.{q('attempt_id')} = s.{q('attempt_id')}\n"
           f"WHEN MATCHED THEN UPDATE SET "
           + ", ".join(f"{q(c)} = s.{q(c)}" for c in t.names if c != "attempt_id") + "\n"
           f"WHEN NOT MATCHED THEN INSERT ({', '.join(q(c) for c in t.names)}) "
           f"VALUES ({', '.join(f's.{q(c)}' for c in t.names)})")
    return sql, params


def drop_tables(conn: Connection, dataset: str, names: Sequence[str]) -> None:
    for name in names:
        conn.client.delete_table(conn.table_id(dataset, name), not_found_ok=True,
                                 timeout=conn.timeout, retry=conn.retry)


LOAD_FORMAT = "PARQUET"   # load files: columnar, typed, compressed; never row-by-row JSON


def load_parquet(conn: Connection, dataset: str, table: str, path: str) -> int:
    """Append a local Parquet file (a risk table's rows in the contract's column order and types)
    to `dataset.table` with one load job; the job's output rows. The file is uploaded with the
    job (no bucket needed); lists are read as REPEATED fields (list inference)."""
    from google.cloud import bigquery
    config = bigquery.LoadJobConfig(source_format=LOAD_FORMAT,
                                    write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
                                    create_disposition=bigquery.CreateDisposition.CREATE_NEVER)
    parquet = bigquery.ParquetOptions()
    parquet.enable_list_inference = True
    config.parquet_options = parquet
    with open(path, "rb") as fh:
        job = conn.client.load_table_from_file(fh, conn.table_id(dataset, table),
                                               job_config=config, timeout=conn.timeout)
    job.result(timeout=conn.timeout * 30)
    return int(job.output_rows or 0)


def create_staging_table(conn: Connection, table) -> None:
    """A fresh, empty staging table (a client Table), replacing any a crashed run left; it
    expires after STAGING_TTL if nothing drops it."""
    table.expires = dt.datetime.now(dt.timezone.utc) + STAGING_TTL
    conn.client.delete_table(table.reference, not_found_ok=True, timeout=conn.timeout,
                             retry=conn.retry)
    conn.client.create_table(table, timeout=conn.timeout, retry=conn.retry)


def parser() -> flags.Parser:
    p = flags.Parser(prog="python -m smescore.bigquery", description=main.__doc__)
    flags.add(p, "bq_project", required=True,
              help="Google Cloud project of the risk dataset (the job's --bq-project)")
    flags.add(p, "risk_dataset", required=True,
              help="the risk dataset to create or check (the job's --risk-dataset)")
    flags.add(p, "bq_location", default="US",
              help="BigQuery location of the dataset (the job's --bq-location)")
    return p


def main(argv=None) -> int:
    """`python -m smescore.bigquery --bq-project P --risk-dataset D [--bq-location L]`: create the
    risk dataset, its tables and views (idempotent; refuses tables that drifted from the
    contract). The flags are the nightly job's."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        p = parser()
        args = p.parse_args(flags.split(argv, flags.specs_of(p, dashes=True))[0])
        for value, pattern, flag in ((args.bq_project, PROJECT_RE, "--bq-project"),
                                     (args.risk_dataset, DATASET_RE, "--risk-dataset"),
                                     (args.bq_location, LOCATION_RE, "--bq-location")):
            if not re.fullmatch(pattern, value):
                raise UsageError(f"{flag} {value!r} is not a valid name")
        conn = Connection(args.bq_project, args.bq_location)
        ensure_schema(conn, args.risk_dataset)
    except Exception as err:  # noqa: BLE001 - one line for the operator, the traceback on --debug
        return runtime.report_error(err, debug)
    print(f"{args.bq_project}.{args.risk_dataset}: {len(contract.TABLES)} tables, "
          f"{len(view_statements(args.bq_project, args.risk_dataset))} views")
    return 0


if __name__ == "__main__":
    sys.exit(main())
