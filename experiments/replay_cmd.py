"""``kvtune replay``: replay a trace or a generated workload against a store and report hits and TTFT."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from experiments.options import HELP_STORE_KINDS, parse_assignments

if TYPE_CHECKING:
    from workloads import WindowMetrics
    from workloads.metrics import ReplaySummary

# The choices below are help text only (importing the registries would import torch at `kvtune --help`);
# tests/experiments/test_replay_cmd.py checks they list every registered name, and the command validates
# each value against the registry itself.
HELP_GENERATED = "staged, chat, rag, mixed"
HELP_MODEL_PROFILES = "llama-3.1-8b, qwen2.5-7b, glm-4-9b, tiny"
HELP_DEVICE_PROFILES = "this-machine, nvme-pcie4"
HELP_CLOCKS = "counters, measured"
HELP_PREFETCH_POLICIES = "wait_complete, timeout, best_effort"
HELP_WRITE_POLICIES = "write_through, write_back"
app = typer.Typer()
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*$", re.IGNORECASE)
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1e3,
    "kb": 1e3,
    "m": 1e6,
    "mb": 1e6,
    "g": 1e9,
    "gb": 1e9,
    "t": 1e12,
    "tb": 1e12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
    "ki": 2**10,
    "mi": 2**20,
    "gi": 2**30,
    "ti": 2**40,
}


def parse_bytes(text: str) -> int:
    """``"64MiB"`` -> 67108864; plain integers, SI (kB, MB, GB) and binary (KiB, MiB, GiB) units."""
    match = _SIZE.match(text)
    if not match or match.group(2).lower() not in _UNITS:
        raise typer.BadParameter(f"{text!r} is not a size: write e.g. 1048576, 512MiB or 2GB")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def _choice(name: str, value: str, valid: tuple[str, ...]) -> str:
    if value not in valid:
        raise typer.BadParameter(f"{value!r} is not valid; choose one of {', '.join(valid)}", param_hint=name)
    return value


@app.command("replay")
def replay_command(
    *,
    out: Annotated[
        Path, typer.Option("--out", help="Directory for requests.csv, windows.csv, summary.json.")
    ],
    trace: Annotated[Path | None, typer.Option("--trace", help="A Mooncake-format JSONL trace.")] = None,
    workload: Annotated[str | None, typer.Option("--workload", help=f"A workload: {HELP_GENERATED}.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Replay the first N requests.")] = None,
    store: Annotated[str, typer.Option("--store", help=f"Store kind: {HELP_STORE_KINDS}.")] = "lsm",
    budget_bytes: Annotated[
        str | None, typer.Option("--budget-bytes", help="Disk budget, e.g. 2GiB (default: unlimited).")
    ] = None,
    profile: Annotated[str, typer.Option("--profile", help=f"Model: {HELP_MODEL_PROFILES}.")] = "tiny",
    device: Annotated[
        str, typer.Option("--device", help=f"Device of the counters clock: {HELP_DEVICE_PROFILES}.")
    ] = "this-machine",
    scale: Annotated[int, typer.Option("--scale", min=1, help="Shrink the KV tensors by this factor.")] = 1,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the workload and KV tensors.")] = 0,
    param: Annotated[list[str] | None, typer.Option("--param", help="Workload option name=value.")] = None,
    memory_bytes: Annotated[
        str, typer.Option("--memory-bytes", help="Host-memory tier size (without --host-ram-bytes).")
    ] = "64MiB",
    host_ram_bytes: Annotated[
        str | None,
        typer.Option("--host-ram-bytes", help="Host RAM shared by the tier and the store, e.g. 1GiB."),
    ] = None,
    servers: Annotated[int, typer.Option("--servers", min=1, help="GPU servers running prefill FIFO.")] = 1,
    target_utilization: Annotated[
        float | None,
        typer.Option("--target-utilization", help="Scale trace time so the GPUs alone would be this busy."),
    ] = None,
    backup_queue_pages: Annotated[
        int | None,
        typer.Option("--backup-queue-pages", min=0, help="Bound the backup queue (drops when full)."),
    ] = None,
    page_size: Annotated[int, typer.Option("--page-size", min=1, help="Tokens per page.")] = 64,
    clock: Annotated[str, typer.Option("--clock", help=f"I/O clock: {HELP_CLOCKS}.")] = "counters",
    prefetch: Annotated[str, typer.Option("--prefetch", help=HELP_PREFETCH_POLICIES)] = "wait_complete",
    prefetch_timeout: Annotated[float, typer.Option("--prefetch-timeout", help="Deadline (s).")] = 0.1,
    write_policy: Annotated[str, typer.Option("--write-policy", help=HELP_WRITE_POLICIES)] = "write_through",
    write_back_hits: Annotated[int, typer.Option("--write-back-hits", min=0, help="Hits to write back.")] = 1,
    blocking_writes: Annotated[bool, typer.Option("--blocking-writes", help="Write synchronously.")] = False,
    window: Annotated[int, typer.Option("--window", min=1, help="Requests per window.")] = 64,
    pace: Annotated[
        float | None, typer.Option("--pace", help="Trace s per wall s (default: flat out).")
    ] = None,
    time_scale: Annotated[float, typer.Option("--time-scale", help="Multiply trace arrival times.")] = 1.0,
    max_input_tokens: Annotated[
        int | None, typer.Option("--max-input-tokens", min=1, help="Cap prompts.")
    ] = None,
    store_config: Annotated[
        Path | None, typer.Option("--store-config", help="YAML/JSON mapping of store knobs (StoreConfig).")
    ] = None,
    store_path: Annotated[
        Path | None, typer.Option("--store-path", help="Store directory (default: temporary, removed after).")
    ] = None,
) -> None:
    """Replay a workload against a store: hit ratio, TTFT, I/O on both clocks, per request and window."""
    import yaml
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from store import STORE_KINDS, StoreConfig
    from workloads import (
        CLOCKS,
        PREFETCH_POLICIES,
        WRITE_POLICIES,
        ReplayConfig,
        get_device_profile,
        get_profile,
        load_mooncake,
        make_workload,
        replay,
    )
    from workloads.host_ram import check_store_ram
    from workloads.replay import SUMMARY_JSON

    if (trace is None) == (workload is None):
        raise typer.BadParameter("pass exactly one of --trace FILE or --workload NAME")
    _choice("--store", store, STORE_KINDS)
    _choice("--clock", clock, CLOCKS)
    _choice("--prefetch", prefetch, PREFETCH_POLICIES)
    _choice("--write-policy", write_policy, WRITE_POLICIES)
    console = Console()
    try:
        options = parse_assignments(param or [], "--param")
        if trace is not None:
            requests = load_mooncake(
                trace, limit=limit, time_scale=time_scale, max_input_tokens=max_input_tokens, **options
            )
        else:
            requests = make_workload(workload or "", seed=seed, **options)
            requests = requests[:limit] if limit is not None else requests
        knobs = (
            StoreConfig.from_dict(yaml.safe_load(store_config.read_text()) or {}) if store_config else None
        )
        config = ReplayConfig(
            store_kind=store,
            profile=get_profile(profile, scale),
            device=get_device_profile(device),
            page_size=page_size,
            budget_bytes=parse_bytes(budget_bytes) if budget_bytes is not None else None,
            memory_tier_bytes=parse_bytes(memory_bytes),
            host_ram_bytes=parse_bytes(host_ram_bytes) if host_ram_bytes is not None else None,
            servers=servers,
            target_utilization=target_utilization,
            backup_queue_pages=backup_queue_pages,
            clock=clock,
            prefetch=prefetch,
            prefetch_timeout_s=prefetch_timeout,
            write_policy=write_policy,
            write_back_hits=write_back_hits,
            blocking_writes=blocking_writes,
            pace=pace,
            window_requests=window,
            seed=seed,
        )
        if config.host_ram_bytes is not None:
            check_store_ram(store, knobs or StoreConfig(), config.budget_bytes, config.host_ram_bytes)
    except (ValueError, TypeError) as error:
        raise typer.BadParameter(str(error)) from error
    columns = (
        TextColumn("[bold]replay"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("replay", total=len(requests), status="")

        def on_window(metrics: WindowMetrics) -> None:
            progress.update(
                task,
                advance=metrics.requests,
                status=f"hit {metrics.hit_token_ratio:.1%}  ttft {metrics.mean_ttft_s * 1e3:.1f} ms",
            )

        result = replay(
            requests, config, out_dir=out, store_config=knobs, path=store_path, on_window=on_window
        )
    console.print(summary_table(result.summary))
    console.print(f"wrote {out / SUMMARY_JSON} and the per-request and per-window tables beside it")


def summary_table(summary: ReplaySummary) -> Table:
    """The headline figures of a replay, then one row per phase."""
    table = Table(title=f"replay on {summary.store_kind} ({summary.clock} clock)")
    for column in ("phase", "requests", "hit ratio", "ideal", "mean TTFT ms", "p50 ms", "p99 ms"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    rows = [("all", summary.overall), *sorted(summary.phases.items())]
    for name, row in rows:
        table.add_row(
            name,
            str(row.requests),
            f"{row.hit_token_ratio:.3f}",
            f"{row.ideal_hit_token_ratio:.3f}",
            f"{row.mean_ttft_s * 1e3:.2f}",
            f"{row.p50_ttft_s * 1e3:.2f}",
            f"{row.p99_ttft_s * 1e3:.2f}",
        )
    clocks, engine = summary.clocks, summary.engine
    table.caption = (
        f"backup pages late {summary.backup_late_pages}, dropped {summary.backup_dropped_pages}, "
        f"refused by a full host pool {summary.backup_host_full_pages}; "
        f"GPU {summary.gpu_utilization:.1%} / disk {summary.disk_utilization:.1%} busy; host RAM "
        f"{summary.host_ram_bytes} B of which store {summary.store_ram_bytes} B; writer dropped pages "
        f"{summary.dropped_pages}, evicted {summary.evicted_pages}; I/O s counters "
        f"{clocks['io_s_counters']:.3f} / measured {clocks['io_s_measured']:.3f}; engine overhead "
        f"{engine['overhead_s']:.2f} s ({engine['overhead_fraction']:.1%} of {engine['wall_s']:.2f} s wall); "
        f"mean queue / load / prefill ms {summary.mean_queue_s * 1e3:.2f} / "
        f"{summary.mean_load_s * 1e3:.2f} / {summary.mean_prefill_s * 1e3:.2f}"
    )
    return table
