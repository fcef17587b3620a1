"""Typed configuration of the tuning environment and its reward."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

MIN_TTFT_S = 1e-9
"""The least TTFT a relative reward takes the log of (no window is free; this only guards a zero)."""


@dataclass(frozen=True)
class WindowOutcome:
    """What a window's reward is computed from, for the policy's store or the defaults' store."""

    hit_token_ratio: float
    mean_ttft_s: float


@dataclass(frozen=True)
class RewardConfig:
    """reward = hit_weight * hit_token_ratio - ttft_weight * mean_ttft_s / ttft_scale_s
    - budget_weight * max(0, disk_bytes / budget_bytes - 1) - drop_weight * dropped_fraction.

    With ``relative_to_defaults``, the same window is also replayed in lockstep on a second store that
    keeps kvtune's defaults, and the first two terms become ``hit_weight * (hit_token_ratio - defaults'
    hit_token_ratio) - ttft_weight * ln(mean_ttft_s / defaults' mean_ttft_s)``: 0 is "as good as the
    defaults", +0.105 is 10% less TTFT, at any model scale or arrival rate. An idle window, where no
    config matters, scores about 0 instead of a small absolute TTFT the agent cannot change, so the
    windows where a knob matters carry the signal; the log makes 2x slower weigh what 2x faster does,
    so the rare catastrophic window of exploration (a config 80x slower) does not swamp the rest. It
    costs a second replay per step.
    """

    hit_weight: float = 0.5
    ttft_weight: float = 1.0
    ttft_scale_s: float = 1.0
    budget_weight: float = 2.0
    drop_weight: float = 0.5
    relative_to_defaults: bool = False

    def __post_init__(self) -> None:
        for name in ("hit_weight", "ttft_weight", "budget_weight", "drop_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"RewardConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.ttft_scale_s <= 0:
            raise ValueError(f"RewardConfig.ttft_scale_s must be > 0, got {self.ttft_scale_s}")

    def reward(
        self,
        hit_token_ratio: float,
        mean_ttft_s: float,
        over_budget: float,
        dropped_fraction: float,
        baseline: WindowOutcome | None = None,
    ) -> float:
        """The window's reward; ``baseline`` is the defaults' window (required when relative)."""
        if self.relative_to_defaults and baseline is None:
            raise ValueError("a reward relative to the defaults needs the defaults' window: pass baseline")
        if self.relative_to_defaults and baseline is not None:
            ttft_term = math.log(max(mean_ttft_s, MIN_TTFT_S) / max(baseline.mean_ttft_s, MIN_TTFT_S))
            hits = hit_token_ratio - baseline.hit_token_ratio
        else:
            ttft_term, hits = mean_ttft_s / self.ttft_scale_s, hit_token_ratio
        return (
            self.hit_weight * hits
            - self.ttft_weight * ttft_term
            - self.budget_weight * max(0.0, over_budget)
            - self.drop_weight * dropped_fraction
        )


@dataclass(frozen=True)
class EnvConfig:
    """What one environment replays and how. The defaults are a small, fast configuration."""

    workload: str = "staged"
    workload_options: dict[str, Any] = field(default_factory=dict)
    distribution: str | None = None
    """A training distribution (see :data:`env.distribution.DISTRIBUTIONS`): each reset draws its own
    workload, budget and memory tier, and ``workload``, ``workload_options``, ``budget_bytes`` and
    ``memory_tier_bytes`` are ignored."""
    requests_per_window: int = 8
    store_kind: str = "lsm"
    profile: str = "tiny"
    profile_scale: int = 1
    device: str = "this-machine"
    """Device profile pricing the ``counters`` clock (see :data:`workloads.profiles.DEVICE_PROFILES`)."""
    budget_bytes: int | None = None
    memory_tier_bytes: int = 1024 * 1024
    host_ram_bytes: int | None = None
    """One budget for the memory tier and the store's RAM (``None``: the tier is ``memory_tier_bytes``
    and the store's RAM is free); a policy's config that does not fit is clamped, logged."""
    servers: int = 1
    prefetch: str = "wait_complete"
    page_size: int = 64
    pace: float | None = None
    clock: Literal["counters", "measured"] = "counters"
    reward: RewardConfig = field(default_factory=RewardConfig)
    action_knobs: tuple[str, ...] = ()
    """The knobs the agent acts on (empty: every default action knob); the rest stay at defaults."""
    root_dir: str | None = None

    def __post_init__(self) -> None:
        if self.requests_per_window < 1:
            raise ValueError(f"requests_per_window must be >= 1, got {self.requests_per_window}")
        if self.clock not in ("counters", "measured"):
            raise ValueError(f"clock must be 'counters' or 'measured', got {self.clock!r}")
