"""FM-index: every primitive against brute-force n-gram counting, persistence, sharding, the component."""

from __future__ import annotations

import json
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genret.core import IndexFormatError
from genret.indexing.fm._index import FM_FORMAT, FMIndex
from genret.indexing.fm._shards import ShardedFMIndex, split_balanced

MAX_N = 4  # longest n-gram checked exhaustively


class Brute:
    """Every n-gram (n <= MAX_N + 1) of a corpus with its occurrences, counted the obvious way."""

    def __init__(self, docs: list[list[int]]) -> None:
        self.docs = docs
        self.occ: dict[tuple[int, ...], list[tuple[int, int]]] = defaultdict(list)
        for d, doc in enumerate(docs):
            for i in range(len(doc)):
                for j in range(i + 1, min(len(doc), i + MAX_N + 1) + 1):
                    self.occ[tuple(doc[i:j])].append((d, i))

    def count(self, g: tuple[int, ...]) -> int:
        return sum(len(d) for d in self.docs) if not g else len(self.occ.get(g, []))

    def next_tokens(self, g: tuple[int, ...]) -> dict[int, int]:
        if not g:
            return dict(Counter(t for doc in self.docs for t in doc))
        out: Counter = Counter()
        for d, i in self.occ.get(g, []):
            if i + len(g) < len(self.docs[d]):
                out[self.docs[d][i + len(g)]] += 1
        return dict(out)

    def locate(self, g: tuple[int, ...]) -> list[tuple[int, int]]:
        if not g:
            return [(d, i) for d, doc in enumerate(self.docs) for i in range(len(doc))]
        return sorted(self.occ.get(g, []))


def queries(docs: list[list[int]], vocab: int) -> list[tuple[int, ...]]:
    """Every n-gram of the corpus, n-grams across each boundary, and some that cannot occur."""
    grams = {()}
    for doc in docs:
        for i in range(len(doc)):
            for j in range(i + 1, min(len(doc), i + MAX_N) + 1):
                grams.add(tuple(doc[i:j]))
    for a, b in zip(docs, docs[1:]):  # would only match across the boundary
        if a and b:
            grams.update({(a[-1], b[0]), tuple(a[-2:] + b[:2])})
    grams.update({(vocab,), (vocab + 7, 0), (-1,), (0, vocab), (0,) * (MAX_N + 1), (1, 0, 1)})
    return sorted(grams)


def check_index(index, docs: list[list[int]], vocab: int) -> None:
    brute = Brute(docs)
    assert index.n_docs == len(docs) and index.n_tokens == sum(map(len, docs)) and index.vocab_size == vocab
    for d, doc in enumerate(docs):
        assert index.doc_length(d) == len(doc)
    grams = queries(docs, vocab)
    for g in grams:
        assert index.count(g) == brute.count(g), g
        tokens, counts = index.next_tokens(g)
        assert tokens.dtype == np.int64 and counts.dtype == np.int64
        assert list(tokens) == sorted(tokens)
        assert dict(zip(tokens.tolist(), counts.tolist())) == brute.next_tokens(g), g
        assert index.locate(g) == brute.locate(g), g
        assert index.doc_counts(g) == dict(Counter(d for d, _ in brute.locate(g))), g
        # range API: one token at a time from the root
        rng = index.root()
        for t in g:
            rng = index.extend(rng, t)
        assert rng == index.range_of(g)
        assert index.count_range(rng) == brute.count(g)
        t2, c2 = index.next_tokens_of_range(rng)
        assert t2.tolist() == tokens.tolist() and c2.tolist() == counts.tolist()
        for limit in (0, 1, 3):
            part = index.locate(g, limit=limit)
            assert len(part) == min(limit, brute.count(g)) and part == sorted(part)
            assert set(part) <= set(brute.locate(g))
            assert sum(index.doc_counts(g, limit=limit).values()) == len(part)
    # batched variants
    assert index.count_many(grams).tolist() == [brute.count(g) for g in grams]
    assert index.locate_many(grams) == [brute.locate(g) for g in grams]
    assert [dict(zip(t.tolist(), c.tolist())) for t, c in index.next_tokens_many(grams)] == \
        [brute.next_tokens(g) for g in grams]
    assert index.doc_counts_many(grams, limit=2) == [index.doc_counts(g, limit=2) for g in grams]


