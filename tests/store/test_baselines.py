"""What is particular to the baseline kinds (file, applog) and their recency index.

The contract every kind keeps is in ``test_contract.py`` and bad input in ``test_bad_input.py``; these
check the baselines' own header file, file names and layout on disk, the append log's torn tail,
tombstones and garbage collection.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from store import IncompatibleStoreError, StoreConfig
from store.applog import HEADER_BYTES, AppendLogStore
from store.codec import VALUE_HEADER_BYTES
from store.header import HEADER_FILE
from store.recency import PageEntry, RecencyIndex
from tests.store.conftest import (
    LAYOUT,
    PAGE_SIZE,
    MakeStore,
    assert_bit_exact,
    make_kv,
    make_tokens,
    open_kind,
    page_slice,
)

BASELINES = ("memory", "file", "applog")
DISK_BASELINES = ("file", "applog")


def _put(s: object, seed: int, n_pages: int) -> tuple[torch.Tensor, torch.Tensor]:
    from store import KVStore

    assert isinstance(s, KVStore)
    tokens, kv = make_tokens(seed, n_pages * PAGE_SIZE), make_kv(seed, n_pages * PAGE_SIZE)
    s.put_batch(tokens, kv)
    return tokens, kv


@pytest.mark.parametrize("kind", DISK_BASELINES)
def test_a_newer_header_format_is_refused(make_store: MakeStore, kind: str, tmp_path: Path) -> None:
    """Mismatched page sizes and layouts are in ``test_bad_input.py``; the header file is the baselines'."""
    path = tmp_path / kind
    make_store(kind, path=path).close()
    header = json.loads((path / HEADER_FILE).read_text())
    (path / HEADER_FILE).write_text(json.dumps({**header, "format_version": header["format_version"] + 1}))
    with pytest.raises(IncompatibleStoreError, match="newer"):
        open_kind(kind, path)


def test_file_names_are_chained_digests_in_one_flat_directory(make_store: MakeStore, tmp_path: Path) -> None:
    s = make_store("file", path=tmp_path / "flat")
    tokens, _ = _put(s, 5, 3)
    shared = torch.cat([tokens[: 2 * PAGE_SIZE], make_tokens(6, PAGE_SIZE)])
    s.put_batch(shared, make_kv(6, 3 * PAGE_SIZE))
    names = {c.hex() for c in (*s.plan(tokens).digests, *s.plan(shared).digests)}
    assert len(names) == 4
    entries = list(os.scandir(tmp_path / "flat"))
    assert all(entry.is_file() for entry in entries)
    assert {entry.name for entry in entries} == names | {HEADER_FILE}


def test_applog_ignores_and_truncates_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "log"
    s = open_kind("applog", path)
    tokens, kv = _put(s, 7, 4)
    s.close()
    segment = path / "segment-0000000001.log"
    record = segment.stat().st_size // 4
    with segment.open("r+b") as file:  # the last record torn halfway, as by a crash mid-write
        file.truncate(3 * record + HEADER_BYTES + 5)
    s = open_kind("applog", path)
    assert s.probe(tokens) == 3
    assert segment.stat().st_size == 3 * record
    assert_bit_exact(s.get_batch(tokens, 3), page_slice(kv, 3))
    assert s.put_batch(tokens, kv) == 1
    s.close()
    with segment.open("r+b") as file:  # a flipped bit in the newest record's tensor
        file.seek(4 * record - 1)
        last = file.read(1)
        file.seek(4 * record - 1)
        file.write(bytes([last[0] ^ 1]))
    s = open_kind("applog", path)
    assert s.probe(tokens) == 3
    assert_bit_exact(s.get_batch(tokens, 3), page_slice(kv, 3))
    s.close()


def test_applog_collects_garbage_without_resurrecting_evicted_pages(tmp_path: Path) -> None:
    path = tmp_path / "gc"
    page_record = HEADER_BYTES + VALUE_HEADER_BYTES + LAYOUT.page_bytes(PAGE_SIZE)  # 4 to a segment
    s = AppendLogStore.with_segment_bytes(4 * page_record)(path, LAYOUT, PAGE_SIZE, None, StoreConfig(), "ns")
    prompts = [_put(s, seed, 3) for seed in range(20, 30)]
    segments = len(list(path.glob("segment-*.log")))
    for tokens, _ in prompts[:8]:
        s.evict(tokens, 0)
    assert len(list(path.glob("segment-*.log"))) < segments
    s.close()
    s = AppendLogStore.with_segment_bytes(4 * page_record)(path, LAYOUT, PAGE_SIZE, None, StoreConfig(), "ns")
    assert [s.probe(tokens) for tokens, _ in prompts] == [0] * 8 + [3, 3]
    for tokens, kv in prompts[8:]:
        assert_bit_exact(s.get_batch(tokens, 3), kv)
    assert s.stats().pages_stored == 6
    s.close()


def _chain(index: RecencyIndex, names: bytes) -> None:
    """Add one prompt whose pages are the single-byte names ``names``, parents first."""
    for depth, name in enumerate(names, start=1):
        parent = bytes([names[depth - 2]]) if depth > 1 else None
        index.add(bytes([name]), PageEntry(1, depth, parent))
    index.touch([bytes([name]) for name in names])


def test_recency_lru_evicts_leaves_first_and_fifo_ignores_reads() -> None:
    lru = RecencyIndex("lru")
    _chain(lru, b"abc")
    _chain(lru, b"abd")
    assert lru.victim() == b"c"
    assert lru.subtree(b"b") in ([b"c", b"d", b"b"], [b"d", b"c", b"b"])
    lru.touch([b"a", b"b", b"c"])
    assert lru.victim() == b"d"
    fifo = RecencyIndex("fifo")
    _chain(fifo, b"abc")
    fifo.touch([b"a", b"b", b"c"])
    assert fifo.victim() == b"a"
    assert fifo.subtree(b"a") == [b"c", b"b", b"a"]


def test_recency_load_orders_ancestors_after_descendants_and_drops_orphans() -> None:
    index = RecencyIndex("lru")
    pages = {
        b"a": (PageEntry(1, 1, None), 1),
        b"b": (PageEntry(1, 2, b"a"), 2),
        b"c": (PageEntry(1, 1, None), 3),
        b"x": (PageEntry(1, 3, b"gone"), 0),
    }
    assert index.load(pages) == [b"x"]
    assert len(index) == 3
    assert index.victim() == b"b"


@pytest.mark.parametrize("segment_bytes", [0, -1, True, 1.5])
def test_applog_refuses_a_segment_size_that_is_not_a_positive_int(segment_bytes: object) -> None:
    with pytest.raises(ValueError, match=r"segment_bytes must be a positive int \(default 67108864\)"):
        AppendLogStore.with_segment_bytes(segment_bytes)  # type: ignore[arg-type]


def test_applog_with_segment_bytes_is_the_applog_kind(tmp_path: Path) -> None:
    sized = AppendLogStore.with_segment_bytes(4096)
    assert (sized.kind, sized.segment_bytes, AppendLogStore.segment_bytes) == ("applog", 4096, 64 << 20)
    with sized(tmp_path / "s", LAYOUT, PAGE_SIZE, None, StoreConfig(), "ns") as s:
        assert isinstance(s, AppendLogStore)
