"""Crash safety: a child process writing pages is SIGKILLed at random moments, then the store is reopened.

After every kill: every prompt whose ``put_batch`` returned before the kill (``flush()`` for a store
without the write-ahead log) is fully there, and every page ``get_batch`` returns is bit-exact.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import random
import signal
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest
import torch

from store import StoreConfig
from tests.store import crash_child
from tests.store.conftest import (
    DISK_KINDS,
    NOT_CRASH_TESTED,
    PAGE_SIZE,
    assert_bit_exact,
    open_kind,
    prefix_kv,
    skip_for,
)
from tests.store.crash_child import crash_prompt

ROUNDS = 20
ROUNDS_WITHOUT_WAL = 8
ROUNDS_PER_STORE = 5
KILL_AFTER_S = (0.05, 0.25)
SAMPLE_EARLIER = 20
SAMPLE_FINAL = 200


@pytest.fixture(scope="module")
def forkserver() -> Any:
    context = multiprocessing.get_context("forkserver")
    # "__main__" (pytest's launcher) too, or every child re-imports it before it starts
    context.set_forkserver_preload(["__main__", "torch", "store", "store.lsm", "tests.store.crash_child"])
    return context


def _drain(reader: Connection) -> list[bytes]:
    messages = []
    while reader.poll(0):
        try:
            messages.append(reader.recv_bytes())
        except EOFError:
            break
    return messages


def _run_and_kill(
    context: Any, *, kind: str, path: Path, config: dict[str, Any], first: int, flush_every: int, delay: float
) -> list[bytes]:
    """Start the writer, let it write for ``delay`` seconds, SIGKILL it; return what it reported."""
    reader, writer = context.Pipe(duplex=False)
    process = context.Process(
        target=crash_child.write_until_killed,
        kwargs={
            "kind": kind,
            "path": str(path),
            "config": config,
            "first": first,
            "conn": writer,
            "flush_every": flush_every,
        },
    )
    process.start()
    writer.close()
    try:
        assert reader.poll(60), "the writer did not open the store within 60 s"
        try:
            first_message = reader.recv_bytes()
        except EOFError:
            first_message = b"<died>"
        assert first_message == b"ready", f"the writer failed to start (exit code {process.exitcode})"
        time.sleep(delay)  # the crash timer: the only sleep of this suite
        assert process.is_alive(), f"the writer died on its own with exit code {process.exitcode}"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        if process.is_alive():
            os.kill(process.pid, signal.SIGKILL)
        process.join(30)
    assert process.exitcode == -signal.SIGKILL
    messages = _drain(reader)
    reader.close()
    return messages


@functools.cache
def _expected(index: int) -> tuple[list[int], torch.Tensor]:
    tokens = crash_prompt(index)
    return tokens.tolist(), prefix_kv(tokens)


def _check_prompt(s: Any, index: int, required: bool, get: bool = True) -> int:
    """Probe prompt ``index``; what get_batch returns must be bit-exact; a required prompt must be whole."""
    tokens, kv = _expected(index)
    n_pages = len(tokens) // PAGE_SIZE
    k = s.probe(tokens)
    if required:
        assert k == n_pages, f"prompt {index} was reported durable but only {k}/{n_pages} pages survived"
    if get:
        assert_bit_exact(s.get_batch(tokens, k), kv[:, :, : k * PAGE_SIZE])
    return k


def _crash_rounds(
    forkserver: Any,
    *,
    path: Path,
    kind: str,
    config: dict[str, Any],
    rounds: int,
    flush_every: int,
    seed: int,
) -> int:
    """``rounds`` write-and-kill rounds on one store; returns the prompts reported written."""
    rng = random.Random(seed)
    durable: list[int] = []
    attempted: list[int] = []
    total_reported = 0
    for round_index in range(rounds):
        first = 100_000 * (round_index + 1)
        delay = rng.uniform(*KILL_AFTER_S)
        messages = _run_and_kill(
            forkserver, kind=kind, path=path, config=config, first=first, flush_every=flush_every, delay=delay
        )
        put_done = [int(m[1:]) for m in messages if m.startswith(b"P")]
        flushed = [int(m[1:]) for m in messages if m.startswith(b"F")]
        assert put_done == list(range(first, first + len(put_done)))
        total_reported += len(put_done)
        last_durable = (max(flushed) if flushed else first - 1) if flush_every else first + len(put_done) - 1
        new_durable = list(range(first, last_durable + 1))
        # the prompt the kill interrupted, and maybe one more if the last message was lost with the process
        maybe = list(range(last_durable + 1, first + len(put_done) + 2))

        with open_kind(kind, path, config=StoreConfig(**config)) as s:
            for index in new_durable:
                _check_prompt(s, index, required=True)
            for index in maybe:
                _check_prompt(s, index, required=False)
            for index in rng.sample(durable, min(SAMPLE_EARLIER, len(durable))):
                _check_prompt(s, index, required=True)
        durable += new_durable
        attempted += new_durable + maybe

    # After the last crash: everything ever reported durable is still there (probed; a sample is also
    # read back), nothing returned is wrong, and the store's page count equals the distinct pages present.
    pages: set[tuple[int, ...]] = set()
    durable_set = set(durable)
    read_back = set(rng.sample(durable, min(SAMPLE_FINAL, len(durable))))
    with open_kind(kind, path, config=StoreConfig(**config)) as s:
        for index in sorted(set(attempted)):
            required = index in durable_set
            k = _check_prompt(s, index, required, get=not required or index in read_back)
            tokens = _expected(index)[0]
            pages.update(tuple(tokens[: (j + 1) * PAGE_SIZE]) for j in range(k))
        assert s.stats().pages_stored == len(pages)
    _expected.cache_clear()
    return total_reported


def _crash_stores(
    forkserver: Any,
    *,
    path: Path,
    kind: str,
    config: dict[str, Any],
    rounds: int,
    flush_every: int,
    seed: int,
) -> None:
    """``rounds`` rounds in all, ``ROUNDS_PER_STORE`` consecutive crashes on each store directory (a fresh
    directory now and then keeps the reopen scans of the baselines short)."""
    reported = 0
    for store_index in range(0, rounds, ROUNDS_PER_STORE):
        reported += _crash_rounds(
            forkserver,
            path=path / f"{kind}-{store_index}",
            kind=kind,
            config=config,
            rounds=min(ROUNDS_PER_STORE, rounds - store_index),
            flush_every=flush_every,
            seed=seed * 1000 + store_index,
        )
    assert reported >= rounds, "the writer should get through a few prompts in most rounds"


@pytest.mark.parametrize("kind", DISK_KINDS)
def test_sigkill_while_writing(forkserver: Any, tmp_path: Path, kind: str) -> None:
    skip_for(kind, NOT_CRASH_TESTED)
    _crash_stores(
        forkserver,
        path=tmp_path,
        kind=kind,
        config={},
        rounds=ROUNDS,
        flush_every=0,
        seed=DISK_KINDS.index(kind),
    )


def test_sigkill_without_wal_keeps_flushed_pages(forkserver: Any, tmp_path: Path) -> None:
    """With ``disable_wal`` only pages written before a ``flush()`` must survive; none may be wrong."""
    _crash_stores(
        forkserver,
        path=tmp_path,
        kind="lsm",
        config={"disable_wal": True},
        rounds=ROUNDS_WITHOUT_WAL,
        flush_every=8,
        seed=7,
    )
