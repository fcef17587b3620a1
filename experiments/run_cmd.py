"""``kvtune run``: a quick end-to-end run on embedded defaults (RocksDB, SQLite, local MLflow).

It runs the documented commands in order, in this process: a replay of the staged workload on every
store kind, a short PPO training run, a small static Optuna study, and one evaluation of default,
heuristic, the study's best static config and the learned policy on the same workload and seed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.console import Console
from typer.main import get_command

logger = logging.getLogger(__name__)
console = Console()

QUICK_WORKLOAD = ["--param", "phase_requests=8"]


def run_command(
    out: Path = typer.Option(Path("runs/quick"), "--out", help="Run directory (one folder per step)."),
    seed: int = typer.Option(0, "--seed"),
    timesteps: int = typer.Option(128, "--timesteps", help="PPO training steps."),
    trials: int = typer.Option(6, "--trials", help="Static-study trials."),
) -> None:
    """Replay, train, study and evaluate end to end on small defaults (a few minutes on 2 cores)."""
    from experiments.cli import app

    cli = get_command(app)
    steps: list[tuple[str, list[str]]] = [
        *[
            (
                f"replay on {kind}",
                [
                    "replay",
                    "--workload",
                    "staged",
                    "--param",
                    "phase_requests=8",
                    "--store",
                    kind,
                    "--seed",
                    str(seed),
                    "--out",
                    str(out / f"replay-{kind}"),
                ],
            )
            for kind in ("memory", "file", "applog", "lsm")
        ],
        (
            "train PPO",
            [
                "train",
                "--algo",
                "ppo",
                "--timesteps",
                str(timesteps),
                "--n-envs",
                "2",
                "--eval-every",
                str(max(timesteps // 2, 2)),
                "--seed",
                str(seed),
                *QUICK_WORKLOAD,
                "--out",
                str(out / "train"),
            ],
        ),
        (
            "static study",
            [
                "study",
                "static",
                "--n-trials",
                str(trials),
                "--study-name",
                "quick-static",
                "--seed",
                str(seed),
                *QUICK_WORKLOAD,
                "--out",
                str(out / "study"),
            ],
        ),
        (
            "evaluate",
            [
                "evaluate",
                "--policy",
                "default",
                "--policy",
                "heuristic",
                "--policy",
                f"static:{out / 'study' / 'best_static.json'}",
                "--policy",
                str(out / "train" / "policy"),
                "--seed",
                str(seed),
                *QUICK_WORKLOAD,
                "--out",
                str(out / "evaluate"),
            ],
        ),
    ]
    for title, args in steps:
        console.rule(f"[bold]{title}[/bold]: kvtune {' '.join(args)}")
        cli.main(args, prog_name="kvtune", standalone_mode=False)
    console.rule("done")
    console.print(
        f"everything is under {out}; MLflow: mlflow ui --backend-store-uri sqlite:///{out}/train/mlflow.db"
    )
