"""The documentation site builds with `mkdocs build --strict` (a broken link or anchor, a page left out of the nav,
an API name that cannot be found fails it), and the README's links lead somewhere."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_docs_build_strict(tmp_path):
    """About 4 s: the API reference is read from the sources by griffe (nothing of genret is imported)."""
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", "docs/mkdocs.yml",
                           "-d", str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "WARNING" not in log, log[-5000:]
    for page in ("index.html", "guide/cli/index.html", "benchmarks/index.html", "reference/retrieval/index.html"):
        assert (tmp_path / "site" / page).is_file(), page
    # the included pages and the API reference are there, not just their headings
    assert "KILT scoring" in (tmp_path / "site" / "benchmarks" / "index.html").read_text(encoding="utf-8")
    assert 'id="genret.retrieval.load_retriever"' in (tmp_path / "site" / "reference" / "retrieval" /
                                                        "index.html").read_text(encoding="utf-8")


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text, fence = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
        elif not fence and re.match(r"#{1,6} ", line):
            text.append(_slug(line.lstrip("#")))
    return set(text)


def test_the_readme_links_resolve():
    readme = ROOT / "README.md"
    links = re.findall(r"\]\(([^)\s]+)\)", readme.read_text(encoding="utf-8"))
    assert links
    for link in links:
        if re.match(r"[a-z]+://", link):
            continue
        target, _, anchor = link.partition("#")
        path = (readme.parent / target).resolve()
        assert path.exists(), f"README.md links to {link}: no such file"
        if anchor:
            assert anchor in _anchors(path), f"README.md links to {link}: no such heading"
