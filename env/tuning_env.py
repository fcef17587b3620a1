"""The store, under a workload, as an environment an agent learns to tune."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from env.actions import ActionMapper, select_knobs
from env.config import EnvConfig, WindowOutcome
from env.distribution import get_distribution, unique_page_count
from env.observation import (
    FEATURES,
    OBSERVATION_SCHEMA_VERSION,
    WindowFeatures,
    encode_observation,
    observation_size,
    store_window,
    window_features,
)
from env.reuse import ReuseSketch
from env.step_info import STEP_INFO_KEY, StepInfo
from store import StoreConfig
from store.pages import PagePlan
from workloads.host_ram import clamp_store_ram
from workloads.profiles import get_device_profile, get_profile
from workloads.registry import make_workload
from workloads.replay import ReplayConfig, ReplaySession
from workloads.requests import Request

logger = logging.getLogger(__name__)

SMALL_WORKLOAD_OPTIONS: dict[str, dict[str, Any]] = {
    "staged": {"phase_requests": 16, "chunk_tokens": 64, "chunks_per_prompt": 8, "pool_chunks": 512},
}
"""Options that keep the no-argument environment small and fast; ``workload_options`` override them."""


def build_requests(workload: str, options: dict[str, Any], seed: int) -> list[Request]:
    """The requests of ``workload`` (see :data:`workloads.WORKLOADS`), small by default for ``staged``."""
    return make_workload(workload, seed=seed, **{**SMALL_WORKLOAD_OPTIONS.get(workload, {}), **options})


def _observation_table() -> str:
    rows = [f"    | {i:>2} | {f.name:<27} | {f.unit:<45} | {f.scale:<16} |" for i, f in enumerate(FEATURES)]
    return "\n".join(rows)


class KVCacheTuningEnv(gym.Env[np.ndarray, np.ndarray]):
    __doc__ = f"""Tune a live KV-cache store while it serves a replayed workload.

    ## Description
    One episode replays one workload (fixed by the reset seed) through the replay engine: a host-memory
    tier in front of a real store of ``store_kind`` in its own directory. One step is one control window:
    the action's knobs are applied to the live store (live where RocksDB allows it, by a reopen whose cost
    is reported in ``info["step"].window.reopen_s`` otherwise), the next ``requests_per_window`` requests are
    replayed, and the window's metrics become the observation and the reward.

    ## Action Space
    ``Box(-1, 1, (d,), float32)``: one dimension per knob of :data:`env.actions.DEFAULT_ACTION_KNOBS`
    (log scale for sizes and counts, linear for fractions, equal intervals for on/off and choices), mapped
    by :class:`env.actions.ActionMapper`: the zero action is kvtune's defaults, -1 and 1 the range ends.
    :class:`env.wrappers.DiscreteKnobActions` gives a discrete variant for DQN.

    ## Observation Space
    ``Box(0, 1, ({observation_size()},), float32)``, schema version {OBSERVATION_SCHEMA_VERSION}.
    Entries 0 .. {len(FEATURES) - 1}:

    |  # | feature                     | unit                                          | normalisation    |
    |----|-----------------------------|-----------------------------------------------|------------------|
{_observation_table()}

    ``log:M`` is log1p(x) / log1p(M), ``ratio:M`` is x / M, both clipped to [0, 1]. Entries
    {len(FEATURES)} .. {observation_size() - 1} are the current values of every default action knob (whatever
    subset ``action_knobs`` lets the agent move), each mapped onto [0, 1] like an action.

    ## Rewards
    Per window (see :class:`env.config.RewardConfig`): ``hit_weight * hit_token_ratio - ttft_weight *
    mean_ttft_s / ttft_scale_s - budget_weight * max(0, disk/budget - 1) - drop_weight * dropped_fraction``.
    With ``reward.relative_to_defaults``, the same window is replayed in lockstep on a second store with
    kvtune's defaults, and hits and TTFT count relative to it: ``hit_weight * (hits - default hits) -
    ttft_weight * ln(TTFT / default TTFT) - ...`` (0: as good as the defaults).
    TTFT comes from the replay's ``counters`` clock by default (``clock="measured"`` on request). With
    ``host_ram_bytes``, the store's RAM (memtables, block cache) is taken from the memory tier, so a
    config that holds more RAM loses tier hits, and one that does not fit is clamped (logged).

    ## Starting State
    The store starts empty with :class:`store.StoreConfig` defaults; the first observation holds zero
    workload features and the default knobs (``info["action"]`` is the default config's action). With
    ``distribution`` set, each reset draws its workload, disk budget and memory tier from it
    (:mod:`env.distribution`); ``info["workload"]`` describes what was drawn.

    ## Episode End
    Terminated when the workload is fully replayed. Time limits belong to the registration.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (Gymnasium declares it so)

    def __init__(self, config: EnvConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        self.config = dataclasses.replace(config or EnvConfig(), **overrides)
        self.profile = get_profile(self.config.profile, self.config.profile_scale)
        self.mapper = ActionMapper(select_knobs(self.config.action_knobs))
        self.action_space = gym.spaces.Box(-1.0, 1.0, (self.mapper.dim,), dtype=np.float32)
        size = observation_size()
        self.observation_space = gym.spaces.Box(0.0, 1.0, (size,), dtype=np.float32)
        self._owned_root = self.config.root_dir is None
        self._root = Path(self.config.root_dir or tempfile.mkdtemp(prefix="kvtune-env-"))
        self._session: ReplaySession | None = None
        self._baseline: ReplaySession | None = None
        self._plans: dict[int, PagePlan] = {}
        self._reuse = ReuseSketch()
        self._episode = 0
        self._budget_bytes = self.config.budget_bytes
        self.current_config = StoreConfig()

    def _starting_config(self) -> StoreConfig:
        """kvtune's defaults, with an ``lsm`` store's RAM knobs clamped (logged) to fit ``host_ram_bytes``:
        a small host-RAM budget makes every episode start from what fits, as a policy's proposal would."""
        if self.config.host_ram_bytes is None or self.config.store_kind != "lsm":
            return StoreConfig()
        return clamp_store_ram(StoreConfig(), self.config.host_ram_bytes)

    # ------------------------------------------------------------------ gymnasium API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._close_session()
        workload_seed = int(self.np_random.integers(2**31 - 1))
        budget_bytes, memory_tier_bytes = self.config.budget_bytes, self.config.memory_tier_bytes
        if self.config.distribution is None:
            requests = build_requests(self.config.workload, dict(self.config.workload_options), workload_seed)
            drawn: dict[str, Any] = {"workload": self.config.workload}
        else:
            draw = get_distribution(self.config.distribution).draw(self.np_random)
            requests = draw.requests()
            data_bytes = unique_page_count(requests, self.config.page_size) * self._page_bytes()
            if draw.budget_fraction is not None:
                budget_bytes = max(int(draw.budget_fraction * data_bytes), 1)
            memory_tier_bytes = max(int(draw.memory_tier_fraction * data_bytes), 1)
            workload_seed, drawn = draw.seed, draw.describe()
        self._budget_bytes = budget_bytes
        self._episode += 1
        path = self._root / f"episode-{self._episode}"
        shutil.rmtree(path, ignore_errors=True)
        self.current_config = self._starting_config()
        replay_config = ReplayConfig(
            store_kind=self.config.store_kind,
            profile=self.profile,
            device=get_device_profile(self.config.device),
            page_size=self.config.page_size,
            budget_bytes=budget_bytes,
            memory_tier_bytes=memory_tier_bytes,
            host_ram_bytes=self.config.host_ram_bytes,
            servers=self.config.servers,
            prefetch=self.config.prefetch,
            clock=self.config.clock,
            pace=self.config.pace,
            seed=workload_seed,
        )
        # Both sessions and the reuse sketch read each request's page plan from one dict: hashed once.
        self._plans = {}
        self._session = ReplaySession(requests, replay_config, self.current_config, path, self._plans)
        if self.config.reward.relative_to_defaults:
            defaults_path = self._root / f"episode-{self._episode}-defaults"
            shutil.rmtree(defaults_path, ignore_errors=True)
            self._baseline = ReplaySession(
                requests, replay_config, self._starting_config(), defaults_path, self._plans
            )
        self._reuse = ReuseSketch()
        empty = WindowFeatures(**dict.fromkeys((f.name for f in FEATURES), 0.0))
        observation = encode_observation(empty, self.current_config)
        info = {
            "action": self.mapper.to_action(self.current_config),
            "requests": len(requests),
            "workload": drawn,
            "budget_bytes": budget_bytes,
            "memory_tier_bytes": memory_tier_bytes,
        }
        return observation, info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        return self.step_config(self.mapper.to_config(action))

    def step_config(self, config: StoreConfig) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """A step that applies ``config`` directly (policies that choose configs, not actions)."""
        if self._session is None:
            raise RuntimeError("call reset() before step()")
        self._session.apply(config)
        config = self._session.store.config
        changed = self.current_config.changed(config)
        self.current_config = config
        before = self._session.store.stats()
        window = self._session.run_window(self.config.requests_per_window)
        baseline = None if self._baseline is None else self._baseline.run_window(window.requests)
        for index in range(window.first_request, window.first_request + window.requests):
            self._reuse.record(self._plans.pop(index).digests)
        features = window_features(
            store_window(before, self._session.store.stats(), window.trace_end_s - window.trace_start_s),
            page_reuse=self._reuse.take_window(),
            page_tokens=self.config.page_size,
            budget_bytes=self._budget_bytes,
            writer_queue_depth=config.writer_queue_depth,
            store_ram_fraction=window.store_ram_bytes / window.host_ram_bytes
            if window.host_ram_bytes
            else 0.0,
        )
        reward = self.config.reward.reward(
            hit_token_ratio=window.hit_token_ratio,
            mean_ttft_s=window.mean_ttft_s,
            over_budget=features.space_used_fraction - 1.0 if self._budget_bytes else 0.0,
            dropped_fraction=features.dropped_fraction,
            baseline=None
            if baseline is None
            else WindowOutcome(baseline.hit_token_ratio, baseline.mean_ttft_s),
        )
        records = self._session.records[window.first_request : window.first_request + window.requests]
        record = StepInfo(
            window=window,
            hit_tokens=sum(r.hit_tokens for r in records),
            prompt_tokens=sum(r.prompt_tokens for r in records),
            ttft_s=[r.ttft_s for r in records],
            applied=config,
            changed_knobs=changed,
            baseline=baseline,
        )
        info: dict[str, Any] = {STEP_INFO_KEY: record}
        observation = encode_observation(features, config)
        return observation, float(reward), self._session.done, False, info

    def close(self) -> None:
        self._close_session()
        if self._owned_root:
            shutil.rmtree(self._root, ignore_errors=True)
        super().close()

    # ------------------------------------------------------------------ helpers

    def _page_bytes(self) -> int:
        return self.profile.kv_layout().page_bytes(self.config.page_size)

    def _close_session(self) -> None:
        for session in (self._session, self._baseline):
            if session is not None:
                session.close()
        self._session = self._baseline = None
