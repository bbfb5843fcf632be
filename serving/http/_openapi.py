"""The OpenAPI document as this server serves it: FastAPI's, from the request and response models, plus what only
the running server knows, so that a request the document allows is one the server takes (the service still
checks every value, and answers 422 in its own words):

* the limits of ``server`` settings: ``k`` 1..``max_k``, queries of at most ``max_query_chars`` characters and
  not blank, at most ``max_batch`` queries in a batch;
* a ``granularity`` only with a retriever that ranks by it (on every served index that offers it) — or with no
  retriever named: the route then picks the index's first that does; ``GET /v1/search`` declares its ``retriever``
  and ``granularity`` as one exploded object parameter (``?retriever=…&granularity=…`` on the wire), so that the
  rule can be written there too;
* demonstrations (``demos`` > 0) only with a demonstrations directory, and for a task that has a pool;
* 400 ``InvalidHost`` on every operation when ``server.trusted_hosts`` is set;
* the OpenAI-compatible operations: the served model ids (``INDEX``, ``INDEX/RETRIEVER``; for embeddings those of
  indexes with a dense component, and their dimension), ``max_tokens`` up to ``server.max_tokens``, OpenAI's
  error object on every error and no 422 (those routes answer 400);
* the events of streamed answers (``text/event-stream``): an ``itemSchema`` per event, as FastAPI writes it for
  its own event streams (``event``, ``data`` holding JSON of the event's model);
* the error contract (``_models.ERRORS``: 400 versus 422, and the rest; ``_models_openai.OPENAI_ERRORS``) in
  the description.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, get_args

from pydantic.json_schema import models_json_schema

from genret.retrieval import available_retrievers, retriever_granularities

from ._errors import openai_route
from ._models import ERRORS, NON_BLANK, Granularity, RagPassagesEvent, RagResponse, RagTokenEvent, StreamErrorEvent
from ._models_openai import OPENAI_ERRORS, ChatCompletionChunk, OpenAIErrorResponse
from ._sse import SSE

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ._service import SearchService
    from ._settings import Settings

_REF = "#/components/schemas/{model}"
_EVENT_MODELS = (RagPassagesEvent, RagTokenEvent, StreamErrorEvent, RagResponse, ChatCompletionChunk,
                 OpenAIErrorResponse)


def install_openapi(app: FastAPI, settings: Settings, service: SearchService) -> None:
    """Serve FastAPI's document with this server's limits, event schemas and error contract added."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = copy.deepcopy(build())  # the models' schema constants stay as they are
            document(spec, settings, service)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi


def document(spec: dict[str, Any], settings: Settings, service: SearchService) -> None:
    """Add to ``spec`` (in place) what the running server knows."""
    spec["info"]["description"] = f"{spec['info'].get('description', '')}\n\n{ERRORS}\n\n{OPENAI_ERRORS}".strip()
    _event_components(spec)
    _limits(spec, settings)
    _openai(spec, service)
    _granularity(spec, service)
    _demos(spec, settings, service)
    _event_streams(spec)
    if settings.server.trusted_hosts:
        for path, ops in spec["paths"].items():
            model = OpenAIErrorResponse.__name__ if openai_route(path) else "ErrorResponse"
            for op in ops.values():
                op["responses"].setdefault("400", {"description": "Host not in server.trusted_hosts (InvalidHost)",
                                                   "content": {"application/json": {"schema": {
                                                       "$ref": _REF.format(model=model)}}}})


def _int_branch(prop: dict) -> dict:
    return next((b for b in prop.get("anyOf", [prop]) if b.get("type") == "integer"), prop)


