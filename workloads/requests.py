"""The unit of every workload: one request, with its prompt as token ids."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAX_TOKEN_ID = 2**32 - 1


@dataclass(frozen=True, eq=False)
class Request:
    """One inference request.

    ``tokens`` is the prompt as a read-only 1-D ``uint32`` array (anything integer-like is converted);
    ``arrival_s`` is seconds since the start of the trace; ``phase`` labels the regime of a generated
    workload (empty when it has none). Equality is identity: compare ``tokens`` with numpy.
    """

    arrival_s: float
    tokens: np.ndarray
    output_len: int
    session: str = ""
    tenant: str = ""
    phase: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.arrival_s, bool) or not isinstance(self.arrival_s, int | float):
            raise ValueError(f"arrival_s must be a number of seconds, got {self.arrival_s!r}")
        if not math.isfinite(self.arrival_s) or self.arrival_s < 0:
            raise ValueError(f"arrival_s must be finite and >= 0, got {self.arrival_s!r}")
        if isinstance(self.output_len, bool) or not isinstance(self.output_len, int | np.integer):
            raise ValueError(f"output_len must be an int, got {self.output_len!r}")
        if self.output_len < 0:
            raise ValueError(f"output_len must be >= 0, got {self.output_len}")
        object.__setattr__(self, "arrival_s", float(self.arrival_s))
        object.__setattr__(self, "output_len", int(self.output_len))
        object.__setattr__(self, "tokens", _token_array(self.tokens))

    @property
    def prompt_tokens(self) -> int:
        return int(self.tokens.size)


def _token_array(tokens: object) -> np.ndarray:
    array = np.asarray(tokens)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"tokens must be a non-empty 1-D array of ids, got shape {array.shape}")
    if array.dtype.kind not in "iu":
        raise ValueError(f"tokens must be integer ids, got dtype {array.dtype}")
    if array.dtype != np.uint32:
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > MAX_TOKEN_ID:
            raise ValueError(
                f"token ids must be in [0, {MAX_TOKEN_ID}], got one of {low if low < 0 else high}"
            )
        array = array.astype(np.uint32)
    elif array.flags.writeable:
        array = array.copy()
    array.flags.writeable = False
    return array
