"""Output tensors of reads (store.buffers)."""

from __future__ import annotations

import pytest
import torch

from store.buffers import empty_tensor


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.uint8])
@pytest.mark.parametrize("shape", [(2, 2, 3, 1, 4), (0, 5), (4 << 20,)])
def test_empty_tensor_has_the_shape_and_dtype_asked_and_holds_what_is_written(
    shape: tuple[int, ...], dtype: torch.dtype
) -> None:
    out = empty_tensor(shape, dtype)
    assert out.shape == shape and out.dtype == dtype and out.is_contiguous()
    values = torch.arange(out.numel()).remainder(100).to(dtype).view(shape)
    out.copy_(values)
    assert torch.equal(out, values)
