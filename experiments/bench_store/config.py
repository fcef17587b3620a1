"""What a run does: the store kinds, the two workload shapes (:class:`Scenario`) and :class:`BenchConfig`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from store import DISK_STORE_KINDS, STORE_KINDS, KVLayout, StoreConfig, store_kind

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

LSM_FLAT = "lsm-flat"
"""The lsm store with ``key_scheme="flat"``, run beside ``lsm`` (prefix keys) to compare the key schemes."""
KINDS = (*STORE_KINDS, LSM_FLAT)
RAW = "raw"
PARTS = ("large", "small")
"""The workload shapes a run can measure (:meth:`BenchConfig.scenarios`), by :class:`Scenario` name."""
DISK_KINDS = (*DISK_STORE_KINDS, LSM_FLAT)


def store_kind_of(kind: str) -> str:
    """The store kind a bench kind opens (:data:`LSM_FLAT` is an ``lsm`` store)."""
    return "lsm" if kind == LSM_FLAT else kind


def store_config_of(kind: str, config: StoreConfig) -> StoreConfig:
    """The knobs a bench kind opens its store with: ``config``, flat keys for :data:`LSM_FLAT`."""
    return config.replace(key_scheme="flat") if kind == LSM_FLAT else config


def parse_bench_kinds(text: str | None) -> tuple[str, ...]:
    """The kinds a comma-separated list names (none or blank: :data:`KINDS`): store kinds and
    :data:`LSM_FLAT`; an unknown name raises ``ValueError`` listing the valid ones."""
    names = tuple(name.strip() for name in (text or "").split(",") if name.strip())
    unknown = [name for name in names if name not in KINDS]
    if unknown:
        raise ValueError(f"unknown kind(s) {', '.join(unknown)}; choose from {', '.join(KINDS)}")
    return tuple(store_kind(name).name if name != LSM_FLAT else name for name in names) or KINDS


def parse_fill_caps(text: str | None, kinds: tuple[str, ...]) -> dict[str, float]:
    """Per-kind fill caps from ``SECONDS`` (every kind) or ``KIND=SECONDS,...`` (those kinds only).

    A kind whose fill reaches its cap before its level stops there: the run reports the pages it
    reached and skips its later phases (a file store of 10M pages would need hours to fill).
    """
    caps: dict[str, float] = {}
    for item in (part.strip() for part in (text or "").split(",")):
        if not item:
            continue
        kind, _, value = item.rpartition("=")
        try:
            seconds = float(value)
        except ValueError:
            raise ValueError(
                f"fill cap {item!r} is not SECONDS or KIND=SECONDS (e.g. 600 or file=600,applog=3600)"
            ) from None
        for name in (kind.strip(),) if kind else kinds:
            caps[name] = seconds
    return caps


LLAMA_31_8B = KVLayout(layers=32, kv_heads=8, head_dim=128, dtype=torch.float16)
"""Llama-3.1-8B: 32 layers, 8 KV heads of 128, fp16 = 128 KiB of KV per token."""
LLAMA_PAGE_TOKENS = 64
SMALL_PAGE_STEP = 4 * 2 * 16 * 2
"""Bytes per unit of head dimension in a small page (4 layers x K/V x 16 tokens x fp16)."""

# (op, cache) measured every round, in this order; then, in the last ``reopen_rounds`` rounds, the reopens.
OPS: tuple[tuple[str, str], ...] = (("put", ""), ("probe", ""), ("get", "warm"), ("get", "cold"))
REOPEN_OPS: tuple[tuple[str, str], ...] = (("reopen", "cold"), ("reopen", "warm"))
ALL_OPS = OPS + REOPEN_OPS


@dataclass(frozen=True)
class Scenario:
    """One workload shape: pages of ``layout`` x ``page_size`` tokens, prompts of ``prompt_pages`` pages.

    ``levels`` are the stored-page counts the stores are filled to before the rounds (one store per level);
    with ``fresh_per_round`` every round starts from an empty store instead (``levels == (0,)``).
    """

    name: str
    description: str
    layout: KVLayout
    page_size: int
    prompt_pages: int
    levels: tuple[int, ...]
    prompts_per_round: int
    probes_per_round: int
    fresh_per_round: bool

    @property
    def page_bytes(self) -> int:
        return self.layout.page_bytes(self.page_size)

    @property
    def prompt_tokens(self) -> int:
        return self.prompt_pages * self.page_size

    @property
    def prompt_bytes(self) -> int:
        return self.prompt_pages * self.page_bytes


@dataclass(frozen=True)
class BenchConfig:
    """Everything one ``kvtune bench store`` run does; logged in full at the start of the run."""

    out: Path = Path("runs/bench")
    kinds: tuple[str, ...] = KINDS
    parts: tuple[str, ...] = PARTS
    rounds: int = 5
    large_pages: int = 512
    large_prompt_pages: int = 16
    large_kv_heads: int = 1
    small_levels: tuple[int, ...] = (100_000, 1_000_000)
    small_page_bytes: int = 4 * KiB
    small_prompt_pages: int = 64
    small_prompts_per_round: int = 64
    small_probes_per_round: int = 256
    reopen_rounds: int = 1
    reopen_caches: tuple[str, ...] = ("cold",)
    fill_chunk_pages: int = 65_536
    fill_caps: Mapping[str, float] = field(default_factory=dict)
    """Seconds of its own fill time after which a kind stops filling (see :func:`parse_fill_caps`)."""
    workdir: Path | None = None
    keep_data: bool = False
    seed: int = 0
    store_config: StoreConfig = field(default_factory=StoreConfig)
    memory_limit_fraction: float = 0.5

    def __post_init__(self) -> None:
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown or not self.kinds:
            raise ValueError(f"unknown store kind(s) {unknown}; choose from {', '.join(KINDS)}")
        if len(set(self.kinds)) != len(self.kinds):
            raise ValueError(f"kinds must not repeat, got {self.kinds}")
        if not self.parts or not set(self.parts) <= set(PARTS) or len(set(self.parts)) != len(self.parts):
            raise ValueError(f"parts must be some of {', '.join(PARTS)}, each once, got {self.parts}")
        positive = (
            "rounds",
            "large_pages",
            "large_prompt_pages",
            "large_kv_heads",
            "small_prompt_pages",
            "small_prompts_per_round",
            "small_probes_per_round",
            "fill_chunk_pages",
            "reopen_rounds",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.large_pages < self.large_prompt_pages:
            raise ValueError(
                f"large_pages={self.large_pages} must be at least one prompt "
                f"({self.large_prompt_pages} pages)"
            )
        if LLAMA_31_8B.kv_heads % self.large_kv_heads:
            raise ValueError(f"large_kv_heads must divide {LLAMA_31_8B.kv_heads}, got {self.large_kv_heads}")
        if not self.small_levels or any(
            isinstance(n, bool) or not isinstance(n, int) or n < self.small_prompt_pages
            for n in self.small_levels
        ):
            raise ValueError(
                f"small_levels must be stored-page counts of at least one prompt ({self.small_prompt_pages} "
                f"pages), got {self.small_levels}"
            )
        if (
            isinstance(self.small_page_bytes, bool)
            or not isinstance(self.small_page_bytes, int)
            or self.small_page_bytes < SMALL_PAGE_STEP
            or self.small_page_bytes % SMALL_PAGE_STEP
        ):
            raise ValueError(
                f"small_page_bytes must be a positive multiple of {SMALL_PAGE_STEP} (1024 for a 10M-page "
                f"level that keeps the disk use modest), got {self.small_page_bytes!r}"
            )
        if list(self.small_levels) != sorted(set(self.small_levels)):
            raise ValueError(f"small_levels must be increasing and distinct, got {self.small_levels}")
        if not self.reopen_caches or not set(self.reopen_caches) <= {"cold", "warm"}:
            raise ValueError(f"reopen_caches must be some of 'cold', 'warm', got {self.reopen_caches}")
        if self.reopen_rounds > self.rounds:
            raise ValueError(f"reopen_rounds={self.reopen_rounds} must not exceed rounds={self.rounds}")
        capped = [kind for kind in self.fill_caps if kind not in self.kinds]
        if capped:
            raise ValueError(
                f"fill caps name kind(s) {', '.join(capped)} that this run does not compare; "
                f"choose from {', '.join(self.kinds)}"
            )
        bad_caps = {k: s for k, s in self.fill_caps.items() if not (isinstance(s, int | float) and s > 0)}
        if bad_caps:
            raise ValueError(f"fill caps must be positive seconds, got {bad_caps}")
        if not 0 < self.memory_limit_fraction <= 1:
            raise ValueError(f"memory_limit_fraction must be in (0, 1], got {self.memory_limit_fraction}")

    @classmethod
    def quick(cls, **overrides: Any) -> BenchConfig:
        """A ~1 minute run: tiny sizes, 3 rounds. Its targets are evaluated, but below the target scale."""
        values: dict[str, Any] = dict(
            rounds=3,
            large_pages=32,
            small_levels=(2_048, 8_192),
            small_prompts_per_round=8,
            small_probes_per_round=32,
            fill_chunk_pages=4_096,
        )
        values.update(overrides)
        return cls(**values)

    @property
    def data_dir(self) -> Path:
        return self.workdir if self.workdir is not None else self.out / "data"

    def large_scenario(self) -> Scenario:
        layout = dataclasses.replace(LLAMA_31_8B, kv_heads=self.large_kv_heads)
        scale = LLAMA_31_8B.kv_heads // self.large_kv_heads
        real = LLAMA_31_8B.page_bytes(LLAMA_PAGE_TOKENS)
        page = layout.page_bytes(LLAMA_PAGE_TOKENS)
        return Scenario(
            name="large",
            description=(
                f"Llama-3.1-8B pages scaled 1/{scale}: 32 layers x 2 x 64 tokens x {self.large_kv_heads} KV "
                f"head(s) x 128 x fp16 = {size_text(page)} per page "
                f"(real model: 8 KV heads, {size_text(real)}); "
                f"{self.large_pages} pages per round in prompts of {self.large_prompt_pages} pages, "
                "fresh stores every round"
            ),
            layout=layout,
            page_size=LLAMA_PAGE_TOKENS,
            prompt_pages=self.large_prompt_pages,
            levels=(0,),
            prompts_per_round=self.large_pages // self.large_prompt_pages,
            probes_per_round=self.large_pages // self.large_prompt_pages,
            fresh_per_round=True,
        )

    def small_scenario(self) -> Scenario:
        page_size = 16
        layout = KVLayout(
            layers=4, kv_heads=1, head_dim=self.small_page_bytes // SMALL_PAGE_STEP, dtype=torch.float16
        )
        return Scenario(
            name="small",
            description=(
                f"metadata-heavy: {size_text(layout.page_bytes(page_size))} pages (4 layers x 2 x 16 tokens "
                f"x 1 KV head x {layout.head_dim} x fp16), prompts of {self.small_prompt_pages} pages, "
                f"stores filled to {', '.join(f'{n:,}' for n in self.small_levels)} pages; per round "
                f"{self.small_prompts_per_round} prompts put and read, {self.small_probes_per_round} probes"
            ),
            layout=layout,
            page_size=page_size,
            prompt_pages=self.small_prompt_pages,
            levels=self.small_levels,
            prompts_per_round=self.small_prompts_per_round,
            probes_per_round=self.small_probes_per_round,
            fresh_per_round=False,
        )

    def scenarios(self) -> list[Scenario]:
        """The scenarios of :attr:`parts`, large pages first."""
        return [
            scenario
            for scenario in (self.large_scenario(), self.small_scenario())
            if scenario.name in self.parts
        ]

    def describe(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "store_config"}
        values["store_config_changes"] = StoreConfig().changed(self.store_config)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in values.items()}


def size_text(nbytes: float) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if nbytes >= scale:
            value = nbytes / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{nbytes:.0f} B"
