"""Running the app under uvicorn, with a graceful shutdown that starts by refusing new work.

On SIGINT/SIGTERM (or ``server.should_exit = True``) uvicorn stops accepting connections, lets the requests
in flight finish (up to ``server.shutdown_timeout_s``) and then runs the app's lifespan shutdown (which waits
for admitted model work and releases the models).  ``Server`` first closes the app's admission gate, so
requests that still reach it on open connections, and ``/readyz``, answer 503 with Retry-After.

Every connection is watched by a ``ConnectionGuard`` (``_connections``): deadlines for each request's headers
(``header_timeout_s``) and body (``body_timeout_s``), idle keep-alive connections closed after ``keep_alive_s``, and at
most ``max_connections`` open (kept below the open-file limit), so slow or idle clients cannot exhaust the server.

At start the app loads and warms what it serves in the background (``_warmup``): ``/healthz`` answers 200 and
``/readyz`` 503 meanwhile; once warm, the server logs what it serves and its URLs (the page, ``/docs``, ``/v1``).
"""

from __future__ import annotations

import asyncio
import errno
import socket

import uvicorn
from fastapi import FastAPI

from genret.core import ConfigError

from ._app import create_app
from ._connections import ConnectionGuard, connection_cap, guarded_protocol
from ._settings import Settings


class Server(uvicorn.Server):
    """``uvicorn.Server`` whose app warms up in the background (``_warmup``: the probes answer meanwhile), that
    then logs what it serves and where, and whose shutdown first makes the app refuse new work."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, guard: ConnectionGuard | None = None) -> None:
        super().__init__(config)
        self.genret_app = app
        self.guard = guard
        app.state.warm_in_background = True
        app.state.warmup.announced_by_server = True
        self._announcer: asyncio.Task | None = None

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if self.started and not self.should_exit:
            self._announcer = asyncio.create_task(self._announce())

    async def _announce(self) -> None:
        warmup = self.genret_app.state.warmup
        await warmup.wait()
        warmup.announce(self.base_url)

    async def shutdown(self, sockets=None) -> None:
        self.genret_app.state.gate.close()
        if self._announcer is not None:
            self._announcer.cancel()
        await super().shutdown(sockets)

    @property
    def port(self) -> int:
        """The bound port (useful with port 0), once started."""
        return self.servers[0].sockets[0].getsockname()[1]

    @property
    def base_url(self) -> str | None:
        """``http://HOST:PORT`` of the bound socket, once started (None on a Unix socket)."""
        try:
            name = self.servers[0].sockets[0].getsockname()
        except (IndexError, AttributeError):
            return None
        if not isinstance(name, tuple):
            return None
        host = name[0]
        return f"http://[{host}]:{name[1]}" if ":" in host else f"http://{host}:{name[1]}"


def make_server(settings: Settings, app: FastAPI | None = None, **uvicorn_options) -> Server:
    """A server for ``settings`` (or the given app); run it with ``.run()`` or ``await .serve()``."""
    app = app or create_app(settings)
    cfg = settings.server
    guard = ConnectionGuard(cfg.header_timeout_s, cfg.body_timeout_s, connection_cap(cfg.max_connections))
    metrics = app.state.metrics
    metrics.gauge("genret_connections_open", "HTTP connections open.", lambda: len(guard.open))
    metrics.gauge("genret_connections_cut", "Connections the server closed since it started: header or body "
                  "deadline missed, or no room (max_connections).", lambda: guard.cut)
    options = {"log_level": cfg.log_level, "access_log": cfg.access_log, "timeout_keep_alive": cfg.keep_alive_s,
               "timeout_graceful_shutdown": cfg.shutdown_timeout_s, "http": guarded_protocol(guard),
               **uvicorn_options}
    return Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, **options), app, guard)


def serve(settings: Settings) -> None:
    """Serve until interrupted (``genret serve``).  A host and port that cannot be bound are refused first
    (``check_port``), before anything is loaded or claims to have started."""
    check_port(settings.server.host, settings.server.port)
    make_server(settings).run()


def check_port(host: str, port: int) -> None:
    """``ConfigError`` for an address that cannot be bound (a port in use, a host not of this machine): uvicorn
    binds only after the app has started up, then exits with status 3.  Bound as uvicorn binds it (``SO_REUSEADDR``)
    and let go at once."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            why = "is in use (another server?): stop it, or choose another port" if exc.errno == errno.EADDRINUSE \
                else f"cannot be bound ({exc.strerror or exc})"
            raise ConfigError(f"cannot serve on {where}: the address {why}") from None
