"""Model loading survives races (issue 27, point 4): loads in one process run one at a time, so two of them at once
(the watcher's refresh and a request's, a RAG request's generator and a generative search's LM, on a cold server
too) all succeed, and a load that overlapped another never breaks the loads after it.  Before, transformers'
loading patched process-wide functions in overlapping ``try``/``finally`` pairs: "Cannot copy out of meta tensor",
then every later LM load failed until the process restarted."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time

from genret.indexing import SentenceTransformerEncoder, add_to_index
from genret.retrieval import DenseRetriever, GeneratorConfig, load_generator
from genret.serving.http._service import SearchService
from tests.serving.helpers import tiny_settings


def _together(*calls) -> list[str]:
    """Run ``calls`` on threads started together; the errors they raised, as text."""
    barrier, errors = threading.Barrier(len(calls)), []

    def run(call) -> None:
        barrier.wait()
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - the test reports them
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return errors


def test_dense_generative_and_generator_loads_at_once_all_succeed(tiny_index, tiny_lm_dir, tiny_chat_lm_dir):
    """Threads loading the dense encoders and language models at once (a fresh service each round: its models
    load again), then a load after them."""
    lm = GeneratorConfig(model=str(tiny_lm_dir), device="cpu")
    for _ in range(3):
        service = SearchService(tiny_settings(tiny_index, tiny_lm_dir, tiny_chat_lm_dir))
        try:
            errors = _together(lambda: load_generator(lm), lambda: load_generator(lm),
                               lambda: SentenceTransformerEncoder(device="cpu"),
                               lambda s=service: s.retriever(None, "dense"),
                               lambda s=service: s.retriever(None, "generative"), lambda s=service: s.generator())
            assert errors == []
        finally:
            service.close()
    service = SearchService(tiny_settings(tiny_index, tiny_lm_dir, tiny_chat_lm_dir))
    try:
        spec = service.rag_spec("Who created Python?", passages=0, max_new_tokens=2)
        assert service.batch_rag(["Who created Python?"], spec)[0].answer is not None
        assert service.search("Who created Python?", 1, retriever="generative")[2]
        load_generator(lm).close()
    finally:
        service.close()


def test_a_refresh_overlapping_a_stale_snapshot_refresh_loads_once_and_serves(tiny_index, tiny_lm_dir,
                                                                            tiny_chat_lm_dir, tmp_path, monkeypatch):
    """The watcher's refresh and a request-triggered one (``StaleSnapshot``: a generative search over a changed
    index), with the RAG generator loading too: one of the refreshes loads the new version, the other waits for
    it; every load succeeds."""
    ix = tmp_path / "tiny"
    shutil.copytree(tiny_index, ix)
    service = SearchService(tiny_settings(ix, tiny_lm_dir, tiny_chat_lm_dir, reload_interval_s=0))
    try:
        service.retriever(None, "dense")
        (tmp_path / "more.jsonl").write_text(json.dumps({"id": "p-tea", "title": "Tea", "text": [
            "Tea is an aromatic beverage prepared by pouring hot water over cured leaves."]}) + "\n")
        add_to_index(ix, tmp_path / "more.jsonl", device="cpu", progress=False)
        loads, init = [], DenseRetriever.__init__
        second = threading.Event()

        def slow(self, *args, **kwargs):  # the first load of the new version waits (a little) for a second one
            loads.append(time.monotonic())
            if len(loads) == 1:
                second.wait(3)
            else:
                second.set()
            init(self, *args, **kwargs)

        monkeypatch.setattr(DenseRetriever, "__init__", slow)
        errors = _together(lambda: service.snapshots.refresh("tiny"),
                           lambda: service.search("Who created Python?", 2, retriever="generative"),
                           lambda: service.generator())
        assert errors == []
        assert len(loads) == 1  # not once per refresh
        assert service.stale_indexes() == {}
        hits = service.search("aromatic beverage hot water", 1, retriever="dense")[2]
        assert hits[0].provenance.wikipedia_id == "p-tea"
        assert service.search("Who created Python?", 1, retriever="generative")[2]
    finally:
        service.close()


_COLD = """
import json, sys, threading
from genret.serving import Settings
from genret.serving.http._service import SearchService

index, lm, chat = sys.argv[1:4]
errors = []


def service():
    return SearchService(Settings(
        indexes=[index], server={"lazy": True, "reload_interval_s": 0},
        generator={"model": chat, "device": "cpu", "max_new_tokens": 2, "max_input_tokens": 512},
        retrieval={"dense": {"device": "cpu"},
                   "generative": {"model": lm, "device": "cpu", "beam": 2, "max_len": 2}}))


for round in range(2):  # the first round on a cold process: nothing of transformers imported yet
    services = [service(), service()]
    barrier = threading.Barrier(4)

    def rag(s):
        barrier.wait()
        s.batch_rag(["Who created Python?"], s.rag_spec("Who created Python?", passages=0, max_new_tokens=2))

    def generative(s):
        barrier.wait()
        s.search("Who created Python?", 2, retriever="generative")

    def run(call, s):
        try:
            call(s)
        except Exception as exc:
            errors.append(f"round {round}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=run, args=(c, s)) for c in (rag, generative) for s in services]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in services:
        s.close()
print(json.dumps(errors))
"""


def test_the_first_rag_request_and_generative_search_on_a_cold_process_both_load(tiny_index, tiny_lm_dir,
                                                                                tiny_chat_lm_dir, tmp_path):
    script = tmp_path / "cold.py"
    script.write_text(textwrap.dedent(_COLD))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script), str(tiny_index), str(tiny_lm_dir), str(tiny_chat_lm_dir)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
