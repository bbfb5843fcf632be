"""How much SUPPORTS / REFUTES signal the packaged model's hidden states carry: label read-outs compared (issue 16).

    .venv/bin/python bench/label_probes.py extract [--out runs/label-probes] [--indexes runs/indexes]
    .venv/bin/python bench/label_probes.py probe [--out runs/label-probes]

``extract``: every mini-KILT scifact and climate_fever train and dev claim's prompt as the label head sees it
(``RagPipeline.prepare``: BM25 over ``--indexes/TASK``, 3 passages, no demonstrations), run through the packaged
SmolLM2-135M-Instruct; stores its hidden states at every position of layers 12, 18 and 24 and at the last position of
every layer (float16 ``.npz``, about 1 GB; 10 minutes on 2 cores).  It checks that its last-position states are
``Generator.prompt_features``'s.

``probe``: read-outs fitted on the train claims of both tasks (as the packaged head), accuracy by 5-fold
cross-validation on train and on dev, per task, next to the majority rate:

- ``linear L``: the label head's own fit (``fit_label_head``, L2 100) on the last position of layer L;
- ``attention``: a learned query pooling every position of layer 18, with its last position, then linear;
- ``adapted E``: decoder layer 18 recomputed at the last position with rank-4 LoRA on its projections (the keys and
  values of the other positions frozen), then linear; E epochs of AdamW.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("scifact", "climate_fever")
LABELS = ("SUPPORTS", "REFUTES")
SEQ_LAYERS = (12, 18, 24)


def extract(out: Path, indexes: Path, minikilt: Path) -> None:
    import torch

    from genret.eval import read_kilt
    from genret.indexing import Index
    from genret.retrieval import GeneratorConfig, RagConfig, load_generator, open_pipeline

    out.mkdir(parents=True, exist_ok=True)
    gen = load_generator(GeneratorConfig())
    config = RagConfig(label_head="none")
    for task in TASKS:
        with Index(indexes / task) as index:
            pipe = open_pipeline(index, gen, retriever="bm25", config=config)
            for split in ("train", "dev"):
                kept = [(r, g) for r in read_kilt(minikilt / task / f"{split}.jsonl")
                        if (g := next((o["answer"] for o in r.get("output") or () if o.get("answer")), None))]
                seq: dict[int, list[np.ndarray]] = {k: [] for k in SEQ_LAYERS}
                last, ntok = [], []
                for n, (r, _) in enumerate(kept):
                    prompt = pipe.prepare([r["input"]], task, [[str(r.get("id", ""))]])[0][0]
                    ids = gen.tokenizer(gen.render(prompt), add_special_tokens=False, return_tensors="pt")
                    with torch.inference_mode():
                        states = gen.lm.model(**ids, output_hidden_states=True).hidden_states
                    if n == 0:  # the label head's features are these states
                        want = gen.prompt_features([prompt], (0.6, 0.6))[0]
                        assert np.allclose(states[18][0, -1].numpy(), want, atol=1e-3), "not prompt_features' states"
                    for k in SEQ_LAYERS:
                        seq[k].append(states[k][0].to(torch.float16).numpy())
                    last.append(torch.stack([h[0, -1] for h in states]).to(torch.float16).numpy())
                    ntok.append(states[0].shape[1])
                    if n % 100 == 0:
                        print(f"{task} {split}: {n}/{len(kept)}", flush=True)
                np.savez(out / f"{task}_{split}.npz", last=np.stack(last), ntok=np.array(ntok),
                         gold=np.array([g for _, g in kept]), **{f"seq{k}": np.concatenate(seq[k]) for k in SEQ_LAYERS})


def _load(out: Path, task: str, split: str, layer: int | None):
    import torch

    z = np.load(out / f"{task}_{split}.npz")
    seqs = None
    if layer is not None:
        off = np.concatenate([[0], np.cumsum(z["ntok"])])
        flat = z[f"seq{layer}"]
        seqs = [torch.tensor(flat[off[i]:off[i + 1]].astype(np.float32)) for i in range(len(z["ntok"]))]
    return torch.tensor(z["last"].astype(np.float32)), seqs, torch.tensor([LABELS.index(g) for g in z["gold"]])


def _linear(x, y, l2=100.0):
    """The label head's own fit (``fit_label_head``) on these feature vectors."""
    from genret.retrieval.rag import fit_label_head

    head = fit_label_head(x.tolist(), [LABELS[i] for i in y.tolist()], LABELS, model="", l2=l2)
    return lambda x2: np.array([LABELS.index(p) for p in head.pick(x2.tolist())])


