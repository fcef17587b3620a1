"""The paper's experiment end to end at a tiny scale: every kind and ablation gives a row, table and plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.tracking import default_tracking_uri
from experiments.paper import ABLATIONS, PaperSpec, run_paper


def test_a_tiny_paper_run_writes_every_cell(tmp_path: Path) -> None:
    spec = PaperSpec(
        phase_requests=2,
        chunk_tokens=16,
        chunks_per_prompt=4,
        pool_chunks=64,
        profile="tiny",
        scale=1,
        rate_factors=(2.0,),
        budget_fractions=(0.25,),
        host_ram_bytes=8 * 2**20,
        trace=None,
        best_static={"disable_wal": True},
        ablations={**ABLATIONS, "no-wal": {"disable_wal": True}},
    )
    rows = run_paper(spec, tmp_path, default_tracking_uri(tmp_path), jobs=2)
    kinds = [row["kind"] for row in rows]
    assert kinds == [
        "memory",
        "file",
        "sglang-file",
        "applog",
        "lsm-kvtune-defaults",
        "lsm-rocksdb-defaults",
        "lsm-best-static",
        "lsm-full",
        "no-kv-separation",
        "no-writer-batching",
        "flat-keys",
        "no-wal",
        "policy-on-best-static",
    ]
    results = json.loads((tmp_path / "results.json").read_text())
    assert [r["cell"] for r in results] == [r["cell"] for r in rows]
    assert all(len(r["phases"]) == 7 for r in results)  # the paper's seven phases
    assert all(0 <= r["hit_token_ratio"] <= 1 for r in results)
    codes = {r["kind"]: r["store_code"] for r in results}
    assert codes["file"] == "kvtune"
    assert codes["sglang-file"].startswith("SGLang ") and codes["sglang-file"].endswith("(sglang-file)")
    table = (tmp_path / "table.md").read_text().splitlines()
    assert len(table) == 2 + len(rows) * 8
    assert (tmp_path / "staged__2x-disk__0.25-fit__phases.png").stat().st_size > 0
    assert (tmp_path / "staged__2x-disk__0.25-fit__ttft_cdf.png").stat().st_size > 0


def test_a_spec_names_what_is_wrong_with_its_kinds_and_ablations() -> None:
    with pytest.raises(ValueError, match="must be some of: memory, file, sglang-file"):
        PaperSpec(kinds=("file", "lsm"))
    with pytest.raises(
        ValueError, match="parts \\['staged', 'plots'\\] must be some of: staged, trace, ablations"
    ):
        PaperSpec(parts=("staged", "plots"))
    with pytest.raises(ValueError, match=r"ablation 'flat': unknown knob.*valid knobs: "):
        PaperSpec(ablations={"flat": {"no_such_knob": 1}})


def test_a_run_covers_only_the_parts_it_names(tmp_path: Path) -> None:
    spec = PaperSpec(
        phase_requests=1,
        chunk_tokens=16,
        chunks_per_prompt=2,
        pool_chunks=16,
        profile="tiny",
        scale=1,
        host_ram_bytes=8 * 2**20,
        parts=("ablations",),
        ablations={},
    )
    rows = run_paper(spec, tmp_path, default_tracking_uri(tmp_path))
    assert [row["cell"] for row in rows] == ["ablation/lsm-full/2x-disk/1-fit"]
