"""HTTP request and response models (pydantic): what the OpenAPI spec at ``/docs`` shows.

Request numbers and flags are JSON's (``k: true`` or ``k: "5"`` is a 422, not 1 or 5; ``k: 5.0`` is JSON Schema's
integer 5).  Limits that come from the
settings (``max_k``, ``max_query_chars``, ``max_batch``, …) are checked by the service and written into the
served spec by ``_openapi``; the events of streamed answers are modelled here and described there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from genret.retrieval import Demo, Hit, Provenance, RagConfig

if TYPE_CHECKING:
    from ._rag import RagOutcome, RagSpec

Granularity = Literal["page", "passage", "sentence", "entity"]


class JsonRequest(BaseModel):
    """A request body whose numbers and flags are JSON Schema's: its int, float and bool fields are strict (no
    ``true`` for 1, no ``"5"`` for 5), and a whole float is an integer (``5.0``, as JSON Schema counts it)."""

    @field_validator("*", mode="before")
    @classmethod
    def _whole_floats(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, float) and value.is_integer() and info.field_name in cls._int_fields():
            return int(value)
        return value

    @classmethod
    def _int_fields(cls) -> frozenset[str]:
        return frozenset(name for name, f in cls.model_fields.items() if f.annotation in (int, int | None))

K_DOC = "number of hits, 1..max_k (server setting, default 100); the server's default_k if omitted"
# A query needs a character that is not whitespace (as Python's str.isspace() counts it): the spec's pattern,
# checked by the service (``_checks.check_queries``), which answers 422 with its own words.
NON_BLANK = "[^\\t-\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
_NON_BLANK = {"pattern": NON_BLANK}
Query = Annotated[str, Field(json_schema_extra={"minLength": 1, **_NON_BLANK})]
_INDEX = "index name, from GET /v1/indexes (the first served index if omitted)"
_RETRIEVER = ("dense, bm25, generative or hybrid — whichever the index offers (if omitted: the index's first; with "
              "a granularity, its first retriever that ranks by it)")
_TASK = ("task prompt of the generative retriever (qa, fact_check, page, entity, squad, scifact, climate_fever, "
         "generic, or one configured); an unknown task uses the generic prompt; other retrievers ignore it")
_GRANULARITY = ("generative retriever (or a hybrid with it) only: page / entity (one hit per page), passage (units) "
                "or sentence; default: the task prompt's")
RERANK_DOC = ("true (default): the retriever as served, followed by its reranking stage where one applies (a model "
              "the server's retrieval.rerank names, or the index's adapted reranker over the retriever `genret adapt` "
              "fitted it to, usually hybrid); false: its first stage only, unreranked — to compare the two")
_RERANKED = "whether the hits were reranked: rerank asked for and the retriever has a reranking stage on this server"
RAG_RERANKED = ("whether the passages were reranked: passages retrieved, rerank asked for and the retriever has a "
                "reranking stage on this server")


class ProvenanceModel(BaseModel):
    wikipedia_id: str
    title: str
    start_paragraph_id: int
    end_paragraph_id: int
    start_character: int
    end_character: int

    @classmethod
    def of(cls, provenance: Provenance) -> ProvenanceModel:
        """The same fields, by name."""
        return cls(**{f: getattr(provenance, f) for f in cls.model_fields})


class HitModel(BaseModel):
    docid: int = Field(description="unit id in the index")
    score: float
    rank: int
    text: str | None
    provenance: ProvenanceModel
    matched: list[tuple[str, float]] = Field(default_factory=list, description="generative: matched n-grams")
    member_ranks: list[tuple[str, int]] = Field(default_factory=list,
                                                description="hybrid: each member's rank of this unit (members that "
                                                            "did not return it are absent)")

    @classmethod
    def of(cls, hit: Hit) -> HitModel:
        return cls(docid=hit.unit_id, score=hit.score, rank=hit.rank, text=hit.text,
                   provenance=ProvenanceModel.of(hit.provenance),
                   matched=list(hit.matched), member_ranks=list(hit.member_ranks))


class SearchRequest(JsonRequest):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, description="at most max_query_chars characters (default 2000), not blank",
                       json_schema_extra=_NON_BLANK)
    k: int | None = Field(None, strict=True, description=K_DOC)  # 1..max_k: the service checks, _openapi shows
    index: str | None = Field(None, description=_INDEX)
    retriever: str | None = Field(None, description=_RETRIEVER, examples=["dense", "bm25", "generative", "hybrid"])
    task: str | None = Field(None, description=_TASK, examples=["qa", "page", "fact_check"])
    granularity: Granularity | None = Field(None, description=_GRANULARITY)
    rerank: bool = Field(True, strict=True, description=RERANK_DOC)


class BatchSearchRequest(JsonRequest):
    model_config = ConfigDict(extra="forbid")
    queries: list[Query] = Field(min_length=1, description="1..max_batch queries (default 64), each at most "
                                 "max_query_chars characters, not blank")
    k: int | None = Field(None, strict=True, description=K_DOC)  # 1..max_k: the service checks, _openapi shows
    index: str | None = Field(None, description=_INDEX)
    retriever: str | None = Field(None, description=_RETRIEVER, examples=["dense", "bm25", "generative", "hybrid"])
    task: str | None = Field(None, description=_TASK, examples=["qa", "page", "fact_check"])
    granularity: Granularity | None = Field(None, description=_GRANULARITY)
    rerank: bool = Field(True, strict=True, description=RERANK_DOC)


class SearchResponse(BaseModel):
    query: str
    index: str
    retriever: str
    reranked: bool = Field(description=_RERANKED)
    hits: list[HitModel]


class QueryHits(BaseModel):
    query: str
    hits: list[HitModel]


class BatchSearchResponse(BaseModel):
    index: str
    retriever: str
    reranked: bool = Field(description=_RERANKED)
    results: list[QueryHits] = Field(description="one entry per query, in request order")


class IndexInfo(BaseModel):
    name: str
    units: int
    unit_kind: str
    retrievers: list[str]
    tasks: list[str] = Field(description="task names with their own prompt (retrieval prompts, RAG answer tasks)")
    demo_tasks: list[str] = Field(description="tasks with a demonstration pool (RAG demos)")


class Status(BaseModel):
    status: str


# ---- RAG ---------------------------------------------------------------------------------------------------
MAX_PASSAGES = RagConfig.model_fields["passages"].metadata[-1].le
MAX_DEMOS = RagConfig.model_fields["demos"].metadata[-1].le
DemoSourceName = Literal["udr", "bm25", "random"]


class RagRequest(JsonRequest):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"query": "who proclaimed the oil embargo", "task": "qa", "passages": 3},
        {"query": "The oil crisis began in 1973.", "task": "fact_check", "retriever": "bm25", "stream": True}]})
    query: str = Field(min_length=1, description="the question or claim; at most max_query_chars characters, not "
                       "blank", json_schema_extra=_NON_BLANK)
    index: str | None = Field(None, description=_INDEX)
    retriever: str | None = Field(None, description=_RETRIEVER, examples=["dense", "bm25", "hybrid"])
    task: str | None = Field(None, description="answer task (qa, squad: short answer; fact_check, scifact, "
                             "climate_fever: SUPPORTS / REFUTES; generic: free text — the fallback for unknown "
                             "names); also the generative retriever's task prompt and the demonstrations' pool",
                             examples=["qa", "fact_check", "generic"])
    passages: int | None = Field(None, ge=0, le=MAX_PASSAGES, strict=True,
                                 description="retrieved passages in the prompt (0: no retrieval); default rag.passages")
    demos: int | None = Field(None, ge=0, le=MAX_DEMOS, strict=True,
                              description="demonstrations in the prompt; needs the server's demos directory and a "
                                          "pool for the task; default rag.demos when the task has a pool, else 0")
    demo_source: DemoSourceName | None = Field(None, description="how demonstrations are chosen; default "
                                               "rag.demo_source")
    rerank: bool = Field(True, strict=True, description="the passages' retrieval: " + RERANK_DOC)
    stream: bool = Field(False, strict=True,
                         description="answer as server-sent events: passages, token…, answer (or error)")


class CitationModel(BaseModel):
    number: int = Field(description="the passage's number [n] in the prompt (1-based)")
    hit: HitModel


class SpanModel(BaseModel):
    number: int = Field(description="the cited passage the answer was copied from (1-based)")
    start: int = Field(description="the answer's first character in that passage's text")
    end: int = Field(description="one past its last character")
    provenance: ProvenanceModel = Field(description="KILT provenance of the span (the unit's start character + the "
                                                    "offsets)")


class DemoModel(BaseModel):
    id: str
    input: str
    output: str
    score: float

    @classmethod
    def of(cls, demo: Demo) -> DemoModel:
        return cls(id=demo.id, input=demo.input, output=demo.output, score=demo.score)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, outcome: RagOutcome) -> Usage:
        return cls(prompt_tokens=outcome.prompt_tokens, completion_tokens=outcome.completion_tokens,
                   total_tokens=outcome.prompt_tokens + outcome.completion_tokens)


class RagResponse(BaseModel):
    query: str
    index: str
    retriever: str | None = Field(description="null when no passage was retrieved (passages 0)")
    reranked: bool = Field(description=RAG_RERANKED)
    task: str = Field(description="the answer task used (unknown names: generic)")
    answer: str = Field(description="the parsed answer: citation markers removed; label tasks: the label")
    raw: str = Field(description="the generator's text as written (with its [n] markers)")
    citations: list[CitationModel] = Field(description="passages the answer cites, in order of first mention")
    passages: list[HitModel] = Field(description="the passages in the prompt, numbered from 1 in this order")
    demos: list[DemoModel] = Field(description="the demonstrations in the prompt, most similar last")
    usage: Usage
    truncated: bool = Field(False, description="the answer probably hit the token limit (max_new_tokens)")
    span: SpanModel | None = Field(None, description="short answers found in a passage: where (null otherwise)")
    method: str = Field("free text", description="how the answer was chosen: 'span reader', 'constrained span', "
                        "'label head', 'label scores' or 'free text' (the fallback where the generator can neither "
                        "score nor constrain: e.g. an endpoint without prompt log-probabilities)")
    confidence: float | None = Field(None, description="label answers: the probability the deciding model (label "
                                     "head or label scores) gives the label over the label set; null otherwise")

    @classmethod
    def of(cls, outcome: RagOutcome, spec: RagSpec, reranked: bool) -> RagResponse:
        """The answer of ``spec``; ``reranked``: whether its passages were (``SearchService.rag_reranks``)."""
        a = outcome.answer
        span = None if a.span is None else SpanModel(number=a.span.number, start=a.span.start, end=a.span.end,
                                                     provenance=ProvenanceModel.of(a.span.provenance))
        return cls(query=a.query, index=spec.index, retriever=spec.retriever, reranked=reranked, task=a.task,
                   answer=a.answer, raw=a.raw,
                   citations=[CitationModel(number=c.number, hit=HitModel.of(c.hit)) for c in a.citations],
                   passages=[HitModel.of(h) for h in a.passages], demos=[DemoModel.of(d) for d in a.demos],
                   usage=Usage.of(outcome), truncated=outcome.truncated, span=span, method=a.method,
                   confidence=a.confidence)


# ---- errors (the OpenAI-compatible routes: ``_models_openai``) ----------------------------------------------
class ErrorResponse(BaseModel):
    error: str = Field(description="error class, e.g. ValidationError, NotFoundError, Overloaded")
    detail: str = Field(description="what was wrong, in words")


ERRORS = """Every error of genret's routes is `{"error": class, "detail": words}` (a streamed answer's error: an
`error` event); OpenAI's routes answer in OpenAI's shape (below).

