"""Running the nightly job on Dataflow with GPU workers: the checks that make a misconfigured job
fail at submission instead of after workers have started, and a description of the job that a
dry run built.

The documented GPU flags (README, "Run on Google Cloud"):

    --runner=DataflowRunner --project=P --region=R --temp_location=gs://B/temp
    --sdk_container_image=R-docker.pkg.dev/P/smescore/worker:TAG     (infra/Dockerfile)
    --machine_type=g2-standard-4
    --dataflow_service_options=worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver
    --experiments=no_use_multiple_sdk_containers    (one SDK process, one model copy, per GPU)
    --setup_file=./setup.py --source=bigquery --sink=bigquery --require_gpu
"""
from __future__ import annotations

import logging
import re
import tempfile

from apache_beam.options.pipeline_options import (DebugOptions, GoogleCloudOptions,
                                                  PipelineOptions, StandardOptions, TestOptions,
                                                  WorkerOptions)

from beam_jobs import preflight
from beam_jobs.inference import check_gpu
from beam_jobs.options import SmescoreOptions
from smescore import files
from smescore.errors import UsageError

GPU_SERVICE_OPTION = "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"
ONE_SDK_PROCESS = "no_use_multiple_sdk_containers"

_LOG = logging.getLogger(__name__)


class DataflowConfigError(UsageError, ValueError):
    """A job Dataflow could not run: refused before submission (exit 2)."""


def is_dataflow(options: PipelineOptions) -> bool:
    runner = options.view_as(StandardOptions).runner or ""
    return (runner if isinstance(runner, str) else type(runner).__name__) in (
        "DataflowRunner", "dataflow")


def is_dry_run(options: PipelineOptions) -> bool:
    """Only DataflowRunner honours --dry_run (it builds the job and does not submit it)."""
    return is_dataflow(options) and bool(options.view_as(TestOptions).dry_run)


def worker_accelerator(options: PipelineOptions) -> str | None:
    for opt in options.view_as(GoogleCloudOptions).dataflow_service_options or []:
        if opt.startswith("worker_accelerator="):
            return opt
    return None


def check_runner(options: PipelineOptions) -> None:
    """Refuse what cannot work on the chosen runner; on a local runner, --require_gpu checks here."""
    o = options.view_as(SmescoreOptions)
    if not is_dataflow(options):
        if o.require_gpu:
            check_gpu("this machine")
        return
    if o.sink != "bigquery":
        raise DataflowConfigError(
            f"--runner=DataflowRunner needs --sink=bigquery, got --sink={o.sink}: the job stages "
            f"its outputs where the driver can publish them after the workers finish, and Dataflow "
            f"workers cannot reach a DuckDB file or a temp folder on the submitting machine")
    if o.source != "bigquery":
        raise DataflowConfigError(
            f"--runner=DataflowRunner needs --source=bigquery, got --source={o.source}: local feed "
            f"files are not visible to Dataflow workers")
    if not (o.registry or "").startswith("gs://") and not is_dry_run(options):
        raise DataflowConfigError(
            f"--registry must be a gs:// folder on Dataflow (workers load the SavedModel from it), "
            f"got {o.registry!r}")
    accelerator = worker_accelerator(options)
    image = options.view_as(WorkerOptions).sdk_container_image
    if o.require_gpu and not accelerator:
        raise DataflowConfigError(
            f"--require_gpu asks for GPU workers but no accelerator is requested: add "
            f"--dataflow_service_options={GPU_SERVICE_OPTION} and --machine_type=g2-standard-4")
    if accelerator and not image:
        raise DataflowConfigError(
            "GPU workers need the worker image with TensorFlow's CUDA libraries (infra/Dockerfile): "
            "pass --sdk_container_image=REGION-docker.pkg.dev/PROJECT/smescore/worker:TAG")
    experiments = options.view_as(DebugOptions).experiments or []
    if accelerator and "use_nvidia_mps" not in accelerator and ONE_SDK_PROCESS not in experiments:
        _LOG.warning("GPU workers without --experiments=%s start one SDK process per vCPU, each "
                     "loading its own copy of the model onto the one GPU", ONE_SDK_PROCESS)


def staging_folder(options: PipelineOptions, run_id: str) -> str:
    """Where the pipeline stages its outputs for the driver to publish: a fresh local folder, or on
    Dataflow a run-scoped folder under --temp_location (workers cannot write the driver's disk;
    the driver reads the Parquet files back from Cloud Storage)."""
    if is_dataflow(options):
        temp = options.view_as(GoogleCloudOptions).temp_location or ""
        if not temp.startswith("gs://"):
            raise DataflowConfigError(
                f"--temp_location must be a gs:// folder on Dataflow, got {temp!r}")
        return f"{temp.rstrip('/')}/smescore-staging/{run_id}"
    return tempfile.mkdtemp(prefix=preflight.staging_prefix())   # pid: cleaned if killed


def remove_staging(folder: str) -> None:
    try:
        files.remove_tree(folder)
    except Exception as err:      # leftovers expire with the temp bucket's lifecycle rule
        _LOG.warning("could not remove staging folder %s: %s", folder, err)


def job_description(job):
    """The worker environment Dataflow would receive for a job built by a dry run: the same Beam
    code that fills it in at submission, minus the uploads (staged file URLs are placeholders)."""
    # Dataflow's API client only for a dry run's description: loading it costs every other run
    from apache_beam.runners.dataflow.internal import apiclient
    staging = job.options.view_as(GoogleCloudOptions).staging_location
    return apiclient.Environment(
        packages=[], options=job.options,
        environment_version=apiclient._FNAPI_ENVIRONMENT_MAJOR_VERSION,  # what create_job sends
        proto_pipeline_staged_url=f"{staging}/pipeline.pb", proto_pipeline=job.proto_pipeline).proto


def transform_names(job) -> list[str]:
    """Unique names of every transform in the job's pipeline (composites and their parts)."""
    return sorted(t.unique_name for t in job.proto_pipeline.components.transforms.values())


def stage_names(job) -> list[str]:
    """The pipeline's own top-level stages (Beam's synthetic root left out)."""
    return [n for n in transform_names(job) if n and "/" not in n and not n.startswith("ref_")]


def inference_models(job) -> list[str]:
    """The model versions the job's RunInference scores with (its step is named after them)."""
    for name in transform_names(job):
        found = re.search(r"/RunInference\[([^\]/]+)\]$", name)
        if found:
            return found.group(1).split("+")
    return []


def dry_run_summary(job) -> dict:
    """What `--dry_run=True` prints: the job Dataflow would receive, in brief."""
    env = job_description(job)
    pool = env.worker_pools[0]
    return {"dry_run": True, "job_name": job.proto.name,
            "sdk_container_image": pool.worker_harness_container_image,
            "machine_type": pool.machine_type,
            "service_options": list(env.service_options),
            "experiments": sorted(env.experiments),
            "stages": stage_names(job), "models": inference_models(job)}