def _sgd(params, logits, y, epochs, *, batch=16, lr=1e-3, wd=0.0, penalty=None):
    """AdamW over ``epochs`` of shuffled minibatches; ``logits(idx)``: the model's logits for those claims;
    ``penalty()``: a regulariser added to each batch's loss."""
    import torch

    opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    rng = np.random.default_rng(0)
    idx = np.arange(len(y))
    for _ in range(epochs):
        rng.shuffle(idx)
        for s in range(0, len(idx), batch):
            b = idx[s:s + batch]
            loss = torch.nn.functional.cross_entropy(logits(b), y[b]) + (penalty() if penalty else 0.0)
            opt.zero_grad()
            loss.backward()
            opt.step()


def _attention(seqs, last, y):
    import torch

    allh = torch.cat(seqs)
    m, s = allh.mean(0), allh.std(0) + 1e-6
    lm, ls = last.mean(0), last.std(0) + 1e-6
    q = torch.nn.Parameter(torch.zeros(allh.shape[1]))
    out = torch.nn.Linear(2 * allh.shape[1], 2)

    def logits(hs, lasts):
        pooled = [torch.softmax(((h - m) / s) @ q, 0) @ ((h - m) / s) for h in hs]
        return out(torch.cat([torch.stack(pooled), (lasts - lm) / ls], 1))

    _sgd([q, *out.parameters()], lambda b: logits([seqs[i] for i in b], last[b]), y, 30, batch=32, lr=3e-3,
         penalty=lambda: 100.0 * ((q ** 2).sum() + (out.weight ** 2).sum()) / len(y))
    return lambda hs, lasts: logits(hs, lasts).argmax(1).detach().numpy()


class _Adapted:
    """Decoder layer 18 recomputed at the last position, rank-4 LoRA on q, o, gate, up and down; keys and values of
    every position from the frozen layer (precomputed once per claim)."""

    def __init__(self, model):
        self.layer, self.rot = model.model.layers[18], model.model.rotary_emb
        self.heads, self.kv = model.config.num_attention_heads, model.config.num_key_value_heads
        self.dim = model.config.hidden_size // self.heads

    def prepare(self, seqs):
        import torch
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        items = []
        with torch.no_grad():
            for h in seqs:
                h = h[None]
                t = h.shape[1]
                cos, sin = self.rot(h, torch.arange(t)[None])
                n = self.layer.input_layernorm(h)
                k = self.layer.self_attn.k_proj(n).view(1, t, self.kv, self.dim).transpose(1, 2)
                v = self.layer.self_attn.v_proj(n).view(1, t, self.kv, self.dim).transpose(1, 2)
                _, k = apply_rotary_pos_emb(k, k, cos, sin)
                items.append((h[0, -1], k[0], v[0], cos[:, -1:], sin[:, -1:]))
        return items

    def fit(self, items, target, y, epochs):
        import torch
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        hidden, inner = target.shape[1], self.layer.mlp.gate_proj.out_features
        mean, std = target.mean(0), target.std(0) + 1e-6
        shapes = {"q": (hidden, hidden), "o": (hidden, hidden), "g": (hidden, inner), "u": (hidden, inner),
                  "d": (inner, hidden)}
        lora = {k: (torch.nn.Parameter(torch.randn(i, 4) * 0.01), torch.nn.Parameter(torch.zeros(4, o)))
                for k, (i, o) in shapes.items()}
        head = torch.nn.Linear(hidden, 2)
        params = [p for ab in lora.values() for p in ab] + list(head.parameters())
        a, mlp, group = self.layer.self_attn, self.layer.mlp, self.heads // self.kv

        def state(x, k, v, cos, sin):
            def low(name, z):
                return z @ lora[name][0] @ lora[name][1]

            n = self.layer.input_layernorm(x)
            q = (a.q_proj(n) + low("q", n)).view(1, self.heads, 1, self.dim)
            q, _ = apply_rotary_pos_emb(q, q, cos, sin)
            w = torch.softmax(q[0] @ k.repeat_interleave(group, 0).transpose(1, 2) / self.dim ** 0.5, -1)
            o = (w @ v.repeat_interleave(group, 0)).reshape(1, -1)
            x = x + a.o_proj(o)[0] + low("o", o)[0]
            z = self.layer.post_attention_layernorm(x)
            mid = mlp.act_fn(mlp.gate_proj(z) + low("g", z)) * (mlp.up_proj(z) + low("u", z))
            return x + mlp.down_proj(mid) + low("d", mid)

        def logits(chosen):
            return head((torch.stack([state(*c) for c in chosen]) - mean) / std)

        _sgd(params, lambda b: logits([items[i] for i in b]), y, epochs, wd=1e-2)
        return lambda chosen: torch.cat([logits(chosen[s:s + 64]).argmax(1) for s in range(0, len(chosen), 64)]
                                        ).detach().numpy()


