"""A plain-torch Llama for inference: the generative retriever's LM without importing transformers.

transformers' Llama stack costs ~2 s to import on this machine (``torch._dynamo`` through its masking code, its
integrations) — most of a cold ``genret search --retriever generative`` — and its per-layer bookkeeping is paid on
every one of the decoder's many small forward calls.  A Llama-class causal LM is small enough to write down:
RMSNorm, rotary positions, grouped-query attention (``torch``'s ``scaled_dot_product_attention``), a SwiGLU MLP.
``lite_causal_lm`` builds one from a checkpoint folder (``config.json`` + safetensors) when the config is one this
module computes exactly as transformers does (``model_type`` llama, SiLU, no biases, default rotary, one tensor
slice), and returns ``None`` otherwise, so the caller loads the model with transformers.  The torch modules
themselves are in ``_llama_torch`` (imported on first use, with torch).

The model answers the calls the decoder makes of a transformers model (``_lm_steps.Stepper``): ``forward`` with
``input_ids`` or ``inputs_embeds``, ``attention_mask`` over past + new positions, ``position_ids``, a KV cache
(``past_key_values``, filled in place) and ``logits_to_keep``; ``base_model(...)`` for hidden states;
``get_input_embeddings`` / ``get_output_embeddings``; ``new_cache``.  Inference only: no training, no
``generate`` (the RAG generator and training keep transformers).
``tests/retrieval/generative/test_llama.py`` holds its logits to transformers' (float32 and bfloat16) and a whole
generative search to the same ranking.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_SAFE = "model.safetensors"
_SAFE_INDEX = "model.safetensors.index.json"


def lite_config(folder: str | Path) -> dict[str, Any] | None:
    """The checkpoint's config when this module computes that model exactly as transformers does, else ``None``."""
    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or config.get("model_type") != "llama":
        return None
    ropes = [r for r in (config.get("rope_parameters"), config.get("rope_scaling")) if r]
    plain = (config.get("hidden_act", "silu") == "silu" and not config.get("attention_bias")
             and not config.get("mlp_bias") and config.get("pretraining_tp", 1) == 1
             and all(isinstance(r, dict) and r.get("rope_type", r.get("type", "default")) == "default"
                     and "partial_rotary_factor" not in r for r in ropes))
    files = (folder / _SAFE).is_file() or (folder / _SAFE_INDEX).is_file()
    return config if plain and files else None


def _weights(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    if (folder / _SAFE).is_file():
        return load_file(str(folder / _SAFE))
    index = json.loads((folder / _SAFE_INDEX).read_text(encoding="utf-8"))
    out: dict[str, Any] = {}
    for name in sorted(set(index["weight_map"].values())):
        out.update(load_file(str(folder / name)))
    return out


def _fused(weights: dict[str, Any], s, tied: bool) -> dict[str, Any]:
    """transformers' parameter names -> this module's (q/k/v and gate/up projections fused into one matrix)."""
    import torch

    out = {"model.embed_tokens.weight": weights.pop("model.embed_tokens.weight"),
           "model.norm.weight": weights.pop("model.norm.weight")}
    out["lm_head.weight"] = out["model.embed_tokens.weight"] if tied else weights.pop("lm_head.weight")
    for i in range(s.layers):
        p = f"model.layers.{i}."

        def take(name: str, p: str = p):
            return weights.pop(p + name)

        out[p + "qkv.weight"] = torch.cat([take("self_attn.q_proj.weight"), take("self_attn.k_proj.weight"),
                                           take("self_attn.v_proj.weight")])
        out[p + "o_proj.weight"] = take("self_attn.o_proj.weight")
        out[p + "gate_up.weight"] = torch.cat([take("mlp.gate_proj.weight"), take("mlp.up_proj.weight")])
        out[p + "down_proj.weight"] = take("mlp.down_proj.weight")
        for norm in ("input_layernorm", "post_attention_layernorm"):
            out[p + norm + ".weight"] = take(norm + ".weight")
    weights.pop("lm_head.weight", None)
    unused = sorted(k for k in weights if not k.endswith("rotary_emb.inv_freq"))
    if unused:
        raise ValueError(f"weights this Llama has no place for: {', '.join(unused[:5])}")
    return out


def lite_causal_lm(folder: str | Path, dtype, device: str = "cpu"):
    """The plain-torch model of the checkpoint in ``folder`` in ``dtype`` (a torch dtype) on ``device``, or
    ``None`` where ``lite_config`` says transformers must load it."""
    config = lite_config(folder)
    if config is None:
        return None
    import torch

    from ._llama_torch import CausalLM, Shape, pack_linears

    s = Shape.of(config)
    tied = bool(config.get("tie_word_embeddings", False))
    weights = _fused(_weights(Path(folder)), s, tied)
    model = CausalLM(s, config)
    model.load_state_dict(weights, strict=True, assign=True)
    model.requires_grad_(False)
    if tied:
        model.lm_head.weight = model.model.embed_tokens.weight
    model = model.to(device=device, dtype=dtype).eval()
    model.model.inv_freq = model.model.inv_freq.to(device)  # float32 (not a buffer: `to` leaves it)
    if dtype == torch.bfloat16 and str(device).split(":")[0] == "cpu":
        pack_linears(model)  # oneDNN's layout once, not on every call (``PackedLinear``)
    return model
