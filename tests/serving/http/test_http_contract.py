"""The HTTP contract: JSON numbers are numbers, the served OpenAPI document carries the server's limits, the event
schemas of streamed answers and the error contract (400 versus 422; OpenAI's error object on the OpenAI-compatible
routes), a 405 names every method of its path, HEAD probes answer, and a trusted-hosts setting refuses other Host
headers in the error shape."""

import json

import jsonschema
import pytest
from fastapi.testclient import TestClient

from tests.serving.helpers import ScriptedGenerator, app_over, generator_swapped


@pytest.fixture(scope="module")
def client(service):
    with app_over(service) as app, TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def spec(client):
    return client.get("/openapi.json").json()


def _validator(spec: dict, ref: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({"$ref": ref, "components": spec["components"]})


@pytest.mark.parametrize("path, body, field", [
    ("/v1/search", {"query": "oil", "k": True}, "k"),
    ("/v1/search", {"query": "oil", "k": "3"}, "k"),
    ("/v1/search", {"query": "oil", "k": 2.5}, "k"),
    ("/v1/search/batch", {"queries": ["oil"], "k": False}, "k"),
    ("/v1/rag", {"query": "oil", "passages": True}, "passages"),
    ("/v1/rag", {"query": "oil", "stream": "yes"}, "stream"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "oil"}], "max_tokens": True}, "max_tokens"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "oil"}], "temperature": True},
     "temperature"),
    ("/v1/embeddings", {"input": "oil", "dimensions": True}, "dimensions"),
])
def test_json_numbers_and_flags_are_not_coerced(client, path, body, field):
    r = client.post(path, json=body)
    if path in ("/v1/chat/completions", "/v1/embeddings"):  # OpenAI's routes: 400 and OpenAI's error object
        assert r.status_code == 400 and r.json()["error"]["code"] == "ValidationError", r.text
        assert r.json()["error"]["param"] == field and f"body.{field}" in r.json()["error"]["message"]
        return
    assert r.status_code == 422 and r.json()["error"] == "ValidationError", r.text
    assert f"body.{field}" in r.json()["detail"]


def test_a_whole_float_is_an_integer_as_in_json_schema(client):
    r = client.post("/v1/search", json={"query": "oil embargo", "k": 2.0, "retriever": "bm25"})
    assert r.status_code == 200 and len(r.json()["hits"]) == 2


def test_the_served_document_carries_the_limits_of_the_settings(service):
    with app_over(service, max_k=7, max_query_chars=50, max_batch=3) as app, TestClient(app) as c:
        spec = c.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for name in ("SearchRequest", "BatchSearchRequest"):
        (k,) = [b for b in schemas[name]["properties"]["k"]["anyOf"] if b.get("type") == "integer"]
        assert (k["minimum"], k["maximum"]) == (1, 7)
    for query in (schemas["SearchRequest"]["properties"]["query"], schemas["RagRequest"]["properties"]["query"],
                  schemas["BatchSearchRequest"]["properties"]["queries"]["items"]):
        assert query["maxLength"] == 50 and query["minLength"] == 1 and "pattern" in query
    assert schemas["BatchSearchRequest"]["properties"]["queries"]["maxItems"] == 3
    params = {p["name"]: p["schema"] for p in spec["paths"]["/v1/search"]["get"]["parameters"]}
    assert params["q"]["maxLength"] == 50 and params["q"]["minLength"] == 1
    assert [b for b in params["k"]["anyOf"] if b.get("type") == "integer"] == [
        {"type": "integer", "minimum": 1, "maximum": 7}]
    # no demonstrations directory: demos 0 only
    (demos,) = [b for b in schemas["RagRequest"]["properties"]["demos"]["anyOf"] if b.get("type") == "integer"]
    assert demos["maximum"] == 0


@pytest.mark.parametrize("query, ok", [("oil", True), (" x ", True), ("", False), ("   ", False), ("\t\n", False),
                                       ("\u3000\u2028", False), ("\x1c", False), ("x" * 2000, True),
                                       ("x" * 2001, False)])
def test_the_query_schema_is_what_the_service_takes(client, spec, query, ok):
    valid = _validator(spec, "#/components/schemas/SearchRequest").is_valid({"query": query})
    assert valid == ok
    r = client.post("/v1/search", json={"query": query, "retriever": "bm25"})
    assert (r.status_code == 200) == ok, r.text


def test_a_granularity_names_the_retrievers_that_rank_by_it(client, spec):
    schema = _validator(spec, "#/components/schemas/SearchRequest")
    assert schema.is_valid({"query": "x", "granularity": "page"})
    assert schema.is_valid({"query": "x", "granularity": "page", "retriever": "generative"})
    assert not schema.is_valid({"query": "x", "granularity": "page", "retriever": "dense"})
    # no retriever named: the index's first that ranks by the granularity
    r = client.post("/v1/search", json={"query": "Who created Python?", "granularity": "page", "k": 2})
    assert r.status_code == 200 and r.json()["retriever"] == "generative", r.text
    r = client.get("/v1/search", params={"q": "Who created Python?", "granularity": "page", "k": 2})
    assert r.status_code == 200 and r.json()["retriever"] == "generative", r.text


