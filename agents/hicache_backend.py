"""kvtune's ``lsm`` store as a storage backend (L3) of SGLang's hierarchical cache, with a controller.

SGLang loads it with ``--enable-hierarchical-cache --hicache-storage-backend dynamic
--hicache-storage-backend-extra-config`` and a one-line JSON (or ``@file.json``) naming
``"backend_name": "kvtune", "module_path": "agents.hicache_backend", "class_name":
"KvtuneHiCacheStorage"`` plus the keys below; the README shows the line.

Extra-config keys of its own: ``path`` (required; one store directory per model and TP rank/size is
made under it), ``policy`` (``default`` | ``heuristic`` | ``static:FILE`` | a learned bundle directory;
default ``default``), ``interval_s`` (controller period, default 10; 0 runs no controller), ``guards``
(a mapping of :class:`agents.controller.Guards` fields), ``page_tokens`` (tokens per SGLang page, for
the observation; default 64) and SGLang's ``interface_v1`` (1: the host-pool path).

Pages are opaque bytes whose order depends on the host pool's layout, as SGLang's own file backend
treats them: the first page written fixes the page's byte size and dtype, recorded in the directory
(:data:`PAGE_FORMAT_FILE`); a reopen or a write with another size or dtype raises ``ValueError``.
So the default path needs no host pool; the v1 path reads and writes pages through the registered
pool's ``get_data_page``/``set_from_flat_data_page`` (a copy per page, not zero-copy pointers).

Keys: SGLang's 64-hex-char page hashes are chained sha256 digests (each names its whole prefix), so
they are the store's page digests as they are (:func:`store.pages.plan_of_digests`): nothing is hashed
again. Two layouts, chosen per call by what SGLang passes:

- prefix layout, when a call carries ``extra_info.prefix_keys`` on the v1 path (``"interface_v1": 1``
  with ``"hicache_storage_pass_prefix_keys": true``): the call's pages are the tail of one plan over
  the request's page keys from its first page, so a request's pages are neighbours in key order and a
  call is one store operation: ``batch_exists`` one probe (one seek), ``batch_set_v1`` one probe and
  one atomic ``put_batch``, ``batch_get_v1`` one probe and one ``get_batch``. The store reads pages from
  a plan's first page, so ``batch_get_v1`` also reads the prefix pages it was told about (a store
  read starting mid-plan would remove that cost). A call whose prefix is not stored writes nothing
  (the store stays prefix-closed: a page is stored only under its stored prefix).
- page layout, otherwise: each page is a one-page plan of its own hash, so it is found whatever
  batch it was written or asked in. SGLang's default path has no ``extra_info`` on ``batch_set`` and
  ``batch_get``, so it uses this layout even when ``batch_exists`` gets prefix keys, and costs one
  store operation per page. A request's pages sort by hash: no locality on disk.

A store read with the other layout than it was written misses; it never returns a wrong page (every
read checks the page's full hash).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sglang.srt.mem_cache.hicache_storage import (
    HiCacheStorage,
    HiCacheStorageConfig,
    HiCacheStorageExtraInfo,
)

from agents.controller import Guards, RuntimeController
from agents.registry import make_policy
from store import KVLayout, KVStore, PageMissingError, open_store
from store.pages import DIGEST_BYTES, PagePlan, plan_of_digests

logger = logging.getLogger(__name__)

PAGE_FORMAT_FILE = "hicache-page.json"
STORE_PAGE_SIZE = 8
"""The store's "tokens" per page: a page's bytes are laid out as 8 positions of K and V halves."""
STORE_NAMESPACE = "hicache"
DEFAULT_PAGE_TOKENS = 64


def key_digest(key: str) -> bytes:
    """The 32-byte digest naming ``key``: its bytes for a SHA-256 hex key, else a SHA-256 of the key."""
    try:
        raw = bytes.fromhex(key)
    except ValueError:
        raw = b""
    return raw if len(raw) == DIGEST_BYTES else hashlib.sha256(key.encode()).digest()


def page_plan(keys: list[str]) -> PagePlan:
    """The store plan of pages named by ``keys`` (the first key's page is the plan's first page)."""
    return plan_of_digests([key_digest(key) for key in keys], STORE_PAGE_SIZE, STORE_NAMESPACE)


def rank_namespace(config: HiCacheStorageConfig) -> str:
    """Model, TP rank and size (MLA ranks share one copy), like SGLang's file backend suffix."""
    model = "-".join((config.model_name or "model").split("/"))
    suffix = f"_{config.pp_rank}_{config.pp_size}" if config.pp_size > 1 else ""
    return f"{model}{suffix}" if config.is_mla_model else f"{model}_{config.tp_rank}_{config.tp_size}{suffix}"


