"""The converted-GGUF cache is keyed by the file's content, not its path: the same model installed in another
environment reuses the checkpoint converted once."""

from __future__ import annotations

import os
import shutil

from genret.core._models import _content_key


def test_the_same_file_elsewhere_has_the_same_key_and_other_content_another(tmp_path):
    a = tmp_path / "env1" / "model.gguf"
    a.parent.mkdir()
    a.write_bytes(os.urandom(3 << 20))
    b = tmp_path / "env2" / "model.gguf"
    b.parent.mkdir()
    shutil.copyfile(a, b)
    os.utime(b, (1, 1))  # another install time
    assert _content_key(a) == _content_key(b)
    data = bytearray(a.read_bytes())
    data[-1] ^= 1  # the last MiB is read too
    b.write_bytes(bytes(data))
    assert _content_key(a) != _content_key(b)
    small = tmp_path / "small.gguf"
    small.write_bytes(b"tiny")
    assert len(_content_key(small)) == 16
