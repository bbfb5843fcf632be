"""The plain-torch Llama's modules (``_llama`` builds them from a checkpoint): RMSNorm, a decoder layer with fused
q/k/v and gate/up projections, grouped-query attention through ``scaled_dot_product_attention``, the causal LM, and
its KV cache.  Imported by ``_llama`` on first use only: this module imports torch."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


class KVCache:
    """Keys and values of every layer, ``(batch, kv_heads, positions, head_dim)``; rows follow ``reorder_cache``."""

    def __init__(self, layers: int) -> None:
        self.keys: list[Any] = [None] * layers
        self.values: list[Any] = [None] * layers

    def update(self, layer: int, k, v):
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    def reorder_cache(self, rows) -> None:
        """Row i becomes old row ``rows[i]`` (a row may repeat)."""
        self.keys = [None if k is None else k.index_select(0, rows) for k in self.keys]
        self.values = [None if v is None else v.index_select(0, rows) for v in self.values]

    def __deepcopy__(self, memo) -> KVCache:
        # tensors are never written in place (``update`` concatenates), so a copy may share them
        other = KVCache(0)
        other.keys, other.values = list(self.keys), list(self.values)
        return other


@dataclass(frozen=True)
class Shape:
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    inter: int
    layers: int
    vocab: int
    eps: float
    theta: float

    @classmethod
    def of(cls, c: dict[str, Any]) -> Shape:
        heads = int(c["num_attention_heads"])
        rope = c.get("rope_parameters") or {}
        return cls(hidden=int(c["hidden_size"]), heads=heads, kv_heads=int(c.get("num_key_value_heads") or heads),
                   head_dim=int(c.get("head_dim") or c["hidden_size"] // heads),
                   inter=int(c["intermediate_size"]), layers=int(c["num_hidden_layers"]),
                   vocab=int(c["vocab_size"]), eps=float(c.get("rms_norm_eps", 1e-6)),
                   theta=float(rope.get("rope_theta", c.get("rope_theta", 10000.0))))


def linear(inp: int, out: int):
    """An ``nn.Linear`` (the type int8 quantization looks for) whose weight is left unset: ``load_state_dict``
    assigns the checkpoint's.  Not built on the meta device: initialising there imports ``torch._dynamo``."""
    layer = nn.Linear.__new__(nn.Linear)
    nn.Module.__init__(layer)
    layer.in_features, layer.out_features = inp, out
    layer.weight = nn.Parameter(torch.empty(out, inp), requires_grad=False)  # not touched: no pages yet
    layer.register_parameter("bias", None)
    return layer


class PackedLinear(nn.Module):
    """A frozen bias-free linear layer whose weight oneDNN has laid out once for its own bfloat16 kernels.

    ``F.linear`` re-lays the weight out on every call, a large part of the cost on one CPU thread for the few rows
    a decoding step or a prefix tree feeds (``bench/bf16_kernels.py``: 1.2-1.5x for 1-100 rows; equal outputs):
    ``pack_linears`` swaps these in for inference on a CPU with native bfloat16.
    """

    def __init__(self, weight) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 64)  # 64: the rows it is tuned for

    def forward(self, x):
        y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, self.in_features), self.packed, None, "none", [], "")
        return y.view(*x.shape[:-1], self.out_features)


def pack_linears(model: nn.Module) -> bool:
    """Every bias-free bfloat16 ``nn.Linear`` of ``model`` (on the CPU) replaced by a ``PackedLinear``, in place;
    False (nothing changed) where this torch's oneDNN has no bfloat16 kernels or packed layouts."""
    mkldnn = getattr(torch.ops, "mkldnn", None)
    if not (torch.backends.mkldnn.is_available() and hasattr(mkldnn, "_reorder_linear_weight")
            and hasattr(mkldnn, "_linear_pointwise") and mkldnn._is_mkldnn_bf16_supported()):
        return False
    found = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
             if type(child) is nn.Linear and child.bias is None and child.weight.dtype == torch.bfloat16
             and child.weight.device.type == "cpu"]
    for parent, name, child in found:
        setattr(parent, name, PackedLinear(child.weight))
    return bool(found)


class Embedding(nn.Module):
    def __init__(self, rows: int, size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(rows, size), requires_grad=False)

    def forward(self, ids):
        return F.embedding(ids, self.weight)


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(size), requires_grad=False)
        self.eps = eps

    def forward(self, x):  # as transformers: the statistics in float32, the product in the input's dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


