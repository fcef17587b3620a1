"""``kvtune train``, ``kvtune evaluate`` and ``kvtune sweep``: every run is an MLflow run."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from pathlib import Path

import mlflow
import typer
from rich.console import Console
from rich.table import Table

from agents.bundle import ALGORITHMS
from agents.evaluation import EpisodeResult, compare_policies
from agents.policies import make_policy
from agents.sweep import sweep
from agents.tracking import default_tracking_uri, log_metrics, tracked_run
from agents.training import TrainConfig, train
from experiments.options import EnvOptionList, OptionList, TraceOption, WorkloadOption, env_config
from experiments.plots import sweep_grid, window_lines

logger = logging.getLogger(__name__)
console = Console()

StoreOption = typer.Option("lsm", "--store", help="Store kind: lsm | file | applog | memory.")
ProfileOption = typer.Option("tiny", "--profile", help="Model profile (see workloads.profiles).")
BudgetOption = typer.Option(None, "--budget-bytes", help="Disk budget of the store (default: unlimited).")
WindowOption = typer.Option(8, "--requests-per-window", help="Requests per control window (env step).")
ClockOption = typer.Option("counters", "--clock", help="I/O clock for TTFT: counters | measured.")
TrackingOption = typer.Option(
    None, "--tracking-uri", help="MLflow tracking URI (default: SQLite under --out)."
)


def train_command(
    algo: str = typer.Option("ppo", "--algo", help=f"One of {', '.join(ALGORITHMS)}."),
    workload: str = WorkloadOption,
    trace: Path | None = TraceOption,
    workload_option: list[str] = OptionList,
    env_option: list[str] = EnvOptionList,
    timesteps: int = typer.Option(256, "--timesteps", help="Environment steps (windows) to train for."),
    n_envs: int = typer.Option(2, "--n-envs", help="Vectorised environments, each with its own store."),
    eval_every: int = typer.Option(128, "--eval-every", help="Steps between evaluations against default."),
    seed: int = typer.Option(0, "--seed"),
    store: str = StoreOption,
    profile: str = ProfileOption,
    budget_bytes: int | None = BudgetOption,
    requests_per_window: int = WindowOption,
    clock: str = ClockOption,
    out: Path = typer.Option(Path("runs/train"), "--out", help="Run directory."),
    tracking_uri: str | None = TrackingOption,
) -> None:
    """Train a Stable-Baselines3 agent to tune the store; save a policy bundle under OUT/policy."""
    environment = env_config(
        workload, trace, workload_option, store, profile, budget_bytes, requests_per_window, clock, env_option
    )
    try:
        config = TrainConfig(
            algo=algo, timesteps=timesteps, n_envs=n_envs, seed=seed, eval_every=eval_every, env=environment
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    uri = tracking_uri or default_tracking_uri(out)
    with tracked_run(
        "kvtune-train",
        f"train-{algo}-{workload}",
        uri,
        dataclasses.asdict(config),
        artifact_root=out / "artifacts",
    ) as run:
        evaluations: list[dict[str, float]] = []

        def collect(step: int, row: dict[str, float]) -> bool:
            evaluations.append(row)
            return True

        bundle = train(config, out, on_evaluation=collect)
        mlflow.log_artifacts(str(bundle), artifact_path="policy")
        if evaluations:
            plot = window_lines(
                {
                    "agent": [row["eval/agent_reward"] for row in evaluations],
                    "default": [row["eval/default_reward"] for row in evaluations],
                },
                "episode reward",
                f"{algo} on {workload}: evaluation episodes",
                out / "evaluations.png",
            )
            mlflow.log_artifact(str(plot))
        console.print(f"policy bundle: [bold]{bundle}[/bold]  (MLflow run {run.info.run_id}, {uri})")


def policy_label(spec: str) -> str:
    """A short, MLflow-safe name for a policy spec: default, heuristic, static-NAME or learned-NAME."""
    if spec in ("default", "heuristic"):
        return spec
    if spec.startswith("static:"):
        return "static-" + Path(spec.removeprefix("static:")).stem
    path = Path(spec)
    return "learned-" + (path.parent.name if path.name == "policy" else path.name)


def _results_table(results: list[EpisodeResult]) -> Table:
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


def evaluate_command(
    policy: list[str] = typer.Option(
        ["default", "heuristic"], "--policy", help="default | heuristic | static:FILE | BUNDLE (repeatable)."
    ),
    workload: str = WorkloadOption,
    trace: Path | None = TraceOption,
    workload_option: list[str] = OptionList,
    env_option: list[str] = EnvOptionList,
    seed: int = typer.Option(0, "--seed"),
    store: str = StoreOption,
    profile: str = ProfileOption,
    budget_bytes: int | None = BudgetOption,
    requests_per_window: int = WindowOption,
    clock: str = ClockOption,
    out: Path = typer.Option(Path("runs/evaluate"), "--out", help="Run directory."),
    tracking_uri: str | None = TrackingOption,
) -> None:
    """Run several policies on the same workload and seed; print, plot and log a side-by-side table."""
    environment = env_config(
        workload, trace, workload_option, store, profile, budget_bytes, requests_per_window, clock, env_option
    )
    try:
        policies = {policy_label(spec): make_policy(spec) for spec in policy}
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    out.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri or default_tracking_uri(out)
    params = {"policies": list(policies), "seed": seed, "env": dataclasses.asdict(environment)}
    with tracked_run("kvtune-evaluate", f"evaluate-{workload}", uri, params, artifact_root=out / "artifacts"):
        results = compare_policies(policies, environment, seed)
        for result in results:
            for step, window in enumerate(result.windows):
                log_metrics(window, step=step, prefix=f"{result.policy}/")
            log_metrics(
                {k: v for k, v in result.summary().items() if k != "policy"},
                step=0,
                prefix=f"{result.policy}/episode/",
            )
        table_path = out / "evaluation.csv"
        with table_path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(results[0].summary()))
            writer.writeheader()
            writer.writerows(r.summary() for r in results)
        (out / "evaluation.json").write_text(json.dumps([r.summary() for r in results], indent=2) + "\n")
        plot = window_lines(
            {r.policy: [w["mean_ttft_s"] for w in r.windows] for r in results},
            "mean TTFT (s)",
            f"{workload}: mean TTFT per window",
            out / "evaluation.png",
        )
        for artifact in (table_path, plot, out / "evaluation.json"):
            mlflow.log_artifact(str(artifact))
    console.print(_results_table(results))
    console.print(f"table: {table_path}  plot: {plot}")


def sweep_command(
    workload: str = WorkloadOption,
    trace: Path | None = TraceOption,
    workload_option: list[str] = OptionList,
    env_option: list[str] = EnvOptionList,
    knob: list[str] = typer.Option([], "--knob", help="Knobs to sweep (default: every action knob)."),
    points: int = typer.Option(4, "--points", help="Values per numeric knob (choices: all of them)."),
    seed: int = typer.Option(0, "--seed"),
    store: str = StoreOption,
    profile: str = ProfileOption,
    budget_bytes: int | None = BudgetOption,
    requests_per_window: int = WindowOption,
    clock: str = ClockOption,
    out: Path = typer.Option(Path("runs/sweep"), "--out", help="Run directory."),
    tracking_uri: str | None = TrackingOption,
) -> None:
    """For each knob, the objective's spread across its range (others at defaults): which knobs matter."""
    environment = env_config(
        workload, trace, workload_option, store, profile, budget_bytes, requests_per_window, clock, env_option
    )
    out.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri or default_tracking_uri(out)
    params = {"knobs": knob or "all", "points": points, "seed": seed, "env": dataclasses.asdict(environment)}
    with tracked_run("kvtune-sweep", f"sweep-{workload}", uri, params, artifact_root=out / "artifacts"):
        try:
            rows, spreads, default = sweep(environment, seed, points, knob or None)
        except ValueError as error:
            raise typer.BadParameter(str(error)) from error
        with (out / "sweep.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=[f.name for f in dataclasses.fields(rows[0])])
            writer.writeheader()
            writer.writerows(dataclasses.asdict(r) for r in rows)
        curves: dict[str, tuple[list[str], list[float]]] = {}
        for row in rows:
            labels, values = curves.setdefault(row.knob, ([], []))
            labels.append(str(row.value))
            values.append(row.mean_ttft_s)
        plot = sweep_grid(curves, "mean TTFT (s)", out / "sweep.png")
        mlflow.log_artifact(str(out / "sweep.csv"))
        mlflow.log_artifact(str(plot))
        for rank, spread in enumerate(spreads):
            log_metrics(
                {"spread": spread.spread, "best_mean_ttft_s": spread.best_mean_ttft_s},
                step=rank,
                prefix=f"sweep/{spread.knob}/",
            )
    table = Table(title=f"knob spread on {workload} (default mean TTFT {default.mean_ttft_s:.4f} s)")
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
    console.print(table)
    console.print(f"table: {out / 'sweep.csv'}  plot: {plot}")
