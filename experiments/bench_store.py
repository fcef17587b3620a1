"""``kvtune bench store``: every store kind side by side, with a raw-disk reference.

Method (what the numbers mean):

- **Kinds.** ``lsm``, ``file``, ``applog``, ``memory`` (those that import) and ``raw``: the same bytes
  written with ``os.write`` to one file, ``fsync``-ed, and read back with ``preadv`` into a tensor.
- **Isolation.** Every (kind, stored-page level) runs in its own worker process (forked from a
  forkserver), so its resident memory (``VmRSS``) belongs to that store alone. The orchestrator runs one
  worker at a time: the kinds never compete for the two cores or the disk.
- **Interleaving.** The disk drifts up to 2.5x within minutes, so each round measures one operation on
  every kind back to back (put on A B C ..., then probe on A B C ..., ...), the kind order rotating from
  round to round. A ratio is the median over rounds of the per-round ratio (:func:`median_pair_ratio`),
  never a ratio of medians taken in different minutes. The 100k-vs-1M comparison is paired the same way:
  a store per level, both measured in every round.
- **Put** is durable: the time of the ``put_batch`` calls plus ``flush()`` and ``os.sync()`` (an untimed
  ``os.sync()`` first, so only this put's bytes are synced). Raw: the writes plus ``fsync``. Background
  work a put leaves (RocksDB flushes/compactions) is waited for, untimed, before the next kind runs.
- **Probe** asks for a prompt of ``prompt_pages`` pages whose first ``h`` pages are stored, ``h`` uniform
  in ``0..prompt_pages``; every answer is checked. Each kind uses its own implementation (the file kind
  its per-page existence checks).
- **Get** reads whole prompts with ``get_batch``. ``warm``: the prompts were read once, untimed, so they
  are in the page cache. ``cold``: ``os.sync()`` then ``posix_fadvise(DONTNEED)`` on every file in the
  store directory (SST, blob, segment or page files); process-internal caches (RocksDB's block cache,
  the kinds' in-memory indexes) and the kernel's inode/dentry caches stay warm. One read per round is
  compared bit for bit with what was put.
- **Reopen**: ``close()`` (untimed) then the time to open the store again, ready to serve: ``cold``
  after dropping the store's files from the page cache (a restart after a reboot) and, if
  ``reopen_caches`` asks for it, ``warm`` right after (a process restart). Measured in the last
  ``reopen_rounds`` rounds only: the baselines rebuild in-memory indexes from every page, which takes
  minutes at a million pages (the file kind's warm reopen costs about as much as its cold one).
- **Fill.** Before the rounds each store is filled to its level with the same ``put_batch`` calls, all
  stores at once (two cores; so fill times are indicative, not measurements).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import datetime
import importlib
import importlib.metadata
import json
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
import types
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from store import KVLayout, StoreConfig, open_store
from store.base import KVStore

logger = logging.getLogger(__name__)

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

KINDS = ("lsm", "file", "applog", "memory")
RAW = "raw"
DISK_KINDS = ("lsm", "file", "applog")
_KIND_CLASSES = {
    "lsm": ("store.lsm", "LSMStore"),
    "file": ("store.filestore", "FileStore"),
    "applog": ("store.applog", "AppendLogStore"),
    "memory": ("store.memory", "MemoryStore"),
}

LLAMA_31_8B = KVLayout(layers=32, kv_heads=8, head_dim=128, dtype=torch.float16)
"""Llama-3.1-8B: 32 layers, 8 KV heads of 128, fp16 = 128 KiB of KV per token."""
LLAMA_PAGE_TOKENS = 64

MEASUREMENT_COLUMNS = (
    "scenario",
    "level",
    "round",
    "kind",
    "op",
    "cache",
    "pages_stored",
    "calls",
    "pages",
    "bytes",
    "seconds",
    "sync_s",
    "evict_s",
    "rate",
    "rate_unit",
    "mb_per_s",
    "pages_per_s",
    "p50_ms",
    "p99_ms",
    "elapsed_s",
)
FOOTPRINT_COLUMNS = (
    "scenario",
    "level",
    "kind",
    "stage",
    "pages_stored",
    "files",
    "inodes",
    "disk_bytes",
    "rss_bytes",
    "rss_peak_bytes",
    "rss_trimmed_bytes",
    "fill_s",
)
RATIO_COLUMNS = (
    "scenario",
    "level",
    "op",
    "cache",
    "numerator",
    "denominator",
    "median_ratio",
    "min_ratio",
    "max_ratio",
    "rounds",
)

# (op, cache) measured every round, in this order; then, in the last ``reopen_rounds`` rounds, the reopens.
_OPS: tuple[tuple[str, str], ...] = (("put", ""), ("probe", ""), ("get", "warm"), ("get", "cold"))
_REOPEN_OPS: tuple[tuple[str, str], ...] = (("reopen", "cold"), ("reopen", "warm"))
_ALL_OPS = _OPS + _REOPEN_OPS
_RATE_UNITS = {"put": "MB/s", "probe": "probes/s", "get": "MB/s", "reopen": "reopens/s"}
_SETTLE_PROPERTIES = (
    "rocksdb.num-running-flushes",
    "rocksdb.num-running-compactions",
    "rocksdb.mem-table-flush-pending",
    "rocksdb.compaction-pending",
)


class BenchError(RuntimeError):
    """A benchmark step failed (a worker raised, died, or a store returned a wrong answer)."""


# ====================================================================== configuration


@dataclass(frozen=True)
class Scenario:
    """One workload shape: pages of ``layout`` x ``page_size`` tokens, prompts of ``prompt_pages`` pages.

    ``levels`` are the stored-page counts the stores are filled to before the rounds (one store per level);
    with ``fresh_per_round`` every round starts from an empty store instead (``levels == (0,)``).
    """

    name: str
    description: str
    layout: KVLayout
    page_size: int
    prompt_pages: int
    levels: tuple[int, ...]
    prompts_per_round: int
    probes_per_round: int
    fresh_per_round: bool

    @property
    def page_bytes(self) -> int:
        return self.layout.page_bytes(self.page_size)

    @property
    def prompt_tokens(self) -> int:
        return self.prompt_pages * self.page_size

    @property
    def prompt_bytes(self) -> int:
        return self.prompt_pages * self.page_bytes


@dataclass(frozen=True)
class BenchConfig:
    """Everything one ``kvtune bench store`` run does; logged in full at the start of the run."""

    out: Path = Path("runs/bench")
    kinds: tuple[str, ...] = KINDS
    rounds: int = 5
    large_pages: int = 512
    large_prompt_pages: int = 16
    large_kv_heads: int = 1
    small_levels: tuple[int, ...] = (100_000, 1_000_000)
    small_prompt_pages: int = 64
    small_prompts_per_round: int = 64
    small_probes_per_round: int = 256
    reopen_rounds: int = 1
    reopen_caches: tuple[str, ...] = ("cold",)
    fill_chunk_pages: int = 65_536
    workdir: Path | None = None
    keep_data: bool = False
    seed: int = 0
    store_config: StoreConfig = field(default_factory=StoreConfig)
    memory_limit_fraction: float = 0.5

    def __post_init__(self) -> None:
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown or not self.kinds:
            raise ValueError(f"unknown store kind(s) {unknown}; choose from {', '.join(KINDS)}")
        if len(set(self.kinds)) != len(self.kinds):
            raise ValueError(f"kinds must not repeat, got {self.kinds}")
        positive = (
            "rounds",
            "large_pages",
            "large_prompt_pages",
            "large_kv_heads",
            "small_prompt_pages",
            "small_prompts_per_round",
            "small_probes_per_round",
            "fill_chunk_pages",
            "reopen_rounds",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.large_pages < self.large_prompt_pages:
            raise ValueError(
                f"large_pages={self.large_pages} must be at least one prompt "
                f"({self.large_prompt_pages} pages)"
            )
        if LLAMA_31_8B.kv_heads % self.large_kv_heads:
            raise ValueError(f"large_kv_heads must divide {LLAMA_31_8B.kv_heads}, got {self.large_kv_heads}")
        if not self.small_levels or any(
            isinstance(n, bool) or not isinstance(n, int) or n < self.small_prompt_pages
            for n in self.small_levels
        ):
            raise ValueError(
                f"small_levels must be stored-page counts of at least one prompt ({self.small_prompt_pages} "
                f"pages), got {self.small_levels}"
            )
        if list(self.small_levels) != sorted(set(self.small_levels)):
            raise ValueError(f"small_levels must be increasing and distinct, got {self.small_levels}")
        if not self.reopen_caches or not set(self.reopen_caches) <= {"cold", "warm"}:
            raise ValueError(f"reopen_caches must be some of 'cold', 'warm', got {self.reopen_caches}")
        if self.reopen_rounds > self.rounds:
            raise ValueError(f"reopen_rounds={self.reopen_rounds} must not exceed rounds={self.rounds}")
        if not 0 < self.memory_limit_fraction <= 1:
            raise ValueError(f"memory_limit_fraction must be in (0, 1], got {self.memory_limit_fraction}")

    @classmethod
    def quick(cls, **overrides: Any) -> BenchConfig:
        """A ~1 minute run: tiny sizes, 3 rounds. Its targets are evaluated, but below the target scale."""
        values: dict[str, Any] = dict(
            rounds=3,
            large_pages=32,
            small_levels=(2_048, 8_192),
            small_prompts_per_round=8,
            small_probes_per_round=32,
            fill_chunk_pages=4_096,
        )
        values.update(overrides)
        return cls(**values)

    @property
    def data_dir(self) -> Path:
        return self.workdir if self.workdir is not None else self.out / "data"

    def large_scenario(self) -> Scenario:
        layout = dataclasses.replace(LLAMA_31_8B, kv_heads=self.large_kv_heads)
        scale = LLAMA_31_8B.kv_heads // self.large_kv_heads
        real = LLAMA_31_8B.page_bytes(LLAMA_PAGE_TOKENS)
        page = layout.page_bytes(LLAMA_PAGE_TOKENS)
        return Scenario(
            name="large",
            description=(
                f"Llama-3.1-8B pages scaled 1/{scale}: 32 layers x 2 x 64 tokens x {self.large_kv_heads} KV "
                f"head(s) x 128 x fp16 = {_size(page)} per page (real model: 8 KV heads, {_size(real)}); "
                f"{self.large_pages} pages per round in prompts of {self.large_prompt_pages} pages, "
                "fresh stores every round"
            ),
            layout=layout,
            page_size=LLAMA_PAGE_TOKENS,
            prompt_pages=self.large_prompt_pages,
            levels=(0,),
            prompts_per_round=self.large_pages // self.large_prompt_pages,
            probes_per_round=self.large_pages // self.large_prompt_pages,
            fresh_per_round=True,
        )

    def small_scenario(self) -> Scenario:
        layout = KVLayout(layers=4, kv_heads=1, head_dim=16, dtype=torch.float16)
        page_size = 16
        return Scenario(
            name="small",
            description=(
                f"metadata-heavy: {_size(layout.page_bytes(page_size))} pages (4 layers x 2 x 16 tokens "
                f"x 1 KV head x 16 x fp16), prompts of {self.small_prompt_pages} pages, stores filled to "
                f"{', '.join(f'{n:,}' for n in self.small_levels)} pages; per round "
                f"{self.small_prompts_per_round} prompts put and read, {self.small_probes_per_round} probes"
            ),
            layout=layout,
            page_size=page_size,
            prompt_pages=self.small_prompt_pages,
            levels=self.small_levels,
            prompts_per_round=self.small_prompts_per_round,
            probes_per_round=self.small_probes_per_round,
            fresh_per_round=False,
        )

    def scenarios(self) -> list[Scenario]:
        return [self.large_scenario(), self.small_scenario()]

    def describe(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "store_config"}
        values["store_config_changes"] = StoreConfig().changed(self.store_config)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in values.items()}


def _size(nbytes: float) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if nbytes >= scale:
            value = nbytes / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{nbytes:.0f} B"


# ====================================================================== ratios


def median_pair_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """Median over rounds of ``numerator[r] / denominator[r]``: the drift-robust way to compare two kinds.

    Both sequences hold one value per round, measured back to back. A ratio of medians would compare
    numbers from different minutes; the median of per-round ratios does not.
    """
    if len(numerator) != len(denominator):
        raise ValueError(
            f"need one value per round on both sides, got {len(numerator)} and {len(denominator)}"
        )
    ratios = [n / d for n, d in zip(numerator, denominator, strict=True) if d > 0 and math.isfinite(n / d)]
    if not ratios:
        return math.nan
    return float(np.median(ratios))


def pair_ratios(rows: Iterable[dict[str, Any]], numerator: str, denominator: str) -> list[dict[str, Any]]:
    """Per (scenario, level, op, cache): the median of per-round rate ratios ``numerator / denominator``."""
    table: dict[tuple[str, int, str, str], dict[str, dict[int, float]]] = {}
    for row in rows:
        if row["kind"] not in (numerator, denominator):
            continue
        key = (row["scenario"], int(row["level"]), row["op"], row["cache"])
        table.setdefault(key, {}).setdefault(row["kind"], {})[int(row["round"])] = float(row["rate"])
    result = []
    for (scenario, level, op, cache), by_kind in table.items():
        top, bottom = by_kind.get(numerator, {}), by_kind.get(denominator, {})
        rounds = sorted(set(top) & set(bottom))
        if not rounds:
            continue
        per_round = [top[r] / bottom[r] for r in rounds if bottom[r] > 0]
        result.append(
            dict(
                scenario=scenario,
                level=level,
                op=op,
                cache=cache,
                numerator=numerator,
                denominator=denominator,
                median_ratio=median_pair_ratio([top[r] for r in rounds], [bottom[r] for r in rounds]),
                min_ratio=min(per_round) if per_round else math.nan,
                max_ratio=max(per_round) if per_round else math.nan,
                rounds=len(rounds),
            )
        )
    return result


def level_ratios(
    rows: Iterable[dict[str, Any]], kind: str, scenario: str, low: int, high: int
) -> list[dict[str, Any]]:
    """Per (op, cache): median over rounds of ``rate(kind at high) / rate(kind at low)``, paired by round."""
    table: dict[tuple[str, str], dict[int, dict[int, float]]] = {}
    for row in rows:
        if row["kind"] != kind or row["scenario"] != scenario or int(row["level"]) not in (low, high):
            continue
        table.setdefault((row["op"], row["cache"]), {}).setdefault(int(row["level"]), {})[
            int(row["round"])
        ] = float(row["rate"])
    result = []
    for (op, cache), by_level in table.items():
        top, bottom = by_level.get(high, {}), by_level.get(low, {})
        rounds = sorted(set(top) & set(bottom))
        if not rounds:
            continue
        per_round = [top[r] / bottom[r] for r in rounds if bottom[r] > 0]
        result.append(
            dict(
                scenario=scenario,
                level=high,
                op=op,
                cache=cache,
                numerator=f"{kind}@{high}",
                denominator=f"{kind}@{low}",
                median_ratio=median_pair_ratio([top[r] for r in rounds], [bottom[r] for r in rounds]),
                min_ratio=min(per_round) if per_round else math.nan,
                max_ratio=max(per_round) if per_round else math.nan,
                rounds=len(rounds),
            )
        )
    return result


# ====================================================================== machine


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def machine_info(path: Path) -> dict[str, str]:
    """The machine the numbers come from: cores, memory, CPU, disk, kernel, date, library versions."""
    meminfo = dict(
        (line.split(":")[0], line.split(":")[1].strip())
        for line in _read("/proc/meminfo").splitlines()
        if ":" in line
    )
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/cpuinfo").splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    path.mkdir(parents=True, exist_ok=True)
    try:
        df = (
            subprocess.run(
                ["df", "-h", "--output=source,fstype,size,used,avail,target", str(path)],
                capture_output=True,
                text=True,
                check=True,
                timeout=30,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        df = " ".join(df.split())
    except (OSError, subprocess.SubprocessError, IndexError):
        df = "unknown"
    versions = {}
    for package in ("torch", "rocksdict", "numpy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "memory": _meminfo_size(meminfo.get("MemTotal")),
        "memory available at start": _meminfo_size(meminfo.get("MemAvailable")),
        "cpu": cpu,
        "disk (df: source fstype size used avail mount)": df,
        "kernel": platform.release(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        **{f"{name} version": version for name, version in versions.items()},
    }


def _meminfo_size(text: str | None) -> str:
    """A /proc/meminfo value ("24683656 kB") as a size ("23.5 GiB")."""
    try:
        return _size(int((text or "").split()[0]) * KiB)
    except (ValueError, IndexError):
        return "unknown"


def _mem_available_bytes() -> int:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * KiB
    return 0


def available_kinds(kinds: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The kinds whose module imports, and why each other one does not."""
    ok, skipped = [], {}
    for kind in kinds:
        module, name = _KIND_CLASSES[kind]
        try:
            getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as error:
            skipped[kind] = f"{module}.{name} does not import ({error})"
        else:
            ok.append(kind)
    return ok, skipped


