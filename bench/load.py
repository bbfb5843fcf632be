"""HTTP load test of ``genret serve`` on 127.0.0.1: throughput, latency, errors, memory, HTTP overhead, and
micro-batching on against off.

The real server (``python -m genret serve``, uvicorn) runs in a subprocess; the load comes from this
process with async httpx: ``--concurrency`` workers (1, 8, 32) send ``POST /v1/search`` requests back to back
until ``--requests`` have been answered (``--generative-requests`` for the generative retriever, whose CPU
decoding takes seconds), for each retriever the index offers (``--retrievers``).  Per run: throughput,
p50 / p99 latency, error count (anything but 200), and the mean size of the ``batch_search`` calls the server
made (from ``/metrics``).  The server's RSS is read before the load (retrievers preloaded, warmed up) and after.

HTTP overhead: p50 of ``POST /v1/search`` (dense, concurrency 1) minus p50 of the same searches called in
process (``SearchService.search`` in this process, same index and queries), measured in alternating rounds
while the server idles.  Memory: after the table, the fast retrievers run again for ``--soak-rounds`` rounds and
the RSS is read after each (a leak keeps growing; a warmed-up server levels off).  Micro-batching: a second server with
``--no-micro-batch`` runs beside the first, and the two are loaded at the top concurrency in alternating rounds
(the machine's load drifts; alternating keeps the comparison fair).

RAG: ``POST /v1/rag`` (``--rag-retriever`` passages, ``--rag-passages``, the packaged SmolLM2 with
``--rag-max-new-tokens``, task ``--task``) at each concurrency with ``--rag-requests`` requests per run, on the
micro-batching server and on the one without; ``--rag-only`` runs just these rows (two servers, on and off
alternating per concurrency).  Mean batch = questions per ``batch_answer`` call.

RAG overload (``--rag-overload``, only this row): one server with the default limits (``request_timeout_s`` 30,
``max_queue`` 64, micro-batching on) and the local generator, loaded by ``--rag-overload-concurrency`` (32) clients that
send ``POST /v1/rag`` back to back and honour Retry-After on a 429, until ``--rag-overload-requests`` (64) requests
have been answered or failed (429s, refused at once, are counted apart); then the load stops at once (the clients
drop the requests still in flight).  Per row: the responses by status, p50 / p99 of the answers (200), and how long
the server's CPU took to return to idle (below 10 % of a core over a second) after the load stopped, with the CPU
seconds it burnt in that time.

Index: ``--index DIR`` (any genret index), or by default one built into a temporary directory from
``../shared/minikilt/squad/knowledge_source.jsonl`` (dense + BM25 + FM-index with the packaged SmolLM2
tokenizer; 2,067 paragraphs).  Queries: the squad dev questions.

    python bench/load.py [--index DIR] [--retrievers dense,bm25,hybrid,generative] [--concurrency 1,8,32]
                         [--requests 200] [--generative-requests 32] [--rag-requests 16] [--json OUT.json]
    python bench/load.py --index DIR --rag-only --concurrency 1,8,32 --rag-requests 16 --rag-max-new-tokens 8
    python bench/load.py --index DIR --rag-overload [--rag-overload-concurrency 32] [--rag-overload-requests 128]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from _load_rag import HEAD, Server, _measure, _row_md, load, rag_only, rag_overload, rag_rows  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SQUAD = ROOT.parent / "shared" / "minikilt" / "squad"
K = 10


# ---- the index and the queries ------------------------------------------------------------------------------
def build_index(out: Path) -> Path:
    from genret.indexing import DenseConfig, IndexConfig, build_index

    print(f"building dense + bm25 + fm over {SQUAD / 'knowledge_source.jsonl'} -> {out}", file=sys.stderr)
    build_index(SQUAD / "knowledge_source.jsonl", out, IndexConfig(dense=DenseConfig(device="cpu")), progress=False)
    return out


def load_queries(n: int = 2000) -> list[str]:
    with open(SQUAD / "dev.jsonl", encoding="utf-8") as fh:
        return [json.loads(line)["input"] for line, _ in zip(fh, range(n))]


# ---- search rows, warm-up, HTTP overhead ---------------------------------------------------------------
def run(server: Server, retriever: str, queries: list[str], concurrency: int, n: int, batching: str,
        task: str | None = None) -> dict:
    n = max(n, concurrency)
    bodies = [{"query": queries[i % len(queries)], "k": K, "retriever": retriever, "task": task} for i in range(n)]
    return _measure(server, "search", retriever, retriever, bodies, concurrency, batching)


def warm_up(server: Server, retrievers: list[str], queries: list[str], task: str | None, concurrency: int,
            n: int) -> None:
    """A few searches one by one, then (but for the slow generative retriever) ``n`` at the top concurrency,
    so that the JVM has compiled its hot paths and allocator pools are sized for the largest batches before
    anything is measured."""
    for r in retrievers:
        asyncio.run(load(server.base, [{"query": q, "k": K, "retriever": r, "task": task} for q in queries[:3]], 1))
        if r != "generative":
            bodies = [{"query": queries[-1 - i], "k": K, "retriever": r} for i in range(n)]
            asyncio.run(load(server.base, bodies, concurrency))


def http_overhead(server: Server, index: Path, queries: list[str], n: int) -> dict:
    """p50 over HTTP (dense, concurrency 1) against the same search in process, query by query alternating
    (the machine's load drifts; pairs see the same load).  Also the median of the per-pair differences."""
    from genret.serving import Settings
    from genret.serving.http._service import SearchService

    service = SearchService(Settings(indexes=[index], retrieval={"dense": {"device": "cpu"}}))
    service.search(queries[0], K, retriever="dense")
    local, remote = [], []

    async def pairs() -> None:
        async with httpx.AsyncClient(base_url=server.base, timeout=60) as client:
            for q in queries[:n]:
                t0 = time.perf_counter()
                service.search(q, K, retriever="dense")
                local.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                r = await client.post("/v1/search", json={"query": q, "k": K, "retriever": "dense"})
                remote.append(time.perf_counter() - t0)
                assert r.status_code == 200, r.text

    async def floor() -> list[float]:
        async with httpx.AsyncClient(base_url=server.base, timeout=60) as client:
            out = []
            for _ in range(n):
                t0 = time.perf_counter()
                await client.get("/healthz")
                out.append(time.perf_counter() - t0)
            return out

    asyncio.run(pairs())
    healthz = asyncio.run(floor())
    service.close()
    ms = 1000.0
    return {"p50_in_process_ms": float(np.median(local)) * ms, "p50_http_ms": float(np.median(remote)) * ms,
            "p50_healthz_ms": float(np.median(healthz)) * ms,
            "overhead_ms": (float(np.median(remote)) - float(np.median(local))) * ms,
            "median_pair_difference_ms": float(np.median(np.array(remote) - np.array(local))) * ms,
            "requests": len(remote)}


# ---- report -------------------------------------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--index", type=Path, default=None, help="an index directory (default: build squad's)")
    p.add_argument("--retrievers", default="dense,bm25,hybrid,generative")
    p.add_argument("--concurrency", default="1,8,32")
    p.add_argument("--requests", type=int, default=200, help="requests per run (at least the concurrency)")
    p.add_argument("--generative-requests", type=int, default=32)
    p.add_argument("--overhead-requests", type=int, default=100)
    p.add_argument("--soak-rounds", type=int, default=5, help="rounds of the fast retrievers after the table")
    p.add_argument("--compare-rounds", type=int, default=2, help="alternating on/off rounds (generative: 1)")
    p.add_argument("--task", default="squad", help="task prompt of the generative retriever")
    p.add_argument("--beam", type=int, default=3, help="generative: beam (CPU budget)")
    p.add_argument("--max-len", type=int, default=4, help="generative: longest body n-gram")
    p.add_argument("--title-max-len", type=int, default=12, help="generative: longest title")
    p.add_argument("--rag-requests", type=int, default=16, help="POST /v1/rag requests per run (0: no RAG rows)")
    p.add_argument("--rag-retriever", default="bm25", help="RAG: the retriever of the passages")
    p.add_argument("--rag-passages", type=int, default=3)
    p.add_argument("--rag-max-new-tokens", type=int, default=8, help="RAG: the generator's max_new_tokens")
    p.add_argument("--rag-only", action="store_true", help="only the RAG rows (micro-batching on and off)")
    p.add_argument("--rag-overload", action="store_true", help="only the RAG overload row")
    p.add_argument("--rag-overload-concurrency", type=int, default=32)
    p.add_argument("--rag-overload-requests", type=int, default=64,
                   help="responses other than 429 (answers, errors) before the load stops")
    p.add_argument("--rag-overload-timeout", type=float, default=30.0, help="the server's request_timeout_s")
    p.add_argument("--json", type=Path, default=None, help="write every row as JSON here")
    return p.parse_args()


def main() -> None:
    a = parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="genret-load-"))
    index = a.index or build_index(tmp / "squad")
    from genret.indexing import Index
    from genret.retrieval import available_retrievers

    with Index(index) as ix:
        offered = available_retrievers(ix)
    retrievers = [r for r in a.retrievers.split(",") if r in offered]
    conc = [int(c) for c in a.concurrency.split(",")]
    queries = load_queries()
    env = {"GENRET_RETRIEVAL__DENSE__DEVICE": "cpu", "GENRET_RETRIEVAL__GENERATIVE__DEVICE": "cpu",
           "GENRET_RETRIEVAL__GENERATIVE__BEAM": str(a.beam), "GENRET_RETRIEVAL__GENERATIVE__MAX_LEN": str(a.max_len),
           "GENRET_RETRIEVAL__GENERATIVE__TITLE_MAX_LEN": str(a.title_max_len),
           "GENRET_GENERATOR__DEVICE": "cpu", "GENRET_GENERATOR__MAX_NEW_TOKENS": str(a.rag_max_new_tokens)}
    if a.rag_only:
        return rag_only(index, queries, env, tmp, a)
    if a.rag_overload:
        return rag_overload(index, queries, env, tmp, a)

    def n_for(r: str) -> int:
        return a.generative_requests if r == "generative" else a.requests

    rows: list[dict] = []
    server = Server(index, retrievers, [], env, tmp / "server-on.log")
    off = None
    top = max(conc)
    try:
        server.wait_ready()
        warm_up(server, retrievers, queries, a.task, top, a.requests)
        rss_before = server.rss_mb()
        overhead = http_overhead(server, index, queries, a.overhead_requests) if "dense" in retrievers else None
        for r in retrievers:
            for c in conc:
                rows.append(run(server, r, queries, c, n_for(r), "on", a.task))
        rows.extend(rag_rows(server, queries, a))
        rss_after = server.rss_mb()
        soak = []  # the fast retrievers again at the top concurrency, a few rounds: RSS after each
        for _ in range(a.soak_rounds):
            for r in (x for x in retrievers if x != "generative"):
                s_row = run(server, r, queries, top, a.requests, "on")
                assert s_row["errors"] == 0, s_row
            soak.append(server.rss_mb())
        # micro-batching on against off at the top concurrency: the two servers in alternating rounds
        off = Server(index, retrievers, ["--no-micro-batch"], env, tmp / "server-off.log")
        off.wait_ready()
        warm_up(off, retrievers, queries, a.task, top, a.requests)
        compare: list[dict] = []
        for r in retrievers:
            for _ in range(1 if r == "generative" else a.compare_rounds):
                compare.append(run(server, r, queries, top, n_for(r), "on", a.task))
                compare.append(run(off, r, queries, top, n_for(r), "off", a.task))
        rows.extend(rag_rows(off, queries, a, "off"))
    finally:
        server.stop()
        if off is not None:
            off.stop()

    _report(a, index, queries, retrievers, top, rows, compare, overhead, (rss_before, rss_after, soak))


