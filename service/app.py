"""The scoring service: FastAPI over the nightly scoring core (service/core.py).

    POST /v1/score/features        feature values of one firm or many -> scores
    POST /v1/score/records         a firm's raw feed records (and its related firms') -> its score
    GET  /v1/firms/{id}/score      the same from the feed folder (--feeds), as of ?as_of_date=
    GET  /v1/firms/{id}/explain    the explanation page (HTML) from the feeds, or (?source=
                                   nightly) from the risk tables as a night published it
    GET  /v1/firms/{id}/nightly    the firm's score as a night published it (--warehouse)
    GET  /v1/firms/{id}/parity     the live score from the feeds against that night's row
    POST /v1/explain/records       the explanation page from raw records
    GET  /healthz /readyz /metrics /docs

Scores come from the registry's champion (the canary's share from the first challenger), every
challenger scored in shadow and logged. A promote, rollback or challenger change in the registry is
picked up by a watcher, which loads the new models beside the old ones and swaps them in one
assignment: a batch already running finishes with the models it started with.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import gc
import json
import logging
import os
import time
from typing import Callable, Literal

import orjson
import pyarrow as pa
import pydantic
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException
from starlette.routing import Match

from beam_jobs.options import BigQueryConfig
from beam_jobs.risk_sinks import open_risk_tables
from beam_jobs.sources import BigQueryFeedSource
from service import core, explain_page, parity, schemas
from service.batching import DynamicBatcher
from service.feed_store import FeedStore
from service.metrics import ServiceMetrics
from service.nightly import NightlyTables
from service.security import DEFAULT_MAX_BODY_BYTES, AccessMiddleware

log = logging.getLogger("smescore.service")
shadow_log = logging.getLogger("smescore.service.shadow")


@dataclasses.dataclass(frozen=True)
class ServiceConfig:
    registry: str
    feeds: str | None = None
    warehouse: str | None = None                # the risk tables' DuckDB file (nightly answers)
    bigquery: BigQueryConfig | None = None      # feeds_dataset: the feeds; risk_dataset: the tables
    api_keys: tuple[bytes, ...] | None = ()     # None: no key needed (tests, a local demo)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    canary_share: float = core.DEFAULT_CANARY_SHARE
    min_history_months: int = core.DEFAULT_MIN_HISTORY_MONTHS
    scorecard_config: str | None = None
    rules_config: str | None = None
    max_batch_rows: int = 256
    max_wait_ms: float = 2.0
    watch_interval_s: float = 1.0

    def __post_init__(self):
        if self.api_keys is not None and not self.api_keys:
            raise ValueError("no API key configured: give --api-key-file or $SMESCORE_API_KEYS "
                             "(or --no-auth for a local demo)")
        if not 0 <= self.canary_share <= 1:
            raise ValueError(f"canary share must be in [0, 1], got {self.canary_share}")
        if self.feeds and self.bigquery and self.bigquery.feeds_dataset:
            raise ValueError("the feeds from a folder or from BigQuery, not both")
        if self.warehouse and self.bigquery and self.bigquery.risk_dataset:
            raise ValueError("the risk tables from --warehouse or from BigQuery, not both")
        if self.warehouse and not os.path.exists(self.warehouse):
            raise ValueError(f"no warehouse file {self.warehouse} (the nightly job's --warehouse)")


def _feed_store(cfg: ServiceConfig) -> FeedStore | None:
    if cfg.feeds:
        return FeedStore(cfg.feeds)
    if cfg.bigquery and cfg.bigquery.feeds_dataset:
        # every record known today; a request's as-of date then picks what it may see
        today = dt.datetime.now(dt.timezone.utc).date()
        return FeedStore.from_bigquery(BigQueryFeedSource(cfg.bigquery, today, purpose="serve"))
    return None


def _nightly(cfg: ServiceConfig) -> NightlyTables | None:
    if cfg.warehouse:
        return NightlyTables(open_risk_tables(cfg.warehouse))
    if cfg.bigquery and cfg.bigquery.risk_dataset:
        return NightlyTables(open_risk_tables(cfg.bigquery))
    return None


class Service:
    """The models in force, the batcher and the registry watcher."""

    def __init__(self, cfg: ServiceConfig):
        self.cfg = cfg
        self.metrics = ServiceMetrics()
        self.models: core.ModelSet | None = None
        self.batcher = DynamicBatcher(self._score_batch, cfg.max_batch_rows,
                                      cfg.max_wait_ms / 1000, self.metrics.batch_rows.observe,
                                      core.batch_table)
        self.feed_store = _feed_store(cfg)
        self.nightly = _nightly(cfg)
        self._watcher: asyncio.Task | None = None

    def load(self, state: core.RegistryState | None = None) -> core.ModelSet:
        return core.load_model_set(self.cfg.registry, self.cfg.canary_share,
                                   self.cfg.min_history_months, self.cfg.scorecard_config,
                                   self.cfg.rules_config, state)

    def install(self, models: core.ModelSet) -> None:
        self.models = models             # one assignment: the next batch sees the new set
        self.metrics.serving(models.champion, models.state.challengers)
        log.info("serving champion %s, challengers %s", models.champion,
                 list(models.state.challengers) or "none")

    def book_medians(self, as_of: dt.date):
        """The book's median changes at `as_of`, which raw records are read against; a service
        without feeds has no book to read them against."""
        if self.feed_store is None:
            raise HTTPException(503, "scoring raw records reads the firm's changes against the "
                                     "book at the date: start the service with --feeds (or the "
                                     "BigQuery feed flags); feature values need no book")
        return self.feed_store.book_medians(as_of)

    def _score_batch(self, table: pa.Table) -> list:
        models = self.models             # this batch's models, whatever happens meanwhile
        scored = core.score_table(models, table)
        for s in scored:
            for sh in s.shadow:
                self.metrics.shadow.labels(sh.get("model_version") or "unknown",
                                           "failed" if sh.get("error") else "ok").inc()
                if shadow_log.isEnabledFor(logging.INFO):
                    shadow_log.info(json.dumps(_shadow_line(s.row, sh), default=str))
        return scored

    async def start(self) -> None:
        self.install(await asyncio.to_thread(self.load))
        self.batcher.start()
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        if self._watcher:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await self.batcher.stop()

    async def _watch(self) -> None:
        """Poll the registry's champion and challengers; load and swap on a change."""
        failed_state = None
        while True:
            await asyncio.sleep(self.cfg.watch_interval_s)
            try:
                state = await asyncio.to_thread(core.RegistryState.read, self.cfg.registry)
            except Exception as err:  # noqa: BLE001 - mid-change or broken: keep serving
                log.warning("registry %s unreadable, still serving %s: %s", self.cfg.registry,
                            self.models.champion, err)
                continue
            if state == self.models.state or state == failed_state:
                continue
            try:
                models = await asyncio.to_thread(self.load, state)
            except Exception as err:  # noqa: BLE001 - a bad new version must not stop the old
                failed_state = state
                self.metrics.swaps.labels("failed").inc()
                log.error("could not load %s, still serving %s: %s", state, self.models.champion,
                          err)
                continue
            failed_state = None
            self.install(models)
            self.metrics.swaps.labels("swapped").inc()

    async def score(self, table) -> list:
        if self.models is None:
            raise HTTPException(503, "models are still loading")
        return await self.batcher.submit(table)


