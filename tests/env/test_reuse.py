"""The bounded page-reuse sketch: an LRU of page digests, with known answers."""

from __future__ import annotations

import pytest

from env.reuse import ReuseSketch


def test_reuse_counts_pages_seen_before_within_capacity() -> None:
    sketch = ReuseSketch(capacity=3)
    assert sketch.record([b"a" * 8, b"b" * 8]) == 0
    assert sketch.record([b"a" * 8, b"c" * 8]) == 1
    assert sketch.take_window() == pytest.approx(1 / 4)
    assert sketch.take_window() == 0.0, "a window with no lookups has no reuse"
    # capacity 3: recording d evicts the least recently seen digest, b (a was refreshed)
    assert sketch.record([b"d" * 8]) == 0
    assert len(sketch) == 3
    assert sketch.record([b"c" * 8, b"b" * 8]) == 1


def test_digests_compare_on_their_first_eight_bytes() -> None:
    sketch = ReuseSketch()
    sketch.record([bytes(range(32))])
    assert sketch.record([bytes(range(8)) + b"\xff" * 24]) == 1


@pytest.mark.parametrize("capacity", [0, -1, 1.5, True])
def test_capacity_must_be_a_positive_int(capacity: object) -> None:
    with pytest.raises(ValueError, match="sketch capacity must be a positive int"):
        ReuseSketch(capacity=capacity)  # type: ignore[arg-type]
