"""The shared kernel: the conventions every genret package uses, below all four of them (it imports none).

- errors: ``GenretError`` and its kinds, which the command line prints as one line (exit 2) and the HTTP API maps
  to status codes;
- files: JSON written atomically and read back as versioned, self-describing files; whole directories written in a
  staged sibling under a write lock and swapped in; file checksums;
- progress bars on stderr;
- devices and number formats: the one place that picks the device and the dtype model work runs in;
- models: resolving model specs (names, folders, the packaged SmolLM2 and MiniLM) to loadable locations, the
  default models, and the one lock every model load of the process holds (``model_load_lock``).

Importing it imports neither torch nor transformers: they load on first use.
"""

# errors
from ._errors import ConfigError, GenretError, IndexFormatError, InputError, NotFoundError

# files: atomic JSON, versioned JSON, staged directories, their write lock and their recovery, checksums
from ._json import read_versioned_json, write_json_atomic
from ._writes import restore_interrupted, staged_dir, write_lock
from ._hashing import sha256_file

# progress
from ._progress import progress_bar

# devices and dtypes
from ._device import DTYPES, native_bf16, quantize_int8, resolve_device, resolve_dtype, torch_dtype

# models
from ._models import (
    DEFAULT_DENSE_MODEL, DEFAULT_LM, load_tokenizer, loading_model, model_load_lock, resolve_checkpoint, resolve_lm,
    resolve_model_path,
)

__all__ = [
    "ConfigError", "DEFAULT_DENSE_MODEL", "DEFAULT_LM", "DTYPES", "GenretError", "IndexFormatError", "InputError",
    "NotFoundError", "load_tokenizer", "loading_model", "model_load_lock", "native_bf16", "progress_bar",
    "quantize_int8", "read_versioned_json", "resolve_checkpoint", "resolve_device", "resolve_dtype", "resolve_lm",
    "resolve_model_path", "restore_interrupted", "sha256_file", "staged_dir", "torch_dtype", "write_json_atomic",
    "write_lock",
]
