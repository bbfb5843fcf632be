"""The FastAPI application factory: routes over the service, limits, metrics and the error mapping.

Layers, outside in: ``MetricsMiddleware`` (every request counted and timed), ``BodyLimitMiddleware`` (413),
the API-key dependency on ``/v1/*`` and ``/metrics`` (401), then a route: the service checks names and
values (404 / 422, cheap, on the event loop), ``Gate`` admits the model work (429 / 503) and bounds its time
(504), and ``Dispatcher`` runs it in the model pool, micro-batched.  Every error is
``{"error": …, "detail": …}`` (``_errors.error_response``).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from http import HTTPStatus

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from indexing import GenretError

from ._batcher import Dispatcher
from ._errors import error_response
from ._limits import BodyLimitMiddleware, Gate, api_key_dependency
from ._metrics import CONTENT_TYPE, Metrics, MetricsMiddleware
from ._models import (
    BatchSearchRequest,
    BatchSearchResponse,
    Granularity,
    HitModel,
    IndexInfo,
    QueryHits,
    SearchRequest,
    SearchResponse,
    Status,
    error_responses,
)
from ._service import SearchService
from ._settings import Settings

log = logging.getLogger(__name__)

_SEARCH_ERRORS = error_responses(401, 404, 413, 422, 429, 503, 504)


def _json_error(exc: BaseException) -> JSONResponse:
    status, body, headers = error_response(exc)
    return JSONResponse(body, status_code=status, headers=headers)


def create_app(settings: Settings, service: SearchService | None = None) -> FastAPI:
    """An app serving ``settings.indexes``, or the given service (then the caller closes it)."""
    cfg = settings.server
    owns_service = service is None
    service = service or SearchService(settings)
    try:
        service.check_preload(cfg.preload)
    except Exception:
        if owns_service:
            service.close()
        raise
    metrics = Metrics()
    dispatcher = Dispatcher(service, cfg, metrics)
    gate = Gate(cfg.max_queue, cfg.request_timeout_s, cfg.retry_after_s, ready=not cfg.preload)
    if cfg.preload:
        gate.not_ready_reason = f"loading retrievers {', '.join(cfg.preload)}"

    async def preload() -> None:
        try:
            loaded = await asyncio.to_thread(service.preload, cfg.preload)
        except Exception as exc:
            log.exception("preloading %s failed", cfg.preload)
            gate.not_ready_reason = f"preloading failed: {exc}"
            return
        log.info("preloaded %s", ", ".join(f"{r} on {i}" for i, r in loaded))
        gate.ready = True

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        task = asyncio.create_task(preload()) if cfg.preload else None
        try:
            yield
        finally:  # graceful: refuse new work, let admitted work finish, then release the models
            gate.close()
            if not await gate.drain(cfg.shutdown_timeout_s):
                log.warning("shutdown: %d request(s) still running after %.0f s", gate.in_flight,
                            cfg.shutdown_timeout_s)
            if task is not None:
                task.cancel()
            await asyncio.to_thread(dispatcher.close)
            if owns_service:
                service.close()

    app = FastAPI(title="genret", version="0.1.0", lifespan=lifespan,
                  description="Generative, dense and BM25 retrieval over KILT-style indexes.")
    app.state.settings, app.state.service, app.state.dispatcher = settings, service, dispatcher
    app.state.gate, app.state.metrics = gate, metrics
    app.add_middleware(BodyLimitMiddleware, max_bytes=cfg.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: sees 413s too
    metrics.gauge("genret_in_flight", "Requests admitted and not finished (queued or running).",
                  lambda: gate.in_flight)
    metrics.gauge("genret_queue_pending", "Queries waiting in micro-batch queues.", lambda: dispatcher.pending)
    metrics.gauge("genret_pool_jobs", "Model pool jobs submitted and not finished.", lambda: dispatcher.jobs)
    metrics.gauge("genret_ready", "1 when the server takes requests.", lambda: int(gate.ready and not gate.closing))
    metrics.gauge("genret_retrievers_loaded", "Retrievers loaded.", lambda: service.loaded)

    @app.exception_handler(GenretError)
    async def _domain_error(request: Request, exc: GenretError) -> JSONResponse:
        return _json_error(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return JSONResponse({"error": "ValidationError", "detail": f"{where}: {first['msg']}"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        try:
            name = HTTPStatus(exc.status_code).phrase.replace(" ", "")
        except ValueError:
            name = "HTTPError"
        return JSONResponse({"error": name, "detail": str(exc.detail)}, status_code=exc.status_code,
                            headers=exc.headers)

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return _json_error(exc)

    auth = [Depends(api_key_dependency(cfg.api_keys))] if cfg.api_keys else []

    async def search(query: str, k: int | None, index: str | None, retriever: str | None, task: str | None,
                     granularity: str | None) -> SearchResponse:
        k = cfg.default_k if k is None else k
        index, retriever = service.resolve(index, retriever)
        service.check([query], k, retriever, granularity)
        hits = await gate.run(lambda: dispatcher.search(query, k, index, retriever, task, granularity))
        return SearchResponse(query=query, index=index, retriever=retriever, hits=[HitModel.of(h) for h in hits])

    @app.get("/healthz", response_model=Status, tags=["operations"])
    async def healthz() -> Status:
        """Liveness: the process answers."""
        return Status(status="ok")

    @app.get("/readyz", response_model=Status, tags=["operations"], responses=error_responses(503))
    async def readyz() -> Status:
        """Readiness: 200 once the indexes are open and the preloaded retrievers loaded; 503 before, and while
        shutting down."""
        gate.check_ready()
        return Status(status="ready")

    @app.get("/metrics", response_class=PlainTextResponse, tags=["operations"], dependencies=auth,
             responses={200: {"content": {CONTENT_TYPE: {}}}, **error_responses(401)})
    async def metrics_text() -> PlainTextResponse:
        """Prometheus text exposition: requests by route and status, latency, batch sizes, queue depth."""
        return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/indexes", response_model=list[IndexInfo], dependencies=auth, responses=error_responses(401))
    async def indexes() -> list[dict]:
        """The served indexes, by name, with the retrievers each offers."""
        return service.describe()

    @app.post("/v1/search", response_model=SearchResponse, dependencies=auth, responses=_SEARCH_ERRORS)
    async def search_post(req: SearchRequest) -> SearchResponse:
        """Search one index with one retriever."""
        return await search(req.query, req.k, req.index, req.retriever, req.task, req.granularity)

    @app.get("/v1/search", response_model=SearchResponse, dependencies=auth, responses=_SEARCH_ERRORS)
    async def search_get(q: str = Query(min_length=1, description="the query"), k: int | None = None,
                         index: str | None = None, retriever: str | None = None, task: str | None = None,
                         granularity: Granularity | None = None) -> SearchResponse:
        """Search with query parameters (as POST /v1/search)."""
        return await search(q, k, index, retriever, task, granularity)

    @app.post("/v1/search/batch", response_model=BatchSearchResponse, dependencies=auth,
              responses=_SEARCH_ERRORS)
    async def search_batch(req: BatchSearchRequest) -> BatchSearchResponse:
        """Several queries, one retriever: one hit list per query, in order (one batch_search call)."""
        k = cfg.default_k if req.k is None else req.k
        index, retriever = service.resolve(req.index, req.retriever)
        service.check(req.queries, k, retriever, req.granularity)
        results = await gate.run(lambda: dispatcher.batch(req.queries, k, index, retriever, req.task,
                                                          req.granularity))
        return BatchSearchResponse(index=index, retriever=retriever, results=[
            QueryHits(query=q, hits=[HitModel.of(h) for h in hits]) for q, hits in zip(req.queries, results)])

    return app
