"""Serving errors and the one table that maps every domain error to an HTTP status.

The service and the batcher raise these (they know nothing of HTTP); the app's exception handlers and the
middlewares turn any of them into ``{"error": ClassName, "detail": message}`` with the status from
``_STATUS`` and, for refusals that are worth retrying, a ``Retry-After`` header.  A failed generator endpoint
(502) is described in general words: its message names the endpoint's URL and quotes its reply, which are the
server's business — they go to the log.
"""

from __future__ import annotations

import logging

from genret.indexing import ConfigError, GenretError, IndexFormatError, InputError, NotFoundError
from genret.retrieval.rag import EndpointError

log = logging.getLogger(__name__)


class RequestError(GenretError):
    """A request the service refuses (bad k, empty or over-long query, too many queries, …)."""


class Unauthorized(GenretError):
    """No API key, or not one of the configured keys."""


class PayloadTooLarge(GenretError):
    """A request body over ``server.max_body_bytes``."""


class Refused(GenretError):
    """Work the server cannot take now; ``retry_after`` seconds is a hint for the client."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Overloaded(Refused):
    """The admission queue is full (``server.max_queue`` requests in flight)."""


class Unavailable(Refused):
    """Not ready yet (retrievers loading) or shutting down."""


class RequestTimeout(GenretError):
    """The request's model work did not finish within ``server.request_timeout_s``."""


class InvalidHost(GenretError):
    """A ``Host`` header that is not one of ``server.trusted_hosts``."""


# Domain errors -> HTTP status, in one place (first match wins; GenretError last).  EndpointError: the
# generator's upstream (an OpenAI-compatible endpoint) failed — a bad gateway, not the client's fault.
_STATUS: list[tuple[type[BaseException], int]] = [
    (EndpointError, 502), (NotFoundError, 404), (RequestError, 422), (InputError, 422), (Unauthorized, 401),
    (PayloadTooLarge, 413), (Overloaded, 429), (Unavailable, 503), (RequestTimeout, 504), (IndexFormatError, 500),
    (InvalidHost, 400), (ConfigError, 400), (GenretError, 400),
]


def error_response(exc: BaseException) -> tuple[int, dict, dict[str, str]]:
    """``(status, JSON body, headers)`` for a domain error (500 with a generic detail for anything else)."""
    status = next((code for cls, code in _STATUS if isinstance(exc, cls)), 500)
    if status == 500 and not isinstance(exc, GenretError):
        return 500, {"error": "InternalError", "detail": "internal server error (logged)"}, {}
    headers: dict[str, str] = {}
    if isinstance(exc, Refused):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, EndpointError):
        log.warning("generator endpoint failed: %s", exc)
        return status, {"error": type(exc).__name__, "detail": endpoint_detail(exc)}, headers
    return status, {"error": type(exc).__name__, "detail": str(exc)}, headers


def endpoint_detail(exc: EndpointError) -> str:
    """What a client may read of a generator endpoint's failure: its kind, never the URL or the reply."""
    cause = type(exc.__cause__).__name__ if exc.__cause__ is not None else ""
    if exc.status is not None:
        what = f"answered HTTP {exc.status}"
    elif "Timeout" in cause:
        what = "did not answer in time"
    elif "Connect" in cause:
        what = "could not be reached"
    elif cause:
        what = "failed to answer"
    else:
        what = "sent a reply that is not a completion"
    return f"the generator's upstream endpoint {what} (details in the server's log)"


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(routes, scope: dict) -> list[str]:
    """The methods the routes take at ``scope``'s path, all of them (a 405's ``Allow``): each method is asked of
    every route (included routers too) through ``matches``, Starlette's routing question."""
    from starlette.routing import Match

    return [method for method in _METHODS
            if any(route.matches({**scope, "method": method})[0] is Match.FULL for route in routes)]
