"""Demonstration pools: a task's training examples, indexed for demonstration retrieval (UDR).

A demos directory holds one sub-directory per task::

    demos/
      qa/
        demos.json     kind "demo-pool", format version, task, instruction, encoder, source file sha256,
                       counts, pool.jsonl size and sha256
        pool.jsonl     the examples, one {"id", "input", "output"} a line, in index order
        index/         a regular genret index of the inputs (one page a example, id = example id, text =
                       input): dense (FAISS flat) and BM25, with its own manifest and checks
      encoder/         (only in a `genret train demos` output) the trained bi-encoder all its pools use

A pool file is KILT task records (``input``, ``output[i]["answer"]``: the first non-empty answer; records
without one are skipped and counted) or plain JSONL ``{"id"?, "input", "output": str}`` (a missing id
becomes ``line-N``).  Each task directory is built in a staged sibling and renamed into place, so adding a
task never touches the others and a failed build leaves nothing behind.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from genret.core import (
    DEFAULT_DENSE_MODEL,
    GenretError,
    IndexFormatError,
    InputError,
    NotFoundError,
    read_versioned_json,
    sha256_file,
    staged_dir,
    write_json_atomic,
)
from genret.indexing import Index, open_text, read_manifest, write_manifest

from .._contract import Demo

log = logging.getLogger("genret")

POOL_MANIFEST = "demos.json"
POOL_FILE = "pool.jsonl"
INDEX_DIR = "index"
ENCODER_DIR = "encoder"
POOL_KIND = "demo-pool"
POOL_FORMAT_VERSION = 1
_TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class PoolManifest(BaseModel):
    """The contents of a task's ``demos.json``."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["demo-pool"] = POOL_KIND
    format_version: int = POOL_FORMAT_VERSION
    task: str
    instruction: str
    encoder: str
    encoder_local: bool = False  # True: ``encoder`` is a directory in the demos directory (a trained one)
    source: str
    source_sha256: str
    examples: int
    skipped_no_answer: int = 0
    skipped_bad: int = 0
    pool_size: int
    pool_sha256: str
    created: str
    build_seconds: float = 0.0


@dataclass(slots=True)
class PoolStats:
    """What reading a pool file saw."""

    examples: int = 0
    no_answer: int = 0
    bad: int = 0
    errors: list[str] = field(default_factory=list)


def check_task_name(task: str) -> str:
    if not isinstance(task, str) or not _TASK_NAME.match(task):
        raise GenretError(f"invalid task name {task!r}: use letters, digits, '_', '-', '.' (a directory name)")
    return task


def _answer(output: object, path: str, line: int) -> str | None:
    if isinstance(output, str):
        return output if output.strip() else None
    if not isinstance(output, list):
        raise InputError(f"expected a string or a list of KILT outputs, got {type(output).__name__}",
                         path=path, line=line, field="output")
    for item in output:
        if isinstance(item, dict) and isinstance(item.get("answer"), str) and item["answer"].strip():
            return item["answer"]
    return None


def read_pool(path: str | Path, *, skip_bad: bool = False, stats: PoolStats | None = None) -> list[dict]:
    """The examples ``{"id", "input", "output"}`` of a pool file, in file order (``.gz`` read transparently).

    A malformed line raises ``InputError`` naming file, line and field (with ``skip_bad``: skipped and
    counted in ``stats``); records without an answer are skipped and counted; a duplicate id is an error.
    """
    stats = stats if stats is not None else PoolStats()
    name = str(path)
    out: list[dict] = []
    seen: dict[str, int] = {}
    with open_text(path) as fh:
        for line_no, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                try:
                    rec = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise InputError(f"invalid JSON ({exc.msg} at column {exc.colno})", path=name,
                                     line=line_no) from None
                if not isinstance(rec, dict):
                    raise InputError(f"expected a JSON object, got {type(rec).__name__}", path=name, line=line_no)
                for key in ("input", "output"):
                    if key not in rec:
                        raise InputError("missing", path=name, line=line_no, field=key)
                if not isinstance(rec["input"], str) or not rec["input"].strip():
                    raise InputError("expected a non-empty string", path=name, line=line_no, field="input")
                rid = rec.get("id", f"line-{line_no}")
                if isinstance(rid, bool) or not isinstance(rid, (str, int)) or not str(rid).strip():
                    raise InputError("expected a non-empty string or integer id", path=name, line=line_no,
                                     field="id")
                rid = str(rid).strip()
                if rid in seen:
                    raise InputError(f"duplicate id {rid!r} (first at line {seen[rid]})", path=name, line=line_no,
                                     field="id")
                answer = _answer(rec["output"], name, line_no)
            except InputError as err:
                if not skip_bad:
                    raise
                stats.bad += 1
                if len(stats.errors) < 20:
                    stats.errors.append(str(err))
                continue
            if answer is None:
                stats.no_answer += 1
                continue
            seen[rid] = line_no
            out.append({"id": rid, "input": rec["input"], "output": answer})
    stats.examples = len(out)
    return out