def _shadow_line(row: dict, sh: dict) -> dict:
    """What the shadow log keeps of a challenger's score: ids and results, never feed records."""
    return {"enterprise_id": row["enterprise_id"], "as_of_date": str(row["as_of_date"]),
            "official_version": row["model_version"], "official_score": row["score"],
            **{k: sh.get(k) for k in ("model_version", "model_role", "pd", "score", "grade",
                                      "error")}}


def firm_score(s: core.Scored) -> dict:
    row = s.row
    base = row["base_points"]
    return {"enterprise_id": row["enterprise_id"], "as_of_date": row["as_of_date"],
            "model_version": row["model_version"], "model_role": row["model_role"],
            "score_source": row["score_source"], "pd": row["pd"], "score": row["score"],
            "grade": row["grade"], "base_points": None if base != base else base,
            "points": s.points, "reasons": row["reasons"],
            "shadow": [{k: sh.get(k) for k in ("model_version", "model_role", "pd", "score",
                                                "grade", "error")} for sh in s.shadow]}


def _json(payload) -> Response:
    """The answer as JSON, serialised once (orjson), without FastAPI re-validating what the
    scoring core produced against the response model (which stays, for the OpenAPI page)."""
    return Response(orjson.dumps(payload), media_type="application/json")


def _role(scored: list) -> str:
    roles = {s.row["model_role"] if s.row["score_source"] == "model" else s.row["score_source"]
             for s in scored}
    return roles.pop() if len(roles) == 1 else "mixed"


