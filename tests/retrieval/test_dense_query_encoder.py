"""The dense retriever encodes queries with ``query_encoder``: the direct encoder for the packaged model, giving the
hits sentence-transformers' vectors give."""

import numpy as np
import pytest

from genret.indexing import Index, SentenceTransformerEncoder
from genret.retrieval import DenseRetriever, DenseSearchConfig

QUERIES = ["oil embargo by OAPEC", "who climbed Everest first", "plants turn light into energy"]


@pytest.fixture(scope="module")
def index(tiny_index):
    with Index(tiny_index) as ix:
        yield ix


def test_default_encoder_is_direct_and_answers_as_sentence_transformers(index):
    config = DenseSearchConfig(device="cpu", dtype="float32")
    direct = DenseRetriever(index, config)
    # not sentence-transformers: the direct encoder (query_encoder's choice: tests/indexing/test_query_encoder.py)
    assert not isinstance(direct._encoder, SentenceTransformerEncoder) and direct._encoder.dtype == "float32"
    st = DenseRetriever(index, config, encoder=SentenceTransformerEncoder(index.component("dense").model, "cpu",
                                                                          "float32"))
    for mine, theirs in zip(direct.batch_search(QUERIES, k=5), st.batch_search(QUERIES, k=5)):
        assert [h.unit_id for h in mine] == [h.unit_id for h in theirs]
        np.testing.assert_allclose([h.score for h in mine], [h.score for h in theirs], atol=1e-5)
