"""The ``genret`` command line: ``main`` (the console script, ``python -m genret``).

One module per command group, each adding its commands with ``register(sub)``: ``_index`` (index, add,
rebuild-dense, verify, demo-data), ``_search``, ``_serve``, ``_eval``, ``_rag``, ``_train`` (retriever, demos, reader,
labels), ``_demos`` (index-demos) and ``_tune``; ``_main`` builds the parser and runs a command, with what they share
in ``_common`` (the parser, usage errors) and ``_flags`` (the retriever flags).  The HTTP API is ``serving.http``'s,
through its public names.
"""

from __future__ import annotations

from ._main import main

__all__ = ["main"]
