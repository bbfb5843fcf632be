"""Request limits: admission control and timeouts (``Gate``), the RAG work estimate (``RagLoad``), the body size
limit, and API keys (``check_api_key``; the route dependency is ``_deps.require_api_key``).

``Gate.run`` admits a request's model work or refuses it at once — 503 (``Unavailable``) while the server is
starting (loading and warming up its models) or shutting down, 429 (``Overloaded``) when ``max_queue`` requests are
already in flight — and waits for it at most ``request_timeout_s`` (then 504, ``RequestTimeout``).  When the
request times out or its client goes away, the work is given up (its future cancelled: queued work is dropped,
generation stops at its next token; ``_batcher``).  A slot is held until the model work has really ended, so the
number of requests the pool may still be working on never exceeds ``max_queue``; ``drain`` waits for them at
shutdown.

``RagLoad`` refuses RAG work (429, with the expected wait as Retry-After) that would queue behind more RAG work than
it could finish within ``rag_queue_budget`` × ``request_timeout_s``: excess load is refused at once rather than
accepted and timed out.  Where the estimate was wrong (a cold server, a machine slowed down), a RAG request that
reaches its timeout having shared the model with other RAG work is answered 429 too, not 504: its time went to
genret's own queue (``Gate.contended``, ``RagLoad.contended``); 504 is for an answer too slow on its own.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar

from starlette.exceptions import HTTPException

from ._errors import Overloaded, PayloadTooLarge, RequestTimeout, Unauthorized, Unavailable, error_response

log = logging.getLogger(__name__)

# The request's ``receive`` once its body has been read (BodyLimitMiddleware): what tells that the client went away
_RECEIVE: ContextVar[Callable[[], Awaitable[dict]] | None] = ContextVar("genret_receive", default=None)
CLIENT_CLOSED = 499  # nginx's "client closed request": the status recorded for work given up that way
WATCH_AFTER_S = 0.05  # Gate.run watches for the client going away once the work has taken this long


class Gate:
    """Admission control for model work (event-loop side; not thread-safe by design)."""

    def __init__(self, max_in_flight: int, timeout_s: float, retry_after_s: int = 1, ready: bool = True) -> None:
        self.max_in_flight, self.timeout_s, self.retry_after_s = max_in_flight, timeout_s, retry_after_s
        self.in_flight = 0
        self.ready = ready
        self.closing = False
        self.not_ready_reason = "starting"
        # the reason (an Overloaded) when timed-out work shared the model with other work: 429, not 504
        self.contended: Callable[[asyncio.Future], Overloaded | None] = lambda fut: None

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
        """Admit, start (``start()`` returns the work's future) and await the work within the timeout.  Past the
        timeout (504), or when the client goes away, the work's future is cancelled — the dispatcher's futures are
        tasks that then give the work up and end when it has; the slot is held until then."""
        fut = self.admit(start)
        deadline = time.monotonic() + self.timeout_s
        gone: asyncio.Task | None = None
        try:
            # most work ends quickly: the client is watched only after WATCH_AFTER_S (a task less per search)
            done, _ = await asyncio.wait({fut}, timeout=min(self.timeout_s, WATCH_AFTER_S))
            if not done and (gone := _client_gone()) is not None:
                done, _ = await asyncio.wait({fut, gone}, timeout=max(0.0, deadline - time.monotonic()),
                                             return_when=asyncio.FIRST_COMPLETED)
            elif not done:
                done, _ = await asyncio.wait({fut}, timeout=max(0.0, deadline - time.monotonic()))
        except asyncio.CancelledError:
            fut.cancel()
            raise
        finally:
            if gone is not None:
                gone.cancel()
        if fut in done:
            return fut.result()
        fut.cancel()
        if gone is not None and gone in done:
            raise HTTPException(CLIENT_CLOSED, "the client closed the connection")
        raise self.timed_out(fut)

    def timed_out(self, fut: asyncio.Future | None = None) -> RequestTimeout | Overloaded:
        """The error of work (``fut``) that passed the per-request timeout: 429 when it waited behind other work
        (``contended``), else 504."""
        busy = self.contended(fut) if fut is not None else None
        return busy or RequestTimeout(f"no result within {self.timeout_s:g} s (request_timeout_s)")

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


def _client_gone() -> asyncio.Task | None:
    """A task that ends when the current request's client disconnects (None outside a request)."""
    receive = _RECEIVE.get()
    if receive is None:
        return None

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    return asyncio.get_running_loop().create_task(watch())


class RagLoad:
    """The RAG work in flight (requests admitted and not ended: event loop) and its measured cost per question (pool
    threads): an exponentially weighted mean over RAG calls and of the samples' distance to it, the cost reckoned
    as the mean plus twice that spread (a noisy, shared machine gets a safety margin of its own size).  ``check``
    refuses a request (429) when the work ahead of it and its own would take more than ``budget_s`` — counting
    from when the oldest request of the micro-batch it joins arrived, as they answer together; with nothing in
    flight, or nothing measured yet, everything passes (so the estimate can never lock the server up)."""

    def __init__(self, budget_s: float, retry_after_s: int = 1, weight: float = 0.3) -> None:
        self.budget_s, self.retry_after_s, self.weight = budget_s, retry_after_s, weight
        self.in_flight = 0
        self.admitted = 0  # RAG requests admitted so far (a sequence number)
        self._tracked: dict[asyncio.Future, tuple[int, int]] = {}  # in flight -> (its number, in flight before it)
        self.seconds_per_question: float | None = None  # the mean
        self.spread = 0.0  # the mean distance of a sample to the mean
        self._busy_until = 0.0  # the end of the last measured call (calls overlapping it share its time)
        self._lock = threading.Lock()

    @property
    def cost_s(self) -> float:
        """Seconds reckoned per question (0: nothing measured yet)."""
        return 0.0 if self.seconds_per_question is None else self.seconds_per_question + 2 * self.spread

    def check(self, waited_s: float = 0.0) -> None:
        """Refuse (``Overloaded``) a new question whose answer would come later than ``budget_s`` after the oldest
        request it will be answered with arrived (``waited_s`` ago; 0: it is answered alone)."""
        if self.budget_s <= 0 or self.in_flight == 0:
            return
        expected = waited_s + (self.in_flight + 1) * self.cost_s
        if expected > self.budget_s:
            raise Overloaded(f"{self.in_flight} RAG requests in flight at about {self.cost_s:.1f} s per question: "
                             f"an answer would take about {expected:.0f} s, more than the {self.budget_s:g} s budget "
                             f"(rag_queue_budget x request_timeout_s); retry later",
                             max(self.retry_after_s, math.ceil(expected - self.budget_s)))

    def track(self, fut: asyncio.Future) -> None:
        """Count ``fut``'s work as in flight until it is done."""
        self.admitted += 1
        self._tracked[fut] = (self.admitted, self.in_flight)
        self.in_flight += 1
        fut.add_done_callback(self._ended)

    def _ended(self, fut: asyncio.Future) -> None:
        self.in_flight -= 1
        self._tracked.pop(fut, None)

    def contended(self, fut: asyncio.Future) -> Overloaded | None:
        """For RAG work ``fut`` (in flight) that shared the model — other RAG work was in flight when it was
        admitted, or was admitted since — the 429 to answer in place of a timeout; else None."""
        number, before = self._tracked.get(fut, (self.admitted, 0))
        if before == 0 and number == self.admitted:
            return None
        wait = max(self.retry_after_s, math.ceil(self.in_flight * self.cost_s))
        return Overloaded("no answer in time: it waited behind other RAG requests (the server is overloaded); "
                          "retry later", wait)

    def measure(self, started: float, ended: float, questions: int) -> None:
        """A RAG call that answered ``questions`` from ``started`` to ``ended`` (``time.monotonic``).  Calls that
        overlap (generation is serial: they wait for the model) count only the time after the previous one ended,
        so the mean is the cost of a question in throughput, whatever the parallelism."""
        with self._lock:
            busy = max(0.0, ended - max(started, self._busy_until))
            self._busy_until = max(self._busy_until, ended)
            per = busy / max(1, questions)
            mean, w = self.seconds_per_question, self.weight
            if mean is None:
                self.seconds_per_question = per
            else:
                self.seconds_per_question = w * per + (1 - w) * mean
                self.spread = w * abs(per - mean) + (1 - w) * self.spread
        log.debug("RAG call: %d questions, %.2f s busy; %.2f s per question (mean %.2f, spread %.2f)", questions,
                  busy, per, self.seconds_per_question, self.spread)


class BodyLimitMiddleware:
    """Pure ASGI middleware: reads the request body up to ``max_bytes`` before the app sees it; a larger body
    (by ``Content-Length`` or as it streams in) is answered 413 at once.  Then the app runs with the request's
    ``receive`` recorded for ``Gate.run``, which watches it for the client going away."""

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

        token = _RECEIVE.set(receive)
        try:
            await self.app(scope, replay, send)
        finally:
            _RECEIVE.reset(token)


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
