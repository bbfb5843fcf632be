"""Model work off the event loop: a bounded thread pool and a micro-batcher in front of it.

``Dispatcher.search`` returns an asyncio future for one query.  With micro-batching on, concurrent searches
with the same ``(index, retriever, task, granularity, k)`` wait in one queue and run as a single
``batch_search`` call in the pool; each caller gets its own hit list back.  A queue is dispatched

* at once when it holds ``micro_batch_max`` queries;
* when no batch of its key is running, after ``micro_batch_wait_ms`` (0: on the next turn of the event loop,
  so requests that arrive together still go together) — a lone request waits for nothing;
* when the running batch of its key finishes: under load, requests gather while the model is busy, so batches
  grow with the load (continuous batching) without a fixed delay.

If a batch fails, its queries are retried one by one in the same pool job, so an error reaches only the
request that caused it.  With micro-batching off every search is its own pool job.  ``Dispatcher.batch`` runs
a whole batch request as one job.  Nothing here knows about HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from retrieval import Hit

from ._metrics import Metrics
from ._service import SearchService
from ._settings import ServerConfig

log = logging.getLogger(__name__)

Key = tuple[str, str, str | None, str | None, int]  # index, retriever, task, granularity, k


@dataclass
class _Queue:
    items: list[tuple[str, asyncio.Future]] = field(default_factory=list)
    running: int = 0
    timer: asyncio.Handle | None = None


class Dispatcher:
    """Runs searches in a pool of ``workers`` threads, micro-batching concurrent single searches."""

    def __init__(self, service: SearchService, config: ServerConfig, metrics: Metrics | None = None) -> None:
        self.service, self.config = service, config
        self.metrics = metrics or Metrics()
        self._pool = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="genret-model")
        self._queues: dict[Key, _Queue] = {}
        self.jobs = 0  # pool jobs submitted and not finished (running or waiting for a thread)
        self.calls = 0  # batch_search calls made
        self._calls_lock = threading.Lock()

    @property
    def pending(self) -> int:
        """Queries waiting in micro-batch queues (not yet handed to the pool)."""
        return sum(len(q.items) for q in self._queues.values())

    # ---- entry points (event loop) -----------------------------------------------------------------------
    def search(self, query: str, k: int, index: str, retriever: str, task: str | None = None,
               granularity: str | None = None) -> asyncio.Future[list[Hit]]:
        """The hits of one (checked) query, as a future of the running loop."""
        if not self.config.micro_batch:
            return self._submit(lambda: self._call([query], k, index, retriever, task, granularity)[0])
        loop = asyncio.get_running_loop()
        key: Key = (index, retriever, task, granularity, k)
        q = self._queues.setdefault(key, _Queue())
        fut: asyncio.Future = loop.create_future()
        q.items.append((query, fut))
        if len(q.items) >= self.config.micro_batch_max:
            self._flush(key)
        elif q.running == 0 and q.timer is None:
            wait = self.config.micro_batch_wait_ms / 1000
            q.timer = loop.call_later(wait, self._flush, key) if wait > 0 else loop.call_soon(self._flush, key)
        return fut

    def batch(self, queries: Sequence[str], k: int, index: str, retriever: str, task: str | None = None,
              granularity: str | None = None) -> asyncio.Future[list[list[Hit]]]:
        """The hits of several (checked) queries, run as one job."""
        queries = list(queries)
        return self._submit(lambda: self._call(queries, k, index, retriever, task, granularity))

    # ---- internals -----------------------------------------------------------------------------------------
    def _call(self, queries: list[str], k: int, index: str, retriever: str, task, granularity) -> list[list[Hit]]:
        """One ``batch_search`` call (pool thread)."""
        with self._calls_lock:
            self.calls += 1
        self.metrics.batch_size.observe(len(queries), retriever)
        return self.service.batch_search(queries, k, index, retriever, task, granularity)

    def _submit(self, fn: Callable[[], Any]) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._pool, fn)
        self.jobs += 1
        fut.add_done_callback(self._job_done)
        return fut

    def _job_done(self, fut: asyncio.Future) -> None:
        self.jobs -= 1

    def _flush(self, key: Key) -> None:
        q = self._queues.get(key)
        if q is None:
            return
        if q.timer is not None:
            q.timer.cancel()
            q.timer = None
        items, q.items = q.items[:self.config.micro_batch_max], q.items[self.config.micro_batch_max:]
        if not items:
            return
        q.running += 1
        queries = [query for query, _ in items]
        try:
            job = self._submit(lambda: self._run_batch(key, queries))
        except Exception as exc:  # the pool is shut down: fail these callers rather than leave them waiting
            failed: asyncio.Future = asyncio.get_running_loop().create_future()
            failed.set_exception(exc)
            self._fan_out(key, items, failed)
            return
        job.add_done_callback(lambda done: self._fan_out(key, items, done))

    def _run_batch(self, key: Key, queries: list[str]) -> list[list[Hit] | BaseException]:
        """The batch's results, or per query its result or error when the batch as a whole fails (pool)."""
        index, retriever, task, granularity, k = key
        try:
            return self._call(queries, k, index, retriever, task, granularity)
        except Exception as exc:
            if len(queries) == 1:
                return [exc]
            log.info("a batch of %d %s searches failed (%s: %s); running them one by one", len(queries), retriever,
                     type(exc).__name__, exc)
        out: list[list[Hit] | BaseException] = []
        for query in queries:
            try:
                out.append(self._call([query], k, index, retriever, task, granularity)[0])
            except Exception as exc:
                out.append(exc)
        return out

    def _fan_out(self, key: Key, items: list[tuple[str, asyncio.Future]], job: asyncio.Future) -> None:
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
