"""The house rules, checked on the source (ARCHITECTURE.md, "The rules"):

- a module imports another package's private module (a path segment starting with ``_``) or private name only from
  inside that package (its own modules and its subpackages); everything else goes through the package's public names;
- no import circles between modules, counting imports inside functions too (a circle a lazy import hides is still
  one: each side must know the other);
- dependencies point one way between packages (serving → eval → retrieval → indexing → core; ``core``, the shared
  kernel, imports nothing of genret's and every package may use its public names), between retrieval's
  subpackages (demos → rag only) and between serving's two rooms (cli → http only, through http's public names:
  the rule above keeps each room's private modules its own);
- serving's modules are in one of its two rooms, ``serving.cli`` (the command line) or ``serving.http`` (the HTTP
  API); the package itself only re-exports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "indexing", "retrieval", "serving", "eval")


def product_modules(root: Path = ROOT) -> dict[str, Path]:
    """Module name → file for the ``genret`` package (the repository root, its ``__main__`` and its five folders)."""
    modules = {"genret": root / "__init__.py", "genret.__main__": root / "__main__.py"}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(("genret", *parts))] = path
    return modules


def package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def imports(module: str, path: Path, known: set[str]) -> list[tuple[int, str, str | None]]:
    """(line, target module, imported name or None) for every import in the file, at any depth."""
    here = package_of(module, path)
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((node.lineno, sub, None) if sub in known else (node.lineno, base, alias.name))
    return [(line, target, name) for line, target, name in found if target == "genret" or target.startswith("genret.")]


def private_reach(module: str, path: Path, target: str, name: str | None) -> str | None:
    """Why importing ``name`` from ``target`` breaks the rule, or None.

    A private module belongs to the package that holds it (and that package's subpackages); a private name
    (``_x`` in a module) belongs to its module alone.
    """
    here = package_of(module, path)
    parts = target.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_"):
            owner = ".".join(parts[:i])
            if not (here == owner or here.startswith(owner + ".")):
                return f"reaches into {target} (private to {owner})"
            break
    if name and name.startswith("_") and not name.startswith("__") and target != module:
        return f"imports {target}.{name} (private to its module)"
    return None


def violations(files: dict[str, Path]) -> list[str]:
    known = set(files)
    found = []
    for module, path in files.items():
        for line, target, name in imports(module, path, known):
            why = private_reach(module, path, target, name)
            if why:
                where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
                found.append(f"{where}:{line} {why}")
    return found


FILES = product_modules()


def import_graph(files: dict[str, Path] = FILES) -> dict[str, set[str]]:
    known = set(files)
    graph: dict[str, set[str]] = {m: set() for m in files}
    for module, path in files.items():
        for _, target, _name in imports(module, path, known):
            while target not in known and "." in target:
                target = target.rpartition(".")[0]
            if target != module and target in known:
                graph[module].add(target)
            # importing a.b.c runs a/__init__ and a/b/__init__ first, but those are not this module's knowledge:
            # the edge is to what the statement names
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        m = stack.pop()
                        on_stack.discard(m)
                        component.append(m)
                        if m == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_no_module_reaches_into_another_packages_private_modules():
    assert violations(FILES) == []


def test_no_import_circles():
    assert circles(import_graph()) == []


# package -> the genret packages it may import (ARCHITECTURE.md); "genret" is the root (its __version__), "__main__"
# the root's ``python -m genret``; core, the shared kernel, is below everything and imports nothing of genret's
LAYERS = {
    "__main__": {"genret", "serving"},
    "core": set(),
    "indexing": {"genret", "core"},
    "retrieval": {"genret", "core", "indexing"},
    "eval": {"genret", "core", "indexing", "retrieval"},
    "serving": {"genret", "core", "indexing", "retrieval", "eval"},
}
# inside a package: subpackage -> the sibling subpackages it may import (each may use its package's own modules:
# retrieval's contract)
SIBLINGS = {
    "retrieval": {"generative": set(), "hybrid": set(), "rag": set(), "demos": {"rag"}},
    "serving": {"cli": {"http"}, "http": set()},  # `genret serve` runs the HTTP API; the API knows no command line
}


def layer_breaches(graph: dict[str, set[str]]) -> list[str]:
    def top(m: str) -> str:
        return m.split(".")[1] if m.count(".") else "genret"

    def sub(m: str) -> tuple[str, str] | None:
        parts = m.split(".")
        return (parts[1], parts[2]) if len(parts) > 2 and parts[2] in SIBLINGS.get(parts[1], ()) else None

    found = []
    for a, targets in graph.items():
        for b in targets:
            if top(a) != top(b) and top(a) != "genret" and top(b) not in LAYERS[top(a)]:
                found.append(f"{a} imports {b}")
            (pa, sa), (pb, sb) = sub(a) or ("", ""), sub(b) or ("", "")
            if sa and sb and pa == pb and sa != sb and sb not in SIBLINGS[pa][sa]:
                found.append(f"{a} imports {b}")
    return found


def test_dependencies_point_one_way():
    """serving → eval → retrieval → indexing → core; inside retrieval, demos may use rag and nothing else crosses;
    inside serving, cli may use http and not the other way."""
    assert layer_breaches(import_graph()) == []


def test_serving_is_two_rooms():
    """Every module of serving is in ``serving.cli`` or ``serving.http`` (the package itself re-exports)."""
    loose = [m for m in FILES if m.startswith("genret.serving.") and m.split(".")[2] not in SIBLINGS["serving"]]
    assert loose == []


def test_the_layer_rule_can_fail():
    graph = import_graph()
    graph["genret.indexing._store"] = graph["genret.indexing._store"] | {"genret.retrieval._contract"}
    graph["genret.retrieval.rag._pipeline"] = graph["genret.retrieval.rag._pipeline"] | {"genret.retrieval.demos"}
    graph["genret.serving.http._app"] = graph["genret.serving.http._app"] | {"genret.serving.cli"}
    graph["genret.core._json"] = graph["genret.core._json"] | {"genret.indexing"}
    graph["genret.core._errors"] = graph["genret.core._errors"] | {"genret"}
    assert layer_breaches(graph) == ["genret.core._errors imports genret",
                                     "genret.core._json imports genret.indexing",
                                     "genret.indexing._store imports genret.retrieval._contract",
                                     "genret.retrieval.rag._pipeline imports genret.retrieval.demos",
                                     "genret.serving.http._app imports genret.serving.cli"]


@pytest.mark.parametrize("module, source, expected", [
    ("genret.serving._bad", "from genret.indexing._store import UnitStore\n", "reaches into genret.indexing._store"),
    ("genret.serving._bad", "from genret.eval import _score\n", "reaches into genret.eval._score"),
    ("genret.eval._bad", "from ._score import _has_answers\n",
     "imports genret.eval._score._has_answers (private to its module)"),
    ("genret.serving.cli._bad", "from genret.serving.http._server import serve\n",
     "reaches into genret.serving.http._server (private to genret.serving.http)"),
    ("genret.serving.http._bad", "from ..cli._common import usage\n",
     "reaches into genret.serving.cli._common (private to genret.serving.cli)"),
    ("genret.serving._bad", "from .http._app import create_app\n", "reaches into genret.serving.http._app"),
    ("genret.indexing._bad", "from .fm._index import FMIndex\n",
     "reaches into genret.indexing.fm._index (private to genret.indexing.fm)"),
    ("genret.retrieval._bad", "from genret.indexing.fm._build import build_fm\n",
     "reaches into genret.indexing.fm._build (private to genret.indexing.fm)"),
    ("genret.indexing._bad", "from ..core._json import write_json_atomic\n",
     "reaches into genret.core._json (private to genret.core)"),
])
def test_the_private_rule_can_fail(tmp_path, module, source, expected):
    """A deliberate violation, in a module added to the real tree, is reported."""
    bad = tmp_path / "_bad.py"
    bad.write_text(source)
    found = [v for v in violations({**FILES, module: bad}) if v.startswith("_bad.py")]
    assert len(found) == 1 and expected in found[0]


def test_the_circle_rule_can_fail():
    graph = import_graph()
    graph["genret.indexing._store"] = graph["genret.indexing._store"] | {"genret.indexing._build"}
    assert any({"genret.indexing._store", "genret.indexing._build"} <= set(c) for c in circles(graph))
