"""The IR ecosystem's corpus shapes: Pyserini JSONL, BEIR folders, MS MARCO-style TSV, and field maps for the rest."""

import gzip
import json
import shutil

import pytest

from genret.core import ConfigError, InputError
from genret.indexing import Index, IndexConfig, ReadStats, build_index, read_corpus
from tests.ir_samples import CORPUS, write_beir, write_msmarco, write_pyserini


def _triples(pages):
    return [(p.page_id, p.title, p.paragraphs) for p in pages]


def test_beir_folder_and_its_corpus_file_are_detected(tmp_path):
    folder = write_beir(tmp_path / "scifact")
    expected = [(doc_id, title, (text,)) for doc_id, title, text in CORPUS]
    assert _triples(read_corpus(folder)) == expected
    assert _triples(read_corpus(folder / "corpus.jsonl")) == expected
    assert _triples(read_corpus(folder, fmt="beir")) == expected
    with open(folder / "corpus.jsonl", "rb") as src, gzip.open(tmp_path / "corpus.jsonl.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    gz_folder = tmp_path / "gz"
    gz_folder.mkdir()
    (tmp_path / "corpus.jsonl.gz").rename(gz_folder / "corpus.jsonl.gz")
    assert _triples(read_corpus(gz_folder)) == expected


def test_pyserini_jsonl_is_detected(tmp_path):
    pages = list(read_corpus(write_pyserini(tmp_path / "docs.jsonl")))
    assert _triples(pages) == [(doc_id, "", (f"{title}\n{text}",)) for doc_id, title, text in CORPUS]
    assert _triples(read_corpus(tmp_path / "docs.jsonl", fmt="pyserini")) == _triples(pages)


def test_msmarco_tsv_is_detected_by_name(tmp_path):
    collection, _, _ = write_msmarco(tmp_path)
    assert _triples(read_corpus(collection)) == [(d, "", (f"{t} {x}",)) for d, t, x in CORPUS]
    plain = tmp_path / "collection.txt"
    shutil.copy(collection, plain)
    with pytest.raises(InputError, match="invalid JSON"):  # not .tsv: JSON unless told
        list(read_corpus(plain))
    assert _triples(read_corpus(plain, fmt="tsv")) == _triples(read_corpus(collection))


def test_tsv_layouts_header_and_column_counts(tmp_path):
    dpr = tmp_path / "psgs.tsv"  # DPR's passages: a header line, text before title
    dpr.write_text("id\ttext\ttitle\n1\tAaron is a prophet.\tAaron\n2\tAbel was a shepherd.\tAbel\n")
    assert _triples(read_corpus(dpr)) == [("1", "Aaron", ("Aaron is a prophet.",)),
                                          ("2", "Abel", ("Abel was a shepherd.",))]
    docs = tmp_path / "msmarco-docs.tsv"  # MS MARCO documents: docid, url, title, body
    docs.write_text("D59219\thttp://example.org/a\tPhotosynthesis\tPlants convert light.\n")
    assert _triples(read_corpus(docs)) == [("D59219", "Photosynthesis", ("Plants convert light.",))]
    titled = tmp_path / "titled.tsv"
    titled.write_text("7\tEverest\tThe highest mountain.\n")
    assert _triples(read_corpus(titled)) == [("7", "Everest", ("The highest mountain.",))]
    wide = tmp_path / "wide.tsv"
    wide.write_text("a\tb\tc\td\te\n")
    with pytest.raises(ConfigError, match="5 tab-separated columns.*--field-map"):
        list(read_corpus(wide))
    assert _triples(read_corpus(wide, field_map="id=4,title=0,text=2")) == [("e", "a", ("c",))]
    assert _triples(read_corpus(dpr, field_map="id=id,text=title,title=")) == [("1", "", ("Aaron",)),
                                                                              ("2", "", ("Abel",))]


def test_tsv_short_lines_are_bad_records(tmp_path):
    f = tmp_path / "c.tsv"
    f.write_text("1\tone\n2\n3\tthree\n")
    with pytest.raises(InputError, match=r"c.tsv:2: expected at least 2 tab-separated columns, got 1"):
        list(read_corpus(f))
    stats = ReadStats()
    assert [p.page_id for p in read_corpus(f, skip_bad=True, stats=stats)] == ["1", "3"]
    assert stats.skipped == 1


def test_field_map_for_other_json_shapes(tmp_path):
    f = tmp_path / "news.jsonl"
    f.write_text(json.dumps({"docid": 17, "headline": "Oil", "body": "Prices rose.\n\nThen fell."}) + "\n")
    with pytest.raises(InputError, match="field 'id': missing"):
        list(read_corpus(f))
    pages = list(read_corpus(f, field_map="id=docid,title=headline,text=body"))
    assert _triples(pages) == [("17", "Oil", ("Prices rose.", "Then fell."))]  # jsonl: blank lines split
    pages = list(read_corpus(f, fmt="beir", field_map={"id": "docid", "text": "body"}))
    assert _triples(pages) == [("17", "", ("Prices rose.\n\nThen fell.",))]  # beir: one paragraph
    beir = write_beir(tmp_path / "b")
    assert [p.paragraphs for p in read_corpus(beir, field_map="text=title")][0] == (CORPUS[0][1],)


@pytest.mark.parametrize("spec, message", [
    ("id", "not FIELD=KEY"), ("url=u", "unknown field 'url'"), ("id=a,id=b", "'id' mapped twice"),
    ("text=", "'text' needs a key"),
])
def test_bad_field_maps(tmp_path, spec, message):
    f = tmp_path / "c.jsonl"
    f.write_text('{"id": "1", "text": "x"}\n')
    with pytest.raises(ConfigError, match=message):
        list(read_corpus(f, field_map=spec))


def test_field_map_does_not_apply_to_kilt(data_dir):
    with pytest.raises(ConfigError, match="does not apply to a KILT knowledge source"):
        list(read_corpus(data_dir / "kilt_ks.jsonl.gz", field_map="id=wikipedia_id"))


def test_unknown_format_and_bad_folder(tmp_path):
    with pytest.raises(ConfigError, match="unknown corpus format 'trec'"):
        list(read_corpus(tmp_path, fmt="trec"))
    with pytest.raises(InputError, match="BEIR dataset holding corpus.jsonl"):
        list(read_corpus(tmp_path))


def test_build_index_from_a_beir_folder(tmp_path):
    folder = write_beir(tmp_path / "scifact")
    manifest = build_index(folder, tmp_path / "idx", IndexConfig(components=()), progress=False)
    assert (manifest.corpus.pages, manifest.units.count) == (len(CORPUS), len(CORPUS))
    with Index(tmp_path / "idx") as index:
        assert [u.text for u in index.store.get([0, 1])] == [CORPUS[0][2], CORPUS[1][2]]
