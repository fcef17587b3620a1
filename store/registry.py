"""``open_store``: the one way to get a store, by kind name."""

from __future__ import annotations

from pathlib import Path

from store.base import KVStore
from store.config import StoreConfig
from store.hicache_adapter import HICACHE_FORM, HICACHE_PREFIX
from store.layout import KVLayout


def _store_classes() -> dict[str, type[KVStore]]:
    from store.applog import AppendLogStore
    from store.filestore import FileStore
    from store.hicache_adapter import HiCacheStore
    from store.lsm import LSMStore
    from store.memory import MemoryStore

    return {cls.kind: cls for cls in (LSMStore, FileStore, AppendLogStore, MemoryStore, HiCacheStore)}


STORE_KINDS = ("lsm", "file", "applog", "memory", "sglang-file")


def open_store(
    kind: str,
    path: str | Path | None,
    layout: KVLayout,
    page_size: int = 64,
    budget_bytes: int | None = None,
    config: StoreConfig | None = None,
    namespace: str = "default",
) -> KVStore:
    """Open (creating if needed) a store of ``kind`` at ``path``; ``path`` is ignored by ``memory``."""
    classes = _store_classes()
    if kind not in classes and not kind.startswith(HICACHE_PREFIX):
        valid = ", ".join((*STORE_KINDS, HICACHE_FORM))
        raise ValueError(f"unknown store kind {kind!r}; valid kinds: {valid}")
    if kind != "memory" and path is None:
        raise ValueError(f"store kind {kind!r} keeps its pages on disk: pass a directory as path")
    if kind not in classes:  # the hicache form names its backend class
        from store.hicache_adapter import HiCacheStore

        return HiCacheStore(path, layout, page_size, budget_bytes, config or StoreConfig(), namespace, kind)
    return classes[kind](
        None if kind == "memory" else path,
        layout,
        page_size,
        budget_bytes,
        config or StoreConfig(),
        namespace,
    )
