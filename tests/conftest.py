"""Session fixtures: a tiny real corpus (both formats), its questions, and one index built once."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

PAGES = [
    {"id": "p-oil", "title": "1973 oil crisis", "text": [
        "The 1973 oil crisis began in October 1973 when the members of OAPEC proclaimed an oil embargo.",
        "By the end of the embargo in March 1974, the price of oil had risen nearly fourfold.",
    ]},
    {"id": "p-photo", "title": "Photosynthesis", "text": [
        "Photosynthesis is the process by which plants convert light energy into chemical energy.",
        "Chlorophyll absorbs mostly blue and red light. Oxygen is released as a by-product.",
    ]},
    {"id": "p-python", "title": "Python (programming language)", "text": [
        "Python is a high-level programming language created by Guido van Rossum.",
        "Its design philosophy emphasizes code readability with significant indentation.",
    ]},
    {"id": "p-everest", "title": "Mount Everest", "text": [
        "Mount Everest is Earth's highest mountain above sea level, in the Himalayas.",
        "The first confirmed ascent was by Tenzing Norgay and Edmund Hillary in 1953.",
    ]},
    {"id": "p-jazz", "title": "Jazz", "text": [
        "Jazz is a music genre that originated in the African-American communities of New Orleans.",
        "Louis Armstrong was one of the most influential figures in jazz.",
    ]},
]

QUESTIONS = [
    ("q1", "When did the oil embargo start?", "p-oil", 1, "October 1973"),
    ("q2", "Which pigment absorbs red and blue light in plants?", "p-photo", 2, "Chlorophyll"),
    ("q3", "Who created the Python programming language?", "p-python", 1, "Guido van Rossum"),
    ("q4", "Who first climbed the highest mountain in the world?", "p-everest", 2, "Tenzing Norgay"),
    ("q5", "Which trumpeter shaped the New Orleans music genre?", "p-jazz", 2, "Louis Armstrong"),
]


def _question_record(qid: str, text: str, page: str, par: int, answer: str) -> dict:
    page_rec = next(p for p in PAGES if p["id"] == page)
    para = page_rec["text"][par - 1]
    start = para.index(answer)
    return {"id": qid, "input": text, "output": [{"answer": answer, "provenance": [{
        "wikipedia_id": page, "title": page_rec["title"], "start_paragraph_id": par, "end_paragraph_id": par,
        "start_character": start, "end_character": start + len(answer)}]}]}


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("data")
    with open(d / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for p in PAGES:
            fh.write(json.dumps(p) + "\n")
    with gzip.open(d / "kilt_ks.jsonl.gz", "wt", encoding="utf-8") as fh:
        for p in PAGES:
            fh.write(json.dumps({"wikipedia_id": p["id"], "wikipedia_title": p["title"],
                                 "text": [p["title"] + "\n"] + [t + "\n" for t in p["text"]]}) + "\n")
    with open(d / "questions.jsonl", "w", encoding="utf-8") as fh:
        for q in QUESTIONS:
            fh.write(json.dumps(_question_record(*q)) + "\n")
    return d


@pytest.fixture(scope="session")
def encoder():
    from genret.indexing import SentenceTransformerEncoder

    return SentenceTransformerEncoder(device="cpu")


@pytest.fixture(scope="session")
def tiny_index(data_dir, tmp_path_factory) -> Path:
    from genret.indexing import DenseConfig, IndexConfig, build_index

    out = tmp_path_factory.mktemp("indexes") / "tiny"
    build_index(data_dir / "corpus.jsonl", out, IndexConfig(dense=DenseConfig(device="cpu")), progress=False)
    return out


@pytest.fixture(scope="session")
def dense_bm25_index(data_dir, tmp_path_factory):
    """A function making a fresh dense + BM25 index of the tiny corpus (for tests that write into their index)."""
    from genret.indexing import DenseConfig, IndexConfig, build_index

    def make(name: str) -> Path:
        out = tmp_path_factory.mktemp(name) / "idx"
        build_index(data_dir / "corpus.jsonl", out, IndexConfig(components=("dense", "bm25"),
                                                               dense=DenseConfig(device="cpu")), progress=False)
        return out

    return make


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory) -> Path:
    """A tiny randomly initialised Llama with the packaged SmolLM2 tokenizer (a real, loadable local model)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from genret.core import load_tokenizer

    tok = load_tokenizer("smollm2-135m-instruct")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    out = tmp_path_factory.mktemp("models") / "tiny-llama"
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_chat_lm_dir(tiny_lm_dir, tmp_path_factory) -> Path:
    """``tiny_lm_dir``'s model with untied input/output embeddings and fresh random weights, for generation tests.

    With tied embeddings and small random weights the last hidden state stays close to the last input embedding,
    so greedy decoding repeats the chat template's final newline and every completion is empty after stripping;
    untied, the model writes varied (random) text, so comparisons of completions mean something."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig.from_pretrained(tiny_lm_dir)
    config.tie_word_embeddings = False
    torch.manual_seed(1)
    out = tmp_path_factory.mktemp("models") / "tiny-chat-llama"
    LlamaForCausalLM(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_lm_dir).save_pretrained(out)
    return out
