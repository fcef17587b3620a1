"""An adversarial policy driving a live store under load through the runtime controller.

The policy emits, window after window, the extremes of the action space (:mod:`env.actions`) in turn:
all knobs at their low end, all at their high end, then one probe — a NaN action, each single-knob corner (one
knob high, the rest low, and its mirror), or a random corner — and round again. The
:class:`~agents.controller.RuntimeController` applies what its guards let through to a store that
:func:`experiments.stress.run_stress` keeps loaded with verified reads and writes. Every exception a
window raises is counted as escaped.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agents.controller import Guards, RuntimeController
from agents.policies import Policy
from env.actions import ActionMapper
from experiments.stress import StressConfig, StressReport, run_stress
from store import KVStore, StoreConfig

logger = logging.getLogger(__name__)

RANDOM_CORNERS = 8
UNGUARDED = Guards(max_changes_per_minute=1_000_000, min_change=0.0, allow_reopen=True)
"""Only the knob ranges protect the store: no rate limit, no hysteresis, reopen-only knobs allowed."""


def adversarial_actions(dim: int, seed: int = 0) -> list[np.ndarray]:
    """Low extreme, high extreme, probe, low, high, next probe, ... over every probe once."""
    low, high = -np.ones(dim), np.ones(dim)
    probes = [np.full(dim, np.nan)]
    for index in range(dim):
        corner = low.copy()
        corner[index] = 1.0
        probes += [corner, -corner]
    rng = np.random.default_rng(seed)
    probes += [rng.choice([-1.0, 1.0], size=dim) for _ in range(RANDOM_CORNERS)]
    return [action for probe in probes for action in (low, high, probe)]


class AdversarialPolicy(Policy):
    """Plays :func:`adversarial_actions` in a loop, one action per window."""

    name = "adversarial"

    def __init__(self, mapper: ActionMapper | None = None, seed: int = 0) -> None:
        self.mapper = mapper or ActionMapper()
        self.actions = adversarial_actions(self.mapper.dim, seed)
        self.calls = 0

    def decide(self, observation: np.ndarray, current: StoreConfig) -> StoreConfig:
        action = self.actions[self.calls % len(self.actions)]
        self.calls += 1
        return self.mapper.to_config(action)


@dataclass
class AdversarialReport:
    stress: StressReport
    guards: Guards
    windows: int = 0
    applied_changes: int = 0
    escaped_errors: list[str] = field(default_factory=list)
    guards_fired: dict[str, int] = field(default_factory=dict)
    max_window_stall_fraction: float = 0.0

    @property
    def max_disk_over_budget(self) -> float:
        budget = self.stress.config.budget_bytes
        return max((sample.disk_bytes / budget for sample in self.stress.samples), default=0.0)

    @property
    def stall_fraction(self) -> float:
        return self.stress.stall_s / self.stress.config.seconds


def run_adversarial(config: StressConfig, guards: Guards, interval_s: float = 1.0) -> AdversarialReport:
    """``run_stress`` with the controller ticking :class:`AdversarialPolicy` every ``interval_s``."""
    holder: dict[str, Any] = {}

    def drive(store: KVStore, stop: threading.Event) -> int:
        controller = RuntimeController(store, AdversarialPolicy(seed=config.seed), interval_s, guards)
        holder["controller"] = controller
        escaped: list[str] = holder.setdefault("escaped", [])
        while not stop.wait(interval_s):
            try:
                controller.tick()
            except Exception as error:
                escaped.append(f"{type(error).__name__}: {error}")
                logger.error("controller window raised: %s", error)
        return sum(1 for decision in controller.decisions if decision.applied)

    stress = run_stress(config, drive)
    controller: RuntimeController = holder["controller"]
    return AdversarialReport(
        stress=stress,
        guards=guards,
        windows=len(controller.decisions),
        applied_changes=stress.knob_changes,
        escaped_errors=holder.get("escaped", []),
        guards_fired=controller.counts.as_dict(),
        max_window_stall_fraction=max(
            (decision.observation.get("stall_fraction", 0.0) for decision in controller.decisions),
            default=0.0,
        ),
    )
