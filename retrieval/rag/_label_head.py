"""The label head: label tasks decided by a linear model over the generator's hidden state, fitted on training claims.

Asked "SUPPORTS or REFUTES?", a small model's answer follows the prompt's layout more than the claim and its
evidence: the packaged SmolLM2-135M answers SUPPORTS to nearly every mini-KILT claim, and calibration (``_labels``)
moves the threshold of its label margin, not its ranking.  The same model's hidden state at the position where it
would write the label holds more: a linear probe of it (Alain & Bengio 2016; as in Azaria & Mitchell 2023, "The
internal state of an LLM knows when it's lying") is right more often (docs/src/results.md, "Labels: the label
head").
``LabelHead`` is that probe:

    x            = mean over the layers in ``depth`` of the hidden state at the prompt's last position
    score(l | x) = w_l · (x − mean) / scale + b_l                   (a softmax over the label set; the decision: argmax)

fitted list-wise (``_label_head_fit``: multinomial logistic regression, L2 on the standardised weights, L-BFGS in
torch) on training claims answered through the RAG pipeline as at inference (its retriever, passages and prompt;
``genret train labels``).  A head belongs to one model (its hidden states), one label set and one kind of prompt
(with or without demonstrations); the pipeline uses it only there and otherwise falls back to rank
classification.  The packaged head
(``label_head.json``) was fitted with the packaged model on mini-KILT scifact and climate_fever train claims.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from genret.core import GenretError, IndexFormatError, write_json_atomic

from ._labels import best_label
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
        return [label for label, _ in self.decide(features)]

    def decide(self, features: Sequence[Sequence[float]]) -> list[tuple[str, float]]:
        """The best label per feature vector with the head's probability of it (the softmax of its scores)."""
        return [best_label(self.labels, row) for row in self.scores(features)]
