"""``kvtune bench startup``: how long ``kvtune --help`` takes, the median of several fresh processes."""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import time
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer()
TARGET_S = 1.5


def time_help(runs: int) -> tuple[list[float], list[float]]:
    """Wall and CPU (user + system) seconds of ``runs`` fresh ``python -m experiments.cli --help``
    processes, one after another. CPU time is what a quiet machine's wall time would be; on a shared
    one the wall time also holds the time spent waiting for a core."""
    wall, cpu = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "experiments.cli", "--help"], check=True, capture_output=True)
        wall.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return wall, cpu


@app.command("startup")
def startup_command(
    runs: Annotated[int, typer.Option("--runs", min=1, help="Fresh processes to time.")] = 7,
) -> None:
    """Time `kvtune --help` in fresh processes: the median against the 1.5 s target."""
    wall, cpu = time_help(runs)
    median = statistics.median(wall)
    verdict = "PASS" if median < TARGET_S else "MISS"
    Console().print(
        f"kvtune --help over {runs} runs: wall median {median:.3f} s (min {min(wall):.3f}, max "
        f"{max(wall):.3f}), CPU median {statistics.median(cpu):.3f} s; target wall < {TARGET_S} s: {verdict}"
    )
