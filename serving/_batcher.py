"""Model work off the event loop: a bounded thread pool and a micro-batcher in front of it.

``Dispatcher.search`` returns an asyncio future for one query.  With micro-batching on, concurrent searches
with the same ``(index, retriever, task, granularity, k)`` wait in one queue and run as a single
``batch_search`` call in the pool; each caller gets its own hit list back.  ``Dispatcher.rag`` does the same
for RAG answers: concurrent requests with the same ``RagSpec`` (index, retriever, task, passages,
demonstrations, generation settings) run as one ``RagPipeline.batch_answer`` call, which batches the
retrieval, the demonstration search and the generation.  A queue is dispatched

* at once when it holds ``micro_batch_max`` items (RAG: ``rag_micro_batch_max``);
* when no batch of its key is running, after ``micro_batch_wait_ms`` (0: on the next turn of the event loop,
  so requests that arrive together still go together) — a lone request waits for nothing;
* when the running batch of its key finishes: under load, requests gather while the model is busy, so batches
  grow with the load (continuous batching) without a fixed delay.

If a batch fails, its items are retried one by one in the same pool job, so an error reaches only the
request that caused it.  With micro-batching off every request is its own pool job.  ``Dispatcher.batch`` runs
a whole batch request as one job.  ``Dispatcher.stream`` runs a synchronous iterator (a streamed RAG answer)
in one pool job and hands its items to the event loop (``EventStream``); streams are never batched.  Nothing
here knows about HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from genret.retrieval import Hit

from ._metrics import Metrics
from ._service import RagOutcome, RagSpec, SearchService
from ._settings import ServerConfig

log = logging.getLogger(__name__)

Key = tuple[Hashable, ...]  # ("search", index, retriever, task, granularity, k) or ("rag", RagSpec)


@dataclass
class _Queue:
    run: Callable[[list[Any]], list[Any]]  # the batch call (pool thread): items -> results, in order
    max_size: int
    items: list[tuple[Any, asyncio.Future]] = field(default_factory=list)
    running: int = 0
    timer: asyncio.Handle | None = None


class Dispatcher:
    """Runs model work in a pool of ``workers`` threads, micro-batching concurrent single requests."""

    def __init__(self, service: SearchService, config: ServerConfig, metrics: Metrics | None = None) -> None:
        self.service, self.config = service, config
        self.metrics = metrics or Metrics()
        self._pool = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="genret-model")
        self._queues: dict[Key, _Queue] = {}
        self.jobs = 0  # pool jobs submitted and not finished (running or waiting for a thread)
        self.calls = 0  # batch_search calls made
        self.rag_calls = 0  # batch_answer calls made
        self.closed = False  # the pool is shut down (close)
        self._calls_lock = threading.Lock()

    @property
    def pending(self) -> int:
        """Requests waiting in micro-batch queues (not yet handed to the pool)."""
        return sum(len(q.items) for q in self._queues.values())

    # ---- entry points (event loop) -----------------------------------------------------------------------
    def search(self, query: str, k: int, index: str, retriever: str, task: str | None = None,
               granularity: str | None = None) -> asyncio.Future[list[Hit]]:
        """The hits of one (checked) query, as a future of the running loop."""
        def run(queries: list[str]) -> list[list[Hit]]:
            return self._call(queries, k, index, retriever, task, granularity)

        if not self.config.micro_batch:
            return self._submit(lambda: run([query])[0])
        return self._enqueue(("search", index, retriever, task, granularity, k), query, run,
                             self.config.micro_batch_max)

    def batch(self, queries: Sequence[str], k: int, index: str, retriever: str, task: str | None = None,
              granularity: str | None = None) -> asyncio.Future[list[list[Hit]]]:
        """The hits of several (checked) queries, run as one job."""
        queries = list(queries)
        return self._submit(lambda: self._call(queries, k, index, retriever, task, granularity))

    def rag(self, query: str, spec: RagSpec) -> asyncio.Future[RagOutcome]:
        """The RAG answer to one (checked) query, micro-batched with concurrent requests of the same spec."""
        def run(queries: list[str]) -> list[RagOutcome]:
            return self._rag_call(queries, spec)

        if not self.config.micro_batch or self.config.rag_micro_batch_max == 1:
            return self._submit(lambda: run([query])[0])
        return self._enqueue(("rag", spec), query, run, self.config.rag_micro_batch_max)

    def stream(self, make: Callable[[], Iterator[Any]]) -> tuple[EventStream, asyncio.Future]:
        """Run the iterator ``make()`` in one pool job; ``(its items on the loop, the job's future)``."""
        events = EventStream(asyncio.get_running_loop())
        return events, self._submit(lambda: events.produce(make))

    def run(self, fn: Callable[[], Any]) -> asyncio.Future:
        """Any blocking call in the pool (not batched)."""
        return self._submit(fn)

    # ---- internals -----------------------------------------------------------------------------------------
    def _call(self, queries: list[str], k: int, index: str, retriever: str, task, granularity) -> list[list[Hit]]:
        """One ``batch_search`` call (pool thread)."""
        with self._calls_lock:
            self.calls += 1
        self.metrics.batch_size.observe(len(queries), retriever)
        return self.service.batch_search(queries, k, index, retriever, task, granularity)

    def _rag_call(self, queries: list[str], spec: RagSpec) -> list[RagOutcome]:
        """One ``batch_answer`` call (pool thread)."""
        with self._calls_lock:
            self.rag_calls += 1
        self.metrics.batch_size.observe(len(queries), "rag")
        return self.service.batch_rag(queries, spec)

    def _submit(self, fn: Callable[[], Any]) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._pool, fn)
        self.jobs += 1
        fut.add_done_callback(self._job_done)
        return fut

    def _job_done(self, fut: asyncio.Future) -> None:
        self.jobs -= 1

    def _enqueue(self, key: Key, item: Any, run: Callable[[list[Any]], list[Any]], max_size: int) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        q = self._queues.setdefault(key, _Queue(run, max_size))
        fut: asyncio.Future = loop.create_future()
        q.items.append((item, fut))
        if len(q.items) >= q.max_size:
            self._flush(key)
        elif q.running == 0 and q.timer is None:
            wait = self.config.micro_batch_wait_ms / 1000
            q.timer = loop.call_later(wait, self._flush, key) if wait > 0 else loop.call_soon(self._flush, key)
        return fut

    def _flush(self, key: Key) -> None:
        q = self._queues.get(key)
        if q is None:
            return
        if q.timer is not None:
            q.timer.cancel()
            q.timer = None
        items, q.items = q.items[:q.max_size], q.items[q.max_size:]
        if not items:
            return
        q.running += 1
        batch = [item for item, _ in items]
        try:
            job = self._submit(lambda: self._run_batch(q.run, batch))
        except Exception as exc:  # the pool is shut down: fail these callers rather than leave them waiting
            failed: asyncio.Future = asyncio.get_running_loop().create_future()
            failed.set_exception(exc)
            self._fan_out(key, items, failed)
            return
        job.add_done_callback(lambda done: self._fan_out(key, items, done))

    @staticmethod
    def _run_batch(run: Callable[[list[Any]], list[Any]], batch: list[Any]) -> list[Any]:
        """The batch's results, or per item its result or error when the batch as a whole fails (pool)."""
        try:
            return run(batch)
        except Exception as exc:
            if len(batch) == 1:
                return [exc]
            log.info("a batch of %d requests failed (%s: %s); running them one by one", len(batch),
                     type(exc).__name__, exc)
        out: list[Any] = []
        for item in batch:
            try:
                out.append(run([item])[0])
            except Exception as exc:
                out.append(exc)
        return out

    def _fan_out(self, key: Key, items: list[tuple[Any, asyncio.Future]], job: asyncio.Future) -> None:
        q = self._queues[key]
        q.running -= 1
        try:
            results = job.result()
        except BaseException as exc:  # e.g. the pool shut down: every caller learns of it
            results = [exc] * len(items)
        for (_, fut), result in zip(items, results):
            if fut.done():
                continue
            if isinstance(result, asyncio.CancelledError):
                fut.cancel()
            elif isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)
        if q.items:  # gathered while this batch ran: go now
            self._flush(key)
        elif q.running == 0 and q.timer is None:
            del self._queues[key]

    def close(self) -> None:
        """Wait for running jobs and stop the threads."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.closed = True


_END = object()


class EventStream:
    """A synchronous iterator run in a pool thread (``produce``), read on the event loop (``get``).  ``cancel``
    (the reader went away, or gave up) makes the producer stop at its next item and close the iterator — for a
    streamed answer that stops the generation — so an abandoned stream never holds a pool thread for longer than
    one item takes."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()

    # producer side (pool thread)
    def produce(self, make: Callable[[], Iterator[Any]]) -> None:
        if self.cancelled.is_set():
            return
        try:
            items = make()
            try:
                for item in items:
                    if self.cancelled.is_set():
                        return
                    self._put((item, None))
            finally:
                close = getattr(items, "close", None)
                if callable(close):
                    close()
            self._put((_END, None))
        except Exception as exc:
            self._put((_END, exc))

    def _put(self, entry: tuple[Any, BaseException | None]) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, entry)
        except RuntimeError:  # the loop is closed: nobody is reading any more
            self.cancelled.set()

    # reader side (event loop)
    async def get(self, timeout_s: float | None = None) -> Any:
        """The next item; ``StopAsyncIteration`` at the end; the producer's exception; ``TimeoutError``."""
        item, exc = await asyncio.wait_for(self._queue.get(), timeout_s)
        if exc is not None:
            raise exc
        if item is _END:
            raise StopAsyncIteration
        return item

    def cancel(self) -> None:
        self.cancelled.set()
