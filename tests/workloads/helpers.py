"""Test helpers: the ideal prefix hits of a workload, computed without the store's page digests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from workloads import Request


def ideal_hit_tokens(requests: Sequence[Request], page_size: int) -> np.ndarray:
    """Per request, the tokens an infinite cache of full pages would hit: the longest run of leading
    pages equal to the leading pages of some earlier request (a trie of page contents)."""
    root: dict[bytes, dict] = {}
    hits = np.zeros(len(requests), dtype=np.int64)
    for index, request in enumerate(requests):
        node, matched, missed = root, 0, False
        for start in range(0, request.tokens.size - page_size + 1, page_size):
            page = request.tokens[start : start + page_size].tobytes()
            if page not in node:
                missed = True
                node[page] = {}
            elif not missed:
                matched += 1
            node = node[page]
        hits[index] = matched * page_size
    return hits


def ideal_ratio(requests: Sequence[Request], page_size: int) -> float:
    return float(ideal_hit_tokens(requests, page_size).sum() / sum(r.prompt_tokens for r in requests))
