"""The append-log baseline: pages appended to segment files and found through an in-memory hash index.

This is the design proposed instead of an LSM-tree: a probe is index lookups page by page, a read is one
``pread`` per page, a put is one gathered write per batch. The index (page digest -> segment, offset) is
rebuilt on open by scanning the segments' record headers. ``device_ops`` counts one operation per
segment open or create, ``pread``, gathered write, truncate and unlink.

Segment ``segment-<seq>.log`` holds records, each a 92-byte header
``magic | header crc | kind | depth | value length | value crc | digest | parent digest`` and a value:

- a page record's value is the encoded page (header + tensor), checked on every read (CRC and header);
- a tombstone's value names the record it deletes (segment, offset): the rebuild drops a page whose
  current record is at or before that place, so an evicted page does not come back on reopen. A
  tombstone is needed while the segment of the record it deletes exists; after that it is garbage.
  (A crash between a garbage collection's copy and its delete leaves an older dead copy of a page; the
  next open writes a tombstone for it, so that rule stays exact.)

Only the newest segment is ever appended to, so only its tail can be torn by a crash: on open its values
are CRC-checked too, and the first torn or corrupt record and everything after it are truncated. A batch
is appended parents first (evictions: children first), so a crash leaves a prefix-closed set of whole
records; the index learns a record only after its bytes are written, so none is ever half-visible.

Garbage collection copies a segment's live records (and the tombstones still needed) to the active
segment, then deletes it: whenever a sealed segment's live fraction falls below :data:`GC_LIVE_FRACTION`,
and, while the budget is exceeded, the segment with the most garbage, until the store fits.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import zlib
from collections import deque
from collections.abc import Sequence
from itertools import islice
from typing import NamedTuple

import torch

from store.base import BackendState, DiskKVStore, PageRecord
from store.codec import VALUE_HEADER_BYTES, decode_value, encode_header, page_payload, payload_hash
from store.config import MiB, StoreConfig
from store.dirlock import lock_directory, unlock
from store.errors import disk_full_error
from store.header import HEADER_FILE, ensure_header_file
from store.indexed import IndexedStore
from store.pages import DIGEST_BYTES, PagePlan
from store.recency import PageEntry, RecencyIndex, disk_state, parent_of

logger = logging.getLogger(__name__)

SEGMENT_BYTES = 64 * MiB
GC_LIVE_FRACTION = 0.5
LIVE_FRACTION = 0.85
"""When over budget, evict until live records fill at most this fraction of it (room for garbage)."""
RECORD_MAGIC = b"KVA1"
PAGE, TOMBSTONE = 1, 2
NO_PARENT = bytes(DIGEST_BYTES)
IOV_MAX = 1024
_PREFIX = struct.Struct("<4sI")
_BODY = struct.Struct(f"<BxxxIQI{DIGEST_BYTES}s{DIGEST_BYTES}s")
HEADER_BYTES = _PREFIX.size + _BODY.size
_TARGET = struct.Struct("<QQ")
TOMBSTONE_BYTES = HEADER_BYTES + _TARGET.size
_SEGMENT_NAME = re.compile(r"^segment-(\d{10})\.log$")

Buffer = bytes | bytearray | memoryview


class Location(NamedTuple):
    segment: int
    offset: int


class RecordHeader(NamedTuple):
    kind: int
    depth: int
    length: int
    value_crc: int
    digest: bytes
    parent: bytes


class Tombstone(NamedTuple):
    digest: bytes
    target: Location


def _crc(parts: Sequence[Buffer]) -> int:
    crc = 0
    for part in parts:
        crc = zlib.crc32(part, crc)
    return crc


def _encode_record(
    kind: int, depth: int, digest: bytes, parent: bytes, value: Sequence[Buffer]
) -> list[Buffer]:
    """The buffers of one record: its header, then the value's parts (not copied)."""
    body = _BODY.pack(kind, depth, sum(len(part) for part in value), _crc(value), digest, parent)
    return [_PREFIX.pack(RECORD_MAGIC, zlib.crc32(body)) + body, *value]


def _tombstone_record(tombstone: Tombstone) -> list[Buffer]:
    return _encode_record(TOMBSTONE, 0, tombstone.digest, NO_PARENT, [_TARGET.pack(*tombstone.target)])


