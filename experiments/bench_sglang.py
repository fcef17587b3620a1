"""kvtune's SGLang backend against SGLang's own ``HiCacheFile``: the same ``HiCacheStorage`` calls.

Every backend gets SGLang's calls in SGLang's shape: requests of ``batch`` pages (128, SGLang's
``STORAGE_BATCH_SIZE``: an 8,192-token prompt at 64 tokens a page), each one call, keys from SGLang's
page hash (64 hex chars, chained from the request's first page). Contenders:

- ``kvtune``: SGLang's default path (flat page tensors; no ``extra_info`` on ``batch_set``/``batch_get``,
  so the backend's page layout: one store operation per page);
- ``kvtune-v1``: SGLang's v1 path with ``hicache_storage_pass_prefix_keys`` (the backend's prefix layout:
  one store operation per call), pages moved to and from a host pool (:class:`HostPages`); each call is
  a whole request, so its prefix is empty and a read reads no prefix pages;
- ``file``: SGLang's own ``HiCacheFile`` (it has the default path only).

Per stored-page count, each round builds a fresh store per backend, the backends taking turns (A B C,
then C B A) so drift on a shared machine hits all: ``batch_set`` of every page, ``batch_exists`` of
every page, ``batch_get`` of every page (all warm: just written), then a reopen (a new backend object on
the same directory and its first ``batch_exists``), and the files in the directory. Latencies are per
call.
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

BACKENDS = ("kvtune", "kvtune-v1", "file")
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


class HostPages:
    """A host pool of ``pages`` flat bf16 pages with the methods of SGLang's host pool the v1 path calls
    (SGLang's own pool cannot be imported here: see the README)."""

    def __init__(self, pages: int, elements: int, page_tokens: int = PAGE_TOKENS) -> None:
        self.page_size = page_tokens
        self.kv_buffer = torch.zeros((pages, elements), dtype=torch.bfloat16)

    def get_data_page(self, index: int, flat: bool = True) -> torch.Tensor:
        return self.kv_buffer[index // self.page_size]

    def get_dummy_flat_data_page(self) -> torch.Tensor:
        return torch.zeros_like(self.kv_buffer[0])

    def set_from_flat_data_page(self, index: int, data_page: torch.Tensor) -> None:
        self.kv_buffer[index // self.page_size].copy_(data_page)


def request_keys(n_pages: int, request_pages: int) -> list[list[str]]:
    """SGLang's chained page hashes of requests of ``request_pages`` pages (distinct tokens), ``n_pages``
    pages in all."""
    from sglang.srt.mem_cache.utils import get_hash_str

    requests = []
    for first in range(0, n_pages, request_pages):
        tokens = list(range(first * PAGE_TOKENS, min(first + request_pages, n_pages) * PAGE_TOKENS))
        keys = get_hash_str(tokens, None, page_size=PAGE_TOKENS)
        assert isinstance(keys, list)
        requests.append(keys)
    return requests


BENCH_MODEL = "meta-llama/Llama-3.1-8B"
"""The model whose pages the benchmark stores (its name keys the backends' files)."""


def make_backend(name: str, path: Path, pool: HostPages) -> Any:
    """A backend as SGLang's factory would build it (the file backend through its own class)."""
    from sglang.srt.mem_cache.hicache_storage import HiCacheFile

    from agents.hicache_backend import KvtuneHiCacheStorage
    from store.hicache_adapter import storage_config

    extra = {"path": str(path), "interval_s": 0, "file_storage_path": str(path)}
    config = storage_config(BENCH_MODEL, extra, page_first=False)
    if name == "kvtune":
        return KvtuneHiCacheStorage(config, {})
    if name == "kvtune-v1":
        v1_config = storage_config(BENCH_MODEL, {**extra, "interface_v1": 1}, page_first=False)
        backend = KvtuneHiCacheStorage(v1_config, {})
        backend.register_mem_pool_host(pool)
        return backend
    if name == "file":
        return HiCacheFile(config, file_path=str(path))
    raise ValueError(f"unknown backend {name!r}; valid backends: {', '.join(BACKENDS)}")


@dataclass(frozen=True)
class SglangCalls:
    """One backend's three calls for one request, as SGLang's cache controller makes them."""

    set: Callable[[list[str]], object]
    exists: Callable[[list[str]], int]
    get: Callable[[list[str]], object]


def sglang_calls(name: str, backend: Any, pool: HostPages, batch: int) -> SglangCalls:
    """Default path: pages from and into the pool's first and second halves as flat tensors; v1 path:
    the same slots by host index, each call the whole request (its prefix keys are empty)."""
    from sglang.srt.mem_cache.hicache_storage import HiCacheStorageExtraInfo

    sources = list(pool.kv_buffer[:batch])
    targets = list(pool.kv_buffer[batch:])
    if name == "kvtune-v1":
        whole_request = HiCacheStorageExtraInfo(prefix_keys=[])

        def slots(first: int, keys: list[str]) -> torch.Tensor:
            return torch.arange(first * PAGE_TOKENS, (first + len(keys)) * PAGE_TOKENS)

        return SglangCalls(
            set=lambda keys: backend.batch_set_v1(keys, slots(0, keys), whole_request),
            exists=lambda keys: backend.batch_exists(keys, whole_request),
            get=lambda keys: backend.batch_get_v1(keys, slots(batch, keys), whole_request),
        )
    return SglangCalls(
        set=lambda keys: backend.batch_set(keys, sources[: len(keys)]),
        exists=backend.batch_exists,
        get=lambda keys: backend.batch_get(keys, targets[: len(keys)]),
    )


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
    requests = request_keys(n_pages, config.batch)
    pool = HostPages(2 * config.batch, config.page_bytes // 2)
    generator = torch.Generator().manual_seed(round_index)
    pool.kv_buffer[: config.batch] = torch.randn(config.batch, config.page_bytes // 2, generator=generator)
    backend = make_backend(name, path, pool)
    calls = sglang_calls(name, backend, pool, config.batch)
    results: dict[str, tuple[float, list[float]]] = {}
    results["batch_set"] = _timed(partial(calls.set, keys) for keys in requests)
    found_pages = [0]

    def exists(keys: list[str]) -> None:
        found_pages[0] += calls.exists(keys)

    results["batch_exists"] = _timed(partial(exists, keys) for keys in requests)
    results["batch_get"] = _timed(partial(calls.get, keys) for keys in requests)
    if found_pages[0] != n_pages:
        raise RuntimeError(f"{name}: batch_exists found {found_pages[0]} of {n_pages} pages just written")
    last = len(requests[-1])
    read_back = pool.kv_buffer[config.batch : config.batch + last].view(torch.int16)
    if not torch.equal(read_back, pool.kv_buffer[:last].view(torch.int16)):
        raise RuntimeError(f"{name}: batch_get did not read back the pages written")
    if name != "file":
        backend.close()
    started = time.perf_counter()
    reopened = make_backend(name, path, pool)
    found = sglang_calls(name, reopened, pool, config.batch).exists(requests[0])
    reopen_s = time.perf_counter() - started
    results["reopen"] = (reopen_s, [reopen_s])
    if name != "file":
        reopened.close()
    if found != len(requests[0]):
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
