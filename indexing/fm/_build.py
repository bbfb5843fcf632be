"""FM-index component (kind ``fm-index``): every n-gram of every unit, for SEAL/UGR-style generative retrieval.

Unit layout.  Unit ``i`` is FM-index document ``i``, tokenized as::

    [TITLE_START] title tokens [TITLE_END] text tokens

``TITLE_START`` is the tokenizer's BOS token (else CLS) and ``TITLE_END`` its EOS token (else SEP); a tokenizer
without them gets ids ``len(tokenizer)``, ``len(tokenizer)+1`` reserved by the index (``vocab_size`` then
exceeds the tokenizer's).  For the packaged SmolLM2 tokenizer they are ``<|im_start|>`` = 1 and
``<|im_end|>`` = 2.  Real special tokens, because a decoder can emit them: a title is generated GENRE-style
by seeding the constraint with ``[TITLE_START]`` and letting the model stop on ``TITLE_END`` (its EOS, which
an LM emits naturally at the end of an answer); body n-grams are generated from the root range (the
markers never occur in body text, so they are not proposed there).  Text is tokenized with
``add_special_tokens=False`` and ``split_special_tokens=True``: a literal ``"<|im_end|>"`` in a page is
plain text, so the marker ids occur only where this layout puts them.  Queries must be encoded the same way
(``encode_texts``); mid-sentence n-grams usually start with a space-prefixed token (``" word"``).

Files: ``fm/shard-NNN/*.npy`` (see ``_index``) and ``fm/tokenizer/*`` (``save_pretrained``), all listed
in the component with size and sha256.  Shards hold contiguous unit-id ranges of about equal size.

Tokenizing while the corpus is read: ``build_index`` feeds every unit to ``unit_tokens(config)`` as it writes
the unit store, when the build runs in this process with one shard (on 2 CPUs, by default): batches are
encoded on threads that release the GIL (``_tokens.UnitTokens``) and the compiled build kernels load in
another, so only the suffix array and the wavelet matrix are left when the store is written (scifact, 2.6M
tokens, 2 CPUs: the whole ``genret index --fm`` from 3.4-3.7 to 2.3 s, ``bench/index_fm.py``).  Other builds
read the store:

Parallel build (``FMConfig.workers``, default: one per CPU from 20,000 units on more than 2 CPUs, else 1;
1 = everything in this process, the Rust tokenizer encoding each batch on its own threads).  Units are read
in batches and tokenized by ``workers`` processes (forked, or spawned when other threads run: a script then
needs the ``if __name__ == "__main__":`` guard) whose output is consumed in order, so
the index does not depend on the number of workers.  Each complete shard is built in a process of its own
(``FMIndex.from_flat`` + ``save``) while the next shards are tokenized; a shard build waits while the builds
already running, plus this one, would need more than 80 % of the memory available at the start (estimated
at ``BUILD_BYTES_PER_TOKEN`` = 16 bytes/token, the suffix-array phase of ``from_flat``).  Peak memory:
about 16 bytes/token of the shards building at once + 2 bytes/token of the tokenized shard being filled +
one tokenizer per worker (~150 MB each for the packaged tokenizer).
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ...core import DEFAULT_LM, IndexFormatError, progress_bar
from .._manifest import Component, file_entries
from .._store import UnitStore
from ._queries import SA_SAMPLE
from ._shards import SHARDED_FORMAT, ShardedFMIndex, load_any, shard_dir
from ._tokens import (
    UnitEncoder,
    UnitTokens,
    encode_batch,
    encode_units,
    fast_tokenizer,
    init_worker,
    title_markers,
    token_dtype,
    unit_tokenizer,
)

if TYPE_CHECKING:
    from ._index import FMIndex

log = logging.getLogger("genret")

FM_KIND = "fm-index"
FM_DIR = "fm"
TOKENIZER_DIR = "fm/tokenizer"
LAYOUT = "[title_start] title [title_end] text"


class FMConfig(BaseModel):
    """FM-index settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tokenizer: str = Field(DEFAULT_LM, description="Hugging Face tokenizer name/path, GGUF file or packaged alias")
    shards: int = Field(1, ge=1, description="independent FM-indexes over contiguous unit ranges")
    sa_sample: int = Field(SA_SAMPLE, ge=1, description="suffix-array sampling rate: locate cost (about sa_sample/2 "
                           "LF steps an occurrence) vs about 3/sa_sample bytes/token")
    lowercase: bool = Field(False, description="lowercase titles and texts (and queries) before tokenizing")
    workers: int | None = Field(None, ge=1, description="tokenizer / shard-builder processes (default: one per "
                                "CPU on more than 2 CPUs, else 1; 1: all in this process); the index does not "
                                "depend on it")


