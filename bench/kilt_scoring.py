"""Benchmark of the KILT scorer on synthetic data: reading, aligning, retrieval and downstream metrics.

Generates (seeded) gold and guess files in a temporary directory: gold records with 1-3 outputs of
1-3 provenance items and a few-word answer, guesses with one output of ``--provenance`` ranked
passages (gold passages planted at random ranks, other passages often on the same pages) and a
few-word answer, then times each step and prints a Markdown table.

    python bench/kilt_scoring.py [--records 100000] [--provenance 100] [--rouge-package-sample 10000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genret.eval import downstream_scores  # noqa: E402
from genret.eval._downstream_metrics import gold_answers, rougel_score  # noqa: E402
from genret.eval._kilt_io import align, read_kilt, write_kilt  # noqa: E402
from genret.eval._retrieval_metrics import retrieval_scores  # noqa: E402
from genret.eval._score import score  # noqa: E402

KS = (1, 5, 10, 20, 100)
PAGE_KEYS = ("wikipedia_id",)
PASSAGE_KEYS = ("wikipedia_id", "start_paragraph_id")
N_PAGES = 200_000
N_PARAGRAPHS = 30

Row = tuple[str, int, float, float]  # operation, records, wall seconds, CPU seconds


def _words(rng: np.random.Generator, vocabulary: list[str], low: int, high: int) -> str:
    return " ".join(vocabulary[i] for i in rng.integers(0, len(vocabulary), int(rng.integers(low, high + 1))))


def generate(n: int, n_provenance: int, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``n`` gold and ``n`` guess records (the guesses in shuffled order)."""
    rng = np.random.default_rng(seed)
    vocabulary = [f"w{i}" for i in range(5000)]
    golds: list[dict[str, Any]] = []
    guesses: list[dict[str, Any]] = []
    pages = rng.integers(0, N_PAGES, size=(n, n_provenance)).tolist()
    paragraphs = rng.integers(1, N_PARAGRAPHS, size=(n, n_provenance)).tolist()
    same_page = (rng.random((n, n_provenance)) < 0.3).tolist()
    for i in range(n):
        outputs = []
        gold_items: list[tuple[int, int]] = []
        for _ in range(int(rng.integers(1, 4))):
            items = [(int(rng.integers(0, N_PAGES)), int(rng.integers(1, N_PARAGRAPHS)))
                     for _ in range(int(rng.integers(1, 4)))]
            gold_items += items
            outputs.append({"answer": _words(rng, vocabulary, 1, 4),
                            "provenance": [{"wikipedia_id": str(page), "title": f"Page {page}",
                                            "start_paragraph_id": par, "end_paragraph_id": par}
                                           for page, par in items]})
        golds.append({"id": f"q{i}", "input": _words(rng, vocabulary, 5, 12), "output": outputs})
        row_pages, row_paragraphs, row_same = pages[i], paragraphs[i], same_page[i]
        for rank in range(1, n_provenance):  # passage-level rankings repeat pages
            if row_same[rank]:
                row_pages[rank] = row_pages[rank - 1]
        for page, par in gold_items:
            if rng.random() < 0.7:
                slot = int(min(rng.geometric(0.15) - 1, n_provenance - 1))
                row_pages[slot], row_paragraphs[slot] = page, par
        answer = outputs[0]["answer"] if rng.random() < 0.5 else _words(rng, vocabulary, 1, 4)
        guesses.append({"id": f"q{i}", "output": [{
            "answer": answer,
            "provenance": [{"wikipedia_id": str(page), "start_paragraph_id": par, "end_paragraph_id": par}
                           for page, par in zip(row_pages, row_paragraphs, strict=True)]}]})
    order = rng.permutation(n).tolist()
    return golds, [guesses[j] for j in order]


def _timed(rows: list[Row], name: str, count: int, action: Callable[..., Any], *args: Any,
           **kwargs: Any) -> Any:
    start, cpu = time.perf_counter(), time.process_time()
    result = action(*args, **kwargs)
    rows.append((name, count, time.perf_counter() - start, time.process_time() - cpu))
    print(f"  {name}: {rows[-1][2]:.2f} s", file=sys.stderr, flush=True)
    return result


