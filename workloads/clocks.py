"""The two clocks of store I/O, both read from the store's own :class:`store.StoreStats`.

- ``counters``: a window's device time priced from the store's counters for that window — bytes the
  device wrote (WAL, flush, compaction and blob-GC rewrites included) and read, file-system operations,
  and the time writes were stalled — with a :class:`workloads.profiles.DeviceProfile`. It depends on what
  the store did, not on how busy the machine was, so it is what learning and searches use.
- ``measured``: the wall time the store spent in its own put, probe and get calls during the window
  (background writes included), as the store timed them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from store import StoreStats
from store.stats import DeviceCounters, OpCounts
from workloads.profiles import DeviceProfile

CLOCKS = ("counters", "measured")


@dataclass(frozen=True, kw_only=True)
class IOCounters(OpCounts, DeviceCounters):
    """A store's cumulative counters, as its :class:`store.StoreStats` holds them, with the wall time of
    its calls (``store_op_s``); or their change over a window."""

    store_op_s: float = 0.0

    @classmethod
    def from_stats(cls, stats: StoreStats) -> IOCounters:
        calls = (stats.put_latency, stats.probe_latency, stats.get_latency)
        counters = {f.name: getattr(stats, f.name) for f in dataclasses.fields(cls) if f.name != "store_op_s"}
        return cls(**counters, store_op_s=sum(latency.total_s for latency in calls))

    def _combine(self, other: IOCounters, sign: int) -> IOCounters:
        return IOCounters(
            **{
                f.name: getattr(self, f.name) + sign * getattr(other, f.name)
                for f in dataclasses.fields(self)
            }
        )

    def __add__(self, other: IOCounters) -> IOCounters:
        return self._combine(other, 1)

    def __sub__(self, other: IOCounters) -> IOCounters:
        return self._combine(other, -1)

    def seconds(self, clock: str, device: DeviceProfile, byte_scale: int = 1) -> float:
        """The I/O time of these counters on ``clock``.

        ``byte_scale`` prices a store of scaled-down tensors at full size on the ``counters`` clock: its
        bytes count ``byte_scale`` times, its operations and stalls once. ``measured`` is the wall time
        of the store as it ran.
        """
        if clock == "counters":
            return device.io_seconds(
                self.device_write_bytes * byte_scale,
                self.device_read_bytes * byte_scale,
                self.device_ops,
                self.stall_s,
            )
        if clock == "measured":
            return self.store_op_s
        raise ValueError(f"unknown clock {clock!r}; valid clocks: {', '.join(CLOCKS)}")


class WindowCounters:
    """Accumulates a store's counter changes over a window, across reopens that reset the store's counters.

    Call :meth:`advance` with a fresh snapshot before anything that may reset counters (a reopen), then
    :meth:`rebase` with the snapshot after it; :meth:`take` returns the window's change and starts anew.
    """

    def __init__(self, stats: StoreStats) -> None:
        self._last = IOCounters.from_stats(stats)
        self._window = IOCounters()

    def advance(self, stats: StoreStats) -> None:
        current = IOCounters.from_stats(stats)
        self._window = self._window + (current - self._last)
        self._last = current

    def rebase(self, stats: StoreStats) -> None:
        self._last = IOCounters.from_stats(stats)

    def take(self) -> IOCounters:
        window, self._window = self._window, IOCounters()
        return window
