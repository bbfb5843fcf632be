"""The query memory in the server: an index whose ``genret adapt`` / ``genret train memory`` kept its training questions
serves ``memory`` as a retriever of its own, a hybrid whose weights name it fuses it (its hits' ``member_ranks`` say
so) as ``load_retriever`` does in process, and ``retrieval.memory.adapted: false`` (``--untrained``) leaves it out."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from genret.indexing import Index, write_query_memory
from genret.retrieval import load_retriever, memory_encoder, memory_from_kilt
from genret.serving import Settings
from genret.serving.http._service import SearchService
from tests.serving.helpers import app_over

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

TRAIN = [{"id": "c", "input": "Who created the Python programming language?", "output": [{"provenance": [
    {"wikipedia_id": "p-python", "start_paragraph_id": 1, "end_paragraph_id": 1}]}]}]
WEIGHTS = {"dense": 1.0, "bm25": 1.0, "memory": 1.0}


@pytest.fixture(scope="module")
def memory_index(dense_bm25_index) -> Path:
    path = dense_bm25_index("memory-served")
    with Index(path) as index:
        memory = memory_from_kilt(index, TRAIN, memory_encoder(index, "cpu"))
    write_query_memory(path, memory, trained={})
    return path


def _settings(index: Path, adapted: bool = True) -> Settings:
    return Settings(indexes=[index], server={"lazy": True},
                    retrieval={"dense": {"device": "cpu", "dtype": "float32"}, "hybrid": {"weights": WEIGHTS},
                               "memory": {"adapted": adapted}})


def test_the_memory_is_served_alone_and_in_the_hybrid_as_in_process(memory_index):
    service = SearchService(_settings(memory_index))
    try:
        with app_over(service) as app, TestClient(app) as client:
            r = client.post("/v1/search", json={"query": "who invented python", "k": 3, "retriever": "memory"})
            assert r.status_code == 200, r.text
            hits = r.json()["hits"]
            assert hits and hits[0]["provenance"]["wikipedia_id"] == "p-python" and 0 < hits[0]["score"] <= 1
            r = client.post("/v1/search", json={"query": "who invented python", "k": 3, "retriever": "hybrid"})
            assert r.status_code == 200, r.text
            served = [h["docid"] for h in r.json()["hits"]]
            with Index(memory_index) as index:
                hybrid = load_retriever(index, "hybrid", service.settings.retrieval)
                try:
                    assert list(hybrid.members) == ["dense", "bm25", "memory"]
                    assert served == [h.unit_id for h in hybrid.search("who invented python", 3)]
                finally:
                    hybrid.close()
    finally:
        service.close()


def test_an_untrained_server_fuses_without_the_memory(memory_index):
    service = SearchService(_settings(memory_index, adapted=False))
    try:
        with Index(memory_index) as index:
            hybrid = load_retriever(index, "hybrid", service.settings.retrieval)
            try:
                assert list(hybrid.members) == ["dense", "bm25"]
                expected = [h.unit_id for h in hybrid.search("who invented python", 3)]
            finally:
                hybrid.close()
        with app_over(service) as app, TestClient(app) as client:
            r = client.post("/v1/search", json={"query": "who invented python", "k": 3, "retriever": "hybrid"})
            assert r.status_code == 200, r.text
            assert [h["docid"] for h in r.json()["hits"]] == expected
    finally:
        service.close()
