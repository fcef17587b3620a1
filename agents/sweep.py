"""Knob sweeps: how far each knob of the action space moves the objective, the others at defaults."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agents.evaluation import EpisodeResult, run_episode
from agents.policies import StaticPolicy
from env import EnvConfig
from env.actions import ActionKnob, ActionMapper
from store import StoreConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepPoint:
    knob: str
    value: Any
    mean_ttft_s: float
    p99_ttft_s: float
    hit_token_ratio: float
    total_reward: float
    dropped_pages: int


@dataclass(frozen=True)
class KnobSpread:
    """The objective's range across one knob's values: ``spread`` is (max - min) / default mean TTFT."""

    knob: str
    best_value: Any
    best_mean_ttft_s: float
    worst_mean_ttft_s: float
    default_mean_ttft_s: float
    spread: float


def knob_values(knob: ActionKnob, points: int) -> list[Any]:
    """Every choice of a choice knob, else ``points`` evenly spaced values on the knob's scale."""
    choices = knob.spec().choices
    if choices:
        return list(choices)
    values = [knob.to_value(u) for u in np.linspace(0.0, 1.0, points)]
    return list(dict.fromkeys(values))


def sweep(
    config: EnvConfig,
    seed: int,
    points: int = 4,
    knobs: Sequence[str] | None = None,
    on_point: Callable[[SweepPoint], None] | None = None,
) -> tuple[list[SweepPoint], list[KnobSpread], EpisodeResult]:
    """Run one episode per knob value (same workload and seed) and one with every knob at its default."""
    mapper = ActionMapper()
    selected = [k for k in mapper.knobs if knobs is None or k.name in knobs]
    unknown = sorted(set(knobs or ()) - set(mapper.names))
    if unknown:
        raise ValueError(
            f"unknown knob(s) {', '.join(unknown)} to sweep; action knobs: {', '.join(mapper.names)}"
        )
    default = run_episode(StaticPolicy(StoreConfig()), config, seed, label="default")
    points_out: list[SweepPoint] = []
    spreads: list[KnobSpread] = []
    for knob in selected:
        rows = []
        for value in knob_values(knob, points):
            store_config = mapper.consistent({knob.name: value})
            episode = run_episode(StaticPolicy(store_config), config, seed, label=f"{knob.name}={value}")
            point = SweepPoint(
                knob.name,
                value,
                episode.mean_ttft_s,
                episode.p99_ttft_s,
                episode.hit_token_ratio,
                episode.total_reward,
                episode.dropped_pages,
            )
            rows.append(point)
            if on_point is not None:
                on_point(point)
        points_out.extend(rows)
        best = min(rows, key=lambda p: p.mean_ttft_s)
        worst = max(rows, key=lambda p: p.mean_ttft_s)
        spreads.append(
            KnobSpread(
                knob=knob.name,
                best_value=best.value,
                best_mean_ttft_s=best.mean_ttft_s,
                worst_mean_ttft_s=worst.mean_ttft_s,
                default_mean_ttft_s=default.mean_ttft_s,
                spread=(worst.mean_ttft_s - best.mean_ttft_s) / default.mean_ttft_s
                if default.mean_ttft_s
                else 0.0,
            )
        )
    spreads.sort(key=lambda s: s.spread, reverse=True)
    return points_out, spreads, default
