"""Evaluation suites: every baseline and learned policy on the same held-out workloads and seeds.

A suite is a list of :class:`SuiteWorkload` (an environment config and a reset seed). None of them is
drawn from a training distribution: the synthetic ones use generator seeds at or above
:data:`env.distribution.EVALUATION_SEED_BASE` (training draws below it) and the paper's phase shape,
and ``standard`` adds the first requests of the Mooncake trace, which nothing trains or searches on.

The baselines (:func:`baseline_policies`) are RocksDB's defaults, kvtune's defaults, the heuristic, the
best static config of a search over the *training distribution* (what a careful operator would deploy
without a learned policy) and, per workload, an *oracle static*: the best static config of a search on
that evaluation workload itself, the bar a learned policy must approach. Static searches are seeded
Optuna TPE runs over the action space minimising mean TTFT relative to kvtune's defaults.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.evaluation import EpisodeResult, run_episode
from agents.policies import ROCKSDB_DEFAULTS, DefaultPolicy, HeuristicPolicy, Policy, StaticPolicy
from env import EnvConfig
from env.actions import ActionMapper, select_knobs
from env.distribution import EVALUATION_SEED_BASE, unique_page_count
from store import StoreConfig
from workloads.profiles import get_profile
from workloads.registry import make_workload

logger = logging.getLogger(__name__)

MOONCAKE_TRACE = Path("/work/shared/data/traces/mooncake_synthetic_trace.jsonl")
"""Default location of the evaluation-only trace (``--trace`` overrides it)."""

SERVING: dict[str, Any] = {"profile": "llama-3.1-8b", "profile_scale": 512, "device": "nvme-pcie4"}
"""The serving setup training and the ``standard`` suite share: Llama-3.1-8B compute, its KV shrunk
512x (bytes priced at full size on the counters clock), an NVMe PCIe 4 device."""


@dataclass(frozen=True)
class SuiteWorkload:
    """One evaluation workload: the environment that replays it and the reset seed that fixes it."""

    label: str
    env: EnvConfig
    seed: int


def sized_env(label: str, workload: str, options: dict[str, Any], seed: int, **fields: Any) -> SuiteWorkload:
    """A suite workload whose disk budget and memory tier are fractions (``budget_fraction``,
    ``memory_tier_fraction`` in ``fields``) of its unique KV bytes, as training draws them."""
    budget_fraction = fields.pop("budget_fraction", None)
    tier_fraction = fields.pop("memory_tier_fraction")
    env = EnvConfig(workload=workload, workload_options=options, **fields)
    requests = make_workload(workload, seed=seed, **options)
    page_bytes = get_profile(env.profile, env.profile_scale).kv_layout().page_bytes(env.page_size)
    data_bytes = unique_page_count(requests, env.page_size) * page_bytes
    budget = None if budget_fraction is None else int(budget_fraction * data_bytes)
    env = dataclasses.replace(
        env, budget_bytes=budget, memory_tier_bytes=max(int(tier_fraction * data_bytes), page_bytes)
    )
    return SuiteWorkload(label, env, seed)


PAPER_PHASES = [0.1, 0.3, 0.5, 0.7, 0.5, 0.3, 0.1]


def _smoke_suite(trace: Path) -> list[SuiteWorkload]:
    small = {**SUITE_SERVING["smoke"], "requests_per_window": 8}
    options = {"phase_requests": 6, "targets": [0.2, 0.7], "chunk_tokens": 64, "chunks_per_prompt": 4}
    return [
        sized_env(
            "staged-smoke",
            "staged",
            {**options, "pool_chunks": 64},
            EVALUATION_SEED_BASE,
            budget_fraction=0.5,
            memory_tier_fraction=0.1,
            **small,
        )
    ]


def _standard_suite(trace: Path) -> list[SuiteWorkload]:
    base = EVALUATION_SEED_BASE
    staged = {"phase_requests": 12, "targets": PAPER_PHASES, "chunk_tokens": 64, "chunks_per_prompt": 32}
    return [
        sized_env(
            "mooncake",
            "mooncake",
            {"path": str(trace), "limit": 64, "max_input_tokens": 4096, "time_scale": 2.0},
            0,
            budget_fraction=0.5,
            memory_tier_fraction=0.1,
            **SERVING,
        ),
        sized_env(
            "staged-paper",
            "staged",
            {**staged, "pool_chunks": 1024, "rate": 4.0},
            base + 1,
            budget_fraction=0.25,
            memory_tier_fraction=0.1,
            **SERVING,
        ),
        sized_env(
            "chat",
            "chat",
            {"sessions": 12, "session_rate": 1.5, "think_time_s": 1.0, "system_tokens": 1024},
            base + 2,
            budget_fraction=0.5,
            memory_tier_fraction=0.05,
            **SERVING,
        ),
        sized_env(
            "rag",
            "rag",
            {"requests": 80, "documents": 40, "doc_tokens": 512, "rate": 6.0},
            base + 3,
            budget_fraction=1.0,
            memory_tier_fraction=0.1,
            **SERVING,
        ),
    ]


SUITES: dict[str, Callable[[Path], list[SuiteWorkload]]] = {
    "smoke": _smoke_suite,
    "standard": _standard_suite,
}
SUITE_SERVING: dict[str, dict[str, Any]] = {"smoke": {"profile": "tiny"}, "standard": SERVING}
"""The serving setup of each suite, which its training-distribution static search runs on too."""


def suite_workloads(name: str, trace: Path = MOONCAKE_TRACE) -> list[SuiteWorkload]:
    """The workloads of suite ``name`` (``standard`` reads the Mooncake trace at ``trace``)."""
    if name not in SUITES:
        raise ValueError(f"unknown evaluation suite {name!r}; valid suites: {', '.join(SUITES)}")
    if name != "smoke" and not trace.is_file():
        raise ValueError(
            f"suite {name!r} replays the Mooncake trace, not found at {trace}; pass --trace FILE"
        )
    return SUITES[name](trace)


def training_workloads(distribution: str, draws: int, serving: dict[str, Any]) -> list[SuiteWorkload]:
    """``draws`` episodes of a training distribution (reset seeds 0 .. draws-1) for a static search."""
    env = EnvConfig(distribution=distribution, **serving)
    return [SuiteWorkload(f"{distribution}-{k}", env, k) for k in range(draws)]


def search_static(workloads: Sequence[SuiteWorkload], trials: int, seed: int) -> StoreConfig:
    """The static config (over the action space) with the lowest mean TTFT relative to kvtune's
    defaults, averaged over ``workloads``; a seeded TPE search of ``trials`` trials."""
    import optuna

    if trials < 1:
        raise ValueError(f"a static search needs at least 1 trial, got {trials}")
    mapper = ActionMapper(select_knobs(()))
    reference = [run_episode(DefaultPolicy(StoreConfig()), w.env, w.seed).mean_ttft_s for w in workloads]

    def objective(trial: optuna.Trial) -> float:
        action = np.asarray([trial.suggest_float(name, -1.0, 1.0) for name in mapper.names])
        policy = StaticPolicy(mapper.to_config(action))
        ratios = [
            run_episode(policy, w.env, w.seed).mean_ttft_s / max(ref, 1e-9)
            for w, ref in zip(workloads, reference, strict=True)
        ]
        return float(np.mean(ratios))

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    defaults = mapper.to_action(StoreConfig())
    study.enqueue_trial({name: float(v) for name, v in zip(mapper.names, defaults, strict=True)})
    study.optimize(objective, n_trials=trials)
    logger.info("static search over %d workloads: best relative TTFT %.3f", len(workloads), study.best_value)
    action = np.asarray([study.best_params[name] for name in mapper.names])
    return mapper.to_config(action)


def baseline_policies(static_train: StoreConfig | None) -> dict[str, Policy]:
    """RocksDB defaults, kvtune defaults, the heuristic and (if given) the training distribution's best
    static config, by label."""
    policies: dict[str, Policy] = {
        "rocksdb-defaults": DefaultPolicy(ROCKSDB_DEFAULTS),
        "kvtune-defaults": DefaultPolicy(StoreConfig()),
        "heuristic": HeuristicPolicy(),
    }
    if static_train is not None:
        policies["static-train"] = StaticPolicy(static_train, source="training distribution")
    return policies


@dataclass(frozen=True)
class SuiteResult:
    """One policy on one suite workload."""

    workload: str
    policy: str
    episode: EpisodeResult
    repeat_mean_ttft_s: tuple[float, ...] = ()
    """Mean TTFT of each repeat averaged into ``episode``."""

    @property
    def repeat_spread(self) -> float:
        """(max - min) / mean of the repeats' mean TTFT: how far one policy's same-seed episodes move
        on their own (the store's background work), the noise any difference must clear (0 for one)."""
        if len(self.repeat_mean_ttft_s) < 2:
            return 0.0
        repeats = self.repeat_mean_ttft_s
        return (max(repeats) - min(repeats)) / max(float(np.mean(repeats)), 1e-12)

    def row(self) -> dict[str, Any]:
        windows = self.episode.windows
        return {
            "workload": self.workload,
            "policy": self.policy,
            "mean_ttft_s": self.episode.mean_ttft_s,
            "repeat_spread": self.repeat_spread,
            "p99_ttft_s": self.episode.p99_ttft_s,
            "hit_token_ratio": self.episode.hit_token_ratio,
            "dropped_pages": self.episode.dropped_pages,
            "max_store_ram_bytes": max((w["store_ram_bytes"] for w in windows), default=0.0),
            "max_disk_bytes": max((w["disk_bytes"] for w in windows), default=0.0),
        }

    def window_rows(self) -> list[dict[str, Any]]:
        keys = (
            "mean_ttft_s",
            "p99_ttft_s",
            "hit_token_ratio",
            "dropped_pages",
            "backup_dropped_pages",
            "store_ram_bytes",
            "disk_bytes",
        )
        return [
            {"workload": self.workload, "policy": self.policy, "window": index, **{k: w[k] for k in keys}}
            | {"changed_knobs": self.episode.decisions[index] if self.episode.decisions else ""}
            for index, w in enumerate(self.episode.windows)
        ]


def mean_episode(episodes: Sequence[EpisodeResult]) -> EpisodeResult:
    """Repeats of one policy on one workload averaged (per episode and per window), decisions of the
    first: the store's background work makes same-seed episodes differ, so one run can mislead."""
    if not episodes:
        raise ValueError("mean_episode needs at least one episode")
    first = episodes[0]
    windows = [
        {key: float(np.mean([e.windows[i][key] for e in episodes])) for key in first.windows[i]}
        for i in range(min(len(e.windows) for e in episodes))
    ]
    return EpisodeResult(
        policy=first.policy,
        total_reward=float(np.mean([e.total_reward for e in episodes])),
        requests=first.requests,
        hit_token_ratio=float(np.mean([e.hit_token_ratio for e in episodes])),
        mean_ttft_s=float(np.mean([e.mean_ttft_s for e in episodes])),
        p99_ttft_s=float(np.mean([e.p99_ttft_s for e in episodes])),
        dropped_pages=round(float(np.mean([e.dropped_pages for e in episodes]))),
        windows=windows,
        decisions=first.decisions,
    )


def run_suite(
    workloads: Sequence[SuiteWorkload],
    policies: dict[str, Policy],
    per_workload: Callable[[SuiteWorkload], dict[str, Policy]] | None = None,
    repeats: int = 1,
) -> list[SuiteResult]:
    """Every policy (plus ``per_workload``'s, e.g. an oracle static) on every workload, same seeds,
    each averaged over ``repeats`` episodes (policies interleaved within each repeat)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    results = []
    for workload in workloads:
        extra = per_workload(workload) if per_workload else {}
        chosen = {**policies, **extra}
        runs: dict[str, list[EpisodeResult]] = {label: [] for label in chosen}
        for _ in range(repeats):
            for label, policy in chosen.items():
                runs[label].append(run_episode(policy, workload.env, workload.seed, label=label))
        for label, episodes in runs.items():
            episode = mean_episode(episodes)
            logger.info("%s / %s: mean TTFT %.4f s", workload.label, label, episode.mean_ttft_s)
            repeats_ttft = tuple(e.mean_ttft_s for e in episodes)
            results.append(SuiteResult(workload.label, label, episode, repeats_ttft))
    return results


@dataclass(frozen=True)
class TargetCheck:
    """The issue's targets for one learned policy on one workload."""

    workload: str
    policy: str
    vs_static_train: float
    """Learned mean TTFT / static-train's - 1 (target <= -0.05)."""
    vs_oracle: float
    """Learned mean TTFT / oracle static's - 1 (target <= 0.05)."""
    worst_window_vs_rocksdb: float
    """Max over windows of learned window mean TTFT / RocksDB defaults' - 1 (target <= 0.02)."""

    @property
    def met(self) -> bool:
        return (
            self.vs_static_train <= -0.05 and self.vs_oracle <= 0.05 and self.worst_window_vs_rocksdb <= 0.02
        )


def check_targets(results: Sequence[SuiteResult], learned: Sequence[str]) -> list[TargetCheck]:
    """Target checks of each ``learned`` label on each workload that has the three references."""
    by_key = {(r.workload, r.policy): r.episode for r in results}
    checks = []
    for workload in dict.fromkeys(r.workload for r in results):
        refs = [
            by_key.get((workload, name)) for name in ("static-train", "oracle-static", "rocksdb-defaults")
        ]
        for label in learned:
            episode = by_key.get((workload, label))
            static, oracle, rocksdb = refs
            if episode is None or static is None or oracle is None or rocksdb is None:
                continue
            worst = max(
                (
                    w["mean_ttft_s"] / max(r["mean_ttft_s"], 1e-12) - 1.0
                    for w, r in zip(episode.windows, rocksdb.windows, strict=False)
                ),
                default=0.0,
            )
            checks.append(
                TargetCheck(
                    workload,
                    label,
                    episode.mean_ttft_s / static.mean_ttft_s - 1.0,
                    episode.mean_ttft_s / oracle.mean_ttft_s - 1.0,
                    worst,
                )
            )
    return checks
