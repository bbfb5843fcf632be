"""The OpenAI-compatible generator against a real local server (uvicorn on 127.0.0.1) backed by the tiny model."""

from __future__ import annotations

import json

import pytest

from genret.core import ConfigError, GenretError
from genret.retrieval.rag import EndpointError, GeneratorConfig, HFGenerator, OpenAIGenerator, load_generator
from tests._openai_server import ChatState, ServerThread, chat_app, closed_port_url

KEY_ENV = "GENRET_TEST_OPENAI_KEY"
PROMPTS = [[{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": q}] for q in (
    "When did the oil embargo start?", "Who created the Python programming language?",
    "Which trumpeter shaped the New Orleans music genre?", "Hi")]


@pytest.fixture(scope="module")
def local(tiny_chat_lm_dir) -> HFGenerator:
    return HFGenerator(GeneratorConfig(model=str(tiny_chat_lm_dir), device="cpu", max_new_tokens=10, batch_size=4))


@pytest.fixture(scope="module")
def server(local):
    with ServerThread(chat_app(local)) as s:
        yield s


def _state(server: ServerThread) -> ChatState:
    return server.app.state.chat


@pytest.fixture(autouse=True)
def _clean(server, monkeypatch):
    _state(server).requests.clear()
    _state(server).reply, _state(server).reply_type, _state(server).delay_s = None, "application/json", 0.0
    _state(server).release.clear()
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def _client(server, **kw) -> OpenAIGenerator:
    cfg = dict(kind="openai", model="tiny", base_url=server.base_url + "/v1/", api_key_env=KEY_ENV,
               max_new_tokens=10, batch_size=3)
    cfg.update(kw)
    gen = load_generator(GeneratorConfig(**cfg))
    assert isinstance(gen, OpenAIGenerator)
    return gen


def test_completions_equal_the_local_model(server, local) -> None:
    remote = _client(server)
    assert remote.url == server.base_url + "/v1/chat/completions"  # trailing slash normalised
    expected = local.generate(PROMPTS)
    assert all(expected)
    assert remote.generate(PROMPTS) == expected  # 4 prompts, 3 in flight at a time, results in prompt order
    assert remote.generate([]) == []
    bodies = [r["body"] for r in _state(server).requests]
    assert len(bodies) == 4
    assert sorted(json.dumps(b["messages"]) for b in bodies) == sorted(json.dumps(p) for p in PROMPTS)
    assert all(b["model"] == "tiny" and b["max_tokens"] == 10 and b["temperature"] == 0.0 for b in bodies)
    assert all("stop" not in b and "stream" not in b for b in bodies)


def test_max_tokens_and_stop_reach_the_server(server, local) -> None:
    remote = _client(server)
    full = local.generate([PROMPTS[0]])[0]
    stop = full.split()[2]
    expected = local.generate([PROMPTS[0]], stop=[stop], max_new_tokens=8)[0]
    assert remote.generate([PROMPTS[0]], stop=[stop], max_new_tokens=8) == [expected]
    assert expected == full[:full.index(stop)].strip()
    assert _state(server).requests[-1]["body"]["stop"] == [stop]
    assert _state(server).requests[-1]["body"]["max_tokens"] == 8


def test_stop_is_applied_client_side_too(server) -> None:
    # a server that ignores "stop" still gives a cut completion
    reply = {"choices": [{"message": {"role": "assistant", "content": " a\nb END c"}}]}
    _state(server).reply = (200, json.dumps(reply))
    assert _client(server).generate([PROMPTS[0]], stop=["END"]) == ["a\nb"]
    assert "".join(_client(server).stream(PROMPTS[0], stop=["END"])) == " a\nb "  # a JSON reply to a stream request


def test_stream_concatenates_to_the_same_text(server, local) -> None:
    remote = _client(server)
    for prompt in PROMPTS[:2]:
        pieces = list(remote.stream(prompt))
        assert len(pieces) > 1
        assert "".join(pieces).strip() == local.generate([prompt])[0]
    assert _state(server).requests[-1]["body"]["stream"] is True
    full = local.generate([PROMPTS[0]])[0]
    stop = full.split()[3]
    assert "".join(remote.stream(PROMPTS[0], stop=[stop])).strip() == full[:full.index(stop)].strip()


def _sse(*events: str) -> str:
    return "".join(f"{e}\n\n" for e in events)


def _delta(content: str) -> str:
    return "data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": content}}]})


