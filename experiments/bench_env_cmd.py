"""``kvtune bench env``: environment steps per second on named configurations, rounds interleaved.

Heavy imports (the environment, the store) happen inside the command.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

console = Console()

BENCH_ENVS: dict[str, dict[str, Any]] = {
    "small": {},
    "taught": {
        "workload_options": {
            "phase_requests": 16,
            "chunk_tokens": 256,
            "chunks_per_prompt": 32,
            "pool_chunks": 4096,
        },
        "profile": "llama-3.1-8b",
        "profile_scale": 128,
        "device": "nvme-pcie4",
        "memory_tier_bytes": 64 * 2**20,
    },
    "serving-mix": {
        "distribution": "serving-mix",
        "profile": "llama-3.1-8b",
        "profile_scale": 512,
        "device": "nvme-pcie4",
    },
    "serving-mix-relative": {
        "distribution": "serving-mix",
        "profile": "llama-3.1-8b",
        "profile_scale": 512,
        "device": "nvme-pcie4",
        "reward": {"relative_to_defaults": True},
    },
}
"""``small``: the no-argument environment; ``taught``: the configuration the first PPO agent learned on
(README); ``serving-mix``: the training distribution of the shipped policy; ``serving-mix-relative``: the
same with the reward relative to a lockstep replay on kvtune's defaults (two replays per step).
``reward`` holds :class:`env.RewardConfig` fields."""


@dataclass(frozen=True)
class EnvTiming:
    """One round of one configuration: steps per wall second, and the process's CPU seconds per step (all
    its threads: the writer's and RocksDB's too), which a busy machine inflates far less than wall time."""

    steps_per_s: float
    cpu_s_per_step: float


def _time_steps(fields: dict[str, Any], steps: int, seed: int) -> EnvTiming:
    from env import EnvConfig, KVCacheTuningEnv, RewardConfig

    env = KVCacheTuningEnv(EnvConfig(**{**fields, "reward": RewardConfig(**fields.get("reward", {}))}))
    env.action_space.seed(seed)
    try:
        env.reset(seed=seed)
        started, cpu_started, done = time.perf_counter(), time.process_time(), 0
        episode = seed
        while done < steps:
            _, _, terminated, _, _ = env.step(env.action_space.sample())
            done += 1
            if terminated:
                episode += 1
                env.reset(seed=episode)
        return EnvTiming(done / (time.perf_counter() - started), (time.process_time() - cpu_started) / done)
    finally:
        env.close()


app = typer.Typer()


@app.command("env")
def bench_env_command(
    config: list[str] = typer.Option(
        list(BENCH_ENVS), "--config", help=f"Configurations to time: {', '.join(BENCH_ENVS)}."
    ),
    steps: int = typer.Option(30, "--steps", help="Random-action steps per configuration and round."),
    rounds: int = typer.Option(3, "--rounds", help="Interleaved rounds (the machine is shared)."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Steps per second of the environment under random actions; an episode that ends is reset inside
    the timing, as in training."""
    unknown = sorted(set(config) - set(BENCH_ENVS))
    if unknown:
        raise typer.BadParameter(
            f"unknown configuration(s) {', '.join(unknown)}; valid: {', '.join(BENCH_ENVS)}"
        )
    figures: dict[str, list[EnvTiming]] = {name: [] for name in config}
    for _ in range(rounds):
        for name in config:
            figures[name].append(_time_steps(BENCH_ENVS[name], steps, seed))
    table = Table(title=f"environment steps/s ({steps} random-action steps x {rounds} interleaved rounds)")
    for column in ("configuration", "median steps/s", "rounds", "median CPU ms/step"):
        table.add_column(column, justify="right")
    for name, timings in figures.items():
        rates = [t.steps_per_s for t in timings]
        cpu_ms = statistics.median(1e3 * t.cpu_s_per_step for t in timings)
        table.add_row(
            name, f"{statistics.median(rates):.2f}", " ".join(f"{v:.2f}" for v in rates), f"{cpu_ms:.0f}"
        )
    console.print(table)
