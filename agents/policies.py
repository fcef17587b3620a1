"""Policies: observation -> :class:`store.StoreConfig`, behind one interface (built by name in
:mod:`agents.registry`).

``default`` keeps RocksDB's own option defaults (:data:`ROCKSDB_DEFAULTS`: the WAL on, tensors in blob
files), the tuner's baseline; ``static:FILE`` a fixed config from a JSON/YAML file (e.g. the best an
Optuna study found); ``heuristic`` rules in the spirit of the paper's adaptive controller; a directory
or ``.zip`` path is a learned policy bundle.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from env.observation import feature_value
from store import StoreConfig

MiB = 1024**2
ROCKSDB_DEFAULTS = StoreConfig(
    write_buffer_size=64 * MiB,
    max_write_buffer_number=2,
    level0_file_num_compaction_trigger=4,
    level0_slowdown_writes_trigger=20,
    level0_stop_writes_trigger=36,
    target_file_size_base=64 * MiB,
    max_bytes_for_level_base=256 * MiB,
    max_bytes_for_level_multiplier=10.0,
    enable_blob_garbage_collection=False,
    blob_garbage_collection_age_cutoff=0.25,
    blob_garbage_collection_force_threshold=1.0,
    disable_wal=False,
)
"""RocksDB's own option defaults, pinned here so they stay the baseline when kvtune's defaults move
(tensors still in blob files, kvtune's runtime services at their defaults; the WAL on, where kvtune's
default turns it off)."""


class Policy(ABC):
    """Chooses the store's knobs from an observation. Stateless between calls unless stated."""

    name: str = ""

    @abstractmethod
    def decide(self, observation: np.ndarray, current: StoreConfig) -> StoreConfig:
        """The config to run the next window with, given the last window's observation."""


class DefaultPolicy(Policy):
    name = "default"

    def __init__(self, config: StoreConfig | None = None) -> None:
        self.config = config or ROCKSDB_DEFAULTS

    def decide(self, observation: np.ndarray, current: StoreConfig) -> StoreConfig:
        return self.config


class StaticPolicy(Policy):
    """A fixed config, read from a JSON or YAML mapping of knob -> value (``{"knobs": {...}}`` too)."""

    name = "static"

    def __init__(self, config: StoreConfig, source: str = "") -> None:
        self.config = config
        self.source = source

    @classmethod
    def load(cls, path: str | Path) -> StaticPolicy:
        path = Path(path)
        if not path.is_file():
            raise ValueError(
                f"static policy file {path} does not exist; write a JSON/YAML map of knob: value"
            )
        text = path.read_text()
        data: Any = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        if isinstance(data, dict) and isinstance(data.get("knobs"), dict):
            data = data["knobs"]
        if not isinstance(data, dict):
            raise ValueError(f"static policy file {path} must hold a mapping of knob: value")
        return cls(StoreConfig.from_dict(data), source=str(path))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"policy": "static", "knobs": self.config.to_dict()}, indent=2) + "\n")
        return path

    def decide(self, observation: np.ndarray, current: StoreConfig) -> StoreConfig:
        return self.config


class HeuristicPolicy(Policy):
    """Rules like the paper's controller, on the last window's normalised observation. Each rule costs
    no host RAM (memtables would be taken from the memory tier) and only acts on a signal:

    - the store writes -> the WAL off: it doubles the bytes the disk writes, which delays prefetches
      and backups, and for a cache a page lost in a crash is a miss, not an error;
    - write pressure (stalls, a writer queue over half full, dropped pages) -> writer batches doubled
      up to 128 pages;
    - the store over 110% of its budget, or blob garbage over half its bytes -> blob GC on, its age
      cutoff widened by 0.25 up to 1 (GC rewrites live blobs, so it waits for a clear excess).

    Without a signal the config is kept.
    """

    name = "heuristic"

    def decide(self, observation: np.ndarray, current: StoreConfig) -> StoreConfig:
        stall = feature_value(observation, "stall_fraction")
        queue = feature_value(observation, "writer_queue_fill")
        dropped = feature_value(observation, "dropped_fraction")
        garbage = feature_value(observation, "blob_garbage_fraction")
        space = feature_value(observation, "space_used_fraction")
        changes: dict[str, Any] = {}
        if feature_value(observation, "write_amplification") > 0.0:
            changes.update(disable_wal=True)
        if stall > 0.01 or queue > 0.5 or dropped > 0.0:
            changes.update(
                writer_batch_size=max(current.writer_batch_size, min(current.writer_batch_size * 2, 128)),
            )
        if space > 0.55 or garbage > 0.5:  # space_used is normalised by 2: 0.55 is 110% of the budget
            changes.update(
                enable_blob_garbage_collection=True,
                blob_garbage_collection_age_cutoff=min(
                    current.blob_garbage_collection_age_cutoff + 0.25, 1.0
                ),
            )
        return StoreConfig.from_dict(changes, base=current) if changes else current
