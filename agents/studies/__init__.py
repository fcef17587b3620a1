"""Optuna studies: the best static store config for a workload, and the best agent hyperparameters.

The package: :mod:`~agents.studies.space` (search spaces), :mod:`~agents.studies.objectives` (what a
trial runs, and pruners), :mod:`~agents.studies.storage` (RDB storages, creating or resuming a study),
:mod:`~agents.studies.workers` (trials across processes, MLflow runs, :func:`run_study`).

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

from agents.studies.objectives import (
    BEST_POLICY_DIR,
    BEST_STATIC_FILE,
    AgentObjective,
    LatestValueMedianPruner,
    StaticObjective,
    StudyObjective,
    TrialOutcome,
)
from agents.studies.space import (
    DERIVED_KNOBS,
    ParamRange,
    SearchSpace,
    agent_search_space,
    load_space_file,
    static_config,
    static_search_space,
)
from agents.studies.storage import (
    ATTR_SPACE,
    StorageUnavailableError,
    default_storage,
    open_storage,
    prepare_study,
    redact,
)
from agents.studies.workers import STUDY_EXPERIMENT, StudyOptions, StudyResult, run_study

__all__ = [
    "ATTR_SPACE",
    "BEST_POLICY_DIR",
    "BEST_STATIC_FILE",
    "DERIVED_KNOBS",
    "STUDY_EXPERIMENT",
    "AgentObjective",
    "LatestValueMedianPruner",
    "ParamRange",
    "SearchSpace",
    "StaticObjective",
    "StorageUnavailableError",
    "StudyObjective",
    "StudyOptions",
    "StudyResult",
    "TrialOutcome",
    "agent_search_space",
    "default_storage",
    "load_space_file",
    "open_storage",
    "prepare_study",
    "redact",
    "run_study",
    "static_config",
    "static_search_space",
]
