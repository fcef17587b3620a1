"""Drift-robust comparisons: medians of per-round ratios, between kinds and between stored-page levels."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from experiments.bench_store.records import Measurement, Ratio


def median_pair_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """Median over rounds of ``numerator[r] / denominator[r]``: the drift-robust way to compare two kinds.

    Both sequences hold one value per round, measured back to back. A ratio of medians would compare
    numbers from different minutes; the median of per-round ratios does not.
    """
    if len(numerator) != len(denominator):
        raise ValueError(
            f"need one value per round on both sides, got {len(numerator)} and {len(denominator)}"
        )
    ratios = [n / d for n, d in zip(numerator, denominator, strict=True) if d > 0 and math.isfinite(n / d)]
    if not ratios:
        return math.nan
    return float(np.median(ratios))


def _paired_ratio(
    top: dict[int, float], bottom: dict[int, float], key: tuple[str, int, str, str], names: tuple[str, str]
) -> Ratio | None:
    """The :class:`Ratio` of per-round rates ``top`` over ``bottom`` (rates by round), if any round pairs."""
    rounds = sorted(set(top) & set(bottom))
    if not rounds:
        return None
    per_round = [top[r] / bottom[r] for r in rounds if bottom[r] > 0]
    scenario, level, op, cache = key
    return Ratio(
        scenario=scenario,
        level=level,
        op=op,
        cache=cache,
        numerator=names[0],
        denominator=names[1],
        median_ratio=median_pair_ratio([top[r] for r in rounds], [bottom[r] for r in rounds]),
        min_ratio=min(per_round) if per_round else math.nan,
        max_ratio=max(per_round) if per_round else math.nan,
        rounds=len(rounds),
    )


def pair_ratios(rows: Iterable[Measurement], numerator: str, denominator: str) -> list[Ratio]:
    """Per (scenario, level, op, cache): the median of per-round rate ratios ``numerator / denominator``."""
    table: dict[tuple[str, int, str, str], dict[str, dict[int, float]]] = {}
    for row in rows:
        if row.kind in (numerator, denominator):
            key = (row.scenario, row.level, row.op, row.cache)
            table.setdefault(key, {}).setdefault(row.kind, {})[row.round] = row.rate
    result = []
    for key, by_kind in table.items():
        ratio = _paired_ratio(
            by_kind.get(numerator, {}), by_kind.get(denominator, {}), key, (numerator, denominator)
        )
        if ratio is not None:
            result.append(ratio)
    return result


def level_ratios(rows: Iterable[Measurement], kind: str, scenario: str, low: int, high: int) -> list[Ratio]:
    """Per (op, cache): median over rounds of ``rate(kind at high) / rate(kind at low)``, paired by round."""
    table: dict[tuple[str, str], dict[int, dict[int, float]]] = {}
    for row in rows:
        if row.kind == kind and row.scenario == scenario and row.level in (low, high):
            table.setdefault((row.op, row.cache), {}).setdefault(row.level, {})[row.round] = row.rate
    result = []
    for (op, cache), by_level in table.items():
        ratio = _paired_ratio(
            by_level.get(high, {}),
            by_level.get(low, {}),
            (scenario, high, op, cache),
            (f"{kind}@{high}", f"{kind}@{low}"),
        )
        if ratio is not None:
            result.append(ratio)
    return result
