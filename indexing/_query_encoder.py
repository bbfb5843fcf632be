"""The query-time dense encoder: sentence-transformers' vectors without importing sentence-transformers.

Why it exists: ``genret search INDEX "query" --retriever dense`` in a new process spent most of its start-up
importing ``sentence_transformers`` (≈ 4.5 s of ≈ 6 s on a 2-core CPU: it pulls in transformers' whole model stack,
scikit-learn, scipy, pandas, datasets) to encode one short query.  A model made of a Transformer, a Pooling
(``cls``, ``mean`` or ``max``) and optionally a Normalize module needs none of that at query time: its
``modules.json``, ``1_Pooling/config.json`` and ``sentence_bert_config.json`` say everything the forward pass
needs.  ``query_encoder`` reads them and builds a ``DirectEncoder``:

* a BERT model (``model_type`` ``bert``, absolute positions, GELU) with a WordPiece ``tokenizer.json`` runs in
  genret's own ~40-line torch module with the ``tokenizers`` library — no transformers import at all (the
  packaged MiniLM: the whole dense start-up is then about torch's import);
* another plain encoder (RoBERTa, MPNet, DistilBERT, …) runs in transformers' ``AutoModel`` / ``AutoTokenizer``;
* anything else (other modules, prompts by default, lower-casing by ST, remote code, missing local files) gets the
  ``SentenceTransformerEncoder``, which also stays what builds indexes.

Both direct backends compute in the resolved ``dtype`` as ``SentenceTransformerEncoder`` does (``resolve_dtype``;
``int8``: ``quantize_int8`` of the linear layers) and return float32 L2-normalised vectors; in float32 they equal
sentence-transformers' within 1e-5 (``tests/indexing/test_query_encoder.py``).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core import (
    DEFAULT_DENSE_MODEL,
    loading_model,
    quantize_int8,
    resolve_device,
    resolve_dtype,
    resolve_model_path,
    torch_dtype,
)
from ._encoder import Encoder, SentenceTransformerEncoder, encode_batch_size

log = logging.getLogger("genret")

POOLING = ("cls", "mean", "max")
_LEGACY_POOLING = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
                   "pooling_mode_mean_tokens": "mean", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                   "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
# sentence_bert_config.json: the keys (and values) a plain text Transformer module has
_TRANSFORMER_KEYS = {"max_seq_length", "do_lower_case", "transformer_task", "modality_config", "module_output_name",
                     "unpad_inputs", "backend"}
_TEXT_MODALITY = {"text": {"method": "forward", "method_output_name": "last_hidden_state"}}
# encoder-only architectures AutoModel loads as sentence-transformers does (T5 & co. need their encoder class)
ENCODER_TYPES = {"bert", "roberta", "xlm-roberta", "mpnet", "distilbert", "electra", "camembert", "albert"}


class Unsupported(Exception):
    """The model needs sentence-transformers (the message says why)."""


@dataclass(frozen=True)
class DirectSpec:
    """What a direct encoder needs, read from a sentence-transformers model folder."""

    folder: Path  # the Transformer module's folder (config, weights, tokenizer)
    pooling: str  # cls | mean | max
    max_length: int | None  # tokens a text is truncated to
    dim: int
    native: bool  # BERT weights and a WordPiece tokenizer.json: genret's own module, no transformers import
    config: dict


def _read(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise Unsupported(f"cannot read {path.name}: {exc}") from None


def local_folder(model: str) -> Path:
    """The model's local folder: ``resolve_model_path``'s, or its snapshot in the Hugging Face cache."""
    path = resolve_model_path(model)
    if os.path.isdir(path):
        return Path(path)
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(path, "modules.json")
    if not isinstance(found, str):
        raise Unsupported("not a local folder and not in the Hugging Face cache")
    return Path(found).parent


def _kind(entry: dict) -> str:
    kind = str(entry.get("type", ""))
    return kind.rpartition(".")[2] if kind.startswith("sentence_transformers.") else kind


def _pooling_mode(config: dict) -> str:
    if "pooling_mode" in config:
        mode = config["pooling_mode"]
        modes = [mode] if isinstance(mode, str) else list(mode)
    else:  # the legacy booleans; none set means mean (as sentence-transformers reads them)
        modes = [m for key, m in _LEGACY_POOLING.items() if config.get(key)] or ["mean"]
    if len(modes) != 1 or modes[0] not in POOLING:
        raise Unsupported(f"pooling {modes} (direct: one of {', '.join(POOLING)})")
    return modes[0]


def direct_spec(folder: str | Path) -> DirectSpec:
    """The ``DirectSpec`` of a sentence-transformers model folder, or ``Unsupported`` saying why it needs
    sentence-transformers: its modules must be Transformer, Pooling (one of cls/mean/max) and optionally
    Normalize, with no default prompt and no lower-casing of sentence-transformers' own."""
    root = Path(folder)
    modules = _read(root / "modules.json")
    if not isinstance(modules, list) or not modules:
        raise Unsupported("no modules.json")
    modules = sorted(modules, key=lambda m: int(m.get("idx", 0)))
    kinds = [_kind(m) for m in modules]
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise Unsupported(f"modules {kinds}")
    st_config = _read(root / "config_sentence_transformers.json")
    if st_config.get("default_prompt_name") or st_config.get("model_type", "SentenceTransformer") != \
            "SentenceTransformer":
        raise Unsupported("a default prompt or another model type in config_sentence_transformers.json")
    tfolder = root / str(modules[0].get("path") or "")
    bert_config = _read(tfolder / "sentence_bert_config.json")
    odd = set(bert_config) - _TRANSFORMER_KEYS
    if odd or bert_config.get("do_lower_case") or bert_config.get("backend", "torch") != "torch" \
            or bert_config.get("transformer_task", "feature-extraction") != "feature-extraction" \
            or bert_config.get("module_output_name", "token_embeddings") != "token_embeddings" \
            or bert_config.get("modality_config", _TEXT_MODALITY) != _TEXT_MODALITY:
        raise Unsupported(f"Transformer module settings {sorted(odd) or bert_config}")
    pool_config = _read(root / str(modules[1].get("path") or "1_Pooling") / "config.json")
    pooling = _pooling_mode(pool_config)
    dim = pool_config.get("embedding_dimension", pool_config.get("word_embedding_dimension"))
    if not isinstance(dim, int) or dim < 1:
        raise Unsupported("no embedding dimension in the Pooling config")
    config = _read(tfolder / "config.json")
    if config.get("model_type") not in ENCODER_TYPES or config.get("is_encoder_decoder") or "auto_map" in config:
        raise Unsupported(f"model type {config.get('model_type')!r}")
    tok_config = _read(tfolder / "tokenizer_config.json")
    max_length = bert_config.get("max_seq_length")
    if max_length is None:  # sentence-transformers: the tokenizer's, capped at the model's positions
        max_length = tok_config.get("model_max_length")
    positions = config.get("max_position_embeddings")
    if isinstance(positions, int) and positions > 0:
        max_length = positions if max_length is None else min(int(max_length), positions)
    max_length = None if max_length is None or max_length > 10**6 else int(max_length)
    return DirectSpec(tfolder, pooling, max_length, dim, _native_bert(tfolder, config, tok_config, dim), config)


