"""``kvtune bench stress``: the command line of :mod:`experiments.stress`."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from experiments.options import HELP_STORE_KINDS, parse_store_kinds_option

app = typer.Typer()
MiB = 1 << 20


@app.command("stress")
def stress(
    kind: Annotated[str, typer.Option(help=f"Store kind: {HELP_STORE_KINDS}.")] = "lsm",
    threads: Annotated[int, typer.Option(min=1, help="Threads running the operation mix.")] = 8,
    minutes: Annotated[float, typer.Option(min=0.01, help="How long the load runs.")] = 10.0,
    budget_mib: Annotated[int, typer.Option(min=1, help="The store's byte budget, in MiB.")] = 32,
    knob_interval: Annotated[float, typer.Option(min=0.1, help="Seconds between live knob changes.")] = 3.0,
    sample_interval: Annotated[float, typer.Option(min=0.1, help="Seconds between samples.")] = 10.0,
    workdir: Annotated[Path | None, typer.Option(help="Where the store lives (default: a temp dir).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the prompts and the operation mix.")] = 0,
) -> None:
    """Mixed put/probe/get/put_async/evict on 8 threads under a budget with live knob changes; every read
    is verified. Exits 1 on any error or wrong tensor."""
    from experiments.stress import StressConfig, run_stress

    if parse_store_kinds_option(kind, "--kind") != (kind,):
        raise typer.BadParameter(f"--kind: name one store kind, got {kind!r}")
    base = workdir or Path(tempfile.mkdtemp(prefix="kvtune-stress-"))
    path = base / kind
    if path.exists():
        raise typer.BadParameter(f"{path} exists: pass an empty --workdir (the run starts from no store)")
    config = StressConfig(
        kind=kind,
        path=path,
        threads=threads,
        seconds=minutes * 60,
        budget_bytes=budget_mib * MiB,
        knob_interval_s=knob_interval,
        sample_interval_s=sample_interval,
        seed=seed,
    )
    try:
        report = run_stress(config)
    finally:
        if workdir is None:
            shutil.rmtree(base, ignore_errors=True)
    console = Console()
    table = Table(title=f"stress: {kind}, {threads} threads, budget {budget_mib} MiB")
    columns = ("t (s)", "ops/s", "errors", "wrong tensors", "RSS (MiB)", "disk (MiB)", "disk/budget")
    for column in (*columns, "stall s", "evicted", "slowest put s"):
        table.add_column(column, justify="right")
    for sample in report.samples:
        table.add_row(
            f"{sample.elapsed_s:.0f}",
            f"{sample.ops_per_s:.0f}",
            str(sample.errors),
            str(sample.wrong_tensors),
            f"{sample.rss_bytes / MiB:.0f}",
            f"{sample.disk_bytes / MiB:.1f}",
            f"{sample.disk_bytes / config.budget_bytes:.2f}",
            f"{sample.stall_s:.2f}",
            str(sample.evicted_pages),
            f"{sample.slowest_put_s:.2f}",
        )
    console.print(table)
    console.print(
        f"operations {report.ops}; misses between probe and get {report.misses}; knob changes "
        f"{report.knob_changes}; dropped pages {report.dropped_pages}; evicted pages {report.evicted_pages}"
    )
    console.print(f"write stalls {report.stall_s:.2f} s; put p99 {report.put_p99_s * 1e3:.1f} ms")
    console.print(f"errors {report.errors}, wrong tensors {report.wrong_tensors}")
    for message in report.error_messages:
        console.print(f"  {message}")
    if not report.ok:
        raise typer.Exit(1)
