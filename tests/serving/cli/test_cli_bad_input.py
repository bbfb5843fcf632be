"""Bad bytes and a hostile environment on the command line: one line naming the file, line and field (or the
record), exit code 2, skippable with --skip-bad where it is a record, nothing half-written; and output cut short
by its reader ends quietly."""

import errno
import gzip
import json
import subprocess
import sys

import pytest

from genret.serving import main

GOOD = json.dumps({"id": "ok", "title": "Ok", "text": "a good paragraph"}).encode() + b"\n"


def _big_paragraph() -> bytes:  # one character more than a paragraph may have (10,000,000)
    return json.dumps({"id": "big", "title": "Big", "text": "w" * 10_000_001}).encode()


BAD_LINES = {
    "non-utf8": (lambda: b'{"id": "b", "title": "\xff", "text": "x"}', "bad.jsonl:2: not UTF-8 (byte 0xff"),
    "surrogate": (lambda: b'{"id": "b", "text": "x \\ud800"}', "bad.jsonl:2, field 'text': lone surrogate \\ud800"),
    "deep-json": (lambda: b'{"id": "b", "text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                  "bad.jsonl:2: invalid JSON (nested too deeply to parse)"),
    "huge-paragraph": (_big_paragraph, "bad.jsonl:2, field 'text': paragraph 1: 10,000,001 characters"),
}


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err and "Exception" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("genret: error:")]
    assert len(lines) == 1, err
    return lines[0]


def _leftovers(tmp_path, *keep: str) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if p.name not in keep)


@pytest.mark.parametrize("name", list(BAD_LINES))
def test_a_bad_record_is_one_line_exit_2_and_skippable(tmp_path, capsys, name):
    make, words = BAD_LINES[name]
    corpus = tmp_path / "bad.jsonl"
    corpus.write_bytes(GOOD + make() + b"\n" + GOOD.replace(b'"ok"', b'"ok2"'))
    out = tmp_path / "ix"
    args = ["index", str(corpus), "--out", str(out), "--bm25", "--quiet"]
    assert main(args) == 2
    assert words in _one_error_line(capsys.readouterr().err)
    assert _leftovers(tmp_path) == ["bad.jsonl"]  # nothing half-written
    assert main([*args, "--skip-bad"]) == 0
    out_text = capsys.readouterr().out
    assert "indexed 2 pages" in out_text and "1 bad record(s) skipped" in out_text


def test_a_truncated_gzip_is_one_line_exit_2_even_with_skip_bad(tmp_path, capsys):
    data = gzip.compress(b"".join(GOOD.replace(b'"ok"', f'"{i}"'.encode()) for i in range(3000)))
    corpus = tmp_path / "cut.jsonl.gz"
    corpus.write_bytes(data[: len(data) // 2])
    for extra in ([], ["--skip-bad"]):
        assert main(["index", str(corpus), "--out", str(tmp_path / "ix"), "--bm25", "--quiet", *extra]) == 2
        assert "cut.jsonl.gz: truncated or corrupt gzip data after line" in _one_error_line(capsys.readouterr().err)
        assert _leftovers(tmp_path) == ["cut.jsonl.gz"]


def test_a_full_disk_is_one_line_exit_2_and_nothing_is_left(tmp_path, capsys, monkeypatch):
    import genret.indexing._bm25 as bm25

    def full(store, directory, **kwargs):
        (directory / "units-000.jsonl").write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device", str(directory / "units-000.jsonl"))

    monkeypatch.setattr(bm25, "write_collection", full)
    corpus = tmp_path / "c.jsonl"
    corpus.write_bytes(GOOD)
    assert main(["index", str(corpus), "--out", str(tmp_path / "ix"), "--bm25", "--quiet"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "no space left on device: " in line and "units-000.jsonl; free some space" in line
    assert _leftovers(tmp_path) == ["c.jsonl"]


@pytest.mark.parametrize("exc", [
    __import__("sqlite3").OperationalError("database or disk is full"),
    RuntimeError("Error in void faiss::write_index(const Index*, IOWriter*, int) at index_write.cpp:499: Error: "
                 "'ret == (size * 4)' failed: write error in /x/dense.faiss: 110547 != 460800 (No space left on "
                 "device)"),
    Exception("No space left on device (os error 28)"),
    OSError(errno.EDQUOT, "Disk quota exceeded"),
], ids=["sqlite", "faiss", "rust", "quota"])
def test_a_full_disk_reads_the_same_whoever_reports_it(tmp_path, capsys, monkeypatch, exc):
    import genret.indexing._bm25 as bm25

    def full(*args, **kwargs):
        raise exc

    monkeypatch.setattr(bm25, "write_collection", full)
    corpus = tmp_path / "c.jsonl"
    corpus.write_bytes(GOOD)
    assert main(["index", str(corpus), "--out", str(tmp_path / "ix"), "--bm25", "--quiet"]) == 2
    assert _one_error_line(capsys.readouterr().err).startswith("genret: error: no space left on device")
    assert _leftovers(tmp_path) == ["c.jsonl"]


def test_another_bug_still_shows_its_traceback(tmp_path, monkeypatch):
    import genret.indexing._bm25 as bm25

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(bm25, "write_collection", broken)
    corpus = tmp_path / "c.jsonl"
    corpus.write_bytes(GOOD)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["index", str(corpus), "--out", str(tmp_path / "ix"), "--bm25", "--quiet"])


def test_output_cut_short_ends_quietly(tiny_index):
    """`genret search … --json | head`: the reader goes away before the hits are written."""
    p = subprocess.Popen([sys.executable, "-m", "genret", "search", str(tiny_index), "oil embargo",
                          "--retriever", "bm25", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # no reader left: the first write fails with EPIPE
    err = p.stderr.read().decode()
    assert p.wait(timeout=300) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err, err
