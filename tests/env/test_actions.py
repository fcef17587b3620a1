"""The action space: Box <-> StoreConfig round trips, boundaries, scales, choice bins, discrete variant."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from env import DiscreteKnobActions, KVCacheTuningEnv
from env.actions import DEFAULT_ACTION_KNOBS, ActionKnob, ActionMapper, select_knobs
from env.step_info import step_info
from env.wrappers import apply_discrete, discrete_action_count
from store import StoreConfig
from store.config import GiB, KiB, MiB

MAPPER = ActionMapper()
DIM = MAPPER.dim
INDEX = {name: i for i, name in enumerate(MAPPER.names)}
NUMERIC = [knob for knob in DEFAULT_ACTION_KNOBS if not knob.spec().choices]
CHOICE = [knob for knob in DEFAULT_ACTION_KNOBS if knob.spec().choices]
FAST = settings(max_examples=150, deadline=None)

unit_floats = st.floats(-1.0, 1.0, allow_nan=False)
actions64 = arrays(np.float64, DIM, elements=unit_floats)
actions32 = arrays(np.float32, DIM, elements=st.floats(-1.0, 1.0, width=32))
wide_actions = arrays(np.float64, DIM, elements=st.floats(-5.0, 5.0, allow_nan=False))


def action_with(**values: float) -> np.ndarray:
    """The zero action with some dimensions set."""
    action = np.zeros(DIM)
    for name, value in values.items():
        action[INDEX[name]] = value
    return action


def rounding_tolerance(knob: ActionKnob) -> float:
    """How far, in action units, rounding a value to the knob's type can move it."""
    spec = knob.spec()
    low, high = knob.bounds()
    if spec.kind is not int:
        return 1e-9
    if spec.scale == "log":
        return 2.0 * math.log1p(0.5 / low) / math.log(high / low) + 1e-9
    return 2.0 * 0.5 / (high - low) + 1e-9


# ---------------------------------------------------------------------------------------- round trips


@FAST
@given(st.one_of(actions64, actions32, wide_actions))
def test_to_config_of_to_action_is_the_identity_on_mapped_configs(action: np.ndarray) -> None:
    config = MAPPER.to_config(action)
    again = MAPPER.to_config(MAPPER.to_action(config))
    assert config.changed(again) == {}
    assert again == config


def test_default_config_survives_a_round_trip() -> None:
    assert MAPPER.to_config(MAPPER.to_action(StoreConfig())) == StoreConfig()


def centre_unit(knob: ActionKnob) -> float:
    """Where the default config's value sits in the knob's range, in [0, 1]."""
    return knob.to_unit(getattr(StoreConfig(), knob.name))


@FAST
@given(st.one_of(actions64, wide_actions))
def test_to_action_of_to_config_is_close_on_numeric_dimensions(action: np.ndarray) -> None:
    back = MAPPER.to_action(MAPPER.to_config(action))
    clipped = np.clip(action, -1.0, 1.0)
    for knob in NUMERIC:
        i = INDEX[knob.name]
        side = 1.0 - centre_unit(knob) if clipped[i] >= 0 else centre_unit(knob)
        if side == 0:  # the default is this end of the range: the whole half-space maps onto it
            assert back[i] == 0.0, knob.name
            continue
        # rounding_tolerance is in units of the full range over 2 action units; this side spans 1
        tolerance = rounding_tolerance(knob) / (2.0 * side)
        assert abs(back[i] - clipped[i]) <= tolerance, (knob.name, clipped[i], back[i])


@FAST
@given(actions64)
def test_choice_dimensions_map_around_the_default(action: np.ndarray) -> None:
    config = MAPPER.to_config(action)
    back = MAPPER.to_action(config)
    for knob in CHOICE:
        default = getattr(StoreConfig(), knob.name)
        (other,) = (value for value in knob.choices() if value != default)
        i = INDEX[knob.name]
        expected = default if abs(action[i]) < 0.5 else other
        assert getattr(config, knob.name) == expected, knob.name
        assert back[i] == (0.0 if expected == default else 0.75), knob.name


# ---------------------------------------------------------------------------------------- scales


