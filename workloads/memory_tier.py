"""The host-memory tier in front of the disk store: an LRU of pages, like SGLang's hierarchical cache.

Pages are keyed by their chained digest (:class:`store.pages.PagePlan`), so a page names its whole
prefix. A use refreshes a prompt's pages deepest first, which leaves its first page the most recent:
eviction takes the deep ends of cold prompts before the prefixes they share with others. The tier keeps
no tensors, only a reference to a prompt holding each page, enough to write it back to disk.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class TierPage:
    """A page in the tier: page ``index`` of ``tokens``, used ``hits`` times since it came in."""

    tokens: np.ndarray
    index: int
    hits: int = 0


class HostMemoryTier:
    """An LRU of at most ``capacity_pages`` pages. Not thread-safe (the replay engine is one thread)."""

    def __init__(self, capacity_pages: int) -> None:
        if isinstance(capacity_pages, bool) or not isinstance(capacity_pages, int) or capacity_pages < 0:
            raise ValueError(f"capacity_pages must be an int >= 0, got {capacity_pages!r}")
        self.capacity_pages = capacity_pages
        self._pages: OrderedDict[bytes, TierPage] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pages)

    def match(self, digests: Sequence[bytes]) -> int:
        """Number of leading pages of ``digests`` held in the tier."""
        count = 0
        for digest in digests:
            if digest not in self._pages:
                break
            count += 1
        return count

    def use(self, digests: Sequence[bytes], tokens: np.ndarray, n_hits: int) -> list[TierPage]:
        """Record a request over pages ``digests``: its first ``n_hits`` pages were served from this tier
        (each gains a hit); every page is inserted or refreshed. Returns the pages evicted to make room."""
        for index in range(len(digests) - 1, -1, -1):
            page = self._pages.get(digests[index])
            if page is None:
                self._pages[digests[index]] = TierPage(tokens, index)
                continue
            self._pages.move_to_end(digests[index])
            if index < n_hits:
                page.hits += 1
        evicted = []
        while len(self._pages) > self.capacity_pages:
            evicted.append(self._pages.popitem(last=False)[1])
        return evicted
