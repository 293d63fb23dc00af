"""The command line an operator types at 2 am: flags that cannot mislead, one-line errors with the
documented exit codes, quiet logs, outputs the group can read, `--help` and `--version`.

The refused invocations are the ones a night's review ran into: each is refused before
anything runs, on one line, with exit code 2.
"""
from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import smescore
from beam_jobs import entry, score_portfolio, sinks
from models import registry as model_registry
from smescore import bigquery as bqlib
from smescore import cli, flags, runtime
from smescore.errors import UsageError
from smescore.monitoring import run_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AS_OF = "2026-10-31"
MAINS = ["beam_jobs.score_portfolio", "beam_jobs.build_features", "beam_jobs.training_snapshots",
         "smescore.bigquery"]
NOISE = ("cuInit", "cuda drivers", "absl::InitializeLog", "oneDNN", "cudart_stub", "WARNING:absl",
         "WARNING:smescore", "W0000", "E0000", "I0000", "Traceback")


def _run_cli(capsys, argv) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line(err: str) -> str:
    """The error line; nothing else on stderr but progress lines ('[...]')."""
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("[")]
    assert len(lines) == 1, err
    assert lines[0].startswith("smescore: ")
    return lines[0]


def _subprocess_env() -> dict:
    """The environment of an operator who set none of TensorFlow's variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    env["PYTHONPATH"] = ROOT
    return env


# --- --help and --version ---------------------------------------------------------------------

def test_train_flags_default_to_the_networks_own_hyperparameters():
    """`smescore train` and a TrainConfig built in code must train the same network: a flag
    default that drifts from HParams' trains another model than the card and the docs describe."""
    from models import network
    from models.train import TrainConfig
    defaults = {a.dest: a.default for a in cli.command_parser("train")._actions}
    hp = network.HParams()
    for name in ("loss", "focal_alpha", "focal_gamma", "max_epochs", "patience", "seed"):
        assert defaults[name] == getattr(hp, name), name
    cfg = TrainConfig(feeds="f", registry="r")
    for name in ("background_size", "n_shards", "calibration_folds"):
        assert defaults[name] == getattr(cfg, name), name


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_flag_of_every_command_has_help_and_shows_its_default(name):
    parser = cli.command_parser(name)
    flagged = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert flagged
    for action in flagged:
        assert action.help and len(action.help) > 8, (name, action.option_strings)
        long = [s for s in action.option_strings if s.startswith("--")]
        # both spellings of every multi-word flag
        if "_" in action.dest:
            assert {f"--{action.dest}", f"--{action.dest.replace('_', '-')}"} <= set(long)
    text = parser.format_help()
    for action in flagged:
        if action.default not in (None, "", False):
            assert re.search(rf"{re.escape(action.option_strings[0])}.*?\(default: ",
                             text, re.S), (name, action.dest)
    assert "SMESCORE_REGISTRY" in text and "exit codes" in text


def test_one_name_per_option_across_commands():
    """Each option has one meaning and one name wherever it appears (help text may differ)."""
    names = {}
    for name in cli.COMMANDS:
        for action in cli.command_parser(name)._actions:
            if action.option_strings and action.dest != "help":
                names.setdefault(action.dest, set()).add(tuple(sorted(action.option_strings)))
    assert all(len(spellings) == 1 for spellings in names.values()), \
        {d: s for d, s in names.items() if len(s) > 1}
    for old in ("project", "dataset", "location"):        # python -m smescore.bigquery's, once
        assert old not in names
    assert {a.dest for a in bqlib.parser()._actions} >= {"bq_project", "risk_dataset",
                                                         "bq_location"}


@pytest.mark.parametrize("module", MAINS)
def test_every_python_m_main_shows_its_flags_with_help(module):
    done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True,
                          cwd=ROOT, env=_subprocess_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    parser = (bqlib.parser() if module == "smescore.bigquery"
              else entry.parser(module.split(".")[1], module, ""))
    flagged = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert len(flagged) >= 3
    for action in flagged:
        assert action.help, (module, action.dest)
        assert action.option_strings[0] in text, (module, action.dest)
    if module.startswith("beam_jobs"):
        assert "Beam's own flags" in text
    assert not [n for n in NOISE if n in done.stderr]


