"""``kvtune study static`` and ``kvtune study agent``: Optuna studies, in one process or many."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from agents.studies import (
    AgentObjective,
    StaticObjective,
    StudyObjective,
    StudyOptions,
    StudyResult,
    agent_search_space,
    default_storage,
    load_space_file,
    run_study,
    static_search_space,
)
from agents.tracking import default_tracking_uri
from agents.training import TrainConfig
from experiments.options import EnvOptionList, OptionList, TraceOption, WorkloadOption, env_config
from experiments.train_cmd import (
    BudgetOption,
    ClockOption,
    ProfileOption,
    StoreOption,
    TrackingOption,
    WindowOption,
)
from store import StoreConfig

console = Console()
study_app = typer.Typer(
    help="Optuna studies: the best static store config for a workload, or agent hyperparameters.",
    no_args_is_help=True,
)

NTrialsOption = typer.Option(
    ..., "--n-trials", help="Trials this command adds to the study (split on workers)."
)
StorageOption = typer.Option(
    None,
    "--storage",
    help="Optuna storage URL (default: sqlite:///OUT/optuna.db); PostgreSQL for many hosts.",
)
StudyNameOption = typer.Option(..., "--study-name", help="Study to create, or to resume if it exists.")
WorkersOption = typer.Option(1, "--workers", help="Worker processes sharing the study on this machine.")
SeedOption = typer.Option(0, "--seed", help="Seed of the workload every trial replays (and of the sampler).")
TimeoutOption = typer.Option(None, "--timeout", help="Seconds after which workers start no new trial.")
StartupOption = typer.Option(5, "--startup-trials", help="Completed trials before the median pruner acts.")
StaticOutOption = typer.Option(Path("runs/study-static"), "--out", help="Run directory.")
SpaceOption = typer.Option(
    None, "--space", help="YAML overriding the search space: knob: {low: L, high: H} or {choices: [...]}."
)
WarmupWindowsOption = typer.Option(
    2, "--warmup-steps", help="Windows a trial replays before it may be pruned."
)
AlgoOption = typer.Option("ppo", "--algo", help="ppo | sac.")
AgentOutOption = typer.Option(Path("runs/study-agent"), "--out", help="Run directory.")
TimestepsOption = typer.Option(128, "--timesteps", help="Environment steps each trial trains for.")
EvalEveryOption = typer.Option(32, "--eval-every", help="Steps between a trial's evaluations (its reports).")
NEnvsOption = typer.Option(1, "--n-envs", help="Vectorised environments per trial.")
WarmupEvaluationsOption = typer.Option(1, "--warmup-steps", help="Evaluations before a trial may be pruned.")


def _options(
    *,
    study_name: str,
    storage: str | None,
    n_trials: int,
    out: Path,
    tracking_uri: str | None,
    workers: int,
    timeout: float | None,
    startup_trials: int,
    warmup_steps: int,
) -> StudyOptions:
    return StudyOptions(
        study_name=study_name,
        storage=storage or default_storage(out),
        n_trials=n_trials,
        out=out.resolve(),
        tracking_uri=tracking_uri or default_tracking_uri(out),
        workers=workers,
        timeout_s=timeout,
        startup_trials=startup_trials,
        warmup_steps=warmup_steps,
    )


def _run(objective: StudyObjective, options: StudyOptions) -> StudyResult:
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
def static_command(
    *,
    workload: str = WorkloadOption,
    trace: Path | None = TraceOption,
    workload_option: list[str] = OptionList,
    env_option: list[str] = EnvOptionList,
    n_trials: int = NTrialsOption,
    storage: str | None = StorageOption,
    study_name: str = StudyNameOption,
    workers: int = WorkersOption,
    out: Path = StaticOutOption,
    seed: int = SeedOption,
    timeout: float | None = TimeoutOption,
    tracking_uri: str | None = TrackingOption,
    space: Path | None = SpaceOption,
    startup_trials: int = StartupOption,
    warmup_steps: int = WarmupWindowsOption,
    store: str = StoreOption,
    profile: str = ProfileOption,
    budget_bytes: int | None = BudgetOption,
    requests_per_window: int = WindowOption,
    clock: str = ClockOption,
) -> None:
    """Search the best static StoreConfig for a workload; export it as OUT/best_static.json."""
    environment = env_config(
        workload, trace, workload_option, store, profile, budget_bytes, requests_per_window, clock, env_option
    )
    try:
        overrides = load_space_file(space) if space is not None else None
        search_space = static_search_space(
            environment.action_knobs, overrides, source=str(space or "search space")
        )
        objective = StaticObjective(environment, search_space, seed)
        options = _options(
            study_name=study_name,
            storage=storage,
            n_trials=n_trials,
            out=out,
            tracking_uri=tracking_uri,
            workers=workers,
            timeout=timeout,
            startup_trials=startup_trials,
            warmup_steps=warmup_steps,
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    result = _run(objective, options)
    _report(result, StoreConfig().to_dict())


@study_app.command("agent")
def agent_command(
    *,
    algo: str = AlgoOption,
    workload: str = WorkloadOption,
    trace: Path | None = TraceOption,
    workload_option: list[str] = OptionList,
    env_option: list[str] = EnvOptionList,
    n_trials: int = NTrialsOption,
    storage: str | None = StorageOption,
    study_name: str = StudyNameOption,
    workers: int = WorkersOption,
    out: Path = AgentOutOption,
    seed: int = SeedOption,
    timeout: float | None = TimeoutOption,
    tracking_uri: str | None = TrackingOption,
    timesteps: int = TimestepsOption,
    eval_every: int = EvalEveryOption,
    n_envs: int = NEnvsOption,
    startup_trials: int = StartupOption,
    warmup_steps: int = WarmupEvaluationsOption,
    store: str = StoreOption,
    profile: str = ProfileOption,
    budget_bytes: int | None = BudgetOption,
    requests_per_window: int = WindowOption,
    clock: str = ClockOption,
) -> None:
    """Search PPO/SAC hyperparameters with short training runs; copy the best policy to OUT/best_policy."""
    environment = env_config(
        workload, trace, workload_option, store, profile, budget_bytes, requests_per_window, clock, env_option
    )
    try:
        train = TrainConfig(
            algo=algo, timesteps=timesteps, n_envs=n_envs, seed=seed, eval_every=eval_every, env=environment
        )
        objective = AgentObjective(train, agent_search_space(algo))
        options = _options(
            study_name=study_name,
            storage=storage,
            n_trials=n_trials,
            out=out,
            tracking_uri=tracking_uri,
            workers=workers,
            timeout=timeout,
            startup_trials=startup_trials,
            warmup_steps=warmup_steps,
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    result = _run(objective, options)
    _report(result, {name: getattr(TrainConfig(), name) for name in objective.space.names})
