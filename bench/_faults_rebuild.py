"""``rebuild-race``: a live ``genret serve`` whose index is rebuilt under it, with model loads in flight (issue 27,
points 3 and 4).

A tiny index (dense, BM25 and FM-index components over six pages) is built in a temporary directory, and a tiny
random Llama with SmolLM2's tokenizer is written next to it (``--packaged``: the packaged SmolLM2-135M-Instruct
instead) as both the generative retriever's LM and the RAG generator.  ``genret serve`` runs over the index in a
subprocess (``--reload-interval 0.5``, ``--preload dense,bm25`` as in the issue: the generative LM and the
generator load on first use).  Then ``--repeats`` times: ``genret index … --out IDX --force`` writes a new
version — its pages' ids alternate between ``a…`` and ``b…`` so that every answer says which version it came
from, and the dense component is dropped and added back (versions 1, 2, 5, 6, … have none) — and right after
each swap, bursts of requests (two generative searches, a dense and a BM25 search, a RAG answer over generative
passages) run together, one after the other, from before the swap (the manifest polled every 10 ms) until the
server has converged or ``--stuck-after`` seconds passed since the swap.

Converged: ``/readyz`` 200, and every retriever of the new version answering from it (dense: 404 when the new
version has none), the RAG answer too.  Reported: **stuck** rebuilds (not converged in time: the last answers and
``/readyz`` are shown), **mixed** answers (hits or passages from two versions in one answer), answers from the
old version after convergence, 5xx answers, and the ERROR lines of the server's log.  Target: 0 stuck, 0 mixed.

    python bench/faults.py rebuild-race [--repeats 20] [--stuck-after 60] [--packaged] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_TOPICS = [("1973 oil crisis", "The 1973 oil crisis began in October 1973 when OAPEC proclaimed an oil embargo."),
           ("Photosynthesis", "Chlorophyll absorbs mostly blue and red light during photosynthesis."),
           ("Python", "Python is a high-level programming language created by Guido van Rossum."),
           ("Mount Everest", "Tenzing Norgay and Edmund Hillary first climbed Mount Everest in 1953."),
           ("Jazz", "Louis Armstrong, a trumpeter from New Orleans, shaped jazz."),
           ("Tea", "Tea is an aromatic beverage prepared by pouring hot water over cured leaves.")]
QUERIES = ["When did the oil embargo start?", "Who created Python?", "Who first climbed Mount Everest?",
           "Which pigment absorbs red and blue light?", "Who shaped jazz in New Orleans?", "How is tea made?"]


def register(subparsers) -> None:
    """Add the ``rebuild-race`` subcommand to ``bench/faults.py``'s subcommands."""
    p = subparsers.add_parser("rebuild-race", help="rebuild a served index under load, model loads in flight: "
                              "0 stuck servers and 0 mixed versions expected", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=20, help="rebuilds (each a new version)")
    p.add_argument("--stuck-after", type=float, default=60.0, help="seconds after a swap by which the server "
                   "must serve the new version")
    p.add_argument("--preload", default="dense,bm25", help="genret serve --preload ('all': the default warm-up "
                   "of everything; 'none': --lazy)")
    p.add_argument("--packaged", action="store_true", help="the packaged SmolLM2-135M-Instruct as LM and "
                   "generator (default: a tiny random Llama with its tokenizer)")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.set_defaults(func=run)


# ---- setup ----------------------------------------------------------------------------------------------------
def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1", **(extra or {})}


