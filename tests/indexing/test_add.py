"""Adding pages to an existing index gives the index a build from all pages would give."""

import json

import pytest

from genret.core import GenretError, InputError
from genret.indexing import DenseConfig, Index, IndexConfig, add_to_index, build_index
from genret.indexing._manifest import MANIFEST_FILE
from genret.retrieval import RetrievalConfig, load_retriever
from tests.conftest import PAGES

QUERIES = ["Who created Python?", "first ascent of Everest", "New Orleans music", "oil embargo"]


@pytest.fixture(scope="module")
def split_corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("split")
    for name, pages in (("first.jsonl", PAGES[:3]), ("rest.jsonl", PAGES[3:]), ("all.jsonl", PAGES)):
        (d / name).write_text("".join(json.dumps(p) + "\n" for p in pages))
    return d


def test_added_pages_equal_a_full_build(split_corpus, tmp_path):
    # float32: equal vectors whatever the batches (bf16 results depend on a batch's padding)
    cfg = IndexConfig(dense=DenseConfig(device="cpu", dtype="float32"))
    build_index(split_corpus / "first.jsonl", tmp_path / "grown", cfg, progress=False)
    m = add_to_index(tmp_path / "grown", split_corpus / "rest.jsonl", device="cpu", dtype="float32", progress=False)
    build_index(split_corpus / "all.jsonl", tmp_path / "full", cfg, progress=False)
    assert m.corpus.pages == 5 and m.units.count == 10 and len(m.corpus.sources) == 2
    rcfg = RetrievalConfig(dense={"device": "cpu", "dtype": "float32"})
    with Index(tmp_path / "grown", verify="full") as grown, Index(tmp_path / "full") as full:
        assert len(grown.store) == len(full.store) == 10
        for name in ("dense", "bm25"):
            a = load_retriever(grown, name, rcfg).batch_search(QUERIES, k=4)
            b = load_retriever(full, name, rcfg).batch_search(QUERIES, k=4)
            for ha, hb in zip(a, b):
                assert [h.unit_id for h in ha] == [h.unit_id for h in hb]
                assert [h.score for h in ha] == pytest.approx([h.score for h in hb], abs=1e-4)
        from genret.indexing.fm import load_fm
        fa, fb = (load_fm(ix.path, ix.component("fm")) for ix in (grown, full))
        assert fa.n_tokens == fb.n_tokens and fa.n_docs == fb.n_docs == 10
        assert fa.next_tokens([])[0].tolist() == fb.next_tokens([])[0].tolist()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "grown"]


def test_add_from_the_command_line(split_corpus, tmp_path, capsys):
    from genret.serving import main

    build_index(split_corpus / "first.jsonl", tmp_path / "ix", IndexConfig(components=("bm25",)), progress=False)
    assert main(["add", str(tmp_path / "ix"), str(split_corpus / "rest.jsonl"), "--quiet"]) == 0
    assert "now 5 pages, 10 paragraph units; components updated: bm25" in capsys.readouterr().out
    assert main(["add", str(tmp_path / "ix"), str(split_corpus / "rest.jsonl"), "--quiet"]) == 2
    assert "duplicate page id" in capsys.readouterr().err


def test_failed_add_leaves_the_index_as_it_was(split_corpus, tmp_path):
    build_index(split_corpus / "first.jsonl", tmp_path / "ix", IndexConfig(components=("bm25",)), progress=False)
    before = (tmp_path / "ix" / MANIFEST_FILE).read_text()
    with pytest.raises(InputError, match="duplicate page id 'p-oil'"):
        add_to_index(tmp_path / "ix", split_corpus / "all.jsonl", progress=False)
    with pytest.raises(InputError, match="no such file"):
        add_to_index(tmp_path / "ix", tmp_path / "missing.jsonl", progress=False)
    assert (tmp_path / "ix" / MANIFEST_FILE).read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix"]
    with pytest.raises(GenretError, match="no index"):
        add_to_index(tmp_path / "nope", split_corpus / "rest.jsonl", progress=False)


def test_add_takes_the_other_corpus_formats(split_corpus, tmp_path, capsys):
    """`genret add --format pyserini --field-map …`: the formats `genret index` reads."""
    from genret.serving import main

    build_index(split_corpus / "first.jsonl", tmp_path / "ix", IndexConfig(components=()), progress=False)
    (tmp_path / "more.jsonl").write_text(json.dumps({"docid": "d-1", "contents": "Bebop is a style of jazz."}) + "\n")
    assert main(["add", str(tmp_path / "ix"), str(tmp_path / "more.jsonl"), "--format", "pyserini",
                 "--field-map", "id=docid", "--quiet"]) == 0
    assert "now 4 pages" in capsys.readouterr().out
    with Index(tmp_path / "ix") as index:
        assert index.store.get([len(index.store) - 1])[0].page_id == "d-1"
