"""Regression tests of the store's reliability defects (issue 13): close racing the async writer, failed
writes, tensors the store cannot hold, namespaces that cannot be encoded, and directories of another kind."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from store import KVStore, StoreClosedError, StoreConfig
from tests.store.conftest import PAGE_SIZE, MakeStore, make_tokens, open_kind, prefix_kv

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
