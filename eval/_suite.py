"""Evaluation suites: several tasks × several retrievers in one command, one table, one plot per task.

A suite is a TOML (or JSON) file::

    name = "minikilt-dev"
    k = 100                      # hits retrieved per record
    ks = [1, 5, 20, 100]         # cut-offs reported
    retrievers = ["dense", "bm25"]
    levels = ["page", "passage"]

    [[tasks]]
    name = "squad"
    index = "indexes/squad"      # relative paths are relative to the suite file
    file = "data/squad/dev.jsonl"
    levels = ["passage"]         # optional per-task override (also `retrievers`)

``run_suite`` writes into the output directory: ``predictions/<task>.<retriever>.jsonl``,
``results.json``, ``results.md`` and ``recall_<task>.png`` (recall@k per retriever and level).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from genret.indexing import GenretError, Index, InputError

from ._runner import DEFAULT_KS, LEVELS, evaluate


class SuiteTask(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    index: Path
    file: Path
    retrievers: list[str] | None = None
    levels: list[str] | None = None


class SuiteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "suite"
    k: int = Field(100, ge=1)
    ks: list[int] = Field(default_factory=lambda: list(DEFAULT_KS))
    retrievers: list[str] = Field(default_factory=lambda: ["dense"])
    levels: list[str] = Field(default_factory=lambda: ["page", "passage"])
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
        for level in task.levels or suite.levels:
            if level not in LEVELS:
                raise InputError(f"unknown level {level!r}; use {sorted(LEVELS)}", path=str(path), field="levels")
    return suite


def _columns(ks: list[int]) -> list[tuple[str, str]]:
    cols = [("R-Prec", "Rprec")] + [(f"R@{k}", f"recall@{k}") for k in ks if k > 1]
    return cols + [(f"AiC@{k}", f"answer_in_context@{k}") for k in ks if k <= 20]


def results_table(rows: list[dict], ks: list[int]) -> str:
    """A Markdown table, one row per task × retriever × level, percentages."""
    cols = _columns(ks)
    lines = ["| task | retriever | level | " + " | ".join(c for c, _ in cols) + " |",
             "|---|---|---|" + "---|" * len(cols)]
    for r in rows:
        cells = [f"{r['metrics'][key] * 100:.1f}" if key in r["metrics"] else "–" for _, key in cols]
        lines.append(f"| {r['task']} | {r['retriever']} | {r['level']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_recall(task: str, rows: list[dict], ks: list[int], path: Path) -> None:
    """recall@k against k (log scale) for every retriever and level of one task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for r in rows:
        xs = [k for k in ks if f"recall@{k}" in r["metrics"]]
        ax.plot(xs, [r["metrics"][f"recall@{k}"] * 100 for k in xs], marker="o",
                linestyle="-" if r["level"] == "page" else "--", label=f"{r['retriever']} ({r['level']})")
    ax.set_xscale("log")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("k")
    ax.set_ylabel("recall@k (%)")
    ax.set_title(f"{task}: recall@k")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_suite(suite: SuiteConfig | str | Path, out_dir: str | Path, *, progress: bool = True) -> dict:
    """Run every task × retriever of the suite; write predictions, tables and plots into ``out_dir``."""
    if not isinstance(suite, SuiteConfig):
        suite = load_suite(suite)
    out = Path(out_dir)
    (out / "predictions").mkdir(parents=True, exist_ok=True)
    ks = sorted(set(suite.ks))
    rows: list[dict] = []
    for task in suite.tasks:
        if not task.file.is_file():
            raise InputError("no such file", path=str(task.file))
        with Index(task.index) as index:
            for retriever in task.retrievers or suite.retrievers:
                report = evaluate(index, task.file, retriever, suite.k, ks=tuple(ks),
                                  levels=tuple(task.levels or suite.levels),
                                  out=out / "predictions" / f"{task.name}.{retriever}.jsonl", progress=progress)
                for level, metrics in report["levels"].items():
                    rows.append({"task": task.name, "retriever": report["retriever"], "level": level,
                                 "records": report["records"], "seconds": report["seconds"], "metrics": metrics})
    if not rows:
        raise GenretError("the suite produced no results")
    table = results_table(rows, ks)
    result = {"suite": suite.name, "k": suite.k, "ks": ks, "rows": rows}
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "results.md").write_text(f"# {suite.name}\n\n{table}\n")
    for task in suite.tasks:
        plot_recall(task.name, [r for r in rows if r["task"] == task.name], ks, out / f"recall_{task.name}.png")
    result["table"] = table
    return result
