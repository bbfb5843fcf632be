"""Hybrid retrieval: fuse several retrievers' rankings per query (RRF or normalised score sums, weighted), and the
fitted weights ``genret tune`` stores in an index directory (``hybrid-weights.json``)."""

from ._fusion import (CALIBRATED_MEMBERS, DEFAULT_MEMBER_WEIGHTS, HybridConfig, HybridRetriever, fuse, fused_hits,
                      fused_order, member_contributions)
from ._weights import (DevInfo, IndexInfo, Objective, TunedFusion, effective_hybrid, fitted_default, read_tuned,
                       weights_path, write_tuned)

__all__ = [
    "CALIBRATED_MEMBERS", "DEFAULT_MEMBER_WEIGHTS", "DevInfo", "HybridConfig", "HybridRetriever", "IndexInfo",
    "Objective", "TunedFusion", "effective_hybrid", "fitted_default", "fuse", "fused_hits", "fused_order",
    "member_contributions", "read_tuned", "weights_path", "write_tuned",
]
