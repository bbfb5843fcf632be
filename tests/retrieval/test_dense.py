"""Dense retrieval against brute force over the stored embeddings."""

import dataclasses

import numpy as np
import pytest

from genret.core import NotFoundError
from genret.indexing import Index, load_faiss
from genret.retrieval import DenseRetriever, DenseSearchConfig, Hit, available_retrievers, load_retriever

QUERIES = ["oil embargo by OAPEC", "who climbed Everest first", "plants turn light into energy",
           "programming language readability", "New Orleans music"]


@pytest.fixture(scope="module")
def retriever(tiny_index, encoder):
    index = Index(tiny_index)
    yield DenseRetriever(index, DenseSearchConfig(device="cpu"), encoder=encoder)
    index.close()


def test_matches_brute_force_cosine(retriever, encoder):
    flat = load_faiss(retriever.index.path, retriever.index.component("dense"))  # exact: the stored vectors
    emb = flat.reconstruct_n(0, flat.ntotal)
    q = encoder.encode(QUERIES)
    expected = np.argsort(-(q @ emb.T), axis=1, kind="stable")[:, :4]
    results = retriever.batch_search(QUERIES, k=4)
    for row, hits, qv in zip(expected, results, q):
        assert [h.unit_id for h in hits] == list(row)
        np.testing.assert_allclose([h.score for h in hits], (emb[row] @ qv), rtol=1e-5, atol=1e-5)
        assert [h.rank for h in hits] == [1, 2, 3, 4]


def test_search_equals_batch_search_and_hits_are_frozen(retriever):
    batch = retriever.batch_search(QUERIES, k=3)
    for q, hits in zip(QUERIES, batch):
        single = retriever.search(q, k=3)
        assert [h.unit_id for h in single] == [h.unit_id for h in hits]
    hit = batch[0][0]
    assert isinstance(hit, Hit)
    with pytest.raises(dataclasses.FrozenInstanceError):
        hit.score = 0.0  # type: ignore[misc]


def test_hits_carry_provenance_and_text(retriever):
    (top, *_) = retriever.search("first ascent of the highest mountain", k=2)
    assert top.provenance.wikipedia_id == "p-everest" and top.provenance.start_paragraph_id == 2
    assert top.text.startswith("The first confirmed ascent")
    assert top.provenance.end_character - top.provenance.start_character == len(top.text)


def test_k_larger_than_corpus_and_invalid_k(retriever):
    assert len(retriever.search("anything", k=50)) == 10
    with pytest.raises(ValueError):
        retriever.search("anything", k=0)
    assert retriever.batch_search([], k=3) == []


def test_registry(tiny_index):
    with Index(tiny_index) as index:
        assert available_retrievers(index) == ["dense", "bm25", "generative", "hybrid"]
        with pytest.raises(NotFoundError, match="unknown retriever"):
            load_retriever(index, "nope")
