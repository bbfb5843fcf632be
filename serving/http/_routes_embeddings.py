"""``POST /v1/embeddings``: OpenAI's embeddings, from an index's dense encoder — the model that embedded its units,
so the vectors compare (cosine: they are L2-normalised) with the index's own.  ``model`` is ``INDEX`` or
``INDEX/dense`` (an index without a dense component: 404).  The inputs are checked on the event loop; the
encoding runs in the model pool, admitted and timed by the gate as any model work."""

from __future__ import annotations

import base64

import numpy as np
from fastapi import APIRouter

from ._deps import DispatcherDep, GateDep, ServiceDep
from ._errors import RequestError, UnsupportedParameter
from ._models_openai import Embedding, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage, openai_error_responses
from ._service import SearchService

router = APIRouter()


@router.post("/v1/embeddings", response_model=EmbeddingResponse,
             responses=openai_error_responses(400, 401, 404, 413, 429, 503, 504))
async def embeddings(req: EmbeddingRequest, service: ServiceDep, dispatcher: DispatcherDep, gate: GateDep):
    """Embeddings of one text or a list of texts by the index's dense encoder (`float` numbers or `base64`
    float32 bytes)."""
    index = service.embedding_index(req.model)
    texts = _texts(req, service)
    dim = service.embedding_dim(index)
    if req.dimensions is not None and req.dimensions != dim:
        raise UnsupportedParameter(f"dimensions {req.dimensions}: this model's embeddings have {dim} dimensions "
                                   "and are not shortened (leave dimensions out)", param="dimensions")
    vectors, tokens = await gate.run(lambda: dispatcher.run(lambda: service.embed(index, texts)))
    as_base64 = req.encoding_format == "base64"
    data = [Embedding(index=i, embedding=_base64(v) if as_base64 else v.tolist()) for i, v in enumerate(vectors)]
    return EmbeddingResponse(data=data, model=req.model or index,
                             usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens))


def _texts(req: EmbeddingRequest, service: SearchService) -> list[str]:
    """The inputs as texts, within the server's limits (``max_batch`` texts of ``max_query_chars``)."""
    one = isinstance(req.input, str)
    texts = [req.input] if one else list(req.input)
    if any(not isinstance(t, str) for t in texts):
        raise UnsupportedParameter("input as token ids is not supported: send text", param="input")
    cfg = service.settings.server
    if not texts:
        raise RequestError("input is an empty list: send a text or a list of texts", param="input")
    if len(texts) > cfg.max_batch:
        raise RequestError(f"at most {cfg.max_batch} inputs per request, got {len(texts)}", param="input")
    for i, text in enumerate(texts):
        where = "input" if one else f"input[{i}]"
        if not text.strip():
            raise RequestError(f"{where} is empty", param="input")
        if len(text) > cfg.max_query_chars:
            raise RequestError(f"{where} is longer than {cfg.max_query_chars} characters ({len(text)})", param="input")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise RequestError(f"{where} is not valid Unicode (lone surrogate)", param="input") from None
    return texts


def _base64(vector: np.ndarray) -> str:
    """OpenAI's base64 encoding: the little-endian float32 bytes."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
