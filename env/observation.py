"""The observation: a fixed, versioned vector of workload features, store state and current knobs.

Shared by training and deployment. Every entry is normalised into [0, 1]; :data:`FEATURES` documents
the raw quantity, its unit and the normalisation, and the environment's docstring shows the table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from env.actions import ActionMapper
from store import StoreConfig

OBSERVATION_SCHEMA_VERSION = 1
GiB = 1024**3


@dataclass(frozen=True)
class WindowFeatures:
    """Raw measurements of one control window (the units are in :data:`FEATURES`)."""

    arrival_rate_rps: float
    prefix_reuse: float
    hit_token_ratio: float
    mean_prompt_tokens: float
    write_bytes_per_s: float
    read_bytes_per_s: float
    l0_files: float
    pending_compaction_bytes: float
    stall_fraction: float
    blob_garbage_fraction: float
    space_used_fraction: float
    writer_queue_fill: float
    dropped_fraction: float
    mean_ttft_s: float
    store_ram_fraction: float


@dataclass(frozen=True)
class Feature:
    name: str
    unit: str
    scale: str
    """``unit``: already in [0, 1]; ``log:M``: log1p(x)/log1p(M); ``ratio:M``: x/M; all clipped to [0, 1]."""

    def normalise(self, value: float) -> float:
        if math.isnan(value) or value < 0:
            value = 0.0
        if self.scale == "unit":
            result = value
        elif self.scale.startswith("log:"):
            result = math.log1p(value) / math.log1p(float(self.scale[4:]))
        else:
            result = value / float(self.scale[6:])
        return min(max(result, 0.0), 1.0)


FEATURES: tuple[Feature, ...] = (
    Feature("arrival_rate_rps", "requests/s", "log:1000"),
    Feature("prefix_reuse", "share of prompt tokens an infinite cache hits", "unit"),
    Feature("hit_token_ratio", "share of prompt tokens hit (memory + disk)", "unit"),
    Feature("mean_prompt_tokens", "tokens", "log:1000000"),
    Feature("write_bytes_per_s", "device bytes/s written", f"log:{64 * GiB}"),
    Feature("read_bytes_per_s", "device bytes/s read", f"log:{64 * GiB}"),
    Feature("l0_files", "files in L0", "ratio:64"),
    Feature("pending_compaction_bytes", "bytes", f"log:{256 * GiB}"),
    Feature("stall_fraction", "write-stall seconds / window seconds", "unit"),
    Feature("blob_garbage_fraction", "blob garbage bytes / disk bytes", "unit"),
    Feature("space_used_fraction", "disk bytes / budget (2: twice the budget)", "ratio:2"),
    Feature("writer_queue_fill", "queued writes / queue depth", "unit"),
    Feature("dropped_fraction", "pages dropped / pages offered to the writer", "unit"),
    Feature("mean_ttft_s", "seconds", "log:60"),
    Feature("store_ram_fraction", "store RAM / host RAM (the rest is the memory tier)", "unit"),
)


KNOB_STATE = ActionMapper()
"""The knobs the observation reports: the full default action space, whatever subset an agent acts on."""


def observation_names() -> list[str]:
    return [f.name for f in FEATURES] + [f"knob:{name}" for name in KNOB_STATE.names]


def observation_size() -> int:
    return len(FEATURES) + KNOB_STATE.dim


def encode_observation(features: WindowFeatures, config: StoreConfig) -> np.ndarray:
    """The observation vector: normalised features, then the current knobs as units in [0, 1]."""
    raw = [f.normalise(float(getattr(features, f.name))) for f in FEATURES]
    knobs = (KNOB_STATE.to_action(config) + 1.0) / 2.0
    return np.clip(np.concatenate([np.asarray(raw), knobs]), 0.0, 1.0).astype(np.float32)


def feature_value(observation: np.ndarray, name: str) -> float:
    """The normalised value of feature ``name`` in an observation."""
    names = [f.name for f in FEATURES]
    if name not in names:
        raise ValueError(f"unknown feature {name!r}; features: {', '.join(names)}")
    return float(observation[names.index(name)])
