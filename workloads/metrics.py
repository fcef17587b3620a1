"""Typed records of a replay — one per request, one per window — and their aggregation and tables."""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class RequestRecord:
    """What happened to one request. Times are seconds of trace time on the replay's clock:
    ``ttft_s = queue_s + load_s + prefill_s``, where ``queue_s`` is the wait for a server and for the
    prefetch policy, ``load_s`` the host-to-device copy of the hit pages. ``disk_load_s_counters`` /
    ``disk_load_s_measured`` are the device time of its prefetch on both clocks (overlapping the queue).
    ``backup_late_pages``: stored pages it missed because their backup had not completed at its arrival;
    ``backup_dropped_pages``: pages of its backup the bounded queue dropped;
    ``backup_host_full_pages``: pages of its backup a full host pool refused (pinned backups fill it)."""

    index: int
    window: int
    arrival_s: float
    phase: str
    session: str
    tenant: str
    prompt_tokens: int
    output_len: int
    ideal_hit_tokens: int
    memory_hit_tokens: int
    disk_hit_tokens: int
    hit_tokens: int
    disk_read_bytes: int
    pages_written: int
    backup_late_pages: int
    backup_dropped_pages: int
    backup_host_full_pages: int
    server: int
    disk_load_s_counters: float
    disk_load_s_measured: float
    load_s: float
    prefill_s: float
    queue_s: float
    ttft_s: float


@dataclass(frozen=True)
class WindowMetrics:
    """Aggregates of one control window of a replay, the store's state at its end, and workload features.

    Counters (``io_s_*``, bytes, pages, ``stall_s``) cover the window only; ``l0_files`` and the other
    state fields are the store's at the end of the window; ``writer_queue_depth`` is read just before the
    window's closing flush. ``arrival_rate`` is requests per trace second since the previous window's last
    arrival (span floored at 1 ms); ``prefix_reuse`` is the ideal hit ratio (an infinite cache) of the
    window's requests; ``read_bytes`` / ``write_bytes`` are page bytes the store read and wrote.
    ``engine_overhead_s`` is the engine's own wall time in the window: everything
    but store calls and pacing sleeps (compute is modelled, so it costs no wall time).
    ``gpu_utilization`` / ``disk_utilization`` are busy time inside the window's trace span over the span
    (GPU: over all servers); ``host_ram_bytes`` is the budget, ``store_ram_bytes`` the store's share of it,
    ``memory_tier_pages`` the tier's capacity after it, ``pending_backup_pages`` the backups queued at the
    window's last arrival (pinned in host RAM); ``backup_late_pages``, ``backup_dropped_pages`` and
    ``backup_host_full_pages`` sum the window's requests' (see :class:`RequestRecord`).
    """

    index: int
    first_request: int
    requests: int
    trace_start_s: float
    trace_end_s: float
    hit_token_ratio: float
    memory_hit_token_ratio: float
    disk_hit_token_ratio: float
    mean_ttft_s: float
    p50_ttft_s: float
    p99_ttft_s: float
    mean_queue_s: float
    mean_load_s: float
    mean_prefill_s: float
    io_s_counters: float
    io_s_measured: float
    device_write_bytes: int
    device_read_bytes: int
    device_ops: int
    stall_s: float
    dropped_pages: int
    evicted_pages: int
    l0_files: int
    pending_compaction_bytes: int
    blob_garbage_bytes: int
    disk_bytes: int
    budget_bytes: int | None
    writer_queue_depth: int
    pages_stored: int
    arrival_rate: float
    prefix_reuse: float
    mean_prompt_tokens: float
    read_bytes: int
    write_bytes: int
    store_call_s: float
    engine_overhead_s: float
    reopen_s: float
    gpu_utilization: float
    disk_utilization: float
    host_ram_bytes: int
    store_ram_bytes: int
    memory_tier_pages: int
    pending_backup_pages: int
    backup_late_pages: int
    backup_dropped_pages: int
    backup_host_full_pages: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def token_ratio(records: Sequence[RequestRecord], field: str) -> float:
    """``sum(field) / sum(prompt_tokens)`` over ``records`` (0 when there are none)."""
    total = sum(r.prompt_tokens for r in records)
    return sum(getattr(r, field) for r in records) / total if total else 0.0


