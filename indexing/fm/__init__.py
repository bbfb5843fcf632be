"""The FM-index component (kind ``fm-index``): every n-gram of every unit, counted, extended and located in compressed
space, for SEAL/UGR-style generative retrieval.

Inside: the unit layout and the build (``_build``: tokenizing, sharding, the manifest entry; ``_tokens``: the
tokenizers and the streamed tokenization), the sharded index (``_shards``) over one ``FMIndex`` a shard (``_index``;
its files ``_files``; the compiled kernels ``_wavelet``, ``_locate``, ``_hot``; ``_suffix_array``), and the query API
every index answers (``_queries``).  numba loads only where an index is built or opened, not with this package.

The names below are what the rest of ``genret.indexing`` uses: the config, building (``build_fm``, the stream that
tokenizes while the corpus is read, and the pieces a distributed build runs a shard at a time), opening, and queries.
"""

from ._build import (
    FM_DIR,
    TOKENIZER_DIR,
    FMConfig,
    build_fm,
    build_shard,
    encode_range,
    fm_component,
    load_fm,
    load_fm_tokenizer,
    unit_tokens,
)
from ._queries import FMQueries, merge_next_tokens
from ._shards import shard_dir
from ._tokens import encode_texts

__all__ = [
    "FM_DIR", "FMConfig", "FMQueries", "TOKENIZER_DIR", "build_fm", "build_shard", "encode_range", "encode_texts",
    "fm_component", "load_fm", "load_fm_tokenizer", "merge_next_tokens", "shard_dir", "unit_tokens",
]
