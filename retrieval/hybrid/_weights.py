"""Fitted hybrid weights: the file ``genret tune`` writes into an index directory, and how ``load_hybrid`` uses it.

``hybrid-weights.json`` (format ``genret-hybrid-weights``, version 1) is self-describing: the members tried, the
fusion chosen (method, normalisation, RRF offset, depth, a weight per member — 0 drops a member), the objective
(KILT metric and levels), the dev file (path, sha256, records used, task), the index it was fitted on (corpus
sha256, unit count), the members' settings, and the metric of every member alone, of the default fusions and
of the chosen one.  It is written atomically (temporary file + rename) and is not part of the index manifest:
a bad file never stops an index from opening, only the hybrid retriever from loading (with a clear error).

Which weights a hybrid retriever uses (``effective_hybrid``): explicit ``weights`` win; else the fitted file
(``tuned``: ``auto`` = the index's file when present, or a path), when its members match the explicit
``retrievers`` (all it tried, or those it kept) and an explicit ``method``/``normalize`` agrees with it; else
the default weights (1 each, generative 0.25) over the configured members or every retriever the index supports.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from genret.core import ConfigError, IndexFormatError, read_versioned_json
from genret.indexing import Index

from ._fusion import HybridConfig

log = logging.getLogger(__name__)

WEIGHTS_FILE = "hybrid-weights.json"
FORMAT_NAME = "genret-hybrid-weights"
FORMAT_VERSION = 1


class DevInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    file: str
    sha256: str
    records: int = Field(ge=1)
    task: str | None = None


class IndexInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    corpus_sha256: str
    units: int


class Objective(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metric: str
    levels: list[str] = Field(min_length=1)


class TunedFusion(BaseModel):
    """The contents of ``hybrid-weights.json``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    format: Literal["genret-hybrid-weights"] = FORMAT_NAME
    format_version: int = FORMAT_VERSION
    genret_version: str
    created: str
    members: list[str] = Field(min_length=1, description="the members tried, in fusion order")
    method: Literal["rrf", "weighted"]
    normalize: Literal["minmax", "zscore"]
    rrf_k: int = Field(ge=0)
    depth: int = Field(ge=1)
    weights: dict[str, float]
    objective: Objective
    dev: DevInfo
    index: IndexInfo
    member_settings: dict[str, dict[str, Any]] = Field(default_factory=dict)
    results: dict[str, dict[str, float]] = Field(default_factory=dict,
                                                 description="label -> {level: metric, 'objective': mean}")
    search: dict[str, Any] = Field(default_factory=dict, description="grid step, candidates tried, methods")

    @model_validator(mode="after")
    def _check(self) -> TunedFusion:
        if set(self.weights) != set(self.members):
            raise ValueError(f"weights name {sorted(self.weights)}, members are {sorted(self.members)}")
        if any(not math.isfinite(w) or w < 0 for w in self.weights.values()):
            raise ValueError(f"weights must be finite and ≥ 0: {self.weights}")
        if not self.active:
            raise ValueError("every weight is 0")
        return self

    @property
    def active(self) -> list[str]:
        """The members kept (weight above 0), in fusion order."""
        return [m for m in self.members if self.weights[m] > 0]

    def hybrid_config(self, base: HybridConfig | None = None) -> HybridConfig:
        """The hybrid settings this file describes (the kept members only); ``base``'s explicit depth and
        ``tuned`` are kept."""
        explicit = base.model_fields_set if base is not None else set()
        depth = base.depth if base is not None and "depth" in explicit else self.depth
        return HybridConfig(retrievers=self.active, method=self.method, normalize=self.normalize, rrf_k=self.rrf_k,
                            depth=depth, weights={m: self.weights[m] for m in self.active},
                            tuned=base.tuned if base is not None else "auto")


def weights_path(index: Index | str | Path) -> Path:
    """Where ``genret tune`` writes by default: ``INDEX/hybrid-weights.json``."""
    return Path(getattr(index, "path", index)) / WEIGHTS_FILE


def write_tuned(path: str | Path, doc: TunedFusion) -> Path:
    """Write ``doc`` atomically to ``path`` (holding the write lock of the index directory it goes into)."""
    from genret.core import write_json_atomic, write_lock

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with write_lock(path.parent):
        write_json_atomic(path, doc.model_dump(mode="json"))
    return path


