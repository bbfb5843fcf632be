"""IR evaluation: BEIR folders and query files + qrels end to end, TREC runs that ir-measures scores exactly as genret
does, IR metrics next to KILT's, paired significance tests, and suites that mark significant differences."""

import json

import pytest

from genret.core import GenretError, InputError
from genret.eval import evaluate, ir_scores, paired_p, read_qrels, run_suite, write_trec_run
from genret.indexing import DenseConfig, IndexConfig, build_index
from genret.serving import main
from tests.conftest import QUESTIONS
from tests.ir_samples import CORPUS, QUERIES, write_beir, write_msmarco, write_pyserini

ir_measures = pytest.importorskip("ir_measures")


@pytest.fixture(scope="module")
def beir(tmp_path_factory):
    """The SciFact sample as a BEIR folder, its index (BM25 + dense) and the same judgments as TREC qrels."""
    root = tmp_path_factory.mktemp("beir")
    folder = write_beir(root / "scifact")
    build_index(folder, root / "idx", IndexConfig(components=("bm25", "dense"), dense=DenseConfig(device="cpu")),
                progress=False)
    _, _, trec_qrels = write_msmarco(root / "msmarco")
    return folder, root / "idx", trec_qrels


def _eval_cli(capsys, *args):
    capsys.readouterr()
    assert main(["eval", *map(str, args), "--json", "--quiet"]) == 0
    return json.loads(capsys.readouterr().out)


def _ir_measures_of(run_file, qrels_file, names):
    measures = [ir_measures.parse_measure(name) for name in names]
    got = ir_measures.calc_aggregate(measures, ir_measures.read_trec_qrels(str(qrels_file)),
                                     ir_measures.read_trec_run(str(run_file)))
    return {str(m): v for m, v in got.items()}


@pytest.mark.parametrize("retriever", ["bm25", "dense"])
def test_beir_end_to_end_and_its_trec_run_scored_by_ir_measures(beir, tmp_path, capsys, retriever):
    folder, index, trec_qrels = beir
    run = tmp_path / f"{retriever}.run"
    report = _eval_cli(capsys, index, folder, "--retriever", retriever, "-k", "10", "--ks", "1,5,10",
                       "--trec-run", run)
    assert report["records"] == len(QUERIES) and list(report["levels"]) == ["page"]  # judged per document
    ir = report["ir"]["page"]
    assert list(ir) == ["nDCG@10", "RR@10", "AP", "R@5", "R@10"]
    assert _ir_measures_of(run, trec_qrels, ir) == ir  # the written run, scored by ir-measures: the same numbers
    assert 0.5 < ir["nDCG@10"] <= 1
    kilt = report["levels"]["page"]
    assert kilt["recall@5"] == ir["R@5"] and kilt["recall@10"] == ir["R@10"]  # one evidence set per relevant doc
    assert not any(name.startswith(("answer_", "entity_")) for name in kilt)  # no answers in judgments
    lines = run.read_text().splitlines()
    qid, q0, doc, rank, score, tag = lines[0].split()
    assert (qid, q0, rank, tag) == (QUERIES[0][0], "Q0", "1", f"genret-{retriever}")
    assert doc in {d for d, _, _ in CORPUS} and float(score) > 0
    # 12 one-unit documents: dense ranks 10 for every query, BM25 only those sharing a term with it
    assert len(lines) == len(QUERIES) * 10 if retriever == "dense" else len(lines) <= len(QUERIES) * 10


def test_kilt_task_gets_ir_metrics_from_its_gold_provenance(tiny_index, data_dir, tmp_path):
    run = tmp_path / "tiny.run"
    report = evaluate(tiny_index, data_dir / "questions.jsonl", "dense", 10, ks=(1, 5), trec_run=run, progress=False)
    assert report["qrels"] == "gold provenance" and set(report["ir"]) == {"page", "passage"}
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("".join(f"{qid} 0 {page} 1\n" for qid, _, page, _, _ in QUESTIONS))
    assert _ir_measures_of(run, qrels, report["ir"]["page"]) == report["ir"]["page"]
    assert report["levels"]["page"]["Rprec"] == pytest.approx(
        _ir_measures_of(run, qrels, ["P@1"])["P@1"])  # one gold page per question: R-Prec is P@1
    # 10 hits, two units of each of 5 pages: the run holds each page once, at its best unit's rank and score
    pages = [line.split()[2] for line in run.read_text().splitlines() if line.startswith("q1 ")]
    assert len(pages) == len(set(pages)) == 5
    passage = evaluate(tiny_index, data_dir / "questions.jsonl", "bm25", 10, ks=(1, 5), levels=("passage",),
                       trec_run=run, progress=False)
    assert run.read_text().split()[2].count("+") == 1  # passage level: page id + paragraph id
    assert passage["ir"]["passage"]["RR@10"] > 0


