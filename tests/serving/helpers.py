"""Helpers of the serving tests: settings over the tiny index, and a retriever wrapper that records, slows down
or fails ``batch_search`` calls."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from contextlib import contextmanager

from genret.core import InputError
from genret.retrieval import Generator, GeneratorConfig, Retriever
from genret.serving import Settings
from genret.serving.http._service import SearchService


def tiny_settings(tiny_index, tiny_lm_dir, generator_dir=None, **server) -> Settings:
    """Settings over the tiny index; the RAG generator is the tiny chat LM (few new tokens) when given.  Lazy unless
    ``lazy=False``: an app over them is ready at once, without warming up (``test_warmup`` tests that)."""
    server.setdefault("lazy", True)
    generator = {"model": str(generator_dir), "device": "cpu", "max_new_tokens": 4, "max_input_tokens": 512} \
        if generator_dir is not None else {}
    return Settings(indexes=[tiny_index], server=server, generator=generator,
                    retrieval={"dense": {"device": "cpu"},
                               "generative": {"model": str(tiny_lm_dir), "device": "cpu", "beam": 2, "max_len": 2}})


class Recording(Retriever):
    """Wraps a retriever: records every ``batch_search`` call, sleeps ``delay`` seconds in it, and fails the
    whole call when a query contains ``fail_on``."""

    def __init__(self, inner: Retriever, delay: float = 0.0, fail_on: str | None = None) -> None:
        self.inner, self.delay, self.fail_on = inner, delay, fail_on
        self.name = inner.name
        self.calls: list[tuple[list[str], int]] = []
        self._lock = threading.Lock()

    def batch_search(self, queries: Sequence[str], k: int = 10, *, task=None, **kwargs):
        with self._lock:
            self.calls.append((list(queries), k))
        time.sleep(self.delay)
        if self.fail_on and any(self.fail_on in q for q in queries):
            raise InputError(f"refusing a query with {self.fail_on!r}")
        return self.inner.batch_search(queries, k, task=task, **kwargs)


@contextmanager
def wrapped(service: SearchService, name: str = "dense", **options):
    """Temporarily replace the service's retriever ``name`` (default index) by a :class:`Recording` of it."""
    inner = service.retriever(None, name)
    rec = Recording(inner, **options)
    service.use_retriever(None, name, rec)
    try:
        yield rec
    finally:
        service.use_retriever(None, name, inner)


@contextmanager
def app_over(service: SearchService, **server):
    """An app over the shared ``service`` with these server settings (its model pool closed afterwards); lazy
    unless ``lazy=False`` (the service's retrievers load on first use, shared by every app over it)."""
    from genret.serving import ServerConfig, create_app

    server.setdefault("lazy", True)
    app = create_app(service.settings.model_copy(update={"server": ServerConfig(**server)}), service)
    try:
        yield app
    finally:
        app.state.dispatcher.close()


def async_client(app):
    """An httpx client calling the app in this event loop (no lifespan: the app is ready unless preloading)."""
    import httpx

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://genret.test")


class ScriptedGenerator(Generator):
    """A generator that writes ``text`` (word by word when streamed, ``delay`` seconds per piece) and records
    whether a stream was closed before its end."""

    name = "scripted"

    def __init__(self, text: str = "Guido van Rossum [1]", delay: float = 0.0, pieces: int | None = None) -> None:
        self.config = GeneratorConfig(max_new_tokens=64)
        self.text, self.delay = text, delay
        self.pieces = pieces  # stream this many pieces (repeating the words); default: the words once
        self.streams_closed_early = 0
        self.prompts: list = []

    def generate(self, prompts, *, max_new_tokens=None, stop=()):
        self.prompts.extend(prompts)
        return [self.text for _ in prompts]

    def stream(self, prompt, *, max_new_tokens=None, stop=()):
        words = [w + " " for w in self.text.split()]
        n = self.pieces or len(words)
        done = False
        try:
            for i in range(n):
                time.sleep(self.delay)
                yield words[i % len(words)]
            done = True
        finally:
            if not done:
                self.streams_closed_early += 1


@contextmanager
def generator_swapped(service: SearchService, generator: Generator):
    """Temporarily make ``generator`` the service's RAG generator."""
    old = service.use_generator(generator)
    try:
        yield generator
    finally:
        service.use_generator(old)
