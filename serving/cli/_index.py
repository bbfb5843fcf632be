"""``genret index``, ``add``, ``rebuild-dense``, ``verify`` and ``demo-data``: the commands that build, grow and
check an index directory (and write the demo corpus to index).

Nothing heavy is imported at module level (``genret --help`` stays instant).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._common import add_output_flags, usage
from ._flags import add_dtype_flag

FAISS_FACTORY_HELP = ("any FAISS index_factory string, inner product: e.g. 'HNSW32,Flat', 'IVF4096,PQ48', "
                      "'OPQ64,IVF65536_HNSW32,PQ64' (flat, hnsw, ivfpq: --index-type's)")
VERIFY_DESCRIPTION = (
    "Read every file of the index and compare its sha256 with the one recorded when it was built. Opening an "
    "index (search, serve, eval) hashes files up to 256 MiB in full and checks larger ones by size and a sample "
    "of about 1 MiB; this reads them all (about 1 GB/s). Exit 0 when every file matches; otherwise one line "
    "naming the first file that differs, exit 2.")


def _cmd_index(a: argparse.Namespace) -> int:
    from genret.indexing import BM25Config, DenseConfig, IndexConfig, UnitConfig, available_components, build_index
    from genret.indexing.fm import FMConfig

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


def _cmd_add(a: argparse.Namespace) -> int:
    from genret.indexing import add_to_index, read_manifest

    before = read_manifest(a.index).corpus.sha256 if a.skip_existing else None
    m = add_to_index(a.index, a.corpus, skip_bad=a.skip_bad, corpus_format=a.format, device=a.device,
                     dtype=a.dtype, progress=not a.quiet, field_map=_field_map(a.field_map) or None,
                     skip_existing=a.skip_existing, replace=a.replace)
    if m.corpus.sha256 == before:  # --skip-existing, and nothing new: the index is as it was
        print(f"{a.index}: nothing to add: every page read is already in the index ({m.corpus.pages} pages)")
        return 0
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


def _cmd_verify(a: argparse.Namespace) -> int:
    from genret.indexing import verify_index

    report = verify_index(a.index, progress=not a.quiet)
    if a.json:
        print(json.dumps({"index": a.index, "ok": True, **report}))
    else:
        rate = report["bytes"] / max(report["seconds"], 1e-9) / 1e9
        print(f"{a.index}: {report['files']} files, {report['bytes'] / 1e6:.1f} MB, all match their manifest "
              f"checksums ({report['seconds']:.1f} s, {rate:.2f} GB/s)")
    return 0


def _cmd_demo_data(a: argparse.Namespace) -> int:
    from genret.eval import write_demo

    corpus, questions = write_demo(Path(a.out))
    print(f"wrote {corpus} and {questions}")
    return 0


def register(sub) -> None:
    """Add ``index``, ``add``, ``rebuild-dense``, ``verify`` and ``demo-data`` to the top-level commands."""
    _add_index_parser(sub)
    _add_add_parser(sub)
    _add_rebuild_dense_parser(sub)
    _add_verify_parser(sub)
    dd = sub.add_parser("demo-data", help="write the demo corpus (stdlib docstrings) and its questions")
    dd.add_argument("out")
    add_output_flags(dd)
    dd.set_defaults(func=_cmd_demo_data)


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
    ix.add_argument("--batch-size", type=int, default=None,
                    help="units an encoder batch (default: 16 on a CPU, 64 on a GPU)")
    ix.add_argument("--skip-bad", action="store_true", help="skip malformed records and report a count")
    ix.add_argument("--force", action="store_true", help="replace an existing index directory")
    ix.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                    help="build on Ray (pip install 'genret[ray]'): the cluster at ADDRESS ('auto', "
                    "'ray://host:10001'), or a local one without it")
    ix.add_argument("--shards", type=int, default=None, help="index shards: FM-index shards (one Ray task each with "
                    "--ray), served apart by `genret serve --ray` (default --fm-shards)")
    ix.add_argument("--ray-workers", type=int, default=None, metavar="N",
                    help="--ray: encoder actors (default one per GPU, else half the CPUs)")
    ix.add_argument("--ray-cpus", type=int, default=None, metavar="N", help="--ray without ADDRESS: the local "
                    "cluster's CPUs (default all)")
    add_output_flags(ix)
    ix.set_defaults(func=_cmd_index)


def _add_add_parser(sub) -> None:
    ad = sub.add_parser("add", help="add corpus files to an existing index (every component is updated)")
    ad.add_argument("index")
    ad.add_argument("corpus", nargs="+")
    ad.add_argument("--format", choices=("auto", "jsonl", "kilt", "pyserini", "beir", "tsv"), default="auto",
                    help="as for `genret index`")
    ad.add_argument("--field-map", default=None, metavar="MAP", help="as for `genret index`")
    ad.add_argument("--skip-bad", action="store_true")
    known = ad.add_mutually_exclusive_group()
    known.add_argument("--skip-existing", action="store_true",
                       help="leave out pages whose id is already in the index (default: refuse them)")
    known.add_argument("--replace", action="store_true",
                       help="replace pages whose id is already in the index with the new ones")
    ad.add_argument("--device", default="auto")
    add_dtype_flag(ad)
    add_output_flags(ad)
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
    add_output_flags(rb)
    rb.set_defaults(func=_cmd_rebuild_dense)


def _add_verify_parser(sub) -> None:
    v = sub.add_parser("verify", help="check every byte of an index against its manifest checksums",
                      description=VERIFY_DESCRIPTION)
    v.add_argument("index")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    add_output_flags(v)
    v.set_defaults(func=_cmd_verify)
