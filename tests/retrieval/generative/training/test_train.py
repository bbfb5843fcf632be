"""Training the generative retriever: loss goes down, retrieval changes, checkpoints resume."""

import json

import pytest

from genret.core import resolve_dtype, torch_dtype
from genret.eval import read_kilt
from genret.indexing import Index
from genret.retrieval import GenerativeConfig, GenerativeRetriever
from genret.retrieval.generative.training import TrainConfig, TrainTask, train_retriever
from genret.retrieval.generative.training._train import build_pairs

pytestmark = pytest.mark.slow


def _config(tiny_lm_dir, data_dir, **kw):
    base = dict(model=str(tiny_lm_dir), tasks=[TrainTask(name="qa", file=data_dir / "questions.jsonl")],
                corpus_pairs=20, epochs=6, batch_size=8, lr=3e-3, device="cpu", max_len=4, spans_per_record=2)
    base.update(kw)
    return TrainConfig(**base)


def test_pairs_are_identifiers_in_the_index(tiny_index, tiny_lm_dir, data_dir):
    import random

    from genret.indexing.fm import load_fm
    from genret.retrieval.generative._unit_tokens import UnitEncoder

    with Index(tiny_index) as index:
        comp = index.component("fm")
        fm, enc = load_fm(index.path, comp), UnitEncoder.from_component(index.path, comp)
        pairs, stats = build_pairs(_config(tiny_lm_dir, data_dir), index, enc, fm, random.Random(0), read_kilt)
    assert stats["qa"]["pairs"] > 0 and stats["corpus"]["pairs"] > 0
    assert all(fm.count(p.target) > 0 for p in pairs)
    kinds = {(p.task, p.kind) for p in pairs}
    assert ("qa", "body") in kinds and ("qa", "title") in kinds and ("page", "title") in kinds
    title = next(p for p in pairs if p.task == "qa" and p.kind == "title")
    assert title.target[0] == enc.title_start and title.target[-1] == enc.title_end


def test_training_lowers_the_loss_changes_retrieval_and_resumes(tiny_index, tiny_lm_dir, data_dir, tmp_path):
    out = tmp_path / "ckpt"
    query = "Who created the Python programming language?"
    with Index(tiny_index) as index:
        untrained = GenerativeConfig(model=str(tiny_lm_dir), device="cpu", beam=3, max_len=3, decode_body=True,
                                     decode_titles=True)
        before = GenerativeRetriever(index, untrained).decode_keys([query], "qa")[1][0]
        summary = train_retriever(_config(tiny_lm_dir, data_dir), index, out, read_records=read_kilt,
                                  progress=False)
        losses = [h["mean_loss"] for h in summary["history"]]
        assert len(losses) == 6 and losses[-1] < 0.8 * losses[0]
        after_r = GenerativeRetriever(index, GenerativeConfig(checkpoint=str(out), device="cpu", beam=3, max_len=3))
        after = after_r.decode_keys([query], "qa")[1][0]
        assert [k.tokens for k in after[:5]] != [k.tokens for k in before[:5]]
        # a learned key is more likely after training than before
        gold = tuple(after_r.encoder.title_tokens("Python (programming language)"))
        assert after_r.fm.count(gold) == 2
        state = json.loads((out / "trainer_state.json").read_text())
        assert state["step"] == summary["steps"] and state["epoch"] == 6
        # resume: two more epochs continue from the saved step
        resumed = train_retriever(_config(tiny_lm_dir, data_dir, epochs=8), index, out, resume=True,
                                  read_records=read_kilt, progress=False)
        assert resumed["steps"] > summary["steps"] and len(resumed["history"]) == 8


def test_continuous_prompts_are_learned_and_used(tiny_index, tiny_lm_dir, data_dir, tmp_path):
    out = tmp_path / "soft"
    with Index(tiny_index) as index:
        summary = train_retriever(_config(tiny_lm_dir, data_dir, prompt_kind="continuous", n_vectors=4,
                                          train_lm=False, epochs=3, prompt_lr=0.05),
                                  index, out, read_records=read_kilt, progress=False)
        losses = [h["mean_loss"] for h in summary["history"]]
        assert losses[-1] < losses[0]
        r = GenerativeRetriever(index, GenerativeConfig(checkpoint=str(out), device="cpu", beam=2, max_len=2))
        assert r.prompts["qa"].kind == "continuous" and r.prompt_vectors["qa"].shape == (4, 64)
        assert r.search("Who created Python?", k=2, task="qa")


