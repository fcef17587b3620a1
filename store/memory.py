"""The in-memory baseline: an LRU of encoded pages within the byte budget (SGLang's host-memory tier).

Values are kept encoded (header + tensor bytes) so every read goes through the same check as the disk
kinds: a value that is not the asked page's is a miss, never a wrong tensor. Nothing survives ``close``.
"""

from __future__ import annotations

import torch

from store.base import BackendState, PageRecord
from store.codec import decode_value, encode_value
from store.config import StoreConfig
from store.indexed import IndexedStore
from store.pages import PagePlan
from store.recency import PageEntry, RecencyIndex, parent_of


class MemoryStore(IndexedStore):
    """Pages in a dict, evicted least-recently-used (or first-in) leaves first within ``budget_bytes``."""

    kind = "memory"

    def _start(self, config: StoreConfig) -> None:
        self._values: dict[bytes, bytes] = {}
        self._index = RecencyIndex(config.eviction_order)

    def _probe_plan(self, plan: PagePlan) -> int:
        for index, digest in enumerate(plan.digests):
            if digest not in self._values:
                return index
        return plan.n_pages

    def _read_pages(self, plan: PagePlan, n_pages: int) -> list[torch.Tensor | None]:
        pages: list[torch.Tensor | None] = []
        for digest in plan.digests[:n_pages]:
            value = self._values.get(digest)
            pages.append(None if value is None else decode_value(value, self.layout, self.page_size, digest))
        return pages

    def _write_records(self, records: list[PageRecord]) -> None:
        for plan, index, page in records:
            digest = plan.digests[index]
            value = encode_value(self.layout, self.page_size, digest, page)
            self._values[digest] = value
            self._index.add(digest, PageEntry(len(value), index + 1, parent_of(plan, index)))
        self._index.touch_written(records)

    def _drop(self, digests: list[bytes]) -> int:
        for digest in digests:
            del self._values[digest]
            self._index.remove(digest)
        return len(digests)

    def _used_bytes(self) -> int:
        return self._index.live_bytes

    def _backend_state(self) -> BackendState:
        return BackendState(
            pages_stored=len(self._values),
            live_bytes=self._index.live_bytes,
            disk_bytes=0,
            files=0,
            device_write_bytes=0,
            device_read_bytes=0,
        )

    def _reopen(self, config: StoreConfig) -> None:
        """Nothing to reopen in memory: the pages stay, the new knobs apply."""
        self._apply_live(config)

    def _close(self) -> None:
        self._values.clear()
        self._index = RecencyIndex(self._config.eviction_order)
