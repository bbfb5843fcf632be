"""MkDocs hooks for genret's site (docs/mkdocs.yml); nothing of genret is imported.

- The API reference is read statically by griffe, which looks for a folder named like the package.  The repository
  root *is* the `genret` package (pyproject.toml maps `genret` to `.`) under whatever name it was cloned as, so a
  temporary folder holding a `genret` link to the root is put first on the handler's search paths.
- Snippets (`--8<-- "bench/README.md"`) are read from the repository root wherever mkdocs is started.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from mkdocs.plugins import event_priority

ROOT = Path(__file__).resolve().parents[1]


@event_priority(100)  # before the plugins' own on_config: mkdocstrings reads its handler options there
def on_config(config):
    link_dir = Path(tempfile.mkdtemp(prefix="genret-docs-"))
    atexit.register(shutil.rmtree, link_dir, ignore_errors=True)
    (link_dir / "genret").symlink_to(ROOT, target_is_directory=True)
    python = config.plugins["mkdocstrings"].config.handlers.setdefault("python", {})
    python["paths"] = [str(link_dir)]
    config.mdx_configs.setdefault("pymdownx.snippets", {})["base_path"] = [str(ROOT)]
    return config
