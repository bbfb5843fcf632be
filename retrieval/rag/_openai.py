"""The OpenAI-compatible generator backend: any server speaking ``POST {base}/chat/completions``.

Works with OpenAI itself and with local servers (vLLM, llama.cpp, Ollama, genret's own endpoint).  The base URL
includes the version (``http://127.0.0.1:8000/v1``) and comes from ``GeneratorConfig.base_url`` or
``$OPENAI_BASE_URL``; the key is read from the variable named by ``api_key_env`` and sent as a Bearer token
only when it is set (local servers need none).  ``generate`` sends up to ``batch_size`` requests at a time;
``stream`` reads server-sent events.  Stop strings are sent to the server and also applied here, so a server
that ignores them gives the same text.  Every failure (unreachable server, timeout, HTTP error, malformed
reply) is an ``EndpointError`` that names the URL.  Where the endpoint echoes prompts with log-probabilities on
``/completions``, ``loglik`` and ``span_logprobs`` use them (``_endpoint_scores``): span answers and label scores.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from genret.core import ConfigError, GenretError

from ._endpoint_scores import EndpointScorer
from ._generator import Completion, Generator, GeneratorConfig, Prompt, cut_at_stop, estimated, stream_until_stop

log = logging.getLogger("genret")

MAX_SERVER_STOPS = 4  # OpenAI rejects more; the rest are applied client-side only
_BODY_CHARS = 300  # how much of an error reply goes into the message


class EndpointError(GenretError):
    """The generator endpoint failed: unreachable, too slow, an HTTP error, or a reply that is not a completion.
    ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _reported(reply: Any, guess: Completion) -> Completion:
    """``guess`` with the token count and the finish an endpoint's reply (or last stream chunk) states, if any."""
    try:
        finish = reply["choices"][0].get("finish_reason")
    except (KeyError, IndexError, TypeError, AttributeError):
        finish = None
    usage = reply.get("usage") if isinstance(reply, dict) else None
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    tokens = tokens if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 0 else guess.tokens
    truncated = finish == "length" if finish in ("stop", "length") else guess.truncated
    return Completion(guess.text, tokens, truncated)


def resolve_base_url(config: GeneratorConfig) -> str:
    """``config.base_url`` or ``$OPENAI_BASE_URL``, without a trailing slash."""
    url = (config.base_url or os.environ.get("OPENAI_BASE_URL") or "").strip().rstrip("/")
    if not url:
        raise ConfigError("generator kind 'openai' needs a base URL: set generator.base_url "
                          "(e.g. http://127.0.0.1:8000/v1) or $OPENAI_BASE_URL")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"generator base URL {url!r} must start with http:// or https://")
    return url


