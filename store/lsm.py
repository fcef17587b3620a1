"""The LSM-tree store: RocksDB (through rocksdict) with the tensors in integrated blob files.

Key spaces of one database (raw bytes; ``ns`` is an 8-byte digest of the namespace, ``d1..dk`` the
8-byte chained page digests of :mod:`store.pages`, so a page's key is a byte prefix of its children's):

=================================  ========================================================
``H``                              header: format version, page size, layout (checked on open)
``C`` ns                           counters: pages, live bytes, last access stamp
``M`` ns d1..dk                    page metadata (:class:`store.codec.PageMeta`), ~60 bytes
``D`` ns d1..dk                    page value (header + tensor; a blob when blob files are on)
``A`` ns stamp (~depth) d1..dk     recency index: iterating it yields eviction victims in order
=================================  ========================================================

Namespaces (tenants) may share a directory, one open handle at a time. The budget is the directory's:
stamps continue across namespaces (a handle starts from the largest stamp any namespace recorded), so
merging every namespace's ``A`` space is one recency order, and eviction takes the oldest pages of the
whole directory, whichever namespace holds them; ``stats()`` counts every namespace's pages.

With ``key_scheme="flat"`` (fixed when the store is created, recorded in the header) the key body of page
k is its own digest dk alone, as SGLang names pages, and a fifth key space links each page to its
children, so eviction can still take a page's whole subtree:

=================================  ========================================================
``P`` ns d(k-1) dk                 child link: page k's parent names it (value empty)
=================================  ========================================================

A flat probe is one multi-get of its pages' metadata keys. A link left by an evicted page's parent is a
hint like an ``A`` entry: walks skip a child with no metadata, and the parent's own eviction removes it.

With ``reclaim="generations"`` the ``D`` records live in column families ``gen-<ns>-<start stamp>``
instead, one per generation of writes (a page's metadata names its generation), and reclaim drops the
oldest family whole.

A probe reads only ``M`` records: one ``seek_for_prev`` and at most one point lookup. Evicting page k
deletes its subtree from ``M`` and ``D`` with one ``delete_range`` each. ``A`` entries are hints: a stale
one (its page gone or re-stamped) is skipped and removed when the capacity manager meets it.
"""

from __future__ import annotations

import errno
import hashlib
import heapq
import json
import logging
import math
import re
import struct
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np
import torch
from rocksdict import (
    BlockBasedIndexType,
    BlockBasedOptions,
    BottommostLevelCompaction,
    Cache,
    ColumnFamily,
    CompactOptions,
    Options,
    Rdict,
    RdictIter,
    ReadOptions,
    SliceTransform,
    WriteBatch,
    WriteOptions,
)

from store.base import BackendState, DiskKVStore, PageRecord
from store.codec import PageMeta, checked_payload, decode_value, encode_value
from store.config import StoreConfig
from store.diskusage import directory_usage
from store.errors import IncompatibleStoreError, StoreBusyError, StoreFullError, free_bytes
from store.header import check_header, encode_header_record, expected_header, refuse_other_kind
from store.knob_bounds import bound_by_budget
from store.pages import KEY_DIGEST_BYTES, PagePlan

logger = logging.getLogger(__name__)

HEADER_KEY = b"H"
LIVE_FRACTION = 0.6
"""Eviction brings live bytes down to this share of the budget. Each reclaim may relocate up to the live
bytes, once per (1 - LIVE_FRACTION) of the budget written: 0.6 bounds that rewrite at 1.5x the writes."""
RECLAIM_GC_CUTOFFS = (0.25, 0.5, 1.0)
READMIT_AGE_FRACTION = 0.25
"""With ``reclaim="blob_age"``, a hit page written in the oldest quarter of the live stamp range (the next
victims) is written again: a hot page survives, at the cost of one copy per trip through the store."""
EVICT_CHUNK_FRACTION = 0.05
GENERATIONS = 8
"""With ``reclaim="generations"``, a new generation (column family) starts after each 1/8 of the budget
written, so dropping the oldest one frees about that much at a time."""
DEFAULT_GENERATION = 0
"""The generation of values in the default column family (written before generations were used)."""
GENERATION_PREFIX = "gen-"
PARALLEL_READ_BYTES = 256 * 1024
"""Pages of at least this size are read by :data:`READ_THREADS` threads at once (rocksdict releases the
GIL in a get, so reads overlap on the disk); smaller pages are read one after another, where handing
each read to a thread costs more than it saves."""
READ_THREADS = 4
WRITE_BATCH_BYTES = 4 * 1024 * 1024
"""A put writes its pages in page order, in atomic batches of about this many value bytes (one batch for
a prompt of small pages). A batch grows by doubling and copying, which made one batch of sixteen 1 MiB
pages cost 3 ms per page (0.2 ms in a batch of its own); a crash or a failed write keeps a prefix of the
pages, so the store stays prefix-closed."""
INFO_LOG_FILE_BYTES = 256 * 1024
"""RocksDB's info log (``LOG``) rolls at this size and keeps ``INFO_LOG_KEEP`` old files, so the store's
disk use stays bounded: unbounded, it grows by kilobytes with every flush and compaction."""
INFO_LOG_KEEP = 1
MANIFEST_FILE_BYTES = 4 * 1024 * 1024
BACKGROUND_PROPERTIES = (
    "rocksdb.num-running-flushes",
    "rocksdb.num-running-compactions",
    "rocksdb.mem-table-flush-pending",
    "rocksdb.compaction-pending",
)
SPACE_RESERVE_BYTES = 4 * 1024 * 1024
"""Free space a write leaves on the file system beyond what its own flush needs: room for the MANIFEST,
OPTIONS and info log files a reopen writes, and for evictions' small delete records."""
NAMESPACE_BYTES = 8
DATA_BLOCK_BYTES = 16 * 1024
"""Table data blocks of 16 KiB (RocksDB's default: 4 KiB): an index entry per block carries a separator
key up to a page's whole prefix key long, so 4x fewer blocks is 4x less index to cache. Cold probes at
200,000 pages of 1 KiB missed the block cache 1.7 times each, 4.2 with 4 KiB blocks."""
PROBE_PREFIX_BYTES = 1 + NAMESPACE_BYTES + KEY_DIGEST_BYTES
"""A key's space, namespace and first page digest: the bloom filters also hold these prefixes, so a probe's
seek skips every table file that holds no page of the prompt's first page, where it read an index
partition and a data block in each level (cold probes at 200,000 pages of 1 KiB: 2.7 block-cache misses
each without it, 1.7 with it; 5.4 and 4.2 with 4 KiB data blocks)."""
VALUE_SPACE = (b"D", b"E")
"""Every namespace's value keys (``D`` ns d1..dk)."""
_COUNTERS = struct.Struct("<QQQ")
_ACCESS = struct.Struct(">QH")
_TICKER = re.compile(r"^(rocksdb\.[\w.]+) COUNT : (\d+)$", re.MULTILINE)
_RAW_KEY_SIZE = re.compile(r"raw key size=(\d+)")