def test_the_scoring_job_offers_every_job_flag_but_the_other_jobs_own():
    """A flag declared in SmescoreOptions reaches `smescore score` and the job's main by itself."""
    from beam_jobs.options import NOT_SCORING, SmescoreOptions
    declared = {a.dest for a in flags.declared(SmescoreOptions)}
    offered = {a.dest for a in cli.command_parser("score")._actions}
    assert declared - set(NOT_SCORING) <= offered
    assert not set(NOT_SCORING) & offered


def test_version():
    done = subprocess.run([sys.executable, "-m", "smescore.cli", "--version"], capture_output=True,
                          text=True, cwd="/", env=_subprocess_env(), timeout=60)
    assert done.returncode == 0
    setup_py = open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read()
    assert "version=VERSION" in setup_py
    assert done.stdout.strip() == f"smescore {smescore.__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", smescore.__version__)


# --- flags that cannot mislead ----------------------------------------------------------------

SCORE = ["score", "--feeds=/nonexistent/feeds", "--registry=/nonexistent/registry",
         "--warehouse=/nonexistent/risk.duckdb"]

REFUSED = [
    # the extra Beam-style flag used to override the first and publish 2025-01-31
    (SCORE + ["--as-of", AS_OF, "--as_of=2025-01-31"],
     "score: --as-of given twice (--as-of 2026-10-31 and --as_of=2025-01-31): give it once"),
    # --dry-run used to be dropped silently and the job published
    (SCORE + ["--as-of", AS_OF, "--dry-run"],
     "score: --dry_run only works with --runner=DataflowRunner (it builds the Dataflow job without "
     "submitting it); with the local DirectRunner the job would run and publish"),
    (SCORE + ["--as-of", AS_OF, "--runner", "DirectRunner", "--dry_run=True"],
     "with --runner=DirectRunner the job would run and publish"),
    # a misspelt Beam flag used to be dropped
    (SCORE + ["--as-of", AS_OF, "--runer=DirectRunner"],
     "score: unknown flag --runer (did you mean --runner?)"),
    (SCORE + ["--as-of", AS_OF, "--temp-locaton=/tmp"],
     "score: unknown flag --temp-locaton (did you mean --temp_location?)"),
    (SCORE + ["--as-off", AS_OF], "score: unknown flag --as-off (did you mean --as-of?)"),
    (SCORE + ["--as", AS_OF], "score: unknown flag --as"),           # no abbreviations
    (SCORE + ["--as-of", AS_OF, "--runner", "DirectRunner", "--runner=DataflowRunner"],
     "score: --runner given twice (--runner DirectRunner and --runner=DataflowRunner)"),
    (SCORE + ["--as-of", AS_OF, "--n_shards", "4", "--n-shards=8"],
     "score: --n-shards given twice"),
    (SCORE + ["--as-of", AS_OF, "--runner"], "score: --runner needs a value"),
    (SCORE + ["--as-of", "--registry=/r"], "score: --as-of needs a value"),
    (SCORE + ["--as-of", AS_OF, "--require-gpu=maybe"],
     "score: --require-gpu takes true or false, got 'maybe'"),
    (SCORE + ["--as-of", AS_OF, "--summary=yes"], "--summary takes no value"),
    (SCORE + ["--as-of", AS_OF, "-r", "x"], "-r: single-dash flags are not accepted"),
    (SCORE + ["--as-of", AS_OF, "stray"], "unrecognized arguments: stray"),
    (SCORE + ["--as-of=2026-13-01"], "--as_of must be YYYY-MM-DD, got '2026-13-01'"),
    (["score", "--as-of", AS_OF], "the following arguments are required: --registry"),
    # mixed option names: one name everywhere, either spelling, once
    (["report", "--as-of", AS_OF, "--bq_project=bank-risk-prod", "--bq-project=bank-risk-dev"],
     "report: --bq-project given twice"),
    (["report", "--as-of", AS_OF, "--project=bank-risk-prod"],
     "report: unknown flag --project (did you mean --bq-project?)"),
    (["features", "--feeds=/f", "--as-of", AS_OF, "--out=/o.parquet", "--model-version=v1"],
     "features: unknown flag --model-version"),               # not a flag of that job
    (["query", "SELECT 1", "--runner=DirectRunner"], "query: unknown flag --runner"),  # no Beam
    (["--feeds", "/f", "score"], "the command comes first"),
    (["scor", "--as-of", AS_OF], "unknown command 'scor' (did you mean score?)"),
    ([], "the following arguments are required: COMMAND"),
    # values the network or the training design refuse used to surface as "internal error"
    (["train", "--feeds=/nonexistent/feeds", "--registry=/r", "--background-size=50"],
     "train: background_size must be >= 100 firms, got 50"),
    (["train", "--feeds=/nonexistent/feeds", "--registry=/r", "--focal-alpha=1.5"],
     "train: focal_alpha must be in (0, 1), got 1.5"),
    (["train", "--feeds=/nonexistent/feeds", "--registry=/r", "--calibration-folds=1"],
     "train: calibration_folds must be 0 or >= 2, got 1"),
]


