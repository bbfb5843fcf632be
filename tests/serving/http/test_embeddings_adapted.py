"""/v1/embeddings on an index whose dense encoder was fine-tuned (``dense-adapted``): the served vectors are the
adapted encoder's, as the dense search's are; ``dense.adapted=false`` serves the base encoder's."""

from __future__ import annotations

import numpy as np
import pytest

from genret.indexing import ADAPTED_DENSE, Index, write_adapted_dense
from genret.retrieval import DensePair, DenseRetriever, DenseSearchConfig, DenseTrainConfig, fine_tune_dense
from genret.serving.http._embeddings import Embedder

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")]


@pytest.fixture(scope="module")
def adapted_index(dense_bm25_index):
    out = dense_bm25_index("emb-adapted")
    root = out.parent
    pairs = [DensePair("Who created Python?", (("p-python", 1),)), DensePair("oil embargo", (("p-oil", 1),)),
             DensePair("highest mountain", (("p-everest", 1),)), DensePair("plant pigment", (("p-photo", 2),))]
    with Index(out) as index:
        stats = fine_tune_dense(index, pairs, root / "model", DenseTrainConfig(epochs=3, lr=2e-4, batch_size=4,
                                                                                device="cpu"), progress=False)
    write_adapted_dense(out, root / "model", trained=stats, device="cpu", progress=False)
    return out


def test_served_embeddings_are_the_adapted_encoders(adapted_index):
    q = ["Who created the Python programming language?"]
    with Index(adapted_index) as index:
        assert index.has(ADAPTED_DENSE)
        tuned = DenseRetriever(index, DenseSearchConfig(device="cpu"))
        base = DenseRetriever(index, DenseSearchConfig(device="cpu", adapted=False))
        served, _ = Embedder("cpu").embed(index, q)
        untrained, _ = Embedder("cpu", adapted=False).embed(index, q)
        assert np.allclose(served, tuned._encoder.encode(q), atol=1e-2)
        assert np.allclose(untrained, base._encoder.encode(q), atol=1e-2)
        assert not np.allclose(served, untrained, atol=1e-2)
        assert Embedder("cpu").dim(index) == served.shape[1]
