"""Sustained concurrent load on one store: the reliability benchmark behind ``kvtune bench stress``.

Threads run a mix of ``put_batch``, ``put_async``, ``probe``, ``get_batch`` and ``evict`` over prompts
that share prefixes, on a store under a byte budget (so eviction and reclaim run the whole time), while
a knob thread applies a live config change every few seconds. Every page's KV is a function of its
token prefix (:func:`deterministic_kv`), so any thread can check any read: a tensor that differs is a
wrong tensor. A ``PageMissingError`` between a probe and its read is a miss (another thread evicted the
page), not an error; every other exception is an error. A sampler records throughput, RSS and disk use.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from store import KVLayout, KVStore, PageMissingError, StoreConfig, open_store, store_kind
from store.diskusage import directory_usage

logger = logging.getLogger(__name__)

LAYOUT = KVLayout(layers=4, kv_heads=2, head_dim=64, dtype=torch.float16)
PAGE_SIZE = 16
FAMILIES = 32
"""Prompt families: every prompt of a family starts with the family's shared prefix."""
PREFIX_PAGES = 4
SUFFIX_PAGES = (1, 6)
KNOB_CONFIGS = (
    {"writer_batch_size": 8, "eviction_order": "lru", "level0_file_num_compaction_trigger": 4},
    {"writer_batch_size": 32, "eviction_order": "fifo", "level0_file_num_compaction_trigger": 8},
)
OPERATIONS = (("put_batch", 3), ("put_async", 2), ("probe", 3), ("get", 4), ("evict", 1))
MAX_ERROR_MESSAGES = 10


@dataclass(frozen=True)
class StressConfig:
    kind: str
    path: Path
    threads: int = 8
    seconds: float = 600.0
    budget_bytes: int = 32 << 20
    knob_interval_s: float = 3.0
    sample_interval_s: float = 10.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.threads < 1 or self.seconds <= 0 or self.budget_bytes <= 0:
            raise ValueError(
                f"threads, seconds and budget_bytes must be positive, got {self.threads}, {self.seconds}, "
                f"{self.budget_bytes}"
            )


@dataclass(frozen=True)
class StressSample:
    elapsed_s: float
    ops_per_s: float
    ops: int
    errors: int
    wrong_tensors: int
    rss_bytes: int
    disk_bytes: int
    stall_s: float
    """Seconds of write stall in this window (RocksDB's, for ``lsm``)."""
    evicted_pages: int
    """Pages the capacity manager and ``evict`` calls removed in this window."""
    slowest_put_s: float
    """The longest ``put_batch`` or ``put_async`` call of this window: a reclaim runs inside a write, and
    a full writer queue blocks ``put_async``."""


@dataclass(frozen=True)
class StressReport:
    config: StressConfig
    samples: list[StressSample]
    ops: dict[str, int]
    misses: int
    errors: int
    wrong_tensors: int
    knob_changes: int
    error_messages: list[str]
    dropped_pages: int
    evicted_pages: int
    stall_s: float
    """Seconds writes were stalled (RocksDB's write stalls for ``lsm``, 0 for the others)."""
    put_p99_s: float
    knobs_clamped: int
    """Knob values the store bounded by its budget (:mod:`store.knob_bounds`)."""

    @property
    def ok(self) -> bool:
        return self.errors == 0 and self.wrong_tensors == 0


def deterministic_kv(tokens: torch.Tensor) -> torch.Tensor:
    """The KV of every full page of ``tokens``: random bits seeded by the page's whole token prefix."""
    n_pages = len(tokens) // PAGE_SIZE
    raw = tokens[: n_pages * PAGE_SIZE].to(torch.int64).numpy().tobytes()
    step = PAGE_SIZE * 8
    chain = b""
    pages = []
    shape = (LAYOUT.layers, 2, PAGE_SIZE, LAYOUT.kv_heads, LAYOUT.head_dim)
    for k in range(n_pages):
        chain = hashlib.blake2b(chain + raw[k * step : (k + 1) * step], digest_size=8).digest()
        generator = torch.Generator().manual_seed(int.from_bytes(chain, "little") >> 1)
        bits = torch.randint(-(2**15), 2**15, shape, generator=generator, dtype=torch.int32)
        pages.append(bits.to(torch.int16).view(LAYOUT.dtype))
    return torch.cat(pages, dim=2)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass
class _Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    ops: dict[str, int] = field(default_factory=lambda: {name: 0 for name, _ in OPERATIONS})
    misses: int = 0
    errors: int = 0
    wrong_tensors: int = 0
    messages: list[str] = field(default_factory=list)
    slowest_put_s: float = 0.0

    def put_took(self, seconds: float) -> None:
        with self.lock:
            self.slowest_put_s = max(self.slowest_put_s, seconds)

    def take_slowest_put(self) -> float:
        """The longest put since the last call."""
        with self.lock:
            slowest, self.slowest_put_s = self.slowest_put_s, 0.0
        return slowest

    def total(self) -> int:
        with self.lock:
            return sum(self.ops.values())

    def error(self, operation: str, error: BaseException) -> None:
        with self.lock:
            self.errors += 1
            if len(self.messages) < MAX_ERROR_MESSAGES:
                self.messages.append(f"{operation}: {type(error).__name__}: {error}")


