"""The serving timeline of the replay: GPU servers, one disk, prefetch policies and the backup queue.

A pure model in trace time (no store, no tensors): the replay engine asks it when a request starts, how
many of its stored pages a prefetch delivered by then, and when each backed-up page becomes visible.
Each mechanism is SGLang's (0.5.23), simplified where stated:

- **Prefetch overlaps waiting** (``mem_cache/unified_radix_cache.py``: ``prefetch_from_storage``,
  ``_can_terminate_prefetch``, ``check_prefetch_progress``; ``managers/cache_controller.py``:
  ``_page_transfer``). A request's storage prefetch starts at its arrival and reads pages in batches of
  at most ``STORAGE_BATCH_SIZE = 128`` (``mem_cache/hicache_storage.py``), acknowledging each batch.
  The scheduler polls the request when it could admit it (a server is free): ``best_effort`` takes what
  has landed, ``wait_complete`` waits for every page, ``timeout`` waits until a deadline that starts at
  that first blocked poll (``_start_storage_prefetch_wait``; SGLang's deadline is ``base + pages *
  per_page``, here a fixed ``timeout_s``). Pages not loaded at the cut are recomputed. Simplification:
  a cut prefetch keeps its disk time (SGLang stops between batches; a prompt under 128 pages is one batch).
- **GPU servers** run prefill FIFO in arrival order (data-parallel instances sharing one store). SGLang
  keeps a request whose prefetch is in flight in the waiting queue without holding a server; the model
  gives it the earliest free server once its policy lets it start.
- **Backups race the disk** (``cache_controller.py``: ``write_storage``, ``backup_thread_func``,
  ``_page_backup``; ``unified_radix_cache.py``: ``write_backup_storage`` pins the host pages with
  ``inc_host_lock_ref`` until ``ack_backup_queue`` releases them). One backup thread takes one batch (at
  most 128 pages) at a time from an unbounded FIFO, in the order the batches were queued, and writes it;
  the model places each batch on the disk only when the thread would take it (lazily, as trace time
  advances), so work queued behind it does not hold the disk yet. A page is visible to storage probes
  once its batch is written; until then it reads as on its way (not visible, not to be backed up again);
  its host page stays pinned (counted by :meth:`ServingTimeline.pending_pages`) from its queueing until
  its whole operation is acknowledged. ``backup_queue_pages`` bounds the queue instead: pages that do not
  fit are dropped (the behaviour of engines that offload through a fixed buffer), never visible.
- **A full host pool refuses backups** (``unified_radix_cache.py``: ``_execute_and_commit_kv_backup``,
  ``_execute_kv_backup``, ``evict_host``; ``cache_controller.py``: ``write``; ``memory_pool_host.py``:
  ``alloc``). A page reaches storage only through a host copy: SGLang allocates host pages for a node's
  backup, evicting unpinned host pages first; when even that leaves too few (pinned pages cannot be
  evicted), ``alloc`` returns ``None``, the node is not backed up, and the action stops there, so a
  prefix chain keeps the nodes before it and loses that node and every deeper one. ``host_pool_pages``
  (the host RAM the store leaves, in pages) models it: the tier's pages are the unpinned ones, so a
  backup gets at most the pool minus the pinned pages; the leading pages that fit are queued, the rest
  are refused (``BackupOutcome.host_full``), never visible, and backed up again when next needed.
  Simplifications: refusal is per page (SGLang's is per radix node, so it may refuse a little more).
  A backup is queued when its request's compute ends, which the replay reaches before serving later
  arrivals that come earlier in trace time; the backup thread is not advanced to the queueing time for
  the room (that would book its batches on the disk ahead of those arrivals' reads), so backups it would
  acknowledge between the latest arrival and the queueing time still count as pinned: the model refuses
  at most those pages more than SGLang would. The room also counts the pages of backups queued later in
  trace time (servers finish out of order), so the budget holds at every instant.
- **One disk** (:class:`DeviceTimeline`): prefetch reads and backup writes occupy it, each placed
  non-preemptively in the first idle gap at or after it is issued, so a read waits for at most the backup
  batch in flight, not for the backlog. Simplification: a request's prefetch books all its batches when
  it is issued (backup batches queued meanwhile go after them). The store's background work (WAL,
  flush, compaction, blob GC, stalls) reaches the disk through the prices, which the engine takes from
  the store's own counters (device time per page the store moved).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

PREFETCH_POLICIES = ("wait_complete", "timeout", "best_effort")
STORAGE_BATCH_PAGES = 128
"""SGLang's ``STORAGE_BATCH_SIZE``: pages per storage read or write batch."""
QUEUED_S = sys.float_info.max
"""``visible_at`` of a page queued for backup whose batch is not written yet: later than any trace time
(not visible, but on its way), yet not ``inf`` (dropped or refused)."""


