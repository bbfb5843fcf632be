"""Training the generative retriever: loss goes down, retrieval changes, checkpoints resume."""

import json

import pytest

from eval import read_kilt
from indexing import Index
from retrieval import GenerativeConfig, GenerativeRetriever
from retrieval._train import TrainConfig, TrainTask, build_pairs, train_retriever

pytestmark = pytest.mark.slow


def _config(tiny_lm_dir, data_dir, **kw):
    base = dict(model=str(tiny_lm_dir), tasks=[TrainTask(name="qa", file=data_dir / "questions.jsonl")],
                corpus_pairs=20, epochs=6, batch_size=8, lr=3e-3, device="cpu", max_len=4, spans_per_record=2)
    base.update(kw)
    return TrainConfig(**base)


def test_pairs_are_identifiers_in_the_index(tiny_index, tiny_lm_dir, data_dir):
    import random

    from indexing._fm_build import load_fm
    from retrieval._unit_encoder import UnitEncoder

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
        before = GenerativeRetriever(index, GenerativeConfig(model=str(tiny_lm_dir), device="cpu", beam=3,
                                                             max_len=3)).decode_keys([query], "qa")[1][0]
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

    from indexing._models import load_tokenizer

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
