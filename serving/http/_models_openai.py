"""The OpenAI-compatible routes' models (pydantic): ``/v1/chat/completions``, ``/v1/models``, ``/v1/embeddings``
and OpenAI's error object.

A model id is ``INDEX`` (the index's default retriever) or ``INDEX/RETRIEVER``.  Chat parameters genret cannot
honour (``tools``, ``logprobs``, ``n`` > 1, …) are declared with the only values it takes (``UNSUPPORTED``): the
served document allows those, and the route answers anything else with 400 ``unsupported_parameter``.  Limits
that come from the settings and the served model ids are written into the served document by ``_openapi``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from ._models import MAX_PASSAGES, NON_BLANK, RAG_RERANKED, RERANK_DOC, JsonRequest, Usage

_NON_BLANK = {"pattern": NON_BLANK}
MODEL_DOC = ("a model id from GET /v1/models: INDEX (its default retriever) or INDEX/RETRIEVER; another name is "
             "404 model_not_found; omitted: the first served index")


# ---- errors -------------------------------------------------------------------------------------------------
OPENAI_ERRORS = """The OpenAI-compatible routes (`/v1/chat/completions`, `/v1/models`, `/v1/embeddings`) answer
the same errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, and with 400 where the other
routes say 422 (OpenAI has no 422): `type` is `invalid_request_error`, `authentication_error`, `rate_limit_error`
or `server_error`; `code` is OpenAI's own where it has one (`model_not_found`, `unsupported_parameter`,
`invalid_api_key`, `rate_limit_exceeded`), else the error class; `param` names the field at fault when one does.
An unknown `model` is 404 `model_not_found`; a parameter genret cannot honour (`tools`, `logprobs`, `n` > 1,
`response_format` other than text, content parts other than text, `dimensions` other than the encoder's, …) is
400 `unsupported_parameter`."""


class OpenAIErrorBody(BaseModel):
    message: str = Field(description="what was wrong, in words")
    type: str = Field(description="invalid_request_error, authentication_error, rate_limit_error or server_error")
    param: str | None = Field(description="the request field at fault, when one is")
    code: str | None = Field(description="OpenAI's code where it has one (model_not_found, unsupported_parameter, "
                             "invalid_api_key, rate_limit_exceeded), else genret's error class")


class OpenAIErrorResponse(BaseModel):
    """OpenAI's error object: the body of every error of the OpenAI-compatible routes (and a stream's last event
    when the answer fails after the stream began)."""

    error: OpenAIErrorBody


def openai_error_responses(*codes: int) -> dict:
    """OpenAPI ``responses`` entries for the error statuses an OpenAI-compatible operation may answer."""
    words = {400: "invalid request (OpenAI's routes have no 422: a request outside the schema or a limit is 400 "
                  "too), an unsupported parameter, or one this server cannot serve as configured",
             401: "API key missing or invalid", 404: "unknown model (model_not_found), index or retriever",
             413: "request body too large", 429: "too many requests in flight (Retry-After)",
             502: "the generator's upstream endpoint failed", 503: "not ready or shutting down (Retry-After)",
             504: "request timed out"}
    return {c: {"model": OpenAIErrorResponse, "description": words[c]} for c in codes}


# ---- models -------------------------------------------------------------------------------------------------
class ModelInfo(BaseModel):
    index: str
    retriever: str = Field(description="the retriever that finds the passages of chat answers")
    embeddings: bool = Field(description="whether POST /v1/embeddings takes this id (the index's dense encoder)")


class ModelCard(BaseModel):
    id: str = Field(description="INDEX (its default retriever) or INDEX/RETRIEVER")
    object: Literal["model"] = "model"
    created: int = Field(description="when the index was built (Unix seconds)")
    owned_by: str = "genret"
    genret: ModelInfo


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# ---- chat completions ---------------------------------------------------------------------------------------
class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str = Field(json_schema_extra={"const": "text"}, description="text only (other parts: 400)")
    text: str | None = None


_TEXT_PART = {"type": "object", "required": ["type", "text"],
              "properties": {"type": {"const": "text"}, "text": {"type": "string", **_NON_BLANK}}}
_USER_MESSAGE = {"type": "object", "required": ["role"], "properties": {"role": {"const": "user"}}}
# the spec's rule (the service needs only the last user message to have text)
_USER_HAS_TEXT = {"if": _USER_MESSAGE, "then": {"required": ["content"], "properties": {"content": {"anyOf": [
    {"type": "string", **_NON_BLANK}, {"type": "array", "contains": _TEXT_PART}]}}}}


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", json_schema_extra=_USER_HAS_TEXT)
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "\n".join(p.text for p in self.content if p.type == "text" and p.text)
        return self.content or ""

    def other_part(self) -> str | None:
        """The type of a content part that is not text, if any."""
        if isinstance(self.content, list):
            return next((p.type for p in self.content if p.type != "text"), None)
        return None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = Field(False, strict=True)  # JSON's: 0 is not false


class GenretChatOptions(JsonRequest):
    """genret's extension of the chat request (OpenAI clients pass it as an extra body field)."""

    model_config = ConfigDict(extra="forbid")
    index: str | None = Field(None, description="overrides the index named by `model`")
    retriever: str | None = Field(None, description="overrides the retriever named by `model`: dense, bm25, "
                                  "generative or hybrid — whichever the index offers")
    task: str | None = Field(None, description="answer task (default generic: free text)")
    passages: int | None = Field(None, ge=0, le=MAX_PASSAGES, strict=True, description="default rag.passages")
    rerank: bool = Field(True, strict=True, description="the passages' retrieval: " + RERANK_DOC)