def test_event_stream_parsing(server) -> None:
    state = _state(server)
    state.reply_type = "text/event-stream"
    state.reply = (200, _sse(": keep-alive", "event: message\n" + _delta("Hel"), _delta("lo"),
                             'data: {"choices": [], "usage": {"completion_tokens": 2}}', "data: [DONE]",
                             _delta("after the end")))
    assert list(_client(server).stream(PROMPTS[0])) == ["Hel", "lo"]
    state.reply = (200, _sse(_delta("no end marker")))
    assert list(_client(server).stream(PROMPTS[0])) == ["no end marker"]
    state.reply = (200, _sse(_delta("a"), "data: {not json"))
    with pytest.raises(EndpointError, match="stream event that is not JSON"):
        list(_client(server).stream(PROMPTS[0]))
    state.reply = (200, _sse(_delta("a"), 'data: {"error": {"message": "overloaded"}}'))
    with pytest.raises(EndpointError, match="error mid-stream.*overloaded"):
        list(_client(server).stream(PROMPTS[0]))


def test_bearer_key_only_when_the_variable_is_set(server, monkeypatch) -> None:
    _client(server).generate([PROMPTS[3]], max_new_tokens=2)
    monkeypatch.setenv(KEY_ENV, "")
    _client(server).generate([PROMPTS[3]], max_new_tokens=2)
    monkeypatch.setenv(KEY_ENV, "sk-test-123")
    _client(server).generate([PROMPTS[3]], max_new_tokens=2)
    list(_client(server).stream(PROMPTS[3], max_new_tokens=2))
    assert [r["authorization"] for r in _state(server).requests] == [None, None, "Bearer sk-test-123",
                                                                    "Bearer sk-test-123"]


def test_http_error_names_status_and_body(server) -> None:
    _state(server).reply = (500, '{"error": {"message": "model exploded"}}')
    remote = _client(server)
    with pytest.raises(GenretError, match=r"answered HTTP 500: .*model exploded") as info:
        remote.generate(PROMPTS[:2])
    assert isinstance(info.value, EndpointError) and info.value.status == 500
    assert server.base_url in str(info.value)
    with pytest.raises(EndpointError, match="HTTP 500"):
        list(remote.stream(PROMPTS[0]))
    _state(server).reply = (401, '{"error": "no key"}')
    with pytest.raises(EndpointError, match=f"HTTP 401 \\(no API key sent: \\${KEY_ENV} is unset\\)"):
        remote.generate([PROMPTS[0]])


@pytest.mark.parametrize("body, message", [
    ("this is not json", "not JSON"),
    ('{"choices": []}', r"without choices\[0\].message.content"),
    ('{"choices": [{"message": {"content": 3}}]}', "non-text message content"),
], ids=["not-json", "no-choices", "non-text"])
def test_malformed_replies(server, body, message) -> None:
    _state(server).reply = (200, body)
    with pytest.raises(EndpointError, match=message):
        _client(server).generate([PROMPTS[0]])


def test_refused_connection_names_the_url() -> None:
    url = closed_port_url()
    remote = OpenAIGenerator(GeneratorConfig(kind="openai", base_url=url, api_key_env=KEY_ENV, timeout_s=5))
    with pytest.raises(GenretError, match=f"cannot connect to the generator endpoint {url}/chat/completions"):
        remote.generate([PROMPTS[0]])
    with pytest.raises(EndpointError, match="cannot connect"):
        list(remote.stream(PROMPTS[0]))


def test_timeout_names_the_url(server) -> None:
    _state(server).delay_s = 5.0
    remote = _client(server, timeout_s=0.3)
    try:
        with pytest.raises(EndpointError, match=rf"{server.base_url}/v1/chat/completions did not answer within 0.3 s"):
            remote.generate([PROMPTS[0]])
    finally:
        _state(server).release.set()


def test_base_url_from_the_environment_or_a_config_error(server, monkeypatch) -> None:
    cfg = GeneratorConfig(kind="openai", api_key_env=KEY_ENV)
    with pytest.raises(ConfigError, match=r"needs a base URL.*OPENAI_BASE_URL"):
        load_generator(cfg)
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url + "/v1")
    assert OpenAIGenerator(cfg).url == server.base_url + "/v1/chat/completions"
    with pytest.raises(ConfigError, match="must start with http"):
        OpenAIGenerator(GeneratorConfig(kind="openai", base_url="127.0.0.1:8000/v1"))


def test_scores_need_prompt_logprobs_and_empty_prompts_fail(server) -> None:
    """This server has no /completions: scoring fails with a GenretError (the RAG pipeline then answers freely),
    found out once — the second call sends nothing."""
    remote = _client(server)
    with pytest.raises(GenretError, match="no prompt log-probabilities"):
        remote.loglik(PROMPTS[:1], ["x"])
    with pytest.raises(GenretError, match="no prompt log-probabilities"):
        remote.span_logprobs(PROMPTS[0], ["x"])
    assert remote._scorer.supported is False
    with pytest.raises(GenretError, match="empty prompt"):
        remote.generate([PROMPTS[0], []])
    assert _state(server).requests == []
