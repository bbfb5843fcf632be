"""The whole ``genret index CORPUS --fm`` command, timed from the shell, side by side with a previous revision.

    .venv/bin/python bench/index_fm.py [--corpus FILE ...] [--times K] [--prev REV] [--scale N]

Each run is a fresh process (``OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 HF_HUB_OFFLINE=1``), measured by wall time
and peak RSS (the child's ``ru_maxrss`` from ``os.wait4``); tokens come from the manifest.
``--prev REV`` runs the same command with the code of git revision REV (checked out into a temporary worktree
placed first on ``sys.path``); runs of the two alternate so that a shared machine's noise falls on both, after
one untimed run each (numba compiles a new checkout's kernels once).
``--scale N`` also indexes the first corpus repeated N times (page ids suffixed) as a larger corpus.
Default corpus: ``../shared/minikilt/scifact/knowledge_source.jsonl`` (2.6M tokens).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT.parent / "shared" / "minikilt" / "scifact" / "knowledge_source.jsonl"
CMD = "import sys; sys.path.insert(0, {path!r}); from genret.serving import main; sys.exit(main())"


def repeat(corpus: Path, n: int, out: Path) -> Path:
    with open(out, "w", encoding="utf-8") as fh:
        for k in range(n):
            for line in open(corpus, encoding="utf-8"):
                page = json.loads(line)
                for key in ("wikipedia_id", "id", "_id"):
                    if key in page:
                        page[key] = f"{page[key]}-{k}"
                        break
                fh.write(json.dumps(page, ensure_ascii=False) + "\n")
    return out


def run_once(code_path: str | None, corpus: Path, out: Path) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MiB, tokens) of one ``genret index --fm`` in a fresh process."""
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    argv = ["index", str(corpus), "--out", str(out), "--fm", "--quiet"]
    prog = [sys.executable, "-c", CMD.format(path=code_path)] if code_path else \
        [str(Path(sys.executable).parent / "genret")]
    t0 = time.perf_counter()
    proc = subprocess.Popen([*prog, *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"genret index failed: {proc.stderr.read().decode()[-2000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    return wall, usage.ru_maxrss / 1024, int(manifest["components"]["fm"]["params"]["n_tokens"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, nargs="*", default=[DEFAULT])
    ap.add_argument("--times", type=int, default=3)
    ap.add_argument("--prev", default=None, help="git revision to run side by side")
    ap.add_argument("--scale", type=int, default=0)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-index-fm-"))
    corpora = list(args.corpus)
    if args.scale > 1:
        corpora.append(repeat(corpora[0], args.scale, work / f"x{args.scale}.jsonl"))
    systems: list[tuple[str, str | None]] = [("now", None)]
    try:
        if args.prev:
            tree = work / "prev"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-f", "--detach", str(tree), args.prev],
                           check=True, capture_output=True)
            (work / "pkg").mkdir()
            (work / "pkg" / "genret").symlink_to(tree)
            rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.prev], capture_output=True,
                                 text=True).stdout.strip()
            systems.append((f"{args.prev} ({rev})", str(work / "pkg")))
        for _, path in systems:  # untimed: compiles (and caches) each revision's kernels, warms the page cache
            run_once(path, corpora[0], work / "index")
        print("| corpus | tokens | code | runs | wall s | M tok/s | peak RSS MiB |")
        print("|---|---:|---|---:|---|---|---:|")
        for corpus in corpora:
            results: dict[str, list[tuple[float, float, int]]] = {name: [] for name, _ in systems}
            for _ in range(args.times):
                for name, path in systems:
                    results[name].append(run_once(path, corpus, work / "index"))
            for name, _ in systems:
                walls = [r[0] for r in results[name]]
                n = results[name][0][2]
                print(f"| {corpus.name} | {n:,} | {name} | {len(walls)} | {min(walls):.2f}-{max(walls):.2f} | "
                      f"{n / max(walls) / 1e6:.2f}-{n / min(walls) / 1e6:.2f} | "
                      f"{max(r[1] for r in results[name]):.0f} |", flush=True)
    finally:
        if args.prev:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(work / "prev")],
                           capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
