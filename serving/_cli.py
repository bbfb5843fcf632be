"""``genret``: one console script, thin subcommands over library functions.

Heavy modules (torch, faiss, FastAPI) are imported inside the command functions, so ``--help``
answers at once.  Errors the user can fix print one line on stderr and exit with code 2
(``--debug`` shows the traceback): bad input and settings, and the environment's refusals (a full disk, a
file that cannot be written).  Output cut short by its reader (``genret search --json | head``) ends the
command quietly, with the status of a process stopped by SIGPIPE (141).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from ._cli_common import Parser, UsageError, environment_error, quiet_broken_pipe, usage
from ._cli_demos import add_train_demos_parser
from ._cli_demos import register as register_demos
from ._cli_rag import add_rag_flags, add_train_labels_parser, add_train_reader_parser
from ._cli_retrieval import add_dtype_flag, add_retriever_flags, retrieval_config
from ._cli_search import add_search_parser
from ._cli_serve import register as register_serve
from ._cli_train import add_train_retriever_parser
from ._cli_tune import register as register_tune
from ._cli_verify import register as register_verify

EXIT_USAGE = 2
FAISS_FACTORY_HELP = ("any FAISS index_factory string, inner product: e.g. 'HNSW32,Flat', 'IVF4096,PQ48', "
                      "'OPQ64,IVF65536_HNSW32,PQ64' (flat, hnsw, ivfpq: --index-type's)")
EXIT_BROKEN_PIPE = 128 + 13  # as a process stopped by SIGPIPE


def _cmd_index(a: argparse.Namespace) -> int:
    from genret.indexing import (
        BM25Config,
        DenseConfig,
        FMConfig,
        IndexConfig,
        UnitConfig,
        available_components,
        build_index,
    )

    chosen = [name for name in available_components() if getattr(a, name, False)]
    config = IndexConfig(
        units=UnitConfig(kind=a.unit, window_words=a.window_words, stride=a.stride),
        components=tuple(chosen or available_components()),
        dense=DenseConfig(model=a.model, device=a.device, dtype=a.dtype, batch_size=a.batch_size,
                          index_type=a.index_type,
                          hnsw_m=a.hnsw_m, ivf_nlist=a.ivf_nlist, pq_m=a.pq_m, factory=a.faiss_factory),
        bm25=BM25Config(k1=a.k1, b=a.b),
        fm=FMConfig(tokenizer=a.fm_tokenizer, shards=a.fm_shards, workers=a.fm_workers),
        corpus_format=a.format, skip_bad=a.skip_bad, field_map=_field_map(a.field_map),
    )
    if a.ray is not None:  # the same index directory, built on a Ray cluster (the genret[ray] extra)
        from genret.indexing import build_index_ray

        m = build_index_ray(a.corpus, a.out, config, address=a.ray or None, shards=a.shards or a.fm_shards,
                            workers=a.ray_workers, num_cpus=a.ray_cpus, force=a.force, progress=not a.quiet)
    else:
        if a.shards:
            config = config.model_copy(update={"fm": config.fm.model_copy(update={"shards": a.shards})})
        m = build_index(a.corpus, a.out, config, force=a.force, progress=not a.quiet)
    skipped = f", {m.corpus.skipped} bad record(s) skipped" if m.corpus.skipped else ""
    comps = ", ".join(f"{n} ({c.kind})" for n, c in m.components.items() if n != "store")
    print(f"indexed {m.corpus.pages} pages -> {m.units.count} {m.units.kind} units{skipped}; "
          f"components: {comps}; {m.build_seconds:.1f}s -> {a.out}")
    return 0


def _field_map(spec: str | None) -> dict[str, str]:
    """``--field-map id=_id,title=title,text=body`` → a dict (the reader checks the names)."""
    out: dict[str, str] = {}
    for item in spec.split(",") if spec else []:
        name, eq, key = item.partition("=")
        if not eq:
            raise usage(f"--field-map: {item.strip()!r} is not FIELD=KEY (e.g. id=_id,title=title,text=text)")
        if name.strip() in out:
            raise usage(f"--field-map: {name.strip()!r} mapped twice")
        out[name.strip()] = key.strip()
    return out


def _print_metrics(report: dict) -> None:
    """A compact table: R-Precision, recall@k and answer_in_context@k per level (all of them with --json)."""
    print(f"task {report['task']}: {report['records']} records, retriever {report['retriever']}, "
          f"k={report['k']}, {report['seconds']:.1f}s")
    for level, metrics in report["levels"].items():
        shown = {"R-Prec": metrics["Rprec"]}
        shown.update({f"R@{k.split('@')[1]}": v for k, v in metrics.items() if k.startswith("recall@")})
        shown.update({f"AiC@{k.split('@')[1]}": v for k, v in metrics.items()
                      if k.startswith("answer_in_context@")})
        print(f"  {level:<8} " + "  ".join(f"{k}={v * 100:.1f}" for k, v in shown.items()))
        ir = report.get("ir", {}).get(level)
        if ir:  # ir-measures' names; the means of RR@10 and AP are MRR@10 and MAP
            names = {"RR@10": "MRR@10", "AP": "MAP"}
            print(f"  {'':<8} IR: " + "  ".join(f"{names.get(k, k)}={v * 100:.1f}" for k, v in ir.items())
                  + f"  (qrels: {report['qrels']})")


def _cmd_eval(a: argparse.Namespace) -> int:
    from genret.eval import evaluate, score

    ks = tuple(int(x) for x in a.ks.split(",")) if a.ks else None
    if a.index == "score":  # genret eval score GUESS GOLD
        if len(a.rest) != 2:
            raise usage("usage: genret eval score GUESS.jsonl GOLD.jsonl")
        rank_keys = tuple(x.strip() for x in (a.rank_keys or "wikipedia_id").split(","))
        result = score(a.rest[0], a.rest[1], ks=ks or (1, 5, 10, 20), rank_keys=rank_keys)
        print(json.dumps(result, indent=1))
        return 0
    if a.index == "suite":  # genret eval suite SUITE.toml --out DIR
        from genret.eval import run_suite

        if len(a.rest) != 1 or not a.out:
            raise usage("usage: genret eval suite SUITE.toml --out DIR")
        result = run_suite(a.rest[0], a.out, progress=not a.quiet)
        print(json.dumps({k: v for k, v in result.items() if k != "table"}, indent=1) if a.json else result["table"])
        print(f"results, predictions and plots in {a.out}", file=sys.stderr)
        return 0
    if len(a.rest) != 1:
        raise usage("usage: genret eval INDEX TASK.jsonl")
    if a.k < 1:
        raise usage(f"-k must be at least 1, got {a.k}")
    if a.rag:
        from ._cli_rag import cmd_eval_rag

        return cmd_eval_rag(a, a.rest[0], retrieval_config(a))
    levels = tuple(a.level.split(","))
    report = evaluate(a.index, a.rest[0], a.retriever, a.k, ks=ks or (1, 5, 10, 20, 100), levels=levels,
                      out=a.out, config=retrieval_config(a), task_name=a.task, max_records=a.max_records,
                      progress=not a.quiet, qrels=a.qrels, split=a.split, trec_run=a.trec_run)
    if a.json:
        print(json.dumps(report, indent=1))
    else:
        _print_metrics(report)
    return 0


def _cmd_rag(a: argparse.Namespace) -> int:
    from ._cli_rag import cmd_rag

    return cmd_rag(a, retrieval_config(a))


def _cmd_train_reader(a: argparse.Namespace) -> int:
    from ._cli_rag import cmd_train_reader

    return cmd_train_reader(a, retrieval_config(a))


def _cmd_train_labels(a: argparse.Namespace) -> int:
    from ._cli_rag import cmd_train_labels

    return cmd_train_labels(a, retrieval_config(a))


def _cmd_add(a: argparse.Namespace) -> int:
    from genret.indexing import add_to_index

    m = add_to_index(a.index, a.corpus, skip_bad=a.skip_bad, corpus_format=a.format, device=a.device,
                     dtype=a.dtype, progress=not a.quiet, field_map=_field_map(a.field_map) or None)
    print(f"{a.index}: now {m.corpus.pages} pages, {m.units.count} {m.units.kind} units; components updated: "
          + ", ".join(n for n in m.components if n != "store"))
    return 0


def _cmd_rebuild_dense(a: argparse.Namespace) -> int:
    from genret.indexing import DenseConfig, DenseParams, rebuild_dense

    m = rebuild_dense(a.index, DenseConfig(index_type=a.index_type or "flat", hnsw_m=a.hnsw_m, ivf_nlist=a.ivf_nlist,
                                           pq_m=a.pq_m, device=a.device, factory=a.faiss_factory),
                      progress=not a.quiet)
    params = m.components["dense"].typed_params(DenseParams)
    print(f"rebuilt the dense FAISS index of {a.index} as {params.factory or params.index_type} from the stored "
          "embeddings")
    return 0


def _cmd_demo_data(a: argparse.Namespace) -> int:
    from genret.eval import write_demo

    corpus, questions = write_demo(Path(a.out))
    print(f"wrote {corpus} and {questions}")
    return 0


def _add_index_parser(sub) -> None:
    ix = sub.add_parser("index", help="build an index directory from corpus files")
    ix.add_argument("corpus", nargs="+", help="corpus files (.gz ok): JSONL {id,title,text}, KILT knowledge source, "
                    "Pyserini JSONL {id,contents}, BEIR corpus.jsonl or a BEIR folder, MS MARCO-style .tsv")
    ix.add_argument("--out", required=True, help="index directory to create")
    ix.add_argument("--dense", action="store_true", help="build the dense FAISS component")
    ix.add_argument("--bm25", action="store_true", help="build the BM25 (Lucene, pyserini) component")
    ix.add_argument("--fm", action="store_true", help="build the FM-index (generative retrieval)")
    ix.add_argument("--fm-tokenizer", default="smollm2-135m-instruct",
                    help="tokenizer of the generative retriever's LM (HF name/path or packaged alias)")
    ix.add_argument("--fm-shards", type=int, default=1, help="FM-index shards (built independently)")
    ix.add_argument("--fm-workers", type=int, default=None, metavar="N",
                    help="FM-index tokenizer/shard-builder processes (default: one per CPU on more than 2 CPUs, "
                    "else 1, tokenizing while the corpus is read)")
    ix.add_argument("--k1", type=float, default=0.9, help="BM25 k1")
    ix.add_argument("--b", type=float, default=0.4, help="BM25 b")
    ix.add_argument("--unit", choices=("paragraph", "window", "sentence"), default="paragraph")
    ix.add_argument("--window-words", type=int, default=100, help="words per window (--unit window)")
    ix.add_argument("--stride", type=int, default=None, help="words between window starts")
    ix.add_argument("--format", choices=("auto", "jsonl", "kilt", "pyserini", "beir", "tsv"), default="auto",
                    help="auto: .tsv by name, JSON formats from the first record (wikipedia_id: kilt, _id: beir, "
                    "contents: pyserini, else jsonl)")
    ix.add_argument("--field-map", default=None, metavar="MAP",
                    help="where id, title and text come from: JSON keys, or TSV columns (0-based or header names), "
                    "e.g. id=_id,title=title,text=text or id=0,text=2")
    ix.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2", help="dense encoder")
    ix.add_argument("--index-type", choices=("flat", "hnsw", "ivfpq"), default="flat", help="FAISS index type")
    ix.add_argument("--faiss-factory", default=None, metavar="STRING", help=FAISS_FACTORY_HELP)
    ix.add_argument("--hnsw-m", type=int, default=32)
    ix.add_argument("--ivf-nlist", type=int, default=None, help="IVF lists (default ≈ 4·sqrt(n))")
    ix.add_argument("--pq-m", type=int, default=None, help="PQ sub-quantizers (default dim/8)")
    ix.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    add_dtype_flag(ix)
    ix.add_argument("--batch-size", type=int, default=64)
    ix.add_argument("--skip-bad", action="store_true", help="skip malformed records and report a count")
    ix.add_argument("--force", action="store_true", help="replace an existing index directory")
    ix.add_argument("--quiet", action="store_true", help="no progress bars")
    ix.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                    help="build on Ray (pip install 'genret[ray]'): the cluster at ADDRESS ('auto', "
                    "'ray://host:10001'), or a local one without it")
    ix.add_argument("--shards", type=int, default=None, help="index shards: FM-index shards (one Ray task each with "
                    "--ray), served apart by `genret serve --ray` (default --fm-shards)")
    ix.add_argument("--ray-workers", type=int, default=None, metavar="N",
                    help="--ray: encoder actors (default one per GPU, else half the CPUs)")
    ix.add_argument("--ray-cpus", type=int, default=None, metavar="N", help="--ray without ADDRESS: the local "
                    "cluster's CPUs (default all)")
    ix.set_defaults(func=_cmd_index)


def _add_eval_parser(sub) -> None:
    ev = sub.add_parser("eval", help="evaluate an index on a KILT task file or a BEIR folder, or score KILT guesses",
                        description="genret eval INDEX TASK.jsonl|BEIR_FOLDER|QUERIES --qrels QRELS | "
                        "genret eval score GUESS.jsonl GOLD.jsonl | genret eval suite SUITE.toml --out DIR. "
                        "Reports KILT's metrics and IR metrics through ir-measures (nDCG@10, MRR@10, MAP, R@k).")
    ev.add_argument("index", metavar="INDEX|score|suite")
    ev.add_argument("rest", nargs="+", metavar="FILE")
    add_retriever_flags(ev)
    ev.add_argument("--max-records", type=int, default=None, help="evaluate the first N records only")
    ev.add_argument("-k", type=int, default=100, help="hits retrieved per record")
    ev.add_argument("--ks", default=None, help="cut-offs, e.g. 1,5,10,20,100")
    ev.add_argument("--level", default="page,passage", help="page, passage or both (comma-separated)")
    ev.add_argument("--rank-keys", default=None, help="for `eval score`: e.g. wikipedia_id,start_paragraph_id")
    ev.add_argument("--out", default=None, help="write KILT-format predictions here (suite: output directory)")
    ev.add_argument("--trec-run", default=None, metavar="FILE",
                    help="write the page-level run as a TREC run file (docno = page id, e.g. a BEIR _id)")
    ev.add_argument("--qrels", default=None, metavar="FILE",
                    help="TREC or BEIR qrels for the IR metrics (needed for a query file: queries.jsonl or .tsv)")
    ev.add_argument("--split", default="test", help="BEIR folder: which qrels/SPLIT.tsv")
    ev.add_argument("--json", action="store_true")
    ev.add_argument("--quiet", action="store_true")
    ev.add_argument("--rag", action="store_true", help="answer with RAG and score answers + provenance together "
                    "(INDEX may be `none`: no retrieval)")
    ev.add_argument("--compare", action="store_true", help="with --rag: one table of closed book vs retrieval vs "
                    "retrieval + demonstrations (with --demos)")
    add_rag_flags(ev)
    ev.set_defaults(func=_cmd_eval)


def _add_rag_parser(sub) -> None:
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
    rg.add_argument("--quiet", action="store_true")
    rg.set_defaults(func=_cmd_rag)


def _add_add_parser(sub) -> None:
    ad = sub.add_parser("add", help="add corpus files to an existing index (every component is updated)")
    ad.add_argument("index")
    ad.add_argument("corpus", nargs="+")
    ad.add_argument("--format", choices=("auto", "jsonl", "kilt", "pyserini", "beir", "tsv"), default="auto",
                    help="as for `genret index`")
    ad.add_argument("--field-map", default=None, metavar="MAP", help="as for `genret index`")
    ad.add_argument("--skip-bad", action="store_true")
    ad.add_argument("--device", default="auto")
    add_dtype_flag(ad)
    ad.add_argument("--quiet", action="store_true")
    ad.set_defaults(func=_cmd_add)


def _add_rebuild_dense_parser(sub) -> None:
    rb = sub.add_parser("rebuild-dense", help="rebuild the FAISS index from the stored embeddings (no re-encoding)")
    rb.add_argument("index")
    kind = rb.add_mutually_exclusive_group(required=True)
    kind.add_argument("--index-type", choices=("flat", "hnsw", "ivfpq"), default=None)
    kind.add_argument("--faiss-factory", default=None, metavar="STRING", help=FAISS_FACTORY_HELP)
    rb.add_argument("--hnsw-m", type=int, default=32)
    rb.add_argument("--ivf-nlist", type=int, default=None)
    rb.add_argument("--pq-m", type=int, default=None)
    rb.add_argument("--device", default="auto")
    rb.add_argument("--quiet", action="store_true")
    rb.set_defaults(func=_cmd_rebuild_dense)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="genret", description="Generative, dense and sparse retrieval with KILT-style evaluation.")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_index_parser(sub)
    add_search_parser(sub)
    register_serve(sub)
    _add_eval_parser(sub)
    _add_rag_parser(sub)
    _add_add_parser(sub)
    _add_rebuild_dense_parser(sub)
    tr = sub.add_parser("train", help="train a model: `genret train retriever INDEX --out DIR …`, "
                        "`genret train demos DEMOS_DIR --task NAME=FILE --out DIR` or "
                        "`genret train reader INDEX TRAIN.jsonl --task squad --out reader.json` or "
                        "`genret train labels INDEX TRAIN.jsonl --task scifact --out head.json`")
    trs = tr.add_subparsers(dest="what", required=True, metavar="WHAT")
    add_train_retriever_parser(trs)
    add_train_demos_parser(trs)
    add_train_reader_parser(trs, add_retriever_flags, _cmd_train_reader)
    add_train_labels_parser(trs, add_retriever_flags, _cmd_train_labels)
    register_demos(sub)
    register_tune(sub)
    register_verify(sub)
    dd = sub.add_parser("demo-data", help="write the demo corpus (stdlib docstrings) and its questions")
    dd.add_argument("out")
    dd.set_defaults(func=_cmd_demo_data)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "faiss.loader", "sentence_transformers", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from pydantic import ValidationError

    from genret.indexing import GenretError

    try:
        code = args.func(args)
        sys.stdout.flush()  # output cut short shows here, not as a traceback at exit
        return code
    except BrokenPipeError:
        quiet_broken_pipe()
        return EXIT_BROKEN_PIPE
    except (GenretError, ValidationError, UsageError) as exc:
        if args.debug:
            raise
        msg = " ".join(str(exc).split()) if not isinstance(exc, ValidationError) else _validation_line(exc)
        print(f"genret: error: {msg}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("genret: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        msg = environment_error(exc)
        if msg is None or args.debug:
            raise
        print(f"genret: error: {msg}", file=sys.stderr)
        return EXIT_USAGE


def _validation_line(exc) -> str:
    first = exc.errors()[0]
    return f"invalid setting {'.'.join(str(x) for x in first['loc'])}: {first['msg']}"


if __name__ == "__main__":
    sys.exit(main())