BUILD_BYTES_PER_TOKEN = 16  # FMIndex.from_flat's peak (suffix-array phase, 16-bit symbols)
_BATCH = 1024
_PARALLEL_MIN_UNITS = 20_000  # below this, worker start-up (a tokenizer each) costs more than it saves
# On 2 CPUs the Rust tokenizer's own threads already use both and worker processes only add their start-up
# (measured: 2.6 s for scifact in one process, 5.6 s with 2 spawned workers): one process by default there.
_ONE_PROCESS_MAX_CPUS = 2


def _build_shard(tokens_path: str, lengths: np.ndarray, vocab: int, sa_sample: int, out: str,
                 progress: bool) -> tuple[list[str], dict[str, Any]]:
    from ._index import FMIndex

    tokens = np.load(tokens_path)
    os.unlink(tokens_path)
    index = FMIndex.from_flat(tokens, lengths, vocab, sa_sample=sa_sample, progress=progress)
    del tokens
    return index.save(out), index.params()


def build_shard(tokens: np.ndarray, lengths: np.ndarray, vocab: int, sa_sample: int, out: str | Path,
                progress: bool = False) -> tuple[list[str], dict[str, Any]]:
    """Index one shard's units (``tokens`` flat, ``lengths`` a unit) and save it into ``out``: the file names
    (relative to ``out``) and the shard's params.  numba loads here, not when this module is imported."""
    from ._index import FMIndex

    index = FMIndex.from_flat(tokens, lengths, vocab, sa_sample=sa_sample, progress=progress)
    return index.save(out), index.params()


def _ordered_map(pool: ProcessPoolExecutor, fn: Any, items: Iterator[Any], window: int) -> Iterator[Any]:
    """``fn`` over ``items`` in ``pool``, results in input order, at most ``window`` in flight (a dead worker
    raises ``BrokenProcessPool`` instead of hanging)."""
    pending: collections.deque[Future] = collections.deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _mp_context() -> Any:
    """``fork`` when this process runs no other Python thread (the children inherit the loaded tokenizer and
    need no importable ``__main__``), else ``spawn`` (safe next to threads)."""
    if "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _mem_available() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def _batches(store: UnitStore) -> Iterator[tuple[list[str], list[str]]]:
    next_id = 0
    for batch in store.iter_units(batch=_BATCH):
        for u in batch:
            if u.unit_id != next_id:
                raise IndexFormatError(f"unit store ids are not dense: expected {next_id}, got {u.unit_id}")
            next_id += 1
        yield [u.title for u in batch], [u.text for u in batch]


