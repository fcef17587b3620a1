"""The serving timeline with known answers: a stub disk at a fixed price per page, a GPU at 1 s per token."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workloads.timeline import PREFETCH_POLICIES, QUEUED_S, BackupOutcome, DeviceTimeline, ServingTimeline


def timeline(
    policy: str = "wait_complete",
    *,
    servers: int = 1,
    timeout_s: float = 1.0,
    batch_pages: int = 1,
    queue_pages: int | None = None,
    host_pages: int | None = None,
) -> ServingTimeline:
    """One token per page, prefill 1 s per token, no host-to-device cost."""
    return ServingTimeline(
        servers=servers,
        policy=policy,
        timeout_s=timeout_s,
        page_size=1,
        prefill_seconds=float,
        load_seconds=lambda pages: 0.0,
        batch_pages=batch_pages,
        backup_queue_pages=queue_pages,
        host_pool_pages=host_pages,
    )


def keys(prefix: str, n: int) -> list[bytes]:
    return [f"{prefix}{i}".encode() for i in range(n)]


def test_a_job_takes_the_first_idle_gap_long_enough() -> None:
    disk = DeviceTimeline()
    assert disk.reserve(0.0, 1.0) == (0.0, 1.0)
    assert disk.reserve(5.0, 1.0) == (5.0, 6.0)
    assert disk.reserve(2.0, 1.0) == (2.0, 3.0)
    assert disk.reserve(0.5, 2.0) == (3.0, 5.0)  # [1, 2] is too short; [3, 5] fits exactly
    assert disk.reserve(0.0, 1.0) == (1.0, 2.0)
    assert disk.reserve(4.0, 0.5) == (6.0, 6.5)


def test_backups_slower_than_arrivals_make_exact_late_pages() -> None:
    serving = timeline()
    first = keys("a", 4)
    outcome = serving.backup(0.0, first, write_s_per_page=1.0)
    assert (outcome.queued, outcome.dropped) == (4, 0)
    # a probe at 2.5 of a store that holds all 4 sees 2: pages 2 and 3 are late
    assert serving.visible_prefix(first, 2.5, stored=4) == 2
    assert [serving.visible_at[k] for k in first] == [1.0, 2.0, 3.0, QUEUED_S]  # the last batch from 3
    assert serving.visible_prefix(first, 4.0, stored=4) == 4
    assert [serving.visible_at[k] for k in first] == [1.0, 2.0, 3.0, 4.0]
    assert serving.visible_prefix(first, 4.0, stored=3) == 3
    # the backup thread is busy until 4: the next backup queues behind it
    second = keys("b", 2)
    assert serving.backup(1.0, second, write_s_per_page=1.0).queued == 2
    assert serving.visible_prefix(second, 5.5, stored=2) == 1
    assert serving.visible_prefix(second, 6.0, stored=2) == 2
    assert serving.pending_pages(1.0) == 4 + 2
    assert serving.pending_pages(4.5) == 2
    assert serving.pending_pages(6.0) == 0


def test_a_bounded_queue_drops_exactly_what_does_not_fit() -> None:
    serving = timeline(queue_pages=3, batch_pages=128)
    outcomes = [serving.backup(t, keys(f"r{t}-", 2), write_s_per_page=1.0) for t in (0.0, 0.5, 1.0, 1.5)]
    assert [(o.queued, o.dropped) for o in outcomes] == [(2, 0), (1, 1), (0, 2), (0, 2)]
    assert serving.visible_at[b"r0.5-1"] == math.inf
    # a dropped page is backed up again next time; a queued one is not
    assert serving.needs_backup([b"r0.5-0", b"r0.5-1"], stored=2, time_s=2.0) == [b"r0.5-1"]
    # once the queue drains (the second operation is acknowledged at 3), there is room again
    assert serving.pending_pages(2.5) == 1
    assert serving.backup(3.0, keys("late", 3), write_s_per_page=1.0).queued == 3
    assert [serving.visible_at[k] for k in (b"r0.0-1", b"r0.5-0")] == [2.0, 3.0]


def test_a_full_host_pool_refuses_exactly_the_pages_it_cannot_pin() -> None:
    serving = timeline(host_pages=5)  # one page per batch, written in 1 s: slower than the arrivals
    outcomes = []
    for t in (0.0, 1.0, 2.0, 3.0):
        serving.pending_pages(t)  # a request arrives at t (the replay sizes the tier then) ...
        outcomes.append(serving.backup(t, keys(f"r{t:.0f}-", 3), write_s_per_page=1.0))  # ... and backs up
    # at 1 the first backup still pins its 3 pages (acknowledged at 3): 2 fit; at 2 all 5 are pinned;
    # at 3 the first is acknowledged and 3 fit again
    assert [(o.queued, o.dropped, o.host_full) for o in outcomes] == [
        (3, 0, 0),
        (2, 0, 1),
        (0, 0, 3),
        (3, 0, 0),
    ]
    assert [serving.pending_pages(t) for t in (0.0, 1.0, 2.0, 3.0)] == [3, 5, 5, 5]
    # the leading pages are kept, the rest never becomes visible and is backed up again when next needed
    assert serving.visible_prefix(keys("r1-", 3), 100.0, stored=3) == 2
    assert serving.visible_at[b"r1-2"] == serving.visible_at[b"r2-0"] == math.inf
    assert serving.needs_backup(keys("r1-", 3), stored=3, time_s=100.0) == [b"r1-2"]
    # a refused backup still meets a bounded queue: the queue drops from what the pool let through
    both = timeline(host_pages=4, queue_pages=3)
    assert both.backup(0.0, keys("a", 6), write_s_per_page=1.0) == BackupOutcome(
        queued=3, dropped=1, host_full=2
    )


def test_the_host_pool_counts_backups_the_thread_has_not_reached_as_pinned() -> None:
    serving = timeline(host_pages=5)
    serving.backup(0.0, keys("a", 3), write_s_per_page=1.0)  # written at 1, 2 and 3
    serving.pending_pages(1.5)  # the latest arrival: the thread has not taken the last batch yet
    # a request finishing at 3.5 finds the first backup still pinned (its acknowledgement at 3 is not
    # known before the replay reaches 3): 2 fit, where SGLang would take all 3
    assert serving.backup(3.5, keys("b", 3), write_s_per_page=1.0).host_full == 1
    serving.pending_pages(4.0)
    assert serving.backup(4.0, keys("c", 3), write_s_per_page=1.0).host_full == 0
    assert serving.pending_pages(4.0) == 5


def test_the_unbounded_queue_never_drops() -> None:
    serving = timeline(batch_pages=128)
    outcomes = [serving.backup(t, keys(f"r{t}-", 2), write_s_per_page=1.0) for t in (0.0, 0.5, 1.0, 1.5)]
    assert [o.dropped for o in outcomes] == [0, 0, 0, 0]
    assert serving.pending_pages(1.5) == 8
    assert serving.visible_prefix([b"r1.5-1"], 8.0, stored=1) == 1
    assert [serving.visible_at[f"r{t}-1".encode()] for t in (0.0, 0.5, 1.0, 1.5)] == [2.0, 4.0, 6.0, 8.0]


def test_timeout_loses_exactly_the_pages_past_the_deadline() -> None:
    serving = timeline("timeout", timeout_s=0.35)
    timing = serving.serve(0.0, prompt_tokens=12, memory_pages=2, disk_pages=10, read_s_per_page=0.1)
    # pages land at 0.1, 0.2, 0.3, ... : three by the deadline, seven recomputed
    assert timing.loaded_pages == 3
    assert timing.start_s == pytest.approx(0.35)
    assert timing.prefill_s == 12 - 2 - 3
    assert timing.ttft_s == pytest.approx(0.35 + 7)


def test_the_timeout_deadline_starts_when_a_server_could_take_the_request() -> None:
    serving = timeline("timeout", timeout_s=0.5)
    serving.serve(0.0, prompt_tokens=2, memory_pages=0, disk_pages=0, read_s_per_page=1.0)  # busy to 2
    timing = serving.serve(0.0, prompt_tokens=10, memory_pages=0, disk_pages=10, read_s_per_page=1.0)
    assert timing.start_s == 2.5 and timing.loaded_pages == 2


def test_wait_complete_waits_for_every_page() -> None:
    serving = timeline("wait_complete")
    timing = serving.serve(0.0, prompt_tokens=12, memory_pages=2, disk_pages=10, read_s_per_page=0.1)
    assert timing.loaded_pages == 10
    assert timing.start_s == pytest.approx(1.0) and timing.prefill_s == 1


def test_best_effort_never_waits_for_the_disk() -> None:
    serving = timeline("best_effort")
    serving.serve(0.0, prompt_tokens=3, memory_pages=0, disk_pages=0, read_s_per_page=1.0)  # busy to 3
    timing = serving.serve(1.0, prompt_tokens=10, memory_pages=0, disk_pages=10, read_s_per_page=0.5)
    assert timing.start_s == 3.0  # when the server frees up, whatever the disk still has to do
    assert timing.loaded_pages == 4  # landed at 1.5, 2.0, 2.5, 3.0
    idle = timeline("best_effort").serve(0.0, 10, 0, 10, read_s_per_page=1e6)
    assert idle.start_s == 0.0 and idle.loaded_pages == 0


def test_prefetch_batches_land_whole() -> None:
    serving = timeline("best_effort", batch_pages=4)
    serving.serve(0.0, prompt_tokens=3, memory_pages=0, disk_pages=0, read_s_per_page=1.0)  # busy to 3
    timing = serving.serve(0.0, prompt_tokens=10, memory_pages=0, disk_pages=10, read_s_per_page=0.5)
    assert timing.loaded_pages == 4  # the first batch of 4 landed at 2.0; the second lands at 4.0


@pytest.mark.parametrize("policy", PREFETCH_POLICIES)
def test_an_infinite_disk_gives_the_ideal_hits_for_every_policy(policy: str) -> None:
    serving = timeline(policy, timeout_s=1e-9)
    for arrival in (0.0, 0.0, 0.5):
        timing = serving.serve(arrival, prompt_tokens=20, memory_pages=3, disk_pages=7, read_s_per_page=0.0)
        assert timing.loaded_pages == 7
    assert serving.backup(1.0, keys("k", 3), write_s_per_page=0.0).queued == 3
    assert serving.visible_prefix(keys("k", 3), 1.0, stored=3) == 3


def test_utilization_is_busy_time_over_span() -> None:
    one = timeline()
    one.serve(0.0, prompt_tokens=1, memory_pages=0, disk_pages=0, read_s_per_page=0.0)
    one.serve(3.0, prompt_tokens=1, memory_pages=0, disk_pages=0, read_s_per_page=0.0)
    assert one.gpu_utilization(0.0, 4.0) == 0.5
    assert one.gpu_utilization(0.5, 1.5) == 0.5
    two = timeline(servers=2)
    two.serve(0.0, prompt_tokens=1, memory_pages=0, disk_pages=0, read_s_per_page=0.0)
    two.serve(0.0, prompt_tokens=1, memory_pages=0, disk_pages=0, read_s_per_page=0.0)
    assert two.gpu_utilization(0.0, 2.0) == 0.5  # 2 busy server-seconds of 4
    disk = timeline()
    disk.backup(0.0, keys("k", 3), write_s_per_page=1.0)
    assert disk.disk_utilization(0.0, 6.0) == 0.5


BATCH_S = 0.5
"""Write time of one batch of 4 pages at 0.125 s per page."""


def backlog(batches: int = 10) -> tuple[ServingTimeline, list[bytes]]:
    """A timeline whose backup thread has ``batches`` batches of 4 pages queued at 0."""
    serving = timeline(batch_pages=4)
    pages = keys("b", 4 * batches)
    assert serving.backup(0.0, pages, write_s_per_page=BATCH_S / 4).queued == len(pages)
    return serving, pages


def test_a_read_waits_for_the_backup_batch_in_flight_not_the_backlog() -> None:
    serving, _ = backlog()
    # at 1.5 batch times the second batch is being written: the read starts when it ends
    timing = serving.serve(1.5 * BATCH_S, prompt_tokens=2, memory_pages=0, disk_pages=2, read_s_per_page=0.25)
    assert timing.prefetch_done_s == 2 * BATCH_S + 0.5
    assert serving.disk.jobs[-1] == (2 * BATCH_S, 2 * BATCH_S + 0.5)
    # the backup thread takes its third batch once the disk is free again
    assert serving.visible_prefix(keys("b", 12), 2 * BATCH_S + 1.0, stored=12) == 12
    assert serving.visible_at[b"b8"] == 2 * BATCH_S + 1.0


def test_a_backlog_without_reads_becomes_visible_batch_by_batch() -> None:
    serving, pages = backlog()
    assert serving.visible_prefix(pages, 10 * BATCH_S, stored=len(pages)) == len(pages)
    assert [serving.visible_at[page] for page in pages] == [(i // 4 + 1) * BATCH_S for i in range(len(pages))]


def test_pending_pages_count_queued_batches_until_their_operation_is_acknowledged() -> None:
    serving, pages = backlog()
    assert serving.pending_pages(0.0) == 40  # nine batches not taken yet, one in flight
    assert serving.visible_at[pages[-1]] == QUEUED_S
    assert serving.visible_prefix(pages, 0.0, stored=len(pages)) == 0
    # queued (and written-later) pages are on their way, not backed up again
    assert serving.needs_backup(pages, stored=0, time_s=BATCH_S / 2) == []
    assert serving.pending_pages(9.5 * BATCH_S) == 40
    assert serving.pending_pages(10 * BATCH_S) == 0


def test_servers_run_fifo_in_parallel() -> None:
    serving = timeline(servers=2)
    starts = [serving.serve(0.0, 4, 0, 0, 0.0).start_s for _ in range(4)]
    assert starts == [0.0, 0.0, 4.0, 4.0]


REQUEST = st.tuples(
    st.floats(0.0, 2.0),  # gap since the previous arrival
    st.integers(1, 40),  # prompt pages
    st.integers(0, 40),  # memory pages
    st.integers(0, 40),  # stored pages
)


@settings(max_examples=60, deadline=None)
@given(
    policy=st.sampled_from(PREFETCH_POLICIES),
    servers=st.integers(1, 3),
    read_price=st.floats(0.0, 1.0),
    batch=st.integers(1, 8),
    requests=st.lists(REQUEST, min_size=1, max_size=12),
)
def test_ttft_covers_the_prefill_of_missed_tokens_and_hits_never_exceed_ideal(
    policy: str, servers: int, read_price: float, batch: int, requests: list[tuple[float, int, int, int]]
) -> None:
    serving = timeline(policy, servers=servers, timeout_s=0.3, batch_pages=batch)
    arrival = 0.0
    for gap, prompt, cached, stored in requests:
        arrival += gap
        memory = min(cached, prompt)
        disk = max(0, min(stored, prompt) - memory)
        timing = serving.serve(arrival, prompt, memory, disk, read_price)
        assert 0 <= timing.loaded_pages <= disk  # hits <= ideal
        missed = prompt - memory - timing.loaded_pages
        assert timing.ttft_s >= max(missed, 1) - 1e-9
        assert timing.start_s >= arrival and timing.queue_s >= 0


@settings(max_examples=60, deadline=None)
@given(
    bound=st.one_of(st.none(), st.integers(0, 12)),
    price=st.floats(0.0, 2.0),
    backups=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(1, 6)), min_size=1, max_size=15),
)
def test_drops_happen_only_when_a_bounded_queue_is_full(
    bound: int | None, price: float, backups: list[tuple[float, int]]
) -> None:
    serving = timeline(queue_pages=bound, batch_pages=4)
    now = 0.0
    for index, (gap, pages) in enumerate(backups):
        now += gap
        pending = serving.pending_pages(now)
        outcome = serving.backup(now, keys(f"{index}-", pages), price)
        assert outcome.queued + outcome.dropped == pages
        if outcome.dropped:
            assert bound is not None and pending + outcome.queued == bound
        if bound is not None:
            assert serving.pending_pages(now) <= bound


BACKUPS = st.lists(
    st.tuples(
        st.floats(0.0, 1.0),  # gap since the previous backup's request finished
        st.floats(0.0, 2.0),  # how much later than that this backup is queued (servers finish out of order)
        st.integers(1, 6),  # pages
    ),
    min_size=1,
    max_size=15,
)


@settings(max_examples=60, deadline=None)
@given(pool=st.integers(0, 12), price=st.floats(0.0, 2.0), batch=st.integers(1, 4), backups=BACKUPS)
def test_pinned_backups_never_exceed_the_host_pool(
    pool: int, price: float, batch: int, backups: list[tuple[float, float, int]]
) -> None:
    serving = timeline(host_pages=pool, batch_pages=batch)
    now, queued_times = 0.0, []
    for index, (gap, delay, pages) in enumerate(backups):
        now += gap
        outcome = serving.backup(now + delay, keys(f"{index}-", pages), price)
        assert outcome.queued + outcome.host_full == pages and outcome.dropped == 0
        queued_times.append(now + delay)
        assert all(serving.pending_pages(t) <= pool for t in queued_times)


@settings(max_examples=40, deadline=None)
@given(price=st.floats(0.0, 2.0), batch=st.integers(1, 4), backups=BACKUPS)
def test_a_host_pool_large_enough_changes_nothing(
    price: float, batch: int, backups: list[tuple[float, float, int]]
) -> None:
    unlimited, large = timeline(batch_pages=batch), timeline(batch_pages=batch, host_pages=6 * len(backups))
    now = 0.0
    for index, (gap, delay, pages) in enumerate(backups):
        now += gap
        outcomes = [t.backup(now + delay, keys(f"{index}-", pages), price) for t in (unlimited, large)]
        assert outcomes[0] == outcomes[1] == BackupOutcome(queued=pages, dropped=0, host_full=0)
    end = now + 2.0 + 6 * len(backups) * price
    assert unlimited.disk_utilization(0.0, end) == large.disk_utilization(0.0, end)
    assert unlimited.visible_at == large.visible_at and unlimited.disk.jobs == large.disk.jobs


def first_fit(jobs: list[tuple[float, float]], issued_s: float, duration_s: float) -> tuple[float, float]:
    """The gap rule spelled out over every job ever placed (what the merged busy periods must match)."""
    start = issued_s
    for job_start, job_end in sorted(jobs):
        if job_end > start and start + duration_s > job_start:
            start = max(start, job_end)
    return start, start + duration_s


@settings(max_examples=80, deadline=None)
@given(jobs=st.lists(st.tuples(st.integers(0, 30), st.integers(1, 4)), min_size=1, max_size=30))
def test_merged_busy_periods_place_jobs_like_the_first_fit_rule(jobs: list[tuple[int, int]]) -> None:
    disk = DeviceTimeline()
    placed: list[tuple[float, float]] = []
    for issued, duration in jobs:
        expected = first_fit(placed, float(issued), float(duration))
        assert disk.reserve(float(issued), float(duration)) == expected
        placed.append(expected)
    assert disk.jobs == placed
