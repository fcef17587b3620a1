"""The shape of one model's KV cache, and the page arithmetic every store kind shares."""

from __future__ import annotations

from dataclasses import dataclass

import torch

SUPPORTED_DTYPES: dict[torch.dtype, int] = {
    torch.float16: 1,
    torch.bfloat16: 2,
    torch.float32: 3,
    torch.uint8: 4,
    torch.int8: 5,
}
DTYPE_BY_CODE: dict[int, torch.dtype] = {code: dtype for dtype, code in SUPPORTED_DTYPES.items()}


@dataclass(frozen=True)
class KVLayout:
    """Per-token KV shape of a model: ``[layers, 2 (K and V), kv_heads, head_dim]`` of ``dtype``."""

    layers: int
    kv_heads: int
    head_dim: int
    dtype: torch.dtype = torch.float16

    def __post_init__(self) -> None:
        for name in ("layers", "kv_heads", "head_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"KVLayout.{name} must be a positive int, got {value!r}")
        if self.dtype not in SUPPORTED_DTYPES:
            valid = ", ".join(str(d) for d in SUPPORTED_DTYPES)
            raise ValueError(f"KVLayout.dtype {self.dtype} is not supported; use one of: {valid}")

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize  # no tensor made: page_bytes reads it several times per request

    @property
    def bytes_per_token(self) -> int:
        return self.layers * 2 * self.kv_heads * self.head_dim * self.itemsize

    def page_shape(self, page_size: int) -> tuple[int, int, int, int, int]:
        return (self.layers, 2, page_size, self.kv_heads, self.head_dim)

    def page_bytes(self, page_size: int) -> int:
        return self.bytes_per_token * page_size

    def describe(self) -> dict[str, object]:
        return {
            "layers": self.layers,
            "kv_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "dtype": str(self.dtype).removeprefix("torch."),
        }
