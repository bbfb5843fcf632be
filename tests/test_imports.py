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
  API); the package itself only re-exports;
- the tests keep the first rule from the folder they sit in: ``tests/indexing/fm/`` mirrors ``genret.indexing.fm``, so
  a test there may import that package's private modules and names (and its parents'), and a test of another folder
  only their public names; the few exceptions are listed, each with its reason.
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


# ---- the tests: a test module reaches into the private modules of the package its folder mirrors only ----------

TESTS = ROOT / "tests"
# test module (under tests/) -> {private module it imports although its folder mirrors another package: why}
TESTS_REACHING_ACROSS = {
    "eval/test_fusion_tune.py": {
        "genret.serving.http._service": "the server loads the tuned weights: no HTTP route shows a hybrid's "
                                        "weights, so the test asks the SearchService the app runs on"},
    "serving/helpers.py": {
        "genret.serving.http._service": "the HTTP tests' helpers take the SearchService those tests build; the module "
                                        "stays at tests/serving/ because tests outside serving/http import it"},
    "test_ray.py": {
        "genret.serving.http._service": "serving/http's request tests rerun over `genret serve --ray`: the service "
                                        "with Ray settings, over the Ray-built index this module makes"},
    "serving/cli/test_cli_bad_input.py": {
        "genret.indexing._bm25": "fault injection: a full disk raised inside the BM25 build (its write_collection), "
                                 "for the command line's one-line error and clean-up"},
}


def reaches_across(tests: Path = TESTS) -> dict[tuple[str, str], list[str]]:
    """(test module's path under ``tests``, private module) -> the lines importing it, for each private module (or
    private name) of a package other than the one the test's folder mirrors (or one above it).

    Each module under ``tests`` (helpers and conftests too) is taken as a module of the package its folder mirrors:
    ``tests/indexing/fm/test_fm_index.py`` as ``genret.indexing.fm.test_fm_index``, ``tests/test_ray.py`` as
    ``genret.test_ray``; the product's rule then applies to it, except that a test may import the private names of
    its own package's modules (a test of an internal)."""
    known = set(FILES)
    found: dict[tuple[str, str], list[str]] = {}
    for path in sorted(tests.rglob("*.py")):
        where = path.relative_to(tests).as_posix()
        module = ".".join(("genret", *path.relative_to(tests).with_suffix("").parts))
        here = package_of(module, path)
        for line, target, name in imports(module, path, known):
            parts = target.split(".")
            private = next((i for i, part in enumerate(parts) if part.startswith("_") and not part.startswith("__")),
                           None)
            if private is None and not (name and name.startswith("_") and not name.startswith("__")):
                continue
            owner = ".".join(parts[:private]) if private is not None else target
            if not (here == owner or here.startswith(owner + ".")):
                found.setdefault((where, target), []).append(f"{where}:{line}")
    return found


def test_tests_reach_only_into_the_package_their_folder_mirrors():
    """A test imports the private modules of the package its folder mirrors (or of a package above it) only; for
    anything else it uses public names, or it moves to the folder of what it tests."""
    allowed = {(where, target) for where, targets in TESTS_REACHING_ACROSS.items() for target in targets}
    found = reaches_across()
    assert sorted(line for key, lines in found.items() if key not in allowed for line in lines) == []
    assert sorted(allowed - set(found)) == [], "an exception no longer needed: remove it from TESTS_REACHING_ACROSS"


@pytest.mark.parametrize("where, source, reaches", [
    ("retrieval/test_bad.py", "from genret.indexing._dense import load_embeddings\n", True),
    ("retrieval/test_bad.py", "from genret.eval import _score\n", True),
    ("retrieval/test_bad.py", "import genret.retrieval.generative._lm_steps as steps\n", True),
    ("test_bad.py", "from genret.serving.http._server import make_server\n", True),
    ("serving/helpers.py", "def f():\n    from genret.serving.cli._main import build_parser\n", True),
    ("retrieval/generative/test_ok.py", "from genret.retrieval._llama import lite_config\n", False),
    ("indexing/fm/test_ok.py", "from genret.indexing.fm._build import _ShardWriter\n", False),
    ("indexing/test_ok.py", "from genret.indexing import Index, _dense\n", False),
])
def test_the_tests_rule_can_fail(tmp_path, where, source, reaches):
    """A deliberate reach across, in a test module of a folder tree like tests/, is reported; a test of its own
    package's internals is not."""
    (tmp_path / where).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / where).write_text(source)
    assert bool(reaches_across(tmp_path)) == reaches
