"""The retriever flags shared by ``genret search``, ``eval``, ``rag`` and ``tune``, and the config they make.

Generative flags are passed on only when given, so the defaults stay those of ``GenerativeConfig`` (and the
``GENRET_RETRIEVAL__GENERATIVE__…`` environment of the server)."""

from __future__ import annotations

import argparse

from ._cli_tune import add_hybrid_flags, hybrid_section


def add_generative_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("generative retriever (defaults: GenerativeConfig)")
    g.add_argument("--checkpoint", default=None, help="a `genret train retriever` checkpoint")
    g.add_argument("--beam", type=int, default=None, help="beam size (default 15, SEAL's)")
    g.add_argument("--copy-bonus", type=float, default=None,
                   help="log-probability bonus for the query's content tokens while decoding")
    g.add_argument("--calibration", type=float, default=None,
                   help="λ in [0,1]: weigh keys by P(n|q) against the model's own P(n|empty query) (default 1)")
    g.add_argument("--no-query-keys", dest="query_keys", action="store_false", default=None,
                   help="do not add the query's own n-grams as keys")
    g.add_argument("--no-decode-body", dest="decode_body", action="store_false", default=None,
                   help="do not decode body n-grams (query keys and unigrams only: fastest)")
    g.add_argument("--no-decode-titles", dest="decode_titles", action="store_false", default=None,
                   help="do not decode titles")
    g.add_argument("--no-unigrams", dest="unigram_scores", action="store_false", default=None,
                   help="no SEAL unigram scores")


def generative_section(a: argparse.Namespace) -> dict:
    """The generative section from the flags that were given."""
    gen: dict = {"device": a.device}
    for key in ("checkpoint", "beam", "copy_bonus", "query_keys", "decode_body", "decode_titles", "unigram_scores"):
        if getattr(a, key, None) is not None:
            gen[key] = getattr(a, key)
    if getattr(a, "calibration", None) is not None:
        gen["scoring"] = {"calibration": a.calibration}
    return gen


def add_retriever_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--retriever", default=None,
                   help="dense, bm25, generative, hybrid (default: the first the index has)")
    p.add_argument("--task", default=None, help="task prompt (generative): qa, fact_check, page, squad, …")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    add_generative_flags(p)
    add_hybrid_flags(p)
    p.add_argument("--ef-search", type=int, default=None, help="dense HNSW: query-time ef")
    p.add_argument("--nprobe", type=int, default=None, help="dense IVF: lists probed")


def retrieval_config(a: argparse.Namespace):
    """The retrieval section from the common retriever flags."""
    from retrieval import RetrievalConfig

    dense = {"device": a.device, "ef_search": a.ef_search, "nprobe": a.nprobe}
    return RetrievalConfig(dense=dense, generative=generative_section(a), hybrid=hybrid_section(a))
