"""Trusted hosts: a pure ASGI middleware that answers a request whose ``Host`` header is not one of
``server.trusted_hosts`` with 400 ``InvalidHost`` (the error shape of every other refusal), before anything else
runs.  Against DNS rebinding: a page on another site that resolves its own name to this server's address reaches
it with its own name as the Host.

A pattern is a host name or address (``example.com``, ``10.0.0.5``, ``[::1]``), optionally with ``:port`` (then
only that port), or ``*.example.com`` (any subdomain, not ``example.com`` itself: list it too).  Names compare
case-insensitively.  A request with no Host header (HTTP/1.0) is refused when the list is set; one with more than one
Host header is refused whatever the list (RFC 7230, 5.4: which of them would be checked, and which would the app
read?).  With no list, only that is checked.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from ._errors import InvalidHost, error_response


def _split(host: str) -> tuple[str, str | None]:
    """``(name, port or None)``; IPv6 addresses keep their brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        name, _, rest = host.partition("]")
        return name + "]", rest[1:] if rest.startswith(":") else None
    name, sep, port = host.rpartition(":")
    return (name, port) if sep and port.isdigit() else (host, None)


def host_allowed(host: str, patterns: Sequence[str]) -> bool:
    """Whether ``host`` (a Host header's value) matches one of ``patterns``."""
    name, port = _split(host)
    for pattern in patterns:
        p_name, p_port = _split(pattern)
        if p_port is not None and p_port != port:
            continue
        if p_name == "*" or p_name == name or (p_name.startswith("*.") and name.endswith(p_name[1:])):
            return True
    return False


class TrustedHostMiddleware:
    """Refuse (400 ``InvalidHost``) HTTP requests whose Host is not one of ``hosts`` (empty: any Host), or that have
    more than one Host header; lifespan events pass."""

    def __init__(self, app, hosts: Sequence[str]) -> None:
        self.app, self.hosts = app, list(hosts)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        hosts = [v.decode("latin-1") for k, v in scope.get("headers") or [] if k == b"host"]
        host = hosts[0] if hosts else ""
        if len(hosts) > 1:
            refusal = InvalidHost("more than one Host header (RFC 7230)")
        elif not self.hosts or (host and host_allowed(host, self.hosts)):
            return await self.app(scope, receive, send)
        else:
            shown = host[:100] if host else "(none)"
            refusal = InvalidHost(f"Host {shown!r} is not one of this server's trusted_hosts")
        status, body, headers = error_response(refusal)
        raw = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]})
        await send({"type": "http.response.body", "body": raw})
