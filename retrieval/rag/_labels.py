"""Label tasks (fact checking) by rank classification, with contextual calibration.

A small model asked "SUPPORTS or REFUTES?" answers SUPPORTS almost whatever the claim and the evidence: its
label preference is mostly a prior of the prompt layout (the instruction, the demonstrations, the label words'
own frequency).  Contextual calibration (Zhao et al. 2021, "Calibrate Before Use") measures that prior with
content-free inputs — the same prompt with the input (and here the passages too) replaced by ``N/A``, an empty
string, ``[MASK]`` — and divides it out::

    p_cf(l)    = mean over content-free inputs c of  softmax_l' loglik(l' | prompt(c))     (the layout's prior)
    score(l|x) = loglik(l | prompt(x)) − log p_cf(l)                                        (the decision: argmax)

(Zhao et al.'s ``W = diag(p_cf)^-1`` applied to the normalised label probabilities; the normalisation is one
constant per input, so the argmax is the same.)  The content-free prompt keeps the system message, the
demonstrations and the number of passages, so it is the same for every input of a batch that has no
demonstrations: its scores are cached per content-free prompt (one extra log-likelihood per label and layout).

``batch`` (Batch Calibration, Zhou et al. 2024) estimates the prior from the inputs themselves instead: the mean,
over the inputs of one call, of their normalised label probabilities — no extra model call, and no content-free
text whose own bias differs from real inputs' (with the packaged 135M model, "N/A" prefers SUPPORTS more
strongly than any real claim, so content-free calibration over-corrects to REFUTES).  A call with one input
falls back to content-free calibration.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Literal

from genret.core import GenretError

from .._contract import Hit, Provenance
from .._tasks import AnswerTask
from ._generator import Generator, Prompt
from ._prompt import render_user

Calibration = Literal["none", "content-free", "batch"]
CONTENT_FREE_INPUTS: tuple[str, ...] = ("N/A", "", "[MASK]")
_CACHE_SIZE = 4096


def content_free_prompt(spec: AnswerTask, prompt: Prompt, n_passages: int, text: str) -> Prompt:
    """``prompt`` with its last user message (passages + input) rebuilt around the content-free ``text``: as
    many passages as the prompt showed, each with ``text`` as title and body, and ``text`` as the input."""
    stand_in = [Hit(unit_id=0, score=0.0, rank=i, provenance=Provenance("", text, 0, 0, 0, 0), text=text)
                for i in range(1, n_passages + 1)]
    return [*prompt[:-1], {"role": "user", "content": render_user(spec, text, stand_in)}]


def _normalised(scores: Sequence[float]) -> list[float]:
    top = max(scores)
    z = sum(math.exp(s - top) for s in scores)
    return [math.exp(s - top) / z for s in scores]


def best_label(labels: Sequence[str], scores: Sequence[float]) -> tuple[str, float]:
    """The label with the highest score (ties: the first) and its softmax probability over ``scores``."""
    top = max(range(len(scores)), key=scores.__getitem__)
    return labels[top], _normalised(scores)[top]


class LabelScorer:
    """Picks a label per prompt by (calibrated) log-likelihood; caches content-free priors.  Thread-safe."""

    def __init__(self, generator: Generator, calibration: Calibration = "none",
                 inputs: Sequence[str] = CONTENT_FREE_INPUTS) -> None:
        self.generator = generator
        self.calibration = calibration
        self.inputs = tuple(inputs)
        self._priors: dict[tuple, list[float]] = {}
        self._lock = threading.Lock()

    def _loglik(self, prompts: Sequence[Prompt], labels: Sequence[str]) -> list[list[float]]:
        flat = self.generator.loglik([p for p in prompts for _ in labels], [lab for _ in prompts for lab in labels])
        n = len(labels)
        return [list(flat[i * n:(i + 1) * n]) for i in range(len(prompts))]

    def priors(self, spec: AnswerTask, prompts: Sequence[Prompt], n_passages: Sequence[int]) -> list[list[float]]:
        """``log p_cf(l)`` per prompt and label (computed once per distinct content-free layout)."""
        keys, todo = [], {}
        for prompt, n in zip(prompts, n_passages):
            cf = [content_free_prompt(spec, prompt, n, t) for t in self.inputs]
            key = (spec.labels, tuple(tuple(sorted(m.items())) for p in cf for m in p))
            keys.append(key)
            with self._lock:
                known = key in self._priors
            if not known and key not in todo:
                todo[key] = cf
        if todo:
            flat = [p for cf in todo.values() for p in cf]
            scores = self._loglik(flat, spec.labels)
            m = len(self.inputs)
            with self._lock:
                if len(self._priors) + len(todo) > _CACHE_SIZE:
                    self._priors.clear()
                for j, key in enumerate(todo):
                    probs = [_normalised(s) for s in scores[j * m:(j + 1) * m]]
                    mean = [sum(p[i] for p in probs) / m for i in range(len(spec.labels))]
                    self._priors[key] = [math.log(max(v, 1e-30)) for v in mean]
        with self._lock:
            return [self._priors.get(k) or [0.0] * len(spec.labels) for k in keys]

    def scores(self, spec: AnswerTask, prompts: Sequence[Prompt], n_passages: Sequence[int]) -> list[list[float]]:
        """The decision scores per prompt and label: log-likelihood, minus the log prior when calibrating."""
        raw = self._loglik(prompts, spec.labels)
        if self.calibration == "none":
            return raw
        if self.calibration == "batch" and len(raw) > 1:
            probs = [_normalised(row) for row in raw]
            mean = [math.log(max(sum(p[i] for p in probs) / len(probs), 1e-30)) for i in range(len(spec.labels))]
            return [[math.log(max(p, 1e-30)) - m for p, m in zip(row, mean)] for row in probs]
        prior = self.priors(spec, prompts, n_passages)
        return [[s - p for s, p in zip(row, pr)] for row, pr in zip(raw, prior)]

    def pick(self, spec: AnswerTask, prompts: Sequence[Prompt],
             n_passages: Sequence[int]) -> list[tuple[str, float]] | None:
        """The best label per prompt with its probability (the softmax of the decision scores over the label set);
        None when the generator cannot score continuations."""
        try:
            rows = self.scores(spec, prompts, n_passages)
        except GenretError:
            return None  # a backend that cannot score: the caller generates instead
        return [best_label(spec.labels, row) for row in rows]


def with_labels(tasks: dict[str, AnswerTask], labels: Sequence[str]) -> dict[str, AnswerTask]:
    """``tasks`` with every label task's label set replaced by ``labels`` (empty: unchanged)."""
    labels = tuple(x.strip() for x in labels if x.strip())
    if not labels:
        return tasks
    return {name: t.model_copy(update={"labels": labels}) if t.form == "label" else t for name, t in tasks.items()}
