"""``kvtune train``, ``kvtune evaluate`` and ``kvtune sweep``: every run is an MLflow run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from experiments.options import EnvOptions, TrackingOptions, with_option_groups

if TYPE_CHECKING:
    from agents.evaluation import EpisodeResult
    from agents.sweep import KnobSpread

console = Console()
app = typer.Typer()


@app.command("train")
@with_option_groups
def train_command(
    env: EnvOptions,
    tracking: TrackingOptions,
    algo: Annotated[str, typer.Option("--algo", help="ppo | sac | a2c | dqn.")] = "ppo",
    timesteps: Annotated[
        int, typer.Option("--timesteps", help="Environment steps (windows) to train for.")
    ] = 256,
    n_envs: Annotated[
        int, typer.Option("--n-envs", help="Vectorised environments, each with its own store.")
    ] = 2,
    eval_every: Annotated[
        int, typer.Option("--eval-every", help="Steps between evaluations against default.")
    ] = 128,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    out: Annotated[Path, typer.Option("--out", help="Run directory.")] = Path("runs/train"),
) -> None:
    """Train a Stable-Baselines3 agent to tune the store; save a policy bundle under OUT/policy."""
    from agents.training import TrainConfig
    from experiments.jobs import train_job

    environment = env.to_config()
    try:
        config = TrainConfig(
            algo=algo, timesteps=timesteps, n_envs=n_envs, seed=seed, eval_every=eval_every, env=environment
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    outcome = train_job(config, out, f"train-{algo}-{env.label}", tracking.tracking_uri)
    console.print(
        f"policy bundle: [bold]{outcome.bundle}[/bold]  (MLflow run {outcome.run_id}, {outcome.tracking_uri})"
    )


def results_table(results: list[EpisodeResult]) -> Table:
    """Policies side by side: requests, hit ratio, TTFT, dropped pages, reward."""
    table = Table(title="policies on the same workload and seed")
    for column in ("policy", "requests", "hit ratio", "mean TTFT s", "p99 TTFT s", "dropped", "reward"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(
            r.policy,
            str(r.requests),
            f"{r.hit_token_ratio:.3f}",
            f"{r.mean_ttft_s:.4f}",
            f"{r.p99_ttft_s:.4f}",
            str(r.dropped_pages),
            f"{r.total_reward:.3f}",
        )
    return table


@app.command("evaluate")
@with_option_groups
def evaluate_command(
    env: EnvOptions,
    tracking: TrackingOptions,
    policy: Annotated[
        list[str], typer.Option("--policy", help="default | heuristic | static:FILE | BUNDLE (repeatable).")
    ] = ["default", "heuristic"],  # noqa: B006  (typer copies defaults; never mutated)
    seed: Annotated[int, typer.Option("--seed")] = 0,
    out: Annotated[Path, typer.Option("--out", help="Run directory.")] = Path("runs/evaluate"),
) -> None:
    """Run several policies on the same workload and seed; print, plot and log a side-by-side table."""
    from agents.registry import parse_policy_spec
    from experiments.jobs import evaluate_job

    environment = env.to_config()
    try:
        specs = [parse_policy_spec(text) for text in policy]
        outcome = evaluate_job(specs, environment, seed, out, f"evaluate-{env.label}", tracking.tracking_uri)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    console.print(results_table(outcome.results))
    console.print(f"table: {outcome.table}  plot: {outcome.plot}")


def spread_table(spreads: list[KnobSpread], label: str, default_mean_ttft_s: float) -> Table:
    """Knobs by how far they move mean TTFT, the best and worst value of each."""
    table = Table(title=f"knob spread on {label} (default mean TTFT {default_mean_ttft_s:.4f} s)")
    for column in ("knob", "spread", "best value", "best mean TTFT s", "worst mean TTFT s"):
        table.add_column(column, justify="right")
    for s in spreads:
        table.add_row(
            s.knob,
            f"{s.spread:.1%}",
            str(s.best_value),
            f"{s.best_mean_ttft_s:.4f}",
            f"{s.worst_mean_ttft_s:.4f}",
        )
    return table


@app.command("sweep")
@with_option_groups
def sweep_command(
    env: EnvOptions,
    tracking: TrackingOptions,
    knob: Annotated[
        list[str], typer.Option("--knob", help="Knobs to sweep (default: every action knob).")
    ] = [],  # noqa: B006
    points: Annotated[
        int, typer.Option("--points", help="Values per numeric knob (choices: all of them).")
    ] = 4,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    out: Annotated[Path, typer.Option("--out", help="Run directory.")] = Path("runs/sweep"),
) -> None:
    """For each knob, the objective's spread across its range (others at defaults): which knobs matter."""
    from experiments.jobs import sweep_job

    environment = env.to_config()
    try:
        outcome = sweep_job(environment, seed, points, knob, out, f"sweep-{env.label}", tracking.tracking_uri)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    console.print(spread_table(outcome.spreads, env.label, outcome.default.mean_ttft_s))
    console.print(f"table: {outcome.table}  plot: {outcome.plot}")
