"""SGLang's own HiCache storage backends as store kinds: ``sglang-file`` and ``hicache:<module>:<Class>``.

This is not a re-implementation: every page goes through the installed SGLang's code
(``sglang.__version__`` is logged at open and kept in :attr:`HiCacheStore.backend_label`).

- **Construction** as SGLang's server does it, through ``StorageBackendFactory.create_backend``:
  ``sglang-file`` is its built-in ``file`` backend (``HiCacheFile``); ``hicache:<module>:<Class>`` is its
  ``dynamic`` backend with ``{"backend_name", "module_path", "class_name"}`` in the extra config. The
  ``HiCacheStorageConfig`` is one rank (tp 0 of 1, pp 0 of 1), not MLA, page-first layout, and the store's
  namespace as ``model_name`` (``HiCacheFile`` appends ``_{model}_{tp_rank}_{tp_size}`` to every file
  name, which is how namespaces stay apart). The extra config carries the directory as
  ``file_storage_path`` (``HiCacheFile``'s key) and ``path``.
- **Page keys** are SGLang's own page hash (``sglang.srt.mem_cache.utils.get_hash_str``): per full page
  the hex of ``sha256(previous digest || page tokens as uint32)``, chained from no seed, the keys SGLang's
  radix cache hands its storage backend. A :class:`~store.pages.PagePlan` of this kind holds those
  32-byte digests. Because every key names its whole prefix and ``batch_exists`` counts leading keys, a
  page is only ever reachable with all the pages before it: prefix closure holds by construction.
- **Values** are the flat page tensor SGLang's MHA host pool hands a backend in its default
  ``page_first`` layout (``--hicache-mem-layout page_first``): ``[2 (K, V), page_size, layers, kv_heads,
  head_dim]`` flattened; kvtune's ``[layers, 2, page_size, kv_heads, head_dim]`` pages are permuted to
  it on write and back on read.
- **Calls** as SGLang's cache controller makes them: ``batch_exists(keys)`` once per probe (the count of
  leading keys present), ``batch_set`` and ``batch_get`` at most :data:`STORAGE_BATCH_SIZE` (SGLang's
  128) pages per call, ``batch_get`` into preallocated flat pages (the first ``None`` ends the read).
- **Budget.** ``sglang-file`` hands it to SGLang's ``LRUFileEvictor`` as ``max_size`` (less the kvtune
  header file, so the directory stays within the budget). That evictor tracks each page file's size in
  an LRU list (recency: a read hit, or a write of a key already stored; a ``batch_exists`` hit does not
  count), and when a write would pass ``max_size`` it unlinks the least recently used files until the
  total is at most ``eviction_ratio`` (SGLang default 0.9) of ``max_size`` minus the new page. It evicts
  single files, not prefix subtrees: the continuations of an evicted page stay on disk, unreachable,
  until they are evicted in turn. A write it cannot admit returns ``False`` and is counted as a dropped
  page. The generic ``hicache:`` form knows no capacity handling of the backend and refuses a budget.
- **Stats** are what the adapter observes: calls, pages, wall time (the base class), device bytes from
  the page files' sizes (a page file is the raw flat page, so ``page_bytes`` per page written or read),
  and device operations as ``HiCacheFile`` makes them (a write: an existence check, a temp file, a
  rename; a read: an open; a probe: one existence check per key until the first miss; behind ``hicache:``,
  one per page a call names). ``HiCacheStorage``
  has no delete, so :meth:`KVStore.evict` is not supported.
"""

from __future__ import annotations

import array
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch

from store.base import BackendState, DiskKVStore, PageRecord
from store.config import StoreConfig
from store.diskusage import directory_usage
from store.header import HEADER_FILE, ensure_header_file
from store.pages import PagePlan, as_token_array

logger = logging.getLogger(__name__)

SGLANG_FILE_KIND = "sglang-file"
HICACHE_PREFIX = "hicache:"
HICACHE_FORM = "hicache:<module>:<Class>"
"""Any SGLang ``HiCacheStorage`` backend, built the way SGLang's factory builds a ``dynamic`` one."""
STORAGE_BATCH_SIZE = 128
"""Pages per ``batch_set``/``batch_get`` call: SGLang's ``STORAGE_BATCH_SIZE``."""
PAGE_FILE_SUFFIX = ".bin"
# kvtune's [layers, 2, tokens, heads, dim] page <-> SGLang's page_first [2, tokens, layers, heads, dim]
_TO_PAGE_FIRST = (1, 2, 0, 3, 4)
_FROM_PAGE_FIRST = (2, 0, 1, 3, 4)


