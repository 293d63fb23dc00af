"""The nightly job on Dataflow with GPU workers, built offline (`--dry_run=True --no_auth`), the
configurations it refuses before submitting, and GPU runs failing fast on this CPU machine."""
import json
import os

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.ml.inference.base import RunInference
from apache_beam.portability.api import beam_runner_api_pb2

from beam_jobs import dataflow, risk_sinks, score_portfolio
from beam_jobs.inference import FeatureTableModelHandler, NoGpuError
from smescore import cli
from transforms import feeds as feed_contract

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = "asia-east1-docker.pkg.dev/bank-risk-prod/smescore/worker:2026.11.01"
DATAFLOW = ["--runner=DataflowRunner", "--dry_run=True", "--no_auth", "--sdk_location=container",
            "--project=bank-risk-prod", "--region=asia-east1", "--job_name=smescore-score-2026-10-31",
            "--temp_location=gs://bank-risk-prod-smescore-temp/temp",
            f"--sdk_container_image={IMAGE}", "--machine_type=g2-standard-4",
            f"--dataflow_service_options={dataflow.GPU_SERVICE_OPTION}",
            f"--experiments={dataflow.ONE_SDK_PROCESS}", f"--setup_file={ROOT}/setup.py"]
BIGQUERY = ["--source=bigquery", "--sink=bigquery", "--bq_project=bank-risk-prod",
            "--feeds_dataset=sme_feeds", "--risk_dataset=sme_risk", "--bq_location=asia-east1"]
AS_OF = "--as_of=2026-10-31"


def _gpu_visible() -> bool:
    import tensorflow as tf
    return bool(tf.config.list_physical_devices("GPU"))


# --- the dry-run job --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def job(trained):
    registry, _, _ = trained
    argv = DATAFLOW + BIGQUERY + [AS_OF, f"--registry={registry}", "--require_gpu"]
    options, cfg, source, run_ctx = score_portfolio.prepare(argv, save_main_session=False,
                                                            progress=lambda m: None)
    staging = dataflow.staging_folder(options, run_ctx.scoring.run_id)
    assert staging == f"gs://bank-risk-prod-smescore-temp/temp/smescore-staging/{run_ctx.scoring.run_id}"
    return score_portfolio.build(options, cfg, source, run_ctx, staging).run().job


def test_dry_run_job_asks_for_one_l4_gpu_per_worker_with_the_worker_image(job):
    env = dataflow.job_description(job)         # what create_job would send with it
    assert list(env.service_options) == [
        "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"]
    pool, = env.worker_pools
    assert pool.machine_type == "g2-standard-4"
    assert pool.worker_harness_container_image == IMAGE
    assert [c.container_image for c in pool.sdk_harness_container_images] == [IMAGE]
    assert "no_use_multiple_sdk_containers" in env.experiments
    assert "use_multiple_sdk_containers" not in env.experiments
    assert job.proto.name == "smescore-score-2026-10-31"


def test_dry_run_job_runs_every_transform_in_the_worker_image_with_the_project_package(job):
    envs = job.proto_pipeline.components.environments
    used = {t.environment_id for t in job.proto_pipeline.components.transforms.values()
            if t.environment_id}
    assert used
    for env_id in used:
        payload = beam_runner_api_pb2.DockerPayload.FromString(envs[env_id].payload)
        assert payload.container_image == IMAGE
        staged = {beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(d.role_payload)
                  .staged_name for d in envs[env_id].dependencies}
        assert "workflow.tar.gz" in staged          # --setup_file: the smescore sdist


def test_dry_run_graph_holds_read_inference_attribution_and_write_stages(job, trained):
    _, version, _ = trained
    top = set(dataflow.stage_names(job))
    names = {t.unique_name for t in job.proto_pipeline.components.transforms.values()}
    # the nightly job is a composition of named composites (beam_jobs/stages.py)
    assert {"Features", "ScorePortfolio", "StageRiskTables"} <= top
    scoring = "ScorePortfolio/ScoreFirms/"
    assert {f"{scoring}{s}" for s in ("Route", f"RunInference[{version}]", "ScoreAndExplain",
                                      "Attributions", "ColdStartRules", "GradeD")} <= names
    assert {"ScorePortfolio/Drift", "ScorePortfolio/CompareWithChampion"} <= names
    inference = [t for t in job.proto_pipeline.components.transforms.values()
                 if t.unique_name == f"{scoring}RunInference[{version}]"][0]
    assert inference.subtransforms                       # RunInference's own expansion
    # Feeds come from BigQuery (the staged feed queries, Storage Read API) ...
    assert {f"ReadFromBigQuery[{f}]" for f in feed_contract.FEEDS} <= top
    # ... the risk tables are staged as Parquet under --temp_location; the workers summarise
    # the book and load the per-firm tables and the summary into the run's BigQuery staging
    # tables (Parquet load jobs); the driver publishes in one transaction after the job.
    assert {f"StageRiskTables/Stage[{t}]" for t in (
        "scores", "attributions", "rejected", "rows_in", "firm_segments", "drift",
        "scores_shadow", "challenger_comparison")} <= names
    assert {f"StageRiskTables/Load[{t}]" for t in risk_sinks.WORKER_LOADED} <= names
    assert {"StageRiskTables/Summarise", "StageRiskTables/Prestaged"} <= names
    assert not [n for n in names if "WriteToBigQuery" in n]


