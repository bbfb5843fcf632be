"""``genret adapt`` on mini-KILT, end to end: each task's index copied fresh, adapted on its train split, and the dev
split scored before and after — the table of docs/src/results.md, "Adapted in one step".

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2 .venv/bin/python bench/adapt.py --out runs/adapt4 \\
        [--tasks climate_fever,scifact,squad] [--squad-records 500] [--budget-minutes 20] \\
        [--adapt-args "--max-held-out 1000"]

Threads: a task run alone gets the machine's cores (``OMP_NUM_THREADS=2`` on the 2-core machine), as a user's
``genret adapt`` does; two runs side by side get one each (``OMP_NUM_THREADS=1``), and then every stage is slower
(mini-KILT squad: a dense training step 16.4 s on one thread, 10.5 s on two), so the budget buys less.  The report
records the threads (``threads``) and the table prints them.

Per task: ``runs/indexes/TASK`` (``make minikilt-indexes``) is copied to OUT/TASK (unless it is there already and
adapted: then only the evaluations run), ``genret adapt OUT/TASK TRAIN --task TASK`` runs with the defaults, or
with ``--adapt-args`` added (its wall time and peak memory recorded, through ``/usr/bin/time -v`` where that exists),
and ``genret eval`` scores dev R-Precision (page / passage) for:

- ``untuned``: the default hybrid as built (``--untrained --hybrid-tuned off``), the figure the issue measures from;
- ``adapted``: the default hybrid with no flags (adapted encoder, query memory where the fusion weighs it, fitted
  fusion, adapted reranker where kept);
- ``adapted, no rerank``: the same without the adapted reranker (``--no-rerank``);
- ``dense`` untrained / adapted.

Squad's dev split is cut to its first ``--squad-records`` (2,114 questions take long on 2 cores).  Writes
OUT/results.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MINIKILT = ROOT.parent / "shared" / "minikilt"
GENRET = [sys.executable, "-c", "import sys; from genret.serving import main; sys.exit(main())"]
RUNS = {
    "untuned": ["--retriever", "hybrid", "--untrained", "--hybrid-tuned", "off"],
    "adapted": ["--retriever", "hybrid"],
    "adapted, no rerank": ["--retriever", "hybrid", "--no-rerank"],
    "dense untrained": ["--retriever", "dense", "--untrained"],
    "dense adapted": ["--retriever", "dense"],
}


def _eval(index: Path, task: str, flags: list[str], records: int | None, out: Path) -> dict:
    cmd = [*GENRET, "eval", str(index), str(MINIKILT / task / "dev.jsonl"), "--task", task, "--json", "-q", *flags]
    if records:
        cmd += ["--max-records", str(records)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    out.write_text(done.stdout)
    levels = json.loads(done.stdout)["levels"]
    return {"page": round(100 * levels["page"]["Rprec"], 1), "passage": round(100 * levels["passage"]["Rprec"], 1),
            "seconds": round(time.perf_counter() - t0, 1)}


def _adapt(index: Path, task: str, budget: float, log: Path, extra: list[str]) -> dict:
    cmd = [*GENRET, "adapt", str(index), str(MINIKILT / task / "train.jsonl"), "--task", task,
           "--budget-minutes", str(budget), "--json", *extra]
    timer = ["/usr/bin/time", "-v"] if Path("/usr/bin/time").exists() else []
    t0 = time.perf_counter()
    done = subprocess.run([*timer, *cmd], capture_output=True, text=True, cwd=ROOT)
    log.write_text(done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    rss = next((int(line.split(":")[1]) for line in done.stderr.splitlines()
                if "Maximum resident set size" in line), None)
    report = json.loads(done.stdout[done.stdout.index("{"):]) if "{" in done.stdout else {}
    return {"minutes": round((time.perf_counter() - t0) / 60, 1), "peak_rss_gb": rss and round(rss / 2**20, 1),
            "report": report}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tasks", default="climate_fever,scifact,squad")
    ap.add_argument("--squad-records", type=int, default=500)
    ap.add_argument("--budget-minutes", type=float, default=20.0)
    ap.add_argument("--adapt-args", default="", help="more flags for genret adapt (one string)")
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    a.out.mkdir(parents=True, exist_ok=True)
    results_file = a.out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    mine: dict[str, dict] = {}  # the tasks this run measured
    for task in a.tasks.split(","):
        index = (a.out / task).resolve()
        if not (index / "adapt.json").exists():
            shutil.rmtree(index, ignore_errors=True)
            shutil.copytree(ROOT / "runs" / "indexes" / task, index)
            print(f"{task}: adapting (budget {a.budget_minutes:g} min)", file=sys.stderr, flush=True)
            results.setdefault(task, {})["adapt"] = _adapt(index, task, a.budget_minutes, a.out / f"{task}.adapt.log",
                                                    shlex.split(a.adapt_args))
        elif "adapt" not in results.get(task, {}):  # adapted before this script ran: its own record
            report = json.loads((index / "adapt.json").read_text())["report"]
            results.setdefault(task, {})["adapt"] = {"minutes": report["minutes"]["total"], "peak_rss_gb": None,
                                                     "report": report}
        records = a.squad_records if task == "squad" else None
        evals = {}
        for name, flags in RUNS.items():
            print(f"{task}: eval {name}", file=sys.stderr, flush=True)
            evals[name] = _eval(index, task, flags, records, a.out / f"{task}.{name.replace(' ', '_')}.json")
        results.setdefault(task, {}).update({"dev": evals, "dev_records": records})
        mine[task] = results[task]
        # another run into the same OUT (other tasks, side by side) may have written since: keep its tasks
        written = json.loads(results_file.read_text()) if results_file.exists() else {}
        results = {**written, **mine}
        results_file.write_text(json.dumps(results, indent=1))
    print("| task | adapt minutes (threads, peak GB) | hybrid untuned → adapted | adapted without reranker | "
          "dense untrained → adapted | memory's fusion weight | reranker |")
    print("|---|---|---|---|---|---|---|")
    for task, r in results.items():
        d, ad = r["dev"], r.get("adapt", {})
        rr = ad.get("report", {}).get("rerank", {})
        kept = (f"{rr.get('model')} kept, depth {rr.get('depth')}, weight {rr.get('weight')}"
                if rr.get("kept") else "not kept" if rr else "—")
        weights = ad.get("report", {}).get("fusion", {}).get("weights", {})
        memory = (f"{weights['memory']:.2g} of {sum(weights.values()):.2g}" if "memory" in weights else "—")
        fmt = lambda m: f"{m['page']} / {m['passage']}"  # noqa: E731
        threads = ad.get("report", {}).get("threads")
        print(f"| {task} | {ad.get('minutes')} ({threads}, {ad.get('peak_rss_gb')}) | {fmt(d['untuned'])} → "
              f"{fmt(d['adapted'])} | {fmt(d['adapted, no rerank'])} | {fmt(d['dense untrained'])} → "
              f"{fmt(d['dense adapted'])} | {memory} | {kept} |")


if __name__ == "__main__":
    main()
