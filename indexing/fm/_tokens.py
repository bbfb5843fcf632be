"""Tokenizing units for the FM-index: the unit layout's token ids (``encode_texts``, ``unit_token_ids``,
``title_markers``), the tokenizer read without transformers (``FastTokenizer``), batch encoding through the Rust
backend (``UnitEncoder``, ``encode_units``; ``init_worker``/``encode_batch`` in worker processes), and
``UnitTokens``, which tokenizes units while the corpus is still being read.

See ``_build`` for the unit layout and the build.
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ...core import load_tokenizer, resolve_checkpoint

log = logging.getLogger("genret")


def title_markers(tokenizer: Any) -> tuple[int, int, int]:
    """``(title_start_id, title_end_id, index_vocab_size)`` for a tokenizer (the unit layout: ``_build``)."""
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
    """What ``build_fm`` and the generative retriever use of a Hugging Face tokenizer (length, special tokens,
    encoding and decoding, the vocabulary, the Rust backend, ``save_pretrained``) read from its folder with the
    ``tokenizers`` package alone: no transformers import, which took 2.4 s of every build and most of a cold
    generative search.  ``fast_tokenizer`` makes one only where transformers would load the same backend
    unchanged; ``tests/indexing/fm/test_fm_build_parallel.py`` and ``tests/retrieval/generative/test_llama.py``
    check it against transformers."""

    is_fast = True

    def __init__(self, folder: Path, backend: Any, config: dict[str, Any]) -> None:
        self.folder, self.backend_tokenizer = folder, backend
        self._lock = threading.Lock()  # ``encode_special_tokens`` is the backend's state, set per call
        for name in _NAMED_TOKENS:
            tok = _token_content(config.get(f"{name}_token"))
            setattr(self, f"{name}_token", tok)
            setattr(self, f"{name}_token_id", None if tok is None else backend.token_to_id(tok))

    def __len__(self) -> int:
        return self.backend_tokenizer.get_vocab_size(with_added_tokens=True)

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name.endswith("_token") and name[:-6] in _NAMED_TOKENS and "backend_tokenizer" in self.__dict__:
            super().__setattr__(name + "_id", None if value is None else self.backend_tokenizer.token_to_id(value))

    def __call__(self, texts: str | Sequence[str], add_special_tokens: bool = True,
                 split_special_tokens: bool = False) -> dict[str, Any]:
        """``{"input_ids": ...}`` of one text or a batch, as transformers' tokenizer call gives them."""
        batch = [texts] if isinstance(texts, str) else list(texts)
        with self._lock:
            self.backend_tokenizer.encode_special_tokens = split_special_tokens
            encoded = self.backend_tokenizer.encode_batch(batch, add_special_tokens=add_special_tokens)
        ids = [e.ids for e in encoded]
        return {"input_ids": ids[0] if isinstance(texts, str) else ids}

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self.backend_tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def batch_decode(self, sequences: Sequence[Sequence[int]], skip_special_tokens: bool = False) -> list[str]:
        return self.backend_tokenizer.decode_batch([list(x) for x in sequences],
                                                   skip_special_tokens=skip_special_tokens)

    def get_vocab(self) -> dict[str, int]:
        return self.backend_tokenizer.get_vocab(with_added_tokens=True)

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
                config.get("extra_special_tokens") or config.get("additional_special_tokens") or \
                config.get("clean_up_tokenization_spaces"):
            return None
        from tokenizers import Tokenizer

        backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
        if backend.get_vocab_size() > 100_000 or backend.truncation or backend.padding:
            return None  # transformers switches a file's truncation and padding off unless asked
        added = {t.content for t in backend.get_added_tokens_decoder().values()}
        named = [_token_content(config.get(f"{name}_token")) for name in _NAMED_TOKENS]
        if any(t is not None and (not isinstance(t, str) or t not in added) for t in named):
            return None
        return FastTokenizer(folder, backend, config)
    except Exception:  # noqa: BLE001 - anything odd: transformers loads it (and reports its own errors)
        return None


def unit_tokenizer(spec: str) -> Any:
    """The tokenizer ``spec`` names, read without transformers where that gives the same ids
    (``fast_tokenizer``), else through transformers."""
    return fast_tokenizer(spec) or load_tokenizer(spec)


def token_dtype(vocab: int) -> np.dtype:
    """The dtype of the token ids of an index over ``vocab`` ids."""
    return np.dtype(np.uint16 if vocab <= 65536 else np.int32)


_worker: dict[str, Any] = {}


