"""``genret``: one console script, thin subcommands over library functions.

Each module of this package is one command group and adds its commands with ``register(sub)``; ``build_parser``
lists them in ``COMMANDS``' order.  Heavy modules (torch, faiss, FastAPI) are imported inside the command functions,
so ``--help`` answers at once.  Errors the user can fix print one line on stderr and exit with code 2
(``--debug`` shows the traceback): bad input and settings, and the environment's refusals (a full disk, a
file that cannot be written).  Output cut short by its reader (``genret search --json | head``) ends the
command quietly, with the status of a process stopped by SIGPIPE (141).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from . import _demos, _eval, _index, _rag, _search, _serve, _train, _tune
from ._common import Parser, UsageError, environment_error, quiet_broken_pipe

EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 128 + 13  # as a process stopped by SIGPIPE
GROUPS = (_index, _search, _serve, _eval, _rag, _train, _demos, _tune)
# the commands in the order --help lists them
COMMANDS = ("index", "search", "serve", "eval", "rag", "add", "rebuild-dense", "train", "index-demos", "tune", "verify",
            "demo-data")


class _Version(argparse.Action):
    """``--version``: the installed distribution's version (``genret.__version__``: importlib.metadata, else the
    package's own fallback), read only when asked — importlib.metadata costs more than ``--help``."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None) -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        import genret

        print(f"genret {genret.__version__}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="genret", description="Generative, dense and sparse retrieval with KILT-style evaluation.")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    p.add_argument("--version", action=_Version, help="show genret's version and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    _list_in_order(sub, COMMANDS)
    return p


def _list_in_order(sub: argparse._SubParsersAction, order: tuple[str, ...]) -> None:
    """List the commands in ``order``: argparse lists them as they were added, a group's together."""
    if set(sub.choices) != set(order):
        raise RuntimeError(f"commands registered but not in COMMANDS, or gone: {set(sub.choices) ^ set(order)}")
    parsers = dict(sub.choices)
    sub.choices.clear()  # the parser map itself (argparse looks commands up in it): reordered in place
    sub.choices.update((name, parsers[name]) for name in order)
    sub._choices_actions.sort(key=lambda action: order.index(action.dest))  # --help's list


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "faiss.loader", "sentence_transformers", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from pydantic import ValidationError

    from genret.core import GenretError

    try:
        code = args.func(args)
        sys.stdout.flush()  # output cut short shows here, not as a traceback at exit
        return code
    except BrokenPipeError:
        quiet_broken_pipe()
        return EXIT_BROKEN_PIPE
    except (GenretError, ValidationError, UsageError) as exc:
        if args.debug:
            raise
        msg = " ".join(str(exc).split()) if not isinstance(exc, ValidationError) else _validation_line(exc)
        print(f"genret: error: {msg}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("genret: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        msg = environment_error(exc)
        if msg is None or args.debug:
            raise
        print(f"genret: error: {msg}", file=sys.stderr)
        return EXIT_USAGE


def _validation_line(exc) -> str:
    first = exc.errors()[0]
    return f"invalid setting {'.'.join(str(x) for x in first['loc'])}: {first['msg']}"
