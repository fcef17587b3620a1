"""The tuning environment: check_env, the seeded workload, observation bounds and normalisation, reward."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator
from pathlib import Path

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from env import (
    ENV_ID,
    FEATURES,
    EnvConfig,
    KVCacheTuningEnv,
    RewardConfig,
    WindowFeatures,
    encode_observation,
)
from env.actions import DEFAULT_ACTION_KNOBS
from env.observation import (
    Feature,
    StoreWindow,
    feature_value,
    observation_names,
    observation_size,
    window_features,
)
from env.reuse import ReuseSketch
from env.step_info import step_info
from store import StoreConfig
from store.config import MiB
from store.pages import plan_pages
from workloads.host_ram import clamp_store_ram, store_ram_bytes

FEATURE_INDEX = {f.name: i for i, f in enumerate(FEATURES)}


@pytest.fixture
def tuning_env() -> Iterator[KVCacheTuningEnv]:
    environment = KVCacheTuningEnv()
    yield environment
    environment.close()


def features(**values: float) -> WindowFeatures:
    """Window features, zero except ``values``."""
    return WindowFeatures(**{**dict.fromkeys((f.name for f in FEATURES), 0.0), **values})


def request_arrays(environment: KVCacheTuningEnv) -> tuple[list[np.ndarray], np.ndarray]:
    assert environment._session is not None
    requests = environment._session._requests
    return [r.tokens.copy() for r in requests], np.array([r.arrival_s for r in requests])


def default_action(environment: KVCacheTuningEnv) -> np.ndarray:
    return environment.mapper.to_action(StoreConfig()).astype(np.float32)


# ---------------------------------------------------------------------------------------- registration


def test_check_env_passes_on_the_registered_no_argument_env() -> None:
    environment = gymnasium.make(ENV_ID)
    try:
        unwrapped = environment.unwrapped
        assert isinstance(unwrapped, KVCacheTuningEnv)
        assert unwrapped.config == EnvConfig()
        check_env(unwrapped, skip_render_check=True)
    finally:
        environment.close()


def test_spaces_have_the_documented_shapes(tuning_env: KVCacheTuningEnv) -> None:
    dim = len(DEFAULT_ACTION_KNOBS)
    assert tuning_env.action_space == gymnasium.spaces.Box(-1.0, 1.0, (dim,), dtype=np.float32)
    assert tuning_env.observation_space.shape == (len(FEATURES) + dim,) == (observation_size(),)
    assert len(observation_names()) == observation_size()
    doc = KVCacheTuningEnv.__doc__ or ""
    assert f"Box(0, 1, ({observation_size()},), float32)" in doc
    for feature in FEATURES:
        assert re.search(rf"\| {feature.name} +\|", doc), f"{feature.name} missing from the observation table"


def test_action_knobs_select_the_action_space_but_not_the_observation() -> None:
    environment = KVCacheTuningEnv(action_knobs=("write_buffer_size", "enable_blob_files"))
    try:
        assert environment.action_space.shape == (2,)
        assert environment.mapper.names == ["write_buffer_size", "enable_blob_files"]
        observation, _ = environment.reset(seed=0)
        assert observation.shape == (observation_size(),)
        environment.step(np.array([1.0, -1.0], dtype=np.float32))
        assert environment.current_config.write_buffer_size == 256 * MiB
        assert environment.current_config.enable_blob_files is False
        assert environment.current_config.replace(write_buffer_size=64 * MiB, enable_blob_files=True) == (
            StoreConfig()
        )
    finally:
        environment.close()


def test_step_before_reset_raises(tuning_env: KVCacheTuningEnv) -> None:
    with pytest.raises(RuntimeError, match="reset"):
        tuning_env.step(default_action(tuning_env))


def test_each_instance_owns_its_directory_and_close_removes_it(tmp_path: Path) -> None:
    first, second = KVCacheTuningEnv(), KVCacheTuningEnv()
    given = KVCacheTuningEnv(root_dir=str(tmp_path / "mine"))
    try:
        for environment in (first, second, given):
            environment.reset(seed=1)
            environment.step(default_action(environment))
        assert first._root != second._root
        assert first._root.is_dir() and second._root.is_dir()
        assert (tmp_path / "mine" / "episode-1").is_dir()
    finally:
        for environment in (first, second, given):
            environment.close()
    assert not first._root.exists() and not second._root.exists()
    assert (tmp_path / "mine").is_dir(), "a root_dir the caller gave is the caller's to remove"


# ---------------------------------------------------------------------------------------- determinism


def test_same_seed_gives_the_same_requests_and_first_window(tuning_env: KVCacheTuningEnv) -> None:
    runs = []
    for _ in range(2):
        _, info = tuning_env.reset(seed=123)
        tokens, arrivals = request_arrays(tuning_env)
        *_, stepped = tuning_env.step(default_action(tuning_env))
        runs.append((info["requests"], tokens, arrivals, step_info(stepped).metrics()))
    (count_a, tokens_a, arrivals_a, window_a), (count_b, tokens_b, arrivals_b, window_b) = runs
    assert count_a == count_b == len(tokens_a) > 0
    assert len(tokens_a) == len(tokens_b)
    assert all(np.array_equal(a, b) for a, b in zip(tokens_a, tokens_b, strict=True))
    np.testing.assert_array_equal(arrivals_a, arrivals_b)
    assert window_a["hit_token_ratio"] == window_b["hit_token_ratio"]
    assert window_a["hit_tokens"] == window_b["hit_tokens"]
    assert window_a["prompt_tokens"] == window_b["prompt_tokens"] > 0


def test_same_seed_is_reproducible_across_instances() -> None:
    first, second = KVCacheTuningEnv(), KVCacheTuningEnv()
    try:
        first.reset(seed=7)
        second.reset(seed=7)
        tokens_a, arrivals_a = request_arrays(first)
        tokens_b, arrivals_b = request_arrays(second)
        assert all(np.array_equal(a, b) for a, b in zip(tokens_a, tokens_b, strict=True))
        np.testing.assert_array_equal(arrivals_a, arrivals_b)
        hit_a = step_info(first.step(default_action(first))[4]).window.hit_token_ratio
        hit_b = step_info(second.step(default_action(second))[4]).window.hit_token_ratio
        assert hit_a == hit_b
    finally:
        first.close()
        second.close()


def test_different_seeds_give_different_workloads(tuning_env: KVCacheTuningEnv) -> None:
    tuning_env.reset(seed=1)
    tokens_a, _ = request_arrays(tuning_env)
    tuning_env.reset(seed=2)
    tokens_b, _ = request_arrays(tuning_env)
    differing = sum(not np.array_equal(a, b) for a, b in zip(tokens_a, tokens_b, strict=False))
    assert differing > len(tokens_a) // 2


# ---------------------------------------------------------------------------------------- observations


def test_random_episode_stays_in_the_observation_space(tuning_env: KVCacheTuningEnv) -> None:
    observation, info = tuning_env.reset(seed=5)
    requests = info["requests"]
    assert observation in tuning_env.observation_space
    np.testing.assert_allclose(info["action"], default_action(tuning_env), atol=1e-7)
    tuning_env.action_space.seed(5)
    reward_config = RewardConfig()
    steps, terminated = 0, False
    while not terminated:
        observation, reward, terminated, truncated, info = tuning_env.step(tuning_env.action_space.sample())
        steps += 1
        assert observation.shape == (observation_size(),) and observation.dtype == np.float32
        assert observation in tuning_env.observation_space, f"step {steps}: {observation}"
        assert truncated is False
        # The knob part is the config the step ran with, as positions in each knob's action range.
        knobs = [knob.to_unit(getattr(tuning_env.current_config, knob.name)) for knob in DEFAULT_ACTION_KNOBS]
        np.testing.assert_allclose(observation[len(FEATURES) :], knobs, atol=1e-6)
        # The reward is the stated objective of the raw window metrics (no budget set: no penalty).
        step = step_info(info)
        window = step.metrics()
        expected = reward_config.reward(
            hit_token_ratio=window["hit_token_ratio"],
            mean_ttft_s=window["mean_ttft_s"],
            over_budget=0.0,
            dropped_fraction=feature_value(observation, "dropped_fraction"),
        )
        assert reward == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert window["hit_token_ratio"] == pytest.approx(window["hit_tokens"] / window["prompt_tokens"])
        assert 0.0 <= feature_value(observation, "store_hit_ratio") <= 1.0
        assert len(step.ttft_s) == step.window.requests
    assert steps == math.ceil(requests / tuning_env.config.requests_per_window) > 1
    assert tuning_env._session is not None and tuning_env._session.done


def test_a_reward_relative_to_the_defaults_scores_each_window_against_a_lockstep_default_replay() -> None:
    reward_config = RewardConfig(relative_to_defaults=True)
    environment = KVCacheTuningEnv(reward=reward_config)
    try:
        environment.reset(seed=3)
        no_wal = environment.mapper.to_action(StoreConfig(disable_wal=True, writer_batch_size=64))
        terminated, steps = False, 0
        while not terminated:
            _, reward, terminated, _, info = environment.step(no_wal.astype(np.float32))
            step = step_info(info)
            assert step.baseline is not None
            assert (step.baseline.first_request, step.baseline.requests) == (
                step.window.first_request,
                step.window.requests,
            )
            assert step.applied == StoreConfig(disable_wal=True, writer_batch_size=64)
            expected = reward_config.hit_weight * (
                step.window.hit_token_ratio - step.baseline.hit_token_ratio
            ) - math.log(step.window.mean_ttft_s / step.baseline.mean_ttft_s)
            assert reward == pytest.approx(expected, rel=1e-9, abs=1e-12), f"step {steps}"
            steps += 1
        assert steps > 1
        assert environment._baseline is not None and environment._baseline.done
    finally:
        environment.close()
    assert environment._baseline is None


def test_a_small_host_ram_budget_starts_each_episode_from_the_clamped_defaults() -> None:
    host_ram = 32 * MiB  # below the defaults' 2 x 64 MiB memtables + 32 MiB block cache
    environment = KVCacheTuningEnv(host_ram_bytes=host_ram)
    try:
        environment.reset(seed=0)
        assert environment.current_config == clamp_store_ram(StoreConfig(), host_ram)
        assert store_ram_bytes("lsm", environment.current_config, None) <= host_ram
        _, reward, _, _, info = environment.step(default_action(environment))
        assert math.isfinite(reward)
        assert step_info(info).window.requests > 0
    finally:
        environment.close()


def test_a_relative_reward_without_the_defaults_window_raises() -> None:
    with pytest.raises(ValueError, match="needs the defaults' window: pass baseline"):
        RewardConfig(relative_to_defaults=True).reward(0.5, 0.1, 0.0, 0.0)
    absolute = RewardConfig(hit_weight=0.5, ttft_scale_s=0.5)
    assert absolute.reward(0.5, 0.1, 0.25, 0.1) == pytest.approx(0.25 - 0.2 - 0.5 - 0.05)


def test_feature_normalisation_on_known_inputs() -> None:
    log = Feature("x", "u", "log:1000")
    assert log.normalise(0.0) == 0.0
    assert log.normalise(1000.0) == 1.0
    assert log.normalise(1e9) == 1.0
    assert log.normalise(math.sqrt(1001.0) - 1.0) == pytest.approx(0.5, abs=1e-12)
    assert log.normalise(9.0) == pytest.approx(math.log(10.0) / math.log(1001.0), abs=1e-15)
    ratio = Feature("x", "u", "ratio:64")
    assert ratio.normalise(16.0) == 0.25
    assert ratio.normalise(64.0) == 1.0
    assert ratio.normalise(640.0) == 1.0
    unit = Feature("x", "u", "unit")
    assert unit.normalise(0.375) == 0.375
    assert unit.normalise(1.5) == 1.0
    for feature in (log, ratio, unit):
        assert feature.normalise(float("nan")) == 0.0
        assert feature.normalise(-3.0) == 0.0


def test_encode_observation_places_each_normalised_feature() -> None:
    config = StoreConfig(write_buffer_size=256 * MiB, enable_blob_files=False)
    observation = encode_observation(
        features(
            stall_fraction=0.25,
            l0_files=32.0,
            space_used_fraction=1.0,
            arrival_rate_rps=1000.0,
            store_hit_ratio=float("nan"),
            writer_queue_fill=2.0,
        ),
        config,
    )
    assert observation.shape == (observation_size(),) and observation.dtype == np.float32
    assert observation[FEATURE_INDEX["stall_fraction"]] == 0.25
    assert observation[FEATURE_INDEX["l0_files"]] == 0.5
    assert observation[FEATURE_INDEX["space_used_fraction"]] == 0.5
    assert observation[FEATURE_INDEX["arrival_rate_rps"]] == 1.0
    assert observation[FEATURE_INDEX["store_hit_ratio"]] == 0.0
    assert observation[FEATURE_INDEX["writer_queue_fill"]] == 1.0
    assert observation[FEATURE_INDEX["page_reuse"]] == 0.0
    names = observation_names()
    assert observation[names.index("knob:write_buffer_size")] == 1.0
    assert observation[names.index("knob:enable_blob_files")] == 0.25  # first of two bins: its centre
    assert feature_value(observation, "l0_files") == 0.5
    with pytest.raises(ValueError, match=r"unknown feature 'l0'.*l0_files"):
        feature_value(observation, "l0")


def test_window_features_mean_the_same_at_any_kv_scale() -> None:
    def window(scale: int) -> StoreWindow:
        return StoreWindow(
            span_s=2.0,
            lookups=8,
            pages_looked_up=64,
            pages_hit=16,
            pages_offered=48,
            dropped_pages=4,
            page_bytes_written=44 * 1024 * scale,
            page_bytes_read=16 * 1024 * scale,
            device_write_bytes=88 * 1024 * scale,
            device_read_bytes=20 * 1024 * scale,
            stall_s=0.5,
            l0_files=3,
            pending_compaction_bytes=10 * 1024 * scale,
            blob_garbage_bytes=5 * 1024 * scale,
            disk_bytes=40 * 1024 * scale,
            writer_queue_depth=16,
        )

    small, large = (window_features(window(scale), 0.5, 64, 80 * 1024 * scale, 64, 0.1) for scale in (1, 512))
    assert small == large
    assert (small.write_amplification, small.read_amplification) == (2.0, 1.25)
    assert small.pending_compaction_fraction == 0.25
    assert small.space_used_fraction == 0.5
    flushing = dataclasses.replace(window(1), page_bytes_written=0)
    busy = window_features(flushing, 0.5, 64, None, 64, 0.0)
    assert busy.write_amplification == math.inf
    assert encode_observation(busy, StoreConfig())[FEATURE_INDEX["write_amplification"]] == 1.0


def test_page_reuse_is_the_sketch_of_each_windows_plans_hashed_once() -> None:
    environment = KVCacheTuningEnv(reward=RewardConfig(relative_to_defaults=True))
    try:
        environment.reset(seed=2)
        assert environment._session is not None
        requests = environment._session._requests
        sketch = ReuseSketch()
        terminated = False
        while not terminated:
            observation, _, terminated, _, info = environment.step(default_action(environment))
            window = step_info(info).window
            for request in requests[window.first_request : window.first_request + window.requests]:
                sketch.record(plan_pages(request.tokens, environment.config.page_size, "kvtune").digests)
            expected = FEATURES[FEATURE_INDEX["page_reuse"]].normalise(sketch.take_window())
            assert feature_value(observation, "page_reuse") == pytest.approx(expected, abs=1e-7)
            assert environment._plans == {}, "both replays and the sketch are done with the window's plans"
    finally:
        environment.close()
