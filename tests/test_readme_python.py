"""The README's "From Python" block runs as written (on the tiny corpus and its questions)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def python_block() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### From Python"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_quick_start_is_at_most_ten_lines():
    assert len(python_block().strip().splitlines()) <= 10


@pytest.mark.slow
def test_the_quick_start_runs(data_dir, tmp_path):
    shutil.copy(data_dir / "corpus.jsonl", tmp_path / "corpus.jsonl")
    shutil.copy(data_dir / "questions.jsonl", tmp_path / "dev.jsonl")
    code = python_block() + "\nprint('RPREC', report['levels']['page']['Rprec'])\n"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("1 ") and "1973 oil crisis" in lines[0]
    assert float(lines[-1].split()[1]) > 0.5
