"""Serving: the ``genret`` command line and the HTTP API.

Exports are loaded lazily so that ``genret --help`` does not import pydantic, torch or FastAPI.
"""

from __future__ import annotations

__all__ = ["ServerConfig", "Settings", "create_app", "main"]


def __getattr__(name: str):
    if name == "main":
        from ._cli import main

        return main
    if name in ("Settings", "ServerConfig"):
        from . import _settings

        return getattr(_settings, name)
    if name == "create_app":
        from ._app import create_app

        return create_app
    raise AttributeError(name)
