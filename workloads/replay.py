"""The replay engine: a workload served by a host-memory tier in front of a real store, in trace time.

Per request, in arrival order, modelled on SGLang HiCache (the mechanisms and where the model simplifies
them are in :mod:`workloads.timeline`):

1. the memory tier (:class:`~workloads.memory_tier.HostMemoryTier`) matches the leading pages it holds;
2. the store is probed; of the pages it holds, those whose backup completed before the arrival are
   visible (the others count as ``backup_late_pages``). The visible pages past the memory match are
   prefetched from the arrival on the disk timeline, and read for real with ``get_batch`` (which reads
   the prefix from its first page: pages the tier already holds are read again, counted as disk bytes,
   not hits);
3. the request starts when a server is free and the prefetch policy (``wait_complete``, ``timeout``,
   ``best_effort``) allows; pages not loaded by then are recomputed. ``ttft = queue + load + prefill``:
   ``load`` copies the hit pages host-to-device, ``prefill`` computes the missed tokens (at least one);
4. the pages go into the memory tier (whose capacity is what the host-RAM budget leaves after the store
   and the pinned backups); when compute ends, new pages are backed up through the backup queue
   (``write_through``) or when the tier evicts them after ``write_back_hits`` hits (``write_back``), and
   written for real through the store's asynchronous writer. With a host-RAM budget, the pinned backups
   never exceed what the store leaves of it: pages that do not fit are refused, as SGLang's full host pool
   refuses them (``backup_host_full_pages``), and neither they nor the refused or dropped pages after
   them are written. The store's ``write_admission_hits`` knob
   admits to disk only pages requested that many times before (SGLang's selective write-through).

Store I/O is real; compute and time are modelled. A window ends with the writer drained and a stats
snapshot; the window's device time on each clock (:mod:`workloads.clocks`) prices the next window's
reads and writes per page, so the store's own amplification (WAL, flush, compaction, blob GC, stalls,
cache hits that never reach the device) sets how fast its prefetches and backups go. Knobs therefore
change TTFT only through what the store really did, never through a formula that encodes the answer.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from store import STORE_KINDS, KVStore, PageMissingError, StoreConfig, open_store, store_kind
from store.pages import PagePlan
from workloads.clocks import CLOCKS, IOCounters, WindowCounters
from workloads.host_ram import check_store_ram, clamp_store_ram, store_ram_bytes
from workloads.memory_tier import HostMemoryTier, TierPage
from workloads.metrics import (
    ReplaySummary,
    RequestRecord,
    WindowMetrics,
    clock_agreement,
    token_ratio,
    ttft_summary,
    write_table,
)
from workloads.profiles import MODEL_PROFILES, THIS_MACHINE, DeviceProfile, ModelProfile
from workloads.requests import Request
from workloads.timeline import PREFETCH_POLICIES, STORAGE_BATCH_PAGES, ServingTimeline

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
WRITE_POLICIES = ("write_through", "write_back")
MIN_SPAN_S = 1e-3
"""Floor of a window's trace span when computing its arrival rate (requests may share a timestamp)."""
OVERLOAD_UTILIZATION = 0.95
"""GPU utilization with an empty store above which the replay warns that queueing will dominate TTFT."""
REQUESTS_CSV = "requests.csv"
WINDOWS_CSV = "windows.csv"
SUMMARY_JSON = "summary.json"

T = TypeVar("T")


def _check_choice(name: str, value: str, valid: Sequence[str]) -> None:
    if value not in valid:
        raise ValueError(f"{name}={value!r} is invalid; valid values: {', '.join(valid)}")


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


