"""Hostile input the error contract must hold against (issue 27, points 5 and 9): bodies that cannot be parsed are 422
like any other invalid JSON (nested too deeply, not UTF-8, a number too long), a query string that is not UTF-8 is
422 (not a search for U+FFFD), numbers are bounded, a union's error names the field in words, two Host headers are
400 (RFC 7230), and the OpenAI-compatible parameters genret refuses are refused by the schema's own type rules."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from tests.serving.helpers import app_over

USER = [{"role": "user", "content": "Who created Python?"}]
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def client(service):
    with app_over(service) as app, TestClient(app) as c:
        yield c


@pytest.mark.parametrize("body, words", [
    (b'{"query": ' + b"[" * 3000 + b"]" * 3000 + b"}", "nested too deeply"),
    (b'{"query": "\xff\xfe oil"}', "not valid UTF-8 (byte 0xff"),
    (b'{"query": "oil", "k": ' + b"9" * 5000 + b"}", "a number with too many digits"),
], ids=["deep", "not-utf8", "long-number"])
def test_a_body_that_cannot_be_parsed_is_422(client, body, words):
    r = client.post("/v1/search", content=body, headers=JSON)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "ValidationError" and words in r.json()["detail"]
    r = client.post("/v1/chat/completions", content=body, headers=JSON)  # OpenAI's routes: 400, in OpenAI's shape
    assert r.status_code == 400 and words in r.json()["error"]["message"]


def test_a_query_string_that_is_not_utf8_is_422(client):
    r = client.get("/v1/search?q=%ff%fe&retriever=bm25")
    assert r.status_code == 422, r.text
    assert "not valid UTF-8" in r.json()["detail"]
    assert client.get("/v1/search?q=%C3%A9t%C3%A9+oil&retriever=bm25").status_code == 200  # "été oil"


@pytest.mark.parametrize("params", [{"k": "99999999999999999999"}, {"k": "2147483648"}, {"k": "-1"}])
def test_numbers_are_bounded_over_http_too(client, params):
    r = client.get("/v1/search", params={"q": "oil", "retriever": "bm25", **params})
    assert r.status_code == 422 and "k must be between 1 and 100" in r.json()["detail"], r.text
    r = client.post("/v1/search", content=b'{"query": "oil", "retriever": "bm25", "k": 1e20}', headers=JSON)
    assert r.status_code == 422, r.text


def test_five_stop_strings_are_refused_in_words(client):
    r = client.post("/v1/chat/completions", json={"messages": USER, "stop": ["a", "b", "c", "d", "e"]})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "stop" and "constrained" not in error["message"], error
    assert error["message"] == "body.stop: List should have at most 4 items after validation, not 5"
    r = client.post("/v1/chat/completions", json={"messages": USER, "stop": 5})
    assert r.json()["error"]["message"] == "body.stop: Input should be a valid string or a valid list", r.text


@pytest.mark.parametrize("name, value", [("top_logprobs", False), ("logprobs", 0), ("top_logprobs", "0")])
def test_refused_openai_parameters_follow_json_types(client, name, value):
    r = client.post("/v1/chat/completions", json={"messages": USER, name: value, "max_tokens": 1})
    assert r.status_code == 400 and r.json()["error"]["param"] == name, r.text


@pytest.mark.parametrize("name, value", [("top_logprobs", 0), ("top_logprobs", 0.0), ("logprobs", False)])
def test_the_values_genret_takes_are_taken(client, name, value):
    r = client.post("/v1/chat/completions", json={"messages": USER, name: value, "max_tokens": 1})
    assert r.status_code == 200, r.text


def test_both_token_limits_are_bounded(client, service):
    """The document bounds max_tokens and max_completion_tokens alike; max_completion_tokens wins, but a max_tokens
    over the cap beside it is refused too, not ignored."""
    cap = service.settings.server.max_tokens
    r = client.post("/v1/chat/completions", json={"messages": USER, "max_tokens": cap + 1,
                                                  "max_completion_tokens": 1})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens", r.text
    r = client.post("/v1/chat/completions", json={"messages": USER, "stream_options": {"include_usage": 0}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "stream_options.include_usage", r.text


def test_two_host_headers_are_400(service):
    for trusted in ([], ["genret.test"]):
        with app_over(service, trusted_hosts=trusted) as app, TestClient(app, base_url="http://genret.test") as c:
            assert c.get("/healthz").status_code == 200
            for hosts in ([b"genret.test", b"evil.example"], [b"genret.test", b"genret.test"]):
                r = c.get("/healthz", headers=[(b"host", h) for h in hosts])
                assert r.status_code == 400, (trusted, hosts, r.text)
                assert r.json() == {"error": "InvalidHost", "detail": "more than one Host header (RFC 7230)"}


def test_get_search_declares_which_retrievers_take_a_granularity(client):
    """The GET operation's retriever and granularity are one exploded object parameter with the POST body's rule:
    the document refuses what the server refuses (bm25 ranks no sentences), and allows what it takes."""
    import jsonschema

    spec = client.get("/openapi.json").json()
    params = spec["paths"]["/v1/search"]["get"]["parameters"]
    (picked,) = [p for p in params if p["schema"].get("type") == "object"]
    assert (picked["in"], picked["style"], picked["explode"]) == ("query", "form", True)
    assert {"retriever", "granularity"} <= set(picked["schema"]["properties"])
    assert not {p["name"] for p in params} & {"retriever", "granularity"}
    schema = jsonschema.Draft202012Validator(picked["schema"])
    for choice, ok in [({"retriever": "bm25", "granularity": "sentence"}, False), ({"retriever": "bm25"}, True),
                       ({"retriever": "generative", "granularity": "sentence"}, True),
                       ({"granularity": "page"}, True)]:
        assert schema.is_valid(choice) == ok, choice
        r = client.get("/v1/search", params={"q": "Who created Python?", "k": 2, **choice})
        assert (r.status_code == 200) == ok, (choice, r.text)
        if not ok:
            assert r.status_code == 422 and "granularity applies to the generative" in r.json()["detail"]


def test_the_error_messages_are_json_lines(client):
    r = client.post("/v1/search", content=b'{"query": ' + b"{" * 3000, headers=JSON)
    assert r.status_code == 422 and json.loads(r.text)["detail"].count("\n") == 0
