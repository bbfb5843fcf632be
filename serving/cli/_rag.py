"""``genret rag``, and the pipeline the RAG flags describe (``genret eval --rag`` and ``genret train reader`` /
``labels`` build theirs here too): thin parsers over ``retrieval.open_pipeline``."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import ExitStack

from ._common import add_output_flags, text_arg, usage
from ._flags import add_retriever_flags, retrieval_config

NO_INDEX = "none"


def add_rag_flags(p: argparse.ArgumentParser) -> None:
    """Flags shared by ``genret rag`` and ``genret eval --rag`` (the retriever flags come from the caller)."""
    g = p.add_argument_group("RAG")
    g.add_argument("--passages", type=int, default=3, help="retrieved passages in the prompt (0: no retrieval)")
    g.add_argument("--demos", default=None, metavar="DIR", help="demonstrations directory (`genret index-demos`)")
    g.add_argument("--n-demos", type=int, default=2, help="demonstrations in the prompt")
    g.add_argument("--demo-source", choices=("udr", "bm25", "random"), default="udr")
    g.add_argument("--max-passage-tokens", type=int, default=200)
    g.add_argument("--labels", default=None, metavar="A,B,…",
                   help="label tasks: this label set instead of the task's, e.g. SUPPORTS,REFUTES,NOT ENOUGH INFO")
    g.add_argument("--label-calibration", choices=("content-free", "batch", "none"), default=None,
                   help="label tasks: contextual calibration by content-free inputs, by the batch's mean label "
                   "distribution, or none (the default: best on mini-KILT train with the packaged model)")
    g.add_argument("--span-reader", default=None, metavar="packaged|greedy|FILE",
                   help="short answers: the packaged span reader (default), constrained greedy decoding, or a "
                   "reader fitted by `genret train reader`")
    g.add_argument("--label-head", default=None, metavar="packaged|none|FILE",
                   help="label tasks: the packaged label head (default; the packaged model's SUPPORTS / REFUTES), "
                   "rank classification only (none), or a head fitted by `genret train labels`")
    g.add_argument("--generator", choices=("hf", "openai", "llamacpp"), default="hf",
                   help="hf: local model (transformers); openai: OpenAI-compatible endpoint; llamacpp: a GGUF file "
                   "through llama-cpp-python (pip install 'genret[llamacpp]')")
    g.add_argument("--generator-model", default=None,
                   help="HF name/path (hf), the endpoint's model name (openai), a .gguf path (llamacpp)")
    g.add_argument("--base-url", default=None, help="openai: endpoint base URL, e.g. http://127.0.0.1:8000/v1")
    g.add_argument("--max-new-tokens", type=int, default=None)
    g.add_argument("--gen-batch-size", type=int, default=None, help="prompts per generation batch")


def generator_config(a: argparse.Namespace):
    from genret.retrieval import GeneratorConfig

    fields = {"kind": a.generator, "device": a.device, "dtype": getattr(a, "dtype", "auto")}
    for name, value in (("model", a.generator_model), ("base_url", a.base_url),
                        ("max_new_tokens", a.max_new_tokens), ("batch_size", a.gen_batch_size)):
        if value is not None:
            fields[name] = value
    return GeneratorConfig(**fields)


def rag_config(a: argparse.Namespace):
    from genret.retrieval import RagConfig

    fields = {}
    if a.labels:
        fields["labels"] = tuple(x.strip() for x in a.labels.split(",") if x.strip())
    if a.label_calibration:
        fields["label_calibration"] = a.label_calibration
    if getattr(a, "span_reader", None):
        fields["span_reader"] = a.span_reader
    if getattr(a, "label_head", None):
        fields["label_head"] = a.label_head
    return RagConfig(passages=a.passages, demos=a.n_demos if a.demos else 0, demo_source=a.demo_source,
                     max_passage_tokens=a.max_passage_tokens, **fields)


def open_from_args(a: argparse.Namespace, stack: ExitStack, config):
    """The pipeline the flags describe (the index, if any, is closed by ``stack``)."""
    from genret.indexing import Index
    from genret.retrieval import load_generator, open_pipeline

    index = None if a.index == NO_INDEX else stack.enter_context(Index(a.index))
    return open_pipeline(index, load_generator(generator_config(a)), retriever=a.retriever,
                         retrieval=config, demos_dir=a.demos, config=rag_config(a), device=a.device)


def _print_answer(result, as_json: bool) -> None:
    if as_json:
        d = result.to_dict()
        d.pop("prompt")
        print(json.dumps(d, ensure_ascii=False))
        return
    print(result.answer)
    for c in result.citations:
        p = c.hit.provenance
        print(f"  [{c.number}] {p.title} [{p.wikipedia_id} ¶{p.start_paragraph_id}]")
    if not result.citations and result.passages:
        print("  (no citation; passages shown: " + ", ".join(
            f"[{i}] {h.provenance.title}" for i, h in enumerate(result.passages, 1)) + ")")


def _cmd_rag(a: argparse.Namespace) -> int:
    """``genret rag INDEX "question"`` or ``genret rag INDEX --input FILE [--out FILE]``."""
    from genret.eval import predict_rag, read_kilt, write_kilt

    config = retrieval_config(a)  # --task checked first
    if (a.question is None) == (a.input is None):
        raise usage('give either a question or --input FILE: genret rag INDEX "question"')
    if a.question is not None:
        text_arg(a.question, "question")
    with ExitStack() as stack:
        pipeline = open_from_args(a, stack, config)
        if a.question is not None:
            _print_answer(pipeline.answer(a.question, task=a.task), a.json)
            return 0
        records = read_kilt(a.input)
        preds = predict_rag(pipeline, records, task_name=a.task, progress=not a.quiet)
    if a.out:
        write_kilt(a.out, preds)
        print(f"{len(preds)} answers -> {a.out}", file=sys.stderr)
    else:
        for p in preds:
            print(json.dumps(p, ensure_ascii=False))
    return 0


def register(sub) -> None:
    """Add ``rag`` to the top-level commands."""
    rg = sub.add_parser("rag", help="answer a question from retrieved passages (+ demonstrations)",
                        description='genret rag INDEX "question" | genret rag INDEX --input TASK.jsonl --out P.jsonl'
                        " (INDEX may be `none`: no retrieval)")
    rg.add_argument("index", metavar="INDEX|none")
    rg.add_argument("question", nargs="?", default=None)
    rg.add_argument("--input", default=None, help="batch mode: KILT-format records (input, id)")
    rg.add_argument("--out", default=None, help="batch mode: write KILT predictions here")
    add_retriever_flags(rg)
    add_rag_flags(rg)
    rg.add_argument("--json", action="store_true")
    add_output_flags(rg)
    rg.set_defaults(func=_cmd_rag)