def corpus(alphabet: int, max_docs: int = 6, max_len: int = 14):
    return st.lists(st.lists(st.integers(0, alphabet - 1), max_size=max_len), max_size=max_docs)


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(docs=corpus(3), sample=st.sampled_from([1, 2, 3, 32]))
def test_small_alphabet_matches_brute_force(docs, sample):
    check_index(FMIndex.build(docs, 3, sa_sample=sample), docs, 3)


@SETTINGS
@given(docs=st.lists(st.lists(st.sampled_from([0, 5, 65535, 65536, 70001, 99999]), max_size=10), max_size=5),
       sample=st.sampled_from([1, 4]))
def test_vocab_beyond_16_bits(docs, sample):
    check_index(FMIndex.build(docs, 100_000, sa_sample=sample), docs, 100_000)


def test_24_bit_symbols_and_dtype_paths(tmp_path):
    rng = np.random.default_rng(3)
    ids = rng.permutation(200_000)[:72_000]  # > 65536 distinct ids: 24-bit BWT
    docs = [ids[i:i + 60].tolist() for i in range(0, len(ids), 60)]
    docs += [docs[5], docs[17][:30]]  # some repeats
    index = FMIndex.build(docs, 200_000, sa_sample=8)
    assert index.params()["n_levels"] == 17 and index.n_symbols > 65536
    names = index.save(tmp_path)
    assert "wm_bits.npy" in names and np.load(tmp_path / "hot_bytes.npy").dtype == np.uint8
    loaded = FMIndex.load(tmp_path, index.params())
    for d in (0, 17, 1199, 1200):
        g = docs[d][10:13]
        assert loaded.count(g) == index.count(g) >= 1
        assert (d, 10) in loaded.locate(g)
        tokens, _ = loaded.next_tokens(docs[d][10:11])
        assert docs[d][11] in tokens.tolist()
    t, c = loaded.next_tokens([])
    assert int(c.sum()) == 72_000 + 90 and loaded.count(docs[17][:30]) == 2


@SETTINGS
@given(docs=corpus(300, max_docs=4, max_len=20))
def test_larger_alphabet(docs):
    check_index(FMIndex.build(docs, 300, sa_sample=5), docs, 300)


def test_edge_corpora():
    cases = [
        [],  # no documents
        [[]],  # one empty document
        [[], [], []],
        [[7]],  # single-token documents
        [[7], [7], [3], []],
        [[1, 1, 1, 1, 1, 1, 1, 1]],  # repeated text: overlapping occurrences
        [[1, 2] * 30, [2, 1] * 30],  # ranges larger than the small-range paths
        [[0, 1, 2], [3, 4], [2, 3], [4, 0]],  # (2, 3) occurs inside doc 2 only; (4, 0)... never across
    ]
    for docs in cases:
        check_index(FMIndex.build(docs, 8, sa_sample=3), docs, 8)


def test_boundary_ngrams_never_match():
    docs = [[1, 2, 3], [4, 5, 6]]
    index = FMIndex.build(docs, 10)
    assert index.count([3, 4]) == 0 and index.count([2, 3, 4, 5]) == 0
    assert index.next_tokens([3])[0].tolist() == [] and index.next_tokens([6])[0].tolist() == []
    assert index.count([3]) == 1 and index.locate([4, 5]) == [(1, 0)]


def test_large_ranges_use_every_next_token_path():
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 200, 500).tolist() for _ in range(40)]  # 1-grams: ~100 rows < 202 symbols
    docs.append([9] * 300)  # (9,): ~400 rows > 202 symbols
    check_big = Brute(docs)
    index = FMIndex.build(docs, 250)
    for g in [(9,), (9, 9), (3,), (3, 4), (199,), (), (9, 9, 9, 9)] + [tuple(d[5:7]) for d in docs]:
        t, c = index.next_tokens(g)
        assert dict(zip(t.tolist(), c.tolist())) == check_big.next_tokens(g)
        assert index.count(g) == check_big.count(g)
    assert index.locate([9, 9, 9], limit=5) == sorted(index.locate([9, 9, 9], limit=5))
    assert len(index.locate([9, 9, 9])) == 298


