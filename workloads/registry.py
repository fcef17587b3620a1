"""Workloads by name: the synthetic generators and the Mooncake trace loader."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from workloads.generators import chat, mixed, rag, staged
from workloads.mooncake import load_mooncake
from workloads.requests import Request

WORKLOADS: dict[str, Callable[..., list[Request]]] = {
    "staged": staged,
    "chat": chat,
    "rag": rag,
    "mixed": mixed,
    "mooncake": load_mooncake,
}
SEEDED = frozenset({"staged", "chat", "rag", "mixed"})


def workload_options(name: str) -> list[str]:
    """The keyword options workload ``name`` accepts."""
    return [p for p in inspect.signature(_factory(name)).parameters if p != "seed"]


def make_workload(name: str, seed: int = 0, **options: Any) -> list[Request]:
    """The requests of workload ``name`` built with ``options``; generators draw everything from ``seed``.

    ``mooncake`` needs ``path=`` (a Mooncake-format JSONL file) and takes the loader's options
    (``start``, ``limit``, ``time_scale``, ``max_input_tokens``, ...); it has no randomness.
    """
    factory = _factory(name)
    valid = workload_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"workload {name!r} has no option(s) {', '.join(unknown)}; valid options: {', '.join(valid)}"
        )
    if name == "mooncake" and "path" not in options:
        raise ValueError("workload 'mooncake' needs path=<a Mooncake-format JSONL trace file>")
    return factory(seed=seed, **options) if name in SEEDED else factory(**options)


def _factory(name: str) -> Callable[..., list[Request]]:
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; valid workloads: {', '.join(WORKLOADS)}")
    return WORKLOADS[name]
