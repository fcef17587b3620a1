"""`kvtune bench store`'s fill: deterministic cheap prompts, stamped pages, fill caps and fill rates."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from experiments.bench_store import BenchConfig, run_bench
from experiments.bench_store.config import parse_fill_caps
from experiments.bench_store.records import FillResult, FillStep
from experiments.bench_store.report import fill_rates
from experiments.bench_store.runner import fill_status
from experiments.bench_store.worker import WorkerSpec, _same_bytes, _StoreParticipant, prompt_tokens


def test_prompt_tokens_are_a_known_deterministic_function_of_the_prompt() -> None:
    # splitmix64's finalizer of blake2b-64("0/small/0/0") + t, top 31 bits (computed with Python ints)
    assert prompt_tokens(0, "small", 0, 0, 4).tolist() == [1024599475, 626728198, 304551397, 1567533250]
    assert prompt_tokens(1, "small", 2, 5, 3).tolist() == [1225984227, 1559374678, 1397142211]
    assert prompt_tokens(0, "small", 0, 0, 4).dtype == np.uint32
    first = prompt_tokens(0, "small", 0, 9, 1024)
    assert np.array_equal(first, prompt_tokens(0, "small", 0, 9, 1024))
    assert first.max() < 2**31
    for other in (
        prompt_tokens(0, "small", 0, 10, 1024),
        prompt_tokens(0, "small", 2, 9, 1024),
        prompt_tokens(1, "small", 0, 9, 1024),
        prompt_tokens(0, "large", 0, 9, 1024),
    ):
        assert (first != other).mean() > 0.99
    assert len(set(first.tolist())) > 1020  # no short cycle within a prompt


def _participant(tmp_path: Path, page_bytes: int) -> _StoreParticipant:
    config = BenchConfig(small_levels=(256,), small_page_bytes=page_bytes)
    scenario = config.small_scenario()
    spec = WorkerSpec("lsm", scenario, 256, tmp_path / "store", 0, config.store_config, logging.WARNING)
    return _StoreParticipant(spec)


@pytest.mark.parametrize("page_bytes", [256, 1024, 4096])
def test_every_page_of_a_prompt_starts_with_its_page_number(tmp_path: Path, page_bytes: int) -> None:
    participant = _participant(tmp_path, page_bytes)
    scenario = participant.scenario
    for index in (0, 1, 2, 1000):
        pages = participant.kv(index).split(scenario.page_size, dim=2)
        assert len(pages) == scenario.prompt_pages == 64
        numbers = [
            int(np.frombuffer(page.contiguous().view(torch.uint8).numpy().tobytes()[:8], "<u8")[0])
            for page in pages
        ]
        assert numbers == list(range(index * 64, index * 64 + 64))


def test_a_swapped_page_fails_the_byte_check(tmp_path: Path) -> None:
    participant = _participant(tmp_path, 1024)
    size = participant.scenario.page_size
    # prompts 3 and 5 share a pool tensor: only their stamps tell them apart
    five = participant.kv(5).clone()
    three = participant.kv(3).clone()
    assert not _same_bytes(three, five)
    swapped = three.clone()
    swapped[:, :, 7 * size : 8 * size] = five[:, :, 7 * size : 8 * size]
    assert not _same_bytes(swapped, participant.kv(3))
    within = three.clone()
    within[:, :, :size], within[:, :, size : 2 * size] = three[:, :, size : 2 * size], three[:, :, :size]
    assert not _same_bytes(within, participant.kv(3))
    assert _same_bytes(three, participant.kv(3))  # stamping again gives the same bytes


def test_fill_caps_parse_for_every_kind_or_named_kinds() -> None:
    kinds = ("lsm", "file", "applog")
    assert parse_fill_caps(None, kinds) == {}
    assert parse_fill_caps("600", kinds) == {"lsm": 600.0, "file": 600.0, "applog": 600.0}
    assert parse_fill_caps("file=900, applog=3600", kinds) == {"file": 900.0, "applog": 3600.0}
    assert parse_fill_caps("60,file=5", kinds) == {"lsm": 60.0, "file": 5.0, "applog": 60.0}
    with pytest.raises(ValueError, match=r"'file=soon' is not SECONDS or KIND=SECONDS \(e.g. 600"):
        parse_fill_caps("file=soon", kinds)


def test_config_rejects_caps_of_kinds_not_run_and_caps_that_are_not_positive() -> None:
    with pytest.raises(ValueError, match=r"fill caps name kind\(s\) file that this run does not compare"):
        BenchConfig(kinds=("lsm", "applog"), fill_caps={"file": 60.0})
    with pytest.raises(ValueError, match=re.escape("fill caps must be positive seconds, got {'lsm': 0.0}")):
        BenchConfig(kinds=("lsm",), fill_caps={"lsm": 0.0})


def test_fill_status_says_how_a_fill_call_ended() -> None:
    assert fill_status(FillResult(1.0, 128), asked=128, level=1000) == "filling"
    assert fill_status(FillResult(1.0, 1024), asked=1000, level=1000) == "filled"
    assert fill_status(FillResult(1.0, 64), asked=128, level=1000) == "capped"
    assert fill_status(FillResult(1.0, 64, "OSError: [Errno 28] No space"), asked=128, level=1000) == "error"


def test_fill_rates_are_pages_per_second_in_each_tenth_of_the_level() -> None:
    def step(stored: int, pages: int, seconds: float) -> FillStep:
        return FillStep("small", 1000, "file", stored, pages, seconds, math.nan, "filling")

    steps = [step(100, 100, 1.0), step(200, 100, 4.0), step(300, 100, 1.0), step(950, 650, 13.0)]
    rates = fill_rates(steps, 1000)
    assert rates[:4] == [100.0, 25.0, 100.0, 50.0]
    assert all(math.isnan(rate) for rate in rates[4:])


@pytest.mark.slow
def test_a_capped_kind_stops_filling_and_leaves_the_run(tmp_path: Path) -> None:
    config = BenchConfig(
        out=tmp_path / "out",
        kinds=("lsm", "file"),
        parts=("small",),
        rounds=1,
        small_levels=(512,),
        small_prompt_pages=16,
        small_prompts_per_round=2,
        small_probes_per_round=4,
        fill_chunk_pages=128,
        fill_caps={"file": 1e-9},
    )
    result = run_bench(config)
    reason = result.skipped["file@small/512"]
    assert reason.startswith("file@small/512: fill capped after 0 s at ")
    assert reason.endswith(" of 512 pages; its later phases are skipped")
    steps = {kind: [s for s in result.fill_steps if s.kind == kind] for kind in ("lsm", "file")}
    assert [s.status for s in steps["lsm"]] == ["filling", "filling", "filling", "filled"]
    assert [s.pages_stored for s in steps["lsm"]] == [128, 256, 384, 512]
    assert [s.status for s in steps["file"]] == ["capped"]
    assert steps["file"][0].pages_stored <= 16  # at most the one prompt begun before the cap was seen
    assert {m.kind for m in result.measurements} == {"lsm", "raw"}
    stages = {(f.kind, f.stage) for f in result.footprints}
    assert ("file", "fill ended") in stages and ("file", "end") not in stages
    assert ("lsm", "filled") in stages and ("lsm", "end") in stages
    fill = pd.read_csv(result.files["fill"])
    assert list(fill["status"]) == [s.status for s in result.fill_steps]
    report = result.files["report"].read_text()
    assert "| small | 512 | file | capped |" in report
