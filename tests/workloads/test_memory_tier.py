"""The host-memory tier: an LRU of pages that evicts the deep ends of cold prompts first."""

from __future__ import annotations

import numpy as np
import pytest

from workloads import HostMemoryTier

TOKENS = np.arange(8, dtype=np.uint32)


def test_matches_leading_pages_and_evicts_deepest_first() -> None:
    tier = HostMemoryTier(capacity_pages=4)
    assert tier.use([b"a", b"b", b"c"], TOKENS, n_hits=0) == []
    assert tier.match([b"a", b"b", b"x"]) == 2
    evicted = tier.use([b"a", b"d", b"e"], TOKENS, n_hits=1)
    assert [page.index for page in evicted] == [2]  # "c", the deep end of the colder prompt
    assert tier.match([b"a", b"b"]) == 2 and tier.match([b"a", b"d", b"e"]) == 3


def test_counts_hits_for_write_back() -> None:
    tier = HostMemoryTier(capacity_pages=2)
    tier.use([b"a", b"b"], TOKENS, n_hits=0)
    tier.use([b"a", b"b"], TOKENS, n_hits=2)
    tier.use([b"a"], TOKENS, n_hits=1)
    evicted = tier.use([b"z", b"y"], TOKENS, n_hits=0)
    assert {(p.index, p.hits) for p in evicted} == {(1, 1), (0, 2)}
    with pytest.raises(ValueError, match="capacity_pages"):
        HostMemoryTier(-1)