def test_the_zero_action_is_the_base_config() -> None:
    assert MAPPER.to_config(np.zeros(DIM)) == StoreConfig()
    np.testing.assert_array_equal(MAPPER.to_action(StoreConfig()), np.zeros(DIM))
    base = StoreConfig(write_buffer_size=16 * MiB, disable_wal=True, write_admission_hits=1)
    assert ActionMapper(base=base).to_config(np.zeros(DIM)) == base


def test_action_boundaries_map_exactly_to_the_range_ends() -> None:
    lowest = MAPPER.to_config(-np.ones(DIM))
    highest = MAPPER.to_config(np.ones(DIM))
    for knob in NUMERIC:
        low, high = knob.bounds()
        assert getattr(lowest, knob.name) == low, knob.name
        assert getattr(highest, knob.name) == high, knob.name
    for knob in CHOICE:
        default = getattr(StoreConfig(), knob.name)
        assert getattr(lowest, knob.name) != default, knob.name
        assert getattr(highest, knob.name) != default, knob.name
    assert highest.write_buffer_size == 256 * MiB and lowest.write_buffer_size == 1 * MiB
    assert highest.max_bytes_for_level_base == 1 * GiB
    assert MAPPER.to_config(np.full(DIM, -7.0)) == lowest
    assert MAPPER.to_config(np.full(DIM, 7.0)) == highest


def test_half_actions_are_half_way_from_the_default_to_the_ends() -> None:
    up = MAPPER.to_config(np.full(DIM, 0.5))
    down = MAPPER.to_config(np.full(DIM, -0.5))
    # Log knobs: geometric means of the default and the end.
    assert (down.write_buffer_size, up.write_buffer_size) == (8 * MiB, 128 * MiB)
    assert (down.writer_batch_size, up.writer_batch_size) == (4, 64)
    assert (down.writer_queue_depth, up.writer_queue_depth) == (16, 256)
    assert (down.min_blob_size, up.min_blob_size) == (1 * KiB, 32 * KiB)
    # Linear knobs: arithmetic means; a default at the low end leaves the negative half at the default.
    assert (down.max_write_buffer_number, up.max_write_buffer_number) == (2, 5)
    assert (down.write_admission_hits, up.write_admission_hits) == (0, 2)
    assert down.blob_garbage_collection_age_cutoff == pytest.approx(0.15, abs=1e-12)
    assert up.blob_garbage_collection_age_cutoff == pytest.approx(0.625, abs=1e-12)


def test_choice_intervals_centre_the_default_and_split_the_others() -> None:
    for value, expected in (
        (-1.0, False),
        (-0.5, False),
        (-0.49, True),
        (0.0, True),
        (0.49, True),
        (0.5, False),
    ):
        assert MAPPER.to_config(action_with(enable_blob_files=value)).enable_blob_files is expected
    assert MAPPER.to_config(action_with(eviction_order=-0.6)).eviction_order == "fifo"
    assert MAPPER.to_config(action_with(eviction_order=0.2)).eviction_order == "lru"
    assert MAPPER.to_action(StoreConfig(eviction_order="fifo"))[INDEX["eviction_order"]] == 0.75
    assert MAPPER.to_action(StoreConfig(disable_wal=True))[INDEX["disable_wal"]] == 0.0  # the default
    assert MAPPER.to_action(StoreConfig(disable_wal=False))[INDEX["disable_wal"]] == 0.75
    # Three choices: the default's interval is the middle third; one other choice on each side.
    reclaim = ActionKnob("reclaim")
    assert reclaim.choices() == ("relocate", "blob_age", "generations")
    picked = [reclaim.from_action(a, "relocate") for a in (-1.0, -0.34, -0.33, 0.33, 0.34, 1.0)]
    assert picked == ["blob_age", "blob_age", "relocate", "relocate", "generations", "generations"]
    assert [reclaim.to_action(v, "relocate") for v in ("blob_age", "relocate", "generations")] == [
        pytest.approx(-2 / 3),
        0.0,
        pytest.approx(2 / 3),
    ]


