"""Learned policy bundles: save/load equality, and a card that does not match this code is refused."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from stable_baselines3 import DQN, PPO

from agents.bundle import (
    CARD_FILE,
    MODEL_FILE,
    LearnedPolicy,
    PolicyCard,
    load_policy_bundle,
    save_policy_bundle,
)
from agents.registry import make_policy
from agents.shipped import ship_bundle
from env import ACTION_SCHEMA_VERSION, OBSERVATION_SCHEMA_VERSION, DiscreteKnobActions, KVCacheTuningEnv
from env.actions import ActionMapper
from env.observation import observation_names
from env.wrappers import apply_discrete
from store import StoreConfig

TRAINING = {"workload": "staged", "timesteps": 16, "seed": 0}


@pytest.fixture(scope="module")
def observations() -> np.ndarray:
    environment = KVCacheTuningEnv()
    try:
        environment.observation_space.seed(0)
        return np.stack([environment.observation_space.sample() for _ in range(32)])
    finally:
        environment.close()


@pytest.fixture(scope="module")
def ppo_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, PolicyCard, Path]:
    environment = KVCacheTuningEnv()
    try:
        model = PPO("MlpPolicy", environment, n_steps=8, batch_size=8, n_epochs=1, seed=0, device="cpu")
        model.learn(total_timesteps=16)
    finally:
        environment.close()
    card = PolicyCard.for_mapper("ppo", ActionMapper(), 0, TRAINING)
    path = save_policy_bundle(model, card, tmp_path_factory.mktemp("bundles") / "ppo")
    return model, card, path


def copy_bundle(source: Path, target: Path, edit: Callable[[dict[str, Any]], None] | None = None) -> Path:
    shutil.copytree(source, target)
    if edit is not None:
        card = json.loads((target / CARD_FILE).read_text())
        edit(card)
        (target / CARD_FILE).write_text(json.dumps(card))
    return target


def test_save_writes_the_model_and_a_card(ppo_bundle: tuple[Any, PolicyCard, Path]) -> None:
    _, card, path = ppo_bundle
    assert sorted(p.name for p in path.iterdir()) == [CARD_FILE, MODEL_FILE]
    written = json.loads((path / CARD_FILE).read_text())
    assert written["algorithm"] == "ppo"
    assert written["observation_schema_version"] == OBSERVATION_SCHEMA_VERSION
    assert written["observation_names"] == observation_names()
    assert written["action_schema_version"] == ACTION_SCHEMA_VERSION
    assert [knob["name"] for knob in written["action_knobs"]] == ActionMapper().names
    assert written["action_knobs"][0] == {
        "name": "write_buffer_size",
        "scale": "log",
        "low": 2**20,
        "high": 2**28,
    }
    assert written["training"] == TRAINING
    assert (
        written["library_versions"]["stable-baselines3"] == card.library_versions["stable-baselines3"] != ""
    )


def test_load_gives_the_same_card_and_the_same_actions(
    ppo_bundle: tuple[Any, PolicyCard, Path], observations: np.ndarray
) -> None:
    model, card, path = ppo_bundle
    policy = load_policy_bundle(path)
    assert isinstance(policy, LearnedPolicy)
    assert policy.card == card
    assert dataclasses.asdict(policy.card) == dataclasses.asdict(card)
    assert policy.mapper.names == ActionMapper().names
    assert policy.source == str(path)
    saved_state, loaded_state = model.policy.state_dict(), policy.model.policy.state_dict()
    assert saved_state.keys() == loaded_state.keys()
    for name, tensor in saved_state.items():
        assert torch.equal(tensor, loaded_state[name]), name
    expected, _ = model.predict(observations, deterministic=True)
    actual, _ = policy.model.predict(observations, deterministic=True)
    np.testing.assert_array_equal(actual, expected)
    for observation in observations[:8]:
        single, _ = model.predict(observation, deterministic=True)
        np.testing.assert_array_equal(policy.model.predict(observation, deterministic=True)[0], single)
        assert policy.decide(observation, StoreConfig()) == ActionMapper().to_config(single)
    via_registry = make_policy(str(path))
    assert isinstance(via_registry, LearnedPolicy) and via_registry.card == card


def test_dqn_bundle_maps_discrete_actions_through_the_levels(
    tmp_path: Path, observations: np.ndarray
) -> None:
    levels = 3
    environment = DiscreteKnobActions(KVCacheTuningEnv(), levels=levels)
    try:
        model = DQN(
            "MlpPolicy",
            environment,
            learning_starts=4,
            batch_size=4,
            buffer_size=64,
            train_freq=1,
            seed=0,
            device="cpu",
        )
        model.learn(total_timesteps=8)
    finally:
        environment.close()
    mapper = ActionMapper()
    card = PolicyCard.for_mapper("dqn", mapper, levels, TRAINING)
    policy = load_policy_bundle(save_policy_bundle(model, card, tmp_path / "dqn"))
    assert policy.card.discrete_levels == levels
    current = StoreConfig(write_buffer_size=32 * 2**20, eviction_order="fifo")
    for observation in observations:
        index, _ = model.predict(observation, deterministic=True)
        expected = mapper.to_config(apply_discrete(int(index), mapper.to_action(current), levels))
        decided = policy.decide(observation, current)
        assert decided == expected
        assert len(current.changed(decided)) <= 2, "one knob moves (plus the derived L0 stop trigger)"
    assert mapper.to_config(apply_discrete(0, mapper.to_action(current), levels)) == current


# ---------------------------------------------------------------------------------------- mismatches


def _rename_first_observation(card: dict[str, Any]) -> None:
    card["observation_names"][0] = "arrivals_per_minute"


def _drop_an_observation(card: dict[str, Any]) -> None:
    card["observation_names"].pop()


def _widen_a_knob(card: dict[str, Any]) -> None:
    card["action_knobs"][0]["high"] = 2**30


def _swap_two_knobs(card: dict[str, Any]) -> None:
    card["action_knobs"][0], card["action_knobs"][1] = card["action_knobs"][1], card["action_knobs"][0]


def _unknown_knob(card: dict[str, Any]) -> None:
    card["action_knobs"][0]["name"] = "memtable_bytes"


def _observation_version(card: dict[str, Any]) -> None:
    card["observation_schema_version"] = OBSERVATION_SCHEMA_VERSION + 1


def _action_version(card: dict[str, Any]) -> None:
    card["action_schema_version"] = ACTION_SCHEMA_VERSION + 1


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (_rename_first_observation, "observation names"),
        (_drop_an_observation, "observation names"),
        (_widen_a_knob, "action knobs"),
        (_swap_two_knobs, "action knobs"),
        (_unknown_knob, "acts on knobs this kvtune lacks"),
        (_observation_version, "observation schema version"),
        (_action_version, "action schema version"),
    ],
)
def test_schema_mismatch_is_refused_with_retrain_advice(
    ppo_bundle: tuple[Any, PolicyCard, Path],
    tmp_path: Path,
    edit: Callable[[dict[str, Any]], None],
    needle: str,
) -> None:
    _, _, path = ppo_bundle
    edited = copy_bundle(path, tmp_path / "edited", edit)
    with pytest.raises(ValueError, match=f"(?s){needle}.*retrain"):
        load_policy_bundle(edited)
    with pytest.raises(ValueError, match="retrain"):
        make_policy(str(edited))


@pytest.mark.parametrize("missing", [CARD_FILE, MODEL_FILE])
def test_a_bundle_without_its_card_or_model_is_refused(
    ppo_bundle: tuple[Any, PolicyCard, Path], tmp_path: Path, missing: str
) -> None:
    _, _, path = ppo_bundle
    broken = copy_bundle(path, tmp_path / "broken")
    (broken / missing).unlink()
    with pytest.raises(ValueError, match=f"is not a policy bundle: it needs {CARD_FILE} and {MODEL_FILE}"):
        load_policy_bundle(broken)


@pytest.mark.parametrize(
    "text", ["{not json", json.dumps({"algorithm": "ppo"}), json.dumps({"unexpected": 1})]
)
def test_an_unreadable_card_is_refused(
    ppo_bundle: tuple[Any, PolicyCard, Path], tmp_path: Path, text: str
) -> None:
    _, _, path = ppo_bundle
    broken = copy_bundle(path, tmp_path / "broken")
    (broken / CARD_FILE).write_text(text)
    with pytest.raises(ValueError, match="is not a valid policy card"):
        load_policy_bundle(broken)


def test_an_unknown_algorithm_in_the_card_is_refused(
    ppo_bundle: tuple[Any, PolicyCard, Path], tmp_path: Path
) -> None:
    _, _, path = ppo_bundle
    edited = copy_bundle(path, tmp_path / "edited", lambda card: card.update(algorithm="trpo"))
    with pytest.raises(ValueError, match="unknown algorithm 'trpo'; valid algorithms: ppo, sac, a2c, dqn"):
        load_policy_bundle(edited)


def test_a_shipped_bundle_keeps_its_model_and_adds_command_and_evaluation(
    ppo_bundle: tuple[Any, PolicyCard, Path], tmp_path: Path, observations: np.ndarray
) -> None:
    _, card, directory = ppo_bundle
    rows = [{"workload": "w", "policy": "ppo", "mean_ttft_s": 0.5}]
    target = ship_bundle(directory, "default", "kvtune train --seed 0", rows, directory=tmp_path)
    shipped = load_policy_bundle(target)
    original = load_policy_bundle(directory)
    assert shipped.card.evaluation == rows
    assert shipped.card.training == {**card.training, "command": "kvtune train --seed 0"}
    for observation in observations[:5]:
        assert shipped.decide(observation, StoreConfig()) == original.decide(observation, StoreConfig())
