"""The issue's targets, each checked against this run's ratios and footprints."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from experiments.bench_store.config import KINDS, RAW, BenchConfig, Scenario, size_text
from experiments.bench_store.ratios import level_ratios, pair_ratios
from experiments.bench_store.records import Footprint, Measurement, Ratio, TargetCheck
from store import StoreConfig


def compute_ratios(measurements: Sequence[Measurement], scenarios: Sequence[Scenario]) -> list[Ratio]:
    """lsm against every other kind (median of per-round ratios), and lsm at the top level vs the bottom."""
    ratios: list[Ratio] = []
    for other in (*(kind for kind in KINDS if kind != "lsm"), RAW):
        ratios.extend(pair_ratios(measurements, "lsm", other))
    for scenario in scenarios:
        if len(scenario.levels) > 1:
            ratios.extend(
                level_ratios(measurements, "lsm", scenario.name, scenario.levels[0], scenario.levels[-1])
            )
    return ratios


def _find_ratio(ratios: Sequence[Ratio], key: tuple[str, int, str, str, str]) -> float:
    """The median ratio of (scenario, level, op, cache, denominator), NaN if it was not measured."""
    for row in ratios:
        if (row.scenario, row.level, row.op, row.cache, row.denominator) == key:
            return row.median_ratio
    return math.nan


def lsm_cache_budget(config: StoreConfig) -> int:
    """Bytes RocksDB may hold in memory by configuration: block cache plus every memtable."""
    return config.block_cache_bytes + config.write_buffer_size * config.max_write_buffer_number


def check_targets(
    measurements: Sequence[Measurement],
    footprints: Sequence[Footprint],
    ratios: Sequence[Ratio],
    scenarios: Sequence[Scenario],
    config: BenchConfig,
) -> list[TargetCheck]:
    """The targets of issues 2 and 9, each with its measured value (medians of per-round ratios).

    Issue 9 raised the large-page put to 85% of raw, set the probe at 3x ``file`` and asks for ``lsm``
    at 90% of ``applog`` on the hot path, with reopen 100x faster.
    """
    checks: list[TargetCheck] = []

    def add(name: str, measured: float, threshold: float, detail: str) -> None:
        passed = None if math.isnan(measured) else measured >= threshold
        checks.append(TargetCheck(name, measured, threshold, passed, detail))

    for scenario in scenarios:
        if scenario.name == "large":
            _large_targets(add, ratios, scenario)
        else:
            _small_targets(add, checks.append, footprints, ratios, scenario, config)
    return checks


_AddTarget = Callable[[str, float, float, str], None]


def _large_targets(add: _AddTarget, ratios: Sequence[Ratio], large: Scenario) -> None:
    add(
        "large pages: lsm put >= 85% of raw write",
        _find_ratio(ratios, ("large", 0, "put", "", RAW)),
        0.85,
        f"lsm/raw durable put, {size_text(large.page_bytes)} pages",
    )
    add(
        "large pages: lsm cold get >= 70% of raw cold read",
        _find_ratio(ratios, ("large", 0, "get", "cold", RAW)),
        0.7,
        "lsm/raw, page cache dropped",
    )
    for op, cache in (("put", ""), ("get", "cold")):
        label = f"{op} ({cache})" if cache else op
        add(
            f"large pages: lsm {label} >= 0.9x applog's",
            _find_ratio(ratios, ("large", 0, op, cache, "applog")),
            0.9,
            "lsm/applog",
        )


def _small_targets(
    add: _AddTarget,
    add_check: Callable[[TargetCheck], None],
    footprints: Sequence[Footprint],
    ratios: Sequence[Ratio],
    small: Scenario,
    config: BenchConfig,
) -> None:
    top, bottom = small.levels[-1], small.levels[0]
    scale_note = "" if top >= 1_000_000 else f" (below the 1,000,000-page target scale: {top:,} pages)"
    for op, cache, threshold in (("probe", "", 3.0), ("put", "", 5.0), ("get", "warm", 1.5)):
        label = f"{op} ({cache})" if cache else op
        add(
            f"{top:,} small pages: lsm {label} >= {threshold:g}x file's",
            _find_ratio(ratios, ("small", top, op, cache, "file")),
            threshold,
            f"lsm/file{scale_note}",
        )
    for scenario, level, op, cache in (
        ("small", top, "probe", ""),
        ("small", top, "put", ""),
        ("small", top, "get", "warm"),
        ("small", top, "get", "cold"),
    ):
        label = f"{op} ({cache})" if cache else op
        add(
            f"{top:,} small pages: lsm {label} >= 0.9x applog's",
            _find_ratio(ratios, (scenario, level, op, cache, "applog")),
            0.9,
            f"lsm/applog{scale_note}",
        )
    add(
        f"{top:,} small pages: lsm cold reopen >= 100x applog's",
        _find_ratio(ratios, ("small", top, "reopen", "cold", "applog")),
        100.0,
        f"lsm/applog reopens per second{scale_note}",
    )
    if top != bottom:
        for op, cache in (("put", ""), ("probe", ""), ("get", "warm"), ("get", "cold")):
            label = f"{op} ({cache})" if cache else op
            add(
                f"{bottom:,} -> {top:,} pages: lsm {label} keeps >= 70%",
                _find_ratio(ratios, ("small", top, op, cache, f"lsm@{bottom}")),
                0.7,
                f"lsm@{top:,} / lsm@{bottom:,}, paired by round",
            )
    store_config = config.store_config
    budget = lsm_cache_budget(store_config)
    growth = _rss_growth(footprints, small.name, "lsm", top)
    low_growth = _rss_growth(footprints, small.name, "lsm", bottom)
    trimmed = _rss_growth(footprints, small.name, "lsm", top, "rss_trimmed_bytes")

    def size(value: float) -> str:
        return "n/a" if math.isnan(value) else size_text(value)

    add_check(
        TargetCheck(
            f"lsm RSS growth at {top:,} pages <= configured caches",
            growth,
            float(budget),
            None if math.isnan(growth) else growth <= budget,
            f"VmRSS end - empty = {size(growth)} ({size(low_growth)} at {bottom:,} pages; "
            f"{size(trimmed)} after malloc_trim); caches = block cache "
            f"{size_text(store_config.block_cache_bytes)} + {store_config.max_write_buffer_number} "
            f"memtables x {size_text(store_config.write_buffer_size)} = {size_text(budget)}",
        )
    )


def _rss_growth(
    footprints: Sequence[Footprint], scenario: str, kind: str, level: int, column: str = "rss_bytes"
) -> float:
    """VmRSS at the end (``column``) minus VmRSS with the store open and empty."""
    by_stage = {f.stage: f for f in footprints if (f.scenario, f.kind, f.level) == (scenario, kind, level)}
    if "empty" not in by_stage or "end" not in by_stage:
        return math.nan
    return float(getattr(by_stage["end"], column) - by_stage["empty"].rss_bytes)
