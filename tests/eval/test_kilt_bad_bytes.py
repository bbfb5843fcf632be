"""KILT task and prediction files with bad bytes: an InputError naming file, line and field, never a traceback."""

import json

import pytest

from genret.core import InputError
from genret.eval import read_kilt

GOOD = json.dumps({"id": "1", "input": "q", "output": [{"answer": "a"}]}).encode() + b"\n"
DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize("content, words", [
    (GOOD + b'{"id": "2", "input": ' + DEEP + b', "output": []}\n', ":2: invalid JSON (nested too deeply"),
    (DEEP + b"\n" + GOOD, ":1: invalid JSON (nested too deeply"),
    (b'{"id": "1", "input": "q",\n "output": ' + DEEP + b"}\n", ":1: invalid JSON (nested too deeply"),
    (GOOD + b'{"id": "2", "input": "x \\ud800", "output": []}\n', ":2, field 'input': lone surrogate \\ud800"),
    (GOOD + b'{"id": "\\udc00", "output": []}\n', ":2, field 'id': lone surrogate \\udc00"),
    (GOOD + b'{"id": "2", "output": [{"answer": "\\ud83d"}]}\n', ":2, field 'output[0].answer': lone surrogate"),
    (GOOD + b'{"id": "2", "input": "\xff", "output": []}\n', ":2: not UTF-8"),
], ids=["deep-line", "deep-first-line", "deep-pretty", "surrogate-input", "surrogate-id", "surrogate-answer",
        "non-utf8"])
def test_bad_bytes_are_named(tmp_path, content, words):
    f = tmp_path / "task.jsonl"
    f.write_bytes(content)
    with pytest.raises(InputError) as err:
        read_kilt(f)
    assert str(err.value).startswith(str(f)) and words in str(err.value), str(err.value)