def _parse_header(raw: Buffer) -> RecordHeader | None:
    """The header at the start of ``raw``, or ``None`` if it is torn or corrupt."""
    if len(raw) < HEADER_BYTES:
        return None
    magic, crc = _PREFIX.unpack_from(raw)
    body = bytes(raw[_PREFIX.size : HEADER_BYTES])
    if magic != RECORD_MAGIC or zlib.crc32(body) != crc:
        return None
    return RecordHeader(*_BODY.unpack(body))


def _pwrite_all(fd: int, buffers: Sequence[Buffer], offset: int) -> int:
    """Write ``buffers`` back to back at ``offset``, IOV_MAX at a time, resuming short writes."""
    pending = deque(view for view in (memoryview(b).cast("B") for b in buffers) if len(view))
    position = offset
    while pending:
        written = os.pwritev(fd, list(islice(pending, IOV_MAX)), position)
        if written <= 0:
            raise OSError(f"pwritev wrote nothing at offset {position}")
        position += written
        while written:
            head = pending[0]
            if written >= len(head):
                written -= len(head)
                pending.popleft()
            else:
                pending[0] = head[written:]
                written = 0
    return position - offset


def _pread_exact(fd: int, buffer: bytearray, offset: int) -> int:
    """Fill ``buffer`` from ``offset``; return the bytes read (fewer at end of file)."""
    view = memoryview(buffer)
    filled = 0
    while filled < len(buffer):
        count = os.preadv(fd, [view[filled:]], offset + filled)
        if count == 0:
            break
        filled += count
    return filled


