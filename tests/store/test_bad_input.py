"""Bad input raises a clear error, for every kind, and leaves the stored data unharmed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import store
from store import (
    IncompatibleStoreError,
    KVLayout,
    KVStore,
    PageMissingError,
    StoreClosedError,
    StoreConfig,
    StoreError,
    open_store,
)
from tests.store.conftest import (
    KINDS,
    LAYOUT,
    PAGE_SIZE,
    MakeStore,
    assert_bit_exact,
    make_kv,
    make_tokens,
    open_kind,
    prefix_kv,
)

STORED = make_tokens(1, 3 * PAGE_SIZE + 1)
STORED_KV = prefix_kv(STORED)
OTHER = make_tokens(2, 2 * PAGE_SIZE)


def assert_unharmed(s: KVStore, reopened: bool = False) -> None:
    assert s.probe(STORED) == 3
    assert_bit_exact(s.get_batch(STORED, 3), STORED_KV)
    assert s.probe(OTHER) == 0
    stats = s.stats()
    assert stats.pages_stored == 3
    assert stats.pages_written == (0 if reopened else 3)  # nothing was written by the failed call


@pytest.fixture
def loaded(make_store: MakeStore, kind: str) -> Iterator[KVStore]:
    s = make_store(kind)
    assert s.put_batch(STORED, STORED_KV) == 3
    yield s


def _kv(n: int, **changes: Any) -> torch.Tensor:
    shape = {"layers": LAYOUT.layers, "kv_heads": LAYOUT.kv_heads, "head_dim": LAYOUT.head_dim}
    shape.update({k: v for k, v in changes.items() if k != "dtype"})
    layout = KVLayout(dtype=changes.get("dtype", LAYOUT.dtype), **shape)
    return make_kv(3, n, layout)


BAD_PUTS: dict[str, tuple[Any, Any, str]] = {
    # name: (tokens, kv, a word the message must contain)
    "kv float32 for a float16 store": (OTHER, _kv(8, dtype=torch.float32), "dtype"),
    "kv bfloat16 for a float16 store": (OTHER, _kv(8, dtype=torch.bfloat16), "dtype"),
    "kv of other layers": (OTHER, _kv(8, layers=3), "shape"),
    "kv of other heads": (OTHER, _kv(8, kv_heads=1), "shape"),
    "kv of other head_dim": (OTHER, _kv(8, head_dim=8), "shape"),
    "kv with 3 in the K/V axis": (OTHER, torch.zeros(2, 3, 8, 2, 4, dtype=torch.float16), "shape"),
    "kv of 4 dims": (OTHER, torch.zeros(2, 2, 8, 8, dtype=torch.float16), "shape"),
    "kv of 6 dims": (OTHER, torch.zeros(1, 2, 2, 8, 2, 4, dtype=torch.float16), "shape"),
    "kv not a tensor": (OTHER, np.zeros((2, 2, 8, 2, 4), dtype=np.float16), "tensor"),
    "kv shorter than the full pages": (OTHER, _kv(2 * PAGE_SIZE - 1), "positions"),
    "kv longer than the tokens": (OTHER, _kv(2 * PAGE_SIZE + 1), "tokens"),
    "empty tokens": (torch.zeros(0, dtype=torch.int64), _kv(0), "empty"),
    "empty token list": ([], _kv(0), "empty"),
    "2-D tokens": (OTHER.view(2, PAGE_SIZE), _kv(8), "1-D"),
    "float tokens": (OTHER.to(torch.float32), _kv(8), "integer"),
    "float token list": ([float(t) for t in OTHER], _kv(8), "integer"),
    "float numpy tokens": (OTHER.numpy().astype(np.float64), _kv(8), "integer"),
    "bool tokens": (OTHER > 10, _kv(8), "integer"),
    "string tokens": (["a"] * 8, _kv(8), "integer"),
    "negative token id": (torch.tensor([5, 6, -1, 7, 1, 2, 3, 4]), _kv(8), "-1"),
    "token id 2**32": (torch.tensor([5, 6, 2**32, 7, 1, 2, 3, 4]), _kv(8), str(2**32)),
    "token id 2**40": (torch.tensor([2**40, 6, 3, 7, 1, 2, 3, 4]), _kv(8), str(2**40)),
}


def _expect_value_error(call: Callable[[], object], word: str) -> str | None:
    """None if ``call`` raises a ValueError whose message contains ``word``; else what went wrong."""
    try:
        call()
    except ValueError as error:
        if word.lower() not in str(error).lower():
            return f"the message {str(error)!r} does not mention {word!r}"
        return None
    except Exception as error:
        return f"raised {error!r} instead of a ValueError"
    return "raised nothing"


@pytest.mark.parametrize("method", ["put_batch", "put_async"])
def test_bad_put_raises_and_harms_nothing(loaded: KVStore, method: str) -> None:
    failures = []
    for case, (tokens, kv, word) in sorted(BAD_PUTS.items()):
        problem = _expect_value_error(lambda: getattr(loaded, method)(tokens, kv), word)  # noqa: B023
        if problem:
            failures.append(f"{method} with {case}: {problem}")
        loaded.flush()
        assert_unharmed(loaded)
    assert not failures, "\n".join(failures)


BAD_TOKENS = {name: BAD_PUTS[name] for name in BAD_PUTS if not name.startswith("kv")}


def test_bad_tokens_raise_on_every_method(loaded: KVStore) -> None:
    failures = []
    for case, (tokens, _, word) in sorted(BAD_TOKENS.items()):
        calls: dict[str, Callable[[], object]] = {
            "probe": lambda: loaded.probe(tokens),  # noqa: B023
            "get_batch": lambda: loaded.get_batch(tokens, 0),  # noqa: B023
            "evict": lambda: loaded.evict(tokens, 0),  # noqa: B023
        }
        for name, call in calls.items():
            problem = _expect_value_error(call, word)
            if problem:
                failures.append(f"{name} with {case}: {problem}")
        assert_unharmed(loaded)
    assert not failures, "\n".join(failures)


def test_token_id_range_boundaries_are_valid(loaded: KVStore) -> None:
    tokens = torch.tensor([0, 2**32 - 1, 1, 2**32 - 2] * 2, dtype=torch.int64)
    kv = prefix_kv(tokens)
    assert loaded.put_batch(tokens, kv) == 2
    assert_bit_exact(loaded.get_batch(tokens.numpy().astype(np.uint32), 2), kv)
    # 2**32-1 must not alias another id (e.g. -1 or 0 after a wrap-around)
    assert loaded.probe(torch.tensor([0, 0, 1, 2**32 - 2] * 2)) == 0


@pytest.mark.parametrize("n_pages", [4, 5, 100])
def test_n_pages_beyond_the_prompt_is_a_value_error(loaded: KVStore, n_pages: int) -> None:
    with pytest.raises(ValueError, match="n_pages") as info:
        loaded.get_batch(STORED, n_pages)
    assert not isinstance(info.value, PageMissingError)
    assert_unharmed(loaded)


@pytest.mark.parametrize("n_pages", [-1, 1.0, True, "2", None])
def test_n_pages_of_a_wrong_type_is_a_value_error(loaded: KVStore, n_pages: Any) -> None:
    with pytest.raises(ValueError, match="n_pages"):
        loaded.get_batch(STORED, n_pages)
    with pytest.raises(ValueError, match="n_pages"):
        loaded.evict(STORED, n_pages)
    assert_unharmed(loaded)


@pytest.mark.parametrize("n_pages", [3, 4])
def test_evict_beyond_the_prompt_is_a_value_error(loaded: KVStore, n_pages: int) -> None:
    with pytest.raises(ValueError, match="n_pages"):
        loaded.evict(STORED, n_pages)
    assert_unharmed(loaded)


def test_n_pages_beyond_what_is_stored_is_a_miss(loaded: KVStore) -> None:
    longer = torch.cat([STORED[: 3 * PAGE_SIZE], make_tokens(4, 2 * PAGE_SIZE)])
    assert loaded.probe(longer) == 3
    for tokens, n_pages in ((longer, 4), (longer, 5), (OTHER, 1), (OTHER, 2)):
        with pytest.raises(PageMissingError) as info:
            loaded.get_batch(tokens, n_pages)
        assert isinstance(info.value, KeyError)  # callers may catch a miss as a KeyError
        assert isinstance(info.value, StoreError)
        assert "probe" in str(info.value)
    assert_bit_exact(loaded.get_batch(longer, 3), STORED_KV)
    assert_unharmed(loaded)


def test_closed_store_raises_store_closed_error(make_store: MakeStore, kind: str) -> None:
    s = make_store(kind)
    s.put_batch(STORED, STORED_KV)
    s.close()
    s.close()  # closing twice is fine
    calls: dict[str, Callable[[], object]] = {
        "put_batch": lambda: s.put_batch(OTHER, prefix_kv(OTHER)),
        "put_async": lambda: s.put_async(OTHER, prefix_kv(OTHER)),
        "flush": s.flush,
        "probe": lambda: s.probe(STORED),
        "get_batch": lambda: s.get_batch(STORED, 1),
        "evict": lambda: s.evict(STORED, 0),
        "stats": s.stats,
        "apply": lambda: s.apply(StoreConfig(writer_batch_size=2)),
    }
    for name, call in calls.items():
        with pytest.raises(StoreClosedError, match="closed"):
            call()
            pytest.fail(f"{name} worked on a closed store")


@pytest.fixture
def written(tmp_path: Path, disk_kind: str) -> Path:
    path = tmp_path / "db"
    with open_kind(disk_kind, path) as s:
        s.put_batch(STORED, STORED_KV)
    return path


MISMATCHES: dict[str, dict[str, Any]] = {
    "page_size": {"page_size": PAGE_SIZE * 2},
    "layout dtype": {"layout": KVLayout(layers=2, kv_heads=2, head_dim=4, dtype=torch.bfloat16)},
    "layout float32": {"layout": KVLayout(layers=2, kv_heads=2, head_dim=4, dtype=torch.float32)},
    "layout layers": {"layout": KVLayout(layers=3, kv_heads=2, head_dim=4, dtype=torch.float16)},
    "layout heads": {"layout": KVLayout(layers=2, kv_heads=1, head_dim=8, dtype=torch.float16)},
}


@pytest.mark.parametrize("case", sorted(MISMATCHES))
def test_mismatched_reopen_raises(written: Path, disk_kind: str, case: str) -> None:
    with pytest.raises(IncompatibleStoreError) as info:
        open_kind(disk_kind, written, **MISMATCHES[case])
    assert isinstance(info.value, ValueError)
    assert str(written) in str(info.value) or written.name in str(info.value)
    # the store is still there, whole, for the right parameters
    with open_kind(disk_kind, written) as s:
        assert_unharmed(s, reopened=True)


def test_reopen_while_open_does_not_corrupt(written: Path, disk_kind: str) -> None:
    """A second handle on an open directory either works or raises; the first handle keeps working."""
    with open_kind(disk_kind, written) as first:
        try:
            second = open_kind(disk_kind, written)
        except Exception as error:  # e.g. RocksDB's LOCK
            assert "lock" in str(error).lower() or isinstance(error, StoreError | OSError), repr(error)
        else:
            assert second.probe(STORED) == 3
            second.close()
        assert_unharmed(first, reopened=True)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"page_size": 0}, "page_size"),
        ({"page_size": -4}, "page_size"),
        ({"page_size": 4.0}, "page_size"),
        ({"page_size": True}, "page_size"),
        ({"budget_bytes": 0}, "budget_bytes"),
        ({"budget_bytes": -1}, "budget_bytes"),
        ({"budget_bytes": 1.5}, "budget_bytes"),
        ({"namespace": ""}, "namespace"),
        ({"namespace": "a\x00b"}, "namespace"),
        ({"namespace": 7}, "namespace"),
        ({"layout": (2, 2, 4)}, "layout"),
        ({"config": {"writer_batch_size": 2}}, "config"),
    ],
)
def test_bad_open_arguments(tmp_path: Path, kind: str, kwargs: dict[str, Any], word: str) -> None:
    with pytest.raises(ValueError, match=word):
        open_kind(kind, tmp_path / "db", **kwargs)


def test_unknown_kind_lists_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rocks") as info:
        open_store("rocks", tmp_path, layout=LAYOUT)
    for kind in KINDS:
        assert kind in str(info.value)


def test_disk_kind_needs_a_path(disk_kind: str) -> None:
    with pytest.raises(ValueError, match="keeps its pages on disk: pass a directory as path"):
        open_store(disk_kind, None, layout=LAYOUT)


def test_kinds_not_on_disk_ignore_the_path(tmp_path: Path) -> None:
    for kind in set(KINDS) - set(store.DISK_STORE_KINDS):
        with open_store(kind, tmp_path / "unused", layout=LAYOUT) as s:
            assert s.path is None
        assert not (tmp_path / "unused").exists()


@pytest.mark.parametrize(
    ("text", "kinds"),
    [(None, store.STORE_KINDS), (" ", store.STORE_KINDS), ("memory, lsm", ("memory", "lsm"))],
)
def test_kind_lists_parse_against_the_registry(text: str | None, kinds: tuple[str, ...]) -> None:
    assert store.parse_store_kinds(text) == kinds


def test_an_unknown_kind_in_a_list_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown store kind 'btree'; valid kinds: lsm, file, applog, memo"):
        store.parse_store_kinds("lsm,btree")


@pytest.mark.parametrize(
    ("knobs", "name", "valid"),
    [
        ({"writer_queue_depth": 0}, "writer_queue_depth", "[1, 4096]"),
        ({"writer_batch_size": 5000}, "writer_batch_size", "[1, 1024]"),
        ({"max_write_buffer_number": 1}, "max_write_buffer_number", "[2, 16]"),
        ({"blob_garbage_collection_age_cutoff": 1.5}, "blob_garbage_collection_age_cutoff", "[0, 1]"),
        ({"writer_overflow": "spill"}, "writer_overflow", "'block', 'drop'"),
        ({"blob_compression_type": "snappy"}, "blob_compression_type", "'none', 'lz4', 'zstd'"),
    ],
)
def test_out_of_range_knob_names_knob_and_range(
    loaded: KVStore, knobs: dict[str, Any], name: str, valid: str
) -> None:
    with pytest.raises(ValueError) as info:
        loaded.config.replace(**knobs)
    assert name in str(info.value)
    assert valid in str(info.value)
    assert_unharmed(loaded)


def test_unknown_knob_is_a_value_error_listing_the_valid_ones(loaded: KVStore) -> None:
    with pytest.raises(ValueError, match="write_bufer_size") as info:
        StoreConfig.from_dict({"write_bufer_size": 1 << 20})
    assert "write_buffer_size" in str(info.value)
    with pytest.raises(ValueError, match="write_bufer_size"):
        loaded.config.replace(write_bufer_size=1 << 20)
    with pytest.raises(ValueError, match="config"):
        loaded.apply({"write_buffer_size": 1 << 20})  # type: ignore[arg-type]
    assert_unharmed(loaded)


def test_unknown_knob_in_the_constructor_is_a_value_error() -> None:
    """StoreConfig's docstring: "any out-of-range or unknown knob raises ValueError"."""
    with pytest.raises(ValueError, match="write_bufer_size"):
        StoreConfig(write_bufer_size=1 << 20)  # type: ignore[call-arg]


def test_errors_are_exported() -> None:
    assert issubclass(PageMissingError, KeyError)
    assert issubclass(IncompatibleStoreError, ValueError)
    for error in (PageMissingError, IncompatibleStoreError, StoreClosedError):
        assert issubclass(error, store.StoreError)
