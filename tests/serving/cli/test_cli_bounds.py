"""Numbers and lines the command line cannot take (issue 27, points 5 and 9): every numeric flag has a range (k's is
the server's: ``max_k`` cannot be set above it either), refused in one line with exit code 2; a stdin line nested
too deeply is answered with an error record and the lines around it are answered; an empty query is an error."""

from __future__ import annotations

import io
import json
import sys

import pytest
from pydantic import ValidationError

from genret.serving import ServerConfig, main

MAX_K = 10_000


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err and "Exception" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("genret: error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("retriever, k", [("bm25", "2147483648"), ("dense", "99999999999999999999")])
def test_a_huge_k_is_one_line_exit_2(tiny_index, capsys, retriever, k):
    assert main(["search", str(tiny_index), "oil embargo", "--retriever", retriever, "-k", k]) == 2
    assert f"-k must be at most {MAX_K}, got {k}" in _one_error_line(capsys.readouterr().err)


def test_k_has_the_servers_bound(tiny_index, capsys):
    assert main(["search", str(tiny_index), "oil embargo", "--retriever", "bm25", "-k", str(MAX_K), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)  # every unit there is, at most
    assert main(["eval", str(tiny_index), "task.jsonl", "-k", str(MAX_K + 1)]) == 2
    assert f"-k must be at most {MAX_K}" in _one_error_line(capsys.readouterr().err)
    assert ServerConfig(max_k=MAX_K).max_k == MAX_K
    with pytest.raises(ValidationError):
        ServerConfig(max_k=MAX_K + 1)


@pytest.mark.parametrize("flags, words", [
    (["--beam", "100000000000000000000"], "--beam must be at most"),
    (["--ef-search", "4294967296"], "--ef-search must be at most"),
    (["--nprobe", "0"], "--nprobe must be at least 1, got 0"),
    (["--rrf-k", "99999999999999999999"], "--rrf-k must be at most"),
    (["--copy-bonus", "inf"], "--copy-bonus must be at most"),
    (["--calibration", "nan"], "--calibration must be between 0 and 1, got nan"),
    (["--batch", "0"], "--batch must be at least 1, got 0"),
    (["--batch", "99999999999"], "--batch must be at most"),
])
def test_numeric_flags_have_ranges(tiny_index, capsys, flags, words):
    assert main(["search", str(tiny_index), "oil", "--retriever", "bm25", *flags]) == 2
    assert words in _one_error_line(capsys.readouterr().err)


def _search_stdin(monkeypatch, capsys, index, lines: str) -> tuple[int, list[dict], str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(lines))
    code = main(["search", str(index), "-", "--retriever", "bm25", "-k", "2"])
    out, err = capsys.readouterr()
    return code, [json.loads(x) for x in out.splitlines()], err


def test_a_deeply_nested_stdin_line_is_an_error_record_and_the_rest_are_answered(tiny_index, monkeypatch, capsys):
    deep = "[" * 3000 + "]" * 3000
    deep_object = '{"query": "oil", "id": ' + "[" * 3000 + "]" * 3000 + "}"
    lines = "\n".join(['"Python"', deep, deep_object, '{"query": "jazz", "k": 2147483648}', '"oil embargo"']) + "\n"
    code, answers, err = _search_stdin(monkeypatch, capsys, tiny_index, lines)
    assert code == 2 and "3 line(s) of stdin could not be answered" in err
    assert [a.get("line") for a in answers] == [None, 2, 3, 4, None]
    assert answers[0]["hits"] and answers[-1]["hits"]
    assert "nested deeper than" in answers[1]["error"] and "nested deeper than" in answers[2]["error"]
    assert f"k must be an integer of at least 1 and at most {MAX_K}, got 2147483648" in answers[3]["error"]


@pytest.mark.parametrize("query", ["", "   "])
def test_an_empty_query_is_one_line_exit_2(tiny_index, capsys, query):
    assert main(["search", str(tiny_index), query, "--retriever", "bm25"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "the query is empty" in _one_error_line(err)
