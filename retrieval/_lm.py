"""Loading language models for generation and generative retrieval: causal (Llama-class) or seq2seq (T5/BART).

Any Hugging Face name or local directory works, and the packaged SmolLM2 GGUF (``smollm2-135m-instruct``,
see ``genret.indexing._models``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from genret.indexing import load_tokenizer, loading_model, resolve_checkpoint, resolve_device

log = logging.getLogger("genret")


@dataclass
class LoadedLM:
    """A model, its tokenizer, whether it is encoder-decoder, and the device it sits on."""

    model: object
    tokenizer: object
    seq2seq: bool
    device: str
    spec: str


def load_lm(spec: str, device: str = "auto", dtype: str = "auto") -> LoadedLM:
    """Load a causal or seq2seq LM; the kind comes from the model's config (``is_encoder_decoder``)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the weight-loading bar
    device = resolve_device(device)
    torch_dtype = {"auto": torch.float32 if device == "cpu" else torch.bfloat16, "float32": torch.float32,
                   "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    with loading_model(spec, "language model"):
        path = resolve_checkpoint(spec)
        config = AutoConfig.from_pretrained(path)
        seq2seq = bool(getattr(config, "is_encoder_decoder", False))
        cls = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
        model = cls.from_pretrained(path, dtype=torch_dtype).to(device).eval()
    log.info("language model %s (%s) on %s", spec, "seq2seq" if seq2seq else "causal", device)
    return LoadedLM(model, load_tokenizer(spec), seq2seq, device, spec)
