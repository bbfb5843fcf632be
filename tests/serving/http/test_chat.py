"""``POST /v1/chat/completions``: OpenAI's request and response shapes, answered with retrieval; tested with
genret's own OpenAI client (``OpenAIGenerator``) against a real uvicorn server running the genret app, plain and
streaming, and with raw requests for the shapes, the extension field and bad input (OpenAI's error object, 400).
The official ``openai`` client: ``test_openai_client.py``."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from genret.retrieval import GeneratorConfig
from genret.retrieval.rag import OpenAIGenerator
from tests._openai_server import ServerThread
from tests.conftest import QUESTIONS
from tests.serving.helpers import ScriptedGenerator, app_over, generator_swapped

Q = QUESTIONS[2][1]


@pytest.fixture(scope="module")
def client(service):
    with app_over(service) as app, TestClient(app) as c:
        yield c


def _expected_reply(service, query, **spec) -> str:
    """The reply's content: the answer as a person reads it, with its citations."""
    return service.batch_rag([query], service.rag_spec(query, **spec))[0].answer.reply


def test_genrets_openai_client_against_a_real_genret_server(service, tiny_index):
    with app_over(service) as app, ServerThread(app) as server:
        remote = OpenAIGenerator(GeneratorConfig(kind="openai", base_url=server.base_url + "/v1",
                                                 model=tiny_index.name, max_new_tokens=4))
        try:
            prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": Q}]
            expected = _expected_reply(service, Q, index=tiny_index.name, max_new_tokens=4,
                                     history=[("system", "Be brief.")])
            assert remote.generate([prompt]) == [expected]
            assert "".join(remote.stream(prompt)).strip() == expected
            # two prompts at once: concurrent requests, micro-batched on the server
            other = QUESTIONS[0][1]
            assert remote.generate([prompt, [{"role": "user", "content": other}]]) == [
                expected, _expected_reply(service, other, max_new_tokens=4)]
        finally:
            remote.close()


def test_response_shape_and_the_genret_extension(client, service, tiny_index):
    body = {"model": tiny_index.name, "messages": [{"role": "user", "content": "hello"},
                                                   {"role": "assistant", "content": "hi"},
                                                   {"role": "user", "content": [{"type": "text", "text": Q}]}],
            "max_tokens": 3, "temperature": 0.0, "n": 1, "top_p": 1, "user": "u-1", "seed": 7,
            "presence_penalty": 0, "tools": [], "tool_choice": "none", "logprobs": False,
            "response_format": {"type": "text"}, "genret": {"retriever": "bm25", "passages": 2, "task": "qa"}}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["object"] == "chat.completion" and got["id"].startswith("chatcmpl-") and got["model"] == tiny_index.name
    assert isinstance(got["created"], int)
    (choice,) = got["choices"]
    assert choice["index"] == 0 and choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == _expected_reply(service, Q, retriever="bm25", passages=2, task="qa",
                                                         max_new_tokens=3,
                                                         history=[("user", "hello"), ("assistant", "hi")])
    assert choice["finish_reason"] in ("stop", "length")
    usage = got["usage"]
    assert usage["prompt_tokens"] > 20 and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    ext = got["genret"]
    assert (ext["index"], ext["retriever"], ext["task"], len(ext["passages"])) == (tiny_index.name, "bm25", "qa", 2)
    assert ext["passages"][0]["provenance"]["wikipedia_id"] == "p-python"
    # a model name that is no served model: 404 in OpenAI's shape, naming the models
    other = client.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": [{"role": "user", "content": Q}]})
    assert other.status_code == 404 and other.json()["error"]["code"] == "model_not_found", other.text
    assert tiny_index.name in other.json()["error"]["message"]
    # INDEX/RETRIEVER picks the retriever; the extension overrides it; no model: the default index
    for body, retriever in (({"model": f"{tiny_index.name}/bm25"}, "bm25"),
                            ({"model": f"{tiny_index.name}/bm25", "genret": {"retriever": "dense"}}, "dense"),
                            ({}, service.describe()[0]["retrievers"][0])):
        r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": Q}], **body})
        assert r.status_code == 200 and r.json()["genret"]["retriever"] == retriever, r.text
        assert r.json()["model"] == body.get("model", tiny_index.name)