def _report(a, index, queries: list, retrievers: list[str], top: int, rows: list[dict], compare: list[dict],
            overhead: dict | None, rss: tuple) -> None:
    """The tables and summary lines of a full run (and its JSON with ``--json``)."""
    rss_before, rss_after, soak = rss
    print(f"\nindex {index}; {len(queries)} squad dev questions cycled; k={K}; generative: task {a.task}, beam "
          f"{a.beam}, max_len {a.max_len}, title_max_len {a.title_max_len}\n")
    print(HEAD)
    for r in rows:
        print(_row_md(r))
    print(f"\nserver RSS: {rss_before:.0f} MB before the load (retrievers loaded, warmed up), {rss_after:.0f} MB "
          f"after ({rss_after - rss_before:+.0f} MB); after each soak round (the fast retrievers again at "
          f"concurrency {top}, {a.requests} requests each): " + ", ".join(f"{x:.0f}" for x in soak) + " MB")
    if overhead:
        print(f"HTTP overhead (dense, concurrency 1, p50 over {overhead['requests']} requests): "
              f"{overhead['p50_http_ms']:.2f} ms over HTTP - {overhead['p50_in_process_ms']:.2f} ms in process = "
              f"{overhead['overhead_ms']:.2f} ms (median of the per-query differences: "
              f"{overhead['median_pair_difference_ms']:.2f} ms); an HTTP round trip that does no work "
              f"(GET /healthz, same client): {overhead['p50_healthz_ms']:.2f} ms")
    print(f"\nmicro-batching on against off at concurrency {top} (alternating rounds, two servers):\n")
    print(HEAD)
    for r in compare:
        print(_row_md(r))
    print()
    for r in retrievers:
        mine = [x for x in compare if x["retriever"] == r]
        on = sum(x["requests"] for x in mine if x["batching"] == "on") / \
            sum(x["requests"] / x["throughput"] for x in mine if x["batching"] == "on")
        off_tp = sum(x["requests"] for x in mine if x["batching"] == "off") / \
            sum(x["requests"] / x["throughput"] for x in mine if x["batching"] == "off")
        print(f"micro-batching at concurrency {top}, {r}: {on:.1f} req/s on vs {off_tp:.1f} off (x{on / off_tp:.2f})")
    if a.json:
        a.json.write_text(json.dumps({"rows": rows, "rss_before_mb": rss_before, "rss_after_mb": rss_after,
                                      "soak_rss_mb": soak, "overhead": overhead, "compare": compare,
                                      "index": str(index)}, indent=1))


if __name__ == "__main__":
    main()
