"""``genret``: one console script, thin subcommands over library functions.

Each module of this package is one command group and adds its commands with ``register(sub)``; ``build_parser``
lists them in ``COMMANDS``' order.  Heavy modules (torch, faiss, FastAPI) are imported inside the command functions,
so ``--help`` answers at once.  Errors the user can fix print one line on stderr and exit with code 2
(``--debug`` shows the traceback): bad input and settings, and the environment's refusals (a full disk, a
file that cannot be written).  Output cut short by its reader (``genret search --json | head``) ends the
command quietly, with the status of a process stopped by SIGPIPE (141).  A command line argparse cannot take is
one line too, pointing at the command's ``--help``.

Every command has ``-q/--quiet`` (nothing but results and errors) and ``-v/--verbose`` (``-v`` INFO, ``-vv`` DEBUG
logs); by default a command logs warnings only, except ``serve`` and ``train``, whose INFO log is their running
report.  Logs go to stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from . import _adapt, _demos, _eval, _index, _rag, _search, _serve, _train, _tune
from ._common import HELP_PAGE, Parser, UsageError, environment_error, quiet_broken_pipe

EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 128 + 13  # as a process stopped by SIGPIPE
GROUPS = (_index, _search, _serve, _eval, _rag, _adapt, _train, _demos, _tune)
# the commands in the order --help lists them
COMMANDS = ("index", "search", "serve", "eval", "rag", "add", "rebuild-dense", "adapt", "train", "index-demos", "tune",
            "verify", "demo-data")
LOGS_INFO = ("serve", "train", "adapt")  # commands whose INFO log is their running report: shown by default
NOISY = ("httpx", "faiss.loader", "sentence_transformers", "transformers")  # WARNING at most, even with -vv


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
    for name, command in sub.choices.items():
        for leaf in _leaves(command):
            if HELP_PAGE not in leaf._defaults or leaf.get_default("logs_info") != (name in LOGS_INFO):
                raise RuntimeError(f"genret {name}: a command without add_output_flags (logs_info: LOGS_INFO)")
    return p


def _leaves(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers of ``parser``'s commands that run something (``train``'s models, not ``train`` itself)."""
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        return [parser]
    return [leaf for group in groups for sub in group.choices.values() for leaf in _leaves(sub)]


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line's namespace.  ``eval score`` and ``eval suite`` have parsers of their own (``_eval
    .SUBCOMMANDS``): ``eval``'s first argument is an index, so they cannot be argparse subcommands of it."""
    head = next((i for i, arg in enumerate(argv) if not arg.startswith("-")), len(argv))
    if argv[head:head + 1] == ["eval"] and len(argv) > head + 1 and argv[head + 1] in _eval.SUBCOMMANDS \
            and set(argv[:head]) <= {"--debug"}:
        args = _eval.SUBCOMMANDS[argv[head + 1]]().parse_args(argv[head + 2:])
        args.debug, args.command = "--debug" in argv[:head], "eval"
        return args
    return build_parser().parse_args(argv)


def configure_logging(args: argparse.Namespace) -> None:
    """genret's logs on stderr at the level the flags ask for (``--quiet``: errors only); other libraries' at
    WARNING at most (ERROR with ``--quiet``), Python's warnings among them.  A host that configured logging
    already (a test runner, a program calling ``main``) keeps its own configuration."""
    verbose = getattr(args, "verbose", 0)
    if args.debug or verbose >= 2:
        level = logging.DEBUG
    elif verbose == 1 or (getattr(args, "logs_info", False) and not getattr(args, "quiet", False)):
        level = logging.INFO
    else:
        level = logging.ERROR if getattr(args, "quiet", False) else logging.WARNING
    others = max(level, logging.WARNING)
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(others)
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(others)
    logging.getLogger("genret").setLevel(level)
    logging.captureWarnings(True)


def _list_in_order(sub: argparse._SubParsersAction, order: tuple[str, ...]) -> None:
    """List the commands in ``order``: argparse lists them as they were added, a group's together."""
    if set(sub.choices) != set(order):
        raise RuntimeError(f"commands registered but not in COMMANDS, or gone: {set(sub.choices) ^ set(order)}")
    parsers = dict(sub.choices)
    sub.choices.clear()  # the parser map itself (argparse looks commands up in it): reordered in place
    sub.choices.update((name, parsers[name]) for name in order)
    sub._choices_actions.sort(key=lambda action: order.index(action.dest))  # --help's list


def main(argv: list[str] | None = None) -> int:
    args = parse(list(sys.argv[1:] if argv is None else argv))
    configure_logging(args)
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
        print(f"genret: error: {_error_line(exc, args)}", file=sys.stderr)
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


def _error_line(exc: Exception, args: argparse.Namespace) -> str:
    """One line: a usage error points at the command's ``--help``; a library error names options as flags."""
    if isinstance(exc, UsageError):
        return " ".join(str(exc).split()) + f" (see {getattr(args, HELP_PAGE, 'genret')} --help)"
    if hasattr(exc, "cli_message"):  # a GenretError
        return " ".join(exc.cli_message().split())
    return _validation_line(exc) if hasattr(exc, "errors") else " ".join(str(exc).split())  # pydantic's


def _validation_line(exc) -> str:
    first = exc.errors()[0]
    return f"invalid setting {'.'.join(str(x) for x in first['loc'])}: {first['msg']}"
