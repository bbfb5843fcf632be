"""Writing a directory safely: one writer at a time, whole-directory replacement without a window, and what a
killed writer left behind cleaned up by the next one.

- **Lock.** Every writer of a directory ``out`` (an index, a demonstrations pool, a checkpoint) holds an advisory
  lock on the sibling file ``.<name>.lock`` (``fcntl.flock``; released by the kernel when the process dies, so a
  killed writer never leaves a stale lock; the holder removes the file when done).  A second writer waits up to
  ``wait`` seconds (``GENRET_LOCK_WAIT``), then fails with one line naming the holder.  Readers take no lock.
- **Staging.** The new version is written into a hidden sibling ``.<name>.<tag>-<pid>``; every file and folder in
  it is fsynced before it replaces ``out``.
- **Swap.** On Linux the staged folder and ``out`` are exchanged in one ``renameat2(RENAME_EXCHANGE)``: at every
  instant ``out`` is either the old or the new version.  Elsewhere ``out`` is moved aside to ``.<name>.old-<pid>``
  first; a crash between the two renames leaves the old version there, and the next writer (holding the lock)
  puts it back.  The parent folder is fsynced after the swap.
- **Leftovers.** Under the lock no other writer of ``out`` is running, so staged or replaced folders of ``out``
  left by killed writers are removed (or, for a missing ``out``, the old version restored) before any work.  A
  reader that finds ``out`` missing and a replaced folder beside it restores it the same way, when it can take the
  lock at once (``restore_interrupted``).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from ._errors import GenretError

log = logging.getLogger("genret")

_TAGS = ("building", "adding", "adapting", "saving", "training", "rebuilding", "old")
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def lock_path(out: Path) -> Path:
    return out.parent / f".{out.name}.lock"


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return "another genret process"
    return f"pid {info.get('pid', '?')}, `{info.get('command', '?')}`, since {info.get('since', '?')}"


@contextmanager
def write_lock(out: str | Path, *, wait: float | None = None) -> Iterator[None]:
    """Hold the write lock of directory ``out`` (see the module doc); ``wait``: seconds to wait for another
    writer (default ``$GENRET_LOCK_WAIT`` or 0).  Re-entrant within one process."""
    out = Path(out).resolve()
    key = str(out)
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no advisory locks
        log.warning("no file locks on this platform: concurrent writers of %s are not prevented", out)
        yield
        return
    wait = float(os.environ.get("GENRET_LOCK_WAIT", "0") or 0) if wait is None else wait
    path = lock_path(out)
    _make_parent(out)
    fd = _acquire(fcntl, path, out, time.monotonic() + wait)
    try:
        info = {"pid": os.getpid(), "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                "since": datetime.now(UTC).isoformat(timespec="seconds")}
        with contextlib.suppress(OSError):  # who holds it is for messages only (a full disk must not stop here)
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        _held[key] = 1
        try:
            recover(out)
            yield
        finally:
            del _held[key]
            Path(path).unlink(missing_ok=True)  # before the lock goes: a waiter then sees a new file (_acquire)
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _make_parent(out: Path) -> None:
    """Create ``out``'s parent folders; one that is a file is one line, not "File exists"."""
    for folder in (out.parent, *out.parent.parents):
        if folder.is_dir():
            break
        if folder.exists() or folder.is_symlink():
            what = "a file, not a folder" if folder.is_file() else "not a folder"
            raise GenretError(f"cannot write {out}: {folder} is {what}")
    out.parent.mkdir(parents=True, exist_ok=True)


def _acquire(fcntl, path: Path, out: Path, deadline: float) -> int:
    """A descriptor of ``path`` holding its exclusive lock.  The holder removes the file when it is done, so a
    lock won on a file that is no longer at ``path`` is worthless: open again and retry."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            if time.monotonic() >= deadline:
                raise GenretError(f"{out} is being written by {_holder(path)}: wait for it to finish "
                                  "(or set GENRET_LOCK_WAIT=SECONDS to wait)") from None
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
            continue
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


_held: dict[str, int] = {}


def _leftovers(out: Path) -> list[Path]:
    pattern = re.compile(rf"^\.{re.escape(out.name)}\.({'|'.join(_TAGS)})-\d+$")
    if not out.parent.is_dir():
        return []
    return sorted(p for p in out.parent.iterdir() if pattern.match(p.name) and p.is_dir())


def restore_interrupted(out: str | Path) -> Path | None:
    """For a reader of a missing ``out``: put back the previous version that a write killed between the two renames
    of its swap left aside (as the next writer would), when no writer is at work and the reader may write beside
    ``out``.  Returns the backup that is still there (a writer holds the lock, or it could not be restored), or
    None."""
    out = Path(out).resolve()
    if out.exists() or out.is_symlink() or not _backups(out):
        return None
    with contextlib.suppress(GenretError, OSError):
        with write_lock(out, wait=0):  # recover() puts it back; re-entered by this process's writer: untouched
            pass
    backups = [] if out.exists() else _backups(out)
    return backups[-1] if backups else None


def _backups(out: Path) -> list[Path]:
    return [p for p in _leftovers(out) if ".old-" in p.name]


def recover(out: Path) -> None:
    """With the lock held: put back an old version a crash left aside (when ``out`` is missing) and remove the
    staged folders of killed writers."""
    leftovers = _leftovers(out)
    if not out.exists():
        olds = _backups(out)
        if olds:
            os.replace(olds[-1], out)
            _fsync_dir(out.parent)
            log.warning("%s: restored the previous version that an interrupted write left in %s", out, olds[-1].name)
            leftovers.remove(olds[-1])
    for p in leftovers:
        log.info("%s: removing %s, left by an interrupted write", out, p.name)
        shutil.rmtree(p, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems cannot fsync a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root`` (and ``root``), deepest first."""
    for dirpath, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths (Linux ``renameat2``); False where the system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # pragma: no cover - glibc older than 2.28
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EXDEV):  # the filesystem cannot exchange
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_dir(tmp: Path, out: Path) -> None:
    """Make the finished (and fsynced) directory ``tmp`` the directory ``out`` without a moment where ``out``
    is missing on Linux (see the module doc); the old version is removed afterwards."""
    if not out.exists():
        os.replace(tmp, out)
    elif _exchange(tmp, out):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old version
    else:
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(out.parent)


@contextmanager
def staged_dir(out: Path, tag: str, *, copy_from: Path | None = None, wait: float | None = None) -> Iterator[Path]:
    """A temporary sibling of ``out`` to write a whole directory in (empty, or a copy of ``copy_from``), under
    ``out``'s write lock.

    When the block completes, the directory is fsynced and replaces ``out`` (``replace_dir``); if the block
    raises, it is removed and ``out`` is left as it was.
    """
    if tag not in _TAGS:
        raise ValueError(f"unknown staging tag {tag!r}")
    out = Path(out).resolve()
    with write_lock(out, wait=wait):
        tmp = out.parent / f".{out.name}.{tag}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:  # from the first byte staged: a copy cut short (a full disk) is removed too
            if copy_from is not None:
                shutil.copytree(copy_from, tmp)
            else:
                tmp.mkdir(parents=True)
            yield tmp
            fsync_tree(tmp)
            replace_dir(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
