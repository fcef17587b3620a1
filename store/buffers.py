"""Output tensors for reads: large ones on transparent huge pages.

A read's output is freshly allocated memory, and on this project's VM the first touch of each 4 KiB
page costs more than the copy into it: filling a fresh 128 MiB ``torch.empty`` took 150-340 ms, the same
fill into numpy's allocation 33-200 ms, with 576 page faults instead of 32,769. numpy asks the kernel for
transparent huge pages (``madvise(MADV_HUGEPAGE)``) on arrays of :data:`HUGE_PAGE_BYTES` or more (its
default on Linux since kernel 4.6); torch does not. Where the kernel offers no huge pages the two cost
the same.
"""

from __future__ import annotations

import math

import numpy as np
import torch

HUGE_PAGE_BYTES = 4 * 1024 * 1024
"""numpy's threshold for asking for huge pages; smaller tensors come from torch, which allocates faster."""


def empty_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor of ``shape`` and ``dtype``; from numpy's allocator when it is large."""
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < HUGE_PAGE_BYTES:
        return torch.empty(shape, dtype=dtype)
    return torch.from_numpy(np.empty(nbytes, dtype=np.uint8)).view(dtype).view(shape)
