"""Where the SQL files are: `sql/` at the top of the repository, shipped inside the package.

sql/
  views/<view>.sql                the analysts' views, written once (DuckDB dialect)
  queries/<query>.sql             parameterised analyst queries ($name parameters), same dialect
  bigquery/tables/<table>.sql     generated from smescore/tables.py (`python -m smescore.sqlgen`):
                                  BigQuery DDL, partitioned and clustered, with descriptions
  bigquery/views/<view>.sql       generated: the views translated to BigQuery by sqlglot
  bigquery/queries/<query>.sql    generated: the queries translated (@name parameters)
  bigquery/feeds/<feed>.sql       the feed queries the job runs (@as_of_date), hand-written

A source checkout (or an editable install) reads the repository's `sql/`; a built wheel carries
the same files as package data under `smescore/sql/` (setup.py maps one onto the other), which is
what the worker image and any non-editable install use.
"""
from __future__ import annotations

import pathlib

_PACKAGED = pathlib.Path(__file__).resolve().parent / "sql"
_CHECKOUT = pathlib.Path(__file__).resolve().parent.parent / "sql"


def sql_dir() -> pathlib.Path:
    """The checkout's sql/ if there is one, else the packaged copy (whose absence the readers
    report, naming the folder they looked in)."""
    return _CHECKOUT if (_CHECKOUT / "views").is_dir() else _PACKAGED


def sql_path(*parts: str) -> pathlib.Path:
    return sql_dir().joinpath(*parts)


def read_folder(*parts: str) -> dict[str, str]:
    """{file stem: text} of sql/<parts>/*.sql, sorted by name; an empty or missing folder is an
    error (a schema without its views must not pass for a complete one)."""
    folder = sql_path(*parts)
    paths = sorted(folder.glob("*.sql"))
    if not paths:
        raise FileNotFoundError(f"no SQL files (*.sql) in {folder}")
    return {p.stem: p.read_text(encoding="utf-8") for p in paths}
