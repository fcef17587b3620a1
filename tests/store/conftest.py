"""Shared fixtures of the store tests: a tiny layout, deterministic prompts and tensors, a store factory."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import store
from store import KVLayout, KVStore, StoreConfig, open_store

PAGE_SIZE = 4
LAYOUT = KVLayout(layers=2, kv_heads=2, head_dim=4, dtype=torch.float16)
KINDS = tuple(store.STORE_KINDS)
DISK_KINDS = tuple(store.DISK_STORE_KINDS)
LSM_FLAT = "lsm-flat"
"""A test-only kind name: the lsm store with ``key_scheme="flat"``, so the contract runs over both key
schemes (:func:`open_kind` opens it as ``lsm``)."""
CONTRACT_KINDS = (*KINDS, LSM_FLAT)
BITS_DTYPE = {
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
    torch.float32: torch.int32,
    torch.uint8: torch.uint8,
    torch.int8: torch.int8,
}

MakeStore = Callable[..., KVStore]
NO_OWN_EVICTION = {
    "sglang-file": "SGLang's HiCacheStorage has no delete, and its evictor unlinks single LRU files, "
    "not prefix subtrees (tests/store/test_hicache_adapter.py checks its budget)",
}
"""Kinds without kvtune's eviction (subtree evict, eviction orders): tests of that do not apply."""
NOT_CRASH_TESTED = {
    "sglang-file": "its writes are SGLang's (temp file + rename), and each forked writer would spend "
    "~30 s importing SGLang",
}


NOT_KVTUNE_IO = {
    "sglang-file": "its I/O is SGLang's HiCacheFile: it takes no directory lock, and a save that does not "
    "fit is logged by SGLang and left as a short file instead of raising (kvtune counts it as dropped)",
}
"""Kinds whose disk I/O is another project's code: kvtune's locking and full-disk contract does not apply."""


def skip_for(kind: str, reasons: dict[str, str]) -> None:
    """Skip the calling test for ``kind`` if ``reasons`` says why it does not apply."""
    if kind in reasons:
        pytest.skip(f"not applicable to {kind}: {reasons[kind]}")


def make_tokens(seed: int, n_tokens: int, vocab: int = 50_000) -> torch.Tensor:
    """``n_tokens`` token ids drawn from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n_tokens,), generator=generator, dtype=torch.int64)


def make_kv(seed: int, n_positions: int, layout: KVLayout = LAYOUT) -> torch.Tensor:
    """A KV tensor of ``n_positions`` positions whose every bit pattern comes from ``seed``.

    Random bits, not random numbers: NaNs, infinities, subnormals and -0.0 all occur, so only a bit-exact
    round trip compares equal.
    """
    generator = torch.Generator().manual_seed(seed)
    bits = BITS_DTYPE[layout.dtype]
    info = torch.iinfo(bits)
    shape = (layout.layers, 2, n_positions, layout.kv_heads, layout.head_dim)
    raw = torch.randint(info.min, info.max + 1, shape, generator=generator, dtype=torch.int64)
    return raw.to(bits).view(layout.dtype)


def assert_bit_exact(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.dtype == expected.dtype
    assert tuple(actual.shape) == tuple(expected.shape)
    bits = BITS_DTYPE[expected.dtype]
    assert torch.equal(actual.contiguous().view(bits), expected.contiguous().view(bits))


def page_slice(kv: torch.Tensor, n_pages: int, page_size: int = PAGE_SIZE) -> torch.Tensor:
    """The KV of the first ``n_pages`` pages of ``kv``."""
    return kv[:, :, : n_pages * page_size]


def store_kind_of(kind: str) -> str:
    """The store kind a test kind name opens (:data:`LSM_FLAT` is an ``lsm`` store)."""
    return "lsm" if kind == LSM_FLAT else kind


def open_kind(kind: str, path: Path, **kwargs: Any) -> KVStore:
    """``open_store`` with the tiny defaults of these tests (``path`` ignored by memory)."""
    kwargs.setdefault("layout", LAYOUT)
    kwargs.setdefault("page_size", PAGE_SIZE)
    kwargs.setdefault("config", StoreConfig())
    kwargs.setdefault("namespace", "test-model")
    if kind == LSM_FLAT:
        kwargs["config"] = kwargs["config"].replace(key_scheme="flat")
    return open_store(store_kind_of(kind), path, **kwargs)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=DISK_KINDS)
def disk_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_store(tmp_path: Path) -> Iterator[MakeStore]:
    """``make_store(kind, path=None, **open_store_kwargs)``; every store it opens is closed afterwards."""
    opened: list[KVStore] = []

    def factory(kind: str, path: Path | None = None, **kwargs: Any) -> KVStore:
        s = open_kind(kind, path if path is not None else tmp_path / kind, **kwargs)
        opened.append(s)
        return s

    yield factory
    for s in opened:
        s.close()


def prefix_kv(
    tokens: torch.Tensor, layout: KVLayout = LAYOUT, page_size: int = PAGE_SIZE, salt: int = 0
) -> torch.Tensor:
    """KV of every full page of ``tokens``, each page a function of its whole token prefix (like real KV).

    Two prompts sharing a prefix get identical KV for their shared pages, so an expected page never
    depends on which prompt stored it first.
    """
    n_pages = len(tokens) // page_size
    raw = tokens[: n_pages * page_size].to(torch.int64).numpy().tobytes()
    step = page_size * 8
    chain = hashlib.blake2b(salt.to_bytes(8, "little"), digest_size=8).digest()
    pages = []
    for k in range(n_pages):
        chain = hashlib.blake2b(chain + raw[k * step : (k + 1) * step], digest_size=8).digest()
        pages.append(make_kv(int.from_bytes(chain, "little") & (2**62 - 1), page_size, layout))
    if not pages:
        return make_kv(0, 0, layout)
    return torch.cat(pages, dim=2)