class OpenAIGenerator(Generator):
    """Completions from an OpenAI-compatible chat endpoint (thread-safe: one pooled ``httpx.Client``)."""

    name = "openai"

    def __init__(self, config: GeneratorConfig) -> None:
        self.config = config
        self.base_url = resolve_base_url(config)
        self.url = f"{self.base_url}/chat/completions"
        key = os.environ.get(config.api_key_env, "").strip()
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        limits = httpx.Limits(max_connections=max(config.batch_size, 10), max_keepalive_connections=config.batch_size)
        self._client = httpx.Client(timeout=httpx.Timeout(config.timeout_s), limits=limits)
        self._scorer = EndpointScorer(self)

    def close(self) -> None:
        """Close the pooled connections."""
        self._client.close()

    # --- scores through /completions (echo + logprobs), where the endpoint offers them ----------------------
    def loglik(self, prompts: Sequence[Prompt], targets: Sequence[str]) -> list[float]:
        """``Generator.loglik`` from the endpoint's prompt log-probabilities (``_endpoint_scores``); ``GenretError``
        where it gives none."""
        return self._scorer.loglik(prompts, targets)

    def span_logprobs(self, prompt: Prompt, pieces: Sequence[str]) -> list[list[tuple[int, float, float]]]:
        """``Generator.span_logprobs`` from the endpoint's prompt log-probabilities (``_endpoint_scores``)."""
        return self._scorer.span_logprobs(prompt, pieces)

    # --- requests ----------------------------------------------------------------------------------------
    def _body(self, prompt: Prompt, max_new_tokens: int | None, stop: Sequence[str], stream: bool) -> dict[str, Any]:
        if not prompt:
            raise GenretError("empty prompt")
        body: dict[str, Any] = {"model": self.config.model, "messages": list(prompt),
                                "max_tokens": max_new_tokens or self.config.max_new_tokens,
                                "temperature": self.config.temperature}
        stops = [s for s in stop if s][:MAX_SERVER_STOPS]
        if stops:
            body["stop"] = stops
        if stream:
            body["stream"] = True
        return body

    def _transport_error(self, exc: httpx.HTTPError, url: str | None = None) -> EndpointError:
        url = url or self.url
        if isinstance(exc, httpx.TimeoutException):
            return EndpointError(f"generator endpoint {url} did not answer within {self.config.timeout_s:g} s "
                                 f"({type(exc).__name__}; raise generator.timeout_s for slow models)")
        if isinstance(exc, httpx.ConnectError):
            return EndpointError(f"cannot connect to the generator endpoint {url}: {exc} "
                                 "(is the server running? check generator.base_url / $OPENAI_BASE_URL)")
        return EndpointError(f"generator endpoint {url}: {type(exc).__name__}: {exc}")

    def _check_status(self, response: httpx.Response, url: str | None = None) -> None:
        if response.is_success:
            return
        hint = ""
        if response.status_code in (401, 403) and not self._headers:
            hint = f" (no API key sent: ${self.config.api_key_env} is unset)"
        raise EndpointError(f"generator endpoint {url or self.url} answered HTTP {response.status_code}{hint}: "
                            f"{response.text[:_BODY_CHARS]}", status=response.status_code)

    def _post(self, body: dict[str, Any], path: str = "chat/completions") -> Any:
        url = f"{self.base_url}/{path}"
        try:
            response = self._client.post(url, json=body, headers=self._headers)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, url) from exc
        self._check_status(response, url)
        try:
            return response.json()
        except ValueError as exc:
            raise EndpointError(f"generator endpoint {url} sent a reply that is not JSON: "
                                f"{response.text[:_BODY_CHARS]!r}") from exc

    def _message_content(self, reply: Any) -> str:
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise EndpointError(f"generator endpoint {self.url} sent a reply without choices[0].message.content: "
                                f"{json.dumps(reply)[:_BODY_CHARS]}") from exc
        if content is None:  # e.g. a refusal or a tool call: no text
            return ""
        if not isinstance(content, str):
            raise EndpointError(f"generator endpoint {self.url} sent a non-text message content: "
                                f"{json.dumps(content)[:_BODY_CHARS]}")
        return content

    def _complete(self, prompt: Prompt, max_new_tokens: int | None, stop: Sequence[str]) -> Completion:
        """The completion, with the endpoint's ``finish_reason`` and ``usage.completion_tokens`` where it sends them
        (else estimated)."""
        reply = self._post(self._body(prompt, max_new_tokens, stop, stream=False))
        full = self._message_content(reply)
        text = cut_at_stop(full, stop).strip()
        guess = estimated(self, text, max_new_tokens or self.config.max_new_tokens)
        if len(text) < len(full.strip()):  # a stop string the server did not apply
            return Completion(text, guess.tokens, False)
        return _reported(reply, guess)

    # --- Generator ---------------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Prompt], *, max_new_tokens: int | None = None,
                 stop: Sequence[str] = ()) -> list[str]:
        return [c.text for c in self.complete(prompts, max_new_tokens=max_new_tokens, stop=stop)]

    def complete(self, prompts: Sequence[Prompt], *, max_new_tokens: int | None = None,
                 stop: Sequence[str] = ()) -> list[Completion]:
        prompts = list(prompts)
        for p in prompts:  # fail before any request is sent
            if not p:
                raise GenretError("empty prompt")
        workers = min(self.config.batch_size, len(prompts))
        if workers <= 1:
            return [self._complete(p, max_new_tokens, stop) for p in prompts]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="genret-openai") as pool:
            return list(pool.map(lambda p: self._complete(p, max_new_tokens, stop), prompts))

    def stream(self, prompt: Prompt, *, max_new_tokens: int | None = None, stop: Sequence[str] = ()) -> Iterator[str]:
        body = self._body(prompt, max_new_tokens, stop, stream=True)
        try:
            with self._client.stream("POST", self.url, json=body, headers=self._headers) as response:
                if not response.is_success:
                    response.read()
                    self._check_status(response)
                if response.headers.get("content-type", "").startswith("application/json"):
                    # a server that ignores "stream": the whole completion at once
                    response.read()
                    try:
                        reply = response.json()
                    except ValueError as exc:
                        raise EndpointError(f"generator endpoint {self.url} sent a reply that is not JSON: "
                                            f"{response.text[:_BODY_CHARS]!r}") from exc
                    yield from stream_until_stop(iter([self._message_content(reply)]), stop)
                    return
                yield from stream_until_stop(self._events(response), stop)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc

    def _events(self, response: httpx.Response) -> Iterator[str]:
        """The text pieces of a server-sent event stream of chat completion chunks, up to ``data: [DONE]``."""
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue  # blank separators, comments (":"), "event:" / "id:" fields
            data = line[5:].strip()
            if data == "[DONE]":
                return
            try:
                chunk = json.loads(data)
            except ValueError as exc:
                raise EndpointError(f"generator endpoint {self.url} sent a stream event that is not JSON: "
                                    f"{data[:_BODY_CHARS]!r}") from exc
            if not isinstance(chunk, dict):
                raise EndpointError(f"generator endpoint {self.url} sent a malformed stream event: "
                                    f"{data[:_BODY_CHARS]}")
            if "error" in chunk:
                raise EndpointError(f"generator endpoint {self.url} reported an error mid-stream: "
                                    f"{json.dumps(chunk['error'])[:_BODY_CHARS]}")
            choices = chunk.get("choices")
            if not choices:  # e.g. a final usage-only chunk
                continue
            try:
                piece = (choices[0].get("delta") or {}).get("content")
            except (AttributeError, IndexError, TypeError) as exc:
                raise EndpointError(f"generator endpoint {self.url} sent a stream event without "
                                    f"choices[0].delta: {data[:_BODY_CHARS]}") from exc
            if piece:
                if not isinstance(piece, str):
                    raise EndpointError(f"generator endpoint {self.url} sent non-text delta content: "
                                        f"{data[:_BODY_CHARS]}")
                yield piece
        log.warning("generator endpoint %s closed its stream without 'data: [DONE]'", self.url)