def _problem_response(status: int, error: str, detail: list[dict]) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status)


def create_app(cfg: ServiceConfig) -> FastAPI:
    service = Service(cfg)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await service.start()
        # Everything loaded so far (TensorFlow, the models, the feeds) lives as long as the
        # service: out of the collector's sight, a full collection no longer walks it (10k book,
        # 32 clients of feature values: p99 304-321 ms -> 196-206 ms, p95 unchanged).
        gc.collect()
        gc.freeze()
        yield
        await service.stop()
        gc.unfreeze()                  # collectable again once the service is gone

    app = FastAPI(title="smescore scoring service", version="1",
                  description=__doc__.split("\n\n")[0], lifespan=lifespan,
                  responses={401: {"model": schemas.ErrorResponse},
                             413: {"model": schemas.ErrorResponse},
                             422: {"model": schemas.ErrorResponse}})
    app.state.service = service

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, err: RequestValidationError):
        errors = err.errors()
        if any(e["type"] == "json_invalid" for e in errors):
            e = next(e for e in errors if e["type"] == "json_invalid")
            # FastAPI's parser names the character; pydantic's (records_body) the line and column
            where = f" at character {e['loc'][-1]}" if isinstance(e["loc"][-1], int) else ""
            return _problem_response(400, f"malformed JSON{where}: "
                                          f"{e.get('ctx', {}).get('error', e['msg'])}", [])
        # the offending values are not echoed back (they may be a firm's records)
        detail = [{"loc": [str(x) if not isinstance(x, int) else x for x in e["loc"]],
                   "msg": e["msg"]} for e in errors]
        first = detail[0]
        return _problem_response(422, f"invalid request: {'.'.join(map(str, first['loc']))}: "
                                      f"{first['msg']}" + (f" (and {len(detail) - 1} more)"
                                                           if len(detail) > 1 else ""), detail)

    @app.exception_handler(core.RecordsRejected)
    async def rejected(request: Request, err: core.RecordsRejected):
        detail = [{"loc": ["body", "records", p["feed"], p["index"],
                           *([p["field"]] if p["field"] else [])], "msg": p["reason"]}
                  for p in err.problems]
        return _problem_response(422, f"{len(detail)} feed record(s) rejected by the nightly "
                                      f"validation; first: {detail[0]['loc'][2]}[{detail[0]['loc'][3]}]"
                                      f": {detail[0]['msg']}", detail)

    @app.exception_handler(core.FirmNotScorable)
    async def not_scorable(request: Request, err: core.FirmNotScorable):
        return _problem_response(422, str(err), [])

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        return JSONResponse({"error": str(err.detail)}, status_code=err.status_code,
                            headers=getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def internal(request: Request, err: Exception):
        log.error("internal error on %s: %s: %s", request.url.path, type(err).__name__, err)
        return JSONResponse({"error": "internal error (logged); the service goes on"},
                            status_code=500)

    # added first, so it runs inside the measuring middleware: its 401s and 413s are counted
    app.add_middleware(AccessMiddleware, keys=cfg.api_keys, max_body_bytes=cfg.max_body_bytes)

    app.add_middleware(MeasureMiddleware, metrics=service.metrics,
                       endpoint=lambda scope: _endpoint(app, scope))

    # -------------------------------------------------------------- scoring

    async def _score_features(request: Request, body: schemas.FeaturesRequest) -> list:
        rows = core.FeatureRows([f.model_dump() for f in body.firms],
                                [f.as_of_date for f in body.firms])
        scored = await service.score(rows)
        request.state.role = _role(scored)
        return scored

    async def _score_records(request: Request, enterprise_id: str, as_of: dt.date,
                             read_tables: Callable[[], dict], strict: bool) -> core.Scored:
        """The firm's score from its group's feed tables (`read_tables`: the request's records,
        or the feed folder's). Tables, the book's medians and the features are made in one trip
        to a worker thread: each trip off the event loop and back wakes both sides once more."""
        def firm_features() -> pa.Table:
            tables = read_tables()
            features, _ = core.features_from_records(tables, as_of, service.book_medians(as_of),
                                                     strict)
            ids = features.column("enterprise_id").to_pylist()
            if enterprise_id not in ids:
                raise core.FirmNotScorable(
                    f"no firm {enterprise_id!r} on {as_of}: the records need its enterprises "
                    f"row, established on or before {as_of}")
            return features.slice(ids.index(enterprise_id), 1)

        with service.batcher.on_its_way():
            one = await asyncio.to_thread(firm_features)
        scored = (await service.score(one))[0]
        request.state.role = _role([scored])
        return scored

    async def records_body(request: Request) -> schemas.RecordsRequest:
        """A raw-record body parsed and validated by pydantic from its bytes in one pass: half
        the CPU of FastAPI's json.loads and then Python-mode validation (the 10k book's requests:
        p50 1.6 -> 0.8 ms, p95 9.5 -> 5.4 ms, the largest 27 -> 20 ms); its errors worded as
        FastAPI words them (loc from "body"). The OpenAPI page shows it as the body
        (RECORDS_BODY and _openapi_with_records)."""
        try:
            return schemas.RecordsRequest.model_validate_json(await request.body())
        except pydantic.ValidationError as err:
            raise RequestValidationError([{**e, "loc": ("body", *e["loc"])}
                                          for e in err.errors(include_url=False)]) from None

    def _tables(records: schemas.FeedRecords) -> dict:
        return {feed: core.feed_table(feed, getattr(records, feed)) for feed in core.FEEDS}

    @app.post("/v1/score/features", response_model=schemas.ScoresResponse,
              summary="Score firms from their feature values (one or many)")
    async def score_features(request: Request, body: schemas.FeaturesRequest):
        return _json({"scores": [firm_score(s) for s in await _score_features(request, body)]})

    @app.post("/v1/score/records", response_model=schemas.FirmScore, openapi_extra=RECORDS_BODY,
              summary="Score a firm from its raw feed records (and its related firms')")
    async def score_records(request: Request,
                            body: schemas.RecordsRequest = Depends(records_body)):
        return _json(firm_score(await _score_records(
            request, body.enterprise_id, body.as_of_date, functools.partial(_tables, body.records),
            strict=True)))

    def _from_feeds(enterprise_id: str) -> dict:
        if service.feed_store is None:
            raise HTTPException(404, "this service has no feeds (start it with --feeds, or the "
                                     "BigQuery flags); POST the records to /v1/score/records "
                                     "instead")
        tables = service.feed_store.group_of(enterprise_id)
        if tables is None:
            raise HTTPException(404, f"no firm {enterprise_id!r} in the feeds")
        return tables

    @app.get("/v1/firms/{enterprise_id}/score", response_model=schemas.FirmScore,
             summary="Score a firm from the service's feed folder")
    async def score_firm(request: Request, enterprise_id: str, as_of_date: dt.date = Query(...)):
        return _json(firm_score(await _score_records(
            request, enterprise_id, as_of_date, functools.partial(_from_feeds, enterprise_id),
            strict=False)))

    def _page(answer: dict, values: dict, lang: str) -> HTMLResponse:
        scoring = service.models.scoring
        return HTMLResponse(explain_page.render(answer, values,
                                                scoring.typical_firms.get(answer["model_version"]),
                                                lang, scoring.scale))

    def _from_tables(enterprise_id: str, as_of: dt.date | None) -> tuple[dict, dict]:
        if service.nightly is None:
            raise HTTPException(404, "this service has no risk tables (start it with "
                                     "--warehouse, or --bq-project and --risk-dataset)")
        found = service.nightly.firm(enterprise_id, as_of)
        if found is None:
            raise HTTPException(404, f"no night scored {enterprise_id!r}"
                                     + (f" on {as_of}" if as_of else ""))
        return found

    @app.get("/v1/firms/{enterprise_id}/explain", response_class=HTMLResponse,
             summary="The explanation page of a firm's score, from the feeds or (source=nightly) "
                     "from the risk tables")
    async def explain_firm(request: Request, enterprise_id: str,
                           as_of_date: dt.date | None = Query(
                               None, description="required with the feeds; from the tables, "
                                                 "default: the firm's last night"),
                           lang: explain_page.Lang = Query("zh"),
                           source: Literal["feeds", "nightly"] | None = Query(
                               None, description="default: the feeds when the service has them")):
        if source == "nightly" or (source is None and service.feed_store is None
                                   and service.nightly is not None):
            answer, values = await asyncio.to_thread(_from_tables, enterprise_id, as_of_date)
            request.state.role = "nightly"
            return _page(answer, values, lang)
        if as_of_date is None:
            raise HTTPException(422, "as_of_date is needed to score from the feeds")
        s = await _score_records(request, enterprise_id, as_of_date,
                                 functools.partial(_from_feeds, enterprise_id), strict=False)
        return _page(firm_score(s), s.values, lang)

    @app.get("/v1/firms/{enterprise_id}/nightly", response_model=schemas.FirmScore,
             summary="A firm's score as a night published it (the risk tables)")
    async def nightly_firm(request: Request, enterprise_id: str,
                           as_of_date: dt.date | None = Query(
                               None, description="default: the firm's last night")):
        answer, _ = await asyncio.to_thread(_from_tables, enterprise_id, as_of_date)
        request.state.role = "nightly"
        return _json(answer)

    @app.get("/v1/firms/{enterprise_id}/parity", response_model=schemas.ParityResponse,
             summary="The firm's live score from the feeds against that night's published row")
    async def parity_firm(request: Request, enterprise_id: str, as_of_date: dt.date = Query(...)):
        nightly, _ = await asyncio.to_thread(_from_tables, enterprise_id, as_of_date)
        live = firm_score(await _score_records(request, enterprise_id, as_of_date,
                                               functools.partial(_from_feeds, enterprise_id),
                                               strict=False))
        differences = parity.differences(live, {"row": nightly, "points": nightly["points"],
                                                "shadow": nightly["shadow"]})
        return _json({"enterprise_id": enterprise_id, "as_of_date": as_of_date,
                      "equal": not differences, "differences": differences,
                      "service": live, "nightly": nightly})

    @app.post("/v1/explain/records", response_class=HTMLResponse, openapi_extra=RECORDS_BODY,
              summary="The explanation page of a firm's score, from its raw feed records")
    async def explain_records(request: Request,
                              body: schemas.RecordsRequest = Depends(records_body),
                              lang: explain_page.Lang = Query("zh")):
        s = await _score_records(request, body.enterprise_id, body.as_of_date,
                                 functools.partial(_tables, body.records), strict=True)
        return _page(firm_score(s), s.values, lang)

    # -------------------------------------------------------------- operations

    @app.get("/healthz", summary="The process answers")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", summary="Models loaded: ready to score")
    async def readyz():
        models = service.models
        if models is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        return {"status": "ready", "champion": models.champion,
                "challengers": list(models.state.challengers),
                "canary": models.roles.canary, "canary_share": models.roles.canary_share,
                "loaded_at": models.loaded_at.isoformat()}

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics():
        return Response(generate_latest(service.metrics.registry),
                        media_type=CONTENT_TYPE_LATEST)

    app.openapi = _openapi_with_records(app)
    return app


# The raw-record endpoints read their body themselves (records_body): the OpenAPI page is told
# what it is, and given the models' schemas.
RECORDS_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/RecordsRequest"}}}}}


def _openapi_with_records(app: FastAPI):
    openapi = app.openapi

    def with_records() -> dict:
        if app.openapi_schema is None:
            spec = openapi()
            schema = schemas.RecordsRequest.model_json_schema(
                ref_template="#/components/schemas/{model}")
            components = spec.setdefault("components", {}).setdefault("schemas", {})
            components.update(schema.pop("$defs", {}))
            components["RecordsRequest"] = schema
        return app.openapi_schema
    return with_records


class MeasureMiddleware:
    """Latency by endpoint and model role, requests by endpoint and status, as plain ASGI (a
    `@app.middleware("http")` wraps every request in a task and a streamed response: a
    millisecond of CPU a request). The role is what the handler put in `request.state`."""

    def __init__(self, app, metrics: ServiceMetrics, endpoint):
        self.app, self.metrics, self.endpoint = app, metrics, endpoint

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500                       # an exception that escapes becomes a 500
        state = scope.setdefault("state", {})   # request.state, shared with the handler

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
        try:
            await self.app(scope, receive, send_status)
        finally:
            endpoint = self.endpoint(scope)
            self.metrics.latency.labels(endpoint, state.get("role", "none")).observe(
                time.perf_counter() - start)
            self.metrics.requests.labels(endpoint, str(status)).inc()


def _endpoint(app: FastAPI, scope) -> str:
    """The route template a request is for (bounded label values), matched or not."""
    for route in app.router.routes:
        if route.matches(scope)[0] == Match.FULL:
            return route.path
    return "unmatched"
