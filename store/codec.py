"""Binary format of a stored page value and of its small metadata record.

Value: ``MAGIC | version u8 | dtype u8 | 5 x u32 shape | 32-byte digest | xxh3-64 u64 | raw tensor bytes``.
A decode checks every header field against what the reader expects, and the tensor bytes against their
xxh3-64 hash; any mismatch is a miss. The hash runs at memory speed, so stores can skip slower checks
of their own (the LSM store reads with RocksDB's software CRC32c off) and a flipped bit on disk is
still a miss, never a wrong tensor.
"""

from __future__ import annotations

import functools
import math
import struct
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import xxhash

from store.layout import SUPPORTED_DTYPES, KVLayout
from store.pages import DIGEST_BYTES

FORMAT_VERSION = 2
"""2: the value header carries the xxh3-64 of the tensor bytes. Stores of format 1 are refused on open."""
VALUE_MAGIC = b"KVP"
_VALUE_HEADER = struct.Struct(f"<3sBB5I{DIGEST_BYTES}sQ")
VALUE_HEADER_BYTES = _VALUE_HEADER.size
_DIGEST_OFFSET = struct.calcsize("<3sBB5I")
_HASH_OFFSET = _DIGEST_OFFSET + DIGEST_BYTES
_HASH = struct.Struct("<Q")

# Decoded pages are read-only views that are copied straight into the caller's output tensor.
warnings.filterwarnings("ignore", message="The given buffer is not writable", category=UserWarning)
warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)

_META = struct.Struct(f"<B{DIGEST_BYTES}sQQH")
"""version, digest, value bytes, access stamp, depth."""
_GENERATION = struct.Struct("<Q")
"""Appended to a metadata record whose value sits in a generation column family (its start stamp): records
without it (every record of a store that never used generations) have their value in the default family."""
_META_SIZES = (_META.size, _META.size + _GENERATION.size)


@functools.lru_cache(maxsize=64)
def _page_format(layout: KVLayout, page_size: int) -> tuple[int, tuple[int, ...], int]:
    """(value bytes, page shape, dtype code) of one page: computed once per (layout, page size)."""
    shape = layout.page_shape(page_size)
    return VALUE_HEADER_BYTES + layout.page_bytes(page_size), shape, SUPPORTED_DTYPES[layout.dtype]


def payload_hash(payload: bytes | memoryview) -> int:
    """The xxh3-64 of a page's tensor bytes, as its value header records it."""
    return xxhash.xxh3_64_intdigest(payload)


def encode_header(layout: KVLayout, page_size: int, digest: bytes, content_hash: int) -> bytes:
    """The value header of a page whose tensor bytes hash to ``content_hash`` (:func:`payload_hash`)."""
    _, shape, dtype_code = _page_format(layout, page_size)
    return _VALUE_HEADER.pack(VALUE_MAGIC, FORMAT_VERSION, dtype_code, *shape, digest, content_hash)


_ROW_JOIN_BYTES = 64 * 1024
_NUMPY_DTYPES = {
    torch.float16: np.float16,
    torch.bfloat16: np.int16,
    torch.float32: np.float32,
    torch.uint8: np.uint8,
    torch.int8: np.int8,
}


def _raw_array(page: torch.Tensor) -> np.ndarray:
    """The page's elements as a numpy view, no copy (bfloat16, which numpy lacks, as int16)."""
    if page.dtype == torch.bfloat16:
        page = page.view(torch.int16)
    return page.numpy()


def _rows(array: np.ndarray) -> list[np.ndarray] | None:
    """C-contiguous row views covering ``array`` in order, if merging its inner axes needs no copy.

    A page sliced out of a prompt's ``[layers, 2, n, heads, dim]`` tensor is one contiguous row per
    (layer, K/V).
    """
    if array.ndim < 3:
        return None
    rows = array.view()
    try:
        rows.shape = (-1, math.prod(array.shape[2:]))  # raises instead of copying
    except (AttributeError, ValueError):
        return None
    return list(rows) if rows[0].flags.c_contiguous else None


def page_payload(page: torch.Tensor) -> memoryview:
    """The raw bytes of a page tensor: a view if it is contiguous, else one copy.

    Copies are numpy's, on the calling thread: a torch copy of a large page runs OpenMP-parallel, and
    on a busy machine each parallel region waits milliseconds for a second core.
    """
    array = _raw_array(page)
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    return array.data.cast("B")


