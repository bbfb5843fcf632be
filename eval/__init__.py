"""Evaluation: KILT-format predictions, the official KILT metrics, reports."""

from ._kilt_io import read_kilt, write_kilt
from ._runner import LEVELS, evaluate, predict
from ._score import score

__all__ = ["LEVELS", "evaluate", "predict", "read_kilt", "score", "write_kilt"]