def test_encoder_decoder_training_runs(tiny_index, data_dir, tmp_path):
    import math

    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    from genret.core import load_tokenizer

    tok = load_tokenizer("smollm2-135m-instruct")
    torch.manual_seed(0)
    model_dir = tmp_path / "t5"
    T5ForConditionalGeneration(T5Config(vocab_size=len(tok), d_model=32, d_ff=64, d_kv=16, num_layers=1,
                                        num_decoder_layers=1, num_heads=2, decoder_start_token_id=tok.pad_token_id,
                                        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
                               ).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    with Index(tiny_index) as index:
        summary = train_retriever(_config(model_dir, data_dir, epochs=3), index, tmp_path / "ckpt",
                                  read_records=read_kilt, progress=False)
    losses = [h["mean_loss"] for h in summary["history"]]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]


def test_spans_start_on_query_words(tiny_index):
    import random

    from genret.retrieval.generative._unit_tokens import UnitEncoder
    from genret.retrieval.generative.training._pairs import sample_spans, token_words

    with Index(tiny_index) as index:
        enc = UnitEncoder.from_component(index.path, index.component("fm"))
    toks = enc.text_tokens("Python is a high-level programming language created by Guido van Rossum.")
    words = token_words(enc, toks)
    # byte-level pieces ("ĠGuid" + "o") make whole words; only the first piece starts the word
    assert [w for w, first in words if first][-4:] == ["guido", "van", "rossum", "."]
    spans = sample_spans(toks, words, {"guido", "rossum"}, random.Random(0), 2, 2, 3)
    starts = {toks.index(s[0]) for s in spans}
    assert starts == {i for i, (w, first) in enumerate(words) if first and w in {"guido", "rossum"}}


def test_bf16_gpu_style_settings_train_and_the_checkpoint_loads_on_cpu(tiny_index, tiny_lm_dir, data_dir, tmp_path):
    import math

    from safetensors import safe_open

    out = tmp_path / "bf16"
    cfg = _config(tiny_lm_dir, data_dir, epochs=2, batch_size=4, gradient_accumulation_steps=2,
                  mixed_precision="bf16", schedule="cosine", warmup_steps=1, save_every=1)
    with Index(tiny_index) as index:
        summary = train_retriever(cfg, index, out, read_records=read_kilt, progress=False)
        from accelerate.utils import is_bf16_available

        # accelerate's CPU bf16 autocast (a CPU without bf16 falls back to float32 with a warning)
        assert summary["mixed_precision"] == ("bf16" if is_bf16_available(True) else "no")
        per_epoch = math.ceil(math.ceil(summary["pairs"] / 4) / 2)  # updates: micro-batches / accumulation
        assert summary["steps"] == 2 * per_epoch
        assert all(math.isfinite(h["mean_loss"]) for h in summary["history"])
        assert summary["history"][-1]["lr"] < cfg.lr  # the cosine schedule decayed
        with safe_open(str(out / "model.safetensors"), "pt") as f:
            assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.float32"}
        r = GenerativeRetriever(index, GenerativeConfig(checkpoint=str(out), device="cpu", beam=2, max_len=2))
        # the float32 checkpoint loads in the dtype auto resolves to on this CPU (bfloat16 with AMX, else float32
        # weights quantized to int8: the embeddings stay float32)
        want = torch_dtype(resolve_dtype("auto", "cpu"))
        assert next(r.lm.model.parameters()).dtype == want
        assert r.search("Who created Python?", k=2, task="qa")


def test_frozen_embeddings_and_lower_layers_do_not_change(tiny_index, tiny_lm_dir, data_dir, tmp_path):
    import torch
    from safetensors.torch import load_file

    out = tmp_path / "frozen"
    with Index(tiny_index) as index:
        train_retriever(_config(tiny_lm_dir, data_dir, epochs=1, freeze_embeddings=True, freeze_layers=1),
                        index, out, read_records=read_kilt, progress=False)
    before, after = load_file(str(tiny_lm_dir / "model.safetensors")), load_file(str(out / "model.safetensors"))
    frozen = [k for k in before if "embed_tokens" in k or ".layers.0." in k]
    trained = [k for k in before if ".layers.1." in k and k.endswith("proj.weight")]
    assert frozen and trained
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert all(not torch.equal(before[k], after[k]) for k in trained)