class Layer(nn.Module):
    def __init__(self, s: Shape) -> None:
        super().__init__()
        self.s = s
        self.input_layernorm = RMSNorm(s.hidden, s.eps)
        self.post_attention_layernorm = RMSNorm(s.hidden, s.eps)
        self.qkv = linear(s.hidden, (s.heads + 2 * s.kv_heads) * s.head_dim)
        self.o_proj = linear(s.heads * s.head_dim, s.hidden)
        self.gate_up = linear(s.hidden, 2 * s.inter)
        self.down_proj = linear(s.inter, s.hidden)

    def forward(self, x, cos, sin, mask, cache: KVCache | None, index: int):
        s = self.s
        b, n, _ = x.shape
        q, k, v = self.qkv(self.input_layernorm(x)).view(b, n, -1, s.head_dim).transpose(1, 2) \
            .split([s.heads, s.kv_heads, s.kv_heads], dim=1)
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        if cache is not None:
            k, v = cache.update(index, k, v)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=s.kv_heads != s.heads)
        x = x + self.o_proj(att.transpose(1, 2).reshape(b, n, -1))
        gate, up = self.gate_up(self.post_attention_layernorm(x)).chunk(2, dim=-1)
        return x + self.down_proj(F.silu(gate) * up)


def _rotate_half(t):
    half = t.shape[-1] // 2
    return torch.cat((-t[..., half:], t[..., :half]), dim=-1)


class Base(nn.Module):
    def __init__(self, s: Shape) -> None:
        super().__init__()
        self.s = s
        self.embed_tokens = Embedding(s.vocab, s.hidden)
        self.layers = nn.ModuleList(Layer(s) for _ in range(s.layers))
        self.norm = RMSNorm(s.hidden, s.eps)
        # rotary frequencies: float32 whatever the weights' dtype, as in transformers (a plain tensor, which
        # ``Module.to(dtype)`` leaves alone; ``_llama`` moves it to the model's device)
        self.inv_freq = 1.0 / (s.theta ** (torch.arange(0, s.head_dim, 2, dtype=torch.int64).float() / s.head_dim))

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, **_):
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        b, n, _ = x.shape
        if position_ids is None:  # positions follow what the cache holds
            past = 0 if past_key_values is None or past_key_values.keys[0] is None else \
                past_key_values.keys[0].shape[2]
            position_ids = torch.arange(past, past + n, device=x.device).expand(b, n)
        freqs = position_ids[..., None].float() * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos().to(x.dtype).unsqueeze(1), emb.sin().to(x.dtype).unsqueeze(1)
        mask = _attention_mask(attention_mask, b, n, x.device)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask, past_key_values, i)
        return SimpleNamespace(last_hidden_state=self.norm(x))


def _attention_mask(attention_mask, b: int, n: int, device):
    """(batch, 1, new, all) booleans: a new position sees the past and itself, never padding; a padding
    position sees itself only (it must not be all-masked: its values would be NaN, and NaN times a zero
    attention weight is still NaN in a later row)."""
    if attention_mask is None:
        return torch.ones((n, n), dtype=torch.bool, device=device).tril().expand(b, 1, n, n)
    if attention_mask.dim() == 4:  # given whole (a prefix tree's: ``generative._prefix_tree``)
        return attention_mask.bool()
    total = attention_mask.shape[1]
    keys = torch.arange(total, device=device)
    rows = torch.arange(total - n, total, device=device)
    allowed = (keys[None, :] <= rows[:, None])[None] & attention_mask.bool()[:, None, :]
    allowed |= (keys[None, :] == rows[:, None])[None]
    return allowed.unsqueeze(1)


class CausalLM(nn.Module):
    def __init__(self, s: Shape, config: dict[str, Any]) -> None:
        super().__init__()
        self.model = Base(s)
        self.lm_head = linear(s.hidden, s.vocab)
        self.config = SimpleNamespace(**config)
        self.layer_count = s.layers

    @property
    def base_model(self):
        return self.model

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def get_output_embeddings(self):
        return self.lm_head

    def new_cache(self) -> KVCache:
        return KVCache(self.layer_count)

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, logits_to_keep: int = 0, **_):
        hidden = self.model(input_ids, attention_mask, position_ids, past_key_values, inputs_embeds)
        h = hidden.last_hidden_state
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        # as a 2-D product: a strided 3-D input would make ``linear`` copy the output matrix a row
        return SimpleNamespace(logits=self.lm_head(h.reshape(-1, h.shape[-1])).view(*h.shape[:-1], -1))
