"""The manifest's own checksum and its parameter checks (issue 27, point 2).

Before, one flipped bit in ``"k1": 0.9`` (→ 0.1) or an edited ``"b"`` re-ranked BM25 silently and ``genret verify``
passed; ``"b": 1.4`` was a Java traceback; and a flip in a file's recorded sha256 was blamed on the data file
("bm25/_0.nvd checksum mismatch … restore the file").  The manifest now carries a checksum over every field, checked
first by every open and by ``verify``; a deliberate edit is sealed with ``seal_manifest``, whose parameters are
validated like an open's."""

from __future__ import annotations

import json
import shutil

import pytest

from genret.core import ConfigError, IndexFormatError
from genret.indexing import Index, IndexConfig, build_index, open_lucene, seal_manifest, verify_index
from tests.conftest import PAGES

MANIFEST = "manifest.json"


@pytest.fixture
def index_copy(tiny_index, tmp_path):
    return shutil.copytree(tiny_index, tmp_path / "copy")


@pytest.fixture
def store_only(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(p) + "\n" for p in PAGES))
    build_index(corpus, tmp_path / "ix", IndexConfig(components=()), progress=False)
    return tmp_path / "ix"


def _edit(index, fn, *, seal: bool = False):
    raw = json.loads((index / MANIFEST).read_text())
    fn(raw)
    (index / MANIFEST).write_text(json.dumps(raw, indent=1))
    if seal:
        seal_manifest(index)


def _set_bm25(**params):
    return lambda m: m["components"]["bm25"]["params"].update(params)


@pytest.mark.parametrize("edit", [
    _set_bm25(k1=0.1), _set_bm25(b=0.75), _set_bm25(directory="fm"),
    lambda m: m["components"]["store"]["files"]["units.sqlite"].update(sha256="0" * 64),
    lambda m: m["units"].update(count=9), lambda m: m.update(created="2001-01-01T00:00:00+00:00"),
])
def test_an_edited_manifest_is_refused_by_open_and_verify_naming_the_manifest(index_copy, edit):
    _edit(index_copy, edit)
    with pytest.raises(IndexFormatError, match=r"manifest.json checksum mismatch \(edited or corrupt\)"):
        Index(index_copy)
    with pytest.raises(IndexFormatError, match=r"manifest.json checksum mismatch"):
        verify_index(index_copy, progress=False)


def test_every_flipped_byte_of_the_manifest_is_blamed_on_the_manifest(store_only):
    """The issue's probe, every byte: each flip is refused, by the manifest's name, never a data file's."""
    original = (store_only / MANIFEST).read_bytes()
    for i in range(len(original)):
        flipped = bytearray(original)
        flipped[i] ^= 1 << (i % 8)
        (store_only / MANIFEST).write_bytes(bytes(flipped))
        with pytest.raises(IndexFormatError) as caught:
            verify_index(store_only, progress=False)
        message = str(caught.value)
        assert "manifest" in message and "units.sqlite" not in message and "\n" not in message, (i, message)
    (store_only / MANIFEST).write_bytes(original)
    verify_index(store_only, progress=False)


def test_a_sealed_edit_takes_effect(index_copy):
    _edit(index_copy, _set_bm25(k1=1.2, b=0.75), seal=True)
    with Index(index_copy) as index:
        assert index.component("bm25").params["k1"] == 1.2
    verify_index(index_copy, progress=False)


@pytest.mark.parametrize("params, message", [
    ({"b": 1.4}, "b: Input should be less than or equal to 1"),
    ({"b": -0.1}, "b: Input should be greater than or equal to 0"),
    ({"k1": -1}, "k1: Input should be greater than or equal to 0"),
    ({"k1": float("inf")}, "k1: Input should be a (finite|valid) number"),
    ({"count": -3}, "count: Input should be greater than or equal to 0"),
    ({"directory": "../elsewhere"}, "directory: .*inside the index"),
    ({"directory": "/tmp"}, "directory: .*inside the index"),
])
def test_out_of_range_parameters_are_one_line_errors(index_copy, params, message):
    with pytest.raises(IndexFormatError, match=rf"component 'bm25' \(bm25-lucene\): {message}"):
        _edit(index_copy, _set_bm25(**params), seal=True)
    raw = json.loads((index_copy / MANIFEST).read_text())
    raw["components"]["bm25"]["params"].update(params)
    from genret.indexing import Manifest, write_manifest

    write_manifest(index_copy, Manifest.model_validate({k: v for k, v in raw.items() if k != "checksum"}))
    with pytest.raises(IndexFormatError, match=rf"component 'bm25' \(bm25-lucene\): {message}"):
        Index(index_copy)


def test_a_file_name_outside_the_index_is_refused(index_copy):
    def outside(m):
        m["components"]["store"]["files"]["../units.sqlite"] = m["components"]["store"]["files"].pop("units.sqlite")

    with pytest.raises(IndexFormatError, match=r"'\.\./units\.sqlite'.*inside the index"):
        _edit(index_copy, outside, seal=True)


@pytest.mark.parametrize("k1, b", [(0.9, 1.4), (-1.0, 0.4), (float("nan"), 0.4)])
def test_search_time_bm25_parameters_out_of_range_are_one_line_errors(tiny_index, k1, b):
    with Index(tiny_index) as index, pytest.raises(ConfigError, match=r"BM25 (k1|b) must be"):
        open_lucene(index.path, index.component("bm25"), k1=k1, b=b)


def test_an_index_of_format_version_1_without_a_checksum_still_opens(store_only):
    _edit(store_only, lambda m: (m.pop("checksum"), m.update(format_version=1)))
    with Index(store_only) as index:
        assert len(index.store) == 10
    verify_index(store_only, progress=False)
    seal_manifest(store_only)  # upgrades it
    raw = json.loads((store_only / MANIFEST).read_text())
    assert raw["format_version"] == 2 and raw["checksum"].startswith("sha256:")


def test_a_current_manifest_without_its_checksum_is_refused(store_only):
    _edit(store_only, lambda m: m.pop("checksum"))
    with pytest.raises(IndexFormatError, match=r"manifest.json is corrupt: no checksum"):
        Index(store_only)


def test_an_unknown_version_names_the_versions_this_genret_reads(store_only):
    _edit(store_only, lambda m: m.update(format_version=7))
    with pytest.raises(IndexFormatError, match=r"format version 7; this genret reads version 2 \(and 1\)"):
        Index(store_only)


def test_a_build_refuses_bm25_parameters_lucene_would_refuse():
    from pydantic import ValidationError

    from genret.indexing import BM25Config

    for bad in ({"k1": float("inf")}, {"k1": float("nan")}, {"b": 1.4}):
        with pytest.raises(ValidationError):
            BM25Config(**bad)
