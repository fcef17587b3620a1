"""What only the LSM store promises, proven with RocksDB's own statistics and raw keys."""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from store import IncompatibleStoreError, KVLayout, PageMissingError, StoreConfig
from store.codec import VALUE_HEADER_BYTES
from store.lsm import WRITE_BATCH_BYTES, LSMStore
from tests.store.conftest import (
    LAYOUT,
    PAGE_SIZE,
    MakeStore,
    assert_bit_exact,
    make_tokens,
    open_kind,
    page_slice,
    prefix_kv,
)

SEEKS = "rocksdb.number.db.seek"
ITER_BYTES_READ = "rocksdb.db.iter.bytes.read"
KEYS_READ = "rocksdb.number.keys.read"  # point lookups (Get)
BLOB_BYTES_READ = "rocksdb.blobdb.blob.file.bytes.read"
BYTES_READ = "rocksdb.bytes.read"  # value bytes Get returned
MULTIGET = "rocksdb.number.multiget.get"
KEYS_WRITTEN = "rocksdb.number.keys.written"
# tensors go to blob files even for the tiny pages of these tests (256 bytes + header)
BLOB_CONFIG = StoreConfig(min_blob_size=64)
P = 100


@pytest.fixture
def lsm(make_store: MakeStore) -> Iterator[LSMStore]:
    s = make_store("lsm", config=BLOB_CONFIG)
    assert isinstance(s, LSMStore)
    yield s


def _delta(s: LSMStore, before: dict[str, int]) -> dict[str, int]:
    after = s.statistics_tickers()
    return {name: value - before.get(name, 0) for name, value in after.items()}


def _raw_keys(s: LSMStore) -> list[bytes]:
    """Every raw key of the database (Rdict has no __iter__ in raw mode)."""
    return [bytes(key) for key in s._db.keys()]  # noqa: SIM118 (an Rdict, not a dict)


def _stored_prompt(s: LSMStore, seed: int, n_pages: int) -> torch.Tensor:
    tokens = make_tokens(seed, n_pages * PAGE_SIZE + 1)
    assert s.put_batch(tokens, prefix_kv(tokens)) == n_pages
    return tokens


def test_values_are_in_blob_files(lsm: LSMStore) -> None:
    tokens = _stored_prompt(lsm, 1, P)
    lsm._db.flush()
    before = lsm.statistics_tickers()
    assert_bit_exact(lsm.get_batch(tokens, P), prefix_kv(tokens))
    delta = _delta(lsm, before)
    assert delta[BLOB_BYTES_READ] >= P * LAYOUT.page_bytes(PAGE_SIZE)  # the counter sees tensor reads
    stats = lsm.stats()
    assert stats.blob_live_bytes >= P * LAYOUT.page_bytes(PAGE_SIZE)
    assert stats.l0_files >= 1


@pytest.mark.parametrize("n_pages", [1, 2, 37, 64, P, 257])
@pytest.mark.parametrize("case", ["full hit", "partial hit", "first page only", "miss"])
def test_probe_is_a_few_metadata_lookups(lsm: LSMStore, n_pages: int, case: str) -> None:
    stored = _stored_prompt(lsm, 2, n_pages)
    lsm._db.flush()  # tensors now live in blob files, where a stray read would show
    fresh = make_tokens(3, n_pages * PAGE_SIZE)
    if case == "full hit":
        tokens, expected = stored, n_pages
    elif case == "partial hit":
        keep = n_pages * 3 // 5
        tokens, expected = torch.cat([stored[: keep * PAGE_SIZE], fresh[keep * PAGE_SIZE :]]), keep
    elif case == "first page only":
        tokens, expected = torch.cat([stored[:PAGE_SIZE], fresh[PAGE_SIZE:]]), 1
    else:
        tokens, expected = fresh, 0

    before = lsm.statistics_tickers()
    assert lsm.probe(tokens) == expected
    delta = _delta(lsm, before)
    # one seek, plus at most one more: well within the ceil(log2 P) + 2 lookups
    assert 1 <= delta.get(SEEKS, 0) <= 2 <= math.ceil(math.log2(max(n_pages, 2))) + 2, f"{n_pages} pages"
    assert delta.get(KEYS_READ, 0) == 0
    assert delta[BLOB_BYTES_READ] == 0
    assert delta.get(MULTIGET, 0) == 0
    # tensors sit in blob files (nothing read there); the rest is a few metadata entries, each a key of
    # 17 + 8 * depth bytes and a ~60-byte value
    assert delta.get(BYTES_READ, 0) + delta.get(ITER_BYTES_READ, 0) <= 3 * (17 + 8 * n_pages + 64)


