"""The work behind ``kvtune train``, ``evaluate`` and ``sweep``, as functions: each is one MLflow run.

The commands parse their options and call these; ``kvtune run`` calls them directly. This module imports
the heavy libraries (MLflow, Stable-Baselines3 through agents.training), so commands import it lazily.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import mlflow

from agents.evaluation import EpisodeResult, EvalResult, compare_policies
from agents.registry import PolicySpec, make_policy
from agents.sweep import KnobSpread, SweepPoint, sweep
from agents.tracking import default_tracking_uri, log_metrics, tracked_run
from agents.training import TrainConfig, train
from env import EnvConfig
from experiments.plots import sweep_grid, window_lines


@dataclass(frozen=True)
class TrainOutcome:
    bundle: Path
    evaluations: list[EvalResult]
    run_id: str
    tracking_uri: str


def train_job(config: TrainConfig, out: Path, run_name: str, tracking_uri: str | None = None) -> TrainOutcome:
    """Train an agent (one MLflow run); save its policy bundle under ``out/policy`` and plot evaluations."""
    uri = tracking_uri or default_tracking_uri(out)
    evaluations: list[EvalResult] = []

    def collect(evaluation: EvalResult) -> bool:
        evaluations.append(evaluation)
        return True

    with tracked_run(
        "kvtune-train", run_name, uri, dataclasses.asdict(config), artifact_root=out / "artifacts"
    ) as run:
        bundle = train(config, out, on_evaluation=collect)
        mlflow.log_artifacts(str(bundle), artifact_path="policy")
        if evaluations:
            plot = window_lines(
                {
                    "agent": [e.agent_reward for e in evaluations],
                    "default": [e.default_reward for e in evaluations],
                },
                "episode reward",
                f"{run_name}: evaluation episodes",
                out / "evaluations.png",
            )
            mlflow.log_artifact(str(plot))
    return TrainOutcome(bundle, evaluations, run.info.run_id, uri)


@dataclass(frozen=True)
class EvaluateOutcome:
    results: list[EpisodeResult]
    table: Path
    plot: Path


def evaluate_job(
    specs: list[PolicySpec],
    environment: EnvConfig,
    seed: int,
    out: Path,
    run_name: str,
    tracking_uri: str | None = None,
) -> EvaluateOutcome:
    """Every policy on the same workload and seed (one MLflow run): a CSV/JSON table and a TTFT plot."""
    policies = {spec.label: make_policy(spec) for spec in specs}
    out.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri or default_tracking_uri(out)
    params = {"policies": list(policies), "seed": seed, "env": dataclasses.asdict(environment)}
    with tracked_run("kvtune-evaluate", run_name, uri, params, artifact_root=out / "artifacts"):
        results = compare_policies(policies, environment, seed)
        for result in results:
            for step, window in enumerate(result.windows):
                log_metrics(window, step=step, prefix=f"{result.policy}/")
            log_metrics(
                {k: v for k, v in result.summary().items() if k != "policy"},
                step=0,
                prefix=f"{result.policy}/episode/",
            )
        table = out / "evaluation.csv"
        with table.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(results[0].summary()))
            writer.writeheader()
            writer.writerows(r.summary() for r in results)
        (out / "evaluation.json").write_text(json.dumps([r.summary() for r in results], indent=2) + "\n")
        plot = window_lines(
            {r.policy: [w["mean_ttft_s"] for w in r.windows] for r in results},
            "mean TTFT (s)",
            f"{run_name}: mean TTFT per window",
            out / "evaluation.png",
        )
        for artifact in (table, plot, out / "evaluation.json"):
            mlflow.log_artifact(str(artifact))
    return EvaluateOutcome(results, table, plot)


@dataclass(frozen=True)
class SweepOutcome:
    points: list[SweepPoint]
    spreads: list[KnobSpread]
    default: EpisodeResult
    table: Path
    plot: Path


def sweep_job(
    environment: EnvConfig,
    seed: int,
    points: int,
    knobs: list[str],
    out: Path,
    run_name: str,
    tracking_uri: str | None = None,
) -> SweepOutcome:
    """Each knob across its range, the others at defaults (one MLflow run): a CSV table and a plot grid."""
    out.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri or default_tracking_uri(out)
    params = {"knobs": knobs or "all", "points": points, "seed": seed, "env": dataclasses.asdict(environment)}
    with tracked_run("kvtune-sweep", run_name, uri, params, artifact_root=out / "artifacts"):
        rows, spreads, default = sweep(environment, seed, points, knobs or None)
        table = out / "sweep.csv"
        with table.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=[f.name for f in dataclasses.fields(SweepPoint)])
            writer.writeheader()
            writer.writerows(dataclasses.asdict(r) for r in rows)
        curves: dict[str, tuple[list[str], list[float]]] = {}
        for row in rows:
            labels, values = curves.setdefault(row.knob, ([], []))
            labels.append(str(row.value))
            values.append(row.mean_ttft_s)
        plot = sweep_grid(curves, "mean TTFT (s)", out / "sweep.png")
        mlflow.log_artifact(str(table))
        mlflow.log_artifact(str(plot))
        for rank, spread in enumerate(spreads):
            log_metrics(
                {"spread": spread.spread, "best_mean_ttft_s": spread.best_mean_ttft_s},
                step=rank,
                prefix=f"sweep/{spread.knob}/",
            )
    return SweepOutcome(rows, spreads, default, table, plot)
