"""Batch search as researchers write their topics (issue 29, point 1): JSON lines, plain-text lines and
``qid<TAB>query`` TSV (Pyserini's and MS MARCO's topics), from stdin (``-``) or ``--topics FILE``, detected per file
or named with ``--topics-format``; ``--trec-run FILE`` writes the page-level run under the input's qids (plain-text
lines: their line numbers)."""

from __future__ import annotations

import io
import json
import sys

import pytest

from genret.serving import main


def _search(monkeypatch, capsys, index, stdin: str, *args: str) -> tuple[int, list[dict], str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(["search", str(index), *args, "--retriever", "bm25"])
    out, err = capsys.readouterr()
    return code, [json.loads(x) for x in out.splitlines()], err


def _run_lines(path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()]


def test_plain_text_lines_from_stdin(tiny_index, monkeypatch, capsys):
    text = "who proclaimed the oil embargo\n\nWho created Python?\n"
    code, answers, err = _search(monkeypatch, capsys, tiny_index, text, "-", "-k", "1")
    assert code == 0, err
    assert [a["query"] for a in answers] == ["who proclaimed the oil embargo", "Who created Python?"]
    assert [a["id"] for a in answers] == [1, 3]  # line numbers (the blank line counts)
    assert [a["hits"][0]["provenance"]["wikipedia_id"] for a in answers] == ["p-oil", "p-python"]


def test_tsv_topics_file_with_a_trec_run(tiny_index, tmp_path, capsys):
    topics = tmp_path / "topics.tsv"
    topics.write_text("q1\twho proclaimed the oil embargo\r\nq2\tWho created Python?\r\n")
    run = tmp_path / "search.run"
    assert main(["search", str(tiny_index), "--topics", str(topics), "--retriever", "bm25", "-k", "3",
                 "--trec-run", str(run)]) == 0
    answers = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(a["id"], a["query"]) for a in answers] == [("q1", "who proclaimed the oil embargo"),
                                                        ("q2", "Who created Python?")]
    lines = _run_lines(run)
    assert lines[0][:4] == ["q1", "Q0", "p-oil", "1"] and lines[0][5] == "genret-bm25"
    assert {line[0] for line in lines} == {"q1", "q2"}
    for qid in ("q1", "q2"):  # page level: each page once, ranks 1, 2, …
        ranks = [int(line[3]) for line in lines if line[0] == qid]
        docs = [line[2] for line in lines if line[0] == qid]
        assert ranks == list(range(1, len(ranks) + 1)) and len(docs) == len(set(docs))


def test_text_lines_take_line_numbers_as_qids_in_the_run(tiny_index, tmp_path, monkeypatch, capsys):
    run = tmp_path / "stdin.run"
    code, _, err = _search(monkeypatch, capsys, tiny_index, "oil embargo\n\nhighest mountain\n", "-",
                           "--trec-run", str(run))
    assert code == 0, err
    assert {line[0] for line in _run_lines(run)} == {"1", "3"}


def test_json_lines_keep_their_ids_and_error_records(tiny_index, tmp_path, monkeypatch, capsys):
    run = tmp_path / "json.run"
    lines = json.dumps({"query": "oil embargo", "id": "a-1"}) + "\nnot json\n" + json.dumps("highest mountain") + "\n"
    code, answers, err = _search(monkeypatch, capsys, tiny_index, lines, "-", "--trec-run", str(run))
    assert code == 2 and "1 line(s)" in err
    assert answers[0]["id"] == "a-1" and answers[1] == {"line": 2, "error": answers[1]["error"]}
    assert "not a JSON value" in answers[1]["error"] and "id" not in answers[2]
    assert {line[0] for line in _run_lines(run)} == {"a-1", "3"}  # a line without an id: its number


@pytest.mark.parametrize("fmt, content, queries", [
    ("text", '"quoted" words\nq1\toil embargo\n', ['"quoted" words', "q1\toil embargo"]),
    ("tsv", "7\toil embargo\n", ["oil embargo"]),
    ("json", '"oil embargo"\n', ["oil embargo"]),
])
def test_topics_format_names_the_format(tiny_index, tmp_path, capsys, fmt, content, queries):
    topics = tmp_path / "topics.txt"
    topics.write_text(content)
    assert main(["search", str(tiny_index), "--topics", str(topics), "--topics-format", fmt,
                 "--retriever", "bm25"]) == 0
    assert [json.loads(x)["query"] for x in capsys.readouterr().out.splitlines()] == queries


def test_a_tsv_line_without_a_tab_is_an_error_record(tiny_index, tmp_path, capsys):
    topics = tmp_path / "topics.tsv"
    topics.write_text("q1\toil embargo\njust words\n")
    assert main(["search", str(tiny_index), "--topics", str(topics), "--retriever", "bm25"]) == 2
    answers = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert answers[0]["id"] == "q1" and answers[1]["line"] == 2 and "qid<TAB>query" in answers[1]["error"]


@pytest.mark.parametrize("args, words", [
    (["oil", "--topics", "{topics}"], "either a query"),
    ([], "either a query"),
    (["-", "--topics", "{topics}"], "either a query"),
    (["--topics", "/nonexistent/topics.tsv"], "no such file"),
])
def test_query_and_topics_misuse_is_one_line(tiny_index, tmp_path, capsys, args, words):
    topics = tmp_path / "t.txt"
    topics.write_text("oil\n")
    assert main(["search", str(tiny_index), *[a.format(topics=topics) for a in args], "--retriever", "bm25"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("genret: error:") and words in err[0], err
