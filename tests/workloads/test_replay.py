"""The replay engine: exact ideal hits on every store kind, the clocks, policies, windows, outputs."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from store import STORE_KINDS, StoreConfig
from store.config import MiB
from store.pages import PagePlan, plan_pages
from tests.workloads.helpers import ideal_hit_tokens, ideal_ratio
from workloads import ReplayConfig, ReplaySession, Request, mixed, replay, staged
from workloads.profiles import DeviceProfile
from workloads.replay import full_prefill_utilization, scale_to_utilization

PAGE = 16
SEGMENTS = (
    (
        "staged",
        {
            "phase_requests": 8,
            "targets": (0.2, 0.8),
            "chunk_tokens": 64,
            "chunks_per_prompt": 8,
            "pool_chunks": 128,
        },
    ),
    (
        "chat",
        {
            "sessions": 4,
            "turns": (2, 3),
            "system_tokens": 64,
            "user_tokens": (16, 64),
            "output_tokens": (16, 64),
        },
    ),
    (
        "rag",
        {"requests": 10, "documents": 6, "doc_tokens": 64, "system_tokens": 40, "question_tokens": (8, 24)},
    ),
)


@pytest.fixture(scope="module")
def workload() -> list[Request]:
    return mixed(seed=7, segments=SEGMENTS)


WAL_ON = StoreConfig(disable_wal=False)
"""Stores whose every write reaches the device within a window (the WAL's copy)."""


def config(**changes: object) -> ReplayConfig:
    values: dict[str, object] = {"page_size": PAGE, "window_requests": 8, "memory_tier_bytes": 0}
    values.update(changes)
    return ReplayConfig(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("memory_pages", [0, 6])
@pytest.mark.parametrize("kind", STORE_KINDS)
def test_every_store_kind_reaches_the_ideal_hit_ratio(
    workload: list[Request], tmp_path: Path, kind: str, memory_pages: int
) -> None:
    cfg = config(store_kind=kind, blocking_writes=True, memory_tier_bytes=memory_pages * PAGE * 256)
    result = replay(workload, cfg, path=tmp_path / "store")
    ideal = ideal_hit_tokens(workload, PAGE)
    assert ideal.sum() > 0
    assert [r.hit_tokens for r in result.records] == ideal.tolist()
    assert [r.ideal_hit_tokens for r in result.records] == ideal.tolist()
    assert result.summary.hit_token_ratio == pytest.approx(ideal_ratio(workload, PAGE), abs=1e-12)
    assert result.summary.dropped_pages == 0
    disk = sum(r.disk_hit_tokens for r in result.records)
    memory = sum(r.memory_hit_tokens for r in result.records)
    assert disk + memory == ideal.sum()
    assert disk > 0 and (memory > 0) == (memory_pages > 0)


def test_the_counters_clock_is_deterministic_for_lsm(workload: list[Request]) -> None:
    def run() -> list[tuple[int, int, int, float]]:
        # the WAL on: with kvtune's default (off) a replay this short writes nothing to the device
        result = replay(workload, config(store_kind="lsm", blocking_writes=True), store_config=WAL_ON)
        return [
            (w.device_write_bytes, w.device_read_bytes, w.device_ops, w.io_s_counters) for w in result.windows
        ]

    first, second = run(), run()
    assert first == second
    assert sum(w[0] for w in first) > 0


def test_summary_and_tables(workload: list[Request], tmp_path: Path) -> None:
    result = replay(workload, config(), out_dir=tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    for key in (
        "requests",
        "hit_token_ratio",
        "mean_ttft_s",
        "p50_ttft_s",
        "p99_ttft_s",
        "dropped_pages",
        "clock",
        "clocks",
        "engine",
        "phases",
        "config",
        "store_stats",
    ):
        assert key in summary, key
    assert summary["requests"] == len(workload)
    assert summary["clock"] == "counters" and summary["config"]["store_kind"] == "lsm"
    assert summary["engine"]["overhead_s"] > 0
    assert (
        summary["engine"]["wall_s"]
        >= summary["engine"]["overhead_s"] + summary["engine"]["store_call_s"] - 1e-6
    )
    with (tmp_path / "requests.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(workload)
    hit = sum(int(r["hit_tokens"]) for r in rows) / sum(int(r["prompt_tokens"]) for r in rows)
    assert hit == pytest.approx(summary["hit_token_ratio"])
    ttfts = sorted(float(r["ttft_s"]) for r in rows)
    assert summary["mean_ttft_s"] == pytest.approx(sum(ttfts) / len(ttfts))
    assert summary["p50_ttft_s"] == pytest.approx((ttfts[len(ttfts) // 2 - 1] + ttfts[len(ttfts) // 2]) / 2)
    with (tmp_path / "windows.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == math.ceil(len(workload) / 8)
    assert set(summary["phases"]) == {r.phase for r in workload}
    assert result.summary.requests == len(result.records)


def test_ttft_is_queue_plus_load_plus_prefill_in_a_fifo(workload: list[Request]) -> None:
    burst = [Request(0.0, r.tokens, r.output_len) for r in workload[:12]]
    records = replay(burst, config(clock="measured", blocking_writes=True)).records
    finish = 0.0
    for record in records:
        assert record.ttft_s == pytest.approx(record.queue_s + record.load_s + record.prefill_s)
        assert record.queue_s == pytest.approx(finish)  # everything arrives at 0: each waits for the last
        finish += record.load_s + record.prefill_s
        # every request arrives before any backup completes: stored pages are late, nothing hits
        assert record.hit_tokens == 0
    assert sum(r.backup_late_pages for r in records) > 0


def test_a_short_prefetch_timeout_loses_hits(workload: list[Request]) -> None:
    ideal = ideal_hit_tokens(workload, PAGE).sum()
    slow_reads = {"store_kind": "file", "blocking_writes": True, "prefetch": "timeout"}
    waited = replay(workload, config(**slow_reads, prefetch_timeout_s=1e3))
    assert sum(r.hit_tokens for r in waited.records) == ideal
    hurried = replay(workload, config(**slow_reads, prefetch_timeout_s=1e-9))
    assert sum(r.hit_tokens for r in hurried.records) == 0


def test_write_back_writes_only_pages_hit_often_enough(workload: list[Request]) -> None:
    never = replay(
        workload,
        config(
            write_policy="write_back",
            write_back_hits=10**6,
            memory_tier_bytes=8 * PAGE * 256,
            blocking_writes=True,
        ),
    )
    assert never.summary.store_stats["pages_stored"] == 0
    assert never.summary.disk_hit_token_ratio == 0
    every = replay(
        workload,
        config(
            write_policy="write_back",
            write_back_hits=0,
            memory_tier_bytes=8 * PAGE * 256,
            blocking_writes=True,
        ),
    )
    assert every.summary.store_stats["pages_stored"] > 0
    assert every.summary.disk_hit_token_ratio > 0
    assert every.summary.hit_token_ratio <= every.summary.overall.ideal_hit_token_ratio


def test_a_writer_that_cannot_keep_up_drops_pages_and_loses_hits() -> None:
    prompts = staged(seed=0, phase_requests=10, targets=(0.0,), chunk_tokens=256, pool_chunks=512)
    repeats = [Request(1e3, r.tokens, r.output_len) for r in prompts]  # each prompt's only reuse
    knobs = StoreConfig(writer_overflow="drop", writer_queue_depth=1, writer_batch_size=1)
    result = replay(prompts + repeats, config(window_requests=20, page_size=64), store_config=knobs)
    assert result.summary.overall.ideal_hit_token_ratio == 0.5
    assert result.summary.dropped_pages > 0
    assert result.summary.hit_token_ratio < 0.5


def test_a_budget_evicts_and_loses_hits(workload: list[Request]) -> None:
    result = replay(workload, config(store_kind="memory", budget_bytes=12 * PAGE * 256, blocking_writes=True))
    assert result.summary.evicted_pages > 0
    assert result.summary.hit_token_ratio < result.summary.overall.ideal_hit_token_ratio
    assert all(w.budget_bytes == 12 * PAGE * 256 for w in result.windows)


def test_a_session_runs_window_by_window_and_retunes(workload: list[Request], tmp_path: Path) -> None:
    with ReplaySession(workload, config(blocking_writes=True), WAL_ON, path=tmp_path / "db") as session:
        first = session.run_window(5)
        assert (first.index, first.first_request, first.requests) == (0, 0, 5)
        assert first.io_s_counters > 0 and first.writer_queue_depth == 0, "blocking writes bypass the queue"
        assert session.store.stats().pages_stored == first.pages_stored
        assert session.apply(session.store.config) == 0.0
        seconds = session.apply(WAL_ON.replace(writer_queue_depth=8))  # needs a reopen
        assert seconds > 0 and session.store.config.writer_queue_depth == 8
        second = session.run_window(10**6)
        assert second.reopen_s == pytest.approx(seconds)
        assert second.requests == len(workload) - 5 and session.done and session.remaining == 0
        assert second.device_write_bytes > 0 and second.io_s_measured > 0
        with pytest.raises(ValueError, match="done"):
            session.run_window(1)
        result = session.result()
    ideal = ideal_hit_tokens(workload, PAGE)
    assert [r.hit_tokens for r in result.records] == ideal.tolist()
    assert [w.index for w in result.windows] == [0, 1]


def test_bad_configs_say_what_is_valid(workload: list[Request]) -> None:
    with pytest.raises(ValueError, match="valid values: counters, measured"):
        config(clock="wall")
    with pytest.raises(ValueError, match="valid values: lsm, file, applog, memory"):
        config(store_kind="sqlite")
    with pytest.raises(ValueError, match="valid values: write_through, write_back"):
        config(write_policy="write_around")
    with pytest.raises(ValueError, match="arrival order"):
        ReplaySession(list(reversed(workload)), config())
    with pytest.raises(ValueError, match="empty"):
        ReplaySession([], config())


def test_host_ram_shrinks_the_tier_by_exactly_the_store_share(workload: list[Request]) -> None:
    page_bytes = config().page_bytes
    assert page_bytes == 4096
    knobs = StoreConfig(write_buffer_size=MiB, max_write_buffer_number=2, block_cache_bytes=MiB)
    host_ram = 4 * MiB + 5 * page_bytes
    with ReplaySession(workload, config(host_ram_bytes=host_ram), knobs) as session:
        window = session.run_window(4)
    assert (window.host_ram_bytes, window.store_ram_bytes) == (host_ram, 3 * MiB)
    assert window.memory_tier_pages == MiB // page_bytes + 5
    with ReplaySession(workload, config(store_kind="file", host_ram_bytes=host_ram)) as session:
        assert session.run_window(4).memory_tier_pages == 4 * MiB // page_bytes + 5


def test_a_full_host_pool_refuses_backups_that_never_reach_the_store(workload: list[Request]) -> None:
    pool_pages = 20
    page_bytes = config().page_bytes
    # a disk that takes hours per page: no backup is acknowledged during the run, so the pool stays full
    stuck = DeviceProfile(
        "stuck", write_bytes_per_s=1.0, read_bytes_per_s=1e9, op_latency_s=0.0, source="test"
    )
    cfg = config(
        store_kind="file", blocking_writes=True, device=stuck, host_ram_bytes=pool_pages * page_bytes
    )
    result = replay(workload, cfg)
    assert sum(r.pages_written for r in result.records) == pool_pages
    assert result.summary.store_stats["pages_stored"] == pool_pages
    refused = sum(r.backup_host_full_pages for r in result.records)
    assert refused > 0 and result.summary.backup_host_full_pages == refused
    assert sum(w.backup_host_full_pages for w in result.windows) == refused
    assert result.summary.to_dict()["backup_host_full_pages"] == refused
    assert [w.pending_backup_pages for w in result.windows] == [pool_pages] * len(result.windows)
    roomy = replay(
        workload, config(store_kind="file", blocking_writes=True, device=stuck, host_ram_bytes=MiB**2)
    )
    assert roomy.summary.backup_host_full_pages == 0


def test_a_store_config_over_the_host_ram_is_refused_or_clamped(
    workload: list[Request], caplog: pytest.LogCaptureFixture
) -> None:
    too_big = StoreConfig(write_buffer_size=4 * MiB, max_write_buffer_number=4, block_cache_bytes=MiB)
    with pytest.raises(ValueError, match="write_buffer_size x max_write_buffer_number"):
        ReplaySession(workload, config(host_ram_bytes=8 * MiB), too_big)
    small = StoreConfig(write_buffer_size=MiB, block_cache_bytes=MiB)
    with ReplaySession(workload, config(host_ram_bytes=8 * MiB), small) as session:
        session.apply(too_big)
        applied = session.store.config
        assert "clamped write_buffer_size=2097152, max_write_buffer_number=2" in caplog.text
        assert (applied.write_buffer_size, applied.max_write_buffer_number) == (2 * MiB, 2)
        assert session.store_ram_bytes == 5 * MiB


def test_target_utilization_scales_trace_time(
    workload: list[Request], caplog: pytest.LogCaptureFixture
) -> None:
    target = config(servers=2, target_utilization=0.25)
    scaled = scale_to_utilization(workload, target)
    assert full_prefill_utilization(scaled, target) == pytest.approx(0.25)
    assert [r.tokens is s.tokens for r, s in zip(workload, scaled, strict=True)] == [True] * len(workload)
    burst = [Request(0.0, r.tokens, r.output_len) for r in workload[:3]] + [
        Request(1e-3, workload[3].tokens, 1)
    ]
    replay(burst, config())
    assert "--target-utilization" in caplog.text


def test_sessions_sharing_plans_hash_each_request_once_and_replay_the_same(
    workload: list[Request], tmp_path: Path
) -> None:
    def run(name: str, plans: dict[int, PagePlan] | None) -> list[tuple[float, ...]]:
        cfg = config(store_kind="lsm", blocking_writes=True)
        with ReplaySession(workload, cfg, WAL_ON, path=tmp_path / name, plans=plans) as session:
            while not session.done:
                session.run_window(8)
            result = session.result()
        return [(r.hit_tokens, r.disk_read_bytes, r.pages_written, r.ttft_s) for r in result.records] + [
            (w.device_write_bytes, w.device_read_bytes, w.device_ops, w.io_s_counters) for w in result.windows
        ]

    alone = run("alone", None)
    plans: dict[int, PagePlan] = {}
    first = run("first", plans)
    made = dict(plans)
    assert sorted(made) == list(range(len(workload)))
    assert [made[i] for i in range(len(workload))] == [
        plan_pages(r.tokens, PAGE, ReplayConfig().namespace) for r in workload
    ]
    second = run("second", plans)
    assert all(plans[i] is made[i] for i in made), "the second session read the first one's plans"
    assert first == alone and second == alone
