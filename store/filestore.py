"""The file-per-page baseline: how SGLang HiCache's file backend and LMCache's local disk backend store KV.

Every page is one file in one flat directory, named by the hex of the page's 32-byte chained digest and
written by temp file + ``os.replace``, so a reader sees a whole page file or none. A probe checks pages
one by one with a file-system call until the first miss, as those backends do; a read opens the page's
file. ``device_ops`` counts one operation per stat, open, rename and unlink.

File content: a 40-byte link (magic, depth, the parent page's digest), then the encoded value (header +
tensor), which every read checks, so a file that is not the asked page's is a miss, never a wrong tensor.
The link lets a reopen rebuild the prefix tree that subtree eviction needs: without it, evicting a page
would leave its continuations behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import struct

import torch

from store.base import BackendState, DiskKVStore, PageRecord
from store.codec import VALUE_HEADER_BYTES, decode_value, encode_header, page_payload, payload_hash
from store.config import StoreConfig
from store.dirlock import lock_directory, unlock
from store.header import HEADER_FILE, ensure_header_file
from store.indexed import IndexedStore
from store.pages import DIGEST_BYTES, PagePlan
from store.recency import PageEntry, RecencyIndex, disk_state, parent_of

logger = logging.getLogger(__name__)

LINK_MAGIC = b"KVF1"
_LINK = struct.Struct(f"<4sI{DIGEST_BYTES}s")
NO_PARENT = bytes(DIGEST_BYTES)
TEMP_SUFFIX = ".tmp"
_PAGE_NAME = re.compile(f"^[0-9a-f]{{{2 * DIGEST_BYTES}}}$")


def _read_into(fd: int, buffer: bytearray) -> int:
    """Fill ``buffer`` from ``fd``'s current position; return the bytes read (fewer at end of file)."""
    view = memoryview(buffer)
    filled = 0
    while filled < len(buffer):
        count = os.readv(fd, [view[filled:]])
        if count == 0:
            break
        filled += count
    return filled


