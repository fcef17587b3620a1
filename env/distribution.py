"""Seeded distributions of workloads to train on: each episode draws its own traffic and sizes.

A policy trained on one workload learns that workload. A :class:`WorkloadDistribution` draws, per
episode, a generator (staged with random phase targets and lengths, chat, rag, or a mix of two), its
arrival rate and prompt lengths, and the disk budget and memory tier as *fractions of the episode's
unique KV bytes*, so that "a quarter of the pages fit" means the same at any model scale.

Training and evaluation are kept apart by construction: training draws generator seeds below
:data:`EVALUATION_SEED_BASE` (from the environment's ``np_random``), evaluation suites use seeds from it
upwards, and the Mooncake trace is never drawn (see ``agents.suite``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from workloads.registry import make_workload
from workloads.requests import Request

EVALUATION_SEED_BASE = 2**31
"""Generator seeds at or above this are evaluation's; training draws seeds below it."""


@dataclass(frozen=True)
class WorkloadDraw:
    """One episode's workload: a generator, its options and seed, and the sizes relative to its data."""

    workload: str
    options: dict[str, Any]
    seed: int
    budget_fraction: float | None
    """Disk budget / unique KV bytes of the episode (``None``: unlimited)."""
    memory_tier_fraction: float
    """Memory tier / unique KV bytes of the episode."""

    def requests(self) -> list[Request]:
        return make_workload(self.workload, seed=self.seed, **self.options)

    def describe(self) -> dict[str, Any]:
        return asdict(self)


def unique_page_count(requests: Sequence[Request], page_size: int) -> int:
    """Distinct full pages (prefix-chained, as the stores key them) over all ``requests``."""
    seen: set[bytes] = set()
    for request in requests:
        digest = hashlib.blake2b(digest_size=16)
        tokens = np.ascontiguousarray(request.tokens, dtype=np.int64)
        for start in range(0, tokens.size - page_size + 1, page_size):
            digest.update(tokens[start : start + page_size].tobytes())
            seen.add(digest.copy().digest())
    return len(seen)


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _integer(rng: np.random.Generator, bounds: tuple[int, int]) -> int:
    return int(rng.integers(bounds[0], bounds[1] + 1))


@dataclass(frozen=True)
class WorkloadDistribution:
    """Ranges each episode's workload is drawn from (bounds inclusive). Recorded in the policy card."""

    name: str
    kinds: tuple[str, ...] = ("staged", "chat", "rag", "mixed")
    rate_rps: tuple[float, float] = (1.0, 8.0)
    chunk_tokens: int = 64
    chunks_per_prompt: tuple[int, int] = (8, 32)
    staged_phases: tuple[int, int] = (2, 6)
    staged_phase_requests: tuple[int, int] = (6, 16)
    staged_target: tuple[float, float] = (0.05, 0.9)
    chat_sessions: tuple[int, int] = (6, 14)
    chat_system_tokens: tuple[int, int] = (256, 1536)
    rag_requests: tuple[int, int] = (40, 96)
    rag_documents: tuple[int, int] = (10, 60)
    rag_doc_tokens: tuple[int, int] = (256, 768)
    budget_fraction: tuple[float, float] = (0.2, 1.2)
    unlimited_budget_share: float = 0.2
    memory_tier_fraction: tuple[float, float] = (0.03, 0.3)
    seeds: tuple[int, int] = (0, EVALUATION_SEED_BASE - 1)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.kinds) - {"staged", "chat", "rag", "mixed"})
        if unknown or not self.kinds:
            raise ValueError(
                f"distribution {self.name!r}: kinds must be a non-empty subset of staged, chat, rag, mixed "
                f"(got {', '.join(self.kinds) or 'none'})"
            )
        if self.seeds[1] >= EVALUATION_SEED_BASE:
            raise ValueError(
                f"distribution {self.name!r}: training seeds must stay below {EVALUATION_SEED_BASE} "
                "(the evaluation suites' seeds)"
            )

    def draw(self, rng: np.random.Generator) -> WorkloadDraw:
        kind = str(rng.choice(list(self.kinds)))
        if kind == "mixed":
            first, second = rng.choice(["staged", "chat", "rag"], size=2, replace=False)
            options: dict[str, Any] = {
                "segments": [
                    (str(first), self._options(str(first), rng, shrink=2)),
                    (str(second), self._options(str(second), rng, shrink=2)),
                ]
            }
        else:
            options = self._options(kind, rng, shrink=1)
        budget = (
            None
            if rng.random() < self.unlimited_budget_share
            else round(_uniform(rng, self.budget_fraction), 3)
        )
        return WorkloadDraw(
            workload=kind,
            options=options,
            seed=_integer(rng, self.seeds),
            budget_fraction=budget,
            memory_tier_fraction=round(_uniform(rng, self.memory_tier_fraction), 3),
        )

    def _options(self, kind: str, rng: np.random.Generator, shrink: int) -> dict[str, Any]:
        """Options of one generator; ``shrink`` divides request counts (a mix's segments are halves)."""
        rate = round(_uniform(rng, self.rate_rps), 2)
        chunks = _integer(rng, self.chunks_per_prompt)
        if kind == "staged":
            phases = _integer(rng, self.staged_phases)
            return {
                "phase_requests": max(_integer(rng, self.staged_phase_requests) // shrink, 2),
                "targets": [round(_uniform(rng, self.staged_target), 2) for _ in range(phases)],
                "chunk_tokens": self.chunk_tokens,
                "chunks_per_prompt": chunks,
                "pool_chunks": 8 * chunks * phases,
                "rate": rate,
            }
        if kind == "chat":
            return {
                "sessions": max(_integer(rng, self.chat_sessions) // shrink, 2),
                "turns": (2, 6),
                "system_tokens": _integer(rng, self.chat_system_tokens),
                "session_rate": round(rate / 2, 3),
                "think_time_s": round(2.0 / rate, 3),
            }
        return {
            "requests": max(_integer(rng, self.rag_requests) // shrink, 4),
            "documents": _integer(rng, self.rag_documents),
            "doc_tokens": _integer(rng, self.rag_doc_tokens),
            "rate": rate,
        }

    def describe(self) -> dict[str, Any]:
        return asdict(self)


DISTRIBUTIONS: dict[str, WorkloadDistribution] = {
    "serving-mix": WorkloadDistribution("serving-mix"),
    "staged-only": WorkloadDistribution("staged-only", kinds=("staged",)),
}
"""Named training distributions (``EnvConfig.distribution``)."""


def get_distribution(name: str) -> WorkloadDistribution:
    if name not in DISTRIBUTIONS:
        raise ValueError(f"unknown workload distribution {name!r}; valid: {', '.join(DISTRIBUTIONS)}")
    return DISTRIBUTIONS[name]
