"""``kvtune replay``: replay a trace or a generated workload against a store and report hits and TTFT."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from store import STORE_KINDS, StoreConfig
from workloads import (
    CLOCKS,
    MODEL_PROFILES,
    PREFETCH_POLICIES,
    WORKLOADS,
    WRITE_POLICIES,
    ReplayConfig,
    WindowMetrics,
    get_profile,
    load_mooncake,
    make_workload,
    replay,
)
from workloads.replay import SUMMARY_JSON

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_bytes(text: str) -> int:
    """``"64MiB"`` -> 67108864; plain integers, SI (kB, MB, GB) and binary (KiB, MiB, GiB) units."""
    match = _SIZE.match(text)
    if not match or match.group(2).lower() not in _UNITS:
        raise typer.BadParameter(f"{text!r} is not a size: write e.g. 1048576, 512MiB or 2GB")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def parse_params(items: list[str]) -> dict[str, Any]:
    """``["phase_requests=20", "targets=[0.1, 0.7]"]`` -> options, values read as YAML."""
    options: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise typer.BadParameter(f"--param {item!r} must look like name=value")
        parsed = yaml.safe_load(value)
        options[name.strip()] = tuple(parsed) if isinstance(parsed, list) else parsed
    return options


def _choice(name: str, value: str, valid: tuple[str, ...]) -> str:
    if value not in valid:
        raise typer.BadParameter(f"{value!r} is not valid; choose one of {', '.join(valid)}", param_hint=name)
    return value


def replay_command(
    trace: Path | None = typer.Option(None, "--trace", help="A Mooncake-format JSONL trace to replay."),
    workload: str | None = typer.Option(
        None, "--workload", help=f"A generated workload: {', '.join(w for w in WORKLOADS if w != 'mooncake')}."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Replay only the first N requests."),
    store: str = typer.Option("lsm", "--store", help=f"Store kind: {', '.join(STORE_KINDS)}."),
    budget_bytes: str | None = typer.Option(
        None, "--budget-bytes", help="Disk budget of the store, e.g. 2GiB (default: unlimited)."),
    profile: str = typer.Option("tiny", "--profile", help=f"Model profile: {', '.join(MODEL_PROFILES)}."),
    scale: int = typer.Option(1, "--scale", min=1, help="Shrink the profile's KV tensors by this factor."),
    out: Path = typer.Option(..., "--out", help="Directory for requests.csv, windows.csv and summary.json."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the generated workload and the KV tensors."),
    param: list[str] = typer.Option([], "--param", help="A workload option name=value (repeatable)."),
    memory_bytes: str = typer.Option("64MiB", "--memory-bytes", help="Host-memory tier in front of the store."),
    page_size: int = typer.Option(64, "--page-size", min=1, help="Tokens per page."),
    clock: str = typer.Option("counters", "--clock", help=f"I/O clock: {', '.join(CLOCKS)}."),
    prefetch: str = typer.Option("wait_complete", "--prefetch", help=f"{', '.join(PREFETCH_POLICIES)}."),
    prefetch_timeout: float = typer.Option(0.1, "--prefetch-timeout", help="Deadline (s) of --prefetch timeout."),
    write_policy: str = typer.Option("write_through", "--write-policy", help=f"{', '.join(WRITE_POLICIES)}."),
    write_back_hits: int = typer.Option(1, "--write-back-hits", min=0, help="Hits before write_back writes."),
    blocking_writes: bool = typer.Option(False, "--blocking-writes", help="Write synchronously."),
    window: int = typer.Option(64, "--window", min=1, help="Requests per window."),
    pace: float | None = typer.Option(None, "--pace", help="Trace seconds per wall second (default: flat out)."),
    time_scale: float = typer.Option(1.0, "--time-scale", help="Multiply a trace's arrival times."),
    max_input_tokens: int | None = typer.Option(None, "--max-input-tokens", min=1, help="Cap prompt lengths."),
    store_config: Path | None = typer.Option(
        None, "--store-config", help="A YAML or JSON mapping of store knobs (see store.StoreConfig)."),
    store_path: Path | None = typer.Option(
        None, "--store-path", help="Directory of the store (default: a temporary one, removed after)."),
) -> None:
    """Replay a workload against a store: hit ratio, TTFT, I/O on both clocks, per request and window."""
    if (trace is None) == (workload is None):
        raise typer.BadParameter("pass exactly one of --trace FILE or --workload NAME")
    _choice("--store", store, STORE_KINDS)
    _choice("--clock", clock, CLOCKS)
    _choice("--prefetch", prefetch, PREFETCH_POLICIES)
    _choice("--write-policy", write_policy, WRITE_POLICIES)
    console = Console()
    try:
        options = parse_params(param)
        if trace is not None:
            requests = load_mooncake(trace, limit=limit, time_scale=time_scale,
                                     max_input_tokens=max_input_tokens, **options)
        else:
            requests = make_workload(workload or "", seed=seed, **options)
            requests = requests[:limit] if limit is not None else requests
        knobs = StoreConfig.from_dict(yaml.safe_load(store_config.read_text()) or {}) if store_config else None
        config = ReplayConfig(
            store_kind=store,
            profile=get_profile(profile, scale),
            page_size=page_size,
            budget_bytes=parse_bytes(budget_bytes) if budget_bytes is not None else None,
            memory_tier_bytes=parse_bytes(memory_bytes),
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
    except (ValueError, TypeError) as error:
        raise typer.BadParameter(str(error)) from error
    columns = (TextColumn("[bold]replay"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[status]}"))
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("replay", total=len(requests), status="")

        def on_window(metrics: WindowMetrics) -> None:
            progress.update(task, advance=metrics.requests,
                            status=f"hit {metrics.hit_token_ratio:.1%}  ttft {metrics.mean_ttft_s * 1e3:.1f} ms")

        result = replay(requests, config, out, store_config=knobs, path=store_path, on_window=on_window)
    console.print(summary_table(result.summary))
    console.print(f"wrote {out / SUMMARY_JSON} and the per-request and per-window tables beside it")


def summary_table(summary: dict[str, Any]) -> Table:
    """The headline figures of a replay, then one row per phase."""
    table = Table(title=f"replay on {summary['store_kind']} ({summary['clock']} clock)")
    for column in ("phase", "requests", "hit ratio", "ideal", "mean TTFT ms", "p50 ms", "p99 ms"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    rows = [("all", summary), *sorted(summary["phases"].items())]
    for name, row in rows:
        table.add_row(name, str(row["requests"]), f"{row['hit_token_ratio']:.3f}",
                      f"{row['ideal_hit_token_ratio']:.3f}", f"{row['mean_ttft_s'] * 1e3:.2f}",
                      f"{row['p50_ttft_s'] * 1e3:.2f}", f"{row['p99_ttft_s'] * 1e3:.2f}")
    clocks, engine = summary["clocks"], summary["engine"]
    table.caption = (
        f"dropped pages {summary['dropped_pages']}, evicted {summary['evicted_pages']}; I/O s counters "
        f"{clocks['io_s_counters']:.3f} / measured {clocks['io_s_measured']:.3f}; engine overhead "
        f"{engine['overhead_s']:.2f} s ({engine['overhead_fraction']:.1%} of {engine['wall_s']:.2f} s wall); "
        f"mean queue / load / prefill ms {summary['mean_queue_s'] * 1e3:.2f} / {summary['mean_load_s'] * 1e3:.2f}"
        f" / {summary['mean_prefill_s'] * 1e3:.2f}"
    )
    return table
