"""What one trial runs: a static store config replayed, or a short training run; and their pruners."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import shutil
import socket
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import optuna
from optuna.trial import FrozenTrial

from agents.evaluation import EvalResult, WindowReport, run_episode
from agents.policies import StaticPolicy
from agents.studies.space import AGENT_ALGORITHMS, SearchSpace, static_config
from agents.tracking import log_metrics
from env import EnvConfig
from store import StoreConfig

if TYPE_CHECKING:  # agents.training imports Stable-Baselines3: static-study workers start faster without it
    from agents.training import TrainConfig

logger = logging.getLogger(__name__)

BEST_STATIC_FILE = "best_static.json"
BEST_POLICY_DIR = "best_policy"


class LatestValueMedianPruner(optuna.pruners.BasePruner):
    """:class:`optuna.pruners.MedianPruner` judged on a trial's latest report, not its best so far.

    MedianPruner compares a trial's best intermediate value with the median of the others' values at the
    same step: right for learning curves, wrong for running totals. A static trial reports the reward
    summed over the windows replayed so far, which falls whenever a window's reward is negative (budget
    and TTFT penalties), so its best report is its first and it would never be pruned. The total so far
    is what compares with the other trials' totals over the same windows.
    """

    def __init__(self, n_startup_trials: int, n_warmup_steps: int) -> None:
        self._median = optuna.pruners.MedianPruner(
            n_startup_trials=n_startup_trials, n_warmup_steps=n_warmup_steps
        )

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        latest = copy.copy(trial)
        latest.intermediate_values = {step: trial.intermediate_values[step]}
        return self._median.prune(study, latest)


@dataclass(frozen=True)
class TrialOutcome:
    value: float
    pruned: bool
    attrs: dict[str, Any] = field(default_factory=dict)
    """Recorded as trial user attrs and final MLflow metrics (numbers only there)."""


def json_ready(value: Any) -> Any:
    """``value`` as plain JSON types (what a study stores and compares when it resumes)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _env_setup(env: EnvConfig) -> dict[str, Any]:
    """The env config as it defines the objective (its scratch directory does not)."""
    return {k: v for k, v in dataclasses.asdict(env).items() if k != "root_dir"}


class StudyObjective(ABC):
    """What one trial runs. Subclasses are frozen dataclasses, pickled into worker processes."""

    kind: ClassVar[str]
    space: SearchSpace

    @property
    @abstractmethod
    def seed(self) -> int:
        """The seed every trial runs with (so trials compare on the same workload)."""

    @abstractmethod
    def setup(self) -> dict[str, Any]:
        """The trial setup stored with the study; resuming with another one is refused."""

    @abstractmethod
    def baseline(self) -> dict[str, Any]:
        """The defaults, enqueued as a new study's first trial (where they lie in the space)."""

    @abstractmethod
    def pruner(self, startup_trials: int, warmup_steps: int) -> optuna.pruners.BasePruner:
        """The pruner that judges this objective's intermediate reports."""

    @abstractmethod
    def evaluate(self, trial: optuna.Trial, params: dict[str, Any], out: Path) -> TrialOutcome:
        """Run one trial with ``params`` (files under ``out``), reporting intermediate values; return
        ``pruned=True`` rather than raise when the pruner stops it."""

    @abstractmethod
    def export_best(self, best: FrozenTrial, out: Path) -> Path | None:
        """Write the best trial's result (a policy) under ``out``; the path written, if any."""


