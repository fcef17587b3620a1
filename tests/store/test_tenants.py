"""Tenants sharing a directory: the budget is the directory's, eviction and ``stats()`` cover every namespace
in it in one recency order (the oldest pages go first, whichever tenant wrote them)."""

from __future__ import annotations

from pathlib import Path

import torch

from store import KVStore, StoreConfig
from tests.store.conftest import (
    NO_OWN_EVICTION,
    assert_bit_exact,
    make_tokens,
    open_kind,
    page_slice,
    prefix_kv,
    skip_for,
)
from tests.store.test_contract import BUDGET_BYTES, BUDGET_LAYOUT, BUDGET_PAGE, LSM_BUDGET_SLACK

PAGES = 5
A_PROMPTS = 80  # 400 pages of 16 KiB: 6.25 MiB, about 1.6 budgets
B_PROMPTS = 6


def _kv(tokens: torch.Tensor) -> torch.Tensor:
    return prefix_kv(tokens, BUDGET_LAYOUT, BUDGET_PAGE)


def _open(
    kind: str, path: Path, namespace: str, budget_bytes: int | None = None, config: StoreConfig | None = None
) -> KVStore:
    return open_kind(
        kind,
        path,
        layout=BUDGET_LAYOUT,
        page_size=BUDGET_PAGE,
        budget_bytes=budget_bytes,
        config=config or StoreConfig(),
        namespace=namespace,
    )


def test_a_small_budget_on_a_shared_directory_evicts_the_oldest_pages_of_any_tenant(
    disk_kind: str, tmp_path: Path
) -> None:
    skip_for(disk_kind, NO_OWN_EVICTION)
    _check_shared_budget(disk_kind, tmp_path / "shared", StoreConfig())


def test_lsm_generations_evict_the_older_tenant_first(tmp_path: Path) -> None:
    # values written before generations were used (all of A's) go before the oldest generation
    _check_shared_budget("lsm", tmp_path / "shared", StoreConfig(reclaim="generations"))


def test_lsm_flat_keys_share_the_directory_budget_the_same_way(tmp_path: Path) -> None:
    _check_shared_budget("lsm", tmp_path / "shared", StoreConfig(key_scheme="flat"))


def _check_shared_budget(kind: str, path: Path, config: StoreConfig) -> None:
    """Tenant A fills the directory past the budget unbudgeted; tenant B opens it with the budget."""
    a_prompts = [make_tokens(700 + i, PAGES * BUDGET_PAGE) for i in range(A_PROMPTS)]
    b_prompts = [make_tokens(800 + i, PAGES * BUDGET_PAGE) for i in range(B_PROMPTS)]
    with _open(kind, path, "tenant-a", None, config) as a:
        for tokens in a_prompts:
            assert a.put_batch(tokens, _kv(tokens)) == PAGES
        assert a.stats().pages_stored == A_PROMPTS * PAGES

    with _open(kind, path, "tenant-b", BUDGET_BYTES, config) as b:
        for tokens in b_prompts:
            assert b.put_batch(tokens, _kv(tokens)) == PAGES
            assert b.probe(tokens) == PAGES  # B's own put is never what its budget takes back
        stats = b.stats()
        assert stats.evicted_pages > 0
        assert stats.disk_bytes <= BUDGET_BYTES + (LSM_BUDGET_SLACK if kind == "lsm" else 0)
        for tokens in b_prompts:
            assert_bit_exact(b.get_batch(tokens, PAGES), _kv(tokens))
        assert all(b.probe(tokens) == 0 for tokens in a_prompts)  # namespaces still never see each other

    with _open(kind, path, "tenant-a", None, config) as a:
        kept = [a.probe(tokens) for tokens in a_prompts]
        assert kept == sorted(kept), "A's oldest prompts go first"
        assert kept[0] == 0
        assert kept[-1] == (0 if config.reclaim == "generations" else PAGES)
        for tokens, k in zip(a_prompts, kept, strict=True):
            assert_bit_exact(a.get_batch(tokens, k), page_slice(_kv(tokens), k, BUDGET_PAGE))
        # B's stats counted the directory: A's surviving pages and B's own, as A now sees them too
        assert stats.pages_stored == sum(kept) + B_PROMPTS * PAGES
        assert a.stats().pages_stored == stats.pages_stored
