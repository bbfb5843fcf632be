import gzip
import json

import pytest

from genret.core import InputError
from genret.indexing import ReadStats, read_corpus
from tests.conftest import PAGES


def test_jsonl_and_kilt_formats_give_the_same_pages(data_dir):
    jsonl = list(read_corpus(data_dir / "corpus.jsonl"))
    kilt = list(read_corpus(data_dir / "kilt_ks.jsonl.gz"))
    assert [p.page_id for p in jsonl] == [p["id"] for p in PAGES]
    assert [(p.page_id, p.title) for p in kilt] == [(p.page_id, p.title) for p in jsonl]
    # KILT paragraphs are kept raw (trailing newline) so that KILT character offsets stay valid
    assert [x.rstrip("\n") for x in kilt[0].paragraphs] == list(jsonl[0].paragraphs)
    assert kilt[0].paragraphs[0].endswith("\n")


def test_string_text_is_split_on_blank_lines(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps({"id": 7, "title": "T", "text": "first para\nstill first\n\n  \nsecond"}) + "\n")
    (page,) = read_corpus(f)
    assert page.page_id == "7"
    assert page.paragraphs == ("first para\nstill first", "second")


def test_real_kilt_knowledge_source_streams():
    path = __import__("tests.conftest", fromlist=["SHARED"]).SHARED / "minikilt/squad/knowledge_source.jsonl"
    if not path.exists():
        pytest.skip("shared minikilt not present")
    stats = ReadStats()
    pages = list(read_corpus(path, stats=stats))
    assert stats.pages == 48 == len(pages)
    assert stats.paragraphs == 2067
    assert pages[0].page_id == "squad-00" and pages[0].title == "1973 oil crisis"


@pytest.mark.parametrize("line, field, words", [
    ('{"id": "a", "title": "t", "text": ["x"]', None, "invalid JSON"),
    ('{"title": "t", "text": ["x"]}', "id", "missing"),
    ('{"id": "a", "title": "t"}', "text", "missing"),
    ('{"id": "a", "title": 3, "text": ["x"]}', "title", "string"),
    ('{"id": "a", "title": "t", "text": ["x", 5]}', "text", "item 1"),
    ('{"id": "", "title": "t", "text": ["x"]}', "id", "empty id"),
    ('[1, 2]', None, "JSON object"),
])
def test_malformed_record_names_file_line_and_field(tmp_path, line, field, words):
    f = tmp_path / "bad.jsonl"
    f.write_text(json.dumps({"id": "ok", "title": "t", "text": ["fine"]}) + "\n\n" + line + "\n")
    with pytest.raises(InputError) as err:
        list(read_corpus(f))
    msg = str(err.value)
    assert f"{f}:3" in msg and words in msg
    if field:
        assert f"field '{field}'" in msg
    assert err.value.line == 3


def test_kilt_record_errors(tmp_path):
    f = tmp_path / "ks.jsonl"
    f.write_text(json.dumps({"wikipedia_id": "1", "text": ["T", "p"]}) + "\n"
                 + json.dumps({"wikipedia_id": "2", "text": []}) + "\n")
    with pytest.raises(InputError, match=r"ks.jsonl:2, field 'text'"):
        list(read_corpus(f))


def test_skip_bad_counts_and_keeps_the_rest(tmp_path):
    f = tmp_path / "mixed.jsonl.gz"
    with gzip.open(f, "wt") as fh:
        fh.write(json.dumps({"id": "a", "title": "A", "text": ["one"]}) + "\n")
        fh.write("not json\n")
        fh.write(json.dumps({"id": "b", "text": "two"}) + "\n")
        fh.write(json.dumps({"id": "c", "title": "C"}) + "\n")
    stats = ReadStats()
    pages = list(read_corpus(f, skip_bad=True, stats=stats))
    assert [p.page_id for p in pages] == ["a", "b"]
    assert stats.skipped == 2 and len(stats.errors) == 2 and ":2" in stats.errors[0]


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        list(read_corpus(tmp_path / "nope.jsonl"))


