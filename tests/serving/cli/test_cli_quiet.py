"""A quiet, fast command line: defaults in ``--help``, one-line errors for unknown tasks and unloadable models,
``genret search INDEX -`` over JSON lines from stdin, and a BM25 search that never imports torch."""

from __future__ import annotations

import argparse
import io
import json
import logging
import subprocess
import sys

import pytest

from genret.core import ConfigError, NotFoundError, loading_model
from genret.retrieval import TASKS, check_task
from genret.serving import main
from genret.serving.cli._flags import check_task_flag
from genret.serving.cli._main import build_parser


def _subparsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                for inner, subsub in _subparsers(sub):
                    yield f"{name} {inner}", subsub


def test_help_shows_defaults_and_never_none():
    helps = {name: " ".join(sub.format_help().split()) for name, sub in _subparsers(build_parser())}
    assert {"index", "search", "eval", "rag", "rebuild-dense", "train retriever"} <= set(helps)
    assert "-k K hits per query (default: 10)" in helps["search"]
    assert "--hnsw-m HNSW_M (default: 32)" in helps["index"] and "(default: paragraph)" in helps["index"]
    assert "--device DEVICE auto, cpu, cuda, cuda:N (default: auto)" in helps["search"]
    for name, text in helps.items():
        assert "(default: None)" not in text and "(default: False)" not in text, name