def probe(out: Path) -> None:
    import torch

    from genret.retrieval import GeneratorConfig, load_generator

    torch.manual_seed(0)
    data = {(t, s): _load(out, t, s, 18) for t in TASKS for s in ("train", "dev")}
    last = torch.cat([data[t, "train"][0] for t in TASKS])
    seqs = [h for t in TASKS for h in data[t, "train"][1]]
    y = torch.cat([data[t, "train"][2] for t in TASKS])
    task_of = np.concatenate([[t] * len(data[t, "train"][2]) for t in TASKS])
    folds = np.array_split(np.random.default_rng(1).permutation(len(y)), 5)
    adapted = _Adapted(load_generator(GeneratorConfig()).lm.model.float().eval())
    for p in adapted.layer.parameters():
        p.requires_grad_(False)
    items = adapted.prepare(seqs)
    dev_items = {t: adapted.prepare(data[t, "dev"][1]) for t in TASKS}

    def linear(layer):
        def fit(tr):
            f = _linear(last[tr, layer], y[tr])
            return lambda split, idx=None: f(last[idx, layer]) if split == "train" else \
                f(data[split, "dev"][0][:, layer])
        return fit

    def attention(tr):
        f = _attention([seqs[i] for i in tr], last[tr, 18], y[tr])
        return lambda split, idx=None: f([seqs[i] for i in idx], last[idx, 18]) if split == "train" else \
            f(data[split, "dev"][1], data[split, "dev"][0][:, 18])

    def adapt(epochs):
        def fit(tr):
            f = adapted.fit([items[i] for i in tr], last[tr, 19], y[tr], epochs)
            return lambda split, idx=None: f([items[i] for i in idx]) if split == "train" else f(dev_items[split])
        return fit

    def acc(pred, gold) -> str:
        return f"{100 * float((np.asarray(pred) == np.asarray(gold)).mean()):.1f}"

    majority = {t: (acc(np.zeros((task_of == t).sum()), y.numpy()[task_of == t]),
                    acc(np.zeros(len(data[t, "dev"][2])), data[t, "dev"][2].numpy())) for t in TASKS}
    print("| read-out | " + " | ".join(f"{t} train CV | {t} dev" for t in TASKS) + " |")
    print("|---|" + "---:|" * (2 * len(TASKS)))
    print("| majority (SUPPORTS) | " + " | ".join(f"{majority[t][0]} | {majority[t][1]}" for t in TASKS) + " |")
    readouts = [(f"linear, layer {k}", linear(k)) for k in SEQ_LAYERS] + [("attention, layer 18", attention)] + \
        [(f"adapted layer 18, {e} epochs", adapt(e)) for e in (4, 8)]
    for name, fit in readouts:
        pred = np.zeros(len(y), int)
        for part in folds:
            pred[part] = fit(np.setdiff1d(np.arange(len(y)), part))("train", part)
        full = fit(np.arange(len(y)))
        cells = [f"{acc(pred[task_of == t], y.numpy()[task_of == t])} | {acc(full(t), data[t, 'dev'][2].numpy())}"
                 for t in TASKS]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=("extract", "probe"))
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "label-probes")
    ap.add_argument("--indexes", type=Path, default=ROOT / "runs" / "indexes")
    ap.add_argument("--minikilt", type=Path, default=ROOT.parent / "shared" / "minikilt")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.step == "extract":
        extract(args.out, args.indexes, args.minikilt)
    else:
        probe(args.out)


if __name__ == "__main__":
    main()
