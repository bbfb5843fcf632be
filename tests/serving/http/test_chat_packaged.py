"""Chat completions with the packaged SmolLM2-135M over the tiny index, through the official ``openai`` client: the
cases of issue 29 (5) as a user met them — a reply cut at ``max_tokens`` says ``length`` (the model's own count of
new tokens, not the cleaned text's re-tokenised one), and ``content`` is the answer a person reads, ending at a
sentence end with its citation ``[n]``, plain and streamed alike."""

from __future__ import annotations

import re

import openai
import pytest

from tests._openai_server import ServerThread
from tests.serving.helpers import app_over

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(tiny_index):
    from genret.serving import Settings
    from genret.serving.http._service import SearchService

    service = SearchService(Settings(indexes=[tiny_index], server={"lazy": True},
                                     retrieval={"dense": {"device": "cpu"}}, generator={"device": "cpu"}))
    try:
        with app_over(service) as app, ServerThread(app) as server, openai.OpenAI(
                base_url=server.base_url + "/v1", api_key="unused", max_retries=0, timeout=300) as c:
            yield c
    finally:
        service.close()


def test_a_reply_cut_at_max_tokens_says_length_and_reads_as_whole_sentences(client, tiny_index):
    # the packaged model's reply to this question runs past 60 tokens: its 60th is the start of a new line, which
    # the cleaned text loses (59 tokens re-tokenised: "stop" before the fix)
    kw = {"model": f"{tiny_index.name}/dense", "max_tokens": 60,
          "messages": [{"role": "user", "content": "who proclaimed the oil embargo?"}]}
    plain = client.chat.completions.create(**kw)
    assert plain.choices[0].finish_reason == "length" and plain.usage.completion_tokens == 60
    content = plain.choices[0].message.content
    assert re.search(r"[.!?]( \[\d\])+$", content), content  # whole sentences, then the citation
    assert content != plain.genret["raw"] and plain.genret["raw"].startswith(content[:20])
    chunks = list(client.chat.completions.create(**kw, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    # a reply that ends before the limit: stop, its count below it
    short = client.chat.completions.create(**{**kw, "messages": [{"role": "user", "content": "Who created Python?"}]})
    assert short.choices[0].finish_reason == "stop" and short.usage.completion_tokens < 60
    assert re.search(r"\[\d\]$", short.choices[0].message.content)
