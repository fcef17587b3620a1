"""Policies: default, static files (JSON/YAML), the heuristic's rules, and the name registry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from agents.policies import ROCKSDB_DEFAULTS, HeuristicPolicy, StaticPolicy
from agents.registry import PolicySpec, make_policy, parse_policy_spec
from env import FEATURES, WindowFeatures, encode_observation
from env.actions import ActionMapper
from env.observation import observation_size
from store import StoreConfig
from store.config import MiB

TUNED = StoreConfig(
    write_buffer_size=128 * MiB,
    max_write_buffer_number=4,
    enable_blob_garbage_collection=True,
    blob_garbage_collection_age_cutoff=0.6,
    eviction_order="fifo",
    blob_compression_type="zstd",
)


def observation(current: StoreConfig | None = None, **values: float) -> np.ndarray:
    """The observation of a window whose raw features are zero except ``values``."""
    raw = WindowFeatures(**{**dict.fromkeys((f.name for f in FEATURES), 0.0), **values})
    return encode_observation(raw, current or StoreConfig())


# ---------------------------------------------------------------------------------------- default, static


def test_default_policy_always_returns_rocksdb_defaults() -> None:
    policy = make_policy("default")
    assert policy.name == "default"
    decided = policy.decide(observation(TUNED, stall_fraction=1.0), TUNED)
    assert decided == ROCKSDB_DEFAULTS
    assert decided.disable_wal is False, "the tuner's baseline keeps RocksDB's WAL on"


def test_static_policy_json_round_trip(tmp_path: Path) -> None:
    path = StaticPolicy(TUNED).save(tmp_path / "nested" / "best.json")
    assert json.loads(path.read_text()) == {"policy": "static", "knobs": TUNED.to_dict()}
    loaded = StaticPolicy.load(path)
    assert loaded.config == TUNED
    assert loaded.source == str(path)
    assert loaded.decide(observation(stall_fraction=1.0), StoreConfig()) == TUNED
    via_registry = make_policy(f"static:{path}")
    assert isinstance(via_registry, StaticPolicy) and via_registry.config == TUNED


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_static_policy_yaml_round_trip(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"best{suffix}"
    path.write_text(yaml.safe_dump(TUNED.to_dict()))
    assert StaticPolicy.load(path).config == TUNED


def test_static_policy_knobs_form_overrides_only_the_named_knobs(tmp_path: Path) -> None:
    path = tmp_path / "partial.yaml"
    path.write_text(
        yaml.safe_dump({"policy": "static", "knobs": {"write_buffer_size": 8 * MiB, "disable_wal": False}})
    )
    config = StaticPolicy.load(path).config
    assert StoreConfig().changed(config) == {"write_buffer_size": 8 * MiB, "disable_wal": False}


def test_static_policy_unknown_knob_lists_the_valid_knobs(tmp_path: Path) -> None:
    path = tmp_path / "typo.json"
    path.write_text(json.dumps({"knobs": {"write_bufer_size": 8 * MiB}}))
    with pytest.raises(
        ValueError, match=r"unknown knob\(s\) write_bufer_size; valid knobs: .*write_buffer_size"
    ):
        StaticPolicy.load(path)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("- 1\n- 2\n", "must hold a mapping of knob: value"),
        ("write_buffer_size: 3\n", r"write_buffer_size=3 is out of range"),
        ("enable_blob_files: maybe\n", r"enable_blob_files='maybe' is invalid"),
    ],
)
def test_static_policy_rejects_bad_files(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=needle):
        StaticPolicy.load(path)


def test_make_policy_errors_list_the_valid_forms(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown policy 'best'.*default, heuristic, static:FILE.*bundle"):
        make_policy("best")
    with pytest.raises(ValueError, match=r"unknown policy '.*nothing-here'.*default, heuristic, static:FILE"):
        make_policy(str(tmp_path / "nothing-here"))
    with pytest.raises(ValueError, match="does not exist"):
        make_policy(f"static:{tmp_path / 'missing.json'}")
    stalled = observation(stall_fraction=1.0)
    assert make_policy("heuristic").decide(stalled, StoreConfig()) == HeuristicPolicy().decide(
        stalled, StoreConfig()
    )


@pytest.mark.parametrize(
    ("text", "kind", "label"),
    [
        ("default", "default", "default"),
        ("heuristic", "heuristic", "heuristic"),
        ("static:runs/study/best_static.json", "static", "static-best_static"),
    ],
)
def test_policy_specs_parse_to_kind_and_label(text: str, kind: str, label: str) -> None:
    spec = parse_policy_spec(text)
    assert (spec.kind, spec.label) == (kind, label)


def test_learned_policy_specs_are_labelled_by_their_run_directory(tmp_path: Path) -> None:
    (tmp_path / "run-7" / "policy").mkdir(parents=True)
    (tmp_path / "bundle-b").mkdir()
    assert parse_policy_spec(str(tmp_path / "run-7" / "policy")) == PolicySpec(
        "learned", tmp_path / "run-7" / "policy"
    )
    assert parse_policy_spec(str(tmp_path / "run-7" / "policy")).label == "learned-run-7"
    assert parse_policy_spec(str(tmp_path / "bundle-b")).label == "learned-bundle-b"


# ---------------------------------------------------------------------------------------- heuristic


@pytest.mark.parametrize(
    "pressure",
    [{"stall_fraction": 0.3}, {"writer_queue_fill": 0.9}, {"dropped_fraction": 0.05}],
    ids=["stalls", "queue", "drops"],
)
def test_heuristic_write_pressure_doubles_writer_batches_and_costs_no_ram(pressure: dict[str, float]) -> None:
    current = StoreConfig()
    decided = HeuristicPolicy().decide(observation(current, **pressure), current)
    assert current.changed(decided) == {"writer_batch_size": 2 * current.writer_batch_size}
    capped = StoreConfig(writer_batch_size=100)
    assert HeuristicPolicy().decide(observation(capped, **pressure), capped).writer_batch_size == 128
    above = StoreConfig(writer_batch_size=256)
    assert HeuristicPolicy().decide(observation(above, **pressure), above).writer_batch_size == 256


def test_heuristic_turns_the_wal_off_once_the_store_writes() -> None:
    current = ROCKSDB_DEFAULTS
    decided = HeuristicPolicy().decide(observation(current, write_amplification=2.0), current)
    assert current.changed(decided) == {"disable_wal": True}


def test_heuristic_clear_space_or_garbage_excess_turns_blob_gc_on() -> None:
    current = StoreConfig()
    over_budget = HeuristicPolicy().decide(observation(current, space_used_fraction=1.5), current)
    garbage = HeuristicPolicy().decide(observation(current, blob_garbage_fraction=0.6), current)
    for decided in (over_budget, garbage):
        assert current.changed(decided) == {
            "enable_blob_garbage_collection": True,
            "blob_garbage_collection_age_cutoff": 0.5,
        }
    near_budget = HeuristicPolicy().decide(
        observation(current, space_used_fraction=1.05, blob_garbage_fraction=0.4), current
    )
    assert near_budget == current, "GC rewrites live blobs: it waits for a clear excess"


def test_heuristic_keeps_the_config_without_a_signal() -> None:
    calm = observation(TUNED, arrival_rate_rps=5.0, store_hit_ratio=0.6, page_reuse=0.7)
    assert HeuristicPolicy().decide(calm, TUNED) == TUNED
    assert HeuristicPolicy().decide(observation(), StoreConfig()) == StoreConfig()


@settings(max_examples=100, deadline=None)
@given(
    arrays(np.float32, observation_size(), elements=st.floats(0.0, 1.0, width=32)),
    arrays(np.float64, ActionMapper().dim, elements=st.floats(-1.0, 1.0)),
)
def test_heuristic_never_takes_host_ram_and_only_grows_batches(obs: np.ndarray, action: np.ndarray) -> None:
    current = ActionMapper().to_config(action)
    decided = HeuristicPolicy().decide(obs, current)
    assert set(current.changed(decided)) <= {
        "disable_wal",
        "writer_batch_size",
        "enable_blob_garbage_collection",
        "blob_garbage_collection_age_cutoff",
    }
    assert decided.writer_batch_size >= current.writer_batch_size
