"""Generative retrieval (SEAL scoring, UGR prompts): a prompted language model decodes n-grams and titles under
the index's FM-index; the n-grams' evidence scores the units.  Training: ``genret.retrieval.generative.training``."""

from ._prompts import DEFAULT_PROMPTS, Granularity, PromptSpec
from ._retriever import GenerativeConfig, GenerativeRetriever, checkpoint_prompts
from ._seal_scoring import ScoringConfig

__all__ = ["DEFAULT_PROMPTS", "GenerativeConfig", "GenerativeRetriever", "Granularity", "PromptSpec", "ScoringConfig",
           "checkpoint_prompts"]