def busy_within(intervals: Sequence[tuple[float, float]], start: float, end: float) -> float:
    """Seconds of ``intervals`` (possibly overlapping only if they come from parallel servers) inside
    ``[start, end]``."""
    return sum(max(0.0, min(b, end) - max(a, start)) for a, b in intervals)


class DeviceTimeline:
    """One device that runs one job at a time; a job goes in the first idle gap at or after its issue
    time that is long enough (no preemption). Issue times may come out of order."""

    def __init__(self) -> None:
        # busy periods, sorted and disjoint: jobs that touch are merged, so placing a job behind a
        # backlog of back-to-back jobs costs one step, not one per queued job
        self._starts: list[float] = []
        self._ends: list[float] = []
        self.jobs: list[tuple[float, float]] = []

    def reserve(self, issued_s: float, duration_s: float) -> tuple[float, float]:
        """Place a job of ``duration_s`` issued at ``issued_s``; return its ``(start, end)``."""
        if duration_s <= 0:
            return issued_s, issued_s
        index = bisect.bisect_right(self._ends, issued_s)
        start = issued_s
        while index < len(self._starts) and start + duration_s > self._starts[index]:
            start = max(start, self._ends[index])
            index += 1
        end = start + duration_s
        self.jobs.append((start, end))
        joins_previous = index > 0 and self._ends[index - 1] == start
        joins_next = index < len(self._starts) and self._starts[index] == end
        if joins_previous and joins_next:
            self._ends[index - 1] = self._ends.pop(index)
            del self._starts[index]
        elif joins_previous:
            self._ends[index - 1] = end
        elif joins_next:
            self._starts[index] = start
        else:
            self._starts.insert(index, start)
            self._ends.insert(index, end)
        return start, end

    def forget_before(self, time_s: float) -> None:
        """Drop gap bookkeeping of jobs that ended before ``time_s`` (no job is issued earlier any more)."""
        keep = bisect.bisect_left(self._ends, time_s)
        del self._starts[:keep]
        del self._ends[:keep]


@dataclass(frozen=True)
class Timing:
    """When a request ran and what its prefetch gave it (seconds of trace time)."""

    server: int
    start_s: float
    finish_s: float
    loaded_pages: int
    prefetch_done_s: float
    queue_s: float
    load_s: float
    prefill_s: float
    ttft_s: float


@dataclass(frozen=True)
class BackupOutcome:
    """What the backup queue did with one operation's pages: ``host_full`` pages were refused by a full
    host pool, ``dropped`` ones by a full bounded queue."""

    queued: int
    dropped: int
    host_full: int


@dataclass(frozen=True)
class _BackupBatch:
    """One write the backup thread takes from its queue."""

    keys: tuple[bytes, ...]
    s_per_page: float
    operation: int


@dataclass
class _BackupOperation:
    """A queued backup not acknowledged yet: its pages stay pinned until its last batch is written."""

    queued_s: float
    pages: int
    batches_left: int


