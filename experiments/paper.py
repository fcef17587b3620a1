"""The paper's experiment: every store kind on the staged workload (and a trace), two arrival rates, two
disk budgets, equal host RAM; then the ablations. One replay per cell, an MLflow run per cell.

The matrix, at ``PaperSpec``'s scale:

- kinds (:data:`KINDS`): ``memory`` (the store lives in host RAM: half the budget), ``file`` (kvtune's
  one file per page), ``sglang-file`` (SGLang's own ``HiCacheFile``, the paper's baseline), ``applog``,
  ``lsm`` with kvtune's defaults (:class:`store.StoreConfig`: RocksDB's own with blob files), ``lsm``
  with RocksDB's defaults (no key-value separation), and ``lsm`` with a study's best static config from
  another seed (``best_static``; the cell is skipped without one);
- arrival rates: ``rate_factors`` x the rate at which ``file``'s backups would take the whole disk
  (nominal write speed over the mean bytes of new pages per request), so one keeps up and one falls
  behind; servers are added until the GPUs alone (every prompt computed) would be ``gpu_utilization``
  busy, so the GPUs are not overloaded and the disk is what differs;
- disk budgets: all unique pages fit, and a quarter of them;
- one host-RAM budget for every kind (a store config whose RAM does not fit is clamped, logged).

Ablations (staged workload, the rate where backups fall behind, the budget where all pages fit), each a
row against full ``lsm``: the knob overrides of ``PaperSpec.ablations`` (:data:`ABLATIONS`: key-value
separation off, writer batching off, flat page keys instead of prefix-preserving ones; more from the
command line), and the policy off (defaults) vs on (best static).

Cells are independent replays: ``run_paper(..., jobs=2)`` runs two at a time in worker processes; the
MLflow runs, tables and plots are written by the calling process in the matrix's order.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import multiprocessing
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.policies import ROCKSDB_DEFAULTS
from agents.tracking import log_metrics, tracked_run
from experiments.plots import phase_bars, ttft_cdfs
from store import StoreConfig
from store.pages import plan_pages
from workloads import Request, get_device_profile, get_profile, load_mooncake, staged
from workloads.host_ram import clamp_store_ram
from workloads.replay import ReplayConfig, replay

logger = logging.getLogger(__name__)

KINDS = (
    "memory",
    "file",
    "sglang-file",
    "applog",
    "lsm-kvtune-defaults",
    "lsm-rocksdb-defaults",
    "lsm-best-static",
)
TRACE = Path("/work/shared/data/traces/mooncake_synthetic_trace.jsonl")
PARTS = ("staged", "trace", "ablations")
"""What a run covers: the staged matrix, the trace matrix, the ablations (a long run can be split)."""
ABLATIONS: dict[str, dict[str, Any]] = {
    "no-kv-separation": {"enable_blob_files": False},
    "no-writer-batching": {"writer_batch_size": 1},
    "flat-keys": {"key_scheme": "flat"},
}
"""Ablation rows: name -> the knobs changed from full ``lsm`` (checked against :class:`StoreConfig`)."""


@dataclass(frozen=True)
class PaperSpec:
    """The experiment's whole configuration (logged in full with every cell)."""

    phase_requests: int = 300
    chunk_tokens: int = 256
    chunks_per_prompt: int = 32
    pool_chunks: int = 4096
    profile: str = "glm-4-9b"
    scale: int = 64
    device: str = "nvme-pcie4"
    rate_factors: tuple[float, ...] = (0.5, 2.0)
    budget_fractions: tuple[float, ...] = (1.0, 0.25)
    host_ram_bytes: int = 512 * 1024 * 1024
    gpu_utilization: float = 0.7
    prefetch: str = "wait_complete"
    trace: Path | None = TRACE
    trace_limit: int = 1000
    best_static: dict[str, Any] | None = None
    kinds: tuple[str, ...] = KINDS
    parts: tuple[str, ...] = PARTS
    ablations: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=lambda: dict(ABLATIONS))
    seed: int = 0

    def __post_init__(self) -> None:
        if self.phase_requests < 1 or self.scale < 1 or self.host_ram_bytes < 1:
            raise ValueError("phase_requests, scale and host_ram_bytes must be >= 1")
        for name, values, valid in (("kinds", self.kinds, KINDS), ("parts", self.parts, PARTS)):
            if not values or any(value not in valid for value in values):
                raise ValueError(f"{name} {list(values)} must be some of: {', '.join(valid)}")
        for name, knobs in self.ablations.items():
            try:
                StoreConfig().replace(**knobs)
            except ValueError as error:
                raise ValueError(f"ablation {name!r}: {error}") from None


