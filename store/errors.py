"""Exceptions of the store. A caller may degrade a :class:`PageMissingError` to a cache miss."""

from __future__ import annotations

import errno
import os
from pathlib import Path


class StoreError(Exception):
    """Base class of every error the store raises on purpose."""


class StoreClosedError(StoreError):
    """The store was closed; open it again with :func:`store.open_store`."""


class StoreBusyError(StoreError):
    """Another handle (in this or another process) has the store's directory open."""


class IncompatibleStoreError(StoreError, ValueError):
    """The directory holds a store written with another page size, layout, namespace kind or format."""


class PageMissingError(StoreError, KeyError):
    """Fewer pages are stored than were asked for (a miss: the caller may recompute them)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "page missing"


class StoreFullError(StoreError, OSError):
    """A write failed because the file system holding the store is full; nothing stored was harmed.

    Reads, probes and evictions keep working; writes succeed again once space is freed (``evict``, a
    smaller budget, or room made on the file system).
    """

    def __init__(self, path: Path | None, free_bytes: int, cause: BaseException) -> None:
        super().__init__(
            errno.ENOSPC,
            f"the file system holding {path} is full ({free_bytes} bytes free): {cause}. Free space "
            "(evict pages, open with a smaller budget_bytes, or make room on the device), then write again",
        )
        self.path = path
        self.free_bytes = free_bytes

    def __str__(self) -> str:
        return str(self.strerror)


_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_DISK_FULL_TEXT = ("No space left on device", "Disk quota exceeded")


def free_bytes(path: Path | None) -> int:
    """Bytes an unprivileged writer may still use on the file system of ``path`` (0 if unknown)."""
    if path is None:
        return 0
    try:
        status = os.statvfs(path)
    except OSError:
        return 0
    return status.f_bavail * status.f_frsize


def disk_full_error(path: Path | None, error: BaseException) -> StoreFullError | None:
    """``error`` as a :class:`StoreFullError` if it says the file system is full (RocksDB says so in
    its message only), else ``None``."""
    if isinstance(error, StoreFullError):
        return error
    full = (isinstance(error, OSError) and error.errno in _DISK_FULL_ERRNOS) or any(
        text in str(error) for text in _DISK_FULL_TEXT
    )
    return StoreFullError(path, free_bytes(path), error) if full else None
