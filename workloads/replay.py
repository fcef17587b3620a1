"""The replay engine: a workload served by a host-memory tier in front of a real store, in trace time.

Per request, in arrival order:

1. the memory tier (:class:`~workloads.memory_tier.HostMemoryTier`) matches the leading pages it holds;
2. the store is probed, and if it holds more, the prefix is loaded with ``get_batch`` — all of it
   (``wait_complete``) or only the pages expected before ``prefetch_timeout_s`` at the store's price of
   the previous window (``timeout``: a slow store loses hits). The store reads a prefix from its first
   page, so pages the memory tier already holds are read again; they count as disk bytes, not hits;
3. the pages go into the memory tier; new pages are written to the store through its asynchronous
   writer — at once (``write_through``) or when the memory tier evicts them after at least
   ``write_back_hits`` hits (``write_back``). The store's ``write_admission_hits`` knob admits to disk
   only pages requested at least that many times before (0: every page; SGLang's selective
   write-through). A writer that cannot keep up drops pages (with the store's
   ``writer_overflow="drop"``): later misses. ``blocking_writes`` writes synchronously instead.

Store I/O is real; compute is modelled. A window ends with the writer drained and a stats snapshot; the
window's I/O time on each clock (:mod:`workloads.clocks`) is spread over the bytes the store moved in the
window, so a request's disk load time is its bytes read times that price. TTFT then comes from a
single-server FIFO queue in trace time: ``ttft = queue + load + prefill``, where ``load`` adds the
host-to-device copy of every hit page and ``prefill`` computes the missed tokens (at least one: the
server always computes the last position). Knobs therefore change TTFT only through what the store
really did — bytes, operations, stalls, drops, evictions under the budget — never through a formula.
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
from workloads.clocks import CLOCKS, WindowCounters
from workloads.memory_tier import HostMemoryTier, TierPage
from workloads.metrics import (
    RequestRecord,
    WindowMetrics,
    clock_agreement,
    token_ratio,
    ttft_summary,
    write_table,
)
from workloads.profiles import MODEL_PROFILES, THIS_MACHINE, DeviceProfile, ModelProfile
from workloads.requests import Request

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
PREFETCH_POLICIES = ("wait_complete", "timeout")
WRITE_POLICIES = ("write_through", "write_back")
MIN_SPAN_S = 1e-3
"""Floor of a window's trace span when computing its arrival rate (requests may share a timestamp)."""
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
    - ``memory_tier_bytes``: the host-memory tier in front of the store (0: none).
    - ``clock``: ``counters`` (default) or ``measured``, see :mod:`workloads.clocks`; ``device`` prices
      the ``counters`` clock.
    - ``prefetch``: ``wait_complete`` or ``timeout`` (with ``prefetch_timeout_s``).
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
    clock: str = "counters"
    prefetch: str = "wait_complete"
    prefetch_timeout_s: float = 0.1
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
        _check_int("memory_tier_bytes", self.memory_tier_bytes, 0)
        _check_int("write_back_hits", self.write_back_hits, 0)
        _check_int("window_requests", self.window_requests, 1)
        _check_int("seed", self.seed, 0)
        if not self.prefetch_timeout_s > 0:
            raise ValueError(f"prefetch_timeout_s must be > 0, got {self.prefetch_timeout_s!r}")
        if self.pace is not None and not self.pace > 0:
            raise ValueError(f"pace must be > 0 trace seconds per wall second, or None, got {self.pace!r}")

    @property
    def page_bytes(self) -> int:
        return self.profile.kv_layout().page_bytes(self.page_size)

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["profile"] = self.profile.describe()
        values["device"] = dataclasses.asdict(self.device)
        return values


@dataclass(frozen=True)
class _Served:
    """What serving one request did, before the window's I/O is priced."""

    request: Request
    index: int
    ideal_pages: int
    memory_pages: int
    disk_pages: int
    read_pages: int
    pages_written: int


@dataclass(frozen=True)
class ReplayResult:
    """A finished replay: ``summary`` is what ``summary.json`` holds."""

    summary: dict[str, Any]
    records: list[RequestRecord]
    windows: list[WindowMetrics]