def encode_range(store: UnitStore, start: int, stop: int,
                 config: FMConfig) -> tuple[Any, tuple[int, int, int], np.ndarray, np.ndarray]:
    """Units ``[start, stop)`` of ``store`` tokenized in this process as ``build_fm`` tokenizes them (one shard of a
    distributed build): the tokenizer, its ``(title_start_id, title_end_id, vocab_size)``, the flat tokens and the
    units' lengths."""
    tokenizer = unit_tokenizer(config.tokenizer)
    start_id, end_id, vocab = title_markers(tokenizer)
    dtype = token_dtype(vocab)
    encoder = UnitEncoder(tokenizer, lowercase=config.lowercase)  # the Rust backend, as build_fm's
    parts: list[np.ndarray] = []
    sizes: list[np.ndarray] = []
    for lo in range(start, stop, _BATCH):
        units = store.get(list(range(lo, min(stop, lo + _BATCH))))
        part, size = encode_units(encoder, (start_id, end_id), dtype, ([u.title for u in units],
                                                                        [u.text for u in units]))
        parts.append(part)
        sizes.append(size)
    lengths = np.concatenate(sizes) if sizes else np.zeros(0, np.int64)
    flat = np.concatenate(parts) if parts else np.zeros(0, dtype)
    return tokenizer, (start_id, end_id, vocab), flat, lengths


class _ShardWriter:
    """Collects tokenized units, cuts them into shards and builds each one (in a process pool or here)."""

    def __init__(self, fm_dir: Path, cuts: list[int], vocab: int, config: FMConfig, workers: int,
                 progress: bool) -> None:
        self.fm_dir, self.cuts, self.vocab, self.config, self.progress = fm_dir, cuts, vocab, config, progress
        self.parts: list[np.ndarray] = []
        self.lengths: list[np.ndarray] = []
        self.n_units = 0  # units received so far
        self.results: dict[int, Future | tuple[list[str], dict[str, Any]]] = {}
        self.pool = ProcessPoolExecutor(workers, mp_context=_mp_context()) \
            if workers > 1 and len(cuts) > 2 else None
        self.budget = 0.8 * _mem_available()
        self.running: dict[Future, int] = {}

    def add(self, flat: np.ndarray, lengths: np.ndarray) -> None:
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        k = 0
        while k < len(lengths):
            self.flush()  # complete the shards whose last unit has come (empty ones too)
            shard = len(self.results)
            take = min(len(lengths) - k, self.cuts[shard + 1] - self.n_units)
            self.parts.append(flat[offsets[k]:offsets[k + take]])
            self.lengths.append(lengths[k:k + take])
            self.n_units += take
            k += take

    def flush(self) -> None:
        while len(self.results) + 1 < len(self.cuts) and self.cuts[len(self.results) + 1] == self.n_units:
            i = len(self.results)
            lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int64)
            flat = np.concatenate(self.parts) if self.parts else np.zeros(0, np.int32)
            self.parts, self.lengths = [], []
            out = self.fm_dir / shard_dir(i)
            if self.pool is None:
                self.results[i] = build_shard(flat, lengths, self.vocab, self.config.sa_sample, out, self.progress)
                continue
            need = BUILD_BYTES_PER_TOKEN * max(len(flat), 1)
            while self.running and sum(self.running.values()) + need > self.budget:
                done, _ = wait(list(self.running), return_when="FIRST_COMPLETED")
                for f in done:
                    f.result()  # raise a builder's error now
                    del self.running[f]
            self.fm_dir.mkdir(parents=True, exist_ok=True)
            path = self.fm_dir / f".tokens-{i:03d}.npy"
            np.save(path, flat, allow_pickle=False)
            fut = self.pool.submit(_build_shard, str(path), lengths, self.vocab, self.config.sa_sample, str(out),
                                   False)
            self.running[fut] = need
            self.results[i] = fut

    def finish(self) -> list[tuple[list[str], dict[str, Any]]]:
        self.flush()
        try:
            return [r.result() if isinstance(r, Future) else r for _, r in sorted(self.results.items())]
        finally:
            if self.pool is not None:
                self.pool.shutdown()


def _workers(config: FMConfig, n_units: int | None) -> int:
    """Processes to tokenize and build with (``n_units`` None: not known yet, the count for a large corpus)."""
    workers = config.workers or (os.cpu_count() or 1)
    if config.workers is None and ((n_units is not None and n_units < _PARALLEL_MIN_UNITS)
                                   or workers <= _ONE_PROCESS_MAX_CPUS):
        workers = 1
    return workers


