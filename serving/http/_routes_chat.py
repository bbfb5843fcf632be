"""``POST /v1/chat/completions``: OpenAI's chat completion, answered with the RAG pipeline.

The last user message is the question (the passages are retrieved for it); the system messages and the earlier
turns go into the prompt as far as its token budget allows.  ``model`` is a model id (``INDEX`` or
``INDEX/RETRIEVER``, ``GET /v1/models``; another name: 404) and the ``genret`` extension can override the index
and retriever, pick the task and passages, and ask for the retriever's first stage only (``rerank: false``; the
response's extension says ``reranked``).  Parameters genret cannot honour are a 400; errors are OpenAI's
(``_errors.openai_error``).  ``content`` is the answer as a person reads it, with its citations ``[n]``
(``RagAnswer.reply``; the generator's text as written is the extension's ``raw``); ``finish_reason`` is ``length``
when the generator stopped at ``max_tokens``.  Streamed, the answer is OpenAI's ``chat.completion.chunk`` events
(their content together the same ``content``), then ``data: [DONE]``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import APIRouter

from genret.retrieval.rag import readable_prefix, resolve_answer_task

from ._deps import DispatcherDep, GateDep, ServiceDep
from ._errors import RequestError, UnsupportedParameter, openai_error
from ._models import RagResponse, Usage
from ._models_openai import (
    ChatChoice,
    ChatChoiceMessage,
    ChatCompletion,
    ChatRequest,
    GenretChatOptions,
    openai_error_responses,
)
from ._sse import SSE, EventStreamResponse, open_stream, relay, sse

if TYPE_CHECKING:
    from ._batcher import EventStream
    from ._limits import Gate
    from ._rag import RagOutcome, RagSpec
    from ._service import SearchService

router = APIRouter()

_RESPONSES = {**openai_error_responses(400, 401, 404, 413, 429, 502, 503, 504),
              200: {"description": "a chat completion, or with stream: OpenAI's chat.completion.chunk events, then "
                                   "data: [DONE]", "content": {SSE: {}}}}  # the events' schemas: _openapi
_ROLES = ("system", "developer", "user", "assistant")  # of the history; tool and function messages are left out


@router.post("/v1/chat/completions", response_model=ChatCompletion, responses=_RESPONSES)
async def chat_completions(req: ChatRequest, service: ServiceDep, dispatcher: DispatcherDep, gate: GateDep):
    """OpenAI-compatible chat completions answered with retrieval: the last user message is the question, system
    messages and earlier turns are in the prompt; `model` names the index (and retriever); `genret` (extension)
    picks the retriever, task, passages, rerank."""
    query, history = _conversation(req)
    spec = _rag_spec(req, query, history, service)
    chat = _Chat(spec, service.rag_reranks(spec), req.model or spec.index, f"chatcmpl-{uuid.uuid4().hex}",
                 int(time.time()))
    if not req.stream:
        return chat.completion(await gate.run(lambda: dispatcher.rag(query, spec)))
    events, first, deadline = await open_stream(gate, dispatcher, lambda: service.stream_rag(query, spec))
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    passages = len(first[1][0]) if first[0] == "passages" else 0
    return EventStreamResponse(chat.chunks(events, deadline, gate, include_usage, passages), events.cancel)


def _conversation(req: ChatRequest) -> tuple[str, list[tuple[str, str]]]:
    """``(the question, the (role, text) messages before it)``; a 400 for what genret cannot honour."""
    if (unsupported := req.unsupported()) is not None:
        name, what = unsupported
        raise UnsupportedParameter(f"{name} is not supported by this server ({what}): it answers with one text "
                                   "choice from retrieved passages; leave it out", param=name)
    for i, m in enumerate(req.messages):
        if (part := m.other_part()) is not None:
            raise UnsupportedParameter(f"messages[{i}] has a content part of type {part!r}: this server reads text "
                                       "only", param=f"messages.{i}.content")
    last = next((i for i in reversed(range(len(req.messages))) if req.messages[i].role == "user"), None)
    if last is None:
        raise RequestError("no user message: the last user message is the question", param="messages")
    text = req.messages[last].text()
    if not text.strip():
        raise RequestError("the last user message has no text", param="messages")
    return text, [(m.role, m.text()) for m in req.messages[:last] if m.role in _ROLES and m.text().strip()]


def _rag_spec(req: ChatRequest, query: str, history: list[tuple[str, str]], service: SearchService) -> RagSpec:
    opts = req.genret or GenretChatOptions()
    cap = service.settings.server.max_tokens
    for name in ("max_tokens", "max_completion_tokens"):  # both, though the second wins: the document bounds both
        if (value := getattr(req, name)) is not None and value > cap:
            raise RequestError(f"{name} {value} is over this server's limit of {cap} new tokens (server.max_tokens)",
                               param=name)
    index, retriever = service.resolve_model(req.model)
    return service.rag_spec(query, index=opts.index or index, retriever=opts.retriever or retriever, task=opts.task,
                            passages=opts.passages, max_new_tokens=req.max_completion_tokens or req.max_tokens,
                            stop=req.stops(), history=history, rerank=opts.rerank)


@dataclass(frozen=True)
class _Chat:
    """One completion's identity, and its answer in OpenAI's shapes (whole, or as chunks)."""

    spec: RagSpec
    reranked: bool  # whether the passages were reranked (``SearchService.rag_reranks``)
    model: str
    id: str
    created: int

    def extension(self, outcome: RagOutcome) -> dict:
        """The ``genret`` field: what the answer came from (whether its passages were reranked), its parsed answer
        and citations, and the generator's raw text."""
        r = RagResponse.of(outcome, self.spec, self.reranked)
        return {"index": self.spec.index, "retriever": self.spec.retriever, "reranked": r.reranked, "task": r.task,
                "answer": r.answer, "raw": r.raw, "citations": [c.model_dump() for c in r.citations],
                "passages": [h.model_dump() for h in r.passages]}

    def completion(self, outcome: RagOutcome) -> ChatCompletion:
        """The whole reply: ``content`` is the answer as a person reads it, with its citations ``[n]``."""
        return ChatCompletion(id=self.id, created=self.created, model=self.model, usage=Usage.of(outcome),
                              genret=self.extension(outcome), choices=[ChatChoice(
                                  message=ChatChoiceMessage(content=outcome.answer.reply),
                                  finish_reason="length" if outcome.truncated else "stop")])

    def envelope(self, **fields) -> str:
        return sse({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                    "model": self.model, **fields})

    def chunk(self, delta: dict, finish: str | None = None, **extra) -> str:
        return self.envelope(choices=[{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
                             **extra)

    async def chunks(self, events: EventStream, deadline: float, gate: Gate, include_usage: bool,
                     passages: int) -> AsyncIterator[str]:
        """The role chunk, content chunks as the answer grows (a free answer's whole sentences as they are written,
        the rest — a short answer, the citations — at its end: together the whole reply's ``content``), the finish
        chunk (with the extension), the usage chunk when asked for, ``[DONE]``; an error as OpenAI's error
        object."""
        _, task = resolve_answer_task(self.spec.task)
        raw, sent = [], []

        def grow(text: str) -> list[str]:
            shown = "".join(sent)
            if len(text) <= len(shown) or not text.startswith(shown):
                return []
            sent.append(text[len(shown):])
            return [self.chunk({"content": sent[-1]})]

        def on(kind: str, value) -> list[str]:
            if kind == "token":
                raw.append(value)
                return grow(readable_prefix(task, "".join(raw), passages))
            if kind != "answer":
                return []
            out = grow(value.answer.reply)
            out.append(self.chunk({}, "length" if value.truncated else "stop", genret=self.extension(value)))
            if include_usage:
                out.append(self.envelope(choices=[], usage=Usage.of(value).model_dump()))
            return out + ["data: [DONE]\n\n"]

        def on_error(status: int, body: dict) -> list[str]:
            return [sse(openai_error(status, body)[1])]

        yield self.chunk({"role": "assistant", "content": ""})
        async for text in relay(events, deadline, gate, on, on_error):
            yield text
