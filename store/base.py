"""The store interface every kind implements, with the validation and bookkeeping they share.

Guarantees of every :class:`KVStore`:

- thread-safe: any method may be called from any thread;
- ``get_batch`` returns the exact tensor that was put for those tokens, or raises ``PageMissingError``
  (a miss the caller may degrade to recompute); it never returns another prompt's pages;
- bad input raises ``ValueError`` saying what to fix, before anything is written;
- after ``close`` every method raises ``StoreClosedError``.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from store.buffers import empty_tensor
from store.config import StoreConfig
from store.errors import PageMissingError, StoreClosedError, disk_full_error
from store.layout import KVLayout
from store.pages import PagePlan, as_token_array, plan_pages
from store.stats import BackendState, OpCounters, StoreStats
from store.writer import AsyncPageWriter, PutRequest

logger = logging.getLogger(__name__)

MAX_PAGE_SIZE = 1 << 16


@dataclass(frozen=True, slots=True)
class PageRecord:
    """One page to write: page ``index`` of ``plan``, whose tensor is ``page``."""

    plan: PagePlan
    index: int
    page: torch.Tensor

    def __iter__(self) -> Iterator[Any]:
        """Unpack as ``plan, index, page`` (the baselines' write loops do)."""
        return iter((self.plan, self.index, self.page))


class KVStore(ABC):
    """A paged KV-cache store. Subclasses implement the ``_`` hooks; callers use the public methods."""

    kind: str = ""
    backend_label: str = "kvtune"
    """Whose code serves the pages (a kind that adapts another project's backend names it and its version)."""

    def __init__(
        self,
        path: str | Path | None,
        layout: KVLayout,
        page_size: int,
        budget_bytes: int | None,
        config: StoreConfig,
        namespace: str,
    ) -> None:
        if not isinstance(layout, KVLayout):
            raise ValueError(f"layout must be a KVLayout, got {type(layout).__name__}")
        if (
            isinstance(page_size, bool)
            or not isinstance(page_size, int)
            or not 1 <= page_size <= MAX_PAGE_SIZE
        ):
            raise ValueError(f"page_size must be an int in [1, {MAX_PAGE_SIZE}], got {page_size!r}")
        if budget_bytes is not None and (
            isinstance(budget_bytes, bool) or not isinstance(budget_bytes, int) or budget_bytes <= 0
        ):
            raise ValueError(f"budget_bytes must be a positive int or None (unlimited), got {budget_bytes!r}")
        if not isinstance(config, StoreConfig):
            raise ValueError(f"config must be a StoreConfig, got {type(config).__name__}")
        if not isinstance(namespace, str) or not namespace or "\x00" in namespace:
            raise ValueError(f"namespace must be a non-empty string without NUL, got {namespace!r}")
        try:
            namespace.encode()
        except UnicodeEncodeError as error:
            raise ValueError(
                f"namespace {namespace!r} is not encodable as UTF-8 ({error.reason}): use valid text"
            ) from None
        self.path = self._own_path(path)
        self.layout = layout
        self.page_size = page_size
        self.budget_bytes = budget_bytes
        self.namespace = namespace
        self._lock = threading.RLock()
        self._counters = OpCounters()
        config = self._bounded(config)
        self._config = config
        self._closed = False
        self._writer = AsyncPageWriter(
            self._store_requests, config, self._count_dropped, self._count_failed_async, self._closed_error
        )
        self._start(config)

    # ------------------------------------------------------------------ public surface

    @property
    def config(self) -> StoreConfig:
        return self._config

    @property
    def page_bytes(self) -> int:
        return self.layout.page_bytes(self.page_size)

    def plan(self, tokens: Any) -> PagePlan:
        """The page plan (chained digests) of ``tokens``; validates the token ids.

        Every method that takes ``tokens`` also takes this plan instead, so a caller hashes a request's
        pages once for its probe, read and write. A plan made for another namespace or page size
        raises ``ValueError``.
        """
        if isinstance(tokens, PagePlan):
            if (tokens.namespace, tokens.page_size) != (self.namespace, self.page_size):
                raise ValueError(
                    f"the plan was made for namespace {tokens.namespace!r} and page_size {tokens.page_size}; "
                    f"this store has {self.namespace!r} and {self.page_size}: "
                    "make it with this store's plan()"
                )
            return tokens
        return self._plan_tokens(tokens)

    def _plan_tokens(self, tokens: Any) -> PagePlan:
        """How this kind names the pages of ``tokens`` (kvtune's chained digests; a kind may name its own)."""
        return plan_pages(tokens, self.page_size, self.namespace)

    def put_batch(self, tokens: Any, kv: torch.Tensor) -> int:
        """Store every full page of ``tokens`` not yet stored, in one atomic write (the lsm store writes
        large pages in atomic batches, in page order, so an interrupted put keeps a prefix of the pages);
        return pages written."""
        request = self._prepare_put(tokens, kv)
        return self._store_requests([request])

    def put_async(self, tokens: Any, kv: torch.Tensor) -> int:
        """Queue the missing pages for the background writer; return pages queued (0 if none or dropped).

        The writer keeps a reference to ``kv`` until it is written: do not modify it in place.
        """
        request = self._prepare_put(tokens, kv)
        with self._lock:
            self._check_open()
            missing = request.plan.n_pages - self._probe_plan(request.plan)
        if missing <= 0:
            return 0
        return missing if self._writer.submit(request, missing) else 0

    def flush(self, durable: bool = True) -> None:
        """Wait until every queued write is in the store; with ``durable``, also make every write so far
        survive a crash of this process (the lsm store syncs its WAL, or flushes its memtables when pages
        skip the WAL)."""
        self._check_open()
        self._writer.flush()
        if durable:
            with self._lock:
                self._check_open()
                self._flush_durable()

    def probe(self, tokens: Any) -> int:
        """Number of leading full pages of ``tokens`` that are stored."""
        plan = self.plan(tokens)
        started = time.perf_counter()
        with self._lock:
            self._check_open()
            hits = self._probe_plan(plan)
        self._counters.add(probes=1, pages_hit=hits, pages_missed=plan.n_pages - hits)
        self._counters.record("probe", time.perf_counter() - started)
        return hits

    def get_batch(self, tokens: Any, n_pages: int) -> torch.Tensor:
        """KV of the first ``n_pages`` pages of ``tokens``: ``[layers, 2, n_pages*page_size, heads, dim]``."""
        plan = self.plan(tokens)
        if isinstance(n_pages, bool) or not isinstance(n_pages, int) or n_pages < 0:
            raise ValueError(f"n_pages must be a non-negative int, got {n_pages!r}")
        if n_pages > plan.n_pages:
            raise ValueError(
                f"n_pages={n_pages} exceeds the {plan.n_pages} full pages of the prompt "
                f"(page_size={self.page_size}); ask for at most probe(tokens) pages"
            )
        started = time.perf_counter()
        out = empty_tensor(self.layout.page_shape(self.page_size * n_pages), self.layout.dtype)
        out_bytes = out.view(torch.uint8).numpy()
        with self._lock:
            self._check_open()
            missing = self._read_into(plan, n_pages, out_bytes) if n_pages else None
            if missing is not None:
                raise PageMissingError(
                    f"page {missing} of {n_pages} is not stored (probe(tokens) tells how many are); "
                    "treat it as a cache miss"
                )
            if n_pages:
                self._touch(plan, n_pages)
        self._counters.add(gets=1, pages_read=n_pages, bytes_read=n_pages * self.page_bytes)
        self._counters.record("get", time.perf_counter() - started)
        return out

    def stats(self) -> StoreStats:
        with self._lock:
            self._check_open()
            state = self._backend_state()
            counts = self._counters.counts()
        latencies = self._counters.latencies(counts)
        return StoreStats.of(self.kind, counts, state, latencies, self._writer.queued())

    def writer_queue_depth(self) -> int:
        """Pages queued for the background writer: ``stats().writer_queue_depth`` without a snapshot."""
        return self._writer.queued()

    def apply(self, config: StoreConfig) -> list[str]:
        """Switch to ``config``: live where the kind allows it, reopening where it must.

        Returns the knobs that needed a reopen (empty if everything was applied live). The same config
        again costs nothing: a controller or environment re-applying its last choice waits on no lock.
        """
        if not isinstance(config, StoreConfig):
            raise ValueError(f"config must be a StoreConfig, got {type(config).__name__}")
        self._check_open()
        config = self._bounded(config)
        if config == self._config:
            return []
        reopen = self._config.needs_reopen(config)
        if reopen:
            self._writer.flush()
        with self._lock:
            self._check_open()
            if reopen:
                logger.info("%s store reopens to apply %s", self.kind, ", ".join(reopen))
                self._reopen(config)
            else:
                self._apply_live(config)
            self._config = config
        self._writer.reconfigure(config)
        return reopen

    def evict(self, tokens: Any, n_pages: int = 0) -> int:
        """Drop page ``n_pages`` of ``tokens`` and everything stored after it; return pages evicted."""
        plan = self.plan(tokens)
        if (
            isinstance(n_pages, bool)
            or not isinstance(n_pages, int)
            or not 0 <= n_pages < max(plan.n_pages, 1)
        ):
            raise ValueError(f"n_pages must be an int in [0, {plan.n_pages}), got {n_pages!r}")
        with self._lock:
            self._check_open()
            evicted = self._evict_subtree(plan, n_pages)
        self._counters.add(evicted_pages=evicted)
        return evicted

    def close(self) -> None:
        """Write every accepted ``put_async`` request, then close; later calls raise ``StoreClosedError``."""
        self._writer.close()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._close()

    def __enter__(self) -> KVStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(path={self.path}, page_size={self.page_size}, ns={self.namespace!r})"

    # ------------------------------------------------------------------ shared machinery

    def _closed_error(self) -> StoreClosedError:
        return StoreClosedError(f"the {self.kind} store at {self.path} is closed; open it again to use it")

    def _check_open(self) -> None:
        if self._closed:
            raise self._closed_error()

    def _prepare_put(self, tokens: Any, kv: torch.Tensor) -> PutRequest:
        n_tokens: int | None = None
        if isinstance(tokens, PagePlan):
            plan = self.plan(tokens)
        else:
            array = as_token_array(tokens)
            plan, n_tokens = self._plan_tokens(array), array.size
        expected = self.layout.page_shape(self.page_size)
        if not isinstance(kv, torch.Tensor):
            raise ValueError(f"kv must be a torch.Tensor, got {type(kv).__name__}")
        if kv.layout != torch.strided or kv.is_meta:
            where = "on the meta device" if kv.is_meta else f"with layout {kv.layout}"
            raise ValueError(f"kv is a tensor {where}, which holds no values: pass a dense tensor with data")
        if kv.dtype != self.layout.dtype:
            raise ValueError(
                f"kv has dtype {kv.dtype}; this store holds {self.layout.dtype}: convert it first"
            )
        shape_ok = kv.dim() == 5 and (kv.shape[0], kv.shape[1], kv.shape[3], kv.shape[4]) == (
            expected[0],
            expected[1],
            expected[3],
            expected[4],
        )
        if not shape_ok:
            raise ValueError(
                f"kv has shape {tuple(kv.shape)}; expected [layers={expected[0]}, 2, n, "
                f"kv_heads={expected[3]}, head_dim={expected[4]}]"
            )
        n_positions = kv.shape[2]
        if n_positions < plan.n_pages * self.page_size:
            raise ValueError(
                f"kv covers {n_positions} positions but tokens hold {plan.n_pages} full pages "
                f"({plan.n_pages * self.page_size} positions): pass the KV of every full page"
            )
        if n_tokens is not None and n_positions > n_tokens:
            raise ValueError(
                f"kv covers {n_positions} positions but only {n_tokens} tokens were given: "
                "pass the tokens the KV was computed from"
            )
        return PutRequest(plan=plan, kv=kv.detach().to("cpu"))

    def _store_requests(self, requests: Sequence[PutRequest]) -> int:
        """Write the missing pages of ``requests`` in one atomic backend write; enforce the budget."""
        started = time.perf_counter()
        with self._lock:
            self._check_open()
            records: list[PageRecord] = []
            pending: set[bytes] = set()
            for request in requests:
                plan = request.plan
                first = self._probe_plan(plan)
                # One split makes every page's view: slicing page by page cost ~3 us a page.
                pages = request.kv.narrow(2, 0, plan.n_pages * self.page_size).split(self.page_size, dim=2)
                for index in range(first, plan.n_pages):
                    if plan.digests[index] in pending:
                        continue
                    pending.add(plan.digests[index])
                    records.append(PageRecord(plan, index, pages[index]))
            if records:
                try:
                    self._write_records(records)
                    self._enforce_budget()
                except Exception as error:
                    self._counters.add(write_errors=1)
                    try:
                        self._recover_from_write_error()
                    except Exception:
                        logger.exception("%r could not recover from a failed write", self)
                    full = disk_full_error(self.path, error)
                    if full is None:
                        raise
                    raise full from error
        self._counters.add(puts=1, pages_written=len(records), bytes_written=len(records) * self.page_bytes)
        self._counters.record("put", time.perf_counter() - started)
        return len(records)

    def _count_dropped(self, pages: int) -> None:
        self._counters.add(dropped_pages=pages)

    def _count_failed_async(self, pages: int) -> None:
        """A failed background write: its pages are dropped (``write_errors`` was counted by the write)."""
        self._counters.add(dropped_pages=pages)

    # ------------------------------------------------------------------ backend hooks (called under lock)

    def _own_path(self, path: str | Path | None) -> Path | None:
        """The directory this store's pages live in: none for a kind whose pages live in this process
        (``path`` is ignored)."""
        return None

    @abstractmethod
    def _start(self, config: StoreConfig) -> None:
        """Set the store up (in ``path``, which exists, for a kind on disk) and open it: the
        constructor's last step."""

    @abstractmethod
    def _probe_plan(self, plan: PagePlan) -> int: ...

    @abstractmethod
    def _read_pages(self, plan: PagePlan, n_pages: int) -> Iterable[torch.Tensor | None]:
        """Pages ``0 .. n_pages-1`` in order (``None``: a miss); may be lazy, so a kind can read the next
        pages while ``get_batch`` copies the ones already read."""

    def _read_into(self, plan: PagePlan, n_pages: int, out_bytes: np.ndarray) -> int | None:
        """Copy pages ``0..n_pages-1`` of ``plan`` into ``out_bytes`` (the output tensor's bytes); return
        the index of the first page not stored, or None once every page is copied."""
        for index, page in enumerate(self._read_pages(plan, n_pages)):
            if page is None:
                return index
            # numpy copies on this thread; torch's copy_ runs an OpenMP region that, on a busy
            # machine, waits milliseconds for a second core (measured +47-67% warm get throughput)
            np.copyto(
                out_bytes[:, :, index * self.page_size : (index + 1) * self.page_size],
                page.view(torch.uint8).numpy(),
            )
        return None

    @abstractmethod
    def _touch(self, plan: PagePlan, n_pages: int) -> None:
        """Record that pages ``0 .. n_pages-1`` were used (recency for the capacity manager)."""

    @abstractmethod
    def _write_records(self, records: list[PageRecord]) -> None: ...

    @abstractmethod
    def _evict_subtree(self, plan: PagePlan, index: int) -> int: ...

    @abstractmethod
    def _enforce_budget(self) -> None: ...

    @abstractmethod
    def _backend_state(self) -> BackendState: ...

    @abstractmethod
    def _apply_live(self, config: StoreConfig) -> None: ...

    @abstractmethod
    def _reopen(self, config: StoreConfig) -> None: ...

    @abstractmethod
    def _close(self) -> None: ...

    def _bounded(self, config: StoreConfig) -> StoreConfig:
        """``config`` with the knobs this kind bounds by its budget clamped (most kinds bound none)."""
        return config

    def _flush_durable(self) -> None:  # noqa: B027 (a hook with nothing to do for most kinds)
        """Make every write so far survive a crash of this process (most kinds already do)."""

    def _recover_from_write_error(self) -> None:  # noqa: B027 (most kinds stay usable by themselves)
        """Make the store usable again after a failed write (reads and evictions must keep working)."""


class DiskKVStore(KVStore):
    """A store whose pages live in the directory ``path``: it creates the directory before it opens."""

    path: Path

    def _own_path(self, path: str | Path | None) -> Path:
        """``path``, created: the directory this store's pages live in."""
        if path is None:
            raise ValueError(f"store kind {self.kind!r} keeps its pages on disk: pass a directory as path")
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        return directory
