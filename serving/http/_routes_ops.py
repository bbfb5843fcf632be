"""Operations: liveness and readiness probes and the web page (open), Prometheus metrics (behind the API key
when there is one: ``create_app`` includes ``metrics_router`` with the auth dependency)."""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

from ._deps import GateDep, MetricsDep, ServerDep, ServiceDep
from ._errors import Unavailable
from ._metrics import CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE
from ._models import Status, error_responses

router = APIRouter(tags=["operations"])
metrics_router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Status)
async def healthz() -> Status:
    """Liveness: the process answers."""
    return Status(status="ok")


@router.get("/readyz", response_model=Status, responses=error_responses(503))
async def readyz(gate: GateDep, service: ServiceDep, server: ServerDep) -> Status:
    """Readiness: 200 once the indexes are open and what the server serves loaded and run once (``_warmup``: all
    of it, the ``preload`` names, or nothing when ``lazy``); 503 before (saying what it is warming, or which part
    failed to load and why), while shutting down, and while an index is not served at its on-disk version (a new
    version not swapped in yet, or one that failed to open: the old one is still served)."""
    gate.check_ready()
    stale = service.stale_indexes()
    if stale:
        raise Unavailable("; ".join(f"index {name}: {why}" for name, why in sorted(stale.items())),
                          server.retry_after_s)
    return Status(status="ready")


@router.head("/healthz", response_class=Response, responses={200: {"description": "the process answers (no body)"}})
async def healthz_head() -> Response:
    """Liveness for probes and monitors that ask with HEAD: 200, no body."""
    return Response()


@router.head("/readyz", response_class=Response,
             responses={200: {"description": "ready (no body)"}, **error_responses(503)})
async def readyz_head(gate: GateDep, service: ServiceDep, server: ServerDep) -> Response:
    """Readiness for probes that ask with HEAD: the status of GET /readyz, no body."""
    await readyz(gate, service, server)
    return Response()


@metrics_router.get("/metrics", response_class=PlainTextResponse,
                    responses={200: {"content": {CONTENT_TYPE: {}, OPENMETRICS_CONTENT_TYPE: {}}},
                               **error_responses(401)})
async def metrics_text(metrics: MetricsDep, request: Request) -> Response:
    """Prometheus exposition (OpenMetrics when the Accept header asks for it): requests by route and status,
    latency, batch sizes, queue depth, and the process (CPU, memory, open files) and Python GC."""
    body, content_type = metrics.exposition(request.headers.get("accept"))
    return Response(body, media_type=content_type)


def _web_page() -> tuple[str, str]:
    """The page and its Content-Security-Policy: only its own inline script and style (by hash) run, and it
    talks only to this server — injected markup could neither run code nor load anything."""
    html = resources.files("genret.serving.http").joinpath("static/index.html").read_text(encoding="utf-8")

    def hashes(tag: str) -> str:
        return " ".join("'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
                        for body in re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.S))

    csp = (f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
           "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    return html, csp


_PAGE, _CSP = _web_page()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def web_page() -> HTMLResponse:
    """Search and ask in the browser (the API key, if any, is typed into the page)."""
    return HTMLResponse(_PAGE, headers={"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff",
                                        "Referrer-Policy": "no-referrer"})
