"""The worker side: one process per (kind, stored-page level) that serves the orchestrator's operations.

Each operation returns an :class:`~experiments.bench_store.records.OpResult` (or a small dict of memory
and disk figures) through a pipe; the orchestrator times nothing itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import multiprocessing.connection
import os
import shutil
import time
import traceback
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from experiments.bench_store.config import RAW, Scenario, store_config_of, store_kind_of
from experiments.bench_store.records import BenchError, FillResult, OpResult, Snapshot
from experiments.bench_store.system import count_inodes, evict_page_cache, rss_bytes, trim_heap
from store import StoreConfig, open_store, store_kind
from store.base import KVStore
from store.buffers import empty_tensor
from store.lsm import LSMStore

logger = logging.getLogger(__name__)

SETTLE_TIMEOUT_S = 300
STAMP_BYTES = 8
_SPLITMIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_SPLITMIX_2 = np.uint64(0x94D049BB133111EB)


def _salt(text: str) -> int:
    return zlib.crc32(text.encode())


def prompt_tokens(seed: int, scenario: str, stream: int, index: int, n_tokens: int) -> np.ndarray:
    """Deterministic token ids: one (seed, scenario, stream, index) is the same prompt in every worker.

    Token ``t`` is the top 31 bits of splitmix64's finalizer (a bijection of 64-bit ints) applied to a
    64-bit key of the prompt plus ``t``: distinct prompts get unrelated tokens, at a fraction of the cost
    of seeding a random generator per prompt (which a fill of millions of pages would pay per prompt).
    """
    key = hashlib.blake2b(f"{seed}/{scenario}/{stream}/{index}".encode(), digest_size=8).digest()
    mixed = np.arange(n_tokens, dtype=np.uint64) + np.uint64(int.from_bytes(key, "little"))
    mixed = (mixed ^ (mixed >> np.uint64(30))) * _SPLITMIX_1
    mixed = (mixed ^ (mixed >> np.uint64(27))) * _SPLITMIX_2
    mixed ^= mixed >> np.uint64(31)
    return (mixed >> np.uint64(33)).astype(np.uint32)


def _latency_ms(samples: Sequence[float]) -> tuple[float, float]:
    if not samples:
        return math.nan, math.nan
    p50, p99 = np.percentile(np.asarray(samples, dtype=float), [50, 99])
    return float(p50) * 1e3, float(p99) * 1e3


@dataclass(frozen=True)
class WorkerSpec:
    kind: str
    scenario: Scenario
    level: int
    path: Path
    seed: int
    store_config: StoreConfig
    log_level: int


class _Participant:
    """What the orchestrator can ask a worker to do; each op returns a result dict."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.scenario = spec.scenario
        self.kind = spec.kind
        self.path = spec.path
        generator = torch.Generator().manual_seed(spec.seed)
        layout, pages = spec.scenario.layout, spec.scenario.prompt_pages
        shape = layout.page_shape(spec.scenario.prompt_tokens)
        # A small pool of random (incompressible) prompt tensors, reused across prompts: contents do not
        # change any kind's cost, and generating gigabytes of random numbers would dominate the run.
        self.pool = [
            torch.randint(0, 256, (spec.scenario.prompt_bytes,), dtype=torch.uint8, generator=generator)
            .view(layout.dtype)
            .view(shape)
            for _ in range(2)
        ]
        # Page p's first token row of layer 0's K block starts p * page_size rows into the tensor: a
        # strided (pages x 8 bytes) view of each pool tensor there is where kv() writes page numbers.
        row_bytes = layout.kv_heads * layout.head_dim * layout.dtype.itemsize
        self.stamps = [
            np.lib.stride_tricks.as_strided(
                tensor.view(torch.uint8).numpy().reshape(-1),
                shape=(pages, STAMP_BYTES),
                strides=(spec.scenario.page_size * row_bytes, 1),
            )
            for tensor in self.pool
        ]

    def tokens(self, stream: int, index: int) -> np.ndarray:
        return prompt_tokens(self.spec.seed, self.scenario.name, stream, index, self.scenario.prompt_tokens)

    def kv(self, index: int) -> torch.Tensor:
        """Prompt ``index``'s tensor: a pool tensor whose pages each start with their page number in the
        store (``index * prompt_pages + page``, 8 bytes), so no two stored pages are alike and a get that
        returns any other page than the one asked for fails the byte check.

        The pool tensor is stamped in place: use the result before asking for ``index + len(pool)``.
        """
        first = index * self.scenario.prompt_pages
        numbers = np.arange(first, first + self.scenario.prompt_pages, dtype="<u8")
        self.stamps[index % len(self.pool)][:] = numbers.view(np.uint8).reshape(-1, STAMP_BYTES)
        return self.pool[index % len(self.pool)]

    def op_rss(self) -> Snapshot:
        rss, peak = rss_bytes()
        return Snapshot(rss_bytes=rss, rss_peak_bytes=peak)


