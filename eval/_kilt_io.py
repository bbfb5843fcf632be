"""Reading, writing and aligning KILT-format records.

A KILT file is JSON Lines, one ``{"id", "input", "output": [{"answer", "provenance": [...]}, ...]}``
object per line, optionally gzip-compressed (detected from the content, not the name).
:func:`read_kilt` also reads a file holding one JSON object, several concatenated (possibly
pretty-printed) objects, or a JSON array of objects: KILT's own test file ``guess3_1.json`` is two
pretty-printed objects one after the other. Every structural problem is an :class:`InputError` naming
the file, the 1-based line where the record starts and the field: bytes that are not UTF-8, JSON nested too
deeply to parse, a lone surrogate escape (``"\\ud800"``, not Unicode) in an id, input or answer.

Ids are compared as KILT's ``validate_input`` does, by ``str(id).strip()``: ``1`` and ``"1"`` are the
same id.
"""

from __future__ import annotations

import contextlib
import gc
import gzip
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from genret.core import GenretError, InputError

__all__ = ["align", "gc_paused", "id_key", "read_kilt", "write_kilt"]

Record = dict[str, Any]

_GZIP_MAGIC = b"\x1f\x8b"
_SURROGATE = re.compile("[\ud800-\udfff]")
_TOO_DEEP = "invalid JSON (nested too deeply to parse)"
_JSON_SPACE = re.compile(r"[ \t\n\r]*")
_SHOWN_IDS = 5


def id_key(record_id: Any) -> str:
    """The key KILT aligns and de-duplicates ids on: ``str(id).strip()``."""
    return str(record_id).strip()


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector (restoring its previous state on exit).

    Loading or scoring 100,000 KILT records builds millions of acyclic containers; every 25% growth of
    the heap triggers a full collection that walks all of them (about 40% of the reading time and
    most of the aligning time at that size). Nothing built here is cyclic, so pausing loses nothing.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _open_binary(path: Path) -> IO[bytes]:
    with path.open("rb") as probe:
        compressed = probe.read(2) == _GZIP_MAGIC
    return gzip.open(path, "rb") if compressed else path.open("rb")


# ---------------------------------------------------------------------------------------------- parsing
def _iter_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """``(line, value)`` per non-blank line of a JSON Lines file (a line holding an array yields its
    items). A first line that is no complete JSON value switches to :func:`_iter_stream`."""
    with _open_binary(path) as handle:
        first = True
        for line_number, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                value = json.loads(raw)
            except RecursionError:
                raise InputError(_TOO_DEEP, path=str(path), line=line_number) from None
            except UnicodeDecodeError as exc:
                raise InputError(f"not UTF-8 ({exc.reason}: byte {exc.start + 1} of the line)", path=str(path),
                                 line=line_number) from None
            except ValueError as exc:
                if first:
                    break
                problem = (f"{exc.msg}, column {exc.colno}" if isinstance(exc, json.JSONDecodeError)
                           else str(exc))
                raise InputError(f"invalid JSON ({problem})", path=str(path), line=line_number) from None
            first = False
            if isinstance(value, list):
                for item in value:
                    yield line_number, item
            else:
                yield line_number, value
        else:
            return
    yield from _iter_stream(path)


