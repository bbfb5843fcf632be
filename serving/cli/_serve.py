"""``genret serve``: the HTTP API over one or more indexes (``serving.http``; settings from flags, then the
environment)."""

from __future__ import annotations

import argparse
import os

from ._common import add_output_flags
from ._flags import add_dtype_flag


def _cmd_serve(a: argparse.Namespace) -> int:
    # OpenMP threads (torch, faiss) spin while they wait by default: with several model threads, and the
    # event loop, on a few cores that makes searches many times slower (bench/README.md, HTTP load test)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from genret.serving.http import Settings, serve

    flags = {"host": a.host, "port": a.port, "api_keys": a.api_key, "trusted_hosts": a.trusted_host,
             "workers": a.workers,
             "max_queue": a.max_queue, "request_timeout_s": a.timeout, "max_body_bytes": a.max_body_bytes,
             "micro_batch": a.micro_batch, "micro_batch_max": a.micro_batch_max,
             "micro_batch_wait_ms": a.micro_batch_wait_ms, "log_level": a.log_level, "access_log": a.access_log,
             "rag_queue_budget": a.rag_queue_budget, "header_timeout_s": a.header_timeout,
             "body_timeout_s": a.body_timeout, "max_connections": a.max_connections,
             "reload_interval_s": a.reload_interval, "max_tokens": a.max_tokens,
             "lazy": a.lazy, "preload": a.preload.split(",") if a.preload else None}
    extra = {}
    if a.demos is not None:
        extra["demos"] = a.demos
    if a.ray is not None:  # the retrievers' index parts as Ray actors behind this server (genret[ray])
        extra["ray"] = {k: v for k, v in (("address", a.ray or None), ("replicas", a.replicas),
                                          ("shards", a.shards), ("num_cpus", a.ray_cpus)) if v is not None}
    generator = {k: v for k, v in (("model", a.generator_model), ("kind", a.generator),
                                   ("base_url", a.base_url), ("dtype", a.dtype)) if v is not None}
    if a.dtype is not None:  # every model the server runs: the dense and generative retrievers and the generator
        extra["retrieval"] = {"dense": {"dtype": a.dtype}, "generative": {"dtype": a.dtype}}
    if generator:
        extra["generator"] = generator
    if a.quiet:  # errors only, no access log, unless asked for
        flags["log_level"], flags["access_log"] = a.log_level or "error", a.access_log or False
    elif a.verbose >= 2 and a.log_level is None:
        flags["log_level"] = "debug"
    # flags given win over the environment (GENRET_SERVER__…, GENRET_GENERATOR__…; merged field by field),
    # which wins over the defaults
    serve(Settings(indexes=a.index, server={k: v for k, v in flags.items() if v is not None}, **extra))
    return 0


