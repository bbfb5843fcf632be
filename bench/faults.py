"""Fault probes against a real ``genret serve`` (issue 27's "Done when"): one subcommand each, in its own module
(``bench/_faults_*.py``, each with ``register(subparsers)``, which adds its subcommand and sets ``func``).

- ``rebuild-race`` (``_faults_rebuild``): the served index rebuilt under load with model loads in flight — 0 stuck
  servers and 0 mixed versions expected;
- ``hostile-rag`` (``_faults_rag``): hostile RAG clients — 0 × 5xx expected.

    .venv/bin/python bench/faults.py {rebuild-race,hostile-rag} [options]   (--help for each)
"""

from __future__ import annotations

import argparse
import importlib
import sys

MODULES = ("_faults_rebuild", "_faults_rag")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a probe not written yet
            if exc.name != name:
                raise
            continue
        module.register(subparsers)
    a = parser.parse_args(argv)
    return a.func(a)


if __name__ == "__main__":
    sys.exit(main())