@pytest.mark.parametrize(
    ("found", "wanted", "shared"),
    [
        (b"", b"a" * 16, 0),
        (b"a" * 8 + b"b" * 8, b"a" * 8 + b"c" * 8, 1),
        (b"a" * 24, b"a" * 16, 2),  # a deeper stored key of the same path
        (b"a" * 7 + b"b" + b"a" * 8, b"a" * 16, 0),  # differs in a digest's last byte
        (b"a" * 64 + b"x" * 8, b"a" * 64 + b"y" * 8 + b"z" * 8, 8),
    ],
)
def test_shared_digests_counts_whole_leading_digests(found: bytes, wanted: bytes, shared: int) -> None:
    from store.lsm import _shared_digests

    assert _shared_digests(found, wanted) == shared


def test_get_batch_is_one_point_lookup_per_page(lsm: LSMStore) -> None:
    tokens = _stored_prompt(lsm, 4, P)
    lsm._db.flush()
    for n in (1, 50, P):
        before = lsm.statistics_tickers()
        assert_bit_exact(lsm.get_batch(tokens, n), page_slice(prefix_kv(tokens), n))
        delta = _delta(lsm, before)
        assert delta[KEYS_READ] == n
        assert delta.get(MULTIGET, 0) == 0


def test_probes_share_one_iterator_until_a_write(lsm: LSMStore) -> None:
    tokens = make_tokens(20, 10 * PAGE_SIZE)
    assert lsm.probe(tokens) == 0
    reader = lsm._snapshot_reader
    assert reader is not None
    assert lsm.probe(tokens) == 0
    assert lsm._snapshot_reader is reader
    assert lsm.put_batch(tokens[: 6 * PAGE_SIZE], prefix_kv(tokens[: 6 * PAGE_SIZE])) == 6
    assert lsm._snapshot_reader is None
    assert lsm.probe(tokens) == 6  # a new iterator sees the write
    assert lsm.evict(tokens, 4) == 2
    assert lsm.probe(tokens) == 4  # and the eviction


SEEK_FILTERED = "rocksdb.non.last.level.seek.filtered"
SEEK_FILTER_MATCH = "rocksdb.non.last.level.seek.filter.match"


def test_a_probe_skips_table_files_without_its_first_page(make_store: MakeStore) -> None:
    # six prompts with different first pages, each flushed into its own level-0 table file
    config = BLOB_CONFIG.replace(
        level0_file_num_compaction_trigger=20,
        level0_slowdown_writes_trigger=30,
        level0_stop_writes_trigger=40,
    )
    s = make_store("lsm", config=config)
    assert isinstance(s, LSMStore)
    prompts = []
    for seed in range(6):
        prompts.append(_stored_prompt(s, 30 + seed, 5))
        s._db.flush()
    assert s.stats().l0_files == 6
    fresh = make_tokens(99, 5 * PAGE_SIZE)
    partial = torch.cat([prompts[2][: 3 * PAGE_SIZE], fresh[3 * PAGE_SIZE :]])
    for tokens, expected, searched in ((prompts[2], 5, 1), (partial, 3, 1), (fresh, 0, 0)):
        before = s.statistics_tickers()
        assert s.probe(tokens) == expected
        delta = _delta(s, before)
        # the prefix bloom filters rule out every file but the one holding the prompt's first page
        assert delta.get(SEEK_FILTERED, 0) == 6 - searched
        assert delta.get(SEEK_FILTER_MATCH, 0) == searched
    assert s.evict(prompts[4], 0) == 5  # scans still cross files and prefixes
    assert [s.probe(tokens) for tokens in prompts] == [5, 5, 5, 5, 0, 5]


def test_get_batch_names_the_first_missing_page(lsm: LSMStore) -> None:
    tokens = _stored_prompt(lsm, 21, 8)
    lsm._db.delete(max((key for key in _raw_keys(lsm) if key.startswith(b"D")), key=len)[: -3 * 8])
    with pytest.raises(PageMissingError, match="page 4 of 6 is not stored"):
        lsm.get_batch(tokens, 6)
    assert_bit_exact(lsm.get_batch(tokens, 4), page_slice(prefix_kv(tokens), 4))