def register(sub) -> None:
    """Add ``serve`` to the top-level commands."""
    sv = sub.add_parser("serve", help="serve indexes over HTTP (FastAPI)",
                        description="Every setting can also come from the environment: GENRET_SERVER__NAME "
                        "(e.g. GENRET_SERVER__API_KEYS=k1,k2), GENRET_RETRIEVAL__…; flags win.")
    sv.add_argument("index", nargs="+")
    sv.add_argument("--host", default=None, help="default 127.0.0.1 (or GENRET_SERVER__HOST)")
    sv.add_argument("--port", type=int, default=None, help="default 8000 (or GENRET_SERVER__PORT)")
    sv.add_argument("--api-key", action="append", default=None, metavar="KEY",
                    help="require 'Authorization: Bearer KEY' on /v1/* and /metrics (repeatable)")
    sv.add_argument("--trusted-host", action="append", default=None, metavar="HOST",
                    help="answer only requests whose Host header is HOST (repeatable; HOST:PORT, '*.example.com' "
                    "for subdomains; others get 400); default any (GENRET_SERVER__TRUSTED_HOSTS=a,b)")
    sv.add_argument("--workers", type=int, default=None, help="model pool threads (default 4)")
    sv.add_argument("--max-queue", type=int, default=None, help="requests in flight before 429 (default 64)")
    sv.add_argument("--timeout", type=float, default=None, help="per-request timeout in seconds (default 30)")
    sv.add_argument("--max-tokens", type=int, default=None,
                    help="the most new tokens a chat completion or RAG request may ask for (default 1024)")
    sv.add_argument("--max-body-bytes", type=int, default=None, help="default 1 MiB")
    sv.add_argument("--rag-queue-budget", type=float, default=None, metavar="FRACTION",
                    help="429 for a RAG request the RAG work in flight would not let finish within this fraction "
                    "of --timeout (default 0.7; 0: off)")
    sv.add_argument("--header-timeout", type=float, default=None, metavar="S",
                    help="close a connection whose request headers take longer (default 10)")
    sv.add_argument("--body-timeout", type=float, default=None, metavar="S",
                    help="408 for a request body that takes longer (default 30)")
    sv.add_argument("--max-connections", type=int, default=None,
                    help="open connections; beyond, the longest-waiting idle one is closed, else the slowest body "
                    "upload (408), else 503 (default 1024, kept under the open-file limit)")
    sv.add_argument("--reload-interval", type=float, default=None, metavar="S",
                    help="check the served indexes for a new version this often and swap it in (default 2; 0: off)")
    sv.add_argument("--micro-batch", action=argparse.BooleanOptionalAction, default=None,
                    help="group concurrent searches into batch_search calls (default on)")
    sv.add_argument("--micro-batch-max", type=int, default=None, help="queries per micro-batch (default 32)")
    sv.add_argument("--micro-batch-wait-ms", type=float, default=None,
                    help="extra wait for companions when the model is idle (default 0)")
    sv.add_argument("--lazy", action=argparse.BooleanOptionalAction, default=None,
                    help="load each model on first use (that request waits for it); default: every retriever, "
                    "encoder and the generator is loaded and run once before /readyz says ready (GENRET_SERVER__LAZY)")
    sv.add_argument("--preload", default=None, metavar="NAMES",
                    help="load and warm only these at start, e.g. dense,bm25, 'embeddings', 'generator' (RAG); the "
                    "rest loads on first use")
    sv.add_argument("--generator", choices=("hf", "openai", "llamacpp"), default=None,
                    help="RAG generator: hf (local model, default), openai (an OpenAI-compatible endpoint) or llamacpp "
                    "(a GGUF file through llama-cpp-python)")
    sv.add_argument("--generator-model", default=None,
                    help="RAG generator model (default the packaged SmolLM2-135M-Instruct; GENRET_GENERATOR__MODEL)")
    sv.add_argument("--base-url", default=None, help="openai generator: endpoint base URL, e.g. http://host:port/v1")
    add_dtype_flag(sv, default=None,
                   help="what every served model computes in (default auto: bfloat16 where the CPU has AMX / "
                    "AVX512-BF16 or the GPU has bf16, else int8 for the dense encoder and float32 for language models; "
                    "GENRET_RETRIEVAL__DENSE__DTYPE, "
                    "GENRET_RETRIEVAL__GENERATIVE__DTYPE, GENRET_GENERATOR__DTYPE)")
    sv.add_argument("--demos", default=None, metavar="DIR",
                    help="demonstrations directory for RAG (genret index-demos; GENRET_DEMOS)")
    sv.add_argument("--log-level", choices=("critical", "error", "warning", "info", "debug"), default=None)
    sv.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=None,
                    help="one log line per request (default on)")
    sv.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                    help="serve each index shard as Ray actors (pip install 'genret[ray]'): the cluster at ADDRESS "
                    "('auto', 'ray://host:10001'), or a local one without it; the HTTP API is the same")
    sv.add_argument("--replicas", type=int, default=None, help="--ray: actors per shard (default 1)")
    sv.add_argument("--shards", type=int, default=None, help="--ray: dense shards (default the FM-index's)")
    sv.add_argument("--ray-cpus", type=int, default=None, metavar="N",
                    help="--ray without ADDRESS: the local cluster's CPUs (default all)")
    add_output_flags(sv, logs_info=True)
    sv.set_defaults(func=_cmd_serve)