@dataclass(frozen=True)
class ReplayConfig:
    """Everything a replay does besides the workload and the store's knobs.

    - ``store_kind``: one of :data:`store.STORE_KINDS`; ``budget_bytes``: the store's disk budget
      (``None``: unlimited); ``page_size``: tokens per page.
    - ``memory_tier_bytes``: the host-memory tier in front of the store (0: none), used when
      ``host_ram_bytes`` is ``None``. ``host_ram_bytes``: one budget for the tier and the store's RAM
      (:mod:`workloads.host_ram`): the tier gets what the store leaves; a store config that does not
      fit is refused (``ValueError`` naming the knobs) at start, clamped (logged) by
      :meth:`ReplaySession.apply`.
    - ``clock``: ``counters`` (default) or ``measured``, see :mod:`workloads.clocks`; ``device`` prices
      the ``counters`` clock.
    - ``servers``: GPU servers running prefill FIFO; ``target_utilization``: scale trace time so the
      servers alone (every prompt computed in full) would be this busy (``None``: trace time as given).
    - ``prefetch``: ``wait_complete``, ``timeout`` (deadline ``prefetch_timeout_s`` after the first
      moment a server could take the request) or ``best_effort``; ``storage_batch_pages``: pages per
      storage read or write batch (SGLang's 128).
    - ``backup_queue_pages``: the backup queue's capacity in pages (``None``: unbounded, SGLang's);
      backups that do not fit are dropped. With ``host_ram_bytes``, backups also pin at most the host
      RAM the store leaves (the rest is refused, SGLang's full host pool).
    - ``write_policy``: ``write_through`` or ``write_back`` (pages evicted from the memory tier after at
      least ``write_back_hits`` hits); ``blocking_writes`` uses ``put_batch`` instead of the async writer.
    - ``pace``: trace seconds per wall second (``None``: as fast as possible); with a pace, the async
      writer gets the wall time the trace gives it, so whether it keeps up is meaningful.
    - ``window_requests``: requests per window in :func:`replay`; ``seed`` draws the KV tensors.
    """

    store_kind: str = "lsm"
    profile: ModelProfile = MODEL_PROFILES["tiny"]
    device: DeviceProfile = THIS_MACHINE
    page_size: int = 64
    budget_bytes: int | None = None
    memory_tier_bytes: int = 64 * MiB
    host_ram_bytes: int | None = None
    clock: str = "counters"
    servers: int = 1
    target_utilization: float | None = None
    prefetch: str = "wait_complete"
    prefetch_timeout_s: float = 0.1
    storage_batch_pages: int = STORAGE_BATCH_PAGES
    backup_queue_pages: int | None = None
    write_policy: str = "write_through"
    write_back_hits: int = 1
    blocking_writes: bool = False
    pace: float | None = None
    window_requests: int = 64
    namespace: str = "kvtune"
    seed: int = 0

    def __post_init__(self) -> None:
        _check_choice("store_kind", self.store_kind, STORE_KINDS)
        _check_choice("clock", self.clock, CLOCKS)
        _check_choice("prefetch", self.prefetch, PREFETCH_POLICIES)
        _check_choice("write_policy", self.write_policy, WRITE_POLICIES)
        if not isinstance(self.profile, ModelProfile):
            raise ValueError(
                f"profile must be a ModelProfile (see workloads.get_profile), got {self.profile!r}"
            )
        if not isinstance(self.device, DeviceProfile):
            raise ValueError(
                f"device must be a DeviceProfile (see workloads.get_device_profile), got {self.device!r}"
            )
        _check_int("page_size", self.page_size, 1)
        if self.budget_bytes is not None:
            _check_int("budget_bytes", self.budget_bytes, 1)
        if self.host_ram_bytes is not None:
            _check_int("host_ram_bytes", self.host_ram_bytes, 0)
        if self.backup_queue_pages is not None:
            _check_int("backup_queue_pages", self.backup_queue_pages, 0)
        _check_int("memory_tier_bytes", self.memory_tier_bytes, 0)
        _check_int("servers", self.servers, 1)
        _check_int("storage_batch_pages", self.storage_batch_pages, 1)
        _check_int("write_back_hits", self.write_back_hits, 0)
        _check_int("window_requests", self.window_requests, 1)
        _check_int("seed", self.seed, 0)
        if not self.prefetch_timeout_s > 0:
            raise ValueError(f"prefetch_timeout_s must be > 0, got {self.prefetch_timeout_s!r}")
        if self.pace is not None and not self.pace > 0:
            raise ValueError(f"pace must be > 0 trace seconds per wall second, or None, got {self.pace!r}")
        if self.target_utilization is not None and not 0 < self.target_utilization <= 1:
            raise ValueError(
                f"target_utilization must be in (0, 1] (GPU busy fraction), got {self.target_utilization!r}"
            )

    @property
    def page_bytes(self) -> int:
        return self.profile.kv_layout().page_bytes(self.page_size)

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["profile"] = self.profile.describe()
        values["device"] = dataclasses.asdict(self.device)
        return values


