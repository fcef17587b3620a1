"""``kvtune sweep`` and ``kvtune run`` end to end on small sizes, read back from their files and MLflow."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from experiments.cli import app


@pytest.fixture(autouse=True)
def restore_tracking_uri() -> Iterator[None]:
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    mlflow.set_tracking_uri(previous)  # the commands set it process-wide


def invoke(*args: str) -> None:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, f"{args}: {result.output}\n{result.exception!r}"


def test_sweep_runs_every_value_of_a_choice_knob(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    invoke("sweep", "--knob", "disable_wal", "--param", "phase_requests=2", "--out", str(out))
    with (out / "sweep.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["knob"], row["value"]) for row in rows] == [
        ("disable_wal", "False"),
        ("disable_wal", "True"),
    ]
    assert all(float(row["mean_ttft_s"]) > 0 for row in rows)
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    client = MlflowClient(tracking_uri=f"sqlite:///{out.resolve() / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("kvtune-sweep")
    assert experiment is not None
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "sweep-staged"
    assert run.data.params["knobs"] == "['disable_wal']"
    assert "sweep/disable_wal/spread" in run.data.metrics


def test_sweep_of_an_unknown_knob_lists_the_action_knobs(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["sweep", "--knob", "colour", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown knob(s) colour to sweep; action knobs: " in " ".join(result.output.split())


@pytest.mark.slow
def test_run_compares_the_store_and_the_policies(tmp_path: Path) -> None:
    out = tmp_path / "quick"
    invoke("run", "--out", str(out), "--tiny")
    summary = json.loads((out / "summary.json").read_text())
    rows = [
        (row["step"], row["metric"].split(" @ ")[0], row["subject"].split("-")[0], row["baseline"])
        for row in summary["rows"]
    ]
    assert rows == [
        ("store", "reopen s (cold cache)", "lsm", "file"),
        ("store", "probes per s", "lsm", "file"),
        ("store", "durable put MB/s", "lsm", "file"),
        ("store", "files on disk", "lsm", "file"),
        ("policy", "mean TTFT ms", "static", "default"),
        ("policy", "hit ratio", "static", "default"),
        ("policy", "mean TTFT ms", "learned", "default"),
        ("policy", "hit ratio", "learned", "default"),
    ]
    for row in summary["rows"]:
        assert math.isfinite(row["subject_value"]) and math.isfinite(row["baseline_value"]), row
    assert summary["learned_policy"].startswith(("trained here", "shipped bundle"))
    assert (out / "summary.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "store" / "report.md").is_file()
    with (out / "evaluate" / "evaluation.csv").open() as handle:
        policies = [row["policy"] for row in csv.DictReader(handle)]
    assert [policy.split("-")[0] for policy in policies] == ["default", "static", "learned"]
    client = MlflowClient(tracking_uri=f"sqlite:///{out.resolve() / 'mlflow.db'}")
    names = {e.name for e in client.search_experiments()}
    trained_here = summary["learned_policy"].startswith("trained here")
    assert {"kvtune-run", "kvtune-evaluate"} | ({"kvtune-train"} if trained_here else set()) <= names
