"""``genret adapt``'s report: R-Precision on the held-out fold per retriever before and after, and each row's gain
record by record with its standard error (``AdaptReport``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from genret.retrieval import Hit

REPORT_LEVELS = ("page", "passage")


@dataclass
class AdaptReport:
    """What ``adapt`` did: R-Precision (percent, page / passage) on the held-out fold per retriever ``before`` and
    ``after`` (``hybrid``: the default fusion before, the cross-validated chosen one after), the dense training's
    statistics, the chosen fusion, the reranker's fit (``reranked``: the fitted hybrid alone before, blended
    with the trained cross-encoder after, cross-validated), the minutes each stage took (``estimates``: the
    minutes the budget set aside for the stages after dense training, and the units a reranker would read), and
    what was skipped and why; ``threads``: the CPU threads torch computed with (the minutes depend on them: on
    mini-KILT squad one dense training step took 16.4 s on one of this machine's two cores and 10.5 s on both);
    ``gains``: per row, after against before record by record on the held-out fold (``_keep_rule.paired_gain``:
    the mean difference of the objective — R-Precision averaged over page and passage — in points, its standard
    error, how many records went up and down, and the sign test's p), which tells a gain from the noise of a small fold
    (mini-KILT climate_fever's 73 held-out claims: standard errors of 2.3–3.8 points)."""

    index: str
    train_records: int
    held_out_records: int
    before: dict[str, dict[str, float]] = field(default_factory=dict)
    after: dict[str, dict[str, float]] = field(default_factory=dict)
    dense: dict[str, Any] = field(default_factory=dict)
    fusion: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    rerank: dict[str, Any] = field(default_factory=dict)
    minutes: dict[str, float] = field(default_factory=dict)
    estimates: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    threads: int | None = None
    gains: dict[str, dict[str, float]] = field(default_factory=dict)

    def table(self) -> str:
        """A plain-text table of the held-out figures (the gain: the objective's, in points, ± its standard error)."""
        rows = [f"held-out R-Precision, {self.held_out_records} records (page / passage)",
                f"  {'retriever':<10} {'before':>13}   {'after':>13}   {'gain ± SE':>13}"]
        last = ("hybrid", "reranked")
        names = [n for n in self.before if n not in last] + [n for n in self.after if n not in self.before
                                                             and n not in last]
        for name in names + [n for n in last if n in self.before or n in self.after]:
            a = self.after.get(name, self.before.get(name))
            b = (f"{self.before[name]['page']:>5.1f} / {self.before[name]['passage']:>5.1f}" if name in self.before
                 else f"{'—':>13}")
            g = self.gains.get(name)
            gain = f"   {g['mean']:>+5.1f} ± {g['se']:>4.1f}" if g else ""
            rows.append(f"  {name:<10} {b}   {a['page']:>5.1f} / {a['passage']:>5.1f}{gain}")
        return "\n".join(rows)


def percent(metrics: dict[str, float]) -> dict[str, float]:
    """A metrics dict's REPORT_LEVELS in percent, to a tenth."""
    return {lv: round(100 * metrics[lv], 1) for lv in REPORT_LEVELS}


def hit_ids(lists: Sequence[Sequence[Hit]]) -> list[list[int]]:
    """Each hit list's unit ids, in rank order."""
    return [[h.unit_id for h in r] for r in lists]