def _iter_stream(path: Path) -> Iterator[tuple[int, Any]]:
    """``(line, value)`` per top-level JSON value of a file; a top-level array yields its items."""
    with _open_binary(path) as handle:
        data = handle.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 ({exc.reason})", path=str(path),
                         line=data.count(b"\n", 0, exc.start) + 1) from None
    decoder = json.JSONDecoder()
    end = len(text)
    line, counted_to = 1, 0

    def line_at(position: int) -> int:
        nonlocal line, counted_to
        line += text.count("\n", counted_to, position)
        counted_to = position
        return line

    def decode(position: int) -> tuple[Any, int]:
        try:
            return decoder.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            raise InputError(f"invalid JSON ({exc.msg}, column {exc.colno})", path=str(path),
                             line=exc.lineno) from None
        except RecursionError:
            raise InputError(_TOO_DEEP, path=str(path), line=line_at(position)) from None

    def skip(position: int) -> int:
        match = _JSON_SPACE.match(text, position)
        return match.end() if match else position

    position = skip(0)
    while position < end:
        if text[position] != "[":
            start_line = line_at(position)
            value, position = decode(position)
            yield start_line, value
            position = skip(position)
            continue
        position = skip(position + 1)
        closed = position < end and text[position] == "]"
        while not closed:
            start_line = line_at(position)
            value, position = decode(position)
            yield start_line, value
            position = skip(position)
            if position < end and text[position] == ",":
                position = skip(position + 1)
            elif position < end and text[position] == "]":
                closed = True
            else:
                raise InputError("invalid JSON (expected ',' or ']' in array)", path=str(path),
                                 line=line_at(min(position, end)))
        position = skip(position + 1)


def _validate(value: Any, path: str, line: int) -> Record:
    """Check the structure KILT's scripts rely on; return the record."""
    def fail(message: str, field: str | None = None) -> InputError:
        return InputError(message, path=path, line=line, field=field)

    if not isinstance(value, dict):
        raise fail(f"a record must be a JSON object, not {type(value).__name__}")
    if "id" not in value:
        raise fail("missing", "id")
    def unicode(text: str, field: str) -> None:
        bad = _SURROGATE.search(text)
        if bad is not None:
            raise fail(f"lone surrogate \\u{ord(bad.group()):04x} at character {bad.start()} (not valid Unicode)",
                       field)

    record_id = value["id"]
    if isinstance(record_id, bool) or not isinstance(record_id, str | int):
        raise fail(f"must be a string or an integer, not {type(record_id).__name__}", "id")
    if isinstance(record_id, str):
        unicode(record_id, "id")
    if "input" in value:
        if not isinstance(value["input"], str):
            raise fail("must be a string", "input")
        unicode(value["input"], "input")
    if "output" not in value:
        raise fail("missing", "output")
    outputs = value["output"]
    if not isinstance(outputs, list):
        raise fail(f"must be a list, not {type(outputs).__name__}", "output")
    for j, output in enumerate(outputs):
        if not isinstance(output, dict):
            raise fail(f"must be an object, not {type(output).__name__}", f"output[{j}]")
        if "answer" in output:
            if not isinstance(output["answer"], str):
                raise fail("must be a string", f"output[{j}].answer")
            unicode(output["answer"], f"output[{j}].answer")
        if "provenance" not in output:
            continue
        provenance = output["provenance"]
        if not isinstance(provenance, list):
            raise fail(f"must be a list, not {type(provenance).__name__}", f"output[{j}].provenance")
        if not all(type(item) is dict for item in provenance):
            for i, item in enumerate(provenance):
                if not isinstance(item, dict):
                    raise fail(f"must be an object, not {type(item).__name__}",
                               f"output[{j}].provenance[{i}]")
    return value


def read_kilt(path: str | os.PathLike[str]) -> list[Record]:
    """Read and validate the records of a KILT file (JSONL, ``.gz``, concatenated JSON or an array).

    Raises :class:`InputError` (file, 1-based line, field) for unreadable files, invalid JSON,
    malformed records and duplicate ids (compared as ``str(id).strip()``, like KILT).
    """
    file = Path(path)
    name = str(file)
    records: list[Record] = []
    first_line: dict[str, int] = {}
    with gc_paused():
        try:
            for line, value in _iter_lines(file):
                record = _validate(value, name, line)
                key = id_key(record["id"])
                if key in first_line:
                    raise InputError(f"duplicate id {record['id']!r} (first on line {first_line[key]}, "
                                     f"again on line {line})", path=name, line=line, field="id")
                first_line[key] = line
                records.append(record)
        except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
            raise InputError(f"cannot read ({exc})", path=name) from None
    return records


