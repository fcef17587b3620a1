"""The asynchronous batched writer: a bounded queue drained by one background thread.

Each drain merges up to ``writer_batch_size`` queued put requests into one store write. When the queue
is full, ``writer_overflow="block"`` makes the caller wait and ``"drop"`` discards the request; dropped
pages are counted, since each one is a later cache miss.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

from store.config import StoreConfig
from store.pages import PagePlan

logger = logging.getLogger(__name__)


class PutRequest(NamedTuple):
    plan: PagePlan
    kv: torch.Tensor


class AsyncPageWriter:
    """Writes queued :class:`PutRequest` batches through ``write`` on a daemon thread (started lazily)."""

    def __init__(
        self,
        write: Callable[[Sequence[PutRequest]], int],
        config: StoreConfig,
        on_drop: Callable[[int], None],
    ) -> None:
        self._write = write
        self._on_drop = on_drop
        self._batch_size = config.writer_batch_size
        self._overflow = config.writer_overflow
        self._queue: queue.Queue[PutRequest | None] = queue.Queue(maxsize=config.writer_queue_depth)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._error: BaseException | None = None
        self._closed = False

    def reconfigure(self, config: StoreConfig) -> None:
        """Take the live writer knobs; a new queue depth takes effect once the queue has drained."""
        self._batch_size = config.writer_batch_size
        self._overflow = config.writer_overflow
        if config.writer_queue_depth != self._queue.maxsize:
            self.flush()
            self._queue.maxsize = config.writer_queue_depth

    def queued(self) -> int:
        return self._queue.qsize()

    def submit(self, request: PutRequest, missing_pages: int) -> bool:
        """Queue ``request``; False if the queue was full and the overflow policy dropped it."""
        if self._closed:
            raise RuntimeError("the writer is closed")
        self._raise_background_error()
        self._ensure_thread()
        if self._overflow == "drop":
            try:
                self._queue.put_nowait(request)
            except queue.Full:
                self._on_drop(missing_pages)
                return False
        else:
            self._queue.put(request)
        return True

    def flush(self) -> None:
        if self._thread is not None:
            self._queue.join()
        self._raise_background_error()

    def close(self) -> None:
        """Drain everything queued, then stop the thread."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
        self._raise_background_error()

    def _ensure_thread(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="kvtune-writer", daemon=True)
                self._thread.start()

    def _raise_background_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"the background writer failed: {error}") from error

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            batch: list[PutRequest] = []
            stop = first is None
            if first is not None:
                batch.append(first)
            while not stop and len(batch) < self._batch_size:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                else:
                    batch.append(item)
            try:
                if batch:
                    self._write(batch)
            except BaseException as error:  # surfaced to the caller on its next submit/flush
                logger.exception("background write of %d requests failed", len(batch))
                self._error = error
            finally:
                for _ in range(len(batch) + (1 if stop else 0)):
                    self._queue.task_done()
            if stop:
                return