class _StoreParticipant(_Participant):
    def __init__(self, spec: WorkerSpec) -> None:
        super().__init__(spec)
        self.store: KVStore | None = None
        self.n_prompts = 0
        self.disk = store_kind(store_kind_of(spec.kind)).on_disk

    # ---------------------------------------------------------------- helpers

    def _store(self) -> KVStore:
        if self.store is None:
            raise BenchError(f"{self.kind}: the store is not open")
        return self.store

    def _open(self) -> KVStore:
        self.store = open_store(
            store_kind_of(self.kind),
            self.path if self.disk else None,
            layout=self.scenario.layout,
            page_size=self.scenario.page_size,
            config=store_config_of(self.kind, self.spec.store_config),
            namespace="bench",
        )
        return self.store

    def _settle(self) -> None:
        """Wait (untimed) until background work a put left behind is done, so it cannot slow the next kind."""
        if isinstance(self.store, LSMStore):
            deadline = time.monotonic() + SETTLE_TIMEOUT_S
            while time.monotonic() < deadline:
                if not self.store.background_work_pending():
                    break
                time.sleep(0.02)
            else:
                logger.warning(
                    "%s: background flush/compaction still running after %d s", self.kind, SETTLE_TIMEOUT_S
                )
        if self.disk:
            os.sync()

    def _stored_pages(self) -> int:
        return self.n_prompts * self.scenario.prompt_pages

    # ---------------------------------------------------------------- ops

    def op_open(self) -> Snapshot:
        shutil.rmtree(self.path, ignore_errors=True)
        store = self._open()
        return dataclasses.replace(self.op_rss(), store_code=store.backend_label)

    def op_reset(self) -> Snapshot:
        """A fresh, empty store (for scenarios that start every round from nothing)."""
        if self.store is not None:
            self.store.close()
        self.n_prompts = 0
        return self.op_open()

    def op_fill(self, pages: int, seconds_left: float = math.inf) -> FillResult:
        """Put whole prompts until at least ``pages`` pages are stored or ``seconds_left`` have passed.

        An ``OSError`` from the store (a full disk, no inodes left) ends the fill and is returned, so
        the run can report how far this kind got instead of failing.
        """
        store = self._store()
        target = math.ceil(pages / self.scenario.prompt_pages)
        started = time.perf_counter()
        error = ""
        try:
            while self.n_prompts < target and time.perf_counter() - started < seconds_left:
                store.put_batch(self.tokens(0, self.n_prompts), self.kv(self.n_prompts))
                self.n_prompts += 1
            store.flush()
            self._settle()
        except OSError as failure:
            error = f"{type(failure).__name__}: {failure}"
            logger.warning("%s: the fill stopped at %d pages: %s", self.kind, self._stored_pages(), error)
        return FillResult(time.perf_counter() - started, self._stored_pages(), error)

    def op_put(self) -> OpResult:
        store = self._store()
        count = self.scenario.prompts_per_round
        ids = range(self.n_prompts, self.n_prompts + count)
        tokens = [self.tokens(0, i) for i in ids]
        pages_before = self._stored_pages()
        if self.disk:
            os.sync()
        latencies = []
        for i, prompt in zip(ids, tokens, strict=True):
            kv = self.kv(i)
            call = time.perf_counter()
            written = store.put_batch(prompt, kv)
            latencies.append(time.perf_counter() - call)
            if written != self.scenario.prompt_pages:
                raise BenchError(
                    f"{self.kind}: put_batch of a new prompt wrote {written} pages, expected "
                    f"{self.scenario.prompt_pages}"
                )
        calls = sum(latencies)
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

    def op_probe(self, round_index: int) -> OpResult:
        store = self._store()
        rng = np.random.default_rng([self.spec.seed, _salt(self.scenario.name), 1, round_index])
        pages, size = self.scenario.prompt_pages, self.scenario.page_size
        work = []
        for i in range(self.scenario.probes_per_round):
            hit = int(rng.integers(0, pages + 1))
            stored = self.tokens(0, int(rng.integers(0, self.n_prompts)))
            fresh = self.tokens(2, round_index * 1_000_003 + i)
            work.append((store.plan(np.concatenate([stored[: hit * size], fresh[hit * size :]])), hit))
        latencies, answers = [], []
        tickers = store.statistics_tickers() if isinstance(store, LSMStore) else {}
        started = time.perf_counter()
        for plan, _ in work:
            call = time.perf_counter()
            answers.append(store.probe(plan))
            latencies.append(time.perf_counter() - call)
        seconds = time.perf_counter() - started
        hit_rate = _block_cache_hit_rate(store, tickers) if isinstance(store, LSMStore) else math.nan
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
            block_cache_hit_rate=hit_rate,
        )

    def op_get(self, round_index: int, cold: bool) -> OpResult | None:
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
        work = [store.plan(self.tokens(0, i)) for i in ids]
        evict = 0.0
        if cold:
            evict_started = time.perf_counter()
            if isinstance(store, LSMStore):
                store.flush_memtables()  # with the WAL on, a put's pages may still be in memory
            evict_page_cache(self.path)
            evict = time.perf_counter() - evict_started
        else:
            for plan in work:
                store.get_batch(plan, pages)
        latencies = []
        first = None
        started = time.perf_counter()
        for plan in work:
            call = time.perf_counter()
            out = store.get_batch(plan, pages)
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

    def op_reopen(self, cold: bool) -> OpResult | None:
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

    def op_footprint(self, trim: bool = False) -> Snapshot:
        """Pages, files, inodes, disk and VmRSS; with ``trim``, also VmRSS after ``malloc_trim``.

        The trimmed figure separates memory the allocator keeps after ``free`` (RocksDB's flush and
        compaction buffers, freed memtables) from memory still in use. Trimming changes the process,
        so it is done only at the end.
        """
        store = self._store()
        stats = store.stats()
        files, inodes = count_inodes(self.path) if self.disk else (0, 0)
        rss, peak = rss_bytes()
        keys = store.key_bytes_per_page() if isinstance(store, LSMStore) else math.nan
        return Snapshot(
            rss_bytes=rss,
            rss_peak_bytes=peak,
            pages_stored=stats.pages_stored,
            files=files,
            inodes=inodes,
            disk_bytes=stats.disk_bytes,
            rss_trimmed_bytes=rss_bytes()[0] if trim and trim_heap() else math.nan,
            key_bytes_per_page=keys,
        )

    def op_close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None