@dataclass(frozen=True)
class StaticObjective(StudyObjective):
    """Replay ``env``'s workload (reset with ``workload_seed``) with one StoreConfig per trial."""

    env: EnvConfig
    space: SearchSpace
    workload_seed: int = 0
    kind: ClassVar[str] = "static"

    @property
    def seed(self) -> int:
        return self.workload_seed

    def setup(self) -> dict[str, Any]:
        return {"env": _env_setup(self.env), "seed": self.workload_seed, "objective": "sum of window rewards"}

    def baseline(self) -> dict[str, Any]:
        return self.space.within(StoreConfig().to_dict())

    def pruner(self, startup_trials: int, warmup_steps: int) -> optuna.pruners.BasePruner:
        return LatestValueMedianPruner(startup_trials, warmup_steps)

    def evaluate(self, trial: optuna.Trial, params: dict[str, Any], out: Path) -> TrialOutcome:
        pruned = False

        def report(window: WindowReport) -> bool:
            nonlocal pruned
            log_metrics(
                {**window.window, "reward": window.reward, "objective": window.total_reward},
                step=window.index,
                prefix="window/",
            )
            trial.report(window.total_reward, window.index)
            pruned = not window.terminated and trial.should_prune()
            return not pruned

        policy = StaticPolicy(static_config(params), source=f"trial {trial.number}")
        episode = run_episode(policy, self.env, self.workload_seed, on_window=report)
        return TrialOutcome(
            episode.total_reward,
            pruned,
            {
                "windows": len(episode.windows),
                "mean_ttft_s": episode.mean_ttft_s,
                "hit_token_ratio": episode.hit_token_ratio,
            },
        )

    def export_best(self, best: FrozenTrial, out: Path) -> Path:
        return StaticPolicy(static_config(best.params), source=f"trial {best.number}").save(
            out / BEST_STATIC_FILE
        )


@dataclass(frozen=True)
class AgentObjective(StudyObjective):
    """A short training run per trial: ``train`` with the searched hyperparameters replaced."""

    train: TrainConfig
    space: SearchSpace
    kind: ClassVar[str] = "agent"

    def __post_init__(self) -> None:
        if self.train.algo not in AGENT_ALGORITHMS:
            raise ValueError(
                f"agent studies tune {', '.join(AGENT_ALGORITHMS)}; got --algo {self.train.algo!r}"
            )
        if self.train.eval_every > self.train.timesteps:
            raise ValueError(
                f"eval_every ({self.train.eval_every}) must be <= timesteps ({self.train.timesteps}) "
                "so each trial reports at least one evaluation; lower --eval-every"
            )
        unknown = sorted(set(self.space.names) - {f.name for f in dataclasses.fields(self.train)})
        if unknown:
            raise ValueError(f"agent search space names {', '.join(unknown)}, which TrainConfig lacks")

    @property
    def seed(self) -> int:
        return self.train.seed

    def setup(self) -> dict[str, Any]:
        base = {k: v for k, v in dataclasses.asdict(self.train).items() if k not in self.space.names}
        return {**base, "env": _env_setup(self.train.env), "objective": "last evaluation reward"}

    def baseline(self) -> dict[str, Any]:
        return self.space.within(dataclasses.asdict(type(self.train)()))

    def pruner(self, startup_trials: int, warmup_steps: int) -> optuna.pruners.BasePruner:
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_steps)

    def evaluate(self, trial: optuna.Trial, params: dict[str, Any], out: Path) -> TrialOutcome:
        from agents.training import train

        config = dataclasses.replace(self.train, **params)
        run_dir = out / "trials" / f"trial-{trial.number:04d}"
        evaluations: list[EvalResult] = []
        pruned = False

        def on_evaluation(evaluation: EvalResult) -> bool:
            nonlocal pruned
            trial.report(evaluation.agent_reward, len(evaluations))
            evaluations.append(evaluation)
            pruned = trial.should_prune()
            return not pruned

        bundle = train(config, run_dir, progress_bar=False, on_evaluation=on_evaluation)
        shutil.rmtree(run_dir / "envs", ignore_errors=True)  # the trial's store directories
        if not evaluations:
            raise RuntimeError(f"trial {trial.number} trained without an evaluation; lower eval_every")
        last = evaluations[-1]
        return TrialOutcome(
            last.agent_reward,
            pruned,
            {
                "evaluations": len(evaluations),
                "default_reward": last.default_reward,
                "mean_ttft_s": last.agent_mean_ttft_s,
                "hit_token_ratio": last.agent_hit_token_ratio,
                "bundle": str(bundle.resolve()),
            },
        )

    def export_best(self, best: FrozenTrial, out: Path) -> Path | None:
        bundle = Path(str(best.user_attrs.get("bundle", "")))
        host = best.user_attrs.get("host")
        if host != socket.gethostname() or not bundle.is_dir():
            logger.warning(
                "best trial %d's policy bundle %s is on host %s; copy it from there",
                best.number,
                bundle,
                host,
            )
            return None
        target = out / BEST_POLICY_DIR
        shutil.copytree(bundle, target, dirs_exist_ok=True)
        return target
