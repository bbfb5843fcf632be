"""What ``evaluate()`` returns: ``EvalReport``, the metrics of one retriever on one task, each level's as a
``LevelMetrics`` attribute (``report.page``, ``report.passage``).

Both are read-only mappings too, so code written for the dict ``evaluate()`` used to return keeps working
(``report["levels"]["page"]["Rprec"]``); ``to_dict()`` is that dict (what ``genret eval --json`` prints).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EvalReport", "LevelMetrics"]

_SHORT = {"RR@10": "MRR@10", "AP": "MAP"}  # the means of ir-measures' RR@10 and AP


@dataclass(frozen=True, eq=False)
class LevelMetrics(Mapping[str, float]):
    """One level's metrics: KILT's (``kilt``, also this mapping's items: ``Rprec``, ``recall@k``, …) and the IR
    ones from ir-measures (``ir``: ``nDCG@10``, ``RR@10``, ``AP``, ``R@k``)."""

    level: str
    kilt: dict[str, float]
    ir: dict[str, float] = field(default_factory=dict)

    @property
    def rprec(self) -> float:
        """KILT's R-Precision."""
        return self.kilt["Rprec"]

    @property
    def recall(self) -> dict[int, float]:
        """KILT's recall@k by k."""
        return self._at("recall@")

    @property
    def precision(self) -> dict[int, float]:
        """KILT's precision@k by k."""
        return self._at("precision@")

    @property
    def answer_in_context(self) -> dict[int, float]:
        """answer_in_context@k by k (KILT tasks with answers only)."""
        return self._at("answer_in_context@")

    def _at(self, prefix: str) -> dict[int, float]:
        return {int(name[len(prefix):]): v for name, v in self.kilt.items() if name.startswith(prefix)}

    def __getitem__(self, name: str) -> float:
        return self.kilt[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.kilt)

    def __len__(self) -> int:
        return len(self.kilt)

    def summary(self) -> str:
        """``R-Prec=… R@k=… AiC@k=… | nDCG@10=… MRR@10=… MAP=…`` (percent)."""
        shown = {"R-Prec": self.kilt.get("Rprec")}
        shown.update({f"R@{k}": v for k, v in self.recall.items()})
        shown.update({f"AiC@{k}": v for k, v in self.answer_in_context.items()})
        text = " ".join(f"{name}={v * 100:.1f}" for name, v in shown.items() if v is not None)
        if self.ir:
            text += " | " + " ".join(f"{_SHORT.get(name, name)}={v * 100:.1f}" for name, v in self.ir.items())
        return text

    def __repr__(self) -> str:
        return f"LevelMetrics({self.level}: {self.summary()})"


@dataclass(frozen=True, eq=False)
class EvalReport(Mapping[str, Any]):
    """The metrics of ``retriever`` on ``task``'s first ``records`` records, ``k`` hits each: ``levels`` (KILT's
    metrics per level) and ``ir`` (ir-measures', judged by ``qrels``: a file, or ``gold provenance``);
    ``per_query`` when asked for (``{level: {metric: {record id: value}}}``)."""

    task: str
    records: int
    retriever: str
    k: int
    seconds: float
    levels: dict[str, dict[str, float]]
    ir: dict[str, dict[str, float]]
    qrels: str
    per_query: dict[str, dict[str, dict[str, float]]] | None = None

    def level(self, name: str) -> LevelMetrics | None:
        """The metrics at level ``name`` (None when it was not evaluated)."""
        if name not in self.levels:
            return None
        return LevelMetrics(name, self.levels[name], self.ir.get(name, {}))

    @property
    def page(self) -> LevelMetrics | None:
        return self.level("page")

    @property
    def passage(self) -> LevelMetrics | None:
        return self.level("passage")

    def to_dict(self) -> dict[str, Any]:
        """The plain dict (JSON-ready): ``task``, ``records``, ``retriever``, ``k``, ``seconds``, ``levels``, ``ir``,
        ``qrels`` and, when asked for, ``per_query``."""
        out = {"task": self.task, "records": self.records, "retriever": self.retriever, "k": self.k,
               "seconds": self.seconds, "levels": self.levels, "ir": self.ir, "qrels": self.qrels}
        if self.per_query is not None:
            out["per_query"] = self.per_query
        return out

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())

    def __repr__(self) -> str:
        head = f"EvalReport({self.task!r}, {self.records} records, retriever {self.retriever!r}, k={self.k}"
        levels = [f"{name}: {self.level(name).summary()}" for name in self.levels]  # type: ignore[union-attr]
        return head + "".join(f",\n  {line}" for line in levels) + ")"