def test_dry_run_through_the_job_entry_point_describes_the_job(trained):
    registry, version, _ = trained
    summary = score_portfolio.run(DATAFLOW + BIGQUERY + [AS_OF, f"--registry={registry}"],
                                  save_main_session=False, progress=lambda m: None)
    assert summary["dry_run"] is True and summary["sdk_container_image"] == IMAGE
    assert summary["service_options"] == [dataflow.GPU_SERVICE_OPTION]
    assert "ScorePortfolio" in summary["stages"] and summary["models"] == [version]
    assert not [s for s in summary["stages"] if s.startswith("ref_") or "/" in s]


def test_the_score_command_submits_with_bigquery_flags_instead_of_feeds_and_warehouse(trained,
                                                                                   capsys):
    registry, version, _ = trained
    argv = ["score", "--as-of=2026-10-31", f"--registry={registry}", *DATAFLOW, *BIGQUERY]
    assert cli.main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["dry_run"] is True and summary["models"] == [version]


# --- refused before submission ----------------------------------------------------------------

@pytest.mark.parametrize("flags, message", [
    (["--sink=duckdb", "--warehouse=/tmp/risk.duckdb", "--source=bigquery"],
     "needs --sink=bigquery"),
    (["--sink=bigquery", "--source=files", "--feeds=/srv/feeds"], "needs --source=bigquery"),
])
def test_dataflow_refuses_local_sources_and_sinks(flags, message):
    with pytest.raises(dataflow.DataflowConfigError, match=message):
        score_portfolio.run(DATAFLOW + flags + [AS_OF, "--registry=gs://b/registry"],
                            save_main_session=False)


def test_dataflow_refuses_a_registry_workers_cannot_read():
    argv = [a for a in DATAFLOW if a != "--dry_run=True"] + BIGQUERY + [AS_OF, "--registry=/srv/reg"]
    with pytest.raises(dataflow.DataflowConfigError, match="--registry must be a gs:// folder"):
        score_portfolio.run(argv, save_main_session=False)


def test_dataflow_refuses_gpu_settings_that_cannot_work():
    base = [a for a in DATAFLOW if not a.startswith(("--dataflow_service_options",
                                                     "--sdk_container_image"))]
    with pytest.raises(dataflow.DataflowConfigError, match="no accelerator is requested"):
        score_portfolio.run(base + BIGQUERY + [AS_OF, "--registry=gs://b/r", "--require_gpu"],
                            save_main_session=False)
    with pytest.raises(dataflow.DataflowConfigError, match="pass --sdk_container_image"):
        score_portfolio.run(base + [f"--dataflow_service_options={dataflow.GPU_SERVICE_OPTION}"]
                            + BIGQUERY + [AS_OF, "--registry=gs://b/r"], save_main_session=False)


# --- --require_gpu on a machine without one ---------------------------------------------------

def test_require_gpu_fails_at_start_on_a_local_runner():
    if _gpu_visible():
        pytest.skip("a GPU is visible here")
    with pytest.raises(NoGpuError, match="TensorFlow sees no GPU on this machine"):
        score_portfolio.run(["--runner=DirectRunner", "--require_gpu", AS_OF,
                             "--feeds=/nonexistent", "--registry=/nonexistent",
                             "--warehouse=/nonexistent/w.duckdb"], save_main_session=False)


def test_require_gpu_fails_the_worker_at_model_load(trained):
    """On a worker the check runs in RunInference's model load, before any firm is scored."""
    if _gpu_visible():
        pytest.skip("a GPU is visible here")
    registry, version, _ = trained
    from models.registry import Registry
    handler = FeatureTableModelHandler(Registry(registry).saved_model_path(version), version,
                                       require_gpu=True)
    table = pa.table({"enterprise_id": ["E1"]})
    with pytest.raises(Exception) as failure:
        with beam.Pipeline("DirectRunner") as p:
            _ = p | beam.Create([table]) | RunInference(handler)
    assert "NoGpuError" in repr(failure.value) or isinstance(failure.value, NoGpuError)
    assert "--require_gpu is set but TensorFlow sees no GPU on this worker" in str(failure.value)
    # The same model loads when no GPU is required.
    assert FeatureTableModelHandler(handler.saved_model_path, version).load_model() is not None
