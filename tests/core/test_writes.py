"""Writing an index safely (issue 14, points 1–3): one writer at a time, ``--force`` only over an index or an empty
folder, replacement without a window, and what a killed writer left behind recovered or removed by the next one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from genret.core import GenretError, write_lock
from genret.indexing import Index, IndexConfig, add_to_index, build_index
from tests.conftest import PAGES

HOLD = """
import sys, time
from genret.core import write_lock
with write_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


@pytest.fixture()
def corpora(tmp_path):
    for name, pages in (("first.jsonl", PAGES[:2]), ("second.jsonl", PAGES[2:4]), ("third.jsonl", PAGES[4:])):
        (tmp_path / name).write_text("".join(json.dumps(p) + "\n" for p in pages))
    return tmp_path


def _store_only(corpora: Path, out: Path) -> Path:
    build_index(corpora / "first.jsonl", out, IndexConfig(components=()), progress=False)
    return out


def _holder(path: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_fails_with_one_line_naming_the_holder(corpora, tmp_path):
    ix = _store_only(corpora, tmp_path / "ix")
    holder = _holder(ix, 60)
    try:
        with pytest.raises(GenretError, match=rf"ix is being written by pid {holder.pid}, .*since .*GENRET_LOCK_WAIT"):
            add_to_index(ix, corpora / "second.jsonl", progress=False)
        with pytest.raises(GenretError, match="is being written by"):
            build_index(corpora / "second.jsonl", ix, IndexConfig(components=()), force=True, progress=False)
    finally:
        holder.kill()
        holder.wait()
    with Index(ix) as index:
        assert index.manifest.corpus.pages == 2  # nothing was added while the lock was held
    add_to_index(ix, corpora / "second.jsonl", progress=False)  # the killed holder left no stale lock
    assert not (tmp_path / ".ix.lock").exists()


def test_a_waiting_writer_goes_on_when_the_lock_is_released(corpora, tmp_path, monkeypatch):
    ix = _store_only(corpora, tmp_path / "ix")
    holder = _holder(ix, 1.0)
    monkeypatch.setenv("GENRET_LOCK_WAIT", "60")
    t0 = time.monotonic()
    m = add_to_index(ix, corpora / "second.jsonl", progress=False)
    holder.wait()
    assert m.corpus.pages == 4 and time.monotonic() - t0 >= 0.5


@pytest.mark.slow
def test_two_concurrent_adds_keep_every_page(corpora, tmp_path):
    """The issue's scenario: two `genret add` runs at once.  Before the lock both exited 0 and one's pages were
    lost; now the second waits (GENRET_LOCK_WAIT) and the index ends with every page."""
    ix = _store_only(corpora, tmp_path / "ix")
    env = {**os.environ, "GENRET_LOCK_WAIT": "120", "HF_HUB_OFFLINE": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "genret", "add", str(ix), str(corpora / name),
                               "--quiet"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in ("second.jsonl", "third.jsonl")]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    with Index(ix) as index:
        assert index.manifest.corpus.pages == len(PAGES)
        assert {u.page_id for u in index.store.get(list(range(len(index.store))))} == {p["id"] for p in PAGES}


def test_force_refuses_a_folder_that_is_not_an_index(corpora, tmp_path):
    mine = tmp_path / "thesis"
    (mine / "sub").mkdir(parents=True)
    (mine / "thesis.txt").write_text("four years of work")
    (mine / "sub" / "data.csv").write_text("a,b\n1,2\n")
    with pytest.raises(GenretError, match=r"thesis is not a genret index \(it holds sub, thesis.txt\); force=True"):
        build_index(corpora / "first.jsonl", mine, IndexConfig(components=()), force=True, progress=False)
    assert (mine / "thesis.txt").read_text() == "four years of work" and (mine / "sub" / "data.csv").is_file()
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(GenretError, match="is not a folder"):
        build_index(corpora / "first.jsonl", tmp_path / "a-file", IndexConfig(components=()), force=True,
                    progress=False)


def test_force_replaces_an_index_or_an_empty_folder(corpora, tmp_path):
    (tmp_path / "empty").mkdir()
    build_index(corpora / "first.jsonl", tmp_path / "empty", IndexConfig(components=()), force=True, progress=False)
    ix = _store_only(corpora, tmp_path / "ix")
    build_index(corpora / "second.jsonl", ix, IndexConfig(components=()), force=True, progress=False)
    with Index(ix) as index:
        assert {u.page_id for u in index.store.get(list(range(len(index.store))))} == {p["id"] for p in PAGES[2:4]}
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_replacing_an_index_exchanges_the_folders_in_one_step(corpora, tmp_path, monkeypatch):
    """On Linux the staged folder and the index swap places in one renameat2(RENAME_EXCHANGE): the path is never
    missing, and the old version is removed afterwards."""
    from genret.core import _writes

    if not sys.platform.startswith("linux"):
        pytest.skip("RENAME_EXCHANGE is Linux's")
    calls = []
    real = _writes._exchange
    monkeypatch.setattr(_writes, "_exchange", lambda a, b: calls.append((a.name, b.name)) or real(a, b))
    ix = _store_only(corpora, tmp_path / "ix")
    add_to_index(ix, corpora / "second.jsonl", progress=False)
    assert calls == [(f".ix.adding-{os.getpid()}", "ix")]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".ix")) == []


