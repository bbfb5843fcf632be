"""UGR task prompts: which task, which identifier granularity, and how the prompt is made.

Three kinds (Unified Generative Retriever, Chen et al. 2023):
- ``discrete``: a text instruction placed before the query;
- ``continuous``: ``n_vectors`` learned prompt vectors (trained by ``genret train retriever``) and no text;
- ``hybrid``: learned vectors followed by the text instruction.

The granularity decides what is decoded and what is returned: ``entity`` decodes titles only (GENRE-style
identifiers) and ``page`` body n-grams and titles, both returning one hit per page; ``passage`` decodes body
n-grams and titles and returns units; ``sentence`` does the same and returns the best sentences of the best units.
An unknown task falls back to the ``generic`` prompt.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Granularity = Literal["page", "passage", "sentence", "entity"]


class PromptSpec(BaseModel):
    """One task prompt."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    instruction: str = ""
    granularity: Granularity = "passage"
    kind: Literal["discrete", "continuous", "hybrid"] = "discrete"
    n_vectors: int = Field(0, ge=0, description="learned prompt vectors (continuous / hybrid)")


DEFAULT_PROMPTS: dict[str, PromptSpec] = {
    "generic": PromptSpec(instruction="Write a passage of the collection that is relevant to the query."),
    "qa": PromptSpec(instruction="Write the passage that answers the question."),
    "fact_check": PromptSpec(instruction="Write the evidence sentence that supports or refutes the claim.",
                             granularity="sentence"),
    "page": PromptSpec(instruction="Write the title of the page that is relevant to the query.",
                       granularity="page"),
    "entity": PromptSpec(instruction="Write the name of the entity the text refers to.", granularity="entity"),
    "squad": PromptSpec(instruction="Write the passage that answers the question."),
    # passage granularity for the two fact-checking tasks: measured on their train splits (README), it ranks pages
    # as well as page granularity and passages better (page granularity keeps one unit per page)
    "scifact": PromptSpec(instruction="Write the title of the scientific abstract that supports or refutes the "
                                      "claim."),
    "climate_fever": PromptSpec(instruction="Write a passage of the collection that is relevant to the query."),
}


def resolve_prompt(task: str | None, registry: dict[str, PromptSpec]) -> tuple[str, PromptSpec]:
    """``(task name used, spec)``; unknown or missing tasks fall back to ``generic``."""
    if task and task in registry:
        return task, registry[task]
    return "generic", registry.get("generic", DEFAULT_PROMPTS["generic"])


def prompt_text(spec: PromptSpec, query: str, target: Literal["body", "title"]) -> str:
    """The text the model reads before it writes an n-gram (body) or a title."""
    lead = spec.instruction.strip() + "\n" if spec.kind != "continuous" and spec.instruction else ""
    cue = "Title:" if target == "title" else "Text:"
    return f"{lead}Query: {' '.join(query.split())}\n{cue}"
