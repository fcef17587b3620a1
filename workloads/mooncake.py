"""Loader of the Mooncake trace format (FAST'25 "Mooncake"), for any file of that format.

One JSON object per line: ``{"timestamp": ms, "input_length": tokens, "output_length": tokens,
"hash_ids": [int, ...]}``. Each hash id names one :data:`BLOCK_TOKENS`-token block of the prompt and ids
are prefix-chained, so equal leading ids mean an equal prefix. A block id expands deterministically into
pseudo-token ids (a ``numpy`` generator seeded by the id), the last block cut to ``input_length``: equal
ids give equal tokens, which keeps the trace's prefix-sharing structure exactly.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workloads.requests import Request

logger = logging.getLogger(__name__)

BLOCK_TOKENS = 512
DEFAULT_VOCAB = 128_256
"""Llama 3's vocabulary size; the ids only need to be equal where the trace's blocks are."""

FIELDS = ("timestamp", "input_length", "output_length", "hash_ids")


@dataclass(frozen=True)
class MooncakeRecord:
    """One validated line of a Mooncake trace."""

    line: int
    timestamp_ms: float
    input_length: int
    output_length: int
    hash_ids: tuple[int, ...]


def block_tokens(hash_id: int, vocab_size: int = DEFAULT_VOCAB) -> np.ndarray:
    """The :data:`BLOCK_TOKENS` pseudo-token ids of block ``hash_id`` (the same for the same id)."""
    return np.random.default_rng(hash_id).integers(0, vocab_size, BLOCK_TOKENS, dtype=np.uint32)


def read_mooncake(path: str | Path, start: int = 0, limit: int | None = None) -> Iterator[MooncakeRecord]:
    """Validated records ``start .. start+limit-1`` of ``path`` (blank lines are not records).

    Raises ``ValueError`` naming the file, the line and what is wrong with it.
    """
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise ValueError(f"start must be an int >= 0, got {start!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be an int >= 1 or None (to the end), got {limit!r}")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"trace file {path} does not exist; pass the path of a Mooncake-format JSONL file")
    seen = taken = 0
    with path.open(encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            seen += 1
            if seen <= start:
                continue
            if limit is not None and taken >= limit:
                return
            taken += 1
            yield _parse_line(path, number, text)


def _parse_line(path: Path, number: int, text: str) -> MooncakeRecord:
    where = f"{path}:{number}"
    try:
        obj: Any = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{where}: not valid JSON ({error.msg}); each line must be one JSON object"
        ) from None
    if not isinstance(obj, dict):
        raise ValueError(
            f"{where}: expected a JSON object with keys {', '.join(FIELDS)}, got {type(obj).__name__}"
        )
    missing = [name for name in FIELDS if name not in obj]
    if missing:
        raise ValueError(
            f"{where}: missing key(s) {', '.join(missing)}; every line needs {', '.join(FIELDS)}"
        )
    timestamp = obj["timestamp"]
    if (
        isinstance(timestamp, bool)
        or not isinstance(timestamp, int | float)
        or not math.isfinite(timestamp)
        or timestamp < 0
    ):
        raise ValueError(
            f"{where}: timestamp must be a finite number of milliseconds >= 0, got {timestamp!r}"
        )
    lengths = {}
    for name in ("input_length", "output_length"):
        value = obj[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{where}: {name} must be an int >= 0, got {value!r}")
        lengths[name] = value
    if lengths["input_length"] == 0:
        raise ValueError(f"{where}: input_length is 0; a request needs at least one prompt token")
    hash_ids = obj["hash_ids"]
    if not isinstance(hash_ids, list) or not all(
        isinstance(h, int) and not isinstance(h, bool) and 0 <= h < 2**64 for h in hash_ids
    ):
        raise ValueError(
            f"{where}: hash_ids must be a list of ints >= 0 and < 2**64, got {str(hash_ids)[:80]}"
        )
    expected = math.ceil(lengths["input_length"] / BLOCK_TOKENS)
    if len(hash_ids) != expected:
        raise ValueError(
            f"{where}: {len(hash_ids)} hash_ids for input_length {lengths['input_length']}; the format needs "
            f"ceil(input_length / {BLOCK_TOKENS}) = {expected} (one id per {BLOCK_TOKENS}-token block)"
        )
    return MooncakeRecord(
        number, float(timestamp), lengths["input_length"], lengths["output_length"], tuple(hash_ids)
    )


def load_mooncake(
    path: str | Path,
    *,
    start: int = 0,
    limit: int | None = None,
    time_scale: float = 1.0,
    max_input_tokens: int | None = None,
    max_output_tokens: int | None = None,
    vocab_size: int = DEFAULT_VOCAB,
    tenant: str = "",
) -> list[Request]:
    """Requests of records ``start .. start+limit-1`` of a Mooncake-format file, in arrival order.

    Arrival times are seconds since the first record of the slice, multiplied by ``time_scale``
    (0.5 replays twice as fast). ``max_input_tokens`` / ``max_output_tokens`` cap the lengths (a capped
    prompt keeps its leading tokens, so shared prefixes stay shared).
    """
    if isinstance(time_scale, bool) or not isinstance(time_scale, int | float) or not time_scale > 0:
        raise ValueError(f"time_scale must be a number > 0, got {time_scale!r}")
    for name, cap in (("max_input_tokens", max_input_tokens), ("max_output_tokens", max_output_tokens)):
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise ValueError(f"{name} must be an int >= 1 or None (no cap), got {cap!r}")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or not 2 <= vocab_size <= 2**32:
        raise ValueError(f"vocab_size must be an int in [2, 2**32], got {vocab_size!r}")
    records = sorted(read_mooncake(path, start, limit), key=lambda r: r.timestamp_ms)
    if not records:
        raise ValueError(f"{path} holds no records from record {start} on; lower start or check the file")
    origin = records[0].timestamp_ms
    blocks: dict[int, np.ndarray] = {}
    requests = []
    for record in records:
        n_tokens = (
            record.input_length if max_input_tokens is None else min(record.input_length, max_input_tokens)
        )
        ids = record.hash_ids[: math.ceil(n_tokens / BLOCK_TOKENS)]
        for hash_id in ids:
            if hash_id not in blocks:
                blocks[hash_id] = block_tokens(hash_id, vocab_size)
        tokens = np.concatenate([blocks[h] for h in ids])[:n_tokens]
        tokens.flags.writeable = False
        output = (
            record.output_length
            if max_output_tokens is None
            else min(record.output_length, max_output_tokens)
        )
        arrival = (record.timestamp_ms - origin) / 1000.0 * time_scale
        requests.append(Request(arrival, tokens, output, tenant=tenant))
    logger.info("loaded %d requests (%d distinct blocks) from %s", len(requests), len(blocks), path)
    return requests