def test_a_crash_between_two_renames_is_recovered_by_the_next_writer(corpora, tmp_path, monkeypatch):
    """Where the folders cannot be exchanged, the old version is moved aside first; a crash right after leaves no
    index at the path.  The next writer (holding the lock) puts the old version back, then does its work."""
    ix = _crash_in_the_fallback_swap(corpora, tmp_path, monkeypatch)
    m = add_to_index(ix, corpora / "third.jsonl", progress=False)  # restores the old version, then adds to it
    assert m.corpus.pages == 3 and not list(tmp_path.glob(".ix.*"))


def test_leftovers_of_killed_writers_are_removed_by_the_next_write(corpora, tmp_path):
    ix = _store_only(corpora, tmp_path / "ix")
    for name in (".ix.building-4242", ".ix.adding-4343"):
        (tmp_path / name / "bm25").mkdir(parents=True)
        (tmp_path / name / "bm25" / "big.bin").write_bytes(b"\0" * (1 << 20))
    (tmp_path / ".other.building-1").mkdir()  # another index's: not touched
    with write_lock(ix):
        pass
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [".other.building-1"]


@pytest.mark.slow
def test_a_build_killed_midway_leaves_the_old_index_and_the_next_build_cleans_up(corpora, tmp_path):
    ix = _store_only(corpora, tmp_path / "ix")
    big = tmp_path / "big.jsonl"
    big.write_text("".join(json.dumps({"id": f"p{i}", "title": f"Page {i}", "text": [f"paragraph {i} " * 40] * 20})
                           + "\n" for i in range(3000)))
    proc = subprocess.Popen([sys.executable, "-m", "genret", "index", str(big), "--out", str(ix),
                             "--force", "--bm25", "--quiet"], env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".ix.building-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.kill()
    proc.wait()
    with Index(ix) as index:
        assert index.manifest.corpus.pages == 2  # the old index, untouched
    assert list(tmp_path.glob(".ix.building-*"))
    build_index(corpora / "second.jsonl", ix, IndexConfig(components=()), force=True, progress=False)
    assert not list(tmp_path.glob(".ix.*"))


def _disk_fills_after(monkeypatch, files: int) -> None:
    """``shutil.copytree`` copies ``files`` files, then the disk is full (ENOSPC), as on a real full disk."""
    import errno
    import shutil

    real = shutil.copytree
    copied = []

    def copy_until_full(src, dst, *args, **kwargs):
        def copy(s, d, *, follow_symlinks=True):
            if len(copied) >= files:
                Path(d).write_bytes(b"\0" * 100)  # what fit before the disk filled
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), d)
            copied.append(s)
            return shutil.copy2(s, d, follow_symlinks=follow_symlinks)

        return real(src, dst, *args, **{**kwargs, "copy_function": copy})

    monkeypatch.setattr(shutil, "copytree", copy_until_full)