def _native_bert(folder: Path, config: dict, tok_config: dict, dim: int) -> bool:
    """Whether genret's own BERT module and a plain ``tokenizers`` WordPiece tokenizer give transformers' results."""
    if config.get("model_type") != "bert" or config.get("hidden_act", "gelu") != "gelu" \
            or config.get("position_embedding_type", "absolute") != "absolute" or config.get("is_decoder") \
            or config.get("add_cross_attention") or not (folder / "model.safetensors").is_file():
        return False
    sizes = [config.get(k) for k in ("hidden_size", "num_attention_heads", "intermediate_size", "num_hidden_layers",
                                     "vocab_size", "max_position_embeddings")]
    if not all(isinstance(n, int) and n > 0 for n in sizes) or sizes[0] % sizes[1] or sizes[0] != dim:
        return False
    tok = _read(folder / "tokenizer.json")
    model = tok.get("model") or {}
    return (model.get("type") == "WordPiece" and model.get("continuing_subword_prefix", "##") == "##"
            and model.get("max_input_chars_per_word", 100) == 100
            and model.get("unk_token") == tok_config.get("unk_token", "[UNK]")
            and (tok.get("normalizer") or {}).get("type") == "BertNormalizer"
            and (tok.get("pre_tokenizer") or {}).get("type") == "BertPreTokenizer"
            and tok_config.get("tokenizer_class", "BertTokenizer") in ("BertTokenizer", "BertTokenizerFast")
            and tok_config.get("padding_side", "right") == "right"
            and tok_config.get("truncation_side", "right") == "right")


