"""An adversarial policy cannot hurt the store: the knob ranges and the controller's guards keep RocksDB
out of a write stop, and a loaded store driven by the policy serves exact pages with no escaped error."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import numpy as np
import pytest

from agents.controller import Guards, RuntimeController
from agents.policies import Policy
from env.actions import ActionMapper
from experiments.adversarial import UNGUARDED, AdversarialPolicy, adversarial_actions, run_adversarial
from experiments.stress import LAYOUT, PAGE_SIZE, StressConfig, run_stress
from store import KVStore, StoreConfig, open_store
from store.knob_bounds import DISK_SLACK_SHARE

L0_KNOBS = ("max_write_buffer_number", "level0_file_num_compaction_trigger", "level0_slowdown_writes_trigger")


def _assert_no_write_stop(config: StoreConfig) -> None:
    assert config.max_write_buffer_number >= 2, "one memtable stops writes at every flush"
    assert config.level0_file_num_compaction_trigger < config.level0_stop_writes_trigger
    assert config.level0_slowdown_writes_trigger <= config.level0_stop_writes_trigger


def test_every_corner_of_the_l0_knobs_stays_clear_of_a_write_stop() -> None:
    mapper = ActionMapper()
    indices = [mapper.names.index(name) for name in L0_KNOBS]
    for rest in (-1.0, 1.0):
        for corner in itertools.product((-1.0, 1.0), repeat=len(indices)):
            action = np.full(mapper.dim, rest)
            action[indices] = corner
            _assert_no_write_stop(mapper.to_config(action))


def test_adversarial_actions_cover_extremes_nan_and_every_single_knob_corner() -> None:
    dim = ActionMapper().dim
    actions = adversarial_actions(dim)
    assert len(actions) == 3 * (1 + 2 * dim + 8)
    assert all((actions[i] == -1).all() and (actions[i + 1] == 1).all() for i in range(0, len(actions), 3))
    assert np.isnan(actions[2]).all()
    probes = [a for a in actions[5::3] if not np.isnan(a).any()]
    assert all(set(np.unique(a)) <= {-1.0, 1.0} for a in probes)
    mapper = ActionMapper()
    for action in actions[:2] + probes:
        _assert_no_write_stop(mapper.to_config(action))
    with pytest.raises(ValueError):
        mapper.to_config(actions[2])


def test_memtable_count_one_is_not_a_config() -> None:
    with pytest.raises(ValueError, match="max_write_buffer_number"):
        StoreConfig(max_write_buffer_number=1)


class _StopPolicy(Policy):
    """Asks for a stop trigger below the compaction trigger: L0 would stop writes before it compacts."""

    name = "stop"

    def decide(self, observation: np.ndarray, current: StoreConfig) -> StoreConfig:
        return current.replace(
            level0_file_num_compaction_trigger=64,
            level0_slowdown_writes_trigger=4,
            level0_stop_writes_trigger=4,
        )


def test_controller_guards_keep_the_stop_trigger_above_the_compaction_trigger(tmp_path: Path) -> None:
    with open_store("lsm", tmp_path / "s", LAYOUT, PAGE_SIZE, None, StoreConfig()) as store:
        decision = RuntimeController(store, _StopPolicy(), guards=Guards(min_change=0.0)).tick()
        assert "clamp" in decision.guards
        assert store.config.level0_file_num_compaction_trigger == 32
        assert store.config.level0_stop_writes_trigger == 33
        assert store.config.level0_slowdown_writes_trigger == 4
        _assert_no_write_stop(store.config)


def test_nan_policy_leaves_the_store_as_it_is(tmp_path: Path) -> None:
    with open_store("lsm", tmp_path / "s", LAYOUT, PAGE_SIZE, None, StoreConfig()) as store:
        policy = AdversarialPolicy()
        policy.calls = 2  # the NaN action
        decision = RuntimeController(store, policy, guards=UNGUARDED).tick()
        assert decision.guards == ("policy_error",)
        assert decision.applied == {}
        assert store.config == StoreConfig()


def test_adversarial_policy_on_a_loaded_store_with_only_the_knob_ranges(tmp_path: Path) -> None:
    config = StressConfig(
        kind="lsm", path=tmp_path / "s", threads=3, seconds=8.0, budget_bytes=16 << 20, sample_interval_s=1.0
    )
    report = run_adversarial(config, UNGUARDED, interval_s=0.25)
    assert report.escaped_errors == []
    assert (report.stress.errors, report.stress.wrong_tensors) == (0, 0), report.stress.error_messages
    assert report.windows >= 10
    assert report.guards_fired["policy_error"] >= 1  # the NaN window
    assert report.applied_changes >= 5
    assert report.stall_fraction < 0.5
    assert report.stress.knobs_clamped > 0  # the all-high windows asked for more than the budget allows
    assert report.max_disk_over_budget <= 1 + DISK_SLACK_SHARE


class _AllHighPolicy(Policy):
    """Every knob at the high end of the action space, every window."""

    name = "all-high"

    def decide(self, observation: np.ndarray, current: StoreConfig) -> StoreConfig:
        mapper = ActionMapper()
        return mapper.to_config(np.ones(mapper.dim))


def test_the_all_high_corner_keeps_the_disk_within_budget_and_slack(tmp_path: Path) -> None:
    """1 GiB blob files and 256 MiB memtables on a 16 MiB budget: the store bounds them by its budget."""
    budget = 16 << 20
    config = StressConfig(
        kind="lsm", path=tmp_path / "s", threads=3, seconds=8.0, budget_bytes=budget, sample_interval_s=0.25
    )

    def drive(store: KVStore, stop: threading.Event) -> int:
        RuntimeController(store, _AllHighPolicy(), guards=UNGUARDED).tick()
        stop.wait()
        return 1

    report = run_stress(config, drive)
    assert (report.errors, report.wrong_tensors) == (0, 0), report.error_messages
    # at open, the defaults' 64 MiB memtable and 32 MiB blob files; then the corner's three knobs
    assert report.knobs_clamped == 2 + 3
    assert report.evicted_pages > 0
    worst = max(sample.disk_bytes for sample in report.samples) / budget
    assert worst <= 1 + DISK_SLACK_SHARE, f"disk reached {worst:.2f}x the budget"


def test_the_controller_records_what_the_store_applied_after_its_budget_bounds(tmp_path: Path) -> None:
    config = StoreConfig(write_buffer_size=1 << 20, blob_file_size=1 << 20)
    with open_store("lsm", tmp_path / "s", LAYOUT, PAGE_SIZE, 32 << 20, config) as store:
        controller = RuntimeController(store, _AllHighPolicy(), guards=UNGUARDED)
        first = controller.tick()
        assert first.proposed["write_buffer_size"] == 256 << 20
        assert (first.applied["write_buffer_size"], first.applied["blob_file_size"]) == (4 << 20, 4 << 20)
        assert "max_write_buffer_number" not in first.applied  # bounded to 2, the value it had
        again = controller.tick()
        assert again.applied == {}  # asked for the same corner: the store is already at its bounds
        assert store.stats().knobs_clamped == 6
