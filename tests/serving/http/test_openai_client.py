"""The official ``openai`` client against a live genret server (uvicorn on a free port, the genret app over the
tiny index and the tiny chat LM): the model list, chat completions plain and streamed with the conversation in
the prompt and ``max_tokens`` honoured, embeddings from the index's dense encoder, and errors as the client's
typed exceptions with OpenAI's message, type, param and code."""

from __future__ import annotations

import numpy as np
import openai
import pytest

from tests._openai_server import ServerThread
from tests.conftest import QUESTIONS
from tests.serving.helpers import ScriptedGenerator, app_over, generator_swapped

Q = QUESTIONS[2][1]


@pytest.fixture(scope="module")
def server(service):
    with app_over(service) as app, ServerThread(app) as server:
        yield server


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0, timeout=60) as c:
        yield c


class Recording(ScriptedGenerator):
    """A scripted generator that also records the ``max_new_tokens`` it was asked for and streamed prompts."""

    def __init__(self, text: str = "Guido van Rossum [1]") -> None:
        super().__init__(text)
        self.max_new_tokens: list[int | None] = []

    def generate(self, prompts, *, max_new_tokens=None, stop=()):
        self.max_new_tokens.append(max_new_tokens)
        return super().generate(prompts, max_new_tokens=max_new_tokens, stop=stop)

    def stream(self, prompt, *, max_new_tokens=None, stop=()):
        self.prompts.append(prompt)
        self.max_new_tokens.append(max_new_tokens)
        yield from super().stream(prompt, max_new_tokens=max_new_tokens, stop=stop)


def test_models_list_each_index_and_retriever(client, service, tiny_index):
    name = tiny_index.name
    retrievers = service.describe()[0]["retrievers"]
    models = client.models.list()
    assert [m.id for m in models.data] == [name] + [f"{name}/{r}" for r in retrievers]
    assert {m.object for m in models.data} == {"model"} and {m.owned_by for m in models.data} == {"genret"}
    assert all(m.created > 0 for m in models.data)
    assert models.data[0].genret == {"index": name, "retriever": retrievers[0], "embeddings": True}
    bm25 = client.models.retrieve(f"{name}/bm25")
    assert bm25.id == f"{name}/bm25" and bm25.genret["embeddings"] is False
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("gpt-4o")
    assert err.value.code == "model_not_found" and "'gpt-4o' does not exist" in err.value.message


def test_chat_completion_answers_from_the_index_with_the_conversation(client, service, tiny_index):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"},
                {"role": "assistant", "content": "hi"}, {"role": "user", "content": Q}]
    got = client.chat.completions.create(model=f"{tiny_index.name}/bm25", messages=messages)
    history = [("system", "Be brief."), ("user", "hello"), ("assistant", "hi")]
    expected = service.batch_rag([Q], service.rag_spec(Q, retriever="bm25", history=history))[0]
    assert got.choices[0].message.content == expected.answer.reply and got.choices[0].message.role == "assistant"
    assert got.model == f"{tiny_index.name}/bm25" and got.object == "chat.completion"
    assert got.choices[0].finish_reason in ("stop", "length")
    assert got.usage.prompt_tokens == expected.prompt_tokens
    prompt = expected.answer.prompt
    assert prompt[0]["content"].startswith("Be brief.\n\n") and [m["content"] for m in prompt[1:3]] == ["hello", "hi"]
    # the genret extension says what answered, and the client can pass it (extra_body)
    assert got.genret["retriever"] == "bm25" and got.genret["passages"]
    ext = client.chat.completions.create(model=tiny_index.name, messages=[{"role": "user", "content": Q}],
                                         extra_body={"genret": {"retriever": "bm25", "task": "qa", "passages": 1}})
    assert (ext.genret["retriever"], ext.genret["task"], len(ext.genret["passages"])) == ("bm25", "qa", 1)


def test_streamed_chat_equals_the_plain_answer(client, tiny_index):
    kw = {"model": tiny_index.name, "messages": [{"role": "user", "content": Q}], "max_tokens": 6}
    plain = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() == plain.choices[0].message.content
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == [plain.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert {c.model for c in chunks} == {tiny_index.name} and len({c.id for c in chunks}) == 1


def test_max_tokens_is_honoured_up_to_the_servers_cap(client, service, tiny_index):
    recording = Recording()
    with generator_swapped(service, recording):
        client.chat.completions.create(model=tiny_index.name, messages=[{"role": "user", "content": Q}],
                                       max_tokens=200)
        client.chat.completions.create(model=tiny_index.name, messages=[{"role": "user", "content": Q}],
                                       max_completion_tokens=1024)
        list(client.chat.completions.create(model=tiny_index.name, messages=[{"role": "user", "content": Q}],
                                            max_tokens=300, stream=True))
    assert recording.max_new_tokens == [200, 1024, 300]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=tiny_index.name, messages=[{"role": "user", "content": Q}],
                                       max_tokens=1025)
    assert err.value.param == "max_tokens" and "over this server's limit of 1024" in err.value.message
    # the real (tiny) model writes more than the server's default of 4 new tokens when asked to
    longer = client.chat.completions.create(model=tiny_index.name, messages=[{"role": "user", "content": Q}],
                                            max_tokens=12)
    assert longer.usage.completion_tokens > 4


