"""`kvtune bench store`: ratio arithmetic on known numbers, and a tiny end-to-end run of every kind."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from experiments.bench_store import (
    FOOTPRINT_COLUMNS,
    KINDS,
    MEASUREMENT_COLUMNS,
    RATIO_COLUMNS,
    RAW,
    BenchConfig,
    BenchResult,
    Measurement,
    level_ratios,
    median_pair_ratio,
    pair_ratios,
    run_bench,
)
from experiments.bench_store.targets import check_targets

TinyRun = tuple[BenchResult, list[tuple[int, int]]]


def test_median_pair_ratio_is_the_median_of_per_round_ratios_not_a_ratio_of_medians() -> None:
    lsm = [1.0, 10.0, 100.0]
    file = [1.0, 1.0, 200.0]
    # per-round ratios 1, 10, 0.5 -> median 1; the ratio of medians would be 10 / 1 = 10
    assert median_pair_ratio(lsm, file) == pytest.approx(1.0)
    assert median_pair_ratio([2.0, 4.0], [1.0, 1.0]) == pytest.approx(
        3.0
    )  # even count: mean of the middle two
    assert median_pair_ratio([3.0], [2.0]) == pytest.approx(1.5)


def test_median_pair_ratio_skips_empty_rounds_and_rejects_unpaired_input() -> None:
    assert median_pair_ratio([4.0, 5.0, 9.0], [2.0, 0.0, 3.0]) == pytest.approx(2.5)  # round 2 has no ratio
    assert math.isnan(median_pair_ratio([1.0], [0.0]))
    with pytest.raises(ValueError, match="one value per round"):
        median_pair_ratio([1.0, 2.0], [1.0])


def _row(kind: str, round_index: int, rate: float, level: int = 1000, op: str = "put") -> Measurement:
    return Measurement(
        scenario="small",
        level=level,
        round=round_index,
        kind=kind,
        op=op,
        cache="",
        pages_stored=0,
        calls=1,
        pages=1,
        bytes=1,
        seconds=1.0,
        sync_s=0.0,
        evict_s=0.0,
        rate=rate,
        rate_unit="MB/s",
        mb_per_s=rate,
        pages_per_s=rate,
        p50_ms=1.0,
        p99_ms=1.0,
        block_cache_hit_rate=math.nan,
        elapsed_s=0.0,
    )


def test_pair_ratios_pair_by_round_whatever_the_row_order() -> None:
    rows = [
        _row("file", 2, 200.0),
        _row("lsm", 0, 1.0),
        _row("lsm", 2, 100.0),
        _row("file", 0, 1.0),
        _row("lsm", 1, 10.0),
        _row("file", 1, 1.0),
        _row("lsm", 3, 7.0),  # round 3 has no file: unpaired
        _row("applog", 0, 5.0),
    ]
    (result,) = pair_ratios(rows, "lsm", "file")
    assert result.median_ratio == pytest.approx(1.0)
    assert (result.min_ratio, result.max_ratio, result.rounds) == (pytest.approx(0.5), 10.0, 3)
    assert (result.numerator, result.denominator, result.level, result.op) == (
        "lsm",
        "file",
        1000,
        "put",
    )


def test_level_ratios_pair_the_same_kind_across_levels_by_round() -> None:
    rows = [_row("lsm", r, rate, level=100) for r, rate in enumerate([10.0, 20.0, 40.0])]
    rows += [_row("lsm", r, rate, level=1000) for r, rate in enumerate([8.0, 30.0, 10.0])]
    (result,) = level_ratios(rows, "lsm", "small", 100, 1000)
    assert result.median_ratio == pytest.approx(0.8)  # per round 0.8, 1.5, 0.25
    assert result.denominator == "lsm@100"


def test_config_rejects_bad_sizes_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="unknown store kind"):
        BenchConfig(kinds=("lsm", "btree"))
    with pytest.raises(ValueError, match="increasing"):
        BenchConfig(small_levels=(1_000_000, 100_000))
    with pytest.raises(ValueError, match="rounds must be a positive int"):
        BenchConfig(rounds=0)
    with pytest.raises(ValueError, match="large_kv_heads must divide"):
        BenchConfig(large_kv_heads=3)
    with pytest.raises(ValueError, match="reopen_caches"):
        BenchConfig(reopen_caches=("hot",))
    with pytest.raises(ValueError, match="small_page_bytes must be a positive multiple of 256"):
        BenchConfig(small_page_bytes=1000)


def test_small_page_bytes_sets_the_small_scenario_page_size() -> None:
    scenario = BenchConfig(small_levels=(64, 10_000_000), small_page_bytes=1024).small_scenario()
    assert scenario.page_bytes == 1024
    assert scenario.levels == (64, 10_000_000)
    assert BenchConfig().small_scenario().page_bytes == 4096


def test_parts_choose_the_scenarios_and_reject_unknown_names() -> None:
    assert [s.name for s in BenchConfig(parts=("large",)).scenarios()] == ["large"]
    assert [s.name for s in BenchConfig(parts=("small", "large")).scenarios()] == ["large", "small"]
    for parts in ((), ("huge",), ("large", "large")):
        with pytest.raises(ValueError, match="parts must be some of large, small, each once"):
            BenchConfig(parts=parts)


def test_targets_cover_only_the_parts_run() -> None:
    config = BenchConfig(parts=("large",))
    checks = check_targets([], [], [], config.scenarios(), config)
    assert [c.name for c in checks] == [
        "large pages: lsm put >= 85% of raw write",
        "large pages: lsm cold get >= 70% of raw cold read",
        "large pages: lsm put >= 0.9x applog's",
        "large pages: lsm get (cold) >= 0.9x applog's",
    ]
    assert all(c.passed is None for c in checks)  # nothing measured: not evaluated, never a pass
    small_only = BenchConfig(parts=("small",), small_levels=(64, 128))
    names = [c.name for c in check_targets([], [], [], small_only.scenarios(), small_only)]
    assert names and not any(name.startswith("large") for name in names)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    out = tmp_path_factory.mktemp("bench")
    config = BenchConfig(
        out=out,
        rounds=2,
        large_pages=2,
        large_prompt_pages=2,
        small_levels=(64, 128),
        small_prompt_pages=16,
        small_prompts_per_round=2,
        small_probes_per_round=4,
        fill_chunk_pages=64,
        seed=3,
        reopen_caches=("cold", "warm"),
    )
    steps: list[tuple[int, int]] = []
    result = run_bench(config, progress=lambda _description, done, total: steps.append((done, total)))
    return result, steps


@pytest.mark.slow
def test_tiny_run_writes_csvs_with_the_documented_columns(tiny_run: TinyRun) -> None:
    result, _ = tiny_run
    for name, columns in (
        ("measurements", MEASUREMENT_COLUMNS),
        ("footprint", FOOTPRINT_COLUMNS),
        ("ratios", RATIO_COLUMNS),
    ):
        frame = pd.read_csv(result.files[name])
        assert tuple(frame.columns) == columns, name
        assert len(frame) > 0, name


@pytest.mark.slow
def test_tiny_run_measures_every_kind_and_op_in_every_round(tiny_run: TinyRun) -> None:
    result, _ = tiny_run
    kinds = list(KINDS)
    frame = pd.read_csv(result.files["measurements"], keep_default_na=False)
    for scenario, levels in (("large", [0]), ("small", [64, 128])):
        part = frame[frame["scenario"] == scenario]
        assert sorted(set(part["level"])) == levels
        assert set(part["kind"]) == {*kinds, RAW}, scenario
        for kind in kinds:
            ops = set(zip(part[part["kind"] == kind]["op"], part[part["kind"] == kind]["cache"], strict=True))
            expected = {("put", ""), ("probe", ""), ("get", "warm")}
            if kind != "memory":
                expected |= {("get", "cold"), ("reopen", "cold"), ("reopen", "warm")}
            assert ops == expected, (scenario, kind)
        for (kind, op, cache, level), group in part.groupby(["kind", "op", "cache", "level"]):
            rounds = [1] if op == "reopen" else [0, 1]  # reopens: the last reopen_rounds (1) rounds only
            assert sorted(group["round"]) == rounds, (scenario, kind, op, cache, level)
            assert (group["rate"] > 0).all(), (scenario, kind, op, cache)
    raw = frame[frame["kind"] == RAW]
    assert set(zip(raw["op"], raw["cache"], strict=True)) == {("put", ""), ("get", "warm"), ("get", "cold")}
    puts = frame[(frame["op"] == "put") & (frame["scenario"] == "small")]
    assert (puts["pages"] == 2 * 16).all()  # the same bytes for every kind and the raw reference


@pytest.mark.slow
def test_tiny_run_ratios_are_medians_of_per_round_ratios(tiny_run: TinyRun) -> None:
    result, _ = tiny_run
    frame = pd.read_csv(result.files["measurements"], keep_default_na=False)
    ratios = pd.read_csv(result.files["ratios"], keep_default_na=False)
    kinds = list(KINDS)
    checked = 0
    for other in [k for k in kinds if k != "lsm"] + [RAW]:
        for row in ratios[ratios["denominator"] == other].itertuples():
            part = frame[
                (frame["scenario"] == row.scenario)
                & (frame["level"] == row.level)
                & (frame["op"] == row.op)
                & (frame["cache"] == row.cache)
            ]
            top = part[part["kind"] == "lsm"].set_index("round")["rate"]
            bottom = part[part["kind"] == other].set_index("round")["rate"]
            rounds = sorted(set(top.index) & set(bottom.index))
            expected = median_pair_ratio([top[r] for r in rounds], [bottom[r] for r in rounds])
            assert row.median_ratio == pytest.approx(expected), (row.op, row.cache, other)
            checked += 1
    assert checked >= 8
    assert {"lsm@64"} <= set(ratios["denominator"])  # the 64 -> 128 pages comparison, paired by round


@pytest.mark.slow
def test_tiny_run_reports_targets_footprint_machine_and_a_png(tiny_run: TinyRun) -> None:
    result, steps = tiny_run
    png = result.files["plot"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 20_000
    names = [t.name for t in result.targets]
    assert any("lsm put >= 85% of raw write" in n for n in names)
    assert any("probe >= 3x file" in n for n in names)
    assert any("cold reopen >= 100x applog" in n for n in names)
    assert sum("0.9x applog" in n for n in names) == 6
    assert any("RSS" in n for n in names)
    assert all(t.status in ("PASS", "MISS", "N/A") for t in result.targets)
    for key in ("nproc", "memory", "cpu", "kernel", "date"):
        assert result.machine[key]
    assert any(key.startswith("disk") for key in result.machine)
    foot = pd.read_csv(result.files["footprint"])
    lsm_end = foot[(foot["kind"] == "lsm") & (foot["stage"] == "end") & (foot["scenario"] == "small")]
    assert (lsm_end["pages_stored"] >= lsm_end["level"]).all()
    assert (lsm_end["files"] > 0).all() and (lsm_end["rss_bytes"] > 0).all()
    assert (lsm_end["key_bytes_per_page"] > 8 + 8).all()  # at least the namespace and one digest
    assert "block-cache hit rate" in Path(result.files["report"]).read_text()
    assert "## Targets" in Path(result.files["report"]).read_text()
    sglang_notes = [n for n in result.notes if n.startswith("sglang-file runs SGLang ")]
    assert len(sglang_notes) == 1 and "file backend (sglang-file)" in sglang_notes[0]
    assert sglang_notes[0] in Path(result.files["report"]).read_text()
    dones = [done for done, _ in steps]
    assert dones == sorted(dones) and steps[-1][0] == steps[-1][1]  # the progress bar ends full


def test_cli_lists_the_store_benchmark_options() -> None:
    from experiments.cli import app

    output = CliRunner().invoke(app, ["bench", "store", "--help"], terminal_width=200).output
    for option in ("--out", "--rounds", "--large-pages", "--small-pages", "--kinds", "--parts", "--quick"):
        assert option in output
