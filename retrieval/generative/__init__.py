"""Generative retrieval (SEAL scoring, UGR prompts): a prompted language model decodes n-grams and titles under
the index's FM-index; the n-grams' evidence scores the units.  Training: ``genret.retrieval.generative.training``.
``Stepper``: one prompt pass, then cheap continuations and teacher-forced log-probabilities over its KV cache
(also what the query-likelihood reranker scores with)."""

from ._lm_steps import Stepper
from ._prompts import DEFAULT_PROMPTS, Granularity, PromptSpec
from ._retriever import GenerativeConfig, GenerativeRetriever, checkpoint_prompts
from ._seal_scoring import ScoringConfig

__all__ = ["DEFAULT_PROMPTS", "GenerativeConfig", "GenerativeRetriever", "Granularity", "PromptSpec", "ScoringConfig",
           "Stepper", "checkpoint_prompts"]
