"""The FastAPI application factory: routes over the service, limits, metrics and the error mapping.

Layers, outside in: ``MetricsMiddleware`` (every request counted and timed), ``BodyLimitMiddleware`` (413),
the API-key dependency on ``/v1/*`` and ``/metrics`` (401), then a route: the service checks names and
values (404 / 422, cheap, on the event loop), ``Gate`` admits the model work (429 / 503) and bounds its time
(504), and ``Dispatcher`` runs it in the model pool, micro-batched.  Every error is
``{"error": …, "detail": …}`` (``_errors.error_response``).

RAG: ``POST /v1/rag`` (genret's shape) and ``POST /v1/chat/completions`` (OpenAI's) both run the service's
RAG pipeline — micro-batched per ``RagSpec`` when not streaming; streamed answers run one at a time in the
pool (``Dispatcher.stream``) and reach the client as server-sent events.  A stream's first event (the
passages) is awaited before the response starts, so a failure up to retrieval still gets its proper status;
later failures become an ``error`` event.  ``GET /`` serves the web page (``static/index.html``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from http import HTTPStatus
from importlib import resources

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from genret.indexing import GenretError

from ._batcher import Dispatcher, EventStream
from ._errors import RequestError, error_response
from ._limits import BodyLimitMiddleware, Gate, api_key_dependency
from ._metrics import CONTENT_TYPE, Metrics, MetricsMiddleware
from ._models import (
    BatchSearchRequest,
    BatchSearchResponse,
    ChatChoice,
    ChatChoiceMessage,
    ChatCompletion,
    ChatRequest,
    CitationModel,
    DemoModel,
    GenretChatOptions,
    Granularity,
    HitModel,
    IndexInfo,
    QueryHits,
    RagRequest,
    RagResponse,
    SearchRequest,
    SearchResponse,
    Status,
    Usage,
    error_responses,
)
from ._service import RagOutcome, RagSpec, SearchService
from ._settings import Settings

log = logging.getLogger(__name__)

_SEARCH_ERRORS = error_responses(401, 404, 413, 422, 429, 503, 504)
_RAG_ERRORS = error_responses(401, 404, 413, 422, 429, 502, 503, 504)
_SSE = "text/event-stream"


def _json_error(exc: BaseException) -> JSONResponse:
    status, body, headers = error_response(exc)
    return JSONResponse(body, status_code=status, headers=headers)


def _sse(data: object, event: str | None = None) -> str:
    """One server-sent event (``data`` as one line of JSON)."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n"


