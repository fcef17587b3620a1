"""The ``sglang-file`` and ``hicache:`` kinds against SGLang's own classes, as installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from store import open_store
from store.hicache_adapter import STORAGE_BATCH_SIZE, HiCacheStore, sglang_api, storage_config
from tests.store.conftest import (
    LAYOUT,
    PAGE_SIZE,
    MakeStore,
    assert_bit_exact,
    make_tokens,
    page_slice,
    prefix_kv,
)

GENERIC_FILE_KIND = "hicache:sglang.srt.mem_cache.hicache_storage:HiCacheFile"
NAMESPACE = "test-model"  # what conftest's open_kind passes
SUFFIX = f"_{NAMESPACE}_0_1.bin"  # HiCacheFile's "_{model}_{tp_rank}_{tp_size}"


def page_first(kv: torch.Tensor, page: int) -> torch.Tensor:
    """Page ``page`` of kvtune's ``kv`` as SGLang's page_first host pool flattens it."""
    one = kv[:, :, page * PAGE_SIZE : (page + 1) * PAGE_SIZE]
    return one.permute(1, 2, 0, 3, 4).contiguous().flatten()


def sglang_file_backend(path: Path) -> object:
    """A plain HiCacheFile on ``path``, built by SGLang's factory as its server does for ``file``."""
    config = storage_config(NAMESPACE, {"file_storage_path": str(path)})
    return sglang_api().factory.create_backend("file", config, None)


def test_keys_are_sglangs_own_page_hashes(make_store: MakeStore, tmp_path: Path) -> None:
    from sglang.srt.mem_cache.utils import get_hash_str

    s = make_store("sglang-file")
    tokens = make_tokens(1, 3 * PAGE_SIZE + 2)
    expected = get_hash_str(tokens[: 3 * PAGE_SIZE].tolist(), None, PAGE_SIZE)
    assert [digest.hex() for digest in s.plan(tokens).digests] == expected
    assert len(expected) == 3  # the partial page has no key
    assert s.put_batch(tokens, prefix_kv(tokens)) == 3
    on_disk = sorted(p.name for p in (tmp_path / "sglang-file").glob("*.bin"))
    assert on_disk == sorted(key + SUFFIX for key in expected)


def test_page_files_hold_the_page_first_flat_page(make_store: MakeStore, tmp_path: Path) -> None:
    s = make_store("sglang-file")
    tokens = make_tokens(2, 2 * PAGE_SIZE)
    kv = prefix_kv(tokens)
    s.put_batch(tokens, kv)
    for page, digest in enumerate(s.plan(tokens).digests):
        raw = np.fromfile(tmp_path / "sglang-file" / (digest.hex() + SUFFIX), dtype=np.uint8)
        assert_bit_exact(torch.from_numpy(raw).view(LAYOUT.dtype), page_first(kv, page))


