"""``hostile-rag``: hostile RAG clients against a real ``genret serve`` (issue 27, point 7).

A tiny BM25 index is built in a temporary directory (``genret index``), and ``genret serve`` runs over it in a
subprocess with the server's default limits (``request_timeout_s`` ``--timeout``, 30) and the packaged
SmolLM2-135M-Instruct as generator (``--max-new-tokens``), the generator and BM25 preloaded.  Then ``--clients`` (32)
clients ask ``POST /v1/rag`` back to back for ``--duration`` seconds, in three kinds, a third each:

* **impatient**: a 429 or 503 is retried at once (``Retry-After`` ignored);
* **quitters**: give up after ``--give-up`` (3) seconds (the connection is closed: the server sees a client that
  went away, nginx's 499);
* **hang-ups**: ask for a stream (``"stream": true``) and hang up after its first event.

Outcomes are counted by status (``gave-up`` and ``hung-up``: the client's own doing, after no status or a 200
stream's first event; an ``error`` event inside a stream counts by its ``status``).  Target: 0 × 5xx.

    python bench/faults.py hostile-rag [--duration 60] [--clients 32] [--runs 2] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _faults_rebuild import stop, wait_ready  # the sibling probe's server helpers (bench/ is on the path)

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ["When did the oil embargo start?", "Who created the Python programming language?",
             "Which pigment absorbs red and blue light?", "Who first climbed Mount Everest?",
             "Which trumpeter shaped jazz in New Orleans?", "What is photosynthesis?"]
_TOPICS = [("Oil crisis", "The 1973 oil crisis began in October 1973 when OAPEC proclaimed an oil embargo."),
           ("Python", "Python is a high-level programming language created by Guido van Rossum."),
           ("Photosynthesis", "Chlorophyll absorbs mostly blue and red light during photosynthesis."),
           ("Mount Everest", "Tenzing Norgay and Edmund Hillary first climbed Mount Everest in 1953."),
           ("Jazz", "Louis Armstrong, a trumpeter from New Orleans, shaped jazz.")]


def register(subparsers) -> None:
    """Add the ``hostile-rag`` subcommand to ``bench/faults.py``'s subcommands."""
    p = subparsers.add_parser("hostile-rag", help="32 hostile RAG clients against genret serve: 0 x 5xx expected",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load per run")
    p.add_argument("--runs", type=int, default=1, help="runs, each against a fresh server")
    p.add_argument("--clients", type=int, default=32, help="clients (a third of each kind)")
    p.add_argument("--give-up", type=float, default=3.0, help="seconds after which a quitter hangs up")
    p.add_argument("--timeout", type=float, default=30.0, help="the server's request_timeout_s")
    p.add_argument("--max-new-tokens", type=int, default=16, help="the generator's max_new_tokens")
    p.add_argument("--json", type=Path, default=None, help="write the counts here")
    p.set_defaults(func=run)


def build_index(tmp: Path) -> Path:
    corpus = tmp / "corpus.jsonl"
    with open(corpus, "w", encoding="utf-8") as fh:
        for i in range(40):
            title, text = _TOPICS[i % len(_TOPICS)]
            fh.write(json.dumps({"id": f"p{i}", "title": f"{title} {i}", "text": [text, f"Page {i} of {title}."]})
                     + "\n")
    out = tmp / "index"
    subprocess.run([sys.executable, "-m", "genret", "index", str(corpus), "--out", str(out), "--bm25", "--quiet"],
                   cwd=ROOT, check=True)
    return out


def start_server(index: Path, a: argparse.Namespace, log) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GENRET_GENERATOR__MAX_NEW_TOKENS": str(a.max_new_tokens),
           "OMP_WAIT_POLICY": "PASSIVE", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "genret", "serve", str(index), "--port", str(port), "--preload", "bm25,generator",
           "--timeout", str(a.timeout), "--log-level", "warning", "--no-access-log"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}"


async def _impatient(client, body: dict, count) -> None:
    r = await client.post("/v1/rag", json=body)
    count(str(r.status_code))  # 429 / 503: asked again at once, Retry-After ignored


async def _quitter(client, body: dict, count, give_up: float) -> None:
    try:
        r = await asyncio.wait_for(client.post("/v1/rag", json=body), give_up)
    except TimeoutError:
        count("gave-up")
        return
    count(str(r.status_code))


async def _hang_up(client, body: dict, count) -> None:
    async with client.stream("POST", "/v1/rag", json={**body, "stream": True}) as r:
        if r.status_code != 200:
            count(str(r.status_code))
            return
        async for line in r.aiter_lines():
            if line.startswith("data:"):
                data = json.loads(line[5:])
                if isinstance(data, dict) and "status" in data and "error" in data:
                    count(str(data["status"]))  # an error event: the status it would have had
                else:
                    count("hung-up")
                return  # hang up after the first event
    count("stream-ended-early")


async def load(base: str, a: argparse.Namespace) -> dict[str, int]:
    import httpx

    counts: dict[str, int] = {}

    def count(outcome: str) -> None:
        counts[outcome] = counts.get(outcome, 0) + 1

    end = time.monotonic() + a.duration
    limits = httpx.Limits(max_connections=a.clients * 2, max_keepalive_connections=0)

    async def client_loop(i: int, client) -> None:
        n = 0
        while time.monotonic() < end:
            body = {"query": QUESTIONS[(i + n) % len(QUESTIONS)], "task": "qa", "retriever": "bm25", "passages": 2}
            n += 1
            try:
                if i % 3 == 0:
                    await _impatient(client, body, count)
                elif i % 3 == 1:
                    await _quitter(client, body, count, a.give_up)
                else:
                    await _hang_up(client, body, count)
            except httpx.HTTPError as exc:
                count(type(exc).__name__)
                await asyncio.sleep(0.1)

    async with httpx.AsyncClient(base_url=base, timeout=a.timeout * 3, limits=limits) as client:
        tasks = [asyncio.create_task(client_loop(i, client)) for i in range(a.clients)]
        await asyncio.gather(*tasks)
    return dict(sorted(counts.items()))


def one_run(index: Path, a: argparse.Namespace, tmp: Path, number: int) -> dict[str, int]:
    log = tmp / f"server-{number}.log"
    with open(log, "w") as out:
        proc, base = start_server(index, a, out)
        try:
            import httpx

            with httpx.Client(base_url=base, timeout=2) as client:
                wait_ready(client, proc, log)
            return asyncio.run(load(base, a))
        finally:
            stop(proc)


def run(a: argparse.Namespace) -> int:
    """Run the hostile mix ``--runs`` times; exit status 1 if any answer was a 5xx."""
    results = []
    with tempfile.TemporaryDirectory(prefix="genret-hostile-rag-") as tmp:
        index = build_index(Path(tmp))
        for number in range(1, a.runs + 1):
            counts = one_run(index, a, Path(tmp), number)
            server_errors = sum(v for k, v in counts.items() if k.isdigit() and int(k) >= 500)
            results.append({"run": number, "counts": counts, "5xx": server_errors})
            print(f"run {number}: {a.clients} clients, {a.duration:g} s: {counts}; 5xx: {server_errors}", flush=True)
    if a.json:
        a.json.write_text(json.dumps({"hostile_rag": results, "clients": a.clients, "duration_s": a.duration,
                                      "request_timeout_s": a.timeout, "max_new_tokens": a.max_new_tokens}, indent=1))
    return 1 if any(r["5xx"] for r in results) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    register(parser.add_subparsers(dest="command", required=True))
    a = parser.parse_args(argv)
    return a.func(a)


if __name__ == "__main__":
    sys.exit(main())
