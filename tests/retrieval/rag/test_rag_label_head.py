"""The label head: batched prompt features equal one prompt at a time; fitting finds the direction that separates
the labels and held out it is chance on noise; head files are checked on load; the pipeline decides by the head
for its model and labels and falls back to rank classification otherwise; ``genret train labels`` writes a head
the pipeline loads."""

from __future__ import annotations

import json
import math
import random

import pytest

from genret.core import ConfigError, GenretError, IndexFormatError
from genret.retrieval import GeneratorConfig, Hit, Provenance, RagConfig, RagPipeline
from genret.retrieval.rag import HFGenerator, LabelHead, fit_label_head, held_out_predictions

LABELS = ("SUPPORTS", "REFUTES")


@pytest.fixture(scope="module")
def generator(tiny_chat_lm_dir):
    # float32: the padding test below compares batched and single features to 1e-4 (bf16 moves them ~1e-2)
    return HFGenerator(GeneratorConfig(model=str(tiny_chat_lm_dir), device="cpu", max_new_tokens=8,
                                       max_input_tokens=512, batch_size=3, dtype="float32"))


def _prompt(claim: str) -> list[dict]:
    return [{"role": "system", "content": "Answer SUPPORTS or REFUTES."}, {"role": "user", "content": claim}]


def test_batched_features_equal_one_prompt_at_a_time(generator):
    claims = ["Python was created by Guido van Rossum.", "Everest is low.",
              "Chlorophyll absorbs mostly blue and red light, and oxygen is released as a by-product of it.", "x"]
    batched = generator.prompt_features([_prompt(c) for c in claims], (0.5, 1.0))  # 3 per batch: padded rows
    assert len(batched) == 4 and all(len(v) == 64 for v in batched)  # the tiny model's hidden size
    for claim, row in zip(claims, batched):
        alone = generator.prompt_features([_prompt(claim)], (0.5, 1.0))[0]
        assert row == pytest.approx(alone, abs=1e-4)
    # other layers, other features; the depth is clamped to the model's layers
    assert generator.prompt_features([_prompt("x")], (0.0, 0.0))[0] != pytest.approx(batched[3], abs=1e-3)
    assert generator.prompt_features([_prompt("x")], (1.0, 1.0)) == generator.prompt_features([_prompt("x")],
                                                                                           (0.9, 1.0))


def _data(n: int, signal: float, seed: int = 0) -> tuple[list[list[float]], list[str]]:
    rng = random.Random(seed)
    golds = [LABELS[i % 3 == 0] for i in range(n)]  # 2:1, like the mini-KILT claims
    feats = [[rng.gauss(0, 1) + (signal if g == "REFUTES" else 0.0), rng.gauss(5, 3), rng.gauss(0, 1)]
             for g in golds]
    return feats, golds


def test_fitting_finds_the_feature_that_separates_the_labels():
    feats, golds = _data(60, signal=6.0)
    head = fit_label_head(feats, golds, LABELS, model="m", l2=1.0)
    assert head.pick(feats) == golds
    z0 = [w[0] for w in head.weights]
    assert z0[1] - z0[0] > 1.0 and all(abs(w[1]) < abs(z0[1] - z0[0]) / 4 for w in head.weights)
    assert head.pick([[10.0, 5.0, 0.0], [-10.0, 5.0, 0.0]]) == ["REFUTES", "SUPPORTS"]
    held = held_out_predictions(feats, golds, LABELS, l2=1.0, folds=5)
    assert sum(p == g for p, g in zip(held, golds)) >= 58


def test_on_noise_held_out_accuracy_is_chance_not_the_training_fit():
    feats, golds = _data(90, signal=0.0, seed=3)
    rng = random.Random(7)
    noisy = [f + [rng.gauss(0, 1) for _ in range(40)] for f in feats]
    head = fit_label_head(noisy, golds, LABELS, model="m", l2=0.01)
    train = sum(p == g for p, g in zip(head.pick(noisy), golds)) / len(golds)
    held = held_out_predictions(noisy, golds, LABELS, l2=0.01, folds=5)
    held_acc = sum(p == g for p, g in zip(held, golds)) / len(golds)
    assert train > 0.8 and held_acc < 0.75  # the fit memorises; held out it does not beat the 2:1 majority much


