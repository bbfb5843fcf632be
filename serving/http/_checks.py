"""The request checks: bad requests refused with a clear :class:`RequestError` (422) before any model work.

Cheap — run on the event loop — and within the server's limits (``server.max_k``, ``max_batch``,
``max_query_chars``); a granularity only for a retriever that ranks by it (``IndexPool.granularities``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._errors import RequestError

if TYPE_CHECKING:
    from ._pool import IndexPool
    from ._settings import ServerConfig

__all__ = ["check_queries", "check_query_string", "check_search"]


def check_query_string(raw: bytes) -> None:
    """A URL's query string (``scope["query_string"]``) whose percent-decoded bytes are UTF-8: Starlette would read
    ``%ff`` as U+FFFD, and search for that."""
    from urllib.parse import unquote_to_bytes

    decoded = unquote_to_bytes(raw.replace(b"+", b" "))
    try:
        decoded.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(f"the query string is not valid UTF-8 (byte 0x{decoded[exc.start]:02x} after "
                           f"{decoded[:exc.start][-20:].decode('utf-8', 'replace')!r})") from None


def check_queries(queries: Sequence[str], cfg: ServerConfig) -> None:
    """At least one query, at most ``max_batch``, each not blank, at most ``max_query_chars``, valid Unicode."""
    if not queries:
        raise RequestError("no query given")
    if len(queries) > cfg.max_batch:
        raise RequestError(f"at most {cfg.max_batch} queries per batch, got {len(queries)}")
    for i, q in enumerate(queries):
        where = f"query {i}" if len(queries) > 1 else "query"
        if not q.strip():
            raise RequestError(f"{where} is empty")
        if len(q) > cfg.max_query_chars:
            raise RequestError(f"{where} longer than {cfg.max_query_chars} characters ({len(q)})")
        try:
            q.encode("utf-8")
        except UnicodeEncodeError:
            raise RequestError(f"{where} is not valid Unicode (lone surrogate)") from None


def check_search(pool: IndexPool, queries: Sequence[str], k: int, retriever: str, granularity: str | None = None,
                 index: str | None = None) -> None:
    """A search of ``queries`` for ``k`` hits by ``retriever`` of ``index`` (as ``IndexPool.resolve`` returns
    them; None: the default index), within ``pool.settings.server``'s limits."""
    cfg = pool.settings.server
    if not 1 <= k <= cfg.max_k:
        raise RequestError(f"k must be between 1 and {cfg.max_k}, got {k}")
    check_queries(queries, cfg)
    if granularity is not None:
        takes = pool.granularities(index)
        if granularity not in takes.get(retriever, ()):
            own = [name for name, gs in takes.items() if granularity in gs and name != "hybrid"] or ["generative"]
            also = " (or a hybrid with it)" if "hybrid" in takes else ""
            raise RequestError(f"granularity applies to the {' / '.join(own)} retriever{also}, not {retriever!r}")
