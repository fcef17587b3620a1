"""``kvtune``: the command line. Each command module owns its typer app; this module assembles them.

Command modules import the heavy libraries (torch, the store, MLflow, Optuna, Stable-Baselines3) inside
their command functions, so ``kvtune --help`` stays fast.
"""

from __future__ import annotations

import logging

import typer

from experiments import (
    adversarial_cmd,
    bench_cmd,
    bench_env_cmd,
    bench_sglang_cmd,
    crash_cmd,
    deploy_cmd,
    help_bench_cmd,
    knobs_cmd,
    model_check_cmd,
    paper_cmd,
    replay_cmd,
    run_cmd,
    stress_cmd,
    study_cmd,
    train_cmd,
    tuning_cmd,
)

app = typer.Typer(
    help="kvtune: an LSM-tree KV-cache store for LLM serving, and RL that tunes it.", no_args_is_help=True
)
for module in (replay_cmd, train_cmd, study_cmd, run_cmd, model_check_cmd, deploy_cmd, knobs_cmd):
    app.add_typer(module.app)
app.add_typer(bench_cmd.app, name="bench")
app.add_typer(paper_cmd.app, name="experiment")
paper_cmd.app.add_typer(tuning_cmd.app)
for bench_module in (help_bench_cmd, stress_cmd, crash_cmd, bench_sglang_cmd, adversarial_cmd, bench_env_cmd):
    bench_cmd.app.add_typer(bench_module.app)


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


if __name__ == "__main__":
    app()
