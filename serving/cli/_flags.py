"""The retriever flags shared by ``genret search``, ``eval``, ``rag``, ``train reader/labels`` and ``tune``
(generative, hybrid, dense; ``--dtype`` also by ``index`` and ``add``), and the config they make.

Generative flags are passed on only when given, so the defaults stay those of ``GenerativeConfig`` (and the
``GENRET_RETRIEVAL__GENERATIVE__…`` environment of the server)."""

from __future__ import annotations

import argparse

from ._common import usage

# Hits per query, at most: the server's max_k cannot be set higher (ServerConfig; tests/serving/cli/test_cli_bounds.py
# holds the two equal — genret.serving.http is not imported for it: `genret --help` imports nothing heavy)
MAX_K = 10_000
MAX_BATCH = 10_000  # queries per batch_search call (genret search --batch)
# the retriever flags' ranges: dest -> (flag, lowest, highest)
RANGES = {"beam": ("--beam", 1, 1000), "copy_bonus": ("--copy-bonus", 0, 100), "calibration": ("--calibration", 0, 1),
          "rrf_k": ("--rrf-k", 0, 1_000_000), "ef_search": ("--ef-search", 1, 1_000_000),
          "nprobe": ("--nprobe", 1, 1_000_000), "rerank_depth": ("--rerank-depth", 1, 1000),
          "rerank_weight": ("--rerank-weight", 0, 1)}

# genret.core.DTYPES, spelled out: importing genret.core imports pydantic, and `genret --help` imports nothing heavy
DTYPES = ("auto", "float32", "bfloat16", "float16", "int8")
DTYPE_HELP = ("what models compute in: auto (default: bfloat16 where the CPU has AMX / AVX512-BF16 or the GPU has "
              "bf16; else int8 for the dense encoder and float32 for language models), float32, bfloat16, float16, "
              "int8")


def add_dtype_flag(p: argparse.ArgumentParser, default: str | None = "auto", help: str = DTYPE_HELP) -> None:
    p.add_argument("--dtype", choices=DTYPES, default=default, help=help)


def add_generative_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("generative retriever (defaults: GenerativeConfig)")
    g.add_argument("--checkpoint", default=None, help="a `genret train retriever` checkpoint")
    g.add_argument("--beam", type=int, default=None, help="beam size (default 15, SEAL's)")
    g.add_argument("--granularity", choices=("page", "passage", "sentence", "entity"), default=None,
                   help="override the task prompt's granularity (e.g. a checkpoint's saved prompts)")
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
    gen: dict = {"device": a.device, "dtype": getattr(a, "dtype", "auto")}
    for key in ("checkpoint", "beam", "granularity", "copy_bonus", "query_keys", "decode_body", "decode_titles",
                "unigram_scores"):
        if getattr(a, key, None) is not None:
            gen[key] = getattr(a, key)
    if getattr(a, "calibration", None) is not None:
        gen["scoring"] = {"calibration": a.calibration}
    return gen


def add_hybrid_flags(p: argparse.ArgumentParser) -> None:
    """The hybrid retriever's flags; each left out stays unset (see ``hybrid_section``)."""
    p.add_argument("--hybrid", default=None, metavar="NAMES",
                   help="hybrid: member retrievers, e.g. bm25,dense (default: those of the index's fitted weights "
                   "(genret tune), else every retriever the index has — the slow generative one included where "
                   "it has an FM-index)")
    p.add_argument("--fusion", choices=("rrf", "weighted"), default=None,
                   help="hybrid: normalised weighted scores (default) or reciprocal-rank fusion")
    p.add_argument("--rrf-k", type=int, default=None, help="hybrid RRF: rank offset (default 60)")
    p.add_argument("--hybrid-weights", default=None, metavar="W",
                   help="hybrid: e.g. bm25=1,dense=2 (names the members when --hybrid is not given; overrides "
                   "fitted weights)")
    p.add_argument("--hybrid-tuned", default=None, metavar="auto|off|FILE",
                   help="hybrid: fitted weights to use — auto (default: INDEX/hybrid-weights.json when present), "
                   "off, or a file written by `genret tune --out`")


def hybrid_section(a: argparse.Namespace) -> dict:
    """Only the hybrid settings given as flags (what is not given may come from the index's fitted weights)."""
    from genret.core import ConfigError

    hybrid: dict = {}
    if a.hybrid:
        hybrid["retrievers"] = [x.strip() for x in a.hybrid.split(",") if x.strip()]
    for key, value in (("method", a.fusion), ("rrf_k", a.rrf_k), ("tuned", a.hybrid_tuned)):
        if value is not None:
            hybrid[key] = value
    if a.hybrid_weights:
        weights = {}
        for item in a.hybrid_weights.split(","):
            name, sep, value = item.partition("=")
            try:
                weights[name.strip()] = float(value)
            except ValueError:
                sep = ""
            if not sep:
                raise ConfigError(f"--hybrid-weights takes NAME=NUMBER,…, got {item!r}")
        hybrid["weights"] = weights
    return hybrid