def test_layer_stacks_are_found_in_decoder_and_encoder_decoder_models(tiny_lm_dir):
    from transformers import AutoModelForCausalLM, T5Config, T5ForConditionalGeneration

    from genret.retrieval.generative.training._model import freeze, layer_stacks

    llama = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    assert [n for n, _ in layer_stacks(llama)] == ["model.layers"]
    t5 = T5ForConditionalGeneration(T5Config(vocab_size=64, d_model=16, d_ff=32, d_kv=8, num_layers=2,
                                             num_decoder_layers=2, num_heads=2))
    assert [n for n, _ in layer_stacks(t5)] == ["encoder.block", "decoder.block"]
    freeze(t5, embeddings=False, layers=1)
    assert not any(p.requires_grad for p in t5.encoder.block[0].parameters())
    assert not any(p.requires_grad for p in t5.decoder.block[0].parameters())
    assert all(p.requires_grad for p in t5.decoder.block[1].parameters())


def test_rank_loss_stage_lowers_the_rank_loss(tiny_index, tiny_lm_dir, data_dir, tmp_path):
    out = tmp_path / "rank"
    cfg = _config(tiny_lm_dir, data_dir, corpus_pairs=0, epochs=1, rank_loss=True, rank_epochs=5, rank_negatives=2,
                  rank_spans=2, batch_size=6, lr=3e-3, rank_gen_weight=0.0, warmup_steps=0)
    with Index(tiny_index) as index:
        summary = train_retriever(cfg, index, out, read_records=read_kilt, progress=False)
    assert summary["sources"]["rank"] == {"queries": 5, "negatives": "bm25"}
    rank = [h for h in summary["history"] if h["stage"] == "rank"]
    assert len(rank) == 5 and [h["epoch"] for h in rank] == [2, 3, 4, 5, 6]
    assert rank[-1]["rank_loss"] < rank[0]["rank_loss"]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["stage"] == "rank" and state["epoch"] == 6
    with Index(tiny_index) as index:  # resume inside the rank stage: one more rank epoch
        resumed = train_retriever(cfg.model_copy(update={"rank_epochs": 6}), index, out, resume=True,
                                  read_records=read_kilt, progress=False)
    assert resumed["steps"] > summary["steps"] and [h["epoch"] for h in resumed["history"]][-2:] == [6, 7]


def test_rank_scores_and_margin_loss():
    import math

    import torch

    from genret.retrieval.generative.training._rank_loss import margin_loss, unit_scores

    spans = torch.tensor([-1.0, -3.0, -2.0, -2.0, -5.0])  # gold: rows 0-1; negatives: rows 2-3, row 4
    groups = [[(0, 2), (2, 4), (4, 5)]]
    s = unit_scores(spans, groups)[0]
    assert math.isclose(float(s[0]), math.log((math.exp(-1) + math.exp(-3)) / 2), rel_tol=1e-6)
    loss, acc = margin_loss(spans, groups, margin=1.0)
    expected = (max(0.0, 1 - (float(s[0]) + 2)) + max(0.0, 1 - (float(s[0]) + 5))) / 2
    assert math.isclose(float(loss), expected, rel_tol=1e-6) and acc == 1.0


def test_training_without_labels_pseudo_labels_from_bm25(tiny_index, tiny_lm_dir, tmp_path):
    import random

    from genret.retrieval.generative.training._pseudo import label_retriever, pseudo_labels

    with Index(tiny_index) as index:
        bm25 = label_retriever(index, "bm25")
        labels = pseudo_labels(index.store, bm25, random.Random(0), 6, negatives=2)
        assert labels and all(len(lab.gold) == 1 and lab.task == "generic" for lab in labels)
        for lab in labels:  # the gold unit is BM25's top hit for the pseudo-query; negatives are the next ones
            hits = bm25.search(lab.query, k=3)
            assert hits[0].unit_id == lab.gold[0] and [h.unit_id for h in hits[1:]] == list(lab.negatives)
        out = tmp_path / "unlabelled"
        from genret.serving import main

        code = main(["train", "retriever", str(tiny_index), "--out", str(out), "--model", str(tiny_lm_dir),
                     "--corpus-pairs", "10", "--pseudo-labels", "bm25", "--pseudo-queries", "8", "--epochs", "1",
                     "--rank-loss", "--rank-negatives", "2", "--grad-accum", "2", "--freeze-layers", "1",
                     "--device", "cpu", "--quiet"])
        assert code == 0
        state = json.loads((out / "trainer_state.json").read_text())
        assert state["sources"]["pseudo"]["pairs"] > 0 and state["sources"]["corpus"]["pairs"] > 0
        assert state["stage"] == "rank" and state["config"]["pseudo_labels"] == "bm25"
        r = GenerativeRetriever(index, GenerativeConfig(checkpoint=str(out), device="cpu", beam=2, max_len=2))
        assert r.search("Mount Everest ascent", k=2)
