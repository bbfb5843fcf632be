"""The one place that decides which device and which number format run model work.

``resolve_device`` picks the device; ``resolve_dtype`` the dtype a model runs in there: ``auto`` is bfloat16
where the hardware multiplies bf16 natively (a CPU with AMX or AVX512-BF16, a GPU torch says can), and on a CPU
without it the caller's ``fallback``: dynamic int8 (``quantize_int8``) for the dense encoder, float32 for language
models and training (int8 lost 16 points of squad passage R-Precision in the generative retriever; the encoder's
vectors stay within cosine ~0.97: ``bench/cpu_speed.py``).  The choice is logged once per (role, device, dtype).
Index vectors stay float32 whatever encoded them.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import warnings

from ._errors import ConfigError

log = logging.getLogger("genret")
_SPEC = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
DTYPES = ("auto", "float32", "bfloat16", "float16", "int8")
_BF16_FLAGS = {"amx_bf16", "avx512_bf16"}
# oneDNN's ISA cap (ONEDNN_MAX_CPU_ISA / DNNL_MAX_CPU_ISA): values that still allow bf16 matrix products
_BF16_ISAS = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX10", "ALL", "DEFAULT")
_logged: set[tuple[str, str, str]] = set()


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


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``; empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AMX or AVX512-BF16) and oneDNN is allowed to use it.

    Read from the CPU's flags (torch's own probe where ``/proc/cpuinfo`` is absent); an
    ``ONEDNN_MAX_CPU_ISA`` cap below bf16 (e.g. ``AVX512_CORE``, ``AVX2``) counts as no, since torch then
    emulates bf16, slower than float32.
    """
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").strip().upper()
    if cap and not cap.startswith(_BF16_ISAS):
        return False
    flags = cpu_flags()
    if flags:
        return bool(flags & _BF16_FLAGS)
    try:  # macOS, Windows: torch's probe (private, so guarded)
        import torch

        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except Exception:  # noqa: BLE001 - no probe: assume an ordinary CPU
        return False


def resolve_dtype(spec: str = "auto", device: str = "cpu", *, role: str = "model", training: bool = False,
                  fallback: str = "int8") -> str:
    """The dtype name (``float32``, ``bfloat16``, ``float16`` or ``int8``) a model runs in on ``device``.

    ``auto``: on a CPU, ``bfloat16`` where it is native (``native_bf16``), else ``fallback`` (``int8``, dynamic
    quantization of the linear layers, or ``float32``; always ``float32`` for training); on CUDA, ``bfloat16``
    where torch says the GPU supports it, else ``float16`` (``float32`` for training); elsewhere ``float32``.
    Explicit names are checked: ``int8`` runs on the CPU only and cannot train.  ``role`` names the model in the one
    log line per choice.
    """
    spec = (spec or "auto").strip().lower()
    if spec not in DTYPES:
        raise ConfigError(f"unknown dtype {spec!r}: use {', '.join(DTYPES)}")
    dev = device.split(":")[0]
    if spec == "int8" and (dev != "cpu" or training):
        raise ConfigError("dtype int8 (dynamic quantization) runs on the CPU and for inference only; "
                          "use bfloat16 or float32" + (" to train" if training else f" on {device}"))
    if spec == "auto":
        if dev == "cpu":
            spec = "bfloat16" if native_bf16() else ("float32" if training else fallback)
        elif dev == "cuda":
            import torch

            spec = "bfloat16" if torch.cuda.is_bf16_supported() else ("float32" if training else "float16")
        else:
            spec = "float32"
        key = (role, device, spec)
        if key not in _logged:
            _logged.add(key)
            log.info("%s dtype auto -> %s on %s", role, spec, device)
    return spec


def torch_dtype(name: str):
    """The torch dtype weights are held in for a resolved dtype name (int8 models keep float32 weights until
    ``quantize_int8``)."""
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
            "int8": torch.float32}[name]


def quantize_int8(module):
    """Dynamic int8 quantization of ``module``'s linear layers, in place (weights int8 per output channel,
    activations quantized per batch): torch's ``quantize_dynamic``, measured in ``bench/cpu_speed.py``."""
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():  # torch.ao's deprecation notices: the API still ships and is measured
        warnings.simplefilter("ignore")
        quantize_dynamic(module, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True)
    return module
