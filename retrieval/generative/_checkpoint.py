"""Retriever checkpoints: model + tokenizer (save_pretrained), prompts, prompt vectors, trainer state.

Everything is safetensors or JSON (no pickle); a checkpoint is written into a temporary sibling
directory and swapped into place, so an interrupted save never leaves a half checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

from genret.core import staged_dir

VECTORS_FILE = "prompt_vectors.safetensors"
PROMPTS_FILE = "prompts.json"
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"


def load_prompt_vectors(checkpoint: str | Path) -> dict:
    """``{task: tensor (n_vectors, hidden)}`` saved with a checkpoint (empty if it has none)."""
    path = Path(checkpoint) / VECTORS_FILE
    if not path.is_file():
        return {}
    from safetensors.torch import load_file

    return dict(load_file(str(path)))


def save_checkpoint(out: Path, lm, prompts: dict, vectors: dict, state: dict, optimizer=None) -> None:
    """Write a complete checkpoint to ``out`` (atomically replacing an older one)."""
    from safetensors.torch import save_file

    with staged_dir(out, "saving") as tmp:
        lm.model.save_pretrained(tmp)
        lm.tokenizer.save_pretrained(tmp)
        (tmp / PROMPTS_FILE).write_text(json.dumps({k: v.model_dump() for k, v in prompts.items()}, indent=1))
        if vectors:
            save_file({k: v.detach().cpu().contiguous() for k, v in vectors.items()}, str(tmp / VECTORS_FILE))
        if optimizer is not None:
            tensors, groups = _flatten_optimizer(optimizer.state_dict())
            save_file(tensors, str(tmp / OPTIMIZER_FILE))
            state = {**state, "optimizer_param_groups": groups}
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))


def load_state(checkpoint: Path) -> dict | None:
    path = checkpoint / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _flatten_optimizer(sd: dict) -> tuple[dict, list]:
    tensors = {}
    for idx, st in sd["state"].items():
        for name, value in st.items():
            tensors[f"{idx}.{name}"] = value.detach().cpu().contiguous()
    return tensors, sd["param_groups"]


def restore_optimizer(optimizer, checkpoint: Path, groups: list) -> None:
    """Load the optimizer state written by ``save_checkpoint``."""
    from safetensors.torch import load_file

    flat = load_file(str(checkpoint / OPTIMIZER_FILE))
    state: dict[int, dict] = {}
    for key, value in flat.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})
