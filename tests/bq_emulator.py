"""A real BigQuery API on localhost: the `bqemulator` package (DuckDB underneath), started once per
test session and stopped at the end.

Offline it would try to download DuckDB's spatial extension at start; the `duckdb-extension-spatial`
package carries that file, so it is installed into a DuckDB extension folder under a private HOME
first (nothing is written to the real home). Format extensions (Avro) are switched off for the
same reason.
"""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.processes import free_port, stop

PROJECT = "test-project"
LOCATION = "US"
START_TIMEOUT_S = 60



def _install_spatial(home: pathlib.Path) -> None:
    import duckdb
    import duckdb_extension_spatial
    package = pathlib.Path(duckdb_extension_spatial.__file__).parent
    extension = next(package.glob(f"extensions/v{duckdb.__version__}/spatial.duckdb_extension"))
    with duckdb.connect() as con:
        con.execute("SET extension_directory = ?", [str(home / ".duckdb" / "extensions")])
        con.install_extension(str(extension))


def _wait_until_up(proc: subprocess.Popen, endpoint: str, log: pathlib.Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bqemulator exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{endpoint}/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"bqemulator not up after {START_TIMEOUT_S}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def bq_emulator(tmp_path_factory) -> str:
    """The emulator's endpoint, e.g. http://127.0.0.1:41234 (project `test-project`)."""
    home = tmp_path_factory.mktemp("bqemulator-home")
    _install_spatial(home)
    port, grpc_port = free_port(), free_port()
    log = home / "bqemulator.log"
    env = {**os.environ, "HOME": str(home), "BQEMU_ENABLE_FORMAT_EXTENSIONS": "false",
           "BQEMU_LOG_LEVEL": "warning"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bqemulator", "start", "--rest-port", str(port),
             "--grpc-port", str(grpc_port), "--project", PROJECT, "--ephemeral"],
            env=env, stdout=out, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(proc, endpoint, log)
        yield endpoint
    finally:
        stop(proc)


@pytest.fixture(scope="session", autouse=True)
def quick_load_job_polls():
    """Beam polls a load job it started every 10 s until it is done; the emulator finishes one in
    milliseconds, so poll often instead of sleeping out the interval."""
    from apache_beam.io.gcp import bigquery_file_loads
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bigquery_file_loads, "_SLEEP_DURATION_BETWEEN_POLLS", 0.1)
        yield


@pytest.fixture(scope="session")
def bq_conn(bq_emulator):
    from smescore.bigquery import Connection
    return Connection(PROJECT, LOCATION, emulator=bq_emulator)


_datasets = iter(range(1_000_000))


@pytest.fixture()
def risk_dataset(bq_conn) -> str:
    """A fresh, empty dataset per test (the emulator lives for the whole session)."""
    from smescore import bigquery as bqlib
    name = f"risk_{next(_datasets)}"
    bqlib.ensure_dataset(bq_conn, name)
    return name
