"""Domain errors shared by every genret package.

Every error a user can cause (bad input, missing or foreign index, version mismatch) is a
``GenretError``; the CLI prints its message on one line and exits with code 2, and the HTTP
service maps each subclass to a status code in one place.
"""

from __future__ import annotations


class GenretError(Exception):
    """Base class of every error caused by input or environment rather than a bug.

    A message names an option the way Python passes it (``force=True``); ``flags`` maps those spellings to the
    command line's (``{"force=True": "--force"}``), which the CLI prints instead (``cli_message``)."""

    def __init__(self, *args: object, flags: dict[str, str] | None = None) -> None:
        super().__init__(*args)
        self.flags = dict(flags or {})

    def cli_message(self) -> str:
        """The message as the command line says it: its options spelled as flags."""
        text = str(self)
        for python, flag in getattr(self, "flags", {}).items():
            text = text.replace(python, flag)
        return text


class InputError(GenretError):
    """A malformed input record: names the file, the line (1-based) and the field."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 field: str | None = None, flags: dict[str, str] | None = None) -> None:
        where = []
        if path is not None:
            where.append(str(path) if line is None else f"{path}:{line}")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message, flags=flags)
        self.path, self.line, self.field = path, line, field


class IndexFormatError(GenretError):
    """An index directory (or another file genret wrote and reads back) that is missing, corrupt, foreign or of another
    format version."""


class NotFoundError(GenretError):
    """A named thing (index, unit, task, retriever) that does not exist."""


class ConfigError(GenretError, ValueError):
    """An invalid setting (unknown device, impossible parameter combination)."""
