"""Index paths with characters a SQLite URI gives a meaning to (issue 27, point 1): ``%XX``, ``?``, ``#``, spaces,
non-ASCII.  Before, the unit store was opened as ``file:{path}?mode=ro…`` unescaped: ``x%41`` opened ``xA``'s store
(another index's texts, no error) and ``q?z`` opened a stray file ``q``."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from genret.indexing import Index, IndexConfig, UnitStore, build_index, verify_index
from tests.conftest import PAGES


def _build(tmp_path, name: str, pages: list[dict]):
    corpus = tmp_path / f"{len(list(tmp_path.iterdir()))}.jsonl"
    corpus.write_text("".join(json.dumps(p) + "\n" for p in pages))
    out = tmp_path / name
    build_index(corpus, out, IndexConfig(components=()), progress=False)
    return out


def _page_ids(index: Index) -> set[str]:
    return {u.page_id for u in index.store.get(list(range(len(index.store))))}


def test_a_percent_escape_in_the_path_opens_its_own_store_not_another_index(tmp_path):
    """The issue's commands: `cp -a idxB 'x%41'; cp -a idxA xA`, then `x%41` must answer with idxB's texts."""
    shutil.copytree(_build(tmp_path, "idxA", PAGES[:2]), tmp_path / "xA")
    ix = shutil.copytree(_build(tmp_path, "idxB", PAGES[2:]), tmp_path / "x%41")
    with Index(ix) as index:
        assert _page_ids(index) == {p["id"] for p in PAGES[2:]}
    verify_index(ix, progress=False)


@pytest.mark.parametrize("name", ["q?z", "a#b", "sp ace", "ünïcödé", "p%2Fq", "x?mode=rw&y=1#z", "%"])
def test_any_path_opens_its_own_store(tmp_path, name):
    cut = re.split("[?#]", f"d-{name}")[0]
    if cut != f"d-{name}":
        (tmp_path / cut).touch()  # a stray file where the unescaped URI pointed
    ix = _build(tmp_path, f"d-{name}", PAGES[1:3])
    with Index(ix) as index:
        assert _page_ids(index) == {p["id"] for p in PAGES[1:3]}
    store = UnitStore(ix / "units.sqlite")
    try:
        assert len(store) == 4
    finally:
        store.close()
