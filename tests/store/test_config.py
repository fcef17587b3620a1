"""StoreConfig: every knob range-checked, with messages that name the knob and its exact range."""

from __future__ import annotations

import dataclasses
import math
import re
import tempfile
from typing import Any

import pytest
from rocksdict import Options, Rdict

from store import KnobSpec, StoreConfig

SPECS = StoreConfig.specs()
NUMERIC = sorted(name for name, spec in SPECS.items() if not spec.choices)
CHOICE = sorted(name for name, spec in SPECS.items() if spec.choices)
RANGE = re.compile(r"\[([^,\]]+), ([^\]]+)\]")


def _message(**knobs: Any) -> str:
    with pytest.raises(ValueError) as info:
        StoreConfig(**knobs)
    return str(info.value)


def test_every_field_has_a_consistent_spec() -> None:
    fields = {f.name for f in dataclasses.fields(StoreConfig)}
    assert set(SPECS) == fields
    defaults = StoreConfig()
    for name, spec in SPECS.items():
        assert isinstance(spec, KnobSpec)
        assert spec.name == name
        assert spec.scale in ("log", "linear", "choice")
        assert spec.doc
        value = getattr(defaults, name)
        assert spec.check(value) == value  # defaults are valid
        if spec.choices:
            assert spec.scale == "choice"
            assert value in spec.choices
            assert len(spec.choices) >= 2
        else:
            assert spec.low is not None and spec.high is not None
            assert spec.low < spec.high
            assert spec.kind in (int, float)
            if spec.scale == "log":
                assert spec.low > 0  # a log scale needs a positive lower bound


def _companions(name: str) -> dict[str, Any]:
    """Other knobs to set so that any value of ``name`` in its range is consistent with them."""
    if name == "level0_slowdown_writes_trigger":
        return {
            "level0_stop_writes_trigger": SPECS["level0_stop_writes_trigger"].kind(
                SPECS["level0_stop_writes_trigger"].high
            )
        }
    if name == "level0_stop_writes_trigger":
        return {
            "level0_slowdown_writes_trigger": SPECS["level0_slowdown_writes_trigger"].kind(
                SPECS["level0_slowdown_writes_trigger"].low
            )
        }
    return {}


@pytest.mark.parametrize("name", NUMERIC)
def test_numeric_knob_bounds_are_inclusive_and_checked(name: str) -> None:
    spec = SPECS[name]
    assert spec.low is not None and spec.high is not None
    step = 1 if spec.kind is int else (spec.high - spec.low) / 1000
    base = StoreConfig()
    extra = _companions(name)
    for edge in (spec.low, spec.high):
        value = spec.kind(edge)
        config = base.replace(**{name: value}, **extra)
        assert getattr(config, name) == value
        assert type(getattr(config, name)) is spec.kind
    for outside in (spec.low - step, spec.high + step):
        message = _message(**{name: spec.kind(outside)}, **extra)
        assert name in message
        assert spec.valid_range() in message


@pytest.mark.parametrize("name", NUMERIC)
def test_range_in_the_message_is_exact(name: str) -> None:
    """A message must state bounds a user can copy: 1048576, not 1.04858e+06."""
    spec = SPECS[name]
    message = _message(**{name: spec.kind(spec.high) * 2})
    match = RANGE.search(message)
    assert match, message
    assert float(match.group(1)) == spec.low, message
    assert float(match.group(2)) == spec.high, message


@pytest.mark.parametrize("name", CHOICE)
def test_choice_knob_lists_its_choices(name: str) -> None:
    spec = SPECS[name]
    for choice in spec.choices:
        assert getattr(StoreConfig(**{name: choice}), name) == choice
    message = _message(**{name: "not-a-choice"})
    assert name in message
    for choice in spec.choices:
        assert repr(choice) in message


@pytest.mark.parametrize("name", [n for n in CHOICE if SPECS[n].kind is bool])
def test_bool_knob_rejects_truthy_values(name: str) -> None:
    for value in ("true", "yes", None, 2):
        assert name in _message(**{name: value})


