"""The store contract, run against every kind in ``store.STORE_KINDS``, and the lsm store with flat keys."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from store import KVLayout, StoreConfig, StoreStats
from tests.store.conftest import (
    CONTRACT_KINDS,
    LAYOUT,
    NO_OWN_EVICTION,
    PAGE_SIZE,
    MakeStore,
    assert_bit_exact,
    make_kv,
    make_tokens,
    page_slice,
    prefix_kv,
    skip_for,
    store_kind_of,
)


@pytest.fixture(params=CONTRACT_KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_kinds_are_the_four_of_the_design_and_sglangs_file_backend() -> None:
    import store

    assert set(store.STORE_KINDS) == {"lsm", "file", "applog", "memory", "sglang-file"}
    assert store.DISK_STORE_KINDS == ("lsm", "file", "applog", "sglang-file")
    for name in store.STORE_KINDS:
        assert store.store_kind(name).store_class().kind == name


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_round_trip_is_bit_exact(make_store: MakeStore, kind: str, dtype: torch.dtype) -> None:
    layout = KVLayout(layers=2, kv_heads=2, head_dim=4, dtype=dtype)
    s = make_store(kind, layout=layout)
    tokens = make_tokens(1, 3 * PAGE_SIZE + 2)  # three full pages and a partial one
    kv = make_kv(2, len(tokens), layout)  # KV of every position, the partial page's too

    assert s.put_batch(tokens, kv) == 3
    out = s.get_batch(tokens, 3)
    assert out.dtype == dtype
    assert_bit_exact(out, page_slice(kv, 3))
    assert_bit_exact(s.get_batch(tokens, 1), page_slice(kv, 1))


def test_kv_of_exactly_the_full_pages_is_accepted(make_store: MakeStore, kind: str) -> None:
    s = make_store(kind)
    tokens = make_tokens(3, 2 * PAGE_SIZE + 3)
    kv = make_kv(4, 2 * PAGE_SIZE)
    assert s.put_batch(tokens, kv) == 2
    assert_bit_exact(s.get_batch(tokens, 2), kv)


def test_non_contiguous_and_grad_kv_round_trip(make_store: MakeStore, kind: str) -> None:
    layout = KVLayout(layers=2, kv_heads=2, head_dim=4, dtype=torch.float32)
    s = make_store(kind, layout=layout)
    tokens = make_tokens(30, 2 * PAGE_SIZE)
    heads_first = make_kv(31, len(tokens), layout).permute(0, 1, 3, 2, 4).contiguous()
    kv = heads_first.permute(0, 1, 3, 2, 4)  # the right shape, but not contiguous
    assert not kv.is_contiguous()
    assert s.put_batch(tokens, kv) == 2
    assert_bit_exact(s.get_batch(tokens, 2), kv.contiguous())
    other = make_tokens(32, 2 * PAGE_SIZE)
    leaf = torch.randn(layout.page_shape(2 * PAGE_SIZE), requires_grad=True)
    assert s.put_batch(other, leaf * 2) == 2  # an autograd result, as a model would produce it
    assert_bit_exact(s.get_batch(other, 2), (leaf * 2).detach())


def test_token_containers_are_interchangeable(make_store: MakeStore, kind: str) -> None:
    s = make_store(kind)
    tokens = make_tokens(5, 2 * PAGE_SIZE)
    kv = make_kv(6, len(tokens))
    assert s.put_batch(tokens.tolist(), kv) == 2
    for same in (tokens, tokens.to(torch.int32), tokens.numpy().astype(np.uint32), tokens.tolist()):
        assert s.probe(same) == 2
        assert_bit_exact(s.get_batch(same, 2), kv)
        assert s.put_batch(same, kv) == 0


def test_put_writes_only_new_pages(make_store: MakeStore, kind: str) -> None:
    s = make_store(kind)
    short = make_tokens(7, 3 * PAGE_SIZE)
    long = torch.cat([short, make_tokens(8, 2 * PAGE_SIZE + 1)])
    kv_short = make_kv(9, len(short))
    kv_long = make_kv(10, len(long))  # other values for the shared pages: the stored ones must win

    assert s.put_batch(short, kv_short) == 3
    assert s.put_batch(short, kv_short) == 0
    assert s.put_batch(long, kv_long) == 2
    assert s.put_batch(long, kv_long) == 0
    assert s.probe(long) == 5
    expected = torch.cat([page_slice(kv_short, 3), kv_long[:, :, 3 * PAGE_SIZE : 5 * PAGE_SIZE]], dim=2)
    assert_bit_exact(s.get_batch(long, 5), expected)
    assert s.stats().pages_written == 5
    assert s.stats().pages_stored == 5


def test_probe_counts_leading_full_pages(make_store: MakeStore, kind: str) -> None:
    s = make_store(kind)
    tokens = make_tokens(11, 2 * PAGE_SIZE + 2)
    s.put_batch(tokens, prefix_kv(tokens))
    longer = torch.cat([tokens, make_tokens(12, 2 * PAGE_SIZE)])

    assert s.probe(tokens) == 2
    assert s.probe(tokens[: 2 * PAGE_SIZE]) == 2
    assert s.probe(tokens[: 2 * PAGE_SIZE - 1]) == 1  # the partial second page is not a page
    assert s.probe(tokens[: PAGE_SIZE - 1]) == 0
    assert s.probe(longer) == 2
    assert s.probe(make_tokens(13, 4 * PAGE_SIZE)) == 0


@pytest.mark.parametrize(
    ("diverge_at", "shared_pages"),
    [(0, 0), (PAGE_SIZE - 1, 0), (PAGE_SIZE, 1), (2 * PAGE_SIZE + 1, 2), (3 * PAGE_SIZE - 1, 2)],
)
def test_diverging_prompts_share_only_common_full_pages(
    make_store: MakeStore, kind: str, diverge_at: int, shared_pages: int
) -> None:
    s = make_store(kind)
    first = make_tokens(14, 4 * PAGE_SIZE)
    second = first.clone()
    second[diverge_at] = (int(first[diverge_at]) + 1) % 50_000
    kv_first, kv_second = prefix_kv(first), prefix_kv(second)

    s.put_batch(first, kv_first)
    assert s.probe(second) == shared_pages
    assert s.put_batch(second, kv_second) == 4 - shared_pages
    assert s.probe(first) == 4
    assert s.probe(second) == 4
    assert_bit_exact(s.get_batch(first, 4), kv_first)
    assert_bit_exact(s.get_batch(second, 4), kv_second)


def test_get_batch_shape_values_and_empty(make_store: MakeStore, kind: str) -> None:
    s = make_store(kind)
    tokens = make_tokens(15, 3 * PAGE_SIZE)
    kv = prefix_kv(tokens)
    s.put_batch(tokens, kv)
    for n in (1, 2, 3):
        out = s.get_batch(tokens, n)
        assert tuple(out.shape) == (LAYOUT.layers, 2, n * PAGE_SIZE, LAYOUT.kv_heads, LAYOUT.head_dim)
        assert_bit_exact(out, page_slice(kv, n))
    empty = s.get_batch(tokens, 0)
    assert tuple(empty.shape) == (LAYOUT.layers, 2, 0, LAYOUT.kv_heads, LAYOUT.head_dim)
    assert empty.dtype == LAYOUT.dtype
    empty_miss = s.get_batch(make_tokens(16, PAGE_SIZE), 0)
    assert empty_miss.shape[2] == 0
    short = tokens[: PAGE_SIZE - 1]  # not even one full page
    assert s.probe(short) == 0
    assert s.get_batch(short, 0).shape[2] == 0
    assert s.put_batch(short, kv[:, :, : PAGE_SIZE - 1]) == 0
    assert s.evict(short, 0) == 0
    assert s.probe(tokens) == 3


def test_get_batch_returns_a_private_tensor(make_store: MakeStore, kind: str) -> None:
    s = make_store(kind)
    tokens = make_tokens(17, 2 * PAGE_SIZE)
    kv = prefix_kv(tokens)
    s.put_batch(tokens, kv)
    kv_copy = kv.clone()
    kv.view(torch.int16).zero_()  # the caller reuses its buffer after put_batch returned
    out = s.get_batch(tokens, 2)
    assert_bit_exact(out, kv_copy)
    out.view(torch.int16).zero_()  # and scribbles on what get_batch returned
    assert_bit_exact(s.get_batch(tokens, 2), kv_copy)


def test_namespaces_isolate(make_store: MakeStore, kind: str, tmp_path: Path) -> None:
    path = tmp_path / "shared"
    tokens = make_tokens(18, 2 * PAGE_SIZE)
    kv_a, kv_b = make_kv(19, len(tokens)), make_kv(20, len(tokens))

    a = make_store(kind, path=path, namespace="tenant-a")
    assert a.put_batch(tokens, kv_a) == 2
    if kind != "memory":
        a.close()  # one open handle per directory
    b = make_store(kind, path=path, namespace="tenant-b")
    assert b.probe(tokens) == 0
    assert b.put_batch(tokens, kv_b) == 2
    assert_bit_exact(b.get_batch(tokens, 2), kv_b)
    if kind != "memory":
        b.close()
        a = make_store(kind, path=path, namespace="tenant-a")
    assert a.probe(tokens) == 2
    assert_bit_exact(a.get_batch(tokens, 2), kv_a)


def test_put_async_then_flush(make_store: MakeStore, kind: str) -> None:
    s = make_store(kind)
    prompts = [make_tokens(100 + i, (i % 3 + 1) * PAGE_SIZE + 1) for i in range(10)]
    queued = [s.put_async(tokens, prefix_kv(tokens)) for tokens in prompts]
    assert queued == [i % 3 + 1 for i in range(10)]
    s.flush()
    for tokens in prompts:
        n = len(tokens) // PAGE_SIZE
        assert s.probe(tokens) == n
        assert_bit_exact(s.get_batch(tokens, n), prefix_kv(tokens))
    assert s.put_async(prompts[0], prefix_kv(prompts[0])) == 0  # nothing missing, nothing queued
    stats = s.stats()
    assert stats.pages_written == sum(queued)
    assert stats.dropped_pages == 0
    assert stats.writer_queue_depth == 0


def test_writer_overflow_drop_counts_dropped_pages(make_store: MakeStore, kind: str) -> None:
    config = StoreConfig(writer_queue_depth=1, writer_overflow="drop", writer_batch_size=1)
    s = make_store(kind, config=config)
    prompts = [make_tokens(200 + i, 2 * PAGE_SIZE) for i in range(12)]
    # Holding the store's lock stalls the background writer inside its first write, so the one-slot queue
    # fills after at most two accepted requests and the rest must be dropped.
    with s._lock:
        queued = [s.put_async(tokens, prefix_kv(tokens)) for tokens in prompts]
    s.flush()
    accepted = [q for q in queued if q]
    assert queued[0] == 2
    assert 1 <= len(accepted) <= 2
    assert all(q in (0, 2) for q in queued)
    stats = s.stats()
    assert stats.dropped_pages == 2 * (len(prompts) - len(accepted))
    assert stats.pages_written == 2 * len(accepted)
    for tokens, q in zip(prompts, queued, strict=True):
        assert s.probe(tokens) == q
        if q:
            assert_bit_exact(s.get_batch(tokens, 2), prefix_kv(tokens))


def test_writer_overflow_block_loses_nothing(make_store: MakeStore, kind: str) -> None:
    config = StoreConfig(writer_queue_depth=1, writer_overflow="block", writer_batch_size=2)
    s = make_store(kind, config=config)
    prompts = [make_tokens(300 + i, 2 * PAGE_SIZE) for i in range(30)]
    queued = [s.put_async(tokens, prefix_kv(tokens)) for tokens in prompts]
    s.flush()
    assert queued == [2] * 30
    assert s.stats().dropped_pages == 0
    assert all(s.probe(tokens) == 2 for tokens in prompts)


def _evict_tree() -> dict[str, torch.Tensor]:
    """Three prompts: a (5 pages); b shares a's first 2 pages (+2); c shares a's first 3 pages (+1)."""
    a = make_tokens(400, 5 * PAGE_SIZE)
    b = torch.cat([a[: 2 * PAGE_SIZE], make_tokens(401, 2 * PAGE_SIZE)])
    c = torch.cat([a[: 3 * PAGE_SIZE], make_tokens(402, PAGE_SIZE + 2)])
    return {"a": a, "b": b, "c": c}


def test_evict_removes_a_page_and_its_subtree_only(make_store: MakeStore, kind: str) -> None:
    skip_for(kind, NO_OWN_EVICTION)
    s = make_store(kind)
    tree = _evict_tree()
    for tokens in tree.values():
        s.put_batch(tokens, prefix_kv(tokens))
    assert s.stats().pages_stored == 5 + 2 + 1
    unrelated = make_tokens(403, 2 * PAGE_SIZE)
    s.put_batch(unrelated, prefix_kv(unrelated))

    def probes() -> tuple[int, int, int, int]:
        return s.probe(tree["a"]), s.probe(tree["b"]), s.probe(tree["c"]), s.probe(unrelated)

    assert s.evict(tree["a"], 3) == 2  # a's pages 3 and 4
    assert probes() == (3, 4, 4, 2)
    assert s.evict(tree["a"], 3) == 0  # already gone
    assert s.evict(tree["a"], 2) == 2  # a's page 2 and c's page 3 below it
    assert probes() == (2, 4, 2, 2)
    for tokens in (*tree.values(), unrelated):
        k = s.probe(tokens)
        assert_bit_exact(s.get_batch(tokens, k), page_slice(prefix_kv(tokens), k))
    assert s.evict(tree["b"], 0) == 4  # the whole tree: a0, a1, b2, b3
    assert probes() == (0, 0, 0, 2)
    assert s.evict(make_tokens(404, 3 * PAGE_SIZE), 0) == 0
    stats = s.stats()
    assert stats.evicted_pages == 8
    assert stats.pages_stored == 2
    assert_bit_exact(s.get_batch(unrelated, 2), prefix_kv(unrelated))
    # evicted pages can be stored again
    assert s.put_batch(tree["c"], prefix_kv(tree["c"])) == 4
    assert_bit_exact(s.get_batch(tree["c"], 4), prefix_kv(tree["c"]))


BUDGET_LAYOUT = KVLayout(layers=2, kv_heads=2, head_dim=64, dtype=torch.float16)  # 16 KiB pages of 16 tokens
BUDGET_PAGE = 16
BUDGET_BYTES = 4 << 20
# RocksDB's own files are part of what the disk sees: the info LOG (rolled at 256 KiB), MANIFEST, OPTIONS.
LSM_BUDGET_SLACK = 512 << 10


def _budget_workload(s: object, n_puts: int) -> tuple[list[torch.Tensor], int]:
    """Puts of 5-page prompts over 20 shared stems, with probes and gets in between (LRU traffic)."""
    from store import KVStore

    assert isinstance(s, KVStore)
    rng = np.random.default_rng(0)
    stems = [make_tokens(500 + i, 3 * BUDGET_PAGE) for i in range(20)]
    prompts: list[torch.Tensor] = []
    peak = 0
    for i in range(n_puts):
        stem = stems[int(rng.integers(len(stems)))][: BUDGET_PAGE * int(rng.integers(0, 4))]
        tokens = torch.cat([stem, make_tokens(10_000 + i, 5 * BUDGET_PAGE - len(stem))])
        s.put_batch(tokens, prefix_kv(tokens, BUDGET_LAYOUT, BUDGET_PAGE))
        prompts.append(tokens)
        if i % 3 == 0:
            old = prompts[int(rng.integers(len(prompts)))]
            k = s.probe(old)
            if k:
                s.get_batch(old, k)
        stats = s.stats()
        peak = max(peak, stats.live_bytes if s.kind == "memory" else stats.disk_bytes)
    return prompts, peak


def _check_budget_run(make_store: MakeStore, kind: str, config: StoreConfig) -> None:
    s = make_store(
        kind, layout=BUDGET_LAYOUT, page_size=BUDGET_PAGE, budget_bytes=BUDGET_BYTES, config=config
    )
    prompts, peak = _budget_workload(s, 160)  # 800 pages written, 12.5 MiB: three budgets' worth
    stats = s.stats()
    allowed = BUDGET_BYTES + (LSM_BUDGET_SLACK if store_kind_of(kind) == "lsm" else 0)
    assert stats.evicted_pages > 0
    assert peak <= allowed, (
        f"{kind}: peak {peak / 2**20:.2f} MiB over a {BUDGET_BYTES / 2**20:.0f} MiB budget"
    )
    # the store still holds a useful share of the budget, not an emptied cache
    assert stats.live_bytes >= BUDGET_BYTES // 4
    # prefix-closed: whatever probe reports, get_batch returns, bit-exact
    pages: set[tuple[int, ...]] = set()
    for tokens in prompts:
        k = s.probe(tokens)
        out = s.get_batch(tokens, k)
        assert_bit_exact(out, page_slice(prefix_kv(tokens, BUDGET_LAYOUT, BUDGET_PAGE), k, BUDGET_PAGE))
        ids = tokens.tolist()
        pages.update(tuple(ids[: (j + 1) * BUDGET_PAGE]) for j in range(k))
    assert pages
    assert stats.pages_stored == len(pages)  # the capacity manager's count is the truth


@pytest.mark.parametrize("order", ["lru", "fifo"])
def test_budget_holds(make_store: MakeStore, kind: str, order: str) -> None:
    skip_for(kind, NO_OWN_EVICTION)
    _check_budget_run(make_store, kind, StoreConfig(eviction_order=order))


@pytest.mark.parametrize("order", ["lru", "fifo"])
def test_capacity_manager_eviction_order(make_store: MakeStore, kind: str, order: str) -> None:
    """LRU keeps a prompt that is read again and again; FIFO evicts it first anyway."""
    skip_for(kind, NO_OWN_EVICTION)
    config = StoreConfig(
        eviction_order=order, enable_blob_garbage_collection=True, blob_garbage_collection_age_cutoff=1.0
    )
    s = make_store(
        kind, layout=BUDGET_LAYOUT, page_size=BUDGET_PAGE, budget_bytes=BUDGET_BYTES, config=config
    )
    hot = make_tokens(550, 5 * BUDGET_PAGE)
    s.put_batch(hot, prefix_kv(hot, BUDGET_LAYOUT, BUDGET_PAGE))
    cold = [make_tokens(560 + i, 5 * BUDGET_PAGE) for i in range(90)]  # 450 pages: ~1.8 budgets
    for i, tokens in enumerate(cold):
        s.put_batch(tokens, prefix_kv(tokens, BUDGET_LAYOUT, BUDGET_PAGE))
        if i % 2 == 0 and s.probe(hot) == 5:
            s.get_batch(hot, 5)
    assert s.stats().evicted_pages > 0
    assert s.probe(cold[0]) < 5  # the oldest untouched prompt is gone either way
    assert s.probe(cold[-1]) == 5  # the newest is there
    if order == "lru":
        assert s.probe(hot) == 5
        assert_bit_exact(s.get_batch(hot, 5), prefix_kv(hot, BUDGET_LAYOUT, BUDGET_PAGE))
    else:
        assert s.probe(hot) < 5


def test_reopen_keeps_every_page(make_store: MakeStore, disk_kind: str, tmp_path: Path) -> None:
    path = tmp_path / "reopen"
    s = make_store(disk_kind, path=path)
    prompts = [make_tokens(600 + i, (i % 4 + 1) * PAGE_SIZE + i % 3) for i in range(12)]
    prompts.append(torch.cat([prompts[3][: 2 * PAGE_SIZE], make_tokens(613, 2 * PAGE_SIZE)]))
    for tokens in prompts:
        s.put_batch(tokens, prefix_kv(tokens))
    s.put_async(make_tokens(614, 3 * PAGE_SIZE), prefix_kv(make_tokens(614, 3 * PAGE_SIZE)))
    prompts.append(make_tokens(614, 3 * PAGE_SIZE))  # close() drains the writer
    s.close()
    live_bytes = []
    for _ in range(2):
        s = make_store(disk_kind, path=path)
        for tokens in prompts:
            n = len(tokens) // PAGE_SIZE
            assert s.probe(tokens) == n
            assert_bit_exact(s.get_batch(tokens, n), prefix_kv(tokens))
        after = s.stats()
        assert after.pages_stored == sum(i % 4 + 1 for i in range(12)) + 2 + 3
        assert after.live_bytes >= after.pages_stored * LAYOUT.page_bytes(PAGE_SIZE)
        live_bytes.append(after.live_bytes)
        s.close()
    assert live_bytes[0] == live_bytes[1]


def test_an_eviction_survives_reopen(make_store: MakeStore, disk_kind: str, tmp_path: Path) -> None:
    skip_for(disk_kind, NO_OWN_EVICTION)
    path = tmp_path / "evicted"
    s = make_store(disk_kind, path=path)
    kept, gone = make_tokens(700, 4 * PAGE_SIZE), make_tokens(701, 4 * PAGE_SIZE)
    s.put_batch(kept, prefix_kv(kept))
    s.put_batch(gone, prefix_kv(gone))
    assert s.evict(gone, 1) == 3
    s.close()
    s = make_store(disk_kind, path=path)
    assert (s.probe(kept), s.probe(gone)) == (4, 1)
    assert_bit_exact(s.get_batch(kept, 4), prefix_kv(kept))
    assert s.stats().pages_stored == 5


def test_stats_count_a_known_script_exactly(make_store: MakeStore, kind: str) -> None:
    skip_for(kind, NO_OWN_EVICTION)
    s = make_store(kind)
    a = make_tokens(700, 3 * PAGE_SIZE + 1)
    b = torch.cat([a[: 2 * PAGE_SIZE], make_tokens(701, 2 * PAGE_SIZE)])
    c = make_tokens(702, 2 * PAGE_SIZE)
    fresh = s.stats()
    assert isinstance(fresh, StoreStats)
    assert fresh.kind == store_kind_of(kind)
    assert (fresh.puts, fresh.probes, fresh.gets, fresh.pages_stored, fresh.pages_written) == (0, 0, 0, 0, 0)

    assert s.put_batch(a, prefix_kv(a)) == 3
    assert s.put_batch(a, prefix_kv(a)) == 0
    assert s.probe(a) == 3
    assert s.probe(b) == 2
    assert s.probe(c) == 0
    assert s.put_batch(b, prefix_kv(b)) == 2
    s.get_batch(a, 2)
    s.get_batch(b, 4)
    assert s.evict(b, 3) == 1

    stats = s.stats()
    page_bytes = LAYOUT.page_bytes(PAGE_SIZE)
    assert stats.puts == 3
    assert stats.probes == 3
    assert stats.gets == 2
    assert stats.pages_written == 5
    assert stats.bytes_written == 5 * page_bytes
    assert stats.pages_read == 6
    assert stats.bytes_read == 6 * page_bytes
    assert stats.pages_hit == 3 + 2 + 0
    assert stats.pages_missed == 0 + 2 + 2
    assert stats.dropped_pages == 0
    assert stats.evicted_pages == 1
    assert stats.pages_stored == 4
    assert 4 * page_bytes <= stats.live_bytes <= 4 * (page_bytes + 256)
    assert (stats.put_latency.count, stats.probe_latency.count, stats.get_latency.count) == (3, 3, 2)
    assert 0 < stats.probe_latency.p50_s <= stats.probe_latency.p99_s
    assert stats.writer_queue_depth == 0
    if kind != "memory":
        assert stats.disk_bytes > 0
        assert stats.files > 0
    assert stats.to_dict()["pages_written"] == 5


def test_threads_put_and_get_concurrently(make_store: MakeStore, kind: str) -> None:
    s = make_store(kind)
    stems = [make_tokens(800 + i, 3 * PAGE_SIZE) for i in range(3)]
    errors: list[BaseException] = []
    checked = [0] * 4
    start = threading.Barrier(4)

    def worker(index: int) -> None:
        try:
            rng = np.random.default_rng(index)
            start.wait()
            for step in range(40):
                stem = stems[int(rng.integers(3))][: PAGE_SIZE * int(rng.integers(0, 4))]
                tokens = torch.cat([stem, make_tokens(1000 * index + step % 10, 2 * PAGE_SIZE)])
                kv = prefix_kv(tokens)
                if step % 4 == 3:
                    s.put_async(tokens, kv)
                else:
                    s.put_batch(tokens, kv)
                    assert s.probe(tokens) == len(tokens) // PAGE_SIZE
                k = s.probe(tokens)
                assert_bit_exact(s.get_batch(tokens, k), page_slice(kv, k))
                checked[index] += 1
        except BaseException as error:  # re-raised in the main thread below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    assert checked == [40] * 4
    s.flush()
    for stem in stems:
        assert s.probe(stem) == 3
        assert_bit_exact(s.get_batch(stem, 3), prefix_kv(stem))


def test_apply_live_knob(make_store: MakeStore, kind: str) -> None:
    s = make_store(kind)
    tokens = make_tokens(900, 3 * PAGE_SIZE)
    s.put_batch(tokens, prefix_kv(tokens))
    live = s.config.replace(writer_batch_size=4, write_buffer_size=8 << 20, min_blob_size=1024)
    assert s.apply(live) == []
    assert s.config == live
    assert s.probe(tokens) == 3
    assert_bit_exact(s.get_batch(tokens, 3), prefix_kv(tokens))
    more = make_tokens(901, 2 * PAGE_SIZE)
    assert s.put_batch(more, prefix_kv(more)) == 2
    assert s.apply(live) == []  # applying the same config is a no-op


def test_apply_writer_knobs_take_effect(make_store: MakeStore, kind: str) -> None:
    s = make_store(kind)
    warm = make_tokens(905, 2 * PAGE_SIZE)
    assert s.put_async(warm, prefix_kv(warm)) == 2  # the writer thread runs with the old queue
    new = s.config.replace(writer_queue_depth=1, writer_overflow="drop", writer_batch_size=1)
    assert s.apply(new) == s.config.needs_reopen(new)
    prompts = [make_tokens(910 + i, 2 * PAGE_SIZE) for i in range(8)]
    with s._lock:  # stall the writer, as in test_writer_overflow_drop_counts_dropped_pages
        queued = [s.put_async(tokens, prefix_kv(tokens)) for tokens in prompts]
    s.flush()
    accepted = sum(1 for q in queued if q)
    assert 1 <= accepted <= 2
    assert s.stats().dropped_pages == 2 * (len(prompts) - accepted)
    assert s.probe(warm) == 2


REOPEN_KNOBS = {
    name: value
    for name, value in {"block_cache_bytes": 8 << 20, "writer_queue_depth": 8}.items()
    if not StoreConfig.specs()[name].live
}


@pytest.mark.parametrize("knob", sorted(REOPEN_KNOBS))
def test_apply_reopen_knob_keeps_data(make_store: MakeStore, kind: str, knob: str) -> None:
    s = make_store(kind)
    prompts = [make_tokens(950 + i, (i + 1) * PAGE_SIZE) for i in range(4)]
    for tokens in prompts[:3]:
        s.put_batch(tokens, prefix_kv(tokens))
    s.put_async(prompts[3], prefix_kv(prompts[3]))  # queued writes survive the reopen
    new = s.config.replace(**{knob: REOPEN_KNOBS[knob]})
    assert s.apply(new) == [knob]
    assert s.config == new
    for i, tokens in enumerate(prompts):
        assert s.probe(tokens) == i + 1
        assert_bit_exact(s.get_batch(tokens, i + 1), prefix_kv(tokens))
    more = make_tokens(960, 2 * PAGE_SIZE)
    assert s.put_batch(more, prefix_kv(more)) == 2
    assert s.stats().pages_stored == 1 + 2 + 3 + 4 + 2


def test_context_manager_closes(kind: str, tmp_path: Path) -> None:
    from store import StoreClosedError
    from tests.store.conftest import open_kind

    tokens = make_tokens(970, PAGE_SIZE)
    with open_kind(kind, tmp_path / "ctx") as s:
        s.put_batch(tokens, prefix_kv(tokens))
        assert s.probe(tokens) == 1
    with pytest.raises(StoreClosedError):
        s.probe(tokens)
    if kind != "memory":
        with open_kind(kind, tmp_path / "ctx") as again:
            assert again.probe(tokens) == 1