def test_a_base_outside_the_action_range_raises() -> None:
    narrow = ActionMapper((ActionKnob("write_buffer_size", 1 * MiB, 8 * MiB),))
    with pytest.raises(ValueError, match=r"write_buffer_size: the base config's value 67108864 lies outside"):
        narrow.to_config(np.zeros(1))
    restricted = ActionKnob("reclaim", allowed=("relocate", "blob_age"))
    with pytest.raises(ValueError, match="'generations' is not among the action's choices"):
        restricted.from_action(0.0, "generations")


base_configs = st.integers(1, 256).flatmap(
    lambda slowdown: st.builds(
        lambda stop: StoreConfig(level0_slowdown_writes_trigger=slowdown, level0_stop_writes_trigger=stop),
        st.integers(slowdown, 512),
    )
)


@FAST
@given(wide_actions, base_configs)
def test_slowdown_never_exceeds_stop(action: np.ndarray, base: StoreConfig) -> None:
    wide = ActionMapper(
        (ActionKnob("level0_slowdown_writes_trigger", 1, 256), ActionKnob("write_buffer_size")), base=base
    )
    config = wide.to_config(action[:2])
    assert config.level0_slowdown_writes_trigger <= config.level0_stop_writes_trigger
    assert config.level0_stop_writes_trigger >= base.level0_stop_writes_trigger
    default_space = MAPPER.to_config(action)
    assert default_space.level0_slowdown_writes_trigger <= default_space.level0_stop_writes_trigger


def test_knobs_outside_the_action_keep_the_base_values() -> None:
    base = StoreConfig(target_file_size_base=8 * MiB, blob_compression_type="zstd", write_buffer_size=2 * MiB)
    mapper = ActionMapper(select_knobs(["min_blob_size"]), base=base)
    config = mapper.to_config(np.array([1.0]))
    assert base.changed(config) == {"min_blob_size": 256 * KiB}


# ---------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("size", [0, DIM - 1, DIM + 1])
def test_wrong_action_length_names_the_expected_size(size: int) -> None:
    with pytest.raises(ValueError, match=f"action has {size} values; this action space has {DIM}"):
        MAPPER.to_config(np.zeros(size))