def test_chat_messages_need_a_user_message_with_text(spec):
    schema = _validator(spec, "#/components/schemas/ChatRequest")
    assert schema.is_valid({"messages": [{"role": "user", "content": "hi"}]})
    assert schema.is_valid({"messages": [{"role": "system", "content": ""},
                                         {"role": "user", "content": [{"type": "text", "text": "hi"}]}]})
    assert not schema.is_valid({"messages": [{"role": "system", "content": "hi"}]})
    assert not schema.is_valid({"messages": [{"role": "user", "content": "  "}]})
    assert not schema.is_valid({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})
    assert not schema.is_valid({"messages": [{"role": "user", "content": "hi"}], "stop": [""]})


def test_the_error_contract_is_documented(spec):
    description = spec["info"]["description"]
    assert "**422**" in description and "**400**" in description and "OpenAI's shape" in description
    for path, method in (("/v1/search", "post"), ("/v1/search", "get"), ("/v1/search/batch", "post"),
                         ("/v1/rag", "post")):
        responses = spec["paths"][path][method]["responses"]
        assert {"400", "422"} <= set(responses)
        assert responses["400"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorResponse"}
    for path, method in (("/v1/chat/completions", "post"), ("/v1/embeddings", "post"), ("/v1/models", "get"),
                         ("/v1/models/{model}", "get")):
        responses = spec["paths"][path][method]["responses"]
        assert "422" not in responses and "401" in responses  # OpenAI's routes answer 400 for a bad request
        for status, response in responses.items():
            if status != "200":
                assert response["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/OpenAIErrorResponse"}, (path, status)
    error = _validator(spec, "#/components/schemas/OpenAIErrorResponse")
    assert error.is_valid({"error": {"message": "m", "type": "invalid_request_error", "param": None, "code": "c"}})
    assert not error.is_valid({"error": "ValidationError", "detail": "m"})


def test_the_document_names_the_served_models_and_the_token_cap(service, tiny_index):
    name = tiny_index.name
    with app_over(service, max_tokens=77) as app, TestClient(app) as c:
        spec = c.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    ids = [name] + [f"{name}/{r}" for r in service.describe()[0]["retrievers"]]
    chat = _validator(spec, "#/components/schemas/ChatRequest")
    user = [{"role": "user", "content": "oil"}]
    assert all(chat.is_valid({"model": m, "messages": user}) for m in ids) and chat.is_valid({"messages": user})
    assert not chat.is_valid({"model": "gpt-4o", "messages": user})
    assert chat.is_valid({"messages": user, "max_tokens": 77}) and not chat.is_valid({"messages": user,
                                                                                       "max_tokens": 78})
    assert chat.is_valid({"messages": user, "tools": [], "logprobs": False, "response_format": {"type": "text"}})
    for extra in ({"tools": [{"type": "function"}]}, {"logprobs": True}, {"n": 2},
                  {"response_format": {"type": "json_object"}}, {"audio": {}}):
        assert not chat.is_valid({"messages": user, **extra}), extra
    (param,) = spec["paths"]["/v1/models/{model}"]["get"]["parameters"]
    assert param["schema"]["enum"] == ids
    embed = _validator(spec, "#/components/schemas/EmbeddingRequest")
    assert embed.is_valid({"model": name, "input": ["a", "b"]}) and embed.is_valid({"model": f"{name}/dense",
                                                                                    "input": "a"})
    assert not embed.is_valid({"model": f"{name}/bm25", "input": "a"})
    assert embed.is_valid({"input": "a", "dimensions": 384}) and not embed.is_valid({"input": "a", "dimensions": 8})
    assert not embed.is_valid({"input": []}) and not embed.is_valid({"input": [" "]})
    assert schemas["EmbeddingRequest"]["properties"]["input"]["anyOf"][1]["maxItems"] == 64


def test_errors_written_below_the_app_are_openai_shaped_on_openais_routes(service):
    with app_over(service, max_body_bytes=1024, trusted_hosts=["genret.test"]) as app:
        c = TestClient(app, base_url="http://genret.test")
        big = {"messages": [{"role": "user", "content": "x" * 2000}]}
        for path in ("/v1/chat/completions", "/v1/embeddings"):
            r = c.post(path, json=big)
            assert r.status_code == 413 and r.json()["error"]["code"] == "PayloadTooLarge", r.text
            assert int(r.headers["content-length"]) == len(r.content)
        r = c.get("/v1/models", headers={"host": "evil.test"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidHost", r.text
        assert r.json()["error"]["message"] == "Host 'evil.test' is not one of this server's trusted_hosts"
        # genret's own routes keep genret's shape
        r = c.post("/v1/search", json={"query": "x" * 2000})
        assert r.status_code == 413 and r.json()["error"] == "PayloadTooLarge"


def _event_schemas(spec: dict, path: str) -> dict:
    content = spec["paths"][path]["post"]["responses"]["200"]["content"]["text/event-stream"]
    assert "schema" not in content or content["schema"] != {"type": "string"}
    return content["itemSchema"]


def test_streamed_rag_events_match_their_schemas(client, service, spec):
    items = _event_schemas(spec, "/v1/rag")
    by_event = {alt["properties"]["event"]["const"]: alt["properties"]["data"]["contentSchema"]["$ref"]
                for alt in items["oneOf"]}
    assert set(by_event) == {"passages", "token", "answer", "error"}
    with generator_swapped(service, ScriptedGenerator("Guido van Rossum [1]")):
        r = client.post("/v1/rag", json={"query": "Who created Python?", "retriever": "bm25", "stream": True})
    events = []
    for block in r.text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append(lines["event"])
        _validator(spec, by_event[lines["event"]]).validate(json.loads(lines["data"]))
    assert events[0] == "passages" and events[-1] == "answer" and "token" in events


def test_streamed_chat_chunks_match_their_schema(client, service, spec):
    items = _event_schemas(spec, "/v1/chat/completions")
    json_data, done = items["properties"]["data"]["oneOf"]
    assert done == {"const": "[DONE]"}
    chunk, error = (_validator(spec, alt["$ref"]) for alt in json_data["contentSchema"]["oneOf"])
    with generator_swapped(service, ScriptedGenerator("Guido van Rossum")):
        r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Who created Python?"}],
                                                      "stream": True, "stream_options": {"include_usage": True}})
    datas = [block[len("data: "):] for block in r.text.strip().split("\n\n")]
    assert datas[-1] == "[DONE]"
    for data in datas[:-1]:
        chunk.validate(json.loads(data))
    # a failure after the stream began: OpenAI's error object as the last event
    with generator_swapped(service, ScriptedGenerator("one two three", delay=0.3, pieces=40)), \
            app_over(service, request_timeout_s=0.5) as app, TestClient(app) as c:
        r = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Who created Python?"}],
                                                 "stream": True, "genret": {"retriever": "bm25"}})
    last = json.loads(r.text.strip().split("\n\n")[-1][len("data: "):])
    error.validate(last)
    assert last["error"]["code"] == "RequestTimeout" and last["error"]["type"] == "server_error"