@dataclass(frozen=True)
class DeviceOpCosts:
    """File-system operations one page-level backend call costs (what the ``counters`` clock prices)."""

    write: int
    read: int
    exists: int


HICACHE_FILE_OPS = DeviceOpCosts(write=3, read=1, exists=1)
UNKNOWN_BACKEND_OPS = DeviceOpCosts(write=1, read=1, exists=1)


@dataclass(frozen=True)
class BackendSpec:
    """Which ``HiCacheStorage`` backend a kind names, and how SGLang's factory builds it."""

    kind: str
    factory_name: str
    extra_config: dict[str, str]
    budget_supported: bool
    op_costs: DeviceOpCosts


@dataclass(frozen=True)
class SGLangAPI:
    """The pieces of the installed SGLang this adapter uses."""

    version: str
    factory: Any
    storage_config: Any
    page_hash: Callable[..., Any]


@cache
def sglang_api() -> SGLangAPI:
    """Import SGLang's storage modules (slow: ``import sglang`` loads transformers), once per process."""
    try:
        import sglang
        from sglang.srt.mem_cache.hicache_storage import HiCacheStorageConfig
        from sglang.srt.mem_cache.storage.backend_factory import StorageBackendFactory
        from sglang.srt.mem_cache.utils import get_hash_str
    except ImportError as error:
        raise ValueError(
            f"the {SGLANG_FILE_KIND} and {HICACHE_FORM} store kinds run SGLang's own code, which does not "
            f"import here ({error}); install it as `make install` does, or use another kind"
        ) from error
    # the hash is a C++ extension built or loaded on first use: do it now, not inside the first timed put
    get_hash_str([0], None, 1)
    return SGLangAPI(sglang.__version__, StorageBackendFactory, HiCacheStorageConfig, get_hash_str)


def backend_spec(kind: str) -> BackendSpec:
    """The backend ``kind`` names: ``sglang-file`` or ``hicache:<module>:<Class>``."""
    if kind == SGLANG_FILE_KIND:
        return BackendSpec(kind, "file", {}, budget_supported=True, op_costs=HICACHE_FILE_OPS)
    parts = kind.split(":")
    if len(parts) != 3 or parts[0] + ":" != HICACHE_PREFIX or not parts[1] or not parts[2]:
        raise ValueError(
            f"store kind {kind!r} is not of the form {HICACHE_FORM} "
            "(e.g. hicache:sglang.srt.mem_cache.hicache_storage:HiCacheFile)"
        )
    module_path, class_name = parts[1], parts[2]
    extra = {"backend_name": class_name, "module_path": module_path, "class_name": class_name}
    return BackendSpec(kind, "dynamic", extra, budget_supported=False, op_costs=UNKNOWN_BACKEND_OPS)


def storage_config(
    model_name: str,
    extra_config: dict[str, Any],
    *,
    tp_rank: int = 0,
    tp_size: int = 1,
    page_first: bool = True,
) -> Any:
    """SGLang's ``HiCacheStorageConfig`` for an MHA model on TP rank ``tp_rank`` of ``tp_size`` (no
    pipeline or context parallelism), with a ``page_first`` (or layer-first) host pool."""
    return sglang_api().storage_config(
        tp_rank=tp_rank,
        tp_size=tp_size,
        pp_rank=0,
        pp_size=1,
        attn_cp_rank=0,
        attn_cp_size=1,
        is_mla_model=False,
        enable_storage_metrics=False,
        is_page_first_layout=page_first,
        model_name=model_name,
        extra_config=extra_config,
    )


def sglang_page_keys(page_hash: Callable[..., Any], tokens: Any, page_size: int) -> list[str]:
    """SGLang's page keys of every full page of ``tokens`` (a trailing partial page has none)."""
    ids = as_token_array(tokens)
    n_tokens = ids.size // page_size * page_size
    if n_tokens == 0:
        return []
    keys = page_hash(array.array("I", ids[:n_tokens].tobytes()), None, page_size)
    return list(keys)


