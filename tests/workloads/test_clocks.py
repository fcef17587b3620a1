"""The clocks' counters are the store's own records (no field spelled twice), and their windows add up."""

from __future__ import annotations

from dataclasses import fields

from store.stats import BackendState, DeviceCounters, LatencySummary, OpCounts, StoreStats
from workloads.clocks import IOCounters, WindowCounters
from workloads.profiles import DeviceProfile


def _stats(puts: int, device_write_bytes: int, put_s: float) -> StoreStats:
    state = BackendState(
        pages_stored=1,
        live_bytes=2,
        disk_bytes=3,
        files=4,
        device_write_bytes=device_write_bytes,
        stall_s=0.5,
    )
    latencies = (LatencySummary(count=puts, total_s=put_s), LatencySummary(total_s=1.0), LatencySummary())
    return StoreStats.of("lsm", OpCounts(puts=puts, device_ops=2 * puts), state, latencies, 0)


def test_io_counters_are_the_store_counters_and_the_call_time() -> None:
    names = {f.name for f in fields(IOCounters)}
    assert names == {f.name for f in fields(OpCounts)} | {f.name for f in fields(DeviceCounters)} | {
        "store_op_s"
    }
    counters = IOCounters.from_stats(_stats(3, 4096, 0.25))
    assert (counters.puts, counters.device_ops, counters.device_write_bytes) == (3, 6, 4096)
    assert (counters.stall_s, counters.store_op_s) == (0.5, 1.25)


def test_a_window_is_the_change_across_a_reopen() -> None:
    window = WindowCounters(_stats(3, 4096, 0.25))
    window.advance(_stats(5, 6144, 0.5))
    window.rebase(_stats(0, 0, 0.0))  # a reopen starts the store's counters afresh
    window.advance(_stats(1, 1024, 0.125))
    change = window.take()
    assert (change.puts, change.device_ops, change.device_write_bytes) == (3, 6, 3072)
    assert change.store_op_s == 0.375
    assert window.take() == IOCounters()
    device = DeviceProfile(
        "test", write_bytes_per_s=1024.0, read_bytes_per_s=1.0, op_latency_s=0.5, source="test"
    )
    assert change.seconds("measured", device) == 0.375
    assert change.seconds("counters", device) == 3072 / 1024 + 6 * 0.5  # stalls did not grow
    assert change.seconds("counters", device, byte_scale=2) == 2 * 3072 / 1024 + 6 * 0.5
