"""README.md is a front door: at most 250 lines, `make demo` and `make test` first, and every command of its tour
(and of what it says about the packaged model) runs as written on what `make demo` leaves in ``demo-out/``, with the
answers it claims."""

from __future__ import annotations

import re
import socket
import subprocess

import pytest

from tests._readme_demo import DEMO_SCRIPT, ENV, README, demo_checkout, fenced_blocks, readme_section

TOUR = "A 5-minute tour"
MODEL = "What the packaged 135M model can and cannot do"
LLM_URL = "http://localhost:8000/v1"  # the README's OpenAI-compatible endpoint (vLLM's default address)


def test_the_readme_is_a_front_door():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    first_block = fenced_blocks(text, "bash")[0].splitlines()
    assert [line.split()[:2] for line in first_block] == [["make", "demo"], ["make", "test"]]
    assert text.index("```bash") < text.index("\n## ")  # the two set-up commands come before anything else


def test_the_tour_names_files_make_demo_creates():
    """Each ``demo-out/…`` path the tour's table names is one scripts/demo.sh writes (OUT=demo-out)."""
    demo = DEMO_SCRIPT.read_text(encoding="utf-8").replace("$OUT", "demo-out")
    table = [line for line in readme_section(TOUR).splitlines() if line.startswith("| `demo-out/")]
    names = [name for line in table for name in re.findall(r"`(demo-out/[^`]+)`", line.split("|")[1])]
    assert len(names) >= 5
    for name in names:
        braces = re.fullmatch(r"(.*)\{([\w,]+)\}(.*)", name)
        if braces:  # demo-out/predictions.{dense,…}.jsonl: the loop over retrievers
            head, members, tail = braces.groups()
            loop = re.search(r"for r in ([\w ]+); do", demo)
            assert loop and loop.group(1).split() == members.split(","), name
            name = f"{head}$r{tail}"
        assert f'"{name.rstrip("/")}"' in demo, f"scripts/demo.sh does not write {name}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class _Echo:
    """The stand-in for a real LLM behind the OpenAI-compatible backend: it answers what a good reader would."""

    def generate(self, messages, max_new_tokens=None, stop=None):
        return ["PEP 3141 [1]" for _ in messages]


@pytest.mark.slow
def test_the_tour_runs_as_written():
    from tests._openai_server import ChatState, ServerThread, chat_app

    checkout = demo_checkout()
    tour = fenced_blocks(readme_section(TOUR), "bash")
    model = fenced_blocks(readme_section(MODEL), "bash")
    assert len(tour) >= 4 and len(model) == 2
    assert all(LLM_URL not in block for block in tour) and LLM_URL in model[1]

    state = ChatState()
    with ServerThread(chat_app(_Echo(), state)) as llm:
        blocks = [*tour, model[0], model[1].replace(LLM_URL, llm.base_url + "/v1")]
        script = "set -euo pipefail\n" + "".join(f"echo '=== block {i}'\n{b}" for i, b in enumerate(blocks))
        port = re.search(r"--port (\d+)", script)
        if port and not _port_is_free(int(port.group(1))):  # something else holds the README's port: use another
            script = script.replace(f":{port.group(1)}", f":{(p := _free_port())}").replace(
                f"--port {port.group(1)}", f"--port {p}")
        proc = subprocess.run(["bash", "-c", script], cwd=checkout, capture_output=True, text=True, timeout=1500,
                              env=ENV)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    out = dict(re.findall(r"=== block (\d+)\n(.*?)(?==== block |\Z)", proc.stdout, re.S))
    search, rag, serve = out["0"], out["2"], out["3"]  # the order test_the_tour_is_in_the_order_it_reads checks

    # what the tour says of the searches: dense ranks shutil.rmtree first, BM25 shutil.copytree, the generative
    # retriever the two first (their order moved with library versions: rmtree led, then copytree by 1 %)
    ranked = [re.findall(r"^\s*(\d)\.\s+\S+\s+\S+ \[\S+ ¶\d+\]\s+(\S+?)\(", block, re.M)
              for block in re.split(r"(?=^\s*1\.\s)", search, flags=re.M) if re.match(r"\s*1\.", block)]
    assert [hits[0][1] for hits in ranked][:2] == ["shutil.rmtree", "shutil.copytree"], search
    assert {name for _, name in ranked[2][:2]} == {"shutil.rmtree", "shutil.copytree"}, search
    assert "matched:" in search
    # the answers it claims, with their citations
    assert "JavaScript" in rag and "[1] json [json ¶1]" in rag, rag
    assert re.search(r"^Comma Separated Value$", rag, re.M), rag  # the span reader leaves the bracketed "(CSV)" out
    assert '"retriever":"bm25"' in serve and "JavaScript" in serve, serve
    # the wrong answer it shows, with the passage that held the right one ranked first
    wrong = out[str(len(tour))]
    assert wrong.splitlines()[0].strip() == "Base Classes" and "[1] numbers [numbers ¶1]" in wrong, wrong
    # the real LLM: asked through the OpenAI-compatible backend, with the retrieved passages in its prompt
    assert "PEP 3141" in out[str(len(tour) + 1)]
    assert len(state.requests) == 1
    assert "according to PEP 3141" in str(state.requests[0]["body"]["messages"])


def test_the_tour_is_in_the_order_it_reads():
    """The tour searches, evaluates, asks, serves: the test above reads its outputs in that order."""
    tour = fenced_blocks(readme_section(TOUR), "bash")
    assert [b.split("genret ", 2)[1].split()[0] if "genret " in b else "" for b in tour[:4]] == \
        ["search", "eval", "rag", "serve"]
