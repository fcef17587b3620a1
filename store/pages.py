"""Cutting a prompt into pages and naming them.

Each full page gets a chained digest: ``chain[k] = BLAKE2b(chain[k-1] || tokens of page k)`` seeded with
the namespace, so a page's name identifies its whole prefix. The LSM store keys page k by the first
:data:`KEY_DIGEST_BYTES` bytes of every chain digest up to k (a byte prefix of page k+1's key); values and
metadata records carry the full 32-byte digest, which every read checks, so a short-digest collision is a
miss and never a wrong tensor.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch

DIGEST_BYTES = 32
KEY_DIGEST_BYTES = 8
MAX_TOKEN_ID = 2**32 - 1


@dataclass(frozen=True)
class PagePlan:
    """The full pages of one prompt: ``digests[k]`` is page k's 32-byte chained digest."""

    namespace: str
    page_size: int
    digests: tuple[bytes, ...]

    @property
    def n_pages(self) -> int:
        return len(self.digests)

    def key_digest(self, index: int) -> bytes:
        return self.digests[index][:KEY_DIGEST_BYTES]

    @cached_property
    def _key_body(self) -> bytes:
        """Every page's short digest, concatenated once: ``prefix_key(n)`` is a slice of it."""
        return b"".join(c[:KEY_DIGEST_BYTES] for c in self.digests)

    def prefix_key(self, n_pages: int) -> bytes:
        """Concatenated short digests of pages ``0 .. n_pages-1`` (the prefix-preserving key body)."""
        count = len(range(len(self.digests))[:n_pages])  # what ``digests[:n_pages]`` holds, negatives too
        return self._key_body[: count * KEY_DIGEST_BYTES]


def plan_of_digests(digests: Sequence[bytes], page_size: int, namespace: str) -> PagePlan:
    """The plan of pages named by chained digests made elsewhere (SGLang's sha256 page hashes are).

    Each digest must name its page's whole prefix, as :func:`plan_pages`'s do: the store keys page k
    by the short digests of pages 0..k and checks page k's full digest on every read.
    """
    for index, hasher in enumerate(digests):
        if not isinstance(hasher, bytes) or len(hasher) != DIGEST_BYTES:
            raise ValueError(
                f"digest {index} is {digest!r}: every page digest must be {DIGEST_BYTES} bytes "
                "(hash longer names down to a 32-byte chained digest first)"
            )
    return PagePlan(namespace=namespace, page_size=page_size, digests=tuple(digests))


def as_token_array(tokens: Any) -> np.ndarray:
    """Validate ``tokens`` (1-D ints in [0, 2**32)) and return them as a ``uint32`` array."""
    if isinstance(tokens, torch.Tensor):
        if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
            raise ValueError(f"tokens must be integer ids, got a tensor of {tokens.dtype}")
        array = tokens.detach().cpu().numpy()
    else:
        array = np.asarray(tokens)
    if array.ndim != 1:
        raise ValueError(f"tokens must be 1-D, got shape {tuple(array.shape)}; pass one prompt at a time")
    if array.size == 0:
        raise ValueError("tokens is empty: pass at least one full page of token ids")
    if array.dtype.kind not in "iu":
        raise ValueError(f"tokens must be integer ids, got dtype {array.dtype}")
    low, high = int(array.min()), int(array.max())
    if low < 0 or high > MAX_TOKEN_ID:
        bad = low if low < 0 else high
        raise ValueError(f"token id {bad} is out of range: ids must be in [0, {MAX_TOKEN_ID}]")
    return array.astype(np.uint32, copy=False)


def plan_pages(tokens: Any, page_size: int, namespace: str) -> PagePlan:
    """Chained digests of every full page of ``tokens``; a trailing partial page is not a page."""
    array = np.ascontiguousarray(as_token_array(tokens), dtype="<u4")
    n_pages = array.size // page_size
    previous = hashlib.blake2b(namespace.encode(), digest_size=DIGEST_BYTES, person=b"kvtune-ns").digest()
    digests = [previous] * n_pages
    raw = array[: n_pages * page_size].tobytes()
    step = page_size * 4
    blake2b = hashlib.blake2b
    for k in range(n_pages):
        # BLAKE2b(previous || page tokens), fed in two updates instead of concatenating first.
        hasher = blake2b(previous, digest_size=DIGEST_BYTES)
        hasher.update(raw[k * step : (k + 1) * step])
        previous = digests[k] = hasher.digest()
    return PagePlan(namespace=namespace, page_size=page_size, digests=tuple(digests))
