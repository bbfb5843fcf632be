"""Label tasks: contextual calibration (Zhao et al. 2021) changes a biased model's decision as the formula says;
content-free priors are cached per layout; ``RagConfig.labels`` replaces a label task's label set."""

from __future__ import annotations

import math

import pytest

from genret.retrieval import GeneratorConfig, RagConfig, RagPipeline
from genret.retrieval.rag import Generator

CLAIM = "The moon is made of cheese."
BIASED = {"SUPPORTS": -0.5, "REFUTES": -1.2}  # the claim: SUPPORTS is more likely ...
PRIOR = {"SUPPORTS": -0.2, "REFUTES": -2.0}  # ... but the layout alone prefers SUPPORTS far more


class BiasedGenerator(Generator):
    """Scores labels by a table: one for prompts that show the claim, one for content-free prompts."""

    name = "biased"

    def __init__(self, labels: dict[str, dict[str, float]] | None = None) -> None:
        self.config = GeneratorConfig()
        self.calls: list[str] = []
        self.table = labels

    def generate(self, prompts, *, max_new_tokens=None, stop=()):
        return ["SUPPORTS" for _ in prompts]

    def loglik(self, prompts, targets):
        out = []
        for p, t in zip(prompts, targets):
            last = p[-1]["content"]
            self.calls.append(last)
            table = self.table or {}
            out.append(table.get(t, 0.0) if self.table else (BIASED[t] if CLAIM in last else PRIOR[t]))
        return out


def test_calibration_flips_a_biased_decision_as_the_formula_says():
    gen = BiasedGenerator()
    plain = RagPipeline(gen, config=RagConfig(passages=0, label_calibration="none"))
    assert plain.answer(CLAIM, task="scifact").answer == "SUPPORTS"
    calibrated = RagPipeline(gen, config=RagConfig(passages=0, label_calibration="content-free"))
    # p_cf = softmax(PRIOR) (every content-free input scores the same here); score = loglik - log p_cf
    z = math.log(sum(math.exp(v) for v in PRIOR.values()))
    score = {lab: BIASED[lab] - (PRIOR[lab] - z) for lab in BIASED}
    assert score["REFUTES"] > score["SUPPORTS"]
    assert calibrated.answer(CLAIM, task="scifact").answer == "REFUTES"
    prompt = calibrated.prepare([CLAIM], "scifact")[0][0]
    rows = calibrated._labels.scores(calibrated.tasks["scifact"], [prompt], [0])
    assert rows[0] == pytest.approx([score["SUPPORTS"], score["REFUTES"]])


def test_content_free_prompts_keep_the_layout_and_are_cached():
    gen = BiasedGenerator()
    pipe = RagPipeline(gen, config=RagConfig(passages=0, label_calibration="content-free"))
    pipe.batch_answer([CLAIM, CLAIM + " Really."], task="climate_fever")
    cf = [c for c in gen.calls if CLAIM not in c]
    assert len(cf) == 3 * 2  # three content-free inputs x two labels, once for the whole batch
    assert any("Claim: N/A" in c for c in cf) and any("Claim: [MASK]" in c for c in cf)
    gen.calls.clear()
    pipe.answer(CLAIM, task="climate_fever")
    assert all(CLAIM in c for c in gen.calls)  # the layout's prior is cached


def test_a_uniform_prior_leaves_the_decision_alone():
    gen = BiasedGenerator({"SUPPORTS": -1.0, "REFUTES": -3.0})
    for cal in ("none", "content-free"):
        assert RagPipeline(gen, config=RagConfig(passages=0, label_calibration=cal)).answer(
            CLAIM, task="scifact").answer == "SUPPORTS"


def test_labels_option_replaces_the_label_set():
    gen = BiasedGenerator({"SUPPORTS": -3.0, "REFUTES": -3.0, "NOT ENOUGH INFO": -0.1})
    pipe = RagPipeline(gen, config=RagConfig(passages=0, label_calibration="none",
                                             labels=("SUPPORTS", "REFUTES", "NOT ENOUGH INFO")))
    result = pipe.answer(CLAIM, task="scifact")
    assert result.answer == "NOT ENOUGH INFO"
    assert "SUPPORTS or REFUTES or NOT ENOUGH INFO" in result.prompt[-1]["content"]
    assert pipe.tasks["squad"].labels == ()  # only label tasks change


def test_batch_calibration_subtracts_the_batch_mean_label_distribution():
    table = {"a": {"SUPPORTS": -0.1, "REFUTES": -2.5}, "b": {"SUPPORTS": -0.3, "REFUTES": -1.5}}

    class PerClaim(BiasedGenerator):
        def loglik(self, prompts, targets):
            return [table["a" if "Claim: a" in p[-1]["content"] else "b"][t] for p, t in zip(prompts, targets)]

    gen = PerClaim()
    assert [r.answer for r in RagPipeline(gen, config=RagConfig(passages=0, label_calibration="none")).batch_answer(
        ["a", "b"], task="scifact")] == ["SUPPORTS", "SUPPORTS"]
    norm = {k: [math.exp(v["SUPPORTS"]), math.exp(v["REFUTES"])] for k, v in table.items()}
    norm = {k: [x / sum(v) for x in v] for k, v in norm.items()}
    mean = [(norm["a"][i] + norm["b"][i]) / 2 for i in range(2)]
    b = [math.log(norm["b"][i] / mean[i]) for i in range(2)]
    assert b[1] > b[0]  # b is less sure of SUPPORTS than the batch on average: REFUTES
    answers = RagPipeline(gen, config=RagConfig(passages=0, label_calibration="batch")).batch_answer(
        ["a", "b"], task="scifact")
    assert [r.answer for r in answers] == ["SUPPORTS", "REFUTES"]