def full_prefill_utilization(requests: Sequence[Request], config: ReplayConfig) -> float:
    """How busy the servers would be computing every prompt in full over the trace's span."""
    work = sum(config.profile.prefill_seconds(r.prompt_tokens) for r in requests)
    span = max(requests[-1].arrival_s - requests[0].arrival_s, MIN_SPAN_S)
    return work / (config.servers * span)


def scale_to_utilization(requests: Sequence[Request], config: ReplayConfig) -> list[Request]:
    """``requests`` with trace time stretched so :func:`full_prefill_utilization` is
    ``config.target_utilization`` (unchanged when it is ``None``)."""
    if config.target_utilization is None:
        return list(requests)
    factor = full_prefill_utilization(requests, config) / config.target_utilization
    origin = requests[0].arrival_s
    return [dataclasses.replace(r, arrival_s=origin + (r.arrival_s - origin) * factor) for r in requests]


@dataclass(frozen=True)
class PagePrices:
    """Device seconds per page the store reads and writes, on one clock."""

    read_s: float
    write_s: float

    @classmethod
    def of_window(
        cls, delta: IOCounters, clock: str, config: ReplayConfig, previous: PagePrices
    ) -> PagePrices:
        """The window's prices: on ``counters``, device read time over pages read, and everything else
        (device writes, operations, stalls: the store's background work) over pages written; on
        ``measured``, the store's time over pages moved. A direction that moved nothing keeps ``previous``."""
        scale, device, page_bytes = config.profile.scale, config.device, config.page_bytes
        read_pages, written_pages = delta.bytes_read / page_bytes, delta.bytes_written / page_bytes
        if clock == "measured":
            moved = read_pages + written_pages
            price = delta.store_op_s / moved if moved else None
            return cls(
                read_s=price if price is not None else previous.read_s,
                write_s=price if price is not None else previous.write_s,
            )
        read_time = delta.device_read_bytes * scale / device.read_bytes_per_s
        other_time = delta.seconds("counters", device, scale) - read_time
        return cls(
            read_s=read_time / read_pages if read_pages else previous.read_s,
            write_s=other_time / written_pages if written_pages else previous.write_s,
        )


@dataclass(frozen=True)
class _Served:
    """What serving one request did, before its record is written."""

    request: Request
    index: int
    ideal_pages: int
    memory_pages: int
    disk_pages: int
    read_pages: int
    pages_written: int
    late_pages: int
    dropped_pages: int
    host_full_pages: int
    server: int
    queue_s: float
    load_s: float
    prefill_s: float
    ttft_s: float


@dataclass(frozen=True)
class ReplayResult:
    """A finished replay: ``summary`` is what ``summary.json`` holds."""

    summary: ReplaySummary
    records: list[RequestRecord]
    windows: list[WindowMetrics]


