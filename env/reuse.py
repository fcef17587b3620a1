"""Page reuse a live store can measure: a bounded sketch of the page digests it was asked about.

An infinite cache's reuse needs every page ever seen; serving can only afford a bounded memory. The
sketch keeps the most recently seen ``capacity`` page digests (8 bytes each, least recently seen
dropped first), so its reuse is the hit ratio of an LRU cache of ``capacity`` pages: equal to the
infinite cache's while the working set fits, lower once it does not.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable

DIGEST_BYTES = 8
DEFAULT_CAPACITY = 1 << 16


class ReuseSketch:
    """Counts looked-up pages already seen; :meth:`take_window` returns the share since the last call.

    Thread-safe: a serving backend records lookups while the controller's thread takes windows.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"sketch capacity must be a positive int (page digests kept), got {capacity!r}")
        self.capacity = capacity
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()
        self._pages = 0
        self._reused = 0

    def record(self, page_ids: Iterable[bytes]) -> int:
        """Record one lookup of ``page_ids`` (digests, 8 bytes or more); return how many were seen before."""
        reused = pages = 0
        with self._lock:
            for page_id in page_ids:
                digest = page_id[:DIGEST_BYTES]
                pages += 1
                if digest in self._seen:
                    reused += 1
                    self._seen.move_to_end(digest)
                else:
                    self._seen[digest] = None
                    if len(self._seen) > self.capacity:
                        self._seen.popitem(last=False)
            self._pages += pages
            self._reused += reused
        return reused

    def take_window(self) -> float:
        """Share of pages recorded since the last call that were seen before (0 when none were recorded)."""
        with self._lock:
            share = self._reused / self._pages if self._pages else 0.0
            self._pages = self._reused = 0
        return share

    def __len__(self) -> int:
        return len(self._seen)