def test_unknown_tokens_are_absent_not_errors():
    index = FMIndex.build([[1, 2, 3]], 5)
    for g in ([5], [-3], [10**9], [4], [1, 7], [1, 4]):
        assert index.count(g) == 0 and index.locate(g) == [] and index.doc_counts(g) == {}
        t, c = index.next_tokens(g)
        assert len(t) == len(c) == 0
        assert index.extend(index.range_of(g), 1)[:2] == (0, 0)


def test_build_rejects_bad_input():
    with pytest.raises(ValueError):
        FMIndex.build([[1, 5]], 5)
    with pytest.raises(ValueError):
        FMIndex.build([[-1]], 5)
    with pytest.raises(ValueError):
        FMIndex.from_flat(np.array([1, 2]), np.array([3]), 5)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=corpus(4, max_docs=7), shards=st.sampled_from([2, 3]))
def test_sharded_equals_unsharded(docs, shards):
    one = FMIndex.build(docs, 4, sa_sample=2)
    many = ShardedFMIndex.build(docs, 4, shards, sa_sample=3)
    assert len(many.shards) == shards
    check_index(many, docs, 4)
    for g in queries(docs, 4):
        a, b = many.next_tokens(g), one.next_tokens(g)
        assert a[0].tolist() == b[0].tolist() and a[1].tolist() == b[1].tolist()
        assert many.locate(g) == one.locate(g) and many.doc_counts(g) == one.doc_counts(g)
        assert many.count_range(many.range_of(g)) == one.count(g)


def test_split_balanced():
    assert split_balanced([10, 10, 10, 10], 2) == [(0, 2), (2, 4)]
    assert split_balanced([], 3) == [(0, 0), (0, 0), (0, 0)]
    spans = split_balanced([1] * 10, 3)
    assert spans[0][0] == 0 and spans[-1][1] == 10 and all(a <= b for a, b in spans)


def _corpus_index(sample=4):
    rng = np.random.default_rng(7)
    docs = [rng.integers(0, 30, int(rng.integers(0, 40))).tolist() for _ in range(50)]
    return docs, FMIndex.build(docs, 30, sa_sample=sample)


@pytest.mark.parametrize("mmap", [True, False])
def test_save_load_round_trip(tmp_path, mmap):
    docs, index = _corpus_index()
    names = index.save(tmp_path)
    assert all((tmp_path / n).is_file() for n in names)
    params = json.loads(json.dumps(index.params()))  # as stored in the manifest
    loaded = FMIndex.load(tmp_path, params, mmap=mmap)
    assert all(isinstance(a, np.memmap) == mmap for a in loaded._a.values() if a.size)
    for g in queries(docs, 30)[:300]:
        assert loaded.count(g) == index.count(g)
        assert loaded.locate(g) == index.locate(g)
        assert [x.tolist() for x in loaded.next_tokens(g)] == [x.tolist() for x in index.next_tokens(g)]
    for name in names:
        with open(tmp_path / name, "rb") as fh:
            assert b"pickle" not in fh.read(128) and b"object" not in fh.read(128)


def test_sharded_save_load(tmp_path):
    docs, _ = _corpus_index()
    many = ShardedFMIndex.build(docs, 30, 3)
    names = many.save(tmp_path)
    assert {n.split("/")[0] for n in names} == {"shard-000", "shard-001", "shard-002"}
    loaded = ShardedFMIndex.load(tmp_path, json.loads(json.dumps(many.params())))
    brute = Brute(docs)
    for g in queries(docs, 30)[::7]:
        assert loaded.count(g) == brute.count(g) and loaded.locate(g) == brute.locate(g)
        assert dict(zip(*(x.tolist() for x in loaded.next_tokens(g)))) == brute.next_tokens(g)