def write_pool_dir(examples: list[dict], task: str, tmp: Path, *, model: str, instruction: str, source: str,
                   source_sha256: str, device: str, progress: bool, stats: PoolStats,
                   encoder_local: bool = False, load_from: str | None = None,
                   index_model: str | None = None) -> PoolManifest:
    """Write ``pool.jsonl``, the index and ``demos.json`` of one task into the (staged) directory ``tmp``.

    ``model`` is the encoder recorded in ``demos.json``; ``load_from`` where it is loaded from while building
    (default ``model``); ``index_model`` the model id recorded in the index's dense component (default
    ``model``)."""
    from datetime import UTC, datetime

    from genret.indexing import BM25Config, DenseConfig, IndexConfig, build_index

    if not examples:
        raise InputError("the pool has no usable examples", path=source)
    t0 = time.perf_counter()
    pool_path, corpus = tmp / POOL_FILE, tmp / ".corpus.jsonl"
    with open(pool_path, "w", encoding="utf-8") as pf, open(corpus, "w", encoding="utf-8") as cf:
        for ex in examples:
            pf.write(json.dumps({"id": ex["id"], "input": ex["input"], "output": ex["output"]}, ensure_ascii=False))
            pf.write("\n")
            cf.write(json.dumps({"id": ex["id"], "title": "", "text": [ex["input"]]}, ensure_ascii=False) + "\n")
    config = IndexConfig(components=("dense", "bm25"), bm25=BM25Config(with_title=False),
                         dense=DenseConfig(model=load_from or model, device=device, with_title=False))
    index_manifest = build_index(corpus, tmp / INDEX_DIR, config, progress=progress)
    corpus.unlink()
    if index_manifest.units.count != len(examples):  # pragma: no cover - inputs are checked non-empty
        raise GenretError(f"pool of {task!r}: {len(examples)} examples but {index_manifest.units.count} units")
    recorded = index_model or model
    if recorded != (load_from or model):  # record the encoder's final home, not the staging path
        m = read_manifest(tmp / INDEX_DIR)
        m.components["dense"] = m.components["dense"].model_copy(update={"model": recorded})
        write_manifest(tmp / INDEX_DIR, m)
    manifest = PoolManifest(
        task=task, instruction=instruction, encoder=model, encoder_local=encoder_local, source=source,
        source_sha256=source_sha256, examples=len(examples), skipped_no_answer=stats.no_answer,
        skipped_bad=stats.bad, pool_size=pool_path.stat().st_size, pool_sha256=sha256_file(pool_path),
        created=datetime.now(UTC).isoformat(timespec="seconds"), build_seconds=round(time.perf_counter() - t0, 3))
    write_json_atomic(tmp / POOL_MANIFEST, manifest.model_dump(mode="json"))
    return manifest


def build_demo_pool(pool_file: str | Path, task: str, demos_dir: str | Path, *, model: str = DEFAULT_DENSE_MODEL,
                    instruction: str | None = None, device: str = "auto", progress: bool = True,
                    force: bool = False, skip_bad: bool = False) -> PoolManifest:
    """Index ``pool_file`` as the demonstration pool of ``task`` in ``demos_dir/task`` (dense + BM25).

    ``instruction`` is prefixed to queries of the udr source (default: the task's ``demo_instruction``).
    An existing pool of the task is replaced only with ``force``; other tasks are not touched.
    """
    from ..rag import resolve_answer_task

    check_task_name(task)
    pool_file, out = Path(pool_file), Path(demos_dir) / task
    if not pool_file.is_file():
        raise InputError("no such file", path=str(pool_file))
    if out.exists() and not force:
        raise GenretError(f"{out} already exists; pass force=True to replace the pool of task {task!r}",
                          flags={"force=True": "--force"})
    if instruction is None:
        instruction = resolve_answer_task(task)[1].demo_instruction
    if os.path.isdir(model):  # a local model path: record it absolute, so the pool works from any directory
        model = str(Path(model).resolve())
    stats = PoolStats()
    examples = read_pool(pool_file, skip_bad=skip_bad, stats=stats)
    if stats.bad:
        log.warning("skipped %d bad pool line(s); first: %s", stats.bad, "; ".join(stats.errors[:3]))
    if stats.no_answer:
        log.info("skipped %d pool record(s) without an answer", stats.no_answer)
    out.parent.mkdir(parents=True, exist_ok=True)
    with staged_dir(out, "building") as tmp:
        return write_pool_dir(examples, task, tmp, model=model, instruction=instruction,
                              source=str(pool_file.resolve()), source_sha256=sha256_file(pool_file),
                              device=device, progress=progress, stats=stats)


