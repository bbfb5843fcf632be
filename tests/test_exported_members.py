"""Each package's public surface (in the style of httpx's ``tests/test_exported_members.py``): what ``__all__`` says is
exactly what the package offers, and it is the curated list below — adding or removing a public name is a decision
made here, on purpose, not a side effect of an import."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SURFACES = {
    "genret": [
        "Hit", "Index", "IndexConfig", "RagConfig", "RetrievalConfig", "Retriever", "__version__", "build_index",
        "create_app", "evaluate", "load_generator", "load_retriever", "open_pipeline", "predict", "read_corpus",
        "score",
    ],
    "genret.core": [
        "ConfigError", "DEFAULT_DENSE_MODEL", "DEFAULT_LM", "DTYPES", "GenretError", "IndexFormatError",
        "InputError", "NotFoundError", "load_tokenizer", "loading_model", "model_load_lock", "native_bf16",
        "progress_bar", "quantize_int8", "read_versioned_json", "resolve_checkpoint", "resolve_device",
        "resolve_dtype", "resolve_lm", "resolve_model_path", "restore_interrupted", "sha256_file", "staged_dir",
        "torch_dtype", "write_json_atomic", "write_lock",
    ],
    "genret.indexing": [
        "ADAPTED_DENSE", "ADAPTED_MEMORY", "ADAPTED_RERANK", "BM25Config", "BM25Params", "Component", "DenseConfig",
        "DenseParams", "Encoder", "FMParams", "Index", "IndexConfig", "LuceneIndex", "Manifest", "Page",
        "QueryMemory", "ReadStats", "SENTENCE_RERANK_MODEL", "SentenceTransformerEncoder", "StoreParams",
        "StoredUnit", "Unit", "UnitConfig", "UnitStore", "adapted_reranker", "add_to_index", "available_components",
        "build_index", "build_index_ray", "configure_search", "dense_component", "drop_adapted_reranker",
        "encoder_model", "load_faiss", "open_lucene", "open_text", "place_index",
        "query_encoder", "ray_session", "read_corpus", "read_manifest", "read_query_memory", "rebuild_dense",
        "seal_manifest", "sentence_spans", "unit_text", "verify_index", "write_adapted_dense",
        "write_adapted_reranker", "write_manifest", "write_query_memory",
    ],
    "genret.indexing.fm": [
        "FMConfig", "FMQueries", "FM_DIR", "TOKENIZER_DIR", "build_fm", "build_shard", "encode_range",
        "encode_texts", "fm_component", "load_fm", "load_fm_tokenizer", "merge_next_tokens", "shard_dir",
        "unit_tokens",
    ],
    "genret.retrieval": [
        "BM25Retriever", "BM25SearchConfig", "CrossEncoderReranker", "DEFAULT_MEMBER_WEIGHTS", "Demo", "DensePair",
        "DenseRetriever", "DenseSearchConfig", "DenseTrainConfig", "GenerativeConfig", "GenerativeRetriever",
        "Generator", "GeneratorConfig", "Hit", "HybridConfig", "HybridRetriever", "MemoryRetriever",
        "MemorySearchConfig", "Provenance", "QueryLikelihoodReranker", "REGISTRY", "RagConfig", "RagPipeline",
        "RerankConfig", "RerankTrainConfig", "RerankedRetriever", "Reranker", "RetrievalConfig", "Retriever",
        "SentenceReranker", "TASKS", "Task", "available_retrievers", "base_retrievers", "blend", "blended_order",
        "build_memory", "check_task", "default_members", "fine_tune_dense", "fine_tune_reranker", "first_stage",
        "hit_texts", "load_generator", "load_hybrid", "load_ray_retriever", "load_reranker", "load_retriever",
        "memory_encoder", "memory_from_kilt", "open_pipeline", "pairs_from_kilt", "rerank_settings", "reranker_texts",
        "retriever_granularities", "with_rerank",
    ],
    "genret.retrieval.generative": [
        "DEFAULT_PROMPTS", "GenerativeConfig", "GenerativeRetriever", "Granularity", "PromptSpec", "ScoringConfig",
        "Stepper", "checkpoint_prompts",
    ],
    "genret.retrieval.generative.training": ["TrainConfig", "TrainTask", "train_retriever"],
    "genret.retrieval.demos": [
        "DEMO_SOURCES", "DemoSource", "DemoTrainConfig", "build_demo_pool", "list_tasks", "load_demo_source",
        "train_demos",
    ],
    "genret.retrieval.rag": [
        "ANSWER_TASKS", "AnswerSpan", "AnswerTask", "Candidate", "Citation", "Completion", "EndpointError",
        "GENERATORS", "GenerationCancelled", "Generator", "GeneratorConfig", "HFGenerator", "LabelHead",
        "OpenAIGenerator", "Prompt", "RagAnswer", "RagConfig", "RagPipeline", "SpanReader", "build_prompt",
        "default_demos", "fit_label_head", "fit_label_head_on_claims", "fit_reader", "fit_span_reader",
        "held_out_predictions", "load_generator", "prompt_size", "readable_prefix", "resolve_answer_task",
        "stop_when",
    ],
    "genret.retrieval.hybrid": [
        "CALIBRATED_MEMBERS", "DEFAULT_MEMBER_WEIGHTS", "DevInfo", "HybridConfig", "HybridRetriever", "IndexInfo",
        "Objective", "TunedFusion", "effective_hybrid", "fitted_default", "fuse", "fused_hits", "fused_order",
        "member_contributions", "read_tuned", "weights_path", "write_tuned",
    ],
    "genret.eval": [
        "AdaptReport", "EvalReport", "KEEP_RULE", "LEVELS", "LevelMetrics", "RAG_SETTINGS", "RerankFit", "SuiteConfig",
        "adapt", "adapt_reranker", "compare_rag", "dev_callback", "downstream_scores", "evaluate", "evaluate_rag",
        "gain_text", "held_out_split", "ir_scores", "load_suite", "normalize_answer", "paired_p", "predict",
        "predict_rag", "previous_adaptation", "rag_table", "read_kilt", "read_qrels", "retrieval_scores", "run_suite",
        "score", "tune_fusion", "write_demo", "write_kilt", "write_trec_run",
    ],
    "genret.serving": ["ServerConfig", "Settings", "create_app", "main"],
    "genret.serving.cli": ["main"],
    "genret.serving.http": ["ServerConfig", "Settings", "create_app", "serve"],
}


def public_members(module: types.ModuleType) -> list[str]:
    """Public names the module holds, other than its subpackages and modules."""
    names = {name for name in dir(module) if not name.startswith("_") and name != "annotations"}  # __future__
    names |= set(getattr(module, "__all__", ()))  # lazily loaded names are listed, not yet present
    return sorted(n for n in names if not isinstance(getattr(module, n), types.ModuleType))


@pytest.mark.parametrize("package", sorted(SURFACES))
def test_exported_members(package):
    module = importlib.import_module(package)
    assert sorted(module.__all__) == sorted(SURFACES[package]), "a public name was added or removed: update SURFACES"
    assert public_members(module) == sorted(module.__all__), "a public attribute is missing from __all__"


def test_the_surface_test_can_fail(monkeypatch):
    """A name leaking into a package (an import without an underscore alias) is caught."""
    import genret.eval

    monkeypatch.setattr(genret.eval, "Path", Path, raising=False)
    assert public_members(genret.eval) != sorted(genret.eval.__all__)


def test_every_package_of_the_tree_is_a_surface():
    """Every folder holding an ``__init__.py`` is a package listed here (and so installed: see pyproject)."""
    found = {"genret"} | {"genret." + ".".join(p.parent.relative_to(ROOT).parts)
                          for top in ("core", "indexing", "retrieval", "serving", "eval")
                          for p in (ROOT / top).rglob("__init__.py")}
    assert found == set(SURFACES)


def test_genret_imports_from_a_folder_with_its_own_eval_and_retrieval(tmp_path):
    """A user's working directory with its own ``eval/`` and ``retrieval/`` packages shadows nothing of genret's."""
    for name in ("eval", "retrieval", "indexing", "serving", "core"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"MINE = {name!r}\n")
    code = ("import genret.eval, genret.retrieval, genret.indexing, genret.core, eval, retrieval\n"
            "print(genret.eval.__file__); print(genret.retrieval.evaluate if False else 'ok'); print(eval.MINE)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    first, _, mine = out.stdout.splitlines()
    assert Path(first).resolve().is_relative_to(ROOT) and mine == "eval"


@pytest.mark.slow
def test_the_wheel_installs_genret_and_nothing_else(tmp_path):
    """The built wheel holds one top-level package, ``genret`` (every subpackage, the web page, the demo questions);
    installed alone, it imports from a folder that has its own ``eval/`` and ``retrieval/``."""
    src = tmp_path / "src"  # the source files (not runs/, .venv/): the build writes build/ and *.egg-info beside them
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             capture_output=True, text=True, check=True)
    for name in filter(None, tracked.stdout.split("\0")):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                           "-q", "-w", str(tmp_path / "dist")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("genret-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"genret", wheel.name.split("-py")[0] + ".dist-info"}
    for package in SURFACES:
        assert "/".join(package.split(".")) + "/__init__.py" in names, package
    assert {"genret/serving/http/static/index.html", "genret/eval/demo_questions.json"} <= set(names)
    assert not [n for n in names if n.startswith(("genret/tests/", "genret/bench/"))]
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
                           str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    installed = sorted(p.name for p in site.iterdir() if not p.name.endswith(".dist-info"))
    assert installed == ["bin", "genret"]  # bin: the console script
    user = tmp_path / "user"
    for name in ("eval", "retrieval"):
        (user / name).mkdir(parents=True)
        (user / name / "__init__.py").write_text("")
    code = "import genret.eval, genret.retrieval, genret.serving; print(genret.eval.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=user, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert Path(out.stdout.strip()).resolve().is_relative_to(site)
