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
from store.registry import STORE_KINDS, open_store
from store.stats import LatencySummary, StoreStats

__all__ = [
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
    "StoreStats",
    "open_store",
]