@pytest.mark.parametrize("argv, message", REFUSED, ids=[" ".join(a[1:])[-60:] or "empty"
                                                        for a, _ in REFUSED])
def test_misleading_invocations_are_refused_on_one_line_with_exit_2(argv, message, capsys):
    started = time.monotonic()
    rc, out, err = _run_cli(capsys, argv)
    assert rc == 2, err
    assert message in _one_line(err)
    assert out == ""
    assert time.monotonic() - started < 30          # refused before anything runs


def test_the_nearest_name_is_the_commands_own_or_a_close_beam_flag(capsys):
    rc, _, err = _run_cli(capsys, ["features", "--feeds=/f", "--as-of", AS_OF, "--out=/o.parquet",
                                   "--model-version=v1", "--as-off=x"])
    assert _one_line(err) == "smescore: features: unknown flag --model-version"   # no wild guess
    rc, _, err = _run_cli(capsys, ["features", "--feeds=/f", "--as-of", AS_OF, "--out=/o.parquet",
                                   "--rejected_ot=x"])
    assert _one_line(err) == ("smescore: features: unknown flag --rejected_ot "
                              "(did you mean --rejected-out?)")


def test_beam_flags_pass_through_in_beam_form():
    own = flags.specs_of(entry.parser("score_portfolio", "score", ""), dashes=True)
    mine, beam = flags.split(
        ["--as-of", AS_OF, "--runner", "DataflowRunner", "--temp-location", "gs://b/t",
         "--experiments", "a", "--experiments=b", "--dry-run", "--require_gpu", "false",
         "--no_auth", "--n-shards", "-3"], own, flags.beam_specs())
    assert mine == [f"--as_of={AS_OF}", "--n_shards=-3"]           # -3: a value; the job refuses it
    assert beam == ["--runner=DataflowRunner", "--temp_location=gs://b/t", "--experiments=a",
                    "--experiments=b", "--dry_run=True", "--no_auth"]
    # idempotent: the job's main checks what the CLI hands it again
    assert entry.job_argv(mine + beam, "score_portfolio") == mine + beam
    with pytest.raises(UsageError, match="unknown flag --summary"):     # a CLI-only flag
        entry.job_argv(["--summary"], "score_portfolio")


