"""Start-up without a cold first request: what the server serves, loaded and run once before ``/readyz`` says ready.

The *parts* a server serves are, per index, the retrievers its components allow (``available_retrievers``: dense,
bm25, generative with an FM-index, hybrid) and the dense encoder behind ``/v1/embeddings``, then the one RAG
generator.  By default (``server.lazy`` off) every part is loaded and *warmed* — one tiny forward pass: a one-query
search, one embedding, a RAG answer of a few tokens — so that the first request after ready runs as fast as the
second (before, the first chat request to a fresh server took 24.6 s: every model loaded, and its first pass paid
the one-off costs of kernels and caches).  ``server.preload`` names narrow it (``dense``, ``bm25``, …,
``embeddings``, ``generator``); ``server.lazy`` with no names loads each part on its first use.

A hybrid retriever is composed of the retrievers the snapshot already serves (``_pool``: ``load_hybrid(…,
shared=True)`` over their first stages), so warming every retriever of an index loads each model once, not a second
copy of all of them under the hybrid; a retriever's warm-up search runs its reranking stage too, where it has one.

``Warmup`` runs the parts in order off the event loop (``/healthz`` answers meanwhile, ``/readyz`` says 503 with
what it is doing), logs one line per part that fails (``/readyz`` then stays 503 and says why), and then what the
server serves; ``Server`` (``_server``) adds where: the page, the API docs and the OpenAI-compatible base URL.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from genret.core import GenretError
from genret.retrieval import Retriever, available_retrievers

if TYPE_CHECKING:
    from ._limits import Gate
    from ._settings import ServerConfig

SearchService = Any  # ``_service.SearchService``, which imports this module (no import back: no circle)

log = logging.getLogger("genret.serving")

GENERATOR = "generator"  # the name ``server.preload`` uses for the RAG generator
EMBEDDINGS = "embeddings"  # … and for the dense encoders of /v1/embeddings
WARM_TEXT = "What is this about?"  # the warm-up query
WARM_TOKENS = 2  # new tokens of the warm-up answer


class Part(NamedTuple):
    """One thing the server serves: a retriever or the embeddings of an index, or the generator (index None)."""

    index: str | None
    name: str

    @property
    def label(self) -> str:
        return self.name if self.index is None else f"{self.name} on {self.index}"


# ---- what is served ---------------------------------------------------------------------------------------------
def load_order(names: Sequence[str]) -> list[str]:
    """Retriever names in the order a server loads them: a hybrid after its members (``available_retrievers`` lists
    it first where fitted weights make it the index's default), the rest as given."""
    return sorted(names, key=lambda n: n == "hybrid")


def served_parts(service: SearchService, names: Sequence[str] | None = None) -> list[Part]:
    """The parts named (None: every part served), per index in preference order (a hybrid after its members),
    the generator last (its warm-up answer retrieves with the default retriever)."""
    parts = []
    for index, ix in service.indexes.items():
        offered = load_order(available_retrievers(ix, service.settings.retrieval))
        parts += [Part(index, name) for name in offered if names is None or name in names]
        if ix.has("dense") and (names is None or EMBEDDINGS in names):
            parts.append(Part(index, EMBEDDINGS))
    if names is None or GENERATOR in names:
        parts.append(Part(None, GENERATOR))
    return parts


def planned_parts(service: SearchService, cfg: ServerConfig) -> list[Part]:
    """What a server with settings ``cfg`` loads and warms at start: ``cfg.preload`` when it names parts, else
    everything served, or nothing with ``cfg.lazy``."""
    if cfg.preload:
        return served_parts(service, cfg.preload)
    return [] if cfg.lazy else served_parts(service)


def check_names(service: SearchService, names: Sequence[str]) -> None:
    """Refuse preload names no served index offers (at start, before anything is loaded)."""
    offered = {n for ix in service.indexes.values() for n in available_retrievers(ix, service.settings.retrieval)}
    missing = [n for n in names if n not in offered and n not in (GENERATOR, EMBEDDINGS)]
    if missing:
        raise GenretError(f"cannot preload {missing}: no served index offers them (offered: {sorted(offered)}, "
                          f"{EMBEDDINGS}, {GENERATOR})")


# ---- loading and warming one part (blocking: off the event loop) --------------------------------------------------
def load(service: SearchService, part: Part) -> None:
    if part.name == GENERATOR:
        service.generator()
    elif part.name == EMBEDDINGS:
        service.embed(part.index, [WARM_TEXT])  # loading it is the first use
    else:
        service.retriever(part.index, part.name)


def warm(service: SearchService, part: Part, with_passages: bool = True) -> None:
    """One tiny pass of ``part`` (loaded on the way if it is not yet): a one-query search, one embedding, or a
    RAG answer of ``WARM_TOKENS`` tokens (over the default retriever's passages when ``with_passages``).  A
    generator behind an endpoint (``openai``) is loaded, not called: its warm-up is the endpoint's business."""
    if part.name == GENERATOR:
        generator = service.generator(log_failure=False)  # the warm-up logs it
        if generator.config.kind in ("hf", "llamacpp"):  # local models; an endpoint warms itself
            spec = service.rag_spec(WARM_TEXT, passages=None if with_passages else 0, max_new_tokens=WARM_TOKENS)
            service.batch_rag([WARM_TEXT], spec)
    elif part.name == EMBEDDINGS:
        service.embed(part.index, [WARM_TEXT])
    else:
        service.batch_search([WARM_TEXT], 1, part.index, part.name)


def gone(service: SearchService, part: Part) -> bool:
    """Whether ``part`` is no longer served: its index's current version does not offer it."""
    if part.index is None:
        return False
    ix = service.indexes.get(part.index)
    if ix is None or part.name == EMBEDDINGS:
        return ix is None or not ix.has("dense")
    return part.name not in available_retrievers(ix, service.settings.retrieval)


def warm_retriever(retriever: Retriever) -> None:
    """A one-query search (a new index version's retrievers, before they are swapped in: ``_snapshots``)."""
    retriever.batch_search([WARM_TEXT], 1)


# ---- the start-up run -------------------------------------------------------------------------------------------
class Warmup:
    """Loads and warms ``parts`` in order; ``gate`` is ready once all of them are (it stays 503, saying why, when
    one failed).  ``run`` logs what the server serves unless ``announced_by_server`` (``Server`` does, with its
    URLs); ``wait`` ends when the run has."""

    def __init__(self, service: SearchService, parts: list[Part], gate: Gate) -> None:
        self.service, self.parts, self.gate = service, parts, gate
        self.failures: dict[str, str] = {}  # part label -> why
        self.seconds: dict[str, float] = {}  # part label -> load and warm-up time
        self.took: float | None = None  # the whole run (None: not finished)
        self.announced_by_server = False
        self._stopping = False
        self._done: asyncio.Event | None = None
        if parts:
            gate.ready = False
            gate.not_ready_reason = ("warming up: loading retrievers "
                                     + ", ".join(dict.fromkeys(p.name for p in parts)) + ", then running each once")

    async def run(self) -> None:
        started = time.monotonic()
        try:
            with_passages = Part(*self.service.resolve(None, None)) in self.parts  # the default retriever is warm
        except GenretError:  # the default index has no retriever
            with_passages = False
        for i, part in enumerate(self.parts, 1):
            if self._stopping:
                self._event().set()
                return
            self.gate.not_ready_reason = f"warming up: {part.label} ({i} of {len(self.parts)})"
            t0 = time.monotonic()
            try:
                await asyncio.to_thread(warm, self.service, part, with_passages)
            except Exception as exc:  # noqa: BLE001 - one part failing leaves the others served
                why = " ".join((str(exc) if isinstance(exc, GenretError) else f"{type(exc).__name__}: {exc}").split())
                if gone(self.service, part):  # a new version of its index swapped in meanwhile has no such part
                    log.info("warm-up: %s skipped: the index's current version does not offer it", part.label)
                else:
                    log.error("warm-up: %s failed: %s", part.label, why, exc_info=log.isEnabledFor(logging.DEBUG))
                    self.failures[part.label] = why
            self.seconds[part.label] = time.monotonic() - t0
        self.took = time.monotonic() - started
        if self.failures:
            self.gate.not_ready_reason = "warm-up failed: " + "; ".join(f"{k}: {v}" for k, v in self.failures.items())
        else:
            self.gate.ready = True
        if not self.announced_by_server:
            self.announce()
        self._event().set()

    def stop(self) -> None:
        """Start no further part (shutdown); the one running finishes."""
        self._stopping = True

    async def wait(self) -> None:
        await self._event().wait()

    def _event(self) -> asyncio.Event:
        if self._done is None:
            self._done = asyncio.Event()
        return self._done

    def announce(self, base_url: str | None = None) -> None:
        """Log what the server serves (and where, given its base URL), once warmed up."""
        for line in summary(self.service, self.parts, self.failures, self.took, base_url):
            (log.error if line.startswith("not ready") else log.info)("%s", line)


def summary(service: SearchService, parts: list[Part], failures: dict[str, str], took: float | None,
            base_url: str | None = None) -> list[str]:
    """The lines ``Warmup.announce`` logs."""
    warmed = {p for p in parts if p.label not in failures}
    if failures:
        head = f"not ready (/readyz answers 503): warm-up failed for {', '.join(failures)}"
    elif parts:
        head = f"ready: loaded and warmed up in {took or 0:.1f} s"
    else:
        head = "ready: models load on first use (lazy)"
    lines = [head]

    def state(part: Part) -> str:
        return "warm" if part in warmed else "FAILED" if part.label in failures else "on first use"

    def grouped(parts: list[Part]) -> str:
        by_state: dict[str, list[str]] = {"warm": [], "FAILED": [], "on first use": []}
        for part in parts:
            by_state.setdefault(state(part), []).append(part.name)
        return "; ".join(f"{st}: {', '.join(names)}" for st, names in by_state.items() if names)

    for index, ix in service.indexes.items():
        names = available_retrievers(ix, service.settings.retrieval) + ([EMBEDDINGS] if ix.has("dense") else [])
        lines.append(f"  index {index} ({len(ix.store)} {ix.manifest.units.kind} units) — "
                     + grouped([Part(index, name) for name in names]))
    g = service.settings.generator
    where = f" at {g.base_url}" if g.kind == "openai" and g.base_url else ""
    lines.append(f"  generator {g.model} ({g.kind}{where}) — {state(Part(None, GENERATOR))}")
    if base_url is not None:
        lines.append(f"  page {base_url}/  API docs {base_url}/docs  OpenAI-compatible base {base_url}/v1")
    return lines
