"""The compiled FM-index kernels (``fm._wavelet``, ``fm._hot``) against numpy references, and the O(1) open."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genret.indexing.fm import _hot as fm_hot
from genret.indexing.fm import _locate as loc
from genret.indexing.fm import _wavelet as wv
from genret.indexing.fm._index import FMIndex
from genret.indexing.fm._suffix_array import FIRST_SYM

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _ref_bits(bits: np.ndarray, lev: int, n: int) -> np.ndarray:
    return np.unpackbits(bits[lev].view(np.uint8), bitorder="little")[:n].astype(np.int64)


@SETTINGS
@given(vals=st.lists(st.integers(0, 299), max_size=1500), sigma=st.sampled_from([1, 2, 3, 255, 300, 70000]))
def test_wavelet_kernels_match_numpy(vals, sigma):
    v = np.array(vals, dtype=np.int64) % sigma
    n, n_lev = len(v), wv.n_levels(max(sigma, 2))
    dt = np.uint8 if sigma <= 256 else np.uint16 if sigma <= 65536 else np.uint32
    bits, ranks, zeros = wv.build_wavelet(v.astype(dt), n_lev)
    assert bits.shape == (n_lev, wv.n_words(n)) and ranks.shape == (n_lev, wv.rank_entries(n))
    for lev in range(n_lev):  # rank1 and the directory's total
        cum = np.concatenate([[0], np.cumsum(_ref_bits(bits, lev, n))])
        assert wv.rank1_many(bits, ranks, lev, np.arange(n + 1)).tolist() == cum.tolist()
        assert wv.total_ones(ranks[lev], n) == cum[-1] == n - zeros[lev]
        a = np.arange(n + 1)
        for width in (0, 1, 63, 64, 65, 300, 513, 700):
            b = np.minimum(a + width, n)
            assert wv.rank1_pairs(bits, ranks, lev, a, b).tolist() == np.stack([cum[a], cum[b]], 1).tolist()
    assert wv.wm_access_many(bits, ranks, zeros, np.arange(n)).tolist() == v.tolist()
    starts = wv.bottom_starts(np.bincount(v, minlength=1 << n_lev), n_lev)
    rng = np.random.default_rng(n)
    for _ in range(20):
        lo, hi = sorted(rng.integers(0, n + 1, 2).tolist())
        c = int(rng.choice(v)) if n else 0
        a, b = wv.wm_range(bits, ranks, zeros, c, lo, hi)
        k = int(np.count_nonzero(v[lo:hi] == c))
        assert b - a == k and (k == 0 or a == starts[c] + int(np.count_nonzero(v[:lo] == c)))
        first = int(rng.integers(0, 3))
        out = wv.wm_distinct(bits, ranks, zeros, lo, hi, first)
        u, uc = np.unique(v[lo:hi], return_counts=True)
        assert out[0].tolist() == u[u >= first].tolist() and out[1].tolist() == uc[u >= first].tolist()


def test_many_superblocks():
    rng = np.random.default_rng(5)
    v = rng.zipf(1.2, 300_000) % 3000
    bits, ranks, zeros = wv.build_wavelet(v.astype(np.uint16), wv.n_levels(3000))
    idx = rng.integers(0, len(v), 2000)
    assert wv.wm_access_many(bits, ranks, zeros, idx).tolist() == v[idx].tolist()
    for lev in (0, 5, 11):
        cum = np.concatenate([[0], np.cumsum(_ref_bits(bits, lev, len(v)))])
        assert wv.rank1_many(bits, ranks, lev, idx).tolist() == cum[idx].tolist()
    out = wv.wm_distinct(bits, ranks, zeros, 1000, 250_000, 0)
    u, c = np.unique(v[1000:250_000], return_counts=True)
    assert out[0].tolist() == u.tolist() and out[1].tolist() == c.tolist()


def test_marks_rank_across_block_edges():
    for n in (0, 1, 63, 64, 511, 512, 513, 4097, 65535, 65536, 65537, 200_000):
        pos = np.arange(0, n, 3)
        bits, ranks = wv.build_marks(n, pos)
        ref = np.zeros(n, np.int64)
        ref[pos] = 1
        expect = np.concatenate([[0], np.cumsum(ref)])
        assert wv.rank1_many(bits, ranks, 0, np.arange(n + 1)).tolist() == expect.tolist()


def _zipf_docs(n_docs=300, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.zipf(1.3, int(rng.integers(5, 60))) % 120).tolist() for _ in range(n_docs)]


def test_bwt_is_the_suffix_sort():
    docs = _zipf_docs(40)
    index = FMIndex.build(docs, 120, sa_sample=4)
    text = []  # reversed text with symbols, as the module docstring lays it out
    sym = {t: i + 2 for i, t in enumerate(sorted({t for d in docs for t in d}))}
    for d in docs:
        text += [sym[t] for t in d] + [1]
    rev = text[::-1] + [0]
    sa = sorted(range(len(rev)), key=lambda i: rev[i:])
    assert index.bwt_symbols(np.arange(len(rev))).tolist() == [rev[i - 1] for i in sa]


@pytest.mark.parametrize("budget", [1.0, 1e-9])
def test_hot_lists_equal_the_wavelet_walk(monkeypatch, tmp_path, budget):
    docs = _zipf_docs()
    plain = FMIndex.build(docs, 120, sa_sample=8)
    assert plain.params()["n_hot"] == 0  # thresholds above this corpus
    monkeypatch.setattr(fm_hot, "HOT_MIN_ROWS", 2)
    monkeypatch.setattr(fm_hot, "HOT_MIN_DISTINCT", 2)
    monkeypatch.setattr(fm_hot, "HOT_BUDGET", budget)
    hot = FMIndex.build(docs, 120, sa_sample=8)
    n_hot = hot.params()["n_hot"]
    assert n_hot > 10 if budget == 1.0 else n_hot == 0
    if budget == 1.0:  # both codes occur: one-byte entries and escaped ones (counts > 15)
        raw = np.asarray(hot._a["hot_bytes"])
        assert (raw[:-fm_hot.PAD] >= 16).any() and (raw[:-fm_hot.PAD] < 16).any() and not raw[-fm_hot.PAD:].any()
    hot.save(tmp_path)
    loaded = FMIndex.load(tmp_path, json.loads(json.dumps(hot.params())))
    for tok in range(121):
        for g in ([tok], [tok, 0], [tok, tok]):
            a, b = plain.next_tokens(g), loaded.next_tokens(g)
            assert a[0].tolist() == b[0].tolist() and a[1].tolist() == b[1].tolist(), g
            assert plain.count(g) == loaded.count(g)


def test_open_is_constant_time(tmp_path):
    rng = np.random.default_rng(1)
    small = FMIndex.from_flat(rng.integers(0, 5000, 20_000), np.full(200, 100), 5000)
    big = FMIndex.from_flat(rng.integers(0, 5000, 2_000_000), np.full(20_000, 100), 5000)
    times = []
    for name, index in (("small", small), ("big", big)):
        index.save(tmp_path / name)
        params = json.loads(json.dumps(index.params()))
        FMIndex.load(tmp_path / name, params)
        best = 1e9
        for _ in range(7):
            t0 = time.perf_counter()
            FMIndex.load(tmp_path / name, params)
            best = min(best, time.perf_counter() - t0)
        times.append(best)
    assert times[1] < 0.1 and times[1] < 4 * times[0] + 0.02, times  # 100x the tokens, about the same time


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.integers(0, 300_000), st.integers(1, 2**32 - 1), min_size=1, max_size=200))
def test_hot_list_code_round_trips(entries):
    """Any ascending list decodes to itself: one-byte entries, escaped gaps and counts of 1 to 4 bytes."""
    syms = np.array(sorted(entries), np.int64) + FIRST_SYM
    counts = np.array([entries[s - FIRST_SYM] for s in syms.tolist()], np.int64)
    raw = fm_hot.encode_list(syms, counts, FIRST_SYM)
    tok = np.arange(300_001, dtype=np.int64) * 3  # token ids differ from symbols
    buf = np.concatenate([np.full(5, 7, np.uint8), raw, np.full(fm_hot.PAD, 255, np.uint8)])  # in a stream
    tokens, got = fm_hot.decode_list(buf, 5, 5 + len(raw), len(syms), tok, FIRST_SYM)
    assert tokens.tolist() == ((syms - FIRST_SYM) * 3).tolist() and got.tolist() == counts.tolist()
    small = ((np.diff(np.concatenate([[FIRST_SYM - 1], syms])) <= 15) & (counts <= 15)).sum()
    assert len(raw) >= len(syms) and (len(raw) == len(syms)) == (small == len(syms))


def test_corrupt_hot_list_raises():
    syms, counts = np.array([2, 3, 40], np.int64), np.array([1, 300, 2], np.int64)
    raw = fm_hot.encode_list(syms, counts, 2)
    tok = np.arange(100, dtype=np.int64)
    assert len(raw) == 1 + 4 + 3  # (1, 1) in a byte; (1, 300) and (37, 2) escaped
    pad = np.zeros(fm_hot.PAD, np.uint8)
    for part, size in ((raw, 4), (raw[:-1], 3), (np.concatenate([raw, raw[:1]]), 3), (np.zeros(4, np.uint8), 1)):
        with pytest.raises(ValueError, match="corrupt"):
            fm_hot.decode_list(np.concatenate([part, pad]), 0, len(part), size, tok, 2)
    with pytest.raises(ValueError, match="outside"):  # no padding after the list
        fm_hot.decode_list(raw, 0, len(raw), 3, tok, 2)
    assert fm_hot.decode_list(np.concatenate([raw, pad]), 0, len(raw), 3, tok, 2)[1].tolist() == [1, 300, 2]


def test_v2_index_is_read_as_it_is(monkeypatch, tmp_path):
    """A genret-fm/2 index (uint16 counts, the big ones apart) opens without a rebuild and answers the same."""
    monkeypatch.setattr(fm_hot, "HOT_MIN_ROWS", 2)
    monkeypatch.setattr(fm_hot, "HOT_MIN_DISTINCT", 2)
    monkeypatch.setattr(fm_hot, "HOT_BUDGET", 1.0)
    monkeypatch.setattr(fm_hot, "V2_BIG", 7)
    index = FMIndex.build(_zipf_docs(), 120, sa_sample=8)
    index.save(tmp_path)
    params = index.params()
    a = index._a
    lists = [fm_hot.decode_list(a["hot_bytes"], int(a["hot_offsets"][j]), int(a["hot_offsets"][j + 1]),
                                int(a["hot_sizes"][j]), np.arange(200), FIRST_SYM)
             for j in range(params["n_hot"])]
    syms = np.concatenate([t for t, _ in lists]) + FIRST_SYM  # tok = identity: symbols back
    counts = np.concatenate([c for _, c in lists])
    big = np.flatnonzero(counts >= 7)
    assert len(big) > 3
    for name in ("hot_sizes", "hot_bytes"):
        (tmp_path / f"{name}.npy").unlink()
    np.save(tmp_path / "hot_syms.npy", syms.astype(np.uint8))
    np.save(tmp_path / "hot_counts.npy", np.minimum(counts, 7).astype(np.uint16))
    np.save(tmp_path / "hot_big.npy", np.stack([big, counts[big]], axis=1).astype(np.int64))
    np.save(tmp_path / "hot_offsets.npy", np.concatenate([[0], np.cumsum([len(t) for t, _ in lists])]))
    n_samples, rate = params["n_samples"], params["sa_sample"]  # plain positions before genret-fm/4
    plain = loc.unpack_many(a["sample_pos"], params["sample_width"], np.arange(n_samples)) * rate
    np.save(tmp_path / "sample_pos.npy", plain.astype(params["pos_dtype"]))
    v2 = {k: v for k, v in params.items() if k not in ("n_hot_bytes", "sample_width")}
    v2.update(format="genret-fm/2", n_hot_entries=len(syms), n_hot_big=len(big))
    old = FMIndex.load(tmp_path, v2)
    assert old.params() == v2
    for tok in range(121):
        x, y = index.next_tokens([tok]), old.next_tokens([tok])
        assert x[0].tolist() == y[0].tolist() and x[1].tolist() == y[1].tolist()
        assert index.locate([tok, tok + 1]) == old.locate([tok, tok + 1])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 56), st.lists(st.integers(0, 2**56 - 1), max_size=300))
def test_packed_fields_round_trip(width, raw):
    values = np.array([v % (1 << width) for v in raw], np.uint64)
    words = loc.pack(values, width)
    assert len(words) == loc.packed_words(len(values), width)
    got = loc.unpack_many(words, width, np.arange(len(values)))
    assert got.astype(np.uint64).tolist() == values.tolist()


def test_locate_spans_reports_a_walk_past_the_sampling_rate():
    index = FMIndex.build(_zipf_docs(), 120, sa_sample=8)
    args = (index._bits, index._ranks, index._aux, index._mbits, index._mranks, index._spos, index.sample_width)
    spans = np.array([[index.n_docs + 1, index.n_tokens, 1]], np.int64)  # every token row
    doc, off = loc.fm_locate_spans(*args, spans, 8, index._starts)
    assert sorted(zip(doc.tolist(), off.tolist())) == index.locate_ranges([index.root()])[0]
    with pytest.raises(ValueError, match="corrupt"):  # 0 steps allowed: the unsampled rows fail
        loc.fm_locate_spans(*args, spans, 0, index._starts)
