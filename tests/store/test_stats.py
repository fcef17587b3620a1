"""The stats snapshot is one typed record: the operation counts and the backend's state, plus latencies."""

from __future__ import annotations

from dataclasses import fields

import pytest

from store.stats import BackendState, LatencySummary, OpCounters, OpCounts, StoreStats
from tests.store.conftest import PAGE_SIZE, MakeStore, make_kv, make_tokens


def test_store_stats_is_its_counts_and_backend_state(make_store: MakeStore, kind: str) -> None:
    s = make_store(kind)
    tokens = make_tokens(1, 2 * PAGE_SIZE)
    s.put_batch(tokens, make_kv(1, len(tokens)))
    s.probe(tokens)
    stats = s.stats()
    own = {"kind", "put_latency", "probe_latency", "get_latency", "writer_queue_depth"}
    parts = {item.name for item in fields(OpCounts)} | {item.name for item in fields(BackendState)}
    assert set(stats.to_dict()) == parts | own
    assert (stats.kind, stats.puts, stats.pages_written, stats.probes, stats.pages_hit) == (kind, 1, 2, 1, 2)
    assert (stats.put_latency.count, stats.probe_latency.count, stats.get_latency.count) == (1, 1, 0)
    assert stats.pages_stored == 2


def test_counters_add_up_into_the_record() -> None:
    counters = OpCounters()
    counters.add(puts=2, pages_written=3)
    counters.add(puts=1, device_ops=4)
    counts = counters.counts()
    assert counts == OpCounts(puts=3, pages_written=3, device_ops=4)
    state = BackendState(
        pages_stored=1, live_bytes=2, disk_bytes=3, files=4, device_write_bytes=5, device_read_bytes=6
    )
    stats = StoreStats.of("memory", counts, state, counters.latencies(counts), 7)
    assert (stats.puts, stats.files, stats.writer_queue_depth, stats.put_latency.count) == (3, 4, 7, 3)


def test_an_unknown_counter_is_refused() -> None:
    with pytest.raises(KeyError, match="putz"):
        OpCounters().add(putz=1)


def test_latency_percentiles_are_those_of_the_samples() -> None:
    summary = LatencySummary(count=101, total_s=5050.0, samples=tuple(float(i) for i in range(1, 102)))
    assert (summary.p50_s, summary.p99_s) == (51.0, 100.0)
    assert summary.to_dict() == {"count": 101, "p50_s": 51.0, "p99_s": 100.0, "total_s": 5050.0}
    assert LatencySummary(count=3).to_dict() == {"count": 3, "p50_s": 0.0, "p99_s": 0.0, "total_s": 0.0}


def test_a_snapshot_keeps_the_latest_samples_and_writes_percentiles() -> None:
    counters = OpCounters()
    for seconds in (0.5, 0.1, 0.3):
        counters.record("get", seconds)
    counts = OpCounts(gets=3)
    stats = StoreStats.of(
        "memory",
        counts,
        BackendState(pages_stored=0, live_bytes=0, disk_bytes=0, files=0),
        counters.latencies(counts),
        0,
    )
    assert stats.get_latency.samples == (0.5, 0.1, 0.3)
    assert stats.to_dict()["get_latency"] == {
        "count": 3,
        "p50_s": 0.3,
        "p99_s": pytest.approx(0.496),
        "total_s": pytest.approx(0.9),
    }