@dataclass(frozen=True)
class Cell:
    """One replay of the matrix."""

    workload: str
    kind: str
    rate: str
    budget: str
    store_kind: str
    store_config: StoreConfig
    budget_bytes: int | None
    servers: int
    time_scale: float

    @property
    def name(self) -> str:
        return f"{self.workload}/{self.kind}/{self.rate}/{self.budget}"


def kind_configs(spec: PaperSpec) -> dict[str, tuple[str, StoreConfig]]:
    """Store kind and knobs of each compared kind (``lsm-best-static`` only with ``spec.best_static``)."""
    kinds = {
        "memory": ("memory", StoreConfig()),
        "file": ("file", StoreConfig()),
        "sglang-file": ("sglang-file", StoreConfig()),
        "applog": ("applog", StoreConfig()),
        "lsm-kvtune-defaults": ("lsm", StoreConfig()),
        "lsm-rocksdb-defaults": ("lsm", ROCKSDB_DEFAULTS.replace(enable_blob_files=False)),
    }
    if spec.best_static is not None:
        kinds["lsm-best-static"] = ("lsm", StoreConfig.from_dict(spec.best_static))
    return kinds


def unique_page_bytes(requests: Sequence[Request], page_size: int, page_bytes: int) -> int:
    """Bytes of every distinct page the requests hold (what a store must keep for all hits)."""
    pages = {digest for r in requests for digest in plan_pages(r.tokens, page_size, "kvtune").digests}
    return len(pages) * page_bytes


def new_bytes_per_request(requests: Sequence[Request], page_size: int, page_bytes: int) -> float:
    """Mean bytes of pages a request is the first to bring (what write-through backs up)."""
    seen: set[bytes] = set()
    new = 0
    for request in requests:
        digests = plan_pages(request.tokens, page_size, "kvtune").digests
        new += sum(1 for digest in digests if digest not in seen)
        seen.update(digests)
    return new * page_bytes / len(requests)


def replay_config(spec: PaperSpec, cell: Cell) -> ReplayConfig:
    return ReplayConfig(
        store_kind=cell.store_kind,
        profile=get_profile(spec.profile, spec.scale),
        device=get_device_profile(spec.device),
        page_size=spec.chunk_tokens,
        budget_bytes=cell.budget_bytes,
        host_ram_bytes=spec.host_ram_bytes,
        servers=cell.servers,
        prefetch=spec.prefetch,
        window_requests=64,
        seed=spec.seed,
    )


def plan_cells(
    spec: PaperSpec, workload: str, requests: Sequence[Request], kinds: Sequence[str]
) -> list[Cell]:
    """The cells of one workload: kinds x rates x budgets."""
    profile = get_profile(spec.profile, spec.scale)
    page_bytes = profile.kv_layout().page_bytes(spec.chunk_tokens)
    full_scale = page_bytes * profile.scale
    device = get_device_profile(spec.device)
    disk_rate = device.write_bytes_per_s / new_bytes_per_request(requests, spec.chunk_tokens, full_scale)
    span = max(requests[-1].arrival_s - requests[0].arrival_s, 1e-3)
    trace_rate = len(requests) / span
    mean_prefill = sum(profile.prefill_seconds(r.prompt_tokens) for r in requests) / len(requests)
    unique = unique_page_bytes(requests, spec.chunk_tokens, page_bytes)
    configs = kind_configs(spec)
    cells = []
    for factor in spec.rate_factors:
        rate = factor * disk_rate
        servers = max(1, math.ceil(rate * mean_prefill / spec.gpu_utilization))
        for fraction in spec.budget_fractions:
            for kind in kinds:
                if kind not in configs:
                    continue
                store_kind, knobs = configs[kind]
                budget = max(page_bytes, int(unique * fraction))
                if store_kind == "memory":
                    budget = spec.host_ram_bytes // 2
                elif store_kind == "lsm":
                    knobs = clamp_store_ram(knobs, spec.host_ram_bytes)
                cells.append(
                    Cell(
                        workload=workload,
                        kind=kind,
                        rate=f"{factor:g}x-disk",
                        budget=f"{fraction:g}-fit",
                        store_kind=store_kind,
                        store_config=knobs,
                        budget_bytes=budget,
                        servers=servers,
                        time_scale=trace_rate / rate,
                    )
                )
    return cells


