"""The store kinds and their traits, and ``open_store``: the one way to get a store, by kind name.

Every place that needs the kinds (command options, the benchmark, the replay engine) reads
:data:`STORE_KINDS` and :func:`store_kind` instead of naming them; a new kind is one :class:`StoreKind`
entry in :data:`_KINDS`. Besides the named kinds, ``hicache:<module>:<Class>`` opens any SGLang
``HiCacheStorage`` backend through :class:`store.hicache_adapter.HiCacheStore`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from store.base import KVStore
from store.config import StoreConfig
from store.hicache_adapter import HICACHE_FORM, HICACHE_PREFIX, HiCacheStore
from store.layout import KVLayout


@dataclass(frozen=True)
class StoreKind:
    """One store kind: where its class lives (imported on first open) and what callers may rely on."""

    name: str
    module: str
    class_name: str
    on_disk: bool
    """Its pages live in a directory (``path``); without it they live in this process and ``path`` is
    ignored."""

    def store_class(self) -> type[KVStore]:
        if self.name.startswith(HICACHE_PREFIX):
            return HiCacheStore.for_kind(self.name)
        cls: type[KVStore] = getattr(importlib.import_module(self.module), self.class_name)
        return cls


_KINDS = (
    StoreKind("lsm", "store.lsm", "LSMStore", on_disk=True),
    StoreKind("file", "store.filestore", "FileStore", on_disk=True),
    StoreKind("applog", "store.applog", "AppendLogStore", on_disk=True),
    StoreKind("memory", "store.memory", "MemoryStore", on_disk=False),
    StoreKind("sglang-file", "store.hicache_adapter", "HiCacheStore", on_disk=True),
)
_BY_NAME = {kind.name: kind for kind in _KINDS}

STORE_KINDS = tuple(_BY_NAME)
DISK_STORE_KINDS = tuple(kind.name for kind in _KINDS if kind.on_disk)


def store_kind(name: str) -> StoreKind:
    """The kind called ``name`` (a ``hicache:`` form included); ``ValueError`` listing the valid kinds."""
    kind = _BY_NAME.get(name)
    if kind is None and name.startswith(HICACHE_PREFIX):
        return StoreKind(name, "store.hicache_adapter", "HiCacheStore", on_disk=True)
    if kind is None:
        valid = ", ".join((*STORE_KINDS, HICACHE_FORM))
        raise ValueError(f"unknown store kind {name!r}; valid kinds: {valid}")
    return kind


def parse_store_kinds(text: str | None) -> tuple[str, ...]:
    """The kinds a comma-separated list names (``None`` or blank: every kind), each one checked."""
    names = tuple(name.strip() for name in (text or "").split(",") if name.strip())
    return tuple(store_kind(name).name for name in names) if names else STORE_KINDS


def open_store(
    kind: str,
    path: str | Path | None,
    layout: KVLayout,
    page_size: int = 64,
    budget_bytes: int | None = None,
    config: StoreConfig | None = None,
    namespace: str = "default",
) -> KVStore:
    """Open (creating if needed) a store of ``kind`` at ``path``; kinds not on disk ignore ``path``."""
    spec = store_kind(kind)
    if spec.on_disk and path is None:
        raise ValueError(f"store kind {kind!r} keeps its pages on disk: pass a directory as path")
    return spec.store_class()(
        path if spec.on_disk else None, layout, page_size, budget_bytes, config or StoreConfig(), namespace
    )
