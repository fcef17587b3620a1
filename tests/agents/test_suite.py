"""Evaluation suites: baselines side by side, averaged repeats, target checks, the command."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agents.bundle import LearnedPolicy
from agents.evaluation import EpisodeResult
from agents.policies import StaticPolicy
from agents.registry import make_policy
from agents.suite import (
    ROCKSDB_DEFAULTS,
    SuiteResult,
    baseline_policies,
    check_targets,
    mean_episode,
    run_suite,
    search_static,
    suite_workloads,
)
from env.actions import ActionMapper
from env.distribution import EVALUATION_SEED_BASE
from experiments.cli import app
from store import StoreConfig


def episode(mean: float, windows: list[float], hit: float = 0.5, dropped: int = 0) -> EpisodeResult:
    rows = [{"mean_ttft_s": w, "store_ram_bytes": 10.0, "disk_bytes": 20.0} for w in windows]
    return EpisodeResult("p", -mean, 8, hit, mean, 2 * mean, dropped, rows, ["a=1"] + [""] * (len(rows) - 1))


def test_mean_episode_averages_episodes_and_windows() -> None:
    merged = mean_episode([episode(1.0, [1.0, 3.0], 0.2, 1), episode(2.0, [2.0, 5.0], 0.4, 2)])
    assert merged.mean_ttft_s == 1.5
    assert merged.p99_ttft_s == 3.0
    assert merged.hit_token_ratio == pytest.approx(0.3)
    assert merged.dropped_pages == 2
    assert [w["mean_ttft_s"] for w in merged.windows] == [1.5, 4.0]
    assert merged.decisions == ["a=1", ""]
    with pytest.raises(ValueError, match="at least one episode"):
        mean_episode([])


def test_check_targets_compares_with_static_oracle_and_rocksdb_windows() -> None:
    results = [
        SuiteResult("w", "static-train", episode(1.0, [1.0])),
        SuiteResult("w", "oracle-static", episode(0.9, [0.9])),
        SuiteResult("w", "rocksdb-defaults", episode(2.0, [1.0, 3.0])),
        SuiteResult("w", "ppo", episode(0.93, [1.01, 2.0])),
        SuiteResult("w", "sac", episode(0.99, [1.5, 1.0])),
    ]
    ppo, sac = check_targets(results, ["ppo", "sac"])
    assert ppo.vs_static_train == pytest.approx(-0.07)
    assert ppo.vs_oracle == pytest.approx(0.93 / 0.9 - 1)
    assert ppo.worst_window_vs_rocksdb == pytest.approx(0.01)
    assert ppo.met
    assert sac.worst_window_vs_rocksdb == pytest.approx(0.5)
    assert not sac.met
    assert check_targets(results[3:], ["ppo"]) == [], "no references, no check"


def test_repeat_spread_is_the_range_of_the_repeats_over_their_mean() -> None:
    three = SuiteResult("w", "p", episode(1.0, [1.0]), (0.9, 1.2, 0.9))
    assert three.row()["repeat_spread"] == pytest.approx(0.3)
    assert SuiteResult("w", "p", episode(1.0, [1.0]), (1.0,)).repeat_spread == 0.0


def test_rocksdb_defaults_are_rocksdbs_own_option_defaults() -> None:
    assert ROCKSDB_DEFAULTS.write_buffer_size == 64 * 2**20
    assert ROCKSDB_DEFAULTS.max_write_buffer_number == 2
    assert ROCKSDB_DEFAULTS.level0_file_num_compaction_trigger == 4
    assert ROCKSDB_DEFAULTS.level0_slowdown_writes_trigger == 20
    assert ROCKSDB_DEFAULTS.level0_stop_writes_trigger == 36
    assert ROCKSDB_DEFAULTS.disable_wal is False
    assert set(baseline_policies(None)) == {"rocksdb-defaults", "kvtune-defaults", "heuristic"}
    assert "static-train" in baseline_policies(StoreConfig(disable_wal=True))


def test_suites_are_held_out_and_unknown_ones_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown evaluation suite 'x'; valid suites: smoke, standard"):
        suite_workloads("x")
    with pytest.raises(ValueError, match="Mooncake trace, not found"):
        suite_workloads("standard", tmp_path / "missing.jsonl")
    (smoke,) = suite_workloads("smoke")
    assert smoke.seed >= EVALUATION_SEED_BASE
    assert smoke.env.budget_bytes is not None and smoke.env.budget_bytes > 0


def test_smoke_suite_runs_every_baseline_on_the_same_workload() -> None:
    workloads = suite_workloads("smoke")
    results = run_suite(workloads, baseline_policies(None), repeats=2)
    assert [r.policy for r in results] == ["rocksdb-defaults", "kvtune-defaults", "heuristic"]
    for result in results:
        assert len(result.repeat_mean_ttft_s) == 2
        assert result.episode.mean_ttft_s == pytest.approx(sum(result.repeat_mean_ttft_s) / 2)
    requests = {r.episode.requests for r in results}
    assert requests == {12}
    for result in results:
        row = result.row()
        assert 0.0 <= row["hit_token_ratio"] <= 1.0
        assert row["mean_ttft_s"] > 0
        assert len(result.window_rows()) == 2  # 12 requests, 8 per window
    config = search_static(workloads, trials=1, seed=0)
    mapper = ActionMapper()
    assert config == mapper.to_config(mapper.to_action(StoreConfig())), "trial 1 is the defaults"


def test_learned_names_list_the_shipped_policies_and_the_default_one_loads() -> None:
    with pytest.raises(ValueError, match=r"no shipped policy 'nope'; shipped policies: default"):
        make_policy("learned:nope")
    shipped = make_policy("learned:default")
    assert isinstance(shipped, LearnedPolicy)
    card = shipped.card
    assert card.training["command"].startswith("kvtune train --algo ppo")
    assert card.training["seed"] == 0 and card.training["env"]["reward"]["relative_to_defaults"] is True
    assert {row["policy"] for row in card.evaluation} >= {"ppo", "rocksdb-defaults", "static-train"}


def test_experiment_tuning_command_writes_tables_plots_and_reuses_searches(tmp_path: Path) -> None:
    args = ["experiment", "tuning", "--suite", "smoke", "--train-draws", "1", "--static-trials", "1"]
    args += ["--oracle-trials", "1", "--repeats", "1", "--out", str(tmp_path)]
    saved = StaticPolicy(StoreConfig(disable_wal=True)).save(tmp_path / "static-train.json").read_text()
    result = CliRunner().invoke(app, [*args, "--policy", "again=heuristic"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "static-train.json").read_text() == saved, "a saved search is reused"
    for name in ("workloads.csv", "windows.csv", "targets.json", "mean_ttft.png", "static-train.json"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "oracle-staged-smoke.json").is_file()
    rows = (tmp_path / "workloads.csv").read_text().splitlines()
    policies = [row.split(",")[1] for row in rows[1:]]
    expected = ["rocksdb-defaults", "kvtune-defaults", "heuristic", "static-train", "again", "oracle-static"]
    assert policies == expected
    checks = json.loads((tmp_path / "targets.json").read_text())
    assert [c["policy"] for c in checks] == ["again"]
    bad = CliRunner().invoke(app, [*args, "--policy", "no-label"])
    assert bad.exit_code != 0
    assert "LABEL=SPEC" in re.sub(r"[\s│]+", " ", bad.output)
