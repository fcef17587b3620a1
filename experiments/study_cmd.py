"""``kvtune study static`` and ``kvtune study agent``: Optuna studies, in one process or many."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from experiments.options import EnvOptions, StudyRunOptions, TrackingOptions, with_option_groups

if TYPE_CHECKING:
    from agents.studies import StudyObjective, StudyOptions, StudyResult

console = Console()
app = typer.Typer()
study_app = typer.Typer(
    help="Optuna studies: the best static store config for a workload, or agent hyperparameters.",
    no_args_is_help=True,
)
app.add_typer(study_app, name="study")


def _options(run: StudyRunOptions, out: Path, tracking: TrackingOptions, warmup_steps: int) -> StudyOptions:
    from agents.studies import StudyOptions, default_storage
    from agents.tracking import default_tracking_uri

    return StudyOptions(
        study_name=run.study_name,
        storage=run.storage or default_storage(out),
        n_trials=run.n_trials,
        out=out.resolve(),
        tracking_uri=tracking.tracking_uri or default_tracking_uri(out),
        workers=run.workers,
        timeout_s=run.timeout,
        startup_trials=run.startup_trials,
        warmup_steps=warmup_steps,
    )


def _run(objective: StudyObjective, options: StudyOptions) -> StudyResult:
    from agents.studies import run_study

    try:
        return run_study(objective, options)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    except RuntimeError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from error


def _report(result: StudyResult, defaults: dict[str, object]) -> None:
    states = ", ".join(f"{count} {state.lower()}" for state, count in result.states.items())
    console.print(
        f"study [bold]{result.study_name}[/bold]: {result.trials_run} trial(s) in {result.elapsed_s:.1f} s "
        f"({result.trials_per_minute:.2f} per minute); whole study: {states}"
    )
    if result.best_number is None:
        console.print("no completed trial yet: nothing exported")
        return
    table = Table(title=f"best trial {result.best_number}: objective {result.best_value:.5f}")
    for column in ("parameter", "best", "default"):
        table.add_column(column, justify="right")
    for name, value in result.best_params.items():
        table.add_row(name, str(value), str(defaults.get(name, "")))
    console.print(table)
    if "mean_ttft_s" in result.best_attrs:
        console.print(f"best trial's mean TTFT: {float(result.best_attrs['mean_ttft_s']) * 1e3:.3f} ms")
    if result.exported is not None:
        console.print(f"exported: [bold]{result.exported}[/bold]")
    console.print(f"MLflow parent run {result.parent_run_id}; dashboard: optuna-dashboard {result.storage}")


@study_app.command("static")
@with_option_groups
def static_command(
    env: EnvOptions,
    run: StudyRunOptions,
    tracking: TrackingOptions,
    out: Annotated[Path, typer.Option("--out", help="Run directory.")] = Path("runs/study-static"),
    space: Annotated[
        Path | None,
        typer.Option(
            "--space", help="YAML overriding the search space: knob: {low: L, high: H} or {choices: [...]}."
        ),
    ] = None,
    warmup_steps: Annotated[
        int, typer.Option("--warmup-steps", help="Windows a trial replays before it may be pruned.")
    ] = 2,
) -> None:
    """Search the best static StoreConfig for a workload; export it as OUT/best_static.json."""
    from agents.studies import StaticObjective, load_space_file, static_search_space
    from store import StoreConfig

    environment = env.to_config()
    try:
        overrides = load_space_file(space) if space is not None else None
        search_space = static_search_space(
            environment.action_knobs, overrides, source=str(space or "search space")
        )
        objective = StaticObjective(environment, search_space, run.seed)
        options = _options(run, out, tracking, warmup_steps)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    result = _run(objective, options)
    _report(result, StoreConfig().to_dict())


@study_app.command("agent")
@with_option_groups
def agent_command(
    env: EnvOptions,
    run: StudyRunOptions,
    tracking: TrackingOptions,
    algo: Annotated[str, typer.Option("--algo", help="ppo | sac.")] = "ppo",
    out: Annotated[Path, typer.Option("--out", help="Run directory.")] = Path("runs/study-agent"),
    timesteps: Annotated[
        int, typer.Option("--timesteps", help="Environment steps each trial trains for.")
    ] = 128,
    eval_every: Annotated[
        int, typer.Option("--eval-every", help="Steps between a trial's evaluations (its reports).")
    ] = 32,
    n_envs: Annotated[int, typer.Option("--n-envs", help="Vectorised environments per trial.")] = 1,
    warmup_steps: Annotated[
        int, typer.Option("--warmup-steps", help="Evaluations before a trial may be pruned.")
    ] = 1,
) -> None:
    """Search PPO/SAC hyperparameters with short training runs; copy the best policy to OUT/best_policy."""
    from agents.studies import AgentObjective, agent_search_space
    from agents.training import TrainConfig

    environment = env.to_config()
    try:
        train = TrainConfig(
            algo=algo,
            timesteps=timesteps,
            n_envs=n_envs,
            seed=run.seed,
            eval_every=eval_every,
            env=environment,
        )
        objective = AgentObjective(train, agent_search_space(algo))
        options = _options(run, out, tracking, warmup_steps)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    result = _run(objective, options)
    _report(result, {name: getattr(TrainConfig(), name) for name in objective.space.names})
