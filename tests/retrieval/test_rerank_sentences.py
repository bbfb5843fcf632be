"""The sentence reranker (``retrieval._rerank_sentences``): a passage's score is its best sentence's cosine with
the query under the index's dense encoder (titles not read, sentence vectors cached), by name through the registry,
and kept by ``genret adapt`` as an index component with no model files of its own."""

from __future__ import annotations

import json

import numpy as np
import pytest

from genret.core import NotFoundError
from genret.indexing import ADAPTED_RERANK, Index, add_to_index, query_encoder, verify_index, write_adapted_reranker
from genret.retrieval import (
    RerankConfig,
    RerankedRetriever,
    RetrievalConfig,
    SentenceReranker,
    load_reranker,
    load_retriever,
    rerank_settings,
)
from genret.retrieval._rerank_sentences import split_sentences
from genret.serving.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

PHOTO = "Chlorophyll absorbs mostly blue and red light. Oxygen is released as a by-product."
JAZZ = "Jazz is a music genre that originated in the African-American communities of New Orleans."
CPU = {"device": "cpu", "dtype": "float32"}


class Counting:
    """An encoder that records every text it is asked to encode."""

    def __init__(self, inner) -> None:
        self.inner, self.seen = inner, []
        self.model_id, self.dim = inner.model_id, inner.dim

    def encode(self, texts, **kw):
        self.seen.extend(texts)
        return self.inner.encode(texts, **kw)


def test_sentences_are_split_as_units_are():
    assert split_sentences(PHOTO) == ["Chlorophyll absorbs mostly blue and red light.",
                                      "Oxygen is released as a by-product."]
    assert split_sentences("no end mark") == ["no end mark"] and split_sentences("") == [""]


def test_a_passage_scores_its_best_sentence_and_sentences_are_encoded_once(tiny_index):
    with Index(tiny_index) as index:
        r = load_reranker(RerankConfig(model="sentences", **CPU), index)
        model = r.encoder.model_id
    assert isinstance(r, SentenceReranker) and r.name == "sentences:dense" and r.reads_titles is False
    q = "Which gas do plants release as a by-product?"
    got = r.scores(q, [PHOTO, JAZZ])
    enc = query_encoder(model, "cpu", "float32")
    qv = enc.encode([q])[0]
    sentences = enc.encode(split_sentences(PHOTO))
    assert got[0] == pytest.approx(float(np.max(sentences @ qv)), abs=1e-5)
    assert got[0] == pytest.approx(float(sentences[1] @ qv), abs=1e-5)  # the sentence about oxygen
    assert got[0] > float(enc.encode([PHOTO])[0] @ qv) and got[0] > got[1]  # higher than the paragraph's own vector
    r.encoder = Counting(r.encoder)
    assert r.scores(q, [JAZZ, PHOTO]) == pytest.approx([got[1], got[0]], abs=1e-6)
    assert r.encoder.seen == [q]  # the passages' sentences came from the cache
    assert r.scores(q, []) == []


def test_through_the_registry_it_reranks_without_reading_titles(tiny_index):
    config = RetrievalConfig(dense={"device": "cpu"}, rerank={"model": "sentences", "depth": 6, "weight": 0.8, **CPU})
    with Index(tiny_index) as index:
        r = load_retriever(index, "bm25", config)
        try:
            assert isinstance(r, RerankedRetriever) and isinstance(r.reranker, SentenceReranker) and r.weight == 0.8
            r.reranker.encoder = Counting(r.reranker.encoder)
            hits = r.search("Which gas do plants release as a by-product?", k=3)
            assert (hits[0].provenance.wikipedia_id, hits[0].provenance.start_paragraph_id) == ("p-photo", 2)
            titles = {"Photosynthesis", "Jazz", "Mount Everest", "1973 oil crisis", "Python (programming language)"}
            assert not [t for t in r.reranker.encoder.seen if t.split("\n")[0] in titles]
        finally:
            r.close()


def test_it_needs_a_dense_encoder_or_a_named_model():
    with pytest.raises(NotFoundError, match="dense"):
        load_reranker(RerankConfig(model="sentences", **CPU))
    named = load_reranker(RerankConfig(model="sentences:sentence-transformers/all-MiniLM-L6-v2", **CPU))
    assert named.name == "sentences:sentence-transformers/all-MiniLM-L6-v2"


def test_the_adapted_sentence_reranker_is_a_component_without_files(dense_bm25_index, tmp_path, capsys):
    index = dense_bm25_index("sentence-reranker")
    write_adapted_reranker(index, None, over="bm25", depth=4, weight=0.5, trained={"model": "sentences"})
    verify_index(index)
    with Index(index) as ix:
        comp = ix.component(ADAPTED_RERANK)
        assert comp.kind == "sentence-encoder" and comp.files == {} and comp.params["weight"] == 0.5
        settings = rerank_settings(ix, "bm25", RetrievalConfig())
        assert (settings.model, settings.depth, settings.weight) == ("sentences", 4, 0.5)
        assert rerank_settings(ix, "dense", RetrievalConfig()) is None  # fitted over bm25 only
        assert rerank_settings(ix, "bm25", RetrievalConfig(rerank={"adapted": False})) is None
        r = load_retriever(ix, "bm25", RetrievalConfig(dense={"device": "cpu"}, rerank=CPU))
        try:
            assert isinstance(r.reranker, SentenceReranker) and r.weight == 0.5
        finally:
            r.close()
    more = tmp_path / "more.jsonl"
    more.write_text(json.dumps({"id": "p-tea", "title": "Tea", "text": ["Tea is brewed from leaves."]}) + "\n")
    add_to_index(index, more, progress=False, device="cpu")
    with Index(index) as ix:
        assert ix.component(ADAPTED_RERANK).kind == "sentence-encoder" and len(ix.store) == 11
    assert main(["search", str(index), "Which gas do plants release?", "--retriever", "bm25", "-k", "1",
                 "--device", "cpu", "--json"]) == 0
    assert "p-photo" in capsys.readouterr().out
