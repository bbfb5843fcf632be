"""HTTP request and response models (pydantic): what the OpenAPI spec at ``/docs`` shows."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from retrieval import Hit

Granularity = Literal["page", "passage", "sentence", "entity"]

_K = "number of hits, 1..max_k (server setting, default 100); the server's default_k if omitted"
_INDEX = "index name, from GET /v1/indexes (the first served index if omitted)"
_RETRIEVER = "dense, bm25, generative or hybrid — whichever the index offers (its first if omitted)"
_TASK = ("task prompt of the generative retriever (qa, fact_check, page, entity, squad, scifact, climate_fever, "
         "generic, or one configured); an unknown task uses the generic prompt; other retrievers ignore it")
_GRANULARITY = ("generative retriever only: page / entity (one hit per page), passage (units) or sentence; "
                "default: the task prompt's")


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

    @classmethod
    def of(cls, hit: Hit) -> HitModel:
        p = hit.provenance
        return cls(docid=hit.unit_id, score=hit.score, rank=hit.rank, text=hit.text,
                   provenance=ProvenanceModel(**{f: getattr(p, f) for f in ProvenanceModel.model_fields}),
                   matched=list(hit.matched))


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, description="at most max_query_chars characters (default 2000)")
    k: int | None = Field(None, description=_K)
    index: str | None = Field(None, description=_INDEX)
    retriever: str | None = Field(None, description=_RETRIEVER, examples=["dense", "bm25", "generative", "hybrid"])
    task: str | None = Field(None, description=_TASK, examples=["qa", "page", "fact_check"])
    granularity: Granularity | None = Field(None, description=_GRANULARITY)


class BatchSearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queries: list[str] = Field(min_length=1, description="1..max_batch queries (default 64)")
    k: int | None = Field(None, description=_K)
    index: str | None = Field(None, description=_INDEX)
    retriever: str | None = Field(None, description=_RETRIEVER, examples=["dense", "bm25", "generative", "hybrid"])
    task: str | None = Field(None, description=_TASK, examples=["qa", "page", "fact_check"])
    granularity: Granularity | None = Field(None, description=_GRANULARITY)


class SearchResponse(BaseModel):
    query: str
    index: str
    retriever: str
    hits: list[HitModel]


class QueryHits(BaseModel):
    query: str
    hits: list[HitModel]


class BatchSearchResponse(BaseModel):
    index: str
    retriever: str
    results: list[QueryHits] = Field(description="one entry per query, in request order")


class IndexInfo(BaseModel):
    name: str
    units: int
    unit_kind: str
    retrievers: list[str]


class Status(BaseModel):
    status: str


class ErrorResponse(BaseModel):
    error: str = Field(description="error class, e.g. ValidationError, NotFoundError, Overloaded")
    detail: str = Field(description="what was wrong, in words")


def error_responses(*codes: int) -> dict:
    """OpenAPI ``responses`` entries for the error statuses an operation may answer."""
    words = {401: "API key missing or invalid", 404: "unknown index or retriever", 413: "request body too large",
             422: "invalid request", 429: "too many requests in flight (Retry-After)",
             503: "not ready or shutting down (Retry-After)", 504: "request timed out"}
    return {c: {"model": ErrorResponse, "description": words[c]} for c in codes}
