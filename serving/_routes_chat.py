"""``POST /v1/chat/completions``: OpenAI's chat completion, answered with the RAG pipeline.

The last user message is the question, ``model`` names the index (any other name: the default index) and the
``genret`` extension picks the retriever, task and passages.  Streamed, the answer is OpenAI's
``chat.completion.chunk`` events, then ``data: [DONE]``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import APIRouter

from ._deps import DispatcherDep, GateDep, ServiceDep
from ._errors import RequestError
from ._models import (
    ChatChoice,
    ChatChoiceMessage,
    ChatCompletion,
    ChatRequest,
    GenretChatOptions,
    RagResponse,
    Usage,
    error_responses,
)
from ._sse import SSE, EventStreamResponse, open_stream, relay, sse

if TYPE_CHECKING:
    from ._batcher import EventStream
    from ._limits import Gate
    from ._service import RagOutcome, RagSpec, SearchService

router = APIRouter()

_RESPONSES = {**error_responses(400, 401, 404, 413, 422, 429, 502, 503, 504),
              200: {"description": "a chat completion, or with stream: OpenAI's chat.completion.chunk events, then "
                                   "data: [DONE]", "content": {SSE: {}}}}  # the events' schemas: _openapi


@router.post("/v1/chat/completions", response_model=ChatCompletion, responses=_RESPONSES)
async def chat_completions(req: ChatRequest, service: ServiceDep, dispatcher: DispatcherDep, gate: GateDep):
    """OpenAI-compatible chat completions answered with retrieval: the last user message is the question,
    `model` names the index (else the default index); `genret` (extension) picks the retriever, task,
    passages."""
    query = _last_user_message(req)
    spec = _rag_spec(req, query, service)
    chat = _Chat(spec, f"chatcmpl-{uuid.uuid4().hex}", int(time.time()))
    if not req.stream:
        return chat.completion(await gate.run(lambda: dispatcher.rag(query, spec)))
    events, _, deadline = await open_stream(gate, dispatcher, lambda: service.stream_rag(query, spec))
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    return EventStreamResponse(chat.chunks(events, deadline, gate, include_usage), events.cancel)


def _last_user_message(req: ChatRequest) -> str:
    for m in reversed(req.messages):
        if m.role == "user":
            text = m.text()
            if not text.strip():
                raise RequestError("the last user message has no text")
            return text
    raise RequestError("no user message: the last user message is the question")


def _rag_spec(req: ChatRequest, query: str, service: SearchService) -> RagSpec:
    opts = req.genret or GenretChatOptions()
    index = opts.index or (req.model if req.model in service.indexes else None)
    return service.rag_spec(query, index=index, retriever=opts.retriever, task=opts.task, passages=opts.passages,
                            max_new_tokens=req.max_completion_tokens or req.max_tokens, stop=req.stops())


@dataclass(frozen=True)
class _Chat:
    """One completion's identity, and its answer in OpenAI's shapes (whole, or as chunks)."""

    spec: RagSpec
    id: str
    created: int

    def extension(self, outcome: RagOutcome) -> dict:
        """The ``genret`` field: what the answer came from, and its parsed answer and citations."""
        r = RagResponse.of(outcome, self.spec)
        return {"index": self.spec.index, "retriever": self.spec.retriever, "task": r.task, "answer": r.answer,
                "citations": [c.model_dump() for c in r.citations], "passages": [h.model_dump() for h in r.passages]}

    def completion(self, outcome: RagOutcome) -> ChatCompletion:
        return ChatCompletion(id=self.id, created=self.created, model=self.spec.index, usage=Usage.of(outcome),
                              genret=self.extension(outcome), choices=[ChatChoice(
                                  message=ChatChoiceMessage(content=outcome.answer.raw),
                                  finish_reason="length" if outcome.truncated else "stop")])

    def envelope(self, **fields) -> str:
        return sse({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                    "model": self.spec.index, **fields})

    def chunk(self, delta: dict, finish: str | None = None, **extra) -> str:
        return self.envelope(choices=[{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
                             **extra)

    async def chunks(self, events: EventStream, deadline: float, gate: Gate,
                     include_usage: bool) -> AsyncIterator[str]:
        """The role chunk, a content chunk per piece of text, the finish chunk (with the extension), the usage
        chunk when asked for, ``[DONE]``; an error as OpenAI's error object."""
        def on(kind: str, value) -> list[str]:
            if kind == "token":
                return [self.chunk({"content": value})] if value else []
            if kind != "answer":
                return []
            out = [self.chunk({}, "length" if value.truncated else "stop", genret=self.extension(value))]
            if include_usage:
                out.append(self.envelope(choices=[], usage=Usage.of(value).model_dump()))
            return out + ["data: [DONE]\n\n"]

        def on_error(status: int, body: dict) -> list[str]:
            return [sse({"error": {"message": body["detail"], "type": body["error"], "code": status}})]

        yield self.chunk({"role": "assistant", "content": ""})
        async for text in relay(events, deadline, gate, on, on_error):
            yield text