def test_query_files_with_qrels_msmarco_and_pyserini(beir, tmp_path, capsys):
    folder, _, trec_qrels = beir
    collection, queries_tsv, _ = write_msmarco(tmp_path / "msmarco")
    assert main(["index", str(collection), "--out", str(tmp_path / "mm"), "--bm25", "--quiet"]) == 0
    run = tmp_path / "mm.run"
    report = _eval_cli(capsys, tmp_path / "mm", queries_tsv, "--qrels", trec_qrels, "--retriever", "bm25",
                       "-k", "5", "--ks", "5", "--trec-run", run)
    assert report["qrels"] == str(trec_qrels) and report["records"] == len(QUERIES)
    assert _ir_measures_of(run, trec_qrels, report["ir"]["page"]) == report["ir"]["page"]
    write_pyserini(tmp_path / "docs.jsonl")
    assert main(["index", str(tmp_path / "docs.jsonl"), "--out", str(tmp_path / "py"), "--bm25", "--quiet"]) == 0
    report = _eval_cli(capsys, tmp_path / "py", folder / "queries.jsonl", "--qrels", folder / "qrels" / "test.tsv",
                       "--retriever", "bm25", "-k", "5", "--ks", "5")
    assert report["records"] == len(QUERIES) and report["ir"]["page"]["R@5"] > 0.5


def test_task_errors(beir, tmp_path):
    folder, index, _ = beir
    with pytest.raises(InputError, match=r"no qrels/dev.tsv in this BEIR folder \(splits: test\)"):
        evaluate(index, folder, "bm25", split="dev", progress=False)
    with pytest.raises(GenretError, match="judgments are per document"):
        evaluate(index, folder, "bm25", levels=("passage",), progress=False)
    with pytest.raises(InputError, match="needs its judgments: pass --qrels"):
        evaluate(index, folder / "queries.jsonl", "bm25", progress=False)
    partial = tmp_path / "partial.jsonl"
    partial.write_text(json.dumps({"_id": QUERIES[0][0], "text": QUERIES[0][1]}) + "\n")
    with pytest.raises(InputError, match="7 judged query id"):
        evaluate(index, partial, "bm25", qrels=folder / "qrels" / "test.tsv", progress=False)


def test_read_qrels_trec_and_beir(tmp_path):
    trec = tmp_path / "q.txt"
    trec.write_text("1 0 d1 2\n1 0 d2 0\n\n2 Q0 d3 1\n1 0 d1 3\n")
    assert read_qrels(trec) == {"1": {"d1": 3, "d2": 0}, "2": {"d3": 1}}
    beir_qrels = tmp_path / "test.tsv"
    beir_qrels.write_text("query-id\tcorpus-id\tscore\nq1\tdoc 1\t1\n")  # tab-separated: columns split at tabs
    assert read_qrels(beir_qrels) == {"q1": {"doc 1": 1}}
    beir_qrels.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t2\n")
    assert read_qrels(beir_qrels) == {"q1": {"d1": 1, "d2": 2}}
    bad = tmp_path / "bad.txt"
    bad.write_text("1 0 d1 2\n1 0 d2 high\n")
    with pytest.raises(InputError, match=r"bad.txt:2: relevance 'high' is not a number"):
        read_qrels(bad)


def test_graded_qrels_ties_and_empty_queries_match_ir_measures(tmp_path):
    qrels = {"a": {"d1": 2, "d2": 1, "d9": 0}, "b": {"d3": 1}, "c": {"d4": 1}}
    run = {"a": {"d2": 1.5, "d1": 1.5, "d5": 0.25, "d9": 0.1}, "b": {"d3": 0.3}, "c": {}}
    means, per_query = ir_scores(qrels, run, (2, 5), per_query=True)
    f = write_trec_run(tmp_path / "r.run", run, "t")
    q = tmp_path / "q.txt"
    q.write_text("".join(f"{qid} 0 {d} {rel}\n" for qid, docs in qrels.items() for d, rel in docs.items()))
    assert _ir_measures_of(f, q, means) == means
    assert per_query["RR@10"] == {"a": 1.0, "b": 1.0, "c": 0.0}  # no hits: 0, counted in the mean
    assert means["RR@10"] == pytest.approx(2 / 3)
    with pytest.raises(GenretError, match="cannot hold ids with whitespace"):
        write_trec_run(tmp_path / "x.run", {"a": {"two words": 1.0}}, "t")


