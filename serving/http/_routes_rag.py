"""``POST /v1/rag``: an answer from retrieved passages (and demonstrations), as JSON or server-sent events.

Not streaming, answers are micro-batched per ``RagSpec`` (``Dispatcher.rag``); a streamed answer runs alone in
the model pool and reaches the client as the events ``passages``, ``token``…, then ``answer`` (or ``error``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from fastapi import APIRouter

from ._deps import DispatcherDep, GateDep, ServiceDep
from ._models import DemoModel, HitModel, RagRequest, RagResponse, error_responses
from ._sse import SSE, EventStreamResponse, open_stream, relay, sse

if TYPE_CHECKING:
    from ._batcher import EventStream
    from ._limits import Gate
    from ._rag import RagSpec

router = APIRouter()

_RESPONSES = {**error_responses(400, 401, 404, 413, 422, 429, 502, 503, 504),
              200: {"description": "the answer (JSON), or with stream: server-sent events passages, token…, answer "
                                   "(or error)", "content": {SSE: {}}}}  # the events' schemas: _openapi


@router.post("/v1/rag", response_model=RagResponse, responses=_RESPONSES)
async def rag(req: RagRequest, service: ServiceDep, dispatcher: DispatcherDep, gate: GateDep):
    """Answer from retrieved passages (and demonstrations), with citations mapped to KILT provenance."""
    spec = service.rag_spec(req.query, index=req.index, retriever=req.retriever, task=req.task,
                            passages=req.passages, demos=req.demos, demo_source=req.demo_source, rerank=req.rerank)
    reranked = service.rag_reranks(spec)
    if not req.stream:
        return RagResponse.of(await gate.run(lambda: dispatcher.rag(req.query, spec)), spec, reranked)
    events, (_, (hits, demos)), deadline = await open_stream(gate, dispatcher,
                                                             lambda: service.stream_rag(req.query, spec))
    passages = {"index": spec.index, "retriever": spec.retriever, "reranked": reranked,
                "passages": [HitModel.of(h).model_dump() for h in hits],
                "demos": [DemoModel.of(d).model_dump() for d in demos]}
    return EventStreamResponse(_events(passages, spec, reranked, events, deadline, gate), events.cancel)


async def _events(passages: dict, spec: RagSpec, reranked: bool, events: EventStream, deadline: float,
                  gate: Gate) -> AsyncIterator[str]:
    """``passages``, then a ``token`` per piece of text and the ``answer`` (or an ``error`` with its status)."""
    def on(kind: str, value) -> list[str]:
        if kind == "token":
            return [sse({"text": value}, "token")] if value else []
        return [sse(RagResponse.of(value, spec, reranked).model_dump(), "answer")] if kind == "answer" else []

    def on_error(status: int, body: dict) -> list[str]:
        return [sse({**body, "status": status}, "error")]

    yield sse(passages, "passages")
    async for text in relay(events, deadline, gate, on, on_error):
        yield text
