"""Running policies on the environment: one episode, or several policies side by side on one seed."""

from __future__ import annotations

import logging
from collections.abc import Callable
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


@dataclass(frozen=True)
class EvalResult:
    """One evaluation during training: the agent's episode against the ``default`` policy's, same seed."""

    timesteps: int
    agent_reward: float
    default_reward: float
    agent_mean_ttft_s: float
    agent_hit_token_ratio: float

    def metrics(self) -> dict[str, float]:
        """The MLflow metrics of this evaluation, namespaced ``eval/``."""
        return {
            "eval/agent_reward": self.agent_reward,
            "eval/default_reward": self.default_reward,
            "eval/agent_mean_ttft_s": self.agent_mean_ttft_s,
            "eval/agent_hit_token_ratio": self.agent_hit_token_ratio,
        }


@dataclass(frozen=True)
class WindowReport:
    """What an episode's observer sees after each window."""

    index: int
    reward: float
    total_reward: float
    """The reward summed over the windows so far, this one included."""
    window: dict[str, float]
    terminated: bool


WindowObserver = Callable[[WindowReport], bool]
"""Called after each window; returning False ends the episode there (e.g. a pruned study trial)."""


def run_episode(
    policy: Policy,
    config: EnvConfig,
    seed: int,
    label: str | None = None,
    on_window: WindowObserver | None = None,
) -> EpisodeResult:
    """One episode of ``policy`` on a fresh env seeded with ``seed`` (so the workload is fixed by it).

    The result covers the windows run, which are all of them unless ``on_window`` stopped the episode.
    """
    env = KVCacheTuningEnv(config)
    try:
        observation, _ = env.reset(seed=seed)
        windows: list[dict[str, float]] = []
        total, ttfts, hit_tokens, prompt_tokens, dropped = 0.0, [], 0, 0, 0
        decisions: list[str] = []
        terminated = False
        while not terminated:
            chosen = policy.decide(observation, env.current_config)
            observation, reward, terminated, _, info = env.step_config(chosen)
            total += reward
            step = step_info(info)
            metrics = step.metrics()
            windows.append({**metrics, "reward": reward})
            decisions.append(" ".join(f"{k}={v}" for k, v in step.changed_knobs.items()))
            ttfts.extend(step.ttft_s)
            hit_tokens += step.hit_tokens
            prompt_tokens += step.prompt_tokens
            dropped += step.window.dropped_pages
            report = WindowReport(len(windows) - 1, float(reward), total, metrics, bool(terminated))
            if on_window is not None and not on_window(report):
                break
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
