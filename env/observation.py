"""The observation: a fixed, versioned vector of workload features, store state and current knobs.

Shared by training and deployment. Every feature is something a live store (or a serving backend in
front of it) measures itself: lookups and their hits, bytes, L0, stalls, garbage, space, queue, drops,
and page reuse from a bounded sketch of page digests (:class:`env.reuse.ReuseSketch`). Quantities only a
replay knows (TTFT, an infinite cache's reuse) are not in it. :func:`store_window` and
:func:`window_features` turn two :class:`store.StoreStats` snapshots into the features, for the
environment and the runtime controller alike. Every entry is normalised into [0, 1]; :data:`FEATURES`
documents the raw quantity, its unit and the normalisation.

No feature is a byte count or byte rate: bytes scale with the model (a KV page of a 70B model is
hundreds of times a tiny one's), so the device's bytes are divided by the page bytes the store was
asked to move (write and read amplification) and pending compaction by the bytes on disk. A feature
then means the same on a 512x-shrunk replay as on the full-size model, and a policy trained at one scale
reads another's store correctly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from env.actions import ActionMapper
from store import StoreConfig, StoreStats

OBSERVATION_SCHEMA_VERSION = 3
"""3: byte features are ratios of the store's own bytes (2: bytes/s and bytes on absolute scales)."""
MIN_WINDOW_SPAN_S = 1e-3


@dataclass(frozen=True)
class WindowFeatures:
    """Raw measurements of one control window (the units are in :data:`FEATURES`)."""

    arrival_rate_rps: float
    page_reuse: float
    store_hit_ratio: float
    mean_lookup_tokens: float
    write_amplification: float
    read_amplification: float
    l0_files: float
    pending_compaction_fraction: float
    stall_fraction: float
    blob_garbage_fraction: float
    space_used_fraction: float
    writer_queue_fill: float
    dropped_fraction: float
    store_ram_fraction: float


@dataclass(frozen=True)
class StoreWindow:
    """What a store's own counters say about one window: deltas of two snapshots, state at the end."""

    span_s: float
    lookups: int
    pages_looked_up: int
    pages_hit: int
    pages_offered: int
    dropped_pages: int
    page_bytes_written: int
    page_bytes_read: int
    device_write_bytes: int
    device_read_bytes: int
    stall_s: float
    l0_files: int
    pending_compaction_bytes: int
    blob_garbage_bytes: int
    disk_bytes: int
    writer_queue_depth: int


def store_window(before: StoreStats, after: StoreStats, span_s: float) -> StoreWindow:
    """The window between two snapshots of one store (taken with no reopen in between)."""
    hit = after.pages_hit - before.pages_hit
    dropped = after.dropped_pages - before.dropped_pages
    return StoreWindow(
        span_s=span_s,
        lookups=after.probes - before.probes,
        pages_looked_up=hit + after.pages_missed - before.pages_missed,
        pages_hit=hit,
        pages_offered=after.pages_written - before.pages_written + dropped,
        dropped_pages=dropped,
        page_bytes_written=after.bytes_written - before.bytes_written,
        page_bytes_read=after.bytes_read - before.bytes_read,
        device_write_bytes=after.device_write_bytes - before.device_write_bytes,
        device_read_bytes=after.device_read_bytes - before.device_read_bytes,
        stall_s=after.stall_s - before.stall_s,
        l0_files=after.l0_files,
        pending_compaction_bytes=after.pending_compaction_bytes,
        blob_garbage_bytes=after.blob_garbage_bytes,
        disk_bytes=after.disk_bytes,
        writer_queue_depth=after.writer_queue_depth,
    )


def window_features(
    window: StoreWindow,
    page_reuse: float,
    page_tokens: int,
    budget_bytes: int | None,
    writer_queue_depth: int,
    store_ram_fraction: float,
) -> WindowFeatures:
    """The observation's raw features of ``window``; ``page_tokens`` is the tokens one page holds and
    ``store_ram_fraction`` the store's share of the host RAM it was given (0 when no budget is set)."""
    span = max(window.span_s, MIN_WINDOW_SPAN_S)
    return WindowFeatures(
        arrival_rate_rps=window.lookups / span,
        page_reuse=page_reuse,
        store_hit_ratio=window.pages_hit / window.pages_looked_up if window.pages_looked_up else 0.0,
        mean_lookup_tokens=window.pages_looked_up * page_tokens / window.lookups if window.lookups else 0.0,
        write_amplification=_amplification(window.device_write_bytes, window.page_bytes_written),
        read_amplification=_amplification(window.device_read_bytes, window.page_bytes_read),
        l0_files=float(window.l0_files),
        pending_compaction_fraction=window.pending_compaction_bytes / max(window.disk_bytes, 1),
        stall_fraction=min(max(window.stall_s, 0.0) / span, 1.0),
        blob_garbage_fraction=window.blob_garbage_bytes / max(window.disk_bytes, 1),
        space_used_fraction=window.disk_bytes / budget_bytes if budget_bytes else 0.0,
        writer_queue_fill=window.writer_queue_depth / writer_queue_depth,
        dropped_fraction=window.dropped_pages / window.pages_offered if window.pages_offered > 0 else 0.0,
        store_ram_fraction=store_ram_fraction,
    )


def _amplification(device_bytes: int, page_bytes: int) -> float:
    """Device bytes per page byte; device bytes with no page bytes (a flush or compaction of earlier
    writes) count as the feature's ceiling, so "the device is busy with old writes" stays visible."""
    if device_bytes <= 0:
        return 0.0
    return device_bytes / page_bytes if page_bytes > 0 else math.inf


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
    Feature("arrival_rate_rps", "store lookups (one per request)/s", "log:1000"),
    Feature("page_reuse", "share of looked-up pages seen before (sketch)", "unit"),
    Feature("store_hit_ratio", "share of looked-up pages the store held", "unit"),
    Feature("mean_lookup_tokens", "tokens per lookup", "log:1000000"),
    Feature("write_amplification", "device bytes written / page bytes written", "log:16"),
    Feature("read_amplification", "device bytes read / page bytes read", "log:16"),
    Feature("l0_files", "files in L0", "ratio:64"),
    Feature("pending_compaction_fraction", "bytes compaction owes / disk bytes", "ratio:2"),
    Feature("stall_fraction", "write-stall seconds / window seconds", "unit"),
    Feature("blob_garbage_fraction", "blob garbage bytes / disk bytes", "unit"),
    Feature("space_used_fraction", "disk bytes / budget (2: twice the budget)", "ratio:2"),
    Feature("writer_queue_fill", "queued writes / queue depth", "unit"),
    Feature("dropped_fraction", "pages dropped / pages offered to the writer", "unit"),
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
    knobs = [knob.to_unit(getattr(config, knob.name)) for knob in KNOB_STATE.knobs]
    return np.clip(np.concatenate([np.asarray(raw), knobs]), 0.0, 1.0).astype(np.float32)


def feature_value(observation: np.ndarray, name: str) -> float:
    """The normalised value of feature ``name`` in an observation."""
    names = [f.name for f in FEATURES]
    if name not in names:
        raise ValueError(f"unknown feature {name!r}; features: {', '.join(names)}")
    return float(observation[names.index(name)])
