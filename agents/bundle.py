"""Learned policy bundles: the Stable-Baselines3 model file plus a card checked at load.

A bundle is a directory holding ``model.zip`` and ``card.json``. The card records the observation and
action schema (versions, names, knob ranges), the algorithm, the training workload and library versions;
loading a bundle whose schema differs from this code's raises ``ValueError`` instead of feeding a policy
observations it was not trained on.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from agents.policies import Policy
from env.actions import ACTION_SCHEMA_VERSION, ActionMapper, select_knobs
from env.observation import OBSERVATION_SCHEMA_VERSION, observation_names
from env.wrappers import apply_discrete
from store import StoreConfig

ALGORITHMS = ("ppo", "sac", "a2c", "dqn")
CARD_FILE = "card.json"
MODEL_FILE = "model.zip"


def algorithm_class(name: str) -> Any:
    import stable_baselines3 as sb3

    classes = {"ppo": sb3.PPO, "sac": sb3.SAC, "a2c": sb3.A2C, "dqn": sb3.DQN}
    if name not in classes:
        raise ValueError(f"unknown algorithm {name!r}; valid algorithms: {', '.join(ALGORITHMS)}")
    return classes[name]


def library_versions() -> dict[str, str]:
    versions = {}
    for package in ("kvtune", "stable-baselines3", "gymnasium", "torch", "rocksdict"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


@dataclass(frozen=True)
class PolicyCard:
    algorithm: str
    observation_schema_version: int
    observation_names: list[str]
    action_schema_version: int
    action_knobs: list[dict[str, Any]]
    discrete_levels: int
    training: dict[str, Any] = field(default_factory=dict)
    library_versions: dict[str, str] = field(default_factory=library_versions)
    evaluation: list[dict[str, Any]] = field(default_factory=list)
    """Rows of the evaluation suite table this policy was shipped with (empty until evaluated)."""

    @classmethod
    def for_mapper(
        cls, algorithm: str, mapper: ActionMapper, discrete_levels: int, training: dict[str, Any]
    ) -> PolicyCard:
        return cls(
            algorithm=algorithm,
            observation_schema_version=OBSERVATION_SCHEMA_VERSION,
            observation_names=observation_names(),
            action_schema_version=ACTION_SCHEMA_VERSION,
            action_knobs=mapper.describe(),
            discrete_levels=discrete_levels,
            training=training,
        )

    def check_compatible(self, mapper: ActionMapper, source: Path) -> None:
        current = PolicyCard.for_mapper(self.algorithm, mapper, self.discrete_levels, {})
        for name in (
            "observation_schema_version",
            "observation_names",
            "action_schema_version",
            "action_knobs",
        ):
            if getattr(self, name) != getattr(current, name):
                raise ValueError(
                    f"policy bundle {source} was trained with another {name.replace('_', ' ')} "
                    f"({getattr(self, name)!r}) than this kvtune uses ({getattr(current, name)!r}); "
                    "retrain it with `kvtune train`"
                )


class LearnedPolicy(Policy):
    """An SB3 model choosing actions deterministically; DQN's discrete actions map through levels."""

    name = "learned"

    def __init__(self, model: Any, card: PolicyCard, mapper: ActionMapper, source: str = "") -> None:
        self.model = model
        self.card = card
        self.mapper = mapper
        self.source = source

    def decide(self, observation: np.ndarray, current: StoreConfig) -> StoreConfig:
        action, _ = self.model.predict(observation, deterministic=True)
        if self.card.discrete_levels:
            action = apply_discrete(int(action), self.mapper.to_action(current), self.card.discrete_levels)
        return self.mapper.to_config(np.asarray(action, dtype=np.float64))


def save_policy_bundle(model: Any, card: PolicyCard, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory / MODEL_FILE)
    (directory / CARD_FILE).write_text(json.dumps(asdict(card), indent=2, sort_keys=True) + "\n")
    return directory


def load_policy_bundle(directory: str | Path, mapper: ActionMapper | None = None) -> LearnedPolicy:
    directory = Path(directory)
    card_path = directory / CARD_FILE
    if not card_path.is_file() or not (directory / MODEL_FILE).is_file():
        raise ValueError(f"{directory} is not a policy bundle: it needs {CARD_FILE} and {MODEL_FILE}")
    try:
        card = PolicyCard(**json.loads(card_path.read_text()))
    except (TypeError, json.JSONDecodeError) as error:
        raise ValueError(f"{card_path} is not a valid policy card: {error}") from error
    if mapper is None:
        try:
            mapper = ActionMapper(select_knobs([knob["name"] for knob in card.action_knobs]))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f"policy bundle {directory} acts on knobs this kvtune lacks ({error}); retrain it"
            ) from error
    card.check_compatible(mapper, directory)
    model = algorithm_class(card.algorithm).load(directory / MODEL_FILE, device="cpu")
    return LearnedPolicy(model, card, mapper, source=str(directory))
