"""The short stress run of ``make test`` (issue 13): every kind under 8 threads, a budget and live knob
changes, with zero errors and zero wrong tensors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from experiments.stress import PAGE_SIZE, StressConfig, deterministic_kv, run_stress
from store import STORE_KINDS

SECONDS_PER_KIND = 12.0


def test_deterministic_kv_depends_only_on_the_prefix() -> None:
    a = torch.arange(3 * PAGE_SIZE)
    b = torch.cat([a[: 2 * PAGE_SIZE], a[:PAGE_SIZE] + 1000])
    kv_a, kv_b = deterministic_kv(a), deterministic_kv(b)
    assert kv_a.shape[2] == 3 * PAGE_SIZE
    assert torch.equal(
        kv_a[:, :, : 2 * PAGE_SIZE].view(torch.int16), kv_b[:, :, : 2 * PAGE_SIZE].view(torch.int16)
    )
    assert not torch.equal(
        kv_a[:, :, 2 * PAGE_SIZE :].view(torch.int16), kv_b[:, :, 2 * PAGE_SIZE :].view(torch.int16)
    )


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_short_stress_has_no_errors_and_no_wrong_tensors(tmp_path: Path, kind: str) -> None:
    budget = 4 << 20
    report = run_stress(
        StressConfig(
            kind=kind,
            path=tmp_path / kind,
            seconds=SECONDS_PER_KIND,
            budget_bytes=budget,
            knob_interval_s=1.0,
            sample_interval_s=4.0,
        )
    )
    assert report.error_messages == []
    assert report.errors == 0 and report.wrong_tensors == 0
    assert report.knob_changes >= 5
    assert sum(report.ops.values()) > 0 and all(count > 0 for count in report.ops.values())
    assert report.evicted_pages > 0  # the budget was reached: eviction ran under load
    assert len(report.samples) == 3
    # the windows' evictions add up to at most the run's (which also counts what the end of the run did)
    assert 0 < sum(sample.evicted_pages for sample in report.samples) <= report.evicted_pages
    assert all(sample.stall_s >= 0 and sample.slowest_put_s > 0 for sample in report.samples)
