"""The label head: label tasks decided by a linear model over the generator's hidden state, fitted on training claims.

Asked "SUPPORTS or REFUTES?", a small model's answer follows the prompt's layout more than the claim and its
evidence: the packaged SmolLM2-135M answers SUPPORTS to nearly every mini-KILT claim, and calibration (``_labels``)
moves the threshold of its label margin, not its ranking.  The same model's hidden state at the position where it
would write the label holds more: a linear probe of it (Alain & Bengio 2016; as in Azaria & Mitchell 2023, "The
internal state of an LLM knows when it's lying") is right more often (README, "Labels: the label head").
``LabelHead`` is that probe:

    x            = mean over the layers in ``depth`` of the hidden state at the prompt's last position
    score(l | x) = w_l · (x − mean) / scale + b_l                   (a softmax over the label set; the decision: argmax)

fitted list-wise (``fit_label_head``: multinomial logistic regression, L2 on the standardised weights, L-BFGS in
torch) on training claims answered through the RAG pipeline as at inference (its retriever, passages and prompt;
``genret train labels``).  A head belongs to one model (its hidden states), one label set and one kind of prompt
(with or without demonstrations); the pipeline uses it only there and otherwise falls back to rank
classification.  The packaged head
(``label_head.json``) was fitted with the packaged model on mini-KILT scifact and climate_fever train claims.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from genret.core import GenretError, IndexFormatError, write_json_atomic

from ._packaged import packaged

HEAD_FORMAT = "genret-label-head/1"


class LabelHead(BaseModel):
    """A linear model over prompt features (``Generator.prompt_features``) picking one of ``labels``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    format: str = HEAD_FORMAT
    model: str = Field(description="the generator model whose hidden states the head reads")
    depth: tuple[float, float] = Field((0.6, 0.6), description="the layers averaged, as fractions of the depth")
    labels: tuple[str, ...] = Field(min_length=2)
    mean: list[float]
    scale: list[float]
    weights: list[list[float]] = Field(description="one row per label, one column per feature")
    bias: list[float]
    demos: int = Field(0, ge=0, description="demonstrations per prompt when fitted: a head fitted without them reads "
                                            "only prompts without them, and one fitted with them only prompts "
                                            "with them (demonstrations move the hidden state more than claims do)")
    fitted_on: str = ""

    @model_validator(mode="after")
    def _shapes(self) -> LabelHead:
        d, n = len(self.mean), len(self.labels)
        if (len(self.scale) != d or len(self.weights) != n or any(len(r) != d for r in self.weights)
                or len(self.bias) != n):
            raise ValueError(f"shapes disagree: {n} labels, {d} features (mean), {len(self.scale)} (scale), "
                             f"{len(self.weights)}×{len(self.weights[0]) if self.weights else 0} weights, "
                             f"{len(self.bias)} biases")
        if any(s <= 0 for s in self.scale):
            raise ValueError("scale must be positive")
        return self

    @classmethod
    def default(cls) -> LabelHead:
        """The packaged head (the packaged SmolLM2-135M; SUPPORTS / REFUTES)."""
        return packaged(cls, "label_head.json")

    @classmethod
    def load(cls, path: str | Path) -> LabelHead:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            if isinstance(data, dict) and data.get("format", HEAD_FORMAT) != HEAD_FORMAT:
                raise IndexFormatError(f"{path}: label head format {data.get('format')!r}, this genret reads "
                                       f"{HEAD_FORMAT}")
            return cls.model_validate(data)
        except (OSError, ValueError) as exc:
            raise IndexFormatError(f"{path}: not a label head file ({exc})") from exc

    def save(self, path: str | Path) -> None:
        write_json_atomic(Path(path), self.model_dump(mode="json"))

    def applies(self, model: str, labels: Sequence[str], with_demos: bool = False) -> bool:
        """Whether this head can decide for ``model``'s features among ``labels`` for prompts with or without
        demonstrations (same model, same label set, same kind of prompt as when fitted)."""
        return model == self.model and tuple(labels) == self.labels and with_demos == (self.demos > 0)

    def scores(self, features: Sequence[Sequence[float]]) -> list[list[float]]:
        """The linear scores per feature vector and label."""
        out = []
        for x in features:
            if len(x) != len(self.mean):
                raise GenretError(f"the label head reads {len(self.mean)} features, the generator gave {len(x)}: "
                                  f"fitted for another model ({self.model})")
            z = [(v - m) / s for v, m, s in zip(x, self.mean, self.scale)]
            out.append([b + sum(w * v for w, v in zip(row, z)) for row, b in zip(self.weights, self.bias)])
        return out

    def pick(self, features: Sequence[Sequence[float]]) -> list[str]:
        """The best label per feature vector (ties: the first label)."""
        return [self.labels[max(range(len(row)), key=row.__getitem__)] for row in self.scores(features)]


