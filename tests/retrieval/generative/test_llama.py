"""The plain-torch Llama (``retrieval/_llama``) against transformers' on the same checkpoint: logits, cached steps,
a whole generative search; which configs it takes; and a cold search that never imports transformers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from genret.core import resolve_checkpoint
from genret.indexing import Index
from genret.retrieval._llama import lite_causal_lm, lite_config
from genret.retrieval._lm import load_lm
from genret.retrieval.generative import GenerativeConfig, GenerativeRetriever
from genret.retrieval.generative._lm_steps import cache_kwargs, new_cache

QUERIES = ["Who created the Python programming language?", "When did the oil embargo start?",
           "Which pigment absorbs red light?"]


def _pair(path, dtype):
    from transformers import AutoModelForCausalLM

    return lite_causal_lm(path, dtype), AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()


def _padded_batch():
    import torch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 49000, (3, 11), generator=g)
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[1, :4] = 0  # left padding, as the decoder pads prompts
    mask[2, :1] = 0
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-4), ("bfloat16", 0.5)])
def test_logits_and_cached_steps_equal_transformers(dtype, tol):
    import torch

    lite, ref = _pair(resolve_checkpoint("smollm2-135m-instruct"), getattr(torch, dtype))
    assert next(lite.parameters()).dtype == getattr(torch, dtype)
    ids, mask, pos = _padded_batch()
    with torch.inference_mode():
        a_cache, b_cache = lite.new_cache(), new_cache(ref, False)
        a = lite(input_ids=ids, attention_mask=mask, position_ids=pos, **cache_kwargs(lite, a_cache)).logits
        b = ref(input_ids=ids, attention_mask=mask, position_ids=pos, **cache_kwargs(ref, b_cache)).logits
        real = mask.bool()
        assert (a[real].float() - b[real].float()).abs().max().item() <= tol
        assert torch.isfinite(a).all()  # padding positions too: they must not poison later rows with NaN
        for step in range(3):  # one token at a time, reading the caches; rows reordered as beam search does
            rows = torch.tensor([2, 0, 0])
            a_cache.reorder_cache(rows), b_cache.reorder_cache(rows)
            mask = torch.cat([mask.index_select(0, rows), torch.ones(3, 1, dtype=torch.long)], dim=1)
            tok = torch.tensor([[100 + step], [200], [300]])
            pos = mask.sum(-1, keepdim=True) - 1
            a = lite(input_ids=tok, attention_mask=mask, position_ids=pos, **cache_kwargs(lite, a_cache)).logits
            b = ref(input_ids=tok, attention_mask=mask, position_ids=pos, **cache_kwargs(ref, b_cache)).logits
            assert (a.float() - b.float()).abs().max().item() <= tol
            assert a.float().argmax(-1).tolist() == b.float().argmax(-1).tolist() or dtype == "bfloat16"


def test_untied_output_layer_and_no_cache(tiny_chat_lm_dir):
    import torch

    lite, ref = _pair(tiny_chat_lm_dir, torch.float32)
    assert lite.lm_head.weight.data_ptr() != lite.model.embed_tokens.weight.data_ptr()
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.inference_mode():
        assert torch.allclose(lite(input_ids=ids).logits, ref(input_ids=ids).logits, atol=1e-5)


def _checkpoint(tmp_path, tiny_lm_dir, **change):
    import shutil

    out = tmp_path / "model"
    shutil.copytree(tiny_lm_dir, out)
    config = json.loads((out / "config.json").read_text())
    config.update(change)
    (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.mark.parametrize("change", [{"model_type": "mistral"}, {"attention_bias": True}, {"mlp_bias": True},
                                    {"hidden_act": "gelu"}, {"pretraining_tp": 2},
                                    {"rope_parameters": {"rope_type": "linear", "rope_theta": 5e5, "factor": 8.0}},
                                    {"rope_scaling": {"type": "linear", "factor": 2.0}}])
def test_configs_it_does_not_compute_exactly_go_to_transformers(tmp_path, tiny_lm_dir, change):
    import torch

    folder = _checkpoint(tmp_path, tiny_lm_dir, **change)
    assert lite_config(folder) is None and lite_causal_lm(folder, torch.float32) is None
    assert lite_config(tiny_lm_dir) is not None
    if "model_type" not in change and "hidden_act" not in change:
        lm = load_lm(str(folder), "cpu", "float32", lite=True)  # transformers takes it
        assert "transformers" in type(lm.model).__module__


def test_a_search_ranks_as_with_transformers(tiny_index, tiny_lm_dir):
    index = Index(tiny_index)
    try:
        cfg = GenerativeConfig(model=str(tiny_lm_dir), device="cpu", dtype="float32", beam=4, max_len=4,
                               title_max_len=6, decode_body=True, decode_titles=True)
        lite = GenerativeRetriever(index, cfg)
        ref = GenerativeRetriever(index, cfg, lm=load_lm(str(tiny_lm_dir), "cpu", "float32"))
        assert type(lite.lm.model).__module__ == "genret.retrieval._llama_torch"
        assert "transformers" in type(ref.lm.model).__module__
        for q in QUERIES:
            a, b = lite.search(q, k=5), ref.search(q, k=5)
            assert [h.unit_id for h in a] == [h.unit_id for h in b]
            assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-4)
    finally:
        index.close()


def test_the_index_tokenizer_equals_transformers(tiny_index):
    from transformers import AutoTokenizer

    from genret.indexing.fm import load_fm_tokenizer

    index = Index(tiny_index)
    try:
        comp = index.component("fm")
        fast = load_fm_tokenizer(index.path, comp)
        ref = AutoTokenizer.from_pretrained(str(index.path / comp.params["tokenizer_dir"]))
    finally:
        index.close()
    assert type(fast).__name__ == "FastTokenizer"
    texts = ["Query: who wrote it?\nText:", "<|im_start|>user café", " naïve  spaces\tand\nlines", ""]
    assert fast(texts)["input_ids"] == ref(texts)["input_ids"]
    assert fast(texts[0]) == {"input_ids": ref(texts[0])["input_ids"]}
    for special in (True, False):
        for split in (True, False):
            kw = dict(add_special_tokens=special, split_special_tokens=split)
            assert fast(texts, **kw)["input_ids"] == ref(texts, **kw)["input_ids"]
    ids = ref(texts)["input_ids"] + [[1, 2, 0, 17, 300], list(range(40, 60))]
    assert [fast.decode(x) for x in ids] == [ref.decode(x) for x in ids]
    assert fast.batch_decode(ids) == ref.batch_decode(ids)
    assert fast.get_vocab() == ref.get_vocab() and len(fast) == len(ref)
    assert (fast.pad_token_id, fast.eos_token, fast.eos_token_id) == (ref.pad_token_id, ref.eos_token, ref.eos_token_id)


def test_a_generative_search_does_not_import_transformers(tiny_index):
    code = ("import sys; from genret.indexing import Index; from genret.retrieval.generative import "
            "GenerativeRetriever, GenerativeConfig\n"
            f"r = GenerativeRetriever(Index({str(tiny_index)!r}), GenerativeConfig(device='cpu', beam=2, max_len=2))\n"
            "assert r.search('who created python', k=2)\n"
            "print(sorted(m for m in ('transformers', 'torch._dynamo', 'sentence_transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_packed_linears_compute_what_the_plain_ones_do():
    """On a CPU with oneDNN's bfloat16 kernels the bfloat16 model's linear layers are packed once
    (``PackedLinear``): same outputs as ``F.linear`` for 1 to 300 rows and 3-D inputs, same logits as the model
    left unpacked; float32 models stay plain."""
    import torch
    from torch import nn

    from genret.retrieval._llama_torch import PackedLinear, pack_linears

    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        pytest.skip("no oneDNN bfloat16 kernels on this CPU")
    g = torch.Generator().manual_seed(0)
    w = torch.randn(96, 64, generator=g).to(torch.bfloat16)
    layer = PackedLinear(w)
    for shape in ((1, 64), (7, 64), (300, 64), (2, 5, 64)):
        x = torch.randn(*shape, generator=g).to(torch.bfloat16)
        assert torch.allclose(layer(x).float(), nn.functional.linear(x, w).float(), atol=0.05, rtol=0.01)
    path = resolve_checkpoint("smollm2-135m-instruct")
    packed = lite_causal_lm(path, torch.bfloat16)
    assert isinstance(packed.lm_head, PackedLinear) and isinstance(packed.model.layers[0].gate_up, PackedLinear)
    assert not pack_linears(lite_causal_lm(path, torch.float32))
    plain = lite_causal_lm(path, torch.float32).to(torch.bfloat16)
    ids, mask, pos = _padded_batch()
    with torch.inference_mode():
        a = packed(input_ids=ids, attention_mask=mask, position_ids=pos).logits.float()
        b = plain(input_ids=ids, attention_mask=mask, position_ids=pos).logits.float()
    real = mask.bool()
    assert (a[real] - b[real]).abs().max().item() <= 0.05  # equal here; a little room for other oneDNN builds
    assert (a[real].argmax(-1) == b[real].argmax(-1)).float().mean().item() >= 0.95