@pytest.mark.parametrize("name", [n for n in NUMERIC if SPECS[n].kind is int])
def test_int_knob_rejects_fractions_bools_and_strings(name: str) -> None:
    spec = SPECS[name]
    assert spec.low is not None
    for value in (spec.low + 0.5, True, str(int(spec.low)), None):
        message = _message(**{name: value})
        assert name in message
        assert spec.valid_range() in message
    # an integral float is accepted as the int it is
    config = StoreConfig(**{name: float(spec.low)}, **_companions(name))
    assert getattr(config, name) == int(spec.low)
    assert type(getattr(config, name)) is int


@pytest.mark.parametrize(
    "value", [math.nan, math.inf, -math.inf, 10**400], ids=["nan", "inf", "-inf", "1e400"]
)
def test_int_knob_rejects_non_finite_numbers(value: float) -> None:
    failures = []
    for name in (n for n in NUMERIC if SPECS[n].kind is int):
        try:
            StoreConfig(**{name: value})
        except ValueError as error:
            if name not in str(error):
                failures.append(f"{name}={value!r}: {error}")
        except Exception as error:
            failures.append(f"{name}={value!r}: {error!r}")
        else:
            failures.append(f"{name}={value!r}: accepted")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("name", [n for n in NUMERIC if SPECS[n].kind is float])
def test_float_knob_rejects_nan_bools_and_strings(name: str) -> None:
    for value in (math.nan, True, "0.5", None, math.inf):
        assert name in _message(**{name: value})


def test_slowdown_trigger_must_not_exceed_stop_trigger() -> None:
    message = _message(level0_slowdown_writes_trigger=40, level0_stop_writes_trigger=30)
    assert "level0_slowdown_writes_trigger" in message
    assert "level0_stop_writes_trigger" in message
    config = StoreConfig(level0_slowdown_writes_trigger=30, level0_stop_writes_trigger=30)
    assert config.level0_slowdown_writes_trigger == config.level0_stop_writes_trigger == 30


def test_from_dict_rejects_unknown_knobs_listing_the_valid_ones() -> None:
    with pytest.raises(ValueError) as info:
        StoreConfig.from_dict({"memtable_bytes": 1 << 20, "zz_unknown": 1, "write_buffer_size": 1 << 20})
    message = str(info.value)
    assert "memtable_bytes" in message
    assert "zz_unknown" in message
    for name in SPECS:
        assert name in message


def test_from_dict_to_dict_round_trip_and_base() -> None:
    tuned = StoreConfig(write_buffer_size=8 << 20, blob_compression_type="zstd", writer_overflow="drop")
    assert StoreConfig.from_dict(tuned.to_dict()) == tuned
    assert tuned.to_dict() == dataclasses.asdict(tuned), "knobs are scalars: a shallow dict is a full one"
    assert {type(value) for value in tuned.to_dict().values()} <= {bool, int, float, str}
    over = StoreConfig.from_dict({"min_blob_size": 1024}, base=tuned)
    assert over.min_blob_size == 1024
    assert over.write_buffer_size == 8 << 20
    assert over.blob_compression_type == "zstd"
    assert StoreConfig.from_dict({}) == StoreConfig()
    with pytest.raises(ValueError, match="min_blob_size"):
        StoreConfig.from_dict({"min_blob_size": 1}, base=tuned)


def test_replace_validates_and_keeps_the_original() -> None:
    config = StoreConfig()
    with pytest.raises(ValueError, match="writer_batch_size"):
        config.replace(writer_batch_size=0)
    assert config.replace(writer_batch_size=8).writer_batch_size == 8
    assert config.writer_batch_size == StoreConfig().writer_batch_size


def test_config_is_frozen() -> None:
    config = StoreConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.write_buffer_size = 1 << 20  # type: ignore[misc]


def test_changed_and_needs_reopen() -> None:
    base = StoreConfig()
    other = base.replace(write_buffer_size=8 << 20, block_cache_bytes=8 << 20, writer_batch_size=4)
    assert base.changed(other) == {
        "write_buffer_size": 8 << 20,
        "block_cache_bytes": 8 << 20,
        "writer_batch_size": 4,
    }
    assert base.changed(base) == {}
    assert base.needs_reopen(other) == ["block_cache_bytes"]
    assert base.needs_reopen(base.replace(write_buffer_size=2 << 20)) == []
    for name, spec in SPECS.items():
        if not spec.live:
            assert spec.rocksdb_option is None or name == "block_cache_bytes"


