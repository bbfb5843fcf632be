"""Test helpers for README.md: its sections and fenced blocks, and a checkout-like folder holding what `make demo`
leaves in ``demo-out/`` (built once per test session, as scripts/demo.sh builds it), where the README's commands run
as written.

``GENRET_TEST_DEMO_OUT=/path/to/demo-out`` reuses a ``demo-out`` that ``make demo`` (or scripts/demo.sh) built,
instead of building one (about a minute); the README's commands then run on it (its server log goes there).
"""

from __future__ import annotations

import atexit
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DEMO_SCRIPT = ROOT / "scripts" / "demo.sh"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def readme_section(title: str, text: str | None = None) -> str:
    """The README's ``## title`` section, up to the next ``## `` heading (fenced blocks taken into account)."""
    text = README.read_text(encoding="utf-8") if text is None else text
    start = text.index(f"\n## {title}\n")
    out, fence = [], False
    for line in text[start + 1:].splitlines(keepends=True)[1:]:
        if line.lstrip().startswith("```"):
            fence = not fence
        if not fence and line.startswith("## "):
            break
        out.append(line)
    return "".join(out)


def fenced_blocks(section: str, lang: str) -> list[str]:
    """The bodies of the ```lang blocks of ``section`` (indented ones too, as in a list item), in order."""
    blocks = []
    for m in re.finditer(rf"^( *)```{lang}\n(.*?)^\1```", section, re.S | re.M):
        indent = len(m.group(1))
        blocks.append("".join(line[indent:] for line in m.group(2).splitlines(keepends=True)))
    return blocks


def _genret(*args: str, cwd: Path) -> None:
    bindir = Path(sys.executable).parent
    proc = subprocess.run([str(bindir / "genret"), *args], cwd=cwd, capture_output=True, text=True, timeout=900,
                          env={**ENV, "PATH": f"{bindir}{os.pathsep}{ENV.get('PATH', '')}"})
    assert proc.returncode == 0, f"genret {' '.join(args)}: {proc.stderr[-3000:]}"


def _venv_link(checkout: Path) -> None:
    """``.venv`` in ``checkout``: the environment running the tests (``source .venv/bin/activate`` works)."""
    if (Path(sys.prefix) / "bin" / "activate").is_file():
        (checkout / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    else:  # not a virtual environment: an activate script that puts this Python's bin first on PATH
        (checkout / ".venv" / "bin").mkdir(parents=True)
        (checkout / ".venv" / "bin" / "activate").write_text(f'export PATH="{Path(sys.executable).parent}:$PATH"\n')


@functools.cache
def demo_checkout() -> Path:
    """A folder like the repository root after ``make demo``: ``demo-out/`` (data, index, and the predictions files
    the README names) and ``.venv``.  Built by the commands of scripts/demo.sh, without its server and with only the
    evaluations whose predictions the README uses."""
    checkout = Path(tempfile.mkdtemp(prefix="genret-readme-"))
    atexit.register(shutil.rmtree, checkout, ignore_errors=True)
    _venv_link(checkout)
    reuse = os.environ.get("GENRET_TEST_DEMO_OUT")
    if reuse:
        (checkout / "demo-out").symlink_to(Path(reuse).resolve(), target_is_directory=True)
        return checkout
    demo = DEMO_SCRIPT.read_text(encoding="utf-8")
    # the steps as scripts/demo.sh runs them (OUT=demo-out)
    assert 'genret demo-data "$OUT/data"' in demo and 'genret index "$OUT/data/corpus.jsonl" --out "$OUT/index"' in demo
    _genret("demo-data", "demo-out/data", cwd=checkout)
    _genret("index", "demo-out/data/corpus.jsonl", "--out", "demo-out/index", "--force", "--quiet", cwd=checkout)
    eval_line = re.search(r'genret eval "\$OUT/index" "\$OUT/data/questions.jsonl" --retriever \$r (.*) \\\n\s*'
                          r'--out "\$OUT/predictions.\$r.jsonl"', demo)
    assert eval_line, "scripts/demo.sh no longer writes demo-out/predictions.RETRIEVER.jsonl as this helper expects"
    for retriever in sorted(set(re.findall(r"demo-out/predictions\.(\w+)\.jsonl", README.read_text("utf-8")))):
        _genret("eval", "demo-out/index", "demo-out/data/questions.jsonl", "--retriever", retriever,
                *eval_line.group(1).split(), "--out", f"demo-out/predictions.{retriever}.jsonl", "--quiet",
                cwd=checkout)
    return checkout
