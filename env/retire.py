"""Closing a finished episode's stores off the environment's thread."""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Sequence

from workloads.replay import ReplaySession

logger = logging.getLogger(__name__)


class SessionRetirer:
    """Closes finished replay sessions and removes their store directories on a background thread.

    A reset then starts the next episode without waiting for RocksDB to flush and close stores nobody
    reads again (RocksDB releases the GIL while it does: the environment's thread runs on). One
    retirement runs at a time: the next waits for the last, so finished stores never pile up.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None

    def retire(self, sessions: Sequence[ReplaySession]) -> None:
        """Close ``sessions`` and remove their stores' directories, in the background."""
        self.wait()
        if sessions:
            self._thread = threading.Thread(
                target=_close_and_remove, args=(list(sessions),), name="kvtune-env-retire"
            )
            self._thread.start()

    def wait(self) -> None:
        """Return once every session handed to :meth:`retire` is closed and its directory removed."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def _close_and_remove(sessions: list[ReplaySession]) -> None:
    for session in sessions:
        try:
            session.close()
        except Exception:
            logger.exception("closing a finished episode's store at %s failed", session.store.path)
        if session.store.path is not None:
            shutil.rmtree(session.store.path, ignore_errors=True)
