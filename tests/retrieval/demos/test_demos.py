"""Demonstration pools and sources (udr, bm25, random): same-task results, ranking, checks on load."""

from __future__ import annotations

import json
import shutil

import pytest

from genret.core import GenretError, IndexFormatError, InputError, NotFoundError
from genret.retrieval import Demo
from genret.retrieval.demos import DEMO_SOURCES, DemoSource, build_demo_pool, load_demo_source
from genret.retrieval.demos._pool import read_pool
from tests.retrieval.demos.demo_pools import CLAIMS, QA, write_pools

QA_IDS = {rid for rid, _, _ in QA}
FC_IDS = {rid for rid, _, _ in CLAIMS}


@pytest.fixture(scope="module")
def pools(tmp_path_factory):
    d = tmp_path_factory.mktemp("demo-pools")
    qa, claims = write_pools(d)
    demos = d / "demos"
    m = build_demo_pool(qa, "qa", demos, device="cpu", progress=False)
    assert m.examples == 6 and m.skipped_no_answer == 1 and m.kind == "demo-pool"
    build_demo_pool(claims, "fact_check", demos, device="cpu", progress=False)
    return {"dir": demos, "qa": qa, "claims": claims}


@pytest.fixture(scope="module")
def sources(pools):
    made = {kind: load_demo_source(pools["dir"], kind, device="cpu", seed=3) for kind in DEMO_SOURCES}
    yield made
    for s in made.values():
        s.close()


def test_layout_and_manifest(pools):
    d = pools["dir"]
    assert sorted(p.name for p in d.iterdir()) == ["fact_check", "qa"]
    meta = json.loads((d / "qa" / "demos.json").read_text())
    assert meta["task"] == "qa" and meta["instruction"].startswith("Represent the question")
    assert meta["encoder"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert json.loads((d / "fact_check" / "demos.json").read_text())["instruction"].startswith("Represent the claim")
    pool = [json.loads(x) for x in (d / "qa" / "pool.jsonl").read_text().splitlines()]
    assert [(r["id"], r["input"], r["output"]) for r in pool] == QA
    assert json.loads((d / "qa" / "index" / "manifest.json").read_text())["units"]["count"] == 6


@pytest.mark.parametrize("kind", ["udr", "bm25"])
def test_same_task_and_paraphrase_first(sources, kind):
    src = sources[kind]
    assert isinstance(src, DemoSource)
    demos = src.search("What city is the capital of France?", k=6, task="qa")
    assert all(isinstance(d, Demo) and d.task == "qa" and d.id in QA_IDS for d in demos)
    ids = [d.id for d in demos]
    assert ids[0] == "qa-1" and demos[0].output == "Paris"
    if "qa-3" in ids:  # the unrelated spider question ranks below the paraphrase
        assert ids.index("qa-1") < ids.index("qa-3")
    scores = [d.score for d in demos]
    assert scores == sorted(scores, reverse=True)
    claims = src.search("The Eiffel Tower stands in Berlin.", k=3, task="fact_check")
    assert claims[0].id == "fc-1" and claims[0].output == "REFUTES"
    assert all(d.task == "fact_check" and d.id in FC_IDS for d in claims)


def test_udr_scores_rank_paraphrase_above_unrelated(sources):
    demos = {d.id: d.score for d in sources["udr"].search("What city is the capital of France?", k=6, task="qa")}
    assert demos["qa-1"] > demos["qa-3"]


@pytest.mark.parametrize("kind", sorted(DEMO_SOURCES))
def test_exclude_batch_and_k(sources, kind):
    src = sources[kind]
    queries = ["What is the capital of France?", "Who painted the Mona Lisa?"]
    batch = src.batch_search(queries, 3, task="qa", exclude=[{"qa-1"}, ["qa-6"]])
    # BM25 returns only examples sharing a term with the query
    assert [len(b) for b in batch] == [3, 3] if kind != "bm25" else all(1 <= len(b) <= 3 for b in batch)
    assert "qa-1" not in [d.id for d in batch[0]] and "qa-6" not in [d.id for d in batch[1]]
    assert [d.id for d in batch[0]] == [d.id for d in src.search(queries[0], 3, task="qa", exclude=("qa-1",))]
    assert len(src.search(queries[0], 50, task="qa")) <= 6
    with pytest.raises(ValueError):
        src.search("x", 0, task="qa")
    with pytest.raises(ValueError):
        src.batch_search(queries, 2, task="qa", exclude=[()])


def test_random_is_deterministic(pools, sources):
    src = sources["random"]
    first = [d.id for d in src.search("any question at all", 4, task="qa")]
    assert first == [d.id for d in src.search("any question at all", 4, task="qa")]
    again = load_demo_source(pools["dir"], "random", seed=3)
    assert first == [d.id for d in again.search("any question at all", 4, task="qa")]
    assert len(set(first)) == 4 and set(first) <= QA_IDS
    runs = {tuple(d.id for d in load_demo_source(pools["dir"], "random", seed=s).search("q", 6, task="qa"))
            for s in range(5)}
    assert len(runs) > 1  # the seed matters


def test_unknown_task_and_kind(pools, sources):
    with pytest.raises(NotFoundError, match=r"known tasks: \['fact_check', 'qa'\]"):
        sources["bm25"].search("anything", 2, task="nope")
    with pytest.raises(GenretError, match="unknown demonstration source"):
        load_demo_source(pools["dir"], "telepathy")
    with pytest.raises(IndexFormatError):
        load_demo_source(pools["dir"] / "qa", "bm25")  # a task directory, not a demos directory


def test_bad_pool_lines(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "input": "fine?", "output": "yes"}\n'
                   '{"id": "b", "input": "broken", \n'
                   '\n'
                   '{"id": "c", "output": "no input"}\n'
                   '{"id": "a", "input": "again?", "output": "dup"}\n'
                   '{"input": "no id?", "output": [{"answer": "ok"}]}\n')
    with pytest.raises(InputError, match=r"bad\.jsonl:2: invalid JSON"):
        read_pool(bad)
    with pytest.raises(InputError, match=r"bad\.jsonl:2"):
        build_demo_pool(bad, "qa", tmp_path / "demos", progress=False)
    assert not (tmp_path / "demos" / "qa").exists()
    from genret.retrieval.demos._pool import PoolStats

    stats = PoolStats()
    rows = read_pool(bad, skip_bad=True, stats=stats)
    assert [r["id"] for r in rows] == ["a", "line-6"] and stats.bad == 3
    assert any(":4, field 'input'" in e for e in stats.errors) and any("duplicate id 'a'" in e for e in stats.errors)
    with pytest.raises(GenretError, match="invalid task name"):
        build_demo_pool(bad, "../evil", tmp_path / "demos", progress=False)


