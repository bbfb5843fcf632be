"""Demo corpus gathered at run time from the Python standard library's documentation strings.

Every machine with CPython has this corpus, so ``make demo`` needs no download: one page per module
of a fixed, curated list, whose paragraphs are the module docstring's paragraphs followed by one
paragraph per public class and function. A question template shipped with the package
(``demo_questions.json``) names, for each question, the module and the object whose paragraph is
the gold answer; :func:`write_demo` resolves those names to KILT paragraph ids in the corpus it has
just generated, so the gold stays right when docstrings change between Python versions.
"""

from __future__ import annotations

import enum
import importlib
import importlib.resources
import inspect
import json
import logging
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from genret.core import GenretError

__all__ = ["DEMO_MODULES", "MIN_QUESTIONS", "build_questions", "iter_stdlib_pages", "load_templates",
           "write_demo"]

_LOG = logging.getLogger(__name__)

#: Well-documented (mostly pure-Python) modules that import quietly on every CPython >= 3.11 on Linux.
DEMO_MODULES: tuple[str, ...] = (
    "abc", "argparse", "base64", "bisect", "calendar", "cmd", "codecs", "collections", "configparser",
    "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "doctest",
    "email.message", "email.utils", "enum", "filecmp", "fnmatch", "fractions", "functools", "getopt",
    "gettext", "glob", "gzip", "hashlib", "heapq", "hmac", "html", "html.parser", "http.client",
    "http.cookies", "inspect", "ipaddress", "itertools", "json", "locale", "logging", "mimetypes",
    "numbers", "operator", "optparse", "os.path", "pathlib", "pickle", "platform", "pprint", "queue",
    "random", "re", "sched", "secrets", "shlex", "shutil", "smtplib", "socketserver", "sqlite3",
    "statistics", "string", "struct", "subprocess", "tarfile", "tempfile", "textwrap", "threading",
    "timeit", "tokenize", "traceback", "types", "typing", "unittest", "urllib.parse", "uuid", "warnings",
    "weakref", "xml.etree.ElementTree", "zipfile",
)

#: write_demo raises when fewer questions than this resolve against the running Python.
MIN_QUESTIONS = 30

_MAX_PARAGRAPH = 1200
_WS = re.compile(r"\s+")
_BLANK_LINE = re.compile(r"\n\s*\n")
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _normalise(text: str) -> str:
    """Collapse every run of whitespace to one space and strip the ends."""
    return _WS.sub(" ", text).strip()


def _cap(text: str, limit: int = _MAX_PARAGRAPH) -> str:
    """Cut ``text`` to at most ``limit`` characters at a word boundary, marking the cut with '...'."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 3]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip() + "..."


def _public_names(module: Any) -> list[str]:
    """Names of the module's public classes and functions: ``__all__`` if present, else own names."""
    declared = getattr(module, "__all__", None)
    if declared is not None:
        names = [n for n in declared if isinstance(n, str)]
    else:
        # Objects of a C accelerator (bisect's _bisect, sqlite3's _sqlite3) count as the module's own.
        homes = {module.__name__, "_" + module.__name__.rpartition(".")[2]}
        names = [n for n, obj in vars(module).items()
                 if not n.startswith("_") and getattr(obj, "__module__", None) in homes]
    chosen = []
    for name in sorted(set(names)):
        obj = getattr(module, name, None)
        if inspect.isclass(obj) or inspect.isroutine(obj):
            chosen.append(name)
    return chosen


class _Elided:
    """Stands in for a default value whose repr is state-dependent (a sentinel, a mutable list)."""

    def __repr__(self) -> str:
        return "..."


_STABLE_DEFAULTS = (str, bytes, int, float, complex, bool, type(None), tuple, frozenset, type, enum.Enum)


def _stable_default(value: Any) -> bool:
    """Whether a parameter default's repr is the same on every machine and in every process."""
    if isinstance(value, str):
        return not os.path.isabs(value) or len(value) < 2  # e.g. platform's sys.executable default
    return value is inspect.Parameter.empty or isinstance(value, _STABLE_DEFAULTS) or callable(value)


def _signature(obj: Any) -> str:
    """The object's call signature as text with stable default values, or '' when inspect cannot tell."""
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return ""
    params = [p if _stable_default(p.default) else p.replace(default=_Elided())
              for p in signature.parameters.values()]
    # Function reprs carry "at 0x7f..." addresses, which would make the corpus differ between runs.
    return _ADDRESS.sub("", str(signature.replace(parameters=params)))


def _own_doc(obj: Any) -> str:
    """The docstring defined on ``obj`` itself (not inherited from a base class), or ''."""
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    return doc if isinstance(doc, str) else ""


def _object_paragraph(qualname: str, obj: Any) -> str:
    """``"<qualname><signature>: <docstring>"`` capped, or '' when the object has no docstring."""
    doc = _normalise(_own_doc(obj))
    if not doc:
        return ""
    return _cap(f"{qualname}{_signature(obj)}: {doc}")


