"""Retrieval-augmented generation: generators (local Hugging Face or an OpenAI-compatible endpoint), the answer
tasks and prompt layout, and the pipeline that retrieves, prompts, generates and maps citations back; fitting its
two trainable parts, the span reader (``fit_span_reader``, ``genret train reader``) and the label head
(``fit_label_head_on_claims``, ``genret train labels``).

``genret.retrieval.open_pipeline`` builds a pipeline from names; ``RagPipeline`` takes the parts directly.
"""

from ._backends import GENERATORS, load_generator
from ._generator import Completion, GenerationCancelled, Generator, GeneratorConfig, Prompt, stop_when
from ._label_head import LabelHead
from ._label_head_fit import fit_label_head, fit_label_head_on_claims, held_out_predictions
from ._local import HFGenerator
from ._openai import EndpointError, OpenAIGenerator
from ._pipeline import Citation, RagAnswer, RagConfig, RagPipeline, default_demos
from ._prompt import ANSWER_TASKS, AnswerTask, build_prompt, prompt_size, readable_prefix, resolve_answer_task
from ._reader import Candidate, SpanReader
from ._reader_fit import fit_reader, fit_span_reader
from ._spans import AnswerSpan

__all__ = [
    "ANSWER_TASKS", "AnswerSpan", "AnswerTask", "Candidate", "Citation", "Completion", "EndpointError", "GENERATORS",
    "GenerationCancelled", "Generator", "GeneratorConfig", "HFGenerator", "LabelHead", "OpenAIGenerator", "Prompt",
    "RagAnswer", "RagConfig", "RagPipeline", "SpanReader", "build_prompt", "default_demos", "fit_label_head",
    "fit_label_head_on_claims", "fit_reader", "fit_span_reader", "held_out_predictions", "load_generator",
    "prompt_size", "readable_prefix", "resolve_answer_task", "stop_when",
]
