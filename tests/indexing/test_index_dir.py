"""Index directory: manifest contents, atomic writes, and the checks made on open."""

import json
import shutil

import pytest

from genret.core import GenretError, IndexFormatError, InputError
from genret.indexing import Index, IndexConfig, build_index
from genret.indexing._manifest import FORMAT_VERSION, MANIFEST_FILE, manifest_checksum


def test_manifest_describes_the_index(tiny_index, data_dir):
    m = Index(tiny_index).manifest
    assert m.format == "genret-index" and m.format_version == FORMAT_VERSION
    assert m.corpus.pages == 5 and m.corpus.paragraphs == 10 and m.units.count == 10
    assert m.units.kind == "paragraph"
    dense = m.components["dense"]
    assert dense.kind == "dense-faiss" and dense.model.endswith("all-MiniLM-L6-v2")
    assert dense.params["dim"] == 384 and dense.params["count"] == 10
    assert set(dense.files) == {"dense.f32", "dense.faiss"}
    assert all(len(f.sha256) == 64 for c in m.components.values() for f in c.files.values())


def test_corpus_hash_is_format_independent(data_dir, tmp_path):
    cfg = IndexConfig(components=())
    a = build_index(data_dir / "corpus.jsonl", tmp_path / "a", cfg, progress=False)
    b = build_index(data_dir / "kilt_ks.jsonl.gz", tmp_path / "b", cfg, progress=False)
    # KILT paragraphs carry trailing newlines, so the texts differ; the same file gives the same hash
    c = build_index(data_dir / "corpus.jsonl", tmp_path / "c", cfg, progress=False)
    assert a.corpus.sha256 == c.corpus.sha256 != b.corpus.sha256
    assert a.units.count == b.units.count == 10


def test_existing_index_needs_force(data_dir, tmp_path):
    cfg = IndexConfig(components=())
    build_index(data_dir / "corpus.jsonl", tmp_path / "ix", cfg, progress=False)
    with pytest.raises(GenretError, match="already exists; pass force=True to replace it"):
        build_index(data_dir / "corpus.jsonl", tmp_path / "ix", cfg, progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(GenretError, match="not a folder; force=True replaces only"):
        build_index(data_dir / "corpus.jsonl", tmp_path / "file", cfg, force=True, progress=False)
    (tmp_path / "file").unlink()
    m = build_index(data_dir / "kilt_ks.jsonl.gz", tmp_path / "ix", cfg, force=True, progress=False)
    assert Index(tmp_path / "ix").manifest.corpus.sha256 == m.corpus.sha256
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix"]  # no temporary or old directories left


def test_the_command_line_says_force_as_a_flag(data_dir, tmp_path, capsys):
    from genret.serving import main

    args = ["index", str(data_dir / "corpus.jsonl"), "--out", str(tmp_path / "ix"), "--bm25", "--quiet"]
    assert main(args) == 0 and main(args) == 2
    err = capsys.readouterr().err
    assert "already exists; pass --force to replace it" in err and "force=True" not in err


def test_failed_build_leaves_nothing_and_keeps_old_index(data_dir, tmp_path):
    cfg = IndexConfig(components=())
    build_index(data_dir / "corpus.jsonl", tmp_path / "ix", cfg, progress=False)
    before = (tmp_path / "ix" / MANIFEST_FILE).read_text()
    bad = tmp_path / "dup.jsonl"
    bad.write_text('{"id": "a", "text": "x"}\n{"id": "b", "text": "y"}\n{"id": "a", "text": "z"}\n')
    with pytest.raises(InputError, match=r"dup.jsonl:3.*duplicate page id 'a' \(first seen at .*dup.jsonl:1\)"):
        build_index(bad, tmp_path / "ix", cfg, force=True, progress=False)
    assert (tmp_path / "ix" / MANIFEST_FILE).read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dup.jsonl", "ix"]


def test_skip_bad_is_recorded(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text('{"id": "a", "text": "x"}\nbroken\n{"id": "b", "text": "y"}\n')
    with pytest.raises(InputError, match=r"c.jsonl:2: invalid JSON"):
        build_index(f, tmp_path / "ix", IndexConfig(components=()), progress=False)
    m = build_index(f, tmp_path / "ix", IndexConfig(components=(), skip_bad=True), progress=False)
    assert m.corpus.pages == 2 and m.corpus.skipped == 1


def test_unknown_component_and_empty_corpus(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text('{"id": "a", "text": "   "}\n')
    with pytest.raises(GenretError, match="unknown index component"):
        build_index(f, tmp_path / "ix", IndexConfig(components=("nope",)), progress=False)
    with pytest.raises(InputError, match="no units"):
        build_index(f, tmp_path / "ix", IndexConfig(components=()), progress=False)


@pytest.fixture
def index_copy(tiny_index, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(tiny_index, dst)
    return dst


def _edit_manifest(path, fn):
    """Edit the manifest and record the edit's checksum (what an open then says about the edit itself)."""
    m = json.loads((path / MANIFEST_FILE).read_text())
    fn(m)
    m["checksum"] = manifest_checksum(m)
    (path / MANIFEST_FILE).write_text(json.dumps(m))


@pytest.mark.parametrize("damage, message", [
    (lambda p: (p / MANIFEST_FILE).unlink(), "manifest.json is missing"),
    (lambda p: (p / MANIFEST_FILE).write_text("{not json"), "is corrupt"),
    (lambda p: _edit_manifest(p, lambda m: m.update(format="other-tool")), "not a genret index"),
    (lambda p: _edit_manifest(p, lambda m: m.update(format_version=99)), "format version 99"),
    (lambda p: _edit_manifest(p, lambda m: m.pop("corpus")), "corpus: Field required"),
    (lambda p: (p / "dense.faiss").unlink(), "dense.faiss is missing"),
    (lambda p: (p / "dense.f32").write_bytes((p / "dense.f32").read_bytes()[:100]), "truncated"),
    (lambda p: (p / "dense.f32").write_bytes(b"\0" * (p / "dense.f32").stat().st_size), "checksum mismatch"),
])
def test_damaged_index_is_refused_clearly(index_copy, damage, message):
    damage(index_copy)
    with pytest.raises(IndexFormatError, match=message):
        Index(index_copy)


def test_missing_directory(tmp_path):
    with pytest.raises(IndexFormatError, match="no index at"):
        Index(tmp_path / "absent")


def test_component_params_are_typed_and_checked_on_open(tiny_index, tmp_path):
    """Each component's params are read through its kind's model; a missing field is a clear format error."""
    from genret.indexing import DenseParams, FMParams

    with Index(tiny_index) as index:
        dense = index.component("dense").typed_params(DenseParams)
        assert dense.dim == 384 and dense.count == len(index.store)
        with pytest.raises(IndexFormatError, match="has no FMParams"):
            index.component("dense").typed_params(FMParams)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_index, broken)
    _edit_manifest(broken, lambda m: m["components"]["dense"]["params"].pop("dim"))
    with pytest.raises(IndexFormatError, match=r"component 'dense' \(dense-faiss\): dim: Field required"):
        Index(broken)
