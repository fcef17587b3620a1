"""A serving run with the runtime controller: a workload replayed through a live store, window by window.

The replay engine serves each window; then the controller (:class:`agents.controller.RuntimeController`)
takes the window as a live deployment would: the store's own stats, the reuse sketch fed with the
window's looked-up pages, the policy's decision behind the guards. Window spans are trace seconds, so
the rate limit counts changes per trace minute.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agents.controller import Guards, MlflowTarget, RuntimeController
from agents.registry import make_policy
from env.config import EnvConfig
from env.tuning_env import build_requests
from workloads.profiles import get_device_profile, get_profile
from workloads.replay import ReplayConfig, ReplaySession

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeployWindow:
    index: int
    trace_end_s: float
    hit_token_ratio: float
    mean_ttft_s: float
    guards: tuple[str, ...]
    applied: dict[str, Any]
    write_buffer_size: int
    writer_batch_size: int
    tick_s: float


@dataclass
class DeployResult:
    policy: str
    windows: list[DeployWindow] = field(default_factory=list)
    guard_counts: dict[str, int] = field(default_factory=dict)

    @property
    def mean_ttft_s(self) -> float:
        return float(np.mean([w.mean_ttft_s for w in self.windows])) if self.windows else 0.0

    @property
    def hit_token_ratio(self) -> float:
        return float(np.mean([w.hit_token_ratio for w in self.windows])) if self.windows else 0.0

    @property
    def median_tick_s(self) -> float:
        return float(np.median([w.tick_s for w in self.windows])) if self.windows else 0.0


def deploy(
    policy_spec: str,
    setup: EnvConfig,
    seed: int,
    path: Path,
    guards: Guards | None = None,
    tracking: MlflowTarget | None = None,
    on_window: Callable[[DeployWindow], None] = lambda _: None,
) -> DeployResult:
    """Replay ``setup``'s workload (seeded) through a fresh store at ``path`` under ``policy_spec``."""
    policy = make_policy(policy_spec)
    requests = build_requests(setup.workload, dict(setup.workload_options), seed)
    config = ReplayConfig(
        store_kind=setup.store_kind,
        profile=get_profile(setup.profile, setup.profile_scale),
        device=get_device_profile(setup.device),
        page_size=setup.page_size,
        budget_bytes=setup.budget_bytes,
        memory_tier_bytes=setup.memory_tier_bytes,
        clock=setup.clock,
        pace=setup.pace,
        seed=seed,
    )
    result = DeployResult(policy=policy_spec)
    trace_now = [0.0]
    with ReplaySession(requests, config, path=path) as session:
        controller = RuntimeController(
            session.store,
            policy,
            guards=guards,
            page_tokens=setup.page_size,
            tracking=tracking,
            clock=lambda: trace_now[0],
        )
        while not session.done:
            window = session.run_window(setup.requests_per_window)
            for request in requests[window.first_request : window.first_request + window.requests]:
                controller.record_lookup(list(session.store.plan(request.tokens).digests))
            trace_now[0] = window.trace_end_s
            decision = controller.tick()
            knobs = session.store.config
            row = DeployWindow(
                index=window.index,
                trace_end_s=window.trace_end_s,
                hit_token_ratio=window.hit_token_ratio,
                mean_ttft_s=window.mean_ttft_s,
                guards=decision.guards,
                applied=decision.applied,
                write_buffer_size=knobs.write_buffer_size,
                writer_batch_size=knobs.writer_batch_size,
                tick_s=decision.tick_s,
            )
            result.windows.append(row)
            on_window(row)
        result.guard_counts = controller.counts.as_dict()
    return result
