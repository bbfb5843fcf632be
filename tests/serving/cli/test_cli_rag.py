"""`genret rag` and `genret eval --rag` from the command line, with a tiny local model."""

from __future__ import annotations

import json

from genret.serving import main


def test_rag_question_json(tiny_index, tiny_chat_lm_dir, capsys):
    code = main(["rag", str(tiny_index), "Who created the Python programming language?", "--task", "qa",
                 "--retriever", "bm25", "--generator-model", str(tiny_chat_lm_dir), "--device", "cpu",
                 "--max-new-tokens", "4", "--passages", "2", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["task"] == "qa" and len(out["passages"]) == 2
    assert out["passages"][0]["provenance"]["wikipedia_id"] == "p-python"


def test_rag_batch_without_retrieval_and_eval(tiny_index, tiny_chat_lm_dir, data_dir, tmp_path, capsys):
    preds = tmp_path / "preds.jsonl"
    common = ["--generator-model", str(tiny_chat_lm_dir), "--device", "cpu", "--max-new-tokens", "3", "--quiet"]
    assert main(["rag", "none", "--input", str(data_dir / "questions.jsonl"), "--out", str(preds),
                 "--task", "qa", *common]) == 0
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    assert len(rows) == 5 and all(r["output"][0]["provenance"] == [] for r in rows)
    capsys.readouterr()
    assert main(["eval", str(tiny_index), str(data_dir / "questions.jsonl"), "--rag", "--retriever", "dense",
                 "--task", "qa", "--passages", "1", "--json", *common]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["records"] == 5 and set(report["downstream"]) >= {"em", "f1"} and "KILT-em" in report["kilt"]


def test_rag_needs_a_question_or_input(tiny_index, capsys):
    assert main(["rag", str(tiny_index)]) == 2
    assert "give either a question or --input" in capsys.readouterr().err


def test_eval_compare_table_and_labels_option(tiny_index, tiny_chat_lm_dir, data_dir, capsys):
    common = ["--generator-model", str(tiny_chat_lm_dir), "--device", "cpu", "--max-new-tokens", "3", "--quiet"]
    assert main(["eval", str(tiny_index), str(data_dir / "questions.jsonl"), "--rag", "--compare", "--retriever",
                 "bm25", "--task", "qa", "--passages", "1", *common]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1].startswith("| setting | em | f1 |")
    assert [row.split(" | ")[0] for row in table[3:]] == ["| closed book", "| retrieval"]  # no demos given
    assert main(["rag", "none", "Python was created by Guido van Rossum.", "--task", "fact_check", "--labels",
                 "TRUE, FALSE", "--label-calibration", "none", "--json", *common]) == 0
    assert json.loads(capsys.readouterr().out)["answer"] in ("TRUE", "FALSE")
