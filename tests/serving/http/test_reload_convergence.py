"""A served index converges to its on-disk version whatever changed (issue 27, point 3): a new version without a
retriever the server has loaded is swapped in (that retriever then answers 404, the rest serve the new version and
``/readyz`` is 200), one with a component added gets it loaded before the swap, a retriever that fails to load over
the new version does not keep the old, deleted files served, and a version that cannot be opened is logged once,
not every watcher tick."""

from __future__ import annotations

import json
import logging
import time

import pytest
from fastapi.testclient import TestClient

from genret.core import NotFoundError
from genret.indexing import DenseConfig, IndexConfig, build_index
from genret.retrieval import DenseRetriever
from genret.serving import Settings, create_app
from genret.serving.http._service import SearchService
from tests.conftest import PAGES

pytest.importorskip("pyserini")

BOTH = IndexConfig(components=("dense", "bm25"), dense=DenseConfig(device="cpu"))
BM25 = IndexConfig(components=("bm25",))
OLD, NEW = {p["id"] for p in PAGES[:3]}, {p["id"] for p in PAGES[3:]}


def _corpus(path, pages):
    path.write_text("".join(json.dumps(p) + "\n" for p in pages))
    return path


def _build(tmp_path, out, pages, config, name="c.jsonl"):
    build_index(_corpus(tmp_path / name, pages), out, config, force=True, progress=False)


@pytest.fixture()
def ix(tmp_path):
    """idxS: dense and BM25 over the first three pages."""
    _build(tmp_path, tmp_path / "idxS", PAGES[:3], BOTH, "a.jsonl")
    return tmp_path / "idxS"


def _settings(ix, interval=0.0, **server) -> Settings:
    return Settings(indexes=[ix], server={"reload_interval_s": interval, "preload": ["dense", "bm25"], **server},
                    retrieval={"dense": {"device": "cpu"}})


def _until(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_version_without_a_loaded_retriever_is_swapped_in_and_that_retriever_answers_404(ix, tmp_path, caplog):
    """The issue's command, shrunk: ``genret serve idxS --preload dense,bm25`` then ``genret index … --out idxS
    --force --bm25``.  Before: the old version served forever, /readyz 503, an ERROR every watcher tick."""
    caplog.set_level(logging.INFO, logger="genret")
    app = create_app(_settings(ix, interval=0.1))
    with TestClient(app) as client:
        assert _until(lambda: client.get("/readyz").status_code == 200)
        for retriever in ("dense", "bm25"):
            r = client.post("/v1/search", json={"query": "oil embargo", "k": 2, "retriever": retriever})
            assert r.status_code == 200 and r.json()["hits"][0]["provenance"]["wikipedia_id"] == "p-oil"
        _build(tmp_path, ix, PAGES[3:], BM25)

        def bm25_new() -> bool:
            r = client.post("/v1/search", json={"query": "highest mountain", "k": 5, "retriever": "bm25"})
            ids = [h["provenance"]["wikipedia_id"] for h in r.json()["hits"]] if r.status_code == 200 else []
            return bool(ids) and ids[0] == "p-everest" and set(ids) <= NEW

        assert _until(bm25_new), "the new version was never swapped in"
        r = client.get("/readyz")
        assert r.status_code == 200, r.text
        r = client.post("/v1/search", json={"query": "highest mountain", "k": 2, "retriever": "dense"})
        assert r.status_code == 404 and "dense" in r.json()["detail"]
        assert client.post("/v1/embeddings", json={"model": "idxS", "input": "x"}).status_code == 404
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


def test_components_removed_then_added_back_converge_each_time(ix, tmp_path):
    service = SearchService(_settings(ix))
    try:
        service.retriever("idxS", "bm25")
        service.retriever("idxS", "dense")
        _build(tmp_path, ix, PAGES[3:], BM25)
        assert service.snapshots.refresh("idxS")
        assert service.stale_indexes() == {} and service.loaded == 1
        with pytest.raises(NotFoundError, match="dense"):
            service.search("highest mountain", 2, retriever="dense")
        hits = service.search("mountain jazz", 5, retriever="bm25")[2]
        assert hits and {h.provenance.wikipedia_id for h in hits} <= NEW

        _build(tmp_path, ix, PAGES[:3], BOTH)  # dense is back: preloaded, so loaded (and warmed) before the swap
        assert service.snapshots.refresh("idxS")
        assert service.stale_indexes() == {} and service.loaded == 2
        assert service.search("oil embargo", 1, retriever="dense")[2][0].provenance.wikipedia_id == "p-oil"
    finally:
        service.close()


def test_a_retriever_failing_over_the_new_version_does_not_keep_the_old_one_served(ix, tmp_path, monkeypatch):
    """The rest of the new version serves; /readyz names the one that failed until it loads."""
    service = SearchService(_settings(ix))
    try:
        service.retriever("idxS", "bm25")
        service.retriever("idxS", "dense")
        init = DenseRetriever.__init__

        def broken(self, *args, **kwargs):
            raise RuntimeError("the encoder is out to lunch")

        monkeypatch.setattr(DenseRetriever, "__init__", broken)
        _build(tmp_path, ix, PAGES[3:], BOTH)
        assert service.snapshots.refresh("idxS")
        stale = service.stale_indexes()
        assert "dense" in stale["idxS"] and "out to lunch" in stale["idxS"]
        hits = service.search("mountain jazz", 5, retriever="bm25")[2]
        assert hits and {h.provenance.wikipedia_id for h in hits} <= NEW
        monkeypatch.setattr(DenseRetriever, "__init__", init)
        service.snapshots.refresh("idxS")  # the watcher's next tick retries it
        assert service.stale_indexes() == {}
        assert service.search("highest mountain", 1, retriever="dense")[2][0].provenance.wikipedia_id == "p-everest"
    finally:
        service.close()


def test_a_version_that_cannot_be_opened_is_logged_once_not_every_tick(ix, tmp_path, caplog):
    service = SearchService(_settings(ix))
    try:
        service.retriever("idxS", "bm25")
        (ix / "manifest.json").write_text("{ not json")
        caplog.set_level(logging.INFO, logger="genret")
        for _ in range(3):
            assert not service.snapshots.refresh("idxS")
        assert "reload failed" in service.stale_indexes()["idxS"]
        assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1
    finally:
        service.close()
