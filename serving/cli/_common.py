"""What the CLI's command modules share: the parser class (``--help`` shows defaults), the usage error (one line on
stderr, exit 2), NAME=FILE lists, and the environment's refusals (a full disk, an unwritable file) and a closed
stdout, as the CLI reports them."""

from __future__ import annotations

import argparse
import copy
import errno
import os
import sys
from pathlib import Path
from typing import NoReturn


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with each option's default, "(default: X)", except where there is nothing worth showing (None, a
    flag's False) or the help text already says what the default is."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if not self._shows_default(action) or "default" in (action.help or "").lower():
            return action.help
        return f"{action.help or ''} (default: %(default)s)".lstrip()

    def _format_action(self, action: argparse.Action) -> str:
        if action.help is None and self._shows_default(action):  # argparse prints nothing for an option
            action = copy.copy(action)  # without help: give it one, the default alone
            action.help = ""
            action.help = self._get_help_string(action)
        return super()._format_action(action)

    @staticmethod
    def _shows_default(action: argparse.Action) -> bool:
        return action.default not in (None, False, argparse.SUPPRESS) and bool(
            action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE))


class Parser(argparse.ArgumentParser):
    """genret's argument parser: ``HelpFormatter`` unless told otherwise; subcommand parsers are of this class too
    (``add_subparsers`` makes parsers of its parser's class).  A usage error is one line on stderr that points at
    the command's ``--help`` (argparse would print the whole usage block first), exit 2."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"genret: error: {' '.join(message.split())} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None) -> argparse.Namespace:  # type: ignore[override]
        """As argparse's, but arguments no command takes are refused with the page of the command given."""
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            page = getattr(parsed, HELP_PAGE, self.prog)
            self.exit(2, f"genret: error: unrecognized arguments: {' '.join(extra)} (see {page} --help)\n")
        return parsed


HELP_PAGE = "help_page"  # the namespace attribute naming the command's --help (``add_output_flags``)


def add_output_flags(p: argparse.ArgumentParser, *, logs_info: bool = False) -> None:
    """``-q/--quiet`` and ``-v/--verbose`` (every command has them), and the command's help page for its errors.
    ``logs_info``: the command's INFO log is its running report (serve, train), shown unless ``--quiet``."""
    p.add_argument("-q", "--quiet", action="store_true",
                   help="print nothing but results and errors (no progress bars, no log lines)")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="logs on stderr: -v what happens (INFO), -vv everything genret logs (DEBUG); default: "
                   + ("INFO" if logs_info else "warnings only"))
    p.set_defaults(**{HELP_PAGE: p.prog, "logs_info": logs_info})


class UsageError(Exception):
    """A command line that cannot be run as given."""


def checked_config(cls, what: str, **fields):
    """``cls(**fields)`` (a pydantic config); a value it refuses is a ``ConfigError`` naming ``what`` with the first
    line of pydantic's message."""
    from genret.core import ConfigError

    try:
        return cls(**fields)
    except ValueError as exc:
        raise ConfigError(f"{what}: {exc}".splitlines()[0]) from None


def usage(msg: str) -> UsageError:
    return UsageError(msg)


def text_arg(value: str, name: str) -> str:
    """A command-line text (a query, a question) that is valid Unicode: bytes that are not UTF-8 reach Python as
    lone surrogates (``surrogateescape``), which no tokenizer or Lucene can take."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = value[exc.start]
        what = f"byte 0x{ord(bad) - 0xDC00:02x}" if "\udc80" <= bad <= "\udcff" else f"\\u{ord(bad):04x}"
        raise usage(f"the {name} is not valid UTF-8 ({what} at character {exc.start + 1})") from None
    return value


def task_files(items: list[str] | None, flag: str) -> dict[str, Path]:
    out = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise usage(f"{flag} takes NAME=FILE, got {item!r}")
        out[name] = Path(path)
    return out


_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
# how a full disk reads in the messages of libraries that do not raise OSError (SQLite, FAISS, Rust tokenizers)
_FULL_WORDS = (os.strerror(errno.ENOSPC), "disk is full", "os error 28", "Disk quota exceeded")


def _disk_full(exc: BaseException | None) -> bool:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _FULL:
            return True
        if any(words in str(exc) for words in _FULL_WORDS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def environment_error(exc: BaseException) -> str | None:
    """One line for an error the environment caused (a full disk, permissions, a missing folder), or None (a
    bug: its traceback is worth more)."""
    where = f": {exc.filename}" if isinstance(exc, OSError) and exc.filename else ""
    if _disk_full(exc):
        return f"no space left on device{where}; free some space and run it again"
    if not isinstance(exc, OSError) or exc.errno is None:
        return None
    return f"{exc.strerror or os.strerror(exc.errno)}{where}"


def quiet_broken_pipe() -> None:
    """stdout's reader went away (``genret search --json | head``): send what is left to /dev/null, so that
    Python's own flush at exit does not complain either."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout replaced (tests) or already closed
        pass
