"""The kvtune backend built by SGLang's real ``StorageBackendFactory``, keys from SGLang's page hash."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from sglang.srt.mem_cache.storage.backend_factory import StorageBackendFactory
from sglang.srt.mem_cache.utils import get_hash_str

from agents.hicache_backend import KvtuneHiCacheStorage, key_digest
from experiments.bench_sglang import BENCH_MODEL, HostPages
from store import StoreConfig
from store.hicache_adapter import storage_config

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGE_TOKENS = 16
LAYERS, HEADS, HEAD_DIM = 2, 2, 8


def readme_extra_config() -> dict:
    """The one-line extra-config JSON exactly as the README shows it."""
    lines = README.read_text().splitlines()
    return json.loads(next(line for line in lines if line.startswith('{"backend_name"')))


def build(tmp_path: Path, **overrides: object) -> KvtuneHiCacheStorage:
    extra = {**readme_extra_config(), "path": str(tmp_path / "kv"), **overrides}
    backend = StorageBackendFactory.create_backend(
        "dynamic", storage_config(BENCH_MODEL, extra, page_first=False), None
    )
    assert isinstance(backend, KvtuneHiCacheStorage)
    return backend


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[KvtuneHiCacheStorage]:
    built = build(tmp_path, interval_s=0)
    yield built
    built.close()


def page_keys(tokens: list[int]) -> list[str]:
    keys = get_hash_str(tokens, None, page_size=PAGE_TOKENS)
    assert isinstance(keys, list)
    return keys


def flat_pages(n: int, layout: str, seed: int = 0) -> list[torch.Tensor]:
    """Flat bf16 pages as a host pool hands them over: layer-first or page-first element order."""
    generator = torch.Generator().manual_seed(seed)
    pages = torch.randn((n, LAYERS, 2, PAGE_TOKENS, HEADS, HEAD_DIM), generator=generator).to(torch.bfloat16)
    if layout == "page_first":
        pages = pages.permute(0, 3, 1, 2, 4, 5).contiguous()
    return [page.flatten() for page in pages]


def test_readme_json_is_one_line_and_names_this_class() -> None:
    extra = readme_extra_config()
    assert extra["module_path"] == "agents.hicache_backend" and extra["class_name"] == "KvtuneHiCacheStorage"


@pytest.mark.parametrize("layout", ["layer_first", "page_first"])
def test_round_trip_is_bit_exact_with_sglang_page_hashes(backend: KvtuneHiCacheStorage, layout: str) -> None:
    tokens = list(range(5 * PAGE_TOKENS))
    keys = page_keys(tokens)
    assert len(keys) == 5 and all(re.fullmatch(r"[0-9a-f]{64}", k) for k in keys)
    pages = flat_pages(5, layout)
    assert backend.batch_exists(keys) == 0
    assert backend.batch_set(keys[:3], pages[:3]) is True
    assert backend.set(keys[4], pages[4]) is True
    assert [backend.exists(k) for k in keys] == [True, True, True, False, True]
    assert backend.batch_exists(keys) == 3, "leading hits stop at the first missing page"
    targets = [torch.empty_like(p) for p in pages]
    got = backend.batch_get(keys, targets)
    assert got[3] is None and got[4] is None, "the first missing page ends the read"
    for page, target, result in zip(pages[:3], targets[:3], got[:3], strict=True):
        assert result is target
        assert torch.equal(target.view(torch.int16), page.view(torch.int16))


def test_namespace_is_model_and_rank_and_a_reopen_keeps_pages(tmp_path: Path) -> None:
    keys = page_keys(list(range(2 * PAGE_TOKENS)))
    pages = flat_pages(2, "layer_first")
    first = build(tmp_path, interval_s=0)
    assert first.namespace == "meta-llama-Llama-3.1-8B_0_1"
    first.batch_set(keys, pages)
    first.close()
    other_rank = StorageBackendFactory.create_backend(
        "dynamic",
        storage_config(
            BENCH_MODEL,
            {**readme_extra_config(), "path": str(tmp_path / "kv"), "interval_s": 0},
            tp_rank=1,
            tp_size=2,
            page_first=False,
        ),
        None,
    )
    assert other_rank.batch_exists(keys) == 0, "rank 1 of 2 has its own store"
    other_rank.close()
    again = build(tmp_path, interval_s=0)
    assert again.batch_exists(keys) == 2
    target = torch.empty_like(pages[1])
    assert again.get(keys[1], target) is target and torch.equal(
        target.view(torch.int16), pages[1].view(torch.int16)
    )
    with pytest.raises(ValueError, match=r"holds pages of .*use another path"):
        again.set(page_keys(list(range(PAGE_TOKENS)))[0], torch.zeros(64, dtype=torch.float16))
    again.close()


def test_missing_path_names_the_extra_config_key(tmp_path: Path) -> None:
    extra = {k: v for k, v in readme_extra_config().items() if k != "path"}
    with pytest.raises(ValueError, match='needs "path"'):
        StorageBackendFactory.create_backend(
            "dynamic", storage_config(BENCH_MODEL, extra, page_first=False), None
        )


def test_key_digest_is_the_hash_bytes() -> None:
    key = "00" * 31 + "01"
    assert key_digest(key) == bytes(31) + b"\x01"
    assert len(key_digest("not-hex")) == 32 and key_digest("not-hex") != key_digest("not-hex2")


def test_controller_inside_the_backend_rolls_back_a_forced_regression(tmp_path: Path) -> None:
    policy_file = tmp_path / "small-queue.json"
    policy_file.write_text(json.dumps({"knobs": {"writer_queue_depth": 4, "writer_overflow": "drop"}}))
    backend = build(tmp_path, policy=f"static:{policy_file}", interval_s=3600)
    keys = page_keys(list(range(PAGE_TOKENS)))
    backend.set(keys[0], flat_pages(1, "layer_first")[0])  # the first page opens the store and its controller
    controller, store = backend.controller, backend.store
    assert controller is not None and store is not None
    assert controller.tick().applied == {"writer_queue_depth": 4, "writer_overflow": "drop"}
    kv = torch.zeros(store.layout.page_shape(store.page_size), dtype=store.layout.dtype)
    for i in range(400):  # a burst of writes the policy's small queue cannot take
        store.put_async(np.arange(i * 8, i * 8 + 8), kv)
    store.flush(durable=False)
    decision = controller.tick()
    assert decision.guards == ("rollback",) and "dropped_fraction" in decision.regressed
    assert store.config == StoreConfig()
    backend.close()
    assert controller._thread is None


def host_pool(pages: int) -> HostPages:
    return HostPages(pages, LAYERS * 2 * PAGE_TOKENS * HEADS * HEAD_DIM, page_tokens=PAGE_TOKENS)


def test_v1_path_moves_pages_between_host_pool_slots_bit_exactly(backend: KvtuneHiCacheStorage) -> None:
    pool = host_pool(8)
    pool.kv_buffer[:3] = torch.stack(flat_pages(3, "page_first", seed=7))
    backend.register_mem_pool_host(pool)
    keys = page_keys(list(range(4 * PAGE_TOKENS)))
    written = backend.batch_set_v1(keys[:3], torch.arange(0, 3 * PAGE_TOKENS))
    assert written == [True, True, True]
    into = torch.arange(4 * PAGE_TOKENS, 8 * PAGE_TOKENS)  # host slots 4..7
    assert backend.batch_get_v1(keys, into) == [True, True, True, False]
    assert torch.equal(pool.kv_buffer[4:7].view(torch.int16), pool.kv_buffer[:3].view(torch.int16))
    assert torch.equal(pool.kv_buffer[7], torch.zeros_like(pool.kv_buffer[7]))