def _measure(directory: Path, n: int, n_provenance: int, rouge_sample: int, seed: int,
             rows: list[Row]) -> dict[str, Any]:
    gold_path, guess_path = directory / "gold.jsonl", directory / "guess.jsonl"
    generated = _timed(rows, "generate (not part of scoring)", n, generate, n, n_provenance, seed)
    _timed(rows, "write_kilt gold", n, write_kilt, gold_path, generated[0])
    _timed(rows, f"write_kilt guess ({n_provenance} provenance items each)", n, write_kilt, guess_path,
           generated[1])
    del generated
    out: dict[str, Any] = {"sizes": f"gold {gold_path.stat().st_size / 1e6:.0f} MB, "
                                    f"guess {guess_path.stat().st_size / 1e6:.0f} MB"}
    golds = _timed(rows, "read_kilt gold", n, read_kilt, gold_path)
    guesses = _timed(rows, "read_kilt guess", n, read_kilt, guess_path)
    pairs = _timed(rows, "align", n, align, guesses, golds)
    out["page"] = _timed(rows, "retrieval_scores page (wikipedia_id), ks 1,5,10,20,100", n,
                         retrieval_scores, pairs, ks=KS, rank_keys=PAGE_KEYS, include_recall_at_1=True)
    out["passage"] = _timed(rows, "retrieval_scores passage (wikipedia_id,start_paragraph_id), same ks", n,
                            retrieval_scores, pairs, ks=KS, rank_keys=PASSAGE_KEYS, include_recall_at_1=True)
    out["downstream"] = _timed(rows, "downstream_scores (acc, EM, F1, fast exact ROUGE-L, KILT-gated, "
                               "Rprec, R@5)", n, downstream_scores, pairs)
    answer_pairs = [(str(guess["output"][0]["answer"]).strip(), sorted(gold_answers(gold)))
                    for guess, gold in pairs]
    _timed(rows, "ROUGE-L alone (max over gold answers), fast exact implementation", n, _rouge_all,
           answer_pairs, "fast")
    sample = min(rouge_sample, n)
    if sample:
        _timed(rows, "ROUGE-L alone, rouge package", sample, _rouge_all, answer_pairs[:sample], "package")
        package = _timed(rows, "downstream_scores, ROUGE-L by the rouge package", sample,
                         downstream_scores, pairs[:sample], rouge_impl="package")
        fast = downstream_scores(pairs[:sample])
        assert package == fast, (package, fast)
    del pairs, golds, guesses
    _long_answers(rows, 300, seed)
    out["score"] = _timed(rows, "score(guess path, gold path): read + align + retrieval page + downstream", n,
                          score, guess_path, gold_path, ks=KS)
    return out


def _rouge_all(answer_pairs: list[tuple[str, list[str]]], impl: str) -> float:
    return sum(max(rougel_score(prediction, gold, rouge_impl=impl) for gold in golds)  # type: ignore[arg-type]
               for prediction, golds in answer_pairs)


def _long_answers(rows: list[Row], count: int, seed: int) -> None:
    """ELI5-like answers (80-150 words, several sentences): where the package's dict DP hurts most."""
    rng = np.random.default_rng(seed)
    vocabulary = [f"w{i}" for i in range(300)] + ["."] * 12
    pairs = [(_words(rng, vocabulary, 80, 150), [_words(rng, vocabulary, 80, 150)]) for _ in range(count)]
    fast = _timed(rows, "ROUGE-L alone, 80-150-word answers, fast", count, _rouge_all, pairs, "fast")
    package = _timed(rows, "ROUGE-L alone, 80-150-word answers, rouge package", count, _rouge_all, pairs,
                     "package")
    assert fast == package, (fast, package)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print the Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--provenance", type=int, default=100, help="ranked provenance items per guess")
    parser.add_argument("--rouge-package-sample", type=int, default=10_000,
                        help="records scored with the rouge package's own ROUGE-L (0: skip)")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="kilt-bench-") as directory:
        out = _measure(Path(directory), args.records, args.provenance, args.rouge_package_sample, args.seed,
                       rows)
    print(f"\n{args.records} records, {args.provenance} provenance items per guess ({out['sizes']}); "
          f"Python {sys.version.split()[0]}\n")
    print("| operation | records | seconds | CPU seconds | records/s |")
    print("|---|---:|---:|---:|---:|")
    for name, count, seconds, cpu in rows:
        print(f"| {name} | {count} | {seconds:.2f} | {cpu:.2f} | {count / seconds:,.0f} |")
    for level in ("page", "passage"):
        shown = {k: round(v, 4) for k, v in out[level].items() if not k.startswith(("answer", "entity"))}
        print(f"\n{level}:", shown)
    print("\ndownstream:", out["downstream"])
    print("score:", {key: out["score"][key] for key in ("downstream", "kilt", "count")})


if __name__ == "__main__":
    main()
