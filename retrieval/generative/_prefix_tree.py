"""Many token sequences after one prompt, packed as a prefix tree: each distinct prefix is one position.

Teacher forcing the keys of a query (``Stepper.teacher_force``) asks log P(sequence | prompt) for tens to
hundreds of short sequences that share beginnings (" Denver", " Denver Broncos", " Denver won").  Run as a
batch of separate rows, every row copies the prompt's KV cache and recomputes the shared tokens.  Packed as a
tree, the sequences of one prompt become one row read after the prompt's cache: a position attends to the
prompt and to its own ancestors only (a 4-D attention mask), takes the position its depth gives, and a shared
prefix is computed once.  Only positions with children are fed to the model — a leaf's probability is read off
its parent's output — so the output layer runs once per distinct prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class PrefixTree:
    """The tree of one prompt's sequences.  Node ``v`` holds ``tokens[v]`` after its ``parent[v]`` (-1: right
    after the prompt) at ``depth[v]`` (0: the first token).  ``inputs`` are the nodes with children, in the order
    the model reads them (every node after its parent); ``paths[i]`` the nodes of sequence ``i``, in order."""

    tokens: np.ndarray
    parent: np.ndarray
    depth: np.ndarray
    inputs: np.ndarray
    paths: list[list[int]]

    @classmethod
    def build(cls, sequences: Sequence[Sequence[int]]) -> PrefixTree:
        children: dict[tuple[int, int], int] = {}
        tokens: list[int] = []
        parent: list[int] = []
        depth: list[int] = []
        paths: list[list[int]] = []
        for seq in sequences:
            node, path = -1, []
            for d, tok in enumerate(seq):
                nxt = children.get((node, int(tok)))
                if nxt is None:
                    nxt = children[(node, int(tok))] = len(tokens)
                    tokens.append(int(tok))
                    parent.append(node)
                    depth.append(d)
                node = nxt
                path.append(node)
            paths.append(path)
        par = np.asarray(parent, dtype=np.int64)
        has_child = np.zeros(len(tokens), dtype=bool)
        has_child[par[par >= 0]] = True
        return cls(np.asarray(tokens, dtype=np.int64), par, np.asarray(depth, dtype=np.int64),
                   np.flatnonzero(has_child), paths)

    def visibility(self) -> np.ndarray:
        """(inputs, inputs) booleans: input ``i`` sees input ``j`` when ``j`` is ``i`` or one of its ancestors."""
        slot = np.full(len(self.tokens), -1, dtype=np.int64)
        slot[self.inputs] = np.arange(len(self.inputs))
        seen = np.zeros((len(self.inputs), len(self.inputs)), dtype=bool)
        for i, v in enumerate(self.inputs):  # a parent is always read before its children
            p = self.parent[v]
            if p >= 0:
                seen[i] = seen[slot[p]]
            seen[i, i] = True
        return seen


def running_sums(tree: PrefixTree, lp: np.ndarray) -> list[np.ndarray]:
    """Each sequence's running sum of its nodes' log-probabilities (one array per sequence)."""
    cum = np.zeros(len(lp), dtype=np.float64)
    for v in range(len(lp)):  # parents come first
        p = tree.parent[v]
        cum[v] = lp[v] + (cum[p] if p >= 0 else 0.0)
    return [cum[path] for path in tree.paths]


def child_logprobs(tree: PrefixTree, hidden, head, block: int = 256) -> np.ndarray:
    """log P(node's token | its ancestors) for every node below the first level, from ``hidden`` (the model's last
    hidden states at ``tree.inputs``, in order) through the output layer ``head``, a block of positions at a time
    (a block's logits are vocabulary-wide)."""
    import torch

    slot = np.full(len(tree.tokens), -1, dtype=np.int64)
    slot[tree.inputs] = np.arange(len(tree.inputs))
    inner = np.flatnonzero(tree.parent >= 0)
    at, tok = slot[tree.parent[inner]], tree.tokens[inner]
    got = np.zeros(len(inner))
    for s in range(0, len(tree.inputs), block):
        logits = head(hidden[s:s + block]).float()
        lse = torch.logsumexp(logits, dim=-1)
        sel = np.flatnonzero((at >= s) & (at < s + block))
        a = torch.from_numpy(at[sel] - s).to(logits.device)
        got[sel] = (logits[a, torch.from_numpy(tok[sel]).to(logits.device)] - lse[a]).double().cpu().numpy()
    return got
