"""``kvtune``: the command line. Each command group lives in its own module and registers here."""

from __future__ import annotations

import logging

import typer

app = typer.Typer(
    help="kvtune: an LSM-tree KV-cache store for LLM serving, and RL that tunes it.", no_args_is_help=True
)
bench_app = typer.Typer(help="Benchmarks that compare store kinds side by side.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


from experiments import bench_cmd  # noqa: E402, F401  (registers `kvtune bench store`)
from experiments.replay_cmd import replay_command  # noqa: E402

app.command("replay")(replay_command)
from experiments.train_cmd import evaluate_command, sweep_command, train_command  # noqa: E402

app.command("train")(train_command)
app.command("evaluate")(evaluate_command)
app.command("sweep")(sweep_command)
from experiments.study_cmd import study_app  # noqa: E402

app.add_typer(study_app, name="study")
from experiments.run_cmd import run_command  # noqa: E402

app.command("run")(run_command)
from experiments.model_check_cmd import model_check_command  # noqa: E402

app.command("model-check")(model_check_command)
from experiments.bench_env_cmd import bench_env_command  # noqa: E402
from experiments.paper_cmd import experiment_app  # noqa: E402
from experiments.tuning_cmd import tuning_command  # noqa: E402

bench_app.command("env")(bench_env_command)
experiment_app.command("tuning")(tuning_command)

app.add_typer(experiment_app, name="experiment")