def add_retriever_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--retriever", default=None,
                   help="dense, bm25, generative, hybrid (default: hybrid where the index holds fitted fusion "
                   "weights — genret tune, genret adapt —, else the first the index has)")
    p.add_argument("--task", default=None, help="task prompt (generative): qa, fact_check, page, squad, …")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    add_dtype_flag(p)
    add_generative_flags(p)
    add_hybrid_flags(p)
    p.add_argument("--ef-search", type=int, default=None, help="dense HNSW: query-time ef (default: the index's)")
    p.add_argument("--nprobe", type=int, default=None, help="dense IVF: lists probed (default: the index's)")
    p.add_argument("--untrained", action="store_true",
                   help="the index as built: the dense encoder it was built with, not the one `genret train dense` / "
                   "`adapt` fine-tuned, no query memory, no adapted reranker and no fitted fusion (unless "
                   "--hybrid-tuned names one), so the default retriever is the first the index has")
    p.add_argument("--rerank", default=None, metavar="MODEL",
                   help="re-order the first hits with a second model: adapted (the reranker `genret adapt` "
                   "fitted, used by default over the retriever it was fitted over), sentences (a passage's best "
                   "sentence under the index's dense encoder), sentences:MODEL (another bi-encoder), ql (query "
                   "likelihood under the packaged LM), ql:LM (another causal LM), or a sentence-transformers "
                   "cross-encoder's name or path")
    p.add_argument("--rerank-depth", type=int, default=None, help="first-stage hits a query re-ordered (default 20, "
                   "or the adapted reranker's)")
    p.add_argument("--rerank-weight", type=float, default=None, help="the reranker's share of a reranked hit's "
                   "score, 0-1: (1-w)·minmax(first stage) + w·minmax(reranker) (default 1, the reranker alone, or the "
                   "adapted reranker's fitted weight)")
    p.add_argument("--no-rerank", action="store_true", help="no reranking stage, not even the adapted reranker "
                   "(the adapted encoder and fusion still apply)")


def check_task_flag(a: argparse.Namespace) -> str | None:
    """``--task`` when it names a task genret knows — the registry's, the ``--checkpoint``'s prompts, or a pool of
    ``--demos`` — else ``NotFoundError`` listing them (the library falls back to ``generic``; a person who typed a
    name meant it)."""
    from pathlib import Path

    from genret.retrieval import check_task

    task = getattr(a, "task", None)
    if task is None:
        return None
    extra: list[str] = []
    if getattr(a, "checkpoint", None):
        from genret.retrieval.generative import checkpoint_prompts

        extra += checkpoint_prompts(a.checkpoint)
    if getattr(a, "demos", None) and Path(a.demos).is_dir():
        from genret.retrieval.demos import list_tasks

        extra += list_tasks(a.demos)
    return check_task(task, extra)


def check_range(value: float, flag: str, lowest: float, highest: float) -> None:
    """A one-line usage error unless ``lowest <= value <= highest`` (NaN is outside every range)."""
    if lowest <= value <= highest:
        return
    bound = f"at least {lowest}" if value < lowest else f"at most {highest}" if value > highest else \
        f"between {lowest} and {highest}"
    raise usage(f"{flag} must be {bound}, got {value}")


def check_ranges(a: argparse.Namespace) -> None:
    """The retriever flags that were given, each within its range (``RANGES``)."""
    for dest, (flag, lowest, highest) in RANGES.items():
        if getattr(a, dest, None) is not None:
            check_range(getattr(a, dest), flag, lowest, highest)


def retrieval_config(a: argparse.Namespace):
    """The retrieval section from the common retriever flags (``--task`` checked: ``check_task_flag``; numbers:
    ``check_ranges``)."""
    from genret.retrieval import RetrievalConfig

    check_ranges(a)
    check_task_flag(a)

    untrained = getattr(a, "untrained", False)  # the index as built: nothing adapt or train wrote into it
    dense = {"device": a.device, "dtype": a.dtype, "ef_search": a.ef_search, "nprobe": a.nprobe,
             "adapted": not untrained}
    if getattr(a, "no_rerank", False) and getattr(a, "rerank", None):
        raise usage("--no-rerank and --rerank exclude each other")
    rerank = {"model": getattr(a, "rerank", None), "device": a.device, "dtype": a.dtype,
              "adapted": not (untrained or getattr(a, "no_rerank", False))}
    if getattr(a, "rerank_depth", None) is not None:
        rerank["depth"] = a.rerank_depth
    if getattr(a, "rerank_weight", None) is not None:
        rerank["weight"] = a.rerank_weight
    memory = {"adapted": not untrained}
    hybrid = hybrid_section(a)
    if untrained:  # no fitted fusion either, unless --hybrid-tuned names one
        hybrid.setdefault("tuned", "off")
    return RetrievalConfig(dense=dense, generative=generative_section(a), hybrid=hybrid, memory=memory,
                           rerank=rerank)