def read_pool_manifest(task_dir: Path) -> PoolManifest:
    path = task_dir / POOL_MANIFEST
    if not path.is_file():
        raise IndexFormatError(f"no demonstration pool at {task_dir}: {POOL_MANIFEST} is missing")
    return read_versioned_json(path, PoolManifest, tag_field="kind", tag=POOL_KIND,
                               what="a demonstration pool manifest", version=POOL_FORMAT_VERSION,
                               fix="rebuild it with `genret index-demos … --force`", version_of=task_dir)


def list_tasks(demos_dir: str | Path) -> list[str]:
    """The tasks with a pool in ``demos_dir``, sorted."""
    d = Path(demos_dir)
    if not d.is_dir():
        raise IndexFormatError(f"no demos directory at {d}: not a directory")
    return sorted(p.name for p in d.iterdir() if not p.name.startswith(".") and (p / POOL_MANIFEST).is_file())


class DemoPool:
    """One task's opened, verified pool: its manifest, examples (``ids``, ``inputs``, ``outputs``, in index
    order: unit id i is example i) and its index.  ``IndexFormatError`` when anything does not match."""

    def __init__(self, demos_dir: str | Path, task: str) -> None:
        self.demos_dir = Path(demos_dir)
        known = list_tasks(self.demos_dir)
        if task not in known:
            raise NotFoundError(f"no demonstration pool for task {task!r} in {self.demos_dir}; known tasks: {known}")
        self.task, self.path = task, self.demos_dir / task
        self.manifest = m = read_pool_manifest(self.path)
        if m.task != task:
            raise IndexFormatError(f"{self.path}: the pool is of task {m.task!r}, not {task!r}")
        pool = self.path / POOL_FILE
        if not pool.is_file():
            raise IndexFormatError(f"{self.path}: {POOL_FILE} is missing")
        if pool.stat().st_size != m.pool_size or sha256_file(pool) != m.pool_sha256:
            raise IndexFormatError(f"{self.path}: {POOL_FILE} does not match {POOL_MANIFEST} (corrupt or altered); "
                                   "rebuild the pool with `genret index-demos … --force`")
        self.ids, self.inputs, self.outputs = [], [], []
        with open(pool, encoding="utf-8") as fh:
            for line in fh:
                rec = json.loads(line)
                self.ids.append(rec["id"])
                self.inputs.append(rec["input"])
                self.outputs.append(rec["output"])
        self.row = {rid: i for i, rid in enumerate(self.ids)}
        self.index = Index(self.path / INDEX_DIR)
        for comp in ("dense", "bm25"):
            self.index.component(comp)
        if len(self.ids) != m.examples or len(self.index.store) != m.examples:
            self.index.close()
            raise IndexFormatError(f"{self.path}: {m.examples} examples in {POOL_MANIFEST}, {len(self.ids)} in "
                                   f"{POOL_FILE}, {len(self.index.store)} in the index")

    @property
    def instruction(self) -> str:
        return self.manifest.instruction

    @property
    def encoder_spec(self) -> str:
        """What to load the query encoder from (a trained encoder lives in the demos directory)."""
        m = self.manifest
        if not m.encoder_local:
            return m.encoder
        path = self.demos_dir / m.encoder
        if not path.is_dir():
            raise IndexFormatError(f"{self.path}: its encoder directory {path} is missing")
        return str(path)

    def demo(self, row: int, score: float) -> Demo:
        return Demo(self.ids[row], self.inputs[row], self.outputs[row], float(score), self.task)

    def __len__(self) -> int:
        return len(self.ids)

    def close(self) -> None:
        self.index.close()