class DirectEncoder:
    """A sentence-transformers model of Transformer + Pooling (+ Normalize), run without sentence-transformers:
    see the module docstring.  ``backend`` is ``native`` (genret's BERT module; ``auto`` picks it where
    ``DirectSpec.native``) or ``transformers``; ``dtype`` as ``SentenceTransformerEncoder``'s."""

    def __init__(self, model: str = DEFAULT_DENSE_MODEL, device: str = "auto", dtype: str = "auto", *,
                 spec: DirectSpec | None = None, backend: str = "auto") -> None:
        import torch

        spec = spec or direct_spec(local_folder(model))
        if backend == "auto":
            backend = "native" if spec.native else "transformers"
        if backend not in ("native", "transformers") or (backend == "native" and not spec.native):
            raise Unsupported(f"backend {backend!r}")
        self.model_id, self.backend, self.pooling = model, backend, spec.pooling
        self.max_length = spec.max_length
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device, role="dense encoder")
        with loading_model(model, "dense encoder"):
            if backend == "native":
                self._model = _bert_module(spec.folder, spec.config)
                self._tokenize = _wordpiece(spec.folder, self.max_length)
            else:
                self._model, self._tokenize = _transformers_model(spec.folder, self.max_length, self.dtype)
        self._model.eval()
        if self.dtype == "int8":
            quantize_int8(self._model)
        else:
            self._model.to(torch_dtype(self.dtype))
        self._model.to(self.device)
        log.info("dense query encoder %s on %s (%s; direct, %s)", model, self.device, self.dtype, backend)
        self._torch = torch
        self.dim = spec.dim

    def encode(self, texts: list[str], *, batch_size: int | None = None, progress: bool = False) -> np.ndarray:
        """``Encoder.encode`` (``progress`` is not shown: this encoder is for queries)."""
        torch = self._torch
        texts = [str(t) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # like lengths together (less padding)
        batch_size = encode_batch_size(batch_size, self.device)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                rows = order[start:start + batch_size]
                features = {k: v.to(self.device) for k, v in self._tokenize([texts[i] for i in rows]).items()}
                hidden = self._model(**features)
                hidden = getattr(hidden, "last_hidden_state", hidden)
                out[rows] = pool(hidden, features["attention_mask"], self.pooling).cpu().numpy()
        return out


def pool(hidden, mask, mode: str):
    """Pooled, L2-normalised float32 vectors of token states ``hidden`` (batch, tokens, dim), as
    sentence-transformers' Pooling + Normalize compute them."""
    import torch

    hidden = hidden.float()
    if mode == "cls":  # the first attended token (sentence-transformers: argmax of the mask)
        first = mask.to(torch.int).argmax(dim=1)
        vec = hidden[torch.arange(hidden.shape[0], device=hidden.device), first]
    elif mode == "max":
        vec = hidden.masked_fill(mask.unsqueeze(-1) == 0, float("-inf")).max(dim=1).values
    else:
        m = mask.unsqueeze(-1).to(hidden.dtype)
        vec = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(vec, p=2, dim=1)


def _wordpiece(folder: Path, max_length: int | None):
    """A ``tokenizers`` tokenizer set up as transformers' ``BertTokenizer`` is: the normalizer from
    tokenizer_config.json's flags, [CLS] … [SEP], longest-first truncation, padding to the longest text."""
    import torch
    from tokenizers import Tokenizer, normalizers, processors

    tc = _read(folder / "tokenizer_config.json")
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=tc.get("tokenize_chinese_chars",
                                                True), strip_accents=tc.get("strip_accents"),
                                                lowercase=tc.get("do_lower_case", True))
    cls, sep, pad = (str(tc.get(k, d)) for k, d in (("cls_token", "[CLS]"), ("sep_token", "[SEP]"),
                                                    ("pad_token", "[PAD]")))
    ids = {t: tok.token_to_id(t) for t in (cls, sep, pad)}
    if None in ids.values():
        raise Unsupported(f"special tokens {ids} not in the vocabulary")
    tok.post_processor = processors.TemplateProcessing(single=f"{cls}:0 $A:0 {sep}:0",
                                                       pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
                                                       special_tokens=[(cls, ids[cls]), (sep, ids[sep])])
    tok.no_truncation()
    if max_length is not None:
        tok.enable_truncation(max_length, strategy="longest_first")
    tok.enable_padding(direction="right", pad_id=ids[pad], pad_type_id=int(tc.get("pad_token_type_id", 0)),
                       pad_token=pad)

    def tokenize(texts: list[str]) -> dict:
        enc = tok.encode_batch(texts)
        return {k: torch.from_numpy(np.array([getattr(e, a) for e in enc], dtype=np.int64))
                for k, a in (("input_ids", "ids"), ("token_type_ids", "type_ids"),
                             ("attention_mask", "attention_mask"))}

    return tokenize


