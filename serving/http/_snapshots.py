"""One consistent snapshot per served index: its opened ``Index`` and the retrievers loaded over it, all of one
generation of the directory (the sha256 of its ``manifest.json``: every write of an index replaces the manifest).

- A retriever loaded lazily is checked against the generation after it is loaded: if the directory changed on
  disk meanwhile, its files may belong to the new version, so it is discarded and the whole snapshot is reopened
  (never an old unit store behind new FAISS or Lucene files).
- A changed index is picked up by ``refresh`` (the watcher calls it every ``reload_interval_s``): the new
  version is opened, the retrievers the old snapshot had loaded are loaded over it (and run once, ``warm``, unless
  the server is lazy), and only then does it replace the old one, atomically.  Requests in flight keep the
  snapshot they started with (``use``); a replaced snapshot is closed when its last request ends.
- ``stale`` says which indexes are not served at their on-disk generation (a reload pending or failed):
  ``/readyz`` answers 503 for them.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from genret.core import GenretError
from genret.indexing import Index
from genret.retrieval import Retriever

log = logging.getLogger("genret.serving")

Loader = Callable[["Snapshot", str], Retriever]  # may load others of the snapshot first (a hybrid's members)


def generation(path: Path) -> str:
    """The generation of the index at ``path``: the sha256 of its manifest (``IndexFormatError``-free: a missing
    or unreadable manifest is a generation of its own)."""
    try:
        return hashlib.sha256((path / "manifest.json").read_bytes()).hexdigest()
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"


class Snapshot:
    """An opened index and the retrievers loaded over it, of one generation."""

    def __init__(self, path: Path, gen: str | None = None) -> None:
        self.path = path
        self.generation = gen or generation(path)
        self.index = Index(path)
        if generation(path) != self.generation:  # changed while opening: the caller tries again
            self.index.close()
            raise _Changed(path)
        self.retrievers: dict[str, Retriever] = {}
        self.lock = threading.RLock()  # reentrant: loading a retriever may load others (a hybrid's members)
        self.users = 0
        self.retired = False

    def close(self) -> None:
        for r in self.retrievers.values():
            r.close()
        self.retrievers.clear()
        self.index.close()


class _Changed(GenretError):
    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} changed while it was being opened")


class Snapshots:
    """The served indexes, by name, each as its current ``Snapshot``."""

    def __init__(self, paths: list[Path], loader: Loader, *, interval: float = 0.0,
                 warm: Callable[[Retriever], None] | None = None) -> None:
        self._loader, self._warm = loader, warm
        self._lock = threading.Lock()
        self.current: dict[str, Snapshot] = {}
        self.errors: dict[str, str] = {}
        for path in paths:
            snap = self._open(Path(path))
            if snap.index.name in self.current:
                snap.close()
                raise GenretError(f"two served indexes share the name {snap.index.name!r}")
            self.current[snap.index.name] = snap
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        if interval > 0:
            self._watcher = threading.Thread(target=self._watch, args=(interval,), name="genret-index-watch",
                                             daemon=True)
            self._watcher.start()

    @staticmethod
    def _open(path: Path, attempts: int = 5) -> Snapshot:
        for _ in range(attempts - 1):
            try:
                return Snapshot(path)
            except _Changed:
                continue
        return Snapshot(path)

    @contextmanager
    def use(self, name: str) -> Iterator[Snapshot]:
        """The current snapshot of index ``name``, kept open until the block ends."""
        with self._lock:
            snap = self.current[name]
            snap.users += 1
        try:
            yield snap
        finally:
            with self._lock:
                snap.users -= 1
                done = snap.retired and snap.users == 0
            if done:
                snap.close()

    def retriever(self, snap: Snapshot, name: str) -> Retriever:
        """Retriever ``name`` of ``snap``, loaded on first use.  Raises ``StaleSnapshot`` when the index changed on
        disk since ``snap`` was opened and the retriever was not loaded yet (its files may be the new ones)."""
        with snap.lock:
            if name in snap.retrievers:
                return snap.retrievers[name]
            if generation(snap.path) != snap.generation:
                raise StaleSnapshot(snap.path)
            r = self._loader(snap, name)
            if generation(snap.path) != snap.generation:  # changed while loading: not this snapshot's files
                r.close()
                raise StaleSnapshot(snap.path)
            snap.retrievers[name] = r
            return r

    def refresh(self, name: str) -> bool:
        """Serve index ``name`` at its on-disk generation (True when a new snapshot replaced the old one)."""
        old = self.current[name]
        gen = generation(old.path)
        if gen == old.generation:
            self.errors.pop(name, None)
            return False
        try:
            new = self._open(old.path)
            for r in list(old.retrievers):
                loaded = self.retriever(new, r)
                if self._warm is not None:  # run once before it serves: no cold first request after a swap
                    self._warm(loaded)
        except Exception as exc:  # keep serving the old snapshot; /readyz tells
            self.errors[name] = f"{type(exc).__name__}: {exc}"
            log.error("index %s changed on disk but could not be reopened: %s", name, self.errors[name])
            return False
        with self._lock:
            self.current[name] = new
            old.retired = True
            idle = old.users == 0
        self.errors.pop(name, None)
        log.info("index %s: now serving its new version (%d units, generation %s)", name, len(new.index.store),
                 new.generation[:12])
        if idle:
            old.close()
        return True

    def stale(self) -> dict[str, str]:
        """``{name: why}`` for the indexes not served at their on-disk generation."""
        out = {}
        for name, snap in list(self.current.items()):
            if name in self.errors:
                out[name] = f"reload failed: {self.errors[name]}"
            elif generation(snap.path) != snap.generation:
                out[name] = "changed on disk; reload pending"
        return out

    def _watch(self, interval: float) -> None:
        while not self._stop.wait(interval):
            for name in list(self.current):
                try:
                    self.refresh(name)
                except Exception:  # noqa: BLE001 - the watcher must not die
                    log.exception("index %s: reload check failed", name)

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        with self._lock:
            snaps, self.current = list(self.current.values()), {}
        for snap in snaps:
            snap.close()


class StaleSnapshot(GenretError):
    """The snapshot's index changed on disk before a retriever was loaded over it: reopen and retry."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} changed on disk")