def test_fitting_refuses_what_it_cannot_fit():
    with pytest.raises(GenretError, match="not in the label set"):
        fit_label_head([[0.0], [1.0]], ["SUPPORTS", "MAYBE"], LABELS, model="m")
    with pytest.raises(GenretError, match="nothing to tell apart"):
        fit_label_head([[0.0], [1.0]], ["SUPPORTS", "SUPPORTS"], LABELS, model="m")
    with pytest.raises(GenretError, match="feature vectors"):
        fit_label_head([[0.0]], ["SUPPORTS", "REFUTES"], LABELS, model="m")


def test_head_files_are_checked_on_load(tmp_path):
    feats, golds = _data(30, signal=4.0)
    head = fit_label_head(feats, golds, LABELS, model="m", l2=1.0, fitted_on="toy")
    path = tmp_path / "head.json"
    head.save(path)
    again = LabelHead.load(path)
    assert again == head and again.pick(feats) == head.pick(feats)
    data = json.loads(path.read_text())
    for broken, match in (({**data, "format": "genret-label-head/9"}, "format"),
                          ({**data, "bias": [0.0]}, "shapes disagree"),
                          ({**data, "scale": [0.0] * 3}, "positive")):
        path.write_text(json.dumps(broken))
        with pytest.raises(IndexFormatError, match=match):
            LabelHead.load(path)
    path.write_text("{not json")
    with pytest.raises(IndexFormatError, match="not a label head"):
        LabelHead.load(path)
    with pytest.raises(IndexFormatError):
        LabelHead.load(tmp_path / "missing.json")
    with pytest.raises(GenretError, match="reads 3 features"):
        head.pick([[0.0, 1.0]])


def test_the_packaged_head_reads_the_packaged_model():
    from genret.core import DEFAULT_LM

    head = LabelHead.default()
    assert head.applies(DEFAULT_LM, LABELS) and not head.applies("other", LABELS)
    assert not head.applies(DEFAULT_LM, ("SUPPORTS", "REFUTES", "NOT ENOUGH INFO"))
    assert len(head.mean) == 576 and "scifact" in head.fitted_on and "climate_fever" in head.fitted_on


class _Retriever:
    def batch_search(self, queries, k, task=None):
        hit = Hit(unit_id=1, score=1.0, rank=1, text="Python was created by Guido van Rossum.",
                  provenance=Provenance("p-python", "Python", 1, 1, 0, 40))
        return [[hit] for _ in queries]


def _head_for(generator, bias: list[float], labels=LABELS) -> LabelHead:
    d = len(generator.prompt_features([_prompt("x")], (0.6, 0.6))[0])
    return LabelHead(model=generator.config.model, labels=labels, mean=[0.0] * d, scale=[1.0] * d,
                     weights=[[0.0] * d for _ in labels], bias=bias)


def test_the_pipeline_decides_by_the_head_for_its_model_and_labels(generator, tmp_path):
    claims = ["Python was created by Guido van Rossum.", "Python was created by nobody."]
    ranked = RagPipeline(generator, _Retriever(), config=RagConfig(passages=1, demos=0, label_head="none"))
    ranked_answers = ranked.batch_answer(claims, task="fact_check")
    by_rank = [a.answer for a in ranked_answers]
    assert {a.method for a in ranked_answers} == {"label scores"}
    assert all(0.5 <= a.confidence <= 1.0 for a in ranked_answers)  # the chosen label's share of two
    for bias in ([0.0, 1.0], [1.0, 0.0]):
        path = tmp_path / "head.json"
        _head_for(generator, bias).save(path)
        pipe = RagPipeline(generator, _Retriever(), config=RagConfig(passages=1, demos=0, label_head=str(path)))
        want = LABELS[bias.index(1.0)]
        headed = pipe.batch_answer(claims, task="fact_check")
        assert [a.answer for a in headed] == [want, want] and {a.method for a in headed} == {"label head"}
        assert [a.confidence for a in headed] == [pytest.approx(math.e / (1 + math.e), abs=1e-4)] * 2  # softmax
        events = list(pipe.stream_events(claims[0], task="fact_check"))
        assert events[-1][1].answer == want and events[-1][1].method == "label head"
        assert events[-1][1].confidence == headed[0].confidence
        # another label set: the head does not apply, rank classification decides
        other = RagPipeline(generator, _Retriever(), config=RagConfig(passages=1, demos=0, label_head=str(path),
                                                                      labels=("TRUE", "FALSE")))
        assert {a.answer for a in other.batch_answer(claims, task="fact_check")} <= {"TRUE", "FALSE"}
    # the packaged head is for the packaged model: with another model, rank classification as before
    packaged = RagPipeline(generator, _Retriever(), config=RagConfig(passages=1, demos=0))
    assert [a.answer for a in packaged.batch_answer(claims, task="fact_check")] == by_rank
    # a head file fitted for another model is refused at once
    foreign = tmp_path / "foreign.json"
    _head_for(generator, [0.0, 1.0]).model_copy(update={"model": "someone/else"}).save(foreign)
    with pytest.raises(ConfigError, match="someone/else"):
        RagPipeline(generator, _Retriever(), config=RagConfig(passages=1, demos=0, label_head=str(foreign)))