def test_the_python_m_main_refuses_the_same_way():
    with pytest.raises(UsageError, match=r"--as_of given twice"):
        score_portfolio.run(["--as_of=2026-10-31", "--registry=/r", "--feeds=/f",
                             "--warehouse=/w.duckdb", "--as-of", "2025-01-31"],
                            save_main_session=False)
    done = subprocess.run([sys.executable, "-m", "beam_jobs.score_portfolio", f"--as_of={AS_OF}",
                           "--registry=/r", "--feeds=/f", "--warehouse=/w.duckdb",
                           "--runer=DirectRunner"], capture_output=True, text=True, cwd=ROOT,
                          env=_subprocess_env(), timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == ("smescore: score_portfolio: unknown flag --runer "
                                   "(did you mean --runner?)")
    assert bqlib.main(["--project", "p", "--dataset", "d"]) == 2


# --- one-line errors with their exit codes ------------------------------------------------------

@pytest.fixture
def feeds_copy(small_feeds, tmp_path):
    dst = tmp_path / "feeds"
    shutil.copytree(small_feeds, dst, ignore=shutil.ignore_patterns("_ground_truth"))
    return dst


@pytest.fixture
def registry_copy(trained, tmp_path):
    registry, version, _ = trained
    dst = tmp_path / "registry"
    shutil.copytree(registry, dst)
    return dst, version


def test_a_truncated_parquet_file_names_the_file_and_the_feed(feeds_copy, tmp_path, capsys):
    victim = sorted((feeds_copy / "invoices").glob("*.parquet"))[0]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    rc, _, err = _run_cli(capsys, ["features", f"--feeds={feeds_copy}", "--as-of", AS_OF,
                                   f"--out={tmp_path / 'f.parquet'}"])
    assert rc == 3
    line = _one_line(err)
    assert f"feed invoices: {victim} is not a readable Parquet file" in line
    assert not (tmp_path / "f.parquet").exists()


def test_a_missing_feed_folder(tmp_path, capsys):
    rc, _, err = _run_cli(capsys, ["features", f"--feeds={tmp_path / 'nope'}", "--as-of", AS_OF,
                                   f"--out={tmp_path / 'f.parquet'}"])
    assert rc == 3
    assert f"feeds folder '{tmp_path / 'nope'}' does not exist" in _one_line(err)
    (tmp_path / "empty" / "enterprises").mkdir(parents=True)
    rc, _, err = _run_cli(capsys, ["features", f"--feeds={tmp_path / 'empty'}", "--as-of", AS_OF,
                                   f"--out={tmp_path / 'f.parquet'}"])
    assert rc == 3
    assert "no Parquet or CSV files for feeds ['enterprises', 'tax_filings'" in _one_line(err)


def _score(feeds, registry, warehouse, *extra):
    return ["score", f"--feeds={feeds}", f"--registry={registry}", f"--warehouse={warehouse}",
            "--as-of", AS_OF, "--n-shards=4", *extra]


def test_an_invalid_model_card_names_the_file(small_feeds, registry_copy, tmp_path, capsys):
    registry, version = registry_copy
    card = registry / "versions" / version / "model_card.json"
    card.write_text(card.read_text()[:-40], encoding="utf-8")
    rc, _, err = _run_cli(capsys, _score(small_feeds, registry, tmp_path / "w.duckdb"))
    assert rc == 3
    line = _one_line(err)
    assert f"{card} is not valid JSON (" in line and "retrain the version" in line
    assert not (tmp_path / "w.duckdb").exists() or duckdb.connect(
        str(tmp_path / "w.duckdb")).sql("SELECT count(*) FROM scores").fetchone() == (0,)


def test_a_missing_registry_entry_names_it_and_what_to_run(small_feeds, registry_copy, tmp_path,
                                                           capsys):
    registry, version = registry_copy
    rc, _, err = _run_cli(capsys, _score(small_feeds, registry, tmp_path / "w.duckdb",
                                         "--model-version=20990101-0000000000"))
    assert rc == 3
    line = _one_line(err)
    assert f"no model version '20990101-0000000000' in registry '{registry}'" in line
    assert "smescore challenger list" in line
    (registry / "champion.json").unlink()
    rc, _, err = _run_cli(capsys, _score(small_feeds, registry, tmp_path / "w.duckdb"))
    assert rc == 3
    assert f"no champion in registry '{registry}': run `smescore train`" in _one_line(err)


@pytest.mark.parametrize("flag, content, message", [
    ("--drift-config", '{"psi": {"warn": 0.1, ', "not valid JSON"),
    ("--drift-config", '{"psi": {"warn": 0.3, "alert": 0.1}}', "needs 0 <= warn <= alert"),
    ("--scorecard-config", "[1, 2]", "expected a JSON object at the top level"),
    ("--rules-config", None, "cannot read the config"),
])
def test_a_bad_config_names_the_file(flag, content, message, small_feeds, trained, tmp_path,
                                     capsys):
    registry, _, _ = trained
    path = tmp_path / "config.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    rc, _, err = _run_cli(capsys, _score(small_feeds, registry, tmp_path / "w.duckdb",
                                         f"{flag}={path}"))
    assert rc == 3, err
    line = _one_line(err)
    assert message in line
    assert "drift config" in line or str(path) in line


