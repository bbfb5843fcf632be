"""Property-based API testing with schemathesis: every operation of the OpenAPI spec, with generated valid
(positive) and invalid (negative) input, never answers with a server error (5xx), and valid input is never
rejected (``positive_data_acceptance``: no 400 or 422 for a request the served document allows — the document
carries the server's limits, ``serving/http/_openapi.py``).  Bounded: a few examples per operation and mode,
derandomized, no example database.  The RAG operations generate with the tiny chat
LM (4 new tokens by default: ``tests/serving/helpers.tiny_settings``; a chat's ``max_tokens`` at most
``MAX_TOKENS`` here).

(schemathesis' own pytest loader, ``schemathesis.pytest.from_fixture``, does not run under pytest 9 — it sets
``node._nodeid`` — so the operations' hypothesis strategies are driven here directly.)
"""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, positive_data_acceptance

from tests.serving.helpers import app_over

OPERATIONS = ["GET /healthz", "HEAD /healthz", "GET /readyz", "HEAD /readyz", "GET /metrics", "GET /v1/indexes",
              "POST /v1/search", "GET /v1/search", "POST /v1/search/batch", "POST /v1/rag",
              "POST /v1/chat/completions", "GET /v1/models", "GET /v1/models/{model}", "POST /v1/embeddings"]
EXAMPLES = 25
MAX_TOKENS = 8  # server.max_tokens here: the tiny chat LM writes what a chat asks for, up to this


@pytest.fixture(scope="module")
def small_token_cap(service):
    """The shared service checks its own settings' cap; the apps here document the same one."""
    server = service.settings.server
    old, server.max_tokens = server.max_tokens, MAX_TOKENS
    yield
    server.max_tokens = old


@pytest.fixture(scope="module")
def api_schema(service, small_token_cap):
    with app_over(service, max_tokens=MAX_TOKENS) as app:
        yield schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture
def app(service, small_token_cap):
    """A fresh app per test: schemathesis ends an app's lifespan (a shutdown) after each test."""
    with app_over(service, max_tokens=MAX_TOKENS) as app:
        yield app


def test_every_operation_is_covered(api_schema):
    found = [r.ok() for r in api_schema.get_all_operations()]
    assert sorted(f"{op.method.upper()} {op.path}" for op in found) == sorted(OPERATIONS)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize("operation", OPERATIONS)
def test_no_server_error_and_no_valid_input_rejected(api_schema, app, operation, mode):
    method, path = operation.split(" ")
    op = api_schema[path][method]
    n_params = len(list(op.iter_parameters())) + (1 if op.body else 0)
    if mode is GenerationMode.NEGATIVE and not n_params:
        pytest.skip("nothing to make invalid")

    strategy = op.as_strategy(generation_mode=mode)
    checks = [not_a_server_error]
    if mode is GenerationMode.POSITIVE:  # plus the spec's own examples (every retriever, a few tasks)
        strategy = st.one_of(strategy, *api_schema.get_strategies_from_examples(op))
        checks.append(positive_data_acceptance)

    @given(case=strategy)
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case):
        case.call_and_validate(checks=checks, app=app)

    check()
