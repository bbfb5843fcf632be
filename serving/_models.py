"""HTTP request and response models (pydantic): what the OpenAPI spec at ``/docs`` shows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from genret.retrieval import Demo, Hit, RagConfig

if TYPE_CHECKING:
    from ._service import RagOutcome, RagSpec

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
    tasks: list[str] = Field(description="task names with their own prompt (retrieval prompts, RAG answer tasks)")
    demo_tasks: list[str] = Field(description="tasks with a demonstration pool (RAG demos)")


class Status(BaseModel):
    status: str


# ---- RAG ---------------------------------------------------------------------------------------------------
MAX_PASSAGES = RagConfig.model_fields["passages"].metadata[-1].le
MAX_DEMOS = RagConfig.model_fields["demos"].metadata[-1].le
DemoSourceName = Literal["udr", "bm25", "random"]


class RagRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"query": "who proclaimed the oil embargo", "task": "qa", "passages": 3},
        {"query": "The oil crisis began in 1973.", "task": "fact_check", "retriever": "bm25", "stream": True}]})
    query: str = Field(min_length=1, description="the question or claim; at most max_query_chars characters")
    index: str | None = Field(None, description=_INDEX)
    retriever: str | None = Field(None, description=_RETRIEVER, examples=["dense", "bm25", "hybrid"])
    task: str | None = Field(None, description="answer task (qa, squad: short answer; fact_check, scifact, "
                             "climate_fever: SUPPORTS / REFUTES; generic: free text — the fallback for unknown "
                             "names); also the generative retriever's task prompt and the demonstrations' pool",
                             examples=["qa", "fact_check", "generic"])
    passages: int | None = Field(None, ge=0, le=MAX_PASSAGES,
                                 description="retrieved passages in the prompt (0: no retrieval); default rag.passages")
    demos: int | None = Field(None, ge=0, le=MAX_DEMOS,
                              description="demonstrations in the prompt; needs the server's demos directory and a "
                                          "pool for the task; default rag.demos when the task has a pool, else 0")
    demo_source: DemoSourceName | None = Field(None, description="how demonstrations are chosen; default "
                                               "rag.demo_source")
    stream: bool = Field(False, description="answer as server-sent events: passages, token…, answer (or error)")


class CitationModel(BaseModel):
    number: int = Field(description="the passage's number [n] in the prompt (1-based)")
    hit: HitModel


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
    task: str = Field(description="the answer task used (unknown names: generic)")
    answer: str = Field(description="the parsed answer: citation markers removed; label tasks: the label")
    raw: str = Field(description="the generator's text as written (with its [n] markers)")
    citations: list[CitationModel] = Field(description="passages the answer cites, in order of first mention")
    passages: list[HitModel] = Field(description="the passages in the prompt, numbered from 1 in this order")
    demos: list[DemoModel] = Field(description="the demonstrations in the prompt, most similar last")
    usage: Usage

    @classmethod
    def of(cls, outcome: RagOutcome, spec: RagSpec) -> RagResponse:
        a = outcome.answer
        return cls(query=a.query, index=spec.index, retriever=spec.retriever, task=a.task, answer=a.answer,
                   raw=a.raw, citations=[CitationModel(number=c.number, hit=HitModel.of(c.hit)) for c in a.citations],
                   passages=[HitModel.of(h) for h in a.passages], demos=[DemoModel.of(d) for d in a.demos],
                   usage=Usage.of(outcome))


# ---- OpenAI-compatible chat completions ---------------------------------------------------------------------
class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "\n".join(p.text for p in self.content if p.type == "text" and p.text)
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class GenretChatOptions(BaseModel):
    """genret's extension of the chat request (OpenAI clients pass it as an extra body field)."""

    model_config = ConfigDict(extra="forbid")
    index: str | None = Field(None, description="overrides the index named by `model`")
    retriever: str | None = Field(None, description=_RETRIEVER)
    task: str | None = Field(None, description="answer task (default generic: free text)")
    passages: int | None = Field(None, ge=0, le=MAX_PASSAGES, description="default rag.passages")


Stop = Annotated[str, Field(max_length=256)]


class ChatRequest(BaseModel):
    """OpenAI's chat completion request.  Fields genret does not use (``user``, ``top_p``, ``seed``, …) are
    accepted and ignored; the declared ones are type-checked."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [
        {"model": "my-index", "messages": [{"role": "user", "content": "who proclaimed the oil embargo?"}],
         "max_tokens": 32},
        {"model": "my-index", "stream": True, "genret": {"task": "qa", "passages": 2},
         "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "oil embargo?"}]}]})
    model: str | None = Field(None, description="an index name (from GET /v1/indexes); any other name: the "
                              "default index")
    messages: list[ChatMessage] = Field(min_length=1, description="the last user message is the question")
    max_tokens: int | None = Field(None, ge=1, description="capped at the server's generator.max_new_tokens")
    max_completion_tokens: int | None = Field(None, ge=1, description="as max_tokens (newer clients)")
    temperature: float | None = Field(None, ge=0, le=2, description="accepted; the server's generator decides")
    top_p: float | None = Field(None, ge=0, le=1, description="accepted and ignored")
    n: int | None = Field(None, ge=1, le=1, description="one choice only")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Stop | Annotated[list[Stop], Field(max_length=4)] | None = Field(None, description="up to 4 stop strings")
    user: str | None = None
    genret: GenretChatOptions | None = Field(None, description="genret extension: index, retriever, task, "
                                             "passages")

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class ChatChoiceMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatChoiceMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str = Field(description="the index answered from")
    choices: list[ChatChoice]
    usage: Usage
    genret: dict[str, Any] = Field(description="genret extension: index, retriever, task, answer (parsed), "
                                   "citations and passages")


class ErrorResponse(BaseModel):
    error: str = Field(description="error class, e.g. ValidationError, NotFoundError, Overloaded")
    detail: str = Field(description="what was wrong, in words")


def error_responses(*codes: int) -> dict:
    """OpenAPI ``responses`` entries for the error statuses an operation may answer."""
    words = {401: "API key missing or invalid", 404: "unknown index or retriever", 413: "request body too large",
             422: "invalid request", 429: "too many requests in flight (Retry-After)",
             502: "the generator's upstream endpoint failed", 503: "not ready or shutting down (Retry-After)",
             504: "request timed out"}
    return {c: {"model": ErrorResponse, "description": words[c]} for c in codes}
