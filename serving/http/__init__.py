"""The HTTP API: ``Settings``, the FastAPI app (``create_app``) and the server that runs it (``serve``, uvicorn).

Inside: the app factory (``_app``), a router per resource (``_routes_*``) over ``Annotated`` dependencies
(``_deps``) and the request/response models (``_models``, OpenAI's in ``_models_openai``); ``SearchService``, which
knows nothing of HTTP (``_service``, a facade), its index pool and snapshots (``_pool``, ``_snapshots``), RAG
(``_rag``), model ids and embeddings (``_catalogue``, ``_embeddings``), request checks (``_checks``) and warm-up
(``_warmup``); admission, micro-batching and streaming (``_limits``, ``_batcher``, ``_sse``); errors
(``_errors``), the served OpenAPI document (``_openapi``), metrics (``_metrics``), connection guards
(``_connections``, ``_hosts``), Ray-backed retrievers (``_ray_serving``) and the web page (``static/``).

Exports load on first use, so that ``genret --help`` imports neither pydantic nor FastAPI.
"""

from __future__ import annotations

__all__ = ["ServerConfig", "Settings", "create_app", "serve"]


def __getattr__(name: str):
    if name in ("Settings", "ServerConfig"):
        from . import _settings

        return getattr(_settings, name)
    if name == "create_app":
        from ._app import create_app

        return create_app
    if name == "serve":  # looked up on each use: tests replace ``_server.serve``
        from . import _server

        return _server.serve
    raise AttributeError(name)