def _limits(spec: dict[str, Any], settings: Settings) -> None:
    cfg = settings.server
    schemas = spec["components"]["schemas"]
    for name in ("SearchRequest", "BatchSearchRequest"):
        _int_branch(schemas[name]["properties"]["k"]).update(minimum=1, maximum=cfg.max_k)
    for prop in (schemas["SearchRequest"]["properties"]["query"], schemas["RagRequest"]["properties"]["query"],
                 schemas["BatchSearchRequest"]["properties"]["queries"]["items"]):
        prop["maxLength"] = cfg.max_query_chars
    schemas["BatchSearchRequest"]["properties"]["queries"]["maxItems"] = cfg.max_batch
    user_text = schemas["ChatMessage"]["then"]["properties"]["content"]["anyOf"]
    user_text[0]["maxLength"] = cfg.max_query_chars
    user_text[1]["contains"]["properties"]["text"]["maxLength"] = cfg.max_query_chars
    user_text[1]["items"] = {"properties": {"text": {"maxLength": cfg.max_query_chars}}}
    for param in spec["paths"]["/v1/search"]["get"]["parameters"]:
        if param["name"] == "q":
            param["schema"].update(maxLength=cfg.max_query_chars, pattern=NON_BLANK)
        elif param["name"] == "k":
            _int_branch(param["schema"]).update(minimum=1, maximum=cfg.max_k)
    for name in ("max_tokens", "max_completion_tokens"):
        _int_branch(schemas["ChatRequest"]["properties"][name]).update(maximum=cfg.max_tokens)
    one, many = schemas["EmbeddingRequest"]["properties"]["input"]["anyOf"]
    for text in (one, many["items"]):
        text["maxLength"] = cfg.max_query_chars
    many["maxItems"] = cfg.max_batch


def _openai(spec: dict[str, Any], service: SearchService) -> None:
    """The served model ids (embeddings: of the indexes with a dense component, with their dimension), and no 422
    on the OpenAI-compatible routes (they answer 400)."""
    schemas = spec["components"]["schemas"]
    models = service.models()
    _string_enum(schemas["ChatRequest"]["properties"]["model"], [m for m, _, _ in models])
    for param in spec["paths"]["/v1/models/{model}"]["get"]["parameters"]:
        if param["name"] == "model":
            param["schema"]["enum"] = [m for m, _, _ in models]
    embeds = {m: index for m, index, retriever in models
              if service.indexes[index].has("dense") and (m == index or retriever == "dense")}
    request = schemas["EmbeddingRequest"]
    _string_enum(request["properties"]["model"], list(embeds))
    if service.default_index not in embeds.values():  # no model: the default index, which has no embeddings
        request["required"] = [*request.get("required", []), "model"]
        request["properties"]["model"] = _string_branch(request["properties"]["model"])
    dims = [({"const": m}, service.embedding_dim(index)) for m, index in embeds.items()]
    if service.default_index in embeds.values():
        dims.append(({"type": "null"}, service.embedding_dim(service.default_index)))
    request.setdefault("allOf", []).extend(
        {"if": {"required": ["dimensions"], "properties": {"model": model, "dimensions": {"type": "integer"}}},
         "then": {"properties": {"dimensions": {"const": dim}}}} for model, dim in dims)
    for path, ops in spec["paths"].items():
        if openai_route(path):
            for op in ops.values():
                op["responses"].pop("422", None)


def _string_branch(prop: dict) -> dict:
    return next((b for b in prop.get("anyOf", [prop]) if b.get("type") == "string"), prop)


def _string_enum(prop: dict, values: list[str]) -> None:
    """Only ``values`` for the property's string (none: the string branch matches nothing)."""
    branch = _string_branch(prop)
    if values:
        branch["enum"] = values
    else:
        branch.clear()
        branch["not"] = {}


def granularity_retrievers(service: SearchService) -> dict[str, list[str]]:
    """``{granularity: retrievers ranking by it on every served index that offers them}``."""
    cfg = service.settings.retrieval
    offered: dict[str, list[tuple[str, ...]]] = {}
    for index in service.indexes.values():
        for name in available_retrievers(index, cfg):
            offered.setdefault(name, []).append(retriever_granularities(index, name, cfg))
    return {g: sorted(name for name, takes in offered.items() if all(g in t for t in takes))
            for g in get_args(Granularity)}


def _granularity(spec: dict[str, Any], service: SearchService) -> None:
    takes = granularity_retrievers(service)
    usable = [g for g, names in takes.items() if names]
    schemas = spec["components"]["schemas"]
    rules = [{"if": {"required": ["granularity", "retriever"],
                     "properties": {"granularity": {"const": g}, "retriever": {"type": "string"}}},
              "then": {"properties": {"retriever": {"enum": names}}}} for g, names in takes.items() if names]
    for name in ("SearchRequest", "BatchSearchRequest"):
        schemas[name].setdefault("allOf", []).extend(rules)
        _restrict_enum(schemas[name]["properties"]["granularity"], usable)
    _get_search_choice(spec["paths"]["/v1/search"]["get"], rules, usable)


