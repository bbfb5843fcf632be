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
    err = capsys.readouterr().err
    assert "2 of the 2 pages read are already in the index" in err and "'p-everest'" in err, err
    assert "--skip-existing" in err and "--replace" in err and "skip_existing=True" not in err


def test_failed_add_leaves_the_index_as_it_was(split_corpus, tmp_path):
    build_index(split_corpus / "first.jsonl", tmp_path / "ix", IndexConfig(components=("bm25",)), progress=False)
    before = (tmp_path / "ix" / MANIFEST_FILE).read_text()
    with pytest.raises(InputError, match="3 of the 5 pages read are already in the index, e.g. 'p-oil'.*"
                       "skip_existing=True.*replace=True"):
        add_to_index(tmp_path / "ix", split_corpus / "all.jsonl", progress=False)
    (tmp_path / "twice.jsonl").write_text((split_corpus / "rest.jsonl").read_text() * 2)
    with pytest.raises(InputError, match="duplicate page id 'p-everest'"):  # twice in what is added: as before
        add_to_index(tmp_path / "ix", tmp_path / "twice.jsonl", progress=False)
    with pytest.raises(InputError, match="no such file"):
        add_to_index(tmp_path / "ix", tmp_path / "missing.jsonl", progress=False)
    assert (tmp_path / "ix" / MANIFEST_FILE).read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix", "twice.jsonl"]
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


def test_skip_existing_adds_only_the_new_pages(split_corpus, tmp_path, capsys):
    from genret.serving import main

    build_index(split_corpus / "first.jsonl", tmp_path / "ix", IndexConfig(components=("bm25",)), progress=False)
    m = add_to_index(tmp_path / "ix", split_corpus / "all.jsonl", skip_existing=True, progress=False)
    assert m.corpus.pages == 5 and m.units.count == 10
    with Index(tmp_path / "ix") as index:
        assert [u.page_id for u in index.store.get(list(range(10)))] == [p["id"] for p in PAGES for _ in (1, 2)]
        assert load_retriever(index, "bm25").search("Louis Armstrong", 1)[0].provenance.wikipedia_id == "p-jazz"
    # nothing new: the index is left as it is, and that is no error
    assert main(["add", str(tmp_path / "ix"), str(split_corpus / "all.jsonl"), "--skip-existing", "--quiet"]) == 0
    assert "nothing to add: every page read is already in the index (5 pages)" in capsys.readouterr().out
    with pytest.raises(GenretError, match="not both"):
        add_to_index(tmp_path / "ix", split_corpus / "all.jsonl", skip_existing=True, replace=True, progress=False)


def test_replace_gives_what_a_full_build_of_the_new_pages_gives(split_corpus, tmp_path, capsys):
    from genret.serving import main

    cfg = IndexConfig(components=("bm25", "dense"), dense=DenseConfig(device="cpu", dtype="float32"))
    build_index(split_corpus / "all.jsonl", tmp_path / "ix", cfg, progress=False)
    changed = [dict(PAGES[1], text=["Photosynthesis happens in chloroplasts of algae."]),
               {"id": "p-new", "title": "Bebop", "text": ["Bebop is a style of jazz with fast tempos."]}]
    (tmp_path / "changed.jsonl").write_text("".join(json.dumps(p) + "\n" for p in changed))
    assert main(["add", str(tmp_path / "ix"), str(tmp_path / "changed.jsonl"), "--replace", "--quiet",
                 "--device", "cpu", "--dtype", "float32"]) == 0
    assert "now 6 pages, 10 paragraph units" in capsys.readouterr().out
    final = [p for p in PAGES if p["id"] != "p-photo"] + changed
    (tmp_path / "final.jsonl").write_text("".join(json.dumps(p) + "\n" for p in final))
    build_index(tmp_path / "final.jsonl", tmp_path / "full", cfg, progress=False)
    rcfg = RetrievalConfig(dense={"device": "cpu", "dtype": "float32"})
    queries = ["chloroplasts of algae", "Which pigment absorbs red light?", "fast jazz tempos", *QUERIES]
    with Index(tmp_path / "ix", verify="full") as grown, Index(tmp_path / "full") as full:
        assert grown.manifest.corpus.pages == 6 and grown.manifest.corpus.paragraphs == 10
        assert [u.page_id for u in grown.store.get(list(range(10)))] == \
            [u.page_id for u in full.store.get(list(range(10)))]
        for name in ("dense", "bm25"):
            a = load_retriever(grown, name, rcfg).batch_search(queries, k=4)
            b = load_retriever(full, name, rcfg).batch_search(queries, k=4)
            for ha, hb in zip(a, b):
                assert [(h.provenance.wikipedia_id, h.text) for h in ha] == \
                    [(h.provenance.wikipedia_id, h.text) for h in hb]
                assert [h.score for h in ha] == pytest.approx([h.score for h in hb], abs=1e-4)