def test_an_unexpected_error_is_one_line_and_the_traceback_comes_with_debug(tmp_path, capsys):
    wh = tmp_path / "w.duckdb"
    duckdb.connect(str(wh)).close()
    rc, _, err = _run_cli(capsys, ["query", "SELECT * FROM no_such_table", f"--warehouse={wh}"])
    assert rc == 1
    line = _one_line(err)
    assert line.startswith("smescore: internal error: CatalogException: ")
    assert line.endswith("(run with --debug for the traceback)")
    rc, _, err = _run_cli(capsys, ["--debug", "query", "SELECT * FROM no_such_table",
                                   f"--warehouse={wh}"])
    assert rc == 1 and "Traceback (most recent call last)" in err


# --- the offline Dataflow dry run never reads a gs:// registry ---------------------------------

DATAFLOW = ["--runner", "DataflowRunner", "--dry_run=True", "--no_auth", "--sdk_location=container",
            "--project=bank-risk-prod", "--region=asia-east1",
            "--temp_location=gs://bank-risk-prod-smescore-temp/temp",
            "--sdk_container_image=asia-east1-docker.pkg.dev/bank-risk-prod/smescore/worker:1",
            "--source=bigquery", "--sink=bigquery", "--bq-project=bank-risk-prod",
            "--feeds-dataset=sme_feeds", "--risk-dataset=sme_risk"]
GS_REGISTRY = "gs://bank-risk-prod-smescore-models/registry"


def test_the_readme_dry_run_needs_a_model_version_with_a_gs_registry(capsys):
    started = time.monotonic()
    rc, out, err = _run_cli(capsys, ["score", "--as-of", AS_OF, f"--registry={GS_REGISTRY}",
                                     *DATAFLOW])
    assert rc == 2
    assert (f"a dry run does not read the registry {GS_REGISTRY}: give --model_version=VERSION"
            in _one_line(err))
    assert time.monotonic() - started < 60         # no Cloud Storage retries


def test_the_readme_dry_run_builds_the_job_offline_with_a_model_version(capsys):
    version = "20261031-3f9a0c1b2d"
    started = time.monotonic()
    rc, out, err = _run_cli(capsys, ["score", "--as-of", AS_OF, f"--registry={GS_REGISTRY}",
                                     f"--model-version={version}", *DATAFLOW])
    assert rc == 0, err
    summary = json.loads(out)
    assert summary["dry_run"] is True
    assert summary["models"] == [version] and "ScorePortfolio" in summary["stages"]
    assert time.monotonic() - started < 120


# --- quiet logs and shared outputs -------------------------------------------------------------

