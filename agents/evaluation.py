"""Running policies on the environment: one episode, or several policies side by side on one seed."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agents.policies import Policy
from env import EnvConfig, KVCacheTuningEnv, step_info

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpisodeResult:
    policy: str
    total_reward: float
    requests: int
    hit_token_ratio: float
    mean_ttft_s: float
    p99_ttft_s: float
    dropped_pages: int
    windows: list[dict[str, float]] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)
    """Per window, the knobs the policy changed for it (``knob=value`` pairs, empty when none)."""

    def summary(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "total_reward": self.total_reward,
            "requests": self.requests,
            "hit_token_ratio": self.hit_token_ratio,
            "mean_ttft_s": self.mean_ttft_s,
            "p99_ttft_s": self.p99_ttft_s,
            "dropped_pages": self.dropped_pages,
        }


def run_episode(policy: Policy, config: EnvConfig, seed: int, label: str | None = None) -> EpisodeResult:
    """One episode of ``policy`` on a fresh env seeded with ``seed`` (so the workload is fixed by it)."""
    env = KVCacheTuningEnv(config)
    try:
        observation, _ = env.reset(seed=seed)
        total, windows, ttfts, hit_tokens, prompt_tokens, dropped = 0.0, [], [], 0, 0, 0
        decisions: list[str] = []
        terminated = False
        while not terminated:
            chosen = policy.decide(observation, env.current_config)
            observation, reward, terminated, _, info = env.step_config(chosen)
            total += reward
            step = step_info(info)
            windows.append({**step.metrics(), "reward": reward})
            decisions.append(" ".join(f"{k}={v}" for k, v in step.changed_knobs.items()))
            ttfts.extend(step.ttft_s)
            hit_tokens += step.hit_tokens
            prompt_tokens += step.prompt_tokens
            dropped += step.window.dropped_pages
    finally:
        env.close()
    samples = np.asarray(ttfts, dtype=float)
    return EpisodeResult(
        policy=label or policy.name,
        total_reward=total,
        requests=int(samples.size),
        hit_token_ratio=hit_tokens / prompt_tokens if prompt_tokens else 0.0,
        mean_ttft_s=float(samples.mean()) if samples.size else 0.0,
        p99_ttft_s=float(np.percentile(samples, 99)) if samples.size else 0.0,
        dropped_pages=dropped,
        windows=windows,
        decisions=decisions,
    )


def compare_policies(policies: dict[str, Policy], config: EnvConfig, seed: int) -> list[EpisodeResult]:
    """Every policy on the same workload and seed, one after another in this process."""
    results = []
    for label, policy in policies.items():
        result = run_episode(policy, config, seed, label=label)
        logger.info("%s: %s", label, result.summary())
        results.append(result)
    return results
