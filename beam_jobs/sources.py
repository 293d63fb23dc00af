"""Where the feeds come from. Each source turns into one PCollection of Arrow tables per feed.

Jobs only see `check()`, `check_files()`, `fingerprint()`, `read(pipeline)` and `cleanup()`, so the
local files source and the production BigQuery source are swappable behind one flag
(`feed_source(cfg)`).
"""
from __future__ import annotations

import datetime as dt
import glob
import hashlib
import json
import os

import apache_beam as beam
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlglot
from sqlglot import exp

from smescore import bigquery as bqlib
from smescore import sqlfiles, sqlgen
from smescore import tables as contract
from smescore.errors import BadInput
from transforms import arrow_coder  # noqa: F401  (the pa.Table coder)
from transforms import feeds, row_groups

ROWS_PER_BATCH = 50_000      # rows per Arrow table read from BigQuery


def _read_csv_as_strings(path: str) -> pa.Table:
    """Every column as text: validation types it and rejects what does not parse."""
    names = pacsv.read_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 20)).column_names
    opts = pacsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                strings_can_be_null=True, quoted_strings_can_be_null=False)
    return pacsv.read_csv(path, convert_options=opts)


class FeedError(BadInput, FileNotFoundError):
    """A feed that cannot be read; the message names the feed and the file or folder."""


def data_extent(feeds_dir: str) -> tuple[dt.date, dt.date]:
    """First and last loan report month of a feeds folder: the span over which outcomes are known."""
    months = pq.read_table(os.path.join(feeds_dir, "loans"), columns=["report_month"]).column(0)
    return pc.min(months).as_py(), pc.max(months).as_py()


def input_fingerprint(feeds_dir: str) -> str:
    """Content hash of every feed file (names and bytes, in a fixed order)."""
    h = hashlib.sha256()
    for feed in sorted(feeds.FEEDS):
        for path in sorted(glob.glob(os.path.join(feeds_dir, feed, "*"))):
            h.update(f"{feed}/{os.path.basename(path)}".encode())
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()


class LocalFilesSource:
    """`<feeds_dir>/<feed>/*.parquet` (typed) or `*.csv` (text) — the embedded default."""

    def __init__(self, feeds_dir: str):
        self.feeds_dir = feeds_dir

    def _files(self, feed: str, ext: str) -> list[str]:
        return sorted(glob.glob(os.path.join(self.feeds_dir, feed, f"*.{ext}")))

    def check(self) -> None:
        """Fail before the pipeline starts when a feed folder is absent or empty."""
        if not os.path.isdir(self.feeds_dir):
            raise FeedError(f"feeds folder {self.feeds_dir!r} does not exist (expected "
                            f"<feeds>/<feed>/*.parquet); check --feeds, or run `smescore "
                            f"generate` to make some")
        missing = [f for f in feeds.FEEDS if not (self._files(f, "parquet") or self._files(f, "csv"))]
        if missing:
            raise FeedError(
                f"no Parquet or CSV files for feeds {missing} under {self.feeds_dir!r} "
                f"(expected <feeds_dir>/<feed>/*.parquet); run `smescore generate` to make some")

    def check_files(self) -> None:
        """Fail before the pipeline reads them when a Parquet file is unreadable (its footer: a
        truncated or corrupt copy fails here, named, not deep inside Beam)."""
        for feed in feeds.FEEDS:
            for path in self._files(feed, "parquet"):
                try:
                    pq.read_metadata(path)
                except (OSError, pa.ArrowException) as err:
                    raise FeedError(f"feed {feed}: {path} is not a readable Parquet file "
                                    f"({' '.join(str(err).split())}); replace it with a complete "
                                    f"copy or remove it") from None

    def read(self, pipeline: beam.Pipeline) -> dict[str, beam.PCollection]:
        out = {}
        for feed in feeds.FEEDS:
            parts = []
            if self._files(feed, "parquet"):
                # Row groups named here, read by the steps that use them (transforms/row_groups.py)
                parts.append(pipeline | f"ListRowGroups[{feed}]" >> beam.Create(
                    row_groups.of_files(self._files(feed, "parquet"))))
            if self._files(feed, "csv"):
                parts.append(pipeline | f"ListCsv[{feed}]" >> beam.Create(self._files(feed, "csv"))
                             | f"ReadCsv[{feed}]" >> beam.Map(_read_csv_as_strings))
            out[feed] = parts[0] if len(parts) == 1 else (
                parts | f"Merge[{feed}]" >> beam.Flatten())
        return out

    def fingerprint(self) -> str:
        return input_fingerprint(self.feeds_dir)

    def stage(self) -> dict[str, int]:
        """Nothing to stage: the pipeline reads the files."""
        return {}

    def loan_month_range(self) -> tuple[dt.date, dt.date]:
        """The loans feed's first and last report month: the span over which outcomes are known."""
        return data_extent(self.feeds_dir)

    def last_loan_month(self) -> dt.date:
        """The loans feed's last report month (how far outcomes are known)."""
        return data_extent(self.feeds_dir)[1]

    def cleanup(self) -> None:
        """Nothing to clean up: the files belong to whoever wrote them."""