Stop = Annotated[str, Field(max_length=256, json_schema_extra={"minLength": 1})]  # the service refuses ""


def _null_or(schema: dict, words: str) -> Any:
    """A parameter genret cannot honour: any JSON is parsed; the document allows null or ``schema`` only."""
    return Annotated[Any, WithJsonSchema({"anyOf": [schema, {"type": "null"}],
                                          "description": f"not supported ({words}): null or the value shown only; "
                                                         "else 400 unsupported_parameter"})]


_NULL = {"type": "null"}
_FUNCTIONS = _null_or({"type": "array", "maxItems": 0}, "function calling")
_FUNCTION_CHOICE = _null_or({"enum": ["none", "auto"]}, "function calling")
_FORMAT = _null_or({"type": "object", "required": ["type"], "additionalProperties": False,
                    "properties": {"type": {"const": "text"}}}, "structured output")
_LOGPROBS = _null_or({"type": "boolean", "const": False}, "log probabilities")
_TOP_LOGPROBS = _null_or({"type": "integer", "const": 0}, "log probabilities")
_BIAS = _null_or({"type": "object", "maxProperties": 0}, "token biases")
_AUDIO = _null_or(_NULL, "audio output")
_MODALITIES = _null_or({"type": "array", "items": {"const": "text"}, "minItems": 1, "maxItems": 1},
                       "output modalities other than text")
_PREDICTION = _null_or(_NULL, "predicted outputs")
_WEB_SEARCH = _null_or(_NULL, "web search")
# name -> (whether a value is one genret takes, what the parameter asks for)
UNSUPPORTED: dict[str, tuple[Callable[[Any], bool], str]] = {
    "tools": (lambda v: v is None or v == [], "function calling"),
    "functions": (lambda v: v is None or v == [], "function calling"),
    "tool_choice": (lambda v: v in (None, "none", "auto"), "function calling"),
    "function_call": (lambda v: v in (None, "none", "auto"), "function calling"),
    "response_format": (lambda v: v is None or v == {"type": "text"}, "structured output"),
    "logprobs": (lambda v: v is None or v is False, "log probabilities"),  # JSON's types: 0 is not false
    "top_logprobs": (lambda v: v is None or (type(v) in (int, float) and v == 0), "log probabilities"),
    "logit_bias": (lambda v: v is None or v == {}, "token biases"),
    "audio": (lambda v: v is None, "audio output"),
    "modalities": (lambda v: v is None or v == ["text"], "output modalities other than text"),
    "prediction": (lambda v: v is None, "predicted outputs"),
    "web_search_options": (lambda v: v is None, "web search"),
}