class EventStreamResponse(StreamingResponse):
    """``text/event-stream`` that runs ``on_close`` however the response ends (done, client gone, error)."""

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], None]) -> None:
        super().__init__(content, media_type=_SSE, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


def _web_page() -> tuple[str, str]:
    """The page and its Content-Security-Policy: only its own inline script and style (by hash) run, and it
    talks only to this server — injected markup could neither run code nor load anything."""
    html = resources.files("genret.serving").joinpath("static/index.html").read_text(encoding="utf-8")

    def hashes(tag: str) -> str:
        return " ".join("'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
                        for body in re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.S))

    csp = (f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
           "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    return html, csp


def _rag_response(outcome: RagOutcome, spec: RagSpec) -> RagResponse:
    a = outcome.answer
    return RagResponse(query=a.query, index=spec.index, retriever=spec.retriever, task=a.task, answer=a.answer,
                       raw=a.raw, citations=[CitationModel(number=c.number, hit=HitModel.of(c.hit))
                                             for c in a.citations],
                       passages=[HitModel.of(h) for h in a.passages], demos=[DemoModel.of(d) for d in a.demos],
                       usage=_usage(outcome))


def _usage(outcome: RagOutcome) -> Usage:
    return Usage(prompt_tokens=outcome.prompt_tokens, completion_tokens=outcome.completion_tokens,
                 total_tokens=outcome.prompt_tokens + outcome.completion_tokens)


def _last_user_message(req: ChatRequest) -> str:
    for m in reversed(req.messages):
        if m.role == "user":
            text = m.text()
            if not text.strip():
                raise RequestError("the last user message has no text")
            return text
    raise RequestError("no user message: the last user message is the question")


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

    # ---- RAG ----------------------------------------------------------------------------------------------
    async def open_stream(query: str, spec: RagSpec) -> tuple[EventStream, tuple, float]:
        """Admit and start a streamed answer; ``(events, the passages event, deadline)``.  Raises (with the
        request's proper status) whatever fails before the passages are known."""
        started: list[EventStream] = []

        def start() -> asyncio.Future:
            events, job = dispatcher.stream(lambda: service.stream_rag(query, spec))
            started.append(events)
            return job

        gate.admit(start)
        events = started[0]
        deadline = time.monotonic() + cfg.request_timeout_s
        try:
            first = await events.get(cfg.request_timeout_s)
        except TimeoutError:
            events.cancel()
            raise gate.timed_out() from None
        except BaseException:
            events.cancel()
            raise
        return events, first, deadline

    async def relay(events: EventStream, deadline: float, on: Callable[[str, object], list[str]],
                    on_error: Callable[[int, dict], list[str]]) -> AsyncIterator[str]:
        """The remaining events as SSE text (``on``), an error as ``on_error``; stops at the deadline."""
        try:
            while True:
                try:
                    kind, value = await events.get(max(0.0, deadline - time.monotonic()))
                except StopAsyncIteration:
                    return
                for text in on(kind, value):
                    yield text
        except TimeoutError:
            exc: Exception = gate.timed_out()
            status, body, _ = error_response(exc)
            for text in on_error(status, body):
                yield text
        except Exception as exc:  # mid-stream: the status line is sent already
            status, body, _ = error_response(exc)
            if status >= 500 and status != 502:
                log.error("streamed answer failed", exc_info=exc)
            for text in on_error(status, body):
                yield text
        finally:
            events.cancel()

    @app.post("/v1/rag", response_model=RagResponse, dependencies=auth,
              responses={**_RAG_ERRORS, 200: {"description": "the answer (JSON), or with stream: server-sent events "
                                                             "passages, token…, answer (or error)",
                                              "content": {_SSE: {"schema": {"type": "string"}}}}})
    async def rag(req: RagRequest):
        """Answer from retrieved passages (and demonstrations), with citations mapped to KILT provenance."""
        spec = service.rag_spec(req.query, index=req.index, retriever=req.retriever, task=req.task,
                                passages=req.passages, demos=req.demos, demo_source=req.demo_source)
        if not req.stream:
            return _rag_response(await gate.run(lambda: dispatcher.rag(req.query, spec)), spec)
        events, (_, (hits, demos)), deadline = await open_stream(req.query, spec)
        passages = {"index": spec.index, "retriever": spec.retriever,
                    "passages": [HitModel.of(h).model_dump() for h in hits],
                    "demos": [DemoModel.of(d).model_dump() for d in demos]}

        def on(kind: str, value) -> list[str]:
            if kind == "token":
                return [_sse({"text": value}, "token")] if value else []
            return [_sse(_rag_response(value, spec).model_dump(), "answer")] if kind == "answer" else []

        def on_error(status: int, body: dict) -> list[str]:
            return [_sse({**body, "status": status}, "error")]

        async def body() -> AsyncIterator[str]:
            yield _sse(passages, "passages")
            async for text in relay(events, deadline, on, on_error):
                yield text

        return EventStreamResponse(body(), events.cancel)

    @app.post("/v1/chat/completions", response_model=ChatCompletion, dependencies=auth,
              responses={**_RAG_ERRORS, 200: {"description": "a chat completion, or with stream: OpenAI's "
                                                             "chat.completion.chunk events, then data: [DONE]",
                                              "content": {_SSE: {"schema": {"type": "string"}}}}})
    async def chat_completions(req: ChatRequest):
        """OpenAI-compatible chat completions answered with retrieval: the last user message is the question,
        `model` names the index (else the default index); `genret` (extension) picks the retriever, task,
        passages."""
        query = _last_user_message(req)
        opts = req.genret or GenretChatOptions()
        index = opts.index or (req.model if req.model in service.indexes else None)
        spec = service.rag_spec(query, index=index, retriever=opts.retriever, task=opts.task,
                                passages=opts.passages, max_new_tokens=req.max_completion_tokens or req.max_tokens,
                                stop=req.stops())
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def extension(outcome: RagOutcome) -> dict:
            r = _rag_response(outcome, spec)
            return {"index": spec.index, "retriever": spec.retriever, "task": r.task, "answer": r.answer,
                    "citations": [c.model_dump() for c in r.citations],
                    "passages": [h.model_dump() for h in r.passages]}

        if not req.stream:
            outcome = await gate.run(lambda: dispatcher.rag(query, spec))
            return ChatCompletion(id=cid, created=created, model=spec.index, usage=_usage(outcome),
                                  genret=extension(outcome), choices=[ChatChoice(
                                      message=ChatChoiceMessage(content=outcome.answer.raw),
                                      finish_reason="length" if outcome.truncated else "stop")])
        events, _, deadline = await open_stream(query, spec)
        include_usage = bool(req.stream_options and req.stream_options.include_usage)

        def envelope(**fields) -> str:
            return _sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": spec.index,
                         **fields})

        def chunk(delta: dict, finish: str | None = None, **extra) -> str:
            return envelope(choices=[{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
                            **extra)

        def on(kind: str, value) -> list[str]:
            if kind == "token":
                return [chunk({"content": value})] if value else []
            if kind != "answer":
                return []
            out = [chunk({}, "length" if value.truncated else "stop", genret=extension(value))]
            if include_usage:
                out.append(envelope(choices=[], usage=_usage(value).model_dump()))
            return out + ["data: [DONE]\n\n"]

        def on_error(status: int, body: dict) -> list[str]:
            return [_sse({"error": {"message": body["detail"], "type": body["error"], "code": status}})]

        async def body() -> AsyncIterator[str]:
            yield chunk({"role": "assistant", "content": ""})
            async for text in relay(events, deadline, on, on_error):
                yield text

        return EventStreamResponse(body(), events.cancel)

    # ---- the web page -------------------------------------------------------------------------------------
    page, csp = _web_page()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def web_page() -> HTMLResponse:
        """Search and ask in the browser (the API key, if any, is typed into the page)."""
        return HTMLResponse(page, headers={"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff",
                                           "Referrer-Policy": "no-referrer"})

    return app
