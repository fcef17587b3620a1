"""The eviction of the stores that rank their pages in an in-memory :class:`RecencyIndex` (file, applog,
memory): subtree eviction, the budget loop, touches and the live switch of ``eviction_order``."""

from __future__ import annotations

import logging
from abc import abstractmethod

from store.base import KVStore
from store.config import StoreConfig
from store.pages import PagePlan
from store.recency import RecencyIndex

logger = logging.getLogger(__name__)


class IndexedStore(KVStore):
    """A store whose ``_index`` orders its pages for eviction; it deletes pages through :meth:`_drop`."""

    _index: RecencyIndex

    @abstractmethod
    def _drop(self, digests: list[bytes]) -> int:
        """Delete the pages ``digests`` (children before parents) from the store and the index; count them."""

    @abstractmethod
    def _used_bytes(self) -> int:
        """The bytes the budget limits."""

    def _touch(self, plan: PagePlan, n_pages: int) -> None:
        self._index.touch(plan.digests[:n_pages])

    def _apply_live(self, config: StoreConfig) -> None:
        self._index.order = config.eviction_order

    def _evict_subtree(self, plan: PagePlan, index: int) -> int:
        if index >= plan.n_pages or plan.digests[index] not in self._index:
            return 0
        return self._drop(self._index.subtree(plan.digests[index]))

    def _enforce_budget(self) -> None:
        """Evict the index's victims, each with its subtree, until the store fits its budget."""
        if self.budget_bytes is None:
            return
        evicted = 0
        while self._used_bytes() > self.budget_bytes:
            victim = self._index.victim()
            if victim is None:
                break
            evicted += self._drop(self._index.subtree(victim))
        if evicted:
            logger.debug(
                "%s store evicted %d pages to stay within %d bytes", self.kind, evicted, self.budget_bytes
            )
            self._counters.add(evicted_pages=evicted)
