"""A hypothesis state machine runs put / probe / get / evict / reopen against a plain-dict model."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from store import KVStore, PageMissingError
from tests.store.conftest import (
    KINDS,
    NO_OWN_EVICTION,
    PAGE_SIZE,
    assert_bit_exact,
    make_tokens,
    open_kind,
    prefix_kv,
    skip_for,
)


def _pool() -> list[torch.Tensor]:
    """Eight prompts forming a prefix tree (shared pages at several depths) plus a loner."""
    root = make_tokens(1, 6 * PAGE_SIZE)
    other = make_tokens(2, 4 * PAGE_SIZE)
    p1 = torch.cat([root[: 2 * PAGE_SIZE], make_tokens(3, 3 * PAGE_SIZE)])
    return [
        root,
        root[: 3 * PAGE_SIZE + 2],  # a prefix of root with a partial page
        p1,
        torch.cat([p1[: 4 * PAGE_SIZE], make_tokens(4, PAGE_SIZE + 3)]),
        torch.cat([root[: 4 * PAGE_SIZE], make_tokens(5, 2 * PAGE_SIZE)]),
        torch.cat([root[:PAGE_SIZE], make_tokens(6, 1)]),
        other,
        make_tokens(7, PAGE_SIZE - 1),  # no full page at all
    ]


POOL = _pool()
KV = [prefix_kv(tokens) for tokens in POOL]
Chain = tuple[int, ...]


def _chain(tokens: torch.Tensor, pages: int) -> Chain:
    return tuple(tokens[: pages * PAGE_SIZE].tolist())


class StoreMachine(RuleBasedStateMachine):
    """The model maps each stored page (named by its whole token prefix) to nothing: KV is a function of
    the prefix, so presence is all the model needs; values are checked against ``prefix_kv``."""

    kind: str = "lsm"

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="kvtune-stateful-"))
        self.store: KVStore = open_kind(self.kind, self.directory / "db")
        self.model: set[Chain] = set()

    def teardown(self) -> None:
        try:
            self.store.close()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def model_probe(self, index: int) -> int:
        tokens = POOL[index]
        k = 0
        while k < len(tokens) // PAGE_SIZE and _chain(tokens, k + 1) in self.model:
            k += 1
        return k

    @rule(index=st.integers(0, len(POOL) - 1), asynchronous=st.booleans())
    def put(self, index: int, asynchronous: bool) -> None:
        tokens = POOL[index]
        n = len(tokens) // PAGE_SIZE
        new = [_chain(tokens, k) for k in range(1, n + 1) if _chain(tokens, k) not in self.model]
        if asynchronous:
            assert self.store.put_async(tokens, KV[index]) == len(new)
            self.store.flush()
        else:
            assert self.store.put_batch(tokens, KV[index]) == len(new)
        self.model.update(new)

    @rule(index=st.integers(0, len(POOL) - 1))
    def probe(self, index: int) -> None:
        assert self.store.probe(POOL[index]) == self.model_probe(index)

    @rule(index=st.integers(0, len(POOL) - 1), data=st.data())
    def get(self, index: int, data: st.DataObject) -> None:
        tokens = POOL[index]
        stored = self.model_probe(index)
        n = data.draw(st.integers(0, stored), label="n_pages")
        assert_bit_exact(self.store.get_batch(tokens, n), KV[index][:, :, : n * PAGE_SIZE])
        if stored < len(tokens) // PAGE_SIZE:
            with pytest.raises(PageMissingError):
                self.store.get_batch(tokens, stored + 1)

    @rule(index=st.integers(0, len(POOL) - 1), data=st.data())
    def evict(self, index: int, data: st.DataObject) -> None:
        tokens = POOL[index]
        n = len(tokens) // PAGE_SIZE
        if n == 0:
            assert self.store.evict(tokens, 0) == 0
            return
        k = data.draw(st.integers(0, n - 1), label="page")
        root = _chain(tokens, k + 1)
        doomed = {chain for chain in self.model if chain[: len(root)] == root}
        assert self.store.evict(tokens, k) == len(doomed)
        self.model -= doomed

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = open_kind(self.kind, self.directory / "db")
        if self.kind == "memory":
            self.model.clear()  # a memory store starts empty

    @invariant()
    def probes_match_the_model(self) -> None:
        for index in range(len(POOL)):
            assert self.store.probe(POOL[index]) == self.model_probe(index)

    @invariant()
    def pages_stored_matches_the_model(self) -> None:
        assert self.store.stats().pages_stored == len(self.model)


@pytest.mark.parametrize("kind", KINDS)
def test_store_matches_a_dict_model(kind: str) -> None:
    skip_for(kind, NO_OWN_EVICTION)  # the model's rules include evict
    machine = type(f"StoreMachine_{kind}", (StoreMachine,), {"kind": kind})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=20,
            stateful_step_count=30,
            deadline=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
