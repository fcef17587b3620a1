"""The command line's structure: option groups, the KEY=VALUE parser, lazy imports, every command listed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from env import EnvConfig, RewardConfig
from experiments.cli import app
from experiments.options import EnvOptions, parse_assignments, with_option_groups

HEAVY = ("torch", "mlflow", "optuna", "stable_baselines3", "store", "workloads", "env", "agents", "rocksdict")


def test_help_imports_no_heavy_package() -> None:
    probe = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from experiments.cli import app\n"
        "result = CliRunner().invoke(app, ['--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        f"print(sorted(name for name in {HEAVY!r} if name in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_every_command_is_listed() -> None:
    output = CliRunner().invoke(app, ["--help"], terminal_width=200).output
    for name in ("replay", "train", "evaluate", "sweep", "study", "run", "model-check", "bench"):
        assert f" {name} " in output, name
    bench = CliRunner().invoke(app, ["bench", "--help"], terminal_width=200).output
    assert " store " in bench and " startup " in bench


@pytest.mark.parametrize(
    ("pairs", "parsed"),
    [
        (["a=1", "b=x"], {"a": 1, "b": "x"}),
        (["targets=[0.1, 0.5]"], {"targets": (0.1, 0.5)}),
        (["flag=true", " spaced =2.5"], {"flag": True, "spaced": 2.5}),
        (["empty="], {"empty": None}),
    ],
)
def test_assignments_parse_as_yaml_with_lists_as_tuples(pairs: list[str], parsed: dict[str, object]) -> None:
    assert parse_assignments(pairs, "--param") == parsed


@pytest.mark.parametrize("pair", ["novalue", "=3"])
def test_a_malformed_assignment_says_the_form(pair: str) -> None:
    with pytest.raises(typer.BadParameter, match=r"--env .* must look like NAME=VALUE"):
        parse_assignments([pair], "--env")


def test_env_options_build_the_env_config() -> None:
    options = EnvOptions(
        workload_option=["phase_requests=3"],
        env_option=["action_knobs=[disable_wal]", "reward.ttft_weight=2", "profile_scale=4"],
        store="file",
        budget_bytes=1 << 20,
        requests_per_window=5,
        clock="measured",
    )
    assert options.to_config() == EnvConfig(
        workload="staged",
        workload_options={"phase_requests": 3},
        store_kind="file",
        budget_bytes=1 << 20,
        requests_per_window=5,
        clock="measured",
        reward=RewardConfig(ttft_weight=2),
        action_knobs=("disable_wal",),
        profile_scale=4,
    )
    assert options.label == "staged"


def test_a_trace_names_the_workload_and_the_runs(tmp_path: Path) -> None:
    options = EnvOptions(trace=tmp_path / "conversation_trace.jsonl")
    config = options.to_config()
    assert (config.workload, config.workload_options) == (
        "mooncake",
        {"path": str(tmp_path / "conversation_trace.jsonl")},
    )
    assert options.label == "conversation_trace"


def test_unknown_env_fields_are_listed_with_the_valid_ones() -> None:
    with pytest.raises(typer.BadParameter, match=r"unknown --env field\(s\) colour; valid: action_knobs, "):
        EnvOptions(env_option=["colour=blue"]).to_config()


def test_option_groups_spread_into_options_and_come_back_as_one_record() -> None:
    seen: list[tuple[EnvOptions, int]] = []
    probe = typer.Typer()

    @probe.command()
    @with_option_groups
    def command(env: EnvOptions, seed: Annotated[int, typer.Option("--seed")] = 0) -> None:
        seen.append((env, seed))

    result = CliRunner().invoke(
        probe, ["--store", "applog", "--param", "a=1", "--param", "b=2", "--seed", "3"]
    )
    assert result.exit_code == 0, result.output
    assert seen == [(EnvOptions(store="applog", workload_option=["a=1", "b=2"]), 3)]


def test_an_option_declared_twice_is_refused() -> None:
    def command(env: EnvOptions, store: str = "lsm") -> None:
        del env, store

    with pytest.raises(TypeError, match="option\\(s\\) store declared twice"):
        with_option_groups(command)


def test_evaluate_of_a_bad_env_field_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["evaluate", "--env", "colour=1", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert not (tmp_path / "mlflow.db").exists()
    assert json.dumps("colour")[1:-1] in result.output
