"""Policies: observation -> :class:`store.StoreConfig`, behind one interface (built by name in
:mod:`agents.registry`).

``default`` keeps StoreConfig's defaults (RocksDB's own, tensors in blob files); ``static:FILE`` a fixed
config from a JSON/YAML file (e.g. the best an Optuna study found); ``heuristic`` rules in the spirit of
the paper's adaptive controller; a directory or ``.zip`` path is a learned policy bundle.
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


class Policy(ABC):
    """Chooses the store's knobs from an observation. Stateless between calls unless stated."""

    name: str = ""

    @abstractmethod
    def decide(self, observation: np.ndarray, current: StoreConfig) -> StoreConfig:
        """The config to run the next window with, given the last window's observation."""


class DefaultPolicy(Policy):
    name = "default"

    def __init__(self, config: StoreConfig | None = None) -> None:
        self.config = config or StoreConfig()

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
    """Rules like the paper's controller, from the last window's normalised observation.

    - write pressure (stalls, a full writer queue, dropped pages) -> bigger memtables, more of them,
      later L0 triggers, larger writer batches;
    - blob garbage pushing the store over its budget -> blob GC on, with a wider age cutoff;
    - read-heavy and calm -> back towards the defaults (fewer L0 files to search).
    """

    name = "heuristic"

    def decide(self, observation: np.ndarray, current: StoreConfig) -> StoreConfig:
        stall = feature_value(observation, "stall_fraction")
        queue = feature_value(observation, "writer_queue_fill")
        dropped = feature_value(observation, "dropped_fraction")
        garbage = feature_value(observation, "blob_garbage_fraction")
        space = feature_value(observation, "space_used_fraction")
        base = StoreConfig()
        changes: dict[str, Any] = {}
        if stall > 0.01 or queue > 0.5 or dropped > 0.0:
            c = current  # grow up to a cap, never shrink: a knob already above its cap (set elsewhere) stays
            changes.update(
                write_buffer_size=_grow(c.write_buffer_size, c.write_buffer_size * 2, 256 * 1024**2),
                max_write_buffer_number=_grow(c.max_write_buffer_number, c.max_write_buffer_number + 1, 6),
                level0_file_num_compaction_trigger=_grow(
                    c.level0_file_num_compaction_trigger, c.level0_file_num_compaction_trigger * 2, 16
                ),
                level0_slowdown_writes_trigger=_grow(
                    c.level0_slowdown_writes_trigger, c.level0_slowdown_writes_trigger * 2, 64
                ),
                level0_stop_writes_trigger=_grow(
                    c.level0_stop_writes_trigger, max(c.level0_stop_writes_trigger * 2, 64), 128
                ),
                writer_batch_size=_grow(c.writer_batch_size, c.writer_batch_size * 2, 128),
            )
        elif stall == 0.0 and queue < 0.1:
            changes.update(
                level0_file_num_compaction_trigger=max(
                    current.level0_file_num_compaction_trigger // 2, base.level0_file_num_compaction_trigger
                )
            )
        if space > 0.5 or garbage > 0.2:  # space_used is normalised by 2: 0.5 means at the budget
            changes.update(
                enable_blob_garbage_collection=True,
                blob_garbage_collection_age_cutoff=min(
                    current.blob_garbage_collection_age_cutoff + 0.25, 1.0
                ),
            )
        return StoreConfig.from_dict(changes, base=current) if changes else current


def _grow(value: int, grown: int, cap: int) -> int:
    """``grown`` capped at ``cap``, but never below ``value``."""
    return max(value, min(grown, cap))
