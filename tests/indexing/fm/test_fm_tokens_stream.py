"""``UnitTokens``: ``build_index`` tokenizes units while it reads the corpus, and the FM-index it builds is the
one ``build_fm`` builds from the unit store alone."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest

from genret.core import InputError
from genret.indexing import IndexConfig, UnitStore, build_index
from genret.indexing.fm import FMConfig, build_fm, unit_tokens
from genret.indexing.fm._tokens import UnitEncoder, UnitTokens, encode_units, fast_tokenizer, title_markers

WORDS = ["alpha", "beta", "gamma", "delta", "Tokyo", "café", "<|im_end|>", "🙂", "über", "1973", "the", "of"]


def _corpus(path, pages=12, seed=0):
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(pages):
            paras = [" ".join(rng.choice(WORDS, int(rng.integers(1, 25)))) for _ in range(int(rng.integers(1, 5)))]
            fh.write(json.dumps({"wikipedia_id": f"p{i}", "wikipedia_title": f"Page {i} {WORDS[i % 12]}",
                                 "text": [f"Page {i}", *paras]}) + "\n")
    return path


def _arrays(path):
    return {p.relative_to(path).as_posix(): np.load(p) for p in sorted(path.rglob("*.npy"))}


@pytest.fixture(scope="module")
def tokenizer():
    from genret.core import DEFAULT_LM

    tok = fast_tokenizer(DEFAULT_LM)
    assert tok is not None
    return tok


@pytest.mark.parametrize("threads", [1, 2])
def test_stream_equals_encode_units_in_order(tokenizer, threads):
    start, end, _ = title_markers(tokenizer)
    dtype = np.dtype(np.uint16)
    rng = np.random.default_rng(1)
    pages = [(f"Title {i}", [" ".join(rng.choice(WORDS, int(rng.integers(0, 12)))) for _ in range(i % 4)])
             for i in range(40)]
    stream = UnitTokens(tokenizer, (start, end), dtype, batch=5, threads=threads, window=1)
    try:
        for title, texts in pages:
            stream.add(title, texts)
        got = list(stream.batches())
    finally:
        stream.close()
    titles = [t for t, texts in pages for _ in texts]
    texts = [x for _, xs in pages for x in xs]
    want_flat, want_lengths = encode_units(UnitEncoder(tokenizer), (start, end), dtype, (titles, texts))
    assert stream.n_units == len(texts) == sum(len(b[1]) for b in got)
    assert np.array_equal(np.concatenate([b[0] for b in got]), want_flat)
    assert np.array_equal(np.concatenate([b[1] for b in got]), want_lengths)


def test_stream_sets_and_restores_tokenizer_threads(tokenizer, monkeypatch):
    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    stream = UnitTokens(tokenizer, (1, 2), np.dtype(np.uint16), threads=2)
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
    stream.close()
    assert "TOKENIZERS_PARALLELISM" not in os.environ
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")  # the user's setting is left alone
    stream = UnitTokens(tokenizer, (1, 2), np.dtype(np.uint16), threads=2)
    assert os.environ["TOKENIZERS_PARALLELISM"] == "true"
    stream.close()
    assert os.environ["TOKENIZERS_PARALLELISM"] == "true"


def test_build_index_tokenizes_while_reading_and_builds_the_same_index(tmp_path, monkeypatch):
    import genret.indexing.fm._build as fb

    corpus = _corpus(tmp_path / "corpus.jsonl")
    cfg = FMConfig(workers=1, sa_sample=2)
    seen = []
    real = fb.unit_tokens

    def spy(config):
        stream = real(config)
        seen.append(stream)
        return stream

    monkeypatch.setattr(fb, "unit_tokens", spy)
    import genret.indexing._build as bi

    monkeypatch.setitem(bi.EARLY_WORK, "fm", lambda c: fb.unit_tokens(c.fm))
    manifest = build_index(corpus, tmp_path / "idx", IndexConfig(components=("fm",), fm=cfg), progress=False)
    assert len(seen) == 1 and seen[0] is not None and seen[0].n_units == manifest.units.count
    store = UnitStore(tmp_path / "idx" / "units.sqlite")
    try:
        plain = build_fm(store, tmp_path / "plain", cfg, progress=False)
    finally:
        store.close()
    streamed = manifest.components["fm"]
    assert json.dumps(streamed.params, sort_keys=True) == json.dumps(plain.params, sort_keys=True)
    a, b = _arrays(tmp_path / "idx" / "fm"), _arrays(tmp_path / "plain" / "fm")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_no_stream_for_several_shards_or_worker_processes():
    assert unit_tokens(FMConfig(shards=2, workers=1)) is None
    assert unit_tokens(FMConfig(workers=2)) is None


def test_stream_count_must_match_the_store(tmp_path, tokenizer):
    corpus = _corpus(tmp_path / "corpus.jsonl", pages=3)
    build_index(corpus, tmp_path / "idx", IndexConfig(components=()), progress=False)
    stream = unit_tokens(FMConfig(workers=1))
    stream.add("A title", ["one unit only"])
    store = UnitStore(tmp_path / "idx" / "units.sqlite")
    try:
        with pytest.raises(Exception, match="tokenized units"):
            build_fm(store, tmp_path / "fm", FMConfig(workers=1), progress=False, tokens=stream)
    finally:
        store.close()
        stream.close()


def test_bad_corpus_stops_the_stream_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    corpus = _corpus(tmp_path / "corpus.jsonl", pages=30)
    with open(corpus, "a", encoding="utf-8") as fh:
        fh.write("{not json\n")
    before = {t.name for t in threading.enumerate()}
    with pytest.raises(InputError):
        build_index(corpus, tmp_path / "idx", IndexConfig(components=("fm",), fm=FMConfig(workers=1)),
                    progress=False)
    assert not (tmp_path / "idx").exists()
    left = {t.name for t in threading.enumerate() if t.is_alive()} - before
    assert not [n for n in left if n.startswith("genret-fm-tokens")]
    assert "TOKENIZERS_PARALLELISM" not in os.environ
