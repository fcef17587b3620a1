"""``kvtune deploy``: a policy tuning a live store while it serves a workload, against ``default``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from experiments.deploy import DeployResult


def deploy_command(
    policy: Annotated[
        str, typer.Option("--policy", help="default | heuristic | static:FILE | a learned bundle directory.")
    ],
    workload: Annotated[
        str, typer.Option("--workload", help="A workload name (e.g. staged, mixed).")
    ] = "mixed",
    out: Annotated[Path, typer.Option("--out", help="Directory for the PNG, MLflow and the table.")] = Path(
        "runs/deploy"
    ),
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the workload.")] = 0,
    requests_per_window: Annotated[int, typer.Option("--requests-per-window", min=1)] = 8,
    allow_reopen: Annotated[
        bool, typer.Option("--allow-reopen", help="Let the controller apply knobs that need a reopen.")
    ] = False,
    tracking_uri: Annotated[
        str | None, typer.Option("--tracking-uri", help="MLflow (default OUT/mlflow.db).")
    ] = None,
) -> None:
    """Replay WORKLOAD through a live store with the controller applying POLICY, then under default."""
    from rich.progress import Progress

    from agents.controller import Guards, MlflowTarget
    from agents.tracking import default_tracking_uri, tracked_run
    from env.config import EnvConfig
    from experiments.deploy import DeployWindow, deploy
    from experiments.plots import window_lines

    console = Console(width=160)
    setup = EnvConfig(workload=workload, requests_per_window=requests_per_window)
    guards = Guards(allow_reopen=allow_reopen)
    uri = tracking_uri or default_tracking_uri(out)
    results: list[DeployResult] = []
    for spec in dict.fromkeys([policy, "default"]):
        params = {"policy": spec, "workload": workload, "seed": seed, "guards": guards}
        with tracked_run("kvtune-deploy", f"deploy-{workload}-{spec}", uri, params) as run:
            with Progress(console=console, transient=False) as progress:
                task = progress.add_task(spec, total=None)

                def show(window: DeployWindow, task: object = task, spec: str = spec) -> None:
                    changed = ", ".join(f"{k}={v}" for k, v in window.applied.items()) or "-"
                    progress.update(
                        task,  # type: ignore[arg-type]
                        advance=1,
                        description=f"{spec} w{window.index} hit {window.hit_token_ratio:.2f} "
                        f"ttft {window.mean_ttft_s * 1e3:.1f} ms {changed[:60]}",
                    )

                try:
                    result = deploy(
                        spec,
                        setup,
                        seed,
                        out / "stores" / spec.replace("/", "_"),
                        guards,
                        MlflowTarget(uri, run.info.run_id),
                        show,
                    )
                except ValueError as error:
                    raise typer.BadParameter(str(error)) from None
            results.append(result)
    series = {r.policy: [w.mean_ttft_s * 1e3 for w in r.windows] for r in results}
    png = window_lines(series, "mean TTFT (ms)", f"kvtune deploy on {workload}", out / "deploy-ttft.png")
    hits = {r.policy: [w.hit_token_ratio for w in r.windows] for r in results}
    window_lines(hits, "hit token ratio", f"kvtune deploy on {workload}", out / "deploy-hits.png")
    _print_table(console, results)
    (out / "deploy.json").write_text(
        json.dumps(
            [
                {
                    "policy": r.policy,
                    "mean_ttft_s": r.mean_ttft_s,
                    "hit_token_ratio": r.hit_token_ratio,
                    "median_tick_s": r.median_tick_s,
                    "guards": r.guard_counts,
                }
                for r in results
            ],
            indent=2,
        )
        + "\n"
    )
    console.print(f"plots: {png}, {out / 'deploy-hits.png'}; table: {out / 'deploy.json'}; MLflow: {uri}")


def _print_table(console: Console, results: list[DeployResult]) -> None:
    default = next(r for r in results if r.policy == "default")
    table = Table(title="deploy vs default")
    for header in ("policy", "mean TTFT ms", "vs default", "hit ratio", "tick ms (median)", "guards fired"):
        table.add_column(header)
    for r in results:
        change = r.mean_ttft_s / default.mean_ttft_s - 1 if default.mean_ttft_s else 0.0
        fired = ", ".join(f"{k} {v}" for k, v in r.guard_counts.items() if v) or "-"
        table.add_row(
            r.policy,
            f"{r.mean_ttft_s * 1e3:.2f}",
            f"{change:+.1%}",
            f"{r.hit_token_ratio:.3f}",
            f"{r.median_tick_s * 1e3:.1f}",
            fired,
        )
    console.print(table)