def test_a_full_disk_while_staging_a_copy_leaves_no_staging_folder(corpora, tmp_path, monkeypatch):
    """`genret add` on a full disk (issue 27, point 8): the partial staging copy was left behind because the copy
    ran before the block that removes the staging folder on failure."""
    from genret.core import staged_dir

    ix = _store_only(corpora, tmp_path / "ix")
    before = {p.name: p.read_bytes() for p in ix.iterdir()}
    _disk_fills_after(monkeypatch, 1)
    with pytest.raises(OSError, match="No space left on device"):
        add_to_index(ix, corpora / "second.jsonl", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert {p.name: p.read_bytes() for p in ix.iterdir()} == before
    with pytest.raises(OSError, match="No space left on device"), staged_dir(ix, "adding", copy_from=ix):
        pass
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_full_disk_during_add_is_one_line_from_the_command_line(corpora, tmp_path, monkeypatch, capsys):
    from genret.serving import main

    ix = _store_only(corpora, tmp_path / "ix")
    _disk_fills_after(monkeypatch, 0)
    assert main(["add", str(ix), str(corpora / "second.jsonl"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no space left on device" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_an_output_folder_under_a_regular_file_is_one_clear_line(corpora, tmp_path, capsys):
    """`genret index … --out afile/sub` said "File exists: …/afile" (issue 27, point 9)."""
    from genret.serving import main

    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(GenretError, match=r"cannot write .*afile/sub/deeper: .*afile is a file, not a folder"):
        build_index(corpora / "first.jsonl", tmp_path / "afile" / "sub" / "deeper", IndexConfig(components=()),
                    progress=False)
    assert main(["index", str(corpora / "first.jsonl"), "--out", str(tmp_path / "afile" / "sub"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("afile is a file, not a folder") and len(err.splitlines()) == 1, err
    assert (tmp_path / "afile").read_text() == "not a folder"


def _crash_in_the_fallback_swap(corpora, tmp_path, monkeypatch) -> Path:
    """An index whose last write died between the two renames of the fallback swap: no `ix`, the old version in
    `.ix.old-PID`."""
    from genret.core import _writes

    ix = _store_only(corpora, tmp_path / "ix")
    monkeypatch.setattr(_writes, "_exchange", lambda a, b: False)
    real_replace = os.replace

    def crash_after_moving_aside(src, dst):
        real_replace(src, dst)
        if ".old-" in str(dst):
            raise KeyboardInterrupt("killed between the two renames")

    monkeypatch.setattr(_writes.os, "replace", crash_after_moving_aside)
    with pytest.raises(KeyboardInterrupt):
        add_to_index(ix, corpora / "second.jsonl", progress=False)
    monkeypatch.setattr(_writes.os, "replace", real_replace)
    assert not ix.exists() and list(tmp_path.glob(".ix.old-*"))
    return ix


def test_a_reader_after_a_crash_in_the_fallback_swap_gets_the_old_version_back(corpora, tmp_path, monkeypatch):
    """Readers saw "no index at ix: not a directory" with no word of `.ix.old-PID` (issue 27, point 9).  With no
    writer at work, the reader puts the old version back, as the next writer would."""
    ix = _crash_in_the_fallback_swap(corpora, tmp_path, monkeypatch)
    with Index(ix) as index:
        assert index.manifest.corpus.pages == 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_reader_that_cannot_restore_the_old_version_says_where_it_is(corpora, tmp_path, monkeypatch):
    """While a writer holds the lock (or the reader may not write beside the index), the reader does not touch the
    backup; its error names it and how to put it back."""
    import fcntl

    from genret.core import IndexFormatError

    ix = _crash_in_the_fallback_swap(corpora, tmp_path, monkeypatch)
    old = next(tmp_path.glob(".ix.old-*"))
    with open(tmp_path / ".ix.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a writer at work
        with pytest.raises(IndexFormatError, match=rf"no index at .*ix: .*interrupted write left the previous "
                                                   rf"version in .*{old.name}.*mv "):
            Index(ix)
    assert old.is_dir() and not ix.exists()