class _RawParticipant(_Participant):
    """The disk itself: the same bytes written to one file with ``fsync`` and read back."""

    def __init__(self, spec: WorkerSpec) -> None:
        super().__init__(spec)
        self.round_file: Path | None = None
        self.n_prompts = 0

    def op_open(self) -> Snapshot:
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.mkdir(parents=True)
        return self.op_rss()

    def op_reset(self) -> Snapshot:
        return self.op_open()

    def op_put(self) -> OpResult:
        count = self.scenario.prompts_per_round
        if self.round_file is not None:
            self.round_file.unlink(missing_ok=True)
        self.round_file = self.path / f"raw-{time.monotonic_ns()}.bin"
        os.sync()
        latencies = []
        fd = os.open(self.round_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for index in range(count):
                view = self.kv(index).view(torch.uint8).numpy().reshape(-1).data
                call = time.perf_counter()
                done = 0
                while done < len(view):
                    done += os.write(fd, view[done:])
                latencies.append(time.perf_counter() - call)
            calls = sum(latencies)
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

    def op_get(self, round_index: int, cold: bool) -> OpResult:
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
            out = empty_tensor((size,), torch.uint8)  # allocated as get_batch allocates its output
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

    def op_close(self) -> None:
        if self.round_file is not None:
            self.round_file.unlink(missing_ok=True)


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
    block_cache_hit_rate: float = math.nan,
) -> OpResult:
    p50, p99 = _latency_ms(latencies)
    return OpResult(
        pages_stored=pages_stored,
        calls=calls,
        pages=pages,
        bytes=nbytes,
        seconds=seconds,
        sync_s=sync_s,
        evict_s=evict_s,
        p50_ms=p50,
        p99_ms=p99,
        block_cache_hit_rate=block_cache_hit_rate,
    )


def _block_cache_hit_rate(store: LSMStore, before: dict[str, int]) -> float:
    """Block-cache hits / lookups since the ``before`` tickers (NaN if there were none)."""
    after = store.statistics_tickers()
    hits = after.get("rocksdb.block.cache.hit", 0) - before.get("rocksdb.block.cache.hit", 0)
    misses = after.get("rocksdb.block.cache.miss", 0) - before.get("rocksdb.block.cache.miss", 0)
    return hits / (hits + misses) if hits + misses else math.nan


def worker_main(conn: multiprocessing.connection.Connection, spec: WorkerSpec) -> None:
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
            conn.send(("ok", None))
            return
        try:
            if participant is None:
                participant = _RawParticipant(spec) if spec.kind == RAW else _StoreParticipant(spec)
            conn.send(("ok", getattr(participant, f"op_{op}")(**kwargs)))
        except BaseException:
            conn.send(("error", traceback.format_exc()))
