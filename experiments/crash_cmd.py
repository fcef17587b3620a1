"""``kvtune bench crash``: the command line of :mod:`experiments.crash`."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer()


@app.command("crash")
def crash(
    rounds: Annotated[int, typer.Option(min=1, help="SIGKILL rounds per kind (WAL on).")] = 100,
    kinds: Annotated[
        str, typer.Option(help="Comma-separated disk kinds (see `kvtune replay --help` for the kinds).")
    ] = "lsm,file,applog",
    wal_off_rounds: Annotated[int, typer.Option(min=0, help="Extra lsm rounds with the WAL off.")] = 30,
    workdir: Annotated[Path | None, typer.Option(help="Where the stores live (default: a temp dir).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the kill times.")] = 0,
) -> None:
    """Kill a writing process at random moments (while writing, reclaiming under a budget, applying a
    knob change), reopen, verify. Exits 1 on any wrong tensor or lost acknowledged page."""
    from experiments.crash import CrashConfig, run_crash_rounds
    from store import DISK_STORE_KINDS

    disk_kinds = list(DISK_STORE_KINDS)
    chosen = [kind.strip() for kind in kinds.split(",") if kind.strip()]
    unknown = [kind for kind in chosen if kind not in disk_kinds]
    if unknown or not chosen:
        raise typer.BadParameter(
            f"unknown kinds {unknown or kinds!r}; valid disk kinds: {', '.join(disk_kinds)}"
        )
    base = workdir or Path(tempfile.mkdtemp(prefix="kvtune-crash-"))
    runs = [(kind, False, rounds) for kind in chosen]
    if wal_off_rounds and "lsm" in chosen:
        runs.append(("lsm", True, wal_off_rounds))
    reports = []
    try:
        for kind, disable_wal, count in runs:
            path = base / (f"{kind}-wal-off" if disable_wal else kind)
            if path.exists():
                raise typer.BadParameter(
                    f"{path} exists: pass an empty --workdir (the rounds start from no store)"
                )
            config = CrashConfig(kind=kind, path=path, rounds=count, disable_wal=disable_wal, seed=seed)
            reports.append(run_crash_rounds(config))
    finally:
        if workdir is None:
            shutil.rmtree(base, ignore_errors=True)
    table = Table(title="crash rounds (SIGKILL, reopen, verify)")
    columns = (
        "kind",
        "WAL",
        "rounds plain/knobs/reclaim",
        "prompts acked",
        "kills in apply",
        "pages read back",
    )
    for column in (*columns, "wrong tensors", "lost durable pages", "page count mismatches"):
        table.add_column(column, justify="right")
    for report in reports:
        by_mode = "/".join(str(count) for count in report.rounds_by_mode.values())
        table.add_row(
            report.kind,
            "off" if report.disable_wal else "on",
            f"{report.rounds} ({by_mode})",
            str(report.prompts_acknowledged),
            str(report.kills_during_apply),
            str(report.pages_read_back),
            str(report.wrong_tensors),
            str(report.lost_durable_pages),
            str(report.page_count_mismatches),
        )
    Console().print(table)
    if not all(report.ok for report in reports):
        raise typer.Exit(1)