METRICS = (
    "hit_token_ratio",
    "memory_hit_token_ratio",
    "mean_ttft_s",
    "p99_ttft_s",
    "backup_late_pages",
    "backup_dropped_pages",
    "backup_host_full_pages",
    "device_read_bytes",
    "device_write_bytes",
    "gpu_utilization",
    "disk_utilization",
)
"""Whole-run figures of a cell: its table row and its MLflow metrics."""


def replay_cell(spec: PaperSpec, cell: Cell, requests: Sequence[Request], out: Path) -> dict[str, Any]:
    """Replay one cell into ``out/<cell>``; return its table row (the whole run and each phase)."""
    origin = requests[0].arrival_s
    timed = [
        dataclasses.replace(r, arrival_s=origin + (r.arrival_s - origin) * cell.time_scale) for r in requests
    ]
    result = replay(
        timed,
        replay_config(spec, cell),
        out_dir=out / cell.name.replace("/", "__"),
        store_config=cell.store_config,
    )
    summary = result.summary
    phases = {
        name: {
            "hit_token_ratio": phase.hit_token_ratio,
            "mean_ttft_s": phase.mean_ttft_s,
            "p99_ttft_s": phase.p99_ttft_s,
            "backup_late_pages": phase.backup_late_pages,
            "backup_dropped_pages": phase.backup_dropped_pages,
            "backup_host_full_pages": phase.backup_host_full_pages,
            "disk_read_bytes": phase.disk_read_bytes,
        }
        for name, phase in summary.phases.items()
    }
    return {
        "cell": cell.name,
        "workload": cell.workload,
        "kind": cell.kind,
        "rate": cell.rate,
        "budget": cell.budget,
        "servers": cell.servers,
        "store_code": summary.store_code,
        **{name: getattr(summary, name) for name in METRICS},
        "phases": phases,
        "ttft_s": [r.ttft_s for r in result.records],
    }


def log_cell(spec: PaperSpec, cell: Cell, row: Mapping[str, Any], uri: str) -> None:
    """One MLflow run for a replayed cell: the spec, the cell and its replay config as params."""
    params = {"spec": spec, "cell": cell, "replay": replay_config(spec, cell).to_dict()}
    with tracked_run("paper", cell.name, uri, params):
        log_metrics({name: row[name] for name in METRICS}, step=0)


