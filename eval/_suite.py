"""Evaluation suites: several tasks × several retrievers in one command, one table, one plot per task.

A suite is a TOML (or JSON) file::

    name = "minikilt-dev"
    k = 100                      # hits retrieved per record
    ks = [1, 5, 20, 100]         # cut-offs reported
    retrievers = ["dense", "bm25"]
    levels = ["page", "passage"]
    baseline = "bm25"            # optional: the retriever the others are tested against (default: the first)
    significance = "t-test"      # paired test over queries: "t-test", "permutation" or "none"
    alpha = 0.05

    [[tasks]]
    name = "squad"
    index = "indexes/squad"      # relative paths are relative to the suite file
    file = "data/squad/dev.jsonl"
    levels = ["passage"]         # optional per-task override (also `retrievers`)

    [[tasks]]
    name = "scifact-beir"
    index = "indexes/scifact-beir"
    file = "data/scifact"        # a BEIR folder (or a query file with `qrels = "…"`)
    split = "test"               # BEIR: which qrels/SPLIT.tsv

``run_suite`` writes into the output directory: ``predictions/<task>.<retriever>.jsonl``, ``runs/<task>.<retriever>
.trec`` (TREC run files), ``results.json``, ``results.md`` and ``recall_<task>.png`` (recall@k per retriever and
level).  The table holds KILT's metrics (R-Prec, R@k, AiC@k) and the IR ones (nDCG@10, MRR@10, MAP); a cell is
marked † when that retriever differs significantly from the baseline on the same task and level (the paired test
over the per-query values of that metric, p < alpha); the p-values are in ``results.json``.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from genret.core import GenretError, InputError
from genret.indexing import Index

from ._ir_metrics import paired_p
from ._runner import DEFAULT_KS, LEVELS, default_ks, evaluate


class SuiteTask(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    index: Path
    file: Path
    qrels: Path | None = None
    split: str | None = None  # BEIR folders: which qrels/SPLIT.tsv (default test)
    retrievers: list[str] | None = None
    levels: list[str] | None = None


class SuiteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "suite"
    k: int = Field(100, ge=1)
    ks: list[int] = Field(default_factory=lambda: list(DEFAULT_KS))
    retrievers: list[str] = Field(default_factory=lambda: ["dense"])
    levels: list[str] = Field(default_factory=lambda: ["page", "passage"])
    baseline: str | None = None
    significance: Literal["t-test", "permutation", "none"] = "t-test"
    alpha: float = Field(0.05, gt=0, lt=1)
    tasks: list[SuiteTask] = Field(min_length=1)


def load_suite(path: str | Path) -> SuiteConfig:
    """Read a suite file (``.toml`` or ``.json``); relative paths resolve against its folder."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text()) if path.suffix == ".toml" else json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError("no such file", path=str(path)) from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot parse: {exc}", path=str(path)) from None
    try:
        suite = SuiteConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InputError(first["msg"], path=str(path), field=".".join(map(str, first["loc"]))) from None
    for task in suite.tasks:
        task.index = task.index if task.index.is_absolute() else path.parent / task.index
        task.file = task.file if task.file.is_absolute() else path.parent / task.file
        if task.qrels is not None and not task.qrels.is_absolute():
            task.qrels = path.parent / task.qrels
        for level in task.levels or suite.levels:
            if level not in LEVELS:
                raise InputError(f"unknown level {level!r}; use {sorted(LEVELS)}", path=str(path), field="levels")
    return suite


# the IR columns: (header, ir-measures name); MRR@10 and MAP are the means of RR@10 and AP
IR_COLUMNS = (("nDCG@10", "nDCG@10"), ("MRR@10", "RR@10"), ("MAP", "AP"))
TEST_NAMES = {"t-test": "paired t-test (scipy.stats.ttest_rel)",
              "permutation": "paired randomisation test (sign flips, exact or 10,000 rounds)"}


def _columns(ks: list[int]) -> list[tuple[str, str, str]]:
    """(header, where: metrics | ir, key) per table column."""
    cols = [("R-Prec", "metrics", "Rprec")] + [(f"R@{k}", "metrics", f"recall@{k}") for k in ks if k > 1]
    cols += [(f"AiC@{k}", "metrics", f"answer_in_context@{k}") for k in ks if k <= 20]
    return cols + [(head, "ir", key) for head, key in IR_COLUMNS]


