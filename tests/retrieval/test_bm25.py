"""BM25 retrieval (Lucene via pyserini/Anserini): k1/b, batch = single, empty results and integrity checks (the
build's parity with pyserini's own command-line tools, and finding Java ≥ 21: tests/indexing/test_bm25_build.py)."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from genret.core import IndexFormatError
from genret.indexing import Index, IndexConfig, build_index, read_manifest
from genret.retrieval import BM25Retriever, BM25SearchConfig

pytest.importorskip("pyserini")

QUERIES = ["When did the oil embargo start?", "Which pigment absorbs red and blue light in plants?",
           "Who created the Python programming language?", "first ascent of the highest mountain",
           "Louis Armstrong jazz New Orleans", "oil price 1974 fourfold", "Café naïve — résumé? (light) energy!"]
EMPTY_QUERIES = ["", "   ", "the of and", "zzyzx qwxv"]


@pytest.fixture(scope="module")
def tiny(data_dir, tmp_path_factory) -> Path:
    """The unit store and the BM25 component alone."""
    out = tmp_path_factory.mktemp("bm25") / "tiny"
    build_index(data_dir / "corpus.jsonl", out, IndexConfig(components=("bm25",)), progress=False)
    return out


@pytest.fixture(scope="module")
def retriever(tiny):
    index = Index(tiny)
    r = BM25Retriever(index)
    yield r
    r.close()
    index.close()


def ids_scores(hits) -> list[tuple[str, float]]:
    return [(str(h.unit_id), h.score) for h in hits]


# -- (b) k1 and b ----------------------------------------------------------------------------------------------


def test_defaults_come_from_the_manifest_and_k1_b_change_scores(tiny, retriever):
    assert (retriever.k1, retriever.b) == (0.9, 0.4)
    base = retriever.search("oil embargo October", k=5)
    with Index(tiny) as index:
        for k1, b in ((1.5, 0.4), (0.9, 1.0)):
            other = BM25Retriever(index, BM25SearchConfig(k1=k1, b=b)).search("oil embargo October", k=5)
            assert [h.score for h in other] != pytest.approx([h.score for h in base])


def test_score_follows_the_bm25_formula(tiny):
    # b = 0 removes length normalisation: score = idf * tf / (tf + k1), idf = ln(1 + (N - n + 0.5) / (n + 0.5)).
    # "oil" occurs 3 times in unit 0 (title + text) and twice in unit 1; no other of the 10 units has it.
    with Index(tiny) as index:
        hits = BM25Retriever(index, BM25SearchConfig(k1=1.2, b=0.0)).search("oil", k=10)
    idf = math.log(1 + (10 - 2 + 0.5) / (2 + 0.5))
    assert [h.unit_id for h in hits] == [0, 1]
    # Anserini rounds scores to 4 decimals
    assert [h.score for h in hits] == pytest.approx([idf * 3 / (3 + 1.2), idf * 2 / (2 + 1.2)], abs=6e-5)


# -- (c) batch_search == search, hits, threads ---------------------------------------------------------------


def test_batch_search_equals_search(retriever):
    queries = QUERIES + EMPTY_QUERIES + QUERIES[:2]
    for threads in (1, 2):
        retriever.threads = threads
        batch = retriever.batch_search(queries, k=4)
        assert len(batch) == len(queries)
        for q, hits in zip(queries, batch):
            assert ids_scores(hits) == ids_scores(retriever.search(q, k=4))
    retriever.threads = 2
    assert ids_scores(retriever.search("oil", k=2, task="fever")) == ids_scores(retriever.search("oil", k=2))


def test_hits_are_ranked_with_provenance_and_text(retriever):
    hits = retriever.search("first confirmed ascent of the highest mountain in 1973", k=3)
    assert [h.rank for h in hits] == [1, 2, 3]
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
    top = hits[0]
    assert (top.provenance.wikipedia_id, top.provenance.start_paragraph_id) == ("p-everest", 2)
    assert top.text.startswith("The first confirmed ascent")
    assert top.provenance.end_character - top.provenance.start_character == len(top.text)
    assert len(retriever.search("oil python jazz light everest", k=50)) <= 10
    with pytest.raises(ValueError):
        retriever.search("oil", k=0)
    assert retriever.batch_search([], k=3) == []


def test_concurrent_searches_agree(retriever):
    expected = [ids_scores(retriever.search(q, k=5)) for q in QUERIES]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda q: ids_scores(retriever.search(q, k=5)), QUERIES * 8))
    assert got == expected * 8


def test_query_longer_than_lucenes_default_clause_limit(retriever):
    long_query = " ".join(f"term{i}" for i in range(3000)) + " oil"
    assert [h.unit_id for h in retriever.search(long_query, k=2)] == [0, 1]


# -- (d) no hits ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("query", EMPTY_QUERIES)
def test_query_without_indexed_terms_returns_no_hits(retriever, query):
    assert retriever.search(query, k=5) == []


# -- index integrity ------------------------------------------------------------------------------------------


def test_component_lists_the_lucene_files_and_they_are_verified(tiny, tmp_path):
    comp = read_manifest(tiny).components["bm25"]
    assert comp.kind == "bm25-lucene" and comp.params["count"] == 10 and comp.params["k1"] == 0.9
    assert comp.files and all(name.startswith("bm25/") for name in comp.files)
    assert {f"bm25/{p.name}" for p in (tiny / "bm25").iterdir()} == set(comp.files)  # no lock, no leftovers
    assert not [p for p in tiny.iterdir() if p.name.startswith(".")]  # the temporary collection is gone
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny, copy)
    victim = copy / sorted(comp.files, key=lambda n: comp.files[n].size)[-1]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="checksum"):
        Index(copy)
