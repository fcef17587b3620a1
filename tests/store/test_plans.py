"""A precomputed :class:`PagePlan` stands in for the tokens in every method, on every kind."""

from __future__ import annotations

import pytest

from store.pages import plan_pages
from tests.store.conftest import (
    NO_OWN_EVICTION,
    PAGE_SIZE,
    MakeStore,
    assert_bit_exact,
    make_tokens,
    page_slice,
    prefix_kv,
    skip_for,
)


def test_a_plan_is_accepted_wherever_tokens_are(make_store: MakeStore, kind: str) -> None:
    skip_for(kind, NO_OWN_EVICTION)
    s = make_store(kind)
    tokens = make_tokens(1, 5 * PAGE_SIZE + 2)
    kv = prefix_kv(tokens)
    plan = s.plan(tokens)
    assert plan.n_pages == 5
    assert s.probe(plan) == 0
    assert s.put_batch(s.plan(tokens[: 3 * PAGE_SIZE]), page_slice(kv, 3)) == 3
    assert s.probe(plan) == s.probe(tokens) == 3
    assert s.put_batch(plan, kv) == 2  # the stored prefix is skipped, as with tokens
    assert_bit_exact(s.get_batch(plan, 5), page_slice(kv, 5))
    assert_bit_exact(s.get_batch(tokens, 4), page_slice(kv, 4))
    assert s.evict(plan, 2) == 3
    assert s.probe(tokens) == 2


def test_a_plan_of_another_store_shape_is_refused(make_store: MakeStore, kind: str) -> None:
    s = make_store(kind)
    tokens = make_tokens(2, 4 * PAGE_SIZE)
    for plan in (
        plan_pages(tokens, PAGE_SIZE, "other-model"),
        plan_pages(tokens, 2 * PAGE_SIZE, s.namespace),
    ):
        with pytest.raises(ValueError, match="make it with this store's plan"):
            s.probe(plan)
        with pytest.raises(ValueError, match="make it with this store's plan"):
            s.put_batch(plan, prefix_kv(tokens))
    with pytest.raises(ValueError, match="exceeds the 4 full pages"):
        s.get_batch(s.plan(tokens), 5)