class _Load:
    def __init__(self, config: StressConfig, store: KVStore) -> None:
        self.config = config
        self.store = store
        self.tally = _Tally()
        self.stop = threading.Event()
        rng = random.Random(config.seed)
        self.prefixes = [
            torch.tensor([rng.randrange(2**31) for _ in range(PREFIX_PAGES * PAGE_SIZE)], dtype=torch.int64)
            for _ in range(FAMILIES)
        ]

    def prompt(self, rng: random.Random) -> torch.Tensor:
        suffix = rng.randint(*SUFFIX_PAGES) * PAGE_SIZE + rng.randrange(PAGE_SIZE)
        tail = torch.tensor([rng.randrange(64) for _ in range(suffix)], dtype=torch.int64)
        return torch.cat([self.prefixes[rng.randrange(FAMILIES)], tail])

    def run_operation(self, operation: str, tokens: torch.Tensor) -> None:
        store, tally = self.store, self.tally
        if operation in ("put_batch", "put_async"):
            kv = deterministic_kv(tokens)
            started = time.perf_counter()
            getattr(store, operation)(tokens, kv)
            tally.put_took(time.perf_counter() - started)
        elif operation == "probe":
            store.probe(tokens)
        elif operation == "evict":
            store.evict(tokens, min(PREFIX_PAGES, len(tokens) // PAGE_SIZE - 1))
        else:
            hits = store.probe(tokens)
            if not hits:
                return
            try:
                got = store.get_batch(tokens, hits)
            except PageMissingError:
                with tally.lock:
                    tally.misses += 1
                return
            expected = deterministic_kv(tokens)[:, :, : hits * PAGE_SIZE]
            if not torch.equal(got.view(torch.int16), expected.view(torch.int16)):
                with tally.lock:
                    tally.wrong_tensors += 1
                logger.error("wrong tensor read for a prompt of %d tokens (%d pages)", len(tokens), hits)

    def worker(self, index: int) -> None:
        rng = random.Random(self.config.seed * 1000 + index)
        names = [name for name, _ in OPERATIONS]
        weights = [weight for _, weight in OPERATIONS]
        while not self.stop.is_set():
            operation = rng.choices(names, weights)[0]
            try:
                self.run_operation(operation, self.prompt(rng))
            except Exception as error:
                self.tally.error(operation, error)
            with self.tally.lock:
                self.tally.ops[operation] += 1

    def knob_changer(self, store: KVStore, stop: threading.Event) -> int:
        changes = 0
        while not stop.wait(self.config.knob_interval_s):
            values = KNOB_CONFIGS[changes % len(KNOB_CONFIGS)]
            try:
                store.apply(store.config.replace(**values))
            except Exception as error:
                self.tally.error("apply", error)
            changes += 1
        return changes


KnobDriver = Callable[[KVStore, threading.Event], int]
"""Changes the store's knobs until the event is set; returns how many changes it applied."""


def run_stress(config: StressConfig, knob_driver: KnobDriver | None = None) -> StressReport:
    """Run the load for ``config.seconds`` while ``knob_driver`` (by default: the two configs of
    :data:`KNOB_CONFIGS` in turn every ``knob_interval_s``) changes knobs; returns the samples and totals
    (see :class:`StressReport`)."""
    store = open_store(
        config.kind, config.path, LAYOUT, PAGE_SIZE, config.budget_bytes, StoreConfig(), namespace="stress"
    )
    load = _Load(config, store)
    workers = [threading.Thread(target=load.worker, args=(i,), daemon=True) for i in range(config.threads)]
    changes: list[int] = []
    driver = knob_driver or load.knob_changer
    knobs = threading.Thread(target=lambda: changes.append(driver(store, load.stop)), daemon=True)
    samples: list[StressSample] = []
    started = time.perf_counter()
    for thread in [*workers, knobs]:
        thread.start()
    last_ops, last_time, last_stats = 0, started, store.stats()
    try:
        while (now := time.perf_counter()) - started < config.seconds:
            time.sleep(min(config.sample_interval_s, config.seconds - (now - started)))
            now, ops, stats = time.perf_counter(), load.tally.total(), store.stats()
            sample = StressSample(
                elapsed_s=now - started,
                ops_per_s=(ops - last_ops) / max(now - last_time, 1e-9),
                ops=ops,
                errors=load.tally.errors,
                wrong_tensors=load.tally.wrong_tensors,
                rss_bytes=_rss_bytes(),
                disk_bytes=directory_usage(config.path)[0] if store_kind(config.kind).on_disk else 0,
                stall_s=max(stats.stall_s - last_stats.stall_s, 0.0),  # a reopen restarts RocksDB's count
                evicted_pages=stats.evicted_pages - last_stats.evicted_pages,
                slowest_put_s=load.tally.take_slowest_put(),
            )
            samples.append(sample)
            logger.info("stress %s", sample)
            last_ops, last_time, last_stats = ops, now, stats
    finally:
        load.stop.set()
        for thread in [*workers, knobs]:
            thread.join()
        stats = store.stats()
        store.close()
    tally = load.tally
    return StressReport(
        config=config,
        samples=samples,
        ops=dict(tally.ops),
        misses=tally.misses,
        errors=tally.errors,
        wrong_tensors=tally.wrong_tensors,
        knob_changes=changes[0] if changes else 0,
        error_messages=list(tally.messages),
        dropped_pages=stats.dropped_pages,
        evicted_pages=stats.evicted_pages,
        stall_s=stats.stall_s,
        put_p99_s=stats.put_latency.p99_s,
        knobs_clamped=stats.knobs_clamped,
    )
