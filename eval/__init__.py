"""Evaluation: KILT-format predictions, the official KILT metrics (retrieval and downstream, equal to KILT's own
scripts), IR metrics through ir-measures on TREC runs and qrels (BEIR folders too), evaluation suites with paired
significance tests, RAG evaluation, fitting hybrid weights on dev data, adapting an index to a task (``adapt``:
train, fit, report held out), the dev evaluation run while the retriever trains (``dev_callback``), and the
built-in demo task."""

# predictions and reports
from ._runner import LEVELS, dev_callback, evaluate, predict
from ._report import EvalReport, LevelMetrics
from ._rag_eval import RAG_SETTINGS, compare_rag, evaluate_rag, predict_rag, rag_table
from ._suite import SuiteConfig, load_suite, run_suite
from ._fusion_tune import tune_fusion
from ._adapt import AdaptReport, adapt, held_out_split, previous_adaptation
from ._adapt_rerank import RerankFit, adapt_reranker
from ._keep_rule import KEEP_RULE, gain_text

# KILT files and metrics
from ._kilt_io import read_kilt, write_kilt
from ._retrieval_metrics import retrieval_scores
from ._score import downstream_scores, score
from ._downstream_metrics import normalize_answer

# TREC runs and qrels, IR metrics (ir-measures), paired significance tests
from ._trec import read_qrels, write_trec_run
from ._ir_metrics import ir_scores, paired_p

# the built-in demo task (a corpus and questions from the standard library's docstrings)
from ._demo_task import write_demo

__all__ = [
    "AdaptReport", "EvalReport", "KEEP_RULE", "LEVELS", "LevelMetrics", "RAG_SETTINGS", "RerankFit", "SuiteConfig",
    "adapt", "adapt_reranker", "compare_rag", "dev_callback", "downstream_scores", "evaluate", "evaluate_rag",
    "gain_text", "held_out_split", "ir_scores", "load_suite", "normalize_answer", "paired_p", "predict", "predict_rag",
    "previous_adaptation", "rag_table", "read_kilt", "read_qrels", "retrieval_scores", "run_suite", "score",
    "tune_fusion", "write_demo", "write_kilt", "write_trec_run",
]