# ---- bad bytes: an InputError naming file and line (skippable where it spoils one record), never a traceback ----
GOOD = json.dumps({"id": "ok", "title": "t", "text": ["fine"]}).encode() + b"\n"
TAIL = json.dumps({"id": "after", "title": "t", "text": ["also fine"]}).encode() + b"\n"


@pytest.mark.parametrize("line, field, words", [
    (b'{"id": "b", "title": "\xff\xfe", "text": "x"}', None, "not UTF-8 (byte 0xff"),
    (bytes(range(128, 256)), None, "not UTF-8 (byte 0x80"),
    (b'{"id": "b", "title": "t", "text": "bad \\ud800 here"}', "text", "lone surrogate \\ud800 at character 4"),
    (b'{"id": "b", "title": "\\udfff", "text": "x"}', "title", "lone surrogate \\udfff"),
    (b'{"id": "\\ud83d", "text": "x"}', "id", "lone surrogate"),
    (b'{"id": "b", "text": ["ok", "x\\udc00"]}', "text", "item 1: lone surrogate"),
    (b'{"id": "b", "text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", None, "nested too deeply"),
], ids=["non-utf8", "binary", "surrogate-text", "surrogate-title", "surrogate-id", "surrogate-item", "deep"])
def test_bad_bytes_name_the_line_and_can_be_skipped(tmp_path, line, field, words):
    f = tmp_path / "bad.jsonl"
    f.write_bytes(GOOD + line + b"\n" + TAIL)
    with pytest.raises(InputError) as err:
        list(read_corpus(f))
    msg = str(err.value)
    assert msg.startswith(f"{f}:2") and words in msg, msg
    if field:
        assert f"field '{field}'" in msg
    stats = ReadStats()
    assert [p.page_id for p in read_corpus(f, skip_bad=True, stats=stats)] == ["ok", "after"]
    assert stats.skipped == 1 and words in stats.errors[0]


def test_a_paragraph_over_the_limit_is_refused_by_name(tmp_path):
    from genret.indexing._corpus import MAX_FIELD_CHARS

    f = tmp_path / "big.jsonl"
    huge = "word " * (MAX_FIELD_CHARS // 5 + 1)
    f.write_bytes(GOOD + json.dumps({"id": "big", "title": "B", "text": "intro\n\n" + huge}).encode() + b"\n"
                  + json.dumps({"id": "big2", "text": ["t", "x", huge]}).encode() + b"\n" + TAIL)
    with pytest.raises(InputError, match=r"big.jsonl:2, field 'text': paragraph 2: 10,000,005 characters, more "
                                         r"than the 10,000,000"):
        list(read_corpus(f))
    stats = ReadStats()
    assert [p.page_id for p in read_corpus(f, skip_bad=True, stats=stats)] == ["ok", "after"]
    assert stats.skipped == 2 and "big.jsonl:3, field 'text': item 2: 10,000,005 characters" in stats.errors[1]


def test_truncated_gzip_is_one_error_even_with_skip_bad(tmp_path):
    f = tmp_path / "cut.jsonl.gz"
    data = gzip.compress(b"".join(json.dumps({"id": str(i), "text": "w " * 50}).encode() + b"\n"
                                  for i in range(2000)))
    f.write_bytes(data[: len(data) // 2])
    for skip in (False, True):
        with pytest.raises(InputError, match=r"cut.jsonl.gz: truncated or corrupt gzip data after line \d+"):
            list(read_corpus(f, skip_bad=skip))
    g = tmp_path / "plain.jsonl.gz"
    g.write_bytes(GOOD)
    with pytest.raises(InputError, match="plain.jsonl.gz: truncated or corrupt gzip data after line 0"):
        list(read_corpus(g))


def test_line_endings_and_bom_are_read_as_text(tmp_path):
    f = tmp_path / "crlf.jsonl"
    f.write_bytes(b"\xef\xbb\xbf" + GOOD.replace(b"\n", b"\r\n") + b"\r\n" + TAIL.replace(b"\n", b"\r"))
    pages = list(read_corpus(f))
    assert [(p.page_id, p.line) for p in pages] == [("ok", 1), ("after", 3)]
