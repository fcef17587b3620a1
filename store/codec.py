"""Binary format of a stored page value and of its small metadata record.

Value: ``MAGIC | version u8 | dtype u8 | 5 x u32 shape | 32-byte check | raw tensor bytes``.
A decode checks every header field against what the reader expects; any mismatch is a miss.
"""

from __future__ import annotations

import struct
import warnings
from dataclasses import dataclass

import torch

from store.layout import DTYPE_BY_CODE, SUPPORTED_DTYPES, KVLayout
from store.pages import CHECK_BYTES

FORMAT_VERSION = 1
VALUE_MAGIC = b"KVP"
_VALUE_HEADER = struct.Struct(f"<3sBB5I{CHECK_BYTES}s")
VALUE_HEADER_BYTES = _VALUE_HEADER.size

# Decoded pages are read-only views that are copied straight into the caller's output tensor.
warnings.filterwarnings("ignore", message="The given buffer is not writable", category=UserWarning)

_META = struct.Struct(f"<B{CHECK_BYTES}sQQH")
"""version, check, value bytes, access stamp, depth."""


def encode_header(layout: KVLayout, page_size: int, check: bytes) -> bytes:
    return _VALUE_HEADER.pack(
        VALUE_MAGIC, FORMAT_VERSION, SUPPORTED_DTYPES[layout.dtype], *layout.page_shape(page_size), check
    )


def page_payload(page: torch.Tensor) -> memoryview:
    """The raw bytes of a contiguous page tensor, without a copy."""
    return memoryview(page.contiguous().view(torch.uint8).numpy()).cast("B")


def encode_value(layout: KVLayout, page_size: int, check: bytes, page: torch.Tensor) -> bytes:
    return encode_header(layout, page_size, check) + page_payload(page)


def decode_value(
    buffer: bytes | memoryview, layout: KVLayout, page_size: int, check: bytes
) -> torch.Tensor | None:
    """The page tensor viewing ``buffer`` (no copy), or ``None`` if the value is not this page's."""
    if len(buffer) != VALUE_HEADER_BYTES + layout.page_bytes(page_size):
        return None
    magic, version, dtype_code, *rest = _VALUE_HEADER.unpack_from(buffer)
    shape, stored_check = tuple(rest[:5]), rest[5]
    if (
        magic != VALUE_MAGIC
        or version != FORMAT_VERSION
        or DTYPE_BY_CODE.get(dtype_code) != layout.dtype
        or shape != layout.page_shape(page_size)
        or stored_check != check
    ):
        return None
    flat = torch.frombuffer(buffer, dtype=torch.uint8, offset=VALUE_HEADER_BYTES)
    return flat.view(layout.dtype).view(shape)


@dataclass(frozen=True)
class PageMeta:
    """The small record probes and the capacity manager read instead of the tensor."""

    check: bytes
    value_bytes: int
    stamp: int
    depth: int

    def encode(self) -> bytes:
        return _META.pack(FORMAT_VERSION, self.check, self.value_bytes, self.stamp, self.depth)

    @classmethod
    def decode(cls, raw: bytes) -> PageMeta | None:
        if len(raw) != _META.size:
            return None
        version, check, value_bytes, stamp, depth = _META.unpack(raw)
        if version != FORMAT_VERSION:
            return None
        return cls(check, value_bytes, stamp, depth)
