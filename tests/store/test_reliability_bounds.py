"""Knobs bounded by the store's budget (store.knob_bounds): exact bounds, and the lsm store clamping them at
open and at apply, with a warning and a count."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from store import StoreConfig
from store.config import GiB, MiB
from store.knob_bounds import ClampedKnob, bound_by_budget
from tests.store.conftest import make_tokens, open_kind, prefix_kv

ALL_HIGH = StoreConfig(write_buffer_size=256 * MiB, max_write_buffer_number=8, blob_file_size=1 * GiB)


def test_the_all_high_corner_is_bounded_by_shares_of_the_budget() -> None:
    bounded, clamped = bound_by_budget(ALL_HIGH, 32 * MiB)
    assert clamped == [
        ClampedKnob("write_buffer_size", 256 * MiB, 4 * MiB),
        ClampedKnob("max_write_buffer_number", 8, 2),
        ClampedKnob("blob_file_size", 1 * GiB, 4 * MiB),
    ]
    assert (bounded.write_buffer_size, bounded.max_write_buffer_number, bounded.blob_file_size) == (
        4 * MiB,
        2,
        4 * MiB,
    )
    assert (
        bounded.replace(write_buffer_size=256 * MiB, max_write_buffer_number=8, blob_file_size=GiB)
        == ALL_HIGH
    )


def test_memtables_may_be_many_when_they_are_small() -> None:
    config = StoreConfig(write_buffer_size=1 * MiB, max_write_buffer_number=16, blob_file_size=2 * MiB)
    bounded, clamped = bound_by_budget(config, 32 * MiB)
    assert clamped == [ClampedKnob("max_write_buffer_number", 16, 8)]  # 8 x 1 MiB = a quarter of 32 MiB
    assert bounded.max_write_buffer_number * bounded.write_buffer_size == 8 * MiB


def test_a_tiny_budget_keeps_the_knobs_own_minimums() -> None:
    bounded, _ = bound_by_budget(ALL_HIGH, 1 * MiB)
    assert (bounded.write_buffer_size, bounded.max_write_buffer_number, bounded.blob_file_size) == (
        1 * MiB,
        2,
        1 * MiB,
    )


def test_no_budget_or_knobs_within_it_are_left_alone() -> None:
    assert bound_by_budget(ALL_HIGH, None) == (ALL_HIGH, [])
    small = StoreConfig(write_buffer_size=2 * MiB, blob_file_size=2 * MiB)
    bounded, clamped = bound_by_budget(small, 32 * MiB)
    assert bounded is small
    assert clamped == []


def test_lsm_clamps_at_open_and_at_apply_with_a_warning_and_a_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="store.lsm"):
        s = open_kind("lsm", tmp_path / "s", budget_bytes=32 * MiB, config=ALL_HIGH)
    try:
        assert (s.config.write_buffer_size, s.config.max_write_buffer_number, s.config.blob_file_size) == (
            4 * MiB,
            2,
            4 * MiB,
        )
        assert "blob_file_size=1073741824 clamped to 4194304" in caplog.text
        assert s.stats().knobs_clamped == 3
        assert caplog.text.count("clamped to") == 3
        with caplog.at_level(logging.WARNING, logger="store.lsm"):
            assert s.apply(ALL_HIGH) == []  # nothing to change: the bounded config is the current one
        assert s.stats().knobs_clamped == 6  # counted again, not warned again
        assert caplog.text.count("clamped to") == 3
        assert s.apply(ALL_HIGH.replace(write_buffer_size=2 * MiB)) == []
        assert (s.config.write_buffer_size, s.config.max_write_buffer_number) == (2 * MiB, 4)
        tokens = make_tokens(1, 32)
        assert s.put_batch(tokens, prefix_kv(tokens)) == 8
    finally:
        s.close()


def test_other_kinds_take_the_knobs_as_given(tmp_path: Path) -> None:
    with open_kind("file", tmp_path / "f", budget_bytes=32 * MiB, config=ALL_HIGH) as s:
        assert s.config == ALL_HIGH
        assert s.stats().knobs_clamped == 0
