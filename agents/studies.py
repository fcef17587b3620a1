"""Optuna studies: the best static store config for a workload, and the best agent hyperparameters.

A study lives in an Optuna RDB storage (SQLite under the run directory by default, PostgreSQL or any
SQLAlchemy URL for many machines) and resumes where it stopped: running the same command again adds
trials to it. ``workers`` processes share one study, each running its share of the trials; on several
machines, run the same command with the same PostgreSQL URL on each.

- **static**: each trial replays the workload with one :class:`store.StoreConfig`, held for the whole
  episode, drawn from the action space's knobs and ranges (:data:`env.actions.DEFAULT_ACTION_KNOBS`;
  log scale where the knob's spec says so, categorical for choices). The objective, maximised, is the
  environment's reward summed over the episode's windows; after each window the sum so far is reported
  and a median pruner (:class:`LatestValueMedianPruner`) stops trials whose sum trails the other
  trials' sums at the same window. The best trial is exported as a ``static`` policy file.
- **agent**: each trial is a short :func:`agents.training.train` run with sampled PPO/SAC
  hyperparameters; its evaluations against ``default`` are the intermediate values (a learning curve,
  pruned by :class:`optuna.pruners.MedianPruner`), the last one the objective.

A new study's first trial is the baseline (StoreConfig's or TrainConfig's defaults, where they lie in
the search space), so the best trial is never worse than the defaults on the study's seed.

Every study is one MLflow parent run (resumed with the study) and every trial a run nested under it,
including trials of worker processes, which attach through the ``mlflow.parentRunId`` tag.

Guarantees: the search space is validated before any storage is touched; a storage that cannot be
opened raises :class:`StorageUnavailableError`; a study whose stored search space or trial setup differs
from the requested one raises ``ValueError`` before any trial is created.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import multiprocessing
import shutil
import socket
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import mlflow
import numpy as np
import optuna
import sqlalchemy.exc
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial, TrialState

from agents.policies import StaticPolicy
from agents.tracking import ensure_experiment, flatten, log_metrics, tracked_run
from env import EnvConfig, KVCacheTuningEnv, step_info
from env.actions import ActionMapper, select_knobs
from store import StoreConfig

if TYPE_CHECKING:  # agents.training imports Stable-Baselines3: static-study workers start faster without it
    from agents.training import TrainConfig

logger = logging.getLogger(__name__)

STUDY_EXPERIMENT = "kvtune-study"
OPTUNA_DB = "optuna.db"
BEST_STATIC_FILE = "best_static.json"
BEST_POLICY_DIR = "best_policy"
BEST_TRIAL_FILE = "best_trial.json"
TRIALS_FILE = "trials.csv"
ATTR_KIND = "kvtune.kind"
ATTR_SPACE = "kvtune.search_space"
ATTR_SETUP = "kvtune.trial_setup"
ATTR_UID = "kvtune.uid"
DERIVED_KNOBS = {"level0_stop_writes_trigger": "level0_slowdown_writes_trigger"}
"""Knobs the study derives from another (RocksDB needs slowdown <= stop), so a space may not search them."""
AGENT_ALGORITHMS = ("ppo", "sac")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class StorageUnavailableError(ValueError):
    """The Optuna storage URL cannot be opened (unreachable server, missing driver or directory)."""


# ---------------------------------------------------------------------------------------------- spaces


@dataclass(frozen=True)
class ParamRange:
    """One searched parameter: a numeric range (``log`` for log-scale knobs) or a set of choices."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if not self.choices and not (self.low is not None and self.high is not None and self.low < self.high):
            raise ValueError(f"parameter {self.name} needs low < high, or choices; got {self}")

    @property
    def bounds(self) -> tuple[float, float]:
        return float(self.low or 0.0), float(self.high or 0.0)

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.choices:
            return trial.suggest_categorical(self.name, list(self.choices))
        low, high = self.bounds
        if self.integer:
            return trial.suggest_int(self.name, int(low), int(high), log=self.log)
        return trial.suggest_float(self.name, low, high, log=self.log)

    def contains(self, value: Any) -> bool:
        if self.choices:
            return any(value == choice and type(value) is type(choice) for choice in self.choices)
        low, high = self.bounds
        return isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high

    def describe(self) -> dict[str, Any]:
        if self.choices:
            return {"name": self.name, "choices": list(self.choices)}
        return {
            "name": self.name,
            "low": self.low,
            "high": self.high,
            "log": self.log,
            "integer": self.integer,
        }


