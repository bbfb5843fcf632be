"""The HTTP tests' fixtures: one search service over the tiny index (retrievers loaded once, shared by the apps the
tests build over it)."""

from __future__ import annotations

import pytest

from genret.serving.http._service import SearchService
from tests.serving.helpers import tiny_settings


@pytest.fixture(scope="session")
def service(tiny_index, tiny_lm_dir, tiny_chat_lm_dir):
    svc = SearchService(tiny_settings(tiny_index, tiny_lm_dir, tiny_chat_lm_dir))
    yield svc
    svc.close()


@pytest.fixture
def anyio_backend():
    return "asyncio"
