"""The in-memory recency index of the baseline stores: stored pages in eviction order, and their prefix tree.

Why a tree: evicting a page must evict every stored page that continues it, or the stored set would stop
being prefix-closed (a later put of the evicted page would silently bring its old continuations back).
A page knows its parent by the parent's chained digest, so the tree costs one reference per page.

Orders (``StoreConfig.eviction_order``):

- ``"lru"``: touching pages ``0 .. n-1`` moves them to the most-recent end deepest first, so an ancestor is
  always more recent than its descendants and the least recently used page is a leaf: eviction takes
  leaves first.
- ``"fifo"``: insertion order; reads move nothing. The oldest page is usually a prefix's first page, and
  evicting it takes its whole subtree.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from store.base import BackendState, PageRecord
from store.diskusage import directory_usage
from store.pages import PagePlan


@dataclass(slots=True)
class PageEntry:
    """One stored page: its size as the store counts it, its depth (1 = first page) and its parent."""

    nbytes: int
    depth: int
    parent: bytes | None


def parent_of(plan: PagePlan, index: int) -> bytes | None:
    """The chained digest of page ``index``'s parent (``None`` for a prompt's first page)."""
    return plan.digests[index - 1] if index else None


class RecencyIndex:
    """Pages by chained digest, oldest first, with the children of every page."""

    def __init__(self, order: str) -> None:
        self.order = order
        self.live_bytes = 0
        self._entries: OrderedDict[bytes, PageEntry] = OrderedDict()
        self._children: dict[bytes, bytes | set[bytes]] = {}
        """A page's children: most pages have one, kept bare (a set costs ~200 bytes a page)."""

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, digest: object) -> bool:
        return digest in self._entries

    def add(self, digest: bytes, entry: PageEntry) -> None:
        """Insert (or replace) a page as the most recent one."""
        old = self._entries.pop(digest, None)
        if old is not None:
            self.live_bytes -= old.nbytes
        self._entries[digest] = entry
        self.live_bytes += entry.nbytes
        if entry.parent is not None:
            self._link(entry.parent, digest)

    def touch(self, digests: Sequence[bytes]) -> None:
        """Record a use of the prefix ``digests`` (pages 0..n-1 of one prompt); LRU order only."""
        if self.order != "lru":
            return
        for digest in reversed(digests):
            if digest in self._entries:
                self._entries.move_to_end(digest)

    def touch_written(self, records: Iterable[PageRecord]) -> None:
        """After a write, touch each prompt's prefix down to its deepest new page.

        New pages are added parents first; this moves every parent back in front of its children.
        """
        deepest: dict[int, tuple[PagePlan, int]] = {}
        for record in records:
            known = deepest.get(id(record.plan))
            if known is None or record.index > known[1]:
                deepest[id(record.plan)] = (record.plan, record.index)
        for plan, index in deepest.values():
            self.touch(plan.digests[: index + 1])

    def victim(self) -> bytes | None:
        """The page eviction should take next (with its subtree), or ``None`` if nothing is stored."""
        return next(iter(self._entries), None)

    def subtree(self, digest: bytes) -> list[bytes]:
        """``digest`` and every stored page that continues it, children before their parents."""
        order: list[bytes] = []
        stack = [digest]
        while stack:
            node = stack.pop()
            order.append(node)
            stack.extend(self._children_of(node))
        order.reverse()
        return order

    def remove(self, digest: bytes) -> PageEntry:
        """Forget a page (remove its children first: see :meth:`subtree`)."""
        entry = self._entries.pop(digest)
        self.live_bytes -= entry.nbytes
        self._children.pop(digest, None)
        if entry.parent is not None:
            self._unlink(entry.parent, digest)
        return entry

    def _children_of(self, digest: bytes) -> tuple[bytes, ...] | set[bytes]:
        children = self._children.get(digest)
        if children is None:
            return ()
        return (children,) if isinstance(children, bytes) else children

    def _link(self, parent: bytes, child: bytes) -> None:
        children = self._children.get(parent)
        if children is None or children == child:
            self._children[parent] = child
        elif isinstance(children, bytes):
            self._children[parent] = {children, child}
        else:
            children.add(child)

    def _unlink(self, parent: bytes, child: bytes) -> None:
        children = self._children.get(parent)
        if children == child:
            del self._children[parent]
        elif isinstance(children, set):
            children.discard(child)
            if len(children) == 1:
                self._children[parent] = children.pop()

    def load(self, pages: dict[bytes, tuple[PageEntry, int]]) -> list[bytes]:
        """Replace the index with the pages a store found on open, each with the time it was written.

        Returns the orphans left out: pages whose prefix is not stored (a store should delete them).
        Written time orders FIFO; for LRU a page counts as used whenever a continuation of it was
        written, so ancestors come out more recent than their descendants, as :meth:`touch` keeps them.
        """
        children: dict[bytes, list[bytes]] = {}
        roots: list[bytes] = []
        for digest, (entry, _) in pages.items():
            if entry.parent is None:
                roots.append(digest)
            else:
                children.setdefault(entry.parent, []).append(digest)
        reachable = _reachable(roots, children, pages)
        times = {digest: pages[digest][1] for digest in reachable}
        if self.order == "lru":
            for digest in sorted(reachable, key=lambda c: -pages[c][0].depth):
                parent = pages[digest][0].parent
                if parent is not None and times[digest] > times[parent]:
                    times[parent] = times[digest]
            ranked = sorted(reachable, key=lambda c: (times[c], -pages[c][0].depth))
        else:
            ranked = sorted(reachable, key=lambda c: (times[c], pages[c][0].depth))
        self.live_bytes = 0
        self._entries = OrderedDict()
        self._children = {}
        for digest in ranked:
            self.add(digest, pages[digest][0])
        return [digest for digest in pages if digest not in reachable]


def _reachable(
    roots: list[bytes], children: dict[bytes, list[bytes]], pages: dict[bytes, tuple[PageEntry, int]]
) -> set[bytes]:
    """Pages connected to a first page through stored parents of consistent depth."""
    found: set[bytes] = set()
    stack = [digest for digest in roots if pages[digest][0].depth == 1]
    while stack:
        digest = stack.pop()
        found.add(digest)
        depth = pages[digest][0].depth
        stack.extend(child for child in children.get(digest, ()) if pages[child][0].depth == depth + 1)
    return found


def disk_state(path: Path, index: RecencyIndex, written_bytes: int, read_bytes: int) -> BackendState:
    """The :class:`BackendState` of a disk store that indexes its pages in memory (file, applog)."""
    disk, files = directory_usage(path)
    return BackendState(
        pages_stored=len(index),
        live_bytes=index.live_bytes,
        disk_bytes=disk,
        files=files,
        device_write_bytes=written_bytes,
        device_read_bytes=read_bytes,
    )
