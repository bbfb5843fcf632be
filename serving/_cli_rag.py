"""``genret rag`` and the RAG flags of ``genret eval``: thin parsers over ``retrieval.open_pipeline``."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import ExitStack

from ._cli_common import text_arg

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
    g.add_argument("--generator", choices=("hf", "openai"), default="hf",
                   help="hf: local model; openai: OpenAI-compatible endpoint")
    g.add_argument("--generator-model", default=None, help="HF name/path, or the endpoint's model name")
    g.add_argument("--base-url", default=None, help="openai: endpoint base URL, e.g. http://127.0.0.1:8000/v1")
    g.add_argument("--max-new-tokens", type=int, default=None)
    g.add_argument("--gen-batch-size", type=int, default=None, help="prompts per generation batch")


def _generator_config(a: argparse.Namespace):
    from genret.retrieval import GeneratorConfig

    fields = {"kind": a.generator, "device": a.device, "dtype": getattr(a, "dtype", "auto")}
    for name, value in (("model", a.generator_model), ("base_url", a.base_url),
                        ("max_new_tokens", a.max_new_tokens), ("batch_size", a.gen_batch_size)):
        if value is not None:
            fields[name] = value
    return GeneratorConfig(**fields)


def _rag_config(a: argparse.Namespace):
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


def open_from_args(a: argparse.Namespace, stack: ExitStack, retrieval_config):
    """The pipeline the flags describe (the index, if any, is closed by ``stack``)."""
    from genret.indexing import Index
    from genret.retrieval import load_generator, open_pipeline

    index = None if a.index == NO_INDEX else stack.enter_context(Index(a.index))
    return open_pipeline(index, load_generator(_generator_config(a)), retriever=a.retriever,
                         retrieval=retrieval_config, demos_dir=a.demos, config=_rag_config(a), device=a.device)


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


def cmd_rag(a: argparse.Namespace, retrieval_config) -> int:
    """``genret rag INDEX "question"`` or ``genret rag INDEX --input FILE [--out FILE]``."""
    from genret.eval import predict_rag, read_kilt, write_kilt
    from genret.indexing import GenretError

    if (a.question is None) == (a.input is None):
        raise GenretError('give either a question or --input FILE: genret rag INDEX "question"')
    if a.question is not None:
        text_arg(a.question, "question")
    with ExitStack() as stack:
        pipeline = open_from_args(a, stack, retrieval_config)
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


def cmd_eval_rag(a: argparse.Namespace, task_file: str, retrieval_config) -> int:
    """``genret eval INDEX TASK.jsonl --rag``: answers and provenance scored together (``--compare``: closed
    book vs retrieval vs retrieval + demonstrations, one table)."""
    from genret.eval import compare_rag, evaluate_rag, rag_table

    with ExitStack() as stack:
        pipeline = open_from_args(a, stack, retrieval_config)
        if getattr(a, "compare", False):
            reports = compare_rag(pipeline, task_file, task_name=a.task, max_records=a.max_records,
                                  level=a.level.split(",")[0], progress=not a.quiet)
            print(json.dumps(reports, indent=1) if a.json else f"task {task_file}\n" + rag_table(reports))
            return 0
        report = evaluate_rag(pipeline, task_file, task_name=a.task, max_records=a.max_records,
                              level=a.level.split(",")[0], out=a.out, progress=not a.quiet)
    if a.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"task {report['task']}: {report['records']} records, {report['seconds']:.1f}s")
    for group in ("downstream", "kilt"):
        print(f"  {group:<10} " + "  ".join(f"{k}={v * 100:.1f}" for k, v in report[group].items()))
    print("  retrieval  " + "  ".join(f"{k}={v * 100:.1f}" for k, v in report["retrieval"].items()
                                      if k == "Rprec" or k.startswith("recall@")))
    return 0


def cmd_train_reader(a: argparse.Namespace, retrieval_config) -> int:
    """``genret train reader INDEX TRAIN.jsonl --task squad --out reader.json``: fit the span reader's weights on
    training questions answered through this pipeline (its retriever, passages and generator)."""
    from genret.eval import fit_span_reader
    from genret.retrieval.rag import SpanReader

    records = _training_records(a.train, a.max_records)
    base = SpanReader(focus=a.focus, max_words=a.max_words)
    with ExitStack() as stack:
        pipeline = open_from_args(a, stack, retrieval_config)
        reader, stats = fit_span_reader(pipeline, records, task=a.task, l2=a.l2, base=base, folds=a.folds,
                                        progress=not a.quiet)
    model = a.generator_model or "the packaged model"
    reader = reader.model_copy(update={"prefilter": a.prefilter,
                                       "fitted_on": f"{reader.fitted_on}, {a.train}, retriever "
                                                    f"{a.retriever or 'default'}, generator {model}"})
    reader.save(a.out)
    print(json.dumps({**stats, "out": a.out}, indent=1))
    return 0


def cmd_train_labels(a: argparse.Namespace, retrieval_config) -> int:
    """``genret train labels INDEX TRAIN.jsonl --task scifact [--also TASK INDEX TRAIN.jsonl …] --out head.json``: fit
    the label head on training claims answered through these pipelines (one generator, its hidden states)."""
    from genret.eval import fit_label_head_on
    from genret.indexing import Index
    from genret.retrieval import load_generator, open_pipeline

    groups = [(a.task, a.index, a.train)] + [tuple(x) for x in a.also or ()]
    depth = _depth(a.depth)
    config = _rag_config(a).model_copy(update={"label_head": "none"})  # the features, not a head's decisions
    with ExitStack() as stack:
        generator = load_generator(_generator_config(a))
        stack.callback(generator.close)
        data = []
        for task, index, train in groups:
            records = _training_records(train, a.max_records)
            opened = None if index == NO_INDEX else stack.enter_context(Index(index))
            data.append((open_pipeline(opened, generator, retriever=a.retriever, retrieval=retrieval_config,
                                       demos_dir=a.demos, config=config, device=a.device), records, task))
        head, stats = fit_label_head_on(data, depth=depth, l2s=[float(x) for x in a.l2.split(",")],
                                        folds=a.folds, progress=not a.quiet)
    head = head.model_copy(update={"fitted_on": f"{head.fitted_on}; " + "; ".join(
        f"{t} {tr} over {i}" for t, i, tr in groups) + f"; retriever {a.retriever or 'default'}, "
        f"{a.passages} passages, generator {a.generator_model or 'the packaged model'}"})
    head.save(a.out)
    print(json.dumps({**stats, "out": a.out}, indent=1))
    return 0


def _training_records(path: str, limit: int | None) -> list:
    """The KILT records of a training file (the first ``limit`` when given); InputError when there are none."""
    from genret.eval import read_kilt
    from genret.indexing import InputError

    records = read_kilt(path)[:limit] if limit else read_kilt(path)
    if not records:
        raise InputError(f"{path}: no records")
    return records


def _depth(text: str) -> tuple[float, float]:
    from genret.indexing import InputError

    try:
        parts = [float(x) for x in text.split("-")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or not all(0.0 <= f <= 1.0 for f in parts):
        raise InputError(f"--depth {text!r}: a fraction of the model's depth, or two (LO-HI), each in [0, 1]")
    return (parts[0], parts[-1])


def add_train_labels_parser(trs, add_retriever_flags, handler) -> None:
    """``genret train labels``: its parser (the retriever flags and the handler come from the caller)."""
    tr = trs.add_parser("labels", help="fit the label head (fact checking) on training claims",
                        description="genret train labels INDEX TRAIN.jsonl --task scifact [--also TASK INDEX "
                        "TRAIN.jsonl …] --out head.json; then `genret rag … --label-head head.json`")
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
    tr.add_argument("--quiet", action="store_true")
    tr.set_defaults(func=handler)


def add_train_reader_parser(trs, add_retriever_flags, handler) -> None:
    """``genret train reader``: its parser (the retriever flags and the handler come from the caller)."""
    tr = trs.add_parser("reader", help="fit the span reader (short answers) on training questions",
                        description="genret train reader INDEX TRAIN.jsonl --task squad --out reader.json; then "
                        "`genret rag … --span-reader reader.json`")
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
    tr.add_argument("--quiet", action="store_true")
    tr.set_defaults(func=handler)
