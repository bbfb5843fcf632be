"""Request limits: admission control and timeouts (``Gate``), the body size limit, and API keys
(``check_api_key``; the route dependency is ``_deps.require_api_key``).

``Gate.run`` admits a request's model work or refuses it at once — 503 (``Unavailable``) while the server is
starting (retrievers preloading) or shutting down, 429 (``Overloaded``) when ``max_queue`` requests are
already in flight — and waits for it at most ``request_timeout_s`` (then 504, ``RequestTimeout``).  A slot is
held until the model work has really finished, even when its caller timed out or went away, so the number of
requests the pool may still be working on never exceeds ``max_queue``; ``drain`` waits for them at shutdown.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Callable, Sequence

from ._errors import Overloaded, PayloadTooLarge, RequestTimeout, Unauthorized, Unavailable, error_response


class Gate:
    """Admission control for model work (event-loop side; not thread-safe by design)."""

    def __init__(self, max_in_flight: int, timeout_s: float, retry_after_s: int = 1, ready: bool = True) -> None:
        self.max_in_flight, self.timeout_s, self.retry_after_s = max_in_flight, timeout_s, retry_after_s
        self.in_flight = 0
        self.ready = ready
        self.closing = False
        self.not_ready_reason = "starting"

    def check_ready(self) -> None:
        if self.closing:
            raise Unavailable("the server is shutting down", self.retry_after_s)
        if not self.ready:
            raise Unavailable(f"the server is not ready: {self.not_ready_reason}", self.retry_after_s)

    def admit(self, start: Callable[[], asyncio.Future]) -> asyncio.Future:
        """Admit and start the work (``start()`` returns its future); its slot is held until the future is done.
        For work the caller reads piece by piece (a stream): :meth:`run` otherwise."""
        self.check_ready()
        if self.in_flight >= self.max_in_flight:
            raise Overloaded(f"{self.in_flight} requests in flight (max_queue {self.max_in_flight}); retry later",
                             self.retry_after_s)
        self.in_flight += 1
        try:
            fut = start()
        except BaseException:
            self.in_flight -= 1
            raise
        fut.add_done_callback(self._release)
        return fut

    async def run(self, start: Callable[[], asyncio.Future]):
        """Admit, start (``start()`` returns the work's future) and await the work within the timeout."""
        fut = self.admit(start)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), self.timeout_s)
        except TimeoutError:
            raise self.timed_out() from None

    def timed_out(self) -> RequestTimeout:
        """The error of work that passed the per-request timeout."""
        return RequestTimeout(f"no result within {self.timeout_s:g} s (request_timeout_s)")

    def _release(self, fut: asyncio.Future) -> None:
        self.in_flight -= 1
        if not fut.cancelled():
            fut.exception()  # retrieved: an abandoned (timed-out) request's error is not logged as unhandled

    def close(self) -> None:
        """Refuse new work from now on (503)."""
        self.closing = True

    async def drain(self, timeout_s: float) -> bool:
        """Wait until no admitted work is left (True) or ``timeout_s`` passed (False)."""
        deadline = time.monotonic() + timeout_s
        while self.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return self.in_flight == 0


class BodyLimitMiddleware:
    """Pure ASGI middleware: reads the request body up to ``max_bytes`` before the app sees it; a larger body
    (by ``Content-Length`` or as it streams in) is answered 413 at once."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = PayloadTooLarge(f"request body larger than {self.max_bytes} bytes (max_body_bytes)")
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _send_error(send, too_large)
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # client went away
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await _send_error(send, too_large)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _send_error(send, exc: Exception) -> None:
    status, body, headers = error_response(exc)
    raw = json.dumps(body).encode()
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()),
            (b"connection", b"close")] + [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": raw})


def check_api_key(given: str | None, keys: Sequence[str]) -> None:
    """Refuse (``Unauthorized``) a bearer token that is not one of ``keys``; no keys: everything passes.
    Every key is compared, in constant time: no timing oracle."""
    if not keys:
        return
    if given is None or not given.strip():
        raise Unauthorized("an API key is required: send 'Authorization: Bearer KEY'")
    token = given.strip().encode()
    matches = [hmac.compare_digest(token, k.encode()) for k in keys]
    if not any(matches):
        raise Unauthorized("invalid API key")
