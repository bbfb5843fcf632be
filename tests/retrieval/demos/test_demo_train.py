"""UDR training: LM feedback is the tiny model's real likelihood; a tiny round changes the ranking."""

from __future__ import annotations

import json
import math
import random

import pytest

from genret.core import GenretError, NotFoundError
from genret.retrieval import Demo
from genret.retrieval.demos import DemoTrainConfig, build_demo_pool, load_demo_source, train_demos
from genret.retrieval.demos._pool import DemoPool
from genret.retrieval.demos._sources import BM25DemoSource
from genret.retrieval.demos._train import _mine, _queries, lm_feedback
from genret.retrieval.rag import GeneratorConfig, HFGenerator, build_prompt, resolve_answer_task
from tests.retrieval.demos.demo_pools import CLAIMS, QA, write_pools


@pytest.fixture(scope="module")
def pools(tmp_path_factory):
    d = tmp_path_factory.mktemp("demo-train")
    qa, claims = write_pools(d)
    demos = d / "demos"
    build_demo_pool(qa, "qa", demos, device="cpu", progress=False)
    build_demo_pool(claims, "fact_check", demos, device="cpu", progress=False)
    return {"root": d, "dir": demos, "qa": qa, "claims": claims}


@pytest.fixture
def one_thread():
    """Tiny batches gain nothing from intra-op threads, and on a shared 2-core machine they spin: use one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def generator(tiny_lm_dir):
    return HFGenerator(GeneratorConfig(model=str(tiny_lm_dir), device="cpu"))


def _hand_loglik(model_dir, prompt, target: str) -> float:
    """log p(target | prompt) from the model's logits, computed independently of ``HFGenerator``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    text = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    p_ids = tok(text, add_special_tokens=False)["input_ids"]
    t_ids = tok(target, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p_ids + t_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].double(), -1)
    return sum(float(logp[len(p_ids) + i - 1, t]) for i, t in enumerate(t_ids))


def test_lm_feedback_is_the_models_likelihood(generator, tiny_lm_dir):
    cands = [Demo("a", "What is the capital of Italy?", "Rome", 0.0, "qa"),
             Demo("b", "How many legs does a spider have?", "eight", 0.0, "qa")]
    scores = lm_feedback(generator, "qa", "What is the capital of France?", "Paris", cands)
    spec = resolve_answer_task("qa")[1]
    for cand, score in zip(cands, scores):
        prompt = build_prompt(spec, "What is the capital of France?", demos=[cand], count_tokens=generator.count_tokens,
                              budget=generator.config.max_input_tokens)[0]
        assert cand.input in prompt[1]["content"] and cand.output == prompt[2]["content"]
        assert "Passages" not in prompt[-1]["content"]
        assert score == pytest.approx(_hand_loglik(tiny_lm_dir, prompt, "Paris"), abs=1e-3)
        assert score < 0
    assert scores[0] != scores[1]


def test_round_one_candidates_exclude_the_query(pools):
    bm25 = BM25DemoSource(pools["dir"])
    pool = bm25.pool("qa")
    config = DemoTrainConfig(candidates=3, max_queries=4, seed=1)
    queries = _queries("qa", pools["qa"], pool, config, random.Random(0))
    assert len(queries) == 4
    _mine(queries, {"qa": pool}, bm25, None, {}, config, 0, random.Random(0))
    for q in queries:
        assert len(q.rows) == 3 and len(set(q.rows)) == 3 and pool.row[q.id] not in q.rows
    bm25.close()


def test_tiny_training_changes_udr_ranking(pools, generator, tmp_path, one_thread):
    out = tmp_path / "udr"
    config = DemoTrainConfig(candidates=3, rounds=2, epochs=1, batch_size=6, lr=5e-4, max_queries=6, device="cpu",
                             seed=0)
    summary = train_demos(pools["dir"], {"qa": pools["qa"], "fact_check": pools["claims"]}, generator, out, config,
                          progress=False)
    assert len(summary["rounds"]) == 2
    for r in summary["rounds"]:
        assert math.isfinite(r["loss"]) and r["feedback"]["pairs"] == 12 * 3
        assert r["feedback"]["mean_loglik"] < 0
    assert summary["tasks"]["qa"] == {"train_file": str(pools["qa"].resolve()), "queries": 6, "pool": 6}
    assert json.loads((out / "train.json").read_text())["rounds"][0]["loss"] == summary["rounds"][0]["loss"]
    assert (out / "encoder").is_dir() and sorted(p.name for p in out.iterdir()) == [
        "encoder", "fact_check", "qa", "train.json"]
    assert json.loads((out / "qa" / "demos.json").read_text())["encoder_local"] is True

    query = "What city is the capital of France?"
    before = load_demo_source(pools["dir"], "udr", device="cpu").search(query, 6, task="qa")
    trained = load_demo_source(out, "udr", device="cpu")
    after = trained.search(query, 6, task="qa")
    assert {d.id for d in after} == {rid for rid, _, _ in QA}
    assert [(d.id, round(d.score, 4)) for d in after] != [(d.id, round(d.score, 4)) for d in before]
    claims = trained.search("The Eiffel Tower stands in Berlin.", 3, task="fact_check")
    assert all(d.task == "fact_check" and d.id in {rid for rid, _, _ in CLAIMS} for d in claims)
    assert load_demo_source(out, "bm25").search(query, 1, task="qa")[0].id == "qa-1"
    # the pools re-indexed with the trained encoder: the index's own vectors match that encoder
    pool = DemoPool(out, "qa")
    assert pool.index.component("dense").model == str((out / "encoder").resolve())
    pool.close()


def test_train_errors(pools, generator, tmp_path):
    with pytest.raises(NotFoundError, match="known tasks"):
        train_demos(pools["dir"], {"nope": pools["qa"]}, generator, tmp_path / "x", progress=False)
    with pytest.raises(GenretError, match="must differ"):
        train_demos(pools["dir"], {"qa": pools["qa"]}, generator, pools["dir"], progress=False, force=True)
    assert not (tmp_path / "x").exists()