class ServingTimeline:
    """GPU servers, the disk, prefetch under ``policy`` and the backup thread. Not thread-safe.

    ``prefill_seconds(tokens)`` and ``load_seconds(pages)`` (host-to-device copy of hit pages) model the
    GPU; prices (device seconds per page) are passed per call, so the engine can reprice every window.
    """

    def __init__(
        self,
        *,
        servers: int,
        policy: str,
        timeout_s: float,
        page_size: int,
        prefill_seconds: Callable[[int], float],
        load_seconds: Callable[[int], float],
        batch_pages: int = STORAGE_BATCH_PAGES,
        backup_queue_pages: int | None = None,
        host_pool_pages: int | None = None,
    ) -> None:
        if policy not in PREFETCH_POLICIES:
            raise ValueError(f"prefetch={policy!r} is invalid; valid values: {', '.join(PREFETCH_POLICIES)}")
        if servers < 1 or batch_pages < 1 or page_size < 1:
            raise ValueError(
                f"servers, batch_pages and page_size must be >= 1, got {servers}, {batch_pages}, {page_size}"
            )
        if backup_queue_pages is not None and backup_queue_pages < 0:
            raise ValueError(f"backup_queue_pages must be >= 0 or None (unbounded), got {backup_queue_pages}")
        if host_pool_pages is not None and host_pool_pages < 0:
            raise ValueError(f"host_pool_pages must be >= 0 or None (unlimited), got {host_pool_pages}")
        self.servers = servers
        self.policy = policy
        self.timeout_s = timeout_s
        self.page_size = page_size
        self.batch_pages = batch_pages
        self.backup_queue_pages = backup_queue_pages
        self.host_pool_pages = host_pool_pages
        """Host pages backups may pin (``None``: unlimited); reset when the store's RAM changes."""
        self._prefill_seconds = prefill_seconds
        self._load_seconds = load_seconds
        self._free: list[tuple[float, int]] = [(0.0, server) for server in range(servers)]
        self.disk = DeviceTimeline()
        self.gpu_jobs: list[tuple[float, float]] = []
        self._backup_free_s = 0.0
        self._order = itertools.count()
        self._backup_queue: list[tuple[float, int, _BackupBatch]] = []
        """Batches the backup thread has not taken yet, a heap by ``(queued_s, queueing order)``."""
        self._unacked: dict[int, _BackupOperation] = {}
        self._pending: list[tuple[float, float, int]] = []
        """Acknowledged backup operations as ``(acked_s, queued_s, pages)``, a heap by acknowledgement:
        their host pages were pinned in between."""
        self.visible_at: dict[bytes, float] = {}
        """Trace time each backed-up page became visible to probes (``QUEUED_S``: not written yet;
        ``inf``: dropped or refused)."""

    # ------------------------------------------------------------------ prefetch and compute

    def serve(
        self, arrival_s: float, prompt_tokens: int, memory_pages: int, disk_pages: int, read_s_per_page: float
    ) -> Timing:
        """Serve a request whose first ``memory_pages`` are in host memory and the next ``disk_pages``
        are visible in storage: prefetch them from ``arrival_s``, start under the policy, prefill the rest."""
        self._advance_backups(arrival_s)
        self.disk.forget_before(arrival_s)
        while self._pending and self._pending[0][0] <= arrival_s:
            heapq.heappop(self._pending)
        landed = self._prefetch(arrival_s, disk_pages, read_s_per_page)
        done_s = landed[-1][0] if landed else arrival_s
        free_s, server = heapq.heappop(self._free)
        poll_s = max(arrival_s, free_s)
        if self.policy == "wait_complete":
            start_s = max(poll_s, done_s)
        elif self.policy == "timeout":
            start_s = max(poll_s, min(done_s, poll_s + self.timeout_s))
        else:
            start_s = poll_s
        loaded = sum(pages for end_s, pages in landed if end_s <= start_s)
        hit_pages = memory_pages + loaded
        load_s = self._load_seconds(hit_pages)
        prefill_s = self._prefill_seconds(max(prompt_tokens - hit_pages * self.page_size, 1))
        finish_s = start_s + load_s + prefill_s
        heapq.heappush(self._free, (finish_s, server))
        self.gpu_jobs.append((start_s, finish_s))
        return Timing(
            server=server,
            start_s=start_s,
            finish_s=finish_s,
            loaded_pages=loaded,
            prefetch_done_s=done_s,
            queue_s=start_s - arrival_s,
            load_s=load_s,
            prefill_s=prefill_s,
            ttft_s=finish_s - arrival_s,
        )

    def _prefetch(self, issued_s: float, pages: int, price: float) -> list[tuple[float, int]]:
        """Read ``pages`` in batches from ``issued_s``: ``(landed_s, pages)`` per batch."""
        landed = []
        ready_s = issued_s
        for first in range(0, pages, self.batch_pages):
            batch = min(self.batch_pages, pages - first)
            _, ready_s = self.disk.reserve(ready_s, batch * price)
            landed.append((ready_s, batch))
        return landed

    # ------------------------------------------------------------------ backups

    def _advance_backups(self, until_s: float) -> None:
        """Let the backup thread take, one at a time, every batch it would take by ``until_s``: a batch
        is taken when it is queued and the previous one is written. Placing a batch only then keeps the
        disk free for reads issued meanwhile; the first batch not taken is issued after ``until_s``."""
        while self._backup_queue:
            queued_s, _, batch = self._backup_queue[0]
            issued_s = max(queued_s, self._backup_free_s)
            if issued_s > until_s:
                return
            heapq.heappop(self._backup_queue)
            _, written_s = self.disk.reserve(issued_s, len(batch.keys) * batch.s_per_page)
            for key in batch.keys:
                self.visible_at[key] = written_s
            self._backup_free_s = written_s
            operation = self._unacked[batch.operation]
            operation.batches_left -= 1
            if operation.batches_left == 0:
                del self._unacked[batch.operation]
                heapq.heappush(self._pending, (written_s, operation.queued_s, operation.pages))

    def pending_pages(self, time_s: float) -> int:
        """Pages queued or being written at ``time_s`` (pinned in host memory until acknowledged)."""
        self._advance_backups(time_s)
        acked = sum(pages for acked_s, queued_s, pages in self._pending if queued_s <= time_s < acked_s)
        return acked + sum(op.pages for op in self._unacked.values() if op.queued_s <= time_s)

    def _host_room(self, queued_s: float, pages: int) -> int:
        """How many of ``pages`` a host pool lets a backup at ``queued_s`` pin: the pool minus every backup
        not known to be acknowledged by ``queued_s``, whenever it was queued, with the backup thread
        where the latest arrival left it (see the module docstring)."""
        if self.host_pool_pages is None:
            return pages
        pinned = sum(count for acked_s, _, count in self._pending if acked_s > queued_s)
        pinned += sum(op.pages for op in self._unacked.values())
        return max(0, min(pages, self.host_pool_pages - pinned))

    def visible_prefix(self, keys: Sequence[bytes], time_s: float, stored: int) -> int:
        """How many of the first ``stored`` pages (those the store holds) a probe at ``time_s`` sees:
        pages never backed up through the model (there before the replay) count as visible."""
        self._advance_backups(time_s)
        for index in range(stored):
            if self.visible_at.get(keys[index], -math.inf) > time_s:
                return index
        return stored

    def backup(self, queued_s: float, keys: Sequence[bytes], write_s_per_page: float) -> BackupOutcome:
        """Queue a backup of ``keys`` (in prefix order) at ``queued_s``: the backup thread writes them in
        batches, one at a time, as trace time reaches them. A full host pool refuses the pages past those
        it can pin; then, with a bounded queue, the pages that do not fit (bound minus the pages pending at
        ``queued_s``) are dropped: to know that room, the backup thread is advanced to ``queued_s``."""
        host_room = self._host_room(queued_s, len(keys))
        room = host_room
        if self.backup_queue_pages is not None:
            room = max(0, min(room, self.backup_queue_pages - self.pending_pages(queued_s)))
        for key in keys[room:]:
            self.visible_at[key] = math.inf
        host_full = len(keys) - host_room
        if room == 0:
            return BackupOutcome(queued=0, dropped=host_room, host_full=host_full)
        firsts = range(0, room, self.batch_pages)
        operation = next(self._order)
        self._unacked[operation] = _BackupOperation(queued_s=queued_s, pages=room, batches_left=len(firsts))
        for first in firsts:
            batch = tuple(keys[first : min(first + self.batch_pages, room)])
            for key in batch:
                self.visible_at[key] = QUEUED_S
            entry = (queued_s, next(self._order), _BackupBatch(batch, write_s_per_page, operation))
            heapq.heappush(self._backup_queue, entry)
        return BackupOutcome(queued=room, dropped=host_room - room, host_full=host_full)

    def needs_backup(self, keys: Sequence[bytes], stored: int, time_s: float) -> list[bytes]:
        """The keys a backup at ``time_s`` must write, given that the store holds the first ``stored``:
        those dropped or refused before, and those the store lacks that are not on their way (never queued, or
        visible once but evicted since). A page still queued is on its way: the backup thread is not
        advanced to ``time_s`` (a backup is queued at its request's finish, past later arrivals whose
        reads must not find the disk booked by batches taken after them)."""
        needed = []
        for index, key in enumerate(keys):
            visible_s = self.visible_at.get(key)
            if visible_s == math.inf or (index >= stored and (visible_s is None or visible_s <= time_s)):
                needed.append(key)
        return needed

    # ------------------------------------------------------------------ utilization

    def gpu_utilization(self, start_s: float, end_s: float) -> float:
        """Busy server-seconds inside ``[start_s, end_s]`` over ``servers * (end_s - start_s)``."""
        span = end_s - start_s
        return busy_within(self.gpu_jobs, start_s, end_s) / (self.servers * span) if span > 0 else 0.0

    def disk_utilization(self, start_s: float, end_s: float) -> float:
        """Busy disk time inside ``[start_s, end_s]`` over its span, with the backups taken by ``end_s``."""
        self._advance_backups(end_s)
        span = end_s - start_s
        return busy_within(self.disk.jobs, start_s, end_s) / span if span > 0 else 0.0
