"""Ray is an optional extra (``genret[ray]``): with it hidden, genret imports, and ``--ray`` says how to install it.
Runs with or without Ray installed."""

from __future__ import annotations

import subprocess
import sys


def test_nothing_imports_ray_without_the_extra(tmp_path, data_dir):
    code = ("import sys; sys.modules['ray'] = None\n"
            "import genret, genret.indexing, genret.retrieval, genret.serving\n"
            "import genret.serving.http._service, genret.serving.http._settings\n"
            "from genret.serving import main\n"
            f"rc = main(['index', {str(data_dir / 'corpus.jsonl')!r}, '--out', {str(tmp_path / 'x')!r}, '--ray'])\n"
            "sys.exit(rc)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "pip install 'genret[ray]'" in run.stderr, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "x").exists()


def test_importing_genret_does_not_import_ray():
    code = "import sys, genret.indexing, genret.retrieval, genret.serving.http._service; print('ray' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.stdout.strip() == "False", run.stderr[-2000:]


def test_serve_ray_flags_make_the_ray_settings(monkeypatch, tiny_index):
    """``genret serve --ray [ADDRESS] --replicas N --shards N`` make ``settings.ray`` (no Ray needed); none without."""
    import genret.serving.http as http
    from genret.serving import main

    got = []
    monkeypatch.setitem(vars(http), "serve", got.append)  # the public name the CLI calls; lazy again after
    assert main(["serve", str(tiny_index), "--ray", "auto", "--replicas", "2", "--shards", "3"]) == 0
    assert got[-1].ray.model_dump() == {"address": "auto", "replicas": 2, "shards": 3, "num_cpus": None,
                                        "actor_cpus": None}
    assert main(["serve", str(tiny_index), "--ray", "--ray-cpus", "2"]) == 0
    assert got[-1].ray.address is None and got[-1].ray.num_cpus == 2
    assert main(["serve", str(tiny_index)]) == 0
    assert got[-1].ray is None
