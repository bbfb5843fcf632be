"""Serving, in two rooms: the ``genret`` command line (``serving.cli``) and the HTTP API (``serving.http``).

Exports are loaded lazily so that ``genret --help`` does not import pydantic, torch or FastAPI.
"""

from __future__ import annotations

__all__ = ["ServerConfig", "Settings", "create_app", "main"]


def __getattr__(name: str):
    if name == "main":
        from .cli import main

        return main
    if name in ("Settings", "ServerConfig", "create_app"):
        from . import http

        return getattr(http, name)
    raise AttributeError(name)