class HiCacheStore(DiskKVStore):
    """A ``HiCacheStorage`` backend of the installed SGLang behind kvtune's store interface."""

    kind = SGLANG_FILE_KIND

    @classmethod
    def for_kind(cls, kind: str) -> type[HiCacheStore]:
        """The store class of ``kind``: ``sglang-file`` or a ``hicache:<module>:<Class>`` form."""
        backend_spec(kind)
        return cls if kind == SGLANG_FILE_KIND else _hicache_class(kind)

    # ------------------------------------------------------------------ open

    def _start(self, config: StoreConfig) -> None:
        spec = backend_spec(self.kind)
        if self.budget_bytes is not None and not spec.budget_supported:
            raise ValueError(
                f"store kind {self.kind!r}: kvtune knows no capacity handling of this backend, so it "
                f"cannot keep it within budget_bytes={self.budget_bytes}; open it with budget_bytes=None "
                f"(or use {SGLANG_FILE_KIND}, whose LRU file evictor enforces a budget)"
            )
        self._spec = spec
        self._api = sglang_api()
        self.backend_label = f"SGLang {self._api.version} {spec.factory_name} backend ({spec.kind})"
        self._written_bytes = 0
        self._read_bytes = 0
        # a file backend's pages are counted on disk; of any other, the adapter knows only what it wrote
        self._keys_written: set[str] | None = None if spec.factory_name == "file" else set()
        self._pages = 0
        self._open_backend()

    def _open_backend(self) -> None:
        ensure_header_file(self.path, self.layout, self.page_size, self.kind)
        directory = str(self.path)
        extra: dict[str, Any] = {**self._spec.extra_config, "file_storage_path": directory, "path": directory}
        if self._spec.budget_supported:
            extra["max_size"] = self._max_size_bytes()
        self._backend = self._api.factory.create_backend(
            self._spec.factory_name, storage_config(self.namespace, extra), None
        )
        backend_dir = getattr(self._backend, "file_path", directory)
        if os.path.realpath(backend_dir) != os.path.realpath(directory):
            raise ValueError(
                f"SGLang's backend writes to {backend_dir}, not the store's path {directory} "
                "(SGLANG_HICACHE_FILE_BACKEND_STORAGE_DIR overrides it): unset that variable"
            )
        self._suffix = getattr(self._backend, "config_suffix", "") + PAGE_FILE_SUFFIX
        self._pages = self._count_pages()
        logger.info("opened %s at %s", self.backend_label, directory)

    def _max_size_bytes(self) -> int:
        """The page-file cap for SGLang's evictor: the budget less the header file (0 disables eviction)."""
        if self.budget_bytes is None:
            return 0  # explicit, so SGLANG_HICACHE_FILE_BACKEND_MAX_SIZE cannot impose a cap of its own
        header_bytes = (self.path / HEADER_FILE).stat().st_size
        cap = self.budget_bytes - header_bytes
        if cap < self.page_bytes:
            raise ValueError(
                f"budget_bytes={self.budget_bytes} holds no page: it must be at least the "
                f"{header_bytes}-byte header plus one {self.page_bytes}-byte page"
            )
        return cap

    # ------------------------------------------------------------------ keys and values

    def _plan_tokens(self, tokens: Any) -> PagePlan:
        """The page plan of ``tokens`` under SGLang's page hash (``digests[k]``: page k's sha256 digest)."""
        keys = sglang_page_keys(self._api.page_hash, tokens, self.page_size)
        return PagePlan(self.namespace, self.page_size, tuple(bytes.fromhex(key) for key in keys))

    def _flat_page(self, page: torch.Tensor) -> torch.Tensor:
        return page.permute(_TO_PAGE_FIRST).contiguous().flatten()

    def _kvtune_page(self, flat: torch.Tensor) -> torch.Tensor:
        shape = self.layout.page_shape(self.page_size)
        page_first = flat.view(shape[1], shape[2], shape[0], shape[3], shape[4])
        return page_first.permute(_FROM_PAGE_FIRST)

    # ------------------------------------------------------------------ hooks

    def _probe_plan(self, plan: PagePlan) -> int:
        if not plan.n_pages:
            return 0
        hits = int(self._backend.batch_exists([digest.hex() for digest in plan.digests]))
        self._counters.add(device_ops=self._spec.op_costs.exists * min(hits + 1, plan.n_pages))
        return hits

    def _read_pages(self, plan: PagePlan, n_pages: int) -> list[torch.Tensor | None]:
        keys = [digest.hex() for digest in plan.digests[:n_pages]]
        targets = torch.empty((n_pages, self.page_bytes // self.layout.itemsize), dtype=self.layout.dtype)
        pages: list[torch.Tensor | None] = []
        for start in range(0, n_pages, STORAGE_BATCH_SIZE):
            batch = keys[start : start + STORAGE_BATCH_SIZE]
            got = self._backend.batch_get(batch, list(targets[start : start + len(batch)]))
            self._counters.add(device_ops=self._spec.op_costs.read * len(batch))
            for flat in got:
                if flat is None:
                    return [*pages, None]
                pages.append(self._kvtune_page(flat))
                self._read_bytes += self.page_bytes
        return pages

    def _touch(self, plan: PagePlan, n_pages: int) -> None:
        """Nothing to do: SGLang's backend keeps its own recency (a read hit touches the page)."""

    def _write_records(self, records: list[PageRecord]) -> None:
        pages_before = self._pages
        landed = 0
        for start in range(0, len(records), STORAGE_BATCH_SIZE):
            batch = records[start : start + STORAGE_BATCH_SIZE]
            keys = [plan.digests[index].hex() for plan, index, _ in batch]
            values = [self._flat_page(page) for _, _, page in batch]
            self._counters.add(device_ops=self._spec.op_costs.write * len(batch))
            if self._backend.batch_set(keys, values):
                written = keys
            else:
                # batch_set says only that some page failed: ask which pages made it
                written = [key for key in keys if self._backend.exists(key)]
                refused = len(keys) - len(written)
                self._counters.add(dropped_pages=refused)
                logger.warning("%s refused %d of %d pages", self.backend_label, refused, len(keys))
            landed += len(written)
            self._written_bytes += len(written) * self.page_bytes
            if self._keys_written is not None:
                self._keys_written.update(written)
        self._pages = pages_before + landed
        if self.budget_bytes is not None:
            # SGLang's evictor unlinks page files inside batch_set without telling: count what is left
            self._pages = self._count_pages()
            self._counters.add(evicted_pages=pages_before + landed - self._pages)

    def _evict_subtree(self, plan: PagePlan, index: int) -> int:
        if index >= plan.n_pages or not self._backend.exists(plan.digests[index].hex()):
            return 0
        raise NotImplementedError(
            f"{self.kind}: SGLang's HiCacheStorage interface has no delete, so pages cannot be evicted on "
            "request; open it with budget_bytes to let the backend evict on its own"
        )

    def _enforce_budget(self) -> None:
        """Nothing to do: SGLang's evictor admits every write within the budget (see the module notes)."""

    def _backend_state(self) -> BackendState:
        disk, files = directory_usage(self.path)
        return BackendState(
            pages_stored=self._pages,
            live_bytes=self._pages * self.page_bytes,
            disk_bytes=disk,
            files=files,
            device_write_bytes=self._written_bytes,
            device_read_bytes=self._read_bytes,
        )

    def _count_pages(self) -> int:
        """Pages stored: a file backend's page files of this namespace, else the keys written so far."""
        if self._keys_written is not None:
            return len(self._keys_written)
        with os.scandir(self.path) as entries:
            return sum(1 for entry in entries if entry.name.endswith(self._suffix))

    def _apply_live(self, config: StoreConfig) -> None:
        """Nothing to do: the knobs are the LSM store's and the writer's (which the base class applies)."""

    def _reopen(self, config: StoreConfig) -> None:
        self._close()
        self._open_backend()

    def _close(self) -> None:
        close = getattr(self._backend, "close", None)
        if callable(close):
            close()


@cache
def _hicache_class(kind: str) -> type[HiCacheStore]:
    """A :class:`HiCacheStore` of the ``hicache:`` form ``kind`` (one class per kind, made once)."""
    kind_class: type[HiCacheStore] = type(HiCacheStore.__name__, (HiCacheStore,), {"kind": kind})
    return kind_class