* **422** (`ValidationError`, `RequestError`): the request itself is wrong — not the schema's shape, or outside a
  limit (k 1..max_k, a blank or over-long query, too many queries, a granularity the retriever does not rank by,
  demonstrations without a pool): change the request.
* **400** (`InvalidHost`, `ConfigError`, `GenretError`): the request is well formed but this server cannot serve
  it as configured — a Host header not in server.trusted_hosts, or a retriever or generator setting that does not
  work for it: nothing in the body fixes it.
* 401 API key, 404 unknown index or retriever, 405 method (with `Allow`), 413 body too large, 429 busy and 503 not
  ready (both with `Retry-After`), 502 the generator's upstream endpoint failed (details are in the server's log,
  not the reply), 504 timed out, 500 a bug (logged)."""


def error_responses(*codes: int) -> dict:
    """OpenAPI ``responses`` entries for the error statuses an operation may answer."""
    words = {400: "the server cannot serve this request as configured (see the error contract above)",
             401: "API key missing or invalid", 404: "unknown index or retriever", 413: "request body too large",
             422: "invalid request: its shape, or a limit (see the error contract above)",
             429: "too many requests in flight (Retry-After)",
             502: "the generator's upstream endpoint failed", 503: "not ready or shutting down (Retry-After)",
             504: "request timed out"}
    return {c: {"model": ErrorResponse, "description": words[c]} for c in codes}


# ---- streamed answers (server-sent events): the data of each event ------------------------------------------
class RagPassagesEvent(BaseModel):
    """``event: passages`` — the first event of a streamed /v1/rag answer."""

    index: str
    retriever: str | None
    reranked: bool = Field(description=RAG_RERANKED)
    passages: list[HitModel]
    demos: list[DemoModel]


class RagTokenEvent(BaseModel):
    """``event: token`` — a piece of the answer's text."""

    text: str


class StreamErrorEvent(BaseModel):
    """``event: error`` — the answer failed after the stream began; ``status`` is the status it would have had."""

    error: str
    detail: str
    status: int
