"""``kvtune bench sglang`` on a tiny size: every backend gets every call, and the table adds up."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.bench_sglang import SglangBenchConfig, run_sglang_bench, summarise


def test_tiny_bench_runs_every_backend_interleaved(tmp_path: Path) -> None:
    config = SglangBenchConfig(pages=(40,), page_bytes=256, rounds=2, batch=16, workdir=tmp_path)
    order: list[str] = []
    rows = run_sglang_bench(config, progress=order.append)
    assert order == [
        "kvtune 40 pages, round 1/2",
        "kvtune-v1 40 pages, round 1/2",
        "file 40 pages, round 1/2",
        "file 40 pages, round 2/2",
        "kvtune-v1 40 pages, round 2/2",
        "kvtune 40 pages, round 2/2",
    ]
    assert len(rows) == 3 * 2 * 4
    assert {(r.backend, r.op) for r in rows} == {
        (b, op)
        for b in ("kvtune", "kvtune-v1", "file")
        for op in ("batch_set", "batch_exists", "batch_get", "reopen")
    }
    assert all(r.files == 40 for r in rows if r.backend == "file"), "one file per page"
    assert all(r.files < 40 for r in rows if r.backend.startswith("kvtune"))
    assert all(r.pages_per_s > 0 for r in rows if r.op != "reopen")
    summary = summarise(rows)
    assert [(e["pages"], e["op"]) for e in summary] == [
        (40, "batch_exists"),
        (40, "batch_get"),
        (40, "batch_set"),
        (40, "reopen"),
    ]
    assert all(e["kvtune-v1_pages_per_s"] > 0 for e in summary if e["op"] != "reopen")
    assert list(tmp_path.iterdir()) == [], "each round's stores are removed"


def test_config_refuses_sglang_impossible_batches(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"batch must be in \[1, 128\]"):
        SglangBenchConfig(batch=129, workdir=tmp_path)
    with pytest.raises(ValueError, match="page_bytes must be a positive multiple of 16"):
        SglangBenchConfig(page_bytes=100, workdir=tmp_path)
