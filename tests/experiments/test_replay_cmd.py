"""``kvtune replay`` end to end on tiny workloads, through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from experiments import replay_cmd
from experiments.cli import app
from experiments.options import HELP_STORE_KINDS
from experiments.replay_cmd import parse_bytes
from tests.workloads.test_mooncake import LINES, write_trace

runner = CliRunner()
TINY_STAGED = [
    "--param",
    "phase_requests=4",
    "--param",
    "chunk_tokens=32",
    "--param",
    "chunks_per_prompt=4",
    "--param",
    "targets=[0.5, 0.25]",
    "--param",
    "pool_chunks=64",
]


def test_replay_a_generated_workload(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "replay",
            "--workload",
            "staged",
            *TINY_STAGED,
            "--limit",
            "6",
            "--store",
            "lsm",
            "--budget-bytes",
            "64MiB",
            "--profile",
            "tiny",
            "--page-size",
            "16",
            "--window",
            "4",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests"] == 6 and summary["config"]["budget_bytes"] == 64 * 2**20
    assert summary["windows"] == 2 and summary["store_kind"] == "lsm"
    assert "hit ratio" in result.output and "0:0.5" in result.output
    assert (out / "requests.csv").read_text().count("\n") == 7


def test_replay_a_trace(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "trace.jsonl", list(LINES))
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "replay",
            "--trace",
            str(trace),
            "--store",
            "memory",
            "--profile",
            "llama-3.1-8b",
            "--scale",
            "256",
            "--clock",
            "measured",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests"] == 3 and summary["clock"] == "measured"
    assert summary["hit_token_ratio"] == pytest.approx(512 / (1100 + 600 + 512))  # request 2 shares block 10
    assert summary["config"]["profile"]["kv_bytes_per_token"] == 131072 // 256


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "exactly one of --trace FILE or --workload NAME"),
        (["--workload", "nope"], "valid workloads"),
        (["--workload", "staged", "--store", "sqlite"], "choose one of lsm"),
        (["--workload", "staged", "--budget-bytes", "lots"], "not a size"),
        (["--workload", "staged", "--param", "colour"], "must look like NAME=VALUE"),
    ],
)
def test_bad_arguments_are_explained(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["replay", *args, "--out", str(tmp_path / "x")])
    assert result.exit_code != 0
    assert message in " ".join(result.output.split())


def test_sizes_parse() -> None:
    assert parse_bytes("1048576") == 2**20
    assert parse_bytes("2GiB") == 2 * 2**30 and parse_bytes("1.5 MB") == 1_500_000


def test_help_lists_every_registered_choice() -> None:
    from store import STORE_KINDS
    from workloads import (
        CLOCKS,
        DEVICE_PROFILES,
        MODEL_PROFILES,
        PREFETCH_POLICIES,
        WORKLOADS,
        WRITE_POLICIES,
    )

    generated = [name for name in WORKLOADS if name != "mooncake"]
    assert ", ".join(STORE_KINDS) == HELP_STORE_KINDS
    assert ", ".join(generated) == replay_cmd.HELP_GENERATED
    assert ", ".join(MODEL_PROFILES) == replay_cmd.HELP_MODEL_PROFILES
    assert ", ".join(DEVICE_PROFILES) == replay_cmd.HELP_DEVICE_PROFILES
    assert ", ".join(CLOCKS) == replay_cmd.HELP_CLOCKS
    assert ", ".join(PREFETCH_POLICIES) == replay_cmd.HELP_PREFETCH_POLICIES
    assert ", ".join(WRITE_POLICIES) == replay_cmd.HELP_WRITE_POLICIES


def test_replay_serves_on_several_servers_within_one_host_ram_budget(tmp_path: Path) -> None:
    out = tmp_path / "run"
    flags = ["--servers", "2", "--host-ram-bytes", "4MiB", "--target-utilization", "0.5"]
    result = runner.invoke(
        app,
        [
            "replay",
            "--workload",
            "staged",
            *TINY_STAGED,
            "--store",
            "file",
            "--page-size",
            "16",
            "--prefetch",
            "best_effort",
            *flags,
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["host_ram_bytes"] == 4 * 2**20 and summary["store_ram_bytes"] == 0
    assert summary["backup_dropped_pages"] == 0
    assert 0 < summary["gpu_utilization"] <= 1 and 0 <= summary["disk_utilization"] <= 1
    assert summary["config"]["servers"] == 2 and summary["config"]["prefetch"] == "best_effort"


def test_replay_refuses_a_store_whose_ram_exceeds_the_budget(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["replay", "--workload", "staged", *TINY_STAGED, "--host-ram-bytes", "64MiB", "--out", str(tmp_path)],
    )
    assert result.exit_code != 0
    assert "write_buffer_size" in result.output and "host_ram_bytes" in result.output