def test_stream_chunks_in_openais_format(client, service):
    with generator_swapped(service, ScriptedGenerator("Guido van Rossum [1]")):
        r = client.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": Q}], "stream": True, "stream_options": {"include_usage": True},
            "genret": {"retriever": "bm25"}})
        plain = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": Q}],
                                                          "genret": {"retriever": "bm25"}}).json()
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    lines = [x[6:] for x in r.text.split("\n") if x.startswith("data: ")]
    assert lines[-1] == "[DONE]" and all(not x.startswith("event:") for x in r.text.split("\n"))
    chunks = [json.loads(x) for x in lines[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text.strip() == plain["choices"][0]["message"]["content"] == "Guido van Rossum [1]"
    final = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(final) == 1 and final[0]["genret"]["citations"][0]["number"] == 1
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


BAD = [
    ({"messages": []}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({}, "messages"),
    ({"messages": [{"role": "system", "content": "only a system message"}]}, "no user message"),
    ({"messages": [{"role": "user", "content": "   "}]}, "no text"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "role"),
    ({"messages": [{"role": "user", "content": 5}]}, "content"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": "many"}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": 5}, "temperature"),
    ({"messages": [{"role": "user", "content": "x"}], "stream": "yes please"}, "stream"),
    ({"messages": [{"role": "user", "content": "x"}], "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"messages": [{"role": "user", "content": "x"}], "stop": [""]}, "stop strings must not be empty"),
    ({"messages": [{"role": "user", "content": "x" * 2001}]}, "longer than 2000"),
    ({"messages": [{"role": "user", "content": "x"}], "genret": {"colour": 1}}, "colour"),
    ({"messages": [{"role": "user", "content": "x"}], "genret": {"passages": 99}}, "passages"),
]


@pytest.mark.parametrize("body, words", BAD)
def test_bad_chat_requests_are_400_in_openais_shape(client, body, words):
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text  # OpenAI has no 422
    error = r.json()["error"]
    assert set(r.json()) == {"error"} and set(error) == {"message", "type", "param", "code"}, r.json()
    assert words in error["message"] and error["type"] == "invalid_request_error", r.json()


UNSUPPORTED = [
    ({"n": 2}, "n"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"functions": [{"name": "f"}]}, "functions"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"response_format": {"type": "json_schema", "json_schema": {}}}, "response_format"),
    ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"logit_bias": {"50256": -100}}, "logit_bias"),
    ({"audio": {"voice": "alloy"}}, "audio"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
    ({"web_search_options": {}}, "web_search_options"),
]


@pytest.mark.parametrize("extra, param", UNSUPPORTED)
def test_unsupported_parameters_are_400(client, extra, param):
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}], **extra})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["code"], error["param"]) == ("unsupported_parameter", param)
    assert error["message"].startswith(f"{param} is not supported by this server (")


def test_content_parts_other_than_text_are_400(client):
    for messages, where in (([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], 0),
                            ([{"role": "user", "content": [{"type": "input_audio"}]},
                              {"role": "user", "content": "x"}], 0),
                            ([{"role": "user", "content": "x"},
                              {"role": "user", "content": [{"type": "text", "text": "y"}, {"type": "image_url"}]}],
                             1)):
        r = client.post("/v1/chat/completions", json={"messages": messages})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == f"messages.{where}.content"
        assert "this server reads text only" in r.json()["error"]["message"]


def test_tool_messages_and_a_trailing_assistant_message_are_left_out(client, service):
    recording = ScriptedGenerator("ok")
    with generator_swapped(service, recording):
        r = client.post("/v1/chat/completions", json={"messages": [
            {"role": "user", "content": "earlier"}, {"role": "assistant", "content": None},
            {"role": "tool", "content": "tool output"}, {"role": "user", "content": Q},
            {"role": "assistant", "content": "a prefill"}], "genret": {"retriever": "bm25"}})
    assert r.status_code == 200, r.text
    (prompt,) = recording.prompts
    assert [m["role"] for m in prompt] == ["system", "user", "user"] and prompt[1]["content"] == "earlier"
    assert "tool output" not in str(prompt) and "a prefill" not in str(prompt)


def test_unknown_index_or_retriever_is_404(client, tiny_index):
    for body in ({"genret": {"index": "nope"}}, {"genret": {"retriever": "nope"}}, {"model": f"{tiny_index.name}/nope"},
                 {"model": "nope/bm25"}):
        r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}], **body})
        assert r.status_code == 404, r.text
        assert r.json()["error"]["type"] == "invalid_request_error" and r.json()["error"]["message"]