def test_put_batch_is_one_atomic_write(lsm: LSMStore) -> None:
    before = lsm.statistics_tickers()
    _stored_prompt(lsm, 5, 30)
    delta = _delta(lsm, before)
    assert delta["rocksdb.write.self"] == 1
    assert delta[KEYS_WRITTEN] >= 3 * 30  # data, metadata and recency records of 30 pages, in that one write


def test_a_put_of_large_pages_is_written_in_batches_of_whole_pages(make_store: MakeStore) -> None:
    layout = KVLayout(layers=16, kv_heads=1, head_dim=128, dtype=torch.float16)  # 512 KiB pages
    s = make_store("lsm", layout=layout, page_size=64)
    assert isinstance(s, LSMStore)
    n_pages = 40
    per_batch = WRITE_BATCH_BYTES // (s.page_bytes + VALUE_HEADER_BYTES)  # 7
    tokens = make_tokens(8, n_pages * 64)
    kv = prefix_kv(tokens, layout, 64)
    before = s.statistics_tickers()
    assert s.put_batch(tokens, kv) == n_pages
    delta = _delta(s, before)
    assert delta["rocksdb.write.self"] == math.ceil(n_pages / per_batch) == 6
    assert s.stats().pages_stored == n_pages
    assert s.stats().live_bytes == n_pages * (s.page_bytes + VALUE_HEADER_BYTES)
    assert_bit_exact(s.get_batch(tokens, n_pages), kv)


def test_flush_memtables_moves_pages_to_files_even_with_the_wal_on(make_store: MakeStore) -> None:
    s = make_store("lsm", config=BLOB_CONFIG.replace(disable_wal=False))
    assert isinstance(s, LSMStore)
    _stored_prompt(s, 9, 20)
    s.flush()  # durable by the WAL: the pages stay in the memtable
    assert s._db.property_int_value("rocksdb.num-entries-active-mem-table") >= 3 * 20
    s.flush_memtables()
    assert s._db.property_int_value("rocksdb.num-entries-active-mem-table") == 0
    assert s.stats().files > 0 and any(name.endswith(".blob") for name in os.listdir(s.path))


@pytest.mark.parametrize("page_size", [4, 64])
def test_keys_are_prefix_preserving_and_short(make_store: MakeStore, page_size: int) -> None:
    s = make_store("lsm", page_size=page_size)
    n_pages = 40
    tokens = make_tokens(6, n_pages * page_size)
    s.put_batch(tokens, prefix_kv(tokens, page_size=page_size))
    keys = _raw_keys(s)
    assert max(len(key) for key in keys) <= 32 + 16 * n_pages  # O(pages), never O(tokens) bytes
    sentinel = min((key for key in keys if key.startswith(b"M")), key=len)  # the namespace's probe stop
    for space in (b"M", b"D"):
        chain = sorted((key for key in keys if key.startswith(space) and key != sentinel), key=len)
        assert len(chain) == n_pages
        fixed = len(chain[0]) - (len(chain[1]) - len(chain[0]))
        assert 0 < fixed <= 32
        for depth, (shorter, longer) in enumerate(itertools.pairwise(chain), start=1):
            assert longer.startswith(shorter)  # key(k) is a byte prefix of key(k+1)
            assert len(longer) - len(shorter) <= 16
            assert len(shorter) <= fixed + 16 * depth
    if page_size == 64:  # a page's tokens are 256 bytes; its share of the key stays at most 16
        assert max(len(key) for key in keys) * 8 < 4 * page_size * n_pages


