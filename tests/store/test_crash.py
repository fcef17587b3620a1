"""Crash safety: a child process writing pages is SIGKILLed at random moments, then the store is reopened.

The short version of ``kvtune bench crash`` (:mod:`experiments.crash`): after every kill, every prompt whose
``put_batch`` returned before the kill (``flush()`` with the WAL off) is whole, every page ``get_batch``
returns is bit-exact, and ``stats().pages_stored`` equals the pages present; kills land while writing,
while applying a live knob change, and while reclaiming under a small budget.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from experiments.crash import MODES, CrashConfig, CrashReport, forkserver_context, run_crash_rounds
from tests.store.conftest import DISK_KINDS, NOT_CRASH_TESTED, skip_for

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


def test_sigkill_without_wal_keeps_flushed_pages(forkserver: Any, tmp_path: Path) -> None:
    """With ``disable_wal`` only pages written before a ``flush()`` must survive; none may be wrong."""
    config = CrashConfig(
        kind="lsm", path=tmp_path, rounds=ROUNDS_WITHOUT_WAL, disable_wal=True, seed=7, rounds_per_store=2
    )
    _assert_clean(run_crash_rounds(config, forkserver), ROUNDS_WITHOUT_WAL)


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