def unit_tokens(config: FMConfig) -> UnitTokens | None:
    """A stream that tokenizes the units as ``build_index`` reads the corpus (see ``UnitTokens``), for
    ``build_fm(..., tokens=)``; ``None`` where the build tokenizes in worker processes or cuts several shards
    (those read the unit store, one shard at a time).  It also loads the build's compiled kernels meanwhile."""
    if config.shards != 1 or _workers(config, None) != 1:
        return None
    tokenizer = unit_tokenizer(config.tokenizer)
    start, end, vocab = title_markers(tokenizer)
    dtype = token_dtype(vocab)
    cpus = os.cpu_count() or 1
    threads = cpus if cpus <= _ONE_PROCESS_MAX_CPUS else 1  # more CPUs, workers=1: one batch on all of them
    return UnitTokens(tokenizer, (start, end), dtype, lowercase=config.lowercase, threads=threads,
                      warm=lambda: _warm_build_kernels(dtype, vocab, config.sa_sample))


def _warm_build_kernels(dtype: np.dtype, vocab: int, sa_sample: int) -> None:
    """Import numba and load (or compile) the kernels ``FMIndex.from_flat`` runs on a real corpus, by indexing
    a tiny one with as many distinct tokens (more than 256: 16-bit symbols): about 0.5 s that otherwise
    comes after tokenizing."""
    from ._index import FMIndex

    ids = np.arange(min(vocab, 400), dtype=dtype)
    FMIndex.from_flat(np.concatenate([ids, ids[::-1]]), np.array([len(ids), len(ids)]), vocab,
                      sa_sample=sa_sample)


