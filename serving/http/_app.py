"""The FastAPI application factory: the service, the model pool and the limits on ``app.state``, the
middlewares, the error handlers, and one router per resource.

Layers, outside in: ``MetricsMiddleware`` (every request counted and timed), ``TrustedHostMiddleware`` (400: a
Host not in ``server.trusted_hosts``, or two Host headers), ``BodyLimitMiddleware`` (413),
the API-key dependency on ``/v1/*`` and ``/metrics`` (401), then a route (``_routes_*``): the service checks
names and values (404 / 422, cheap, on the event loop), ``Gate`` admits the model work (429 / 503) and bounds
its time (504), and ``Dispatcher`` runs it in the model pool, micro-batched.  Routes reach all of these
through the dependencies of ``_deps``.  Every error is ``{"error": …, "detail": …}``: the handlers here map
each exception through ``_errors.error_response``, the one table of statuses (a 405's ``Allow`` lists every
method of the path) — on the OpenAI-compatible routes in OpenAI's shape (``_errors.openai_error``; the errors
of the middlewares below it through ``OpenAIErrorMiddleware``).  The OpenAPI document adds the server's limits,
its model ids and the event schemas (``_openapi``).

Routers: ``_routes_ops`` (``/healthz``, ``/readyz``, ``/metrics``, the web page at ``/``), ``_routes_indexes``
(``/v1/indexes``), ``_routes_search`` (``/v1/search``, ``/v1/search/batch``), ``_routes_rag`` (``/v1/rag``),
and OpenAI's: ``_routes_chat`` (``/v1/chat/completions``), ``_routes_models`` (``/v1/models``) and
``_routes_embeddings`` (``/v1/embeddings``); streamed answers are server-sent events (``_sse``).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from http import HTTPStatus

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from genret.core import GenretError

from . import (
    _routes_chat,
    _routes_embeddings,
    _routes_indexes,
    _routes_models,
    _routes_ops,
    _routes_rag,
    _routes_search,
)
from ._batcher import Dispatcher
from ._deps import require_api_key
from ._errors import (
    OpenAIErrorMiddleware,
    allowed_methods,
    error_param,
    error_response,
    openai_error,
    openai_route,
    unparsable_body,
    validation_detail,
)
from ._hosts import TrustedHostMiddleware
from ._limits import BodyLimitMiddleware, Gate
from ._metrics import Metrics, MetricsMiddleware
from ._openapi import install_openapi
from ._service import SearchService
from ._settings import ServerConfig, Settings
from ._warmup import Warmup, planned_parts

log = logging.getLogger(__name__)


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
    gate = Gate(cfg.max_queue, cfg.request_timeout_s, cfg.retry_after_s)
    gate.contended = dispatcher.rag_load.contended  # RAG work timed out behind other RAG work: 429, not 504
    warmup = Warmup(service, planned_parts(service, cfg), gate)  # not ready until it has run

    app = FastAPI(title="genret", version="0.1.0",
                  lifespan=_lifespan(service, dispatcher, gate, warmup, cfg, owns_service),
                  description="Generative, dense and BM25 retrieval over KILT-style indexes.")
    app.state.settings, app.state.service, app.state.dispatcher = settings, service, dispatcher
    app.state.gate, app.state.metrics, app.state.warmup = gate, metrics, warmup
    app.state.warm_in_background = False  # make_server's Server: answer /healthz (and 503 /readyz) while warming
    app.add_middleware(BodyLimitMiddleware, max_bytes=cfg.max_body_bytes)
    app.add_middleware(TrustedHostMiddleware, hosts=cfg.trusted_hosts)  # with none: one Host header only
    app.add_middleware(OpenAIErrorMiddleware)  # OpenAI's error shape on its routes, for the 413 and 400 above
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: sees 413s too
    _add_gauges(metrics, service, dispatcher, gate)
    _add_error_handlers(app)
    _add_routers(app, auth=[Depends(require_api_key)] if cfg.api_keys else [])
    install_openapi(app, settings, service)
    return app


def _add_routers(app: FastAPI, auth: list) -> None:
    """The routers, in the order of the OpenAPI spec; ``auth`` guards ``/v1/*`` and ``/metrics``."""
    app.include_router(_routes_ops.router)
    app.include_router(_routes_ops.metrics_router, dependencies=auth)
    for resource in (_routes_indexes, _routes_search, _routes_rag, _routes_chat, _routes_models, _routes_embeddings):
        app.include_router(resource.router, dependencies=auth)


def _lifespan(service: SearchService, dispatcher: Dispatcher, gate: Gate, warmup: Warmup, cfg: ServerConfig,
              owns_service: bool):
    """Start: load and warm what is served (``_warmup``; ``/readyz`` says 503 until done) — in the background
    under ``make_server``'s ``Server``, so that the probes answer meanwhile; else before startup completes (an
    ASGI server then takes connections only once warm).  Stop, gracefully: refuse new work, let admitted work
    finish, then release the model pool (and the service, if the app's)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        task = None
        if app.state.warm_in_background:
            task = asyncio.create_task(warmup.run())
        else:
            await warmup.run()
        try:
            yield
        finally:
            gate.close()
            if not await gate.drain(cfg.shutdown_timeout_s):
                log.warning("shutdown: %d request(s) still running after %.0f s", gate.in_flight,
                            cfg.shutdown_timeout_s)
            if task is not None:  # the part being warmed finishes: its thread cannot be interrupted
                warmup.stop()
                await asyncio.wait({task}, timeout=cfg.shutdown_timeout_s)
            await asyncio.to_thread(dispatcher.close)
            if owns_service:
                service.close()

    return lifespan


def _add_gauges(metrics: Metrics, service: SearchService, dispatcher: Dispatcher, gate: Gate) -> None:
    metrics.gauge("genret_in_flight", "Requests admitted and not finished (queued or running).",
                  lambda: gate.in_flight)
    metrics.gauge("genret_queue_pending", "Queries waiting in micro-batch queues.", lambda: dispatcher.pending)
    metrics.gauge("genret_pool_jobs", "Model pool jobs submitted and not finished.", lambda: dispatcher.jobs)
    metrics.gauge("genret_ready", "1 when the server takes requests.", lambda: int(gate.ready and not gate.closing))
    metrics.gauge("genret_retrievers_loaded", "Retrievers loaded.", lambda: service.loaded)


def _error(request: Request, status: int, body: dict, headers: dict | None = None,
           param: str | None = None) -> JSONResponse:
    """genret's error, in OpenAI's shape on the OpenAI-compatible routes."""
    if openai_route(request.scope["path"]):
        status, body = openai_error(status, body, param)
    return JSONResponse(body, status_code=status, headers=headers)


def _json_error(request: Request, exc: BaseException) -> JSONResponse:
    status, body, headers = error_response(exc)
    return _error(request, status, body, headers, error_param(exc))


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as ``{"error", "detail"}`` (OpenAI's routes: OpenAI's error object): domain errors and
    anything unexpected by ``error_response``'s table, request validation as 422, Starlette's HTTP errors (404,
    405, …) by their status."""

    @app.exception_handler(GenretError)
    async def _domain_error(request: Request, exc: GenretError) -> JSONResponse:
        return _json_error(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail, param = validation_detail(list(exc.errors()))
        return _error(request, 422, {"error": "ValidationError", "detail": detail}, param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and (words := unparsable_body(exc.__cause__)) is not None:
            return _error(request, 422, {"error": "ValidationError", "detail": f"body: {words}"})  # as bad JSON
        try:
            name = HTTPStatus(exc.status_code).phrase.replace(" ", "")
        except ValueError:
            name = "HTTPError"
        headers, detail = dict(exc.headers or {}), str(exc.detail)
        if exc.status_code == 405:  # Starlette names the methods of the first route on the path only
            headers["Allow"] = ", ".join(allowed_methods(request.app.router.routes, request.scope))
            detail = f"{request.method} is not allowed on {request.url.path}; allowed: {headers['Allow']}"
        return _error(request, exc.status_code, {"error": name, "detail": detail}, headers)

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return _json_error(request, exc)