def test_load_rejects_mismatched_arrays(tmp_path):
    docs, index = _corpus_index()
    index.save(tmp_path)
    params = index.params()

    def fails(p=params, match="FM-index"):
        with pytest.raises(IndexFormatError, match=match):
            FMIndex.load(tmp_path, p)

    fails({**params, "n_rows": params["n_rows"] + 1})
    fails({**params, "format": "other"})
    fails({**params, "vocab_size": "x"})
    fails({k: v for k, v in params.items() if k != "n_docs"})
    fails({**params, "sample_width": params["sample_width"] + 1}, match="inconsistent")
    np.save(tmp_path / "C.npy", np.load(tmp_path / "C.npy")[::-1].copy())
    fails(match="inconsistent")
    index.save(tmp_path)
    np.save(tmp_path / "sample_pos.npy", np.zeros(3, np.uint32))
    fails(match=r"sample_pos.npy is uint32\[3\]")
    index.save(tmp_path)
    np.save(tmp_path / "wm_zeros.npy", np.load(tmp_path / "wm_zeros.npy") + 1)
    fails(match="inconsistent")
    index.save(tmp_path)
    (tmp_path / "wm_bits.npy").write_bytes(b"garbage")
    fails(match="corrupt")
    (tmp_path / "wm_bits.npy").unlink()
    fails(match="missing")
    index.save(tmp_path)
    np.save(tmp_path / "wm_bits.npy", np.array([object()]), allow_pickle=True)
    fails(match="corrupt|expected")


def test_sharded_load_rejects_bad_params(tmp_path):
    docs, _ = _corpus_index()
    many = ShardedFMIndex.build(docs, 30, 2)
    many.save(tmp_path)
    p = many.params()
    for bad in ({**p, "n_docs": 3}, {**p, "format": "x"}, {**p, "shards": []},
                {**p, "shards": [{**p["shards"][0], "dir": "../x"}]}):
        with pytest.raises(IndexFormatError):
            ShardedFMIndex.load(tmp_path, bad)


# -- the component, with the real packaged tokenizer ----------------------------------------------------------

PAGES = [
    ("p1", "Café society", ["Le café est une boisson. Naïve façade — «guillemets».",
                            "東京 is Tokyo; 東京 has cafés."]),
    ("p2", "Ωmega <|im_end|> test", ["Emoji 🙂 and ümlauts: über, Köln. Literal <|im_start|> stays text."]),
    ("p3", "Tokyo", ["Tokyo is a city. Tokyo is large."]),
]