def results_table(rows: list[dict], ks: list[int], footnote: str | None = None) -> str:
    """A Markdown table, one row per task × retriever × level, percentages; † marks a significant difference from
    the baseline (``row["significant"]``), explained in ``footnote``."""
    cols = _columns(ks)
    lines = ["| task | retriever | level | " + " | ".join(c for c, _, _ in cols) + " |",
             "|---|---|---|" + "---|" * len(cols)]
    for r in rows:
        marked = set(r.get("significant", ()))
        cells = [f"{r[where][key] * 100:.1f}{'†' if key in marked else ''}" if key in r.get(where, {}) else "–"
                 for _, where, key in cols]
        lines.append(f"| {r['task']} | {r['retriever']} | {r['level']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + (f"\n\n{footnote}" if footnote else "")


def mark_significance(rows: list[dict], per_query: list[dict], ks: list[int], suite: SuiteConfig) -> str | None:
    """Test every row against its task's baseline at the same level, metric by metric (the table's columns), over
    the queries both answered; sets ``row["p_values"]`` and ``row["significant"]``.  Returns the table's footnote."""
    if suite.significance == "none":
        return None
    keys = [key for _, _, key in _columns(ks)]
    baselines = set()
    for i, row in enumerate(rows):
        group = [j for j, other in enumerate(rows) if (other["task"], other["level"]) == (row["task"], row["level"])]
        name = suite.baseline or rows[group[0]]["retriever"]
        base = next((j for j in group if rows[j]["retriever"] == name), None)
        if base is None or base == i:
            continue
        baselines.add(name)
        p_values = {}
        for key in keys:
            mine, theirs = per_query[i].get(key), per_query[base].get(key)
            if mine is None or theirs is None:
                continue
            qids = sorted(set(mine) & set(theirs))
            p_values[key] = paired_p([mine[q] for q in qids], [theirs[q] for q in qids], suite.significance)
        row["p_values"] = p_values
        row["significant"] = [key for key, p in p_values.items() if p < suite.alpha]
    if not baselines:
        return None
    against = ", ".join(sorted(baselines))
    return (f"† differs from {against} on the same task and level: {TEST_NAMES[suite.significance]} over the "
            f"per-query values, two-sided, p < {suite.alpha:g}.")


def plot_recall(task: str, rows: list[dict], ks: list[int], path: Path) -> None:
    """recall@k against k (log scale) for every retriever of one task, one panel per level.  Series that coincide
    (several retrievers at 100 %) stay visible: each retriever has its own colour and marker, and its points are
    moved a little sideways (in log space) from the others'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = [lv for lv in ("page", "passage") if any(r["level"] == lv for r in rows)] or ["page"]
    retrievers = list(dict.fromkeys(r["retriever"] for r in rows))
    colours = plt.get_cmap("tab10")
    markers = "osD^vP*Xh<>"
    fig, axes = plt.subplots(1, len(levels), figsize=(5.2 * len(levels), 4.2), dpi=100, sharey=True, squeeze=False)
    for ax, level in zip(axes[0], levels):
        for i, name in enumerate(retrievers):
            r = next((r for r in rows if r["retriever"] == name and r["level"] == level), None)
            xs = [k for k in ks if r is not None and f"recall@{k}" in r["metrics"]]
            if not xs:
                continue
            dodge = 10 ** ((i - (len(retrievers) - 1) / 2) * 0.018)
            ax.plot([k * dodge for k in xs], [r["metrics"][f"recall@{k}"] * 100 for k in xs],
                    color=colours(i % 10), marker=markers[i % len(markers)], markersize=6, linewidth=1.4,
                    alpha=0.85, label=name)
        ax.set_xscale("log")
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.minorticks_off()
        ax.set_xlabel("k")
        ax.set_title(f"{level} level")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("recall@k (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=9, frameon=False)
    fig.suptitle(f"{task}: recall@k")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path)
    plt.close(fig)


def run_suite(suite: SuiteConfig | str | Path, out_dir: str | Path, *, progress: bool = True) -> dict:
    """Run every task × retriever of the suite; write predictions, runs, tables and plots into ``out_dir``."""
    if not isinstance(suite, SuiteConfig):
        suite = load_suite(suite)
    out = Path(out_dir)
    (out / "predictions").mkdir(parents=True, exist_ok=True)
    (out / "runs").mkdir(exist_ok=True)
    ks = sorted(set(suite.ks if "ks" in suite.model_fields_set else default_ks(suite.k)))
    rows: list[dict] = []
    per_query: list[dict] = []
    for task in suite.tasks:
        if not task.file.exists():
            raise InputError("no such file", path=str(task.file))
        with Index(task.index) as index:
            for retriever in task.retrievers or suite.retrievers:
                report = evaluate(index, task.file, retriever, suite.k, ks=tuple(ks),
                                  levels=tuple(task.levels or suite.levels), qrels=task.qrels, split=task.split,
                                  out=out / "predictions" / f"{task.name}.{retriever}.jsonl",
                                  trec_run=out / "runs" / f"{task.name}.{retriever}.trec", progress=progress,
                                  per_query=True)
                for level, metrics in report["levels"].items():
                    rows.append({"task": task.name, "retriever": report["retriever"], "level": level,
                                 "records": report["records"], "seconds": report["seconds"], "metrics": metrics,
                                 "ir": report["ir"].get(level, {})})
                    per_query.append(report["per_query"][level])
    if not rows:
        raise GenretError("the suite produced no results")
    footnote = mark_significance(rows, per_query, ks, suite)
    table = results_table(rows, ks, footnote)
    result = {"suite": suite.name, "k": suite.k, "ks": ks, "significance": suite.significance,
              "alpha": suite.alpha, "rows": rows}
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "results.md").write_text(f"# {suite.name}\n\n{table}\n")
    for task in suite.tasks:
        plot_recall(task.name, [r for r in rows if r["task"] == task.name], ks, out / f"recall_{task.name}.png")
    result["table"] = table
    return result
