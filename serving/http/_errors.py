"""Serving errors and the one table that maps every domain error to an HTTP status.

The service and the batcher raise these (they know nothing of HTTP); the app's exception handlers and the
middlewares turn any of them into ``{"error": ClassName, "detail": message}`` with the status from
``_STATUS`` and, for refusals that are worth retrying, a ``Retry-After`` header.  A failed generator endpoint
(502) is described in general words: its message names the endpoint's URL and quotes its reply, which are the
server's business — they go to the log.

The OpenAI-compatible routes (``OPENAI_PATHS``) answer the same errors in OpenAI's shape, ``{"error": {"message",
"type", "param", "code"}}``, and with 400 where genret says 422 (OpenAI has no 422): ``openai_error`` converts,
the app's handlers call it on those paths, and ``OpenAIErrorMiddleware`` converts the errors that middlewares
below it write (413, ``InvalidHost``).
"""

from __future__ import annotations

import json
import logging

from genret.core import ConfigError, GenretError, IndexFormatError, InputError, NotFoundError
from genret.retrieval.rag import EndpointError

log = logging.getLogger(__name__)


class RequestError(GenretError):
    """A request the service refuses (bad k, empty or over-long query, too many queries, …); ``param``: the
    request field at fault, when one is (OpenAI's error names it)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class UnsupportedParameter(RequestError):
    """An OpenAI request parameter (or value) this server does not support (``tools``, ``n`` > 1, …): 400."""


class ModelNotFound(NotFoundError):
    """A ``model`` of an OpenAI-compatible request that names no served index (or no retriever of it)."""

    param = "model"


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
    (EndpointError, 502), (NotFoundError, 404), (UnsupportedParameter, 400), (RequestError, 422), (InputError, 422),
    (Unauthorized, 401), (PayloadTooLarge, 413), (Overloaded, 429), (Unavailable, 503), (RequestTimeout, 504),
    (IndexFormatError, 500), (InvalidHost, 400), (ConfigError, 400), (GenretError, 400),
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


# ---- request validation, in words ---------------------------------------------------------------------------
def unparsable_body(exc: BaseException) -> str | None:
    """The words for a body FastAPI could not parse — its 400 "There was an error parsing the body", caused by
    ``exc`` — which genret answers 422 as any other invalid JSON; None: not such a cause."""
    if isinstance(exc, RecursionError):
        return "invalid JSON: nested too deeply to parse"
    if isinstance(exc, UnicodeDecodeError):
        return f"the body is not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
    if isinstance(exc, ValueError):
        return "invalid JSON: a number with too many digits" if "digits" in str(exc) else "invalid JSON"
    return None


_TYPE_NAMES = frozenset({"str", "int", "float", "bool", "none", "list", "dict", "tuple", "set"})


def _field_part(part: object) -> bool:
    """Whether a validation error's location part names a field or an index (not a union member's tag, such as
    ``constrained-str``, ``list[str]`` or ``ContentPart``: genret's field names are lower-case identifiers)."""
    return isinstance(part, int) or (isinstance(part, str) and part.isidentifier() and part.islower()
                                     and part not in _TYPE_NAMES)


def validation_detail(errors: list[dict]) -> tuple[str, str | None]:
    """``("loc: message", param)`` for pydantic's errors of a request: the first field at fault, with union members'
    tags left out of its location; of a union's alternatives the one whose type the value had, else all of them
    ("a valid string or a valid list")."""
    if not errors:
        return "invalid request", None
    where = tuple(p for p in errors[0].get("loc", ()) if _field_part(p))
    same = [e for e in errors if tuple(p for p in e.get("loc", ()) if _field_part(p))[:len(where)] == where]
    typed = [e for e in same if not e.get("type", "").endswith("_type")]
    if typed:
        first = typed[0]
        where = tuple(p for p in first.get("loc", ()) if _field_part(p))
        msg = first["msg"]
    else:
        wanted = [e["msg"].removeprefix("Input should be ") for e in same]
        msg = "Input should be " + " or ".join(dict.fromkeys(wanted)) if len(wanted) > 1 else same[0]["msg"]
    loc = [str(p) for p in where]
    return f"{'.'.join(loc)}: {msg}", ".".join(loc[1:]) or None


# ---- OpenAI's error shape on the OpenAI-compatible routes ---------------------------------------------------
OPENAI_PATHS = ("/v1/chat/completions", "/v1/embeddings", "/v1/models")
_OPENAI_CODES = {"ModelNotFound": "model_not_found", "UnsupportedParameter": "unsupported_parameter",
                 "Unauthorized": "invalid_api_key", "Overloaded": "rate_limit_exceeded"}


def openai_route(path: str) -> bool:
    """Whether ``path`` is one of the OpenAI-compatible routes (``/v1/models/{model}`` included)."""
    return path in OPENAI_PATHS or path.startswith("/v1/models/")


def openai_type(status: int) -> str:
    """OpenAI's error ``type`` for a status."""
    if status == 401:
        return "authentication_error"
    if status == 429:
        return "rate_limit_error"
    return "server_error" if status >= 500 else "invalid_request_error"


def openai_error(status: int, body: dict, param: str | None = None) -> tuple[int, dict]:
    """genret's error (``status``, ``{"error": kind, "detail": words}``) as OpenAI's: 422 becomes 400, ``code`` is
    OpenAI's own where it has one (``model_not_found``, ``unsupported_parameter``, ``invalid_api_key``,
    ``rate_limit_exceeded``), else genret's error kind."""
    status = 400 if status == 422 else status
    kind = body["error"]
    return status, {"error": {"message": body["detail"], "type": openai_type(status), "param": param,
                              "code": _OPENAI_CODES.get(kind, kind)}}


def error_param(exc: BaseException) -> str | None:
    """The request field an error names, if any (``RequestError.param``, ``ModelNotFound``)."""
    param = getattr(exc, "param", None)
    return param if isinstance(param, str) else None


class OpenAIErrorMiddleware:
    """On the OpenAI-compatible routes, a JSON error in genret's shape written by a layer below (a middleware's
    413 or ``InvalidHost``; the app's handlers write OpenAI's shape themselves) is rewritten in OpenAI's."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not openai_route(scope["path"]):
            return await self.app(scope, receive, send)
        held: list[dict] = []

        async def convert(message: dict) -> None:
            if message["type"] == "http.response.start":
                json_error = message["status"] >= 400 and any(
                    k.lower() == b"content-type" and v.startswith(b"application/json") for k, v in message["headers"])
                if json_error:
                    held.append(message)
                    return
            elif held and message["type"] == "http.response.body":
                held.append(message)
                if message.get("more_body"):
                    return
                start, body = held[0], b"".join(m.get("body", b"") for m in held[1:])
                held.clear()
                return await _send_converted(send, start, body)
            await send(message)

        await self.app(scope, receive, convert)


async def _send_converted(send, start: dict, raw: bytes) -> None:
    status = start["status"]
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str) and isinstance(body.get("detail"), str):
        status, body = openai_error(status, body)
        raw = json.dumps(body).encode()
    headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
    await send({**start, "status": status, "headers": [*headers, (b"content-length", str(len(raw)).encode())]})
    await send({"type": "http.response.body", "body": raw})


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(routes, scope: dict) -> list[str]:
    """The methods the routes take at ``scope``'s path, all of them (a 405's ``Allow``): each method is asked of
    every route (included routers too) through ``matches``, Starlette's routing question."""
    from starlette.routing import Match

    return [method for method in _METHODS
            if any(route.matches({**scope, "method": method})[0] is Match.FULL for route in routes)]