class ReplaySession:
    """A replay driven window by window, so a controller (or an RL environment) can retune the store
    between windows through :meth:`apply`.

    ``path`` is the store's directory (pages already there count as hits: pass a new directory to
    start cold); ``None`` makes a temporary one, removed by :meth:`close`. ``plans`` (request index ->
    page plan) is filled with each request's plan as it is served, and read instead of hashing the
    request again: pass one dict to sessions replaying the same requests into stores of the same kind,
    namespace and page size, so a request is hashed once. Not thread-safe: drive a session from one
    thread.
    """

    def __init__(
        self,
        requests: Sequence[Request],
        config: ReplayConfig,
        store_config: StoreConfig | None = None,
        path: str | Path | None = None,
        plans: dict[int, PagePlan] | None = None,
    ) -> None:
        if not requests:
            raise ValueError("requests is empty: pass at least one Request")
        arrivals = np.array([r.arrival_s for r in requests])
        if np.any(np.diff(arrivals) < 0):
            raise ValueError("requests must be in arrival order: sort them by arrival_s")
        self.config = config
        self._requests = scale_to_utilization(requests, config)
        knobs = store_config or StoreConfig()
        self._store_ram = (
            check_store_ram(config.store_kind, knobs, config.budget_bytes, config.host_ram_bytes)
            if config.host_ram_bytes is not None
            else store_ram_bytes(config.store_kind, knobs, config.budget_bytes or 0)
        )
        utilization = full_prefill_utilization(self._requests, config)
        if utilization > OVERLOAD_UTILIZATION:
            logger.warning(
                "the GPU would be %.0f%% busy with the store empty (every prompt computed): queueing will "
                "dominate TTFT; pass more servers or a target_utilization (--servers, --target-utilization)",
                100 * utilization,
            )
        self._owned_dir: Path | None = None
        if path is None and store_kind(config.store_kind).on_disk:
            self._owned_dir = Path(tempfile.mkdtemp(prefix="kvtune-replay-"))
            path = self._owned_dir / "store"
        try:
            self._store = open_store(
                config.store_kind,
                path,
                config.profile.kv_layout(),
                page_size=config.page_size,
                budget_bytes=config.budget_bytes,
                config=store_config,
                namespace=config.namespace,
            )
        except BaseException:
            self._remove_owned_dir()
            raise
        self._tier = HostMemoryTier(self._tier_pages(0))
        profile = config.profile
        self._timeline = ServingTimeline(
            servers=config.servers,
            policy=config.prefetch,
            timeout_s=config.prefetch_timeout_s,
            page_size=config.page_size,
            prefill_seconds=profile.prefill_seconds,
            load_seconds=lambda pages: profile.host_to_device_seconds(
                pages * config.page_bytes * profile.scale
            ),
            batch_pages=config.storage_batch_pages,
            backup_queue_pages=config.backup_queue_pages,
            host_pool_pages=self._host_pool_pages(),
        )
        self._plans = plans
        self._page_uses: dict[bytes, int] = {}
        self._kv = torch.empty(config.profile.kv_layout().page_shape(0), dtype=config.profile.dtype)
        self._kv_generator = torch.Generator().manual_seed(config.seed)
        self._counters = WindowCounters(self._store.stats())
        nominal = PagePrices(
            read_s=config.page_bytes * profile.scale / config.device.read_bytes_per_s,
            write_s=config.page_bytes * profile.scale / config.device.write_bytes_per_s,
        )
        self._prices = dict.fromkeys(CLOCKS, nominal)
        self._next = 0
        self._pace_origin: float | None = None
        self._reopen_s = 0.0
        self._window_store_s = 0.0
        self.records: list[RequestRecord] = []
        self.windows: list[WindowMetrics] = []
        self.wall_s = 0.0
        self.engine_overhead_s = 0.0
        self.store_call_s = 0.0

    # ------------------------------------------------------------------ public surface

    @property
    def store(self) -> KVStore:
        """The live store (read its ``stats()``; retune it through :meth:`apply`)."""
        return self._store

    @property
    def done(self) -> bool:
        return self._next >= len(self._requests)

    @property
    def remaining(self) -> int:
        return len(self._requests) - self._next

    @property
    def host_ram_bytes(self) -> int:
        """The host-RAM budget: ``config.host_ram_bytes``, or the tier plus the store when it is unset."""
        if self.config.host_ram_bytes is not None:
            return self.config.host_ram_bytes
        return self.config.memory_tier_bytes + self._store_ram

    @property
    def store_ram_bytes(self) -> int:
        return self._store_ram

    def apply(self, config: StoreConfig) -> float:
        """Retune the store (live, or by reopening it); return the wall seconds it took (0 if unchanged).

        With a host-RAM budget, a config whose RAM does not fit is clamped (logged) first. The time is
        reported in the next window's ``reopen_s``; it does not enter TTFT.
        """
        if self.config.host_ram_bytes is not None and self.config.store_kind == "lsm":
            config = clamp_store_ram(config, self.config.host_ram_bytes)
        if config == self._store.config:
            return 0.0
        reopen = bool(self._store.config.needs_reopen(config))
        if reopen:  # a reopen may reset the store's counters: keep what the window had so far
            self._counters.advance(self._store.stats())
        started = time.perf_counter()
        reopened = self._store.apply(config)
        elapsed = time.perf_counter() - started
        if reopen:
            self._counters.rebase(self._store.stats())
            logger.info("store reopened in %.3f s for %s", elapsed, ", ".join(reopened))
        self._reopen_s += elapsed
        self._store_ram = store_ram_bytes(self.config.store_kind, config, self.config.budget_bytes or 0)
        self._timeline.host_pool_pages = self._host_pool_pages()
        return elapsed

    def run_window(self, n_requests: int) -> WindowMetrics:
        """Serve the next ``n_requests`` requests (fewer at the end), price the window, return its metrics."""
        _check_int("n_requests", n_requests, 1)
        if self.done:
            raise ValueError("the replay is done (session.done is True): close it or start a new session")
        window_started = time.perf_counter()
        self._window_store_s = 0.0
        sleep_s = 0.0
        batch = self._requests[self._next : self._next + n_requests]
        records = []
        for request in batch:
            sleep_s += self._wait_for(request)
            records.append(self._record(self._serve(request, self._next)))
            self._next += 1
        queue_depth = self._store.writer_queue_depth()
        self._call(self._store.flush, False)
        stats = self._call(self._store.stats)
        self._counters.advance(stats)
        delta = self._counters.take()
        io_s = {
            clock: delta.seconds(clock, self.config.device, self.config.profile.scale) for clock in CLOCKS
        }
        self._prices = {
            clock: PagePrices.of_window(delta, clock, self.config, self._prices[clock]) for clock in CLOCKS
        }
        self.records.extend(records)
        wall = time.perf_counter() - window_started
        overhead = wall - self._window_store_s - sleep_s
        self.wall_s += wall
        self.engine_overhead_s += overhead
        self.store_call_s += self._window_store_s
        previous_end = self.windows[-1].trace_end_s if self.windows else self._requests[0].arrival_s
        p50_ttft, p99_ttft = np.percentile([r.ttft_s for r in records], [50, 99])  # one sort, not two
        trace_end = batch[-1].arrival_s
        span = trace_end - previous_end
        metrics = WindowMetrics(
            index=len(self.windows),
            first_request=records[0].index,
            requests=len(records),
            trace_start_s=previous_end,
            trace_end_s=trace_end,
            hit_token_ratio=token_ratio(records, "hit_tokens"),
            memory_hit_token_ratio=token_ratio(records, "memory_hit_tokens"),
            disk_hit_token_ratio=token_ratio(records, "disk_hit_tokens"),
            mean_ttft_s=float(np.mean([r.ttft_s for r in records])),
            p50_ttft_s=float(p50_ttft),
            p99_ttft_s=float(p99_ttft),
            mean_queue_s=float(np.mean([r.queue_s for r in records])),
            mean_load_s=float(np.mean([r.load_s for r in records])),
            mean_prefill_s=float(np.mean([r.prefill_s for r in records])),
            io_s_counters=io_s["counters"],
            io_s_measured=io_s["measured"],
            device_write_bytes=delta.device_write_bytes,
            device_read_bytes=delta.device_read_bytes,
            device_ops=delta.device_ops,
            stall_s=delta.stall_s,
            dropped_pages=delta.dropped_pages,
            evicted_pages=delta.evicted_pages,
            l0_files=stats.l0_files,
            pending_compaction_bytes=stats.pending_compaction_bytes,
            blob_garbage_bytes=stats.blob_garbage_bytes,
            disk_bytes=stats.disk_bytes,
            budget_bytes=self.config.budget_bytes,
            writer_queue_depth=queue_depth,
            pages_stored=stats.pages_stored,
            arrival_rate=len(records) / max(span, MIN_SPAN_S),
            prefix_reuse=token_ratio(records, "ideal_hit_tokens"),
            mean_prompt_tokens=float(np.mean([r.prompt_tokens for r in records])),
            read_bytes=delta.bytes_read,
            write_bytes=delta.bytes_written,
            store_call_s=self._window_store_s,
            engine_overhead_s=overhead,
            reopen_s=self._reopen_s,
            gpu_utilization=self._timeline.gpu_utilization(previous_end, trace_end),
            disk_utilization=self._timeline.disk_utilization(previous_end, trace_end),
            host_ram_bytes=self.host_ram_bytes,
            store_ram_bytes=self._store_ram,
            memory_tier_pages=self._tier_pages(0),
            pending_backup_pages=self._timeline.pending_pages(trace_end),
            backup_late_pages=sum(r.backup_late_pages for r in records),
            backup_dropped_pages=sum(r.backup_dropped_pages for r in records),
            backup_host_full_pages=sum(r.backup_host_full_pages for r in records),
        )
        self._reopen_s = 0.0
        self.windows.append(metrics)
        return metrics

    def result(self) -> ReplayResult:
        """The summary, per-request records and windows of what was replayed so far."""
        if not self.records:
            raise ValueError("nothing was replayed yet: call run_window first")
        records = self.records
        by_phase: dict[str, list[RequestRecord]] = {}
        for record in records:
            by_phase.setdefault(record.phase, []).append(record)
        first = records[0].arrival_s
        end = max([first + MIN_SPAN_S, *(r.arrival_s + r.ttft_s for r in records)])
        summary = ReplaySummary(
            overall=ttft_summary(records),
            memory_hit_token_ratio=token_ratio(records, "memory_hit_tokens"),
            disk_hit_token_ratio=token_ratio(records, "disk_hit_tokens"),
            mean_queue_s=float(np.mean([r.queue_s for r in records])),
            mean_load_s=float(np.mean([r.load_s for r in records])),
            mean_prefill_s=float(np.mean([r.prefill_s for r in records])),
            dropped_pages=sum(w.dropped_pages for w in self.windows),
            evicted_pages=sum(w.evicted_pages for w in self.windows),
            stall_s=sum(w.stall_s for w in self.windows),
            device_write_bytes=sum(w.device_write_bytes for w in self.windows),
            device_read_bytes=sum(w.device_read_bytes for w in self.windows),
            device_ops=sum(w.device_ops for w in self.windows),
            gpu_utilization=self._timeline.gpu_utilization(first, end),
            disk_utilization=self._timeline.disk_utilization(first, end),
            host_ram_bytes=self.host_ram_bytes,
            store_ram_bytes=self._store_ram,
            windows=len(self.windows),
            clock=self.config.clock,
            clocks=clock_agreement(self.windows),
            engine={
                "wall_s": self.wall_s,
                "store_call_s": self.store_call_s,
                "overhead_s": self.engine_overhead_s,
                "overhead_per_request_s": self.engine_overhead_s / len(records),
                "overhead_fraction": self.engine_overhead_s / self.wall_s if self.wall_s > 0 else 0.0,
            },
            phases={phase: ttft_summary(rows) for phase, rows in by_phase.items() if phase},
            store_kind=self.config.store_kind,
            store_code=self._store.backend_label,
            config=self.config.to_dict(),
            store_config=self._store.config.to_dict(),
            store_stats=self._store.stats().to_dict(),
        )
        return ReplayResult(summary=summary, records=list(records), windows=list(self.windows))

    def close(self) -> None:
        """Close the store (draining its writer) and remove a temporary store directory."""
        self._store.close()
        self._remove_owned_dir()

    def _remove_owned_dir(self) -> None:
        if self._owned_dir is not None:
            shutil.rmtree(self._owned_dir, ignore_errors=True)
            self._owned_dir = None

    def __enter__(self) -> ReplaySession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ serving

    def _host_pool_pages(self) -> int | None:
        """Host pages left after the store's RAM, which tier pages and pinned backups share (``None``:
        no host-RAM budget, backups pin without bound)."""
        if self.config.host_ram_bytes is None:
            return None
        return max(0, (self.config.host_ram_bytes - self._store_ram) // self.config.page_bytes)

    def _tier_pages(self, pinned_pages: int) -> int:
        """The tier's capacity: its own bytes, or what the host-RAM budget leaves after the store and
        ``pinned_pages`` of pending backups."""
        if self.config.host_ram_bytes is None:
            return self.config.memory_tier_bytes // self.config.page_bytes
        free = self.config.host_ram_bytes - self._store_ram - pinned_pages * self.config.page_bytes
        return max(0, free // self.config.page_bytes)

    def _call(self, function: Callable[..., T], *args: Any) -> T:
        started = time.perf_counter()
        try:
            return function(*args)
        finally:
            self._window_store_s += time.perf_counter() - started

    def _wait_for(self, request: Request) -> float:
        """Sleep until ``request`` is due in wall time when paced; return the seconds slept."""
        if self.config.pace is None:
            return 0.0
        now = time.perf_counter()
        if self._pace_origin is None:
            self._pace_origin = now - request.arrival_s / self.config.pace
        delay = self._pace_origin + request.arrival_s / self.config.pace - now
        if delay <= 0:
            return 0.0
        time.sleep(delay)
        return delay

    def _serve(self, request: Request, index: int) -> _Served:
        tokens, arrival = request.tokens, request.arrival_s
        plan = self._plan(tokens, index)  # hashed once for the probe, the read and the write
        digests = plan.digests
        ideal = 0
        while ideal < len(digests) and digests[ideal] in self._page_uses:
            ideal += 1
        admission = self._store.config.write_admission_hits
        admitted = 0
        while admitted < len(digests) and self._page_uses.get(digests[admitted], 0) >= admission:
            admitted += 1
        for digest in digests:
            self._page_uses[digest] = self._page_uses.get(digest, 0) + 1
        timeline = self._timeline
        memory = self._tier.match(digests)
        stored = self._call(self._store.probe, plan)
        visible = timeline.visible_prefix(digests, arrival, stored)
        late = sum(
            1
            for digest in digests[max(memory, visible) : stored]
            if arrival < timeline.visible_at.get(digest, -math.inf) < math.inf
        )
        wanted = max(0, visible - memory)
        if wanted:
            try:
                self._call(self._store.get_batch, plan, visible)
            except PageMissingError as error:
                logger.debug("request %d: %s", index, error)
                wanted = 0
        prices = self._prices[self.config.clock]
        timing = timeline.serve(arrival, request.prompt_tokens, memory, wanted, prices.read_s)
        hits = memory + timing.loaded_pages
        self._tier.capacity_pages = self._tier_pages(timeline.pending_pages(arrival))
        evicted = self._tier.use(digests, tokens, memory)
        written = dropped = host_full = 0
        if self.config.write_policy == "write_through" and admitted:
            written, dropped, host_full = self._back_up(plan, admitted, stored, timing.finish_s)
        elif self.config.write_policy == "write_back":
            for page in self._write_back_pages(evicted):
                page_plan = self._call(self._store.plan, page.tokens)
                page_stored = self._call(self._store.probe, page_plan)
                queued, lost, refused = self._back_up(page_plan, page.index + 1, page_stored, timing.finish_s)
                written, dropped, host_full = written + queued, dropped + lost, host_full + refused
        return _Served(
            request=request,
            index=index,
            ideal_pages=ideal,
            memory_pages=memory,
            disk_pages=hits - memory,
            read_pages=visible if wanted else 0,
            pages_written=written,
            late_pages=late,
            dropped_pages=dropped,
            host_full_pages=host_full,
            server=timing.server,
            queue_s=timing.queue_s,
            load_s=timing.load_s,
            prefill_s=timing.prefill_s,
            ttft_s=timing.ttft_s,
        )

    def _plan(self, tokens: np.ndarray, index: int) -> PagePlan:
        if self._plans is None:
            return self._call(self._store.plan, tokens)
        plan = self._plans.get(index)
        if plan is None:
            plan = self._plans[index] = self._call(self._store.plan, tokens)
        return plan

    def _back_up(self, plan: PagePlan, n_pages: int, stored: int, queued_s: float) -> tuple[int, int, int]:
        """Back up the first ``n_pages`` pages of ``plan`` at ``queued_s`` (those the model has not):
        queue them on the timeline, write for real the prefix up to the last page queued (pages refused
        or dropped never reach the store); return pages queued, dropped and refused by a full host pool."""
        needed = self._timeline.needs_backup(plan.digests[:n_pages], stored, queued_s)
        if not needed:
            return 0, 0, 0
        outcome = self._timeline.backup(queued_s, needed, self._prices[self.config.clock].write_s)
        if outcome.queued < len(needed):
            n_pages = plan.digests.index(needed[outcome.queued - 1]) + 1 if outcome.queued else 0
        if n_pages:
            self._write(plan, n_pages)
        return outcome.queued, outcome.dropped, outcome.host_full

    def _write_back_pages(self, evicted: list[TierPage]) -> list[TierPage]:
        """The deepest evicted page hit often enough of each prompt (one write per prompt)."""
        deepest: dict[int, TierPage] = {}
        for page in evicted:
            if page.hits >= self.config.write_back_hits:
                known = deepest.get(id(page.tokens))
                if known is None or page.index > known.index:
                    deepest[id(page.tokens)] = page
        return list(deepest.values())

    def _write(self, plan: PagePlan, n_pages: int) -> int:
        """Write the first ``n_pages`` pages of ``plan`` (those the store lacks); return pages queued."""
        kv = self._kv_for(n_pages * self.config.page_size)
        put = self._store.put_batch if self.config.blocking_writes else self._store.put_async
        return self._call(put, dataclasses.replace(plan, digests=plan.digests[:n_pages]), kv)

    def _kv_for(self, positions: int) -> torch.Tensor:
        """KV of ``positions`` positions: a view of one random buffer (random values, so compression and
        digests see realistic bytes), grown when a longer prompt comes."""
        if self._kv.shape[2] < positions:
            grown = max(positions, 2 * self._kv.shape[2])
            shape = self.config.profile.kv_layout().page_shape(grown)
            self._kv = torch.randn(shape, generator=self._kv_generator).to(self.config.profile.dtype)
        return self._kv[:, :, :positions]

    def _record(self, item: _Served) -> RequestRecord:
        """The request's record, with its prefetch's device time on both clocks."""
        page_size, request = self.config.page_size, item.request
        hit_tokens = (item.memory_pages + item.disk_pages) * page_size
        return RequestRecord(
            index=item.index,
            window=len(self.windows),
            arrival_s=request.arrival_s,
            phase=request.phase,
            session=request.session,
            tenant=request.tenant,
            prompt_tokens=request.prompt_tokens,
            output_len=request.output_len,
            ideal_hit_tokens=item.ideal_pages * page_size,
            memory_hit_tokens=item.memory_pages * page_size,
            disk_hit_tokens=item.disk_pages * page_size,
            hit_tokens=hit_tokens,
            disk_read_bytes=item.read_pages * self.config.page_bytes,
            pages_written=item.pages_written,
            backup_late_pages=item.late_pages,
            backup_dropped_pages=item.dropped_pages,
            backup_host_full_pages=item.host_full_pages,
            server=item.server,
            disk_load_s_counters=self._prices["counters"].read_s * item.read_pages,
            disk_load_s_measured=self._prices["measured"].read_s * item.read_pages,
            load_s=item.load_s,
            prefill_s=item.prefill_s,
            queue_s=item.queue_s,
            ttft_s=item.ttft_s,
        )


def replay(
    requests: Sequence[Request],
    config: ReplayConfig,
    *,
    out_dir: str | Path | None = None,
    store_config: StoreConfig | None = None,
    path: str | Path | None = None,
    on_window: Callable[[WindowMetrics], None] | None = None,
) -> ReplayResult:
    """Replay every request in windows of ``config.window_requests``; write the tables and summary.

    With ``out_dir``, writes ``requests.csv`` (one row per request), ``windows.csv`` (one per window) and
    ``summary.json``. ``on_window`` is called after each window (a progress bar, a controller's log).
    """
    with ReplaySession(requests, config, store_config, path) as session:
        while not session.done:
            metrics = session.run_window(config.window_requests)
            if on_window is not None:
                on_window(metrics)
        result = session.result()
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_table(out / REQUESTS_CSV, result.records)
        write_table(out / WINDOWS_CSV, result.windows)
        (out / SUMMARY_JSON).write_text(json.dumps(result.summary.to_dict(), indent=2, default=str) + "\n")
        logger.info("replay of %d requests written to %s", len(result.records), out)
    return result
