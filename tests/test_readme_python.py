"""The Python in the README's tour runs as written on what `make demo` leaves in ``demo-out/``, and the quick start
of the docs' "From Python" page runs as written (on the tiny corpus and its questions)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from tests._readme_demo import ENV, ROOT, demo_checkout, fenced_blocks, readme_section

PYTHON_PAGE = ROOT / "docs" / "src" / "guide" / "python.md"


def readme_python() -> str:
    (block,) = fenced_blocks(readme_section("A 5-minute tour"), "python")
    return block


def quick_start() -> str:
    return re.search(r"```python\n(.*?)```", PYTHON_PAGE.read_text(encoding="utf-8"), re.S).group(1)


def test_the_python_blocks_are_at_most_ten_lines():
    assert len(readme_python().strip().splitlines()) <= 10
    assert len(quick_start().strip().splitlines()) <= 10


@pytest.mark.slow
def test_the_readme_python_runs_on_the_demo():
    proc = subprocess.run([sys.executable, "-c", readme_python()], cwd=demo_checkout(), capture_output=True,
                          text=True, timeout=600, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("1 ") and "shutil shutil.copytree" in lines[0], lines  # BM25's first, as the tour says
    assert lines[-1] == "JavaScript", lines


@pytest.mark.slow
def test_the_docs_quick_start_runs(data_dir, tmp_path):
    shutil.copy(data_dir / "corpus.jsonl", tmp_path / "corpus.jsonl")
    shutil.copy(data_dir / "questions.jsonl", tmp_path / "dev.jsonl")
    code = quick_start() + "\nprint('RPREC', report['levels']['page']['Rprec'])\n"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("1 ") and "1973 oil crisis" in lines[0]
    assert float(lines[-1].split()[1]) > 0.5

