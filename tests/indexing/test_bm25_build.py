"""The BM25 component's build: a unit Lucene's JSON reader would refuse is named before Anserini runs."""

import json

import pytest

from genret.core import GenretError
from genret.indexing import IndexConfig, UnitConfig, build_index


def test_a_unit_too_long_for_lucene_is_named_and_nothing_is_left(tmp_path, monkeypatch):
    import genret.indexing._bm25 as bm25

    monkeypatch.setattr(bm25, "MAX_CONTENTS_UTF16", 60)
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"id": "short", "title": "S", "text": ["a few words"]}) + "\n"
                      + json.dumps({"id": "long", "title": "L", "text": ["one two three", "x" * 40, "𝔘" * 20]})
                      + "\n")
    out = tmp_path / "ix"
    config = IndexConfig(components=("bm25",), units=UnitConfig(kind="window", window_words=10))
    with pytest.raises(GenretError, match=r"unit 1 \(page 'long', paragraphs 1-3\) has 97 UTF-16 characters; "
                                          r"Lucene's JSON reader takes at most 60"):
        build_index(corpus, out, config, progress=False)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["c.jsonl"]
