"""Quiet and honest output (issue 29, point 4): ``--quiet`` prints nothing but results and errors, ``-v`` adds INFO
and ``-vv`` DEBUG logs (on stderr only); every usage error is one line with a pointer to ``--help``; a busy port
for ``genret serve`` is one line and exit 2 before anything claims to have started; ``eval score`` and
``eval suite`` have help pages of their own."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from genret.serving import main
from genret.serving.cli._main import build_parser

ROOT = Path(__file__).resolve().parents[3]


def _genret(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "genret", *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def test_quiet_index_prints_only_its_result(data_dir, tmp_path):
    r = _genret("index", str(data_dir / "corpus.jsonl"), "--out", str(tmp_path / "ix"), "--bm25", "--quiet")
    assert r.returncode == 0, r.stderr
    assert r.stderr == "" and r.stdout.startswith("indexed 5 pages") and len(r.stdout.splitlines()) == 1
    r = _genret("index", str(data_dir / "corpus.jsonl"), "--out", str(tmp_path / "ix2"), "--bm25", "-v")
    assert r.returncode == 0 and "INFO genret: building component bm25" in r.stderr, r.stderr
    assert "INFO" not in r.stdout


def test_a_dense_search_logs_nothing_unless_asked(tiny_index):
    r = _genret("search", str(tiny_index), "oil embargo", "--retriever", "dense", "--device", "cpu", "-k", "1")
    assert r.returncode == 0 and "INFO" not in r.stderr, r.stderr
    assert "1973 oil crisis" in r.stdout


def test_verbosity_flags_on_every_command():
    parser = build_parser()
    for argv, quiet, verbose in ((["search", "ix", "q"], False, 0), (["search", "ix", "q", "-q"], True, 0),
                                 (["index", "c", "--out", "o", "-vv"], False, 2),
                                 (["serve", "ix", "--verbose"], False, 1), (["train", "reader", "ix", "t", "--out",
                                                                           "r.json", "-q"], True, 0)):
        args = parser.parse_args(argv)
        assert (args.quiet, args.verbose) == (quiet, verbose), argv


@pytest.mark.parametrize("argv, words, page", [
    (["index", "corpus.jsonl"], "the following arguments are required: --out", "genret index --help"),
    (["search", "ix"], "give either a query", "genret search --help"),
    (["eval", "score", "only-one.jsonl"], "the following arguments are required: GOLD", "genret eval score --help"),
    (["search", "ix", "q", "--no-such-flag"], "unrecognized arguments: --no-such-flag", "genret search --help"),
    (["serch"], "invalid choice: 'serch'", "genret --help"),
    (["train", "reader", "ix"], "the following arguments are required", "genret train reader --help"),
])
def test_usage_errors_are_one_line_with_a_pointer_to_help(argv, words, page, capsys):
    with pytest.raises(SystemExit) as stop:
        code = main(argv)
        raise SystemExit(code)
    assert stop.value.code == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1 and lines[0].startswith("genret: error:"), err
    assert words in lines[0] and page in lines[0], lines[0]


@pytest.mark.parametrize("what, shows, hides", [
    ("score", ["GUESS", "GOLD", "--rank-keys", "--ks"], ["--retriever", "--rag", "--split"]),
    ("suite", ["SUITE", "--out", "--json"], ["--retriever", "--rank-keys", "--rag"]),
])
def test_eval_score_and_suite_have_their_own_help(what, shows, hides, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["eval", what, "--help"])
    assert stop.value.code == 0
    page = capsys.readouterr().out
    assert page.startswith(f"usage: genret eval {what}") and len(page.splitlines()) < 40, page
    assert all(flag in page for flag in shows) and not any(flag in page for flag in hides), page


def test_a_busy_port_is_one_line_and_exit_2(tiny_index):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = _genret("serve", str(tiny_index), "--port", str(port), "--lazy", timeout=120)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("genret: error:") and f"127.0.0.1:{port}" in lines[0], r.stderr
    assert "in use" in lines[0] and "startup complete" not in r.stderr.lower()


def test_the_readme_names_no_private_module():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "serving._" not in readme and "._cli" not in readme  # `python -m genret` is the public entry
