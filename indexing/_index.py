"""``Index``: an opened, verified index directory."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from ..core import NotFoundError
from ._manifest import Component, Manifest, read_manifest
from ._store import STORE_FILE, UnitStore
from ._verify import verify_files


class Index:
    """An index directory: its manifest, its unit store and the files of its components.

    Opening checks the manifest (format, version) and every component file (size; checksum for
    files up to 256 MiB, or all with ``verify="full"``); problems raise ``IndexFormatError``.
    """

    def __init__(self, path: str | Path, *, verify: Literal["none", "auto", "full"] = "auto") -> None:
        self.path = Path(path)
        self.manifest: Manifest = read_manifest(self.path)
        verify_files(self.path, self.manifest, verify)
        self.store = UnitStore(self.path / STORE_FILE)

    @property
    def name(self) -> str:
        return self.path.name

    def has(self, component: str) -> bool:
        return component in self.manifest.components

    def component(self, name: str) -> Component:
        try:
            return self.manifest.components[name]
        except KeyError:
            have = sorted(c for c in self.manifest.components if c != "store")
            raise NotFoundError(f"index {self.path} has no {name!r} component (it has: {have}); "
                                f"rebuild with `genret index … --{name}`") from None

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Index({str(self.path)!r}, units={len(self.store)})"