def read_tuned(path: str | Path) -> TunedFusion:
    """Read and validate a fitted-weights file; a missing, corrupt or foreign file raises ``IndexFormatError``."""
    path = Path(path)
    fix = f"run `genret tune` again, delete {path}, or use --hybrid-tuned off"
    if not path.is_file():
        raise IndexFormatError(f"no fitted hybrid weights at {path} (genret tune writes them)")
    return read_versioned_json(path, TunedFusion, tag_field="format", tag=FORMAT_NAME,
                               what="a genret hybrid-weights file", version=FORMAT_VERSION, fix=fix)


def _tuned_path(index: Index, tuned: str) -> Path | None:
    """Where ``hybrid.tuned`` points: None for ``off``, the index's file for ``auto``, else the path it names."""
    return None if tuned == "off" else weights_path(index) if tuned == "auto" else Path(tuned)


def _tuned_file(index: Index, tuned: str) -> Path | None:
    path = _tuned_path(index, tuned)
    if tuned != "auto" and path is not None and not path.is_file():  # a file named, and not there
        raise ConfigError(f"hybrid.tuned: no fitted hybrid weights at {path} (genret tune --out writes them)")
    return path if path is not None and path.exists() else None


def fitted_default(index: Index, hybrid: HybridConfig) -> bool:
    """Whether fitted fusion weights make the hybrid ``index``'s default retriever: ``genret tune`` or ``genret
    adapt`` wrote them (``INDEX/hybrid-weights.json``, or the file ``hybrid.tuned`` names) and neither members
    nor weights are configured over them — so that searches use what was fitted without flags.  A file that
    fails its check still makes the hybrid the default: loading it then says what is wrong."""
    if hybrid.weights is not None or hybrid.retrievers is not None:
        return False
    path = _tuned_path(index, hybrid.tuned)
    return path is not None and path.is_file()


def effective_hybrid(index: Index, hybrid: HybridConfig, available: list[str]) -> tuple[HybridConfig, Path | None]:
    """The hybrid settings to load over ``index`` (members always explicit; ``available``: the index's non-hybrid
    retrievers, the default members), and the fitted-weights file they came from (None: none used).  See the
    module doc for the precedence."""

    explicit = hybrid.model_fields_set
    if hybrid.weights is not None:  # explicit weights win; their names are the members when none are given
        members = hybrid.retrievers if hybrid.retrievers is not None else list(hybrid.weights)
        return HybridConfig.model_validate({**hybrid.model_dump(), "retrievers": members}), None
    path = _tuned_file(index, hybrid.tuned)
    if path is not None:
        doc = read_tuned(path)
        reason = _mismatch(doc, hybrid, explicit)
        if reason is None:
            if doc.index.corpus_sha256 != index.manifest.corpus.sha256:
                log.warning("hybrid weights %s were fitted on another version of this corpus (units %d, now %d); "
                            "using them anyway — run `genret tune` again to refit", path, doc.index.units,
                            len(index.store))
            log.info("hybrid: fitted weights from %s: %s %s", path, doc.method, doc.weights)
            return doc.hybrid_config(hybrid), path
        log.info("hybrid: not using the fitted weights in %s: %s", path, reason)
    members = hybrid.retrievers if hybrid.retrievers is not None else list(available)
    return hybrid.model_copy(update={"retrievers": members}), None


def _mismatch(doc: TunedFusion, hybrid: HybridConfig, explicit: set[str]) -> str | None:
    """Why the fitted ``doc`` does not apply to the explicitly configured ``hybrid`` (None: it applies)."""
    if hybrid.retrievers is not None and set(hybrid.retrievers) not in (set(doc.members), set(doc.active)):
        return f"fitted for members {doc.members}, asked for {hybrid.retrievers}"
    if "method" in explicit and hybrid.method != doc.method:
        return f"fitted with method {doc.method!r}, asked for {hybrid.method!r}"
    if "normalize" in explicit and doc.method == "weighted" and hybrid.normalize != doc.normalize:
        return f"fitted with normalisation {doc.normalize!r}, asked for {hybrid.normalize!r}"
    if "rrf_k" in explicit and doc.method == "rrf" and hybrid.rrf_k != doc.rrf_k:
        return f"fitted with rrf_k {doc.rrf_k}, asked for {hybrid.rrf_k}"
    return None
