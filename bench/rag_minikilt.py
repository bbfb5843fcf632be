"""mini-KILT dev: RAG answers with no retrieval, retrieval only, and retrieval + demonstrations (random, BM25, UDR).

Needs the task indexes of `make minikilt` (runs/indexes/TASK) and demonstration pools built from the train splits
(`genret index-demos`, and `genret train demos` for trained UDR); `make minikilt-rag` does all of it.  Prints a
Markdown table (EM / F1 for squad, accuracy for the fact-checking tasks, and KILT-gated versions) and writes JSON.

    python bench/rag_minikilt.py --records 100 --demos runs/demos --udr runs/demos-udr --out runs/rag
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

TASKS = ("squad", "scifact", "climate_fever")


ROWS = {  # key: (label, with retrieval, demo source kind, demos dir attribute)
    "none": ("no retrieval", False, None, None),
    "retrieval": ("retrieval only", True, None, None),
    "random": ("retrieval + random demos", True, "random", "demos"),
    "bm25": ("retrieval + BM25 demos", True, "bm25", "demos"),
    "udr0": ("retrieval + UDR demos (untrained encoder)", True, "udr", "demos"),
    "udr": ("retrieval + UDR demos (trained)", True, "udr", "udr"),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minikilt", default="../shared/minikilt")
    p.add_argument("--indexes", default="runs/indexes")
    p.add_argument("--demos", default="runs/demos", help="demos dir with untrained pools (MiniLM)")
    p.add_argument("--udr", default=None, help="demos dir written by `genret train demos`")
    p.add_argument("--records", type=int, default=100, help="dev records per task")
    p.add_argument("--passages", type=int, default=3)
    p.add_argument("--n-demos", type=int, default=3)
    p.add_argument("--retriever", default="hybrid")
    p.add_argument("--label-calibration", choices=("content-free", "batch", "none"), default="none",
                   help="label tasks: contextual calibration (retrieval.rag._labels) or plain log-likelihood")
    p.add_argument("--label-head", default="packaged", help="label tasks: packaged, none or a head file "
                   "(`genret train labels`)")
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--out", default="runs/rag")
    p.add_argument("--rows", default=",".join(ROWS), help=f"settings to run, of {list(ROWS)} (results are merged "
                   "into OUT/results.json, so rows can be run separately)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    from genret.eval import evaluate_rag
    from genret.indexing import Index
    from genret.retrieval import GeneratorConfig, RagConfig, RagPipeline, load_generator, load_retriever
    from genret.retrieval.demos import load_demo_source

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    generator = load_generator(GeneratorConfig(max_new_tokens=16))
    saved = out / "results.json"
    results: dict[str, dict[str, dict]] = json.loads(saved.read_text()) if saved.is_file() else {}
    for task in args.tasks.split(","):
        gold = Path(args.minikilt) / task / "dev.jsonl"
        with Index(Path(args.indexes) / task) as index:
            retriever = load_retriever(index, args.retriever)
            for key in args.rows.split(","):
                label, with_retrieval, kind, demos_attr = ROWS[key]
                if demos_attr and not getattr(args, demos_attr):
                    continue
                source = load_demo_source(getattr(args, demos_attr), kind, device="cpu") if kind else None
                passages = args.passages if with_retrieval else 0
                cfg = RagConfig(passages=passages, demos=args.n_demos if kind else 0, demo_source=kind or "udr",
                                label_calibration=args.label_calibration, label_head=args.label_head)
                pipe = RagPipeline(generator, retriever if passages else None, source, cfg)
                t0 = time.perf_counter()
                slug = label.replace(" ", "_").replace("+", "").replace("(", "").replace(")", "")
                report = evaluate_rag(pipe, gold, task_name=task, max_records=args.records, progress=False,
                                      out=out / f"{task}.{slug}.jsonl")
                report["minutes"] = round((time.perf_counter() - t0) / 60, 2)
                results.setdefault(label, {})[task] = report
                print(f"{task:<14} {label:<36} {json.dumps(report['downstream'])}  {report['minutes']} min",
                      flush=True)
                if source is not None:
                    source.close()
            retriever_name = retriever.name
    saved.write_text(json.dumps(results, indent=1))
    print(f"\nmini-KILT dev, first {args.records} records per task; generator {generator.config.model} (greedy); "
          f"retriever {retriever_name}, {args.passages} passages; {args.n_demos} demonstrations; label calibration "
          f"{args.label_calibration}, label head {args.label_head}\n")
    order = [ROWS[k][0] for k in ROWS]
    results = {label: results[label] for label in order if label in results}
    head = "| setting | squad EM | squad F1 | scifact acc | climate_fever acc | KILT-EM squad | KILT-acc scifact |"
    print(head)
    print("|" + "|".join("---" for _ in range(7)) + "|")
    def cell(per_task: dict, task: str, metric: str, group: str = "downstream") -> str:
        return f"{per_task[task][group][metric] * 100:.1f}" if task in per_task else "–"

    for label, r in results.items():
        print(f"| {label} | {cell(r, 'squad', 'em')} | {cell(r, 'squad', 'f1')} | {cell(r, 'scifact', 'accuracy')} | "
              f"{cell(r, 'climate_fever', 'accuracy')} | {cell(r, 'squad', 'KILT-em', 'kilt')} | "
              f"{cell(r, 'scifact', 'KILT-accuracy', 'kilt')} |")


if __name__ == "__main__":
    main()
