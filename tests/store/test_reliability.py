"""Regression tests of the store's reliability defects (issue 13): close racing the async writer, failed
writes, tensors the store cannot hold, namespaces that cannot be encoded, and directories of another kind."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from store import IncompatibleStoreError, KVStore, StoreBusyError, StoreClosedError, StoreConfig
from tests.store.conftest import (
    DISK_KINDS,
    NOT_KVTUNE_IO,
    PAGE_SIZE,
    MakeStore,
    assert_bit_exact,
    make_tokens,
    open_kind,
    prefix_kv,
    skip_for,
)

CLOSE_RACE_ROUNDS = 4
CLOSE_RACE_THREADS = 8


def _put_until_closed(
    s: KVStore, seed: int, acknowledged: list[torch.Tensor], errors: list[BaseException]
) -> None:
    for i in range(10_000):
        tokens = make_tokens(seed * 10_000 + i, 2 * PAGE_SIZE)
        try:
            if s.put_async(tokens, prefix_kv(tokens)):
                acknowledged.append(tokens)
        except StoreClosedError:
            return
        except BaseException as error:  # any other error fails the test
            errors.append(error)
            return


@pytest.mark.parametrize("overflow", ["block", "drop"])
def test_close_racing_put_async_blocks_nobody_and_keeps_every_acknowledged_page(
    tmp_path: Path, disk_kind: str, overflow: str
) -> None:
    config = StoreConfig(writer_queue_depth=1, writer_batch_size=1, writer_overflow=overflow)
    for round_ in range(CLOSE_RACE_ROUNDS):
        path = tmp_path / f"round-{round_}"
        s = open_kind(disk_kind, path, config=config)
        acknowledged: list[torch.Tensor] = []
        errors: list[BaseException] = []
        threads = [
            threading.Thread(target=_put_until_closed, args=(s, round_ * 100 + t, acknowledged, errors))
            for t in range(CLOSE_RACE_THREADS)
        ]
        for thread in threads:
            thread.start()
        while len(acknowledged) < 5 and not errors:
            threading.Event().wait(0.001)
        s.close()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads), "a put_async caller is still blocked"
        assert errors == []
        with pytest.raises(StoreClosedError, match=f"the {disk_kind} store at .* is closed"):
            s.put_async(acknowledged[0], prefix_kv(acknowledged[0]))
        reopened = open_kind(disk_kind, path, config=config)
        try:
            missing = [tokens for tokens in acknowledged if reopened.probe(tokens) != 2]
            assert missing == []
        finally:
            reopened.close()


def test_close_is_idempotent_and_every_method_then_raises_closed(make_store: MakeStore, kind: str) -> None:
    s = make_store(kind)
    tokens = make_tokens(1, 2 * PAGE_SIZE)
    s.put_async(tokens, prefix_kv(tokens))
    s.close()
    s.close()
    for call in (lambda: s.probe(tokens), lambda: s.put_async(tokens, prefix_kv(tokens)), s.flush, s.stats):
        with pytest.raises(StoreClosedError):
            call()


def test_a_second_handle_on_a_directory_is_refused_and_harms_nothing(tmp_path: Path, disk_kind: str) -> None:
    skip_for(disk_kind, NOT_KVTUNE_IO)
    path = tmp_path / "shared"
    tokens = make_tokens(2, 3 * PAGE_SIZE)
    a = open_kind(disk_kind, path, namespace="tenant-a")
    assert a.put_batch(tokens, prefix_kv(tokens)) == 3
    with pytest.raises(StoreBusyError, match=f"the {disk_kind} store at .* is already open"):
        open_kind(disk_kind, path, namespace="tenant-b")
    assert a.put_batch(make_tokens(3, PAGE_SIZE), prefix_kv(make_tokens(3, PAGE_SIZE))) == 1
    a.close()
    b = open_kind(disk_kind, path, namespace="tenant-b")  # free again once A closed
    assert b.probe(tokens) == 0
    b.close()
    a = open_kind(disk_kind, path, namespace="tenant-a")
    assert_bit_exact(a.get_batch(tokens, 3), prefix_kv(tokens))
    a.close()


@pytest.mark.parametrize(("written", "opened"), list(itertools.permutations(DISK_KINDS, 2)))
def test_opening_a_directory_as_another_kind_is_refused(tmp_path: Path, written: str, opened: str) -> None:
    tokens = make_tokens(4, 2 * PAGE_SIZE)
    s = open_kind(written, tmp_path)
    s.put_batch(tokens, prefix_kv(tokens))
    s.close()
    with pytest.raises(
        IncompatibleStoreError, match=f"holds a '{written}' store, but it was opened as '{opened}'"
    ):
        open_kind(opened, tmp_path)
    s = open_kind(written, tmp_path)
    assert_bit_exact(s.get_batch(tokens, 2), prefix_kv(tokens))
    s.close()


def test_an_unencodable_namespace_is_refused_at_open(tmp_path: Path, kind: str) -> None:
    with pytest.raises(ValueError, match="namespace '\\\\ud800' is not encodable as UTF-8"):
        open_kind(kind, tmp_path / kind, namespace="\ud800")
    assert not (tmp_path / kind).exists() or kind == "memory"


@pytest.mark.parametrize(
    ("make_kv", "message"),
    [
        (lambda kv: kv.to("meta"), "on the meta device"),
        (lambda kv: kv.to_sparse(), "with layout torch.sparse_coo"),
    ],
)
def test_tensors_without_values_are_refused(
    make_store: MakeStore, kind: str, make_kv: Callable[[torch.Tensor], torch.Tensor], message: str
) -> None:
    s = make_store(kind)
    tokens = make_tokens(5, 2 * PAGE_SIZE)
    for put in (s.put_batch, s.put_async):
        with pytest.raises(ValueError, match=message):
            put(tokens, make_kv(prefix_kv(tokens)))
    assert s.probe(tokens) == 0
    assert s.stats().write_errors == 0
