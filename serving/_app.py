"""The FastAPI application factory: HTTP models, routes, error mapping."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from indexing import GenretError, IndexFormatError, NotFoundError
from retrieval import Hit

from ._service import RequestError, SearchService
from ._settings import Settings


class ProvenanceModel(BaseModel):
    wikipedia_id: str
    title: str
    start_paragraph_id: int
    end_paragraph_id: int
    start_character: int
    end_character: int


class HitModel(BaseModel):
    docid: int = Field(description="unit id in the index")
    score: float
    rank: int
    text: str | None
    provenance: ProvenanceModel
    matched: list[tuple[str, float]] = Field(default_factory=list, description="generative: matched n-grams")


class SearchRequest(BaseModel):
    query: str = Field(min_length=1)
    k: int | None = Field(None, description="number of hits (server default if omitted)")
    index: str | None = Field(None, description="index name (the first served index if omitted)")
    retriever: str | None = None
    task: str | None = Field(None, description="task prompt of the generative retriever (qa, fact_check, page, …)")


class SearchResponse(BaseModel):
    query: str
    index: str
    retriever: str
    hits: list[HitModel]


class ErrorResponse(BaseModel):
    error: str
    detail: str


def _hit_model(hit: Hit) -> HitModel:
    p = hit.provenance
    return HitModel(docid=hit.unit_id, score=hit.score, rank=hit.rank, text=hit.text,
                    provenance=ProvenanceModel(**{f: getattr(p, f) for f in ProvenanceModel.model_fields}),
                    matched=list(hit.matched))


# Domain errors -> HTTP status, in one place.
_STATUS = [(NotFoundError, 404), (RequestError, 422), (IndexFormatError, 500), (GenretError, 400)]


def create_app(settings: Settings, service: SearchService | None = None) -> FastAPI:
    """An app serving ``settings.indexes`` (or the given service)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        app.state.service.close()

    app = FastAPI(title="genret", version="0.1.0", lifespan=lifespan)
    app.state.service = service or SearchService(settings)

    @app.exception_handler(GenretError)
    async def _domain_error(request: Request, exc: GenretError) -> JSONResponse:
        status = next(code for cls, code in _STATUS if isinstance(exc, cls))
        return JSONResponse({"error": type(exc).__name__, "detail": str(exc)}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return JSONResponse({"error": "ValidationError", "detail": f"{where}: {first['msg']}"}, status_code=422)

    async def _search(req: SearchRequest) -> SearchResponse:
        svc: SearchService = app.state.service
        k = req.k if req.k is not None else settings.server.default_k
        index, retriever, hits = await run_in_threadpool(svc.search, req.query, k, req.index, req.retriever,
                                                         req.task)
        return SearchResponse(query=req.query, index=index, retriever=retriever,
                              hits=[_hit_model(h) for h in hits])

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/v1/indexes")
    async def indexes() -> list[dict]:
        return app.state.service.describe()

    @app.post("/v1/search", response_model=SearchResponse, responses={404: {"model": ErrorResponse},
                                                                        422: {"model": ErrorResponse}})
    async def search_post(req: SearchRequest) -> SearchResponse:
        return await _search(req)

    @app.get("/v1/search", response_model=SearchResponse, responses={404: {"model": ErrorResponse},
                                                                       422: {"model": ErrorResponse}})
    async def search_get(q: str = Query(min_length=1), k: int | None = None, index: str | None = None,
                         retriever: str | None = None, task: str | None = None) -> SearchResponse:
        return await _search(SearchRequest(query=q, k=k, index=index, retriever=retriever, task=task))

    return app