def feed_schema_fields(feed: str) -> list[dict]:
    """The feed's Arrow schema in BigQuery's JSON form (every column NULLABLE: validation, not
    the table, rejects a missing value with a reason)."""
    return [{"name": f.name, "type": contract.BIGQUERY_TYPES[f.type], "mode": "NULLABLE",
             "description": (f.metadata or {}).get(b"description", b"").decode()}
            for f in feeds.FEEDS[feed].schema]


def rows_to_table(rows: list[dict], feed: str) -> pa.Table:
    """Rows as BigQuery hands them to Python (DATE as datetime.date, INT64 as int, ...) -> an
    Arrow table in the feed's schema, the same typed tables the Parquet files give."""
    return pa.Table.from_pylist(list(rows), schema=feeds.FEEDS[feed].schema)


class BigQueryFeedSource:
    """The feeds in a BigQuery dataset, read through the queries in sql/bigquery/feeds.

    ReadFromBigQuery takes no query parameters, and values are never formatted into SQL: so the
    driver runs each feed's parameterised query (@as_of_date) into a staging table in the risk
    dataset (the only dataset the job writes), and the pipeline reads that table with
    ReadFromBigQuery (Storage Read API, Arrow). Against an emulator, which ReadFromBigQuery cannot
    reach, the driver reads the staged rows with the client instead; either way the rows become
    Arrow tables by `rows_to_table`. Staging tables expire after a day if `cleanup` never runs.
    """

    def __init__(self, bq, as_of: dt.date, conn=None, purpose: str = "nightly"):
        """`purpose` keeps the staging tables of a backtest (whose window ends on some night's
        date) apart from that night's."""
        if not purpose.isalnum():
            raise ValueError(f"purpose {purpose!r} cannot name a staging table")
        self.bq, self.as_of, self.purpose = bq, as_of, purpose
        self.conn = conn or bqlib.Connection(bq.project, bq.location)
        self._fingerprint = None

    def __repr__(self) -> str:
        return f"BigQueryFeedSource({self.bq.project}.{self.bq.feeds_dataset}, as of {self.as_of})"

    def staging_table(self, feed: str) -> str:
        suffix = "" if self.purpose == "nightly" else f"__{self.purpose}"
        return f"staging__feed_{feed}__{self.as_of:%Y%m%d}{suffix}"

    def queries(self) -> dict[str, str]:
        queries = sqlfiles.read_folder("bigquery", "feeds")
        missing = [f for f in feeds.FEEDS if f not in queries]
        if missing:
            raise FileNotFoundError(f"no feed query sql/bigquery/feeds/<feed>.sql for {missing}")
        return {f: queries[f] for f in feeds.FEEDS}

    def check(self) -> None:
        """Fail before anything runs when a feed table or query is missing."""
        from google.api_core.exceptions import NotFound   # the client only where BigQuery is used
        self.queries()
        missing = []
        for feed in feeds.FEEDS:
            try:
                self.conn.client.get_table(self.conn.table_id(self.bq.feeds_dataset, feed),
                                           timeout=self.conn.timeout, retry=self.conn.retry)
            except NotFound:
                missing.append(feed)
        if missing:
            raise FileNotFoundError(f"no feed table(s) {missing} in BigQuery dataset "
                                    f"{self.bq.project}.{self.bq.feeds_dataset}")

    def check_files(self) -> None:
        """Nothing to check: BigQuery's tables are read through the feed queries."""

    def insert_sql(self, feed: str, query: str) -> str:
        """INSERT INTO <staging> (<feed columns>) <the feed query, tables qualified>."""
        select = sqlgen.qualified(query, self.bq.project, self.bq.feeds_dataset)
        target = exp.table_(self.staging_table(feed), db=self.bq.risk_dataset,
                            catalog=self.bq.project, quoted=True)
        columns = feeds.FEEDS[feed].schema.names
        return exp.insert(select, target, columns=[exp.to_identifier(c, quoted=True)
                                                   for c in columns]).sql(
            "bigquery", unsupported_level=sqlglot.ErrorLevel.RAISE)

    def stage(self) -> dict[str, int]:
        """Run every feed query into a fresh staging table; {feed: rows staged}."""
        from google.cloud import bigquery     # the BigQuery client only where BigQuery is used
        params = {"as_of_date": self.as_of}
        staged = {}
        for feed, query in self.queries().items():
            unknown = bqlib.parameter_names(query) - set(params)
            if unknown:
                raise ValueError(f"sql/bigquery/feeds/{feed}.sql uses unknown parameter(s) "
                                 f"{sorted(unknown)}; the job binds {sorted(params)}")
            table_id = self.conn.table_id(self.bq.risk_dataset, self.staging_table(feed))
            bqlib.create_staging_table(self.conn, bigquery.Table(
                table_id, schema=bqlib.schema_fields(feed_schema_fields(feed))))
            used = {k: v for k, v in params.items() if k in bqlib.parameter_names(query)}
            self.conn.query(self.insert_sql(feed, query), used)
        staged = bqlib.count_rows(self.conn, self.bq.risk_dataset,
                                  {f: self.staging_table(f) for f in feeds.FEEDS})
        return staged

    def fingerprint(self) -> str:
        """Content hash of what the queries returned (row count and an order-free checksum of
        every staged table), plus the query texts; stages the feeds on first call."""
        if self._fingerprint is None:
            self.stage()
            sums = {}
            for feed in feeds.FEEDS:
                row = self.conn.rows(
                    f"SELECT COUNT(*) AS n, BIT_XOR(FARM_FINGERPRINT(TO_JSON_STRING(t))) "
                    f"AS checksum FROM {self.conn.ref(self.bq.risk_dataset, self.staging_table(feed))} "
                    f"AS t")[0]
                sums[feed] = [row["n"], row["checksum"]]
            payload = {"queries": self.queries(), "as_of": str(self.as_of), "tables": sums}
            self._fingerprint = hashlib.sha256(
                json.dumps(payload, sort_keys=True).encode()).hexdigest()
        return self._fingerprint

    def loan_month_range(self) -> tuple[dt.date, dt.date]:
        """The loans table's first and last report month, whatever the date."""
        rows = self.conn.rows(f"SELECT MIN(report_month) AS first, MAX(report_month) AS last "
                              f"FROM {self.conn.ref(self.bq.feeds_dataset, 'loans')}")
        return rows[0]["first"], rows[0]["last"]

    def last_loan_month(self) -> dt.date:
        """The loans table's last report month (how far outcomes are known), whatever the date."""
        return self.loan_month_range()[1]

    def client_tables(self, feed: str) -> list[pa.Table]:
        """The staged rows read on the driver with the client (REST pages), as Arrow tables."""
        rows = self.conn.client.list_rows(
            self.conn.table_id(self.bq.risk_dataset, self.staging_table(feed)),
            page_size=ROWS_PER_BATCH, timeout=self.conn.timeout, retry=self.conn.retry)
        return [rows_to_table([dict(r.items()) for r in page], feed) for page in rows.pages]

    def read(self, pipeline: beam.Pipeline) -> dict[str, beam.PCollection]:
        out = {}
        for feed in feeds.FEEDS:
            if self.conn.emulator:
                out[feed] = pipeline | f"ReadStaged[{feed}]" >> beam.Create(
                    self.client_tables(feed)).with_output_types(pa.Table)
                continue
            out[feed] = (pipeline
                         | f"ReadFromBigQuery[{feed}]" >> beam.io.ReadFromBigQuery(
                             table=f"{self.bq.project}:{self.bq.risk_dataset}."
                                   f"{self.staging_table(feed)}",
                             method=beam.io.ReadFromBigQuery.Method.DIRECT_READ,
                             use_native_datetime=True, project=self.bq.project)
                         | f"Batch[{feed}]" >> beam.BatchElements(
                             min_batch_size=1_000, max_batch_size=ROWS_PER_BATCH)
                         | f"ToArrow[{feed}]" >> beam.Map(rows_to_table, feed)
                         .with_output_types(pa.Table))
        return out

    def cleanup(self) -> None:
        bqlib.drop_tables(self.conn, self.bq.risk_dataset,
                          [self.staging_table(f) for f in feeds.FEEDS])


def feed_source(cfg, conn=None):
    """The source `cfg.source` names: 'files' (--feeds) or 'bigquery' (--feeds_dataset)."""
    if cfg.source == "files":
        return LocalFilesSource(cfg.feeds)
    if cfg.source == "bigquery":
        return BigQueryFeedSource(cfg.bigquery, cfg.as_of, conn)
    raise ValueError(f"unknown --source {cfg.source!r}")