def _transformers_model(folder: Path, max_length: int | None, dtype: str):
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    kwargs = {} if max_length is None else {"model_max_length": max_length}
    tok = AutoTokenizer.from_pretrained(str(folder), **kwargs)
    model = AutoModel.from_pretrained(str(folder), dtype=torch_dtype(dtype))

    def tokenize(texts: list[str]) -> dict:
        return dict(tok(texts, padding=True, truncation="longest_first", return_tensors="pt"))

    return model, tokenize


def _bert_module(folder: Path, config: dict):
    """A BERT encoder (``BertModel`` without its pooler) in plain torch, holding the folder's safetensors weights;
    called with ``input_ids``, ``token_type_ids`` and ``attention_mask``, it returns the last hidden states.

    Built from the weights, without random initialisation (≈ 0.1 s for MiniLM) and without the meta device (which
    imports ``torch._dynamo``: ≈ 1 s); the linear layers are real ``nn.Linear`` for ``quantize_int8``.
    """
    import torch
    from safetensors.torch import load_file
    from torch import nn
    from torch.nn import functional as F

    h, heads, eps = config["hidden_size"], config["num_attention_heads"], float(config.get("layer_norm_eps", 1e-12))
    weights = {}
    for key, value in load_file(str(folder / "model.safetensors")).items():  # BertFor*: "bert."; TF ports: gamma/beta
        key = key.removeprefix("bert.").replace("LayerNorm.gamma", "LayerNorm.weight")
        weights[key.replace("LayerNorm.beta", "LayerNorm.bias")] = value

    def param(key: str):
        if key not in weights:
            raise Unsupported(f"{key} not in model.safetensors")
        return nn.Parameter(weights[key].float(), requires_grad=False)

    def linear(prefix: str) -> nn.Linear:
        m = nn.Linear.__new__(nn.Linear)
        nn.Module.__init__(m)
        m.weight, m.bias = param(prefix + ".weight"), param(prefix + ".bias")
        m.out_features, m.in_features = m.weight.shape
        return m

    class Norm(nn.Module):
        def __init__(self, prefix: str) -> None:
            super().__init__()
            self.weight, self.bias = param(prefix + ".weight"), param(prefix + ".bias")

        def forward(self, x):
            return F.layer_norm(x, (h,), self.weight, self.bias, eps)

    class Layer(nn.Module):
        def __init__(self, p: str) -> None:
            super().__init__()
            self.q, self.k, self.v = (linear(f"{p}attention.self.{n}") for n in ("query", "key", "value"))
            self.o, self.ln1 = linear(p + "attention.output.dense"), Norm(p + "attention.output.LayerNorm")
            self.up, self.down = linear(p + "intermediate.dense"), linear(p + "output.dense")
            self.ln2 = Norm(p + "output.LayerNorm")

        def forward(self, x, mask):
            b, t, _ = x.shape

            def split(y):
                return y.view(b, t, heads, h // heads).transpose(1, 2)

            a = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)), attn_mask=mask)
            x = self.ln1(x + self.o(a.transpose(1, 2).reshape(b, t, h)))
            return self.ln2(x + self.down(F.gelu(self.up(x))))

    class Bert(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.word, self.position, self.token_type = (
                nn.Embedding.from_pretrained(param(f"embeddings.{n}_embeddings.weight"), freeze=True)
                for n in ("word", "position", "token_type"))
            self.ln = Norm("embeddings.LayerNorm")
            self.layers = nn.ModuleList(Layer(f"encoder.layer.{i}.") for i in range(config["num_hidden_layers"]))

        def forward(self, input_ids, token_type_ids, attention_mask):
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            x = self.ln(self.word(input_ids) + self.position(positions)[None] + self.token_type(token_type_ids))
            mask = None if bool(attention_mask.all()) else attention_mask[:, None, None, :].bool()
            for layer in self.layers:
                x = layer(x, mask)
            return x

    return Bert()


def query_encoder(model: str = DEFAULT_DENSE_MODEL, device: str = "auto", dtype: str = "auto") -> Encoder:
    """The encoder for queries of an index built with ``model``: a ``DirectEncoder`` where the model's modules
    allow it (no sentence-transformers import: see the module docstring), else a ``SentenceTransformerEncoder``.
    Both give the vectors sentence-transformers gives (float32, L2-normalised)."""
    try:
        return DirectEncoder(model, device, dtype)
    except Unsupported as why:
        log.info("dense query encoder %s: sentence-transformers (%s)", model, why)
        return SentenceTransformerEncoder(model, device, dtype)
