"""Wrong evaluation set-ups fail loudly (issue 29, point 3): a task whose gold documents are not in the index at all is
refused in one line (exit 2), one with only some of them warns; ``--split`` is honoured by a BEIR folder and
refused for a KILT file; the printed cut-offs follow ``-k``."""

from __future__ import annotations

import json
import logging

import pytest

from genret.core import GenretError
from genret.eval import evaluate
from genret.indexing import IndexConfig, build_index
from genret.serving import main
from tests.ir_samples import DOCS, write_beir


@pytest.fixture(scope="module")
def scifact(tmp_path_factory):
    return write_beir(tmp_path_factory.mktemp("beir") / "scifact")


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("genret: error:"), err
    return err[0]


def test_a_task_with_none_of_its_gold_in_the_index_is_refused(tiny_index, scifact, capsys):
    assert main(["eval", str(tiny_index), str(scifact), "--retriever", "bm25", "--quiet"]) == 2
    line = _error_line(capsys)
    assert "none of the 8 gold documents" in line and "is in the index" in line, line
    with pytest.raises(GenretError, match="none of the 8 gold documents"):
        evaluate(tiny_index, scifact, "bm25", progress=False)


def test_a_task_with_some_of_its_gold_missing_warns(scifact, tmp_path, capsys, caplog):
    corpus = tmp_path / "half.jsonl"
    corpus.write_text("".join(json.dumps({"id": d, "title": t, "text": x}) + "\n" for d, t, x in DOCS[:4]))
    build_index(corpus, tmp_path / "half", IndexConfig(components=("bm25",)), progress=False)
    with caplog.at_level(logging.WARNING, logger="genret"):
        report = evaluate(tmp_path / "half", scifact, "bm25", 10, progress=False)
    assert report["records"] == 8
    assert "4 of the 8 gold documents" in caplog.text and "not in the index" in caplog.text


def test_split_is_refused_for_a_kilt_file(tiny_index, data_dir, capsys):
    assert main(["eval", str(tiny_index), str(data_dir / "questions.jsonl"), "--retriever", "bm25", "--split", "dev",
                 "--quiet"]) == 2
    assert "BEIR folder" in _error_line(capsys)
    with pytest.raises(GenretError, match="BEIR folder"):
        evaluate(tiny_index, data_dir / "questions.jsonl", "bm25", split="dev", progress=False)


def test_split_is_honoured_for_a_beir_folder(scifact, tmp_path, capsys):
    corpus = tmp_path / "all.jsonl"
    corpus.write_text("".join(json.dumps({"id": d, "title": t, "text": x}) + "\n" for d, t, x in DOCS))
    build_index(corpus, tmp_path / "ix", IndexConfig(components=("bm25",)), progress=False)
    (scifact / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\n34\t11705328\t1\n")
    try:
        assert main(["eval", str(tmp_path / "ix"), str(scifact), "--retriever", "bm25", "--split", "dev", "--json",
                     "--quiet"]) == 0
    finally:
        (scifact / "qrels" / "dev.tsv").unlink()
    report = json.loads(capsys.readouterr().out)
    assert report["records"] == 1 and report["qrels"].endswith("dev.tsv")


def test_printed_cut_offs_follow_k(tiny_index, data_dir, capsys):
    assert main(["eval", str(tiny_index), str(data_dir / "questions.jsonl"), "--retriever", "bm25", "-k", "20",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "R@20=" in out and "R@100" not in out, out
    assert main(["eval", str(tiny_index), str(data_dir / "questions.jsonl"), "--retriever", "bm25", "-k", "3",
                 "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {int(name.rsplit("@", 1)[1]) for name in report["levels"]["page"] if "@" in name} == {1, 3}
    assert "recall@3" in report["levels"]["page"] and "R@3" in report["ir"]["page"]
    assert main(["eval", str(tiny_index), str(data_dir / "questions.jsonl"), "--retriever", "bm25", "-k", "5",
                 "--ks", "1,10", "--quiet"]) == 2
    assert "--ks" in _error_line(capsys)
