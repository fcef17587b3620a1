"""``kvtune bench adversarial``: the command line of :mod:`experiments.adversarial`."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from experiments.options import HELP_STORE_KINDS

app = typer.Typer()
MiB = 1 << 20


@app.command("adversarial")
def adversarial(
    kind: Annotated[str, typer.Option(help=f"Store kind: {HELP_STORE_KINDS}.")] = "lsm",
    threads: Annotated[int, typer.Option(min=1, help="Threads loading the store.")] = 4,
    minutes: Annotated[float, typer.Option(min=0.01, help="How long each run lasts.")] = 2.0,
    budget_mib: Annotated[int, typer.Option(min=1, help="The store's byte budget, in MiB.")] = 32,
    interval: Annotated[float, typer.Option(min=0.05, help="Seconds per controller window.")] = 1.0,
    workdir: Annotated[Path | None, typer.Option(help="Where the stores live (default: a temp dir).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the load and the random corners.")] = 0,
) -> None:
    """An adversarial policy (every extreme of the action space, NaN, alternating extremes every window)
    drives a loaded store through the runtime controller, with its guards and with only the knob ranges.
    Exits 1 on any escaped error, failed operation or wrong tensor."""
    from agents.controller import Guards
    from experiments.adversarial import UNGUARDED, run_adversarial
    from experiments.stress import StressConfig
    from store import STORE_KINDS

    if kind not in STORE_KINDS:
        raise typer.BadParameter(f"unknown kind {kind!r}; valid kinds: {', '.join(STORE_KINDS)}")
    base = workdir or Path(tempfile.mkdtemp(prefix="kvtune-adversarial-"))
    reports = {}
    try:
        for name, guards in (("guarded", Guards()), ("ranges only", UNGUARDED)):
            path = base / f"{kind}-{name.replace(' ', '-')}"
            if path.exists():
                raise typer.BadParameter(
                    f"{path} exists: pass an empty --workdir (each run starts from no store)"
                )
            config = StressConfig(
                kind=kind,
                path=path,
                threads=threads,
                seconds=minutes * 60,
                budget_bytes=budget_mib * MiB,
                sample_interval_s=min(10.0, minutes * 6),
                seed=seed,
            )
            reports[name] = run_adversarial(config, guards, interval)
    finally:
        if workdir is None:
            shutil.rmtree(base, ignore_errors=True)
    table = Table(
        title=f"adversarial policy: {kind}, {threads} threads, budget {budget_mib} MiB, {interval} s windows"
    )
    columns = ("controller", "windows", "applied", "ops/s min-max", "stall s (share)", "max window stall")
    tail = ("put p99 ms", "disk/budget max", "clamped", "escaped", "errors", "wrong tensors")
    for column in (*columns, *tail):
        table.add_column(column, justify="right")
    for name, report in reports.items():
        rates = [sample.ops_per_s for sample in report.stress.samples]
        table.add_row(
            name,
            str(report.windows),
            str(report.applied_changes),
            f"{min(rates, default=0):.0f}-{max(rates, default=0):.0f}",
            f"{report.stress.stall_s:.2f} ({report.stall_fraction:.3f})",
            f"{report.max_window_stall_fraction:.3f}",
            f"{report.stress.put_p99_s * 1e3:.1f}",
            f"{report.max_disk_over_budget:.2f}",
            str(report.stress.knobs_clamped),
            str(len(report.escaped_errors)),
            str(report.stress.errors),
            str(report.stress.wrong_tensors),
        )
    console = Console()
    console.print(table)
    for name, report in reports.items():
        console.print(f"{name}: guards fired {report.guards_fired}")
        for message in [*report.escaped_errors, *report.stress.error_messages][:10]:
            console.print(f"  {message}")
    if not all(not report.escaped_errors and report.stress.ok for report in reports.values()):
        raise typer.Exit(1)
