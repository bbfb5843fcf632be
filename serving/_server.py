"""Running the app under uvicorn, with a graceful shutdown that starts by refusing new work.

On SIGINT/SIGTERM (or ``server.should_exit = True``) uvicorn stops accepting connections, lets the requests
in flight finish (up to ``server.shutdown_timeout_s``) and then runs the app's lifespan shutdown (which waits
for admitted model work and releases the models).  ``Server`` first closes the app's admission gate, so
requests that still reach it on open connections, and ``/readyz``, answer 503 with Retry-After.
"""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from ._app import create_app
from ._settings import Settings


class Server(uvicorn.Server):
    """``uvicorn.Server`` whose shutdown first makes the app refuse new work."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.genret_app = app

    async def shutdown(self, sockets=None) -> None:
        self.genret_app.state.gate.close()
        await super().shutdown(sockets)

    @property
    def port(self) -> int:
        """The bound port (useful with port 0), once started."""
        return self.servers[0].sockets[0].getsockname()[1]


def make_server(settings: Settings, app: FastAPI | None = None, **uvicorn_options) -> Server:
    """A server for ``settings`` (or the given app); run it with ``.run()`` or ``await .serve()``."""
    app = app or create_app(settings)
    cfg = settings.server
    options = {"log_level": cfg.log_level, "access_log": cfg.access_log,
               "timeout_graceful_shutdown": cfg.shutdown_timeout_s, **uvicorn_options}
    return Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, **options), app)


def serve(settings: Settings) -> None:
    """Serve until interrupted (``genret serve``)."""
    make_server(settings).run()
