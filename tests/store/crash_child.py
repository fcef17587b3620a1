"""The writer process of the crash tests (``test_crash.py``): it is SIGKILLed at a random moment.

It runs in a child forked from a ``multiprocessing`` fork server that imported torch and the store once
(a fresh interpreter needs ~2.5 s just to import torch, too slow for dozens of rounds).
"""

from __future__ import annotations

from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import torch

from store import StoreConfig
from tests.store.conftest import PAGE_SIZE, make_tokens, open_kind, prefix_kv

N_STEMS = 5


def crash_prompt(index: int) -> torch.Tensor:
    """Prompt ``index``: 0-3 pages of one of five shared stems, then 3 pages and 1 token of its own."""
    stem = make_tokens(90_000 + index % N_STEMS, 3 * PAGE_SIZE)[: PAGE_SIZE * (index % 4)]
    return torch.cat([stem, make_tokens(1_000_000 + index, 3 * PAGE_SIZE + 1)])


def write_until_killed(
    *, kind: str, path: str, config: dict[str, Any], first: int, conn: Connection, flush_every: int
) -> None:
    """Put prompts ``first, first+1, ...`` forever.

    After ``put_batch`` of prompt i returns it sends ``P<i>``; with ``flush_every`` it calls ``flush()``
    after every ``flush_every`` prompts and then sends ``F<i>`` (every prompt up to i must survive).
    Each message is one write of a few bytes to a pipe, which a SIGKILL cannot tear.
    """
    s = open_kind(kind, Path(path), config=StoreConfig(**config))
    conn.send_bytes(b"ready")
    index = first
    while True:
        tokens = crash_prompt(index)
        s.put_batch(tokens, prefix_kv(tokens))
        conn.send_bytes(b"P%d" % index)
        if flush_every and (index - first + 1) % flush_every == 0:
            s.flush()
            conn.send_bytes(b"F%d" % index)
        index += 1