def test_eviction_is_two_range_deletes(lsm: LSMStore) -> None:
    tokens = _stored_prompt(lsm, 7, 50)
    sibling = torch.cat([tokens[: 20 * PAGE_SIZE], make_tokens(8, 5 * PAGE_SIZE)])
    assert lsm.put_batch(sibling, prefix_kv(sibling)) == 5
    lsm._db.flush()
    deletes_before = lsm._db.property_int_value("rocksdb.num-deletes-active-mem-table")
    before = lsm.statistics_tickers()
    assert lsm.evict(tokens, 10) == 40 + 5
    delta = _delta(lsm, before)
    # two delete_range records (metadata and data) and the counter record, not 90 point deletes
    assert delta[KEYS_WRITTEN] <= 4
    assert lsm._db.property_int_value("rocksdb.num-deletes-active-mem-table") == deletes_before
    assert delta.get(BLOB_BYTES_READ, 0) == 0  # eviction reads metadata, never tensors
    assert lsm.probe(tokens) == 10
    assert lsm.probe(sibling) == 10
    assert_bit_exact(lsm.get_batch(tokens, 10), page_slice(prefix_kv(tokens), 10))
    assert not [key for key in _raw_keys(lsm) if key.startswith(b"D") and len(key) > 9 + 8 * 10]


def _new_keys(lsm: LSMStore, tokens: torch.Tensor) -> dict[bytes, bytes]:
    """Store ``tokens`` and return the raw records its put created (keyed by raw key)."""
    before = set(_raw_keys(lsm))
    lsm.put_batch(tokens, prefix_kv(tokens))
    return {key: lsm._db[key] for key in _raw_keys(lsm) if key not in before and key[:1] in (b"M", b"D")}


def test_digest_collision_is_a_miss_never_a_wrong_tensor(lsm: LSMStore) -> None:
    """Another prompt's records under this prompt's key (what a short-digest collision would look like)."""
    victim = make_tokens(9, PAGE_SIZE)
    intruder = make_tokens(10, PAGE_SIZE)
    victim_records = _new_keys(lsm, victim)
    intruder_records = _new_keys(lsm, intruder)
    by_space = {key[:1]: value for key, value in intruder_records.items()}
    for key in victim_records:
        lsm._db[key] = by_space[key[:1]]  # the intruder's metadata and value, under the victim's keys
    assert lsm.probe(victim) == 0
    with pytest.raises(PageMissingError):
        lsm.get_batch(victim, 1)
    # the intruder itself is untouched
    assert lsm.probe(intruder) == 1
    assert_bit_exact(lsm.get_batch(intruder, 1), prefix_kv(intruder))
    # writing the victim again replaces the foreign records
    assert lsm.put_batch(victim, prefix_kv(victim)) == 1
    assert_bit_exact(lsm.get_batch(victim, 1), prefix_kv(victim))


def _corruptions(value: bytes) -> dict[str, bytes]:
    from store.codec import VALUE_HEADER_BYTES

    digest_at = VALUE_HEADER_BYTES - 8 - 32
    hash_at = VALUE_HEADER_BYTES - 8
    tensor_at = VALUE_HEADER_BYTES + 5
    return {
        "check": value[:digest_at] + bytes([value[digest_at] ^ 1]) + value[digest_at + 1 :],
        "hash": value[:hash_at] + bytes([value[hash_at] ^ 1]) + value[hash_at + 1 :],
        "tensor": value[:tensor_at] + bytes([value[tensor_at] ^ 0x80]) + value[tensor_at + 1 :],
        "magic": b"XXX" + value[3:],
        "version": value[:3] + bytes([value[3] + 1]) + value[4:],
        "dtype": value[:4] + bytes([3]) + value[5:],  # claims float32
        "shape": value[:5] + (3).to_bytes(4, "little") + value[9:],
        "truncated": value[:-2],
        "extended": value + b"\x00\x00",
        "empty": b"",
    }


@pytest.mark.parametrize("field", sorted(_corruptions(bytes(400))))
def test_corrupt_value_is_a_miss(lsm: LSMStore, field: str) -> None:
    tokens = make_tokens(11, 3 * PAGE_SIZE)
    records = _new_keys(lsm, tokens)
    data_key = max((key for key in records if key.startswith(b"D")), key=len)  # the last page
    lsm._db[data_key] = _corruptions(records[data_key])[field]
    assert lsm.probe(tokens) == 3  # the metadata record still says stored
    with pytest.raises(PageMissingError):
        lsm.get_batch(tokens, 3)
    assert_bit_exact(lsm.get_batch(tokens, 2), page_slice(prefix_kv(tokens), 2))


