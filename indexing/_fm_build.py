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

Files: ``fm/shard-NNN/*.npy`` (see ``_fm_index``) and ``fm/tokenizer/*`` (``save_pretrained``), all listed
in the component with size and sha256.  Shards hold contiguous unit-id ranges of about equal size.

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
import itertools
import json
import logging
import multiprocessing
import os
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ._errors import IndexFormatError
from ._fm_index import SA_SAMPLE, FMIndex
from ._fm_shards import SHARDED_FORMAT, ShardedFMIndex, load_any, shard_dir
from ._manifest import Component, file_entries
from ._models import DEFAULT_LM, load_tokenizer, resolve_checkpoint
from ._progress import progress_bar
from ._store import UnitStore

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


def title_markers(tokenizer: Any) -> tuple[int, int, int]:
    """``(title_start_id, title_end_id, index_vocab_size)`` for a tokenizer (see the module docstring)."""
    n = len(tokenizer)
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    end = tokenizer.eos_token_id if tokenizer.eos_token_id not in (None, start) else tokenizer.sep_token_id
    vocab = n
    if start is None:
        start, vocab = vocab, vocab + 1
    if end is None or end == start:
        end, vocab = vocab, vocab + 1
    return int(start), int(end), max(vocab, int(start) + 1, int(end) + 1)


def encode_texts(tokenizer: Any, texts: Sequence[str], *, lowercase: bool = False) -> list[list[int]]:
    """Token ids of ``texts`` exactly as the index encodes titles and texts (no special tokens added)."""
    if not texts:
        return []
    texts = [t.lower() for t in texts] if lowercase else list(texts)
    return tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def unit_token_ids(tokenizer: Any, params: dict[str, Any], title: str, text: str) -> list[int]:
    """A unit's token ids exactly as indexed (``params``: the component's): its n-grams are its windows."""
    title_ids, text_ids = encode_texts(tokenizer, [title, text], lowercase=params["lowercase"])
    return [params["title_start_id"], *title_ids, params["title_end_id"], *text_ids]


_FAST_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")  # transformers' plain tokenizers.Tokenizer wrappers
_NAMED_TOKENS = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
_FAST_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


class FastTokenizer:
    """What ``build_fm`` uses of a Hugging Face tokenizer (length, special token ids, Rust backend,
    ``save_pretrained``) read from its folder with the ``tokenizers`` package alone: no transformers import,
    which took 2.4 s of every build.  ``fast_tokenizer`` makes one only where transformers would load the same
    backend unchanged; ``tests/indexing/test_fm_build_parallel.py`` checks ids, length, markers and the saved
    folder against transformers."""

    is_fast = True

    def __init__(self, folder: Path, backend: Any, config: dict[str, Any]) -> None:
        self.folder, self.backend_tokenizer = folder, backend
        for name in _NAMED_TOKENS:
            tok = _token_content(config.get(f"{name}_token"))
            setattr(self, f"{name}_token_id", None if tok is None else backend.token_to_id(tok))

    def __len__(self) -> int:
        return self.backend_tokenizer.get_vocab_size(with_added_tokens=True)

    def save_pretrained(self, out: str) -> None:
        """Copy the tokenizer's files (what ``AutoTokenizer.from_pretrained`` loaded it from)."""
        Path(out).mkdir(parents=True, exist_ok=True)
        for name in _FAST_FILES:
            if (self.folder / name).is_file():
                shutil.copyfile(self.folder / name, Path(out) / name)


def _token_content(value: Any) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


def fast_tokenizer(spec: str) -> FastTokenizer | None:
    """``spec``'s tokenizer without transformers when transformers would only wrap its ``tokenizer.json``: a
    local folder (the packaged SmolLM2 once converted) whose ``tokenizer_config.json`` names a plain
    tokenizers-backed class, no ``special_tokens_map.json``/``added_tokens.json``, every named special token
    already an added token of the backend (transformers adds missing ones) and at most 100,000 ids
    (transformers may patch the pre-tokenizer of larger ones).  Else ``None``: use ``load_tokenizer``."""
    try:
        folder = Path(resolve_checkpoint(spec))
        if not (folder / "tokenizer.json").is_file() or not (folder / "tokenizer_config.json").is_file() or \
                (folder / "special_tokens_map.json").exists() or (folder / "added_tokens.json").exists():
            return None
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        if not isinstance(config, dict) or config.get("tokenizer_class") not in _FAST_CLASSES or \
                config.get("extra_special_tokens") or config.get("additional_special_tokens"):
            return None
        from tokenizers import Tokenizer

        backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
        if backend.get_vocab_size() > 100_000:
            return None
        added = {t.content for t in backend.get_added_tokens_decoder().values()}
        named = [_token_content(config.get(f"{name}_token")) for name in _NAMED_TOKENS]
        if any(t is not None and (not isinstance(t, str) or t not in added) for t in named):
            return None
        return FastTokenizer(folder, backend, config)
    except Exception:  # noqa: BLE001 - anything odd: transformers loads it (and reports its own errors)
        return None


BUILD_BYTES_PER_TOKEN = 16  # FMIndex.from_flat's peak (suffix-array phase, 16-bit symbols)
_BATCH = 1024
_PARALLEL_MIN_UNITS = 20_000  # below this, worker start-up (a tokenizer each) costs more than it saves
# On 2 CPUs the Rust tokenizer's own threads already use both and worker processes only add their start-up
# (measured: 2.6 s for scifact in one process, 5.6 s with 2 spawned workers): one process by default there.
_ONE_PROCESS_MAX_CPUS = 2
_worker: dict[str, Any] = {}


class _Encoder:
    """``encode_texts`` of one tokenizer, through its Rust backend when it has one (``tokenizers.Tokenizer``,
    rebuilt from its JSON in worker processes: no transformers import, and none of transformers' per-text
    conversion, which costs half as much as the tokenization itself); ``tests/indexing/test_fm_build_parallel``
    checks that both give the same ids."""

    def __init__(self, tokenizer: Any = None, backend_json: str | None = None, lowercase: bool = False) -> None:
        self.lowercase = lowercase
        self.tokenizer = tokenizer
        self.backend = None
        if backend_json is not None:
            from tokenizers import Tokenizer

            self.backend = Tokenizer.from_str(backend_json)
        elif isinstance(tokenizer, FastTokenizer):
            self.backend = tokenizer.backend_tokenizer  # its own, read from the file
        elif getattr(tokenizer, "is_fast", False):
            from tokenizers import Tokenizer

            self.backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())  # a private copy
        if self.backend is not None:
            self.backend.encode_special_tokens = True  # = split_special_tokens=True

    def __call__(self, texts: list[str]) -> list[list[int]]:
        if self.backend is None:
            return encode_texts(self.tokenizer, texts, lowercase=self.lowercase)
        if not texts:
            return []
        texts = [t.lower() for t in texts] if self.lowercase else texts
        encode = getattr(self.backend, "encode_batch_fast", self.backend.encode_batch)  # fast: no offsets
        return [e.ids for e in encode(texts, add_special_tokens=False)]


def _init_worker(backend_json: str | None, spec: str, lowercase: bool, markers: tuple[int, int],
                 dtype: str) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per worker: the workers are the parallelism
    encoder = _Encoder(load_tokenizer(spec) if backend_json is None else None, backend_json, lowercase)
    _worker.update(encoder=encoder, markers=markers, dtype=np.dtype(dtype))


def _encode_units(encoder: _Encoder, markers: tuple[int, int], dtype: np.dtype,
                  batch: tuple[list[str], list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """One batch of units (titles, texts) -> (concatenated token ids in the unit layout, per-unit lengths)."""
    titles, texts = batch
    n = len(titles)
    uniq = list(dict.fromkeys(titles))  # a page's paragraphs share its title: tokenize it once
    ids = encoder(uniq + texts)
    if len(uniq) < n:
        first = {t: k for k, t in enumerate(uniq)}
        ids = [ids[first[t]] for t in titles] + ids[len(uniq):]
    tl = np.fromiter(map(len, ids[:n]), np.int64, n)
    xl = np.fromiter(map(len, ids[n:]), np.int64, n)
    lengths = tl + xl + 2
    ends = np.cumsum(lengths)
    starts = ends - lengths
    out = np.empty(int(ends[-1]) if n else 0, dtype)
    out[starts] = markers[0]
    out[starts + tl + 1] = markers[1]
    for part, sizes, first in ((ids[:n], tl, starts + 1), (ids[n:], xl, starts + tl + 2)):
        total = int(sizes.sum())
        if total:
            flat = np.fromiter(itertools.chain.from_iterable(part), dtype, total)
            out[np.repeat(first - (np.cumsum(sizes) - sizes), sizes) + np.arange(total)] = flat
    return out, lengths


def _encode_batch(batch: tuple[list[str], list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """``_encode_units`` in a worker process (its encoder made once by ``_init_worker``)."""
    return _encode_units(_worker["encoder"], _worker["markers"], _worker["dtype"], batch)


def _build_shard(tokens_path: str, lengths: np.ndarray, vocab: int, sa_sample: int, out: str,
                 progress: bool) -> tuple[list[str], dict[str, Any]]:
    tokens = np.load(tokens_path)
    os.unlink(tokens_path)
    index = FMIndex.from_flat(tokens, lengths, vocab, sa_sample=sa_sample, progress=progress)
    del tokens
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
                index = FMIndex.from_flat(flat, lengths, self.vocab, sa_sample=self.config.sa_sample,
                                          progress=self.progress)
                self.results[i] = (index.save(out), index.params())
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


def build_fm(store: UnitStore, out_dir: Path, config: FMConfig, progress: bool = True) -> Component:
    """Tokenize every unit of ``store`` and write the (sharded) FM-index and the tokenizer under ``out_dir/fm``."""
    t0 = time.perf_counter()
    tokenizer = fast_tokenizer(config.tokenizer) or load_tokenizer(config.tokenizer)
    start, end, vocab = title_markers(tokenizer)
    n_units = len(store)
    cuts = [n_units * k // config.shards for k in range(config.shards + 1)]
    fm_dir = Path(out_dir) / FM_DIR
    dtype = np.dtype(np.uint16 if vocab <= 65536 else np.int32)
    workers = config.workers or (os.cpu_count() or 1)
    if config.workers is None and (n_units < _PARALLEL_MIN_UNITS or workers <= _ONE_PROCESS_MAX_CPUS):
        workers = 1
    writer = _ShardWriter(fm_dir, cuts, vocab, config, workers, progress)
    encoder = _Encoder(tokenizer, lowercase=config.lowercase)
    backend_json = encoder.backend.to_str() if encoder.backend is not None and workers > 1 else None
    args = (backend_json, config.tokenizer, config.lowercase, (start, end), dtype.str)
    try:
        with progress_bar(n_units, "tokenizing units (fm)", progress) as bar:
            if workers > 1:
                with ProcessPoolExecutor(workers, mp_context=_mp_context(), initializer=_init_worker,
                                         initargs=args) as pool:
                    for flat, lengths in _ordered_map(pool, _encode_batch, _batches(store), 2 * workers):
                        writer.add(flat, lengths)
                        bar.update(len(lengths))
            else:
                for batch in _batches(store):
                    flat, lengths = _encode_units(encoder, (start, end), dtype, batch)
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
    index_params = {"format": SHARDED_FORMAT, "vocab_size": vocab, "n_docs": n_units, "n_tokens": n_tokens,
                    "shards": shard_params}
    return Component(
        kind=FM_KIND, model=config.tokenizer,
        params={"tokenizer": config.tokenizer, "tokenizer_dir": TOKENIZER_DIR, "tokenizer_size": len(tokenizer),
                "vocab_size": vocab, "title_start_id": start, "title_end_id": end, "layout": LAYOUT,
                "lowercase": config.lowercase, "split_special_tokens": True, "sa_sample": config.sa_sample,
                "shards": config.shards, "n_docs": n_units, "n_tokens": n_tokens, "dir": FM_DIR,
                "index": index_params},
        files=file_entries(Path(out_dir), names),
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
    """The tokenizer saved with the index (the one whose ids the index holds)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(Path(index_dir) / component.params["tokenizer_dir"]))
