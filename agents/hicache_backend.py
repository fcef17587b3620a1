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

Keys: SGLang's 64-hex-char page hashes are chained (each names its whole prefix), so each page is
stored under its own hash, as a one-page prompt of the store whose 8 "tokens" are the hash's 32 bytes.
Locality: ``extra_info.prefix_keys`` (``hicache_storage_pass_prefix_keys``) is accepted and not yet
used for the layout: pages sort by hash, so a prompt's pages are not neighbours on disk and a
``batch_exists`` costs one store probe per page up to the first miss.
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

logger = logging.getLogger(__name__)

PAGE_FORMAT_FILE = "hicache-page.json"
KEY_WORDS = 8
"""A page hash's 32 bytes as the store's "tokens" (uint32 ids): the store's page size."""
DEFAULT_PAGE_TOKENS = 64


def key_tokens(key: str) -> np.ndarray:
    """The 8 uint32 "tokens" naming ``key``: its 32 bytes for a SHA-256 hex key, else a SHA-256 of it."""
    try:
        raw = bytes.fromhex(key)
    except ValueError:
        raw = b""
    if len(raw) != 4 * KEY_WORDS:
        raw = hashlib.sha256(key.encode()).digest()
    return np.frombuffer(raw, dtype="<u4")


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
        format_file = self.directory / PAGE_FORMAT_FILE
        if format_file.is_file():
            recorded = json.loads(format_file.read_text())
            self._open(int(recorded["page_bytes"]), str(recorded["dtype"]))

    # ------------------------------------------------------------------ the store, opened on first use

    def _open(self, page_bytes: int, dtype: str) -> None:
        if page_bytes % (2 * KEY_WORDS):
            raise ValueError(
                f"page of {page_bytes} bytes: the kvtune backend stores pages of a multiple of "
                f"{2 * KEY_WORDS} bytes"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        layout = KVLayout(layers=1, kv_heads=1, head_dim=page_bytes // (2 * KEY_WORDS), dtype=torch.uint8)
        self.store = open_store(
            "lsm", self.directory / "lsm", layout, page_size=KEY_WORDS, namespace="hicache"
        )
        self._format = {"page_bytes": page_bytes, "dtype": dtype}
        (self.directory / PAGE_FORMAT_FILE).write_text(json.dumps(self._format) + "\n")
        if self.interval_s > 0:
            self.controller = RuntimeController(
                self.store, self.policy, self.interval_s, self.guards, page_tokens=self.page_tokens
            ).start()
        logger.info("kvtune backend at %s (%s, policy %s)", self.directory, self._format, self.policy_spec)

    def _store_for(self, page: torch.Tensor) -> KVStore:
        """The open store, opening it for ``page``'s format on the first write; refuse another format."""
        page_bytes, dtype = page.numel() * page.element_size(), str(page.dtype).removeprefix("torch.")
        with self._lock:
            if self.store is None:
                self._open(page_bytes, dtype)
            elif self._format != {"page_bytes": page_bytes, "dtype": dtype}:
                raise ValueError(
                    f"{self.directory} holds pages of {self._format}; got {page_bytes} bytes of {dtype}: "
                    "use another path for another model, page size or KV dtype"
                )
        assert self.store is not None
        return self.store

    def close(self) -> None:
        """Stop the controller and close the store (SGLang's interface has no close; call it on shutdown)."""
        if self.controller is not None:
            self.controller.close()
        if self.store is not None:
            self.store.close()

    # ------------------------------------------------------------------ default path: flat page tensors

    def exists(self, key: str) -> bool:
        return self.store is not None and self.store.probe(key_tokens(key)) == 1

    def batch_exists(self, keys: list[str], extra_info: HiCacheStorageExtraInfo | None = None) -> int:
        if self.controller is not None:
            self.controller.record_lookup([key_tokens(key).tobytes() for key in keys])
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
        store = self._store_for(value)
        flat = value.detach().contiguous().view(-1).view(torch.uint8)
        store.put_batch(key_tokens(key), flat.view(store.layout.page_shape(KEY_WORDS)))
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
            page = self.store.get_batch(key_tokens(key), 1)
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

    def _host_page(self, host_indices: torch.Tensor, index: int) -> int:
        return int(host_indices[index * self.mem_pool_host.page_size])

    def batch_set_v1(
        self,
        keys: list[str],
        host_indices: torch.Tensor,
        extra_info: HiCacheStorageExtraInfo | None = None,
    ) -> list[bool]:
        pool = self.mem_pool_host
        return [
            self.set(key, pool.get_data_page(self._host_page(host_indices, i), flat=True))
            for i, key in enumerate(keys)
        ]

    def batch_get_v1(
        self,
        keys: list[str],
        host_indices: torch.Tensor,
        extra_info: HiCacheStorageExtraInfo | None = None,
    ) -> list[bool]:
        pool = self.mem_pool_host
        results: list[bool] = []
        for i, key in enumerate(keys):
            page = self.get(key, pool.get_dummy_flat_data_page())
            if page is None:
                break
            pool.set_from_flat_data_page(self._host_page(host_indices, i), page)
            results.append(True)
        return results + [False] * (len(keys) - len(results))
