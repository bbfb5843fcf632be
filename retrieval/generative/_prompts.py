"""UGR task prompts: the registry's prompt per task (``retrieval._tasks``), name resolution, the prompt text."""

from __future__ import annotations

from typing import Literal

from .._tasks import DEFAULT_PROMPTS, Granularity, PromptSpec, resolve_task

__all__ = ["DEFAULT_PROMPTS", "Granularity", "PromptSpec", "prompt_text", "resolve_prompt"]


def resolve_prompt(task: str | None, registry: dict[str, PromptSpec]) -> tuple[str, PromptSpec]:
    """``(task name used, spec)``; unknown or missing tasks fall back to ``generic``."""
    return resolve_task(task, registry, DEFAULT_PROMPTS)


def prompt_text(spec: PromptSpec, query: str, target: Literal["body", "title"]) -> str:
    """The text the model reads before it writes an n-gram (body) or a title."""
    lead = spec.instruction.strip() + "\n" if spec.kind != "continuous" and spec.instruction else ""
    cue = "Title:" if target == "title" else "Text:"
    return f"{lead}Query: {' '.join(query.split())}\n{cue}"
