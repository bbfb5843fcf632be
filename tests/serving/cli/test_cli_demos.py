"""``genret index-demos`` and ``genret train demos``: argument parsing and the thin handlers."""

from __future__ import annotations

import argparse

import pytest

from genret.core import ConfigError
from genret.serving.cli import _demos, _train
from tests.retrieval.demos.demo_pools import write_pools


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="genret")
    sub = p.add_subparsers(dest="command", required=True)
    _demos.register(sub)  # index-demos
    _train.register(sub)  # train demos (and the other models)
    return p


def _wired() -> bool:
    from genret.serving.cli._main import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return "index-demos" in sub.choices


def test_index_demos_and_train_parsing(tmp_path, capsys):
    _, claims = write_pools(tmp_path)
    a = _parser().parse_args(["index-demos", str(claims), "--task", "fact_check", "--out", str(tmp_path / "demos"),
                              "--device", "cpu", "--quiet"])
    assert a.func(a) == 0
    out = capsys.readouterr().out
    assert "indexed 6 demonstrations of task 'fact_check'" in out
    assert (tmp_path / "demos" / "fact_check" / "demos.json").is_file()

    t = _parser().parse_args(["train", "demos", str(tmp_path / "demos"), "--task", "fact_check=" + str(claims),
                              "--task", "qa=q.jsonl", "--out", str(tmp_path / "udr"), "--candidates", "4",
                              "--rounds", "1", "--max-queries", "5"])
    assert t.task == ["fact_check=" + str(claims), "qa=q.jsonl"] and t.candidates == 4 and t.rounds == 1
    bad = _parser().parse_args(["train", "demos", "d", "--task", "no-equals-sign", "--out", "o"])
    with pytest.raises(ConfigError, match="NAME=FILE"):
        bad.func(bad)


@pytest.mark.skipif(not _wired(), reason="index-demos is not registered in serving.cli yet")
def test_cli_errors_are_one_line(tmp_path, capsys):
    from genret.serving import main

    assert main(["index-demos", str(tmp_path / "missing.jsonl"), "--task", "qa", "--out", str(tmp_path)]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["train", "demos", str(tmp_path), "--task", "qa=x.jsonl", "--out", str(tmp_path / "o")]) == 2