class UnitEncoder:
    """``encode_texts`` of one tokenizer, through its Rust backend when it has one (``tokenizers.Tokenizer``,
    rebuilt from its JSON in worker processes: no transformers import, and none of transformers' per-text
    conversion, which costs half as much as the tokenization itself); ``tests/indexing/fm/test_fm_build_parallel``
    checks that both give the same ids."""

    def __init__(self, tokenizer: Any = None, backend_json: str | None = None, lowercase: bool = False) -> None:
        self.lowercase = lowercase
        self.tokenizer = tokenizer
        self.backend = None
        if backend_json is not None:
            from tokenizers import Tokenizer

            self.backend = Tokenizer.from_str(backend_json)
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


def init_worker(backend_json: str | None, spec: str, lowercase: bool, markers: tuple[int, int],
                dtype: str) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per worker: the workers are the parallelism
    encoder = UnitEncoder(load_tokenizer(spec) if backend_json is None else None, backend_json, lowercase)
    _worker.update(encoder=encoder, markers=markers, dtype=np.dtype(dtype))


def encode_units(encoder: UnitEncoder, markers: tuple[int, int], dtype: np.dtype,
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


def encode_batch(batch: tuple[list[str], list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """``encode_units`` in a worker process (its encoder made once by ``init_worker``)."""
    return encode_units(_worker["encoder"], _worker["markers"], _worker["dtype"], batch)


class UnitTokens:
    """Tokenizes units while the corpus is read: ``add`` takes each page's units in unit-id order (as the unit
    store numbers them) and queues full batches to a thread, where the Rust tokenizer encodes them with the GIL
    released, so tokenizing overlaps reading the corpus and writing the store; ``batches`` then gives what
    ``encode_units`` would give over the store, in order.  ``threads`` > 1: that many batches are encoded at
    once, each by the Rust tokenizer on one thread (it sets ``TOKENIZERS_PARALLELISM=false`` until ``close``,
    unless the user set it); 1: one batch at a time, on the Rust tokenizer's own threads (on 2 CPUs, two threads
    were the fastest of the three ways, ``bench/README.md``). At most ``window`` batches (default: 2 per thread)
    wait (a slow tokenizer holds the reader back, and unencoded text does not pile up). ``warm``, when given, is run
    in another thread at the start (the build loads its compiled kernels there, off the critical path). ``close``
    stops it all; a stream is single-use."""

    def __init__(self, tokenizer: Any, markers: tuple[int, int], dtype: np.dtype, *, lowercase: bool = False,
                 batch: int = 1024, threads: int = 1, window: int | None = None, warm: Any = None) -> None:
        window = window or 2 * threads
        self._set_env = threads > 1 and "TOKENIZERS_PARALLELISM" not in os.environ
        if self._set_env:
            os.environ["TOKENIZERS_PARALLELISM"] = "false"  # read by the Rust tokenizer at every batch
        self.tokenizer, self.markers, self.dtype, self.batch, self.window = tokenizer, markers, dtype, batch, window
        self.encoder = UnitEncoder(tokenizer, lowercase=lowercase)
        self.started = time.perf_counter()
        self.n_units = 0
        self._titles: list[str] = []
        self._texts: list[str] = []
        self._done: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending: collections.deque[Future] = collections.deque()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="genret-fm-tokens")
        self._warm = threading.Thread(target=_run_quietly, args=(warm,), name="genret-fm-warm", daemon=True) \
            if warm is not None else None
        if self._warm is not None:
            self._warm.start()

    def add(self, title: str, texts: Iterable[str]) -> None:
        for text in texts:
            self._titles.append(title)
            self._texts.append(text)
            self.n_units += 1
        if len(self._texts) >= self.batch:
            self._submit()

    def _submit(self) -> None:
        if self._texts:
            batch, self._titles, self._texts = (self._titles, self._texts), [], []
            self._pending.append(self._pool.submit(encode_units, self.encoder, self.markers, self.dtype, batch))
        while len(self._pending) > self.window:
            self._done.append(self._pending.popleft().result())

    def batches(self) -> Iterable[tuple[np.ndarray, np.ndarray]]:
        """Every unit's tokens, batch by batch in unit order (``encode_units``'s output); once."""
        self._submit()
        done, self._done = self._done, []
        yield from done
        while self._pending:
            yield self._pending.popleft().result()
        if self._warm is not None:
            self._warm.join()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()
        self._done = []
        if self._set_env:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
            self._set_env = False


def _run_quietly(fn: Any) -> None:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - a warm-up only saves time; the build reports real errors itself
        log.debug("fm warm-up failed: %r", exc)
