"""Server settings: from flags, environment (``GENRET_…``, nested with ``__``) or defaults.

List settings (``server.api_keys``, ``server.preload``) read from the environment as JSON
(``'["k1","k2"]'``) or comma-separated (``GENRET_SERVER__API_KEYS=k1,k2``).  The RAG endpoints read the
``generator`` section (``GENRET_GENERATOR__MODEL``, ``GENRET_GENERATOR__MAX_NEW_TOKENS``, …), the ``rag``
section (``GENRET_RAG__PASSAGES``, …) and ``demos`` (``GENRET_DEMOS``, a demonstrations directory).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from genret.retrieval import GeneratorConfig, RagConfig, RetrievalConfig

from ._ray_serving import RayServing

StrList = Annotated[list[str], NoDecode]


class ServerConfig(BaseModel):
    """HTTP-level settings: address, limits, admission control, the model pool and micro-batching."""

    model_config = ConfigDict(extra="forbid")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    # request limits
    default_k: int = Field(10, ge=1)
    max_k: int = Field(100, ge=1, le=10_000, description="hits per query, at most (the CLI's -k has the same "
                       "ceiling)")
    max_query_chars: int = Field(2000, ge=1)
    max_batch: int = Field(64, ge=1, description="queries in one /v1/search/batch request")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="larger request bodies get 413")
    api_keys: StrList = Field(default_factory=list, description="Bearer keys; empty: no authentication")
    trusted_hosts: StrList = Field(default_factory=list, description="Host header values answered (a name or "
                                   "address, optionally with :port; '*.example.com' for its subdomains); others get "
                                   "400 InvalidHost.  Empty: any Host (set it when the server is reachable by "
                                   "name, against DNS rebinding)")
    request_timeout_s: float = Field(30.0, gt=0, description="model work of one request; then 504")
    max_tokens: int = Field(1024, ge=1, description="the most new tokens a chat completion may ask for (max_tokens, "
                            "max_completion_tokens; more: 400); without them the answer gets generator.max_new_tokens")
    # the bounded model pool and admission control
    workers: int = Field(4, ge=1, description="threads running model work (search, encoding, decoding)")
    max_queue: int = Field(64, ge=1, description="requests in flight (queued or running); more get 429")
    retry_after_s: int = Field(1, ge=0, description="Retry-After sent with 429 and 503")
    lazy: bool = Field(False, description="load each retriever, encoder and the generator on first use (the first "
                       "request waits for it; /readyz is 200 at once); default: all of them are loaded and run once "
                       "at start, and /readyz answers 503 until then")
    preload: StrList = Field(default_factory=list,
                             description="what to load and warm at start, instead of everything served: retriever "
                                         "names (on every index offering them), 'embeddings' and 'generator' (RAG); "
                                         "the rest loads on first use")
    reload_interval_s: float = Field(2.0, ge=0, description="check the served indexes for a new version this "
                                     "often and swap it in (0: never; a changed index is then reopened only "
                                     "when a retriever is first loaded over it)")
    shutdown_timeout_s: float = Field(30.0, ge=0, description="graceful shutdown: wait this long for requests")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    access_log: bool = Field(True, description="one log line per request (uvicorn's access log)")
    # micro-batching of concurrent single searches
    micro_batch: bool = Field(True, description="group concurrent searches with the same parameters")
    micro_batch_max: int = Field(32, ge=1, description="queries in one micro-batch")
    micro_batch_wait_ms: float = Field(0.0, ge=0, description="extra wait for companions when the model is idle")
    rag_micro_batch_max: int = Field(8, ge=1, description="questions in one RAG micro-batch (1: RAG answers are not "
                                     "batched; on a CPU batched generation is no faster, bench/README.md)")
    rag_queue_budget: float = Field(0.7, ge=0, le=1, description="RAG requests get 429 (not a later 504) when the "
                                    "RAG work in flight, at its measured seconds per question, would take more than "
                                    "this fraction of request_timeout_s to answer them; 0: no such check")
    # slow or idle clients (below HTTP routing: the connection guard of _server)
    header_timeout_s: float = Field(10.0, gt=0, description="a request's headers must arrive within this time of "
                                    "the connection opening (or of the previous response); else it is closed")
    body_timeout_s: float = Field(30.0, gt=0, description="a request's body must arrive within this time of its "
                                  "headers; else 408 and the connection is closed")
    keep_alive_s: float = Field(5.0, gt=0, description="an idle keep-alive connection is closed after this time")
    max_connections: int = Field(1024, ge=1, description="open connections (also kept below the open-file limit); "
                                 "a new one beyond it closes the longest-waiting connection with no request "
                                 "in progress (idle, or headers unfinished), else the slowest body upload (408), "
                                 "else it is refused with 503")

    @field_validator("api_keys", "preload", "trusted_hosts", mode="before")
    @classmethod
    def _split(cls, value):
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [x.strip() for x in text.split(",") if x.strip()]
        return value


class Settings(BaseSettings):
    """Everything ``genret serve`` needs; each component reads only its own section."""

    model_config = SettingsConfigDict(env_prefix="GENRET_", env_nested_delimiter="__", extra="forbid")
    indexes: list[Path] = Field(default_factory=list, description="index directories to serve")
    server: ServerConfig = Field(default_factory=ServerConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig,
                                       description="the RAG generator (/v1/rag, /v1/chat/completions), loaded "
                                                   "and warmed at start (on first use when server.lazy or "
                                                   "server.preload leaves it out)")
    rag: RagConfig = Field(default_factory=RagConfig, description="RAG defaults (passages, demonstrations)")
    demos: Path | None = Field(None, description="demonstrations directory (genret index-demos); none: no "
                                                 "demonstrations")
    ray: RayServing | None = Field(None, description="serve the retrievers' index parts as Ray actors (genret[ray]; "
                                   "`genret serve --ray`); none: in this process")
