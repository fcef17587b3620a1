"""Exceptions of the store. A caller may degrade a :class:`PageMissingError` to a cache miss."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every error the store raises on purpose."""


class StoreClosedError(StoreError):
    """The store was closed; open it again with :func:`store.open_store`."""


class IncompatibleStoreError(StoreError, ValueError):
    """The directory holds a store written with another page size, layout, namespace kind or format."""


class PageMissingError(StoreError, KeyError):
    """Fewer pages are stored than were asked for (a miss: the caller may recompute them)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "page missing"