def _get_search_choice(op: dict[str, Any], rules: list[dict], usable: list[str]) -> None:
    """``GET /v1/search``'s ``retriever`` and ``granularity`` as one object parameter (form style, exploded: each
    property its own query parameter, as before) that carries the granularity ``rules``: independent parameters
    cannot say that bm25 ranks no sentences."""
    picked = {p["name"]: p for p in op["parameters"] if p["name"] in ("retriever", "granularity")}
    properties = {}
    for name, param in picked.items():
        branch = next(b for b in param["schema"].get("anyOf", [param["schema"]]) if b.get("type") != "null")
        properties[name] = {**branch, "description": param.get("description", name)}
    _restrict_enum(properties["granularity"], usable)
    properties["retriever"]["description"] = "as POST /v1/search's retriever"
    properties["granularity"]["description"] = "as POST /v1/search's granularity"
    op["parameters"] = [p for p in op["parameters"] if p["name"] not in picked]
    op["parameters"].append({
        "name": "retriever_granularity", "in": "query", "style": "form", "explode": True, "required": False,
        "description": "retriever and granularity, each its own query parameter (?retriever=…&granularity=…); a "
                       "granularity only with a retriever that ranks by it, or with none named",
        "schema": {"type": "object", "properties": properties, "additionalProperties": False, "allOf": rules}})


def _restrict_enum(prop: dict, values: list[str]) -> None:
    """Keep only ``values`` in the property's enum (none left: the branch matches nothing)."""
    for branch in prop.get("anyOf", [prop]):
        if "enum" in branch:
            kept = [v for v in branch["enum"] if v in values]
            if not kept:
                branch.clear()
                branch["not"] = {}
            else:
                branch["enum"] = kept


def _demos(spec: dict[str, Any], settings: Settings, service: SearchService) -> None:
    rag = spec["components"]["schemas"]["RagRequest"]
    demos = _int_branch(rag["properties"]["demos"])
    if settings.demos is None or not service.demo_tasks:
        demos["maximum"] = 0
        rag["properties"]["demos"]["description"] += " (this server has no demonstrations directory: 0)"
        return
    rag.setdefault("allOf", []).append({
        "if": {"required": ["demos"], "properties": {"demos": {"type": "integer", "minimum": 1}}},
        "then": {"required": ["task"], "properties": {"task": {"enum": list(service.demo_tasks)}}}})


def _event_components(spec: dict[str, Any]) -> None:
    _, defs = models_json_schema([(m, "serialization") for m in _EVENT_MODELS], ref_template=_REF)
    schemas = spec["components"]["schemas"]
    for name, schema in defs.get("$defs", {}).items():
        schemas.setdefault(name, schema)


def _json_data(model: type) -> dict[str, Any]:
    return {"type": "string", "contentMediaType": "application/json",
            "contentSchema": {"$ref": _REF.format(model=model.__name__)}}


def _event(name: str, model: type) -> dict[str, Any]:
    return {"type": "object", "required": ["event", "data"],
            "properties": {"event": {"const": name}, "data": _json_data(model)}}


_RAG_EVENTS = {"description": "passages, then a token per piece of text, then answer — or error (the stream's last "
                              "event when the answer fails after it began)",
               "oneOf": [_event("passages", RagPassagesEvent), _event("token", RagTokenEvent),
                         _event("answer", RagResponse), _event("error", StreamErrorEvent)]}
_CHAT_EVENTS = {"description": "OpenAI's chat.completion.chunk events (no event names), then data: [DONE]; a failure "
                               "after the stream began: OpenAI's error object as the last event",
                "type": "object", "required": ["data"],
                "properties": {"data": {"oneOf": [
                    {**_json_data(ChatCompletionChunk), "contentSchema": {"oneOf": [
                        {"$ref": _REF.format(model=ChatCompletionChunk.__name__)},
                        {"$ref": _REF.format(model=OpenAIErrorResponse.__name__)}]}},
                    {"const": "[DONE]"}]}}}


def _event_streams(spec: dict[str, Any]) -> None:
    for path, items in (("/v1/rag", _RAG_EVENTS), ("/v1/chat/completions", _CHAT_EVENTS)):
        content = spec["paths"][path]["post"]["responses"]["200"]["content"]
        content[SSE] = {"itemSchema": items}