def test_a_streamed_answer_has_the_conversation_in_its_prompt(client, service, tiny_index):
    recording = Recording("streamed words")
    with generator_swapped(service, recording):
        chunks = list(client.chat.completions.create(
            model=tiny_index.name, stream=True, messages=[
                {"role": "developer", "content": "Answer in English."}, {"role": "user", "content": "earlier"},
                {"role": "assistant", "content": "reply"}, {"role": "user", "content": Q}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks).startswith("streamed words [")
    (prompt,) = recording.prompts
    assert prompt[0]["content"].startswith("Answer in English.")
    assert [m["content"] for m in prompt[1:3]] == ["earlier", "reply"] and Q in prompt[-1]["content"]


@pytest.mark.parametrize("kwargs, param, words", [
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools", "function calling"),
    ({"n": 2}, "n", "more than one choice"),
    ({"logprobs": True}, "logprobs", "log probabilities"),
    ({"response_format": {"type": "json_object"}}, "response_format", "structured output"),
])
def test_unsupported_parameters_are_a_clear_400(client, tiny_index, kwargs, param, words):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=tiny_index.name, messages=[{"role": "user", "content": Q}], **kwargs)
    e = err.value
    assert (e.status_code, e.code, e.param, e.type) == (400, "unsupported_parameter", param, "invalid_request_error")
    assert words in e.message and f"Error code: 400 - {param} is not supported" in str(e)


def test_errors_are_the_clients_typed_exceptions_with_the_message(client, tiny_index):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": Q}])
    assert err.value.code == "model_not_found" and err.value.param == "model"
    assert "the model 'gpt-4o' does not exist on this server" in str(err.value) and tiny_index.name in str(err.value)
    with pytest.raises(openai.BadRequestError) as err:  # a bad value: 400 (OpenAI has no 422), with its field
        client.chat.completions.create(model=tiny_index.name, messages=[{"role": "user", "content": Q}],
                                       temperature=5)
    assert err.value.param == "temperature" and "less than or equal to 2" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=tiny_index.name, messages=[{"role": "system", "content": "hi"}])
    assert err.value.body == {"message": "no user message: the last user message is the question", "param": "messages",
                              "type": "invalid_request_error", "code": "RequestError"}
    assert str(err.value) == "Error code: 400 - no user message: the last user message is the question"


def test_a_wrong_api_key_is_an_authentication_error(service, tiny_index):
    with app_over(service, api_keys=["s3cret"]) as app, ServerThread(app) as server:
        for key, ok in (("wrong", False), ("s3cret", True)):
            with openai.OpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0) as c:
                if ok:
                    assert c.models.list().data[0].id == tiny_index.name
                    continue
                with pytest.raises(openai.AuthenticationError) as err:
                    c.models.list()
                assert err.value.code == "invalid_api_key" and "invalid API key" in err.value.message


def test_embeddings_come_from_the_index_dense_encoder(client, encoder, tiny_index):
    texts = ["Who created Python?", "oil embargo", "Mount Everest"]
    expected = encoder.encode(texts)
    got = client.embeddings.create(model=tiny_index.name, input=texts)  # the client asks for base64
    assert [d.index for d in got.data] == [0, 1, 2] and got.model == tiny_index.name and got.object == "list"
    assert np.allclose(np.array([d.embedding for d in got.data]), expected, atol=1e-5)
    floats = client.embeddings.create(model=f"{tiny_index.name}/dense", input=texts[1], encoding_format="float",
                                      dimensions=expected.shape[1])
    assert np.allclose(floats.data[0].embedding, expected[1], atol=1e-5)
    assert got.usage.prompt_tokens == got.usage.total_tokens > len(texts)


@pytest.mark.parametrize("kwargs, error, param, words", [
    ({"model": "tiny/bm25"}, openai.NotFoundError, "model", "does not embed"),
    ({"model": "nope"}, openai.NotFoundError, "model", "does not exist"),
    ({"input": [[1, 2, 3]]}, openai.BadRequestError, "input", "token ids"),
    ({"dimensions": 8}, openai.BadRequestError, "dimensions", "384 dimensions"),
    ({"input": ["ok", "  "]}, openai.BadRequestError, "input", "input[1] is empty"),
])
def test_embedding_errors(client, tiny_index, kwargs, error, param, words):
    kwargs = {"model": tiny_index.name, "input": "text", **kwargs}
    with pytest.raises(error) as err:
        client.embeddings.create(**kwargs)
    assert err.value.param == param and words in err.value.message