@dataclass(frozen=True)
class PhaseSummary:
    """Hits, TTFT, backups and disk reads of a set of requests (a phase, or all of them)."""

    requests: int
    hit_token_ratio: float
    ideal_hit_token_ratio: float
    mean_ttft_s: float
    p50_ttft_s: float
    p99_ttft_s: float
    backup_late_pages: int
    backup_dropped_pages: int
    backup_host_full_pages: int
    disk_read_bytes: int


def ttft_summary(records: Sequence[RequestRecord]) -> PhaseSummary:
    """Hit ratio, TTFT statistics, late, dropped and refused backup pages and bytes read of ``records``."""
    ttft = np.array([r.ttft_s for r in records], dtype=float)
    p50, p99 = np.percentile(ttft, [50, 99]) if ttft.size else (math.nan, math.nan)
    return PhaseSummary(
        requests=len(records),
        hit_token_ratio=token_ratio(records, "hit_tokens"),
        ideal_hit_token_ratio=token_ratio(records, "ideal_hit_tokens"),
        mean_ttft_s=float(ttft.mean()) if ttft.size else math.nan,
        p50_ttft_s=float(p50),
        p99_ttft_s=float(p99),
        backup_late_pages=sum(r.backup_late_pages for r in records),
        backup_dropped_pages=sum(r.backup_dropped_pages for r in records),
        backup_host_full_pages=sum(r.backup_host_full_pages for r in records),
        disk_read_bytes=sum(r.disk_read_bytes for r in records),
    )


@dataclass(frozen=True)
class ReplaySummary:
    """What ``summary.json`` holds: the figures over all requests (``overall``'s fields at the top level
    of the JSON), per phase, the resources' use, and the configuration that produced them."""

    overall: PhaseSummary
    memory_hit_token_ratio: float
    disk_hit_token_ratio: float
    mean_queue_s: float
    mean_load_s: float
    mean_prefill_s: float
    dropped_pages: int
    evicted_pages: int
    stall_s: float
    device_write_bytes: int
    device_read_bytes: int
    device_ops: int
    gpu_utilization: float
    disk_utilization: float
    host_ram_bytes: int
    store_ram_bytes: int
    windows: int
    clock: str
    clocks: dict[str, float]
    engine: dict[str, float]
    phases: dict[str, PhaseSummary]
    store_kind: str
    store_code: str
    """Whose code the store ran: ``kvtune``, or the backend and version (``SGLang 0.5.23 file backend``)."""
    config: dict[str, Any]
    store_config: dict[str, Any]
    store_stats: dict[str, Any]

    @property
    def requests(self) -> int:
        return self.overall.requests

    @property
    def hit_token_ratio(self) -> float:
        return self.overall.hit_token_ratio

    @property
    def mean_ttft_s(self) -> float:
        return self.overall.mean_ttft_s

    @property
    def p99_ttft_s(self) -> float:
        return self.overall.p99_ttft_s

    @property
    def backup_late_pages(self) -> int:
        return self.overall.backup_late_pages

    @property
    def backup_dropped_pages(self) -> int:
        return self.overall.backup_dropped_pages

    @property
    def backup_host_full_pages(self) -> int:
        return self.overall.backup_host_full_pages

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ``overall``'s fields first, then the rest (NaN and infinities become None)."""
        values = dataclasses.asdict(self)
        overall = values.pop("overall")
        return _jsonable({**overall, **values})


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def clock_agreement(windows: Sequence[WindowMetrics]) -> dict[str, float]:
    """How far the two clocks agree: total ratio, median per-window ratio, and correlation of windows."""
    counters = np.array([w.io_s_counters for w in windows], dtype=float)
    measured = np.array([w.io_s_measured for w in windows], dtype=float)
    both = (counters > 0) & (measured > 0)
    correlation = math.nan
    if both.sum() >= 3 and counters[both].std() > 0 and measured[both].std() > 0:
        correlation = float(np.corrcoef(counters[both], measured[both])[0, 1])
    return {
        "io_s_counters": float(counters.sum()),
        "io_s_measured": float(measured.sum()),
        "measured_over_counters": float(measured.sum() / counters.sum()) if counters.sum() > 0 else math.nan,
        "window_ratio_p50": float(np.median(measured[both] / counters[both])) if both.any() else math.nan,
        "window_correlation": correlation,
    }


def write_table(path: Path, rows: Sequence[Any]) -> None:
    """Write dataclass ``rows`` as a CSV table with one column per field."""
    if not rows:
        path.write_text("")
        return
    names = [f.name for f in dataclasses.fields(rows[0])]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        for row in rows:
            writer.writerow(dataclasses.asdict(row))