def test_paired_tests():
    from scipy.stats import ttest_rel

    a, b = [0.9, 0.8, 0.7, 0.95, 0.85, 0.6], [0.5, 0.6, 0.7, 0.4, 0.55, 0.5]
    assert paired_p(a, b) == pytest.approx(ttest_rel(a, b).pvalue)
    # exact sign-flip test: 5 of 6 differences positive, one zero -> the 2 all-same-sign patterns (x2 for the zero)
    assert paired_p(a, b, "permutation") == pytest.approx(4 / 64)
    assert paired_p(a, a) == 1.0 and paired_p(a, a, "permutation") == 1.0
    many = [1.0] * 20 + [0.0] * 5
    assert paired_p(many, [0.0] * 25, "permutation") < 0.001  # sampled: 10,000 rounds, seeded
    with pytest.raises(ValueError):
        paired_p(a, b, "wilcoxon")


def test_suite_on_beir_marks_significant_differences(beir, tmp_path):
    folder, index, _ = beir
    suite = tmp_path / "suite.toml"
    suite.write_text(f'''name = "beir-sample"
k = 10
ks = [1, 5, 10]
retrievers = ["bm25", "dense"]
baseline = "bm25"
significance = "permutation"

[[tasks]]
name = "scifact"
index = "{index}"
file = "{folder}"
''')
    result = run_suite(suite, tmp_path / "out", progress=False)
    head = "| task | retriever | level | R-Prec | R@5 | R@10 | AiC@1 | AiC@5 | AiC@10 | nDCG@10 | MRR@10 | MAP |"
    assert result["table"].startswith(head)
    assert "paired randomisation test" in result["table"] and "differs from bm25" in result["table"]
    bm25, dense = result["rows"]
    assert "p_values" not in bm25 and set(dense["p_values"]) == {"Rprec", "recall@5", "recall@10", "nDCG@10",
                                                                "RR@10", "AP"}
    assert all(0 < p <= 1 for p in dense["p_values"].values())
    assert (tmp_path / "out" / "runs" / "scifact.dense.trec").read_text().startswith(QUERIES[0][0] + " Q0 ")
    assert json.loads((tmp_path / "out" / "results.json").read_text())["rows"][1]["ir"] == dense["ir"]


def test_significance_marks_in_the_table():
    from genret.eval import SuiteConfig
    from genret.eval._suite import mark_significance, results_table

    suite = SuiteConfig(tasks=[{"name": "t", "index": "i", "file": "f"}], significance="t-test")
    rows = [{"task": "t", "retriever": name, "level": "page", "metrics": {"Rprec": m}, "ir": {"nDCG@10": m}}
            for name, m in (("bm25", 0.5), ("dense", 0.8), ("hybrid", 0.51))]
    qids = [f"q{i}" for i in range(30)]
    def values(base, shift, mod):
        return {"Rprec": dict.fromkeys(qids, 0.5), "nDCG@10": {q: base + (i + shift) % mod / 100
                                                             for i, q in enumerate(qids)}}

    # dense: 0.3 better on every query (significant); hybrid: bm25's values rotated (the same mean, not significant)
    per_query = [values(0.5, 0, 3), values(0.8, 0, 5), values(0.5, 1, 3)]
    note = mark_significance(rows, per_query, [1, 5], suite)
    table = results_table(rows, [1, 5], note)
    assert "| t | dense | page | 80.0 | – | – | – | 80.0† | – | – |" in table
    assert "| t | hybrid | page | 51.0 | – | – | – | 51.0 | – | – |" in table
    assert table.endswith("† differs from bm25 on the same task and level: paired t-test (scipy.stats.ttest_rel) "
                          "over the per-query values, two-sided, p < 0.05.")
    assert rows[1]["significant"] == ["nDCG@10"] and rows[1]["p_values"]["Rprec"] == 1.0
