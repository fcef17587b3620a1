"""kvtune's disk KV-cache store: an LSM-tree store and the baselines it is measured against."""

from store.base import KVStore
from store.config import KnobSpec, StoreConfig
from store.errors import (
    IncompatibleStoreError,
    PageMissingError,
    StoreBusyError,
    StoreClosedError,
    StoreError,
    StoreFullError,
)
from store.layout import KVLayout
from store.registry import DISK_STORE_KINDS, STORE_KINDS, StoreKind, open_store, parse_store_kinds, store_kind
from store.stats import LatencySummary, StoreStats

__all__ = [
    "DISK_STORE_KINDS",
    "STORE_KINDS",
    "IncompatibleStoreError",
    "KVLayout",
    "KVStore",
    "KnobSpec",
    "LatencySummary",
    "PageMissingError",
    "StoreBusyError",
    "StoreClosedError",
    "StoreConfig",
    "StoreError",
    "StoreFullError",
    "StoreKind",
    "StoreStats",
    "open_store",
    "parse_store_kinds",
    "store_kind",
]