@dataclass(frozen=True)
class SearchSpace:
    params: tuple[ParamRange, ...]

    @property
    def names(self) -> list[str]:
        return [param.name for param in self.params]

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        return {param.name: param.suggest(trial) for param in self.params}

    def within(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The entries of ``values`` that name a searched parameter and lie inside its range."""
        return {
            p.name: values[p.name] for p in self.params if p.name in values and p.contains(values[p.name])
        }

    def fingerprint(self) -> str:
        return json.dumps([param.describe() for param in self.params], sort_keys=True)


def load_space_file(path: str | Path) -> dict[str, Any]:
    """A YAML (or JSON) search-space override: ``knob: {low: L, high: H}`` or ``knob: {choices: [...]}``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"search space file {path} does not exist; write a YAML map of knob: {{low, high}}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"search space file {path} is not valid YAML: {error}") from error
    if not isinstance(data, dict) or not data:
        raise ValueError(f"search space file {path} must map knob names to {{low, high}} or {{choices}}")
    return data


def _override_range(name: str, entry: Any, source: str) -> ParamRange:
    specs = StoreConfig.specs()
    if name not in specs:
        raise ValueError(f"{source}: unknown knob {name!r}; valid knobs: {', '.join(specs)}")
    if name in DERIVED_KNOBS:
        raise ValueError(
            f"{source}: knob {name} is derived from {DERIVED_KNOBS[name]} (1.5x it, at least its "
            f"default); search {DERIVED_KNOBS[name]} instead"
        )
    spec = specs[name]
    if not isinstance(entry, Mapping) or set(entry) not in ({"low", "high"}, {"choices"}):
        raise ValueError(
            f"{source}: knob {name} needs {{low: L, high: H}} or {{choices: [...]}}, got {entry!r}"
        )
    try:
        if "choices" in entry:
            if not isinstance(entry["choices"], list) or not entry["choices"]:
                raise ValueError(f"knob {name} needs a non-empty list of choices, got {entry['choices']!r}")
            return ParamRange(name, choices=tuple(dict.fromkeys(spec.check(c) for c in entry["choices"])))
        if spec.choices:
            raise ValueError(f"knob {name} takes {spec.valid_range()}: give {{choices: [...]}}, not low/high")
        low, high = spec.check(entry["low"]), spec.check(entry["high"])
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from error
    if not low < high:
        raise ValueError(
            f"{source}: knob {name} needs low < high inside {spec.valid_range()}, "
            f"got low={low!r}, high={high!r}"
        )
    return ParamRange(name, low, high, log=spec.scale == "log", integer=spec.kind is int)


def static_search_space(
    action_knobs: tuple[str, ...] = (),
    overrides: Mapping[str, Any] | None = None,
    source: str = "search space",
) -> SearchSpace:
    """The action space's knobs over their action ranges; ``overrides`` replace or add knobs.

    Each override is validated against :meth:`store.StoreConfig.specs`: an unknown knob, a range outside
    the knob's valid range or a choice it does not accept raises ``ValueError`` naming the knob.
    """
    params: dict[str, ParamRange] = {}
    for knob in ActionMapper(select_knobs(action_knobs)).knobs:
        spec = knob.spec()
        if spec.choices:
            params[knob.name] = ParamRange(knob.name, choices=spec.choices)
        else:
            low, high = knob.bounds()
            number = int if spec.kind is int else float
            params[knob.name] = ParamRange(
                knob.name, number(low), number(high), log=spec.scale == "log", integer=spec.kind is int
            )
    for name, entry in (overrides or {}).items():
        params[name] = _override_range(name, entry, source)
    return SearchSpace(tuple(params.values()))


def static_config(params: Mapping[str, Any]) -> StoreConfig:
    """The store config of a static trial: its knobs over the defaults, derived knobs made consistent."""
    return ActionMapper(()).consistent(dict(params))


def agent_search_space(algo: str) -> SearchSpace:
    """PPO: learning rate, discount, rollout length, minibatch; SAC: the same with replay batch size and
    learning starts (``n_steps``). Minibatches divide every rollout length, so no batch is truncated."""
    if algo not in AGENT_ALGORITHMS:
        raise ValueError(f"agent studies tune {', '.join(AGENT_ALGORITHMS)}; got --algo {algo!r}")
    common = (ParamRange("learning_rate", 1e-5, 1e-2, log=True), ParamRange("gamma", 0.8, 0.999))
    if algo == "ppo":
        return SearchSpace(
            (*common, ParamRange("n_steps", choices=(16, 32, 64)), ParamRange("batch_size", choices=(8, 16)))
        )
    return SearchSpace(
        (
            *common,
            ParamRange("n_steps", choices=(16, 32, 64)),
            ParamRange("batch_size", choices=(16, 32, 64, 128)),
        )
    )


# ---------------------------------------------------------------------------------------------- pruning


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


# ---------------------------------------------------------------------------------------------- objectives


@dataclass(frozen=True)
class TrialOutcome:
    value: float
    pruned: bool
    attrs: dict[str, Any] = field(default_factory=dict)
    """Recorded as trial user attrs and final MLflow metrics (numbers only there)."""


def _json_ready(value: Any) -> Any:
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
        config = static_config(params)
        env = KVCacheTuningEnv(self.env)
        total, ttfts, hit_tokens, prompt_tokens, windows, pruned = 0.0, [], 0.0, 0.0, 0, False
        try:
            env.reset(seed=self.workload_seed)
            terminated = False
            while not terminated:
                _, reward, terminated, _, info = env.step_config(config)
                total += reward
                step = step_info(info)
                ttfts.extend(step.ttft_s)
                hit_tokens += step.hit_tokens
                prompt_tokens += step.prompt_tokens
                log_metrics(
                    {**step.metrics(), "reward": reward, "objective": total}, step=windows, prefix="window/"
                )
                trial.report(total, windows)
                windows += 1
                if not terminated and trial.should_prune():
                    pruned = True
                    break
        finally:
            env.close()
        return TrialOutcome(
            total,
            pruned,
            {
                "windows": windows,
                "mean_ttft_s": float(np.mean(ttfts)) if ttfts else 0.0,
                "hit_token_ratio": hit_tokens / prompt_tokens if prompt_tokens else 0.0,
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
        rows: list[dict[str, float]] = []
        pruned = False

        def on_evaluation(timesteps: int, row: dict[str, float]) -> bool:
            nonlocal pruned
            trial.report(row["eval/agent_reward"], len(rows))
            rows.append(row)
            pruned = trial.should_prune()
            return not pruned

        bundle = train(config, run_dir, progress_bar=False, on_evaluation=on_evaluation)
        shutil.rmtree(run_dir / "envs", ignore_errors=True)  # the trial's store directories
        if not rows:
            raise RuntimeError(f"trial {trial.number} trained without an evaluation; lower eval_every")
        last = rows[-1]
        return TrialOutcome(
            last["eval/agent_reward"],
            pruned,
            {
                "evaluations": len(rows),
                "default_reward": last["eval/default_reward"],
                "mean_ttft_s": last["eval/agent_mean_ttft_s"],
                "hit_token_ratio": last["eval/agent_hit_token_ratio"],
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


# ---------------------------------------------------------------------------------------------- storage


def default_storage(out: str | Path) -> str:
    path = Path(out).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / OPTUNA_DB}"


def redact(url: str) -> str:
    """``url`` with any password hidden, for messages and logs."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage, or :class:`StorageUnavailableError` saying what is wrong with ``url``."""
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": 60}  # worker processes wait for each other's writes
    elif url.startswith("postgresql"):
        engine_kwargs.update(connect_args={"connect_timeout": 10}, pool_pre_ping=True)
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except sqlalchemy.exc.OperationalError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        raise StorageUnavailableError(
            f"cannot open study storage {redact(url)}: {reason}. Check that the database server is running "
            "and reachable (host, port, user, database exist), or that a SQLite file's directory exists"
        ) from error
    except (sqlalchemy.exc.ArgumentError, ImportError) as error:
        raise StorageUnavailableError(
            f"cannot use study storage {redact(url)} ({error}); give a SQLAlchemy URL such as "
            "sqlite:///PATH/optuna.db or postgresql+psycopg2://USER@HOST:5432/DB with its driver installed"
        ) from error


def _differences(stored: Any, requested: str) -> str:
    """What differs between a stored and a requested study attr (JSON of a mapping or a space)."""
    if not isinstance(stored, str):
        return f"stored {stored!r}, requested {requested}"
    try:
        old, new = json.loads(stored), json.loads(requested)
    except json.JSONDecodeError:
        return f"stored {stored!r}, requested {requested!r}"
    if isinstance(old, list) and isinstance(new, list):  # search spaces, by parameter
        old, new = {p["name"]: p for p in old}, {p["name"]: p for p in new}
    if not isinstance(old, dict) or not isinstance(new, dict):
        return f"stored {old!r}, requested {new!r}"
    old, new = flatten(old), flatten(new)
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    return "; ".join(
        f"{k}: stored {old.get(k, '(absent)')}, requested {new.get(k, '(absent)')}" for k in keys
    )


def _check_attrs(study: optuna.Study, expected: dict[str, str], url: str) -> None:
    stored = study.user_attrs
    for key, what, fix in (
        (ATTR_KIND, "kind of study", "run the matching `kvtune study` command"),
        (ATTR_SPACE, "search space", "pass the same --space (and action knobs)"),
        (ATTR_SETUP, "trial setup (workload, env, seed or training settings)", "pass the same options"),
    ):
        if stored.get(key) != expected[key]:
            raise ValueError(
                f"study {study.study_name!r} in {redact(url)} was created with another {what} "
                f"({_differences(stored.get(key), expected[key])}); {fix} to resume it, "
                "or choose a new --study-name"
            )


def prepare_study(objective: StudyObjective, name: str, url: str) -> tuple[optuna.Study, str]:
    """Create the study, or load it and check it was created for the same objective; its uid.

    A new study records its kind, search space and trial setup as user attrs and gets the baseline
    enqueued. An existing one must match them, else ``ValueError`` before anything is written.
    """
    storage = open_storage(url)
    expected = {
        ATTR_KIND: objective.kind,
        ATTR_SPACE: objective.space.fingerprint(),
        ATTR_SETUP: json.dumps(_json_ready(objective.setup()), sort_keys=True),
    }
    try:
        storage.get_study_id_from_name(name)
        exists = True
    except KeyError:
        exists = False
    if exists:
        study = optuna.load_study(study_name=name, storage=storage)
        foreign = study.trials or study.directions != [optuna.study.StudyDirection.MAXIMIZE]
        if ATTR_UID not in study.user_attrs and foreign:
            raise ValueError(
                f"study {name!r} in {redact(url)} was not created by kvtune (it has trials or another "
                "direction, and no kvtune attributes); choose a new --study-name"
            )
    else:
        study = optuna.create_study(
            study_name=name, storage=storage, direction="maximize", load_if_exists=True
        )
    if ATTR_UID in study.user_attrs:
        _check_attrs(study, expected, url)
        return study, str(study.user_attrs[ATTR_UID])
    uid = uuid.uuid4().hex
    for key, value in {**expected, ATTR_UID: uid}.items():
        study.set_user_attr(key, value)
    baseline = objective.baseline()
    if baseline:
        study.enqueue_trial(baseline, user_attrs={"baseline": True})
    logger.info("created study %s in %s (baseline trial: %s)", name, redact(url), baseline)
    return study, uid


# ---------------------------------------------------------------------------------------------- workers


@dataclass(frozen=True)
class StudyOptions:
    """How to run a study: where it is stored, how many trials this call adds, in how many processes."""

    study_name: str
    storage: str
    n_trials: int
    out: Path
    tracking_uri: str
    workers: int = 1
    timeout_s: float | None = None
    startup_trials: int = 5
    warmup_steps: int = 2

    def __post_init__(self) -> None:
        if not self.study_name:
            raise ValueError("--study-name must not be empty")
        for name, least in (("n_trials", 1), ("workers", 1), ("startup_trials", 0), ("warmup_steps", 0)):
            if getattr(self, name) < least:
                raise ValueError(f"{name} must be >= {least}, got {getattr(self, name)}")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {self.timeout_s}")

    def shares(self) -> list[int]:
        """Trials per worker: ``n_trials`` split as evenly as possible, workers without one dropped."""
        base, extra = divmod(self.n_trials, self.workers)
        return [base + (index < extra) for index in range(self.workers) if base + (index < extra)]


@dataclass(frozen=True)
class WorkerTask:
    objective: StudyObjective
    options: StudyOptions
    parent_run_id: str
    study_uid: str
    worker_id: str
    trials: int
    sampler_seed: int
    deadline: float | None
    log_level: int = logging.INFO


def _run_trial(trial: optuna.Trial, task: WorkerTask) -> float:
    objective, options = task.objective, task.options
    params = objective.space.suggest(trial)
    trial.set_user_attr("worker", task.worker_id)
    trial.set_user_attr("host", socket.gethostname())
    tags = {
        "mlflow.parentRunId": task.parent_run_id,
        "kvtune_study_uid": task.study_uid,
        "optuna_trial_number": str(trial.number),
        "kvtune_worker": task.worker_id,
    }
    with tracked_run(
        STUDY_EXPERIMENT,
        f"{options.study_name}-trial-{trial.number}",
        options.tracking_uri,
        params,
        artifact_root=options.out / "artifacts",
        nested=True,
        tags=tags,
    ) as run:
        trial.set_user_attr("mlflow_run_id", run.info.run_id)
        outcome = objective.evaluate(trial, params, options.out)
        numbers = {k: v for k, v in outcome.attrs.items() if isinstance(v, int | float)}
        log_metrics({**numbers, "objective": outcome.value}, step=0, prefix="trial/")
        mlflow.set_tag("optuna_state", "PRUNED" if outcome.pruned else "COMPLETE")
    for key, value in outcome.attrs.items():
        trial.set_user_attr(key, value)
    if outcome.pruned:
        raise optuna.TrialPruned(f"trial {trial.number} trailed the median at {outcome.value:.4f}")
    return outcome.value


def run_worker(task: WorkerTask) -> None:
    """Run ``task.trials`` trials of the study (fewer if its deadline passes) in this process."""
    options = task.options
    study = optuna.load_study(
        study_name=options.study_name,
        storage=open_storage(options.storage),
        sampler=optuna.samplers.TPESampler(seed=task.sampler_seed),
        pruner=task.objective.pruner(options.startup_trials, options.warmup_steps),
    )
    timeout = None if task.deadline is None else max(task.deadline - time.time(), 0.0)
    logger.info("worker %s: %d trial(s) of study %s", task.worker_id, task.trials, options.study_name)
    study.optimize(lambda trial: _run_trial(trial, task), n_trials=task.trials, timeout=timeout)


def _worker_main(task: WorkerTask) -> None:
    """Entry point of a spawned worker process."""
    logging.basicConfig(
        level=task.log_level, format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"
    )
    run_worker(task)


def _run_processes(tasks: list[WorkerTask]) -> None:
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker_main, args=(task,), name=task.worker_id) for task in tasks]
    try:
        for process in processes:
            process.start()
        for process in processes:
            process.join()
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join()
    failed = [f"{p.name} (exit code {p.exitcode})" for p in processes if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"study worker(s) {', '.join(failed)} failed; their errors are logged above")


# ---------------------------------------------------------------------------------------------- studies


@dataclass(frozen=True)
class StudyResult:
    study_name: str
    storage: str
    """The storage URL, password hidden."""
    trials_run: int
    """Trials this call finished (complete, pruned or failed)."""
    elapsed_s: float
    states: dict[str, int]
    """Trials of the whole study by state."""
    best_number: int | None
    best_value: float | None
    best_params: dict[str, Any]
    best_attrs: dict[str, Any]
    exported: Path | None
    parent_run_id: str

    @property
    def trials_per_minute(self) -> float:
        return self.trials_run / (self.elapsed_s / 60.0) if self.elapsed_s > 0 else 0.0


@contextmanager
def _parent_run(objective: StudyObjective, options: StudyOptions, uid: str) -> Iterator[str]:
    """The study's MLflow run: the one tagged with its uid if the tracking store has it, else a new one."""
    artifact_root = options.out / "artifacts"
    experiment_id = ensure_experiment(STUDY_EXPERIMENT, options.tracking_uri, artifact_root)
    client = MlflowClient(tracking_uri=options.tracking_uri)
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.kvtune_study_uid = '{uid}' and tags.kvtune_role = 'study'",
        max_results=1,
    )
    if found:
        mlflow.set_tracking_uri(options.tracking_uri)
        with mlflow.start_run(run_id=found[0].info.run_id) as run:
            logger.info("resuming MLflow run %s of study %s", run.info.run_id, options.study_name)
            yield run.info.run_id
        return
    params = {
        "study_name": options.study_name,
        "storage": redact(options.storage),
        "kind": objective.kind,
        "search_space": objective.space.fingerprint(),
        "setup": _json_ready(objective.setup()),
    }
    tags = {"kvtune_role": "study", "kvtune_study_uid": uid}
    with tracked_run(
        STUDY_EXPERIMENT,
        f"study-{options.study_name}",
        options.tracking_uri,
        params,
        artifact_root=artifact_root,
        tags=tags,
    ) as run:
        yield run.info.run_id


def _sampler_seed(seed: int, existing: int, index: int) -> int:
    """Distinct per worker and per call (so a resumed study does not replay its first random trials)."""
    return int(np.random.SeedSequence([seed, existing, index]).generate_state(1)[0])


def _finish(
    study: optuna.Study,
    objective: StudyObjective,
    options: StudyOptions,
    *,
    launch: str,
    elapsed: float,
    parent_run_id: str,
) -> StudyResult:
    trials = study.get_trials(deepcopy=False)
    ours = [
        t for t in trials if str(t.user_attrs.get("worker", "")).startswith(launch) and t.state in FINISHED
    ]
    states = {state.name: sum(t.state == state for t in trials) for state in TrialState}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = study.best_trial if complete else None
    options.out.mkdir(parents=True, exist_ok=True)
    study.trials_dataframe().to_csv(options.out / TRIALS_FILE, index=False)
    exported = None
    if best is None:
        logger.warning("study %s has no completed trial yet: nothing to export", options.study_name)
    else:
        exported = objective.export_best(best, options.out)
        summary = {
            "study": options.study_name,
            "trial": best.number,
            "value": best.value,
            "params": best.params,
            "user_attrs": best.user_attrs,
        }
        (options.out / BEST_TRIAL_FILE).write_text(json.dumps(summary, indent=2, default=str) + "\n")
        mlflow.log_artifact(str(options.out / BEST_TRIAL_FILE))
        if exported is not None:
            if exported.is_dir():
                mlflow.log_artifacts(str(exported), artifact_path=exported.name)
            else:
                mlflow.log_artifact(str(exported))
    result = StudyResult(
        study_name=options.study_name,
        storage=redact(options.storage),
        trials_run=len(ours),
        elapsed_s=elapsed,
        states={name: count for name, count in states.items() if count},
        best_number=best.number if best else None,
        best_value=best.value if best else None,
        best_params=dict(best.params) if best else {},
        best_attrs=dict(best.user_attrs) if best else {},
        exported=exported,
        parent_run_id=parent_run_id,
    )
    metrics: dict[str, float] = {f"study/{name.lower()}": count for name, count in states.items()}
    metrics.update(
        {"study/trials_run": result.trials_run, "study/trials_per_minute": result.trials_per_minute}
    )
    if result.best_value is not None:
        metrics["study/best_value"] = result.best_value
    log_metrics(metrics, step=len(trials))
    mlflow.log_artifact(str(options.out / TRIALS_FILE))
    return result


def run_study(objective: StudyObjective, options: StudyOptions) -> StudyResult:
    """Add ``options.n_trials`` trials to the study (creating it if new) and export its best trial."""
    study, uid = prepare_study(objective, options.study_name, options.storage)
    existing = len(study.trials)
    if options.workers > 1 and options.storage.startswith("sqlite"):
        logger.info(
            "%d workers on SQLite take turns writing; use PostgreSQL for many workers or machines",
            options.workers,
        )
    launch = f"{socket.gethostname()}/{uuid.uuid4().hex[:8]}"
    deadline = None if options.timeout_s is None else time.time() + options.timeout_s
    with _parent_run(objective, options, uid) as parent_run_id:
        tasks = [
            WorkerTask(
                objective,
                options,
                parent_run_id,
                uid,
                f"{launch}/w{index}",
                trials,
                _sampler_seed(objective.seed, existing, index),
                deadline,
                logging.getLogger().level,
            )
            for index, trials in enumerate(options.shares())
        ]
        started = time.monotonic()
        if len(tasks) == 1:
            run_worker(tasks[0])
        else:
            _run_processes(tasks)
        elapsed = time.monotonic() - started
        result = _finish(
            study, objective, options, launch=launch, elapsed=elapsed, parent_run_id=parent_run_id
        )
    logger.info(
        "study %s: %d trial(s) in %.1f s (%.2f per minute); best trial %s = %s",
        options.study_name,
        result.trials_run,
        elapsed,
        result.trials_per_minute,
        result.best_number,
        result.best_value,
    )
    return result
