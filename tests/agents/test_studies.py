"""Optuna studies: search space, export, pruning, resume, MLflow nesting, bad input, many workers."""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from typer.testing import CliRunner

from agents.policies import StaticPolicy
from agents.registry import make_policy
from agents.studies import (
    ATTR_SPACE,
    BEST_POLICY_DIR,
    BEST_STATIC_FILE,
    STUDY_EXPERIMENT,
    AgentObjective,
    LatestValueMedianPruner,
    ParamRange,
    SearchSpace,
    StaticObjective,
    StorageUnavailableError,
    StudyOptions,
    agent_search_space,
    default_storage,
    open_storage,
    prepare_study,
    run_study,
    static_config,
    static_search_space,
)
from agents.tracking import default_tracking_uri
from agents.training import TrainConfig
from env import DEFAULT_ACTION_KNOBS, EnvConfig
from experiments.cli import app
from store import StoreConfig

TINY = EnvConfig(workload_options={"phase_requests": 4, "targets": (0.1, 0.5)}, requests_per_window=2)
"""Eight requests in four windows: about half a second per trial."""
BUDGETED = dataclasses.replace(TINY, memory_tier_bytes=0, budget_bytes=200_000)
"""Every page on disk under a tight budget: knobs move the reward a lot."""
WAL_ON = {"disable_wal": False}
BAD = {
    "enable_blob_garbage_collection": True,
    "blob_garbage_collection_age_cutoff": 1.0,
    "disable_wal": False,
}
"""Blob GC over every blob file, rewriting live pages under the budget. Which config trails on BUDGETED
depends on the run (with the WAL off the budget now flushes the memtables, and the three configs' totals
came within noise of each other on the shared machine), so the test checks the pruner's rule on the
totals recorded, not a fixed ranking."""


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One MLflow database for the module: creating its tables takes seconds."""
    return default_tracking_uri(tmp_path_factory.mktemp("mlflow"))


def _options(
    out: Path, tracking_uri: str, n_trials: int, storage: str | None = None, **changes
) -> StudyOptions:
    return StudyOptions(
        study_name=changes.pop("study_name", f"study-{uuid.uuid4().hex[:8]}"),
        storage=storage or default_storage(out),
        n_trials=n_trials,
        out=out,
        tracking_uri=tracking_uri,
        **changes,
    )


def _static(env: EnvConfig = TINY, overrides: dict | None = None) -> StaticObjective:
    return StaticObjective(env, static_search_space(overrides=overrides), workload_seed=0)


def _load(options: StudyOptions) -> optuna.Study:
    return optuna.load_study(study_name=options.study_name, storage=options.storage)


# ------------------------------------------------------------------------------------------ search space


def test_static_space_is_the_action_space() -> None:
    space = static_search_space()
    assert space.names == [knob.name for knob in DEFAULT_ACTION_KNOBS]
    for param, knob in zip(space.params, DEFAULT_ACTION_KNOBS, strict=True):
        spec = knob.spec()
        if spec.choices:
            assert param.choices == knob.choices()
        else:
            assert (param.low, param.high) == knob.bounds()
            assert param.log == (spec.scale == "log")
            assert param.integer == (spec.kind is int)
    assert space.params[0].describe() == {
        "name": "write_buffer_size",
        "low": 2**20,
        "high": 256 * 2**20,
        "log": True,
        "integer": True,
    }


def test_space_override_replaces_and_adds_knobs() -> None:
    space = static_search_space(
        overrides={
            "writer_batch_size": {"low": 4, "high": 64},
            "target_file_size_base": {"low": 2**20, "high": 2**26},
            "eviction_order": {"choices": ["fifo"]},
        }
    )
    by_name = {p.name: p for p in space.params}
    assert (by_name["writer_batch_size"].low, by_name["writer_batch_size"].high) == (4, 64)
    assert by_name["target_file_size_base"].log and by_name["target_file_size_base"].integer
    assert by_name["eviction_order"].choices == ("fifo",)
    assert space.names[-1] == "target_file_size_base"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"write_bufer_size": {"low": 1, "high": 2}},
            r"unknown knob 'write_bufer_size'; valid knobs: write_buffer_size",
        ),
        (
            {"write_buffer_size": {"low": 1024, "high": 2**20}},
            r"write_buffer_size=1024 is out of range: valid range is \[1048576, 1073741824\]",
        ),
        (
            {"writer_batch_size": {"low": 8, "high": 4096}},
            r"writer_batch_size=4096 is out of range.*\[1, 1024\]",
        ),
        ({"writer_batch_size": {"low": 64, "high": 8}}, r"writer_batch_size needs low < high"),
        (
            {"eviction_order": {"choices": ["lru", "random"]}},
            r"eviction_order='random' is invalid.*'lru', 'fifo'",
        ),
        (
            {"eviction_order": {"low": 0, "high": 1}},
            r"eviction_order takes one of 'lru', 'fifo': give \{choices",
        ),
        ({"writer_batch_size": {"low": 8}}, r"writer_batch_size needs \{low: L, high: H\} or \{choices"),
        (
            {"level0_stop_writes_trigger": {"low": 8, "high": 64}},
            r"derived from level0_slowdown_writes_trigger",
        ),
    ],
)
def test_bad_space_override_names_the_knob_and_its_range(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        static_search_space(overrides=overrides, source="space.yaml")


def test_cli_rejects_a_bad_space_file_before_touching_storage(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("writer_queue_depth: {low: 0, high: 64}\n")
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        ["study", "static", "--n-trials", "2", "--study-name", "s", "--out", str(out), "--space", str(space)],
    )
    assert result.exit_code == 2
    assert "writer_queue_depth=0 is out of range" in " ".join(result.output.split())
    assert not (out / "optuna.db").exists()


def test_agent_space_and_objective_checks() -> None:
    assert agent_search_space("ppo").names == ["learning_rate", "gamma", "n_steps", "batch_size"]
    with pytest.raises(ValueError, match="agent studies tune ppo, sac; got --algo 'dqn'"):
        agent_search_space("dqn")
    with pytest.raises(ValueError, match=r"eval_every \(64\) must be <= timesteps \(32\)"):
        AgentObjective(TrainConfig(timesteps=32, eval_every=64), agent_search_space("ppo"))


# ------------------------------------------------------------------------------------------ storage errors


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "postgresql+psycopg2://postgres:secret@127.0.0.1:1/kvtune",
            r"cannot open study storage postgresql\+psycopg2://postgres:\*\*\*@127\.0\.0\.1:1/kvtune: "
            r".*refused.*running",
        ),
        (
            "sqlite:////nonexistent-kvtune-dir/optuna.db",
            r"unable to open database file.*SQLite file's directory exists",
        ),
        ("nosuchdb://host/db", r"cannot use study storage nosuchdb://host/db .*give a SQLAlchemy URL"),
    ],
)
def test_unreachable_storage_is_a_clear_error(url: str, message: str) -> None:
    with pytest.raises(StorageUnavailableError, match=message):
        open_storage(url)


def test_study_name_clash_with_another_space_writes_nothing(tmp_path: Path, tracking_uri: str) -> None:
    options = _options(tmp_path, tracking_uri, n_trials=1)
    prepare_study(_static(), options.study_name, options.storage)
    before = _load(options)
    narrower = _static(overrides={"writer_batch_size": {"low": 4, "high": 64}})
    with pytest.raises(
        ValueError, match=r"another search space \(writer_batch_size\.high: stored 256, requested 64;"
    ):
        run_study(narrower, options)
    with pytest.raises(
        ValueError, match=r"another trial setup .*env\.workload_options\.phase_requests: stored 4"
    ):
        run_study(_static(dataclasses.replace(TINY, workload_options={"phase_requests": 8})), options)
    with pytest.raises(ValueError, match="another kind of study"):
        prepare_study(
            AgentObjective(TrainConfig(env=TINY), agent_search_space("ppo")),
            options.study_name,
            options.storage,
        )
    after = _load(options)
    assert after.user_attrs == before.user_attrs
    assert [t.state for t in after.trials] == [TrialState.WAITING]  # only the enqueued baseline
    assert not (tmp_path / BEST_STATIC_FILE).exists()


# ------------------------------------------------------------------------------------------ static studies


def test_static_study_exports_best_resumes_and_nests_mlflow_runs(tmp_path: Path, tracking_uri: str) -> None:
    objective = _static()
    options = _options(tmp_path, tracking_uri, n_trials=2)
    first = run_study(objective, options)
    study = _load(options)
    assert [t.number for t in study.trials] == [0, 1]
    assert first.trials_run == 2 and first.trials_per_minute > 0
    baseline = study.trials[0]
    assert baseline.user_attrs["baseline"] is True
    assert static_config(baseline.params) == StoreConfig()
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value or 0.0)
    assert first.best_value == best.value == study.best_value
    policy = make_policy(f"static:{tmp_path / BEST_STATIC_FILE}")
    assert isinstance(policy, StaticPolicy)
    assert policy.config == static_config(study.best_trial.params)
    assert {k: getattr(policy.config, k) for k in study.best_trial.params} == study.best_trial.params
    assert json.loads((tmp_path / BEST_STATIC_FILE).read_text())["policy"] == "static"

    second = run_study(objective, dataclasses.replace(options, n_trials=2))
    study = _load(options)
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert second.trials_run == 2 and second.states == {"COMPLETE": 4}
    assert second.parent_run_id == first.parent_run_id  # one MLflow parent run per study, resumed

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(STUDY_EXPERIMENT)
    assert experiment is not None
    nested = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{first.parent_run_id}'"
    )
    assert sorted(int(run.data.tags["optuna_trial_number"]) for run in nested) == [0, 1, 2, 3]
    assert {run.info.run_id for run in nested} == {t.user_attrs["mlflow_run_id"] for t in study.trials}
    by_trial = {run.data.tags["optuna_trial_number"]: run for run in nested}
    assert by_trial["0"].data.params["write_buffer_size"] == str(StoreConfig().write_buffer_size)
    assert by_trial["0"].data.metrics["trial/objective"] == pytest.approx(study.trials[0].value)
    parent = client.get_run(first.parent_run_id)
    assert parent.data.params["study_name"] == options.study_name
    assert parent.data.metrics["study/complete"] == 4


def test_median_pruner_stops_a_trial_behind_the_median(tmp_path: Path, tracking_uri: str) -> None:
    objective = _static(BUDGETED)
    options = _options(tmp_path, tracking_uri, n_trials=3, startup_trials=2, warmup_steps=1)
    study, _ = prepare_study(objective, options.study_name, options.storage)  # enqueues the defaults: trial 0
    for changes in (WAL_ON, BAD):  # every other knob at its default
        study.enqueue_trial(objective.space.within({**StoreConfig().to_dict(), **changes}))
    result = run_study(objective, options)
    first, second, last = _load(options).trials
    assert (first.state, second.state) == (TrialState.COMPLETE, TrialState.COMPLETE)
    assert last.params["enable_blob_garbage_collection"] is True
    # Optuna's rule: after the warm-up step, stop at the first step where the trial's best running total so
    # far is below the median (of two: the mean) of the completed trials' totals at that step
    totals = sorted(last.intermediate_values.items())
    behind = [
        step
        for step, _ in totals
        if step >= 1
        and max(total for at, total in totals if at <= step)
        < (first.intermediate_values[step] + second.intermediate_values[step]) / 2
    ]
    if behind:
        assert last.state == TrialState.PRUNED and max(last.intermediate_values) == behind[0]
        assert behind[0] < len(first.intermediate_values) - 1  # stopped early
    else:
        assert last.state == TrialState.COMPLETE
    complete = [t for t in (first, second, last) if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value)
    assert result.best_number == best.number
    assert result.states == {"COMPLETE": len(complete)} | ({"PRUNED": 1} if behind else {})
    exported = StaticPolicy.load(tmp_path / BEST_STATIC_FILE).config
    assert exported.disable_wal is best.params["disable_wal"]


# ------------------------------------------------------------------------------------------ many workers


def _postgres_url() -> str:
    url = os.environ.get("KVTUNE_TEST_POSTGRES_URL")
    if url:
        return url
    if os.environ.get("CI") == "true":
        pytest.fail(
            "CI=true but KVTUNE_TEST_POSTGRES_URL is unset: .ci/run must start PostgreSQL and export it"
        )
    pytest.skip("KVTUNE_TEST_POSTGRES_URL is unset; .ci/run sets it (a PostgreSQL server on 127.0.0.1)")


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_two_worker_processes_share_one_study(backend: str, tmp_path: Path, tracking_uri: str) -> None:
    storage = _postgres_url() if backend == "postgresql" else None
    options = _options(tmp_path, tracking_uri, n_trials=4, storage=storage, workers=2)
    result = run_study(_static(), options)
    trials = _load(options).trials
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(4)) and len(set(numbers)) == 4
    workers = [t.user_attrs["worker"] for t in trials]
    assert len(set(workers)) == 2 and all(workers.count(w) == 2 for w in set(workers))
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert result.best_value == max(t.value for t in complete if t.value is not None)
    assert StaticPolicy.load(tmp_path / BEST_STATIC_FILE).config == static_config(result.best_params)
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(STUDY_EXPERIMENT)
    assert experiment is not None
    nested = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{result.parent_run_id}'"
    )
    assert sorted(run.data.tags["kvtune_worker"] for run in nested) == sorted(workers)


# ------------------------------------------------------------------------------------------ agent studies


def test_agent_study_trains_reports_and_exports_the_best_bundle(tmp_path: Path, tracking_uri: str) -> None:
    train = TrainConfig(algo="ppo", timesteps=16, n_envs=1, eval_every=8, env=TINY)
    ppo = agent_search_space("ppo")
    space = SearchSpace(
        tuple(ParamRange("n_steps", choices=(16,)) if p.name == "n_steps" else p for p in ppo.params)
    )
    objective = AgentObjective(train, space)  # one 16-step rollout per trial, evaluated twice
    options = _options(tmp_path, tracking_uri, n_trials=2)
    result = run_study(objective, options)
    study = _load(options)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert study.trials[0].params["learning_rate"] == TrainConfig().learning_rate  # the baseline
    for trial in study.trials:
        assert trial.value == trial.intermediate_values[max(trial.intermediate_values)]
        assert trial.user_attrs["evaluations"] == len(trial.intermediate_values) == 2
    assert result.exported == tmp_path / BEST_POLICY_DIR
    assert make_policy(str(result.exported)).name == "learned"
    assert study.user_attrs[ATTR_SPACE] == objective.space.fingerprint()


def test_latest_value_median_pruner_judges_running_totals_by_their_latest_value() -> None:
    study = optuna.create_study(direction="maximize")
    for totals in ([-0.2, -0.5, -0.9], [-0.3, -0.6, -1.0]):
        study.add_trial(
            optuna.trial.create_trial(value=totals[-1], intermediate_values=dict(enumerate(totals)))
        )
    falling = optuna.trial.create_trial(state=TrialState.RUNNING, intermediate_values={0: -0.1, 1: -3.0})
    assert LatestValueMedianPruner(n_startup_trials=2, n_warmup_steps=1).prune(study, falling)
    assert not optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1).prune(study, falling)
    assert falling.intermediate_values == {0: -0.1, 1: -3.0}  # the trial itself is left as it was