@pytest.mark.parametrize("command", [
    ["search", "{index}", "a query"],
    ["eval", "{index}", "{questions}"],
    ["rag", "{index}", "a question"],
])
def test_an_unknown_task_is_refused_with_the_known_ones(command, tiny_index, data_dir, capsys):
    args = [a.format(index=tiny_index, questions=data_dir / "questions.jsonl") for a in command]
    assert main([*args, "--retriever", "bm25", "--task", "fact_chek"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("genret: error: unknown task 'fact_chek'; known tasks: ")
    assert all(name in err[0] for name in TASKS)


def test_a_checkpoints_or_demo_pools_tasks_are_known(tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "prompts.json").write_text(json.dumps({"my_task": {"instruction": "Write."}}))
    flags = {"checkpoint": str(tmp_path / "ckpt"), "demos": None}
    assert check_task_flag(argparse.Namespace(task="my_task", **flags)) == "my_task"
    assert check_task_flag(argparse.Namespace(task=None, **flags)) is None
    with pytest.raises(NotFoundError, match="my_task"):  # the message lists the checkpoint's tasks too
        check_task_flag(argparse.Namespace(task="other", **flags))
    with pytest.raises(NotFoundError):
        check_task(" qa")
    assert check_task("qa") == "qa" and check_task("x", extra=["x"]) == "x"


def test_the_librarys_fallback_to_generic_stays_and_is_logged(caplog):
    from genret.retrieval.generative import DEFAULT_PROMPTS
    from genret.retrieval.rag import resolve_answer_task

    with caplog.at_level(logging.WARNING, logger="genret"):
        assert resolve_answer_task("no-such-task-for-the-log")[0] == "generic"
        assert resolve_answer_task("no-such-task-for-the-log")[0] == "generic"
    assert caplog.text.count("unknown task 'no-such-task-for-the-log': using the generic one") == 1
    assert "qa" in DEFAULT_PROMPTS


def test_an_unloadable_model_is_one_line(tmp_path, data_dir, capsys):
    (tmp_path / "not-a-model").mkdir()
    for model, words in ((str(tmp_path / "not-a-model"), "Unrecognized model"),
                         ("nobody/no-such-model-xyz", "no such folder")):
        assert main(["index", str(data_dir / "corpus.jsonl"), "--out", str(tmp_path / "ix"), "--dense", "--quiet",
                     "--device", "cpu", "--model", model]) == 2
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("genret: error:")]
        assert len(err) == 1 and f"cannot load the dense encoder {model!r}: " in err[0] and words in err[0], err
    assert main(["rag", "none", "a question", "--generator-model", str(tmp_path / "not-a-model")]) == 2
    assert "cannot load the language model" in capsys.readouterr().err


def test_loading_model_leaves_the_environments_errors_alone():
    with pytest.raises(ConfigError, match="cannot load the model 'm': bad config"):
        with loading_model("m"):
            raise ValueError("bad config\nmore lines")
    with pytest.raises(OSError) as caught:  # a full disk or a permission: the CLI's own one-line report
        with loading_model("m"):
            raise PermissionError(13, "Permission denied", "/x")
    assert not isinstance(caught.value, ConfigError)
    with pytest.raises(NotFoundError):
        with loading_model("m"):
            raise NotFoundError("ours")


def _search_stdin(monkeypatch, capsys, index, lines: str, *flags: str) -> tuple[int, list[dict], str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(lines))
    code = main(["search", str(index), "-", "--retriever", "bm25", *flags])
    out, err = capsys.readouterr()
    return code, [json.loads(x) for x in out.splitlines()], err


def test_search_answers_json_lines_from_stdin(tiny_index, monkeypatch, capsys):
    queries = ["Who created Python?", "oil embargo", "highest mountain"]
    lines = "".join(json.dumps(q) + "\n" for q in queries) + "\n" + json.dumps(
        {"query": "jazz trumpet", "k": 1, "id": {"n": 4}}) + "\n"
    code, answers, _ = _search_stdin(monkeypatch, capsys, tiny_index, lines, "-k", "2")
    assert code == 0 and [a["query"] for a in answers] == [*queries, "jazz trumpet"]
    assert answers[3]["id"] == {"n": 4} and len(answers[3]["hits"]) == 1 and "id" not in answers[0]
    for a in answers[:3]:  # the same hits as one search per process
        assert main(["search", str(tiny_index), a["query"], "--retriever", "bm25", "-k", "2", "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == a["hits"]
    assert _search_stdin(monkeypatch, capsys, tiny_index, lines, "-k", "2", "--batch", "1")[1] == answers


def test_bad_stdin_lines_are_answered_with_an_error_and_exit_2(tiny_index, monkeypatch, capsys):
    lines = "\n".join(['"Python"', "not json", '{"query": "x", "k": 0}', '{"query": "x", "task": "qq"}',
                       '{"query": "  "}', '{"q": "x"}', '{"query": "x", "top": 3}', "[1]", '"oil"']) + "\n"
    code, answers, err = _search_stdin(monkeypatch, capsys, tiny_index, lines)
    assert code == 2 and "7 line(s) of stdin could not be answered" in err
    assert [a.get("line") for a in answers] == [None, 2, 3, 4, 5, 6, 7, 8, None]
    errors = [a["error"] for a in answers if "error" in a]
    for words in ("not a JSON value", "k must be an integer of at least 1", "unknown task 'qq'", "blank",
                  'expected "a query"', "unknown field(s) top"):
        assert any(words in e for e in errors), (words, errors)
    assert answers[0]["hits"] and answers[-1]["hits"]


def test_bm25_search_does_not_import_torch(tiny_index):
    code = ("import sys; from genret.serving import main; rc = main(['search', sys.argv[1], 'oil', '--retriever', "
            "'bm25', '--json']); print('heavy:', sorted(m for m in ('torch', 'transformers', "
            "'sentence_transformers', 'faiss') if m in sys.modules), file=sys.stderr); sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, str(tiny_index)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["provenance"]["wikipedia_id"] == "p-oil"
    assert "heavy: []" in r.stderr


def test_the_cli_offers_the_dtypes_core_resolves():
    """A private invariant: the CLI spells the names out (importing genret.core would import pydantic into
    `genret --help`), so they must stay core's."""
    from genret.core import DTYPES
    from genret.serving.cli._flags import DTYPES as CLI_DTYPES

    assert CLI_DTYPES == DTYPES