CLAIMS = [
    ("c1", "The 1973 oil crisis began in October 1973.", "SUPPORTS"),
    ("c2", "The oil embargo ended in 1990.", "REFUTES"),
    ("c3", "Chlorophyll absorbs mostly blue and red light.", "SUPPORTS"),
    ("c4", "Photosynthesis converts chemical energy into light.", "REFUTES"),
    ("c5", "Python was created by Guido van Rossum.", "SUPPORTS"),
    ("c6", "Python was created by Edmund Hillary.", "REFUTES"),
    ("c7", "Everest was first climbed in 1953.", "SUPPORTS"),
    ("c8", "Mount Everest is in the Alps.", "REFUTES"),
    ("c9", "Jazz originated in New Orleans.", "SUPPORTS"),
    ("c10", "Louis Armstrong had no influence on jazz.", "REFUTES"),
]


def test_genret_train_labels_writes_a_head_the_pipeline_uses(tiny_index, tiny_lm_dir, tmp_path, capsys):
    from genret.serving import main

    train = tmp_path / "claims.jsonl"
    train.write_text("".join(json.dumps({"id": i, "input": c, "output": [{"answer": a}]}) + "\n"
                             for i, c, a in CLAIMS))
    out = tmp_path / "head.json"
    code = main(["train", "labels", str(tiny_index), str(train), "--task", "fact_check", "--also", "scifact",
                 "none", str(train), "--out", str(out), "--retriever", "bm25", "--generator-model", str(tiny_lm_dir),
                 "--device", "cpu", "--folds", "2", "--l2", "1,10", "--depth", "0.5-1", "--quiet"])
    assert code == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["claims"] == 20 and stats["l2"] in (1.0, 10.0) and set(stats["tasks"]) == {"fact_check", "scifact"}
    row = stats["tasks"]["fact_check"]
    assert row["majority"] == 50.0 and 0 <= row["accuracy_held_out_l2_1"] <= 100
    head = LabelHead.load(out)
    assert head.model == str(tiny_lm_dir) and head.depth == (0.5, 1.0) and head.labels == LABELS
    assert "fact_check" in head.fitted_on and "bm25" in head.fitted_on
    code = main(["rag", str(tiny_index), CLAIMS[0][1], "--task", "fact_check", "--retriever", "bm25",
                 "--generator-model", str(tiny_lm_dir), "--device", "cpu", "--label-head", str(out), "--json"])
    assert code == 0 and json.loads(capsys.readouterr().out)["answer"] in LABELS
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "b", "input": "x", "output": [{"answer": "MAYBE"}]}) + "\n")
    assert main(["train", "labels", str(tiny_index), str(bad), "--task", "fact_check", "--out", str(tmp_path / "b"),
                 "--generator-model", str(tiny_lm_dir), "--device", "cpu", "--quiet"]) != 0
    assert "MAYBE" in capsys.readouterr().err and not (tmp_path / "b").exists()


