"""``bench/load.py``'s server and load primitives, and its RAG scenarios.

- ``Server`` (``genret serve`` in a subprocess), ``load`` (the async HTTP load loop), ``_measure`` (one table row),
  ``HEAD`` and ``_row_md`` (the table);
- the RAG rows (``rag_rows``, ``--rag-only``: ``rag_only``) and the RAG overload row (``--rag-overload``:
  ``rag_overload``).  See ``bench/load.py``'s docstring for what they measure.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


# ---- the server -------------------------------------------------------------------------------------------
class Server:
    """``genret serve`` in a subprocess on a free port of 127.0.0.1."""

    def __init__(self, index: Path, retrievers: list[str], extra: list[str], env: dict[str, str], log: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        log_level = os.environ.get("LOAD_SERVER_LOG", "warning")
        cmd = [sys.executable, "-m", "genret", "serve", str(index), "--host", "127.0.0.1", "--port",
               str(self.port), "--preload", ",".join(retrievers), "--log-level", log_level, "--no-access-log",
               "--timeout", "900", *extra]
        self.log = open(log, "w")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 900) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited with {self.proc.returncode}; see {self.log.name}")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise SystemExit("server not ready in time")

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024

    def batch_stats(self) -> dict[str, tuple[float, float]]:
        """``retriever -> (sum, count)`` of the server's ``genret_batch_size`` histogram."""
        text = httpx.get(f"{self.base}/metrics", timeout=10).text
        out: dict[str, list[float]] = {}
        for m in re.finditer(r'^genret_batch_size_(sum|count)\{retriever="([^"]+)"\} (\S+)$', text, re.M):
            out.setdefault(m.group(2), [0.0, 0.0])[0 if m.group(1) == "sum" else 1] = float(m.group(3))
        return {r: (v[0], v[1]) for r, v in out.items()}

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