def _copy(pools, tmp_path):
    d = tmp_path / "copy"
    shutil.copytree(pools["dir"], d)
    return d


def test_modified_pool_file_is_detected(pools, tmp_path):
    d = _copy(pools, tmp_path)
    pool = d / "qa" / "pool.jsonl"
    pool.write_text(pool.read_text().replace("Paris", "Lyon"))
    with pytest.raises(IndexFormatError, match="pool.jsonl does not match"):
        load_demo_source(d, "bm25").search("capital of France", 1, task="qa")
    # the other task is still fine
    assert load_demo_source(d, "bm25").search("Eiffel Tower", 1, task="fact_check")[0].id == "fc-1"


def test_corrupt_index_and_manifest_are_detected(pools, tmp_path):
    d = _copy(pools, tmp_path)
    emb = d / "qa" / "index" / "dense.f32"
    data = bytearray(emb.read_bytes())
    data[0] ^= 0xFF
    emb.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="checksum mismatch"):
        load_demo_source(d, "udr", device="cpu").search("capital", 1, task="qa")
    meta = d / "fact_check" / "demos.json"
    raw = json.loads(meta.read_text())
    raw["format_version"] = 99
    meta.write_text(json.dumps(raw))
    with pytest.raises(IndexFormatError, match="format version 99"):
        load_demo_source(d, "random").search("x", 1, task="fact_check")


def test_adding_a_task_leaves_others_and_force(pools, tmp_path):
    d = tmp_path / "demos"
    shutil.copytree(pools["dir"] / "qa", d / "qa")
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (d / "qa").rglob("*") if p.is_file()}
    build_demo_pool(pools["claims"], "claims", d, device="cpu", progress=False)
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (d / "qa").rglob("*") if p.is_file()}
    assert before == after
    assert sorted(p.name for p in d.iterdir()) == ["claims", "qa"]  # no staging leftovers
    src = load_demo_source(d, "bm25")
    assert src.search("Eiffel Tower in Berlin", 1, task="claims")[0].task == "claims"
    with pytest.raises(GenretError, match="already exists"):
        build_demo_pool(pools["claims"], "claims", d, device="cpu", progress=False)
    m = build_demo_pool(pools["qa"], "claims", d, device="cpu", progress=False, force=True,
                        instruction="Find similar: ")
    assert m.examples == 6 and m.instruction == "Find similar: "
    assert load_demo_source(d, "bm25").search("capital of France", 1, task="claims")[0].id == "qa-1"