def test_a_training_claim_is_not_its_own_demonstration(generator, tmp_path, monkeypatch):
    from genret.retrieval.demos import build_demo_pool, load_demo_source
    from tests.retrieval.demos.demo_pools import write_pools

    _, claims = write_pools(tmp_path)
    build_demo_pool(claims, "fact_check", tmp_path / "demos", device="cpu", progress=False)
    source = load_demo_source(tmp_path / "demos", "udr", device="cpu")
    seen: list = []
    real = generator.prompt_features

    def recording(prompts, depth):
        seen.extend(prompts)
        return real(prompts, depth)

    monkeypatch.setattr(generator, "prompt_features", recording)
    try:
        pipe = RagPipeline(generator, None, source, RagConfig(passages=0, demos=1, label_head="none"))
        claim = "The Eiffel Tower is located in Berlin."
        free, kept = (pipe.label_features([claim], task="fact_check", exclude=ex)[0] for ex in (None, [["fc-1"]]))
        shown = [" ".join(m["content"] for m in p[1:-1]) for p in seen]  # the demonstration turns
        assert claim in shown[0] and claim not in shown[1] and shown[1]
        assert free != pytest.approx(kept, abs=1e-4)
    finally:
        source.close()


def test_a_head_reads_only_the_kind_of_prompt_it_was_fitted_on(generator, tmp_path):
    """Demonstrations move the hidden state more than claims do: a head fitted without them does not decide for
    prompts with them (rank classification does), and one fitted with them decides only for those."""
    from genret.retrieval.demos import build_demo_pool, load_demo_source
    from tests.retrieval.demos.demo_pools import write_pools

    _, claims = write_pools(tmp_path)
    build_demo_pool(claims, "fact_check", tmp_path / "demos", device="cpu", progress=False)
    source = load_demo_source(tmp_path / "demos", "udr", device="cpu")
    claim = ["Python was created by nobody."]
    try:
        ranked = RagPipeline(generator, _Retriever(), source, RagConfig(passages=1, demos=1, label_head="none"))
        plain = RagPipeline(generator, _Retriever(), None, RagConfig(passages=1, demos=0, label_head="none"))
        by_rank = ranked.batch_answer(claim, task="fact_check")[0].answer  # with a demonstration
        by_rank_plain = plain.batch_answer(claim, task="fact_check")[0].answer
        for forced in LABELS:
            bias = [float(forced == "SUPPORTS"), float(forced == "REFUTES")]
            for demos in (0, 2):
                path = tmp_path / f"head{demos}.json"
                _head_for(generator, bias).model_copy(update={"demos": demos}).save(path)
                assert LabelHead.load(path).demos == demos
                with_demos = RagPipeline(generator, _Retriever(), source,
                                         RagConfig(passages=1, demos=1, label_head=str(path)))
                without = RagPipeline(generator, _Retriever(), None,
                                      RagConfig(passages=1, demos=0, label_head=str(path)))
                got = (with_demos.batch_answer(claim, task="fact_check")[0].answer,
                       without.batch_answer(claim, task="fact_check")[0].answer)
                assert got == ((by_rank, forced) if demos == 0 else (forced, by_rank_plain))
    finally:
        source.close()


def test_default_demos_skip_label_tasks_whose_head_reads_prompts_without_them(tmp_path):
    from genret.retrieval.rag import default_demos

    def head(model, demos, labels=LABELS):
        path = tmp_path / f"head-{model}-{demos}-{len(labels)}.json"
        LabelHead(model=model, labels=labels, mean=[0.0], scale=[1.0], weights=[[0.0] for _ in labels],
                  bias=[0.0] * len(labels), demos=demos).save(path)
        return str(path)

    plain = RagConfig(demos=2, label_head=head("m", 0))
    assert default_demos(plain, "m", "fact_check") == 0  # with demonstrations the head would step aside
    assert default_demos(plain, "m", "qa") == 2  # not a label task
    assert default_demos(plain, "m", None) == 2
    assert default_demos(RagConfig(demos=2, label_head=head("m", 3)), "m", "fact_check") == 2  # fitted with them
    assert default_demos(RagConfig(demos=2, label_head="none"), "m", "fact_check") == 2
    assert default_demos(RagConfig(demos=2, label_head=head("m", 0), label_scoring=False), "m", "fact_check") == 2
    other = RagConfig(demos=2, label_head=head("m", 0), labels=("TRUE", "FALSE", "UNSURE"))
    assert default_demos(other, "m", "fact_check") == 2  # the head's labels are not the task's
    with pytest.raises(ConfigError, match="fitted for the model 'm'"):
        default_demos(plain, "another", "fact_check")
    packaged = RagConfig(demos=2)  # the packaged head: the packaged model's, without demonstrations
    assert default_demos(packaged, LabelHead.default().model, "scifact") == 0
    assert default_demos(packaged, "a-user-model", "scifact") == 2