def test_sglangs_own_backend_reads_what_the_store_wrote_and_back(
    make_store: MakeStore, tmp_path: Path
) -> None:
    path = tmp_path / "shared"
    s = make_store("sglang-file", path=path)
    ours = make_tokens(3, 3 * PAGE_SIZE)
    ours_kv = prefix_kv(ours)
    s.put_batch(ours, ours_kv)
    backend = sglang_file_backend(path)
    keys = [digest.hex() for digest in s.plan(ours).digests]
    assert backend.batch_exists(keys) == 3  # type: ignore[attr-defined]
    targets = [torch.empty(LAYOUT.page_bytes(PAGE_SIZE) // 2, dtype=LAYOUT.dtype) for _ in keys]
    got = backend.batch_get(keys, targets)  # type: ignore[attr-defined]
    for page, flat in enumerate(got):
        assert_bit_exact(flat, page_first(ours_kv, page))

    theirs = make_tokens(4, 2 * PAGE_SIZE)
    theirs_kv = prefix_kv(theirs)
    their_keys = [digest.hex() for digest in s.plan(theirs).digests]
    assert backend.batch_set(their_keys, [page_first(theirs_kv, p) for p in range(2)])  # type: ignore[attr-defined]
    assert s.probe(theirs) == 2
    assert_bit_exact(s.get_batch(theirs, 2), theirs_kv)


def test_many_pages_cross_sglangs_batch_size(make_store: MakeStore) -> None:
    s = make_store("sglang-file")
    n_pages = 2 * STORAGE_BATCH_SIZE + 5
    tokens = make_tokens(5, n_pages * PAGE_SIZE)
    kv = prefix_kv(tokens)
    assert s.put_batch(tokens, kv) == n_pages
    assert s.probe(tokens) == n_pages
    assert_bit_exact(s.get_batch(tokens, n_pages), kv)


def test_stats_are_what_the_adapter_observed(make_store: MakeStore) -> None:
    s = make_store("sglang-file")
    a = make_tokens(6, 3 * PAGE_SIZE + 1)
    b = torch.cat([a[: 2 * PAGE_SIZE], make_tokens(7, 2 * PAGE_SIZE)])
    s.put_batch(a, prefix_kv(a))  # probe (1 exists: miss), 3 writes
    assert s.probe(b) == 2  # 3 exists
    s.put_batch(b, prefix_kv(b))  # probe (3 exists), 2 writes
    s.get_batch(b, 4)  # 4 reads
    stats = s.stats()
    page_bytes = LAYOUT.page_bytes(PAGE_SIZE)
    assert stats.kind == "sglang-file"
    assert (stats.pages_stored, stats.live_bytes) == (5, 5 * page_bytes)
    assert stats.device_write_bytes == 5 * page_bytes
    assert stats.device_read_bytes == 4 * page_bytes
    # HiCacheFile: a write is an exists check, a temp file and a rename; a read one open
    assert stats.device_ops == (1 + 3 * 3) + 3 + (3 + 2 * 3) + 4
    assert stats.files == 5 + 1  # the page files and kvtune's header
    assert (stats.dropped_pages, stats.evicted_pages) == (0, 0)


def test_budget_is_sglangs_lru_file_evictor(make_store: MakeStore, tmp_path: Path) -> None:
    """Under the budget SGLang evicts single LRU files: the directory stays within it, what probe reports
    reads back bit-exact, and the continuations of evicted pages stay on disk, unreachable."""
    page_bytes = LAYOUT.page_bytes(PAGE_SIZE)
    budget = 40 * page_bytes
    s = make_store("sglang-file", budget_bytes=budget)
    prompts = [make_tokens(100 + i, 6 * PAGE_SIZE) for i in range(20)]
    peak = 0
    for i, tokens in enumerate(prompts):
        s.put_batch(tokens, prefix_kv(tokens))
        if i % 4 == 3:  # read the first prompt again: a read hit refreshes its recency
            assert s.probe(prompts[0]) == 6
            s.get_batch(prompts[0], 6)
        peak = max(peak, s.stats().disk_bytes)
    stats = s.stats()
    assert peak <= budget
    assert stats.evicted_pages == 20 * 6 - stats.pages_stored > 0
    assert stats.pages_stored == len(list((tmp_path / "sglang-file").glob("*" + SUFFIX)))
    reachable = 0
    for tokens in prompts:
        k = s.probe(tokens)
        assert_bit_exact(s.get_batch(tokens, k), page_slice(prefix_kv(tokens), k))
        reachable += k
    assert s.probe(prompts[0]) == 6  # recently read, so kept
    assert reachable <= stats.pages_stored


def test_budget_below_one_page_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"holds no page: it must be at least the \d+-byte header plus one"):
        open_store("sglang-file", tmp_path / "s", LAYOUT, page_size=PAGE_SIZE, budget_bytes=100)


def test_evict_on_request_is_not_supported(make_store: MakeStore) -> None:
    s = make_store("sglang-file")
    tokens = make_tokens(8, 2 * PAGE_SIZE)
    assert s.evict(tokens, 0) == 0  # nothing stored there: nothing to evict
    s.put_batch(tokens, prefix_kv(tokens))
    with pytest.raises(NotImplementedError, match="HiCacheStorage interface has no delete"):
        s.evict(tokens, 1)
    assert s.probe(tokens) == 2


def test_generic_form_builds_a_backend_as_sglangs_dynamic_factory(
    make_store: MakeStore, tmp_path: Path
) -> None:
    s = make_store(GENERIC_FILE_KIND)
    assert isinstance(s, HiCacheStore)
    assert s.stats().kind == GENERIC_FILE_KIND
    assert s.backend_label == f"SGLang {sglang_api().version} dynamic backend ({GENERIC_FILE_KIND})"
    tokens = make_tokens(9, 2 * PAGE_SIZE)
    kv = prefix_kv(tokens)
    assert s.put_batch(tokens, kv) == 2
    assert s.stats().pages_stored == 2
    assert_bit_exact(s.get_batch(tokens, s.probe(tokens)), kv)
    with pytest.raises(ValueError, match="knows no capacity handling of this backend"):
        open_store(GENERIC_FILE_KIND, tmp_path / "b", LAYOUT, page_size=PAGE_SIZE, budget_bytes=1 << 20)


@pytest.mark.parametrize("kind", ["hicache:", "hicache:module", "hicache::Class", "hicache:a:b:c"])
def test_malformed_generic_kind_says_the_form(kind: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is not of the form hicache:<module>:<Class>"):
        open_store(kind, tmp_path / "s", LAYOUT, page_size=PAGE_SIZE)


def test_unknown_kind_lists_the_hicache_form(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"valid kinds: lsm, file, applog, memory, sglang-file, hicache:<module>:<Class>"
    ):
        open_store("sglang", tmp_path / "s", LAYOUT, page_size=PAGE_SIZE)


def test_sglangs_directory_override_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SGLANG_HICACHE_FILE_BACKEND_STORAGE_DIR", str(tmp_path / "elsewhere"))
    with pytest.raises(ValueError, match="SGLANG_HICACHE_FILE_BACKEND_STORAGE_DIR overrides it"):
        open_store("sglang-file", tmp_path / "s", LAYOUT, page_size=PAGE_SIZE)


def test_its_own_plan_serves_in_place_of_tokens(make_store: MakeStore) -> None:
    s = make_store("sglang-file")
    tokens = make_tokens(9, 3 * PAGE_SIZE)
    kv = prefix_kv(tokens)
    plan = s.plan(tokens)
    assert s.plan(plan) is plan
    assert s.put_batch(plan, kv) == 3
    assert s.probe(plan) == 3
    assert_bit_exact(s.get_batch(plan, 2), page_slice(kv, 2))
    assert s.put_batch(tokens, kv) == 0  # the tokens name the same pages as the plan