@pytest.mark.parametrize("method, path, allow", [
    ("PUT", "/v1/search", "GET, POST"), ("DELETE", "/v1/search", "GET, POST"), ("GET", "/v1/search/batch", "POST"),
    ("POST", "/healthz", "GET, HEAD"), ("PATCH", "/v1/indexes", "GET"),
])
def test_a_405_names_every_method_of_the_path(client, method, path, allow):
    r = client.request(method, path)
    assert r.status_code == 405 and r.headers["allow"] == allow
    assert r.json() == {"error": "MethodNotAllowed", "detail": f"{method} is not allowed on {path}; allowed: {allow}"}


def test_probes_answer_head(client, spec):
    for path, status in (("/healthz", "ok"), ("/readyz", "ready")):
        r = client.head(path)
        assert r.status_code == 200 and r.content == b""
        assert client.get(path).json() == {"status": status}
        assert "head" in spec["paths"][path]


def test_trusted_hosts_refuse_other_hosts_in_the_error_shape(service):
    with app_over(service, trusted_hosts=["genret.test", "*.example.org"]) as app:
        c = TestClient(app, base_url="http://genret.test")
        assert c.get("/healthz").status_code == 200
        assert c.get("/healthz", headers={"host": "api.example.org:8000"}).status_code == 200
        for host in ("evil.test", "example.org", "genret.test.evil.test"):
            r = c.post("/v1/search", json={"query": "oil"}, headers={"host": host})
            assert r.status_code == 400 and r.json() == {
                "error": "InvalidHost", "detail": f"Host {host!r} is not one of this server's trusted_hosts"}
        spec = c.get("/openapi.json").json()
        assert all("400" in op["responses"] for ops in spec["paths"].values() for op in ops.values())
    with app_over(service) as app:  # the default: any Host
        assert TestClient(app).get("/healthz", headers={"host": "anything.test"}).status_code == 200


@pytest.mark.parametrize("host, patterns, ok", [
    ("genret.test", ["genret.test"], True), ("GENRET.test:8000", ["genret.test"], True),
    ("genret.test:8000", ["genret.test:9000"], False), ("genret.test:9000", ["genret.test:9000"], True),
    ("a.b.example.org", ["*.example.org"], True), ("example.org", ["*.example.org"], False),
    ("badexample.org", ["*.example.org"], False), ("[::1]:8000", ["[::1]"], True), ("[::2]", ["[::1]"], False),
    ("10.0.0.5:80", ["10.0.0.5"], True), ("anything", ["*"], True), ("", ["genret.test"], False),
])
def test_host_patterns(host, patterns, ok):
    from genret.serving.http._hosts import host_allowed

    assert host_allowed(host, patterns) == ok
