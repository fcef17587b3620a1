"""kvtune's SGLang backend against SGLang's own ``HiCacheFile``: the same ``HiCacheStorage`` calls.

Both backends get SGLang's calls in SGLang's shape: keys from SGLang's page hash (64 hex chars, chained),
at most 128 pages per call (``STORAGE_BATCH_SIZE``), flat page tensors. Per stored-page count, each round
builds a fresh store per backend, the two backends taking turns (A B, then B A) so drift on a shared
machine hits both: ``batch_set`` of every page, ``batch_exists`` of every page, ``batch_get`` of every
page into target tensors (all warm: just written), then a reopen (a new backend object on the same
directory and its first ``batch_exists``), and the files in the directory. Latencies are per call.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from store.diskusage import directory_usage

logger = logging.getLogger(__name__)

BACKENDS = ("kvtune", "file")
LLAMA_PAGE_BYTES = 32 * 2 * 8 * 128 * 2 * 64
"""Llama-3.1-8B, 64-token page: 32 layers x K,V x 8 KV heads x 128 dims x bf16 x 64 tokens = 8 MiB."""
PAGE_TOKENS = 64


@dataclass(frozen=True)
class SglangBenchConfig:
    pages: tuple[int, ...] = (10_000, 100_000)
    page_bytes: int = LLAMA_PAGE_BYTES // 512
    rounds: int = 2
    batch: int = 128
    workdir: Path = Path("runs/bench-sglang/data")

    def __post_init__(self) -> None:
        if self.page_bytes % 16 or self.page_bytes < 16:
            raise ValueError(f"page_bytes must be a positive multiple of 16, got {self.page_bytes}")
        if not 1 <= self.batch <= 128:
            raise ValueError(f"batch must be in [1, 128] (SGLang's STORAGE_BATCH_SIZE), got {self.batch}")
        if self.rounds < 1 or not self.pages or min(self.pages) < 1:
            raise ValueError("rounds and every page count must be at least 1")


@dataclass(frozen=True)
class SglangBenchRow:
    backend: str
    pages: int
    round: int
    op: str
    seconds: float
    pages_per_s: float
    mb_per_s: float
    p50_ms: float
    p99_ms: float
    files: int


def page_keys(n_pages: int) -> list[str]:
    """SGLang's chained page hashes of one long token sequence of ``n_pages`` pages."""
    from sglang.srt.mem_cache.utils import get_hash_str

    keys = get_hash_str(list(range(n_pages * PAGE_TOKENS)), None, page_size=PAGE_TOKENS)
    assert isinstance(keys, list)
    return keys


BENCH_MODEL = "meta-llama/Llama-3.1-8B"
"""The model whose pages the benchmark stores (its name keys the backends' files)."""


def make_backend(name: str, path: Path) -> Any:
    """A backend as SGLang's factory would build it (the file backend through its own class)."""
    from sglang.srt.mem_cache.hicache_storage import HiCacheFile

    from agents.hicache_backend import KvtuneHiCacheStorage
    from store.hicache_adapter import storage_config

    extra = {"path": str(path), "interval_s": 0, "file_storage_path": str(path)}
    config = storage_config(BENCH_MODEL, extra, page_first=False)
    if name == "kvtune":
        return KvtuneHiCacheStorage(config, {})
    if name == "file":
        return HiCacheFile(config, file_path=str(path))
    raise ValueError(f"unknown backend {name!r}; valid backends: {', '.join(BACKENDS)}")


def _batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _timed(calls: Iterator[Callable[[], object]]) -> tuple[float, list[float]]:
    latencies = []
    for call in calls:
        started = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - started)
    return sum(latencies), latencies


def run_one(name: str, n_pages: int, round_index: int, config: SglangBenchConfig) -> list[SglangBenchRow]:
    path = config.workdir / f"{name}-{n_pages}-{round_index}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    keys = page_keys(n_pages)
    elements = config.page_bytes // 2
    source = torch.randn(config.batch, elements, generator=torch.Generator().manual_seed(round_index))
    pages = list(source.to(torch.bfloat16))
    targets = [torch.empty(elements, dtype=torch.bfloat16) for _ in range(config.batch)]
    backend = make_backend(name, path)
    results: dict[str, tuple[float, list[float]]] = {}
    batches = list(_batches(keys, config.batch))
    results["batch_set"] = _timed(partial(backend.batch_set, b, pages[: len(b)]) for b in batches)
    found_pages = [0]

    def exists(keys_of_batch: list[str]) -> None:
        found_pages[0] += backend.batch_exists(keys_of_batch)

    results["batch_exists"] = _timed(partial(exists, b) for b in batches)
    results["batch_get"] = _timed(partial(backend.batch_get, b, targets[: len(b)]) for b in batches)
    if found_pages[0] != n_pages:
        raise RuntimeError(f"{name}: batch_exists found {found_pages[0]} of {n_pages} pages just written")
    if name == "kvtune":
        backend.close()
    started = time.perf_counter()
    reopened = make_backend(name, path)
    found = reopened.batch_exists(keys[: config.batch])
    reopen_s = time.perf_counter() - started
    results["reopen"] = (reopen_s, [reopen_s])
    if name == "kvtune":
        reopened.close()
    if found != min(config.batch, n_pages):
        raise RuntimeError(f"{name}: after a reopen batch_exists found {found} pages")
    files = directory_usage(path)[1]
    rows = []
    for op, (seconds, latencies) in results.items():
        moved = n_pages if op != "reopen" else 0
        rows.append(
            SglangBenchRow(
                backend=name,
                pages=n_pages,
                round=round_index,
                op=op,
                seconds=seconds,
                pages_per_s=moved / seconds if seconds else 0.0,
                mb_per_s=moved * config.page_bytes / seconds / 1e6
                if seconds and op != "batch_exists"
                else 0.0,
                p50_ms=float(np.percentile(latencies, 50)) * 1e3,
                p99_ms=float(np.percentile(latencies, 99)) * 1e3,
                files=files,
            )
        )
    shutil.rmtree(path, ignore_errors=True)
    return rows


def run_sglang_bench(
    config: SglangBenchConfig, progress: Callable[[str], None] = lambda _: None
) -> list[SglangBenchRow]:
    """Every page count, ``rounds`` interleaved rounds of both backends (order alternating per round)."""
    rows: list[SglangBenchRow] = []
    for n_pages in config.pages:
        for round_index in range(config.rounds):
            order = BACKENDS if round_index % 2 == 0 else BACKENDS[::-1]
            for name in order:
                progress(f"{name} {n_pages} pages, round {round_index + 1}/{config.rounds}")
                rows.extend(run_one(name, n_pages, round_index, config))
    return rows


def summarise(rows: list[SglangBenchRow]) -> list[dict[str, Any]]:
    """Median over rounds per (pages, op, backend), with kvtune / file ratios of throughput."""
    table: list[dict[str, Any]] = []
    keys = sorted({(r.pages, r.op) for r in rows}, key=lambda k: (k[0], k[1]))
    for n_pages, op in keys:
        entry: dict[str, Any] = {"pages": n_pages, "op": op}
        for name in BACKENDS:
            mine = [r for r in rows if r.backend == name and r.pages == n_pages and r.op == op]
            entry[f"{name}_pages_per_s"] = float(np.median([r.pages_per_s for r in mine]))
            entry[f"{name}_p99_ms"] = float(np.median([r.p99_ms for r in mine]))
            entry[f"{name}_seconds"] = float(np.median([r.seconds for r in mine]))
            entry[f"{name}_files"] = int(np.median([r.files for r in mine]))
        table.append(entry)
    return table
