"""One consistent snapshot per served index: its opened ``Index`` and the retrievers loaded over it, all of one
generation of the directory (the sha256 of its ``manifest.json``: every write of an index replaces the manifest).

- A retriever loaded lazily is checked against the generation after it is loaded: if the directory changed on
  disk meanwhile, its files may belong to the new version, so it is discarded and the whole snapshot is reopened
  (never an old unit store behind new FAISS or Lucene files).
- A changed index is picked up by ``refresh`` (the watcher calls it every ``reload_interval_s``; a request that
  meets a ``StaleSnapshot`` too): the new version is opened, the retrievers it should serve (``wanted``: those
  the old snapshot had loaded and the ones the server preloads, as far as the new version offers them) are loaded
  over it (and run once, ``warm``, unless the server is lazy), and only then does it replace the old one,
  atomically.  Requests in flight keep the snapshot they started with (``use``); a replaced snapshot is closed
  when its last request ends.  One refresh of an index runs at a time: a second one waits, then finds it done.
- The server converges to the on-disk version whatever changed: a retriever the new version no longer offers is
  dropped (requests naming it get 404 from the pool), one it adds is loaded when the server preloads it, and one
  that fails to load over it does not hold the old version (and its deleted files) in service: the new version
  is swapped in, that retriever is recorded as failed (``stale`` says so) and retried by every later refresh and
  on its next request.  Only a version that cannot be opened at all leaves the old one served.
- ``stale`` says which indexes are not served at their on-disk generation, whole (a reload pending or failed, a
  retriever that failed to load over it): ``/readyz`` answers 503 for them.  Each failure is logged once, not at
  every watcher tick.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

from genret.core import GenretError
from genret.indexing import Index
from genret.retrieval import Retriever

log = logging.getLogger("genret.serving")

Loader = Callable[["Snapshot", str], Retriever]  # may load others of the snapshot first (a hybrid's members)
Wanted = Callable[[Index, Collection[str]], list[str]]  # a new version's retrievers, given the old one's


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
        self.failed: dict[str, str] = {}  # retriever -> why it failed to load over this version (in a refresh)
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
                 warm: Callable[[Retriever], None] | None = None, wanted: Wanted | None = None) -> None:
        """``wanted(new index, retrievers the old snapshot had loaded or failed to)``: the retrievers a new version
        loads before it serves, in order (default: the old snapshot's)."""
        self._loader, self._warm = loader, warm
        self._wanted: Wanted = wanted or (lambda index, names: list(names))
        self._lock = threading.Lock()
        self.current: dict[str, Snapshot] = {}
        self.errors: dict[str, str] = {}
        self._logged: dict[tuple[str, str], str] = {}  # (index, retriever or "") -> the failure last logged
        for path in paths:
            snap = self._open(Path(path))
            if snap.index.name in self.current:
                snap.close()
                raise GenretError(f"two served indexes share the name {snap.index.name!r}")
            self.current[snap.index.name] = snap
        self._refreshing = {name: threading.Lock() for name in self.current}
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
            snap.failed.pop(name, None)
            return r

    def refresh(self, name: str) -> bool:
        """Serve index ``name`` at its on-disk generation (True when a new snapshot replaced the old one); retry the
        retrievers that failed to load over the current one.  One at a time per index: the watcher's and a
        request's (``StaleSnapshot``) never load the same version twice, nor models side by side."""
        with self._refreshing[name]:
            for _ in range(3):
                try:
                    return self._refresh(name)
                except StaleSnapshot:  # changed again while the new version loaded: open the newer one
                    continue
            return False

    def _refresh(self, name: str) -> bool:
        old = self.current[name]
        if generation(old.path) == old.generation:
            self._settled(name)
            self._retry(name, old)
            return False
        try:
            new = self._open(old.path)
        except Exception as exc:  # keep serving the old snapshot (nothing else to serve); /readyz tells
            self.errors[name] = f"{type(exc).__name__}: {exc}"
            self._report(name, "", f"index {name} changed on disk but could not be reopened: {self.errors[name]}")
            return False
        wanted = self._wanted(new.index, [*old.retrievers, *old.failed])
        try:
            for r in wanted:
                self._load(new, r)
        except StaleSnapshot:
            new.close()
            raise
        with self._lock:
            self.current[name] = new
            old.retired = True
            idle = old.users == 0
        self._settled(name, retrievers=True)
        log.info("index %s: now serving its new version (%d units, generation %s)", name, len(new.index.store),
                 new.generation[:12])
        for r in [r for r in old.retrievers if r not in wanted]:
            log.warning("index %s: its new version offers no %r retriever: requests for it get 404", name, r)
        for r, why in new.failed.items():
            self._report(name, r, f"index {name}: {r} failed to load over the new version: {why}")
        if idle:
            old.close()
        return True

    def _load(self, snap: Snapshot, name: str) -> None:
        """Load (and warm) retriever ``name`` over ``snap``; a failure is recorded in ``snap.failed``."""
        try:
            loaded = self.retriever(snap, name)
            if self._warm is not None:  # run once before it serves: no cold first request after a swap
                self._warm(loaded)
        except StaleSnapshot:
            raise
        except Exception as exc:  # noqa: BLE001 - the rest of the version serves; /readyz tells
            with snap.lock:
                broken = snap.retrievers.pop(name, None)
                snap.failed[name] = " ".join(f"{type(exc).__name__}: {exc}".split())
            if broken is not None:
                broken.close()

    def _retry(self, name: str, snap: Snapshot) -> None:
        """Load again the retrievers that failed to load over ``snap`` (the current one)."""
        for r in list(snap.failed):
            self._load(snap, r)
            if r in snap.failed:
                self._report(name, r, f"index {name}: {r} failed to load over its current version: "
                                      f"{snap.failed[r]}")
            else:
                self._logged.pop((name, r), None)
                log.info("index %s: %s loaded over its current version", name, r)

    def _settled(self, name: str, retrievers: bool = False) -> None:
        """Index ``name`` is served at its on-disk generation: no reload error (any more); ``retrievers``: a new
        version, whose retrievers' failures are its own (each logged anew)."""
        self.errors.pop(name, None)
        for key in [k for k in self._logged if k[0] == name and (retrievers or not k[1])]:
            self._logged.pop(key, None)

    def _report(self, name: str, retriever: str, message: str) -> None:
        """Log a failure once (the watcher retries every tick: a new failure is logged, not the same again)."""
        if self._logged.get((name, retriever)) != message:
            self._logged[(name, retriever)] = message
            log.error("%s", message)

    def stale(self) -> dict[str, str]:
        """``{name: why}`` for the indexes not served at their on-disk generation, whole."""
        out = {}
        for name, snap in list(self.current.items()):
            if name in self.errors:
                out[name] = f"reload failed: {self.errors[name]}"
            elif generation(snap.path) != snap.generation:
                out[name] = "changed on disk; reload pending"
            elif snap.failed:
                out[name] = "; ".join(f"{r} failed to load over its current version: {why}"
                                      for r, why in sorted(dict(snap.failed).items()))
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
