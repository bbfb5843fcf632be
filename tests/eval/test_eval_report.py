"""``evaluate()`` returns a typed report (issue 29, point 7): per-level metrics as attributes, ``to_dict()`` (what
``genret eval --json`` prints), a readable ``repr``, and the dict access earlier callers use."""

from __future__ import annotations

import json

import pytest

from genret.eval import EvalReport, LevelMetrics, evaluate


@pytest.fixture(scope="module")
def report(tiny_index, data_dir) -> EvalReport:
    return evaluate(tiny_index, data_dir / "questions.jsonl", "bm25", 10, ks=(1, 5), progress=False)


def test_levels_are_attributes(report):
    assert isinstance(report, EvalReport) and isinstance(report.page, LevelMetrics)
    assert report.task.endswith("questions.jsonl")
    assert (report.records, report.retriever, report.k) == (5, "bm25", 10)
    assert report.page.rprec == report.levels["page"]["Rprec"] and 0 < report.page.rprec <= 1
    assert report.page.recall == {5: report.page["recall@5"]}  # KILT reports recall@k for k > 1
    assert report.page.precision == {1: report.page["precision@1"], 5: report.page["precision@5"]}
    assert report.passage.ir["nDCG@10"] == report.ir["passage"]["nDCG@10"]
    assert set(report.page) == set(report.levels["page"])  # a mapping of KILT's metrics


def test_a_missing_level_is_none(tiny_index, data_dir):
    passage_only = evaluate(tiny_index, data_dir / "questions.jsonl", "bm25", 5, ks=(1,), levels=("passage",),
                            progress=False)
    assert passage_only.page is None and passage_only.passage.rprec >= 0


def test_to_dict_and_dict_access(report):
    d = report.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert set(d) >= {"task", "records", "retriever", "k", "seconds", "levels", "ir", "qrels"}
    assert report["levels"] == d["levels"] and report["records"] == 5 and report.get("per_query") is None
    assert dict(report) == d and "levels" in report


def test_repr_is_readable(report):
    text = repr(report)
    assert text.startswith("EvalReport(") and "bm25" in text and "5 records" in text
    assert "page: R-Prec=" in text and "passage: R-Prec=" in text and "R@5=" in text and "nDCG@10=" in text
    assert len(text.splitlines()) <= 3, text