def test_embeddings_compute_in_the_dense_dtype_the_server_is_given(tiny_index):
    """`genret serve --dtype` (``retrieval.dense.dtype``) reaches the encoder behind /v1/embeddings too."""
    from genret.indexing import Index
    from genret.serving.http._embeddings import Embedder

    with Index(tiny_index) as index:
        embedder = Embedder("cpu", 8, "float32")
        vectors, _ = embedder.embed(index, ["Who created Python?"])
        assert vectors.shape == (1, embedder.dim(index))
        assert [m.encoder.dtype for m in embedder._loaded.values()] == ["float32"]


# ---- issue 29 (5): finish_reason and a content a person reads ------------------------------------------------
def _stopped_at_limit(service, prompt, n: int) -> bool:
    """Ground truth, from the model itself: whether greedy decoding of ``prompt`` runs ``n`` tokens without ending."""
    import torch

    gen = service.rag.generator()
    enc = gen._encode([gen.render(list(prompt))], "left")
    with torch.inference_mode():
        ids = gen.lm.model.generate(**enc, **gen._gen_kwargs(n))[0, enc["input_ids"].shape[1]:].tolist()
    return len(ids) == n and not set(ids) & {*gen._eos_ids, gen.tokenizer.pad_token_id}


def test_finish_reason_is_length_whenever_generation_stopped_at_max_tokens(client, service, tiny_index):
    kw = {"model": f"{tiny_index.name}/bm25", "messages": [{"role": "user", "content": Q}]}
    prompt = service.batch_rag([Q], service.rag_spec(Q, retriever="bm25"))[0].answer.prompt
    expected, plain, streamed, counts, texts = [], [], [], [], []
    for n in range(1, 17):
        expected.append((n, "length" if _stopped_at_limit(service, prompt, n) else "stop"))
        reply = client.chat.completions.create(**kw, max_tokens=n)
        plain.append((n, reply.choices[0].finish_reason))
        counts.append((n, reply.usage.completion_tokens if plain[-1][1] == "length" else n))
        chunks = list(client.chat.completions.create(**kw, max_tokens=n, stream=True))
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        streamed.append((n, finish[0] if len(finish) == 1 else finish))
        texts.append(("".join(c.choices[0].delta.content or "" for c in chunks), reply.choices[0].message.content))
    assert plain == expected and streamed == expected
    assert counts == [(n, n) for n in range(1, 17)]  # the model's own count, not the cleaned text's
    assert all(a == b for a, b in texts), texts  # the streamed content is the plain one


def _reply(client, tiny_index, **kw):
    plain = client.chat.completions.create(model=f"{tiny_index.name}/bm25",
                                           messages=[{"role": "user", "content": Q}], **kw)
    chunks = list(client.chat.completions.create(model=f"{tiny_index.name}/bm25", stream=True,
                                                 messages=[{"role": "user", "content": Q}], **kw))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    return plain, streamed, finish


def test_content_is_the_answer_a_person_reads_with_its_citations(client, service, tiny_index):
    raw = "Answer: Guido van Rossum [1] created it [9] in 1991. It was named after Monty Python and"
    with generator_swapped(service, ScriptedGenerator(raw)):
        plain, streamed, finish = _reply(client, tiny_index, max_tokens=12)  # the budget cut it
    content = plain.choices[0].message.content
    assert content == "Guido van Rossum [1] created it in 1991." == streamed  # whole sentences, its markers kept
    assert plain.choices[0].finish_reason == "length" and finish == ["length"]
    assert plain.genret["raw"] == raw and plain.genret["answer"] == "Guido van Rossum created it in 1991."
    # an answer the model ended itself stays whole, and cites the passage it came from ([n], as documented)
    with generator_swapped(service, ScriptedGenerator("Guido van Rossum")):
        plain, streamed, finish = _reply(client, tiny_index, max_tokens=200)
    number = plain.genret["citations"][0]["number"]
    assert plain.choices[0].message.content == f"Guido van Rossum [{number}]" == streamed
    assert plain.choices[0].finish_reason == "stop" and finish == ["stop"]
    # a short answer (the span reader's, from the real tiny model): the span and its citation
    plain, streamed, _ = _reply(client, tiny_index, extra_body={"genret": {"task": "qa"}})
    cites = "".join(f"[{c['number']}]" for c in plain.genret["citations"])
    assert cites and plain.choices[0].message.content == f"{plain.genret['answer']} {cites}" == streamed