def _doc_paragraphs(module: Any) -> list[str]:
    """The module docstring split at blank lines, whitespace-normalised and capped, empty ones dropped."""
    parts = (_normalise(part) for part in _BLANK_LINE.split(module.__doc__ or ""))
    return [_cap(part) for part in parts if part]


def _module_page(module_name: str) -> dict[str, Any] | None:
    """One corpus page for ``module_name``, or None when it cannot be imported or has no text."""
    try:
        module = importlib.import_module(module_name)
    except Exception:  # noqa: BLE001 - a module missing in this build is simply left out
        _LOG.warning("demo corpus: module %s cannot be imported; skipped", module_name)
        return None
    paragraphs = _doc_paragraphs(module)
    for name in _public_names(module):
        paragraph = _object_paragraph(f"{module_name}.{name}", getattr(module, name))
        if paragraph:
            paragraphs.append(paragraph)
    if not paragraphs:
        return None
    return {"id": module_name, "title": module_name, "text": paragraphs}


def iter_stdlib_pages() -> Iterator[dict[str, Any]]:
    """Yield one page ``{"id", "title", "text": [paragraph, ...]}`` per demo module, in list order.

    Warnings raised while importing or inspecting modules are suppressed so gathering prints nothing.
    """
    for module_name in DEMO_MODULES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            page = _module_page(module_name)
        if page is not None:
            yield page


def load_templates() -> list[dict[str, Any]]:
    """The question templates shipped as ``eval/demo_questions.json``."""
    resource = importlib.resources.files("genret.eval") / "demo_questions.json"
    templates = json.loads(resource.read_text(encoding="utf-8"))
    keys = {"id", "input", "answer", "module", "object"}
    if not isinstance(templates, list) or not all(isinstance(t, dict) and keys <= t.keys() for t in templates):
        raise GenretError("eval/demo_questions.json must hold a JSON list of question templates "
                          f"with keys {sorted(keys)}")
    return templates


def _gold_paragraph(page: dict[str, Any], obj_name: str | None) -> int | None:
    """0-based index in ``page["text"]`` of the paragraph about ``obj_name`` (None: the module's first).

    Object paragraphs follow the docstring's, so the last paragraph opening with ``<module>.<name>(`` or
    ``<module>.<name>:`` is the object's even if a docstring paragraph happens to open the same way.
    """
    texts: list[str] = page["text"]
    module = re.escape(page["id"])
    if obj_name is None:  # the module docstring's first paragraph, if the module has a docstring
        if not texts or re.match(rf"{module}\.[A-Za-z]\w*[(:]", texts[0]):
            return None
        return 0
    heading = re.compile(rf"{module}\.{re.escape(obj_name)}[(:]")
    for index in range(len(texts) - 1, -1, -1):
        if heading.match(texts[index]):
            return index
    return None


def build_questions(pages: list[dict[str, Any]], templates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Resolve question templates against ``pages`` into KILT records, dropping unresolvable ones."""
    by_id = {page["id"]: page for page in pages}
    questions = []
    for template in templates:
        module_name, obj_name = template["module"], template.get("object")
        page = by_id.get(module_name)
        index = None if page is None else _gold_paragraph(page, obj_name)
        if page is None or index is None:
            _LOG.warning("demo question %s: %s%s not found in this Python's corpus; dropped",
                         template["id"], module_name, "" if obj_name is None else f".{obj_name}")
            continue
        paragraph = page["text"][index]
        answer = template["answer"]
        start = paragraph.find(answer)
        start, end = (start, start + len(answer)) if start >= 0 else (0, len(paragraph))
        provenance = {"wikipedia_id": page["id"], "title": page["title"],
                      "start_paragraph_id": index + 1, "end_paragraph_id": index + 1,
                      "start_character": start, "end_character": end}
        questions.append({"id": template["id"], "input": template["input"],
                          "output": [{"answer": answer, "provenance": [provenance]}],
                          "meta": {"task": "generic"}})
    return questions


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    """Write ``records`` one JSON object a line, UTF-8, non-ASCII kept as is."""
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def write_demo(out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``corpus.jsonl`` and ``questions.jsonl`` (KILT format) under ``out_dir``; return both paths.

    Raises GenretError when fewer than :data:`MIN_QUESTIONS` templates resolve in this Python.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pages = list(iter_stdlib_pages())
    questions = build_questions(pages, load_templates())
    if len(questions) < MIN_QUESTIONS:
        raise GenretError(f"only {len(questions)} demo questions resolve in this Python "
                          f"(at least {MIN_QUESTIONS} needed)")
    corpus_path, questions_path = out / "corpus.jsonl", out / "questions.jsonl"
    _write_jsonl(corpus_path, pages)
    _write_jsonl(questions_path, questions)
    return corpus_path, questions_path