@pytest.fixture(scope="module")
def tokenizer():
    from genret.core import load_tokenizer

    return load_tokenizer("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def fm_store(tmp_path_factory):
    from genret.indexing import Unit, UnitStore
    from genret.indexing._store import StoreWriter

    d = tmp_path_factory.mktemp("fmstore")
    writer = StoreWriter(d / "units.sqlite")
    for i, (pid, title, paras) in enumerate(PAGES):
        writer.add(pid, title, len(paras), "mem", i + 1,
                   [Unit(pid, title, p + 1, 0, p + 1, len(t), t) for p, t in enumerate(paras)])
    writer.close()
    store = UnitStore(d / "units.sqlite")
    yield store
    store.close()


@pytest.mark.slow
@pytest.mark.parametrize("shards", [1, 2])
def test_build_fm_component_with_real_tokenizer(fm_store, tokenizer, tmp_path, shards):
    from genret.indexing import Component
    from genret.indexing.fm import FMConfig, build_fm, encode_texts, load_fm, load_fm_tokenizer
    from genret.indexing.fm._tokens import unit_token_ids

    comp = build_fm(fm_store, tmp_path, FMConfig(shards=shards, sa_sample=4), progress=False)
    comp = Component.model_validate(json.loads(comp.model_dump_json()))  # survives the manifest
    p = comp.params
    assert comp.kind == "fm-index" and p["title_start_id"] == 1 and p["title_end_id"] == 2
    assert p["vocab_size"] == len(tokenizer) == 49152 and p["n_docs"] == len(fm_store) == 4
    for name, entry in comp.files.items():
        assert (tmp_path / name).stat().st_size == entry.size and len(entry.sha256) == 64
    assert "fm/tokenizer/tokenizer.json" in comp.files
    index = load_fm(tmp_path, comp)
    assert isinstance(index, FMIndex if shards == 1 else ShardedFMIndex)
    # brute force over the same token sequences
    units = [u for batch in fm_store.iter_units() for u in batch]
    docs = []
    for u in units:
        title, text = encode_texts(tokenizer, [u.title, u.text])
        docs.append([1, *title, 2, *text])
        assert unit_token_ids(tokenizer, p, u.title, u.text) == docs[-1]
    assert index.n_tokens == sum(map(len, docs))
    brute = Brute(docs)
    for g in list(brute.occ)[::3]:
        assert index.count(g) == brute.count(g) and index.locate(g) == brute.locate(g)
    # titles are constrained by [TITLE_START] ... [TITLE_END]
    for u_id, u in enumerate(units):
        title = encode_texts(tokenizer, [u.title])[0]
        rng = index.range_of([1, *title])
        assert index.count_range(rng) >= 1 and 2 in index.next_tokens_of_range(rng)[0].tolist()
        assert u_id in index.doc_counts([1, *title, 2])
    assert index.count([1]) == index.count([2]) == 4  # markers occur once per unit, never in text
    for text in [" Tokyo", "Tokyo", "東京", " 東京", " café", " 🙂", " über", " <|im_start|>", " façade"]:
        (ids,) = encode_texts(tokenizer, [text])
        assert 1 not in ids and 2 not in ids
        found = Brute(docs).locate(tuple(ids)) if len(ids) <= MAX_N + 1 else None
        if found is not None:
            assert index.locate(ids) == found and index.count(ids) == len(found) >= 1, text
    (tokyo,) = encode_texts(tokenizer, [" Tokyo"])
    assert index.count(tokyo) == 2  # "is Tokyo;" and ". Tokyo is large"
    assert encode_texts(load_fm_tokenizer(tmp_path, comp), ["Köln 🙂"]) == encode_texts(tokenizer, ["Köln 🙂"])


@pytest.mark.slow
def test_load_fm_rejects_mismatch(fm_store, tmp_path):
    from genret.indexing.fm import FMConfig, build_fm, load_fm

    comp = build_fm(fm_store, tmp_path, FMConfig(), progress=False)
    bad = comp.model_copy(update={"params": {**comp.params, "n_tokens": 1}})
    with pytest.raises(IndexFormatError, match="do not match"):
        load_fm(tmp_path, bad)
    with pytest.raises(IndexFormatError):
        load_fm(tmp_path, comp.model_copy(update={"kind": "dense-faiss"}))
    shutil.rmtree(tmp_path / "fm" / "shard-000")
    with pytest.raises(IndexFormatError, match="missing"):
        load_fm(tmp_path, comp)


def test_fm_config_is_strict():
    from pydantic import ValidationError

    from genret.indexing.fm import FMConfig

    assert FMConfig().shards == 1 and FMConfig().sa_sample == 20
    with pytest.raises(ValidationError):
        FMConfig(shards=0)
    with pytest.raises(ValidationError):
        FMConfig(bogus=1)


def test_title_markers_fallbacks():
    from genret.indexing.fm._tokens import title_markers

    class Tok:
        def __init__(self, bos, eos, cls=None, sep=None, n=100):
            self.bos_token_id, self.eos_token_id, self.cls_token_id, self.sep_token_id, self.n = bos, eos, cls, sep, n

        def __len__(self):
            return self.n

    assert title_markers(Tok(1, 2)) == (1, 2, 100)
    assert title_markers(Tok(None, None)) == (100, 101, 102)
    assert title_markers(Tok(5, 5)) == (5, 100, 101)  # GPT-2 style: bos == eos
    assert title_markers(Tok(None, 2, cls=3)) == (3, 2, 100)


def test_empty_path_is_rejected(tmp_path):
    with pytest.raises(IndexFormatError):
        FMIndex.load(Path(tmp_path) / "nope", {"format": FM_FORMAT})


def test_old_format_gets_a_clear_error(tmp_path):
    docs, index = _corpus_index()
    index.save(tmp_path)
    for old in ("genret-fm/1", "genret-fm/3", "genret-fm/4"):
        with pytest.raises(IndexFormatError, match="older genret.*rebuild"):
            FMIndex.load(tmp_path, {**index.params(), "format": old})
