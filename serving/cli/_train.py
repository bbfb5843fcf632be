"""``genret train``: ``retriever`` (fine-tune the generative retriever, ``retrieval.generative.training``), ``demos``
(the UDR demonstration retriever, with LM feedback, ``retrieval.demos``), ``reader`` (the span reader of short answers,
``retrieval.rag``) and ``labels`` (the label head of fact checking, ``retrieval.rag``): one row each in ``TRAINERS``.

Nothing heavy is imported at module level (``genret --help`` stays instant).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from contextlib import ExitStack
from typing import NamedTuple

from ._common import add_output_flags, task_files, usage
from ._flags import add_retriever_flags, retrieval_config
from ._rag import NO_INDEX, add_rag_flags, generator_config, open_from_args, rag_config
from ._train_dense import cmd_train_dense, dense_flags
from ._train_memory import cmd_train_memory, memory_flags
from ._train_rerank import cmd_train_rerank, rerank_flags

_MIXED = {"float32": "no", "bfloat16": "bf16", "float16": "fp16"}  # --dtype names → accelerate's


def _cmd_train_retriever(a: argparse.Namespace) -> int:
    from genret.eval import dev_callback, read_kilt
    from genret.indexing import Index
    from genret.retrieval import GenerativeConfig
    from genret.retrieval.generative.training import TrainConfig, TrainTask, train_retriever

    tasks = task_files(a.task, "--task")
    try:
        config = TrainConfig(
            model=a.model, tasks=[TrainTask(name=n, file=f) for n, f in tasks.items()],
            corpus_pairs=a.corpus_pairs, pseudo_labels=a.pseudo_labels, pseudo_queries=a.pseudo_queries,
            epochs=a.epochs, max_steps=a.max_steps, batch_size=a.batch_size, gradient_accumulation_steps=a.grad_accum,
            lr=a.lr, schedule=a.schedule, warmup_ratio=a.warmup_ratio, warmup_steps=a.warmup_steps,
            mixed_precision=_MIXED.get(a.mixed_precision, a.mixed_precision),
            freeze_embeddings=a.freeze_embeddings, freeze_layers=a.freeze_layers,
            prompt_kind=a.prompt_kind, n_vectors=a.n_vectors, train_lm=not a.prompts_only, min_len=a.min_len,
            max_len=a.max_len, max_records=a.max_records, rank_loss=a.rank_loss, rank_epochs=a.rank_epochs,
            rank_margin=a.rank_margin, rank_negatives=a.rank_negatives, rank_weight=a.rank_weight,
            rank_gen_weight=a.rank_gen_weight, device=a.device, seed=a.seed, save_every=a.save_every)
    except ValueError as exc:  # pydantic's ValidationError: say what is wrong, not the whole input
        msgs = [f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in getattr(exc, "errors", list)()]
        raise usage("train retriever: " + ("; ".join(msgs) or str(exc))) from None
    with Index(a.index) as index:
        dev = task_files(a.dev, "--dev")
        callback = dev_callback(index, dev, records=a.dev_records,
                                generative_config=GenerativeConfig(device=a.device, beam=a.beam)) if dev else None
        summary = train_retriever(config, index, a.out, resume=a.resume, read_records=read_kilt,
                                  on_epoch_end=callback, progress=not a.quiet)
    print(json.dumps(summary, indent=1))
    return 0


def _cmd_train_demos(a: argparse.Namespace) -> int:
    from genret.core import ConfigError
    from genret.retrieval.demos import DemoTrainConfig, train_demos
    from genret.retrieval.rag import GeneratorConfig

    tasks = {}
    for item in a.task or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--task takes NAME=FILE, got {item!r}")
        tasks[name] = path
    config = DemoTrainConfig(candidates=a.candidates, rounds=a.rounds, epochs=a.epochs, batch_size=a.batch_size,
                             lr=a.lr, max_queries=a.max_queries, model=a.encoder, device=a.device, seed=a.seed,
                             skip_bad=a.skip_bad)
    generator = GeneratorConfig(model=a.generator_model, device=a.device)  # loaded once the inputs are checked
    summary = train_demos(a.demos, tasks, generator, a.out, config, progress=not a.quiet, force=a.force)
    print(json.dumps(summary, indent=1))
    return 0


def _cmd_train_reader(a: argparse.Namespace) -> int:
    """``genret train reader INDEX TRAIN.jsonl --task squad --out reader.json``: fit the span reader's weights on
    training questions answered through this pipeline (its retriever, passages and generator)."""
    from genret.eval import normalize_answer
    from genret.retrieval.rag import SpanReader, fit_span_reader

    config = retrieval_config(a)  # --task checked first
    records = _training_records(a.train, a.max_records)
    base = SpanReader(focus=a.focus, max_words=a.max_words)
    with ExitStack() as stack:
        pipeline = open_from_args(a, stack, config)
        reader, stats = fit_span_reader(pipeline, records, normalize=normalize_answer, task=a.task, l2=a.l2,
                                        base=base, folds=a.folds, progress=not a.quiet)
    model = a.generator_model or "the packaged model"
    reader = reader.model_copy(update={"prefilter": a.prefilter,
                                       "fitted_on": f"{reader.fitted_on}, {a.train}, retriever "
                                                    f"{a.retriever or 'default'}, generator {model}"})
    reader.save(a.out)
    print(json.dumps({**stats, "out": a.out}, indent=1))
    return 0


def _cmd_train_labels(a: argparse.Namespace) -> int:
    """``genret train labels INDEX TRAIN.jsonl --task scifact [--also TASK INDEX TRAIN.jsonl …] --out head.json``: fit
    the label head on training claims answered through these pipelines (one generator, its hidden states)."""
    from genret.indexing import Index
    from genret.retrieval import load_generator, open_pipeline
    from genret.retrieval.rag import fit_label_head_on_claims

    retrieval = retrieval_config(a)  # --task checked first
    groups = [(a.task, a.index, a.train)] + [tuple(x) for x in a.also or ()]
    depth = _depth(a.depth)
    config = rag_config(a).model_copy(update={"label_head": "none"})  # the features, not a head's decisions
    with ExitStack() as stack:
        generator = load_generator(generator_config(a))
        stack.callback(generator.close)
        data = []
        for task, index, train in groups:
            records = _training_records(train, a.max_records)
            opened = None if index == NO_INDEX else stack.enter_context(Index(index))
            data.append((open_pipeline(opened, generator, retriever=a.retriever, retrieval=retrieval,
                                       demos_dir=a.demos, config=config, device=a.device), records, task))
        head, stats = fit_label_head_on_claims(data, depth=depth, l2s=[float(x) for x in a.l2.split(",")],
                                               folds=a.folds, progress=not a.quiet)
    head = head.model_copy(update={"fitted_on": f"{head.fitted_on}; " + "; ".join(
        f"{t} {tr} over {i}" for t, i, tr in groups) + f"; retriever {a.retriever or 'default'}, "
        f"{a.passages} passages, generator {a.generator_model or 'the packaged model'}"})
    head.save(a.out)
    print(json.dumps({**stats, "out": a.out}, indent=1))
    return 0


def _training_records(path: str, limit: int | None) -> list:
    """The KILT records of a training file (the first ``limit`` when given); InputError when there are none."""
    from genret.core import InputError
    from genret.eval import read_kilt

    records = read_kilt(path)[:limit] if limit else read_kilt(path)
    if not records:
        raise InputError(f"{path}: no records")
    return records


def _depth(text: str) -> tuple[float, float]:
    from genret.core import InputError

    try:
        parts = [float(x) for x in text.split("-")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or not all(0.0 <= f <= 1.0 for f in parts):
        raise InputError(f"--depth {text!r}: a fraction of the model's depth, or two (LO-HI), each in [0, 1]")
    return (parts[0], parts[-1])


def _retriever_flags(tg) -> None:
    _add_data_flags(tg)
    _add_model_flags(tg)
    _add_rank_flags(tg)
    tg.add_argument("--beam", type=int, default=5, help="beam of the dev evaluation")
    tg.add_argument("--save-every", type=int, default=0, help="also checkpoint every N updates")
    tg.add_argument("--resume", action="store_true", help="continue the run checkpointed in --out")
    tg.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    tg.add_argument("--seed", type=int, default=13, help="seed of sampling, shuffling and initialisation")


def _add_data_flags(tg) -> None:
    """The index, the output, and what is trained on."""
    tg.add_argument("index", help="an index with an fm component")
    tg.add_argument("--out", required=True, help="checkpoint directory (use it with --checkpoint)")
    tg.add_argument("--task", action="append", metavar="NAME=FILE", help="KILT-format training file of a task")
    tg.add_argument("--dev", action="append", metavar="NAME=FILE", help="dev file evaluated after each epoch")
    tg.add_argument("--dev-records", type=int, default=100, help="dev records evaluated")
    tg.add_argument("--corpus-pairs", type=int, default=0, help="self-supervised pairs from the corpus")
    tg.add_argument("--pseudo-labels", choices=("none", "bm25", "dense"), default="none",
                    help="pseudo-queries from the corpus, labelled by this retriever of the index (no labels needed)")
    tg.add_argument("--pseudo-queries", type=int, default=0,
                    help="pseudo-queries to label (0: as many as --corpus-pairs, else 100)")


def _add_model_flags(tg) -> None:
    """The starting model, the optimisation and the prompts (generation stage)."""
    tg.add_argument("--model", default=None, help="LM to start from (default: the index tokenizer's model); a "
                    "checkpoint directory also brings its prompt vectors")
    tg.add_argument("--epochs", type=int, default=1, help="epochs of the generation stage (0: rank stage only)")
    tg.add_argument("--max-steps", type=int, default=None, help="at most this many updates per stage")
    tg.add_argument("--max-records", type=int, default=None, help="records used per task file")
    tg.add_argument("--batch-size", type=int, default=8, help="pairs per micro-batch (per process)")
    tg.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer update")
    tg.add_argument("--lr", type=float, default=5e-5, help="peak learning rate of the LM")
    tg.add_argument("--schedule", choices=("linear", "cosine", "constant_with_warmup", "constant"),
                    default="linear", help="learning-rate decay after warmup, per stage")
    tg.add_argument("--warmup-ratio", type=float, default=0.05, help="warmup share of each stage's updates")
    tg.add_argument("--warmup-steps", type=int, default=None, help="warmup updates (overrides --warmup-ratio)")
    tg.add_argument("--dtype", "--mixed-precision", dest="mixed_precision", default="auto",
                    choices=("auto", "float32", "bfloat16", "float16", "no", "bf16", "fp16"),
                    help="autocast precision; weights and checkpoints stay float32 (auto, the default: bfloat16 "
                    "where the CPU or GPU multiplies bf16 natively, else float32; bf16 on CPU uses CPU autocast)")
    tg.add_argument("--freeze-embeddings", action="store_true", help="freeze the input (and tied output) embeddings")
    tg.add_argument("--freeze-layers", type=int, default=0,
                    help="freeze the lowest N transformer layers (of encoder and decoder for seq2seq models)")
    tg.add_argument("--min-len", type=int, default=2, help="shortest body-span target (tokens)")
    tg.add_argument("--max-len", type=int, default=5, help="longest body-span target (tokens)")
    tg.add_argument("--prompt-kind", choices=("discrete", "continuous", "hybrid"), default="discrete",
                    help="task prompts: text, learned vectors, or both")
    tg.add_argument("--n-vectors", type=int, default=8, help="learned prompt vectors per task")
    tg.add_argument("--prompts-only", action="store_true", help="learn only prompt vectors (LM frozen)")


def _add_rank_flags(tg) -> None:
    """The LTRGR-style rank stage."""
    tg.add_argument("--rank-loss", action="store_true",
                    help="after the generation epochs, a rank stage: margin loss gold vs BM25 hard negatives")
    tg.add_argument("--rank-epochs", type=int, default=1, help="epochs of the rank stage")
    tg.add_argument("--rank-margin", type=float, default=1.0, help="margin between gold and negative unit scores")
    tg.add_argument("--rank-negatives", type=int, default=3, help="hard negatives per query")
    tg.add_argument("--rank-weight", type=float, default=1.0, help="weight of the rank loss")
    tg.add_argument("--rank-gen-weight", type=float, default=1.0,
                    help="weight of the generation loss in the rank stage (0: rank loss only)")


def _demos_flags(p) -> None:
    p.add_argument("demos", help="a demos directory (`genret index-demos`) holding the tasks' pools")
    p.add_argument("--task", action="append", metavar="NAME=FILE", required=True,
                   help="training queries of a task (KILT or JSONL {id?, input, output}); repeatable")
    p.add_argument("--out", required=True, help="output demos directory (trained encoder + re-indexed pools)")
    p.add_argument("--generator-model", default="smollm2-135m-instruct", help="LM whose likelihoods score demos")
    p.add_argument("--encoder", default=None, help="bi-encoder to start from (default: the pools' encoder)")
    p.add_argument("--candidates", type=int, default=8, help="candidates scored a query")
    p.add_argument("--rounds", type=int, default=2, help="mining rounds")
    p.add_argument("--epochs", type=int, default=1, help="epochs a round")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--max-queries", type=int, default=1000, help="training queries a task")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (encoder and generator)")
    p.add_argument("--skip-bad", action="store_true", help="skip malformed training lines")
    p.add_argument("--force", action="store_true", help="replace an existing output directory")


def _reader_flags(tr) -> None:
    tr.add_argument("index")
    tr.add_argument("train", help="KILT-format records with answers")
    tr.add_argument("--out", required=True, help="the reader's JSON file")
    tr.add_argument("--max-records", type=int, default=None, help="the first N records only")
    tr.add_argument("--l2", type=float, default=1.0, help="L2 penalty on the standardised weights")
    tr.add_argument("--folds", type=int, default=5, help="cross-validation folds for the held-out exact match "
                    "(0: none)")
    tr.add_argument("--focus", type=int, default=2, help="sentences the candidates come from")
    tr.add_argument("--max-words", type=int, default=6, help="longest candidate, in words")
    tr.add_argument("--prefilter", type=int, default=32, help="the saved reader scores with the model only the "
                    "pieces ranked this high by the other features (0: all; fitting always scores all)")
    add_retriever_flags(tr)
    add_rag_flags(tr)


def _labels_flags(tr) -> None:
    tr.add_argument("index", help=f"the index the claims' passages come from ({NO_INDEX}: closed book)")
    tr.add_argument("train", help="KILT-format records whose answer is a label")
    tr.add_argument("--also", nargs=3, action="append", metavar=("TASK", "INDEX", "TRAIN"),
                    help="more training claims of another task with the same labels (repeatable)")
    tr.add_argument("--out", required=True, help="the head's JSON file")
    tr.add_argument("--max-records", type=int, default=None, help="the first N records of each file only")
    tr.add_argument("--l2", default="100,300,1000", help="L2 penalties to choose from by held-out accuracy "
                    "(comma-separated)")
    tr.add_argument("--folds", type=int, default=5, help="cross-validation folds for the held-out accuracy (0: none; "
                    "then the middle penalty)")
    tr.add_argument("--depth", default="0.6", help="the layers whose hidden states the head reads, as a fraction of "
                    "the model's depth (LO-HI: their mean)")
    add_retriever_flags(tr)
    add_rag_flags(tr)


class Trainer(NamedTuple):
    """One ``genret train WHAT``: what it trains, its flags and the command that runs it."""

    usage: str  # in ``genret --help``'s line for ``train``
    help: str
    description: str | None
    flags: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# WHAT → its trainer: retrieval.generative.training, retrieval.demos, retrieval.rag (reader, label head)
TRAINERS: dict[str, Trainer] = {
    "retriever": Trainer(
        "`genret train retriever INDEX --out DIR …`",
        "fine-tune the generative retriever (supervised, self-supervised, pseudo-labelled, rank loss)",
        "Fine-tune the generative retriever on accelerate (CPU, GPU, `accelerate launch` for several GPUs). Without "
        "labels: --corpus-pairs N --pseudo-labels bm25 trains on the index's corpus alone (CorpusBrain-style pairs "
        "plus keyword pseudo-queries labelled by the index's BM25 or dense retriever). --rank-loss adds an "
        "LTRGR-style second stage (margin between a gold unit's and BM25 hard negatives' span scores).",
        _retriever_flags, _cmd_train_retriever),
    "dense": Trainer(
        "`genret train dense INDEX TRAIN.jsonl`",
        "fine-tune the index's dense encoder on a task (kept in the index, used by default)",
        "Fine-tune the dense encoder the index was built with on a KILT training file (multiple-negatives ranking "
        "loss, BM25 hard negatives), re-encode the index with it into its dense-adapted component (search, eval, "
        "serve and rag use it; --untrained compares with the base encoder) and report R-Precision on a held-out "
        "share of the file before and after.",
        dense_flags, cmd_train_dense),
    "rerank": Trainer(
        "`genret train rerank INDEX TRAIN.jsonl`",
        "train a cross-encoder reranker on a task (kept in the index where it helps, used by default)",
        "Train a cross-encoder (from the index's dense encoder as built, the packaged MiniLM by default) on a KILT "
        "training file, query + gold passage against hard negatives from BM25 and dense; fit how much of its score "
        "to blend into --over's (default: the hybrid) on a held-out share of the file, by cross-validation; keep "
        "it in the index (rerank-adapted: search, eval, serve and rag use it over that retriever; --no-rerank or "
        "--untrained leave it out) only where the blend lifts the held-out fold. genret adapt runs this too.",
        rerank_flags, cmd_train_rerank),
    "memory": Trainer(
        "`genret train memory INDEX TRAIN.jsonl`",
        "keep a task's training questions in the index as its query memory (a hybrid member by fitted weights)",
        "Embed the questions of a KILT training file with the index's dense encoder and keep them, with the units of "
        "their gold passages, in the index (memory-adapted): the memory retriever scores the gold passages of a "
        "query's nearest training questions. The hybrid uses it where fitted weights name it (genret adapt fits "
        "them; or genret tune INDEX DEV.jsonl --members dense,bm25,memory); --untrained leaves it out.",
        memory_flags, cmd_train_memory),
    "demos": Trainer(
        "`genret train demos DEMOS_DIR --task NAME=FILE --out DIR`",
        "train the UDR demonstration retriever with LM feedback", None,
        _demos_flags, _cmd_train_demos),
    "reader": Trainer(
        "`genret train reader INDEX TRAIN.jsonl --task squad --out reader.json`",
        "fit the span reader (short answers) on training questions",
        "genret train reader INDEX TRAIN.jsonl --task squad --out reader.json; then "
        "`genret rag … --span-reader reader.json`",
        _reader_flags, _cmd_train_reader),
    "labels": Trainer(
        "`genret train labels INDEX TRAIN.jsonl --task scifact --out head.json`",
        "fit the label head (fact checking) on training claims",
        "genret train labels INDEX TRAIN.jsonl --task scifact [--also TASK INDEX TRAIN.jsonl …] --out head.json; "
        "then `genret rag … --label-head head.json`",
        _labels_flags, _cmd_train_labels),
}


def register(sub) -> None:
    """Add ``train`` and its models (``TRAINERS``) to the top-level commands."""
    usages = [t.usage for t in TRAINERS.values()]
    tr = sub.add_parser("train", help=f"train a model: {usages[0]}, " + " or ".join(usages[1:]))
    trs = tr.add_subparsers(dest="what", required=True, metavar="WHAT")
    for what, trainer in TRAINERS.items():
        p = trs.add_parser(what, help=trainer.help, description=trainer.description)
        trainer.flags(p)
        add_output_flags(p, logs_info=True)
        p.set_defaults(func=trainer.run)
