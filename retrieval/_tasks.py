"""The task registry: what genret knows about each task, in one place.

A task has a name, the prompt the generative retriever reads (and with it the identifier granularity it ranks by:
``PromptSpec``) and how RAG answers it (``AnswerTask``: instruction, answer form, labels).  Both are looked up by
name with ``resolve_task``: an unknown or missing name falls back to ``generic`` (logged once per name; the command
line refuses unknown names first, ``check_task``).  The UGR prompt kinds
(Unified Generative Retriever, Chen et al. 2023):

- ``discrete``: a text instruction placed before the query;
- ``continuous``: ``n_vectors`` learned prompt vectors (trained by ``genret train retriever``) and no text;
- ``hybrid``: learned vectors followed by the text instruction.

The granularity decides what is decoded and what is returned: ``entity`` decodes titles only (GENRE-style
identifiers) and ``page`` body n-grams and titles, both returning one hit per page; ``passage`` decodes body
n-grams and titles and returns units; ``sentence`` does the same and returns the best sentences of the best units.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from genret.core import NotFoundError

log = logging.getLogger("genret")

Granularity = Literal["page", "passage", "sentence", "entity"]


class PromptSpec(BaseModel):
    """One task prompt."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    instruction: str = ""
    granularity: Granularity = "passage"
    kind: Literal["discrete", "continuous", "hybrid"] = "discrete"
    n_vectors: int = Field(0, ge=0, description="learned prompt vectors (continuous / hybrid)")


class AnswerTask(BaseModel):
    """How a task is answered: instruction, answer form (short span, label, free text), labels, input name."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    instruction: str
    form: Literal["short", "label", "free"] = "short"
    labels: tuple[str, ...] = ()
    input_name: str = "Question"
    demo_instruction: str = "Represent the question for retrieving similar questions: "


class Task(BaseModel):
    """One task: its retrieval prompt and, where it has one, how RAG answers it (None: the generic answer)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    prompt: PromptSpec
    answer: AnswerTask | None = None


_GENERIC_PROMPT = PromptSpec(instruction="Write a passage of the collection that is relevant to the query.")
_QA_PROMPT = PromptSpec(instruction="Write the passage that answers the question.")
_FACT = AnswerTask(
    instruction="You verify claims. Decide whether the evidence supports or refutes the claim.",
    form="label", labels=("SUPPORTS", "REFUTES"), input_name="Claim",
    demo_instruction="Represent the claim for retrieving similar claims: ")
_QA = AnswerTask(instruction="You answer questions with a short answer (a few words) taken from the passages.")


TASKS: dict[str, Task] = {
    "generic": Task(prompt=_GENERIC_PROMPT,
                    answer=AnswerTask(instruction="You answer questions from the passages.", form="free")),
    "qa": Task(prompt=_QA_PROMPT, answer=_QA),
    "fact_check": Task(prompt=PromptSpec(instruction="Write the evidence sentence that supports or refutes the claim.",
                                         granularity="sentence"), answer=_FACT),
    "page": Task(prompt=PromptSpec(instruction="Write the title of the page that is relevant to the query.",
                                   granularity="page")),
    "entity": Task(prompt=PromptSpec(instruction="Write the name of the entity the text refers to.",
                                     granularity="entity")),
    "squad": Task(prompt=_QA_PROMPT, answer=_QA),
    # passage granularity for the two fact-checking tasks: measured on their train splits
    # (docs/src/results.md), it ranks pages as well as page granularity and passages better (page granularity keeps
    # one unit per page)
    "scifact": Task(prompt=PromptSpec(instruction="Write the title of the scientific abstract that supports or "
                                                  "refutes the claim."), answer=_FACT),
    "climate_fever": Task(prompt=_GENERIC_PROMPT, answer=_FACT),
}

DEFAULT_PROMPTS: dict[str, PromptSpec] = {name: task.prompt for name, task in TASKS.items()}
ANSWER_TASKS: dict[str, AnswerTask] = {name: task.answer for name, task in TASKS.items() if task.answer is not None}

Spec = TypeVar("Spec", PromptSpec, AnswerTask)


def resolve_task(task: str | None, registry: dict[str, Spec], default: dict[str, Spec]) -> tuple[str, Spec]:
    """``(name used, spec)`` from ``registry``; an unknown or missing task falls back to ``generic`` (the
    registry's own, else ``default``'s).  An unknown name is logged, once per name and process."""
    if task and task in registry:
        return task, registry[task]
    if task:
        _log_fallback(task, registry)
    return "generic", registry.get("generic", default["generic"])


_FALLEN_BACK: set[str] = set()
_FALLEN_BACK_LOCK = threading.Lock()


def _log_fallback(task: str, registry: dict) -> None:
    with _FALLEN_BACK_LOCK:
        if task in _FALLEN_BACK:
            return
        _FALLEN_BACK.add(task)
    log.warning("unknown task %r: using the generic one (known: %s)", task, ", ".join(sorted(registry)))


def check_task(task: str | None, extra: Iterable[str] = ()) -> str | None:
    """``task`` itself when it is None or a known name — the registry's (``TASKS``) or one of ``extra`` (e.g. a
    checkpoint's prompts, a demonstrations directory's pools); else ``NotFoundError`` listing the known names.
    For what a person typed (``--task``): a misspelling should not quietly become ``generic``."""
    known = set(TASKS) | set(extra)
    if task is None or task in known:
        return task
    raise NotFoundError(f"unknown task {task!r}; known tasks: {', '.join(sorted(known))}")
