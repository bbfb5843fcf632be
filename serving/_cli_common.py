"""What the CLI's command modules share: the usage error (one line on stderr, exit 2) and NAME=FILE lists."""

from __future__ import annotations

from pathlib import Path


class UsageError(Exception):
    """A command line that cannot be run as given."""


def usage(msg: str) -> UsageError:
    return UsageError(msg)


def task_files(items: list[str] | None, flag: str) -> dict[str, Path]:
    out = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise usage(f"{flag} takes NAME=FILE, got {item!r}")
        out[name] = Path(path)
    return out