def fit_label_head(features: Sequence[Sequence[float]], golds: Sequence[str], labels: Sequence[str], *,
                   model: str, depth: tuple[float, float] = (0.6, 0.6), l2: float = 300.0, demos: int = 0,
                   fitted_on: str = "") -> LabelHead:
    """A head fitted on ``features`` (one vector per claim) and their gold labels (each one of ``labels``):
    multinomial logistic regression, L2 penalty ``l2`` on the weights over standardised features (L-BFGS, torch)."""
    import torch

    labels = tuple(labels)
    if len(labels) < 2:
        raise GenretError("a label head needs at least two labels")
    if len(features) != len(golds) or not features:
        raise GenretError(f"{len(features)} feature vectors for {len(golds)} gold labels")
    unknown = sorted({g for g in golds if g not in labels})
    if unknown:
        raise GenretError(f"gold labels {unknown} are not in the label set {list(labels)}")
    if len(set(golds)) < 2:
        raise GenretError(f"every training claim has the label {golds[0]!r}: nothing to tell apart")
    x = torch.tensor([list(map(float, f)) for f in features], dtype=torch.float64)
    y = torch.tensor([labels.index(g) for g in golds])
    mean, scale = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / scale
    w = torch.zeros(len(labels), x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(len(labels), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        opt.zero_grad()
        total = torch.nn.functional.cross_entropy(z @ w.T + b, y) + l2 * w.pow(2).sum() / (2 * len(y))
        total.backward()
        return total

    opt.step(loss)
    return LabelHead(model=model, depth=depth, labels=labels, demos=demos, mean=_rounded(mean), scale=_rounded(scale),
                     weights=[_rounded(r) for r in w.detach()], bias=_rounded(b.detach()), fitted_on=fitted_on)


def _rounded(t) -> list[float]:
    return [float(f"{v:.7g}") for v in t.tolist()]


def held_out_predictions(features: Sequence[Sequence[float]], golds: Sequence[str], labels: Sequence[str], *,
                         l2: float, folds: int = 5, seed: int = 0) -> list[str]:
    """Each claim's label by a head fitted on all folds but its own (folds drawn at random, ``seed``): what a fitted
    head does on claims it did not see.  Folds whose rest holds one label only predict that label."""
    order = list(range(len(golds)))
    random.Random(seed).shuffle(order)
    fold = {i: k % folds for k, i in enumerate(order)}
    out = [""] * len(golds)
    for k in range(folds):
        train = [i for i in range(len(golds)) if fold[i] != k]
        held = [i for i in range(len(golds)) if fold[i] == k]
        if not held:
            continue
        if len({golds[i] for i in train}) < 2:
            picked = [golds[train[0]] if train else labels[0]] * len(held)
        else:
            head = fit_label_head([features[i] for i in train], [golds[i] for i in train], labels, model="", l2=l2)
            picked = head.pick([features[i] for i in held])
        for i, p in zip(held, picked):
            out[i] = p
    return out

