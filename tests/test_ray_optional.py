"""Ray is an optional extra (``genret[ray]``): with it hidden, genret imports, and ``--ray`` says how to install it.
Runs with or without Ray installed."""

from __future__ import annotations

import subprocess
import sys


def test_nothing_imports_ray_without_the_extra(tmp_path, data_dir):
    code = ("import sys; sys.modules['ray'] = None\n"
            "import genret, genret.indexing, genret.retrieval, genret.serving\n"
            "import genret.serving._service, genret.serving._settings\n"
            "from genret.serving import main\n"
            f"rc = main(['index', {str(data_dir / 'corpus.jsonl')!r}, '--out', {str(tmp_path / 'x')!r}, '--ray'])\n"
            "sys.exit(rc)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "pip install 'genret[ray]'" in run.stderr, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "x").exists()


def test_importing_genret_does_not_import_ray():
    code = "import sys, genret.indexing, genret.retrieval, genret.serving._service; print('ray' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.stdout.strip() == "False", run.stderr[-2000:]
