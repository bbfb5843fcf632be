"""Test helpers: run any ASGI app under uvicorn on a free 127.0.0.1 port in a background thread, and a minimal
OpenAI-compatible chat server (``POST /v1/chat/completions``, plain and SSE streaming) backed by a ``Generator``.

    with ServerThread(chat_app(generator)) as server:
        OpenAIGenerator(GeneratorConfig(kind="openai", base_url=server.base_url + "/v1"))

``ServerThread`` also runs genret's own app (``serving.create_app``) for end-to-end tests.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import Body, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from genret.retrieval.rag import Generator


class ServerThread:
    """``with ServerThread(app) as s:`` serves ``app`` at ``s.base_url`` until the block ends."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))  # the port is ours from here on: no race with other tests
        self.port = self._sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@dataclass
class ChatState:
    """What the chat server saw, and how it should misbehave (tests set these between requests)."""

    requests: list[dict[str, Any]] = field(default_factory=list)  # {"authorization": …, "body": …}
    reply: tuple[int, str] | None = None  # answer every request with this status and raw body instead
    reply_type: str = "application/json"  # the media type of ``reply``
    delay_s: float = 0.0  # wait this long before answering
    release: threading.Event = field(default_factory=threading.Event)  # set to cut delays short


def chat_app(generator: Generator, state: ChatState | None = None, *, echo_logprobs: bool = False) -> FastAPI:
    """An OpenAI-compatible ``/v1/chat/completions`` answering with ``generator`` (``app.state.chat``: the
    ``ChatState``).  Honours ``messages``, ``max_tokens``, ``stop`` (string or list) and ``stream``.
    ``echo_logprobs``: also ``/v1/completions`` with ``echo`` + ``logprobs`` as OpenAI defines them (``generator``
    a local ``HFGenerator``; one generated token)."""
    app = FastAPI()
    app.state.chat = chat = state or ChatState()

    if echo_logprobs:
        @app.post("/v1/completions")
        def text_completions(body: dict[str, Any] = Body(...)) -> Response:
            chat.requests.append({"authorization": None, "body": body})
            logprobs = _echo(generator, body["prompt"], int(body.get("logprobs") or 0))
            return JSONResponse({"id": "cmpl-test", "object": "text_completion", "created": int(time.time()),
                                 "model": body.get("model", "test"),
                                 "choices": [{"index": 0, "text": body["prompt"] + logprobs["tokens"][-1],
                                              "logprobs": logprobs, "finish_reason": "length"}]})

    @app.post("/v1/chat/completions")
    def completions(request: Request, body: dict[str, Any] = Body(...)) -> Response:  # sync: runs in a thread
        chat.requests.append({"authorization": request.headers.get("authorization"), "body": body})
        if chat.delay_s:
            chat.release.wait(chat.delay_s)
        if chat.reply is not None:
            status, text = chat.reply
            return Response(text, status_code=status, media_type=chat.reply_type)
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        messages, max_tokens = body["messages"], body.get("max_tokens")
        model = body.get("model", "test")
        if body.get("stream"):
            return StreamingResponse(_sse(generator, messages, max_tokens, stop, model), media_type="text/event-stream")
        text = generator.generate([messages], max_new_tokens=max_tokens, stop=stop)[0]
        return JSONResponse({"id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()),
                             "model": model, "choices": [{"index": 0, "finish_reason": "stop",
                                                          "message": {"role": "assistant", "content": text}}]})

    return app


def _sse(generator: Generator, messages: list, max_tokens: int | None, stop: list[str], model: str) -> Iterator[str]:
    def event(delta: dict[str, str], finish: str | None = None) -> str:
        chunk = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return f"data: {json.dumps(chunk)}\n\n"

    yield event({"role": "assistant", "content": ""})
    for piece in generator.stream(messages, max_new_tokens=max_tokens, stop=stop):
        yield event({"content": piece})
    yield event({}, "stop")
    yield "data: [DONE]\n\n"


def _echo(generator, text: str, top: int) -> dict[str, Any]:
    """OpenAI's ``logprobs`` object for ``text`` echoed plus one greedy token: ``token_logprobs[i]`` = log P(token i
    | the tokens before it) (None for the first), ``top_logprobs[i]`` the ``top`` likeliest tokens at that place."""
    import torch

    tok = generator.tokenizer
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, spans = enc["input_ids"], enc["offset_mapping"]
    with torch.inference_mode():
        logp = torch.log_softmax(generator.lm.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    nxt = int(logp[-1].argmax())
    tokens = [text[a:b] for a, b in spans] + [tok.decode([nxt])]
    offsets = [a for a, _ in spans] + [len(text)]
    ids = ids + [nxt]
    values: list[float | None] = [None] + [float(logp[i - 1, ids[i]]) for i in range(1, len(ids))]
    tops: list[dict[str, float] | None] = [None]
    for i in range(1, len(ids)):
        v, j = logp[i - 1].topk(max(1, top))
        tops.append({tok.decode([int(t)]): float(x) for x, t in zip(v, j)})
    return {"tokens": tokens, "token_logprobs": values, "text_offset": offsets, "top_logprobs": tops}
