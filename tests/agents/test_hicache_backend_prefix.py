"""The prefix layout: SGLang's v1 calls with ``extra_info.prefix_keys``, one store operation per call."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from sglang.srt.mem_cache.hicache_storage import HiCacheStorageExtraInfo
from sglang.srt.mem_cache.storage.backend_factory import StorageBackendFactory

from agents.hicache_backend import KvtuneHiCacheStorage
from experiments.bench_sglang import BENCH_MODEL, HostPages
from store import KVStore
from store.hicache_adapter import storage_config
from tests.agents.test_hicache_backend import (
    PAGE_TOKENS,
    build,
    flat_pages,
    host_pool,
    page_keys,
    readme_extra_config,
)

REQUEST = list(range(5 * PAGE_TOKENS))
OTHER_TAIL = [10_000 + t for t in range(3 * PAGE_TOKENS)]


def after(prefix: list[str]) -> HiCacheStorageExtraInfo:
    return HiCacheStorageExtraInfo(prefix_keys=prefix)


@pytest.fixture
def pool() -> HostPages:
    pool = host_pool(16)
    pool.kv_buffer[:5] = torch.stack(flat_pages(5, "page_first", seed=3))
    return pool


@pytest.fixture
def backend(tmp_path: Path, pool: HostPages) -> Iterator[KvtuneHiCacheStorage]:
    built = build(tmp_path, interval_s=0, interface_v1=1)
    built.register_mem_pool_host(pool)
    yield built
    built.close()


def slots(first_page: int, n_pages: int) -> torch.Tensor:
    return torch.arange(first_page * PAGE_TOKENS, (first_page + n_pages) * PAGE_TOKENS)


def write_request(backend: KvtuneHiCacheStorage, keys: list[str]) -> None:
    """Pages 0-1 then 2-4 of one request (host slots 0-4), as SGLang backs up a node and its child."""
    assert backend.batch_set_v1(keys[:2], slots(0, 2), after([])) == [True, True]
    assert backend.batch_set_v1(keys[2:5], slots(2, 3), after(keys[:2])) == [True, True, True]


def opened(backend: KvtuneHiCacheStorage) -> KVStore:
    assert backend.store is not None
    return backend.store


def test_leading_hits_count_from_the_call_whatever_the_batches_written(backend: KvtuneHiCacheStorage) -> None:
    keys = page_keys(REQUEST + OTHER_TAIL)  # 8 pages, the first 5 written
    write_request(backend, keys)
    assert backend.batch_exists(keys, after([])) == 5
    assert backend.batch_exists(keys[1:4], after(keys[:1])) == 3, "asked in other batches than written"
    assert backend.batch_exists(keys[3:], after(keys[:3])) == 2
    assert backend.batch_exists(keys[5:], after(keys[:5])) == 0


def test_a_call_is_one_store_operation(backend: KvtuneHiCacheStorage, pool: HostPages) -> None:
    keys = page_keys(REQUEST)
    write_request(backend, keys)
    store = opened(backend)
    before = store.stats()
    assert backend.batch_exists(keys, after([])) == 5
    assert backend.batch_get_v1(keys[2:], slots(8, 3), after(keys[:2])) == [True, True, True]
    counted = store.stats()
    assert (counted.probes - before.probes, counted.gets - before.gets) == (2, 1)
    assert counted.puts == 2 and counted.pages_written == 5


def test_v1_reads_are_bit_exact_into_the_host_slots(backend: KvtuneHiCacheStorage, pool: HostPages) -> None:
    keys = page_keys(REQUEST + OTHER_TAIL)
    write_request(backend, keys)
    assert backend.batch_get_v1(keys[2:7], slots(8, 5), after(keys[:2])) == [True, True, True, False, False]
    assert torch.equal(pool.kv_buffer[8:11].view(torch.int16), pool.kv_buffer[2:5].view(torch.int16))
    assert not pool.kv_buffer[11:13].any(), "slots of missing pages are left alone"


def test_a_miss_in_the_middle_ends_the_hits(backend: KvtuneHiCacheStorage) -> None:
    keys = page_keys(REQUEST)
    write_request(backend, keys)
    forked = page_keys(REQUEST[: 2 * PAGE_TOKENS] + OTHER_TAIL)  # shares pages 0-1, then differs
    assert forked[:2] == keys[:2] and forked[2] != keys[2]
    assert backend.batch_exists(forked, after([])) == 2
    spliced = keys[:2] + forked[2:3] + keys[3:]  # page 2 of another request between this one's pages
    assert backend.batch_exists(spliced, after([])) == 2


def test_pages_whose_prefix_is_not_stored_are_not_written(backend: KvtuneHiCacheStorage) -> None:
    keys = page_keys(REQUEST)
    assert backend.batch_set_v1(keys[:2], slots(0, 2), after([])) == [True, True]
    assert backend.batch_set_v1(keys[3:5], slots(3, 2), after(keys[:3])) == [False, False]
    assert backend.batch_exists(keys, after([])) == 2
    assert opened(backend).stats().pages_stored == 2


def test_keys_of_another_model_or_rank_never_hit(tmp_path: Path, backend: KvtuneHiCacheStorage) -> None:
    keys = page_keys(REQUEST)
    write_request(backend, keys)
    extra = {**readme_extra_config(), "path": str(tmp_path / "kv"), "interval_s": 0, "interface_v1": 1}
    other_model = dataclasses.replace(
        storage_config(BENCH_MODEL, extra, page_first=False), model_name="Qwen/Qwen3-8B"
    )
    for config in (storage_config(BENCH_MODEL, extra, tp_rank=1, tp_size=2, page_first=False), other_model):
        other = StorageBackendFactory.create_backend("dynamic", config, None)
        assert isinstance(other, KvtuneHiCacheStorage) and other.namespace != backend.namespace
        assert other.batch_exists(keys, after([])) == 0
        other.close()
    assert backend.batch_exists(keys, after([])) == 5


def test_the_default_path_ignores_prefix_keys(tmp_path: Path) -> None:
    """SGLang's default path passes no ``extra_info`` to ``batch_set``: its ``batch_exists`` must not
    look for the prefix layout even when prefix keys come with it."""
    backend = build(tmp_path, interval_s=0)
    keys = page_keys(REQUEST)
    assert backend.batch_set(keys[2:4], flat_pages(2, "layer_first")) is True
    assert backend.batch_exists(keys[2:], after(keys[:2])) == 2
    backend.close()


def test_the_reuse_sketch_counts_the_pages_asked_not_the_prefix_named(
    tmp_path: Path, pool: HostPages
) -> None:
    backend = build(tmp_path, interval_s=3600, interface_v1=1)
    backend.register_mem_pool_host(pool)
    keys = page_keys(REQUEST)
    write_request(backend, keys)
    assert backend.controller is not None
    sketch = backend.controller.sketch
    sketch.take_window()
    assert backend.batch_exists(keys[:2], after([])) == 2
    assert backend.batch_exists(keys[2:], after(keys[:2])) == 3
    assert len(sketch) == 5 and sketch.take_window() == 0.0, "each page recorded once: no reuse yet"
    assert backend.batch_exists(keys[2:4], after(keys[:2])) == 2
    assert sketch.take_window() == 1.0
    backend.close()