class ChatRequest(JsonRequest):
    """OpenAI's chat completion request.  Sampling hints genret's generator decides (``temperature``,
    ``top_p``, ``seed``, penalties, ``user``, …) are accepted and ignored; parameters it cannot honour
    (``UNSUPPORTED``, ``n`` > 1, content parts other than text) are a 400."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [
        {"model": "my-index", "messages": [{"role": "user", "content": "who proclaimed the oil embargo?"}],
         "max_tokens": 32},
        {"model": "my-index/bm25", "stream": True, "genret": {"task": "qa", "passages": 2},
         "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "oil embargo?"}]}]})
    model: str | None = Field(None, description=MODEL_DOC)
    messages: list[ChatMessage] = Field(min_length=1, description="the last user message is the question (it must "
                                        "have text; the passages are retrieved for it); system messages and the "
                                        "earlier turns go into the prompt as far as the token budget allows",
                                        json_schema_extra={"contains": _USER_MESSAGE})
    max_tokens: int | None = Field(None, ge=1, strict=True, description="at most server.max_tokens (above: 400); "
                                   "default generator.max_new_tokens")
    max_completion_tokens: int | None = Field(None, ge=1, strict=True, description="as max_tokens (newer clients)")
    temperature: float | None = Field(None, ge=0, le=2, strict=True,
                                      description="accepted; the server's generator decides")
    top_p: float | None = Field(None, ge=0, le=1, strict=True, description="accepted and ignored")
    n: int | None = Field(None, ge=1, strict=True, json_schema_extra={"maximum": 1},
                          description="one choice only (n > 1: 400 unsupported_parameter)")
    stream: bool = Field(False, strict=True)
    stream_options: StreamOptions | None = None
    stop: Stop | Annotated[list[Stop], Field(max_length=4)] | None = Field(None, description="up to 4 stop strings")
    user: str | None = None
    genret: GenretChatOptions | None = Field(None, description="genret extension: index, retriever, task, "
                                             "passages, rerank")
    tools: _FUNCTIONS = None
    functions: _FUNCTIONS = None
    tool_choice: _FUNCTION_CHOICE = None
    function_call: _FUNCTION_CHOICE = None
    response_format: _FORMAT = None
    logprobs: _LOGPROBS = None
    top_logprobs: _TOP_LOGPROBS = None
    logit_bias: _BIAS = None
    audio: _AUDIO = None
    modalities: _MODALITIES = None
    prediction: _PREDICTION = None
    web_search_options: _WEB_SEARCH = None

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def unsupported(self) -> tuple[str, str] | None:
        """``(parameter, what it is)`` of the first parameter genret cannot honour, if any."""
        if self.n is not None and self.n > 1:
            return "n", "more than one choice"
        return next(((name, what) for name, (ok, what) in UNSUPPORTED.items() if not ok(getattr(self, name))), None)


class ChatChoiceMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str = Field(description="the answer as a person reads it, with its citations [n] (the n-th of "
                         "genret.passages): a short answer or label followed by the passages it cites; a free answer "
                         "cut to whole sentences (a visible … where none ended), its markers where the model put "
                         "them; the generator's text as written is genret.raw")


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatChoiceMessage
    finish_reason: Literal["stop", "length"] = Field(description="length: the generator stopped at max_tokens (its "
                                                     "text was cut short); stop: it ended by itself or at a stop "
                                                     "string")
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str = Field(description="the model id asked for (omitted: the index answered from)")
    choices: list[ChatChoice]
    usage: Usage
    genret: dict[str, Any] = Field(description=f"genret extension: index, retriever, reranked ({RAG_RERANKED}), "
                                   "task, answer (parsed, without citation markers), raw (the generator's text as "
                                   "written), citations and passages")


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    finish_reason: Literal["stop", "length"] | None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    """OpenAI's ``chat.completion.chunk``: the role, the content pieces, the finish (with the ``genret``
    extension), and with ``stream_options.include_usage`` a last chunk with no choices and the usage."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    genret: dict[str, Any] | None = None


# ---- embeddings ---------------------------------------------------------------------------------------------
_TEXT = {"type": "string", "minLength": 1, **_NON_BLANK}
_INPUT = {"anyOf": [_TEXT, {"type": "array", "minItems": 1, "items": _TEXT}],
          "description": "a text or a list of texts (1..max_batch, each at most max_query_chars characters, not "
                         "blank); token ids: 400 unsupported_parameter"}


class EmbeddingRequest(JsonRequest):
    """OpenAI's embeddings request, answered with the index's dense encoder (the model that embedded its
    units: cosine similarity, L2-normalised vectors)."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [
        {"model": "my-index", "input": "who proclaimed the oil embargo"},
        {"model": "my-index/dense", "input": ["oil embargo", "Guido van Rossum"], "encoding_format": "base64"}]})
    model: str | None = Field(None, description="INDEX or INDEX/dense of an index with a dense component "
                              "(GET /v1/models: genret.embeddings); another: 404; omitted: the first served index")
    input: Annotated[str | list[str] | list[int] | list[list[int]], WithJsonSchema(_INPUT)]
    encoding_format: Literal["float", "base64"] | None = Field(None, description="float (default): a list of "
                                                               "numbers; base64: little-endian float32 bytes")
    dimensions: int | None = Field(None, ge=1, strict=True, description="the encoder's dimension only (no "
                                   "shortening: else 400 unsupported_parameter)")
    user: str | None = None


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int = Field(description="the input's position")
    embedding: list[float] | str = Field(description="the vector, or its base64 float32 bytes")


class EmbeddingUsage(BaseModel):
    prompt_tokens: int = Field(description="tokens of the inputs (the encoder's tokenizer)")
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
