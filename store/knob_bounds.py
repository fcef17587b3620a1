"""Knob bounds relative to a store's disk budget: what an LSM store holds that eviction cannot free.

A budgeted ``lsm`` store keeps its disk within the budget by evicting pages and compacting their space
away, but two things on disk are out of eviction's reach: the write-ahead log of the memtables not yet
flushed (up to ``write_buffer_size * max_write_buffer_number``), and the blob file being written (up to
``blob_file_size``; a closed one is freed only once all its pages are evicted, or by relocating the
live ones). Absolute knob ranges let a policy set either past the whole budget: 1 GiB blob files and
256 MiB memtables on a 32 MiB budget took the disk to 5.8x the budget. So under a budget these knobs are
clamped to shares of it, at open and at every ``apply``, with a logged warning, counted in
``StoreStats.knobs_clamped``.
"""

from __future__ import annotations

from dataclasses import dataclass

from store.config import StoreConfig

WRITE_BUFFER_SHARE = 1 / 8
"""``write_buffer_size`` is at most this share of the budget (never below the knob's own minimum)."""
MEMTABLES_SHARE = 1 / 4
"""``write_buffer_size * max_write_buffer_number`` (the unflushed bytes the WAL holds) is at most this
share of the budget: ``max_write_buffer_number`` is lowered to fit, never below 2 (one memtable would
stop writes at every flush)."""
BLOB_FILE_SHARE = 1 / 8
"""``blob_file_size`` is at most this share of the budget (never below the knob's own minimum)."""
DISK_SLACK_SHARE = 1.0
"""How far past its budget a bounded ``lsm`` store's disk may go for a moment: a compaction that rewrites
values (values inline in SSTs, blob GC, or a switch of ``enable_blob_files`` or ``min_blob_size`` that
moves them) writes its output, up to the live bytes, before it deletes its inputs, and memtables
(:data:`MEMTABLES_SHARE`) may flush meanwhile. The peak lasts one compaction; between compactions the
disk is within the budget. Measured: at most 1.7x for the all-high corner, 1.8x when the policy
alternates the corners every window (``kvtune bench adversarial``)."""


@dataclass(frozen=True)
class ClampedKnob:
    """A knob the budget bounded: the value asked for and the value used."""

    name: str
    asked: int
    used: int


def bound_by_budget(config: StoreConfig, budget_bytes: int | None) -> tuple[StoreConfig, list[ClampedKnob]]:
    """``config`` with its budget-driven knobs within their shares of ``budget_bytes`` (unchanged without
    a budget), and the knobs that had to move."""
    if budget_bytes is None:
        return config, []
    specs = StoreConfig.specs()

    def at_least_low(name: str, value: float) -> int:
        return max(int(specs[name].low or 0), int(value))

    write_buffer = min(
        config.write_buffer_size, at_least_low("write_buffer_size", budget_bytes * WRITE_BUFFER_SHARE)
    )
    buffers = min(
        config.max_write_buffer_number,
        at_least_low("max_write_buffer_number", budget_bytes * MEMTABLES_SHARE // write_buffer),
    )
    bounded = {
        "write_buffer_size": write_buffer,
        "max_write_buffer_number": buffers,
        "blob_file_size": min(
            config.blob_file_size, at_least_low("blob_file_size", budget_bytes * BLOB_FILE_SHARE)
        ),
    }
    clamped = [
        ClampedKnob(name, getattr(config, name), value)
        for name, value in bounded.items()
        if value != getattr(config, name)
    ]
    if not clamped:
        return config, []
    return config.replace(**{knob.name: knob.used for knob in clamped}), clamped
