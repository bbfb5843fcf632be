"""The one place that decides which device runs model and index work."""

from __future__ import annotations

import logging
import re

from ._errors import ConfigError

log = logging.getLogger("genret")
_SPEC = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def resolve_device(spec: str = "auto") -> str:
    """``auto`` → ``cuda`` when torch sees a GPU, else ``cpu``; explicit specs are checked.

    Torch is imported here, on first use, never at import time of genret.
    """
    spec = (spec or "auto").strip().lower()
    if not _SPEC.match(spec):
        raise ConfigError(f"unknown device {spec!r}: use auto, cpu, cuda, cuda:N or mps")
    if spec == "cpu":
        return "cpu"
    import torch

    if spec == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        log.info("device auto -> %s", device)
        return device
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {spec!r} asked for, but torch sees no CUDA GPU")
    if spec == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps' asked for, but it is not available")
    return spec