def write_kilt(path: str | os.PathLike[str], records: Iterable[Mapping[str, Any]]) -> None:
    """Write records as JSON Lines (gzip-compressed when the name ends in ``.gz``), atomically.

    The lines go to a temporary file in the target directory that then replaces ``path``, so
    readers never see a half-written file.
    """
    file = Path(path)
    directory = file.parent
    descriptor, temporary = tempfile.mkstemp(prefix=f".{file.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(descriptor, "wb") as raw:
            sink: IO[bytes] = (gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=6, mtime=0)
                               if file.name.endswith(".gz") else raw)
            chunk: list[str] = []
            for record in records:
                chunk.append(json.dumps(record, ensure_ascii=False, allow_nan=False))
                if len(chunk) >= 1024:
                    sink.write(("\n".join(chunk) + "\n").encode("utf-8"))
                    chunk.clear()
            if chunk:
                sink.write(("\n".join(chunk) + "\n").encode("utf-8"))
            if sink is not raw:
                sink.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, file)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise


# --------------------------------------------------------------------------------------------- aligning
def _key_of(record: Any, role: str) -> str:
    if not isinstance(record, Mapping) or "id" not in record:
        raise InputError(f"a {role} record has no id", field="id")
    return id_key(record["id"])


def _single_output(guess: Mapping[str, Any]) -> Mapping[str, Any]:
    """The guess with exactly one output, as KILT's scripts require.

    Several outputs are filtered as ``eval_retrieval.filter_answers`` does: only those carrying
    ``provenance`` are kept, and exactly one must remain. A single output is kept as it is.
    """
    outputs = guess.get("output")
    if not isinstance(outputs, list) or not outputs:
        raise InputError(f"guess id {guess['id']!r} must have a non-empty output list", field="output")
    if len(outputs) == 1:
        return guess
    kept = [output for output in outputs if isinstance(output, Mapping) and "provenance" in output]
    if len(kept) != 1:
        raise InputError(f"guess id {guess['id']!r} has {len(outputs)} outputs, {len(kept)} with provenance;"
                         " KILT needs exactly one output (with provenance)", field="output")
    return {**guess, "output": kept}


def align(guess_records: Iterable[Mapping[str, Any]],
          gold_records: Iterable[Mapping[str, Any]]) -> list[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """Pair each gold record with the guess of the same id, in gold order (KILT ``validate_input``).

    Ids match as ``str(id).strip()``. Gold and guess ids must each be unique; a gold id without a
    guess raises :class:`GenretError` naming the first few such ids and their count; guesses whose id
    is not in the gold are ignored. A guess with several outputs keeps only the one with provenance.
    """
    with gc_paused():
        return _align(guess_records, gold_records)


def _align(guess_records: Iterable[Mapping[str, Any]],
           gold_records: Iterable[Mapping[str, Any]]) -> list[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    golds = list(gold_records)
    gold_keys: list[str] = []
    seen: set[str] = set()
    for gold in golds:
        key = _key_of(gold, "gold")
        if key in seen:
            raise GenretError(f"gold ids must be unique: {gold['id']!r} occurs more than once")
        seen.add(key)
        gold_keys.append(key)
    guesses: dict[str, Mapping[str, Any]] = {}
    for guess in guess_records:
        key = _key_of(guess, "guess")
        if key in guesses:
            raise GenretError(f"prediction ids must be unique: {guess['id']!r} occurs more than once")
        guesses[key] = guess
    missing = [key for key in gold_keys if key not in guesses]
    if missing:
        shown = ", ".join(repr(key) for key in missing[:_SHOWN_IDS])
        more = f" and {len(missing) - _SHOWN_IDS} more" if len(missing) > _SHOWN_IDS else ""
        raise GenretError(f"no prediction for {len(missing)} of {len(gold_keys)} gold ids: {shown}{more}")
    return [(_single_output(guesses[key]), gold) for key, gold in zip(gold_keys, golds, strict=True)]
