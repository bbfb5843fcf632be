"""Evaluation: KILT-format predictions, the official KILT metrics, reports."""

from ._kilt_io import read_kilt, write_kilt
from ._runner import LEVELS, evaluate, predict
from ._score import score
from ._suite import SuiteConfig, load_suite, run_suite
from ._train_eval import dev_callback

__all__ = [
    "LEVELS", "SuiteConfig", "dev_callback", "evaluate", "load_suite", "predict", "read_kilt", "run_suite", "score",
    "write_kilt",
]
