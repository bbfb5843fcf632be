"""The retriever contract: ``Retriever`` and the one frozen result type, ``Hit``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from genret.core import InputError
from genret.indexing import StoredUnit


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where a hit comes from, in KILT terms (paragraph ids from 1, end character exclusive)."""

    wikipedia_id: str
    title: str
    start_paragraph_id: int
    end_paragraph_id: int
    start_character: int
    end_character: int

    @classmethod
    def of(cls, unit: StoredUnit) -> Provenance:
        return cls(unit.page_id, unit.title, unit.start_paragraph, unit.end_paragraph, unit.start_char,
                   unit.end_char)


@dataclass(frozen=True, slots=True)
class Hit:
    """One retrieved unit: its id in the index, score, 1-based rank, provenance, (optional) text; for the
    generative retriever the n-grams that matched with their score contributions (explanations); for the hybrid
    retriever each member's rank of the unit (members that did not return it are absent)."""

    unit_id: int
    score: float
    rank: int
    provenance: Provenance
    text: str | None = None
    matched: tuple[tuple[str, float], ...] = ()
    member_ranks: tuple[tuple[str, int], ...] = ()

    def to_dict(self) -> dict:
        return asdict(self)


class Retriever(ABC):
    """Contract: ``search`` returns at most ``k`` hits, best first, ranks 1..n, scores non-increasing;
    ``batch_search`` returns one such list per query, in query order, equal to calling ``search`` on
    each.  ``k`` must be ≥ 1.  ``task`` names a task prompt; retrievers without task prompts ignore it.
    ``granularity`` (one of ``granularities``; None: the retriever's own) picks the identifier granularity a
    retriever ranks by; asking one that has none for a granularity raises ``InputError``
    (``check_granularity``).  ``close`` releases what the retriever holds; it cannot search afterwards.
    Implementations are safe to call from several threads."""

    name: str = "retriever"
    granularities: tuple[str, ...] = ()  # the granularities ``granularity=`` may ask for (empty: none)

    @abstractmethod
    def batch_search(self, queries: Sequence[str], k: int = 10, *, task: str | None = None,
                     granularity: str | None = None) -> list[list[Hit]]:
        """Hits for each query."""

    def search(self, query: str, k: int = 10, *, task: str | None = None,
               granularity: str | None = None) -> list[Hit]:
        """Hits for one query."""
        if granularity is None:
            return self.batch_search([query], k, task=task)[0]
        return self.batch_search([query], k, task=task, granularity=granularity)[0]

    def check_search(self, k: int, granularity: str | None) -> None:
        """What every search checks first: ``k`` ≥ 1 (``ValueError``) and the granularity (``InputError``)."""
        if k < 1:
            raise ValueError("k must be at least 1")
        self.check_granularity(granularity)

    def check_granularity(self, granularity: str | None) -> None:
        """Refuse a granularity this retriever does not rank by."""
        if granularity is not None and granularity not in self.granularities:
            takes = f"takes {', '.join(self.granularities)}" if self.granularities else "takes no granularity"
            raise InputError(f"the {self.name} retriever {takes} (asked for {granularity!r})")

    def close(self) -> None:  # noqa: B027 - a default, not an abstract method: most retrievers hold nothing
        """Release searchers, models or files this retriever holds (default: nothing)."""


@dataclass(frozen=True, slots=True)
class Demo:
    """One in-context demonstration from a task's training pool: its id, input, output, the retriever's score
    and the task it belongs to."""

    id: str
    input: str
    output: str
    score: float
    task: str

    def to_dict(self) -> dict:
        return asdict(self)
