"""A store on a small tmpfs filled past its capacity (issue 13): typed errors that name the path and the
free space, counted; nothing stored harmed; reads, probes and evictions keep working; writes resume once
space is freed; a reopen (smaller budget, same or new process) keeps every stored page exact."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from store import KVLayout, KVStore, StoreConfig, StoreFullError, open_store
from store.applog import AppendLogStore
from tests.store.conftest import NOT_KVTUNE_IO, assert_bit_exact, make_tokens, prefix_kv, skip_for

TMPFS_BYTES = 24 << 20
FILLER_BYTES = 6 << 20
LAYOUT = KVLayout(layers=4, kv_heads=4, head_dim=64, dtype=torch.float16)
PAGE_SIZE = 16
PROMPT_TOKENS = 4 * PAGE_SIZE
APPLOG_SEGMENT_BYTES = 1 << 20
"""Small segments: an append log gives space back only by deleting whole segments."""


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def _open(
    kind: str, path: Path, budget_bytes: int | None = None, config: StoreConfig | None = None
) -> KVStore:
    if kind == "applog":
        return AppendLogStore.with_segment_bytes(APPLOG_SEGMENT_BYTES)(
            path, LAYOUT, PAGE_SIZE, budget_bytes, config or StoreConfig(), "ns"
        )
    return open_store(kind, path, LAYOUT, PAGE_SIZE, budget_bytes, config, namespace="ns")


def _kv(tokens: torch.Tensor) -> torch.Tensor:
    return prefix_kv(tokens, LAYOUT, PAGE_SIZE)


def _fill(s: KVStore) -> tuple[list[torch.Tensor], StoreFullError]:
    """Put prompts until the file system is full; the prompts stored and the error that stopped it."""
    stored: list[torch.Tensor] = []
    for seed in range(100_000):
        tokens = make_tokens(seed, PROMPT_TOKENS)
        try:
            assert s.put_batch(tokens, _kv(tokens)) == 4
        except StoreFullError as error:
            return stored, error
        stored.append(tokens)
    raise AssertionError("the file system never filled up")


def _assert_exact_or_absent(s: KVStore, prompts: list[torch.Tensor]) -> int:
    """Every stored page of ``prompts`` is exact; returns the pages found."""
    found = 0
    for tokens in prompts:
        hits = s.probe(tokens)
        if hits:
            assert_bit_exact(s.get_batch(tokens, hits), _kv(tokens)[:, :, : hits * PAGE_SIZE])
        found += hits
    return found


def test_disk_full_is_typed_counted_harmless_and_recoverable(tmpfs: Path, disk_kind: str) -> None:
    skip_for(disk_kind, NOT_KVTUNE_IO)
    filler = tmpfs / "filler"
    filler.write_bytes(bytes(FILLER_BYTES))
    path = tmpfs / disk_kind
    s = _open(disk_kind, path)
    stored, error = _fill(s)
    assert len(stored) >= 10
    assert str(path) in str(error) and "bytes free" in str(error) and "evict" in str(error)
    stats = s.stats()
    assert stats.write_errors == 1
    assert stats.pages_stored == 4 * len(stored)
    assert _assert_exact_or_absent(s, stored) == 4 * len(stored)

    # The async writer drops and counts what it cannot write, and keeps running.
    extra = make_tokens(900_001, PROMPT_TOKENS)
    assert s.put_async(extra, _kv(extra)) == 4
    s.flush()
    assert s.probe(extra) == 0
    assert s.stats().dropped_pages == 4 and s.stats().write_errors == 2

    assert all(s.evict(tokens) == 4 for tokens in stored[:5])
    assert s.probe(stored[0]) == 0 and s.probe(stored[5]) == 4
    filler.unlink()
    assert s.put_batch(extra, _kv(extra)) == 4
    assert s.put_async(stored[0], _kv(stored[0])) == 4
    s.close()

    # The prompt whose put failed may come back whole-page-prefix on reopen (applog: a chunk written
    # before the failing one); it is counted where it is found, and must be exact like the rest.
    failed = make_tokens(len(stored), PROMPT_TOKENS)
    survivors = [*stored[5:], extra, stored[0]]
    reopened = _open(disk_kind, path)
    assert _assert_exact_or_absent(reopened, survivors) == 4 * len(survivors)
    assert reopened.stats().pages_stored == 4 * len(survivors) + _assert_exact_or_absent(reopened, [failed])
    reopened.close()
    budget = TMPFS_BYTES // 4
    smaller = _open(disk_kind, path, budget_bytes=budget)
    last = make_tokens(900_002, PROMPT_TOKENS)
    assert smaller.put_batch(last, _kv(last)) == 4  # lsm enforces a budget at a write, the others at open too
    survivors += [last, failed]
    kept = _assert_exact_or_absent(smaller, survivors)
    assert 0 < kept < 4 * len(survivors)
    assert smaller.stats().pages_stored == kept
    smaller.close()

    probe_in_child = (
        "import sys, torch\n"
        "from tests.store.test_disk_full import _open, _assert_exact_or_absent, PROMPT_TOKENS\n"
        "from tests.store.conftest import make_tokens\n"
        f"s = _open({disk_kind!r}, __import__('pathlib').Path({str(path)!r}), {budget})\n"
        f"prompts = [make_tokens(seed, PROMPT_TOKENS) for seed in range({len(stored) + 1})]\n"
        "extra = [make_tokens(seed, PROMPT_TOKENS) for seed in (900_001, 900_002)]\n"
        "print(_assert_exact_or_absent(s, prompts + extra))\n"
        "s.close()\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", probe_in_child], capture_output=True, text=True, check=True, cwd=os.getcwd()
    )
    assert int(child.stdout.split()[-1]) == kept
