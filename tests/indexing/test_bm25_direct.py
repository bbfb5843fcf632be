"""BM25 searched on Lucene directly (``indexing._lucene``) gives exactly what pyserini's ``SimpleSearcher`` gives:
the same scores (to the bit), hit order and tie order, for k1/b of the manifest and others, single and batch; and a
search never loads ``SimpleSearcher`` (its class initialisation is most of a cold BM25 start-up)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from genret.indexing import Index, IndexConfig, build_index, open_lucene

pytest.importorskip("pyserini")

ROOT = Path(__file__).resolve().parents[2]

# 16 paragraph units (ids 0-15).  Units 8-12 are five copies of one paragraph under one title: equal scores, which
# Anserini orders by document id *string* ("10" < "11" < "12" < "8" < "9") and then lowers by 1e-6 steps.
PAGES = [
    {"id": "oil", "title": "1973 oil crisis", "text": [
        "The 1973 oil crisis began in October 1973 when OAPEC proclaimed an oil embargo.",
        "By March 1974 the price of oil had risen nearly fourfold; oil, oil and more oil."]},
    {"id": "photo", "title": "Photosynthesis", "text": [
        "Plants convert light energy into chemical energy; chlorophyll absorbs blue and red light.",
        "Café au lait, naïve résumé: the energy of light (photons) — déjà vu!"]},
    {"id": "python", "title": "Python (programming language)", "text": [
        "Python is a high-level programming language created by Guido van Rossum.",
        "C++ & C# are other languages; Python's design emphasizes readability."]},
    {"id": "everest", "title": "Mount Everest", "text": [
        "Mount Everest is Earth's highest mountain, first climbed in 1953.",
        "日本語のテキスト: エベレスト山 and the Himalayas."]},
    *({"id": f"copy-{i}", "title": "Jazz", "text": ["Louis Armstrong played jazz trumpet in New Orleans."]}
      for i in range(5)),
    {"id": "tail", "title": "Tail", "text": [
        "Jazz in New Orleans, once more: a shorter paragraph about jazz.",
        "The last unit mentions oil and jazz and light together.",
        "Nothing of note here at all."]},
]
QUERIES = [
    "When did the oil embargo start?", "oil oil oil embargo",  # a repeated term: a boost of 3
    "Louis Armstrong jazz New Orleans", "jazz", "trumpet",  # the five equal copies, first or all of the hits
    "Café naïve — résumé? (light) energy!", "C++ & C#: what's new?!", "日本語 エベレスト", "ÉNERGIE LIGHT",
    "Who created the Python programming language?", "first ascent of the highest mountain 1953",
    "", "   ", "the of and", "zzyzx qwxv", "?!(){}[]",  # no indexed term: no hits
]


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("bm25-direct")
    corpus = work / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in PAGES), encoding="utf-8")
    build_index(corpus, work / "index", IndexConfig(components=("bm25",)), progress=False)
    return work / "index"


@pytest.fixture(scope="module")
def index(index_dir):
    with Index(index_dir) as opened:
        assert opened.manifest.units.count == 16
        yield opened


def simple_searcher(index: Index, k1: float, b: float):
    from genret.indexing._java import import_pyserini

    searcher = import_pyserini().SimpleSearcher(str(index.path / index.component("bm25").params["directory"]))
    searcher.set_bm25(k1, b)
    return searcher


def reference(searcher, query: str, k: int) -> list[tuple[int, float]]:
    return [(int(d.docid), float(d.score)) for d in searcher.search(query, k)]


@pytest.mark.parametrize("k1,b", [(None, None), (1.2, 0.75), (0.5, 0.0), (2.0, 1.0)])
def test_scores_and_order_equal_simple_searchers(index, k1, b):
    direct = open_lucene(index.path, index.component("bm25"), k1=k1, b=b)
    searcher = simple_searcher(index, direct.k1, direct.b)
    try:
        for query in QUERIES:
            for k in (1, 3, 7, 100):
                assert direct.search(query, k) == reference(searcher, query, k), (query, k)
    finally:
        searcher.close()
        direct.close()


def test_ties_rank_by_document_id_string_and_step_down(index):
    direct = open_lucene(index.path, index.component("bm25"))
    try:
        hits = direct.search("trumpet", 10)
        assert [unit for unit, _ in hits] == [10, 11, 12, 8, 9]
        top = hits[0][1]
        assert top == pytest.approx(round(top, 4), abs=1e-7)  # rounded to 4 decimals (a float), as Anserini does
        assert [top - s for _, s in hits] == pytest.approx([0.0, 1e-6, 2e-6, 3e-6, 4e-6], abs=2e-7)
        assert direct.search("trumpet", 3) == hits[:3]  # the cut inside a tie keeps the smallest id strings
        assert direct.search("zzyzx qwxv", 5) == [] and direct.search("", 5) == []
    finally:
        direct.close()


def test_batch_search_equals_simple_searchers_batch(index):
    from genret.indexing._java import java_list

    direct = open_lucene(index.path, index.component("bm25"))
    searcher = simple_searcher(index, direct.k1, direct.b)
    try:
        qids = [str(i) for i in range(len(QUERIES))]
        ref = searcher.batch_search(java_list(QUERIES), java_list(qids), 5, 2)
        by_qid = {e.getKey(): [(int(d.docid), float(d.score)) for d in e.getValue()] for e in ref.entrySet().toArray()}
        for threads in (1, 2, 3):
            assert direct.batch_search(QUERIES, 5, threads) == [by_qid.get(q, []) for q in qids]
    finally:
        searcher.close()
        direct.close()


def test_two_indexes_searched_at_once_from_threads(index):
    """pyjnius shares one method binding among all objects of a Java class: without the gate in ``indexing._lucene``
    a thread could run its search on another index's searcher (other k1/b: other scores) or fail."""
    a = open_lucene(index.path, index.component("bm25"))
    b = open_lucene(index.path, index.component("bm25"), k1=2.0, b=1.0)
    try:
        jobs = [(name, q) for name in ("a", "b") for q in QUERIES] * 6
        want = {(name, q): (a if name == "a" else b).search(q, 10) for name, q in jobs}
        with ThreadPoolExecutor(6) as pool:
            got = list(pool.map(lambda job: (a if job[0] == "a" else b).search(job[1], 10), jobs))
            batches = [pool.submit(x.batch_search, QUERIES, 10, 2) for x in (a, b, a, b)]
            for x, future in zip((a, b, a, b), batches):
                assert future.result() == [x.search(q, 10) for q in QUERIES]
        assert got == [want[job] for job in jobs]
    finally:
        a.close()
        b.close()


def test_a_search_does_not_load_simple_searcher(index_dir):
    code = ("import json, sys\n"
            "from genret.indexing import Index\n"
            "from genret.retrieval import BM25Retriever\n"
            "import genret.indexing._java as j\n"
            f"with Index({str(index_dir)!r}) as index:\n"
            "    hits = BM25Retriever(index).search('trumpet', k=2)\n"
            "unwanted = ('httpx', 'pyserini.pyclass', 'genret.retrieval.rag')\n"
            "loaded = [m for m in unwanted if m in sys.modules]\n"
            "print(json.dumps([[h.unit_id for h in hits], j._pyserini is None, loaded]))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.splitlines()[-1]) == [[10, 11], True, []]
