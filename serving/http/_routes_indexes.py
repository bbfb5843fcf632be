"""``GET /v1/indexes``: the served indexes."""

from __future__ import annotations

from fastapi import APIRouter

from ._deps import ServiceDep
from ._models import IndexInfo, error_responses

router = APIRouter()


@router.get("/v1/indexes", response_model=list[IndexInfo], responses=error_responses(401))
async def indexes(service: ServiceDep) -> list[dict]:
    """The served indexes, by name, with the retrievers each offers."""
    return service.describe()
