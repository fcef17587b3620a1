"""``kvtune train`` and ``kvtune evaluate`` end to end; their MLflow runs read back through MLflow's API."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from agents.bundle import LearnedPolicy, load_policy_bundle
from agents.training import TrainConfig
from env import EnvConfig, RewardConfig
from experiments.cli import app
from tests.workloads.test_mooncake import LINES, write_trace

TIMESTEPS, EVAL_EVERY = 32, 16


@dataclass(frozen=True)
class Runs:
    train_dir: Path
    eval_dir: Path
    train_client: MlflowClient
    eval_client: MlflowClient
    train_run: Run
    eval_run: Run


def only_run(client: MlflowClient, experiment: str) -> Run:
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment}"
    runs = client.search_runs([found.experiment_id])
    assert len(runs) == 1
    return runs[0]


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, f"{args}: {result.output}\n{result.exception!r}"
    return result.output


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    root = tmp_path_factory.mktemp("cli")
    train_dir, eval_dir = root / "train", root / "eval"
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        invoke(
            "train",
            "--timesteps",
            str(TIMESTEPS),
            "--n-envs",
            "1",
            "--eval-every",
            str(EVAL_EVERY),
            "--out",
            str(train_dir),
        )
        invoke(
            "evaluate",
            "--policy",
            "default",
            "--policy",
            "heuristic",
            "--policy",
            str(train_dir / "policy"),
            "--out",
            str(eval_dir),
        )
    finally:
        mlflow.set_tracking_uri(previous)  # the commands set it process-wide
    train_client = MlflowClient(tracking_uri=f"sqlite:///{train_dir.resolve() / 'mlflow.db'}")
    eval_client = MlflowClient(tracking_uri=f"sqlite:///{eval_dir.resolve() / 'mlflow.db'}")
    yield Runs(
        train_dir,
        eval_dir,
        train_client,
        eval_client,
        only_run(train_client, "kvtune-train"),
        only_run(eval_client, "kvtune-evaluate"),
    )


def artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    return {item.path for item in client.list_artifacts(run_id, path)}


# ---------------------------------------------------------------------------------------- train


def test_train_run_logs_the_full_typed_config(runs: Runs) -> None:
    run = runs.train_run
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "train-ppo-staged"
    params = run.data.params
    assert params["algo"] == "ppo"
    assert params["timesteps"] == str(TIMESTEPS)
    assert params["n_envs"] == "1"
    assert params["eval_every"] == str(EVAL_EVERY)
    assert params["env.workload"] == "staged"
    assert params["env.clock"] == "counters"
    assert params["env.reward.ttft_weight"] == str(RewardConfig().ttft_weight)
    assert params["env.reward.budget_weight"] == str(RewardConfig().budget_weight)
    expected = TrainConfig(timesteps=TIMESTEPS, n_envs=1, eval_every=EVAL_EVERY, env=EnvConfig())
    for field in dataclasses.fields(TrainConfig):
        if field.name != "env":
            assert params[field.name] == str(getattr(expected, field.name)), field.name
    for field in dataclasses.fields(EnvConfig):
        value = getattr(expected.env, field.name)
        if field.name == "reward":
            for reward_field in dataclasses.fields(RewardConfig):
                assert params[f"env.reward.{reward_field.name}"] == str(getattr(value, reward_field.name))
        elif field.name != "workload_options":  # an empty mapping flattens to no params
            assert params[f"env.{field.name}"] == str(value), field.name


def test_train_run_logs_window_metrics_per_step(runs: Runs) -> None:
    run_id = runs.train_run.info.run_id
    history = runs.train_client.get_metric_history(run_id, "window/env0/mean_ttft_s")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(1, TIMESTEPS + 1))
    assert all(m.value > 0 for m in history)
    rewards = runs.train_client.get_metric_history(run_id, "window/env0/reward")
    assert len(rewards) == TIMESTEPS
    ratios = runs.train_client.get_metric_history(run_id, "window/env0/hit_token_ratio")
    assert len({m.step for m in ratios}) == TIMESTEPS
    assert all(0.0 <= m.value <= 1.0 for m in ratios)


def test_train_run_logs_evaluations_against_default(runs: Runs) -> None:
    run_id = runs.train_run.info.run_id
    agent = runs.train_client.get_metric_history(run_id, "eval/agent_reward")
    default = runs.train_client.get_metric_history(run_id, "eval/default_reward")
    assert sorted(m.step for m in agent) == [EVAL_EVERY, 2 * EVAL_EVERY]
    assert sorted(m.step for m in default) == [EVAL_EVERY, 2 * EVAL_EVERY]
    assert len({m.value for m in default}) == 1, "default is evaluated once and logged at every evaluation"
    assert all(m.value != 0.0 for m in agent)
    assert runs.train_run.data.metrics["eval/agent_reward"] == max(agent, key=lambda m: m.step).value
    hit = runs.train_client.get_metric_history(run_id, "eval/agent_hit_token_ratio")
    assert len(hit) == 2 and all(0.0 < m.value <= 1.0 for m in hit)


def test_train_run_stores_the_policy_bundle_as_artifacts(runs: Runs, tmp_path: Path) -> None:
    run_id = runs.train_run.info.run_id
    assert artifact_paths(runs.train_client, run_id, "policy") == {"policy/card.json", "policy/model.zip"}
    assert "evaluations.png" in artifact_paths(runs.train_client, run_id, None)
    downloaded = Path(runs.train_client.download_artifacts(run_id, "policy", str(tmp_path)))
    on_disk = runs.train_dir / "policy"
    assert json.loads((downloaded / "card.json").read_text()) == json.loads(
        (on_disk / "card.json").read_text()
    )
    assert (downloaded / "model.zip").read_bytes() == (on_disk / "model.zip").read_bytes()
    policy = load_policy_bundle(downloaded)
    assert isinstance(policy, LearnedPolicy)
    assert policy.card.algorithm == "ppo"
    assert policy.card.training["timesteps"] == TIMESTEPS
    assert policy.card.training["workload"] == "staged"
    assert sorted(p.name for p in (runs.train_dir / "checkpoints").iterdir()) == [
        f"ppo_{EVAL_EVERY}_steps.zip",
        f"ppo_{2 * EVAL_EVERY}_steps.zip",
    ]


# ---------------------------------------------------------------------------------------- evaluate


def test_evaluate_run_logs_a_table_and_a_plot(runs: Runs) -> None:
    run = runs.eval_run
    assert run.info.status == "FINISHED"
    assert artifact_paths(runs.eval_client, run.info.run_id) >= {
        "evaluation.csv",
        "evaluation.png",
        "evaluation.json",
    }
    assert (runs.eval_dir / "evaluation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run.info.run_name == "evaluate-staged"
    params = run.data.params
    assert params["seed"] == "0"
    assert params["env.workload"] == "staged"
    assert params["policies"] == str(["default", "heuristic", f"learned-{runs.train_dir.name}"])


def test_evaluate_run_logs_metrics_for_every_policy(runs: Runs) -> None:
    with (runs.eval_dir / "evaluation.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    labels = ["default", "heuristic", f"learned-{runs.train_dir.name}"]
    assert [row["policy"] for row in rows] == labels
    metrics = runs.eval_run.data.metrics
    run_id = runs.eval_run.info.run_id
    requests = int(rows[0]["requests"])
    windows = -(-requests // EnvConfig().requests_per_window)
    for label, row in zip(labels, rows, strict=True):
        assert int(row["requests"]) == requests > 0, "every policy sees the same workload"
        for name in ("total_reward", "hit_token_ratio", "mean_ttft_s", "p99_ttft_s"):
            assert metrics[f"{label}/episode/{name}"] == pytest.approx(float(row[name]), rel=1e-12), name
        history = runs.eval_client.get_metric_history(run_id, f"{label}/mean_ttft_s")
        assert sorted(m.step for m in history) == list(range(windows))
        assert float(row["mean_ttft_s"]) > 0
        assert float(row["p99_ttft_s"]) >= float(row["mean_ttft_s"])
    assert metrics["default/episode/requests"] == requests


def test_evaluate_on_a_trace_is_named_after_the_trace(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "conversation_trace.jsonl", list(LINES))
    out = tmp_path / "e"
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        invoke("evaluate", "--trace", str(trace), "--policy", "default", "--out", str(out))
    finally:
        mlflow.set_tracking_uri(previous)  # the command sets it process-wide
    run = only_run(MlflowClient(tracking_uri=f"sqlite:///{out.resolve() / 'mlflow.db'}"), "kvtune-evaluate")
    assert run.info.run_name == "evaluate-conversation_trace"
    assert run.data.params["env.workload"] == "mooncake"


# ---------------------------------------------------------------------------------------- errors


def plain(output: str) -> str:
    """Command output without rich's box drawing and line wrapping."""
    return re.sub(r"[\s│]+", " ", output)


def test_bad_policy_and_algorithm_are_usage_errors(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["evaluate", "--policy", "best", "--out", str(tmp_path / "e")])
    assert result.exit_code == 2
    assert "default, heuristic, static:FILE" in plain(result.output)
    assert not (tmp_path / "e" / "mlflow.db").exists()
    result = CliRunner().invoke(app, ["train", "--algo", "trpo", "--out", str(tmp_path / "t")])
    assert result.exit_code == 2
    assert "unknown algorithm 'trpo'; valid algorithms: ppo, sac, a2c, dqn" in plain(result.output)
    assert not (tmp_path / "t" / "mlflow.db").exists()