class ReplaySession:
    """A replay driven window by window, so a controller (or an RL environment) can retune the store
    between windows through :meth:`apply`.

    ``path`` is the store's directory (pages already there count as hits: pass a new directory to
    start cold); ``None`` makes a temporary one, removed by :meth:`close`. Not thread-safe: drive a
    session from one thread.
    """

    def __init__(
        self,
        requests: Sequence[Request],
        config: ReplayConfig,
        store_config: StoreConfig | None = None,
        path: str | Path | None = None,
    ) -> None:
        if not requests:
            raise ValueError("requests is empty: pass at least one Request")
        arrivals = np.array([r.arrival_s for r in requests])
        if np.any(np.diff(arrivals) < 0):
            raise ValueError("requests must be in arrival order: sort them by arrival_s")
        self.config = config
        self._requests = list(requests)
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
        self._tier = HostMemoryTier(config.memory_tier_bytes // config.page_bytes)
        self._page_uses: dict[bytes, int] = {}
        self._kv = torch.empty(config.profile.kv_layout().page_shape(0), dtype=config.profile.dtype)
        self._kv_generator = torch.Generator().manual_seed(config.seed)
        self._counters = WindowCounters(self._store.stats())
        first_price = 1.0 / config.device.read_bytes_per_s
        self._price = dict.fromkeys(CLOCKS, first_price)
        self._next = 0
        self._server_free_s = 0.0
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

    def apply(self, config: StoreConfig) -> float:
        """Retune the store (live, or by reopening it); return the wall seconds it took (0 if unchanged).

        The time is reported in the next window's ``reopen_s``; it does not enter TTFT.
        """
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
        served = []
        for request in batch:
            sleep_s += self._wait_for(request)
            served.append(self._serve(request, self._next))
            self._next += 1
        queue_depth = self._call(self._store.stats).writer_queue_depth
        self._call(self._store.flush, False)
        stats = self._call(self._store.stats)
        self._counters.advance(stats)
        delta = self._counters.take()
        io_s = {
            clock: delta.seconds(clock, self.config.device, self.config.profile.scale) for clock in CLOCKS
        }
        moved = delta.bytes_read + delta.bytes_written
        if moved:
            self._price = {clock: io_s[clock] / moved for clock in CLOCKS}
        records = [self._record(item) for item in served]
        self.records.extend(records)
        wall = time.perf_counter() - window_started
        overhead = wall - self._window_store_s - sleep_s
        self.wall_s += wall
        self.engine_overhead_s += overhead
        self.store_call_s += self._window_store_s
        previous_end = self.windows[-1].trace_end_s if self.windows else 0.0
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
            p50_ttft_s=float(np.percentile([r.ttft_s for r in records], 50)),
            p99_ttft_s=float(np.percentile([r.ttft_s for r in records], 99)),
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
        summary: dict[str, Any] = {
            **ttft_summary(records),
            "memory_hit_token_ratio": token_ratio(records, "memory_hit_tokens"),
            "disk_hit_token_ratio": token_ratio(records, "disk_hit_tokens"),
            "mean_queue_s": float(np.mean([r.queue_s for r in records])),
            "mean_load_s": float(np.mean([r.load_s for r in records])),
            "mean_prefill_s": float(np.mean([r.prefill_s for r in records])),
            "dropped_pages": sum(w.dropped_pages for w in self.windows),
            "evicted_pages": sum(w.evicted_pages for w in self.windows),
            "stall_s": sum(w.stall_s for w in self.windows),
            "device_write_bytes": sum(w.device_write_bytes for w in self.windows),
            "device_read_bytes": sum(w.device_read_bytes for w in self.windows),
            "device_ops": sum(w.device_ops for w in self.windows),
            "windows": len(self.windows),
            "clock": self.config.clock,
            "clocks": clock_agreement(self.windows),
            "engine": {
                "wall_s": self.wall_s,
                "store_call_s": self.store_call_s,
                "overhead_s": self.engine_overhead_s,
                "overhead_per_request_s": self.engine_overhead_s / len(records),
                "overhead_fraction": self.engine_overhead_s / self.wall_s if self.wall_s > 0 else 0.0,
            },
            "phases": {phase: ttft_summary(rows) for phase, rows in by_phase.items() if phase},
            "store_kind": self.config.store_kind,
            "config": self.config.to_dict(),
            "store_config": self._store.config.to_dict(),
            "store_stats": _jsonable(self._store.stats().to_dict()),
        }
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
        tokens = request.tokens
        checks = self._call(self._store.plan, tokens).checks
        ideal = 0
        while ideal < len(checks) and checks[ideal] in self._page_uses:
            ideal += 1
        admission = self._store.config.write_admission_hits
        admitted = 0
        while admitted < len(checks) and self._page_uses.get(checks[admitted], 0) >= admission:
            admitted += 1
        for check in checks:
            self._page_uses[check] = self._page_uses.get(check, 0) + 1
        memory = self._tier.match(checks)
        stored = self._call(self._store.probe, tokens)
        loaded = read = 0
        if stored > memory:
            target = stored
            if self.config.prefetch == "timeout":
                price = self._price[self.config.clock] * self.config.page_bytes
                target = min(stored, int(self.config.prefetch_timeout_s / price)) if price > 0 else stored
            if target > memory:
                try:
                    self._call(self._store.get_batch, tokens, target)
                    loaded, read = target, target
                except PageMissingError as error:
                    logger.debug("request %d: %s", index, error)
        hits = max(memory, loaded)
        evicted = self._tier.use(checks, tokens, memory)
        written = 0
        if self.config.write_policy == "write_through" and admitted > stored:
            written += self._write(tokens, admitted)
        elif self.config.write_policy == "write_back":
            written += self._write_back(evicted)
        return _Served(request, index, ideal, memory, hits - memory, read, written)

    def _write_back(self, evicted: list[TierPage]) -> int:
        """Write the evicted pages hit often enough, one write per prompt up to its deepest such page."""
        deepest: dict[int, TierPage] = {}
        for page in evicted:
            if page.hits >= self.config.write_back_hits:
                known = deepest.get(id(page.tokens))
                if known is None or page.index > known.index:
                    deepest[id(page.tokens)] = page
        return sum(self._write(page.tokens, page.index + 1) for page in deepest.values())

    def _write(self, tokens: np.ndarray, n_pages: int) -> int:
        """Write the first ``n_pages`` pages of ``tokens`` (those the store lacks); return pages queued."""
        positions = n_pages * self.config.page_size
        kv = self._kv_for(positions)
        put = self._store.put_batch if self.config.blocking_writes else self._store.put_async
        return self._call(put, tokens[:positions], kv)

    def _kv_for(self, positions: int) -> torch.Tensor:
        """KV of ``positions`` positions: a view of one random buffer (random values, so compression and
        checks see realistic bytes), grown when a longer prompt comes."""
        if self._kv.shape[2] < positions:
            grown = max(positions, 2 * self._kv.shape[2])
            shape = self.config.profile.kv_layout().page_shape(grown)
            self._kv = torch.randn(shape, generator=self._kv_generator).to(self.config.profile.dtype)
        return self._kv[:, :, :positions]

    def _record(self, item: _Served) -> RequestRecord:
        """Price ``item``'s I/O on both clocks and place it in the single-server queue."""
        config, profile, request = self.config, self.config.profile, item.request
        page_size, page_bytes = config.page_size, config.page_bytes
        read_bytes = item.read_pages * page_bytes
        disk_s = {clock: self._price[clock] * read_bytes for clock in CLOCKS}
        hit_tokens = (item.memory_pages + item.disk_pages) * page_size
        hit_bytes = (item.memory_pages + item.disk_pages) * page_bytes
        load_s = disk_s[config.clock] + profile.host_to_device_seconds(hit_bytes * profile.scale)
        prefill_s = profile.prefill_seconds(max(request.prompt_tokens - hit_tokens, 1))
        start = max(request.arrival_s, self._server_free_s)
        self._server_free_s = start + load_s + prefill_s
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
            disk_read_bytes=read_bytes,
            pages_written=item.pages_written,
            disk_load_s_counters=disk_s["counters"],
            disk_load_s_measured=disk_s["measured"],
            load_s=load_s,
            prefill_s=prefill_s,
            queue_s=start - request.arrival_s,
            ttft_s=self._server_free_s - request.arrival_s,
        )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


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
        (out / SUMMARY_JSON).write_text(json.dumps(_jsonable(result.summary), indent=2, default=str) + "\n")
        logger.info("replay of %d requests written to %s", len(result.records), out)
    return result