class KvtuneHiCacheStorage(HiCacheStorage):
    """A :class:`HiCacheStorage` on kvtune's ``lsm`` store, tuned while it serves by a runtime controller."""

    def __init__(self, storage_config: HiCacheStorageConfig, kwargs: dict[str, Any] | None = None) -> None:
        extra = dict(storage_config.extra_config or {})
        if not extra.get("path"):
            raise ValueError(
                'the kvtune backend needs "path" in --hicache-storage-backend-extra-config: '
                "the directory its stores live in"
            )
        self.storage_config = storage_config
        self.namespace = rank_namespace(storage_config)
        self.directory = Path(extra["path"]) / self.namespace
        self.policy_spec = str(extra.get("policy", "default"))
        self.interval_s = float(extra.get("interval_s", 10.0))
        self.guards = Guards(**extra.get("guards", {}))
        self.page_tokens = int(extra.get("page_tokens", DEFAULT_PAGE_TOKENS))
        self.interface_v1 = bool(extra.get("interface_v1", 0))
        self.policy = make_policy(self.policy_spec)
        self.store: KVStore | None = None
        self.controller: RuntimeController | None = None
        self._format: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        format_file = self.directory / PAGE_FORMAT_FILE
        if format_file.is_file():
            recorded = json.loads(format_file.read_text())
            self._open(int(recorded["page_bytes"]), str(recorded["dtype"]))

    # ------------------------------------------------------------------ the store, opened on first use

    def _open(self, page_bytes: int, dtype: str) -> None:
        if page_bytes % (2 * STORE_PAGE_SIZE):
            raise ValueError(
                f"page of {page_bytes} bytes: the kvtune backend stores pages of a multiple of "
                f"{2 * STORE_PAGE_SIZE} bytes"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        layout = KVLayout(
            layers=1, kv_heads=1, head_dim=page_bytes // (2 * STORE_PAGE_SIZE), dtype=torch.uint8
        )
        self.store = open_store(
            "lsm", self.directory / "lsm", layout, page_size=STORE_PAGE_SIZE, namespace=STORE_NAMESPACE
        )
        self._format = {"page_bytes": page_bytes, "dtype": dtype}
        (self.directory / PAGE_FORMAT_FILE).write_text(json.dumps(self._format) + "\n")
        if self.interval_s > 0:
            self.controller = RuntimeController(
                self.store, self.policy, self.interval_s, self.guards, page_tokens=self.page_tokens
            ).start()
        logger.info("kvtune backend at %s (%s, policy %s)", self.directory, self._format, self.policy_spec)

    def _store_for(self, pages: list[torch.Tensor]) -> KVStore:
        """The open store, opening it for the pages' format on the first write; refuse another format."""
        with self._lock:
            for page in pages:
                page_bytes, dtype = page.numel() * page.element_size(), str(page.dtype).removeprefix("torch.")
                if self.store is None:
                    self._open(page_bytes, dtype)
                elif self._format != {"page_bytes": page_bytes, "dtype": dtype}:
                    raise ValueError(
                        f"{self.directory} holds pages of {self._format}; got {page_bytes} bytes of "
                        f"{dtype}: use another path for another model, page size or KV dtype"
                    )
        assert self.store is not None
        return self.store

    def close(self) -> None:
        """Stop the controller and close the store (SGLang's interface has no close; call it on shutdown)."""
        if self.controller is not None:
            self.controller.close()
        if self.store is not None:
            self.store.close()

    def _record_lookup(self, plan: PagePlan, skip: int = 0) -> None:
        """Feed the controller's reuse sketch the pages looked up (not the prefix pages named again)."""
        if self.controller is not None:
            self.controller.record_lookup(list(plan.digests[skip:]))

    def _prefix(self, extra_info: HiCacheStorageExtraInfo | None) -> list[str] | None:
        """The request's earlier page keys when this call uses the prefix layout, else ``None``."""
        if not self.interface_v1 or extra_info is None or extra_info.prefix_keys is None:
            return None
        return list(extra_info.prefix_keys)

    def _leading_hits(self, plan: PagePlan, skip: int) -> int:
        """Stored pages of ``plan`` from page ``skip`` on, up to the first missing one."""
        if self.store is None:
            return 0
        return max(self.store.probe(plan) - skip, 0)

    def _page_bytes(self, page: torch.Tensor) -> torch.Tensor:
        """A flat page as the store's ``[1, 2, 8, 1, page_bytes / 16]`` bytes."""
        assert self.store is not None
        flat = page.detach().contiguous().view(-1).view(torch.uint8)
        return flat.view(self.store.layout.page_shape(STORE_PAGE_SIZE))

    def _put_page(self, key: str, page: torch.Tensor) -> None:
        store = self._store_for([page])
        with self._write_lock:
            store.put_batch(page_plan([key]), self._page_bytes(page))

    @staticmethod
    def _halves(kv: torch.Tensor) -> torch.Tensor:
        """The store's ``[1, 2, 8 * n, 1, d]`` bytes of n pages as ``[2, n, 8 * d]``: page i's flat bytes
        are ``[0, i]`` then ``[1, i]`` (the store's K and V halves)."""
        return kv.view(2, kv.shape[2] // STORE_PAGE_SIZE, -1)

    # ------------------------------------------------------------------ default path: flat page tensors

    def exists(self, key: str) -> bool:
        return self._leading_hits(page_plan([key]), 0) == 1

    def batch_exists(self, keys: list[str], extra_info: HiCacheStorageExtraInfo | None = None) -> int:
        prefix = self._prefix(extra_info)
        if prefix is not None:
            plan = page_plan(prefix + keys)
            self._record_lookup(plan, len(prefix))
            return min(self._leading_hits(plan, len(prefix)), len(keys))
        self._record_lookup(page_plan(keys))
        for index, key in enumerate(keys):
            if not self.exists(key):
                return index
        return len(keys)

    def set(
        self,
        key: str,
        value: Any | None = None,
        target_location: Any | None = None,
        target_sizes: Any | None = None,
    ) -> bool:
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"set needs the page as a tensor, got {type(value).__name__}")
        self._put_page(key, value)
        return True

    def batch_set(
        self,
        keys: list[str],
        values: Any | None = None,
        target_locations: Any | None = None,
        target_sizes: Any | None = None,
    ) -> bool:
        if values is None or len(values) != len(keys):
            raise ValueError("batch_set needs one page tensor per key")
        return all(self.set(key, value) for key, value in zip(keys, values, strict=True))

    def get(
        self,
        key: str,
        target_location: Any | None = None,
        target_sizes: Any | None = None,
    ) -> torch.Tensor | None:
        if self.store is None or not isinstance(target_location, torch.Tensor):
            return None
        try:
            page = self.store.get_batch(page_plan([key]), 1)
        except PageMissingError:
            return None
        target_location.view(-1).view(torch.uint8).copy_(page.view(-1))
        return target_location

    def batch_get(
        self,
        keys: list[str],
        target_locations: Any | None = None,
        target_sizes: Any | None = None,
    ) -> list[torch.Tensor | None]:
        targets = target_locations or [None] * len(keys)
        pages: list[torch.Tensor | None] = []
        for key, target in zip(keys, targets, strict=True):
            page = self.get(key, target)
            pages.append(page)
            if page is None:  # SGLang stops at the first missing page
                break
        return pages + [None] * (len(keys) - len(pages))

    # ------------------------------------------------------------------ v1 path: the registered host pool

    def _host_pages(self, host_indices: torch.Tensor, n_pages: int) -> list[int]:
        """The host-pool index of each of ``n_pages`` pages (their first token's slot)."""
        return [int(i) for i in host_indices[:: self.mem_pool_host.page_size][:n_pages].tolist()]

    def batch_set_v1(
        self,
        keys: list[str],
        host_indices: torch.Tensor,
        extra_info: HiCacheStorageExtraInfo | None = None,
    ) -> list[bool]:
        pool = self.mem_pool_host
        pages = [pool.get_data_page(index, flat=True) for index in self._host_pages(host_indices, len(keys))]
        prefix = self._prefix(extra_info)
        if prefix is None:
            for key, page in zip(keys, pages, strict=True):
                self._put_page(key, page)
            return [True] * len(keys)
        if not keys:
            return []
        store = self._store_for(pages)
        plan = page_plan(prefix + keys)
        with self._write_lock:  # no other write of this backend evicts the prefix between probe and put
            if store.probe(plan) < len(prefix):
                logger.debug(
                    "%d pages not written: their prefix of %d pages is not stored", len(keys), len(prefix)
                )
                return [False] * len(keys)
            # Positions of the stored prefix are never read by put_batch (it writes from the first
            # missing page on), so they stay uninitialised.
            kv = torch.empty(store.layout.page_shape(STORE_PAGE_SIZE * plan.n_pages), dtype=torch.uint8)
            # numpy copies: torch's run an OpenMP region that waits for a free core on a busy machine
            flat = np.stack([page.detach().reshape(-1).view(torch.uint8).numpy() for page in pages])
            np.copyto(
                self._halves(kv)[:, len(prefix) :].numpy(), flat.reshape(len(keys), 2, -1).transpose(1, 0, 2)
            )
            store.put_batch(plan, kv)
        return [True] * len(keys)

    def batch_get_v1(
        self,
        keys: list[str],
        host_indices: torch.Tensor,
        extra_info: HiCacheStorageExtraInfo | None = None,
    ) -> list[bool]:
        pool = self.mem_pool_host
        prefix = self._prefix(extra_info)
        if prefix is None:
            results: list[bool] = []
            for key, index in zip(keys, self._host_pages(host_indices, len(keys)), strict=True):
                page = self.get(key, pool.get_dummy_flat_data_page())
                if page is None:
                    break
                pool.set_from_flat_data_page(index, page)
                results.append(True)
            return results + [False] * (len(keys) - len(results))
        plan = page_plan(prefix + keys)
        hits = min(self._leading_hits(plan, len(prefix)), len(keys))
        if hits == 0 or self.store is None:
            return [False] * len(keys)
        try:
            pages = self.store.get_batch(plan, len(prefix) + hits)
        except PageMissingError:  # evicted since the probe: a miss
            return [False] * len(keys)
        assert self._format is not None
        read = np.ascontiguousarray(self._halves(pages)[:, len(prefix) :].numpy().transpose(1, 0, 2))
        flat = torch.from_numpy(read).view(hits, -1).view(getattr(torch, self._format["dtype"]))
        for page, index in zip(flat, self._host_pages(host_indices, hits), strict=True):
            pool.set_from_flat_data_page(index, page)
        return [True] * hits + [False] * (len(keys) - hits)