class FileStore(IndexedStore, DiskKVStore):
    """One file per page in ``path``; an in-memory recency index keeps it within ``budget_bytes``."""

    kind = "file"

    def _start(self, config: StoreConfig) -> None:
        self._dir = str(self.path)
        self._file_bytes = _LINK.size + VALUE_HEADER_BYTES + self.page_bytes
        self._written_bytes = 0
        self._read_bytes = 0
        self._dir_lock = lock_directory(self.path, self.kind)
        try:
            self._open(config)
        except BaseException:
            unlock(self._dir_lock)
            raise

    # ------------------------------------------------------------------ open

    def _open(self, config: StoreConfig) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        ensure_header_file(self.path, self.layout, self.page_size, self.kind)
        self._header_bytes = os.stat(self.path / HEADER_FILE).st_size
        self._index = RecencyIndex(config.eviction_order)
        orphans = self._index.load(self._scan())
        if orphans:
            logger.warning("%s: removing %d page files whose prefix is not stored", self._dir, len(orphans))
            self._unlink_pages(orphans)
        self._enforce_budget()  # a crash may have left more than the budget

    def _scan(self) -> dict[bytes, tuple[PageEntry, int]]:
        """Every page file in the directory with its link and write time; stale temp files are removed."""
        pages: dict[bytes, tuple[PageEntry, int]] = {}
        unreadable: list[bytes] = []
        ops = 1
        with os.scandir(self._dir) as entries:
            for entry in entries:
                if entry.name.endswith(TEMP_SUFFIX):
                    os.unlink(entry.path)
                    ops += 1
                elif _PAGE_NAME.match(entry.name):
                    digest = bytes.fromhex(entry.name)
                    found = self._read_link(entry.path)
                    ops += 2
                    if found is None:
                        unreadable.append(digest)
                    else:
                        pages[digest] = found
        self._counters.add(device_ops=ops)
        if unreadable:
            logger.warning("%s: removing %d page files that are not this store's", self._dir, len(unreadable))
            self._unlink_pages(unreadable)
        return pages

    def _read_link(self, path: str) -> tuple[PageEntry, int] | None:
        """A page file's link and modification time, or ``None`` if it is not a whole page file."""
        fd = os.open(path, os.O_RDONLY)
        try:
            raw = os.pread(fd, _LINK.size, 0)
            status = os.fstat(fd)
        finally:
            os.close(fd)
        self._read_bytes += len(raw)
        if len(raw) != _LINK.size or status.st_size != self._file_bytes:
            return None
        magic, depth, parent = _LINK.unpack(raw)
        if magic != LINK_MAGIC or depth < 1:
            return None
        entry = PageEntry(self._file_bytes, depth, None if parent == NO_PARENT else parent)
        return entry, status.st_mtime_ns

    # ------------------------------------------------------------------ hooks

    def _page_path(self, digest: bytes) -> str:
        return f"{self._dir}/{digest.hex()}"

    def _probe_plan(self, plan: PagePlan) -> int:
        hits = 0
        for digest in plan.digests:
            if not os.path.exists(self._page_path(digest)):
                break
            hits += 1
        self._counters.add(device_ops=min(hits + 1, plan.n_pages))
        return hits

    def _read_pages(self, plan: PagePlan, n_pages: int) -> list[torch.Tensor | None]:
        return [self._read_page(digest) for digest in plan.digests[:n_pages]]

    def _read_page(self, digest: bytes) -> torch.Tensor | None:
        try:
            fd = os.open(self._page_path(digest), os.O_RDONLY)
        except FileNotFoundError:
            return None
        finally:
            self._counters.add(device_ops=1)
        try:
            buffer = bytearray(self._file_bytes)
            filled = _read_into(fd, buffer)
        finally:
            os.close(fd)
        self._read_bytes += filled
        if filled != len(buffer):
            return None
        return decode_value(memoryview(buffer)[_LINK.size :], self.layout, self.page_size, digest)

    def _write_records(self, records: list[PageRecord]) -> None:
        """Write each page to a temp file and rename it into place, parents first.

        A crash mid-batch leaves a prefix of the batch: whole pages whose parents are stored. A write
        that fails (a full disk) takes back the pages it wrote, so a failed put stores nothing.
        """
        written: list[bytes] = []
        try:
            for plan, index, page in records:
                digest = plan.digests[index]
                parent = parent_of(plan, index)
                link = _LINK.pack(LINK_MAGIC, index + 1, parent or NO_PARENT)
                payload = page_payload(page)
                header = encode_header(self.layout, self.page_size, digest, payload_hash(payload))
                self._write_file(self._page_path(digest), (link, header, payload))
                self._index.add(digest, PageEntry(self._file_bytes, index + 1, parent))
                written.append(digest)
        except BaseException:
            self._drop(written[::-1])
            raise
        self._index.touch_written(records)

    def _write_file(self, path: str, parts: tuple[bytes, bytes, memoryview]) -> None:
        temporary = path + TEMP_SUFFIX
        try:
            with open(temporary, "wb") as file:
                for part in parts:
                    file.write(part)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        self._written_bytes += self._file_bytes
        self._counters.add(device_ops=2)

    def _unlink_pages(self, digests: list[bytes]) -> None:
        for digest in digests:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._page_path(digest))
        self._counters.add(device_ops=len(digests))

    def _drop(self, digests: list[bytes]) -> int:
        """Delete pages, children before parents, so the files left are always prefix-closed."""
        self._unlink_pages(digests)
        for digest in digests:
            self._index.remove(digest)
        return len(digests)

    def _used_bytes(self) -> int:
        """Disk use as :func:`directory_usage` counts it, from the page count (page files are alike)."""
        return self._header_bytes + len(self._index) * self._file_bytes

    def _backend_state(self) -> BackendState:
        return disk_state(self.path, self._index, self._written_bytes, self._read_bytes)

    def _reopen(self, config: StoreConfig) -> None:
        self._open(config)

    def _close(self) -> None:
        self._index = RecencyIndex(self._config.eviction_order)
        unlock(self._dir_lock)
