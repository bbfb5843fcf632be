"""Answer-generator speed on CPU: generated tokens/s and per-prompt latency of the local HF generator
(``GeneratorConfig()``'s model, the packaged SmolLM2-135M-Instruct) at batch sizes 1, 4 and 8, on RAG-sized
prompts (≈ 400–600 prompt tokens: passages + a question, the layout of the RAG prompt).

    .venv/bin/python bench/generator.py [--n 16] [--max-new-tokens 32] [--batch-sizes 1,4,8] [--threads N]

Prompts come from ``../shared/minikilt/squad`` (dev questions, each with passages of its gold page) when that
folder exists, else from a built-in text.  Prints Markdown: one section per function in ``SECTIONS``; append a
function there to add a section.  ``rag_latency`` adds end-to-end RAG latency over ``--index`` (default the
squad index of ``make minikilt``) when it exists.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

SQUAD = Path(__file__).resolve().parents[2] / "shared" / "minikilt" / "squad"
SYSTEM = "You answer questions with a short answer (a few words) taken from the passages."
BUILTIN = [
    ("Photosynthesis", "Photosynthesis is the process by which plants, algae and some bacteria convert light energy "
     "into chemical energy stored in sugars. It takes place mostly in the chloroplasts of leaf cells, where the "
     "pigment chlorophyll absorbs mostly blue and red light and reflects green light, which gives leaves their "
     "colour. Water is split, oxygen is released as a by-product, and carbon dioxide from the air is fixed into "
     "organic molecules in the Calvin cycle."),
    ("Mount Everest", "Mount Everest is Earth's highest mountain above sea level, located in the Mahalangur Himal "
     "sub-range of the Himalayas on the border between Nepal and China. Its elevation of 8,848.86 m was most "
     "recently established in 2020. The first confirmed ascent was by Tenzing Norgay and Edmund Hillary in 1953, "
     "on the British expedition led by John Hunt; climbers now usually take the south-east ridge from Nepal."),
    ("Jazz", "Jazz is a music genre that originated in the African-American communities of New Orleans in the late "
     "19th and early 20th centuries, with roots in blues and ragtime. Louis Armstrong, a trumpeter and singer, was "
     "one of its most influential figures; swing, bebop, cool jazz and free jazz followed in later decades."),
]
BUILTIN_QUESTIONS = ["Which pigment absorbs red and blue light?", "Who first climbed Mount Everest?",
                     "Where did jazz originate?", "What gas is released by photosynthesis?"]


def rag_prompts(n: int, count_tokens: Callable[[str], int], lo: int = 400, hi: int = 600) -> list[list[dict]]:
    """``n`` chat prompts: instruction, numbered passages (gold page first when known) up to ``lo``–``hi``
    prompt tokens, then the question."""
    if SQUAD.is_dir():
        pages = {}
        with open(SQUAD / "knowledge_source.jsonl", encoding="utf-8") as fh:
            for line in fh:
                rec = json.loads(line)
                pages[rec["wikipedia_id"]] = [(rec["wikipedia_title"], t) for t in rec["text"][1:] if t.strip()]
        order = list(pages)
        items = []
        with open(SQUAD / "dev.jsonl", encoding="utf-8") as fh:
            for i, line in enumerate(fh):
                if len(items) == n:
                    break
                rec = json.loads(line)
                gold = rec["output"][0]["provenance"][0]["wikipedia_id"]
                other = order[(order.index(gold) + 1 + i) % len(order)]
                items.append((rec["input"], pages[gold] + pages[other]))
    else:
        items = [(BUILTIN_QUESTIONS[i % len(BUILTIN_QUESTIONS)], BUILTIN[i % 3:] + BUILTIN[:i % 3] + BUILTIN * 3)
                 for i in range(n)]
    prompts = []
    for question, passages in items:
        tail = f"\nQuestion: {question}\nAnswer with a few words from the passages."
        used = count_tokens(SYSTEM + tail) + 16  # + the chat template's markup
        body = ["Passages:"]
        for title, text in passages:
            words = text.split()
            while words and used + count_tokens(" ".join(words)) > hi:
                words = words[: int(len(words) * 0.8)]
            if not words:
                break
            body.append(f"[{len(body)}] ({title}) {' '.join(words)}")
            used += count_tokens(body[-1])
            if used >= lo:
                break
        prompts.append([{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n".join(body) + tail}])
    return prompts


def generator_throughput(a: argparse.Namespace) -> list[str]:
    """Generated tokens/s and per-prompt latency of the local generator at each batch size."""
    import torch

    from genret.retrieval.rag import GeneratorConfig, HFGenerator

    gen = HFGenerator(GeneratorConfig(device=a.device, max_new_tokens=a.max_new_tokens))
    prompts = rag_prompts(a.n, gen.count_tokens)
    prompt_tokens = [gen.count_tokens(gen.render(p)) for p in prompts]
    source = "minikilt squad dev questions + passages" if SQUAD.is_dir() else "built-in text"
    lines = [f"### Generator: {gen.config.model} on {gen.lm.device}, {torch.get_num_threads()} torch threads",
             "", f"{len(prompts)} prompts ({source}), prompt tokens (chat template included) mean "
             f"{statistics.mean(prompt_tokens):.0f}, min {min(prompt_tokens)}, max {max(prompt_tokens)}; "
             f"greedy, max_new_tokens {a.max_new_tokens}, {gen.lm.model.dtype}.", "",
             "| batch | prompts | generated tokens | wall s | generated tok/s | prompts/s | latency per prompt ms, "
             "median | p90 | ms per prompt (wall / prompts) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    gen.generate(prompts[:1], max_new_tokens=2)  # warm-up
    for bs in a.batch_sizes:
        gen.config = gen.config.model_copy(update={"batch_size": bs})
        latencies, outputs = [], []
        t0 = time.perf_counter()
        for s in range(0, len(prompts), bs):
            t = time.perf_counter()
            outputs += gen.generate(prompts[s:s + bs])
            latencies += [time.perf_counter() - t] * len(prompts[s:s + bs])  # a prompt waits for its batch
        wall = time.perf_counter() - t0
        # tokens of the completions as returned (EOS and padding excluded): the useful output
        generated = sum(gen.count_tokens(o) for o in outputs if o)
        q = sorted(latencies)
        lines.append(f"| {bs} | {len(prompts)} | {generated} | {wall:.1f} | {generated / wall:.1f} | "
                     f"{len(prompts) / wall:.2f} | {statistics.median(q) * 1e3:.0f} | "
                     f"{q[int(0.9 * (len(q) - 1))] * 1e3:.0f} | {wall / len(prompts) * 1e3:.0f} |")
    return lines


def rag_latency(a: argparse.Namespace) -> list[str] | None:
    """End-to-end RAG latency (retrieve + demonstrations-free prompt + generate) per retriever over ``--index``,
    one question at a time and in batches of 8; left out when the index does not exist."""
    if not a.index or not Path(a.index, "manifest.json").is_file():
        return None
    from genret.indexing import Index
    from genret.retrieval import (
        GeneratorConfig,
        RagConfig,
        RagPipeline,
        available_retrievers,
        load_generator,
        load_retriever,
    )

    questions = [json.loads(line)["input"] for line in open(SQUAD / "dev.jsonl", encoding="utf-8")][:a.n] \
        if SQUAD.is_dir() else BUILTIN_QUESTIONS[:a.n]
    gen = load_generator(GeneratorConfig(device=a.device, max_new_tokens=a.max_new_tokens, batch_size=8))
    lines = [f"### End-to-end RAG on {a.index}: {len(questions)} questions, 3 passages, task qa, "
             f"max_new_tokens {a.max_new_tokens}", "",
             "Short answers: `reader` = the span reader (the default), `greedy` = constrained greedy decoding "
             "(`--span-reader greedy`), `free` = unconstrained generation (`span_answers=False`); single = one "
             "question at a time.", "",
             "| retriever | short answers | mode | retrieval ms / question | total ms / question, median | p90 | "
             "questions/s |",
             "|---|---|---|---:|---:|---:|---:|"]
    modes = {"reader": RagConfig(passages=3), "greedy": RagConfig(passages=3, span_reader="greedy"),
             "free": RagConfig(passages=3, span_answers=False)}
    with Index(a.index) as index:
        for name in available_retrievers(index):
            if name == "generative":
                continue  # its own bench: bench/generative.py
            retriever = load_retriever(index, name)
            t = time.perf_counter()
            retriever.batch_search(questions, 3, task="qa")
            retrieval_ms = (time.perf_counter() - t) / len(questions) * 1e3
            for answers, config in modes.items():
                pipe = RagPipeline(gen, retriever, config=config)
                for mode, size in (("single", 1), ("batch 8", 8)):
                    if size > 1 and answers != "reader":
                        continue
                    latencies = []
                    t0 = time.perf_counter()
                    for s in range(0, len(questions), size):
                        t = time.perf_counter()
                        pipe.batch_answer(questions[s:s + size], task="qa")
                        latencies += [time.perf_counter() - t] * len(questions[s:s + size])
                    wall = time.perf_counter() - t0
                    q = sorted(latencies)
                    lines.append(f"| {name} | {answers} | {mode} | {retrieval_ms:.1f} | "
                                 f"{statistics.median(q) * 1e3:.0f} | {q[int(0.9 * (len(q) - 1))] * 1e3:.0f} | "
                                 f"{len(questions) / wall:.2f} |")
    return lines


SECTIONS: list[Callable[[argparse.Namespace], list[str] | None]] = [generator_throughput, rag_latency]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=16, help="prompts")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 8])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--index", default="runs/indexes/squad", help="index for the end-to-end RAG section")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's); 1 gives steadier numbers on a busy machine")
    a = ap.parse_args()
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    for section in SECTIONS:
        lines = section(a)
        if lines:
            print("\n".join(lines) + "\n", flush=True)
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