def prefix_successor(prefix: bytes) -> bytes:
    """The smallest key greater than every key that starts with ``prefix``."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        raise ValueError("a prefix of only 0xff bytes has no successor")
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def _options(config: StoreConfig) -> Options:
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.enable_statistics()
    options.set_max_background_jobs(2)
    options.set_max_log_file_size(INFO_LOG_FILE_BYTES)
    options.set_keep_log_file_num(INFO_LOG_KEEP)
    options.set_max_manifest_file_size(MANIFEST_FILE_BYTES)
    # RocksDB's default marks every file it opens POSIX_FADV_RANDOM, which turns off the kernel's
    # readahead: a cold 1 MiB blob read then goes to the disk in read_ahead_kb pieces, one after another
    # (cold get 0.23x raw; 0.53x without the advice, interleaved). A prompt's pages lie one after another
    # in a blob file, so readahead is what a cold prompt read wants; small random reads of table blocks
    # are read as they are by the kernel either way.
    options.set_advise_random_on_open(False)
    table = BlockBasedOptions()
    table.set_block_cache(Cache(config.block_cache_bytes))
    table.set_bloom_filter(10, False)
    table.set_cache_index_and_filter_blocks(True)
    # Partitioned index and filters: keys are O(pages) bytes, so one SST's whole index block grows to
    # megabytes, larger than a block-cache shard (capacity / 64): it was never cached, and every point
    # lookup re-read and parsed it (probe 3.7 ms at 400k pages, 0.2 ms with partitions). Partitions of
    # 4 KiB are cached like data blocks; the small top level stays pinned. Memory stays within the cache.
    table.set_index_type(BlockBasedIndexType.two_level_index_search())
    table.set_partition_filters(True)
    table.set_metadata_block_size(4096)
    table.set_block_size(DATA_BLOCK_BYTES)
    table.set_pin_top_level_index_and_filter(True)
    options.set_block_based_table_factory(table)
    options.set_prefix_extractor(SliceTransform.create_fixed_prefix(PROBE_PREFIX_BYTES))
    for spec, value in config.rocksdb_knobs():
        getattr(options, spec.open_setter())(spec.open_value(value))
    if config.reclaim == "generations":
        # A page's metadata (default family) and its value (a generation's family) are flushed together,
        # so a crash with the WAL off never keeps a metadata record whose value was lost.
        options.set_atomic_flush(True)
        # Memtables of all column families together stay within one family's: generations sealed before
        # their memtable filled are flushed in the background instead of holding pages in memory.
        options.set_db_write_buffer_size(config.write_buffer_size * config.max_write_buffer_number)
    return options


def _open_database(path: Path, options: Options) -> Rdict:
    """Open RocksDB at ``path``; another open handle on it is a :class:`StoreBusyError`.

    The column families are passed explicitly, each with these options. With None, rocksdict reloads the
    column family options of an existing database from its OPTIONS file and silently ignores the passed
    ones, so a reopen (or apply() of a reopen knob) would keep the old knobs.
    """
    try:
        families = Rdict.list_cf(str(path), options) if (path / "CURRENT").exists() else []
        return Rdict(
            str(path), options, column_families={name: options for name in families if name != "default"}
        )
    except Exception as error:
        if "lock" not in str(error).lower():
            raise
        raise StoreBusyError(
            f"the lsm store at {path} is already open (in this or another process): close that handle "
            f"first, or give each tenant its own directory ({error})"
        ) from error


class LSMStore(DiskKVStore):
    """Pages in RocksDB: prefix-preserving keys, metadata records, tensors in blob files."""

    kind = "lsm"

    def _start(self, config: StoreConfig) -> None:
        self._ns = hashlib.blake2b(self.namespace.encode(), digest_size=NAMESPACE_BYTES).digest()
        self._readers = (
            ThreadPoolExecutor(READ_THREADS, thread_name_prefix="kvtune-lsm-read")
            if self.page_bytes >= PARALLEL_READ_BYTES
            else None
        )
        self._open(config)

    # ------------------------------------------------------------------ open / close

    def _open(self, config: StoreConfig) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        refuse_other_kind(self.path, self.kind)
        self._options = _options(config)
        self._db = _open_database(self.path, self._options)
        try:
            self._check_header(config.key_scheme)
        except BaseException:
            self._db.close()
            raise
        self._flat = config.key_scheme == "flat"
        self._snapshot_reader: RdictIter | None = None
        self._logged = self._logs_pages(config)
        self._write_options = WriteOptions()
        self._write_options.disable_wal = not self._logged
        self._unlogged = WriteOptions()
        self._unlogged.disable_wal = True
        # RocksDB's CRC32c is software-only in rocksdict's build, slower than the disk on large blobs;
        # every value carries the xxh3-64 of its tensor bytes instead, checked on decode.
        self._value_reads = ReadOptions()
        self._value_reads.set_verify_checksums(False)
        # Scans cross key prefixes, so they ignore the prefix filters; a probe stays within its prompt's.
        self._scan_reads = ReadOptions()
        self._scan_reads.set_total_order_seek(True)
        self._probe_reads = ReadOptions()
        self._probe_reads.set_prefix_same_as_start(True)
        if self._db.get(b"M" + self._ns) is None:
            # An empty sentinel first in the namespace's metadata space: a backward scan from a page's key
            # stops here at the latest, never in another key space (probes stay within their prefix).
            self._db.put(b"M" + self._ns, b"")
        raw = self._db.get(b"C" + self._ns)
        self._pages, self._live_bytes, self._stamp = _COUNTERS.unpack(raw) if raw else (0, 0, 0)
        self._tenants = self._other_namespaces()
        self._stamp = max([self._stamp, *(counters[2] for counters in self._tenants.values())])
        self._families: dict[int, tuple[Rdict, ColumnFamily | None]] = {DEFAULT_GENERATION: (self._db, None)}
        self._tenant_families: list[tuple[Rdict, ColumnFamily]] = []
        prefix = self._generation_name(0)[:-16]
        for name in Rdict.list_cf(str(self.path), self._options):
            if name.startswith(prefix):
                self._families[int(name[len(prefix) :], 16)] = (
                    self._db.get_column_family(name),
                    self._db.get_column_family_handle(name),
                )
            elif name.startswith(GENERATION_PREFIX):
                self._tenant_families.append(
                    (self._db.get_column_family(name), self._db.get_column_family_handle(name))
                )
        self._generation_bytes = 0

    def _check_header(self, key_scheme: str) -> None:
        expected = {**expected_header(self.layout, self.page_size), "key_scheme": key_scheme}
        raw = self._db.get(HEADER_KEY)
        if raw is None:
            self._db.put(HEADER_KEY, encode_header_record(expected))
            return
        stored = json.loads(raw)
        check_header(stored, expected, self.path)
        # Stores created before the knob existed have prefix keys.
        self._refuse_other_scheme(stored.get("key_scheme", "prefix"), key_scheme)

    def _refuse_other_scheme(self, stored: str, requested: str) -> None:
        if stored != requested:
            raise IncompatibleStoreError(
                f"{self.path} holds an lsm store with key_scheme={stored!r}, but it was opened with "
                f"key_scheme={requested!r}: the key scheme is fixed when a store is created, so open it "
                f"with key_scheme={stored!r} or use another path"
            )

    def _close(self) -> None:
        self._close_db()
        if self._readers is not None:
            self._readers.shutdown()

    def _close_db(self) -> None:
        self._flush_all()  # also with the WAL on: a reopen then replays no log
        self._snapshot_reader = None  # an iterator must go before the database closes
        self._families.clear()  # a family's handles must go before the database closes
        self._tenant_families.clear()
        self._db.close()

    def _reopen(self, config: StoreConfig) -> None:
        self._refuse_other_scheme(self._config.key_scheme, config.key_scheme)  # before harming anything
        self._close_db()
        self._open(config)

    _clamps_warned: frozenset[tuple[str, int]] = frozenset()
    """(knob, asked value) of the clamps already warned about; a class default because the constructor
    bounds the config before the store's own state exists, immutable so no two stores share it."""

    def _bounded(self, config: StoreConfig) -> StoreConfig:
        """``config`` bounded by the budget; each distinct clamp is logged once as a warning (a policy
        re-proposing the same values every window would otherwise log on every apply), every one counted."""
        bounded, clamped = bound_by_budget(config, self.budget_bytes)
        for knob in clamped:
            level = logging.DEBUG if (knob.name, knob.asked) in self._clamps_warned else logging.WARNING
            self._clamps_warned |= {(knob.name, knob.asked)}
            logger.log(
                level,
                "%s: %s=%d clamped to %d, its share of the %d-byte budget (store.knob_bounds)",
                self.path,
                knob.name,
                knob.asked,
                knob.used,
                self.budget_bytes,
            )
        self._counters.add(knobs_clamped=len(clamped))
        return bounded

    def _apply_live(self, config: StoreConfig) -> None:
        changed = self._config.changed(config)
        live = config.rocksdb_options(changed)
        if live:
            self._db.set_options(live)
        logged = self._logs_pages(config)
        if logged != self._logged:
            if logged:
                # Unlogged pages still in the memtables would be lost in a crash that logged pages written
                # after them survive: a child page without its parent.
                self._flush_all()
            self._logged = logged
            self._write_options = WriteOptions()
            self._write_options.disable_wal = not logged

    def _logs_pages(self, config: StoreConfig) -> bool:
        """Whether pages are written through the WAL: always with the WAL on, and with it off when they
        are at most ``wal_max_page_bytes`` (one page size per store, so all pages or none)."""
        return not config.disable_wal or self.page_bytes <= config.wal_max_page_bytes

    def _flush_durable(self) -> None:
        """Sync the WAL when pages go through it (one sequential file; restamps skip it, but they are
        hints), else flush the memtables (a blob file, a table file and the MANIFEST, each synced)."""
        if self._logged:
            self._db.flush_wal(True)
        else:
            self._flush_all()

    def _flush_all(self) -> None:
        self._snapshot_reader = None
        for family, _ in self._all_families():
            family.flush()

    def _all_families(self) -> list[tuple[Rdict, ColumnFamily | None]]:
        """This namespace's families (the default one first) and the other namespaces' generations."""
        return [*self._families.values(), *self._tenant_families]

    def _other_namespaces(self) -> dict[bytes, list[int]]:
        """[pages, live bytes, stamp] of every other namespace with a counter record in the directory."""
        found: dict[bytes, list[int]] = {}
        iterator = self._db.iter(self._scan_reads)
        iterator.seek(b"C")
        while iterator.valid() and iterator.key().startswith(b"C"):
            ns = iterator.key()[1:]
            if ns != self._ns:
                found[ns] = list(_COUNTERS.unpack(iterator.value()))
            iterator.next()
        del iterator
        return found

    def _directory_pages(self) -> int:
        return self._pages + sum(counters[0] for counters in self._tenants.values())

    def _directory_live_bytes(self) -> int:
        return self._live_bytes + sum(counters[1] for counters in self._tenants.values())

    # ------------------------------------------------------------------ keys

    def _body(self, plan: PagePlan, n_pages: int) -> bytes:
        """The key body of page ``n_pages`` (1-based) of ``plan``, in the store's key scheme."""
        return plan.key_digest(n_pages - 1) if self._flat else plan.prefix_key(n_pages)

    def _meta_key(self, plan: PagePlan, n_pages: int) -> bytes:
        return b"M" + self._ns + self._body(plan, n_pages)

    def _data_key(self, plan: PagePlan, n_pages: int) -> bytes:
        return b"D" + self._ns + self._body(plan, n_pages)

    def _access_key(self, stamp: int, depth: int, body: bytes) -> bytes:
        return b"A" + self._ns + _ACCESS.pack(stamp, 0xFFFF - min(depth, 0xFFFF)) + body

    def _generation_name(self, start: int) -> str:
        return f"{GENERATION_PREFIX}{self._ns.hex()}-{start:016x}"

    def _current_generation(self) -> int:
        """The generation new values go to, starting a new one after each 1/:data:`GENERATIONS` of the
        budget written (``reclaim="generations"`` under a budget; the default family otherwise)."""
        if self.budget_bytes is None or self._config.reclaim != "generations":
            return DEFAULT_GENERATION
        newest = max(self._families)
        if newest != DEFAULT_GENERATION and self._generation_bytes < self.budget_bytes / GENERATIONS:
            return newest
        start = self._stamp
        name = self._generation_name(start)
        family = self._db.create_column_family(name, self._options)
        self._families[start] = (family, self._db.get_column_family_handle(name))
        self._generation_bytes = 0
        return start

    def _drop_generation(self, start: int) -> None:
        del self._families[start]  # the handles go first: RocksDB deletes the files when the last one does
        self._db.drop_column_family(self._generation_name(start))

    def _counter_record(self) -> tuple[bytes, bytes]:
        return b"C" + self._ns, _COUNTERS.pack(self._pages, self._live_bytes, self._stamp)

    # ------------------------------------------------------------------ hooks

    def _probe_plan(self, plan: PagePlan) -> int:
        """One ``seek_for_prev`` to the prompt's deepest key, then at most one more, to page k's key.

        The largest stored metadata key <= key(P) shares exactly k whole digests with the prompt's path,
        where k is the deepest stored page of the prompt: the store is prefix-closed, so page k is stored
        (an ancestor of the key found), and a stored page k+1 would sort between the key found and key(P).
        Page k's full chained digest is then compared: a corrupt record or a short-digest collision makes
        that page a miss (and the probe walks up to the deepest valid one).
        """
        if plan.n_pages == 0:
            return 0
        if self._flat:
            return self._probe_flat(plan)
        head = b"M" + self._ns
        body = plan.prefix_key(plan.n_pages)
        iterator = self._reader()
        # The iterator stays within the keys of the prompt's first page: invalid if that page is not stored.
        iterator.seek_for_prev(head + body)
        found = iterator.key() if iterator.valid() else b""
        if not found.startswith(head):
            return 0
        found_body = found[len(head) :]
        shared = _shared_digests(found_body, body)
        own = body[: shared * KEY_DIGEST_BYTES]
        if shared and found_body != own:
            # The key found is deeper than page k's own, which sorts just below it: a second seek on the
            # same iterator reached it 4-24% faster than a point lookup (median of per-round ratios).
            iterator.seek_for_prev(head + own)
            found_body = iterator.key()[len(head) :] if iterator.valid() else b""
        raw = iterator.value() if shared and found_body == own else None
        while shared > 0:  # more than one round only when a metadata record is corrupt or collides
            raw = raw if raw is not None else self._db.get(self._meta_key(plan, shared))
            if raw is not None and PageMeta.digest_of(raw) == plan.digests[shared - 1]:
                return shared
            shared, raw = shared - 1, None
        return 0

    def _probe_flat(self, plan: PagePlan) -> int:
        """One multi-get of every page's metadata; the leading run of pages whose digest matches."""
        metas = self._db.get([self._meta_key(plan, k + 1) for k in range(plan.n_pages)])
        for k, raw in enumerate(metas):
            if raw is None or PageMeta.digest_of(raw) != plan.digests[k]:
                return k
        return plan.n_pages

    def _reader(self) -> RdictIter:
        """An iterator over the database as of its last write, shared by probes until the next write.

        A new iterator's first seek opens an iterator on every memtable and table file, which cost a
        probe more than the seek itself (8,192 pages: ~7-30 us against ~4-8 us on an open iterator). An
        iterator reads a snapshot, so every write through :meth:`_write` drops it (this handle is the only
        writer of its directory), and so does a flush, whose memtable it would keep in memory.
        """
        if self._snapshot_reader is None:
            self._snapshot_reader = self._db.iter(self._probe_reads)
        return self._snapshot_reader

    def _write(self, batch: WriteBatch, options: WriteOptions) -> None:
        self._snapshot_reader = None
        self._db.write(batch, options)

    def _get_value(self, location: tuple[int, bytes]) -> bytes | None:
        generation, key = location
        family = self._families.get(generation)
        value: bytes | None = None if family is None else family[0].get(key, read_opt=self._value_reads)
        return value

    def _value_locations(self, plan: PagePlan, n_pages: int) -> list[tuple[int, bytes]]:
        """(generation, key) of the values of pages 1..n_pages; the metadata is read only when the store
        has generations (otherwise every value is in the default family)."""
        keys = [self._data_key(plan, k + 1) for k in range(n_pages)]
        if len(self._families) == 1:
            return [(DEFAULT_GENERATION, key) for key in keys]
        metas = self._db.get([self._meta_key(plan, k + 1) for k in range(n_pages)])
        decoded = [PageMeta.decode(raw) if raw is not None else None for raw in metas]
        return [(meta.generation if meta else -1, key) for meta, key in zip(decoded, keys, strict=True)]

    def _read_pages(self, plan: PagePlan, n_pages: int) -> Iterator[torch.Tensor | None]:
        """Single gets, not a multi-get: RocksDB's multi-get verifies every blob's CRC32c whatever the
        read options say (a software CRC in rocksdict's build) and reads large blobs several times
        slower than single gets do."""
        locations = self._value_locations(plan, n_pages)
        self._counters.add(device_ops=n_pages)
        return map(self._read_page, locations, plan.digests[:n_pages])

    def _read_page(self, location: tuple[int, bytes], digest: bytes) -> torch.Tensor | None:
        raw = self._get_value(location)
        return None if raw is None else decode_value(raw, self.layout, self.page_size, digest)

    def _read_into(self, plan: PagePlan, n_pages: int, out_bytes: np.ndarray) -> int | None:
        """Small pages of one column family: each value checked in place, then the pages' tensor bytes
        joined and copied into the output in one transposing copy. Wrapping each page in a tensor and
        copying it alone cost ~5 us a page, more than its read. Large pages: :meth:`_read_large_into`."""
        if self._readers is not None:
            return self._read_large_into(self._readers, plan, n_pages, out_bytes)
        if len(self._families) > 1:
            return super()._read_into(plan, n_pages, out_bytes)
        get, options, layout, page_size = self._db.get, self._value_reads, self.layout, self.page_size
        payloads = []
        for k in range(n_pages):
            raw = get(self._data_key(plan, k + 1), read_opt=options)
            payload = None if raw is None else checked_payload(raw, layout, page_size, plan.digests[k])
            if payload is None:
                self._counters.add(device_ops=k + 1)
                return k
            payloads.append(payload)
        self._counters.add(device_ops=n_pages)
        layers, pair, _, heads, width = out_bytes.shape
        pages = np.frombuffer(b"".join(payloads), dtype=np.uint8).reshape(
            n_pages, layers, pair, self.page_size, heads, width
        )
        by_page = out_bytes.reshape(layers, pair, n_pages, self.page_size, heads, width)  # a view: out is new
        np.copyto(by_page, pages.transpose(1, 2, 0, 3, 4, 5))
        return None

    def _read_large_into(
        self, readers: ThreadPoolExecutor, plan: PagePlan, n_pages: int, out_bytes: np.ndarray
    ) -> int | None:
        """Large pages: each read, checked and copied into its place in the output by one of the
        :data:`READ_THREADS` threads (RocksDB's get, the xxh3 check and numpy's copy all release the GIL),
        so reads overlap on the disk, copies and page faults overlap on the cores, and a page's value is
        freed as soon as it is copied: the next read reuses its memory instead of faulting in more."""
        locations = self._value_locations(plan, n_pages)
        self._counters.add(device_ops=n_pages)
        layers, pair, _, heads, width = out_bytes.shape
        layout, page_size = self.layout, self.page_size

        def read_into_place(index: int) -> bool:
            raw = self._get_value(locations[index])
            payload = None if raw is None else checked_payload(raw, layout, page_size, plan.digests[index])
            if payload is None:
                return False
            page = np.frombuffer(payload, dtype=np.uint8).reshape(layers, pair, page_size, heads, width)
            np.copyto(out_bytes[:, :, index * page_size : (index + 1) * page_size], page)
            return True

        reads = [readers.submit(read_into_place, index) for index in range(n_pages)]
        try:
            return next((index for index, read in enumerate(reads) if not read.result()), None)
        finally:
            for read in reads:
                read.cancel()
            wait(reads)  # no thread may still write into the output, nor read, once the lock is let go

    def _track_recency(self) -> bool:
        """Whether reads and writes move pages in the recency index (LRU order under a budget)."""
        return (
            self.budget_bytes is not None
            and self._config.reclaim == "relocate"
            and self._config.eviction_order == "lru"
        )

    def _readmits(self) -> bool:
        """Whether a hit re-writes the pages about to be evicted (write-order eviction under a budget)."""
        return self.budget_bytes is not None and self._config.reclaim in ("blob_age", "generations")

    def _restamp(
        self,
        batch: WriteBatch,
        plan: PagePlan,
        n_pages: int,
        stamp: int,
        older_than: int | None = None,
        generation: int | None = None,
    ) -> list[tuple[int, PageMeta]]:
        """Move pages ``0..n_pages-1`` of ``plan`` to access ``stamp`` in the recency index; with
        ``older_than``, only the pages stamped before it; with ``generation``, their metadata names that
        generation as their value's. Returns the indexes of the pages moved, with their old metadata."""
        metas = self._db.get([self._meta_key(plan, k + 1) for k in range(n_pages)])
        moved = []
        for k, raw in enumerate(metas):
            meta = PageMeta.decode(raw) if raw is not None else None
            if meta is None or meta.digest != plan.digests[k] or meta.stamp == stamp:
                continue
            if older_than is not None and meta.stamp >= older_than:
                continue
            body = self._body(plan, k + 1)
            batch.delete(self._access_key(meta.stamp, meta.depth, body))
            batch.put(self._access_key(stamp, meta.depth, body), b"")
            moved_to = meta.generation if generation is None else generation
            batch.put(
                self._meta_key(plan, k + 1),
                PageMeta(meta.digest, meta.value_bytes, stamp, k + 1, moved_to).encode(),
            )
            moved.append((k, meta))
        return moved

    def _oldest_stamp(self) -> int:
        """The stamp of the directory's next eviction victim, or the current stamp if there is none."""
        victims = self._victims()
        first = next(victims, None)
        victims.close()
        return self._stamp if first is None else int(_ACCESS.unpack(first[0][: _ACCESS.size])[0])

    def _victims(self) -> Generator[tuple[bytes, bytes, bytes]]:
        """The recency-index entries of every namespace in the directory, merged into one order (stamp,
        then deepest first): (stamp + depth + body, namespace, access key)."""

        def entries(ns: bytes) -> Iterator[tuple[bytes, bytes, bytes]]:
            prefix = b"A" + ns
            iterator = self._db.iter(self._scan_reads)
            iterator.seek(prefix)
            while iterator.valid() and iterator.key().startswith(prefix):
                key = iterator.key()
                yield key[len(prefix) :], ns, key
                iterator.next()

        return heapq.merge(*(entries(ns) for ns in (self._ns, *self._tenants)))

    def _readmit(self, batch: WriteBatch, plan: PagePlan, n_pages: int) -> bool:
        """Write again, with the current stamp, the pages of ``plan`` that are among the next victims.

        A page's stamp is then always the time its value was written, so write-order eviction frees
        whole blob files: a rewritten page's old blob is garbage in an old file that goes with its
        neighbours. Returns whether any page was written."""
        oldest = self._oldest_stamp()
        threshold = oldest + int((self._stamp - oldest) * READMIT_AGE_FRACTION)
        generation = self._current_generation()
        moved = self._restamp(batch, plan, n_pages, self._stamp, older_than=threshold, generation=generation)
        target = self._families[generation][1]
        for k, meta in moved:
            key = self._data_key(plan, k + 1)
            raw = self._get_value((meta.generation, key))
            if raw is not None:
                batch.put(key, raw, target)
        return bool(moved)

    def _touch(self, plan: PagePlan, n_pages: int) -> None:
        if not (self._track_recency() or self._readmits()):
            return
        self._stamp += 1
        batch = WriteBatch(raw_mode=True)
        if self._readmits():
            if not self._readmit(batch, plan, n_pages):
                return
            options = self._write_options
        else:
            self._restamp(batch, plan, n_pages, self._stamp)
            options = self._unlogged
        batch.put(*self._counter_record())
        self._write(batch, options)

    def _write_records(self, records: list[PageRecord]) -> None:
        self._stamp += 1
        batch = WriteBatch(raw_mode=True)
        if self._track_recency():
            first_new: dict[bytes, tuple[PagePlan, int]] = {}
            for record in records:
                key = record.plan.digests[-1]
                if key not in first_new or record.index < first_new[key][1]:
                    first_new[key] = (record.plan, record.index)
            for plan, index in first_new.values():
                self._restamp(batch, plan, index, self._stamp)
        committed = (self._pages, self._live_bytes)
        batches: list[tuple[WriteBatch, int, int]] = []  # each with the counters it leaves
        batch_bytes = written = 0
        generation = self._current_generation()
        family = self._families[generation][1]
        ns, stamp = self._ns, self._stamp
        for record in records:
            plan, index = record.plan, record.index
            digest = plan.digests[index]
            value = encode_value(self.layout, self.page_size, digest, record.page)
            if batch_bytes and batch_bytes + len(value) > WRITE_BATCH_BYTES:
                batch.put(*self._counter_record())
                batches.append((batch, self._pages, self._live_bytes))
                batch, batch_bytes = WriteBatch(raw_mode=True), 0
            put = batch.put
            body = self._body(plan, index + 1)
            if self._flat and index > 0:
                put(b"P" + ns + plan.key_digest(index - 1) + body, b"")
            put(b"D" + ns + body, value, family)
            put(b"M" + ns + body, PageMeta(digest, len(value), stamp, index + 1, generation).encode())
            put(self._access_key(stamp, index + 1, body), b"")
            self._pages += 1
            self._live_bytes += len(value)
            batch_bytes += len(value)
            written += len(value)
        batch.put(*self._counter_record())
        batches.append((batch, self._pages, self._live_bytes))
        try:
            self._check_room(written)
            for batch, pages, live_bytes in batches:
                self._write(batch, self._write_options)
                committed = (pages, live_bytes)
        except BaseException:
            self._pages, self._live_bytes = committed  # each batch is all or nothing
            raise
        self._generation_bytes += written
        self._counters.add(device_ops=len(batches))

    def _count_subtree(self, iterator: RdictIter, page: bytes, counted: set[bytes]) -> tuple[int, int]:
        """(pages, value bytes) in the subtree at ``page`` (namespace + body), skipping the subtrees rooted
        at ``counted`` pages (already counted whole); adds ``page`` to ``counted``."""
        end = prefix_successor(b"M" + page)
        pages, nbytes = 0, 0
        iterator.seek(b"M" + page)
        while iterator.valid() and iterator.key() < end:
            key = iterator.key()
            if key[1:] in counted:
                iterator.seek(prefix_successor(key))
                continue
            meta = PageMeta.decode(iterator.value())
            if meta is not None:
                pages += 1
                nbytes += meta.value_bytes
            iterator.next()
        counted.add(page)
        return pages, nbytes

    def _take_subtree(
        self, batch: WriteBatch, iterator: RdictIter, page: bytes, counted: set[bytes]
    ) -> tuple[int, int]:
        """Add the deletion of the subtree at ``page`` (namespace + key body) to ``batch``; (pages, value
        bytes) it held, not counting subtrees already in ``counted`` (which it extends)."""
        if self._flat:
            return self._take_flat_subtree(batch, iterator, page, counted)
        pages, nbytes = self._count_subtree(iterator, page, counted)
        self._delete_range(batch, page)
        return pages, nbytes

    def _take_flat_subtree(
        self, batch: WriteBatch, iterator: RdictIter, page: bytes, counted: set[bytes]
    ) -> tuple[int, int]:
        """Walk the child links down from ``page``, deleting each page (metadata, value, its links);
        ``counted`` gets every page deleted, so a later victim inside this subtree is skipped."""
        ns = page[:NAMESPACE_BYTES]
        pages, nbytes = 0, 0
        pending = [page[NAMESPACE_BYTES:]]
        while pending:
            node = ns + pending.pop()
            if node in counted:
                continue
            counted.add(node)
            raw = self._db.get(b"M" + node)
            meta = PageMeta.decode(raw) if raw is not None else None
            if meta is not None:
                pages += 1
                nbytes += meta.value_bytes
            batch.delete(b"M" + node)
            for _, handle in self._all_families():
                batch.delete(b"D" + node, handle)
            links = b"P" + node
            iterator.seek(links)
            while iterator.valid() and (link := iterator.key()).startswith(links):
                batch.delete(link)
                pending.append(link[len(links) :])
                iterator.next()
        return pages, nbytes

    def _delete_range(self, batch: WriteBatch, page: bytes) -> None:
        """Add the deletion of the subtree at ``page`` (namespace + body), metadata and values."""
        start = b"M" + page
        batch.delete_range(start, prefix_successor(start))
        start = b"D" + page
        for _, handle in self._all_families():
            batch.delete_range(start, prefix_successor(start), handle)

    def _commit_eviction(self, batch: WriteBatch, freed: dict[bytes, tuple[int, int]]) -> int:
        """Write the eviction ``batch`` with the counters of each namespace it frees (pages, value bytes)
        from; returns the pages evicted."""
        for ns, (pages, nbytes) in freed.items():
            if ns == self._ns:
                self._pages -= pages
                self._live_bytes -= nbytes
                batch.put(*self._counter_record())
            else:
                counters = self._tenants[ns]
                counters[0] -= pages
                counters[1] -= nbytes
                batch.put(b"C" + ns, _COUNTERS.pack(*counters))
        self._write(batch, self._write_options)
        self._counters.add(device_ops=1)
        return sum(pages for pages, _ in freed.values())

    def _evict_subtree(self, plan: PagePlan, index: int) -> int:
        if index >= plan.n_pages:
            return 0
        page = self._ns + self._body(plan, index + 1)
        iterator = self._db.iter(self._scan_reads)
        batch = WriteBatch(raw_mode=True)
        freed = self._take_subtree(batch, iterator, page, set())
        del iterator
        return self._commit_eviction(batch, {self._ns: freed})

    def _check_room(self, value_bytes: int) -> None:
        """Refuse a write the file system has no room for, before RocksDB meets a full disk.

        A write RocksDB cannot append turns the database read-only until a reopen, and the reopen must
        flush the memtables the WAL holds: so a write needs room for its values twice (WAL, then blob or
        table file), for the memtables not yet flushed, and :data:`SPACE_RESERVE_BYTES`. Before the room
        left gets that tight, the memtables are flushed, which frees their WAL copy.
        """
        unflushed = self._db.property_int_value("rocksdb.cur-size-all-mem-tables") or 0
        needed = 2 * value_bytes + unflushed + SPACE_RESERVE_BYTES
        free = free_bytes(self.path)
        if unflushed and free < needed + unflushed:
            self._db.flush()
            unflushed = self._db.property_int_value("rocksdb.cur-size-all-mem-tables") or 0
            needed = 2 * value_bytes + unflushed + SPACE_RESERVE_BYTES
            free = free_bytes(self.path)
        if free < needed:
            raise StoreFullError(
                self.path, free, OSError(errno.ENOSPC, f"a write needs {needed} bytes free, {free} are")
            )

    def _recover_from_write_error(self) -> None:
        """Reopen the database if a failed write left it read-only (RocksDB's background error state)."""
        try:
            self._db.put(b"M" + self._ns, b"", self._write_options)
        except Exception:
            logger.warning("%s: reopening the database after a failed write", self.path)
            self._reopen(self._config)

    def _disk_bytes(self) -> int:
        """The store's bytes on disk. With the WAL off, unflushed writes are on no disk yet: once they
        would take the store over its budget, the memtables are flushed, so the budget sees them (with the
        WAL on, the WAL holds them already)."""
        used = directory_usage(self.path)[0]
        if not self._logged and self.budget_bytes is not None:
            unflushed = self._db.property_int_value("rocksdb.cur-size-all-mem-tables") or 0
            if unflushed and used + unflushed > self.budget_bytes:
                self._flush_all()
                used = directory_usage(self.path)[0]
        return used

    def _enforce_budget(self) -> None:
        """Keep the disk (live + garbage bytes) within the budget: evict, then compact to give space back."""
        if self.budget_bytes is None or self._disk_bytes() <= self.budget_bytes:
            return
        if self._config.reclaim == "generations" and len(self._families) > 1:
            self._counters.add(evicted_pages=self._drop_generations(self.budget_bytes))
            return
        live_cap = self.budget_bytes * LIVE_FRACTION
        live = self._directory_live_bytes()
        target = live_cap if live > live_cap else live - self.budget_bytes * EVICT_CHUNK_FRACTION
        evicted = self._evict_until(target)
        self._counters.add(evicted_pages=evicted)
        if evicted:
            self._reclaim()

    def _drop_generations(self, budget_bytes: int) -> int:
        """Evict the pages of the oldest generation and drop its column family whole (its blob and table
        files are deleted, nothing is copied), until the disk is within ``budget_bytes``.

        Values still in the default family (written before generations were used) go first, by eviction
        and compaction. Returns the pages evicted.
        """
        if self._logged:
            self._flush_all()  # a WAL file holding a dropped generation's writes stays until every flush
        evicted = 0
        while self._disk_bytes() > budget_bytes:
            named = sorted(g for g in self._families if g != DEFAULT_GENERATION)
            if self._oldest_stamp() < named[0]:
                evicted += self._evict_until(0, before_stamp=named[0])
                self._compact_values()
                continue
            if len(named) < 2:
                self._generation_bytes = budget_bytes  # the next write starts a generation to drop this one
                break
            evicted += self._evict_until(0, before_stamp=named[1])
            self._drop_generation(named[0])
        return evicted

    def _compact_values(self) -> CompactOptions:
        """Compact the value key space (every namespace's) of every family, so evicted values' files are
        deleted; returns the options used."""
        start, end = VALUE_SPACE
        # By default a manual compaction skips the bottommost level, where the evicted keys' blob
        # references usually sit; forcing it is what lets their blob files go.
        options = CompactOptions()
        options.set_bottommost_level_compaction(BottommostLevelCompaction.force_optimized())
        for family, _ in self._all_families():
            family.compact_range(start, end, options)
        return options

    def _reclaim(self) -> None:
        """Make RocksDB give the evicted pages' space back.

        A compaction of the value key space drops the evicted keys, and blob files left holding only
        garbage are deleted. While the disk is still over budget (live pages pin partly-garbage blob
        files), it compacts again with blob GC forced on over a growing share of the oldest blob files
        (:data:`RECLAIM_GC_CUTOFFS`): old files hold most of the garbage, so most reclaims relocate few
        live blobs. With ``reclaim="blob_age"`` victims go in write order, so the oldest blob files are
        wholly garbage and the first compaction deletes them: nothing is relocated. With blob files
        turned off, forced GC would move every live blob inline at once, the old files still on disk
        (twice the live bytes for the length of the compaction): their pages leave by eviction instead.
        """
        options = self._compact_values()
        if self._config.reclaim != "relocate" or not self._config.enable_blob_files:
            return
        start, end = VALUE_SPACE
        configured = (
            self._config.blob_garbage_collection_age_cutoff
            if self._config.enable_blob_garbage_collection
            else 0.0
        )
        try:
            for cutoff in (c for c in RECLAIM_GC_CUTOFFS if c > configured):
                if self.budget_bytes is None or self._disk_bytes() <= self.budget_bytes:
                    return
                self._db.set_options(
                    {
                        "enable_blob_garbage_collection": "true",
                        "blob_garbage_collection_age_cutoff": str(cutoff),
                    }
                )
                self._db.compact_range(start, end, options)
        finally:
            restore = self._config.rocksdb_options()
            self._db.set_options(
                {
                    name: restore[name]
                    for name in ("enable_blob_garbage_collection", "blob_garbage_collection_age_cutoff")
                }
            )

    def _evict_until(self, live_target: float, before_stamp: int | None = None) -> int:
        """Evict recency-index victims in order, in one write batch, until live bytes <= ``live_target``
        (with ``before_stamp``: until the next victim is stamped at or after it).

        Each victim's whole subtree goes with it (with prefix keys, one ``delete_range`` per key space), so
        the stored set stays prefix-closed; stale index entries met on the way are removed in the same
        batch.
        """
        batch = WriteBatch(raw_mode=True)
        counted: set[bytes] = set()
        freed: dict[bytes, tuple[int, int]] = {}
        live = self._directory_live_bytes()
        victims = self._victims()
        subtree = self._db.iter(self._scan_reads)
        for order, ns, access_key in victims:
            if live <= live_target:
                break
            stamp, _ = _ACCESS.unpack(order[: _ACCESS.size])
            if before_stamp is not None and stamp >= before_stamp:
                break
            batch.delete(access_key)
            page = ns + order[_ACCESS.size :]
            raw = self._db.get(b"M" + page)
            meta = PageMeta.decode(raw) if raw is not None else None
            if meta is None or meta.stamp != stamp or self._within_counted(page, counted):
                continue
            subtree_pages, subtree_bytes = self._take_subtree(batch, subtree, page, counted)
            pages, nbytes = freed.get(ns, (0, 0))
            freed[ns] = (pages + subtree_pages, nbytes + subtree_bytes)
            live -= subtree_bytes
        victims.close()
        del subtree
        return 0 if batch.is_empty() else self._commit_eviction(batch, freed)

    def _within_counted(self, page: bytes, counted: set[bytes]) -> bool:
        """Whether ``page`` (namespace + key body) went with a subtree already deleted in this eviction
        batch: an older ancestor evicted before a newer descendant takes the descendant with it, and
        counting the descendant again would drive the page and byte counters below zero. ``counted`` holds
        subtree roots with prefix keys (an ancestor's key is a prefix of ``page``), every page with flat
        keys."""
        if self._flat:
            return page in counted
        first = NAMESPACE_BYTES + KEY_DIGEST_BYTES
        return any(page[:end] in counted for end in range(first, len(page) + 1, KEY_DIGEST_BYTES))

    def _tickers(self) -> dict[str, int]:
        text = self._options.get_statistics() or ""
        return {name: int(value) for name, value in _TICKER.findall(text)}

    def _backend_state(self) -> BackendState:
        disk, files = directory_usage(self.path)
        tickers = self._tickers()
        prop = self._db.property_int_value
        # Flush and compaction tickers include the blob files they write; the level read tickers
        # include blob reads. Adding the blob tickers too would count those bytes twice.
        written = sum(
            tickers.get(name, 0)
            for name in ("rocksdb.wal.bytes", "rocksdb.flush.write.bytes", "rocksdb.compact.write.bytes")
        )
        read = sum(
            tickers.get(name, 0)
            for name in (
                "rocksdb.compact.read.bytes",
                "rocksdb.last.level.read.bytes",
                "rocksdb.non.last.level.read.bytes",
            )
        )
        garbage = prop("rocksdb.live-blob-file-garbage-size") or 0
        return BackendState(
            pages_stored=self._directory_pages(),
            live_bytes=self._directory_live_bytes(),
            disk_bytes=disk,
            files=files,
            device_write_bytes=written,
            device_read_bytes=read,
            stall_s=tickers.get("rocksdb.stall.micros", 0) / 1e6,
            l0_files=prop("rocksdb.num-files-at-level0") or 0,
            pending_compaction_bytes=prop("rocksdb.estimate-pending-compaction-bytes") or 0,
            blob_live_bytes=max((prop("rocksdb.live-blob-file-size") or 0) - garbage, 0),
            blob_garbage_bytes=garbage,
        )

    def background_work_pending(self) -> bool:
        """True while RocksDB has a flush or a compaction running or scheduled."""
        with self._lock:
            self._check_open()
            return any(self._db.property_int_value(name) for name in BACKGROUND_PROPERTIES)

    def flush_memtables(self) -> None:
        """Write every memtable to table and blob files, whatever the WAL setting: afterwards a read
        comes from files, not from memory (``flush()`` flushes them only when pages skip the WAL, where it
        is what makes writes durable)."""
        with self._lock:
            self._check_open()
            self._flush_all()

    def key_bytes_per_page(self) -> float:
        """Key bytes in the SST files per stored page: RocksDB's raw key size (every key space, the
        8-byte internal suffix and not yet compacted versions included) over the pages stored."""
        with self._lock:
            self._check_open()
            found = _RAW_KEY_SIZE.search(self._db.property_value("rocksdb.aggregated-table-properties") or "")
            pages = self._directory_pages()
            return int(found.group(1)) / pages if found and pages else math.nan

    def statistics_tickers(self) -> dict[str, int]:
        """RocksDB's statistics tickers (``rocksdb.*`` counters), cumulative since open."""
        with self._lock:
            self._check_open()
            return self._tickers()


def _shared_digests(found: bytes, wanted: bytes) -> int:
    """How many whole leading digests two key bodies share: the bytes before their first difference,
    found by XOR-ing them as two big integers (C code throughout; a binary search over slice comparisons
    cost a probe ~3 us, a digest-by-digest loop more than the seek it followed)."""
    length = min(len(found), len(wanted))
    difference = int.from_bytes(found[:length], "big") ^ int.from_bytes(wanted[:length], "big")
    equal_bytes = length - (difference.bit_length() + 7) // 8
    return equal_bytes // KEY_DIGEST_BYTES
