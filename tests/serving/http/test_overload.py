"""RAG under overload: work nobody waits for any more stops (a timed-out answer stops generating at its next token,
one whose client went away too, and work still queued for callers that gave up never runs), and excess RAG load is
refused with 429 at once instead of being accepted and timed out.  The generation tests run the real local
generator (the tiny chat model) with a long ``max_new_tokens`` and count its decoding steps."""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import contextmanager

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from genret.retrieval import Generator, GeneratorConfig
from genret.retrieval.rag import GenerationCancelled, load_generator, stop_when
from genret.serving.http._server import make_server
from tests.conftest import QUESTIONS
from tests.serving.helpers import app_over, async_client, generator_swapped

Q = QUESTIONS[2][1]
LONG = 4000  # new tokens: seconds of decoding for the tiny model if nothing stopped it


@pytest.fixture(scope="module")
def long_generator(tiny_chat_lm_dir):
    gen = load_generator(GeneratorConfig(model=str(tiny_chat_lm_dir), device="cpu", max_new_tokens=LONG,
                                         max_input_tokens=512))
    yield gen
    gen.close()


@contextmanager
def counting_steps(gen):
    """The decoding steps (forward passes) ``gen``'s model runs inside the block, in a list's length."""
    steps: list[int] = []
    hook = gen.lm.model.register_forward_hook(lambda *_: steps.append(1))
    try:
        yield steps
    finally:
        hook.remove()


