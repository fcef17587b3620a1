"""``kvtune run``: what the project is for, in a few minutes on 2 cores (embedded RocksDB, SQLite, MLflow).

Two steps, each through the library functions of the documented commands and each an MLflow run: the
store benchmark's small-pages scenario (lsm against one file per page, where files hurt), then the
defaults, a short study's best static config and a learned policy on a workload where tuning matters
(backups falling behind the arrivals, a disk budget a quarter of the working set). It ends with one
summary table and one PNG.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

logger = logging.getLogger(__name__)
console = Console()
app = typer.Typer()


@app.command("run")
def run_command(
    out: Annotated[Path, typer.Option("--out", help="Run directory (one folder per step).")] = Path(
        "runs/quick"
    ),
    seed: Annotated[int, typer.Option("--seed")] = 0,
    tiny: Annotated[
        bool, typer.Option("--tiny", help="Smallest sizes (seconds, for tests): the figures mean nothing.")
    ] = False,
) -> None:
    """The LSM store against one file per page, and tuned/learned policies against the defaults."""
    from experiments.quick import QuickSize, row_cells, run_quick

    result = run_quick(out, QuickSize.named(tiny), seed)
    table = Table(title="kvtune run: summary")
    for column in ("step", "metric", "subject", "baseline", "ratio", "verdict"):
        table.add_column(column)
    for row in result.rows:
        table.add_row(*row_cells(row))
    console.print(table)
    for note in result.notes:
        console.print(note)
    console.print(f"learned policy: {result.learned_source}")
    console.print(f"summary plot: {result.plot}; store benchmark report: {result.files['store']}/report.md")
    console.print(f"MLflow: mlflow ui --backend-store-uri sqlite:///{out.resolve()}/mlflow.db")
