"""``kvtune bench startup``: how long ``kvtune --help`` takes, the median of several fresh processes."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer()
TARGET_S = 1.5


def time_help(runs: int) -> list[float]:
    """Wall seconds of ``runs`` fresh ``python -m experiments.cli --help`` processes, one after another."""
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "experiments.cli", "--help"], check=True, capture_output=True)
        seconds.append(time.perf_counter() - started)
    return seconds


@app.command("startup")
def startup_command(
    runs: Annotated[int, typer.Option("--runs", min=1, help="Fresh processes to time.")] = 7,
) -> None:
    """Time `kvtune --help` in fresh processes: the median against the 1.5 s target."""
    seconds = time_help(runs)
    median = statistics.median(seconds)
    verdict = "PASS" if median < TARGET_S else "MISS"
    Console().print(
        f"kvtune --help: median {median:.3f} s over {runs} runs (min {min(seconds):.3f}, max "
        f"{max(seconds):.3f}); target < {TARGET_S} s: {verdict}"
    )