def _wait(predicate, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _idle(app) -> bool:
    return app.state.gate.in_flight == 0 and app.state.dispatcher.jobs == 0


def test_stop_when_stops_the_local_generator_at_its_next_step(long_generator):
    prompt = [{"role": "user", "content": Q}]
    with counting_steps(long_generator) as steps, pytest.raises(GenerationCancelled):
        with stop_when(lambda: len(steps) >= 5):
            long_generator.generate([prompt])
    assert len(steps) <= 6
    with counting_steps(long_generator) as steps:  # outside the block: no check
        assert long_generator.generate([prompt], max_new_tokens=8)
    assert len(steps) >= 2


def test_stop_when_stops_the_local_generator_inside_the_prompt_pass(long_generator):
    # the prompts' pass over a batch is one forward of seconds on a CPU: the check also runs before every layer
    calls: list[int] = []

    def second_call() -> bool:
        calls.append(1)
        return len(calls) >= 2  # the first check comes before the first layer, the second before the next one

    prompts = [[{"role": "user", "content": q}] for _, q, *_ in QUESTIONS[:4]]
    with counting_steps(long_generator) as steps, pytest.raises(GenerationCancelled):
        with stop_when(second_call):
            long_generator.generate(prompts)
    assert steps == []  # not one forward pass completed


@pytest.mark.anyio
@pytest.mark.parametrize("micro_batch", [True, False])
async def test_a_timed_out_answer_stops_generating(service, long_generator, micro_batch):
    with generator_swapped(service, long_generator), counting_steps(long_generator) as steps, \
            app_over(service, request_timeout_s=0.2, micro_batch=micro_batch) as app:
        async with async_client(app) as client:
            r = await client.post("/v1/rag", json={"query": Q, "retriever": "bm25"})
            assert r.status_code == 504, r.text
            await asyncio.to_thread(_wait, lambda: _idle(app), what="the model work to end")
    assert 0 < len(steps) < LONG // 2  # it stopped soon after the timeout, far from its max_new_tokens


def test_a_client_that_goes_away_stops_its_answer(service, long_generator):
    with generator_swapped(service, long_generator), counting_steps(long_generator) as steps, \
            app_over(service, port=0) as app:
        server = make_server(app.state.settings, app, log_level="warning")
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        _wait(lambda: server.started)
        base = f"http://127.0.0.1:{server.port}"
        try:
            with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes the connection
                httpx.post(f"{base}/v1/rag", json={"query": Q, "retriever": "bm25"}, timeout=0.5)
            _wait(lambda: _idle(app), what="the model work to end")
            assert 0 < len(steps) < LONG // 2
            metrics = httpx.get(f"{base}/metrics", timeout=30).text
            counts = {tuple(sorted(x.labels.items())): x.value for f in text_string_to_metric_families(metrics)
                      for x in f.samples if x.name == "genret_http_requests_total"}
            assert counts[(("method", "POST"), ("route", "/v1/rag"), ("status", "499"))] == 1
        finally:
            server.should_exit = True
            thread.join(30)


@pytest.mark.anyio
@pytest.mark.parametrize("queueing", ["no micro-batching", "micro-batch queue", "pool queue"])
async def test_work_queued_for_callers_that_gave_up_never_runs(service, long_generator, queueing):
    """One model thread, busy with a long answer (asked of the dispatcher directly: no timeout); three requests wait
    — in the micro-batch queue behind it (same spec), or as pool jobs (micro-batching off, or other specs) — and
    time out before they start: they never reach the model, and get 429 (their time went to the queue), not 504."""
    with generator_swapped(service, long_generator), \
            app_over(service, workers=1, request_timeout_s=1.0, micro_batch=queueing != "no micro-batching") as app:
        dispatcher = app.state.dispatcher
        blocker = dispatcher.rag(Q, service.rag_spec(Q, retriever="bm25"))
        await asyncio.to_thread(_wait, lambda: dispatcher.rag_calls == 1, what="the long answer to start")
        async with async_client(app) as client:
            more = [client.post("/v1/rag", json={"query": Q, "retriever": "bm25",
                                                 "passages": 3 if queueing == "micro-batch queue" else 4 + i})
                    for i in range(3)]
            assert [r.status_code for r in await asyncio.gather(*more)] == [429] * 3
            blocker.cancel()
            await asyncio.to_thread(_wait, lambda: _idle(app), what="the model work to end")
        assert dispatcher.rag_calls == 1  # the three that waited never reached the model
        assert dispatcher.pending == 0


class SerialGenerator(Generator):
    """A model that answers one question at a time, ``seconds`` each (as a local model on a CPU does)."""

    name = "serial"

    def __init__(self, seconds: float) -> None:
        self.config = GeneratorConfig(max_new_tokens=8)
        self.seconds = seconds
        self._lock = threading.Lock()

    def generate(self, prompts, *, max_new_tokens=None, stop=()):
        with self._lock:
            time.sleep(self.seconds * len(prompts))
        return ["Guido van Rossum [1]" for _ in prompts]


@pytest.mark.anyio
async def test_excess_rag_load_is_429_before_anything_times_out(service):
    # 0.3 s per answer, 3 s per request: about 7 answers fit in the 2.1 s budget (rag_queue_budget 0.7)
    with generator_swapped(service, SerialGenerator(0.3)), app_over(service, request_timeout_s=3.0) as app:
        async with async_client(app) as client:
            def ask():
                return client.post("/v1/rag", json={"query": Q, "retriever": "bm25"})

            for _ in range(2):  # measured: seconds per question
                assert (await ask()).status_code == 200
            responses = await asyncio.gather(*(ask() for _ in range(24)))
            codes = [r.status_code for r in responses]
            assert 504 not in codes and set(codes) <= {200, 429}, codes
            assert codes.count(200) >= 1 and codes.count(429) >= 1, codes
            for r in responses:
                if r.status_code == 429:
                    assert int(r.headers["retry-after"]) >= 1
                    assert "rag_queue_budget" in r.json()["detail"]
            assert app.state.dispatcher.rag_load.in_flight == 0
            assert (await ask()).status_code == 200  # the load gone, answers are admitted again


@pytest.mark.anyio
async def test_rag_requests_that_time_out_behind_others_get_429_never_504(service):
    """Issue 27: a burst of RAG questions on a cold server (nothing measured yet) — more than the model answers in
    ``request_timeout_s`` — gets 429 with Retry-After, never 504: their time went to the queue (the others ahead
    or in the same batch), not to their own answer; alone, a question is answered."""
    with generator_swapped(service, SerialGenerator(0.4)), app_over(service, request_timeout_s=1.0) as app:
        async with async_client(app) as client:
            def ask():
                return client.post("/v1/rag", json={"query": Q, "retriever": "bm25"})

            responses = await asyncio.gather(*(ask() for _ in range(10)))
            codes = [r.status_code for r in responses]
            assert codes.count(429) == 10, codes
            assert all(int(r.headers["retry-after"]) >= 1 for r in responses)
            await asyncio.to_thread(_wait, lambda: _idle(app), what="the model work to end")
            assert (await ask()).status_code == 200  # alone: answered in time