@pytest.mark.parametrize(
    ("knob", "needle"),
    [
        (ActionKnob("write_buffer_size", 512 * KiB, 8 * MiB), r"\[524288, 8.38861e\+06\].*write_buffer_size"),
        (
            ActionKnob("writer_batch_size", 1, 4096),
            r"writer_batch_size must lie inside its valid range \[1, 1024\]",
        ),
        (ActionKnob("max_write_buffer_number", 8, 4), r"max_write_buffer_number.*low < high"),
        (ActionKnob("max_write_buffer_number", 4, 4), r"max_write_buffer_number.*low < high"),
    ],
)
def test_action_range_outside_the_valid_range_raises(knob: ActionKnob, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        knob.bounds()
    with pytest.raises(ValueError, match=needle):
        ActionMapper((knob,))


def test_unknown_and_duplicate_action_knobs_raise() -> None:
    with pytest.raises(
        ValueError, match="unknown knob 'memtable' in the action space; valid knobs: write_buffer"
    ):
        ActionMapper((ActionKnob("memtable", 1, 2),))
    with pytest.raises(ValueError, match="distinct"):
        ActionMapper((ActionKnob("disable_wal"), ActionKnob("disable_wal")))
    with pytest.raises(
        ValueError, match=r"unknown action knob.*memtable.*valid action knobs: write_buffer_size"
    ):
        select_knobs(["memtable"])


# ---------------------------------------------------------------------------------------- discrete variant


def test_apply_discrete_keeps_or_sets_one_knob() -> None:
    levels = 4
    current = np.linspace(-0.9, 0.9, DIM)
    np.testing.assert_array_equal(apply_discrete(0, current, levels), current)
    for knob in (0, 3, DIM - 1):
        for level in range(levels):
            result = apply_discrete(1 + knob * levels + level, current, levels)
            expected = current.copy()
            expected[knob] = -1.0 + 2.0 * (level + 0.5) / levels
            np.testing.assert_array_equal(result, expected)
    np.testing.assert_array_equal(current, np.linspace(-0.9, 0.9, DIM))  # the input is not modified
    assert discrete_action_count(DIM, levels) == 1 + DIM * levels
    for index in (-1, 1 + DIM * levels):
        with pytest.raises(
            ValueError, match=rf"discrete action {index} is outside \[0, {1 + DIM * levels}\)"
        ):
            apply_discrete(index, current, levels)


@pytest.fixture
def discrete_env() -> Iterator[DiscreteKnobActions]:
    wrapped = DiscreteKnobActions(KVCacheTuningEnv(), levels=5)
    yield wrapped
    wrapped.close()


def test_discrete_wrapper_steps_the_store_config(discrete_env: DiscreteKnobActions) -> None:
    inner = discrete_env.unwrapped
    assert isinstance(inner, KVCacheTuningEnv)
    assert discrete_env.action_space.n == 1 + DIM * 5
    discrete_env.reset(seed=0)
    *_, info = discrete_env.step(0)
    assert inner.current_config == StoreConfig(), "action 0 keeps every knob"
    assert step_info(info).changed_knobs == {}
    knob = DEFAULT_ACTION_KNOBS[INDEX["write_buffer_size"]]
    *_, info = discrete_env.step(1 + INDEX["write_buffer_size"] * 5 + 4)  # top level: action 0.8
    expected = knob.from_action(0.8, StoreConfig().write_buffer_size)
    assert expected == round(64 * MiB * 4**0.8)
    assert step_info(info).changed_knobs == {"write_buffer_size": expected}
    assert inner.current_config == StoreConfig(write_buffer_size=expected)
    *_, info = discrete_env.step(1 + INDEX["enable_blob_files"] * 5 + 0)
    assert step_info(info).changed_knobs == {"enable_blob_files": False}
    *_, info = discrete_env.step(0)
    assert step_info(info).changed_knobs == {}
    assert inner.current_config == StoreConfig(write_buffer_size=expected, enable_blob_files=False)


def test_discrete_wrapper_rejects_bad_levels_and_spaces() -> None:
    environment = KVCacheTuningEnv()
    try:
        with pytest.raises(ValueError, match="levels must be at least 2, got 1"):
            DiscreteKnobActions(environment, levels=1)
        with pytest.raises(ValueError, match="1-D Box"):
            DiscreteKnobActions(DiscreteKnobActions(environment))
    finally:
        environment.close()


def test_an_action_knob_restricted_to_some_choices_never_yields_the_others() -> None:
    knob = ActionKnob("reclaim", allowed=("relocate", "blob_age"))
    values = {knob.to_value(unit) for unit in np.linspace(0.0, 1.0, 101)}
    assert values == {"relocate", "blob_age"}
    assert [knob.to_value(knob.to_unit(v)) for v in ("relocate", "blob_age")] == ["relocate", "blob_age"]
    assert "generations" not in {
        ActionMapper().to_config(a).reclaim
        for a in np.linspace(-1, 1, 41)[:, None] * np.ones(ActionMapper().dim)
    }
    with pytest.raises(ValueError, match="non-empty subset"):
        ActionKnob("reclaim", allowed=("relocate", "sideways")).choices()


def test_the_action_space_is_the_declared_tuning_ranges() -> None:
    specs = StoreConfig.specs()
    assert [knob.name for knob in DEFAULT_ACTION_KNOBS] == [
        n for n, s in specs.items() if s.tuning is not None
    ]
    assert DEFAULT_ACTION_KNOBS[INDEX["write_buffer_size"]].bounds() == (1 * MiB, 256 * MiB)
    assert DEFAULT_ACTION_KNOBS[INDEX["reclaim"]].choices() == ("relocate", "blob_age")
    assert DEFAULT_ACTION_KNOBS[INDEX["disable_wal"]].choices() == (False, True)


def test_a_derived_knob_is_refused_as_an_action_dimension() -> None:
    with pytest.raises(ValueError, match="level0_stop_writes_trigger is derived from level0_slowdown"):
        ActionMapper((ActionKnob("level0_stop_writes_trigger", 4, 64),))
