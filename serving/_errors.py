"""Serving errors and the one table that maps every domain error to an HTTP status.

The service and the batcher raise these (they know nothing of HTTP); the app's exception handlers and the
middlewares turn any of them into ``{"error": ClassName, "detail": message}`` with the status from
``_STATUS`` and, for refusals that are worth retrying, a ``Retry-After`` header.
"""

from __future__ import annotations

from genret.indexing import ConfigError, GenretError, IndexFormatError, InputError, NotFoundError
from genret.retrieval.rag import EndpointError


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


# Domain errors -> HTTP status, in one place (first match wins; GenretError last).  EndpointError: the
# generator's upstream (an OpenAI-compatible endpoint) failed — a bad gateway, not the client's fault.
_STATUS: list[tuple[type[BaseException], int]] = [
    (EndpointError, 502), (NotFoundError, 404), (RequestError, 422), (InputError, 422), (Unauthorized, 401),
    (PayloadTooLarge, 413), (Overloaded, 429), (Unavailable, 503), (RequestTimeout, 504), (IndexFormatError, 500),
    (ConfigError, 400), (GenretError, 400),
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
    return status, {"error": type(exc).__name__, "detail": str(exc)}, headers