def build_fm(store: UnitStore, out_dir: Path, config: FMConfig, progress: bool = True,
             tokens: UnitTokens | None = None) -> Component:
    """Tokenize every unit of ``store`` and write the (sharded) FM-index and the tokenizer under ``out_dir/fm``.

    ``tokens``: the units already tokenized while ``store`` was written (``unit_tokens(config)``, fed every
    unit); its ``build_seconds`` then count from the stream's start."""
    t0 = tokens.started if tokens is not None else time.perf_counter()
    tokenizer = tokens.tokenizer if tokens is not None else unit_tokenizer(config.tokenizer)
    start, end, vocab = title_markers(tokenizer)
    n_units = len(store)
    if tokens is not None and tokens.n_units != n_units:
        raise IndexFormatError(f"the tokenized units ({tokens.n_units}) are not the unit store's ({n_units})")
    cuts = [n_units * k // config.shards for k in range(config.shards + 1)]
    fm_dir = Path(out_dir) / FM_DIR
    dtype = token_dtype(vocab)
    workers = 1 if tokens is not None else _workers(config, n_units)
    writer = _ShardWriter(fm_dir, cuts, vocab, config, workers, progress)
    encoder = UnitEncoder(tokenizer, lowercase=config.lowercase) if tokens is None else None
    try:
        with progress_bar(n_units, "tokenizing units (fm)", progress) as bar:
            if tokens is not None:
                for flat, lengths in tokens.batches():
                    writer.add(flat, lengths)
                    bar.update(len(lengths))
            elif workers > 1:
                backend_json = encoder.backend.to_str() if encoder.backend is not None else None
                args = (backend_json, config.tokenizer, config.lowercase, (start, end), dtype.str)
                with ProcessPoolExecutor(workers, mp_context=_mp_context(), initializer=init_worker,
                                         initargs=args) as pool:
                    for flat, lengths in _ordered_map(pool, encode_batch, _batches(store), 2 * workers):
                        writer.add(flat, lengths)
                        bar.update(len(lengths))
            else:
                for batch in _batches(store):
                    flat, lengths = encode_units(encoder, (start, end), dtype, batch)
                    writer.add(flat, lengths)
                    bar.update(len(lengths))
        built = writer.finish()
    finally:
        if writer.pool is not None:
            writer.pool.shutdown(cancel_futures=True)
    names: list[str] = []
    shard_params: list[dict[str, Any]] = []
    for i, (files, params) in enumerate(built):
        names += [f"{FM_DIR}/{shard_dir(i)}/{n}" for n in files]
        shard_params.append({"dir": shard_dir(i), **params})
    tok_dir = Path(out_dir) / TOKENIZER_DIR
    tokenizer.save_pretrained(str(tok_dir))
    names += sorted(p.relative_to(out_dir).as_posix() for p in tok_dir.rglob("*") if p.is_file())
    n_tokens = sum(p["n_tokens"] for p in shard_params)
    seconds = time.perf_counter() - t0
    log.info("fm-index: %d units, %d tokens, %d shard(s), %d worker(s), %.1f s (%.2f M tokens/s)", n_units,
             n_tokens, config.shards, workers, seconds, n_tokens / max(seconds, 1e-9) / 1e6)
    return fm_component(Path(out_dir), config, tokenizer_size=len(tokenizer), markers=(start, end, vocab),
                        n_units=n_units, shard_params=shard_params, files=names, seconds=seconds)


def fm_component(out_dir: Path, config: FMConfig, *, tokenizer_size: int, markers: tuple[int, int, int],
                 n_units: int, shard_params: list[dict[str, Any]], files: list[str], seconds: float) -> Component:
    """The manifest entry of the FM-index written under ``out_dir``: ``markers`` ``(title_start_id, title_end_id,
    vocab_size)``, ``shard_params`` each shard's params with its folder, ``files`` relative to ``out_dir`` (the
    shards' and the tokenizer's)."""
    start, end, vocab = markers
    n_tokens = sum(p["n_tokens"] for p in shard_params)
    index_params = {"format": SHARDED_FORMAT, "vocab_size": vocab, "n_docs": n_units, "n_tokens": n_tokens,
                    "shards": shard_params}
    return Component(
        kind=FM_KIND, model=config.tokenizer,
        params={"tokenizer": config.tokenizer, "tokenizer_dir": TOKENIZER_DIR, "tokenizer_size": tokenizer_size,
                "vocab_size": vocab, "title_start_id": start, "title_end_id": end, "layout": LAYOUT,
                "lowercase": config.lowercase, "split_special_tokens": True, "sa_sample": config.sa_sample,
                "shards": config.shards, "n_docs": n_units, "n_tokens": n_tokens, "dir": FM_DIR,
                "index": index_params},
        files=file_entries(out_dir, files),
        build_seconds=round(seconds, 3),
    )


def load_fm(index_dir: str | Path, component: Component, *, mmap: bool = True,
            lazy: bool = False) -> FMIndex | ShardedFMIndex:
    """Open the component's FM-index (one shard: ``FMIndex``); ``IndexFormatError`` if arrays and params differ."""
    if component.kind != FM_KIND:
        raise IndexFormatError(f"component kind {component.kind!r} is not {FM_KIND!r}")
    p = component.params
    try:
        index = load_any(Path(index_dir) / p["dir"], p["index"], mmap=mmap, lazy=lazy)
        expected = (p["vocab_size"], p["n_docs"], p["n_tokens"], p["shards"])
    except (KeyError, TypeError, AttributeError) as exc:
        raise IndexFormatError(f"{index_dir}: fm-index parameters are incomplete ({exc!r})") from None
    shards = len(index.shards) if isinstance(index, ShardedFMIndex) else 1
    if (index.vocab_size, index.n_docs, index.n_tokens, shards) != expected:
        raise IndexFormatError(f"{index_dir}: fm-index arrays do not match the manifest (vocab, docs, tokens, shards)")
    return index


def load_fm_tokenizer(index_dir: str | Path, component: Component) -> Any:
    """The tokenizer saved with the index (the one whose ids the index holds): read without transformers where
    that gives the same tokenizer (``fast_tokenizer``)."""
    folder = str(Path(index_dir) / component.params["tokenizer_dir"])
    fast = fast_tokenizer(folder)
    if fast is not None:
        return fast
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)