def test_a_night_on_the_command_line_is_quiet_and_readable_by_the_group(small_feeds, trained,
                                                                        tmp_path):
    """`smescore score` in a fresh process, as an operator types it (space-separated Beam flags,
    both spellings, no TF_* variables set), under umask 027: it publishes, its stderr holds
    progress and nothing of CUDA, absl or oneDNN, and its report is readable by the group."""
    registry, version, _ = trained
    wh, reports = tmp_path / "risk.duckdb", tmp_path / "reports"
    done = subprocess.run(
        [sys.executable, "-m", "smescore.cli", "score", "--feeds", small_feeds, "--as_of", AS_OF,
         "--registry", registry, "--warehouse", str(wh), "--n-shards", "4",
         "--runner", "DirectRunner", "--report_dir", str(reports)],
        capture_output=True, text=True, cwd=ROOT, env=_subprocess_env(), timeout=600, umask=0o027)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["run_id"]
    assert "[score] published" in done.stderr
    assert [ln for ln in done.stderr.splitlines() if any(n in ln for n in NOISE)] == []
    assert [ln for ln in done.stderr.splitlines() if not ln.startswith("[")] == []
    with duckdb.connect(str(wh), read_only=True) as con:
        assert con.sql("SELECT DISTINCT as_of_date FROM scores").fetchall() == [
            (dt.date(2026, 10, 31),)]
    report = reports / f"run-report-{AS_OF}.html"
    assert oct(report.stat().st_mode & 0o777) == oct(0o640)
    # the same report written again by `smescore report` under umask 022
    saved = os.umask(0o022)
    try:
        again = run_report.write_report(str(wh), dt.date(2026, 10, 31),
                                        str(tmp_path / "again" / "report.html"), registry)
    finally:
        os.umask(saved)
    assert oct(os.stat(again).st_mode & 0o777) == oct(0o644)


@pytest.fixture
def umask():
    saved = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(saved)


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755),
                                                       (0o027, 0o640, 0o750)])
def test_outputs_respect_the_umask(mask, file_mode, dir_mode, umask, tmp_path):
    umask(mask)
    # a registry version folder (built in a mkdtemp folder, renamed into place) and champion.json
    reg = model_registry.Registry(str(tmp_path / "registry"))
    staging = reg.staging_dir()
    with open(os.path.join(staging, model_registry.MODEL_CARD), "w", encoding="utf-8") as fh:
        json.dump({"features": []}, fh)
    version_dir = reg.publish(staging, "20261031-0123456789")
    reg.set_champion("20261031-0123456789")
    assert oct(os.stat(version_dir).st_mode & 0o777) == oct(dir_mode)
    assert oct(os.stat(tmp_path / "registry" / "champion.json").st_mode & 0o777) == oct(file_mode)
    # a table written by a job (`smescore features --out`) and a run report
    schema = pa.schema([("enterprise_id", pa.string())])
    out = str(tmp_path / "features.parquet")
    sinks.write_sorted_parquet([pa.table({"enterprise_id": ["b", "a"]}, schema)], out, schema,
                               ["enterprise_id"])
    assert pq.read_table(out).column(0).to_pylist() == ["a", "b"]
    assert oct(os.stat(out).st_mode & 0o777) == oct(file_mode)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_info_and_one_live_line_on_a_terminal(monkeypatch):
    """Progress records go out at INFO (not `WARNING:smescore.progress:`); on a terminal each
    rewrites the status line, and the next plain line starts on a fresh one."""
    from transforms import progress
    for stream, expected in ((_Terminal(), "\r\x1b[K[progress] firms scored 5\n[score] done\n"),
                             (io.StringIO(), "[progress] firms scored 5\n[score] done\n")):
        monkeypatch.setattr(sys, "stderr", stream)
        monkeypatch.setattr(progress, "_counts", {})
        monkeypatch.setattr(progress, "_last", [-1e9])
        with runtime.logging_for_command():
            logging.getLogger("apache_beam").info("Beam's own chatter stays out")
            progress.advance("firms scored", 5)
            runtime.progress("[score] done")
        assert stream.getvalue() == expected


@pytest.mark.parametrize("make_error", [
    lambda: ConnectionRefusedError(111, "Connection refused"),
    lambda: __import__("google.api_core.exceptions", fromlist=["x"]).ServiceUnavailable("503 backend"),
    lambda: __import__("requests").exceptions.ConnectionError("Max retries exceeded with url"),
])
def test_an_unreachable_service_is_exit_5_in_one_line(make_error, capsys):
    from smescore import runtime
    assert runtime.report_error(make_error()) == 5
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("smescore: service unavailable: ")


def test_a_bug_is_exit_1_in_one_line(capsys):
    from smescore import runtime
    assert runtime.report_error(KeyError("x")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: KeyError" in err and "--debug" in err