@pytest.mark.parametrize("field", ["check", "version", "truncated"])
def test_corrupt_metadata_is_a_miss(lsm: LSMStore, field: str) -> None:
    tokens = make_tokens(12, 3 * PAGE_SIZE)
    records = _new_keys(lsm, tokens)
    meta_key = max((key for key in records if key.startswith(b"M")), key=len)
    meta = records[meta_key]
    corrupted = {
        "check": meta[:1] + bytes([meta[1] ^ 1]) + meta[2:],
        "version": bytes([meta[0] + 1]) + meta[1:],
        "truncated": meta[:-1],
    }[field]
    lsm._db[meta_key] = corrupted
    assert lsm.probe(tokens) == 2
    assert_bit_exact(lsm.get_batch(tokens, 2), page_slice(prefix_kv(tokens), 2))
    assert lsm.put_batch(tokens, prefix_kv(tokens)) == 1  # the page is written again
    assert lsm.probe(tokens) == 3


@pytest.mark.parametrize(("step", "message"), [(1, "newer"), (-1, "older kvtune .* delete it")])
def test_other_format_on_disk_is_refused(tmp_path: Path, step: int, message: str) -> None:
    import json

    path = tmp_path / "db"
    with open_kind("lsm", path) as s:
        assert isinstance(s, LSMStore)
        header = json.loads(s._db[b"H"])
        header["format_version"] += step
        s._db[b"H"] = json.dumps(header).encode()
    with pytest.raises(IncompatibleStoreError, match=message):
        open_kind("lsm", path)


