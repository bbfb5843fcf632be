"""Checking index files (issue 14, point 5): big files are checked by size and a sample hash on every open, and
``verify_index`` / ``genret verify`` read every byte.  Small sample constants make a store-only index "big"."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from genret.core import IndexFormatError
from genret.indexing import Index, IndexConfig, _hashing, _verify, build_index, verify_index
from tests.conftest import PAGES


@pytest.fixture()
def big_files(monkeypatch):
    """Every file over 1 KiB counts as big; samples are 4 blocks of 256 bytes."""
    monkeypatch.setattr(_verify, "HASH_ON_LOAD_MAX_BYTES", 1024)
    monkeypatch.setattr(_hashing, "SAMPLE_BLOCKS", 4)
    monkeypatch.setattr(_hashing, "SAMPLE_BLOCK_BYTES", 256)


@pytest.fixture()
def index(tmp_path, big_files):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(p) + "\n" for p in PAGES))
    build_index(corpus, tmp_path / "ix", IndexConfig(components=()), progress=False)
    store = tmp_path / "ix" / "units.sqlite"
    assert store.stat().st_size > 8 * 1024
    return tmp_path / "ix", store


def _flip(path, offset):
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))


def _between_samples(size: int) -> int:
    starts = _hashing.sample_offsets(size)
    return (starts[1] + _hashing.SAMPLE_BLOCK_BYTES + starts[2]) // 2


def test_a_clean_index_verifies(index):
    ix, store = index
    report = verify_index(ix, progress=False)
    assert report["files"] == 1 and report["bytes"] == store.stat().st_size


def test_a_flipped_byte_in_a_sample_block_fails_the_open(index):
    ix, store = index
    _flip(store, 0)
    with pytest.raises(IndexFormatError, match=r"units.sqlite sample checksum mismatch \(corrupt or altered\)"):
        Index(ix)


def test_a_same_size_foreign_file_fails_the_open(index):
    ix, store = index
    store.write_bytes(os.urandom(store.stat().st_size))
    with pytest.raises(IndexFormatError, match="sample checksum mismatch"):
        Index(ix)


def test_a_flipped_byte_between_samples_is_caught_by_the_full_check(index):
    """The sample misses it (the open succeeds), the full check does not."""
    ix, store = index
    _flip(store, _between_samples(store.stat().st_size))
    Index(ix).close()
    with pytest.raises(IndexFormatError, match="units.sqlite checksum mismatch"):
        verify_index(ix, progress=False)
    with pytest.raises(IndexFormatError, match="checksum mismatch"):
        Index(ix, verify="full")


def test_genret_verify_from_the_command_line(index, capsys):
    from genret.serving import main

    ix, store = index
    assert main(["verify", str(ix), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "1 files" in out and "all match their manifest checksums" in out
    _flip(store, _between_samples(store.stat().st_size))
    assert main(["verify", str(ix), "--quiet"]) == 2
    assert "units.sqlite checksum mismatch" in capsys.readouterr().err


def test_a_foreign_file_in_a_component_folder_is_named_by_verify_and_open(tiny_index, tmp_path):
    """Issue 27, point 9: a foreign `bm25/segments_2` (Lucene opens the newest segments file) passed `verify` and
    failed the open with one very long JVM line."""
    ix = shutil.copytree(tiny_index, tmp_path / "ix")
    (ix / "bm25" / "segments_2").write_bytes(os.urandom(300))
    with pytest.raises(IndexFormatError, match=r"bm25/segments_2 is not a file of the index \(not in its manifest\)"):
        verify_index(ix, progress=False)
    with pytest.raises(IndexFormatError, match="bm25/segments_2 is not a file of the index"):
        Index(ix)
    (ix / "fm" / "tokenizer" / "vocab.json").write_text("{}")  # would change the tokenizer the FM-index is read with
    (ix / "bm25" / "segments_2").unlink()
    with pytest.raises(IndexFormatError, match="fm/tokenizer/vocab.json is not a file of the index"):
        Index(ix)
    (ix / "fm" / "tokenizer" / "vocab.json").unlink()
    (ix / "notes.txt").write_text("the index folder itself may hold other files")
    verify_index(ix, progress=False)


def test_lucene_refusing_its_files_is_one_readable_line(tiny_index, tmp_path):
    from genret.indexing import open_lucene

    ix = shutil.copytree(tiny_index, tmp_path / "ix")
    (ix / "bm25" / "segments_2").write_bytes(os.urandom(300))
    with Index(ix, verify="none") as index, pytest.raises(IndexFormatError) as caught:
        open_lucene(index.path, index.component("bm25"))
    message = str(caught.value)
    assert "Lucene cannot open the BM25 index" in message and "\n" not in message and len(message) < 400, message
