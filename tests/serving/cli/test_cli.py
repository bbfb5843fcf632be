"""The ``genret`` command line: thin commands, one-line errors with exit code 2."""

import json
import subprocess
import sys

import pytest

from genret.serving import main


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "genret", *args], capture_output=True, text=True,
                          timeout=300)


def test_help_imports_nothing_heavy():
    code = ("import sys; from genret.serving.cli._main import build_parser; build_parser().format_help(); "
            "print(sorted(m for m in ('torch', 'faiss', 'fastapi', 'numpy', 'pydantic', 'transformers') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("args, words", [
    (["search", "/nonexistent/index", "query"], "no index at /nonexistent/index"),
    (["eval", "/nonexistent/index", "task.jsonl"], "no index at"),
    (["eval", "score", "only-one.jsonl"], "(see genret eval score --help)"),
    (["index", "/nonexistent/corpus.jsonl", "--out", "/tmp/genret-never-built"], "no such file"),
    (["search", "/nonexistent/index", "query", "-k", "0"], "-k must be at least 1, got 0"),
    (["eval", "/nonexistent/index", "task.jsonl", "-k", "-1"], "-k must be at least 1, got -1"),
    (["search", "/nonexistent/index", "q \udcff"], "the query is not valid UTF-8 (byte 0xff at character 3)"),
    (["rag", "/nonexistent/index", "q \udcfe"], "the question is not valid UTF-8 (byte 0xfe at character 3)"),
])
def test_errors_are_one_line_exit_2(args, words):
    r = _run(*args)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("genret: error:")]
    assert len(lines) == 1 and words in lines[0]
    assert "Traceback" not in r.stderr


def test_version_is_the_installed_distributions():
    from importlib.metadata import version

    r = _run("--version")  # python -m genret, as `accelerate launch -m genret` runs it
    assert r.returncode == 0 and r.stdout == f"genret {version('genret')}\n", r.stderr


def test_version_falls_back_when_not_installed(monkeypatch, capsys):
    import importlib.metadata

    import genret

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    assert genret.__version__  # read (and kept) now, so that the monkeypatch puts it back
    monkeypatch.delattr(genret, "__version__")
    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == "genret 0+unknown\n"


def test_debug_shows_traceback():
    r = _run("--debug", "search", "/nonexistent/index", "q")
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_bad_corpus_line_reported_and_skip_bad(tmp_path, capsys):
    f = tmp_path / "c.jsonl"
    f.write_text('{"id": "a", "title": "A", "text": "alpha"}\n{"id": "b", "title": 5, "text": "x"}\n')
    assert main(["index", str(f), "--out", str(tmp_path / "ix"), "--quiet", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"{f}:2, field 'title'" in err
    assert main(["index", str(f), "--out", str(tmp_path / "ix"), "--quiet", "--device", "cpu",
                 "--skip-bad"]) == 0
    assert "1 bad record(s) skipped" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert manifest["corpus"]["skipped"] == 1 and manifest["units"]["count"] == 1


def test_serve_takes_trusted_hosts(monkeypatch, tiny_index):
    import genret.serving.http as http

    got = []
    monkeypatch.setitem(vars(http), "serve", got.append)  # the public name the CLI calls; lazy again after
    assert main(["serve", str(tiny_index), "--trusted-host", "genret.test", "--trusted-host", "*.example.org"]) == 0
    assert got[0].server.trusted_hosts == ["genret.test", "*.example.org"]


def test_index_fm_options_reach_the_build(tmp_path, caplog):
    f = tmp_path / "c.jsonl"
    f.write_text("".join(json.dumps({"id": f"p{i}", "title": f"Page {i}", "text": f"alpha beta {i} gamma"}) + "\n"
                         for i in range(6)))
    with caplog.at_level("INFO", logger="genret"):
        assert main(["index", str(f), "--out", str(tmp_path / "ix"), "--quiet", "--fm", "--fm-shards", "2",
                     "--fm-workers", "1"]) == 0
    assert any("6 units" in r.getMessage() and "2 shard(s), 1 worker(s)" in r.getMessage() for r in caplog.records)
    params = json.loads((tmp_path / "ix" / "manifest.json").read_text())["components"]["fm"]["params"]
    assert params["shards"] == 2 and params["n_docs"] == 6
    assert main(["index", str(f), "--out", str(tmp_path / "iy"), "--quiet", "--fm", "--fm-workers", "0"]) == 2