class AppendLogStore(IndexedStore, DiskKVStore):
    """Segment files of records plus an in-memory index of where each stored page's record is."""

    kind = "applog"

    segment_bytes = SEGMENT_BYTES
    """Bytes of one segment file: the unit in which the log gives disk space back."""

    @classmethod
    def with_segment_bytes(cls, segment_bytes: int) -> type[AppendLogStore]:
        """This kind with segment files of ``segment_bytes`` (a budget well over it is kept by segments)."""
        if isinstance(segment_bytes, bool) or not isinstance(segment_bytes, int) or segment_bytes < 1:
            raise ValueError(
                f"segment_bytes must be a positive int (default {SEGMENT_BYTES}), got {segment_bytes!r}"
            )
        sized: type[AppendLogStore] = type(cls.__name__, (cls,), {"segment_bytes": segment_bytes})
        return sized

    def _start(self, config: StoreConfig) -> None:
        self._value_bytes = VALUE_HEADER_BYTES + self.page_bytes
        self._record_bytes = HEADER_BYTES + self._value_bytes
        self._written_bytes = 0
        self._read_bytes = 0
        self._fds: dict[int, int] = {}
        self._dir_lock = lock_directory(self.path, self.kind)
        try:
            self._open(config)
        except BaseException:
            self._close()
            raise

    # ------------------------------------------------------------------ open / close

    def _segment_path(self, seq: int) -> str:
        return f"{self.path}/segment-{seq:010d}.log"

    def _open(self, config: StoreConfig) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        ensure_header_file(self.path, self.layout, self.page_size, self.kind)
        self._header_bytes = os.stat(self.path / HEADER_FILE).st_size
        self._fds = {}
        self._sizes: dict[int, int] = {}
        self._members: dict[int, set[bytes]] = {}
        self._tombstones: dict[int, list[Tombstone]] = {}
        self._where: dict[bytes, Location] = {}
        self._index = RecencyIndex(config.eviction_order)
        seqs = sorted(int(m.group(1)) for name in os.listdir(self.path) if (m := _SEGMENT_NAME.match(name)))
        pages: dict[bytes, tuple[PageEntry, int]] = {}
        superseded: list[Tombstone] = []
        for seq in seqs:
            self._fds[seq] = os.open(self._segment_path(seq), os.O_RDWR)
            self._members[seq] = set()
            self._counters.add(device_ops=1)
            self._replay(seq, self._scan(seq, verify_values=seq == seqs[-1]), pages, superseded)
        if seqs:
            self._active = seqs[-1]
        else:
            self._active = 0
            self._rotate()
        for digest, location in self._where.items():
            self._members[location.segment].add(digest)
        known = {tombstone for tombstones in self._tombstones.values() for tombstone in tombstones}
        self._append_tombstones([tombstone for tombstone in superseded if tombstone not in known])
        orphans = self._index.load(pages)
        if orphans:
            logger.warning("%s: dropping %d pages whose prefix is not stored", self.path, len(orphans))
            self._write_tombstones(orphans)
        self._enforce_budget()  # a crash may have left more than the budget

    def _scan(self, seq: int, verify_values: bool) -> list[tuple[int, RecordHeader, bytes]]:
        """The whole records of segment ``seq`` (offset, header, tombstone value); truncates a bad tail."""
        fd = self._fds[seq]
        size = os.fstat(fd).st_size
        records: list[tuple[int, RecordHeader, bytes]] = []
        offset = 0
        ops = 0
        while offset < size:
            header = _parse_header(os.pread(fd, HEADER_BYTES, offset))
            ops += 1
            valid = header is not None and self._plausible(header, size - offset - HEADER_BYTES)
            value = b""
            if header is not None and valid and (verify_values or header.kind == TOMBSTONE):
                value = os.pread(fd, header.length, offset + HEADER_BYTES)
                ops += 1
                valid = zlib.crc32(value) == header.value_crc
            if header is None or not valid:
                logger.warning(
                    "%s: record at offset %d is torn or corrupt; truncating %d bytes",
                    self._segment_path(seq),
                    offset,
                    size - offset,
                )
                os.ftruncate(fd, offset)
                ops += 1
                size = offset
                break
            records.append((offset, header, value if header.kind == TOMBSTONE else b""))
            self._read_bytes += HEADER_BYTES + len(value)
            offset += HEADER_BYTES + header.length
        self._sizes[seq] = size
        self._counters.add(device_ops=ops)
        return records

    def _plausible(self, header: RecordHeader, room: int) -> bool:
        if header.length > room:
            return False
        if header.kind == PAGE:
            return header.length == self._value_bytes and header.depth >= 1
        return header.kind == TOMBSTONE and header.length == _TARGET.size

    def _replay(
        self,
        seq: int,
        records: list[tuple[int, RecordHeader, bytes]],
        pages: dict[bytes, tuple[PageEntry, int]],
        superseded: list[Tombstone],
    ) -> None:
        """Apply segment ``seq``'s records, in log order, to the index being rebuilt.

        A page record of a page already indexed is a garbage collection's copy whose original was not
        deleted (a crash came between): the original is collected in ``superseded``.
        """
        for offset, header, value in records:
            if header.kind == PAGE:
                if header.digest in self._where:
                    superseded.append(Tombstone(header.digest, self._where[header.digest]))
                parent = None if header.parent == NO_PARENT else header.parent
                pages[header.digest] = (
                    PageEntry(self._record_bytes, header.depth, parent),
                    seq << 40 | offset,
                )
                self._where[header.digest] = Location(seq, offset)
                continue
            tombstone = Tombstone(header.digest, Location(*_TARGET.unpack(value)))
            self._tombstones.setdefault(seq, []).append(tombstone)
            current = self._where.get(tombstone.digest)
            if current is not None and current <= tombstone.target:
                del self._where[tombstone.digest]
                del pages[tombstone.digest]

    def _close_segments(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}

    def _close(self) -> None:
        self._close_segments()
        unlock(self._dir_lock)

    def _reopen(self, config: StoreConfig) -> None:
        self._close_segments()
        self._open(config)

    # ------------------------------------------------------------------ appending

    def _rotate(self) -> None:
        """Seal the active segment and start the next one."""
        self._active += 1
        self._fds[self._active] = os.open(
            self._segment_path(self._active), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644
        )
        self._sizes[self._active] = 0
        self._members[self._active] = set()
        self._counters.add(device_ops=1)

    def _append(self, records: list[list[Buffer]]) -> list[Location]:
        """Append whole records to the active segment, starting a new one when it is full."""
        locations: list[Location] = []
        chunk: list[Buffer] = []
        start = offset = self._sizes[self._active]
        for parts in records:
            size = sum(len(part) for part in parts)
            if offset and offset + size > self.segment_bytes:
                self._write_chunk(chunk, start)
                self._rotate()
                chunk, start, offset = [], 0, 0
            chunk.extend(parts)
            locations.append(Location(self._active, offset))
            offset += size
        self._write_chunk(chunk, start)
        return locations

    def _write_chunk(self, chunk: list[Buffer], start: int) -> None:
        """One gathered write at the end of the active segment; on failure the segment is cut back."""
        if not chunk:
            return
        fd = self._fds[self._active]
        try:
            written = _pwrite_all(fd, chunk, start)
        except BaseException:
            os.ftruncate(fd, start)
            raise
        self._sizes[self._active] = start + written
        self._written_bytes += written
        self._counters.add(device_ops=1)

    def _place(self, digest: bytes, location: Location) -> None:
        """Point the index at ``digest``'s record, moving it between segments' member sets."""
        old = self._where.get(digest)
        if old is not None:
            self._members[old.segment].discard(digest)
        self._where[digest] = location
        self._members[location.segment].add(digest)

    def _append_tombstones(self, tombstones: list[Tombstone]) -> None:
        locations = self._append([_tombstone_record(tombstone) for tombstone in tombstones])
        for tombstone, location in zip(tombstones, locations, strict=True):
            self._tombstones.setdefault(location.segment, []).append(tombstone)

    def _write_tombstones(self, digests: list[bytes]) -> None:
        """Delete pages (children first) by appending one batch of tombstones."""
        tombstones = [Tombstone(digest, self._where[digest]) for digest in digests]
        self._append_tombstones(tombstones)
        for tombstone in tombstones:
            self._members[tombstone.target.segment].discard(tombstone.digest)
            del self._where[tombstone.digest]

    # ------------------------------------------------------------------ hooks

    def _probe_plan(self, plan: PagePlan) -> int:
        for index, digest in enumerate(plan.digests):
            if digest not in self._where:
                return index
        return plan.n_pages

    def _read_pages(self, plan: PagePlan, n_pages: int) -> list[torch.Tensor | None]:
        pages: list[torch.Tensor | None] = []
        for digest in plan.digests[:n_pages]:
            location = self._where.get(digest)
            pages.append(None if location is None else self._read_page(digest, location))
        return pages

    def _read_record(self, location: Location) -> bytearray | None:
        buffer = bytearray(self._record_bytes)
        filled = _pread_exact(self._fds[location.segment], buffer, location.offset)
        self._read_bytes += filled
        self._counters.add(device_ops=1)
        return buffer if filled == len(buffer) else None

    def _read_page(self, digest: bytes, location: Location) -> torch.Tensor | None:
        buffer = self._read_record(location)
        header = None if buffer is None else _parse_header(buffer)
        if buffer is None or header is None or header.digest != digest:
            logger.warning("%s: the record of a page at %s is unreadable; it is a miss", self.path, location)
            return None
        value = memoryview(buffer)[HEADER_BYTES:]
        if zlib.crc32(value) != header.value_crc:
            logger.warning("%s: the record of a page at %s fails its CRC; it is a miss", self.path, location)
            return None
        return decode_value(value, self.layout, self.page_size, digest)

    def _write_records(self, records: list[PageRecord]) -> None:
        encoded = []
        for plan, index, page in records:
            digest = plan.digests[index]
            payload = page_payload(page)
            value: list[Buffer] = [
                encode_header(self.layout, self.page_size, digest, payload_hash(payload)),
                payload,
            ]
            encoded.append(
                _encode_record(PAGE, index + 1, digest, parent_of(plan, index) or NO_PARENT, value)
            )
        for (plan, index, _), location in zip(records, self._append(encoded), strict=True):
            digest = plan.digests[index]
            self._place(digest, location)
            self._index.add(digest, PageEntry(self._record_bytes, index + 1, parent_of(plan, index)))
        self._index.touch_written(records)

    def _drop(self, digests: list[bytes]) -> int:
        for digest in digests:
            self._index.remove(digest)
        self._write_tombstones(digests)
        return len(digests)

    def _evict_subtree(self, plan: PagePlan, index: int) -> int:
        evicted = super()._evict_subtree(plan, index)
        self._collect_garbage()
        return evicted

    def _used_bytes(self) -> int:
        """Disk use as :func:`directory_usage` counts it: the header and every segment's bytes."""
        return self._header_bytes + sum(self._sizes.values())

    def _enforce_budget(self) -> None:
        """Evict down to :data:`LIVE_FRACTION` of the budget and collect garbage, until the store fits.

        Garbage alone over the budget evicts nothing; whatever still overshoots after a collection
        (tombstones still needed, say) lowers the live target by as much.
        """
        budget = self.budget_bytes
        if budget is None or self._used_bytes() <= budget:
            return
        target = budget * LIVE_FRACTION
        evicted = 0
        while True:
            evicted += self._evict_down_to(target)
            collected = self._collect_garbage()
            overshoot = self._used_bytes() - budget
            if overshoot <= 0 or not len(self._index) or not collected:
                break  # (not collected: the disk is too full to copy; evicting more would not help)
            target = self._index.live_bytes - overshoot
        if evicted:
            logger.debug("applog store evicted %d pages to stay within %d bytes", evicted, budget)
            self._counters.add(evicted_pages=evicted)

    def _evict_down_to(self, live_target: float) -> int:
        """Evict victims' subtrees until live bytes are at most ``live_target``: one batch of tombstones."""
        doomed: list[bytes] = []
        while self._index.live_bytes > live_target and (victim := self._index.victim()) is not None:
            subtree = self._index.subtree(victim)
            for digest in subtree:
                self._index.remove(digest)
            doomed.extend(subtree)
        if doomed:
            self._write_tombstones(doomed)
        return len(doomed)

    # ------------------------------------------------------------------ garbage collection

    def _needed(self, tombstone: Tombstone, collecting: int | None = None) -> bool:
        """Whether ``tombstone`` still deletes a record (``collecting``: a segment about to go)."""
        return tombstone.target.segment != collecting and tombstone.target.segment in self._fds

    def _garbage(self, seq: int) -> int:
        needed = sum(self._needed(tombstone) for tombstone in self._tombstones.get(seq, ()))
        return self._sizes[seq] - len(self._members[seq]) * self._record_bytes - needed * TOMBSTONE_BYTES

    def _collect_garbage(self) -> bool:
        """Collect sealed segments under the live fraction, then, over budget, the most garbage first.

        Segments with the fewest live records go first: they free the most for the least copying. A
        collection the file system has no room for is left for later (its partial copies are garbage);
        returns False then, True if every collection ran.
        """
        try:
            for seq in sorted(self._fds, key=lambda seq: (len(self._members[seq]), seq)):
                size = self._sizes.get(seq, 0)
                if (
                    seq != self._active
                    and size
                    and len(self._members[seq]) * self._record_bytes < GC_LIVE_FRACTION * size
                ):
                    self._collect(seq)
            while self.budget_bytes is not None and self._used_bytes() > self.budget_bytes:
                seq = max(self._fds, key=self._garbage)
                if self._garbage(seq) <= 0:
                    break
                self._collect(seq)  # each collection shrinks the disk use
        except OSError as error:
            if disk_full_error(self.path, error) is None:
                raise
            logger.warning("%s: garbage collection waits for free space: %s", self.path, error)
            return False
        return True

    def _collect(self, seq: int) -> None:
        """Copy segment ``seq``'s live records and still-needed tombstones forward, then delete it."""
        if seq == self._active:
            self._rotate()
        moved = sorted(self._members[seq], key=lambda digest: self._where[digest].offset)
        copies: list[list[Buffer]] = []
        for digest in moved:
            record = self._read_record(self._where[digest])
            if record is None:
                raise OSError(
                    f"{self._segment_path(seq)} ended inside a live record during garbage collection"
                )
            copies.append([record])
        kept = [tombstone for tombstone in self._tombstones.get(seq, []) if self._needed(tombstone, seq)]
        locations = self._append(copies + [_tombstone_record(tombstone) for tombstone in kept])
        for digest, location in zip(moved, locations[: len(moved)], strict=True):
            self._place(digest, location)
        for tombstone, location in zip(kept, locations[len(moved) :], strict=True):
            self._tombstones.setdefault(location.segment, []).append(tombstone)
        self._delete_segment(seq)

    def _delete_segment(self, seq: int) -> None:
        os.close(self._fds.pop(seq))
        os.unlink(self._segment_path(seq))
        self._counters.add(device_ops=1)
        del self._sizes[seq], self._members[seq]
        self._tombstones.pop(seq, None)

    def _backend_state(self) -> BackendState:
        return disk_state(self.path, self._index, self._written_bytes, self._read_bytes)