def tiny_lm(out: Path) -> Path:
    """A tiny random Llama (tied embeddings) with the packaged SmolLM2 tokenizer: loads in a fraction of a second."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from genret.core import load_tokenizer

    tok = load_tokenizer("smollm2-135m-instruct")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def write_version(tmp: Path, index: Path, version: int) -> tuple[subprocess.Popen, str, bool]:
    """Start writing version ``version`` of the index (``genret index --force``); ``(its process, id prefix, has
    dense)``."""
    prefix = "b" if version % 2 else "a"
    dense = version % 4 not in (1, 2)
    corpus = tmp / f"corpus-{prefix}.jsonl"
    with open(corpus, "w", encoding="utf-8") as fh:
        for i, (title, text) in enumerate(_TOPICS):
            fh.write(json.dumps({"id": f"{prefix}{i}", "title": title, "text": [text]}) + "\n")
    cmd = [sys.executable, "-m", "genret", "index", str(corpus), "--out", str(index), "--bm25", "--fm", "--quiet",
           "--force", *(["--dense", "--device", "cpu"] if dense else [])]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return proc, prefix, dense


def written(proc: subprocess.Popen) -> None:
    """Wait for a ``write_version`` process; its error, if it failed."""
    _, err = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"genret index failed ({proc.returncode}):\n{err[-2000:]}")


class SwapWatch:
    """The moment the index's manifest changes (the new version swapped in), polled every 10 ms on a thread."""

    def __init__(self, index: Path) -> None:
        self.index, self.at = index, None
        self._before = self._manifest()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _manifest(self) -> bytes | None:
        try:
            return (self.index / "manifest.json").read_bytes()
        except OSError:
            return None

    def _poll(self) -> None:
        while not self._stop.wait(0.01):
            now = self._manifest()
            if now is not None and now != self._before:
                self.at = time.monotonic()
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def start_server(index: Path, lm: str, a: argparse.Namespace, log: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = _env({"GENRET_GENERATOR__MODEL": lm, "GENRET_GENERATOR__MAX_NEW_TOKENS": "4",
                "GENRET_GENERATOR__DEVICE": "cpu", "GENRET_RETRIEVAL__GENERATIVE__MODEL": lm,
                "GENRET_RETRIEVAL__GENERATIVE__DEVICE": "cpu", "GENRET_RETRIEVAL__GENERATIVE__BEAM": "2",
                "GENRET_RETRIEVAL__GENERATIVE__MAX_LEN": "2", "GENRET_RETRIEVAL__DENSE__DEVICE": "cpu"})
    warm = [] if a.preload == "all" else ["--lazy"] if a.preload == "none" else ["--preload", a.preload]
    cmd = [sys.executable, "-m", "genret", "serve", str(index), "--port", str(port), "--reload-interval", "0.5",
           "--log-level", "info", "--no-access-log", *warm]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(client, proc: subprocess.Popen, log: Path, limit_s: float = 600) -> None:
    import httpx

    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit("the server was not ready in time")


def stop(proc: subprocess.Popen) -> None:
    """Stop the server this run started (by its PID)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---- one burst of requests --------------------------------------------------------------------------------------
REQUESTS = [("generative", "/v1/search", {"retriever": "generative", "k": 3}),
            ("generative", "/v1/search", {"retriever": "generative", "k": 3}),
            ("dense", "/v1/search", {"retriever": "dense", "k": 3}),
            ("bm25", "/v1/search", {"retriever": "bm25", "k": 3}),
            ("rag", "/v1/rag", {"retriever": "generative", "passages": 2})]


def ask(client, kind: str, path: str, body: dict, query: str) -> dict:
    """One request: its kind, status, the id prefixes (versions) of its hits or passages, and an error's detail."""
    import httpx

    try:
        r = client.post(path, json={"query": query, **body})
    except httpx.HTTPError as exc:
        return {"kind": kind, "status": type(exc).__name__, "versions": [], "n": 0, "detail": str(exc)[:200]}
    data = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
    hits = data.get("hits", data.get("passages", [])) if r.status_code == 200 else []
    versions = sorted({h["provenance"]["wikipedia_id"][0] for h in hits})
    detail = "" if r.status_code == 200 else str(data.get("detail", r.text))[:200]
    return {"kind": kind, "status": r.status_code, "versions": versions, "n": len(hits), "detail": detail}


def burst(client, pool: ThreadPoolExecutor, round_: int) -> list[dict]:
    query = QUERIES[round_ % len(QUERIES)]
    return list(pool.map(lambda req: ask(client, *req, query), REQUESTS))


def converged(answers: list[dict], ready: int, new: str, dense: bool) -> bool:
    """Every answer from the new version (dense: 404 when it has none), and /readyz 200."""
    for a in answers:
        if a["kind"] == "dense" and not dense:
            if a["status"] != 404:
                return False
        elif a["status"] != 200 or a["versions"] != [new] and (a["kind"] != "rag" or a["versions"]):
            return False
    return ready == 200


# ---- the race -------------------------------------------------------------------------------------------------
def one_rebuild(client, pool: ThreadPoolExecutor, tmp: Path, index: Path, version: int,
                a: argparse.Namespace) -> dict:
    """Write version ``version`` while bursts of requests run, from before its swap until the server serves it
    (or ``--stuck-after`` seconds after the swap)."""
    watch = SwapWatch(index)
    proc, new, dense = write_version(tmp, index, version)
    statuses: Counter = Counter()
    mixed, after, bursts, took, ready = 0, 0, 0, None, None
    answers: list[dict] = []
    try:
        while watch.at is None or time.monotonic() - watch.at < a.stuck_after:
            if watch.at is None and proc.poll() is not None and proc.returncode:
                break
            answers = burst(client, pool, version + bursts)
            bursts += 1
            statuses.update(f"{x['kind']} {x['status']}" for x in answers)
            mixed += sum(len(x["versions"]) > 1 for x in answers)
            ready = client.get("/readyz").status_code
            if watch.at is not None and converged(answers, ready, new, dense):
                took = time.monotonic() - watch.at
                break
    finally:
        watch.close()
        written(proc)
    if took is not None:  # and it stays converged: one more burst, all from the new version
        check = burst(client, pool, version + bursts)
        statuses.update(f"{x['kind']} {x['status']}" for x in check)
        mixed += sum(len(x["versions"]) > 1 for x in check)
        after = sum(bool(x["versions"]) and x["versions"] != [new] for x in check)
    out = {"version": version, "ids": new, "dense": dense, "converged_s": None if took is None else round(took, 2),
           "bursts": bursts, "mixed": mixed, "old_after_converged": after, "statuses": dict(statuses)}
    if took is None:
        out["last"] = answers
        out["readyz"] = client.get("/readyz").text[:300] if ready != 200 else "200"
    return out


def race(tmp: Path, a: argparse.Namespace) -> dict:
    import httpx

    index, log = tmp / "idx", tmp / "server.log"
    lm = "smollm2-135m-instruct" if a.packaged else str(tiny_lm(tmp / "tiny-lm"))
    written(write_version(tmp, index, 0)[0])
    proc, base = start_server(index, lm, a, log)
    rounds = []
    try:
        with httpx.Client(base_url=base, timeout=120) as client, ThreadPoolExecutor(len(REQUESTS)) as pool:
            wait_ready(client, proc, log)
            burst(client, pool, 0)  # version 0 served, its lazy parts loaded
            for version in range(1, a.repeats + 1):
                r = one_rebuild(client, pool, tmp, index, version, a)
                rounds.append(r)
                state = f"converged in {r['converged_s']} s" if r["converged_s"] is not None else "STUCK"
                print(f"version {version} ({r['ids']}…, {'with' if r['dense'] else 'no'} dense): {state}, "
                      f"{r['bursts']} bursts, mixed {r['mixed']}, old after {r['old_after_converged']}; "
                      f"{r['statuses']}", flush=True)
                if proc.poll() is not None:
                    print(f"the server exited with {proc.returncode}", flush=True)
                    break
    finally:
        stop(proc)
    errors = [line for line in log.read_text(errors="replace").splitlines() if " ERROR " in f" {line} "]
    return {"rounds": rounds, "errors_logged": errors}


def run(a: argparse.Namespace) -> int:
    """Run the race; exit status 1 if a rebuild was stuck or an answer mixed versions."""
    with tempfile.TemporaryDirectory(prefix="genret-rebuild-race-") as tmp:
        result = race(Path(tmp), a)
    rounds = result["rounds"]
    stuck = sum(r["converged_s"] is None for r in rounds) + (a.repeats - len(rounds))
    mixed = sum(r["mixed"] for r in rounds)
    old = sum(r["old_after_converged"] for r in rounds)
    five = sum(v for r in rounds for k, v in r["statuses"].items() if k.split()[-1].startswith("5"))
    times = sorted(r["converged_s"] for r in rounds if r["converged_s"] is not None)
    median = times[len(times) // 2] if times else None
    print(f"{a.repeats} rebuilds: stuck {stuck}, mixed versions {mixed}, old version after convergence {old}, "
          f"5xx {five}, ERROR lines logged {len(result['errors_logged'])}; converged in median {median} s, "
          f"max {times[-1] if times else None} s", flush=True)
    for line in result["errors_logged"][:10]:
        print(f"  logged: {line[:300]}")
    for r in rounds:
        if r["converged_s"] is None:
            print(f"  stuck at version {r['version']}: readyz {r['readyz']}; last answers {r['last']}")
    if a.json:
        a.json.write_text(json.dumps({"rebuild_race": result, "stuck": stuck, "mixed": mixed, "old_after": old,
                                      "5xx": five, "repeats": a.repeats, "preload": a.preload,
                                      "packaged": a.packaged}, indent=1))
    return 1 if stuck or mixed else 0
