"""The fitted files that ship with the package (the span reader, the label head), each read once per process."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any


@functools.cache
def packaged(cls: Any, name: str) -> Any:
    """``cls.load`` of the packaged file ``name`` (beside this module), read once per process: the object is
    frozen, so one copy serves every pipeline."""
    return cls.load(Path(__file__).with_name(name))
