"""One host-RAM budget shared by the memory tier and what the store keeps in RAM.

What the store takes is taken from the tier: for ``lsm``, its memtables (``write_buffer_size x
max_write_buffer_number``) and block cache (``block_cache_bytes``); for ``memory``, its whole budget (its
pages live in RAM); ``file`` and ``applog`` keep only small indexes, counted as nothing. Writes queued for
the disk hold RAM too: the replay counts them as the backup queue's pinned pages
(:meth:`workloads.timeline.ServingTimeline.pending_pages`), taken from the tier as they come and go, and
never more than the store leaves: a backup that does not fit is refused, as SGLang's full host pool
refuses it (``host_pool_pages`` in :mod:`workloads.timeline`).
"""

from __future__ import annotations

import dataclasses
import logging

from store import StoreConfig

logger = logging.getLogger(__name__)

RAM_KNOBS = ("write_buffer_size", "max_write_buffer_number", "block_cache_bytes")
"""The store knobs that hold host RAM (``lsm``)."""


def store_ram_bytes(kind: str, config: StoreConfig, budget_bytes: int | None) -> int:
    """Bytes of host RAM a store of ``kind`` holds under ``config`` (see the module docstring)."""
    if kind == "lsm":
        return config.write_buffer_size * config.max_write_buffer_number + config.block_cache_bytes
    if kind == "memory":
        if budget_bytes is None:
            raise ValueError(
                "the memory store keeps its pages in host RAM: give it a budget (budget_bytes / "
                "--budget-bytes) so it fits the host-RAM budget"
            )
        return budget_bytes
    return 0


def check_store_ram(kind: str, config: StoreConfig, budget_bytes: int | None, host_ram_bytes: int) -> int:
    """The store's RAM, or ``ValueError`` naming the knobs when it exceeds ``host_ram_bytes``."""
    needed = store_ram_bytes(kind, config, budget_bytes)
    if needed > host_ram_bytes:
        knobs = "budget_bytes" if kind == "memory" else " x ".join(RAM_KNOBS[:2]) + " + " + RAM_KNOBS[2]
        raise ValueError(
            f"the {kind} store needs {needed} bytes of host RAM ({knobs}) but host_ram_bytes is "
            f"{host_ram_bytes}: lower {knobs} or raise host_ram_bytes"
        )
    return needed


def clamp_store_ram(config: StoreConfig, host_ram_bytes: int) -> StoreConfig:
    """``config`` with its ``lsm`` RAM knobs lowered until they fit ``host_ram_bytes`` (a policy's proposal
    is clamped, with a logged warning): memtables first down to 2, then memtable size and block cache
    halved in turn down to their minimums; ``ValueError`` when even that does not fit."""
    specs = StoreConfig.specs()
    clamped = config
    if store_ram_bytes("lsm", clamped, None) > host_ram_bytes:
        fewer = int(specs["max_write_buffer_number"].low or 2)
        clamped = dataclasses.replace(clamped, max_write_buffer_number=fewer)
    shrink = ("write_buffer_size", "block_cache_bytes")
    turn = 0
    while store_ram_bytes("lsm", clamped, None) > host_ram_bytes:
        movable = [name for name in shrink if getattr(clamped, name) // 2 >= (specs[name].low or 1)]
        if not movable:
            check_store_ram("lsm", clamped, None, host_ram_bytes)
        name = movable[turn % len(movable)]
        clamped = dataclasses.replace(clamped, **{name: getattr(clamped, name) // 2})
        turn += 1
    if clamped != config:
        logger.warning(
            "store RAM %d bytes exceeds host_ram_bytes %d: clamped %s",
            store_ram_bytes("lsm", config, None),
            host_ram_bytes,
            ", ".join(f"{k}={v}" for k, v in config.changed(clamped).items()),
        )
    return clamped
