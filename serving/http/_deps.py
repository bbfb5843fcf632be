"""The routes' dependencies: what ``create_app`` put on ``app.state``, and the API key.

Routes take what they need as ``Annotated`` parameters (``service: ServiceDep``, …), so a test can swap any of
them with ``app.dependency_overrides[get_service] = …`` instead of reaching into the app.  The model work
itself goes through ``Dispatcher`` (``DispatcherDep``), which runs the app's own service: override
``get_service`` and ``get_dispatcher`` together to replace the service as a whole.

``require_api_key`` is attached by ``create_app`` to the ``/v1/*`` routers and ``/metrics`` only when
``server.api_keys`` is set, so the OpenAPI spec declares the bearer scheme exactly when it is asked for.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ._batcher import Dispatcher
from ._limits import Gate, check_api_key
from ._metrics import Metrics
from ._service import SearchService
from ._settings import ServerConfig

__all__ = ["DispatcherDep", "GateDep", "MetricsDep", "ServerDep", "ServiceDep", "get_dispatcher", "get_gate",
           "get_metrics", "get_server_config", "get_service", "require_api_key"]


async def get_service(request: Request) -> SearchService:
    """The search service (index names, request checks; model work goes through the dispatcher)."""
    return request.app.state.service


async def get_dispatcher(request: Request) -> Dispatcher:
    """The model pool and micro-batcher."""
    return request.app.state.dispatcher


async def get_gate(request: Request) -> Gate:
    """Admission control and the per-request timeout."""
    return request.app.state.gate


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_server_config(request: Request) -> ServerConfig:
    """The ``server`` section of the app's settings."""
    return request.app.state.settings.server


ServiceDep = Annotated[SearchService, Depends(get_service)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]
GateDep = Annotated[Gate, Depends(get_gate)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
ServerDep = Annotated[ServerConfig, Depends(get_server_config)]

# declared as the HTTP bearer scheme, so /docs offers an "Authorize" button
_bearer = HTTPBearer(auto_error=False, description="an API key from server.api_keys")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def require_api_key(credentials: BearerDep, server: ServerDep) -> None:
    """``Authorization: Bearer KEY`` with one of ``server.api_keys`` (401 otherwise)."""
    check_api_key(None if credentials is None else credentials.credentials, server.api_keys)