def encode_value(layout: KVLayout, page_size: int, digest: bytes, page: torch.Tensor) -> bytes:
    """Header and tensor bytes as one ``bytes``; a large page's bytes are copied once, straight in."""
    array = _raw_array(page)
    if array.flags.c_contiguous:
        payload = array.data.cast("B")
        return encode_header(layout, page_size, digest, payload_hash(payload)) + payload
    rows = _rows(array) if array.nbytes >= _ROW_JOIN_BYTES else None
    if rows is not None:
        hasher = xxhash.xxh3_64()
        for row in rows:
            hasher.update(row.data)
        header = encode_header(layout, page_size, digest, hasher.intdigest())
        return b"".join([header, *(row.data for row in rows)])
    raw = array.tobytes()
    return encode_header(layout, page_size, digest, payload_hash(raw)) + raw


@functools.lru_cache(maxsize=64)
def _value_prefix(layout: KVLayout, page_size: int) -> tuple[int, bytes]:
    """(value bytes, the header's fixed leading bytes: magic, version, dtype and shape) of one page.

    A check compares those fields as one byte string: unpacking the header into a tuple and comparing
    field by field cost a small page's read ~1 us more.
    """
    value_bytes = _page_format(layout, page_size)[0]
    return value_bytes, encode_header(layout, page_size, bytes(DIGEST_BYTES), 0)[:_DIGEST_OFFSET]


def checked_payload(
    buffer: bytes | memoryview, layout: KVLayout, page_size: int, digest: bytes
) -> memoryview | None:
    """The tensor bytes of ``buffer`` (a view), or ``None`` if the value is not this page's: a header
    that does not match, or tensor bytes that do not hash to the header's xxh3-64."""
    value_bytes, prefix = _value_prefix(layout, page_size)
    if (
        len(buffer) != value_bytes
        or buffer[:_DIGEST_OFFSET] != prefix
        or buffer[_DIGEST_OFFSET:_HASH_OFFSET] != digest
    ):
        return None
    payload = memoryview(buffer)[VALUE_HEADER_BYTES:]
    return payload if payload_hash(payload) == _HASH.unpack_from(buffer, _HASH_OFFSET)[0] else None


def decode_value(
    buffer: bytes | memoryview, layout: KVLayout, page_size: int, digest: bytes
) -> torch.Tensor | None:
    """The page tensor viewing ``buffer`` (no copy), or ``None`` if the value is not this page's."""
    if checked_payload(buffer, layout, page_size, digest) is None:
        return None
    shape = _page_format(layout, page_size)[1]
    numpy_dtype = _NUMPY_DTYPES.get(layout.dtype)
    if numpy_dtype is None:
        return torch.frombuffer(buffer, dtype=layout.dtype, offset=VALUE_HEADER_BYTES).view(shape)
    # numpy views the buffer with less per-call overhead than torch.frombuffer (bfloat16 as int16).
    page = torch.from_numpy(
        np.frombuffer(buffer, dtype=numpy_dtype, offset=VALUE_HEADER_BYTES).reshape(shape)
    )
    return page.view(torch.bfloat16) if layout.dtype == torch.bfloat16 else page


@dataclass(frozen=True)
class PageMeta:
    """The small record probes and the capacity manager read instead of the tensor."""

    digest: bytes
    value_bytes: int
    stamp: int
    depth: int
    generation: int = 0

    def encode(self) -> bytes:
        record = _META.pack(FORMAT_VERSION, self.digest, self.value_bytes, self.stamp, self.depth)
        return record + _GENERATION.pack(self.generation) if self.generation else record

    @staticmethod
    def digest_of(raw: bytes) -> bytes | None:
        """The page digest of an encoded record (``decode(raw).digest``), without decoding the rest."""
        if len(raw) not in _META_SIZES or raw[0] != FORMAT_VERSION:
            return None
        return raw[1 : 1 + DIGEST_BYTES]

    @classmethod
    def decode(cls, raw: bytes) -> PageMeta | None:
        if len(raw) not in _META_SIZES:
            return None
        version, digest, value_bytes, stamp, depth = _META.unpack_from(raw)
        if version != FORMAT_VERSION:
            return None
        generation = _GENERATION.unpack_from(raw, _META.size)[0] if len(raw) > _META.size else 0
        return cls(digest, value_bytes, stamp, depth, generation)
