"""``GET /v1/models`` and ``GET /v1/models/{model}``: OpenAI's model list, one model per served index and
retriever — ``INDEX`` (the index's default retriever) and ``INDEX/RETRIEVER`` for each retriever it offers — as
clients (Open WebUI, …) ask before they chat.  Cheap: read from the manifests, nothing is loaded."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter

from genret.indexing import Index

from ._deps import ServiceDep
from ._errors import ModelNotFound
from ._models_openai import ModelCard, ModelInfo, ModelList, openai_error_responses
from ._service import SearchService

router = APIRouter()


@router.get("/v1/models", response_model=ModelList, responses=openai_error_responses(401))
async def list_models(service: ServiceDep) -> ModelList:
    """The served models: per index `INDEX` (its default retriever), then `INDEX/RETRIEVER` for each retriever;
    `genret.embeddings` says which ids POST /v1/embeddings takes."""
    return ModelList(data=_cards(service))


@router.get("/v1/models/{model:path}", response_model=ModelCard, responses=openai_error_responses(401, 404))
async def retrieve_model(model: str, service: ServiceDep) -> ModelCard:
    """One served model (404 model_not_found for another name)."""
    card = next((c for c in _cards(service) if c.id == model), None)
    if card is None:
        service.resolve_model(model)  # says what the models are
        raise ModelNotFound(f"the model {model!r} does not exist on this server")
    return card


def _cards(service: SearchService) -> list[ModelCard]:
    indexes = service.indexes
    return [ModelCard(id=model, created=_created(indexes[index]), genret=ModelInfo(
                index=index, retriever=retriever,
                embeddings=indexes[index].has("dense") and (model == index or retriever == "dense")))
            for model, index, retriever in service.models()]


def _created(index: Index) -> int:
    """When the index was built, in Unix seconds (0 if its manifest's time cannot be read)."""
    try:
        return int(datetime.fromisoformat(index.manifest.created).timestamp())
    except ValueError:
        return 0
