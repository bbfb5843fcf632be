import gzip
import json

import pytest

from genret.indexing import InputError, ReadStats, read_corpus
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
