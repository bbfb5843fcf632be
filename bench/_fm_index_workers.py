"""``bench/fm_index.py``'s workers, each run in its own process (``fm_index.py --worker KIND WORK``): the builds and
queries of every system (``fm``, ``fm-v1``, ``fm-prev``, ``tokengrams``, ``infini-gram``, ``numpy-sa``), the
measurement helpers they use, and ``materialize_prev`` (the ``fm-prev`` system's modules copied out of git).
"""

from __future__ import annotations

import bisect
import importlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


# -- measurement helpers -------------------------------------------------------------------------------------
def rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def peak_bytes() -> int:
    """Peak RSS of this process (VmHWM: ru_maxrss would carry the parent's peak over fork + exec)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def latency(fn: Callable[[Any], Any], queries: list[Any]) -> str:
    fn(queries[0])
    times = []
    for q in queries:
        t = time.perf_counter()
        fn(q)
        times.append(time.perf_counter() - t)
    us = np.array(times) * 1e6
    return f"{np.median(us):.1f} / {np.percentile(us, 99):.0f}"


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


# -- workers (each run in its own process) -------------------------------------------------------------------
PREV_MODULES = ("_index", "_hot", "_queries", "_locate", "_files", "_wavelet", "_suffix_array")  # as in indexing/fm/
PREV_SHARED = ("_errors", "_progress")  # genret.indexing's modules they import, before the shared kernel (core/)
PREV_OPTIONAL = ("_locate", "_files")  # a revision may lack them (_fm_locate came after 91e64ea, _fm_files later)


def _git_show(rev: str, path: str) -> str | None:
    shown = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{path}"], capture_output=True, text=True)
    return shown.stdout if shown.returncode == 0 else None


def _git_ls(rev: str, folder: str) -> list[str]:
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "--name-only", rev, f"{folder}/"],
                            capture_output=True, text=True, check=True)
    return [line for line in listed.stdout.splitlines() if line.endswith(".py")]


def materialize_prev(rev: str, dest: Path) -> None:
    """The FM-index modules of git revision ``rev`` as the package ``fmprev`` under ``dest`` (for ``fm-prev``), laid
    out as that revision imports them: with the shared kernel (``core/``, imported as ``...core``), the kernel as
    ``fmprev/core`` and the modules as ``fmprev/indexing/fm/_index.py``...; before it, ``fmprev/fm/_index.py``... with
    ``indexing``'s own ``_errors`` / ``_progress`` beside them where the revision has the ``indexing/fm/``
    subpackage, else its flat ``indexing/_fm_*.py`` modules as ``fmprev/_fm_index.py``...; a module a revision lacks
    is left empty."""
    pkg = dest / "fmprev"
    nested = _git_show(rev, "indexing/fm/_index.py") is not None
    kernel = _git_show(rev, "core/__init__.py") is not None
    fm = pkg / "indexing" / "fm" if kernel else pkg / "fm"
    fm.mkdir(parents=True, exist_ok=True)
    for folder in {pkg, fm.parent, fm}:  # not the revision's __init__: it would import the whole build
        (folder / "__init__.py").write_text("")
    if kernel:  # the kernel imports nothing of genret: its own __init__ is safe
        (pkg / "core").mkdir(exist_ok=True)
        files = [(path, pkg / path, False) for path in _git_ls(rev, "core")]
    else:
        files = [(f"indexing/{name}.py", pkg / f"{name}.py", False) for name in PREV_SHARED]
    for name in PREV_MODULES:
        flat = name if name in ("_wavelet", "_suffix_array") else f"_fm{name}"
        files.append((f"indexing/fm/{name}.py", fm / f"{name}.py", name in PREV_OPTIONAL) if nested else
                     (f"indexing/{flat}.py", pkg / f"{flat}.py", name in PREV_OPTIONAL))
    for path, target, optional in files:
        text = _git_show(rev, path)
        if text is None and not optional:
            raise RuntimeError(f"git show {rev}:{path} failed")
        target.write_text(text or "")


def _fm_class(v1: bool | str) -> Any:
    if v1 == "prev":
        base = Path(os.environ["FM_PREV_DIR"])
        sys.path.insert(0, str(base))
        module = ("fmprev.indexing.fm._index" if (base / "fmprev" / "indexing" / "fm" / "_index.py").exists() else
                  "fmprev.fm._index" if (base / "fmprev" / "fm" / "_index.py").exists() else "fmprev._fm_index")
        FMIndex = importlib.import_module(module).FMIndex
    elif v1:
        sys.path.insert(0, str(ROOT / "bench"))
        from _fm_v1 import FMIndex
    else:
        from genret.indexing.fm._index import FMIndex
    return FMIndex


def _fm_name(v1: bool | str) -> str:
    return "fmprev" if v1 == "prev" else "fm1" if v1 else "fm"


def work_fm(work: Path, q: dict[str, list], v1: bool | str = False) -> dict[str, Any]:
    FMIndex = _fm_class(v1)
    tokens, lengths = np.load(work / "tokens.npy"), np.load(work / "lengths.npy")
    meta = json.loads((work / "meta.json").read_text())
    if v1 is not True:  # compile / load the kernels first: not part of the build
        FMIndex.from_flat(np.array([1, 2, 3]), np.array([3]), 5)
    t0 = time.perf_counter()
    rate = {} if meta["sa_sample"] is None else {"sa_sample": meta["sa_sample"]}  # None: the system's default
    index = FMIndex.from_flat(tokens, lengths, meta["vocab"], **rate)
    index.save(work / _fm_name(v1))
    build = time.perf_counter() - t0
    (work / f"{_fm_name(v1)}_params.json").write_text(json.dumps(index.params()))
    return {"build_s": build, "peak": peak_bytes(), "disk": dir_bytes(work / _fm_name(v1)),
            "sa_sample": index.sa_sample}


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    except OSError:
        pass


def query_fm(work: Path, q: dict[str, list], v1: bool | str = False) -> dict[str, Any]:
    FMIndex = _fm_class(v1)
    params = json.loads((work / f"{_fm_name(v1)}_params.json").read_text())
    if v1 is True:
        import wavelet_matrix  # noqa: F401 - imported before the baseline is taken
    else:  # the kernels' machine code (numba, llvmlite: ~50 MB) is loaded before the baseline is taken
        tiny = FMIndex.from_flat(np.array([1, 2, 3, 1, 2]), np.array([3, 2]), 5, sa_sample=2)
        tiny.next_tokens([1]), tiny.locate([1, 2]), tiny.count([1, 2]), tiny.next_tokens_of_range(tiny.extend(
            tiny.range_of([1]), 2))
    before = rss_bytes()
    _reset_peak()
    t0 = time.perf_counter()
    index = FMIndex.load(work / _fm_name(v1), params, mmap=True)
    load = time.perf_counter() - t0
    ram, ram_peak = rss_bytes() - before, peak_bytes() - before
    steps = [(index.range_of(p[:2]), p[2]) for p in q["q3"]]

    def step(s: tuple) -> None:
        index.next_tokens_of_range(index.extend(*s))

    out = {"load_s": load, "ram": ram, "ram_peak": ram_peak,
           "count3": latency(index.count, q["q3"]), "next1": latency(index.next_tokens, q["q1"]),
           "next3": latency(index.next_tokens, q["q3"]), "step3": latency(step, steps),
           "locate": latency(lambda g: index.locate(g, limit=100), q["q3"][: len(q["q3"]) // 2])}
    out["ram_after"] = rss_bytes() - before
    out["mapped"] = index.nbytes()
    return out


def work_infinigram(work: Path, q: dict[str, list]) -> dict[str, Any]:
    """infini-gram's suffix array over our token ids (its tokenize step skipped: we write its files)."""
    from infini_gram.engine import InfiniGramEngine

    tokens, lengths = np.load(work / "tokens.npy"), np.load(work / "lengths.npy")
    save = work / "ig"
    (work / "ig-data").mkdir(exist_ok=True)
    save.mkdir(exist_ok=True)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    sep = np.array([0xFFFF], np.uint16)
    offsets, pos = [], 0
    with open(save / "tokenized.0", "wb") as fh:
        for a, b in zip(starts[:-1], starts[1:]):
            offsets.append(pos)
            chunk = np.concatenate([sep, tokens[a:b].astype(np.uint16)])
            fh.write(chunk.tobytes())
            pos += chunk.nbytes
    np.array(offsets, np.uint64).tofile(save / "offset.0")
    del tokens
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "infini_gram.indexing", "--data_dir", str(work / "ig-data"),
                           "--save_dir", str(save), "--token_dtype", "u16", "--mem", "8", "--cpus", "1",
                           "--ulimit", str(resource.getrlimit(resource.RLIMIT_NOFILE)[1])],
                          capture_output=True, text=True)
    build = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(proc.stdout[-2000:] + proc.stderr[-2000:])
    disk = dir_bytes(save)
    before = rss_bytes()
    t0 = time.perf_counter()
    engine = InfiniGramEngine(index_dir=str(save), eos_token_id=0, vocab_size=65535, version=4, token_dtype="u16")
    load = time.perf_counter() - t0
    ram = rss_bytes() - before

    def locate(g: list[int]) -> list:
        seg = engine.find(input_ids=g)["segment_by_shard"][0]
        # (its get_docs_by_ranks calls a method its engine lacks, so one call per occurrence)
        docs = [engine.get_doc_by_rank(s=0, rank=r, max_disp_len=1) for r in range(seg[0], min(seg[1], seg[0] + 100))]
        return sorted((d["doc_ix"], d["needle_offset"]) for d in docs)

    out = {"build_s": build, "peak": 0, "disk": disk, "load_s": load, "ram": ram,
           "count3": latency(lambda g: engine.count(input_ids=g)["count"], q["q3"]),
           "next1": latency(lambda g: engine.ntd(prompt_ids=g, max_support=10**9), q["q1"]),
           "next3": latency(lambda g: engine.ntd(prompt_ids=g, max_support=10**9), q["q3"]),
           "locate": latency(locate, q["q3"][: len(q["q3"]) // 2])}
    out["ram_after"] = rss_bytes() - before
    return out


def work_tokengrams(work: Path, q: dict[str, list]) -> dict[str, Any]:
    from tokengrams import InMemoryIndex

    meta = json.loads((work / "meta.json").read_text())
    tokens, lengths = np.load(work / "tokens.npy"), np.load(work / "lengths.npy")
    sep = meta["vocab"]  # boundary token so that n-grams do not cross documents
    text = np.insert(tokens.astype(np.uint16), np.cumsum(lengths), sep).astype(np.uint16)
    text.tofile(work / "tg.tokens")
    del tokens, text
    before = rss_bytes()
    t0 = time.perf_counter()
    index = InMemoryIndex.from_token_file(str(work / "tg.tokens"), vocab=2**16)
    build = time.perf_counter() - t0
    ram = rss_bytes() - before
    peak = peak_bytes()
    index.save_index(str(work / "tg.index"))
    disk = (work / "tg.tokens").stat().st_size + (work / "tg.index").stat().st_size
    starts = np.concatenate([[0], np.cumsum(lengths + 1)])

    def locate(g: list[int]) -> list:
        pos = np.array(index.positions(g)[:100], np.int64)
        d = np.searchsorted(starts, pos, side="right") - 1
        return sorted(zip(d.tolist(), (pos - starts[d]).tolist()))

    return {"build_s": build, "peak": peak, "disk": disk, "ram": ram,
            "count3": latency(index.count, q["q3"]), "next1": latency(index.count_next, q["q1"]),
            "next3": latency(index.count_next, q["q3"]),
            "locate": latency(locate, q["q3"][: len(q["q3"]) // 2])}


class _Suffixes:
    """``bisect`` view of the suffix array: item i = the first m tokens of suffix SA[i]."""

    def __init__(self, text: np.ndarray, sa: np.ndarray, m: int) -> None:
        self.text, self.sa, self.m = text, sa, m

    def __len__(self) -> int:
        return len(self.sa)

    def __getitem__(self, i: int) -> list[int]:
        s = int(self.sa[i])
        return self.text[s:s + self.m].tolist()


def work_numpy(work: Path, q: dict[str, list]) -> dict[str, Any]:
    from pydivsufsort import divsufsort

    meta = json.loads((work / "meta.json").read_text())
    tokens, lengths = np.load(work / "tokens.npy"), np.load(work / "lengths.npy")
    t0 = time.perf_counter()
    text = np.insert(tokens.astype(np.uint16), np.cumsum(lengths), meta["vocab"]).astype(np.uint16)
    del tokens
    sa = divsufsort(text)
    build = time.perf_counter() - t0
    ram = text.nbytes + sa.nbytes  # what a fresh process holds after np.load of both arrays
    peak = peak_bytes()
    starts = np.concatenate([[0], np.cumsum(lengths + 1)])

    def rng(g: list[int]) -> tuple[int, int]:
        view = _Suffixes(text, sa, len(g))
        return bisect.bisect_left(view, g), bisect.bisect_right(view, g)

    def count(g: list[int]) -> int:
        lo, hi = rng(g)
        return hi - lo

    def next_tokens(g: list[int]) -> tuple:
        lo, hi = rng(g)
        nxt = text[sa[lo:hi].astype(np.int64) + len(g)]
        u, c = np.unique(nxt[nxt != meta["vocab"]], return_counts=True)
        return u, c

    def locate(g: list[int]) -> list:
        lo, hi = rng(g)
        pos = sa[lo:min(hi, lo + 100)].astype(np.int64)
        d = np.searchsorted(starts, pos, side="right") - 1
        return sorted(zip(d.tolist(), (pos - starts[d]).tolist()))

    return {"build_s": build, "peak": peak, "disk": text.nbytes + sa.nbytes, "ram": ram,
            "count3": latency(count, q["q3"]), "next1": latency(next_tokens, q["q1"]),
            "next3": latency(next_tokens, q["q3"]), "locate": latency(locate, q["q3"][: len(q["q3"]) // 2])}


WORKERS = {"fm": work_fm, "fm-query": query_fm, "fm-v1": lambda w, q: work_fm(w, q, True),
           "fm-v1-query": lambda w, q: query_fm(w, q, True), "fm-prev": lambda w, q: work_fm(w, q, "prev"),
           "fm-prev-query": lambda w, q: query_fm(w, q, "prev"), "tokengrams": work_tokengrams,
           "infini-gram": work_infinigram, "numpy-sa": work_numpy}


def worker_main(kind: str, work: Path) -> None:
    q = json.loads((work / "queries.json").read_text())
    result = WORKERS[kind](work, q)
    result["peak_total"] = peak_bytes()
    print("RESULT " + json.dumps(result), flush=True)
