"""``kvtune bench env``: runs, prints a figure per configuration, refuses unknown ones."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from experiments.cli import app


def test_bench_env_prints_steps_per_second_and_cpu_per_configuration() -> None:
    result = CliRunner().invoke(app, ["bench", "env", "--config", "small", "--steps", "3", "--rounds", "1"])
    assert result.exit_code == 0, result.output
    assert "small" in result.output
    assert "steps/s" in result.output
    assert "CPU ms/step" in result.output


def test_bench_env_refuses_unknown_configurations() -> None:
    result = CliRunner().invoke(app, ["bench", "env", "--config", "huge"])
    assert result.exit_code != 0
    assert "valid: small, taught, serving-mix, serving-mix-relative" in re.sub(r"[\s│]+", " ", result.output)
