"""The asynchronous batched writer: a bounded queue drained by one background thread.

Each drain merges up to ``writer_batch_size`` queued put requests into one store write. When the queue
is full, ``writer_overflow="block"`` makes the caller wait and ``"drop"`` discards the request; dropped
pages are counted, since each one is a later cache miss. A background write that fails (a full disk,
say) is logged and its pages are counted as dropped and failed: the writer keeps serving the queue.

Closing is race-free: once :meth:`AsyncPageWriter.close` starts, every later or still-waiting
:meth:`~AsyncPageWriter.submit` raises the store's closed error, and every request already accepted is
written before ``close`` returns.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

from store.config import StoreConfig
from store.errors import StoreClosedError
from store.pages import PagePlan

logger = logging.getLogger(__name__)


class PutRequest(NamedTuple):
    plan: PagePlan
    kv: torch.Tensor


class AsyncPageWriter:
    """Writes queued :class:`PutRequest` batches through ``write`` on a daemon thread (started lazily).

    ``on_drop(pages)`` counts pages a full queue discarded; ``on_failure(pages)`` counts pages whose
    background write raised; ``closed_error()`` is the error a submit after close raises.
    """

    def __init__(
        self,
        write: Callable[[Sequence[PutRequest]], int],
        config: StoreConfig,
        on_drop: Callable[[int], None],
        on_failure: Callable[[int], None],
        closed_error: Callable[[], StoreClosedError],
    ) -> None:
        self._write = write
        self._on_drop = on_drop
        self._on_failure = on_failure
        self._closed_error = closed_error
        self._batch_size = config.writer_batch_size
        self._overflow = config.writer_overflow
        self._depth = config.writer_queue_depth
        self._pending: deque[tuple[PutRequest, int]] = deque()
        self._in_flight = 0
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def reconfigure(self, config: StoreConfig) -> None:
        """Take the live writer knobs; a new queue depth takes effect once the queue has drained."""
        if config.writer_queue_depth != self._depth:
            self.flush()
        with self._changed:
            self._batch_size = config.writer_batch_size
            self._overflow = config.writer_overflow
            self._depth = config.writer_queue_depth
            self._changed.notify_all()

    def queued(self) -> int:
        with self._changed:
            return len(self._pending)

    def submit(self, request: PutRequest, missing_pages: int) -> bool:
        """Queue ``request``; False if the queue was full and the overflow policy dropped it."""
        with self._changed:
            while not self._closed and len(self._pending) >= self._depth and self._overflow == "block":
                self._changed.wait()
            if self._closed:
                raise self._closed_error()
            if len(self._pending) >= self._depth:
                self._on_drop(missing_pages)
                return False
            self._pending.append((request, missing_pages))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="kvtune-writer", daemon=True)
                self._thread.start()
            self._changed.notify_all()
        return True

    def flush(self) -> None:
        """Wait until every request queued so far has been written (or counted as failed)."""
        with self._changed:
            while self._pending or self._in_flight:
                self._changed.wait()

    def close(self) -> None:
        """Refuse new requests, write everything accepted, then stop the thread."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _next_batch(self) -> list[tuple[PutRequest, int]] | None:
        """The next batch to write, or None once closed and drained."""
        with self._changed:
            while not self._pending and not self._closed:
                self._changed.wait()
            if not self._pending:
                return None
            batch = [self._pending.popleft() for _ in range(min(self._batch_size, len(self._pending)))]
            self._in_flight = len(batch)
            self._changed.notify_all()  # room in the queue for blocked submitters
            return batch

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self._write([request for request, _ in batch])
            except Exception:
                pages = sum(missing for _, missing in batch)
                logger.exception("background write of %d requests (%d pages) failed", len(batch), pages)
                self._on_failure(pages)
            finally:
                with self._changed:
                    self._in_flight = 0
                    self._changed.notify_all()
