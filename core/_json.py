"""JSON files genret writes and reads back: written atomically (a temporary file in the same folder, fsynced, then
renamed over the target), read as self-describing files (a format tag and a format version) whose mismatch is one
``IndexFormatError`` naming the file and what to do.  An index manifest, a demonstrations pool, a span reader, a label
head and tuned fusion weights are all such files."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ._errors import IndexFormatError


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` via a temporary file in the same directory and a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, ensure_ascii=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; what genret writes (an index) must be readable by its other users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_versioned_json(path: Path, model: type[BaseModel], *, tag_field: str, tag: str, what: str,
                        version: int, fix: str, version_of: str | None = None, older: tuple[int, ...] = (),
                        check: Callable[[dict], None] | None = None) -> Any:
    """Read a self-describing JSON file (``tag_field`` = ``tag``, ``format_version`` = ``version``, or one of the
    ``older`` versions also read) into ``model``.

    A corrupt, foreign or other-version file raises ``IndexFormatError`` naming the file and ``fix`` (what the user
    can do); ``what`` names the file kind in messages, ``version_of`` what the version mismatch names (default: the
    file).  ``check(raw)``, when given, sees the parsed object after the tag and version checks and before the model
    (a checksum over the file's own fields, say) and raises ``IndexFormatError`` to refuse it."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexFormatError(f"{path} is corrupt ({exc}): {fix}") from None
    if not isinstance(raw, dict) or raw.get(tag_field) != tag:
        raise IndexFormatError(f"{path} is not {what} ({tag_field} != {tag!r}): {fix}")
    found = raw.get("format_version")
    if found != version and (found not in older or isinstance(found, bool)):
        also = f" (and {', '.join(map(str, older))})" if older else ""
        raise IndexFormatError(f"{version_of or path} has {what} format version {found}; this genret reads version "
                               f"{version}{also}: {fix}")
    if check is not None:
        check(raw)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "file"
        raise IndexFormatError(f"{path} is corrupt: {where}: {first['msg']}: {fix}") from None
