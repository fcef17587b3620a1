"""Typed statistics snapshot of a store, and the thread-safe counters behind it."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import asdict, dataclass, field

import numpy as np

LATENCY_SAMPLES = 4096


@dataclass(frozen=True)
class LatencySummary:
    count: int = 0
    p50_s: float = 0.0
    p99_s: float = 0.0
    total_s: float = 0.0


@dataclass(frozen=True)
class StoreStats:
    """A snapshot of one store. Counters are cumulative since open; sizes are current.

    ``device_*`` and ``stall_s`` are what the replay engine's ``counters`` clock prices: bytes the device
    wrote (for ``lsm``: WAL, flush, compaction and blob-GC rewrites included), bytes it read, and
    file-system objects created, opened, checked or removed.
    """

    kind: str
    pages_stored: int
    live_bytes: int
    disk_bytes: int
    files: int
    puts: int
    probes: int
    gets: int
    pages_written: int
    pages_read: int
    bytes_written: int
    bytes_read: int
    pages_hit: int
    pages_missed: int
    dropped_pages: int
    evicted_pages: int
    put_latency: LatencySummary
    probe_latency: LatencySummary
    get_latency: LatencySummary
    device_write_bytes: int
    device_read_bytes: int
    device_ops: int
    stall_s: float
    l0_files: int = 0
    pending_compaction_bytes: int = 0
    blob_live_bytes: int = 0
    blob_garbage_bytes: int = 0
    writer_queue_depth: int = 0
    write_errors: int = 0
    """Writes that raised (put_batch, or a background write whose pages then count as dropped)."""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class OpCounters:
    """Operation counters a store updates under its own lock; :meth:`snapshot_fields` reads them."""

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
    device_ops: int = 0
    latencies: dict[str, deque[float]] = field(
        default_factory=lambda: {op: deque(maxlen=LATENCY_SAMPLES) for op in ("put", "probe", "get")}
    )
    totals: dict[str, float] = field(default_factory=lambda: {"put": 0.0, "probe": 0.0, "get": 0.0})
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, op: str, seconds: float) -> None:
        with self.lock:
            self.latencies[op].append(seconds)
            self.totals[op] += seconds

    def add(self, **deltas: int) -> None:
        with self.lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def latency(self, op: str) -> LatencySummary:
        with self.lock:
            samples = np.fromiter(self.latencies[op], dtype=float)
            total = self.totals[op]
        count = {"put": self.puts, "probe": self.probes, "get": self.gets}[op]
        if samples.size == 0:
            return LatencySummary(count=count, total_s=total)
        p50, p99 = np.percentile(samples, [50, 99])
        return LatencySummary(count=count, p50_s=float(p50), p99_s=float(p99), total_s=total)

    def snapshot_fields(self) -> dict[str, object]:
        with self.lock:
            plain = {
                name: getattr(self, name)
                for name in (
                    "puts",
                    "probes",
                    "gets",
                    "pages_written",
                    "pages_read",
                    "bytes_written",
                    "bytes_read",
                    "pages_hit",
                    "pages_missed",
                    "dropped_pages",
                    "evicted_pages",
                    "write_errors",
                )
            }
        plain.update(
            put_latency=self.latency("put"),
            probe_latency=self.latency("probe"),
            get_latency=self.latency("get"),
        )
        return plain
