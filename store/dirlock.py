"""One open handle per store directory, enforced with an advisory lock on the directory itself.

Two handles on one directory would each index its pages in memory and evict the other's, or (the append
log) append to the same segment at the same offsets. The lock is ``flock`` on the directory: it conflicts
between any two handles, in one process or in two, and the kernel drops it when a process dies, so a
crash never leaves a stale lock behind. (The LSM store relies on RocksDB's own ``LOCK`` file instead.)
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from store.errors import StoreBusyError


def lock_directory(path: Path, kind: str) -> int:
    """Lock ``path`` for a ``kind`` store; returns the descriptor that holds the lock (see :func:`unlock`)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreBusyError(
            f"the {kind} store at {path} is already open (in this or another process): close that handle "
            "first, or give each tenant its own directory"
        ) from None
    return fd


def unlock(fd: int) -> None:
    os.close(fd)  # closing the descriptor releases the flock
