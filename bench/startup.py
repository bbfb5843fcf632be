"""CLI start-up: wall seconds of ``genret`` commands run as fresh processes, and the heavy modules each imported.

Commands: ``genret --help``, ``genret search INDEX QUERY`` with each retriever (``bm25``, ``dense``,
``generative``: the cold start-up of one search), and ``genret search INDEX -`` answering ``--batch`` queries read
from stdin (one JSON line each), so one start-up serves them all.  The index is the demo corpus (stdlib docstrings,
``genret demo-data``) with dense, BM25 and FM-index components, built once under ``--work`` (an index there without
all three is rebuilt).  Each command runs ``--repeats`` times; the table shows the best and the median, and which
heavy modules the process imported (``-X importtime``, a separate run).  Commands run with ``--threads`` threads
(``OMP_NUM_THREADS``/``MKL_NUM_THREADS``, default 1: the machine is shared); the load average is printed before and
after, since other work on the machine moves every figure.

    .venv/bin/python bench/startup.py [--work /tmp/genret-startup] [--repeats 5] [--batch 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
HEAVY = ("torch", "torch._dynamo", "transformers", "sentence_transformers", "sklearn", "scipy", "numba", "faiss",
         "fastapi", "jnius")
COMPONENTS = ("dense", "bm25", "fm")
THREADS = "1"
QUERIES = ["how do I parse JSON", "sort a list in place", "read a file line by line", "regular expression groups",
           "current date and time", "random number between two values", "join paths", "copy a directory tree",
           "environment variables", "command line arguments"]


def env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": THREADS,
            "MKL_NUM_THREADS": THREADS}


def ensure_index(work: Path) -> Path:
    index = work / "index"
    manifest = index / "manifest.json"
    if manifest.is_file() and all(c in json.loads(manifest.read_text()).get("components", {}) for c in COMPONENTS):
        return index
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run([BIN / "genret", "demo-data", str(work / "data")], check=True, env=env())
    subprocess.run([BIN / "genret", "index", str(work / "data" / "corpus.jsonl"), "--out", str(index), "--dense",
                    "--bm25", "--fm", "--quiet", "--force"], check=True, env=env())
    return index


def timed(cmd: list[str], stdin: str | None) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, input=stdin, text=True, check=True, env=env(), stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def imported(cmd: list[str], stdin: str | None) -> str:
    """The heavy top-level modules the command imported (from ``python -X importtime``)."""
    script = [sys.executable, "-X", "importtime", "-c", "import sys; from genret.serving import main; "
              "sys.argv[0] = 'genret'; sys.exit(main(sys.argv[1:]))", *cmd[1:]]
    err = subprocess.run(script, input=stdin, text=True, env=env(), stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE).stderr
    names = {line.split("|")[-1].strip() for line in err.splitlines() if line.startswith("import time:")}
    return ", ".join(m for m in HEAVY if m in names) or "none"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/genret-startup"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=20, help="queries read from stdin by `genret search INDEX -`")
    ap.add_argument("--threads", default="1", help="OMP_NUM_THREADS / MKL_NUM_THREADS of the commands")
    a = ap.parse_args()
    global THREADS
    THREADS = a.threads
    index = str(ensure_index(a.work))
    genret = str(BIN / "genret")
    batch = "".join(json.dumps({"query": QUERIES[i % len(QUERIES)]}) + "\n" for i in range(a.batch))
    rows = [("genret --help", [genret, "--help"], None),
            ("search, bm25", [genret, "search", index, QUERIES[0], "--retriever", "bm25"], None),
            ("search, dense", [genret, "search", index, QUERIES[0], "--retriever", "dense"], None),
            ("search, generative", [genret, "search", index, QUERIES[0], "--retriever", "generative"], None)]
    probe = subprocess.run([genret, "search", "--help"], capture_output=True, text=True, env=env()).stdout
    if "stdin" in probe:  # `genret search INDEX -` exists
        rows += [(f"search -, bm25, {a.batch} queries", [genret, "search", index, "-", "--retriever", "bm25"], batch),
                 (f"search -, dense, {a.batch} queries", [genret, "search", index, "-", "--retriever", "dense"],
                  batch)]
    print(f"load average before: {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs; threads {THREADS}", flush=True)
    print("| command | best s | median s | heavy modules imported |")
    print("|---|---:|---:|---|")
    for name, cmd, stdin in rows:
        times = [timed(cmd, stdin) for _ in range(a.repeats)]
        print(f"| `{name}` | {min(times):.2f} | {statistics.median(times):.2f} | {imported(cmd, stdin)} |",
              flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