def test_rocksdb_options_are_set_options_strings() -> None:
    config = StoreConfig(
        write_buffer_size=8 << 20,
        enable_blob_files=False,
        enable_blob_garbage_collection=True,
        blob_garbage_collection_age_cutoff=0.5,
        max_bytes_for_level_multiplier=8.0,
        blob_compression_type="lz4",
    )
    options = config.rocksdb_options()
    assert set(options) == {spec.rocksdb_option for spec in SPECS.values() if spec.rocksdb_option}
    assert all(isinstance(value, str) for value in options.values())
    assert options["write_buffer_size"] == "8388608"
    assert options["enable_blob_files"] == "false"
    assert options["enable_blob_garbage_collection"] == "true"
    assert float(options["blob_garbage_collection_age_cutoff"]) == 0.5
    assert float(options["max_bytes_for_level_multiplier"]) == 8.0
    assert options["blob_compression_type"] == "kLZ4Compression"
    assert StoreConfig(blob_compression_type="zstd").rocksdb_options()["blob_compression_type"] == "kZSTD"
    assert StoreConfig().rocksdb_options()["blob_compression_type"] == "kNoCompression"
    for name in (
        "disable_wal",
        "writer_batch_size",
        "writer_queue_depth",
        "eviction_order",
        "block_cache_bytes",
    ):
        assert name not in options  # kvtune's own knobs, not RocksDB column-family options


@pytest.mark.parametrize("compression", ["none", "lz4", "zstd"])
def test_rocksdb_accepts_every_option_string(compression: str) -> None:
    """RocksDB's SetOptions takes the strings, with non-default values, at the bounds of every knob."""
    low = {n: SPECS[n].kind(SPECS[n].low) for n in NUMERIC if SPECS[n].rocksdb_option}
    high = {n: SPECS[n].kind(SPECS[n].high) for n in NUMERIC if SPECS[n].rocksdb_option}
    with tempfile.TemporaryDirectory() as directory:
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        db = Rdict(directory, options)
        try:
            for values in (low, high):
                config = StoreConfig(**values, blob_compression_type=compression, enable_blob_files=True)
                db.set_options(config.rocksdb_options())
            db.set_options(StoreConfig().rocksdb_options())
            db[b"k"] = b"v"
            assert db[b"k"] == b"v"
        finally:
            db.close()


def test_constructor_rejects_unknown_knobs_with_a_value_error() -> None:
    with pytest.raises(
        ValueError, match=r"unknown knob\(s\) memtable_bytes; valid knobs: .*write_buffer_size"
    ):
        StoreConfig(memtable_bytes=1 << 20)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("values", "stop"),
    [
        ({}, 36),  # the defaults already order the triggers
        ({"level0_slowdown_writes_trigger": 40}, 60),  # 1.5x the slowdown trigger
        ({"level0_slowdown_writes_trigger": 4, "level0_file_num_compaction_trigger": 64}, 65),
        ({"level0_slowdown_writes_trigger": 4, "level0_stop_writes_trigger": 100}, 100),  # a given stop
        ({"level0_slowdown_writes_trigger": 256}, 384),
        ({"level0_slowdown_writes_trigger": 256, "level0_stop_writes_trigger": 500}, 500),
    ],
)
def test_derive_orders_the_l0_triggers(values: dict[str, int], stop: int) -> None:
    config = StoreConfig().derive(values)
    assert config.level0_stop_writes_trigger == stop
    assert config.level0_slowdown_writes_trigger <= config.level0_stop_writes_trigger
    assert config.level0_file_num_compaction_trigger < config.level0_stop_writes_trigger


def test_derive_stays_inside_the_stop_triggers_range() -> None:
    base = StoreConfig(level0_stop_writes_trigger=512, level0_slowdown_writes_trigger=256)
    assert base.derive({"level0_slowdown_writes_trigger": 256}).level0_stop_writes_trigger == 512
    assert StoreConfig.derived_knobs() == {"level0_stop_writes_trigger": "level0_slowdown_writes_trigger"}
