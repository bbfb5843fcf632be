"""Streamed answers as server-sent events: start one (admitted by the gate, run in the model pool), relay its
events, and a response that stops the model work however it ends.

A stream's first event (the passages) is awaited before the response starts (``open_stream``), so a failure up
to retrieval still gets its proper status; later failures become an error event (``relay``'s ``on_error``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator

from fastapi.responses import StreamingResponse

from ._batcher import Dispatcher, EventStream
from ._errors import error_response
from ._limits import Gate

log = logging.getLogger(__name__)

SSE = "text/event-stream"


def sse(data: object, event: str | None = None) -> str:
    """One server-sent event (``data`` as one line of JSON)."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n"


class EventStreamResponse(StreamingResponse):
    """``text/event-stream`` that runs ``on_close`` however the response ends (done, client gone, error)."""

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], None]) -> None:
        super().__init__(content, media_type=SSE, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


async def open_stream(gate: Gate, dispatcher: Dispatcher,
                      make: Callable[[], Iterator[tuple[str, object]]]) -> tuple[EventStream, tuple, float]:
    """Admit and start the stream ``make()`` in the pool; ``(events, its first event, deadline)``.  Raises (with
    the request's proper status) whatever fails before the first event; the deadline is the gate's timeout."""
    started: list[EventStream] = []

    def start() -> asyncio.Future:
        events, job = dispatcher.stream(make)
        started.append(events)
        return job

    job = gate.admit(start)
    events = started[0]
    deadline = time.monotonic() + gate.timeout_s
    try:
        first = await events.get(gate.timeout_s)
    except BaseException as exc:  # given up: the producer stops at its next item, or never starts
        events.cancel()
        job.cancel()
        if isinstance(exc, TimeoutError):
            raise gate.timed_out(job) from None
        raise
    return events, first, deadline


async def relay(events: EventStream, deadline: float, gate: Gate, on: Callable[[str, object], list[str]],
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
        exc: Exception = gate.timed_out(events.task)
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
