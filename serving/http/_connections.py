"""Connections below HTTP: deadlines for a request's headers and body, and a cap on open connections, so that slow
or idle clients cannot hold the server's file descriptors — and ``/healthz`` still answers through a flood of them.

``ConnectionGuard`` keeps the books; ``guarded_protocol(guard)`` is uvicorn's HTTP protocol class (httptools, else
h11) reporting to it.  A connection is in one of three phases:

* **waiting** for a request's headers (just opened, or idle after a response): it must deliver complete headers
  within ``header_timeout_s`` of entering the phase, else it is closed (with 408 if part of a request came).
  Idle keep-alive connections are closed sooner, by uvicorn's ``timeout_keep_alive``.
* **reading the body**: the body must be complete within ``body_timeout_s`` of the headers, else 408 and close.
* **in progress** (the app has the whole request): no deadline here; the app's own limits apply
  (``request_timeout_s``).

At ``max_connections`` open connections, a new one closes the connection that has been waiting longest (a slow or idle
client: nobody's request is lost), else the one reading the slowest body (fewest bytes a second since its headers; 408:
slow uploads cannot hold every slot until ``body_timeout_s`` and crowd out ``/healthz``); when every connection has a
request in progress, the new one is refused with 503 at once. ``connection_cap`` keeps the cap below the process's
open-file limit, so the server never runs out of descriptors (which would make it stop accepting anything, ``/healthz``
included).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time

log = logging.getLogger(__name__)

def _raw_response(status: str, error: str, detail: str, extra: bytes = b"") -> bytes:
    """A whole HTTP/1.1 response with genret's JSON error body, closing the connection (written below the app)."""
    body = json.dumps({"error": error, "detail": detail}).encode()
    return (b"HTTP/1.1 " + status.encode() + b"\r\ncontent-type: application/json\r\n" + extra + b"connection: close"
            b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


REFUSED_RESPONSE = _raw_response("503 Service Unavailable", "Unavailable", "too many open connections "
                                 "(max_connections); retry later", b"retry-after: 1\r\n")
HEADERS_LATE = _raw_response("408 Request Timeout", "ClientTimeout", "the request's headers did not arrive in time "
                             "(header_timeout_s)")
BODY_LATE = _raw_response("408 Request Timeout", "ClientTimeout", "the request's body did not arrive in time "
                          "(body_timeout_s)")
BODY_EVICTED = _raw_response("408 Request Timeout", "ClientTimeout", "the request's body came too slowly: closed to "
                             "make room for a new connection (max_connections)")

class ConnectionGuard:
    """The open connections, those waiting for a request (longest-waiting first) and what was cut (event loop)."""

    def __init__(self, header_timeout_s: float, body_timeout_s: float, max_connections: int) -> None:
        self.header_timeout_s, self.body_timeout_s = header_timeout_s, body_timeout_s
        self.max_connections = max_connections
        self.open: set[asyncio.Protocol] = set()
        self.waiting: dict[asyncio.Protocol, None] = {}  # insertion order: longest-waiting first
        self.reading: dict[asyncio.Protocol, list[float]] = {}  # reading a body -> [since (monotonic), bytes since]
        self.timed_out = 0  # closed for missing a header or body deadline
        self.evicted = 0  # closed to make room for a new connection
        self.refused = 0  # new connections refused (every open one had a request in progress)

    @property
    def cut(self) -> int:
        """Connections the server closed on its own."""
        return self.timed_out + self.evicted + self.refused

    def admit(self, conn) -> bool:
        """Count a new connection, making room if needed; False: refused."""
        if len(self.open) >= self.max_connections:
            victim = next(iter(self.waiting), None)
            if victim is None:
                victim = self._slowest_reader()
            if victim is None:
                self.refused += 1
                return False
            self.evicted += 1
            if victim in self.reading:
                victim.transport.write(BODY_EVICTED)
            self.forget(victim)
            victim.transport.close()
        self.open.add(conn)
        return True

    def _slowest_reader(self):
        """The connection reading a body at the fewest bytes a second (the longest-reading of equals), or None."""
        now = time.monotonic()
        return min(self.reading, default=None,
                   key=lambda c: (self.reading[c][1] / max(now - self.reading[c][0], 1e-3), self.reading[c][0]))

    def read_body(self, conn, received: int = 0) -> None:
        """``conn`` reads a request's body (``received`` more bytes of it came)."""
        if conn not in self.reading:
            self.reading[conn] = [time.monotonic(), 0.0]
        self.reading[conn][1] += received

    def body_done(self, conn) -> None:
        self.reading.pop(conn, None)

    def wait(self, conn) -> None:
        """``conn`` waits for a request from now (the longest-waiting go first when room is needed)."""
        self.waiting.pop(conn, None)
        self.reading.pop(conn, None)
        self.waiting[conn] = None

    def busy(self, conn) -> None:
        self.waiting.pop(conn, None)

    def forget(self, conn) -> None:
        self.open.discard(conn)
        self.waiting.pop(conn, None)
        self.reading.pop(conn, None)


def connection_cap(max_connections: int) -> int:
    """``max_connections``, lowered to leave room below the soft open-file limit for the files the process has open
    now and a reserve (``max(64, limit / 8)``) for those it opens later (models, indexes, the JVM)."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return max_connections
    if soft == resource.RLIM_INFINITY:
        return max_connections
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:
        in_use = 0
    room = soft - in_use - max(64, soft // 8)
    if room < max_connections:
        log.info("max_connections %d lowered to %d: the open-file limit is %d", max_connections, max(1, room), soft)
    return max(1, min(max_connections, room))


def guarded_protocol(guard: ConnectionGuard, base: type | None = None) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class (``base``; default: what uvicorn picks, httptools or h11) under ``guard``.
    Both of uvicorn's protocols hold the current request in ``cycle`` (``response_complete``, ``more_body``) and
    call ``on_response_complete`` when a response is sent: the phases are read from those."""
    if base is None:
        from uvicorn.protocols.http.auto import AutoHTTPProtocol as base

    class GuardedHTTPProtocol(base):  # type: ignore[misc, valid-type]
        _deadline: asyncio.TimerHandle | None = None
        _request = None  # the cycle whose headers were seen complete
        _partial = False  # bytes of a request arrived in this waiting phase

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            if not guard.admit(self):
                transport.write(REFUSED_RESPONSE)
                transport.close()
                return
            self._waiting()

        def connection_lost(self, exc) -> None:
            self._disarm()
            guard.forget(self)
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.transport.is_closing():  # e.g. a malformed request, answered 400
                return
            cycle = self.cycle
            if cycle is None or cycle.response_complete:  # still waiting for the headers
                self._partial = self._partial or bool(data)
            elif cycle is not self._request:  # the headers are complete: a request begins
                self._request = cycle
                guard.busy(self)
                if cycle.more_body:
                    guard.read_body(self)
                    self._arm(guard.body_timeout_s, body=True)
                else:
                    self._disarm()
            elif not cycle.more_body:  # the body is complete
                guard.body_done(self)
                self._disarm()
            else:
                guard.read_body(self, len(data))

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
                self._waiting()

        # ---- the deadline -------------------------------------------------------------------------------------
        def _waiting(self) -> None:
            self._partial = False
            guard.wait(self)
            self._arm(guard.header_timeout_s, body=False)

        def _arm(self, seconds: float, body: bool) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, self._expired, body)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self, body: bool) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            guard.timed_out += 1
            guard.forget(self)
            if body or self._partial:  # a request was on its way: say why it ends
                self.transport.write(BODY_LATE if body else HEADERS_LATE)
            self.transport.close()

    return GuardedHTTPProtocol
