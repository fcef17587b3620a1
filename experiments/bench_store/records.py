"""The typed rows a run produces: measurements, footprints, ratios, target checks, and the result."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from experiments.bench_store.config import BenchConfig, Scenario


class BenchError(RuntimeError):
    """A benchmark step failed (a worker raised, died, or a store returned a wrong answer)."""


@dataclass(frozen=True)
class OpResult:
    """What a worker measured in one operation (the orchestrator turns it into a :class:`Measurement`)."""

    pages_stored: int
    calls: int
    pages: int
    bytes: int
    seconds: float
    sync_s: float
    evict_s: float
    p50_ms: float
    p99_ms: float
    block_cache_hit_rate: float = math.nan


@dataclass(frozen=True)
class FillResult:
    """One fill call: seconds spent, pages stored after it, and the ``OSError`` that stopped it, if any."""

    seconds: float
    pages_stored: int
    error: str = ""


@dataclass(frozen=True)
class Snapshot:
    """A worker's resident memory and, for a store, its pages, files and disk use at one moment."""

    rss_bytes: int
    rss_peak_bytes: int
    pages_stored: int = 0
    files: int = 0
    inodes: int = 0
    disk_bytes: int = 0
    rss_trimmed_bytes: float = math.nan
    key_bytes_per_page: float = math.nan
    store_code: str = ""


@dataclass(frozen=True)
class Measurement:
    """One (scenario, level, round, kind, op, cache) measurement: a row of measurements.csv."""

    scenario: str
    level: int
    round: int
    kind: str
    op: str
    cache: str
    pages_stored: int
    calls: int
    pages: int
    bytes: int
    seconds: float
    sync_s: float
    evict_s: float
    rate: float
    rate_unit: str
    mb_per_s: float
    pages_per_s: float
    p50_ms: float
    p99_ms: float
    block_cache_hit_rate: float
    elapsed_s: float


@dataclass(frozen=True)
class Footprint:
    """A store's files, disk and resident memory at one stage: a row of footprint.csv."""

    scenario: str
    level: int
    kind: str
    stage: str
    pages_stored: int
    files: int
    inodes: int
    disk_bytes: int
    rss_bytes: int
    rss_peak_bytes: int
    rss_trimmed_bytes: float
    key_bytes_per_page: float
    fill_s: float


@dataclass(frozen=True)
class FillStep:
    """One chunk of a store's fill: a row of fill.csv (the fill rate as the store grows).

    ``status`` is ``filling`` for every chunk but the last, whose status says how the fill ended:
    ``filled`` (the level reached), ``capped`` (its fill cap reached first) or ``error``.
    """

    scenario: str
    level: int
    kind: str
    pages_stored: int
    pages: int
    seconds: float
    fill_s: float
    status: str


@dataclass(frozen=True)
class Ratio:
    """Median over rounds of per-round rate ratios ``numerator / denominator``: a row of ratios.csv."""

    scenario: str
    level: int
    op: str
    cache: str
    numerator: str
    denominator: str
    median_ratio: float
    min_ratio: float
    max_ratio: float
    rounds: int


def columns(record: type) -> tuple[str, ...]:
    """The CSV columns of a record type, in field order."""
    return tuple(f.name for f in dataclasses.fields(record))


MEASUREMENT_COLUMNS = columns(Measurement)
FOOTPRINT_COLUMNS = columns(Footprint)
FILL_COLUMNS = columns(FillStep)
RATIO_COLUMNS = columns(Ratio)


class TargetCheck(NamedTuple):
    """One target and how this run did against it."""

    name: str
    measured: float
    threshold: float
    passed: bool | None
    detail: str

    @property
    def status(self) -> str:
        if self.passed is None:
            return "N/A"
        return "PASS" if self.passed else "MISS"


@dataclass
class BenchResult:
    """Everything one run measured, plus the paths it wrote."""

    config: BenchConfig
    machine: dict[str, str]
    scenarios: list[Scenario]
    measurements: list[Measurement]
    footprints: list[Footprint]
    ratios: list[Ratio]
    targets: list[TargetCheck]
    skipped: dict[str, str]
    notes: list[str]
    fill_steps: list[FillStep] = field(default_factory=list)
    seconds: float = 0.0
    files: dict[str, Path] = field(default_factory=dict)
