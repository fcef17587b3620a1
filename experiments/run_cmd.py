"""``kvtune run``: a quick end-to-end run on embedded defaults (RocksDB, SQLite, local MLflow).

It runs, in this process and through the same library functions as the documented commands: a replay of
the staged workload on every store kind, a short PPO training run, a small static Optuna study, and one
evaluation of default, heuristic, the study's best static config and the learned policy on the same
workload and seed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

logger = logging.getLogger(__name__)
console = Console()
app = typer.Typer()

QUICK_WORKLOAD_OPTIONS = {"phase_requests": 8}
QUICK_WORKLOAD = "staged"


@app.command("run")
def run_command(
    out: Annotated[Path, typer.Option("--out", help="Run directory (one folder per step).")] = Path(
        "runs/quick"
    ),
    seed: Annotated[int, typer.Option("--seed")] = 0,
    timesteps: Annotated[int, typer.Option("--timesteps", help="PPO training steps.")] = 128,
    trials: Annotated[int, typer.Option("--trials", help="Static-study trials.")] = 6,
) -> None:
    """Replay, train, study and evaluate end to end on small defaults (a few minutes on 2 cores)."""
    from agents.registry import PolicySpec
    from agents.studies import (
        BEST_STATIC_FILE,
        StaticObjective,
        StudyOptions,
        default_storage,
        run_study,
        static_search_space,
    )
    from agents.tracking import default_tracking_uri
    from agents.training import TrainConfig
    from env import EnvConfig
    from experiments.jobs import evaluate_job, train_job
    from experiments.replay_cmd import summary_table
    from experiments.train_cmd import results_table
    from store import STORE_KINDS
    from workloads import ReplayConfig, make_workload, replay

    requests = make_workload(QUICK_WORKLOAD, seed=seed, **QUICK_WORKLOAD_OPTIONS)
    for kind in STORE_KINDS:
        console.rule(f"[bold]replay on {kind}[/bold]")
        result = replay(requests, ReplayConfig(store_kind=kind, seed=seed), out_dir=out / f"replay-{kind}")
        console.print(summary_table(result.summary))

    environment = EnvConfig(workload=QUICK_WORKLOAD, workload_options=dict(QUICK_WORKLOAD_OPTIONS))
    console.rule("[bold]train PPO[/bold]")
    train = TrainConfig(
        algo="ppo",
        timesteps=timesteps,
        n_envs=2,
        eval_every=max(timesteps // 2, 2),
        seed=seed,
        env=environment,
    )
    trained = train_job(train, out / "train", f"train-ppo-{QUICK_WORKLOAD}")
    console.print(f"policy bundle: {trained.bundle}")

    console.rule("[bold]static study[/bold]")
    study_dir = out / "study"
    study = run_study(
        StaticObjective(environment, static_search_space(environment.action_knobs), seed),
        StudyOptions(
            study_name="quick-static",
            storage=default_storage(study_dir),
            n_trials=trials,
            out=study_dir.resolve(),
            tracking_uri=default_tracking_uri(study_dir),
        ),
    )
    console.print(f"study: best trial {study.best_number}, objective {study.best_value}")

    console.rule("[bold]evaluate[/bold]")
    specs = [
        PolicySpec("default"),
        PolicySpec("heuristic"),
        PolicySpec("static", study_dir / BEST_STATIC_FILE),
        PolicySpec("learned", trained.bundle),
    ]
    evaluated = evaluate_job(specs, environment, seed, out / "evaluate", f"evaluate-{QUICK_WORKLOAD}")
    console.print(results_table(evaluated.results))
    console.rule("done")
    console.print(
        f"everything is under {out}; MLflow: mlflow ui --backend-store-uri sqlite:///{out}/train/mlflow.db"
    )
