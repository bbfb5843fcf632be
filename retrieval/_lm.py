"""Loading language models for generation and generative retrieval: causal (Llama-class) or seq2seq (T5/BART).

Any Hugging Face name or local directory works, and the packaged SmolLM2 GGUF (``smollm2-135m-instruct``,
see ``genret.core``: model resolution).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from genret.core import (
    load_tokenizer,
    loading_model,
    quantize_int8,
    resolve_checkpoint,
    resolve_device,
    resolve_dtype,
    torch_dtype,
)

log = logging.getLogger("genret")


@dataclass
class LoadedLM:
    """A model, its tokenizer, whether it is encoder-decoder, the device it sits on and the dtype it computes in."""

    model: object
    tokenizer: object
    seq2seq: bool
    device: str
    spec: str
    dtype: str = "float32"


def load_lm(spec: str, device: str = "auto", dtype: str = "auto", *, role: str = "language model",
            tokenizer=None, lite: bool = False) -> LoadedLM:
    """Load a causal or seq2seq LM; the kind comes from the model's config (``is_encoder_decoder``).

    ``dtype`` as ``genret.core.resolve_dtype`` reads it (``auto``: bfloat16 where native, else float32 — int8
    is a choice, not a default, for language models: it lost 16 points of squad passage R-Precision in the
    generative retriever); an int8 model has its linear layers dynamically quantized after loading.  ``tokenizer``: one
    already loaded for this model (spares loading it again; a pad token is set as ``load_tokenizer`` does).
    ``lite``: for inference by the decoder (``generative._lm_steps``) only — a Llama-class checkpoint is loaded
    as the plain-torch model of ``_llama`` (same logits, no transformers import); other models as usual.
    """
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device, role=role, fallback="float32")
    with loading_model(spec, "language model"):
        path = resolve_checkpoint(spec)
        model = None
        if lite:
            from ._llama import lite_causal_lm

            model = lite_causal_lm(path, torch_dtype(dtype), device)
        seq2seq, plain = False, model is not None
        if model is None:
            model, seq2seq = _transformers_lm(path, dtype, device)
        if dtype == "int8":
            quantize_int8(model)
    log.info("%s %s (%s%s) on %s (%s)", role, spec, "seq2seq" if seq2seq else "causal",
             ", plain torch" if plain else "", device, dtype)
    if tokenizer is None:
        tokenizer = load_tokenizer(spec)
    elif tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedLM(model, tokenizer, seq2seq, device, spec, dtype)


def _transformers_lm(path: str, dtype: str, device: str):
    """``(model, seq2seq)`` loaded by transformers' auto classes."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the weight-loading bar
    config = AutoConfig.from_pretrained(path)
    seq2seq = bool(getattr(config, "is_encoder_decoder", False))
    cls = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    return cls.from_pretrained(path, dtype=torch_dtype(dtype)).to(device).eval(), seq2seq
