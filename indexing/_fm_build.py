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
in the component with size and sha256.  Shards hold contiguous unit-id ranges of about equal size and are
built one after another (memory: one shard's tokens and suffix array at a time).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ._errors import IndexFormatError
from ._fm_index import FMIndex
from ._fm_shards import SHARDED_FORMAT, ShardedFMIndex, load_any, shard_dir
from ._manifest import Component, file_entries
from ._models import DEFAULT_LM, load_tokenizer
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
    sa_sample: int = Field(32, ge=1, description="suffix-array sampling rate: locate cost vs 8/sa_sample bytes/token")
    lowercase: bool = Field(False, description="lowercase titles and texts (and queries) before tokenizing")


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


def build_fm(store: UnitStore, out_dir: Path, config: FMConfig, progress: bool = True) -> Component:
    """Tokenize every unit of ``store`` and write the (sharded) FM-index and the tokenizer under ``out_dir/fm``."""
    t0 = time.perf_counter()
    tokenizer = load_tokenizer(config.tokenizer)
    start, end, vocab = title_markers(tokenizer)
    n_units = len(store)
    cuts = [n_units * k // config.shards for k in range(config.shards + 1)]
    fm_dir = Path(out_dir) / FM_DIR
    shard_params: list[dict[str, Any]] = []
    names: list[str] = []
    pending: list[np.ndarray] = []
    dtype = np.uint16 if vocab <= 65536 else np.int32
    next_id = 0

    def flush() -> None:
        lengths = np.array([len(d) for d in pending], dtype=np.int64)
        flat = np.concatenate(pending) if pending else np.zeros(0, dtype)
        index = FMIndex.from_flat(flat, lengths, vocab, sa_sample=config.sa_sample, progress=progress)
        sub = shard_dir(len(shard_params))
        names.extend(f"{FM_DIR}/{sub}/{n}" for n in index.save(fm_dir / sub))
        shard_params.append({"dir": sub, **index.params()})
        pending.clear()

    with progress_bar(n_units, "tokenizing units (fm)", progress) as bar:
        for batch in store.iter_units(batch=1024):
            ids = encode_texts(tokenizer, [u.title for u in batch] + [u.text for u in batch],
                               lowercase=config.lowercase)
            for k, u in enumerate(batch):
                if u.unit_id != next_id:
                    raise IndexFormatError(f"unit store ids are not dense: expected {next_id}, got {u.unit_id}")
                while next_id == cuts[len(shard_params) + 1]:  # the current shard is complete
                    flush()
                pending.append(np.array([start, *ids[k], end, *ids[len(batch) + k]], dtype=dtype))
                next_id += 1
            bar.update(len(batch))
    while len(shard_params) < config.shards:  # the last shard (and any left empty)
        flush()
    tok_dir = Path(out_dir) / TOKENIZER_DIR
    tokenizer.save_pretrained(str(tok_dir))
    names += sorted(p.relative_to(out_dir).as_posix() for p in tok_dir.rglob("*") if p.is_file())
    n_tokens = sum(p["n_tokens"] for p in shard_params)
    log.info("fm-index: %d units, %d tokens, %d shard(s)", n_units, n_tokens, config.shards)
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
        build_seconds=round(time.perf_counter() - t0, 3),
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
