"""Training Stable-Baselines3 agents on the tuning environment.

A run's whole configuration is one :class:`TrainConfig`, logged in full to MLflow. Vectorised envs each
own a DB directory; an evaluation callback compares the agent with the ``default`` policy on a separate
env of the same workload; checkpoints and the final policy bundle land under the run directory.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, CheckpointCallback
from stable_baselines3.common.vec_env import DummyVecEnv

from agents.bundle import ALGORITHMS, LearnedPolicy, PolicyCard, algorithm_class, save_policy_bundle
from agents.evaluation import EvalResult, run_episode
from agents.policies import DefaultPolicy
from agents.tracking import log_metrics
from env import ENV_ID, EnvConfig, step_info
from env.actions import ActionMapper, select_knobs
from env.distribution import get_distribution
from env.wrappers import DiscreteKnobActions

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    algo: str = "ppo"
    timesteps: int = 256
    n_envs: int = 2
    seed: int = 0
    eval_every: int = 128
    discrete_levels: int = 5
    learning_rate: float = 3e-4
    n_steps: int = 32
    batch_size: int = 32
    gamma: float = 0.9
    initial_action_std: float = 0.37
    """PPO and A2C: the standard deviation of the Gaussian actions at the start (SB3's ``log_std_init``
    is its log). The zero action is kvtune's defaults, so exploration starts around them; SB3's default
    of 1 spreads the first actions over the whole range, where most configs are far worse, and the
    agent spends its windows learning to avoid them. 0.37 still flips an on/off knob in about one
    window of five (its default holds actions within +-0.5)."""
    env: EnvConfig = field(default_factory=EnvConfig)

    def __post_init__(self) -> None:
        if self.algo not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {self.algo!r}; valid algorithms: {', '.join(ALGORITHMS)}")
        for name in ("timesteps", "n_envs", "eval_every", "n_steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.initial_action_std > 0:
            raise ValueError(f"initial_action_std must be > 0, got {self.initial_action_std}")


def make_train_env(config: TrainConfig, rank: int, run_dir: Path) -> gym.Env:
    env_config = dataclasses.replace(config.env, root_dir=str(run_dir / "envs" / f"env-{rank}"))
    environment = gym.make(ENV_ID, config=env_config)
    if config.algo == "dqn":
        environment = DiscreteKnobActions(environment, levels=config.discrete_levels)
    environment.reset(seed=config.seed + rank)
    return environment


def _algorithm_kwargs(config: TrainConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "learning_rate": config.learning_rate,
        "gamma": config.gamma,
        "seed": config.seed,
    }
    if config.algo in ("ppo", "a2c"):
        kwargs["n_steps"] = config.n_steps
        kwargs["policy_kwargs"] = {"log_std_init": math.log(config.initial_action_std)}
    if config.algo == "ppo":
        kwargs["batch_size"] = config.batch_size
    if config.algo in ("sac", "dqn"):
        kwargs.update(
            batch_size=config.batch_size, learning_starts=min(config.n_steps, config.timesteps // 2)
        )
    if config.algo == "dqn":
        kwargs["exploration_fraction"] = 0.5
    return kwargs


class WindowMetricsCallback(BaseCallback):
    """Logs every window's raw metrics from the envs' ``info`` to MLflow as ``window/...`` with ``step=``."""

    def _on_step(self) -> bool:
        infos = self.locals.get("infos", [])
        rewards = self.locals.get("rewards", [])
        for index, info in enumerate(infos):
            metrics = step_info(info).metrics()
            if len(rewards) > index:
                metrics["reward"] = float(rewards[index])
            log_metrics(metrics, step=self.num_timesteps, prefix=f"window/env{index}/")
        return True


EvaluationHook = Callable[[EvalResult], bool]
"""Called with each evaluation; returning False stops training."""


class CompareWithDefaultCallback(BaseCallback):
    """Every ``every`` steps, runs one evaluation episode of the agent and logs it against ``default``."""

    def __init__(
        self,
        config: TrainConfig,
        mapper: ActionMapper,
        run_dir: Path,
        every: int,
        on_evaluation: EvaluationHook | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.mapper = mapper
        self.run_dir = run_dir
        self.every = every
        self.on_evaluation = on_evaluation
        self.default_reward: float | None = None
        self.history: list[EvalResult] = []

    def _eval_env_config(self) -> EnvConfig:
        return dataclasses.replace(self.config.env, root_dir=str(self.run_dir / "envs" / "eval"))

    def _on_step(self) -> bool:
        if self.n_calls % max(self.every // self.config.n_envs, 1):
            return True
        seed = self.config.seed + 10_000
        if self.default_reward is None:
            self.default_reward = run_episode(DefaultPolicy(), self._eval_env_config(), seed).total_reward
        card = PolicyCard.for_mapper(self.config.algo, self.mapper, self._levels(), {})
        agent = LearnedPolicy(self.model, card, self.mapper)
        episode = run_episode(agent, self._eval_env_config(), seed)
        result = EvalResult(
            timesteps=self.num_timesteps,
            agent_reward=episode.total_reward,
            default_reward=self.default_reward,
            agent_mean_ttft_s=episode.mean_ttft_s,
            agent_hit_token_ratio=episode.hit_token_ratio,
        )
        self.history.append(result)
        log_metrics(result.metrics(), step=self.num_timesteps)
        logger.info(
            "step %d: agent reward %.4f vs default %.4f",
            self.num_timesteps,
            result.agent_reward,
            result.default_reward,
        )
        return self.on_evaluation is None or self.on_evaluation(result)

    def _levels(self) -> int:
        return self.config.discrete_levels if self.config.algo == "dqn" else 0


def train(
    config: TrainConfig, run_dir: Path, progress_bar: bool = True, on_evaluation: EvaluationHook | None = None
) -> Path:
    """Train an agent; return the policy bundle directory. Call inside an active MLflow run.

    ``on_evaluation`` sees every evaluation (an Optuna study reports and prunes from it).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    mapper = ActionMapper(select_knobs(config.env.action_knobs))
    vec_env = DummyVecEnv([partial(make_train_env, config, rank, run_dir) for rank in range(config.n_envs)])
    model = algorithm_class(config.algo)(
        "MlpPolicy", vec_env, verbose=0, device="cpu", **_algorithm_kwargs(config)
    )
    compare = CompareWithDefaultCallback(config, mapper, run_dir, config.eval_every, on_evaluation)
    callbacks = CallbackList(
        [
            WindowMetricsCallback(),
            compare,
            CheckpointCallback(
                save_freq=max(config.eval_every // config.n_envs, 1),
                save_path=str(run_dir / "checkpoints"),
                name_prefix=config.algo,
            ),
        ]
    )
    model.learn(total_timesteps=config.timesteps, callback=callbacks, progress_bar=progress_bar)
    vec_env.close()
    levels = config.discrete_levels if config.algo == "dqn" else 0
    training = {
        "workload": config.env.workload,
        "timesteps": config.timesteps,
        "seed": config.seed,
        "env": dataclasses.asdict(config.env),
        "distribution": get_distribution(config.env.distribution).describe()
        if config.env.distribution
        else None,
    }
    card = PolicyCard.for_mapper(config.algo, mapper, levels, training)
    bundle = save_policy_bundle(model, card, run_dir / "policy")
    if compare.history:
        final = compare.history[-1]
        logger.info(
            "final evaluation: agent %.4f vs default %.4f",
            final.agent_reward,
            final.default_reward,
        )
    return bundle
