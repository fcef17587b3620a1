"""Crash safety: a child process writing pages is SIGKILLed at random moments, then the store is reopened.

The short version of ``kvtune bench crash`` (:mod:`experiments.crash`): after every kill, every prompt whose
``put_batch`` returned before the kill (``flush()`` with the WAL off) is whole, every page ``get_batch``
returns is bit-exact, and ``stats().pages_stored`` equals the pages present; kills land while writing,
while applying a live knob change, and while reclaiming under a small budget.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from experiments.crash import MODES, CrashConfig, CrashReport, forkserver_context, run_crash_rounds
from experiments.stress import LAYOUT
from experiments.stress import PAGE_SIZE as CRASH_PAGE_SIZE
from store import StoreConfig, open_store
from tests.store.conftest import (
    DISK_KINDS,
    NOT_CRASH_TESTED,
    PAGE_SIZE,
    assert_bit_exact,
    make_tokens,
    prefix_kv,
    skip_for,
)
from tests.store.conftest import LAYOUT as SMALL_LAYOUT

ROUNDS = 9
ROUNDS_WITHOUT_WAL = 6
ROUNDS_PER_STORE = 3


@pytest.fixture(scope="module")
def forkserver() -> Any:
    return forkserver_context()


def _assert_clean(report: CrashReport, rounds: int) -> None:
    assert report.rounds == rounds
    assert report.rounds_by_mode == dict.fromkeys(MODES, rounds // len(MODES))
    assert (report.wrong_tensors, report.lost_durable_pages, report.page_count_mismatches) == (0, 0, 0)
    assert report.ok
    assert report.prompts_acknowledged >= rounds, "the writer should get through a few prompts in most rounds"
    assert report.pages_read_back > 0


@pytest.mark.parametrize("kind", DISK_KINDS)
def test_sigkill_while_writing_applying_and_reclaiming(forkserver: Any, tmp_path: Path, kind: str) -> None:
    skip_for(kind, NOT_CRASH_TESTED)
    config = CrashConfig(
        kind=kind,
        path=tmp_path,
        rounds=ROUNDS,
        seed=DISK_KINDS.index(kind),
        rounds_per_store=ROUNDS_PER_STORE,
    )
    _assert_clean(run_crash_rounds(config, forkserver), ROUNDS)


@pytest.mark.parametrize(
    "wal_max_page_bytes", [0, LAYOUT.page_bytes(CRASH_PAGE_SIZE)], ids=["pages-unlogged", "pages-logged"]
)
def test_sigkill_without_wal_keeps_flushed_pages(
    forkserver: Any, tmp_path: Path, wal_max_page_bytes: int
) -> None:
    """With ``disable_wal`` only pages written before a ``flush()`` must survive (a memtable flush, or a
    WAL sync when the pages are small enough to be logged); none may be wrong."""
    config = CrashConfig(
        kind="lsm",
        path=tmp_path,
        rounds=ROUNDS_WITHOUT_WAL,
        disable_wal=True,
        wal_max_page_bytes=wal_max_page_bytes,
        seed=7,
        rounds_per_store=2,
    )
    _assert_clean(run_crash_rounds(config, forkserver), ROUNDS_WITHOUT_WAL)


def _put_flush_put_and_die(path: str, config: StoreConfig) -> None:
    """The child: put prompt 1, ``flush()``, put prompt 2, then SIGKILL itself."""
    store = open_store("lsm", path, SMALL_LAYOUT, PAGE_SIZE, None, config)
    for seed in (1, 2):
        tokens = make_tokens(seed, 4 * PAGE_SIZE)
        store.put_batch(tokens, prefix_kv(tokens))
        if seed == 1:
            store.flush()
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize(
    ("wal_max_page_bytes", "unflushed_pages"),
    [(0, 0), (SMALL_LAYOUT.page_bytes(PAGE_SIZE), 4)],
    ids=["pages-unlogged", "pages-logged"],
)
def test_what_a_crash_after_flush_keeps(
    forkserver: Any, tmp_path: Path, wal_max_page_bytes: int, unflushed_pages: int
) -> None:
    """Known answer: a prompt put before ``flush()`` survives a SIGKILL in both durability modes; one put
    after it survives a process crash only through the WAL (the log reached the OS, unsynced), while
    unlogged pages die with the memtable."""
    config = StoreConfig(disable_wal=True, wal_max_page_bytes=wal_max_page_bytes)
    child = forkserver.Process(target=_put_flush_put_and_die, args=(str(tmp_path), config))
    child.start()
    child.join()
    assert child.exitcode == -signal.SIGKILL
    with open_store("lsm", tmp_path, SMALL_LAYOUT, PAGE_SIZE, None, config) as store:
        flushed, unflushed = make_tokens(1, 4 * PAGE_SIZE), make_tokens(2, 4 * PAGE_SIZE)
        assert store.probe(flushed) == 4
        assert_bit_exact(store.get_batch(flushed, 4), prefix_kv(flushed))
        assert store.probe(unflushed) == unflushed_pages
        assert store.stats().pages_stored == 4 + unflushed_pages


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"rounds": 0}, "rounds and rounds_per_store must be >= 1"),
        ({"kill_after_s": (0.5, 0.1)}, "0 < low <= high"),
        ({"kind": "file", "disable_wal": True}, "only lsm has a write-ahead log"),
    ],
)
def test_crash_config_refuses_bad_values(fields: dict[str, Any], message: str) -> None:
    values: dict[str, Any] = {"kind": "lsm", "path": Path("unused"), "rounds": 1, **fields}
    with pytest.raises(ValueError, match=message):
        CrashConfig(**values)
