"""``build_fm`` with worker processes: the same index as in one process, shards cut at the same units."""

from __future__ import annotations

import json

import numpy as np
import pytest

from genret.indexing.fm import FMConfig, build_fm, load_fm
from genret.indexing.fm._build import _ShardWriter


def _arrays(path):
    return {p.relative_to(path).as_posix(): np.load(p) for p in sorted(path.rglob("*.npy"))}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from genret.indexing import Unit, UnitStore
    from genret.indexing._store import StoreWriter

    d = tmp_path_factory.mktemp("fmpar")
    writer = StoreWriter(d / "units.sqlite")
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "Tokyo", "café", "<|im_end|>", "🙂", "über", "1973"]
    for i in range(7):
        paras = [" ".join(rng.choice(words, int(rng.integers(0, 30)))) for _ in range(int(rng.integers(1, 4)))]
        writer.add(f"p{i}", f"Page {i}", len(paras), "mem", i + 1,
                   [Unit(f"p{i}", f"Page {i}", p + 1, 0, p + 1, len(t), t) for p, t in enumerate(paras)])
    writer.close()
    s = UnitStore(d / "units.sqlite")
    yield s
    s.close()


@pytest.mark.slow
def test_workers_build_the_same_index(store, tmp_path, monkeypatch):
    import genret.indexing.fm._build as fb

    monkeypatch.setattr(fb, "_BATCH", 3)  # several batches, straddling the shard cuts
    one = build_fm(store, tmp_path / "one", FMConfig(shards=3, workers=1, sa_sample=2), progress=False)
    two = build_fm(store, tmp_path / "two", FMConfig(shards=3, workers=2, sa_sample=2), progress=False)
    assert json.dumps(one.params, sort_keys=True) == json.dumps(two.params, sort_keys=True)
    a, b = _arrays(tmp_path / "one" / "fm"), _arrays(tmp_path / "two" / "fm")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert not list((tmp_path / "two" / "fm").glob(".tokens-*"))
    index = load_fm(tmp_path / "two", two)
    assert index.n_docs == len(store)


def test_shard_writer_cuts_batches_and_empty_shards(tmp_path):
    cfg = FMConfig(shards=4, sa_sample=1)
    writer = _ShardWriter(tmp_path, [0, 0, 2, 5, 5], 10, cfg, 1, False)
    writer.add(np.array([1, 2, 3, 4], np.uint16), np.array([1, 3]))
    writer.add(np.array([5, 6, 7], np.uint16), np.array([0, 2, 1]))
    built = writer.finish()
    assert [p["n_docs"] for _, p in built] == [0, 2, 3, 0]
    assert [p["n_tokens"] for _, p in built] == [0, 4, 3, 0]


@pytest.mark.slow
@pytest.mark.parametrize("lowercase", [False, True])
def test_backend_encoder_equals_encode_texts(lowercase):
    from genret.core import load_tokenizer
    from genret.indexing.fm import encode_texts
    from genret.indexing.fm._tokens import UnitEncoder, encode_units

    tok = load_tokenizer("smollm2-135m-instruct")
    texts = ["Le café <|im_end|> «x»", " <|im_start|>user", "", "  spaces  ", "東京 🙂 Köln", "A\\nB\\tC",
             "<|endoftext|>"]
    want = encode_texts(tok, texts, lowercase=lowercase)
    enc = UnitEncoder(tok, lowercase=lowercase)
    assert enc.backend is not None and enc(texts) == want
    assert UnitEncoder(None, enc.backend.to_str(), lowercase)(texts) == want  # as rebuilt in a worker
    flat, lengths = encode_units(enc, (1, 2), np.dtype(np.uint16), (texts[:3], texts[3:6]))
    docs = [[1, *want[k], 2, *want[3 + k]] for k in range(3)]
    assert lengths.tolist() == [len(d) for d in docs] and flat.tolist() == sum(docs, [])
    titles = [texts[0], texts[4], texts[0], texts[0]]  # repeated titles are tokenized once, placed at each unit
    flat, lengths = encode_units(enc, (1, 2), np.dtype(np.uint16), (titles, texts[1:5]))
    docs = [[1, *want[t], 2, *want[1 + k]] for k, t in enumerate([0, 4, 0, 0])]
    assert lengths.tolist() == [len(d) for d in docs] and flat.tolist() == sum(docs, [])


@pytest.mark.slow
@pytest.mark.parametrize("lowercase", [False, True])
def test_fast_tokenizer_equals_transformers(tmp_path, lowercase):
    """The tokenizer read with the tokenizers package alone gives the ids, length and markers of transformers'
    one, and the folder it saves loads (with transformers) into the same tokenizer."""
    from genret.core import load_tokenizer
    from genret.indexing.fm import encode_texts
    from genret.indexing.fm._tokens import FastTokenizer, UnitEncoder, fast_tokenizer, title_markers

    tok = load_tokenizer("smollm2-135m-instruct")
    fast = fast_tokenizer("smollm2-135m-instruct")
    assert isinstance(fast, FastTokenizer)
    texts = ["Le café <|im_end|> «x»", " <|im_start|>user", "", "  spaces  ", "東京 🙂 Köln", "A\\nB\\tC",
             "<|endoftext|>", "The Eiffel Tower, 1889: 324 m."]
    assert UnitEncoder(fast, lowercase=lowercase)(texts) == encode_texts(tok, texts, lowercase=lowercase)
    assert len(fast) == len(tok) and title_markers(fast) == title_markers(tok) == (1, 2, len(tok))
    for name in ("bos", "eos", "unk", "pad", "cls", "sep", "mask"):
        assert getattr(fast, f"{name}_token_id") == getattr(tok, f"{name}_token_id"), name
    fast.save_pretrained(str(tmp_path / "tok"))
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert len(again) == len(tok) and encode_texts(again, texts) == encode_texts(tok, texts)


def test_fast_tokenizer_falls_back(tmp_path):
    """Folders transformers would not load as they are get None (then transformers loads them)."""
    from genret.indexing.fm._tokens import fast_tokenizer

    assert fast_tokenizer(str(tmp_path / "missing")) is None
    (tmp_path / "tokenizer.json").write_text("{}")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer"}))
    assert fast_tokenizer(str(tmp_path)) is None  # a model-specific class
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "TokenizersBackend"}))
    assert fast_tokenizer(str(tmp_path)) is None  # an unreadable tokenizer.json