def test_a_flipped_byte_in_a_blob_file_is_a_miss(make_store: MakeStore, tmp_path: Path) -> None:
    """Reads skip RocksDB's CRC32c; the value's xxh3-64 still turns a corrupted tensor into a miss."""
    path = tmp_path / "flip"
    s = make_store("lsm", path=path, config=BLOB_CONFIG)
    tokens = make_tokens(21, 3 * PAGE_SIZE)
    kv = prefix_kv(tokens)
    assert s.put_batch(tokens, kv) == 3
    s.close()
    last_page = page_slice(kv, 3)[:, :, 2 * PAGE_SIZE :].contiguous().view(torch.uint8).numpy().tobytes()
    (blob,) = [p for p in path.glob("*.blob") if last_page in p.read_bytes()]
    data = bytearray(blob.read_bytes())
    data[data.index(last_page) + len(last_page) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    s = make_store("lsm", path=path, config=BLOB_CONFIG)
    assert s.probe(tokens) == 3  # the metadata record still says stored
    with pytest.raises(PageMissingError):
        s.get_batch(tokens, 3)
    assert_bit_exact(s.get_batch(tokens, 2), page_slice(kv, 2))


def _latest_options(path: Path) -> str:
    files = sorted(path.glob("OPTIONS-*"), key=lambda p: int(p.name.split("-")[1]))
    return files[-1].read_text()


def test_live_knobs_reach_rocksdb(lsm: LSMStore) -> None:
    assert lsm.path is not None
    tokens = _stored_prompt(lsm, 13, 5)
    new = lsm.config.replace(
        write_buffer_size=8 << 20, level0_file_num_compaction_trigger=7, enable_blob_garbage_collection=True
    )
    assert lsm.apply(new) == []
    options = _latest_options(lsm.path)
    assert "write_buffer_size=8388608" in options
    assert "level0_file_num_compaction_trigger=7" in options
    assert "enable_blob_garbage_collection=true" in options
    assert_bit_exact(lsm.get_batch(tokens, 5), prefix_kv(tokens))


def test_reopen_knob_reaches_rocksdb(lsm: LSMStore) -> None:
    assert lsm.path is not None
    tokens = _stored_prompt(lsm, 14, 5)
    assert lsm._db.property_int_value("rocksdb.block-cache-capacity") == StoreConfig().block_cache_bytes
    new = lsm.config.replace(block_cache_bytes=2 << 20, write_buffer_size=4 << 20)
    assert lsm.apply(new) == ["block_cache_bytes"]
    assert lsm._db.property_int_value("rocksdb.block-cache-capacity") == 2 << 20
    assert "write_buffer_size=4194304" in _latest_options(lsm.path)  # the other knobs came along
    assert_bit_exact(lsm.get_batch(tokens, 5), prefix_kv(tokens))


def test_reopening_with_another_config_uses_it(tmp_path: Path) -> None:
    """The knobs passed to open_store win over the ones the database was created with."""
    path = tmp_path / "db"
    tokens = make_tokens(19, 3 * PAGE_SIZE)
    with open_kind("lsm", path, config=StoreConfig(write_buffer_size=8 << 20, min_blob_size=64)) as s:
        s.put_batch(tokens, prefix_kv(tokens))
    config = StoreConfig(write_buffer_size=16 << 20, min_blob_size=4096, level0_file_num_compaction_trigger=9)
    with open_kind("lsm", path, config=config) as s:
        options = _latest_options(path)
        assert "write_buffer_size=16777216" in options
        assert "min_blob_size=4096" in options
        assert "level0_file_num_compaction_trigger=9" in options
        assert_bit_exact(s.get_batch(tokens, 3), prefix_kv(tokens))


def test_flush_without_wal_empties_the_memtable(make_store: MakeStore) -> None:
    s = make_store("lsm", config=StoreConfig(disable_wal=True, wal_max_page_bytes=0))
    assert isinstance(s, LSMStore)
    before = s.statistics_tickers()
    tokens = _stored_prompt(s, 15, 6)
    assert _delta(s, before).get("rocksdb.wal.bytes", 0) == 0
    assert s._db.property_int_value("rocksdb.num-entries-active-mem-table") > 0
    s.flush()
    assert s._db.property_int_value("rocksdb.num-entries-active-mem-table") == 0
    assert_bit_exact(s.get_batch(tokens, 6), prefix_kv(tokens))


def test_wal_toggles_live(lsm: LSMStore) -> None:
    lsm.apply(lsm.config.replace(disable_wal=True, wal_max_page_bytes=0))
    before = lsm.statistics_tickers()
    _stored_prompt(lsm, 16, 3)
    assert _delta(lsm, before).get("rocksdb.wal.bytes", 0) == 0
    lsm.apply(lsm.config.replace(disable_wal=False))
    before = lsm.statistics_tickers()
    _stored_prompt(lsm, 17, 3)
    assert _delta(lsm, before)["rocksdb.wal.bytes"] > 3 * LAYOUT.page_bytes(PAGE_SIZE)


def test_small_pages_go_through_the_wal_and_flush_syncs_it(make_store: MakeStore) -> None:
    """With the WAL off, pages of at most ``wal_max_page_bytes`` are still logged, and a durable ``flush()``
    syncs the log, leaving the memtable (and its pages) in memory; larger pages skip the log."""
    page_bytes = LAYOUT.page_bytes(PAGE_SIZE)
    s = make_store("lsm", config=StoreConfig(disable_wal=True, wal_max_page_bytes=page_bytes))
    assert isinstance(s, LSMStore)
    before = s.statistics_tickers()
    tokens = _stored_prompt(s, 21, 5)
    assert _delta(s, before)["rocksdb.wal.bytes"] > 5 * page_bytes
    s.flush()
    assert _delta(s, before)["rocksdb.wal.synced"] >= 1
    assert s._db.property_int_value("rocksdb.num-entries-active-mem-table") > 0
    assert_bit_exact(s.get_batch(tokens, 5), prefix_kv(tokens))
    s.apply(s.config.replace(wal_max_page_bytes=page_bytes - 1))
    before = s.statistics_tickers()
    _stored_prompt(s, 22, 5)
    assert _delta(s, before).get("rocksdb.wal.bytes", 0) == 0


def test_logging_pages_again_flushes_the_unlogged_ones_first(make_store: MakeStore) -> None:
    """Unlogged pages left in the memtable when pages start going through the WAL again are flushed first:
    a crash must not keep a logged child page and lose its unlogged parent."""
    s = make_store("lsm", config=StoreConfig(disable_wal=True, wal_max_page_bytes=0))
    assert isinstance(s, LSMStore)
    _stored_prompt(s, 23, 3)
    assert s._db.property_int_value("rocksdb.num-entries-active-mem-table") > 0
    s.apply(s.config.replace(wal_max_page_bytes=LAYOUT.page_bytes(PAGE_SIZE)))
    assert s._db.property_int_value("rocksdb.num-entries-active-mem-table") == 0


def test_lsm_stats_fields(lsm: LSMStore) -> None:
    _stored_prompt(lsm, 18, 20)
    lsm._db.flush()
    stats = lsm.stats()
    assert stats.kind == "lsm"
    assert stats.l0_files >= 1
    assert stats.blob_live_bytes >= 20 * LAYOUT.page_bytes(PAGE_SIZE)
    assert stats.blob_garbage_bytes == 0
    assert stats.device_write_bytes >= 20 * LAYOUT.page_bytes(PAGE_SIZE)  # the blob file (the WAL is off)
    assert stats.disk_bytes >= stats.blob_live_bytes
    assert stats.files >= 3
    assert stats.stall_s == 0.0


def test_large_pages_are_read_by_parallel_single_gets(make_store: MakeStore) -> None:
    from store.lsm import PARALLEL_READ_BYTES

    layout = KVLayout(layers=2, kv_heads=2, head_dim=64, dtype=torch.float16)
    page_size = PARALLEL_READ_BYTES // layout.page_bytes(1)
    s = make_store("lsm", layout=layout, page_size=page_size)
    assert isinstance(s, LSMStore) and s.page_bytes == PARALLEL_READ_BYTES
    tokens = make_tokens(31, 5 * page_size)
    kv = prefix_kv(tokens, layout, page_size)
    assert s.put_batch(tokens, kv) == 5
    before = s.statistics_tickers()
    assert_bit_exact(s.get_batch(tokens, 5), page_slice(kv, 5, page_size))
    delta = _delta(s, before)
    assert delta[KEYS_READ] == 5 and delta.get(MULTIGET, 0) == 0


def test_a_flipped_byte_in_a_large_page_is_a_miss_named_by_its_index(
    make_store: MakeStore, tmp_path: Path
) -> None:
    """The reader threads check each large page before copying it; the first bad page is the miss."""
    from store.lsm import PARALLEL_READ_BYTES

    layout = KVLayout(layers=2, kv_heads=2, head_dim=64, dtype=torch.float16)
    page_size = PARALLEL_READ_BYTES // layout.page_bytes(1)
    path = tmp_path / "flip-large"
    s = make_store("lsm", path=path, layout=layout, page_size=page_size)
    tokens = make_tokens(32, 5 * page_size)
    kv = prefix_kv(tokens, layout, page_size)
    assert s.put_batch(tokens, kv) == 5
    s.close()
    third = (
        page_slice(kv, 3, page_size)[:, :, 2 * page_size :].contiguous().view(torch.uint8).numpy().tobytes()
    )
    (blob,) = [p for p in path.glob("*.blob") if third in p.read_bytes()]
    data = bytearray(blob.read_bytes())
    data[data.index(third) + 7] ^= 0x80
    blob.write_bytes(bytes(data))
    s = make_store("lsm", path=path, layout=layout, page_size=page_size)
    with pytest.raises(PageMissingError, match="page 2 of 5"):
        s.get_batch(tokens, 5)
    assert_bit_exact(s.get_batch(tokens, 2), page_slice(kv, 2, page_size))


@pytest.mark.parametrize("reclaim", ["relocate", "blob_age"])
def test_budget_eviction_counts_an_old_ancestors_newer_descendants_once(tmp_path: Path, reclaim: str) -> None:
    """In write order a parent is older than its children, so the budget's eviction meets the parent
    first and takes the children with it; a child's own recency entry must not count it again (that
    drove the page counter below zero, and every later write failed packing it)."""
    config = StoreConfig(eviction_order="fifo", reclaim=reclaim, disable_wal=True)
    page_value_bytes = 2 * PAGE_SIZE * LAYOUT.page_bytes(1)
    s = open_kind("lsm", tmp_path / "s", config=config, budget_bytes=40 * page_value_bytes)
    parents = [make_tokens(900 + i, 2 * PAGE_SIZE) for i in range(8)]
    children = [torch.cat([p, make_tokens(950 + i, 2 * PAGE_SIZE)]) for i, p in enumerate(parents)]
    for round_ in range(3):
        for tokens in (*parents, *children):
            s.put_batch(tokens, prefix_kv(tokens))
        stats = s.stats()
        reachable = {(tuple(t[: n * PAGE_SIZE].tolist())) for t in children for n in range(1, s.probe(t) + 1)}
        assert stats.write_errors == 0, f"round {round_}"
        assert stats.pages_stored == len(reachable), f"round {round_}"
    s.close()


FLAT = StoreConfig(key_scheme="flat", min_blob_size=64)


def test_flat_keys_are_one_digest_per_page_with_child_links(make_store: MakeStore) -> None:
    s = make_store("lsm", config=FLAT)
    assert isinstance(s, LSMStore)
    tokens = _stored_prompt(s, 30, 12)
    plan = s.plan(tokens)
    head = len(b"M") + len(s._ns)
    keys = _raw_keys(s)
    for space in (b"M", b"D"):
        bodies = {key[head:] for key in keys if key.startswith(space) and len(key) > head}
        assert bodies == {plan.key_digest(k) for k in range(12)}
    links = {key[head:] for key in keys if key.startswith(b"P")}
    assert links == {plan.key_digest(k - 1) + plan.key_digest(k) for k in range(1, 12)}


def test_flat_probe_is_one_multiget_and_reads_no_tensor(make_store: MakeStore) -> None:
    s = make_store("lsm", config=FLAT)
    assert isinstance(s, LSMStore)
    tokens = _stored_prompt(s, 31, 6)
    longer = torch.cat([tokens[: 6 * PAGE_SIZE], make_tokens(32, 4 * PAGE_SIZE)])
    before = s.statistics_tickers()
    assert (s.probe(tokens), s.probe(longer), s.probe(make_tokens(33, 3 * PAGE_SIZE))) == (6, 6, 0)
    delta = _delta(s, before)
    assert delta[MULTIGET] == 3
    assert delta.get(SEEKS, 0) == 0
    assert delta.get(BLOB_BYTES_READ, 0) == 0


def test_flat_eviction_takes_the_subtree_by_its_child_links(make_store: MakeStore) -> None:
    s = make_store("lsm", config=FLAT)
    assert isinstance(s, LSMStore)
    tokens = _stored_prompt(s, 34, 8)
    sibling = torch.cat([tokens[: 3 * PAGE_SIZE], make_tokens(35, 4 * PAGE_SIZE)])
    assert s.put_batch(sibling, prefix_kv(sibling)) == 4
    assert s.evict(tokens, 2) == 6 + 4
    assert (s.probe(tokens), s.probe(sibling), s.stats().pages_stored) == (2, 2, 2)
    assert_bit_exact(s.get_batch(tokens, 2), page_slice(prefix_kv(tokens), 2))
    plan = s.plan(tokens)
    kept = {plan.key_digest(0), plan.key_digest(1)}
    head = len(b"M") + len(s._ns)
    for space in (b"M", b"D"):
        assert {key[head:] for key in _raw_keys(s) if key.startswith(space) and len(key) > head} == kept
    # page 1's link to the evicted page 2 stays, a hint like a stale recency entry, removed with page 1
    assert {key[head:] for key in _raw_keys(s) if key.startswith(b"P")} == {
        plan.key_digest(0) + plan.key_digest(1),
        plan.key_digest(1) + plan.key_digest(2),
    }
    assert s.put_batch(sibling, prefix_kv(sibling)) == 5
    assert_bit_exact(s.get_batch(sibling, 7), prefix_kv(sibling))


@pytest.mark.parametrize(("created", "other"), [("prefix", "flat"), ("flat", "prefix")])
def test_key_scheme_is_fixed_when_the_store_is_created(tmp_path: Path, created: str, other: str) -> None:
    path = tmp_path / "db"
    message = f"key_scheme='{created}', but it was opened with key_scheme='{other}'.*key_scheme='{created}'"
    with open_kind("lsm", path, config=StoreConfig(key_scheme=created)) as s:
        tokens = _stored_prompt(s, 36, 3)  # type: ignore[arg-type]
        with pytest.raises(IncompatibleStoreError, match=message):
            s.apply(s.config.replace(key_scheme=other))
        assert s.config.key_scheme == created
        assert_bit_exact(s.get_batch(tokens, 3), prefix_kv(tokens))  # the refused apply harmed nothing
    with pytest.raises(IncompatibleStoreError, match=message):
        open_kind("lsm", path, config=StoreConfig(key_scheme=other))
    with open_kind("lsm", path, config=StoreConfig(key_scheme=created)) as s:
        assert s.probe(tokens) == 3


def test_key_scheme_is_a_reopen_only_knob_named_by_overrides() -> None:
    assert StoreConfig.from_dict({"key_scheme": "flat"}).key_scheme == "flat"
    assert StoreConfig.specs()["key_scheme"].live is False
    with pytest.raises(
        ValueError, match="knob key_scheme='hashed' is invalid: valid values are one of 'prefix', 'flat'"
    ):
        StoreConfig(key_scheme="hashed")
