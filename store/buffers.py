"""Output tensors for reads: large ones on transparent huge pages.

A read's output is freshly allocated memory, and on this project's VM the first touch of each 4 KiB
page costs more than the copy into it: filling a fresh 128 MiB ``torch.empty`` took 150-340 ms, the same
fill into numpy's allocation 33-200 ms, with 576 page faults instead of 32,769. numpy asks the kernel for
transparent huge pages (``madvise(MADV_HUGEPAGE)``) on arrays of 4 MiB or more (its default on Linux
since kernel 4.6); torch does not. Where the kernel offers no huge pages the two cost the same.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def empty_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor of ``shape`` and ``dtype`` whose memory numpy allocated (see above)."""
    count = math.prod(shape)
    if not count:
        return torch.empty(shape, dtype=dtype)  # no bytes to place, and torch cannot reinterpret none
    raw = np.empty(count * torch.empty((), dtype=dtype).element_size(), dtype=np.uint8)
    return torch.from_numpy(raw).view(dtype).view(shape)
