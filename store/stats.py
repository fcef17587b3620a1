"""Typed statistics snapshot of a store, and the thread-safe counters behind it."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any

import numpy as np

LATENCY_SAMPLES = 4096
OPS = ("put", "probe", "get")


@dataclass(frozen=True)
class LatencySummary:
    """Calls of one operation, their total time, and the p50 and p99 of the latest ``samples``.

    The percentiles are computed when first read: most snapshots (the replay's and the environment's,
    several per window) never read them, and sorting the samples was half the cost of a snapshot.
    """

    count: int = 0
    total_s: float = 0.0
    samples: tuple[float, ...] = field(default=(), repr=False, compare=False)
    """The latest :data:`LATENCY_SAMPLES` latencies, oldest first."""

    @cached_property
    def _percentiles(self) -> tuple[float, float]:
        if not self.samples:
            return 0.0, 0.0
        p50, p99 = np.percentile(self.samples, [50, 99])
        return float(p50), float(p99)

    @property
    def p50_s(self) -> float:
        return self._percentiles[0]

    @property
    def p99_s(self) -> float:
        return self._percentiles[1]

    def to_dict(self) -> dict[str, float]:
        return {"count": self.count, "p50_s": self.p50_s, "p99_s": self.p99_s, "total_s": self.total_s}


@dataclass(frozen=True, kw_only=True)
class OpCounts:
    """The operation counters of a store, cumulative since open: what :class:`OpCounters` counts."""

    puts: int = 0
    probes: int = 0
    gets: int = 0
    pages_written: int = 0
    pages_read: int = 0
    bytes_written: int = 0
    bytes_read: int = 0
    pages_hit: int = 0
    pages_missed: int = 0
    dropped_pages: int = 0
    evicted_pages: int = 0
    write_errors: int = 0
    """Writes that raised (put_batch, or a background write whose pages then count as dropped)."""
    device_ops: int = 0
    knobs_clamped: int = 0
    """Knob values a config asked for that the store bounded by its budget (:mod:`store.knob_bounds`)."""


@dataclass(frozen=True, kw_only=True)
class DeviceCounters:
    """The device counters a backend reports, cumulative since open (with :class:`OpCounts`'
    ``device_ops``, what the replay engine's ``counters`` clock prices)."""

    device_write_bytes: int = 0
    device_read_bytes: int = 0
    stall_s: float = 0.0


@dataclass(frozen=True, kw_only=True)
class BackendState(DeviceCounters):
    """What a backend reports of itself for :class:`StoreStats`: its sizes and :class:`DeviceCounters`."""

    pages_stored: int
    live_bytes: int
    disk_bytes: int
    files: int
    l0_files: int = 0
    pending_compaction_bytes: int = 0
    blob_live_bytes: int = 0
    blob_garbage_bytes: int = 0


@dataclass(frozen=True, kw_only=True)
class StoreStats(OpCounts, BackendState):
    """A snapshot of one store: its :class:`OpCounts` and :class:`BackendState` fields, its latencies.

    Counters are cumulative since open; sizes are current. ``device_*`` and ``stall_s`` are what the
    replay engine's ``counters`` clock prices: bytes the device wrote (for ``lsm``: WAL, flush,
    compaction and blob-GC rewrites included), bytes it read, and file-system objects created, opened,
    checked or removed.
    """

    kind: str
    put_latency: LatencySummary
    probe_latency: LatencySummary
    get_latency: LatencySummary
    writer_queue_depth: int = 0

    @classmethod
    def of(
        cls,
        kind: str,
        counts: OpCounts,
        state: BackendState,
        latencies: tuple[LatencySummary, LatencySummary, LatencySummary],
        writer_queue_depth: int,
    ) -> StoreStats:
        """Assemble a snapshot from its typed parts (``latencies``: put, probe, get)."""
        put, probe, get = latencies
        return cls(
            **_fields_of(counts),
            **_fields_of(state),
            kind=kind,
            put_latency=put,
            probe_latency=probe,
            get_latency=get,
            writer_queue_depth=writer_queue_depth,
        )

    def to_dict(self) -> dict[str, object]:
        values: dict[str, object] = _fields_of(self)
        for name in ("put_latency", "probe_latency", "get_latency"):
            values[name] = getattr(self, name).to_dict()
        return values


def _fields_of(record: OpCounts | BackendState | StoreStats) -> dict[str, Any]:
    """A record's own fields (shallow), to spread into :class:`StoreStats`."""
    return {item.name: getattr(record, item.name) for item in fields(record)}


class OpCounters:
    """The operation counters a store updates from any thread, and the latency samples of its calls."""

    def __init__(self) -> None:
        self._counts = dict.fromkeys((item.name for item in fields(OpCounts)), 0)
        self._latencies = {op: deque[float](maxlen=LATENCY_SAMPLES) for op in OPS}
        self._totals = dict.fromkeys(OPS, 0.0)
        self._lock = threading.Lock()

    def record(self, op: str, seconds: float) -> None:
        with self._lock:
            self._latencies[op].append(seconds)
            self._totals[op] += seconds

    def add(self, **deltas: int) -> None:
        """Add to the counters named as :class:`OpCounts` fields (an unknown name is a ``KeyError``)."""
        with self._lock:
            for name, delta in deltas.items():
                self._counts[name] += delta

    def counts(self) -> OpCounts:
        with self._lock:
            return OpCounts(**self._counts)

    def latencies(self, counts: OpCounts) -> tuple[LatencySummary, LatencySummary, LatencySummary]:
        """The put, probe and get latencies, counted as in ``counts``."""
        return (
            self._latency("put", counts.puts),
            self._latency("probe", counts.probes),
            self._latency("get", counts.gets),
        )

    def _latency(self, op: str, count: int) -> LatencySummary:
        with self._lock:
            return LatencySummary(count=count, total_s=self._totals[op], samples=tuple(self._latencies[op]))
