"""Search: ``POST /v1/search``, ``GET /v1/search`` (query parameters) and ``POST /v1/search/batch``.

The service checks names and values (404 / 422, cheap, on the event loop), the gate admits the model work
(429 / 503) and bounds its time (504), and the dispatcher runs it in the model pool — single searches
micro-batched, a batch request as one job.  A granularity asked for with no retriever named picks the index's
first retriever that ranks by it (``SearchService.plan_search``).  ``rerank`` (default true) serves the retriever
with its reranking stage where one applies; false, its first stage only (the response's ``reranked`` says which).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, Query, Request

from ._checks import check_query_string
from ._deps import DispatcherDep, GateDep, ServerDep, ServiceDep
from ._models import (
    K_DOC,
    RERANK_DOC,
    BatchSearchRequest,
    BatchSearchResponse,
    Granularity,
    HitModel,
    QueryHits,
    SearchRequest,
    SearchResponse,
    error_responses,
)

if TYPE_CHECKING:
    from ._batcher import Dispatcher
    from ._limits import Gate
    from ._service import SearchService
    from ._settings import ServerConfig

router = APIRouter()

_ERRORS = error_responses(400, 401, 404, 413, 422, 429, 503, 504)


@router.post("/v1/search", response_model=SearchResponse, responses=_ERRORS)
async def search_post(req: SearchRequest, service: ServiceDep, dispatcher: DispatcherDep, gate: GateDep,
                      server: ServerDep) -> SearchResponse:
    """Search one index with one retriever (reranked where a reranking stage applies, unless rerank is false)."""
    return await _search(service, dispatcher, gate, server, req.query, req.k, req.index, req.retriever, req.task,
                         req.granularity, req.rerank)


@router.get("/v1/search", response_model=SearchResponse, responses=_ERRORS)
async def search_get(request: Request, service: ServiceDep, dispatcher: DispatcherDep, gate: GateDep,
                     server: ServerDep,
                     q: str = Query(min_length=1, description="the query: at most max_query_chars characters, "
                                    "not blank"), k: int | None = Query(None, description=K_DOC),
                     index: str | None = None, retriever: str | None = None, task: str | None = None,
                     granularity: Granularity | None = None,
                     rerank: bool = Query(True, description=RERANK_DOC)) -> SearchResponse:
    """Search with query parameters (as POST /v1/search)."""
    check_query_string(request.scope.get("query_string", b""))
    return await _search(service, dispatcher, gate, server, q, k, index, retriever, task, granularity, rerank)


@router.post("/v1/search/batch", response_model=BatchSearchResponse, responses=_ERRORS)
async def search_batch(req: BatchSearchRequest, service: ServiceDep, dispatcher: DispatcherDep, gate: GateDep,
                       server: ServerDep) -> BatchSearchResponse:
    """Several queries, one retriever: one hit list per query, in order (one batch_search call)."""
    k = server.default_k if req.k is None else req.k
    index, retriever = service.plan_search(req.queries, k, req.index, req.retriever, req.granularity)
    results = await gate.run(lambda: dispatcher.batch(req.queries, k, index, retriever, req.task, req.granularity,
                                                      req.rerank))
    return BatchSearchResponse(index=index, retriever=retriever,
                               reranked=req.rerank and service.reranks(index, retriever), results=[
        QueryHits(query=q, hits=[HitModel.of(h) for h in hits]) for q, hits in zip(req.queries, results)])


async def _search(service: SearchService, dispatcher: Dispatcher, gate: Gate, server: ServerConfig, query: str,
                  k: int | None, index: str | None, retriever: str | None, task: str | None,
                  granularity: str | None, rerank: bool) -> SearchResponse:
    k = server.default_k if k is None else k
    index, retriever = service.plan_search([query], k, index, retriever, granularity)
    hits = await gate.run(lambda: dispatcher.search(query, k, index, retriever, task, granularity, rerank))
    return SearchResponse(query=query, index=index, retriever=retriever,
                          reranked=rerank and service.reranks(index, retriever), hits=[HitModel.of(h) for h in hits])

