"""What the nightly job does after a run, for the people watching it: push the run's metrics to the
Pushgateway (--pushgateway) and write the HTML run report (--report_dir).

Both run after the risk tables are published (or the run has failed), and neither can fail the run:
the data is already out, and a monitoring outage must not turn a good night into a failed one. Each
failure is logged as an error instead and shows in the result (`metrics_pushed`, `report`).
"""
from __future__ import annotations

import datetime as dt
import logging

from beam_jobs.risk_sinks import open_risk_tables
from smescore.errors import EXIT_INTERNAL, EXIT_OK, SmescoreError
from smescore.monitoring import metrics, run_report

log = logging.getLogger(__name__)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def run_succeeded(cfg, run_ctx, result: dict) -> dict:
    """After publish: push the published run's metrics (replacing the group), write the report."""
    finished = _now()
    tables = open_risk_tables(cfg)      # no I/O until read
    if cfg.pushgateway:
        version = run_ctx.scoring.model_version
        try:
            samples = (metrics.run_samples(version, True, run_ctx.started_at, finished)
                       + metrics.published_samples(tables, result, run_ctx.card, finished))
        except Exception as err:  # noqa: BLE001 - still say the run succeeded
            log.error("could not read the run's metrics back: %s: %s", type(err).__name__, err)
            run_ctx.progress(f"[monitor] METRICS INCOMPLETE: {type(err).__name__}: {err}")
            samples = metrics.run_samples(version, True, run_ctx.started_at, finished)
        samples += metrics.attempt_samples(version, EXIT_OK, run_ctx.gates)
        result["metrics_pushed"] = metrics.push(
            cfg.pushgateway, metrics.instance_of(tables), samples, replace=True,
            progress=run_ctx.progress)
    if cfg.report_dir:
        path = run_report.report_path(cfg.report_dir, cfg.as_of)
        try:
            result["report"] = run_report.write_report(tables, cfg.as_of, path, cfg.registry)
            run_ctx.progress(f"[monitor] run report: {path}")
        except Exception as err:  # noqa: BLE001 - the data is published; say loudly what is missing
            log.error("RUN REPORT NOT WRITTEN (%s): %s: %s", path, type(err).__name__, err)
            run_ctx.progress(f"[monitor] RUN REPORT NOT WRITTEN ({path}): "
                             f"{type(err).__name__}: {err}")
            result["report"] = None
    return result


def run_failed(cfg, run_ctx, err: BaseException) -> None:
    """After a failure: push status 0, duration, finish time, exit code and the gates only (POST
    keeps the last success time and the last published run's metrics in the group)."""
    if cfg.pushgateway:
        version = run_ctx.scoring.model_version
        samples = (metrics.run_samples(version, False, run_ctx.started_at, _now())
                   + metrics.attempt_samples(version, exit_code(err), run_ctx.gates))
        metrics.push(cfg.pushgateway, metrics.instance_of(open_risk_tables(cfg)), samples, replace=False,
                     progress=run_ctx.progress)


def exit_code(err: BaseException) -> int:
    return err.exit_code if isinstance(err, SmescoreError) else EXIT_INTERNAL


def attempt_failed(cfg, record: dict, err: BaseException, progress=print) -> None:
    """After an attempt failed before its pipeline (no run context): the same POST as
    run_failed, so the dashboards see it (the instance is the sink's, read without I/O)."""
    if cfg.pushgateway:
        version = record["model_version"]
        samples = (metrics.run_samples(version, False, record["started_at"], _now())
                   + metrics.attempt_samples(version, exit_code(err), []))
        metrics.push(cfg.pushgateway, metrics.instance_of(open_risk_tables(cfg)), samples,
                     replace=False, progress=progress)