# ====================================================================== worker side


def rss_bytes() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process, in bytes."""
    rss = peak = 0
    for line in _read("/proc/self/status").splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * KiB
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * KiB
    return rss, peak


def trim_heap() -> bool:
    """Give freed heap memory back to the OS (glibc ``malloc_trim``); False where that is not available."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


def evict_page_cache(path: Path) -> int:
    """``os.sync()``, then drop every file under ``path`` from the page cache; returns files evicted."""
    os.sync()
    evicted = 0
    for directory, _, names in os.walk(path):
        for name in names:
            try:
                fd = os.open(os.path.join(directory, name), os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
            evicted += 1
    return evicted


def count_inodes(path: Path) -> tuple[int, int]:
    """(regular files, inodes: files + directories) under ``path``, the directory itself included."""
    files, inodes = 0, 0
    stack = [str(path)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except FileNotFoundError:
            continue
        inodes += 1
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            else:
                files += 1
                inodes += 1
    return files, inodes


def _salt(text: str) -> int:
    return zlib.crc32(text.encode())


def prompt_tokens(seed: int, scenario: str, stream: int, index: int, n_tokens: int) -> np.ndarray:
    """Deterministic token ids: one (seed, scenario, stream, index) is the same prompt in every worker."""
    rng = np.random.default_rng([seed, _salt(scenario), stream, index])
    return rng.integers(0, 2**31, n_tokens, dtype=np.uint32)


def _latency_ms(samples: Sequence[float]) -> tuple[float, float]:
    if not samples:
        return math.nan, math.nan
    p50, p99 = np.percentile(np.asarray(samples, dtype=float), [50, 99])
    return float(p50) * 1e3, float(p99) * 1e3


def _open_kind(kind: str, path: Path | None, scenario: Scenario, config: StoreConfig) -> KVStore:
    """``open_store``; while some baseline module is missing the registry cannot import, so open directly."""
    args = dict(
        layout=scenario.layout,
        page_size=scenario.page_size,
        budget_bytes=None,
        config=config,
        namespace="bench",
    )
    try:
        return open_store(kind, path, **args)  # type: ignore[arg-type]
    except ImportError:
        module, name = _KIND_CLASSES[kind]
        cls = getattr(importlib.import_module(module), name)
        store: KVStore = cls(path, args["layout"], args["page_size"], None, config, "bench")
        return store


@dataclass(frozen=True)
class _WorkerSpec:
    kind: str
    scenario: Scenario
    level: int
    path: Path
    seed: int
    store_config: StoreConfig
    log_level: int


class _Participant:
    """What the orchestrator can ask a worker to do; each op returns a result dict."""

    def __init__(self, spec: _WorkerSpec) -> None:
        self.spec = spec
        self.scenario = spec.scenario
        self.kind = spec.kind
        self.path = spec.path
        generator = torch.Generator().manual_seed(spec.seed)
        shape = spec.scenario.layout.page_shape(spec.scenario.prompt_tokens)
        n_bytes = spec.scenario.prompt_bytes
        # A small pool of random (incompressible) prompt tensors, reused across prompts: contents do not
        # change any kind's cost, and generating gigabytes of random numbers would dominate the run.
        self.pool = [
            torch.randint(0, 256, (n_bytes,), dtype=torch.uint8, generator=generator)
            .view(spec.scenario.layout.dtype)
            .view(shape)
            for _ in range(2)
        ]

    def tokens(self, stream: int, index: int) -> np.ndarray:
        return prompt_tokens(self.spec.seed, self.scenario.name, stream, index, self.scenario.prompt_tokens)

    def kv(self, index: int) -> torch.Tensor:
        return self.pool[index % len(self.pool)]

    def op_rss(self) -> dict[str, Any]:
        rss, peak = rss_bytes()
        return {"rss_bytes": rss, "rss_peak_bytes": peak}


class _StoreParticipant(_Participant):
    def __init__(self, spec: _WorkerSpec) -> None:
        super().__init__(spec)
        self.store: KVStore | None = None
        self.n_prompts = 0
        self.disk = spec.kind != "memory"

    # ---------------------------------------------------------------- helpers

    def _store(self) -> KVStore:
        if self.store is None:
            raise BenchError(f"{self.kind}: the store is not open")
        return self.store

    def _open(self) -> KVStore:
        self.store = _open_kind(
            self.kind, self.path if self.disk else None, self.scenario, self.spec.store_config
        )
        return self.store

    def _settle(self) -> None:
        """Wait (untimed) until background work a put left behind is done, so it cannot slow the next kind."""
        db = getattr(self.store, "_db", None)
        if db is not None:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                if not any(db.property_int_value(name) for name in _SETTLE_PROPERTIES):
                    break
                time.sleep(0.02)
            else:
                logger.warning("%s: background flush/compaction still running after 300 s", self.kind)
        if self.disk:
            os.sync()

    def _stored_pages(self) -> int:
        return self.n_prompts * self.scenario.prompt_pages

    # ---------------------------------------------------------------- ops

    def op_open(self) -> dict[str, Any]:
        shutil.rmtree(self.path, ignore_errors=True)
        self._open()
        return self.op_rss()

    def op_reset(self) -> dict[str, Any]:
        """A fresh, empty store (for scenarios that start every round from nothing)."""
        if self.store is not None:
            self.store.close()
        self.n_prompts = 0
        return self.op_open()

    def op_fill(self, pages: int) -> dict[str, Any]:
        """Put whole prompts until at least ``pages`` pages are stored."""
        store = self._store()
        target = math.ceil(pages / self.scenario.prompt_pages)
        started = time.perf_counter()
        written = 0
        while self.n_prompts < target:
            written += store.put_batch(self.tokens(0, self.n_prompts), self.kv(self.n_prompts))
            self.n_prompts += 1
        store.flush()
        self._settle()
        return {
            "seconds": time.perf_counter() - started,
            "pages": written,
            "pages_stored": self._stored_pages(),
        }

    def op_put(self) -> dict[str, Any]:
        store = self._store()
        count = self.scenario.prompts_per_round
        ids = range(self.n_prompts, self.n_prompts + count)
        work = [(self.tokens(0, i), self.kv(i)) for i in ids]
        pages_before = self._stored_pages()
        if self.disk:
            os.sync()
        latencies = []
        started = time.perf_counter()
        for tokens, kv in work:
            call = time.perf_counter()
            written = store.put_batch(tokens, kv)
            latencies.append(time.perf_counter() - call)
            if written != self.scenario.prompt_pages:
                raise BenchError(
                    f"{self.kind}: put_batch of a new prompt wrote {written} pages, expected "
                    f"{self.scenario.prompt_pages}"
                )
        calls = time.perf_counter() - started
        sync_started = time.perf_counter()
        store.flush()
        if self.disk:
            os.sync()
        sync = time.perf_counter() - sync_started
        self.n_prompts += count
        self._settle()
        pages = count * self.scenario.prompt_pages
        return _result(
            calls + sync,
            latencies,
            pages_stored=pages_before,
            calls=count,
            pages=pages,
            nbytes=pages * self.scenario.page_bytes,
            sync_s=sync,
        )

    def op_probe(self, round_index: int) -> dict[str, Any]:
        store = self._store()
        rng = np.random.default_rng([self.spec.seed, _salt(self.scenario.name), 1, round_index])
        pages, size = self.scenario.prompt_pages, self.scenario.page_size
        work = []
        for i in range(self.scenario.probes_per_round):
            hit = int(rng.integers(0, pages + 1))
            stored = self.tokens(0, int(rng.integers(0, self.n_prompts)))
            fresh = self.tokens(2, round_index * 1_000_003 + i)
            work.append((np.concatenate([stored[: hit * size], fresh[hit * size :]]), hit))
        latencies, answers = [], []
        started = time.perf_counter()
        for tokens, _ in work:
            call = time.perf_counter()
            answers.append(store.probe(tokens))
            latencies.append(time.perf_counter() - call)
        seconds = time.perf_counter() - started
        wrong = [(hit, got) for (_, hit), got in zip(work, answers, strict=True) if got != hit]
        if wrong:
            raise BenchError(
                f"{self.kind}: {len(wrong)} probes answered wrongly (expected, got): {wrong[:5]}"
            )
        return _result(
            seconds,
            latencies,
            pages_stored=self._stored_pages(),
            calls=len(work),
            pages=sum(h for _, h in work),
            nbytes=0,
        )

    def op_get(self, round_index: int, cold: bool) -> dict[str, Any] | None:
        if cold and not self.disk:
            return None
        store = self._store()
        count = min(self.scenario.prompts_per_round, self.n_prompts)
        if self.scenario.fresh_per_round:
            ids = list(range(count))
        else:
            rng = np.random.default_rng(
                [self.spec.seed, _salt(self.scenario.name), 3, round_index, int(cold)]
            )
            ids = [int(i) for i in rng.choice(self.n_prompts, size=count, replace=False)]
        pages = self.scenario.prompt_pages
        work = [self.tokens(0, i) for i in ids]
        evict = 0.0
        if cold:
            evict_started = time.perf_counter()
            evict_page_cache(self.path)
            evict = time.perf_counter() - evict_started
        else:
            for tokens in work:
                store.get_batch(tokens, pages)
        latencies = []
        first = None
        started = time.perf_counter()
        for tokens in work:
            call = time.perf_counter()
            out = store.get_batch(tokens, pages)
            latencies.append(time.perf_counter() - call)
            if first is None:
                first = out
        seconds = time.perf_counter() - started
        if first is not None and not _same_bytes(first, self.kv(ids[0])):
            raise BenchError(f"{self.kind}: get_batch returned other bytes than were put")
        n_pages = count * pages
        return _result(
            seconds,
            latencies,
            pages_stored=self._stored_pages(),
            calls=count,
            pages=n_pages,
            nbytes=n_pages * self.scenario.page_bytes,
            evict_s=evict,
        )

    def op_reopen(self, cold: bool) -> dict[str, Any] | None:
        if not self.disk:
            return None
        self._store().close()
        evict = 0.0
        if cold:
            evict_started = time.perf_counter()
            evict_page_cache(self.path)
            evict = time.perf_counter() - evict_started
        started = time.perf_counter()
        store = self._open()
        seconds = time.perf_counter() - started
        if self.n_prompts and store.probe(self.tokens(0, self.n_prompts - 1)) != self.scenario.prompt_pages:
            raise BenchError(f"{self.kind}: pages missing after reopen")
        return _result(
            seconds, [seconds], pages_stored=self._stored_pages(), calls=1, pages=0, nbytes=0, evict_s=evict
        )

    def op_footprint(self, trim: bool = False) -> dict[str, Any]:
        """Pages, files, inodes, disk and VmRSS; with ``trim``, also VmRSS after ``malloc_trim``.

        The trimmed figure separates memory the allocator keeps after ``free`` (RocksDB's flush and
        compaction buffers, freed memtables) from memory still in use. Trimming changes the process,
        so it is done only at the end.
        """
        store = self._store()
        stats = store.stats()
        files, inodes = count_inodes(self.path) if self.disk else (0, 0)
        result = {
            "pages_stored": stats.pages_stored,
            "files": files,
            "inodes": inodes,
            "disk_bytes": stats.disk_bytes,
            **self.op_rss(),
        }
        if trim and trim_heap():
            result["rss_trimmed_bytes"] = rss_bytes()[0]
        return result

    def op_close(self) -> dict[str, Any]:
        if self.store is not None:
            self.store.close()
            self.store = None
        return {}


class _RawParticipant(_Participant):
    """The disk itself: the same bytes written to one file with ``fsync`` and read back."""

    def __init__(self, spec: _WorkerSpec) -> None:
        super().__init__(spec)
        self.round_file: Path | None = None
        self.n_prompts = 0

    def op_open(self) -> dict[str, Any]:
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.mkdir(parents=True)
        return self.op_rss()

    def op_reset(self) -> dict[str, Any]:
        return self.op_open()

    def op_put(self) -> dict[str, Any]:
        count = self.scenario.prompts_per_round
        if self.round_file is not None:
            self.round_file.unlink(missing_ok=True)
        self.round_file = self.path / f"raw-{time.monotonic_ns()}.bin"
        views = [self.kv(i).contiguous().view(torch.uint8).numpy().reshape(-1).data for i in range(count)]
        os.sync()
        latencies = []
        started = time.perf_counter()
        fd = os.open(self.round_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for view in views:
                call = time.perf_counter()
                done = 0
                while done < len(view):
                    done += os.write(fd, view[done:])
                latencies.append(time.perf_counter() - call)
            calls = time.perf_counter() - started
            sync_started = time.perf_counter()
            os.fsync(fd)
        finally:
            os.close(fd)
        sync = time.perf_counter() - sync_started
        self.n_prompts = count
        pages = count * self.scenario.prompt_pages
        return _result(
            calls + sync,
            latencies,
            pages_stored=0,
            calls=count,
            pages=pages,
            nbytes=pages * self.scenario.page_bytes,
            sync_s=sync,
        )

    def op_get(self, round_index: int, cold: bool) -> dict[str, Any]:
        if self.round_file is None:
            raise BenchError("raw: get before put")
        size = self.scenario.prompt_bytes
        fd = os.open(self.round_file, os.O_RDONLY)
        try:
            evict = 0.0
            if cold:
                evict_started = time.perf_counter()
                os.sync()
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                evict = time.perf_counter() - evict_started
            else:
                self._read_all(fd, size, [])
            latencies: list[float] = []
            started = time.perf_counter()
            first = self._read_all(fd, size, latencies)
            seconds = time.perf_counter() - started
        finally:
            os.close(fd)
        if not _same_bytes(first, self.kv(0)):
            raise BenchError("raw: read back other bytes than were written")
        pages = self.n_prompts * self.scenario.prompt_pages
        return _result(
            seconds,
            latencies,
            pages_stored=0,
            calls=self.n_prompts,
            pages=pages,
            nbytes=pages * self.scenario.page_bytes,
            evict_s=evict,
        )

    def _read_all(self, fd: int, size: int, latencies: list[float]) -> torch.Tensor:
        first = None
        for index in range(self.n_prompts):
            call = time.perf_counter()
            out = torch.empty(size, dtype=torch.uint8)
            view = out.numpy().data
            done = 0
            while done < size:
                n = os.preadv(fd, [view[done:]], index * size + done)
                if n <= 0:
                    raise BenchError(f"raw: short read at prompt {index}")
                done += n
            latencies.append(time.perf_counter() - call)
            if first is None:
                first = out
        assert first is not None
        return first

    def op_close(self) -> dict[str, Any]:
        if self.round_file is not None:
            self.round_file.unlink(missing_ok=True)
        return {}


def _same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(a.contiguous().view(torch.uint8).flatten(), b.contiguous().view(torch.uint8).flatten())


def _result(
    seconds: float,
    latencies: Sequence[float],
    *,
    pages_stored: int,
    calls: int,
    pages: int,
    nbytes: int,
    sync_s: float = 0.0,
    evict_s: float = 0.0,
) -> dict[str, Any]:
    p50, p99 = _latency_ms(latencies)
    return dict(
        pages_stored=pages_stored,
        calls=calls,
        pages=pages,
        bytes=nbytes,
        seconds=seconds,
        sync_s=sync_s,
        evict_s=evict_s,
        p50_ms=p50,
        p99_ms=p99,
    )


def _worker_main(conn: multiprocessing.connection.Connection, spec: _WorkerSpec) -> None:
    """Serve ``(op, kwargs)`` until ``exit``; reply ``("ok", result)`` or ``("error", traceback)``."""
    logging.basicConfig(
        level=spec.log_level, format=f"%(asctime)s %(levelname)s [{spec.kind}] %(name)s: %(message)s"
    )
    participant: _Participant | None = None
    while True:
        try:
            op, kwargs = conn.recv()
        except EOFError:
            return
        if op == "exit":
            conn.send(("ok", {}))
            return
        try:
            if participant is None:
                participant = _RawParticipant(spec) if spec.kind == RAW else _StoreParticipant(spec)
            conn.send(("ok", getattr(participant, f"op_{op}")(**kwargs)))
        except BaseException:
            conn.send(("error", traceback.format_exc()))


# ====================================================================== orchestrator side


@contextlib.contextmanager
def _bare_main() -> Iterator[None]:
    """Hide the parent's ``__main__`` while starting workers.

    multiprocessing re-runs the parent's main script in every forkserver child; for the ``kvtune``
    console script that imports every command's dependencies (mlflow, SB3, ...: ~10 s a worker). The
    workers need only this module, which the forkserver has preloaded.
    """
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


class _Worker:
    """The orchestrator's handle on one worker process."""

    def __init__(self, context: Any, spec: _WorkerSpec) -> None:
        self.spec = spec
        self.label = f"{spec.kind}@{spec.scenario.name}/{spec.level:,}"
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=_worker_main, args=(child, spec), name=f"bench-{self.label}", daemon=True
        )
        with _bare_main():
            self.process.start()
        child.close()

    def call(self, op: str, **kwargs: Any) -> Any:
        self.send(op, **kwargs)
        return self.receive(op)

    def send(self, op: str, **kwargs: Any) -> None:
        self.conn.send((op, kwargs))

    def receive(self, op: str) -> Any:
        try:
            status, payload = self.conn.recv()
        except EOFError as error:
            self.process.join(5)
            raise BenchError(
                f"worker {self.label} died during {op} (exit code {self.process.exitcode}); "
                "out of memory? see the kernel log"
            ) from error
        if status != "ok":
            raise BenchError(f"worker {self.label}: {op} failed:\n{payload}")
        return payload

    def stop(self) -> None:
        if self.process.is_alive():
            try:
                self.conn.send(("exit", {}))
                self.conn.recv()
            except (OSError, EOFError):
                pass
            self.process.join(30)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(10)
        self.conn.close()


class TargetCheck(NamedTuple):
    """One target of issue 2 §4 and how this run did against it."""

    name: str
    measured: float
    threshold: float
    passed: bool | None
    detail: str

    @property
    def status(self) -> str:
        if self.passed is None:
            return "N/A"
        return "PASS" if self.passed else "MISS"


@dataclass
class BenchResult:
    """Everything one run measured, plus the paths it wrote."""

    config: BenchConfig
    machine: dict[str, str]
    scenarios: list[Scenario]
    measurements: list[dict[str, Any]]
    footprints: list[dict[str, Any]]
    ratios: list[dict[str, Any]]
    targets: list[TargetCheck]
    skipped: dict[str, str]
    notes: list[str]
    seconds: float = 0.0
    files: dict[str, Path] = field(default_factory=dict)


ProgressCallback = Callable[[str, int, int], None]
"""``progress(description, done, total)``, called after every step."""


class _Runner:
    def __init__(self, config: BenchConfig, progress: ProgressCallback | None) -> None:
        self.config = config
        self.progress = progress
        self.measurements: list[dict[str, Any]] = []
        self.footprints: list[dict[str, Any]] = []
        self.skipped: dict[str, str] = {}
        self.notes: list[str] = []
        self.started = time.perf_counter()
        self.done = 0
        self.total = 0
        self.reopen_ops = tuple(op for op in _REOPEN_OPS if op[1] in config.reopen_caches)
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(["experiments.bench_store"])

    def step(self, description: str) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(description, self.done, self.total)

    def plan_steps(self, plans: dict[str, dict[int, list[str]]]) -> int:
        """Progress steps of the whole run: one per worker call the orchestrator makes (fills in chunks)."""
        steps = 0
        for levels in plans.values():
            for level, kinds in levels.items():
                workers = len(kinds) + 1
                steps += workers * (
                    3 + self.config.rounds * len(_OPS) + self.config.reopen_rounds * len(self.reopen_ops)
                )
                steps += len(kinds) * math.ceil(level / self.config.fill_chunk_pages)
        return steps

    def kinds_for(self, scenario: Scenario, level: int, kinds: Sequence[str]) -> list[str]:
        """``kinds`` minus the memory kind where its pages would not fit comfortably in RAM."""
        result = []
        for kind in kinds:
            if kind == "memory":
                pages = max(level, scenario.prompt_pages * scenario.prompts_per_round) + (
                    self.config.rounds * scenario.prompts_per_round * scenario.prompt_pages
                )
                need = int(pages * scenario.page_bytes * 1.5)
                limit = int(_mem_available_bytes() * self.config.memory_limit_fraction)
                if need > limit:
                    reason = (
                        f"memory@{scenario.name}/{level:,}: skipped, needs ~{_size(need)} of RAM, over "
                        f"{self.config.memory_limit_fraction:.0%} of the "
                        f"{_size(limit / self.config.memory_limit_fraction)} available"
                    )
                    self.skipped[f"memory@{scenario.name}/{level}"] = reason
                    logger.warning(reason)
                    continue
            result.append(kind)
        return result

    def run(self) -> BenchResult:
        config = self.config
        kinds, skipped = available_kinds(config.kinds)
        for kind, reason in skipped.items():
            self.skipped[kind] = reason
            logger.warning("kind %s skipped: %s", kind, reason)
        if "lsm" not in kinds:
            raise BenchError("the lsm kind does not import; nothing to benchmark against")
        scenarios = config.scenarios()
        plans = {s.name: {level: self.kinds_for(s, level, kinds) for level in s.levels} for s in scenarios}
        self.total = self.plan_steps(plans)
        config.data_dir.mkdir(parents=True, exist_ok=True)
        machine = machine_info(config.data_dir)
        logger.info("bench config: %s", json.dumps(config.describe(), default=str))
        logger.info("machine: %s", machine)
        for scenario in scenarios:
            logger.info("scenario %s: %s", scenario.name, scenario.description)
            self.run_scenario(scenario, plans[scenario.name])
        ratios = compute_ratios(self.measurements, scenarios)
        targets = check_targets(self.measurements, self.footprints, ratios, scenarios, config)
        return BenchResult(
            config=config,
            machine=machine,
            scenarios=scenarios,
            measurements=self.measurements,
            footprints=self.footprints,
            ratios=ratios,
            targets=targets,
            skipped=self.skipped,
            notes=self.notes,
            seconds=time.perf_counter() - self.started,
        )

    def run_scenario(self, scenario: Scenario, plan: dict[int, list[str]]) -> None:
        config = self.config
        workers: dict[tuple[str, int], _Worker] = {}
        try:
            for level, kinds in plan.items():
                for kind in [*kinds, RAW]:
                    spec = _WorkerSpec(
                        kind=kind,
                        scenario=scenario,
                        level=level,
                        path=config.data_dir / f"{scenario.name}-{level}-{kind}",
                        seed=config.seed,
                        store_config=config.store_config,
                        log_level=logging.getLogger().getEffectiveLevel(),
                    )
                    workers[(kind, level)] = _Worker(self.context, spec)
            for (kind, level), worker in workers.items():
                self.footprint(scenario, (kind, level, "empty"), worker.call("open"), 0.0)
                self.step(f"{scenario.name}: open {worker.label}")
            self.fill(scenario, workers)
            for round_index in range(config.rounds):
                self.run_round(scenario, workers, round_index)
            for (kind, level), worker in workers.items():
                if kind != RAW:
                    self.footprint(
                        scenario, (kind, level, "end"), worker.call("footprint", trim=True), math.nan
                    )
                self.step(f"{scenario.name}: footprint {worker.label}")
            for worker in workers.values():
                worker.call("close")
                self.step(f"{scenario.name}: close {worker.label}")
        finally:
            for worker in workers.values():
                worker.stop()

    def fill(self, scenario: Scenario, workers: dict[tuple[str, int], _Worker]) -> None:
        """Fill every store to its level, all at once, in chunks (so progress moves)."""
        filling = {key: worker for key, worker in workers.items() if key[0] != RAW and key[1] > 0}
        if not filling:
            return
        chunk = self.config.fill_chunk_pages
        fill_s = dict.fromkeys(filling, 0.0)
        top = max(level for _, level in filling)
        for target in range(chunk, top + chunk, chunk):
            active = {key: worker for key, worker in filling.items() if key[1] > target - chunk}
            for (_, level), worker in active.items():
                worker.send("fill", pages=min(target, level))
            for key, worker in active.items():
                result = worker.receive("fill")
                fill_s[key] += result["seconds"]
                self.step(f"{scenario.name}: fill {worker.label} {result['pages_stored']:,} pages")
        for (kind, level), worker in filling.items():
            seconds = fill_s[(kind, level)]
            logger.info(
                "%s: filled to %s pages in %.1f s (all stores filling at once)",
                worker.label,
                f"{level:,}",
                seconds,
            )
            self.footprint(scenario, (kind, level, "filled"), worker.call("footprint"), seconds)

    def run_round(
        self, scenario: Scenario, workers: dict[tuple[str, int], _Worker], round_index: int
    ) -> None:
        names = sorted({kind for kind, _ in workers}, key=(*KINDS, RAW).index)
        shift = round_index % len(names)
        order = names[shift:] + names[:shift]
        if scenario.fresh_per_round:
            for each in workers.values():
                each.call("reset")
        ops = _OPS + (
            self.reopen_ops if round_index >= self.config.rounds - self.config.reopen_rounds else ()
        )
        for op, cache in ops:
            for level in scenario.levels:
                for kind in order:
                    worker = workers.get((kind, level))
                    if worker is None:
                        continue
                    self.step(
                        f"{scenario.name} round {round_index + 1}/{self.config.rounds}: "
                        f"{op}{f' ({cache})' if cache else ''} {worker.label}"
                    )
                    if kind == RAW and op in ("probe", "reopen"):
                        continue
                    if op == "put":
                        result = worker.call("put")
                    elif op == "probe":
                        result = worker.call("probe", round_index=round_index)
                    elif op == "get":
                        result = worker.call("get", round_index=round_index, cold=cache == "cold")
                    else:
                        result = worker.call("reopen", cold=cache == "cold")
                    if result is not None:
                        self.record(scenario, (level, round_index, kind, op, cache), result)

    def record(self, scenario: Scenario, key: tuple[int, int, str, str, str], result: dict[str, Any]) -> None:
        """One measurement row; ``key`` is (level, round, kind, op, cache)."""
        level, round_index, kind, op, cache = key
        seconds = result["seconds"]
        mb_per_s = result["bytes"] / seconds / 1e6 if seconds > 0 and result["bytes"] else math.nan
        pages_per_s = result["pages"] / seconds if seconds > 0 and result["pages"] else math.nan
        calls_per_s = result["calls"] / seconds if seconds > 0 else math.nan
        rate = mb_per_s if op in ("put", "get") else calls_per_s
        row = dict(
            scenario=scenario.name,
            level=level,
            round=round_index,
            kind=kind,
            op=op,
            cache=cache,
            rate=rate,
            rate_unit=_RATE_UNITS[op],
            mb_per_s=mb_per_s,
            pages_per_s=pages_per_s,
            elapsed_s=time.perf_counter() - self.started,
            **{
                k: result[k]
                for k in (
                    "pages_stored",
                    "calls",
                    "pages",
                    "bytes",
                    "seconds",
                    "sync_s",
                    "evict_s",
                    "p50_ms",
                    "p99_ms",
                )
            },
        )
        self.measurements.append(row)
        logger.debug("measured %s", row)

    def footprint(
        self, scenario: Scenario, where: tuple[str, int, str], result: dict[str, Any], fill_s: float
    ) -> None:
        """Record a store's footprint; ``where`` is (kind, level, stage)."""
        kind, level, stage = where
        self.footprints.append(
            dict(
                scenario=scenario.name,
                level=level,
                kind=kind,
                stage=stage,
                pages_stored=result.get("pages_stored", 0),
                files=result.get("files", 0),
                inodes=result.get("inodes", 0),
                disk_bytes=result.get("disk_bytes", 0),
                rss_bytes=result["rss_bytes"],
                rss_peak_bytes=result["rss_peak_bytes"],
                rss_trimmed_bytes=result.get("rss_trimmed_bytes", math.nan),
                fill_s=fill_s,
            )
        )


def compute_ratios(
    measurements: Sequence[dict[str, Any]], scenarios: Sequence[Scenario]
) -> list[dict[str, Any]]:
    """lsm against every other kind (median of per-round ratios), and lsm at the top level vs the bottom."""
    ratios: list[dict[str, Any]] = []
    for other in ("file", "applog", "memory", RAW):
        ratios.extend(pair_ratios(measurements, "lsm", other))
    for scenario in scenarios:
        if len(scenario.levels) > 1:
            ratios.extend(
                level_ratios(measurements, "lsm", scenario.name, scenario.levels[0], scenario.levels[-1])
            )
    return ratios


def _find_ratio(ratios: Sequence[dict[str, Any]], key: tuple[str, int, str, str, str]) -> float:
    """The median ratio of (scenario, level, op, cache, denominator), NaN if it was not measured."""
    for row in ratios:
        if (row["scenario"], row["level"], row["op"], row["cache"], row["denominator"]) == key:
            return float(row["median_ratio"])
    return math.nan


def lsm_cache_budget(config: StoreConfig) -> int:
    """Bytes RocksDB may hold in memory by configuration: block cache plus every memtable."""
    return config.block_cache_bytes + config.write_buffer_size * config.max_write_buffer_number


def check_targets(
    measurements: Sequence[dict[str, Any]],
    footprints: Sequence[dict[str, Any]],
    ratios: Sequence[dict[str, Any]],
    scenarios: Sequence[Scenario],
    config: BenchConfig,
) -> list[TargetCheck]:
    """The targets of issue 2 §4, each with its measured value (medians of per-round ratios)."""
    checks: list[TargetCheck] = []

    def add(name: str, measured: float, threshold: float, detail: str) -> None:
        passed = None if math.isnan(measured) else measured >= threshold
        checks.append(TargetCheck(name, measured, threshold, passed, detail))

    large = next(s for s in scenarios if s.name == "large")
    small = next(s for s in scenarios if s.name == "small")
    add(
        "large pages: lsm put >= 70% of raw write",
        _find_ratio(ratios, ("large", 0, "put", "", RAW)),
        0.7,
        f"lsm/raw durable put, {_size(large.page_bytes)} pages",
    )
    add(
        "large pages: lsm cold get >= 70% of raw cold read",
        _find_ratio(ratios, ("large", 0, "get", "cold", RAW)),
        0.7,
        "lsm/raw, page cache dropped",
    )
    top, bottom = small.levels[-1], small.levels[0]
    scale_note = "" if top >= 1_000_000 else f" (below the 1,000,000-page target scale: {top:,} pages)"
    for op, cache, threshold in (("probe", "", 10.0), ("put", "", 5.0), ("get", "warm", 1.5)):
        label = f"{op} ({cache})" if cache else op
        add(
            f"{top:,} small pages: lsm {label} >= {threshold:g}x file's",
            _find_ratio(ratios, ("small", top, op, cache, "file")),
            threshold,
            f"lsm/file{scale_note}",
        )
    if top != bottom:
        for op, cache in (("put", ""), ("probe", ""), ("get", "warm"), ("get", "cold")):
            label = f"{op} ({cache})" if cache else op
            add(
                f"{bottom:,} -> {top:,} pages: lsm {label} keeps >= 70%",
                _find_ratio(ratios, ("small", top, op, cache, f"lsm@{bottom}")),
                0.7,
                f"lsm@{top:,} / lsm@{bottom:,}, paired by round",
            )
    budget = lsm_cache_budget(config.store_config)
    growth = _rss_growth(footprints, "small", "lsm", top)
    low_growth = _rss_growth(footprints, "small", "lsm", bottom)
    trimmed = _rss_growth(footprints, "small", "lsm", top, "rss_trimmed_bytes")

    def size(value: float) -> str:
        return "n/a" if math.isnan(value) else _size(value)

    checks.append(
        TargetCheck(
            f"lsm RSS growth at {top:,} pages <= configured caches",
            growth,
            float(budget),
            None if math.isnan(growth) else growth <= budget,
            f"VmRSS end - empty = {size(growth)} ({size(low_growth)} at {bottom:,} pages; "
            f"{size(trimmed)} after malloc_trim); caches = block cache "
            f"{_size(config.store_config.block_cache_bytes)} + {config.store_config.max_write_buffer_number} "
            f"memtables x {_size(config.store_config.write_buffer_size)} = {_size(budget)}",
        )
    )
    return checks


def _rss_growth(
    footprints: Sequence[dict[str, Any]], scenario: str, kind: str, level: int, column: str = "rss_bytes"
) -> float:
    """VmRSS at the end (``column``) minus VmRSS with the store open and empty."""
    by_stage = {
        f["stage"]: f for f in footprints if (f["scenario"], f["kind"], f["level"]) == (scenario, kind, level)
    }
    if "empty" not in by_stage or "end" not in by_stage:
        return math.nan
    return float(by_stage["end"][column] - by_stage["empty"]["rss_bytes"])


# ====================================================================== outputs


class ReportTable(NamedTuple):
    """A titled table of strings (rendered with rich by the command line, as Markdown in report.md)."""

    title: str
    headers: tuple[str, ...]
    rows: Sequence[tuple[str, ...]]


def _fmt(value: float, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def report_tables(result: BenchResult) -> list[ReportTable]:
    """The run as tables (rendered by the command line with rich and written as Markdown)."""
    import pandas as pd

    tables: list[ReportTable] = []
    frame = pd.DataFrame(result.measurements, columns=list(MEASUREMENT_COLUMNS))
    if not frame.empty:
        grouped = frame.groupby(["scenario", "level", "op", "cache", "kind"], sort=False)
        rows = []
        kind_order = {k: i for i, k in enumerate((*KINDS, RAW))}
        op_order = {f"{op}/{cache}": i for i, (op, cache) in enumerate(_ALL_OPS)}
        keys = sorted(
            grouped.groups,
            key=lambda k: (k[0] != "large", k[1], op_order[f"{k[2]}/{k[3]}"], kind_order[k[4]]),
        )
        for key in keys:
            group = grouped.get_group(key)
            scenario, level, op, cache, kind = key
            rows.append(
                (
                    scenario,
                    f"{level:,}",
                    f"{op} ({cache})" if cache else op,
                    kind,
                    f"{int(group['pages_stored'].median()):,}",
                    _fmt(group["rate"].median()),
                    group["rate_unit"].iloc[0],
                    _fmt(group["rate"].min()) + " - " + _fmt(group["rate"].max()),
                    _fmt(group["pages_per_s"].median(), 0),
                    _fmt(group["p50_ms"].median(), 3),
                    _fmt(group["p99_ms"].median(), 3),
                    str(len(group)),
                )
            )
        tables.append(
            ReportTable(
                "Throughput (median over rounds) and per-call latency (median over rounds of p50 / p99)",
                (
                    "scenario",
                    "stored pages",
                    "op",
                    "kind",
                    "pages stored",
                    "rate",
                    "unit",
                    "min - max",
                    "pages/s",
                    "p50 ms",
                    "p99 ms",
                    "rounds",
                ),
                rows,
            )
        )
    ratio_rows = []
    for row in sorted(result.ratios, key=lambda r: (r["scenario"] != "large", r["level"], r["denominator"])):
        ratio_rows.append(
            (
                row["scenario"],
                f"{row['level']:,}",
                f"{row['op']} ({row['cache']})" if row["cache"] else row["op"],
                f"{row['numerator']}/{row['denominator']}",
                _fmt(row["median_ratio"], 2),
                _fmt(row["min_ratio"], 2) + " - " + _fmt(row["max_ratio"], 2),
                str(row["rounds"]),
            )
        )
    tables.append(
        ReportTable(
            "Ratios: median of per-round ratios (> 1: lsm faster; reopen: reopens/s)",
            ("scenario", "stored pages", "op", "ratio", "median", "min - max", "rounds"),
            ratio_rows,
        )
    )
    foot_rows = []
    for row in result.footprints:
        if row["kind"] == RAW:
            continue
        foot_rows.append(
            (
                row["scenario"],
                f"{row['level']:,}",
                row["kind"],
                row["stage"],
                f"{row['pages_stored']:,}",
                f"{row['files']:,}",
                f"{row['inodes']:,}",
                _size(row["disk_bytes"]),
                _size(row["rss_bytes"]),
                "" if math.isnan(row["rss_trimmed_bytes"]) else _size(row["rss_trimmed_bytes"]),
                _fmt(row["fill_s"]) if row["stage"] == "filled" else "",
            )
        )
    tables.append(
        ReportTable(
            "Footprint: files, inodes, disk, resident memory (VmRSS of the kind's own worker process)",
            (
                "scenario",
                "level",
                "kind",
                "stage",
                "pages",
                "files",
                "inodes",
                "disk",
                "RSS",
                "RSS trimmed",
                "fill s (all at once)",
            ),
            foot_rows,
        )
    )
    tables.append(
        ReportTable(
            "Targets (issue 2 §4)",
            ("status", "target", "measured", "threshold", "detail"),
            [
                (
                    t.status,
                    t.name,
                    _fmt(t.measured, 2)
                    if "RSS" not in t.name
                    else _size(t.measured)
                    if not math.isnan(t.measured)
                    else "-",
                    f"{t.threshold:g}" if "RSS" not in t.name else _size(t.threshold),
                    t.detail,
                )
                for t in result.targets
            ],
        )
    )
    tables.append(ReportTable("Machine", ("", ""), [(k, v) for k, v in result.machine.items()]))
    return tables


def _markdown(tables: Sequence[ReportTable], result: BenchResult) -> str:
    lines = ["# kvtune bench store", ""]
    for scenario in result.scenarios:
        lines.append(f"- **{scenario.name}**: {scenario.description}")
    for note in [*result.notes, *result.skipped.values()]:
        lines.append(f"- {note}")
    lines.append(f"- rounds: {result.config.rounds}; run time {result.seconds / 60:.1f} min")
    lines.append("")
    for table in tables:
        lines += [
            f"## {table.title}",
            "",
            "| " + " | ".join(table.headers) + " |",
            "|" + "---|" * len(table.headers),
        ]
        lines += ["| " + " | ".join(row) + " |" for row in table.rows]
        lines.append("")
    return "\n".join(lines)


def plot(result: BenchResult, path: Path) -> None:
    """Six panels: large pages; small-page probe, put, get vs stored pages; RSS growth; reopen and inodes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    frame = pd.DataFrame(result.measurements, columns=list(MEASUREMENT_COLUMNS))
    foot = pd.DataFrame(result.footprints, columns=list(FOOTPRINT_COLUMNS))
    colors = {
        "lsm": "tab:blue",
        "file": "tab:orange",
        "applog": "tab:green",
        "memory": "tab:purple",
        RAW: "tab:gray",
    }
    fig, axes = plt.subplots(2, 3, figsize=(18, 10))
    ax = axes[0][0]
    large = frame[frame["scenario"] == "large"]
    ops = [("put", ""), ("get", "warm"), ("get", "cold")]
    kinds = [k for k in (*KINDS, RAW) if k in set(large["kind"])]
    width = 0.8 / max(len(kinds), 1)
    for i, kind in enumerate(kinds):
        medians, lows, highs = [], [], []
        for op, cache in ops:
            rates = large[(large["kind"] == kind) & (large["op"] == op) & (large["cache"] == cache)]["rate"]
            med = float(rates.median()) if len(rates) else 0.0
            medians.append(med)
            lows.append(med - float(rates.min()) if len(rates) else 0.0)
            highs.append(float(rates.max()) - med if len(rates) else 0.0)
        ax.bar(
            np.arange(len(ops)) + i * width,
            medians,
            width,
            yerr=[lows, highs],
            label=kind,
            color=colors[kind],
            capsize=3,
        )
    ax.set_xticks(
        np.arange(len(ops)) + width * (len(kinds) - 1) / 2, ["put (durable)", "get (warm)", "get (cold)"]
    )
    ax.set_yscale("log")
    ax.set_ylabel("MB/s (median, min-max over rounds)")
    large_scenario = next(s for s in result.scenarios if s.name == "large")
    ax.set_title(f"Large pages ({_size(large_scenario.page_bytes)}, Llama-3.1-8B scaled)")
    ax.legend(fontsize=8)
    small = frame[frame["scenario"] == "small"]
    panels = [
        (axes[0][1], "probe", "", "probes/s"),
        (axes[0][2], "put", "", "put MB/s (durable)"),
        (axes[1][0], "get", "warm", "get MB/s: warm (solid), cold (dashed)"),
    ]
    for ax, op, cache, label in panels:
        for kind in (*KINDS, RAW):
            for c, style in ((cache, "-o"), ("cold", "--s")) if op == "get" else ((cache, "-o"),):
                part = small[(small["kind"] == kind) & (small["op"] == op) & (small["cache"] == c)]
                if part.empty:
                    continue
                med = part.groupby("level")["rate"].median()
                ax.plot(med.index, med.values, style, color=colors[kind], label=kind if c == cache else None)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("stored pages (4 KiB)")
        ax.set_ylabel(label)
        ax.set_title(f"Small pages: {label.split(':')[0]}")
        ax.legend(fontsize=8)
    ax = axes[1][1]
    small_foot = foot[(foot["scenario"] == "small") & (foot["kind"] != RAW)]
    for kind in KINDS:
        part = small_foot[small_foot["kind"] == kind]
        if part.empty:
            continue
        levels = sorted(set(part["level"]))
        growth = []
        for level in levels:
            at = part[part["level"] == level].set_index("stage")["rss_bytes"]
            growth.append((at.get("end", np.nan) - at.get("empty", np.nan)) / MiB)
        ax.plot(levels, growth, "-o", color=colors[kind], label=kind)
    ax.axhline(
        lsm_cache_budget(result.config.store_config) / MiB,
        color=colors["lsm"],
        linestyle=":",
        label="lsm configured caches",
    )
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=10)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("stored pages (4 KiB)")
    ax.set_ylabel("RSS growth, MiB (end - empty store)")
    ax.set_title("Resident memory vs stored pages")
    ax.legend(fontsize=8)
    ax = axes[1][2]
    inode_axis = ax.twinx()
    reopen = small[small["op"] == "reopen"]
    for kind in DISK_KINDS:
        for cache, style in (("cold", "-o"), ("warm", ":o")):
            part = reopen[(reopen["kind"] == kind) & (reopen["cache"] == cache)]
            if not part.empty:
                med = part.groupby("level")["seconds"].median()
                ax.plot(
                    med.index, med.values * 1e3, style, color=colors[kind], label=f"{kind} reopen ({cache})"
                )
        files = small_foot[(small_foot["kind"] == kind) & (small_foot["stage"] == "end")]
        if not files.empty:
            inode_axis.plot(
                files["level"], files["inodes"], "--x", color=colors[kind], alpha=0.6, label=f"{kind} inodes"
            )
    for axis in (ax, inode_axis):
        axis.set_xscale("log")
        axis.set_yscale("log")
    ax.set_xlabel("stored pages (4 KiB)")
    ax.set_ylabel("reopen ms (solid: cold, dotted: warm)")
    inode_axis.set_ylabel("inodes (dashed)")
    ax.set_title("Reopen time and inodes vs stored pages")
    ax.legend(fontsize=7, loc="upper left")
    inode_axis.legend(fontsize=7, loc="lower right")
    machine = result.machine
    fig.suptitle(
        f"kvtune bench store — {machine.get('date', '')}, {machine.get('nproc', '?')} cores, "
        f"{machine.get('cpu', '')}, {machine.get('memory', '')} RAM; medians of {result.config.rounds} "
        "interleaved rounds",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(result: BenchResult) -> dict[str, Path]:
    """measurements.csv, footprint.csv, ratios.csv, summary.json, report.md and bench_store.png in ``out``."""
    import pandas as pd

    out = result.config.out
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "measurements": out / "measurements.csv",
        "footprint": out / "footprint.csv",
        "ratios": out / "ratios.csv",
        "summary": out / "summary.json",
        "report": out / "report.md",
        "plot": out / "bench_store.png",
    }
    pd.DataFrame(result.measurements, columns=list(MEASUREMENT_COLUMNS)).to_csv(
        files["measurements"], index=False
    )
    pd.DataFrame(result.footprints, columns=list(FOOTPRINT_COLUMNS)).to_csv(files["footprint"], index=False)
    pd.DataFrame(result.ratios, columns=list(RATIO_COLUMNS)).to_csv(files["ratios"], index=False)
    summary = {
        "config": result.config.describe(),
        "machine": result.machine,
        "scenarios": {s.name: s.description for s in result.scenarios},
        "skipped": result.skipped,
        "notes": result.notes,
        "targets": [
            {
                "name": t.name,
                "status": t.status,
                "measured": t.measured,
                "threshold": t.threshold,
                "detail": t.detail,
            }
            for t in result.targets
        ],
        "seconds": result.seconds,
    }
    files["summary"].write_text(json.dumps(summary, indent=2, default=str))
    files["report"].write_text(_markdown(report_tables(result), result))
    plot(result, files["plot"])
    result.files = files
    return files


def run_bench(config: BenchConfig, progress: ProgressCallback | None = None) -> BenchResult:
    """Run the whole benchmark, write its outputs to ``config.out``, and return what it measured."""
    runner = _Runner(config, progress)
    result = runner.run()
    write_outputs(result)
    if not config.keep_data:
        # After the outputs: deleting a million page files can take minutes on a busy disk.
        started = time.perf_counter()
        logger.info("removing the stores under %s", config.data_dir)
        shutil.rmtree(config.data_dir, ignore_errors=True)
        logger.info("stores removed in %.0f s", time.perf_counter() - started)
    for target in result.targets:
        logger.info(
            "target %s: %s (measured %.3g, threshold %.3g)",
            target.status,
            target.name,
            target.measured,
            target.threshold,
        )
    return result
