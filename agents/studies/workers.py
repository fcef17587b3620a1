"""Running a study: trials split across worker processes, one MLflow run per study and per trial."""

from __future__ import annotations

import json
import logging
import multiprocessing
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import optuna
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from agents.studies.objectives import StudyObjective, json_ready
from agents.studies.storage import open_storage, prepare_study, redact
from agents.tracking import ensure_experiment, log_metrics, tracked_run

logger = logging.getLogger(__name__)

STUDY_EXPERIMENT = "kvtune-study"
BEST_TRIAL_FILE = "best_trial.json"
TRIALS_FILE = "trials.csv"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


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
        "setup": json_ready(objective.setup()),
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