# ---- load ---------------------------------------------------------------------------------------------------
async def load(base: str, bodies: list[dict], concurrency: int, path: str = "/v1/search") -> dict:
    """Send every body (``POST path``) with ``concurrency`` workers; latencies, errors, wall time."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    next_i = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=900, limits=limits) as client:

        async def worker() -> None:
            nonlocal next_i
            while next_i < len(bodies):
                body = bodies[next_i]
                next_i += 1
                t0 = time.perf_counter()
                try:
                    r = await client.post(path, json=body)
                    if r.status_code != 200:
                        errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"latencies": latencies, "errors": errors, "wall": wall}


def _measure(server: Server, scenario: str, retriever: str, stats_key: str, bodies: list[dict], concurrency: int,
             batching: str, path: str = "/v1/search") -> dict:
    """Send ``bodies`` to ``path`` at ``concurrency``; one table row (printed as it is measured)."""
    before = server.batch_stats().get(stats_key, (0.0, 0.0))
    res = asyncio.run(load(server.base, bodies, concurrency, path))
    after = server.batch_stats().get(stats_key, (0.0, 0.0))
    lat = np.array(res["latencies"]) * 1000
    calls = after[1] - before[1]
    n = len(bodies)
    row = {"scenario": scenario, "retriever": retriever, "batching": batching, "concurrency": concurrency,
           "requests": n, "errors": sum(res["errors"].values()), "error_kinds": res["errors"],
           "throughput": n / res["wall"], "p50_ms": float(np.percentile(lat, 50)),
           "p99_ms": float(np.percentile(lat, 99)), "mean_batch": (after[0] - before[0]) / calls if calls else 0.0,
           "rss_mb": server.rss_mb()}
    print(_row_md(row), file=sys.stderr, flush=True)
    return row


# ---- the table ----------------------------------------------------------------------------------------------
HEAD = ("| scenario | retriever | micro-batching | concurrency | requests | errors | req/s | p50 ms | p99 ms "
        "| mean batch | server RSS MB |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")


def _row_md(r: dict) -> str:
    tp = f"{r['throughput']:.{2 if r['throughput'] < 10 else 1}f}"  # RAG: below 1 req/s
    return (f"| {r['scenario']} | {r['retriever']} | {r['batching']} | {r['concurrency']} | {r['requests']} | "
            f"{r['errors']} | {tp} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['mean_batch']:.1f} | "
            f"{r['rss_mb']:.0f} |")


# ---- RAG ----------------------------------------------------------------------------------------------------
def rag_bodies(queries: list[str], n: int, args, offset: int = 0) -> list[dict]:
    return [{"query": queries[(offset + i) % len(queries)], "retriever": args.rag_retriever, "task": args.task,
             "passages": args.rag_passages} for i in range(n)]


def run_rag(server: Server, queries: list[str], concurrency: int, n: int, batching: str, args) -> dict:
    """``n`` (at least ``concurrency``) ``POST /v1/rag`` requests at ``concurrency``; one table row."""
    bodies = rag_bodies(queries, max(n, concurrency), args)
    return _measure(server, "rag", args.rag_retriever, "rag", bodies, concurrency, batching, "/v1/rag")


def warm_up_rag(server: Server, queries: list[str], args) -> None:
    """Load the generator (first use) and run a couple of answers, one by one and then together."""
    asyncio.run(load(server.base, rag_bodies(queries, 2, args, offset=-2), 1, "/v1/rag"))
    asyncio.run(load(server.base, rag_bodies(queries, 4, args, offset=-6), 4, "/v1/rag"))


def rag_rows(server: Server, queries: list[str], args, batching: str = "on") -> list[dict]:
    """RAG rows (``POST /v1/rag`` with ``--rag-retriever``, ``--rag-passages``, the generator's
    ``--rag-max-new-tokens``) at each concurrency; none when the server has no ``/v1/rag``."""
    paths = httpx.get(f"{server.base}/openapi.json", timeout=10).json()["paths"]
    if "/v1/rag" not in paths or args.rag_requests <= 0:
        return []
    warm_up_rag(server, queries, args)
    return [run_rag(server, queries, c, args.rag_requests, batching, args)
            for c in (int(x) for x in args.concurrency.split(","))]


def rag_only(index: Path, queries: list[str], env: dict[str, str], tmp: Path, args) -> None:
    """``--rag-only``: RAG at each concurrency, micro-batching on and off (two servers, alternating runs)."""
    retrievers = [args.rag_retriever, "generator"]
    on = Server(index, retrievers, [], env, tmp / "rag-on.log")
    off = Server(index, retrievers, ["--no-micro-batch"], env, tmp / "rag-off.log")
    rows: list[dict] = []
    try:
        on.wait_ready()
        off.wait_ready()
        warm_up_rag(on, queries, args)
        warm_up_rag(off, queries, args)
        for c in (int(x) for x in args.concurrency.split(",")):
            rows.append(run_rag(on, queries, c, args.rag_requests, "on", args))
            rows.append(run_rag(off, queries, c, args.rag_requests, "off", args))
    finally:
        on.stop()
        off.stop()
    print(f"\nindex {index}; RAG: retriever {args.rag_retriever}, {args.rag_passages} passages, task {args.task}, "
          f"generator {env.get('GENRET_GENERATOR__MODEL', 'the packaged SmolLM2-135M-Instruct')}, max_new_tokens "
          f"{args.rag_max_new_tokens}; squad dev questions\n")
    print(HEAD)
    for r in rows:
        print(_row_md(r))
    if args.json:
        args.json.write_text(json.dumps({"rag_rows": rows, "index": str(index)}, indent=1))



# ---- RAG overload ---------------------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def time_to_idle(pid: int, since: float, limit_s: float = 300.0, idle: float = 0.1) -> tuple[float | None, float]:
    """``(seconds from since until the CPU of pid stays below idle cores over a 1 s window, CPU seconds used in
    that time)``; None when it is still busy after ``limit_s``."""
    start_cpu = prev_cpu = cpu_seconds(pid)
    prev_t = time.perf_counter()
    while prev_t - since < limit_s:
        time.sleep(1.0)
        cpu, t = cpu_seconds(pid), time.perf_counter()
        if (cpu - prev_cpu) / (t - prev_t) < idle:
            return prev_t - since, prev_cpu - start_cpu
        prev_cpu, prev_t = cpu, t
    return None, prev_cpu - start_cpu


async def overload(base: str, bodies: list[dict], n: int, concurrency: int) -> dict:
    """``concurrency`` clients send ``POST /v1/rag`` back to back (a 429 or 503: wait its Retry-After, then the next
    question) until ``n`` responses other than 429 have come; then the load stops — requests still in flight are
    dropped (their connections closed).  Responses by status, answer latencies, and when the load stopped."""
    codes: dict[str, int] = {}
    latencies: list[float] = []
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=900, limits=limits) as client:

        async def worker(i: int) -> None:
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    r = await client.post("/v1/rag", json=bodies[i % len(bodies)])
                    code = str(r.status_code)
                except httpx.HTTPError as exc:
                    r, code = None, type(exc).__name__
                if stop.is_set():
                    return
                codes[code] = codes.get(code, 0) + 1
                if code == "200":
                    latencies.append(time.perf_counter() - t0)
                if sum(v for k, v in codes.items() if k != "429") >= n:
                    stop.set()
                    return
                if r is not None and r.status_code in (429, 503):
                    await asyncio.sleep(float(r.headers.get("retry-after", "1")))
                i += concurrency

        t0 = time.perf_counter()
        workers = [asyncio.create_task(worker(i)) for i in range(concurrency)]
        await stop.wait()
        stopped = time.perf_counter()
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    return {"codes": codes, "latencies": latencies, "wall": stopped - t0, "stopped": stopped}


def rag_overload(index: Path, queries: list[str], env: dict[str, str], tmp: Path, args) -> None:
    """``--rag-overload``: one server with the default limits, loaded past what its generator answers in time."""
    server = Server(index, [args.rag_retriever, "generator"], ["--timeout", str(args.rag_overload_timeout)], env,
                    tmp / "rag-overload.log")
    try:
        server.wait_ready()
        warm_up_rag(server, queries, args)
        c, n = args.rag_overload_concurrency, args.rag_overload_requests
        res = asyncio.run(overload(server.base, rag_bodies(queries, max(n, c), args), n, c))
        idle_s, cpu_s = time_to_idle(server.proc.pid, res["stopped"])
        rss = server.rss_mb()
    finally:
        server.stop()
    codes = res["codes"]
    lat = np.array(res["latencies"] or [float("nan")]) * 1000
    row = {"scenario": "rag-overload", "retriever": args.rag_retriever, "concurrency": c, "responses": n,
           "ok": codes.get("200", 0), "refused_429": codes.get("429", 0),
           "server_errors_5xx": sum(v for k, v in codes.items() if k.isdigit() and k >= "500"),
           "other": {k: v for k, v in codes.items() if k not in ("200", "429") and not (k.isdigit() and k >= "500")},
           "codes": codes, "wall_s": res["wall"], "p50_ms": float(np.percentile(lat, 50)),
           "p99_ms": float(np.percentile(lat, 99)), "idle_after_s": idle_s, "cpu_after_s": cpu_s, "rss_mb": rss,
           "request_timeout_s": args.rag_overload_timeout}
    print(f"\nindex {index}; RAG overload: retriever {args.rag_retriever}, {args.rag_passages} passages, task "
          f"{args.task}, generator {env.get('GENRET_GENERATOR__MODEL', 'the packaged SmolLM2-135M-Instruct')}, "
          f"max_new_tokens {args.rag_max_new_tokens}; server defaults but --timeout {args.rag_overload_timeout:g}; "
          f"clients honour Retry-After\n")
    print("| scenario | concurrency | answered or failed | 200 | 429 | 5xx | other | p50 ms (200) | p99 ms (200) "
          "| wall s | CPU idle after the load stopped, s | server CPU s burnt meanwhile |\n"
          "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    idle = "not within 300 s" if idle_s is None else f"{idle_s:.1f}"
    print(f"| rag-overload | {c} | {n} | {row['ok']} | {row['refused_429']} | {row['server_errors_5xx']} | "
          f"{row['other'] or '-'} | {row['p50_ms']:.0f} | {row['p99_ms']:.0f} | {res['wall']:.0f} | {idle} | "
          f"{cpu_s:.1f} |")
    print(f"\nresponses by status: {codes}")
    if args.json:
        args.json.write_text(json.dumps({"rag_overload": row, "index": str(index)}, indent=1))
