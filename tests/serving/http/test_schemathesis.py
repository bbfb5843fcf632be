"""Property-based API testing with schemathesis: every operation of the OpenAPI spec, with generated valid (positive)
and invalid (negative) input, never answers with a server error (5xx), valid input is never rejected
(``positive_data_acceptance``: no 400 or 422 for a request the served document allows — the document carries the
server's limits, ``serving/http/_openapi.py``) and invalid input is never accepted (``negative_data_rejection``).
Bounded: a few examples per operation and mode, derandomized, no example database; then schemathesis' own engine runs
its examples and coverage phases (the spec's examples, boundary values and each constraint broken one at a time: what
its command line runs first), and, marked slow, its fuzzing phase. The RAG operations generate with the tiny chat LM (4
new tokens by default: ``tests/serving/helpers.tiny_settings``; a chat's ``max_tokens`` at most ``MAX_TOKENS`` here).

(schemathesis' own pytest loader, ``schemathesis.pytest.from_fixture``, does not run under pytest 9 — it sets
``node._nodeid`` — so the operations' hypothesis strategies are driven here directly.)
"""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import negative_data_rejection, not_a_server_error, positive_data_acceptance
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events

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
    checks = [not_a_server_error, negative_data_rejection]
    if mode is GenerationMode.POSITIVE:  # plus the spec's own examples (every retriever, a few tasks)
        strategy = st.one_of(strategy, *api_schema.get_strategies_from_examples(op))
        checks = [not_a_server_error, positive_data_acceptance]

    @given(case=strategy)
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case):
        case.call_and_validate(checks=checks, app=app)

    check()


CHECKS = ("not_a_server_error", "positive_data_acceptance", "negative_data_rejection")


def engine_failures(service, phases: tuple[str, ...], examples: int = EXAMPLES) -> tuple[int, list[str]]:
    """Run schemathesis' engine over every operation of a fresh app, in ``phases``, with ``CHECKS``:
    ``(checks run, one line per failure: phase, operation, check, what, the request and the response)``."""
    config = SchemathesisConfig.from_dict({
        "seed": 1, "generation": {"max-examples": examples},
        "phases": {p: {"enabled": p in phases} for p in ("examples", "coverage", "fuzzing", "stateful")},
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}}})
    ran, failures = 0, []
    with app_over(service, max_tokens=MAX_TOKENS) as app:
        schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
        for event in schemathesis.engine.from_schema(schema).execute():
            if isinstance(event, (events.NonFatalError, events.FatalError)):
                failures.append(f"{type(event).__name__}: {event}")
            if not isinstance(event, events.ScenarioFinished):
                continue
            recorder = event.recorder
            for case_id, checks in recorder.checks.items():
                ran += len(checks)
                for check in checks:
                    if check.failure_info is None:
                        continue
                    failure, seen = check.failure_info.failure, recorder.interactions.get(case_id)
                    exchange = "" if seen is None else (
                        f" | {seen.request.method} {seen.request.uri} {(seen.request.body or b'')[:300]!r}"
                        f" -> {seen.response.status_code} {seen.response.content[:200]!r}")
                    failures.append(f"{event.phase.value} {event.label} {check.name}: {failure.title}{exchange}")
    return ran, failures


def test_schemathesis_examples_and_coverage_phases_find_nothing(service, small_token_cap):
    ran, failures = engine_failures(service, ("examples", "coverage"))
    assert ran > 300 and failures == [], "\n".join(failures)


@pytest.mark.slow
def test_schemathesis_fuzzing_finds_nothing(service, small_token_cap):
    ran, failures = engine_failures(service, ("examples", "coverage", "fuzzing"), examples=100)
    assert ran > 1000 and failures == [], "\n".join(failures)
