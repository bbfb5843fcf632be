"""``genret train retriever``: fine-tune the generative retriever (see ``retrieval._train``)."""

from __future__ import annotations

import argparse
import json

from ._cli_common import task_files, usage

_MIXED = {"float32": "no", "bfloat16": "bf16", "float16": "fp16"}  # --dtype names → accelerate's

def _cmd_train(a: argparse.Namespace) -> int:
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


def add_train_retriever_parser(trs) -> None:
    tg = trs.add_parser(
        "retriever",
        help="fine-tune the generative retriever (supervised, self-supervised, pseudo-labelled, rank loss)",
        description="Fine-tune the generative retriever on accelerate (CPU, GPU, `accelerate launch` for several "
        "GPUs). Without labels: --corpus-pairs N --pseudo-labels bm25 trains on the index's corpus alone "
        "(CorpusBrain-style pairs plus keyword pseudo-queries labelled by the index's BM25 or dense retriever). "
        "--rank-loss adds an LTRGR-style second stage (margin between a gold unit's and BM25 hard negatives' "
        "span scores).")
    _add_data_flags(tg)
    _add_model_flags(tg)
    _add_rank_flags(tg)
    tg.add_argument("--beam", type=int, default=5, help="beam of the dev evaluation")
    tg.add_argument("--save-every", type=int, default=0, help="also checkpoint every N updates")
    tg.add_argument("--resume", action="store_true", help="continue the run checkpointed in --out")
    tg.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    tg.add_argument("--seed", type=int, default=13, help="seed of sampling, shuffling and initialisation")
    tg.add_argument("--quiet", action="store_true")
    tg.set_defaults(func=_cmd_train)


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