def run_cells(
    spec: PaperSpec,
    cells: Sequence[tuple[Cell, Sequence[Request]]],
    out: Path,
    uri: str,
    jobs: int,
) -> list[dict[str, Any]]:
    """Replay ``cells`` (each with its requests), ``jobs`` at a time; log each; rows in ``cells``' order."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1 (cells replayed at a time), got {jobs}")
    rows: Iterator[dict[str, Any]]
    if jobs == 1:
        rows = (replay_cell(spec, cell, requests, out) for cell, requests in cells)
        return [_logged(spec, cell, row, uri) for (cell, _), row in zip(cells, rows, strict=True)]
    # spawn: a forked child would inherit the parent's MLflow and store threads mid-state
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(replay_cell, spec, cell, requests, out) for cell, requests in cells]
        return [
            _logged(spec, cell, future.result(), uri)
            for (cell, _), future in zip(cells, futures, strict=True)
        ]


def _logged(spec: PaperSpec, cell: Cell, row: dict[str, Any], uri: str) -> dict[str, Any]:
    logger.info(
        "cell %s: hit ratio %.3f, mean TTFT %.1f ms",
        cell.name,
        row["hit_token_ratio"],
        row["mean_ttft_s"] * 1e3,
    )
    log_cell(spec, cell, row, uri)
    return row


def run_paper(spec: PaperSpec, out: Path, uri: str, jobs: int = 1) -> list[dict[str, Any]]:
    """The ``spec.parts`` of the experiment: the matrix on the staged workload and on the trace, then
    the ablations; tables and plots in ``out``.

    ``jobs`` cells are replayed at a time, each in its own process when ``jobs > 1``."""
    out.mkdir(parents=True, exist_ok=True)
    requests = staged(
        spec.seed,
        phase_requests=spec.phase_requests,
        chunk_tokens=spec.chunk_tokens,
        chunks_per_prompt=spec.chunks_per_prompt,
        pool_chunks=spec.pool_chunks,
    )
    cells: list[tuple[Cell, Sequence[Request]]] = []
    if "staged" in spec.parts:
        cells.extend((cell, requests) for cell in plan_cells(spec, "staged", requests, spec.kinds))
    if "trace" in spec.parts and spec.trace is not None and spec.trace.exists():
        trace = load_mooncake(spec.trace, limit=spec.trace_limit)
        cells.extend((cell, trace) for cell in plan_cells(spec, "trace", trace, spec.kinds))
    elif "trace" in spec.parts and spec.trace is not None:
        logger.warning("trace %s not found: the trace matrix is skipped", spec.trace)
    if "ablations" in spec.parts:
        cells.extend((cell, requests) for cell in ablation_cells(spec, requests))
    rows = run_cells(spec, cells, out, uri, jobs)
    write_report(rows, out)
    return rows


def ablation_cells(spec: PaperSpec, requests: Sequence[Request]) -> list[Cell]:
    """Full ``lsm`` and one mechanism off at a time, where backups fall behind and all pages fit."""
    cells = plan_cells(
        dataclasses.replace(spec, rate_factors=(max(spec.rate_factors),), budget_fractions=(1.0,)),
        "ablation",
        requests,
        ("lsm-kvtune-defaults",),
    )
    full = cells[0]
    variants = {"lsm-full": full.store_config}
    variants.update({name: full.store_config.replace(**knobs) for name, knobs in spec.ablations.items()})
    if spec.best_static is not None:
        variants["policy-on-best-static"] = clamp_store_ram(
            StoreConfig.from_dict(spec.best_static), spec.host_ram_bytes
        )
    return [dataclasses.replace(full, kind=name, store_config=knobs) for name, knobs in variants.items()]


def write_report(rows: list[dict[str, Any]], out: Path) -> None:
    """``results.json`` (every row with its phases), ``table.md`` (one line per cell and phase), plots."""
    (out / "results.json").write_text(
        json.dumps([{k: v for k, v in row.items() if k != "ttft_s"} for row in rows], indent=2) + "\n"
    )
    lines = [
        "| cell | code | phase | hit ratio | mean TTFT ms | p99 TTFT ms | late | dropped | host full "
        "| read MB (all: device) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['cell']} | {row['store_code']} | all | {row['hit_token_ratio']:.3f} | "
            f"{row['mean_ttft_s'] * 1e3:.1f} | "
            f"{row['p99_ttft_s'] * 1e3:.1f} | {row['backup_late_pages']} | {row['backup_dropped_pages']} | "
            f"{row['backup_host_full_pages']} | {row['device_read_bytes'] / 1e6:.1f} |"
        )
        for phase, values in sorted(row["phases"].items()):
            lines.append(
                f"| {row['cell']} | {row['store_code']} | {phase} | {values['hit_token_ratio']:.3f} | "
                f"{values['mean_ttft_s'] * 1e3:.1f} | {values['p99_ttft_s'] * 1e3:.1f} | "
                f"{values['backup_late_pages']} | {values['backup_dropped_pages']} | "
                f"{values['backup_host_full_pages']} | {values['disk_read_bytes'] / 1e6:.1f} |"
            )
    (out / "table.md").write_text("\n".join(lines) + "\n")
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(f"{row['workload']}__{row['rate']}__{row['budget']}", []).append(row)
    for group, members in groups.items():
        phase_bars({row["kind"]: row["phases"] for row in members}, out / f"{group}__phases.png")
        ttft_cdfs({row["kind"]: row["ttft_s"] for row in members}, out / f"{group}__ttft_cdf.png")
