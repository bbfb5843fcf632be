"""Reading, writing and aligning KILT files: formats, error messages, KILT's alignment rules."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from genret.core import GenretError, InputError
from genret.eval import read_kilt, score, write_kilt
from genret.eval._kilt_io import align

GOOD = {"id": "q1", "input": "who?", "output": [{"answer": "x", "provenance": [{"wikipedia_id": "1"}]}]}


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _error(path: Path) -> InputError:
    with pytest.raises(InputError) as caught:
        read_kilt(path)
    return caught.value


@pytest.mark.parametrize(("bad_line", "field"), [
    ('{"id": "q2", "output": [', None),
    ('{"input": "no id", "output": []}', "id"),
    ('{"id": [1], "output": []}', "id"),
    ('{"id": "q2", "output": {"answer": "x"}}', "output"),
    ('{"id": "q2"}', "output"),
    ('{"id": "q2", "output": ["x"]}', "output[0]"),
    ('{"id": "q2", "output": [{"answer": 3}]}', "output[0].answer"),
    ('{"id": "q2", "output": [{"provenance": {"wikipedia_id": 1}}]}', "output[0].provenance"),
    ('{"id": "q2", "output": [{"provenance": []}, {"provenance": [{}, 7]}]}', "output[1].provenance[1]"),
    ('{"id": "q2", "input": 5, "output": []}', "input"),
    ('["not", "records"]', None),
])
def test_malformed_line_names_file_line_and_field(tmp_path: Path, bad_line: str, field: str | None) -> None:
    path = _write_lines(tmp_path / "guess.jsonl", [json.dumps(GOOD), "", bad_line, json.dumps(GOOD)])
    error = _error(path)
    assert error.path == str(path) and error.line == 3 and error.field == field
    assert "guess.jsonl:3" in str(error)
    if field is not None:
        assert f"field '{field}'" in str(error)


def test_bad_json_on_first_line(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "gold.jsonl", ['{"id": 1, "output": [}', json.dumps(GOOD)])
    error = _error(path)
    assert error.line == 1 and "gold.jsonl:1" in str(error) and "invalid JSON" in str(error)


def test_duplicate_ids_name_both_lines(tmp_path: Path) -> None:
    second = {**GOOD, "id": "q2"}
    again = {**GOOD, "id": " q2 "}  # KILT compares str(id).strip()
    path = _write_lines(tmp_path / "gold.jsonl", [json.dumps(GOOD), json.dumps(second), json.dumps(again)])
    error = _error(path)
    assert error.line == 3 and error.field == "id"
    assert "line 2" in str(error) and "line 3" in str(error) and "gold.jsonl" in str(error)


def test_int_and_str_ids_are_the_same_id(tmp_path: Path) -> None:
    lines = [json.dumps({**GOOD, "id": 7}), json.dumps({**GOOD, "id": "7"})]
    path = _write_lines(tmp_path / "gold.jsonl", lines)
    assert _error(path).line == 2
    guess = [{**GOOD, "id": "7"}]
    gold = [{**GOOD, "id": 7}]
    assert align(guess, gold) == [(guess[0], gold[0])]


def test_gzip_and_other_layouts(tmp_path: Path) -> None:
    records = [GOOD, {**GOOD, "id": 2, "output": [{"answer": "é ü"}]}]
    with gzip.open(tmp_path / "plain.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(record) + "\n" for record in records))
    assert read_kilt(tmp_path / "plain.jsonl.gz") == records
    pretty = "\n".join(json.dumps(record, indent=4) for record in records)
    (tmp_path / "pretty.json").write_text(pretty, encoding="utf-8")
    assert read_kilt(tmp_path / "pretty.json") == records
    (tmp_path / "array.json").write_text(json.dumps(records, indent=2), encoding="utf-8")
    assert read_kilt(tmp_path / "array.json") == records
    (tmp_path / "one.json").write_text(json.dumps(records[0], indent=2), encoding="utf-8")
    assert read_kilt(tmp_path / "one.json") == records[:1]
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    assert read_kilt(tmp_path / "empty.jsonl") == []


def test_pretty_printed_errors_point_at_the_record(tmp_path: Path) -> None:
    text = json.dumps(GOOD, indent=2) + "\n" + json.dumps({"id": "q9", "output": 3}, indent=2)
    path = tmp_path / "pretty.json"
    path.write_text(text, encoding="utf-8")
    error = _error(path)
    assert error.line == text.split("\n").index("{", 1) + 1 and error.field == "output"
    path.write_text(json.dumps(GOOD, indent=2) + "\n{\n  \"id\": 1,\n  oops\n}\n", encoding="utf-8")
    assert _error(path).line == json.dumps(GOOD, indent=2).count("\n") + 4  # the "oops" line


def test_unreadable_file(tmp_path: Path) -> None:
    assert "cannot read" in str(_error(tmp_path / "missing.jsonl"))
    (tmp_path / "broken.gz").write_bytes(b"\x1f\x8b" + b"garbage")
    assert "broken.gz" in str(_error(tmp_path / "broken.gz"))


@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.gz"])
def test_write_round_trip_is_atomic(tmp_path: Path, name: str) -> None:
    records: list[dict[str, Any]] = [{**GOOD, "id": i, "input": f"q {i} ☃"} for i in range(3000)]
    write_kilt(tmp_path / name, records)
    assert read_kilt(tmp_path / name) == records
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]

    def failing() -> Any:
        yield GOOD
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_kilt(tmp_path / name, failing())
    assert read_kilt(tmp_path / name) == records  # the old file is untouched, no temp file is left
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_missing_guess_ids_are_named_and_counted() -> None:
    gold = [{**GOOD, "id": f"q{i}"} for i in range(10)]
    guess = [{**GOOD, "id": "q0"}, {**GOOD, "id": "extra"}]
    with pytest.raises(GenretError) as caught:
        align(guess, gold)
    message = str(caught.value)
    assert "9 of 10" in message and "'q1'" in message and "'q5'" in message and "4 more" in message
    assert "'q9'" not in message


def test_align_orders_by_gold_and_ignores_extra_guesses() -> None:
    gold = [{**GOOD, "id": i} for i in (3, 1, 2)]
    guess = [{**GOOD, "id": str(i), "input": str(i)} for i in (1, 2, 3, 4)]
    assert [g["input"] for g, _ in align(guess, gold)] == ["3", "1", "2"]
    with pytest.raises(GenretError, match="unique"):
        align(guess + guess[:1], gold)
    with pytest.raises(GenretError, match="unique"):
        align(guess, gold + gold[:1])


def test_several_outputs_keep_the_one_with_provenance() -> None:
    gold = [GOOD]
    guess = {"id": "q1", "output": [{"answer": "x"}, {"provenance": [{"wikipedia_id": "1"}]}]}
    (aligned, _), = align([guess], gold)
    assert aligned["output"] == [{"provenance": [{"wikipedia_id": "1"}]}] and len(guess["output"]) == 2
    assert score([guess], gold, downstream=False)["retrieval"]["Rprec"] == 1
    for outputs in ([{"answer": "x"}, {"answer": "y"}], [GOOD["output"][0]] * 2, []):
        with pytest.raises(InputError, match="q1"):
            align([{"id": "q1", "output": outputs}], gold)


def test_score_downstream_auto_and_errors() -> None:
    gold = [GOOD, {**GOOD, "id": "q2"}]
    retrieval_only = [{"id": i, "output": [{"provenance": [{"wikipedia_id": "1"}]}]} for i in ("q1", "q2")]
    result = score(retrieval_only, gold)
    assert result["downstream"] == {} and result["kilt"] == {} and result["count"] == 2
    answered = [{"id": "q1", "output": [{"answer": "x", "provenance": [{"wikipedia_id": "1"}]}]},
                {"id": "q2", "output": [{"answer": "  "}]}]
    result = score(answered, gold)
    assert result["downstream"]["accuracy"] == 0.5 and result["kilt"]["KILT-em"] == 0.5  # empty counts
    with pytest.raises(InputError, match="q1"):
        score(retrieval_only, gold, downstream=True)
    with pytest.raises(InputError, match="no non-empty answer"):
        score(answered, [{**GOOD, "output": [{"provenance": []}]}, gold[1]])
    with pytest.raises(GenretError, match="ks"):
        score(answered, gold, ks=(0, 5))


def test_auto_downstream_needs_gold_answers() -> None:
    gold = [{"id": "q1", "output": [{"provenance": [{"wikipedia_id": "1"}]}]}]
    guess = [{"id": "q1", "output": [{"answer": "x", "provenance": [{"wikipedia_id": "1"}]}]}]
    result = score(guess, gold)
    assert result["downstream"] == {} and result["retrieval"]["Rprec"] == 1
